/* ingest/ipfix.c — IPFIX messages (RFC 7011): a 16-byte header with the message length, export
 * time, sequence number (counting data records) and observation domain, then sets: 2 =
 * templates, 3 = options templates, >= 256 = data. Bytes past the message length are ignored;
 * each set gets its own bounded cursor. */
#include "ingest/ingest_int.h"

int ing__ipfix_decode(ing_nfctx *c, const uint8_t *pkt, size_t len, uint32_t *seq, uint32_t *domain)
{
    ns_cur p = ns_cur_make(pkt, len), msg = {0};
    uint16_t version, mlen;
    uint32_t secs;
    uint64_t before = ing_batch_total(c->out);
    int bad = 0;
    if (len < 16)
        return ING_E_SHORT;
    ns_cur_u16(&p, &version);
    ns_cur_u16(&p, &mlen);
    if (version != 10)
        return ING_E_VERSION;
    if (mlen < 16 || mlen > len)
        return ING_E_LENGTH;
    ns_cur_u32(&p, &secs);
    ns_cur_u32(&p, seq);
    ns_cur_u32(&p, domain);
    ns_cur_sub(&p, mlen - 16u, &msg);
    int64_t export_ms = (int64_t)secs * 1000;
    ing__pending_expire(c);
    c->records = 0;
    c->records_unknown = false;
    while (msg.left >= 4) {
        uint16_t id, slen;
        ns_cur set;
        ns_cur_u16(&msg, &id);
        ns_cur_u16(&msg, &slen);
        if (slen < 4 || !ns_cur_sub(&msg, slen - 4u, &set)) {
            c->st->err_set++;
            bad = ING_E_SET_LEN;
            break;
        }
        int rc = 0;
        if (id == 2 || id == 3)
            rc = ing__tmpl_set(c, 10, *domain, id == 3, set);
        else if (id >= 256)
            rc = ing__data_set(c, 10, *domain, id, export_ms, 0, set);
        else
            c->st->err_set++; /* 0, 1 and 4..255 are not IPFIX sets */
        if (rc < 0 && !bad)
            bad = rc;
    }
    uint64_t added = ing_batch_total(c->out) - before;
    if (added == 0 && bad)
        return bad;
    return (int)added;
}
