/* http/routes.c — request routing and parameter checking for the JSON API. Parameters are
 * untrusted: each is validated on its own and a failure names it in a 400 answer. Unknown
 * parameters are refused too, so a typo (`limt=5`) is reported instead of silently ignored. */
#include "http/http.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define T_MIN (INT64_MIN / 4)
#define T_MAX (INT64_MAX / 4)

typedef struct req {
    const http_opts *o;
    bool prefer_csv; /* the client sent Accept: text/csv */
    const http_kv *kv;
    size_t nkv;
    ns_buf *body;
    const char **ctype;
} req;

static int fail(req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->body->len = 0;
    r->body->oom = false; /* the short error below usually still fits */
    if (r->body->p)
        r->body->p[0] = 0;
    ns_buf_puts(r->body, "{\"error\":");
    ns_buf_json_str(r->body, msg);
    ns_buf_puts(r->body, "}\n");
    *r->ctype = "application/json";
    return status;
}

static const char *param(const req *r, const char *key)
{
    for (size_t i = 0; i < r->nkv; i++)
        if (strcmp(r->kv[i].key, key) == 0)
            return r->kv[i].val ? r->kv[i].val : "";
    return NULL;
}

/* Refuses parameters the endpoint does not know, and repeated ones. */
static int check_known(req *r, const char *const *known)
{
    for (size_t i = 0; i < r->nkv; i++) {
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            if (strcmp(r->kv[i].key, *k) == 0)
                ok = true;
        if (!ok)
            return fail(r, 400, "unknown parameter '%.64s'", r->kv[i].key);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->kv[i].key, r->kv[j].key) == 0)
                return fail(r, 400, "parameter '%.64s' given more than once", r->kv[i].key);
    }
    return 0;
}

/* http_max_range: the part of [from, to] that holds data may be at most that long, so an
 * open end on a small store is fine and a year of data at once is not. */
static int check_span(req *r, int64_t from, int64_t to)
{
    eng_db_stats st;
    if (r->o->max_range_ms <= 0)
        return 0;
    eng_db_get_stats(r->o->db, &st);
    if (st.oldest_ms == 0 && st.newest_ms == 0)
        return 0; /* empty store */
    int64_t lo = from > st.oldest_ms ? from : st.oldest_ms,
            hi = to < st.newest_ms ? to : st.newest_ms;
    if (hi - lo <= r->o->max_range_ms)
        return 0;
    return fail(r, 400,
                "parameter 'from': the range covers %" PRId64 " s of data, more than the %" PRId64
                " s http_max_range allows; give a later 'from' or an earlier 'to'",
                (hi - lo) / 1000, r->o->max_range_ms / 1000);
}

static int parse_range(req *r, int64_t *from, int64_t *to)
{
    const char *f = param(r, "from"), *t = param(r, "to");
    *from = T_MIN;
    *to = T_MAX;
    if (f && ns_time_parse(f, from) < 0)
        return fail(r, 400, "parameter 'from': '%.64s' is not epoch seconds or RFC 3339", f);
    if (t && ns_time_parse(t, to) < 0)
        return fail(r, 400, "parameter 'to': '%.64s' is not epoch seconds or RFC 3339", t);
    if (*from > *to)
        return fail(r, 400, "parameter 'from' is after 'to'");
    return check_span(r, *from, *to);
}

/* Epoch ms as epoch seconds with millisecond decimals; null for "none". */
static void put_time(ns_buf *b, int64_t ms, bool valid)
{
    if (!valid) {
        ns_buf_puts(b, "null");
        return;
    }
    int64_t s = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        s--;
        frac += 1000;
    }
    ns_buf_printf(b, "%" PRId64 ".%03" PRId64, s, frac);
}

static void put_range(ns_buf *b, int64_t from, int64_t to)
{
    ns_buf_puts(b, "\"from\":");
    put_time(b, from, from != T_MIN);
    ns_buf_puts(b, ",\"to\":");
    put_time(b, to, to != T_MAX);
}

static void put_totals(ns_buf *b, const qry_totals *t, bool times)
{
    ns_buf_printf(b, "\"flows\":%" PRIu64 ",\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64, t->flows,
                  t->packets, t->bytes);
    if (times) {
        ns_buf_puts(b, ",\"first\":");
        put_time(b, t->first_ms, t->flows > 0);
        ns_buf_puts(b, ",\"last\":");
        put_time(b, t->last_ms, t->flows > 0);
    }
}

/* The columns a grouping key needs from a row, to tell which keys a roll-up lost. app needs
 * only the protocol and the destination port: a roll-up row has no source port, and a zero
 * port does not count. */
static uint32_t key_columns(qry_by by)
{
    switch (by) {
    case QRY_BY_SRCADDR:
    case QRY_BY_SRCNET:
        return ENG_COLMASK(ENG_COL_SRC);
    case QRY_BY_DSTADDR:
    case QRY_BY_DSTNET:
        return ENG_COLMASK(ENG_COL_DST);
    case QRY_BY_PROTO:
        return ENG_COLMASK(ENG_COL_PROTO);
    case QRY_BY_SRCPORT:
        return ENG_COLMASK(ENG_COL_SRC_PORT);
    case QRY_BY_DSTPORT:
        return ENG_COLMASK(ENG_COL_DST_PORT);
    case QRY_BY_EXPORTER:
        return ENG_COLMASK(ENG_COL_EXPORTER);
    case QRY_BY_INIF:
        return ENG_COLMASK(ENG_COL_IN_IF);
    case QRY_BY_OUTIF:
        return ENG_COLMASK(ENG_COL_OUT_IF);
    case QRY_BY_SRCAS:
        return ENG_COLMASK(ENG_COL_SRC_AS);
    case QRY_BY_DSTAS:
        return ENG_COLMASK(ENG_COL_DST_AS);
    case QRY_BY_TOS:
        return ENG_COLMASK(ENG_COL_TOS);
    case QRY_BY_VLAN:
        return ENG_COLMASK(ENG_COL_VLAN);
    case QRY_BY_APP:
        return ENG_COLMASK(ENG_COL_PROTO) | ENG_COLMASK(ENG_COL_DST_PORT);
    case QRY_BY_CONV:
        return ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST);
    case QRY_NBY:
        break;
    }
    return 0;
}

/* ,"resolution":[...]: which tier served which part of [from, to] (docs/API.md). A roll-up
 * range names the keys roll-ups keep and, with a grouping g, the keys of g they do not keep
 * (those show as 0 for roll-up rows). The ClickHouse backend holds raw flows only: one raw
 * range, the query's. */
#define RESOLUTION_MAX 32
static void put_resolution(req *r, int64_t from, int64_t to, const qry_group *g)
{
    ns_buf *b = r->body;
    eng_tier_range t[RESOLUTION_MAX];
    int n;
    ns_buf_puts(b, ",\"resolution\":[");
    if (r->o->backend) {
        ns_buf_puts(b, "{\"tier\":\"raw\",");
        put_range(b, from, to);
        ns_buf_puts(b, "}]");
        return;
    }
    n = eng_db_tiers(r->o->db, from, to, t, RESOLUTION_MAX);
    if (n > RESOLUTION_MAX) {
        /* rare (late flows interleave the tiers): the last range reaches to the end */
        t[RESOLUTION_MAX - 1].to_ms = to;
        n = RESOLUTION_MAX;
    }
    uint32_t keys = eng_db_rollup_keys(r->o->db);
    for (int i = 0; i < n; i++) {
        bool up = t[i].tier == ENG_TIER_ROLLUP;
        ns_buf_printf(b, "%s{\"tier\":\"%s\",", i ? "," : "", up ? "rollup" : "raw");
        put_range(b, t[i].from_ms, t[i].to_ms);
        if (up) {
            ns_buf_puts(b, ",\"keys\":[");
            bool first = true;
            for (int c = 0; c < ENG_NCOLS; c++) {
                const char *name = eng_rollup_key_name((eng_col)c);
                if (name && (keys & ENG_COLMASK(c))) {
                    ns_buf_printf(b, "%s\"%s\"", first ? "" : ",", name);
                    first = false;
                }
            }
            ns_buf_puts(b, "]");
            if (g) {
                ns_buf_puts(b, ",\"lost\":[");
                first = true;
                for (size_t k = 0; k < g->n; k++) {
                    uint32_t need = key_columns(g->k[k].by);
                    if ((need & keys) != need) {
                        ns_buf_printf(b, "%s\"%s\"", first ? "" : ",", qry_by_name(g->k[k].by));
                        first = false;
                    }
                }
                ns_buf_puts(b, "]");
            }
        }
        ns_buf_puts(b, "}");
    }
    ns_buf_puts(b, "]");
}

static int query_error(req *r, int rc)
{
    if (rc == -ETIMEDOUT)
        return fail(r, 503,
                    "the query took longer than http_query_timeout_ms; narrow the time range or "
                    "the filter");
    if (rc == NS_E_TOO_MANY) /* a cap on groups (16 Mi) one question may hold */
        return fail(r, 400, "too many groups for one answer; narrow the time range or the filter");
    if (r->o->backend && r->o->backend->error && r->o->backend->error()[0])
        return fail(r, 502, "query backend failed: %s", r->o->backend->error());
    return fail(r, 500, "query failed: %s", ns_strerror(rc));
}

/* ------------------------------------------------------------------------------------------ */

static int route_status(req *r)
{
    static const char *const known[] = {NULL};
    eng_db_stats st;
    int rc = check_known(r, known);
    if (rc)
        return rc;
    eng_db_get_stats(r->o->db, &st);
    int64_t now = ns_now_ms();
    ns_buf *b = r->body;
    ns_buf_puts(b, "{\"version\":\"" NS_VERSION "\",\"now\":");
    put_time(b, now, true);
    ns_buf_printf(b, ",\"uptime_s\":%" PRId64, (now - r->o->start_ms) / 1000);
    ns_buf_puts(b, ",\"database\":{\"path\":");
    ns_buf_json_str(b, eng_db_dir(r->o->db));
    ns_buf_printf(
        b,
        ",\"bytes_used\":%" PRIu64 ",\"budget_bytes\":%" PRIu64 ",\"retention_s\":%" PRIu64
        ",\"segments\":%" PRIu64 ",\"open_flows\":%" PRIu64 ",\"flows_stored\":%" PRIu64
        ",\"flows_dropped\":%" PRIu64 ",\"seal_errors\":%" PRIu64 ",\"segments_deleted\":%" PRIu64
        ",\"segments_quarantined\":%" PRIu64 ",\"segments_missing\":%" PRIu64
        ",\"segments_pruned\":%" PRIu64 ",\"segments_compacted\":%" PRIu64 ",\"wal_bytes\":%" PRIu64
        ",\"wal_synced_through\":%" PRId64 ",\"wal_replayed_flows\":%" PRIu64
        ",\"wal_errors\":%" PRIu64 ",\"wal_over_budget_flows\":%" PRIu64
        ",\"flows_dropped_memory\":%" PRIu64 ",\"unsealed_bytes\":%" PRIu64
        ",\"unsealed_bytes_max\":%" PRIu64,
        st.disk_bytes, st.budget_bytes, st.retention_s, st.segments, st.open_rows, st.rows_stored,
        st.rows_dropped, st.seal_errors, st.segments_deleted, st.segments_quarantined,
        st.segments_missing, st.segments_pruned, st.segments_compacted, st.wal_bytes,
        st.wal_synced_through, st.wal_replayed_rows, st.wal_errors, st.wal_over_budget,
        st.rows_dropped_memory, st.unsealed_bytes, st.unsealed_bytes_max);
    ns_buf_printf(b,
                  ",\"query_cache_bytes\":%" PRIu64 ",\"query_cache_hits\":%" PRIu64
                  ",\"query_cache_misses\":%" PRIu64,
                  st.cache_bytes, st.cache_hits, st.cache_misses);
    ns_buf_printf(b,
                  ",\"rollup\":{\"share\":%" PRIu64 ",\"segments\":%" PRIu64 ",\"bytes\":%" PRIu64
                  ",\"segments_rolled_up\":%" PRIu64 ",\"flows_rolled_up\":%" PRIu64
                  ",\"rows\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"skipped\":%" PRIu64 "}",
                  st.rollup_share, st.rollup_segments, st.rollup_bytes, st.segments_rolled_up,
                  st.rows_rolled_up, st.rollup_rows, st.rollup_errors, st.rollup_skipped);
    bool any = st.oldest_ms != 0 || st.newest_ms != 0;
    ns_buf_puts(b, ",\"oldest\":");
    put_time(b, st.oldest_ms, any);
    ns_buf_puts(b, ",\"newest\":");
    put_time(b, st.newest_ms, any);
    ns_buf_puts(b, "}");
    if (r->o->status_extra)
        r->o->status_extra(r->o->status_arg, b);
    ns_buf_puts(b, "}\n");
    return 200;
}

static int route_exporters(req *r)
{
    static const char *const known[] = {NULL};
    int rc = check_known(r, known);
    if (rc)
        return rc;
    ns_buf_puts(r->body, "{\"exporters\":");
    if (r->o->exporters)
        r->o->exporters(r->o->exporters_arg, r->body);
    else
        ns_buf_puts(r->body, "[]");
    ns_buf_puts(r->body, "}\n");
    return 200;
}

/* `format=json|csv`; without it, CSV when the client asked for text/csv. */
static int parse_format(req *r, bool *csv)
{
    const char *v = param(r, "format");
    *csv = v ? strcmp(v, "csv") == 0 : r->prefer_csv;
    if (v && strcmp(v, "csv") != 0 && strcmp(v, "json") != 0)
        return fail(r, 400, "parameter 'format': '%.64s' is not json or csv", v);
    return 0;
}

/* The optional `filter` parameter, compiled; *f stays NULL when absent. */
static int parse_filter(req *r, qry_filter **f)
{
    const char *v = param(r, "filter");
    char err[256];
    *f = NULL;
    if (!v)
        return 0;
    if (qry_filter_compile(v, f, err, sizeof err) < 0)
        return fail(r, 400, "parameter 'filter': %s", err);
    return 0;
}

static int route_summary(req *r)
{
    static const char *const known[] = {"from", "to", "filter", NULL};
    int64_t from, to;
    qry_totals t;
    qry_filter *f = NULL;
    int rc = check_known(r, known);
    if (rc || (rc = parse_range(r, &from, &to)) || (rc = parse_filter(r, &f)))
        return rc;
    const http_backend *be = r->o->backend;
    rc = be ? be->summary(be->arg, from, to, param(r, "filter"), &t)
            : qry_summary(r->o->db, from, to, f, &t);
    qry_filter_free(f);
    if (rc < 0)
        return query_error(r, rc);
    ns_buf_puts(r->body, "{");
    put_totals(r->body, &t, true);
    ns_buf_puts(r->body, ",");
    put_range(r->body, from, to);
    put_resolution(r, from, to, NULL);
    ns_buf_puts(r->body, "}\n");
    return 200;
}

/* One value: a JSON member `"name":value` (text quoted) or, with no name, a bare CSV field. */
static void put_value(ns_buf *b, const char *name, const char *text, bool is_text)
{
    if (!name) {
        ns_buf_puts(b, text);
        return;
    }
    ns_buf_printf(b, "\"%s\":", name);
    if (is_text)
        ns_buf_json_str(b, text);
    else
        ns_buf_puts(b, text);
}

/* A group key's values: as JSON members (`"<key name>":value,...`, text quoted, numbers bare, a
 * conversation as `"a":...,"b":...`) or as CSV fields (a conversation is two: a,b). */
static void put_key_as(ns_buf *b, const qry_group *g, const qry_key *k, bool csv)
{
    char text[128];
    for (size_t i = 0; i < g->n; i++) {
        const qry_keyspec *ks = &g->k[i];
        if (i)
            ns_buf_puts(b, ",");
        if (ks->by == QRY_BY_CONV) {
            put_value(b, csv ? NULL : "a", ns_addr_fmt(&k->v[i].addr, text, sizeof text), true);
            ns_buf_puts(b, ",");
            put_value(b, csv ? NULL : "b", ns_addr_fmt(&k->v[i].addr2, text, sizeof text), true);
            continue;
        }
        qry_keyval_fmt(ks, &k->v[i], text, sizeof text);
        put_value(b, csv ? NULL : qry_by_name(ks->by), text, qry_keyspec_is_text(ks));
    }
}

static void put_key(ns_buf *b, const qry_group *g, const qry_key *k)
{
    put_key_as(b, g, k, false);
}

static void put_key_csv(ns_buf *b, const qry_group *g, const qry_key *k)
{
    put_key_as(b, g, k, true);
}

/* The CSV header columns of a group key. */
static void put_key_csv_header(ns_buf *b, const qry_group *g)
{
    for (size_t i = 0; i < g->n; i++)
        ns_buf_printf(b, "%s%s", i ? "," : "",
                      g->k[i].by == QRY_BY_CONV ? "a,b" : qry_by_name(g->k[i].by));
}

static bool group_has_conv(const qry_group *g)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->k[i].by == QRY_BY_CONV)
            return true;
    return false;
}

/* `by` (a list of keys, default srcaddr) and `metric` (default bytes). */
static int parse_group(req *r, qry_group *g, qry_metric *metric)
{
    const char *v;
    char err[160];
    qry_group_one(QRY_BY_SRCADDR, g);
    *metric = QRY_M_BYTES;
    if ((v = param(r, "by")) && qry_group_parse(v, g, err, sizeof err) < 0)
        return fail(r, 400,
                    "parameter 'by': %s (keys: srcaddr, dstaddr, proto, srcport, dstport, "
                    "exporter, inif, outif, srcas, dstas, tos, vlan, app, conversation, "
                    "srcnet/N, dstnet/N; up to %d, comma-separated)",
                    err, QRY_MAX_KEYS);
    if ((v = param(r, "metric")) && qry_metric_parse(v, metric) < 0)
        return fail(r, 400,
                    "parameter 'metric': '%.64s' is not one of bytes, packets, flows, bps, pps", v);
    return 0;
}

/* `limit`: 1..max, default def. */
static int parse_limit(req *r, size_t def, size_t max, size_t *limit)
{
    const char *v = param(r, "limit");
    *limit = def;
    if (!v)
        return 0;
    char *end;
    unsigned long long l = strtoull(v, &end, 10);
    if (!*v || *end || v[0] == '-' || v[0] == '+' || l < 1 || l > max)
        return fail(r, 400, "parameter 'limit': '%.64s' is not a number from 1 to %zu", v, max);
    *limit = (size_t)l;
    return 0;
}

/* One top row: key, totals, rates over the span, and for conversations each direction. */
static void put_top_row(ns_buf *b, const qry_group *g, const qry_row *row, int64_t span_ms)
{
    ns_buf_puts(b, "{\"key\":{");
    put_key(b, g, &row->key);
    ns_buf_puts(b, "},");
    put_totals(b, &row->t, false);
    ns_buf_printf(b, ",\"bps\":%.0f,\"pps\":%.1f", qry_rate(row->t.bytes * 8, span_ms),
                  qry_rate(row->t.packets, span_ms));
    if (group_has_conv(g)) {
        ns_buf_puts(b, ",\"a_to_b\":{");
        put_totals(b, &row->ab, false);
        ns_buf_puts(b, "},\"b_to_a\":{");
        put_totals(b, &row->ba, false);
        ns_buf_puts(b, "}");
    }
    ns_buf_puts(b, "}");
}

static int route_top(req *r)
{
    static const char *const known[] = {"from",  "to",     "by",     "metric",
                                        "limit", "format", "filter", NULL};
    int64_t from, to;
    qry_group g;
    qry_metric metric;
    size_t limit, max_limit = r->o->max_limit ? r->o->max_limit : 10000;
    bool csv = false;
    int rc = check_known(r, known);
    if (rc || (rc = parse_range(r, &from, &to)) || (rc = parse_group(r, &g, &metric)) ||
        (rc = parse_limit(r, 10, max_limit, &limit)) || (rc = parse_format(r, &csv)))
        return rc;
    qry_filter *f = NULL;
    if ((rc = parse_filter(r, &f)))
        return rc;
    qry_top_result res;
    const http_backend *be = r->o->backend;
    if (be && (g.n != 1 || g.k[0].by >= QRY_BY_APP)) {
        qry_filter_free(f);
        return fail(r, 400,
                    "parameter 'by': the clickhouse query backend groups by one key of srcaddr, "
                    "dstaddr, proto, srcport, dstport, exporter, inif, outif, srcas, dstas, tos, "
                    "vlan");
    }
    rc = be ? be->top(be->arg, from, to, param(r, "filter"), g.k[0].by, metric, limit, &res)
            : qry_top_group_opt(r->o->db, from, to, f, &g, metric, limit, QRY_TOP_NO_GROUP_TIMES,
                                &res);
    if (rc == 0 && res.span_ms == 0)
        res.span_ms = qry_span_ms(from, to, &res.total);
    qry_filter_free(f);
    if (rc == NS_E_TOO_MANY)
        return fail(r, 400, "too many groups for 'by'; narrow the range or the filter");
    if (rc < 0)
        return query_error(r, rc);
    ns_buf *b = r->body;
    char name[128];
    qry_group_fmt(&g, name, sizeof name);
    bool conv = group_has_conv(&g);
    if (csv) {
        put_key_csv_header(b, &g);
        ns_buf_puts(b, ",flows,packets,bytes,bps,pps");
        if (conv)
            ns_buf_puts(b, ",a_to_b_packets,a_to_b_bytes,b_to_a_packets,b_to_a_bytes");
        ns_buf_puts(b, "\n");
        for (size_t i = 0; i < res.n; i++) {
            const qry_row *row = &res.rows[i];
            put_key_csv(b, &g, &row->key);
            ns_buf_printf(b, ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.0f,%.1f", row->t.flows,
                          row->t.packets, row->t.bytes, qry_rate(row->t.bytes * 8, res.span_ms),
                          qry_rate(row->t.packets, res.span_ms));
            if (conv)
                ns_buf_printf(b, ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64, row->ab.packets,
                              row->ab.bytes, row->ba.packets, row->ba.bytes);
            ns_buf_puts(b, "\n");
        }
        *r->ctype = "text/csv";
    } else {
        ns_buf_printf(b, "{\"by\":\"%s\",\"metric\":\"%s\",", name, qry_metric_name(metric));
        put_range(b, from, to);
        ns_buf_puts(b, ",\"rows\":[");
        for (size_t i = 0; i < res.n; i++) {
            if (i)
                ns_buf_puts(b, ",");
            put_top_row(b, &g, &res.rows[i], res.span_ms);
        }
        ns_buf_puts(b, "],\"other\":{");
        put_totals(b, &res.other, false);
        ns_buf_puts(b, "},\"total\":{");
        put_totals(b, &res.total, false);
        ns_buf_printf(b, "},\"groups\":%" PRIu64 ",\"span\":%.3f", res.groups,
                      (double)res.span_ms / 1000.0);
        put_resolution(r, from, to, &g);
        ns_buf_puts(b, "}\n");
    }
    qry_top_free(&res);
    return 200;
}

/* The buckets of a series over [from, to]: open ends become the data held, `step` (or about
 * 200 buckets), from rounded down to a multiple of the step, at most QRY_SERIES_MAX_BUCKETS. */
static int parse_buckets(req *r, int64_t *from, int64_t to, int64_t *step, int64_t *nb)
{
    const char *v;
    if (*from == T_MIN || to == T_MAX) {
        /* an open end: the data held decides it */
        eng_db_stats st;
        eng_db_get_stats(r->o->db, &st);
        if (*from == T_MIN)
            *from = st.oldest_ms;
        if (to == T_MAX)
            to = st.newest_ms > *from ? st.newest_ms : *from;
        if (*from > to)
            *from = to; /* an end given before all the data held: one empty bucket */
    }
    if ((v = param(r, "step"))) {
        uint64_t secs;
        if (ns_duration_parse(v, &secs) < 0 || secs == 0 || secs > 366u * 86400u)
            return fail(r, 400, "parameter 'step': '%.64s' is not a duration like 60, 5m, 1h", v);
        *step = (int64_t)secs * 1000;
    } else {
        *step = qry_series_step(*from, to, 200);
    }
    *from -= ((*from % *step) + *step) % *step; /* buckets on round times */
    *nb = (to - *from) / *step + 1;
    if (*nb > QRY_SERIES_MAX_BUCKETS)
        return fail(r, 400, "parameter 'step': %" PRId64 " buckets; at most %d (widen the step)",
                    *nb, QRY_SERIES_MAX_BUCKETS);
    return 0;
}

static void put_bucket(ns_buf *o, int64_t t, const qry_totals *b, bool csv)
{
    if (csv) {
        ns_buf_printf(o, ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n", b->flows, b->packets, b->bytes);
        return;
    }
    ns_buf_puts(o, "{\"t\":");
    put_time(o, t, true);
    ns_buf_puts(o, ",");
    put_totals(o, b, false);
    ns_buf_puts(o, "}");
}

/* A series split by `by`: the `limit` largest groups, each with its buckets, then "other". */
static int series_split(req *r, int64_t from, int64_t step, int64_t nb, const qry_filter *f,
                        bool csv)
{
    qry_group g;
    qry_metric metric;
    size_t limit;
    int rc;
    if ((rc = parse_group(r, &g, &metric)) || (rc = parse_limit(r, 10, 50, &limit)))
        return rc;
    if ((size_t)nb * (limit + 1) > QRY_SERIES_MAX_BUCKETS)
        return fail(r, 400,
                    "parameter 'limit': %zu series of %" PRId64
                    " buckets is more than %d buckets (widen the step or lower the limit)",
                    limit, nb, QRY_SERIES_MAX_BUCKETS);
    qry_split sp;
    rc = qry_series_split(r->o->db, from, step, (size_t)nb, f, &g, metric, limit, &sp);
    if (rc == NS_E_TOO_MANY)
        return fail(r, 400, "too many groups for 'by'; narrow the range or the filter");
    if (rc < 0)
        return query_error(r, rc);
    ns_buf *o = r->body;
    char name[128];
    qry_group_fmt(&g, name, sizeof name);
    if (csv) {
        ns_buf_puts(o, "t,");
        put_key_csv_header(o, &g);
        ns_buf_puts(o, ",flows,packets,bytes\n");
        for (size_t s = 0; s <= sp.k; s++) {
            for (int64_t i = 0; i < nb; i++) {
                put_time(o, from + i * step, true);
                ns_buf_puts(o, ",");
                if (s < sp.k)
                    put_key_csv(o, &g, &sp.keys[s]);
                else
                    for (size_t k = 0; k < g.n; k++)
                        ns_buf_puts(o, k ? ",other" : "other");
                if (s == sp.k && group_has_conv(&g))
                    ns_buf_puts(o, ",other");
                put_bucket(o, 0, &sp.series[s * (size_t)nb + (size_t)i], true);
            }
        }
        *r->ctype = "text/csv";
    } else {
        ns_buf_printf(o, "{\"step\":%" PRId64 ",\"by\":\"%s\",\"metric\":\"%s\",", step / 1000,
                      name, qry_metric_name(metric));
        put_range(o, from, from + nb * step - 1);
        ns_buf_puts(o, ",\"series\":[");
        for (size_t s = 0; s <= sp.k; s++) {
            ns_buf_puts(o, s ? ",{\"key\":" : "{\"key\":");
            if (s < sp.k) {
                ns_buf_puts(o, "{");
                put_key(o, &g, &sp.keys[s]);
                ns_buf_puts(o, "}");
            } else {
                ns_buf_puts(o, "\"other\"");
            }
            ns_buf_puts(o, ",\"total\":{");
            put_totals(o, &sp.totals[s], false);
            ns_buf_puts(o, "},\"buckets\":[");
            for (int64_t i = 0; i < nb; i++) {
                if (i)
                    ns_buf_puts(o, ",");
                put_bucket(o, from + i * step, &sp.series[s * (size_t)nb + (size_t)i], false);
            }
            ns_buf_puts(o, "]}");
        }
        ns_buf_puts(o, "]");
        put_resolution(r, from, from + nb * step - 1, &g);
        ns_buf_puts(o, "}\n");
    }
    qry_split_free(&sp);
    return 200;
}

static int route_series(req *r)
{
    static const char *const known[] = {"from", "to",     "step",  "filter", "format",
                                        "by",   "metric", "limit", NULL};
    int64_t from, to, step = 0;
    bool csv = false;
    int rc = check_known(r, known);
    if (rc || (rc = parse_range(r, &from, &to)))
        return rc;
    if ((rc = parse_format(r, &csv)))
        return rc;
    int64_t nb;
    if ((rc = parse_buckets(r, &from, to, &step, &nb)))
        return rc;
    if (!param(r, "by") && (param(r, "metric") || param(r, "limit")))
        return fail(r, 400, "parameters 'metric' and 'limit' need 'by'");
    qry_filter *f = NULL;
    if ((rc = parse_filter(r, &f)))
        return rc;
    if (param(r, "by") && r->o->backend) {
        qry_filter_free(f);
        return fail(r, 400, "parameter 'by': the clickhouse query backend does not split series");
    }
    if (param(r, "by")) {
        rc = series_split(r, from, step, nb, f, csv);
        qry_filter_free(f);
        return rc;
    }
    qry_totals *b = calloc((size_t)nb, sizeof *b);
    if (!b) {
        qry_filter_free(f);
        return fail(r, 500, "out of memory");
    }
    const http_backend *be = r->o->backend;
    rc = be ? be->series(be->arg, from, step, (size_t)nb, param(r, "filter"), b)
            : qry_series(r->o->db, from, step, (size_t)nb, f, b);
    qry_filter_free(f);
    if (rc < 0) {
        free(b);
        return query_error(r, rc);
    }
    ns_buf *o = r->body;
    if (csv) {
        ns_buf_puts(o, "t,flows,packets,bytes\n");
        for (int64_t i = 0; i < nb; i++) {
            put_time(o, from + i * step, true);
            put_bucket(o, 0, &b[i], true);
        }
        *r->ctype = "text/csv";
    } else {
        ns_buf_printf(o, "{\"step\":%" PRId64 ",", step / 1000);
        put_range(o, from, from + nb * step - 1);
        ns_buf_puts(o, ",\"buckets\":[");
        for (int64_t i = 0; i < nb; i++) {
            if (i)
                ns_buf_puts(o, ",");
            put_bucket(o, from + i * step, &b[i], false);
        }
        ns_buf_puts(o, "]");
        put_resolution(r, from, from + nb * step - 1, NULL);
        ns_buf_puts(o, "}\n");
    }
    free(b);
    return 200;
}

/* One flow as JSON or a CSV line. */
static void put_flow(ns_buf *b, const eng_flow *f, bool csv)
{
    char src[64], dst[64], ex[64], nh[64];
    ns_addr_fmt(&f->src, src, sizeof src);
    ns_addr_fmt(&f->dst, dst, sizeof dst);
    ns_addr_fmt(&f->exporter, ex, sizeof ex);
    ns_addr_fmt(&f->nexthop, nh, sizeof nh);
    if (csv) {
        put_time(b, f->first_ms, true);
        ns_buf_puts(b, ",");
        put_time(b, f->last_ms, true);
        ns_buf_printf(
            b, ",%s,%s,%u,%u,%u,%u,%u,%" PRIu64 ",%" PRIu64 ",%u,%u,%u,%u,%s,%u,%u,%s,%u\n", src,
            dst, f->src_port, f->dst_port, f->proto, f->tcp_flags, f->tos, f->packets, f->bytes,
            f->in_if, f->out_if, f->src_as, f->dst_as, ex, f->sampling, f->vlan, nh, f->flow_type);
        return;
    }
    ns_buf_puts(b, "{\"first\":");
    put_time(b, f->first_ms, true);
    ns_buf_puts(b, ",\"last\":");
    put_time(b, f->last_ms, true);
    ns_buf_printf(b,
                  ",\"src\":\"%s\",\"dst\":\"%s\",\"srcport\":%u,\"dstport\":%u,\"proto\":%u,"
                  "\"flags\":%u,\"tos\":%u,\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64
                  ",\"inif\":%u,\"outif\":%u,\"srcas\":%u,\"dstas\":%u,\"exporter\":\"%s\","
                  "\"sampling\":%u,\"vlan\":%u,\"nexthop\":\"%s\",\"flow_type\":%u",
                  src, dst, f->src_port, f->dst_port, f->proto, f->tcp_flags, f->tos, f->packets,
                  f->bytes, f->in_if, f->out_if, f->src_as, f->dst_as, ex, f->sampling, f->vlan, nh,
                  f->flow_type);
    if (f->flows) /* a roll-up row: the flows of one minute and key, summed */
        ns_buf_printf(b, ",\"flows\":%" PRIu64, f->flows);
    ns_buf_puts(b, "}");
}

static int route_flows(req *r)
{
    static const char *const known[] = {"from", "to", "filter", "limit", "cursor", "format", NULL};
    int64_t from, to;
    size_t limit, max_rows = r->o->max_limit && r->o->max_limit < QRY_FLOWS_MAX ? r->o->max_limit
                                                                                : QRY_FLOWS_MAX;
    bool csv = false;
    qry_cursor cur = {0};
    const char *v;
    int rc = check_known(r, known);
    if (rc || (rc = parse_range(r, &from, &to)) ||
        (rc = parse_limit(r, max_rows < 100 ? max_rows : 100, max_rows, &limit)))
        return rc;
    if ((v = param(r, "cursor"))) {
        long long t;
        unsigned long long k;
        int used = 0;
        if (sscanf(v, "%lld:%llu%n", &t, &k, &used) != 2 || v[used] != 0 || k > QRY_CURSOR_SKIP_MAX)
            return fail(r, 400, "parameter 'cursor': '%.64s' is not one this API gave", v);
        cur = (qry_cursor){.first_ms = t, .skip = k, .valid = true};
    }
    if ((rc = parse_format(r, &csv)))
        return rc;
    qry_filter *f = NULL;
    if ((rc = parse_filter(r, &f)))
        return rc;
    eng_flow *rows = NULL;
    size_t n = 0;
    qry_cursor next;
    rc = qry_flows(r->o->db, from, to, f, cur.valid ? &cur : NULL, limit, &rows, &n, &next);
    qry_filter_free(f);
    if (rc < 0)
        return query_error(r, rc);
    ns_buf *b = r->body;
    if (csv) {
        ns_buf_puts(b, "first,last,src,dst,srcport,dstport,proto,flags,tos,packets,bytes,inif,"
                       "outif,srcas,dstas,exporter,sampling,vlan,nexthop,flow_type\n");
        for (size_t i = 0; i < n; i++)
            put_flow(b, &rows[i], true);
        *r->ctype = "text/csv";
    } else {
        ns_buf_puts(b, "{\"flows\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                ns_buf_puts(b, ",");
            put_flow(b, &rows[i], false);
        }
        ns_buf_puts(b, "],\"next\":");
        if (next.valid)
            ns_buf_printf(b, "\"%" PRId64 ":%" PRIu64 "\"", next.first_ms, next.skip);
        else
            ns_buf_puts(b, "null");
        ns_buf_puts(b, "}\n");
    }
    free(rows);
    return 200;
}

static int route_metrics(req *r)
{
    static const char *const known[] = {NULL};
    eng_db_stats st;
    int rc = check_known(r, known);
    if (rc)
        return rc;
    eng_db_get_stats(r->o->db, &st);
    ns_buf *b = r->body;
    ns_buf_printf(b,
                  "# HELP ns2flows_up 1 while the daemon answers.\n# TYPE ns2flows_up gauge\n"
                  "ns2flows_up 1\n"
                  "# TYPE ns2flows_uptime_seconds gauge\nns2flows_uptime_seconds %" PRId64 "\n"
                  "# HELP ns2flows_db_bytes Bytes used under SESSIONDB.\n"
                  "# TYPE ns2flows_db_bytes gauge\nns2flows_db_bytes %" PRIu64 "\n"
                  "# TYPE ns2flows_db_budget_bytes gauge\nns2flows_db_budget_bytes %" PRIu64 "\n"
                  "# TYPE ns2flows_db_segments gauge\nns2flows_db_segments %" PRIu64 "\n"
                  "# HELP ns2flows_db_open_flows Flows in minutes not sealed yet.\n"
                  "# TYPE ns2flows_db_open_flows gauge\nns2flows_db_open_flows %" PRIu64 "\n"
                  "# TYPE ns2flows_db_flows_stored_total counter\n"
                  "ns2flows_db_flows_stored_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_flows_dropped_total counter\n"
                  "ns2flows_db_flows_dropped_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_seal_errors_total counter\n"
                  "ns2flows_db_seal_errors_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_segments_deleted_total counter\n"
                  "ns2flows_db_segments_deleted_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_segments_quarantined_total counter\n"
                  "ns2flows_db_segments_quarantined_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_segments_missing_total counter\n"
                  "ns2flows_db_segments_missing_total %" PRIu64 "\n"
                  "# HELP ns2flows_db_segments_pruned_total Sealed segments an address scan "
                  "skipped by their bloom filter or index.\n"
                  "# TYPE ns2flows_db_segments_pruned_total counter\n"
                  "ns2flows_db_segments_pruned_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_segments_compacted_total counter\n"
                  "ns2flows_db_segments_compacted_total %" PRIu64 "\n"
                  "# HELP ns2flows_wal_bytes Bytes in the write-ahead log.\n"
                  "# TYPE ns2flows_wal_bytes gauge\nns2flows_wal_bytes %" PRIu64 "\n"
                  "# HELP ns2flows_wal_synced_through_ms Every flow appended before this epoch "
                  "millisecond is on disk.\n"
                  "# TYPE ns2flows_wal_synced_through_ms gauge\n"
                  "ns2flows_wal_synced_through_ms %" PRId64 "\n"
                  "# TYPE ns2flows_wal_replayed_flows_total counter\n"
                  "ns2flows_wal_replayed_flows_total %" PRIu64 "\n"
                  "# TYPE ns2flows_wal_errors_total counter\n"
                  "ns2flows_wal_errors_total %" PRIu64 "\n"
                  "# HELP ns2flows_wal_over_budget_flows_total Flows kept in memory only: the "
                  "WAL held half the byte budget.\n"
                  "# TYPE ns2flows_wal_over_budget_flows_total counter\n"
                  "ns2flows_wal_over_budget_flows_total %" PRIu64 "\n"
                  "# HELP ns2flows_db_flows_dropped_memory_total Flows dropped (also in "
                  "flows_dropped): those waiting to be sealed filled unsealed_memory.\n"
                  "# TYPE ns2flows_db_flows_dropped_memory_total counter\n"
                  "ns2flows_db_flows_dropped_memory_total %" PRIu64 "\n"
                  "# HELP ns2flows_db_unsealed_bytes Memory the flows waiting to be sealed take.\n"
                  "# TYPE ns2flows_db_unsealed_bytes gauge\nns2flows_db_unsealed_bytes %" PRIu64
                  "\n# TYPE ns2flows_db_unsealed_bytes_max gauge\n"
                  "ns2flows_db_unsealed_bytes_max %" PRIu64 "\n",
                  (ns_now_ms() - r->o->start_ms) / 1000, st.disk_bytes, st.budget_bytes,
                  st.segments, st.open_rows, st.rows_stored, st.rows_dropped, st.seal_errors,
                  st.segments_deleted, st.segments_quarantined, st.segments_missing,
                  st.segments_pruned, st.segments_compacted, st.wal_bytes, st.wal_synced_through,
                  st.wal_replayed_rows, st.wal_errors, st.wal_over_budget, st.rows_dropped_memory,
                  st.unsealed_bytes, st.unsealed_bytes_max);
    ns_buf_printf(b,
                  "# HELP ns2flows_query_cache_bytes Decoded columns kept between queries.\n"
                  "# TYPE ns2flows_query_cache_bytes gauge\nns2flows_query_cache_bytes %" PRIu64
                  "\n# TYPE ns2flows_query_cache_hits_total counter\n"
                  "ns2flows_query_cache_hits_total %" PRIu64
                  "\n# TYPE ns2flows_query_cache_misses_total counter\n"
                  "ns2flows_query_cache_misses_total %" PRIu64 "\n",
                  st.cache_bytes, st.cache_hits, st.cache_misses);
    ns_buf_printf(b,
                  "# HELP ns2flows_db_rollup_bytes Bytes of the roll-up tier's segments.\n"
                  "# TYPE ns2flows_db_rollup_bytes gauge\nns2flows_db_rollup_bytes %" PRIu64 "\n"
                  "# TYPE ns2flows_db_rollup_segments gauge\nns2flows_db_rollup_segments %" PRIu64
                  "\n"
                  "# HELP ns2flows_db_segments_rolled_up_total Raw segments replaced by their "
                  "roll-up.\n"
                  "# TYPE ns2flows_db_segments_rolled_up_total counter\n"
                  "ns2flows_db_segments_rolled_up_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_flows_rolled_up_total counter\n"
                  "ns2flows_db_flows_rolled_up_total %" PRIu64 "\n"
                  "# TYPE ns2flows_db_rollup_errors_total counter\n"
                  "ns2flows_db_rollup_errors_total %" PRIu64 "\n",
                  st.rollup_bytes, st.rollup_segments, st.segments_rolled_up, st.rows_rolled_up,
                  st.rollup_errors);
    if (r->o->metrics)
        r->o->metrics(r->o->metrics_arg, b);
    *r->ctype = "text/plain; version=0.0.4";
    return 200;
}

/* The Flows Window of one device: its traffic out (as talker, the source) and in (as listener,
 * the destination): totals, a series, its top peers, protocols, apps and ports each way, and its
 * conversations (qry_device, one scan). */
static int route_device(req *r, const char *addr_text)
{
    static const char *const known[] = {"from", "to", "step", "limit", NULL};
    int64_t from, to, step = 0;
    size_t limit;
    ns_addr a;
    char canon[64];
    int rc = check_known(r, known);
    if (rc || (rc = parse_range(r, &from, &to)))
        return rc;
    if (ns_addr_parse(addr_text, &a) < 0)
        return fail(r, 400, "'%.64s' is not an IPv4 or IPv6 address", addr_text);
    ns_addr_fmt(&a, canon, sizeof canon); /* the answer names it in canonical form */
    if ((rc = parse_limit(r, 10, 1000, &limit)))
        return rc;
    int64_t nb;
    if ((rc = parse_buckets(r, &from, to, &step, &nb)))
        return rc;
    qry_device_result dr;
    if ((rc = qry_device(r->o->db, &a, from, to, step, (size_t)nb, limit, &dr)) < 0)
        return query_error(r, rc);
    ns_buf *b = r->body;
    ns_buf_puts(b, "{\"device\":");
    ns_buf_json_str(b, canon);
    ns_buf_puts(b, ",");
    put_range(b, from, from + nb * step - 1);
    ns_buf_puts(b, ",\"out\":{");
    put_totals(b, &dr.out, true);
    ns_buf_puts(b, "},\"in\":{");
    put_totals(b, &dr.in, true);
    ns_buf_printf(b, "},\"series\":{\"step\":%" PRId64 ",\"buckets\":[", step / 1000);
    for (int64_t i = 0; i < nb; i++) {
        ns_buf_puts(b, i ? ",{\"t\":" : "{\"t\":");
        put_time(b, from + i * step, true);
        ns_buf_printf(b,
                      ",\"out_packets\":%" PRIu64 ",\"out_bytes\":%" PRIu64
                      ",\"in_packets\":%" PRIu64 ",\"in_bytes\":%" PRIu64 "}",
                      dr.series_out[i].packets, dr.series_out[i].bytes, dr.series_in[i].packets,
                      dr.series_in[i].bytes);
    }
    /* as talker (the device is the source): whom it sends to, over what; as listener (the
     * destination): who sends to it, and on which of its ports */
    static const char *const prefix[QRY_DEV_NLISTS] = {
        "]},\"talker\":{\"peers\":",  ",\"protocols\":", ",\"apps\":", ",\"ports\":",
        "},\"listener\":{\"peers\":", ",\"protocols\":", ",\"apps\":", ",\"ports\":",
        "},\"conversations\":",
    };
    for (int l = 0; l < QRY_DEV_NLISTS; l++) {
        qry_group g;
        qry_group_one(qry_device_list_by((qry_dev_list)l), &g);
        ns_buf_puts(b, prefix[l]);
        ns_buf_puts(b, "[");
        for (size_t i = 0; i < dr.lists[l].n; i++) {
            if (i)
                ns_buf_puts(b, ",");
            put_top_row(b, &g, &dr.lists[l].rows[i], dr.lists[l].span_ms);
        }
        ns_buf_puts(b, "]");
    }
    put_resolution(r, from, from + nb * step - 1, NULL);
    ns_buf_puts(b, "}\n");
    qry_device_free(&dr);
    return 200;
}

int http_dispatch(const http_opts *o, const char *method, const char *path, const http_kv *params,
                  size_t nparams, ns_buf *body, const char **content_type)
{
    return http_dispatch_ex(o, method, path, params, nparams, false, body, content_type);
}

int http_dispatch_ex(const http_opts *o, const char *method, const char *path,
                     const http_kv *params, size_t nparams, bool prefer_csv, ns_buf *body,
                     const char **content_type)
{
    static const struct {
        const char *path;
        int (*fn)(req *);
    } routes[] = {
        {"/api/v1/status", route_status}, {"/api/v1/summary", route_summary},
        {"/api/v1/top", route_top},       {"/api/v1/exporters", route_exporters},
        {"/api/v1/series", route_series}, {"/api/v1/flows", route_flows},
        {"/metrics", route_metrics},
    };
    static const char device_prefix[] = "/api/v1/devices/";
    req r = {o, prefer_csv, params, nparams, body, content_type};
    *content_type = "application/json";
    if (strncmp(path, device_prefix, sizeof device_prefix - 1) == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return fail(&r, 405, "method %.16s not allowed; use GET", method);
        int status = route_device(&r, path + sizeof device_prefix - 1);
        if (body->oom)
            return fail(&r, 500, "out of memory building the answer");
        return status;
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) != 0)
            continue;
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return fail(&r, 405, "method %.16s not allowed; use GET", method);
        int status = routes[i].fn(&r);
        if (body->oom)
            return fail(&r, 500, "out of memory building the answer");
        return status;
    }
    return fail(&r, 404, "no such endpoint: %.200s", path);
}
