/* Tests of the sealing path's speed work (engine/db.c, engine/segment.c): several sealer threads
 * sealing buffers of one busy minute and of many minutes at once store every row exactly once;
 * close seals what is left and leaves no WAL; the permutation sort (packed keys for IPv4
 * minutes, wide keys for IPv6 or far-apart times) writes rows in (source, first_ms) order; and
 * a segment written through a permutation is the same file as one written from sorted rows. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define M0  1704164640000LL /* a minute boundary */
#define MIN 60000LL

TEST_SCRATCH_SUITE(sealers, "sealers");

/* A small deterministic generator (xorshift), so failures repeat. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Row `id`: its id in in_if and out_if (high and low halves of a 64-bit id are not needed: ids
 * stay below 2^32), a source drawn from few addresses so ties of source are common. */
static eng_flow row(uint32_t id, int64_t first_ms, bool v6, uint64_t *seed)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = first_ms;
    f.last_ms = first_ms;
    f.packets = id + 1u;
    f.bytes = 100u * (id + 1u);
    f.in_if = id;
    uint32_t host = (uint32_t)(rnd(seed) % 97);
    if (v6) {
        /* few hosts, but bits varying across both halves: keys too wide to pack */
        uint64_t h = (host + 1u) * 0x9e3779b97f4a7c15ull;
        f.src.b[0] = 0x20;
        f.src.b[1] = 0x01;
        for (int k = 2; k < 16; k++)
            f.src.b[k] = (uint8_t)(h >> (8 * (k % 8))) ^ (uint8_t)k;
    } else {
        ns_addr_from_v4(&f.src, 0x0a000000u | host);
    }
    ns_addr_from_v4(&f.dst, 0xc0a80000u | (id & 0xffffu));
    ns_addr_from_v4(&f.exporter, 0xc0000201u);
    f.src_port = (uint16_t)id;
    f.proto = 17;
    f.sampling = 1;
    return f;
}

static int cmp_order(const eng_flow *x, const eng_flow *y)
{
    int c = memcmp(x->src.b, y->src.b, 16);
    if (c)
        return c;
    return x->first_ms < y->first_ms ? -1 : x->first_ms > y->first_ms;
}

/* Reads every segment in the folder: checks each is in (source, first_ms) order, and tallies
 * the ids seen into seen[] (cap entries). Returns the rows read. */
static size_t read_segments(uint8_t *seen, uint32_t cap, size_t *nsegs)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    size_t total = 0;
    cr_assert(d != NULL);
    *nsegs = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 4, ".seg") != 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, de->d_name);
        eng_seg *s;
        cr_assert(eq(int, eng_seg_open(path, &s), 0), "%s", path);
        size_t n = (size_t)eng_seg_get_info(s)->rows;
        eng_flow *rows = calloc(n ? n : 1, sizeof *rows);
        cr_assert(rows != NULL);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, rows), 0));
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                cr_assert(cmp_order(&rows[i - 1], &rows[i]) <= 0, "%s: row %zu out of order",
                          de->d_name, i);
            cr_assert(rows[i].in_if < cap, "id %u out of range", rows[i].in_if);
            cr_assert(rows[i].packets == rows[i].in_if + 1u, "row %zu's columns mixed up", i);
            seen[rows[i].in_if]++;
        }
        total += n;
        (*nsegs)++;
        free(rows);
        eng_seg_close(s);
    }
    closedir(d);
    return total;
}

static size_t count_wal_files(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wal", tmpdir);
    DIR *d = opendir(path);
    size_t n = 0;
    struct dirent *de;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL)
        n += strstr(de->d_name, ".wal") != NULL;
    closedir(d);
    return n;
}

typedef struct appender {
    eng_db *db;
    uint32_t id0, n;
    int64_t recv_ms0;
    int minutes; /* the rows spread over this many minutes from recv_ms0 */
    uint64_t seed;
} appender;

static void *append_main(void *arg)
{
    appender *a = arg;
    eng_flow batch[256];
    uint32_t done = 0;
    while (done < a->n) {
        uint32_t k = a->n - done < 256 ? a->n - done : 256;
        int64_t recv = a->recv_ms0 + (int64_t)((done / 256) % (uint32_t)a->minutes) * MIN + 30000;
        for (uint32_t i = 0; i < k; i++)
            batch[i] = row(a->id0 + done + i, recv - 20000 + (int64_t)(rnd(&a->seed) % 10000),
                           false, &a->seed);
        cr_assert(eq(int, eng_db_append(a->db, recv, batch, k), 0));
        done += k;
    }
    return NULL;
}

/* Four appenders, four sealer threads, buffers that fill every 1000 rows (so many are full at
 * once, in few minutes, and sealers race for them), and a caller sealing beside the threads:
 * after close every id is in exactly one segment, each segment in order, no WAL left. */
Test(sealers, many_sealers_store_every_row_exactly_once)
{
    enum { THREADS = 4, PER = 20000, N = THREADS * PER };
    eng_db_opts o = {.seal_delay_s = 2, .seal_rows = 1000, .seal_threads = 4};
    eng_db *db = NULL;
    char err[256];
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    pthread_t th[THREADS];
    appender ap[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ap[t] = (appender){db, (uint32_t)t * PER, PER, M0, 3, 0x9e3779b97f4a7c15ull + (uint64_t)t};
        cr_assert(eq(int, pthread_create(&th[t], NULL, append_main, &ap[t]), 0));
    }
    for (int i = 0; i < 50; i++)
        cr_assert(eng_db_seal_due(db, M0, false) >= 0); /* nothing due by time: full ones only */
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.rows_stored, N));
    cr_assert(eq(u64, st.rows_dropped, 0));
    cr_assert(eq(int, eng_db_close(db), 0));
    cr_assert(eq(sz, count_wal_files(), 0), "close sealed everything: no WAL left");

    uint8_t *seen = calloc(N, 1);
    size_t nsegs;
    cr_assert(eq(sz, read_segments(seen, N, &nsegs), N));
    for (uint32_t i = 0; i < N; i++)
        cr_assert(eq(u8, seen[i], 1), "id %u seen %u times", i, seen[i]);
    cr_assert(nsegs >= N / 1000 / 2, "buffers were cut near seal_rows (%zu segments)", nsegs);
    free(seen);
}

/* Close with the sealer threads idle and buffers of several minutes still open (not due):
 * close seals them all; a reopen scans each row once. */
Test(sealers, close_seals_what_the_threads_left)
{
    eng_db_opts o = {.seal_delay_s = 3600, .seal_threads = 3};
    eng_db *db = NULL;
    char err[256];
    uint64_t seed = 7;
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    enum { N = 5000 };
    for (uint32_t i = 0; i < N; i += 100) {
        eng_flow b[100];
        int64_t recv = M0 + (int64_t)(i / 100 % 5) * MIN;
        for (uint32_t k = 0; k < 100; k++)
            b[k] = row(i + k, recv - 1000, false, &seed);
        cr_assert(eq(int, eng_db_append(db, recv, b, 100), 0));
    }
    cr_assert(eq(int, eng_db_close(db), 0));
    uint8_t *seen = calloc(N, 1);
    size_t nsegs;
    cr_assert(eq(sz, read_segments(seen, N, &nsegs), N));
    cr_assert(eq(sz, nsegs, 5), "one segment per minute");
    for (uint32_t i = 0; i < N; i++)
        cr_assert(eq(u8, seen[i], 1), "id %u seen %u times", i, seen[i]);
    free(seen);
}

/* The sort: rows whose keys fit 64 bits packed (IPv4, one minute), and rows that do not (IPv6
 * sources; IPv4 with first_ms across the whole int64 range), each sealed and read back in
 * order with every row once. */
static void sort_case(bool v6, bool wild_times)
{
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true};
    eng_db *db = NULL;
    char err[256];
    uint64_t seed = v6 ? 11 : wild_times ? 13 : 17;
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    enum { N = 30000 };
    eng_flow *rows = calloc(N, sizeof *rows);
    cr_assert(rows != NULL);
    for (uint32_t i = 0; i < N; i++) {
        int64_t t = M0 - (int64_t)(rnd(&seed) % 600000);
        if (wild_times)
            t = (int64_t)rnd(&seed) >> (rnd(&seed) % 64); /* negative and huge too */
        if (i % 3 == 0 && i > 0)
            t = rows[i - 1].first_ms; /* ties of time too */
        rows[i] = row(i, t, v6, &seed);
        rows[i].last_ms = t; /* far-apart times: no overflow in last - first */
    }
    cr_assert(eq(int, eng_db_append(db, M0 + 1000, rows, N), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 10 * MIN, false), 1));
    cr_assert(eq(int, eng_db_close(db), 0));
    uint8_t *seen = calloc(N, 1);
    size_t nsegs;
    cr_assert(eq(sz, read_segments(seen, N, &nsegs), N));
    for (uint32_t i = 0; i < N; i++)
        cr_assert(eq(u8, seen[i], 1), "id %u seen %u times", i, seen[i]);
    free(seen);
    free(rows);
}

Test(sealers, sort_packed_keys_ipv4)
{
    sort_case(false, false);
}

Test(sealers, sort_wide_keys_ipv6)
{
    sort_case(true, false);
}

Test(sealers, sort_wide_keys_far_apart_times)
{
    sort_case(false, true);
}

/* The sealer's writer (rows gathered through a permutation from chunks, a block at a time)
 * and eng_seg_write of the same rows already sorted write the same bytes. */
Test(sealers, permuted_write_equals_sorted_write)
{
    enum { N = 5000, SHIFT = 10 }; /* chunks of 1024 rows, the last one partial */
    uint64_t seed = 23;
    eng_flow *chunk[(N >> SHIFT) + 1];
    eng_flow *sorted = calloc(N, sizeof *sorted);
    uint32_t *perm = calloc(N, sizeof *perm);
    cr_assert(sorted != NULL && perm != NULL);
    for (size_t c = 0; c <= (N >> SHIFT); c++) {
        chunk[c] = calloc(1u << SHIFT, sizeof(eng_flow));
        cr_assert(chunk[c] != NULL);
    }
    for (uint32_t i = 0; i < N; i++) {
        chunk[i >> SHIFT][i & ((1u << SHIFT) - 1)] =
            row(i, M0 - (int64_t)(rnd(&seed) % 60000), i % 7 == 0, &seed);
        perm[i] = i;
    }
    /* an independent order: insertion-free, by qsort of the indexes on the same key */
    for (uint32_t i = 0; i < N; i++) { /* a shuffle first, so identity would fail */
        uint32_t j = (uint32_t)(rnd(&seed) % (i + 1u)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 1; i < N; i++) { /* insertion sort of perm by the rows' order */
        uint32_t p = perm[i], j = i;
        const eng_flow *x = &chunk[p >> SHIFT][p & ((1u << SHIFT) - 1)];
        while (j > 0 &&
               cmp_order(&chunk[perm[j - 1] >> SHIFT][perm[j - 1] & ((1u << SHIFT) - 1)], x) > 0) {
            perm[j] = perm[j - 1];
            j--;
        }
        perm[j] = p;
    }
    for (uint32_t i = 0; i < N; i++)
        sorted[i] = chunk[perm[i] >> SHIFT][perm[i] & ((1u << SHIFT) - 1)];
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/a.seg", tmpdir);
    snprintf(b, sizeof b, "%s/b.seg", tmpdir);
    cr_assert(eq(int, eng_seg_write(a, sorted, N), 0));
    cr_assert(eq(int, eng__seg_write_perm(b, chunk, SHIFT, perm, N), 0));
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    cr_assert(fa != NULL && fb != NULL);
    int ca, cb;
    long pos = 0;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        cr_assert(eq(int, ca, cb), "files differ at byte %ld", pos);
        pos++;
    } while (ca != EOF);
    cr_assert(pos > 1000);
    fclose(fa);
    fclose(fb);
    eng__seg_write_release();
    for (size_t c = 0; c <= (N >> SHIFT); c++)
        free(chunk[c]);
    free(sorted);
    free(perm);
}
