/* Tests of the filter language (engine/filter.c): every primitive matching and not matching
 * hand-made rows, precedence (not > and > or) and parentheses, IPv6 nets, k/M/G/T suffixes,
 * every error path with its exact message and column, the length and nesting caps, the
 * columns mask, the derived address set, and a randomized comparison of the compiled program
 * against a small reference interpreter written here from docs/FILTERS.md. */
#include "engine/query.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* Criterion's eq(str, ...) trips -Wwrite-strings / -Wcast-qual; compare with strcmp and print
 * both sides ourselves (as test_base.c does). */
#define EXPECT_STR(got, want)                                                                      \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        cr_expect(eq(int, strcmp(got_, want_), 0), "got \"%s\", expected \"%s\"", got_, want_);    \
    } while (0)
#define ASSERT_STR(got, want)                                                                      \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        cr_assert(eq(int, strcmp(got_, want_), 0), "got \"%s\", expected \"%s\"", got_, want_);    \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * Rows */

static ns_addr addr(const char *text)
{
    ns_addr a;
    cr_assert(eq(int, ns_addr_parse(text, &a), 0), "bad address in test: %s", text);
    return a;
}

/* A: IPv4 TCP, 2 s, 10 packets, 15000 bytes (bps 60000, pps 5, bpp 1500), flags SA */
static eng_flow row_a(void)
{
    eng_flow r = {0};
    r.first_ms = 1700000000000LL;
    r.last_ms = r.first_ms + 2000;
    r.packets = 10;
    r.bytes = 15000;
    r.exporter = addr("192.0.2.1");
    r.src = addr("10.1.2.3");
    r.dst = addr("172.16.5.4");
    r.nexthop = addr("10.1.2.254");
    r.src_as = 64500;
    r.dst_as = 15169;
    r.in_if = 3;
    r.out_if = 7;
    r.sampling = 1;
    r.src_port = 51000;
    r.dst_port = 443;
    r.proto = 6;
    r.tcp_flags = 0x12;
    r.tos = 0;
    r.src_mask = 24;
    r.dst_mask = 16;
    r.vlan = 100;
    r.direction = ENG_DIR_INGRESS;
    r.flow_type = ENG_FT_NETFLOW9;
    return r;
}

/* B: IPv6 UDP DNS answer, no duration, 1 packet of 80 bytes (bps 640 as if 1 s, pps 1) */
static eng_flow row_b(void)
{
    eng_flow r = {0};
    r.first_ms = r.last_ms = 1700000001000LL;
    r.packets = 1;
    r.bytes = 80;
    r.exporter = addr("2001:db8:ffff::1");
    r.src = addr("2001:db8::1");
    r.dst = addr("2001:db8:1::53");
    r.dst_as = 64500;
    r.in_if = 7;
    r.out_if = 3;
    r.sampling = 1;
    r.src_port = 53;
    r.dst_port = 33000;
    r.proto = 17;
    r.tos = 184;
    r.src_mask = 48;
    r.dst_mask = 64;
    r.direction = ENG_DIR_EGRESS;
    r.flow_type = ENG_FT_IPFIX;
    return r;
}

/* C: IPv4 ICMP echo request (type 8 code 0 in dst_port), 2 s, 3 packets, 252 bytes */
static eng_flow row_c(void)
{
    eng_flow r = {0};
    r.first_ms = 1700000002000LL;
    r.last_ms = r.first_ms + 2000;
    r.packets = 3;
    r.bytes = 252;
    r.exporter = addr("192.0.2.2");
    r.src = addr("10.1.2.99");
    r.dst = addr("8.8.8.8");
    r.in_if = 3;
    r.out_if = 9;
    r.sampling = 1;
    r.dst_port = 8 << 8;
    r.proto = 1;
    r.vlan = 100;
    r.flow_type = ENG_FT_NETFLOW5;
    return r;
}

static qry_filter *compile_ok(const char *text)
{
    qry_filter *f = NULL;
    char err[256] = "";
    int rc = qry_filter_compile(text, &f, err, sizeof err);
    cr_assert(eq(int, rc, 0), "filter \"%s\" did not compile: %s", text, err);
    cr_assert(f != NULL);
    cr_assert(eq(int, err[0], 0), "filter \"%s\": err not cleared", text);
    return f;
}

static bool matches(const char *text, const eng_flow *r)
{
    qry_filter *f = compile_ok(text);
    bool m = qry_filter_match(f, r);
    qry_filter_free(f);
    return m;
}

/* ---------------------------------------------------------------------------------------------
 * Every primitive against rows A, B, C */

typedef struct prim_case {
    const char *filter;
    bool a, b, c;
} prim_case;

static const prim_case prim_cases[] = {
    {"any", 1, 1, 1},
    {"", 1, 1, 1},
    {"   \t\n", 1, 1, 1},
    {"# just a comment", 1, 1, 1},
    /* host / ip */
    {"host 10.1.2.3", 1, 0, 0},
    {"ip 172.16.5.4", 1, 0, 0},
    {"src host 10.1.2.3", 1, 0, 0},
    {"dst host 10.1.2.3", 0, 0, 0},
    {"dst host 172.16.5.4", 1, 0, 0},
    {"src ip 8.8.8.8", 0, 0, 0},
    {"dst ip 8.8.8.8", 0, 0, 1},
    {"host 2001:db8::1", 0, 1, 0},
    {"host 2001:DB8:0:0::1", 0, 1, 0},
    {"host ::ffff:8.8.8.8", 0, 0, 1},
    {"host 10.1.2.4", 0, 0, 0},
    {"src or dst host 8.8.8.8", 0, 0, 1},
    {"src and dst host 10.1.2.3", 0, 0, 0},
    {"host in [10.1.2.3 8.8.8.8]", 1, 0, 1},
    {"host in [10.1.2.0/24, 2001:db8::/32]", 1, 1, 1},
    {"src ip in [2001:db8::1]", 0, 1, 0},
    {"dst ip in [2001:db8::1]", 0, 0, 0},
    /* net */
    {"net 10.1.2.0/24", 1, 0, 1},
    {"net 10.1.2.0 mask 255.255.255.0", 1, 0, 1},
    {"net 10.1.2.0 255.255.255.128", 1, 0, 1},
    {"net 10.1.2.128/25", 0, 0, 0},
    {"net 10.1.2.77/24", 1, 0, 1}, /* host bits are ignored */
    {"src net 10/8", 1, 0, 1},
    {"dst net 10/8", 0, 0, 0},
    {"net 172.16/12", 1, 0, 0},
    {"dst net 8.0.0.0 mask 255.0.0.0", 0, 0, 1},
    {"net 2001:db8::/32", 0, 1, 0},
    {"src net 2001:db8::/48", 0, 1, 0},
    {"dst net 2001:db8::/48", 0, 0, 0},
    {"dst net 2001:db8:1::/48", 0, 1, 0},
    {"net ::/0", 1, 1, 1},
    {"net 0.0.0.0/0", 1, 0, 1},
    {"net 10.1.2.3/32", 1, 0, 0},
    {"net in [8.8.8.0/24 2001:db8:1::/64]", 0, 1, 1},
    /* ports */
    {"port 443", 1, 0, 0},
    {"port 53", 0, 1, 0},
    {"src port 53", 0, 1, 0},
    {"dst port 53", 0, 0, 0},
    {"dst port > 1023", 0, 1, 1},
    {"dst port < 1024", 1, 0, 0},
    {"src port >= 51000", 1, 0, 0},
    {"src port <= 53", 0, 1, 1},
    {"src port != 0", 1, 1, 0},
    {"port == 443", 1, 0, 0},
    {"port = 443", 1, 0, 0},
    {"port eq 443", 1, 0, 0},
    {"dst port gt 442", 1, 1, 1},
    {"dst port lt 443", 0, 0, 0},
    {"dst port ge 443", 1, 1, 1},
    {"dst port le 443", 1, 0, 0},
    {"src port ne 0", 1, 1, 0},
    {"port>1023", 1, 1, 1},
    {"port 0x1bb", 1, 0, 0},
    {"port in [80 443 8080]", 1, 0, 0},
    {"dst port in [53, 2048]", 0, 0, 1},
    {"src or dst port 53", 0, 1, 0},
    {"src and dst port 53", 0, 0, 0},
    /* protocols */
    {"proto tcp", 1, 0, 0},
    {"proto udp", 0, 1, 0},
    {"proto icmp", 0, 0, 1},
    {"proto 17", 0, 1, 0},
    {"proto icmp6", 0, 0, 0},
    {"proto in [tcp 17]", 1, 1, 0},
    {"tcp", 1, 0, 0},
    {"udp", 0, 1, 0},
    {"icmp", 0, 0, 1},
    {"icmp6", 0, 0, 0},
    /* AS numbers */
    {"as 64500", 1, 1, 0},
    {"src as 64500", 1, 0, 0},
    {"dst as 64500", 0, 1, 0},
    {"as in [15169]", 1, 0, 0},
    {"dst as > 20000", 0, 1, 0},
    {"as 0", 0, 1, 1},
    /* interfaces */
    {"if 3", 1, 1, 1},
    {"in if 3", 1, 0, 1},
    {"out if 3", 0, 1, 0},
    {"if 9", 0, 0, 1},
    {"out if > 7", 0, 0, 1},
    /* exporter, next hop */
    {"exporter 192.0.2.1", 1, 0, 0},
    {"exporter 192.0.2.0/24", 1, 0, 1},
    {"exporter ip 192.0.2.2", 0, 0, 1},
    {"router ip 192.0.2.2", 0, 0, 1},
    {"router net 192.0.2.0/31", 1, 0, 0},
    {"router net 192.0.2.0/30", 1, 0, 1},
    {"exporter ip 2001:db8:ffff::1", 0, 1, 0},
    {"exporter net 2001:db8::/32", 0, 1, 0},
    {"exporter in [192.0.2.2 2001:db8:ffff::1]", 0, 1, 1},
    {"next ip 10.1.2.254", 1, 0, 0},
    /* TCP flags (A has S and A set) */
    {"flags S", 1, 0, 0},
    {"flags SA", 1, 0, 0},
    {"flags AS", 1, 0, 0},
    {"flags sa", 1, 0, 0},
    {"flags A and not flags R", 1, 0, 0},
    {"flags S and not flags A", 0, 0, 0},
    {"flags = SA", 1, 0, 0},
    {"flags =S", 0, 0, 0},
    {"flags R", 0, 0, 0},
    {"flags X", 0, 0, 0},
    {"flags 18", 1, 0, 0},
    {"flags 2", 0, 0, 0},
    {"flags > 16", 1, 0, 0},
    {"not flags S", 0, 1, 1},
    /* tos, vlan, masks, direction, family */
    {"tos 184", 0, 1, 0},
    {"tos > 0", 0, 1, 0},
    {"src tos 0", 1, 0, 1},
    {"vlan 100", 1, 0, 1},
    {"src vlan 100", 1, 0, 1},
    {"vlan 0", 0, 1, 0},
    {"mask 24", 1, 0, 0},
    {"src mask 48", 0, 1, 0},
    {"dst mask 16", 1, 0, 0},
    {"src and dst mask 0", 0, 0, 1},
    {"flowdir ingress", 1, 0, 0},
    {"flowdir egress", 0, 1, 0},
    {"flowdir 1", 0, 1, 0},
    {"ipv4", 1, 0, 1},
    {"inet", 1, 0, 1},
    {"ipv6", 0, 1, 0},
    {"inet6", 0, 1, 0},
    /* ICMP type/code, as nfdump: implies proto icmp or icmp6 */
    {"icmp-type 8", 0, 0, 1},
    {"icmp type 8", 0, 0, 1},
    {"icmp-code 0", 0, 0, 1},
    {"icmp code 0", 0, 0, 1},
    {"icmp-type 0", 0, 0, 0},
    {"icmp-type 1", 0, 0, 0},
    /* counters and rates */
    {"bytes > 10k", 1, 0, 0},
    {"bytes < 100", 0, 1, 0},
    {"bytes = 252", 0, 0, 1},
    {"bytes >= 15k", 1, 0, 0},
    {"bytes > 15k", 0, 0, 0},
    {"in bytes > 15K", 0, 0, 0},
    {"packets > 2", 1, 0, 1},
    {"packets == 1", 0, 1, 0},
    {"in packets 1", 0, 1, 0},
    {"duration > 1999", 1, 0, 1},
    {"duration = 0", 0, 1, 0},
    {"duration 2000", 1, 0, 1},
    {"bps > 50k", 1, 0, 0},
    {"bps = 60000", 1, 0, 0},
    {"bps = 640", 0, 1, 0},
    {"bps = 1008", 0, 0, 1},
    {"pps = 5", 1, 0, 0},
    {"pps = 1", 0, 1, 1},
    {"bpp = 1500", 1, 0, 0},
    {"bpp = 80", 0, 1, 0},
    {"bpp = 84", 0, 0, 1},
    /* spellings of the operators, case */
    {"HOST 10.1.2.3 AND Port 443", 1, 0, 0},
    {"PROTO TCP", 1, 0, 0},
    {"tcp && port 443", 1, 0, 0},
    {"tcp||udp", 1, 1, 0},
    {"!tcp", 0, 1, 1},
    {"! tcp", 0, 1, 1},
    {"not not tcp", 1, 0, 0},
    {"!!!tcp", 0, 1, 1},
    {"tcp and port 443 # HTTPS", 1, 0, 0},
    {"tcp\n and\tport 443", 1, 0, 0},
};

Test(filter_prims, every_primitive_on_three_rows)
{
    eng_flow a = row_a(), b = row_b(), c = row_c();
    for (size_t i = 0; i < sizeof prim_cases / sizeof prim_cases[0]; i++) {
        const prim_case *pc = &prim_cases[i];
        qry_filter *f = compile_ok(pc->filter);
        cr_expect(eq(int, qry_filter_match(f, &a), pc->a), "\"%s\" on row A", pc->filter);
        cr_expect(eq(int, qry_filter_match(f, &b), pc->b), "\"%s\" on row B", pc->filter);
        cr_expect(eq(int, qry_filter_match(f, &c), pc->c), "\"%s\" on row C", pc->filter);
        qry_filter_free(f);
    }
}

Test(filter_prims, protocol_names)
{
    static const struct {
        const char *name;
        uint8_t num;
        bool bare;
    } names[] = {
        {"icmp", 1, true},     {"igmp", 2, false},       {"ipip", 4, false},
        {"tcp", 6, true},      {"egp", 8, false},        {"udp", 17, true},
        {"ipv6", 41, false},   {"rsvp", 46, false},      {"gre", 47, true},
        {"esp", 50, true},     {"ah", 51, true},         {"icmp6", 58, true},
        {"icmpv6", 58, false}, {"ipv6-icmp", 58, false}, {"eigrp", 88, false},
        {"ospf", 89, false},   {"pim", 103, false},      {"vrrp", 112, false},
        {"l2tp", 115, false},  {"sctp", 132, true},      {"udplite", 136, false},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        eng_flow r = row_a(), other = row_a();
        char text[64];
        r.proto = names[i].num;
        other.proto = (uint8_t)(names[i].num + 1);
        snprintf(text, sizeof text, "proto %s", names[i].name);
        cr_expect(matches(text, &r), "%s", text);
        cr_expect(not(matches(text, &other)), "%s", text);
        snprintf(text, sizeof text, "proto %u", names[i].num);
        cr_expect(matches(text, &r), "%s", text);
        if (names[i].bare || names[i].num == 41 /* bare "ipv6" is the family */) {
            if (names[i].bare) {
                cr_expect(matches(names[i].name, &r), "%s", names[i].name);
                cr_expect(not(matches(names[i].name, &other)), "%s", names[i].name);
            }
        } else {
            qry_filter *f = NULL;
            char err[256];
            cr_expect(eq(int, qry_filter_compile(names[i].name, &f, err, sizeof err), NS_E_PARSE),
                      "bare '%s' should not be a primitive", names[i].name);
            qry_filter_free(f);
        }
    }
}

Test(filter_prims, syn_without_ack)
{
    eng_flow syn = row_a(), synack = row_a(), udp = row_b();
    syn.tcp_flags = 0x02;
    udp.tcp_flags = 0x02; /* flags imply TCP, as in nfdump */
    cr_assert(matches("flags S and not flags A", &syn));
    cr_assert(not(matches("flags S and not flags A", &synack)));
    cr_assert(not(matches("flags S", &udp)));
    cr_assert(matches("flags = S", &syn));
    syn.tcp_flags = 0x3f;
    cr_assert(matches("flags X", &syn));
    cr_assert(matches("flags UAPRSF", &syn));
    cr_assert(not(matches("flags E", &syn)));
    syn.tcp_flags = 0xc0;
    cr_assert(matches("flags EC", &syn));
    cr_assert(matches("flags = 192", &syn));
    cr_assert(matches("flags 0xc0", &syn));
}

Test(filter_prims, src_and_dst_both)
{
    eng_flow r = row_a();
    r.dst_port = r.src_port = 8080;
    r.dst = r.src;
    r.dst_as = r.src_as;
    cr_assert(matches("src and dst port 8080", &r));
    cr_assert(matches("dst and src port 8080", &r));
    cr_assert(matches("src and dst host 10.1.2.3", &r));
    cr_assert(matches("src and dst net 10.1.2.0/24", &r));
    cr_assert(matches("src and dst as 64500", &r));
    r.dst_port = 80;
    cr_assert(not(matches("src and dst port 8080", &r)));
    cr_assert(matches("src or dst port 80", &r));
}

Test(filter_prims, suffixes_are_powers_of_1000)
{
    eng_flow r = row_a();
    r.bytes = 1000000;
    cr_assert(matches("bytes = 1M", &r));
    cr_assert(matches("bytes = 1m", &r));
    cr_assert(matches("bytes = 1000k", &r));
    cr_assert(matches("bytes = 1000K", &r));
    cr_assert(matches("bytes = 0xf4240", &r));
    cr_assert(not(matches("bytes = 1G", &r)));
    r.bytes = 2000000000ULL;
    cr_assert(matches("bytes = 2G", &r));
    cr_assert(matches("bytes = 2g", &r));
    r.bytes = 3000000000000ULL;
    cr_assert(matches("bytes = 3T", &r));
    r.bytes = 18000000000000000000ULL;
    cr_assert(matches("bytes = 18000000T", &r));
    r.packets = 1500;
    cr_assert(matches("packets > 1k and packets < 2k", &r));
    cr_assert(matches("packets 1500", &r));
}

Test(filter_prims, rates_without_overflow)
{
    eng_flow r = row_a();
    r.bytes = UINT64_MAX / 2; /* bytes * 8000 does not fit in 64 bits */
    r.last_ms = r.first_ms + 8000;
    cr_assert(matches("bps = 9223372036854775807", &r)); /* (2^63 - 1) * 8000 / 8000 */
    r.last_ms = r.first_ms;                              /* zero duration: * 8 saturates */
    cr_assert(matches("bps = 18446744073709551615", &r));
    r.last_ms = r.first_ms - 5000; /* last before first: duration 0 */
    cr_assert(matches("duration = 0", &r));
    r.first_ms = INT64_MIN;
    r.last_ms = INT64_MAX;
    cr_assert(matches("duration = 18446744073709551615", &r));
    r.packets = 0;
    cr_assert(matches("bpp = 0", &r));
}

/* ---------------------------------------------------------------------------------------------
 * Precedence and parentheses */

Test(filter_grammar, precedence_not_and_or)
{
    eng_flow a = row_a(), b = row_b(), c = row_c();
    static const prim_case cases[] = {
        {"not tcp and udp", 0, 1, 0},       /* (not tcp) and udp */
        {"not icmp or tcp", 1, 1, 0},       /* (not icmp) or tcp */
        {"icmp or tcp and udp", 0, 0, 1},   /* icmp or (tcp and udp) */
        {"tcp and udp or icmp", 0, 0, 1},   /* (tcp and udp) or icmp */
        {"(icmp or tcp) and udp", 0, 0, 0}, /* parentheses override */
        {"not (tcp or udp)", 0, 0, 1},      /* ... including under not */
        {"not (tcp and port 443)", 0, 1, 1},
        {"((((tcp))))", 1, 0, 0},
        {"!(!(tcp))", 1, 0, 0},
        {"udp or tcp and not port 443", 0, 1, 0},
        {"(udp or tcp) and not port 443", 0, 1, 0},
        {"tcp or udp or icmp", 1, 1, 1},
        {"tcp and ipv4 and port 443 and if 3", 1, 0, 0},
        {"not not not tcp", 0, 1, 1},
        {"not tcp or not udp", 1, 1, 1},
        {"not (tcp or udp) and ipv4", 0, 0, 1},
        {"(tcp) or (udp) and (ipv4)", 1, 0, 0}, /* tcp or (udp and ipv4) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qry_filter *f = compile_ok(cases[i].filter);
        cr_expect(eq(int, qry_filter_match(f, &a), cases[i].a), "\"%s\" on A", cases[i].filter);
        cr_expect(eq(int, qry_filter_match(f, &b), cases[i].b), "\"%s\" on B", cases[i].filter);
        cr_expect(eq(int, qry_filter_match(f, &c), cases[i].c), "\"%s\" on C", cases[i].filter);
        qry_filter_free(f);
    }
}

Test(filter_grammar, empty_is_any_and_null_filter_matches)
{
    eng_flow a = row_a();
    qry_filter *f = NULL;
    cr_assert(eq(int, qry_filter_compile(NULL, &f, NULL, 0), 0));
    cr_assert(qry_filter_match(f, &a));
    cr_assert(eq(u32, qry_filter_columns(f), 0));
    qry_filter_free(f);
    cr_assert(qry_filter_match(NULL, &a));
    cr_assert(eq(u32, qry_filter_columns(NULL), 0));
    cr_assert(eq(sz, qry_filter_addrs(NULL, NULL, 0), 0));
    qry_filter_free(NULL);
}

Test(filter_grammar, long_chains_and_many_nots_compile)
{
    /* length is capped, not the number of terms; not chains do not nest */
    char *text = malloc(QRY_FILTER_MAX_LEN + 1);
    size_t n = 0;
    cr_assert(text != NULL);
    unsigned terms = 0;
    while (n + 16 <= QRY_FILTER_MAX_LEN) {
        n += (size_t)sprintf(text + n, "%sport %u", n ? " || " : "", 1000 + terms);
        terms++;
    }
    cr_assert(terms > 250);
    eng_flow r = row_a();
    qry_filter *f = compile_ok(text);
    cr_assert(not(qry_filter_match(f, &r)));
    r.dst_port = (uint16_t)(1000 + terms - 1); /* the last term */
    cr_assert(qry_filter_match(f, &r));
    qry_filter_free(f);

    /* 4093 nots (odd) and "tcp": exactly at the length cap */
    memset(text, '!', QRY_FILTER_MAX_LEN - 3);
    memcpy(text + QRY_FILTER_MAX_LEN - 3, "tcp", 4);
    f = compile_ok(text);
    cr_assert(not(qry_filter_match(f, &r)));
    qry_filter_free(f);
    text[0] = ' '; /* 4092: even */
    f = compile_ok(text);
    cr_assert(qry_filter_match(f, &r));
    qry_filter_free(f);
    free(text);
}

/* ---------------------------------------------------------------------------------------------
 * Errors: the code, and the message with its column */

typedef struct err_case {
    const char *filter;
    int rc;
    const char *msg;
} err_case;

static const err_case err_cases[] = {
    {"host", NS_E_PARSE, "col 5: expected an address after 'host'"},
    {"host  ", NS_E_PARSE, "col 7: expected an address after 'host'"},
    {"src host", NS_E_PARSE, "col 9: expected an address after 'host'"},
    {"host foo.example.com", NS_E_PARSE,
     "col 6: expected an address after 'host', got 'foo.example.com'"},
    {"host 10.0.0.0/8", NS_E_PARSE,
     "col 6: expected an address after 'host', got the prefix '10.0.0.0/8' (use 'net')"},
    {"host 10.0.0.256", NS_E_PARSE, "col 6: expected an address after 'host', got '10.0.0.256'"},
    {"port", NS_E_PARSE, "col 5: expected a port number after 'port'"},
    {"port 70000", NS_E_PARSE, "col 6: port 70000 out of range (0..65535)"},
    {"tcp and dst port 65536", NS_E_PARSE, "col 18: port 65536 out of range (0..65535)"},
    {"port abc", NS_E_PARSE, "col 6: expected a port number after 'port', got 'abc'"},
    {"port -1", NS_E_PARSE, "col 6: expected a port number after 'port', got '-1'"},
    {"port >", NS_E_PARSE, "col 7: expected a port number after '>'"},
    {"port > > 1", NS_E_PARSE, "col 8: expected a port number after '>', got '>'"},
    {"port 0x", NS_E_PARSE, "col 6: expected a port number after 'port', got '0x'"},
    {"port 80 443", NS_E_PARSE,
     "col 9: expected 'and', 'or' or end of input after '80', got '443'"},
    {"port in [80", NS_E_PARSE, "col 12: expected ']' to close '[' at col 9"},
    {"port in [80,", NS_E_PARSE, "col 13: expected ']' to close '[' at col 9"},
    {"port in [80,]", NS_E_PARSE, "col 13: expected a port number after ',', got ']'"},
    {"port in [80,,443]", NS_E_PARSE, "col 13: expected a port number after ',', got ','"},
    {"port in []", NS_E_PARSE, "col 10: expected a port number in the list, got an empty list"},
    {"port in 80", NS_E_PARSE, "col 9: expected '[' to start a list after 'in', got '80'"},
    {"port in [80 70000]", NS_E_PARSE, "col 13: port 70000 out of range (0..65535)"},
    {"net 10.0.0.0/33", NS_E_PARSE, "col 14: prefix length 33 out of range (IPv4: 0..32)"},
    {"net 2001:db8::/129", NS_E_PARSE, "col 16: prefix length 129 out of range (IPv6: 0..128)"},
    {"net 10.0.0.0/", NS_E_PARSE, "col 14: expected a prefix length after '/'"},
    {"net 10.0.0.0/8x", NS_E_PARSE, "col 14: expected a prefix length after '/', got '8x'"},
    {"net 10.0.0.0/0008", NS_E_PARSE, "col 14: expected a prefix length after '/', got '0008'"},
    {"net 10.0.0.1", NS_E_PARSE,
     "col 5: '10.0.0.1' needs a prefix length (A/len) or a netmask (A mask M)"},
    {"net 10.0.0.0 mask", NS_E_PARSE, "col 18: expected an IPv4 netmask after 'mask'"},
    {"net 10.0.0.0 mask 255.0.255.0", NS_E_PARSE,
     "col 19: netmask '255.0.255.0' is not a contiguous IPv4 mask"},
    {"net 2001:db8:: mask 255.255.0.0", NS_E_PARSE,
     "col 5: a netmask needs an IPv4 address; use '2001:db8::/len'"},
    {"net 256/8", NS_E_PARSE,
     "col 5: expected a prefix (A/len or A mask M) after 'net', got "
     "'256/8'"},
    {"net", NS_E_PARSE, "col 4: expected a prefix (A/len or A mask M) after 'net'"},
    {"(tcp", NS_E_PARSE, "col 5: expected ')' to close '(' at col 1"},
    {"((tcp)", NS_E_PARSE, "col 7: expected ')' to close '(' at col 1"},
    {"(tcp udp)", NS_E_PARSE, "col 6: expected 'and', 'or' or ')' after 'tcp', got 'udp'"},
    {"tcp)", NS_E_PARSE, "col 4: unexpected ')' without a matching '('"},
    {"(tcp))", NS_E_PARSE, "col 6: unexpected ')' without a matching '('"},
    {"()", NS_E_PARSE, "col 2: expected a filter primitive after '(', got ')'"},
    {"tcp foo", NS_E_PARSE, "col 5: expected 'and', 'or' or end of input after 'tcp', got 'foo'"},
    {"tcp and", NS_E_PARSE, "col 8: expected a filter primitive after 'and'"},
    {"tcp or or udp", NS_E_PARSE, "col 8: expected a filter primitive after 'or', got 'or'"},
    {"and tcp", NS_E_PARSE, "col 1: expected a filter primitive, got 'and'"},
    {"not", NS_E_PARSE, "col 4: expected a filter primitive after 'not'"},
    {"!", NS_E_PARSE, "col 2: expected a filter primitive after '!'"},
    {"foo", NS_E_PARSE,
     "col 1: expected a filter primitive (host, net, port, proto, any, ...), got 'foo'"},
    {"tcp and 10.0.0.1", NS_E_PARSE,
     "col 9: expected a filter primitive (host, net, port, "
     "proto, any, ...) after 'and', got '10.0.0.1'"},
    {"proto", NS_E_PARSE, "col 6: expected a protocol name or number after 'proto'"},
    {"proto foo", NS_E_PARSE, "col 7: unknown protocol 'foo' (use a number 0..255)"},
    {"proto 256", NS_E_PARSE, "col 7: protocol 256 out of range (0..255)"},
    {"as 4294967296", NS_E_PARSE, "col 4: AS number 4294967296 out of range (0..4294967295)"},
    {"if 4294967296", NS_E_PARSE, "col 4: interface 4294967296 out of range (0..4294967295)"},
    {"tos 256", NS_E_PARSE, "col 5: ToS 256 out of range (0..255)"},
    {"vlan 65536", NS_E_PARSE, "col 6: VLAN id 65536 out of range (0..65535)"},
    {"icmp-type 256", NS_E_PARSE, "col 11: ICMP type 256 out of range (0..255)"},
    {"icmp code", NS_E_PARSE, "col 10: expected an ICMP code after 'code'"},
    {"bytes > 18446744073709551616", NS_E_PARSE,
     "col 9: number '18446744073709551616' is too large"},
    {"bytes > 18446744073709552k", NS_E_PARSE, "col 9: number '18446744073709552k' is too large"},
    {"bytes > 20000000T", NS_E_PARSE, "col 9: number '20000000T' is too large"},
    {"bytes > 0x10000000000000000", NS_E_PARSE, "col 9: number '0x10000000000000000' is too large"},
    {"bytes > 1.5k", NS_E_PARSE, "col 9: expected a byte count after '>', got '1.5k'"},
    {"bytes > 10kb", NS_E_PARSE, "col 9: expected a byte count after '>', got '10kb'"},
    {"duration >", NS_E_PARSE, "col 11: expected a duration in milliseconds after '>'"},
    {"flags", NS_E_PARSE,
     "col 6: expected TCP flags (letters of UAPRSFEC, X for all six, or a "
     "number) after 'flags'"},
    {"flags SQ", NS_E_PARSE,
     "col 8: unknown or repeated TCP flag 'Q' in 'SQ' (use U A P R S F "
     "E C, or X for all six)"},
    {"flags SAS", NS_E_PARSE,
     "col 9: unknown or repeated TCP flag 'S' in 'SAS' (use U A P R S "
     "F E C, or X for all six)"},
    {"flags > SA", NS_E_PARSE,
     "col 9: flag letters compare with '=' only; use a number for '<, >, <=, >='"},
    {"flags 256", NS_E_PARSE, "col 7: flags 256 out of range (0..255)"},
    {"dst vlan 3", NS_E_PARSE, "col 5: 'dst' cannot be used with 'vlan'"},
    {"dst tos 3", NS_E_PARSE, "col 5: 'dst' cannot be used with 'tos'"},
    {"src proto tcp", NS_E_PARSE, "col 5: 'src' cannot be used with 'proto'"},
    {"src if 3", NS_E_PARSE, "col 5: 'src' cannot be used with 'if'"},
    {"in port 3", NS_E_PARSE, "col 4: 'in' cannot be used with 'port'"},
    {"out bytes 3", NS_E_PARSE, "col 5: 'out' cannot be used with 'bytes'"},
    {"in host 10.0.0.1", NS_E_PARSE, "col 4: 'in' cannot be used with 'host'"},
    {"src", NS_E_PARSE,
     "col 4: expected host, ip, net, port, as, if, mask, vlan, tos, bytes or "
     "packets after 'src'"},
    {"src tcp", NS_E_PARSE,
     "col 5: expected host, ip, net, port, as, if, mask, vlan, tos, bytes "
     "or packets after 'src', got 'tcp'"},
    {"router 10.0.0.1", NS_E_PARSE,
     "col 8: expected 'ip' or 'net' after 'router', got "
     "'10.0.0.1'"},
    {"next 10.0.0.1", NS_E_PARSE, "col 6: expected 'ip' or 'net' after 'next', got '10.0.0.1'"},
    {"exporter", NS_E_PARSE, "col 9: expected an address or prefix after 'exporter'"},
    {"flowdir sideways", NS_E_PARSE,
     "col 9: expected 'ingress' or 'egress' after 'flowdir', got 'sideways'"},
    {"tcp & udp", NS_E_PARSE, "col 5: expected '&&' (or 'and'), got a single '&'"},
    {"tcp | udp", NS_E_PARSE, "col 5: expected '||' (or 'or'), got a single '|'"},
    {"tcp %", NS_E_PARSE, "col 5: unexpected character '%'"},
    {"tcp and \"udp\"", NS_E_PARSE, "col 9: unexpected character '\"'"},
    {"tcp \x01", NS_E_PARSE, "col 5: unexpected byte 0x01"},
    {"tcp \xc3\xa9", NS_E_PARSE, "col 5: unexpected byte 0xc3"},
    {"port 70000 %", NS_E_PARSE, "col 6: port 70000 out of range (0..65535)"}, /* in order */
    {"port 0xZZ", NS_E_PARSE, "col 6: expected a port number after 'port', got '0xZZ'"},
    {"host in [10.0.0.0/33]", NS_E_PARSE, "col 19: prefix length 33 out of range (IPv4: 0..32)"},
    {"host in [foo]", NS_E_PARSE, "col 10: expected an address or prefix after '[', got 'foo'"},
    {"host in [10.0.0.1", NS_E_PARSE, "col 18: expected ']' to close '[' at col 9"},
    {"net 10.0.0.0 mask ::1", NS_E_PARSE, "col 19: netmask '::1' is not a contiguous IPv4 mask"},
    {"net 10./8", NS_E_PARSE,
     "col 5: expected a prefix (A/len or A mask M) after 'net', got "
     "'10./8'"},
    {"net 1.2.3.4.5/8", NS_E_PARSE,
     "col 5: expected a prefix (A/len or A mask M) after 'net', "
     "got '1.2.3.4.5/8'"},
    {"net 1..2/8", NS_E_PARSE,
     "col 5: expected a prefix (A/len or A mask M) after 'net', got "
     "'1..2/8'"},
    {"net 1000/8", NS_E_PARSE,
     "col 5: expected a prefix (A/len or A mask M) after 'net', got "
     "'1000/8'"},
};

Test(filter_errors, every_error_names_its_column)
{
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        const err_case *ec = &err_cases[i];
        qry_filter *f = (qry_filter *)&f; /* must be reset to NULL */
        char err[512];
        memset(err, 'x', sizeof err);
        int rc = qry_filter_compile(ec->filter, &f, err, sizeof err);
        cr_expect(eq(int, rc, ec->rc), "\"%s\": rc", ec->filter);
        cr_expect(f == NULL, "\"%s\": *out must be NULL on error", ec->filter);
        EXPECT_STR(err, ec->msg);
    }
}

Test(filter_errors, message_fits_any_buffer)
{
    char err[8];
    qry_filter *f;
    memset(err, 'x', sizeof err);
    cr_assert(eq(int, qry_filter_compile("port 70000", &f, err, sizeof err), NS_E_PARSE));
    ASSERT_STR(err, "col 6: ");
    cr_assert(eq(int, qry_filter_compile("port 70000", &f, err, 1), NS_E_PARSE));
    ASSERT_STR(err, "");
    cr_assert(eq(int, qry_filter_compile("port 70000", &f, NULL, 0), NS_E_PARSE));
    cr_assert(f == NULL);
}

Test(filter_errors, length_cap)
{
    char *text = malloc(QRY_FILTER_MAX_LEN + 2);
    char err[256];
    qry_filter *f;
    cr_assert(text != NULL);
    memset(text, ' ', QRY_FILTER_MAX_LEN + 1);
    memcpy(text, "tcp", 3);
    text[QRY_FILTER_MAX_LEN] = 0; /* exactly the cap: fine */
    cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0), "%s", err);
    qry_filter_free(f);
    text[QRY_FILTER_MAX_LEN] = ' ';
    text[QRY_FILTER_MAX_LEN + 1] = 0; /* one byte more */
    cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), NS_E_TOO_MANY));
    cr_assert(f == NULL);
    ASSERT_STR(err, "col 4097: filter longer than 4096 bytes");
    free(text);
}

Test(filter_errors, nesting_cap)
{
    char text[512];
    char err[256];
    qry_filter *f;
    size_t n = 0;
    for (int i = 0; i < QRY_FILTER_MAX_DEPTH; i++)
        text[n++] = '(';
    memcpy(text + n, "tcp", 3);
    n += 3;
    for (int i = 0; i < QRY_FILTER_MAX_DEPTH; i++)
        text[n++] = ')';
    text[n] = 0;
    cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), 0), "%s", err);
    eng_flow a = row_a();
    cr_assert(qry_filter_match(f, &a));
    qry_filter_free(f);

    n = 0;
    for (int i = 0; i <= QRY_FILTER_MAX_DEPTH; i++)
        n += (size_t)sprintf(text + n, "%s(", i % 2 ? "not " : "");
    text[n] = 0;
    cr_assert(eq(int, qry_filter_compile(text, &f, err, sizeof err), NS_E_TOO_MANY));
    cr_assert(f == NULL);
    /* the 65th '(' is at byte 64 + 32 * 4 = 192 (every odd level is "not (") */
    ASSERT_STR(err, "col 193: parentheses nested deeper than 64");

    /* siblings do not add up: 100 groups of depth 64 side by side are fine */
    char *wide = malloc(100 * 140 + 1);
    cr_assert(wide != NULL);
    n = 0;
    for (int g = 0; g < 30; g++) {
        if (g)
            n += (size_t)sprintf(wide + n, " or ");
        for (int i = 0; i < QRY_FILTER_MAX_DEPTH; i++)
            wide[n++] = '(';
        n += (size_t)sprintf(wide + n, "udp");
        for (int i = 0; i < QRY_FILTER_MAX_DEPTH; i++)
            wide[n++] = ')';
    }
    wide[n] = 0;
    cr_assert(eq(int, qry_filter_compile(wide, &f, err, sizeof err), 0), "%s", err);
    qry_filter_free(f);
    free(wide);
}

/* ---------------------------------------------------------------------------------------------
 * Columns and addresses */

#define C(x) ENG_COLMASK(ENG_COL_##x)

Test(filter_columns, mask_names_what_is_read)
{
    static const struct {
        const char *filter;
        uint32_t cols;
    } cases[] = {
        {"any", 0},
        {"", 0},
        {"host 10.0.0.1", C(SRC) | C(DST)},
        {"src host 10.0.0.1", C(SRC)},
        {"dst net 10/8", C(DST)},
        {"port 80", C(SRC_PORT) | C(DST_PORT)},
        {"dst port in [80 443]", C(DST_PORT)},
        {"tcp", C(PROTO)},
        {"flags S", C(PROTO) | C(TCP_FLAGS)},
        {"icmp-type 8", C(PROTO) | C(DST_PORT)},
        {"bytes > 1", C(BYTES)},
        {"packets > 1", C(PACKETS)},
        {"duration > 1", C(FIRST) | C(LAST)},
        {"bps > 1", C(FIRST) | C(LAST) | C(BYTES)},
        {"pps > 1", C(FIRST) | C(LAST) | C(PACKETS)},
        {"bpp > 1", C(BYTES) | C(PACKETS)},
        {"as 1", C(SRC_AS) | C(DST_AS)},
        {"in if 1", C(IN_IF)},
        {"if 1", C(IN_IF) | C(OUT_IF)},
        {"vlan 1", C(VLAN)},
        {"tos 1", C(TOS)},
        {"mask 24", C(SRC_MASK) | C(DST_MASK)},
        {"exporter 10.0.0.1", C(EXPORTER)},
        {"next ip 10.0.0.1", C(NEXTHOP)},
        {"ipv6", C(SRC)},
        {"flowdir ingress", C(DIRECTION)},
        {"tcp and not (in if 3 or vlan 5) and any", C(PROTO) | C(IN_IF) | C(VLAN)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qry_filter *f = compile_ok(cases[i].filter);
        cr_expect(eq(u32, qry_filter_columns(f), cases[i].cols), "\"%s\"", cases[i].filter);
        qry_filter_free(f);
    }
}

static size_t addrs_of(const char *text, ns_addr *out, size_t cap)
{
    qry_filter *f = compile_ok(text);
    size_t n = qry_filter_addrs(f, out, cap);
    qry_filter_free(f);
    return n;
}

static bool addr_eq(const ns_addr *a, const char *text)
{
    ns_addr b = addr(text);
    return memcmp(a, &b, sizeof b) == 0;
}

Test(filter_addrs, derived_sets)
{
    ns_addr a[8];
    cr_assert(eq(sz, addrs_of("host 10.0.0.1", a, 8), 1));
    cr_assert(addr_eq(&a[0], "10.0.0.1"));
    cr_assert(addr_eq(&a[0], "::ffff:10.0.0.1")); /* v4-mapped */
    cr_assert(eq(sz, addrs_of("host 10.0.0.2 or src host 10.0.0.1", a, 8), 2));
    cr_assert(addr_eq(&a[0], "10.0.0.1")); /* sorted */
    cr_assert(addr_eq(&a[1], "10.0.0.2"));
    cr_assert(eq(sz, addrs_of("dst host 2001:db8::1 and port 80", a, 8), 1));
    cr_assert(addr_eq(&a[0], "2001:db8::1"));
    cr_assert(eq(sz, addrs_of("host 10.0.0.1 or host 10.0.0.1", a, 8), 1));
    cr_assert(eq(sz, addrs_of("src and dst host 10.0.0.1", a, 8), 1));
    cr_assert(eq(sz, addrs_of("host in [10.0.0.3 10.0.0.1 10.0.0.2]", a, 8), 3));
    cr_assert(eq(sz, addrs_of("host 10.0.0.9 and (host 10.0.0.1 or host 10.0.0.2)", a, 8), 1));
    cr_assert(addr_eq(&a[0], "10.0.0.9")); /* the smaller of the two */
    cr_assert(eq(sz, addrs_of("(host 10.0.0.1 or host 10.0.0.2) and host 10.0.0.9", a, 8), 1));
    cr_assert(addr_eq(&a[0], "10.0.0.9"));
    cr_assert(eq(sz, addrs_of("tcp and host 10.0.0.1 and not port 22", a, 8), 1));
    cr_assert(eq(sz, addrs_of("(host 10.0.0.1 and tcp) or (host 10.0.0.2 and udp)", a, 8), 2));
    cr_assert(eq(sz, addrs_of("net 10.0.0.0/31 and host 10.0.0.1", a, 8), 1));
    /* nothing can be derived */
    cr_assert(eq(sz, addrs_of("any", a, 8), 0));
    cr_assert(eq(sz, addrs_of("host 10.0.0.1 or port 80", a, 8), 0));
    cr_assert(eq(sz, addrs_of("not host 10.0.0.1", a, 8), 0));
    cr_assert(eq(sz, addrs_of("net 10.0.0.0/8", a, 8), 0));
    cr_assert(eq(sz, addrs_of("net 10.0.0.1/32", a, 8), 1)); /* one address is a host */
    cr_assert(eq(sz, addrs_of("net 2001:db8::1/128", a, 8), 1));
    cr_assert(eq(sz, addrs_of("host in [10.0.0.1 10.0.0.0/8]", a, 8), 0));
    cr_assert(eq(sz, addrs_of("exporter 10.0.0.1", a, 8), 0));
    cr_assert(eq(sz, addrs_of("next ip 10.0.0.1", a, 8), 0));
    /* more than cap: 0, never a partial set */
    cr_assert(eq(sz, addrs_of("host in [10.0.0.3 10.0.0.1 10.0.0.2]", a, 2), 0));
}

/* ---------------------------------------------------------------------------------------------
 * Randomized: random expressions over random rows, the compiled filter against a reference
 * interpreter of the documented semantics (written independently of engine/filter.c). */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 2685821657736338717ULL;
}
static uint64_t pick(uint64_t n)
{
    return rnd() % n;
}
#define PICK(arr) ((arr)[pick(sizeof(arr) / sizeof((arr)[0]))])

static const char *const pool_addrs[] = {"10.0.0.1",    "10.0.0.2",    "10.0.1.1",
                                         "192.168.0.1", "2001:db8::1", "2001:db8:1::1"};
static const char *const pool_nets[] = {
    "10.0.0.0/8",    "10.0.0.0/24",   "10.0.0.2/31", "192.168.0.0/16", "0.0.0.0/0",
    "2001:db8::/32", "2001:db8::/48", "::/0",        "10/8",           "10.0/16"};
static const uint64_t pool_ports[] = {0, 22, 53, 80, 443, 1024, 2048, 65535};
static const uint64_t pool_protos[] = {1, 6, 17, 47, 58};
static const uint64_t pool_as[] = {0, 1, 64500, 4294967295u};
static const uint64_t pool_if[] = {0, 1, 2, 3};
static const uint64_t pool_small[] = {0, 1, 8, 24, 64, 100, 184, 255};
static const uint64_t pool_big[] = {0, 1, 2, 10, 999, 1000, 1500, 8000, 1000000, 2000000000};
static const int64_t pool_dur[] = {0, 1, 999, 1000, 2000, 60000};

static eng_flow random_row(void)
{
    eng_flow r = {0};
    r.first_ms = 1700000000000LL + (int64_t)pick(100000);
    r.last_ms = r.first_ms + PICK(pool_dur);
    r.packets = PICK(pool_big);
    r.bytes = PICK(pool_big);
    r.exporter = addr(PICK(pool_addrs));
    r.src = addr(PICK(pool_addrs));
    r.dst = addr(PICK(pool_addrs));
    r.nexthop = addr(PICK(pool_addrs));
    r.src_as = (uint32_t)PICK(pool_as);
    r.dst_as = (uint32_t)PICK(pool_as);
    r.in_if = (uint32_t)PICK(pool_if);
    r.out_if = (uint32_t)PICK(pool_if);
    r.src_port = (uint16_t)PICK(pool_ports);
    r.dst_port = (uint16_t)PICK(pool_ports);
    r.proto = (uint8_t)PICK(pool_protos);
    r.tcp_flags = (uint8_t)pick(256);
    r.tos = (uint8_t)PICK(pool_small);
    r.src_mask = (uint8_t)PICK(pool_small);
    r.dst_mask = (uint8_t)PICK(pool_small);
    r.vlan = (uint16_t)PICK(pool_small);
    r.direction = (uint8_t)pick(3);
    return r;
}

/* reference primitive kinds */
enum { R_ANY, R_HOST, R_NET, R_NUM, R_FLAGS, R_EXPORTER, R_V4, R_V6, R_ICMP };
/* numeric fields of the reference */
enum {
    V_PORT,
    V_AS,
    V_IF,
    V_MASK,
    V_PROTO,
    V_TOS,
    V_VLAN,
    V_BYTES,
    V_PACKETS,
    V_DURATION,
    V_BPS,
    V_PPS,
    V_BPP,
    V_COUNT
};
enum { Q_NONE, Q_SRC, Q_DST, Q_EITHER, Q_BOTH };
enum { K_EQ, K_NE, K_LT, K_LE, K_GT, K_GE };

typedef struct rprim {
    int kind, q, field, cmp;
    bool list, exact;
    uint64_t val, vals[3];
    int nvals;
    ns_addr a[3];
    unsigned plen[3]; /* bits over the 16-byte form */
} rprim;

typedef struct rnode {
    int op; /* 0 prim, 1 and, 2 or, 3 not */
    int l, r;
    rprim p;
} rnode;

static rnode rnodes[256];
static int nrnodes;

static unsigned net_of(const char *text, ns_addr *a)
{
    char buf[64];
    strcpy(buf, text);
    char *slash = strchr(buf, '/');
    *slash = 0;
    unsigned len = (unsigned)atoi(slash + 1);
    if (strchr(buf, ':')) {
        *a = addr(buf);
        return len;
    }
    unsigned o[4] = {0, 0, 0, 0};
    sscanf(buf, "%u.%u.%u.%u", &o[0], &o[1], &o[2], &o[3]);
    ns_addr_from_v4(a, o[0] << 24 | o[1] << 16 | o[2] << 8 | o[3]);
    return len + 96;
}

static bool ref_in_net(const ns_addr *x, const ns_addr *net, unsigned bits)
{
    for (unsigned i = 0; i < bits; i++) {
        unsigned bx = x->b[i / 8] >> (7 - i % 8) & 1, bn = net->b[i / 8] >> (7 - i % 8) & 1;
        if (bx != bn)
            return false;
    }
    return true;
}

static uint64_t ref_value(int field, bool dst, const eng_flow *r)
{
    uint64_t dur = r->last_ms > r->first_ms ? (uint64_t)(r->last_ms - r->first_ms) : 0;
    switch (field) {
    case V_PORT:
        return dst ? r->dst_port : r->src_port;
    case V_AS:
        return dst ? r->dst_as : r->src_as;
    case V_IF:
        return dst ? r->out_if : r->in_if;
    case V_MASK:
        return dst ? r->dst_mask : r->src_mask;
    case V_PROTO:
        return r->proto;
    case V_TOS:
        return r->tos;
    case V_VLAN:
        return r->vlan;
    case V_BYTES:
        return r->bytes;
    case V_PACKETS:
        return r->packets;
    case V_DURATION:
        return dur;
    case V_BPS:
        return dur ? r->bytes * 8000 / dur : r->bytes * 8; /* pools keep these small */
    case V_PPS:
        return dur ? r->packets * 1000 / dur : r->packets;
    default:
        return r->packets ? r->bytes / r->packets : 0;
    }
}

static bool ref_cmp(int cmp, uint64_t x, uint64_t v)
{
    switch (cmp) {
    case K_EQ:
        return x == v;
    case K_NE:
        return x != v;
    case K_LT:
        return x < v;
    case K_LE:
        return x <= v;
    case K_GT:
        return x > v;
    default:
        return x >= v;
    }
}

static bool ref_side(const rprim *p, const eng_flow *r, bool dst)
{
    if (p->kind == R_HOST || p->kind == R_NET || p->kind == R_EXPORTER) {
        const ns_addr *x = p->kind == R_EXPORTER ? &r->exporter : dst ? &r->dst : &r->src;
        for (int i = 0; i < p->nvals; i++)
            if (ref_in_net(x, &p->a[i], p->plen[i]))
                return true;
        return false;
    }
    uint64_t x = ref_value(p->field, dst, r);
    if (p->list) {
        for (int i = 0; i < p->nvals; i++)
            if (x == p->vals[i])
                return true;
        return false;
    }
    return ref_cmp(p->cmp, x, p->val);
}

static bool ref_prim(const rprim *p, const eng_flow *r)
{
    switch (p->kind) {
    case R_ANY:
        return true;
    case R_V4:
        return ns_addr_is_v4(&r->src);
    case R_V6:
        return !ns_addr_is_v4(&r->src);
    case R_FLAGS:
        return r->proto == 6 &&
               (p->exact ? r->tcp_flags == p->val : (r->tcp_flags & p->val) == p->val);
    case R_ICMP:
        return (r->proto == 1 || r->proto == 58) &&
               ref_cmp(p->cmp,
                       p->field ? (uint64_t)(r->dst_port & 0xff) : (uint64_t)(r->dst_port >> 8),
                       p->val);
    case R_EXPORTER:
        return ref_side(p, r, false);
    default:
        break;
    }
    bool dual = p->kind == R_HOST || p->kind == R_NET ||
                (p->kind == R_NUM && (p->field == V_PORT || p->field == V_AS || p->field == V_IF ||
                                      p->field == V_MASK));
    if (!dual)
        return ref_side(p, r, false);
    switch (p->q) {
    case Q_SRC:
        return ref_side(p, r, false);
    case Q_DST:
        return ref_side(p, r, true);
    case Q_BOTH:
        return ref_side(p, r, false) && ref_side(p, r, true);
    default:
        return ref_side(p, r, false) || ref_side(p, r, true);
    }
}

static bool ref_eval(int i, const eng_flow *r)
{
    const rnode *n = &rnodes[i];
    switch (n->op) {
    case 1:
        return ref_eval(n->l, r) && ref_eval(n->r, r);
    case 2:
        return ref_eval(n->l, r) || ref_eval(n->r, r);
    case 3:
        return !ref_eval(n->l, r);
    default:
        return ref_prim(&n->p, r);
    }
}

static rprim random_prim(void)
{
    static const uint64_t *const pools[V_COUNT] = {
        pool_ports, pool_as,  pool_if,  pool_small, pool_protos, pool_small, pool_small,
        pool_big,   pool_big, pool_big, pool_big,   pool_big,    pool_big};
    static const size_t pool_n[V_COUNT] = {8, 4, 4, 8, 5, 8, 8, 10, 10, 10, 10, 10, 10};
    rprim p = {0};
    int k = (int)pick(20);
    p.q = (int)pick(5);
    p.cmp = (int)pick(6);
    if (k < 3) {
        p.kind = R_HOST;
        p.nvals = pick(3) ? 1 : 1 + (int)pick(3);
        p.list = p.nvals > 1 || !pick(4);
        for (int i = 0; i < p.nvals; i++) {
            p.a[i] = addr(PICK(pool_addrs));
            p.plen[i] = 128;
        }
    } else if (k < 5) {
        p.kind = R_NET;
        p.nvals = 1;
        p.plen[0] = net_of(PICK(pool_nets), &p.a[0]);
    } else if (k < 6) {
        p.kind = R_EXPORTER;
        p.nvals = 1;
        p.a[0] = addr(PICK(pool_addrs));
        p.plen[0] = 128;
    } else if (k < 7) {
        p.kind = R_FLAGS;
        p.val = pick(64) | (pick(8) ? 0 : 0x40);
        p.exact = !pick(3);
        if (!p.val)
            p.val = 2;
    } else if (k < 8) {
        p.kind = pick(2) ? R_V4 : R_V6;
    } else if (k < 9) {
        p.kind = pick(4) ? R_ICMP : R_ANY;
        p.field = (int)pick(2);
        p.val = pick(3) ? 8 : pick(256);
    } else {
        p.kind = R_NUM;
        p.field = (int)pick(V_COUNT);
        p.val = pools[p.field][pick(pool_n[p.field])];
        if (pick(8) == 0 && p.val > 0 && (p.val < 255 || p.field >= V_BYTES))
            p.val += pick(3) - 1; /* near misses */
        if (p.field == V_IF && (p.q == Q_EITHER || p.q == Q_BOTH))
            p.q = Q_NONE; /* "if" is in or out; there is no "in and out if" */
        if (p.field == V_PROTO && p.val > 255)
            p.val = 255;
        if ((p.field == V_PORT || p.field == V_AS) && !pick(4)) {
            p.list = true;
            p.nvals = 1 + (int)pick(3);
            for (int i = 0; i < p.nvals; i++)
                p.vals[i] = pools[p.field][pick(pool_n[p.field])];
        }
    }
    return p;
}

static int random_tree(int depth)
{
    int i = nrnodes++;
    cr_assert(nrnodes < 256);
    int op = depth <= 0 ? 0 : (int)pick(5);
    if (op >= 4)
        op = 0;
    rnodes[i].op = op;
    if (op == 0) {
        rnodes[i].p = random_prim();
    } else {
        int l = random_tree(depth - 1);
        rnodes[i].l = l;
        if (op != 3)
            rnodes[i].r = random_tree(depth - 1);
    }
    return i;
}

static void put(char **o, const char *s)
{
    size_t n = strlen(s);
    memcpy(*o, s, n);
    *o += n;
}

/* a keyword in random case */
static void kw(char **o, const char *s)
{
    int mode = (int)pick(6);
    for (; *s; s++) {
        char c = *s;
        if (mode == 0 || (mode == 1 && pick(2)))
            c = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
        *(*o)++ = c;
    }
}

static void render_qual(char **o, int q)
{
    static const char *const q1[] = {"", "src ", "dst ", "src or dst ", "src and dst "};
    kw(o, q1[q]);
}

static void render_num(char **o, uint64_t v, int field)
{
    char buf[40];
    int form = (int)pick(4);
    if (form == 0 && v && v % 1000000000 == 0 && field >= V_BYTES)
        snprintf(buf, sizeof buf, "%" PRIu64 "%c", v / 1000000000, pick(2) ? 'G' : 'g');
    else if (form == 1 && v && v % 1000000 == 0 && field >= V_BYTES)
        snprintf(buf, sizeof buf, "%" PRIu64 "%c", v / 1000000, pick(2) ? 'M' : 'm');
    else if (form == 2 && v && v % 1000 == 0 && field >= V_BYTES)
        snprintf(buf, sizeof buf, "%" PRIu64 "%c", v / 1000, pick(2) ? 'k' : 'K');
    else if (form == 3 && field != V_PROTO)
        snprintf(buf, sizeof buf, "0x%" PRIx64, v);
    else
        snprintf(buf, sizeof buf, "%" PRIu64, v);
    put(o, buf);
}

static void render_cmp(char **o, int cmp)
{
    static const char *const sym[6][3] = {{"= ", "== ", "eq "}, {"!= ", "ne ", "!= "},
                                          {"< ", "lt ", "<"},   {"<= ", "le ", "<="},
                                          {"> ", "gt ", ">"},   {">= ", "ge ", ">="}};
    if (cmp == K_EQ && pick(2))
        return; /* implicit = */
    kw(o, sym[cmp][pick(3)]);
}

static void render_prim(char **o, const rprim *p)
{
    static const char *const fields[V_COUNT] = {"port", "as",   "if",    "mask",    "proto",
                                                "tos",  "vlan", "bytes", "packets", "duration",
                                                "bps",  "pps",  "bpp"};
    char buf[64];
    switch (p->kind) {
    case R_ANY:
        kw(o, "any");
        return;
    case R_V4:
        kw(o, pick(2) ? "ipv4" : "inet");
        return;
    case R_V6:
        kw(o, pick(2) ? "ipv6" : "inet6");
        return;
    case R_HOST:
    case R_EXPORTER:
        if (p->kind == R_HOST) {
            render_qual(o, p->q);
            kw(o, pick(2) ? "host " : "ip ");
        } else {
            kw(o, pick(2) ? "exporter " : "router ip ");
        }
        if (p->list) {
            kw(o, "in [");
            for (int i = 0; i < p->nvals; i++) {
                put(o, i ? (pick(2) ? ", " : " ") : "");
                put(o, ns_addr_fmt(&p->a[i], buf, sizeof buf));
            }
            put(o, "]");
        } else {
            put(o, ns_addr_fmt(&p->a[0], buf, sizeof buf));
        }
        return;
    case R_NET: {
        render_qual(o, p->q);
        kw(o, "net ");
        bool v4 = ns_addr_is_v4(&p->a[0]);
        unsigned len = v4 ? p->plen[0] - 96 : p->plen[0];
        if (v4 && pick(3) == 0) {
            uint32_t m = len ? 0xffffffffu << (32 - len) : 0;
            char a[48];
            snprintf(buf, sizeof buf, "%s %s%u.%u.%u.%u", ns_addr_fmt(&p->a[0], a, sizeof a),
                     pick(2) ? "mask " : "", m >> 24, m >> 16 & 255, m >> 8 & 255, m & 255);
            put(o, buf);
        } else {
            char a[48];
            snprintf(buf, sizeof buf, "%s/%u", ns_addr_fmt(&p->a[0], a, sizeof a), len);
            put(o, buf);
        }
        return;
    }
    case R_FLAGS: {
        static const char letters[] = "FSRPAUEC";
        kw(o, "flags ");
        if (p->exact)
            put(o, pick(2) ? "= " : "=");
        if (p->val == 0x3f && pick(2)) {
            put(o, "X");
            return;
        }
        for (int b = 7; b >= 0; b--)
            if (p->val & (1u << b))
                *(*o)++ = letters[b];
        return;
    }
    case R_ICMP:
        if (pick(2))
            kw(o, p->field ? "icmp-code " : "icmp-type ");
        else
            kw(o, p->field ? "icmp code " : "icmp type ");
        render_cmp(o, p->cmp);
        snprintf(buf, sizeof buf, "%" PRIu64, p->val);
        put(o, buf);
        return;
    default:
        break;
    }
    /* R_NUM */
    bool dual = p->field == V_PORT || p->field == V_AS || p->field == V_MASK;
    if (dual)
        render_qual(o, p->q);
    if (p->field == V_IF && (p->q == Q_SRC || p->q == Q_DST))
        kw(o, p->q == Q_SRC ? "in " : "out ");
    kw(o, fields[p->field]);
    put(o, " ");
    if (p->list) {
        kw(o, "in [");
        for (int i = 0; i < p->nvals; i++) {
            put(o, i ? (pick(2) ? ", " : " ") : "");
            render_num(o, p->vals[i], p->field);
        }
        put(o, "]");
        return;
    }
    render_cmp(o, p->cmp);
    if (p->field == V_PROTO && p->cmp == K_EQ && (p->val == 6 || p->val == 17) && pick(2))
        kw(o, p->val == 6 ? "tcp" : "udp");
    else
        render_num(o, p->val, p->field);
}

/* Renders with parentheses only where precedence needs them (and sometimes where not). */
static void render(char **o, int i, int parent_op)
{
    const rnode *n = &rnodes[i];
    bool paren = (parent_op == 1 && n->op == 2) || (parent_op == 3 && (n->op == 1 || n->op == 2));
    if (!paren && pick(8) == 0)
        paren = true;
    if (paren)
        put(o, pick(2) ? "(" : "( ");
    switch (n->op) {
    case 0:
        render_prim(o, &n->p);
        break;
    case 3:
        kw(o, pick(2) ? "not " : "!");
        render(o, n->l, 3);
        break;
    default:
        render(o, n->l, n->op);
        if (n->op == 1)
            kw(o, pick(2) ? " and " : pick(2) ? " && " : "&&");
        else
            kw(o, pick(2) ? " or " : pick(2) ? " || " : "||");
        /* same-operator chains associate either way; the right side of "a and (b and c)"
         * needs no parentheses, of "a and (b or c)" it does */
        render(o, n->r, n->op);
        break;
    }
    if (paren)
        put(o, pick(2) ? ")" : " )");
}

static void copy_col(eng_flow *d, const eng_flow *s, int c)
{
    switch (c) {
    case ENG_COL_FIRST:
        d->first_ms = s->first_ms;
        break;
    case ENG_COL_LAST:
        d->last_ms = s->last_ms;
        break;
    case ENG_COL_PACKETS:
        d->packets = s->packets;
        break;
    case ENG_COL_BYTES:
        d->bytes = s->bytes;
        break;
    case ENG_COL_EXPORTER:
        d->exporter = s->exporter;
        break;
    case ENG_COL_SRC:
        d->src = s->src;
        break;
    case ENG_COL_DST:
        d->dst = s->dst;
        break;
    case ENG_COL_NEXTHOP:
        d->nexthop = s->nexthop;
        break;
    case ENG_COL_SRC_AS:
        d->src_as = s->src_as;
        break;
    case ENG_COL_DST_AS:
        d->dst_as = s->dst_as;
        break;
    case ENG_COL_IN_IF:
        d->in_if = s->in_if;
        break;
    case ENG_COL_OUT_IF:
        d->out_if = s->out_if;
        break;
    case ENG_COL_SAMPLING:
        d->sampling = s->sampling;
        break;
    case ENG_COL_SOURCE_ID:
        d->source_id = s->source_id;
        break;
    case ENG_COL_SRC_PORT:
        d->src_port = s->src_port;
        break;
    case ENG_COL_DST_PORT:
        d->dst_port = s->dst_port;
        break;
    case ENG_COL_PROTO:
        d->proto = s->proto;
        break;
    case ENG_COL_TCP_FLAGS:
        d->tcp_flags = s->tcp_flags;
        break;
    case ENG_COL_TOS:
        d->tos = s->tos;
        break;
    case ENG_COL_SRC_MASK:
        d->src_mask = s->src_mask;
        break;
    case ENG_COL_DST_MASK:
        d->dst_mask = s->dst_mask;
        break;
    case ENG_COL_VLAN:
        d->vlan = s->vlan;
        break;
    case ENG_COL_DIRECTION:
        d->direction = s->direction;
        break;
    case ENG_COL_FLOW_TYPE:
        d->flow_type = s->flow_type;
        break;
    default:
        break;
    }
}

Test(filter_random, compiled_equals_reference, .timeout = 120)
{
    enum { NROWS = 200, NEXPR = 20000 };
    static eng_flow rows[NROWS];
    static char text[8192];
    size_t hits = 0, total = 0, derived = 0;
    for (int i = 0; i < NROWS; i++)
        rows[i] = random_row();
    for (int e = 0; e < NEXPR; e++) {
        nrnodes = 0;
        int root = random_tree((int)pick(5));
        char *o = text;
        render(&o, root, 0);
        *o = 0;
        qry_filter *f = NULL;
        char err[256] = "";
        int rc = qry_filter_compile(text, &f, err, sizeof err);
        cr_assert(eq(int, rc, 0), "\"%s\": %s", text, err);
        uint32_t cols = qry_filter_columns(f);
        ns_addr set[64];
        size_t nset = qry_filter_addrs(f, set, 64);
        derived += nset > 0;
        for (int i = 0; i < NROWS; i++) {
            bool want = ref_eval(root, &rows[i]);
            bool got = qry_filter_match(f, &rows[i]);
            total++;
            hits += got;
            if (got != want) {
                char s[64], d[64];
                cr_assert(false,
                          "\"%s\" on row %d (src %s dst %s proto %u sport %u dport %u "
                          "flags %#x): filter %d, reference %d",
                          text, i, ns_addr_fmt(&rows[i].src, s, sizeof s),
                          ns_addr_fmt(&rows[i].dst, d, sizeof d), rows[i].proto, rows[i].src_port,
                          rows[i].dst_port, rows[i].tcp_flags, got, want);
            }
            /* only the columns in the mask matter: the rest may be anything */
            eng_flow mixed = rows[(i + 1) % NROWS];
            for (int c = 0; c < ENG_NCOLS; c++)
                if (cols & ENG_COLMASK(c))
                    copy_col(&mixed, &rows[i], c);
            cr_assert(eq(int, qry_filter_match(f, &mixed), got), "\"%s\": columns %#x", text, cols);
            /* the derived set is sound: a matching row has src or dst in it */
            if (got && nset) {
                bool in = false;
                for (size_t k = 0; k < nset; k++)
                    in |= !memcmp(&set[k], &rows[i].src, sizeof(ns_addr)) ||
                          !memcmp(&set[k], &rows[i].dst, sizeof(ns_addr));
                cr_assert(in, "\"%s\": row %d matches but has no address from the set", text, i);
            }
        }
        qry_filter_free(f);
    }
    /* the random filters must be neither almost always true nor almost always false */
    cr_assert(hits > total / 20 && hits < total - total / 20, "hits %zu of %zu", hits, total);
    cr_assert(derived > NEXPR / 50, "only %zu filters had a derived address set", derived);
}
