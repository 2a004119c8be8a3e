/* engine/query.c — totals and top-N over the store. A scan hands batches of rows to an
 * aggregator: a hash table keyed by the group key (xxh3), then a partial sort for the top. */
#include "engine/query.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

static void totals_add(qry_totals *t, const eng_flow *r)
{
    if (t->flows == 0 || r->first_ms < t->first_ms)
        t->first_ms = r->first_ms;
    if (t->flows == 0 || r->last_ms > t->last_ms)
        t->last_ms = r->last_ms;
    t->flows += eng_flow_count(r); /* a roll-up row stands for many */
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
    memset(&set->o, 0, sizeof set->o);
    set->o.addrs = set->a;
    set->o.naddrs = f ? qry_filter_addrs(f, set->a, QRY_INDEX_ADDRS) : 0;
    return &set->o;
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
    int64_t deadline;
} summary_ctx;

static int summary_cb(void *arg, const eng_flow *rows, size_t n)
{
    summary_ctx *c = arg;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
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
    summary_ctx c[ENG_SCAN_MAX_WORKERS];
    void *args[ENG_SCAN_MAX_WORKERS];
    unsigned nw = eng_scan_workers();
    uint32_t mask = base_columns(filter);
    for (unsigned w = 0; w < nw; w++) {
        c[w] = (summary_ctx){.filter = filter, .deadline = qry_deadline_ms};
        args[w] = &c[w];
    }
    addr_set as;
    int rc = eng_db_scan_par(db, from_ms, to_ms, mask, scan_opts(filter, &as), nw, summary_cb,
                             summary_totals_cb, args);
    for (unsigned w = 1; w < nw; w++)
        totals_merge(&c[0].t, &c[w].t);
    *out = c[0].t;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Group table: each group's key is packed into klen bytes (addresses as stored, numbers
 * big-endian, so byte order is value order), hashed with xxh3; open addressing, linear
 * probing, grows at 50% load. Conversation direction totals are kept only when asked for. */

#define QRY_MAX_GROUPS (16u << 20) /* distinct groups one query may hold */

typedef struct group_tab {
    const qry_group *g;
    const qry_filter *filter;
    size_t klen;
    size_t conv_off; /* offset of the conversation key, when conv */
    bool conv;
    uint8_t *keys;   /* cap * klen */
    uint64_t *hash;  /* 0 = empty slot */
    qry_totals *tot; /* cap */
    qry_totals *dir; /* 2 * cap (a to b, b to a) when conv */
    size_t cap, n;
    int64_t deadline;
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

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The service port of a flow: the lower port for TCP/UDP/SCTP (a zero port does not count),
 * ICMP type and code for ICMP, none otherwise. */
static uint32_t app_of(const eng_flow *r)
{
    uint32_t port = 0;
    switch (r->proto) {
    case 6:
    case 17:
    case 132: {
        uint16_t lo = r->src_port < r->dst_port ? r->src_port : r->dst_port;
        uint16_t hi = r->src_port < r->dst_port ? r->dst_port : r->src_port;
        port = lo ? lo : hi;
        break;
    }
    case 1:
    case 58:
        port = r->dst_port;
        break;
    default:
        break;
    }
    return (uint32_t)r->proto << 16 | port;
}

static uint32_t num_of(qry_by by, const eng_flow *r)
{
    switch (by) {
    case QRY_BY_PROTO:
        return r->proto;
    case QRY_BY_SRCPORT:
        return r->src_port;
    case QRY_BY_DSTPORT:
        return r->dst_port;
    case QRY_BY_INIF:
        return r->in_if;
    case QRY_BY_OUTIF:
        return r->out_if;
    case QRY_BY_SRCAS:
        return r->src_as;
    case QRY_BY_DSTAS:
        return r->dst_as;
    case QRY_BY_TOS:
        return r->tos;
    case QRY_BY_VLAN:
        return r->vlan;
    case QRY_BY_APP:
        return app_of(r);
    default:
        return 0;
    }
}

/* Packs row r's key into out (klen bytes). */
static void pack_key(const group_tab *t, const eng_flow *r, uint8_t *out)
{
    for (size_t i = 0; i < t->g->n; i++) {
        const qry_keyspec *ks = &t->g->k[i];
        switch (ks->by) {
        case QRY_BY_SRCADDR:
        case QRY_BY_SRCNET:
            memcpy(out, r->src.b, 16);
            break;
        case QRY_BY_DSTADDR:
        case QRY_BY_DSTNET:
            memcpy(out, r->dst.b, 16);
            break;
        case QRY_BY_EXPORTER:
            memcpy(out, r->exporter.b, 16);
            break;
        case QRY_BY_CONV: {
            bool fwd = memcmp(r->src.b, r->dst.b, 16) <= 0;
            memcpy(out, fwd ? r->src.b : r->dst.b, 16);
            memcpy(out + 16, fwd ? r->dst.b : r->src.b, 16);
            break;
        }
        default:
            put_be32(out, num_of(ks->by, r));
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
            k->v[i].num = get_be32(in);
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

static int tab_init(group_tab *t, const qry_group *g, const qry_filter *filter)
{
    memset(t, 0, sizeof *t);
    if (g->n == 0 || g->n > QRY_MAX_KEYS)
        return NS_E_RANGE;
    t->g = g;
    t->filter = filter;
    t->deadline = qry_deadline_ms;
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

static void tab_free(group_tab *t)
{
    free(t->keys);
    free(t->hash);
    free(t->tot);
    free(t->dir);
    t->keys = NULL;
    t->hash = NULL;
    t->tot = t->dir = NULL;
}

static int tab_grow(group_tab *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 1024;
    if (t->n >= QRY_MAX_GROUPS)
        return NS_E_TOO_MANY;
    uint8_t *nk = malloc(ncap * t->klen);
    uint64_t *nh = calloc(ncap, sizeof *nh);
    qry_totals *nt = malloc(ncap * sizeof *nt);
    qry_totals *nd = t->conv ? malloc(2 * ncap * sizeof *nd) : NULL;
    if (!nk || !nh || !nt || (t->conv && !nd)) {
        free(nk);
        free(nh);
        free(nt);
        free(nd);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->hash[i])
            continue;
        size_t h = (size_t)t->hash[i] & (ncap - 1);
        while (nh[h])
            h = (h + 1) & (ncap - 1);
        nh[h] = t->hash[i];
        memcpy(nk + h * t->klen, t->keys + i * t->klen, t->klen);
        nt[h] = t->tot[i];
        if (nd) {
            nd[2 * h] = t->dir[2 * i];
            nd[2 * h + 1] = t->dir[2 * i + 1];
        }
    }
    tab_free(t);
    t->keys = nk;
    t->hash = nh;
    t->tot = nt;
    t->dir = nd;
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
    if (insert && t->n * 2 >= t->cap && (*rc = tab_grow(t)) < 0)
        return SIZE_MAX;
    size_t i = (size_t)h & (t->cap - 1);
    while (t->hash[i]) {
        if (t->hash[i] == h && key_eq(t->keys + i * t->klen, k, t->klen))
            return i;
        i = (i + 1) & (t->cap - 1);
    }
    if (!insert)
        return SIZE_MAX;
    t->hash[i] = h;
    memcpy(t->keys + i * t->klen, k, t->klen);
    memset(&t->tot[i], 0, sizeof t->tot[i]);
    if (t->dir)
        memset(&t->dir[2 * i], 0, 2 * sizeof t->dir[0]);
    t->n++;
    return i;
}

/* Counts row r in its group. Returns 0 or the error of a failed grow. */
static int tab_add(group_tab *t, const eng_flow *r)
{
    uint8_t k[QRY_MAX_KEYS * 32];
    int rc = 0;
    pack_key(t, r, k);
    size_t s = tab_slot(t, k, key_hash(k, t->klen), true, &rc);
    if (s == SIZE_MAX)
        return rc;
    totals_add(&t->tot[s], r);
    if (t->dir)
        totals_add(&t->dir[2 * s + (memcmp(r->src.b, k + t->conv_off, 16) == 0 ? 0 : 1)], r);
    return 0;
}

/* Adds every group of src into t (same grouping); src is left as it was. */
static int tab_merge(group_tab *t, const group_tab *src)
{
    int rc = 0;
    for (size_t j = 0; j < src->cap; j++) {
        if (!src->hash[j])
            continue;
        size_t s = tab_slot(t, src->keys + j * t->klen, src->hash[j], true, &rc);
        if (s == SIZE_MAX)
            return rc;
        totals_merge(&t->tot[s], &src->tot[j]);
        if (t->dir) {
            totals_merge(&t->dir[2 * s], &src->dir[2 * j]);
            totals_merge(&t->dir[2 * s + 1], &src->dir[2 * j + 1]);
        }
    }
    return 0;
}

static int group_cb(void *arg, const eng_flow *rows, size_t n)
{
    group_tab *t = arg;
    if (past_deadline(t->deadline))
        return -ETIMEDOUT;
    for (size_t i = 0; i < n; i++) {
        if (t->filter && !qry_filter_match(t->filter, &rows[i]))
            continue;
        int rc = tab_add(t, &rows[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
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
    uint64_t x = metric_of(&t->tot[a], m), y = metric_of(&t->tot[b], m);
    if (x != y)
        return x > y;
    return memcmp(t->keys + a * t->klen, t->keys + b * t->klen, t->klen) < 0;
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

/* The `limit` best slots of t, best first, into *out (malloc'd, *k entries). */
static int tab_top(const group_tab *t, qry_metric m, size_t limit, size_t **out, size_t *k)
{
    size_t cap = limit < t->n ? limit : t->n, n = 0;
    size_t *h = malloc((cap ? cap : 1) * sizeof *h);
    if (!h)
        return NS_E_NOMEM;
    for (size_t i = 0; i < t->cap && cap; i++) {
        if (!t->hash[i])
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
        if ((rc = tab_init(&w[ready], t->g, t->filter)) < 0 || (rc = tab_grow(&w[ready])) < 0)
            break;
        args[ready] = &w[ready];
    }
    if (rc == 0)
        rc = eng_db_scan_par(db, from_ms, to_ms, mask, so, nw, group_cb, NULL, args);
    for (unsigned i = 1; i < ready; i++) {
        if (rc == 0)
            rc = tab_merge(t, &w[i]);
        tab_free(&w[i]);
    }
    return rc;
}

/* The answer of a filled table: its `limit` largest groups, the rest as other, the total.
 * Consumes t's hash marks (the table is only fit for tab_free afterwards). */
static int tab_result(group_tab *t, qry_metric metric, size_t limit, int64_t from_ms, int64_t to_ms,
                      qry_top_result *out)
{
    size_t *best = NULL, k = 0;
    int rc = tab_top(t, metric, limit, &best, &k);
    memset(out, 0, sizeof *out);
    if (rc < 0)
        return rc;
    out->rows = calloc(k ? k : 1, sizeof *out->rows);
    if (!out->rows) {
        free(best);
        return NS_E_NOMEM;
    }
    for (size_t i = 0; i < t->cap; i++)
        if (t->hash[i])
            totals_merge(&out->total, &t->tot[i]);
    for (size_t i = 0; i < k; i++) {
        qry_row *row = &out->rows[i];
        unpack_key(t->g, t->keys + best[i] * t->klen, &row->key);
        row->t = t->tot[best[i]];
        if (t->dir) {
            row->ab = t->dir[2 * best[i]];
            row->ba = t->dir[2 * best[i] + 1];
        }
        t->hash[best[i]] = 0; /* what is left makes "other" */
    }
    for (size_t i = 0; i < t->cap; i++)
        if (t->hash[i])
            totals_merge(&out->other, &t->tot[i]);
    out->n = k;
    out->groups = t->n;
    out->span_ms = qry_span_ms(from_ms, to_ms, &out->total);
    free(best);
    return 0;
}

int qry_top_group(eng_db *db, int64_t from_ms, int64_t to_ms, const qry_filter *filter,
                  const qry_group *g, qry_metric metric, size_t limit, qry_top_result *out)
{
    group_tab t;
    memset(out, 0, sizeof *out);
    int rc = tab_init(&t, g, filter);
    if (rc < 0 || (unsigned)metric >= NMETRICS)
        return NS_E_RANGE;
    if ((rc = tab_grow(&t)) < 0)
        return rc;
    addr_set as;
    rc = group_scan(db, from_ms, to_ms, base_columns(filter) | group_columns(g),
                    scan_opts(filter, &as), &t);
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
static void spread(qry_totals *b, int64_t from, int64_t step, size_t n, const eng_flow *r)
{
    int64_t end = from + step * (int64_t)n; /* exclusive */
    int64_t s = r->first_ms < from ? from : r->first_ms;
    int64_t e = r->last_ms >= end ? end - 1 : r->last_ms;
    if (e < s)
        return;
    size_t bs = (size_t)((s - from) / step), be = (size_t)((e - from) / step);
    b[bs].flows += eng_flow_count(r);
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

static int series_cb(void *arg, const eng_flow *rows, size_t n)
{
    series_ctx *c = arg;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
    uint8_t key[QRY_MAX_KEYS * 32];
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const eng_flow *r = &rows[i];
        if (c->filter && !qry_filter_match(c->filter, r))
            continue;
        size_t series = 0;
        if (c->split) {
            pack_key(c->split, r, key);
            size_t s = tab_slot(c->split, key, key_hash(key, c->split->klen), false, &rc);
            series = s == SIZE_MAX ? c->k : c->idx[s];
        }
        spread(c->b + series * c->n, c->from, c->step, c->n, r);
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
        if (i > 0 && !(w[i].b = calloc(nb, sizeof *w[i].b))) {
            nw = i; /* fewer workers, not a failure */
            break;
        }
        args[i] = &w[i];
    }
    rc = eng_db_scan_par(db, c->from, to_ms, mask, so, nw, series_cb, NULL, args);
    for (unsigned i = 1; i < nw; i++) {
        buckets_add(c->b, w[i].b, nb);
        free(w[i].b);
    }
    return rc;
}

int qry_series(eng_db *db, int64_t from_ms, int64_t step_ms, size_t nbuckets,
               const qry_filter *filter, qry_totals *buckets)
{
    if (step_ms <= 0 || nbuckets == 0 || nbuckets > QRY_SERIES_MAX_BUCKETS)
        return NS_E_RANGE;
    series_ctx c = {from_ms, step_ms, nbuckets, filter, buckets, NULL, NULL, 0, qry_deadline_ms};
    addr_set as;
    return series_scan(db, from_ms + step_ms * (int64_t)nbuckets - 1, base_columns(filter),
                       scan_opts(filter, &as), &c, 1);
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
    int rc = tab_init(&t, g, filter);
    if (rc < 0 || (unsigned)metric >= NMETRICS)
        return NS_E_RANGE;
    (void)tab_init(&look, g, filter);
    if ((rc = tab_grow(&t)) < 0)
        return rc;
    uint32_t mask = base_columns(filter) | group_columns(g);
    addr_set as;
    const eng_scan_opts *so = scan_opts(filter, &as);
    rc = group_scan(db, from_ms, to_ms, mask, so, &t);
    if (rc < 0 || (rc = tab_top(&t, metric, limit, &best, &k)) < 0 || (rc = tab_grow(&look)) < 0)
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
        const uint8_t *kb = t.keys + best[i] * t.klen;
        unpack_key(g, kb, &out->keys[i]);
        out->totals[i] = t.tot[best[i]];
        if (tab_slot(&look, kb, t.hash[best[i]], true, &rc) == SIZE_MAX)
            goto out;
        t.hash[best[i]] = 0;
    }
    for (size_t i = 0; i < t.cap; i++)
        if (t.hash[i])
            totals_merge(&out->totals[k], &t.tot[i]);
    out->k = k;
    idx = malloc(look.cap * sizeof *idx);
    if (!idx) {
        rc = NS_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < k; i++)
        idx[tab_slot(&look, t.keys + best[i] * t.klen, key_hash(t.keys + best[i] * t.klen, t.klen),
                     false, &rc)] = i;
    tab_free(&t);
    series_ctx c = {from_ms, step_ms, nbuckets, filter, out->series, &look, idx, k, t.deadline};
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
} dev_ctx;

static int dev_cb(void *arg, const eng_flow *rows, size_t n)
{
    dev_ctx *c = arg;
    int rc;
    if (past_deadline(c->deadline))
        return -ETIMEDOUT;
    for (size_t i = 0; i < n; i++) {
        const eng_flow *r = &rows[i];
        bool talker = memcmp(r->src.b, c->dev.b, 16) == 0;
        bool listener = memcmp(r->dst.b, c->dev.b, 16) == 0;
        if (!talker && !listener)
            continue; /* the index names blocks of rows, not rows */
        bool inside = r->last_ms >= c->from && r->first_ms <= c->to;
        if (talker)
            spread(c->sout, c->sfrom, c->step, c->nb, r);
        if (listener)
            spread(c->sin, c->sfrom, c->step, c->nb, r);
        if (!inside)
            continue; /* in the last bucket's tail only */
        if (talker)
            totals_add(&c->out, r);
        if (listener)
            totals_add(&c->in, r);
        for (int l = 0; l < QRY_DEV_NLISTS; l++) {
            bool mine = l < QRY_DEV_LISTENER_PEERS  ? talker
                        : l < QRY_DEV_CONVERSATIONS ? listener
                                                    : true;
            if (mine && (rc = tab_add(&c->tabs[l], r)) < 0)
                return rc;
        }
    }
    return 0;
}

static void dev_ctx_free(dev_ctx *c, bool series)
{
    for (int l = 0; l < QRY_DEV_NLISTS; l++)
        tab_free(&c->tabs[l]);
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
    for (int l = 0; rc == 0 && l < QRY_DEV_NLISTS; l++)
        if ((rc = tab_init(&c->tabs[l], &groups[l], NULL)) == 0)
            rc = tab_grow(&c->tabs[l]);
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
    eng_scan_opts so = {.addrs = dev, .naddrs = 1};
    int64_t end = from_ms + step_ms * (int64_t)nbuckets - 1;
    rc = eng_db_scan_par(db, from_ms, end > to_ms ? end : to_ms, mask, &so, ready, dev_cb, NULL,
                         args);
    /* merge every worker into the first */
    dev_ctx *c = &w[0];
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
    if (skip > QRY_FLOWS_MAX * 10ull) /* each scan worker keeps skip + limit rows */
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
    scan_opts(filter, &as);
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
