/* Randomized tests of the query engine's fast paths (engine/query.c, engine/filter.c): random
 * rows over many sealed minute segments and open minutes, random filters, groupings and time
 * ranges, each answer against a brute-force aggregation of the same rows made here, and against
 * the engine's plain path (group times read for every row). The fast paths: a filtered top-N
 * without group times reads no time columns of segments inside the range (span_of_filter finds
 * the total's range); address filters tested once per dictionary value and walked per row
 * through a table of the tests' answers; one small numeric key counted in an array; a
 * dictionary's codes widened 16 rows at a time. */
#include "engine/query.h"
#include "engine/query_int.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>

#define M0  1704164640000LL /* 2024-01-02T03:04:00Z, a minute boundary */
#define MIN 60000LL

static char tmpdir[64];
static eng_db *db;

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof tmpdir, "qfast");
    ns_log_set_level(NS_LOG_ERROR);
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true, .cache_bytes = 8u << 20};
    db = test_open_db(tmpdir, &o);
}

static void teardown(void)
{
    eng_db_close(db);
    db = NULL;
    if (!getenv("KEEP"))
        test_rm_rf(tmpdir);
}

TestSuite(qfast, .init = setup, .fini = teardown);

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(test_xorshift(&rng_state) % n);
}

static ns_addr addr(const char *text)
{
    ns_addr a;
    cr_assert(eq(int, ns_addr_parse(text, &a), 0), "bad test address %s", text);
    return a;
}

#define NMIN 12   /* minutes of rows; the last two stay open */
#define ROWS 9600 /* 800 a minute, of fewer addresses: dictionaries */
static eng_flow rows[ROWS];

/* A row received in minute m (from M0): long flows, started up to four minutes earlier, so
 * segments' time ranges overlap and the total's range is not that of one segment. */
static eng_flow random_row(int m)
{
    static const uint8_t protos[] = {6, 6, 17, 1, 58, 47};
    char src[64], dst[64];
    eng_flow f;
    memset(&f, 0, sizeof f);
    if (rnd(6) == 0)
        snprintf(src, sizeof src, "2001:db8:%x::%x", rnd(4), rnd(20));
    else
        snprintf(src, sizeof src, "10.%u.%u.%u", rnd(3), rnd(4), rnd(8));
    if (rnd(7) == 0)
        snprintf(dst, sizeof dst, "2001:db8:%x::1:%x", rnd(3), rnd(15));
    else
        snprintf(dst, sizeof dst, "%s.%u.%u", rnd(3) ? "192.168" : "10.1", rnd(4), rnd(12));
    f.src = addr(src);
    f.dst = addr(dst);
    f.exporter = addr("192.0.2.1");
    f.proto = protos[rnd(6)];
    f.src_port = (uint16_t)(rnd(3) ? 1024 + rnd(2000) : rnd(4) * 443);
    f.dst_port = (uint16_t)(rnd(4) ? rnd(3) * 80 + 53 : 30000 + rnd(30000));
    f.packets = 1 + rnd(50);
    f.bytes = 40 + rnd(100000);
    f.first_ms = M0 + m * MIN + (int64_t)rnd(60000) - (rnd(4) ? 0 : (int64_t)rnd(4 * 60000));
    f.last_ms = f.first_ms + (rnd(5) ? (int64_t)rnd(20000) : (int64_t)rnd(6 * 60000));
    f.sampling = 1;
    return f;
}

static void fill(void)
{
    for (int i = 0; i < ROWS; i++) {
        int m = i % NMIN;
        rows[i] = random_row(m);
        cr_assert(eq(int, eng_db_append(db, M0 + m * MIN + 30000, &rows[i], 1), 0));
    }
    eng_db_seal_due(db, M0 + (NMIN - 2) * MIN + 500, false); /* the last two minutes open */
}

static bool totals_same(const qry_totals *a, const qry_totals *b)
{
    return a->flows == b->flows && a->packets == b->packets && a->bytes == b->bytes &&
           a->first_ms == b->first_ms && a->last_ms == b->last_ms;
}

/* Address-only filters (tested through the dictionaries), mixed ones (rows built), and ones
 * that read times (the plain path). */
static const char *const filters[] = {
    "net 10.0.0.0/16",
    "src net 10.1.0.0/16",
    "dst net 192.168.1.0/24",
    "net 10.1.0.0/16",
    "host 10.0.1.3",
    "src host 10.2.3.4 or dst net 192.168.2.0/24",
    "not net 10.0.0.0/15",
    "net 2001:db8::/32",
    "src net 2001:db8:1::/48 or dst host 10.1.2.3",
    "(src net 10.0.0.0/16 or dst net 10.1.0.0/16) and not dst host 192.168.0.3",
    "net 10.0.0.0/16 and port 53",
    "proto tcp",
    "net 10.1.0.0/16 and duration > 30000",
    "dst net 172.16.0.0/12",
    "src net 10.0.0.0/8 and dst net 10.0.0.0/8",
    "inet6 and dst net 192.168.0.0/16",
    "inet or net 10.0.0.0/8",
    "any",
};

/* conversations and address pairs take the partitioned path (its map of dictionary values
 * carried from one segment to the next) */
static const char *const groupings[] = {
    "dstport",       "srcaddr", "dstaddr",      "proto",           "srcport",        "srcnet/16",
    "proto,dstport", "tos",     "conversation", "srcaddr,dstaddr", "dstaddr,srcaddr"};

/* Filtered top-N without group times against brute force: counts, the total and its times
 * (the segments inside the range were read without time columns), the span; and the same
 * groups and counts as the plain path. */
Test(qfast, filtered_top_without_group_times_matches_brute_force)
{
    fill();
    /* each minute's segment's range: ranges made of them leave segments wholly inside */
    int64_t seg_first[NMIN], seg_last[NMIN];
    for (int m = 0; m < NMIN; m++) {
        seg_first[m] = INT64_MAX;
        seg_last[m] = INT64_MIN;
    }
    for (int i = 0; i < ROWS; i++) {
        int m = i % NMIN;
        seg_first[m] = rows[i].first_ms < seg_first[m] ? rows[i].first_ms : seg_first[m];
        seg_last[m] = rows[i].last_ms > seg_last[m] ? rows[i].last_ms : seg_last[m];
    }
    char err[160];
    for (int round = 0; round < 240; round++) {
        if (round == 120) /* first with two minutes open, then every one sealed */
            cr_assert(gt(int, eng_db_seal_due(db, 0, true), 0));
        const char *ftext = filters[rnd(sizeof filters / sizeof filters[0])];
        const char *gtext = groupings[rnd(sizeof groupings / sizeof groupings[0])];
        int64_t from = INT64_MIN, to = INT64_MAX;
        int kind = (int)rnd(3);
        if (kind == 1) { /* a random range, its ends anywhere (inside segments or between) */
            from = M0 - 5 * MIN + (int64_t)rnd((NMIN + 5) * 60000);
            to = from + (int64_t)rnd(8 * 60000);
        } else if (kind == 2) { /* from one segment's first to another's last */
            int m1 = (int)rnd(NMIN), m2 = m1 + (int)rnd((uint32_t)(NMIN - m1));
            from = seg_first[m1] - (int64_t)rnd(2);
            to = seg_last[m2] + (int64_t)rnd(2);
        }
        qry_filter *f;
        qry_group g;
        cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0), "%s: %s", ftext, err);
        cr_assert(eq(int, qry_group_parse(gtext, &g, err, sizeof err), 0), "%s", err);
        qry_totals want = {0};
        for (int i = 0; i < ROWS; i++) {
            const eng_flow *r = &rows[i];
            if (r->last_ms < from || r->first_ms > to || !qry_filter_match(f, r))
                continue;
            if (want.flows == 0 || r->first_ms < want.first_ms)
                want.first_ms = r->first_ms;
            if (want.flows == 0 || r->last_ms > want.last_ms)
                want.last_ms = r->last_ms;
            want.flows++;
            want.packets += r->packets;
            want.bytes += r->bytes;
        }
        /* every metric (flows: many ties, ranked by key) and small limits, 0 too */
        qry_metric metric = (qry_metric)rnd(5);
        size_t limit = rnd(8);
        qry_top_result a, b;
        cr_assert(eq(
            int, qry_top_group_opt(db, from, to, f, &g, metric, limit, QRY_TOP_NO_GROUP_TIMES, &b),
            0));
        cr_assert(eq(int, qry_top_group(db, from, to, f, &g, metric, limit, &a), 0));
        cr_assert(totals_same(&b.total, &want),
                  "round %d '%s' by %s [%lld, %lld]: total %llu flows %lld..%lld, brute force "
                  "%llu flows %lld..%lld",
                  round, ftext, gtext, (long long)from, (long long)to,
                  (unsigned long long)b.total.flows, (long long)b.total.first_ms,
                  (long long)b.total.last_ms, (unsigned long long)want.flows,
                  (long long)want.first_ms, (long long)want.last_ms);
        cr_assert(eq(i64, b.span_ms, qry_span_ms(from, to, &want)), "round %d", round);
        cr_assert(totals_same(&a.total, &b.total), "round %d: the plain path's total", round);
        cr_assert(eq(u64, a.groups, b.groups), "round %d '%s' by %s", round, ftext, gtext);
        cr_assert(eq(sz, a.n, b.n));
        for (size_t i = 0; i < a.n; i++) {
            cr_assert(eq(u64, a.rows[i].t.flows, b.rows[i].t.flows), "round %d row %zu", round, i);
            cr_assert(eq(u64, a.rows[i].t.packets, b.rows[i].t.packets));
            cr_assert(eq(u64, a.rows[i].t.bytes, b.rows[i].t.bytes));
            cr_assert(eq(u64, a.rows[i].key.v[0].num, b.rows[i].key.v[0].num));
            cr_assert(memcmp(&a.rows[i].key, &b.rows[i].key, sizeof a.rows[i].key) == 0);
            cr_assert(eq(u64, a.rows[i].ab.bytes, b.rows[i].ab.bytes), "a conversation's a to b");
            cr_assert(eq(u64, a.rows[i].ba.flows, b.rows[i].ba.flows));
        }
        cr_assert(eq(u64, a.other.bytes, b.other.bytes));
        cr_assert(eq(u64, a.other.flows, b.other.flows));
        cr_assert(eq(u64, a.other.packets, b.other.packets));
        qry_top_free(&a);
        qry_top_free(&b);
        qry_filter_free(f);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Address filters over dictionaries: qry_filter_select_dict against qry_filter_match on each
 * row, for random dictionaries (v4 and v6 values sharing prefixes), random row subsets and
 * random filters of nets, hosts, lists and families under and/or/not, some with more tests
 * than the table of outcomes takes (the per-row walk). */

/* n distinct ascending values, about half v4, into vals; their count. */
static size_t random_dict(uint8_t *vals, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        ns_addr a;
        char t[64];
        if (rnd(2))
            snprintf(t, sizeof t, "10.%u.%u.%u", rnd(3), rnd(4) * 64, rnd(256));
        else
            snprintf(t, sizeof t, "2001:db8:%x:%x::%x", rnd(3), rnd(2) * 0x8000, rnd(300));
        a = addr(t);
        memcpy(vals + n * 16, a.b, 16);
        n++;
    }
    return test_sort_unique16(vals, n);
}

static void value_text(const uint8_t *v, char *buf, size_t cap)
{
    ns_addr a;
    char t[64];
    memcpy(a.b, v, 16);
    ns_addr_fmt(&a, t, sizeof t);
    snprintf(buf, cap, "%s", t);
}

/* A random primitive on an address near the dictionaries' values. */
static void random_prim(const uint8_t *vals, size_t n, char *buf, size_t cap)
{
    static const char *const dirs[] = {"", "src ", "dst "};
    char a[64], b[64];
    const uint8_t *v = vals + (size_t)rnd((uint32_t)n) * 16;
    const uint8_t *w = vals + (size_t)rnd((uint32_t)n) * 16;
    bool v4 = memcmp(v, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
    bool w4 = memcmp(w, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
    value_text(v, a, sizeof a);
    value_text(w, b, sizeof b);
    const char *d = dirs[rnd(3)];
    switch (rnd(7)) {
    case 6:
        snprintf(buf, cap, "any");
        break;
    case 0:
        snprintf(buf, cap, "%shost %s", d, a);
        break;
    case 1:
    case 2:
        snprintf(buf, cap, "%snet %s/%u", d, a, v4 ? rnd(33) : rnd(129));
        break;
    case 3:
        snprintf(buf, cap, "%sip in [%s %s/%u]", d, a, b, w4 ? rnd(33) : rnd(129));
        break;
    case 4:
        snprintf(buf, cap, "%s", rnd(2) ? "inet" : "inet6");
        break;
    default:
        snprintf(buf, cap, "%snet 10.%u.0.0/16", d, rnd(3));
        break;
    }
}

/* A random filter of up to `leaves` primitives. */
static void random_filter(const uint8_t *vals, size_t n, int leaves, char *buf, size_t cap)
{
    char p[128];
    random_prim(vals, n, buf, cap);
    for (int i = 1; i < leaves; i++) {
        random_prim(vals, n, p, sizeof p);
        char *tmp = strdup(buf);
        cr_assert(tmp != NULL);
        snprintf(buf, cap, "%s(%s) %s %s%s", rnd(4) ? "" : "not ", tmp, rnd(2) ? "and" : "or",
                 rnd(4) ? "" : "not ", p);
        free(tmp);
    }
}

Test(qfast, address_filters_over_dictionaries_match_row_by_row)
{
    enum { N = 3000, VALS = 400 };
    static uint8_t svals[VALS * 16], dvals[VALS * 16];
    static uint32_t scodes[N], dcodes[N], idx[N], out[N];
    char ftext[4096], err[160];
    uint8_t *scratch = NULL;
    size_t scap = 0;
    for (int round = 0; round < 300; round++) {
        size_t ns = random_dict(svals, 1 + rnd(VALS)), nd = random_dict(dvals, 1 + rnd(VALS));
        size_t n = 1 + rnd(N);
        for (size_t i = 0; i < n; i++) {
            scodes[i] = (uint32_t)rnd((uint32_t)ns);
            dcodes[i] = (uint32_t)rnd((uint32_t)nd);
        }
        eng_coldict ds = {ns, svals, scodes}, dd = {nd, dvals, dcodes};
        eng_colview v = {.n = n, .mask = ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST)};
        v.dict[ENG_COL_SRC] = &ds;
        v.dict[ENG_COL_DST] = &dd;
        if (rnd(2)) { /* a subset of the rows, ascending, as the scan hands over */
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (rnd(3))
                    idx[k++] = (uint32_t)i;
            v.idx = idx;
            v.n = k;
        }
        /* mostly few tests (the table of outcomes), sometimes many (the walk) */
        random_filter(svals, ns, rnd(5) ? 1 + (int)rnd(4) : 6 + (int)rnd(6), ftext, sizeof ftext);
        qry_filter *f;
        cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0), "%s: %s", ftext, err);
        if (!qry_filter_by_dict(f, &v)) { /* "any" and the like: nothing to test here */
            qry_filter_free(f);
            continue;
        }
        size_t m = qry_filter_select_dict(f, &v, &scratch, &scap, out), want = 0;
        cr_assert(ne(sz, m, SIZE_MAX));
        for (size_t k = 0; k < v.n; k++) {
            size_t i = v.idx ? v.idx[k] : k;
            eng_flow r = test_row_of_codes(svals, scodes, dvals, dcodes, i);
            if (!qry_filter_match(f, &r))
                continue;
            cr_assert(lt(sz, want, m), "round %d '%s': fewer rows than the reference", round,
                      ftext);
            cr_assert(eq(u32, out[want], (uint32_t)i), "round %d '%s': row %zu", round, ftext,
                      want);
            want++;
        }
        cr_assert(eq(sz, m, want), "round %d '%s': rows", round, ftext);
        qry_filter_free(f);
    }
    free(scratch);
}

/* ---------------------------------------------------------------------------------------------
 * A dictionary column's codes (one or two bytes a row, decoded 16 rows at a time, the rest one
 * by one) against the codes written, for random row counts and value counts; and a code past
 * the values at any row refused. */

/* The raw column: m values 1, 2, ... m (low word), then the codes as cw byte planes. */
static size_t dict_raw(uint8_t *p, size_t m, size_t n, const uint32_t *codes)
{
    size_t k = test_put_varint(p, m);
    for (size_t j = 0; j < m; j++) {
        k += test_put_varint(p + k, 0);
        k += test_put_varint(p + k, 1);
    }
    size_t cw = m <= 256 ? 1 : 2;
    for (size_t b = 0; b < cw; b++)
        for (size_t i = 0; i < n; i++)
            p[k++] = (uint8_t)(codes[i] >> (8 * b));
    return k;
}

Test(qfast, dictionary_codes_decode_and_a_code_past_the_values_is_refused)
{
    enum { N = 300 };
    static uint8_t raw[16 + 4 * 600 + 2 * N], out[N * 16];
    static uint32_t codes[N];
    enum { ENC_DICT = 4 };
    for (int round = 0; round < 400; round++) {
        size_t n = 1 + rnd(N);
        size_t m = 1 + rnd((uint32_t)(n < 600 ? n : 600)); /* at most n: the format's rule */
        if (rnd(2) && n > 256)
            m = 257 + rnd((uint32_t)(n - 256)); /* two-byte codes */
        for (size_t i = 0; i < n; i++)
            codes[i] = rnd(4) ? rnd((uint32_t)m) : (uint32_t)m - 1;
        size_t len = dict_raw(raw, m, n, codes);
        cr_assert(eq(int, eng__col_decode_raw(ENG_COL_SRC, ENC_DICT, raw, len, n, NULL, out), 0),
                  "round %d: %zu rows, %zu values", round, n, m);
        for (size_t i = 0; i < n; i++) {
            uint64_t v = 0;
            for (int b = 8; b < 16; b++)
                v = v << 8 | out[i * 16 + (size_t)b];
            cr_assert(eq(u64, v, codes[i] + 1), "round %d row %zu of %zu (%zu values)", round, i, n,
                      m);
        }
        /* one code naming no value, anywhere; where the width allows it */
        size_t bad = rnd((uint32_t)n);
        uint32_t past = m <= 256 ? (uint32_t)m + rnd((uint32_t)(257 - m))
                                 : (uint32_t)m + rnd((uint32_t)(65537 - m));
        if (past > (m <= 256 ? 255u : 65535u))
            continue;
        uint32_t keep = codes[bad];
        codes[bad] = past;
        len = dict_raw(raw, m, n, codes);
        cr_assert(eq(int, eng__col_decode_raw(ENG_COL_SRC, ENC_DICT, raw, len, n, NULL, out),
                     NS_E_CORRUPT),
                  "round %d: code %u of %zu values at row %zu of %zu", round, past, m, bad, n);
        codes[bad] = keep;
    }
}

/* Values across the 64-bit boundary of the low word, one step at a time (a short step's carry
 * into the high word). */
Test(qfast, dictionary_values_carry_into_the_high_word)
{
    enum { ENC_DICT = 4 };
    uint8_t raw[64], out[4 * 16];
    size_t k = test_put_varint(raw, 4);
    k += test_put_varint(raw + k, 0);
    k += test_put_varint(raw + k, UINT64_MAX - 1);
    for (int j = 0; j < 3; j++) {
        k += test_put_varint(raw + k, 0);
        k += test_put_varint(raw + k, 1);
    }
    for (uint8_t i = 0; i < 4; i++)
        raw[k++] = i;
    cr_assert(eq(int, eng__col_decode_raw(ENG_COL_DST, ENC_DICT, raw, k, 4, NULL, out), 0));
    const uint64_t want[4][2] = {{0, UINT64_MAX - 1}, {0, UINT64_MAX}, {1, 0}, {1, 1}};
    for (int i = 0; i < 4; i++) {
        uint64_t hi = 0, lo = 0;
        for (int b = 0; b < 8; b++) {
            hi = hi << 8 | out[i * 16 + b];
            lo = lo << 8 | out[i * 16 + 8 + b];
        }
        cr_assert(eq(u64, hi, want[i][0]), "value %d", i);
        cr_assert(eq(u64, lo, want[i][1]), "value %d", i);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Byte planes back into values, for columns of every width and 8-byte values of every size
 * (the high planes all zero, or one value anywhere that fills them), against the values. */
Test(qfast, byte_planes_decode_for_every_width_and_value_size)
{
    enum { N = 300, ENC_TRANSPOSE = 1 };
    static uint8_t vals[N * 16], planes[N * 16], out[N * 16];
    const eng_col cols[] = {ENG_COL_BYTES, ENG_COL_PACKETS, ENG_COL_SRC_AS, ENG_COL_EXPORTER,
                            ENG_COL_VLAN};
    for (int round = 0; round < 600; round++) {
        eng_col c = cols[rnd(5)];
        size_t w = eng_col_width(c), n = 1 + rnd(N);
        /* bytes a value may use: 1, 2, 4 or all; sometimes one value uses all */
        size_t used = (size_t)1 << rnd(4);
        used = used > w ? w : used;
        for (size_t i = 0; i < n; i++)
            for (size_t b = 0; b < w; b++)
                vals[i * w + b] = b < used ? (uint8_t)rnd(256) : 0;
        if (rnd(3) == 0) { /* the last row's bytes end their planes (past the 16-byte steps) */
            size_t i = rnd(2) ? n - 1 : rnd((uint32_t)n);
            vals[i * w + w - 1 - (rnd(2) ? 0 : rnd((uint32_t)w))] = (uint8_t)(1 + rnd(255));
        }
        for (size_t i = 0; i < n; i++)
            for (size_t b = 0; b < w; b++)
                planes[b * n + i] = vals[i * w + b];
        memset(out, 0xa5, sizeof out);
        cr_assert(eq(int, eng__col_decode_raw(c, ENC_TRANSPOSE, planes, n * w, n, NULL, out), 0));
        for (size_t i = 0; i < n * w; i++)
            cr_assert(eq(u8, out[i], vals[i]), "round %d: %zu rows of %zu bytes, byte %zu", round,
                      n, w, i);
        cr_assert(eq(u8, out[n * w], 0xa5), "round %d: nothing written past the column", round);
    }
    /* small counters but one byte of one row set in a high plane: every plane, the first row,
     * the last, rows that fill whole steps of 16 and ones that do not */
    const size_t ns[] = {16, 33, 160, 255};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++)
        for (size_t k = 2; k < 8; k++)
            for (int last = 0; last < 2; last++) {
                size_t n = ns[t], row = last ? n - 1 : 0;
                memset(vals, 0, n * 8);
                for (size_t i = 0; i < n; i++)
                    vals[i * 8] = (uint8_t)rnd(256);
                vals[row * 8 + k] = 1;
                for (size_t i = 0; i < n; i++)
                    for (size_t b = 0; b < 8; b++)
                        planes[b * n + i] = vals[i * 8 + b];
                cr_assert(eq(
                    int,
                    eng__col_decode_raw(ENG_COL_BYTES, ENC_TRANSPOSE, planes, n * 8, n, NULL, out),
                    0));
                cr_assert(eq(int, memcmp(out, vals, n * 8), 0), "%zu rows, plane %zu, row %zu", n,
                          k, row);
            }
}

/* ---------------------------------------------------------------------------------------------
 * Conversations and address pairs over many distinct addresses: the partitioned path maps each
 * segment's dictionary values to ids through sorted lists of the values seen before (a small
 * one merged into a big one as it grows), and open rows through a hash table, so one address
 * may hold two ids. Thousands of addresses a minute, new ones every minute and some in both
 * directions, take every branch of that; each answer (every group, both directions, the other,
 * the total and the count of groups) must be the group table's, and the count brute force's. */

#define CONV_MINS 8
#define CONV_ROWS 3000 /* a minute */
static eng_flow conv_rows[(CONV_MINS + 1) * CONV_ROWS];

static ns_addr pool_addr(uint32_t i, bool dst)
{
    char t[64];
    if (i % 29 == 0)
        snprintf(t, sizeof t, "2001:db8:%x::%x", dst ? 2 : 1, i);
    else
        snprintf(t, sizeof t, "%u.%u.%u.%u", dst ? 192 : 10, (i >> 16) & 255, (i >> 8) & 255,
                 i & 255);
    return addr(t);
}

static int cmp_pair(const void *x, const void *y)
{
    return memcmp(x, y, 32);
}

Test(qfast, conversations_over_many_addresses_match_the_group_table)
{
    size_t n = 0;
    for (int m = 0; m <= CONV_MINS; m++) { /* the last minute stays open */
        for (int k = 0; k < CONV_ROWS; k++) {
            eng_flow f;
            memset(&f, 0, sizeof f);
            /* a window of 1100 of each pool, moving 350 a minute: new values every minute, and
             * fewer than half the rows distinct (so the columns are dictionaries) */
            uint32_t si = (uint32_t)m * 350 + rnd(1100), di = (uint32_t)m * 350 + rnd(1100);
            f.src = pool_addr(si, false);
            f.dst = pool_addr(di, rnd(4) != 0); /* a quarter from the sources: both ways */
            if (rnd(5) == 0) {                  /* the reverse of a conversation */
                ns_addr t = f.src;
                f.src = f.dst;
                f.dst = t;
            }
            f.exporter = addr("192.0.2.1");
            f.proto = 6;
            f.packets = 1 + rnd(40);
            f.bytes = rnd(9) == 0 ? (5ull << 32) + rnd(1000) : 40 + rnd(1u << 20);
            f.flows = rnd(13) == 0 ? 2 + rnd(3) : 0;
            f.first_ms = M0 + m * MIN + (int64_t)rnd(59000);
            f.last_ms = f.first_ms + (int64_t)rnd(1000);
            conv_rows[n] = f;
            cr_assert(eq(int, eng_db_append(db, M0 + m * MIN + 30000, &f, 1), 0));
            n++;
        }
    }
    cr_assert(eq(int, eng_db_seal_due(db, M0 + CONV_MINS * MIN + 500, false), CONV_MINS));
    /* brute force: the distinct unordered pairs */
    uint8_t(*pairs)[32] = malloc(n * sizeof *pairs);
    cr_assert(pairs != NULL);
    for (size_t i = 0; i < n; i++) {
        bool ab = memcmp(conv_rows[i].src.b, conv_rows[i].dst.b, 16) <= 0;
        memcpy(pairs[i], ab ? conv_rows[i].src.b : conv_rows[i].dst.b, 16);
        memcpy(pairs[i] + 16, ab ? conv_rows[i].dst.b : conv_rows[i].src.b, 16);
    }
    qsort(pairs, n, 32, cmp_pair);
    uint64_t nconv = 0;
    for (size_t i = 0; i < n; i++)
        nconv += i == 0 || memcmp(pairs[i - 1], pairs[i], 32) != 0;
    free(pairs);
    static const char *const groups[] = {"conversation", "srcaddr,dstaddr", "dstaddr,srcaddr"};
    char err[128];
    for (int gi = 0; gi < 3; gi++)
        for (int metric = 0; metric < 3; metric++) {
            qry_group g;
            cr_assert(eq(int, qry_group_parse(groups[gi], &g, err, sizeof err), 0));
            qry_top_result a, b;
            size_t limit = metric == 2 ? 50 : 1000000; /* flows: ties ranked by key */
            cr_assert(
                eq(int,
                   qry_top_group(db, INT64_MIN, INT64_MAX, NULL, &g, (qry_metric)metric, limit, &a),
                   0));
            cr_assert(eq(int,
                         qry_top_group_opt(db, INT64_MIN, INT64_MAX, NULL, &g, (qry_metric)metric,
                                           limit, QRY_TOP_NO_GROUP_TIMES, &b),
                         0));
            if (gi == 0)
                cr_assert(eq(u64, b.groups, nconv), "conversations against brute force");
            cr_assert(eq(u64, a.groups, b.groups), "%s", groups[gi]);
            cr_assert(eq(sz, a.n, b.n));
            cr_assert(totals_same(&a.total, &b.total));
            cr_assert(eq(u64, a.other.bytes, b.other.bytes));
            cr_assert(eq(u64, a.other.flows, b.other.flows));
            for (size_t i = 0; i < a.n; i++) {
                cr_assert(memcmp(&a.rows[i].key, &b.rows[i].key, sizeof a.rows[i].key) == 0,
                          "%s metric %d row %zu", groups[gi], metric, i);
                cr_assert(eq(u64, a.rows[i].t.flows, b.rows[i].t.flows));
                cr_assert(eq(u64, a.rows[i].t.packets, b.rows[i].t.packets));
                cr_assert(eq(u64, a.rows[i].t.bytes, b.rows[i].t.bytes));
                cr_assert(eq(u64, a.rows[i].ab.flows, b.rows[i].ab.flows), "a to b, row %zu", i);
                cr_assert(eq(u64, a.rows[i].ab.packets, b.rows[i].ab.packets));
                cr_assert(eq(u64, a.rows[i].ab.bytes, b.rows[i].ab.bytes));
                cr_assert(eq(u64, a.rows[i].ba.bytes, b.rows[i].ba.bytes), "b to a, row %zu", i);
                cr_assert(eq(u64, a.rows[i].ba.flows, b.rows[i].ba.flows));
            }
            qry_top_free(&a);
            qry_top_free(&b);
        }
}

/* The conversations path finds each dictionary value among the addresses it knows by a gallop
 * and a branch-free binary search. A wrong answer there costs no correctness (a value not found
 * gets a second id, merged later), only speed, so the answers above cannot see it: the search
 * is checked here against a linear scan, over keys that differ in the high word, the low word
 * or both, at every start position. */
Test(qfast, known_address_search_matches_a_linear_scan)
{
    uint64_t seed = 0x5eed0c0ffeeull;
    uint64_t(*keys)[2] = malloc(400 * sizeof *keys);
    cr_assert(keys != NULL);
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(test_xorshift(&seed) % 400);
        uint64_t hi = test_xorshift(&seed) % 3, lo = test_xorshift(&seed) % 50;
        for (size_t i = 0; i < n; i++) {
            /* steps of 0 (a repeat) to a few, now and then into the high word */
            uint64_t r = test_xorshift(&seed) % 16;
            if (r == 0) {
                hi++;
                lo = test_xorshift(&seed) % 4 ? test_xorshift(&seed) : 0;
            } else if (r < 12) {
                uint64_t d = test_xorshift(&seed) % 5;
                hi += lo + d < lo; /* carry */
                lo += d;
            }
            keys[i][0] = hi;
            keys[i][1] = lo;
        }
        for (int q = 0; q < 40; q++) {
            uint64_t qh, ql;
            if (n && q % 2) {
                size_t at = (size_t)(test_xorshift(&seed) % n);
                int64_t d = (int64_t)(test_xorshift(&seed) % 3) - 1;
                qh = keys[at][0];
                ql = keys[at][1] + (uint64_t)d;
                qh += d > 0 && ql == 0;
                qh -= d < 0 && ql == UINT64_MAX;
            } else {
                qh = test_xorshift(&seed) % (hi + 2);
                ql = test_xorshift(&seed) % 3 ? test_xorshift(&seed) % (lo + 8)
                                              : test_xorshift(&seed);
            }
            size_t j = (size_t)(test_xorshift(&seed) % (n + 3));
            size_t want = j;
            while (want < n && (keys[want][0] != qh ? keys[want][0] < qh : keys[want][1] < ql))
                want++;
            size_t got = qry__known_seek((const uint64_t(*)[2])keys, n, j, qh, ql);
            if (got != want)
                cr_fatal("round %d n %zu j %zu key %llx:%llx: %zu, scan %zu", round, n, j,
                         (unsigned long long)qh, (unsigned long long)ql, got, want);
        }
    }
    free(keys);
}
