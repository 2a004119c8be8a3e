/* engine/query.h — aggregation over the store: totals, and top-N by one key.
 *
 * Every query runs over sealed segments and the open minutes (fresh data is visible) and
 * counts each flow once. Thread-safe: any number of queries may run at once. */
#ifndef QRY_QUERY_H
#define QRY_QUERY_H

#include "engine/store.h"

typedef struct qry_totals {
    uint64_t flows; /* a roll-up row counts as the flows it sums (eng_flow_count) */
    uint64_t packets;
    uint64_t bytes;
    int64_t first_ms; /* smallest first_ms counted, 0 if none */
    int64_t last_ms;  /* largest last_ms counted, 0 if none */
} qry_totals;

/* Group-by keys. app is the protocol with its service port (the lower of the two ports for
 * TCP/UDP/SCTP, ICMP type and code for ICMP, none otherwise); conversation is the unordered
 * address pair (a < b in byte order) with each direction's counters; srcnet/dstnet are the
 * address's prefix (srcnet/24 or srcnet/24/48: bits for IPv4, then for IPv6, default /64). */
typedef enum {
    QRY_BY_SRCADDR = 0,
    QRY_BY_DSTADDR,
    QRY_BY_PROTO,
    QRY_BY_SRCPORT,
    QRY_BY_DSTPORT,
    QRY_BY_EXPORTER,
    QRY_BY_INIF,
    QRY_BY_OUTIF,
    QRY_BY_SRCAS,
    QRY_BY_DSTAS,
    QRY_BY_TOS,
    QRY_BY_VLAN,
    QRY_BY_APP,
    QRY_BY_CONV,
    QRY_BY_SRCNET,
    QRY_BY_DSTNET,
    QRY_NBY
} qry_by;

/* Metrics. bps and pps order like bytes and packets; callers divide by the range's seconds. */
typedef enum { QRY_M_BYTES = 0, QRY_M_PACKETS, QRY_M_FLOWS, QRY_M_BPS, QRY_M_PPS } qry_metric;

/* Parse/name keys and metrics ("srcaddr", "bytes"...). Parsers return 0 or NS_E_PARSE.
 * qry_by_parse takes plain names only ("srcnet", not "srcnet/24"); see qry_group_parse. */
int qry_by_parse(const char *s, qry_by *out);
const char *qry_by_name(qry_by by);
int qry_metric_parse(const char *s, qry_metric *out);
const char *qry_metric_name(qry_metric m);

/* A grouping: one to QRY_MAX_KEYS keys ("srcaddr,dstport", "conversation", "srcnet/24"). */
#define QRY_MAX_KEYS 4
typedef struct qry_keyspec {
    qry_by by;
    uint8_t bits4, bits6; /* prefix lengths of srcnet/dstnet */
} qry_keyspec;
typedef struct qry_group {
    size_t n;
    qry_keyspec k[QRY_MAX_KEYS];
} qry_group;

/* Parses a comma-separated list of keys. Returns 0, or NS_E_PARSE with a one-line reason in err
 * (unknown key, repeated key, more than QRY_MAX_KEYS, a bad prefix length, two conversations).
 * Safe on untrusted text. */
int qry_group_parse(const char *s, qry_group *out, char *err, size_t errcap);
/* A grouping of one plain key (srcnet/dstnet get /24 and /64). */
void qry_group_one(qry_by by, qry_group *out);
/* The canonical text of a grouping ("srcaddr,dstnet/24/64"), into buf. */
void qry_group_fmt(const qry_group *g, char *buf, size_t cap);

/* One key's value. addr2 is the conversation's second address; num holds numeric keys and,
 * for app, proto << 16 | port. */
typedef struct qry_keyval {
    ns_addr addr;
    ns_addr addr2;
    uint32_t num;
} qry_keyval;
typedef struct qry_key {
    qry_keyval v[QRY_MAX_KEYS]; /* in the grouping's order */
} qry_key;

/* Formats one key value: an address, "10.0.0.0/24", "tcp/443", "icmp/8.0", "a <-> b", or a
 * number. qry_keyspec_is_text tells whether it is text (JSON quotes it) or a number. */
void qry_keyval_fmt(const qry_keyspec *ks, const qry_keyval *v, char *buf, size_t cap);
bool qry_keyspec_is_text(const qry_keyspec *ks);
/* Formats the first key value of a plain key (the single-key API below). */
void qry_key_fmt(qry_by by, const qry_key *k, char *buf, size_t cap);

typedef struct qry_row {
    qry_key key;
    qry_totals t;
    /* with a conversation key: the flows from a to b, and from b to a */
    qry_totals ab, ba;
} qry_row;

typedef struct qry_top_result {
    qry_row *rows; /* n rows, ordered by the metric, descending; ties by key */
    size_t n;
    qry_totals other; /* everything not in rows */
    qry_totals total; /* everything in the range */
    uint64_t groups;  /* distinct keys seen */
    int64_t span_ms;  /* the range clipped to the data counted: divide by it for bps, pps */
} qry_top_result;

typedef struct qry_filter qry_filter; /* see the filters section below */

/* A deadline for the queries the calling thread runs from now on (epoch ms; 0 = none): a query
 * still scanning past it stops and returns -ETIMEDOUT. The HTTP server sets one per request. */
void qry_set_deadline(int64_t deadline_ms);

/* Totals over [from_ms, to_ms] (inclusive; a flow counts if its span overlaps the range) of the
 * flows filter matches (NULL: all). Returns 0 or a negative code. */
int qry_summary(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                qry_totals *out);

/* The `limit` largest groups by `metric` among the flows filter matches (NULL: all). On
 * success *out is filled and owns rows; release with qry_top_free(). */
int qry_top(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter, qry_by by,
            qry_metric metric, size_t limit, qry_top_result *out);
/* The same for any grouping. */
int qry_top_group(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                  const qry_group *g, qry_metric metric, size_t limit, qry_top_result *out);
/* qry_top_group with flags. QRY_TOP_NO_GROUP_TIMES: the caller shows no group's first/last
 * (the HTTP API and ns2flows-query do not): the groups' and other's first_ms/last_ms are 0,
 * and without a filter segments inside the range are read without their time columns. The
 * total keeps its exact times (from segment footers where rows came without them). */
#define QRY_TOP_NO_GROUP_TIMES 1u
int qry_top_group_opt(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                      const qry_group *g, qry_metric metric, size_t limit, unsigned flags,
                      qry_top_result *out);
/* The span a top-N's rates are over: [from_ms, to_ms], an open end (at or past a quarter of
 * INT64_MIN/MAX) replaced by the earliest start or latest end in total; at least 1 s; 0 when
 * total counts no flow. */
int64_t qry_span_ms(int64_t from_ms, int64_t to_ms, const qry_totals *total);
/* A rate per second of v counted over span_ms (bps: pass bytes * 8). */
double qry_rate(uint64_t v, int64_t span_ms);
void qry_top_free(qry_top_result *r);

/* Raw flows, newest first (by first_ms; equal times in a fixed order of their bytes), paged:
 * the page starts after the cursor (0 = from the newest). On success *out holds up to limit
 * rows (malloc'd, owned by the caller: free(*out)), *n their count, and *next the cursor of the
 * following page (0 when this page is the last). limit <= QRY_FLOWS_MAX. */
#define QRY_FLOWS_MAX 10000
/* The most rows a cursor may skip at one start time (each scan worker keeps skip + limit). */
#define QRY_CURSOR_SKIP_MAX (QRY_FLOWS_MAX * 10ull)
typedef struct qry_cursor {
    int64_t first_ms; /* rows at or after this start time were given... */
    uint64_t skip;    /* ...except these many at exactly first_ms still to skip */
    bool valid;
} qry_cursor;
int qry_flows(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
              const qry_cursor *after, size_t limit, eng_flow **out, size_t *n, qry_cursor *next);

/* Time series: nbuckets buckets of step_ms from from_ms. A flow's packets and bytes are spread
 * over the buckets its [first, last] span covers, in proportion to the overlap (a flow of no
 * duration falls in one bucket); its flow count goes to the bucket it starts in (or the first
 * bucket, if it started before the range). buckets (caller-owned, nbuckets entries) are
 * zeroed first; their first_ms/last_ms are not used. Returns 0 or a negative code. */
#define QRY_SERIES_MAX_BUCKETS 10000
int qry_series(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
               const qry_filter *filter, qry_totals *buckets);
/* A series split by a grouping: the `limit` largest groups by metric over the buckets' range,
 * each with its own series, and "other" for the rest. On success *out owns its arrays; release
 * with qry_split_free(). */
typedef struct qry_split {
    size_t k;           /* series (groups) given, <= limit */
    qry_key *keys;      /* k keys, largest first */
    qry_totals *totals; /* k totals over the range, then other's */
    qry_totals *series; /* (k + 1) * nbuckets buckets: group i at i * nbuckets, other last */
} qry_split;
int qry_series_split(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
                     const qry_filter *filter, const qry_group *g, qry_metric metric, size_t limit,
                     qry_split *out);
void qry_split_free(qry_split *s);
/* The Flows Window of one device, in one scan of the rows that name it (the address index
 * prunes the rest): its traffic out (as talker: the source) and in (as listener: the
 * destination) over [from_ms, to_ms], a series of each (nbuckets of step_ms from from_ms), and
 * the `limit` largest groups by bytes of each list below (their first_ms/last_ms, and other's,
 * are 0: the window shows none). On success *out owns its arrays; release with
 * qry_device_free(). */
typedef enum {
    QRY_DEV_TALKER_PEERS = 0, /* by dstaddr */
    QRY_DEV_TALKER_PROTOCOLS,
    QRY_DEV_TALKER_APPS,
    QRY_DEV_TALKER_PORTS,   /* by dstport: the services it uses */
    QRY_DEV_LISTENER_PEERS, /* by srcaddr */
    QRY_DEV_LISTENER_PROTOCOLS,
    QRY_DEV_LISTENER_APPS,
    QRY_DEV_LISTENER_PORTS, /* by dstport: the services it offers */
    QRY_DEV_CONVERSATIONS,  /* either way, by conversation */
    QRY_DEV_NLISTS
} qry_dev_list;
typedef struct qry_device_result {
    qry_totals out, in;
    qry_totals *series_out, *series_in; /* nbuckets each: packets and bytes spread, as qry_series */
    qry_top_result lists[QRY_DEV_NLISTS];
} qry_device_result;
int qry_device(eng_db *db, const ns_addr *dev, int64_t from_ms, int64_t to_ms, int64_t step_ms,
               size_t nbuckets, size_t limit, qry_device_result *out);
void qry_device_free(qry_device_result *r);
/* The key a device list groups by. */
qry_by qry_device_list_by(qry_dev_list l);

/* A step that gives about `target` buckets over [from_ms, to_ms]: 1, 5, 10, 30 s, 1, 5, 15,
 * 30 min, 1, 3, 6, 12 h, 1 d, 1 w. */
int64_t qry_series_step(int64_t from_ms, int64_t to_ms, size_t target);

/* ---- filters (engine/filter.c) ---- */
/* nfdump's filter language ("host 10.0.0.1 and port 443", "net 2001:db8::/32 and not tcp",
 * "bytes > 1M"); docs/FILTERS.md is the reference. A filter is compiled once into a small
 * program of forward jumps; matching walks it without recursion or allocation. */
/* struct qry_filter: compiled; immutable, thread-safe to evaluate (typedef above) */

#define QRY_FILTER_MAX_LEN   4096 /* bytes of filter text */
#define QRY_FILTER_MAX_DEPTH 64   /* nested parentheses */

/* Compiles text. Empty (or only blanks and comments) text is "any" and matches every row.
 * On success *out owns the filter; release it with qry_filter_free(). On error *out is NULL,
 * the return is NS_E_PARSE (syntax, unknown word, value out of range), NS_E_TOO_MANY (text
 * longer than QRY_FILTER_MAX_LEN, parentheses deeper than QRY_FILTER_MAX_DEPTH) or
 * NS_E_NOMEM, and err (if errcap > 0) gets one line naming the 1-based byte column and what
 * was expected ("col 12: expected a port number after 'port'"). Safe on untrusted text. */
int qry_filter_compile(const char *text, qry_filter **out, char *err, size_t errcap);
void qry_filter_free(qry_filter *f); /* NULL is fine */
/* True if row r passes f. A NULL filter matches every row. Reads only the columns that
 * qry_filter_columns() names; never allocates. */
bool qry_filter_match(const qry_filter *f, const eng_flow *r);
uint32_t qry_filter_columns(const qry_filter *f); /* ENG_COLMASK bits it reads; 0 for "any" */
/* Whether f reads only src and dst addresses, and v has those it reads as dictionaries: then
 * qry_filter_select_dict() evaluates it without rows, a test per distinct value. */
bool qry_filter_by_dict(const qry_filter *f, const eng_colview *v);
/* The rows of v (numbered as its columns) that f passes, into out (v->n at most); *scratch
 * (*scap bytes, grown with realloc, the caller frees it) holds the tests' answers. Their count,
 * or SIZE_MAX when out of memory. Only when qry_filter_by_dict(f, v). */
size_t qry_filter_select_dict(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                              size_t *scap, uint32_t *out);
/* qry_filter_select_dict without its SIMD paths (internal: the tests compare both). */
size_t qry__filter_select_dict_plain(const qry_filter *f, const eng_colview *v, uint8_t **scratch,
                                     size_t *scap, uint32_t *out);
/* Addresses the filter requires, for index pruning: a set S such that every row the filter
 * matches has its src or its dst in S (IPv4 v4-mapped, sorted, no repeats). Copies S into
 * out and returns its size, or returns 0 when no such set can be derived (nets, negations,
 * an "or" with a branch that names no host) or S has more than cap entries. */
size_t qry_filter_addrs(const qry_filter *f, ns_addr *out, size_t cap);
/* When f passes exactly the rows with one address as src (ENG_SIDE_SRC), as dst (ENG_SIDE_DST)
 * or as either (both bits) — "host A", "src host A", "dst ip A", "A/128", and their equivalents
 * — those bits and the address in *a; else 0. */
unsigned qry_filter_host_sides(const qry_filter *f, ns_addr *a);

/* The compiled program, for back ends that evaluate filters elsewhere (the ClickHouse backend
 * turns it into SQL). Evaluation starts at test 0; after test i the next is jt if it held, jf if
 * not; jumps only go forward; reaching qry_filter_ntests() means "matches", one past it "does
 * not". A NULL filter has no tests. */
typedef enum {
    QRY_FT_TRUE,
    QRY_FT_NUM,    /* field cmp val */
    QRY_FT_NUM_IN, /* field is one of qry_filter_num(first .. first+n), sorted */
    QRY_FT_NET,    /* address field in qry_filter_net(first) */
    QRY_FT_NET_IN, /* address field in any of qry_filter_net(first .. first+n) */
    QRY_FT_SRC_V4, /* src is IPv4 (v4-mapped) */
    QRY_FT_SRC_V6
} qry_ft_kind;
typedef enum {
    QRY_FC_EQ,
    QRY_FC_NE,
    QRY_FC_LT,
    QRY_FC_LE,
    QRY_FC_GT,
    QRY_FC_GE,
    QRY_FC_ALL
} qry_fc;
typedef struct qry_ftest {
    qry_ft_kind kind;
    /* Numbers (unsigned 64-bit): "srcport" "dstport" "proto" "tos" "flags" "srcas" "dstas" "inif"
     * "outif" "vlan" "srcmask" "dstmask" "bytes" "packets" "direction"; "duration" = last_ms -
     * first_ms (0 if not positive); "bps" = bytes * 8000 / duration, or bytes * 8 with no
     * duration; "pps" = packets * 1000 / duration, or packets; "bpp" = bytes / packets (0 with no
     * packets); "icmptype" = dstport >> 8; "icmpcode" = dstport & 255. Products saturate at
     * UINT64_MAX; divisions truncate. Addresses: "src" "dst" "exporter" "nexthop". */
    const char *field;
    qry_fc cmp; /* QRY_FC_ALL: (field & val) == val */
    uint64_t val;
    size_t first, n;
    uint32_t jt, jf;
} qry_ftest;
size_t qry_filter_ntests(const qry_filter *f);
void qry_filter_test(const qry_filter *f, size_t i, qry_ftest *out); /* i < ntests */
uint64_t qry_filter_num(const qry_filter *f, size_t k);
/* Net k as its address (host bits zero) and its mask (leading one bits). */
void qry_filter_net(const qry_filter *f, size_t k, ns_addr *addr, ns_addr *mask);

#endif
