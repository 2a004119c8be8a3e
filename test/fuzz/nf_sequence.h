/* Shared body of the v9 and IPFIX fuzz targets: the input is split into datagrams by 2-byte
 * big-endian length prefixes and fed, in order, to one exporter, so templates learned from one
 * datagram decode (or hold) the data of the next. The version field is forced so every input
 * exercises the target's decoder. */
#ifndef NS_FUZZ_NF_SEQUENCE_H
#define NS_FUZZ_NF_SEQUENCE_H

#include "ingest/ingest.h"

#include <stdlib.h>

static int fuzz_nf_sequence(const uint8_t *data, size_t size, uint8_t version)
{
    static eng_flow rows[20000];
    static uint8_t dgram[65536];
    ing_exporters *ex;
    ns_addr from;
    ns_cur c = ns_cur_make(data, size);
    ns_log_set_level(NS_LOG_ERROR);
    if (ing_exporters_new(4, &ex) < 0)
        abort();
    ns_addr_from_v4(&from, 0xc0000201u);
    int64_t now = 1700000000000LL;
    uint16_t len;
    while (ns_cur_u16(&c, &len)) {
        ns_cur d;
        if (!ns_cur_sub(&c, len <= c.left ? len : c.left, &d))
            break;
        memcpy(dgram, d.p, d.left);
        if (d.left >= 2) {
            dgram[0] = 0;
            dgram[1] = version;
        }
        ing_batch b = {.rows = rows, .n = 0, .cap = 20000};
        int rc = ing_decode(ex, &from, now, dgram, d.left, &b);
        if (rc >= 0 && (size_t)rc != b.n)
            abort();
        for (size_t i = 0; i < b.n; i++)
            if (rows[i].last_ms < rows[i].first_ms || rows[i].sampling == 0)
                abort(); /* rows the store would get must be well formed */
        now += 1000;
    }
    ing_exporters_free(ex);
    return 0;
}

#endif
