/* ingest/v9.c — NetFlow v9 (RFC 3954): a 20-byte header, then flowsets: 0 = templates,
 * 1 = options templates, >= 256 = data. Each flowset gets its own bounded cursor, so one bad
 * set cannot desynchronise the rest of the packet. The sequence number counts packets. */
#include "ingest/ingest_int.h"

int ing__v9_decode(ing_nfctx *c, const uint8_t *pkt, size_t len, uint32_t *seq, uint32_t *domain)
{
    ns_cur p = ns_cur_make(pkt, len);
    uint16_t version, count;
    uint32_t uptime, secs;
    uint64_t before = ing_batch_total(c->out);
    int bad = 0;
    if (len < 20)
        return ING_E_SHORT;
    ns_cur_u16(&p, &version);
    ns_cur_u16(&p, &count);
    ns_cur_u32(&p, &uptime);
    ns_cur_u32(&p, &secs);
    ns_cur_u32(&p, seq);
    ns_cur_u32(&p, domain);
    if (version != 9)
        return ING_E_VERSION;
    int64_t export_ms = (int64_t)secs * 1000;
    ing__pending_expire(c);
    while (p.left >= 4) {
        uint16_t id, slen;
        ns_cur set;
        ns_cur_u16(&p, &id);
        ns_cur_u16(&p, &slen);
        if (slen < 4 || !ns_cur_sub(&p, slen - 4u, &set)) {
            c->st->err_set++;
            bad = ING_E_SET_LEN;
            break;
        }
        int rc = 0;
        if (id == 0 || id == 1)
            rc = ing__tmpl_set(c, 9, *domain, id == 1, set);
        else if (id >= 256)
            rc = ing__data_set(c, 9, *domain, id, export_ms, uptime, set);
        /* 2..255 are reserved: skipped by their length */
        if (rc < 0 && !bad)
            bad = rc;
    }
    (void)count; /* records in the packet: informational, exporters disagree on its meaning */
    uint64_t added = ing_batch_total(c->out) - before;
    if (added == 0 && bad)
        return bad;
    return (int)added;
}
