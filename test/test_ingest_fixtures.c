/* Every NetFlow v5/v9/IPFIX capture in ../shared/fixtures, ingested offline through the real
 * decoders into a real store, must give the flows, packets, bytes and per-source totals that
 * nfdump recorded beside it. Where nfdump is known to be wrong (fixtures README), the difference
 * is listed below with its reason and checked against our own expectation instead. */
#include "engine/query.h"
#include "ingest/ingest.h"
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>

typedef struct scenario {
    const char *name;     /* expected file prefix, under expected/ or generated/ */
    const char *files[5]; /* captures replayed in this order */
    bool dport_999x;      /* pmacct: only UDP to 9991/9992 */
} scenario;

typedef struct outcome {
    uint64_t flows, packets, bytes;
    int mismatches;
} outcome;

static int cmp_bytes_desc(const void *a, const void *b)
{
    const it_addr_total *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : strcmp(x->addr, y->addr);
}

/* Ingests one scenario into a fresh store and compares with nfdump. Returns 0 if equal. */
static int check(const char *fixtures, const char *expected, const char *const *files,
                 size_t nfiles, bool dport_999x, outcome *got, char *why, size_t whycap)
{
    char dir[] = "/tmp/ns2flows-it-fx-XXXXXX", err[512], path[700];
    eng_db *db;
    ing_exporters *ex;
    ing_offline_stats ost;
    const char *paths[8];
    char pbuf[8][600];
    static const uint16_t ports[] = {9991, 9992};
    ing_offline_opts oo = {.dports = dport_999x ? ports : NULL, .ndports = dport_999x ? 2 : 0};
    eng_db_opts dbo = {.no_sealer_thread = true};
    int bad = 0;
    why[0] = 0;
    cr_assert(mkdtemp(dir) != NULL);
    cr_assert(eq(int, eng_db_open(dir, &dbo, &db, err, sizeof err), 0));
    cr_assert(eq(int, ing_exporters_new(64, &ex), 0));
    for (size_t i = 0; i < nfiles; i++) {
        snprintf(pbuf[i], sizeof pbuf[i], "%s/%s", fixtures, files[i]);
        paths[i] = pbuf[i];
    }
    cr_assert(eq(int, ing_offline(db, ex, paths, nfiles, &oo, &ost, err, sizeof err), 0), "%s",
              err);
    /* half of it sealed into segments, the rest still open: answers must not care */
    eng_db_seal_due(db, INT64_MAX / 2, false);

    qry_totals t;
    cr_assert(eq(int, qry_summary(db, INT64_MIN / 4, INT64_MAX / 4, &t), 0));
    got->flows = t.flows;
    got->packets = t.packets;
    got->bytes = t.bytes;

    it_nfdump_totals want;
    snprintf(path, sizeof path, "%s/%s.nfdump.txt", fixtures, expected);
    cr_assert(it_nfdump_totals_read(path, &want) || want.flows == 0, "cannot read %s", path);
    if (t.flows != want.flows || t.packets != want.packets || t.bytes != want.bytes) {
        snprintf(why, whycap,
                 "totals %llu/%llu/%llu, nfdump %llu/%llu/%llu (flows/packets/bytes)",
                 (unsigned long long)t.flows, (unsigned long long)t.packets,
                 (unsigned long long)t.bytes, (unsigned long long)want.flows,
                 (unsigned long long)want.packets, (unsigned long long)want.bytes);
        bad = 1;
    }

    /* top 10 sources by bytes: the same byte counts as nfdump's per-flow CSV summed */
    static it_addr_total exp[8192];
    snprintf(path, sizeof path, "%s/%s.nfdump.csv", fixtures, expected);
    size_t ne = it_nfdump_csv_by_src(path, exp, 8192);
    qsort(exp, ne, sizeof exp[0], cmp_bytes_desc);
    qry_top_result top;
    cr_assert(eq(int, qry_top(db, INT64_MIN / 4, INT64_MAX / 4, QRY_BY_SRCADDR, QRY_M_BYTES, 10,
                              &top),
                 0));
    size_t k = ne < 10 ? ne : 10;
    if (!bad && top.n != k) {
        snprintf(why, whycap, "top-10 has %zu rows, nfdump %zu", top.n, k);
        bad = 1;
    }
    for (size_t i = 0; !bad && i < top.n && i < k; i++) {
        if (top.rows[i].t.bytes != exp[i].bytes) {
            char a[64];
            qry_key_fmt(QRY_BY_SRCADDR, &top.rows[i].key, a, sizeof a);
            snprintf(why, whycap, "top-10 rank %zu: %s %llu bytes, nfdump %s %llu", i, a,
                     (unsigned long long)top.rows[i].t.bytes, exp[i].addr,
                     (unsigned long long)exp[i].bytes);
            bad = 1;
        }
    }
    qry_top_free(&top);
    ing_exporters_free(ex);
    eng_db_close(db);
    it_rm_rf(dir);
    return bad;
}

/* Differences from nfdump that are nfdump's (fixtures README), each with what we give. */
typedef struct known_diff {
    const char *name;
    uint64_t flows, packets, bytes;
    const char *reason;
} known_diff;

static const known_diff *find_known(const known_diff *k, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(name, k[i].name))
            return &k[i];
    return NULL;
}

static void run_all(const scenario *s, size_t n, const known_diff *known, size_t nknown)
{
    const char *fx = it_fixtures();
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char why[512];
        outcome got;
        size_t nf = 0;
        while (nf < 5 && s[i].files[nf])
            nf++;
        int bad = check(fx, s[i].name, s[i].files, nf, s[i].dport_999x, &got, why, sizeof why);
        const known_diff *kd = find_known(known, nknown, s[i].name);
        if (kd) {
            bool ours = got.flows == kd->flows && got.packets == kd->packets &&
                        got.bytes == kd->bytes;
            cr_expect(ours, "%s: known nfdump difference (%s) expected %llu/%llu/%llu, got %s",
                      s[i].name, kd->reason, (unsigned long long)kd->flows,
                      (unsigned long long)kd->packets, (unsigned long long)kd->bytes, why);
            failures += !ours;
        } else {
            cr_expect(bad == 0, "%s: %s", s[i].name, why);
            failures += bad;
        }
    }
    cr_log_info("%zu scenarios, %d differ", n, failures);
}

/* Scenarios for every capture of one folder: expected/<exp_dir>/<basename>. */
static size_t list_dir(const char *fx, const char *dir, const char *exp_dir, const char *skip,
                       bool dport, scenario *out, size_t cap)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", fx, dir);
    DIR *d = opendir(path);
    struct dirent *de;
    size_t n = 0;
    cr_assert(d != NULL, "cannot list %s (NS_FIXTURES=%s)", path, fx);
    while ((de = readdir(d)) != NULL && n < cap) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".pcap") != 0)
            continue;
        if (skip && strstr(de->d_name, skip))
            continue;
        char *file = malloc(700), *name = malloc(700);
        snprintf(file, 700, "%s/%s", dir, de->d_name);
        snprintf(name, 700, "%s/%.*s", exp_dir, (int)(len - 5), de->d_name);
        memset(&out[n], 0, sizeof out[n]);
        out[n].name = name;
        out[n].files[0] = file;
        out[n].dport_999x = dport;
        n++;
    }
    closedir(d);
    return n;
}

static void free_listed(scenario *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((void *)(uintptr_t)s[i].name);
        free((void *)(uintptr_t)s[i].files[0]);
    }
}

#define AKV "real/akvorado/"
Test(fixtures, akvorado_netflow_and_ipfix, .timeout = 120)
{
    static const scenario s[] = {
        {"expected/real/akvorado/nfv5", {AKV "netflow__nfv5.pcap"}, false},
        {"expected/real/akvorado/nfv9-template-data",
         {AKV "netflow__template.pcap", AKV "netflow__data.pcap"}, false},
        {"expected/real/akvorado/nfv9-data+templates", {AKV "netflow__data+templates.pcap"}, false},
        {"expected/real/akvorado/nfv9-options-template-data",
         {AKV "netflow__options-template.pcap", AKV "netflow__options-data.pcap",
          AKV "netflow__template.pcap", AKV "netflow__data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-samplingrate",
         {AKV "netflow__samplingrate-template.pcap", AKV "netflow__samplingrate-data.pcap"}, false},
        {"expected/real/akvorado/nfv9-multiplesamplingrates",
         {AKV "netflow__multiplesamplingrates-options-template.pcap",
          AKV "netflow__multiplesamplingrates-options-data.pcap",
          AKV "netflow__multiplesamplingrates-template.pcap",
          AKV "netflow__multiplesamplingrates-data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-icmp",
         {AKV "netflow__icmp-template.pcap", AKV "netflow__icmp-data.pcap"}, false},
        {"expected/real/akvorado/nfv9-nat", {AKV "netflow__nat.pcap"}, false},
        {"expected/real/akvorado/ipfix-mpls", {AKV "netflow__mpls.pcap"}, false},
        {"expected/real/akvorado/ipfix-physicalinterfaces",
         {AKV "netflow__physicalinterfaces.pcap"}, false},
        {"expected/real/akvorado/ipfix-datalink",
         {AKV "netflow__datalink-template.pcap", AKV "netflow__datalink-data.pcap"}, false},
        {"expected/real/akvorado/ipfix-eompls-cw",
         {AKV "netflow__ethernet-over-mpls-with-control-word-template.pcap",
          AKV "netflow__ethernet-over-mpls-with-control-word-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-srv6",
         {AKV "netflow__ipfix-srv6-template.pcap", AKV "netflow__ipfix-srv6-data.pcap"}, false},
        {"expected/real/akvorado/ipfixprobe",
         {AKV "netflow__ipfixprobe-templates.pcap", AKV "netflow__ipfixprobe-data.pcap"}, false},
        {"expected/real/akvorado/ipfix-juniper-cpid",
         {AKV "netflow__juniper-cpid-template.pcap", AKV "netflow__juniper-cpid-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-v10-with-mpls-labels",
         {AKV "top__ipfix_v10_with_mpls_labels.pcap"}, false},
    };
    static const known_diff known[] = {{"", 0, 0, 0, ""}};
    run_all(s, sizeof s / sizeof s[0], known, 0);
}

Test(fixtures, logstash_vendor_payloads, .timeout = 120)
{
    static scenario s[128];
    size_t n = list_dir(it_fixtures(), "real/logstash-codec-netflow/pcap",
                        "expected/real/logstash-codec-netflow", NULL, false, s, 128);
    cr_assert(n > 40);
    run_all(s, n, NULL, 0);
    free_listed(s, n);
}

Test(fixtures, pmacct_test_automation, .timeout = 120)
{
    static scenario s[64];
    size_t n = list_dir(it_fixtures(), "real/pmacct-test-automation",
                        "expected/real/pmacct-test-automation", NULL, true, s, 64);
    cr_assert(n > 10);
    run_all(s, n, NULL, 0);
    free_listed(s, n);
}

Test(fixtures, ipfixcol2_and_generated, .timeout = 120)
{
    static scenario s[64];
    size_t n = list_dir(it_fixtures(), "generated", "generated", "sfprobe", false, s, 63);
    cr_assert(n >= 10);
    s[n].name = "expected/real/ipfixcol2/example_flows";
    s[n].files[0] = "real/ipfixcol2/example_flows.pcap";
    run_all(s, n + 1, NULL, 0);
    free_listed(s, n);
}
