/* Fuzz target: one sFlow v5 datagram through ing__sflow_decode (and, as a sampled header, the
 * same bytes through ing__packet_decode for each header protocol). The version word is forced
 * to 5 so every input reaches the sample parser. Beyond "no crash" it checks that a call adds
 * exactly the rows it reports, nothing on error, and only rows the store can take; then it
 * decodes the datagram again into a one-row batch (the batch-full path) and renders the state
 * as JSON. The input is copied into an exact-size heap buffer so ASan sees any overread. */
#include "ingest/packet.h"
#include "ingest/sflow.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rows(const ing_batch *b, size_t before, int rc)
{
    if (rc < 0 && b->n != before)
        abort();
    if (rc >= 0 && (size_t)rc != b->n - before)
        abort();
    for (size_t i = before; i < b->n; i++) {
        const eng_flow *f = &b->rows[i];
        if (f->sampling == 0 || f->packets != f->sampling || f->bytes % f->sampling != 0 ||
            f->first_ms != f->last_ms || f->flow_type != ENG_FT_SFLOW5 || f->vlan > 4095)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static eng_flow rows[ING_SFLOW_MAX_SAMPLES];
    static const uint32_t protos[] = {ING_PKT_ETHERNET, ING_PKT_IPV4, ING_PKT_IPV6, 2};
    ing_sflow_state *st;
    ns_addr from;
    uint32_t seq, sub;
    uint8_t *pkt = malloc(size ? size : 1);
    if (!pkt || ing__sflow_state_new(&st) < 0)
        abort();
    if (size)
        memcpy(pkt, data, size);

    for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++) {
        eng_flow f = {0};
        int rc = ing__packet_decode(ns_cur_make(pkt, size), protos[i], &f);
        if (rc > 0 || f.vlan > 4095)
            abort();
    }

    if (size >= 4) {
        pkt[0] = pkt[1] = pkt[2] = 0;
        pkt[3] = 5;
    }
    ns_addr_from_v4(&from, 0xc0000201u);
    ing_batch b = {.rows = rows, .n = 0, .cap = ING_SFLOW_MAX_SAMPLES};
    int rc = ing__sflow_decode(st, &from, 1700000000000LL, pkt, size, &b, &seq, &sub);
    check_rows(&b, 0, rc);
    uint64_t dropped = st->rows_dropped;
    if (dropped != 0)
        abort(); /* a batch as large as the sample cap never fills */

    ing_batch one = {.rows = rows, .n = 0, .cap = 1};
    rc = ing__sflow_decode(st, &from, 1700000001000LL, pkt, size, &one, &seq, &sub);
    check_rows(&one, 0, rc);
    if (b.n > 1 && st->rows_dropped != b.n - 1)
        abort();

    ns_buf j = {0};
    ing__sflow_json(st, &j);
    if (!j.oom && (!j.p || j.p[0] != ',' || j.p[j.len - 1] != '}'))
        abort();
    ns_buf_free(&j);
    if (st->nifs > ING_SFLOW_MAX_IFS)
        abort();
    ing__sflow_state_free(st);
    free(pkt);
    return 0;
}
