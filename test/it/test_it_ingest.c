/* Integration: template-based ingest through the real daemon — templates survive a restart,
 * v9 and IPFIX captures replayed over UDP give nfdump's totals, /metrics answers. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

static void replay(it_daemon *d, const char *rel, uint64_t expect_datagrams_total)
{
    char pcap[600], *body;
    snprintf(pcap, sizeof pcap, "%s/%s", it_fixtures(), rel);
    cr_assert(eq(int, it_replay(d, pcap), 0), "replay %s", pcap);
    for (int waited = 0; waited < it_ms(10000); waited += 20) {
        uint64_t got = 0;
        cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
        it_json_u64(strstr(body, "\"ingest\":"), "datagrams", &got);
        free(body);
        if (got >= expect_datagrams_total)
            return;
        it_sleep_ms(20);
    }
    cr_fail("datagrams of %s not all received", rel);
}

static void summary(it_daemon *d, uint64_t *flows, uint64_t *packets, uint64_t *bytes)
{
    char *body;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/summary", &body), 200));
    cr_assert(it_json_u64(body, "flows", flows) && it_json_u64(body, "packets", packets) &&
              it_json_u64(body, "bytes", bytes));
    free(body);
}

Test(it_ingest, templates_survive_a_restart, .timeout = 60)
{
    it_daemon d;
    uint64_t f, p, b;
    cr_assert(it_daemon_start(&d, NULL));
    replay(&d, "real/akvorado/netflow__template.pcap", 1);
    summary(&d, &f, &p, &b);
    cr_expect(eq(u64, f, 0), "a template alone is no flow");
    cr_assert(eq(int, it_daemon_stop(&d), 0));

    char db[256];
    snprintf(db, sizeof db, "%s", d.db);
    cr_assert(it_daemon_start(&d, db));
    replay(&d, "real/akvorado/netflow__data.pcap", 1);
    summary(&d, &f, &p, &b);
    /* nfdump's answer for template + data in one run (expected/real/akvorado/nfv9-template-data) */
    cr_expect(eq(u64, f, 4));
    cr_expect(eq(u64, p, 4));
    cr_expect(eq(u64, b, 5848));
    cr_expect(eq(int, it_daemon_stop(&d), 0));

    /* a damaged state file is refused whole, and the daemon still starts */
    char path[400];
    snprintf(path, sizeof path, "%s/state/templates.bin", db);
    FILE *fp = fopen(path, "r+b");
    cr_assert(fp != NULL, "no %s", path);
    fseek(fp, 20, SEEK_SET);
    fputc(0x5a, fp);
    fclose(fp);
    cr_assert(it_daemon_start(&d, db));
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    char log[400], text[65536] = "";
    snprintf(log, sizeof log, "%s/ns2flowslog.txt", db);
    fp = fopen(log, "r");
    cr_assert(fp != NULL);
    text[fread(text, 1, sizeof text - 1, fp)] = 0;
    fclose(fp);
    cr_expect(strstr(text, "templates from the last run not used") != NULL);
    it_rm_rf(db);
}

Test(it_ingest, v9_and_ipfix_over_udp_match_nfdump, .timeout = 60)
{
    static const struct {
        const char *pcap, *expected;
        uint64_t datagrams;
    } cases[] = {
        {"generated/softflowd-v9-nfdump_ipv6.pcap", "generated/softflowd-v9-nfdump_ipv6", 11},
        {"generated/softflowd-ipfix-milli-tcpreplay_test.pcap",
         "generated/softflowd-ipfix-milli-tcpreplay_test", 2},
        {"real/ipfixcol2/example_flows.pcap", "expected/real/ipfixcol2/example_flows", 68},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        it_daemon d;
        it_nfdump_totals want;
        char txt[600];
        uint64_t f, p, b;
        snprintf(txt, sizeof txt, "%s/%s.nfdump.txt", it_fixtures(), cases[i].expected);
        cr_assert(it_nfdump_totals_read(txt, &want));
        cr_assert(it_daemon_start(&d, NULL));
        replay(&d, cases[i].pcap, cases[i].datagrams);
        summary(&d, &f, &p, &b);
        cr_expect(eq(u64, f, want.flows), "%s flows", cases[i].pcap);
        cr_expect(eq(u64, p, want.packets), "%s packets", cases[i].pcap);
        cr_expect(eq(u64, b, want.bytes), "%s bytes", cases[i].pcap);

        char *body;
        cr_assert(eq(int, it_http_get(d.http, "/metrics", &body), 200));
        char want_line[128];
        snprintf(want_line, sizeof want_line,
                 "ns2flows_exporter_flows_total{exporter=\"127.0.0.1\"} %llu",
                 (unsigned long long)want.flows);
        cr_expect(strstr(body, want_line) != NULL, "metrics lack '%s'", want_line);
        free(body);
        cr_expect(eq(int, it_daemon_stop(&d), 0));
        it_rm_rf(d.db);
    }
}

/* "packets: N" / "bytes: N" lines of an .sfacctd.txt (sampled counts). */
static uint64_t sfacctd_value(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    char line[256];
    unsigned long long v = 0;
    cr_assert(f != NULL, "cannot read %s", path);
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

Test(it_ingest, sflow_on_its_own_port_matches_sfacctd, .timeout = 60)
{
    it_daemon d;
    char pcap[600], txt[600], to[64], bin[512], *body;
    uint64_t f, p, b;
    snprintf(pcap, sizeof pcap, "%s/generated/pmacctd-sfprobe-tcpreplay_test.pcap", it_fixtures());
    snprintf(txt, sizeof txt, "%s/generated/pmacctd-sfprobe-tcpreplay_test.sfacctd.txt",
             it_fixtures());
    cr_assert(it_daemon_start(&d, NULL));
    snprintf(bin, sizeof bin, "%s/ns2flows-replay", it_bin());
    snprintf(to, sizeof to, "127.0.0.1:%u", d.sflow);
    const char *argv[] = {bin, pcap, "--to", to, "--max", NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0));
    for (int waited = 0; waited < it_ms(10000); waited += 20) {
        summary(&d, &f, &p, &b);
        if (f >= 202)
            break;
        it_sleep_ms(20);
    }
    /* sampling rate 1: our counts are sfacctd's sampled counts; one row per flow sample */
    cr_expect(eq(u64, f, 202), "one row per flow sample (tshark: 202)");
    cr_expect(eq(u64, p, sfacctd_value(txt, "packets")));
    cr_expect(eq(u64, b, sfacctd_value(txt, "bytes")));
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/exporters", &body), 200));
    cr_expect(strstr(body, "\"sflow5\"") != NULL, "exporters: %s", body);
    cr_expect(strstr(body, "\"sflow\":{") != NULL, "exporters: %s", body);
    free(body);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}
