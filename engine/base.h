/* engine/base.h — the small base every ns2flows module shares: the bounds-checked cursor
 * for untrusted bytes, error codes, logging and the configuration table.
 *
 * Nothing here knows about sockets, HTTP or packet formats. */
#ifndef NS_BASE_H
#define NS_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define NS_VERSION "0.1.0"

/* ---------------------------------------------------------------------------------------------
 * Errors: 0 is success, -errno is passed through, our own causes live in a reserved range so a
 * test can assert which check fired. ns_strerror() names both kinds. */
enum {
    NS_E_BASE = -10000,
    NS_E_TRUNC = -10001,   /* input ends before a declared length */
    NS_E_CORRUPT = -10002, /* checksum or structural check failed */
    NS_E_VERSION = -10003, /* unknown format or protocol version */
    NS_E_MAGIC = -10004,   /* file is not what it claims to be */
    NS_E_RANGE = -10005,   /* value outside its allowed range */
    NS_E_PARSE = -10006,   /* text that does not parse */
    NS_E_NOMEM = -10007,   /* allocation failed */
    NS_E_LOCKED = -10008,  /* database folder locked by another process */
    NS_E_COUNT = -10009,   /* record count disagrees with the datagram length */
    NS_E_UNKNOWN_KEY = -10010,
    NS_E_TOO_MANY = -10011, /* a cap on something an outsider controls was reached */
    NS_E_COMPRESS = -10012, /* zstd refused to compress or decompress */
    NS_E_LAST = -10013,
};

/* Returns a static string describing rc (an NS_E_* code or -errno). Thread-safe. */
const char *ns_strerror(int rc);

/* ---------------------------------------------------------------------------------------------
 * The cursor: every untrusted byte (datagrams, segment files, HTTP parameters) is read through
 * it. It never reads past p+left; a failed read leaves the cursor where it was. */
typedef struct ns_cur {
    const uint8_t *p;
    size_t left;
} ns_cur;

static inline ns_cur ns_cur_make(const void *p, size_t len)
{
    ns_cur c = {(const uint8_t *)p, len};
    return c;
}

static inline bool ns_cur_skip(ns_cur *c, size_t n)
{
    if (c->left < n)
        return false;
    c->p += n;
    c->left -= n;
    return true;
}

/* Carves the next len bytes into *sub and steps over them. */
static inline bool ns_cur_sub(ns_cur *c, size_t len, ns_cur *sub)
{
    if (c->left < len)
        return false;
    sub->p = c->p;
    sub->left = len;
    c->p += len;
    c->left -= len;
    return true;
}

static inline bool ns_cur_bytes(ns_cur *c, void *out, size_t n)
{
    if (c->left < n)
        return false;
    memcpy(out, c->p, n);
    c->p += n;
    c->left -= n;
    return true;
}

static inline bool ns_cur_u8(ns_cur *c, uint8_t *out)
{
    if (c->left < 1)
        return false;
    *out = c->p[0];
    c->p += 1;
    c->left -= 1;
    return true;
}

/* Network byte order (big-endian) readers, for packets. */
static inline bool ns_cur_u16(ns_cur *c, uint16_t *out)
{
    if (c->left < 2)
        return false;
    *out = (uint16_t)((unsigned)c->p[0] << 8 | c->p[1]);
    c->p += 2;
    c->left -= 2;
    return true;
}

static inline bool ns_cur_u32(ns_cur *c, uint32_t *out)
{
    if (c->left < 4)
        return false;
    *out = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 | c->p[3];
    c->p += 4;
    c->left -= 4;
    return true;
}

static inline bool ns_cur_u64(ns_cur *c, uint64_t *out)
{
    uint32_t hi, lo;
    if (c->left < 8)
        return false;
    ns_cur_u32(c, &hi);
    ns_cur_u32(c, &lo);
    *out = (uint64_t)hi << 32 | lo;
    return true;
}

/* Little-endian readers, for our own files. */
static inline bool ns_cur_le16(ns_cur *c, uint16_t *out)
{
    if (c->left < 2)
        return false;
    *out = (uint16_t)((unsigned)c->p[1] << 8 | c->p[0]);
    c->p += 2;
    c->left -= 2;
    return true;
}

static inline bool ns_cur_le32(ns_cur *c, uint32_t *out)
{
    if (c->left < 4)
        return false;
    *out = (uint32_t)c->p[3] << 24 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[1] << 8 | c->p[0];
    c->p += 4;
    c->left -= 4;
    return true;
}

static inline bool ns_cur_le64(ns_cur *c, uint64_t *out)
{
    uint32_t lo, hi;
    if (c->left < 8)
        return false;
    ns_cur_le32(c, &lo);
    ns_cur_le32(c, &hi);
    *out = (uint64_t)hi << 32 | lo;
    return true;
}

/* Little-endian stores into a caller-owned buffer (writers of our own files). */
static inline void ns_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
/* a store of the value's bytes on a little-endian host (the byte loops were not merged into
 * one store, and the segment decoder writes one of these a value) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline void ns_put_le32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline void ns_put_le64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}
#else
static inline void ns_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void ns_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
#endif

/* Little-endian loads from memory our own code filled (decoded columns): one load on a
 * little-endian host. Untrusted bytes go through the cursor instead. */
static inline uint64_t ns_get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}
static inline uint32_t ns_get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}
static inline uint16_t ns_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
/* Big-endian loads, the same way (addresses are in network order). */
static inline uint64_t ns_get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#elif !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
#endif
    return v;
}
static inline uint32_t ns_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void ns_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void ns_put_be64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
#else
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Addresses: every address is kept as 16 bytes; IPv4 is IPv4-mapped (::ffff:a.b.c.d) so one
 * column type serves both families. */
typedef struct ns_addr {
    uint8_t b[16];
} ns_addr;

void ns_addr_from_v4(ns_addr *a, uint32_t v4); /* v4 in host order */
bool ns_addr_is_v4(const ns_addr *a);
/* Formats as dotted quad or RFC 5952 text into buf (at least 46 bytes). Returns buf. */
char *ns_addr_fmt(const ns_addr *a, char *buf, size_t cap);
/* Parses "1.2.3.4" or "2001:db8::1". Returns 0 or NS_E_PARSE. */
int ns_addr_parse(const char *s, ns_addr *out);

/* An address prefix (v4 prefixes are kept v4-mapped: /24 becomes /120). */
typedef struct ns_prefix {
    ns_addr addr;
    uint8_t len; /* 0..128 */
} ns_prefix;
/* Parses "10.0.0.0/8", "2001:db8::/32" or a bare address (a /32 or /128). */
int ns_prefix_parse(const char *s, ns_prefix *out);
bool ns_prefix_match(const ns_prefix *p, const ns_addr *a);

/* Parses "ADDR:PORT", "[V6]:PORT" or ":PORT"; fills host (without brackets) and port.
 * Returns 0 or NS_E_PARSE / NS_E_RANGE. */
int ns_hostport_parse(const char *s, char *host, size_t hostcap, uint16_t *port);

/* Parses a time given as epoch seconds (optionally fractional) or RFC 3339
 * ("2024-01-02T03:04:05Z", "...05.123+02:00") into epoch milliseconds.
 * Returns 0 or NS_E_PARSE / NS_E_RANGE. */
int ns_time_parse(const char *s, int64_t *ms_out);

/* Parses a byte size with an optional K/M/G/T suffix (powers of 1024). */
int ns_size_parse(const char *s, uint64_t *out);
/* Parses a duration: plain seconds or with s/m/h/d/w suffix. 0 means "off". */
int ns_duration_parse(const char *s, uint64_t *seconds_out);

/* Wall clock in epoch milliseconds, and a monotonic clock in milliseconds. */
int64_t ns_now_ms(void);
/* The time ms milliseconds from now on clock (CLOCK_REALTIME or CLOCK_MONOTONIC, as the
 * condition variable was made with), for pthread_cond_timedwait. */
struct timespec ns_deadline_in(clockid_t clock, int64_t ms);
int64_t ns_mono_ms(void);

/* ---------------------------------------------------------------------------------------------
 * A growable text buffer for building JSON, CSV and reports. On allocation failure it sets
 * oom and stops growing; the owner checks oom once at the end. ns_buf_free releases p. */
typedef struct ns_buf {
    char *p;
    size_t len, cap;
    bool oom;
} ns_buf;

void ns_buf_printf(ns_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ns_buf_puts(ns_buf *b, const char *s);
/* Appends len raw bytes (binary files are built with it too). */
void ns_buf_append(ns_buf *b, const void *p, size_t len);
/* Appends s as a JSON string literal (quoted, escaped; invalid UTF-8 bytes become U+FFFD). */
void ns_buf_json_str(ns_buf *b, const char *s);
void ns_buf_free(ns_buf *b);

/* ---------------------------------------------------------------------------------------------
 * Logging. One write() per line, timestamps in UTC, the level tested before formatting.
 * The log is process-wide state owned by the daemon's main; before ns_log_open() messages go
 * to stderr only. Thread-safe. */
typedef enum { NS_LOG_ERROR = 0, NS_LOG_WARN, NS_LOG_INFO, NS_LOG_DEBUG } ns_log_level;

/* Opens (appending) path as the log file; also_stderr copies every line to stderr.
 * path NULL: stderr only. Returns 0 or -errno. Safe to call again (SIGHUP reopen). */
int ns_log_open(const char *path, bool also_stderr);
void ns_log_close(void);
void ns_log_set_level(ns_log_level lvl);
bool ns_log_enabled(ns_log_level lvl);
int ns_log_level_parse(const char *s, ns_log_level *out);
void ns_log_(ns_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ns_log(lvl, ...)                                                                           \
    do {                                                                                           \
        if (ns_log_enabled(lvl))                                                                   \
            ns_log_(lvl, __VA_ARGS__);                                                             \
    } while (0)

/* A per-source rate limiter for warnings: the first `burst` in a window pass, the rest are
 * counted and reported by the next warning after the window ends. Not thread-safe on its own;
 * the owner serialises access. */
typedef struct ns_ratelimit {
    int64_t window_start_ms;
    uint32_t passed;
    uint32_t suppressed;
} ns_ratelimit;
/* Returns true if a message may be logged now; *suppressed_out gets how many were held back
 * since the last message that passed (to mention in it). */
bool ns_ratelimit_ok(ns_ratelimit *rl, int64_t now_ms, uint32_t *suppressed_out);

/* Thread priorities on a busy machine: receiving first (never niced), then sealing, then
 * queries, so a dashboard never makes the collector drop flows and a flood delays answers, not
 * storage. Linux nices threads one by one. */
#define NS_NICE_SEALER 10
#define NS_NICE_QUERY  15
/* Lowers the calling thread's priority to nice (a thread may always lower its own); false,
 * with the default kept, when the system refuses. */
bool ns_thread_nice(int nice);
/* Names the calling thread for top -H, ps -L and gdb: "ns2f-" then what, cut to Linux's 15
 * characters. Best effort: a refusal changes nothing. */
void ns_thread_name(const char *what);

/* Gives the pages of freed heap memory back to the system. The daemon keeps freed memory in
 * the heap for reuse (mallopt in tools/ns2flows.c: queries would pay page faults again), so
 * without this its RSS would stay at the highest backlog it ever had; the compactor thread
 * calls it every 10 s. Returns whether anything was given back (always false off glibc). */
bool ns_mem_trim(void);

/* ---------------------------------------------------------------------------------------------
 * Configuration. One table (config.c) drives the netsaw.conf parser, validation with file:line
 * errors, --help-config, and SIGHUP reload. A parsed ns_config is immutable once built. */
#define NS_MAX_LISTEN   16
#define NS_MAX_PREFIXES 64 /* exporters_allow entries */
#define NS_MAX_CH_URLS  16 /* clickhouse_url entries (shards) */

typedef struct ns_config {
    char db_path[4096];
    uint64_t db_budget;             /* bytes */
    uint64_t query_cache;           /* bytes of decoded columns kept between queries */
    uint64_t unsealed_memory;       /* bytes the flows waiting to be sealed may take */
    uint64_t retention_s;           /* 0 = keep until the budget needs the space */
    uint64_t rollup_share;          /* percent of db_budget for the roll-up tier; 0 = none */
    char rollup_keys[256];          /* roll-up key names, comma separated */
    char listen[NS_MAX_LISTEN][80]; /* NetFlow/IPFIX UDP */
    int nlisten;
    bool listen_is_default;               /* the first listen= replaces the defaults */
    char listen_sflow[NS_MAX_LISTEN][80]; /* sFlow UDP */
    int nlisten_sflow;
    bool listen_sflow_is_default;
    uint64_t ingest_threads; /* receive threads per address, 0 = one per core */
    char http_listen[80];
    uint64_t http_threads;          /* libmicrohttpd worker threads */
    uint64_t http_max_connections;  /* open at once */
    uint64_t http_idle_timeout_s;   /* a silent connection is closed after this */
    uint64_t http_query_timeout_ms; /* 0 = none */
    uint64_t http_max_range_s;      /* 0 = none */
    uint64_t http_max_rows;         /* largest limit= */
    char http_user[128];            /* empty: no authentication */
    char http_password_file[4096];
    char http_tls_cert[4096]; /* both set: HTTPS */
    char http_tls_key[4096];
    char log_file[4096]; /* empty: <db_path>/ns2flowslog.txt */
    ns_log_level log_level;
    uint64_t rcvbuf;            /* socket receive buffer, bytes */
    uint64_t seal_delay_s;      /* how long after a minute ends it is sealed */
    uint64_t wal_sync_ms;       /* WAL fsync interval; 0 = as soon as records wait */
    uint64_t max_exporters;     /* cap on tracked exporters */
    char exporters_allow[1024]; /* comma-separated prefixes; empty = every exporter */
    char user[64];              /* started as root: drop to this user; empty = stay */
    char group[64];             /* with user: this group instead of the user's own */
    /* ClickHouse sink (sink/sink.h): off while no URL is given */
    char clickhouse_url[NS_MAX_CH_URLS][256]; /* one base URL per shard */
    int nclickhouse_url;
    char clickhouse_table[64];      /* local table on each shard; <name>_all is the Distributed */
    uint64_t clickhouse_batch_rows; /* a batch is sent at this many rows... */
    uint64_t clickhouse_batch_ms;   /* ...or this long after its first row */
    uint64_t clickhouse_spool_max;  /* bytes of unsent batches kept in SESSIONDB/spool */
    char query_backend[16];         /* "local" or "clickhouse" */
} ns_config;

/* Fills cfg with the embedded defaults. */
void ns_config_defaults(ns_config *cfg);

/* Parses a netsaw.conf into cfg (on top of what is already in it). On error returns
 * NS_E_PARSE / NS_E_UNKNOWN_KEY / NS_E_RANGE / -errno and writes "file:line: key: why" into err. */
int ns_config_load(ns_config *cfg, const char *path, char *err, size_t errcap);

/* Sets one key from text (used by the parser and by command-line options). "listen" appends.
 * Returns 0 or an error with a message in err. */
int ns_config_set(ns_config *cfg, const char *key, const char *val, char *err, size_t errcap);

/* Clears a list of listen addresses (a command-line --listen replaces the file's list).
 * sflow selects listen_sflow instead of listen. */
void ns_config_clear_listen(ns_config *cfg);
void ns_config_clear_listen_sflow(ns_config *cfg);

/* Writes the table (every key, its default and help) for --help-config. */
void ns_config_help(void *file /* FILE * */);

/* Returns true if key is reloadable on SIGHUP; lists keys that differ and are not reloadable
 * (comma separated) into buf. Returns number of such keys. */
int ns_config_diff_nonreloadable(const ns_config *a, const ns_config *b, char *buf, size_t cap);

/* Returns the effective log path (log_file or <db_path>/ns2flowslog.txt). */
void ns_config_log_path(const ns_config *cfg, char *buf, size_t cap);

#endif
