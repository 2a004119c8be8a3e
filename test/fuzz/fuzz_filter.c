/* Fuzz target: the filter compiler (engine/filter.c) on arbitrary text, as the HTTP API hands
 * it over. Beyond "no crash, no leak, no UB" it checks: an error leaves *out NULL and names a
 * column inside the text (or just past it); a compiled filter reads only the columns it
 * declares (rows that differ outside them match alike); and a matching row has its src or dst
 * in the derived address set. */
#include "engine/query.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { NROWS = 6 };

static void make_rows(eng_flow *rows)
{
    static const char *const srcs[NROWS] = {"10.0.0.1", "192.168.1.2", "2001:db8::1",
                                            "10.0.0.2", "8.8.8.8",     "::"};
    static const char *const dsts[NROWS] = {"172.16.5.4", "10.0.0.1", "2001:db8:1::53",
                                            "10.0.0.1",   "1.1.1.1",  "ff02::1"};
    static const uint8_t protos[NROWS] = {6, 17, 17, 1, 6, 58};
    for (int i = 0; i < NROWS; i++) {
        eng_flow *r = &rows[i];
        memset(r, 0, sizeof *r);
        r->first_ms = 1700000000000LL + i * 1000;
        r->last_ms = r->first_ms + (i % 3) * 1500;
        r->packets = (uint64_t)(i * 7 + (i == 5 ? 0 : 1));
        r->bytes = (uint64_t)i * 1500 + 40;
        if (i == 4)
            r->bytes = UINT64_MAX; /* rates must not overflow */
        if (i == 5) {
            r->first_ms = INT64_MIN;
            r->last_ms = INT64_MAX;
        }
        ns_addr_parse(srcs[i], &r->src);
        ns_addr_parse(dsts[i], &r->dst);
        ns_addr_from_v4(&r->exporter, 0xc0000201u + (uint32_t)(i % 2));
        ns_addr_from_v4(&r->nexthop, 0x0a0000feu);
        r->src_as = (uint32_t)i * 1000;
        r->dst_as = i == 3 ? UINT32_MAX : 64500;
        r->in_if = (uint32_t)i;
        r->out_if = (uint32_t)(i + 1);
        r->sampling = 1;
        r->src_port = (uint16_t)(i == 3 ? 0 : 1024 + i);
        r->dst_port = (uint16_t)(i == 3 ? 8 << 8 : i == 0 ? 443 : 53);
        r->proto = protos[i];
        r->tcp_flags = (uint8_t)(0x12 + i * 37);
        r->tos = (uint8_t)(i * 40);
        r->src_mask = (uint8_t)(8 * i);
        r->dst_mask = (uint8_t)(128 - 8 * i);
        r->vlan = (uint16_t)(i * 100);
        r->direction = (uint8_t)(i % 3);
        r->flow_type = ENG_FT_IPFIX;
    }
}

/* A copy of r with every column outside mask taken from other. */
static eng_flow keep_columns(const eng_flow *r, const eng_flow *other, uint32_t mask)
{
    eng_flow m = *other;
#define KEEP(col, field)                                                                           \
    if (mask & ENG_COLMASK(ENG_COL_##col))                                                         \
        m.field = r->field;
    KEEP(FIRST, first_ms)
    KEEP(LAST, last_ms)
    KEEP(PACKETS, packets)
    KEEP(BYTES, bytes)
    KEEP(EXPORTER, exporter)
    KEEP(SRC, src)
    KEEP(DST, dst)
    KEEP(NEXTHOP, nexthop)
    KEEP(SRC_AS, src_as)
    KEEP(DST_AS, dst_as)
    KEEP(IN_IF, in_if)
    KEEP(OUT_IF, out_if)
    KEEP(SAMPLING, sampling)
    KEEP(SOURCE_ID, source_id)
    KEEP(SRC_PORT, src_port)
    KEEP(DST_PORT, dst_port)
    KEEP(PROTO, proto)
    KEEP(TCP_FLAGS, tcp_flags)
    KEEP(TOS, tos)
    KEEP(SRC_MASK, src_mask)
    KEEP(DST_MASK, dst_mask)
    KEEP(VLAN, vlan)
    KEEP(DIRECTION, direction)
    KEEP(FLOW_TYPE, flow_type)
#undef KEEP
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static eng_flow rows[NROWS];
    static bool init;
    static char text[QRY_FILTER_MAX_LEN + 64];
    char err[256];
    if (!init) {
        make_rows(rows);
        init = true;
    }
    /* a bit past the cap, so the length check is exercised too */
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = 0;

    qry_filter *f = (qry_filter *)text; /* must be overwritten */
    int rc = qry_filter_compile(text, &f, err, sizeof err);
    if (rc != 0) {
        unsigned col = 0;
        if (f != NULL)
            abort();
        if (rc != NS_E_PARSE && rc != NS_E_TOO_MANY && rc != NS_E_NOMEM)
            abort();
        if (rc != NS_E_NOMEM &&
            (sscanf(err, "col %u: ", &col) != 1 || col == 0 || col > strlen(text) + 1))
            abort();
        return 0;
    }
    if (f == NULL)
        abort();
    uint32_t cols = qry_filter_columns(f);
    ns_addr set[32];
    size_t nset = qry_filter_addrs(f, set, 32);
    for (int i = 0; i < NROWS; i++) {
        bool m = qry_filter_match(f, &rows[i]);
        eng_flow mixed = keep_columns(&rows[i], &rows[(i + 1) % NROWS], cols);
        if (qry_filter_match(f, &mixed) != m)
            abort();
        if (m && nset) {
            bool in = false;
            for (size_t k = 0; k < nset; k++)
                in |= !memcmp(&set[k], &rows[i].src, sizeof(ns_addr)) ||
                      !memcmp(&set[k], &rows[i].dst, sizeof(ns_addr));
            if (!in)
                abort();
        }
    }
    qry_filter_free(f);
    return 0;
}
