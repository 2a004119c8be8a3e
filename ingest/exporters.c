/* ingest/exporters.c — the exporter table: per-address counters, per-stream sequence
 * tracking (gaps → estimated lost flows), rate-limited warnings, and the dispatch of a datagram
 * to its decoder. Decoding runs outside the table's mutex; only bookkeeping runs inside. */
#include "ingest/ingest_int.h"
#include "ingest/sflow.h"

#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

#define MAX_STREAMS  16       /* (version, source id) pairs tracked per exporter */
#define SEQ_MAX_JUMP 1000000u /* a larger forward jump is a restart, not loss */

typedef struct stream {
    uint32_t version;
    uint32_t source_id;
    uint32_t next_seq;
    bool resync; /* the last message's length in the sequence is unknown */
    bool used;
} stream;

typedef struct exporter {
    pthread_mutex_t mu; /* guards everything below; taken after the table's, never before */
    ing_exporter_stats st;
    stream streams[MAX_STREAMS];
    ns_ratelimit rl;
    ing_nfstate *nf;     /* v9/IPFIX templates and samplers, made on first use */
    ing_sflow_state *sf; /* sFlow counters and interface table, made on first use */
    bool used;
} exporter;

#define MAX_ALLOW NS_MAX_PREFIXES

struct ing_exporters {
    pthread_mutex_t mu;
    exporter *slots; /* open addressing by address */
    size_t cap, n, max;
    uint64_t overflow;
    ns_prefix allow[MAX_ALLOW]; /* set before traffic, read-only after */
    size_t nallow;
    _Atomic uint64_t refused;
};

const char *ing_strerror(int rc)
{
    switch (rc) {
    case ING_E_SHORT:
        return "datagram shorter than its header";
    case ING_E_VERSION:
        return "unsupported export version";
    case ING_E_COUNT:
        return "record count out of range";
    case ING_E_LENGTH:
        return "record count disagrees with datagram length";
    case ING_E_EXPORTERS:
        return "exporter table full";
    case ING_E_BATCH:
        return "batch full";
    case ING_E_SET_LEN:
        return "set length out of bounds";
    case ING_E_TEMPLATE:
        return "malformed template";
    case ING_E_CAP:
        return "per-exporter limit reached";
    case ING_E_NOT_ALLOWED:
        return "exporter not allowed";
    default:
        if (rc <= -11100 && rc >= -11199)
            return ing__sflow_strerror(rc);
        return ns_strerror(rc);
    }
}

int ing_exporters_new(size_t max_exporters, ing_exporters **out)
{
    ing_exporters *ex = calloc(1, sizeof *ex);
    if (!ex)
        return NS_E_NOMEM;
    ex->max = max_exporters ? max_exporters : 1;
    ex->cap = 16;
    while (ex->cap < ex->max * 2)
        ex->cap *= 2;
    ex->slots = calloc(ex->cap, sizeof *ex->slots);
    if (!ex->slots) {
        free(ex);
        return NS_E_NOMEM;
    }
    pthread_mutex_init(&ex->mu, NULL);
    *out = ex;
    return 0;
}

void ing_exporters_free(ing_exporters *ex)
{
    if (!ex)
        return;
    for (size_t i = 0; i < ex->cap; i++) {
        if (!ex->slots[i].used)
            continue;
        pthread_mutex_destroy(&ex->slots[i].mu);
        ing__nfstate_free(ex->slots[i].nf);
        ing__sflow_state_free(ex->slots[i].sf);
    }
    pthread_mutex_destroy(&ex->mu);
    free(ex->slots);
    free(ex);
}

int ing_exporters_allow(ing_exporters *ex, const char *prefixes)
{
    char tmp[1024];
    if (strlen(prefixes) >= sizeof tmp)
        return NS_E_RANGE;
    strcpy(tmp, prefixes);
    ex->nallow = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        if (ex->nallow == MAX_ALLOW)
            return NS_E_TOO_MANY;
        if (ns_prefix_parse(tok, &ex->allow[ex->nallow]) < 0)
            return NS_E_PARSE;
        ex->nallow++;
    }
    return 0;
}

uint64_t ing_exporters_refused(ing_exporters *ex)
{
    return ex->refused;
}

static bool allowed(const ing_exporters *ex, const ns_addr *a)
{
    if (ex->nallow == 0)
        return true;
    for (size_t i = 0; i < ex->nallow; i++)
        if (ns_prefix_match(&ex->allow[i], a))
            return true;
    return false;
}

/* The slot holding addr, or the empty slot where it would go. Caller holds mu. */
static exporter *probe_locked(ing_exporters *ex, const ns_addr *addr)
{
    size_t h = (size_t)XXH3_64bits(addr->b, 16) & (ex->cap - 1);
    while (ex->slots[h].used && memcmp(ex->slots[h].st.addr.b, addr->b, 16) != 0)
        h = (h + 1) & (ex->cap - 1);
    return &ex->slots[h];
}

/* Finds or creates the exporter for addr; NULL when the table is full. Caller holds mu. */
static exporter *lookup_locked(ing_exporters *ex, const ns_addr *addr, int64_t now_ms,
                               bool restoring)
{
    exporter *e = probe_locked(ex, addr);
    if (e->used)
        return e;
    if (ex->n >= ex->max)
        return NULL;
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    e->used = true;
    e->st.addr = *addr;
    e->st.first_seen_ms = now_ms;
    ex->n++;
    char a[64];
    if (!restoring)
        ns_log(NS_LOG_INFO, "exporter %s: first datagram", ns_addr_fmt(addr, a, sizeof a));
    return e;
}

size_t ing_exporters_list(ing_exporters *ex, ing_exporter_stats *out, size_t cap)
{
    size_t k = 0;
    pthread_mutex_lock(&ex->mu);
    for (size_t i = 0; i < ex->cap; i++) {
        if (!ex->slots[i].used)
            continue;
        if (k < cap) {
            pthread_mutex_lock(&ex->slots[i].mu);
            out[k] = ex->slots[i].st;
            const ing_sflow_state *sf = ex->slots[i].sf;
            if (sf) {
                out[k].sflow_datagrams_bad = sf->datagrams_bad;
                out[k].sflow_samples_bad = sf->samples_bad;
                out[k].sflow_over_cap = sf->over_cap;
            }
            pthread_mutex_unlock(&ex->slots[i].mu);
        }
        k++;
    }
    pthread_mutex_unlock(&ex->mu);
    return k;
}

uint64_t ing_exporters_overflow(ing_exporters *ex)
{
    pthread_mutex_lock(&ex->mu);
    uint64_t v = ex->overflow;
    pthread_mutex_unlock(&ex->mu);
    return v;
}

/* Checks a stream's sequence number. v5 counts flows: the next datagram should carry
 * seq + count. Returns the flows lost before this datagram (0 when in order). */
static uint32_t track_sequence(exporter *e, uint32_t version, uint32_t source_id, uint32_t seq,
                               uint32_t advance, bool known)
{
    stream *s = NULL;
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (e->streams[i].used && e->streams[i].version == version &&
            e->streams[i].source_id == source_id) {
            s = &e->streams[i];
            break;
        }
        if (!e->streams[i].used && !s) {
            s = &e->streams[i];
            s->used = true;
            s->version = version;
            s->source_id = source_id;
            s->next_seq = seq;
            break;
        }
    }
    if (!s)
        return 0; /* more streams than we track: no gap accounting for the rest */
    uint32_t diff = s->resync ? 0 : seq - s->next_seq; /* modulo 2^32: wraps are in order */
    s->next_seq = seq + advance;
    s->resync = !known; /* the next message starts a fresh count */
    if (diff == 0)
        return 0;
    if (diff < SEQ_MAX_JUMP) {
        e->st.seq_gaps++;
        return diff;
    }
    e->st.seq_resets++; /* went backwards (restart, reorder) or jumped absurdly */
    return 0;
}

/* Counts `flows` decoded at sampling rate `rate` among the exporter's rates in use. */
static void note_rate(ing_exporter_stats *st, uint32_t rate, uint64_t flows)
{
    uint32_t i, least = 0;
    if (rate == 0)
        rate = 1;
    st->sampling = rate;
    for (i = 0; i < st->nrates; i++) {
        if (st->rates[i] == rate) {
            st->rate_flows[i] += flows;
            return;
        }
        if (st->rate_flows[i] < st->rate_flows[least])
            least = i;
    }
    i = st->nrates < ING_MAX_RATES ? st->nrates++ : least;
    st->rates[i] = rate;
    st->rate_flows[i] = flows;
}

/* The rates of the rows a datagram added that are still in the batch (a batch handed on
 * mid-datagram takes the first ones with it: they go uncounted here). */
static void note_rates(ing_exporter_stats *st, const ing_batch *out, uint64_t added)
{
    size_t n = added < out->n ? (size_t)added : out->n;
    /* a run of rows at one rate (a whole datagram, usually) is one note */
    for (size_t i = out->n - n; i < out->n;) {
        size_t j = i + 1;
        while (j < out->n && out->rows[j].sampling == out->rows[i].sampling)
            j++;
        note_rate(st, out->rows[i].sampling, j - i);
        i = j;
    }
}

static void warn_locked(exporter *e, int64_t now_ms, const char *what, int rc)
{
    uint32_t held;
    char a[64];
    if (!ns_log_enabled(NS_LOG_WARN) || !ns_ratelimit_ok(&e->rl, now_ms, &held))
        return;
    if (held)
        ns_log_(NS_LOG_WARN, "exporter %s: %s: %s (%u similar warnings suppressed)",
                ns_addr_fmt(&e->st.addr, a, sizeof a), what, ing_strerror(rc), held);
    else
        ns_log_(NS_LOG_WARN, "exporter %s: %s: %s", ns_addr_fmt(&e->st.addr, a, sizeof a), what,
                ing_strerror(rc));
}

/* Decodes the v5 PDUs of one datagram into out; fills hs[0..*npdu). The first PDU's error is
 * the datagram's; a later PDU's error is returned in *tail_rc and the PDUs before it are kept. */
static int decode_v5_pdus(const uint8_t *pkt, size_t len, const ns_addr *from, ing_batch *out,
                          ing_v5_hdr *hs, size_t maxpdu, size_t *npdu, int *tail_rc)
{
    ns_cur c = ns_cur_make(pkt, len);
    *npdu = 0;
    *tail_rc = 0;
    while (*npdu < maxpdu) {
        ns_cur peek = c;
        uint16_t version;
        if (*npdu > 0 && (c.left < ING_V5_HDR || !ns_cur_u16(&peek, &version) || version != 5))
            break; /* the rest is padding */
        int rc = ing_v5_decode(c.p, c.left, from, out, &hs[*npdu]);
        if (rc < 0) {
            if (*npdu == 0 || rc == ING_E_BATCH)
                return rc;
            *tail_rc = rc;
            break;
        }
        ns_cur_skip(&c, hs[*npdu].pdu_len);
        (*npdu)++;
    }
    return 0;
}

int ing_decode(ing_exporters *ex, const ns_addr *from, int64_t recv_ms, const uint8_t *pkt,
               size_t len, ing_batch *out)
{
    enum { MAX_PDUS = 64 };
    ns_cur c = ns_cur_make(pkt, len);
    uint16_t version = 0;
    ing_v5_hdr hs[MAX_PDUS];
    size_t npdu = 0, before = out->n;
    uint64_t before_total = ing_batch_total(out); /* v9/IPFIX/sFlow may flush the batch */
    int rc, tail_rc = 0;

    if (!allowed(ex, from)) {
        ex->refused++; /* no table entry: a spoofing flood cannot fill the table */
        return ING_E_NOT_ALLOWED;
    }
    /* v5 is stateless: decode before taking any lock, so a full batch is retried cleanly */
    bool sflow = false;
    if (!ns_cur_u16(&c, &version)) {
        rc = ING_E_SHORT;
    } else if (version == 5) {
        rc = decode_v5_pdus(pkt, len, from, out, hs, MAX_PDUS, &npdu, &tail_rc);
    } else if (version == 0) {
        /* sFlow starts with a 32-bit version: 0x00000005 */
        uint16_t low = 0;
        sflow = ns_cur_u16(&c, &low) && low == 5;
        rc = sflow ? 0 : ING_E_VERSION;
        if (sflow)
            version = ENG_FT_SFLOW5;
    } else {
        rc = version == 9 || version == 10 ? 0 : ING_E_VERSION;
    }
    if (rc == ING_E_BATCH) {
        out->n = before; /* the caller flushes and retries: not the exporter's fault */
        return rc;
    }

    pthread_mutex_lock(&ex->mu);
    exporter *e = lookup_locked(ex, from, recv_ms, false);
    if (!e)
        ex->overflow++;
    pthread_mutex_unlock(&ex->mu);
    if (!e) {
        out->n = before;
        return ING_E_EXPORTERS;
    }
    pthread_mutex_lock(&e->mu);
    e->st.datagrams++;
    e->st.bytes += len;
    e->st.last_seen_ms = recv_ms;
    e->st.last_version = version;
    if (rc == 0 && sflow) {
        uint32_t seq = 0, sub = 0;
        if (!e->sf && ing__sflow_state_new(&e->sf) < 0) {
            rc = NS_E_NOMEM;
        } else {
            rc = ing__sflow_decode(e->sf, from, recv_ms, pkt, len, out, &seq, &sub);
            /* sFlow sequence numbers count datagrams, per sub-agent */
            if (rc != ING_E_SHORT && rc != ING_E_VERSION && rc != ING_E_SFLOW_AGENT)
                e->st.lost_datagrams += track_sequence(e, ENG_FT_SFLOW5, sub, seq, 1, true);
            note_rates(&e->st, out, ing_batch_total(out) - before_total);
            if (rc > 0)
                rc = 0;
        }
    } else if (rc == 0 && (version == 9 || version == 10)) {
        uint32_t seq = 0, domain = 0;
        if (!e->nf)
            e->nf = calloc(1, sizeof *e->nf);
        if (!e->nf) {
            rc = NS_E_NOMEM;
        } else {
            ing_nfctx nc = {
                .nf = e->nf, .st = &e->st, .exporter = from, .recv_ms = recv_ms, .out = out};
            rc = version == 9 ? ing__v9_decode(&nc, pkt, len, &seq, &domain)
                              : ing__ipfix_decode(&nc, pkt, len, &seq, &domain);
            if (rc >= 0 || rc == ING_E_SET_LEN || rc == ING_E_TEMPLATE || rc == ING_E_CAP) {
                /* IPFIX counts records; a held set's count is unknown until its template
                 * comes, so that message resynchronises the stream instead */
                bool known = version == 9 || !nc.records_unknown;
                uint32_t gap = track_sequence(e, version, domain, seq,
                                              version == 9 ? 1u : (uint32_t)nc.records, known);
                note_rates(&e->st, out, ing_batch_total(out) - before_total);
                if (version == 9)
                    e->st.lost_datagrams += gap;
                else
                    e->st.lost_flows += gap;
            }
            if (rc > 0)
                rc = 0;
        }
    }
    /* an sFlow agent whose every datagram has a bad sample is still an sFlow agent: its
     * "sflow" counters (datagrams_bad, samples_bad, over_cap) must show up */
    if ((rc >= 0 || npdu > 0 || (sflow && rc != ING_E_SFLOW_AGENT)) && rc != ING_E_SHORT &&
        rc != ING_E_LENGTH && rc != ING_E_VERSION)
        e->st.protocols |= version == 5               ? ING_PROTO_V5
                           : version == 9             ? ING_PROTO_V9
                           : version == 10            ? ING_PROTO_IPFIX
                           : version == ENG_FT_SFLOW5 ? ING_PROTO_SFLOW
                                                      : 0u;
    e->st.flows += ing_batch_total(out) - before_total;
    for (size_t i = 0; i < npdu; i++) {
        note_rate(&e->st, hs[i].sampling_interval > 1 ? hs[i].sampling_interval : 1, hs[i].count);
        e->st.lost_flows += track_sequence(e, 5, (uint32_t)hs[i].engine_type << 8 | hs[i].engine_id,
                                           hs[i].flow_sequence, hs[i].count, true);
    }
    int err = rc < 0 ? rc : tail_rc;
    switch (err) {
    case ING_E_SHORT:
        e->st.err_short++;
        break;
    case ING_E_VERSION:
        e->st.err_version++;
        break;
    case ING_E_COUNT:
        e->st.err_count++;
        break;
    case ING_E_LENGTH:
        e->st.err_length++;
        break;
    default:
        break; /* set, template and cap errors were counted by the decoder */
    }
    if (err < 0) {
        char what[80];
        if (rc < 0)
            snprintf(what, sizeof what, "version %u datagram of %zu bytes dropped", version, len);
        else
            snprintf(what, sizeof what, "v5 PDU %zu of a %zu-byte datagram dropped", npdu + 1, len);
        warn_locked(e, recv_ms, what, err);
    }
    pthread_mutex_unlock(&e->mu);
    return rc < 0 ? rc : (int)(ing_batch_total(out) - before_total);
}

/* The sFlow counters and interface table of one exporter, as `,"sflow":{...}`. */
static void sflow_json(ing_exporters *ex, const ns_addr *addr, ns_buf *out)
{
    pthread_mutex_lock(&ex->mu);
    exporter *e = probe_locked(ex, addr);
    if (e->used) {
        pthread_mutex_lock(&e->mu);
        if (e->sf)
            ing__sflow_json(e->sf, out);
        pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_unlock(&ex->mu);
}

static void put_ms(ns_buf *b, int64_t ms)
{
    ns_buf_printf(b, "%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
}

void ing_exporters_json(ing_exporters *ex, ns_buf *out)
{
    size_t n = ing_exporters_list(ex, NULL, 0);
    ing_exporter_stats *st = malloc((n ? n : 1) * sizeof *st);
    if (!st) {
        out->oom = true;
        return;
    }
    size_t got = ing_exporters_list(ex, st, n); /* the table may have grown meanwhile */
    n = got < n ? got : n;
    ns_buf_puts(out, "[");
    for (size_t i = 0; i < n; i++) {
        char a[64];
        const ing_exporter_stats *e = &st[i];
        ns_buf_puts(out, i ? ",{\"address\":" : "{\"address\":");
        ns_buf_json_str(out, ns_addr_fmt(&e->addr, a, sizeof a));
        static const char *const pnames[] = {"netflow5", "netflow9", "ipfix", "sflow5"};
        ns_buf_puts(out, ",\"protocols\":[");
        for (int k = 0, first = 1; k < 4; k++) {
            if (!(e->protocols & (1u << k)))
                continue;
            ns_buf_puts(out, first ? "\"" : ",\"");
            ns_buf_puts(out, pnames[k]);
            ns_buf_puts(out, "\"");
            first = 0;
        }
        ns_buf_puts(out, "]");
        ns_buf_printf(out,
                      ",\"version\":%u,\"datagrams\":%" PRIu64 ",\"bytes\":%" PRIu64
                      ",\"flows\":%" PRIu64 ",\"sampling\":%u,\"sequence_gaps\":%" PRIu64
                      ",\"lost_flows\":%" PRIu64 ",\"lost_datagrams\":%" PRIu64
                      ",\"sequence_resets\":%" PRIu64 ",\"errors\":{\"short\":%" PRIu64
                      ",\"version\":%" PRIu64 ",\"count\":%" PRIu64 ",\"length\":%" PRIu64
                      ",\"set\":%" PRIu64 ",\"template\":%" PRIu64 "}",
                      e->last_version, e->datagrams, e->bytes, e->flows, e->sampling, e->seq_gaps,
                      e->lost_flows, e->lost_datagrams, e->seq_resets, e->err_short, e->err_version,
                      e->err_count, e->err_length, e->err_set, e->template_errors);
        ns_buf_puts(out, ",\"sampling_rates\":[");
        for (uint32_t k = 0; k < e->nrates; k++)
            ns_buf_printf(out, "%s{\"rate\":%u,\"flows\":%" PRIu64 "}", k ? "," : "", e->rates[k],
                          e->rate_flows[k]);
        ns_buf_puts(out, "]");
        ns_buf_printf(
            out,
            ",\"templates\":{\"known\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"withdrawn\":%" PRIu64
            ",\"options_records\":%" PRIu64 "},\"held\":{\"misses\":%" PRIu64
            ",\"decoded\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"dropped\":%" PRIu64
            "},\"rows_dropped\":%" PRIu64 ",\"first_seen\":",
            e->templates, e->templates_refused, e->template_withdrawals, e->options_records,
            e->template_misses, e->held_decoded, e->held_expired, e->held_dropped, e->rows_dropped);
        put_ms(out, e->first_seen_ms);
        ns_buf_puts(out, ",\"last_seen\":");
        put_ms(out, e->last_seen_ms);
        if (e->protocols & ING_PROTO_SFLOW)
            sflow_json(ex, &e->addr, out);
        ns_buf_puts(out, "}");
    }
    ns_buf_puts(out, "]");
    free(st);
}

/* One counter family over every exporter. */
typedef struct prom_metric {
    const char *name, *type, *help;
    size_t off; /* of a uint64_t in ing_exporter_stats */
} prom_metric;

void ing_exporters_prometheus(ing_exporters *ex, ns_buf *out)
{
#define M(n, t, h, f)                                                                              \
    {                                                                                              \
        n, t, h, offsetof(ing_exporter_stats, f)                                                   \
    }
    static const prom_metric metrics[] = {
        M("ns2flows_exporter_datagrams_total", "counter", "Datagrams from the exporter.",
          datagrams),
        M("ns2flows_exporter_flows_total", "counter", "Flows decoded.", flows),
        M("ns2flows_exporter_sequence_gaps_total", "counter", "Forward sequence jumps.", seq_gaps),
        M("ns2flows_exporter_lost_flows_total", "counter", "Flows never received (sequence).",
          lost_flows),
        M("ns2flows_exporter_lost_datagrams_total", "counter",
          "v9 packets never received (sequence).", lost_datagrams),
        M("ns2flows_exporter_templates", "gauge", "Templates known.", templates),
        M("ns2flows_exporter_template_misses_total", "counter",
          "Data sets that arrived before their template.", template_misses),
        M("ns2flows_exporter_held_decoded_total", "counter",
          "Held data sets decoded once their template came.", held_decoded),
        M("ns2flows_exporter_held_expired_total", "counter",
          "Held data sets that expired waiting for a template.", held_expired),
        M("ns2flows_exporter_held_dropped_total", "counter", "Data sets over the holding caps.",
          held_dropped),
    };
    static const prom_metric errors[] = {
        M("short", "", "", err_short),
        M("version", "", "", err_version),
        M("count", "", "", err_count),
        M("length", "", "", err_length),
        M("set", "", "", err_set),
        M("template", "", "", template_errors),
        M("refused", "", "", templates_refused),
        M("sflow_datagram", "", "", sflow_datagrams_bad),
        M("sflow_sample", "", "", sflow_samples_bad),
        M("sflow_cap", "", "", sflow_over_cap),
    };
#undef M
    size_t n = ing_exporters_list(ex, NULL, 0);
    ing_exporter_stats *st = malloc((n ? n : 1) * sizeof *st);
    char(*addr)[64] = malloc((n ? n : 1) * sizeof *addr);
    if (!st || !addr) {
        free(st);
        free(addr);
        out->oom = true;
        return;
    }
    size_t got = ing_exporters_list(ex, st, n); /* the table may have grown meanwhile */
    n = got < n ? got : n;
    for (size_t i = 0; i < n; i++)
        ns_addr_fmt(&st[i].addr, addr[i], sizeof addr[i]);
    for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
        ns_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", metrics[m].name, metrics[m].help,
                      metrics[m].name, metrics[m].type);
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&st[i] + metrics[m].off, sizeof v);
            ns_buf_printf(out, "%s{exporter=\"%s\"} %" PRIu64 "\n", metrics[m].name, addr[i], v);
        }
    }
    ns_buf_puts(out, "# HELP ns2flows_exporter_decode_errors_total Datagrams or sets dropped, "
                     "by cause.\n# TYPE ns2flows_exporter_decode_errors_total counter\n");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof errors / sizeof errors[0]; k++) {
            uint64_t v;
            memcpy(&v, (const char *)&st[i] + errors[k].off, sizeof v);
            ns_buf_printf(out,
                          "ns2flows_exporter_decode_errors_total{exporter=\"%s\",kind=\"%s\"} "
                          "%" PRIu64 "\n",
                          addr[i], errors[k].name, v);
        }
    }
    ns_buf_puts(out, "# HELP ns2flows_exporter_sampling_rate Last sampling rate seen.\n"
                     "# TYPE ns2flows_exporter_sampling_rate gauge\n");
    for (size_t i = 0; i < n; i++)
        ns_buf_printf(out, "ns2flows_exporter_sampling_rate{exporter=\"%s\"} %u\n", addr[i],
                      st[i].sampling);
    ns_buf_puts(out, "# HELP ns2flows_exporter_last_seen_seconds Time of the last datagram.\n"
                     "# TYPE ns2flows_exporter_last_seen_seconds gauge\n");
    for (size_t i = 0; i < n; i++)
        ns_buf_printf(out, "ns2flows_exporter_last_seen_seconds{exporter=\"%s\"} %.3f\n", addr[i],
                      (double)st[i].last_seen_ms / 1000.0);
    free(st);
    free(addr);
}

/* ------------------------------------------------------------------------------------------ */
/* Template state image. Little-endian, like every file of ours:
 *   "NS2FTPL\0" u32 version(1) u32 exporters
 *   per exporter: addr[16] i64 sys_init_ms u32 templates u32 samplers
 *     per template: u32 domain u16 id u8 version u8 options u16 scope u16 nfields
 *                   nfields x (u16 ie u16 len u32 pen)
 *     per sampler: u32 domain u64 id u32 rate
 *   u64 xxh64 of everything before it */
#define TPL_MAGIC "NS2FTPL"

static void put16(ns_buf *b, uint16_t v)
{
    uint8_t x[2];
    ns_put_le16(x, v);
    ns_buf_append(b, x, 2);
}
static void put32(ns_buf *b, uint32_t v)
{
    uint8_t x[4];
    ns_put_le32(x, v);
    ns_buf_append(b, x, 4);
}
static void put64(ns_buf *b, uint64_t v)
{
    uint8_t x[8];
    ns_put_le64(x, v);
    ns_buf_append(b, x, 8);
}

bool ing_exporters_dirty(ing_exporters *ex)
{
    bool dirty = false;
    pthread_mutex_lock(&ex->mu);
    for (size_t i = 0; i < ex->cap && !dirty; i++) {
        exporter *e = &ex->slots[i];
        if (!e->used)
            continue;
        pthread_mutex_lock(&e->mu);
        dirty = e->nf && e->nf->dirty;
        pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_unlock(&ex->mu);
    return dirty;
}

void ing_exporters_save(ing_exporters *ex, ns_buf *out)
{
    size_t start = out->len, count_at;
    uint32_t count = 0;
    ns_buf_append(out, TPL_MAGIC "", 8);
    put32(out, 1);
    count_at = out->len;
    put32(out, 0);
    pthread_mutex_lock(&ex->mu);
    for (size_t i = 0; i < ex->cap; i++) {
        exporter *e = &ex->slots[i];
        if (!e->used)
            continue;
        pthread_mutex_lock(&e->mu);
        if (e->nf && (e->nf->ntmpls || e->nf->nsamplers)) {
            ing_nfstate *nf = e->nf;
            ns_buf_append(out, e->st.addr.b, 16);
            put64(out, (uint64_t)nf->sys_init_ms);
            put32(out, (uint32_t)nf->ntmpls);
            put32(out, (uint32_t)nf->nsamplers);
            for (size_t t = 0; t < nf->ntmpls; t++) {
                const ing_tmpl *tp = nf->tmpls[t];
                put32(out, tp->domain);
                put16(out, tp->id);
                uint8_t vo[2] = {tp->version, tp->options ? 1 : 0};
                ns_buf_append(out, vo, 2);
                put16(out, tp->scope_count);
                put16(out, tp->nfields);
                for (uint16_t f = 0; f < tp->nfields; f++) {
                    put16(out, tp->f[f].ie);
                    put16(out, tp->f[f].len);
                    put32(out, tp->f[f].pen);
                }
            }
            for (size_t k = 0; k < nf->nsamplers; k++) {
                put32(out, nf->samplers[k].domain);
                put64(out, nf->samplers[k].id);
                put32(out, nf->samplers[k].rate);
            }
            count++;
        }
        if (e->nf)
            e->nf->dirty = false;
        pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_unlock(&ex->mu);
    if (out->oom)
        return;
    ns_put_le32((uint8_t *)out->p + count_at, count);
    put64(out, XXH64(out->p + start, out->len - start, 0));
}

/* Reads one template from the image into a new allocation. */
static int load_tmpl(ns_cur *c, ing_tmpl **out)
{
    uint32_t domain;
    uint16_t id, scope, nfields;
    uint8_t version, options;
    if (!ns_cur_le32(c, &domain) || !ns_cur_le16(c, &id) || !ns_cur_u8(c, &version) ||
        !ns_cur_u8(c, &options) || !ns_cur_le16(c, &scope) || !ns_cur_le16(c, &nfields))
        return NS_E_CORRUPT;
    if ((version != 9 && version != 10) || nfields == 0 || nfields > ING_MAX_FIELDS ||
        scope > nfields || id < 256)
        return NS_E_CORRUPT;
    ing_tmpl *t = calloc(1, sizeof *t + (size_t)nfields * sizeof t->f[0]);
    if (!t)
        return NS_E_NOMEM;
    t->domain = domain;
    t->id = id;
    t->version = version;
    t->options = options != 0;
    t->scope_count = scope;
    t->nfields = nfields;
    for (uint16_t f = 0; f < nfields; f++) {
        if (!ns_cur_le16(c, &t->f[f].ie) || !ns_cur_le16(c, &t->f[f].len) ||
            !ns_cur_le32(c, &t->f[f].pen)) {
            free(t);
            return NS_E_CORRUPT;
        }
        t->min_len += t->f[f].len == 65535 ? 1u : t->f[f].len;
    }
    *out = t;
    return 0;
}

int ing_exporters_load(ing_exporters *ex, const uint8_t *buf, size_t len)
{
    ns_cur c = ns_cur_make(buf, len), body;
    uint8_t magic[8];
    uint32_t version, count;
    uint64_t sum;
    if (len < 24)
        return NS_E_TRUNC;
    ns_cur_sub(&c, len - 8, &body);
    ns_cur_le64(&c, &sum);
    if (XXH64(buf, len - 8, 0) != sum)
        return NS_E_CORRUPT; /* the whole image or nothing: never half a template table */
    ns_cur_bytes(&body, magic, 8);
    if (memcmp(magic, TPL_MAGIC, 8) != 0)
        return NS_E_MAGIC;
    ns_cur_le32(&body, &version);
    ns_cur_le32(&body, &count);
    if (version != 1)
        return NS_E_VERSION;
    int loaded = 0;
    for (uint32_t i = 0; i < count; i++) {
        ns_addr a;
        uint64_t init;
        uint32_t ntmpl, nsamp;
        if (!ns_cur_bytes(&body, a.b, 16) || !ns_cur_le64(&body, &init) ||
            !ns_cur_le32(&body, &ntmpl) || !ns_cur_le32(&body, &nsamp) ||
            ntmpl > ING_MAX_TEMPLATES || nsamp > ING_MAX_SAMPLERS)
            return NS_E_CORRUPT;
        pthread_mutex_lock(&ex->mu);
        exporter *e = lookup_locked(ex, &a, ns_now_ms(), true);
        pthread_mutex_unlock(&ex->mu);
        if (!e)
            return ING_E_EXPORTERS;
        pthread_mutex_lock(&e->mu);
        int rc = 0;
        if (!e->nf)
            e->nf = calloc(1, sizeof *e->nf);
        if (!e->nf)
            rc = NS_E_NOMEM;
        for (uint32_t t = 0; rc == 0 && t < ntmpl; t++) {
            ing_tmpl *tp;
            rc = load_tmpl(&body, &tp);
            if (rc == 0 && ing__nfstate_add_loaded(e->nf, tp) == 0)
                e->st.templates = e->nf->ntmpls;
        }
        for (uint32_t k = 0; rc == 0 && k < nsamp; k++) {
            ing_sampler s;
            if (!ns_cur_le32(&body, &s.domain) || !ns_cur_le64(&body, &s.id) ||
                !ns_cur_le32(&body, &s.rate) || s.rate == 0)
                rc = NS_E_CORRUPT;
            else if (e->nf->nsamplers < ING_MAX_SAMPLERS)
                e->nf->samplers[e->nf->nsamplers++] = s;
        }
        if (rc == 0)
            e->nf->sys_init_ms = (int64_t)init;
        pthread_mutex_unlock(&e->mu);
        if (rc < 0)
            return rc;
        loaded++;
    }
    return body.left == 0 ? loaded : NS_E_CORRUPT;
}
