/* ingest/templates.c — what NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) share: template and
 * options-template records, the per-exporter template store, data records decoded through a
 * template into flow rows (IANA IEs, RFC 7012), sampler tables from options data, RFC 5103
 * reverse counters as a second row, and data held while its template has not arrived yet. */
#include "ingest/ingest_int.h"
#include "ingest/packet.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define PEN_REVERSE    29305u /* RFC 5103 reverse information elements */
#define NTP_UNIX_DELTA 2208988800LL

void ing__nfstate_free(ing_nfstate *nf)
{
    if (!nf)
        return;
    for (size_t i = 0; i < nf->ntmpls; i++)
        free(nf->tmpls[i]);
    for (size_t i = 0; i < nf->npending; i++)
        free(nf->pending[i]);
    free(nf);
}

static ing_tmpl *find_tmpl(ing_nfstate *nf, uint8_t version, uint32_t domain, uint16_t id,
                           size_t *idx)
{
    for (size_t i = 0; i < nf->ntmpls; i++) {
        ing_tmpl *t = nf->tmpls[i];
        if (t->id == id && t->domain == domain && t->version == version) {
            if (idx)
                *idx = i;
            return t;
        }
    }
    return NULL;
}

static void remove_tmpl(ing_nfctx *c, size_t i)
{
    free(c->nf->tmpls[i]);
    c->nf->tmpls[i] = c->nf->tmpls[--c->nf->ntmpls];
    c->st->templates = c->nf->ntmpls;
    c->nf->dirty = true;
}

/* ------------------------------------------------------------------------------------------ */
/* Values */

static uint64_t uval(ns_cur v)
{
    uint64_t x = 0;
    uint8_t b;
    uint16_t x16;
    uint32_t x32;
    /* the usual widths in one load each (a third of a v9 decode went to the byte loop) */
    switch (v.left) {
    case 1:
        return ns_cur_u8(&v, &b) ? b : 0;
    case 2:
        return ns_cur_u16(&v, &x16) ? x16 : 0;
    case 4:
        return ns_cur_u32(&v, &x32) ? x32 : 0;
    case 8:
        return ns_cur_u64(&v, &x) ? x : 0;
    default:
        break;
    }
    if (v.left > 8)
        ns_cur_skip(&v, v.left - 8); /* keep the low 8 bytes of an oversized counter */
    while (ns_cur_u8(&v, &b))
        x = x << 8 | b;
    return x;
}

static bool addr_val(ns_cur v, ns_addr *a)
{
    if (v.left == 4) {
        uint32_t x;
        ns_cur_u32(&v, &x);
        ns_addr_from_v4(a, x);
        return true;
    }
    if (v.left == 16)
        return ns_cur_bytes(&v, a->b, 16);
    return false;
}

/* Times an exporter sends are clamped to 0000..9999 AD so no arithmetic on them overflows. */
#define MAX_MS 253402300799999LL

static int64_t clamp_ms(uint64_t v, uint64_t mul)
{
    if (v > (uint64_t)MAX_MS / mul)
        return MAX_MS;
    return (int64_t)(v * mul);
}

static int64_t ntp_to_ms(ns_cur v)
{
    uint32_t sec = 0, frac = 0;
    ns_cur_u32(&v, &sec);
    ns_cur_u32(&v, &frac);
    return ((int64_t)sec - NTP_UNIX_DELTA) * 1000 + (int64_t)(((uint64_t)frac * 1000) >> 32);
}

/* What one data or options record said, before it becomes a row. */
typedef struct rec {
    eng_flow f;
    uint64_t bytes, packets, tot_bytes, tot_packets, init_bytes, init_packets;
    uint64_t rev_bytes, rev_packets;
    bool has_bytes, has_packets, has_tot_bytes, has_tot_packets, has_init;
    ns_addr src4, dst4, src6, dst6; /* both families may be in one template */
    bool has_src4, has_dst4, has_src6, has_dst6, has_nh;
    int64_t start_ms, end_ms; /* absolute, when given */
    bool has_start, has_end;
    uint64_t up_first, up_last; /* sysUptime-relative ms (21/22) */
    bool has_up_first, has_up_last;
    uint64_t delta_start_us, delta_end_us; /* 158/159: before export time */
    bool has_delta_start, has_delta_end;
    int64_t obs_ms;
    bool has_obs;
    uint32_t icmp;
    bool has_icmp;
    uint64_t sampler_id;
    bool has_sampler_id;
    uint64_t rate; /* from the record itself, 0 = none */
    uint64_t pkt_interval, pkt_space, smp_size, smp_pop;
    int64_t sys_init_ms;
    ns_cur frame; /* dataLinkFrameSection (315) or ipHeaderPacketSection (313) */
    uint32_t frame_proto;
    uint64_t frame_size; /* dataLinkFrameSize (312) */
    bool has_frame, has_frame_size;
} rec;

/* Applies one field's value to the record. */
static void apply_field(rec *r, const ing_tmpl_field *fd, ns_cur v)
{
    eng_flow *f = &r->f;
    if (fd->pen == PEN_REVERSE) {
        if (fd->ie == 1 || fd->ie == 85)
            r->rev_bytes = uval(v);
        else if (fd->ie == 2 || fd->ie == 86)
            r->rev_packets = uval(v);
        return;
    }
    if (fd->pen != 0)
        return; /* other enterprises: skipped by their length */
    switch (fd->ie) {
    case 1:
        r->bytes = uval(v);
        r->has_bytes = true;
        break;
    case 2:
        r->packets = uval(v);
        r->has_packets = true;
        break;
    case 85:
        r->tot_bytes = uval(v);
        r->has_tot_bytes = true;
        break;
    case 86:
        r->tot_packets = uval(v);
        r->has_tot_packets = true;
        break;
    case 231:
        r->init_bytes = uval(v);
        r->has_init = true;
        break; /* ASA initiatorOctets */
    case 298:
        r->init_packets = uval(v);
        break;
    /* the other direction of a bidirectional record: v9 OUT_BYTES/OUT_PKTS (FortiGate and
     * others), responderOctets/Packets (Cisco ASA) — stored as the reverse flow's own row */
    case 23:
    case 232:
        r->rev_bytes = uval(v);
        break;
    case 24:
    case 299:
        r->rev_packets = uval(v);
        break;
    case 4:
        f->proto = (uint8_t)uval(v);
        break;
    case 5:
        f->tos = (uint8_t)uval(v);
        break;
    case 6:
        f->tcp_flags = (uint8_t)uval(v);
        break; /* 2-byte IPFIX form: low byte = flags */
    case 7:
        f->src_port = (uint16_t)uval(v);
        break;
    case 11:
        f->dst_port = (uint16_t)uval(v);
        break;
    case 8:
        r->has_src4 = addr_val(v, &r->src4);
        break;
    case 12:
        r->has_dst4 = addr_val(v, &r->dst4);
        break;
    case 27:
        r->has_src6 = addr_val(v, &r->src6);
        break;
    case 28:
        r->has_dst6 = addr_val(v, &r->dst6);
        break;
    case 9:
    case 29:
        f->src_mask = (uint8_t)uval(v);
        break;
    case 13:
    case 30:
        f->dst_mask = (uint8_t)uval(v);
        break;
    case 10:
        f->in_if = (uint32_t)uval(v);
        break;
    case 14:
        f->out_if = (uint32_t)uval(v);
        break;
    case 15:
    case 62:
        r->has_nh = addr_val(v, &f->nexthop) || r->has_nh;
        break;
    case 18:
    case 63:
        if (!r->has_nh)
            addr_val(v, &f->nexthop);
        break;
    case 16:
        f->src_as = (uint32_t)uval(v);
        break;
    case 17:
        f->dst_as = (uint32_t)uval(v);
        break;
    case 21:
        r->up_last = (uint64_t)clamp_ms(uval(v), 1);
        r->has_up_last = true;
        break;
    case 22:
        r->up_first = (uint64_t)clamp_ms(uval(v), 1);
        r->has_up_first = true;
        break;
    case 32:
    case 139:
        r->icmp = (uint32_t)uval(v);
        r->has_icmp = true;
        break;
    case 176:
    case 178:
        r->icmp = (r->icmp & 0xff) | (uint32_t)uval(v) << 8;
        r->has_icmp = true;
        break;
    case 177:
    case 179:
        r->icmp = (r->icmp & 0xff00) | (uint32_t)(uval(v) & 0xff);
        r->has_icmp = true;
        break;
    case 34:
    case 50:
        if (uval(v) > 0)
            r->rate = uval(v);
        break;
    case 305:
        r->pkt_interval = uval(v);
        break;
    case 306:
        r->pkt_space = uval(v);
        break;
    case 309:
        r->smp_size = uval(v);
        break;
    case 310:
        r->smp_pop = uval(v);
        break;
    case 48:
    case 302:
        r->sampler_id = uval(v);
        r->has_sampler_id = true;
        break;
    case 58:
    case 243:
        if (!f->vlan)
            f->vlan = (uint16_t)(uval(v) & 0x0fff);
        break;
    case 61:
        f->direction = (uint8_t)(uval(v) == 0 ? ENG_DIR_INGRESS : ENG_DIR_EGRESS);
        break;
    case 150:
        r->start_ms = clamp_ms(uval(v), 1000);
        r->has_start = true;
        break;
    case 151:
        r->end_ms = clamp_ms(uval(v), 1000);
        r->has_end = true;
        break;
    case 152:
        r->start_ms = clamp_ms(uval(v), 1);
        r->has_start = true;
        break;
    case 153:
        r->end_ms = clamp_ms(uval(v), 1);
        r->has_end = true;
        break;
    case 154:
    case 156:
        if (v.left == 8) {
            r->start_ms = ntp_to_ms(v);
            r->has_start = true;
        }
        break;
    case 155:
    case 157:
        if (v.left == 8) {
            r->end_ms = ntp_to_ms(v);
            r->has_end = true;
        }
        break;
    case 158:
        r->delta_start_us = (uint64_t)clamp_ms(uval(v), 1);
        r->has_delta_start = true;
        break;
    case 159:
        r->delta_end_us = (uint64_t)clamp_ms(uval(v), 1);
        r->has_delta_end = true;
        break;
    case 160:
        r->sys_init_ms = clamp_ms(uval(v), 1);
        break;
    case 323:
        r->obs_ms = clamp_ms(uval(v), 1);
        r->has_obs = true;
        break;
    case 312:
        r->frame_size = uval(v);
        r->has_frame_size = true;
        break;
    case 315:
        r->frame = v;
        r->frame_proto = ING_PKT_ETHERNET;
        r->has_frame = true;
        break;
    case 313:
        if (!r->has_frame) {
            ns_cur peek = v;
            uint8_t b0;
            if (ns_cur_u8(&peek, &b0)) {
                r->frame = v;
                r->frame_proto = (b0 >> 4) == 6 ? ING_PKT_IPV6 : ING_PKT_IPV4;
                r->has_frame = true;
            }
        }
        break;
    default:
        break;
    }
}

/* Reads one record's fields through template t. false: the set ends (padding or truncated). */
static bool read_record(const ing_tmpl *t, ns_cur *set, rec *r)
{
    memset(r, 0, sizeof *r);
    for (uint16_t i = 0; i < t->nfields; i++) {
        size_t len = t->f[i].len;
        ns_cur v;
        if (len == 65535) { /* RFC 7011 §7: variable length, 1 or 3 length bytes */
            uint8_t l8;
            uint16_t l16;
            if (!ns_cur_u8(set, &l8))
                return false;
            len = l8;
            if (l8 == 255) {
                if (!ns_cur_u16(set, &l16))
                    return false;
                len = l16;
            }
        }
        if (!ns_cur_sub(set, len, &v))
            return false;
        apply_field(r, &t->f[i], v);
    }
    return true;
}

/* Some templates carry IPv4 and IPv6 address fields and fill only one: an all-zero address of
 * one family does not hide a real one of the other. */
static ns_addr pick_addr(bool has4, const ns_addr *a4, bool has6, const ns_addr *a6)
{
    static const ns_addr zero;
    if (has6 && (memcmp(a6->b, zero.b, 16) != 0 || !has4))
        return *a6;
    if (has4)
        return *a4;
    return zero;
}

static uint32_t rate_of(const rec *r)
{
    uint64_t rate = r->rate;
    if (!rate && r->pkt_interval && r->pkt_space)
        rate = (r->pkt_interval + r->pkt_space) / r->pkt_interval;
    if (!rate && r->smp_size && r->smp_pop)
        rate = r->smp_pop / r->smp_size;
    return rate > UINT32_MAX ? UINT32_MAX : (uint32_t)rate;
}

/* Sampling rate for a data record: its own field, then its sampler, then the domain's default,
 * then any default of the exporter (some send options with another source ID). */
static uint32_t lookup_rate(const ing_nfstate *nf, uint32_t domain, const rec *r)
{
    uint32_t own = rate_of(r);
    const ing_sampler *best = NULL;
    int best_score = 0;
    if (own)
        return own;
    for (size_t i = 0; i < nf->nsamplers; i++) {
        const ing_sampler *s = &nf->samplers[i];
        int score = 0;
        if (r->has_sampler_id && s->id == r->sampler_id)
            score = s->domain == domain ? 4 : 3;
        else if (s->id == UINT64_MAX)
            score = s->domain == domain ? 2 : 1;
        if (score > best_score) {
            best = s;
            best_score = score;
        }
    }
    return best ? best->rate : 1;
}

static void options_record(ing_nfctx *c, uint32_t domain, const rec *r)
{
    ing_nfstate *nf = c->nf;
    uint32_t rate = rate_of(r);
    c->st->options_records++;
    if (r->sys_init_ms && nf->sys_init_ms != r->sys_init_ms) {
        nf->sys_init_ms = r->sys_init_ms;
        nf->dirty = true;
    }
    if (!rate)
        return;
    uint64_t id = r->has_sampler_id ? r->sampler_id : UINT64_MAX;
    for (size_t i = 0; i < nf->nsamplers; i++) {
        if (nf->samplers[i].domain == domain && nf->samplers[i].id == id) {
            nf->dirty |= nf->samplers[i].rate != rate;
            nf->samplers[i].rate = rate;
            return;
        }
    }
    if (nf->nsamplers == ING_MAX_SAMPLERS) {
        c->st->templates_refused++;
        return;
    }
    nf->samplers[nf->nsamplers++] = (ing_sampler){domain, id, rate};
    nf->dirty = true;
}

/* Turns a data record into one row (two with RFC 5103 reverse counters). */
static void data_record(ing_nfctx *c, uint8_t version, uint32_t domain, int64_t export_ms,
                        uint32_t uptime_ms, rec *r)
{
    eng_flow *f = &r->f;
    if (r->sys_init_ms && c->nf->sys_init_ms != r->sys_init_ms) {
        c->nf->sys_init_ms = r->sys_init_ms;
        c->nf->dirty = true;
    }
    f->src = pick_addr(r->has_src4, &r->src4, r->has_src6, &r->src6);
    f->dst = pick_addr(r->has_dst4, &r->dst4, r->has_dst6, &r->dst6);
    /* packet-sampling exporters (IPFIX PSAMP: Juniper, SRv6/EoMPLS probes) send the sampled
     * frame itself: one record is one packet of the frame's size */
    if (r->has_frame && !r->has_src4 && !r->has_src6 && !r->has_dst4 && !r->has_dst6) {
        eng_flow pf = *f;
        if (ing__packet_decode(r->frame, r->frame_proto, &pf) == 0) {
            f->src = pf.src;
            f->dst = pf.dst;
            f->src_port = pf.src_port;
            f->dst_port = pf.dst_port;
            f->proto = pf.proto;
            f->tos = pf.tos;
            f->tcp_flags = pf.tcp_flags;
        }
        if (!f->vlan)
            f->vlan = pf.vlan;
        if (!r->has_packets && !r->has_tot_packets && !r->init_packets) {
            r->packets = 1;
            r->has_packets = true;
        }
        if (!r->has_bytes && !r->has_tot_bytes && !r->has_init) {
            r->bytes = r->has_frame_size ? r->frame_size : r->frame.left;
            r->has_bytes = true;
        }
    }
    /* counters: delta, else total, else the firewall's initiator counters (Cisco ASA) */
    f->bytes = r->has_bytes ? r->bytes : r->has_tot_bytes ? r->tot_bytes : r->init_bytes;
    f->packets = r->has_packets       ? r->packets
                 : r->has_tot_packets ? r->tot_packets
                                      : r->init_packets;
    /* times, most precise source first */
    int64_t first = export_ms, last = export_ms;
    if (r->has_up_first || r->has_up_last) {
        int64_t boot;
        bool known = true;
        if (version == 9)
            boot = export_ms - uptime_ms;
        else if (c->nf->sys_init_ms)
            boot = c->nf->sys_init_ms;
        else
            known = false, boot = 0;
        if (known && version == 9) {
            /* signed 32-bit differences survive sysUptime wrapping */
            if (r->has_up_first)
                first = export_ms - (int32_t)(uptime_ms - (uint32_t)r->up_first);
            if (r->has_up_last)
                last = export_ms - (int32_t)(uptime_ms - (uint32_t)r->up_last);
        } else if (known) {
            if (r->has_up_first)
                first = boot + (int64_t)r->up_first;
            if (r->has_up_last)
                last = boot + (int64_t)r->up_last;
        }
        if (r->has_up_first && !r->has_up_last)
            last = first;
        if (r->has_up_last && !r->has_up_first)
            first = last;
    }
    if (r->has_delta_start)
        first = export_ms - (int64_t)(r->delta_start_us / 1000);
    if (r->has_delta_end)
        last = export_ms - (int64_t)(r->delta_end_us / 1000);
    if (r->has_start)
        first = r->start_ms;
    if (r->has_end)
        last = r->end_ms;
    if (!r->has_start && !r->has_up_first && !r->has_delta_start && r->has_obs)
        first = last = r->obs_ms;
    if (r->has_start && !r->has_end && !r->has_up_last && !r->has_delta_end)
        last = first;
    if (last < first)
        last = first;
    f->first_ms = first;
    f->last_ms = last;
    if (r->has_icmp && (f->proto == 1 || f->proto == 58)) {
        f->dst_port = (uint16_t)r->icmp; /* type << 8 | code, as nfdump shows it */
        f->src_port = 0;
    }
    uint32_t rate = lookup_rate(c->nf, domain, r);
    f->sampling = rate;
    f->packets *= rate;
    f->bytes *= rate;
    f->exporter = *c->exporter;
    f->source_id = domain;
    f->flow_type = version == 9 ? ENG_FT_NETFLOW9 : ENG_FT_IPFIX;
    if (!ing_batch_room(c->out)) {
        c->st->rows_dropped += 1u + (r->rev_bytes || r->rev_packets);
        return;
    }
    c->out->rows[c->out->n++] = *f;
    if (r->rev_bytes || r->rev_packets) {
        if (!ing_batch_room(c->out)) {
            c->st->rows_dropped++;
            return;
        }
        eng_flow *rv = &c->out->rows[c->out->n++];
        *rv = *f;
        rv->src = f->dst;
        rv->dst = f->src;
        rv->src_port = f->dst_port;
        rv->dst_port = f->src_port;
        rv->in_if = f->out_if;
        rv->out_if = f->in_if;
        rv->src_as = f->dst_as;
        rv->dst_as = f->src_as;
        rv->src_mask = f->dst_mask;
        rv->dst_mask = f->src_mask;
        rv->bytes = r->rev_bytes * rate;
        rv->packets = r->rev_packets * rate;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The columnar fast path. Most data templates (every v9 one the generators and the common routers
 * send) have fixed-length fields whose meaning does not depend on another record's or field's
 * value. For those a set is decoded a block of records at a time, field by field: each field's
 * kind is decided once per set instead of once per record (the per-field switch and the 400-byte
 * record cleared for every record were most of a v9 decode), and the rows are written in place.
 * Templates with anything else (variable lengths, reverse or total counters, sampling fields,
 * IPv4 and IPv6 addresses for one side, packet sections, NTP or delta times...) take the
 * record-by-record path above. Both must give the same rows: test_ingest_nf.c compares them. */

enum {
    FK_SKIP,
    FK_BYTES,
    FK_PACKETS,
    FK_PROTO,
    FK_TOS,
    FK_FLAGS,
    FK_SPORT,
    FK_DPORT,
    FK_SRC,
    FK_DST,
    FK_SMASK,
    FK_DMASK,
    FK_INIF,
    FK_OUTIF,
    FK_NH,
    FK_SAS,
    FK_DAS,
    FK_UPLAST,
    FK_UPFIRST,
    FK_ICMP,
    FK_VLAN,
    FK_DIR,
    FK_START_S,
    FK_END_S,
    FK_START_MS,
    FK_END_MS,
    FK_NO
};

typedef struct fp_op {
    uint16_t off, len;
    uint8_t kind;
} fp_op;

typedef struct fp_plan {
    fp_op op[ING_MAX_FIELDS];
    uint16_t nops;
    size_t reclen;
    bool bytes, packets, up_first, up_last, start, end, icmp;
} fp_plan;

static bool addr_len(size_t len)
{
    return len == 4 || len == 16;
}

/* One field's kind on the fast path (FK_NO: the template takes the other path). */
static uint8_t fp_kind(const ing_tmpl_field *fd)
{
    if (fd->len == 65535)
        return FK_NO;
    if (fd->pen == PEN_REVERSE)
        return fd->ie == 1 || fd->ie == 85 || fd->ie == 2 || fd->ie == 86 ? FK_NO : FK_SKIP;
    if (fd->pen != 0)
        return FK_SKIP;
    switch (fd->ie) {
    case 1:
        return FK_BYTES;
    case 2:
        return FK_PACKETS;
    case 4:
        return FK_PROTO;
    case 5:
        return FK_TOS;
    case 6:
        return FK_FLAGS;
    case 7:
        return FK_SPORT;
    case 11:
        return FK_DPORT;
    case 8:
    case 27:
        return addr_len(fd->len) ? FK_SRC : FK_NO;
    case 12:
    case 28:
        return addr_len(fd->len) ? FK_DST : FK_NO;
    case 9:
    case 29:
        return FK_SMASK;
    case 13:
    case 30:
        return FK_DMASK;
    case 10:
        return FK_INIF;
    case 14:
        return FK_OUTIF;
    case 15:
    case 62:
    case 18:
    case 63:
        return addr_len(fd->len) ? FK_NH : FK_NO;
    case 16:
        return FK_SAS;
    case 17:
        return FK_DAS;
    case 21:
        return FK_UPLAST;
    case 22:
        return FK_UPFIRST;
    case 32:
    case 139:
        return FK_ICMP;
    case 58:
    case 243:
        return FK_VLAN;
    case 61:
        return FK_DIR;
    case 150:
        return FK_START_S;
    case 151:
        return FK_END_S;
    case 152:
        return FK_START_MS;
    case 153:
        return FK_END_MS;
    /* meaning that depends on other fields or values, or more than one row a record */
    case 85:
    case 86:
    case 231:
    case 298:
    case 23:
    case 232:
    case 24:
    case 299:
    case 176:
    case 177:
    case 178:
    case 179:
    case 34:
    case 50:
    case 305:
    case 306:
    case 309:
    case 310:
    case 48:
    case 302:
    case 154:
    case 155:
    case 156:
    case 157:
    case 158:
    case 159:
    case 160:
    case 323:
    case 312:
    case 313:
    case 315:
        return FK_NO;
    default:
        return FK_SKIP;
    }
}

/* The plan of a data template, or false when it must be decoded record by record. */
static bool fp_make(const ing_tmpl *t, fp_plan *pl)
{
    bool v4[2] = {false, false}, v6[2] = {false, false}, nh = false;
    if (t->options)
        return false;
    pl->nops = 0;
    pl->reclen = 0;
    pl->bytes = pl->packets = pl->up_first = pl->up_last = pl->start = pl->end = pl->icmp = false;
    for (uint16_t i = 0; i < t->nfields; i++) {
        const ing_tmpl_field *fd = &t->f[i];
        uint8_t k = fp_kind(fd);
        if (k == FK_NO)
            return false;
        if (fd->pen == 0 && (k == FK_SRC || k == FK_DST)) {
            int side = k == FK_DST;
            (fd->ie == 8 || fd->ie == 12 ? v4 : v6)[side] = true;
        }
        if (fd->pen == 0 && k == FK_NH) {
            /* BGP next hop (18/63) only where no IP next hop (15/62) came before it */
            if (fd->ie == 18 || fd->ie == 63)
                k = nh ? FK_SKIP : FK_NH;
            else
                nh = true;
        }
        pl->bytes |= k == FK_BYTES;
        pl->packets |= k == FK_PACKETS;
        pl->up_first |= k == FK_UPFIRST;
        pl->up_last |= k == FK_UPLAST;
        pl->start |= k == FK_START_S || k == FK_START_MS;
        pl->end |= k == FK_END_S || k == FK_END_MS;
        pl->icmp |= k == FK_ICMP;
        if (k != FK_SKIP)
            pl->op[pl->nops++] = (fp_op){(uint16_t)pl->reclen, fd->len, k};
        pl->reclen += fd->len;
    }
    /* one side with both families: the record's values decide (pick_addr) */
    if ((v4[0] && v6[0]) || (v4[1] && v6[1]))
        return false;
    return pl->reclen > 0 && pl->reclen == t->min_len;
}

#define FP_BLOCK 256

/* addr_val for the lengths fp_kind lets through (4 and 16), inlined: ::ffff:a.b.c.d built in
 * registers */
static inline __attribute__((always_inline)) void fp_addr(ns_cur v, ns_addr *a)
{
    if (v.left == 4) {
        ns_addr m = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}};
        ns_cur_bytes(&v, m.b + 12, 4);
        *a = m;
    } else {
        ns_cur_bytes(&v, a->b, 16);
    }
}

/* uval, inlined into the fast path's loops */
static inline __attribute__((always_inline)) uint64_t fp_uval(ns_cur v)
{
    uint8_t b;
    uint16_t x16;
    uint32_t x32;
    uint64_t x = 0;
    switch (v.left) {
    case 1:
        return ns_cur_u8(&v, &b) ? b : 0;
    case 2:
        return ns_cur_u16(&v, &x16) ? x16 : 0;
    case 4:
        return ns_cur_u32(&v, &x32) ? x32 : 0;
    case 8:
        return ns_cur_u64(&v, &x) ? x : 0;
    default:
        return uval(v);
    }
}

bool ing__fast_path = true;
_Atomic uint64_t ing__fast_sets;

/* Decodes the records of a set with plan pl (see fp_make): block by block, field by field. */
static void decode_fast(ing_nfctx *c, const ing_tmpl *t, const fp_plan *pl, int64_t export_ms,
                        uint32_t uptime_ms, ns_cur set, bool in_sequence)
{
    static const rec none; /* a record with no sampling fields of its own */
    ns_cur recs[FP_BLOCK];
    uint64_t upf[FP_BLOCK], upl[FP_BLOCK];
    int64_t st[FP_BLOCK], en[FP_BLOCK];
    uint32_t icmp[FP_BLOCK];
    uint32_t rate = lookup_rate(c->nf, t->domain, &none);
    size_t left = set.left / pl->reclen;
    eng_flow proto;
    memset(&proto, 0, sizeof proto);
    proto.exporter = *c->exporter;
    proto.source_id = t->domain;
    proto.sampling = rate;
    proto.flow_type = t->version == 9 ? ENG_FT_NETFLOW9 : ENG_FT_IPFIX;
    int64_t boot = t->version == 9 ? export_ms - uptime_ms : c->nf->sys_init_ms;
    bool boot_known = t->version == 9 || c->nf->sys_init_ms != 0;
    while (left > 0) {
        if (!ing_batch_room(c->out)) {
            c->st->rows_dropped += left;
            if (in_sequence)
                c->records += left;
            return;
        }
        size_t k = c->out->cap - c->out->n;
        k = k < left ? k : left;
        k = k < FP_BLOCK ? k : FP_BLOCK;
        for (size_t i = 0; i < k; i++)
            ns_cur_sub(&set, pl->reclen, &recs[i]); /* cannot fail: left records remain */
        eng_flow *rows = &c->out->rows[c->out->n];
        for (size_t i = 0; i < k; i++)
            rows[i] = proto;
        for (uint16_t o = 0; o < pl->nops; o++) {
            /* locals: the row stores below could alias the plan as far as the compiler knows */
            size_t off = pl->op[o].off, len = pl->op[o].len;
            /* one loop per kind: the kind is decided once a block, not once a value */
#define FP_EACH(stmt)                                                                              \
    for (size_t i = 0; i < k; i++) {                                                               \
        ns_cur r = recs[i], v = {NULL, 0};                                                         \
        ns_cur_skip(&r, off);                                                                      \
        ns_cur_sub(&r, len, &v);                                                                   \
        eng_flow *f = &rows[i];                                                                    \
        (void)f;                                                                                   \
        stmt;                                                                                      \
    }
            switch (pl->op[o].kind) {
            case FK_BYTES:
                FP_EACH(f->bytes = fp_uval(v));
                break;
            case FK_PACKETS:
                FP_EACH(f->packets = fp_uval(v));
                break;
            case FK_PROTO:
                FP_EACH(f->proto = (uint8_t)fp_uval(v));
                break;
            case FK_TOS:
                FP_EACH(f->tos = (uint8_t)fp_uval(v));
                break;
            case FK_FLAGS:
                FP_EACH(f->tcp_flags = (uint8_t)fp_uval(v));
                break;
            case FK_SPORT:
                FP_EACH(f->src_port = (uint16_t)fp_uval(v));
                break;
            case FK_DPORT:
                FP_EACH(f->dst_port = (uint16_t)fp_uval(v));
                break;
            case FK_SRC:
                FP_EACH(fp_addr(v, &f->src));
                break;
            case FK_DST:
                FP_EACH(fp_addr(v, &f->dst));
                break;
            case FK_SMASK:
                FP_EACH(f->src_mask = (uint8_t)fp_uval(v));
                break;
            case FK_DMASK:
                FP_EACH(f->dst_mask = (uint8_t)fp_uval(v));
                break;
            case FK_INIF:
                FP_EACH(f->in_if = (uint32_t)fp_uval(v));
                break;
            case FK_OUTIF:
                FP_EACH(f->out_if = (uint32_t)fp_uval(v));
                break;
            case FK_NH:
                FP_EACH(fp_addr(v, &f->nexthop));
                break;
            case FK_SAS:
                FP_EACH(f->src_as = (uint32_t)fp_uval(v));
                break;
            case FK_DAS:
                FP_EACH(f->dst_as = (uint32_t)fp_uval(v));
                break;
            case FK_UPLAST:
                FP_EACH(upl[i] = (uint64_t)clamp_ms(fp_uval(v), 1));
                break;
            case FK_UPFIRST:
                FP_EACH(upf[i] = (uint64_t)clamp_ms(fp_uval(v), 1));
                break;
            case FK_ICMP:
                FP_EACH(icmp[i] = (uint32_t)fp_uval(v));
                break;
            case FK_VLAN:
                FP_EACH(if (!f->vlan) f->vlan = (uint16_t)(fp_uval(v) & 0x0fff));
                break;
            case FK_DIR:
                FP_EACH(f->direction =
                            (uint8_t)(fp_uval(v) == 0 ? ENG_DIR_INGRESS : ENG_DIR_EGRESS));
                break;
            case FK_START_S:
                FP_EACH(st[i] = clamp_ms(fp_uval(v), 1000));
                break;
            case FK_END_S:
                FP_EACH(en[i] = clamp_ms(fp_uval(v), 1000));
                break;
            case FK_START_MS:
                FP_EACH(st[i] = clamp_ms(fp_uval(v), 1));
                break;
            case FK_END_MS:
                FP_EACH(en[i] = clamp_ms(fp_uval(v), 1));
                break;
            default:
                break;
            }
#undef FP_EACH
        }
        /* what data_record does after the fields, with the template's answers to its has_*
         * questions */
        for (size_t i = 0; i < k; i++) {
            eng_flow *f = &rows[i];
            int64_t first = export_ms, last = export_ms;
            if ((pl->up_first || pl->up_last) && boot_known) {
                if (t->version == 9) {
                    if (pl->up_first)
                        first = export_ms - (int32_t)(uptime_ms - (uint32_t)upf[i]);
                    if (pl->up_last)
                        last = export_ms - (int32_t)(uptime_ms - (uint32_t)upl[i]);
                } else {
                    if (pl->up_first)
                        first = boot + (int64_t)upf[i];
                    if (pl->up_last)
                        last = boot + (int64_t)upl[i];
                }
            }
            if (pl->up_first && !pl->up_last)
                last = first;
            if (pl->up_last && !pl->up_first)
                first = last;
            if (pl->start)
                first = st[i];
            if (pl->end)
                last = en[i];
            if (pl->start && !pl->end && !pl->up_last)
                last = first;
            f->first_ms = first;
            f->last_ms = last < first ? first : last;
            if (pl->icmp && (f->proto == 1 || f->proto == 58)) {
                f->dst_port = (uint16_t)icmp[i];
                f->src_port = 0;
            }
            f->packets *= rate;
            f->bytes *= rate;
        }
        c->out->n += k;
        if (in_sequence)
            c->records += k;
        left -= k;
    }
}

/* in_sequence: the records belong to the message being decoded (held ones released later
 * were counted, or not, by their own message) */
static void decode_records(ing_nfctx *c, const ing_tmpl *t, int64_t export_ms, uint32_t uptime_ms,
                           ns_cur set, bool in_sequence)
{
    rec r;
    fp_plan pl;
    if (ing__fast_path && fp_make(t, &pl)) {
        decode_fast(c, t, &pl, export_ms, uptime_ms, set, in_sequence);
        atomic_fetch_add_explicit(&ing__fast_sets, 1, memory_order_relaxed);
        return;
    }
    /* a set ends when what is left cannot hold one more record: that is padding */
    while (set.left > 0 && set.left >= t->min_len) {
        if (!read_record(t, &set, &r))
            break;
        if (t->options)
            options_record(c, t->domain, &r);
        else
            data_record(c, t->version, t->domain, export_ms, uptime_ms, &r);
        if (in_sequence)
            c->records++; /* RFC 7011 §3.1: every data record counts, options ones too */
        if (t->min_len == 0)
            break; /* cannot happen (templates have fields), but never loop forever */
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Held data */

static void pending_remove(ing_nfstate *nf, size_t i)
{
    nf->pending_bytes -= nf->pending[i]->len;
    free(nf->pending[i]);
    memmove(&nf->pending[i], &nf->pending[i + 1], (nf->npending - i - 1) * sizeof *nf->pending);
    nf->npending--;
}

void ing__pending_expire(ing_nfctx *c)
{
    ing_nfstate *nf = c->nf;
    for (size_t i = 0; i < nf->npending;) {
        if (c->recv_ms - nf->pending[i]->recv_ms > ING_PENDING_MS) {
            pending_remove(nf, i);
            c->st->held_expired++;
        } else {
            i++;
        }
    }
}

static void pending_release(ing_nfctx *c, const ing_tmpl *t)
{
    ing_nfstate *nf = c->nf;
    for (size_t i = 0; i < nf->npending;) {
        ing_pending *p = nf->pending[i];
        if (p->tid == t->id && p->domain == t->domain && p->version == t->version) {
            decode_records(c, t, p->export_ms, p->uptime_ms, ns_cur_make(p->data, p->len), false);
            c->st->held_decoded++;
            pending_remove(nf, i);
        } else {
            i++;
        }
    }
}

static void pending_hold(ing_nfctx *c, uint8_t version, uint32_t domain, uint16_t tid,
                         int64_t export_ms, uint32_t uptime_ms, ns_cur set)
{
    ing_nfstate *nf = c->nf;
    ing__pending_expire(c);
    /* over the caps the oldest held data goes first: fresher data is likelier to be claimed */
    while (nf->npending > 0 &&
           (nf->npending == ING_MAX_PENDING || nf->pending_bytes + set.left > ING_PENDING_BYTES)) {
        pending_remove(nf, 0);
        c->st->held_dropped++;
    }
    if (set.left > ING_PENDING_BYTES) {
        c->st->held_dropped++;
        return;
    }
    ing_pending *p = malloc(sizeof *p + set.left);
    if (!p) {
        c->st->held_dropped++;
        return;
    }
    p->domain = domain;
    p->tid = tid;
    p->version = version;
    p->recv_ms = c->recv_ms;
    p->export_ms = export_ms;
    p->uptime_ms = uptime_ms;
    p->len = set.left;
    ns_cur_bytes(&set, p->data, p->len);
    nf->pending[nf->npending++] = p;
    nf->pending_bytes += p->len;
}

int ing__data_set(ing_nfctx *c, uint8_t version, uint32_t domain, uint16_t tid, int64_t export_ms,
                  uint32_t uptime_ms, ns_cur set)
{
    ing_tmpl *t = find_tmpl(c->nf, version, domain, tid, NULL);
    if (!t) {
        c->st->template_misses++;
        c->records_unknown = true;
        pending_hold(c, version, domain, tid, export_ms, uptime_ms, set);
        return 0;
    }
    decode_records(c, t, export_ms, uptime_ms, set, true);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Template records */

static int add_tmpl(ing_nfctx *c, ing_tmpl *t)
{
    size_t idx;
    if (find_tmpl(c->nf, t->version, t->domain, t->id, &idx)) {
        free(c->nf->tmpls[idx]); /* refresh or replacement */
        c->nf->tmpls[idx] = t;
    } else if (c->nf->ntmpls == ING_MAX_TEMPLATES) {
        free(t);
        c->st->templates_refused++;
        return ING_E_CAP;
    } else {
        c->nf->tmpls[c->nf->ntmpls++] = t;
    }
    c->st->templates = c->nf->ntmpls;
    c->nf->dirty = true;
    pending_release(c, t);
    return 0;
}

static void withdraw(ing_nfctx *c, uint8_t version, uint32_t domain, uint16_t id, bool options)
{
    /* id 2 (templates) or 3 (options templates) withdraws every template of that kind */
    bool all = id == (options ? 3 : 2);
    for (size_t i = 0; i < c->nf->ntmpls;) {
        ing_tmpl *t = c->nf->tmpls[i];
        if (t->version == version && t->domain == domain &&
            (all ? t->options == options : t->id == id)) {
            remove_tmpl(c, i);
            c->st->template_withdrawals++;
        } else {
            i++;
        }
    }
}

/* Reads nfields field specifiers into a new template. */
static int read_fields(ns_cur *set, uint8_t version, uint16_t nfields, ing_tmpl **out)
{
    ing_tmpl *t;
    if (nfields == 0 || nfields > ING_MAX_FIELDS)
        return nfields ? ING_E_CAP : ING_E_TEMPLATE;
    t = calloc(1, sizeof *t + (size_t)nfields * sizeof t->f[0]);
    if (!t)
        return NS_E_NOMEM;
    t->nfields = nfields;
    for (uint16_t i = 0; i < nfields; i++) {
        uint16_t ie, len;
        uint32_t pen = 0;
        if (!ns_cur_u16(set, &ie) || !ns_cur_u16(set, &len))
            goto bad;
        if (version == 10 && (ie & 0x8000)) {
            if (!ns_cur_u32(set, &pen))
                goto bad;
            ie &= 0x7fff;
        }
        /* RFC 3954 has no variable-length fields, but H3C NetStream v9 sends them in the
         * IPFIX encoding: accept them the same way */
        t->f[i] = (ing_tmpl_field){ie, len, pen};
        t->min_len += len == 65535 ? 1u : len;
    }
    *out = t;
    return 0;
bad:
    free(t);
    return ING_E_TEMPLATE;
}

int ing__tmpl_set(ing_nfctx *c, uint8_t version, uint32_t domain, bool options, ns_cur set)
{
    int result = 0;
    while (set.left >= 4) {
        uint16_t id, count, scope = 0;
        ing_tmpl *t = NULL;
        ns_cur_u16(&set, &id);
        ns_cur_u16(&set, &count);
        if (version == 9 && options) {
            /* v9 options: template id, scope length, option length (bytes, 4 per field) */
            uint16_t optlen;
            if (!ns_cur_u16(&set, &optlen) || count % 4 || optlen % 4) {
                c->st->template_errors++;
                return ING_E_TEMPLATE;
            }
            scope = count / 4;
            count = (uint16_t)(scope + optlen / 4);
        } else if (version == 10 && options && count > 0) {
            if (!ns_cur_u16(&set, &scope) || scope == 0 || scope > count) {
                c->st->template_errors++;
                return ING_E_TEMPLATE;
            }
        }
        if (id < 256) {
            if (version == 10 && count == 0 && (id == 2 || id == 3)) {
                withdraw(c, version, domain, id, options);
                continue;
            }
            break; /* v9 padding, or a reserved id: the rest of the set is not templates */
        }
        if (version == 10 && count == 0) {
            withdraw(c, version, domain, id, options);
            continue;
        }
        int rc = read_fields(&set, version, count, &t);
        if (rc < 0) {
            if (rc == ING_E_CAP)
                c->st->templates_refused++;
            else
                c->st->template_errors++;
            return rc; /* the rest of the set cannot be aligned any more */
        }
        t->domain = domain;
        t->id = id;
        t->version = version;
        t->options = options;
        t->scope_count = scope;
        rc = add_tmpl(c, t);
        if (rc < 0)
            result = rc;
    }
    return result;
}

int ing__nfstate_add_loaded(ing_nfstate *nf, ing_tmpl *t)
{
    if (find_tmpl(nf, t->version, t->domain, t->id, NULL) || nf->ntmpls == ING_MAX_TEMPLATES) {
        free(t);
        return ING_E_CAP;
    }
    nf->tmpls[nf->ntmpls++] = t;
    return 0;
}
