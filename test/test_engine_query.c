/* Tests of the query layer (engine/query.c): qry_summary and qry_top by every key and metric
 * on a database filled with known rows, checked against hand-computed answers and against a
 * plain reference aggregation: order (metric descending, ties by key ascending), limit, "other",
 * "total" (= rows + other), group counts; the same answers whether the rows are open, partly
 * sealed, sealed or reopened; and the name parsers. */
#include "engine/query.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define M0  1704164640000LL /* 2024-01-02T03:04:00Z, a minute boundary */
#define MIN 60000LL

/* ---------------------------------------------------------------------------------------------
 * Fixtures */

static char tmpdir[64];
static eng_db *db;

static void open_db(void)
{
    /* with a column cache: every test also checks that repeated scans read cached columns
     * right (the reopen test reads the same segments again) */
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true, .cache_bytes = 8u << 20};
    db = test_open_db(tmpdir, &o);
}

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof tmpdir, "qry");
    ns_log_set_level(NS_LOG_ERROR);
    open_db();
}

static void teardown(void)
{
    eng_db_close(db);
    db = NULL;
    test_rm_rf(tmpdir);
}

TestSuite(qry, .init = setup, .fini = teardown);

static ns_addr addr(const char *text)
{
    ns_addr a;
    cr_assert(eq(int, ns_addr_parse(text, &a), 0), "bad test address %s", text);
    return a;
}

/* A flow from src to dst over proto sport → dport, seen by exporter. */
static eng_flow flow(const char *src, const char *dst, uint8_t proto, uint16_t sport,
                     uint16_t dport, const char *exporter, uint64_t packets, uint64_t bytes,
                     int64_t first_ms, int64_t last_ms)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.src = addr(src);
    f.dst = addr(dst);
    f.exporter = addr(exporter);
    f.proto = proto;
    f.src_port = sport;
    f.dst_port = dport;
    f.packets = packets;
    f.bytes = bytes;
    f.first_ms = first_ms;
    f.last_ms = last_ms;
    f.sampling = 1;
    return f;
}

static void append(int64_t recv_ms, const eng_flow *rows, size_t n)
{
    cr_assert(eq(int, eng_db_append(db, recv_ms, rows, n), 0));
}

static qry_top_result top(qry_by by, qry_metric m, size_t limit)
{
    qry_top_result r;
    int rc = qry_top(db, INT64_MIN, INT64_MAX, NULL, by, m, limit, &r);
    cr_assert(eq(int, rc, 0), "qry_top(%s, %s, %zu): %s", qry_by_name(by), qry_metric_name(m),
              limit, ns_strerror(rc));
    return r;
}

static void key_text(qry_by by, const qry_key *k, char *buf, size_t cap)
{
    qry_key_fmt(by, k, buf, cap);
}

/* Asserts result row i has key text `key` and the given flows/packets/bytes. */
static void row_is(const qry_top_result *r, qry_by by, size_t i, const char *key, uint64_t flows,
                   uint64_t packets, uint64_t bytes)
{
    char got[64];
    cr_assert(lt(sz, i, r->n), "row %zu of %zu", i, r->n);
    key_text(by, &r->rows[i].key, got, sizeof got);
    cr_assert(eq(int, strcmp(got, key), 0), "row %zu: key %s, expected %s", i, got, key);
    cr_assert(eq(u64, r->rows[i].t.flows, flows), "row %zu (%s)", i, key);
    cr_assert(eq(u64, r->rows[i].t.packets, packets), "row %zu (%s)", i, key);
    cr_assert(eq(u64, r->rows[i].t.bytes, bytes), "row %zu (%s)", i, key);
}

static void totals_are(const qry_totals *t, uint64_t flows, uint64_t packets, uint64_t bytes,
                       int64_t first_ms, int64_t last_ms)
{
    cr_assert(eq(u64, t->flows, flows));
    cr_assert(eq(u64, t->packets, packets));
    cr_assert(eq(u64, t->bytes, bytes));
    cr_assert(eq(i64, t->first_ms, first_ms));
    cr_assert(eq(i64, t->last_ms, last_ms));
}

/* ---------------------------------------------------------------------------------------------
 * Hand-computed answers on a small set */

/* Eight flows; their numbers are chosen so every key has a tie somewhere:
 *
 *   #  src        dst           proto sport dport exporter     pkts bytes first..last (M0+s)
 *   0  10.0.0.2   192.0.2.1     6     80    1000  192.0.2.254  10   1500  1..5
 *   1  10.0.0.10  192.0.2.1     6     80    1001  192.0.2.254  20   1500  2..6
 *   2  10.0.0.2   2001:db8::1   17    53    53    2001:db8::fe 5    1000  3..7
 *   3  10.0.0.3   2001:db8::1   17    53    53    192.0.2.254  5    500   4..8
 *   4  10.0.0.3   192.0.2.1     1     0     2048  2001:db8::fe 1    200   5..9
 *   5  2001:db8::9 192.0.2.1    6     22    1002  192.0.2.254  30   3000  6..70
 *   6  10.0.0.10  198.51.100.7  47    0     0     2001:db8::fe 2    50    -10..10
 *   7  10.0.0.2   198.51.100.7  6     22    1003  192.0.2.254  7    700   8..9
 */
static void small_set(void)
{
    const int64_t s = 1000;
    eng_flow r[8] = {
        flow("10.0.0.2", "192.0.2.1", 6, 80, 1000, "192.0.2.254", 10, 1500, M0 + 1 * s, M0 + 5 * s),
        flow("10.0.0.10", "192.0.2.1", 6, 80, 1001, "192.0.2.254", 20, 1500, M0 + 2 * s,
             M0 + 6 * s),
        flow("10.0.0.2", "2001:db8::1", 17, 53, 53, "2001:db8::fe", 5, 1000, M0 + 3 * s,
             M0 + 7 * s),
        flow("10.0.0.3", "2001:db8::1", 17, 53, 53, "192.0.2.254", 5, 500, M0 + 4 * s, M0 + 8 * s),
        flow("10.0.0.3", "192.0.2.1", 1, 0, 2048, "2001:db8::fe", 1, 200, M0 + 5 * s, M0 + 9 * s),
        flow("2001:db8::9", "192.0.2.1", 6, 22, 1002, "192.0.2.254", 30, 3000, M0 + 6 * s,
             M0 + 70 * s),
        flow("10.0.0.10", "198.51.100.7", 47, 0, 0, "2001:db8::fe", 2, 50, M0 - 10 * s,
             M0 + 10 * s),
        flow("10.0.0.2", "198.51.100.7", 6, 22, 1003, "192.0.2.254", 7, 700, M0 + 8 * s,
             M0 + 9 * s),
    };
    append(M0 + 10 * s, r, 4);
    append(M0 + MIN + 10 * s, r + 4, 4); /* the next minute */
}

#define ALL_FLOWS   8
#define ALL_PACKETS 80
#define ALL_BYTES   8450
#define ALL_FIRST   (M0 - 10000)
#define ALL_LAST    (M0 + 70000)

Test(qry, summary_counts_every_flow_once)
{
    qry_totals t;
    small_set();
    cr_assert(eq(int, qry_summary(db, INT64_MIN, INT64_MAX, NULL, &t), 0));
    totals_are(&t, ALL_FLOWS, ALL_PACKETS, ALL_BYTES, ALL_FIRST, ALL_LAST);
    /* [M0+9.5 s, M0+12 s] overlaps only #5 (6..70) and #6 (-10..10) */
    cr_assert(eq(int, qry_summary(db, M0 + 9500, M0 + 12000, NULL, &t), 0));
    totals_are(&t, 2, 32, 3050, M0 - 10000, M0 + 70000);
    /* nothing there */
    cr_assert(eq(int, qry_summary(db, M0 + 71000, M0 + 99000, NULL, &t), 0));
    totals_are(&t, 0, 0, 0, 0, 0);
}

Test(qry, summary_of_an_empty_db_is_zero)
{
    qry_totals t;
    memset(&t, 0xff, sizeof t);
    cr_assert(eq(int, qry_summary(db, INT64_MIN, INT64_MAX, NULL, &t), 0));
    totals_are(&t, 0, 0, 0, 0, 0);
    qry_top_result r = top(QRY_BY_SRCADDR, QRY_M_BYTES, 10);
    cr_assert(eq(sz, r.n, 0));
    cr_assert(eq(u64, r.groups, 0));
    totals_are(&r.total, 0, 0, 0, 0, 0);
    totals_are(&r.other, 0, 0, 0, 0, 0);
    qry_top_free(&r);
}

Test(qry, top_srcaddr_by_bytes_with_limit_other_and_total)
{
    small_set();
    /* src bytes: 10.0.0.2 = 1500+1000+700 = 3200, 2001:db8::9 = 3000, 10.0.0.10 = 1550,
     * 10.0.0.3 = 700 */
    qry_top_result r = top(QRY_BY_SRCADDR, QRY_M_BYTES, 2);
    cr_assert(eq(u64, r.groups, 4));
    cr_assert(eq(sz, r.n, 2));
    row_is(&r, QRY_BY_SRCADDR, 0, "10.0.0.2", 3, 22, 3200);
    row_is(&r, QRY_BY_SRCADDR, 1, "2001:db8::9", 1, 30, 3000);
    cr_assert(eq(i64, r.rows[0].t.first_ms, M0 + 1000));
    cr_assert(eq(i64, r.rows[0].t.last_ms, M0 + 9000));
    totals_are(&r.other, 4, 28, 2250, M0 - 10000, M0 + 10000);
    totals_are(&r.total, ALL_FLOWS, ALL_PACKETS, ALL_BYTES, ALL_FIRST, ALL_LAST);
    qry_top_free(&r);
    cr_assert(r.rows == NULL);
}

Test(qry, top_ties_are_broken_by_key_ascending)
{
    small_set();
    /* by packets, src: 10.0.0.2 = 22, 10.0.0.10 = 22 (tie), 2001:db8::9 = 30, 10.0.0.3 = 6 */
    qry_top_result r = top(QRY_BY_SRCADDR, QRY_M_PACKETS, 10);
    cr_assert(eq(sz, r.n, 4));
    row_is(&r, QRY_BY_SRCADDR, 0, "2001:db8::9", 1, 30, 3000);
    row_is(&r, QRY_BY_SRCADDR, 1, "10.0.0.2", 3, 22, 3200); /* .2 before .10 */
    row_is(&r, QRY_BY_SRCADDR, 2, "10.0.0.10", 2, 22, 1550);
    row_is(&r, QRY_BY_SRCADDR, 3, "10.0.0.3", 2, 6, 700);
    totals_are(&r.other, 0, 0, 0, 0, 0);
    qry_top_free(&r);

    /* by bytes, proto: 6 = 1500+1500+3000+700 = 6700, 17 = 1500, 1 = 200, 47 = 50;
     * by flows: 6 = 4, 17 = 2, then 1 and 47 tie at 1 */
    r = top(QRY_BY_PROTO, QRY_M_FLOWS, 10);
    cr_assert(eq(u64, r.groups, 4));
    row_is(&r, QRY_BY_PROTO, 0, "6", 4, 67, 6700);
    row_is(&r, QRY_BY_PROTO, 1, "17", 2, 10, 1500);
    row_is(&r, QRY_BY_PROTO, 2, "1", 1, 1, 200);
    row_is(&r, QRY_BY_PROTO, 3, "47", 1, 2, 50);
    qry_top_free(&r);

    /* by flows, dstaddr: 192.0.2.1 = 4, then 2001:db8::1 and 198.51.100.7 tie at 2; the
     * IPv4-mapped ::ffff:198.51.100.7 sorts before 2001:db8::1 */
    r = top(QRY_BY_DSTADDR, QRY_M_FLOWS, 10);
    cr_assert(eq(u64, r.groups, 3));
    row_is(&r, QRY_BY_DSTADDR, 0, "192.0.2.1", 4, 61, 6200);
    row_is(&r, QRY_BY_DSTADDR, 1, "198.51.100.7", 2, 9, 750);
    row_is(&r, QRY_BY_DSTADDR, 2, "2001:db8::1", 2, 10, 1500);
    qry_top_free(&r);
}

Test(qry, top_by_ports_and_exporter)
{
    small_set();
    /* srcport by bytes: 22 = 3700, 80 = 3000, 53 = 1500, 0 = 250 */
    qry_top_result r = top(QRY_BY_SRCPORT, QRY_M_BYTES, 3);
    cr_assert(eq(u64, r.groups, 4));
    row_is(&r, QRY_BY_SRCPORT, 0, "22", 2, 37, 3700);
    row_is(&r, QRY_BY_SRCPORT, 1, "80", 2, 30, 3000);
    row_is(&r, QRY_BY_SRCPORT, 2, "53", 2, 10, 1500);
    totals_are(&r.other, 2, 3, 250, M0 - 10000, M0 + 10000);
    qry_top_free(&r);

    /* dstport by packets: 1002 = 30, 1001 = 20, 1000 = 10, 53 = 10 (tie: 53 first),
     * 1003 = 7, 0 = 2, 2048 = 1 */
    r = top(QRY_BY_DSTPORT, QRY_M_PACKETS, 5);
    cr_assert(eq(u64, r.groups, 7));
    row_is(&r, QRY_BY_DSTPORT, 0, "1002", 1, 30, 3000);
    row_is(&r, QRY_BY_DSTPORT, 1, "1001", 1, 20, 1500);
    row_is(&r, QRY_BY_DSTPORT, 2, "53", 2, 10, 1500);
    row_is(&r, QRY_BY_DSTPORT, 3, "1000", 1, 10, 1500);
    row_is(&r, QRY_BY_DSTPORT, 4, "1003", 1, 7, 700);
    totals_are(&r.other, 2, 3, 250, M0 - 10000, M0 + 10000);
    qry_top_free(&r);

    /* exporter by bytes: 192.0.2.254 = 1500+1500+500+3000+700 = 7200, 2001:db8::fe = 1250 */
    r = top(QRY_BY_EXPORTER, QRY_M_BYTES, 1);
    cr_assert(eq(u64, r.groups, 2));
    cr_assert(eq(sz, r.n, 1));
    row_is(&r, QRY_BY_EXPORTER, 0, "192.0.2.254", 5, 72, 7200);
    totals_are(&r.other, 3, 8, 1250, M0 - 10000, M0 + 10000);
    totals_are(&r.total, ALL_FLOWS, ALL_PACKETS, ALL_BYTES, ALL_FIRST, ALL_LAST);
    qry_top_free(&r);
}

Test(qry, limit_zero_puts_everything_in_other)
{
    small_set();
    qry_top_result r = top(QRY_BY_PROTO, QRY_M_BYTES, 0);
    cr_assert(eq(sz, r.n, 0));
    cr_assert(eq(u64, r.groups, 4));
    totals_are(&r.other, ALL_FLOWS, ALL_PACKETS, ALL_BYTES, ALL_FIRST, ALL_LAST);
    totals_are(&r.total, ALL_FLOWS, ALL_PACKETS, ALL_BYTES, ALL_FIRST, ALL_LAST);
    qry_top_free(&r);
}

Test(qry, top_respects_the_time_range)
{
    small_set();
    qry_top_result r;
    /* [M0+9.5 s, M0+12 s]: #5 (src 2001:db8::9) and #6 (src 10.0.0.10) */
    cr_assert(
        eq(int, qry_top(db, M0 + 9500, M0 + 12000, NULL, QRY_BY_SRCADDR, QRY_M_BYTES, 10, &r), 0));
    cr_assert(eq(u64, r.groups, 2));
    row_is(&r, QRY_BY_SRCADDR, 0, "2001:db8::9", 1, 30, 3000);
    row_is(&r, QRY_BY_SRCADDR, 1, "10.0.0.10", 1, 2, 50);
    totals_are(&r.total, 2, 32, 3050, M0 - 10000, M0 + 70000);
    qry_top_free(&r);
}

/* Numeric keys tie-break as numbers, not by their bytes: a memcmp over the host-order uint32_t
 * would put port 256 (00 01 ..) before port 1 (01 00 ..) and 512 before 443. */
Test(qry, numeric_ties_are_in_numeric_order)
{
    eng_flow r[4] = {
        flow("10.0.0.1", "10.0.0.9", 6, 256, 512, "192.0.2.254", 1, 100, M0, M0 + 1),
        flow("10.0.0.1", "10.0.0.9", 6, 1, 443, "192.0.2.254", 1, 100, M0, M0 + 1),
        flow("10.0.0.1", "10.0.0.9", 6, 255, 80, "192.0.2.254", 1, 100, M0, M0 + 1),
        flow("10.0.0.1", "10.0.0.9", 6, 65280, 65535, "192.0.2.254", 1, 100, M0, M0 + 1),
    };
    append(M0 + 1000, r, 4);
    qry_top_result t = top(QRY_BY_SRCPORT, QRY_M_BYTES, 10);
    row_is(&t, QRY_BY_SRCPORT, 0, "1", 1, 1, 100);
    row_is(&t, QRY_BY_SRCPORT, 1, "255", 1, 1, 100);
    row_is(&t, QRY_BY_SRCPORT, 2, "256", 1, 1, 100);
    row_is(&t, QRY_BY_SRCPORT, 3, "65280", 1, 1, 100);
    qry_top_free(&t);
    t = top(QRY_BY_DSTPORT, QRY_M_FLOWS, 10);
    row_is(&t, QRY_BY_DSTPORT, 0, "80", 1, 1, 100);
    row_is(&t, QRY_BY_DSTPORT, 1, "443", 1, 1, 100);
    row_is(&t, QRY_BY_DSTPORT, 2, "512", 1, 1, 100);
    row_is(&t, QRY_BY_DSTPORT, 3, "65535", 1, 1, 100);
    qry_top_free(&t);
}

/* ---------------------------------------------------------------------------------------------
 * A larger set against a reference aggregation, for every key, metric and a range of limits */

#define BIG_N 600

/* Row i of the larger set; addresses mix IPv4 and IPv6, ports are both below and above 256. */
static eng_flow big_row(int i)
{
    static const uint8_t protos[] = {6, 17, 1, 58, 47};
    static const uint16_t ports[] = {1, 22, 53, 80, 256, 443, 512, 8080};
    char src[64], dst[64], ex[64];
    if (i % 4 == 3)
        snprintf(src, sizeof src, "2001:db8::%x", i % 5);
    else
        snprintf(src, sizeof src, "10.0.%d.%d", i % 2, i % 9);
    snprintf(dst, sizeof dst, "192.168.%d.%d", i % 3, i % 11);
    if (i % 7 == 0)
        strcpy(ex, "2001:db8::fe");
    else
        snprintf(ex, sizeof ex, "192.0.2.%d", 250 + i % 2);
    int64_t first = M0 + (i % 3) * MIN + (i * 37) % 50000 - 20000;
    eng_flow f = flow(src, dst, protos[i % 5], ports[(i * 3) % 8], ports[(i / 2) % 8], ex,
                      (uint64_t)(i % 7 + 1), (uint64_t)((i % 13 + 1) * 100), first,
                      first + (i * 11) % 30000);
    /* the other group keys: values that repeat with different periods, some above 255/65535 */
    f.in_if = (uint32_t)(i % 6) * 300u;
    f.out_if = (uint32_t)(i % 5) + 1u;
    f.src_as = (uint32_t)(i % 4) * 70000u;
    f.dst_as = (uint32_t)(i % 9) + 64512u;
    f.tos = (uint8_t)((i % 3) * 32);
    f.vlan = (uint16_t)(i % 7 == 0 ? 0 : 100 + i % 4);
    return f;
}

static void big_set(void)
{
    for (int i = 0; i < BIG_N; i++) {
        eng_flow f = big_row(i);
        append(M0 + (i % 3) * MIN + 30000, &f, 1); /* three minutes */
    }
}

/* A prefix of a, computed on its own: v4 on the 32-bit value, v6 a byte at a time. */
static ns_addr ref_net(ns_addr a, unsigned bits4, unsigned bits6)
{
    if (ns_addr_is_v4(&a)) {
        uint32_t v =
            (uint32_t)a.b[12] << 24 | (uint32_t)a.b[13] << 16 | (uint32_t)a.b[14] << 8 | a.b[15];
        v = bits4 == 0 ? 0 : v & ~(uint32_t)((1ull << (32 - bits4)) - 1);
        ns_addr_from_v4(&a, v);
        return a;
    }
    for (unsigned bit = bits6; bit < 128; bit++)
        a.b[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return a;
}

static qry_key ref_key(qry_by by, const eng_flow *f)
{
    qry_key k;
    qry_keyval *v = &k.v[0];
    memset(&k, 0, sizeof k);
    switch (by) {
    case QRY_BY_SRCADDR:
        v->addr = f->src;
        break;
    case QRY_BY_DSTADDR:
        v->addr = f->dst;
        break;
    case QRY_BY_EXPORTER:
        v->addr = f->exporter;
        break;
    case QRY_BY_PROTO:
        v->num = f->proto;
        break;
    case QRY_BY_SRCPORT:
        v->num = f->src_port;
        break;
    case QRY_BY_DSTPORT:
        v->num = f->dst_port;
        break;
    case QRY_BY_INIF:
        v->num = f->in_if;
        break;
    case QRY_BY_OUTIF:
        v->num = f->out_if;
        break;
    case QRY_BY_SRCAS:
        v->num = f->src_as;
        break;
    case QRY_BY_DSTAS:
        v->num = f->dst_as;
        break;
    case QRY_BY_TOS:
        v->num = f->tos;
        break;
    case QRY_BY_VLAN:
        v->num = f->vlan;
        break;
    case QRY_BY_APP: {
        uint32_t port = 0;
        if (f->proto == 6 || f->proto == 17 || f->proto == 132) {
            port = f->src_port < f->dst_port ? f->src_port : f->dst_port;
            if (port == 0)
                port = f->src_port > f->dst_port ? f->src_port : f->dst_port;
        } else if (f->proto == 1 || f->proto == 58) {
            port = f->dst_port;
        }
        v->num = (uint32_t)f->proto * 65536u + port;
        break;
    }
    case QRY_BY_CONV: {
        bool fwd = memcmp(&f->src, &f->dst, 16) < 0;
        v->addr = fwd ? f->src : f->dst;
        v->addr2 = fwd ? f->dst : f->src;
        break;
    }
    case QRY_BY_SRCNET:
        v->addr = ref_net(f->src, 24, 64);
        break;
    case QRY_BY_DSTNET:
        v->addr = ref_net(f->dst, 24, 64);
        break;
    case QRY_NBY:
        break;
    }
    return k;
}

static uint64_t metric_of(const qry_totals *t, qry_metric m)
{
    return m == QRY_M_BYTES ? t->bytes : m == QRY_M_PACKETS ? t->packets : t->flows;
}

/* Key order: part by part; addresses bytewise (network order is numeric order), numbers as
 * numbers. */
static int key_cmp(const qry_key *a, const qry_key *b)
{
    for (int i = 0; i < QRY_MAX_KEYS; i++) {
        int c = memcmp(a->v[i].addr.b, b->v[i].addr.b, 16);
        if (!c)
            c = memcmp(a->v[i].addr2.b, b->v[i].addr2.b, 16);
        if (c)
            return c;
        if (a->v[i].num != b->v[i].num)
            return a->v[i].num < b->v[i].num ? -1 : 1;
    }
    return 0;
}

static void add_to(qry_totals *t, const eng_flow *f)
{
    if (t->flows == 0 || f->first_ms < t->first_ms)
        t->first_ms = f->first_ms;
    if (t->flows == 0 || f->last_ms > t->last_ms)
        t->last_ms = f->last_ms;
    t->flows++;
    t->packets += f->packets;
    t->bytes += f->bytes;
}

static qry_metric sort_metric;
static int ref_cmp(const void *a, const void *b)
{
    const qry_row *x = a, *y = b;
    uint64_t mx = metric_of(&x->t, sort_metric), my = metric_of(&y->t, sort_metric);
    if (mx != my)
        return mx > my ? -1 : 1;
    return key_cmp(&x->key, &y->key);
}

/* The reference answer: every group, sorted. Returns the number of groups. */
static size_t reference(qry_by by, qry_metric m, qry_row *groups, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < BIG_N; i++) {
        eng_flow f = big_row(i);
        qry_key k = ref_key(by, &f);
        size_t g = 0;
        while (g < n && key_cmp(&groups[g].key, &k) != 0)
            g++;
        if (g == n) {
            cr_assert(lt(sz, n, cap));
            memset(&groups[n], 0, sizeof groups[n]);
            groups[n++].key = k;
        }
        add_to(&groups[g].t, &f);
    }
    sort_metric = m;
    qsort(groups, n, sizeof *groups, ref_cmp);
    return n;
}

static bool totals_same(const qry_totals *a, const qry_totals *b)
{
    return a->flows == b->flows && a->packets == b->packets && a->bytes == b->bytes &&
           a->first_ms == b->first_ms && a->last_ms == b->last_ms;
}

static void check_against_reference(const char *when)
{
    static qry_row groups[1024];
    for (int by = 0; by < QRY_NBY; by++) {
        for (int m = 0; m < 3; m++) {
            size_t ng = reference((qry_by)by, (qry_metric)m, groups, 1024);
            const size_t limits[] = {0, 1, 3, ng > 0 ? ng - 1 : 0, ng, ng + 5};
            for (size_t li = 0; li < sizeof limits / sizeof limits[0]; li++) {
                size_t limit = limits[li];
                const char *bn = qry_by_name((qry_by)by), *mn = qry_metric_name((qry_metric)m);
                qry_top_result r = top((qry_by)by, (qry_metric)m, limit);
                size_t keep = limit < ng ? limit : ng;
                cr_assert(eq(u64, r.groups, ng), "%s: %s/%s", when, bn, mn);
                cr_assert(eq(sz, r.n, keep), "%s: %s/%s limit %zu", when, bn, mn, limit);
                qry_totals other = {0}, sum = {0}, all = {0};
                for (size_t g = 0; g < ng; g++) {
                    qry_totals *into = g < keep ? &sum : &other;
                    qry_totals *dst[2] = {into, &all};
                    for (int d = 0; d < 2; d++) {
                        qry_totals *t = dst[d];
                        const qry_totals *o = &groups[g].t;
                        if (t->flows == 0 || o->first_ms < t->first_ms)
                            t->first_ms = o->first_ms;
                        if (t->flows == 0 || o->last_ms > t->last_ms)
                            t->last_ms = o->last_ms;
                        t->flows += o->flows;
                        t->packets += o->packets;
                        t->bytes += o->bytes;
                    }
                }
                for (size_t i = 0; i < r.n; i++) {
                    char got[64], want[64];
                    qry_key_fmt((qry_by)by, &r.rows[i].key, got, sizeof got);
                    qry_key_fmt((qry_by)by, &groups[i].key, want, sizeof want);
                    cr_assert(eq(int, key_cmp(&r.rows[i].key, &groups[i].key), 0),
                              "%s: %s/%s limit %zu row %zu: %s, expected %s", when, bn, mn, limit,
                              i, got, want);
                    cr_assert(totals_same(&r.rows[i].t, &groups[i].t),
                              "%s: %s/%s row %zu (%s) totals differ", when, bn, mn, i, got);
                    if (i > 0) {
                        uint64_t a = metric_of(&r.rows[i - 1].t, (qry_metric)m);
                        uint64_t b = metric_of(&r.rows[i].t, (qry_metric)m);
                        cr_assert(
                            a > b || (a == b && key_cmp(&r.rows[i - 1].key, &r.rows[i].key) < 0),
                            "%s: %s/%s rows %zu and %zu out of order", when, bn, mn, i - 1, i);
                    }
                }
                cr_assert(totals_same(&r.other, &other), "%s: %s/%s limit %zu: other", when, bn, mn,
                          limit);
                cr_assert(totals_same(&r.total, &all), "%s: %s/%s: total", when, bn, mn);
                /* total = the rows shown + other */
                cr_assert(eq(u64, r.total.flows, sum.flows + r.other.flows));
                cr_assert(eq(u64, r.total.packets, sum.packets + r.other.packets));
                cr_assert(eq(u64, r.total.bytes, sum.bytes + r.other.bytes));
                cr_assert(eq(u64, r.total.flows, BIG_N));
                qry_top_free(&r);
            }
        }
    }
}

Test(qry, every_key_and_metric_matches_a_reference_aggregation)
{
    big_set();
    check_against_reference("open");
}

/* Every answer, kept to compare between storage states. */
typedef struct snapshot {
    qry_totals summary, ranged;
    qry_top_result tops[QRY_NBY][3];
} snapshot;

static void take(snapshot *s)
{
    cr_assert(eq(int, qry_summary(db, INT64_MIN, INT64_MAX, NULL, &s->summary), 0));
    cr_assert(eq(int, qry_summary(db, M0 + 20000, M0 + MIN + 5000, NULL, &s->ranged), 0));
    for (int by = 0; by < QRY_NBY; by++)
        for (int m = 0; m < 3; m++)
            s->tops[by][m] = top((qry_by)by, (qry_metric)m, 5);
}

static void same_as(const snapshot *a, const snapshot *b, const char *when)
{
    cr_assert(totals_same(&a->summary, &b->summary), "%s: summary", when);
    cr_assert(totals_same(&a->ranged, &b->ranged), "%s: ranged summary", when);
    for (int by = 0; by < QRY_NBY; by++) {
        for (int m = 0; m < 3; m++) {
            const qry_top_result *x = &a->tops[by][m], *y = &b->tops[by][m];
            cr_assert(eq(sz, x->n, y->n), "%s: %s/%s", when, qry_by_name((qry_by)by),
                      qry_metric_name((qry_metric)m));
            cr_assert(eq(u64, x->groups, y->groups));
            cr_assert(totals_same(&x->other, &y->other), "%s: %s other", when,
                      qry_by_name((qry_by)by));
            cr_assert(totals_same(&x->total, &y->total));
            for (size_t i = 0; i < x->n; i++) {
                cr_assert(eq(int, key_cmp(&x->rows[i].key, &y->rows[i].key), 0),
                          "%s: %s/%s row %zu", when, qry_by_name((qry_by)by),
                          qry_metric_name((qry_metric)m), i);
                cr_assert(totals_same(&x->rows[i].t, &y->rows[i].t));
            }
        }
    }
}

static void drop(snapshot *s)
{
    for (int by = 0; by < QRY_NBY; by++)
        for (int m = 0; m < 3; m++)
            qry_top_free(&s->tops[by][m]);
}

Test(qry, answers_are_the_same_open_partly_sealed_sealed_and_reopened)
{
    snapshot open, part, sealed, reopened;
    big_set();
    take(&open);
    cr_assert(open.ranged.flows > 0);
    cr_assert(lt(u64, open.ranged.flows, BIG_N));
    /* seal the first minute only (seal_delay 0) */
    cr_assert(eq(int, eng_db_seal_due(db, M0 + MIN, false), 1));
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(eq(u64, st.segments, 1));
    cr_assert(eq(u64, st.open_rows, BIG_N - BIG_N / 3));
    take(&part);
    same_as(&open, &part, "partly sealed");
    check_against_reference("partly sealed");
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 2));
    take(&sealed);
    same_as(&open, &sealed, "sealed");
    cr_assert(eq(int, eng_db_close(db), 0));
    open_db();
    take(&reopened);
    same_as(&open, &reopened, "reopened");
    check_against_reference("reopened");
    drop(&open);
    drop(&part);
    drop(&sealed);
    drop(&reopened);
}

/* ---------------------------------------------------------------------------------------------
 * Names */

Test(qry, names_parse_and_round_trip)
{
    static const char *const bys[QRY_NBY] = {
        "srcaddr", "dstaddr", "proto", "srcport", "dstport", "exporter",     "inif",   "outif",
        "srcas",   "dstas",   "tos",   "vlan",    "app",     "conversation", "srcnet", "dstnet"};
    static const char *const ms[] = {"bytes", "packets", "flows", "bps", "pps"};
    for (int i = 0; i < QRY_NBY; i++) {
        qry_by by = QRY_NBY;
        cr_assert(eq(int, qry_by_parse(bys[i], &by), 0), "%s", bys[i]);
        cr_assert(eq(int, (int)by, i));
        cr_assert(eq(int, strcmp(qry_by_name(by), bys[i]), 0));
    }
    for (int i = 0; i < 5; i++) {
        qry_metric m = (qry_metric)99;
        cr_assert(eq(int, qry_metric_parse(ms[i], &m), 0), "%s", ms[i]);
        cr_assert(eq(int, (int)m, i));
        cr_assert(eq(int, strcmp(qry_metric_name(m), ms[i]), 0));
    }
    cr_assert(eq(int, strcmp(qry_by_name(QRY_NBY), "?"), 0));
    cr_assert(eq(int, strcmp(qry_metric_name((qry_metric)5), "?"), 0));
}

Test(qry, unknown_names_are_rejected)
{
    static const char *const bad[] = {"",         "SRCADDR", "srcaddr ", " srcaddr",  "src",
                                      "srcaddrs", "bytes",   "dst_port", "exporter\n"};
    static const char *const badm[] = {"", "Bytes", "byte", "packets ", "srcaddr", "octets"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qry_by by = QRY_BY_PROTO;
        cr_assert(eq(int, qry_by_parse(bad[i], &by), NS_E_PARSE), "\"%s\"", bad[i]);
        cr_assert(eq(int, (int)by, (int)QRY_BY_PROTO), "untouched on failure");
    }
    for (size_t i = 0; i < sizeof badm / sizeof badm[0]; i++) {
        qry_metric m = QRY_M_PACKETS;
        cr_assert(eq(int, qry_metric_parse(badm[i], &m), NS_E_PARSE), "\"%s\"", badm[i]);
        cr_assert(eq(int, (int)m, (int)QRY_M_PACKETS));
    }
    qry_top_result r;
    cr_assert(eq(int, qry_top(db, 0, 1, NULL, QRY_NBY, QRY_M_BYTES, 5, &r), NS_E_RANGE));
}

Test(qry, key_formatting)
{
    qry_key k;
    char buf[64];
    memset(&k, 0, sizeof k);
    k.v[0].addr = addr("2001:db8::1");
    qry_key_fmt(QRY_BY_SRCADDR, &k, buf, sizeof buf);
    cr_assert(eq(int, strcmp(buf, "2001:db8::1"), 0), "%s", buf);
    k.v[0].addr = addr("192.0.2.1");
    qry_key_fmt(QRY_BY_EXPORTER, &k, buf, sizeof buf);
    cr_assert(eq(int, strcmp(buf, "192.0.2.1"), 0), "%s", buf);
    k.v[0].num = 65535;
    qry_key_fmt(QRY_BY_DSTPORT, &k, buf, sizeof buf);
    cr_assert(eq(int, strcmp(buf, "65535"), 0), "%s", buf);
}

static void fmt_is(const char *group, const qry_keyval *v, const char *want)
{
    qry_group g;
    char err[128], buf[128];
    cr_assert(eq(int, qry_group_parse(group, &g, err, sizeof err), 0), "%s: %s", group, err);
    qry_keyval_fmt(&g.k[0], v, buf, sizeof buf);
    cr_assert(eq(int, strcmp(buf, want), 0), "%s: '%s', expected '%s'", group, buf, want);
}

Test(qry, new_key_kinds_format)
{
    qry_keyval v;
    memset(&v, 0, sizeof v);
    v.num = 6u << 16 | 443;
    fmt_is("app", &v, "tcp/443");
    v.num = 1u << 16 | (8 << 8);
    fmt_is("app", &v, "icmp/8.0");
    v.num = 47u << 16;
    fmt_is("app", &v, "gre");
    v.num = 99u << 16;
    fmt_is("app", &v, "99");
    v.addr = addr("10.1.2.0");
    fmt_is("srcnet/24", &v, "10.1.2.0/24");
    v.addr = addr("2001:db8::");
    fmt_is("dstnet/16/48", &v, "2001:db8::/48");
    v.addr = addr("10.0.0.1");
    v.addr2 = addr("10.0.0.2");
    fmt_is("conversation", &v, "10.0.0.1 <-> 10.0.0.2");
}

Test(qry, group_lists_parse_and_bad_ones_are_named)
{
    qry_group g;
    char err[128], text[128];
    cr_assert(eq(int, qry_group_parse("srcaddr,dstport,app", &g, err, sizeof err), 0));
    cr_assert(eq(sz, g.n, 3));
    cr_assert(eq(int, (int)g.k[2].by, (int)QRY_BY_APP));
    cr_assert(eq(int, qry_group_parse("dstnet/16/32,proto", &g, err, sizeof err), 0));
    cr_assert(eq(int, g.k[0].bits4, 16));
    cr_assert(eq(int, g.k[0].bits6, 32));
    qry_group_fmt(&g, text, sizeof text);
    cr_assert(eq(int, strcmp(text, "dstnet/16/32,proto"), 0), "%s", text);
    static const char *const bad[] = {"",
                                      ",",
                                      "srcaddr,",
                                      "srcaddr,,dstaddr",
                                      "srcaddr,srcaddr",
                                      "srcaddr/24",
                                      "srcnet/33",
                                      "srcnet/24/129",
                                      "srcnet/",
                                      "srcnet/24/",
                                      "srcnet/x",
                                      "srcnet/24/48/8",
                                      "a,b",
                                      "proto,srcport,dstport,srcaddr,dstaddr",
                                      "conversation,conv",
                                      "srcaddrsrcaddrsrcaddr"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert(eq(int, qry_group_parse(bad[i], &g, err, sizeof err), NS_E_PARSE), "'%s'",
                  bad[i]);
        cr_assert(err[0] != 0, "'%s' has a reason", bad[i]);
    }
}

/* Several keys at once, checked against a reference built from the rows themselves: each
 * (srcaddr, dstport, app) group's totals, and conversations' per-direction counters. */
Test(qry, several_keys_and_conversations_match_a_reference)
{
    big_set();
    qry_group g;
    char err[128];
    cr_assert(eq(int, qry_group_parse("srcaddr,dstport,app", &g, err, sizeof err), 0));
    static qry_row ref[BIG_N];
    size_t nref = 0;
    for (int i = 0; i < BIG_N; i++) {
        eng_flow f = big_row(i);
        qry_key k;
        memset(&k, 0, sizeof k);
        k.v[0] = ref_key(QRY_BY_SRCADDR, &f).v[0];
        k.v[1] = ref_key(QRY_BY_DSTPORT, &f).v[0];
        k.v[2] = ref_key(QRY_BY_APP, &f).v[0];
        size_t j = 0;
        while (j < nref && key_cmp(&ref[j].key, &k) != 0)
            j++;
        if (j == nref) {
            memset(&ref[nref], 0, sizeof ref[nref]);
            ref[nref++].key = k;
        }
        add_to(&ref[j].t, &f);
    }
    qry_top_result r;
    cr_assert(
        eq(int, qry_top_group(db, INT64_MIN, INT64_MAX, NULL, &g, QRY_M_FLOWS, BIG_N, &r), 0));
    cr_assert(eq(u64, r.groups, nref));
    cr_assert(eq(sz, r.n, nref));
    for (size_t i = 0; i < r.n; i++) {
        size_t j = 0;
        while (j < nref && key_cmp(&ref[j].key, &r.rows[i].key) != 0)
            j++;
        cr_assert(lt(sz, j, nref), "row %zu: a group the reference does not have", i);
        cr_assert(totals_same(&r.rows[i].t, &ref[j].t), "row %zu totals", i);
        if (i > 0)
            cr_assert(ge(u64, r.rows[i - 1].t.flows, r.rows[i].t.flows));
    }
    qry_top_free(&r);

    /* conversations: a->b and b->a add up to the total, and match the rows' own directions */
    cr_assert(eq(int, qry_group_parse("conversation", &g, err, sizeof err), 0));
    cr_assert(eq(int, qry_top_group(db, INT64_MIN, INT64_MAX, NULL, &g, QRY_M_BYTES, 5, &r), 0));
    cr_assert(eq(sz, r.n, 5));
    for (size_t i = 0; i < r.n; i++) {
        const qry_keyval *v = &r.rows[i].key.v[0];
        cr_assert(lt(int, memcmp(&v->addr, &v->addr2, 16), 0), "a < b");
        uint64_t ab = 0, ba = 0, flows = 0;
        for (int n = 0; n < BIG_N; n++) {
            eng_flow f = big_row(n);
            if (memcmp(&f.src, &v->addr, 16) == 0 && memcmp(&f.dst, &v->addr2, 16) == 0)
                ab += f.bytes, flows++;
            else if (memcmp(&f.src, &v->addr2, 16) == 0 && memcmp(&f.dst, &v->addr, 16) == 0)
                ba += f.bytes, flows++;
        }
        cr_assert(eq(u64, r.rows[i].ab.bytes, ab), "row %zu a->b", i);
        cr_assert(eq(u64, r.rows[i].ba.bytes, ba), "row %zu b->a", i);
        cr_assert(eq(u64, r.rows[i].t.bytes, ab + ba));
        cr_assert(eq(u64, r.rows[i].t.flows, flows));
    }
    cr_assert(r.span_ms > 0);
    qry_top_free(&r);
}

/* ---------------------------------------------------------------------------------------------
 * Time series */

Test(qry, series_spreads_a_flow_over_the_buckets_it_spans)
{
    /* 10 s buckets from M0. A: 0..9.999 s, one bucket. B: 5 s..25 s, 1000 bytes over 20 s:
     * 250 + 500 + 250. C: started 10 s before the range, ends at 5 s: only its in-range half
     * (400 bytes, 4 packets, all in bucket 0: it ends exactly at 10 s) is counted, its flow goes
     * to bucket 0. D: no duration, at 30 s (bucket 3). */
    eng_flow rows[] = {
        flow("10.0.0.1", "10.0.0.2", 6, 1, 2, "192.0.2.1", 10, 100, M0, M0 + 9999),
        flow("10.0.0.1", "10.0.0.2", 6, 1, 2, "192.0.2.1", 20, 1000, M0 + 5000, M0 + 25000),
        flow("10.0.0.3", "10.0.0.2", 17, 1, 2, "192.0.2.1", 8, 800, M0 - 10000, M0 + 10000),
        flow("10.0.0.3", "10.0.0.2", 17, 1, 2, "192.0.2.1", 1, 60, M0 + 30000, M0 + 30000),
    };
    append(M0 + 40000, rows, 4);
    qry_totals b[4];
    cr_assert(eq(int, qry_series(db, M0, 10000, 4, NULL, b), 0));
    cr_expect(eq(u64, b[0].flows, 3)); /* A, B (starts at 5 s), C (clamped to the start) */
    cr_expect(eq(u64, b[3].flows, 1));
    cr_expect(eq(u64, b[0].bytes, 100 + 250 + 400));
    cr_expect(eq(u64, b[1].bytes, 500));
    cr_expect(eq(u64, b[2].bytes, 250));
    cr_expect(eq(u64, b[3].bytes, 60));
    cr_expect(eq(u64, b[0].packets + b[1].packets + b[2].packets, 10 + 20 + 4));
    /* a filter: UDP only */
    qry_filter *f;
    char err[128];
    cr_assert(eq(int, qry_filter_compile("proto udp", &f, err, sizeof err), 0));
    cr_assert(eq(int, qry_series(db, M0, 10000, 4, f, b), 0));
    cr_expect(eq(u64, b[0].bytes + b[1].bytes + b[2].bytes + b[3].bytes, 400 + 60));
    qry_filter_free(f);
    /* sealed, the same answer */
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 1));
    cr_assert(eq(int, qry_series(db, M0, 10000, 4, NULL, b), 0));
    cr_expect(eq(u64, b[1].bytes, 500));
    cr_expect(eq(int, qry_series(db, M0, 0, 4, NULL, b), NS_E_RANGE));
    cr_expect(eq(int, qry_series(db, M0, 1000, QRY_SERIES_MAX_BUCKETS + 1, NULL, b), NS_E_RANGE));
}

Test(qry, series_step_gives_about_the_asked_number_of_buckets)
{
    cr_expect(eq(i64, qry_series_step(0, 59999, 200), 1000));
    cr_expect(eq(i64, qry_series_step(0, 3600000 - 1, 200), 30000));          /* 1 h: 120 buckets */
    cr_expect(eq(i64, qry_series_step(0, 86400000 - 1, 200), 900000));        /* 24 h: 96 */
    cr_expect(eq(i64, qry_series_step(0, 7 * 86400000LL - 1, 200), 3600000)); /* 7 d: 168 */
}

/* ---------------------------------------------------------------------------------------------
 * Raw flows, paged */

Test(qry, flows_pages_newest_first_without_gaps_or_repeats)
{
    big_set(); /* 600 rows, many with equal start times */
    eng_flow *all = calloc(BIG_N, sizeof *all);
    size_t got = 0;
    qry_cursor cur = {0}, next;
    for (int page = 0; page < 1000; page++) {
        eng_flow *rows;
        size_t n;
        cr_assert(eq(int,
                     qry_flows(db, INT64_MIN / 4, INT64_MAX / 4, NULL, page ? &cur : NULL, 7, &rows,
                               &n, &next),
                     0));
        cr_assert(got + n <= BIG_N);
        memcpy(all + got, rows, n * sizeof *rows);
        got += n;
        free(rows);
        if (page == 0)
            eng_db_seal_due(db, 0, true); /* pages stay right when minutes get sealed */
        if (!next.valid)
            break;
        cr_assert(n == 7, "only the last page is short");
        cur = next;
    }
    cr_assert(eq(sz, got, BIG_N));
    for (size_t i = 1; i < got; i++) {
        cr_assert(all[i - 1].first_ms >= all[i].first_ms, "row %zu out of order", i);
        if (all[i - 1].first_ms == all[i].first_ms)
            cr_assert(memcmp(&all[i - 1], &all[i], sizeof all[i]) <= 0);
    }
    /* as many rows as stored, in order, and the same byte total as the summary */
    uint64_t bytes = 0;
    for (size_t i = 0; i < got; i++)
        bytes += all[i].bytes;
    qry_totals t;
    cr_assert(eq(int, qry_summary(db, INT64_MIN / 4, INT64_MAX / 4, NULL, &t), 0));
    cr_expect(eq(u64, bytes, t.bytes));
    free(all);
    eng_flow *rows;
    size_t n;
    cr_expect(eq(int, qry_flows(db, 0, 1, NULL, NULL, 0, &rows, &n, &next), NS_E_RANGE));
}

/* A split series equals, group by group, the plain series of a filter naming that group; and
 * "other" is the plain series of everything minus the groups shown. */
Test(qry, split_series_match_filtered_series)
{
    big_set();
    qry_group g;
    char err[128];
    cr_assert(eq(int, qry_group_parse("proto", &g, err, sizeof err), 0));
    const int64_t from = M0 - 30000, step = 10000;
    const size_t nb = 30;
    qry_split sp;
    cr_assert(eq(int, qry_series_split(db, from, step, nb, NULL, &g, QRY_M_BYTES, 2, &sp), 0));
    cr_assert(eq(sz, sp.k, 2));
    qry_totals all[30], one[30], sum[30];
    memset(sum, 0, sizeof sum);
    cr_assert(eq(int, qry_series(db, from, step, nb, NULL, all), 0));
    for (size_t i = 0; i < sp.k; i++) {
        char text[64];
        qry_filter *f;
        snprintf(text, sizeof text, "proto %u", sp.keys[i].v[0].num);
        cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0));
        cr_assert(eq(int, qry_series(db, from, step, nb, f, one), 0));
        qry_filter_free(f);
        for (size_t b = 0; b < nb; b++) {
            const qry_totals *got = &sp.series[i * nb + b];
            cr_assert(eq(u64, got->bytes, one[b].bytes), "%s bucket %zu", text, b);
            cr_assert(eq(u64, got->packets, one[b].packets), "%s bucket %zu", text, b);
            cr_assert(eq(u64, got->flows, one[b].flows), "%s bucket %zu", text, b);
            sum[b].bytes += got->bytes;
            sum[b].flows += got->flows;
        }
    }
    if (sp.k == 2)
        cr_assert(ge(u64, sp.totals[0].bytes, sp.totals[1].bytes));
    uint64_t other_flows = 0;
    for (size_t b = 0; b < nb; b++) {
        const qry_totals *o = &sp.series[sp.k * nb + b];
        cr_assert(eq(u64, o->bytes, all[b].bytes - sum[b].bytes), "other bucket %zu", b);
        cr_assert(eq(u64, o->flows, all[b].flows - sum[b].flows), "other bucket %zu", b);
        other_flows += o->flows;
    }
    cr_assert(eq(u64, other_flows, sp.totals[sp.k].flows));
    qry_split_free(&sp);
    cr_assert(
        eq(int, qry_series_split(db, from, step, nb, NULL, &g, QRY_M_BYTES, 0, &sp), NS_E_RANGE));
}

/* A deadline already past stops every scanning query with -ETIMEDOUT; clearing it restores
 * them. Summaries of whole segments come from footers and are not stopped. */
Test(qry, a_past_deadline_stops_queries)
{
    big_set();
    qry_totals t, b[4];
    qry_top_result r;
    qry_filter *f;
    char err[64];
    cr_assert(eq(int, qry_filter_compile("proto tcp", &f, err, sizeof err), 0));
    qry_set_deadline(ns_now_ms() - 1);
    cr_expect(eq(int, qry_summary(db, INT64_MIN, INT64_MAX, f, &t), -ETIMEDOUT));
    cr_expect(eq(int, qry_top(db, INT64_MIN, INT64_MAX, NULL, QRY_BY_SRCADDR, QRY_M_BYTES, 5, &r),
                 -ETIMEDOUT));
    cr_expect(eq(int, qry_series(db, M0, 60000, 4, NULL, b), -ETIMEDOUT));
    qry_set_deadline(0);
    cr_expect(eq(int, qry_summary(db, INT64_MIN, INT64_MAX, f, &t), 0));
    cr_expect(
        eq(int, qry_top(db, INT64_MIN, INT64_MAX, NULL, QRY_BY_SRCADDR, QRY_M_BYTES, 5, &r), 0));
    qry_top_free(&r);
    qry_filter_free(f);
}

/* ---------------------------------------------------------------------------------------------
 * Randomized: random rows, random groupings of one to three keys, random metrics and a random
 * filter, each answer against a brute-force aggregation of the same rows. */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(test_xorshift(&rng_state) % n);
}

#define RAND_N 1500
static eng_flow rand_rows[RAND_N];

static eng_flow random_flow(int i)
{
    static const uint8_t protos[] = {6, 6, 17, 1, 58, 47, 132};
    char src[64], dst[64], ex[64];
    /* v6 addresses with set bits spread over the prefix lengths nets are asked for */
    if (rnd(5) == 0)
        snprintf(src, sizeof src, "2001:db8:%x:%x::%x", rnd(65536), rnd(3) << 13, rnd(6));
    else
        snprintf(src, sizeof src, "10.%u.%u.%u", rnd(2), rnd(3), rnd(8));
    if (rnd(6) == 0)
        snprintf(dst, sizeof dst, "2001:db8:%x::%x:0:%x", rnd(4), rnd(65536), rnd(3));
    else
        snprintf(dst, sizeof dst, "192.168.%u.%u", rnd(3), rnd(12));
    snprintf(ex, sizeof ex, "192.0.2.%u", 250 + rnd(3));
    int64_t first = M0 + (int64_t)rnd(3 * 60000);
    eng_flow f = flow(src, dst, protos[rnd(7)], (uint16_t)(rnd(4) ? 1024 + rnd(5) : rnd(3) * 443),
                      (uint16_t)(rnd(3) ? 53 + rnd(4) * 30 : 40000 + rnd(3)), ex, 1 + rnd(20),
                      40 + rnd(3000), first, first + rnd(20000));
    f.in_if = rnd(4);
    f.out_if = rnd(3) * 7;
    f.src_as = rnd(3) * 65000;
    f.dst_as = rnd(4);
    f.tos = (uint8_t)(rnd(2) * 46);
    f.vlan = (uint16_t)rnd(3);
    (void)i;
    return f;
}

/* The row's value for one key spec, through the per-key reference above. */
static qry_keyval ref_part(const qry_keyspec *ks, const eng_flow *f)
{
    qry_keyval v = ref_key(ks->by, f).v[0];
    if (ks->by == QRY_BY_SRCNET)
        v.addr = ref_net(f->src, ks->bits4, ks->bits6);
    if (ks->by == QRY_BY_DSTNET)
        v.addr = ref_net(f->dst, ks->bits4, ks->bits6);
    return v;
}

Test(qry, random_groupings_and_filters_match_brute_force)
{
    static const char *const filters[] = {"",
                                          "proto tcp",
                                          "not proto udp",
                                          "port 53",
                                          "src net 10.0.0.0/9",
                                          "bytes > 1000",
                                          "dst host 192.168.1.3 or proto icmp"};
    for (int i = 0; i < RAND_N; i++) {
        rand_rows[i] = random_flow(i);
        append(rand_rows[i].first_ms / 60000 * 60000 + 30000, &rand_rows[i], 1);
    }
    eng_db_seal_due(db, M0 + 60000 + 500, false); /* some minutes sealed, some open */
    static qry_row ref[RAND_N];
    for (int round = 0; round < 150; round++) {
        qry_group g = {0};
        g.n = 1 + rnd(3);
        for (size_t k = 0; k < g.n; k++) {
            qry_by by;
            bool dup;
            do {
                by = (qry_by)rnd(QRY_NBY);
                dup = false;
                for (size_t j = 0; j < k; j++)
                    dup |= g.k[j].by == by || (g.k[j].by == QRY_BY_CONV && by == QRY_BY_CONV);
            } while (dup);
            g.k[k] = (qry_keyspec){by, (uint8_t)(8 + rnd(25)), (uint8_t)(16 + rnd(113))};
        }
        qry_metric m = (qry_metric)rnd(5);
        const char *ftext = filters[rnd(sizeof filters / sizeof filters[0])];
        qry_filter *f = NULL;
        char err[128], gname[160];
        qry_group_fmt(&g, gname, sizeof gname);
        if (ftext[0])
            cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0), "%s", err);
        size_t nref = 0;
        for (int i = 0; i < RAND_N; i++) {
            const eng_flow *r = &rand_rows[i];
            if (f && !qry_filter_match(f, r))
                continue;
            qry_key k;
            memset(&k, 0, sizeof k);
            for (size_t j = 0; j < g.n; j++)
                k.v[j] = ref_part(&g.k[j], r);
            size_t x = 0;
            while (x < nref && key_cmp(&ref[x].key, &k) != 0)
                x++;
            if (x == nref) {
                memset(&ref[nref], 0, sizeof ref[nref]);
                ref[nref++].key = k;
            }
            add_to(&ref[x].t, r);
        }
        qry_top_result res;
        cr_assert(eq(int, qry_top_group(db, INT64_MIN, INT64_MAX, f, &g, m, RAND_N, &res), 0),
                  "%s by %s", ftext, gname);
        cr_assert(eq(u64, res.groups, nref), "round %d: '%s' by %s", round, ftext, gname);
        for (size_t i = 0; i < res.n; i++) {
            size_t x = 0;
            while (x < nref && key_cmp(&ref[x].key, &res.rows[i].key) != 0)
                x++;
            cr_assert(lt(sz, x, nref), "round %d: '%s' by %s: row %zu not in the reference", round,
                      ftext, gname, i);
            cr_assert(totals_same(&res.rows[i].t, &ref[x].t), "round %d: '%s' by %s row %zu", round,
                      ftext, gname, i);
            if (i > 0)
                cr_assert(metric_of(&res.rows[i - 1].t, m == QRY_M_BPS   ? QRY_M_BYTES
                                                        : m == QRY_M_PPS ? QRY_M_PACKETS
                                                                         : m) >=
                              metric_of(&res.rows[i].t, m == QRY_M_BPS   ? QRY_M_BYTES
                                                        : m == QRY_M_PPS ? QRY_M_PACKETS
                                                                         : m),
                          "round %d: order", round);
        }
        qry_top_free(&res);
        qry_filter_free(f);
    }
}

/* The Flows Window of a device is the same as the filtered questions it stands for: its out and
 * in totals the summaries of "src host D" and "dst host D", each list the top of its grouping
 * under that filter, conversations under "host D"; asked twice (the second time from cached
 * columns), the same answer. */
static void same_top(const qry_top_result *a, const qry_top_result *b, const char *what)
{
    cr_assert(eq(sz, a->n, b->n), "%s: rows", what);
    cr_assert(eq(u64, a->groups, b->groups), "%s: groups", what);
    cr_assert(totals_same(&a->total, &b->total), "%s: total", what);
    cr_assert(eq(u64, a->other.flows, b->other.flows), "%s: other", what);
    cr_assert(eq(u64, a->other.packets, b->other.packets), "%s: other", what);
    cr_assert(eq(u64, a->other.bytes, b->other.bytes), "%s: other", what);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert(key_cmp(&a->rows[i].key, &b->rows[i].key) == 0, "%s: row %zu key", what, i);
        cr_assert(totals_same(&a->rows[i].t, &b->rows[i].t), "%s: row %zu", what, i);
        cr_assert(totals_same(&a->rows[i].ab, &b->rows[i].ab), "%s: row %zu a->b", what, i);
        cr_assert(totals_same(&a->rows[i].ba, &b->rows[i].ba), "%s: row %zu b->a", what, i);
    }
}

Test(qry, device_window_equals_its_filtered_questions)
{
    for (int i = 0; i < RAND_N; i++) {
        rand_rows[i] = random_flow(i);
        append(rand_rows[i].first_ms / 60000 * 60000 + 30000, &rand_rows[i], 1);
    }
    eng_db_seal_due(db, M0 + 60000 + 500, false); /* some minutes sealed, some open */
    static const char *const devs[] = {"192.168.1.3", "10.1.2.5", "10.0.0.0"};
    int64_t from = M0, to = M0 + 4 * 60000, step = 30000;
    size_t nb = (size_t)((to - from) / step) + 1;
    for (size_t d = 0; d < sizeof devs / sizeof devs[0]; d++) {
        ns_addr dev = addr(devs[d]);
        qry_device_result r[2];
        for (int pass = 0; pass < 2; pass++)
            cr_assert(eq(int, qry_device(db, &dev, from, to, step, nb, 7, &r[pass]), 0));
        char text[3][80];
        snprintf(text[0], sizeof text[0], "src host %s", devs[d]);
        snprintf(text[1], sizeof text[1], "dst host %s", devs[d]);
        snprintf(text[2], sizeof text[2], "host %s", devs[d]);
        qry_filter *f[3];
        char err[128];
        for (int k = 0; k < 3; k++)
            cr_assert(eq(int, qry_filter_compile(text[k], &f[k], err, sizeof err), 0), "%s", err);
        qry_totals out, in;
        cr_assert(eq(int, qry_summary(db, from, to, f[0], &out), 0));
        cr_assert(eq(int, qry_summary(db, from, to, f[1], &in), 0));
        cr_assert(out.flows + in.flows > 0, "%s has traffic", devs[d]);
        for (int pass = 0; pass < 2; pass++) {
            cr_assert(totals_same(&r[pass].out, &out), "%s out (pass %d)", devs[d], pass);
            cr_assert(totals_same(&r[pass].in, &in), "%s in (pass %d)", devs[d], pass);
            uint64_t sum_out = 0, sum_in = 0;
            for (size_t b = 0; b < nb; b++) {
                sum_out += r[pass].series_out[b].bytes;
                sum_in += r[pass].series_in[b].bytes;
            }
            /* every flow lies inside [from, from + nb * step): the series holds all its bytes */
            cr_assert(eq(u64, sum_out, out.bytes), "%s series out", devs[d]);
            cr_assert(eq(u64, sum_in, in.bytes), "%s series in", devs[d]);
            for (int l = 0; l < QRY_DEV_NLISTS; l++) {
                const qry_filter *lf = l < QRY_DEV_LISTENER_PEERS  ? f[0]
                                       : l < QRY_DEV_CONVERSATIONS ? f[1]
                                                                   : f[2];
                qry_top_result want;
                qry_group lg;
                qry_group_one(qry_device_list_by((qry_dev_list)l), &lg);
                cr_assert(eq(int,
                             qry_top_group_opt(db, from, to, lf, &lg, QRY_M_BYTES, 7,
                                               QRY_TOP_NO_GROUP_TIMES, &want),
                             0));
                char what[120];
                snprintf(what, sizeof what, "%s list %d pass %d", devs[d], l, pass);
                same_top(&r[pass].lists[l], &want, what);
                qry_top_free(&want);
            }
        }
        for (int k = 0; k < 3; k++)
            qry_filter_free(f[k]);
        qry_device_free(&r[0]);
        qry_device_free(&r[1]);
    }
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    cr_assert(st.cache_hits > 0, "the second pass read cached columns");
}

/* A cache too small for most columns (evicting all the time) gives the answers of no cache. */
Test(qry, answers_are_the_same_with_a_small_cache_and_none)
{
    for (int i = 0; i < RAND_N; i++) {
        rand_rows[i] = random_flow(i);
        append(rand_rows[i].first_ms / 60000 * 60000 + 30000, &rand_rows[i], 1);
    }
    cr_assert(gt(int, eng_db_seal_due(db, 0, true), 0));
    static const char *const groups[] = {"srcaddr", "dstport", "conversation", "proto,dstaddr"};
    qry_top_result none[4];
    char err[128];
    eng_db_close(db);
    eng_db_opts o = {.seal_delay_s = 0, .no_sealer_thread = true};
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    for (int g = 0; g < 4; g++) {
        qry_group grp;
        cr_assert(eq(int, qry_group_parse(groups[g], &grp, err, sizeof err), 0), "%s", err);
        cr_assert(eq(int,
                     qry_top_group(db, INT64_MIN, INT64_MAX, NULL, &grp, QRY_M_BYTES, 20, &none[g]),
                     0));
    }
    eng_db_close(db);
    o.cache_bytes = 20000; /* a quarter holds a counter column, not an address one: it churns */
    cr_assert(eq(int, eng_db_open(tmpdir, &o, &db, err, sizeof err), 0), "%s", err);
    for (int pass = 0; pass < 3; pass++)
        for (int g = 0; g < 4; g++) {
            qry_group grp;
            qry_top_result r;
            cr_assert(eq(int, qry_group_parse(groups[g], &grp, err, sizeof err), 0));
            cr_assert(eq(
                int, qry_top_group(db, INT64_MIN, INT64_MAX, NULL, &grp, QRY_M_BYTES, 20, &r), 0));
            same_top(&r, &none[g], groups[g]);
            qry_top_free(&r);
        }
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    /* (an LRU cache smaller than a scan's columns may hit nothing: cycling evicts first) */
    cr_assert(st.cache_misses > 0 && st.cache_bytes <= 20000,
              "misses %" PRIu64 ", %" PRIu64 " bytes", st.cache_misses, st.cache_bytes);
    for (int g = 0; g < 4; g++)
        qry_top_free(&none[g]);
}

/* Without group times the answer is the same but for the groups' times (0), and the total
 * keeps its exact times, with or without a filter, whole store or part of it. */
Test(qry, top_without_group_times_keeps_counts_and_the_total)
{
    for (int i = 0; i < RAND_N; i++) {
        rand_rows[i] = random_flow(i);
        /* some rows of many flows (roll-up rows) or counters past 32 bits: the partitioned
         * path keeps them in wide records */
        if (i % 7 == 0)
            rand_rows[i].bytes += 5ull << 32;
        if (i % 11 == 0)
            rand_rows[i].flows = 3 + (uint64_t)(i % 5);
        append(rand_rows[i].first_ms / 60000 * 60000 + 30000, &rand_rows[i], 1);
    }
    eng_db_seal_due(db, M0 + 60000 + 500, false); /* some minutes sealed, some open */
    /* conversations and address pairs take the partitioned path: the same answer */
    static const char *const groups[] = {"srcaddr",         "dstport",         "conversation",
                                         "proto,dstnet/16", "srcaddr,dstaddr", "dstaddr,srcaddr"};
    static const int64_t ranges[][2] = {{INT64_MIN, INT64_MAX}, {M0 + 30000, M0 + 150000}};
    char err[128];
    for (int g = 0; g < 6; g++)
        for (int rg = 0; rg < 2; rg++)
            for (int filtered = 0; filtered < 4; filtered++) {
                /* 2 and 3: every group a row (small ones too: both directions of a
                 * conversation, ties broken by key) */
                size_t limit = filtered < 2 ? 10 : 100000;
                qry_group grp;
                qry_filter *f = NULL;
                cr_assert(eq(int, qry_group_parse(groups[g], &grp, err, sizeof err), 0));
                /* 3: addresses and a number: rows built, addresses from dictionaries */
                const char *ftext =
                    filtered == 1 ? "proto tcp" : "src net 10.0.0.0/16 and not proto udp";
                if (filtered % 2)
                    cr_assert(eq(int, qry_filter_compile(ftext, &f, err, sizeof err), 0));
                qry_top_result a, b;
                cr_assert(eq(int,
                             qry_top_group(db, ranges[rg][0], ranges[rg][1], f, &grp, QRY_M_BYTES,
                                           limit, &a),
                             0));
                cr_assert(eq(int,
                             qry_top_group_opt(db, ranges[rg][0], ranges[rg][1], f, &grp,
                                               QRY_M_BYTES, limit, QRY_TOP_NO_GROUP_TIMES, &b),
                             0));
                cr_assert(totals_same(&a.total, &b.total), "%s: the total, times included",
                          groups[g]);
                cr_assert(eq(i64, a.span_ms, b.span_ms));
                cr_assert(eq(u64, a.other.flows, b.other.flows), "other: the total less the rows");
                cr_assert(eq(u64, a.other.packets, b.other.packets));
                cr_assert(eq(u64, a.other.bytes, b.other.bytes));
                cr_assert(eq(sz, a.n, b.n));
                cr_assert(eq(u64, a.groups, b.groups), "%s: groups", groups[g]);
                for (size_t i = 0; i < a.n; i++) {
                    cr_assert(key_cmp(&a.rows[i].key, &b.rows[i].key) == 0, "%s row %zu", groups[g],
                              i);
                    cr_assert(eq(u64, a.rows[i].ab.bytes, b.rows[i].ab.bytes), "a to b");
                    cr_assert(eq(u64, a.rows[i].ba.bytes, b.rows[i].ba.bytes), "b to a");
                    cr_assert(eq(u64, a.rows[i].ab.flows, b.rows[i].ab.flows));
                    cr_assert(eq(u64, a.rows[i].t.flows, b.rows[i].t.flows));
                    cr_assert(eq(u64, a.rows[i].t.bytes, b.rows[i].t.bytes));
                    cr_assert(eq(u64, a.rows[i].t.packets, b.rows[i].t.packets));
                    cr_assert(b.rows[i].t.first_ms == 0 && b.rows[i].t.last_ms == 0,
                              "no group times");
                }
                qry_top_free(&a);
                qry_top_free(&b);
                qry_filter_free(f);
            }
}

/* A grouping by one address over a few rows of a segment with many distinct values (a device's
 * rows the index picked) against sums made here from the rows: the path that looks rows up one
 * by one instead of through an array the size of the dictionary. */
Test(qry, one_address_groups_over_few_rows_of_many_values)
{
    enum { N = 4000 };
    static eng_flow rows[N];
    char src[32], dst[32];
    for (int i = 0; i < N; i++) {
        snprintf(src, sizeof src, "10.1.%d.%d", (i * 7) % 1500 / 250, (i * 7) % 1500 % 250);
        snprintf(dst, sizeof dst, "192.168.%d.%d", i % 1000 / 250, i % 1000 % 250);
        rows[i] = flow(src, dst, 6, (uint16_t)(1024 + i), 443, "192.0.2.1", 1 + (uint64_t)(i % 9),
                       100 + (uint64_t)i, M0 + i, M0 + i + 500);
    }
    append(M0 + 30000, rows, N);
    cr_assert(gt(int, eng_db_seal_due(db, 0, true), 0));
    /* dst 192.168.0.7 has 4 rows (i = 7, 1007, ...), over 1500 distinct sources */
    const char *const filters[] = {"dst host 192.168.0.7", "src host 10.1.0.14"};
    const qry_by by[] = {QRY_BY_SRCADDR, QRY_BY_DSTADDR};
    for (int f = 0; f < 2; f++) {
        qry_filter *flt;
        char err[128];
        cr_assert(eq(int, qry_filter_compile(filters[f], &flt, err, sizeof err), 0), "%s", err);
        qry_top_result r;
        cr_assert(eq(int, qry_top(db, INT64_MIN, INT64_MAX, flt, by[f], QRY_M_BYTES, 100, &r), 0));
        ns_addr want = addr(f == 0 ? "192.168.0.7" : "10.1.0.14");
        size_t matched = 0;
        uint64_t sum = 0;
        for (int i = 0; i < N; i++) {
            const ns_addr *a = f == 0 ? &rows[i].dst : &rows[i].src;
            if (memcmp(a, &want, sizeof want) != 0)
                continue;
            matched++;
            sum += rows[i].bytes;
            /* the row's group holds at least this row's bytes, under its own key */
            const ns_addr *key = f == 0 ? &rows[i].src : &rows[i].dst;
            bool found = false;
            for (size_t k = 0; k < r.n; k++)
                found |= memcmp(&r.rows[k].key.v[0].addr, key, sizeof *key) == 0 &&
                         r.rows[k].t.bytes >= rows[i].bytes;
            cr_assert(found, "%s: row %d's group", filters[f], i);
        }
        cr_assert(gt(sz, matched, 0));
        cr_assert(eq(u64, r.total.bytes, sum), "%s", filters[f]);
        cr_assert(eq(u64, r.total.flows, matched));
        uint64_t rows_sum = 0;
        for (size_t k = 0; k < r.n; k++)
            rows_sum += r.rows[k].t.bytes;
        cr_assert(eq(u64, rows_sum, sum), "every group among the rows: none other");
        qry_top_free(&r);
        qry_filter_free(flt);
    }
}
