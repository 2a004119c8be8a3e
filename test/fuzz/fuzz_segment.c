/* Fuzz target: the segment reader on arbitrary bytes (footer, directory, column decoding).
 * Decoded rows must stay within what the footer announced. */
#include "engine/store.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eng_flow *rows = NULL;
    size_t n = 0;
    int rc = eng_seg_decode_mem(data, size, &rows, &n);
    if (rc == 0) {
        volatile uint64_t sink = 0;
        for (size_t i = 0; i < n; i++)
            sink += rows[i].bytes; /* touch every row: ASan checks the allocation */
        (void)sink;
        free(rows);
    } else if (rows) {
        abort(); /* on failure nothing is handed out */
    }
    return 0;
}
