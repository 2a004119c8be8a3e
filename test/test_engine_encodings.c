/* Tests of the format 5 encodings (engine/segment.c): dictionary-coded source and destination
 * addresses, source_id coded by exporter, plain ports and the source side of the index as fences
 * over rows sorted by source; each chosen only when it is exact and pays, with the byte planes
 * kept otherwise; and the decoders refusing every inconsistency a damaged blob can carry. */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>

#define T0 1704164645123LL

enum { ENC_PLAIN = 0, ENC_TRANSPOSE = 1, ENC_DICT = 4, ENC_BY_EXPORTER = 5 };

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
    cr_assert(eq(u32, eng_seg_get_info(s)->version, 6));
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
