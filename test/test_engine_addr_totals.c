/* Address totals (segment format 6) against the rows and against docs/FORMAT.md:
 * - every address on at least T = max(rows >> 10, 64) rows is listed, no other, with the exact
 *   totals of its rows as source, destination and both (brute force over the rows);
 * - the table's bytes are those the document's rules give, rebuilt here independently;
 * - no table where a dictionary gives up, below T rows, or in version 5;
 * - a flipped byte is caught by the checksum, a table forged behind valid checksums by the
 *   structural checks or by the comparison with the rows (--verify, the in-memory decoder);
 * - one-host summaries answered from the tables equal those read from the rows, over whole and
 *   cut ranges, sealed and open minutes, and the filter shapes that may use them. */
#include "engine/query.h"
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <xxhash.h>
#include <zstd.h>

#include "engine/base.h"

TEST_SCRATCH_SUITE(atot, "atot");

#define M0  1704164640000LL /* a minute boundary */
#define MIN 60000LL

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

/* Address k of a pool: IPv4 (v4-mapped) for even k, IPv6 for odd. */
static ns_addr pool_addr(uint32_t k)
{
    ns_addr a;
    memset(&a, 0, sizeof a);
    if (k % 2 == 0) {
        a.b[10] = a.b[11] = 0xff;
        a.b[12] = 10;
        a.b[13] = (uint8_t)(k >> 16);
        a.b[14] = (uint8_t)(k >> 8);
        a.b[15] = (uint8_t)k;
    } else {
        a.b[0] = 0x20;
        a.b[1] = 0x01;
        a.b[2] = 0x0d;
        a.b[3] = 0xb8;
        a.b[13] = (uint8_t)(k >> 16);
        a.b[14] = (uint8_t)(k >> 8);
        a.b[15] = (uint8_t)k;
    }
    return a;
}

/* A skewed pick from a pool of `pool`: a few addresses take most rows (as on real links). */
static uint32_t skewed(uint32_t pool)
{
    double u = (double)(rnd() % 1000000) / 1e6;
    return (uint32_t)(u * u * u * pool);
}

/* n rows over the minute starting at t0: skewed sources and destinations from a pool of
 * `pool`, one row in 20 with its source as destination, raw and roll-up rows (flows 0, 1, many). */
static eng_flow *make_rows(size_t n, uint32_t pool, int64_t t0)
{
    eng_flow *r = calloc(n ? n : 1, sizeof *r);
    cr_assert(r != NULL);
    for (size_t i = 0; i < n; i++) {
        r[i].first_ms = t0 + (int64_t)(rnd() % 60000);
        r[i].last_ms = r[i].first_ms + (int64_t)(rnd() % 5000) - 500; /* sometimes before */
        r[i].packets = 1 + rnd() % 1000;
        r[i].bytes = 40 + rnd() % 1500000;
        r[i].flows = i % 7 == 0 ? 1 + rnd() % 50 : 0;
        r[i].src = pool_addr(skewed(pool));
        r[i].dst = rnd() % 20 == 0 ? r[i].src : pool_addr(skewed(pool));
        r[i].exporter = pool_addr(1000000 + (uint32_t)(rnd() % 3) * 2);
        r[i].source_id = 7;
        r[i].proto = rnd() % 2 ? 6 : 17;
        r[i].src_port = (uint16_t)rnd();
        r[i].dst_port = (uint16_t)(rnd() % 4 ? 443 : rnd());
    }
    return r;
}

static uint64_t thr_of(size_t n)
{
    return n >> 10 > 64 ? n >> 10 : 64;
}

/* The totals of address a's rows, by brute force. */
static void add_side(eng_side_totals *x, const eng_flow *r, bool times)
{
    if (times) {
        x->first_ms = x->rows == 0 || r->first_ms < x->first_ms ? r->first_ms : x->first_ms;
        x->last_ms = x->rows == 0 || r->last_ms > x->last_ms ? r->last_ms : x->last_ms;
    }
    x->rows++;
    x->flows += eng_flow_count(r);
    x->packets += r->packets;
    x->bytes += r->bytes;
}

static eng_addr_totals brute(const eng_flow *r, size_t n, const uint8_t *a)
{
    eng_addr_totals t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < n; i++) {
        bool s = memcmp(r[i].src.b, a, 16) == 0, d = memcmp(r[i].dst.b, a, 16) == 0;
        if (s)
            add_side(&t.src, &r[i], true);
        if (d)
            add_side(&t.dst, &r[i], true);
        if (s && d)
            add_side(&t.both, &r[i], false);
    }
    return t;
}

typedef struct rec {
    uint8_t a[16];
    uint32_t row;
    uint8_t side; /* 0 src, 1 dst */
} rec;

static int cmp_rec(const void *x, const void *y)
{
    const rec *p = x, *q = y;
    int c = memcmp(p->a, q->a, 16);
    if (c)
        return c;
    return p->row != q->row ? (p->row > q->row) - (p->row < q->row) : p->side - q->side;
}

/* brute() for every distinct src and dst address at once, by sorting (address, row) pairs:
 * the addresses ascending (16 bytes each) in *addrs, their totals in *tots; their count. */
static size_t all_totals(const eng_flow *r, size_t n, uint8_t **addrs, eng_addr_totals **tots)
{
    rec *v = malloc(2 * (n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        memcpy(v[2 * i].a, r[i].src.b, 16);
        v[2 * i].row = (uint32_t)i;
        v[2 * i].side = 0;
        memcpy(v[2 * i + 1].a, r[i].dst.b, 16);
        v[2 * i + 1].row = (uint32_t)i;
        v[2 * i + 1].side = 1;
    }
    qsort(v, 2 * n, sizeof *v, cmp_rec);
    *addrs = malloc(2 * (n ? n : 1) * 16);
    *tots = calloc(2 * (n ? n : 1), sizeof **tots);
    size_t m = 0;
    for (size_t k = 0; k < 2 * n; k++) {
        if (k == 0 || memcmp(v[k].a, v[k - 1].a, 16) != 0)
            memcpy(*addrs + m++ * 16, v[k].a, 16);
        eng_addr_totals *t = &(*tots)[m - 1];
        const eng_flow *row = &r[v[k].row];
        add_side(v[k].side ? &t->dst : &t->src, row, true);
        /* the same row as the record before, other side: its src is its dst */
        if (v[k].side == 1 && k > 0 && v[k - 1].row == v[k].row &&
            memcmp(v[k - 1].a, v[k].a, 16) == 0)
            add_side(&t->both, row, false);
    }
    free(v);
    return m;
}

static void side_is(const eng_side_totals *got, const eng_side_totals *want, bool times,
                    const char *what, size_t k)
{
    cr_assert(eq(u64, got->rows, want->rows), "%s rows, address %zu", what, k);
    cr_assert(eq(u64, got->flows, want->flows), "%s flows, address %zu", what, k);
    cr_assert(eq(u64, got->packets, want->packets), "%s packets, address %zu", what, k);
    cr_assert(eq(u64, got->bytes, want->bytes), "%s bytes, address %zu", what, k);
    if (times && want->rows) {
        cr_assert(eq(i64, got->first_ms, want->first_ms), "%s first, address %zu", what, k);
        cr_assert(eq(i64, got->last_ms, want->last_ms), "%s last, address %zu", what, k);
    }
}

/* Every address with rows >= T listed with its exact totals, every other one not listed;
 * returns the number listed. */
static size_t check_against_rows(eng_seg *s, const eng_flow *r, size_t n)
{
    uint8_t *addrs;
    eng_addr_totals *tots;
    size_t m = all_totals(r, n, &addrs, &tots), listed = 0;
    /* the fast reference against the plain one, on a few addresses */
    for (size_t k = 0; k < m; k += 1 + m / 16) {
        eng_addr_totals b = brute(r, n, addrs + k * 16);
        side_is(&tots[k].src, &b.src, true, "reference src", k);
        side_is(&tots[k].dst, &b.dst, true, "reference dst", k);
        side_is(&tots[k].both, &b.both, false, "reference both", k);
    }
    for (size_t k = 0; k < m; k++) {
        eng_addr_totals want = tots[k], got;
        ns_addr a;
        memcpy(a.b, addrs + k * 16, 16);
        int rc = eng_seg_addr_totals(s, &a, &got);
        uint64_t rows = want.src.rows + want.dst.rows - want.both.rows;
        if (rows < thr_of(n)) {
            cr_assert(eq(int, rc, 0), "address %zu on %" PRIu64 " rows is not listed", k, rows);
            continue;
        }
        cr_assert(eq(int, rc, 1), "address %zu on %" PRIu64 " rows (T %" PRIu64 ") is listed", k,
                  rows, thr_of(n));
        side_is(&got.src, &want.src, true, "src", k);
        side_is(&got.dst, &want.dst, true, "dst", k);
        side_is(&got.both, &want.both, false, "both", k);
        listed++;
    }
    /* addresses no row has */
    for (uint32_t k = 0; k < 50; k++) {
        ns_addr a = pool_addr(5000000 + k);
        eng_addr_totals got;
        cr_assert(eq(int, eng_seg_addr_totals(s, &a, &got), 0));
    }
    free(addrs);
    free(tots);
    return listed;
}

Test(atot, every_busy_address_is_listed_with_the_totals_of_its_rows)
{
    static const size_t sizes[] = {70000, 20000, 3000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        eng_flow *r = make_rows(n, (uint32_t)(n / 10), M0);
        cr_assert(eq(int, eng_seg_write(tpath("a.seg"), r, n), 0));
        eng_seg *s;
        cr_assert(eq(int, eng_seg_open(tpath("a.seg"), &s), 0));
        cr_assert(eq(u32, eng_seg_get_info(s)->version, 7));
        cr_assert(gt(u64, eng_seg_get_info(s)->atot_csize, 0), "size %zu has a table", n);
        size_t listed = check_against_rows(s, r, n);
        cr_assert(gt(sz, listed, 2), "size %zu: some addresses are busy", n);
        eng_seg_index_stats st;
        cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
        cr_assert(eq(u64, st.atot_entries, listed));
        cr_assert(eq(u64, st.atot_min_rows, thr_of(n)));
        cr_assert(eq(int, eng_seg_addr_totals_verify(s, r, n), 0));
        eng_seg_close(s);
        free(r);
    }
}

/* Counters whose sums wrap past 2^64 (the footer's too), times across the whole int64 range and
 * rows whose last time comes before their first: a sound file, read as one. */
Test(atot, wrapping_counters_and_wild_times_are_a_sound_table)
{
    size_t n = 5000;
    eng_flow *r = make_rows(n, 100, M0);
    for (size_t i = 0; i < n; i++) {
        r[i].bytes = UINT64_MAX - i;
        r[i].packets = 1ull << 63;
        r[i].flows = i % 3 ? 0 : UINT64_MAX / 3;
        int64_t t = (int64_t)(rnd() >> 2) * (rnd() % 2 ? 1 : -1);
        r[i].first_ms = t;
        r[i].last_ms = i % 4 ? t + 1000 : t - 123456789; /* some end before they start */
    }
    /* a busy address whose every row starts after every other row ends, and ends before it
     * starts: its first time lies past the footer's last */
    for (size_t i = n - 100; i < n; i++) {
        r[i].src = pool_addr(999999);
        r[i].first_ms = INT64_MAX - 1000 - (int64_t)(i % 5);
        r[i].last_ms = r[i].first_ms - 10;
    }
    cr_assert(eq(int, eng_seg_write(tpath("wild.seg"), r, n), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(tpath("wild.seg"), &s), 0));
    cr_assert(gt(u64, eng_seg_get_info(s)->atot_csize, 0));
    cr_assert(eq(int, eng_seg_index_check(s, NULL), 0));
    cr_assert(gt(sz, check_against_rows(s, r, n), 0));
    cr_assert(eq(int, eng_seg_addr_totals_verify(s, r, n), 0));
    eng_seg_close(s);
    size_t len;
    uint8_t *file = test_slurp(tpath("wild.seg"), &len);
    eng_flow *rows = NULL;
    size_t rn = 0;
    cr_assert(eq(int, eng_seg_decode_mem(file, len, &rows, &rn), 0));
    cr_assert(eq(sz, rn, n));
    free(rows);
    free(file);
    free(r);
}

Test(atot, no_table_below_the_threshold_past_a_dictionary_or_in_version_5)
{
    eng_seg *s;
    ns_addr a = pool_addr(0);
    eng_addr_totals got;
    /* 63 rows all from one address: below the 64 rows that list one */
    eng_flow *r = make_rows(63, 1, M0);
    cr_assert(eq(int, eng_seg_write(tpath("small.seg"), r, 63), 0));
    cr_assert(eq(int, eng_seg_open(tpath("small.seg"), &s), 0));
    cr_assert(eq(u64, eng_seg_get_info(s)->atot_csize, 0));
    cr_assert(eq(u64, eng_seg_get_info(s)->atot_rsize, 0));
    cr_assert(eq(int, eng_seg_addr_totals(s, &a, &got), 0));
    eng_seg_close(s);
    free(r);

    /* a busy source, but every destination distinct: the dst dictionary gives up, no table */
    size_t n = 5000;
    r = make_rows(n, 100, M0);
    for (size_t i = 0; i < n; i++)
        r[i].dst = pool_addr(2000000 + (uint32_t)i);
    cr_assert(eq(int, eng_seg_write(tpath("distinct.seg"), r, n), 0));
    cr_assert(eq(int, eng_seg_open(tpath("distinct.seg"), &s), 0));
    cr_assert(eq(u64, eng_seg_get_info(s)->atot_csize, 0));
    cr_assert(eq(int, eng_seg_addr_totals(s, &r[0].src, &got), 0));
    eng_seg_close(s);
    free(r);

    /* version 5 keeps none and reads as before */
    r = make_rows(n, 100, M0);
    cr_assert(eq(int, eng__seg_write_version(tpath("v5.seg"), r, n, 5), 0));
    cr_assert(eq(int, eng_seg_open(tpath("v5.seg"), &s), 0));
    cr_assert(eq(u32, eng_seg_get_info(s)->version, 5));
    cr_assert(eq(int, eng_seg_addr_totals(s, &r[0].src, &got), 0));
    cr_assert(eq(int, eng_seg_index_check(s, NULL), 0));
    eng_seg_close(s);
    free(r);
}

/* ---------------------------------------------------------------------------------------------
 * The document's table, rebuilt from the rows by its rules alone. */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put_byte(buf *b, uint8_t v)
{
    if (b->len == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        b->p = realloc(b->p, b->cap);
    }
    b->p[b->len++] = v;
}

static void put_var(buf *b, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(b, (uint8_t)v);
}

typedef unsigned __int128 u128;

static u128 be128(const uint8_t *a)
{
    u128 v = 0;
    for (int i = 0; i < 16; i++)
        v = v << 8 | a[i];
    return v;
}

static void doc_side(buf *b, const eng_side_totals *t, bool times, int64_t F, int64_t L)
{
    put_var(b, t->rows);
    if (!t->rows)
        return;
    put_var(b, t->flows);
    put_var(b, t->packets);
    put_var(b, t->bytes);
    if (times) {
        put_var(b, (uint64_t)(t->first_ms - F));
        put_var(b, (uint64_t)(L - t->last_ms));
    }
}

/* tweak: bytes added to the first listed address's source side (a forger's change) */
static buf doc_table(const eng_flow *r, size_t n, uint64_t tweak)
{
    buf b = {0};
    uint64_t T = thr_of(n);
    int64_t F = INT64_MAX, L = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        F = r[i].first_ms < F ? r[i].first_ms : F;
        L = r[i].last_ms > L ? r[i].last_ms : L;
    }
    uint8_t *addrs;
    eng_addr_totals *t;
    size_t m = all_totals(r, n, &addrs, &t), listed = 0;
    for (size_t k = 0; k < m; k++) {
        eng_addr_totals x = t[k];
        if (x.src.rows + x.dst.rows - x.both.rows >= T) {
            memmove(addrs + listed * 16, addrs + k * 16, 16);
            t[listed++] = x;
        }
    }
    put_var(&b, T);
    put_var(&b, listed);
    u128 prev = 0;
    for (size_t k = 0; k < listed; k++) {
        u128 v = be128(addrs + k * 16), d = v - prev;
        put_var(&b, (uint64_t)(d >> 64));
        put_var(&b, (uint64_t)d);
        prev = v;
    }
    if (listed)
        t[0].src.bytes += tweak;
    for (size_t k = 0; k < listed; k++) {
        doc_side(&b, &t[k].src, true, F, L);
        doc_side(&b, &t[k].dst, true, F, L);
        doc_side(&b, &t[k].both, false, F, L);
    }
    free(t);
    free(addrs);
    return b;
}

/* The file at path with its address totals blob replaced by raw (compressed here), the footer
 * pointing at it and both checksums right, at out; its bytes in *file (caller frees). */
static size_t with_table(const char *path, const uint8_t *raw, size_t rlen, const char *out,
                         uint8_t **file)
{
    size_t len;
    uint8_t *orig = test_slurp(path, &len);
    size_t flen = (size_t)ns_get_le64(orig + len - 24), foot = len - 24 - flen;
    uint64_t aoff = ns_get_le64(orig + foot + 96);
    cr_assert(gt(u64, aoff, 0));
    size_t cap = ZSTD_compressBound(rlen);
    uint8_t *comp = malloc(cap), *f = malloc(len + cap);
    size_t clen = ZSTD_compress(comp, cap, raw, rlen, 3);
    cr_assert(not(ZSTD_isError(clen)));
    /* the blob is the last before the footer */
    size_t off = (size_t)aoff;
    memcpy(f, orig, off);
    memcpy(f + off, comp, clen);
    off += clen;
    size_t fstart = off;
    memcpy(f + off, orig + foot, flen);
    ns_put_le64(f + fstart + 104, clen);
    ns_put_le64(f + fstart + 112, rlen);
    ns_put_le64(f + fstart + 120, XXH64(comp, clen, 0));
    off += flen;
    memcpy(f + off, orig + len - 24, 24);
    ns_put_le64(f + off + 8, XXH64(f + fstart, flen, 0));
    off += 24;
    test_spit(out, f, off);
    free(comp);
    free(orig);
    *file = f;
    return off;
}

static uint8_t *table_bytes(eng_seg *s, const char *path, size_t *rlen)
{
    const eng_seg_info *in = eng_seg_get_info(s);
    size_t len;
    uint8_t *file = test_slurp(path, &len);
    uint8_t *raw = malloc((size_t)in->atot_rsize + 1);
    size_t got = ZSTD_decompress(raw, (size_t)in->atot_rsize + 1, file + in->atot_offset,
                                 (size_t)in->atot_csize);
    cr_assert(not(ZSTD_isError(got)));
    cr_assert(eq(sz, got, (size_t)in->atot_rsize));
    free(file);
    *rlen = got;
    return raw;
}

Test(atot, the_table_is_byte_for_byte_what_the_document_describes)
{
    size_t n = 40000;
    eng_flow *r = make_rows(n, 4000, M0);
    cr_assert(eq(int, eng_seg_write(tpath("d.seg"), r, n), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(tpath("d.seg"), &s), 0));
    size_t rlen;
    uint8_t *raw = table_bytes(s, tpath("d.seg"), &rlen);
    buf want = doc_table(r, n, 0);
    cr_assert(eq(sz, rlen, want.len));
    for (size_t i = 0; i < rlen; i++)
        cr_assert(eq(u8, raw[i], want.p[i]), "byte %zu of %zu", i, rlen);
    eng_seg_close(s);
    free(raw);
    free(want.p);
    free(r);
}

Test(atot, flipped_and_forged_tables_are_refused)
{
    size_t n = 20000;
    eng_flow *r = make_rows(n, 2000, M0);
    const char *good = tpath("good.seg"), *bad = tpath("bad.seg");
    cr_assert(eq(int, eng_seg_write(good, r, n), 0));
    eng_seg *s;
    cr_assert(eq(int, eng_seg_open(good, &s), 0));
    eng_seg_info in = *eng_seg_get_info(s);
    eng_seg_close(s);
    size_t len;
    uint8_t *orig = test_slurp(good, &len);
    eng_addr_totals got;
    ns_addr busy = pool_addr(0); /* the skew puts most rows on the first addresses */

    /* a flipped byte anywhere in the blob: the checksum */
    for (int it = 0; it < 20; it++) {
        uint8_t *f = malloc(len);
        memcpy(f, orig, len);
        f[in.atot_offset + rnd() % in.atot_csize] ^= (uint8_t)(1u << (rnd() % 8));
        test_spit(bad, f, len);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0), "the footer is intact");
        cr_assert(eq(int, eng_seg_addr_totals(s, &busy, &got), NS_E_CORRUPT));
        cr_assert(eq(int, eng_seg_index_check(s, NULL), NS_E_CORRUPT));
        eng_seg_close(s);
        eng_flow *rows = NULL;
        size_t rn = 0;
        cr_assert(eq(int, eng_seg_decode_mem(f, len, &rows, &rn), NS_E_CORRUPT));
        free(f);
    }

    /* the document's table unchanged, recompressed: accepted */
    buf doc = doc_table(r, n, 0);
    uint8_t *f;
    size_t flen = with_table(good, doc.p, doc.len, bad, &f);
    cr_assert(eq(int, eng_seg_open(bad, &s), 0));
    cr_assert(eq(int, eng_seg_addr_totals(s, &busy, &got), 1));
    cr_assert(eq(int, eng_seg_addr_totals_verify(s, r, n), 0));
    eng_seg_close(s);
    eng_flow *rows = NULL;
    size_t rn = 0;
    cr_assert(eq(int, eng_seg_decode_mem(f, flen, &rows, &rn), 0));
    free(rows);
    free(f);
    free(doc.p);

    /* plausible but false totals: the structure holds, the rows disagree */
    doc = doc_table(r, n, 1);
    flen = with_table(good, doc.p, doc.len, bad, &f);
    cr_assert(eq(int, eng_seg_open(bad, &s), 0));
    cr_assert(eq(int, eng_seg_index_check(s, NULL), 0));
    cr_assert(eq(int, eng_seg_addr_totals_verify(s, r, n), NS_E_CORRUPT));
    eng_seg_close(s);
    rows = NULL;
    cr_assert(eq(int, eng_seg_decode_mem(f, flen, &rows, &rn), NS_E_CORRUPT));
    free(f);
    free(doc.p);

    /* structural forgeries, each behind valid checksums */
    buf base = doc_table(r, n, 0);
    for (int kind = 0; kind < 5; kind++) {
        buf m = {malloc(base.len + 1), base.len, base.len + 1};
        cr_assert(m.p != NULL);
        memcpy(m.p, base.p, base.len);
        switch (kind) {
        case 0: /* a threshold the rows do not give */
            m.p[0] = (uint8_t)(m.p[0] + 1);
            break;
        case 1: /* cut short */
            m.len -= 3;
            break;
        case 2: /* a byte left over */
            put_byte(&m, 0);
            break;
        case 3: /* no entries */
            m.len = 2;
            m.p[1] = 0;
            break;
        case 4: /* random bytes after the count */
            for (size_t i = 3; i < m.len; i++)
                m.p[i] = (uint8_t)rnd();
            break;
        }
        flen = with_table(good, m.p, m.len, bad, &f);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0), "kind %d", kind);
        int rc = eng_seg_addr_totals(s, &busy, &got);
        if (kind == 4)
            cr_assert(rc == NS_E_CORRUPT || eng_seg_addr_totals_verify(s, r, n) == NS_E_CORRUPT,
                      "kind %d", kind);
        else
            cr_assert(eq(int, rc, NS_E_CORRUPT), "kind %d", kind);
        eng_seg_close(s);
        rows = NULL;
        cr_assert(eq(int, eng_seg_decode_mem(f, flen, &rows, &rn), NS_E_CORRUPT), "kind %d", kind);
        free(f);
        free(m.p);
    }
    free(base.p);
    free(orig);
    free(r);
}

/* ---------------------------------------------------------------------------------------------
 * One-host summaries through the database. */

Test(atot, filters_that_name_exactly_one_host_and_its_sides)
{
    static const struct {
        const char *text;
        unsigned sides;
    } cases[] = {
        {"host 10.0.0.1", ENG_SIDE_SRC | ENG_SIDE_DST},
        {"src host 10.0.0.1", ENG_SIDE_SRC},
        {"dst host 10.0.0.1", ENG_SIDE_DST},
        {"src host 10.0.0.1 or dst host 10.0.0.1", ENG_SIDE_SRC | ENG_SIDE_DST},
        {"(dst host 10.0.0.1)", ENG_SIDE_DST},
        {"host 2001:db8::7", ENG_SIDE_SRC | ENG_SIDE_DST},
        {"net 10.0.0.1/32", ENG_SIDE_SRC | ENG_SIDE_DST},
        {"src host 10.0.0.1 and dst host 10.0.0.1", 0},
        {"src host 10.0.0.1 and not dst host 10.0.0.1", 0},
        {"(src host 10.0.0.1 and not dst host 10.0.0.1) or (dst host 10.0.0.1 and not src host "
         "10.0.0.1)",
         0},
        {"not host 10.0.0.1", 0},
        {"host 10.0.0.1 and port 80", 0},
        {"host 10.0.0.1 or host 10.0.0.2", 0},
        {"net 10.0.0.0/24", 0},
        {"host 10.0.0.1 and bytes > 0", 0},
        {"", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        qry_filter *f = NULL;
        char err[256];
        cr_assert(eq(int, qry_filter_compile(cases[k].text, &f, err, sizeof err), 0), "%s: %s",
                  cases[k].text, err);
        ns_addr a;
        cr_assert(eq(u32, qry_filter_host_sides(f, &a), cases[k].sides), "%s", cases[k].text);
        qry_filter_free(f);
    }
}

static void add_tot(qry_totals *t, const eng_flow *r)
{
    if (t->flows == 0 || r->first_ms < t->first_ms)
        t->first_ms = r->first_ms;
    if (t->flows == 0 || r->last_ms > t->last_ms)
        t->last_ms = r->last_ms;
    t->flows += eng_flow_count(r);
    t->packets += r->packets;
    t->bytes += r->bytes;
}

Test(atot, one_host_summaries_from_the_tables_equal_the_rows)
{
    char err[256];
    eng_db *db;
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    /* six minutes of 12,000 rows; the last stays open */
    const size_t per = 12000, mins = 6, n = per * mins;
    eng_flow *all = malloc(n * sizeof *all);
    for (size_t m = 0; m < mins; m++) {
        eng_flow *r = make_rows(per, 1200, M0 + (int64_t)m * MIN);
        for (size_t i = 0; i < per; i++)
            r[i].last_ms = r[i].first_ms + (int64_t)(i % 1000); /* inside the minute's range */
        memcpy(all + m * per, r, per * sizeof *r);
        cr_assert(eq(int, eng_db_append(db, M0 + (int64_t)m * MIN, r, per), 0));
        free(r);
    }
    cr_assert(
        eq(int, eng_db_seal_due(db, M0 + (int64_t)(mins - 1) * MIN + 1000, false), (int)mins - 1));
    static const char *hosts[] = {"10.0.0.0", "2001:db8::1", "10.0.0.2", "10.0.1.200",
                                  "2001:db8::3:1"};
    static const char *forms[] = {"host ", "src host ", "dst host "};
    /* the whole store; minutes cut by the range; one sealed minute whole */
    const int64_t ranges[][2] = {
        {0, INT64_MAX}, {M0 + 30000, M0 + 4 * MIN + 20000}, {M0 + MIN, M0 + 2 * MIN + 6000}};
    eng_db_stats before, after;
    for (size_t h = 0; h < sizeof hosts / sizeof hosts[0]; h++) {
        ns_addr a;
        cr_assert(eq(int, ns_addr_parse(hosts[h], &a), 0));
        for (size_t fk = 0; fk < 3; fk++) {
            char text[128], slow[160];
            snprintf(text, sizeof text, "%s%s", forms[fk], hosts[h]);
            snprintf(slow, sizeof slow, "%s and bytes >= 0", text); /* not one host: rows */
            qry_filter *f, *g;
            cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0));
            cr_assert(eq(int, qry_filter_compile(slow, &g, err, sizeof err), 0));
            for (size_t q = 0; q < sizeof ranges / sizeof ranges[0]; q++) {
                qry_totals want = {0}, got, rows;
                for (size_t i = 0; i < n; i++) {
                    bool s = memcmp(all[i].src.b, a.b, 16) == 0,
                         d = memcmp(all[i].dst.b, a.b, 16) == 0;
                    bool hit = fk == 0 ? s || d : fk == 1 ? s : d;
                    /* a flow counts when its span meets the range */
                    if (hit && all[i].last_ms >= ranges[q][0] && all[i].first_ms <= ranges[q][1])
                        add_tot(&want, &all[i]);
                }
                cr_assert(eq(int, qry_summary(db, ranges[q][0], ranges[q][1], f, &got), 0));
                cr_assert(eq(int, qry_summary(db, ranges[q][0], ranges[q][1], g, &rows), 0));
                cr_assert(eq(u64, got.flows, want.flows), "%s, range %zu", text, q);
                cr_assert(eq(u64, got.packets, want.packets), "%s, range %zu", text, q);
                cr_assert(eq(u64, got.bytes, want.bytes), "%s, range %zu", text, q);
                cr_assert(eq(u64, rows.flows, want.flows), "%s, range %zu", slow, q);
                cr_assert(eq(u64, rows.bytes, want.bytes), "%s, range %zu", slow, q);
                if (want.flows) {
                    cr_assert(eq(i64, got.first_ms, want.first_ms), "%s, range %zu", text, q);
                    cr_assert(eq(i64, got.last_ms, want.last_ms), "%s, range %zu", text, q);
                    cr_assert(eq(i64, got.first_ms, rows.first_ms), "%s, range %zu", text, q);
                    cr_assert(eq(i64, got.last_ms, rows.last_ms), "%s, range %zu", text, q);
                }
            }
            qry_filter_free(f);
            qry_filter_free(g);
        }
    }
    /* the busiest host's whole-store summary takes every sealed minute from its table (the
     * host is in all of them: no bloom filter skips one), the same question as rows none */
    static const struct {
        const char *text;
        uint64_t pruned;
    } use[] = {{"host 10.0.0.0", mins - 1}, {"host 10.0.0.0 and bytes >= 0", 0}};
    for (size_t k = 0; k < 2; k++) {
        qry_filter *f;
        qry_totals t;
        cr_assert(eq(int, qry_filter_compile(use[k].text, &f, err, sizeof err), 0));
        eng_db_get_stats(db, &before);
        cr_assert(eq(int, qry_summary(db, 0, INT64_MAX, f, &t), 0));
        eng_db_get_stats(db, &after);
        cr_assert(eq(u64, after.segments_pruned - before.segments_pruned, use[k].pruned), "%s",
                  use[k].text);
        qry_filter_free(f);
    }
    free(all);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* A store upgraded in place: minutes written as version 5 (no tables) beside version 6 ones.
 * One-host summaries add the tables of the new minutes to the rows of the old, each flow once. */
Test(atot, a_store_of_version_5_and_6_segments_answers_from_both)
{
    char err[256], name[512];
    const size_t per = 8000;
    eng_flow *old = make_rows(per, 800, M0), *cur = make_rows(per, 800, M0 + MIN);
    for (size_t i = 0; i < per; i++) {
        old[i].last_ms = old[i].first_ms + 10;
        cur[i].last_ms = cur[i].first_ms + 10;
    }
    snprintf(name, sizeof name, "%s/m%lld-0.seg", tmpdir, (long long)(M0 / MIN));
    cr_assert(eq(int, eng__seg_write_version(name, old, per, 5), 0));
    eng_db *db;
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    cr_assert(eq(int, eng_db_append(db, M0 + MIN, cur, per), 0));
    cr_assert(eq(int, eng_db_seal_due(db, M0 + 3 * MIN, false), 1));
    static const char *forms[] = {"host ", "src host ", "dst host "};
    for (size_t fk = 0; fk < 3; fk++) {
        char text[64];
        snprintf(text, sizeof text, "%s%s", forms[fk], "10.0.0.0"); /* pool_addr(0): busy */
        qry_filter *f;
        cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0));
        ns_addr a = pool_addr(0);
        qry_totals want = {0}, got;
        const eng_flow *sets[2] = {old, cur};
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < per; i++) {
                bool s = memcmp(sets[k][i].src.b, a.b, 16) == 0,
                     d = memcmp(sets[k][i].dst.b, a.b, 16) == 0;
                if (fk == 0 ? s || d : fk == 1 ? s : d)
                    add_tot(&want, &sets[k][i]);
            }
        eng_db_stats before, after;
        eng_db_get_stats(db, &before);
        cr_assert(eq(int, qry_summary(db, 0, INT64_MAX, f, &got), 0));
        eng_db_get_stats(db, &after);
        cr_assert(gt(u64, want.flows, 0));
        cr_assert(eq(u64, got.flows, want.flows), "%s", text);
        cr_assert(eq(u64, got.packets, want.packets), "%s", text);
        cr_assert(eq(u64, got.bytes, want.bytes), "%s", text);
        cr_assert(eq(i64, got.first_ms, want.first_ms), "%s", text);
        cr_assert(eq(i64, got.last_ms, want.last_ms), "%s", text);
        /* the new minute from its table, the old one read */
        cr_assert(eq(u64, after.segments_pruned - before.segments_pruned, 1), "%s", text);
        qry_filter_free(f);
    }
    free(old);
    free(cur);
    cr_assert(eq(int, eng_db_close(db), 0));
}
