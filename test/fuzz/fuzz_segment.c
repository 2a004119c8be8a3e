/* Fuzz target: the segment reader on arbitrary bytes (footer, directory, column decoding).
 * Decoded rows must stay within what the footer announced. Each input is read twice: as it is,
 * and with its checksums made right again (every column blob's XXH64 in its directory entry,
 * then the footer's in the trailer), because a mutated byte almost never passes a checksum and
 * the fuzzer would otherwise never get past them to the directory checks, zstd and the column
 * decoders. The same bytes also go to the column decoders directly, read as a dictionary or
 * exporter table (decode_raw) and as a table by an address's dictionary (decode_byaddr). */
#include "engine/store.h"
#include "engine/store_int.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rewrites the checksums FORMAT.md places: trailer (24 B) = footer length, footer XXH64, end
 * magic; directory entries (48 B each, after the footer's fixed part: 48 bytes in version 2, 88
 * in version 3, 96 in versions 4 and 5, 128 from version 6) hold the blob's offset at +16,
 * compressed size at +24 and XXH64 at +40; version 3's index blob has its offset at +48, size at
 * +56 and XXH64 at +72 of the fixed part; version 6's address totals blob its offset at +96, size
 * at +104 and XXH64 at +120. Leaves bytes alone where the layout does not fit. */
static bool fix_checksums(uint8_t *b, size_t size)
{
    if (size < 16 + 24 + 48)
        return false;
    uint32_t version = (uint32_t)b[8] | (uint32_t)b[9] << 8;
    uint64_t fixed = version >= 6 ? 128 : version >= 4 ? 96 : version >= 3 ? 88 : 48;
    uint64_t flen = ns_get_le64(b + size - 24);
    if (flen < fixed || flen > size - 24)
        return false;
    uint8_t *footer = b + size - 24 - flen;
    /* The reader refuses more than ENG_SEG_MAX_ROWS rows before allocating; below that, a
     * footer claiming a million rows costs a 136 MB allocation per input: keep inputs small so
     * the fuzzer stays fast. */
    if (ns_get_le64(footer) > (1u << 20))
        return false;
    for (uint64_t e = fixed; e + 48 <= flen && e < fixed + 25 * 48; e += 48) {
        uint64_t off = ns_get_le64(footer + e + 16), len = ns_get_le64(footer + e + 24);
        if (off <= size && len <= size - off)
            ns_put_le64(footer + e + 40, XXH64(b + off, (size_t)len, 0));
    }
    if (version >= 3) {
        uint64_t off = ns_get_le64(footer + 48), len = ns_get_le64(footer + 56);
        if (off <= size && len <= size - off)
            ns_put_le64(footer + 72, XXH64(b + off, (size_t)len, 0));
    }
    if (version >= 6) { /* the address totals blob: offset +96, size +104, XXH64 +120 */
        uint64_t off = ns_get_le64(footer + 96), len = ns_get_le64(footer + 104);
        if (len && off <= size && len <= size - off)
            ns_put_le64(footer + 120, XXH64(b + off, (size_t)len, 0));
    }
    ns_put_le64(b + size - 16, XXH64(footer, (size_t)flen, 0));
    return true;
}

static void decode(const uint8_t *data, size_t size)
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
}

/* The format 5 column decoders on the input taken as a column's bytes after decompression (a
 * mutated segment rarely keeps a zstd frame intact, so they are fed directly too): byte 0 picks
 * the rows (0 to 127) and, in its high bit, source_id by exporter (row i's exporter
 * ::ffff:127.0.0.(i mod 4)) instead of a destination dictionary. */
static void decode_raw(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t n = data[0] & 0x7f;
    bool byexp = data[0] & 0x80;
    uint8_t *exp = calloc(n ? n : 1, 16), *out = malloc(n ? n * 16 : 1);
    if (exp && out) {
        for (size_t i = 0; i < n; i++) {
            exp[i * 16 + 10] = exp[i * 16 + 11] = 0xff;
            exp[i * 16 + 12] = 127;
            exp[i * 16 + 15] = (uint8_t)(i % 4);
        }
        /* exact-size copy: ASan sees any overread */
        uint8_t *raw = malloc(size - 1 ? size - 1 : 1);
        if (raw) {
            memcpy(raw, data + 1, size - 1);
            (void)eng__col_decode_raw(byexp ? ENG_COL_SOURCE_ID : ENG_COL_DST, byexp ? 5u : 4u, raw,
                                      size - 1, n, exp, out);
            free(raw);
        }
    }
    free(exp);
    free(out);
}

/* The columns version 7 may code by an address's dictionary (ENC_BY_ADDR): the source's AS,
 * input interface and mask, the destination's next hop, AS, output interface and mask, as
 * docs/FORMAT.md lists them (written out here, not taken from the engine, so the target checks
 * the decoder's choice). */
static const eng_col byaddr_cols[] = {
    ENG_COL_SRC_AS, ENG_COL_IN_IF,  ENG_COL_SRC_MASK, ENG_COL_NEXTHOP,
    ENG_COL_DST_AS, ENG_COL_OUT_IF, ENG_COL_DST_MASK,
};
#define NBYADDR (sizeof byaddr_cols / sizeof byaddr_cols[0])

static bool follows_address(unsigned c)
{
    for (size_t k = 0; k < NBYADDR; k++)
        if ((unsigned)byaddr_cols[k] == c)
            return true;
    return false;
}

/* The by-address decoder (version 7) on the input read another way: byte 0 picks the column
 * (below 0x80 one of the seven that follow an address; else any column, or one past the last,
 * most of which follow none), bytes 1-2 the address dictionary's values m (little-endian, low
 * 12 bits), byte 3 the rows n, then n codes of 2 bytes each taken modulo m (a decoded dictionary
 * never has a code of m or more; no rows when m is 0), and the rest is the table. The decoder
 * must accept exactly a column that follows an address with a table of m * width bytes, and then
 * hand each row byte k of its code's value from plane k. */
static void decode_byaddr(const uint8_t *data, size_t size)
{
    if (size < 4)
        return;
    unsigned c = data[0] < 0x80 ? (unsigned)byaddr_cols[data[0] % NBYADDR]
                                : (data[0] & 0x7fu) % (ENG_NCOLS + 1u);
    /* m below 4096: a table the fuzzer can make whole (inputs stay within 4 KB) at every width;
     * values for up to 65,535 cost a 1 MB dictionary per input and made the target 14x slower */
    size_t m = ((size_t)data[1] | (size_t)data[2] << 8) & 0xfff, n = m ? data[3] : 0;
    if (size < 4 + 2 * n)
        return;
    const uint8_t *in = data + 4 + 2 * n;
    size_t rsize = size - 4 - 2 * n;
    /* exact sizes throughout: ASan sees any read past the values, codes or table */
    uint8_t *vals = malloc(m ? m * 16 : 1), *raw = malloc(rsize ? rsize : 1),
            *out = malloc(n ? n * 16 : 1);
    uint32_t *codes = malloc(n ? n * sizeof *codes : 1);
    if (vals && raw && out && codes) {
        for (size_t j = 0; j < m; j++) { /* distinct and ascending, as a dictionary's are */
            memset(vals + j * 16, 0, 14);
            vals[j * 16 + 14] = (uint8_t)(j >> 8);
            vals[j * 16 + 15] = (uint8_t)j;
        }
        for (size_t i = 0; i < n; i++)
            codes[i] = (uint32_t)(((size_t)data[4 + 2 * i] | (size_t)data[5 + 2 * i] << 8) % m);
        memcpy(raw, in, rsize);
        eng_coldict key = {m, vals, codes};
        int rc = eng__col_decode_byaddr((eng_col)c, raw, rsize, n, &key, out);
        size_t w = c < ENG_NCOLS ? eng_col_width((eng_col)c) : 0;
        bool ok = follows_address(c) && rsize == m * w;
        if (rc != (ok ? 0 : NS_E_CORRUPT))
            abort();
        for (size_t i = 0; ok && i < n; i++)
            for (size_t k = 0; k < w; k++)
                if (out[i * w + k] != raw[k * m + codes[i]])
                    abort();
    }
    free(vals);
    free(raw);
    free(out);
    free(codes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode(data, size);
    decode_raw(data, size);
    decode_byaddr(data, size);
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (fix_checksums(copy, size))
        decode(copy, size);
    free(copy);
    return 0;
}
