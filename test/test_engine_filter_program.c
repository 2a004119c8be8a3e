/* test/test_engine_filter_program.c — the compiled filter as other back ends see it
 * (qry_filter_test, qry_filter_num, qry_filter_net): an interpreter written here from the
 * header's contract alone must agree with qry_filter_match on every row, for many filters. */
#include "engine/query.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>

static uint64_t dur(const eng_flow *r)
{
    return r->last_ms > r->first_ms ? (uint64_t)r->last_ms - (uint64_t)r->first_ms : 0;
}

static uint64_t muldiv(uint64_t a, uint64_t m, uint64_t d)
{
    unsigned __int128 x = (unsigned __int128)a * m / d;
    return x > UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

static uint64_t num(const char *f, const eng_flow *r)
{
    uint64_t d = dur(r);
    if (!strcmp(f, "srcport"))
        return r->src_port;
    if (!strcmp(f, "dstport"))
        return r->dst_port;
    if (!strcmp(f, "proto"))
        return r->proto;
    if (!strcmp(f, "tos"))
        return r->tos;
    if (!strcmp(f, "flags"))
        return r->tcp_flags;
    if (!strcmp(f, "srcas"))
        return r->src_as;
    if (!strcmp(f, "dstas"))
        return r->dst_as;
    if (!strcmp(f, "inif"))
        return r->in_if;
    if (!strcmp(f, "outif"))
        return r->out_if;
    if (!strcmp(f, "vlan"))
        return r->vlan;
    if (!strcmp(f, "srcmask"))
        return r->src_mask;
    if (!strcmp(f, "dstmask"))
        return r->dst_mask;
    if (!strcmp(f, "bytes"))
        return r->bytes;
    if (!strcmp(f, "packets"))
        return r->packets;
    if (!strcmp(f, "direction"))
        return r->direction;
    if (!strcmp(f, "duration"))
        return d;
    if (!strcmp(f, "bps"))
        return d ? muldiv(r->bytes, 8000, d) : muldiv(r->bytes, 8, 1);
    if (!strcmp(f, "pps"))
        return d ? muldiv(r->packets, 1000, d) : r->packets;
    if (!strcmp(f, "bpp"))
        return r->packets ? r->bytes / r->packets : 0;
    if (!strcmp(f, "icmptype"))
        return (uint64_t)(r->dst_port >> 8);
    if (!strcmp(f, "icmpcode"))
        return (uint64_t)(r->dst_port & 255);
    cr_assert(false, "unknown numeric field '%s'", f);
    return 0;
}

static const ns_addr *addr(const char *f, const eng_flow *r)
{
    if (!strcmp(f, "src"))
        return &r->src;
    if (!strcmp(f, "dst"))
        return &r->dst;
    if (!strcmp(f, "exporter"))
        return &r->exporter;
    cr_assert(strcmp(f, "nexthop") == 0, "unknown address field %s", f);
    return &r->nexthop;
}

static bool in_net(const qry_filter *f, size_t k, const ns_addr *a)
{
    ns_addr v, m;
    qry_filter_net(f, k, &v, &m);
    for (int i = 0; i < 16; i++)
        if ((a->b[i] & m.b[i]) != v.b[i])
            return false;
    return true;
}

static bool run(const qry_filter *f, const eng_flow *r)
{
    size_t n = qry_filter_ntests(f), pc = 0;
    while (pc < n) {
        qry_ftest t;
        bool ok = false;
        qry_filter_test(f, pc, &t);
        switch (t.kind) {
        case QRY_FT_TRUE:
            ok = true;
            break;
        case QRY_FT_NUM: {
            uint64_t x = num(t.field, r);
            ok = t.cmp == QRY_FC_EQ   ? x == t.val
                 : t.cmp == QRY_FC_NE ? x != t.val
                 : t.cmp == QRY_FC_LT ? x < t.val
                 : t.cmp == QRY_FC_LE ? x <= t.val
                 : t.cmp == QRY_FC_GT ? x > t.val
                 : t.cmp == QRY_FC_GE ? x >= t.val
                                      : (x & t.val) == t.val;
            break;
        }
        case QRY_FT_NUM_IN:
            for (size_t k = 0; k < t.n; k++)
                ok = ok || qry_filter_num(f, t.first + k) == num(t.field, r);
            break;
        case QRY_FT_NET:
        case QRY_FT_NET_IN:
            for (size_t k = 0; k < t.n; k++)
                ok = ok || in_net(f, t.first + k, addr(t.field, r));
            break;
        case QRY_FT_SRC_V4:
            ok = ns_addr_is_v4(&r->src);
            break;
        case QRY_FT_SRC_V6:
            ok = !ns_addr_is_v4(&r->src);
            break;
        }
        size_t next = ok ? t.jt : t.jf;
        cr_assert(next > pc, "jumps go forward");
        pc = next;
    }
    return pc == n;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static eng_flow row(uint64_t *s)
{
    eng_flow r = {0};
    static const uint8_t protos[] = {1, 6, 17, 47, 58};
    r.first_ms = 1700000000000 + (int64_t)(rnd(s) % 100000);
    r.last_ms = r.first_ms + (int64_t)(rnd(s) % 4 == 0 ? 0 : rnd(s) % 30000);
    r.packets = rnd(s) % 50;
    r.bytes = r.packets * (40 + rnd(s) % 1460);
    if (rnd(s) % 3 == 0) {
        ns_addr_parse("2001:db8::1", &r.src);
        r.src.b[15] = (uint8_t)rnd(s);
    } else {
        ns_addr_from_v4(&r.src, 0x0a000000u | (uint32_t)(rnd(s) & 0x1ffff));
    }
    ns_addr_from_v4(&r.dst, 0xc0a80000u | (uint32_t)(rnd(s) & 0x3ff));
    ns_addr_from_v4(&r.exporter, 0xc0000201u + (uint32_t)(rnd(s) % 3));
    r.src_port = (uint16_t)(rnd(s) % 4 ? 1024 + rnd(s) % 60000 : 53);
    r.dst_port = (uint16_t)(rnd(s) % 2 ? 443 : rnd(s) % 2048);
    r.proto = protos[rnd(s) % sizeof protos];
    r.tcp_flags = (uint8_t)rnd(s);
    r.tos = (uint8_t)(rnd(s) % 4 * 32);
    r.src_as = (uint32_t)(rnd(s) % 3 + 64500);
    r.in_if = (uint32_t)(rnd(s) % 8);
    r.vlan = (uint16_t)(rnd(s) % 3 * 100);
    r.direction = (uint8_t)(rnd(s) % 2);
    return r;
}

Test(filter_program, an_interpreter_of_the_exported_program_agrees_with_match)
{
    static const char *const texts[] = {
        "",
        "any",
        "tcp",
        "not tcp",
        "tcp and port 443",
        "udp or dst port 53 and not src port 53",
        "host 10.0.0.7 or net 192.168.1.0/24",
        "src net 10.0.0.0/15 and not dst net 192.168.0.0/22",
        "net 2001:db8::/32 and ipv6",
        "ipv4 and (port in [80 443 53] or proto in [udp gre])",
        "flags S and not flags A",
        "flags = SA or flags > 0x80",
        "bytes > 10k and packets < 20",
        "bps > 1M or pps >= 100",
        "bpp < 100 and duration > 5000",
        "icmp-type 3 or icmp-code 4",
        "exporter 192.0.2.2 or exporter in [192.0.2.3 10.9.9.9]",
        "src as 64501 and in if 3",
        "vlan 100 or tos 64",
        "flowdir egress and not (tcp or udp)",
        "src net 0.0.0.0/0",
        "net ::/0 and not ((tcp and port 443) or (udp and port 53))",
    };
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    eng_flow rows[2000];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        rows[i] = row(&seed);
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        qry_filter *f = NULL;
        char err[256];
        cr_assert(eq(int, qry_filter_compile(texts[t], &f, err, sizeof err), 0), "%s: %s", texts[t],
                  err);
        size_t hits = 0;
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            bool want = qry_filter_match(f, &rows[i]);
            cr_assert(eq(int, run(f, &rows[i]), want), "'%s' on row %zu", texts[t], i);
            hits += want;
        }
        /* the rows exercise both outcomes of every filter but the ones that match everything */
        if (t > 1 && strcmp(texts[t], "net ::/0 and not ((tcp and port 443) or (udp and port 53))"))
            cr_assert(lt(sz, hits, sizeof rows / sizeof rows[0]), "'%s' matched every row",
                      texts[t]);
        qry_filter_free(f);
    }
}

Test(filter_program, no_filter_has_no_tests_and_a_leaf_names_its_field)
{
    qry_filter *f = NULL;
    char err[256];
    cr_assert(eq(sz, qry_filter_ntests(NULL), 0));
    cr_assert(eq(int, qry_filter_compile("dst port > 1023", &f, err, sizeof err), 0));
    cr_assert(eq(sz, qry_filter_ntests(f), 1));
    qry_ftest t;
    qry_filter_test(f, 0, &t);
    cr_assert(eq(int, t.kind, QRY_FT_NUM));
    cr_assert(strcmp(t.field, "dstport") == 0, "%s", t.field);
    cr_assert(eq(int, t.cmp, QRY_FC_GT));
    cr_assert(eq(u64, t.val, 1023));
    cr_assert(eq(u32, t.jt, 1));
    cr_assert(eq(u32, t.jf, 2));
    qry_filter_free(f);
}
