/* Fuzz target: the saved template and sampler state (SESSIONDB/state/templates.bin), loaded at
 * start-up by ing_exporters_load. The file outlives the process that wrote it, so a crash, a
 * bad disk or a hand edit may leave anything in it: a damaged image is refused, never half
 * trusted past its checksum, and never crashes or leaks. Each input is loaded twice: as it is,
 * and with its trailing XXH64 made right (a mutated byte almost never passes it, and the
 * fuzzer would otherwise never reach the template reader). What a load accepted is then saved
 * and loaded into a fresh table, which must accept it too: the writer and the reader agree. */
#include "ingest/ingest.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void load(const uint8_t *data, size_t size)
{
    ing_exporters *ex, *again;
    if (ing_exporters_new(8, &ex) < 0)
        abort();
    int rc = ing_exporters_load(ex, data, size);
    if (rc > 0) {
        ns_buf out = {0};
        ing_exporters_save(ex, &out);
        if (out.oom)
            abort();
        if (ing_exporters_new(8, &again) < 0)
            abort();
        if (ing_exporters_load(again, (const uint8_t *)out.p, out.len) < 0)
            abort(); /* what the reader took, the writer writes back readably */
        ing_exporters_free(again);
        ns_buf_free(&out);
    }
    ing_exporters_free(ex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ns_log_set_level(NS_LOG_ERROR);
    if (size > (1u << 20))
        return 0;
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    load(copy, size);
    if (size >= 24) {
        ns_put_le64(copy + size - 8, XXH64(copy, size - 8, 0));
        load(copy, size);
    }
    free(copy);
    return 0;
}
