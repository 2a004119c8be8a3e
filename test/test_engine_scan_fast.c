/* Randomized tests of the scan's fast paths for a net filter with a top-N (the benchmark's
 * "/16 with top ports"), each against a plain path or brute force on data that reaches their
 * edges: a dictionary's values read in runs of short steps (engine/segment.c get_ascending), and
 * programs of one or two nets selected by ranges of codes, 16 rows at a time with AVX-512 where
 * the CPU has it (engine/filter.c select_ranges_*). */
#include "engine/query.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>

enum { ENC_DICT = 4 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(test_xorshift(&rng_state) % n);
}

static uint64_t rnd64(void)
{
    return test_xorshift(&rng_state);
}

/* v reads about two rows in three of its n, through idx. */
static void pick_rows(eng_colview *v, uint32_t *idx, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (rnd(3))
            idx[k++] = (uint32_t)i;
    v->idx = idx;
    v->n = k;
}

/* ---------------------------------------------------------------------------------------------
 * Dictionary values: m ascending 128-bit values whose steps mix the short one (high difference
 * 0, low 1 to 127) with long ones, changes of the high word, carries out of the low word (inside
 * a run of short steps too) and the short step's edges (0 and 128), written as the writer does,
 * read back through the column decoder (n = m rows, row i holding value i). */

static void be64(uint8_t *p, uint64_t v)
{
    for (int b = 7; b >= 0; b--, v >>= 8)
        p[b] = (uint8_t)v;
}

/* The raw ENC_DICT column of the m values (hi[], lo[]), row i naming value i. */
static size_t dict_column(const uint64_t *hi, const uint64_t *lo, size_t m, uint8_t *p)
{
    size_t k = test_put_varint(p, m);
    uint64_t phi = 0, plo = 0;
    for (size_t j = 0; j < m; j++) {
        k += test_put_varint(p + k, hi[j] - phi - (lo[j] < plo ? 1 : 0));
        k += test_put_varint(p + k, lo[j] - plo);
        phi = hi[j];
        plo = lo[j];
    }
    size_t cw = m <= 256 ? 1 : m <= 65536 ? 2 : 3;
    for (size_t b = 0; b < cw; b++)
        for (size_t i = 0; i < m; i++)
            p[k++] = (uint8_t)(i >> (8 * b));
    return k;
}

Test(scanfast, dictionary_values_in_runs_of_short_steps_read_as_written)
{
    enum { M = 700 };
    static uint64_t hi[M], lo[M];
    static uint8_t raw[8 + M * 22 + 2 * M], out[M * 16];
    for (int round = 0; round < 500; round++) {
        size_t m = 1 + rnd(M);
        uint64_t h = rnd(4) ? 0 : rnd64() >> rnd(64), l = rnd(3) ? 0xffff00000000ull : rnd64();
        if (rnd(4) == 0)
            l = UINT64_MAX - rnd(300); /* carries out of the low word soon */
        for (size_t j = 0; j < m; j++) {
            uint64_t step;
            switch (rnd(12)) {
            case 0: /* a long step */
                step = 128 + rnd64() % (1ull << rnd(40));
                break;
            case 1: /* the short step's edge */
                step = 127;
                break;
            case 2:
                step = 128;
                break;
            case 3: /* the high word moves (only if it can) */
                if (h < UINT64_MAX - 4) {
                    h += 1 + rnd(3);
                    l = rnd64() >> rnd(64);
                    step = 0;
                    break;
                }
                step = 1;
                break;
            default: /* short steps */
                step = 1 + rnd(rnd(2) ? 127 : 4);
                break;
            }
            if (j > 0 && step == 0 && h == hi[j - 1] && l <= lo[j - 1])
                step = 1;
            uint64_t nl = l + step;
            if (nl < l) { /* a carry into the high word: stop where it cannot go on */
                if (h == UINT64_MAX) {
                    m = j;
                    break;
                }
                h++;
            }
            l = nl;
            hi[j] = h;
            lo[j] = l;
        }
        if (m == 0)
            continue;
        size_t len = dict_column(hi, lo, m, raw);
        cr_assert(eq(int, eng__col_decode_raw(ENG_COL_SRC, ENC_DICT, raw, len, m, NULL, out), 0),
                  "round %d: %zu values", round, m);
        for (size_t j = 0; j < m; j++) {
            uint8_t want[16];
            be64(want, hi[j]);
            be64(want + 8, lo[j]);
            cr_assert(eq(int, memcmp(out + j * 16, want, 16), 0),
                      "round %d: value %zu of %zu (%016llx %016llx)", round, j, m,
                      (unsigned long long)hi[j], (unsigned long long)lo[j]);
        }
        /* a value equal to the one before (a zero step) anywhere is refused */
        if (m >= 2) {
            size_t j = 1 + rnd((uint32_t)(m - 1));
            uint64_t keep_h = hi[j], keep_l = lo[j];
            hi[j] = hi[j - 1];
            lo[j] = lo[j - 1];
            len = dict_column(hi, lo, m, raw);
            cr_assert(eq(int, eng__col_decode_raw(ENG_COL_SRC, ENC_DICT, raw, len, m, NULL, out),
                         NS_E_CORRUPT),
                      "round %d: value %zu repeated", round, j);
            hi[j] = keep_h;
            lo[j] = keep_l;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Programs of one or two nets (`net`, `src net`, `dst net`, negated, and/or) over random
 * dictionaries and codes (sorted source codes like a segment's, or not), all rows or a subset,
 * row counts on both sides of 16: qry_filter_select_dict (its SIMD path where the CPU has it),
 * qry__filter_select_dict_plain and a row-by-row match of the same rows agree. */

/* cap random v4-mapped values near 10.0.0.0/14, ascending, distinct; their count. */
static size_t random_values(uint8_t *vals, size_t cap)
{
    for (size_t i = 0; i < cap; i++) {
        ns_addr a;
        char t[32];
        snprintf(t, sizeof t, "10.%u.%u.%u", rnd(4), rnd(rnd(2) ? 256 : 3), rnd(256));
        cr_assert(eq(int, ns_addr_parse(t, &a), 0));
        memcpy(vals + i * 16, a.b, 16);
    }
    return test_sort_unique16(vals, cap);
}

static void random_net(char *buf, size_t cap)
{
    static const char *const dirs[] = {"", "src ", "dst "};
    static const unsigned lens[] = {8, 14, 15, 16, 16, 16, 24, 32, 0};
    unsigned len = lens[rnd(9)];
    snprintf(buf, cap, "%snet 10.%u.%u.%u/%u", dirs[rnd(3)], rnd(5), len >= 24 ? rnd(3) : 0,
             len == 32 ? rnd(256) : 0, len);
}

Test(scanfast, net_programs_by_code_ranges_match_the_plain_path_and_row_by_row)
{
    enum { N = 5000, VALS = 600 };
    static uint8_t svals[VALS * 16], dvals[VALS * 16];
    static uint32_t scodes[N], dcodes[N], idx[N], out[N], out2[N];
    char ftext[256], a[96], b[96], err[160];
    uint8_t *scratch = NULL;
    size_t scap = 0;
    for (int round = 0; round < 400; round++) {
        size_t ns = random_values(svals, 1 + rnd(VALS)), nd = random_values(dvals, 1 + rnd(VALS));
        size_t n = rnd(4) ? 1 + rnd(N) : 1 + rnd(40);
        for (size_t i = 0; i < n; i++) {
            scodes[i] = rnd((uint32_t)ns);
            dcodes[i] = rnd((uint32_t)nd);
        }
        if (rnd(2)) /* rows sorted by source, as a segment's are */
            for (size_t i = 1; i < n; i++)
                if (scodes[i] < scodes[i - 1])
                    scodes[i] = scodes[i - 1];
        eng_coldict ds = {ns, svals, scodes}, dd = {nd, dvals, dcodes};
        eng_colview v = {.n = n, .mask = ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST)};
        v.dict[ENG_COL_SRC] = &ds;
        v.dict[ENG_COL_DST] = &dd;
        if (rnd(3) == 0)
            pick_rows(&v, idx, n);
        random_net(a, sizeof a);
        random_net(b, sizeof b);
        switch (rnd(5)) {
        case 0:
            snprintf(ftext, sizeof ftext, "%s", a);
            break;
        case 1:
            snprintf(ftext, sizeof ftext, "not %s", a);
            break;
        case 2:
            snprintf(ftext, sizeof ftext, "%s %s %s%s", a, rnd(2) ? "and" : "or",
                     rnd(3) ? "" : "not ", b);
            break;
        case 3:
            snprintf(ftext, sizeof ftext, "not (%s %s %s)", a, rnd(2) ? "and" : "or", b);
            break;
        default: /* three tests or more: the general path, for comparison */
            snprintf(ftext, sizeof ftext, "(%s) or (%s)", a, b);
            break;
        }
        qry_filter *f;
        cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0), "%s: %s", ftext, err);
        cr_assert(qry_filter_by_dict(f, &v), "%s", ftext);
        size_t m = qry_filter_select_dict(f, &v, &scratch, &scap, out);
        size_t m2 = qry__filter_select_dict_plain(f, &v, &scratch, &scap, out2);
        cr_assert(eq(sz, m, m2), "round %d '%s': simd %zu rows, plain %zu", round, ftext, m, m2);
        size_t want = 0;
        for (size_t k = 0; k < v.n; k++) {
            size_t i = v.idx ? v.idx[k] : k;
            eng_flow r = test_row_of_codes(svals, scodes, dvals, dcodes, i);
            if (!qry_filter_match(f, &r))
                continue;
            cr_assert(lt(sz, want, m), "round %d '%s': row %zu missing", round, ftext, i);
            cr_assert(eq(u32, out[want], (uint32_t)i), "round %d '%s': row %zu", round, ftext,
                      want);
            cr_assert(eq(u32, out2[want], (uint32_t)i), "round %d '%s': plain row %zu", round,
                      ftext, want);
            want++;
        }
        cr_assert(eq(sz, m, want), "round %d '%s': rows", round, ftext);
        qry_filter_free(f);
    }
    free(scratch);
}

/* ---------------------------------------------------------------------------------------------
 * Counters read from their byte planes (eng_scan_opts.planes, a top-N by a port or the
 * protocol): sealed minutes whose packets and bytes fill 1, 2, 3, 4, 5 or 8 byte planes (past
 * 4: transposed as before), one of them with only bytes past 4 (one counter as planes, the other
 * decoded: both decoded), with address filters, a filter on bytes (no planes) and ranges that cut
 * segments (rows with times: decoded), against brute force of every group. */

#define PM0  1704164640000LL /* a minute boundary */
#define PMIN 60000LL
enum { PN = 8, PROWS = 400 }; /* minutes, rows a minute */
static eng_flow prow[PN * PROWS];

/* A counter of about `planes` bytes. */
static uint64_t counter(unsigned planes)
{
    uint64_t top = planes >= 8 ? UINT64_MAX >> 12 : (1ull << (8 * planes)) - 1;
    return rnd(3) ? 1 + rnd(200) : 1 + rnd64() % top;
}

Test(scanfast, counters_read_from_planes_match_brute_force)
{
    char dir[64], err[160];
    test_mkdtemp(dir, sizeof dir, "scanfast");
    ns_log_set_level(NS_LOG_ERROR);
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    eng_db *pdb = test_open_db(dir, &o);
    /* each minute's widest packets and bytes, in planes */
    static const unsigned pk_planes[PN] = {1, 2, 3, 4, 2, 5, 1, 8};
    static const unsigned by_planes[PN] = {2, 3, 4, 4, 8, 5, 1, 8};
    for (int m = 0; m < PN; m++) {
        for (int j = 0; j < PROWS; j++) {
            eng_flow *f = &prow[m * PROWS + j];
            char src[32], dst[32];
            memset(f, 0, sizeof *f);
            snprintf(src, sizeof src, "10.%u.%u.%u", rnd(3), rnd(4), rnd(30));
            snprintf(dst, sizeof dst, "%s.%u.%u", rnd(2) ? "10.0" : "192.168", rnd(3), rnd(40));
            cr_assert(eq(int, ns_addr_parse(src, &f->src), 0));
            cr_assert(eq(int, ns_addr_parse(dst, &f->dst), 0));
            cr_assert(eq(int, ns_addr_parse("192.0.2.1", &f->exporter), 0));
            f->proto = (uint8_t)(rnd(2) ? 6 : 17);
            f->dst_port = (uint16_t)(rnd(3) ? 80 + rnd(3) : rnd(65536));
            f->packets = counter(pk_planes[m]);
            f->bytes = counter(by_planes[m]);
            if (j == 0) { /* the widest of each, at least once */
                f->packets = pk_planes[m] >= 8 ? 1ull << 60 : 1ull << (8 * pk_planes[m] - 1);
                f->bytes = by_planes[m] >= 8 ? 1ull << 61 : 1ull << (8 * by_planes[m] - 1);
            }
            f->first_ms = PM0 + m * PMIN + (int64_t)rnd(50000);
            f->last_ms = f->first_ms + (int64_t)rnd(9000);
            f->sampling = 1;
            cr_assert(eq(int, eng_db_append(pdb, PM0 + m * PMIN + 30000, f, 1), 0));
        }
    }
    cr_assert(gt(int, eng_db_seal_due(pdb, 0, true), 0));
    static const char *const ftexts[] = {"",
                                         "net 10.0.0.0/16",
                                         "src net 10.1.0.0/16",
                                         "dst net 192.168.0.0/16 or src host 10.2.1.3",
                                         "bytes > 1000",
                                         "not net 10.0.0.0/16 and proto tcp"};
    static qry_totals want[65536];
    for (int round = 0; round < 36; round++) {
        const char *ftext = ftexts[round % 6];
        bool by_port = round % 12 < 6;
        int64_t from = INT64_MIN, to = INT64_MAX;
        if (round >= 24) { /* cutting segments: rows with their times */
            from = PM0 + (int64_t)rnd(3 * PMIN);
            to = from + (int64_t)rnd(5 * PMIN);
        }
        qry_filter *f = NULL;
        if (*ftext)
            cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0), "%s", err);
        qry_group g;
        qry_group_one(by_port ? QRY_BY_DSTPORT : QRY_BY_PROTO, &g);
        memset(want, 0, sizeof want);
        uint64_t groups = 0;
        for (size_t i = 0; i < PN * PROWS; i++) {
            const eng_flow *r = &prow[i];
            if (r->last_ms < from || r->first_ms > to || (f && !qry_filter_match(f, r)))
                continue;
            qry_totals *w = &want[by_port ? r->dst_port : r->proto];
            groups += w->flows == 0;
            w->flows++;
            w->packets += r->packets;
            w->bytes += r->bytes;
        }
        qry_top_result res;
        cr_assert(eq(int,
                     qry_top_group_opt(pdb, from, to, f, &g, QRY_M_BYTES, 100000,
                                       QRY_TOP_NO_GROUP_TIMES, &res),
                     0));
        cr_assert(eq(u64, res.groups, groups), "round %d '%s'", round, ftext);
        cr_assert(eq(sz, res.n, (size_t)groups), "round %d '%s'", round, ftext);
        for (size_t k = 0; k < res.n; k++) {
            const qry_totals *w = &want[res.rows[k].key.v[0].num & 0xffff];
            cr_assert(eq(u64, res.rows[k].t.flows, w->flows), "round %d '%s' key %u", round, ftext,
                      res.rows[k].key.v[0].num);
            cr_assert(eq(u64, res.rows[k].t.packets, w->packets), "round %d '%s' key %u", round,
                      ftext, res.rows[k].key.v[0].num);
            cr_assert(eq(u64, res.rows[k].t.bytes, w->bytes), "round %d '%s' key %u", round, ftext,
                      res.rows[k].key.v[0].num);
        }
        qry_top_free(&res);
        qry_filter_free(f);
    }
    eng_db_close(pdb);
    if (!getenv("KEEP"))
        test_rm_rf(dir);
}

/* A view's counters as planes read back through eng_colview_fill (rows built for a filter) and
 * eng_colview_unplane (16 rows at a time, then one by one), against the values, for row counts
 * on both sides of 16 and row subsets. */
Test(scanfast, counters_as_planes_fill_rows_and_unplane_to_their_values)
{
    enum { N = 100 };
    static uint8_t planes[2][8 * N];
    static uint64_t val[2][N];
    static uint32_t idx[N];
    static eng_flow out[N];
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + rnd(N);
        memset(planes, 0, sizeof planes);
        for (int c = 0; c < 2; c++)
            for (size_t i = 0; i < n; i++) {
                val[c][i] = rnd64() >> (32 + rnd(32)); /* up to 4 planes */
                for (size_t p = 0; p < 8; p++)
                    planes[c][p * n + i] = (uint8_t)(val[c][i] >> (8 * p));
            }
        eng_colview v = {
            .n = n, .mask = ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES), .nrows = n};
        v.planes[ENG_COL_PACKETS] = planes[0];
        v.planes[ENG_COL_BYTES] = planes[1];
        if (rnd(2))
            pick_rows(&v, idx, n);
        eng_colview_rows(&v, 0, v.n, out);
        for (size_t k = 0; k < v.n; k++) {
            size_t i = v.idx ? v.idx[k] : k;
            cr_assert(eq(u64, out[k].packets, val[0][i]), "round %d row %zu", round, i);
            cr_assert(eq(u64, out[k].bytes, val[1][i]), "round %d row %zu", round, i);
        }
        eng_colview u;
        cr_assert(eq(int, eng_colview_unplane(&v, &u, &buf, &cap), 0));
        cr_assert(u.planes[ENG_COL_BYTES] == NULL && u.col[ENG_COL_BYTES] != NULL);
        for (size_t i = 0; i < n; i++) {
            cr_assert(eq(u64, eng_col_u64(&u, ENG_COL_PACKETS, i), val[0][i]), "round %d", round);
            cr_assert(eq(u64, eng_col_u64(&u, ENG_COL_BYTES, i), val[1][i]), "round %d", round);
        }
    }
    free(buf);
}
