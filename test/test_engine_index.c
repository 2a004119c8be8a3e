/* Tests of the address index and bloom filter of segment format 3 (engine/segment.c) and of
 * address scans (engine/db.c): the index against brute force on random rows (v4 and v6, heavy
 * repeats, many sizes), no false negative from the filter or the index, selected reads equal
 * to full reads, version 2 files still read (written now and the committed one), a damaged
 * index detected by its checksum and quarantined by a scan, and eng_db_scan_opt against a
 * brute-force count across sealed segments and open minutes. */
#include "engine/query.h"
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define M0  1704164640000LL /* a minute boundary */
#define MIN 60000LL

TEST_SCRATCH_SUITE(idx, "idx");

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = (rng_state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A pool of addresses, half IPv4 (mapped), half IPv6; index i is distinct for distinct i. */
static ns_addr pool_addr(uint32_t i)
{
    ns_addr a;
    if (i % 2 == 0) {
        ns_addr_from_v4(&a, 0x0a000000u + i);
    } else {
        memset(&a, 0, sizeof a);
        a.b[0] = 0x20;
        a.b[1] = 0x01;
        a.b[2] = 0x0d;
        a.b[3] = 0xb8;
        for (int k = 0; k < 4; k++)
            a.b[12 + k] = (uint8_t)(i >> (24 - 8 * k));
    }
    return a;
}

/* Skewed choice: a few addresses very often, most rarely. */
static uint32_t pick(uint32_t pool)
{
    uint64_t r = rnd();
    if (r % 4 == 0)
        return (uint32_t)(r >> 8) % 8;
    return (uint32_t)(r >> 8) % pool;
}

static eng_flow *random_rows(size_t n, uint32_t pool, int64_t t0)
{
    eng_flow *r = calloc(n ? n : 1, sizeof *r);
    cr_assert(r != NULL);
    for (size_t i = 0; i < n; i++) {
        r[i].first_ms = t0 + (int64_t)(rnd() % 60000);
        r[i].last_ms = r[i].first_ms + (int64_t)(rnd() % 5000);
        r[i].packets = 1 + rnd() % 100;
        r[i].bytes = 40 + rnd() % 100000;
        r[i].src = pool_addr(pick(pool));
        r[i].dst = pool_addr(pick(pool));
        r[i].src_port = (uint16_t)rnd();
        r[i].dst_port = (uint16_t)rnd();
        r[i].proto = 6;
        r[i].in_if = (uint32_t)i;
    }
    return r;
}

static bool has(const eng_flow *r, const ns_addr *a)
{
    return memcmp(r->src.b, a->b, 16) == 0 || memcmp(r->dst.b, a->b, 16) == 0;
}

static bool bit(const uint64_t *sel, size_t i)
{
    return sel[i / 64] >> (i % 64) & 1;
}

/* For every pool address and some absent ones: every row holding it is selected, and the
 * bloom filter never says "not here" for a present address. */
static void check_index(const char *path, const eng_flow *rows, size_t n, uint32_t pool)
{
    eng_seg *s = NULL;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    cr_assert(eq(u32, eng_seg_get_info(s)->version, 7)); /* the index came with 3 */
    eng_seg_index_stats st;
    cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
    cr_assert(st.block_rows > 0);
    size_t words = (n + 63) / 64 + 1;
    uint64_t *sel = calloc(words, sizeof *sel);
    eng_flow *got = calloc(n ? n : 1, sizeof *got), *all = calloc(n ? n : 1, sizeof *all);
    cr_assert(sel && got && all);
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, all), 0));
    size_t absent_maybe = 0, absent = 0, selected_total = 0, matching_total = 0;
    uint32_t present_tried = pool < 300 ? pool : 300;
    for (uint32_t q = 0; q < present_tried + 200; q++) {
        /* pool addresses (the busy ones first), then 200 that no row has */
        uint32_t a = q < present_tried ? q : pool + (q - present_tried);
        ns_addr addr = pool_addr(a);
        size_t nsel = 99, want = 0;
        memset(sel, 0, words * sizeof *sel);
        cr_assert(eq(int, eng_seg_select(s, &addr, 1, sel, &nsel), 0));
        bool present = false;
        for (size_t i = 0; i < n; i++) {
            if (has(&rows[i], &addr)) {
                present = true;
                want++;
                cr_assert(bit(sel, i), "address %u, row %zu not selected", a, i);
            }
        }
        size_t count = 0;
        for (size_t i = 0; i < n; i++)
            count += bit(sel, i);
        for (size_t i = n; i < words * 64; i++)
            cr_assert(not(bit(sel, i)), "bit past the rows");
        cr_assert(eq(sz, nsel, count));
        if (present)
            cr_assert(eng_seg_may_have(s, &addr), "address %u is there", a);
        if (!present) {
            absent++;
            absent_maybe += eng_seg_may_have(s, &addr);
        }
        selected_total += nsel;
        matching_total += want;
        if (q % 7 != 0)
            continue;
        /* the selected rows read alone equal the same rows of a full read */
        size_t k = 0;
        cr_assert(eq(int, eng_seg_read_sel(s, ENG_COLS_ALL, sel, got, &k), 0));
        cr_assert(eq(sz, k, nsel));
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
            if (bit(sel, i))
                cr_assert(eq(int, memcmp(&got[j++], &all[i], sizeof *all), 0), "row %zu", i);
    }
    /* imprecision is bounded: the index does not simply name every row */
    if (n >= 1000) {
        cr_assert(lt(sz, absent_maybe * 10, absent + 10), "bloom says maybe for %zu of %zu",
                  absent_maybe, absent);
        cr_assert(lt(sz, selected_total, matching_total * st.block_rows * 3 + n),
                  "%zu selected for %zu", selected_total, matching_total);
    }
    free(sel);
    free(got);
    free(all);
    eng_seg_close(s);
}

static int cmp_src(const void *a, const void *b)
{
    return memcmp(((const eng_flow *)a)->src.b, ((const eng_flow *)b)->src.b, 16);
}

/* Random rows of many sizes and address pools, as they come or sorted by source as the sealer
 * writes them (then the source side is fences, format 5), against brute force. */
static void brute_force_sizes(bool sorted)
{
    const size_t sizes[] = {0, 1, 2, 15, 16, 17, 63, 64, 65, 1000, 5000, 20000};
    const uint32_t pools[] = {1, 3, 50, 5000};
    rng_state = sorted ? 43 : 42;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t pi = 0; pi < sizeof pools / sizeof pools[0]; pi++) {
            size_t n = sizes[si];
            eng_flow *rows = random_rows(n, pools[pi], M0);
            if (sorted)
                qsort(rows, n, sizeof *rows, cmp_src);
            const char *path = tpath("r.seg");
            cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
            eng_seg *s;
            eng_seg_index_stats st;
            cr_assert(eq(int, eng_seg_open(path, &s), 0));
            cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
            /* unsorted rows may still happen to be in order (one row, one address) */
            if (sorted)
                cr_assert(st.src_fences, "n %zu", n);
            eng_seg_close(s);
            check_index(path, rows, n, pools[pi]);
            free(rows);
        }
}

Test(idx, index_against_brute_force_on_random_rows)
{
    brute_force_sizes(false);
}

Test(idx, index_with_source_fences_against_brute_force)
{
    brute_force_sizes(true);
}

Test(idx, several_addresses_select_the_union)
{
    const size_t n = 3000;
    rng_state = 7;
    eng_flow *rows = random_rows(n, 400, M0);
    const char *path = tpath("u.seg");
    cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    ns_addr set[5] = {pool_addr(3), pool_addr(100), pool_addr(201), pool_addr(399),
                      pool_addr(100000)};
    uint64_t sel[(3000 + 63) / 64] = {0};
    size_t nsel;
    cr_assert(eq(int, eng_seg_select(s, set, 5, sel, &nsel), 0));
    for (size_t i = 0; i < n; i++) {
        bool want = false;
        for (int k = 0; k < 5; k++)
            want |= has(&rows[i], &set[k]);
        if (want)
            cr_assert(bit(sel, i), "row %zu", i);
    }
    eng_seg_close(s);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * Version 2 */

Test(idx, version_2_files_still_read_and_select_every_row)
{
    const size_t n = 500;
    rng_state = 9;
    eng_flow *rows = random_rows(n, 30, M0), *got = calloc(n, sizeof *got);
    const char *path = tpath("v2.seg");
    cr_assert(eq(int, eng__seg_write_version(path, rows, n, 2), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    const eng_seg_info *in = eng_seg_get_info(s);
    cr_assert(eq(u32, in->version, 2));
    cr_assert(eq(u32, in->bloom_words, 0));
    ns_addr nowhere = pool_addr(99999);
    cr_assert(eng_seg_may_have(s, &nowhere), "no filter: maybe");
    uint64_t sel[(500 + 63) / 64] = {0};
    size_t nsel;
    cr_assert(eq(int, eng_seg_select(s, &nowhere, 1, sel, &nsel), 0));
    cr_assert(eq(sz, nsel, n));
    eng_seg_index_stats st;
    cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
    cr_assert(eq(u32, st.block_rows, 0));
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
    cr_assert(eq(int, memcmp(got, rows, n * sizeof *rows), 0));
    eng_seg_close(s);
    free(rows);
    free(got);
}

Test(idx, the_committed_version_2_segment_decodes)
{
    FILE *f = fopen("test/fuzz/regress/fuzz_segment/own_33_rows.seg", "rb");
    cr_assert(f != NULL, "run from the repository root");
    uint8_t buf[8192];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert(eq(u32, buf[8], 2));
    eng_flow *rows = NULL;
    size_t n = 0;
    cr_assert(eq(int, eng_seg_decode_mem(buf, len, &rows, &n), 0));
    cr_assert(eq(sz, n, 33));
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * Damage */

Test(idx, a_flipped_byte_anywhere_in_the_index_is_detected)
{
    const size_t n = 2000;
    rng_state = 11;
    eng_flow *rows = random_rows(n, 300, M0);
    const char *good = tpath("good.seg"), *bad = tpath("bad.seg");
    /* version 5: the index is the last blob before the footer (no address totals after it) */
    cr_assert(eq(int, eng__seg_write_version(good, rows, n, 5), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(good, &s), 0));
    eng_seg_info in = *eng_seg_get_info(s);
    eng_seg_close(s);
    size_t len;
    uint8_t *orig = test_slurp(good, &len), *buf = malloc(len);
    cr_assert(in.index_csize > 0);
    for (uint64_t off = in.index_offset; off < in.index_offset + in.index_csize; off++) {
        memcpy(buf, orig, len);
        buf[off] ^= 0x10;
        test_spit(bad, buf, len);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0), "the footer is intact");
        ns_addr a = rows[0].src;
        uint64_t sel[(2000 + 63) / 64] = {0};
        size_t nsel;
        cr_assert(eq(int, eng_seg_select(s, &a, 1, sel, &nsel), NS_E_CORRUPT), "byte %llu",
                  (unsigned long long)off);
        cr_assert(eq(int, eng_seg_index_check(s, NULL), NS_E_CORRUPT));
        /* the columns are fine and still read */
        cr_assert(eq(int, eng_seg_verify_col(s, ENG_COL_SRC), 0));
        eng_seg_close(s);
        eng_flow *mrows = NULL;
        size_t mn;
        cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mrows, &mn), NS_E_CORRUPT));
        cr_assert(mrows == NULL);
    }
    free(buf);
    free(orig);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * Address scans of the database */

typedef struct count_ctx {
    const ns_addr *set;
    size_t nset;
    uint64_t rows_seen, match_rows, match_bytes;
    uint8_t *seen; /* per row id (in_if): times counted */
    size_t nids;
} count_ctx;

static int count_cb(void *arg, const eng_flow *rows, size_t n)
{
    count_ctx *c = arg;
    c->rows_seen += n;
    for (size_t i = 0; i < n; i++) {
        bool m = false;
        for (size_t k = 0; k < c->nset; k++)
            m |= has(&rows[i], &c->set[k]);
        if (!m)
            continue;
        c->match_rows++;
        c->match_bytes += rows[i].bytes;
        cr_assert(lt(u32, rows[i].in_if, (uint32_t)c->nids));
        c->seen[rows[i].in_if]++;
    }
    return 0;
}

static eng_db *open_manual(void)
{
    eng_db *db = NULL;
    char err[256];
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    return db;
}

Test(idx, address_scans_match_brute_force_across_sealed_and_open_minutes)
{
    const size_t per_min = 3000, mins = 6, n = per_min * mins;
    rng_state = 5;
    eng_flow *all = malloc(n * sizeof *all);
    cr_assert(all != NULL);
    eng_db *db = open_manual();
    for (size_t m = 0; m < mins; m++) {
        eng_flow *r = random_rows(per_min, 2000, M0 + (int64_t)m * MIN);
        for (size_t i = 0; i < per_min; i++)
            r[i].in_if = (uint32_t)(m * per_min + i); /* a row id */
        if (m == 2)                                   /* one address only in minute 2 */
            r[17].src = pool_addr(77777);
        memcpy(all + m * per_min, r, per_min * sizeof *r);
        cr_assert(eq(int, eng_db_append(db, M0 + (int64_t)m * MIN + 1000, r, per_min), 0));
        free(r);
    }
    /* seal the first four minutes; the last two stay open */
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 4 * MIN, false), 4));

    ns_addr sets[][3] = {
        {pool_addr(0), {{0}}, {{0}}},     /* busy */
        {pool_addr(1501), {{0}}, {{0}}},  /* rare */
        {pool_addr(77777), {{0}}, {{0}}}, /* one minute only */
        {pool_addr(5), pool_addr(999), pool_addr(123456)},
    };
    const size_t nsets[] = {1, 1, 1, 3};
    const int64_t ranges[][2] = {{M0 - MIN, M0 + 10 * MIN}, {M0 + 30000, M0 + 2 * MIN + 5000}};
    for (size_t q = 0; q < 4; q++)
        for (size_t rg = 0; rg < 2; rg++) {
            count_ctx c = {.set = sets[q], .nset = nsets[q], .nids = n};
            c.seen = calloc(n, 1);
            eng_scan_opts o = {.addrs = sets[q], .naddrs = nsets[q]};
            eng_db_stats before, after;
            eng_db_get_stats(db, &before);
            cr_assert(eq(int,
                         eng_db_scan_opt(db, ranges[rg][0], ranges[rg][1], ENG_COLS_ALL, &o,
                                         count_cb, NULL, &c),
                         0));
            eng_db_get_stats(db, &after);
            uint64_t want_rows = 0, want_bytes = 0;
            for (size_t i = 0; i < n; i++) {
                bool m = false;
                for (size_t k = 0; k < nsets[q]; k++)
                    m |= has(&all[i], &sets[q][k]);
                bool in_range = all[i].last_ms >= ranges[rg][0] && all[i].first_ms <= ranges[rg][1];
                if (m && in_range) {
                    want_rows++;
                    want_bytes += all[i].bytes;
                    cr_assert(eq(u8, c.seen[i], 1), "set %zu range %zu row %zu seen %u times", q,
                              rg, i, c.seen[i]);
                } else {
                    cr_assert(eq(u8, c.seen[i], 0));
                }
            }
            cr_assert(eq(u64, c.match_rows, want_rows), "set %zu range %zu", q, rg);
            cr_assert(eq(u64, c.match_bytes, want_bytes));
            if (q == 2 && rg == 0) /* three of the four sealed minutes lack it */
                cr_assert(ge(u64, after.segments_pruned - before.segments_pruned, 3));
            if (q == 1 || q == 2) /* the index passes far fewer rows than the range holds */
                cr_assert(lt(u64, c.rows_seen, n / 2), "%llu rows passed",
                          (unsigned long long)c.rows_seen);
            free(c.seen);
        }
    cr_assert(eq(int, eng_db_close(db), 0));
    free(all);
}

Test(idx, a_scan_quarantines_a_segment_whose_index_is_damaged)
{
    const size_t n = 1000;
    rng_state = 3;
    eng_db *db = open_manual();
    eng_flow *r = random_rows(n, 100, M0);
    for (size_t i = 0; i < n; i++)
        r[i].in_if = (uint32_t)i;
    cr_assert(eq(int, eng_db_append(db, M0 + 1000, r, n), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 2 * MIN, false), 1));
    /* find the one segment and damage its index in place */
    char path[512] = "";
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".seg"))
            snprintf(path, sizeof path, "%s/%s", tmpdir, de->d_name);
    closedir(d);
    cr_assert(path[0] != 0);
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    uint64_t off = eng_seg_get_info(s)->index_offset + 3;
    eng_seg_close(s);
    size_t len;
    uint8_t *buf = test_slurp(path, &len);
    buf[off] ^= 0xff;
    test_spit(path, buf, len);
    free(buf);

    count_ctx c = {.set = &r[0].src, .nset = 1, .nids = n};
    c.seen = calloc(n, 1);
    eng_scan_opts o = {.addrs = &r[0].src, .naddrs = 1};
    cr_assert(eq(
        int, eng_db_scan_opt(db, M0 - MIN, M0 + 5 * MIN, ENG_COLS_ALL, &o, count_cb, NULL, &c), 0));
    cr_assert(eq(u64, c.match_rows, 0), "nothing from the damaged segment");
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments_quarantined, 1));
    cr_assert(eq(u64, st.segments, 0));
    char moved[600];
    snprintf(moved, sizeof moved, "%s/quarantine/%s", tmpdir, strrchr(path, '/') + 1);
    cr_assert(eq(int, access(moved, F_OK), 0), "moved to %s", moved);
    free(c.seen);
    free(r);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* The query engine hands the filter's addresses to the scan; answers equal brute force. */
Test(idx, host_filter_summary_equals_brute_force)
{
    const size_t n = 5000;
    rng_state = 13;
    eng_db *db = open_manual();
    eng_flow *r = random_rows(n, 500, M0);
    cr_assert(eq(int, eng_db_append(db, M0 + 1000, r, n), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 2 * MIN, false), 1));
    for (uint32_t a = 0; a < 40; a++) {
        ns_addr addr = pool_addr(a * 13);
        char text[128], ab[64];
        snprintf(text, sizeof text, "host %s and not port 7", ns_addr_fmt(&addr, ab, sizeof ab));
        qry_filter *f;
        char err[128];
        cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0), "%s", err);
        qry_totals t;
        cr_assert(eq(int, qry_summary(db, M0 - MIN, M0 + 5 * MIN, f, &t), 0));
        uint64_t flows = 0, bytes = 0;
        for (size_t i = 0; i < n; i++)
            if (has(&r[i], &addr) && r[i].src_port != 7 && r[i].dst_port != 7) {
                flows++;
                bytes += r[i].bytes;
            }
        cr_assert(eq(u64, t.flows, flows), "%s", text);
        cr_assert(eq(u64, t.bytes, bytes), "%s", text);
        qry_filter_free(f);
    }
    free(r);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* An index whose checksum is right but whose content is not (a forger, or a bug in a future
 * writer): the structural checks refuse it or the lookups stay inside the segment, and nothing
 * reads out of bounds (the ASan build runs this too). */
Test(idx, forged_index_behind_a_valid_checksum_is_still_checked)
{
    const size_t n = 700;
    rng_state = 21;
    eng_flow *rows = random_rows(n, 120, M0);
    const char *good = tpath("good.seg"), *bad = tpath("forged.seg");
    /* version 5: the index is the last blob before the footer (no address totals after it) */
    cr_assert(eq(int, eng__seg_write_version(good, rows, n, 5), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(good, &s), 0));
    eng_seg_info in = *eng_seg_get_info(s);
    eng_seg_close(s);
    size_t len;
    uint8_t *orig = test_slurp(good, &len);
    size_t flen =
        (size_t)orig[len - 24] | (size_t)orig[len - 23] << 8 | (size_t)orig[len - 22] << 16;
    size_t foot = len - 24 - flen;
    uint8_t *raw = malloc((size_t)in.index_rsize + 64);
    size_t rlen = ZSTD_decompress(raw, (size_t)in.index_rsize, orig + in.index_offset,
                                  (size_t)in.index_csize);
    cr_assert(eq(sz, rlen, (size_t)in.index_rsize));
    uint8_t *mut = malloc(rlen + 64), *comp = malloc(ZSTD_compressBound(rlen + 64));
    uint8_t *file = malloc(len + ZSTD_compressBound(rlen + 64));
    int refused = 0, accepted = 0;
    for (int it = 0; it < 400; it++) {
        size_t mlen = rlen;
        memcpy(mut, raw, rlen);
        int kind = it % 4;
        if (kind == 3) {
            mlen = rlen - 1 - rnd() % 8; /* cut short */
        } else {
            for (int k = 0; k <= kind; k++) {
                size_t at = kind == 0 ? rnd() % 16 : rnd() % rlen; /* header, or anywhere */
                mut[at] = (uint8_t)rnd();
            }
        }
        size_t clen = ZSTD_compress(comp, ZSTD_compressBound(rlen + 64), mut, mlen, 1);
        cr_assert(not(ZSTD_isError(clen)));
        /* the file again: columns, the forged blob, the footer pointing at it, the trailer */
        size_t off = 0;
        memcpy(file, orig, (size_t)in.index_offset);
        off = (size_t)in.index_offset;
        memcpy(file + off, comp, clen);
        off += clen;
        size_t fstart = off;
        memcpy(file + off, orig + foot, flen);
        for (int b = 0; b < 8; b++) {
            file[fstart + 56 + b] = (uint8_t)((uint64_t)clen >> (8 * b));
            file[fstart + 64 + b] = (uint8_t)((uint64_t)mlen >> (8 * b));
            file[fstart + 72 + b] = (uint8_t)(XXH64(comp, clen, 0) >> (8 * b));
        }
        off += flen;
        memcpy(file + off, orig + len - 24, 24);
        uint64_t fsum = XXH64(file + fstart, flen, 0);
        for (int b = 0; b < 8; b++)
            file[off + 8 + b] = (uint8_t)(fsum >> (8 * b));
        off += 24;

        eng_flow *mrows = NULL;
        size_t mn = 0;
        int rc = eng_seg_decode_mem(file, off, &mrows, &mn);
        cr_assert(rc == 0 || rc == NS_E_CORRUPT, "iteration %d: rc %d", it, rc);
        free(mrows);
        test_spit(bad, file, off);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0));
        uint64_t sel[(700 + 63) / 64] = {0};
        size_t nsel = 0;
        rc = eng_seg_select(s, &rows[it % n].src, 1, sel, &nsel);
        cr_assert(rc == 0 || rc == NS_E_CORRUPT, "iteration %d: rc %d", it, rc);
        if (rc == 0) {
            accepted++;
            cr_assert(le(sz, nsel, n));
        } else {
            refused++;
        }
        eng_seg_close(s);
    }
    cr_assert(refused > 100, "most forgeries are refused (%d of 400)", refused);
    free(raw);
    free(mut);
    free(comp);
    free(file);
    free(orig);
    free(rows);
}

/* A database holding version 2 segments (written before the upgrade) and version 3 ones: an
 * address scan reads the old ones whole and still finds every matching row once. */
Test(idx, address_scans_over_a_mix_of_version_2_and_3_segments)
{
    const size_t per = 1500;
    rng_state = 17;
    eng_flow *a = random_rows(per, 300, M0), *b = random_rows(per, 300, M0 + MIN);
    for (size_t i = 0; i < per; i++) {
        a[i].in_if = (uint32_t)i;
        b[i].in_if = (uint32_t)(per + i);
    }
    char name[512];
    snprintf(name, sizeof name, "%s/m%lld-0.seg", tmpdir, (long long)(M0 / MIN));
    cr_assert(eq(int, eng__seg_write_version(name, a, per, 2), 0));
    eng_db *db = open_manual();
    cr_assert(eq(int, eng_db_append(db, M0 + MIN + 1, b, per), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 3 * MIN, false), 1));
    ns_addr set[2] = {pool_addr(4), pool_addr(250)};
    count_ctx c = {.set = set, .nset = 2, .nids = 2 * per};
    c.seen = calloc(2 * per, 1);
    eng_scan_opts o = {.addrs = set, .naddrs = 2};
    cr_assert(eq(int, eng_db_scan_opt(db, 0, INT64_MAX, ENG_COLS_ALL, &o, count_cb, NULL, &c), 0));
    uint64_t want = 0;
    for (size_t i = 0; i < per; i++) {
        want += has(&a[i], &set[0]) || has(&a[i], &set[1]);
        want += has(&b[i], &set[0]) || has(&b[i], &set[1]);
    }
    cr_assert(eq(u64, c.match_rows, want));
    for (size_t i = 0; i < 2 * per; i++)
        cr_assert(le(u8, c.seen[i], 1));
    free(c.seen);
    free(a);
    free(b);
    cr_assert(eq(int, eng_db_close(db), 0));
}
