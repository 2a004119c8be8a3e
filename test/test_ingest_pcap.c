/* Tests of the pcap/pcapng reader (ingest/pcap.c) against the shared real captures and against
 * small captures crafted here for the edge cases: VLAN stacks, every link type, IPv4 options and
 * fragments, IPv6 extension headers, lengths that lie, snapped and truncated files. Also drives
 * the ns2flows-replay binary against a UDP socket of its own (no daemon). */
#include "ingest/ingest.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Reading a capture into something a test can look at. */

#define MAX_GOT 4096

typedef struct got_dgram {
    int64_t ts_us;
    ns_addr src, dst;
    uint16_t sport, dport;
    size_t len;
    uint8_t head[8]; /* the payload's first bytes (the pointer dies with the next call) */
} got_dgram;

typedef struct got {
    int open_rc;
    int end_rc; /* the ing_pcap_next() result that ended the loop: 0 or an error */
    char err[512];
    ing_pcap_stats st;
    size_t n;
    got_dgram d[MAX_GOT];
} got;

static got g; /* large: static, one per test process */

static void read_capture(const char *path, got *out)
{
    ing_pcap *p = NULL;
    ing_udp u;
    int rc;

    memset(out, 0, sizeof *out);
    out->open_rc = ing_pcap_open(path, &p, out->err, sizeof out->err);
    if (out->open_rc < 0) {
        cr_assert(p == NULL);
        return;
    }
    while ((rc = ing_pcap_next(p, &u, out->err, sizeof out->err)) == 1) {
        if (out->n < MAX_GOT) {
            got_dgram *d = &out->d[out->n];
            d->ts_us = u.ts_us;
            d->src = u.src;
            d->dst = u.dst;
            d->sport = u.sport;
            d->dport = u.dport;
            d->len = u.len;
            memcpy(d->head, u.payload, u.len < sizeof d->head ? u.len : sizeof d->head);
        }
        out->n++;
    }
    out->end_rc = rc;
    /* After the end, further calls keep saying so. */
    cr_assert(eq(int, ing_pcap_next(p, &u, NULL, 0), rc));
    ing_pcap_get_stats(p, &out->st);
    ing_pcap_close(p);
}

/* Every packet lands in exactly one counter. */
static void assert_counters_add_up(const ing_pcap_stats *st)
{
    cr_assert(eq(u64, st->udp + st->skipped + st->fragments + st->malformed, st->packets),
              "udp %llu + skipped %llu + fragments %llu + malformed %llu != packets %llu",
              (unsigned long long)st->udp, (unsigned long long)st->skipped,
              (unsigned long long)st->fragments, (unsigned long long)st->malformed,
              (unsigned long long)st->packets);
}

static void assert_addr(const ns_addr *a, const char *want)
{
    char buf[64];
    ns_addr_fmt(a, buf, sizeof buf);
    cr_assert(strcmp(buf, want) == 0, "address %s, expected %s", buf, want);
}

static const char *fixtures(void)
{
    const char *f = getenv("NS_FIXTURES");
    return f && *f ? f : "/work/shared/fixtures";
}

static char *fixture(const char *rel)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", fixtures(), rel);
    return path;
}

/* ---------------------------------------------------------------------------------------------
 * Real captures. */

Test(ing_pcap_real, netflow_v5_single_datagram)
{
    read_capture(fixture("real/akvorado/netflow__nfv5.pcap"), &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(int, g.end_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 1));
    cr_assert(eq(u8, g.d[0].head[0], 0));
    cr_assert(eq(u8, g.d[0].head[1], 5));
    cr_assert(eq(sz, g.d[0].len, ING_V5_HDR + 29 * ING_V5_REC));
    cr_assert(eq(u16, g.d[0].dport, 9990)); /* INVENTORY.tsv */
    cr_assert(ns_addr_is_v4(&g.d[0].src));
    cr_assert(g.d[0].ts_us > (int64_t)1000000000 * 1000000); /* after 2001 */
    cr_assert(eq(u64, g.st.packets, 1));
    cr_assert(eq(u64, g.st.udp, 1));
    assert_counters_add_up(&g.st);
}

Test(ing_pcap_real, softflowd_v5_to_localhost)
{
    read_capture(fixture("generated/softflowd-v5-tcpreplay_test.pcap"), &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 2));
    for (size_t i = 0; i < g.n; i++) {
        assert_addr(&g.d[i].dst, "127.0.0.1");
        cr_assert(eq(u16, g.d[i].dport, 34631));
        cr_assert(eq(u8, g.d[i].head[1], 5));
        cr_assert(eq(sz, (g.d[i].len - ING_V5_HDR) % ING_V5_REC, 0));
    }
    cr_assert(le(i64, g.d[0].ts_us, g.d[1].ts_us));
    assert_counters_add_up(&g.st);
}

Test(ing_pcap_real, ipv6_transport_gives_ipv6_addresses)
{
    read_capture(
        fixture(
            "real/pmacct-test-automation/104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00.pcap"),
        &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 5));
    cr_assert(eq(u64, g.st.packets, 5));
    for (size_t i = 0; i < g.n; i++) {
        cr_assert(not(ns_addr_is_v4(&g.d[i].src)));
        cr_assert(not(ns_addr_is_v4(&g.d[i].dst)));
        cr_assert(eq(u16, g.d[i].dport, 9992));
        cr_assert(eq(u8, g.d[i].head[1], 10)); /* IPFIX */
    }
}

Test(ing_pcap_real, ordinary_traffic_every_packet_counted)
{
    read_capture(fixture("real/traffic/tcpreplay_test.pcap"), &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(int, g.end_rc, 0), "%s", g.err);
    cr_assert(eq(u64, g.st.packets, 179));
    cr_assert(g.st.skipped > 0); /* TCP, ARP, ... */
    cr_assert(g.st.udp > 0);     /* DNS and friends */
    cr_assert(eq(u64, g.st.udp, g.n));
    assert_counters_add_up(&g.st);
}

Test(ing_pcap_real, missing_file_is_an_errno_with_a_message)
{
    ing_pcap *p = (ing_pcap *)&g; /* any non-NULL value: open must reset it */
    char err[256] = "";
    int rc = ing_pcap_open("/nonexistent/dir/capture.pcap", &p, err, sizeof err);
    cr_assert(eq(int, rc, -ENOENT));
    cr_assert(p == NULL);
    cr_assert(strstr(err, "/nonexistent/dir/capture.pcap") != NULL, "err: %s", err);
    cr_assert(strstr(err, "No such file") != NULL, "err: %s", err);
}

Test(ing_pcap_real, text_file_is_not_a_capture)
{
    read_capture(fixture("INVENTORY.tsv"), &g);
    cr_assert(eq(int, g.open_rc, NS_E_MAGIC));
    cr_assert(strlen(g.err) > 0);
}

/* Every capture listed in INVENTORY.tsv: the frame count is what tshark saw, the datagrams are
 * the sum of its per-version counts (no fixture holds fragments), all to the listed port, and
 * the transport family agrees with the transport_v6 column. */
Test(ing_pcap_real, inventory_frames_and_datagrams)
{
    static const char *const dirs[] = {
        "real/akvorado",
        "real/pmacct-test-automation",
        "real/logstash-codec-netflow/pcap",
        "real/ipfixcol2",
        "real/traffic",
        "generated",
    };
    char line[2048], path[PATH_MAX];
    int files = 0;
    FILE *f = fopen(fixture("INVENTORY.tsv"), "r");
    cr_assert(f != NULL, "cannot read %s", fixture("INVENTORY.tsv"));
    cr_assert(fgets(line, sizeof line, f) != NULL); /* header */
    while (fgets(line, sizeof line, f)) {
        char *save = NULL, *col[10] = {0};
        int ncol = 0;
        for (char *t = strtok_r(line, "\t\n", &save); t && ncol < 10;
             t = strtok_r(NULL, "\t\n", &save))
            col[ncol++] = t;
        if (ncol < 4)
            continue;
        path[0] = 0;
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            snprintf(path, sizeof path, "%s/%s/%s", fixtures(), dirs[i], col[0]);
            if (access(path, R_OK) == 0)
                break;
            path[0] = 0;
        }
        cr_assert(path[0] != 0, "%s: not found under the fixture folders", col[0]);

        unsigned long long frames = strtoull(col[1], NULL, 10), want_udp = 0;
        for (char *v = strchr(col[3], ':'); v; v = strchr(v + 1, ':'))
            want_udp += strtoull(v + 1, NULL, 10);
        long dport = strtol(col[2], NULL, 10);
        long v6 = ncol > 9 ? strtol(col[9], NULL, 10) : -1;

        read_capture(path, &g);
        cr_assert(eq(int, g.open_rc, 0), "%s: %s", col[0], g.err);
        cr_expect(eq(int, g.end_rc, 0), "%s: %s", col[0], g.err);
        cr_expect(eq(u64, g.st.packets, frames), "%s: packets", col[0]);
        cr_expect(eq(u64, g.st.udp, want_udp), "%s: datagrams", col[0]);
        cr_expect(eq(u64, g.st.fragments + g.st.malformed, 0), "%s", col[0]);
        assert_counters_add_up(&g.st);
        for (size_t i = 0; i < g.n && i < MAX_GOT; i++) {
            cr_expect(eq(long, (long)g.d[i].dport, dport), "%s: datagram %zu", col[0], i);
            if (v6 == 0)
                cr_expect(ns_addr_is_v4(&g.d[i].src), "%s: datagram %zu", col[0], i);
            else if (v6 == (long)frames)
                cr_expect(not(ns_addr_is_v4(&g.d[i].src)), "%s: datagram %zu", col[0], i);
        }
        files++;
    }
    fclose(f);
    cr_assert(files > 100);
}

/* ---------------------------------------------------------------------------------------------
 * Temporary files: one per test process, removed by the suite's fini even when a test fails. */

static char tmp_path[64];

static void tmp_remove(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
    tmp_path[0] = 0;
}

static const char *tmp_write(const void *data, size_t len)
{
    if (!tmp_path[0]) {
        snprintf(tmp_path, sizeof tmp_path, "/tmp/ns2flows-test-pcap-XXXXXX");
        int fd = mkstemp(tmp_path);
        cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
        close(fd);
    }
    FILE *f = fopen(tmp_path, "wb");
    cr_assert(f != NULL);
    cr_assert(eq(sz, fwrite(data, 1, len, f), len));
    cr_assert(eq(int, fclose(f), 0));
    return tmp_path;
}

/* ---------------------------------------------------------------------------------------------
 * Truncated copies of a real capture: every cut point, none may crash; what comes before the
 * cut is read unchanged; a cut inside a record is an error with a message. */

static uint8_t file_buf[1 << 16];

static size_t slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "%s", path);
    size_t n = fread(file_buf, 1, sizeof file_buf, f);
    cr_assert(feof(f), "%s: larger than the test's buffer", path);
    fclose(f);
    return n;
}

static void check_every_cut(const char *rel, size_t step)
{
    static got full;
    size_t size = slurp(fixture(rel));
    read_capture(fixture(rel), &full);
    cr_assert(eq(int, full.open_rc, 0));
    for (size_t cut = 0; cut <= size; cut += (cut < 64 || size - cut < 64) ? 1 : step) {
        read_capture(tmp_write(file_buf, cut), &g);
        if (g.open_rc < 0) {
            cr_assert(lt(sz, cut, 24), "cut %zu: open failed: %s", cut, g.err);
            cr_assert(strlen(g.err) > 0);
            continue;
        }
        assert_counters_add_up(&g.st);
        cr_assert(le(sz, g.n, full.n), "cut %zu", cut);
        for (size_t i = 0; i < g.n; i++) {
            cr_assert(eq(sz, g.d[i].len, full.d[i].len), "cut %zu datagram %zu", cut, i);
            cr_assert(eq(i64, g.d[i].ts_us, full.d[i].ts_us));
        }
        if (g.end_rc < 0)
            cr_assert(strlen(g.err) > 0, "cut %zu", cut);
        if (cut == size) {
            cr_assert(eq(int, g.end_rc, 0));
            cr_assert(eq(sz, g.n, full.n));
        }
    }
}

TestSuite(ing_pcap_trunc, .fini = tmp_remove);

Test(ing_pcap_trunc, every_cut_of_a_two_datagram_capture)
{
    check_every_cut("generated/softflowd-v5-tcpreplay_test.pcap", 1);
}

Test(ing_pcap_trunc, cuts_of_a_thirty_datagram_capture)
{
    check_every_cut("generated/pmacctd-sfprobe-tcpreplay_test.pcap", 97);
}

Test(ing_pcap_trunc, cut_inside_a_record_says_truncated)
{
    size_t size = slurp(fixture("real/akvorado/netflow__nfv5.pcap"));
    read_capture(tmp_write(file_buf, size - 10), &g);
    cr_assert(eq(int, g.open_rc, 0));
    cr_assert(eq(int, g.end_rc, NS_E_TRUNC), "%d: %s", g.end_rc, g.err);
    cr_assert(eq(sz, g.n, 0));
    cr_assert(eq(u64, g.st.packets, 0));
}

Test(ing_pcap_trunc, empty_file_is_an_error)
{
    read_capture(tmp_write("", 0), &g);
    cr_assert(lt(int, g.open_rc, 0));
    cr_assert(strlen(g.err) > 0);
}

/* ---------------------------------------------------------------------------------------------
 * Crafted captures. A frame is built with the helpers below, then written as pcap (either byte
 * order, usec or nsec) or pcapng. */

typedef struct frame {
    uint8_t b[1600];
    size_t n;
    size_t wire; /* original length; 0: same as n */
    uint32_t sec, frac;
} frame;

static void put8(frame *f, unsigned v)
{
    cr_assert(lt(sz, f->n, sizeof f->b));
    f->b[f->n++] = (uint8_t)v;
}
static void put16(frame *f, unsigned v)
{
    put8(f, v >> 8);
    put8(f, v & 0xff);
}
static void put32(frame *f, uint32_t v)
{
    put16(f, v >> 16);
    put16(f, v & 0xffff);
}
static void put_le32(frame *f, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        put8(f, (v >> (8 * i)) & 0xff);
}
static void put_bytes(frame *f, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put8(f, p[i]);
}
static void put_fill(frame *f, size_t n, uint8_t start)
{
    for (size_t i = 0; i < n; i++)
        put8(f, (uint8_t)(start + i));
}

static void eth(frame *f, unsigned type)
{
    static const uint8_t macs[12] = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
    put_bytes(f, macs, sizeof macs);
    put16(f, type);
}
static void vlan(frame *f, unsigned vid, unsigned inner)
{
    put16(f, vid);
    put16(f, inner);
}

#define ETH_IP4 0x0800
#define ETH_IP6 0x86dd
#define SRC4    0xc0000201u /* 192.0.2.1 */
#define DST4    0xc6336414u /* 198.51.100.20 */

/* IPv4 header (no options unless ihl > 5) with total length 4*ihl + l4len. */
static void ip4(frame *f, unsigned ihl, unsigned proto, size_t l4len, unsigned flags_off)
{
    put8(f, 0x40 | ihl);
    put8(f, 0);
    put16(f, (unsigned)(ihl * 4 + l4len));
    put16(f, 0x1234);
    put16(f, flags_off);
    put8(f, 64);
    put8(f, proto);
    put16(f, 0); /* checksum: not checked */
    put32(f, SRC4);
    put32(f, DST4);
    for (unsigned i = 5; i < ihl; i++)
        put32(f, 0x01010101u); /* NOP options */
}

static const uint8_t src6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t dst6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

static void ip6(frame *f, unsigned nh, size_t plen)
{
    put32(f, 0x60000000u);
    put16(f, (unsigned)plen);
    put8(f, nh);
    put8(f, 64);
    put_bytes(f, src6, 16);
    put_bytes(f, dst6, 16);
}

/* UDP header claiming ulen, then n payload bytes 0, 1, 2, ... */
static void udp_raw(frame *f, unsigned ulen, size_t n)
{
    put16(f, 40000);
    put16(f, 2055);
    put16(f, ulen);
    put16(f, 0);
    put_fill(f, n, 0);
}
static void udp(frame *f, size_t n)
{
    udp_raw(f, (unsigned)(8 + n), n);
}

/* An ordinary IPv4/UDP datagram with n payload bytes. */
static void ip4_udp(frame *f, size_t n)
{
    ip4(f, 5, 17, 8 + n, 0);
    udp(f, n);
}

static void ip6_udp(frame *f, size_t n)
{
    ip6(f, 17, 8 + n);
    udp(f, n);
}

static uint8_t cap_buf[1 << 16];

typedef struct capbuf {
    size_t n;
    bool be;
} capbuf;

static void cput32(capbuf *c, uint32_t v)
{
    cr_assert(le(sz, c->n + 4, sizeof cap_buf));
    for (int i = 0; i < 4; i++)
        cap_buf[c->n++] = (uint8_t)(c->be ? v >> (24 - 8 * i) : v >> (8 * i));
}
static void cput16(capbuf *c, unsigned v)
{
    cr_assert(le(sz, c->n + 2, sizeof cap_buf));
    cap_buf[c->n++] = (uint8_t)(c->be ? v >> 8 : v);
    cap_buf[c->n++] = (uint8_t)(c->be ? v : v >> 8);
}
static void cput(capbuf *c, const uint8_t *p, size_t n)
{
    cr_assert(le(sz, c->n + n, sizeof cap_buf));
    memcpy(cap_buf + c->n, p, n);
    c->n += n;
}

/* Writes a classic pcap file of nf frames with the given link type; returns its path. */
static const char *write_pcap_opts(uint32_t linktype, const frame *fr, size_t nf, bool be,
                                   bool nsec)
{
    capbuf c = {0, be};
    cput32(&c, nsec ? 0xa1b23c4du : 0xa1b2c3d4u);
    cput16(&c, 2);
    cput16(&c, 4);
    cput32(&c, 0);
    cput32(&c, 0);
    cput32(&c, 65535);
    cput32(&c, linktype);
    for (size_t i = 0; i < nf; i++) {
        cput32(&c, fr[i].sec ? fr[i].sec : 1700000000u);
        cput32(&c, fr[i].frac);
        cput32(&c, (uint32_t)fr[i].n);
        cput32(&c, (uint32_t)(fr[i].wire ? fr[i].wire : fr[i].n));
        cput(&c, fr[i].b, fr[i].n);
    }
    return tmp_write(cap_buf, c.n);
}

static const char *write_pcap(uint32_t linktype, const frame *fr, size_t nf)
{
    return write_pcap_opts(linktype, fr, nf, false, false);
}

/* A pcapng file: section header, one interface (default microsecond resolution), and one
 * enhanced packet block per frame. */
static const char *write_pcapng(uint16_t linktype, const frame *fr, size_t nf)
{
    static const uint8_t zero[4] = {0};
    capbuf c = {0, false};
    cput32(&c, 0x0a0d0d0au);
    cput32(&c, 28);
    cput32(&c, 0x1a2b3c4du);
    cput16(&c, 1);
    cput16(&c, 0);
    cput32(&c, 0xffffffffu); /* section length unknown */
    cput32(&c, 0xffffffffu);
    cput32(&c, 28);
    cput32(&c, 1); /* IDB */
    cput32(&c, 20);
    cput16(&c, linktype);
    cput16(&c, 0);
    cput32(&c, 65535);
    cput32(&c, 20);
    for (size_t i = 0; i < nf; i++) {
        size_t pad = (4 - fr[i].n % 4) % 4;
        uint64_t ts = (uint64_t)(fr[i].sec ? fr[i].sec : 1700000000u) * 1000000u + fr[i].frac;
        uint32_t blen = (uint32_t)(32 + fr[i].n + pad);
        cput32(&c, 6); /* EPB */
        cput32(&c, blen);
        cput32(&c, 0);
        cput32(&c, (uint32_t)(ts >> 32));
        cput32(&c, (uint32_t)ts);
        cput32(&c, (uint32_t)fr[i].n);
        cput32(&c, (uint32_t)(fr[i].wire ? fr[i].wire : fr[i].n));
        cput(&c, fr[i].b, fr[i].n);
        cput(&c, zero, pad);
        cput32(&c, blen);
    }
    return tmp_write(cap_buf, c.n);
}

static frame fr[8];

static void crafted_init(void)
{
    memset(fr, 0, sizeof fr);
}

TestSuite(ing_pcap_crafted, .init = crafted_init, .fini = tmp_remove);

/* One frame through the reader; expect exactly one of the outcomes. */
enum { WANT_UDP, WANT_SKIP, WANT_FRAG, WANT_BAD };

static void expect_one(const char *path, int want)
{
    read_capture(path, &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(int, g.end_rc, 0), "%s", g.err);
    cr_assert(eq(u64, g.st.packets, 1));
    cr_assert(eq(u64, g.st.udp, want == WANT_UDP));
    cr_assert(eq(u64, g.st.skipped, want == WANT_SKIP));
    cr_assert(eq(u64, g.st.fragments, want == WANT_FRAG));
    cr_assert(eq(u64, g.st.malformed, want == WANT_BAD));
    cr_assert(eq(sz, g.n, want == WANT_UDP));
}

static void assert_v4_datagram(size_t len)
{
    cr_assert(eq(sz, g.n, 1));
    assert_addr(&g.d[0].src, "192.0.2.1");
    assert_addr(&g.d[0].dst, "198.51.100.20");
    cr_assert(eq(u16, g.d[0].sport, 40000));
    cr_assert(eq(u16, g.d[0].dport, 2055));
    cr_assert(eq(sz, g.d[0].len, len));
    for (size_t i = 0; i < len && i < sizeof g.d[0].head; i++)
        cr_assert(eq(u8, g.d[0].head[i], (uint8_t)i));
}

static void assert_v6_datagram(size_t len)
{
    cr_assert(eq(sz, g.n, 1));
    assert_addr(&g.d[0].src, "2001:db8::1");
    assert_addr(&g.d[0].dst, "2001:db8::2");
    cr_assert(eq(u16, g.d[0].dport, 2055));
    cr_assert(eq(sz, g.d[0].len, len));
}

Test(ing_pcap_crafted, plain_ethernet_ipv4_udp)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 40);
    fr[0].frac = 250000;
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v4_datagram(40);
    cr_assert(eq(i64, g.d[0].ts_us, INT64_C(1700000000250000)));
}

Test(ing_pcap_crafted, big_endian_file)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 12);
    fr[0].frac = 7;
    expect_one(write_pcap_opts(1, fr, 1, true, false), WANT_UDP);
    assert_v4_datagram(12);
    cr_assert(eq(i64, g.d[0].ts_us, INT64_C(1700000000000007)));
}

Test(ing_pcap_crafted, nanosecond_file_gives_microseconds)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 12);
    fr[0].frac = 123456789; /* ns */
    expect_one(write_pcap_opts(1, fr, 1, false, true), WANT_UDP);
    cr_assert(eq(i64, g.d[0].ts_us, INT64_C(1700000000123456)));
}

Test(ing_pcap_crafted, pcapng_file)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 21); /* odd length: the block is padded */
    fr[0].frac = 5;
    eth(&fr[1], ETH_IP6);
    ip6_udp(&fr[1], 3);
    read_capture(write_pcapng(1, fr, 2), &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 2));
    cr_assert(eq(sz, g.d[0].len, 21));
    cr_assert(eq(i64, g.d[0].ts_us, INT64_C(1700000000000005)));
    assert_addr(&g.d[1].src, "2001:db8::1");
    cr_assert(eq(sz, g.d[1].len, 3));
}

Test(ing_pcap_crafted, vlan_tag)
{
    eth(&fr[0], 0x8100);
    vlan(&fr[0], 100, ETH_IP4);
    ip4_udp(&fr[0], 30);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v4_datagram(30);
}

Test(ing_pcap_crafted, qinq_tags_stacked)
{
    eth(&fr[0], 0x88a8);
    vlan(&fr[0], 10, 0x8100);
    vlan(&fr[0], 20, ETH_IP4);
    ip4_udp(&fr[0], 30);
    eth(&fr[1], 0x9100);
    vlan(&fr[1], 10, 0x8100);
    vlan(&fr[1], 20, ETH_IP6);
    ip6_udp(&fr[1], 31);
    read_capture(write_pcap(1, fr, 2), &g);
    cr_assert(eq(sz, g.n, 2));
    cr_assert(eq(sz, g.d[0].len, 30));
    cr_assert(eq(sz, g.d[1].len, 31));
    assert_addr(&g.d[1].dst, "2001:db8::2");
}

Test(ing_pcap_crafted, too_many_vlan_tags_is_malformed)
{
    eth(&fr[0], 0x8100);
    for (int i = 0; i < 8; i++)
        vlan(&fr[0], 1, 0x8100);
    vlan(&fr[0], 1, ETH_IP4);
    ip4_udp(&fr[0], 4);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, vlan_tag_cut_short_is_malformed)
{
    eth(&fr[0], 0x8100);
    put16(&fr[0], 100);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, ethernet_padding_is_not_payload)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 4); /* 46 bytes: padded to the 60-byte minimum frame */
    put_fill(&fr[0], 60 - fr[0].n, 0xee);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v4_datagram(4);
}

Test(ing_pcap_crafted, ipv4_options_are_stepped_over)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 7, 17, 8 + 16, 0);
    udp(&fr[0], 16);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v4_datagram(16);
}

Test(ing_pcap_crafted, ipv4_more_fragments_is_counted_as_fragment)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 8 + 16, 0x2000); /* MF, offset 0: first fragment */
    udp_raw(&fr[0], 8 + 3000, 16);
    expect_one(write_pcap(1, fr, 1), WANT_FRAG);
}

Test(ing_pcap_crafted, ipv4_later_fragment_is_counted_as_fragment)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 24, 185); /* offset 185*8, no MF: the last fragment */
    put_fill(&fr[0], 24, 0);
    expect_one(write_pcap(1, fr, 1), WANT_FRAG);
}

Test(ing_pcap_crafted, ipv4_dont_fragment_is_whole)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 8 + 10, 0x4000); /* DF */
    udp(&fr[0], 10);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
}

Test(ing_pcap_crafted, tcp_fragment_is_skipped_not_a_udp_fragment)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 6, 24, 0x2000);
    put_fill(&fr[0], 24, 0);
    expect_one(write_pcap(1, fr, 1), WANT_SKIP);
}

Test(ing_pcap_crafted, udp_length_beyond_captured_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 8 + 20, 0);
    udp_raw(&fr[0], 8 + 200, 20); /* UDP claims 200 bytes, IP and the frame hold 20 */
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, udp_length_below_header_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 8 + 4, 0);
    udp_raw(&fr[0], 7, 4);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, udp_header_cut_short_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 6, 0);
    put16(&fr[0], 40000);
    put16(&fr[0], 2055);
    put16(&fr[0], 8);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, ipv4_total_length_beyond_frame_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4(&fr[0], 5, 17, 8 + 500, 0); /* says 528 bytes; 48 follow and the wire had no more */
    udp(&fr[0], 20);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, ipv4_bad_ihl_or_version_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 8);
    fr[0].b[14] = 0x44; /* IHL 4 */
    eth(&fr[1], ETH_IP4);
    ip4_udp(&fr[1], 8);
    fr[1].b[14] = 0x65; /* version 6 under the IPv4 EtherType */
    eth(&fr[2], ETH_IP4);
    ip4(&fr[2], 5, 17, 8, 0);
    fr[2].b[17] = 10; /* total length below the header length */
    put_fill(&fr[2], 8, 0);
    read_capture(write_pcap(1, fr, 3), &g);
    cr_assert(eq(u64, g.st.malformed, 3));
    cr_assert(eq(sz, g.n, 0));
}

Test(ing_pcap_crafted, snapped_datagram_is_clamped_to_what_was_captured)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 400);
    fr[0].wire = fr[0].n;
    fr[0].n = 14 + 20 + 8 + 50; /* snap length cut the payload at 50 bytes */
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v4_datagram(50);
}

Test(ing_pcap_crafted, snapped_inside_the_ip_header_is_malformed)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 400);
    fr[0].wire = fr[0].n;
    fr[0].n = 14 + 12;
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, not_ip_is_skipped)
{
    eth(&fr[0], 0x0806); /* ARP */
    put_fill(&fr[0], 28, 0);
    eth(&fr[1], 46); /* 802.3 length field: LLC */
    put_fill(&fr[1], 46, 0);
    eth(&fr[2], ETH_IP4);
    ip4(&fr[2], 5, 6, 20, 0); /* TCP */
    put_fill(&fr[2], 20, 0);
    eth(&fr[3], ETH_IP6);
    ip6(&fr[3], 58, 8); /* ICMPv6 */
    put_fill(&fr[3], 8, 0);
    read_capture(write_pcap(1, fr, 4), &g);
    cr_assert(eq(u64, g.st.packets, 4));
    cr_assert(eq(u64, g.st.skipped, 4));
}

Test(ing_pcap_crafted, runt_frame_is_malformed)
{
    put_fill(&fr[0], 10, 0);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, ipv6_extension_headers_are_walked)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 0, 8 + 16 + 8 + 12 + 8 + 10);
    put8(&fr[0], 60); /* hop-by-hop, 8 bytes, next: destination options */
    put8(&fr[0], 0);
    put_fill(&fr[0], 6, 0);
    put8(&fr[0], 43); /* destination options, 16 bytes, next: routing */
    put8(&fr[0], 1);
    put_fill(&fr[0], 14, 0);
    put8(&fr[0], 51); /* routing, 8 bytes, next: AH */
    put8(&fr[0], 0);
    put_fill(&fr[0], 6, 0);
    put8(&fr[0], 17); /* AH: (1 + 2) * 4 = 12 bytes, next: UDP */
    put8(&fr[0], 1);
    put_fill(&fr[0], 10, 0);
    udp(&fr[0], 10);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v6_datagram(10);
}

Test(ing_pcap_crafted, ipv6_extension_header_beyond_payload_is_malformed)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 60, 8);
    put8(&fr[0], 17);
    put8(&fr[0], 4); /* claims 40 bytes in an 8-byte payload */
    put_fill(&fr[0], 6, 0);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

static void ip6_frag_header(frame *f, unsigned next, unsigned offset8, bool more)
{
    put8(f, next);
    put8(f, 0);
    put16(f, offset8 << 3 | (more ? 1u : 0u));
    put32(f, 0xabcdef01u);
}

Test(ing_pcap_crafted, ipv6_first_fragment_is_counted_as_fragment)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 44, 8 + 8 + 16);
    ip6_frag_header(&fr[0], 17, 0, true);
    udp_raw(&fr[0], 3000, 16);
    expect_one(write_pcap(1, fr, 1), WANT_FRAG);
}

Test(ing_pcap_crafted, ipv6_later_fragment_is_counted_as_fragment)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 44, 8 + 24);
    ip6_frag_header(&fr[0], 17, 181, false);
    put_fill(&fr[0], 24, 0);
    expect_one(write_pcap(1, fr, 1), WANT_FRAG);
}

Test(ing_pcap_crafted, ipv6_atomic_fragment_is_a_whole_datagram)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 44, 8 + 8 + 6);
    ip6_frag_header(&fr[0], 17, 0, false); /* RFC 6946: offset 0, M 0 */
    udp(&fr[0], 6);
    expect_one(write_pcap(1, fr, 1), WANT_UDP);
    assert_v6_datagram(6);
}

Test(ing_pcap_crafted, ipv6_payload_length_beyond_frame_is_malformed)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 17, 8 + 300);
    udp(&fr[0], 10);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, ipv6_udp_length_beyond_payload_is_malformed)
{
    eth(&fr[0], ETH_IP6);
    ip6(&fr[0], 17, 8 + 10);
    udp_raw(&fr[0], 8 + 11, 10);
    expect_one(write_pcap(1, fr, 1), WANT_BAD);
}

Test(ing_pcap_crafted, linux_sll)
{
    put16(&fr[0], 0); /* packet type: to us */
    put16(&fr[0], 1); /* ARPHRD_ETHER */
    put16(&fr[0], 6); /* address length */
    put_fill(&fr[0], 8, 0);
    put16(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 9);
    expect_one(write_pcap(113, fr, 1), WANT_UDP);
    assert_v4_datagram(9);
}

Test(ing_pcap_crafted, linux_sll2)
{
    put16(&fr[0], ETH_IP6);
    put16(&fr[0], 0);
    put32(&fr[0], 3); /* interface index */
    put16(&fr[0], 1); /* ARPHRD_ETHER */
    put8(&fr[0], 0);  /* packet type */
    put8(&fr[0], 6);  /* address length */
    put_fill(&fr[0], 8, 0);
    ip6_udp(&fr[0], 9);
    expect_one(write_pcap(276, fr, 1), WANT_UDP);
    assert_v6_datagram(9);
}

Test(ing_pcap_crafted, raw_ip_both_versions)
{
    ip4_udp(&fr[0], 5);
    ip6_udp(&fr[1], 6);
    put8(&fr[2], 0x50); /* neither version */
    put_fill(&fr[2], 30, 0);
    read_capture(write_pcap(101, fr, 3), &g); /* LINKTYPE_RAW */
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 2));
    cr_assert(eq(sz, g.d[0].len, 5));
    assert_addr(&g.d[1].src, "2001:db8::1");
    cr_assert(eq(u64, g.st.malformed, 1));
}

Test(ing_pcap_crafted, linktype_ipv4_and_ipv6)
{
    ip4_udp(&fr[0], 5);
    expect_one(write_pcap(228, fr, 1), WANT_UDP);
    assert_v4_datagram(5);
    ip6_udp(&fr[1], 7);
    expect_one(write_pcap(229, fr + 1, 1), WANT_UDP);
    assert_v6_datagram(7);
    expect_one(write_pcap(229, fr, 1), WANT_BAD); /* IPv4 bytes under LINKTYPE_IPV6 */
}

Test(ing_pcap_crafted, bsd_null_loopback_in_either_byte_order)
{
    put_le32(&fr[0], 2); /* AF_INET written by a little-endian host */
    ip4_udp(&fr[0], 5);
    put32(&fr[1], 2); /* ... by a big-endian host */
    ip4_udp(&fr[1], 6);
    put_le32(&fr[2], 30); /* AF_INET6 on macOS */
    ip6_udp(&fr[2], 7);
    put_le32(&fr[3], 28); /* AF_INET6 on FreeBSD */
    ip6_udp(&fr[3], 8);
    put_le32(&fr[4], 7); /* some other family */
    put_fill(&fr[4], 20, 0);
    put8(&fr[5], 2); /* header cut short */
    read_capture(write_pcap(0, fr, 6), &g);
    cr_assert(eq(int, g.open_rc, 0), "%s", g.err);
    cr_assert(eq(sz, g.n, 4));
    for (size_t i = 0; i < 4; i++)
        cr_assert(eq(sz, g.d[i].len, 5 + i));
    cr_assert(eq(u64, g.st.skipped, 1));
    cr_assert(eq(u64, g.st.malformed, 1));
}

Test(ing_pcap_crafted, openbsd_loop)
{
    put32(&fr[0], 24); /* AF_INET6 on OpenBSD, network order */
    ip6_udp(&fr[0], 11);
    expect_one(write_pcap(108, fr, 1), WANT_UDP);
    assert_v6_datagram(11);
}

Test(ing_pcap_crafted, unsupported_link_type_is_refused_at_open)
{
    put_fill(&fr[0], 40, 0);
    read_capture(write_pcap(105, fr, 1), &g); /* 802.11 */
    cr_assert(eq(int, g.open_rc, NS_E_VERSION));
    cr_assert(strstr(g.err, "link type 105") != NULL, "err: %s", g.err);
}

Test(ing_pcap_crafted, bad_record_length_is_an_error_after_the_good_packets)
{
    eth(&fr[0], ETH_IP4);
    ip4_udp(&fr[0], 10);
    const char *path = write_pcap(1, fr, 1);
    (void)path;
    /* Append a record header claiming a 300 MB packet: libpcap refuses it. */
    capbuf c = {0, false};
    size_t size = slurp(tmp_path);
    memcpy(cap_buf, file_buf, size);
    c.n = size;
    cput32(&c, 1700000001u);
    cput32(&c, 0);
    cput32(&c, 300000000u);
    cput32(&c, 300000000u);
    read_capture(tmp_write(cap_buf, c.n), &g);
    cr_assert(eq(sz, g.n, 1));
    cr_assert(lt(int, g.end_rc, 0));
    cr_assert(strlen(g.err) > 0);
}

Test(ing_pcap_crafted, null_handles_are_fine)
{
    ing_pcap_stats st;
    memset(&st, 0xff, sizeof st);
    ing_pcap_get_stats(NULL, &st);
    cr_assert(eq(u64, st.packets, 0));
    ing_pcap_close(NULL);
}

/* ---------------------------------------------------------------------------------------------
 * ns2flows-replay, against a UDP socket of our own. Skipped when the binary was not built. */

static char replay_bin[PATH_MAX];

static bool find_replay(void)
{
    const char *dir = getenv("NS_BIN");
    char self[PATH_MAX];
    if (dir && *dir) {
        snprintf(replay_bin, sizeof replay_bin, "%s/ns2flows-replay", dir);
    } else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            return false;
        self[n] = 0; /* build/test/test_ingest_pcap → build/bin/ns2flows-replay */
        snprintf(replay_bin, sizeof replay_bin, "%s/../bin/ns2flows-replay", dirname(self));
    }
    return access(replay_bin, X_OK) == 0;
}

/* Runs the replay with args (a shell fragment of our own making); stdout (and stderr too if
 * with_stderr) goes into out. Returns the exit status. */
static int run_replay(const char *args, bool with_stderr, char *out, size_t cap)
{
    char cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof cmd, "'%s' %s%s", replay_bin, args, with_stderr ? " 2>&1" : "");
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    bool exited = WIFEXITED(st);
    cr_assert(exited, "%s: did not exit normally", cmd);
    return WEXITSTATUS(st);
}

static int timeout_ms(int base)
{
    const char *m = getenv("NS_TEST_TIMEOUT_MULTIPLIER");
    int k = m ? atoi(m) : 1;
    return base * (k > 0 ? k : 1);
}

static int udp_sink(uint16_t *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(eq(int, bind(fd, (struct sockaddr *)&sin, sizeof sin), 0));
    cr_assert(eq(int, getsockname(fd, (struct sockaddr *)&sin, &len), 0));
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Receives one datagram (or returns -1 after the timeout); *sport gets its source port. */
static ssize_t sink_recv(int fd, uint8_t *buf, size_t cap, uint16_t *sport)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    if (poll(&pfd, 1, timeout_ms(2000)) != 1)
        return -1;
    ssize_t n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)&from, &flen);
    *sport = ntohs(from.sin_port);
    return n;
}

Test(replay_tool, help_exits_zero)
{
    char out[4096];
    if (!find_replay())
        cr_skip_test("%s not built", replay_bin);
    cr_assert(eq(int, run_replay("--help", false, out, sizeof out), 0));
    cr_assert(strstr(out, "--to") != NULL);
}

Test(replay_tool, usage_errors_exit_two_with_a_message)
{
    char out[4096], args[PATH_MAX + 64];
    if (!find_replay())
        cr_skip_test("%s not built", replay_bin);
    cr_assert(eq(int, run_replay("", true, out, sizeof out), 2));
    cr_assert(strstr(out, "no capture") != NULL, "%s", out);
    snprintf(args, sizeof args, "'%s'", fixture("real/akvorado/netflow__nfv5.pcap"));
    cr_assert(eq(int, run_replay(args, true, out, sizeof out), 2));
    cr_assert(strstr(out, "--to") != NULL, "%s", out);
    snprintf(args, sizeof args, "x.pcap --to 127.0.0.1:2055 --speed 2 --max");
    cr_assert(eq(int, run_replay(args, true, out, sizeof out), 2));
    snprintf(args, sizeof args, "x.pcap --to 127.0.0.1:2055 --speed -1");
    cr_assert(eq(int, run_replay(args, true, out, sizeof out), 2));
    snprintf(args, sizeof args, "x.pcap --to 2001:db8::1:2055");
    cr_assert(eq(int, run_replay(args, true, out, sizeof out), 2));
}

Test(replay_tool, missing_capture_exits_one)
{
    char out[4096];
    if (!find_replay())
        cr_skip_test("%s not built", replay_bin);
    cr_assert(
        eq(int, run_replay("/nonexistent.pcap --to 127.0.0.1:9 -q", true, out, sizeof out), 1));
    cr_assert(strstr(out, "/nonexistent.pcap") != NULL, "%s", out);
}

Test(replay_tool, sends_the_v5_datagram_in_every_loop_from_one_socket)
{
    char out[4096], args[PATH_MAX + 128];
    uint8_t buf[2048];
    uint16_t port, sport[3];
    if (!find_replay())
        cr_skip_test("%s not built", replay_bin);
    int fd = udp_sink(&port);
    snprintf(args, sizeof args, "'%s' --to 127.0.0.1:%u --max --loop 3 --quiet",
             fixture("real/akvorado/netflow__nfv5.pcap"), port);
    cr_assert(eq(int, run_replay(args, false, out, sizeof out), 0));
    const char *want = "replay: sent 3 datagrams, 4248 bytes (skipped 0 non-UDP packets, 0 "
                       "fragments, 0 malformed)\n";
    cr_assert(strcmp(out, want) == 0, "stdout: %s", out);
    for (int i = 0; i < 3; i++) {
        ssize_t n = sink_recv(fd, buf, sizeof buf, &sport[i]);
        cr_assert(eq(i64, (int64_t)n, ING_V5_HDR + 29 * ING_V5_REC), "datagram %d", i);
        cr_assert(eq(u8, buf[1], 5));
    }
    cr_assert(eq(u16, sport[0], sport[1])); /* one exporter, one socket */
    cr_assert(eq(u16, sport[1], sport[2]));
    close(fd);
}

Test(replay_tool, one_socket_per_exporter_and_dport_filter)
{
    /* tcpreplay_test.pcap: 14 DNS datagrams (to port 53) from 12 (address, port) exporters. */
    char out[4096], args[PATH_MAX + 128];
    uint8_t buf[2048];
    uint16_t port, sports[32];
    size_t nports = 0;
    if (!find_replay())
        cr_skip_test("%s not built", replay_bin);
    int fd = udp_sink(&port);
    snprintf(args, sizeof args, "'%s' --to 127.0.0.1:%u --speed 1000 --dport 53 -q",
             fixture("real/traffic/tcpreplay_test.pcap"), port);
    cr_assert(eq(int, run_replay(args, false, out, sizeof out), 0));
    cr_assert(strstr(out, "replay: sent 14 datagrams") == out, "%s", out);
    cr_assert(strstr(out, "(skipped 151 non-UDP packets, 0 fragments, 0 malformed)") != NULL, "%s",
              out);
    for (int i = 0; i < 14; i++) {
        uint16_t sp = 0;
        ssize_t n = sink_recv(fd, buf, sizeof buf, &sp);
        cr_assert(ge(i64, (int64_t)n, 0), "datagram %d not received", i);
        bool seen = false;
        for (size_t j = 0; j < nports; j++)
            seen |= sports[j] == sp;
        if (!seen)
            sports[nports++] = sp;
    }
    cr_assert(eq(sz, nports, 12));
    close(fd);
}
