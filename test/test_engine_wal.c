/* Tests of the write-ahead log (engine/wal.c, and its use by engine/db.c): the record format
 * round trip, replay after a crash (a forked child that appends, fsyncs and _exits without
 * closing), a torn tail and a corrupt record in the middle cut at the last good record,
 * replay idempotence (a crash during replay, a WAL whose segment was already published), and
 * read-only opens leaving the WAL alone. */
#include "engine/store.h"
#include "engine/wal_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#define M0  1704164640000LL /* a minute boundary */
#define MIN 60000LL

TEST_SCRATCH_SUITE(wal, "wal");

/* A row whose every field depends on id, so a field decoded from the wrong place shows. */
static eng_flow flow(uint32_t id, int64_t recv_ms)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = recv_ms - 5000 - id % 97;
    f.last_ms = recv_ms - 1000;
    f.packets = id + 1u;
    f.bytes = 0x100000000ull + 100u * (id + 1u);
    for (int i = 0; i < 16; i++) {
        f.exporter.b[i] = (uint8_t)(id * 3 + (uint32_t)i);
        f.src.b[i] = (uint8_t)(id * 5 + (uint32_t)i);
        f.dst.b[i] = (uint8_t)(id * 7 + (uint32_t)i);
        f.nexthop.b[i] = (uint8_t)(id * 11 + (uint32_t)i);
    }
    f.src_as = id * 13u;
    f.dst_as = id * 17u + 1;
    f.in_if = id; /* the id the tally reads back */
    f.out_if = id ^ 0xdeadbeefu;
    f.sampling = 1 + id % 3;
    f.source_id = id * 19u;
    f.src_port = (uint16_t)(1024 + id);
    f.dst_port = (uint16_t)(443 + id % 7);
    f.proto = (uint8_t)(id % 2 ? 6 : 17);
    f.tcp_flags = (uint8_t)id;
    f.tos = (uint8_t)(id >> 3);
    f.src_mask = (uint8_t)(id % 33);
    f.dst_mask = (uint8_t)(id % 129);
    f.vlan = (uint16_t)(id % 4095);
    f.direction = (uint8_t)(id % 3);
    f.flow_type = 9;
    return f;
}

/* Bytes of one WAL row made by flow(): all of them take the same form (times near the receive
 * time, bytes past 32 bits, addresses not IPv4), so the files' sizes are known in advance. */
static uint64_t wal_row_bytes(void)
{
    eng_flow f = flow(7, M0);
    uint8_t rec[ENG_WAL_REC_HDR + ENG_WAL_ROW2_MAX];
    return eng__wal_encode(rec, M0, &f, 1) - ENG_WAL_REC_HDR;
}
#define WROW wal_row_bytes()

static eng_db *open_db(bool read_only)
{
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true, .read_only = read_only};
    return test_open_db(tmpdir, &o);
}

static void append_ids(eng_db *db, int64_t recv_ms, uint32_t id0, size_t n)
{
    eng_flow *rows = calloc(n, sizeof *rows);
    cr_assert(rows != NULL);
    for (size_t i = 0; i < n; i++)
        rows[i] = flow(id0 + (uint32_t)i, recv_ms);
    cr_assert(eq(int, eng_db_append(db, recv_ms, rows, n), 0));
    free(rows);
}

/* A process that appends batches (recv time, first id, count), fsyncs the WAL and dies without
 * closing: what kill -9 after a WAL sync leaves. */
typedef struct batch {
    int64_t recv_ms;
    uint32_t id0;
    size_t n;
} batch;

static void crash_after(const batch *b, size_t nb)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        eng_db_opts o = {.no_sealer_thread = true, .wal_sync_ms = 60000};
        eng_db *db = NULL;
        char err[256];
        if (eng_db_open(tmpdir, &o, &db, err, sizeof err) < 0)
            _exit(3);
        for (size_t i = 0; i < nb; i++) {
            eng_flow *rows = calloc(b[i].n, sizeof *rows);
            for (size_t k = 0; k < b[i].n; k++)
                rows[k] = flow(b[i].id0 + (uint32_t)k, b[i].recv_ms);
            if (eng_db_append(db, b[i].recv_ms, rows, b[i].n) < 0)
                _exit(4);
            free(rows);
        }
        _exit(eng_db_wal_sync(db) == 0 ? 0 : 5);
    }
    int st;
    cr_assert(eq(int, waitpid(pid, &st, 0), pid));
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    cr_assert(ok, "child status %d", st);
}

/* Each id seen, and that it came back with every field intact. */
typedef struct tally {
    uint32_t cap;
    uint8_t *seen;
    uint64_t rows, mismatched;
} tally;

static int tally_cb(void *arg, const eng_flow *rows, size_t n)
{
    tally *t = arg;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = rows[i].in_if;
        cr_assert(id < t->cap);
        t->seen[id]++;
        t->rows++;
        /* recv time is not stored; the flow's last_ms is recv - 1000 */
        eng_flow want = flow(id, rows[i].last_ms + 1000);
        if (memcmp(&want, &rows[i], sizeof want) != 0)
            t->mismatched++;
    }
    return 0;
}

static tally scan_all(eng_db *db, uint32_t cap)
{
    tally t = {.cap = cap, .seen = calloc(cap, 1)};
    cr_assert(t.seen != NULL);
    cr_assert(eq(int, eng_db_scan(db, INT64_MIN, INT64_MAX, ENG_COLS_ALL, tally_cb, &t), 0));
    return t;
}

/* Ids [lo, hi) seen exactly once, nothing else, every field as written. */
static void assert_exactly(eng_db *db, uint32_t lo, uint32_t hi)
{
    tally t = scan_all(db, 4096);
    for (uint32_t id = 0; id < t.cap; id++)
        cr_assert(eq(int, t.seen[id], id >= lo && id < hi ? 1 : 0), "id %u", id);
    cr_assert(eq(u64, t.mismatched, 0));
    free(t.seen);
}

static int count_files(const char *sub, const char *suffix, char *first, size_t cap)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > strlen(suffix) && strcmp(de->d_name + l - strlen(suffix), suffix) == 0) {
            if (n == 0 && first)
                snprintf(first, cap, "%.200s/%.50s", dir, de->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert(eq(int, stat(path, &st), 0), "%s", path);
    return st.st_size;
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[8192];
    size_t n;
    cr_assert(a && b);
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        cr_assert(eq(sz, fwrite(buf, 1, n, b), n));
    fclose(a);
    cr_assert(eq(int, fclose(b), 0));
}

/* ------------------------------------------------------------------------------------------ */

static int collect_cb(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    tally *t = arg;
    (void)recv_ms;
    return tally_cb(t, rows, n);
}

Test(wal, records_round_trip_every_field)
{
    char path[256];
    int fd;
    snprintf(path, sizeof path, "%s/m5-7.wal", tmpdir);
    cr_assert(eq(int, eng__wal_create(path, 5, 7, &fd), 0));
    uint64_t off = ENG_WAL_HDR;
    size_t sizes[] = {1, 3, 5000, 2};
    uint32_t id = 0;
    for (size_t k = 0; k < 4; k++) {
        eng_flow rows[5000];
        for (size_t i = 0; i < sizes[k]; i++)
            rows[i] = flow(id + (uint32_t)i, M0 + (int64_t)k);
        size_t len = eng__wal_rec_size(sizes[k]);
        uint8_t *rec = malloc(len);
        len = eng__wal_encode(rec, M0 + (int64_t)k, rows, sizes[k]);
        cr_assert(eq(int, eng__wal_write(fd, off, rec, len), 0));
        off += len;
        id += (uint32_t)sizes[k];
        free(rec);
    }
    close(fd);
    cr_assert(eq(u64, (uint64_t)file_size(path), off));
    cr_assert(eq(u64, off, ENG_WAL_HDR + 4 * ENG_WAL_REC_HDR + 5006ull * WROW));
    /* the rows carry recv - 1000 as last_ms with recv = M0 + k: tally_cb rebuilds them from it */
    tally t = {.cap = 8192, .seen = calloc(8192, 1)};
    eng__wal_scan sc;
    cr_assert(eq(int, eng__wal_read(path, collect_cb, &t, &sc), 0));
    cr_assert(eq(int, sc.tail_rc, 0));
    cr_assert(eq(i64, sc.minute, 5));
    cr_assert(eq(u64, sc.seq, 7));
    cr_assert(eq(u64, sc.records, 4));
    cr_assert(eq(u64, sc.rows, 5006));
    cr_assert(eq(u64, sc.good_len, off));
    cr_assert(eq(u64, t.rows, 5006));
    cr_assert(eq(u64, t.mismatched, 0));
    for (uint32_t i = 0; i < 5006; i++)
        cr_assert(eq(int, t.seen[i], 1));
    free(t.seen);
}

Test(wal, bad_file_header_is_refused)
{
    char path[256];
    snprintf(path, sizeof path, "%s/m1-1.wal", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs("NS2FWAX-not-a-wal-header-at-all-", f);
    fclose(f);
    eng__wal_scan sc;
    cr_assert(eq(int, eng__wal_read(path, NULL, NULL, &sc), NS_E_MAGIC));
    f = fopen(path, "wb");
    fputs("NS2F", f);
    fclose(f);
    cr_assert(eq(int, eng__wal_read(path, NULL, NULL, &sc), NS_E_TRUNC));
}

Test(wal, a_crash_after_sync_loses_nothing_and_doubles_nothing)
{
    batch b[] = {{M0 + 1000, 0, 100}, {M0 + MIN + 5, 100, 50}, {M0 + 2000, 150, 25}};
    crash_after(b, 3);
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 2)); /* one a minute buffer */
    cr_assert(eq(int, count_files(".", ".seg", NULL, 0), 0));
    eng_db *db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 175));
    cr_assert(eq(u64, st.open_rows, 175));
    cr_assert(eq(u64, st.wal_errors, 0));
    cr_assert(st.wal_bytes > 175ull * WROW);
    assert_exactly(db, 0, 175);
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 2));
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_bytes, 0));
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0), "sealed: the WAL is trimmed");
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(false);
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 0));
    assert_exactly(db, 0, 175);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, replay_is_idempotent_across_repeated_crashes)
{
    batch b[] = {{M0 + 1000, 0, 300}};
    crash_after(b, 1);
    /* two more lives that replay and die before sealing, the second adding rows */
    batch none[] = {{M0 + 1000, 0, 0}};
    crash_after(none, 0);
    batch more[] = {{M0 + 3000, 300, 20}};
    crash_after(more, 1);
    eng_db *db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 320));
    assert_exactly(db, 0, 320);
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(false);
    assert_exactly(db, 0, 320);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, a_wal_whose_segment_was_published_is_not_replayed)
{
    char wal[256], saved[300];
    eng_db *db = open_db(false);
    append_ids(db, M0 + 1000, 0, 40);
    cr_assert(eq(int, eng_db_wal_sync(db), 0));
    cr_assert(eq(int, count_files("wal", ".wal", wal, sizeof wal), 1));
    snprintf(saved, sizeof saved, "%s/saved", tmpdir);
    copy_file(wal, saved);
    cr_assert(eq(int, eng_db_close(db), 0)); /* seals, then deletes the WAL */
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0));
    /* as if the crash hit between the segment's rename and the WAL's unlink */
    cr_assert(eq(int, rename(saved, wal), 0));
    db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 0));
    cr_assert(eq(u64, st.open_rows, 0));
    assert_exactly(db, 0, 40);
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* The same crash window, but the compactor merged the minute's segment into an hour segment
 * (and deleted it) before the crash: the WAL's rows are in the hour segment, not replayed. */
Test(wal, a_wal_whose_segment_was_merged_is_not_replayed)
{
    char wal[256], saved[300];
    eng_db *db = open_db(false);
    append_ids(db, M0 + 1000, 0, 40);
    append_ids(db, M0 + MIN + 1000, 40, 10); /* a second minute of the hour: two to merge */
    cr_assert(eq(int, eng_db_wal_sync(db), 0));
    cr_assert(eq(int, count_files("wal", ".wal", wal, sizeof wal), 2));
    snprintf(saved, sizeof saved, "%s/saved", tmpdir);
    copy_file(wal, saved);
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 2));
    cr_assert(eq(int, eng_db_compact(db, M0 + 1000 * MIN), 1));
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0));
    cr_assert(eq(int, rename(saved, wal), 0));
    db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 0));
    cr_assert(eq(u64, st.open_rows, 0));
    assert_exactly(db, 0, 50);
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* Three records of 10, 20 and 30 rows in one WAL file; returns its path. */
static void three_records(char *wal, size_t cap)
{
    batch b[] = {{M0 + 1000, 0, 10}, {M0 + 2000, 10, 20}, {M0 + 3000, 30, 30}};
    crash_after(b, 3);
    cr_assert(eq(int, count_files("wal", ".wal", wal, cap), 1));
    cr_assert(eq(u64, (uint64_t)file_size(wal), ENG_WAL_HDR + 3 * ENG_WAL_REC_HDR + 60ull * WROW));
}

Test(wal, torn_tail_is_cut_at_the_last_good_record)
{
    char wal[256];
    three_records(wal, sizeof wal);
    off_t good = (off_t)(ENG_WAL_HDR + 2 * ENG_WAL_REC_HDR + 30ull * WROW);
    cr_assert(eq(int, truncate(wal, file_size(wal) - 7), 0)); /* the last write torn */
    eng_db *db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 30));
    cr_assert(eq(u64, st.wal_errors, 1));
    cr_assert(eq(i64, (int64_t)file_size(wal), (int64_t)good), "cut back to whole records");
    assert_exactly(db, 0, 30);
    /* appends after the cut land on a clean end: a second crash replays them too */
    append_ids(db, M0 + 4000, 100, 5);
    cr_assert(eq(int, eng_db_wal_sync(db), 0));
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 1), "same minute, same WAL file");
    eng__wal_scan sc;
    cr_assert(eq(int, eng__wal_read(wal, NULL, NULL, &sc), 0));
    cr_assert(eq(int, sc.tail_rc, 0));
    cr_assert(eq(u64, sc.rows, 35));
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(false);
    tally t = scan_all(db, 4096);
    cr_assert(eq(u64, t.rows, 35));
    for (uint32_t id = 0; id < 30; id++)
        cr_assert(eq(int, t.seen[id], 1));
    for (uint32_t id = 100; id < 105; id++)
        cr_assert(eq(int, t.seen[id], 1));
    free(t.seen);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, a_corrupt_record_in_the_middle_ends_the_replay_there)
{
    char wal[256];
    three_records(wal, sizeof wal);
    /* one byte inside the second record's rows */
    off_t at = (off_t)(ENG_WAL_HDR + ENG_WAL_REC_HDR + 10ull * WROW + ENG_WAL_REC_HDR + 77);
    int fd = open(wal, O_RDWR);
    uint8_t c;
    cr_assert(eq(sz, (size_t)pread(fd, &c, 1, at), 1));
    c ^= 0x20;
    cr_assert(eq(sz, (size_t)pwrite(fd, &c, 1, at), 1));
    close(fd);
    eng_db *db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 10));
    cr_assert(eq(u64, st.wal_errors, 1));
    assert_exactly(db, 0, 10);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, a_corrupt_record_length_is_not_trusted)
{
    char wal[256];
    three_records(wal, sizeof wal);
    /* the first record's row count says 2^31: never allocated, never read */
    int fd = open(wal, O_RDWR);
    uint8_t big[4] = {0, 0, 0, 0x80};
    cr_assert(eq(sz, (size_t)pwrite(fd, big, 4, ENG_WAL_HDR + 4), 4));
    close(fd);
    eng_db *db = open_db(false);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 0));
    cr_assert(eq(u64, st.wal_errors, 1));
    assert_exactly(db, 0, 0);
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0), "an empty WAL is removed");
}

Test(wal, read_only_open_leaves_the_wal_alone)
{
    char wal[256];
    three_records(wal, sizeof wal);
    cr_assert(eq(int, truncate(wal, file_size(wal) - 3), 0));
    off_t size = file_size(wal);
    eng_db *db = open_db(true);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_replayed_rows, 0));
    assert_exactly(db, 0, 0); /* a reader sees sealed segments only */
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(i64, (int64_t)file_size(wal), (int64_t)size), "not cut, not deleted");
    db = open_db(false);
    assert_exactly(db, 0, 30);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, no_wal_option_writes_none)
{
    eng_db_opts o = {.no_sealer_thread = true, .no_wal = true};
    eng_db *db = NULL;
    char err[256];
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0));
    append_ids(db, M0 + 1000, 0, 10);
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 0));
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_bytes, 0));
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, budget_counts_the_wal)
{
    eng_db *db = open_db(false);
    append_ids(db, M0 + 1000, 0, 1000);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_bytes, ENG_WAL_HDR + ENG_WAL_REC_HDR + 1000ull * WROW));
    cr_assert(st.disk_bytes > st.wal_bytes);
    cr_assert(eq(int, eng_db_close(db), 0));
}

static uint64_t du_sum;

static int du_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F && S_ISREG(st->st_mode))
        du_sum += (uint64_t)st->st_size;
    return 0;
}

Test(wal, the_budget_deletes_old_segments_to_make_room_for_the_wal)
{
    eng_db *db = open_db(false);
    append_ids(db, M0 + 1000, 0, 100);
    append_ids(db, M0 + MIN + 1000, 100, 100);
    append_ids(db, M0 + 2 * MIN + 1000, 200, 100);
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 3));
    append_ids(db, M0 + 10 * MIN, 300, 2000); /* open: ~266 KB of WAL */
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments, 3));
    cr_assert(st.wal_bytes > 2000u * WROW);
    /* a budget the segments alone fit in by far, but not with the WAL beside them: one byte
     * less than every file under the folder, measured here */
    du_sum = 0;
    cr_assert(eq(int, nftw(tmpdir, du_entry, 8, FTW_PHYS), 0));
    cr_assert(du_sum > 2000u * WROW);
    eng_db_set_limits(db, du_sum - 1, 0);
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments_deleted, 1), "the oldest segment made room");
    cr_assert(eq(u64, st.segments, 2));
    cr_assert(st.disk_bytes <= st.budget_bytes);
    assert_exactly(db, 100, 2300);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* A flood that sealing does not keep up with: the WAL stops at half the budget, the rows past it
 * are kept in memory only (counted) and are still stored when their minute is sealed. */
Test(wal, the_wal_stops_at_half_the_budget_and_keeps_the_rest_in_memory)
{
    eng_db *db = open_db(false);
    const uint64_t budget = 200000; /* half of it holds two records of 300 rows, not three */
    eng_db_set_limits(db, budget, 0);
    for (uint32_t k = 0; k < 5; k++)
        append_ids(db, M0 + 1000 + k, 300 * k, 300);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(le(u64, st.wal_bytes, budget / 2), "WAL %" PRIu64 " bytes", st.wal_bytes);
    cr_assert(eq(u64, st.wal_bytes, ENG_WAL_HDR + 2 * (ENG_WAL_REC_HDR + 300ull * WROW)),
              "what fits is written");
    cr_assert(eq(u64, st.wal_over_budget, 900), "three records past the half: in memory");
    cr_assert(eq(u64, st.rows_dropped, 0));
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 1));
    assert_exactly(db, 0, 1500);
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.wal_bytes, 0), "sealed: the WAL is trimmed");
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(wal, a_full_buffer_is_sealed_before_its_minute_ends)
{
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true, .seal_rows = 500};
    eng_db *db = NULL;
    char err[256];
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0));
    append_ids(db, M0 + 1000, 0, 400);
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 2000, false), 0), "not full, minute not over");
    append_ids(db, M0 + 3000, 400, 200);
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 4000, false), 1), "full: sealed early");
    append_ids(db, M0 + 5000, 600, 100); /* the same minute: a fresh buffer and WAL file */
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments, 1));
    cr_assert(eq(u64, st.open_rows, 100));
    cr_assert(eq(u64, st.wal_bytes, ENG_WAL_HDR + ENG_WAL_REC_HDR + 100ull * WROW));
    assert_exactly(db, 0, 700);
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(int, count_files(".", ".seg", NULL, 0), 2));
    db = open_db(false);
    assert_exactly(db, 0, 700);
    cr_assert(eq(int, eng_db_close(db), 0));
}

typedef struct enc_back {
    const eng_flow *want;
    size_t n;
} enc_back;

static int enc_back_cb(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    enc_back *b = arg;
    cr_assert(eq(i64, recv_ms, M0 + 17));
    for (size_t i = 0; i < n; i++, b->n++) {
        const eng_flow *w = &b->want[b->n];
        /* every field up to dst_mask, then the three after the padding byte */
        cr_assert(eq(int, memcmp(&rows[i], w, offsetof(eng_flow, dst_mask) + 1), 0), "row %zu",
                  b->n);
        cr_assert(eq(u16, rows[i].vlan, w->vlan));
        cr_assert(eq(u8, rows[i].direction, w->direction));
        cr_assert(eq(u8, rows[i].flow_type, w->flow_type));
    }
    return 0;
}

/* Random rows in every mix of the version 2 row's short and long forms (addresses IPv4 or
 * not, times near the receive time or not, counters past 32 bits or not) come back from a
 * written record exactly, and the record's checksum (summed a block at a time) is the one the
 * reader accepts. */
Test(wal, encoded_rows_round_trip_in_every_form)
{
    enum { N = 300 }; /* several checksum blocks and a partial one */
    eng_flow *rows = calloc(N, sizeof *rows);
    uint8_t *rec = malloc(eng__wal_rec_size(N));
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    size_t forms[8] = {0};
    cr_assert(rows != NULL && rec != NULL);
    for (size_t i = 0; i < N; i++) {
        eng_flow *r = &rows[i];
        uint8_t *p = (uint8_t *)r;
        for (size_t k = 0; k < sizeof *r; k++)
            p[k] = (uint8_t)test_xorshift(&seed);
        r->flows = 0; /* not in the WAL: raw rows only */
        unsigned form = (unsigned)(test_xorshift(&seed) % 8);
        forms[form]++;
        if (form & 1) {
            ns_addr *a[4] = {&r->exporter, &r->src, &r->dst, &r->nexthop};
            for (int k = 0; k < 4; k++)
                ns_addr_from_v4(a[k], (uint32_t)test_xorshift(&seed));
        }
        if (form & 2) { /* the edges of the short form too */
            int64_t d[4] = {INT32_MIN, INT32_MAX, -5000, 0};
            r->first_ms = M0 + 17 + d[i % 4];
            r->last_ms = M0 + 17 + d[(i + 1) % 4];
        }
        if (form & 4) {
            r->packets &= 0xffffffffu;
            r->bytes = i % 2 ? 0xffffffffu : r->bytes & 0xffffffffu;
        }
    }
    rows[0].first_ms = INT64_MIN; /* far from the receive time: no overflow on the way */
    rows[1].last_ms = INT64_MAX;
    for (int f = 0; f < 8; f++)
        cr_assert(forms[f] > 0, "form %d drawn", f);
    size_t len = eng__wal_encode(rec, M0 + 17, rows, N);
    cr_assert(len <= eng__wal_rec_size(N));
    cr_assert(len >= ENG_WAL_REC_HDR + N * ENG_WAL_ROW2_MIN);
    char path[256];
    int fd = -1;
    snprintf(path, sizeof path, "%s/enc.wal", tmpdir);
    cr_assert(eq(int, eng__wal_create(path, M0 / MIN, 1, &fd), 0));
    cr_assert(eq(int, eng__wal_write(fd, ENG_WAL_HDR, rec, len), 0));
    close(fd);
    enc_back back = {.want = rows};
    eng__wal_scan sc;
    cr_assert(eq(int, eng__wal_read(path, enc_back_cb, &back, &sc), 0));
    cr_assert(eq(int, sc.tail_rc, 0));
    cr_assert(eq(u64, sc.records, 1));
    cr_assert(eq(sz, back.n, N));
    free(rec);
    free(rows);
}

/* Writes a record's checksum as version 2 defines it: XXH3-64 of the payload, then bytes 0..15. */
static void seal_v2(uint8_t *rec, size_t len)
{
    uint8_t *buf = malloc(len);
    cr_assert(buf != NULL);
    memcpy(buf, rec + ENG_WAL_REC_HDR, len - ENG_WAL_REC_HDR);
    memcpy(buf + len - ENG_WAL_REC_HDR, rec, 16);
    ns_put_le64(rec + 16, XXH3_64bits(buf, len - 8));
    free(buf);
}

/* A record whose checksum is right but whose rows do not fill its payload exactly (an unknown
 * flag, a row cut short) is corrupt: nothing of it is replayed. */
Test(wal, a_record_with_a_good_checksum_but_bad_rows_is_refused)
{
    eng_flow rows[2] = {flow(1, M0), flow(2, M0)};
    uint8_t rec[ENG_WAL_REC_HDR + 2 * ENG_WAL_ROW2_MAX];
    size_t len = eng__wal_encode(rec, M0, rows, 2);
    for (int bad = 0; bad < 2; bad++) {
        uint8_t r2[sizeof rec];
        memcpy(r2, rec, len);
        size_t l2 = len;
        if (bad == 0) {
            r2[ENG_WAL_REC_HDR] |= 0x80; /* the first row's flags */
        } else {
            /* the second row says it is IPv4-short: its payload is then 48 bytes too long */
            r2[ENG_WAL_REC_HDR + WROW] |= 1;
        }
        seal_v2(r2, l2);
        char path[256];
        int fd = -1;
        snprintf(path, sizeof path, "%s/bad%d.wal", tmpdir, bad);
        cr_assert(eq(int, eng__wal_create(path, M0 / MIN, 1, &fd), 0));
        cr_assert(eq(int, eng__wal_write(fd, ENG_WAL_HDR, rec, len), 0));
        cr_assert(eq(int, eng__wal_write(fd, ENG_WAL_HDR + len, r2, l2), 0));
        close(fd);
        eng__wal_scan sc;
        tally t = {.cap = 8, .seen = calloc(8, 1)};
        cr_assert(eq(int, eng__wal_read(path, collect_cb, &t, &sc), 0));
        cr_assert(eq(int, sc.tail_rc, NS_E_CORRUPT), "case %d", bad);
        cr_assert(eq(u64, sc.records, 1), "case %d", bad);
        cr_assert(eq(u64, t.rows, 2), "only the good record's rows, case %d", bad);
        cr_assert(eq(u64, sc.good_len, ENG_WAL_HDR + len));
        free(t.seen);
    }
}

/* A version 1 file (133-byte rows, XXH64), as the previous release wrote it, is replayed. */
Test(wal, a_version_1_file_is_still_replayed)
{
    enum { N = 25 };
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "%s/wal", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/m%lld-0.wal", dir, (long long)(M0 / MIN));
    uint8_t hdr[ENG_WAL_HDR] = {0}, *rec = malloc(ENG_WAL_REC_HDR + N * ENG_WAL_ROW);
    cr_assert(rec != NULL);
    memcpy(hdr, "NS2FWAL", 8);
    ns_put_le32(hdr + 8, 1);
    ns_put_le32(hdr + 12, ENG_WAL_ROW);
    ns_put_le64(hdr + 16, (uint64_t)(M0 / MIN));
    ns_put_le64(hdr + 24, 0);
    for (uint32_t i = 0; i < N; i++) {
        eng_flow f = flow(i, M0 + 500);
        eng__wal_row_encode_fields(rec + ENG_WAL_REC_HDR + i * ENG_WAL_ROW, &f);
    }
    ns_put_le32(rec, N * ENG_WAL_ROW);
    ns_put_le32(rec + 4, N);
    ns_put_le64(rec + 8, (uint64_t)(M0 + 500));
    XXH64_state_t *st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, rec, 16);
    XXH64_update(st, rec + ENG_WAL_REC_HDR, N * ENG_WAL_ROW);
    ns_put_le64(rec + 16, XXH64_digest(st));
    XXH64_freeState(st);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp != NULL);
    cr_assert(eq(sz, fwrite(hdr, 1, sizeof hdr, fp), sizeof hdr));
    cr_assert(eq(sz, fwrite(rec, 1, ENG_WAL_REC_HDR + N * ENG_WAL_ROW, fp),
                 ENG_WAL_REC_HDR + N * ENG_WAL_ROW));
    cr_assert(eq(int, fclose(fp), 0));
    free(rec);
    eng__wal_scan sc;
    cr_assert(eq(int, eng__wal_read(path, NULL, NULL, &sc), 0));
    cr_assert(eq(int, sc.tail_rc, 0));
    cr_assert(eq(u64, sc.rows, N));
    eng_db *db = open_db(false);
    eng_db_stats s;
    eng_db_get_stats(db, &s);
    cr_assert(eq(u64, s.wal_replayed_rows, N));
    cr_assert(eq(u64, s.wal_errors, 0));
    assert_exactly(db, 0, N);
    /* rows appended now go to a buffer and WAL file of their own: a file never mixes
     * versions, and both replay after a crash */
    append_ids(db, M0 + 900, 100, 3);
    cr_assert(eq(int, count_files("wal", ".wal", NULL, 0), 2));
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(false);
    tally t = scan_all(db, 4096);
    cr_assert(eq(u64, t.rows, N + 3));
    cr_assert(eq(u64, t.mismatched, 0));
    free(t.seen);
    cr_assert(eq(int, eng_db_close(db), 0));
}
