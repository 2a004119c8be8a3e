/* Tests of the roll-up tier (engine/db.c, engine/segment.c): the flows column round trip (and
 * older files reading it as 0), the per-minute aggregation against a brute force, the budget
 * split held through a long ingest into a small budget, queries across the tier boundary equal
 * to a brute force over the same flows (each rolled-up flow seen as its roll-up row sees it),
 * roll-ups beside the compactor's merges, and a crash after each step of a roll-up leaving
 * every flow counted exactly once. */
#include "engine/query.h"
#include "engine/store.h"
#include "engine/store_int.h"
#include "http/http.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIN 60000LL
#define H0  1704164400000LL /* 2024-01-02T03:00:00Z, an hour boundary */
#define M0  (H0 / MIN)

static char tmpdir[64];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof tmpdir, "rollup");
    ns_log_set_level(NS_LOG_ERROR);
    unsetenv("NS2FLOWS_ROLLUP_CRASH");
}

static void teardown(void)
{
    test_rm_rf(tmpdir);
}

TestSuite(rollup, .init = setup, .fini = teardown);

static bool addr_eq(const ns_addr *a, const ns_addr *b)
{
    return memcmp(a->b, b->b, 16) == 0;
}

static bool addr_zero(const ns_addr *a)
{
    static const ns_addr z;
    return addr_eq(a, &z);
}

/* The low 16 bits of a v4-mapped address. */
static uint32_t addr_low16(const ns_addr *a)
{
    return (uint32_t)a->b[14] << 8 | a->b[15];
}

static uint64_t rng;
static uint64_t rnd(uint64_t n)
{
    uint64_t x = (rng += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (x ^ (x >> 31)) % n;
}

static const char *tpath(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* A flow received in minute recv_min: it may have started up to 2.5 minutes before and last up
 * to 90 s. Small value pools, so that a minute's flows share keys and roll up. */
static eng_flow gen(int64_t recv_min)
{
    static const uint16_t ports[] = {53, 80, 443};
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = recv_min * MIN + 500 - (int64_t)rnd(150000);
    f.last_ms = f.first_ms + (int64_t)rnd(90000);
    ns_addr_from_v4(&f.src, 0x0a000000u + (uint32_t)rnd(12));
    ns_addr_from_v4(&f.dst, 0xc0a80000u + (uint32_t)rnd(6));
    ns_addr_from_v4(&f.exporter, 0x7f000001u + (uint32_t)rnd(2));
    ns_addr_from_v4(&f.nexthop, 0x01020304u);
    f.proto = rnd(2) ? 6 : 17;
    f.dst_port = ports[rnd(3)];
    f.src_port = (uint16_t)(1024 + rnd(40));
    f.in_if = 1 + (uint32_t)rnd(2);
    f.out_if = 3;
    f.tos = (uint8_t)rnd(4);
    f.tcp_flags = 0x18;
    f.src_as = 64512 + (uint32_t)rnd(3);
    f.packets = 1 + rnd(20);
    f.bytes = f.packets * (40 + rnd(1400));
    f.sampling = 1;
    f.flow_type = ENG_FT_IPFIX;
    return f;
}

/* ---------------------------------------------------------------------------------------------
 * The flows column */

Test(rollup, flows_column_round_trips_and_older_versions_read_it_as_zero)
{
    const size_t n = 777;
    rng = 1;
    eng_flow *rows = calloc(n, sizeof *rows), *got = calloc(n, sizeof *got);
    uint64_t want_flows = 0;
    for (size_t i = 0; i < n; i++) {
        rows[i] = gen(M0 + (int64_t)(i % 5));
        /* raw rows (0) and roll-up rows, some of them large */
        rows[i].flows = i % 3 == 0 ? 0 : i % 3 == 1 ? 1 + rnd(100) : (1ull << 40) + i;
        want_flows += eng_flow_count(&rows[i]);
    }
    eng_seg *s;
    cr_assert(eq(int, eng_seg_write(tpath("v4.seg"), rows, n), 0));
    cr_assert(eq(int, eng_seg_open(tpath("v4.seg"), &s), 0));
    const eng_seg_info *in = eng_seg_get_info(s);
    cr_assert(eq(u32, in->version, 7)); /* the flows column came with 4 */
    cr_assert(eq(u32, in->ncols, ENG_NCOLS));
    cr_assert(eq(u64, in->rows, n));
    cr_assert(eq(u64, in->flows, want_flows));
    cr_assert(eq(int, eng_seg_read(s, ENG_COLMASK(ENG_COL_FLOWS), got), 0));
    for (size_t i = 0; i < n; i++) {
        cr_assert(eq(u64, got[i].flows, rows[i].flows), "row %zu", i);
        cr_assert(eq(u64, got[i].bytes, 0)); /* not asked for */
    }
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
    for (size_t i = 0; i < n; i++) {
        cr_assert(eq(u64, got[i].flows, rows[i].flows), "row %zu", i);
        cr_assert(eq(u64, got[i].bytes, rows[i].bytes), "row %zu", i);
        cr_assert(eq(i64, got[i].last_ms, rows[i].last_ms), "row %zu", i);
    }
    eng_seg_close(s);

    /* versions 3 and 2 have no flows column: every row reads as one flow */
    for (uint32_t v = 2; v <= 3; v++) {
        char name[16];
        snprintf(name, sizeof name, "v%u.seg", v);
        cr_assert(eq(int, eng__seg_write_version(tpath(name), rows, n, v), 0));
        cr_assert(eq(int, eng_seg_open(tpath(name), &s), 0));
        in = eng_seg_get_info(s);
        cr_assert(eq(u32, in->version, v));
        cr_assert(eq(u32, in->ncols, ENG_NCOLS - 1));
        cr_assert(eq(u64, in->flows, n));
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
        for (size_t i = 0; i < n; i++) {
            cr_assert(eq(u64, got[i].flows, 0), "v%u row %zu", v, i);
            cr_assert(eq(u64, got[i].bytes, rows[i].bytes), "v%u row %zu", v, i);
            cr_assert(eq(u16, got[i].vlan, rows[i].vlan), "v%u row %zu", v, i);
        }
        cr_assert(eq(int, eng_seg_verify_col(s, ENG_COL_FLOWS), NS_E_RANGE));
        eng_seg_close(s);
    }
    free(rows);
    free(got);
}

/* ---------------------------------------------------------------------------------------------
 * Aggregation */

typedef struct bkey {
    int64_t minute;
    ns_addr src, dst, exporter;
    uint32_t in_if, out_if, src_as, dst_as;
    uint16_t src_port, dst_port, vlan;
    uint8_t proto, tos;
} bkey;

/* The brute force's own reduction of a row to its key, written from the documented rule. */
static bkey bkey_of(const eng_flow *r, uint32_t keys)
{
    bkey k;
    memset(&k, 0, sizeof k);
    k.minute = r->first_ms >= 0 ? r->first_ms / MIN : -((-r->first_ms + MIN - 1) / MIN);
#define K(col, field)                                                                              \
    if (keys & ENG_COLMASK(col))                                                                   \
        k.field = r->field;
    K(ENG_COL_SRC, src)
    K(ENG_COL_DST, dst)
    K(ENG_COL_EXPORTER, exporter)
    K(ENG_COL_IN_IF, in_if)
    K(ENG_COL_OUT_IF, out_if)
    K(ENG_COL_SRC_AS, src_as)
    K(ENG_COL_DST_AS, dst_as)
    K(ENG_COL_SRC_PORT, src_port)
    K(ENG_COL_DST_PORT, dst_port)
    K(ENG_COL_VLAN, vlan)
    K(ENG_COL_PROTO, proto)
    K(ENG_COL_TOS, tos)
#undef K
    return k;
}

static bool bkey_eq(const bkey *a, const bkey *b)
{
    return a->minute == b->minute && addr_eq(&a->src, &b->src) && addr_eq(&a->dst, &b->dst) &&
           addr_eq(&a->exporter, &b->exporter) && a->in_if == b->in_if && a->out_if == b->out_if &&
           a->src_as == b->src_as && a->dst_as == b->dst_as && a->src_port == b->src_port &&
           a->dst_port == b->dst_port && a->vlan == b->vlan && a->proto == b->proto &&
           a->tos == b->tos;
}

static void check_aggregation(const eng_flow *rows, size_t n, uint32_t keys)
{
    eng_flow *out = NULL;
    size_t nout = 0;
    cr_assert(eq(int, eng_rollup_rows(rows, n, keys, &out, &nout), 0));
    if (keys == 0)
        keys = ENG_ROLLUP_KEYS_DEFAULT; /* what 0 means */
    /* brute force: a linear list of groups */
    bkey *gk = calloc(n, sizeof *gk);
    uint64_t(*sum)[3] = calloc(n, sizeof *sum);
    size_t ng = 0;
    for (size_t i = 0; i < n; i++) {
        bkey k = bkey_of(&rows[i], keys);
        size_t g = 0;
        while (g < ng && !bkey_eq(&gk[g], &k))
            g++;
        if (g == ng)
            gk[ng++] = k;
        sum[g][0] += rows[i].packets;
        sum[g][1] += rows[i].bytes;
        sum[g][2] += rows[i].flows ? rows[i].flows : 1;
    }
    cr_assert(eq(sz, nout, ng));
    bool *used = calloc(ng, 1);
    for (size_t i = 0; i < nout; i++) {
        const eng_flow *o = &out[i];
        bkey k = bkey_of(o, keys);
        size_t g = 0;
        while (g < ng && !bkey_eq(&gk[g], &k))
            g++;
        cr_assert(lt(sz, g, ng), "row %zu has a key no input has", i);
        cr_assert(not(used[g]), "group %zu twice", g);
        used[g] = true;
        cr_assert(eq(i64, o->first_ms, gk[g].minute * MIN));
        cr_assert(eq(i64, o->last_ms, gk[g].minute * MIN + 59999));
        cr_assert(eq(u64, o->packets, sum[g][0]));
        cr_assert(eq(u64, o->bytes, sum[g][1]));
        cr_assert(eq(u64, o->flows, sum[g][2]));
        /* columns that are not keys are zero */
        eng_flow z = *o;
        cr_assert(eq(u8, z.tcp_flags, 0));
        cr_assert(eq(u32, z.sampling, 0));
        cr_assert(eq(u8, z.flow_type, 0));
        cr_assert(addr_zero(&z.nexthop));
        if (!(keys & ENG_COLMASK(ENG_COL_SRC_PORT)))
            cr_assert(eq(u16, z.src_port, 0));
        if (!(keys & ENG_COLMASK(ENG_COL_SRC_AS)))
            cr_assert(eq(u32, z.src_as, 0));
    }
    free(used);
    free(gk);
    free(sum);
    free(out);
}

Test(rollup, aggregation_equals_a_brute_force_per_minute_sum)
{
    const size_t n = 3000;
    rng = 2;
    eng_flow *rows = calloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        rows[i] = gen(M0 + (int64_t)rnd(4));
        if (i % 7 == 0)
            rows[i].flows = 1 + rnd(50); /* a roll-up row rolled up again adds its count */
        if (i % 101 == 0)
            rows[i].first_ms = -(int64_t)rnd(200000); /* before the epoch: floor, not truncate */
    }
    check_aggregation(rows, n, 0); /* the default keys */
    check_aggregation(rows, n, ENG_ROLLUP_KEYS_DEFAULT);
    check_aggregation(rows, n, ENG_COLMASK(ENG_COL_SRC_PORT) | ENG_COLMASK(ENG_COL_TOS));
    check_aggregation(rows, n, ENG_ROLLUP_KEYS_ALLOWED);
    check_aggregation(rows, 0, 0);
    free(rows);
}

Test(rollup, keys_parse)
{
    uint32_t k = 0;
    char err[256];
    cr_assert(eq(int, eng_rollup_keys_parse("", &k, err, sizeof err), 0));
    cr_assert(eq(u32, k, ENG_ROLLUP_KEYS_DEFAULT));
    cr_assert(eq(int, eng_rollup_keys_parse("srcaddr, srcport,vlan", &k, err, sizeof err), 0));
    cr_assert(
        eq(u32, k,
           ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_SRC_PORT) | ENG_COLMASK(ENG_COL_VLAN)));
    cr_assert(eq(int, eng_rollup_keys_parse("srcaddr,bytes", &k, err, sizeof err), NS_E_PARSE));
    cr_assert(strstr(err, "'bytes'") != NULL, "%s", err);
    cr_assert(eq(int, eng_rollup_keys_parse("nexthop", &k, err, sizeof err), NS_E_PARSE));
    cr_assert(strcmp(eng_rollup_key_name(ENG_COL_DST_PORT), "dstport") == 0);
    cr_assert(eng_rollup_key_name(ENG_COL_BYTES) == NULL);
}

/* ---------------------------------------------------------------------------------------------
 * The database */

static eng_db *open_db(uint64_t budget, uint32_t share)
{
    eng_db_opts o = {
        .budget_bytes = budget, .rollup_share = share, .no_sealer_thread = true, .no_wal = true};
    return test_open_db(tmpdir, &o);
}

typedef struct sums {
    uint64_t flows, packets, bytes, rows;
} sums;

static int sums_cb(void *arg, const eng_flow *rows, size_t n)
{
    sums *s = arg;
    for (size_t i = 0; i < n; i++) {
        s->flows += eng_flow_count(&rows[i]);
        s->packets += rows[i].packets;
        s->bytes += rows[i].bytes;
        s->rows++;
    }
    return 0;
}

static sums scan_sums(eng_db *db)
{
    sums s = {0};
    cr_assert(eq(int, eng_db_scan(db, INT64_MIN / 4, INT64_MAX / 4, ENG_COLS_ALL, sums_cb, &s), 0));
    return s;
}

/* Files of the folder whose name starts with prefix and ends with suffix. */
static size_t count_files(const char *prefix, const char *suffix)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    size_t n = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name), pl = strlen(prefix), sl = strlen(suffix);
        if (len >= pl + sl && strncmp(de->d_name, prefix, pl) == 0 &&
            strcmp(de->d_name + len - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Appends minute m's flows (received in it) and seals it: the budget runs after each seal. */
static void ingest_minute(eng_db *db, int64_t m, size_t per_min, eng_flow *all, size_t *nall)
{
    eng_flow *r = malloc(per_min * sizeof *r);
    for (size_t i = 0; i < per_min; i++)
        r[i] = gen(m);
    cr_assert(eq(int, eng_db_append(db, m * MIN + 1000, r, per_min), 0));
    if (all) {
        memcpy(all + *nall, r, per_min * sizeof *r);
        *nall += per_min;
    }
    free(r);
    cr_assert(ge(int, eng_db_seal_due(db, (m + 1) * MIN + 1, false), 1));
}

Test(rollup, the_budget_split_holds_through_a_long_ingest)
{
    const uint64_t budget = 1200 * 1024;
    const uint32_t share = 30;
    const uint64_t rcap = budget * share / 100, rawcap = budget - rcap;
    const size_t per_min = 1500;
    rng = 3;
    eng_db *db = open_db(budget, share);
    sums in = {0};
    uint64_t max_seg = 0;
    bool saw_rollup_deletion = false;
    for (int64_t m = M0; m < M0 + 400; m++) {
        eng_db_stats before;
        eng_db_get_stats(db, &before);
        uint64_t seed = rng;
        /* the same flows gen() makes in ingest_minute, summed */
        for (size_t i = 0; i < per_min; i++) {
            eng_flow f = gen(m);
            in.flows++;
            in.bytes += f.bytes;
            in.packets += f.packets;
        }
        rng = seed;
        ingest_minute(db, m, per_min, NULL, NULL);
        eng_db_stats st;
        eng_db_get_stats(db, &st);
        uint64_t seg = st.disk_bytes > before.disk_bytes ? st.disk_bytes - before.disk_bytes : 0;
        max_seg = seg > max_seg ? seg : max_seg;
        /* each tier within its share once the pass is over, the whole within the budget */
        cr_assert(le(u64, st.rollup_bytes, rcap), "minute %lld", (long long)(m - M0));
        cr_assert(le(u64, st.disk_bytes - st.rollup_bytes, rawcap), "minute %lld",
                  (long long)(m - M0));
        cr_assert(le(u64, st.disk_bytes, budget));
        if (st.segments_deleted == 0 && m % 20 == 0) {
            /* nothing has left the roll-up tier: every flow ingested is still counted */
            sums got = scan_sums(db);
            cr_assert(eq(u64, got.flows, in.flows), "minute %lld", (long long)(m - M0));
            cr_assert(eq(u64, got.bytes, in.bytes));
            cr_assert(eq(u64, got.packets, in.packets));
            qry_totals t;
            cr_assert(eq(int, qry_summary(db, INT64_MIN / 4, INT64_MAX / 4, NULL, &t), 0));
            cr_assert(eq(u64, t.flows, in.flows));
            cr_assert(eq(u64, t.bytes, in.bytes));
        }
        saw_rollup_deletion |= st.segments_deleted > 0;
    }
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(gt(u64, st.segments_rolled_up, 100), "%" PRIu64, st.segments_rolled_up);
    cr_assert(eq(u64, st.rows_rolled_up, st.segments_rolled_up * per_min));
    cr_assert(lt(u64, st.rollup_rows, st.rows_rolled_up), "roll-ups are smaller");
    cr_assert(eq(u64, st.rollup_errors, 0));
    cr_assert(saw_rollup_deletion, "the roll-up tier filled up and dropped its oldest");
    cr_assert(gt(u64, st.rollup_segments, 10));
    cr_assert(eq(sz, count_files("rm", ".seg"), st.rollup_segments));
    /* the tiers: roll-ups first (older), then raw */
    eng_tier_range t[8];
    int nt = eng_db_tiers(db, INT64_MIN / 4, INT64_MAX / 4, t, 8);
    cr_assert(ge(int, nt, 2));
    cr_assert(eq(int, t[0].tier, ENG_TIER_ROLLUP));
    cr_assert(eq(int, t[nt - 1].tier, ENG_TIER_RAW));
    cr_assert(lt(i64, t[0].from_ms, t[nt - 1].from_ms));
    cr_assert(eq(int, eng_db_close(db), 0));
    (void)max_seg;
}

/* Rolled-up flows as the roll-up tier shows them: the brute force's view of every flow. */
static eng_flow as_rollup(const eng_flow *r)
{
    eng_flow o;
    memset(&o, 0, sizeof o);
    int64_t m = r->first_ms / MIN;
    o.first_ms = m * MIN;
    o.last_ms = m * MIN + 59999;
    o.src = r->src;
    o.dst = r->dst;
    o.exporter = r->exporter;
    o.proto = r->proto;
    o.dst_port = r->dst_port;
    o.in_if = r->in_if;
    o.out_if = r->out_if;
    o.packets = r->packets;
    o.bytes = r->bytes;
    return o;
}

static bool minute_rolled_up(int64_t recv_min)
{
    char p[160];
    struct stat st;
    snprintf(p, sizeof p, "%s", tmpdir);
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    bool found = false;
    char want[64];
    int wl = snprintf(want, sizeof want, "rm%lld-", (long long)recv_min);
    while (!found && (de = readdir(d)) != NULL)
        found = strncmp(de->d_name, want, (size_t)wl) == 0;
    closedir(d);
    (void)st;
    return found;
}

static bool overlaps(const eng_flow *r, int64_t from, int64_t to)
{
    return r->last_ms >= from && r->first_ms <= to;
}

Test(rollup, queries_across_the_tier_boundary_equal_the_brute_force)
{
    const size_t per_min = 400, nmin = 40;
    rng = 4;
    eng_db *db = open_db(0, 0);
    eng_flow *all = malloc(per_min * nmin * sizeof *all);
    int64_t *recv = malloc(per_min * nmin * sizeof *recv);
    size_t nall = 0;
    for (int64_t m = M0; m < M0 + (int64_t)nmin; m++) {
        size_t before = nall;
        ingest_minute(db, m, per_min, all, &nall);
        for (size_t i = before; i < nall; i++)
            recv[i] = m;
    }
    /* half the raw bytes as the raw tier's part: the oldest half is rolled up, nothing goes */
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    eng_db_set_rollup(db, 50, 0);
    eng_db_set_limits(db, st.disk_bytes, 0);
    eng_db_get_stats(db, &st);
    cr_assert(gt(u64, st.segments_rolled_up, nmin / 3));
    cr_assert(lt(u64, st.segments_rolled_up, nmin));
    cr_assert(eq(u64, st.segments_deleted, 0));
    /* each flow as the store now holds it */
    size_t nrolled = 0;
    bool rolled_min[64] = {0};
    for (size_t m = 0; m < nmin; m++)
        rolled_min[m] = minute_rolled_up(M0 + (int64_t)m);
    eng_flow *view = malloc(nall * sizeof *view);
    for (size_t i = 0; i < nall; i++) {
        bool up = rolled_min[recv[i] - M0];
        view[i] = up ? as_rollup(&all[i]) : all[i];
        nrolled += up;
    }
    cr_assert(eq(u64, nrolled, st.rows_rolled_up));

    /* ranges: everything, and one cutting through both tiers at odd times */
    int64_t boundary = M0 + (int64_t)st.segments_rolled_up;
    const int64_t ranges[][2] = {
        {INT64_MIN / 4, INT64_MAX / 4},
        {(M0 + 5) * MIN + 7777, boundary * MIN + 13 * MIN + 333},
        {(boundary - 2) * MIN, (boundary + 2) * MIN - 1},
    };
    for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
        int64_t from = ranges[ri][0], to = ranges[ri][1];
        /* summary: all, with a filter on kept keys, with one on a key roll-ups drop */
        static const char *const filters[] = {NULL, "proto tcp and dst port 443", "src port 1030",
                                              "not src port 1030"};
        for (size_t fi = 0; fi < 4; fi++) {
            qry_filter *f = NULL;
            char err[128];
            if (filters[fi])
                cr_assert(eq(int, qry_filter_compile(filters[fi], &f, err, sizeof err), 0));
            qry_totals want = {0}, got;
            bool any = false;
            for (size_t i = 0; i < nall; i++) {
                const eng_flow *r = &view[i];
                if (!overlaps(r, from, to))
                    continue;
                bool ok = fi == 0   ? true
                          : fi == 1 ? r->proto == 6 && r->dst_port == 443
                          : fi == 2 ? r->src_port == 1030
                                    : r->src_port != 1030;
                if (!ok)
                    continue;
                want.flows++;
                want.packets += r->packets;
                want.bytes += r->bytes;
                if (!any || r->first_ms < want.first_ms)
                    want.first_ms = r->first_ms;
                if (!any || r->last_ms > want.last_ms)
                    want.last_ms = r->last_ms;
                any = true;
            }
            cr_assert(eq(int, qry_summary(db, from, to, f, &got), 0));
            cr_assert(eq(u64, got.flows, want.flows), "range %zu filter %zu", ri, fi);
            cr_assert(eq(u64, got.packets, want.packets), "range %zu filter %zu", ri, fi);
            cr_assert(eq(u64, got.bytes, want.bytes), "range %zu filter %zu", ri, fi);
            if (any) {
                cr_assert(eq(i64, got.first_ms, want.first_ms), "range %zu filter %zu", ri, fi);
                cr_assert(eq(i64, got.last_ms, want.last_ms), "range %zu filter %zu", ri, fi);
            }
            qry_filter_free(f);
        }
        /* top-N by a kept key (srcaddr) and by one roll-ups drop (srcport: 0 for them) */
        for (int which = 0; which < 2; which++) {
            qry_group g;
            qry_group_one(which ? QRY_BY_SRCPORT : QRY_BY_SRCADDR, &g);
            uint64_t wf[65536] = {0}, wb[65536] = {0};
            for (size_t i = 0; i < nall; i++) {
                const eng_flow *r = &view[i];
                if (!overlaps(r, from, to))
                    continue;
                uint32_t k = which ? r->src_port : addr_low16(&r->src);
                wf[k]++;
                wb[k] += r->bytes;
            }
            qry_top_result res;
            cr_assert(eq(int, qry_top_group(db, from, to, NULL, &g, QRY_M_BYTES, 1000, &res), 0));
            size_t groups = 0;
            for (size_t k = 0; k < 65536; k++)
                groups += wf[k] > 0;
            cr_assert(eq(sz, res.n, groups), "range %zu by %d", ri, which);
            for (size_t j = 0; j < res.n; j++) {
                uint32_t k =
                    which ? res.rows[j].key.v[0].num : addr_low16(&res.rows[j].key.v[0].addr);
                cr_assert(eq(u64, res.rows[j].t.flows, wf[k]), "range %zu by %d key %u", ri, which,
                          k);
                cr_assert(eq(u64, res.rows[j].t.bytes, wb[k]), "range %zu by %d key %u", ri, which,
                          k);
            }
            qry_top_free(&res);
        }
    }
    /* a series by minute over the whole data: flows in the bucket they start in */
    {
        int64_t from = (M0 - 3) * MIN;
        size_t nb = nmin + 6;
        qry_totals *b = calloc(nb, sizeof *b);
        uint64_t *wf = calloc(nb, sizeof *wf), wbytes = 0, gbytes = 0;
        cr_assert(eq(int, qry_series(db, from, MIN, nb, NULL, b), 0));
        for (size_t i = 0; i < nall; i++) {
            wf[(view[i].first_ms - from) / MIN]++;
            wbytes += view[i].bytes;
        }
        for (size_t k = 0; k < nb; k++) {
            cr_assert(eq(u64, b[k].flows, wf[k]), "bucket %zu", k);
            gbytes += b[k].bytes;
        }
        cr_assert(eq(u64, gbytes, wbytes));
        free(b);
        free(wf);
    }
    /* one device: its flows out, from both tiers, once each */
    {
        ns_addr dev;
        ns_addr_from_v4(&dev, 0x0a000003u);
        qry_device_result dr;
        int64_t from = M0 * MIN - 10 * MIN, to = (M0 + (int64_t)nmin + 5) * MIN;
        cr_assert(eq(int, qry_device(db, &dev, from, to, MIN, 60, 10, &dr), 0));
        uint64_t wf = 0, wb = 0;
        for (size_t i = 0; i < nall; i++)
            if (addr_eq(&view[i].src, &dev)) {
                wf++;
                wb += view[i].bytes;
            }
        cr_assert(eq(u64, dr.out.flows, wf));
        cr_assert(eq(u64, dr.out.bytes, wb));
        qry_device_free(&dr);
    }
    /* the resolution: roll-ups then raw, the roll-ups' range ends where raw minutes begin */
    eng_tier_range t[8];
    int nt = eng_db_tiers(db, INT64_MIN / 4, INT64_MAX / 4, t, 8);
    cr_assert(eq(int, nt, 2));
    cr_assert(eq(int, t[0].tier, ENG_TIER_ROLLUP));
    cr_assert(eq(int, t[1].tier, ENG_TIER_RAW));
    cr_assert(le(i64, t[0].to_ms, boundary * MIN + 59999));
    cr_assert(eq(i64, t[0].from_ms % MIN, 0));
    cr_assert(eq(int, eng_db_close(db), 0));

    /* a restart reads the same */
    db = open_db(0, 0);
    qry_totals a;
    cr_assert(eq(int, qry_summary(db, INT64_MIN / 4, INT64_MAX / 4, NULL, &a), 0));
    cr_assert(eq(u64, a.flows, nall));
    cr_assert(eq(int, eng_db_close(db), 0));
    free(all);
    free(recv);
    free(view);
}

/* Roll-ups and the compactor: a merged hour takes only raw segments, never a roll-up, and a
 * restart keeps both; an hour segment rolls up as a whole. */
Test(rollup, merges_leave_rollups_alone_and_hours_roll_up)
{
    rng = 5;
    eng_db *db = open_db(0, 0);
    sums in = {0};
    for (int64_t m = M0; m < M0 + 120; m += 6) {
        eng_flow r[300];
        for (size_t i = 0; i < 300; i++) {
            r[i] = gen(m);
            in.flows++;
            in.bytes += r[i].bytes;
        }
        cr_assert(eq(int, eng_db_append(db, m * MIN + 1000, r, 300), 0));
    }
    cr_assert(ge(int, eng_db_seal_due(db, 0, true), 20));
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    /* roll up the first three minutes of the first hour */
    uint64_t size3 = 0;
    {
        DIR *d = opendir(tmpdir);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            long long mm;
            if (sscanf(de->d_name, "m%lld-", &mm) == 1 && mm < M0 + 18) {
                struct stat fs;
                char p[400];
                snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
                cr_assert(eq(int, stat(p, &fs), 0));
                size3 += (uint64_t)fs.st_size;
            }
        }
        closedir(d);
    }
    eng_db_set_rollup(db, 50, 0);
    eng_db_set_limits(db, 2 * (st.disk_bytes - size3) + 64, 0);
    cr_assert(eq(sz, count_files("rm", ".seg"), 3));
    cr_assert(eq(u64, scan_sums(db).flows, in.flows));
    /* the first hour's seven raw minutes merge; its roll-ups stay */
    eng_db_set_limits(db, 0, 0);
    cr_assert(eq(int, eng_db_compact(db, M0 * MIN + 3 * 60 * MIN), 2));
    cr_assert(eq(sz, count_files("rm", ".seg"), 3));
    cr_assert(eq(sz, count_files("h", ".seg"), 2));
    sums s = scan_sums(db);
    cr_assert(eq(u64, s.flows, in.flows));
    cr_assert(eq(u64, s.bytes, in.bytes));
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(0, 0);
    s = scan_sums(db);
    cr_assert(eq(u64, s.flows, in.flows), "after a restart");
    cr_assert(eq(u64, s.bytes, in.bytes));
    /* now the budget rolls up the first hour segment whole */
    eng_db_get_stats(db, &st);
    eng_db_set_rollup(db, 50, 0);
    eng_db_set_limits(db, st.disk_bytes, 0);
    cr_assert(eq(sz, count_files("rh", ".seg"), 1));
    cr_assert(eq(sz, count_files("h", ".seg"), 1));
    s = scan_sums(db);
    cr_assert(eq(u64, s.flows, in.flows));
    cr_assert(eq(u64, s.bytes, in.bytes));
    cr_assert(eq(int, eng_db_close(db), 0));
    db = open_db(0, 0);
    cr_assert(eq(u64, scan_sums(db).flows, in.flows), "after a restart");
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* With roll-ups off the budget deletes raw segments directly, as before. */
Test(rollup, share_zero_deletes_without_rolling_up)
{
    rng = 6;
    eng_db *db = open_db(300 * 1024, 0);
    for (int64_t m = M0; m < M0 + 60; m++)
        ingest_minute(db, m, 1000, NULL, NULL);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(gt(u64, st.segments_deleted, 0));
    cr_assert(eq(u64, st.segments_rolled_up, 0));
    cr_assert(eq(sz, count_files("r", ".seg"), 0));
    cr_assert(le(u64, st.disk_bytes, 300 * 1024));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* The HTTP answers say which tier served which part, and which grouping keys roll-ups lost. */
static char *get(eng_db *db, const char *path, const http_kv *kv, size_t nkv)
{
    http_opts o = {.db = db};
    ns_buf b = {0};
    const char *ct = NULL;
    int status = http_dispatch(&o, "GET", path, kv, nkv, &b, &ct);
    cr_assert(eq(int, status, 200), "%s: %s", path, b.p ? b.p : "");
    return b.p;
}

Test(rollup, http_answers_carry_the_resolution)
{
    rng = 8;
    eng_db *db = open_db(0, 0);
    for (int64_t m = M0; m < M0 + 16; m++)
        ingest_minute(db, m, 300, NULL, NULL);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    eng_db_set_rollup(db, 50, 0);
    eng_db_set_limits(db, st.disk_bytes, 0);
    eng_db_get_stats(db, &st);
    cr_assert(gt(u64, st.rollup_segments, 2));

    char *b = get(db, "/api/v1/summary", NULL, 0);
    cr_assert(strstr(b, ",\"resolution\":[{\"tier\":\"rollup\",\"from\":") != NULL, "%s", b);
    cr_assert(strstr(b, "\"keys\":[\"exporter\",\"srcaddr\",\"dstaddr\",\"inif\",\"outif\","
                        "\"dstport\",\"proto\"]},{\"tier\":\"raw\"") != NULL,
              "%s", b);
    free(b);
    const http_kv by_port[] = {{"by", "srcport"}};
    b = get(db, "/api/v1/top", by_port, 1);
    cr_assert(strstr(b, "\"lost\":[\"srcport\"]") != NULL, "%s", b);
    free(b);
    const http_kv by_app[] = {{"by", "app,srcaddr"}};
    b = get(db, "/api/v1/top", by_app, 1);
    cr_assert(strstr(b, "\"lost\":[]") != NULL, "%s", b);
    free(b);
    const http_kv split[] = {{"by", "tos"}};
    b = get(db, "/api/v1/series", split, 1);
    cr_assert(strstr(b, "\"lost\":[\"tos\"]") != NULL, "%s", b);
    free(b);
    b = get(db, "/api/v1/series", NULL, 0);
    cr_assert(strstr(b, "\"resolution\":[{\"tier\":\"rollup\"") != NULL, "%s", b);
    free(b);
    b = get(db, "/api/v1/devices/10.0.0.1", NULL, 0);
    cr_assert(strstr(b, "\"resolution\":[{\"tier\":\"rollup\"") != NULL, "%s", b);
    free(b);
    /* a range of raw minutes only */
    char from[32];
    snprintf(from, sizeof from, "%lld", (long long)((M0 + 15) * MIN / 1000));
    const http_kv late[] = {{"from", from}};
    b = get(db, "/api/v1/summary", late, 1);
    cr_assert(strstr(b, "\"resolution\":[{\"tier\":\"raw\"") != NULL, "%s", b);
    cr_assert(strstr(b, "rollup") == NULL, "%s", b);
    free(b);
    b = get(db, "/api/v1/status", NULL, 0);
    char want[160];
    snprintf(want, sizeof want, "\"rollup\":{\"share\":50,\"segments\":%" PRIu64,
             st.rollup_segments);
    cr_assert(strstr(b, want) != NULL, "%s", b);
    free(b);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* ---------------------------------------------------------------------------------------------
 * Crashes during a roll-up */

static void crash_at(int step)
{
    rng = 7;
    eng_db *db = open_db(0, 0);
    for (int64_t m = M0; m < M0 + 12; m++)
        ingest_minute(db, m, 500, NULL, NULL);
    sums before = scan_sums(db);
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(int, eng_db_close(db), 0));
    uint64_t budget = st.disk_bytes; /* share 50: the oldest half is rolled up */

    pid_t pid = fork();
    cr_assert(ge(int, pid, 0));
    if (pid == 0) {
        char v[8];
        snprintf(v, sizeof v, "%d", step);
        setenv("NS2FLOWS_ROLLUP_CRASH", v, 1);
        eng_db *c = NULL;
        char err[256];
        eng_db_opts o = {
            .budget_bytes = budget, .rollup_share = 50, .no_sealer_thread = true, .no_wal = true};
        eng_db_open(tmpdir, &o, &c, err, sizeof err); /* the budget runs in the open */
        _exit(0);                                     /* not reached */
    }
    int status = 0;
    cr_assert(eq(int, waitpid(pid, &status, 0), pid));
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    cr_assert(eq(int, code, 87), "step %d: the child crashed there", step);
    if (step == 1)
        cr_assert(eq(sz, count_files("rm", ".tmp"), 1));
    if (step >= 2)
        cr_assert(eq(sz, count_files("rm", ".seg"), 1));

    /* a reader beside it first: every flow once, nothing deleted */
    size_t files = count_files("", ".seg");
    eng_db *ro = NULL;
    char err[256];
    eng_db_opts roo = {.read_only = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &roo, &ro, err, sizeof err), 0), "%s", err);
    sums r = scan_sums(ro);
    cr_assert(eq(u64, r.flows, before.flows), "step %d, read-only", step);
    cr_assert(eq(u64, r.bytes, before.bytes), "step %d, read-only", step);
    cr_assert(eq(int, eng_db_close(ro), 0));
    cr_assert(eq(sz, count_files("", ".seg"), files));

    /* the next start: every flow exactly once, no leftover tmp, each minute in one tier */
    db = open_db(0, 0);
    sums after = scan_sums(db);
    cr_assert(eq(u64, after.flows, before.flows), "step %d", step);
    cr_assert(eq(u64, after.packets, before.packets), "step %d", step);
    cr_assert(eq(u64, after.bytes, before.bytes), "step %d", step);
    cr_assert(eq(sz, count_files("", ".tmp"), 0), "step %d", step);
    for (int64_t m = M0; m < M0 + 12; m++) {
        char raw[32], up[32];
        snprintf(raw, sizeof raw, "m%lld-", (long long)m);
        snprintf(up, sizeof up, "rm%lld-", (long long)m);
        cr_assert(eq(sz, count_files(raw, ".seg") + count_files(up, ".seg"), 1),
                  "step %d minute %lld", step, (long long)(m - M0));
    }
    /* and the roll-ups finish */
    eng_db_set_rollup(db, 50, 0);
    eng_db_set_limits(db, budget, 0);
    eng_db_get_stats(db, &st);
    cr_assert(gt(u64, st.rollup_segments, 3));
    after = scan_sums(db);
    cr_assert(eq(u64, after.flows, before.flows), "step %d", step);
    cr_assert(eq(u64, after.bytes, before.bytes), "step %d", step);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(rollup, crash_while_writing_the_rollup)
{
    crash_at(1);
}

Test(rollup, crash_after_publishing_before_the_swap)
{
    crash_at(2);
}

Test(rollup, crash_after_the_swap_before_deleting_the_raw_segment)
{
    crash_at(3);
}

Test(rollup, crash_after_deleting_the_raw_segment)
{
    crash_at(4);
}
