/* Every NetFlow v5/v9/IPFIX capture in ../shared/fixtures, ingested offline through the real
 * decoders into a real store, must give the flows, packets, bytes, and the top-10 sources,
 * destinations, protocols and destination ports by bytes and by flows that nfdump's per-flow
 * CSV beside it adds up to (ICMP left out of the port lists: nfdump prints its port as 0). Where
 * nfdump is known to be wrong (fixtures README), the difference is listed below with its reason and
 * checked against our own expectation instead. */
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

/* One nfdump CSV row's group key and counters. */
typedef struct csv_row {
    char key[64];
    uint64_t bytes;
} csv_row;

static int cmp_csv_key(const void *a, const void *b)
{
    return strcmp(((const csv_row *)a)->key, ((const csv_row *)b)->key);
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The values (bytes, or flows) of the largest groups of nfdump's per-flow CSV grouped by
 * column col (3 sa, 4 da, 6 dp, 7 pr), largest first, at most cap; ICMP rows skipped when asked
 * (nfdump prints ICMP's destination port as 0, we key it by type and code). Returns how many. */
static size_t csv_top(const char *path, int col, bool flows, bool skip_icmp, uint64_t *out,
                      size_t cap)
{
    static csv_row rows[1 << 17];
    static uint64_t vals[1 << 17];
    size_t n = 0, ng = 0;
    char line[4096];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f) && n < sizeof rows / sizeof rows[0]) {
        char *fields[16];
        int nf = 0;
        if (line[0] < '0' || line[0] > '9')
            continue;
        for (char *save = NULL, *tok = strtok_r(line, ",", &save); tok && nf < 16;
             tok = strtok_r(NULL, ",", &save))
            fields[nf++] = tok;
        if (nf < 13 || strchr(fields[0], '-') == NULL)
            continue;
        if (skip_icmp && (strcmp(fields[7], "ICMP") == 0 || strcmp(fields[7], "ICMP6") == 0))
            continue;
        snprintf(rows[n].key, sizeof rows[n].key, "%s", fields[col]);
        rows[n++].bytes = flows ? 1 : strtoull(fields[12], NULL, 10);
    }
    fclose(f);
    qsort(rows, n, sizeof rows[0], cmp_csv_key);
    for (size_t i = 0; i < n; ng++) {
        size_t j = i;
        vals[ng] = 0;
        while (j < n && strcmp(rows[j].key, rows[i].key) == 0)
            vals[ng] += rows[j++].bytes;
        i = j;
    }
    qsort(vals, ng, sizeof vals[0], cmp_u64_desc);
    size_t k = ng < cap ? ng : cap;
    memcpy(out, vals, k * sizeof *out);
    return k;
}

/* Our top-10 by key and metric, compared with nfdump's rank by rank (the values: groups of
 * equal value may list in another order). Returns 0, or 2 with the reason in why. */
static int compare_top(eng_db *db, const char *csv, qry_by by, int col, qry_metric m, char *why,
                       size_t whycap)
{
    uint64_t want[10];
    bool dport = by == QRY_BY_DSTPORT;
    size_t k = csv_top(csv, col, m == QRY_M_FLOWS, dport, want, 10);
    qry_filter *f = NULL;
    char err[128];
    if (dport)
        cr_assert(eq(
            int, qry_filter_compile("not proto icmp and not proto icmp6", &f, err, sizeof err), 0));
    qry_top_result top;
    cr_assert(eq(int, qry_top(db, INT64_MIN / 4, INT64_MAX / 4, f, by, m, 10, &top), 0));
    qry_filter_free(f);
    int bad = 0;
    if (top.n != k) {
        snprintf(why, whycap, "top-10 by %s/%s has %zu rows, nfdump %zu", qry_by_name(by),
                 qry_metric_name(m), top.n, k);
        bad = 2;
    }
    for (size_t i = 0; !bad && i < k; i++) {
        uint64_t v = m == QRY_M_FLOWS ? top.rows[i].t.flows : top.rows[i].t.bytes;
        if (v != want[i]) {
            snprintf(why, whycap, "top-10 by %s/%s rank %zu: %llu, nfdump %llu", qry_by_name(by),
                     qry_metric_name(m), i, (unsigned long long)v, (unsigned long long)want[i]);
            bad = 2;
        }
    }
    qry_top_free(&top);
    return bad;
}

/* Ingests one scenario into a fresh store and compares with nfdump. Returns 0 if equal. */
/* Returns a mask: 1 = totals differ from nfdump's, 2 = the top-10 sources differ. */
static int check(const char *fixtures, const char *expected, const char *const *files,
                 size_t nfiles, bool dport_999x, outcome *got, it_nfdump_totals *want_out,
                 char *why, size_t whycap)
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
    cr_assert(eq(int, qry_summary(db, INT64_MIN / 4, INT64_MAX / 4, NULL, &t), 0));
    got->flows = t.flows;
    got->packets = t.packets;
    got->bytes = t.bytes;

    it_nfdump_totals want;
    snprintf(path, sizeof path, "%s/%s.nfdump.txt", fixtures, expected);
    cr_assert(it_nfdump_totals_read(path, &want) || want.flows == 0, "cannot read %s", path);
    if (t.flows != want.flows || t.packets != want.packets || t.bytes != want.bytes) {
        snprintf(why, whycap, "totals %llu/%llu/%llu, nfdump %llu/%llu/%llu (flows/packets/bytes)",
                 (unsigned long long)t.flows, (unsigned long long)t.packets,
                 (unsigned long long)t.bytes, (unsigned long long)want.flows,
                 (unsigned long long)want.packets, (unsigned long long)want.bytes);
        bad = 1;
    }
    *want_out = want;

    /* top 10 sources by bytes: the same byte counts as nfdump's per-flow CSV summed */
    static it_addr_total exp[8192];
    snprintf(path, sizeof path, "%s/%s.nfdump.csv", fixtures, expected);
    size_t ne = it_nfdump_csv_by_src(path, exp, 8192);
    qsort(exp, ne, sizeof exp[0], cmp_bytes_desc);
    qry_top_result top;
    cr_assert(eq(
        int, qry_top(db, INT64_MIN / 4, INT64_MAX / 4, NULL, QRY_BY_SRCADDR, QRY_M_BYTES, 10, &top),
        0));
    size_t k = ne < 10 ? ne : 10;
    if (!bad && top.n != k) {
        snprintf(why, whycap, "top-10 has %zu rows, nfdump %zu", top.n, k);
        bad = 2;
    }
    for (size_t i = 0; !bad && i < top.n && i < k; i++) {
        if (top.rows[i].t.bytes != exp[i].bytes) {
            char a[64];
            qry_key_fmt(QRY_BY_SRCADDR, &top.rows[i].key, a, sizeof a);
            snprintf(why, whycap, "top-10 rank %zu: %s %llu bytes, nfdump %s %llu", i, a,
                     (unsigned long long)top.rows[i].t.bytes, exp[i].addr,
                     (unsigned long long)exp[i].bytes);
            bad = 2;
        }
    }
    qry_top_free(&top);
    /* and the other keys an operator asks for first, by bytes and by flows */
    static const struct {
        qry_by by;
        int col;
    } keys[] = {{QRY_BY_SRCADDR, 3}, {QRY_BY_DSTADDR, 4}, {QRY_BY_PROTO, 7}, {QRY_BY_DSTPORT, 6}};
    for (size_t i = 0; !bad && i < sizeof keys / sizeof keys[0]; i++)
        for (int m = 0; !bad && m < 2; m++)
            bad = compare_top(db, path, keys[i].by, keys[i].col, m ? QRY_M_FLOWS : QRY_M_BYTES, why,
                              whycap);
    ing_exporters_free(ex);
    eng_db_close(db);
    it_rm_rf(dir);
    return bad;
}

/* Where we differ from nfdump on purpose, or where nfdump is known to be wrong (fixtures
 * README). Each kind states what must still hold. */
typedef enum {
    /* we apply a sampling rate nfdump 1.7.1 does not (in-record samplingInterval, IPFIX options
     * sampling, or a sampler nfdump did not find): flows equal, packets and bytes are ours */
    KD_SAMPLING,
    /* data sets that came before their template are held and decoded when it arrives; nfdump
     * drops them: more flows, the values are ours */
    KD_HELD,
    /* bidirectional records (RFC 5103 reverse IEs, v9 OUT_BYTES/OUT_PKTS, ASA responder
     * counters) become two rows: packets and bytes equal nfdump's, flows are more */
    KD_REVERSE,
    /* templates with IPv4 and IPv6 address fields: nfdump groups by the all-zero address of
     * the family it prefers, we by the address that is set: totals equal, top-10 not compared */
    KD_ADDR_FAMILY,
    /* the flow is only in a dataLinkFrameSection (IE 315, packet sampling): nfdump 1.7.1 stores
     * nothing; we decode the frame, one record = one packet of the frame's size */
    KD_FRAME_SECTION,
} kd_kind;

typedef struct known_diff {
    const char *name; /* suffix of the scenario name */
    kd_kind kind;
    uint64_t flows, packets, bytes; /* our answer, where the kind says the values are ours */
} known_diff;

static const known_diff known[] = {
    {"akvorado/nfv9-data+templates", KD_HELD, 21, 6600, 5832900},
    {"akvorado/nfv9-samplingrate", KD_SAMPLING, 6, 12288, 7659520},
    {"akvorado/nfv9-multiplesamplingrates", KD_SAMPLING, 12, 112000, 32332000},
    {"akvorado/ipfix-mpls", KD_SAMPLING, 2, 110, 9790},
    {"akvorado/ipfix-physicalinterfaces", KD_SAMPLING, 8, 29000, 31111000},
    {"akvorado/ipfix-v10-with-mpls-labels", KD_HELD, 108, 3190, 283910},
    {"pmacct-test-automation/104-IPFIXv10-IPv6-CISCO-sampling_option", KD_SAMPLING, 3, 30976,
     2721792},
    {"logstash-codec-netflow/netflow9_test_invalid01", KD_SAMPLING, 2, 200, 19400},
    {"akvorado/ipfixprobe", KD_REVERSE, 6, 0, 0},
    {"logstash-codec-netflow/ipfix_test_yaf", KD_REVERSE, 4, 0, 0},
    {"logstash-codec-netflow/netflow9_test_0length_fields", KD_REVERSE, 13, 0, 0},
    {"logstash-codec-netflow/netflow9_test_cisco_asa_2", KD_REVERSE, 34, 0, 0},
    {"logstash-codec-netflow/netflow9_test_fortigate_fortios_542_appid", KD_REVERSE, 34, 0, 0},
    {"akvorado/ipfix-datalink", KD_FRAME_SECTION, 1, 1, 114},
    {"akvorado/ipfix-eompls-cw", KD_FRAME_SECTION, 10, 10, 14557},
    {"akvorado/ipfix-srv6", KD_FRAME_SECTION, 1, 1, 118},
    {"akvorado/ipfix-juniper-cpid", KD_FRAME_SECTION, 1, 1, 118},
    {"logstash-codec-netflow/ipfix_test_procera", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/400-", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/401-", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/402-", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/500-", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/501-", KD_ADDR_FAMILY, 0, 0, 0},
    {"pmacct-test-automation/502-", KD_ADDR_FAMILY, 0, 0, 0},
};

static const known_diff *find_known(const char *name)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strstr(name, known[i].name))
            return &known[i];
    return NULL;
}

/* Does the outcome hold what the known difference promises? */
static bool known_holds(const known_diff *kd, int bad, const outcome *g, const it_nfdump_totals *w)
{
    switch (kd->kind) {
    case KD_SAMPLING:
        return g->flows == w->flows && g->flows == kd->flows && g->packets == kd->packets &&
               g->bytes == kd->bytes && g->packets > w->packets;
    case KD_HELD:
        return g->flows > w->flows && g->flows == kd->flows && g->packets == kd->packets &&
               g->bytes == kd->bytes;
    case KD_REVERSE:
        return g->packets == w->packets && g->bytes == w->bytes && g->flows > w->flows &&
               g->flows == kd->flows;
    case KD_ADDR_FAMILY:
        return (bad & 1) == 0;
    case KD_FRAME_SECTION:
        return w->flows == 0 && g->flows == kd->flows && g->packets == kd->packets &&
               g->bytes == kd->bytes;
    }
    return false;
}

static void run_all(const scenario *s, size_t n)
{
    const char *fx = it_fixtures();
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char why[512];
        outcome got;
        it_nfdump_totals want;
        size_t nf = 0;
        while (nf < 5 && s[i].files[nf])
            nf++;
        int bad =
            check(fx, s[i].name, s[i].files, nf, s[i].dport_999x, &got, &want, why, sizeof why);
        const known_diff *kd = find_known(s[i].name);
        if (kd) {
            bool ok = known_holds(kd, bad, &got, &want);
            cr_expect(ok, "%s: known difference (kind %d) does not hold: got %llu/%llu/%llu; %s",
                      s[i].name, kd->kind, (unsigned long long)got.flows,
                      (unsigned long long)got.packets, (unsigned long long)got.bytes, why);
            failures += !ok;
        } else {
            cr_expect(bad == 0, "%s: %s", s[i].name, why);
            failures += bad != 0;
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
         {AKV "netflow__template.pcap", AKV "netflow__data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-data+templates", {AKV "netflow__data+templates.pcap"}, false},
        {"expected/real/akvorado/nfv9-options-template-data",
         {AKV "netflow__options-template.pcap", AKV "netflow__options-data.pcap",
          AKV "netflow__template.pcap", AKV "netflow__data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-samplingrate",
         {AKV "netflow__samplingrate-template.pcap", AKV "netflow__samplingrate-data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-multiplesamplingrates",
         {AKV "netflow__multiplesamplingrates-options-template.pcap",
          AKV "netflow__multiplesamplingrates-options-data.pcap",
          AKV "netflow__multiplesamplingrates-template.pcap",
          AKV "netflow__multiplesamplingrates-data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-icmp",
         {AKV "netflow__icmp-template.pcap", AKV "netflow__icmp-data.pcap"},
         false},
        {"expected/real/akvorado/nfv9-nat", {AKV "netflow__nat.pcap"}, false},
        {"expected/real/akvorado/ipfix-mpls", {AKV "netflow__mpls.pcap"}, false},
        {"expected/real/akvorado/ipfix-physicalinterfaces",
         {AKV "netflow__physicalinterfaces.pcap"},
         false},
        {"expected/real/akvorado/ipfix-datalink",
         {AKV "netflow__datalink-template.pcap", AKV "netflow__datalink-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-eompls-cw",
         {AKV "netflow__ethernet-over-mpls-with-control-word-template.pcap",
          AKV "netflow__ethernet-over-mpls-with-control-word-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-srv6",
         {AKV "netflow__ipfix-srv6-template.pcap", AKV "netflow__ipfix-srv6-data.pcap"},
         false},
        {"expected/real/akvorado/ipfixprobe",
         {AKV "netflow__ipfixprobe-templates.pcap", AKV "netflow__ipfixprobe-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-juniper-cpid",
         {AKV "netflow__juniper-cpid-template.pcap", AKV "netflow__juniper-cpid-data.pcap"},
         false},
        {"expected/real/akvorado/ipfix-v10-with-mpls-labels",
         {AKV "top__ipfix_v10_with_mpls_labels.pcap"},
         false},
    };
    run_all(s, sizeof s / sizeof s[0]);
}

Test(fixtures, logstash_vendor_payloads, .timeout = 120)
{
    static scenario s[128];
    size_t n = list_dir(it_fixtures(), "real/logstash-codec-netflow/pcap",
                        "expected/real/logstash-codec-netflow", NULL, false, s, 128);
    cr_assert(n > 40);
    run_all(s, n);
    free_listed(s, n);
}

Test(fixtures, pmacct_test_automation, .timeout = 120)
{
    static scenario s[64];
    size_t n = list_dir(it_fixtures(), "real/pmacct-test-automation",
                        "expected/real/pmacct-test-automation", NULL, true, s, 64);
    cr_assert(n > 10);
    run_all(s, n);
    free_listed(s, n);
}

Test(fixtures, ipfixcol2_and_generated, .timeout = 120)
{
    static scenario s[64];
    size_t n = list_dir(it_fixtures(), "generated", "generated", "sfprobe", false, s, 63);
    cr_assert(n >= 10);
    s[n].name = "expected/real/ipfixcol2/example_flows";
    s[n].files[0] = "real/ipfixcol2/example_flows.pcap";
    run_all(s, n + 1);
    free_listed(s, n);
}
