/* sink/sink.c — batching, the disk spool and the senders of the ClickHouse sink.
 *
 * A batch is cut at batch_rows rows, batch_ms after its first row, or when the receive day
 * changes: all of a batch's rows then fall in one daily partition, so ClickHouse writes the
 * batch as one part (the POST asks max_insert_block_size >= the batch) and an insert either
 * lands whole or not at all. Every batch carries a random 64-bit id in a column of its own. A
 * batch is bound ("pinned") to a shard from the moment a connection to that shard exists; a
 * pinned batch is retried only there, and only after asking the shard whether a query with
 * the batch's id is still running and how many rows with that id it holds: all of them -> done,
 * none -> send again, some -> set aside in rejected/. So a retry never doubles rows.
 *
 * Spool file names: b<seq:16x>-<id:16x>-<day>.rb, pinned b<seq>-<id>-<day>.s<shard>.rb; the
 * content is exactly the POST body (RowBinary), so an operator can send one with curl. */
#include "sink/sink_int.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Cut batches waiting for the spool thread may hold this many bytes (at least 4 batches);
 * past it rows are dropped rather than letting memory grow while the disk is slow. */
#define PENDING_BYTES (64u << 20)
#define PENDING_MIN   4
#define MAX_BODY_LOG  300

const char *snk_strerror(int rc)
{
    switch (rc) {
    case SNK_E_HTTP:
        return "ClickHouse answered an error";
    case SNK_E_CONNECT:
        return "cannot connect to ClickHouse";
    case SNK_E_IO:
        return "transfer to ClickHouse broke off";
    case SNK_E_ANSWER:
        return "unexpected answer from ClickHouse";
    case SNK_E_FILTER:
        return "filter not supported by the ClickHouse backend";
    case SNK_E_NOSHARD:
        return "no ClickHouse shard answered";
    default:
        return ns_strerror(rc);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* RowBinary */

static uint8_t *put8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}
static uint8_t *put16(uint8_t *p, uint16_t v)
{
    ns_put_le16(p, v);
    return p + 2;
}
static uint8_t *put32(uint8_t *p, uint32_t v)
{
    ns_put_le32(p, v);
    return p + 4;
}
static uint8_t *put64(uint8_t *p, uint64_t v)
{
    ns_put_le64(p, v);
    return p + 8;
}
static uint8_t *putaddr(uint8_t *p, const ns_addr *a)
{
    memcpy(p, a->b, 16);
    return p + 16;
}

void snk_encode_row(uint8_t *dst, uint64_t batch_id, int64_t recv_ms, const eng_flow *f)
{
    int64_t secs = recv_ms / 1000;
    uint8_t *p = dst;
    p = put64(p, batch_id);
    p = put32(p, secs < 0 ? 0 : secs > UINT32_MAX ? UINT32_MAX : (uint32_t)secs);
    p = put64(p, (uint64_t)f->first_ms);
    p = put64(p, (uint64_t)f->last_ms);
    p = put64(p, f->packets);
    p = put64(p, f->bytes);
    p = putaddr(p, &f->exporter);
    p = putaddr(p, &f->src);
    p = putaddr(p, &f->dst);
    p = putaddr(p, &f->nexthop);
    p = put32(p, f->src_as);
    p = put32(p, f->dst_as);
    p = put32(p, f->in_if);
    p = put32(p, f->out_if);
    p = put32(p, f->sampling);
    p = put32(p, f->source_id);
    p = put16(p, f->src_port);
    p = put16(p, f->dst_port);
    p = put8(p, f->proto);
    p = put8(p, f->tcp_flags);
    p = put8(p, f->tos);
    p = put8(p, f->src_mask);
    p = put8(p, f->dst_mask);
    p = put16(p, f->vlan);
    p = put8(p, f->direction);
    p = put8(p, f->flow_type);
    (void)p; /* p == dst + SNK_ROW_BYTES; test_sink checks the layout against a server */
}

/* ------------------------------------------------------------------------------------------ */

typedef struct mem_batch {
    uint8_t *buf; /* rows * SNK_ROW_BYTES */
    size_t rows;
    uint64_t id;
    uint32_t day; /* recv day (epoch days) of every row */
} mem_batch;

typedef struct spool_ent {
    uint64_t seq, id;
    uint32_t day;
    uint64_t bytes;
    int pin; /* shard index, -1 = never reached a shard */
    bool busy;
    int64_t not_before; /* monotonic ms */
    uint32_t tries;
} spool_ent;

typedef struct rej_ent {
    uint64_t seq; /* from the name; 0 if it has none (oldest) */
    uint64_t bytes;
    char name[96];
} rej_ent;

typedef struct shard {
    snk_sink *s;
    int idx;
    char url[256];
    pthread_t th;
    bool started;
    /* under s->mu */
    int64_t down_until;
    uint64_t backoff;
    bool up;
    uint64_t sent_batches, sent_rows, errors;
    char last_error[200];
    ns_ratelimit warn_rl; /* a shard that is down would otherwise log every retry */
} shard;

struct snk_sink {
    snk_opts o;
    char table[64];
    char dir[4200];
    pthread_mutex_t mu;
    pthread_cond_t spool_cv; /* spool thread: batches cut, flush asked, stop */
    pthread_cond_t send_cv;  /* senders: spool entries ready, stop */
    pthread_cond_t done_cv;  /* snk_flush waiters */
    pthread_t spool_th;
    bool spool_started;
    volatile bool stop; /* read by curl's progress callback without the mutex */
    /* the open batch */
    mem_batch cur;
    int64_t cur_t0;     /* monotonic ms of its first row */
    mem_batch *pending; /* FIFO */
    size_t npending, cappending;
    uint64_t pending_bytes;
    uint64_t writing_rows; /* rows of the batch the spool thread is writing */
    uint64_t flush_gen, flushed_gen;
    /* the spool, oldest first */
    spool_ent *ents;
    size_t nents, capents;
    rej_ent *rej; /* spool/rejected/, oldest first; counted in the cap, and dropped first */
    size_t nrej, caprej;
    uint64_t next_seq;
    shard shards[NS_MAX_CH_URLS];
    size_t nshards;
    snk_stats st;
    ns_ratelimit drop_rl;
};

static void set_error(shard *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(shard *sh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->last_error, sizeof sh->last_error, fmt, ap);
    va_end(ap);
}

static void ent_name(const spool_ent *e, char *buf, size_t cap)
{
    if (e->pin < 0)
        snprintf(buf, cap, "b%016" PRIx64 "-%016" PRIx64 "-%" PRIu32 ".rb", e->seq, e->id, e->day);
    else
        snprintf(buf, cap, "b%016" PRIx64 "-%016" PRIx64 "-%" PRIu32 ".s%d.rb", e->seq, e->id,
                 e->day, e->pin);
}

static void ent_path(const snk_sink *s, const spool_ent *e, char *buf, size_t cap)
{
    char name[128];
    ent_name(e, name, sizeof name);
    snprintf(buf, cap, "%s/%s", s->dir, name);
}

/* Parses a spool file name; false for anything else. */
static bool parse_name(const char *name, spool_ent *e)
{
    unsigned long long seq, id;
    unsigned day, pin;
    int used = 0;
    memset(e, 0, sizeof *e);
    if (sscanf(name, "b%16llx-%16llx-%u%n", &seq, &id, &day, &used) != 3 || name[0] != 'b')
        return false;
    e->seq = seq;
    e->id = id;
    e->day = day;
    e->pin = -1;
    const char *rest = name + used;
    if (strcmp(rest, ".rb") == 0)
        return true;
    int used2 = 0;
    if (sscanf(rest, ".s%u.rb%n", &pin, &used2) == 1 && rest[used2] == 0 && pin < NS_MAX_CH_URLS) {
        e->pin = (int)pin;
        return true;
    }
    return false;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int write_file(const char *path, const uint8_t *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int rc = w < 0 ? -errno : -EIO;
            close(fd);
            return rc;
        }
        p += w;
        len -= (size_t)w;
    }
    int rc = fsync(fd) < 0 ? -errno : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return NS_E_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int rc = r < 0 ? -errno : NS_E_TRUNC;
            free(buf);
            close(fd);
            return rc;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

static uint64_t random_id(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        /* no entropy source: time and address still make collisions unlikely */
        v = (uint64_t)ns_now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&v;
    }
    return v ? v : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The open batch (ingest threads) */

static bool cut_locked(snk_sink *s)
{
    if (s->cur.rows == 0)
        return false;
    uint64_t bytes = s->cur.rows * SNK_ROW_BYTES;
    bool room = s->npending < PENDING_MIN || s->pending_bytes + bytes <= PENDING_BYTES;
    if (room && s->npending == s->cappending) {
        size_t cap = s->cappending ? s->cappending * 2 : 16;
        mem_batch *np = realloc(s->pending, cap * sizeof *np);
        if (np) {
            s->pending = np;
            s->cappending = cap;
        } else {
            room = false;
        }
    }
    if (!room) {
        s->st.mem_dropped_rows += s->cur.rows;
        uint32_t supp;
        if (ns_ratelimit_ok(&s->drop_rl, ns_now_ms(), &supp))
            ns_log(NS_LOG_WARN,
                   "clickhouse: spool thread behind; %zu rows dropped (%" PRIu32 " more drops "
                   "not logged)",
                   s->cur.rows, supp);
        s->cur.rows = 0;
        return false;
    }
    s->pending[s->npending++] = s->cur;
    s->pending_bytes += bytes;
    s->cur = (mem_batch){0};
    pthread_cond_signal(&s->spool_cv);
    return true;
}

void snk_append(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    snk_sink *s = arg;
    uint32_t day = recv_ms < 0 ? 0 : (uint32_t)(recv_ms / 86400000);
    pthread_mutex_lock(&s->mu);
    s->st.rows_in += n;
    for (size_t i = 0; i < n; i++) {
        if (s->cur.rows > 0 && s->cur.day != day)
            cut_locked(s); /* one day per batch: one partition, one part */
        if (!s->cur.buf) {
            s->cur.buf = malloc(s->o.batch_rows * SNK_ROW_BYTES);
            if (!s->cur.buf) {
                s->st.mem_dropped_rows += n - i;
                break;
            }
        }
        if (s->cur.rows == 0) {
            s->cur.id = random_id();
            s->cur.day = day;
            s->cur_t0 = ns_mono_ms();
            pthread_cond_signal(&s->spool_cv); /* it times the batch from now */
        }
        snk_encode_row(s->cur.buf + s->cur.rows * SNK_ROW_BYTES, s->cur.id, recv_ms, &rows[i]);
        if (++s->cur.rows == s->o.batch_rows)
            cut_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------------------------------ */
/* The spool thread */

static size_t oldest_idle_locked(snk_sink *s)
{
    for (size_t i = 0; i < s->nents; i++)
        if (!s->ents[i].busy)
            return i;
    return SIZE_MAX;
}

static void remove_ent_locked(snk_sink *s, size_t i)
{
    s->st.spool_bytes -= s->ents[i].bytes;
    s->st.spool_batches--;
    memmove(&s->ents[i], &s->ents[i + 1], (s->nents - i - 1) * sizeof *s->ents);
    s->nents--;
}

static spool_ent *find_ent_locked(snk_sink *s, uint64_t seq)
{
    for (size_t i = 0; i < s->nents; i++)
        if (s->ents[i].seq == seq)
            return &s->ents[i];
    return NULL;
}

static int add_ent_locked(snk_sink *s, const spool_ent *e)
{
    if (s->nents == s->capents) {
        size_t cap = s->capents ? s->capents * 2 : 64;
        spool_ent *ne = realloc(s->ents, cap * sizeof *ne);
        if (!ne)
            return NS_E_NOMEM;
        s->ents = ne;
        s->capents = cap;
    }
    s->ents[s->nents++] = *e;
    s->st.spool_bytes += e->bytes;
    s->st.spool_batches++;
    return 0;
}

/* Writes one batch as a spool file; the oldest idle files go first if the cap needs room. */
static void spool_batch(snk_sink *s, mem_batch *b)
{
    spool_ent e = {.id = b->id, .day = b->day, .bytes = b->rows * SNK_ROW_BYTES, .pin = -1};
    char path[4400], tmp[4450];
    pthread_mutex_lock(&s->mu);
    e.seq = s->next_seq++;
    while (s->st.spool_bytes + s->st.rejected_bytes + e.bytes > s->o.spool_max &&
           e.bytes <= s->o.spool_max) {
        if (s->nrej > 0) {
            /* files ClickHouse refused go before batches that may still be sent */
            rej_ent r = s->rej[0];
            memmove(&s->rej[0], &s->rej[1], (s->nrej - 1) * sizeof r);
            s->nrej--;
            s->st.rejected_bytes -= r.bytes;
            s->st.rejected_dropped++;
            snprintf(path, sizeof path, "%s/rejected/%s", s->dir, r.name);
            ns_log(NS_LOG_WARN,
                   "clickhouse: spool over clickhouse_spool_max (%" PRIu64 " bytes): removed the "
                   "oldest rejected batch %s",
                   s->o.spool_max, path);
            if (unlink(path) < 0 && errno != ENOENT)
                ns_log(NS_LOG_ERROR, "clickhouse: cannot remove %s: %s", path, strerror(errno));
            continue;
        }
        size_t i = oldest_idle_locked(s);
        if (i == SIZE_MAX)
            break;
        ent_path(s, &s->ents[i], path, sizeof path);
        s->st.dropped_batches++;
        s->st.dropped_rows += s->ents[i].bytes / SNK_ROW_BYTES;
        ns_log(NS_LOG_WARN,
               "clickhouse: spool over clickhouse_spool_max (%" PRIu64 " bytes): dropped the "
               "oldest batch %s (%" PRIu64 " rows)",
               s->o.spool_max, path, s->ents[i].bytes / SNK_ROW_BYTES);
        remove_ent_locked(s, i);
        if (unlink(path) < 0)
            ns_log(NS_LOG_ERROR, "clickhouse: cannot remove %s: %s", path, strerror(errno));
    }
    bool fits = s->st.spool_bytes + s->st.rejected_bytes + e.bytes <= s->o.spool_max;
    if (!fits) {
        s->st.dropped_batches++;
        s->st.dropped_rows += b->rows;
        s->writing_rows = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (!fits) {
        ns_log(NS_LOG_WARN,
               "clickhouse: a batch of %zu rows is larger than the free spool room; "
               "dropped",
               b->rows);
        return;
    }
    ent_path(s, &e, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = write_file(tmp, b->buf, e.bytes);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir(s->dir);
    pthread_mutex_lock(&s->mu);
    s->writing_rows = 0; /* from now on counted in the spool (or as dropped) */
    if (rc == 0)
        rc = add_ent_locked(s, &e);
    if (rc < 0) {
        s->st.spool_errors++;
        s->st.mem_dropped_rows += b->rows;
    } else {
        s->st.batches_spooled++;
        pthread_cond_broadcast(&s->send_cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        unlink(tmp);
        ns_log(NS_LOG_ERROR, "clickhouse: cannot write spool file %s: %s; %zu rows dropped", path,
               ns_strerror(rc), b->rows);
    }
}

static void *spool_main(void *arg)
{
    snk_sink *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = ns_mono_ms();
        bool flush = s->flush_gen != s->flushed_gen;
        uint64_t gen = s->flush_gen;
        if (s->cur.rows > 0 && (s->stop || flush || now - s->cur_t0 >= (int64_t)s->o.batch_ms))
            cut_locked(s);
        if (s->npending > 0) {
            mem_batch b = s->pending[0];
            memmove(&s->pending[0], &s->pending[1], (s->npending - 1) * sizeof b);
            s->npending--;
            s->pending_bytes -= b.rows * SNK_ROW_BYTES;
            s->writing_rows = b.rows;
            pthread_mutex_unlock(&s->mu);
            spool_batch(s, &b);
            free(b.buf);
            pthread_mutex_lock(&s->mu);
            s->writing_rows = 0;
            continue;
        }
        if (flush) {
            s->flushed_gen = gen;
            pthread_cond_broadcast(&s->done_cv);
        }
        if (s->stop)
            break;
        /* wake when the open batch is due, or at the latest in a second */
        int64_t wait_ms = 1000;
        if (s->cur.rows > 0) {
            int64_t due = s->cur_t0 + (int64_t)s->o.batch_ms - now;
            wait_ms = due < 1 ? 1 : due < wait_ms ? due : wait_ms;
        }
        struct timespec ts = ns_deadline_in(CLOCK_MONOTONIC, wait_ms);
        pthread_cond_timedwait(&s->spool_cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void snk_flush(snk_sink *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t gen = ++s->flush_gen;
    pthread_cond_signal(&s->spool_cv);
    while (s->flushed_gen < gen && s->spool_started && !s->stop)
        pthread_cond_wait(&s->done_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP */

typedef struct http_res {
    long status;
    int chcode; /* ClickHouse error code (header or body), 0 if none */
    ns_buf body;
    size_t body_max;
} http_res;

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    http_res *r = arg;
    size_t n = sz * nm;
    if (r->body.len < r->body_max)
        ns_buf_append(&r->body, p, n < r->body_max - r->body.len ? n : r->body_max - r->body.len);
    return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *arg)
{
    http_res *r = arg;
    size_t n = sz * nm;
    static const char h[] = "X-ClickHouse-Exception-Code:";
    if (n > sizeof h && strncasecmp(p, h, sizeof h - 1) == 0)
        r->chcode = atoi(p + sizeof h - 1);
    return n;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    const snk_sink *s = arg;
    (void)a, (void)b, (void)c, (void)d;
    return s && s->stop ? 1 : 0; /* shutting down: break the transfer off */
}

typedef struct pin_ctx {
    shard *sh;
    spool_ent *e; /* a copy; the rename makes the pin durable */
    int rc;
} pin_ctx;

/* Called by curl once a connection exists, before the request goes out: from here on the
 * shard may get the batch, so the batch is bound to it (durably: rename + fsync). */
static int on_prereq(void *arg, char *a, char *b, int c, int d)
{
    pin_ctx *pc = arg;
    (void)a, (void)b, (void)c, (void)d;
    if (!pc || !pc->e)
        return CURL_PREREQFUNC_OK;
    snk_sink *s = pc->sh->s;
    char from[4400], to[4400];
    if (pc->e->pin >= 0) {
        /* bound already (only retries get here): sync again, since the sync after the rename
         * may have failed; a bind lost in a crash would let another shard get the batch too */
        pc->rc = fsync_dir(s->dir);
        return pc->rc < 0 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
    }
    ent_path(s, pc->e, from, sizeof from);
    pc->e->pin = pc->sh->idx;
    ent_path(s, pc->e, to, sizeof to);
    if (rename(from, to) < 0) {
        pc->rc = -errno;
        pc->e->pin = -1; /* the file keeps its free name */
        return CURL_PREREQFUNC_ABORT;
    }
    int rc = fsync_dir(s->dir);
    if (rc < 0) {
        /* The file has its bound name now, so the entry keeps the pin: the next attempt must
         * find it by that name (forgetting the pin left it unfindable, and the batch vanished
         * uncounted). The bind may not survive a crash, so nothing is sent this time. */
        pc->rc = rc;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* Parses "Code: N," from a ClickHouse error body. */
static int body_code(const ns_buf *b)
{
    const char *p = b->p ? strstr(b->p, "Code: ") : NULL;
    return p ? atoi(p + 6) : 0;
}

/* POSTs body (or, when body is NULL, the SQL itself) to url with query params. Returns 0 on a
 * 200, SNK_E_HTTP with res filled, SNK_E_CONNECT when no connection was made, SNK_E_IO when
 * the transfer broke off after it was. */
static int http_post(CURL *c, const char *url, const char *params, const void *body, size_t len,
                     uint64_t timeout_ms, pin_ctx *pin, const snk_sink *s, http_res *res)
{
    char full[8192];
    snprintf(full, sizeof full, "%s%s%s", url, strchr(url, '?') ? "&" : "?", params);
    res->status = 0;
    res->chcode = 0;
    res->body.len = 0;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, res);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, res);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)(uintptr_t)s);
    struct curl_slist *hdr = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (pin) {
        curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
        curl_easy_setopt(c, CURLOPT_PREREQDATA, pin);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hdr);
    if (cc != CURLE_OK) {
        res->body.len = 0;
        ns_buf_printf(&res->body, "%s", curl_easy_strerror(cc));
        if (pin && pin->rc < 0)
            return pin->rc;
        if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
            cc == CURLE_COULDNT_RESOLVE_PROXY)
            return SNK_E_CONNECT;
        if (cc == CURLE_OPERATION_TIMEDOUT && pin && pin->e && pin->e->pin < 0)
            return SNK_E_CONNECT; /* timed out connecting: nothing was sent */
        return SNK_E_IO;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &res->status);
    ns_buf_append(&res->body, "", 1); /* NUL-terminate for parsing */
    res->body.len--;
    if (res->status != 200) {
        if (!res->chcode)
            res->chcode = body_code(&res->body);
        return SNK_E_HTTP;
    }
    return 0;
}

/* Error codes of data ClickHouse will never accept (src/Common/ErrorCodes.cpp): the batch goes
 * to rejected/. Anything else (unknown table, too many parts, memory, shutting down) is
 * retried. */
static bool permanent_code(int code)
{
    static const int codes[] = {6,  16, 26, 27, 32, 33,  38,  41, 53,
                                69, 70, 72, 73, 76, 117, 131, 135};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i] == code)
            return true;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Senders */

static void shard_ok_locked(shard *sh)
{
    sh->up = true;
    sh->backoff = 0;
    sh->down_until = 0;
}

static void shard_fail_locked(shard *sh, bool down)
{
    snk_sink *s = sh->s;
    sh->errors++;
    s->st.retries++;
    if (down) {
        sh->up = false;
        sh->backoff = sh->backoff ? sh->backoff * 2 : s->o.retry_min_ms;
        if (sh->backoff > s->o.retry_max_ms)
            sh->backoff = s->o.retry_max_ms;
        sh->down_until = ns_mono_ms() + (int64_t)sh->backoff;
    }
}

/* The oldest batch this shard may take now, marked busy; NULL if none. */
static spool_ent *pick_locked(shard *sh, int64_t now)
{
    snk_sink *s = sh->s;
    for (size_t i = 0; i < s->nents; i++) {
        spool_ent *e = &s->ents[i];
        if (e->busy || e->not_before > now)
            continue;
        if (e->pin >= 0 && e->pin != sh->idx && (size_t)e->pin < s->nshards)
            continue;
        e->busy = true;
        return e;
    }
    return NULL;
}

static int cmp_rej(const void *a, const void *b)
{
    const rej_ent *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Remembers a file now in rejected/ (kept sorted by seq: appends are almost always newest). */
static void add_rej_locked(snk_sink *s, uint64_t seq, uint64_t bytes, const char *name)
{
    if (s->nrej == s->caprej) {
        size_t cap = s->caprej ? s->caprej * 2 : 16;
        rej_ent *nr = realloc(s->rej, cap * sizeof *nr);
        if (!nr)
            return; /* not counted in the cap: at worst the folder is a little over it */
        s->rej = nr;
        s->caprej = cap;
    }
    rej_ent *r = &s->rej[s->nrej++];
    r->seq = seq;
    r->bytes = bytes;
    snprintf(r->name, sizeof r->name, "%s", name);
    s->st.rejected_bytes += bytes;
    if (s->nrej > 1 && s->rej[s->nrej - 2].seq > seq)
        qsort(s->rej, s->nrej, sizeof *s->rej, cmp_rej);
}

static void reject(snk_sink *s, const spool_ent *e, const char *why)
{
    char from[4400], to[4500], name[128];
    ent_path(s, e, from, sizeof from);
    ent_name(e, name, sizeof name);
    snprintf(to, sizeof to, "%s/rejected/%s", s->dir, name);
    if (rename(from, to) < 0) {
        ns_log(NS_LOG_ERROR, "clickhouse: cannot move %s to rejected/: %s", from, strerror(errno));
    } else {
        fsync_dir(s->dir);
        pthread_mutex_lock(&s->mu);
        add_rej_locked(s, e->seq, e->bytes, name);
        pthread_mutex_unlock(&s->mu);
    }
    ns_log(NS_LOG_ERROR,
           "clickhouse: batch %016" PRIx64 " (%" PRIu64 " rows) rejected: %s; kept "
           "as %s",
           e->id, e->bytes / SNK_ROW_BYTES, why, to);
}

/* Asks a shard about a batch that may have reached it: how many of its rows it holds and
 * whether an insert with its id is still running. */
static int check_batch(shard *sh, CURL *c, const spool_ent *e, uint64_t *have, uint64_t *running,
                       http_res *res)
{
    snk_sink *s = sh->s;
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count() FROM system.processes WHERE query_id = 'ns2flows-%016" PRIx64
             "'), (SELECT count() FROM %s WHERE recv_time >= toDateTime(%" PRIu64
             ") AND recv_time < toDateTime(%" PRIu64 ") AND batch_id = %" PRIu64 ")",
             e->id, s->table, (uint64_t)e->day * 86400u, (uint64_t)(e->day + 1) * 86400u, e->id);
    int rc = http_post(c, sh->url, "", sql, strlen(sql), s->o.timeout_ms, NULL, s, res);
    if (rc < 0)
        return rc;
    unsigned long long r, h;
    if (!res->body.p || sscanf(res->body.p, "%llu\t%llu", &r, &h) != 2)
        return SNK_E_ANSWER;
    *running = r;
    *have = h;
    return 0;
}

/* One attempt at one batch. Returns with the entry's fate decided under the mutex. */
static void send_one(shard *sh, CURL *c, spool_ent *ep, http_res *res)
{
    snk_sink *s = sh->s;
    spool_ent e = *ep; /* the caller's copy, taken under the mutex */
    uint64_t rows = e.bytes / SNK_ROW_BYTES;
    char path[4400], params[512], why[400];
    uint8_t *body = NULL;
    size_t len = 0;
    enum { RETRY, DONE, FOUND, REJECT, GONE } fate = RETRY; /* GONE: the file vanished */
    bool down = false;
    int rc = 0;
    why[0] = 0;
    if (e.pin == sh->idx) {
        /* it may have reached this shard before: ask first */
        uint64_t have = 0, running = 0;
        rc = check_batch(sh, c, &e, &have, &running, res);
        if (rc < 0) {
            down = rc == SNK_E_CONNECT || rc == SNK_E_IO;
            snprintf(why, sizeof why, "checking batch: %s: %.300s", snk_strerror(rc),
                     res->body.p ? res->body.p : "");
            goto out;
        }
        if (running) {
            snprintf(why, sizeof why, "batch %016" PRIx64 " still being inserted", e.id);
            goto out;
        }
        if (have == rows) {
            fate = FOUND;
            goto out;
        }
        if (have > 0) {
            snprintf(why, sizeof why, "shard %s holds %" PRIu64 " of its %" PRIu64 " rows", sh->url,
                     have, rows);
            fate = REJECT;
            goto out;
        }
    } else if (e.pin >= 0) {
        /* pinned to a shard that is no longer configured: the data may be there */
        snprintf(why, sizeof why, "sent to shard #%d, which is no longer in clickhouse_url", e.pin);
        fate = REJECT;
        goto out;
    }
    ent_path(s, &e, path, sizeof path);
    rc = read_file(path, &body, &len);
    if (rc == -ENOENT) {
        /* Nothing of the sink's removes a file a sender holds (the cap takes idle ones only):
         * it was deleted by hand, or a bug lost track of its name. Either way its rows will not
         * reach ClickHouse, which must not go unsaid. */
        fate = GONE;
        goto out;
    }
    if (rc < 0 || len % SNK_ROW_BYTES != 0) {
        snprintf(why, sizeof why, "spool file unreadable: %s",
                 rc < 0 ? ns_strerror(rc) : "size not a whole number of rows");
        fate = REJECT;
        goto out;
    }
    snprintf(params, sizeof params,
             "query=INSERT%%20INTO%%20%s%%20FORMAT%%20RowBinary&query_id=ns2flows-%016" PRIx64
             "&max_insert_block_size=%" PRIu64,
             s->table, e.id, rows + 1);
    pin_ctx pc = {.sh = sh, .e = &e};
    rc = http_post(c, sh->url, params, body, len, s->o.timeout_ms, &pc, s, res);
    if (rc == 0) {
        fate = DONE;
    } else if (rc == SNK_E_HTTP && permanent_code(res->chcode)) {
        snprintf(why, sizeof why, "HTTP %ld: %.300s", res->status, res->body.p ? res->body.p : "");
        fate = REJECT;
    } else {
        down = rc != SNK_E_HTTP;
        snprintf(why, sizeof why, "%s: %.300s", snk_strerror(rc), res->body.p ? res->body.p : "");
    }
out:
    free(body);
    for (char *q = why; *q; q++)
        if (*q == '\n' || *q == '\r')
            *q = ' ';
    if (fate == DONE || fate == FOUND) {
        ent_path(s, &e, path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            ns_log(NS_LOG_ERROR, "clickhouse: cannot remove %s: %s", path, strerror(errno));
    } else if (fate == REJECT) {
        reject(s, &e, why);
    }
    pthread_mutex_lock(&s->mu);
    spool_ent *cur = find_ent_locked(s, e.seq);
    if (fate == RETRY) {
        shard_fail_locked(sh, down);
        set_error(sh, "%s", why);
        if (cur) {
            cur->pin = e.pin;
            cur->busy = false;
            cur->tries++;
            /* a server that answers but refuses waits per batch; a dead one per shard */
            if (!down)
                cur->not_before =
                    ns_mono_ms() +
                    (int64_t)(cur->tries < 6 ? s->o.retry_min_ms << cur->tries : s->o.retry_max_ms);
        }
    } else {
        if (fate != REJECT || e.pin < 0)
            shard_ok_locked(sh);
        if (fate == DONE || fate == FOUND) {
            sh->sent_batches++;
            sh->sent_rows += rows;
            s->st.batches_sent++;
            s->st.rows_sent += rows;
            if (fate == FOUND)
                s->st.batches_found++;
        } else if (fate == REJECT) {
            s->st.rejected_batches++;
            s->st.rejected_rows += rows;
        } else if (fate == GONE) {
            s->st.dropped_batches++;
            s->st.dropped_rows += rows;
        }
        if (cur)
            remove_ent_locked(s, (size_t)(cur - s->ents));
    }
    uint32_t supp = 0;
    bool say = fate == RETRY && ns_ratelimit_ok(&sh->warn_rl, ns_now_ms(), &supp);
    pthread_cond_broadcast(&s->send_cv);
    pthread_mutex_unlock(&s->mu);
    if (fate == GONE)
        ns_log(NS_LOG_ERROR,
               "clickhouse: spool file %s (batch %016" PRIx64 ", %" PRIu64 " rows) is gone; "
               "its rows are not in ClickHouse",
               path, e.id, rows);
    if (say)
        ns_log(NS_LOG_WARN,
               "clickhouse: %s: batch %016" PRIx64 " not sent: %s (%" PRIu32 " similar not logged)",
               sh->url, e.id, why, supp);
}

static void *sender_main(void *arg)
{
    shard *sh = arg;
    snk_sink *s = sh->s;
    CURL *c = curl_easy_init();
    http_res res = {.body_max = 4096};
    if (!c) {
        ns_log(NS_LOG_ERROR, "clickhouse: %s: curl_easy_init failed; shard not used", sh->url);
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = ns_mono_ms();
        spool_ent *e = sh->down_until > now ? NULL : pick_locked(sh, now);
        if (!e) {
            /* sleep until the shard's backoff ends, a batch's wait ends, or new work */
            int64_t wake = now + 1000;
            if (sh->down_until > now && sh->down_until < wake)
                wake = sh->down_until;
            for (size_t i = 0; i < s->nents; i++)
                if (!s->ents[i].busy && s->ents[i].not_before > now && s->ents[i].not_before < wake)
                    wake = s->ents[i].not_before;
            int64_t wait_ms = wake - now < 1 ? 1 : wake - now;
            struct timespec ts = ns_deadline_in(CLOCK_MONOTONIC, wait_ms);
            pthread_cond_timedwait(&s->send_cv, &s->mu, &ts);
            continue;
        }
        /* copied under the mutex: once it is released, add_ent_locked may realloc the array
         * and remove_ent_locked shift it */
        spool_ent mine = *e;
        pthread_mutex_unlock(&s->mu);
        send_one(sh, c, &mine, &res);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    ns_buf_free(&res.body);
    curl_easy_cleanup(c);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */

static int cmp_ent(const void *a, const void *b)
{
    const spool_ent *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Counts the files already in rejected/ (they share the cap). */
static void load_rejected(snk_sink *s)
{
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/rejected", s->dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    if (!d)
        return;
    pthread_mutex_lock(&s->mu);
    while ((de = readdir(d))) {
        char path[4600];
        struct stat sb;
        spool_ent e;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof s->rej[0].name ||
            stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        add_rej_locked(s, parse_name(de->d_name, &e) ? e.seq : 0, (uint64_t)sb.st_size, de->d_name);
    }
    pthread_mutex_unlock(&s->mu);
    closedir(d);
}

/* Queues the spool files a previous run left, oldest first. */
static int load_spool(snk_sink *s, char *err, size_t errcap)
{
    DIR *d = opendir(s->dir);
    struct dirent *de;
    if (!d) {
        snprintf(err, errcap, "clickhouse spool %s: %s", s->dir, strerror(errno));
        return -errno;
    }
    while ((de = readdir(d))) {
        spool_ent e;
        char path[4500];
        struct stat sb;
        size_t nl = strlen(de->d_name);
        snprintf(path, sizeof path, "%s/%s", s->dir, de->d_name);
        if (nl > 4 && strcmp(de->d_name + nl - 4, ".tmp") == 0) {
            unlink(path); /* a batch cut by a crash before it was complete; never sent */
            continue;
        }
        if (!parse_name(de->d_name, &e) || stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        e.bytes = (uint64_t)sb.st_size;
        if (e.bytes == 0 || e.bytes % SNK_ROW_BYTES != 0) {
            reject(s, &e, "size is not a whole number of rows");
            continue;
        }
        if (add_ent_locked(s, &e) < 0) {
            closedir(d);
            snprintf(err, errcap, "clickhouse spool: out of memory");
            return NS_E_NOMEM;
        }
        if (e.seq >= s->next_seq)
            s->next_seq = e.seq + 1;
    }
    closedir(d);
    if (s->nents > 1)
        qsort(s->ents, s->nents, sizeof *s->ents, cmp_ent);
    if (s->nents)
        ns_log(NS_LOG_INFO,
               "clickhouse: %zu batches (%" PRIu64 " bytes) left in the spool from the last run",
               s->nents, s->st.spool_bytes);
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int snk_open(const snk_opts *o, snk_sink **out, char *err, size_t errcap)
{
    *out = NULL;
    if (o->nurls == 0 || o->nurls > NS_MAX_CH_URLS || !o->table || !o->spool_dir ||
        o->batch_rows == 0 || o->batch_rows > 1000000) {
        snprintf(err, errcap, "clickhouse: bad sink options");
        return NS_E_RANGE;
    }
    pthread_once(&curl_once, curl_init_once);
    snk_sink *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errcap, "out of memory");
        return NS_E_NOMEM;
    }
    s->o = *o;
    s->o.urls = NULL;
    if (!s->o.retry_min_ms)
        s->o.retry_min_ms = 250;
    if (!s->o.retry_max_ms)
        s->o.retry_max_ms = 8000;
    if (!s->o.timeout_ms)
        s->o.timeout_ms = 60000;
    if (!s->o.batch_ms)
        s->o.batch_ms = 2000;
    s->st.spool_max = o->spool_max;
    snprintf(s->table, sizeof s->table, "%s", o->table);
    snprintf(s->dir, sizeof s->dir, "%s", o->spool_dir);
    s->nshards = o->nurls;
    for (size_t i = 0; i < o->nurls; i++) {
        s->shards[i].s = s;
        s->shards[i].idx = (int)i;
        s->shards[i].up = true;
        snprintf(s->shards[i].url, sizeof s->shards[i].url, "%s", o->urls[i]);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->spool_cv, &ca);
    pthread_cond_init(&s->send_cv, &ca);
    pthread_cond_init(&s->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    char rej[4300];
    snprintf(rej, sizeof rej, "%s/rejected", s->dir);
    if ((mkdir(s->dir, 0755) < 0 && errno != EEXIST) || (mkdir(rej, 0755) < 0 && errno != EEXIST)) {
        int rc = -errno;
        snprintf(err, errcap, "clickhouse spool %s: %s", rej, strerror(errno));
        snk_close(s);
        return rc;
    }
    load_rejected(s);
    int rc = load_spool(s, err, errcap);
    if (rc < 0) {
        snk_close(s);
        return rc;
    }
    if (pthread_create(&s->spool_th, NULL, spool_main, s) != 0) {
        snprintf(err, errcap, "clickhouse: cannot start the spool thread");
        snk_close(s);
        return NS_E_NOMEM;
    }
    s->spool_started = true;
    for (size_t i = 0; i < s->nshards && !o->no_sender_threads; i++) {
        if (pthread_create(&s->shards[i].th, NULL, sender_main, &s->shards[i]) != 0) {
            snprintf(err, errcap, "clickhouse: cannot start a sender thread");
            snk_close(s);
            return NS_E_NOMEM;
        }
        s->shards[i].started = true;
    }
    *out = s;
    return 0;
}

void snk_close(snk_sink *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->spool_cv);
    pthread_cond_broadcast(&s->send_cv);
    pthread_cond_broadcast(&s->done_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->spool_started)
        pthread_join(s->spool_th, NULL); /* it spools what is in memory before it ends */
    for (size_t i = 0; i < s->nshards; i++)
        if (s->shards[i].started)
            pthread_join(s->shards[i].th, NULL);
    free(s->cur.buf);
    for (size_t i = 0; i < s->npending; i++)
        free(s->pending[i].buf);
    free(s->pending);
    free(s->ents);
    free(s->rej);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->spool_cv);
    pthread_cond_destroy(&s->send_cv);
    pthread_cond_destroy(&s->done_cv);
    free(s);
}

const char *snk__table(const snk_sink *s)
{
    return s->table;
}
size_t snk__nshards(const snk_sink *s)
{
    return s->nshards;
}
const char *snk__url(const snk_sink *s, size_t i)
{
    return s->shards[i].url;
}

void snk_get_stats(snk_sink *s, snk_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->open_rows = s->cur.rows + s->writing_rows;
    for (size_t i = 0; i < s->npending; i++)
        st->open_rows += s->pending[i].rows;
    pthread_mutex_unlock(&s->mu);
}

void snk_json(snk_sink *s, ns_buf *out)
{
    snk_stats st;
    pthread_mutex_lock(&s->mu);
    st = s->st;
    st.open_rows = s->cur.rows + s->writing_rows;
    for (size_t i = 0; i < s->npending; i++)
        st.open_rows += s->pending[i].rows;
    ns_buf_printf(
        out,
        ",\"clickhouse\":{\"table\":\"%s\",\"rows_in\":%" PRIu64 ",\"open_rows\":%" PRIu64
        ",\"mem_dropped_rows\":%" PRIu64 ",\"batches_spooled\":%" PRIu64
        ",\"spool_batches\":%" PRIu64 ",\"spool_bytes\":%" PRIu64 ",\"spool_max\":%" PRIu64
        ",\"spool_errors\":%" PRIu64 ",\"dropped_batches\":%" PRIu64 ",\"dropped_rows\":%" PRIu64
        ",\"batches_sent\":%" PRIu64 ",\"rows_sent\":%" PRIu64 ",\"batches_found\":%" PRIu64
        ",\"retries\":%" PRIu64 ",\"rejected_batches\":%" PRIu64 ",\"rejected_rows\":%" PRIu64
        ",\"rejected_bytes\":%" PRIu64 ",\"rejected_dropped\":%" PRIu64 ",\"shards\":[",
        s->table, st.rows_in, st.open_rows, st.mem_dropped_rows, st.batches_spooled,
        st.spool_batches, st.spool_bytes, st.spool_max, st.spool_errors, st.dropped_batches,
        st.dropped_rows, st.batches_sent, st.rows_sent, st.batches_found, st.retries,
        st.rejected_batches, st.rejected_rows, st.rejected_bytes, st.rejected_dropped);
    for (size_t i = 0; i < s->nshards; i++) {
        const shard *sh = &s->shards[i];
        ns_buf_puts(out, i ? ",{\"url\":" : "{\"url\":");
        ns_buf_json_str(out, sh->url);
        ns_buf_printf(out,
                      ",\"up\":%s,\"batches_sent\":%" PRIu64 ",\"rows_sent\":%" PRIu64
                      ",\"errors\":%" PRIu64 ",\"last_error\":",
                      sh->up ? "true" : "false", sh->sent_batches, sh->sent_rows, sh->errors);
        ns_buf_json_str(out, sh->last_error);
        ns_buf_puts(out, "}");
    }
    ns_buf_puts(out, "]}");
    pthread_mutex_unlock(&s->mu);
}

void snk_prometheus(snk_sink *s, ns_buf *out)
{
    snk_stats st;
    snk_get_stats(s, &st);
    const struct {
        const char *name, *type;
        uint64_t v;
    } m[] = {
        {"ns2flows_clickhouse_rows_in_total", "counter", st.rows_in},
        {"ns2flows_clickhouse_rows_sent_total", "counter", st.rows_sent},
        {"ns2flows_clickhouse_batches_sent_total", "counter", st.batches_sent},
        {"ns2flows_clickhouse_retries_total", "counter", st.retries},
        {"ns2flows_clickhouse_rejected_rows_total", "counter", st.rejected_rows},
        {"ns2flows_clickhouse_dropped_rows_total", "counter", st.dropped_rows},
        {"ns2flows_clickhouse_mem_dropped_rows_total", "counter", st.mem_dropped_rows},
        {"ns2flows_clickhouse_spool_bytes", "gauge", st.spool_bytes},
        {"ns2flows_clickhouse_rejected_bytes", "gauge", st.rejected_bytes},
        {"ns2flows_clickhouse_spool_batches", "gauge", st.spool_batches},
        {"ns2flows_clickhouse_spool_max_bytes", "gauge", st.spool_max},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        ns_buf_printf(out, "# TYPE %s %s\n%s %" PRIu64 "\n", m[i].name, m[i].type, m[i].name,
                      m[i].v);
}
