/* Fuzz target: NetFlow v9 message sequences through ing_decode (see nf_sequence.h). */
#include "test/fuzz/nf_sequence.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_nf_sequence(data, size, 9);
}
