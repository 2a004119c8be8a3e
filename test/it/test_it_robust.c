/* Integration: what a collector must survive — kill -9 (sealed minutes intact, nothing doubled,
 * checksums clean), a segment damaged while the daemon runs (quarantined, queries answer from
 * the rest), and hostile HTTP requests (oversized, too many parameters, invalid UTF-8). */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>

static uint64_t summary_flows(it_daemon *d)
{
    char *body;
    uint64_t f = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/summary", &body), 200));
    it_json_u64(body, "flows", &f);
    free(body);
    return f;
}

/* Names of the segment files in db (up to cap); returns how many. */
static int list_segments(const char *db, char names[][300], int cap)
{
    DIR *dir = opendir(db);
    struct dirent *de;
    int n = 0;
    cr_assert(dir != NULL);
    while ((de = readdir(dir)) != NULL && n < cap) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0)
            snprintf(names[n++], 300, "%s/%s", db, de->d_name);
    }
    closedir(dir);
    return n;
}

Test(it_robust, kill_9_keeps_every_sealed_flow_once, .timeout = 90)
{
    char pcap[600], bin[512], db[256];
    it_daemon d;
    snprintf(pcap, sizeof pcap, "%s/generated/softflowd-v9-nfdump_ipv6.pcap", it_fixtures());
    /* seal_delay 0 via a config file: a minute is sealed as soon as it ends */
    char conf[] = "/tmp/ns2flows-it-conf-XXXXXX";
    int fd = mkstemp(conf);
    cr_assert(fd >= 0);
    const char *text = "seal_delay = 0\n";
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    const char *extra[] = {"-c", conf, NULL};
    cr_assert(it_daemon_start_ex(&d, NULL, extra));
    snprintf(db, sizeof db, "%s", d.db);
    cr_assert(eq(int, it_replay(&d, pcap), 0));
    for (int w = 0; w < it_ms(10000) && summary_flows(&d) < 222; w += 50)
        it_sleep_ms(50);
    cr_assert(eq(u64, summary_flows(&d), 222));
    /* wait until the receive minute has been sealed (it ends within a minute) */
    char names[64][300];
    for (int w = 0; w < it_ms(70000) && list_segments(db, names, 64) == 0; w += 200)
        it_sleep_ms(200);
    cr_assert(list_segments(db, names, 64) > 0, "nothing sealed");
    kill(d.pid, SIGKILL);
    waitpid(d.pid, NULL, 0);
    d.pid = 0;

    snprintf(bin, sizeof bin, "%s/ns2flows-dump", it_bin());
    const char *verify[] = {bin, "--verify", db, NULL};
    cr_expect(eq(int, it_run(verify, NULL), 0), "segments verify after kill -9");
    cr_assert(it_daemon_start_ex(&d, db, extra), "restart after kill -9 (stale lock file)");
    /* everything was sealed before the kill: all of it is back, none of it twice */
    cr_expect(eq(u64, summary_flows(&d), 222));
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    unlink(conf);
    it_rm_rf(db);
}

Test(it_robust, segment_damaged_while_running_is_quarantined, .timeout = 90)
{
    char pcap[600], db[256], *body;
    it_daemon d;
    /* two separate sealed segments: ingest offline twice, each run seals its own */
    snprintf(db, sizeof db, "/tmp/ns2flows-it-XXXXXX");
    cr_assert(mkdtemp(db) != NULL);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    const char *ingest[] = {bin, "ingest", "--db", db, pcap, NULL};
    cr_assert(eq(int, it_run(ingest, NULL), 0));
    cr_assert(eq(int, it_run(ingest, NULL), 0));
    char names[64][300];
    cr_assert(eq(int, list_segments(db, names, 64), 2));
    cr_assert(it_daemon_start(&d, db));
    cr_expect(eq(u64, summary_flows(&d), 58));

    /* flip a byte in the middle of one segment's column data */
    FILE *f = fopen(names[0], "r+b");
    cr_assert(f != NULL);
    fseek(f, 40, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 40, SEEK_SET);
    fputc(ch ^ 0xff, f);
    fclose(f);
    cr_expect(eq(u64, summary_flows(&d), 58), "totals come from the footer: still 58");
    /* a question that reads the damaged column (the first one: times; a plain top-N reads no
     * times of whole segments, and a column no query reads is not checked until one does) */
    cr_assert(eq(
        int,
        it_http_get(d.http, "/api/v1/top?by=srcaddr&limit=100&filter=duration%20%3E%3D%200", &body),
        200));
    uint64_t total = 0;
    it_json_u64(strstr(body, "\"total\":"), "flows", &total);
    free(body);
    cr_expect(eq(u64, total, 29), "the damaged segment is skipped, the other answers");
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    uint64_t q = 0;
    it_json_u64(body, "segments_quarantined", &q);
    free(body);
    cr_expect(eq(u64, q, 1));
    char qpath[400];
    snprintf(qpath, sizeof qpath, "%s/quarantine", db);
    cr_expect(eq(int, list_segments(qpath, names, 64), 1), "the file is kept in quarantine/");
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(db);
}

Test(it_robust, hostile_http_requests_get_4xx_and_the_daemon_lives, .timeout = 60)
{
    it_daemon d;
    char *body, *path = malloc(70000);
    cr_assert(it_daemon_start(&d, NULL));
    /* a 64 KB URL */
    strcpy(path, "/api/v1/summary?from=");
    memset(path + strlen(path), '9', 65000);
    path[65021] = 0;
    int st = it_http_get(d.http, path, &body);
    cr_expect(st >= 400 && st < 500, "64 KB URL: %d", st);
    free(body);
    /* more parameters than the server takes */
    strcpy(path, "/api/v1/top?");
    for (int i = 0; i < 40; i++)
        sprintf(path + strlen(path), "%sp%d=1", i ? "&" : "", i);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 400));
    free(body);
    /* invalid UTF-8 in a value is echoed back as valid JSON */
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/top?by=%ff%fe", &body), 400));
    cr_expect(body && strstr(body, "\\ufffd") != NULL, "%s", body);
    free(body);
    /* a filter nested past the cap */
    strcpy(path, "/api/v1/summary?filter=");
    for (int i = 0; i < 100; i++)
        strcat(path, "(");
    strcat(path, "any");
    for (int i = 0; i < 100; i++)
        strcat(path, ")");
    cr_expect(eq(int, it_http_get(d.http, path, &body), 400));
    free(body);
    /* still answering */
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    free(body);
    free(path);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}
