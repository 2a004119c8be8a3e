/* Integration: hostile exporters against a running daemon over loopback — template floods over
 * thousands of template and source IDs, huge and zero field lengths, withdrawal loops, sequence
 * chaos, more senders than max_exporters, data for templates that never come, sFlow with lying
 * lengths. Memory stays bounded (VmRSS against a baseline taken in the same run), the counters
 * say what happened, and a well-formed stream sent afterwards is stored whole. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

/* ---- a byte builder for datagrams ---- */
typedef struct pkt {
    uint8_t b[65536];
    size_t n;
} pkt;

static void p16(pkt *p, unsigned v)
{
    p->b[p->n++] = (uint8_t)(v >> 8);
    p->b[p->n++] = (uint8_t)v;
}

static void p32(pkt *p, uint32_t v)
{
    p16(p, v >> 16);
    p16(p, v & 0xffff);
}

static void put16_at(pkt *p, size_t at, unsigned v)
{
    p->b[at] = (uint8_t)(v >> 8);
    p->b[at + 1] = (uint8_t)v;
}

/* Sends p from 127.0.0.0/8 address src (host order) to a daemon port. */
static void send_from(uint32_t src, uint16_t port, const pkt *p)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(src)};
    struct sockaddr_in to = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(fd >= 0);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind %08x", src);
    cr_assert(sendto(fd, p->b, p->n, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)p->n);
    close(fd);
}

#define LO(x) (0x7f000000u | (x)) /* 127.0.0.0/8: every address is local on Linux */

static void v9_header(pkt *p, uint32_t seq, uint32_t source_id)
{
    p->n = 0;
    p16(p, 9);
    p16(p, 0); /* count: not trusted by the decoder */
    p32(p, 1000);
    p32(p, 1700000000u);
    p32(p, seq);
    p32(p, source_id);
}

static void ipfix_header(pkt *p, uint32_t seq, uint32_t domain)
{
    p->n = 0;
    p16(p, 10);
    p16(p, 0); /* length, set by ipfix_done */
    p32(p, 1700000000u);
    p32(p, seq);
    p32(p, domain);
}

static void ipfix_done(pkt *p)
{
    put16_at(p, 2, (unsigned)p->n);
}

/* ---- the daemon's side ---- */
static uint64_t vm_rss_kb(pid_t pid)
{
    char path[64], line[256];
    uint64_t kb = 0;
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static uint64_t status_u64(const it_daemon *d, const char *section, const char *key)
{
    char *body;
    uint64_t v = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
    const char *s = section ? strstr(body, section) : body;
    cr_assert(s && it_json_u64(s, key, &v), "%s %s in %s", section ? section : "", key, body);
    free(body);
    return v;
}

/* Waits until the listener has taken every datagram sent so far (or 10 s pass). Senders pause
 * on it every 32 datagrams, so a receive buffer capped by net.core.rmem_max (not root) does not
 * overflow and every count below stays exact. */
static void settle(const it_daemon *d, uint64_t sent)
{
    for (int w = 0; w < it_ms(10000); w += 20) {
        if (status_u64(d, "\"ingest\":", "datagrams") >= sent)
            return;
        it_sleep_ms(20);
    }
}

/* The /api/v1/exporters entry of addr (a malloc'd copy cut before the next entry), or NULL. */
static char *exporter_entry(const it_daemon *d, const char *addr)
{
    char *body, pat[80];
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/exporters", &body), 200));
    snprintf(pat, sizeof pat, "{\"address\":\"%s\"", addr);
    char *s = strstr(body, pat), *out = NULL;
    if (s) {
        char *next = strstr(s + 1, "{\"address\":");
        if (next)
            *next = 0;
        out = strdup(s);
    }
    free(body);
    return out;
}

static uint64_t exporter_u64(const it_daemon *d, const char *addr, const char *key)
{
    uint64_t v = 0;
    char *e = exporter_entry(d, addr);
    cr_assert(e != NULL, "exporter %s not listed", addr);
    const char *k = strchr(key, '.');
    if (k) { /* "templates.known": the key inside that object */
        char obj[64];
        snprintf(obj, sizeof obj, "\"%.*s\":{", (int)(k - key), key);
        const char *o = strstr(e, obj);
        cr_assert(o && it_json_u64(o, k + 1, &v), "%s in %s", key, e);
    } else {
        cr_assert(it_json_u64(e, key, &v), "%s in %s", key, e);
    }
    free(e);
    return v;
}

static size_t count_exporters(const it_daemon *d)
{
    char *body;
    size_t n = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/exporters", &body), 200));
    for (const char *s = body; (s = strstr(s, "{\"address\":")) != NULL; s++)
        n++;
    free(body);
    return n;
}

static uint64_t summary_flows(const it_daemon *d)
{
    char *body;
    uint64_t f = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/summary", &body), 200));
    it_json_u64(body, "flows", &f);
    free(body);
    return f;
}

static uint32_t rng = 2463534242u;
static uint32_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

Test(it_hostile, floods_stay_bounded_and_counted, .timeout = 180)
{
    char conf[] = "/tmp/ns2flows-it-conf-XXXXXX", pcap[600];
    int fd = mkstemp(conf);
    cr_assert(fd >= 0);
    const char *text = "max_exporters = 64\n";
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, NULL, extra));
    uint64_t sent = 0;
    pkt *p = malloc(sizeof *p);

    /* baseline: one well-formed capture, so the good exporter (127.0.0.1) is in the table */
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    cr_assert(eq(int, it_replay(&d, pcap), 0));
    for (int w = 0; w < it_ms(10000) && summary_flows(&d) < 29; w += 20)
        it_sleep_ms(20);
    cr_assert(eq(u64, summary_flows(&d), 29));
    sent = status_u64(&d, "\"ingest\":", "datagrams");
    uint64_t rss0 = vm_rss_kb(d.pid);

    /* 1. template flood: 200 source IDs x 60 fresh template IDs from 127.0.0.2 (v9) */
    uint64_t flood = 0;
    for (uint32_t src = 0; src < 200; src++) {
        v9_header(p, src, src);
        size_t set = p->n;
        p16(p, 0);
        p16(p, 0);
        for (unsigned t = 0; t < 60; t++) {
            p16(p, 256 + src * 60 + t);
            p16(p, 2);
            p16(p, 1); /* IN_BYTES */
            p16(p, 4);
            p16(p, 2); /* IN_PKTS */
            p16(p, 4);
            flood++;
        }
        put16_at(p, set + 2, (unsigned)(p->n - set));
        send_from(LO(2), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    uint64_t known = exporter_u64(&d, "127.0.0.2", "templates.known");
    uint64_t refused = exporter_u64(&d, "127.0.0.2", "templates.refused");
    cr_expect(eq(u64, known + refused, flood), "every template kept or counted as refused");
    cr_expect(refused > 0, "a cap on templates per exporter");

    /* 2. huge declared field lengths and zero-length fields (IPFIX, 127.0.0.3), with data sets
     * that claim them */
    uint64_t before_err = 0;
    for (unsigned round = 0; round < 50; round++) {
        ipfix_header(p, round, round);
        p16(p, 2);
        size_t set = p->n;
        p16(p, 0);
        p16(p, 400); /* huge: 100 fields of 65534 bytes */
        p16(p, 100);
        for (int f = 0; f < 100; f++) {
            p16(p, 1);
            p16(p, 65534);
        }
        p16(p, 401); /* zero: 100 fields of 0 bytes */
        p16(p, 100);
        for (int f = 0; f < 100; f++) {
            p16(p, 2);
            p16(p, 0);
        }
        p16(p, 402); /* a field count past what the set holds */
        p16(p, 65000);
        put16_at(p, set, (unsigned)(p->n - set + 2));
        for (unsigned id = 400; id <= 401; id++) {
            p16(p, id);
            p16(p, 1004);
            for (int k = 0; k < 1000; k++)
                p->b[p->n++] = (uint8_t)xorshift();
        }
        p16(p, 403); /* a data set whose length runs past the datagram */
        p16(p, 60000);
        p32(p, 0);
        ipfix_done(p);
        send_from(LO(3), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    before_err = exporter_u64(&d, "127.0.0.3", "templates.known");
    cr_expect(before_err <= 2 * 50, "at most the two well-formed templates per domain: %lu",
              (unsigned long)before_err);
    char *e = exporter_entry(&d, "127.0.0.3");
    cr_assert(e != NULL);
    uint64_t set_err = 0, tmpl_err = 0;
    it_json_u64(e, "set", &set_err);
    it_json_u64(e, "template", &tmpl_err);
    cr_expect(set_err + tmpl_err > 0, "bad sets counted: %s", e);
    free(e);

    /* 3. withdrawal loops: define and withdraw template 300 a hundred times per datagram */
    for (unsigned round = 0; round < 50; round++) {
        ipfix_header(p, round, 7);
        for (int k = 0; k < 100; k++) {
            p16(p, 2);
            p16(p, 16);
            p16(p, 300);
            p16(p, 2);
            p16(p, 1);
            p16(p, 4);
            p16(p, 2);
            p16(p, 4);
            p16(p, 2); /* withdrawal: id 300, count 0 */
            p16(p, 8);
            p16(p, 300);
            p16(p, 0);
        }
        p16(p, 2); /* and "withdraw all" (id 2, count 0) */
        p16(p, 8);
        p16(p, 2);
        p16(p, 0);
        ipfix_done(p);
        send_from(LO(4), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    cr_expect(eq(u64, exporter_u64(&d, "127.0.0.4", "templates.withdrawn"), 50 * 100));
    cr_expect(eq(u64, exporter_u64(&d, "127.0.0.4", "templates.known"), 0));

    /* 4. data for templates that never come: thousands of IDs, held within caps */
    for (unsigned round = 0; round < 400; round++) {
        v9_header(p, round, round % 50);
        for (int k = 0; k < 20; k++) {
            p16(p, 256 + (xorshift() % 65000));
            p16(p, 64);
            for (int j = 0; j < 60; j++)
                p->b[p->n++] = (uint8_t)xorshift();
        }
        send_from(LO(5), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    cr_expect(exporter_u64(&d, "127.0.0.5", "held.dropped") > 0, "held data capped");

    /* 5. sequence chaos: v5 datagrams with random sequence numbers, one record each */
    for (unsigned round = 0; round < 300; round++) {
        p->n = 0;
        p16(p, 5);
        p16(p, 1);
        p32(p, 1000);
        p32(p, 1700000000u);
        p32(p, 0);
        p32(p, xorshift()); /* flow_sequence */
        p32(p, 0);
        for (int k = 0; k < 48; k++)
            p->b[p->n++] = (uint8_t)(k == 19 ? 1 : 0); /* 1 packet, 0 bytes */
        send_from(LO(6), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    cr_expect(exporter_u64(&d, "127.0.0.6", "sequence_gaps") +
                      exporter_u64(&d, "127.0.0.6", "sequence_resets") >
                  0,
              "sequence chaos is counted");

    /* 6. sFlow with lying lengths and counts, to the sFlow port from 127.0.0.7 */
    uint64_t sflow_sent = 0;
    for (unsigned round = 0; round < 200; round++) {
        p->n = 0;
        p32(p, 5);
        p32(p, 1); /* agent IPv4 */
        p32(p, LO(7));
        p32(p, 0);
        p32(p, round);
        p32(p, 1000);
        switch (round % 4) {
        case 0: /* more samples than any datagram holds */
            p32(p, 0xffffffffu);
            break;
        case 1: /* one sample whose length runs far past the datagram */
            p32(p, 1);
            p32(p, 1);
            p32(p, 0x7ffffff0u);
            p32(p, 0);
            break;
        case 2: /* a flow sample with a huge record count and a lying record length */
            p32(p, 1);
            p32(p, 1);
            p32(p, 40);
            p32(p, round);
            p32(p, 1);
            p32(p, 100);
            p32(p, 100);
            p32(p, 0);
            p32(p, 1);
            p32(p, 2);
            p32(p, 0xffffffffu); /* records */
            p32(p, 1);           /* raw packet header */
            p32(p, 0x10000000u);
            break;
        default: /* the count says 10, one sample follows */
            p32(p, 10);
            p32(p, 1);
            p32(p, 8);
            p32(p, 0);
            p32(p, 0);
            break;
        }
        send_from(LO(7), d.sflow, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
        sflow_sent++;
    }
    settle(&d, sent);
    e = exporter_entry(&d, "127.0.0.7");
    cr_assert(e != NULL, "the sFlow agent is listed");
    uint64_t dg = 0, bad = 0, sbad = 0;
    const char *sf = strstr(e, "\"sflow\":{");
    cr_assert(sf != NULL, "%s", e);
    it_json_u64(sf, "datagrams", &dg);
    it_json_u64(sf, "datagrams_bad", &bad);
    it_json_u64(sf, "samples_bad", &sbad);
    cr_expect(eq(u64, dg, sflow_sent), "%s", sf);
    cr_expect(bad + sbad >= sflow_sent / 2, "lies counted: %s", sf);
    free(e);
    char *metrics, want[160];
    cr_assert(eq(int, it_http_get(d.http, "/metrics", &metrics), 200));
    snprintf(
        want, sizeof want,
        "ns2flows_exporter_decode_errors_total{exporter=\"127.0.0.7\",kind=\"sflow_datagram\"} "
        "%lu\n",
        (unsigned long)bad);
    cr_expect(strstr(metrics, want) != NULL, "/metrics has %s", want);
    snprintf(want, sizeof want,
             "ns2flows_exporter_decode_errors_total{exporter=\"127.0.0.7\",kind=\"sflow_sample\"} "
             "%lu\n",
             (unsigned long)sbad);
    cr_expect(strstr(metrics, want) != NULL, "/metrics has %s", want);
    free(metrics);

    /* 7. more senders than max_exporters: 100 new addresses, one template datagram each */
    size_t have = count_exporters(&d);
    uint64_t over0 = status_u64(&d, NULL, "exporters_over_cap");
    for (uint32_t s = 0; s < 100; s++) {
        v9_header(p, 1, 0);
        p16(p, 0);
        p16(p, 16);
        p16(p, 256);
        p16(p, 2);
        p16(p, 1);
        p16(p, 4);
        p16(p, 2);
        p16(p, 4);
        send_from(LO(0x000200u + s), d.udp, p);
        if (++sent % 32 == 0)
            settle(&d, sent); /* never more in flight than a small receive buffer holds */
    }
    settle(&d, sent);
    size_t now = count_exporters(&d);
    cr_expect(eq(sz, now, 64), "the table fills to max_exporters and no further");
    cr_expect(eq(u64, status_u64(&d, NULL, "exporters_over_cap") - over0, 100 - (64 - have)),
              "every datagram from a sender past the cap is counted");

    /* memory stayed bounded: a generous bound over the baseline of this same run */
    uint64_t rss1 = vm_rss_kb(d.pid);
    cr_log_info("VmRSS %lu kB before the floods, %lu kB after", (unsigned long)rss0,
                (unsigned long)rss1);
    cr_expect(rss1 < rss0 + 64 * 1024, "VmRSS grew from %lu to %lu kB", (unsigned long)rss0,
              (unsigned long)rss1);

    /* the daemon still answers and stores a well-formed stream whole */
    uint64_t f0 = summary_flows(&d);
    cr_assert(eq(int, it_replay(&d, pcap), 0));
    for (int w = 0; w < it_ms(10000) && summary_flows(&d) < f0 + 29; w += 20)
        it_sleep_ms(20);
    cr_expect(eq(u64, summary_flows(&d) - f0, 29));
    char *body;
    cr_expect(eq(int, it_http_get(d.http, "/metrics", &body), 200));
    cr_expect(body && strstr(body, "ns2flows_exporter_templates{exporter=\"127.0.0.2\"}") != NULL);
    char line[96];
    snprintf(line, sizeof line, "\nns2flows_exporters_over_cap_total %lu\n",
             (unsigned long)status_u64(&d, NULL, "exporters_over_cap"));
    cr_expect(body && strstr(body, line) != NULL, "/metrics has%s", line);
    free(body);
    free(p);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    unlink(conf);
    it_rm_rf(d.db);
}
