/* Tests of the sealer's fast paths against their references: the segment writer's fast paths
 * (the SSE2 encoder of 16 rows at a time, the shortcuts of its dictionary loop) write the same
 * bytes as eng__seg_write_ref, which takes the column-by-column reference paths only; and the
 * narrow-key radix sort gives the same permutation as the general sort, which a brute-force
 * check confirms is the stable (source, first_ms) order. Rows of many shapes: IPv4 and IPv6,
 * dictionaries that hold and that give up within a block, every field random, row counts at
 * the edges of the 16-row groups and 1024-row blocks. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>

#define M0    1704164640000LL /* a minute boundary */
#define SHIFT 10u             /* chunks of 1024 rows, the last one partial */

TEST_SCRATCH_SUITE(seal_fast, "seal_fast");

enum kind {
    K_V4,       /* IPv4 minute: sources from few hosts, one source_id per exporter */
    K_V6,       /* a third of the addresses IPv6 */
    K_DISTINCT, /* every address different: both dictionaries give up */
    K_DST_LATE, /* destinations distinct after the first 3000 rows: that one gives up late */
    K_RANDOM,   /* every byte of every field random (times too, flows too) */
    K_CONSTANT, /* every row the same */
};

static void v6_of(uint64_t x, ns_addr *a)
{
    a->b[0] = 0x20;
    a->b[1] = 0x01;
    for (int k = 2; k < 16; k++)
        a->b[k] = (uint8_t)(x >> (8 * (k % 8))) ^ (uint8_t)(k * 31);
}

static void make_row(enum kind k, uint32_t i, uint64_t *seed, eng_flow *f)
{
    memset(f, 0, sizeof *f);
    if (k == K_RANDOM) {
        uint8_t *p = (uint8_t *)f;
        for (size_t b = 0; b < sizeof *f; b++)
            p[b] = (uint8_t)test_xorshift(seed);
        return;
    }
    if (k == K_CONSTANT)
        i = 7;
    uint64_t r = k == K_CONSTANT ? 12345 : test_xorshift(seed);
    /* IPv6 rows' times over 2^29 ms: time deltas of 4 and 5 varint bytes */
    f->first_ms = M0 - (int64_t)(r % (k == K_V6 ? 1u << 29 : 60000u));
    f->last_ms = f->first_ms + (int64_t)(r >> 40) % 90000;
    f->packets = 1 + (r >> 20) % 1000;
    f->bytes = f->packets * (40 + (r >> 8) % 1460);
    if (i % 11 == 0)
        f->bytes <<= 24; /* high byte planes not all zero */
    uint32_t host = (uint32_t)(r % 211), peer = (uint32_t)((r >> 16) % 4999);
    if (k == K_DISTINCT)
        host = i, peer = i * 7u + 1u;
    if (k == K_DST_LATE && i >= 3000)
        peer = 100000u + i;
    ns_addr_from_v4(&f->src, 0x0a000000u | host);
    ns_addr_from_v4(&f->dst, 0xc0a80000u | peer);
    if (k == K_V6 && r % 3 == 0)
        v6_of(host * 0x9e3779b97f4a7c15ull, &f->src);
    if (k == K_V6 && r % 3 == 1)
        v6_of(peer * 0xc2b2ae3d27d4eb4full, &f->dst);
    if (k == K_V4 && host == peer % 211)
        f->dst = f->src; /* rows whose source is their destination (address totals' both) */
    uint32_t ex = (uint32_t)((r >> 33) % 4);
    ns_addr_from_v4(&f->exporter, 0x7f000001u + ex);
    ns_addr_from_v4(&f->nexthop, 0xc0000200u + (uint32_t)((r >> 13) % 3));
    f->src_as = (uint32_t)(r >> 7) % 70000;
    f->dst_as = (uint32_t)(r >> 9) % 300;
    f->in_if = (uint32_t)(r >> 3) % 48;
    f->out_if = (uint32_t)(r >> 5) % 48;
    f->sampling = 1;
    f->source_id = k == K_V6 ? (uint32_t)(r >> 50) % 3 : ex * 256u;
    f->src_port = (uint16_t)(r >> 17);
    f->dst_port = (uint16_t)(r >> 29) % 1024;
    f->proto = (uint8_t)(r % 3 == 0 ? 6 : 17);
    f->tcp_flags = (uint8_t)(r >> 45);
    f->tos = (uint8_t)((r >> 51) % 4);
    f->src_mask = 24;
    f->dst_mask = (uint8_t)(16 + (r >> 55) % 17);
    f->vlan = (uint16_t)((r >> 57) % 5);
    f->direction = (uint8_t)((r >> 60) % 3);
    f->flow_type = ENG_FT_NETFLOW5;
    f->flows = i % 13 == 0 ? (r >> 30) % 9 : 0;
}

typedef struct rows_set {
    eng_flow *chunk[128];
    size_t n;
} rows_set;

static void rows_make(rows_set *s, enum kind k, size_t n, uint64_t seed)
{
    cr_assert(n < (128u << SHIFT));
    s->n = n;
    for (size_t c = 0; c <= (n >> SHIFT); c++) {
        s->chunk[c] = calloc(1u << SHIFT, sizeof(eng_flow));
        cr_assert(s->chunk[c] != NULL);
    }
    for (uint32_t i = 0; i < n; i++)
        make_row(k, i, &seed, &s->chunk[i >> SHIFT][i & ((1u << SHIFT) - 1)]);
}

static void rows_free(rows_set *s)
{
    for (size_t c = 0; c <= (s->n >> SHIFT); c++)
        free(s->chunk[c]);
}

static const eng_flow *at(const rows_set *s, uint32_t i)
{
    return &s->chunk[i >> SHIFT][i & ((1u << SHIFT) - 1)];
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "%s", path);
    cr_assert(eq(int, fseek(f, 0, SEEK_END), 0));
    long sz = ftell(f);
    cr_assert(sz > 0);
    rewind(f);
    uint8_t *b = malloc((size_t)sz);
    cr_assert(b != NULL);
    cr_assert(eq(sz, fread(b, 1, (size_t)sz, f), (size_t)sz));
    fclose(f);
    *len = (size_t)sz;
    return b;
}

static void assert_same_file(const char *a, const char *b, const char *what)
{
    size_t la, lb;
    uint8_t *x = slurp(a, &la), *y = slurp(b, &lb);
    cr_assert(eq(sz, la, lb), "%s: sizes differ", what);
    for (size_t i = 0; i < la; i++)
        cr_assert(eq(u8, x[i], y[i]), "%s: files differ at byte %zu of %zu", what, i, la);
    free(x);
    free(y);
}

/* The writer's fast and reference paths over the rows in sorted order and in a shuffled one
 * (unsorted sources: no fences, dictionaries in no order). */
static void writer_case(enum kind k, size_t n, uint64_t seed)
{
    rows_set s;
    rows_make(&s, k, n, seed);
    uint32_t *perm = calloc(n + 1, sizeof *perm);
    cr_assert(perm != NULL);
    cr_assert(eng__seal_sort(s.chunk, SHIFT, n, perm, false) >= 0);
    char what[64];
    for (int shuffled = 0; shuffled < 2; shuffled++) {
        if (shuffled)
            for (uint32_t i = 0; i < n; i++) {
                uint32_t j = (uint32_t)(test_xorshift(&seed) % (i + 1u)), t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
        snprintf(what, sizeof what, "kind %d, %zu rows, %s", (int)k, n,
                 shuffled ? "shuffled" : "sorted");
        cr_assert(eq(int, eng__seg_write_perm(tpath("fast.seg"), s.chunk, SHIFT, perm, n), 0));
        cr_assert(eq(int, eng__seg_write_ref(tpath("ref.seg"), s.chunk, SHIFT, perm, n), 0));
        assert_same_file(tpath("fast.seg"), tpath("ref.seg"), what);
    }
    /* and from one array of rows (eng_seg_write's way in) */
    eng_flow *rows = calloc(n + 1, sizeof *rows);
    cr_assert(rows != NULL);
    for (uint32_t i = 0; i < n; i++)
        rows[i] = *at(&s, perm[i]);
    eng_flow *one[1] = {rows};
    cr_assert(eq(int, eng_seg_write(tpath("fast.seg"), rows, n), 0));
    cr_assert(eq(int, eng__seg_write_ref(tpath("ref.seg"), one, 31, NULL, n), 0));
    assert_same_file(tpath("fast.seg"), tpath("ref.seg"), "one array");
    eng__seg_write_release();
    free(rows);
    free(perm);
    rows_free(&s);
}

Test(seal_fast, writer_fast_paths_write_the_reference_bytes)
{
    static const size_t sizes[] = {1, 15, 16, 17, 1023, 1024, 1025, 5003};
    for (int k = K_V4; k <= K_CONSTANT; k++)
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
            writer_case((enum kind)k, sizes[i], 1000u + (uint64_t)k * 17u + i);
}

Test(seal_fast, writer_fast_paths_over_many_blocks)
{
    /* dictionaries and address totals over 40 blocks, the destination one giving up late */
    writer_case(K_V4, 40000, 5);
    writer_case(K_DST_LATE, 12000, 6);
}

/* Brute force: perm is a permutation of 0..n-1 in (source, first_ms) order, ties in row order. */
static void assert_stable_order(const rows_set *s, const uint32_t *perm, size_t n)
{
    uint8_t *seen = calloc(n + 1, 1);
    cr_assert(seen != NULL);
    for (size_t i = 0; i < n; i++) {
        cr_assert(perm[i] < n && !seen[perm[i]], "not a permutation at %zu", i);
        seen[perm[i]] = 1;
        if (i == 0)
            continue;
        const eng_flow *x = at(s, perm[i - 1]), *y = at(s, perm[i]);
        int c = memcmp(x->src.b, y->src.b, 16);
        if (c == 0)
            c = x->first_ms < y->first_ms ? -1 : x->first_ms > y->first_ms;
        cr_assert(c < 0 || (c == 0 && perm[i - 1] < perm[i]), "out of order at %zu", i);
    }
    free(seen);
}

/* rows of kind k with first_ms spread over 2^tbits ms; narrow: whether the narrow sort must
 * take them (else it must leave them to the general one) */
static void sort_case(enum kind k, size_t n, unsigned tbits, bool narrow, uint64_t seed)
{
    rows_set s;
    rows_make(&s, k, n, seed);
    for (uint32_t i = 0; i < n; i++) {
        eng_flow *f = &s.chunk[i >> SHIFT][i & ((1u << SHIFT) - 1)];
        if (tbits < 64)
            f->first_ms = M0 - (int64_t)(test_xorshift(&seed) & ((1ull << tbits) - 1));
        if (i % 5 == 4)
            f->first_ms = at(&s, i - 1)->first_ms; /* ties of time; of source too, often */
    }
    uint32_t *p1 = calloc(n + 1, sizeof *p1), *p2 = calloc(n + 1, sizeof *p2);
    cr_assert(p1 != NULL && p2 != NULL);
    int r = eng__seal_sort(s.chunk, SHIFT, n, p1, false);
    cr_assert(eq(int, r, narrow ? 1 : 0), "kind %d, %zu rows, %u time bits", (int)k, n, tbits);
    cr_assert(eq(int, eng__seal_sort(s.chunk, SHIFT, n, p2, true), 0));
    assert_stable_order(&s, p1, n);
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(u32, p1[i], p2[i]), "sorts differ at %zu", i);
    free(p1);
    free(p2);
    rows_free(&s);
}

Test(seal_fast, narrow_sort_equals_the_general_sort)
{
    sort_case(K_V4, 2, 17, true, 1);
    sort_case(K_V4, 1025, 17, true, 2);
    sort_case(K_V4, 30000, 17, true, 3);
    sort_case(K_CONSTANT, 3000, 64, true, 4); /* one key: row order */
    sort_case(K_DISTINCT, 20000, 20, true, 5);
    /* sources whose high 96 bits differ: the general sort */
    sort_case(K_RANDOM, 1u << 16, 31, false, 6);
    sort_case(K_V6, 5000, 17, false, 7);
    sort_case(K_RANDOM, 4000, 64, false, 8);
}

Test(seal_fast, narrow_sort_at_its_width_limit)
{
    /* IPv4 sources over all 32 bits (K_RANDOM's sources, their prefix made v4-mapped), times
     * over 2^tbits ms, 2^14 rows (14 index bits): the first pass leaves 32 + tbits - 11 + 14
     * bits, 64 at tbits 29 (narrow), 65 at tbits 30 (general) */
    for (unsigned tbits = 29; tbits <= 30; tbits++) {
        rows_set s;
        size_t n = 1u << 14;
        uint64_t seed = 40 + tbits;
        rows_make(&s, K_RANDOM, n, seed);
        for (uint32_t i = 0; i < n; i++) {
            eng_flow *f = &s.chunk[i >> SHIFT][i & ((1u << SHIFT) - 1)];
            memset(f->src.b, 0, 10);
            f->src.b[10] = f->src.b[11] = 0xff;
            f->first_ms = M0 - (int64_t)(test_xorshift(&seed) & ((1ull << tbits) - 1));
        }
        /* pin the extremes so the ranges are exactly 32 and tbits bits wide */
        eng_flow *lo = &s.chunk[0][0], *hi = &s.chunk[0][1];
        memset(lo->src.b + 12, 0, 4);
        memset(hi->src.b + 12, 0xff, 4);
        lo->first_ms = M0;
        hi->first_ms = M0 - (int64_t)((1ull << tbits) - 1);
        uint32_t *p1 = calloc(n, sizeof *p1), *p2 = calloc(n, sizeof *p2);
        cr_assert(p1 != NULL && p2 != NULL);
        cr_assert(eq(int, eng__seal_sort(s.chunk, SHIFT, n, p1, false), tbits == 29 ? 1 : 0));
        cr_assert(eq(int, eng__seal_sort(s.chunk, SHIFT, n, p2, true), 0));
        assert_stable_order(&s, p1, n);
        cr_assert(eq(int, memcmp(p1, p2, n * sizeof *p1), 0));
        free(p1);
        free(p2);
        rows_free(&s);
    }
}
