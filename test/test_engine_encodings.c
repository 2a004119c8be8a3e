/* Tests of the format 5 and 7 encodings (engine/segment.c): dictionary-coded source and
 * destination addresses, source_id coded by exporter, plain ports, the source side of the index
 * as fences over rows sorted by source, and (7) the columns that follow an address coded by its
 * dictionary; each chosen only when it is exact and pays, with the byte planes kept otherwise;
 * and the decoders refusing every inconsistency a damaged blob can carry. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

#define T0 1704164645123LL

enum { ENC_PLAIN = 0, ENC_TRANSPOSE = 1, ENC_DICT = 4, ENC_BY_EXPORTER = 5, ENC_BY_ADDR = 6 };

TEST_SCRATCH_SUITE(enc, "enc");

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

/* Address k of a pool: IPv4-mapped mostly, every fifth one IPv6 (so a dictionary mixes both). */
static ns_addr pool_addr(uint32_t k)
{
    ns_addr a;
    memset(&a, 0, sizeof a);
    if (k % 5 == 4) {
        a.b[0] = 0x20;
        a.b[1] = 0x01;
        a.b[2] = 0x0d;
        a.b[3] = 0xb8;
        a.b[8] = (uint8_t)(k >> 24);
        a.b[12] = (uint8_t)(k >> 16);
        a.b[15] = (uint8_t)k;
    } else {
        ns_addr_from_v4(&a, 0x0a000000u + k * 7919u);
    }
    return a;
}

static int cmp_src(const void *x, const void *y)
{
    return memcmp(((const eng_flow *)x)->src.b, ((const eng_flow *)y)->src.b, 16);
}

/* n rows over nsrc sources, ndst destinations and nexp exporters, each exporter with one
 * source_id; sorted by source when sorted. */
static eng_flow *make_rows(size_t n, uint32_t nsrc, uint32_t ndst, uint32_t nexp, bool sorted)
{
    eng_flow *r = calloc(n, sizeof *r);
    cr_assert(r != NULL);
    for (size_t i = 0; i < n; i++) {
        uint32_t e = (uint32_t)(rnd() % nexp);
        r[i].first_ms = T0 + (int64_t)(rnd() % 60000);
        r[i].last_ms = r[i].first_ms + (int64_t)(rnd() % 5000);
        r[i].packets = 1 + rnd() % 1000;
        r[i].bytes = 40 * r[i].packets + rnd() % 1000;
        r[i].src = pool_addr((uint32_t)(rnd() % nsrc));
        r[i].dst = pool_addr(1000000u + (uint32_t)(rnd() % ndst));
        ns_addr_from_v4(&r[i].exporter, 0x7f000001u + e * 3u);
        r[i].source_id = 100 + e * 11;
        r[i].src_port = (uint16_t)rnd();
        r[i].dst_port = (uint16_t)(rnd() % 4 ? 443 : rnd());
        r[i].proto = 6;
        r[i].sampling = 1;
    }
    if (sorted)
        qsort(r, n, sizeof *r, cmp_src);
    return r;
}

static void assert_same(const eng_flow *got, const eng_flow *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(int, memcmp(&got[i], &want[i], sizeof *got), 0), "row %zu differs", i);
}

/* Writes rows, checks the encodings the directory names, reads everything back. */
static eng_seg *write_and_check(const char *name, const eng_flow *rows, size_t n, uint32_t src_enc,
                                uint32_t dst_enc, uint32_t sid_enc, bool fences)
{
    eng_seg *s = NULL;
    cr_assert(eq(int, eng_seg_write(tpath(name), rows, n), 0));
    cr_assert(eq(int, eng_seg_open(tpath(name), &s), 0));
    cr_assert(eq(u32, eng_seg_get_info(s)->version, 7));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_SRC)->encoding, src_enc));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_DST)->encoding, dst_enc));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_SOURCE_ID)->encoding, sid_enc));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_SRC_PORT)->encoding, ENC_PLAIN));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_DST_PORT)->encoding, ENC_PLAIN));
    eng_seg_index_stats st;
    cr_assert(eq(int, eng_seg_index_check(s, &st), 0));
    cr_assert(eq(int, st.src_fences, fences));
    eng_flow *got = calloc(n ? n : 1, sizeof *got);
    cr_assert(got != NULL);
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
    assert_same(got, rows, n);
    free(got);
    return s;
}

Test(enc, repeated_addresses_and_one_source_id_an_exporter_are_coded_and_round_trip)
{
    const size_t n = 20000;
    eng_flow *rows = make_rows(n, 300, 2000, 7, true);
    eng_seg *s = write_and_check("a.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true);
    /* source_id alone: decoded through the exporter column, which the read leaves zero */
    eng_flow *got = calloc(n, sizeof *got);
    cr_assert(eq(int, eng_seg_read(s, ENG_COLMASK(ENG_COL_SOURCE_ID), got), 0));
    for (size_t i = 0; i < n; i++) {
        cr_assert(eq(u32, got[i].source_id, rows[i].source_id), "row %zu", i);
        cr_assert(eq(u8, got[i].exporter.b[15], 0), "row %zu: exporter not asked for", i);
    }
    free(got);
    eng_seg_close(s);
    free(rows);
}

Test(enc, the_column_set_gives_sorted_distinct_values_and_codes)
{
    const size_t n = 5000;
    eng_flow *rows = make_rows(n, 50, 300, 3, true);
    eng_seg *s = write_and_check("b.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true);
    eng_colset cs = {0};
    cr_assert(eq(
        int, eng__seg_load_cols(s, ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST), &cs), 0));
    for (int side = 0; side < 2; side++) {
        eng_col c = side ? ENG_COL_DST : ENG_COL_SRC;
        cr_assert(ne(u32, cs.dmask & ENG_COLMASK(c), 0), "dmask %x", cs.dmask);
        const eng_coldict *d = &cs.dict[c];
        for (size_t j = 1; j < d->n; j++)
            cr_assert(lt(int, memcmp(d->vals + (j - 1) * 16, d->vals + j * 16, 16), 0));
        for (size_t i = 0; i < n; i++) {
            const ns_addr *want = side ? &rows[i].dst : &rows[i].src;
            cr_assert(lt(u32, d->codes[i], (uint32_t)d->n));
            cr_assert(eq(int, memcmp(d->vals + (size_t)d->codes[i] * 16, want->b, 16), 0));
        }
    }
    eng__colset_free(&cs);
    eng_seg_close(s);
    free(rows);
}

Test(enc, byte_planes_stay_where_a_code_would_not_pay_or_be_exact)
{
    /* nearly every address distinct: no dictionary */
    const size_t n = 3000;
    eng_flow *rows = make_rows(n, 1u << 30, 1u << 30, 4, true);
    eng_seg_close(write_and_check("distinct.seg", rows, n, ENC_TRANSPOSE, ENC_TRANSPOSE,
                                  ENC_BY_EXPORTER, true));
    free(rows);
    /* one exporter with two source_ids */
    rows = make_rows(n, 40, 40, 4, true);
    rows[n / 2].source_id++;
    eng_seg_close(write_and_check("twoids.seg", rows, n, ENC_DICT, ENC_DICT, ENC_TRANSPOSE, true));
    free(rows);
    /* more exporters than a table holds */
    rows = make_rows(n, 40, 40, 300, true);
    eng_seg_close(write_and_check("manyexp.seg", rows, n, ENC_DICT, ENC_DICT, ENC_TRANSPOSE, true));
    free(rows);
    /* rows not sorted by source: the index keeps its hashed source side */
    rows = make_rows(n, 40, 40, 4, false);
    eng_seg_close(
        write_and_check("unsorted.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, false));
    free(rows);
    /* one row: nothing repeats */
    rows = make_rows(1, 1, 1, 1, true);
    eng_seg_close(
        write_and_check("one.seg", rows, 1, ENC_TRANSPOSE, ENC_TRANSPOSE, ENC_TRANSPOSE, true));
    free(rows);
}

static bool bit(const uint64_t *sel, size_t i)
{
    return sel[i / 64] >> (i % 64) & 1;
}

Test(enc, fences_name_every_row_of_a_source_and_few_others)
{
    /* a few sources with long runs (across blocks, starting on block boundaries) and many
     * with short ones, so fences repeat and fall inside and between runs */
    const size_t n = 9000;
    eng_flow *rows = make_rows(n, 400, 100, 2, false);
    for (size_t i = 0; i < 4000; i++)
        rows[i].src = pool_addr(i < 2048 ? 10 : i < 3072 ? 11 : 12);
    qsort(rows, n, sizeof *rows, cmp_src);
    eng_seg *s = write_and_check("f.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true);
    size_t words = (n + 63) / 64;
    uint64_t *sel = calloc(words, sizeof *sel);
    for (uint32_t k = 0; k < 400 + 50; k++) {
        ns_addr a = pool_addr(k < 400 ? k : 5000000u + k); /* then absent ones */
        size_t nsel = 0, count = 0;
        memset(sel, 0, words * sizeof *sel);
        cr_assert(eq(int, eng_seg_select(s, &a, 1, sel, &nsel), 0));
        for (size_t i = 0; i < n; i++) {
            bool has = memcmp(rows[i].src.b, a.b, 16) == 0 || memcmp(rows[i].dst.b, a.b, 16) == 0;
            count += bit(sel, i);
            cr_assert(has == false || bit(sel, i), "address %u: row %zu missed", k, i);
        }
        cr_assert(eq(sz, nsel, count));
    }
    free(sel);
    eng_seg_close(s);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * The decoders' checks, on hand-made bytes. */

/* A dictionary of m values 10, 20, ... (low word, high word 0), codes of n rows (1 byte). */
static size_t dict_bytes(uint8_t *p, uint64_t m, size_t n, const uint8_t *codes, uint64_t step)
{
    size_t k = test_put_varint(p, m);
    for (uint64_t j = 0; j < m; j++) {
        k += test_put_varint(p + k, 0);
        k += test_put_varint(p + k, j ? step : 10);
    }
    memcpy(p + k, codes, n);
    return k + n;
}

Test(enc, the_dictionary_decoder_refuses_what_is_inconsistent)
{
    uint8_t raw[256], out[16 * 8], codes[8] = {0, 1, 2, 1, 0, 2, 2, 1};
    size_t len = dict_bytes(raw, 3, 8, codes, 10);
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len, 8, NULL, out), 0));
    cr_assert(eq(u8, out[15], 10));
    cr_assert(eq(u8, out[16 + 15], 20));
    cr_assert(eq(u8, out[2 * 16 + 15], 30));
    /* a code naming no value */
    codes[5] = 3;
    len = dict_bytes(raw, 3, 8, codes, 10);
    cr_assert(
        eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len, 8, NULL, out), NS_E_CORRUPT));
    codes[5] = 2;
    /* a value repeated (difference 0): not ascending */
    len = dict_bytes(raw, 3, 8, codes, 0);
    cr_assert(
        eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len, 8, NULL, out), NS_E_CORRUPT));
    /* more values than rows */
    len = dict_bytes(raw, 9, 8, codes, 1);
    cr_assert(
        eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len, 8, NULL, out), NS_E_CORRUPT));
    /* a byte too many, a byte too few */
    len = dict_bytes(raw, 3, 8, codes, 10);
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len + 1, 8, NULL, out),
                 NS_E_CORRUPT));
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, len - 1, 8, NULL, out),
                 NS_E_CORRUPT));
    /* past 2^128 */
    size_t k = test_put_varint(raw, 2);
    k += test_put_varint(raw + k, UINT64_MAX);
    k += test_put_varint(raw + k, 0);
    k += test_put_varint(raw + k, 1);
    k += test_put_varint(raw + k, 0);
    memset(raw + k, 0, 8);
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, k + 8, 8, NULL, out),
                 NS_E_CORRUPT));
    /* a column that may not be a dictionary */
    len = dict_bytes(raw, 3, 8, codes, 10);
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_NEXTHOP, ENC_DICT, raw, len, 8, NULL, out),
                 NS_E_CORRUPT));
}

Test(enc, the_exporter_table_decoder_refuses_what_is_inconsistent)
{
    uint8_t raw[256], exp[16 * 4], out[4 * 4];
    ns_addr a, b;
    ns_addr_from_v4(&a, 0x7f000001u);
    ns_addr_from_v4(&b, 0x7f000002u);
    for (int i = 0; i < 4; i++)
        memcpy(exp + 16 * i, (i % 2 ? &b : &a)->b, 16);
    size_t k = test_put_varint(raw, 2);
    memcpy(raw + k, a.b, 16);
    k += 16;
    k += test_put_varint(raw + k, 7);
    memcpy(raw + k, b.b, 16);
    k += 16;
    k += test_put_varint(raw + k, 300);
    cr_assert(
        eq(int, eng__col_decode_raw(ENG_COL_SOURCE_ID, ENC_BY_EXPORTER, raw, k, 4, exp, out), 0));
    cr_assert(eq(u8, out[0], 7));
    cr_assert(eq(u8, out[4], 300 & 0xff));
    cr_assert(eq(u8, out[5], 1));
    /* a row from an exporter the table lacks */
    exp[16 * 3 + 15] = 9;
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_SOURCE_ID, ENC_BY_EXPORTER, raw, k, 4, exp, out),
                 NS_E_CORRUPT));
    exp[16 * 3 + 15] = 2;
    /* bytes left over, exporters out of order, no exporter at all */
    cr_assert(eq(int,
                 eng__col_decode_raw(ENG_COL_SOURCE_ID, ENC_BY_EXPORTER, raw, k + 1, 4, exp, out),
                 NS_E_CORRUPT));
    uint8_t swapped[256];
    size_t j = test_put_varint(swapped, 2);
    memcpy(swapped + j, raw + 1 + 17, 16 + 2); /* b first */
    j += 18;
    memcpy(swapped + j, raw + 1, 17); /* then a */
    j += 17;
    cr_assert(eq(int,
                 eng__col_decode_raw(ENG_COL_SOURCE_ID, ENC_BY_EXPORTER, swapped, j, 4, exp, out),
                 NS_E_CORRUPT));
    uint8_t zero = 0;
    cr_assert(eq(int,
                 eng__col_decode_raw(ENG_COL_SOURCE_ID, ENC_BY_EXPORTER, &zero, 1, 4, exp, out),
                 NS_E_CORRUPT));
    /* only source_id may be coded so */
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_IN_IF, ENC_BY_EXPORTER, raw, k, 4, exp, out),
                 NS_E_CORRUPT));
}

/* The columns that follow an address (version 7), with the address column they follow. */
static const struct {
    eng_col c, key;
} byaddr_cols[] = {
    {ENG_COL_SRC_AS, ENG_COL_SRC},   {ENG_COL_IN_IF, ENG_COL_SRC},  {ENG_COL_SRC_MASK, ENG_COL_SRC},
    {ENG_COL_NEXTHOP, ENG_COL_DST},  {ENG_COL_DST_AS, ENG_COL_DST}, {ENG_COL_OUT_IF, ENG_COL_DST},
    {ENG_COL_DST_MASK, ENG_COL_DST},
};
#define NBYADDR (sizeof byaddr_cols / sizeof byaddr_cols[0])

/* Routing as a router exports it: AS, mask and interface a property of each address, and the
 * next hop of each destination (v4 and v6 next hops, so every one of its 16 bytes varies). */
static void route_rows(eng_flow *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t s = r[i].src.b[15] | (uint32_t)r[i].src.b[12] << 8 | (uint32_t)r[i].src.b[1] << 16;
        uint32_t d = r[i].dst.b[15] | (uint32_t)r[i].dst.b[12] << 8 | (uint32_t)r[i].dst.b[1] << 16;
        r[i].src_as = 64496 + s % 97 + (s % 3 == 0 ? 400000 : 0); /* some 4-byte ASes */
        r[i].in_if = 1 + s % 5;
        r[i].src_mask = (uint8_t)(16 + s % 9);
        r[i].dst_as = 64496 + d % 89;
        r[i].out_if = 10 + d % 3 + (d % 7 == 0 ? 70000 : 0);
        r[i].dst_mask = (uint8_t)(24 - d % 5);
        if (d % 4)
            ns_addr_from_v4(&r[i].nexthop, 0xc0000200u + d % 13);
        else
            r[i].nexthop = pool_addr(5 * (d % 11) + 4); /* an IPv6 next hop */
    }
}

static void assert_byaddr(eng_seg *s, uint32_t want_mask)
{
    for (size_t k = 0; k < NBYADDR; k++) {
        bool want = want_mask & ENG_COLMASK(byaddr_cols[k].c);
        cr_assert(eq(u32, eng_seg_col(s, byaddr_cols[k].c)->encoding,
                     want ? ENC_BY_ADDR
                     : byaddr_cols[k].c == ENG_COL_SRC_MASK || byaddr_cols[k].c == ENG_COL_DST_MASK
                         ? ENC_PLAIN
                         : ENC_TRANSPOSE),
                  "%s", eng_col_name(byaddr_cols[k].c));
    }
}

Test(enc, columns_that_follow_an_address_are_coded_by_its_dictionary_and_round_trip)
{
    const size_t n = 20000;
    eng_flow *rows = make_rows(n, 300, 2000, 7, true);
    route_rows(rows, n);
    eng_seg *s = write_and_check("route.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true);
    uint32_t all = 0;
    for (size_t k = 0; k < NBYADDR; k++)
        all |= ENG_COLMASK(byaddr_cols[k].c);
    assert_byaddr(s, all);
    /* each such column alone: decoded through its address's codes, the address itself left
     * zero (not asked for) */
    eng_flow *got = calloc(n, sizeof *got);
    cr_assert(got != NULL);
    for (size_t k = 0; k < NBYADDR; k++) {
        memset(got, 0, n * sizeof *got);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLMASK(byaddr_cols[k].c), got), 0));
        eng_flow want;
        for (size_t i = 0; i < n; i++) {
            memset(&want, 0, sizeof want);
            want.src_as = byaddr_cols[k].c == ENG_COL_SRC_AS ? rows[i].src_as : 0;
            want.in_if = byaddr_cols[k].c == ENG_COL_IN_IF ? rows[i].in_if : 0;
            want.src_mask = byaddr_cols[k].c == ENG_COL_SRC_MASK ? rows[i].src_mask : 0;
            want.dst_as = byaddr_cols[k].c == ENG_COL_DST_AS ? rows[i].dst_as : 0;
            want.out_if = byaddr_cols[k].c == ENG_COL_OUT_IF ? rows[i].out_if : 0;
            want.dst_mask = byaddr_cols[k].c == ENG_COL_DST_MASK ? rows[i].dst_mask : 0;
            if (byaddr_cols[k].c == ENG_COL_NEXTHOP)
                want.nexthop = rows[i].nexthop;
            cr_assert(eq(int, memcmp(&got[i], &want, sizeof want), 0), "%s, row %zu",
                      eng_col_name(byaddr_cols[k].c), i);
        }
    }
    /* and beside the address's values (the column set hands the address out then) */
    eng_colset cs = {0};
    cr_assert(eq(int,
                 eng__seg_load_cols(s, ENG_COLMASK(ENG_COL_DST_AS) | ENG_COLMASK(ENG_COL_SRC), &cs),
                 0));
    cr_assert(eq(u32, cs.mask, ENG_COLMASK(ENG_COL_DST_AS) | ENG_COLMASK(ENG_COL_SRC)));
    for (size_t i = 0; i < n; i++) {
        cr_assert(eq(u32, ns_get_le32(cs.col[ENG_COL_DST_AS] + 4 * i), rows[i].dst_as));
        cr_assert(eq(int, memcmp(cs.col[ENG_COL_SRC] + 16 * i, rows[i].src.b, 16), 0));
    }
    eng__colset_free(&cs);
    free(got);
    eng_seg_close(s);
    free(rows);
}

Test(enc, a_column_with_two_values_for_one_address_keeps_its_planes)
{
    const size_t n = 6000;
    eng_flow *rows = make_rows(n, 300, 2000, 7, true);
    route_rows(rows, n);
    /* a row late in the segment whose next hop and input interface differ from its address's
     * others (a second exporter, a route that changed within the minute) */
    size_t late = n - 7;
    bool same_dst = false, same_src = false;
    for (size_t i = 0; i < late; i++) {
        same_dst |= memcmp(rows[i].dst.b, rows[late].dst.b, 16) == 0;
        same_src |= memcmp(rows[i].src.b, rows[late].src.b, 16) == 0;
    }
    cr_assert(same_dst && same_src, "the late row's addresses are met before it");
    rows[late].nexthop.b[3] ^= 0x40; /* one byte of sixteen */
    rows[late].in_if += 256;         /* the second byte */
    eng_seg *s = write_and_check("twohops.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true);
    uint32_t want = 0;
    for (size_t k = 0; k < NBYADDR; k++)
        if (byaddr_cols[k].c != ENG_COL_NEXTHOP && byaddr_cols[k].c != ENG_COL_IN_IF)
            want |= ENG_COLMASK(byaddr_cols[k].c);
    assert_byaddr(s, want);
    eng_seg_close(s);
    /* no dictionary for the destinations (nearly every one distinct): its columns keep their
     * planes, the source's are still coded */
    free(rows);
    rows = make_rows(n, 300, 1u << 30, 7, true);
    route_rows(rows, n);
    s = write_and_check("nodict.seg", rows, n, ENC_DICT, ENC_TRANSPOSE, ENC_BY_EXPORTER, true);
    assert_byaddr(s, ENG_COLMASK(ENG_COL_SRC_AS) | ENG_COLMASK(ENG_COL_IN_IF) |
                         ENG_COLMASK(ENG_COL_SRC_MASK));
    eng_seg_close(s);
    free(rows);
}

Test(enc, older_versions_are_written_without_the_address_tables_and_read_back)
{
    const size_t n = 4000;
    eng_flow *rows = make_rows(n, 100, 500, 3, true);
    route_rows(rows, n);
    eng_flow *got = calloc(n, sizeof *got);
    cr_assert(got != NULL);
    for (uint32_t v = 5; v <= 6; v++) {
        eng_seg *s = NULL;
        cr_assert(eq(int, eng__seg_write_version(tpath("old.seg"), rows, n, v), 0));
        cr_assert(eq(int, eng_seg_open(tpath("old.seg"), &s), 0));
        cr_assert(eq(u32, eng_seg_get_info(s)->version, v));
        assert_byaddr(s, 0);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
        assert_same(got, rows, n);
        eng_seg_close(s);
    }
    free(got);
    free(rows);
}

Test(enc, the_address_table_decoder_refuses_a_table_of_the_wrong_size)
{
    /* 3 distinct destinations over 5 rows; out_if 4 bytes a value */
    const uint32_t codes[5] = {2, 0, 1, 2, 0};
    uint8_t vals[3 * 16] = {0}, raw[3 * 4 + 1], out[5 * 4];
    eng_coldict key = {3, vals, codes};
    for (uint32_t j = 0; j < 3; j++) {
        raw[j] = (uint8_t)(10 + j); /* plane 0 */
        raw[3 + j] = (uint8_t)j;    /* plane 1 */
        raw[6 + j] = raw[9 + j] = 0;
    }
    cr_assert(eq(int, eng__col_decode_byaddr(ENG_COL_OUT_IF, raw, 12, 5, &key, out), 0));
    for (size_t i = 0; i < 5; i++)
        cr_assert(eq(u32, ns_get_le32(out + 4 * i), (10 + codes[i]) | codes[i] << 8), "row %zu", i);
    cr_assert(eq(int, eng__col_decode_byaddr(ENG_COL_OUT_IF, raw, 13, 5, &key, out), NS_E_CORRUPT));
    cr_assert(eq(int, eng__col_decode_byaddr(ENG_COL_OUT_IF, raw, 11, 5, &key, out), NS_E_CORRUPT));
    /* a column that follows no address */
    cr_assert(eq(int, eng__col_decode_byaddr(ENG_COL_PROTO, raw, 3, 5, &key, out), NS_E_CORRUPT));
}

/* A directory that names a column coded by an address's dictionary when that address column
 * is not a dictionary: refused on opening (checksums right), before any read. */
Test(enc, a_table_by_an_address_without_its_dictionary_is_refused_on_opening)
{
    const size_t n = 3000;
    eng_flow *rows = make_rows(n, 100, 500, 3, true);
    route_rows(rows, n);
    eng_seg_close(write_and_check("key.seg", rows, n, ENC_DICT, ENC_DICT, ENC_BY_EXPORTER, true));
    free(rows);
    size_t len;
    uint8_t *buf = test_slurp(tpath("key.seg"), &len);
    uint64_t flen = ns_get_le64(buf + len - 24);
    uint8_t *foot = buf + len - 24 - flen, *dir = foot + 128; /* version 7's fixed part */
    cr_assert(eq(u32, ns_get_le32(dir + 48 * ENG_COL_DST_AS + 8), ENC_BY_ADDR));
    ns_put_le32(dir + 48 * ENG_COL_DST + 8, ENC_TRANSPOSE);
    ns_put_le64(buf + len - 16, XXH64(foot, (size_t)flen, 0));
    test_spit(tpath("key2.seg"), buf, len);
    eng_seg *s = NULL;
    cr_assert(eq(int, eng_seg_open(tpath("key2.seg"), &s), NS_E_CORRUPT));
    cr_assert(s == NULL);
    /* the same bytes with the dictionary named again open */
    ns_put_le32(dir + 48 * ENG_COL_DST + 8, ENC_DICT);
    ns_put_le64(buf + len - 16, XXH64(foot, (size_t)flen, 0));
    test_spit(tpath("key2.seg"), buf, len);
    cr_assert(eq(int, eng_seg_open(tpath("key2.seg"), &s), 0));
    eng_seg_close(s);
    free(buf);
}
