/* Tests of the NetFlow v5 decoder and of ing_decode's per-exporter bookkeeping: valid,
 * truncated, count/length mismatch and garbage datagrams, sampling, times and sequence gaps. */
#include "ingest/ingest.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

static void be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Builds a v5 datagram of n records into buf; returns its length. Record i has src 10.0.0.i,
 * dst 192.168.1.i, ports 1000+i → 80, i+1 packets, 100*(i+1) bytes, first = uptime-5000,
 * last = uptime-1000. */
static size_t make_v5(uint8_t *buf, uint16_t n, uint32_t seq, uint16_t sampling)
{
    memset(buf, 0, ING_V5_HDR + (size_t)n * ING_V5_REC);
    be16(buf, 5);
    be16(buf + 2, n);
    be32(buf + 4, 100000);     /* sysUptime ms */
    be32(buf + 8, 1700000000); /* unix secs */
    be32(buf + 12, 250000000); /* unix nsecs: .250 */
    be32(buf + 16, seq);
    buf[20] = 1; /* engine type */
    buf[21] = 7; /* engine id */
    be16(buf + 22, sampling);
    for (uint16_t i = 0; i < n; i++) {
        uint8_t *r = buf + ING_V5_HDR + (size_t)i * ING_V5_REC;
        be32(r, 0x0a000000u | i);
        be32(r + 4, 0xc0a80100u | i);
        be32(r + 8, 0x0a0000feu);
        be16(r + 12, 3);
        be16(r + 14, 4);
        be32(r + 16, i + 1u);
        be32(r + 20, 100u * (i + 1u));
        be32(r + 24, 100000 - 5000);
        be32(r + 28, 100000 - 1000);
        be16(r + 32, (uint16_t)(1000 + i));
        be16(r + 34, 80);
        r[37] = 0x1b; /* tcp flags */
        r[38] = 6;
        r[39] = 0x10;
        be16(r + 40, 64512);
        be16(r + 42, 15169);
        r[44] = 24;
        r[45] = 16;
    }
    return ING_V5_HDR + (size_t)n * ING_V5_REC;
}

static void assert_addr(const ns_addr *a, const char *want)
{
    char got[64];
    ns_addr_fmt(a, got, sizeof got);
    cr_assert(strcmp(got, want) == 0, "address %s, expected %s", got, want);
}

static eng_flow rows[256];
static ing_batch batch;
static ns_addr exporter;

static void setup(void)
{
    batch.rows = rows;
    batch.n = 0;
    batch.cap = 256;
    ns_addr_parse("192.0.2.1", &exporter);
    ns_log_set_level(NS_LOG_ERROR); /* the decoders warn by design here */
}

TestSuite(ing_v5, .init = setup);

Test(ing_v5, valid_datagram_decodes_every_field)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 3, 42, 0);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), 0));
    cr_assert(eq(sz, batch.n, 3));
    cr_assert(eq(u16, h.count, 3));
    cr_assert(eq(u32, h.flow_sequence, 42));
    const eng_flow *f = &rows[2];
    assert_addr(&f->src, "10.0.0.2");
    assert_addr(&f->dst, "192.168.1.2");
    assert_addr(&f->nexthop, "10.0.0.254");
    assert_addr(&f->exporter, "192.0.2.1");
    cr_assert(eq(u16, f->src_port, 1002));
    cr_assert(eq(u16, f->dst_port, 80));
    cr_assert(eq(u8, f->proto, 6));
    cr_assert(eq(u8, f->tcp_flags, 0x1b));
    cr_assert(eq(u8, f->tos, 0x10));
    cr_assert(eq(u64, f->packets, 3));
    cr_assert(eq(u64, f->bytes, 300));
    cr_assert(eq(u32, f->in_if, 3));
    cr_assert(eq(u32, f->out_if, 4));
    cr_assert(eq(u32, f->src_as, 64512));
    cr_assert(eq(u32, f->dst_as, 15169));
    cr_assert(eq(u8, f->src_mask, 24));
    cr_assert(eq(u8, f->dst_mask, 16));
    cr_assert(eq(u32, f->sampling, 1));
    cr_assert(eq(u32, f->source_id, 1u << 8 | 7u));
    /* export time 1700000000.250 is uptime 100000: first = -5 s, last = -1 s */
    cr_assert(eq(i64, f->first_ms, 1700000000250LL - 5000));
    cr_assert(eq(i64, f->last_ms, 1700000000250LL - 1000));
}

Test(ing_v5, sampling_interval_scales_packets_and_bytes)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    /* mode 1 (deterministic) in the top bits, interval 1000 */
    size_t len = make_v5(pkt, 2, 0, (uint16_t)(1u << 14 | 1000u));
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), 0));
    cr_assert(eq(u16, h.sampling_interval, 1000));
    cr_assert(eq(u16, h.sampling_mode, 1));
    cr_assert(eq(u64, rows[1].packets, 2000));
    cr_assert(eq(u64, rows[1].bytes, 200000));
    cr_assert(eq(u32, rows[1].sampling, 1000));
}

Test(ing_v5, uptime_wrap_keeps_times_in_the_past)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 1, 0, 0);
    /* the router's uptime wrapped: now 500 ms, the flow started at 2^32 - 1500 */
    be32(pkt + 4, 500);
    be32(pkt + ING_V5_HDR + 24, 0xffffffffu - 1499u);
    be32(pkt + ING_V5_HDR + 28, 400);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), 0));
    cr_assert(eq(i64, rows[0].first_ms, 1700000000250LL - 2000));
    cr_assert(eq(i64, rows[0].last_ms, 1700000000250LL - 100));
}

Test(ing_v5, short_header_is_rejected)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    make_v5(pkt, 1, 0, 0);
    for (size_t len = 0; len < ING_V5_HDR; len++) {
        cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_SHORT));
        cr_assert(eq(sz, batch.n, 0));
    }
}

Test(ing_v5, truncated_records_add_nothing)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 5, 0, 0);
    for (size_t cut = 1; cut < ING_V5_REC * 5; cut += 7) {
        cr_assert(eq(int, ing_v5_decode(pkt, len - cut, &exporter, &batch, &h), ING_E_LENGTH));
        cr_assert(eq(sz, batch.n, 0));
    }
}

Test(ing_v5, count_beyond_length_is_a_length_error)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 2, 0, 0);
    be16(pkt + 2, 3); /* claims one record more than sent */
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_LENGTH));
    cr_assert(eq(sz, batch.n, 0));
}

Test(ing_v5, count_zero_or_above_30_is_rejected)
{
    uint8_t pkt[4096];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 30, 0, 0);
    be16(pkt + 2, 0);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_COUNT));
    be16(pkt + 2, 31);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_COUNT));
    be16(pkt + 2, 55582); /* the logstash invalid01 capture's bogus count */
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_COUNT));
    be16(pkt + 2, 30);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), 0));
    cr_assert(eq(sz, batch.n, 30));
}

Test(ing_v5, trailing_padding_is_accepted)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 2, 0, 0);
    memset(pkt + len, 0, 16);
    cr_assert(eq(int, ing_v5_decode(pkt, len + 16, &exporter, &batch, &h), 0));
    cr_assert(eq(sz, batch.n, 2));
}

Test(ing_v5, other_versions_are_not_v5)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 2, 0, 0);
    be16(pkt, 9);
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_VERSION));
}

Test(ing_v5, full_batch_is_reported_not_overrun)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    size_t len = make_v5(pkt, 10, 0, 0);
    batch.cap = 9;
    cr_assert(eq(int, ing_v5_decode(pkt, len, &exporter, &batch, &h), ING_E_BATCH));
    cr_assert(eq(sz, batch.n, 0));
}

Test(ing_v5, garbage_never_crashes_or_overruns)
{
    uint8_t pkt[2048];
    ing_v5_hdr h;
    uint32_t x = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(x % 1600);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            pkt[i] = (uint8_t)(x >> 16);
        }
        if (len >= 2 && round % 2 == 0)
            be16(pkt, 5); /* half the time make it look like v5 */
        batch.n = 0;
        int rc = ing_v5_decode(pkt, len, &exporter, &batch, &h);
        cr_assert(rc == 0 || rc == ING_E_SHORT || rc == ING_E_VERSION || rc == ING_E_COUNT ||
                  rc == ING_E_LENGTH);
        cr_assert(rc == 0 ? batch.n == h.count : batch.n == 0);
        cr_assert(batch.n <= ING_V5_MAX_RECS);
    }
}

/* ---------------------------------------------------------------------------------------------
 * ing_decode: counters per exporter */

TestSuite(ing_decode, .init = setup);

static ing_exporter_stats only_exporter(ing_exporters *ex)
{
    ing_exporter_stats st[4];
    size_t n = ing_exporters_list(ex, st, 4);
    cr_assert(eq(sz, n, 1));
    return st[0];
}

Test(ing_decode, counts_datagrams_flows_and_errors_by_kind)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t len = make_v5(pkt, 4, 0, 0);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 4));
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, 10, &batch), ING_E_SHORT));
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, 1, &batch), ING_E_SHORT));
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len - 1, &batch), ING_E_LENGTH));
    be16(pkt + 2, 99);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), ING_E_COUNT));
    be16(pkt, 7);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), ING_E_VERSION));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u64, st.datagrams, 6));
    cr_assert(eq(u64, st.flows, 4));
    cr_assert(eq(u64, st.err_short, 2));
    cr_assert(eq(u64, st.err_length, 1));
    cr_assert(eq(u64, st.err_count, 1));
    cr_assert(eq(u64, st.err_version, 1));
    cr_assert(eq(sz, batch.n, 4));
    ing_exporters_free(ex);
}

Test(ing_decode, sequence_gaps_estimate_lost_flows)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t len = make_v5(pkt, 10, 100, 0);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10)); /* next 110 */
    be32(pkt + 16, 110);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10)); /* in order */
    be32(pkt + 16, 150); /* 30 flows (3 datagrams) missing */
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u64, st.seq_gaps, 1));
    cr_assert(eq(u64, st.lost_flows, 30));
    cr_assert(eq(u64, st.seq_resets, 0));
    be32(pkt + 16, 5); /* went backwards: the exporter restarted */
    batch.n = 0;
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    st = only_exporter(ex);
    cr_assert(eq(u64, st.seq_resets, 1));
    cr_assert(eq(u64, st.lost_flows, 30));
    ing_exporters_free(ex);
}

Test(ing_decode, sequence_wraps_at_2_to_the_32_in_order)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t len = make_v5(pkt, 10, 0xfffffffbu, 0);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    be32(pkt + 16, 5); /* 0xfffffffb + 10 wraps to 5 */
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u64, st.seq_gaps, 0));
    cr_assert(eq(u64, st.seq_resets, 0));
    ing_exporters_free(ex);
}

Test(ing_decode, engines_of_one_exporter_have_their_own_sequence)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t len = make_v5(pkt, 10, 1000, 0);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    pkt[21] = 8; /* another engine id, its own counter */
    be32(pkt + 16, 7);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    pkt[21] = 7;
    be32(pkt + 16, 1010);
    batch.n = 0;
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 10));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u64, st.seq_gaps, 0));
    cr_assert(eq(u64, st.seq_resets, 0));
    ing_exporters_free(ex);
}

Test(ing_decode, stacked_pdus_in_one_datagram_all_decode)
{
    ing_exporters *ex;
    uint8_t pkt[4096];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t a = make_v5(pkt, 2, 0, 0);
    size_t b = make_v5(pkt + a, 4, 2, 0); /* seq continues: 0 + 2 */
    size_t c = make_v5(pkt + a + b, 3, 6, 0);
    memset(pkt + a + b + c, 0, 10); /* then padding */
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, a + b + c + 10, &batch), 9));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u64, st.datagrams, 1));
    cr_assert(eq(u64, st.flows, 9));
    cr_assert(eq(u64, st.seq_gaps, 0));
    cr_assert(eq(u64, st.err_length, 0));
    /* a truncated third PDU: the first two are kept, the third counted as an error */
    batch.n = 0;
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, a + b + c - 1, &batch), 6));
    st = only_exporter(ex);
    cr_assert(eq(u64, st.err_length, 1));
    cr_assert(eq(u64, st.flows, 15));
    /* no room for the second PDU: nothing is added or counted */
    batch.n = 0;
    batch.cap = 3;
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, a + b + c, &batch), ING_E_BATCH));
    cr_assert(eq(sz, batch.n, 0));
    cr_assert(eq(u64, only_exporter(ex).datagrams, 2));
    ing_exporters_free(ex);
}

Test(ing_decode, exporter_cap_refuses_and_counts)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    ns_addr other;
    cr_assert(eq(int, ing_exporters_new(1, &ex), 0));
    ns_addr_parse("2001:db8::9", &other);
    size_t len = make_v5(pkt, 2, 0, 0);
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 2));
    cr_assert(eq(int, ing_decode(ex, &other, 1000, pkt, len, &batch), ING_E_EXPORTERS));
    cr_assert(eq(sz, batch.n, 2)); /* the refused datagram's rows were taken back */
    cr_assert(eq(u64, ing_exporters_overflow(ex), 1));
    ing_exporters_free(ex);
}

Test(ing_decode, allow_list_refuses_others_without_a_table_entry)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    ns_addr in4, out4, in6;
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    cr_assert(eq(int, ing_exporters_allow(ex, "192.0.2.0/24, 2001:db8::/32"), 0));
    ns_addr_parse("192.0.2.77", &in4);
    ns_addr_parse("198.51.100.1", &out4);
    ns_addr_parse("2001:db8:ff::1", &in6);
    size_t len = make_v5(pkt, 2, 0, 0);
    cr_assert(eq(int, ing_decode(ex, &in4, 1000, pkt, len, &batch), 2));
    cr_assert(eq(int, ing_decode(ex, &in6, 1000, pkt, len, &batch), 2));
    cr_assert(eq(int, ing_decode(ex, &out4, 1000, pkt, len, &batch), ING_E_NOT_ALLOWED));
    cr_assert(eq(u64, ing_exporters_refused(ex), 1));
    cr_assert(eq(sz, ing_exporters_list(ex, NULL, 0), 2));
    cr_assert(eq(int, ing_exporters_allow(ex, "10.0.0.0/33"), NS_E_PARSE));
    ing_exporters_free(ex);
}

Test(ing_decode, prefixes_match_by_their_length)
{
    ns_prefix p;
    ns_addr a;
    cr_assert(eq(int, ns_prefix_parse("10.1.2.3/8", &p), 0)); /* host bits are cleared */
    ns_addr_parse("10.255.0.1", &a);
    cr_assert(ns_prefix_match(&p, &a));
    ns_addr_parse("11.0.0.1", &a);
    cr_assert(ns_prefix_match(&p, &a) == false);
    cr_assert(eq(int, ns_prefix_parse("192.0.2.1", &p), 0)); /* a bare address is a /32 */
    ns_addr_parse("192.0.2.1", &a);
    cr_assert(ns_prefix_match(&p, &a));
    ns_addr_parse("192.0.2.2", &a);
    cr_assert(ns_prefix_match(&p, &a) == false);
    cr_assert(eq(int, ns_prefix_parse("2001:db8::/29", &p), 0));
    ns_addr_parse("2001:dbf::1", &a);
    cr_assert(ns_prefix_match(&p, &a));
    ns_addr_parse("2001:dc0::1", &a);
    cr_assert(ns_prefix_match(&p, &a) == false);
    cr_assert(eq(int, ns_prefix_parse("0.0.0.0/0", &p), 0)); /* every v4, no v6 */
    ns_addr_parse("203.0.113.9", &a);
    cr_assert(ns_prefix_match(&p, &a));
    ns_addr_parse("2001:db8::1", &a);
    cr_assert(ns_prefix_match(&p, &a) == false);
    cr_assert(eq(int, ns_prefix_parse("2001:db8::/129", &p), NS_E_RANGE));
    cr_assert(eq(int, ns_prefix_parse("/8", &p), NS_E_PARSE));
    cr_assert(eq(int, ns_prefix_parse("10.0.0.0/x", &p), NS_E_PARSE));
}

/* An exporter whose datagrams come at two sampling rates shows both rates in use, each with
 * its flows; the last rate is the `sampling` of old. */
Test(ing_decode, sampling_rates_in_use_are_listed_with_their_flows)
{
    ing_exporters *ex;
    uint8_t pkt[2048];
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    size_t len = make_v5(pkt, 4, 1, (uint16_t)(1u << 14 | 100)); /* mode 1, interval 100 */
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 4));
    len = make_v5(pkt, 3, 5, 0); /* unsampled */
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 3));
    len = make_v5(pkt, 2, 8, (uint16_t)(1u << 14 | 100));
    cr_assert(eq(int, ing_decode(ex, &exporter, 1000, pkt, len, &batch), 2));
    ing_exporter_stats st = only_exporter(ex);
    cr_assert(eq(u32, st.nrates, 2));
    cr_expect(eq(u32, st.rates[0], 100));
    cr_expect(eq(u64, st.rate_flows[0], 6));
    cr_expect(eq(u32, st.rates[1], 1));
    cr_expect(eq(u64, st.rate_flows[1], 3));
    cr_expect(eq(u32, st.sampling, 100));
    ns_buf b = {0};
    ing_exporters_json(ex, &b);
    cr_expect(
        strstr(b.p, "\"sampling_rates\":[{\"rate\":100,\"flows\":6},{\"rate\":1,\"flows\":3}]") !=
            NULL,
        "%s", b.p);
    ns_buf_free(&b);
    ing_exporters_free(ex);
}
