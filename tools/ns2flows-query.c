/* tools/ns2flows-query.c — offline queries over a SESSIONDB, shaped like nfdump so operators
 * feel at home: -I for totals, -s KEY[/ORDER] -n N for top-N, -t for a time window, and the
 * filter as the last argument. Opens the database read-only, so it runs beside the daemon (it
 * sees the sealed segments; the minute still open lives in the daemon's memory, ask its HTTP API
 * for that). */
#include "engine/query.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ns2flows-query [--db DIR] [-t FROM-TO] (-I | -s KEY[/ORDER] [-n N]) "
            "[-o text|csv|json] [FILTER]\n"
            "  --db DIR      database folder (default ./SESSIONDB)\n"
            "  -t FROM-TO    time window: yyyy/MM/dd.hh:mm:ss-yyyy/MM/dd.hh:mm:ss (UTC), epoch\n"
            "                seconds, or RFC 3339; either side may be empty\n"
            "  -I            totals (flows, packets, bytes, first, last)\n"
            "  -s KEY/ORDER  top-N by srcip, dstip, proto, srcport, dstport, router (exporter),\n"
            "                inif, outif, srcas, dstas, tos, vlan;\n"
            "                ORDER: bytes (default), packets, flows\n"
            "  -n N          rows of a top-N (default 10)\n"
            "  -o FORMAT     text (default), csv or json\n"
            "  FILTER        nfdump-style filter, e.g. 'proto tcp and dst port 443'\n");
}

/* nfdump's yyyy/MM/dd.hh:mm:ss (UTC), or what ns_time_parse takes. */
static int parse_when(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
    if (sscanf(s, "%4d/%2d/%2d%n", &y, &mo, &d, &used) == 3) {
        const char *p = s + used;
        if (*p == '.') {
            int more = 0;
            if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &more) != 2)
                return NS_E_PARSE;
            p += 1 + more;
            if (*p == ':' && sscanf(p + 1, "%2d%n", &sec, &more) == 1)
                p += 1 + more;
        }
        if (*p)
            return NS_E_PARSE;
        char iso[40];
        snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, sec);
        return ns_time_parse(iso, ms);
    }
    return ns_time_parse(s, ms);
}

/* "FROM-TO": the '-' that separates is the one followed by a digit after a complete left side;
 * RFC 3339 dates contain '-' too, so try each candidate. */
static int parse_window(const char *s, int64_t *from, int64_t *to)
{
    *from = INT64_MIN / 4;
    *to = INT64_MAX / 4;
    for (const char *dash = strchr(s, '-'); dash; dash = strchr(dash + 1, '-')) {
        char left[64];
        size_t l = (size_t)(dash - s);
        if (l >= sizeof left)
            break;
        memcpy(left, s, l);
        left[l] = 0;
        int64_t f = *from, t = *to;
        if ((l == 0 || parse_when(left, &f) == 0) && (!dash[1] || parse_when(dash + 1, &t) == 0)) {
            *from = f;
            *to = t;
            return 0;
        }
    }
    return parse_when(s, from) == 0 ? 0 : NS_E_PARSE; /* a single time: from then on */
}

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03d", (int)(ms % 1000 + 1000) % 1000);
}

/* 1234567 -> "1.2 M", as nfdump prints counts */
static void fmt_count(uint64_t v, char *buf, size_t cap)
{
    if (v < 1000000)
        snprintf(buf, cap, "%" PRIu64, v);
    else if (v < 1000000000)
        snprintf(buf, cap, "%.1f M", (double)v / 1e6);
    else
        snprintf(buf, cap, "%.1f G", (double)v / 1e9);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'D'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *db_path = "./SESSIONDB", *window = NULL, *stat = NULL, *fmt = "text";
    bool summary = false;
    long limit = 10;
    int c;
    while ((c = getopt_long(argc, argv, "It:s:n:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'D':
            db_path = optarg;
            break;
        case 'I':
            summary = true;
            break;
        case 't':
            window = optarg;
            break;
        case 's':
            stat = optarg;
            break;
        case 'n':
            limit = strtol(optarg, NULL, 10);
            break;
        case 'o':
            fmt = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (summary == (stat != NULL) || limit < 1 || limit > 1000000 ||
        (strcmp(fmt, "text") && strcmp(fmt, "csv") && strcmp(fmt, "json"))) {
        usage(stderr);
        return 2;
    }
    /* the filter may come as several words, as nfdump allows */
    char filter_text[QRY_FILTER_MAX_LEN + 1] = "";
    for (int i = optind; i < argc; i++) {
        if (strlen(filter_text) + strlen(argv[i]) + 2 > sizeof filter_text) {
            fprintf(stderr, "ns2flows-query: filter longer than %d bytes\n", QRY_FILTER_MAX_LEN);
            return 2;
        }
        if (i > optind)
            strcat(filter_text, " ");
        strcat(filter_text, argv[i]);
    }
    char err[512];
    qry_filter *filter = NULL;
    if (filter_text[0] && qry_filter_compile(filter_text, &filter, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows-query: filter: %s\n", err);
        return 2;
    }
    int64_t from = INT64_MIN / 4, to = INT64_MAX / 4;
    if (window && parse_window(window, &from, &to) < 0) {
        fprintf(stderr, "ns2flows-query: -t '%s' is not FROM-TO\n", window);
        qry_filter_free(filter);
        return 2;
    }
    qry_by by = QRY_BY_SRCADDR;
    qry_metric metric = QRY_M_BYTES;
    if (stat) {
        static const struct {
            const char *nfdump;
            qry_by by;
        } keys[] = {{"srcip", QRY_BY_SRCADDR},    {"dstip", QRY_BY_DSTADDR},
                    {"proto", QRY_BY_PROTO},      {"srcport", QRY_BY_SRCPORT},
                    {"dstport", QRY_BY_DSTPORT},  {"router", QRY_BY_EXPORTER},
                    {"exporter", QRY_BY_EXPORTER}};
        char key[32];
        const char *slash = strchr(stat, '/');
        size_t kl = slash ? (size_t)(slash - stat) : strlen(stat);
        bool ok = kl < sizeof key && (!slash || qry_metric_parse(slash + 1, &metric) == 0);
        if (ok) {
            memcpy(key, stat, kl);
            key[kl] = 0;
            ok = false;
            /* nfdump's names first, then ours (inif, srcas, vlan... are the same in both) */
            for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
                if (strcmp(key, keys[i].nfdump) == 0) {
                    by = keys[i].by;
                    ok = true;
                }
            if (!ok)
                ok = qry_by_parse(key, &by) == 0;
        }
        if (!ok) {
            fprintf(stderr, "ns2flows-query: -s '%s': expected KEY[/bytes|packets|flows]\n", stat);
            qry_filter_free(filter);
            return 2;
        }
    }

    eng_db *db;
    eng_db_opts o = {.read_only = true};
    ns_log_set_level(NS_LOG_ERROR);
    if (eng_db_open(db_path, &o, &db, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows-query: %s\n", err);
        qry_filter_free(filter);
        return 1;
    }
    int rc;
    char t1[40], t2[40];
    if (summary) {
        qry_totals t;
        rc = qry_summary(db, from, to, filter, &t);
        if (rc == 0) {
            fmt_time(t.first_ms, t1, sizeof t1);
            fmt_time(t.last_ms, t2, sizeof t2);
            if (!strcmp(fmt, "json"))
                printf("{\"flows\":%" PRIu64 ",\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64
                       ",\"first_ms\":%" PRId64 ",\"last_ms\":%" PRId64 "}\n",
                       t.flows, t.packets, t.bytes, t.first_ms, t.last_ms);
            else if (!strcmp(fmt, "csv"))
                printf("flows,packets,bytes,first,last\n%" PRIu64 ",%" PRIu64 ",%" PRIu64
                       ",%s,%s\n",
                       t.flows, t.packets, t.bytes, t1, t2);
            else
                printf("Flows: %" PRIu64 "\nPackets: %" PRIu64 "\nBytes: %" PRIu64
                       "\nFirst: %s\nLast: %s\n",
                       t.flows, t.packets, t.bytes, t.flows ? t1 : "-", t.flows ? t2 : "-");
        }
    } else {
        qry_top_result r;
        rc = qry_top(db, from, to, filter, by, metric, (size_t)limit, &r);
        if (rc == 0) {
            const char *kname = qry_by_name(by);
            char key[64], pk[32], by_[32];
            if (!strcmp(fmt, "csv"))
                printf("%s,flows,packets,bytes\n", kname);
            else if (!strcmp(fmt, "json"))
                printf("{\"rows\":[");
            else
                printf("Top %ld %s ordered by %s:\n%-40s %10s %12s %14s\n", limit, kname,
                       qry_metric_name(metric), kname, "flows", "packets", "bytes");
            for (size_t i = 0; i < r.n; i++) {
                qry_key_fmt(by, &r.rows[i].key, key, sizeof key);
                const qry_totals *t = &r.rows[i].t;
                if (!strcmp(fmt, "csv")) {
                    printf("%s,%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n", key, t->flows, t->packets,
                           t->bytes);
                } else if (!strcmp(fmt, "json")) {
                    printf("%s{\"%s\":\"%s\",\"flows\":%" PRIu64 ",\"packets\":%" PRIu64
                           ",\"bytes\":%" PRIu64 "}",
                           i ? "," : "", kname, key, t->flows, t->packets, t->bytes);
                } else {
                    fmt_count(t->packets, pk, sizeof pk);
                    fmt_count(t->bytes, by_, sizeof by_);
                    printf("%-40s %10" PRIu64 " %12s %14s\n", key, t->flows, pk, by_);
                }
            }
            if (!strcmp(fmt, "json"))
                printf("],\"other_flows\":%" PRIu64 ",\"total_flows\":%" PRIu64 "}\n",
                       r.other.flows, r.total.flows);
            else if (!strcmp(fmt, "text"))
                printf("Summary: total flows: %" PRIu64 ", packets: %" PRIu64 ", bytes: %" PRIu64
                       ", groups: %" PRIu64 "\n",
                       r.total.flows, r.total.packets, r.total.bytes, r.groups);
            qry_top_free(&r);
        }
    }
    if (rc < 0)
        fprintf(stderr, "ns2flows-query: %s\n", ns_strerror(rc));
    eng_db_close(db);
    qry_filter_free(filter);
    return rc < 0 ? 1 : 0;
}
