/* sink/chquery.c — summary, top-N and series answered by SQL against the Distributed table
 * (<table>_all), computed the way engine/query.c computes them so both backends give the same
 * answers on the same rows: a flow counts when its [first_ms, last_ms] overlaps the range; top-N
 * ties go by key bytes; a series spreads a flow's counters over the buckets it covers in
 * proportion to the overlap, with the same double arithmetic and the remainder in the last
 * bucket. Each query goes to the first shard that answers. */
#include "sink/sink_int.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char last_err[512];

const char *snk_query_error(void)
{
    return last_err;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    ns_buf *b = arg;
    ns_buf_append(b, p, sz * nm);
    return b->oom ? 0 : sz * nm;
}

/* Runs sql on the first shard that answers; *out gets the TabSeparated answer
 * (NUL-terminated). */
static int run_sql(snk_sink *s, const char *sql, ns_buf *out)
{
    CURL *c = curl_easy_init();
    int rc = SNK_E_NOSHARD;
    if (!c)
        return NS_E_NOMEM;
    last_err[0] = 0;
    for (size_t i = 0; i < snk__nshards(s); i++) {
        out->len = 0;
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, snk__url(s, i));
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, sql);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(sql));
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        CURLcode cc = curl_easy_perform(c);
        if (cc != CURLE_OK) {
            snprintf(last_err, sizeof last_err, "%s: %s", snk__url(s, i), curl_easy_strerror(cc));
            rc = cc == CURLE_COULDNT_CONNECT ? SNK_E_CONNECT : SNK_E_IO;
            continue; /* the next shard may answer */
        }
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        ns_buf_append(out, "", 1);
        out->len--;
        if (out->oom) {
            rc = NS_E_NOMEM;
            break;
        }
        if (status != 200) {
            snprintf(last_err, sizeof last_err, "HTTP %ld: %.400s", status, out->p ? out->p : "");
            for (char *q = last_err; *q; q++)
                if (*q == '\n')
                    *q = ' ';
            rc = SNK_E_HTTP;
            break; /* the SQL is at fault, or the cluster: another shard would say the same */
        }
        rc = 0;
        break;
    }
    curl_easy_cleanup(c);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Filters: the engine's compiled program (qry_filter_test) becomes one SQL expression with the
 * same meaning, row for row. */

#define U64MAX         "18446744073709551615"
#define FILTER_SQL_MAX 65536

static const struct {
    const char *field, *sql;
} num_fields[] = {
    {"srcport", "src_port"},
    {"dstport", "dst_port"},
    {"proto", "proto"},
    {"tos", "tos"},
    {"flags", "tcp_flags"},
    {"srcas", "src_as"},
    {"dstas", "dst_as"},
    {"inif", "in_if"},
    {"outif", "out_if"},
    {"vlan", "vlan"},
    {"srcmask", "src_mask"},
    {"dstmask", "dst_mask"},
    {"bytes", "bytes"},
    {"packets", "packets"},
    {"direction", "direction"},
#define DUR "if(last_ms > first_ms, toUInt64(last_ms - first_ms), toUInt64(0))"
/* ClickHouse evaluates both branches of if(): divide by at least 1 */
#define DIV "greatest(" DUR ", toUInt64(1))"
    {"duration", DUR},
    /* a * m / d exactly (as the engine's 128-bit mul_div) as q * m + (r * m) / d, saturating */
    {"bps", "if(" DUR " = 0, if(bytes > 2305843009213693951, " U64MAX ", bytes * 8), "
            "if(intDiv(bytes, " DIV ") > 2305843009213693, " U64MAX ", intDiv(bytes, " DIV
            ") * 8000 + intDiv((bytes % " DIV ") * 8000, " DIV ")))"},
    {"pps", "if(" DUR " = 0, packets, if(intDiv(packets, " DIV ") > 18446744073709551, " U64MAX
            ", intDiv(packets, " DIV ") * 1000 + intDiv((packets % " DIV ") * 1000, " DIV ")))"},
    {"bpp", "if(packets = 0, toUInt64(0), intDiv(bytes, greatest(packets, toUInt64(1))))"},
    {"icmptype", "bitShiftRight(dst_port, 8)"},
    {"icmpcode", "bitAnd(dst_port, 255)"},
#undef DIV
#undef DUR
};

static const char *num_sql(const char *field)
{
    for (size_t i = 0; i < sizeof num_fields / sizeof num_fields[0]; i++)
        if (strcmp(num_fields[i].field, field) == 0)
            return num_fields[i].sql;
    return NULL;
}

static const char *addr_sql(const char *field)
{
    return strcmp(field, "src") == 0        ? "src_addr"
           : strcmp(field, "dst") == 0      ? "dst_addr"
           : strcmp(field, "exporter") == 0 ? "exporter"
           : strcmp(field, "nexthop") == 0  ? "nexthop"
                                            : NULL;
}

static void put_hex(ns_buf *b, const uint8_t *p)
{
    for (int i = 0; i < 16; i++)
        ns_buf_printf(b, "%02X", p[i]);
}

/* A prefix as a byte range: FixedString compares bytewise. */
static void net_sql(ns_buf *b, const qry_filter *f, size_t k, const char *col)
{
    ns_addr a, m, hi;
    qry_filter_net(f, k, &a, &m);
    bool any = true;
    for (int i = 0; i < 16; i++) {
        hi.b[i] = (uint8_t)(a.b[i] | (uint8_t)~m.b[i]);
        any = any && m.b[i] == 0;
    }
    if (any) {
        ns_buf_puts(b, "1");
        return;
    }
    ns_buf_printf(b, "(%s >= unhex('", col);
    put_hex(b, a.b);
    ns_buf_printf(b, "') AND %s <= unhex('", col);
    put_hex(b, hi.b);
    ns_buf_puts(b, "'))");
}

static int test_sql(ns_buf *b, const qry_filter *f, const qry_ftest *t)
{
    static const char *const ops[] = {"=", "!=", "<", "<=", ">", ">="};
    const char *col;
    switch (t->kind) {
    case QRY_FT_TRUE:
        ns_buf_puts(b, "1");
        return 0;
    case QRY_FT_SRC_V4:
    case QRY_FT_SRC_V6:
        ns_buf_printf(b, "(substring(src_addr, 1, 12) %s unhex('00000000000000000000FFFF'))",
                      t->kind == QRY_FT_SRC_V4 ? "=" : "!=");
        return 0;
    case QRY_FT_NUM:
        if (!(col = num_sql(t->field)))
            return SNK_E_FILTER;
        if (t->cmp == QRY_FC_ALL)
            ns_buf_printf(b, "(bitAnd(%s, %" PRIu64 ") = %" PRIu64 ")", col, t->val, t->val);
        else if ((unsigned)t->cmp < 6)
            ns_buf_printf(b, "(%s %s %" PRIu64 ")", col, ops[t->cmp], t->val);
        else
            return SNK_E_FILTER;
        return 0;
    case QRY_FT_NUM_IN:
        if (!(col = num_sql(t->field)))
            return SNK_E_FILTER;
        ns_buf_printf(b, "(%s IN (", col);
        for (size_t k = 0; k < t->n; k++)
            ns_buf_printf(b, "%s%" PRIu64, k ? ", " : "", qry_filter_num(f, t->first + k));
        ns_buf_puts(b, "))");
        return 0;
    case QRY_FT_NET:
    case QRY_FT_NET_IN:
        if (!(col = addr_sql(t->field)))
            return SNK_E_FILTER;
        ns_buf_puts(b, "(");
        for (size_t k = 0; k < t->n; k++) {
            if (k)
                ns_buf_puts(b, " OR ");
            net_sql(b, f, t->first + k, col);
        }
        ns_buf_puts(b, t->n ? ")" : "0)");
        return 0;
    }
    return SNK_E_FILTER;
}

/* The program from test i on, as an expression: a test, then where each outcome leads. */
static int prog_sql(ns_buf *b, const qry_filter *f, size_t i, size_t n)
{
    if (i == n) {
        ns_buf_puts(b, "1");
        return 0;
    }
    if (i > n) {
        ns_buf_puts(b, "0");
        return 0;
    }
    if (b->len > FILTER_SQL_MAX)
        return SNK_E_FILTER;
    qry_ftest t;
    qry_filter_test(f, i, &t);
    int rc;
    if (t.jt == n && t.jf == n + 1)
        return test_sql(b, f, &t);
    ns_buf_puts(b, "if(");
    if ((rc = test_sql(b, f, &t)) < 0)
        return rc;
    ns_buf_puts(b, ", ");
    if ((rc = prog_sql(b, f, t.jt, n)) < 0)
        return rc;
    ns_buf_puts(b, ", ");
    if ((rc = prog_sql(b, f, t.jf, n)) < 0)
        return rc;
    ns_buf_puts(b, ")");
    return 0;
}

/* " AND (<filter>)" for a WHERE clause into cond (empty for no filter). */
static int filter_sql(const char *text, ns_buf *cond)
{
    qry_filter *f = NULL;
    char err[256];
    cond->len = 0;
    ns_buf_printf(cond, "%s", ""); /* "" rather than NULL when there is no filter */
    if (cond->oom)
        return NS_E_NOMEM;
    if (!text)
        return 0;
    if (qry_filter_compile(text, &f, err, sizeof err) < 0) {
        snprintf(last_err, sizeof last_err, "filter: %s", err);
        return SNK_E_FILTER;
    }
    size_t n = qry_filter_ntests(f);
    int rc = 0;
    if (n > 0) {
        ns_buf_puts(cond, " AND (");
        rc = prog_sql(cond, f, 0, n);
        ns_buf_puts(cond, ")");
    }
    qry_filter_free(f);
    if (rc == 0 && cond->oom)
        rc = NS_E_NOMEM;
    if (rc == SNK_E_FILTER)
        snprintf(last_err, sizeof last_err, "filter too large to translate to SQL");
    return rc;
}

/* Reads "flows packets bytes first last" from a TSV line. */
static bool parse_totals(char **p, qry_totals *t)
{
    long long f, l;
    unsigned long long fl, pk, by;
    int used = 0;
    if (sscanf(*p, "%llu\t%llu\t%llu\t%lld\t%lld%n", &fl, &pk, &by, &f, &l, &used) != 5)
        return false;
    *p += used;
    t->flows = fl;
    t->packets = pk;
    t->bytes = by;
    t->first_ms = fl ? f : 0;
    t->last_ms = fl ? l : 0;
    return true;
}

#define TOTALS_SQL "count(), sum(packets), sum(bytes), min(first_ms), max(last_ms)"

int snk_query_summary(snk_sink *s, int64_t from_ms, int64_t to_ms, const char *filter,
                      qry_totals *out)
{
    ns_buf b = {0}, cond = {0}, sql = {0};
    memset(out, 0, sizeof *out);
    int rc = filter_sql(filter, &cond);
    if (rc < 0)
        goto out;
    ns_buf_printf(&sql,
                  "SELECT " TOTALS_SQL " FROM %s_all WHERE last_ms >= %" PRId64
                  " AND first_ms <= %" PRId64 "%s FORMAT TabSeparated",
                  snk__table(s), from_ms, to_ms, cond.p);
    if (sql.oom) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if ((rc = run_sql(s, sql.p, &b)) == 0) {
        char *p = b.p;
        if (!p || !parse_totals(&p, out))
            rc = SNK_E_ANSWER;
    }
out:
    ns_buf_free(&b);
    ns_buf_free(&cond);
    ns_buf_free(&sql);
    return rc;
}

static const char *key_sql(qry_by by)
{
    switch (by) {
    case QRY_BY_SRCADDR:
        return "hex(src_addr)";
    case QRY_BY_DSTADDR:
        return "hex(dst_addr)";
    case QRY_BY_EXPORTER:
        return "hex(exporter)";
    case QRY_BY_PROTO:
        return "proto";
    case QRY_BY_SRCPORT:
        return "src_port";
    case QRY_BY_DSTPORT:
        return "dst_port";
    case QRY_BY_INIF:
        return "in_if";
    case QRY_BY_OUTIF:
        return "out_if";
    case QRY_BY_SRCAS:
        return "src_as";
    case QRY_BY_DSTAS:
        return "dst_as";
    case QRY_BY_TOS:
        return "tos";
    case QRY_BY_VLAN:
        return "vlan";
    default: /* app, conversation and nets: the embedded store only */
        break;
    }
    return NULL;
}

static bool by_is_addr(qry_by by)
{
    return by == QRY_BY_SRCADDR || by == QRY_BY_DSTADDR || by == QRY_BY_EXPORTER;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool parse_key(char **p, qry_by by, qry_key *k)
{
    memset(k, 0, sizeof *k);
    if (by_is_addr(by)) {
        for (int i = 0; i < 16; i++) {
            int hi = hexval((*p)[2 * i]), lo = hi < 0 ? -1 : hexval((*p)[2 * i + 1]);
            if (lo < 0)
                return false;
            k->v[0].addr.b[i] = (uint8_t)(hi << 4 | lo);
        }
        *p += 32;
    } else {
        unsigned long v;
        int used = 0;
        if (sscanf(*p, "%lu%n", &v, &used) != 1 || v > UINT32_MAX)
            return false;
        k->v[0].num = (uint32_t)v;
        *p += used;
    }
    if (**p != '\t')
        return false;
    (*p)++;
    return true;
}

int snk_query_top(snk_sink *s, int64_t from_ms, int64_t to_ms, const char *filter, qry_by by,
                  qry_metric metric, size_t limit, qry_top_result *out)
{
    ns_buf b = {0}, where = {0}, sql = {0};
    const char *key = key_sql(by);
    /* bps and pps order like bytes and packets */
    const char *m = metric == QRY_M_BYTES || metric == QRY_M_BPS     ? "sum(bytes)"
                    : metric == QRY_M_PACKETS || metric == QRY_M_PPS ? "sum(packets)"
                                                                     : "count()";
    memset(out, 0, sizeof *out);
    if (!key || limit == 0)
        return NS_E_RANGE;
    int rc = filter_sql(filter, &b);
    if (rc < 0)
        goto out;
    ns_buf_printf(&where, "last_ms >= %" PRId64 " AND first_ms <= %" PRId64 "%s", from_ms, to_ms,
                  b.p);
    /* the rows, then the groups past them (other), then everything (total, groups): ties go
     * by key, hex of the address bytes sorting as the bytes do */
    ns_buf_printf(&sql,
                  "SELECT %s AS k, " TOTALS_SQL
                  " FROM %s_all WHERE %s GROUP BY k ORDER BY %s DESC, "
                  "k LIMIT %zu FORMAT TabSeparated",
                  key, snk__table(s), where.p, m, limit);
    if (where.oom || sql.oom) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if ((rc = run_sql(s, sql.p, &b)) < 0)
        goto out;
    size_t cap = 16, n = 0;
    out->rows = malloc(cap * sizeof *out->rows);
    if (!out->rows) {
        rc = NS_E_NOMEM;
        goto out;
    }
    for (char *p = b.p; p && *p;) {
        if (n == cap) {
            qry_row *nr = realloc(out->rows, cap * 2 * sizeof *nr);
            if (!nr) {
                rc = NS_E_NOMEM;
                goto out;
            }
            out->rows = nr;
            cap *= 2;
        }
        qry_row *r = &out->rows[n];
        if (!parse_key(&p, by, &r->key) || !parse_totals(&p, &r->t) || *p++ != '\n') {
            rc = SNK_E_ANSWER;
            goto out;
        }
        n++;
    }
    out->n = n;
    sql.len = 0;
    ns_buf_printf(&sql,
                  "SELECT sum(fl), sum(pk), sum(bt), min(f), max(l) FROM (SELECT %s AS k, count() "
                  "AS fl, sum(packets) AS pk, sum(bytes) AS bt, min(first_ms) AS f, max(last_ms) "
                  "AS l, %s AS m FROM %s_all WHERE %s GROUP BY k ORDER BY m DESC, k LIMIT %zu, "
                  "4611686018427387904) FORMAT TabSeparated",
                  key, m, snk__table(s), where.p, limit);
    if (sql.oom) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if ((rc = run_sql(s, sql.p, &b)) < 0)
        goto out;
    char *p = b.p;
    if (!p || !parse_totals(&p, &out->other)) {
        rc = SNK_E_ANSWER;
        goto out;
    }
    sql.len = 0;
    ns_buf_printf(&sql,
                  "SELECT " TOTALS_SQL ", uniqExact(%s) FROM %s_all WHERE %s FORMAT TabSeparated",
                  key, snk__table(s), where.p);
    if (sql.oom) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if ((rc = run_sql(s, sql.p, &b)) < 0)
        goto out;
    unsigned long long groups;
    p = b.p;
    if (!p || !parse_totals(&p, &out->total) || sscanf(p, "\t%llu", &groups) != 1) {
        rc = SNK_E_ANSWER;
        goto out;
    }
    out->groups = groups;
out:
    ns_buf_free(&b);
    ns_buf_free(&where);
    ns_buf_free(&sql);
    if (rc < 0)
        qry_top_free(out);
    return rc;
}

int snk_query_series(snk_sink *s, int64_t from_ms, int64_t step_ms, size_t nbuckets,
                     const char *filter, qry_totals *buckets)
{
    ns_buf b = {0}, cond = {0}, sql = {0};
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS)
        return NS_E_RANGE;
    memset(buckets, 0, nbuckets * sizeof *buckets);
    int rc = filter_sql(filter, &cond);
    if (rc < 0)
        goto out;
    int64_t end = from_ms + step_ms * (int64_t)nbuckets; /* exclusive */
    /* Per flow: s/e its span clipped to the range, bs/be the buckets they fall in; a flow in
     * one bucket (or of no duration) puts everything there; otherwise each bucket k gets
     * toUInt64(packets * (overlap_k / span)), as engine/query.c computes it in doubles, and when
     * the flow lies wholly inside the range the last bucket gets the remainder. */
    char F[32], S[32], E[32], L[32]; /* from, step, end, end - 1: Int64 constants */
    snprintf(F, sizeof F, "toInt64(%" PRId64 ")", from_ms);
    snprintf(S, sizeof S, "toInt64(%" PRId64 ")", step_ms);
    snprintf(E, sizeof E, "toInt64(%" PRId64 ")", end);
    snprintf(L, sizeof L, "toInt64(%" PRId64 ")", end - 1);
    /* one flat query (WITH only names expressions), so each shard aggregates its own rows */
    ns_buf_printf(&sql, "WITH intDiv(greatest(first_ms, %s) - %s, %s) AS bs,", F, F, S);
    ns_buf_printf(&sql, " intDiv(least(last_ms, %s) - %s, %s) AS be,", L, F, S);
    ns_buf_puts(&sql, " (bs = be OR last_ms <= first_ms) AS one,"
                      " if(one, toUInt64(1), toUInt64(be - bs + 1)) AS n,");
    ns_buf_printf(&sql, " (first_ms >= %s AND last_ms < %s) AS inside,", F, E);
    ns_buf_puts(&sql, " toFloat64(last_ms - first_ms) AS span,");
    ns_buf_printf(&sql,
                  " arrayMap(j -> toFloat64(least(last_ms, %s + %s * (bs + j + 1))"
                  " - greatest(first_ms, %s + %s * (bs + j))), range(if(one, toUInt64(0), n)))"
                  " AS ov,",
                  F, S, F, S);
    ns_buf_puts(
        &sql,
        " arrayMap(o -> if(o > 0, toUInt64(toFloat64(packets) * (o / span)), toUInt64(0)), ov)"
        " AS ps,"
        " arrayMap(o -> if(o > 0, toUInt64(toFloat64(bytes) * (o / span)), toUInt64(0)), ov)"
        " AS bys"
        " SELECT bs + i - 1 AS k, sum(if(i = 1, 1, 0)),"
        " sum(if(one, packets, if(i = n AND inside,"
        "  toUInt64(packets - arraySum(arraySlice(ps, 1, n - 1))), ps[i]))),"
        " sum(if(one, bytes, if(i = n AND inside,"
        "  toUInt64(bytes - arraySum(arraySlice(bys, 1, n - 1))), bys[i])))");
    ns_buf_printf(&sql,
                  " FROM %s_all ARRAY JOIN arrayEnumerate(range(n)) AS i"
                  " WHERE last_ms >= %s AND first_ms <= %s"
                  " AND least(last_ms, %s) >= greatest(first_ms, %s)%s"
                  " GROUP BY k ORDER BY k FORMAT TabSeparated",
                  snk__table(s), F, L, L, F, cond.p);
    if (sql.oom) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if ((rc = run_sql(s, sql.p, &b)) < 0)
        goto out;
    for (char *p = b.p; p && *p;) {
        long long k;
        unsigned long long fl, pk, by;
        int used = 0;
        if (sscanf(p, "%lld\t%llu\t%llu\t%llu\n%n", &k, &fl, &pk, &by, &used) != 4 || used == 0 ||
            k < 0 || (unsigned long long)k >= nbuckets) {
            rc = SNK_E_ANSWER;
            goto out;
        }
        buckets[k].flows = fl;
        buckets[k].packets = pk;
        buckets[k].bytes = by;
        p += used;
    }
out:
    ns_buf_free(&b);
    ns_buf_free(&cond);
    ns_buf_free(&sql);
    return rc;
}
