/* Tests of the compactor (engine/db.c, eng_db_compact): minutes of a closed hour merge into one
 * hour segment and hours into a day segment with the same flows; open hours are left alone;
 * scans running across a merge see every flow once; and a crash (the process exits) after each
 * step of a merge leaves a store that reopens with exactly the same flows. */
#include "engine/store.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define H0   1704164400000LL /* 2024-01-02T03:00:00Z, an hour boundary */
#define MIN  60000LL
#define HOUR (60 * MIN)

static char tmpdir[64];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof tmpdir, "compact");
    ns_log_set_level(NS_LOG_ERROR);
    unsetenv("NS2FLOWS_COMPACT_CRASH");
}

static void teardown(void)
{
    test_rm_rf(tmpdir);
}

TestSuite(compact, .init = setup, .fini = teardown);

static eng_db *open_manual(void)
{
    eng_db *db = NULL;
    char err[256];
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    return db;
}

/* Row id kept in in_if; bytes derived from it so a sum names the set of rows. */
static eng_flow flow(uint32_t id, int64_t t)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = t;
    f.last_ms = t + 500;
    f.packets = 1;
    f.bytes = 1000 + id;
    f.in_if = id;
    ns_addr_from_v4(&f.src, 0x0a000000u + id % 97);
    ns_addr_from_v4(&f.dst, 0xc0a80000u + id % 13);
    f.dst_port = (uint16_t)(id % 1000);
    f.proto = 17;
    return f;
}

typedef struct tally {
    uint64_t rows, bytes;
    uint8_t *seen;
    size_t nids;
    bool twice;
} tally;

static int tally_cb(void *arg, const eng_flow *rows, size_t n)
{
    tally *t = arg;
    for (size_t i = 0; i < n; i++) {
        t->rows++;
        t->bytes += rows[i].bytes;
        if (rows[i].in_if < t->nids) {
            if (t->seen[rows[i].in_if]++)
                t->twice = true;
        }
    }
    return 0;
}

static tally scan_all(eng_db *db, size_t nids)
{
    tally t = {.nids = nids};
    t.seen = calloc(nids, 1);
    cr_assert(eq(int, eng_db_scan(db, 0, INT64_MAX, ENG_COLS_ALL, tally_cb, &t), 0));
    return t;
}

static size_t count_files(const char prefix)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    size_t n = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == prefix && len > 4 && strcmp(de->d_name + len - 4, ".seg") == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Fills `hours` hours of `per_min` flows in each of 10 minutes an hour, seals them all. */
static size_t fill(eng_db *db, int hours, size_t per_min)
{
    uint32_t id = 0;
    for (int h = 0; h < hours; h++)
        for (int m = 0; m < 60; m += 6) {
            int64_t t = H0 + h * HOUR + m * MIN;
            eng_flow *r = malloc(per_min * sizeof *r);
            for (size_t i = 0; i < per_min; i++)
                r[i] = flow(id++, t + (int64_t)(i * 37 % 50000));
            cr_assert(eq(int, eng_db_append(db, t + 1000, r, per_min), 0));
            free(r);
        }
    cr_assert(eng_db_seal_due(db, 0, true) > 0);
    return id;
}

Test(compact, closed_hours_merge_into_hour_segments_with_the_same_flows)
{
    eng_db *db = open_manual();
    size_t n = fill(db, 3, 200);
    cr_assert(eq(sz, count_files('m'), 30));
    tally before = scan_all(db, n);
    /* at the end of the second hour plus the delay: the first hour only */
    cr_assert(eq(int, eng_db_compact(db, H0 + HOUR + 30000), 0), "hour 0 not closed yet");
    cr_assert(eq(int, eng_db_compact(db, H0 + 2 * HOUR + 61000), 2));
    cr_assert(eq(sz, count_files('h'), 2));
    cr_assert(eq(sz, count_files('m'), 10));
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments_compacted, 20));
    cr_assert(eq(u64, st.segments, 12));
    /* the benchmark's seal and compaction rows/s come from these: every row sealed once, the
     * two merged hours' rows written once more, and time counted for both */
    cr_assert(eq(u64, st.rows_sealed, n));
    cr_assert(eq(u64, st.rows_compacted, 2 * n / 3));
    cr_assert(st.seal_ns > 0);
    cr_assert(st.compact_ns > 0);
    tally after = scan_all(db, n);
    cr_assert(eq(u64, after.rows, before.rows));
    cr_assert(eq(u64, after.bytes, before.bytes));
    cr_assert(not(after.twice));
    /* a late minute of a merged hour merges into it again */
    eng_flow late = flow((uint32_t)n, H0 + 5 * MIN);
    cr_assert(eq(int, eng_db_append(db, H0 + 5 * MIN, &late, 1), 0));
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 1));
    cr_assert(eq(int, eng_db_compact(db, H0 + 2 * HOUR + 61000), 1));
    cr_assert(eq(sz, count_files('h'), 2));
    tally again = scan_all(db, n + 1);
    cr_assert(eq(u64, again.rows, before.rows + 1));
    free(before.seen);
    free(after.seen);
    free(again.seen);
    cr_assert(eq(int, eng_db_close(db), 0));

    /* reopened: the same */
    db = open_manual();
    tally re = scan_all(db, n + 1);
    cr_assert(eq(u64, re.rows, before.rows + 1));
    cr_assert(not(re.twice));
    free(re.seen);
    /* a day later the hours become a day segment */
    cr_assert(eq(int, eng_db_compact(db, H0 + 48 * HOUR), 2), "hour 3, then the day");
    cr_assert(eq(sz, count_files('d'), 1));
    cr_assert(eq(sz, count_files('h') + count_files('m'), 0));
    tally day = scan_all(db, n + 1);
    cr_assert(eq(u64, day.rows, before.rows + 1));
    cr_assert(eq(u64, day.bytes, before.bytes + late.bytes));
    free(day.seen);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(compact, an_hour_with_an_open_minute_waits)
{
    eng_db *db = open_manual();
    size_t n = fill(db, 1, 50);
    eng_flow f = flow((uint32_t)n, H0 + 30 * MIN);
    cr_assert(eq(int, eng_db_append(db, H0 + 30 * MIN, &f, 1), 0)); /* left open */
    cr_assert(eq(int, eng_db_compact(db, H0 + 5 * HOUR), 0));
    cr_assert(eq(sz, count_files('h'), 0));
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 1));
    cr_assert(eq(int, eng_db_compact(db, H0 + 5 * HOUR), 1));
    tally t = scan_all(db, n + 1);
    cr_assert(eq(u64, t.rows, n + 1));
    free(t.seen);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* Scans in a loop while merges happen: each sees every flow exactly once. */
typedef struct scanner {
    eng_db *db;
    size_t n;
    atomic_bool stop;
    atomic_int bad, runs;
} scanner;

static void *scan_loop(void *arg)
{
    scanner *s = arg;
    while (!atomic_load(&s->stop)) {
        tally t = {.nids = s->n};
        t.seen = calloc(s->n, 1);
        int rc = eng_db_scan(s->db, 0, INT64_MAX,
                             ENG_COLMASK(ENG_COL_BYTES) | ENG_COLMASK(ENG_COL_IN_IF), tally_cb, &t);
        if (rc != 0 || t.rows != s->n || t.twice)
            atomic_fetch_add(&s->bad, 1);
        atomic_fetch_add(&s->runs, 1);
        free(t.seen);
    }
    return NULL;
}

static int ids_cb(void *arg, const eng_flow *rows, size_t n)
{
    tally *t = arg;
    for (size_t i = 0; i < n; i++) {
        t->rows++;
        if (t->seen[rows[i].in_if]++)
            t->twice = true;
    }
    return 0;
}

Test(compact, scans_during_merges_see_every_flow_once)
{
    eng_db *db = open_manual();
    size_t n = fill(db, 6, 300);
    scanner s = {.db = db, .n = n};
    (void)ids_cb;
    pthread_t th;
    cr_assert(eq(int, pthread_create(&th, NULL, scan_loop, &s), 0));
    while (atomic_load(&s.runs) < 2)
        usleep(1000);
    cr_assert(eq(int, eng_db_compact(db, H0 + 6 * HOUR + 2 * MIN), 6));
    int runs = atomic_load(&s.runs);
    while (atomic_load(&s.runs) < runs + 2)
        usleep(1000);
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);
    cr_assert(eq(int, atomic_load(&s.bad), 0), "%d of %d scans were wrong", atomic_load(&s.bad),
              atomic_load(&s.runs));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* Kills the merge after step `step` in a child process, then reopens and counts. */
static void crash_at(int step)
{
    eng_db *db = open_manual();
    size_t n = fill(db, 2, 120);
    tally before = scan_all(db, n);
    cr_assert(eq(int, eng_db_close(db), 0));

    pid_t pid = fork();
    cr_assert(ge(int, pid, 0));
    if (pid == 0) {
        char v[8];
        snprintf(v, sizeof v, "%d", step);
        setenv("NS2FLOWS_COMPACT_CRASH", v, 1);
        eng_db *c = NULL;
        char err[256];
        eng_db_opts o = {.no_sealer_thread = true};
        if (eng_db_open(tmpdir, &o, &c, err, sizeof err) < 0)
            _exit(2);
        eng_db_compact(c, H0 + 3 * HOUR);
        _exit(0); /* not reached: the crash point exits with 86 */
    }
    int status = 0;
    cr_assert(eq(int, waitpid(pid, &status, 0), pid));
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    cr_assert(eq(int, code, 86), "step %d: the child crashed there", step);

    /* a read-only reader first (ns2flows-query beside a daemon): the same flows, nothing
     * deleted */
    size_t files = count_files('m') + count_files('h');
    eng_db *ro = NULL;
    char err[256];
    eng_db_opts roo = {.read_only = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &roo, &ro, err, sizeof err), 0), "%s", err);
    tally rt = scan_all(ro, n);
    cr_assert(eq(u64, rt.rows, before.rows), "step %d, read-only", step);
    cr_assert(not(rt.twice), "step %d, read-only", step);
    free(rt.seen);
    cr_assert(eq(int, eng_db_close(ro), 0));
    cr_assert(eq(sz, count_files('m') + count_files('h'), files));

    db = open_manual();
    tally after = scan_all(db, n);
    cr_assert(eq(u64, after.rows, before.rows), "step %d", step);
    cr_assert(eq(u64, after.bytes, before.bytes), "step %d", step);
    cr_assert(not(after.twice), "step %d: a flow counted twice", step);
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(u8, after.seen[i], 1), "step %d: flow %zu", step, i);
    /* no leftover tmp files, and the merge finishes on the next pass */
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        cr_assert(strstr(de->d_name, ".tmp") == NULL, "step %d: %s left", step, de->d_name);
    closedir(d);
    eng_db_compact(db, H0 + 3 * HOUR);
    cr_assert(eq(sz, count_files('m'), 0), "step %d", step);
    cr_assert(eq(sz, count_files('h'), 2), "step %d", step);
    tally fin = scan_all(db, n);
    cr_assert(eq(u64, fin.rows, before.rows), "step %d", step);
    cr_assert(not(fin.twice));
    cr_assert(eq(int, eng_db_close(db), 0));
    free(before.seen);
    free(after.seen);
    free(fin.seen);
}

Test(compact, crash_while_writing_the_merged_segment)
{
    crash_at(1);
}

Test(compact, crash_after_publishing_before_the_swap)
{
    crash_at(2);
}

Test(compact, crash_after_the_swap_before_deleting_inputs)
{
    crash_at(3);
}

Test(compact, crash_after_deleting_one_input)
{
    crash_at(5);
}

Test(compact, crash_after_deleting_every_input)
{
    crash_at(4);
}

/* A segment named for a far day (the name is all the catalog knows of its span) must not
 * overflow the compactor's arithmetic on minutes (UBSan aborts the asan build on it): such a
 * name is not a segment of this store. */
Test(compact, a_far_future_day_segment_name_is_not_taken_in)
{
    char path[300];
    eng_flow f = flow(1, H0);
    snprintf(path, sizeof path, "%s/d%lld-7.seg", tmpdir, 1ll << 40);
    cr_assert(eq(int, eng_seg_write(path, &f, 1), 0));
    eng_db *db = open_manual();
    fill(db, 1, 10);
    cr_assert(eng_db_compact(db, H0 + 2 * HOUR) >= 0);
    tally t = scan_all(db, 200);
    cr_assert(eq(u64, t.rows, 100), "only the rows of the store's own segments");
    free(t.seen);
    cr_assert(eq(int, eng_db_close(db), 0));
}
