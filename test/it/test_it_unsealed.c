/* Integration: unsealed_memory. `ns2flows ingest -c FILE` with the smallest cap (64M, about
 * 460 000 rows) ingests a generated capture of 600 000 flows in one minute of capture time: it
 * seals early instead of dropping (every flow stored, the minute cut into several segments).
 * The daemon then opened on that folder shows the cap and the new counters in /api/v1/status and
 * /metrics, and answers every flow. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

static uint64_t status_u64(const it_daemon *d, const char *key)
{
    char *body = NULL;
    uint64_t v = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
    cr_assert(it_json_u64(body, key, &v), "%s in %s", key, body);
    free(body);
    return v;
}

Test(it_unsealed, offline_ingest_past_the_cap_stores_every_flow, .timeout = 120)
{
    char dir[] = "/tmp/ns2flows-it-XXXXXX", db[200], pcap[300], conf[300], out[300], bin[512];
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(pcap, sizeof pcap, "%s/v5.pcap", dir);
    snprintf(conf, sizeof conf, "%s/netsaw.conf", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);

    snprintf(bin, sizeof bin, "%s/ns2flows-gen", it_bin());
    const char *gen[] = {bin,  "--format", "v5",         "--flows", "600000", "--duration",
                         "50", "--start",  "1767225605", "--out",   pcap,     NULL};
    cr_assert(eq(int, it_run(gen, NULL), 0));
    FILE *f = fopen(conf, "w");
    cr_assert(f != NULL);
    fputs("unsealed_memory = 64M\nseal_delay = 0\n", f);
    cr_assert(eq(int, fclose(f), 0));

    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    const char *ingest[] = {bin, "ingest", "-c", conf, "--db", db, pcap, NULL};
    cr_assert(eq(int, it_run(ingest, out), 0));
    char text[4096] = "";
    f = fopen(out, "r");
    cr_assert(f != NULL);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    cr_assert(strstr(text, "600000 flows") != NULL, "%s", text);
    cr_assert(strstr(text, " 0 not stored") != NULL, "%s", text);

    it_daemon d;
    const char *extra[] = {"-c", conf, NULL};
    cr_assert(it_daemon_start_ex(&d, db, extra));
    cr_expect(eq(u64, status_u64(&d, "flows_stored") + 0, 0), "nothing new arrived");
    cr_expect(eq(u64, status_u64(&d, "unsealed_bytes_max"), 64u << 20));
    cr_expect(le(u64, status_u64(&d, "unsealed_bytes"), 64u << 20));
    cr_expect(eq(u64, status_u64(&d, "flows_dropped_memory"), 0));
    /* 600 000 rows of 144 bytes do not fit in 64 MiB: the minute was cut and sealed early */
    cr_expect(ge(u64, status_u64(&d, "segments"), 4));
    char *body = NULL;
    uint64_t flows = 0;
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/summary", &body), 200));
    cr_assert(it_json_u64(body, "flows", &flows));
    free(body);
    cr_expect(eq(u64, flows, 600000));
    cr_assert(eq(int, it_http_get(d.http, "/metrics", &body), 200));
    cr_expect(strstr(body, "\nns2flows_db_flows_dropped_memory_total 0\n") != NULL);
    cr_expect(strstr(body, "\nns2flows_db_unsealed_bytes_max 67108864\n") != NULL);
    free(body);
    cr_assert(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(dir);
}
