/* Format 5 against docs/FORMAT.md, byte for byte: the bytes the writer puts in the src and dst
 * dictionaries, the source_id table, the plain ports and the index (header, fences, the
 * destination's hash side) are rebuilt here from the rows by the rules the document states,
 * independently of engine/segment.c (128-bit differences with the compiler's __int128, not the
 * writer's pair of words), and compared with the decompressed blobs. Then the lookups through
 * fences: the rows they name are those the document's rule names (addresses equal to fences,
 * below the first, above the last, between two, runs across blocks, the last partial block).
 * Then the index checks a reader makes on fences, on indexes forged behind valid checksums. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>
#include <zstd.h>

#define T0 1704164645123LL

typedef unsigned __int128 u128;

TEST_SCRATCH_SUITE(fmt5, "fmt5");

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

static ns_addr addr128(u128 v)
{
    ns_addr a;
    for (int i = 15; i >= 0; i--, v >>= 8)
        a.b[i] = (uint8_t)v;
    return a;
}

static u128 val128(const uint8_t *b)
{
    u128 v = 0;
    for (int i = 0; i < 16; i++)
        v = v << 8 | b[i];
    return v;
}

static ns_addr v4(uint32_t x)
{
    ns_addr a;
    ns_addr_from_v4(&a, x);
    return a;
}

/* Addresses whose differences exercise the 128-bit arithmetic: zero, the low word's end, a
 * borrow from the high word (…:0 after …:ffff…), the high word alone, all ones. */
static const u128 H = (u128)1 << 64;
static u128 extreme(unsigned k)
{
    const u128 t[] = {0,
                      1,
                      H - 1,
                      H,
                      H + 5,
                      (u128)0xffff00000a000001ull, /* an IPv4-mapped address */
                      (u128)0xffff00000a000002ull,
                      (u128)0x20010db8u << 96 | 7,
                      (u128)0x20010db8u << 96 | (H - 2),
                      ((u128)UINT64_MAX << 64),
                      ((u128)UINT64_MAX << 64) | (UINT64_MAX - 1),
                      ~(u128)0};
    return t[k % (sizeof t / sizeof t[0])];
}

static int cmp_addr(const void *x, const void *y)
{
    return memcmp(x, y, 16);
}

static int cmp_src(const void *x, const void *y)
{
    return memcmp(((const eng_flow *)x)->src.b, ((const eng_flow *)y)->src.b, 16);
}

static void fill_row(eng_flow *r, size_t i, uint32_t nexp)
{
    uint32_t e = (uint32_t)(rnd() % nexp);
    r->first_ms = T0 + (int64_t)(rnd() % 60000);
    r->last_ms = r->first_ms + (int64_t)(rnd() % 3000);
    r->packets = 1 + rnd() % 50;
    r->bytes = 60 * r->packets;
    r->exporter = v4(0xc0a80001u + e * 256u);
    r->source_id = e * 1000003u + 17u; /* one per exporter; up to 2^32 − 1 */
    if (e == 2)
        r->source_id = UINT32_MAX;
    r->src_port = (uint16_t)rnd();
    r->dst_port = (uint16_t)(i % 3 ? 443 : rnd());
    r->proto = 6;
    r->sampling = 1;
}

/* ---------------------------------------------------------------------------------------------
 * The document's encodings, rebuilt */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p != NULL);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_varint(buf *b, uint64_t v)
{
    uint8_t t[10];
    size_t k = 0;
    while (v >= 0x80) {
        t[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[k++] = (uint8_t)v;
    put(b, t, k);
}

static void put_le32(buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, t, 4);
}

/* "each a difference from the one before (the first from 0): varint(d >> 64), varint(d mod 2^64)"
 */
static void put_diffs(buf *b, const uint8_t *vals, size_t m)
{
    u128 prev = 0;
    for (size_t j = 0; j < m; j++) {
        u128 v = val128(vals + j * 16), d = v - prev;
        put_varint(b, (uint64_t)(d >> 64));
        put_varint(b, (uint64_t)d);
        prev = v;
    }
}

/* The sorted distinct addresses of one side of rows, into *out; returns their count. */
static size_t distinct(const eng_flow *rows, size_t n, bool dst, uint8_t **out)
{
    uint8_t *v = malloc(n * 16 + 16);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        memcpy(v + i * 16, (dst ? &rows[i].dst : &rows[i].src)->b, 16);
    qsort(v, n, 16, cmp_addr);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || memcmp(v + (m - 1) * 16, v + i * 16, 16) != 0)
            memmove(v + m++ * 16, v + i * 16, 16);
    *out = v;
    return m;
}

/* Encoding 4 of one side. */
static buf doc_dict(const eng_flow *rows, size_t n, bool dst)
{
    buf b = {0};
    uint8_t *vals;
    size_t m = distinct(rows, n, dst, &vals);
    unsigned c = m <= 256 ? 1 : m <= 65536 ? 2 : m <= (1u << 24) ? 3 : 4;
    put_varint(&b, m);
    put_diffs(&b, vals, m);
    uint8_t *planes = calloc(c * n + 1, 1);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *a = (dst ? &rows[i].dst : &rows[i].src)->b;
        const uint8_t *hit = bsearch(a, vals, m, 16, cmp_addr);
        cr_assert(hit != NULL);
        size_t code = (size_t)(hit - vals) / 16;
        for (unsigned k = 0; k < c; k++)
            planes[k * n + i] = (uint8_t)(code >> (8 * k));
    }
    put(&b, planes, c * n);
    free(planes);
    free(vals);
    return b;
}

/* Encoding 5 of source_id. */
static buf doc_byexp(const eng_flow *rows, size_t n)
{
    buf b = {0};
    uint8_t *ex = malloc(n * 20 + 20);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(ex + i * 20, rows[i].exporter.b, 16);
        memcpy(ex + i * 20 + 16, &rows[i].source_id, 4);
    }
    qsort(ex, n, 20, cmp_addr);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || memcmp(ex + (m - 1) * 20, ex + i * 20, 16) != 0)
            memmove(ex + m++ * 20, ex + i * 20, 20);
    put_varint(&b, m);
    for (size_t j = 0; j < m; j++) {
        uint32_t v;
        memcpy(&v, ex + j * 20 + 16, 4);
        put(&b, ex + j * 20, 16);
        put_varint(&b, v);
    }
    free(ex);
    return b;
}

/* Encoding 0 of a port column: little-endian values one after another. */
static buf doc_ports(const eng_flow *rows, size_t n, bool dst)
{
    buf b = {0};
    for (size_t i = 0; i < n; i++) {
        uint16_t p = dst ? rows[i].dst_port : rows[i].src_port;
        uint8_t t[2] = {(uint8_t)p, (uint8_t)(p >> 8)};
        put(&b, t, 2);
    }
    return b;
}

static uint32_t doc_shift(size_t n)
{
    uint32_t s = 4;
    while (s < 10 && n >= (size_t)128 << s)
        s++;
    return s;
}

static uint32_t pow2_ge(uint64_t v)
{
    uint32_t m = 1;
    while (m < v)
        m <<= 1;
    return m;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* A hash side over the destinations of rows 0..n with m buckets and blocks of 2^s rows: the
 * (bucket, block) pairs sorted and made unique, counted per bucket, then listed. */
static void doc_hash_side(buf *b, const eng_flow *rows, size_t n, uint32_t m, uint32_t s)
{
    uint64_t *pair = malloc((n + 1) * sizeof *pair);
    size_t *cnt = calloc(m, sizeof *cnt), u = 0;
    for (size_t i = 0; i < n; i++)
        pair[i] = (eng_addr_hash(&rows[i].dst) & (m - 1)) << 32 | (i >> s);
    qsort(pair, n, sizeof *pair, cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (u == 0 || pair[u - 1] != pair[i])
            pair[u++] = pair[i];
    for (size_t j = 0; j < u; j++)
        cnt[pair[j] >> 32]++;
    for (uint32_t k = 0; k < m; k++)
        put_varint(b, cnt[k]);
    for (size_t j = 0; j < u; j++) {
        bool first = j == 0 || pair[j - 1] >> 32 != pair[j] >> 32;
        put_varint(b, first ? (uint32_t)pair[j] : (uint32_t)pair[j] - (uint32_t)pair[j - 1]);
    }
    free(cnt);
    free(pair);
}

/* The whole raw index of rows sorted by source. */
static buf doc_index(const eng_flow *rows, size_t n)
{
    buf b = {0};
    uint32_t s = doc_shift(n);
    size_t blocks = (n + ((size_t)1 << s) - 1) >> s;
    uint8_t *vals;
    size_t dd = distinct(rows, n, true, &vals);
    free(vals);
    uint32_t md = pow2_ge((dd + 1) / 2);
    put_le32(&b, s);
    put_le32(&b, (uint32_t)blocks);
    put_le32(&b, md);
    put_le32(&b, 1);
    uint8_t *f = malloc(blocks * 16 + 16);
    for (size_t k = 0; k < blocks; k++)
        memcpy(f + k * 16, rows[k << s].src.b, 16);
    put_diffs(&b, f, blocks);
    free(f);
    doc_hash_side(&b, rows, n, md, s);
    return b;
}

/* ---------------------------------------------------------------------------------------------
 * The file's blobs */

static uint8_t *unzstd(const uint8_t *file, uint64_t off, uint64_t csize, uint64_t rsize)
{
    uint8_t *raw = malloc((size_t)rsize + 1);
    size_t got = ZSTD_decompress(raw, (size_t)rsize + 1, file + off, (size_t)csize);
    cr_assert(not(ZSTD_isError(got)));
    cr_assert(eq(sz, got, (size_t)rsize));
    return raw;
}

static void same_bytes(const uint8_t *got, size_t glen, const buf *want, const char *what)
{
    cr_assert(eq(sz, glen, want->len), "%s: %zu bytes, the document says %zu", what, glen,
              want->len);
    for (size_t i = 0; i < glen; i++)
        cr_assert(eq(u8, got[i], want->p[i]), "%s: byte %zu of %zu", what, i, glen);
}

/* Writes sorted rows and checks every format 5 blob against the document. */
static void check_layout(const char *name, const eng_flow *rows, size_t n)
{
    const char *path = tpath(name);
    cr_assert(eq(int, eng__seg_write_version(path, rows, n, 5), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    size_t len;
    uint8_t *file = test_slurp(path, &len);
    const eng_seg_info *in = eng_seg_get_info(s);
    cr_assert(eq(u32, in->version, 5));
    cr_assert(eq(u32, file[8], 5));
    struct {
        eng_col c;
        uint32_t enc;
        buf want;
    } cols[] = {
        {ENG_COL_SRC, 4, doc_dict(rows, n, false)},
        {ENG_COL_DST, 4, doc_dict(rows, n, true)},
        {ENG_COL_SOURCE_ID, 5, doc_byexp(rows, n)},
        {ENG_COL_SRC_PORT, 0, doc_ports(rows, n, false)},
        {ENG_COL_DST_PORT, 0, doc_ports(rows, n, true)},
    };
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) {
        const eng_seg_colinfo *ci = eng_seg_col(s, cols[k].c);
        cr_assert(eq(u32, ci->encoding, cols[k].enc), "%s", eng_col_name(cols[k].c));
        uint8_t *raw = unzstd(file, ci->offset, ci->csize, ci->rsize);
        same_bytes(raw, (size_t)ci->rsize, &cols[k].want, eng_col_name(cols[k].c));
        free(raw);
        free(cols[k].want.p);
    }
    uint8_t *raw = unzstd(file, in->index_offset, in->index_csize, in->index_rsize);
    buf want = doc_index(rows, n);
    same_bytes(raw, (size_t)in->index_rsize, &want, "index");
    free(want.p);
    free(raw);
    free(file);
    eng_seg_close(s);
}

/* 3000 rows (blocks of 32, the last one of 24 rows) over the extreme addresses as sources, in
 * runs of random length, some longer than a block. */
static eng_flow *extreme_rows(size_t n, size_t ndst)
{
    eng_flow *r = calloc(n, sizeof *r);
    for (size_t i = 0; i < n; i++) {
        fill_row(&r[i], i, 3);
        r[i].src = addr128(extreme((unsigned)(rnd() % 12)));
        r[i].dst = rnd() % 3 ? v4(0x0a000000u + (uint32_t)(rnd() % ndst))
                             : addr128(extreme((unsigned)rnd()) ^ (u128)(rnd() % ndst));
    }
    qsort(r, n, sizeof *r, cmp_src);
    return r;
}

Test(fmt5, dictionaries_table_ports_and_index_are_the_bytes_the_document_describes)
{
    eng_flow *rows = extreme_rows(3000, 200);
    check_layout("x.seg", rows, 3000);
    free(rows);
    /* 256 values take 1-byte codes, 257 take 2 */
    for (uint32_t m = 256; m <= 257; m++) {
        rows = calloc(1000, sizeof *rows);
        for (size_t i = 0; i < 1000; i++) {
            fill_row(&rows[i], i, 4);
            rows[i].src = v4(0x0a000000u + (uint32_t)(i % 9));
            rows[i].dst = addr128(extreme((unsigned)(i % m)) + (u128)(i % m) * 977);
        }
        qsort(rows, 1000, sizeof *rows, cmp_src);
        uint8_t *vals;
        cr_assert(eq(sz, distinct(rows, 1000, true, &vals), m));
        free(vals);
        check_layout(m == 256 ? "c256.seg" : "c257.seg", rows, 1000);
        free(rows);
    }
    /* a dictionary with 2-byte codes (over 256 values) and one with 3-byte codes (over 65,536:
     * 131,074 rows at least), blocks of 1024 rows (from 65,536 rows) */
    const size_t n = 140000;
    rows = calloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        fill_row(&rows[i], i, 5);
        rows[i].src =
            i < 2000 ? addr128(extreme((unsigned)i)) : v4(0x0b000000u + (uint32_t)(i % 300));
        rows[i].dst = v4(0x0c000000u + (uint32_t)(i % 65537));
    }
    qsort(rows, n, sizeof *rows, cmp_src);
    check_layout("big.seg", rows, n);
    eng_seg *s;
    eng_seg_index_stats st;
    cr_assert(eq(int, eng_seg_open(tpath("big.seg"), &s), 0));
    cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
    cr_assert(eq(u32, st.block_rows, 1024));
    cr_assert(st.src_fences);
    eng_flow *got = calloc(n, sizeof *got);
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(int, memcmp(&got[i], &rows[i], sizeof *got), 0), "row %zu", i);
    free(got);
    eng_seg_close(s);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * Lookups through fences */

static bool bit(const uint64_t *sel, size_t i)
{
    return sel[i / 64] >> (i % 64) & 1;
}

/* Checks eng_seg_select for address a against the document: the blocks the fence rule names
 * (ge, gt counted here by a plain pass over the blocks' first rows) and those of a's bucket on
 * the destination side, nothing when the bloom filter rules a out; and every row holding a. */
static void check_lookup(eng_seg *s, const eng_flow *rows, size_t n, const ns_addr *a,
                         uint32_t shift, uint32_t md, const uint64_t *dsth, uint64_t *want,
                         uint64_t *sel)
{
    size_t words = (n + 63) / 64, blocks = (n + ((size_t)1 << shift) - 1) >> shift, nsel = 0;
    memset(want, 0, words * 8);
    memset(sel, 0, words * 8);
    if (eng_seg_may_have(s, a)) {
        size_t ge = 0, gt = 0;
        for (size_t b = 0; b < blocks; b++) {
            int c = memcmp(rows[b << shift].src.b, a->b, 16);
            ge += c < 0;
            gt += c <= 0;
        }
        for (size_t b = gt ? (ge ? ge - 1 : 0) : blocks; b < gt; b++)
            for (size_t i = b << shift; i < n && i < (b + 1) << shift; i++)
                want[i / 64] |= 1ull << (i % 64);
        uint64_t bucket = eng_addr_hash(a) & (md - 1);
        for (size_t i = 0; i < n; i++)
            if ((dsth[i] & (md - 1)) == bucket) {
                size_t b = i >> shift;
                for (size_t j = b << shift; j < n && j < (b + 1) << shift; j++)
                    want[j / 64] |= 1ull << (j % 64);
            }
    }
    cr_assert(eq(int, eng_seg_select(s, a, 1, sel, &nsel), 0));
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        count += bit(sel, i);
        cr_assert(eq(int, bit(sel, i), bit(want, i)), "row %zu of %zu: selected %d, document %d", i,
                  n, bit(sel, i), bit(want, i));
        if (!memcmp(rows[i].src.b, a->b, 16) || !memcmp(rows[i].dst.b, a->b, 16))
            cr_assert(bit(sel, i), "row %zu holds the address", i);
    }
    for (size_t i = n; i < words * 64; i++)
        cr_assert(not(bit(sel, i)), "bit %zu past the rows", i);
    cr_assert(eq(sz, nsel, count));
}

static void check_lookups(const char *name, eng_flow *rows, size_t n)
{
    cr_assert(eq(int, eng__seg_write_version(tpath(name), rows, n, 5), 0));
    eng_seg *s;
    eng_seg_index_stats st;
    cr_assert(eq(int, eng_seg_open(tpath(name), &s), 0));
    cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
    cr_assert(st.src_fences);
    uint32_t shift = (uint32_t)__builtin_ctz(st.block_rows);
    cr_assert(eq(u32, shift, doc_shift(n)));
    size_t words = (n + 63) / 64 + 1;
    uint64_t *want = calloc(words, 8), *sel = calloc(words, 8), *dsth = calloc(n, 8);
    for (size_t i = 0; i < n; i++)
        dsth[i] = eng_addr_hash(&rows[i].dst);
    /* every source and destination, each neighbour of every source (between two fences, or
     * just below or above a run), and the extremes */
    for (size_t i = 0; i < n; i++) {
        if (i && !memcmp(rows[i].src.b, rows[i - 1].src.b, 16))
            continue;
        u128 v = val128(rows[i].src.b);
        ns_addr probe[3] = {rows[i].src, addr128(v - 1), addr128(v + 1)};
        for (int k = 0; k < 3; k++)
            check_lookup(s, rows, n, &probe[k], shift, st.buckets[1], dsth, want, sel);
    }
    for (size_t i = 0; i < n; i += 7)
        check_lookup(s, rows, n, &rows[i].dst, shift, st.buckets[1], dsth, want, sel);
    for (unsigned k = 0; k < 12; k++) {
        ns_addr a = addr128(extreme(k));
        check_lookup(s, rows, n, &a, shift, st.buckets[1], dsth, want, sel);
    }
    free(want);
    free(sel);
    free(dsth);
    eng_seg_close(s);
}

Test(fmt5, fence_lookups_name_what_the_document_says)
{
    /* sources in runs of 1 to 3 blocks and short ones, every run starting anywhere; the
     * last block partial (3000 rows: 93 of 32 and one of 24), full (4096: 64 of 64), or of
     * one row (4097) */
    const size_t sizes[] = {3000, 4096, 4097, 17, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        eng_flow *rows = calloc(n, sizeof *rows);
        size_t i = 0;
        uint32_t src = 0x0a000100u;
        while (i < n) {
            size_t run = rnd() % 4 ? 1 + rnd() % 9 : 20 + rnd() % 150;
            src += 1 + (uint32_t)(rnd() % 3);
            for (size_t j = 0; j < run && i < n; j++, i++) {
                fill_row(&rows[i], i, 2);
                rows[i].src = v4(src);
                rows[i].dst = v4(0x0a100000u + (uint32_t)(rnd() % 400));
            }
        }
        /* a run starting exactly on a block's first row, spanning whole blocks */
        uint32_t s = doc_shift(n);
        if (n > ((size_t)3 << s))
            for (size_t j = (size_t)1 << s; j < ((size_t)3 << s); j++)
                rows[j].src = rows[(size_t)1 << s].src;
        qsort(rows, n, sizeof *rows, cmp_src);
        char name[32];
        snprintf(name, sizeof name, "l%zu.seg", n);
        check_lookups(name, rows, n);
        free(rows);
    }
    eng_flow *rows = extreme_rows(3000, 200);
    check_lookups("x.seg", rows, 3000);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * The reader's checks on fences, behind valid checksums */

/* The file at path with its index replaced by raw (rlen bytes): columns, the new blob, the
 * footer pointing at it, the trailer with the footer's checksum again. Returns the decode's
 * result and writes the file to out. */
static int with_index(const char *path, const uint8_t *raw, size_t rlen, const char *out)
{
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    eng_seg_info in = *eng_seg_get_info(s);
    eng_seg_close(s);
    size_t len;
    uint8_t *orig = test_slurp(path, &len);
    size_t flen =
        (size_t)orig[len - 24] | (size_t)orig[len - 23] << 8 | (size_t)orig[len - 22] << 16;
    size_t foot = len - 24 - flen, cb = ZSTD_compressBound(rlen);
    uint8_t *file = malloc(len + cb), *comp = malloc(cb);
    size_t clen = ZSTD_compress(comp, cb, raw, rlen, 3);
    cr_assert(not(ZSTD_isError(clen)));
    size_t off = (size_t)in.index_offset;
    memcpy(file, orig, off);
    memcpy(file + off, comp, clen);
    off += clen;
    size_t fstart = off;
    memcpy(file + off, orig + foot, flen);
    uint64_t sum = XXH64(comp, clen, 0);
    for (int b = 0; b < 8; b++) {
        file[fstart + 56 + b] = (uint8_t)((uint64_t)clen >> (8 * b));
        file[fstart + 64 + b] = (uint8_t)((uint64_t)rlen >> (8 * b));
        file[fstart + 72 + b] = (uint8_t)(sum >> (8 * b));
    }
    off += flen;
    memcpy(file + off, orig + len - 24, 24);
    uint64_t fsum = XXH64(file + fstart, flen, 0);
    for (int b = 0; b < 8; b++)
        file[off + 8 + b] = (uint8_t)(fsum >> (8 * b));
    off += 24;
    eng_flow *rows = NULL;
    size_t n = 0;
    int rc = eng_seg_decode_mem(file, off, &rows, &n);
    free(rows);
    test_spit(out, file, off);
    free(file);
    free(comp);
    free(orig);
    return rc;
}

static void set_le32(uint8_t *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

Test(fmt5, the_reader_refuses_fences_the_document_does_not_allow)
{
    const size_t n = 700; /* blocks of 16 rows: 44, the last of 12 */
    eng_flow *rows = calloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        fill_row(&rows[i], i, 2);
        rows[i].src = v4(0x0a000000u + (uint32_t)(rnd() % 90));
        rows[i].dst = v4(0x0b000000u + (uint32_t)(rnd() % 500));
    }
    qsort(rows, n, sizeof *rows, cmp_src);
    const char *v5 = "v5.seg", *v4f = "v4.seg";
    char p5[256], p4[256];
    snprintf(p5, sizeof p5, "%s", tpath(v5));
    snprintf(p4, sizeof p4, "%s", tpath(v4f));
    cr_assert(eq(int, eng__seg_write_version(p5, rows, n, 5), 0));
    cr_assert(eq(int, eng__seg_write_version(p4, rows, n, 4), 0));
    buf good = doc_index(rows, n);
    uint8_t *raw = malloc(good.len + 64);
    const char *out = tpath("forged.seg");
    char outp[256];
    snprintf(outp, sizeof outp, "%s", out);

    /* the document's index is accepted in version 5 and selects as the writer's own did */
    cr_assert(eq(int, with_index(p5, good.p, good.len, outp), 0));
    /* fences are version 5's: a version 4 file with them is damaged */
    cr_assert(eq(int, with_index(p4, good.p, good.len, outp), NS_E_CORRUPT));
    /* a flag bit the format does not have */
    memcpy(raw, good.p, good.len);
    set_le32(raw + 12, 3);
    cr_assert(eq(int, with_index(p5, raw, good.len, outp), NS_E_CORRUPT));
    /* fewer or more fences than blocks (the rest then cannot parse either way) */
    for (int d = -1; d <= 1; d += 2) {
        memcpy(raw, good.p, good.len);
        set_le32(raw + 4, (uint32_t)(44 + d));
        cr_assert(eq(int, with_index(p5, raw, good.len, outp), NS_E_CORRUPT), "%d fences", 44 + d);
    }
    /* fences descending: rebuilt with the first two swapped */
    {
        buf b = {0};
        uint8_t f[44 * 16];
        for (size_t k = 0; k < 44; k++)
            memcpy(f + k * 16, rows[k << 4].src.b, 16);
        cr_assert(lt(int, memcmp(f, f + 16 * 43, 16), 0));
        uint8_t t[16];
        memcpy(t, f, 16);
        memcpy(f, f + 16 * 43, 16);
        memcpy(f + 16 * 43, t, 16);
        put(&b, good.p, 16);
        /* differences as signed: the descending step is a huge one past 2^128 */
        put_diffs(&b, f, 44);
        size_t fl = 0;
        {
            buf only = {0};
            uint8_t g[44 * 16];
            for (size_t k = 0; k < 44; k++)
                memcpy(g + k * 16, rows[k << 4].src.b, 16);
            put_diffs(&only, g, 44);
            fl = only.len;
            free(only.p);
        }
        put(&b, good.p + 16 + fl, good.len - 16 - fl);
        cr_assert(eq(int, with_index(p5, b.p, b.len, outp), NS_E_CORRUPT));
        free(b.p);
    }
    /* a byte left over, a byte missing */
    memcpy(raw, good.p, good.len);
    raw[good.len] = 0;
    cr_assert(eq(int, with_index(p5, raw, good.len + 1, outp), NS_E_CORRUPT));
    cr_assert(eq(int, with_index(p5, raw, good.len - 1, outp), NS_E_CORRUPT));
    /* equal fences are allowed (a long run), and lookups stay inside the segment even when the
     * fences do not match the rows: all fences the same address */
    {
        buf b = {0};
        put(&b, good.p, 16);
        uint8_t f[44 * 16];
        for (size_t k = 0; k < 44; k++)
            memcpy(f + k * 16, rows[300].src.b, 16);
        put_diffs(&b, f, 44);
        buf only = {0};
        uint8_t g[44 * 16];
        for (size_t k = 0; k < 44; k++)
            memcpy(g + k * 16, rows[k << 4].src.b, 16);
        put_diffs(&only, g, 44);
        put(&b, good.p + 16 + only.len, good.len - 16 - only.len);
        cr_assert(eq(int, with_index(p5, b.p, b.len, outp), 0));
        eng_seg *s;
        cr_assert(eq(int, eng_seg_open(outp, &s), 0));
        uint64_t sel[(700 + 63) / 64 + 1] = {0};
        size_t nsel = 0;
        cr_assert(eq(int, eng_seg_select(s, &rows[300].src, 1, sel, &nsel), 0));
        cr_assert(eq(sz, nsel, n), "every block, from the first to the last");
        cr_assert(eq(u64, sel[700 / 64 + 1], 0));
        eng_seg_close(s);
        free(only.p);
        free(b.p);
    }
    free(raw);
    free(good.p);
    free(rows);
}

/* The writer's per-thread scratch (dictionary tables, values, codes, fences) is kept from one
 * segment to the next: segments of growing and shrinking sizes, with and without dictionaries,
 * sorted and not, written one after another on one thread and on a thread that ends without
 * releasing it, each read back whole. */
static void *write_series(void *arg)
{
    const size_t sizes[] = {20000, 5, 3000, 2, 70000, 17, 0, 4097, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        eng_flow *rows = calloc(n ? n : 1, sizeof *rows);
        for (size_t i = 0; i < n; i++) {
            fill_row(&rows[i], i, k % 2 ? 300 : 3);
            rows[i].src = v4(0x0a000000u + (uint32_t)(rnd() % (k % 3 ? 50 : n)));
            rows[i].dst = addr128(extreme((unsigned)rnd()) ^ (u128)(rnd() % (k % 2 ? n : 40)));
        }
        if (k % 4 != 3)
            qsort(rows, n, sizeof *rows, cmp_src);
        char name[256];
        snprintf(name, sizeof name, "%s/t%s-%zu.seg", tmpdir, arg ? "thread" : "main", k);
        cr_assert(eq(int, eng_seg_write(name, rows, n), 0));
        eng_seg *s;
        cr_assert(eq(int, eng_seg_open(name, &s), 0));
        cr_assert(eq(int, eng_seg_index_check(s, NULL), 0));
        eng_flow *got = calloc(n ? n : 1, sizeof *got);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
        for (size_t i = 0; i < n; i++)
            cr_assert(eq(int, memcmp(&got[i], &rows[i], sizeof *got), 0), "size %zu row %zu", n, i);
        free(got);
        eng_seg_close(s);
        free(rows);
    }
    return NULL;
}

Test(fmt5, the_writer_scratch_carries_nothing_from_one_segment_to_the_next)
{
    write_series(NULL);
    eng__seg_write_release();
    write_series(NULL); /* afresh after a release */
    pthread_t t;
    static int other;
    cr_assert(eq(int, pthread_create(&t, NULL, write_series, &other), 0));
    cr_assert(eq(int, pthread_join(t, NULL), 0)); /* its scratch goes with it */
}
