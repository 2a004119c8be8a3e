/* tools/ns2flows-query.c — offline queries over a SESSIONDB, shaped like nfdump so operators
 * feel at home: -I for totals, -s KEY[/ORDER] -n N for top-N, -t for a time window, and the
 * filter as the last argument. Opens the database read-only, so it runs beside the daemon (it
 * sees the sealed segments; the minute still open lives in the daemon's memory, ask its HTTP API
 * for that). */
#include "engine/query.h"
#include "http/http.h"

#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ns2flows-query [--db DIR] [-t FROM-TO] [-I | -s KEY[/ORDER] [-n N] |\n"
            "                      -A KEY,KEY... [-O ORDER] [-n N]] [-o table|csv|json] [FILTER]\n"
            "  --db DIR      database folder (default ./SESSIONDB)\n"
            "  -t FROM-TO    time window: yyyy/MM/dd.hh:mm:ss-yyyy/MM/dd.hh:mm:ss (UTC), epoch\n"
            "                seconds, or RFC 3339; either side may be empty\n"
            "  -I            totals (flows, packets, bytes, first, last); the default\n"
            "  -s KEY/ORDER  top-N by srcip, dstip, proto, srcport, dstport, router (exporter),\n"
            "                inif, outif, srcas, dstas, tos, vlan, app, conversation,\n"
            "                srcnet/N, dstnet/N (srcip4/N, dstip4/N as nfdump spells them);\n"
            "                ORDER: bytes (default), packets, flows, bps, pps\n"
            "  -A KEYS       top-N over several keys at once (comma-separated, same names)\n"
            "  -O ORDER      the order of an -A top-N (default bytes)\n"
            "  -n N          rows of a top-N (default 10)\n"
            "  -o FORMAT     table (default; also `text`), csv, or json: exactly the HTTP API's\n"
            "                answer (/api/v1/top for -s and -A, /api/v1/summary otherwise)\n"
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

/* UTC, as strftime's "%Y-%m-%d %H:%M:%S" prints it (the year unpadded), without strftime: it
 * loads the local time zone file (an open, two reads) for a %Z this format never asks for. */
static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, cap, "%d-%02d-%02d %02d:%02d:%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000 + 1000) % 1000);
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

/* A top-N answer as an nfdump-like table or CSV (JSON is the HTTP API's: api_json). */
static void print_top(const qry_group *g, qry_metric metric, long limit, const qry_top_result *r,
                      const char *fmt)
{
    char name[128], key[QRY_MAX_KEYS * 100], part[128], pk[32], bk[32];
    qry_group_fmt(g, name, sizeof name);
    bool csv = !strcmp(fmt, "csv");
    if (csv) {
        for (size_t k = 0; k < g->n; k++)
            printf("%s%s", k ? "," : "",
                   g->k[k].by == QRY_BY_CONV ? "a,b" : qry_by_name(g->k[k].by));
        printf(",flows,packets,bytes,bps,pps\n");
    } else {
        printf("Top %ld %s ordered by %s:\n%-48s %10s %12s %14s %12s %10s\n", limit, name,
               qry_metric_name(metric), name, "flows", "packets", "bytes", "bps", "pps");
    }
    for (size_t i = 0; i < r->n; i++) {
        const qry_row *row = &r->rows[i];
        const qry_totals *t = &row->t;
        double bps = qry_rate(t->bytes * 8, r->span_ms), pps = qry_rate(t->packets, r->span_ms);
        size_t used = 0;
        key[0] = 0;
        for (size_t k = 0; k < g->n; k++) {
            const qry_keyspec *ks = &g->k[k];
            const qry_keyval *v = &row->key.v[k];
            if (ks->by == QRY_BY_CONV && csv) {
                char a[64], b[64];
                ns_addr_fmt(&v->addr, a, sizeof a);
                ns_addr_fmt(&v->addr2, b, sizeof b);
                printf("%s%s,%s", k ? "," : "", a, b);
                continue;
            }
            qry_keyval_fmt(ks, v, part, sizeof part);
            if (csv)
                printf("%s%s", k ? "," : "", part);
            else if (used < sizeof key)
                used +=
                    (size_t)snprintf(key + used, sizeof key - used, "%s%s", k ? "  " : "", part);
        }
        if (csv) {
            printf(",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.0f,%.1f\n", t->flows, t->packets,
                   t->bytes, bps, pps);
        } else {
            fmt_count(t->packets, pk, sizeof pk);
            fmt_count(t->bytes, bk, sizeof bk);
            printf("%-48s %10" PRIu64 " %12s %14s %12.0f %10.1f\n", key, t->flows, pk, bk, bps,
                   pps);
        }
    }
    if (!csv)
        printf("Summary: total flows: %" PRIu64 ", packets: %" PRIu64 ", bytes: %" PRIu64
               ", groups: %" PRIu64 "\n",
               r->total.flows, r->total.packets, r->total.bytes, r->groups);
}

/* -o json: exactly what the HTTP API answers for the same question (/api/v1/top for -s and -A,
 * /api/v1/summary otherwise), made by the same code. Returns the exit status. */
static int api_json(eng_db *db, const qry_group *g, qry_metric metric, long limit, int64_t from,
                    int64_t to, const char *filter)
{
    http_opts o = {.db = db, .start_ms = ns_now_ms(), .max_limit = 1000000};
    http_kv kv[6];
    size_t n = 0;
    char by[160], lim[24], f[32], t[32];
    if (from > INT64_MIN / 4) {
        snprintf(f, sizeof f, "%" PRId64 ".%03d", from / 1000, (int)(from % 1000 + 1000) % 1000);
        kv[n++] = (http_kv){"from", f};
    }
    if (to < INT64_MAX / 4) {
        snprintf(t, sizeof t, "%" PRId64 ".%03d", to / 1000, (int)(to % 1000 + 1000) % 1000);
        kv[n++] = (http_kv){"to", t};
    }
    if (filter[0])
        kv[n++] = (http_kv){"filter", filter};
    if (g) {
        qry_group_fmt(g, by, sizeof by);
        snprintf(lim, sizeof lim, "%ld", limit);
        kv[n++] = (http_kv){"by", by};
        kv[n++] = (http_kv){"metric", qry_metric_name(metric)};
        kv[n++] = (http_kv){"limit", lim};
    }
    ns_buf b = {0};
    const char *ctype;
    int status = http_dispatch(&o, "GET", g ? "/api/v1/top" : "/api/v1/summary", kv, n, &b, &ctype);
    if (b.oom) {
        fprintf(stderr, "ns2flows-query: out of memory\n");
        ns_buf_free(&b);
        return 1;
    }
    fputs(b.p ? b.p : "", status == 200 ? stdout : stderr);
    ns_buf_free(&b);
    return status == 200 ? 0 : 1;
}

/* nfdump's key names to ours, item by item ("srcip,dstip4/24" -> "srcaddr,dstnet/24"), then
 * parsed as a grouping. srcip6/N becomes srcnet/32/N: N is the IPv6 prefix length. */
static int parse_keys(const char *list, qry_group *g, char *err, size_t errcap)
{
    static const struct {
        const char *nfdump, *ours;
    } names[] = {{"srcip", "srcaddr"},    {"dstip", "dstaddr"},    {"router", "exporter"},
                 {"srcip4", "srcnet"},    {"dstip4", "dstnet"},    {"srcip6", "srcnet/32"},
                 {"dstip6", "dstnet/32"}, {"conv", "conversation"}};
    char out[256];
    size_t used = 0;
    const char *p = list;
    out[0] = 0;
    for (;;) {
        size_t len = strcspn(p, ","), nlen = strcspn(p, ",/");
        const char *ours = NULL;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].nfdump) == nlen && !strncmp(p, names[i].nfdump, nlen))
                ours = names[i].ours;
        int w = snprintf(out + used, sizeof out - used, "%s%.*s%.*s", used ? "," : "",
                         ours ? (int)strlen(ours) : (int)nlen, ours ? ours : p, (int)(len - nlen),
                         p + nlen);
        if (w < 0 || (size_t)w >= sizeof out - used) {
            snprintf(err, errcap, "key list too long");
            return NS_E_PARSE;
        }
        used += (size_t)w;
        if (!p[len])
            break;
        p += len + 1;
    }
    return qry_group_parse(out, g, err, errcap);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'D'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *db_path = "./SESSIONDB", *window = NULL, *stat = NULL, *fmt = "text", *agg = NULL,
               *order = NULL;
#ifdef M_MMAP_THRESHOLD
    /* megabyte buffers freed and taken again per segment: from the heap, not fresh pages */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    bool summary = false;
    long limit = 10;
    int c;
    while ((c = getopt_long(argc, argv, "It:s:n:o:A:O:h", opts, NULL)) != -1) {
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
        case 'A':
            agg = optarg;
            break;
        case 'O':
            order = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!strcmp(fmt, "table"))
        fmt = "text"; /* the name for nfdump's look */
    if (!stat && !agg)
        summary = true; /* neither a statistic nor an aggregation: the totals */
    if ((int)summary + (stat != NULL) + (agg != NULL) != 1 || (order && !agg) || limit < 1 ||
        limit > 1000000 || (strcmp(fmt, "text") && strcmp(fmt, "csv") && strcmp(fmt, "json"))) {
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
    qry_group group;
    qry_metric metric = QRY_M_BYTES;
    if (stat || agg) {
        char keys[256];
        const char *slash = stat ? strchr(stat, '/') : NULL;
        /* -s KEY/ORDER: the order is the last /word when it names a metric (srcnet/24 has a
         * number there) */
        const char *last = stat ? strrchr(stat, '/') : NULL;
        if (last && qry_metric_parse(last + 1, &metric) == 0)
            slash = last;
        else
            slash = NULL;
        if (stat)
            snprintf(keys, sizeof keys, "%.*s", slash ? (int)(slash - stat) : (int)strlen(stat),
                     stat);
        else
            snprintf(keys, sizeof keys, "%s", agg);
        if (order && qry_metric_parse(order, &metric) < 0) {
            fprintf(stderr, "ns2flows-query: -O '%s': expected bytes, packets, flows, bps, pps\n",
                    order);
            qry_filter_free(filter);
            return 2;
        }
        if (parse_keys(keys, &group, err, sizeof err) < 0 || (stat && group.n != 1)) {
            fprintf(stderr, "ns2flows-query: %s '%s': %s\n", stat ? "-s" : "-A", stat ? stat : agg,
                    stat && group.n != 1 ? "one key (use -A for several)" : err);
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
    if (!strcmp(fmt, "json")) {
        rc = api_json(db, summary ? NULL : &group, metric, limit, from, to, filter_text);
        eng_db_close(db);
        qry_filter_free(filter);
        return rc;
    }
    if (summary) {
        qry_totals t;
        rc = qry_summary(db, from, to, filter, &t);
        if (rc == 0) {
            fmt_time(t.first_ms, t1, sizeof t1);
            fmt_time(t.last_ms, t2, sizeof t2);
            if (!strcmp(fmt, "csv"))
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
        rc = qry_top_group_opt(db, from, to, filter, &group, metric, (size_t)limit,
                               QRY_TOP_NO_GROUP_TIMES, &r);
        if (rc == 0)
            print_top(&group, metric, limit, &r, fmt);
        qry_top_free(&r);
    }
    if (rc < 0)
        fprintf(stderr, "ns2flows-query: %s\n", ns_strerror(rc));
    eng_db_close(db);
    qry_filter_free(filter);
    return rc < 0 ? 1 : 0;
}
