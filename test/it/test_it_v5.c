/* Integration: the real daemon on a temporary database and free loopback ports, fed the NetFlow
 * v5 captures from ../shared/fixtures by the real replay tool, answers /api/v1/summary and
 * /api/v1/top as nfdump did on the same captures (its recorded totals and per-flow CSV). */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>

/* Arrays, not pointers: Criterion runs each case in a fresh worker process, where a pointer
 * into the parent's memory would mean nothing. */
typedef struct v5_case {
    char pcap[128];     /* under the fixtures folder */
    char expected[128]; /* path prefix of .nfdump.txt / .nfdump.csv */
} v5_case;

/* Sends the capture and waits until the daemon has taken every datagram. */
static void replay_and_wait(it_daemon *d, const char *pcap)
{
    char out[400], *body = NULL, line[256];
    unsigned long long sent = 0;
    snprintf(out, sizeof out, "%s.replay", d->db);
    char bin[512], to[64];
    snprintf(bin, sizeof bin, "%s/ns2flows-replay", it_bin());
    snprintf(to, sizeof to, "127.0.0.1:%u", d->udp);
    const char *argv[] = {bin, pcap, "--to", to, "--max", NULL};
    cr_assert(eq(int, it_run(argv, out), 0), "replay of %s failed", pcap);
    FILE *f = fopen(out, "r");
    cr_assert(f != NULL);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "replay: sent %llu datagrams", &sent) == 1)
            break;
    fclose(f);
    unlink(out);
    cr_assert(sent > 0, "replay sent nothing from %s", pcap);
    for (int waited = 0; waited < it_ms(10000); waited += 20) {
        uint64_t got = 0;
        cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
        const char *ing = strstr(body, "\"ingest\":");
        cr_assert(ing != NULL, "status has no ingest object: %s", body);
        it_json_u64(ing, "datagrams", &got);
        free(body);
        if (got >= sent)
            return;
        it_sleep_ms(20);
    }
    cr_fail("daemon did not receive the %llu datagrams of %s", sent, pcap);
}

/* Parses every row of a /api/v1/top?by=srcaddr answer. */
static size_t parse_top(const char *json, it_addr_total *out, size_t cap)
{
    size_t n = 0;
    const char *p = json;
    while ((p = strstr(p, "{\"key\":{\"srcaddr\":\"")) != NULL && n < cap) {
        p += strlen("{\"key\":{\"srcaddr\":\"");
        const char *q = strchr(p, '"');
        cr_assert(q != NULL);
        memset(&out[n], 0, sizeof out[n]);
        memcpy(out[n].addr, p, (size_t)(q - p));
        cr_assert(it_json_u64(q, "flows", &out[n].flows));
        cr_assert(it_json_u64(q, "packets", &out[n].packets));
        cr_assert(it_json_u64(q, "bytes", &out[n].bytes));
        n++;
        p = q;
    }
    return n;
}

static int cmp_bytes_desc(const void *a, const void *b)
{
    const it_addr_total *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

ParameterizedTestParameters(it_v5, matches_nfdump)
{
    static v5_case cases[] = {
        {"real/akvorado/netflow__nfv5.pcap", "expected/real/akvorado/nfv5"},
        {"real/logstash-codec-netflow/pcap/netflow5.pcap",
         "expected/real/logstash-codec-netflow/netflow5"},
        {"real/logstash-codec-netflow/pcap/netflow5_test_juniper_mx80.pcap",
         "expected/real/logstash-codec-netflow/netflow5_test_juniper_mx80"},
        {"real/logstash-codec-netflow/pcap/netflow5_test_microtik.pcap",
         "expected/real/logstash-codec-netflow/netflow5_test_microtik"},
        {"real/logstash-codec-netflow/pcap/netflow5_test_invalid01.pcap",
         "expected/real/logstash-codec-netflow/netflow5_test_invalid01"},
        {"real/logstash-codec-netflow/pcap/netflow5_test_invalid02.pcap",
         "expected/real/logstash-codec-netflow/netflow5_test_invalid02"},
        {"generated/softflowd-v5-tcpreplay_test.pcap", "generated/softflowd-v5-tcpreplay_test"},
        {"generated/softflowd-v5-nfdump_pack.pcap", "generated/softflowd-v5-nfdump_pack"},
    };
    return cr_make_param_array(v5_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(v5_case *c, it_v5, matches_nfdump, .timeout = 120)
{
    char pcap[600], txt[600], csv[600], *body;
    it_nfdump_totals want;
    it_daemon d;
    snprintf(pcap, sizeof pcap, "%s/%s", it_fixtures(), c->pcap);
    snprintf(txt, sizeof txt, "%s/%s.nfdump.txt", it_fixtures(), c->expected);
    snprintf(csv, sizeof csv, "%s/%s.nfdump.csv", it_fixtures(), c->expected);
    cr_assert(it_nfdump_totals_read(txt, &want) || strstr(txt, "invalid"),
              "cannot read nfdump totals %s (NS_FIXTURES=%s)", txt, it_fixtures());
    cr_assert(it_daemon_start(&d, NULL), "daemon did not start (see %s)", d.log);
    replay_and_wait(&d, pcap);

    /* summary == nfdump -I */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/summary", &body), 200));
    uint64_t flows = 0, packets = 0, bytes = 0;
    cr_assert(it_json_u64(body, "flows", &flows) && it_json_u64(body, "packets", &packets) &&
                  it_json_u64(body, "bytes", &bytes),
              "summary: %s", body);
    cr_expect(eq(u64, flows, want.flows), "%s flows", c->pcap);
    cr_expect(eq(u64, packets, want.packets), "%s packets", c->pcap);
    cr_expect(eq(u64, bytes, want.bytes), "%s bytes", c->pcap);
    if (want.flows) {
        double first, last;
        cr_assert(it_json_double(body, "first", &first) && it_json_double(body, "last", &last));
        cr_expect(eq(i64, (int64_t)first, want.first), "%s first", c->pcap);
        cr_expect(eq(i64, (int64_t)last, want.last), "%s last", c->pcap);
    }
    free(body);

    /* a filter: TCP only == nfdump -I's per-protocol TCP totals */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/summary?filter=proto%20tcp", &body), 200));
    cr_assert(it_json_u64(body, "flows", &flows) && it_json_u64(body, "packets", &packets) &&
                  it_json_u64(body, "bytes", &bytes),
              "summary: %s", body);
    cr_expect(eq(u64, flows, want.tcp_flows), "%s tcp flows", c->pcap);
    cr_expect(eq(u64, packets, want.tcp_packets), "%s tcp packets", c->pcap);
    cr_expect(eq(u64, bytes, want.tcp_bytes), "%s tcp bytes", c->pcap);
    free(body);

    /* the time series over everything adds up to nfdump's totals */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/series?step=1m", &body), 200));
    uint64_t sf = 0, sp = 0, sb = 0;
    for (const char *q = strstr(body, "\"buckets\":"); q && (q = strstr(q, "{\"t\":")); q++) {
        uint64_t v;
        if (it_json_u64(q, "flows", &v))
            sf += v;
        if (it_json_u64(q, "packets", &v))
            sp += v;
        if (it_json_u64(q, "bytes", &v))
            sb += v;
    }
    free(body);
    cr_expect(eq(u64, sf, want.flows), "%s series flows", c->pcap);
    cr_expect(eq(u64, sp, want.packets), "%s series packets", c->pcap);
    cr_expect(eq(u64, sb, want.bytes), "%s series bytes", c->pcap);

    /* every source address's totals == those summed from nfdump's per-flow CSV */
    static it_addr_total exp_rows[4096], got_rows[4096];
    size_t ne = it_nfdump_csv_by_src(csv, exp_rows, 4096);
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/top?by=srcaddr&limit=10000", &body), 200));
    size_t ng = parse_top(body, got_rows, 4096);
    free(body);
    cr_expect(eq(sz, ng, ne), "%s: distinct source addresses", c->pcap);
    for (size_t i = 0; i < ne; i++) {
        size_t j;
        for (j = 0; j < ng; j++)
            if (strcmp(got_rows[j].addr, exp_rows[i].addr) == 0)
                break;
        cr_expect(j < ng, "%s: source %s missing", c->pcap, exp_rows[i].addr);
        if (j == ng)
            continue;
        cr_expect(eq(u64, got_rows[j].flows, exp_rows[i].flows), "%s flows", exp_rows[i].addr);
        cr_expect(eq(u64, got_rows[j].packets, exp_rows[i].packets), "%s pkts", exp_rows[i].addr);
        cr_expect(eq(u64, got_rows[j].bytes, exp_rows[i].bytes), "%s bytes", exp_rows[i].addr);
    }

    /* the default top 10: ordered by bytes, the same byte counts as nfdump's top 10 */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/top?by=srcaddr", &body), 200));
    ng = parse_top(body, got_rows, 4096);
    uint64_t tf = 0, of = 0;
    const char *total = strstr(body, "\"total\":"), *other = strstr(body, "\"other\":");
    cr_assert(total && other);
    it_json_u64(total, "flows", &tf);
    it_json_u64(other, "flows", &of);
    cr_expect(eq(u64, tf, want.flows));
    free(body);
    qsort(exp_rows, ne, sizeof exp_rows[0], cmp_bytes_desc);
    cr_expect(eq(sz, ng, ne < 10 ? ne : 10));
    uint64_t top_flows = 0;
    for (size_t i = 0; i < ng && i < ne; i++) {
        cr_expect(eq(u64, got_rows[i].bytes, exp_rows[i].bytes), "%s: rank %zu", c->pcap, i);
        if (i > 0)
            cr_expect(got_rows[i - 1].bytes >= got_rows[i].bytes);
        top_flows += got_rows[i].flows;
    }
    cr_expect(eq(u64, top_flows + of, tf), "rows + other == total");

    cr_expect(eq(int, it_daemon_stop(&d), 0), "SIGTERM exits 0");
    it_rm_rf(d.db);
}

Test(it_v5, restart_keeps_sealed_flows_and_segments_verify, .timeout = 120)
{
    char pcap[600], *body;
    it_daemon d;
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    cr_assert(it_daemon_start(&d, NULL));
    replay_and_wait(&d, pcap);
    cr_assert(eq(int, it_daemon_stop(&d), 0));

    /* SIGTERM sealed the open minute into a segment that verifies */
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows-dump", it_bin());
    const char *argv[] = {bin, "--verify", d.db, NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0), "ns2flows-dump --verify %s", d.db);

    char db[256];
    snprintf(db, sizeof db, "%s", d.db);
    cr_assert(it_daemon_start(&d, db), "restart failed");
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/summary", &body), 200));
    uint64_t flows = 0, bytes = 0, segs = 0;
    it_json_u64(body, "flows", &flows);
    it_json_u64(body, "bytes", &bytes);
    free(body);
    cr_expect(eq(u64, flows, 29));
    cr_expect(eq(u64, bytes, 88345));
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    it_json_u64(body, "segments", &segs);
    free(body);
    cr_expect(eq(u64, segs, 1));
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(db);
}

Test(it_v5, second_daemon_on_same_database_refuses, .timeout = 60)
{
    it_daemon a, b;
    cr_assert(it_daemon_start(&a, NULL));
    cr_assert(it_daemon_start(&b, a.db) == false, "a second daemon started on %s", a.db);
    char line[1024] = "";
    FILE *f = fopen(b.log, "r");
    cr_assert(f != NULL);
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = 0;
    fclose(f);
    cr_expect(strstr(line, "in use") != NULL, "message was: %s", line);
    cr_expect(eq(int, it_daemon_stop(&a), 0));
    it_rm_rf(a.db);
}

Test(it_v5, bad_requests_get_clear_errors, .timeout = 60)
{
    static const struct {
        const char *path;
        int status;
        const char *names;
    } cases[] = {
        {"/api/v1/summary?from=yesterday", 400, "from"},
        {"/api/v1/summary?to=2024-13-01T00:00:00Z", 400, "to"},
        {"/api/v1/summary?from=200&to=100", 400, "from"},
        {"/api/v1/top?by=color", 400, "by"},
        {"/api/v1/top?metric=weight", 400, "metric"},
        {"/api/v1/top?limit=0", 400, "limit"},
        {"/api/v1/top?limit=-5", 400, "limit"},
        {"/api/v1/top?limit=99999999999999999999999", 400, "limit"},
        {"/api/v1/top?limt=5", 400, "limt"},
        {"/api/v1/top?format=xml", 400, "format"},
        {"/api/v1/top?filter=port%20foo", 400, "filter"},
        {"/api/v1/series?step=0", 400, "step"},
        {"/api/v1/series?to=100", 200, "buckets"},
        {"/api/v1/devices/10.0.0.1?to=100", 200, "device"},
        {"/api/v1/flows?cursor=abc", 400, "cursor"},
        /* a skip past the engine's limit (the fuzzer's 500, when the two limits differed) */
        {"/api/v1/flows?limit=5&cursor=44:205853", 400, "cursor"},
        {"/api/v1/flows?limit=5&cursor=44:100000", 200, "\"next\":"},
        {"/api/v1/flows?limit=100000", 400, "limit"},
        {"/api/v1/flows?limit=3&filter=proto%20tcp", 200, "\"next\":"},
        {"/api/v1/series?from=0&to=1800000000&step=1", 400, "step"},
        {"/api/v1/series?step=5m&format=csv", 200, "t,flows,packets,bytes"},
        {"/api/v1/summary?filter=(proto%20tcp", 400, "filter"},
        {"/api/v1/summary?filter=proto%20tcp%20and%20not%20port%2022", 200, "flows"},
        {"/api/v1/nothing", 404, "/api/v1/nothing"},
        {"/../../etc/passwd", 404, "no such endpoint"},
        {"/api/v1/summary?from=2024-01-02T03:04:05Z&to=1800000000", 200, "flows"},
        {"/api/v1/top?by=dstport&metric=flows&limit=3&format=csv", 200, "dstport,flows"},
    };
    it_daemon d;
    cr_assert(it_daemon_start(&d, NULL));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body;
        int st = it_http_get(d.http, cases[i].path, &body);
        cr_expect(eq(int, st, cases[i].status), "%s", cases[i].path);
        cr_expect(body && strstr(body, cases[i].names), "%s: %s", cases[i].path, body);
        if (st >= 400)
            cr_expect(body && strncmp(body, "{\"error\":", 9) == 0, "%s: %s", cases[i].path, body);
        free(body);
    }
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_v5, config_errors_name_file_line_and_key, .timeout = 30)
{
    char conf[] = "/tmp/ns2flows-it-conf-XXXXXX", bin[512], out[64] = "/tmp/ns2flows-it-cfgout";
    int fd = mkstemp(conf);
    cr_assert(fd >= 0);
    const char *text = "# test\ndb_budget = 1G\n\nlisten = 127.0.0.1:2055\nbogus_key = 1\n";
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    const char *argv[] = {bin, "-c", conf, "--check-config", NULL};
    cr_expect(eq(int, it_run(argv, out), 2));
    char msg[1024] = "";
    FILE *f = fopen(out, "r");
    cr_assert(f != NULL);
    size_t n = fread(msg, 1, sizeof msg - 1, f);
    msg[n] = 0;
    fclose(f);
    char want[400];
    snprintf(want, sizeof want, "%s:5: bogus_key", conf);
    cr_expect(strstr(msg, want) != NULL, "message: %s", msg);

    /* a good file passes, and --db on the command line overrides it */
    fd = open(conf, O_WRONLY | O_TRUNC);
    text = "db_budget = 1G # one gigabyte\nretention = 7d\n";
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    cr_expect(eq(int, it_run(argv, out), 0));
    const char *argv2[] = {bin, "-c", conf, "--listen", "1.2.3.4", "--check-config", NULL};
    cr_expect(eq(int, it_run(argv2, out), 2), "--listen without a port is refused");
    unlink(conf);
    unlink(out);
}

/* Reads a whole small file into buf. */
static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
}

Test(it_v5, sighup_reloads_budget_and_warns_about_fixed_keys, .timeout = 60)
{
    char conf[] = "/tmp/ns2flows-it-conf-XXXXXX", *body, log[600];
    static char text[65536];
    int fd = mkstemp(conf);
    cr_assert(fd >= 0);
    const char *v1 = "db_budget = 1G\nlog_level = info\n";
    cr_assert(write(fd, v1, strlen(v1)) == (ssize_t)strlen(v1));
    close(fd);
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, NULL, extra));
    uint64_t budget = 0;
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    it_json_u64(body, "budget_bytes", &budget);
    free(body);
    cr_expect(eq(u64, budget, 1ull << 30));

    /* a reloadable key (db_budget) and a fixed one (rcvbuf) change */
    fd = open(conf, O_WRONLY | O_TRUNC);
    const char *v2 = "db_budget = 2G\nlog_level = info\nrcvbuf = 1M\n";
    cr_assert(write(fd, v2, strlen(v2)) == (ssize_t)strlen(v2));
    close(fd);
    kill(d.pid, SIGHUP);
    for (int waited = 0; waited < it_ms(5000) && budget != 2ull << 30; waited += 50) {
        it_sleep_ms(50);
        cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
        it_json_u64(body, "budget_bytes", &budget);
        free(body);
    }
    cr_expect(eq(u64, budget, 2ull << 30), "SIGHUP applied db_budget");

    /* a broken file is refused and the running configuration kept */
    fd = open(conf, O_WRONLY | O_TRUNC);
    const char *v3 = "db_budget = lots\n";
    cr_assert(write(fd, v3, strlen(v3)) == (ssize_t)strlen(v3));
    close(fd);
    kill(d.pid, SIGHUP);
    it_sleep_ms(it_ms(300));
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    it_json_u64(body, "budget_bytes", &budget);
    free(body);
    cr_expect(eq(u64, budget, 2ull << 30));
    cr_expect(eq(int, it_daemon_stop(&d), 0));

    snprintf(log, sizeof log, "%s/ns2flowslog.txt", d.db);
    slurp(log, text, sizeof text);
    cr_expect(strstr(text, "rcvbuf changed; restart") != NULL, "log: %s", text);
    cr_expect(strstr(text, ":1: db_budget:") != NULL, "log: %s", text);
    cr_expect(strstr(text, "stopped cleanly") != NULL, "log: %s", text);
    unlink(conf);
    it_rm_rf(d.db);
}

/* The next flow row of nfdump's per-flow CSV, split into fields (at least 13); false at the
 * end. Header, blank and summary lines are skipped. */
static bool csv_flow(FILE *f, char *line, size_t cap, char **fields)
{
    while (fgets(line, (int)cap, f)) {
        int nf = 0;
        if (line[0] < '0' || line[0] > '9' || !strchr(line, '-'))
            continue;
        for (char *save = NULL, *tok = strtok_r(line, ",", &save); tok && nf < 16;
             tok = strtok_r(NULL, ",", &save))
            fields[nf++] = tok;
        if (nf >= 13)
            return true;
    }
    return false;
}

/* The Flows Window data of one device: what it sent and received equals what nfdump's per-flow
 * CSV says for that address, and the series adds up to it. */
Test(it_v5, device_window_matches_nfdump_per_flow_rows, .timeout = 60)
{
    char pcap[600], csv[600], line[4096], *body, path[200];
    const char *dev = "202.160.21.5"; /* a destination of several flows in this capture */
    uint64_t in_flows = 0, in_bytes = 0, out_flows = 0, out_bytes = 0;
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    snprintf(csv, sizeof csv, "%s/expected/real/akvorado/nfv5.nfdump.csv", it_fixtures());
    FILE *f = fopen(csv, "r");
    cr_assert(f != NULL);
    char *fields[16];
    while (csv_flow(f, line, sizeof line, fields)) {
        if (strcmp(fields[4], dev) == 0)
            in_flows++, in_bytes += strtoull(fields[12], NULL, 10);
        if (strcmp(fields[3], dev) == 0)
            out_flows++, out_bytes += strtoull(fields[12], NULL, 10);
    }
    fclose(f);
    cr_assert(in_flows > 1, "the capture has flows to %s", dev);

    it_daemon d;
    cr_assert(it_daemon_start(&d, NULL));
    replay_and_wait(&d, pcap);
    snprintf(path, sizeof path, "/api/v1/devices/%s?limit=50", dev);
    cr_assert(eq(int, it_http_get(d.http, path, &body), 200));
    uint64_t v = 0;
    const char *in = strstr(body, "\"in\":{"), *out = strstr(body, "\"out\":{");
    cr_assert(in && out, "%s", body);
    it_json_u64(in, "flows", &v);
    cr_expect(eq(u64, v, in_flows));
    it_json_u64(in, "bytes", &v);
    cr_expect(eq(u64, v, in_bytes));
    it_json_u64(out, "flows", &v);
    cr_expect(eq(u64, v, out_flows));
    it_json_u64(out, "bytes", &v);
    cr_expect(eq(u64, v, out_bytes));
    uint64_t sum = 0;
    for (const char *q = strstr(body, "\"buckets\":"); q && (q = strstr(q, "\"in_bytes\":")); q++) {
        it_json_u64(q, "in_bytes", &v);
        sum += v;
    }
    cr_expect(eq(u64, sum, in_bytes), "series in_bytes add up");
    cr_expect(strstr(body, "\"listener\":{\"peers\":[{\"key\":{\"srcaddr\":") != NULL, "%s", body);
    cr_expect(strstr(body, "\"conversations\":[{\"key\":{\"a\":") != NULL, "%s", body);
    free(body);
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/devices/999.1.1.1", &body), 400));
    free(body);
    /* Accept: text/csv picks CSV where no format= is given */
    cr_assert(
        eq(int, it_http_get_hdr(d.http, "/api/v1/top?by=proto", "Accept: text/csv", &body), 200));
    cr_expect(strncmp(body, "proto,flows,packets,bytes,bps,pps\n", 34) == 0, "%s", body);
    free(body);
    cr_assert(eq(
        int, it_http_get_hdr(d.http, "/api/v1/top?by=proto&format=json", "Accept: text/csv", &body),
        200));
    cr_expect(body[0] == '{', "%s", body);
    free(body);
    /* an end before all the data held: an empty answer, not an error */
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/series?to=100", &body), 200));
    free(body);
    snprintf(path, sizeof path, "/api/v1/devices/%s?to=100", dev);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 200));
    free(body);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

/* The bytes of one series of a split answer: its buckets, up to the next series. */
static uint64_t series_bytes(const char *series)
{
    const char *end = strstr(series + 1, "{\"key\":"), *q = strstr(series, "\"buckets\":[");
    uint64_t sum = 0, v;
    while (q && (q = strstr(q, "{\"t\":")) != NULL && (!end || q < end)) {
        v = 0;
        it_json_u64(q, "bytes", &v);
        sum += v;
        q++;
    }
    return sum;
}

/* Groupings over HTTP against nfdump's per-flow CSV of the same capture: each protocol's
 * series adds up to its bytes, conversations split by direction add up to the pair's bytes,
 * and several keys at once cover every flow. */
Test(it_v5, groupings_and_split_series_match_nfdump_rows, .timeout = 60)
{
    char pcap[600], csv[600], line[4096], *body, path[300];
    uint64_t tcp_bytes = 0, udp_bytes = 0, flows = 0;
    /* the conversation of the first row, both ways */
    char ca[64] = "", cb[64] = "";
    uint64_t ab = 0, ba = 0;
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    snprintf(csv, sizeof csv, "%s/expected/real/akvorado/nfv5.nfdump.csv", it_fixtures());
    FILE *f = fopen(csv, "r");
    cr_assert(f != NULL);
    char *fields[16];
    while (csv_flow(f, line, sizeof line, fields)) {
        uint64_t bytes = strtoull(fields[12], NULL, 10);
        flows++;
        if (strcmp(fields[7], "TCP") == 0)
            tcp_bytes += bytes;
        else if (strcmp(fields[7], "UDP") == 0)
            udp_bytes += bytes;
        if (!ca[0]) {
            snprintf(ca, sizeof ca, "%s", fields[3]);
            snprintf(cb, sizeof cb, "%s", fields[4]);
        }
        if (!strcmp(fields[3], ca) && !strcmp(fields[4], cb))
            ab += bytes;
        else if (!strcmp(fields[3], cb) && !strcmp(fields[4], ca))
            ba += bytes;
    }
    fclose(f);
    cr_assert(tcp_bytes > 0 && udp_bytes > 0 && flows > 10);

    it_daemon d;
    cr_assert(it_daemon_start(&d, NULL));
    replay_and_wait(&d, pcap);

    /* split series: the series of proto 6 adds up to nfdump's TCP bytes, 17 to UDP's */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/series?by=proto&limit=5&step=10", &body), 200));
    const char *tcp = strstr(body, "{\"key\":{\"proto\":6}"),
               *udp = strstr(body, "{\"key\":{\"proto\":17}");
    cr_assert(tcp != NULL && udp != NULL, "%s", body);
    uint64_t v = 0;
    cr_expect(eq(u64, series_bytes(tcp), tcp_bytes), "TCP series adds up");
    cr_expect(eq(u64, series_bytes(udp), udp_bytes), "UDP series adds up");
    free(body);

    /* the conversation of the first row: each direction's bytes */
    snprintf(path, sizeof path, "/api/v1/top?by=conversation&limit=1&filter=host+%s+and+host+%s",
             ca, cb);
    cr_assert(eq(int, it_http_get(d.http, path, &body), 200));
    const char *x = strstr(body, "\"a_to_b\":{"), *y = strstr(body, "\"b_to_a\":{");
    cr_assert(x != NULL && y != NULL, "%s", body);
    uint64_t got_ab = 0, got_ba = 0;
    it_json_u64(x, "bytes", &got_ab);
    it_json_u64(y, "bytes", &got_ba);
    /* a is the lower address in byte order: match directions accordingly */
    bool a_is_ca = strstr(body, "\"a\":\"") &&
                   strncmp(strstr(body, "\"a\":\"") + 5, ca, strlen(ca)) == 0 &&
                   strstr(body, "\"a\":\"")[5 + strlen(ca)] == '"';
    cr_expect(eq(u64, a_is_ca ? got_ab : got_ba, ab), "%s -> %s: %s", ca, cb, body);
    cr_expect(eq(u64, a_is_ca ? got_ba : got_ab, ba), "%s -> %s: %s", cb, ca, body);
    free(body);

    /* several keys: groups cover every flow */
    cr_assert(
        eq(int, it_http_get(d.http, "/api/v1/top?by=srcaddr,dstport,app&limit=1", &body), 200));
    const char *tot = strstr(body, "\"total\":{");
    cr_assert(tot != NULL, "%s", body);
    it_json_u64(tot, "flows", &v);
    cr_expect(eq(u64, v, flows));
    cr_expect(strstr(body, "\"app\":\"") != NULL, "%s", body);
    free(body);
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/top?by=srcaddr,srcaddr", &body), 400));
    cr_expect(strstr(body, "given twice") != NULL, "%s", body);
    free(body);
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/series?limit=3", &body), 400));
    free(body);
    /* the receive threads' queues kept up: nothing dropped on the way to the store */
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    cr_expect(strstr(body, "\"queue_dropped\":0") != NULL, "%s", body);
    free(body);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}
