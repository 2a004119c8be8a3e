/* engine/db.c — SESSIONDB: the lock, the catalog of sealed segments, the open minutes and the
 * sealer thread that turns a finished minute into a segment file.
 *
 * Open minutes are lists of fixed-size chunks. Rows are only appended, under the database
 * mutex, so a query can snapshot (chunk pointers, row count) under the mutex and read the rows
 * afterwards without it: the rows it saw never change. A minute buffer is reference counted so
 * sealing can retire it while a query still reads it. Publishing a segment and retiring its
 * buffer happen in one critical section: a query sees one or the other, never both. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "engine/wal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define CHUNK_SHIFT      12u
#define CHUNK_ROWS       (1u << CHUNK_SHIFT)
#define SEAL_MEM_IDLE_MS 5000
#define CHUNK_BYTES      (CHUNK_ROWS * sizeof(eng_flow))
/* chunks kept for reuse: four sealed buffers' worth (~150 MB), so a flood's buffers are not
 * freed and faulted in again seal after seal */
#define POOL_CHUNKS (4 * SEAL_ROWS / CHUNK_ROWS)
/* default eng_db_opts.seal_rows: ~38 MB of WAL and memory a buffer. The compactor's cap on a
 * merged segment too: at 1M flows/s, 2^18-row seals cost 9% less CPU than 2^20-row ones (the
 * dictionaries and index tables stay in cache) and left a one-CPU collector a backlog of 0.4M
 * rows instead of 3.6M (RSS 1.1 GB, not 2.1), for 4% more bytes a flow at that rate */
#define SEAL_ROWS      (1u << 18)
#define LOCK_NAME      "ns2flows.lock"
#define QUARANTINE_DIR "quarantine"
/* rows of a merged segment at most: a scan holds a segment's rows (about 36 MB then) */
#define COMPACT_MAX_ROWS (256u * 1024u)
#define COMPACT_EVERY_MS 10000
/* open rows past which the budget deletes raw segments without rolling them up (or half of
 * what unsealed_bytes holds, if less; eng_db_opts.behind_rows in tests) */
#define ROLLUP_BEHIND_ROWS (4u * 1024u * 1024u)

typedef struct minute_buf {
    int64_t minute; /* epoch minute (ms / 60000) */
    eng_flow **chunks;
    size_t nchunks, capchunks;
    size_t n; /* rows */
    int64_t first_ms, last_ms;
    uint64_t flows, packets, bytes; /* the rows' totals (the catalog keeps them) */
    bool sealing;                   /* no more appends; a sealer owns the write */
    bool claimed;     /* a sealer is writing it now (sealing and not claimed: a failed try) */
    bool full;        /* the next rows did not fit: seal it now, whatever its minute */
    int refs;         /* the db's list holds one; each query snapshot one */
    uint64_t seq;     /* its WAL file is wal/m<minute>-<seq>.wal, its segment m<minute>-<seq>.seg */
    int wal_fd;       /* -1: no WAL file yet (or the WAL is off) */
    uint64_t wal_off; /* bytes written (whole records only) */
    uint64_t wal_synced; /* bytes known to be on disk */
} minute_buf;

/* Buffers a sealer keeps from one seal to the next (a seal of 1M rows needs ~200 MB: fresh
 * pages each time cost more than the sorting); freed when it has been idle a while. */
typedef struct seal_mem {
    void *buf[4]; /* rows, permutation, sort keys, their second copy */
    size_t cap[4];
    int64_t used_ms; /* monotonic */
} seal_mem;

static void *mem_at(seal_mem *m, int i, size_t need)
{
    if (m->cap[i] < need) {
        /* a quarter more: the next buffer, a few rows larger, fits without a fresh allocation */
        size_t cap = need + need / 4;
        free(m->buf[i]);
        m->buf[i] = malloc(cap);
        m->cap[i] = m->buf[i] ? cap : 0;
    }
    return m->buf[i];
}

static void mem_free(seal_mem *m)
{
    for (int i = 0; i < 4; i++) {
        free(m->buf[i]);
        m->buf[i] = NULL;
        m->cap[i] = 0;
    }
}

typedef struct seg_entry {
    char name[64];
    int64_t minute; /* first minute of the span the segment covers (by receive time) */
    int64_t span;   /* minutes: 1 (sealed minute), 60 (hour), 1440 (day) */
    uint64_t seq;
    int64_t first_ms, last_ms;
    uint64_t rows, size;
    /* roll-up tier: r<name of the raw segment it replaced>; minute, span and seq are that
     * segment's */
    bool rollup;
    /* its footer's totals, so that a summary of whole segments opens none of them, and the
     * identity of its file when they were taken (eng__stat_ident; 0: unknown) */
    uint64_t flows, packets, bytes, ident;
} seg_entry;

#define SCAN_POOL 8 /* scan buffers kept between scans (one per concurrent scan worker) */
typedef struct scan_bufs scan_bufs;
static void bufs_free(scan_bufs *b);

/* The scan threads (qpool_*): started as queries first need them, kept until eng_db_close, so
 * a query does not pay for creating and joining threads. A query queues a task for each of its
 * workers but the first (its own thread's); a task no thread has taken when the query's own
 * worker is done is dropped, so the work must be shared through the tasks' state (segments or
 * partitions taken from a counter) and any subset of them must finish it. The same mutex keeps
 * the large scratch blocks of queries (eng_db_mem_get), released after ENG_QUERY_MEM_IDLE_MS
 * without use by an idle scan thread. */
enum { QT_QUEUED, QT_RUNNING, QT_DONE, QT_DROPPED };
typedef struct qpool_task {
    void *(*fn)(void *);
    void *arg;
    struct qpool_task *next; /* in the queue */
    int state;               /* QT_*, under qpool.mu */
} qpool_task;

#define QPOOL_MEM_MAX 64 /* scratch blocks kept at most (and ENG_QUERY_MEM_KEEP bytes) */
typedef struct qpool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a task queued, memory to watch, or stop */
    pthread_cond_t done; /* a task finished */
    pthread_t th[ENG_SCAN_MAX_WORKERS];
    unsigned nth;
    bool stop;
    qpool_task *head, *tail;
    struct {
        void *p;
        size_t size;
    } mem[QPOOL_MEM_MAX];
    size_t nmem, mem_bytes;
    int64_t mem_used_ms; /* the last eng_db_mem_get or _put (monotonic) */
    int64_t mem_idle_ms; /* kept blocks are released after this long unused */
} qpool;
static void qpool_stop(qpool *q);

struct eng_db {
    char dir[4096];
    /* scan workers' buffers, kept so that a repeated query does not pay for page faults (a
     * fifth of a device view's time when every scan allocated them afresh); under pool_mu */
    pthread_mutex_t pool_mu;
    scan_bufs *scan_pool[SCAN_POOL];
    size_t nscan_pool;
    qpool qp;         /* scan threads and scratch blocks of queries */
    eng_cache *cache; /* decoded columns of sealed segments (NULL: none) */
    int lockfd;
    eng_db_opts opts;
    pthread_mutex_t mu;
    pthread_mutex_t seal_mu; /* one eng_db_seal_due caller at a time (sealer threads claim
                              * buffers under mu instead) */
    pthread_cond_t cond;
    pthread_cond_t seal_cond; /* a buffer filled up: the sealer should not wait for its tick */
    struct sealer *sealers;   /* the sealer threads, nsealers of them running */
    unsigned nsealers;
    bool sealer_running;
    pthread_t compactor;
    bool compactor_running;
    pthread_mutex_t compact_mu; /* one compaction at a time */
    /* scans hold it shared from their snapshot of segment names to their end; the compactor
     * takes it exclusively to delete merged inputs, so a scan never loses a segment it listed */
    pthread_rwlock_t scan_lock;
    bool stop;
    minute_buf **open;
    size_t nopen, capopen;
    seg_entry *segs;
    size_t nsegs, capsegs;
    uint64_t next_seq;
    uint64_t open_rows;
    /* memory of unsealed rows, in chunks: those of buffers (open, sealing, or retired while a
     * query still reads them) and the pool's; appends keep the chunks in use within
     * cap_chunks (eng_db_opts.unsealed_bytes) */
    uint64_t mem_chunks, cap_chunks;
    pthread_cond_t room_cond; /* a seal freed chunks (eng_db_append_wait waits for it) */
    ns_ratelimit mem_rl;      /* rows dropped at cap_chunks logged */
    ns_ratelimit seal_rl;     /* seal failures logged */
    /* a flood: two seals of big buffers within a second mark one for the next 10 s */
    int64_t seal_sec_ms;     /* the second they are counted in (monotonic ms) */
    unsigned seal_sec_n;     /* and how many so far */
    int64_t flood_until_ms;  /* monotonic ms */
    bool enforce_due;        /* the WAL passed the budget: the compactor thread's pass is due */
    ns_ratelimit compact_rl; /* compaction failures logged (a full disk fails every pass) */
    char doomed[64][64];     /* segment files to unlink once the mutex is released */
    size_t ndoomed;
    eng_db_stats st;
    /* write-ahead log (engine/wal.c): written by appends under mu, fsynced by wal_thread */
    bool wal_on;
    bool wal_stop;
    bool wal_running;
    bool wal_dir_dirty; /* a WAL file was created since the last sync: fsync wal/ too */
    bool wal_pending;   /* wal_sync_ms 0: records wait for the WAL thread */
    pthread_t wal_thread;
    pthread_cond_t wal_cond;
    ns_ratelimit wal_rl;
    ns_ratelimit wal_budget_rl; /* the WAL at half the budget: rows kept out of it */
    uint64_t other_bytes;  /* state/, quarantine/, log and other files: counted in the budget */
    int64_t other_scan_ms; /* when other_bytes was last measured (monotonic) */
    eng_tap_fn tap;        /* set before traffic starts, read without the mutex */
    void *tap_arg;
    /* chunks of sealed minutes, kept for the next rows (under mu): fresh 557 KB chunks cost a
     * page fault and a cleared page every 4 KB, a third of the daemon's CPU at 1M flows/s */
    eng_flow *pool[POOL_CHUNKS];
    size_t npool;
    seal_mem seal_mem;      /* eng_db_seal_due's (under seal_mu) */
    ns_ratelimit rollup_rl; /* roll-up failures logged */
    uint8_t *wal_spare;     /* a WAL record buffer between appends (under mu) */
    size_t wal_spare_cap;
    /* the catalog file (catalog_save): catalog changes counted under mu, the count it was last
     * written at, and one writer at a time */
    uint64_t cat_gen, cat_saved;
    pthread_mutex_t cat_mu;
    ns_ratelimit cat_rl; /* its write failures logged (under cat_mu) */
};

/* ------------------------------------------------------------------------------------------ */

static void buf_unref_locked(eng_db *db, minute_buf *b)
{
    if (--b->refs > 0)
        return;
    if (db && b->nchunks)
        pthread_cond_broadcast(&db->room_cond); /* eng_db_append_wait may wait for them */
    if (b->wal_fd >= 0)
        close(b->wal_fd);
    for (size_t i = 0; i < b->nchunks; i++) {
        if (db && db->npool < POOL_CHUNKS) {
            db->pool[db->npool++] = b->chunks[i];
        } else {
            free(b->chunks[i]);
            if (db)
                db->mem_chunks--;
        }
    }
    free(b->chunks);
    free(b);
}

static void pool_free(eng_db *db)
{
    while (db->npool > 0) {
        free(db->pool[--db->npool]);
        db->mem_chunks--;
    }
}

/* Rows b can take now within unsealed_bytes: the free slots of its chunks, and whole chunks
 * from the pool or not allocated yet. */
static size_t room_locked(const eng_db *db, const minute_buf *b)
{
    uint64_t in_use = db->mem_chunks - db->npool;
    uint64_t spare = db->cap_chunks > in_use ? db->cap_chunks - in_use : 0;
    return b->nchunks * CHUNK_ROWS - b->n + (size_t)spare * CHUNK_ROWS;
}

/* Rows at which a buffer is sealed before its minute ends: seal_rows, or a quarter of what
 * unsealed_bytes holds if less, so a small cap is not filled by one minute waiting for its end
 * (the default cap, 1 GiB, holds about 7.4M rows: seal_rows decides). */
static size_t seal_rows_of(const eng_db *db)
{
    size_t rows = db->opts.seal_rows ? (size_t)db->opts.seal_rows : SEAL_ROWS;
    size_t quarter = (size_t)db->cap_chunks * CHUNK_ROWS / 4;
    return quarter && quarter < rows ? quarter : rows;
}

/* Open rows past which the budget counts sealing as behind. */
static uint64_t behind_rows(const eng_db *db)
{
    uint64_t half = db->cap_chunks * CHUNK_ROWS / 2;
    if (db->opts.behind_rows)
        return db->opts.behind_rows;
    return half < ROLLUP_BEHIND_ROWS ? half : ROLLUP_BEHIND_ROWS;
}

/* Takes b out of the list of open minutes (the caller then drops the list's reference). */
static void open_remove_locked(eng_db *db, const minute_buf *b)
{
    for (size_t i = 0; i < db->nopen; i++) {
        if (db->open[i] == b) {
            memmove(&db->open[i], &db->open[i + 1], (db->nopen - i - 1) * sizeof *db->open);
            db->nopen--;
            return;
        }
    }
}

/* dir/name, "" when it does not fit. Without snprintf: a summary builds one per segment, and
 * formatting them showed in the daemon's profile of /api/v1/summary. */
static int seg_path(const eng_db *db, const char *name, char *out, size_t cap)
{
    size_t d = strlen(db->dir), n = strlen(name);
    if (d + n + 2 > cap) {
        if (cap)
            out[0] = 0;
        return -ENAMETOOLONG;
    }
    memcpy(out, db->dir, d);
    out[d] = '/';
    memcpy(out + d + 1, name, n + 1);
    return 0;
}

/* Parses "m<minute>-<seq>.seg", "h<hour>-<seq>.seg" and "d<day>-<seq>.seg" (the compactor's
 * merged segments; hour and day numbers count from the epoch like minutes), and the roll-up of
 * any of them, "r" before its name (rollup, if not NULL, tells which). */
static bool seg_name_parse(const char *name, int64_t *minute, int64_t *span, uint64_t *seq,
                           bool *rollup)
{
    long long m;
    unsigned long long s;
    int used = 0;
    bool r = name[0] == 'r';
    if (rollup)
        *rollup = r;
    if (r)
        name++;
    char tier = name[0];
    if (tier != 'm' && tier != 'h' && tier != 'd')
        return false;
    if (sscanf(name + 1, "%lld-%llu.seg%n", &m, &s, &used) != 2 || name[1 + used] != 0 ||
        name[1] == '-' || name[1] == '+' || m < 0)
        return false;
    *span = tier == 'm' ? 1 : tier == 'h' ? 60 : 1440;
    if (m > (1ll << 40) / *span) /* in minutes: times in ms stay far from overflowing */
        return false;
    *minute = m * *span;
    *seq = s;
    return true;
}

static int cmp_seg(const void *a, const void *b)
{
    const seg_entry *x = a, *y = b;
    if (x->minute != y->minute)
        return x->minute < y->minute ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void tier_count_locked(eng_db *db, const seg_entry *e, bool add)
{
    if (!e->rollup)
        return;
    db->st.rollup_segments = add ? db->st.rollup_segments + 1 : db->st.rollup_segments - 1;
    db->st.rollup_bytes = add ? db->st.rollup_bytes + e->size : db->st.rollup_bytes - e->size;
}

static int catalog_add_locked(eng_db *db, const seg_entry *e)
{
    if (db->nsegs == db->capsegs) {
        size_t cap = db->capsegs ? db->capsegs * 2 : 64;
        seg_entry *n = realloc(db->segs, cap * sizeof *n);
        if (!n)
            return NS_E_NOMEM;
        db->segs = n;
        db->capsegs = cap;
    }
    /* keep the catalog ordered oldest first: budget deletion takes from the front */
    size_t i = db->nsegs;
    while (i > 0 && cmp_seg(&db->segs[i - 1], e) > 0) {
        db->segs[i] = db->segs[i - 1];
        i--;
    }
    db->segs[i] = *e;
    db->nsegs++;
    db->cat_gen++;
    db->st.segments = db->nsegs;
    db->st.disk_bytes += e->size;
    tier_count_locked(db, e, true);
    return 0;
}

static void catalog_remove_locked(eng_db *db, size_t i)
{
    eng__cache_drop_file(db->cache, eng__cache_file_id(db->segs[i].name));
    db->st.disk_bytes -= db->segs[i].size;
    tier_count_locked(db, &db->segs[i], false);
    memmove(&db->segs[i], &db->segs[i + 1], (db->nsegs - i - 1) * sizeof *db->segs);
    db->nsegs--;
    db->cat_gen++;
    db->st.segments = db->nsegs;
}

/* Moves a damaged file aside so it is never read again, and keeps it for inspection. */
static void quarantine_file(eng_db *db, const char *name, int why)
{
    char from[4200], qdir[4200], to[4300];
    seg_path(db, name, from, sizeof from);
    snprintf(qdir, sizeof qdir, "%s/%s", db->dir, QUARANTINE_DIR);
    if (mkdir(qdir, 0755) < 0 && errno != EEXIST) {
        ns_log(NS_LOG_ERROR, "db: cannot create %s: %s", qdir, strerror(errno));
        return;
    }
    snprintf(to, sizeof to, "%s/%s", qdir, name);
    if (rename(from, to) < 0)
        ns_log(NS_LOG_ERROR, "db: cannot quarantine %s: %s", from, strerror(errno));
    else
        ns_log(NS_LOG_ERROR, "db: segment %s is damaged (%s); moved to %s", name, ns_strerror(why),
               to);
}

static void quarantine_locked(eng_db *db, const char *name, int why)
{
    if (db->opts.read_only) {
        /* the daemon owns the folder: a reader only stops reading the file */
        for (size_t i = 0; i < db->nsegs; i++)
            if (strcmp(db->segs[i].name, name) == 0) {
                catalog_remove_locked(db, i);
                break;
            }
        db->st.segments_quarantined++;
        ns_log(NS_LOG_WARN, "db: segment %s is damaged (%s); skipped", name, ns_strerror(why));
        return;
    }
    for (size_t i = 0; i < db->nsegs; i++) {
        if (strcmp(db->segs[i].name, name) == 0) {
            db->other_bytes += db->segs[i].size; /* still under SESSIONDB, in quarantine/ */
            catalog_remove_locked(db, i);
            break;
        }
    }
    db->st.segments_quarantined++;
    quarantine_file(db, name, why);
}

/* A merged segment replaces every raw segment whose span lies inside its own and whose
 * sequence number is smaller: the compactor merges all of them and takes its number after
 * theirs. A roll-up replaces the one raw segment it is named after. A crash after publishing
 * the merged file or the roll-up and before deleting its inputs leaves both; this finishes the
 * deletion, so no flow is counted twice. (A read-only reader only drops them.) Roll-ups are
 * never inputs of a merge, so a merged segment never replaces one. */
static void drop_superseded(eng_db *db)
{
    /* only merged segments cover others, and the catalog is ordered by first minute: look at
     * the neighbours of each merged segment (linear in the catalog, not quadratic) */
    bool *gone = calloc(db->nsegs ? db->nsegs : 1, sizeof *gone);
    if (!gone)
        return; /* then both stay until the next start-up: the merged flows count twice */
    for (size_t j = 0; j < db->nsegs; j++) {
        const seg_entry *e = &db->segs[j];
        if (e->span <= 1 && !e->rollup)
            continue;
        size_t lo = 0, hi = db->nsegs; /* first entry with minute >= e->minute */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (db->segs[mid].minute < e->minute)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < db->nsegs && db->segs[i].minute < e->minute + e->span; i++) {
            const seg_entry *x = &db->segs[i];
            if (i == j || x->rollup)
                continue;
            if (e->rollup ? x->minute == e->minute && x->span == e->span && x->seq == e->seq
                          : x->seq < e->seq && x->minute + x->span <= e->minute + e->span)
                gone[i] = true;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < db->nsegs; i++) {
        if (!gone[i]) {
            db->segs[k++] = db->segs[i];
            continue;
        }
        if (!db->opts.read_only) {
            char path[4200];
            seg_path(db, db->segs[i].name, path, sizeof path);
            if (unlink(path) < 0 && errno != ENOENT)
                ns_log(NS_LOG_ERROR, "db: cannot delete %s: %s", path, strerror(errno));
            else
                ns_log(NS_LOG_WARN, "db: removed %s, already merged (a compaction was cut short)",
                       db->segs[i].name);
        }
        db->st.disk_bytes -= db->segs[i].size;
        tier_count_locked(db, &db->segs[i], false);
    }
    db->nsegs = k;
    db->st.segments = k;
    free(gone);
}

/* ------------------------------------------------------------------------------------------ */
/* The catalog file, state/catalog.bin: the daemon's catalog (each sealed segment's name, footer
 * totals and file identity), so that a reader beside it (ns2flows-query) need not open every
 * segment's footer at start-up: a summary then costs a directory listing and a stat per
 * segment, as nfdump -I costs a statistics record. A cache, never the truth: a reader takes an
 * entry only for a file the folder lists whose identity (inode, size, modification time) is
 * still the one recorded, and opens every other segment as before; a file changed, replaced or
 * removed behind both is read, or skipped, from the folder. So it is written without fsync: a
 * torn, stale or missing file only costs the reader footer reads.
 *
 * Layout, little-endian: "NS2FCAT\0", version u32 (1), entries u32, then per entry the name
 * (64 bytes, NUL-padded) and first_ms, last_ms, rows, size, flows, packets, bytes, ident (u64
 * each), then XXH3-64 of everything before it. */
#define CAT_FILE    "catalog.bin"
#define CAT_MAGIC   "NS2FCAT"
#define CAT_VERSION 1u
#define CAT_HEAD    16u
#define CAT_ENTRY   (64u + 8u * 8u)

static int state_write(eng_db *db, const char *name, const void *buf, size_t len, bool durable);
static int state_path(const eng_db *db, const char *name, char *out, size_t cap, bool tmp);

/* Writes the catalog file if the catalog changed since it was last written (or always, with
 * force). Called by the daemon, never by a read-only reader; failures are only logged. */
static void catalog_save(eng_db *db, bool force)
{
    if (db->opts.read_only || pthread_mutex_trylock(&db->cat_mu) != 0)
        return; /* another thread is writing it: it writes the latest, or the next tick does */
    pthread_mutex_lock(&db->mu);
    uint64_t gen = db->cat_gen;
    size_t n = db->nsegs, len = CAT_HEAD + n * CAT_ENTRY + 8;
    uint8_t *b = gen != db->cat_saved || force ? calloc(1, len) : NULL;
    if (b) {
        memcpy(b, CAT_MAGIC, 8);
        ns_put_le32(b + 8, CAT_VERSION);
        ns_put_le32(b + 12, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            const seg_entry *e = &db->segs[i];
            uint8_t *p = b + CAT_HEAD + i * CAT_ENTRY;
            const uint64_t v[8] = {(uint64_t)e->first_ms,
                                   (uint64_t)e->last_ms,
                                   e->rows,
                                   e->size,
                                   e->flows,
                                   e->packets,
                                   e->bytes,
                                   e->ident};
            memcpy(p, e->name, strnlen(e->name, sizeof e->name));
            for (size_t k = 0; k < 8; k++)
                ns_put_le64(p + 64 + 8 * k, v[k]);
        }
    }
    pthread_mutex_unlock(&db->mu);
    if (b) {
        char path[4300];
        struct stat st;
        /* the budget counts the file (other_bytes): its change in size is counted at once, so
         * usage stays exact between the measurements of state/ */
        uint64_t was =
            state_path(db, CAT_FILE, path, sizeof path, false) == 0 && stat(path, &st) == 0
                ? (uint64_t)st.st_size
                : 0;
        ns_put_le64(b + len - 8, XXH3_64bits(b, len - 8));
        int rc = state_write(db, CAT_FILE, b, len, false);
        /* a failure (a full disk) is tried again at the next change, not at every tick */
        db->cat_saved = gen; /* under cat_mu */
        uint32_t held = 0;
        if (rc < 0 && ns_ratelimit_ok(&db->cat_rl, ns_mono_ms(), &held)) {
            ns_log(NS_LOG_WARN,
                   "db: cannot write %s/state/%s: %s (readers open every segment instead; %u "
                   "similar warnings not logged)",
                   db->dir, CAT_FILE, ns_strerror(rc), held);
        } else if (rc == 0) {
            pthread_mutex_lock(&db->mu);
            db->other_bytes = db->other_bytes + len >= was ? db->other_bytes + len - was : 0;
            pthread_mutex_unlock(&db->mu);
        }
        free(b);
    }
    pthread_mutex_unlock(&db->cat_mu);
}

/* The catalog file's entries, sorted by name (NULL, 0 when it is missing or does not check). */
static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const seg_entry *)a)->name, ((const seg_entry *)b)->name);
}

static seg_entry *catalog_file_read(eng_db *db, size_t *n_out)
{
    uint8_t *buf;
    size_t len;
    uint32_t version, n;
    char magic[8];
    *n_out = 0;
    if (eng_db_state_read(db, CAT_FILE, &buf, &len) < 0)
        return NULL;
    ns_cur c = ns_cur_make(buf, len), tail = c;
    uint64_t sum = 0;
    bool sound = len >= CAT_HEAD + 8 && ns_cur_skip(&tail, len - 8) && ns_cur_le64(&tail, &sum) &&
                 sum == XXH3_64bits(buf, len - 8);
    seg_entry *out = NULL;
    if (!sound || !ns_cur_bytes(&c, magic, 8) || memcmp(magic, CAT_MAGIC, 8) != 0 ||
        !ns_cur_le32(&c, &version) || version != CAT_VERSION || !ns_cur_le32(&c, &n) ||
        (size_t)n != (len - CAT_HEAD - 8) / CAT_ENTRY ||
        len != CAT_HEAD + (size_t)n * CAT_ENTRY + 8 || !(out = calloc(n ? n : 1, sizeof *out))) {
        free(buf);
        return NULL;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        seg_entry *e = &out[k];
        uint64_t v[8];
        bool ok = ns_cur_bytes(&c, e->name, 64);
        for (size_t j = 0; j < 8; j++)
            ok = ok && ns_cur_le64(&c, &v[j]);
        /* an entry counts only for a file of its name the folder lists (catalog_load parses
         * that name): a name here is only ever compared, never opened */
        if (!ok || e->name[63] != 0 || !v[7])
            continue;
        e->first_ms = (int64_t)v[0];
        e->last_ms = (int64_t)v[1];
        e->rows = v[2];
        e->size = v[3];
        e->flows = v[4];
        e->packets = v[5];
        e->bytes = v[6];
        e->ident = v[7];
        k++;
    }
    free(buf);
    qsort(out, k, sizeof *out, cmp_entry_name);
    *n_out = k;
    return out;
}

/* The catalog file's entry for the segment file name in the folder open as dirfd, if that
 * file is still the one the entry describes; NULL when it is not (or gone: *gone). */
static const seg_entry *catalog_file_match(const seg_entry *cat, size_t n, int dirfd,
                                           const char *name, bool *gone)
{
    seg_entry key;
    struct stat st;
    *gone = false;
    if (!n)
        return NULL;
    snprintf(key.name, sizeof key.name, "%s", name);
    const seg_entry *e = bsearch(&key, cat, n, sizeof *cat, cmp_entry_name);
    if (!e)
        return NULL;
    if (fstatat(dirfd, name, &st, 0) < 0) {
        *gone = errno == ENOENT;
        return NULL;
    }
    return eng__stat_ident(&st) == e->ident && (uint64_t)st.st_size == e->size ? e : NULL;
}

/* The times, totals, size and identity of e from k (the catalog file's entry of its name). */
static void entry_totals_from(seg_entry *e, const seg_entry *k)
{
    e->first_ms = k->first_ms;
    e->last_ms = k->last_ms;
    e->rows = k->rows;
    e->size = k->size;
    e->flows = k->flows;
    e->packets = k->packets;
    e->bytes = k->bytes;
    e->ident = k->ident;
}

/* Fills e (its name set) from its file's footer: 0, or eng_seg_open's error. */
static int entry_from_footer(const eng_db *db, seg_entry *e)
{
    char path[4200];
    eng_seg *s;
    seg_path(db, e->name, path, sizeof path);
    int rc = eng_seg_open(path, &s);
    if (rc < 0)
        return rc;
    const eng_seg_info *in = eng_seg_get_info(s);
    e->first_ms = in->first_ms;
    e->last_ms = in->last_ms;
    e->rows = in->rows;
    e->size = in->file_size;
    e->flows = in->flows;
    e->packets = in->packets;
    e->bytes = in->bytes;
    e->ident = eng__seg_ident(s);
    eng_seg_close(s);
    return 0;
}

static int catalog_load(eng_db *db)
{
    DIR *d = opendir(db->dir);
    struct dirent *de;
    if (!d)
        return -errno;
    /* a reader beside the daemon takes what the daemon's catalog file still vouches for */
    size_t ncat = 0;
    seg_entry *cat = db->opts.read_only ? catalog_file_read(db, &ncat) : NULL;
    while ((de = readdir(d)) != NULL) {
        char path[4200];
        size_t len = strlen(de->d_name);
        seg_entry e = {0};
        if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
            if (db->opts.read_only)
                continue; /* perhaps being written right now */
            /* never published: a crash hit between write and rename */
            seg_path(db, de->d_name, path, sizeof path);
            unlink(path);
            ns_log(NS_LOG_WARN, "db: removed unpublished %s", path);
            continue;
        }
        if (!seg_name_parse(de->d_name, &e.minute, &e.span, &e.seq, &e.rollup) ||
            len >= sizeof e.name)
            continue;
        strcpy(e.name, de->d_name);
        bool gone;
        const seg_entry *known = catalog_file_match(cat, ncat, dirfd(d), e.name, &gone);
        int rc = 0;
        if (gone)
            rc = -ENOENT;
        else if (known)
            entry_totals_from(&e, known);
        else
            rc = entry_from_footer(db, &e);
        if (rc == -ENOENT)
            continue; /* deleted since the listing (a reader beside the daemon) */
        if (rc < 0) {
            db->st.segments_quarantined++;
            if (db->opts.read_only)
                ns_log(NS_LOG_WARN, "db: segment %s is damaged (%s); skipped", e.name,
                       ns_strerror(rc));
            else
                quarantine_file(db, e.name, rc);
            continue;
        }
        if (e.seq >= db->next_seq)
            db->next_seq = e.seq + 1;
        /* appended, sorted once below: inserting each in order costs n^2 on a big store */
        if (db->nsegs == db->capsegs) {
            size_t cap = db->capsegs ? db->capsegs * 2 : 64;
            seg_entry *ns = realloc(db->segs, cap * sizeof *ns);
            if (!ns) {
                closedir(d);
                free(cat);
                return NS_E_NOMEM;
            }
            db->segs = ns;
            db->capsegs = cap;
        }
        db->segs[db->nsegs++] = e;
        db->st.disk_bytes += e.size;
        tier_count_locked(db, &e, true);
    }
    closedir(d);
    free(cat);
    if (db->nsegs)
        qsort(db->segs, db->nsegs, sizeof *db->segs, cmp_seg);
    db->st.segments = db->nsegs;
    drop_superseded(db);
    return 0;
}

/* Deletes the oldest segments while the store is over budget, and those past retention. */
/* Takes segment i out of the catalog (queries stop seeing it at once) and queues its file for
 * unlinking after the mutex is released: ingest threads never wait on the filesystem. A query
 * that already opened the file keeps reading it; one that had only its name skips it. */
static bool delete_segment_locked(eng_db *db, size_t i, const char *why)
{
    if (db->ndoomed == sizeof db->doomed / sizeof db->doomed[0])
        return false; /* the next pass takes the rest */
    memcpy(db->doomed[db->ndoomed++], db->segs[i].name, sizeof db->segs[i].name);
    ns_log(NS_LOG_INFO, "db: deleting %s (%s)", db->segs[i].name, why);
    catalog_remove_locked(db, i);
    db->st.segments_deleted++;
    return true;
}

/* Unlinks what delete_segment_locked queued. Call without db->mu. */
static void unlink_doomed(eng_db *db)
{
    char names[64][64];
    size_t n;
    pthread_mutex_lock(&db->mu);
    n = db->ndoomed;
    memcpy(names, db->doomed, n * sizeof names[0]);
    db->ndoomed = 0;
    pthread_mutex_unlock(&db->mu);
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        seg_path(db, names[i], path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            ns_log(NS_LOG_ERROR, "db: cannot delete %s: %s", path, strerror(errno));
    }
}

/* Bytes of the files under dir (and, with depth, one level of subfolders), except segment
 * files and the WAL folder, which are counted as they are written. */
static uint64_t dir_bytes(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t sum = 0;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char path[4400];
        struct stat st;
        int64_t m, span;
        uint64_t q;
        if (de->d_name[0] == '.' && (de->d_name[1] == 0 || strcmp(de->d_name, "..") == 0))
            continue;
        if (depth > 0 && (seg_name_parse(de->d_name, &m, &span, &q, NULL) ||
                          strcmp(de->d_name, ENG_WAL_DIR) == 0))
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path ||
            lstat(path, &st) < 0)
            continue;
        if (S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
        else if (S_ISDIR(st.st_mode) && depth > 0)
            sum += dir_bytes(path, depth - 1);
    }
    closedir(d);
    return sum;
}

/* Measures state/, quarantine/, the log and other small files again, at most every 10 s:
 * they change rarely and the budget only needs them roughly. */
static void other_bytes_refresh(eng_db *db, bool now)
{
    int64_t t = ns_mono_ms();
    pthread_mutex_lock(&db->mu);
    bool due = now || db->other_scan_ms == 0 || t - db->other_scan_ms >= 10000;
    if (due)
        db->other_scan_ms = t;
    pthread_mutex_unlock(&db->mu);
    if (!due)
        return;
    uint64_t b = dir_bytes(db->dir, 1);
    pthread_mutex_lock(&db->mu);
    db->other_bytes = b;
    pthread_mutex_unlock(&db->mu);
}

/* Everything under SESSIONDB: segments, WAL, state, quarantine, log. */
static uint64_t used_bytes_locked(const eng_db *db)
{
    return db->st.disk_bytes + db->st.wal_bytes + db->other_bytes;
}

/* The roll-up tier's part of budget b: share percent, without overflowing b * share. */
static uint64_t rollup_cap(uint64_t b, uint32_t share)
{
    return b / 100 * share + b % 100 * share / 100;
}

/* Index of the oldest segment of a tier (the catalog is ordered oldest first), or SIZE_MAX. */
static size_t oldest_locked(const eng_db *db, bool rollup)
{
    for (size_t i = 0; i < db->nsegs; i++)
        if (db->segs[i].rollup == rollup)
            return i;
    return SIZE_MAX;
}

/* The size the tiers are held to: the budget, less a flood's reserve for what is in flight
 * (see enforce_limits_locked). */
static uint64_t budget_target_locked(const eng_db *db, bool *flood)
{
    uint64_t budget = db->opts.budget_bytes;
    *flood = db->open_rows > seal_rows_of(db) || ns_mono_ms() < db->flood_until_ms;
    uint64_t reserve = *flood ? (uint64_t)seal_rows_of(db) * 32 : 0;
    reserve = reserve < budget / 8 ? reserve : budget / 8;
    return budget - reserve;
}

/* Deletes the oldest raw segments, without roll-ups (each counted in rollup_skipped when the
 * roll-up tier is on), while the bytes used (less the roll-up tier's, with raw_only) pass limit.
 * Returns how many went. */
static size_t drop_oldest_raw_locked(eng_db *db, bool raw_only, uint64_t limit, const char *why)
{
    size_t i, n = 0;
    while (used_bytes_locked(db) - (raw_only ? db->st.rollup_bytes : 0) > limit &&
           (i = oldest_locked(db, false)) != SIZE_MAX && delete_segment_locked(db, i, why)) {
        if (db->opts.rollup_share)
            db->st.rollup_skipped++;
        n++;
    }
    return n;
}

/* After the WAL grew. Budget passes come after seals and merges, and in between the WAL grows:
 * by megabytes in a flood, by a minute of records otherwise. Over the target in a flood, or
 * over the budget by more than a segment otherwise, the oldest raw segments go here and now,
 * without roll-ups (there is no time for one); a smaller excess wakes the compactor thread,
 * whose pass rolls up as usual. Returns whether files wait to be unlinked. */
static bool wal_budget_locked(eng_db *db)
{
    if (!db->opts.budget_bytes)
        return false;
    bool flood;
    uint64_t target = budget_target_locked(db, &flood);
    uint64_t used = used_bytes_locked(db);
    if (used <= target)
        return false;
    uint64_t seg = (uint64_t)seal_rows_of(db) * 16; /* about one full segment */
    if (!flood && used - target <= seg) {
        if (!db->enforce_due) {
            db->enforce_due = true;
            pthread_cond_broadcast(&db->cond);
        }
        return false;
    }
    return drop_oldest_raw_locked(db, false, target,
                                  "over budget; the WAL grows faster than sealing") > 0;
}

/* Retention looks at every segment's flow times (a late segment may hold old flows), in both
 * tiers. The budget then takes the oldest received segments first. With roll-ups on, the raw
 * tier (its segments, the WAL and the other files) keeps to (100 - share)% of the budget and
 * the roll-up tier to share%: a raw segment over its part is not deleted here but named in
 * *rollup_out (the caller rolls it up, which replaces it); the roll-up tier's oldest are
 * deleted. Usage then passes the budget by one segment at most (the roll-up being written);
 * in a flood the tiers keep a reserve below it for what is in flight. */
static void enforce_limits_locked(eng_db *db, int64_t now_ms, seg_entry *rollup_out)
{
    rollup_out->name[0] = 0;
    if (db->opts.retention_s) {
        int64_t cutoff = now_ms - (int64_t)db->opts.retention_s * 1000;
        for (size_t i = 0; i < db->nsegs;) {
            if (db->segs[i].last_ms < cutoff && delete_segment_locked(db, i, "past retention"))
                continue;
            i++;
        }
    }
    uint64_t budget = db->opts.budget_bytes;
    if (!budget)
        return;
    /* Files are written before the ones they replace go (a sealed segment before its WAL, a
     * roll-up or merge before its inputs), so between two enforcements the folder may grow by
     * a seal and a roll-up in flight: the tiers are held below the budget by that much (twice
     * 16 bytes a row of a full buffer, at most an eighth of the budget), so the folder stays
     * inside it. Only in a flood (more than a buffer of rows waiting to be sealed, or two seals
     * in one second in the last 10 s): otherwise seals are rare and small, and the store keeps
     * to the budget exactly. */
    bool flood;
    budget = budget_target_locked(db, &flood);
    if (db->opts.rollup_share) {
        uint64_t rcap = rollup_cap(budget, db->opts.rollup_share);
        size_t i;
        while (db->st.rollup_bytes > rcap && (i = oldest_locked(db, true)) != SIZE_MAX)
            if (!delete_segment_locked(db, i, "roll-up tier over its share of the budget"))
                return;
        uint64_t used = used_bytes_locked(db);
        if (used - db->st.rollup_bytes > budget - rcap &&
            (i = oldest_locked(db, false)) != SIZE_MAX) {
            /* no roll-ups in a flood: they go one segment at a time, each as costly as a seal,
             * and each waits for the queries running to finish before its raw segment goes
             * (scan_lock): a busy dashboard would stall the sealer behind them, and the rows
             * waiting would pass unsealed_memory */
            if (db->open_rows <= behind_rows(db) && !flood) {
                *rollup_out = db->segs[i];
                return;
            }
            /* sealing has fallen behind (a roll-up costs about what a seal does), or a flood:
             * the flows coming in go first, and the oldest raw segments go without their
             * roll-ups until the raw tier fits again (one a call fell behind a flood's seals) */
            drop_oldest_raw_locked(db, true, budget - rcap,
                                   "over budget; sealing is behind, not rolled up");
            return;
        }
    }
    /* no roll-ups, or the raw tier has only the WAL and small files left: the oldest go */
    while (db->nsegs > 0 && used_bytes_locked(db) > budget)
        if (!delete_segment_locked(db, 0, "over budget"))
            break;
}

static int rollup_one(eng_db *db, const seg_entry *src);

/* Applies budget and retention, unlinking outside the mutex and rolling up outside it, until
 * nothing more is due. compact_mu keeps roll-ups and merges apart: a merge never reads a
 * segment that a roll-up replaces meanwhile (its flows would then be in both). */
static void enforce_limits(eng_db *db)
{
    if (db->opts.read_only)
        return;
    other_bytes_refresh(db, false);
    for (;;) {
        seg_entry up;
        pthread_mutex_lock(&db->compact_mu);
        pthread_mutex_lock(&db->mu);
        enforce_limits_locked(db, ns_now_ms(), &up);
        bool more = db->ndoomed == sizeof db->doomed / sizeof db->doomed[0];
        pthread_mutex_unlock(&db->mu);
        unlink_doomed(db);
        if (up.name[0]) {
            int rc = rollup_one(db, &up);
            if (rc < 0) {
                /* the budget comes first: the raw segment goes without its roll-up */
                uint32_t held = 0;
                pthread_mutex_lock(&db->mu);
                db->st.rollup_errors++;
                bool say = ns_ratelimit_ok(&db->rollup_rl, ns_mono_ms(), &held);
                for (size_t i = 0; i < db->nsegs; i++)
                    if (strcmp(db->segs[i].name, up.name) == 0) {
                        delete_segment_locked(db, i, "over budget; its roll-up failed");
                        break;
                    }
                pthread_mutex_unlock(&db->mu);
                if (say)
                    ns_log(NS_LOG_ERROR,
                           "db: cannot roll up %s: %s; deleted without its roll-up (%u similar "
                           "errors not logged)",
                           up.name, ns_strerror(rc), held);
                unlink_doomed(db);
            }
            more = true;
        }
        pthread_mutex_unlock(&db->compact_mu);
        if (!more)
            break;
    }
}

/* ------------------------------------------------------------------------------------------ */

/* A sealer thread: its own scratch, its own buffers to seal (claimed under mu), so several
 * seal different minutes (or parts of one busy minute) at once. */
typedef struct sealer {
    eng_db *db;
    pthread_t th;
    seal_mem mem;
} sealer;

static int seal_pass(eng_db *db, int64_t now_ms, bool force, seal_mem *m);

static void seal_mem_idle(seal_mem *m, int written)
{
    /* a sealer idle for a while gives its buffers back (a burst's are hundreds of MB) */
    if (written == 0 && m->cap[1] && ns_mono_ms() - m->used_ms > SEAL_MEM_IDLE_MS) {
        mem_free(m);
        eng__seg_write_release();
    }
}

static void *sealer_main(void *arg)
{
    sealer *sl = arg;
    eng_db *db = sl->db;
    ns_thread_name("seal");
    /* below the receive threads: on a busy core a burst is received first and sealed after
     * (open minutes are bounded by unsealed_bytes), instead of both losing to each other.
     * Linux nices threads one by one; failing leaves the default. */
    if (!ns_thread_nice(NS_NICE_SEALER))
        ns_log(NS_LOG_DEBUG, "db: cannot lower the sealer's priority: %s", strerror(errno));
    pthread_mutex_lock(&db->mu);
    while (!db->stop) {
        struct timespec ts = ns_deadline_in(CLOCK_REALTIME, 500);
        pthread_cond_timedwait(&db->seal_cond, &db->mu, &ts);
        if (db->stop)
            break;
        pthread_mutex_unlock(&db->mu);
        int w = seal_pass(db, ns_now_ms(), false, &sl->mem);
        seal_mem_idle(&sl->mem, w);
        catalog_save(db, false); /* sealed, merged or deleted segments since the last tick */
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    mem_free(&sl->mem);
    eng__seg_write_release();
    return NULL;
}

/* Sealer threads by default: one per CPU this process may run on (a collector pinned to one
 * core gains nothing from a second), at most 4. */
static unsigned default_sealers(void)
{
    cpu_set_t set;
    unsigned n = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    return n < 1 ? 1 : n > 4 ? 4 : n;
}

/* Adds an empty buffer for minute to the open list; its seq names its WAL file now and its
 * segment later. */
static minute_buf *open_add_locked(eng_db *db, int64_t minute, uint64_t seq)
{
    if (db->nopen == db->capopen) {
        size_t cap = db->capopen ? db->capopen * 2 : 8;
        minute_buf **n = realloc(db->open, cap * sizeof *n);
        if (!n)
            return NULL;
        db->open = n;
        db->capopen = cap;
    }
    minute_buf *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->minute = minute;
    b->seq = seq;
    b->wal_fd = -1;
    b->refs = 1;
    b->first_ms = INT64_MAX;
    b->last_ms = INT64_MIN;
    db->open[db->nopen++] = b;
    return b;
}

/* The open buffer of minute that can take n more rows; a full one (see eng_db_append) or one
 * that cannot (a segment holds at most ENG_SEG_MAX_ROWS) stays as it is and a new one for the
 * same minute is started. */
static minute_buf *open_buf_locked(eng_db *db, int64_t minute, size_t n)
{
    for (size_t i = db->nopen; i-- > 0;) {
        minute_buf *c = db->open[i];
        if (c->minute == minute && !c->sealing && !c->full && c->n + n <= ENG_SEG_MAX_ROWS)
            return c;
    }
    minute_buf *b = open_add_locked(db, minute, db->next_seq);
    if (b)
        db->next_seq++;
    return b;
}

/* Faults a fresh chunk's pages in with one call: the copy below touching them one by one took a
 * page-fault trap each (136 a chunk), 4-5% of a collector's CPU while sealing lagged behind a
 * burst and the pool was empty. Where the kernel cannot (before 5.14), the copy does it. */
static void chunk_prefault(eng_flow *c)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)c, e = a + CHUNK_BYTES;
    a = (a + pg - 1) & ~(pg - 1);
    e &= ~(pg - 1);
    if (e > a)
        (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)c;
#endif
}

/* Copies rows into b's chunks, a run per chunk. Returns how many were added (fewer than n only
 * when memory ran out). */
static size_t buf_push_locked(eng_db *db, minute_buf *b, const eng_flow *rows, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t slot = b->n % CHUNK_ROWS;
        if (slot == 0 && b->n / CHUNK_ROWS == b->nchunks) {
            if (b->nchunks == b->capchunks) {
                size_t cap = b->capchunks ? b->capchunks * 2 : 16;
                eng_flow **nc = realloc(b->chunks, cap * sizeof *nc);
                if (!nc)
                    return done;
                b->chunks = nc;
                b->capchunks = cap;
            }
            eng_flow *c = db->npool ? db->pool[--db->npool] : NULL;
            if (!c) {
                if ((c = malloc(CHUNK_BYTES)) == NULL)
                    return done;
                db->mem_chunks++;
                chunk_prefault(c);
            }
            b->chunks[b->nchunks++] = c;
        }
        size_t k = CHUNK_ROWS - slot < n - done ? CHUNK_ROWS - slot : n - done;
        memcpy(&b->chunks[b->n / CHUNK_ROWS][slot], rows + done, k * sizeof *rows);
        /* times and totals while the rows are in cache: the seal then reads only their keys */
        int64_t lo = b->first_ms, hi = b->last_ms;
        uint64_t flows = 0, packets = 0, bytes = 0;
        for (size_t i = done; i < done + k; i++) {
            lo = rows[i].first_ms < lo ? rows[i].first_ms : lo;
            hi = rows[i].last_ms > hi ? rows[i].last_ms : hi;
            flows += eng_flow_count(&rows[i]);
            packets += rows[i].packets;
            bytes += rows[i].bytes;
        }
        b->first_ms = lo;
        b->last_ms = hi;
        b->flows += flows;
        b->packets += packets;
        b->bytes += bytes;
        b->n += k;
        db->open_rows += k;
        done += k;
    }
    return n;
}

static int wal_path(const eng_db *db, int64_t minute, uint64_t seq, char *out, size_t cap)
{
    if ((size_t)snprintf(out, cap, "%s/%s/m%lld-%llu.wal", db->dir, ENG_WAL_DIR, (long long)minute,
                         (unsigned long long)seq) >= cap)
        return -ENAMETOOLONG;
    return 0;
}

/* Appends one encoded record to b's WAL file, creating the file on first use. A failed write
 * leaves the file a run of whole records (eng__wal_write cuts it back). */
static int wal_append_locked(eng_db *db, minute_buf *b, const uint8_t *rec, size_t len)
{
    int rc;
    if (b->wal_fd < 0) {
        char path[4300];
        if ((rc = wal_path(db, b->minute, b->seq, path, sizeof path)) < 0 ||
            (rc = eng__wal_create(path, b->minute, b->seq, &b->wal_fd)) < 0) {
            b->wal_fd = -1;
            return rc;
        }
        b->wal_off = ENG_WAL_HDR;
        b->wal_synced = 0;
        db->st.wal_bytes += ENG_WAL_HDR;
        db->wal_dir_dirty = true; /* the new name must survive a crash too */
    }
    if ((rc = eng__wal_write(b->wal_fd, b->wal_off, rec, len)) < 0)
        return rc;
    b->wal_off += len;
    db->st.wal_bytes += len;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The WAL's fsyncs and its replay at start-up */

typedef struct sync_item {
    minute_buf *b;
    int fd;
    uint64_t off;
} sync_item;

int eng_db_wal_sync(eng_db *db)
{
    char wdir[4200];
    int rc = 0;
    size_t n = 0;
    if (!db->wal_on)
        return 0;
    int64_t t0 = ns_now_ms();
    pthread_mutex_lock(&db->mu);
    sync_item *items = malloc((db->nopen ? db->nopen : 1) * sizeof *items);
    if (!items) {
        pthread_mutex_unlock(&db->mu);
        return NS_E_NOMEM;
    }
    bool dir = db->wal_dir_dirty;
    db->wal_dir_dirty = false;
    db->wal_pending = false;
    for (size_t i = 0; i < db->nopen; i++) {
        minute_buf *b = db->open[i];
        if (b->wal_fd >= 0 && b->wal_off > b->wal_synced) {
            items[n++] = (sync_item){b, b->wal_fd, b->wal_off};
            b->refs++; /* keeps the fd open even if the sealer retires the buffer meanwhile */
        }
    }
    pthread_mutex_unlock(&db->mu);
    /* outside the mutex: appends go on while the disk flushes */
    for (size_t i = 0; i < n; i++) {
        if (fdatasync(items[i].fd) < 0) {
            rc = -errno;
            items[i].off = 0;
        }
    }
    if (dir) {
        snprintf(wdir, sizeof wdir, "%s/%s/x", db->dir, ENG_WAL_DIR);
        int r = eng__fsync_dir_of(wdir);
        if (r < 0)
            rc = r;
    }
    uint32_t held = 0;
    bool say = false;
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < n; i++) {
        if (items[i].off > items[i].b->wal_synced)
            items[i].b->wal_synced = items[i].off;
        buf_unref_locked(db, items[i].b);
    }
    if (rc < 0) {
        db->st.wal_errors++;
        db->wal_dir_dirty |= dir;
        say = ns_ratelimit_ok(&db->wal_rl, ns_mono_ms(), &held);
    } else {
        db->st.wal_synced_through = t0; /* everything appended before t0 is on disk */
    }
    pthread_mutex_unlock(&db->mu);
    free(items);
    if (say)
        ns_log(NS_LOG_ERROR, "db: cannot fsync the WAL: %s (%u similar errors not logged)",
               ns_strerror(rc), held);
    return rc;
}

/* The database's own WAL thread: fsyncs every wal_sync_ms, or as soon as records are waiting
 * when it is 0. Receive threads never fsync. */
static void *wal_main(void *arg)
{
    eng_db *db = arg;
    ns_thread_name("wal");
    pthread_mutex_lock(&db->mu);
    while (!db->wal_stop) {
        if (db->opts.wal_sync_ms == 0) {
            while (!db->wal_stop && !db->wal_pending)
                pthread_cond_wait(&db->wal_cond, &db->mu);
        } else {
            struct timespec ts = ns_deadline_in(CLOCK_REALTIME, (int64_t)db->opts.wal_sync_ms);
            pthread_cond_timedwait(&db->wal_cond, &db->mu, &ts);
        }
        if (db->wal_stop)
            break;
        pthread_mutex_unlock(&db->mu);
        eng_db_wal_sync(db);
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

static void wal_thread_stop(eng_db *db)
{
    if (!db->wal_running)
        return;
    pthread_mutex_lock(&db->mu);
    db->wal_stop = true;
    pthread_cond_signal(&db->wal_cond);
    pthread_mutex_unlock(&db->mu);
    pthread_join(db->wal_thread, NULL);
    db->wal_running = false;
}

/* The buffer (minute, seq) was sealed: its own segment is there, or a merged segment covers
 * its minute with a larger number (the compactor merges only spans with no open buffer, and
 * numbers its output after every buffer that existed then, so that buffer was an input). */
static bool catalog_has(const eng_db *db, int64_t minute, uint64_t seq)
{
    for (size_t i = 0; i < db->nsegs; i++) {
        const seg_entry *e = &db->segs[i];
        if (e->minute == minute && e->seq == seq)
            return true;
        if (e->span > 1 && e->seq > seq && minute >= e->minute && minute < e->minute + e->span)
            return true;
    }
    return false;
}

typedef struct replay_ctx {
    eng_db *db;
    minute_buf *b;
} replay_ctx;

static int replay_rows(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    replay_ctx *c = arg;
    (void)recv_ms; /* the file is the buffer: every record in it belongs to its minute */
    return buf_push_locked(c->db, c->b, rows, n) == n ? 0 : NS_E_NOMEM;
}

/* Moves a WAL file that cannot be appended to any more aside, for inspection. */
static void wal_set_aside(eng_db *db, const char *name, const char *path)
{
    char qdir[4200], to[4500];
    snprintf(qdir, sizeof qdir, "%s/%s", db->dir, QUARANTINE_DIR);
    if (mkdir(qdir, 0755) < 0 && errno != EEXIST)
        return;
    snprintf(to, sizeof to, "%s/%s", qdir, name);
    if (rename(path, to) == 0)
        ns_log(NS_LOG_ERROR, "db: WAL file %s moved to %s", name, to);
}

/* Reads one WAL file back into an open minute buffer. Called at open, before any other thread
 * runs. */
static int wal_replay_file(eng_db *db, const char *name, int64_t minute, uint64_t seq)
{
    char path[4400];
    eng__wal_scan sc;
    snprintf(path, sizeof path, "%s/%s/%s", db->dir, ENG_WAL_DIR, name);
    if (catalog_has(db, minute, seq)) {
        /* sealed before the crash; only the unlink after the seal did not happen */
        ns_log(NS_LOG_INFO, "db: WAL %s is already sealed; deleted", name);
        if (unlink(path) < 0)
            return -errno;
        return 0;
    }
    minute_buf *b = open_add_locked(db, minute, seq);
    if (!b)
        return NS_E_NOMEM;
    replay_ctx ctx = {db, b};
    int rc = eng__wal_read(path, replay_rows, &ctx, &sc);
    if (rc == 0 && (sc.minute != minute || sc.seq != seq))
        rc = NS_E_CORRUPT; /* renamed or copied: its rows may belong elsewhere */
    if (rc == NS_E_NOMEM)
        return rc;
    if (rc < 0) {
        /* a bad header, or the disk failed mid-read: keep what was read, never append there */
        db->st.wal_errors++;
        ns_log(NS_LOG_ERROR, "db: WAL %s: %s after %llu flows", name, ns_strerror(rc),
               (unsigned long long)sc.rows);
        if (b->n == 0)
            sc.rows = 0; /* nothing in memory: a bad file header adds nothing */
        wal_set_aside(db, name, path);
    } else {
        if (sc.tail_rc != 0) {
            db->st.wal_errors++;
            ns_log(NS_LOG_WARN,
                   "db: WAL %s: %s record at offset %llu; cut there (%llu bytes after it dropped, "
                   "%llu flows kept)",
                   name, sc.tail_rc == NS_E_TRUNC ? "torn" : "corrupt",
                   (unsigned long long)sc.good_len, (unsigned long long)(sc.file_len - sc.good_len),
                   (unsigned long long)sc.rows);
        }
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || (sc.file_len != sc.good_len && ftruncate(fd, (off_t)sc.good_len) < 0)) {
            rc = -errno;
            if (fd >= 0)
                close(fd);
            return rc;
        }
        b->wal_fd = fd;
        b->wal_off = b->wal_synced = sc.good_len;
        db->st.wal_bytes += sc.good_len;
        /* a file of an older WAL version takes no records of this one: its rows are sealed
         * at once and new rows start a buffer (and file) of their own */
        b->full = sc.version != ENG_WAL_VERSION;
    }
    db->st.wal_replayed_rows += b->n;
    if (b->n == 0) { /* a header and nothing else */
        db->st.wal_bytes -= b->wal_fd >= 0 ? b->wal_off : 0;
        open_remove_locked(db, b);
        buf_unref_locked(db, b);
        unlink(path);
    }
    return 0;
}

/* Replays SESSIONDB/wal/ into open minutes: each file becomes the buffer it was, with the same
 * seq, so it is sealed under the name its WAL predicted and never twice. */
static int wal_replay(eng_db *db)
{
    char wdir[4200];
    uint64_t files = 0;
    snprintf(wdir, sizeof wdir, "%s/%s", db->dir, ENG_WAL_DIR);
    if (mkdir(wdir, 0755) < 0 && errno != EEXIST)
        return -errno;
    DIR *d = opendir(wdir);
    struct dirent *de;
    if (!d)
        return -errno;
    int rc = 0;
    pthread_mutex_lock(&db->mu);
    while (rc == 0 && (de = readdir(d)) != NULL) {
        int64_t minute;
        uint64_t seq;
        if (!eng__wal_name_parse(de->d_name, &minute, &seq))
            continue;
        if (seq >= db->next_seq)
            db->next_seq = seq + 1;
        rc = wal_replay_file(db, de->d_name, minute, seq);
        files++;
    }
    pthread_mutex_unlock(&db->mu);
    closedir(d);
    if (rc == 0 && db->st.wal_replayed_rows)
        ns_log(NS_LOG_INFO, "db: replayed %llu flows from the WAL (%llu files)",
               (unsigned long long)db->st.wal_replayed_rows, (unsigned long long)files);
    return rc;
}
static void *compactor_main(void *arg);

int eng_db_open(const char *dir, const eng_db_opts *opts, eng_db **out, char *err, size_t errcap)
{
    eng_db *db = calloc(1, sizeof *db);
    char lockpath[4200];
    int rc;
    if (!db)
        return NS_E_NOMEM;
    db->lockfd = -1;
    if (opts)
        db->opts = *opts;
    if (db->opts.rollup_share > 90)
        db->opts.rollup_share = 90; /* the raw tier keeps a part: it holds the open minutes */
    db->opts.rollup_keys &= ENG_ROLLUP_KEYS_ALLOWED;
    if (!db->opts.unsealed_bytes)
        db->opts.unsealed_bytes = ENG_UNSEALED_BYTES_DEFAULT;
    db->cap_chunks = db->opts.unsealed_bytes / CHUNK_BYTES;
    if (db->cap_chunks == 0)
        db->cap_chunks = 1; /* a row fits at least */
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->pool_mu, NULL);
    pthread_mutex_init(&db->qp.mu, NULL);
    pthread_cond_init(&db->qp.work, NULL);
    pthread_cond_init(&db->qp.done, NULL);
    db->qp.mem_idle_ms =
        db->opts.query_mem_idle_ms ? db->opts.query_mem_idle_ms : ENG_QUERY_MEM_IDLE_MS;
    pthread_mutex_init(&db->seal_mu, NULL);
    pthread_mutex_init(&db->compact_mu, NULL);
    pthread_mutex_init(&db->cat_mu, NULL);
    pthread_rwlockattr_t rwa;
    pthread_rwlockattr_init(&rwa);
    /* queries overlap all the time: prefer the compactor's short exclusive hold, or it could
     * wait forever */
    pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->scan_lock, &rwa);
    pthread_rwlockattr_destroy(&rwa);
    pthread_cond_init(&db->cond, NULL);
    pthread_cond_init(&db->seal_cond, NULL);
    pthread_cond_init(&db->wal_cond, NULL);
    pthread_cond_init(&db->room_cond, NULL);
    if (strlen(dir) >= sizeof db->dir) {
        rc = -ENAMETOOLONG;
        snprintf(err, errcap, "database path too long");
        goto fail;
    }
    strcpy(db->dir, dir);
    if (db->opts.cache_bytes &&
        (rc = eng__cache_new((size_t)db->opts.cache_bytes, &db->cache)) < 0) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    if (db->opts.read_only) {
        db->opts.no_sealer_thread = true;
        if ((rc = catalog_load(db)) < 0) {
            snprintf(err, errcap, "cannot read database folder %s: %s", dir, ns_strerror(rc));
            goto fail;
        }
        *out = db;
        return 0;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errcap, "cannot create database folder %s: %s", dir, strerror(errno));
        goto fail;
    }
    snprintf(lockpath, sizeof lockpath, "%s/%s", dir, LOCK_NAME);
    db->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (db->lockfd < 0) {
        rc = -errno;
        snprintf(err, errcap, "cannot open lock file %s: %s", lockpath, strerror(errno));
        goto fail;
    }
    if (flock(db->lockfd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "?";
        ssize_t r = pread(db->lockfd, pid, sizeof pid - 1, 0);
        if (r > 0) {
            pid[r] = 0;
            pid[strcspn(pid, "\n")] = 0;
        }
        rc = NS_E_LOCKED;
        snprintf(err, errcap,
                 "database folder %s is in use by another ns2flows (pid %s); "
                 "stop it or choose another --db",
                 dir, pid);
        goto fail;
    }
    char pidline[32];
    int pl = snprintf(pidline, sizeof pidline, "%ld\n", (long)getpid());
    if (ftruncate(db->lockfd, 0) < 0 || pwrite(db->lockfd, pidline, (size_t)pl, 0) != pl)
        ns_log(NS_LOG_WARN, "db: cannot write pid into %s", lockpath);
    if ((rc = catalog_load(db)) < 0) {
        snprintf(err, errcap, "cannot read database folder %s: %s", dir, ns_strerror(rc));
        goto fail;
    }
    /* after the catalog: a WAL whose segment is already there is not replayed */
    db->wal_on = !db->opts.no_wal;
    if (db->wal_on && (rc = wal_replay(db)) < 0) {
        snprintf(err, errcap, "cannot replay the WAL in %s/%s: %s", dir, ENG_WAL_DIR,
                 ns_strerror(rc));
        goto fail;
    }
    other_bytes_refresh(db, true);
    enforce_limits(db);
    catalog_save(db, true); /* a stale one from an older run would only cost readers time */
    if (db->wal_on) {
        if (pthread_create(&db->wal_thread, NULL, wal_main, db) != 0) {
            rc = -EAGAIN;
            snprintf(err, errcap, "cannot start the WAL thread");
            goto fail;
        }
        db->wal_running = true;
    }
    if (!db->opts.no_sealer_thread) {
        unsigned n = db->opts.seal_threads ? db->opts.seal_threads : default_sealers();
        db->sealers = calloc(n, sizeof *db->sealers);
        if (!db->sealers) {
            rc = NS_E_NOMEM;
            snprintf(err, errcap, "cannot start the sealer threads");
            goto fail;
        }
        for (unsigned i = 0; i < n; i++) {
            db->sealers[i].db = db;
            if (pthread_create(&db->sealers[i].th, NULL, sealer_main, &db->sealers[i]) != 0)
                break;
            db->nsealers++;
        }
        db->sealer_running = db->nsealers > 0;
        if (db->nsealers == 0) {
            free(db->sealers);
            db->sealers = NULL;
            rc = -EAGAIN;
            snprintf(err, errcap, "cannot start the sealer thread");
            goto fail;
        }
    }
    if (db->opts.compactor) {
        if (pthread_create(&db->compactor, NULL, compactor_main, db) != 0) {
            rc = -EAGAIN;
            snprintf(err, errcap, "cannot start the compactor thread");
            eng_db_close(db);
            return rc;
        }
        db->compactor_running = true;
    }
    *out = db;
    return 0;
fail:
    wal_thread_stop(db);
    for (size_t i = 0; i < db->nopen; i++)
        buf_unref_locked(db, db->open[i]); /* replayed rows stay in their WAL files */
    pool_free(db);
    free(db->wal_spare);
    free(db->open);
    if (db->lockfd >= 0)
        close(db->lockfd);
    free(db->segs);
    eng__cache_free(db->cache);
    qpool_stop(&db->qp);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->pool_mu);
    pthread_mutex_destroy(&db->seal_mu);
    pthread_mutex_destroy(&db->compact_mu);
    pthread_mutex_destroy(&db->cat_mu);
    pthread_rwlock_destroy(&db->scan_lock);
    pthread_cond_destroy(&db->cond);
    pthread_cond_destroy(&db->seal_cond);
    pthread_cond_destroy(&db->wal_cond);
    pthread_cond_destroy(&db->room_cond);
    free(db);
    return rc;
}

int eng_db_close(eng_db *db)
{
    if (!db)
        return 0;
    if (db->sealer_running || db->compactor_running) {
        pthread_mutex_lock(&db->mu);
        db->stop = true;
        pthread_cond_broadcast(&db->cond);
        pthread_cond_broadcast(&db->seal_cond);
        pthread_mutex_unlock(&db->mu);
        for (unsigned i = 0; i < db->nsealers; i++)
            pthread_join(db->sealers[i].th, NULL);
        if (db->compactor_running)
            pthread_join(db->compactor, NULL);
    }
    wal_thread_stop(db);
    /* everything appended is made durable before sealing starts: a crash while sealing then
     * loses nothing */
    if (db->wal_on)
        eng_db_wal_sync(db);
    int rc = db->opts.read_only ? 0 : eng_db_seal_due(db, ns_now_ms(), true);
    catalog_save(db, false);
    size_t lost = 0;
    for (size_t i = 0; i < db->nopen; i++) {
        lost += db->open[i]->n;
        buf_unref_locked(db, db->open[i]);
    }
    if (lost)
        ns_log(NS_LOG_ERROR, "db: %zu flows could not be sealed at close: %s%s", lost,
               ns_strerror(rc < 0 ? rc : NS_E_CORRUPT),
               db->wal_on ? " (what the WAL holds is replayed at the next start)" : "");
    int result = lost ? (rc < 0 ? rc : -EIO) : 0;
    pool_free(db);
    mem_free(&db->seal_mem);
    eng__seg_write_release();
    free(db->sealers);
    free(db->wal_spare);
    free(db->open);
    free(db->segs);
    qpool_stop(&db->qp); /* no query runs any more: its threads wait for tasks */
    for (size_t i = 0; i < db->nscan_pool; i++)
        bufs_free(db->scan_pool[i]);
    eng__cache_free(db->cache);
    pthread_mutex_destroy(&db->pool_mu);
    if (db->lockfd >= 0)
        close(db->lockfd); /* releases the flock */
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->seal_mu);
    pthread_mutex_destroy(&db->compact_mu);
    pthread_mutex_destroy(&db->cat_mu);
    pthread_rwlock_destroy(&db->scan_lock);
    pthread_cond_destroy(&db->cond);
    pthread_cond_destroy(&db->seal_cond);
    pthread_cond_destroy(&db->wal_cond);
    pthread_cond_destroy(&db->room_cond);
    free(db);
    return result;
}

void eng_db_set_limits(eng_db *db, uint64_t budget_bytes, uint64_t retention_s)
{
    pthread_mutex_lock(&db->mu);
    db->opts.budget_bytes = budget_bytes;
    db->opts.retention_s = retention_s;
    pthread_mutex_unlock(&db->mu);
    enforce_limits(db);
}

void eng_db_set_rollup(eng_db *db, uint32_t share, uint32_t keys)
{
    pthread_mutex_lock(&db->mu);
    db->opts.rollup_share = share > 90 ? 90 : share;
    db->opts.rollup_keys = keys & ENG_ROLLUP_KEYS_ALLOWED;
    pthread_mutex_unlock(&db->mu);
    enforce_limits(db);
}

uint32_t eng_db_rollup_keys(eng_db *db)
{
    pthread_mutex_lock(&db->mu);
    uint32_t k = db->opts.rollup_keys ? db->opts.rollup_keys : ENG_ROLLUP_KEYS_DEFAULT;
    pthread_mutex_unlock(&db->mu);
    return k;
}

const char *eng_db_dir(const eng_db *db)
{
    return db->dir;
}

void eng_db_set_tap(eng_db *db, eng_tap_fn fn, void *arg)
{
    db->tap = fn;
    db->tap_arg = arg;
}

#define APPEND_NO_ROOM 1 /* append_rows with may_wait: the rows do not fit, nothing was done */

/* One append of at most ENG_WAL_MAX_ROWS rows. Rows that do not fit in unsealed_bytes are
 * dropped and counted, or, with may_wait, left to the caller (APPEND_NO_ROOM). */
static int append_rows(eng_db *db, int64_t recv_ms, const eng_flow *rows, size_t n, bool may_wait)
{
    int rc = 0, werr = 0;
    uint8_t *rec = NULL;
    size_t reclen = 0, reccap = 0;
    bool say = false, say_over = false, say_mem = false, unlink_now = false;
    uint32_t held = 0, held_over = 0, held_mem = 0;
    size_t kept = 0; /* rows the open minute took: the tap sees them */
    /* encoded outside the mutex: receive threads wait for each other only for the write. Into
     * the database's spare record buffer when free: a fresh 545 KB malloc per burst came from
     * mmap, and its page faults were the store thread's largest cost */
    if (db->wal_on) {
        size_t cap = 0;
        reclen = eng__wal_rec_size(n);
        pthread_mutex_lock(&db->mu);
        rec = db->wal_spare;
        cap = db->wal_spare_cap;
        db->wal_spare = NULL;
        db->wal_spare_cap = 0;
        pthread_mutex_unlock(&db->mu);
        if (cap < reclen) {
            free(rec);
            cap = reclen;
            rec = malloc(cap);
        }
        if (rec)
            reclen = eng__wal_encode(rec, recv_ms, rows, n); /* at most what was asked */
        reccap = rec ? cap : 0;
    }
    pthread_mutex_lock(&db->mu);
    minute_buf *b = open_buf_locked(db, recv_ms / 60000, n);
    if (!b) {
        db->st.rows_dropped += n;
        rc = NS_E_NOMEM;
        goto out;
    }
    /* memory before the WAL: rows that will not be kept must not be replayed after a crash.
     * All or nothing, so the caller counts what it lost exactly as the database does. */
    if (room_locked(db, b) < n) {
        if (may_wait) {
            rc = APPEND_NO_ROOM;
            goto out;
        }
        db->st.rows_dropped += n;
        db->st.rows_dropped_memory += n;
        say_mem = ns_ratelimit_ok(&db->mem_rl, ns_mono_ms(), &held_mem);
        rc = NS_E_NOMEM;
        goto out;
    }
    /* the WAL first: rows join the open minute even if it fails (a full disk), since sealing
     * may still succeed later; they are then only as safe as memory */
    /* the WAL may hold at most half the budget: under a flood that sealing cannot keep up
     * with, the rows past it are kept in memory only (counted), and the budget holds */
    bool over = db->wal_on && db->opts.budget_bytes &&
                db->st.wal_bytes + reclen + ENG_WAL_HDR > db->opts.budget_bytes / 2;
    if (over) {
        db->st.wal_over_budget += n;
        say_over = ns_ratelimit_ok(&db->wal_budget_rl, ns_mono_ms(), &held_over);
    } else if (db->wal_on) {
        werr = rec ? wal_append_locked(db, b, rec, reclen) : NS_E_NOMEM;
        if (werr < 0) {
            db->st.wal_errors++;
            say = ns_ratelimit_ok(&db->wal_rl, ns_mono_ms(), &held);
        } else {
            if (db->opts.wal_sync_ms == 0) {
                db->wal_pending = true;
                pthread_cond_signal(&db->wal_cond);
            }
            unlink_now = wal_budget_locked(db);
        }
    }
    size_t added = buf_push_locked(db, b, rows, n);
    /* a buffer that reached seal_rows takes no more rows and is sealed at once, not at the
     * sealer's next tick: segments (and a sealer's buffers) stay near seal_rows at any rate */
    if (b->n >= seal_rows_of(db)) {
        b->full = true;
        pthread_cond_broadcast(&db->seal_cond); /* any idle sealer */
    }
    kept = added;
    db->st.rows_stored += added;
    if (added < n) {
        db->st.rows_dropped += n - added;
        rc = NS_E_NOMEM;
    }
out:
    if (rec && !db->wal_spare) { /* kept for the next append */
        db->wal_spare = rec;
        db->wal_spare_cap = reccap;
        rec = NULL;
    }
    pthread_mutex_unlock(&db->mu);
    free(rec);
    if (unlink_now)
        unlink_doomed(db);
    if (say)
        ns_log(NS_LOG_ERROR,
               "db: cannot write the WAL for minute %lld (%zu flows): %s; the flows are kept in "
               "memory until sealed (%u similar errors not logged)",
               (long long)(recv_ms / 60000), n, ns_strerror(werr), held);
    if (say_over)
        ns_log(NS_LOG_WARN,
               "db: the WAL holds half the byte budget (sealing is behind the arrival rate); %zu "
               "flows of minute %lld are kept in memory only until sealed (%u similar warnings "
               "not logged)",
               n, (long long)(recv_ms / 60000), held_over);
    if (say_mem)
        ns_log(NS_LOG_ERROR,
               "db: flows waiting to be sealed fill unsealed_memory (%llu MB; sealing is behind "
               "the arrival rate): %zu flows of minute %lld dropped (%u similar errors not "
               "logged)",
               (unsigned long long)(db->opts.unsealed_bytes >> 20), n, (long long)(recv_ms / 60000),
               held_mem);
    if (kept && db->tap)
        db->tap(db->tap_arg, recv_ms, rows, kept);
    return rc;
}

int eng_db_append(eng_db *db, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    int rc = 0;
    if (db->opts.read_only)
        return n ? -EROFS : 0;
    while (n > 0) { /* one WAL record holds at most ENG_WAL_MAX_ROWS */
        size_t k = n < ENG_WAL_MAX_ROWS ? n : ENG_WAL_MAX_ROWS;
        int r = append_rows(db, recv_ms, rows, k, false);
        if (r < 0)
            rc = r;
        rows += k;
        n -= k;
    }
    return rc;
}

static int seal_one(eng_db *db, minute_buf *b, seal_mem *m);
static void seal_failed(eng_db *db, minute_buf *b, int rc);

/* Seals one buffer on the calling thread (under seal_mu, with its scratch): a full one first
 * (oldest minute first), else, unless full_only, the oldest minute's. When every buffer with
 * rows is being sealed by a sealer thread, or sealed buffers are still referenced, waits a
 * little for their memory. Returns 1 when something was sealed or waited for, 0 when there is
 * nothing to seal, or the failed seal's code. */
static int seal_some(eng_db *db, bool full_only)
{
    int rc = 0;
    pthread_mutex_lock(&db->seal_mu);
    pthread_mutex_lock(&db->mu);
    minute_buf *b = NULL;
    bool claimed = false;
    uint64_t listed = 0; /* chunks of the open list's buffers */
    for (size_t i = 0; i < db->nopen; i++) {
        minute_buf *c = db->open[i];
        bool cf = c->full || c->sealing; /* sealing and not claimed: a failed try, retried */
        listed += c->nchunks;
        claimed |= c->claimed && c->n > 0;
        if (c->claimed || c->n == 0 || (full_only && !cf))
            continue;
        bool bf = b && (b->full || b->sealing);
        if (!b || (cf && !bf) || (cf == bf && c->minute < b->minute))
            b = c;
    }
    if (b) {
        b->sealing = b->claimed = true;
    } else if (!full_only && (claimed || db->mem_chunks - db->npool > listed)) {
        /* a sealer thread is at work, or sealed buffers are still read (a query, the WAL
         * thread's fsync): their chunks come free soon */
        struct timespec ts = ns_deadline_in(CLOCK_REALTIME, 10);
        pthread_cond_timedwait(&db->room_cond, &db->mu, &ts);
        rc = 1;
    }
    pthread_mutex_unlock(&db->mu);
    if (b) {
        rc = seal_one(db, b, &db->seal_mem); /* on success b is gone */
        if (rc < 0)
            seal_failed(db, b, rc);
        else
            rc = 1;
    }
    pthread_mutex_unlock(&db->seal_mu);
    return rc;
}

int eng_db_append_wait(eng_db *db, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    int rc = 0;
    if (db->opts.read_only)
        return n ? -EROFS : 0;
    /* pieces of at most a quarter of the cap, so each can fit once the rest is sealed */
    size_t piece = (size_t)(db->cap_chunks * CHUNK_ROWS / 4);
    piece = piece < CHUNK_ROWS ? CHUNK_ROWS : piece > ENG_WAL_MAX_ROWS ? ENG_WAL_MAX_ROWS : piece;
    while (n > 0) {
        size_t k = n < piece ? n : piece;
        int r = append_rows(db, recv_ms, rows, k, true);
        if (r == APPEND_NO_ROOM) {
            int s = seal_some(db, false);
            if (s > 0)
                continue; /* room made (or a sealer thread's seal waited for): again */
            /* nothing left to seal: a sealer thread may have just freed room; if not (a full
             * disk, a query holding sealed buffers), dropped and counted as appends are */
            if (s < 0 || (r = append_rows(db, recv_ms, rows, k, true)) == APPEND_NO_ROOM)
                r = append_rows(db, recv_ms, rows, k, false);
        }
        if (r < 0)
            rc = r;
        rows += k;
        n -= k;
    }
    /* without sealer threads the caller is the sealer: a full buffer is sealed now, as the
     * threads would, so memory stays near seal_rows whatever the capture's rate */
    if (!db->sealer_running)
        while (seal_some(db, true) > 0) {
        }
    return rc;
}

static void wal_unlink(eng_db *db, int64_t minute, uint64_t seq)
{
    char path[4300];
    if (wal_path(db, minute, seq, path, sizeof path) == 0 && unlink(path) < 0 && errno != ENOENT)
        ns_log(NS_LOG_ERROR, "db: cannot delete %s: %s", path, strerror(errno));
}

static int cmp_flow_order(const void *a, const void *b)
{
    const eng_flow *x = a, *y = b;
    int c = memcmp(x->src.b, y->src.b, 16);
    if (c)
        return c;
    return x->first_ms < y->first_ms ? -1 : x->first_ms > y->first_ms;
}

/* Rows in (source address, first_ms) order, the order the segment's index and compression want:
 * a radix sort computing a permutation, so the 136-byte rows move once (in the caller's
 * gather), never per digit. Row i is chunks[i >> shift][i & mask]: a minute's chunk list, or one
 * array (shift 31: rows are fewer than 2^31). When the varying bits of the three key words
 * (source address halves, first_ms) fit in 64 (every IPv4 minute: the v4-mapped prefix is
 * constant and a minute's start times span far less than 2^32 ms) the words are packed, less
 * their minimum, into one, scattered once by their top bits into cache-sized buckets, and each
 * bucket sorted by the rest (sort_packed); otherwise the three words are sorted LSD with 11-bit
 * digits (sort_wide). Digits every key shares are skipped. Stable. Returns false when memory is
 * short (perm untouched). */
typedef struct pkey {
    uint64_t k;
    uint32_t idx;
} pkey;

typedef struct wkey {
    uint64_t k[3]; /* source address high and low halves (big-endian), first_ms (order-kept) */
    uint32_t idx;
} wkey;

/* What one read of a buffer's rows gives: every row's key words and their ranges, so the rows
 * are read once before the writer's gather (a pass for the ranges, one for the keys and one for
 * the totals cost a seal a tenth of its time; the totals are now summed as rows are appended). */
typedef struct row_pass {
    uint64_t lo[3], hi[3];
} row_pass;

static void read_keys(eng_flow *const *chunks, unsigned shift, size_t n, wkey *w, row_pass *rp)
{
    size_t per = (size_t)1 << shift;
    uint64_t lo0 = UINT64_MAX, lo1 = UINT64_MAX, lo2 = UINT64_MAX, hi0 = 0, hi1 = 0, hi2 = 0;
    for (size_t c = 0, i = 0; i < n; c++) {
        const eng_flow *r = chunks[c];
        size_t m = n - i < per ? n - i : per;
        for (size_t j = 0; j < m; j++, i++) {
            uint64_t k0 = ns_get_be64(r[j].src.b), k1 = ns_get_be64(r[j].src.b + 8);
            uint64_t k2 = (uint64_t)r[j].first_ms ^ (1ull << 63); /* signed order as unsigned */
            w[i] = (wkey){{k0, k1, k2}, (uint32_t)i};
            lo0 = k0 < lo0 ? k0 : lo0;
            hi0 = k0 > hi0 ? k0 : hi0;
            lo1 = k1 < lo1 ? k1 : lo1;
            hi1 = k1 > hi1 ? k1 : hi1;
            lo2 = k2 < lo2 ? k2 : lo2;
            hi2 = k2 > hi2 ? k2 : hi2;
        }
    }
    *rp = (row_pass){{lo0, lo1, lo2}, {hi0, hi1, hi2}};
}

static unsigned bits_of(uint64_t v)
{
    return v ? 64u - (unsigned)__builtin_clzll(v) : 0u;
}

/* LSD radix digits of 11 bits: a 64-bit word in 6 passes at most (8 with bytes), and the
 * counts (6 x 2048 x 4 bytes) still fit a core's L1/L2 */
#define RADIX_BITS 11u
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_DIGS 6u
typedef uint32_t radix_counts[RADIX_DIGS][RADIX_SIZE]; /* n < 2^32: rows are indexed by uint32 */

/* Turns the counts of the first ndig digits into start offsets and lists the digits that vary
 * (a digit every key shares needs no pass). */
static unsigned radix_offsets(radix_counts cnt, unsigned ndig, size_t n, unsigned vary[RADIX_DIGS])
{
    unsigned nvary = 0;
    for (unsigned d = 0; d < ndig; d++) {
        uint32_t pos = 0;
        bool all = false;
        for (unsigned x = 0; x < RADIX_SIZE; x++) {
            uint32_t c = cnt[d][x];
            all |= c == n;
            cnt[d][x] = pos;
            pos += c;
        }
        if (!all)
            vary[nvary++] = d;
    }
    return nvary;
}

#define RADIX_DIGIT(v, d) ((size_t)((v) >> (RADIX_BITS * (d))) & (RADIX_SIZE - 1))

/* LSD passes over the varying digits of field K of items T between a and tmp; the result
 * ends in *a (swapped with tmp as needed). */
#define RADIX_PASSES(T, K)                                                                         \
    for (unsigned p_ = 0; p_ < nvary; p_++) {                                                      \
        unsigned d_ = vary[p_];                                                                    \
        uint32_t *c_ = cnt[d_];                                                                    \
        for (size_t i = 0; i < n; i++)                                                             \
            tmp[c_[RADIX_DIGIT(a[i] K, d_)]++] = a[i];                                             \
        T *t_ = a;                                                                                 \
        a = tmp;                                                                                   \
        tmp = t_;                                                                                  \
    }

/* Keys per top-digit bucket the packed sort aims at: a bucket (16 bytes a key) then sorts in
 * a core's L1/L2, where a pass over the whole array missed the cache on every scatter */
#define MSD_BUCKET_KEYS 1024u
#define MSD_MAX_BITS    12u

/* Sorts a[0..n) by the low bits of their keys (the higher ones are the same in the bucket),
 * stably, with tmp[0..n) as scratch: insertion for a few keys, else LSD passes of byte digits.
 * Returns where the result is, a or tmp. */
static pkey *sort_bucket(pkey *a, pkey *tmp, size_t n, unsigned bits)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            pkey x = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1].k > x.k; j--)
                a[j] = a[j - 1];
            a[j] = x;
        }
        return a;
    }
    uint32_t cnt[8][256];
    unsigned ndig = (bits + 7) / 8;
    memset(cnt, 0, ndig * sizeof cnt[0]);
    for (size_t i = 0; i < n; i++)
        for (unsigned d = 0; d < ndig; d++)
            cnt[d][(a[i].k >> (8 * d)) & 0xff]++;
    for (unsigned d = 0; d < ndig; d++) {
        uint32_t pos = 0;
        bool all = false;
        for (unsigned x = 0; x < 256; x++) {
            uint32_t c = cnt[d][x];
            all |= c == n;
            cnt[d][x] = pos;
            pos += c;
        }
        if (all)
            continue;
        for (size_t i = 0; i < n; i++)
            tmp[cnt[d][(a[i].k >> (8 * d)) & 0xff]++] = a[i];
        pkey *t = a;
        a = tmp;
        tmp = t;
    }
    return a;
}

/* The key words less their minimum, packed into one word (they fit in 64 bits), sorted: one
 * pass scatters them by their top bits into buckets of about MSD_BUCKET_KEYS, then each bucket
 * is sorted by the rest while it is in cache. w's memory becomes the second buffer once the
 * packed keys are built. */
static bool sort_packed(wkey *w, size_t n, const row_pass *rp, unsigned b1, unsigned b2,
                        uint32_t *perm, seal_mem *m)
{
    uint32_t start[(1u << MSD_MAX_BITS) + 1];
    unsigned total = bits_of(rp->hi[0] - rp->lo[0]) + b1 + b2;
    unsigned mb = bits_of(n / MSD_BUCKET_KEYS);
    mb = mb > MSD_MAX_BITS ? MSD_MAX_BITS : mb > total ? total : mb;
    unsigned shift = total - mb; /* 64 only with mb 0: then every key is in bucket 0 */
    pkey *a = mem_at(m, 3, n * sizeof *a), *tmp = (pkey *)(void *)w;
    if (!a)
        return false;
    memset(start, 0, sizeof start);
    /* shifts by 64 are undefined: a field of 0 bits contributes nothing */
    unsigned s0 = b1 + b2 < 64 ? b1 + b2 : 0, s1 = b2 < 64 ? b2 : 0;
    uint64_t m0 = b1 + b2 < 64 ? UINT64_MAX : 0, m1 = b2 < 64 ? UINT64_MAX : 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ((w[i].k[0] - rp->lo[0]) & m0) << s0 | ((w[i].k[1] - rp->lo[1]) & m1) << s1 |
                     (w[i].k[2] - rp->lo[2]);
        a[i] = (pkey){v, w[i].idx};
        start[(mb ? v >> shift : 0) + 1]++;
    }
    size_t nb = (size_t)1 << mb;
    for (size_t b = 0; b < nb; b++)
        start[b + 1] += start[b];
    if (mb == 0) { /* one bucket: the whole array is small */
        memcpy(tmp, a, n * sizeof *a);
    } else {
        uint32_t next[1u << MSD_MAX_BITS];
        memcpy(next, start, nb * sizeof *next);
        for (size_t i = 0; i < n; i++)
            tmp[next[a[i].k >> shift]++] = a[i];
    }
    for (size_t b = 0; b < nb; b++) {
        size_t s = start[b], e = start[b + 1];
        const pkey *r = sort_bucket(tmp + s, a + s, e - s, shift);
        for (size_t i = 0; i < e - s; i++)
            perm[s + i] = r[i].idx;
    }
    return true;
}

static bool sort_wide(wkey *w, size_t n, uint32_t *perm, seal_mem *m)
{
    radix_counts cnt;
    unsigned vary[RADIX_DIGS], nvary;
    wkey *a = w, *tmp = mem_at(m, 3, n * sizeof *tmp);
    if (!tmp)
        return false;
    for (int k = 2; k >= 0; k--) {
        memset(cnt, 0, sizeof cnt);
        for (size_t i = 0; i < n; i++)
            for (unsigned d = 0; d < RADIX_DIGS; d++)
                cnt[d][RADIX_DIGIT(a[i].k[k], d)]++;
        nvary = radix_offsets(cnt, RADIX_DIGS, n, vary);
        RADIX_PASSES(wkey, .k[k])
    }
    for (size_t i = 0; i < n; i++)
        perm[i] = a[i].idx;
    return true;
}

/* The common case first: when every source shares its high 96 bits (every IPv4 minute: the
 * v4-mapped prefix), the key is the low 32 bits of the source and first_ms, less their
 * minimums: up to 49 bits in a minute of traffic. An LSD radix sort of its 11-bit digits moves
 * one word a row: the first pass reads the key from two narrow arrays and writes, with the row's
 * index below them, only the digits still to sort (a pass leaves the order of the digits below
 * it for the next to keep: the sort is stable). Words are distinct by their index, so the order
 * is the one the general sort gives. Half the bytes a row of the general sort's keys.
 * Returns 1 when sorted, 0 when the keys do not fit (perm untouched; the caller sorts the
 * general way), -1 when memory is short. */
static int sort_narrow(eng_flow *const *chunks, unsigned shift, size_t n, uint32_t *perm,
                       seal_mem *m)
{
    size_t per = (size_t)1 << shift;
    uint64_t *t = mem_at(m, 2, n * (sizeof *t + sizeof(uint32_t)));
    uint64_t *a = mem_at(m, 3, 2 * n * sizeof *a);
    if (!t || !a)
        return -1;
    uint32_t *sl = (uint32_t *)(void *)(t + n);
    uint64_t k0 = ns_get_be64(chunks[0][0].src.b), k1h = ns_get_be64(chunks[0][0].src.b + 8) >> 32;
    uint64_t tlo = UINT64_MAX, thi = 0;
    uint32_t slo = UINT32_MAX, shi = 0;
    bool same = true;
    for (size_t c = 0, i = 0; i < n; c++) {
        const eng_flow *r = chunks[c];
        size_t cnt = n - i < per ? n - i : per;
        for (size_t j = 0; j < cnt; j++, i++) {
            uint64_t h0 = ns_get_be64(r[j].src.b), h1 = ns_get_be64(r[j].src.b + 8);
            uint64_t tk = (uint64_t)r[j].first_ms ^ (1ull << 63); /* signed order as unsigned */
            same &= h0 == k0 && h1 >> 32 == k1h;
            sl[i] = (uint32_t)h1;
            t[i] = tk;
            slo = sl[i] < slo ? sl[i] : slo;
            shi = sl[i] > shi ? sl[i] : shi;
            tlo = tk < tlo ? tk : tlo;
            thi = tk > thi ? tk : thi;
        }
        if (!same)
            return 0;
    }
    unsigned bt = bits_of(thi - tlo), nk = bits_of(shi - slo) + bt, bi = bits_of(n - 1);
    unsigned first = nk < RADIX_BITS ? nk : RADIX_BITS; /* the first pass's digit */
    if (nk > 64 || nk - first + bi > 64)
        return 0; /* the key, or its word after the first pass, is too wide */
    unsigned ndig = (nk + RADIX_BITS - 1) / RADIX_BITS, vary[RADIX_DIGS];
    radix_counts cnt;
#define SEAL_KEY(i) ((uint64_t)(sl[i] - slo) << bt | (t[i] - tlo))
    memset(cnt, 0, sizeof cnt);
    for (size_t i = 0; i < n; i++) { /* every digit: a fixed loop, unrolled; unused ones stay 0 */
        uint64_t key = SEAL_KEY(i);
        for (unsigned d = 0; d < RADIX_DIGS; d++)
            cnt[d][RADIX_DIGIT(key, d)]++;
    }
    unsigned nvary = radix_offsets(cnt, ndig, n, vary);
    uint64_t *tmp = a + n;
    if (ndig == 0) { /* one key: the rows' order */
        for (size_t i = 0; i < n; i++)
            perm[i] = (uint32_t)i;
        return 1;
    }
    /* first pass by digit 0 (if it varies, else in row order), from the narrow arrays */
    for (size_t i = 0; i < n; i++) {
        uint64_t key = SEAL_KEY(i);
        uint64_t w = (key >> first) << bi | i;
        if (nvary && vary[0] == 0)
            a[cnt[0][key & (RADIX_SIZE - 1)]++] = w;
        else
            a[i] = w;
    }
#undef SEAL_KEY
    for (unsigned p = 0; p < nvary; p++) {
        unsigned d = vary[p];
        if (d == 0)
            continue;
        unsigned sh = bi + RADIX_BITS * (d - 1);
        uint32_t *c = cnt[d];
        for (size_t i = 0; i < n; i++)
            tmp[c[(size_t)(a[i] >> sh) & (RADIX_SIZE - 1)]++] = a[i];
        uint64_t *x = a;
        a = tmp;
        tmp = x;
    }
    uint64_t imask = ((uint64_t)1 << bi) - 1;
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)(a[i] & imask);
    return 1;
}

/* Sorts as described above (general: without sort_narrow, the reference its test compares;
 * *narrow, when not NULL, says whether sort_narrow did it). */
static bool sort_perm(eng_flow *const *chunks, unsigned shift, size_t n, uint32_t *perm,
                      seal_mem *m, bool general, bool *narrow)
{
    row_pass rp;
    int r = n >= 2 && !general ? sort_narrow(chunks, shift, n, perm, m) : 0;
    if (narrow)
        *narrow = r > 0;
    if (r != 0)
        return r > 0;
    wkey *w = mem_at(m, 2, (n ? n : 1) * sizeof *w);
    if (!w)
        return false;
    read_keys(chunks, shift, n, w, &rp);
    if (n < 2) {
        if (n == 1)
            perm[0] = 0;
        return true;
    }
    unsigned b1 = bits_of(rp.hi[1] - rp.lo[1]), b2 = bits_of(rp.hi[2] - rp.lo[2]);
    unsigned total = bits_of(rp.hi[0] - rp.lo[0]) + b1 + b2;
    return total <= 64 ? sort_packed(w, n, &rp, b1, b2, perm, m) : sort_wide(w, n, perm, m);
}

int eng__seal_sort(eng_flow *const *chunks, unsigned shift, size_t n, uint32_t *perm, bool general)
{
    seal_mem m = {0};
    bool narrow;
    bool ok = sort_perm(chunks, shift, n, perm, &m, general, &narrow);
    mem_free(&m);
    return !ok ? NS_E_NOMEM : narrow ? 1 : 0;
}

/* rows[0..n) sorted in place (compaction's merged rows); qsort when memory is short */
static void sort_flows(eng_flow *rows, size_t n)
{
    seal_mem m = {0};
    uint32_t *perm = mem_at(&m, 1, (n ? n : 1) * sizeof *perm);
    eng_flow *tmp = mem_at(&m, 0, (n ? n : 1) * sizeof *tmp);
    eng_flow *one[1] = {rows};
    if (!perm || !tmp || !sort_perm(one, 31, n, perm, &m, false, NULL)) {
        mem_free(&m);
        qsort(rows, n, sizeof *rows, cmp_flow_order);
        return;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] = rows[perm[i]];
    memcpy(rows, tmp, n * sizeof *rows);
    mem_free(&m);
}

/* Writes one retired minute buffer as a segment and swaps it into the catalog. */
/* Monotonic nanoseconds: seal and merge times are kept in the statistics (the benchmark's
 * seal and compaction rows/s); a minute of a small exporter seals in well under 1 ms. */
static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int seal_one(eng_db *db, minute_buf *b, seal_mem *m)
{
    uint64_t t0 = mono_ns();
    seg_entry e = {0};
    char path[4200];
    int rc;
    m->used_ms = ns_mono_ms();
    e.seq = b->seq; /* the name its WAL file has: replay skips a WAL whose segment exists */
    e.minute = b->minute;
    e.span = 1;
    snprintf(e.name, sizeof e.name, "m%lld-%llu.seg", (long long)b->minute,
             (unsigned long long)e.seq);
    seg_path(db, e.name, path, sizeof path);
    /* the buffer is sealing: no appends, so reading without the mutex is safe. A permutation
     * sorted on compact keys; the writer gathers the rows through it a block at a time. */
    uint32_t *perm = mem_at(m, 1, (b->n ? b->n : 1) * sizeof *perm);
    if (perm && sort_perm(b->chunks, CHUNK_SHIFT, b->n, perm, m, false, NULL)) {
        rc = eng__seg_write_perm(path, b->chunks, CHUNK_SHIFT, perm, b->n);
    } else {
        eng_flow *rows = mem_at(m, 0, (b->n ? b->n : 1) * sizeof *rows);
        if (!rows)
            return NS_E_NOMEM;
        for (size_t i = 0; i < b->n; i++)
            rows[i] = b->chunks[i / CHUNK_ROWS][i % CHUNK_ROWS];
        sort_flows(rows, b->n);
        rc = eng_seg_write(path, rows, b->n);
    }
    if (rc < 0)
        return rc;
    struct stat st;
    e.size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    e.ident = e.size ? eng__stat_ident(&st) : 0;
    e.first_ms = b->first_ms;
    e.last_ms = b->last_ms;
    e.rows = b->n;
    e.flows = b->flows;
    e.packets = b->packets;
    e.bytes = b->bytes;

    pthread_mutex_lock(&db->mu);
    rc = catalog_add_locked(db, &e);
    bool had_wal = false;
    if (rc == 0) {
        open_remove_locked(db, b);
        db->open_rows -= b->n;
        had_wal = b->wal_fd >= 0;
        db->st.wal_bytes -= had_wal ? b->wal_off : 0;
        db->st.rows_sealed += e.rows;
        int64_t now = ns_mono_ms();
        if (now - db->seal_sec_ms >= 1000) {
            db->seal_sec_ms = now;
            db->seal_sec_n = 0;
        }
        /* only big buffers (half of seal_rows or more) count: many small minutes sealed at
         * once (a backlog, an offline capture of old flows) are no flood */
        if (2 * b->n >= seal_rows_of(db) && ++db->seal_sec_n >= 2)
            db->flood_until_ms = now + 10000;
        db->st.seal_ns += mono_ns() - t0;
        buf_unref_locked(db, b);
    }
    pthread_mutex_unlock(&db->mu);
    /* the segment is durable (renamed, folder fsynced): its WAL may go. A crash before this
     * unlink leaves a WAL whose segment exists, which the next start deletes unread. */
    if (had_wal)
        wal_unlink(db, e.minute, e.seq);
    if (rc == 0)
        enforce_limits(db);
    return rc;
}

/* A seal of b failed: it stays in memory, sealing (no appends) and unclaimed, so the next pass
 * retries it; counted and logged. */
static void seal_failed(eng_db *db, minute_buf *b, int rc)
{
    uint32_t held = 0;
    pthread_mutex_lock(&db->mu);
    b->claimed = false;
    db->st.seal_errors++;
    /* a full disk fails every retry (twice a second): log the first few, then one line a
     * minute with the count, so the log does not fill what is left */
    bool say = ns_ratelimit_ok(&db->seal_rl, ns_mono_ms(), &held);
    int64_t minute = b->minute;
    size_t n = b->n;
    pthread_mutex_unlock(&db->mu);
    if (say)
        ns_log(NS_LOG_ERROR,
               "db: cannot seal minute %lld (%zu flows): %s; kept in memory, will retry (%u "
               "similar errors not logged)",
               (long long)minute, n, ns_strerror(rc), held);
}

/* Seals every buffer due at now_ms (all with force) that no other sealer has claimed, oldest
 * minute first, with m as scratch. Returns the segments written, or the error of a pass that
 * wrote none. */
static int seal_pass(eng_db *db, int64_t now_ms, bool force, seal_mem *m)
{
    int written = 0, rc = 0;
    int64_t delay = (int64_t)db->opts.seal_delay_s * 1000;
    size_t seal_rows = seal_rows_of(db);
    for (;;) {
        minute_buf *b = NULL;
        pthread_mutex_lock(&db->mu);
        for (size_t i = 0; i < db->nopen; i++) {
            minute_buf *c = db->open[i];
            /* a buffer past seal_rows is sealed before its minute ends (the next rows of the
             * minute start a fresh buffer): a burst cannot grow one WAL file and one buffer
             * without bound */
            if (force || (c->minute + 1) * 60000 + delay <= now_ms || c->n >= seal_rows ||
                c->full) {
                if (c->claimed)
                    continue; /* another sealer's */
                if (!c->sealing && (b == NULL || c->minute < b->minute))
                    b = c;
                else if (c->sealing && !b)
                    b = c; /* a previous attempt failed: retry */
            }
        }
        if (b)
            b->sealing = b->claimed = true;
        pthread_mutex_unlock(&db->mu);
        if (!b)
            break;
        if (b->n == 0) {
            pthread_mutex_lock(&db->mu);
            bool had_wal = b->wal_fd >= 0;
            int64_t mn = b->minute;
            uint64_t q = b->seq;
            db->st.wal_bytes -= had_wal ? b->wal_off : 0;
            open_remove_locked(db, b);
            buf_unref_locked(db, b);
            pthread_mutex_unlock(&db->mu);
            if (had_wal)
                wal_unlink(db, mn, q);
            continue;
        }
        rc = seal_one(db, b, m); /* on success b is gone */
        if (rc < 0) {
            seal_failed(db, b, rc);
            break; /* kept in memory; retried on the next pass */
        }
        written++;
    }
    return rc < 0 && written == 0 ? rc : written;
}

int eng_db_seal_due(eng_db *db, int64_t now_ms, bool force)
{
    pthread_mutex_lock(&db->seal_mu);
    int w = seal_pass(db, now_ms, force, &db->seal_mem);
    seal_mem_idle(&db->seal_mem, w);
    pthread_mutex_unlock(&db->seal_mu);
    return w;
}

void eng_db_get_stats(eng_db *db, eng_db_stats *st)
{
    pthread_mutex_lock(&db->mu);
    *st = db->st;
    st->disk_bytes = used_bytes_locked(db);
    st->open_rows = db->open_rows;
    st->unsealed_bytes = db->mem_chunks * CHUNK_BYTES;
    st->unsealed_bytes_max = db->opts.unsealed_bytes;
    st->budget_bytes = db->opts.budget_bytes;
    eng__cache_stats(db->cache, &st->cache_bytes, &st->cache_hits, &st->cache_misses);
    st->retention_s = db->opts.retention_s;
    st->rollup_share = db->opts.rollup_share;
    st->oldest_ms = 0;
    st->newest_ms = 0;
    bool any = false;
    for (size_t i = 0; i < db->nsegs; i++) {
        if (db->segs[i].rows == 0)
            continue;
        if (!any || db->segs[i].first_ms < st->oldest_ms)
            st->oldest_ms = db->segs[i].first_ms;
        if (!any || db->segs[i].last_ms > st->newest_ms)
            st->newest_ms = db->segs[i].last_ms;
        any = true;
    }
    for (size_t i = 0; i < db->nopen; i++) {
        if (db->open[i]->n == 0)
            continue;
        if (!any || db->open[i]->first_ms < st->oldest_ms)
            st->oldest_ms = db->open[i]->first_ms;
        if (!any || db->open[i]->last_ms > st->newest_ms)
            st->newest_ms = db->open[i]->last_ms;
        any = true;
    }
    pthread_mutex_unlock(&db->mu);
}

/* ------------------------------------------------------------------------------------------ */
/* Scans */

typedef struct snap_buf {
    minute_buf *b;
    eng_flow **chunks; /* copy: the buffer's array may be reallocated by appends */
    size_t n;
} snap_buf;

/* Buffers reused across the segments of one scan: fresh multi-megabyte allocations per
 * segment cost more in page faults than the decoding itself. Columns are decoded whole into
 * the column set, then handed to the callback as rows a block at a time, so the rows a
 * callback reads stay in cache. */
#define SCAN_BLOCK      1024
#define SCAN_CACHE_SEGS 32
struct scan_bufs {
    bool cache_put; /* this scan offers what it decodes to the cache (see SCAN_CACHE_SEGS) */
    eng_colset cs;
    uint64_t *sel; /* rows the address index names, one bit a row */
    uint32_t *idx; /* the rows to hand over */
    size_t cap;
    eng_flow block[SCAN_BLOCK];
};

static int bufs_reserve(scan_bufs *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    free(b->idx);
    free(b->sel);
    b->idx = malloc(n * sizeof *b->idx);
    b->sel = malloc((n + 63) / 64 * sizeof *b->sel);
    b->cap = b->idx && b->sel ? n : 0;
    return b->cap ? 0 : NS_E_NOMEM;
}

static void bufs_free(scan_bufs *b)
{
    eng__colset_free(&b->cs);
    free(b->idx);
    free(b->sel);
    free(b);
}

/* A worker's buffers: one from the pool, or new. */
static scan_bufs *bufs_get(eng_db *db)
{
    scan_bufs *b = NULL;
    pthread_mutex_lock(&db->pool_mu);
    if (db->nscan_pool)
        b = db->scan_pool[--db->nscan_pool];
    pthread_mutex_unlock(&db->pool_mu);
    return b ? b : calloc(1, sizeof *b);
}

/* Back to the pool; freed if it is full, or if the buffers grew past what is worth keeping
 * (a day segment's columns). */
#define SCAN_POOL_KEEP (64u << 20)
static void bufs_put(eng_db *db, scan_bufs *b)
{
    size_t bytes = b->cap * (sizeof *b->idx + 1) + b->cs.rawcap + b->cs.compcap;
    for (size_t c = 0; c < ENG_NCOLS; c++)
        bytes += b->cs.cap[c];
    pthread_mutex_lock(&db->pool_mu);
    if (db->nscan_pool < SCAN_POOL && bytes <= SCAN_POOL_KEEP) {
        db->scan_pool[db->nscan_pool++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&db->pool_mu);
    if (b)
        bufs_free(b);
}

/* Rows idx[0..n) (idx NULL: every row) of the decoded segment, as blocks to cb. */
static int emit_rows(scan_bufs *b, const eng_colview *v, eng_row_cb cb, void *arg)
{
    for (size_t off = 0; off < v->n; off += SCAN_BLOCK) {
        size_t cnt = v->n - off < SCAN_BLOCK ? v->n - off : SCAN_BLOCK;
        eng_colview_rows(v, off, cnt, b->block);
        int rc = cb(arg, b->block, cnt);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Keeps, of rows idx[0..n) (idx NULL: all cs.n), those whose span overlaps the range, in
 * b->idx (which idx may be: row k is written after row k is read); their count. */
static size_t rows_in_range(scan_bufs *b, const eng_colview *v, const uint32_t *idx, size_t n,
                            int64_t from_ms, int64_t to_ms)
{
    const uint8_t *first = v->col[ENG_COL_FIRST], *last = v->col[ENG_COL_LAST];
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        uint32_t i = idx ? idx[j] : (uint32_t)j;
        int64_t f = (int64_t)ns_get_le64(first + (size_t)i * 8),
                l = (int64_t)ns_get_le64(last + (size_t)i * 8);
        if (l >= from_ms && f <= to_ms)
            b->idx[k++] = i;
    }
    return k;
}

/* scratch may be rows itself (a segment's own buffer): row k is written after row i >= k is read */
static int emit_filtered(const eng_flow *rows, size_t n, int64_t from_ms, int64_t to_ms,
                         eng_flow *scratch, eng_row_cb cb, void *arg)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].last_ms >= from_ms && rows[i].first_ms <= to_ms) {
            if (&scratch[k] != &rows[i])
                scratch[k] = rows[i];
            k++;
        }
    }
    return k ? cb(arg, scratch, k) : 0;
}

static void count_pruned(eng_db *db)
{
    pthread_mutex_lock(&db->mu);
    db->st.segments_pruned++;
    pthread_mutex_unlock(&db->mu);
}

static bool damaged(int rc)
{
    return rc == NS_E_CORRUPT || rc == NS_E_TRUNC || rc == NS_E_MAGIC || rc == NS_E_VERSION ||
           rc == NS_E_COMPRESS;
}

/* A dictionary-coded column in the cache is a second entry beside the column (tag ENG_NCOLS +
 * c): the count of values (8 bytes), the values, then the rows' codes. */
static const eng_coldict *dict_of_blob(const uint8_t *p, eng_coldict *d)
{
    memcpy(&d->n, p, sizeof d->n);
    d->vals = p + 8;
    d->codes = (const uint32_t *)(const void *)(p + 8 + d->n * 16);
    return d;
}

static const eng_coldict *cached_dict(eng_cache *cache, uint64_t file, uint32_t c, eng_coldict *d,
                                      eng_cache_ent **ref)
{
    const uint8_t *p = eng__cache_get(cache, file, ENG_NCOLS + c, ref);
    return p ? dict_of_blob(p, d) : NULL;
}

static const eng_coldict *put_dict(eng_cache *cache, uint64_t owner, uint64_t file, uint32_t c,
                                   size_t n, const eng_coldict *from, eng_coldict *d,
                                   eng_cache_ent **ref)
{
    size_t len = 8 + from->n * 16 + n * 4;
    uint8_t *blob = eng__cache_wants(cache, len) ? malloc(len) : NULL;
    if (!blob)
        return from;
    memcpy(blob, &from->n, 8);
    memcpy(blob + 8, from->vals, from->n * 16);
    memcpy(blob + 8 + from->n * 16, from->codes, n * 4);
    const uint8_t *kept = eng__cache_put(cache, owner, file, ENG_NCOLS + c, blob, len, ref);
    free(blob);
    return kept ? dict_of_blob(kept, d) : from;
}

/* A segment file that is gone when a query opens it was either deleted by budget or retention
 * since the query's snapshot (then it has left the catalog already), or removed behind the
 * daemon's back: then the catalog forgets it too, and the loss is logged and counted. */
static void forget_missing(eng_db *db, const char *name)
{
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < db->nsegs; i++) {
        if (strcmp(db->segs[i].name, name) == 0) {
            catalog_remove_locked(db, i);
            if (!db->opts.read_only) { /* beside a daemon, its deletions look the same */
                db->st.segments_missing++;
                ns_log(NS_LOG_ERROR, "db: segment %s is missing from %s; its flows are lost", name,
                       db->dir);
            }
            break;
        }
    }
    pthread_mutex_unlock(&db->mu);
}

/* The totals of a's rows on the sides asked for, from segment s's address totals, offered to
 * tcb. 1: answered, with tcb's return in *cbrc (0 when it took them); 0: read the rows (not
 * listed, or tcb declined); else the segment's own error. */
static int addr_totals(eng_seg *s, const ns_addr *a, unsigned sides, eng_totals_cb tcb, void *arg,
                       int *cbrc)
{
    eng_addr_totals at;
    int rc = eng_seg_addr_totals(s, a, &at);
    *cbrc = 0;
    if (rc <= 0)
        return rc;
    const eng_side_totals *side[2] = {&at.src, &at.dst};
    eng_side_totals t = {0};
    for (int k = 0; k < 2; k++) {
        const eng_side_totals *x = side[k];
        if (!(sides & (k ? ENG_SIDE_DST : ENG_SIDE_SRC)) || x->rows == 0)
            continue;
        t.first_ms = t.rows == 0 || x->first_ms < t.first_ms ? x->first_ms : t.first_ms;
        t.last_ms = t.rows == 0 || x->last_ms > t.last_ms ? x->last_ms : t.last_ms;
        t.rows += x->rows;
        t.flows += x->flows;
        t.packets += x->packets;
        t.bytes += x->bytes;
    }
    if ((sides & ENG_SIDE_SRC) && (sides & ENG_SIDE_DST)) { /* a row on both sides counts once */
        t.rows -= at.both.rows;
        t.flows -= at.both.flows;
        t.packets -= at.both.packets;
        t.bytes -= at.both.bytes;
    }
    rc = t.rows ? tcb(arg, t.flows, t.packets, t.bytes, t.first_ms, t.last_ms) : 1;
    if (rc == 0)
        return 0;
    *cbrc = rc == 1 ? 0 : rc;
    return 1;
}

static int scan_segment(eng_db *db, const char *name, int64_t from_ms, int64_t to_ms,
                        uint32_t colmask, const eng_scan_opts *opts, eng_row_cb cb,
                        eng_totals_cb tcb, void *arg, scan_bufs *bufs)
{
    bool by_addr = opts && opts->naddrs > 0;
    size_t nsel = 0;
    char path[4200];
    eng_seg *s;
    int rc;
    seg_path(db, name, path, sizeof path);
    rc = eng_seg_open(path, &s);
    if (rc == -ENOENT) {
        forget_missing(db, name);
        return 0;
    }
    if (rc < 0)
        goto bad;
    const eng_seg_info *in = eng_seg_get_info(s);
    size_t n = (size_t)in->rows;
    bool whole = in->first_ms >= from_ms && in->last_ms <= to_ms;
    if (by_addr) {
        /* the footer's filter first: most segments lack a given device */
        bool maybe = false;
        for (size_t i = 0; i < opts->naddrs && !maybe; i++)
            maybe = eng_seg_may_have(s, &opts->addrs[i]);
        if (!maybe) {
            eng_seg_close(s);
            count_pruned(db);
            return 0;
        }
        if (whole && tcb && opts->addr_sides && opts->naddrs == 1) {
            int cbrc;
            rc = addr_totals(s, &opts->addrs[0], opts->addr_sides, tcb, arg, &cbrc);
            if (rc != 0)
                eng_seg_close(s);
            if (rc < 0)
                goto bad;
            if (rc == 1) {
                count_pruned(db);
                return cbrc;
            }
        }
    }
    if (whole && tcb && !by_addr) {
        rc = tcb(arg, in->flows, in->packets, in->bytes, in->first_ms, in->last_ms);
        if (rc != 0) {
            eng_seg_close(s);
            return rc == 1 ? 0 : rc;
        }
    }
    if ((rc = bufs_reserve(bufs, n ? n : 1)) < 0) {
        eng_seg_close(s);
        return rc;
    }
    uint64_t owner = db->cache ? eng__cache_file_id(name) : 0;
    uint64_t file = db->cache ? eng__cache_file_key(owner, eng__seg_ident(s)) : 0;
    if (by_addr) {
        /* the index's answer for these addresses is kept like a column: reading the index
         * (decompress, unpack) cost a device view as much as its aggregation */
        size_t words = (n + 63) / 64;
        uint64_t tag = ENG_CACHE_TAG | XXH3_64bits(opts->addrs, opts->naddrs * sizeof *opts->addrs);
        eng_cache_ent *ref;
        const uint8_t *kept = eng__cache_get(db->cache, file, tag, &ref);
        if (kept) {
            memcpy(bufs->sel, kept, words * sizeof *bufs->sel);
            eng__cache_release(db->cache, ref);
            nsel = 0;
            for (size_t w = 0; w < words; w++)
                nsel += (size_t)__builtin_popcountll(bufs->sel[w]);
        } else {
            memset(bufs->sel, 0, words * sizeof *bufs->sel);
            rc = eng_seg_select(s, opts->addrs, opts->naddrs, bufs->sel, &nsel);
            if (rc < 0) {
                eng_seg_close(s);
                goto bad;
            }
            if (bufs->cache_put && eng__cache_wants(db->cache, words * sizeof *bufs->sel) &&
                eng__cache_put(db->cache, owner, file, tag, (const uint8_t *)bufs->sel,
                               words * sizeof *bufs->sel, &ref))
                eng__cache_release(db->cache, ref);
        }
        if (nsel == 0) {
            eng_seg_close(s);
            count_pruned(db);
            return 0;
        }
        if (nsel == n)
            by_addr = false; /* every row named: the plain path */
    }
    /* the times are needed to filter rows, unless the whole segment is inside the range */
    uint32_t need = whole && !by_addr
                        ? colmask
                        : colmask | ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
    if (need & ENG_COLMASK(ENG_COL_LAST))
        need |= ENG_COLMASK(ENG_COL_FIRST);
    /* columns the cache holds are not decoded again; the others are, and offered to it */
    eng_cache_ent *refs[ENG_NCOLS] = {0}, *drefs[ENG_NCOLS] = {0};
    eng_coldict dk[ENG_NCOLS];
    eng_colview v = {.mask = need};
    uint32_t miss = need;
    uint32_t dict_only = opts && opts->cols ? opts->dict_only : 0;
    for (uint32_t c = 0; db->cache && c < ENG_NCOLS; c++) {
        if (!(need & ENG_COLMASK(c)))
            continue;
        if ((dict_only & ENG_COLMASK(c)) &&
            (v.dict[c] = cached_dict(db->cache, file, c, &dk[c], &drefs[c]))) {
            miss &= ~ENG_COLMASK(c); /* read through its dictionary alone */
            continue;
        }
        if ((v.col[c] = eng__cache_get(db->cache, file, c, &refs[c]))) {
            miss &= ~ENG_COLMASK(c);
            if (!v.dict[c])
                v.dict[c] = cached_dict(db->cache, file, c, &dk[c], &drefs[c]);
        }
    }
    bufs->cs.dict_only = dict_only;
    /* planes only where nothing decoded is kept: a scan that fills the cache decodes them */
    bufs->cs.planes_ok = opts && opts->cols && !(bufs->cache_put && db->cache) ? opts->planes : 0;
    v.nrows = n;
    int lrc = miss ? eng__seg_load_cols(s, miss, &bufs->cs) : 0;
    eng_seg_close(s);
    rc = lrc;
    for (uint32_t c = 0; rc == 0 && c < ENG_NCOLS; c++) {
        if (!(miss & ENG_COLMASK(c)))
            continue;
        size_t len = n * eng_col_width((eng_col)c);
        if (bufs->cs.dmask & ENG_COLMASK(c))
            v.dict[c] = &bufs->cs.dict[c];
        if (bufs->cs.dmask & dict_only & ENG_COLMASK(c)) {
            /* only the dictionary was decoded: no column to hand over or keep */
            if (bufs->cache_put && db->cache)
                v.dict[c] = put_dict(db->cache, owner, file, c, n, v.dict[c], &dk[c], &drefs[c]);
            continue;
        }
        if (!(bufs->cs.mask & ENG_COLMASK(c))) {
            v.mask &= ~ENG_COLMASK(c); /* a raw segment's flows: one a row */
            continue;
        }
        if (bufs->cs.pmask & ENG_COLMASK(c)) {
            v.planes[c] = bufs->cs.praw[c]; /* left as planes: nothing decoded to keep */
            continue;
        }
        v.col[c] = bufs->cs.col[c];
        if (bufs->cache_put && eng__cache_wants(db->cache, len)) {
            const uint8_t *kept =
                eng__cache_put(db->cache, owner, file, c, bufs->cs.col[c], len, &refs[c]);
            if (kept)
                v.col[c] = kept;
            if (kept && v.dict[c] && v.dict[c] == &bufs->cs.dict[c])
                v.dict[c] = put_dict(db->cache, owner, file, c, n, v.dict[c], &dk[c], &drefs[c]);
        }
    }
    if (rc == 0) {
        const uint32_t *idx = NULL;
        size_t cnt = n;
        if (by_addr) {
            cnt = eng__sel_rows(bufs->sel, n, bufs->idx);
            idx = bufs->idx;
        }
        /* every row of a segment inside the range matches */
        if (!whole) {
            cnt = rows_in_range(bufs, &v, idx, cnt, from_ms, to_ms);
            idx = bufs->idx;
        }
        v.n = cnt;
        v.idx = idx;
        if (cnt)
            rc = opts && opts->cols ? opts->cols(arg, &v) : emit_rows(bufs, &v, cb, arg);
    }
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        eng__cache_release(db->cache, refs[c]);
        eng__cache_release(db->cache, drefs[c]);
    }
    if (lrc < 0)
        goto bad; /* the segment's own error, not a callback's */
    return rc;
bad:
    if (damaged(rc)) {
        pthread_mutex_lock(&db->mu);
        quarantine_locked(db, name, rc);
        pthread_mutex_unlock(&db->mu);
        return 0; /* answer from the rest */
    }
    return rc;
}

int eng_db_scan(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask, eng_row_cb cb,
                void *arg)
{
    return eng_db_scan_totals(db, from_ms, to_ms, colmask, cb, NULL, arg);
}

int eng_db_scan_totals(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask, eng_row_cb cb,
                       eng_totals_cb tcb, void *arg)
{
    return eng_db_scan_opt(db, from_ms, to_ms, colmask, NULL, cb, tcb, arg);
}

int eng_db_scan_opt(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask,
                    const eng_scan_opts *opts, eng_row_cb cb, eng_totals_cb tcb, void *arg)
{
    return eng_db_scan_par(db, from_ms, to_ms, colmask, opts, 1, cb, tcb, &arg);
}

/* ------------------------------------------------------------------------------------------ */
/* The scan threads and the scratch blocks of queries (see struct qpool). */

static void mem_release(void *const *p, const size_t *size, size_t n)
{
    for (size_t i = 0; i < n; i++)
        munmap(p[i], size[i]);
}

/* Takes the kept blocks out of the pool (under mu) into p/size; the caller unmaps them. */
static size_t mem_take_all_locked(qpool *q, void **p, size_t *size)
{
    size_t n = q->nmem;
    for (size_t i = 0; i < n; i++) {
        p[i] = q->mem[i].p;
        size[i] = q->mem[i].size;
    }
    q->nmem = 0;
    q->mem_bytes = 0;
    return n;
}

static void *qpool_main(void *arg)
{
    qpool *q = arg;
    void *p[QPOOL_MEM_MAX];
    size_t size[QPOOL_MEM_MAX];
    ns_thread_name("scan");
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && !q->head) {
            if (!q->nmem) {
                pthread_cond_wait(&q->work, &q->mu);
                continue;
            }
            /* scratch blocks kept: released once no query has used them for a while */
            int64_t idle = ns_mono_ms() - q->mem_used_ms;
            if (idle >= q->mem_idle_ms) {
                size_t n = mem_take_all_locked(q, p, size);
                pthread_mutex_unlock(&q->mu);
                mem_release(p, size, n);
                pthread_mutex_lock(&q->mu);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait_ms = q->mem_idle_ms - idle;
            ts.tv_sec += (time_t)(wait_ms / 1000);
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&q->work, &q->mu, &ts);
        }
        if (q->stop)
            break;
        qpool_task *t = q->head;
        q->head = t->next;
        if (!q->head)
            q->tail = NULL;
        t->state = QT_RUNNING;
        pthread_mutex_unlock(&q->mu);
        t->fn(t->arg);
        pthread_mutex_lock(&q->mu);
        t->state = QT_DONE; /* t belongs to its query again from here on */
        pthread_cond_broadcast(&q->done);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Threads up to want (under mu); a thread that cannot be started leaves its tasks to the
 * others, or to be dropped. */
static void qpool_grow_locked(qpool *q, unsigned want)
{
    if (want > ENG_SCAN_MAX_WORKERS)
        want = ENG_SCAN_MAX_WORKERS;
    while (!q->stop && q->nth < want && pthread_create(&q->th[q->nth], NULL, qpool_main, q) == 0)
        q->nth++;
}

/* Queues tasks t[0..n) (fn and arg set). */
static void qpool_post(qpool *q, qpool_task *t, unsigned n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&q->mu);
    for (unsigned i = 0; i < n; i++) {
        t[i].state = QT_QUEUED;
        t[i].next = NULL;
        if (q->tail)
            q->tail->next = &t[i];
        else
            q->head = &t[i];
        q->tail = &t[i];
    }
    qpool_grow_locked(q, n);
    if (n == 1)
        pthread_cond_signal(&q->work);
    else
        pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
}

/* Drops the tasks of t[0..n) no thread has taken and waits for those running. */
static void qpool_join(qpool *q, qpool_task *t, unsigned n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&q->mu);
    for (unsigned i = 0; i < n; i++) {
        if (t[i].state != QT_QUEUED)
            continue;
        qpool_task **pp = &q->head, *prev = NULL;
        while (*pp != &t[i]) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = t[i].next;
        if (q->tail == &t[i])
            q->tail = prev;
        t[i].state = QT_DROPPED;
    }
    for (unsigned i = 0; i < n; i++)
        while (t[i].state == QT_RUNNING)
            pthread_cond_wait(&q->done, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

/* At close (no query runs): the threads stopped and joined, the kept blocks released. */
static void qpool_stop(qpool *q)
{
    void *p[QPOOL_MEM_MAX];
    size_t size[QPOOL_MEM_MAX];
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->work);
    size_t n = mem_take_all_locked(q, p, size);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->nth; i++)
        pthread_join(q->th[i], NULL);
    q->nth = 0;
    mem_release(p, size, n);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->done);
}

void eng_db_par_run(eng_db *db, unsigned n, void *(*fn)(void *), void *const *args)
{
    qpool_task t[ENG_SCAN_MAX_WORKERS];
    if (n > ENG_SCAN_MAX_WORKERS)
        n = ENG_SCAN_MAX_WORKERS;
    for (unsigned i = 1; i < n; i++)
        t[i] = (qpool_task){.fn = fn, .arg = args[i]};
    if (n > 1)
        qpool_post(&db->qp, t + 1, n - 1);
    if (n > 0)
        fn(args[0]);
    if (n > 1)
        qpool_join(&db->qp, t + 1, n - 1);
}

#define MEM_ALIGN (2u << 20) /* blocks in whole huge pages */

void *eng_db_mem_get(eng_db *db, size_t bytes, size_t *got)
{
    qpool *q = &db->qp;
    size_t need = (bytes + MEM_ALIGN - 1) / MEM_ALIGN * MEM_ALIGN, best = SIZE_MAX;
    void *p = NULL;
    if (need == 0)
        need = MEM_ALIGN;
    pthread_mutex_lock(&q->mu);
    /* the smallest kept block that fits and is not more than twice the size */
    for (size_t i = 0; i < q->nmem; i++)
        if (q->mem[i].size >= need && q->mem[i].size / 2 <= need &&
            (best == SIZE_MAX || q->mem[i].size < q->mem[best].size))
            best = i;
    if (best != SIZE_MAX) {
        p = q->mem[best].p;
        need = q->mem[best].size;
        q->mem_bytes -= need;
        q->mem[best] = q->mem[--q->nmem];
    }
    q->mem_used_ms = ns_mono_ms();
    pthread_mutex_unlock(&q->mu);
    if (!p) {
        p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
#ifdef MADV_HUGEPAGE
        (void)madvise(p, need, MADV_HUGEPAGE); /* a hint: without it, small pages */
#endif
    }
    *got = need;
    return p;
}

void eng_db_mem_put(eng_db *db, void *p, size_t size)
{
    qpool *q = &db->qp;
    if (!p)
        return;
    pthread_mutex_lock(&q->mu);
    if (!q->stop && q->nmem < QPOOL_MEM_MAX && q->mem_bytes + size <= ENG_QUERY_MEM_KEEP) {
        q->mem[q->nmem].p = p;
        q->mem[q->nmem++].size = size;
        q->mem_bytes += size;
        q->mem_used_ms = ns_mono_ms();
        p = NULL;
        if (q->nmem == 1) {
            qpool_grow_locked(q, 1); /* a thread to release them when idle */
            pthread_cond_signal(&q->work);
        }
    }
    pthread_mutex_unlock(&q->mu);
    if (p)
        munmap(p, size);
}

size_t eng_db_mem_kept(eng_db *db)
{
    pthread_mutex_lock(&db->qp.mu);
    size_t n = db->qp.mem_bytes;
    pthread_mutex_unlock(&db->qp.mu);
    return n;
}

/* The open minutes' rows, for a scan that takes columns: turned into columns a chunk at a time. */
typedef struct rows_as_cols {
    eng_colset cs;
    uint32_t mask;
    const eng_scan_opts *opts;
    void *arg;
} rows_as_cols;

static int rows_cols_cb(void *p, const eng_flow *rows, size_t n)
{
    rows_as_cols *sh = p;
    uint32_t mask = sh->mask | ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
    int rc = eng__colset_from_rows(&sh->cs, rows, n, mask);
    if (rc < 0)
        return rc;
    eng_colview v = {.n = n, .mask = sh->cs.mask};
    for (size_t c = 0; c < ENG_NCOLS; c++)
        v.col[c] = sh->cs.col[c];
    return sh->opts->cols(sh->arg, &v);
}

/* A sealed segment in a scan's snapshot: a copy of its catalog entry (name, times, totals). */
typedef seg_entry seg_ref;

static int cmp_ref_newest(const void *a, const void *b)
{
    const seg_ref *x = a, *y = b;
    return x->last_ms > y->last_ms ? -1 : x->last_ms < y->last_ms;
}

/* Sealed segments shared out to workers: each takes the next name until none are left or one
 * fails (the first error wins and stops the others). */
typedef struct par_scan {
    eng_db *db;
    const seg_ref *refs;
    size_t nnames;
    atomic_size_t next;
    atomic_int err;
    int64_t from_ms, to_ms;
    uint32_t colmask;
    const eng_scan_opts *opts;
    eng_row_cb cb;
    eng_totals_cb tcb;
    struct par_crew *crew;
    size_t oldest, newest; /* eng_scan_opts.extreme_times: refs read with their times too */
} par_scan;

typedef struct par_worker {
    par_scan *ps;
    void *arg;
} par_worker;

/* The workers besides the caller's, as tasks for the database's scan threads; worker 0 (the
 * caller) queues them when it meets the first segment that must be read: a summary the
 * catalog answers whole wakes no thread. */
typedef struct par_crew {
    par_worker w[ENG_SCAN_MAX_WORKERS];
    qpool_task task[ENG_SCAN_MAX_WORKERS];
    unsigned nw;
    bool spawned;
} par_crew;

/* A segment wholly inside the range is offered to tcb with the catalog's copy of its footer
 * totals, without opening it, while its file is the one they were taken from (same inode, size,
 * modification time: a file changed or removed behind the daemon's back is opened and checked).
 * 1: tcb took them; 0: read the segment (*tcb NULL when tcb was asked already); else an error. */
static int catalog_totals(const par_scan *ps, const seg_ref *r, void *arg, eng_totals_cb *tcb)
{
    char path[4200];
    struct stat st;
    bool by_addr = ps->opts && ps->opts->naddrs > 0;
    if (!*tcb || by_addr || !r->ident || r->first_ms < ps->from_ms || r->last_ms > ps->to_ms)
        return 0;
    seg_path(ps->db, r->name, path, sizeof path);
    if (stat(path, &st) < 0 || eng__stat_ident(&st) != r->ident)
        return 0;
    int rc = (*tcb)(arg, r->flows, r->packets, r->bytes, r->first_ms, r->last_ms);
    if (rc == 0)
        *tcb = NULL; /* asked already: scan_segment must not ask again */
    return rc;
}

static void *par_main(void *p);

static void crew_spawn(eng_db *db, par_crew *c)
{
    if (c->spawned)
        return;
    c->spawned = true;
    for (unsigned i = 1; i < c->nw; i++)
        c->task[i] = (qpool_task){.fn = par_main, .arg = &c->w[i]};
    qpool_post(&db->qp, c->task + 1, c->nw - 1);
}

static void *par_main(void *p)
{
    par_worker *w = p;
    par_scan *ps = w->ps;
    scan_bufs *bufs = NULL; /* taken at the first segment to read (a summary may read none) */
    for (;;) {
        size_t i = atomic_fetch_add(&ps->next, 1);
        if (i >= ps->nnames || atomic_load(&ps->err) != 0)
            break;
        const seg_ref *r = &ps->refs[i];
        if (ps->opts && ps->opts->want && !ps->opts->want(w->arg, r->first_ms, r->last_ms))
            continue;
        eng_totals_cb tcb = ps->tcb;
        int rc = catalog_totals(ps, r, w->arg, &tcb);
        if (rc == 0) {
            if (w == &ps->crew->w[0])
                crew_spawn(ps->db, ps->crew); /* only the caller's worker queues the others */
            if (!bufs && (bufs = bufs_get(ps->db)) != NULL)
                /* A scan of many segments (a top-N over days) would push out everything the
                 * cache holds for columns nobody asks again soon, and cycling through more
                 * than fits it hits nothing anyway: only small scans (a device's hour, a few
                 * minutes) fill it; all may read it. */
                bufs->cache_put = ps->nnames <= SCAN_CACHE_SEGS;
            uint32_t mask = ps->colmask;
            if (i == ps->oldest || i == ps->newest)
                mask |= ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
            rc = bufs ? scan_segment(ps->db, r->name, ps->from_ms, ps->to_ms, mask, ps->opts,
                                     ps->cb, tcb, w->arg, bufs)
                      : NS_E_NOMEM;
        } else if (rc == 1) {
            rc = 0; /* answered from the catalog */
        }
        if (rc != 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&ps->err, &zero, rc);
            break;
        }
    }
    if (bufs)
        bufs_put(ps->db, bufs);
    return NULL;
}

int eng_db_scan_par(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t colmask,
                    const eng_scan_opts *opts, unsigned nworkers, eng_row_cb cb, eng_totals_cb tcb,
                    void *const *args)
{
    seg_ref *names = NULL;
    snap_buf *bufs = NULL;
    size_t nnames = 0, nbufs = 0;
    int rc = 0;

    if (nworkers == 0 || nworkers > ENG_SCAN_MAX_WORKERS)
        return NS_E_RANGE;
    pthread_rwlock_rdlock(&db->scan_lock);
    pthread_mutex_lock(&db->mu);
    names = malloc((db->nsegs ? db->nsegs : 1) * sizeof *names);
    bufs = calloc(db->nopen ? db->nopen : 1, sizeof *bufs);
    if (!names || !bufs) {
        pthread_mutex_unlock(&db->mu);
        rc = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < db->nsegs; i++) {
        const seg_entry *e = &db->segs[i];
        if (e->rows && e->last_ms >= from_ms && e->first_ms <= to_ms) {
            names[nnames++] = *e;
        }
    }
    for (size_t i = 0; i < db->nopen; i++) {
        minute_buf *b = db->open[i];
        if (b->n == 0 || b->last_ms < from_ms || b->first_ms > to_ms)
            continue;
        snap_buf *sb = &bufs[nbufs];
        sb->chunks = malloc(b->nchunks * sizeof *sb->chunks);
        if (!sb->chunks) {
            rc = NS_E_NOMEM;
            break;
        }
        memcpy(sb->chunks, b->chunks, b->nchunks * sizeof *sb->chunks);
        sb->n = b->n;
        sb->b = b;
        b->refs++;
        nbufs++;
    }
    pthread_mutex_unlock(&db->mu);
    if (opts && opts->newest_first)
        qsort(names, nnames, sizeof *names, cmp_ref_newest);

    if (rc == 0 && nnames) {
        /* no more workers than segments; the caller's thread is worker 0 */
        par_scan ps = {.db = db,
                       .refs = names,
                       .nnames = nnames,
                       .from_ms = from_ms,
                       .to_ms = to_ms,
                       .colmask = colmask,
                       .opts = opts,
                       .cb = cb,
                       .tcb = tcb,
                       .oldest = SIZE_MAX,
                       .newest = SIZE_MAX};
        for (size_t i = 0; opts && opts->extreme_times && i < nnames; i++) {
            if (ps.oldest == SIZE_MAX || names[i].first_ms < names[ps.oldest].first_ms)
                ps.oldest = i;
            if (ps.newest == SIZE_MAX || names[i].last_ms > names[ps.newest].last_ms)
                ps.newest = i;
        }
        par_crew crew = {.nw = nworkers < nnames ? nworkers : (unsigned)nnames};
        ps.crew = &crew;
        atomic_init(&ps.next, 0);
        atomic_init(&ps.err, 0);
        for (unsigned i = 0; i < crew.nw; i++)
            crew.w[i] = (par_worker){.ps = &ps, .arg = args[i]};
        par_main(&crew.w[0]); /* a worker no thread took leaves its share to the others */
        if (crew.spawned)
            qpool_join(&db->qp, crew.task + 1, crew.nw - 1);
        rc = atomic_load(&ps.err);
    }
    if (rc == 0 && nbufs) {
        eng_flow *scratch = malloc(CHUNK_ROWS * sizeof *scratch);
        rows_as_cols shim = {.mask = colmask, .opts = opts, .arg = args[0]};
        bool as_cols = opts && opts->cols;
        if (!scratch)
            rc = NS_E_NOMEM;
        for (size_t i = 0; rc == 0 && i < nbufs; i++) {
            for (size_t off = 0; rc == 0 && off < bufs[i].n; off += CHUNK_ROWS) {
                size_t k = bufs[i].n - off < CHUNK_ROWS ? bufs[i].n - off : CHUNK_ROWS;
                rc = emit_filtered(bufs[i].chunks[off / CHUNK_ROWS], k, from_ms, to_ms, scratch,
                                   as_cols ? rows_cols_cb : cb, as_cols ? (void *)&shim : args[0]);
            }
        }
        eng__colset_free(&shim.cs);
        free(scratch);
    }
out:
    if (nbufs) {
        pthread_mutex_lock(&db->mu);
        for (size_t i = 0; i < nbufs; i++)
            buf_unref_locked(db, bufs[i].b);
        pthread_mutex_unlock(&db->mu);
    }
    for (size_t i = 0; i < nbufs; i++)
        free(bufs[i].chunks);
    free(bufs);
    free(names);
    pthread_rwlock_unlock(&db->scan_lock);
    return rc;
}

unsigned eng_scan_workers(void)
{
    /* the CPUs this process may use (taskset, cgroups), at most the cap */
    cpu_set_t cpus;
    long n = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus)
                                                           : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > ENG_SCAN_MAX_WORKERS ? ENG_SCAN_MAX_WORKERS : (unsigned)n;
}

/* ------------------------------------------------------------------------------------------ */
/* Compaction: the segments of a closed hour become one hour segment, the hours of a closed day
 * one day segment, re-encoded (one sort and one zstd frame per column over many more rows).
 *
 * Steps, and what a crash after each leaves:
 *   1. pick the segments of a closed span and the merged segment's number S, larger than
 *      theirs (nothing written yet; a crash inside step 2 leaves a *.tmp, removed at start-up);
 *   2. write the merged segment (tmp, fsync, rename, fsync the folder): from here on a restart
 *      sees it and drops every segment it covers with a smaller number (drop_superseded);
 *   3. swap it into the catalog for its inputs, in one critical section (a query lists either);
 *   4. wait for scans that listed the inputs, delete them, fsync the folder.
 * NS2FLOWS_COMPACT_CRASH=N makes the process exit at once after step N (1 to 4; 5 = after the
 * first input is deleted): the fault-injection tests use it. */

/* Fault injection: what a crash in the middle of writing path leaves, a partial tmp file. */
static void leave_partial_tmp(const char *path)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs("partial", f);
        fclose(f);
    }
}

static void crash_point(int step)
{
    const char *e = getenv("NS2FLOWS_COMPACT_CRASH");
    if (e && atoi(e) == step)
        _exit(86);
}

typedef struct merge_rows {
    eng_flow *rows;
    size_t n, cap;
} merge_rows;

static int cmp_flow_order(const void *a, const void *b);

static int merge_read(eng_db *db, const char *name, merge_rows *m)
{
    char path[4200];
    eng_seg *s;
    seg_path(db, name, path, sizeof path);
    int rc = eng_seg_open(path, &s);
    if (rc < 0)
        return rc;
    size_t n = (size_t)eng_seg_get_info(s)->rows;
    if (m->n + n > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->n + n)
            cap *= 2;
        eng_flow *nr = realloc(m->rows, cap * sizeof *nr);
        if (!nr) {
            eng_seg_close(s);
            return NS_E_NOMEM;
        }
        m->rows = nr;
        m->cap = cap;
    }
    rc = eng_seg_read(s, ENG_COLS_ALL, m->rows + m->n);
    eng_seg_close(s);
    if (rc == 0)
        m->n += n;
    return rc;
}

/* One merge of the oldest closed span of `span` minutes (60 or 1440) that has two segments or
 * more. Returns 1 if it merged, 0 if nothing was due, or a negative code. */
static int compact_one(eng_db *db, int64_t span, int64_t now_ms)
{
    int64_t delay = (int64_t)db->opts.seal_delay_s * 1000 + 60000;
    char(*in)[64] = NULL;
    size_t nin = 0;
    int64_t key = -1;
    uint64_t seq = 0, rows = 0;
    merge_rows m = {0};
    seg_entry e = {0};
    int rc = 0;

    pthread_mutex_lock(&db->mu);
    /* the catalog is ordered by first minute, so the segments of one span are neighbours (a
     * merged segment first) and closed spans come before open ones */
    for (size_t i = 0, j; i < db->nsegs && key < 0; i = j) {
        int64_t k = db->segs[i].minute / span;
        size_t cnt = 0;
        bool small = false, busy = false;
        uint64_t r = 0;
        for (j = i; j < db->nsegs && db->segs[j].minute / span == k; j++) {
            if (db->segs[j].span > span || db->segs[j].rollup)
                continue; /* a day segment seen from its first hour; roll-ups stay as they are */
            cnt++;
            r += db->segs[j].rows;
            small |= db->segs[j].span < span;
        }
        if ((k + 1) * span * 60000 + delay > now_ms)
            break;
        for (size_t o = 0; o < db->nopen; o++)
            busy |= db->open[o]->minute / span == k; /* a minute of it still open or sealing */
        if (small && cnt >= 2 && !busy && r <= COMPACT_MAX_ROWS) {
            key = k;
            rows = r;
        }
    }
    if (key >= 0) {
        in = malloc(db->nsegs * sizeof *in);
        if (!in) {
            pthread_mutex_unlock(&db->mu);
            return NS_E_NOMEM;
        }
        for (size_t j = 0; j < db->nsegs; j++)
            if (db->segs[j].minute / span == key && db->segs[j].span <= span && !db->segs[j].rollup)
                memcpy(in[nin++], db->segs[j].name, 64);
        seq = db->next_seq++; /* after every input's: the order drop_superseded relies on */
    }
    pthread_mutex_unlock(&db->mu);
    if (key < 0)
        return 0;
    uint64_t t0 = mono_ns(); /* reading, sorting, encoding, writing the merged segment */

    for (size_t i = 0; i < nin && rc == 0; i++)
        rc = merge_read(db, in[i], &m);
    if (rc < 0) {
        /* an input went (budget) or is damaged (quarantined by the next scan): retry later */
        ns_log(NS_LOG_WARN, "db: compaction of %s%lld skipped: %s", span == 60 ? "hour " : "day ",
               (long long)key, ns_strerror(rc));
        goto out;
    }
    (void)rows;
    sort_flows(m.rows, m.n);
    e.minute = key * span;
    e.span = span;
    e.seq = seq;
    e.rows = m.n;
    e.first_ms = INT64_MAX;
    e.last_ms = INT64_MIN;
    for (size_t i = 0; i < m.n; i++) {
        e.first_ms = m.rows[i].first_ms < e.first_ms ? m.rows[i].first_ms : e.first_ms;
        e.last_ms = m.rows[i].last_ms > e.last_ms ? m.rows[i].last_ms : e.last_ms;
        e.flows += eng_flow_count(&m.rows[i]);
        e.packets += m.rows[i].packets;
        e.bytes += m.rows[i].bytes;
    }
    if (m.n == 0)
        e.first_ms = e.last_ms = 0;
    snprintf(e.name, sizeof e.name, "%c%lld-%llu.seg", span == 60 ? 'h' : 'd', (long long)key,
             (unsigned long long)seq);
    char path[4200];
    seg_path(db, e.name, path, sizeof path);
    if (getenv("NS2FLOWS_COMPACT_CRASH") && atoi(getenv("NS2FLOWS_COMPACT_CRASH")) == 1) {
        leave_partial_tmp(path);
        crash_point(1);
    }
    if ((rc = eng_seg_write(path, m.rows, m.n)) < 0) {
        uint32_t held = 0;
        pthread_mutex_lock(&db->mu);
        bool say = ns_ratelimit_ok(&db->compact_rl, ns_mono_ms(), &held);
        pthread_mutex_unlock(&db->mu);
        if (say)
            ns_log(NS_LOG_ERROR,
                   "db: cannot write %s: %s; the segments stay as they are (%u similar"
                   " errors not logged)",
                   path, ns_strerror(rc), held);
        goto out;
    }
    crash_point(2);
    struct stat st;
    e.size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    e.ident = e.size ? eng__stat_ident(&st) : 0;

    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < nin; i++)
        for (size_t j = 0; j < db->nsegs; j++)
            if (strcmp(db->segs[j].name, in[i]) == 0) {
                catalog_remove_locked(db, j);
                break;
            }
    rc = catalog_add_locked(db, &e);
    if (rc == 0) {
        db->st.segments_compacted += nin;
        db->st.rows_compacted += m.n;
        db->st.compact_ns += mono_ns() - t0;
    }
    pthread_mutex_unlock(&db->mu);
    if (rc < 0)
        goto out; /* the file stays: the next start-up takes it in and drops the inputs */
    crash_point(3);

    pthread_rwlock_wrlock(&db->scan_lock);
    for (size_t i = 0; i < nin; i++) {
        char ip[4200];
        seg_path(db, in[i], ip, sizeof ip);
        if (unlink(ip) < 0 && errno != ENOENT)
            ns_log(NS_LOG_ERROR, "db: cannot delete %s: %s", ip, strerror(errno));
        if (i == 0)
            crash_point(5);
    }
    pthread_rwlock_unlock(&db->scan_lock);
    eng__fsync_dir_of(path);
    crash_point(4);
    ns_log(NS_LOG_INFO, "db: merged %zu segments (%zu flows) into %s", nin, m.n, e.name);
    rc = 1;
out:
    free(in);
    free(m.rows);
    return rc;
}

int eng_db_compact(eng_db *db, int64_t now_ms)
{
    int merged = 0, rc = 0;
    if (db->opts.read_only)
        return -EROFS;
    for (int64_t span = 60; span <= 1440 && rc >= 0; span = span == 60 ? 1440 : 1441) {
        /* one merge at a time holds compact_mu: a roll-up waits for one merge, not a pass */
        for (;;) {
            pthread_mutex_lock(&db->compact_mu);
            rc = compact_one(db, span, now_ms);
            pthread_mutex_unlock(&db->compact_mu);
            if (rc <= 0)
                break;
            merged++;
            pthread_mutex_lock(&db->mu);
            bool stop = db->stop;
            pthread_mutex_unlock(&db->mu);
            if (stop)
                break;
        }
    }
    if (merged)
        enforce_limits(db);
    return rc < 0 && merged == 0 ? rc : merged;
}

static void *compactor_main(void *arg)
{
    eng_db *db = arg;
    ns_thread_name("compact");
    (void)ns_thread_nice(NS_NICE_SEALER); /* background work, like sealing */
    pthread_mutex_lock(&db->mu);
    int64_t next_ms = ns_mono_ms() + COMPACT_EVERY_MS;
    while (!db->stop) {
        int64_t wait = next_ms - ns_mono_ms();
        struct timespec ts = ns_deadline_in(CLOCK_REALTIME, wait > 0 ? wait : 0);
        if (!db->enforce_due)
            pthread_cond_timedwait(&db->cond, &db->mu, &ts);
        if (db->stop)
            break;
        /* woken by a WAL past the budget: its pass first (a merge may take seconds) */
        bool due = db->enforce_due, merge = ns_mono_ms() >= next_ms;
        db->enforce_due = false;
        pthread_mutex_unlock(&db->mu);
        if (due)
            enforce_limits(db);
        if (merge) {
            eng_db_compact(db, ns_now_ms());
            eng__seg_write_release(); /* a merge every 10 s at most: nothing worth keeping */
            /* a backlog's buffers, sealed and freed, go back to the system: the RSS follows
             * what is in use instead of the highest backlog so far */
            (void)ns_mem_trim();
            next_ms = ns_mono_ms() + COMPACT_EVERY_MS;
        }
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    eng__seg_write_release();
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Roll-ups: a raw segment over the raw tier's part of the budget becomes r<its name>, its rows
 * summed per minute of first_ms and per roll-up key values.
 *
 * Steps, and what a crash after each leaves:
 *   1. read the raw segment and sum its rows (nothing written; a crash inside step 2 leaves a
 *      *.tmp, removed at start-up);
 *   2. write the roll-up (tmp, fsync, rename, fsync the folder): from here on a restart sees it
 *      and deletes the raw segment it is named after (drop_superseded);
 *   3. swap it into the catalog for the raw segment, in one critical section (a query lists
 *      one or the other, never both);
 *   4. wait for scans that listed the raw segment, delete it, fsync the folder.
 * So every flow is in the raw segment or in its roll-up, never both, never neither.
 * NS2FLOWS_ROLLUP_CRASH=N makes the process exit at once after step N (1 to 4): the
 * fault-injection tests use it. */

static void rollup_crash_point(int step)
{
    const char *e = getenv("NS2FLOWS_ROLLUP_CRASH");
    if (e && atoi(e) == step)
        _exit(87);
}

static const struct {
    eng_col col;
    const char *name;
} rollup_key_names[] = {
    {ENG_COL_SRC, "srcaddr"},      {ENG_COL_DST, "dstaddr"},       {ENG_COL_PROTO, "proto"},
    {ENG_COL_DST_PORT, "dstport"}, {ENG_COL_EXPORTER, "exporter"}, {ENG_COL_IN_IF, "inif"},
    {ENG_COL_OUT_IF, "outif"},     {ENG_COL_SRC_PORT, "srcport"},  {ENG_COL_SRC_AS, "srcas"},
    {ENG_COL_DST_AS, "dstas"},     {ENG_COL_TOS, "tos"},           {ENG_COL_VLAN, "vlan"},
};
#define NROLLUP_KEYS (sizeof rollup_key_names / sizeof rollup_key_names[0])

const char *eng_rollup_key_name(eng_col c)
{
    for (size_t i = 0; i < NROLLUP_KEYS; i++)
        if (rollup_key_names[i].col == c)
            return rollup_key_names[i].name;
    return NULL;
}

int eng_rollup_keys_parse(const char *s, uint32_t *keys, char *err, size_t errcap)
{
    uint32_t k = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t len = 0;
        while (p[len] && p[len] != ',' && p[len] != ' ' && p[len] != '\t')
            len++;
        if (len == 0)
            break;
        bool found = false;
        for (size_t i = 0; i < NROLLUP_KEYS && !found; i++) {
            if (strlen(rollup_key_names[i].name) == len &&
                memcmp(rollup_key_names[i].name, p, len) == 0) {
                k |= ENG_COLMASK(rollup_key_names[i].col);
                found = true;
            }
        }
        if (!found) {
            snprintf(err, errcap,
                     "'%.*s' is not a roll-up key (srcaddr dstaddr proto dstport exporter inif "
                     "outif srcport srcas dstas tos vlan)",
                     (int)(len > 32 ? 32 : len), p);
            return NS_E_PARSE;
        }
        p += len;
    }
    *keys = k ? k : ENG_ROLLUP_KEYS_DEFAULT;
    return 0;
}

/* r reduced to its roll-up key: the minute of first_ms and the kept key columns, the rest 0. */
static void rollup_key_of(const eng_flow *r, uint32_t keys, eng_flow *k)
{
    memset(k, 0, sizeof *k);
    /* clamped first: a hostile exporter's times must not overflow the minute's arithmetic */
    int64_t t = r->first_ms < -(1ll << 52) ? -(1ll << 52) : r->first_ms;
    t = t > (1ll << 52) ? (1ll << 52) : t;
    int64_t m = t / 60000 - (t % 60000 < 0);
    k->first_ms = m * 60000;
    k->last_ms = k->first_ms + 59999;
    if (keys & ENG_COLMASK(ENG_COL_SRC))
        k->src = r->src;
    if (keys & ENG_COLMASK(ENG_COL_DST))
        k->dst = r->dst;
    if (keys & ENG_COLMASK(ENG_COL_EXPORTER))
        k->exporter = r->exporter;
    if (keys & ENG_COLMASK(ENG_COL_PROTO))
        k->proto = r->proto;
    if (keys & ENG_COLMASK(ENG_COL_DST_PORT))
        k->dst_port = r->dst_port;
    if (keys & ENG_COLMASK(ENG_COL_SRC_PORT))
        k->src_port = r->src_port;
    if (keys & ENG_COLMASK(ENG_COL_IN_IF))
        k->in_if = r->in_if;
    if (keys & ENG_COLMASK(ENG_COL_OUT_IF))
        k->out_if = r->out_if;
    if (keys & ENG_COLMASK(ENG_COL_SRC_AS))
        k->src_as = r->src_as;
    if (keys & ENG_COLMASK(ENG_COL_DST_AS))
        k->dst_as = r->dst_as;
    if (keys & ENG_COLMASK(ENG_COL_TOS))
        k->tos = r->tos;
    if (keys & ENG_COLMASK(ENG_COL_VLAN))
        k->vlan = r->vlan;
}

/* The key fields of a reduced row, packed (no padding bytes): what is hashed and compared. */
#define ROLLUP_KEY_BYTES 80
static void rollup_pack(const eng_flow *k, uint8_t *p)
{
    ns_put_le64(p, (uint64_t)k->first_ms);
    memcpy(p + 8, k->src.b, 16);
    memcpy(p + 24, k->dst.b, 16);
    memcpy(p + 40, k->exporter.b, 16);
    ns_put_le32(p + 56, k->src_as);
    ns_put_le32(p + 60, k->dst_as);
    ns_put_le32(p + 64, k->in_if);
    ns_put_le32(p + 68, k->out_if);
    ns_put_le16(p + 72, k->src_port);
    ns_put_le16(p + 74, k->dst_port);
    p[76] = k->proto;
    p[77] = k->tos;
    ns_put_le16(p + 78, k->vlan);
}

int eng_rollup_rows(const eng_flow *rows, size_t n, uint32_t keys, eng_flow **out, size_t *nout)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    uint32_t *slot = calloc(cap, sizeof *slot); /* index + 1 into res, 0 = empty */
    eng_flow *res = malloc((n ? n : 1) * sizeof *res);
    size_t k = 0;
    if (!slot || !res) {
        free(slot);
        free(res);
        return NS_E_NOMEM;
    }
    if (!keys)
        keys = ENG_ROLLUP_KEYS_DEFAULT;
    for (size_t i = 0; i < n; i++) {
        eng_flow key;
        uint8_t p[ROLLUP_KEY_BYTES], q[ROLLUP_KEY_BYTES];
        rollup_key_of(&rows[i], keys, &key);
        rollup_pack(&key, p);
        size_t h = (size_t)XXH3_64bits(p, sizeof p) & (cap - 1);
        /* a group's key is packed again from its row when probed: no copy of every key kept */
        for (; slot[h]; h = (h + 1) & (cap - 1)) {
            rollup_pack(&res[slot[h] - 1], q);
            if (memcmp(p, q, ROLLUP_KEY_BYTES) == 0)
                break;
        }
        if (!slot[h]) {
            res[k] = key;
            slot[h] = (uint32_t)++k;
        }
        eng_flow *a = &res[slot[h] - 1];
        a->packets += rows[i].packets;
        a->bytes += rows[i].bytes;
        a->flows += eng_flow_count(&rows[i]);
    }
    free(slot);
    *out = res;
    *nout = k;
    return 0;
}

/* Replaces raw segment src (a copy of its catalog entry) by its roll-up. Called with
 * compact_mu held, without mu. Returns 0 when src is gone from the catalog (rolled up, or
 * found damaged and quarantined, or missing), or a negative code with src left as it was. */
static int rollup_one(eng_db *db, const seg_entry *src)
{
    merge_rows m = {0};
    eng_flow *agg = NULL;
    size_t nagg = 0;
    seg_entry e = *src;
    char path[4200], srcpath[4200];
    uint32_t keys;
    int rc;

    pthread_mutex_lock(&db->mu);
    keys = db->opts.rollup_keys ? db->opts.rollup_keys : ENG_ROLLUP_KEYS_DEFAULT;
    pthread_mutex_unlock(&db->mu);
    rc = merge_read(db, src->name, &m);
    if (rc == -ENOENT) {
        forget_missing(db, src->name);
        return 0;
    }
    if (damaged(rc)) {
        pthread_mutex_lock(&db->mu);
        quarantine_locked(db, src->name, rc);
        pthread_mutex_unlock(&db->mu);
        return 0;
    }
    if (rc < 0)
        goto out;
    if ((rc = eng_rollup_rows(m.rows, m.n, keys, &agg, &nagg)) < 0)
        goto out;
    sort_flows(agg, nagg); /* the order the index and compression want */
    if ((size_t)snprintf(e.name, sizeof e.name, "r%s", src->name) >= sizeof e.name) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    e.rollup = true;
    e.rows = nagg;
    e.first_ms = INT64_MAX;
    e.last_ms = INT64_MIN;
    e.flows = e.packets = e.bytes = 0; /* src's, copied above */
    for (size_t i = 0; i < nagg; i++) {
        e.first_ms = agg[i].first_ms < e.first_ms ? agg[i].first_ms : e.first_ms;
        e.last_ms = agg[i].last_ms > e.last_ms ? agg[i].last_ms : e.last_ms;
        e.flows += eng_flow_count(&agg[i]);
        e.packets += agg[i].packets;
        e.bytes += agg[i].bytes;
    }
    if (nagg == 0)
        e.first_ms = e.last_ms = 0;
    seg_path(db, e.name, path, sizeof path);
    seg_path(db, src->name, srcpath, sizeof srcpath);
    if (getenv("NS2FLOWS_ROLLUP_CRASH") && atoi(getenv("NS2FLOWS_ROLLUP_CRASH")) == 1) {
        leave_partial_tmp(path);
        rollup_crash_point(1);
    }
    if ((rc = eng_seg_write(path, agg, nagg)) < 0)
        goto out;
    rollup_crash_point(2);
    struct stat st;
    e.size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    e.ident = e.size ? eng__stat_ident(&st) : 0;

    bool swapped = false;
    pthread_mutex_lock(&db->mu);
    for (size_t j = 0; j < db->nsegs; j++) {
        if (strcmp(db->segs[j].name, src->name) == 0) {
            catalog_remove_locked(db, j);
            rc = catalog_add_locked(db, &e);
            if (rc < 0) {
                /* cannot happen after a removal (the array has room); keep the raw one */
                catalog_add_locked(db, src);
                break;
            }
            swapped = true;
            db->st.segments_rolled_up++;
            db->st.rows_rolled_up += src->rows;
            db->st.rollup_rows += nagg;
            break;
        }
    }
    pthread_mutex_unlock(&db->mu);
    if (!swapped) {
        /* the raw segment went meanwhile (quarantined by a scan): its roll-up must not stay */
        unlink(path);
        eng__fsync_dir_of(path);
        goto out;
    }
    rollup_crash_point(3);
    pthread_rwlock_wrlock(&db->scan_lock);
    if (unlink(srcpath) < 0 && errno != ENOENT)
        ns_log(NS_LOG_ERROR, "db: cannot delete %s: %s", srcpath, strerror(errno));
    pthread_rwlock_unlock(&db->scan_lock);
    eng__fsync_dir_of(path);
    rollup_crash_point(4);
    ns_log(NS_LOG_INFO, "db: rolled up %s (%llu flows in %zu rows) into %s", src->name,
           (unsigned long long)src->rows, nagg, e.name);
out:
    free(m.rows);
    free(agg);
    return rc;
}

const char *eng_seg_name_tier(const char *name)
{
    int64_t m, span;
    uint64_t q;
    bool r;
    if (!seg_name_parse(name, &m, &span, &q, &r))
        return NULL;
    return r ? "rollup" : span == 1 ? "minute" : span == 60 ? "hour" : "day";
}

static int cmp_tier_range(const void *a, const void *b)
{
    const eng_tier_range *x = a, *y = b;
    if (x->from_ms != y->from_ms)
        return x->from_ms < y->from_ms ? -1 : 1;
    return (int)x->tier - (int)y->tier;
}

int eng_db_tiers(eng_db *db, int64_t from_ms, int64_t to_ms, eng_tier_range *out, size_t cap)
{
    pthread_mutex_lock(&db->mu);
    size_t n = 0, max = db->nsegs + db->nopen;
    eng_tier_range *all = malloc((max ? max : 1) * sizeof *all);
    if (!all) {
        pthread_mutex_unlock(&db->mu);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < db->nsegs; i++) {
        const seg_entry *e = &db->segs[i];
        if (e->rows && e->last_ms >= from_ms && e->first_ms <= to_ms)
            all[n++] = (eng_tier_range){e->rollup ? ENG_TIER_ROLLUP : ENG_TIER_RAW,
                                        e->first_ms < from_ms ? from_ms : e->first_ms,
                                        e->last_ms > to_ms ? to_ms : e->last_ms};
    }
    for (size_t i = 0; i < db->nopen; i++) {
        const minute_buf *b = db->open[i];
        if (b->n && b->last_ms >= from_ms && b->first_ms <= to_ms)
            all[n++] = (eng_tier_range){ENG_TIER_RAW, b->first_ms < from_ms ? from_ms : b->first_ms,
                                        b->last_ms > to_ms ? to_ms : b->last_ms};
    }
    pthread_mutex_unlock(&db->mu);
    qsort(all, n, sizeof *all, cmp_tier_range);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && all[k - 1].tier == all[i].tier) {
            if (all[i].to_ms > all[k - 1].to_ms)
                all[k - 1].to_ms = all[i].to_ms;
            continue;
        }
        all[k++] = all[i];
    }
    for (size_t i = 0; i < k && i < cap; i++)
        out[i] = all[i];
    free(all);
    return (int)(k > INT32_MAX ? INT32_MAX : k);
}

/* ------------------------------------------------------------------------------------------ */
/* State files */

#define STATE_DIR "state"
#define STATE_MAX (64u << 20)

static int state_path(const eng_db *db, const char *name, char *out, size_t cap, bool tmp)
{
    if (!*name || strlen(name) > 64)
        return NS_E_RANGE;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
              *p == '.'))
            return NS_E_RANGE; /* never a path: no '/' and no ".." can reach outside */
    if (name[0] == '.')
        return NS_E_RANGE;
    if ((size_t)snprintf(out, cap, "%s/%s/%s%s", db->dir, STATE_DIR, name, tmp ? ".tmp" : "") >=
        cap)
        return -ENAMETOOLONG;
    return 0;
}

int eng_db_state_write(eng_db *db, const char *name, const void *buf, size_t len)
{
    return state_write(db, name, buf, len, true);
}

/* durable: fsync the file and the folder (a cache such as the catalog file need not be) */
static int state_write(eng_db *db, const char *name, const void *buf, size_t len, bool durable)
{
    char dir[4200], tmp[4300], path[4300];
    int rc, fd;
    if (db->opts.read_only)
        return -EROFS;
    snprintf(dir, sizeof dir, "%s/%s", db->dir, STATE_DIR);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    if ((rc = state_path(db, name, tmp, sizeof tmp, true)) < 0 ||
        (rc = state_path(db, name, path, sizeof path, false)) < 0)
        return rc;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    const uint8_t *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            close(fd);
            unlink(tmp);
            return rc;
        }
        p += w;
        left -= (size_t)w;
    }
    if (durable && fsync(fd) < 0) {
        rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (close(fd) < 0) {
        rc = -errno;
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, path) < 0) {
        rc = -errno;
        unlink(tmp);
        return rc;
    }
    return durable ? eng__fsync_dir_of(path) : 0;
}

int eng_db_state_read(eng_db *db, const char *name, uint8_t **buf, size_t *len)
{
    char path[4300];
    struct stat st;
    int rc = state_path(db, name, path, sizeof path, false);
    if (rc < 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > STATE_MAX) {
        close(fd);
        return NS_E_RANGE;
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return NS_E_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(b);
            close(fd);
            return r < 0 ? -errno : NS_E_TRUNC;
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;
}
