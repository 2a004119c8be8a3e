/* Tests of the catalog file (engine/db.c, state/catalog.bin): the daemon writes its catalog
 * (segment names, footer totals, file identities) so that a read-only reader (ns2flows-query)
 * takes a segment's totals from it instead of opening the segment. It is a cache: every test
 * here changes the folder behind the writer's back (a segment replaced, rewritten in place,
 * deleted, added; the file damaged or stale) and checks that a reader's summary still equals
 * the totals computed from the rows that are really there. */
#include "engine/query.h"
#include "engine/store.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 2024-01-02T03:04:00Z, a minute boundary */
#define M0  1704164640000LL
#define MIN 60000LL
#define ALL INT64_MIN / 4, INT64_MAX / 4

TEST_SCRATCH_SUITE(catalog, "catalog");

static eng_db *open_db(bool read_only)
{
    eng_db_opts o = {
        .seal_delay_s = 2, .no_sealer_thread = true, .no_wal = true, .read_only = read_only};
    return test_open_db(tmpdir, &o);
}

/* Row i of minute m: its own counters and times, so that every segment's totals differ. */
static eng_flow row(int m, uint32_t i)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = M0 + m * MIN + 1000 + (int64_t)(i % 7) * 100;
    f.last_ms = f.first_ms + 2000 + (int64_t)(i % 5) * 10;
    f.packets = 1u + i % 11u + (uint64_t)m;
    f.bytes = 64u * f.packets + i;
    ns_addr_from_v4(&f.src, 0x0a000000u | i);
    ns_addr_from_v4(&f.dst, 0xc0a80000u | (uint32_t)m);
    f.proto = 6;
    f.sampling = 1;
    return f;
}

static void rows_of(int m, size_t n, eng_flow *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = row(m, (uint32_t)i);
}

/* The totals of rows, added into t (the reference every summary is compared with). */
static void add_rows(qry_totals *t, const eng_flow *rows, size_t n, int64_t from, int64_t to)
{
    for (size_t i = 0; i < n; i++) {
        const eng_flow *r = &rows[i];
        if (r->last_ms < from || r->first_ms > to)
            continue;
        if (!t->flows || r->first_ms < t->first_ms)
            t->first_ms = r->first_ms;
        if (!t->flows || r->last_ms > t->last_ms)
            t->last_ms = r->last_ms;
        t->flows += eng_flow_count(r);
        t->packets += r->packets;
        t->bytes += r->bytes;
    }
}

#define NMIN 4
static const size_t nrows[NMIN] = {300, 120, 77, 500};

/* A store of NMIN sealed minutes (minute m holds nrows[m] rows) written by a daemon-mode
 * opener, which leaves its catalog file at close; the reference totals of everything in t. */
static void make_store(qry_totals *t)
{
    eng_db *db = open_db(false);
    eng_flow rows[500];
    memset(t, 0, sizeof *t);
    for (int m = 0; m < NMIN; m++) {
        rows_of(m, nrows[m], rows);
        cr_assert(eq(int, eng_db_append(db, M0 + m * MIN + 30000, rows, nrows[m]), 0));
        add_rows(t, rows, nrows[m], ALL);
    }
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 10 * MIN, true), NMIN));
    cr_assert(eq(int, eng_db_close(db), 0));
    struct stat st;
    cr_assert(eq(int, stat(tpath("state/catalog.bin"), &st), 0), "the catalog file is written");
}

/* The segment file of minute m (there is one per minute). */
static const char *seg_of(int m)
{
    static char name[2][300];
    static int k;
    char *out = name[k++ % 2];
    char prefix[32];
    snprintf(prefix, sizeof prefix, "m%lld-", (long long)((M0 + m * MIN) / MIN));
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    out[0] = 0;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            snprintf(out, 300, "%s", de->d_name);
    closedir(d);
    cr_assert(out[0] != 0, "minute %d has a segment", m);
    return out;
}

static bool same(const qry_totals *a, const qry_totals *b)
{
    return a->flows == b->flows && a->packets == b->packets && a->bytes == b->bytes &&
           a->first_ms == b->first_ms && a->last_ms == b->last_ms;
}

/* A reader's summary over [from, to] equals want. */
static void expect_summary(eng_db *db, int64_t from, int64_t to, const qry_totals *want,
                           const char *what)
{
    qry_totals got;
    cr_assert(eq(int, qry_summary(db, from, to, NULL, &got), 0), "%s", what);
    cr_expect(same(&got, want),
              "%s: flows %llu packets %llu bytes %llu first %lld last %lld, want %llu %llu %llu "
              "%lld %lld",
              what, (unsigned long long)got.flows, (unsigned long long)got.packets,
              (unsigned long long)got.bytes, (long long)got.first_ms, (long long)got.last_ms,
              (unsigned long long)want->flows, (unsigned long long)want->packets,
              (unsigned long long)want->bytes, (long long)want->first_ms, (long long)want->last_ms);
}

static void expect_reader_summary(int64_t from, int64_t to, const qry_totals *want,
                                  const char *what)
{
    eng_db *ro = open_db(true);
    expect_summary(ro, from, to, want, what);
    cr_assert(eq(int, eng_db_close(ro), 0));
}

/* Rewrites the segment of minute m with rows of minute `as` (other times, other totals): as a
 * new file renamed over it (a new inode), or in place (the same inode). */
static void replace_segment(int m, int as, size_t n, bool in_place)
{
    eng_flow *rows = calloc(n, sizeof *rows);
    cr_assert(rows != NULL);
    rows_of(as, n, rows);
    const char *name = seg_of(m);
    if (in_place) {
        cr_assert(eq(int, eng_seg_write(tpath("scratch.bin"), rows, n), 0));
        FILE *in = fopen(tpath("scratch.bin"), "rb"), *out = fopen(tpath(name), "r+b");
        cr_assert(in && out);
        cr_assert(eq(int, ftruncate(fileno(out), 0), 0));
        char buf[4096];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, in)) > 0)
            cr_assert(eq(sz, fwrite(buf, 1, k, out), k));
        fclose(in);
        fclose(out);
        unlink(tpath("scratch.bin"));
    } else {
        cr_assert(eq(int, eng_seg_write(tpath("scratch.bin"), rows, n), 0));
        cr_assert(eq(int, rename(tpath("scratch.bin"), tpath(name)), 0));
    }
    free(rows);
}

/* The reference after minute m's rows became n rows of minute `as`. */
static qry_totals totals_with(int m, int as, size_t n, int64_t from, int64_t to)
{
    qry_totals t = {0};
    eng_flow rows[500];
    for (int k = 0; k < NMIN; k++) {
        if (k == m) {
            rows_of(as, n, rows);
            add_rows(&t, rows, n, from, to);
        } else {
            rows_of(k, nrows[k], rows);
            add_rows(&t, rows, nrows[k], from, to);
        }
    }
    return t;
}

Test(catalog, a_reader_answers_from_it_as_from_the_footers)
{
    qry_totals want;
    make_store(&want);
    expect_reader_summary(ALL, &want, "with the catalog file");
    /* a window holding minute 1 and part of minute 2 */
    qry_totals part = totals_with(-1, 0, 0, M0 + MIN, M0 + 2 * MIN + 1300);
    expect_reader_summary(M0 + MIN, M0 + 2 * MIN + 1300, &part, "a window, with the file");
    cr_assert(eq(int, unlink(tpath("state/catalog.bin")), 0));
    expect_reader_summary(ALL, &want, "without it");
    expect_reader_summary(M0 + MIN, M0 + 2 * MIN + 1300, &part, "a window, without it");
}

Test(catalog, is_what_a_reader_uses_while_files_keep_their_identity)
{
    /* White box: the reader takes the totals from the catalog file, not from the segment,
     * while the file is the one the catalog describes (same inode, size, modification time).
     * Shown by damaging a footer in place and restoring its modification time: the reader
     * still answers the old totals, without opening the file. Once the time differs, it opens
     * the file, finds the damage and leaves the segment out. */
    qry_totals want;
    make_store(&want);
    const char *name = seg_of(1);
    struct stat st;
    cr_assert(eq(int, stat(tpath(name), &st), 0));
    int fd = open(tpath(name), O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert(eq(sz, (size_t)pwrite(fd, "XXXXXXXX", 8, st.st_size - 8), 8));
    close(fd);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    cr_assert(eq(int, utimensat(AT_FDCWD, tpath(name), times, 0), 0));
    expect_reader_summary(ALL, &want, "identity kept: the catalog's totals");
    times[1].tv_nsec = (times[1].tv_nsec + 1) % 1000000000;
    cr_assert(eq(int, utimensat(AT_FDCWD, tpath(name), times, 0), 0));
    qry_totals rest = totals_with(1, 1, 0, ALL);
    expect_reader_summary(ALL, &rest, "identity changed: the file is read, and is damaged");
}

Test(catalog, a_segment_replaced_by_rename_is_read_again)
{
    qry_totals want;
    make_store(&want);
    /* minute 1's file now holds 200 rows with minute 3's times (outside minute 1) */
    replace_segment(1, 3, 200, false);
    qry_totals all = totals_with(1, 3, 200, ALL);
    cr_assert(not(same(&all, &want)));
    expect_reader_summary(ALL, &all, "replaced");
    /* a window that only the new file's times reach (the catalog's times for the name are
     * minute 1's): the segment must not be pruned by stale times */
    int64_t from = M0 + 3 * MIN, to = M0 + 3 * MIN + 1100;
    qry_totals win = totals_with(1, 3, 200, from, to);
    cr_assert(gt(u64, win.flows, 0));
    expect_reader_summary(from, to, &win, "replaced, a window of its new times");
}

Test(catalog, a_segment_rewritten_in_place_is_read_again)
{
    qry_totals want;
    make_store(&want);
    replace_segment(2, 0, 33, true); /* the same inode, another size */
    qry_totals all = totals_with(2, 0, 33, ALL);
    expect_reader_summary(ALL, &all, "rewritten in place");
}

Test(catalog, a_deleted_segment_is_not_counted)
{
    qry_totals want;
    make_store(&want);
    cr_assert(eq(int, unlink(tpath(seg_of(3))), 0));
    qry_totals rest = totals_with(3, 3, 0, ALL);
    expect_reader_summary(ALL, &rest, "minute 3 deleted");
}

Test(catalog, a_segment_it_does_not_list_is_read)
{
    qry_totals want;
    make_store(&want);
    eng_flow rows[90];
    rows_of(7, 90, rows);
    cr_assert(eq(int, eng_seg_write(tpath("m99999999-900.seg"), rows, 90), 0));
    add_rows(&want, rows, 90, ALL);
    expect_reader_summary(ALL, &want, "a segment added after the catalog file");
}

Test(catalog, a_damaged_or_foreign_catalog_file_is_ignored)
{
    qry_totals want;
    make_store(&want);
    const char *cat = tpath("state/catalog.bin");
    struct stat st;
    cr_assert(eq(int, stat(cat, &st), 0));
    /* one flipped byte in each of the header, an entry, the checksum; then cut short */
    off_t offs[] = {3, 16 + 64 + 8 * 4 + 1, st.st_size - 1};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        int fd = open(cat, O_RDWR);
        unsigned char b;
        cr_assert(eq(sz, (size_t)pread(fd, &b, 1, offs[i]), 1));
        b ^= 0x40;
        cr_assert(eq(sz, (size_t)pwrite(fd, &b, 1, offs[i]), 1));
        expect_reader_summary(ALL, &want, "a flipped byte");
        b ^= 0x40;
        cr_assert(eq(sz, (size_t)pwrite(fd, &b, 1, offs[i]), 1));
        close(fd);
    }
    cr_assert(eq(int, truncate(cat, st.st_size / 2), 0));
    expect_reader_summary(ALL, &want, "cut short");
    FILE *f = fopen(cat, "wb");
    cr_assert(f != NULL);
    fputs("not a catalog", f);
    fclose(f);
    expect_reader_summary(ALL, &want, "foreign");
}

Test(catalog, a_stale_catalog_file_from_an_older_run_is_harmless)
{
    qry_totals want;
    make_store(&want);
    /* keep this catalog file, let the store change (minute 0 deleted, minute 5 added) and
     * put the old file back */
    cr_assert(eq(int, rename(tpath("state/catalog.bin"), tpath("old.bin")), 0));
    eng_db *db = open_db(false);
    eng_flow rows[500];
    rows_of(5, 40, rows);
    cr_assert(eq(int, eng_db_append(db, M0 + 5 * MIN + 30000, rows, 40), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 10 * MIN, true), 1));
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(int, unlink(tpath(seg_of(0))), 0));
    cr_assert(eq(int, rename(tpath("old.bin"), tpath("state/catalog.bin")), 0));
    qry_totals now = totals_with(0, 0, 0, ALL);
    add_rows(&now, rows, 40, ALL);
    expect_reader_summary(ALL, &now, "stale catalog file");
}

Test(catalog, a_reader_open_before_a_replacement_reads_the_new_file)
{
    qry_totals want;
    make_store(&want);
    eng_db *ro = open_db(true);
    expect_summary(ro, ALL, &want, "before");
    replace_segment(0, 0, 10, false);
    qry_totals now = totals_with(0, 0, 10, ALL);
    expect_summary(ro, ALL, &now, "replaced while the reader was open");
    cr_assert(eq(int, eng_db_close(ro), 0));
}

Test(catalog, the_sealer_thread_keeps_it_current, .timeout = 30)
{
    /* a daemon-mode opener with its sealer thread: a minute it seals reaches the catalog file
     * within a few ticks (shown as above: a footer damaged behind an unchanged identity is
     * not seen by a reader that takes the catalog's totals) */
    eng_db *db = NULL;
    char err[512] = "";
    eng_db_opts o = {.seal_delay_s = 0, .no_wal = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    eng_flow rows[64];
    rows_of(0, 64, rows);
    cr_assert(eq(int, eng_db_append(db, M0 + 30000, rows, 64), 0)); /* long over: sealed */
    qry_totals want = {0};
    add_rows(&want, rows, 64, ALL);
    bool listed = false;
    for (int tries = 0; tries < 200 && !listed; tries++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uint8_t *buf;
        size_t len;
        if (eng_db_state_read(db, "catalog.bin", &buf, &len) == 0) {
            listed = len >= 16 && buf[12] == 1; /* one entry */
            free(buf);
        }
    }
    cr_assert(listed, "the sealed minute reached the catalog file");
    const char *name = seg_of(0);
    struct stat st;
    cr_assert(eq(int, stat(tpath(name), &st), 0));
    int fd = open(tpath(name), O_WRONLY);
    cr_assert(eq(sz, (size_t)pwrite(fd, "XXXXXXXX", 8, st.st_size - 8), 8));
    close(fd);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    cr_assert(eq(int, utimensat(AT_FDCWD, tpath(name), times, 0), 0));
    expect_reader_summary(ALL, &want, "from the catalog file the sealer thread wrote");
    cr_assert(eq(int, eng_db_close(db), 0));
}
