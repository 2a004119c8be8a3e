/* sink/chquery.c — summary, top-N and series answered by SQL against the Distributed table
 * (<table>_all), computed the way engine/query.c computes them so both backends give the same
 * answers on the same rows: a flow counts when its [first_ms, last_ms] overlaps the range; top-N
 * ties go by key bytes; a series spreads a flow's counters over the buckets it covers in
 * proportion to the overlap, with the same double arithmetic and the remainder in the last
 * bucket. Each query goes to the first shard that answers. */
#include "sink/sink.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* The part of struct snk_sink the queries need is reached through these (sink.c owns it). */
const char *snk__table(const snk_sink *s);
size_t snk__nshards(const snk_sink *s);
const char *snk__url(const snk_sink *s, size_t i);

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

static int check_filter(const char *filter)
{
    if (!filter)
        return 0;
    for (const char *p = filter; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            snprintf(last_err, sizeof last_err,
                     "filters are not translated to SQL yet; use query_backend = local");
            return SNK_E_FILTER;
        }
    return 0;
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
    char sql[1024];
    ns_buf b = {0};
    memset(out, 0, sizeof *out);
    int rc = check_filter(filter);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "SELECT " TOTALS_SQL " FROM %s_all WHERE last_ms >= %" PRId64
             " AND first_ms <= %" PRId64 " FORMAT TabSeparated",
             snk__table(s), from_ms, to_ms);
    if ((rc = run_sql(s, sql, &b)) == 0) {
        char *p = b.p;
        if (!p || !parse_totals(&p, out))
            rc = SNK_E_ANSWER;
    }
    ns_buf_free(&b);
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
    case QRY_NBY:
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
            k->addr.b[i] = (uint8_t)(hi << 4 | lo);
        }
        *p += 32;
    } else {
        unsigned long v;
        int used = 0;
        if (sscanf(*p, "%lu%n", &v, &used) != 1 || v > UINT32_MAX)
            return false;
        k->num = (uint32_t)v;
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
    char sql[2048], where[256];
    ns_buf b = {0};
    const char *key = key_sql(by);
    const char *m = metric == QRY_M_BYTES     ? "sum(bytes)"
                    : metric == QRY_M_PACKETS ? "sum(packets)"
                                              : "count()";
    memset(out, 0, sizeof *out);
    int rc = check_filter(filter);
    if (rc < 0)
        return rc;
    if (!key || limit == 0)
        return NS_E_RANGE;
    snprintf(where, sizeof where, "last_ms >= %" PRId64 " AND first_ms <= %" PRId64, from_ms,
             to_ms);
    /* the rows, then the groups past them (other), then everything (total, groups): ties go
     * by key, hex of the address bytes sorting as the bytes do */
    snprintf(sql, sizeof sql,
             "SELECT k, " TOTALS_SQL " FROM (SELECT %s AS k, * FROM %s_all WHERE %s) GROUP BY k "
             "ORDER BY %s DESC, k LIMIT %zu FORMAT TabSeparated",
             key, snk__table(s), where, m, limit);
    if ((rc = run_sql(s, sql, &b)) < 0)
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
    snprintf(sql, sizeof sql,
             "SELECT sum(fl), sum(pk), sum(by), min(f), max(l) FROM (SELECT %s AS k, count() AS "
             "fl, sum(packets) AS pk, sum(bytes) AS by, min(first_ms) AS f, max(last_ms) AS l, "
             "%s AS m FROM %s_all WHERE %s GROUP BY k ORDER BY m DESC, k LIMIT %zu, "
             "4611686018427387904) FORMAT TabSeparated",
             key, m, snk__table(s), where, limit);
    if ((rc = run_sql(s, sql, &b)) < 0)
        goto out;
    char *p = b.p;
    if (!p || !parse_totals(&p, &out->other)) {
        rc = SNK_E_ANSWER;
        goto out;
    }
    snprintf(sql, sizeof sql,
             "SELECT " TOTALS_SQL ", uniqExact(%s) FROM %s_all WHERE %s FORMAT TabSeparated", key,
             snk__table(s), where);
    if ((rc = run_sql(s, sql, &b)) < 0)
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
    if (rc < 0)
        qry_top_free(out);
    return rc;
}

int snk_query_series(snk_sink *s, int64_t from_ms, int64_t step_ms, size_t nbuckets,
                     const char *filter, qry_totals *buckets)
{
    char sql[4096];
    ns_buf b = {0};
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS)
        return NS_E_RANGE;
    memset(buckets, 0, nbuckets * sizeof *buckets);
    int rc = check_filter(filter);
    if (rc < 0)
        return rc;
    int64_t end = from_ms + step_ms * (int64_t)nbuckets; /* exclusive */
    /* Per flow: s/e its span clipped to the range, bs/be the buckets they fall in; a flow in
     * one bucket (or of no duration) puts everything there; otherwise each bucket k gets
     * toUInt64(packets * (overlap_k / span)), as engine/query.c computes it in doubles, and when
     * the flow lies wholly inside the range the last bucket gets the remainder. */
    snprintf(
        sql, sizeof sql,
        "SELECT k, sum(fl), sum(pk), sum(by) FROM ("
        " SELECT bs + i - 1 AS k, if(i = 1, 1, 0) AS fl,"
        "  if(one, packets, if(i = n AND inside, toUInt64(packets - arraySum(arraySlice(ps, 1, n - "
        "1))),"
        "   ps[i])) AS pk,"
        "  if(one, bytes, if(i = n AND inside, toUInt64(bytes - arraySum(arraySlice(bys, 1, n - "
        "1))),"
        "   bys[i])) AS by"
        " FROM ("
        "  SELECT packets, bytes, first_ms, last_ms,"
        "   intDiv(greatest(first_ms, toInt64(%" PRId64 ")) - toInt64(%" PRId64
        "), toInt64(%" PRId64 ")) AS bs,"
        "   intDiv(least(last_ms, toInt64(%" PRId64 ")) - toInt64(%" PRId64 "), toInt64(%" PRId64
        ")) AS be,"
        "   toUInt64(be - bs + 1) AS nb, (bs = be OR last_ms <= first_ms) AS one,"
        "   if(one, toUInt64(1), nb) AS n,"
        "   (first_ms >= toInt64(%" PRId64 ") AND last_ms < toInt64(%" PRId64 ")) AS inside,"
        "   toFloat64(last_ms - first_ms) AS span,"
        "   arrayMap(j -> (toFloat64(least(last_ms, toInt64(%" PRId64 ") + toInt64(%" PRId64
        ") * (bs + j + 1))"
        "    - greatest(first_ms, toInt64(%" PRId64 ") + toInt64(%" PRId64 ") * (bs + j)))),"
        "    range(if(one, toUInt64(0), nb))) AS ov,"
        "   arrayMap(o -> if(o > 0, toUInt64(toFloat64(packets) * (o / span)), toUInt64(0)), ov)"
        "    AS ps,"
        "   arrayMap(o -> if(o > 0, toUInt64(toFloat64(bytes) * (o / span)), toUInt64(0)), ov)"
        "    AS bys"
        "  FROM %s_all WHERE last_ms >= toInt64(%" PRId64 ") AND first_ms <= %" PRId64
        "   AND least(last_ms, toInt64(%" PRId64 ")) >= greatest(first_ms, toInt64(%" PRId64 ")))"
        " ARRAY JOIN arrayEnumerate(range(n)) AS i"
        ") GROUP BY k ORDER BY k FORMAT TabSeparated",
        from_ms, from_ms, step_ms, end - 1, from_ms, step_ms, from_ms, end, from_ms, step_ms,
        from_ms, step_ms, snk__table(s), from_ms, end - 1, end - 1, from_ms);
    if ((rc = run_sql(s, sql, &b)) < 0)
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
    return rc;
}
