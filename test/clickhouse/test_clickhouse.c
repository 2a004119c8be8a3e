/* test/clickhouse/test_clickhouse.c — the ClickHouse sink against real servers: two instances
 * of Debian's clickhouse-server (test/clickhouse/ch.sh) on loopback ports picked here, one shard
 * each, the tables of dist/clickhouse.sql, and the real daemon fed by ns2flows-replay. Every
 * answer is compared with the daemon's embedded store, which saw the same flows. Run by
 * `make test-clickhouse`; everything started here is stopped by PID. */
#include "../it/itlib.h"
#include "sink/sink.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#define NSH 2

static char base[256];
static uint16_t ch_http[NSH], ch_tcp[NSH], ch_inter[NSH];
static it_daemon daemons[2];
static const char *fixture = "real/ipfixcol2/example_flows.pcap";

static const char *src_dir(void)
{
    return it_env("NS_SRC", ".");
}

static bool ch_start(int i)
{
    char sh[600], idx[8], http[8], tcp[8], inter[8], list[32];
    snprintf(sh, sizeof sh, "%s/test/clickhouse/ch.sh", src_dir());
    snprintf(idx, sizeof idx, "%d", i + 1);
    snprintf(http, sizeof http, "%u", ch_http[i]);
    snprintf(tcp, sizeof tcp, "%u", ch_tcp[i]);
    snprintf(inter, sizeof inter, "%u", ch_inter[i]);
    snprintf(list, sizeof list, "%u,%u", ch_tcp[0], ch_tcp[1]);
    const char *argv[] = {"/bin/bash", sh, "start", base, idx, http, tcp, inter, list, NULL};
    return it_run(argv, NULL) == 0;
}

/* how: "stop" (SIGTERM, waits) or "kill" (SIGKILL, as a crash) */
static void ch_halt(int i, const char *how)
{
    char sh[600], idx[8];
    snprintf(sh, sizeof sh, "%s/test/clickhouse/ch.sh", src_dir());
    snprintf(idx, sizeof idx, "%d", i + 1);
    const char *argv[] = {"/bin/bash", sh, how, base, idx, NULL};
    it_run(argv, NULL);
}

static void ch_stop(int i)
{
    ch_halt(i, "stop");
}

static bool ch_schema(int i)
{
    char sh[600], http[8];
    snprintf(sh, sizeof sh, "%s/test/clickhouse/ch.sh", src_dir());
    snprintf(http, sizeof http, "%u", ch_http[i]);
    const char *argv[] = {"/bin/bash", sh, "schema", base, http, NULL};
    return it_run(argv, NULL) == 0;
}

/* Runs sql on instance i (HTTP GET, so read-only statements only); *out malloc'd. */
static int ch_get(int i, const char *sql, char **out)
{
    char path[4096] = "/?query=";
    size_t n = strlen(path);
    for (const char *p = sql; *p && n + 4 < sizeof path; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
            path[n++] = *p;
        else
            n += (size_t)snprintf(path + n, sizeof path - n, "%%%02X", (unsigned char)*p);
    }
    path[n] = 0;
    return it_http_get(ch_http[i], path, out);
}

static uint64_t ch_u64(int i, const char *sql)
{
    char *out = NULL;
    int st = ch_get(i, sql, &out);
    cr_assert(eq(int, st, 200), "%s: %s", sql, out ? out : "");
    uint64_t v = strtoull(out, NULL, 10);
    free(out);
    return v;
}

/* Runs a DDL or INSERT statement with curl (POST). */
static void ch_post(int i, const char *sql, const char *datafile)
{
    char url[4096], data[600];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/?query=", ch_http[i]);
    size_t n = strlen(url);
    for (const char *p = sql; *p && n + 4 < sizeof url; p++)
        n += (size_t)snprintf(url + n, sizeof url - n, "%%%02X", (unsigned char)*p);
    snprintf(data, sizeof data, "@%s", datafile ? datafile : "/dev/null");
    const char *argv[] = {"/usr/bin/curl", "-sSf", "--data-binary", data, url, NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0), "%s", sql);
}

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/ns2flows-it-chXXXXXX");
    cr_assert(mkdtemp(base) != NULL);
    for (int i = 0; i < NSH; i++) {
        ch_http[i] = it_free_port(SOCK_STREAM);
        ch_tcp[i] = it_free_port(SOCK_STREAM);
        ch_inter[i] = it_free_port(SOCK_STREAM);
    }
    for (int i = 0; i < NSH; i++) {
        cr_assert(ch_start(i), "clickhouse-server %d did not start (see %s/s%d/log)", i + 1, base,
                  i + 1);
        cr_assert(ch_schema(i));
    }
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++) {
        if (daemons[i].pid > 0)
            it_daemon_stop(&daemons[i]);
        if (daemons[i].db[0]) {
            char conf[300];
            snprintf(conf, sizeof conf, "%s.conf", daemons[i].db);
            unlink(conf);
            snprintf(conf, sizeof conf, "%s.replay", daemons[i].db);
            unlink(conf);
            it_rm_rf(daemons[i].db);
        }
    }
    for (int i = 0; i < NSH; i++)
        ch_stop(i);
    it_rm_rf(base);
}

TestSuite(clickhouse, .init = setup, .fini = teardown);

/* Starts daemon k with a netsaw.conf naming the given shards (bitmask) and extra lines, on
 * dbdir (NULL: a new one). */
static void start_daemon_in(int k, unsigned shards, const char *extra, const char *dbdir)
{
    char db[256], conf[300], xarg[320];
    snprintf(db, sizeof db, "%s", dbdir ? dbdir : "/tmp/ns2flows-it-XXXXXX");
    cr_assert(dbdir || mkdtemp(db) != NULL);
    snprintf(conf, sizeof conf, "%s.conf", db);
    FILE *f = fopen(conf, "w");
    cr_assert(f != NULL);
    for (int i = 0; i < NSH; i++)
        if (shards & (1u << i))
            fprintf(f, "clickhouse_url = http://127.0.0.1:%u/\n", ch_http[i]);
    fprintf(f, "ingest_threads = 1\n%s\n", extra ? extra : "");
    fclose(f);
    snprintf(xarg, sizeof xarg, "%s", conf);
    const char *args[] = {"-c", xarg, NULL};
    it_daemon d;
    bool ok = it_daemon_start_ex(&d, db, args);
    daemons[k] = d; /* teardown stops it */
    cr_assert(ok, "daemon %d did not start: see %s", k, d.log);
}

static void start_daemon(int k, unsigned shards, const char *extra)
{
    start_daemon_in(k, shards, extra, NULL);
}

static char *status(int k)
{
    char *body = NULL;
    cr_assert(eq(int, it_http_get(daemons[k].http, "/api/v1/status", &body), 200));
    return body;
}

static uint64_t status_u64(const char *json, const char *key)
{
    uint64_t v = 0;
    cr_assert(it_json_u64(json, key, &v), "status has no %s", key);
    return v;
}

/* The datagrams the kernel dropped at the UDP socket bound to port (its receive buffer was
 * full): the last column of /proc/net/udp. They never reach the daemon, so none of its counters
 * can tell the test that they will not come. */
static uint64_t udp_drops(uint16_t port)
{
    FILE *f = fopen("/proc/net/udp", "r");
    cr_assert(f != NULL, "cannot read /proc/net/udp");
    char line[512];
    uint64_t drops = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned lport;
        unsigned long long d;
        int used = 0;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops */
        if (sscanf(line, " %*u: %*8x:%4x %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s%n", &lport,
                   &used) == 1 &&
            used > 0 && lport == port && sscanf(line + used, "%llu", &d) == 1)
            drops += d;
    }
    fclose(f);
    return drops;
}

/* Waits until the sink is done with everything the replays sent to daemon k (`sent`
 * datagrams): each one is in the store (the listener counts a datagram once its rows are
 * stored) or was dropped by the kernel; the sink took every stored row; none is still in
 * memory or in the spool. The replay having ended is not enough: its last burst may still wait
 * to be decoded and stored, and the sink's counters look drained in that gap. Returns the
 * status body. */
static char *wait_drained(int k, uint64_t sent, int timeout_ms)
{
    cr_assert(sent > 0, "the replay sent nothing");
    for (int waited = 0;; waited += 100) {
        char *s = status(k);
        const char *ingest = strstr(s, "\"ingest\":");
        cr_assert(ingest != NULL, "status has no ingest member: %s", s);
        uint64_t taken = status_u64(ingest, "datagrams"), dropped = udp_drops(daemons[k].udp);
        if (taken + dropped >= sent && status_u64(s, "rows_in") == status_u64(s, "flows_stored") &&
            status_u64(s, "open_rows") == 0 && status_u64(s, "spool_batches") == 0 &&
            status_u64(s, "rows_in") > 0)
            return s;
        if (waited > it_ms(timeout_ms))
            cr_assert(false,
                      "sink did not drain: %llu datagrams sent, %llu stored, %llu dropped by the "
                      "kernel: %s",
                      (unsigned long long)sent, (unsigned long long)taken,
                      (unsigned long long)dropped, s);
        free(s);
        it_sleep_ms(100);
    }
}

/* The datagrams the last replay to daemon k said it sent (0 if it said nothing). */
static uint64_t replay_sent(int k)
{
    char path[300], line[256];
    unsigned long long n = 0;
    snprintf(path, sizeof path, "%s.replay", daemons[k].db);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "replay: sent %llu datagrams", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Replays the fixture to daemon k (speed NULL: as fast as possible); its output goes to
 * <db>.replay, where replay_sent() finds how many datagrams it sent. Returns its exit status. */
static int replay(int k, const char *speed, const char *loops)
{
    char bin[512], to[64], cap[512], out[300];
    snprintf(bin, sizeof bin, "%s/ns2flows-replay", it_bin());
    snprintf(to, sizeof to, "127.0.0.1:%u", daemons[k].udp);
    snprintf(cap, sizeof cap, "%s/%s", it_fixtures(), fixture);
    snprintf(out, sizeof out, "%s.replay", daemons[k].db);
    const char *fast[] = {bin, cap, "--to", to, "--max", "--loop", loops, "--quiet", NULL};
    const char *paced[] = {bin,   cap,      "--to", to,        "--speed",
                           speed, "--loop", loops,  "--quiet", NULL};
    return it_run(speed ? paced : fast, out);
}

/* The embedded store's totals (daemon k's /api/v1/summary). */
static void local_totals(int k, uint64_t *flows, uint64_t *packets, uint64_t *bytes)
{
    char *body = NULL;
    cr_assert(eq(int, it_http_get(daemons[k].http, "/api/v1/summary", &body), 200));
    cr_assert(it_json_u64(body, "flows", flows) && it_json_u64(body, "packets", packets) &&
              it_json_u64(body, "bytes", bytes));
    free(body);
}

/* ClickHouse holds exactly the store's flows: same count and sums, and no batch id carries more
 * rows than a batch may have (a doubled batch would). */
static void assert_same_as_store(int k, uint64_t batch_rows)
{
    uint64_t flows, packets, bytes;
    local_totals(k, &flows, &packets, &bytes);
    cr_assert(flows > 0, "the store holds no flows");
    cr_assert(eq(u64, ch_u64(0, "SELECT count() FROM flows_all"), flows));
    cr_assert(eq(u64, ch_u64(0, "SELECT sum(packets) FROM flows_all"), packets));
    cr_assert(eq(u64, ch_u64(1, "SELECT sum(bytes) FROM flows_all"), bytes));
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count() FROM (SELECT batch_id, count() AS c FROM flows_all GROUP BY batch_id "
             "HAVING c > %llu)",
             (unsigned long long)batch_rows);
    cr_assert(eq(u64, ch_u64(0, sql), 0), "a batch id with more rows than a batch: doubled");
}

/* Cuts ,"resolution":[...] out of a JSON answer (it says which storage tier served the
 * range, which differs between the backends by design). */
static void strip_resolution(char *s)
{
    char *p = strstr(s, ",\"resolution\":[");
    if (!p)
        return;
    char *q = p + strlen(",\"resolution\":[");
    int depth = 1;
    for (; *q && depth > 0; q++)
        depth += *q == '[' ? 1 : *q == ']' ? -1 : 0;
    memmove(p, q, strlen(q) + 1);
}

Test(clickhouse, two_shards_hold_the_stores_flows_and_answer_its_queries)
{
    start_daemon(0, 3, "clickhouse_batch_rows = 1000\nclickhouse_batch_ms = 200");
    cr_assert(eq(int, replay(0, NULL, "4"), 0));
    char *s = wait_drained(0, replay_sent(0), 30000);
    cr_assert(eq(u64, status_u64(s, "rejected_batches"), 0));
    cr_assert(eq(u64, status_u64(s, "dropped_batches"), 0));
    free(s);
    assert_same_as_store(0, 1000);
    /* both shards took batches */
    cr_assert(ch_u64(0, "SELECT count() FROM flows") > 0, "shard 1 got nothing");
    cr_assert(ch_u64(1, "SELECT count() FROM flows") > 0, "shard 2 got nothing");

    /* a second collector reading from ClickHouse answers as the first one's store does (but for
     * the resolution: ClickHouse holds raw flows over every range, the store its own tiers) */
    start_daemon(1, 3, "query_backend = clickhouse");
    const char *queries[] = {
        "/api/v1/summary",
        "/api/v1/summary?from=1438603700&to=1438603800",
        "/api/v1/top?by=srcaddr&limit=10",
        "/api/v1/top?by=dstaddr&metric=packets&limit=7&from=1438603700",
        "/api/v1/top?by=dstport&metric=flows&limit=5",
        "/api/v1/top?by=proto&limit=3&format=csv",
        "/api/v1/top?by=exporter",
        "/api/v1/series?from=1438603600&to=1438604000&step=60",
        "/api/v1/series?from=1438603690&to=1438603900&step=7",
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        char *a = NULL, *b = NULL;
        cr_assert(eq(int, it_http_get(daemons[0].http, queries[i], &a), 200), "%s", queries[i]);
        cr_assert(eq(int, it_http_get(daemons[1].http, queries[i], &b), 200), "%s: %s", queries[i],
                  b);
        cr_assert(strstr(b, "\"resolution\":[{\"tier\":\"raw\",") != NULL ||
                      strstr(queries[i], "format=csv") != NULL,
                  "%s: %s", queries[i], b);
        strip_resolution(a);
        strip_resolution(b);
        cr_assert(eq(str, b, a), "%s differs", queries[i]);
        free(a);
        free(b);
    }
    /* filters: the engine's compiled program as SQL must pick the same rows */
    const char *filters[] = {
        "proto%20tcp",
        "udp%20and%20dst%20port%2053",
        "not%20tcp%20or%20port%20in%20%5B80%20443%5D",
        "src%20net%2010.0.0.0%2F8%20or%20dst%20net%20192.168.0.0%2F16",
        "ipv6",
        "net%20df01%3A%3A%2F16%20and%20not%20host%20df01%3A38ef%3Aff01%3Adc%3A%3A1",
        "bytes%20%3E%201k%20and%20packets%20%3C%2010",
        "flags%20S%20and%20not%20flags%20A",
        "bps%20%3E%20100k",
        "pps%20%3C%205%20or%20duration%20%3E%2010000",
        "bpp%20%3E%3D%20500",
        "icmp%20or%20icmp-type%203",
        "exporter%20127.0.0.0%2F8%20and%20as%200",
        "net%200.0.0.0%2F0",
    };
    const char *bases[] = {"/api/v1/summary?filter=", "/api/v1/top?by=srcaddr&limit=5&filter=",
                           "/api/v1/series?from=1438603600&to=1438604000&step=60&filter="};
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        for (size_t k = 0; k < 3; k++) {
            char q[512], *a = NULL, *b = NULL;
            snprintf(q, sizeof q, "%s%s", bases[k], filters[i]);
            cr_assert(eq(int, it_http_get(daemons[0].http, q, &a), 200), "%s: %s", q, a);
            cr_assert(eq(int, it_http_get(daemons[1].http, q, &b), 200), "%s: %s", q, b);
            strip_resolution(a);
            strip_resolution(b);
            cr_assert(eq(str, b, a), "%s differs", q);
            free(a);
            free(b);
        }
    }
    /* and the filters did select something: not every answer is the unfiltered one */
    char *all = NULL, *tcp = NULL;
    cr_assert(eq(int, it_http_get(daemons[1].http, "/api/v1/summary", &all), 200));
    cr_assert(
        eq(int, it_http_get(daemons[1].http, "/api/v1/summary?filter=proto%20tcp", &tcp), 200));
    cr_assert(ne(str, all, tcp));
    free(all);
    free(tcp);
}

/* Shard 2 goes away in the middle of a replay (how: stop or kill) and comes back. */
static void shard_outage(const char *how)
{
    start_daemon(0, 3, "clickhouse_batch_rows = 500\nclickhouse_batch_ms = 100");
    pid_t rp = fork();
    if (rp == 0)
        _exit(replay(0, "1", "12")); /* the capture's own pace: about 1 s a pass, 12 in all */
    cr_assert(rp > 0, "fork failed");
    it_sleep_ms(2000);
    ch_halt(1, how);
    uint64_t at_stop = ch_u64(0, "SELECT count() FROM flows");
    it_sleep_ms(2500);
    char *mid = status(0);
    cr_log_info("mid %s: retries %llu, shard 1 rows %llu -> %llu", how,
                (unsigned long long)status_u64(mid, "retries"), (unsigned long long)at_stop,
                (unsigned long long)ch_u64(0, "SELECT count() FROM flows"));
    /* A killed shard refuses at once; one stopped with TERM takes inserts during its graceful
     * shutdown (several seconds under load), so only the kill pins down the outage's timing. */
    if (strcmp(how, "kill") == 0) {
        cr_assert(status_u64(mid, "retries") > 0, "no failed attempt while down: %s", mid);
        /* the shard that stayed up kept taking batches meanwhile */
        cr_assert(ch_u64(0, "SELECT count() FROM flows") > at_stop, "shard 1 took nothing more");
    }
    free(mid);
    cr_assert(ch_start(1));
    int st;
    cr_assert(eq(int, waitpid(rp, &st, 0), rp));
    cr_assert(eq(int, WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0), "replay failed");
    char *s = wait_drained(0, replay_sent(0), 60000);
    cr_assert(eq(u64, status_u64(s, "rejected_batches"), 0));
    cr_assert(eq(u64, status_u64(s, "dropped_batches"), 0));
    cr_assert(eq(u64, status_u64(s, "mem_dropped_rows"), 0));
    cr_log_info("after a shard %s: %s", how, s); /* --verbose shows batches_found, retries */
    free(s);
    assert_same_as_store(0, 500);
}

Test(clickhouse, a_shard_stopped_mid_replay_loses_and_doubles_nothing)
{
    shard_outage("stop");
}

/* SIGKILL may land in the middle of an insert: whether it was committed is then unknown, and the
 * batch-id check must settle it. */
Test(clickhouse, a_shard_killed_mid_replay_loses_and_doubles_nothing)
{
    shard_outage("kill");
}

/* Spool files as a crashed run leaves them: batch A reached shard 1 (it is there already),
 * batch B was pinned to it but never arrived. The next run must send B and only B. */
Test(clickhouse, spooled_batches_are_checked_not_resent)
{
    char db[256], spool[300], path[600], tmp[600];
    snprintf(db, sizeof db, "/tmp/ns2flows-it-XXXXXX");
    cr_assert(mkdtemp(db) != NULL);
    snprintf(spool, sizeof spool, "%s/spool", db);
    cr_assert(eq(int, mkdir(spool, 0755), 0));
    const int64_t recv_ms = 1700000000000;
    const uint64_t ids[2] = {0x0a0a0a0a0a0a0a0aull, 0x0b0b0b0b0b0b0b0bull};
    const size_t nrows[2] = {300, 70};
    for (int b = 0; b < 2; b++) {
        uint8_t *buf = calloc(nrows[b], SNK_ROW_BYTES);
        for (size_t i = 0; i < nrows[b]; i++) {
            eng_flow f = {.first_ms = recv_ms - 1000,
                          .last_ms = recv_ms,
                          .packets = 1,
                          .bytes = 100 + i,
                          .proto = 17};
            ns_addr_from_v4(&f.src, 0x0a000000u + (uint32_t)i);
            snk_encode_row(buf + i * SNK_ROW_BYTES, ids[b], recv_ms, &f);
        }
        snprintf(path, sizeof path, "%s/b%016llx-%016llx-%u.s0.rb", spool, (unsigned long long)b,
                 (unsigned long long)ids[b], (unsigned)(recv_ms / 86400000));
        FILE *f = fopen(path, "w");
        cr_assert(f != NULL);
        cr_assert(eq(sz, fwrite(buf, SNK_ROW_BYTES, nrows[b], f), nrows[b]));
        fclose(f);
        if (b == 0)
            snprintf(tmp, sizeof tmp, "%s", path);
        free(buf);
    }
    ch_post(0, "INSERT INTO flows FORMAT RowBinary", tmp); /* A made it before the "crash" */
    cr_assert(eq(u64, ch_u64(0, "SELECT count() FROM flows"), 300));

    start_daemon_in(0, 1, "", db);
    char *s = NULL;
    for (int waited = 0;; waited += 100) {
        s = status(0);
        if (status_u64(s, "spool_batches") == 0)
            break;
        cr_assert(lt(int, waited, it_ms(20000)), "spool not drained: %s", s);
        free(s);
        it_sleep_ms(100);
    }
    cr_assert(eq(u64, status_u64(s, "batches_found"), 1), "%s", s);
    cr_assert(eq(u64, status_u64(s, "batches_sent"), 2), "%s", s);
    cr_assert(eq(u64, status_u64(s, "rejected_batches"), 0), "%s", s);
    free(s);
    cr_assert(eq(u64, ch_u64(0, "SELECT count() FROM flows"), 370));
    cr_assert(
        eq(u64, ch_u64(0, "SELECT count() FROM flows WHERE batch_id = 723401728380766730"), 300));
}

Test(clickhouse, a_batch_the_server_refuses_for_good_goes_to_rejected)
{
    /* 208-byte rows where the sink sends 145: "Cannot read all data" for any batch < 208 rows */
    ch_post(0,
            "CREATE TABLE narrow (batch_id UInt64, pad FixedString(200)) ENGINE = MergeTree "
            "ORDER BY batch_id",
            NULL);
    start_daemon(0, 1, "clickhouse_table = narrow\nclickhouse_batch_rows = 100");
    cr_assert(eq(int, replay(0, NULL, "1"), 0));
    char *s = wait_drained(0, replay_sent(0), 20000);
    uint64_t rejected = status_u64(s, "rejected_batches");
    cr_assert(gt(u64, rejected, 0), "not rejected: %s", s);
    cr_assert(eq(u64, status_u64(s, "rejected_rows"), status_u64(s, "rows_in")));
    cr_assert(eq(u64, status_u64(s, "batches_sent"), 0));
    free(s);
    cr_assert(eq(u64, ch_u64(0, "SELECT count() FROM narrow"), 0));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls '%s/spool/rejected' | wc -l) -eq %llu", daemons[0].db,
             (unsigned long long)rejected);
    cr_assert(eq(int, system(cmd), 0), "rejected/ does not hold the batches");
    snprintf(cmd, sizeof cmd, "grep -q 'rejected: HTTP 500: Code: 33' '%s/ns2flowslog.txt'",
             daemons[0].db);
    cr_assert(eq(int, system(cmd), 0), "no log line names the rejection");
}
