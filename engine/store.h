/* engine/store.h — the flow row, SESSIONDB (columnar minute, hour and day segments, catalog, lock,
 * compactor) and the segment file reader used by queries and by ns2flows-dump.
 *
 * Threads: eng_db_append() may be called from any number of ingest threads; sealing happens on
 * the database's own sealer thread so receive threads never wait for compression or fsync. */
#ifndef ENG_STORE_H
#define ENG_STORE_H

#include "engine/base.h"

/* One normalized flow, whatever protocol it came in. Addresses are 16 bytes (v4 mapped).
 * Times are epoch milliseconds. packets/bytes are already scaled by `sampling`. */
typedef struct eng_flow {
    int64_t first_ms;
    int64_t last_ms;
    uint64_t packets;
    uint64_t bytes;
    ns_addr exporter;
    ns_addr src;
    ns_addr dst;
    ns_addr nexthop;
    uint32_t src_as;
    uint32_t dst_as;
    uint32_t in_if;
    uint32_t out_if;
    uint32_t sampling;  /* 1 = unsampled */
    uint32_t source_id; /* v5 engine type<<8|id, v9 source ID, IPFIX observation domain */
    uint16_t src_port;
    uint16_t dst_port; /* ICMP: type<<8|code, as nfdump does */
    uint8_t proto;
    uint8_t tcp_flags;
    uint8_t tos;
    uint8_t src_mask;
    uint8_t dst_mask;
    uint16_t vlan;     /* source VLAN id, 0 = none */
    uint8_t direction; /* ENG_DIR_* */
    uint8_t flow_type; /* ENG_FT_*: which export protocol the row came from */
    /* flows this row stands for: 0 in a raw row (it is one flow), the sum in a roll-up row */
    uint64_t flows;
} eng_flow;

/* The flows a row counts for: every query counts this, never 1. */
static inline uint64_t eng_flow_count(const eng_flow *r)
{
    return r->flows ? r->flows : 1;
}

enum { ENG_DIR_UNKNOWN = 0, ENG_DIR_INGRESS = 1, ENG_DIR_EGRESS = 2 };
enum {
    ENG_FT_UNKNOWN = 0,
    ENG_FT_NETFLOW5 = 5,
    ENG_FT_NETFLOW9 = 9,
    ENG_FT_IPFIX = 10,
    ENG_FT_SFLOW5 = 65
};

/* Column identifiers, in on-disk order. docs/FORMAT.md lists them with types. */
typedef enum {
    ENG_COL_FIRST = 0,
    ENG_COL_LAST,
    ENG_COL_PACKETS,
    ENG_COL_BYTES,
    ENG_COL_EXPORTER,
    ENG_COL_SRC,
    ENG_COL_DST,
    ENG_COL_NEXTHOP,
    ENG_COL_SRC_AS,
    ENG_COL_DST_AS,
    ENG_COL_IN_IF,
    ENG_COL_OUT_IF,
    ENG_COL_SAMPLING,
    ENG_COL_SOURCE_ID,
    ENG_COL_SRC_PORT,
    ENG_COL_DST_PORT,
    ENG_COL_PROTO,
    ENG_COL_TCP_FLAGS,
    ENG_COL_TOS,
    ENG_COL_SRC_MASK,
    ENG_COL_DST_MASK,
    ENG_COL_VLAN,
    ENG_COL_DIRECTION,
    ENG_COL_FLOW_TYPE,
    ENG_COL_FLOWS, /* format version 4; a version 2 or 3 file reads it as 0 */
    ENG_NCOLS
} eng_col;

#define ENG_COLMASK(c) (1u << (c))
#define ENG_COLS_ALL   ((1u << ENG_NCOLS) - 1u)

const char *eng_col_name(eng_col c);

/* ---------------------------------------------------------------------------------------------
 * Segment files (engine/segment.c). A segment holds the flows one minute received (or, merged by
 * the compactor, an hour or a day), in columns.
 * Writing is atomic: <path>.tmp, fsync, rename, fsync of the folder. */

/* Rows a segment may hold: the writer refuses more, a reader refuses files that claim more. */
#define ENG_SEG_MAX_ROWS (1u << 22)

/* Writes rows[0..n) as a segment file at path. Returns 0 or a negative code. */
int eng_seg_write(const char *path, const eng_flow *rows, size_t n);

typedef struct eng_seg eng_seg; /* one open segment file; opaque */

typedef struct eng_seg_colinfo {
    uint32_t id;
    uint32_t type;     /* width in bytes of one raw value */
    uint32_t encoding; /* 0 plain, 1 byte-transpose, 2 delta zigzag varint, 3 span varint,
                        * 4 dictionary, 5 by-exporter, 6 by-address (docs/FORMAT.md) */
    uint64_t offset;
    uint64_t csize;    /* compressed bytes on disk */
    uint64_t rsize;    /* raw bytes after decompression */
    uint64_t checksum; /* xxh64 of the compressed bytes */
} eng_seg_colinfo;

typedef struct eng_seg_info {
    uint32_t version;
    uint64_t rows;
    int64_t first_ms; /* smallest first_ms */
    int64_t last_ms;  /* largest last_ms */
    uint64_t packets; /* totals */
    uint64_t bytes;
    uint64_t flows; /* flows the rows stand for (eng_flow_count summed); rows before version 4 */
    uint64_t file_size;
    uint32_t ncols;
    /* version 3 (all zero for version 2): the address index blob and the bloom filter */
    uint64_t index_offset, index_csize, index_rsize, index_checksum;
    uint32_t bloom_words; /* 64-bit words of the filter in the footer */
    uint32_t bloom_k;     /* probes per address */
    /* version 6: the address totals blob (all zero when the segment has none) */
    uint64_t atot_offset, atot_csize, atot_rsize, atot_checksum;
} eng_seg_info;

/* Opens path and checks its header and footer (not yet the column data). */
int eng_seg_open(const char *path, eng_seg **out);
void eng_seg_close(eng_seg *s);
const eng_seg_info *eng_seg_get_info(const eng_seg *s);
/* Column i's directory entry (i < info.ncols). */
const eng_seg_colinfo *eng_seg_col(const eng_seg *s, uint32_t i);
/* Verifies the checksum of column i: 0, or NS_E_CORRUPT. */
int eng_seg_verify_col(eng_seg *s, uint32_t i);
/* Decodes the columns in colmask into rows (caller-owned, capacity info.rows); columns not in
 * the mask are left zero. Returns 0 or NS_E_CORRUPT / NS_E_COMPRESS / -errno. */
int eng_seg_read(eng_seg *s, uint32_t colmask, eng_flow *rows);

/* The address index (format version 3). Addresses are keyed by eng_addr_hash (XXH3-64 of the
 * 16 bytes). A version 2 segment has no index: every query below answers "maybe, every row". */
uint64_t eng_addr_hash(const ns_addr *a);
/* False only if the footer's bloom filter proves that no row has a as src or dst. */
bool eng_seg_may_have(const eng_seg *s, const ns_addr *a);
/* Sets in sel (caller-owned, zeroed, (info.rows + 63) / 64 words; bit r of word r / 64 is row
 * r) every row that may have one of addrs[0..naddrs) as src or dst, and the count of set bits
 * in *nsel. A row with such an address is always set; a few others may be (rows sharing an
 * index bucket or block). The first call reads and checks the index (checksum, structure):
 * 0, or NS_E_CORRUPT / -errno. */
int eng_seg_select(eng_seg *s, const ns_addr *addrs, size_t naddrs, uint64_t *sel, size_t *nsel);
/* eng_seg_read for the rows set in sel (as eng_seg_select fills it): they go to rows[0..*nout)
 * in row order (rows: capacity info.rows). Only those rows are decoded. */
int eng_seg_read_sel(eng_seg *s, uint32_t colmask, const uint64_t *sel, eng_flow *rows,
                     size_t *nout);
typedef struct eng_seg_index_stats {
    uint32_t block_rows; /* rows an index entry names (0: no index) */
    uint32_t buckets[2]; /* src, dst */
    uint64_t entries[2];
    bool src_fences;        /* the src side is one fence a block (entries[0] of them), no buckets */
    uint64_t atot_entries;  /* addresses with totals (version 6; 0: no table) */
    uint64_t atot_min_rows; /* the rows that list an address */
} eng_seg_index_stats;
/* Reads and checks the index (as eng_seg_select does) and the address totals (as
 * eng_seg_addr_totals does), and describes them in *st (may be NULL).
 * 0 for a sound index or a version 2 segment; NS_E_CORRUPT otherwise. */
int eng_seg_index_check(eng_seg *s, eng_seg_index_stats *st);

/* Totals of one address's rows in a segment (format 6): as source, as destination, and both
 * (source and destination the same address; its first_ms/last_ms are not kept: 0). A side's
 * first_ms/last_ms mean nothing when its rows are 0. */
typedef struct eng_side_totals {
    uint64_t rows, flows, packets, bytes;
    int64_t first_ms, last_ms;
} eng_side_totals;
typedef struct eng_addr_totals {
    eng_side_totals src, dst, both;
} eng_addr_totals;
/* A version 6 segment lists every address on at least min_rows of its rows (min_rows: the
 * larger of rows / 1024 and 64) with those totals. 1 and *out when a is listed; 0 when it is
 * not (fewer rows, or the segment has no table: read its rows); NS_E_CORRUPT / -errno. The
 * first call reads and checks the table (checksum, structure). */
int eng_seg_addr_totals(eng_seg *s, const ns_addr *a, eng_addr_totals *out);
/* Whether the listed totals are those of rows[0..n), the segment's rows (ns2flows-dump --verify,
 * eng_seg_decode_mem): 0, NS_E_CORRUPT, or the table's load error. */
int eng_seg_addr_totals_verify(eng_seg *s, const eng_flow *rows, size_t n);

/* Reads a segment from memory (the fuzz target and tests use it). Same checks as the file
 * reader, the index's included; *rows_out is malloc'd and owned by the caller. */
int eng_seg_decode_mem(const uint8_t *buf, size_t len, eng_flow **rows_out, size_t *n_out);

/* ---------------------------------------------------------------------------------------------
 * The database (engine/db.c). */
typedef struct eng_db eng_db;

typedef struct eng_db_opts {
    uint64_t budget_bytes; /* 0 = unlimited */
    uint64_t retention_s;  /* 0 = no age limit */
    uint64_t seal_delay_s; /* a minute is sealed this long after it ends */
    bool no_sealer_thread; /* tests drive sealing with eng_db_seal_due() */
    uint64_t wal_sync_ms;  /* the WAL thread fsyncs this often; 0: as soon as records wait */
    bool no_wal;           /* no write-ahead log: a crash loses the open minutes */
    bool compactor;        /* run the compactor thread (eng_db_compact every 10 s) */
    uint64_t seal_rows;    /* a buffer this full is sealed before its minute ends (0: 256Ki) */
    uint64_t cache_bytes;  /* decoded columns of sealed segments kept for later queries, at
                            * most this many bytes (0: none); see engine/cache.c */
    unsigned seal_threads; /* sealer threads (0: one per CPU the process may run on, up to 4);
                            * each seals a different buffer */
    bool read_only;        /* a reader beside the daemon: no lock, no writes, no deletions;
                            * damaged segments are skipped, not moved; appends are refused.
                            * Sees the sealed segments of the moment it opened. */
    /* Roll-ups (docs/FORMAT.md): percent of budget_bytes kept for the roll-up tier, 0..90; 0
     * (the default here; the configuration's default is 30) deletes raw segments directly. */
    uint32_t rollup_share;
    uint32_t rollup_keys; /* ENG_COLMASK bits of the roll-up keys; 0 = ENG_ROLLUP_KEYS_DEFAULT */
    /* Memory the rows waiting to be sealed may take: the chunks of open and sealing buffers
     * (and of buffers a query still reads), and the chunks kept for reuse; 0 =
     * ENG_UNSEALED_BYTES_DEFAULT. An eng_db_append past it drops its rows (counted in
     * rows_dropped_memory); eng_db_append_wait seals first instead. */
    uint64_t unsealed_bytes;
    /* Tests only: open rows past which the budget counts sealing as behind and deletes raw
     * segments without rolling them up (0: 4 Mi, or half of what unsealed_bytes holds if
     * less). */
    uint64_t behind_rows;
    /* queries' scratch blocks are released after this long unused (0: ENG_QUERY_MEM_IDLE_MS;
     * tests set it short) */
    uint32_t query_mem_idle_ms;
} eng_db_opts;
#define ENG_UNSEALED_BYTES_DEFAULT (1ull << 30)
/* Bytes of memory one row waiting to be sealed takes (what unsealed_bytes divides). */
#define ENG_UNSEALED_ROW_BYTES sizeof(eng_flow)

/* Opens (creating if absent) the database in dir: takes the lock file, scans the segments
 * already there. A second opener gets NS_E_LOCKED (message in err). On success *out owns the
 * handle; release it with eng_db_close(). */
int eng_db_open(const char *dir, const eng_db_opts *opts, eng_db **out, char *err, size_t errcap);
/* Seals every open minute, stops the sealer thread, releases the lock. NULL is fine.
 * Returns 0, or the error that kept some open flows from being sealed (they are counted in
 * rows_dropped and logged; the caller should exit non-zero). */
int eng_db_close(eng_db *db);

/* Changes budget and retention (SIGHUP). */
void eng_db_set_limits(eng_db *db, uint64_t budget_bytes, uint64_t retention_s);
/* Changes the roll-up share and keys (SIGHUP; keys 0 = the default); new roll-ups use them. */
void eng_db_set_rollup(eng_db *db, uint32_t share, uint32_t keys);

/* ---------------------------------------------------------------------------------------------
 * Roll-ups. Before the budget deletes a raw segment it is rolled up: its rows are summed per
 * minute of first_ms and per value of the roll-up keys into a roll-up segment r<name of the
 * raw one> (first_ms = the minute's start, last_ms = start + 59999, packets, bytes and flows
 * summed, every other column 0). Queries read both tiers; each flow is in exactly one. */
#define ENG_ROLLUP_KEYS_ALLOWED                                                                    \
    (ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST) | ENG_COLMASK(ENG_COL_PROTO) |            \
     ENG_COLMASK(ENG_COL_DST_PORT) | ENG_COLMASK(ENG_COL_EXPORTER) | ENG_COLMASK(ENG_COL_IN_IF) |  \
     ENG_COLMASK(ENG_COL_OUT_IF) | ENG_COLMASK(ENG_COL_SRC_PORT) | ENG_COLMASK(ENG_COL_SRC_AS) |   \
     ENG_COLMASK(ENG_COL_DST_AS) | ENG_COLMASK(ENG_COL_TOS) | ENG_COLMASK(ENG_COL_VLAN))
#define ENG_ROLLUP_KEYS_DEFAULT                                                                    \
    (ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST) | ENG_COLMASK(ENG_COL_PROTO) |            \
     ENG_COLMASK(ENG_COL_DST_PORT) | ENG_COLMASK(ENG_COL_EXPORTER) | ENG_COLMASK(ENG_COL_IN_IF) |  \
     ENG_COLMASK(ENG_COL_OUT_IF))
/* Parses a comma-separated list of key names (srcaddr dstaddr proto dstport exporter inif outif
 * srcport srcas dstas tos vlan; empty = the default) into column bits. 0 or NS_E_PARSE with
 * the reason in err. */
int eng_rollup_keys_parse(const char *s, uint32_t *keys, char *err, size_t errcap);
/* The name of one roll-up key column ("srcaddr"...), NULL for other columns. */
const char *eng_rollup_key_name(eng_col c);
/* Sums rows[0..n) per minute and key values as a roll-up does, into *out (malloc'd, owned by
 * the caller; *nout rows, in no particular order). keys 0 = the default. */
int eng_rollup_rows(const eng_flow *rows, size_t n, uint32_t keys, eng_flow **out, size_t *nout);

/* Which tier holds which part of [from_ms, to_ms]: the sealed segments' and open minutes'
 * time spans clipped to it, ordered by start, neighbours of one tier joined. Ranges of two
 * tiers may overlap near their boundary (segments are filed by receive time; each flow is still
 * in one tier only). Fills out[0..cap) and returns how many ranges there are (may exceed
 * cap), or a negative code. */
typedef enum { ENG_TIER_RAW = 0, ENG_TIER_ROLLUP = 1 } eng_tier;
typedef struct eng_tier_range {
    eng_tier tier;
    int64_t from_ms, to_ms;
} eng_tier_range;
int eng_db_tiers(eng_db *db, int64_t from_ms, int64_t to_ms, eng_tier_range *out, size_t cap);
/* The roll-up keys in force (column bits). */
uint32_t eng_db_rollup_keys(eng_db *db);
/* A segment file name's tier: "minute", "hour", "day", "rollup", or NULL if not a segment. */
const char *eng_seg_name_tier(const char *name);

/* Adds rows received at recv_ms (epoch ms; decides the minute). Thread-safe. The rows are
 * first written (not fsynced) to the minute's WAL file, SESSIONDB/wal/; the database's own WAL
 * thread fsyncs it (wal_sync_ms). A WAL write that fails (a full disk) is counted in
 * wal_errors and logged, and the rows are still kept in memory. So are rows whose record would
 * take the WAL past half of the byte budget (sealing has fallen behind the arrival rate):
 * counted in wal_over_budget and logged, they are not in the WAL, and a crash before they are
 * sealed loses them; the budget holds. Rows that would take the memory of unsealed rows past
 * eng_db_opts.unsealed_bytes are dropped, all n of them (counted in rows_dropped and
 * rows_dropped_memory, logged at most a few times a minute): the call never waits for sealing.
 * Returns 0 or NS_E_NOMEM (all n rows are then counted as dropped). */
int eng_db_append(eng_db *db, int64_t recv_ms, const eng_flow *rows, size_t n);
/* eng_db_append for a caller that may wait (offline ingest): when the rows do not fit in
 * unsealed_bytes it seals buffers on the calling thread (full ones first, then the oldest),
 * or waits for the sealer threads, until they fit; rows are dropped only when nothing more can
 * be sealed (a full disk). Same return values. Never call it from a receive thread. */
int eng_db_append_wait(eng_db *db, int64_t recv_ms, const eng_flow *rows, size_t n);

/* fsyncs every WAL file holding records not yet on disk (the WAL thread calls it; tests and
 * eng_db_close may too). On success wal_synced_through becomes the time the call started.
 * Returns 0 or -errno (counted in wal_errors). */
int eng_db_wal_sync(eng_db *db);
/* A tap sees every row eng_db_append() kept, after the database took it and outside its mutex,
 * on the appending thread (so it must not block: the ClickHouse sink only copies the rows).
 * Set it before any append; it is read without a lock. NULL removes it. */
typedef void (*eng_tap_fn)(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n);
void eng_db_set_tap(eng_db *db, eng_tap_fn fn, void *arg);

/* Seals every minute that ended at least seal_delay before now_ms (all of them if force).
 * Returns the number of segments written or a negative code. */
int eng_db_seal_due(eng_db *db, int64_t now_ms, bool force);

/* Merges the segments of every closed hour (ended seal_delay + 60 s before now_ms, no minute of
 * it still open) into one hour segment h<hour>-<seq>.seg, then those of every closed day into
 * d<day>-<seq>.seg, re-encoded, when the result holds at most 2^18 rows. The swap is atomic for
 * queries (never a flow twice, never one missed) and for crashes (a restart finishes or forgets
 * a merge; docs/FORMAT.md). Returns the merges done, or a negative code. Thread-safe. */
int eng_db_compact(eng_db *db, int64_t now_ms);

typedef struct eng_db_stats {
    uint64_t segments;
    uint64_t disk_bytes;   /* everything under SESSIONDB: segments, WAL, state, quarantine, log */
    uint64_t open_rows;    /* rows in minutes not yet sealed */
    int64_t oldest_ms;     /* smallest first_ms stored (0 if empty) */
    int64_t newest_ms;     /* largest last_ms stored (0 if empty) */
    uint64_t rows_stored;  /* rows appended since open */
    uint64_t rows_dropped; /* rows that could not be kept (memory, write errors) */
    uint64_t rows_dropped_memory; /* of them: rows past unsealed_bytes (sealing behind) */
    uint64_t unsealed_bytes;      /* memory the rows waiting to be sealed take now */
    uint64_t unsealed_bytes_max;  /* eng_db_opts.unsealed_bytes in force */
    uint64_t seal_errors;
    uint64_t segments_deleted; /* by budget or retention */
    uint64_t segments_quarantined;
    uint64_t segments_missing;   /* files removed behind the daemon's back, found by a query */
    uint64_t segments_pruned;    /* sealed segments an address scan did not need to decode */
    uint64_t segments_compacted; /* segments merged into hour or day segments since open */
    uint64_t rows_sealed;        /* rows written into minute segments since open */
    uint64_t seal_ns;            /* monotonic time spent sealing them (sort, encode, write) */
    uint64_t rows_compacted;     /* rows written into hour or day segments since open */
    uint64_t compact_ns;         /* monotonic time spent in the merges that completed */
    uint64_t budget_bytes;       /* current limits */
    uint64_t retention_s;
    uint64_t wal_bytes;          /* bytes in SESSIONDB/wal/ (open minutes not sealed yet) */
    int64_t wal_synced_through;  /* epoch ms: every row appended before it is on disk */
    uint64_t wal_replayed_rows;  /* rows read back from the WAL at open */
    uint64_t wal_errors;         /* failed WAL writes or fsyncs, torn or corrupt records */
    uint64_t wal_over_budget;    /* rows kept in memory only: the WAL would have passed half
                                  * the budget (sealing behind the arrival rate) */
    uint64_t rollup_segments;    /* roll-up tier: segments and their bytes (in segments, */
    uint64_t rollup_bytes;       /* disk_bytes) */
    uint64_t rollup_share;       /* current roll-up share of the budget, percent */
    uint64_t segments_rolled_up; /* raw segments replaced by their roll-up since open */
    uint64_t rows_rolled_up;     /* raw rows they held */
    uint64_t rollup_rows;        /* roll-up rows written for them */
    uint64_t rollup_errors;      /* roll-ups that failed (the raw segment was deleted anyway) */
    uint64_t rollup_skipped;     /* raw segments deleted unrolled: sealing was behind */
    uint64_t cache_bytes;        /* decoded columns kept (eng_db_opts.cache_bytes) */
    uint64_t cache_hits;         /* columns a scan found decoded, and had to decode */
    uint64_t cache_misses;
} eng_db_stats;
void eng_db_get_stats(eng_db *db, eng_db_stats *st);
const char *eng_db_dir(const eng_db *db);

/* Small state files other modules keep in SESSIONDB (templates, sampler tables): written
 * atomically (tmp, fsync, rename, fsync of the folder) as <dir>/state/<name>. name is a plain
 * file name ([a-z0-9_.-]). state_read hands out a malloc'd buffer the caller frees; a missing
 * file is -ENOENT. */
int eng_db_state_write(eng_db *db, const char *name, const void *buf, size_t len);
int eng_db_state_read(eng_db *db, const char *name, uint8_t **buf, size_t *len);

/* Visits every row whose [first_ms, last_ms] overlaps [from_ms, to_ms] (inclusive), in sealed
 * segments of both tiers and in the open minutes, each exactly once (a roll-up row has flows > 0
 * and its minute's times: count eng_flow_count(), never 1). Only the columns in colmask are
 * filled (ask for ENG_COL_FIRST/LAST to read the times: rows of a segment wholly inside the
 * range may come without them). cb returns 0 to go on, non-zero to stop (returned). A corrupt
 * segment is quarantined and skipped (counted). Rows passed to cb are valid during the call only.
 */
typedef int (*eng_row_cb)(void *arg, const eng_flow *rows, size_t n);
int eng_db_scan(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask, eng_row_cb cb,
                void *arg);

/* Like eng_db_scan, but a sealed segment that lies wholly inside the range is offered to tcb
 * first with its footer totals (flows, packets, bytes, first, last); if tcb returns 1 its rows
 * are not read (a summary then costs a footer read per segment), 0 reads them as usual, and
 * anything else stops the scan. */
typedef int (*eng_totals_cb)(void *arg, uint64_t flows, uint64_t packets, uint64_t bytes,
                             int64_t first_ms, int64_t last_ms);
int eng_db_scan_totals(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask, eng_row_cb cb,
                       eng_totals_cb tcb, void *arg);

/* One sealed segment's rows as decoded columns, for callbacks that aggregate columns without
 * building rows (the query engine's fast paths). col[c], for each c in mask, is the segment's
 * column: one value a row, eng_col_width(c) bytes each, little-endian (read them with
 * eng_col_u64() and friends). The rows to visit are idx[0..n) (ascending row numbers), or
 * 0..n when idx is NULL. Valid during the callback only. */
/* A dictionary-coded column of a sealed segment (format 5: src, dst): its distinct values,
 * ascending, and each row's code, the rank of its value (so codes order as the values do). */
typedef struct eng_coldict {
    size_t n;              /* distinct values */
    const uint8_t *vals;   /* n values of 16 bytes */
    const uint32_t *codes; /* one a row, numbered as the columns' rows (idx applies) */
} eng_coldict;

typedef struct eng_colview {
    size_t n;
    const uint32_t *idx;
    uint32_t mask;
    const uint8_t *col[ENG_NCOLS];
    /* besides col[c], where the segment has column c as a dictionary (else NULL) */
    const eng_coldict *dict[ENG_NCOLS];
    /* Instead of col[c] (NULL then, c still in mask), for the columns a scan was asked to
     * hand over as planes (eng_scan_opts.planes): an 8-byte column's 8 byte planes as stored,
     * nrows bytes each (byte p of row i at planes[c][p * nrows + i]), of which only the low 4
     * can be nonzero (eng_col_plane_u64 reads them; eng_colview_unplane decodes them). */
    const uint8_t *planes[ENG_NCOLS];
    size_t nrows;
} eng_colview;
typedef int (*eng_cols_cb)(void *arg, const eng_colview *v);
size_t eng_col_width(eng_col c);
/* Rows k0..k0+cnt of the view (k counts visited rows) as eng_flow; columns not in mask zero. */
void eng_colview_rows(const eng_colview *v, size_t k0, size_t cnt, eng_flow *rows);
/* The same for the columns in cols only (and in the view): the rows' other fields are left as
 * they were (a filter that reads two columns needs only those written). */
void eng_colview_fill(const eng_colview *v, size_t k0, size_t cnt, uint32_t cols, eng_flow *rows);
static inline uint64_t eng_col_u64(const eng_colview *v, eng_col c, size_t row)
{
    return ns_get_le64(v->col[c] + row * 8);
}
static inline uint64_t eng_col_plane_u64(const eng_colview *v, eng_col c, size_t row)
{
    const uint8_t *p = v->planes[c] + row;
    size_t s = v->nrows;
    return (uint64_t)p[0] | (uint64_t)p[s] << 8 | (uint64_t)p[2 * s] << 16 |
           (uint64_t)p[3 * s] << 24;
}
/* v with its plane columns decoded into *buf (*cap bytes, grown with realloc; the caller
 * frees it) as col[c], into *out. 0 or NS_E_NOMEM. */
int eng_colview_unplane(const eng_colview *v, eng_colview *out, uint8_t **buf, size_t *cap);
static inline uint32_t eng_col_u32(const eng_colview *v, eng_col c, size_t row)
{
    return ns_get_le32(v->col[c] + row * 4);
}
static inline uint16_t eng_col_u16(const eng_colview *v, eng_col c, size_t row)
{
    return ns_get_le16(v->col[c] + row * 2);
}
static inline const uint8_t *eng_col_addr(const eng_colview *v, eng_col c, size_t row)
{
    return v->col[c] + row * 16;
}

/* What a scan may leave out. All zero is the plain scan. */
typedef struct eng_scan_opts {
    /* Only rows whose src or dst is one of addrs[0..naddrs) are needed (naddrs 0: every row).
     * Sealed segments whose bloom filter excludes every address are not read; in the others
     * only the rows the address index names are passed (open minutes: every row). cb may still
     * get rows with other addresses (callers re-check with their filter), but never misses a
     * row with one of them and never gets a row twice. tcb is not offered such segments. */
    const ns_addr *addrs;
    size_t naddrs;
    /* Sealed segments newest first (by their latest last_ms), and, when want is set, each is
     * offered to want(arg, first_ms, last_ms) (its smallest first_ms and largest last_ms)
     * before it is read: 0 skips it. For "the newest N flows", which can stop reading old
     * segments once it holds N newer rows. want gets the worker's arg. */
    bool newest_first;
    int (*want)(void *arg, int64_t first_ms, int64_t last_ms);
    /* When set, a sealed segment's rows go to cols as columns instead of to cb as rows (the
     * open minutes still go to cb). The same rows either way, with the same columns. */
    eng_cols_cb cols;
    /* Columns cols reads through v->dict alone where a segment has them as dictionaries: their
     * values are then not expanded into v->col (NULL). Only for columns no filter reads. */
    uint32_t dict_only;
    /* 8-byte columns (counters) cols reads through v->planes where a segment stores them as
     * byte planes whose high 4 are all zero (nearly always): not transposed into v->col. Only
     * for columns no filter reads. */
    uint32_t planes;
    /* With one address (naddrs 1) and tcb: the rows wanted are exactly those with it as src
     * (ENG_SIDE_SRC), as dst (ENG_SIDE_DST) or either (both bits). A sealed segment wholly
     * inside the range that lists the address in its totals (eng_seg_addr_totals) is offered
     * to tcb with the totals of those rows, and is read only if tcb declines. */
    unsigned addr_sides;
    /* The sealed segment with the smallest first_ms, and the one with the largest last_ms, are
     * read with the time columns as well (whatever colmask says): a filtered answer's time
     * range then comes mostly from them, without a second pass over their rows. */
    bool extreme_times;
} eng_scan_opts;
enum { ENG_SIDE_SRC = 1, ENG_SIDE_DST = 2 };
/* eng_db_scan_totals with options (opts may be NULL; tcb may be NULL). */
int eng_db_scan_opt(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask,
                    const eng_scan_opts *opts, eng_row_cb cb, eng_totals_cb tcb, void *arg);

/* The same scan on nworkers threads (the caller's among them): sealed segments are shared out,
 * each worker calling cb and tcb with its own args[w], so callbacks with the same arg never run
 * at once and callers merge per-worker results at the end; the open minutes go to args[0]
 * after the workers are done. A callback's non-zero return stops every worker and is returned.
 * nworkers 1..ENG_SCAN_MAX_WORKERS. */
#define ENG_SCAN_MAX_WORKERS 16
int eng_db_scan_par(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask,
                    const eng_scan_opts *opts, unsigned nworkers, eng_row_cb cb, eng_totals_cb tcb,
                    void *const *args);
/* Workers worth starting for a scan: the CPUs this process may run on, at most the cap. */
unsigned eng_scan_workers(void);

/* Runs fn(args[0]) on the caller's thread and fn(args[1..n)) on the database's scan threads
 * (started when first needed, kept until eng_db_close), as many at once as threads are free.
 * Returns when every call that started has returned; a call no thread has taken when
 * fn(args[0]) returns is not made at all, so fn must share its work through the args (a
 * counter of parts to take) so that any of them finishes it. No two calls get the same arg. */
void eng_db_par_run(eng_db *db, unsigned n, void *(*fn)(void *), void *const *args);

/* Scratch blocks for a query's large arrays (group tables, partition arenas): whole huge pages,
 * contents undefined. Blocks given back are kept, up to ENG_QUERY_MEM_KEEP bytes, for the next
 * query (a fresh block costs a page fault and a cleared page every 2 MiB or 4 KiB, about a
 * tenth of a top-N), and released once none has been taken or given back for
 * ENG_QUERY_MEM_IDLE_MS, or at eng_db_close. eng_db_mem_get: NULL when out of memory, else the
 * block and its size in *got (at least bytes); eng_db_mem_put takes that size back. */
#define ENG_QUERY_MEM_KEEP    (512ull << 20)
#define ENG_QUERY_MEM_IDLE_MS 30000
void *eng_db_mem_get(eng_db *db, size_t bytes, size_t *got);
void eng_db_mem_put(eng_db *db, void *p, size_t size);
/* Bytes of scratch blocks kept now (for tests). */
size_t eng_db_mem_kept(eng_db *db);

#endif
