/* ingest/ingest.h — what arrives from exporters: UDP listeners, datagram decoders, the exporter
 * table with its counters, and the pcap reader used by replay and offline ingest.
 *
 * Knows nothing of file formats or HTTP: decoded flows go to the store as eng_flow rows. */
#ifndef ING_INGEST_H
#define ING_INGEST_H

#include "engine/store.h"

/* Decoder errors (one code per cause, so tests can name the check that fired). */
enum {
    ING_E_SHORT = -11001,       /* datagram shorter than its header */
    ING_E_VERSION = -11002,     /* not a version we decode */
    ING_E_COUNT = -11003,       /* v5 record count 0 or above 30 */
    ING_E_LENGTH = -11004,      /* record count disagrees with the datagram length */
    ING_E_EXPORTERS = -11005,   /* exporter table full: datagram dropped */
    ING_E_BATCH = -11006,       /* caller's batch has no room */
    ING_E_SET_LEN = -11007,     /* a set's length is too small or runs past the message */
    ING_E_TEMPLATE = -11008,    /* a template record that does not parse */
    ING_E_CAP = -11009,         /* a cap (templates, fields, held bytes) was reached */
    ING_E_NOT_ALLOWED = -11010, /* exporter not in exporters_allow */
};
const char *ing_strerror(int rc);

enum { ING_PROTO_V5 = 1, ING_PROTO_V9 = 2, ING_PROTO_IPFIX = 4, ING_PROTO_SFLOW = 8 };

/* A caller-owned array the decoders append rows to; they never allocate. When it is full and
 * flush is set, the template and sFlow decoders call flush to empty it (the listener hands the
 * rows to the store), so no datagram is too large for a batch; without flush, rows past the
 * capacity are dropped and counted (ing_exporter_stats.rows_dropped). */
typedef struct ing_batch {
    eng_flow *rows;
    size_t n;
    size_t cap;
    int (*flush)(void *arg, const eng_flow *rows, size_t n); /* optional; 0 = taken */
    void *flush_arg;
    uint64_t flushed; /* rows handed to flush so far */
} ing_batch;

/* Rows appended over the batch's life, flushed or not. */
static inline uint64_t ing_batch_total(const ing_batch *b)
{
    return b->flushed + b->n;
}

/* Hands the rows to flush and empties the batch. Returns 0, or -1 (rows kept) when there is no
 * flush or it refused them. */
static inline int ing_batch_flush(ing_batch *b)
{
    if (!b->flush || b->flush(b->flush_arg, b->rows, b->n) != 0)
        return -1;
    b->flushed += b->n;
    b->n = 0;
    return 0;
}

/* true when one more row fits, flushing first if the batch is full and can be flushed. */
static inline bool ing_batch_room(ing_batch *b)
{
    if (b->n < b->cap)
        return true;
    return ing_batch_flush(b) == 0 && b->cap > 0;
}

/* ---------------------------------------------------------------------------------------------
 * NetFlow v5 (ingest/v5.c). Header 24 bytes, records 48 bytes, at most 30 records. */
#define ING_V5_HDR      24u
#define ING_V5_REC      48u
#define ING_V5_MAX_RECS 30u

typedef struct ing_v5_hdr {
    uint16_t count;
    uint32_t sys_uptime_ms;
    uint32_t unix_secs;
    uint32_t unix_nsecs;
    uint32_t flow_sequence;
    uint8_t engine_type;
    uint8_t engine_id;
    uint16_t sampling_mode;     /* top 2 bits of the sampling field */
    uint16_t sampling_interval; /* low 14 bits; 0 or 1 = unsampled */
    size_t pdu_len;             /* bytes this PDU covers: header + count records */
} ing_v5_hdr;

/* Decodes one v5 PDU at the start of pkt from exporter into out (appending hdr.count rows),
 * filling *hdr.
 * Checks the header, the record count and the datagram length before appending anything, so a
 * bad datagram adds no rows. Times become absolute epoch ms from sysUptime and unix time;
 * bytes and packets are scaled by the sampling interval. Returns 0 or an ING_E_* code. */
int ing_v5_decode(const uint8_t *pkt, size_t len, const ns_addr *exporter, ing_batch *out,
                  ing_v5_hdr *hdr);

/* ---------------------------------------------------------------------------------------------
 * Exporters (ingest/exporters.c): one entry per exporter address with its counters and, per
 * (version, source id) stream, its expected next sequence number. Thread-safe. */
typedef struct ing_exporters ing_exporters;

typedef struct ing_exporter_stats {
    ns_addr addr;
    int64_t first_seen_ms, last_seen_ms;
    uint64_t datagrams;
    uint64_t flows;
    uint64_t bytes;             /* datagram bytes received */
    uint64_t err_short;         /* shorter than a header */
    uint64_t err_version;       /* unknown version */
    uint64_t err_count;         /* bad record count */
    uint64_t err_length;        /* count vs length mismatch */
    uint64_t seq_gaps;          /* times the sequence jumped forward */
    uint64_t lost_flows;        /* flows the sequence numbers say we never received (v5, IPFIX) */
    uint64_t lost_datagrams;    /* v9 counts packets, not flows: packets never received */
    uint64_t seq_resets;        /* sequence went backwards or jumped too far: exporter restart */
    uint64_t err_set;           /* v9/IPFIX sets with a bad length */
    uint64_t templates;         /* templates currently known */
    uint64_t template_errors;   /* template records that did not parse */
    uint64_t templates_refused; /* over the per-exporter or per-template caps */
    uint64_t template_withdrawals;
    uint64_t options_records; /* options data records read (samplers, system init time) */
    uint64_t template_misses; /* data sets that arrived before their template */
    uint64_t held_decoded;    /* ... and were decoded when it came */
    uint64_t held_expired;    /* ... or expired waiting for it */
    uint64_t held_dropped;    /* ... or did not fit in the holding area */
    uint64_t rows_dropped;    /* decoded rows that found no room in the caller's batch */
    uint32_t last_version;
    uint32_t protocols; /* ING_PROTO_* bits of every protocol seen from this exporter */
    uint32_t sampling;  /* last sampling interval seen */
    /* the sampling rates in use: distinct rates of the flows decoded, with their flow counts
     * (an exporter with several samplers has several); past ING_MAX_RATES, the least used
     * rate is replaced */
#define ING_MAX_RATES 8
    uint32_t nrates;
    uint32_t rates[ING_MAX_RATES];
    uint64_t rate_flows[ING_MAX_RATES];
    uint64_t sflow_datagrams_bad; /* sFlow: datagrams refused whole (copied from its state) */
    uint64_t sflow_samples_bad;   /* sFlow: samples whose length lies or records do not fit */
    uint64_t sflow_over_cap;      /* sFlow: samples or datagrams dropped at a cap */
} ing_exporter_stats;

int ing_exporters_new(size_t max_exporters, ing_exporters **out);
/* Restricts ingest to exporters matching one of the comma-separated prefixes ("" = all).
 * Datagrams from others are dropped and counted (ing_exporters_refused). Returns 0 or
 * NS_E_PARSE. Call before traffic starts. */
int ing_exporters_allow(ing_exporters *ex, const char *prefixes);
/* Datagrams dropped because their exporter is not allowed. */
uint64_t ing_exporters_refused(ing_exporters *ex);
void ing_exporters_free(ing_exporters *ex);
/* Copies at most cap exporters' stats into out; returns how many there are in all. */
size_t ing_exporters_list(ing_exporters *ex, ing_exporter_stats *out, size_t cap);
/* Datagrams refused because the table was full. */
uint64_t ing_exporters_overflow(ing_exporters *ex);
/* Appends the table as a JSON array of objects (address, counters, times in epoch seconds). */
void ing_exporters_json(ing_exporters *ex, ns_buf *out);
/* Templates, options templates, sampler tables and system init times of every exporter, so a
 * restart decodes data at once instead of waiting for the next template refresh.
 * save: appends a self-checking binary image (docs/FORMAT.md) to out and clears the dirty
 * marks; dirty: whether anything changed since. load: adds what the image holds (exporters
 * created as needed); a damaged image is refused whole (NS_E_CORRUPT / NS_E_MAGIC). */
void ing_exporters_save(ing_exporters *ex, ns_buf *out);
bool ing_exporters_dirty(ing_exporters *ex);
int ing_exporters_load(ing_exporters *ex, const uint8_t *buf, size_t len);

/* Appends the table as Prometheus text exposition (per-exporter series). */
void ing_exporters_prometheus(ing_exporters *ex, ns_buf *out);

/* Decodes one datagram received from `from` at recv_ms: picks the decoder by version, updates
 * the exporter's counters and sequence tracking, logs (rate-limited) what went wrong, and
 * appends the flows to out. A v5 datagram may carry several PDUs back to back (some exporters
 * and capture tools stack them; nfdump reads them too); bytes after the last PDU that do not
 * start another v5 header are padding. Returns the number of flows added or an ING_E_* code;
 * on ING_E_BATCH nothing was added or counted and the caller retries with an empty batch. */
int ing_decode(ing_exporters *ex, const ns_addr *from, int64_t recv_ms, const uint8_t *pkt,
               size_t len, ing_batch *out);

/* ---------------------------------------------------------------------------------------------
 * UDP listeners (ingest/listen.c): one socket and thread per address, recvmmsg batches,
 * decoded rows appended to the database. */
typedef struct ing_listener ing_listener;

typedef struct ing_listener_opts {
    const char *const *addrs; /* "ADDR:PORT" / "[V6]:PORT" */
    const char *const *kinds; /* per address, for status: "netflow", "sflow" (NULL: "udp") */
    int naddrs;
    unsigned threads; /* sockets + threads per address (SO_REUSEPORT); 0 = cores */
    uint64_t rcvbuf;  /* asked of the kernel; less granted is logged with the sysctl */
    bool hold;        /* bind now, decode nothing until ing_listener_go() (privilege drop) */
} ing_listener_opts;

/* Binds every address (any failure: nothing is left bound, err names the address) and starts
 * the receive threads. Every socket decodes every protocol (the datagram says which); the
 * kinds only label the addresses. */
int ing_listener_start(const ing_listener_opts *o, ing_exporters *ex, eng_db *db,
                       ing_listener **out, char *err, size_t errcap);

/* With opts.hold: lets the receive threads start decoding (datagrams wait in the sockets). */
void ing_listener_go(ing_listener *l);
/* Stops receiving, joins the threads, closes the sockets. NULL is fine. */
void ing_listener_stop(ing_listener *l);

typedef struct ing_listener_stats {
    uint64_t datagrams;
    uint64_t bytes;
    uint64_t flows;
    uint64_t decode_errors;
    uint64_t store_dropped; /* rows the store refused */
    uint64_t queue_dropped; /* rows dropped because a receive thread's queue was full */
} ing_listener_stats;
void ing_listener_get_stats(ing_listener *l, ing_listener_stats *st);
/* Appends `"listeners":[...],"ingest":{...}` (the addresses and the counters) as JSON members. */
void ing_listener_json(ing_listener *l, ns_buf *out);
/* Appends the receive counters as Prometheus text. */
void ing_listener_prometheus(ing_listener *l, ns_buf *out);
/* The address of listen address i as text ("0.0.0.0:2055"); false past the last one. */
bool ing_listener_addr(ing_listener *l, int i, char *buf, size_t cap);

/* ---------------------------------------------------------------------------------------------
 * pcap/pcapng reading (ingest/pcap.c, libpcap): the UDP datagrams of a capture, with their
 * original addresses and timestamps. Link types: Ethernet (802.1Q/QinQ), Linux SLL/SLL2, raw IP,
 * BSD loopback. IPv4 and IPv6; fragments are skipped and counted. */
typedef struct ing_pcap ing_pcap;

typedef struct ing_udp {
    int64_t ts_us; /* capture timestamp, epoch microseconds */
    ns_addr src, dst;
    uint16_t sport, dport;
    const uint8_t *payload; /* valid until the next ing_pcap_next() */
    size_t len;
} ing_udp;

typedef struct ing_pcap_stats {
    uint64_t packets;   /* every packet read */
    uint64_t udp;       /* UDP datagrams returned */
    uint64_t skipped;   /* not UDP over IP (ARP, TCP, ...) */
    uint64_t fragments; /* IP fragments (not reassembled) */
    uint64_t malformed; /* headers that do not fit the captured bytes */
} ing_pcap_stats;

/* Opens a capture. Returns 0, -errno (missing file), NS_E_MAGIC (not a capture), NS_E_TRUNC
 * (cut-off file header), NS_E_VERSION (link type not handled) or NS_E_NOMEM; err (may be NULL)
 * says which. */
int ing_pcap_open(const char *path, ing_pcap **out, char *err, size_t errcap);
/* 1: *u holds the next datagram; 0: end of capture; < 0: NS_E_TRUNC / NS_E_CORRUPT (err names
 * the packet), returned again by every later call. Fragments of non-UDP packets count as
 * skipped; a datagram cut by the capture's snap length is returned trimmed. */
int ing_pcap_next(ing_pcap *p, ing_udp *u, char *err, size_t errcap);
void ing_pcap_get_stats(const ing_pcap *p, ing_pcap_stats *st);
void ing_pcap_close(ing_pcap *p);

/* ---------------------------------------------------------------------------------------------
 * Offline ingest (ingest/offline.c): the export datagrams of captures, in the order given,
 * through the same decoders into the store. The exporter is the datagram's original source
 * address and the receive time its capture time, so minutes and exporters are as they were. */
typedef struct ing_offline_opts {
    const uint16_t *dports; /* only datagrams to these destination ports (NULL: all) */
    size_t ndports;
    void (*progress)(void *arg, const char *path, uint64_t datagrams, uint64_t flows);
    void *progress_arg; /* progress is called every 65536 datagrams and at each file's end */
} ing_offline_opts;

typedef struct ing_offline_stats {
    uint64_t files, datagrams, flows, decode_errors, store_dropped, skipped, seal_errors;
} ing_offline_stats;

/* Returns 0, or the first error reading a capture (err names the file). Decode errors are
 * counted, not fatal. */
int ing_offline(eng_db *db, ing_exporters *ex, const char *const *paths, size_t npaths,
                const ing_offline_opts *o, ing_offline_stats *st, char *err, size_t errcap);

#endif
