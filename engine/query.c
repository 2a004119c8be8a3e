/* engine/query.c — totals and top-N over the store. A scan hands batches of rows to an
 * aggregator: a hash table keyed by the group key (xxh3), then a partial sort for the top. */
#include "engine/query.h"
#include "engine/query_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <xxhash.h>

static _Thread_local int64_t qry_deadline_ms;

void qry_set_deadline(int64_t deadline_ms)
{
    qry_deadline_ms = deadline_ms;
}

/* Checked once per batch of rows (thousands), so the clock read costs nothing. Scan workers
 * run on other threads: each query copies the caller's deadline into its contexts. */
static bool past_deadline(int64_t deadline_ms)
{
    return deadline_ms && ns_now_ms() > deadline_ms;
}

static const char *const by_names[QRY_NBY] = {
    "srcaddr", "dstaddr", "proto", "srcport", "dstport", "exporter",     "inif",   "outif",
    "srcas",   "dstas",   "tos",   "vlan",    "app",     "conversation", "srcnet", "dstnet"};
static const char *const metric_names[] = {"bytes", "packets", "flows", "bps", "pps"};
#define NMETRICS (sizeof metric_names / sizeof metric_names[0])

int qry_by_parse(const char *s, qry_by *out)
{
    for (int i = 0; i < QRY_NBY; i++) {
        if (strcmp(s, by_names[i]) == 0) {
            *out = (qry_by)i;
            return 0;
        }
    }
    if (strcmp(s, "conv") == 0) {
        *out = QRY_BY_CONV;
        return 0;
    }
    return NS_E_PARSE;
}

const char *qry_by_name(qry_by by)
{
    return (unsigned)by < QRY_NBY ? by_names[by] : "?";
}

int qry_metric_parse(const char *s, qry_metric *out)
{
    for (size_t i = 0; i < NMETRICS; i++) {
        if (strcmp(s, metric_names[i]) == 0) {
            *out = (qry_metric)i;
            return 0;
        }
    }
    return NS_E_PARSE;
}

const char *qry_metric_name(qry_metric m)
{
    return (unsigned)m < NMETRICS ? metric_names[m] : "?";
}

static bool by_is_addr(qry_by by)
{
    return by == QRY_BY_SRCADDR || by == QRY_BY_DSTADDR || by == QRY_BY_EXPORTER;
}

static bool by_is_net(qry_by by)
{
    return by == QRY_BY_SRCNET || by == QRY_BY_DSTNET;
}

bool qry_keyspec_is_text(const qry_keyspec *ks)
{
    return by_is_addr(ks->by) || by_is_net(ks->by) || ks->by == QRY_BY_APP || ks->by == QRY_BY_CONV;
}

void qry_group_one(qry_by by, qry_group *out)
{
    memset(out, 0, sizeof *out);
    out->n = 1;
    out->k[0] = (qry_keyspec){by, 24, 64};
}

/* "24" or "24/48" after "srcnet/": v4 bits, then optional v6 bits. */
static int parse_bits(const char *s, size_t len, qry_keyspec *ks)
{
    unsigned v[2] = {0, 64};
    size_t i = 0;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        unsigned x = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3)
            x = x * 10 + (unsigned)(s[i++] - '0');
        if (i == start)
            return NS_E_PARSE;
        v[part] = x;
        if (i == len)
            break;
        if (s[i] != '/' || part == 1)
            return NS_E_PARSE;
        i++;
    }
    if (i != len || v[0] > 32 || v[1] > 128)
        return NS_E_RANGE;
    ks->bits4 = (uint8_t)v[0];
    ks->bits6 = (uint8_t)v[1];
    return 0;
}

int qry_group_parse(const char *s, qry_group *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    if (errcap)
        err[0] = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *slash = memchr(p, '/', len);
        size_t nlen = slash ? (size_t)(slash - p) : len;
        char name[16];
        qry_keyspec ks = {QRY_BY_SRCADDR, 24, 64};
        if (nlen == 0 || nlen >= sizeof name) {
            snprintf(err, errcap, "expected a key name at '%.32s'", p);
            return NS_E_PARSE;
        }
        memcpy(name, p, nlen);
        name[nlen] = 0;
        if (qry_by_parse(name, &ks.by) < 0) {
            snprintf(err, errcap, "unknown key '%s'", name);
            return NS_E_PARSE;
        }
        if (slash && !by_is_net(ks.by)) {
            snprintf(err, errcap, "key '%s' takes no prefix length", name);
            return NS_E_PARSE;
        }
        if (slash && parse_bits(slash + 1, len - nlen - 1, &ks) < 0) {
            snprintf(err, errcap, "'%.*s': expected /BITS4 (0-32) or /BITS4/BITS6 (0-128)",
                     (int)(len > 32 ? 32 : len), p);
            return NS_E_PARSE;
        }
        if (out->n == QRY_MAX_KEYS) {
            snprintf(err, errcap, "at most %d keys", QRY_MAX_KEYS);
            return NS_E_PARSE;
        }
        for (size_t i = 0; i < out->n; i++) {
            if (out->k[i].by == ks.by) {
                snprintf(err, errcap, "key '%s' given twice", name);
                return NS_E_PARSE;
            }
        }
        out->k[out->n++] = ks;
        if (!end)
            return 0;
        p = end + 1;
    }
}

void qry_group_fmt(const qry_group *g, char *buf, size_t cap)
{
    size_t used = 0;
    if (cap)
        buf[0] = 0;
    for (size_t i = 0; i < g->n && used < cap; i++) {
        const qry_keyspec *ks = &g->k[i];
        int w = by_is_net(ks->by)
                    ? snprintf(buf + used, cap - used, "%s%s/%u/%u", i ? "," : "", by_names[ks->by],
                               ks->bits4, ks->bits6)
                    : snprintf(buf + used, cap - used, "%s%s", i ? "," : "", qry_by_name(ks->by));
        if (w < 0)
            return;
        used += (size_t)w;
    }
}

static const char *proto_name(uint32_t p)
{
    switch (p) {
    case 1:
        return "icmp";
    case 6:
        return "tcp";
    case 17:
        return "udp";
    case 47:
        return "gre";
    case 50:
        return "esp";
    case 51:
        return "ah";
    case 58:
        return "icmp6";
    case 132:
        return "sctp";
    default:
        return NULL;
    }
}

void qry_keyval_fmt(const qry_keyspec *ks, const qry_keyval *v, char *buf, size_t cap)
{
    char a[64], b[64];
    if (by_is_addr(ks->by)) {
        ns_addr_fmt(&v->addr, buf, cap);
    } else if (by_is_net(ks->by)) {
        ns_addr_fmt(&v->addr, a, sizeof a);
        snprintf(buf, cap, "%s/%u", a, ns_addr_is_v4(&v->addr) ? ks->bits4 : ks->bits6);
    } else if (ks->by == QRY_BY_CONV) {
        ns_addr_fmt(&v->addr, a, sizeof a);
        ns_addr_fmt(&v->addr2, b, sizeof b);
        snprintf(buf, cap, "%s <-> %s", a, b);
    } else if (ks->by == QRY_BY_APP) {
        uint32_t proto = v->num >> 16, port = v->num & 0xffff;
        const char *pn = proto_name(proto);
        char num[16];
        if (!pn) {
            snprintf(num, sizeof num, "%u", proto);
            pn = num;
        }
        if (proto == 1 || proto == 58)
            snprintf(buf, cap, "%s/%u.%u", pn, port >> 8, port & 0xff);
        else if (proto == 6 || proto == 17 || proto == 132)
            snprintf(buf, cap, "%s/%u", pn, port);
        else
            snprintf(buf, cap, "%s", pn);
    } else {
        snprintf(buf, cap, "%u", v->num);
    }
}

void qry_key_fmt(qry_by by, const qry_key *k, char *buf, size_t cap)
{
    qry_keyspec ks = {by, 24, 64};
    qry_keyval_fmt(&ks, &k->v[0], buf, cap);
}

int64_t qry_span_ms(int64_t from_ms, int64_t to_ms, const qry_totals *total)
{
    if (!total->flows)
        return 0;
    /* an open end (callers pass extremes, or a quarter of them) is where the data is */
    int64_t lo = from_ms <= INT64_MIN / 4 ? total->first_ms : from_ms;
    int64_t hi = to_ms >= INT64_MAX / 4 ? total->last_ms : to_ms;
    return hi - lo + 1 < 1000 ? 1000 : hi - lo + 1;
}

double qry_rate(uint64_t v, int64_t span_ms)
{
    return span_ms > 0 ? (double)v * 1000.0 / (double)span_ms : 0.0;
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

/* ------------------------------------------------------------------------------------------ */
/* Rows as columns: the scans hand over column views (engine/store.h) and every aggregation
 * reads row i's values straight from the columns it needs, without building rows. */

#define SEL_BLOCK 256
/* Per worker: the rows of a view that a filter passed, and a block of rows to test it on. */
typedef struct qry_sel {
    uint32_t *rows;
    size_t cap;
    uint8_t *answers; /* qry_filter_select_dict's scratch */
    size_t acap;
    eng_flow block[SEL_BLOCK];
} qry_sel;

static void sel_free(qry_sel *s)
{
    if (s) {
        free(s->rows);
        free(s->answers);
        free(s);
    }
}

/* The rows of v to aggregate: with no filter, v's own (*out NULL then means rows 0..n); else
 * those f passes, listed in (*sel)->rows (allocated on first use; the caller frees *sel). */
static int view_select(const qry_filter *f, const eng_colview *v, qry_sel **sel,
                       const uint32_t **out, size_t *n)
{
    if (!f) {
        *out = v->idx;
        *n = v->n;
        return 0;
    }
    qry_sel *s = *sel;
    if (!s && !(s = *sel = calloc(1, sizeof *s)))
        return NS_E_NOMEM;
    if (s->cap < v->n) {
        uint32_t *r = realloc(s->rows, v->n * sizeof *r);
        if (!r)
            return NS_E_NOMEM;
        s->rows = r;
        s->cap = v->n;
    }
    if (qry_filter_by_dict(f, v)) {
        size_t m = qry_filter_select_dict(f, v, &s->answers, &s->acap, s->rows);
        if (m == SIZE_MAX)
            return NS_E_NOMEM;
        *out = s->rows;
        *n = m;
        return 0;
    }
    /* the filter reads only its own columns: only those are written into the block (an
     * address column the scan left as a dictionary, from it) */
    uint32_t cols = qry_filter_columns(f), from_dict = 0;
    for (eng_col c = ENG_COL_SRC; c <= ENG_COL_DST; c++)
        if ((cols & ENG_COLMASK(c)) && !v->col[c] && v->dict[c])
            from_dict |= ENG_COLMASK(c);
    size_t m = 0;
    for (size_t k0 = 0; k0 < v->n; k0 += SEL_BLOCK) {
        size_t cnt = v->n - k0 < SEL_BLOCK ? v->n - k0 : SEL_BLOCK;
        eng_colview_fill(v, k0, cnt, cols & ~from_dict, s->block);
        for (eng_col c = ENG_COL_SRC; from_dict && c <= ENG_COL_DST; c++) {
            const eng_coldict *d = v->dict[c];
            if (!(from_dict & ENG_COLMASK(c)))
                continue;
            for (size_t j = 0; j < cnt; j++) {
                size_t i = v->idx ? v->idx[k0 + j] : k0 + j;
                memcpy(c == ENG_COL_SRC ? s->block[j].src.b : s->block[j].dst.b,
                       d->vals + (size_t)d->codes[i] * 16, 16);
            }
        }
        for (size_t j = 0; j < cnt; j++)
            if (qry_filter_match(f, &s->block[j]))
                s->rows[m++] = v->idx ? v->idx[k0 + j] : (uint32_t)(k0 + j);
    }
    *out = s->rows;
    *n = m;
    return 0;
}

/* The k-th selected row's number in the columns. */
static inline size_t row_at(const uint32_t *rows, size_t k)
{
    return rows ? (size_t)rows[k] : k;
}

static inline int64_t first_of(const eng_colview *v, size_t i)
{
    return (int64_t)eng_col_u64(v, ENG_COL_FIRST, i);
}

static inline int64_t last_of(const eng_colview *v, size_t i)
{
    return (int64_t)eng_col_u64(v, ENG_COL_LAST, i);
}

/* Rows read without their times (QRY_TOP_NO_GROUP_TIMES) leave first/last at these until rows
 * with times come; tab_result() puts 0 in their place, and the footers' range in the total's. */
#define NO_FIRST INT64_MAX
#define NO_LAST  INT64_MIN

/* The flows row i stands for: a roll-up row many, a raw row one (its flows column is 0). */
static inline uint64_t flows_of(const eng_colview *v, size_t i)
{
    uint64_t f = v->mask & ENG_COLMASK(ENG_COL_FLOWS) ? eng_col_u64(v, ENG_COL_FLOWS, i) : 0;
    return f ? f : 1;
}

static void totals_add(qry_totals *t, const eng_colview *v, size_t i)
{
    if (!(v->mask & ENG_COLMASK(ENG_COL_FIRST))) {
        if (t->flows == 0) {
            t->first_ms = NO_FIRST;
            t->last_ms = NO_LAST;
        }
        t->flows += flows_of(v, i);
        t->packets += eng_col_u64(v, ENG_COL_PACKETS, i);
        t->bytes += eng_col_u64(v, ENG_COL_BYTES, i);
        return;
    }
    int64_t first = first_of(v, i), last = last_of(v, i);
    if (t->flows == 0 || first < t->first_ms)
        t->first_ms = first;
    if (t->flows == 0 || last > t->last_ms)
        t->last_ms = last;
    t->flows += flows_of(v, i);
    t->packets += eng_col_u64(v, ENG_COL_PACKETS, i);
    t->bytes += eng_col_u64(v, ENG_COL_BYTES, i);
}

/* The addresses a filter requires, handed to the store so it reads only segments and rows that
 * may hold them (the filter still checks every row it gets). */
#define QRY_INDEX_ADDRS 64
typedef struct addr_set {
    ns_addr a[QRY_INDEX_ADDRS];
    eng_scan_opts o;
} addr_set;

static const eng_scan_opts *scan_opts(const qry_filter *f, addr_set *set, eng_cols_cb cols)
{
    memset(&set->o, 0, sizeof set->o);
    set->o.cols = cols;
    set->o.addrs = set->a;
    set->o.naddrs = f ? qry_filter_addrs(f, set->a, QRY_INDEX_ADDRS) : 0;
    return &set->o;
}

/* The filter's columns a scan may leave as dictionaries (not expanded) for an aggregation
 * that reads no address itself: all of them when the filter reads addresses only (view_select
 * tests those once a distinct value, or fills rows from the dictionaries). */
static uint32_t filter_dict_only(const qry_filter *f)
{
    uint32_t c = qry_filter_columns(f);
    return c && !(c & ~(ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST))) ? c : 0;
}

/* The columns every aggregation reads (counters and times), and the filter's. */
static uint32_t base_columns(const qry_filter *filter)
{
    return ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES) | ENG_COLMASK(ENG_COL_FIRST) |
           ENG_COLMASK(ENG_COL_LAST) | ENG_COLMASK(ENG_COL_FLOWS) |
           (filter ? qry_filter_columns(filter) : 0u);
}

typedef struct summary_ctx {
    qry_totals t;
    const qry_filter *filter;
    bool host_totals; /* tcb gets the totals of the filter's one address (opts.addr_sides) */
    int64_t deadline;
    qry_sel *sel;
} summary_ctx;

static int summary_cols(void *arg, const eng_colview *v)
{
    summary_ctx *c = arg;
    const uint32_t *rows;
    size_t n;
    int rc;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
    if ((rc = view_select(c->filter, v, &c->sel, &rows, &n)) < 0)
        return rc;
    for (size_t k = 0; k < n; k++)
        totals_add(&c->t, v, row_at(rows, k));
    return 0;
}

/* A segment wholly inside the range: its footer totals are the answer. */
static int summary_totals_cb(void *arg, uint64_t flows, uint64_t packets, uint64_t bytes,
                             int64_t first_ms, int64_t last_ms)
{
    summary_ctx *c = arg;
    if (c->filter && !c->host_totals)
        return 0; /* rows must be looked at one by one */
    qry_totals seg = {flows, packets, bytes, first_ms, last_ms};
    totals_merge(&c->t, &seg);
    return 1;
}

int qry_summary(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                qry_totals *out)
{
    summary_ctx c[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    unsigned nw = eng_scan_workers();
    uint32_t mask = base_columns(filter);
    addr_set as;
    scan_opts(filter, &as, summary_cols);
    as.o.dict_only = filter_dict_only(filter); /* a summary reads no address itself */
    /* "host A" and its one-sided forms: segments that keep A's totals answer without rows */
    ns_addr host;
    as.o.addr_sides = qry_filter_host_sides(filter, &host);
    if (as.o.addr_sides && (as.o.naddrs != 1 || memcmp(as.a[0].b, host.b, 16) != 0))
        as.o.addr_sides = 0;
    for (unsigned w = 0; w < nw; w++) {
        c[w] = (summary_ctx){
            .filter = filter, .host_totals = as.o.addr_sides != 0, .deadline = qry_deadline_ms};
        args[w] = &c[w];
    }
    int rc = eng_db_scan_par(db, from_ms, to_ms, mask, &as.o, nw, NULL, summary_totals_cb, args);
    for (unsigned w = 1; w < nw; w++)
        totals_merge(&c[0].t, &c[w].t);
    for (unsigned w = 0; w < nw; w++)
        sel_free(c[w].sel);
    *out = c[0].t;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Group table: each group's key is packed into klen bytes (addresses as stored, numbers
 * big-endian, so byte order is value order), hashed with xxh3; open addressing, linear
 * probing, grows at 70% load (the hash is good; tables of millions of groups are memory-bound,
 * and half-empty ones cost twice the pages). Conversation direction totals are kept only when asked
 * for. */

#define QRY_MAX_GROUPS (16u << 20) /* distinct groups one query may hold */
#define TENT(t, i)     ((tab_ent *)(void *)((t)->ent + (size_t)(i) * (t)->stride))
#define TKEY(t, i)     ((t)->ent + (size_t)(i) * (t)->stride + sizeof(tab_ent))

typedef struct tab_ent {
    uint64_t hash;
    qry_totals tot;
} tab_ent;

typedef struct group_tab {
    eng_db *db; /* its large arrays are the database's scratch blocks (NULL: malloc) */
    const qry_group *g;
    const qry_filter *filter;
    size_t klen;
    size_t conv_off; /* offset of the conversation key, when conv */
    bool conv;
    /* cap entries of stride bytes: hash (0 = empty slot) and totals (a tab_ent), then the key:
     * a one-address group is one cache line, so a probe misses once, not twice */
    uint8_t *ent;
    size_t stride;
    qry_totals *dir;         /* 2 * cap (a to b, b to a) when conv */
    size_t ent_blk, dir_blk; /* their scratch blocks' sizes (0: malloc'd) */
    size_t cap, n;
    int64_t deadline;
    qry_sel *sel; /* the filter's rows (group_cols) */
    /* One small numeric key (protocol, ToS, a port, VLAN): totals indexed by its value, no
     * hashing; tab_flush() moves them into the table. ndirect 0: not used. Counters and times
     * apart: 64k counters (1.5 MB) stay in a core's cache, and rows read without times (a
     * top-N without group times) need no time array at all. */
    struct {
        uint64_t flows, packets, bytes;
    } * direct;
    int64_t (*dtimes)[2]; /* first, last of each value; NULL until a row with times */
    size_t ndirect;
    uint8_t *pbuf; /* counters decoded from planes where the fast path cannot read those */
    size_t pcap;
    int64_t span_first, span_last; /* footer range of segments read without times */
    bool no_group_times;           /* QRY_TOP_NO_GROUP_TIMES: tab_result gives groups none */
    /* a filtered top-N without group times (see span_pass): rows that come with times add
     * the selected rows' range to span_first/span_last */
    bool span_rows;
    /* top_only (a top-N without group times): the value arrays give the table only their
     * `limit` best values by metric; tab_flush then keeps the total of all values and their
     * count here (have_total), and tab_result takes these instead of the table's */
    bool top_only, have_total;
    qry_metric metric;
    size_t limit, ngroups;
    qry_totals total;
    /* One address key of a segment with that column as a dictionary: totals per code first
     * (an array the size of the segment's distinct values), then one lookup per value. */
    qry_totals *dacc;
    size_t dcap;
} group_tab;

static size_t spec_len(const qry_keyspec *ks)
{
    if (ks->by == QRY_BY_CONV)
        return 32;
    return by_is_addr(ks->by) || by_is_net(ks->by) ? 16 : 4;
}

static void mask_addr(uint8_t *a, const qry_keyspec *ks)
{
    ns_addr tmp;
    memcpy(tmp.b, a, 16);
    unsigned bits = ns_addr_is_v4(&tmp) ? 96u + ks->bits4 : ks->bits6;
    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8 * (i + 1))
            continue;
        a[i] = bits <= 8 * i ? 0 : (uint8_t)(a[i] & (0xffu << (8 - (bits - 8 * i))));
    }
}

/* The service port of a flow: the lower port for TCP/UDP/SCTP (a zero port does not count),
 * ICMP type and code for ICMP, none otherwise. */
static uint32_t app_of(uint8_t proto, uint16_t sport, uint16_t dport)
{
    uint32_t port = 0;
    switch (proto) {
    case 6:
    case 17:
    case 132: {
        uint16_t lo = sport < dport ? sport : dport;
        uint16_t hi = sport < dport ? dport : sport;
        port = lo ? lo : hi;
        break;
    }
    case 1:
    case 58:
        port = dport;
        break;
    default:
        break;
    }
    return (uint32_t)proto << 16 | port;
}

static uint32_t num_of(qry_by by, const eng_colview *v, size_t i)
{
    switch (by) {
    case QRY_BY_PROTO:
        return v->col[ENG_COL_PROTO][i];
    case QRY_BY_SRCPORT:
        return eng_col_u16(v, ENG_COL_SRC_PORT, i);
    case QRY_BY_DSTPORT:
        return eng_col_u16(v, ENG_COL_DST_PORT, i);
    case QRY_BY_INIF:
        return eng_col_u32(v, ENG_COL_IN_IF, i);
    case QRY_BY_OUTIF:
        return eng_col_u32(v, ENG_COL_OUT_IF, i);
    case QRY_BY_SRCAS:
        return eng_col_u32(v, ENG_COL_SRC_AS, i);
    case QRY_BY_DSTAS:
        return eng_col_u32(v, ENG_COL_DST_AS, i);
    case QRY_BY_TOS:
        return v->col[ENG_COL_TOS][i];
    case QRY_BY_VLAN:
        return eng_col_u16(v, ENG_COL_VLAN, i);
    case QRY_BY_APP:
        return app_of(v->col[ENG_COL_PROTO][i], eng_col_u16(v, ENG_COL_SRC_PORT, i),
                      eng_col_u16(v, ENG_COL_DST_PORT, i));
    default:
        return 0;
    }
}

/* Packs row i's key into out (klen bytes). */
static void pack_key(const group_tab *t, const eng_colview *v, size_t i, uint8_t *out)
{
    for (size_t j = 0; j < t->g->n; j++) {
        const qry_keyspec *ks = &t->g->k[j];
        switch (ks->by) {
        case QRY_BY_SRCADDR:
        case QRY_BY_SRCNET:
            memcpy(out, eng_col_addr(v, ENG_COL_SRC, i), 16);
            break;
        case QRY_BY_DSTADDR:
        case QRY_BY_DSTNET:
            memcpy(out, eng_col_addr(v, ENG_COL_DST, i), 16);
            break;
        case QRY_BY_EXPORTER:
            memcpy(out, eng_col_addr(v, ENG_COL_EXPORTER, i), 16);
            break;
        case QRY_BY_CONV: {
            const uint8_t *src = eng_col_addr(v, ENG_COL_SRC, i);
            const uint8_t *dst = eng_col_addr(v, ENG_COL_DST, i);
            bool fwd = memcmp(src, dst, 16) <= 0;
            memcpy(out, fwd ? src : dst, 16);
            memcpy(out + 16, fwd ? dst : src, 16);
            break;
        }
        default:
            ns_put_be32(out, num_of(ks->by, v, i));
            break;
        }
        if (by_is_net(ks->by))
            mask_addr(out, ks);
        out += spec_len(ks);
    }
}

static void unpack_key(const qry_group *g, const uint8_t *in, qry_key *k)
{
    memset(k, 0, sizeof *k);
    for (size_t i = 0; i < g->n; i++) {
        const qry_keyspec *ks = &g->k[i];
        size_t len = spec_len(ks);
        if (len == 4) {
            k->v[i].num = ns_get_be32(in);
        } else {
            memcpy(k->v[i].addr.b, in, 16);
            if (len == 32)
                memcpy(k->v[i].addr2.b, in + 16, 16);
        }
        in += len;
    }
}

/* The columns a grouping reads. */
static uint32_t group_columns(const qry_group *g)
{
    static const uint32_t cols[QRY_NBY] = {
        [QRY_BY_SRCADDR] = ENG_COLMASK(ENG_COL_SRC),
        [QRY_BY_DSTADDR] = ENG_COLMASK(ENG_COL_DST),
        [QRY_BY_PROTO] = ENG_COLMASK(ENG_COL_PROTO),
        [QRY_BY_SRCPORT] = ENG_COLMASK(ENG_COL_SRC_PORT),
        [QRY_BY_DSTPORT] = ENG_COLMASK(ENG_COL_DST_PORT),
        [QRY_BY_EXPORTER] = ENG_COLMASK(ENG_COL_EXPORTER),
        [QRY_BY_INIF] = ENG_COLMASK(ENG_COL_IN_IF),
        [QRY_BY_OUTIF] = ENG_COLMASK(ENG_COL_OUT_IF),
        [QRY_BY_SRCAS] = ENG_COLMASK(ENG_COL_SRC_AS),
        [QRY_BY_DSTAS] = ENG_COLMASK(ENG_COL_DST_AS),
        [QRY_BY_TOS] = ENG_COLMASK(ENG_COL_TOS),
        [QRY_BY_VLAN] = ENG_COLMASK(ENG_COL_VLAN),
        [QRY_BY_APP] = ENG_COLMASK(ENG_COL_PROTO) | ENG_COLMASK(ENG_COL_SRC_PORT) |
                       ENG_COLMASK(ENG_COL_DST_PORT),
        [QRY_BY_CONV] = ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST),
        [QRY_BY_SRCNET] = ENG_COLMASK(ENG_COL_SRC),
        [QRY_BY_DSTNET] = ENG_COLMASK(ENG_COL_DST),
    };
    uint32_t m = 0;
    for (size_t i = 0; i < g->n; i++)
        m |= cols[g->k[i].by];
    return m;
}

static int tab_init(group_tab *t, eng_db *db, const qry_group *g, const qry_filter *filter)
{
    memset(t, 0, sizeof *t);
    if (g->n == 0 || g->n > QRY_MAX_KEYS)
        return NS_E_RANGE;
    t->db = db;
    t->g = g;
    t->filter = filter;
    t->deadline = qry_deadline_ms;
    t->span_first = NO_FIRST;
    t->span_last = NO_LAST;
    if (g->n == 1) {
        switch (g->k[0].by) {
        case QRY_BY_PROTO:
        case QRY_BY_TOS:
            t->ndirect = 256;
            break;
        case QRY_BY_SRCPORT:
        case QRY_BY_DSTPORT:
        case QRY_BY_VLAN:
            t->ndirect = 65536;
            break;
        default:
            break;
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        if ((unsigned)g->k[i].by >= QRY_NBY || g->k[i].bits4 > 32 || g->k[i].bits6 > 128)
            return NS_E_RANGE;
        if (g->k[i].by == QRY_BY_CONV) {
            if (t->conv)
                return NS_E_RANGE;
            t->conv = true;
            t->conv_off = t->klen;
        }
        t->klen += spec_len(&g->k[i]);
    }
    return 0;
}

static void tab_release(const group_tab *t, void *p, size_t blk)
{
    if (blk)
        eng_db_mem_put(t->db, p, blk);
    else
        free(p);
}

static void tab_free_arrays(group_tab *t)
{
    tab_release(t, t->ent, t->ent_blk);
    tab_release(t, t->dir, t->dir_blk);
    t->ent = NULL;
    t->dir = NULL;
    t->ent_blk = t->dir_blk = 0;
}

static void tab_free(group_tab *t)
{
    free(t->dacc);
    t->dacc = NULL;
    free(t->pbuf);
    t->pbuf = NULL;
    t->pcap = 0;
    free(t->direct);
    free(t->dtimes);
    t->direct = NULL;
    t->dtimes = NULL;
    tab_free_arrays(t);
    sel_free(t->sel);
    t->sel = NULL;
}

static int tab_grow_to(group_tab *t, size_t ncap);

/* Group arrays of many groups (millions, for conversations) in huge pages where the kernel
 * offers them on request: faulting them in 4 KiB at a time was a third of such a query. With a
 * database they are its scratch blocks, kept between queries (a repeated query's table then
 * costs no page faults). *blk: the block's size, 0 when malloc'd (release with tab_release). */
#define TAB_HUGE (4u << 20)
static void *tab_alloc(const group_tab *t, size_t bytes, size_t *blk)
{
    void *p;
    *blk = 0;
    if (bytes < TAB_HUGE)
        return malloc(bytes);
    if (t->db)
        return eng_db_mem_get(t->db, bytes, blk);
    size_t huge = 2u << 20, size = (bytes + huge - 1) / huge * huge;
    if (!(p = aligned_alloc(huge, size)))
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, size, MADV_HUGEPAGE); /* a hint: without it, small pages as before */
#endif
    return p;
}

static int tab_grow(group_tab *t)
{
    return tab_grow_to(t, t->cap ? t->cap * 2 : 1024);
}

/* Makes room for n more groups at once (keys whose groups are about as many as the rows):
 * one rehash instead of one a doubling. */
static int tab_reserve(group_tab *t, size_t n)
{
    size_t ncap = t->cap ? t->cap : 1024;
    while ((t->n + n) * 10 > ncap * 7 && ncap < (size_t)QRY_MAX_GROUPS * 2)
        ncap *= 2;
    return ncap > t->cap ? tab_grow_to(t, ncap) : 0;
}

static int tab_grow_to(group_tab *t, size_t ncap)
{
    if (t->n >= QRY_MAX_GROUPS)
        return NS_E_TOO_MANY;
    if (!t->stride) /* a tab_ent, the key, 8-byte aligned */
        t->stride = (sizeof(tab_ent) + t->klen + 7) / 8 * 8;
    size_t eblk, dblk = 0;
    uint8_t *ne = tab_alloc(t, ncap * t->stride, &eblk);
    qry_totals *nd = t->conv ? tab_alloc(t, 2 * ncap * sizeof *nd, &dblk) : NULL;
    if (!ne || (t->conv && !nd)) {
        tab_release(t, ne, eblk);
        tab_release(t, nd, dblk);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < ncap; i++)
        ((tab_ent *)(void *)(ne + i * t->stride))->hash = 0;
    for (size_t i = 0; i < t->cap; i++) {
        const tab_ent *e = TENT(t, i);
        if (!e->hash)
            continue;
        size_t h = (size_t)e->hash & (ncap - 1);
        while (((tab_ent *)(void *)(ne + h * t->stride))->hash)
            h = (h + 1) & (ncap - 1);
        memcpy(ne + h * t->stride, e, t->stride);
        if (nd) {
            nd[2 * h] = t->dir[2 * i];
            nd[2 * h + 1] = t->dir[2 * i + 1];
        }
    }
    tab_free_arrays(t);
    t->ent = ne;
    t->dir = nd;
    t->ent_blk = eblk;
    t->dir_blk = dblk;
    t->cap = ncap;
    return 0;
}

/* Key equality with the common lengths spelled out, so the compiler inlines them: a call to
 * memcmp per probe was a tenth of a top-N's time. */
static inline bool key_eq(const uint8_t *a, const uint8_t *b, size_t len)
{
    switch (len) {
    case 4:
        return memcmp(a, b, 4) == 0;
    case 16:
        return memcmp(a, b, 16) == 0;
    case 32:
        return memcmp(a, b, 32) == 0;
    default:
        return memcmp(a, b, len) == 0;
    }
}

static uint64_t key_hash(const uint8_t *k, size_t len)
{
    uint64_t h = XXH3_64bits(k, len);
    return h ? h : 1;
}

/* The slot of key k (hash h): found, or a new zeroed one when insert; SIZE_MAX when absent
 * (or on a failed grow: *rc says). */
static size_t tab_slot(group_tab *t, const uint8_t *k, uint64_t h, bool insert, int *rc)
{
    if (insert && t->n * 10 >= t->cap * 7 && (*rc = tab_grow(t)) < 0)
        return SIZE_MAX;
    size_t i = (size_t)h & (t->cap - 1);
    while (TENT(t, i)->hash) {
        if (TENT(t, i)->hash == h && key_eq(TKEY(t, i), k, t->klen))
            return i;
        i = (i + 1) & (t->cap - 1);
    }
    if (!insert)
        return SIZE_MAX;
    TENT(t, i)->hash = h;
    memcpy(TKEY(t, i), k, t->klen);
    memset(&TENT(t, i)->tot, 0, sizeof TENT(t, i)->tot);
    if (t->dir)
        memset(&t->dir[2 * i], 0, 2 * sizeof t->dir[0]);
    t->n++;
    return i;
}

/* Counts row i, whose key k is packed (hash h), in its group and its direction's totals (a
 * conversation). Returns 0 or the error of a failed grow. */
static int tab_add_key(group_tab *t, const eng_colview *v, size_t i, const uint8_t *k, uint64_t h)
{
    int rc = 0;
    size_t s = tab_slot(t, k, h, true, &rc);
    if (s == SIZE_MAX)
        return rc;
    totals_add(&TENT(t, s)->tot, v, i);
    if (t->dir) {
        bool ab = memcmp(eng_col_addr(v, ENG_COL_SRC, i), k + t->conv_off, 16) == 0;
        totals_add(&t->dir[2 * s + (ab ? 0 : 1)], v, i);
    }
    return 0;
}

static int tab_add_direct(group_tab *t, const eng_colview *v, size_t i)
{
    size_t x = num_of(t->g->k[0].by, v, i) & (t->ndirect - 1);
    if (!t->direct && !(t->direct = calloc(t->ndirect, sizeof *t->direct)))
        return NS_E_NOMEM;
    t->direct[x].flows += flows_of(v, i);
    t->direct[x].packets += eng_col_u64(v, ENG_COL_PACKETS, i);
    t->direct[x].bytes += eng_col_u64(v, ENG_COL_BYTES, i);
    if (!(v->mask & ENG_COLMASK(ENG_COL_FIRST)))
        return 0;
    if (!t->dtimes) {
        if (!(t->dtimes = malloc(t->ndirect * sizeof *t->dtimes)))
            return NS_E_NOMEM;
        for (size_t y = 0; y < t->ndirect; y++) {
            t->dtimes[y][0] = NO_FIRST;
            t->dtimes[y][1] = NO_LAST;
        }
    }
    int64_t first = first_of(v, i), last = last_of(v, i);
    if (first < t->dtimes[x][0])
        t->dtimes[x][0] = first;
    if (last > t->dtimes[x][1])
        t->dtimes[x][1] = last;
    return 0;
}

/* tab_add_direct for rows[0..n) (NULL: 0..n). The common case, a port or a protocol of rows
 * without times, each one flow (a raw segment), is one tight loop a key width: three adds a
 * row into its value's counters (a call and a switch a row were a quarter of a top port). */
static int tab_add_direct_rows(group_tab *t, const eng_colview *v, const uint32_t *rows, size_t n)
{
    int rc;
    qry_by by = t->g->k[0].by;
    eng_col kc = by == QRY_BY_SRCPORT   ? ENG_COL_SRC_PORT
                 : by == QRY_BY_DSTPORT ? ENG_COL_DST_PORT
                 : by == QRY_BY_VLAN    ? ENG_COL_VLAN
                 : by == QRY_BY_PROTO   ? ENG_COL_PROTO
                 : by == QRY_BY_TOS     ? ENG_COL_TOS
                                        : ENG_NCOLS;
    uint32_t plain = ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_FLOWS);
    const uint8_t *ppk = v->planes[ENG_COL_PACKETS], *pby = v->planes[ENG_COL_BYTES];
    if ((ppk || pby) &&
        (kc == ENG_NCOLS || (v->mask & plain) || !ppk || !pby || n > v->nrows / 2)) {
        /* counters left as planes (a scan with eng_scan_opts.planes) that the loops below do
         * not read as such, or of most rows (their byte loads cost more than transposing every
         * row 16 at a time: a top port without a filter took a sixth longer): decoded first */
        eng_colview u;
        if ((rc = eng_colview_unplane(v, &u, &t->pbuf, &t->pcap)) < 0)
            return rc;
        return tab_add_direct_rows(t, &u, rows, n);
    }
    if (kc == ENG_NCOLS || (v->mask & plain)) {
        for (size_t k = 0; k < n; k++)
            if ((rc = tab_add_direct(t, v, row_at(rows, k))) < 0)
                return rc;
        return 0;
    }
    if (!t->direct && !(t->direct = calloc(t->ndirect, sizeof *t->direct)))
        return NS_E_NOMEM;
    const uint8_t *pk = v->col[ENG_COL_PACKETS], *by8 = v->col[ENG_COL_BYTES];
    const uint8_t *key = v->col[kc];
    size_t mask = t->ndirect - 1;
#define DIRECT_ROWS(KEY, PACKETS, BYTES)                                                           \
    for (size_t k = 0; k < n; k++) {                                                               \
        size_t i = row_at(rows, k), x = (size_t)(KEY)&mask;                                        \
        t->direct[x].flows++;                                                                      \
        t->direct[x].packets += (PACKETS);                                                         \
        t->direct[x].bytes += (BYTES);                                                             \
    }
#define KEY1 key[i]
#define KEY2 ((uint32_t)key[2 * i] | (uint32_t)key[2 * i + 1] << 8)
    /* planes: the low four of the eight (the others are zero) */
    size_t ps = v->nrows;
#define PLANES4(P)                                                                                 \
    ((uint64_t)(P)[i] | (uint64_t)(P)[i + ps] << 8 | (uint64_t)(P)[i + 2 * ps] << 16 |             \
     (uint64_t)(P)[i + 3 * ps] << 24)
    if (ppk && eng_col_width(kc) == 1) {
        DIRECT_ROWS(KEY1, PLANES4(ppk), PLANES4(pby))
    } else if (ppk) {
        DIRECT_ROWS(KEY2, PLANES4(ppk), PLANES4(pby))
    } else if (eng_col_width(kc) == 1) {
        DIRECT_ROWS(KEY1, ns_get_le64(pk + i * 8), ns_get_le64(by8 + i * 8))
    } else {
        DIRECT_ROWS(KEY2, ns_get_le64(pk + i * 8), ns_get_le64(by8 + i * 8))
    }
#undef PLANES4
#undef KEY1
#undef KEY2
#undef DIRECT_ROWS
    return 0;
}

/* Adds src's value-indexed totals into t's (same grouping), so the workers' arrays become one
 * table, not a table each merged after. */
static int direct_merge(group_tab *t, const group_tab *src)
{
    if (!src->direct)
        return 0;
    if (!t->direct && !(t->direct = calloc(t->ndirect, sizeof *t->direct)))
        return NS_E_NOMEM;
    if (src->dtimes && !t->dtimes) {
        if (!(t->dtimes = malloc(t->ndirect * sizeof *t->dtimes)))
            return NS_E_NOMEM;
        for (size_t y = 0; y < t->ndirect; y++) {
            t->dtimes[y][0] = NO_FIRST;
            t->dtimes[y][1] = NO_LAST;
        }
    }
    for (size_t x = 0; x < t->ndirect; x++) {
        t->direct[x].flows += src->direct[x].flows;
        t->direct[x].packets += src->direct[x].packets;
        t->direct[x].bytes += src->direct[x].bytes;
        if (src->dtimes) {
            if (src->dtimes[x][0] < t->dtimes[x][0])
                t->dtimes[x][0] = src->dtimes[x][0];
            if (src->dtimes[x][1] > t->dtimes[x][1])
                t->dtimes[x][1] = src->dtimes[x][1];
        }
    }
    return 0;
}

/* Counts the rows rows[0..n) (NULL: 0..n) of v. Keys are packed and hashed a batch at a time
 * and their slots prefetched, so a big table's cache misses overlap instead of coming one
 * after another (most of a many-group query's time otherwise). */
#define TAB_BATCH 16
typedef struct tab_run {
    uint8_t key[QRY_MAX_KEYS * 32];
    uint64_t h;
    qry_totals tot;
} tab_run;

/* Counts runs[0..n) into their groups. */
static int runs_flush(group_tab *t, const tab_run *runs, size_t n)
{
    int rc = 0;
    for (size_t j = 0; j < n; j++) {
        size_t s = tab_slot(t, runs[j].key, runs[j].h, true, &rc);
        if (s == SIZE_MAX)
            return rc;
        totals_merge(&TENT(t, s)->tot, &runs[j].tot);
    }
    return 0;
}

/* tab_add_rows without direction totals: rows of one key in a row (a sealed segment is
 * ordered by source address) are summed first and looked up once; the runs' slots are
 * prefetched a batch at a time. */
static int tab_add_runs(group_tab *t, const eng_colview *v, const uint32_t *rows, size_t n)
{
    tab_run runs[TAB_BATCH];
    uint8_t next[QRY_MAX_KEYS * 32];
    size_t nr = 0, k = 0;
    int rc;
    /* one whole address is the key: compared where it lies in its column, not packed */
    eng_col col = ENG_NCOLS;
    if (t->g->n == 1)
        col = t->g->k[0].by == QRY_BY_SRCADDR    ? ENG_COL_SRC
              : t->g->k[0].by == QRY_BY_DSTADDR  ? ENG_COL_DST
              : t->g->k[0].by == QRY_BY_EXPORTER ? ENG_COL_EXPORTER
                                                 : ENG_NCOLS;
    if (n)
        pack_key(t, v, row_at(rows, 0), next);
    while (k < n) {
        tab_run *r = &runs[nr];
        memcpy(r->key, next, t->klen);
        memset(&r->tot, 0, sizeof r->tot);
        totals_add(&r->tot, v, row_at(rows, k++));
        while (k < n) {
            size_t i = row_at(rows, k);
            if (col != ENG_NCOLS) {
                if (memcmp(eng_col_addr(v, col, i), r->key, 16) != 0) {
                    memcpy(next, eng_col_addr(v, col, i), 16);
                    break;
                }
            } else {
                pack_key(t, v, i, next);
                if (!key_eq(next, r->key, t->klen))
                    break;
            }
            totals_add(&r->tot, v, row_at(rows, k++));
        }
        r->h = key_hash(r->key, t->klen);
        size_t slot = (size_t)r->h & (t->cap - 1);
        __builtin_prefetch(TENT(t, slot));
        __builtin_prefetch(TKEY(t, slot));
        if (++nr == TAB_BATCH) {
            if ((rc = runs_flush(t, runs, nr)) < 0)
                return rc;
            nr = 0;
        }
    }
    return runs_flush(t, runs, nr);
}

/* The address column a one-key grouping reads whole (srcaddr, dstaddr), else ENG_NCOLS. */
static eng_col dict_key_col(const qry_group *g)
{
    if (g->n != 1)
        return ENG_NCOLS;
    return g->k[0].by == QRY_BY_SRCADDR   ? ENG_COL_SRC
           : g->k[0].by == QRY_BY_DSTADDR ? ENG_COL_DST
                                          : ENG_NCOLS;
}

/* tab_add_rows for a one-address key whose column is a dictionary d: each row adds into its
 * code's totals (a small array, in cache), then each value that got rows is looked up once,
 * a batch of slots prefetched at a time. The column's 16-byte values are never expanded. */
static int tab_add_dict(group_tab *t, const eng_colview *v, const eng_coldict *d,
                        const uint32_t *rows, size_t n)
{
    int rc = 0;
    if (n * 8 < d->n) {
        /* few rows of many values (a device's rows the index picked): a lookup a row costs
         * less than preparing and reading an array the size of the dictionary */
        for (size_t k = 0; k < n; k++) {
            size_t i = row_at(rows, k);
            const uint8_t *key = d->vals + (size_t)d->codes[i] * 16;
            size_t s = tab_slot(t, key, key_hash(key, 16), true, &rc);
            if (s == SIZE_MAX)
                return rc;
            totals_add(&TENT(t, s)->tot, v, i);
        }
        return 0;
    }
    if (d->n > t->dcap) {
        qry_totals *a = realloc(t->dacc, d->n * sizeof *a);
        if (!a)
            return NS_E_NOMEM;
        t->dacc = a;
        t->dcap = d->n;
    }
    qry_totals *acc = t->dacc;
    bool times = v->mask & ENG_COLMASK(ENG_COL_FIRST);
    bool one = !(v->mask & ENG_COLMASK(ENG_COL_FLOWS));
    /* the common case (a raw segment, no times, every row): three plain sums a row, into
     * three words a value (in the same buffer): three fifths of the memory to clear and read */
    bool three = one && !times && !rows;
    uint64_t *a3 = (uint64_t *)(void *)acc;
    if (three) {
        memset(a3, 0, d->n * 3 * sizeof *a3);
        const uint32_t *codes = d->codes;
        for (size_t i = 0; i < n; i++) {
            uint64_t *a = a3 + 3 * (size_t)codes[i];
            a[0]++;
            a[1] += eng_col_u64(v, ENG_COL_PACKETS, i);
            a[2] += eng_col_u64(v, ENG_COL_BYTES, i);
        }
    } else {
        for (size_t c = 0; c < d->n; c++)
            acc[c] = (qry_totals){0, 0, 0, NO_FIRST, NO_LAST};
        for (size_t k = 0; k < n; k++) {
            size_t i = row_at(rows, k);
            qry_totals *a = &acc[d->codes[i]];
            a->flows += flows_of(v, i);
            a->packets += eng_col_u64(v, ENG_COL_PACKETS, i);
            a->bytes += eng_col_u64(v, ENG_COL_BYTES, i);
            if (times) {
                int64_t f = first_of(v, i), l = last_of(v, i);
                a->first_ms = f < a->first_ms ? f : a->first_ms;
                a->last_ms = l > a->last_ms ? l : a->last_ms;
            }
        }
    }
    /* room for this segment's values at once when the table has far fewer: a table filled
     * from empty would otherwise double (and rehash) a dozen times on its first segment;
     * later segments bring mostly values it has */
    if (t->n < d->n / 2) {
        size_t used = 0;
        for (size_t c = 0; c < d->n; c++)
            used += (three ? a3[3 * c] : acc[c].flows) != 0;
        if (used > t->n && (rc = tab_reserve(t, used - t->n)) < 0)
            return rc;
    }
    uint64_t hs[TAB_BATCH];
    size_t cs[TAB_BATCH], nb = 0;
    for (size_t c = 0; c <= d->n; c++) {
        if (c < d->n && (three ? a3[3 * c] : acc[c].flows) == 0)
            continue;
        if (c < d->n) {
            hs[nb] = key_hash(d->vals + c * 16, 16);
            cs[nb] = c;
            if (t->cap) {
                size_t slot = (size_t)hs[nb] & (t->cap - 1);
                __builtin_prefetch(TENT(t, slot));
                __builtin_prefetch(TKEY(t, slot));
            }
            if (++nb < TAB_BATCH)
                continue;
        }
        for (size_t j = 0; j < nb; j++) {
            size_t s = tab_slot(t, d->vals + cs[j] * 16, hs[j], true, &rc);
            if (s == SIZE_MAX)
                return rc;
            const uint64_t *x = a3 + 3 * cs[j];
            qry_totals sum = three ? (qry_totals){x[0], x[1], x[2], NO_FIRST, NO_LAST} : acc[cs[j]];
            totals_merge(&TENT(t, s)->tot, &sum);
        }
        nb = 0;
    }
    return 0;
}

static int tab_add_rows(group_tab *t, const eng_colview *v, const uint32_t *rows, size_t n)
{
    uint8_t keys[TAB_BATCH][QRY_MAX_KEYS * 32];
    uint64_t hs[TAB_BATCH];
    int rc;
    if (t->ndirect)
        return tab_add_direct_rows(t, v, rows, n);
    eng_col dc = dict_key_col(t->g);
    if (dc != ENG_NCOLS && v->dict[dc])
        return tab_add_dict(t, v, v->dict[dc], rows, n);
    if (!t->dir)
        return tab_add_runs(t, v, rows, n);
    /* conversations: each row's direction counts too, so rows go one by one */
    for (size_t k0 = 0; k0 < n; k0 += TAB_BATCH) {
        size_t cnt = n - k0 < TAB_BATCH ? n - k0 : TAB_BATCH;
        for (size_t j = 0; j < cnt; j++) {
            pack_key(t, v, row_at(rows, k0 + j), keys[j]);
            hs[j] = key_hash(keys[j], t->klen);
            size_t slot = (size_t)hs[j] & (t->cap - 1);
            __builtin_prefetch(TENT(t, slot));
            __builtin_prefetch(TKEY(t, slot));
        }
        for (size_t j = 0; j < cnt; j++)
            if ((rc = tab_add_key(t, v, row_at(rows, k0 + j), keys[j], hs[j])) < 0)
                return rc;
    }
    return 0;
}

/* Moves the direct totals into the table (after a scan, before anything reads the table). */
static uint64_t metric_of(const qry_totals *t, qry_metric m);

/* Value x ranks before value y (ranks_before on the values' totals: the metric, then the key,
 * whose big-endian bytes order as the values). */
static bool direct_before(const group_tab *t, size_t x, size_t y)
{
    qry_totals a = {t->direct[x].flows, t->direct[x].packets, t->direct[x].bytes, 0, 0};
    qry_totals b = {t->direct[y].flows, t->direct[y].packets, t->direct[y].bytes, 0, 0};
    uint64_t mx = metric_of(&a, t->metric), my = metric_of(&b, t->metric);
    return mx != my ? mx > my : x < y;
}

/* Marks in keep[] the t->limit values that rank first (a heap whose root ranks last). */
static int direct_best(const group_tab *t, uint8_t *keep)
{
    if (t->limit == 0)
        return 0;
    size_t *h = malloc(t->limit * sizeof *h), n = 0;
    if (!h)
        return NS_E_NOMEM;
    for (size_t x = 0; x < t->ndirect; x++) {
        if (t->direct[x].flows == 0)
            continue;
        if (n == t->limit && !direct_before(t, x, h[0]))
            continue;
        size_t i;
        if (n < t->limit) { /* sift up */
            i = n++;
            while (i > 0 && direct_before(t, h[(i - 1) / 2], x)) {
                h[i] = h[(i - 1) / 2];
                i = (i - 1) / 2;
            }
            h[i] = x;
            continue;
        }
        for (i = 0;;) { /* replace the root, sift down */
            size_t l = 2 * i + 1, r = l + 1, w = l;
            if (l >= n)
                break;
            if (r < n && direct_before(t, h[l], h[r]))
                w = r;
            if (!direct_before(t, x, h[w]))
                break;
            h[i] = h[w];
            i = w;
        }
        h[i] = x;
    }
    for (size_t i = 0; i < n; i++)
        keep[h[i]] = 1;
    free(h);
    return 0;
}

static int tab_flush(group_tab *t)
{
    int rc = 0;
    size_t used = 0;
    uint8_t *keep = NULL;
    for (size_t x = 0; t->direct && x < t->ndirect; x++)
        used += t->direct[x].flows != 0;
    if (t->top_only && t->direct && t->limit < used) {
        /* only the best values go into the table: the others would make "other", which is
         * the total less the rows; a table of 50,000 ports cost more than the rest of it */
        if (!(keep = calloc(t->ndirect, 1)) || (rc = direct_best(t, keep)) < 0) {
            free(keep);
            return rc < 0 ? rc : NS_E_NOMEM;
        }
        t->have_total = true;
        t->ngroups = used;
        for (size_t x = 0; x < t->ndirect; x++) {
            qry_totals d = {t->direct[x].flows, t->direct[x].packets, t->direct[x].bytes,
                            t->dtimes ? t->dtimes[x][0] : NO_FIRST,
                            t->dtimes ? t->dtimes[x][1] : NO_LAST};
            totals_merge(&t->total, &d);
        }
        used = t->limit;
    }
    if (used && (rc = tab_reserve(t, used)) < 0) { /* one grow, not a doubling at a time */
        free(keep);
        return rc;
    }
    for (size_t x = 0; t->direct && x < t->ndirect; x++) {
        if (t->direct[x].flows == 0 || (keep && !keep[x]))
            continue;
        uint8_t k[4];
        ns_put_be32(k, (uint32_t)x);
        size_t s = tab_slot(t, k, key_hash(k, 4), true, &rc);
        if (s == SIZE_MAX) {
            free(keep);
            return rc;
        }
        qry_totals d = {t->direct[x].flows, t->direct[x].packets, t->direct[x].bytes,
                        t->dtimes ? t->dtimes[x][0] : NO_FIRST,
                        t->dtimes ? t->dtimes[x][1] : NO_LAST};
        totals_merge(&TENT(t, s)->tot, &d);
    }
    free(keep);
    free(t->direct);
    free(t->dtimes);
    t->direct = NULL;
    t->dtimes = NULL;
    return 0;
}

/* About how many of src's groups t lacks, from a sample of them: workers mostly see the same
 * groups (sources, ports), so making room for all of src's would double t for nothing (and
 * every later pass over it would read twice the memory); groups of pairs are mostly apart. */
#define TAB_SAMPLE 1024
static size_t tab_new_groups(group_tab *t, const group_tab *src)
{
    size_t seen = 0, miss = 0;
    int rc = 0;
    if (!t->cap)
        return src->n;
    for (size_t j = 0; j < src->cap && seen < TAB_SAMPLE; j++) {
        if (!TENT(src, j)->hash)
            continue;
        seen++;
        miss += tab_slot(t, TKEY(src, j), TENT(src, j)->hash, false, &rc) == SIZE_MAX;
    }
    if (!seen)
        return 0;
    /* a little over the sample's share: one grow too many costs less than one too few */
    size_t est = (size_t)((double)src->n * (double)miss / (double)seen * 1.1) + 1;
    return est < src->n ? est : src->n;
}

/* Adds every group of src into t (same grouping); src is left as it was. */
static int tab_merge(group_tab *t, const group_tab *src)
{
    int rc = 0;
    for (size_t j = 0; j < src->cap; j++) {
        if (!TENT(src, j)->hash)
            continue;
        size_t s = tab_slot(t, TKEY(src, j), TENT(src, j)->hash, true, &rc);
        if (s == SIZE_MAX)
            return rc;
        totals_merge(&TENT(t, s)->tot, &TENT(src, j)->tot);
        if (t->dir) {
            totals_merge(&t->dir[2 * s], &src->dir[2 * j]);
            totals_merge(&t->dir[2 * s + 1], &src->dir[2 * j + 1]);
        }
    }
    return 0;
}

/* A segment wholly inside the range, offered before its rows: when they come without times
 * (QRY_TOP_NO_GROUP_TIMES, no filter: every row counts), its footer range stands for theirs. */
static void span_take(const qry_filter *f, uint64_t flows, int64_t first_ms, int64_t last_ms,
                      int64_t *span_first, int64_t *span_last)
{
    if (f || flows == 0)
        return; /* with a filter the rows carry their times, and only some count */
    if (first_ms < *span_first)
        *span_first = first_ms;
    if (last_ms > *span_last)
        *span_last = last_ms;
}

static int group_span_cb(void *arg, uint64_t flows, uint64_t packets, uint64_t bytes,
                         int64_t first_ms, int64_t last_ms)
{
    group_tab *t = arg;
    (void)packets;
    (void)bytes;
    span_take(t->filter, flows, first_ms, last_ms, &t->span_first, &t->span_last);
    return 0; /* read the rows */
}

static int group_cols(void *arg, const eng_colview *v)
{
    group_tab *t = arg;
    const uint32_t *rows;
    size_t n;
    int rc;
    if (past_deadline(t->deadline))
        return -ETIMEDOUT;
    if ((rc = view_select(t->filter, v, &t->sel, &rows, &n)) < 0)
        return rc;
    if (t->span_rows && (v->mask & ENG_COLMASK(ENG_COL_FIRST))) {
        for (size_t k = 0; k < n; k++) {
            int64_t f = first_of(v, row_at(rows, k)), l = last_of(v, row_at(rows, k));
            t->span_first = f < t->span_first ? f : t->span_first;
            t->span_last = l > t->span_last ? l : t->span_last;
        }
        /* the groups take no times (span_rows: no_group_times), so the counters keep the
         * fast loops of a view without them */
        eng_colview u = *v;
        u.mask &= ~(ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST));
        return tab_add_rows(t, &u, rows, n);
    }
    return tab_add_rows(t, v, rows, n);
}

/* The time range of a filtered top-N's total without reading every segment's time columns
 * (two varint columns: a third of such a query's time). The groups are counted without times
 * where a segment lies wholly inside the range; afterwards the smallest first_ms of the rows
 * that pass is looked for in the segments whose footer's first_ms is below the smallest found
 * so far, oldest first (usually the first one or two), and the largest last_ms likewise, newest
 * first. A segment skipped cannot hold a row past the range found, so the answer is exact. */
typedef struct span_pass {
    const qry_filter *filter;
    qry_sel *sel;
    bool newest;         /* this pass looks for the largest last_ms, else the smallest first_ms */
    int64_t first, last; /* of the rows that pass, seen so far */
    int64_t deadline;
    /* a sealed segment was just wanted: rows that come otherwise are the open minutes', whose
     * times the groups' scan had already (skipping them saves work, nothing else) */
    bool wanted;
} span_pass;

static int span_want(void *arg, int64_t first_ms, int64_t last_ms)
{
    span_pass *p = arg;
    p->wanted = p->newest ? last_ms > p->last : first_ms < p->first;
    return p->wanted;
}

static int span_cols(void *arg, const eng_colview *v)
{
    span_pass *p = arg;
    const uint32_t *rows;
    size_t n;
    int rc;
    if (past_deadline(p->deadline))
        return -ETIMEDOUT;
    if (!p->wanted)
        return 0;
    p->wanted = false;
    if ((rc = view_select(p->filter, v, &p->sel, &rows, &n)) < 0)
        return rc;
    for (size_t k = 0; k < n; k++) {
        int64_t f = first_of(v, row_at(rows, k)), l = last_of(v, row_at(rows, k));
        p->first = f < p->first ? f : p->first;
        p->last = l > p->last ? l : p->last;
    }
    return 0;
}

/* The two passes of span_of_filter, run at once (each on one worker: every segment read can
 * narrow what the next one is needed for); any thread runs the pass not taken yet. */
typedef struct span_job {
    atomic_int next;
    eng_db *db;
    int64_t from_ms, to_ms;
    uint32_t mask;
    const eng_scan_opts *so;
    span_pass p[2]; /* the oldest first_ms, the newest last_ms */
    int rc[2];
} span_job;

static void *span_run(void *arg)
{
    span_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < 2;) {
        void *args[1] = {&j->p[i]};
        eng_scan_opts o = *j->so;
        o.cols = span_cols;
        o.want = span_want;
        o.newest_first = i == 1;
        o.dict_only = filter_dict_only(j->p[i].filter);
        j->rc[i] = eng_db_scan_par(j->db, j->from_ms, j->to_ms, j->mask, &o, 1, NULL, NULL, args);
    }
    return NULL;
}

/* Widens [*first, *last] (the range of the rows with times seen already, or NO_FIRST/NO_LAST)
 * to that of every row f passes in the range; so: the scan's options (addresses, dictionaries). */
static int span_of_filter(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *f,
                          const eng_scan_opts *so, int64_t *first, int64_t *last)
{
    span_job j = {.db = db, .from_ms = from_ms, .to_ms = to_ms, .so = so};
    j.mask = qry_filter_columns(f) | ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
    atomic_init(&j.next, 0);
    for (int i = 0; i < 2; i++)
        j.p[i] = (span_pass){f, NULL, i == 1, *first, *last, qry_deadline_ms, false};
    void *const args[2] = {&j, &j};
    eng_db_par_run(db, 2, span_run, args);
    for (int i = 0; i < 2; i++) {
        sel_free(j.p[i].sel);
        *first = j.p[i].first < *first ? j.p[i].first : *first;
        *last = j.p[i].last > *last ? j.p[i].last : *last;
    }
    return j.rc[0] < 0 ? j.rc[0] : j.rc[1];
}

static uint64_t metric_of(const qry_totals *t, qry_metric m)
{
    switch (m) {
    case QRY_M_PACKETS:
    case QRY_M_PPS:
        return t->packets;
    case QRY_M_FLOWS:
        return t->flows;
    default:
        return t->bytes;
    }
}

/* Slot a ranks before slot b: larger metric first, then smaller key bytes. */
static bool ranks_before(const group_tab *t, qry_metric m, size_t a, size_t b)
{
    uint64_t x = metric_of(&TENT(t, a)->tot, m), y = metric_of(&TENT(t, b)->tot, m);
    if (x != y)
        return x > y;
    return memcmp(TKEY(t, a), TKEY(t, b), t->klen) < 0;
}

/* Heap of slot indexes whose root is the one ranking last. */
static void rank_down(const group_tab *t, qry_metric m, size_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(t, m, h[w], h[l]))
            w = l;
        if (r < n && ranks_before(t, m, h[w], h[r]))
            w = r;
        if (w == i)
            return;
        size_t tmp = h[i];
        h[i] = h[w];
        h[w] = tmp;
        i = w;
    }
}

/* The `limit` best slots of t, best first, into *out (malloc'd, *k entries); with total, every
 * group is added to it in the same pass. */
static int tab_top(const group_tab *t, qry_metric m, size_t limit, size_t **out, size_t *k,
                   qry_totals *total)
{
    size_t cap = limit < t->n ? limit : t->n, n = 0;
    size_t *h = malloc((cap ? cap : 1) * sizeof *h);
    if (!h)
        return NS_E_NOMEM;
    for (size_t i = 0; i < t->cap && (cap || total); i++) {
        if (!TENT(t, i)->hash)
            continue;
        if (total)
            totals_merge(total, &TENT(t, i)->tot);
        if (!cap)
            continue;
        if (n < cap) {
            h[n++] = i;
            if (n == cap) /* heapify once full */
                for (size_t j = n / 2; j-- > 0;)
                    rank_down(t, m, h, n, j);
        } else if (ranks_before(t, m, i, h[0])) {
            h[0] = i;
            rank_down(t, m, h, n, 0);
        }
    }
    /* pop the worst to the back until sorted best first */
    for (size_t end = n; end > 1; end--) {
        size_t tmp = h[0];
        h[0] = h[end - 1];
        h[end - 1] = tmp;
        rank_down(t, m, h, end - 1, 0);
    }
    *out = h;
    *k = n;
    return 0;
}

/* Fills t (initialised, empty) from a scan on every worker: each worker groups into its own
 * table, merged into t at the end. */
static int group_scan(eng_db *db, int64_t from_ms, int64_t to_ms, uint32_t mask,
                      const eng_scan_opts *so, group_tab *t)
{
    group_tab w[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS] = {t};
    unsigned nw = eng_scan_workers(), ready = 1;
    int rc = 0;
    for (; ready < nw; ready++) {
        if ((rc = tab_init(&w[ready], t->db, t->g, t->filter)) < 0 ||
            (rc = tab_grow(&w[ready])) < 0)
            break;
        w[ready].span_rows = t->span_rows;
        args[ready] = &w[ready];
    }
    eng_scan_opts o = *so;
    o.cols = group_cols;
    if (rc == 0)
        rc = eng_db_scan_par(db, from_ms, to_ms, mask, &o, nw, NULL, group_span_cb, args);
    for (unsigned i = 1; rc == 0 && t->ndirect && i < ready; i++) {
        rc = direct_merge(t, &w[i]);
        free(w[i].direct); /* merged: nothing left for its own table */
        free(w[i].dtimes);
        w[i].direct = NULL;
        w[i].dtimes = NULL;
    }
    if (rc == 0)
        rc = tab_flush(t);
    for (unsigned i = 1; i < ready; i++) {
        if (w[i].span_first < t->span_first)
            t->span_first = w[i].span_first;
        if (w[i].span_last > t->span_last)
            t->span_last = w[i].span_last;
        if (rc == 0 && (rc = tab_flush(&w[i])) == 0 &&
            (rc = tab_reserve(t, tab_new_groups(t, &w[i]))) == 0)
            rc = tab_merge(t, &w[i]); /* one grow for all it brings, not a doubling at a time */
        tab_free(&w[i]);
    }
    return rc;
}

/* Totals whose times were not read (or not all: no_group_times) say 0 for them. */
static void times_known(qry_totals *t, bool none)
{
    if (none || t->first_ms == NO_FIRST || t->last_ms == NO_LAST)
        t->first_ms = t->last_ms = 0;
}

/* The answer of a filled table: its `limit` largest groups, the rest as other, the total.
 * Consumes t's hash marks (the table is only fit for tab_free afterwards). */
static int tab_result(group_tab *t, qry_metric metric, size_t limit, int64_t from_ms, int64_t to_ms,
                      qry_top_result *out)
{
    size_t *best = NULL, k = 0;
    memset(out, 0, sizeof *out);
    /* without group times, "other" is the total less the rows (its times are not given): one
     * pass over the table instead of three */
    bool one_pass = t->no_group_times || t->have_total;
    int rc = tab_top(t, metric, limit, &best, &k, t->have_total ? NULL : &out->total);
    if (rc < 0)
        return rc;
    if (t->have_total)
        out->total = t->total;
    out->rows = calloc(k ? k : 1, sizeof *out->rows);
    if (!out->rows) {
        free(best);
        return NS_E_NOMEM;
    }
    if (one_pass) {
        out->other = out->total;
        for (size_t i = 0; i < k; i++) {
            const qry_totals *g = &TENT(t, best[i])->tot;
            out->other.flows -= g->flows;
            out->other.packets -= g->packets;
            out->other.bytes -= g->bytes;
        }
    }
    for (size_t i = 0; i < k; i++) {
        qry_row *row = &out->rows[i];
        unpack_key(t->g, TKEY(t, best[i]), &row->key);
        row->t = TENT(t, best[i])->tot;
        if (t->dir) {
            row->ab = t->dir[2 * best[i]];
            row->ba = t->dir[2 * best[i] + 1];
        }
        TENT(t, best[i])->hash = 0; /* what is left makes "other" */
    }
    for (size_t i = 0; i < t->cap && !one_pass; i++)
        if (TENT(t, i)->hash)
            totals_merge(&out->other, &TENT(t, i)->tot);
    if (out->other.flows == 0)
        memset(&out->other, 0, sizeof out->other);
    /* rows read without times: the footers' range for the total, none for the groups */
    if (out->total.flows && t->span_first != NO_FIRST) {
        if (t->span_first < out->total.first_ms)
            out->total.first_ms = t->span_first;
        if (t->span_last > out->total.last_ms)
            out->total.last_ms = t->span_last;
    }
    for (size_t i = 0; i < k; i++) {
        times_known(&out->rows[i].t, t->no_group_times);
        times_known(&out->rows[i].ab, t->no_group_times);
        times_known(&out->rows[i].ba, t->no_group_times);
    }
    times_known(&out->other, t->no_group_times);
    times_known(&out->total, false);
    out->n = k;
    out->groups = t->have_total ? t->ngroups : t->n;
    out->span_ms = qry_span_ms(from_ms, to_ms, &out->total);
    free(best);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Many groups: address pairs and conversations, top-N without group times. Millions of groups
 * make a hash table of all of them miss the cache on nearly every row. Instead each worker
 * interns the addresses it meets (a small table: ids instead of 16-byte keys), appends one
 * 32-byte record a row into one of PART_N partitions by the key's hash, and after the scan
 * the partitions are aggregated one at a time, each in a table that fits a core's cache.
 * Global ids are given in address order, so comparing ids compares addresses: the answer
 * (ranking ties by key, a conversation's direction) is the group table's, exactly. */

#define PART_BITS  10
#define PART_N     (1u << PART_BITS)
#define PART_BATCH 16 /* rows a batch, their slots prefetched */

/* 16 bytes a row: the key's first and second address as worker-local ids (a conversation:
 * source, destination), packets and bytes. A row of more than one flow, or with counters past
 * 32 bits, takes two: the first with PART_WIDE in a and the flows, the second its counters. */
typedef struct part_rec {
    uint32_t a, b;
    union {
        struct {
            uint32_t packets, bytes;
        } n;
        uint64_t flows;
    } u;
} part_rec;
#define PART_WIDE (1u << 31) /* ids stay below 2^31 */

/* A slot holds its address, so a lookup touches one cache line. */
typedef struct intern_slot {
    uint64_t hash; /* 0: empty */
    uint32_t id, pad;
    uint8_t addr[16];
} intern_slot;

typedef struct addr_intern {
    intern_slot *slot;           /* cap slots */
    size_t cap, nslots, n, acap; /* slots, those used; ids given, room for them */
    uint8_t *addr;               /* n addresses of 16 bytes, by id */
    uint64_t *hash;              /* their hashes, by id */
} addr_intern;

static void intern_free(addr_intern *in)
{
    free(in->slot);
    free(in->addr);
    free(in->hash);
    memset(in, 0, sizeof *in);
}

static int intern_grow(addr_intern *in)
{
    size_t ncap = in->cap ? in->cap * 2 : 4096;
    intern_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return NS_E_NOMEM;
    for (size_t j = 0; j < in->cap; j++) {
        if (!in->slot[j].hash)
            continue;
        size_t k = (size_t)in->slot[j].hash & (ncap - 1);
        while (ns[k].hash)
            k = (k + 1) & (ncap - 1);
        ns[k] = in->slot[j];
    }
    free(in->slot);
    in->slot = ns;
    in->cap = ncap;
    return 0;
}

/* Address a (hash h) under a new id, without a slot in the table (part_cols's dictionaries
 * find theirs in sorted lists): 0 or NS_E_NOMEM / NS_E_TOO_MANY. The same address may get two
 * ids this way; global ids (part_global_ids) give both the same one. */
static int intern_append(addr_intern *in, const uint8_t *a, uint64_t h, uint32_t *id)
{
    if (in->n >= UINT32_MAX / 2)
        return NS_E_TOO_MANY;
    if (in->n == in->acap) {
        size_t nc = in->acap ? in->acap * 2 : 4096;
        uint8_t *na = realloc(in->addr, nc * 16);
        if (!na)
            return NS_E_NOMEM;
        in->addr = na;
        uint64_t *nh = realloc(in->hash, nc * sizeof *nh);
        if (!nh)
            return NS_E_NOMEM;
        in->hash = nh;
        in->acap = nc;
    }
    memcpy(in->addr + in->n * 16, a, 16);
    in->hash[in->n] = h;
    *id = (uint32_t)in->n++;
    return 0;
}

/* The id of address a (hash h), added when new: 0 or NS_E_NOMEM / NS_E_TOO_MANY. */
static int intern(addr_intern *in, const uint8_t *a, uint64_t h, uint32_t *id)
{
    int rc;
    if (in->nslots * 2 >= in->cap && (rc = intern_grow(in)) < 0)
        return rc;
    size_t k = (size_t)h & (in->cap - 1);
    while (in->slot[k].hash) {
        if (in->slot[k].hash == h && memcmp(in->slot[k].addr, a, 16) == 0) {
            *id = in->slot[k].id;
            return 0;
        }
        k = (k + 1) & (in->cap - 1);
    }
    if ((rc = intern_append(in, a, h, id)) < 0)
        return rc;
    in->slot[k].hash = h;
    in->slot[k].id = *id;
    memcpy(in->slot[k].addr, a, 16);
    in->nslots++;
    return 0;
}

/* A partition's records live in chunks carved from its worker's arena (large blocks with huge
 * pages where the kernel gives them): no copying as a partition grows, and a thousand
 * partitions written at once touch few pages' translations. */
#define PART_CHUNK (1024u)     /* records a chunk (16 KiB) */
#define PART_BLOCK (64u << 20) /* bytes an arena block */

typedef struct part_chunk {
    struct part_chunk *next;
    size_t n;
    part_rec r[PART_CHUNK];
} part_chunk;

/* A partition's chunks. Its write cursor is in the worker's wp/wend arrays, not here: the row
 * loop then touches two dense arrays and the record's slot, not a thousand chunk headers (a
 * cache miss a row). cur->n is set when a chunk is left or the scan is over (part_seal), and n
 * then. */
typedef struct part_buf {
    part_chunk *head, *cur; /* chunks in order; cur the one being filled */
    size_t n;               /* records in all (a wide row takes two) */
} part_buf;

/* Its blocks are the database's scratch blocks: a repeated query finds them in memory. */
typedef struct part_arena {
    eng_db *db;
    struct part_block {
        uint8_t *p;
        size_t size; /* as eng_db_mem_get gave it (PART_BLOCK or more) */
    } * blocks;
    size_t nblocks, used; /* bytes used of the last block */
} part_arena;

static void arena_free(part_arena *a)
{
    for (size_t i = 0; i < a->nblocks; i++)
        eng_db_mem_put(a->db, a->blocks[i].p, a->blocks[i].size);
    free(a->blocks);
    a->blocks = NULL;
    a->nblocks = a->used = 0;
}

static part_chunk *arena_chunk(part_arena *a)
{
    if (a->nblocks == 0 || a->used + sizeof(part_chunk) > PART_BLOCK) {
        struct part_block *nb = realloc(a->blocks, (a->nblocks + 1) * sizeof *nb);
        if (!nb)
            return NULL;
        a->blocks = nb;
        size_t got;
        void *p = eng_db_mem_get(a->db, PART_BLOCK, &got);
        if (!p)
            return NULL;
        a->blocks[a->nblocks++] = (struct part_block){p, got};
        a->used = 0;
    }
    part_chunk *c = (part_chunk *)(void *)(a->blocks[a->nblocks - 1].p + a->used);
    a->used += sizeof *c;
    c->next = NULL;
    c->n = 0;
    return c;
}

/* Addresses in ascending order (hi, lo: the big-endian halves as numbers) with their map
 * entries (see part_worker.map). */
typedef struct part_known_ent {
    uint64_t hi, lo, map;
} part_known_ent;
typedef struct part_known {
    part_known_ent *e;
    size_t n, cap;
} part_known;

static int known_reserve(part_known *k, size_t n)
{
    if (n <= k->cap)
        return 0;
    size_t cap = k->cap ? k->cap : 1024;
    while (cap < n)
        cap *= 2;
    part_known_ent *e = realloc(k->e, cap * sizeof *e);
    if (!e)
        return NS_E_NOMEM;
    k->e = e;
    k->cap = cap;
    return 0;
}

/* x's address as one 128-bit number: a compare is one step, no branch to mispredict */
static inline unsigned __int128 known_key(const part_known_ent *x)
{
    return (unsigned __int128)x->hi << 64 | x->lo;
}

static inline size_t known_below(const part_known_ent *x, unsigned __int128 key)
{
    return known_key(x) < key;
}

/* The first entry of k at or after j that is not below (hi, lo): a gallop, then a binary
 * search (a dictionary of destinations skips the sources' part of the list in a few steps).
 * Both are branch-free but for the gallop's end: a lookup mispredicted on nearly every step,
 * and the lookups were an eighth of a conversations query. */
static inline size_t known_seek(const part_known *k, size_t j, unsigned __int128 key)
{
    if (j >= k->n || !known_below(&k->e[j], key))
        return j;
    size_t step = 1;
    while (j + step < k->n && known_below(&k->e[j + step], key)) {
        j += step;
        step *= 2;
    }
    /* e[j] below; e[b] not, or the end: the answer is in (j, b] */
    size_t b = j + step < k->n ? j + step : k->n, base = j + 1, len = b - j;
    while (len > 1) {
        size_t half = len / 2;
        base += known_below(&k->e[base + half - 1], key) * half;
        len -= half;
    }
    return base;
}

size_t qry__known_seek(const uint64_t (*keys)[2], size_t n, size_t j, uint64_t hi, uint64_t lo)
{
    part_known k = {malloc((n ? n : 1) * sizeof *k.e), n, n};
    if (!k.e)
        return SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        k.e[i] = (part_known_ent){keys[i][0], keys[i][1], 0};
    size_t r = known_seek(&k, j, (unsigned __int128)hi << 64 | lo);
    free(k.e);
    return r;
}

/* into = into and add merged, in order (tmp: scratch, swapped with into). */
static int known_merge(part_known *into, const part_known *add, part_known *tmp)
{
    int rc = known_reserve(tmp, into->n + add->n);
    if (rc < 0)
        return rc;
    size_t i = 0, j = 0, k = 0;
    while (i < into->n && j < add->n)
        tmp->e[k++] = known_below(&add->e[j], known_key(&into->e[i])) ? add->e[j++] : into->e[i++];
    while (i < into->n)
        tmp->e[k++] = into->e[i++];
    while (j < add->n)
        tmp->e[k++] = add->e[j++];
    tmp->n = k;
    part_known t = *into;
    *into = *tmp;
    *tmp = t;
    return 0;
}

typedef struct part_worker {
    const qry_filter *filter;
    int64_t deadline;
    bool conv;
    eng_col col[2]; /* the key's two address columns, in key order (a conversation: src, dst) */
    addr_intern in;
    part_arena arena;
    part_buf part[PART_N];
    part_rec *wp[PART_N], *wend[PART_N]; /* each partition's next free record, its chunk's end */
    /* per view, for each column: a dictionary code's local id, and 32 bits of its address's
     * hash above it (the partition of a row, from arrays the size of the segment's
     * dictionary instead of the hashes of every address seen) */
    uint64_t *map[2];
    size_t mapcap[2];
    /* every dictionary value the maps have given an id (of both columns: an address seen as
     * source and destination keeps one id), ascending: most of the values of the next
     * segment's dictionary are found here by one merge (a hash table of them missed the cache
     * on every lookup: a third of a conversations query). New values go to small, which is
     * merged into big when it has grown. */
    part_known big, small, fresh, tmp;
    qry_sel *sel;
    int64_t tmin, tmax;            /* over rows read with times */
    int64_t span_first, span_last; /* footers of segments read without */
    uint32_t *l2g;                 /* after the scan: local id -> global id */
} part_worker;

static void part_worker_free(part_worker *w)
{
    intern_free(&w->in);
    arena_free(&w->arena);
    free(w->map[0]);
    free(w->map[1]);
    free(w->big.e);
    free(w->small.e);
    free(w->fresh.e);
    free(w->tmp.e);
    free(w->l2g);
    sel_free(w->sel);
}

static int part_span_cb(void *arg, uint64_t flows, uint64_t packets, uint64_t bytes,
                        int64_t first_ms, int64_t last_ms)
{
    part_worker *w = arg;
    (void)packets;
    (void)bytes;
    span_take(w->filter, flows, first_ms, last_ms, &w->span_first, &w->span_last);
    return 0;
}

/* Row i's address in column side s: its local id, and 32 bits of its hash above it (through
 * the view's dictionary map when the column has one). */
static inline int part_id(part_worker *w, const eng_colview *v, int s, size_t i, uint64_t *idh)
{
    eng_col c = w->col[s];
    if (v->dict[c]) {
        *idh = w->map[s][v->dict[c]->codes[i]];
        return 0;
    }
    const uint8_t *a = eng_col_addr(v, c, i);
    uint64_t h = key_hash(a, 16);
    uint32_t id;
    int rc = intern(&w->in, a, h, &id);
    *idh = (h >> 32) << 32 | id;
    return rc;
}

/* Ends every partition's current chunk (its count of records), after the scan. */
static void part_seal(part_worker *w)
{
    for (size_t p = 0; p < PART_N; p++) {
        part_buf *pb = &w->part[p];
        if (pb->cur)
            pb->cur->n = (size_t)(w->wp[p] - pb->cur->r);
        pb->n = 0;
        for (const part_chunk *c = pb->head; c; c = c->next)
            pb->n += c->n;
    }
}

/* Room for `need` more records in partition p: a new chunk when its own is full. */
static int part_room(part_worker *w, size_t p, size_t need)
{
    if ((size_t)(w->wend[p] - w->wp[p]) >= need)
        return 0;
    part_buf *pb = &w->part[p];
    part_chunk *c = arena_chunk(&w->arena);
    if (!c)
        return NS_E_NOMEM;
    if (pb->cur) {
        pb->cur->n = (size_t)(w->wp[p] - pb->cur->r);
        pb->cur->next = c;
    } else {
        pb->head = c;
    }
    pb->cur = c;
    w->wp[p] = c->r;
    w->wend[p] = c->r + PART_CHUNK;
    return 0;
}

/* w->map[s] for dictionary d: each value's entry from the known lists, or a new id (its
 * address appended to the worker's, its hash above it); new values join the lists. */
static int part_map_dict(part_worker *w, int s, const eng_coldict *d)
{
    part_known *bg = &w->big, *sm = &w->small, *fr = &w->fresh;
    int rc = known_reserve(fr, d->n);
    if (rc < 0)
        return rc;
    fr->n = 0;
    size_t jb = 0, js = 0;
    for (size_t c = 0; c < d->n; c++) {
        const uint8_t *val = d->vals + c * 16;
        uint64_t hi = ns_get_be64(val), lo = ns_get_be64(val + 8);
        unsigned __int128 key = (unsigned __int128)hi << 64 | lo;
        jb = known_seek(bg, jb, key);
        if (jb < bg->n && known_key(&bg->e[jb]) == key) {
            w->map[s][c] = bg->e[jb].map;
            continue;
        }
        js = known_seek(sm, js, key);
        if (js < sm->n && known_key(&sm->e[js]) == key) {
            w->map[s][c] = sm->e[js].map;
            continue;
        }
        uint64_t h = key_hash(val, 16);
        uint32_t id;
        if ((rc = intern_append(&w->in, val, h, &id)) < 0)
            return rc;
        w->map[s][c] = (h >> 32) << 32 | id;
        fr->e[fr->n++] = (part_known_ent){hi, lo, w->map[s][c]};
    }
    if (fr->n && (rc = known_merge(sm, fr, &w->tmp)) < 0)
        return rc;
    /* small stays a fraction of big: each merge walks small, a merge into big all of big */
    if (sm->n > bg->n / 8 + 1024) {
        if ((rc = known_merge(bg, sm, &w->tmp)) < 0)
            return rc;
        sm->n = 0;
    }
    return 0;
}

static int part_cols(void *arg, const eng_colview *v)
{
    part_worker *w = arg;
    const uint32_t *rows;
    size_t n;
    int rc;
    if (past_deadline(w->deadline))
        return -ETIMEDOUT;
    if ((rc = view_select(w->filter, v, &w->sel, &rows, &n)) < 0)
        return rc;
    for (int s = 0; s < 2; s++) {
        const eng_coldict *d = v->dict[w->col[s]];
        if (!d)
            continue;
        if (d->n > w->mapcap[s]) {
            uint64_t *m = realloc(w->map[s], d->n * sizeof *m);
            if (!m)
                return NS_E_NOMEM;
            w->map[s] = m;
            w->mapcap[s] = d->n;
        }
        if ((rc = part_map_dict(w, s, d)) < 0)
            return rc;
    }
    bool times = v->mask & ENG_COLMASK(ENG_COL_FIRST);
    for (size_t k0 = 0; k0 < n; k0 += PART_BATCH) {
        /* a batch of rows: their partitions found and the slots they go to prefetched, then
         * written (a thousand partitions' slots do not stay in a core's first cache) */
        size_t cnt = n - k0 < PART_BATCH ? n - k0 : PART_BATCH, x[PART_BATCH];
        uint32_t a[PART_BATCH], b[PART_BATCH];
        uint64_t fl[PART_BATCH], pk[PART_BATCH], by[PART_BATCH];
        for (size_t j = 0; j < cnt; j++) {
            size_t i = row_at(rows, k0 + j);
            uint64_t ia, ib;
            if ((rc = part_id(w, v, 0, i, &ia)) < 0 || (rc = part_id(w, v, 1, i, &ib)) < 0)
                return rc;
            a[j] = (uint32_t)ia;
            b[j] = (uint32_t)ib;
            /* symmetric in a and b, so a conversation's two directions share a partition */
            uint64_t ph = ((ia ^ ib) >> 32) * 0x9E3779B97F4A7C15ull;
            x[j] = (size_t)(ph >> (64 - PART_BITS));
            __builtin_prefetch(w->wp[x[j]], 1);
            fl[j] = flows_of(v, i);
            pk[j] = eng_col_u64(v, ENG_COL_PACKETS, i);
            by[j] = eng_col_u64(v, ENG_COL_BYTES, i);
            if (times) {
                int64_t f = first_of(v, i), l = last_of(v, i);
                w->tmin = f < w->tmin ? f : w->tmin;
                w->tmax = l > w->tmax ? l : w->tmax;
            }
        }
        for (size_t j = 0; j < cnt; j++) {
            size_t p = x[j];
            bool wide = fl[j] != 1 || pk[j] > UINT32_MAX || by[j] > UINT32_MAX;
            if ((rc = part_room(w, p, wide ? 2 : 1)) < 0)
                return rc;
            part_rec *r = w->wp[p];
            if (!wide) {
                r->a = a[j];
                r->b = b[j];
                r->u.n.packets = (uint32_t)pk[j];
                r->u.n.bytes = (uint32_t)by[j];
                w->wp[p]++;
            } else {
                r[0].a = a[j] | PART_WIDE;
                r[0].b = b[j];
                r[0].u.flows = fl[j];
                memcpy(&r[1], &pk[j], 8);
                memcpy((uint8_t *)&r[1] + 8, &by[j], 8);
                w->wp[p] += 2;
            }
        }
    }
    return 0;
}

/* A group of one partition: its key (global ids, first << 32 | second), totals and partition;
 * a conversation's by direction too, found for the best groups only (part_dirs). */
typedef struct part_grp {
    uint64_t key;
    uint64_t f, p, b;
    uint64_t ab[3]; /* a conversation's flows, packets, bytes from a to b (b to a: the rest) */
    size_t part;
} part_grp;

typedef struct part_best {
    part_grp *h; /* heap, root ranking last; grown as it fills, up to cap */
    size_t n, alloc, cap;
    bool nomem;
} part_best;

/* the one of flows, packets and bytes that metric m ranks by */
static inline uint64_t metric_pick(uint64_t f, uint64_t p, uint64_t b, qry_metric m)
{
    return m == QRY_M_PACKETS || m == QRY_M_PPS ? p : m == QRY_M_FLOWS ? f : b;
}

static uint64_t grp_metric(const part_grp *g, qry_metric m)
{
    return metric_pick(g->f, g->p, g->b, m);
}

/* x ranks before y: larger metric, then smaller key (ids in address order) */
static bool grp_before(const part_grp *x, const part_grp *y, qry_metric m)
{
    uint64_t a = grp_metric(x, m), b = grp_metric(y, m);
    return a != b ? a > b : x->key < y->key;
}

static void best_down(part_best *b, size_t i, qry_metric m)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < b->n && grp_before(&b->h[w], &b->h[l], m))
            w = l;
        if (r < b->n && grp_before(&b->h[w], &b->h[r], m))
            w = r;
        if (w == i)
            return;
        part_grp t = b->h[i];
        b->h[i] = b->h[w];
        b->h[w] = t;
        i = w;
    }
}

static void best_offer(part_best *b, const part_grp *g, qry_metric m)
{
    if (b->cap == 0)
        return;
    if (b->n == b->alloc && b->n < b->cap) {
        /* a limit of a million costs memory only when there are that many groups */
        size_t na = b->alloc ? b->alloc * 2 : 64;
        na = na < b->cap ? na : b->cap;
        part_grp *nh = realloc(b->h, na * sizeof *nh);
        if (!nh) {
            b->nomem = true;
            return;
        }
        b->h = nh;
        b->alloc = na;
    }
    if (b->n < b->cap) {
        b->h[b->n++] = *g;
        if (b->n == b->cap)
            for (size_t j = b->n / 2; j-- > 0;)
                best_down(b, j, m);
        return;
    }
    if (grp_before(g, &b->h[0], m)) {
        b->h[0] = *g;
        best_down(b, 0, m);
    }
}

/* The second phase, shared by its threads: partitions taken one at a time. */
typedef struct part_job {
    part_worker *w;
    unsigned nw;
    bool conv;
    qry_metric metric;
    size_t limit;
    pthread_mutex_t mu;
    size_t next;
    int rc;
} part_job;

/* A partition's table: a slot is a key and its totals in 32 bytes, so a row's probe and
 * update touch one cache line. A conversation's direction is not counted here: only the best
 * groups need it, and part_dirs finds it for them (with it a slot took two lines). */
typedef struct part_ent {
    uint64_t key, f, p, b;
} part_ent;

typedef struct part_out {
    part_job *job;
    part_best best;
    uint64_t groups, f, p, b;
    part_ent *tab;
    size_t tcap;
    uint64_t seen_recs, seen_groups; /* over the partitions done: sizes the next table */
    int rc;
} part_out;

#define PART_EMPTY UINT64_MAX /* no key has two ids of 2^32 - 1 (ids stay below 2^31) */

/* Both ids mixed before the multiply: the product's middle bits alone depended on the second
 * id only (and one bit of the first), so every group with one destination probed one run. */
static inline size_t part_slot(uint64_t key, size_t cap)
{
    uint64_t h = (key ^ key >> 29) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 24) & (cap - 1);
}

/* Empties tab's cap slots: an empty slot holds zero totals (part_run adds to it unchecked). */
static void part_tab_clear(part_ent *tab, size_t cap)
{
    for (size_t x = 0; x < cap; x++)
        tab[x] = (part_ent){PART_EMPTY, 0, 0, 0};
}

/* o's table at cap slots (at least tcap), keeping the groups of its first `old` slots. */
static int part_tab_grow(part_out *o, size_t old, size_t cap)
{
    part_ent *nt = malloc(cap * sizeof *nt);
    if (!nt)
        return NS_E_NOMEM;
    part_tab_clear(nt, cap);
    for (size_t x = 0; x < old; x++) {
        if (o->tab[x].key == PART_EMPTY)
            continue;
        size_t y = part_slot(o->tab[x].key, cap);
        while (nt[y].key != PART_EMPTY)
            y = (y + 1) & (cap - 1);
        nt[y] = o->tab[x];
    }
    free(o->tab);
    o->tab = nt;
    o->tcap = cap;
    return 0;
}

/* Record *r (and the one after it when wide) of worker k as its group's key in global ids,
 * its counters, and its direction (a conversation from its larger address: dir 1). Returns the
 * records it takes (1 or 2). */
static inline size_t part_read(const part_rec *r, const uint32_t *l2g, bool conv, uint64_t *key,
                               uint64_t c[3], int *dir)
{
    size_t used = 1;
    c[0] = 1;
    if (r->a & PART_WIDE) {
        c[0] = r->u.flows;
        memcpy(&c[1], &r[1], 8);
        memcpy(&c[2], (const uint8_t *)&r[1] + 8, 8);
        used = 2;
    } else {
        c[1] = r->u.n.packets;
        c[2] = r->u.n.bytes;
    }
    uint64_t ga = l2g[r->a & ~PART_WIDE], gb = l2g[r->b];
    *dir = conv && gb < ga; /* the source is the larger address: b to a */
    *key = *dir ? gb << 32 | ga : ga << 32 | gb;
    return used;
}

static void *part_run(void *arg)
{
    part_out *o = arg;
    part_job *j = o->job;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t p = j->rc == 0 ? j->next++ : PART_N;
        pthread_mutex_unlock(&j->mu);
        if (p >= PART_N)
            break;
        size_t recs = 0, n = 0;
        for (unsigned k = 0; k < j->nw; k++)
            recs += j->w[k].part[p].n;
        /* room for the groups the partitions so far suggest (as many as rows at first), at
         * most two thirds full; grown if there are more. A table sized for every row was
         * mostly empty (three rows a conversation), and clearing and reading it cost as much
         * as the rows. */
        uint64_t est = (uint64_t)recs * (o->seen_groups + 1) / (o->seen_recs + 1) + 16;
        size_t cap = 64;
        while (cap < est + est / 2)
            cap <<= 1;
        if (cap > o->tcap && (o->rc = part_tab_grow(o, 0, cap)) < 0)
            break;
        /* empty slots hold zero totals, so a new group and a known one take the same path:
         * whether a row starts a group (a third of them) is not a branch to mispredict */
        part_ent *tab = o->tab;
        part_tab_clear(tab, cap);
        for (unsigned k = 0; k < j->nw; k++) {
            const uint32_t *l2g = j->w[k].l2g;
            for (const part_chunk *ch = j->w[k].part[p].head; ch; ch = ch->next)
                for (size_t r = 0; r < ch->n;) {
                    uint64_t key, c[3];
                    int dir;
                    r += part_read(&ch->r[r], l2g, j->conv, &key, c, &dir);
                    size_t x = part_slot(key, cap);
                    /* one branch, taken when the first slot is neither: with && the test of
                     * whether the group is known (two rows in three) mispredicted */
                    while ((tab[x].key != key) & (tab[x].key != PART_EMPTY))
                        x = (x + 1) & (cap - 1);
                    size_t fresh = tab[x].key == PART_EMPTY;
                    if ((n + fresh) * 10 > cap * 7) {
                        if ((o->rc = part_tab_grow(o, cap, cap * 2)) < 0)
                            goto fail;
                        cap *= 2;
                        tab = o->tab;
                        x = part_slot(key, cap);
                        while (tab[x].key != PART_EMPTY)
                            x = (x + 1) & (cap - 1);
                    }
                    tab[x].key = key;
                    tab[x].f += c[0];
                    tab[x].p += c[1];
                    tab[x].b += c[2];
                    n += fresh;
                }
        }
        o->seen_recs += recs;
        o->seen_groups += n;
        /* No branch on whether a slot is used (half are, at random): an empty one adds zeros,
         * and ranks after every group (metric 0, the largest key). Once the heap is full, a
         * group whose metric is below its last's skips the call (most of them). */
        const part_best *hb = &o->best;
        qry_metric m = j->metric;
        for (size_t x = 0; x < cap; x++) {
            const part_ent *e = &tab[x];
            bool used = e->key != PART_EMPTY;
            o->groups += used;
            o->f += e->f;
            o->p += e->p;
            o->b += e->b;
            if (hb->n < hb->cap
                    ? used
                    : hb->cap && metric_pick(e->f, e->p, e->b, m) >= grp_metric(&hb->h[0], m)) {
                part_grp g = {e->key, e->f, e->p, e->b, {0, 0, 0}, p};
                best_offer(&o->best, &g, m);
            }
        }
    }
fail:
    if (o->rc < 0) {
        pthread_mutex_lock(&j->mu);
        j->rc = o->rc;
        pthread_mutex_unlock(&j->mu);
    }
    return NULL;
}

static int cmp_grp_part(const void *x, const void *y)
{
    const part_grp *a = *(const part_grp *const *)x, *b = *(const part_grp *const *)y;
    return a->part < b->part ? -1 : a->part > b->part;
}

/* The a-to-b totals of conversations g[0..n) (ab, zero on entry): the records of each one's
 * partition read again, once a partition, and matched in a small table of its groups. */
static int part_dirs(const part_worker *w, unsigned nw, part_grp *g, size_t n)
{
    part_grp **by = malloc((n ? n : 1) * sizeof *by);
    if (!by)
        return NS_E_NOMEM;
    for (size_t i = 0; i < n; i++)
        by[i] = &g[i];
    qsort(by, n, sizeof *by, cmp_grp_part);
    part_grp **slot = NULL;
    size_t scap = 0;
    int rc = 0;
    for (size_t i0 = 0, i1; i0 < n; i0 = i1) {
        for (i1 = i0 + 1; i1 < n && by[i1]->part == by[i0]->part; i1++)
            ;
        size_t cap = 16;
        while (cap < 2 * (i1 - i0))
            cap <<= 1;
        if (cap > scap) {
            free(slot);
            if (!(slot = malloc(cap * sizeof *slot))) {
                rc = NS_E_NOMEM;
                break;
            }
            scap = cap;
        }
        memset(slot, 0, cap * sizeof *slot);
        for (size_t i = i0; i < i1; i++) {
            size_t x = part_slot(by[i]->key, cap);
            while (slot[x])
                x = (x + 1) & (cap - 1);
            slot[x] = by[i];
        }
        size_t p = by[i0]->part;
        for (unsigned k = 0; k < nw; k++)
            for (const part_chunk *ch = w[k].part[p].head; ch; ch = ch->next)
                for (size_t r = 0; r < ch->n;) {
                    uint64_t key, c[3];
                    int dir;
                    r += part_read(&ch->r[r], w[k].l2g, true, &key, c, &dir);
                    if (dir)
                        continue;
                    size_t x = part_slot(key, cap);
                    while (slot[x] && slot[x]->key != key)
                        x = (x + 1) & (cap - 1);
                    if (!slot[x])
                        continue;
                    for (int m = 0; m < 3; m++)
                        slot[x]->ab[m] += c[m];
                }
    }
    free(slot);
    free(by);
    return rc;
}

typedef struct gid_key {
    uint64_t hi, lo; /* the address, big-endian halves: compared as numbers in address order */
    uint32_t id;     /* its worker-local id */
} gid_key;

static inline unsigned gid_digit(const gid_key *e, unsigned d)
{
    return (unsigned)((d < 8 ? e->lo >> (8 * d) : e->hi >> (8 * (d - 8))) & 255u);
}

/* Sorts k[0..n) by address: a stable counting pass a byte, least significant first, skipping
 * the bytes every address shares (a set of IPv4 addresses takes four passes). */
static int gid_sort(gid_key *k, size_t n)
{
    if (n < 2)
        return 0;
    gid_key *tmp = malloc(n * sizeof *tmp);
    size_t(*cnt)[256] = calloc(16, sizeof *cnt);
    if (!tmp || !cnt) {
        free(tmp);
        free(cnt);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        for (unsigned d = 0; d < 16; d++)
            cnt[d][gid_digit(&k[i], d)]++;
    gid_key *src = k, *dst = tmp;
    for (unsigned d = 0; d < 16; d++) {
        if (cnt[d][gid_digit(&src[0], d)] == n)
            continue; /* the same in all */
        size_t off = 0;
        for (unsigned b = 0; b < 256; b++) {
            size_t c = cnt[d][b];
            cnt[d][b] = off;
            off += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[cnt[d][gid_digit(&src[i], d)]++] = src[i];
        gid_key *t = src;
        src = dst;
        dst = t;
    }
    if (src != k)
        memcpy(k, src, n * sizeof *k);
    free(tmp);
    free(cnt);
    return 0;
}

/* The first phase of global ids, shared by the scan threads: each worker's addresses sorted. */
typedef struct gid_job {
    part_worker *w;
    gid_key **keys; /* by worker */
    unsigned nw;
    atomic_uint next;
    atomic_int rc;
} gid_job;

static void *gid_run(void *arg)
{
    gid_job *j = *(gid_job **)arg;
    for (unsigned k; (k = atomic_fetch_add(&j->next, 1)) < j->nw;) {
        const addr_intern *in = &j->w[k].in;
        gid_key *keys = malloc((in->n ? in->n : 1) * sizeof *keys);
        j->keys[k] = keys;
        int rc = keys ? 0 : NS_E_NOMEM;
        for (size_t i = 0; rc == 0 && i < in->n; i++)
            keys[i] = (gid_key){ns_get_be64(in->addr + i * 16), ns_get_be64(in->addr + i * 16 + 8),
                                (uint32_t)i};
        if (rc == 0)
            rc = gid_sort(keys, in->n);
        if (rc < 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&j->rc, &zero, rc);
        }
    }
    return NULL;
}

/* Every worker's addresses numbered in address order (w[k].l2g filled): each worker's sorted
 * (on the scan threads), then the sorted lists merged; *gaddr gets the addresses by global
 * id. */
static int part_global_ids(eng_db *db, part_worker *w, unsigned nw, uint8_t **gaddr, size_t *ng)
{
    gid_key *keys[ENG_SCAN_MAX_WORKERS] = {NULL};
    gid_job job = {.w = w, .keys = keys, .nw = nw};
    gid_job *jp[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    size_t total = 0, pos[ENG_SCAN_MAX_WORKERS] = {0}, n = 0;
    atomic_init(&job.next, 0);
    atomic_init(&job.rc, 0);
    for (unsigned k = 0; k < nw; k++) {
        jp[k] = &job;
        args[k] = &jp[k];
        total += w[k].in.n;
    }
    eng_db_par_run(db, nw, gid_run, args);
    int rc = atomic_load(&job.rc);
    for (unsigned k = 0; rc == 0 && k < nw; k++)
        if (!(w[k].l2g = malloc((w[k].in.n ? w[k].in.n : 1) * sizeof *w[k].l2g)))
            rc = NS_E_NOMEM;
    if (rc == 0 && !(*gaddr = malloc((total ? total : 1) * 16)))
        rc = NS_E_NOMEM;
    /* merge: the smallest head next; an address equal to the last one gets its id */
    const gid_key *last = NULL;
    while (rc == 0) {
        unsigned best = nw;
        for (unsigned k = 0; k < nw; k++) {
            if (pos[k] == w[k].in.n)
                continue;
            const gid_key *e = &keys[k][pos[k]], *b = best < nw ? &keys[best][pos[best]] : NULL;
            if (!b || e->hi < b->hi || (e->hi == b->hi && e->lo < b->lo))
                best = k;
        }
        if (best == nw)
            break;
        const gid_key *e = &keys[best][pos[best]++];
        if (!last || e->hi != last->hi || e->lo != last->lo) {
            memcpy(*gaddr + n * 16, w[best].in.addr + (size_t)e->id * 16, 16);
            n++;
        }
        w[best].l2g[e->id] = (uint32_t)(n - 1);
        last = e;
    }
    for (unsigned k = 0; k < nw; k++)
        free(keys[k]);
    *ng = n;
    return rc;
}

/* Whether part_top answers this grouping: a conversation, or a source and a destination
 * address (either order), without group times. */
static bool part_fits(const qry_group *g, unsigned flags)
{
    if (!(flags & QRY_TOP_NO_GROUP_TIMES))
        return false;
    if (g->n == 1)
        return g->k[0].by == QRY_BY_CONV;
    return g->n == 2 && ((g->k[0].by == QRY_BY_SRCADDR && g->k[1].by == QRY_BY_DSTADDR) ||
                         (g->k[0].by == QRY_BY_DSTADDR && g->k[1].by == QRY_BY_SRCADDR));
}

static int part_top(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                    const qry_group *g, qry_metric metric, size_t limit, qry_top_result *out)
{
    unsigned nw = eng_scan_workers();
    part_worker *w = calloc(nw, sizeof *w);
    part_out *o = calloc(nw, sizeof *o);
    void *args[ENG_SCAN_MAX_WORKERS];
    uint8_t *gaddr = NULL;
    size_t ng = 0;
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (!w || !o) {
        free(w);
        free(o);
        return NS_E_NOMEM;
    }
    bool conv = g->k[0].by == QRY_BY_CONV;
    for (unsigned k = 0; k < nw; k++) {
        w[k].filter = filter;
        w[k].arena.db = db;
        w[k].deadline = qry_deadline_ms;
        w[k].conv = conv;
        w[k].col[0] = conv || g->k[0].by == QRY_BY_SRCADDR ? ENG_COL_SRC : ENG_COL_DST;
        w[k].col[1] = w[k].col[0] == ENG_COL_SRC ? ENG_COL_DST : ENG_COL_SRC;
        w[k].tmin = w[k].span_first = NO_FIRST;
        w[k].tmax = w[k].span_last = NO_LAST;
        args[k] = &w[k];
    }
    addr_set as;
    eng_scan_opts so = *scan_opts(filter, &as, part_cols);
    /* addresses are read through dictionaries, by the key and by the filter alike */
    so.dict_only = ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST);
    uint32_t mask = !filter ? ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES) |
                                  ENG_COLMASK(ENG_COL_FLOWS)
                            : base_columns(filter);
    mask |= ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST);
    rc = eng_db_scan_par(db, from_ms, to_ms, mask, &so, nw, NULL, part_span_cb, args);
    for (unsigned k = 0; k < nw; k++)
        part_seal(&w[k]);
    if (rc == 0)
        rc = part_global_ids(db, w, nw, &gaddr, &ng);
    part_job job = {w, nw, conv, metric, limit, PTHREAD_MUTEX_INITIALIZER, 0, 0};
    for (unsigned k = 0; rc == 0 && k < nw; k++) {
        o[k].job = &job;
        o[k].best.cap = limit;
        args[k] = &o[k];
    }
    if (rc == 0) {
        eng_db_par_run(db, nw, part_run, args); /* on the scan threads, partitions taken in turn */
        rc = job.rc;
    }
    /* every thread's best into one heap, then best first */
    part_best all = {NULL, 0, 0, limit, false};
    uint64_t groups = 0;
    qry_totals total = {0, 0, 0, NO_FIRST, NO_LAST};
    for (unsigned k = 0; rc == 0 && k < nw; k++) {
        if (o[k].best.nomem) {
            rc = NS_E_NOMEM;
            break;
        }
        groups += o[k].groups;
        total.flows += o[k].f;
        total.packets += o[k].p;
        total.bytes += o[k].b;
        for (size_t i = 0; i < o[k].best.n; i++)
            best_offer(&all, &o[k].best.h[i], metric);
    }
    if (rc == 0 && all.nomem)
        rc = NS_E_NOMEM;
    if (rc == 0 && groups > QRY_MAX_GROUPS)
        rc = NS_E_TOO_MANY;
    if (rc == 0 && all.n < all.cap) /* never filled: never heapified */
        for (size_t j = all.n / 2; j-- > 0;)
            best_down(&all, j, metric);
    size_t k = rc == 0 ? all.n : 0;
    for (size_t end = k; end > 1; end--) { /* the worst to the back: best first */
        part_grp t = all.h[0];
        all.h[0] = all.h[end - 1];
        all.h[end - 1] = t;
        all.n = end - 1;
        best_down(&all, 0, metric);
    }
    if (rc == 0 && conv)
        rc = part_dirs(w, nw, all.h, k);
    if (rc == 0 && !(out->rows = calloc(k ? k : 1, sizeof *out->rows)))
        rc = NS_E_NOMEM;
    if (rc == 0) {
        out->other = total;
        for (size_t i = 0; i < k; i++) {
            const part_grp *pg = &all.h[i];
            qry_row *row = &out->rows[i];
            const uint8_t *a = gaddr + (size_t)(pg->key >> 32) * 16;
            const uint8_t *b = gaddr + (size_t)(pg->key & 0xffffffffu) * 16;
            if (conv) {
                memcpy(row->key.v[0].addr.b, a, 16);
                memcpy(row->key.v[0].addr2.b, b, 16);
                row->ab = (qry_totals){pg->ab[0], pg->ab[1], pg->ab[2], 0, 0};
                row->ba =
                    (qry_totals){pg->f - pg->ab[0], pg->p - pg->ab[1], pg->b - pg->ab[2], 0, 0};
            } else {
                memcpy(row->key.v[0].addr.b, a, 16);
                memcpy(row->key.v[1].addr.b, b, 16);
            }
            row->t = (qry_totals){pg->f, pg->p, pg->b, 0, 0};
            out->other.flows -= pg->f;
            out->other.packets -= pg->p;
            out->other.bytes -= pg->b;
        }
        /* the total's times: rows read with them, and the footers of segments read without */
        for (unsigned x = 0; x < nw; x++) {
            int64_t f = w[x].tmin < w[x].span_first ? w[x].tmin : w[x].span_first;
            int64_t l = w[x].tmax > w[x].span_last ? w[x].tmax : w[x].span_last;
            total.first_ms = f < total.first_ms ? f : total.first_ms;
            total.last_ms = l > total.last_ms ? l : total.last_ms;
        }
        if (!total.flows || total.first_ms == NO_FIRST || total.last_ms == NO_LAST)
            total.first_ms = total.last_ms = 0;
        out->total = total;
        out->other.first_ms = out->other.last_ms = 0;
        if (out->other.flows == 0)
            memset(&out->other, 0, sizeof out->other);
        out->n = k;
        out->groups = groups;
        out->span_ms = qry_span_ms(from_ms, to_ms, &out->total);
    }
    free(all.h);
    for (unsigned x = 0; x < nw; x++) {
        free(o[x].best.h);
        free(o[x].tab);
        part_worker_free(&w[x]);
    }
    free(o);
    free(w);
    free(gaddr);
    if (rc < 0) {
        free(out->rows);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

int qry_top_group(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                  const qry_group *g, qry_metric metric, size_t limit, qry_top_result *out)
{
    return qry_top_group_opt(db, from_ms, to_ms, filter, g, metric, limit, 0, out);
}

int qry_top_group_opt(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                      const qry_group *g, qry_metric metric, size_t limit, unsigned flags,
                      qry_top_result *out)
{
    group_tab t;
    memset(out, 0, sizeof *out);
    int rc = tab_init(&t, db, g, filter);
    if (rc < 0 || (unsigned)metric >= NMETRICS)
        return NS_E_RANGE;
    if (part_fits(g, flags))
        return part_top(db, from_ms, to_ms, filter, g, metric, limit, out);
    if ((rc = tab_grow(&t)) < 0)
        return rc;
    t.no_group_times = flags & QRY_TOP_NO_GROUP_TIMES;
    t.top_only = t.no_group_times;
    t.metric = metric;
    t.limit = limit;
    addr_set as;
    /* without group times, a segment inside the range is read without its time columns (two
     * varint columns: a fifth of a top-N's decoding); with a filter the total's range is then
     * found by span_of_filter, unless the filter reads the times itself */
    uint32_t tcols = ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST);
    bool lazy = t.no_group_times && !(qry_filter_columns(filter) & tcols);
    t.span_rows = lazy && filter;
    uint32_t mask = lazy ? (base_columns(filter) & ~tcols) : base_columns(filter);
    eng_scan_opts *so = (eng_scan_opts *)(uintptr_t)scan_opts(filter, &as, NULL);
    eng_col dc = dict_key_col(g);
    if (dc != ENG_NCOLS && !(filter && (qry_filter_columns(filter) & ENG_COLMASK(dc))))
        so->dict_only = ENG_COLMASK(dc); /* tab_add_dict reads the codes alone */
    /* an address-only filter's columns stay dictionaries unless the grouping packs them (the
     * one-address key reads its dictionary, or its column where there is none) */
    uint32_t fd = filter_dict_only(filter), gc = group_columns(g);
    if (fd && (!(gc & fd) || (dc != ENG_NCOLS && (gc & fd) == ENG_COLMASK(dc))))
        so->dict_only |= fd;
    /* a value-indexed key (a port, the protocol) counts packets and bytes from their planes
     * (tab_add_direct_rows), unless the filter reads them */
    if (t.ndirect &&
        !(qry_filter_columns(filter) & (ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES))))
        so->planes = ENG_COLMASK(ENG_COL_PACKETS) | ENG_COLMASK(ENG_COL_BYTES);
    /* the oldest and newest segments give the rows' times during the scan, so the passes of
     * span_of_filter after it rarely read a segment (they were a single-threaded tail) */
    so->extreme_times = t.span_rows;
    rc = group_scan(db, from_ms, to_ms, mask | group_columns(g), so, &t);
    so->extreme_times = false;
    if (rc == 0 && t.span_rows)
        rc = span_of_filter(db, from_ms, to_ms, filter, so, &t.span_first, &t.span_last);
    if (rc == 0)
        rc = tab_result(&t, metric, limit, from_ms, to_ms, out);
    tab_free(&t);
    return rc < 0 ? rc : 0;
}

int qry_top(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter, qry_by by,
            qry_metric metric, size_t limit, qry_top_result *out)
{
    qry_group g;
    if ((unsigned)by >= QRY_NBY) {
        memset(out, 0, sizeof *out);
        return NS_E_RANGE;
    }
    qry_group_one(by, &g);
    return qry_top_group(db, from_ms, to_ms, filter, &g, metric, limit, out);
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
    group_tab *split; /* with a split: the top groups' keys, slot -> series via idx */
    size_t *idx;
    size_t k;
    int64_t deadline;
    qry_sel *sel;
} series_ctx;

/* Adds a worker's series buckets into another's (their times are not kept). */
static void buckets_add(qry_totals *dst, const qry_totals *src, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        dst[j].flows += src[j].flows;
        dst[j].packets += src[j].packets;
        dst[j].bytes += src[j].bytes;
    }
}

/* Adds row r to buckets b (n of step from `from`): its packets and bytes spread over the
 * buckets its span covers in proportion to the overlap (the remainder to the last, so a flow
 * wholly inside adds up exactly), its flow count to the bucket it starts in. */
static void spread(qry_totals *b, int64_t from, int64_t step, size_t n, const eng_colview *v,
                   size_t i)
{
    const struct {
        int64_t first_ms, last_ms;
        uint64_t packets, bytes, flows;
    } row = {first_of(v, i), last_of(v, i), eng_col_u64(v, ENG_COL_PACKETS, i),
             eng_col_u64(v, ENG_COL_BYTES, i), flows_of(v, i)},
      *r = &row;
    int64_t end = from + step * (int64_t)n; /* exclusive */
    int64_t s = r->first_ms < from ? from : r->first_ms;
    int64_t e = r->last_ms >= end ? end - 1 : r->last_ms;
    if (e < s)
        return;
    size_t bs = (size_t)((s - from) / step), be = (size_t)((e - from) / step);
    b[bs].flows += r->flows;
    if (bs == be || r->last_ms <= r->first_ms) {
        b[bs].packets += r->packets;
        b[bs].bytes += r->bytes;
        return;
    }
    double span = (double)(r->last_ms - r->first_ms);
    bool inside = r->first_ms >= from && r->last_ms < end;
    uint64_t given_p = 0, given_b = 0;
    for (size_t k = bs; k <= be; k++) {
        int64_t lo = from + step * (int64_t)k, hi = lo + step;
        int64_t os = r->first_ms > lo ? r->first_ms : lo;
        int64_t oe = r->last_ms < hi ? r->last_ms : hi;
        double share = oe > os ? (double)(oe - os) / span : 0.0;
        uint64_t p =
            k == be && inside ? r->packets - given_p : (uint64_t)((double)r->packets * share);
        uint64_t by = k == be && inside ? r->bytes - given_b : (uint64_t)((double)r->bytes * share);
        b[k].packets += p;
        b[k].bytes += by;
        given_p += p;
        given_b += by;
    }
}

static int series_cols(void *arg, const eng_colview *v)
{
    series_ctx *c = arg;
    const uint32_t *rows;
    size_t n;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
    uint8_t key[QRY_MAX_KEYS * 32];
    int rc = view_select(c->filter, v, &c->sel, &rows, &n);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < n; k++) {
        size_t i = row_at(rows, k), series = 0;
        if (c->split) {
            pack_key(c->split, v, i, key);
            size_t s = tab_slot(c->split, key, key_hash(key, c->split->klen), false, &rc);
            series = s == SIZE_MAX ? c->k : c->idx[s];
        }
        spread(c->b + series * c->n, c->from, c->step, c->n, v, i);
    }
    return 0;
}

/* A series scan on every worker: each spreads into its own copy of the buckets (nseries series
 * of c->n), added into c->b at the end. c->b is zeroed first. */
static int series_scan(eng_db *db, int64_t to_ms, uint32_t mask, const eng_scan_opts *so,
                       const series_ctx *c, size_t nseries)
{
    series_ctx w[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    unsigned nw = eng_scan_workers();
    size_t nb = nseries * c->n;
    int rc = 0;
    memset(c->b, 0, nb * sizeof *c->b);
    for (unsigned i = 0; i < nw; i++) {
        w[i] = *c;
        w[i].sel = NULL;
        if (i > 0 && !(w[i].b = calloc(nb, sizeof *w[i].b))) {
            nw = i; /* fewer workers, not a failure */
            break;
        }
        args[i] = &w[i];
    }
    eng_scan_opts o = *so;
    o.cols = series_cols;
    rc = eng_db_scan_par(db, c->from, to_ms, mask, &o, nw, NULL, NULL, args);
    for (unsigned i = 1; i < nw; i++) {
        buckets_add(c->b, w[i].b, nb);
        free(w[i].b);
    }
    for (unsigned i = 0; i < nw; i++)
        sel_free(w[i].sel);
    return rc;
}

int qry_series(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
               const qry_filter *filter, qry_totals *buckets)
{
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS)
        return NS_E_RANGE;
    series_ctx c = {from_ms, step_ms, nbuckets, filter,          buckets,
                    NULL,    NULL,    0,        qry_deadline_ms, NULL};
    addr_set as;
    return series_scan(db, from_ms + step_ms * (int64_t)nbuckets - 1, base_columns(filter),
                       scan_opts(filter, &as, NULL), &c, 1);
}

int qry_series_split(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
                     const qry_filter *filter, const qry_group *g, qry_metric metric, size_t limit,
                     qry_split *out)
{
    memset(out, 0, sizeof *out);
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS || limit == 0 ||
        limit > QRY_SERIES_MAX_BUCKETS / nbuckets)
        return NS_E_RANGE;
    int64_t to_ms = from_ms + step_ms * (int64_t)nbuckets - 1;
    /* pass 1: the groups, and which are largest; pass 2: their series */
    group_tab t, look;
    size_t *best = NULL, k = 0;
    int rc = tab_init(&t, db, g, filter);
    if (rc < 0 || (unsigned)metric >= NMETRICS)
        return NS_E_RANGE;
    (void)tab_init(&look, db, g, filter);
    if ((rc = tab_grow(&t)) < 0)
        return rc;
    uint32_t mask = base_columns(filter) | group_columns(g);
    addr_set as;
    const eng_scan_opts *so = scan_opts(filter, &as, NULL);
    rc = group_scan(db, from_ms, to_ms, mask, so, &t);
    if (rc < 0 || (rc = tab_top(&t, metric, limit, &best, &k, NULL)) < 0 ||
        (rc = tab_grow(&look)) < 0)
        goto out;
    out->keys = calloc(k ? k : 1, sizeof *out->keys);
    out->totals = calloc(k + 1, sizeof *out->totals);
    out->series = calloc((k + 1) * nbuckets, sizeof *out->series);
    size_t *idx = NULL;
    if (!out->keys || !out->totals || !out->series) {
        rc = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < k; i++) {
        const uint8_t *kb = TKEY(&t, best[i]);
        unpack_key(g, kb, &out->keys[i]);
        out->totals[i] = TENT(&t, best[i])->tot;
        if (tab_slot(&look, kb, TENT(&t, best[i])->hash, true, &rc) == SIZE_MAX)
            goto out;
        TENT(&t, best[i])->hash = 0;
    }
    for (size_t i = 0; i < t.cap; i++)
        if (TENT(&t, i)->hash)
            totals_merge(&out->totals[k], &TENT(&t, i)->tot);
    out->k = k;
    idx = malloc(look.cap * sizeof *idx);
    if (!idx) {
        rc = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < k; i++)
        idx[tab_slot(&look, TKEY(&t, best[i]), key_hash(TKEY(&t, best[i]), t.klen), false, &rc)] =
            i;
    tab_free(&t);
    series_ctx c = {from_ms, step_ms, nbuckets, filter,     out->series,
                    &look,   idx,     k,        t.deadline, NULL};
    rc = series_scan(db, to_ms, mask, so, &c, k + 1);
    free(idx);
out:
    free(best);
    tab_free(&t);
    tab_free(&look);
    if (rc < 0)
        qry_split_free(out);
    return rc < 0 ? rc : 0;
}

void qry_split_free(qry_split *s)
{
    if (!s)
        return;
    free(s->keys);
    free(s->totals);
    free(s->series);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------------------------ */
/* The Flows Window of one device: everything in one scan of the rows that name it */

static const qry_by dev_by[QRY_DEV_NLISTS] = {
    QRY_BY_DSTADDR, QRY_BY_PROTO, QRY_BY_APP, QRY_BY_DSTPORT, /* talker: it is the source */
    QRY_BY_SRCADDR, QRY_BY_PROTO, QRY_BY_APP, QRY_BY_DSTPORT, /* listener: the destination */
    QRY_BY_CONV,
};

qry_by qry_device_list_by(qry_dev_list l)
{
    return (unsigned)l < QRY_DEV_NLISTS ? dev_by[l] : QRY_NBY;
}

typedef struct dev_ctx {
    ns_addr dev;
    int64_t from, to, sfrom, step;
    size_t nb;
    qry_totals out, in, *sout, *sin;
    group_tab tabs[QRY_DEV_NLISTS];
    int64_t deadline;
    uint32_t *rows; /* rows of one view: as talker, as listener, either (3 * cap) */
    size_t cap;
} dev_ctx;

static int dev_cols(void *arg, const eng_colview *v)
{
    dev_ctx *c = arg;
    int rc;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
    if (c->cap < v->n) {
        uint32_t *r = realloc(c->rows, 3 * v->n * sizeof *r);
        if (!r)
            return NS_E_NOMEM;
        c->rows = r;
        c->cap = v->n;
    }
    /* the device's rows inside the range, as talker and as listener: then each list takes
     * its rows a batch at a time (tab_add_rows prefetches its slots) */
    uint32_t *talk = c->rows, *listen = c->rows + c->cap, *either = c->rows + 2 * c->cap;
    size_t nt = 0, nl = 0, ne = 0;
    for (size_t k = 0; k < v->n; k++) {
        size_t i = row_at(v->idx, k);
        bool talker = memcmp(eng_col_addr(v, ENG_COL_SRC, i), c->dev.b, 16) == 0;
        bool listener = memcmp(eng_col_addr(v, ENG_COL_DST, i), c->dev.b, 16) == 0;
        if (!talker && !listener)
            continue; /* the index names blocks of rows, not rows */
        if (talker)
            spread(c->sout, c->sfrom, c->step, c->nb, v, i);
        if (listener)
            spread(c->sin, c->sfrom, c->step, c->nb, v, i);
        if (last_of(v, i) < c->from || first_of(v, i) > c->to)
            continue; /* in the last bucket's tail only */
        if (talker) {
            totals_add(&c->out, v, i);
            talk[nt++] = (uint32_t)i;
        }
        if (listener) {
            totals_add(&c->in, v, i);
            listen[nl++] = (uint32_t)i;
        }
        either[ne++] = (uint32_t)i;
    }
    for (int l = 0; l < QRY_DEV_NLISTS; l++) {
        const uint32_t *rows = l < QRY_DEV_LISTENER_PEERS  ? talk
                               : l < QRY_DEV_CONVERSATIONS ? listen
                                                           : either;
        size_t n = l < QRY_DEV_LISTENER_PEERS ? nt : l < QRY_DEV_CONVERSATIONS ? nl : ne;
        qry_by by = dev_by[l];
        if ((by == QRY_BY_SRCADDR || by == QRY_BY_DSTADDR || by == QRY_BY_CONV) &&
            (rc = tab_reserve(&c->tabs[l], n)) < 0)
            return rc;
        if ((rc = tab_add_rows(&c->tabs[l], v, rows, n)) < 0)
            return rc;
    }
    return 0;
}

static void dev_ctx_free(dev_ctx *c, bool series)
{
    for (int l = 0; l < QRY_DEV_NLISTS; l++)
        tab_free(&c->tabs[l]);
    free(c->rows);
    c->rows = NULL;
    if (series) {
        free(c->sout);
        free(c->sin);
    }
}

static int dev_ctx_init(dev_ctx *c, const dev_ctx *proto, const qry_group *groups)
{
    int rc = 0;
    *c = *proto;
    memset(c->tabs, 0, sizeof c->tabs);
    c->sout = calloc(c->nb, sizeof *c->sout);
    c->sin = calloc(c->nb, sizeof *c->sin);
    if (!c->sout || !c->sin)
        rc = NS_E_NOMEM;
    for (int l = 0; rc == 0 && l < QRY_DEV_NLISTS; l++) {
        if ((rc = tab_init(&c->tabs[l], NULL, &groups[l], NULL)) == 0)
            rc = tab_grow(&c->tabs[l]);
        c->tabs[l].no_group_times = true; /* the window shows none: one pass for each list */
        if (c->tabs[l].ndirect > 256)
            c->tabs[l].ndirect = 0; /* one device's rows are few: a 64k array costs more */
    }
    return rc;
}

int qry_device(eng_db *db, const ns_addr *dev, int64_t from_ms, int64_t to_ms, int64_t step_ms,
               size_t nbuckets, size_t limit, qry_device_result *out)
{
    qry_group groups[QRY_DEV_NLISTS]; /* the tables point at them until they are freed */
    dev_ctx w[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    unsigned nw = eng_scan_workers(), ready = 0;
    int rc = 0;

    memset(out, 0, sizeof *out);
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS || limit == 0)
        return NS_E_RANGE;
    for (int l = 0; l < QRY_DEV_NLISTS; l++)
        qry_group_one(dev_by[l], &groups[l]);
    dev_ctx proto = {.dev = *dev,
                     .from = from_ms,
                     .to = to_ms,
                     .sfrom = from_ms,
                     .step = step_ms,
                     .nb = nbuckets,
                     .deadline = qry_deadline_ms};
    for (; ready < nw; ready++) {
        if ((rc = dev_ctx_init(&w[ready], &proto, groups)) < 0) {
            dev_ctx_free(&w[ready], true);
            break;
        }
        args[ready] = &w[ready];
    }
    if (ready == 0)
        return rc;
    uint32_t mask = base_columns(NULL) | ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST) |
                    ENG_COLMASK(ENG_COL_PROTO) | ENG_COLMASK(ENG_COL_SRC_PORT) |
                    ENG_COLMASK(ENG_COL_DST_PORT);
    eng_scan_opts so = {.addrs = dev, .naddrs = 1, .cols = dev_cols};
    int64_t end = from_ms + step_ms * (int64_t)nbuckets - 1;
    rc =
        eng_db_scan_par(db, from_ms, end > to_ms ? end : to_ms, mask, &so, ready, NULL, NULL, args);
    /* merge every worker into the first */
    dev_ctx *c = &w[0];
    for (unsigned i = 0; i < ready; i++)
        for (int l = 0; rc == 0 && l < QRY_DEV_NLISTS; l++)
            rc = tab_flush(&w[i].tabs[l]);
    for (unsigned i = 1; i < ready; i++) {
        totals_merge(&c->out, &w[i].out);
        totals_merge(&c->in, &w[i].in);
        buckets_add(c->sout, w[i].sout, nbuckets);
        buckets_add(c->sin, w[i].sin, nbuckets);
        for (int l = 0; rc == 0 && l < QRY_DEV_NLISTS; l++)
            rc = tab_merge(&c->tabs[l], &w[i].tabs[l]);
        dev_ctx_free(&w[i], true);
    }
    for (int l = 0; rc == 0 && l < QRY_DEV_NLISTS; l++)
        rc = tab_result(&c->tabs[l], QRY_M_BYTES, limit, from_ms, to_ms, &out->lists[l]);
    if (rc < 0) {
        dev_ctx_free(c, true);
        qry_device_free(out);
        return rc;
    }
    out->out = c->out;
    out->in = c->in;
    out->series_out = c->sout; /* handed over */
    out->series_in = c->sin;
    dev_ctx_free(c, false);
    return 0;
}

void qry_device_free(qry_device_result *r)
{
    if (!r)
        return;
    for (int l = 0; l < QRY_DEV_NLISTS; l++)
        qry_top_free(&r->lists[l]);
    free(r->series_out);
    free(r->series_in);
    r->series_out = r->series_in = NULL;
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
    int64_t deadline;
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
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
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

/* Whether a sealed segment ([first_ms, last_ms] of its rows) may hold a row for this page: not
 * when every row was given on an earlier page, nor when the heap is full of rows that all start
 * after the segment's last end. */
static int flows_want(void *arg, int64_t first_ms, int64_t last_ms)
{
    const flows_ctx *c = arg;
    if (c->after && c->after->valid && first_ms > c->after->first_ms)
        return 0;
    return !(c->n == c->cap && last_ms < c->heap[0].first_ms);
}

int qry_flows(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
              const qry_cursor *after, size_t limit, eng_flow **out, size_t *n, qry_cursor *next)
{
    if (limit == 0 || limit > QRY_FLOWS_MAX)
        return NS_E_RANGE;
    uint64_t skip = after && after->valid ? after->skip : 0;
    if (skip > QRY_CURSOR_SKIP_MAX)
        return NS_E_RANGE;
    /* one more than asked tells whether there is a next page */
    flows_ctx w[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    unsigned nw = eng_scan_workers();
    for (unsigned i = 0; i < nw; i++) {
        w[i] = (flows_ctx){filter, after, NULL, 0, (size_t)skip + limit + 1, qry_deadline_ms};
        if (!(w[i].heap = malloc(w[i].cap * sizeof *w[i].heap))) {
            if (i == 0)
                return NS_E_NOMEM;
            nw = i;
            break;
        }
        args[i] = &w[i];
    }
    addr_set as;
    scan_opts(filter, &as, NULL);
    as.o.newest_first = true; /* full heaps then skip the older segments unread */
    as.o.want = flows_want;
    int rc = eng_db_scan_par(db, from_ms, to_ms, ENG_COLS_ALL, &as.o, nw, flows_cb, NULL, args);
    /* the newest of every worker's newest: the same heap, fed the others' rows */
    flows_ctx c = w[0];
    c.filter = NULL;
    c.after = NULL;
    c.deadline = 0;
    for (unsigned i = 1; i < nw; i++) {
        if (rc == 0)
            flows_cb(&c, w[i].heap, w[i].n);
        free(w[i].heap);
    }
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
