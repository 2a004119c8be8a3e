/* test/test_engine_pool.c — the database's scan threads (eng_db_par_run, the workers of
 * eng_db_scan_par) and the scratch blocks queries keep between them (eng_db_mem_*): answers
 * stay the same when queries run at once, repeat, interleave or fail midway, and the threads
 * and blocks go away at close or after idling. */
#include "engine/base.h"
#include "engine/query.h"
#include "engine/store.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define M0      1767225600000LL /* a minute boundary */
#define MINUTES 24
#define PER_MIN 3000

static char tmpdir[64];
static eng_db *db;

static void open_db(uint32_t idle_ms)
{
    eng_db_opts o = {.no_sealer_thread = true, .query_mem_idle_ms = idle_ms};
    db = test_open_db(tmpdir, &o);
}

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof tmpdir, "pool");
    ns_log_set_level(NS_LOG_ERROR);
}

static void teardown(void)
{
    eng_db_close(db);
    db = NULL;
    test_rm_rf(tmpdir);
}

TestSuite(pool, .init = setup, .fini = teardown);

/* MINUTES sealed segments of random flows among a few thousand addresses (tens of thousands of
 * conversations: group tables past the size that takes scratch blocks), and one open minute. */
static void fill(void)
{
    static eng_flow rows[PER_MIN];
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (int m = 0; m <= MINUTES; m++) {
        for (int i = 0; i < PER_MIN; i++) {
            eng_flow *f = &rows[i];
            memset(f, 0, sizeof *f);
            uint64_t r = test_xorshift(&st);
            uint32_t s = (uint32_t)(r % 6000), d = (uint32_t)(r >> 20) % 9000;
            ns_addr_from_v4(&f->src, 0x0a000000u | s);
            ns_addr_from_v4(&f->dst, 0xc0a80000u | d);
            ns_addr_from_v4(&f->exporter, 0xc0000201u);
            f->proto = (r >> 40) % 3 ? 6 : 17;
            f->src_port = (uint16_t)(1024 + (r >> 33) % 20000);
            f->dst_port = (uint16_t)((r >> 50) % 5 ? 443 : 53);
            f->packets = 1 + (r >> 45) % 50;
            f->bytes = f->packets * (40 + (r >> 24) % 1400);
            f->first_ms = M0 + m * 60000LL + (int64_t)(r % 59000);
            f->last_ms = f->first_ms + (int64_t)((r >> 12) % 900);
            f->sampling = 1;
        }
        cr_assert(eq(int, eng_db_append(db, M0 + m * 60000LL + 30000, rows, PER_MIN), 0));
    }
    /* every minute but the last sealed: segments for the workers, an open minute too */
    cr_assert(eq(int, eng_db_seal_due(db, M0 + MINUTES * 60000LL, false), MINUTES));
}

/* The question shapes: the group table, the partitioned path, the direct array, a filter. */
typedef struct shape {
    const char *group, *filter;
    unsigned flags;
    size_t limit;
} shape;
static const shape shapes[] = {
    {"srcaddr", NULL, QRY_TOP_NO_GROUP_TIMES, 10},
    {"conversation", NULL, QRY_TOP_NO_GROUP_TIMES, 10},
    {"srcaddr,dstaddr", NULL, QRY_TOP_NO_GROUP_TIMES, 25},
    {"conversation", NULL, 0, 10},
    {"dstport", "proto tcp", 0, 5},
    {"dstaddr", "src net 10.0.0.0/20", QRY_TOP_NO_GROUP_TIMES, 1000},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static int ask(size_t k, qry_top_result *out)
{
    qry_group g;
    qry_filter *f = NULL;
    char err[128];
    cr_assert(eq(int, qry_group_parse(shapes[k].group, &g, err, sizeof err), 0));
    if (shapes[k].filter)
        cr_assert(eq(int, qry_filter_compile(shapes[k].filter, &f, err, sizeof err), 0));
    int rc = qry_top_group_opt(db, INT64_MIN, INT64_MAX, f, &g, QRY_M_BYTES, shapes[k].limit,
                               shapes[k].flags, out);
    qry_filter_free(f);
    return rc;
}

static bool same(const qry_top_result *a, const qry_top_result *b)
{
    return a->n == b->n && a->groups == b->groups && a->span_ms == b->span_ms &&
           memcmp(&a->total, &b->total, sizeof a->total) == 0 &&
           memcmp(&a->other, &b->other, sizeof a->other) == 0 &&
           (a->n == 0 || memcmp(a->rows, b->rows, a->n * sizeof *a->rows) == 0);
}

static qry_top_result want[NSHAPES];

static void reference(void)
{
    for (size_t k = 0; k < NSHAPES; k++) {
        cr_assert(eq(int, ask(k, &want[k]), 0), "%s", shapes[k].group);
        cr_assert(want[k].n > 0, "%s: rows", shapes[k].group);
        if (!shapes[k].filter)
            cr_assert(eq(u64, want[k].total.flows, (MINUTES + 1) * (uint64_t)PER_MIN),
                      "%s: every flow counted", shapes[k].group);
    }
}

static void reference_free(void)
{
    for (size_t k = 0; k < NSHAPES; k++)
        qry_top_free(&want[k]);
}

Test(pool, repeated_and_interleaved_queries_give_the_first_answer)
{
    open_db(0);
    fill();
    reference();
    /* a conversation query keeps its partition arenas: blocks are kept now */
    cr_assert(gt(sz, eng_db_mem_kept(db), 0));
    cr_assert(le(u64, eng_db_mem_kept(db), ENG_QUERY_MEM_KEEP));
    static const size_t order[] = {1, 0, 1, 3, 2, 5, 4, 1, 3, 0, 2, 2, 5, 1};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        qry_top_result r;
        cr_assert(eq(int, ask(order[i], &r), 0));
        cr_assert(same(&r, &want[order[i]]), "question %zu (%s) differs from its first answer", i,
                  shapes[order[i]].group);
        qry_top_free(&r);
    }
    reference_free();
}

/* Several threads asking at once, each question against the answer it had alone. */
typedef struct asker {
    unsigned seed;
    int asked, wrong, failed;
} asker;

static void *asker_main(void *p)
{
    asker *a = p;
    uint64_t st = a->seed;
    for (int i = 0; i < 12; i++) {
        size_t k = test_xorshift(&st) % NSHAPES;
        qry_top_result r;
        if (ask(k, &r) != 0) {
            a->failed++;
            continue;
        }
        a->asked++;
        a->wrong += !same(&r, &want[k]);
        qry_top_free(&r);
    }
    return NULL;
}

Test(pool, concurrent_queries_from_several_threads_give_the_answers_asked_alone)
{
    open_db(0);
    fill();
    reference();
    enum { NT = 4 };
    pthread_t th[NT];
    asker a[NT];
    for (unsigned t = 0; t < NT; t++) {
        a[t] = (asker){.seed = 12345u + t * 7919u};
        cr_assert(eq(int, pthread_create(&th[t], NULL, asker_main, &a[t]), 0));
    }
    for (unsigned t = 0; t < NT; t++) {
        pthread_join(th[t], NULL);
        cr_assert(eq(int, a[t].failed, 0), "thread %u: failed queries", t);
        cr_assert(eq(int, a[t].wrong, 0), "thread %u: %d of %d answers differ", t, a[t].wrong,
                  a[t].asked);
    }
    reference_free();
}

/* A scan whose callback fails in the middle of one worker's segments: the error comes back,
 * no callback runs after the scan returned, and the next scans are whole. */
typedef struct counter {
    atomic_int *live; /* callbacks running for this scan, all workers */
    atomic_int *calls;
    int fail_at; /* fail this scan's fail_at-th call (0: never) */
    uint64_t rows;
    int busy; /* a second thread in the same worker's arg would see 1 */
    int overlap;
} counter;

static int count_cols(void *arg, const eng_colview *v)
{
    counter *c = arg;
    atomic_fetch_add(c->live, 1);
    c->overlap += c->busy;
    c->busy = 1;
    int n = atomic_fetch_add(c->calls, 1) + 1;
    struct timespec ts = {0, 200000}; /* long enough for the workers to overlap */
    nanosleep(&ts, NULL);
    c->rows += v->n;
    c->busy = 0;
    atomic_fetch_sub(c->live, 1);
    return c->fail_at && n == c->fail_at ? -EIO : 0;
}

static int count_rows(void *arg, const eng_flow *rows, size_t n)
{
    (void)rows;
    ((counter *)arg)->rows += n;
    return 0;
}

static int scan_count(unsigned nw, int fail_at, uint64_t *rows, int *overlap, int *late)
{
    atomic_int live = 0, calls = 0;
    counter c[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    for (unsigned i = 0; i < nw; i++) {
        c[i] = (counter){.live = &live, .calls = &calls, .fail_at = fail_at};
        args[i] = &c[i];
    }
    eng_scan_opts o = {.cols = count_cols};
    int rc = eng_db_scan_par(db, INT64_MIN, INT64_MAX, ENG_COLMASK(ENG_COL_BYTES), &o, nw,
                             count_rows, NULL, args);
    *late = atomic_load(&live);
    *rows = 0;
    *overlap = 0;
    for (unsigned i = 0; i < nw; i++) {
        *rows += c[i].rows;
        *overlap += c[i].overlap;
    }
    return rc;
}

Test(pool, a_scan_that_fails_midway_returns_the_error_and_the_next_ones_are_whole)
{
    open_db(0);
    fill();
    uint64_t all = (MINUTES + 1) * (uint64_t)PER_MIN, rows;
    int overlap, late;
    for (unsigned nw = 1; nw <= 6; nw++) {
        cr_assert(eq(int, scan_count(nw, 0, &rows, &overlap, &late), 0));
        cr_assert(eq(u64, rows, all), "%u workers: every row once", nw);
        cr_assert(eq(int, overlap, 0), "an arg used by two threads at once");
        for (int at = 1; at <= MINUTES; at += 7) {
            cr_assert(eq(int, scan_count(nw, at, &rows, &overlap, &late), -EIO),
                      "%u workers, failing at call %d", nw, at);
            cr_assert(eq(int, late, 0), "a callback still running after the scan returned");
            cr_assert(lt(u64, rows, all));
        }
        cr_assert(eq(int, scan_count(nw, 0, &rows, &overlap, &late), 0));
        cr_assert(eq(u64, rows, all), "%u workers: whole again after failures", nw);
    }
    /* a query stopped by its deadline, then the same query whole */
    reference();
    qry_set_deadline(1);
    qry_top_result r;
    cr_assert(eq(int, ask(1, &r), -ETIMEDOUT));
    cr_assert(eq(int, ask(0, &r), -ETIMEDOUT));
    qry_set_deadline(0);
    for (size_t k = 0; k < NSHAPES; k++) {
        cr_assert(eq(int, ask(k, &r), 0));
        cr_assert(same(&r, &want[k]), "%s after a timed-out query", shapes[k].group);
        qry_top_free(&r);
    }
    reference_free();
}

/* eng_db_par_run: every part of the work done once, by the caller's call and any others. */
typedef struct job {
    atomic_int next, *done;
    int n;
} job;

typedef struct part_arg {
    job *j;
    int busy, overlap, did;
} part_arg;

static void *take_parts(void *p)
{
    part_arg *a = p;
    a->overlap += a->busy;
    a->busy = 1;
    for (int i; (i = atomic_fetch_add(&a->j->next, 1)) < a->j->n;) {
        atomic_fetch_add(&a->j->done[i], 1);
        a->did++;
    }
    a->busy = 0;
    return NULL;
}

Test(pool, par_run_does_every_part_once_with_any_number_of_calls)
{
    open_db(0);
    enum { N = 5000 };
    static atomic_int done[N];
    for (unsigned n = 1; n <= ENG_SCAN_MAX_WORKERS; n++) {
        job j = {.n = N, .done = done};
        atomic_init(&j.next, 0);
        for (int i = 0; i < N; i++)
            atomic_init(&done[i], 0);
        part_arg a[ENG_SCAN_MAX_WORKERS];
        void *args[ENG_SCAN_MAX_WORKERS];
        for (unsigned i = 0; i < n; i++) {
            a[i] = (part_arg){.j = &j};
            args[i] = &a[i];
        }
        eng_db_par_run(db, n, take_parts, args);
        int sum = 0;
        for (unsigned i = 0; i < n; i++) {
            sum += a[i].did;
            cr_assert(eq(int, a[i].overlap, 0));
            cr_assert(eq(int, a[i].busy, 0), "call %u still running after par_run returned", i);
        }
        cr_assert(eq(int, sum, N), "%u calls", n);
        for (int i = 0; i < N; i++)
            cr_assert(eq(int, atomic_load(&done[i]), 1), "part %d", i);
    }
}

Test(pool, scratch_blocks_are_reused_capped_and_released_when_idle)
{
    open_db(300);
    size_t got, got2, got3;
    /* a block given back is the next one taken of about its size */
    void *p = eng_db_mem_get(db, 5u << 20, &got);
    cr_assert(p != NULL);
    cr_assert(ge(sz, got, 5u << 20));
    memset(p, 0xab, got);
    eng_db_mem_put(db, p, got);
    cr_assert(eq(sz, eng_db_mem_kept(db), got));
    void *q = eng_db_mem_get(db, 5u << 20, &got2);
    cr_assert(q == p);
    cr_assert(eq(sz, got2, got));
    cr_assert(eq(sz, eng_db_mem_kept(db), 0));
    /* not one more than twice the size asked */
    eng_db_mem_put(db, q, got2);
    void *small = eng_db_mem_get(db, 1u << 20, &got3);
    cr_assert(small != p);
    eng_db_mem_put(db, small, got3);
    /* never more than the cap kept */
    enum { NB = 10 };
    void *big[NB];
    size_t bsz[NB];
    for (int i = 0; i < NB; i++)
        big[i] = eng_db_mem_get(db, ENG_QUERY_MEM_KEEP / 8, &bsz[i]);
    for (int i = 0; i < NB; i++)
        cr_assert(big[i] != NULL);
    for (int i = 0; i < NB; i++)
        eng_db_mem_put(db, big[i], bsz[i]);
    cr_assert(le(u64, eng_db_mem_kept(db), ENG_QUERY_MEM_KEEP));
    cr_assert(gt(sz, eng_db_mem_kept(db), 0));
    /* released once unused for the idle time (300 ms here) */
    for (int i = 0; i < 100 && eng_db_mem_kept(db) > 0; i++)
        usleep(20000);
    cr_assert(eq(sz, eng_db_mem_kept(db), 0), "kept blocks released after idling");
    /* and queries still run (blocks taken afresh), and keep them again */
    fill();
    reference();
    cr_assert(gt(sz, eng_db_mem_kept(db), 0));
    reference_free();
}

Test(pool, close_while_idle_stops_the_threads)
{
    /* closed without a query: no thread was started */
    open_db(0);
    cr_assert(eq(int, eng_db_close(db), 0));
    db = NULL;
    /* closed after queries started threads and kept blocks, the threads waiting for work */
    open_db(0);
    fill();
    reference();
    reference_free();
    usleep(50000);
    cr_assert(eq(int, eng_db_close(db), 0));
    db = NULL;
    /* and again on the same folder: the answers are the same */
    open_db(0);
    reference();
    reference_free();
}
