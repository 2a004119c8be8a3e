/* ingest/sflow.c — sFlow version 5 (sflow.org "sFlow Version 5", XDR encoded): the datagram
 * header, flow samples (0:1 and expanded 0:3) turned into one flow row each, and counter samples
 * (0:2 and expanded 0:4) whose generic interface counters (0:1) feed a per-exporter interface
 * table. Every sample and every record is read through its own cursor bounded by its declared
 * length, so a record we do not know is skipped and a length that lies is caught, never followed.
 *
 *   datagram  version(5) agent_type(1|2) agent(4|16) sub_agent seq uptime nsamples samples...
 *   sample    data_format(enterprise<<12|format) length data[length] (XDR: padded to 4)
 *   flow      seq source_id rate pool drops input output nrecords records...
 *   expanded  seq source_type source_index rate pool drops in_fmt in_val out_fmt out_val ...
 *   counters  seq source_id nrecords records...   (expanded: source_type source_index)
 *   record    data_format length data[length] */
#include "ingest/sflow.h"

#include "ingest/packet.h"

#include <inttypes.h>
#include <stdlib.h>
#include <xxhash.h>

/* sample formats (enterprise 0) */
enum { SF_FLOW = 1, SF_COUNTERS = 2, SF_FLOW_EXP = 3, SF_COUNTERS_EXP = 4 };
/* flow record formats (enterprise 0) */
enum { FR_HEADER = 1, FR_IPV4 = 3, FR_IPV6 = 4, FR_SWITCH = 1001, FR_ROUTER = 1002 };
/* counter record formats (enterprise 0) */
enum { CR_GENERIC_IF = 1 };

#define IF_LOCAL       0x3fffffffu /* "no interface": the agent itself sent or received it */
#define GENERIC_IF_LEN 88u         /* bytes of a generic interface counters record */

/* What one flow sample's records said, before it becomes a row. */
typedef struct fsample {
    eng_flow f;
    bool has_l3;     /* addresses etc. from a sampled header */
    bool has_ip_rec; /* ... or from sampled_ipv4 / sampled_ipv6 */
    bool has_frame;  /* frame_length from a sampled header */
    bool vlan_from_header;
    uint32_t frame_len;
    uint32_t ip_len;  /* length from sampled_ipv4 / sampled_ipv6 */
    uint32_t sw_vlan; /* extended_switch src_vlan */
    bool has_switch;
} fsample;

/* The datagram header fields a sample needs. */
typedef struct dgram {
    ns_addr agent;
    uint32_t sub_agent;
    int64_t recv_ms;
} dgram;

int ing__sflow_state_new(ing_sflow_state **out)
{
    ing_sflow_state *st = calloc(1, sizeof *st);
    if (!st)
        return NS_E_NOMEM;
    *out = st;
    return 0;
}

void ing__sflow_state_free(ing_sflow_state *st)
{
    free(st);
}

const char *ing__sflow_strerror(int rc)
{
    switch (rc) {
    case ING_E_SFLOW_AGENT:
        return "sFlow agent address type unknown";
    case ING_E_SFLOW_SAMPLES:
        return "sFlow datagram has too many samples";
    case ING_E_SFLOW_SAMPLE_LEN:
        return "sFlow sample length runs past the datagram";
    case ING_E_SFLOW_COUNT:
        return "sFlow datagram ends before its sample count";
    case ING_E_SFLOW_SAMPLE:
        return "sFlow sample fields do not fit its length";
    case ING_E_SFLOW_CAP:
        return "sFlow sample over a cap (records or header bytes)";
    default:
        return ing__packet_strerror(rc);
    }
}

/* Carves the next XDR opaque<> (format and length already read) and steps over its padding.
 * A datagram that ends right after an unpadded last item is accepted. */
static bool opaque(ns_cur *c, uint32_t len, ns_cur *out)
{
    if (!ns_cur_sub(c, len, out))
        return false;
    size_t pad = (4u - (len & 3u)) & 3u;
    ns_cur_skip(c, pad < c->left ? pad : c->left);
    return true;
}

/* Reads a data_format + length header and carves the item. */
static bool item(ns_cur *c, uint32_t *format, ns_cur *body)
{
    uint32_t len;
    ns_cur save = *c;
    if (ns_cur_u32(c, format) && ns_cur_u32(c, &len) && opaque(c, len, body))
        return true;
    *c = save;
    return false;
}

/* An sFlow address (type, then 0 / 4 / 16 bytes). false: unknown type or truncated. */
static bool address(ns_cur *c, ns_addr *a, bool *zero)
{
    uint32_t type, v4;
    static const ns_addr none;
    *a = none;
    if (!ns_cur_u32(c, &type))
        return false;
    switch (type) {
    case 0:
        *zero = true;
        return true; /* UNKNOWN: no address bytes */
    case 1:
        if (!ns_cur_u32(c, &v4))
            return false;
        ns_addr_from_v4(a, v4);
        *zero = v4 == 0;
        return true;
    case 2:
        if (!ns_cur_bytes(c, a->b, 16))
            return false;
        *zero = memcmp(a->b, none.b, 16) == 0;
        return true;
    default:
        return false;
    }
}

/* Finds or inserts the table entry of ifindex (sorted array, binary search). NULL: full. */
static ing_sflow_if *if_entry(ing_sflow_state *st, uint32_t ifindex)
{
    size_t lo = 0, hi = st->nifs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->ifs[mid].ifindex < ifindex)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < st->nifs && st->ifs[lo].ifindex == ifindex)
        return &st->ifs[lo];
    if (st->nifs == ING_SFLOW_MAX_IFS) {
        st->ifs_refused++;
        return NULL;
    }
    memmove(&st->ifs[lo + 1], &st->ifs[lo], (st->nifs - lo) * sizeof st->ifs[0]);
    st->nifs++;
    memset(&st->ifs[lo], 0, sizeof st->ifs[lo]);
    st->ifs[lo].ifindex = ifindex;
    return &st->ifs[lo];
}

/* ------------------------------------------------------------------------------------------ */
/* Flow records */

/* sampled_header: protocol, frame_length, stripped, header<>. frame_length is the packet's
 * original length (the spec: before stripping and sampling), so it is the byte count. */
static int rec_header(ing_sflow_state *st, ns_cur r, fsample *s)
{
    uint32_t proto, frame_len, stripped, hlen;
    ns_cur hdr;
    if (!ns_cur_u32(&r, &proto) || !ns_cur_u32(&r, &frame_len) || !ns_cur_u32(&r, &stripped) ||
        !ns_cur_u32(&r, &hlen))
        return ING_E_SFLOW_SAMPLE;
    if (hlen > ING_SFLOW_MAX_HEADER) {
        st->over_cap++;
        return ING_E_SFLOW_CAP;
    }
    if (!ns_cur_sub(&r, hlen, &hdr))
        return ING_E_SFLOW_SAMPLE;
    if (s->has_frame)
        return 0; /* a second header record: the first one describes the packet */
    s->has_frame = true;
    s->frame_len = frame_len;
    eng_flow p = {0};
    int rc = ing__packet_decode(hdr, proto, &p);
    if (p.vlan) {
        s->f.vlan = p.vlan;
        s->vlan_from_header = true;
    }
    if (rc == 0) {
        s->has_l3 = true;
        s->f.src = p.src;
        s->f.dst = p.dst;
        s->f.proto = p.proto;
        s->f.tos = p.tos;
        s->f.src_port = p.src_port;
        s->f.dst_port = p.dst_port;
        s->f.tcp_flags = p.tcp_flags;
    }
    return 0; /* a packet that is not IP is not a malformed sample */
}

/* sampled_ipv4 (32 bytes) / sampled_ipv6 (56 bytes): length, protocol, src, dst, src_port,
 * dst_port, tcp_flags, tos / priority. Used only when no sampled header gave the fields. */
static int rec_ip(ns_cur r, bool v6, fsample *s)
{
    uint32_t len, proto, sp, dp, flags, tos, a4;
    ns_addr src, dst;
    if (!ns_cur_u32(&r, &len) || !ns_cur_u32(&r, &proto))
        return ING_E_SFLOW_SAMPLE;
    if (v6) {
        if (!ns_cur_bytes(&r, src.b, 16) || !ns_cur_bytes(&r, dst.b, 16))
            return ING_E_SFLOW_SAMPLE;
    } else {
        if (!ns_cur_u32(&r, &a4))
            return ING_E_SFLOW_SAMPLE;
        ns_addr_from_v4(&src, a4);
        if (!ns_cur_u32(&r, &a4))
            return ING_E_SFLOW_SAMPLE;
        ns_addr_from_v4(&dst, a4);
    }
    if (!ns_cur_u32(&r, &sp) || !ns_cur_u32(&r, &dp) || !ns_cur_u32(&r, &flags) ||
        !ns_cur_u32(&r, &tos))
        return ING_E_SFLOW_SAMPLE;
    if (s->has_l3 || s->has_ip_rec)
        return 0;
    s->has_ip_rec = true;
    s->ip_len = len;
    s->f.src = src;
    s->f.dst = dst;
    s->f.proto = (uint8_t)proto;
    s->f.src_port = (uint16_t)sp;
    s->f.dst_port = (uint16_t)dp;
    s->f.tcp_flags = (uint8_t)flags;
    s->f.tos = (uint8_t)tos;
    return 0;
}

/* extended_switch: src_vlan, src_priority, dst_vlan, dst_priority. */
static int rec_switch(ns_cur r, fsample *s)
{
    uint32_t vlan;
    if (r.left < 16 || !ns_cur_u32(&r, &vlan))
        return ING_E_SFLOW_SAMPLE;
    s->has_switch = true;
    s->sw_vlan = vlan;
    return 0;
}

/* extended_router: next hop address, src_mask_len, dst_mask_len. */
static int rec_router(ns_cur r, fsample *s)
{
    ns_addr nh;
    bool zero = false;
    uint32_t sm, dm;
    if (!address(&r, &nh, &zero) || !ns_cur_u32(&r, &sm) || !ns_cur_u32(&r, &dm))
        return ING_E_SFLOW_SAMPLE;
    s->f.nexthop = nh;
    s->f.src_mask = (uint8_t)(sm > 128 ? 0 : sm);
    s->f.dst_mask = (uint8_t)(dm > 128 ? 0 : dm);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Samples */

/* Accumulates the agent's cumulative `drops` counter of one ifIndex data source: the first
 * value seen counts in full, then increases; a smaller value is a restarted agent. */
static void track_drops(ing_sflow_state *st, uint32_t ifindex, uint32_t drops)
{
    ing_sflow_if *e = if_entry(st, ifindex);
    if (!e)
        return;
    if (!e->has_drops || drops < e->drops)
        st->agent_drops += drops;
    else
        st->agent_drops += drops - e->drops;
    e->drops = drops;
    e->has_drops = true;
}

static uint32_t ifindex_of(uint32_t format, uint32_t value)
{
    /* format 1 = discarded (value is a reason), 2 = several interfaces (value is a count) */
    return format == 0 && value != IF_LOCAL ? value : 0;
}

static int flow_sample(ing_sflow_state *st, const dgram *d, ns_cur c, bool expanded, ing_batch *out)
{
    uint32_t sq = 0, src_type = 0, src_index = 0, rate = 0, pool = 0, drops = 0;
    uint32_t in_fmt = 0, in_val = 0, out_fmt = 0, out_val = 0, nrec = 0;
    bool ok;
    if (expanded) {
        ok = ns_cur_u32(&c, &sq) && ns_cur_u32(&c, &src_type) && ns_cur_u32(&c, &src_index) &&
             ns_cur_u32(&c, &rate) && ns_cur_u32(&c, &pool) && ns_cur_u32(&c, &drops) &&
             ns_cur_u32(&c, &in_fmt) && ns_cur_u32(&c, &in_val) && ns_cur_u32(&c, &out_fmt) &&
             ns_cur_u32(&c, &out_val);
    } else {
        uint32_t src = 0, in = 0, outp = 0;
        ok = ns_cur_u32(&c, &sq) && ns_cur_u32(&c, &src) && ns_cur_u32(&c, &rate) &&
             ns_cur_u32(&c, &pool) && ns_cur_u32(&c, &drops) && ns_cur_u32(&c, &in) &&
             ns_cur_u32(&c, &outp);
        src_type = src >> 24;
        src_index = src & 0x00ffffffu;
        in_fmt = in >> 30;
        in_val = in & 0x3fffffffu;
        out_fmt = outp >> 30;
        out_val = outp & 0x3fffffffu;
    }
    if (!ok || !ns_cur_u32(&c, &nrec)) {
        st->samples_bad++;
        return ING_E_SFLOW_SAMPLE;
    }
    if (nrec > ING_SFLOW_MAX_RECORDS) {
        st->over_cap++;
        return ING_E_SFLOW_CAP;
    }
    fsample s;
    memset(&s, 0, sizeof s);
    for (uint32_t i = 0; i < nrec; i++) {
        uint32_t fmt;
        ns_cur r;
        int rc = 0;
        if (!item(&c, &fmt, &r)) {
            st->samples_bad++;
            return ING_E_SFLOW_SAMPLE;
        }
        switch (fmt) { /* enterprise 0: the format number is the whole data_format */
        case FR_HEADER:
            rc = rec_header(st, r, &s);
            break;
        case FR_IPV4:
            rc = rec_ip(r, false, &s);
            break;
        case FR_IPV6:
            rc = rec_ip(r, true, &s);
            break;
        case FR_SWITCH:
            rc = rec_switch(r, &s);
            break;
        case FR_ROUTER:
            rc = rec_router(r, &s);
            break;
        default:
            st->records_skipped++;
            break;
        }
        if (rc == ING_E_SFLOW_SAMPLE)
            st->samples_bad++;
        if (rc < 0)
            return rc; /* cap errors were counted where they fired */
    }
    st->flow_samples++;
    if (src_type == 0)
        track_drops(st, src_index, drops);

    eng_flow *f = &s.f;
    /* src_vlan above 4095 is no VLAN id (agents send 0xffffffff for "unknown") */
    if (!s.vlan_from_header && s.has_switch && s.sw_vlan <= 0x0fffu)
        f->vlan = (uint16_t)s.sw_vlan;
    if (!s.has_l3 && !s.has_ip_rec)
        st->non_ip++;
    uint32_t sampling = rate ? rate : 1;
    uint32_t frame = s.has_frame ? s.frame_len : s.ip_len;
    f->first_ms = f->last_ms = d->recv_ms;
    f->exporter = d->agent;
    f->source_id = d->sub_agent;
    f->in_if = ifindex_of(in_fmt, in_val);
    f->out_if = ifindex_of(out_fmt, out_val);
    f->sampling = sampling;
    f->packets = sampling; /* one sampled packet stands for `rate` packets */
    f->bytes = (uint64_t)frame * sampling;
    f->flow_type = ENG_FT_SFLOW5;
    (void)sq;
    (void)pool;
    if (!ing_batch_room(out)) {
        st->rows_dropped++;
        return 0;
    }
    out->rows[out->n++] = *f;
    return 1;
}

/* generic interface counters: see GENERIC_IF_LEN; fields we keep are marked. */
static int rec_generic_if(ing_sflow_state *st, int64_t recv_ms, ns_cur r)
{
    uint32_t ifindex, type, dir, status, in_ucast, in_mc, in_bc, in_disc, in_err, in_unk;
    uint32_t out_ucast, out_mc, out_bc, out_disc, out_err;
    uint64_t speed, in_oct, out_oct;
    if (r.left < GENERIC_IF_LEN)
        return ING_E_SFLOW_SAMPLE;
    ns_cur_u32(&r, &ifindex); /* kept */
    ns_cur_u32(&r, &type);
    ns_cur_u64(&r, &speed); /* kept */
    ns_cur_u32(&r, &dir);
    ns_cur_u32(&r, &status);
    ns_cur_u64(&r, &in_oct);   /* kept */
    ns_cur_u32(&r, &in_ucast); /* kept */
    ns_cur_u32(&r, &in_mc);
    ns_cur_u32(&r, &in_bc);
    ns_cur_u32(&r, &in_disc);
    ns_cur_u32(&r, &in_err); /* kept */
    ns_cur_u32(&r, &in_unk);
    ns_cur_u64(&r, &out_oct);   /* kept */
    ns_cur_u32(&r, &out_ucast); /* kept */
    ns_cur_u32(&r, &out_mc);
    ns_cur_u32(&r, &out_bc);
    ns_cur_u32(&r, &out_disc);
    ns_cur_u32(&r, &out_err); /* kept; ifPromiscuousMode follows */
    ing_sflow_if *e = if_entry(st, ifindex);
    if (!e)
        return 0; /* counted in ifs_refused */
    e->speed = speed;
    e->in_octets = in_oct;
    e->out_octets = out_oct;
    e->in_ucast = in_ucast;
    e->out_ucast = out_ucast;
    e->in_errors = in_err;
    e->out_errors = out_err;
    e->has_counters = true;
    e->updated_ms = recv_ms;
    return 0;
}

static int counter_sample(ing_sflow_state *st, const dgram *d, ns_cur c, bool expanded)
{
    uint32_t sq, src, src_index, nrec;
    bool ok = ns_cur_u32(&c, &sq) && ns_cur_u32(&c, &src) &&
              (!expanded || ns_cur_u32(&c, &src_index)) && ns_cur_u32(&c, &nrec);
    if (!ok) {
        st->samples_bad++;
        return ING_E_SFLOW_SAMPLE;
    }
    if (nrec > ING_SFLOW_MAX_RECORDS) {
        st->over_cap++;
        return ING_E_SFLOW_CAP;
    }
    for (uint32_t i = 0; i < nrec; i++) {
        uint32_t fmt;
        ns_cur r;
        int rc = 0;
        if (!item(&c, &fmt, &r)) {
            st->samples_bad++;
            return ING_E_SFLOW_SAMPLE;
        }
        if (fmt == CR_GENERIC_IF)
            rc = rec_generic_if(st, d->recv_ms, r);
        else
            st->records_skipped++;
        if (rc < 0) {
            st->samples_bad++;
            return rc;
        }
    }
    st->counter_samples++;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Datagram */

int ing__sflow_decode(ing_sflow_state *st, const ns_addr *from, int64_t recv_ms, const uint8_t *pkt,
                      size_t len, ing_batch *out, uint32_t *seq, uint32_t *sub_agent)
{
    ns_cur c = ns_cur_make(pkt, len);
    uint32_t version, sq, sub, uptime, nsamples;
    dgram d = {.recv_ms = recv_ms};
    bool zero = false;
    uint64_t before = ing_batch_total(out);
    int bad = 0;
    *seq = 0;
    *sub_agent = 0;
    st->datagrams++;
    if (!ns_cur_u32(&c, &version)) {
        st->datagrams_bad++;
        return ING_E_SHORT;
    }
    if (version != 5) {
        st->datagrams_bad++;
        return ING_E_VERSION;
    }
    ns_cur peek = c;
    uint32_t atype = 0;
    if (ns_cur_u32(&peek, &atype) && atype > 2) {
        st->datagrams_bad++;
        return ING_E_SFLOW_AGENT;
    }
    if (!address(&c, &d.agent, &zero) || !ns_cur_u32(&c, &sub) || !ns_cur_u32(&c, &sq) ||
        !ns_cur_u32(&c, &uptime) || !ns_cur_u32(&c, &nsamples)) {
        st->datagrams_bad++;
        return ING_E_SHORT;
    }
    if (zero)
        d.agent = *from; /* the agent did not say who it is: the sender is the best guess */
    d.sub_agent = sub;
    *seq = sq;
    /* a relay forwards several agents from one address: the sequence is per (agent, sub-agent),
     * so the stream key covers both */
    uint8_t key[20];
    memcpy(key, d.agent.b, 16);
    memcpy(key + 16, &sub, 4);
    *sub_agent = XXH32(key, sizeof key, 0);
    if (nsamples > ING_SFLOW_MAX_SAMPLES) {
        st->datagrams_bad++;
        st->over_cap++;
        return ING_E_SFLOW_SAMPLES;
    }
    for (uint32_t i = 0; i < nsamples; i++) {
        uint32_t fmt, slen;
        ns_cur s;
        int rc;
        if (c.left == 0) {
            st->samples_bad++;
            bad = bad ? bad : ING_E_SFLOW_COUNT;
            break;
        }
        if (!ns_cur_u32(&c, &fmt) || !ns_cur_u32(&c, &slen) || !opaque(&c, slen, &s)) {
            st->samples_bad++; /* the rest of the datagram cannot be trusted to align */
            bad = bad ? bad : ING_E_SFLOW_SAMPLE_LEN;
            break;
        }
        switch (fmt) { /* enterprise (top 20 bits) 0: sflow.org formats */
        case SF_FLOW:
        case SF_FLOW_EXP:
            rc = flow_sample(st, &d, s, fmt == SF_FLOW_EXP, out);
            break;
        case SF_COUNTERS:
        case SF_COUNTERS_EXP:
            rc = counter_sample(st, &d, s, fmt == SF_COUNTERS_EXP);
            break;
        default:
            st->samples_skipped++;
            rc = 0;
            break;
        }
        if (rc < 0 && !bad)
            bad = rc;
    }
    (void)uptime;
    uint64_t added = ing_batch_total(out) - before;
    if (added == 0 && bad)
        return bad;
    return (int)added;
}

/* ------------------------------------------------------------------------------------------ */
/* Status */

static void put_ms(ns_buf *b, int64_t ms)
{
    if (ms <= 0)
        ns_buf_puts(b, "null");
    else
        ns_buf_printf(b, "%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
}

void ing__sflow_json(const ing_sflow_state *st, ns_buf *out)
{
    ns_buf_printf(out,
                  ",\"sflow\":{\"datagrams\":%" PRIu64 ",\"datagrams_bad\":%" PRIu64
                  ",\"flow_samples\":%" PRIu64 ",\"counter_samples\":%" PRIu64
                  ",\"samples_skipped\":%" PRIu64 ",\"records_skipped\":%" PRIu64
                  ",\"samples_bad\":%" PRIu64 ",\"over_cap\":%" PRIu64 ",\"non_ip\":%" PRIu64
                  ",\"rows_dropped\":%" PRIu64 ",\"agent_drops\":%" PRIu64
                  ",\"interfaces_refused\":%" PRIu64 ",\"interfaces\":[",
                  st->datagrams, st->datagrams_bad, st->flow_samples, st->counter_samples,
                  st->samples_skipped, st->records_skipped, st->samples_bad, st->over_cap,
                  st->non_ip, st->rows_dropped, st->agent_drops, st->ifs_refused);
    for (size_t i = 0; i < st->nifs; i++) {
        const ing_sflow_if *e = &st->ifs[i];
        ns_buf_printf(
            out,
            "%s{\"ifindex\":%" PRIu32 ",\"speed\":%" PRIu64 ",\"in_octets\":%" PRIu64
            ",\"out_octets\":%" PRIu64 ",\"in_ucast_pkts\":%" PRIu32 ",\"out_ucast_pkts\":%" PRIu32
            ",\"in_errors\":%" PRIu32 ",\"out_errors\":%" PRIu32 ",\"counters\":%s,\"drops\":",
            i ? "," : "", e->ifindex, e->speed, e->in_octets, e->out_octets, e->in_ucast,
            e->out_ucast, e->in_errors, e->out_errors, e->has_counters ? "true" : "false");
        if (e->has_drops)
            ns_buf_printf(out, "%" PRIu32, e->drops);
        else
            ns_buf_puts(out, "null");
        ns_buf_puts(out, ",\"updated\":");
        put_ms(out, e->updated_ms);
        ns_buf_puts(out, "}");
    }
    ns_buf_puts(out, "]}");
}
