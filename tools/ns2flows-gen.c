/* tools/ns2flows-gen.c — writes reproducible pcap captures of synthetic NetFlow v5 (Cisco's
 * fixed layout), NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) export datagrams, for the benchmark
 * harness (bench/) and for tests. Same arguments, same binary: byte-identical file.
 *
 * `--check FILE` reads such a capture back through libpcap and its own small decoder and prints
 * the totals it holds, in the same `key=value` line the generator prints, so a benchmark can
 * prove that a collector stored exactly what was sent.
 *
 * The traffic model (every constant is in the MODEL section below):
 *  - Talkers. 20000 internal hosts in 10.0.0.0/13 (eight /16s) and 100000 external servers in
 *    198.18.0.0/15 (RFC 2544's benchmarking range). Each flow picks a host by Zipf rank with
 *    exponent 1.2 and a server with exponent 0.9: the ten busiest hosts are in half of the
 *    flows, the busiest 1% of hosts in ~79% and the busiest 1% of servers in ~47%, so a few
 *    talkers carry most of the bytes, as on a real edge router. A rank becomes an address by an
 *    odd-multiplier bijection, so the busiest hosts are scattered over the /16s.
 *  - Services: a weighted table (per mille of flows) of TCP 443/80/22/25/53/993/3389/8080 and
 *    high ports, UDP 53/443 (QUIC)/123/514/161 and high ports, ICMP, GRE and ESP; each with its
 *    own packet-count tail and packet sizes per direction.
 *  - Records are unidirectional, as NetFlow meters them: half are client->server (requests,
 *    small packets), half server->client (responses, large packets).
 *  - Packets per record are Pareto distributed (x_m = 1, shape 1.05..1.6 by service): most flows
 *    are a few packets, a few are huge, and those decide the byte totals. Capped at 2,000,000
 *    packets, so bytes fit v5's 32-bit counter.
 *  - Time. Flow END times are spread evenly (with jitter) over [start, start + duration) and
 *    generated in increasing order, which is the order an exporter sends them in. A flow lasts
 *    (packets - 1) x 1..100 ms, cut at a 60 s active timeout; its start is end - duration,
 *    never before --start. Each exporter fills a datagram and sends it when full, or when its
 *    oldest record has waited 1 s; the datagram's export time and the capture timestamp are the
 *    newest flow end in it (export time rounded up to the second, the header's resolution).
 *  - Exporters 127.0.0.1 .. 127.0.0.K, chosen uniformly per flow, each with its own boot time,
 *    sequence numbers, source id / observation domain (k + 1) and template (id 256, sent in the
 *    first datagram and every 20th after it). Datagrams go to 127.0.0.1:2055; an IP packet is at
 *    most 1400 bytes (v5: 28 records, v9: 21, IPFIX: 18, fewer when the template rides along).
 *
 * Reproducibility: the PRNG is xoshiro256** seeded through splitmix64 (Vigna's public-domain
 * algorithms, written out below); nothing reads the clock or the environment; the pcap is
 * written little-endian whatever the host. libm's pow() is the only platform dependency. */
#include "engine/base.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pcap/pcap.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "ns2flows-gen"

/* ---------------------------------------------------------------------------------------------
 * MODEL: the parameters of the synthetic traffic (see the top of the file). */
/* 2026-01-01T00:00:00Z: a fixed default, so the output never depends on the day it was made */
#define DEFAULT_START     1767225600LL
#define DEFAULT_DURATION  3600
#define MAX_DURATION      (30 * 86400) /* keeps every exporter's sysUptime under 2^32 ms */
#define DEFAULT_EXPORTERS 4
#define MAX_EXPORTERS     250
#define TEMPLATE_EVERY    20 /* v9/IPFIX: template in datagram 0, 20, 40, ... of each exporter */

#define N_HOSTS           20000u
#define HOST_ZIPF         1.2
#define HOST_NET          0x0A000000u /* 10.0.0.0/13 */
#define HOST_BITS         19
#define N_SERVERS         100000u
#define SERVER_ZIPF       0.9
#define SERVER_NET        0xC6120000u /* 198.18.0.0/15 */
#define SERVER_BITS       17
#define P_RESPONSE        0.5       /* share of records in the server -> client direction */
#define MAX_PACKETS       2000000.0 /* x 1500 bytes still fits v5's 32-bit dOctets */
#define GAP_MS_MAX        100u      /* packet spacing inside a flow: 1..GAP_MS_MAX ms */
#define ACTIVE_TIMEOUT_MS 60000u    /* long flows are exported in pieces of at most this */
#define FLUSH_AFTER_US    1000000   /* an exporter sends a partial datagram after this wait */
#define SWEEP_US          100000    /* how often (in flow time) the flush timer is checked */

#define COLLECTOR_ADDR 0x7F000001u /* 127.0.0.1 */
#define COLLECTOR_PORT 2055
#define EXPORTER_PORT  2055 /* source port of every exporter (as most routers use) */
#define IP_MAX         1400 /* largest IP packet: 20 (IPv4) + 8 (UDP) + export payload */
#define PAYLOAD_MAX    (IP_MAX - 20 - 8)
#define FRAME_HDR      (14 + 20 + 8) /* Ethernet + IPv4 + UDP */

/* ---------------------------------------------------------------------------------------------
 * PRNG: xoshiro256** (Blackman & Vigna), state seeded by splitmix64. */
typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

/* Uniform in [0, 1), 53 bits. */
static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n): the high 32 bits scaled (Lemire); the bias, < n / 2^32, is irrelevant
 * here and a rejection loop would make the draw count data-dependent. */
static uint32_t rng_below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

static uint32_t rng_range(rng *r, uint32_t lo, uint32_t hi) /* inclusive */
{
    return lo + rng_below(r, hi - lo + 1u);
}

/* ---------------------------------------------------------------------------------------------
 * Zipf ranks by inverse CDF: cdf[i] = sum of 1/(j+1)^s for j <= i, then a binary search for a
 * uniform draw scaled to the total. O(log n) a draw, exact for any n. */
typedef struct zipf {
    double *cdf;
    uint32_t n;
} zipf;

static int zipf_init(zipf *z, uint32_t n, double s)
{
    double sum = 0;
    z->n = n;
    z->cdf = malloc(n * sizeof *z->cdf);
    if (!z->cdf)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        sum += 1.0 / pow((double)i + 1.0, s);
        z->cdf[i] = sum;
    }
    return 0;
}

static uint32_t zipf_draw(const zipf *z, rng *r)
{
    double u = rng_unit(r) * z->cdf[z->n - 1];
    uint32_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Rank -> address. Multiplying by an odd constant is a bijection modulo 2^bits, so distinct
 * ranks get distinct addresses, and neighbouring ranks land far apart. */
static uint32_t host_addr(uint32_t rank)
{
    return HOST_NET | ((rank * 0x2C9277B5u + 0x1F3u) & ((1u << HOST_BITS) - 1u));
}

static uint32_t server_addr(uint32_t rank)
{
    return SERVER_NET | ((rank * 0x6A09E667u + 0x101u) & ((1u << SERVER_BITS) - 1u));
}

/* ---------------------------------------------------------------------------------------------
 * Services. weight: per mille of flows (the table sums to 1000). port: the server's port; 0
 * means a random registered port (1024..49151); for ICMP the type/code is drawn separately.
 * alpha: Pareto shape of the packet count (smaller = heavier tail). Packet sizes in bytes for
 * the request (client -> server) and response directions. */
typedef struct service {
    uint16_t weight;
    uint8_t proto;
    uint16_t port;
    double alpha;
    uint16_t req_lo, req_hi, resp_lo, resp_hi;
} service;

enum { P_ICMP = 1, P_TCP = 6, P_UDP = 17, P_GRE = 47, P_ESP = 50 };

static const service services[] = {
    {380, P_TCP, 443, 1.15, 52, 400, 600, 1500}, /* HTTPS */
    {170, P_TCP, 80, 1.2, 52, 500, 400, 1500},   /* HTTP */
    {20, P_TCP, 22, 1.1, 52, 300, 52, 600},      /* SSH (and scp: the long tail) */
    {15, P_TCP, 25, 1.3, 52, 1200, 52, 200},     /* SMTP: requests carry the mail */
    {10, P_TCP, 53, 1.5, 60, 120, 80, 1400},     /* DNS over TCP */
    {10, P_TCP, 993, 1.3, 52, 200, 100, 1400},   /* IMAPS */
    {5, P_TCP, 3389, 1.05, 52, 300, 100, 1400},  /* RDP */
    {20, P_TCP, 8080, 1.2, 52, 500, 400, 1500},  /* HTTP alternate */
    {40, P_TCP, 0, 1.3, 52, 1000, 52, 1500},     /* everything else on TCP */
    {130, P_UDP, 53, 1.6, 60, 120, 80, 500},     /* DNS */
    {100, P_UDP, 443, 1.1, 60, 1350, 200, 1350}, /* QUIC */
    {30, P_UDP, 123, 1.6, 76, 76, 76, 76},       /* NTP */
    {10, P_UDP, 514, 1.2, 100, 600, 100, 600},   /* syslog */
    {5, P_UDP, 161, 1.5, 80, 200, 80, 1200},     /* SNMP */
    {15, P_UDP, 0, 1.3, 60, 1400, 60, 1400},     /* everything else on UDP */
    {20, P_ICMP, 0, 1.5, 64, 98, 64, 98},        /* echo, unreachable, time exceeded */
    {10, P_GRE, 0, 1.05, 100, 1476, 100, 1476},  /* tunnels: few flows, many bytes */
    {10, P_ESP, 0, 1.05, 100, 1438, 100, 1438},
};
#define N_SERVICES (sizeof services / sizeof services[0])

/* ICMP type << 8 | code, as NetFlow carries it in the destination port. */
static const uint16_t icmp_codes[] = {0x0800, 0x0000, 0x0303, 0x0B00};

/* One flow record, in the units the encoders need. */
typedef struct gen_flow {
    int64_t first_ms, last_ms;
    uint64_t packets, bytes;
    uint32_t src, dst, nexthop;
    uint32_t in_if, out_if, src_as, dst_as;
    uint16_t sport, dport;
    uint8_t proto, tcp_flags, tos, src_mask, dst_mask, direction;
} gen_flow;

typedef struct model {
    rng r;
    zipf hosts, servers;
    uint16_t svc_cum[N_SERVICES]; /* cumulative weights */
} model;

static int model_init(model *m, uint64_t seed)
{
    uint16_t sum = 0;
    rng_seed(&m->r, seed);
    for (size_t i = 0; i < N_SERVICES; i++)
        m->svc_cum[i] = sum = (uint16_t)(sum + services[i].weight);
    if (zipf_init(&m->hosts, N_HOSTS, HOST_ZIPF) < 0)
        return -ENOMEM;
    if (zipf_init(&m->servers, N_SERVERS, SERVER_ZIPF) < 0) {
        free(m->hosts.cdf);
        return -ENOMEM;
    }
    return 0;
}

static void model_free(model *m)
{
    free(m->hosts.cdf);
    free(m->servers.cdf);
}

/* Fills f with a flow that ends at end_ms and starts no earlier than floor_ms. Every draw comes
 * from m's one PRNG in a fixed order, so the sequence of flows depends on the seed alone. */
static void model_flow(model *m, int64_t end_ms, int64_t floor_ms, gen_flow *f)
{
    rng *r = &m->r;
    uint32_t h = zipf_draw(&m->hosts, r), s = zipf_draw(&m->servers, r);
    uint32_t pick = rng_below(r, m->svc_cum[N_SERVICES - 1]);
    size_t si = 0;
    while (m->svc_cum[si] <= pick)
        si++;
    const service *sv = &services[si];
    bool response = rng_unit(r) < P_RESPONSE;
    uint32_t host = host_addr(h), server = server_addr(s);
    uint16_t client_port = (uint16_t)rng_range(r, 32768, 60999); /* Linux's ephemeral range */
    uint16_t server_port = sv->port ? sv->port : (uint16_t)rng_range(r, 1024, 49151);

    /* Pareto(x_m = 1, alpha): 1 / U^(1/alpha), U in (0, 1]. */
    double pk = 1.0 / pow(1.0 - rng_unit(r), 1.0 / sv->alpha);
    uint64_t packets = pk >= MAX_PACKETS ? (uint64_t)MAX_PACKETS : (uint64_t)pk;
    uint32_t lo = response ? sv->resp_lo : sv->req_lo, hi = response ? sv->resp_hi : sv->req_hi;
    /* The average packet size of this flow, then bytes; one-packet TCP flows are bare
     * SYNs or RSTs whatever the service. */
    uint32_t avg = rng_range(r, lo, hi);
    if (sv->proto == P_TCP && packets == 1)
        avg = 40 + rng_below(r, 21);
    uint64_t dur = packets <= 1 ? 0 : (packets - 1) * rng_range(r, 1, GAP_MS_MAX);
    bool cut = dur >= ACTIVE_TIMEOUT_MS;
    if (cut)
        dur = ACTIVE_TIMEOUT_MS;
    double tos_u = rng_unit(r);

    memset(f, 0, sizeof *f);
    f->last_ms = end_ms;
    f->first_ms = end_ms - (int64_t)dur < floor_ms ? floor_ms : end_ms - (int64_t)dur;
    f->packets = packets;
    f->bytes = packets * avg;
    f->proto = sv->proto;
    f->tos = tos_u < 0.05 ? 0xB8 : tos_u < 0.10 ? 0x28 : 0;
    f->direction = 0; /* metered on ingress */

    uint16_t cport = client_port, sport = server_port;
    if (sv->proto == P_ICMP) {
        /* requests are echo requests; the rest are what comes back */
        uint16_t code = icmp_codes[response ? 1 + rng_below(r, 3) : 0];
        cport = 0;
        sport = code;
    } else if (sv->proto == P_GRE || sv->proto == P_ESP) {
        cport = sport = 0;
    }
    if (sv->proto == P_TCP) {
        if (packets == 1)
            f->tcp_flags = response ? 0x14 : 0x02; /* RST|ACK, or a SYN nobody answered */
        else if (packets <= 3)
            f->tcp_flags = 0x12; /* SYN|ACK: a handshake and little more */
        else if (cut)
            f->tcp_flags = 0x18; /* PSH|ACK: still running at the active timeout */
        else
            f->tcp_flags = 0x1B; /* FIN|SYN|PSH|ACK: a whole connection */
    }

    uint32_t lan_if = 1 + (host >> 16 & 3u), wan_if = 10 + (server & 1u);
    uint32_t peer_as = 64496 + s % 16; /* RFC 5398 documentation ASes */
    if (!response) {
        f->src = host, f->dst = server;
        f->sport = sv->proto == P_ICMP ? 0 : cport;
        f->dport = sport;
        f->in_if = lan_if, f->out_if = wan_if;
        f->src_as = 0, f->dst_as = peer_as;
        f->src_mask = 16, f->dst_mask = 24;
        f->nexthop = 0xC0000201u; /* 192.0.2.1, the upstream */
    } else {
        f->src = server, f->dst = host;
        f->sport = sv->proto == P_ICMP ? 0 : sport;
        f->dport = sv->proto == P_ICMP ? sport : cport;
        f->in_if = wan_if, f->out_if = lan_if;
        f->src_as = peer_as, f->dst_as = 0;
        f->src_mask = 24, f->dst_mask = 16;
        f->nexthop = (host & 0xFFFF0000u) | 1u; /* the host's /16 gateway */
    }
}

/* ---------------------------------------------------------------------------------------------
 * Encoders. A bounded big-endian writer: overrunning it is a bug in the size arithmetic below,
 * hence assert-like aborts rather than error codes. */
typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void put_bytes(wbuf *w, uint64_t v, unsigned n)
{
    if (w->len + n > w->cap) {
        fprintf(stderr, PROG ": internal error: datagram overflow\n");
        abort();
    }
    for (unsigned i = 0; i < n; i++)
        w->p[w->len + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    w->len += n;
}
static void put8(wbuf *w, uint64_t v)
{
    put_bytes(w, v, 1);
}
static void put16(wbuf *w, uint64_t v)
{
    put_bytes(w, v, 2);
}
static void put32(wbuf *w, uint64_t v)
{
    put_bytes(w, v, 4);
}
static void patch16(wbuf *w, size_t at, uint16_t v)
{
    w->p[at] = (uint8_t)(v >> 8);
    w->p[at + 1] = (uint8_t)v;
}

typedef enum { FMT_V5, FMT_V9, FMT_IPFIX } gen_format;

/* One template for v9 and IPFIX: {element id, length}. The v9 and IPFIX ids coincide for all of
 * these; only the timestamps differ (v9: sysUptime-relative 22/21, IPFIX: absolute 152/153)
 * and IPFIX adds flowEndReason (136). */
typedef struct field {
    uint16_t id, len;
} field;

static const field v9_fields[] = {
    {8, 4},  {12, 4}, {15, 4}, {10, 4}, {14, 4}, {2, 8},  {1, 8}, {22, 4}, {21, 4}, {7, 2},
    {11, 2}, {6, 1},  {4, 1},  {5, 1},  {16, 4}, {17, 4}, {9, 1}, {13, 1}, {61, 1},
};
static const field ipfix_fields[] = {
    {8, 4},  {12, 4}, {15, 4}, {10, 4}, {14, 4}, {2, 8},  {1, 8}, {152, 8}, {153, 8}, {7, 2},
    {11, 2}, {6, 2},  {4, 1},  {5, 1},  {16, 4}, {17, 4}, {9, 1}, {13, 1},  {61, 1},  {136, 1},
};
#define N_V9_FIELDS    (sizeof v9_fields / sizeof v9_fields[0])
#define N_IPFIX_FIELDS (sizeof ipfix_fields / sizeof ipfix_fields[0])
#define TEMPLATE_ID    256
#define V5_HDR         24
#define V5_REC         48
#define V9_HDR         20
#define IPFIX_HDR      16
#define MAX_RECS       28 /* v5's, the largest of the three */

static size_t rec_len(const field *f, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += f[i].len;
    return len;
}

typedef struct exporter {
    uint32_t addr;      /* 127.0.0.(k + 1) */
    uint32_t domain;    /* v5 engine id (k), v9 source id and IPFIX observation domain (k + 1) */
    int64_t boot_ms;    /* sysUptime zero */
    uint32_t seq;       /* v5: flows sent; v9: datagrams sent; IPFIX: data records sent */
    uint64_t datagrams; /* sent so far: decides when the template rides along */
    uint16_t ip_id;
    size_t n;          /* records waiting in recs */
    int64_t oldest_us; /* end time of recs[0] */
    int64_t newest_us; /* end time of recs[n - 1] */
    gen_flow recs[MAX_RECS];
} exporter;

typedef struct gen_totals {
    uint64_t flows, packets, bytes, datagrams;
    unsigned exporters;        /* that sent at least one datagram */
    int64_t first_ms, last_ms; /* smallest flow start, largest flow end */
} gen_totals;

typedef struct gen {
    gen_format fmt;
    FILE *out;
    exporter *ex;
    unsigned nex;
    int64_t last_ts_us; /* capture timestamps never go back */
    gen_totals tot;
    uint8_t frame[FRAME_HDR + PAYLOAD_MAX];
} gen;

static bool template_due(const exporter *e)
{
    return e->datagrams % TEMPLATE_EVERY == 0;
}

/* Records the next datagram of e can hold. */
static size_t capacity(const gen *g, const exporter *e)
{
    size_t room;
    switch (g->fmt) {
    case FMT_V5:
        return (PAYLOAD_MAX - V5_HDR) / V5_REC;
    case FMT_V9:
        room = PAYLOAD_MAX - V9_HDR - 4; /* data flowset header */
        if (template_due(e))
            room -= 4 + 4 + 4 * N_V9_FIELDS;
        /* the data flowset is padded to 4 bytes: leave room for it */
        return (room - 3) / rec_len(v9_fields, N_V9_FIELDS);
    case FMT_IPFIX:
        room = PAYLOAD_MAX - IPFIX_HDR - 4;
        if (template_due(e))
            room -= 4 + 4 + 4 * N_IPFIX_FIELDS;
        return room / rec_len(ipfix_fields, N_IPFIX_FIELDS);
    }
    return 0;
}

static uint32_t uptime(const exporter *e, int64_t ms)
{
    return (uint32_t)(ms - e->boot_ms);
}

static void enc_v5(const exporter *e, int64_t export_s, wbuf *w)
{
    put16(w, 5);
    put16(w, e->n);
    put32(w, uptime(e, export_s * 1000));
    put32(w, (uint64_t)export_s);
    put32(w, 0); /* unix_nsecs: whole seconds, like v9 and IPFIX */
    put32(w, e->seq);
    put8(w, 1);         /* engine type */
    put8(w, e->domain); /* engine id */
    put16(w, 0);        /* not sampled */
    for (size_t i = 0; i < e->n; i++) {
        const gen_flow *f = &e->recs[i];
        put32(w, f->src);
        put32(w, f->dst);
        put32(w, f->nexthop);
        put16(w, f->in_if);
        put16(w, f->out_if);
        put32(w, f->packets);
        put32(w, f->bytes);
        put32(w, uptime(e, f->first_ms));
        put32(w, uptime(e, f->last_ms));
        put16(w, f->sport);
        put16(w, f->dport);
        put8(w, 0);
        put8(w, f->tcp_flags);
        put8(w, f->proto);
        put8(w, f->tos);
        put16(w, f->src_as);
        put16(w, f->dst_as);
        put8(w, f->src_mask);
        put8(w, f->dst_mask);
        put16(w, 0);
    }
}

/* The value of field id for flow f (v9 times relative to e's boot). */
static uint64_t field_value(const exporter *e, const gen_flow *f, uint16_t id)
{
    switch (id) {
    case 8:
        return f->src;
    case 12:
        return f->dst;
    case 15:
        return f->nexthop;
    case 10:
        return f->in_if;
    case 14:
        return f->out_if;
    case 2:
        return f->packets;
    case 1:
        return f->bytes;
    case 22:
        return uptime(e, f->first_ms);
    case 21:
        return uptime(e, f->last_ms);
    case 152:
        return (uint64_t)f->first_ms;
    case 153:
        return (uint64_t)f->last_ms;
    case 7:
        return f->sport;
    case 11:
        return f->dport;
    case 6:
        return f->tcp_flags;
    case 4:
        return f->proto;
    case 5:
        return f->tos;
    case 16:
        return f->src_as;
    case 17:
        return f->dst_as;
    case 9:
        return f->src_mask;
    case 13:
        return f->dst_mask;
    case 61:
        return f->direction;
    case 136:
        return f->tcp_flags == 0x18 ? 2 : 3; /* active timeout, else end of flow */
    }
    return 0;
}

static void put_template(wbuf *w, uint16_t set_id, const field *fl, size_t n)
{
    put16(w, set_id);
    put16(w, 4 + 4 + 4 * n);
    put16(w, TEMPLATE_ID);
    put16(w, n);
    for (size_t i = 0; i < n; i++) {
        put16(w, fl[i].id);
        put16(w, fl[i].len);
    }
}

static void put_records(wbuf *w, const exporter *e, const field *fl, size_t nf)
{
    for (size_t i = 0; i < e->n; i++)
        for (size_t k = 0; k < nf; k++)
            put_bytes(w, field_value(e, &e->recs[i], fl[k].id), fl[k].len);
}

static void enc_v9(const exporter *e, int64_t export_s, wbuf *w)
{
    bool tpl = template_due(e);
    put16(w, 9);
    put16(w, e->n + (tpl ? 1u : 0u)); /* count: template records plus data records */
    put32(w, uptime(e, export_s * 1000));
    put32(w, (uint64_t)export_s);
    put32(w, e->seq);
    put32(w, e->domain);
    if (tpl)
        put_template(w, 0, v9_fields, N_V9_FIELDS);
    size_t set = w->len;
    put16(w, TEMPLATE_ID);
    put16(w, 0); /* length, patched below */
    put_records(w, e, v9_fields, N_V9_FIELDS);
    while ((w->len - set) % 4) /* RFC 3954 §5.3: flowsets are padded to 32 bits */
        put8(w, 0);
    patch16(w, set + 2, (uint16_t)(w->len - set));
}

static void enc_ipfix(const exporter *e, int64_t export_s, wbuf *w)
{
    put16(w, 10);
    put16(w, 0); /* message length, patched below */
    put32(w, (uint64_t)export_s);
    put32(w, e->seq);
    put32(w, e->domain);
    if (template_due(e))
        put_template(w, 2, ipfix_fields, N_IPFIX_FIELDS);
    size_t set = w->len;
    put16(w, TEMPLATE_ID);
    put16(w, 0);
    put_records(w, e, ipfix_fields, N_IPFIX_FIELDS);
    patch16(w, set + 2, (uint16_t)(w->len - set));
    patch16(w, 2, (uint16_t)w->len);
}

/* ---------------------------------------------------------------------------------------------
 * pcap (the classic format, little-endian, microsecond timestamps, link type Ethernet). */
static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int pcap_header(FILE *f)
{
    uint8_t h[24];
    le32(h, 0xA1B2C3D4u);
    h[4] = 2, h[5] = 0, h[6] = 4, h[7] = 0; /* version 2.4 */
    le32(h + 8, 0);                         /* thiszone */
    le32(h + 12, 0);                        /* sigfigs */
    le32(h + 16, 65535);                    /* snaplen */
    le32(h + 20, 1);                        /* LINKTYPE_ETHERNET */
    return fwrite(h, sizeof h, 1, f) == 1 ? 0 : -EIO;
}

static uint16_t ip_checksum(const uint8_t *h, size_t len)
{
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)h[i] << 8 | h[i + 1];
    while (sum >> 16)
        sum = (sum & 0xFFFFu) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Sends e's waiting records as one datagram at capture time ts_us, moved forward to the newest
 * flow end in it (an exporter cannot send a flow before it ended) and to the previous
 * datagram's time (a capture runs forward). Returns 0 or -EIO. */
static int flush(gen *g, exporter *e, int64_t ts_us)
{
    if (e->n == 0)
        return 0;
    if (ts_us < e->newest_us)
        ts_us = e->newest_us;
    if (ts_us < g->last_ts_us)
        ts_us = g->last_ts_us;
    g->last_ts_us = ts_us;
    int64_t export_s = (ts_us + 999999) / 1000000; /* at or after every flow end in it */

    wbuf w = {g->frame + FRAME_HDR, 0, PAYLOAD_MAX};
    switch (g->fmt) {
    case FMT_V5:
        enc_v5(e, export_s, &w);
        break;
    case FMT_V9:
        enc_v9(e, export_s, &w);
        break;
    case FMT_IPFIX:
        enc_ipfix(e, export_s, &w);
        break;
    }

    /* Ethernet: locally administered MACs, the exporter's number in the source. */
    wbuf h = {g->frame, 0, FRAME_HDR};
    put16(&h, 0x0200), put32(&h, 1);                  /* dst 02:00:00:00:00:01 */
    put16(&h, 0x0200), put32(&h, 0x100u + e->domain); /* src 02:00:00:00:01:kk */
    put16(&h, 0x0800);
    size_t ip = h.len;
    put8(&h, 0x45), put8(&h, 0), put16(&h, 20 + 8 + w.len), put16(&h, e->ip_id++);
    put16(&h, 0x4000), put8(&h, 64), put8(&h, 17), put16(&h, 0); /* DF, TTL, UDP, checksum */
    put32(&h, e->addr), put32(&h, COLLECTOR_ADDR);
    patch16(&h, ip + 10, ip_checksum(g->frame + ip, 20));
    put16(&h, EXPORTER_PORT), put16(&h, COLLECTOR_PORT), put16(&h, 8 + w.len);
    put16(&h, 0); /* no UDP checksum: allowed over IPv4 */

    uint8_t rec[16];
    uint32_t caplen = (uint32_t)(FRAME_HDR + w.len);
    le32(rec, (uint32_t)(ts_us / 1000000));
    le32(rec + 4, (uint32_t)(ts_us % 1000000));
    le32(rec + 8, caplen);
    le32(rec + 12, caplen);
    if (fwrite(rec, sizeof rec, 1, g->out) != 1 || fwrite(g->frame, caplen, 1, g->out) != 1)
        return -EIO;

    g->tot.datagrams++;
    if (e->datagrams++ == 0)
        g->tot.exporters++;
    e->seq += g->fmt == FMT_V9 ? 1u : (uint32_t)e->n; /* v9 counts datagrams, v5/IPFIX flows */
    e->n = 0;
    return 0;
}

typedef struct gen_opts {
    gen_format fmt;
    uint64_t flows, seed;
    int64_t start, duration;
    unsigned exporters;
    const char *out;
} gen_opts;

static void totals_line(FILE *f, const char *fmt_name, const gen_totals *t)
{
    fprintf(f,
            "format=%s flows=%" PRIu64 " packets=%" PRIu64 " bytes=%" PRIu64 " datagrams=%" PRIu64
            " exporters=%u first_ms=%" PRId64 " last_ms=%" PRId64 "\n",
            fmt_name, t->flows, t->packets, t->bytes, t->datagrams, t->exporters,
            t->flows ? t->first_ms : 0, t->flows ? t->last_ms : 0);
}

static const char *fmt_name(gen_format f)
{
    return f == FMT_V5 ? "v5" : f == FMT_V9 ? "v9" : "ipfix";
}

/* Writes the capture; prints the totals on stdout. Returns the exit status. */
static int generate(const gen_opts *o)
{
    char tmp[4096];
    gen g;
    model m;
    int rc = 0;

    memset(&g, 0, sizeof g);
    g.fmt = o->fmt;
    g.nex = o->exporters;
    g.tot.first_ms = INT64_MAX;
    g.tot.last_ms = INT64_MIN;
    if (model_init(&m, o->seed) < 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    g.ex = calloc(g.nex, sizeof *g.ex);
    if (!g.ex) {
        model_free(&m);
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    for (unsigned k = 0; k < g.nex; k++) {
        exporter *e = &g.ex[k];
        e->addr = COLLECTOR_ADDR + k; /* 127.0.0.1, .2, ... */
        e->domain = g.fmt == FMT_V5 ? k : k + 1;
        /* up a few days, and not all since the same moment */
        e->boot_ms = o->start * 1000 - (int64_t)(1 + k % 7) * 86400000 - (int64_t)k * 3723456;
        e->ip_id = (uint16_t)(k * 4099u);
    }
    /* Written under a temporary name and renamed at the end, so an interrupted run never
     * leaves a capture that looks complete (bench/ reuses existing captures). */
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", o->out) >= sizeof tmp) {
        fprintf(stderr, PROG ": output path too long\n");
        rc = 2;
        goto done;
    }
    g.out = fopen(tmp, "wb");
    if (!g.out) {
        fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
        rc = 1;
        goto done;
    }
    setvbuf(g.out, NULL, _IOFBF, 1 << 22);
    if (pcap_header(g.out) < 0)
        goto io_error;

    const double span_us = (double)o->duration * 1e6, n = (double)o->flows;
    const int64_t start_us = o->start * 1000000, start_ms = o->start * 1000;
    int64_t next_sweep = start_us + SWEEP_US;
    for (uint64_t i = 0; i < o->flows; i++) {
        /* Flow i ends at start + span * (i + jitter) / n: increasing, evenly spread. */
        int64_t end_us = start_us + (int64_t)(span_us * ((double)i + rng_unit(&m.r)) / n);
        if (end_us >= next_sweep) {
            /* The exporters' flush timers: whoever has waited long enough sends now. */
            for (unsigned k = 0; k < g.nex; k++) {
                exporter *e = &g.ex[k];
                if (e->n && e->oldest_us + FLUSH_AFTER_US <= end_us &&
                    flush(&g, e, e->oldest_us + FLUSH_AFTER_US) < 0)
                    goto io_error;
            }
            next_sweep = end_us + SWEEP_US;
        }
        exporter *e = &g.ex[rng_below(&m.r, g.nex)];
        gen_flow *f = &e->recs[e->n];
        model_flow(&m, end_us / 1000, start_ms, f);
        if (e->n++ == 0)
            e->oldest_us = end_us;
        e->newest_us = end_us;
        g.tot.flows++;
        g.tot.packets += f->packets;
        g.tot.bytes += f->bytes;
        if (f->first_ms < g.tot.first_ms)
            g.tot.first_ms = f->first_ms;
        if (f->last_ms > g.tot.last_ms)
            g.tot.last_ms = f->last_ms;
        if (e->n == capacity(&g, e) && flush(&g, e, end_us) < 0)
            goto io_error;
    }
    /* What is left goes out when each exporter's flush timer fires, but within the period, so
     * that a capture of D seconds lasts D seconds (a replay of it then runs at N / D flows/s). */
    const int64_t end_us = start_us + o->duration * 1000000;
    for (unsigned k = 0; k < g.nex; k++) {
        exporter *e = &g.ex[k];
        int64_t due = e->oldest_us + FLUSH_AFTER_US;
        if (flush(&g, e, due < end_us ? due : end_us) < 0)
            goto io_error;
    }
    if (fflush(g.out) != 0 || ferror(g.out))
        goto io_error;
    if (fclose(g.out) != 0) {
        g.out = NULL;
        goto io_error;
    }
    g.out = NULL;
    if (rename(tmp, o->out) != 0) {
        fprintf(stderr, PROG ": rename %s -> %s: %s\n", tmp, o->out, strerror(errno));
        unlink(tmp);
        rc = 1;
        goto done;
    }
    totals_line(stdout, fmt_name(o->fmt), &g.tot);
    goto done;

io_error:
    fprintf(stderr, PROG ": writing %s: %s\n", tmp, strerror(errno ? errno : EIO));
    if (g.out)
        fclose(g.out);
    unlink(tmp);
    rc = 1;
done:
    free(g.ex);
    model_free(&m);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * --check: reads a capture back and adds up what its export datagrams hold. Independent of the
 * collector's decoders (it knows only what this file writes, but reads templates generically),
 * and every byte goes through the bounded cursor. */
#define CHK_MAX_TEMPLATES 1024
#define CHK_MAX_FIELDS    64

typedef struct chk_template {
    uint32_t exporter, domain;
    uint16_t version, id, nfields;
    field f[CHK_MAX_FIELDS];
} chk_template;

/* One export stream: an exporter address and its v5 engine / v9 source id / IPFIX domain. */
typedef struct chk_stream {
    uint32_t src, domain, next_seq;
} chk_stream;

typedef struct checker {
    chk_template *t;
    size_t nt;
    chk_stream streams[MAX_EXPORTERS + 1];
    size_t nstreams;
    gen_totals tot;
    uint64_t bad, oversize, unordered;
    uint64_t held;     /* data sets before their template */
    uint64_t early;    /* flows that end after the export time of their datagram */
    uint64_t seq_gaps; /* sequence numbers that do not follow on */
    int64_t export_ms; /* of the datagram being read */
    int64_t last_ts_us;
    uint32_t exporters[MAX_EXPORTERS + 1]; /* the distinct sources seen, c.tot.exporters of them */
    int version;                           /* of the first datagram; every datagram must match */
} checker;

static void chk_flow(checker *c, uint64_t packets, uint64_t bytes, int64_t first, int64_t last)
{
    c->tot.flows++;
    c->tot.packets += packets;
    c->tot.bytes += bytes;
    if (first < c->tot.first_ms)
        c->tot.first_ms = first;
    if (last > c->tot.last_ms)
        c->tot.last_ms = last;
    if (last > c->export_ms)
        c->early++;
}

/* Checks that seq follows on from the stream's previous datagram, which counted `advance`
 * (flows, datagrams or records: the sequence's unit in that protocol). */
static bool chk_seq(checker *c, uint32_t src, uint32_t domain, uint32_t seq, uint32_t advance)
{
    chk_stream *st = NULL;
    for (size_t i = 0; i < c->nstreams && !st; i++)
        if (c->streams[i].src == src && c->streams[i].domain == domain)
            st = &c->streams[i];
    if (!st) {
        if (c->nstreams == sizeof c->streams / sizeof c->streams[0])
            return false;
        st = &c->streams[c->nstreams++];
        st->src = src, st->domain = domain, st->next_seq = seq;
    }
    if (seq != st->next_seq)
        c->seq_gaps++;
    st->next_seq = seq + advance;
    return true;
}

static bool chk_v5(checker *c, uint32_t src, ns_cur d)
{
    uint16_t version, count;
    uint32_t up, secs, nsecs, seq;
    uint8_t engine_type, engine_id;
    if (!ns_cur_u16(&d, &version) || !ns_cur_u16(&d, &count) || !ns_cur_u32(&d, &up) ||
        !ns_cur_u32(&d, &secs) || !ns_cur_u32(&d, &nsecs) || !ns_cur_u32(&d, &seq) ||
        !ns_cur_u8(&d, &engine_type) || !ns_cur_u8(&d, &engine_id) || !ns_cur_skip(&d, 2) ||
        d.left != (size_t)count * V5_REC ||
        !chk_seq(c, src, (uint32_t)engine_type << 8 | engine_id, seq, count))
        return false;
    c->export_ms = (int64_t)secs * 1000 + nsecs / 1000000;
    int64_t boot = c->export_ms - up;
    for (uint16_t i = 0; i < count; i++) {
        uint32_t pk = 0, by = 0, first = 0, last = 0;
        /* the length was checked above, so these reads cannot fail */
        if (!ns_cur_skip(&d, 16) || !ns_cur_u32(&d, &pk) || !ns_cur_u32(&d, &by) ||
            !ns_cur_u32(&d, &first) || !ns_cur_u32(&d, &last) || !ns_cur_skip(&d, 16))
            return false;
        chk_flow(c, pk, by, boot + first, boot + last);
    }
    return true;
}

static chk_template *chk_find(checker *c, uint32_t src, uint32_t domain, uint16_t version,
                              uint16_t id)
{
    for (size_t i = 0; i < c->nt; i++)
        if (c->t[i].exporter == src && c->t[i].domain == domain && c->t[i].version == version &&
            c->t[i].id == id)
            return &c->t[i];
    return NULL;
}

static bool chk_template_set(checker *c, uint32_t src, uint32_t domain, uint16_t version,
                             ns_cur set)
{
    while (set.left >= 4) {
        uint16_t id, n;
        ns_cur_u16(&set, &id);
        ns_cur_u16(&set, &n);
        if (n == 0 || n > CHK_MAX_FIELDS)
            return false;
        chk_template *t = chk_find(c, src, domain, version, id);
        if (!t) {
            if (c->nt == CHK_MAX_TEMPLATES)
                return false;
            t = &c->t[c->nt++];
        }
        t->exporter = src, t->domain = domain, t->version = version, t->id = id;
        t->nfields = n;
        for (uint16_t k = 0; k < n; k++) {
            /* an enterprise bit would add 4 bytes; this generator never sets it */
            if (!ns_cur_u16(&set, &t->f[k].id) || !ns_cur_u16(&set, &t->f[k].len) ||
                (t->f[k].id & 0x8000u) || t->f[k].len == 0 || t->f[k].len > 8)
                return false;
        }
    }
    return true;
}

static uint64_t chk_uint(ns_cur *d, uint16_t len)
{
    uint64_t v = 0;
    uint8_t b = 0;
    for (uint16_t i = 0; i < len; i++) { /* the caller checked that len bytes are left */
        if (ns_cur_u8(d, &b))
            v = v << 8 | b;
    }
    return v;
}

static bool chk_data_set(checker *c, const chk_template *t, int64_t boot_ms, ns_cur set)
{
    size_t len = 0;
    for (uint16_t k = 0; k < t->nfields; k++)
        len += t->f[k].len;
    while (set.left >= len) {
        uint64_t pk = 0, by = 0;
        int64_t first = 0, last = 0;
        for (uint16_t k = 0; k < t->nfields; k++) {
            uint64_t v = chk_uint(&set, t->f[k].len);
            switch (t->f[k].id) {
            case 2:
                pk = v;
                break;
            case 1:
                by = v;
                break;
            case 22:
                first = boot_ms + (int64_t)v;
                break;
            case 21:
                last = boot_ms + (int64_t)v;
                break;
            case 152:
                first = (int64_t)v;
                break;
            case 153:
                last = (int64_t)v;
                break;
            }
        }
        chk_flow(c, pk, by, first, last);
    }
    return set.left < 4; /* only padding may be left */
}

/* v9 (version 9) and IPFIX (version 10) share the set walk; they differ in the header. */
static bool chk_v9_ipfix(checker *c, uint32_t src, ns_cur d)
{
    uint16_t version, count_or_len;
    uint32_t up = 0, secs, seq, domain;
    if (!ns_cur_u16(&d, &version) || !ns_cur_u16(&d, &count_or_len))
        return false;
    if (version == 9 && !ns_cur_u32(&d, &up))
        return false;
    if (!ns_cur_u32(&d, &secs) || !ns_cur_u32(&d, &seq) || !ns_cur_u32(&d, &domain))
        return false;
    if (version == 10 && count_or_len != d.left + IPFIX_HDR)
        return false;
    c->export_ms = (int64_t)secs * 1000;
    int64_t boot = c->export_ms - up;
    uint64_t flows_before = c->tot.flows;
    uint16_t tpl_set = version == 9 ? 0 : 2;
    while (d.left > 0) {
        uint16_t id, len;
        ns_cur set;
        if (!ns_cur_u16(&d, &id) || !ns_cur_u16(&d, &len) || len < 4 ||
            !ns_cur_sub(&d, len - 4u, &set))
            return false;
        if (id == tpl_set) {
            if (!chk_template_set(c, src, domain, version, set))
                return false;
        } else if (id >= 256) {
            const chk_template *t = chk_find(c, src, domain, version, id);
            if (!t)
                c->held++;
            else if (!chk_data_set(c, t, boot, set))
                return false;
        } else {
            return false; /* this generator writes no options templates */
        }
    }
    /* v9 numbers datagrams, IPFIX data records */
    return chk_seq(c, src, domain, seq,
                   version == 9 ? 1u : (uint32_t)(c->tot.flows - flows_before));
}

/* Reads path; prints the totals line on stdout. Returns the exit status: 0, or 1 when the
 * file cannot be read or any datagram is not what this generator writes. */
static int check(const char *path)
{
    char errbuf[PCAP_ERRBUF_SIZE];
    struct pcap_pkthdr *ph;
    const u_char *pkt;
    checker c;
    int rc;

    memset(&c, 0, sizeof c);
    c.tot.first_ms = INT64_MAX;
    c.tot.last_ms = INT64_MIN;
    c.version = -1;
    pcap_t *p = pcap_open_offline(path, errbuf);
    if (!p) {
        fprintf(stderr, PROG ": %s\n", errbuf);
        return 1;
    }
    if (pcap_datalink(p) != DLT_EN10MB) {
        fprintf(stderr, PROG ": %s: link type %d, not Ethernet\n", path, pcap_datalink(p));
        pcap_close(p);
        return 1;
    }
    c.t = calloc(CHK_MAX_TEMPLATES, sizeof *c.t);
    if (!c.t) {
        pcap_close(p);
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    while ((rc = pcap_next_ex(p, &ph, &pkt)) == 1) {
        ns_cur d = ns_cur_make(pkt, ph->caplen), ip, udp;
        uint16_t ethertype, iplen, sport, dport, ulen;
        uint8_t vihl, proto;
        uint32_t src, dst;
        int64_t ts = (int64_t)ph->ts.tv_sec * 1000000 + ph->ts.tv_usec;
        if (ts < c.last_ts_us)
            c.unordered++;
        c.last_ts_us = ts;
        c.tot.datagrams++;
        if (ph->caplen != ph->len || !ns_cur_skip(&d, 12) || !ns_cur_u16(&d, &ethertype) ||
            ethertype != 0x0800 || !ns_cur_sub(&d, 20, &ip) || !ns_cur_u8(&ip, &vihl) ||
            vihl != 0x45 || !ns_cur_skip(&ip, 1) || !ns_cur_u16(&ip, &iplen) ||
            iplen != d.left + 20 || !ns_cur_skip(&ip, 5) || !ns_cur_u8(&ip, &proto) ||
            proto != 17 || !ns_cur_skip(&ip, 2) || !ns_cur_u32(&ip, &src) ||
            !ns_cur_u32(&ip, &dst) || ip_checksum(pkt + 14, 20) != 0 || !ns_cur_sub(&d, 8, &udp) ||
            !ns_cur_u16(&udp, &sport) || !ns_cur_u16(&udp, &dport) || !ns_cur_u16(&udp, &ulen) ||
            ulen != d.left + 8) {
            c.bad++;
            continue;
        }
        if (iplen > IP_MAX)
            c.oversize++;
        bool known = false;
        for (unsigned k = 0; k < c.tot.exporters && !known; k++)
            known = c.exporters[k] == src;
        if (!known && c.tot.exporters <= MAX_EXPORTERS)
            c.exporters[c.tot.exporters++] = src;
        ns_cur peek = d;
        uint16_t version = 0;
        ns_cur_u16(&peek, &version);
        if (c.version < 0)
            c.version = version;
        bool ok = false;
        if (version == c.version && version == 5)
            ok = chk_v5(&c, src, d);
        else if (version == c.version && (version == 9 || version == 10))
            ok = chk_v9_ipfix(&c, src, d);
        if (!ok)
            c.bad++;
    }
    if (rc == PCAP_ERROR) {
        fprintf(stderr, PROG ": %s: %s\n", path, pcap_geterr(p));
        c.bad++;
    }
    pcap_close(p);
    free(c.t);
    totals_line(stdout,
                c.version == 5    ? "v5"
                : c.version == 9  ? "v9"
                : c.version == 10 ? "ipfix"
                                  : "?",
                &c.tot);
    if (c.bad || c.oversize || c.unordered || c.held || c.early || c.seq_gaps) {
        fprintf(stderr,
                PROG ": %s: %" PRIu64 " malformed datagrams, %" PRIu64 " over %d bytes, %" PRIu64
                     " out of time order, %" PRIu64 " data sets before their template, %" PRIu64
                     " flows ending after their export time, %" PRIu64 " sequence gaps\n",
                path, c.bad, c.oversize, IP_MAX, c.unordered, c.held, c.early, c.seq_gaps);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Command line. */
static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --format v5|v9|ipfix --flows N --out FILE.pcap [--seed S]\n"
            "                    [--start EPOCH] [--duration SECONDS] [--exporters K]\n"
            "       " PROG " --check FILE.pcap\n"
            "Writes a reproducible capture of N synthetic flows exported as NetFlow v5, v9 or\n"
            "IPFIX datagrams (Ethernet/IPv4/UDP from 127.0.0.1..K to 127.0.0.1:%d).\n"
            "  -f, --format F       v5, v9 or ipfix\n"
            "  -n, --flows N        flow records to write (1 to 10^10)\n"
            "  -o, --out FILE       the pcap to write (replaced atomically)\n"
            "  -s, --seed S         PRNG seed (default 1); same arguments, same bytes\n"
            "      --start EPOCH    start of the flow times, epoch seconds (default %lld,\n"
            "                       2026-01-01T00:00:00Z)\n"
            "      --duration S     seconds the flow end times spread over (default %d,\n"
            "                       at most %d)\n"
            "  -k, --exporters K    exporters 127.0.0.1..127.0.0.K (default %d, at most %d)\n"
            "  -c, --check FILE     read FILE back and print the totals it holds\n"
            "  -h, --help           this text\n"
            "Prints 'format=F flows=N packets=P bytes=B datagrams=D exporters=K first_ms=T0\n"
            "last_ms=T1' on stdout (flow totals as a collector should store them).\n"
            "Exit status: 0 done, 1 runtime error (or --check found a bad datagram), 2 usage.\n",
            COLLECTOR_PORT, (long long)DEFAULT_START, DEFAULT_DURATION, MAX_DURATION,
            DEFAULT_EXPORTERS, MAX_EXPORTERS);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    return 2;
}

/* Parses a whole decimal number in [lo, hi]; false on anything else. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (!s[0] || s[0] == '-' || s[0] == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    enum { O_START = 256, O_DURATION };
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"flows", required_argument, NULL, 'n'},
        {"out", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 's'},
        {"start", required_argument, NULL, O_START},
        {"duration", required_argument, NULL, O_DURATION},
        {"exporters", required_argument, NULL, 'k'},
        {"check", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    gen_opts o = {.seed = 1,
                  .start = DEFAULT_START,
                  .duration = DEFAULT_DURATION,
                  .exporters = DEFAULT_EXPORTERS};
    const char *check_path = NULL;
    bool have_fmt = false;
    uint64_t v;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:n:o:s:k:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (strcmp(optarg, "v5") == 0)
                o.fmt = FMT_V5;
            else if (strcmp(optarg, "v9") == 0)
                o.fmt = FMT_V9;
            else if (strcmp(optarg, "ipfix") == 0)
                o.fmt = FMT_IPFIX;
            else
                return usage_error("--format: expected v5, v9 or ipfix, got '%s'", optarg);
            have_fmt = true;
            break;
        case 'n':
            if (!parse_u64(optarg, 1, 10000000000ull, &o.flows))
                return usage_error("--flows: expected 1 to 10^10, got '%s'", optarg);
            break;
        case 'o':
            o.out = optarg;
            break;
        case 's':
            if (!parse_u64(optarg, 0, UINT64_MAX, &o.seed))
                return usage_error("--seed: expected a whole number, got '%s'", optarg);
            break;
        case O_START:
            /* up to 2100: leaves the 32-bit export seconds room for the duration */
            if (!parse_u64(optarg, (uint64_t)MAX_DURATION, 4102444800ull, &v))
                return usage_error("--start: expected epoch seconds (%d..4102444800), got '%s'",
                                   MAX_DURATION, optarg);
            o.start = (int64_t)v;
            break;
        case O_DURATION:
            if (!parse_u64(optarg, 1, MAX_DURATION, &v))
                return usage_error("--duration: expected 1 to %d seconds, got '%s'", MAX_DURATION,
                                   optarg);
            o.duration = (int64_t)v;
            break;
        case 'k':
            if (!parse_u64(optarg, 1, MAX_EXPORTERS, &v))
                return usage_error("--exporters: expected 1 to %d, got '%s'", MAX_EXPORTERS,
                                   optarg);
            o.exporters = (unsigned)v;
            break;
        case 'c':
            check_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (check_path) {
        if (have_fmt || o.flows || o.out)
            return usage_error("%s", "--check takes no other option");
        return check(check_path);
    }
    if (!have_fmt)
        return usage_error("%s", "--format is required");
    if (!o.flows)
        return usage_error("%s", "--flows is required");
    if (!o.out)
        return usage_error("%s", "--out is required");
    return generate(&o);
}
