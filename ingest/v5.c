/* ingest/v5.c — NetFlow v5 (Cisco's fixed format: 24-byte header, up to 30 records of 48
 * bytes). Everything is checked before a single row is appended, so a bad datagram adds
 * nothing. Times are sysUptime-relative in the records and made absolute here. */
#include "ingest/ingest.h"

int ing_v5_decode(const uint8_t *pkt, size_t len, const ns_addr *exporter, ing_batch *out,
                  ing_v5_hdr *hdr)
{
    ns_cur c = ns_cur_make(pkt, len);
    uint16_t version = 0, sampling = 0;
    memset(hdr, 0, sizeof *hdr);
    if (len < ING_V5_HDR)
        return ING_E_SHORT;
    ns_cur_u16(&c, &version);
    if (version != 5)
        return ING_E_VERSION;
    ns_cur_u16(&c, &hdr->count);
    ns_cur_u32(&c, &hdr->sys_uptime_ms);
    ns_cur_u32(&c, &hdr->unix_secs);
    ns_cur_u32(&c, &hdr->unix_nsecs);
    ns_cur_u32(&c, &hdr->flow_sequence);
    ns_cur_u8(&c, &hdr->engine_type);
    ns_cur_u8(&c, &hdr->engine_id);
    ns_cur_u16(&c, &sampling);
    hdr->sampling_mode = (uint16_t)(sampling >> 14);
    hdr->sampling_interval = (uint16_t)(sampling & 0x3fff);
    if (hdr->count == 0 || hdr->count > ING_V5_MAX_RECS)
        return ING_E_COUNT;
    if (c.left < (size_t)hdr->count * ING_V5_REC)
        return ING_E_LENGTH; /* trailing bytes beyond the records are padding: allowed */
    if (out->cap - out->n < hdr->count)
        return ING_E_BATCH;

    /* The router's boot time in epoch ms: records carry First/Last as sysUptime values. */
    int64_t export_ms = (int64_t)hdr->unix_secs * 1000 + hdr->unix_nsecs / 1000000;
    uint32_t rate = hdr->sampling_interval > 1 ? hdr->sampling_interval : 1;
    uint32_t source_id = (uint32_t)hdr->engine_type << 8 | hdr->engine_id;

    for (uint16_t i = 0; i < hdr->count; i++) {
        eng_flow *f = &out->rows[out->n + i];
        uint32_t src = 0, dst = 0, nh = 0, pkts = 0, octets = 0, first = 0, last = 0;
        uint16_t in_if = 0, out_if = 0, src_as = 0, dst_as = 0;
        uint8_t pad = 0;
        memset(f, 0, sizeof *f);
        ns_cur_u32(&c, &src);
        ns_cur_u32(&c, &dst);
        ns_cur_u32(&c, &nh);
        ns_cur_u16(&c, &in_if);
        ns_cur_u16(&c, &out_if);
        ns_cur_u32(&c, &pkts);
        ns_cur_u32(&c, &octets);
        ns_cur_u32(&c, &first);
        ns_cur_u32(&c, &last);
        ns_cur_u16(&c, &f->src_port);
        ns_cur_u16(&c, &f->dst_port);
        ns_cur_u8(&c, &pad);
        ns_cur_u8(&c, &f->tcp_flags);
        ns_cur_u8(&c, &f->proto);
        ns_cur_u8(&c, &f->tos);
        ns_cur_u16(&c, &src_as);
        ns_cur_u16(&c, &dst_as);
        ns_cur_u8(&c, &f->src_mask);
        ns_cur_u8(&c, &f->dst_mask);
        ns_cur_skip(&c, 2);
        ns_addr_from_v4(&f->src, src);
        ns_addr_from_v4(&f->dst, dst);
        ns_addr_from_v4(&f->nexthop, nh);
        f->exporter = *exporter;
        f->in_if = in_if;
        f->out_if = out_if;
        f->src_as = src_as;
        f->dst_as = dst_as;
        /* the signed 32-bit difference survives sysUptime wrapping after 49.7 days */
        f->first_ms = export_ms - (int32_t)(hdr->sys_uptime_ms - first);
        f->last_ms = export_ms - (int32_t)(hdr->sys_uptime_ms - last);
        if (f->last_ms < f->first_ms)
            f->last_ms = f->first_ms;
        f->packets = (uint64_t)pkts * rate;
        f->bytes = (uint64_t)octets * rate;
        f->sampling = rate;
        f->source_id = source_id;
        f->flow_type = ENG_FT_NETFLOW5;
    }
    out->n += hdr->count;
    hdr->pdu_len = ING_V5_HDR + (size_t)hdr->count * ING_V5_REC;
    return 0;
}
