/* engine/query.c — totals and top-N over the store. A scan hands batches of rows to an
 * aggregator: a hash table keyed by the group key (xxh3), then a partial sort for the top. */
#include "engine/query.h"

#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

static const char *const by_names[QRY_NBY] = {"srcaddr", "dstaddr",  "proto", "srcport",
                                              "dstport", "exporter", "inif",  "outif",
                                              "srcas",   "dstas",    "tos",   "vlan"};
static const char *const metric_names[] = {"bytes", "packets", "flows"};

int qry_by_parse(const char *s, qry_by *out)
{
    for (int i = 0; i < QRY_NBY; i++) {
        if (strcmp(s, by_names[i]) == 0) {
            *out = (qry_by)i;
            return 0;
        }
    }
    return NS_E_PARSE;
}

const char *qry_by_name(qry_by by)
{
    return (unsigned)by < QRY_NBY ? by_names[by] : "?";
}

int qry_metric_parse(const char *s, qry_metric *out)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, metric_names[i]) == 0) {
            *out = (qry_metric)i;
            return 0;
        }
    }
    return NS_E_PARSE;
}

const char *qry_metric_name(qry_metric m)
{
    return (unsigned)m < 3 ? metric_names[m] : "?";
}

static bool by_is_addr(qry_by by)
{
    return by == QRY_BY_SRCADDR || by == QRY_BY_DSTADDR || by == QRY_BY_EXPORTER;
}

void qry_key_fmt(qry_by by, const qry_key *k, char *buf, size_t cap)
{
    if (by_is_addr(by))
        ns_addr_fmt(&k->addr, buf, cap);
    else
        snprintf(buf, cap, "%u", k->num);
}

static void totals_add(qry_totals *t, const eng_flow *r)
{
    if (t->flows == 0 || r->first_ms < t->first_ms)
        t->first_ms = r->first_ms;
    if (t->flows == 0 || r->last_ms > t->last_ms)
        t->last_ms = r->last_ms;
    t->flows++;
    t->packets += r->packets;
    t->bytes += r->bytes;
}

static void totals_merge(qry_totals *t, const qry_totals *o)
{
    if (o->flows == 0)
        return;
    if (t->flows == 0 || o->first_ms < t->first_ms)
        t->first_ms = o->first_ms;
    if (t->flows == 0 || o->last_ms > t->last_ms)
        t->last_ms = o->last_ms;
    t->flows += o->flows;
    t->packets += o->packets;
    t->bytes += o->bytes;
}

/* The addresses a filter requires, handed to the store so it reads only segments and rows that
 * may hold them (the filter still checks every row it gets). */
#define QRY_INDEX_ADDRS 64
typedef struct addr_set {
    ns_addr a[QRY_INDEX_ADDRS];
    eng_scan_opts o;
} addr_set;

static const eng_scan_opts *scan_opts(const qry_filter *f, addr_set *set)
{
    set->o.addrs = set->a;
    set->o.naddrs = f ? qry_filter_addrs(f, set->a, QRY_INDEX_ADDRS) : 0;
    return &set->o;
}

typedef struct summary_ctx {
    qry_totals t;
    const qry_filter *filter;
} summary_ctx;

static int summary_cb(void *arg, const eng_flow *rows, size_t n)
{
    summary_ctx *c = arg;
    for (size_t i = 0; i < n; i++)
        if (!c->filter || qry_filter_match(c->filter, &rows[i]))
            totals_add(&c->t, &rows[i]);
    return 0;
}

/* A segment wholly inside the range: its footer totals are the answer. */
static int summary_totals_cb(void *arg, uint64_t flows, uint64_t packets, uint64_t bytes,
                             int64_t first_ms, int64_t last_ms)
{
    summary_ctx *c = arg;
    if (c->filter)
        return 0; /* rows must be looked at one by one */
    qry_totals seg = {flows, packets, bytes, first_ms, last_ms};
    totals_merge(&c->t, &seg);
    return 1;
}

int qry_summary(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                qry_totals *out)
{
    summary_ctx c = {.filter = filter};
    uint32_t mask = ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES) |
                    ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
    if (filter)
        mask |= qry_filter_columns(filter);
    addr_set as;
    int rc = eng_db_scan_opt(db, from_ms, to_ms, mask, scan_opts(filter, &as), summary_cb,
                             summary_totals_cb, &c);
    *out = c.t;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Group table: open addressing, linear probing, grows at 50% load. */

typedef struct group_tab {
    qry_by by;
    const qry_filter *filter;
    qry_row *slots;
    uint8_t *used;
    size_t cap, n;
} group_tab;

static void key_of(qry_by by, const eng_flow *r, qry_key *k)
{
    memset(k, 0, sizeof *k);
    switch (by) {
    case QRY_BY_SRCADDR:
        k->addr = r->src;
        break;
    case QRY_BY_DSTADDR:
        k->addr = r->dst;
        break;
    case QRY_BY_EXPORTER:
        k->addr = r->exporter;
        break;
    case QRY_BY_PROTO:
        k->num = r->proto;
        break;
    case QRY_BY_SRCPORT:
        k->num = r->src_port;
        break;
    case QRY_BY_DSTPORT:
        k->num = r->dst_port;
        break;
    case QRY_BY_INIF:
        k->num = r->in_if;
        break;
    case QRY_BY_OUTIF:
        k->num = r->out_if;
        break;
    case QRY_BY_SRCAS:
        k->num = r->src_as;
        break;
    case QRY_BY_DSTAS:
        k->num = r->dst_as;
        break;
    case QRY_BY_TOS:
        k->num = r->tos;
        break;
    case QRY_BY_VLAN:
        k->num = r->vlan;
        break;
    case QRY_NBY:
        break;
    }
}

static int tab_grow(group_tab *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 1024;
    qry_row *ns = calloc(ncap, sizeof *ns);
    uint8_t *nu = calloc(ncap, 1);
    if (!ns || !nu) {
        free(ns);
        free(nu);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->used[i])
            continue;
        size_t h = (size_t)XXH3_64bits(&t->slots[i].key, sizeof(qry_key)) & (ncap - 1);
        while (nu[h])
            h = (h + 1) & (ncap - 1);
        nu[h] = 1;
        ns[h] = t->slots[i];
    }
    free(t->slots);
    free(t->used);
    t->slots = ns;
    t->used = nu;
    t->cap = ncap;
    return 0;
}

static int group_cb(void *arg, const eng_flow *rows, size_t n)
{
    group_tab *t = arg;
    for (size_t i = 0; i < n; i++) {
        qry_key k;
        if (t->filter && !qry_filter_match(t->filter, &rows[i]))
            continue;
        if (t->n * 2 >= t->cap && tab_grow(t) < 0)
            return NS_E_NOMEM;
        key_of(t->by, &rows[i], &k);
        size_t h = (size_t)XXH3_64bits(&k, sizeof k) & (t->cap - 1);
        while (t->used[h] && memcmp(&t->slots[h].key, &k, sizeof k) != 0)
            h = (h + 1) & (t->cap - 1);
        if (!t->used[h]) {
            t->used[h] = 1;
            t->slots[h].key = k;
            memset(&t->slots[h].t, 0, sizeof t->slots[h].t);
            t->n++;
        }
        totals_add(&t->slots[h].t, &rows[i]);
    }
    return 0;
}

/* Ties: addresses in byte order (network order), numbers by value. */
static int cmp_keys(const qry_key *x, const qry_key *y)
{
    int c = memcmp(x->addr.b, y->addr.b, sizeof x->addr.b);
    if (c)
        return c;
    return x->num < y->num ? -1 : x->num > y->num;
}

static int cmp_rows_bytes(const void *a, const void *b)
{
    const qry_row *x = a, *y = b;
    if (x->t.bytes != y->t.bytes)
        return x->t.bytes > y->t.bytes ? -1 : 1;
    return cmp_keys(&x->key, &y->key);
}

static int cmp_rows_packets(const void *a, const void *b)
{
    const qry_row *x = a, *y = b;
    if (x->t.packets != y->t.packets)
        return x->t.packets > y->t.packets ? -1 : 1;
    return cmp_keys(&x->key, &y->key);
}

static int cmp_rows_flows(const void *a, const void *b)
{
    const qry_row *x = a, *y = b;
    if (x->t.flows != y->t.flows)
        return x->t.flows > y->t.flows ? -1 : 1;
    return cmp_keys(&x->key, &y->key);
}

int qry_top(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter, qry_by by,
            qry_metric metric, size_t limit, qry_top_result *out)
{
    group_tab t = {.by = by, .filter = filter};
    uint32_t mask = ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES) |
                    ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST) |
                    (filter ? qry_filter_columns(filter) : 0u);
    int rc;
    memset(out, 0, sizeof *out);
    if ((unsigned)by >= QRY_NBY)
        return NS_E_RANGE;
    switch (by) {
    case QRY_BY_SRCADDR:
        mask |= ENG_COLMASK(ENG_COL_SRC);
        break;
    case QRY_BY_DSTADDR:
        mask |= ENG_COLMASK(ENG_COL_DST);
        break;
    case QRY_BY_EXPORTER:
        mask |= ENG_COLMASK(ENG_COL_EXPORTER);
        break;
    case QRY_BY_PROTO:
        mask |= ENG_COLMASK(ENG_COL_PROTO);
        break;
    case QRY_BY_SRCPORT:
        mask |= ENG_COLMASK(ENG_COL_SRC_PORT);
        break;
    case QRY_BY_DSTPORT:
        mask |= ENG_COLMASK(ENG_COL_DST_PORT);
        break;
    case QRY_BY_INIF:
        mask |= ENG_COLMASK(ENG_COL_IN_IF);
        break;
    case QRY_BY_OUTIF:
        mask |= ENG_COLMASK(ENG_COL_OUT_IF);
        break;
    case QRY_BY_SRCAS:
        mask |= ENG_COLMASK(ENG_COL_SRC_AS);
        break;
    case QRY_BY_DSTAS:
        mask |= ENG_COLMASK(ENG_COL_DST_AS);
        break;
    case QRY_BY_TOS:
        mask |= ENG_COLMASK(ENG_COL_TOS);
        break;
    case QRY_BY_VLAN:
        mask |= ENG_COLMASK(ENG_COL_VLAN);
        break;
    case QRY_NBY:
        break;
    }
    if ((rc = tab_grow(&t)) < 0)
        return rc;
    addr_set as;
    rc = eng_db_scan_opt(db, from_ms, to_ms, mask, scan_opts(filter, &as), group_cb, NULL, &t);
    if (rc < 0)
        goto out;
    /* compact the used slots to the front, then sort them */
    size_t k = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.used[i])
            t.slots[k++] = t.slots[i];
    int (*cmp)(const void *, const void *) = metric == QRY_M_BYTES     ? cmp_rows_bytes
                                             : metric == QRY_M_PACKETS ? cmp_rows_packets
                                                                       : cmp_rows_flows;
    qsort(t.slots, k, sizeof *t.slots, cmp);
    size_t keep = k < limit ? k : limit;
    for (size_t i = 0; i < k; i++)
        totals_merge(&out->total, &t.slots[i].t);
    out->groups = k;
    for (size_t i = keep; i < k; i++)
        totals_merge(&out->other, &t.slots[i].t);
    out->rows = malloc((keep ? keep : 1) * sizeof *out->rows);
    if (!out->rows) {
        rc = NS_E_NOMEM;
        goto out;
    }
    memcpy(out->rows, t.slots, keep * sizeof *out->rows);
    out->n = keep;
out:
    free(t.slots);
    free(t.used);
    return rc;
}

void qry_top_free(qry_top_result *r)
{
    if (!r)
        return;
    free(r->rows);
    r->rows = NULL;
    r->n = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Time series */

typedef struct series_ctx {
    int64_t from, step;
    size_t n;
    const qry_filter *filter;
    qry_totals *b;
} series_ctx;

static int series_cb(void *arg, const eng_flow *rows, size_t n)
{
    series_ctx *c = arg;
    int64_t end = c->from + c->step * (int64_t)c->n; /* exclusive */
    for (size_t i = 0; i < n; i++) {
        const eng_flow *r = &rows[i];
        if (c->filter && !qry_filter_match(c->filter, r))
            continue;
        int64_t s = r->first_ms < c->from ? c->from : r->first_ms;
        int64_t e = r->last_ms >= end ? end - 1 : r->last_ms;
        if (e < s)
            continue;
        size_t bs = (size_t)((s - c->from) / c->step), be = (size_t)((e - c->from) / c->step);
        c->b[bs].flows++;
        if (bs == be || r->last_ms <= r->first_ms) {
            c->b[bs].packets += r->packets;
            c->b[bs].bytes += r->bytes;
            continue;
        }
        /* proportional to the overlap with each bucket; the remainder goes to the last one so
         * the series adds up to the flow's counters exactly */
        double span = (double)(r->last_ms - r->first_ms);
        bool inside = r->first_ms >= c->from && r->last_ms < end;
        uint64_t given_p = 0, given_b = 0;
        for (size_t k = bs; k <= be; k++) {
            int64_t lo = c->from + c->step * (int64_t)k, hi = lo + c->step;
            int64_t os = r->first_ms > lo ? r->first_ms : lo;
            int64_t oe = r->last_ms < hi ? r->last_ms : hi;
            double share = oe > os ? (double)(oe - os) / span : 0.0;
            uint64_t p =
                k == be && inside ? r->packets - given_p : (uint64_t)((double)r->packets * share);
            uint64_t by =
                k == be && inside ? r->bytes - given_b : (uint64_t)((double)r->bytes * share);
            c->b[k].packets += p;
            c->b[k].bytes += by;
            given_p += p;
            given_b += by;
        }
    }
    return 0;
}

int qry_series(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
               const qry_filter *filter, qry_totals *buckets)
{
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS)
        return NS_E_RANGE;
    memset(buckets, 0, nbuckets * sizeof *buckets);
    series_ctx c = {from_ms, step_ms, nbuckets, filter, buckets};
    uint32_t mask = ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES) |
                    ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST) |
                    (filter ? qry_filter_columns(filter) : 0u);
    addr_set as;
    return eng_db_scan_opt(db, from_ms, from_ms + step_ms * (int64_t)nbuckets - 1, mask,
                           scan_opts(filter, &as), series_cb, NULL, &c);
}

int64_t qry_series_step(int64_t from_ms, int64_t to_ms, size_t target)
{
    static const int64_t steps[] = {1000,     5000,     10000,    30000,    60000,
                                    300000,   900000,   1800000,  3600000,  10800000,
                                    21600000, 43200000, 86400000, 604800000};
    int64_t range = to_ms - from_ms + 1;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (range / steps[i] <= (int64_t)target)
            return steps[i];
    return steps[sizeof steps / sizeof steps[0] - 1];
}

/* ------------------------------------------------------------------------------------------ */
/* Raw flows, newest first */

/* Newer first; equal start times ordered by the row's bytes so pages are stable. */
static int newer_first(const eng_flow *a, const eng_flow *b)
{
    if (a->first_ms != b->first_ms)
        return a->first_ms > b->first_ms ? -1 : 1;
    return memcmp(a, b, sizeof *a);
}

static int cmp_newer_first(const void *a, const void *b)
{
    return newer_first(a, b);
}

typedef struct flows_ctx {
    const qry_filter *filter;
    const qry_cursor *after;
    eng_flow *heap; /* the `cap` best rows so far; heap[0] is the oldest of them */
    size_t n, cap;
} flows_ctx;

static void heap_down(eng_flow *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && newer_first(&h[l], &h[m]) > 0)
            m = l;
        if (r < n && newer_first(&h[r], &h[m]) > 0)
            m = r;
        if (m == i)
            return;
        eng_flow t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(eng_flow *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (newer_first(&h[i], &h[p]) <= 0)
            return;
        eng_flow t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int flows_cb(void *arg, const eng_flow *rows, size_t n)
{
    flows_ctx *c = arg;
    for (size_t i = 0; i < n; i++) {
        const eng_flow *r = &rows[i];
        if (c->after && c->after->valid && r->first_ms > c->after->first_ms)
            continue; /* given on an earlier page */
        if (c->filter && !qry_filter_match(c->filter, r))
            continue;
        if (c->n < c->cap) {
            c->heap[c->n] = *r;
            heap_up(c->heap, c->n++);
        } else if (newer_first(r, &c->heap[0]) < 0) {
            c->heap[0] = *r; /* newer than the oldest kept */
            heap_down(c->heap, c->n, 0);
        }
    }
    return 0;
}

int qry_flows(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
              const qry_cursor *after, size_t limit, eng_flow **out, size_t *n, qry_cursor *next)
{
    if (limit == 0 || limit > QRY_FLOWS_MAX)
        return NS_E_RANGE;
    uint64_t skip = after && after->valid ? after->skip : 0;
    if (skip > QRY_FLOWS_MAX * 100ull)
        return NS_E_RANGE;
    /* one more than asked tells whether there is a next page */
    flows_ctx c = {filter, after, NULL, 0, (size_t)skip + limit + 1};
    c.heap = malloc(c.cap * sizeof *c.heap);
    if (!c.heap)
        return NS_E_NOMEM;
    addr_set as;
    int rc = eng_db_scan_opt(db, from_ms, to_ms, ENG_COLS_ALL, scan_opts(filter, &as), flows_cb,
                             NULL, &c);
    if (rc < 0) {
        free(c.heap);
        return rc;
    }
    qsort(c.heap, c.n, sizeof *c.heap, cmp_newer_first);
    /* skip what the earlier page gave at exactly the cursor's time */
    size_t start = 0;
    while (start < c.n && skip > 0 && after && c.heap[start].first_ms == after->first_ms) {
        start++;
        skip--;
    }
    size_t avail = c.n - start, k = avail < limit ? avail : limit;
    memmove(c.heap, c.heap + start, k * sizeof *c.heap);
    *out = c.heap;
    *n = k;
    memset(next, 0, sizeof *next);
    if (avail > limit && k > 0) {
        /* the next page starts after the last row given; count how many rows at its start
         * time have been given in all (this page and the ones before at the same time) */
        int64_t t = c.heap[k - 1].first_ms;
        uint64_t same = 0;
        for (size_t i = 0; i < k; i++)
            same += c.heap[i].first_ms == t;
        if (after && after->valid && after->first_ms == t)
            same += after->skip;
        next->first_ms = t;
        next->skip = same;
        next->valid = true;
    }
    return 0;
}
