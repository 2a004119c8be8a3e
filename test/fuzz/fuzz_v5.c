/* Fuzz target: NetFlow v5 through ing_decode (dispatch, decoder, exporter bookkeeping).
 * The invariant checked beyond "no crash": a datagram adds either all its records or none. */
#include "ingest/ingest.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ing_exporters *ex;
    static eng_flow rows[64];
    ing_batch b = {.rows = rows, .n = 0, .cap = 64};
    ns_addr from;
    if (!ex) {
        ns_log_set_level(NS_LOG_ERROR);
        if (ing_exporters_new(64, &ex) < 0)
            abort();
    }
    /* the first byte picks one of a few exporters so sequence tracking sees several */
    ns_addr_from_v4(&from, 0xc0000200u | (size ? data[0] % 8u : 0u));
    int rc = ing_decode(ex, &from, 1700000000000LL, data, size, &b);
    if (rc < 0 && b.n != 0)
        abort();
    if (rc >= 0 && (size_t)rc != b.n)
        abort();
    return 0;
}
