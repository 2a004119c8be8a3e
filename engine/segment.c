/* engine/segment.c — one minute of flows as a columnar segment file.
 *
 * Layout (fixed little-endian; docs/FORMAT.md has the full tables):
 *
 *   OFFSET  SIZE  FIELD
 *   0       8     magic "NS2FSEG\0"
 *   8       4     format version (6; 2 to 5 are still read)
 *   12      4     flags (0)
 *   16      ...   column blobs, each zstd-compressed after its encoding
 *   I       ...   v3: address index blob (zstd): per side (src, dst) hash buckets -> row blocks;
 *                 v5: the src side may be fences instead (rows sorted by src)
 *   A       ...   v6: address totals blob (zstd), when some address is on enough rows
 *   F       ...   footer: totals, v3 index directory, column directory (48 bytes a column),
 *                 v3 bloom filter over every src and dst address
 *   end-24  8     footer length (bytes from F to end-24)
 *   end-16  8     xxh64 of the footer
 *   end-8   8     magic "NS2FEND\0"
 *
 * The footer sits at the end so a file is written front to back once and opened by reading
 * its last bytes. Every column and the index have their own xxh64 so one flipped byte names
 * the region. The bloom filter lives in the footer so a segment without an address is skipped
 * after the one read that opening needs anyway. */
#include "engine/store.h"
#include "engine/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
/* xxhash inlined: the writer hashes two addresses a row, and the library's call (through the
 * PLT, with its length dispatch) cost more than the 16-byte hash itself */
#define XXH_INLINE_ALL
#include <xxhash.h>
/* ZSTD_c_literalCompressionMode (blob_nolit) is among zstd's experimental parameters */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define SEG_MAGIC "NS2FSEG"
#define SEG_END   "NS2FEND"
#define SEG_VERSION                                                                                \
    7u /* 2: vlan, direction, flow_type columns; 3: address index, bloom;                          \
        * 4: flows column (roll-up rows), flows total in the footer;                               \
        * 5: dictionary-coded addresses, source_id by exporter, ports plain;                       \
        * 6: per-address totals of the busiest addresses;                                          \
        * 7: columns that follow an address (AS, interface, next hop, mask) by its dictionary */
#define SEG_HDR           16u
#define SEG_TRAILER       24u
#define SEG_FOOTER_FIXED  48u  /* version 2 */
#define SEG_FOOTER_V3     88u  /* version 3: + index directory and bloom size */
#define SEG_FOOTER_V4     96u  /* version 4: + flows total */
#define SEG_FOOTER_V6     128u /* version 6: + address totals directory */
#define SEG_COLDIR        48u
#define SEG_BLOOM_MAX     (1u << 20) /* bloom words (8 MB): a cap for readers */
#define SEG_BLOOM_BITS    10u        /* bits per distinct address: about 1% false positives */
#define SEG_BLOOM_K       6u
#define SEG_IDX_SHIFT_MIN 4u /* the index names blocks of 16 to 1024 rows: few enough that */
#define SEG_IDX_SHIFT_MAX                                                                          \
    10u /* block numbers stay short (the columns are decoded whole anyway)                         \
         */
#define SEG_IDX_HDR    16u
#define SEG_IDX_FENCES 1u /* index flag (v5): the source side is fences, rows sorted by source */
/* The writer never makes bigger segments (the database starts a new buffer first), so a reader
 * refuses more before allocating for them: a forged footer cannot make it allocate gigabytes
 * (a scan decodes a segment's rows at once: this many rows is ~570 MB) */
#define SEG_MAX_ROWS ENG_SEG_MAX_ROWS
/* zstd level 1: the encoded columns (planes, varints, codes) leave zstd little to find, so
 * level 3 stored the benchmark's 10M flows within 0.01% of level 1's size, for a third more
 * compression time (5% of sealing) */
#define SEG_ZSTD_LEVEL 1

enum {
    ENC_PLAIN = 0,
    ENC_TRANSPOSE = 1,
    ENC_DELTA_VARINT = 2,
    ENC_SPAN_VARINT = 3,
    ENC_DICT = 4,        /* v5: sorted distinct values, then each row's code (src, dst) */
    ENC_BY_EXPORTER = 5, /* v5: one value per exporter address (source_id) */
    ENC_BY_ADDR = 6,     /* v7: one value per value of the src or dst dictionary (byaddr_key) */
};
/* A dictionary pays when values repeat: the writer keeps the byte planes past this share of
 * distinct values. A by-exporter table holds at most this many exporters. */
#define SEG_DICT_MAX_SHARE 2u /* at most n / 2 distinct */
#define SEG_BYEXP_MAX      256u
/* Address totals (v6) list every address on at least max(n >> SHIFT, MIN) rows (as src, dst or
 * both): at most 2^(SHIFT+1) entries, a few KB, for the addresses whose one-host summary would
 * otherwise decode most of the segment. */
#define SEG_ATOT_SHIFT 10u
#define SEG_ATOT_MIN   64u

/* Width in bytes of each column's raw value, in eng_col order. */
static const uint8_t col_width[ENG_NCOLS] = {
    [ENG_COL_FIRST] = 8,    [ENG_COL_LAST] = 8,      [ENG_COL_PACKETS] = 8,
    [ENG_COL_BYTES] = 8,    [ENG_COL_EXPORTER] = 16, [ENG_COL_SRC] = 16,
    [ENG_COL_DST] = 16,     [ENG_COL_NEXTHOP] = 16,  [ENG_COL_SRC_AS] = 4,
    [ENG_COL_DST_AS] = 4,   [ENG_COL_IN_IF] = 4,     [ENG_COL_OUT_IF] = 4,
    [ENG_COL_SAMPLING] = 4, [ENG_COL_SOURCE_ID] = 4, [ENG_COL_SRC_PORT] = 2,
    [ENG_COL_DST_PORT] = 2, [ENG_COL_PROTO] = 1,     [ENG_COL_TCP_FLAGS] = 1,
    [ENG_COL_TOS] = 1,      [ENG_COL_SRC_MASK] = 1,  [ENG_COL_DST_MASK] = 1,
    [ENG_COL_VLAN] = 2,     [ENG_COL_DIRECTION] = 1, [ENG_COL_FLOW_TYPE] = 1,
    [ENG_COL_FLOWS] = 8,
};

/* Where each column lives in eng_flow: on a little-endian host a value's bytes in memory are
 * already the file's byte order, so hot loops copy them instead of switching per value. */
#define OFF(f) offsetof(eng_flow, f)
static const size_t col_off[ENG_NCOLS] = {
    [ENG_COL_FIRST] = OFF(first_ms),
    [ENG_COL_LAST] = OFF(last_ms),
    [ENG_COL_PACKETS] = OFF(packets),
    [ENG_COL_BYTES] = OFF(bytes),
    [ENG_COL_EXPORTER] = OFF(exporter),
    [ENG_COL_SRC] = OFF(src),
    [ENG_COL_DST] = OFF(dst),
    [ENG_COL_NEXTHOP] = OFF(nexthop),
    [ENG_COL_SRC_AS] = OFF(src_as),
    [ENG_COL_DST_AS] = OFF(dst_as),
    [ENG_COL_IN_IF] = OFF(in_if),
    [ENG_COL_OUT_IF] = OFF(out_if),
    [ENG_COL_SAMPLING] = OFF(sampling),
    [ENG_COL_SOURCE_ID] = OFF(source_id),
    [ENG_COL_SRC_PORT] = OFF(src_port),
    [ENG_COL_DST_PORT] = OFF(dst_port),
    [ENG_COL_PROTO] = OFF(proto),
    [ENG_COL_TCP_FLAGS] = OFF(tcp_flags),
    [ENG_COL_TOS] = OFF(tos),
    [ENG_COL_SRC_MASK] = OFF(src_mask),
    [ENG_COL_DST_MASK] = OFF(dst_mask),
    [ENG_COL_VLAN] = OFF(vlan),
    [ENG_COL_DIRECTION] = OFF(direction),
    [ENG_COL_FLOW_TYPE] = OFF(flow_type),
    [ENG_COL_FLOWS] = OFF(flows),
};
#undef OFF
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SEG_HOST_LE 1
#else
#define SEG_HOST_LE 0
#endif

static const char *const col_names[ENG_NCOLS] = {
    "first_ms", "last_ms",   "packets",   "bytes",     "exporter", "src",      "dst",
    "nexthop",  "src_as",    "dst_as",    "in_if",     "out_if",   "sampling", "source_id",
    "src_port", "dst_port",  "proto",     "tcp_flags", "tos",      "src_mask", "dst_mask",
    "vlan",     "direction", "flow_type", "flows",
};

const char *eng_col_name(eng_col c)
{
    return (unsigned)c < ENG_NCOLS ? col_names[c] : "?";
}

/* The encoding every version writes for column c (the only one before version 5). */
static uint32_t col_encoding(eng_col c)
{
    if (c == ENG_COL_FIRST)
        return ENC_DELTA_VARINT;
    if (c == ENG_COL_LAST)
        return ENC_SPAN_VARINT;
    return col_width[c] == 1 ? ENC_PLAIN : ENC_TRANSPOSE;
}

/* The address column whose dictionary an ENC_BY_ADDR column (version 7) follows, else
 * ENG_NCOLS. What routing makes a property of an address: its AS, mask and interface (the
 * source's are where it came in, the destination's where it goes out, with the next hop). */
static eng_col byaddr_key(eng_col c)
{
    switch (c) {
    case ENG_COL_SRC_AS:
    case ENG_COL_IN_IF:
    case ENG_COL_SRC_MASK:
        return ENG_COL_SRC;
    case ENG_COL_NEXTHOP:
    case ENG_COL_DST_AS:
    case ENG_COL_OUT_IF:
    case ENG_COL_DST_MASK:
        return ENG_COL_DST;
    default:
        return ENG_NCOLS;
    }
}

/* Whether a version's file may hold column c in encoding enc. Version 5 adds choices the writer
 * makes by the data: a dictionary for source and destination addresses (when values repeat),
 * a per-exporter table for source_id (when each exporter sends one), and ports as plain
 * little-endian values (measured smaller than byte planes: a port's two bytes belong together).
 * Version 7 adds a table by the source's or destination's dictionary for the columns that
 * follow an address (when every row with one address has one value). */
static bool enc_allowed(eng_col c, uint32_t version, uint32_t enc)
{
    if (enc == col_encoding(c))
        return true;
    if (version < 5)
        return false;
    switch (c) {
    case ENG_COL_SRC:
    case ENG_COL_DST:
        return enc == ENC_DICT;
    case ENG_COL_SOURCE_ID:
        return enc == ENC_BY_EXPORTER;
    case ENG_COL_SRC_PORT:
    case ENG_COL_DST_PORT:
        return enc == ENC_PLAIN;
    default:
        return version >= 7 && enc == ENC_BY_ADDR && byaddr_key(c) != ENG_NCOLS;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Value access: one column's value of a row as little-endian bytes, and back. */

static void row_get(const eng_flow *r, eng_col c, uint8_t *out)
{
    switch (c) {
    case ENG_COL_FIRST:
        ns_put_le64(out, (uint64_t)r->first_ms);
        break;
    case ENG_COL_LAST:
        ns_put_le64(out, (uint64_t)r->last_ms);
        break;
    case ENG_COL_PACKETS:
        ns_put_le64(out, r->packets);
        break;
    case ENG_COL_BYTES:
        ns_put_le64(out, r->bytes);
        break;
    case ENG_COL_EXPORTER:
        memcpy(out, r->exporter.b, 16);
        break;
    case ENG_COL_SRC:
        memcpy(out, r->src.b, 16);
        break;
    case ENG_COL_DST:
        memcpy(out, r->dst.b, 16);
        break;
    case ENG_COL_NEXTHOP:
        memcpy(out, r->nexthop.b, 16);
        break;
    case ENG_COL_SRC_AS:
        ns_put_le32(out, r->src_as);
        break;
    case ENG_COL_DST_AS:
        ns_put_le32(out, r->dst_as);
        break;
    case ENG_COL_IN_IF:
        ns_put_le32(out, r->in_if);
        break;
    case ENG_COL_OUT_IF:
        ns_put_le32(out, r->out_if);
        break;
    case ENG_COL_SAMPLING:
        ns_put_le32(out, r->sampling);
        break;
    case ENG_COL_SOURCE_ID:
        ns_put_le32(out, r->source_id);
        break;
    case ENG_COL_SRC_PORT:
        ns_put_le16(out, r->src_port);
        break;
    case ENG_COL_DST_PORT:
        ns_put_le16(out, r->dst_port);
        break;
    case ENG_COL_PROTO:
        out[0] = r->proto;
        break;
    case ENG_COL_TCP_FLAGS:
        out[0] = r->tcp_flags;
        break;
    case ENG_COL_TOS:
        out[0] = r->tos;
        break;
    case ENG_COL_SRC_MASK:
        out[0] = r->src_mask;
        break;
    case ENG_COL_DST_MASK:
        out[0] = r->dst_mask;
        break;
    case ENG_COL_VLAN:
        ns_put_le16(out, r->vlan);
        break;
    case ENG_COL_DIRECTION:
        out[0] = r->direction;
        break;
    case ENG_COL_FLOW_TYPE:
        out[0] = r->flow_type;
        break;
    case ENG_COL_FLOWS:
        ns_put_le64(out, r->flows);
        break;
    case ENG_NCOLS:
        break;
    }
}

static void row_set(eng_flow *r, eng_col c, const uint8_t *in)
{
    ns_cur cur = ns_cur_make(in, col_width[c]);
    uint64_t v64 = 0;
    uint32_t v32 = 0;
    uint16_t v16 = 0;
    switch (c) {
    case ENG_COL_FIRST:
        ns_cur_le64(&cur, &v64);
        r->first_ms = (int64_t)v64;
        break;
    case ENG_COL_LAST:
        ns_cur_le64(&cur, &v64);
        r->last_ms = (int64_t)v64;
        break;
    case ENG_COL_PACKETS:
        ns_cur_le64(&cur, &r->packets);
        break;
    case ENG_COL_BYTES:
        ns_cur_le64(&cur, &r->bytes);
        break;
    case ENG_COL_EXPORTER:
        memcpy(r->exporter.b, in, 16);
        break;
    case ENG_COL_SRC:
        memcpy(r->src.b, in, 16);
        break;
    case ENG_COL_DST:
        memcpy(r->dst.b, in, 16);
        break;
    case ENG_COL_NEXTHOP:
        memcpy(r->nexthop.b, in, 16);
        break;
    case ENG_COL_SRC_AS:
        ns_cur_le32(&cur, &r->src_as);
        break;
    case ENG_COL_DST_AS:
        ns_cur_le32(&cur, &r->dst_as);
        break;
    case ENG_COL_IN_IF:
        ns_cur_le32(&cur, &r->in_if);
        break;
    case ENG_COL_OUT_IF:
        ns_cur_le32(&cur, &r->out_if);
        break;
    case ENG_COL_SAMPLING:
        ns_cur_le32(&cur, &r->sampling);
        break;
    case ENG_COL_SOURCE_ID:
        ns_cur_le32(&cur, &v32);
        r->source_id = v32;
        break;
    case ENG_COL_SRC_PORT:
        ns_cur_le16(&cur, &r->src_port);
        break;
    case ENG_COL_DST_PORT:
        ns_cur_le16(&cur, &v16);
        r->dst_port = v16;
        break;
    case ENG_COL_PROTO:
        r->proto = in[0];
        break;
    case ENG_COL_TCP_FLAGS:
        r->tcp_flags = in[0];
        break;
    case ENG_COL_TOS:
        r->tos = in[0];
        break;
    case ENG_COL_SRC_MASK:
        r->src_mask = in[0];
        break;
    case ENG_COL_DST_MASK:
        r->dst_mask = in[0];
        break;
    case ENG_COL_VLAN:
        ns_cur_le16(&cur, &r->vlan);
        break;
    case ENG_COL_DIRECTION:
        r->direction = in[0];
        break;
    case ENG_COL_FLOW_TYPE:
        r->flow_type = in[0];
        break;
    case ENG_COL_FLOWS:
        ns_cur_le64(&cur, &r->flows);
        break;
    case ENG_NCOLS:
        break;
    }
}

/* a - b modulo 2^64: far-apart times must not overflow (the decoder adds the same way) */
static int64_t wrap_sub(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a - (uint64_t)b);
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* put_varint without a branch per byte for values below 2^28 (the times' deltas and spans,
 * whose lengths vary row to row): the four 7-bit groups spread into one word, the continuation
 * bits of all but the last byte set, four bytes stored (p needs 4 bytes of room; 1 to 4 are
 * the varint). */
static inline size_t put_varint_fast(uint8_t *p, uint64_t v)
{
    if (v >= 1u << 28)
        return put_varint(p, v);
    uint32_t x = (uint32_t)v;
    size_t len = 1u + (x >= 1u << 7) + (x >= 1u << 14) + (size_t)(x >= 1u << 21);
    uint32_t w = (x & 0x7fu) | (x << 1 & 0x7f00u) | (x << 2 & 0x7f0000u) | (x << 3 & 0x7f000000u);
    w |= 0x808080u & ((1u << (8 * (len - 1))) - 1u);
    uint8_t b[4] = {(uint8_t)w, (uint8_t)(w >> 8), (uint8_t)(w >> 16), (uint8_t)(w >> 24)};
    memcpy(p, b, 4);
    return len;
}

/* get_varint, inlined where a column's values are decoded (a call a value was a fifth of
 * decoding a dictionary's values). */
static inline __attribute__((always_inline)) bool get_varint_inl(ns_cur *c, uint64_t *out)
{
    if (c->left >= 10) {
        /* the longest varint is inside the cursor: no check a byte (the decoder's hot loop).
         * Up to 8 bytes at once without a branch a byte: the lengths of time deltas vary row
         * by row, and mispredicted branches were most of the decoding time. */
        uint64_t x, stop;
        memcpy(&x, c->p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        x = __builtin_bswap64(x);
#endif
        stop = ~x & 0x8080808080808080ull; /* the high bit of each byte that ends a varint */
        if (stop) {
            unsigned len = (unsigned)__builtin_ctzll(stop) / 8 + 1;
            uint64_t v = len == 8 ? x : x & ((1ull << (8 * len)) - 1);
            v &= 0x7f7f7f7f7f7f7f7full; /* 7 bits a byte, gathered in three steps */
            v = (v & 0x007f007f007f007full) | ((v & 0x7f007f007f007f00ull) >> 1);
            v = (v & 0x00003fff00003fffull) | ((v & 0x3fff00003fff0000ull) >> 2);
            v = (v & 0x000000000fffffffull) | ((v & 0x0fffffff00000000ull) >> 4);
            ns_cur_skip(c, len);
            *out = v;
            return true;
        }
        const uint8_t *p = c->p;
        uint64_t v = 0;
        for (unsigned k = 0; k < 10; k++) {
            v |= (uint64_t)(p[k] & 0x7f) << (7 * k);
            if (!(p[k] & 0x80)) {
                ns_cur_skip(c, k + 1);
                *out = v;
                return true;
            }
        }
        return false;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (!ns_cur_u8(c, &b))
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false; /* more than 10 bytes: not ours */
}

static bool get_varint(ns_cur *c, uint64_t *out)
{
    return get_varint_inl(c, out);
}

static inline void transpose8x8(uint64_t x[8]);

/* w (2, 4 or 8) bytes at byte off of r as a little-endian number (on a little-endian host) */
static inline uint64_t seg_load_le(const eng_flow *r, size_t off, uint32_t w)
{
    const uint8_t *p = (const uint8_t *)r + off;
    uint16_t a;
    uint32_t b;
    uint64_t c;
    switch (w) {
    case 2:
        memcpy(&a, p, 2);
        return a;
    case 4:
        memcpy(&b, p, 4);
        return b;
    default:
        memcpy(&c, p, 8);
        return c;
    }
}

/* Little-endian fields of rows[0..m) into byte planes: byte k of row i to buf[k * stride + i].
 * The width a constant in each copy, as below. Eight rows at a time: their values' 8-byte
 * words, as an 8x8 byte matrix transposed, are 8 bytes of each plane, stored at once instead
 * of byte by byte (the rest of the rows one by one). */
#define SEG_TRANSPOSE(W)                                                                           \
    for (; i + 8 <= m; i += 8) {                                                                   \
        for (uint32_t j = 0; j < (W); j += 8) {                                                    \
            enum { WW_ = (W) < 8 ? (W) : 8 };                                                      \
            uint64_t x[8];                                                                         \
            for (int p = 0; p < 8; p++)                                                            \
                x[p] = seg_load_le(&rows[i + (size_t)p], off + j, WW_);                            \
            transpose8x8(x);                                                                       \
            for (uint32_t r = 0; r < WW_; r++)                                                     \
                memcpy(buf + (j + r) * stride + i, &x[r], 8);                                      \
        }                                                                                          \
    }                                                                                              \
    for (; i < m; i++) {                                                                           \
        uint8_t v[W];                                                                              \
        memcpy(v, (const uint8_t *)&rows[i] + off, (W));                                           \
        for (uint32_t k = 0; k < (W); k++)                                                         \
            buf[k * stride + i] = v[k];                                                            \
    }

static bool transpose(const eng_flow *rows, size_t m, size_t off, uint32_t w, uint8_t *buf,
                      size_t stride)
{
    size_t i = 0;
    switch (w) {
    case 2:
        SEG_TRANSPOSE(2)
        return true;
    case 4:
        SEG_TRANSPOSE(4)
        return true;
    case 8:
        SEG_TRANSPOSE(8)
        return true;
    case 16:
        SEG_TRANSPOSE(16)
        return true;
    default:
        return false;
    }
}

/* Encodes rows[0..m), rows start.. of a segment of n rows, into column c's buffer buf: the
 * planes of fixed-width columns at buf + k * n + start; varint columns appended at *vlen (prev:
 * the last row's first_ms before this block, for the deltas). */
static void col_encode_block(eng_col c, uint32_t enc, const eng_flow *rows, size_t m, size_t start,
                             size_t n, uint8_t *buf, size_t *vlen, int64_t *prev, bool fast)
{
    uint32_t w = col_width[c];
    switch (enc) {
    case ENC_DELTA_VARINT: {
        size_t used = *vlen;
        int64_t p = *prev;
        for (size_t i = 0; i < m; i++) {
            uint64_t v = zigzag(wrap_sub(rows[i].first_ms, p));
            used += fast ? put_varint_fast(buf + used, v) : put_varint(buf + used, v);
            p = rows[i].first_ms;
        }
        *vlen = used;
        *prev = p;
        return;
    }
    case ENC_SPAN_VARINT: {
        size_t used = *vlen;
        for (size_t i = 0; i < m; i++) {
            uint64_t v = zigzag(wrap_sub(rows[i].last_ms, rows[i].first_ms));
            used += fast ? put_varint_fast(buf + used, v) : put_varint(buf + used, v);
        }
        *vlen = used;
        return;
    }
    case ENC_TRANSPOSE: {
        /* Byte k of every value together: high bytes of ports, counters and v4-mapped
         * prefixes become long runs that zstd squeezes to nothing. */
        uint8_t v[16];
        if (SEG_HOST_LE && transpose(rows, m, col_off[c], w, buf + start, n))
            return;
        for (size_t i = 0; i < m; i++) {
            if (SEG_HOST_LE)
                memcpy(v, (const uint8_t *)&rows[i] + col_off[c], w);
            else
                row_get(&rows[i], c, v);
            for (uint32_t k = 0; k < w; k++)
                buf[k * n + start + i] = v[k];
        }
        return;
    }
    default: /* plain: each value's little-endian bytes, row after row */
        if (w == 1) {
            for (size_t i = 0; i < m; i++)
                buf[start + i] = *((const uint8_t *)&rows[i] + col_off[c]);
            return;
        }
        for (size_t i = 0; i < m; i++) {
            if (SEG_HOST_LE)
                memcpy(buf + (start + i) * w, (const uint8_t *)&rows[i] + col_off[c], w);
            else
                row_get(&rows[i], c, buf + (start + i) * w);
        }
        return;
    }
}

/* bytes column c's encoding of n rows may take */
static size_t col_cap(eng_col c, size_t n)
{
    uint32_t e = col_encoding(c);
    return e == ENC_DELTA_VARINT || e == ENC_SPAN_VARINT ? n * 10 : n * col_width[c];
}

/* The fused encoder of the fixed-width columns (all but the two times) on little-endian SSE2
 * hosts: a row's bytes are nine 16-byte chunks, and for 16 rows at a time a chunk's 16x16 byte
 * matrix transposed (four rounds of unpacks, 64 instructions) is 16 bytes of every byte plane
 * of every column in that chunk, stored at once. Column by column through 8x8 transposes in
 * general registers (col_encode_block, the reference it is tested against) took three times
 * the instructions; what is left is mostly the stores into the planes. */
#define SEG_CHUNKS (sizeof(eng_flow) / 16)
_Static_assert(sizeof(eng_flow) % 16 == 0, "rows are whole 16-byte chunks");

enum { FUSE_NONE = 0, FUSE_PLANE, FUSE_PAIR };

/* Where each byte of each chunk goes: kind (FUSE_PLANE: a byte plane, or a 1-byte plain
 * column, whose row 0 is at enc + to; FUSE_PAIR: a 2-byte plain column whose low byte this is,
 * the high one the next) and which columns it encodes. */
typedef struct fuse_map {
    uint8_t kind[SEG_CHUNKS][16];
    size_t to[SEG_CHUNKS][16];
    bool any[SEG_CHUNKS];
    bool col[ENG_NCOLS]; /* the columns fuse_encode writes; the others col_encode_block */
} fuse_map;

/* The map for a segment of n rows whose columns have encodings encs and regions coff in enc;
 * skip_src/skip_dst: those columns get no planes (their dictionaries hold). */
static void fuse_map_build(fuse_map *f, const uint32_t *encs, const size_t *coff, size_t n,
                           bool skip_src, bool skip_dst)
{
    memset(f, 0, sizeof *f);
    for (int c = 0; c < ENG_NCOLS; c++) {
        uint32_t w = col_width[c];
        size_t o = col_off[c];
        if ((c == ENG_COL_SRC && skip_src) || (c == ENG_COL_DST && skip_dst))
            continue;
        if (encs[c] == ENC_TRANSPOSE) {
            for (uint32_t k = 0; k < w; k++) {
                f->kind[(o + k) / 16][(o + k) % 16] = FUSE_PLANE;
                f->to[(o + k) / 16][(o + k) % 16] = coff[c] + k * n;
            }
        } else if (encs[c] == ENC_PLAIN && (w == 1 || w == 2)) {
            f->kind[o / 16][o % 16] = w == 1 ? FUSE_PLANE : FUSE_PAIR;
            f->to[o / 16][o % 16] = coff[c];
        } else {
            continue; /* the times' varints */
        }
        f->col[c] = true;
        f->any[o / 16] = true;
    }
}

#if defined(__SSE2__)
/* r[p] = byte row p of a 16x16 matrix; afterwards r[p] holds what was column p. Unrolled: in
 * loops the compiler kept the matrices in memory. */
static inline __attribute__((always_inline)) void transpose16x16(__m128i r[16])
{
    __m128i a[16], b[16];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) { /* bytes of rows 2k, 2k+1: a[2k] bytes 0-7, a[2k+1] 8-15 */
        a[2 * k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) { /* rows 4g..4g+3: b[4g+s] bytes 4s..4s+3 */
        b[4 * g] = _mm_unpacklo_epi16(a[4 * g], a[4 * g + 2]);
        b[4 * g + 1] = _mm_unpackhi_epi16(a[4 * g], a[4 * g + 2]);
        b[4 * g + 2] = _mm_unpacklo_epi16(a[4 * g + 1], a[4 * g + 3]);
        b[4 * g + 3] = _mm_unpackhi_epi16(a[4 * g + 1], a[4 * g + 3]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) /* rows 8h..8h+7: a[8h+2s] bytes 4s, 4s+1; a[8h+2s+1] 4s+2, 4s+3 */
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            a[8 * h + 2 * s] = _mm_unpacklo_epi32(b[8 * h + s], b[8 * h + 4 + s]);
            a[8 * h + 2 * s + 1] = _mm_unpackhi_epi32(b[8 * h + s], b[8 * h + 4 + s]);
        }
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++) { /* bytes 2t and 2t+1 of all 16 rows */
        r[2 * t] = _mm_unpacklo_epi64(a[t], a[8 + t]);
        r[2 * t + 1] = _mm_unpackhi_epi64(a[t], a[8 + t]);
    }
}

/* The columns of f for rows[0..m) (m a multiple of 16), rows start.. of the segment: a chunk
 * at a time over all the rows (in L2), so that few planes are written at once, each in one
 * run: every plane of every chunk 16 rows at a time left the hardware prefetcher a hundred
 * interleaved streams, and the stores waited on their lines. */
static void fuse_encode(const fuse_map *f, const eng_flow *rows, size_t m, size_t start,
                        uint8_t *enc)
{
    for (size_t q = 0; q < SEG_CHUNKS; q++) {
        if (!f->any[q])
            continue;
        for (size_t i = 0; i < m; i += 16) {
            const uint8_t *r0 = (const uint8_t *)&rows[i];
            __m128i r[16];
#pragma GCC unroll 16
            for (size_t p = 0; p < 16; p++)
                r[p] = _mm_loadu_si128(
                    (const __m128i *)(const void *)(r0 + p * sizeof(eng_flow) + 16 * q));
            transpose16x16(r);
#pragma GCC unroll 16
            for (int p = 0; p < 16; p++) {
                uint8_t *to = enc + f->to[q][p];
                if (f->kind[q][p] == FUSE_PLANE) {
                    _mm_storeu_si128((__m128i *)(void *)(to + start + i), r[p]);
                } else if (f->kind[q][p] == FUSE_PAIR && p < 15) {
                    to += 2 * (start + i);
                    _mm_storeu_si128((__m128i *)(void *)to, _mm_unpacklo_epi8(r[p], r[p + 1]));
                    _mm_storeu_si128((__m128i *)(void *)(to + 16),
                                     _mm_unpackhi_epi8(r[p], r[p + 1]));
                }
            }
        }
    }
}
#define SEG_FUSE (SEG_HOST_LE)
#else
#define SEG_FUSE 0
static void fuse_encode(const fuse_map *f, const eng_flow *rows, size_t m, size_t start,
                        uint8_t *enc)
{
    (void)f, (void)rows, (void)m, (void)start, (void)enc;
}
#endif

/* Transposes the 8x8 byte matrix whose row p is x[p] (byte r = bits 8r..8r+7): afterwards byte
 * p of x[r] is what byte r of x[p] was. Three rounds of swapping 1-, 2- and 4-byte blocks. */
static inline void transpose8x8(uint64_t x[8])
{
    /* in eight locals, not the array: loops over x[p] compiled to vector loads of words just
     * stored one by one, each stalling on store forwarding (a quarter of sealing) */
    uint64_t a0 = x[0], a1 = x[1], a2 = x[2], a3 = x[3], a4 = x[4], a5 = x[5], a6 = x[6], a7 = x[7],
             t;
#define SEG_SWAP(A, B, S, M)                                                                       \
    t = (((A) >> (S)) ^ (B)) & (M);                                                                \
    (B) ^= t;                                                                                      \
    (A) ^= t << (S);
    SEG_SWAP(a0, a1, 8, 0x00ff00ff00ff00ffull)
    SEG_SWAP(a2, a3, 8, 0x00ff00ff00ff00ffull)
    SEG_SWAP(a4, a5, 8, 0x00ff00ff00ff00ffull)
    SEG_SWAP(a6, a7, 8, 0x00ff00ff00ff00ffull)
    SEG_SWAP(a0, a2, 16, 0x0000ffff0000ffffull)
    SEG_SWAP(a1, a3, 16, 0x0000ffff0000ffffull)
    SEG_SWAP(a4, a6, 16, 0x0000ffff0000ffffull)
    SEG_SWAP(a5, a7, 16, 0x0000ffff0000ffffull)
    SEG_SWAP(a0, a4, 32, 0x00000000ffffffffull)
    SEG_SWAP(a1, a5, 32, 0x00000000ffffffffull)
    SEG_SWAP(a2, a6, 32, 0x00000000ffffffffull)
    SEG_SWAP(a3, a7, 32, 0x00000000ffffffffull)
#undef SEG_SWAP
    x[0] = a0;
    x[1] = a1;
    x[2] = a2;
    x[3] = a3;
    x[4] = a4;
    x[5] = a5;
    x[6] = a6;
    x[7] = a7;
}

#if defined(__SSE2__)
/* Values i..i+15 of a w-byte column (w 8 or 16) from its w byte planes into out: a 16x16
 * (or 8x16) byte transpose in four rounds of unpacking, about six instructions a value; the
 * column decoder spent most of its time here when it moved bytes one by one. */
static void untranspose16(const uint8_t *raw, size_t n, size_t i, uint32_t w, uint8_t *out)
{
    __m128i r[16], t[16], u[16], v[16];
    for (uint32_t p = 0; p < w; p++)
        r[p] = _mm_loadu_si128((const __m128i *)(const void *)(raw + p * n + i));
    for (uint32_t p = 0; p < w / 2; p++) { /* 16-bit: planes 2p, 2p+1; values 0-7, 8-15 */
        t[2 * p] = _mm_unpacklo_epi8(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm_unpackhi_epi8(r[2 * p], r[2 * p + 1]);
    }
    for (uint32_t q = 0; q < w / 4; q++) { /* 32-bit: planes 4q..4q+3; values 4m..4m+3 */
        u[4 * q] = _mm_unpacklo_epi16(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm_unpackhi_epi16(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm_unpacklo_epi16(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm_unpackhi_epi16(t[4 * q + 1], t[4 * q + 3]);
    }
    for (uint32_t h = 0; h < w / 8; h++) /* 64-bit: planes 8h..8h+7; v[8h+x]: values 2x, 2x+1 */
        for (uint32_t m = 0; m < 4; m++) {
            v[8 * h + 2 * m] = _mm_unpacklo_epi32(u[8 * h + m], u[8 * h + 4 + m]);
            v[8 * h + 2 * m + 1] = _mm_unpackhi_epi32(u[8 * h + m], u[8 * h + 4 + m]);
        }
    if (w == 8) {
        for (uint32_t x = 0; x < 8; x++)
            _mm_storeu_si128((__m128i *)(void *)(out + 16 * x), v[x]);
        return;
    }
    for (uint32_t x = 0; x < 8; x++) {
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * x), _mm_unpacklo_epi64(v[x], v[8 + x]));
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * x + 16),
                         _mm_unpackhi_epi64(v[x], v[8 + x]));
    }
}
#endif

#if defined(__SSE2__)
/* Whether the len bytes at p are all zero; stops at the first 256 bytes that are not. */
static bool all_zero(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    while (p + 256 <= end) {
        __m128i acc = _mm_setzero_si128();
        for (int k = 0; k < 16; k++)
            acc = _mm_or_si128(acc, _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k)));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_setzero_si128())) != 0xffff)
            return false;
        p += 256;
    }
    uint8_t tail = 0;
    for (; p < end; p++)
        tail |= *p;
    return tail == 0;
}

/* Of an 8-byte column's n-row byte planes: 2 when planes 2 to 7 are all zero, 4 when planes
 * 4 to 7 are, else 8. */
static uint32_t planes_used(const uint8_t *raw, size_t n)
{
    if (!all_zero(raw + 4 * n, 4 * n))
        return 8;
    return all_zero(raw + 2 * n, 2 * n) ? 2 : 4;
}

/* untranspose16 of an 8-byte column whose planes from low (2 or 4) on are zero: values
 * i..i+15 from the low planes alone, widened with zeros. */
static void untranspose16_low(const uint8_t *raw, size_t n, size_t i, uint32_t low, uint8_t *out)
{
    const __m128i z = _mm_setzero_si128();
    __m128i r0 = _mm_loadu_si128((const __m128i *)(const void *)(raw + i));
    __m128i r1 = _mm_loadu_si128((const __m128i *)(const void *)(raw + n + i));
    __m128i r2 = z, r3 = z;
    if (low == 4) {
        r2 = _mm_loadu_si128((const __m128i *)(const void *)(raw + 2 * n + i));
        r3 = _mm_loadu_si128((const __m128i *)(const void *)(raw + 3 * n + i));
    }
    __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1); /* 16-bit */
    __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    __m128i u[4] = {_mm_unpacklo_epi16(t0, t2), _mm_unpackhi_epi16(t0, t2), /* 32-bit */
                    _mm_unpacklo_epi16(t1, t3), _mm_unpackhi_epi16(t1, t3)};
    for (int k = 0; k < 4; k++) { /* values 4k..4k+3, widened to 64 bits */
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * k), _mm_unpacklo_epi32(u[k], z));
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * k + 16), _mm_unpackhi_epi32(u[k], z));
    }
}
#endif

/* Decodes raw (rsize bytes, n rows) of column c with encoding enc into out: n values of
 * col_width[c] bytes each, little-endian, one after another (the column set's layout). The
 * last_ms column needs first, the decoded first_ms column (its values are spans from it). */
static int col_decode(eng_col c, uint32_t enc, const uint8_t *raw, size_t rsize, size_t n,
                      const uint8_t *first, uint8_t *out)
{
    uint32_t w = col_width[c];
    ns_cur cur = ns_cur_make(raw, rsize);
    if (!enc_allowed(c, SEG_VERSION, enc) || enc == ENC_DICT || enc == ENC_BY_EXPORTER ||
        enc == ENC_BY_ADDR)
        return NS_E_CORRUPT; /* those three are decoded by the column set (they need more) */
    switch (enc) {
    case ENC_DELTA_VARINT: {
        int64_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            if (!get_varint_inl(&cur, &v))
                return NS_E_CORRUPT;
            prev = (int64_t)((uint64_t)prev + (uint64_t)unzigzag(v));
            ns_put_le64(out + i * 8, (uint64_t)prev);
        }
        break;
    }
    case ENC_SPAN_VARINT:
        if (!first)
            return NS_E_RANGE;
        for (size_t i = 0; i < n; i++) {
            uint64_t v, fv;
            if (!get_varint_inl(&cur, &v))
                return NS_E_CORRUPT;
            fv = ns_get_le64(first + i * 8);
            ns_put_le64(out + i * 8, fv + (uint64_t)unzigzag(v));
        }
        break;
    case ENC_TRANSPOSE: {
        /* Planes back into values, front to back: every plane is read in order, so the
         * prefetcher streams them. 8 rows at a time for the wide columns: 8 loads of 8 bytes
         * (one a plane) and an 8x8 byte transpose in registers. */
        size_t i = 0;
        if (rsize != n * w)
            return NS_E_CORRUPT;
#if defined(__SSE2__)
        /* counters rarely fill their 8 bytes: when the high planes are all zero, only the
         * low ones are transposed (fewer loads and shuffles a value) */
        uint32_t low = w == 8 ? planes_used(raw, n) : 8;
        if (low <= 4)
            for (; i + 16 <= n; i += 16)
                untranspose16_low(raw, n, i, low, out + i * 8);
        else if (w == 8 || w == 16)
            for (; i + 16 <= n; i += 16)
                untranspose16(raw, n, i, w, out + i * w);
#endif
        if (w == 8 || w == 16) {
            for (; i + 8 <= n; i += 8)
                for (uint32_t h = 0; h < w / 8; h++) {
                    uint64_t x[8];
                    for (uint32_t p = 0; p < 8; p++)
                        memcpy(&x[p], raw + (h * 8 + p) * n + i, 8);
                    transpose8x8(x);
                    if (SEG_HOST_LE) {
                        for (uint32_t r = 0; r < 8; r++)
                            memcpy(out + (i + r) * w + h * 8, &x[r], 8);
                    } else {
                        for (uint32_t r = 0; r < 8; r++)
                            for (uint32_t b = 0; b < 8; b++)
                                out[(i + r) * w + h * 8 + b] = (uint8_t)(x[r] >> (8 * b));
                    }
                }
        } else if (w == 4) {
            for (; i < n; i++)
                for (uint32_t j = 0; j < 4; j++)
                    out[i * 4 + j] = raw[j * n + i];
        } else if (w == 2) {
            for (; i < n; i++) {
                out[i * 2] = raw[i];
                out[i * 2 + 1] = raw[n + i];
            }
        }
        for (; i < n; i++) /* the last rows, and any other width: a byte at a time */
            for (uint32_t j = 0; j < w; j++)
                out[i * w + j] = raw[j * n + i];
        cur.left = 0;
        break;
    }
    default: /* plain: little-endian values one after another, the column set's own layout */
        if (rsize != n * w)
            return NS_E_CORRUPT;
        if (SEG_HOST_LE || w == 1) {
            memcpy(out, raw, n * w);
        } else {
            for (size_t i = 0; i < n; i++)
                for (uint32_t j = 0; j < w; j++)
                    out[i * w + j] = raw[i * w + j];
        }
        cur.left = 0;
        break;
    }
    return cur.left == 0 ? 0 : NS_E_CORRUPT;
}

/* ------------------------------------------------------------------------------------------ */
/* File helpers */

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int eng__fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t len = (size_t)(slash - path);
        if (len == 0)
            len = 1;
        if (len >= sizeof dir)
            return -ENAMETOOLONG;
        memcpy(dir, path, len);
        dir[len] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Address index and bloom filter (version 3).
 *
 * Both are keyed by XXH3-64 of the 16-byte address. The index has, per side (src, dst), a power
 * of two M of buckets (half the side's distinct addresses, rounded up) and for bucket h & (M-1) the
 * ascending list of row blocks (2^shift rows each) holding a row whose address hashes there.
 * Buckets and blocks trade precision for size: a lookup may name rows of another address
 * (callers re-check), never misses one. From version 5, rows sorted by source give the source
 * side as fences instead: the source of each block's first row (index flag 1). */

/* Scratch a writing thread keeps from one segment to the next: a sealer at 1M flows/s writes
 * a 1M-row segment every second, and fresh pages for its buffers (a few hundred MB, from mmap
 * and back) cost more page faults than the encoding costs work. Each thread's own, so writers
 * never share; eng__seg_write_release gives a thread's back. */
enum {
    WB_H,
    WB_U,
    WB_OUT,
    WB_POS,
    WB_TAB,
    WB_USED,
    WB_BLOOM,
    WB_ENC,
    WB_COMP,
    WB_FOOT,
    WB_BLK,
    WB_DTAB, /* dictionary builders: hash table, distinct values, row ids (src, dst) */
    WB_DVAL,
    WB_DIDS,
    WB_DSORT, /* sorting a dictionary */
    WB_DTMP,
    WB_FENCE,  /* the source address of each index block's first row */
    WB_DHASH,  /* the dictionaries' distinct hashes, for the index */
    WB_DHASHV, /* each dictionary's values' hashes */
    WB_ATOT,   /* address totals: accumulators, entries, bytes */
    WB_AENT,
    WB_AOUT,
    WB_BYADDR, /* a column's values by dictionary id (ENC_BY_ADDR) */
    WB_N
};

typedef struct seg_wmem {
    void *p[WB_N];
    size_t cap[WB_N];
    ZSTD_CCtx *zc;
} seg_wmem;

static _Thread_local seg_wmem *wmem;
/* a thread that exits without eng__seg_write_release (one a caller started to seal) frees its
 * scratch through this key's destructor */
static pthread_key_t wmem_key;
static pthread_once_t wmem_once = PTHREAD_ONCE_INIT;
static bool wmem_key_ok;

static void wmem_free(seg_wmem *w)
{
    for (int i = 0; i < WB_N; i++)
        free(w->p[i]);
    ZSTD_freeCCtx(w->zc);
    free(w);
}

static void wmem_destroy(void *p)
{
    wmem_free(p);
    wmem = NULL;
}

static void wmem_key_init(void)
{
    wmem_key_ok = pthread_key_create(&wmem_key, wmem_destroy) == 0;
}

static seg_wmem *wmem_get(void)
{
    if (!wmem) {
        pthread_once(&wmem_once, wmem_key_init);
        wmem = calloc(1, sizeof *wmem);
        if (wmem && wmem_key_ok)
            pthread_setspecific(wmem_key, wmem);
    }
    return wmem;
}

/* buffer i of at least need bytes (contents undefined); a quarter more than asked, so the next
 * segment a little larger does not allocate again */
static void *wbuf(seg_wmem *w, int i, size_t need)
{
    if (!w)
        return NULL;
    if (w->cap[i] < need) {
        free(w->p[i]);
        size_t cap = need + need / 4;
        w->p[i] = malloc(cap);
        w->cap[i] = w->p[i] ? cap : 0;
    }
    return w->p[i];
}

void eng__seg_write_release(void)
{
    if (!wmem)
        return;
    wmem_free(wmem);
    wmem = NULL;
    if (wmem_key_ok)
        pthread_setspecific(wmem_key, NULL);
}

uint64_t eng_addr_hash(const ns_addr *a)
{
    return XXH3_64bits(a->b, sizeof a->b);
}

static uint32_t pow2_at_least(uint64_t v)
{
    uint32_t m = 1;
    while (m < v && m < (1u << 30))
        m <<= 1;
    return m;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* LSD radix sort of v[0..n) by byte digits from bit `from` up (stable: values equal there keep
 * their order), skipping digits every value shares; tmp has n entries. Returns false (v
 * untouched) when tmp is NULL. */
static bool radix_u64_from(uint64_t *v, uint64_t *tmp, size_t n, unsigned from)
{
    if (!tmp)
        return false;
    uint64_t *a = v, *b = tmp;
    for (unsigned shift = from; shift < 64; shift += 8) {
        size_t cnt[256] = {0}, pos = 0;
        for (size_t i = 0; i < n; i++)
            cnt[(a[i] >> shift) & 0xff]++;
        if (cnt[(a[0] >> shift) & 0xff] == n)
            continue;
        for (int d = 0; d < 256; d++) {
            size_t c = cnt[d];
            cnt[d] = pos;
            pos += c;
        }
        for (size_t i = 0; i < n; i++)
            b[cnt[(a[i] >> shift) & 0xff]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    if (a != v)
        memcpy(v, a, n * sizeof *v);
    return true;
}

static bool radix_u64(uint64_t *v, uint64_t *tmp, size_t n)
{
    return radix_u64_from(v, tmp, n, 0);
}

/* Sorts v[0..n) and drops repeats; returns the new length. A radix sort: qsort's comparisons
 * were a quarter of sealing. */
static size_t sort_unique(uint64_t *v, size_t n)
{
    size_t k = 0;
    if (n == 0)
        return 0;
    uint64_t *tmp = malloc(n * sizeof *tmp);
    if (!radix_u64(v, tmp, n))
        qsort(v, n, sizeof *v, cmp_u64);
    free(tmp);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[k - 1] != v[i])
            v[k++] = v[i];
    return k;
}

/* The distinct values of v[0..n) into out (in no particular order); returns their count. An
 * open-addressing set: counting distinct addresses by sorting their hashes was a sixth of
 * sealing. Falls back to sorting when memory is short. */
static size_t distinct_u64(const uint64_t *v, size_t n, uint64_t *out)
{
    size_t cap = 16, k = 0;
    while (cap < 2 * n)
        cap <<= 1;
    uint64_t *tab = wbuf(wmem_get(), WB_TAB, cap * sizeof *tab);
    uint8_t *used = wbuf(wmem_get(), WB_USED, cap);
    if (!tab || !used) {
        memcpy(out, v, n * sizeof *out);
        return sort_unique(out, n);
    }
    memset(used, 0, cap);
    for (size_t i = 0; i < n; i++) {
        /* the values are xxh3 hashes already: their low bits index the table */
        size_t j = (size_t)(v[i] ^ v[i] >> 32) & (cap - 1);
        while (used[j] && tab[j] != v[i])
            j = (j + 1) & (cap - 1);
        if (!used[j]) {
            used[j] = 1;
            tab[j] = v[i];
            out[k++] = v[i];
        }
    }
    return k;
}

/* Bit i of the k probes of hash h in a filter of nbits bits (double hashing, fast range). */
static uint64_t bloom_bit(uint64_t h, uint32_t i, uint64_t nbits)
{
    uint32_t h1 = (uint32_t)(h >> 32), h2 = (uint32_t)h | 1u;
    return ((uint64_t)(h1 + i * h2) * nbits) >> 32;
}

/* Appends one side of the index (bucket counts, then each bucket's block deltas) to out, for
 * the row hashes h[0..n); key is scratch of n entries. Returns bytes written. */
static size_t index_side(const uint64_t *h, size_t n, uint32_t m, uint32_t shift, uint64_t *key,
                         uint8_t *out)
{
    size_t used = 0, k = 0, j = 0;
    /* (bucket, block) pairs in order: a counting sort by bucket of rows taken in row order
     * leaves each bucket's blocks ascending already, so one scatter replaces a radix sort */
    uint32_t *pos = wbuf(wmem_get(), WB_POS, ((size_t)m + 1) * sizeof *pos);
    if (pos) {
        memset(pos, 0, ((size_t)m + 1) * sizeof *pos);
        for (size_t i = 0; i < n; i++)
            pos[(h[i] & (m - 1)) + 1]++;
        for (uint32_t b = 0; b < m; b++)
            pos[b + 1] += pos[b];
        for (size_t i = 0; i < n; i++) {
            uint64_t b = h[i] & (m - 1);
            key[pos[b]++] = b << 32 | (uint64_t)(i >> shift);
        }
        for (size_t i = 0; i < n; i++)
            if (k == 0 || key[k - 1] != key[i])
                key[k++] = key[i];
    } else {
        for (size_t i = 0; i < n; i++)
            key[i] = (h[i] & (m - 1)) << 32 | (uint64_t)(i >> shift);
        k = sort_unique(key, n);
    }
    for (uint32_t b = 0; b < m; b++) {
        size_t c = 0;
        while (j + c < k && key[j + c] >> 32 == b)
            c++;
        used += put_varint(out + used, c);
        j += c;
    }
    uint64_t prev_bucket = UINT64_MAX, prev = 0;
    for (size_t i = 0; i < k; i++) {
        uint64_t bucket = key[i] >> 32, blk = key[i] & 0xffffffffu;
        used += put_varint(out + used, bucket == prev_bucket ? blk - prev : blk);
        prev_bucket = bucket;
        prev = blk;
    }
    return used;
}

/* log2 of the rows an index entry names: blocks of 16 rows, larger in large segments so block
 * numbers stay below 128 (one varint byte), up to 1024 rows. Coarse blocks cost a device query
 * little (a segment's columns are decompressed whole; a block only adds rows to re-check) and
 * made the index a third smaller on the benchmark set than 256-row blocks. */
static uint32_t index_shift(size_t n)
{
    uint32_t shift = SEG_IDX_SHIFT_MIN;
    while (shift < SEG_IDX_SHIFT_MAX && (n >> shift) >= 128)
        shift++;
    return shift;
}

/* Appends the ascending 16-byte values v[0..m) as differences (the first from 0), each as
 * varint(high 64 bits), varint(low 64 bits) of the 128-bit difference. */
static size_t put_ascending(const uint8_t *v, size_t m, uint8_t *out)
{
    uint64_t phi = 0, plo = 0;
    size_t used = 0;
    for (size_t r = 0; r < m; r++) {
        uint64_t hi = ns_get_be64(v + r * 16), lo = ns_get_be64(v + r * 16 + 8);
        used += put_varint(out + used, hi - phi - (lo < plo ? 1 : 0));
        used += put_varint(out + used, lo - plo);
        phi = hi;
        plo = lo;
    }
    return used;
}

/* Reads m values written by put_ascending into out (16 bytes each); strict: each larger than
 * the one before, else each at least as large. */
static bool get_ascending(ns_cur *c, size_t m, bool strict, uint8_t *out)
{
    uint64_t hi = 0, lo = 0;
    size_t r = 0;
    while (r < m) {
        /* the most common step by far (between the IPv4 addresses of a dense dictionary):
         * high difference 0, low one 1 to 127, two bytes. A run of them is read with the
         * cursor in locals (through c, every step stored and reloaded it: a chain through
         * memory, most of a dictionary's decoding); a carry into the high word leaves the
         * run for the general step. */
        const uint8_t *p = c->p;
        size_t left = c->left;
        while (r < m && left >= 2 && p[0] == 0 && p[1] - 1u < 0x7fu) {
            uint64_t nlo = lo + p[1];
            if (nlo < lo)
                break;
            lo = nlo;
            p += 2;
            left -= 2;
            ns_put_be64(out + r * 16, hi);
            ns_put_be64(out + r * 16 + 8, lo);
            r++;
        }
        c->p = p;
        c->left = left;
        if (r == m)
            break;
        uint64_t dhi = 0, dlo;
        /* a zero high difference (every step between IPv4 addresses) is one 0 byte */
        bool zero = c->left > 0 && c->p[0] == 0;
        if ((zero ? !ns_cur_skip(c, 1) : !get_varint(c, &dhi)) || !get_varint_inl(c, &dlo) ||
            (strict && r > 0 && dhi == 0 && dlo == 0))
            return false;
        uint64_t nlo = lo + dlo, carry = nlo < lo;
        if (dhi > UINT64_MAX - hi || hi + dhi > UINT64_MAX - carry)
            return false; /* past 2^128: not ascending */
        hi += dhi + carry;
        lo = nlo;
        ns_put_be64(out + r * 16, hi);
        ns_put_be64(out + r * 16 + 8, lo);
        r++;
    }
    return true;
}

/* What the writer's dictionaries already know of the addresses (ok false: nothing): each
 * side's distinct count, and the hashes of both sides' distinct values (repeats across sides). */
typedef struct addr_known {
    bool ok;
    size_t distinct[2];
    const uint64_t *hashes;
    size_t nhashes;
} addr_known;

/* Builds the raw index (into *idx) and the bloom filter (*bloom, *words), both in the thread's
 * scratch, from the rows' address hashes: h[i] of row i's source, h[n + i] of its destination.
 * fences (version 5, rows sorted by source): the source of each block's first row, which then
 * stands for the source side (flag 1 in the header). */
static int build_index(const uint64_t *h, size_t n, const uint8_t *fences, const addr_known *kn,
                       uint8_t **idx, size_t *idx_len, uint64_t **bloom, uint32_t *words)
{
    seg_wmem *w = wmem_get();
    uint64_t *u = wbuf(w, WB_U, (n ? n : 1) * 2 * sizeof *u);
    uint8_t *out = wbuf(w, WB_OUT, SEG_IDX_HDR + (n + 2) * 32);
    uint64_t *bl = NULL;
    uint32_t m[2];
    size_t distinct[2], used = SEG_IDX_HDR;
    if (!u || !out)
        return NS_E_NOMEM;
    /* counting distinct hashes was a tenth of sealing; the dictionaries have counted them */
    for (int side = 0; side < 2; side++) {
        if (side == 0 && fences)
            distinct[side] = 0; /* not used: fences stand for the source side */
        else
            distinct[side] = kn->ok ? kn->distinct[side] : distinct_u64(h + (size_t)side * n, n, u);
        m[side] = pow2_at_least((distinct[side] + 1) / 2);
    }
    size_t all = kn->ok ? distinct_u64(kn->hashes, kn->nhashes, u) : distinct_u64(h, 2 * n, u);
    uint64_t nw = ((uint64_t)all * SEG_BLOOM_BITS + 63) / 64;
    *words = (uint32_t)(nw < 1 ? 1 : nw > SEG_BLOOM_MAX ? SEG_BLOOM_MAX : nw);
    bl = wbuf(w, WB_BLOOM, (size_t)*words * sizeof *bl);
    if (!bl)
        return NS_E_NOMEM;
    memset(bl, 0, (size_t)*words * sizeof *bl);
    uint64_t nbits = (uint64_t)*words * 64;
    for (size_t i = 0; i < all; i++)
        for (uint32_t k = 0; k < SEG_BLOOM_K; k++) {
            uint64_t bit = bloom_bit(u[i], k, nbits);
            bl[bit / 64] |= 1ull << (bit % 64);
        }
    uint32_t shift = index_shift(n);
    size_t nblocks = (n + ((size_t)1 << shift) - 1) >> shift;
    memset(out, 0, SEG_IDX_HDR);
    ns_put_le32(out, shift);
    ns_put_le32(out + 4, fences ? (uint32_t)nblocks : m[0]);
    ns_put_le32(out + 8, m[1]);
    ns_put_le32(out + 12, fences ? SEG_IDX_FENCES : 0);
    if (fences)
        used += put_ascending(fences, nblocks, out + used);
    for (int side = fences ? 1 : 0; side < 2; side++)
        used += index_side(h + (size_t)side * n, n, m[side], shift, u, out + used);
    *idx = out;
    *idx_len = used;
    *bloom = bl;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Version 5 encodings built while the writer gathers rows: a dictionary of a 16-byte column's
 * distinct values (ENC_DICT) and a table of source_id by exporter (ENC_BY_EXPORTER). Each gives
 * up (the column keeps its byte planes) when it would not pay or cannot be exact. */

/* Whether the 16 bytes at a and b are equal, and their memcmp order: two 8-byte loads each
 * (memcmp was a call per row) */
static inline bool eq16(const uint8_t *a, const uint8_t *b)
{
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, a, 8);
    memcpy(&a1, a + 8, 8);
    memcpy(&b0, b, 8);
    memcpy(&b1, b + 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

static inline int cmp16(const uint8_t *a, const uint8_t *b)
{
    uint64_t a0 = ns_get_be64(a), b0 = ns_get_be64(b), a1 = ns_get_be64(a + 8),
             b1 = ns_get_be64(b + 8);
    return a0 != b0 ? (a0 < b0 ? -1 : 1) : a1 != b1 ? (a1 < b1 ? -1 : 1) : 0;
}

/* A slot of the table: the top half of the value's hash (the bottom half chose the slot) and
 * the value's id. 8 bytes, and the table grows with the values instead of being sized for the
 * most a segment may have: the destinations' probes (in no order) then hit the L2 cache, where
 * 16-byte slots for n/2 values (4 MB a side at 256Ki rows) missed it. */
typedef struct dict_slot {
    uint32_t tag;
    uint32_t id; /* into vals; UINT32_MAX: empty */
} dict_slot;

#define DICT_CAP0 4096u /* slots at the start (32 KB) */

typedef struct dict_build {
    bool failed;
    size_t m, limit, cap, capmax;
    dict_slot *tab;   /* cap slots (room for capmax), open addressing on the address hash */
    uint8_t *vals;    /* limit distinct values, 16 bytes each, in order of first sight */
    uint64_t *hashes; /* each value's hash, in the same order */
    uint32_t *ids;    /* row i's value: vals[ids[i]] */
} dict_build;

static size_t dict_slot_of(const dict_build *d, uint64_t h)
{
    return (size_t)h & (d->cap - 1);
}

/* side 0 (src) or 1 (dst) of the thread's scratch for n rows */
static void dict_start(dict_build *d, size_t n, int side)
{
    seg_wmem *w = wmem_get();
    memset(d, 0, sizeof *d);
    d->limit = n / SEG_DICT_MAX_SHARE;
    d->capmax = 16;
    while (d->capmax < 2 * d->limit)
        d->capmax <<= 1;
    d->cap = d->capmax < DICT_CAP0 ? d->capmax : DICT_CAP0;
    /* both sides share each scratch buffer, one half each */
    uint8_t *tab = wbuf(w, WB_DTAB, 2 * d->capmax * sizeof *d->tab);
    uint8_t *vals = wbuf(w, WB_DVAL, 2 * (d->limit + 1) * 16);
    uint8_t *ids = wbuf(w, WB_DIDS, 2 * (n + 1) * sizeof *d->ids);
    uint8_t *hs = wbuf(w, WB_DHASHV, 2 * (d->limit + 1) * sizeof *d->hashes);
    if (d->limit == 0 || !tab || !vals || !ids || !hs) {
        d->failed = true;
        return;
    }
    d->tab = (dict_slot *)(void *)(tab + (size_t)side * d->capmax * sizeof *d->tab);
    d->vals = vals + (size_t)side * (d->limit + 1) * 16;
    d->ids = (uint32_t *)(void *)(ids + (size_t)side * (n + 1) * sizeof *d->ids);
    d->hashes = (uint64_t *)(void *)(hs + (size_t)side * (d->limit + 1) * sizeof *d->hashes);
    memset(d->tab, 0xff, d->cap * sizeof *d->tab);
}

/* Doubles the table and puts every value back from its hash. */
static void dict_grow(dict_build *d)
{
    d->cap *= 2;
    memset(d->tab, 0xff, d->cap * sizeof *d->tab);
    for (size_t id = 0; id < d->m; id++) {
        uint64_t h = d->hashes[id];
        size_t j = dict_slot_of(d, h);
        while (d->tab[j].id != UINT32_MAX)
            j = (j + 1) & (d->cap - 1);
        d->tab[j] = (dict_slot){(uint32_t)(h >> 32), (uint32_t)id};
    }
}

/* Row i has value a (hash h). Two values with one 64-bit hash, or too many values, end it. */
static inline uint32_t dict_add(dict_build *d, size_t i, const uint8_t *a, uint64_t h)
{
    if (d->failed)
        return UINT32_MAX;
    size_t j = dict_slot_of(d, h);
    uint32_t tag = (uint32_t)(h >> 32);
    while (d->tab[j].id != UINT32_MAX) {
        uint32_t id = d->tab[j].id;
        if (d->tab[j].tag == tag) {
            if (eq16(d->vals + (size_t)id * 16, a))
                return d->ids[i] = id;
            if (d->hashes[id] == h) { /* another value with this hash: codes would not be exact */
                d->failed = true;
                return UINT32_MAX;
            }
        }
        j = (j + 1) & (d->cap - 1);
    }
    if (d->m >= d->limit) {
        d->failed = true;
        return UINT32_MAX;
    }
    d->hashes[d->m] = h;
    memcpy(d->vals + d->m * 16, a, 16);
    if (2 * (d->m + 1) > d->cap && d->cap < d->capmax) {
        d->m++; /* the new value goes in with the others */
        dict_grow(d);
        return d->ids[i] = (uint32_t)(d->m - 1);
    }
    d->tab[j] = (dict_slot){tag, (uint32_t)d->m};
    return d->ids[i] = (uint32_t)d->m++;
}

/* The byte planes of rows [0, k) of n, from the values and ids the dictionary holds for them
 * (the writer builds a column's planes only once its dictionary gives up). */
static void dict_planes(const dict_build *d, size_t k, size_t n, uint8_t *buf)
{
    for (size_t i = 0; i < k; i++) {
        const uint8_t *v = d->vals + (size_t)d->ids[i] * 16;
        for (uint32_t b = 0; b < 16; b++)
            buf[b * n + i] = v[b];
    }
}

typedef struct dict_key {
    uint8_t a[16];
    uint32_t id;
} dict_key;

static int cmp_dict_key(const void *x, const void *y)
{
    return memcmp(((const dict_key *)x)->a, ((const dict_key *)y)->a, 16);
}

/* Bytes a code takes for m distinct values. */
static uint32_t dict_code_width(uint64_t m)
{
    return m <= 1u << 8 ? 1 : m <= 1u << 16 ? 2 : m <= 1u << 24 ? 3 : 4;
}

/* The column's ENC_DICT bytes into out (cap bytes): varint m; the m values ascending as
 * 128-bit big-endian numbers, each a difference from the one before (the first from 0) written
 * as varint(high 64 bits), varint(low 64 bits); then each row's code (the value's rank) in
 * byte planes of dict_code_width(m) bytes. Returns the length, or 0 to keep the planes; with a
 * length, *order_out is each code's id (order[code] = id), valid until the next dict_finish. */
static size_t dict_finish(dict_build *d, size_t n, uint8_t *out, size_t cap,
                          const uint32_t **order_out)
{
    seg_wmem *w = wmem_get();
    size_t m = d->m, used = 0;
    if (d->failed || m == 0)
        return 0;
    uint32_t cw = dict_code_width(m);
    if (10 + m * 20 + (size_t)cw * n > cap)
        return 0;
    /* rank[id]: v4-mapped values (the common case) sort as 32-bit numbers packed with their id
     * into one radix-sorted word; anything else by comparison */
    uint32_t *rank =
        (uint32_t *)wbuf(w, WB_DSORT, m * sizeof(uint64_t) + m * sizeof(dict_key) + 16);
    uint64_t *tmp = (uint64_t *)wbuf(w, WB_DTMP, m * sizeof(uint64_t));
    if (!rank || !tmp)
        return 0;
    uint64_t *keys = (uint64_t *)(void *)((uint8_t *)rank + m * sizeof(uint32_t));
    keys = (uint64_t *)(void *)(((uintptr_t)keys + 7) & ~(uintptr_t)7);
    bool v4 = true;
    for (size_t j = 0; j < m && v4; j++)
        v4 = memcmp(d->vals + j * 16, d->vals, 12) == 0;
    if (v4) {
        bool ascending = true;
        for (size_t j = 0; j < m; j++) {
            keys[j] = (uint64_t)ns_get_be32(d->vals + j * 16 + 12) << 32 | j;
            ascending &= j == 0 || keys[j] > keys[j - 1];
        }
        /* the source side of rows sorted by source meets its values in order already; else
         * the address digits only: the ids below them are unique and ascending, and the sort
         * is stable */
        if (!ascending && !radix_u64_from(keys, tmp, m, 32))
            qsort(keys, m, sizeof *keys, cmp_u64);
        for (size_t j = 0; j < m; j++)
            rank[(uint32_t)keys[j]] = (uint32_t)j;
    } else {
        dict_key *dk = (dict_key *)(void *)keys;
        for (size_t j = 0; j < m; j++) {
            memcpy(dk[j].a, d->vals + j * 16, 16);
            dk[j].id = (uint32_t)j;
        }
        qsort(dk, m, sizeof *dk, cmp_dict_key);
        for (size_t j = 0; j < m; j++)
            rank[dk[j].id] = (uint32_t)j;
    }
    /* values in rank order: tmp is free again, reuse it for the order */
    uint32_t *order = (uint32_t *)(void *)tmp;
    for (size_t j = 0; j < m; j++)
        order[rank[j]] = (uint32_t)j;
    used += put_varint(out, m);
    /* the values in rank order, where the sort keys were (at least 16 bytes a value) */
    uint8_t *sorted = (uint8_t *)keys;
    for (size_t r = 0; r < m; r++)
        memcpy(sorted + r * 16, d->vals + (size_t)order[r] * 16, 16);
    used += put_ascending(sorted, m, out + used);
    uint8_t *planes = out + used;
    /* the width a constant in each loop, not a loop over it per row */
#define DICT_PLANES(CW)                                                                            \
    for (size_t i = 0; i < n; i++) {                                                               \
        uint32_t code = rank[d->ids[i]];                                                           \
        for (uint32_t k = 0; k < (CW); k++)                                                        \
            planes[(size_t)k * n + i] = (uint8_t)(code >> (8 * k));                                \
    }
    switch (cw) {
    case 1:
        DICT_PLANES(1)
        break;
    case 2:
        DICT_PLANES(2)
        break;
    case 3:
        DICT_PLANES(3)
        break;
    default:
        DICT_PLANES(4)
        break;
    }
#undef DICT_PLANES
    *order_out = order;
    return used + (size_t)cw * n;
}

/* ENC_BY_ADDR (version 7): col holds a column's w byte planes of n rows (plain for w 1). When
 * every row with one value of d's column has one value in this one, they are rewritten as the
 * planes of the m values', in code order (order[code] = id): byte k of code j's value at
 * k * m + j. Returns m * w then, else 0 with col untouched (or 0 when out of memory). */
static size_t byaddr_encode(const dict_build *d, const uint32_t *order, size_t n, uint32_t w,
                            uint8_t *col)
{
    size_t m = d->m;
    uint8_t *byid = wbuf(wmem_get(), WB_BYADDR, m * w + 1); /* plane k: byte k of each id's */
    if (!byid || m == 0 || m >= n)
        return 0;
    for (uint32_t k = 0; k < w; k++) {
        const uint8_t *p = col + (size_t)k * n;
        uint8_t *t = byid + (size_t)k * m;
        if (memcmp(p, p + 1, n - 1) == 0) { /* one byte throughout: the ::ffff: of v4 next */
            memset(t, p[0], m);             /* hops, the high bytes of AS and interfaces */
            continue;
        }
        /* ids are numbered in order of first sight, so a row's id is new exactly when it is
         * the number of ids seen so far */
        uint32_t seen = 0;
        uint8_t diff = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t id = d->ids[i];
            if (id == seen) {
                t[seen++] = p[i];
                continue;
            }
            diff |= (uint8_t)(t[id] ^ p[i]);
        }
        if (diff)
            return 0;
    }
    for (uint32_t k = 0; k < w; k++)
        for (size_t j = 0; j < m; j++)
            col[(size_t)k * m + j] = byid[(size_t)k * m + order[j]];
    return m * w;
}

/* source_id by exporter: a small table keyed by the exporter address's last two bytes (linear
 * probing over at most SEG_BYEXP_MAX entries). */
typedef struct byexp_ent {
    uint8_t addr[16];
    uint32_t value;
    bool used;
} byexp_ent;

typedef struct byexp {
    bool failed;
    size_t m;
    byexp_ent tab[2 * SEG_BYEXP_MAX];
} byexp;

static inline size_t byexp_slot(const byexp *b, const uint8_t *a)
{
    size_t j = ((size_t)a[14] << 8 | a[15]) & (2 * SEG_BYEXP_MAX - 1);
    while (b->tab[j].used && !eq16(b->tab[j].addr, a))
        j = (j + 1) & (2 * SEG_BYEXP_MAX - 1);
    return j;
}

static inline void byexp_add(byexp *b, const uint8_t *exporter, uint32_t value)
{
    if (b->failed)
        return;
    size_t j = byexp_slot(b, exporter);
    if (b->tab[j].used) {
        b->failed |= b->tab[j].value != value;
        return;
    }
    if (b->m >= SEG_BYEXP_MAX) {
        b->failed = true;
        return;
    }
    memcpy(b->tab[j].addr, exporter, 16);
    b->tab[j].value = value;
    b->tab[j].used = true;
    b->m++;
}

static int cmp_byexp(const void *x, const void *y)
{
    return memcmp(((const byexp_ent *)x)->addr, ((const byexp_ent *)y)->addr, 16);
}

/* ENC_BY_EXPORTER bytes: varint m, then m entries (16-byte exporter address, ascending; varint
 * value). Returns the length, or 0 to keep the planes. */
static size_t byexp_finish(byexp *b, uint8_t *out, size_t cap)
{
    byexp_ent e[SEG_BYEXP_MAX];
    size_t k = 0, used = 0;
    if (b->failed || b->m == 0 || 10 + b->m * 21 > cap)
        return 0;
    for (size_t j = 0; j < 2 * SEG_BYEXP_MAX; j++)
        if (b->tab[j].used)
            e[k++] = b->tab[j];
    qsort(e, k, sizeof *e, cmp_byexp);
    used += put_varint(out, k);
    for (size_t j = 0; j < k; j++) {
        memcpy(out + used, e[j].addr, 16);
        used += 16;
        used += put_varint(out + used, e[j].value);
    }
    return used;
}

/* ------------------------------------------------------------------------------------------ */
/* Address totals (v6): for each busy address, the totals of its rows as source, as destination
 * and as both, summed while the writer gathers rows, keyed by the dictionaries' ids (a segment
 * whose dictionary gave up has no table: too many distinct addresses to have busy ones worth
 * it). A one-host summary over a segment that lists the host reads these instead of columns. */

/* Rows that list an address in a segment of n rows: max(n >> SEG_ATOT_SHIFT, SEG_ATOT_MIN). */
static uint64_t atot_threshold(uint64_t n)
{
    return n >> SEG_ATOT_SHIFT > SEG_ATOT_MIN ? n >> SEG_ATOT_SHIFT : SEG_ATOT_MIN;
}

/* The most bytes a table of n rows can take (what the writer's buffer holds): readers refuse
 * more before allocating. Every varint counted at its longest, 10 bytes: two for the address,
 * six for each of the source and destination sides, four for both. */
#define SEG_ATOT_ENTRY_MAX ((2 + 6 + 6 + 4) * 10)
static uint64_t atot_max_bytes(uint64_t n)
{
    return 20 + (2 * n / atot_threshold(n) + 1) * SEG_ATOT_ENTRY_MAX;
}

typedef struct atot_acc {
    uint64_t rows, flows, packets, bytes;
    int64_t first, last;
} atot_acc;

typedef struct atot_both {
    uint32_t id; /* src id of a row whose src and dst are one address */
    uint64_t rows, flows, packets, bytes;
} atot_both;

typedef struct atot_build {
    bool on;
    size_t m[2];      /* ids seen per side */
    atot_acc *acc[2]; /* per side, by dictionary id */
    atot_both *both;  /* rare: one entry a row until atot_finish sums them by id */
    size_t nboth, capboth;
} atot_build;

typedef struct atot_ent {
    uint8_t a[16];
    uint32_t id[2]; /* UINT32_MAX: never on that side */
    const atot_both *both;
} atot_ent;

static void atot_start(atot_build *t, const dict_build *d)
{
    seg_wmem *w = wmem_get();
    memset(t, 0, sizeof *t);
    if (d[0].failed || d[1].failed)
        return;
    uint8_t *p = wbuf(w, WB_ATOT, (d[0].limit + d[1].limit + 2) * sizeof(atot_acc));
    if (!p)
        return;
    t->acc[0] = (atot_acc *)(void *)p;
    t->acc[1] = t->acc[0] + d[0].limit + 1;
    t->on = true;
}

static inline __attribute__((always_inline)) void acc_add(atot_acc *a, bool fresh,
                                                          const eng_flow *r)
{
    if (fresh) {
        *a = (atot_acc){0, 0, 0, 0, r->first_ms, r->last_ms};
    } else {
        a->first = r->first_ms < a->first ? r->first_ms : a->first;
        a->last = r->last_ms > a->last ? r->last_ms : a->last;
    }
    a->rows++;
    a->flows += eng_flow_count(r);
    a->packets += r->packets;
    a->bytes += r->bytes;
}

/* Row r has src id s and dst id d (UINT32_MAX: its dictionary gave up); same: src == dst. */
static inline __attribute__((always_inline)) void atot_add(atot_build *t, uint32_t s, uint32_t d,
                                                           bool same, const eng_flow *r)
{
    if (!t->on)
        return;
    if (s == UINT32_MAX || d == UINT32_MAX) {
        t->on = false;
        return;
    }
    /* ids are handed out in order, so a new one is the next */
    acc_add(&t->acc[0][s], s == t->m[0], r);
    t->m[0] += s == t->m[0];
    acc_add(&t->acc[1][d], d == t->m[1], r);
    t->m[1] += d == t->m[1];
    if (!same)
        return;
    if (t->nboth == t->capboth) {
        size_t cap = t->capboth ? 2 * t->capboth : 64;
        atot_both *b = realloc(t->both, cap * sizeof *b);
        if (!b) {
            t->on = false;
            return;
        }
        t->both = b;
        t->capboth = cap;
    }
    t->both[t->nboth++] = (atot_both){s, 1, eng_flow_count(r), r->packets, r->bytes};
}

static int cmp_both(const void *x, const void *y)
{
    uint32_t a = ((const atot_both *)x)->id, b = ((const atot_both *)y)->id;
    return (a > b) - (a < b);
}

static int cmp_atot_ent(const void *x, const void *y)
{
    return memcmp(((const atot_ent *)x)->a, ((const atot_ent *)y)->a, 16);
}

/* The id of value a (hash h) in dictionary d, or UINT32_MAX. */
static uint32_t dict_find(const dict_build *d, const uint8_t *a, uint64_t h)
{
    size_t j = dict_slot_of(d, h);
    while (d->tab[j].id != UINT32_MAX) {
        if (d->tab[j].tag == (uint32_t)(h >> 32) &&
            memcmp(d->vals + (size_t)d->tab[j].id * 16, a, 16) == 0)
            return d->tab[j].id;
        j = (j + 1) & (d->cap - 1);
    }
    return UINT32_MAX;
}

static size_t put_side(uint8_t *out, const atot_acc *a, int64_t tmin, int64_t tmax)
{
    size_t used = put_varint(out, a ? a->rows : 0);
    if (!a)
        return used;
    used += put_varint(out + used, a->flows);
    used += put_varint(out + used, a->packets);
    used += put_varint(out + used, a->bytes);
    used += put_varint(out + used, (uint64_t)a->first - (uint64_t)tmin);
    used += put_varint(out + used, (uint64_t)tmax - (uint64_t)a->last);
    return used;
}

/* The table's bytes (docs/FORMAT.md, "Address totals") for n rows whose times span tmin..tmax,
 * in a thread scratch buffer: *out, its length; 0 (and no table) when it cannot be built or
 * lists nobody. */
static size_t atot_finish(atot_build *t, const dict_build *d, size_t n, int64_t tmin, int64_t tmax,
                          const uint8_t **out)
{
    seg_wmem *w = wmem_get();
    size_t thr = (size_t)atot_threshold(n);
    size_t ne = 0, maxe = 2 * n / thr + 1, used = 0;
    if (!t->on || n < thr)
        goto none;
    /* rows whose src is their dst, summed by src id */
    size_t nb = 0;
    if (t->nboth)
        qsort(t->both, t->nboth, sizeof *t->both, cmp_both);
    for (size_t k = 0; k < t->nboth; k++) {
        if (nb && t->both[nb - 1].id == t->both[k].id) {
            atot_both *b = &t->both[nb - 1];
            b->rows += t->both[k].rows;
            b->flows += t->both[k].flows;
            b->packets += t->both[k].packets;
            b->bytes += t->both[k].bytes;
        } else {
            t->both[nb++] = t->both[k];
        }
    }
    atot_ent *e = (atot_ent *)wbuf(w, WB_AENT, maxe * sizeof *e + (t->m[1] + 8) / 8);
    if (!e)
        goto none;
    uint8_t *seen = (uint8_t *)(e + maxe); /* dst ids already listed through their src id */
    memset(seen, 0, (t->m[1] + 8) / 8);
    /* an address on T rows is on T / 2 as source or as destination: only those are looked up
     * on the other side (a lookup a distinct value was a percent of sealing) */
    for (int side = 0; side < 2; side++) {
        const dict_build *own = &d[side], *other = &d[1 - side];
        for (uint32_t id = 0; id < t->m[side]; id++) {
            if (2 * t->acc[side][id].rows < thr)
                continue;
            if (side == 1 && seen[id / 8] >> id % 8 & 1)
                continue; /* met as a source already */
            const uint8_t *a = own->vals + (size_t)id * 16;
            uint32_t oid = dict_find(other, a, own->hashes[id]);
            uint32_t s = side ? oid : id, dd = side ? id : oid;
            atot_both key = {.id = s};
            const atot_both *b =
                nb && s != UINT32_MAX ? bsearch(&key, t->both, nb, sizeof key, cmp_both) : NULL;
            uint64_t rows = (s != UINT32_MAX ? t->acc[0][s].rows : 0) +
                            (dd != UINT32_MAX ? t->acc[1][dd].rows : 0) - (b ? b->rows : 0);
            if (side == 0 && dd != UINT32_MAX)
                seen[dd / 8] |= (uint8_t)(1u << dd % 8);
            if (rows < thr || ne == maxe)
                continue;
            memcpy(e[ne].a, a, 16);
            e[ne].id[0] = s;
            e[ne].id[1] = dd;
            e[ne++].both = b;
        }
    }
    if (ne == 0)
        goto none;
    qsort(e, ne, sizeof *e, cmp_atot_ent);
    uint8_t *o = (uint8_t *)wbuf(w, WB_AOUT, atot_max_bytes(n));
    uint8_t *sorted = (uint8_t *)wbuf(w, WB_DTMP, ne * 16);
    if (!o || !sorted)
        goto none;
    used += put_varint(o, thr);
    used += put_varint(o + used, ne);
    for (size_t k = 0; k < ne; k++)
        memcpy(sorted + k * 16, e[k].a, 16);
    used += put_ascending(sorted, ne, o + used);
    for (size_t k = 0; k < ne; k++) {
        for (int side = 0; side < 2; side++)
            used += put_side(o + used,
                             e[k].id[side] != UINT32_MAX ? &t->acc[side][e[k].id[side]] : NULL,
                             tmin, tmax);
        const atot_both *b = e[k].both;
        used += put_varint(o + used, b ? b->rows : 0);
        if (b) {
            used += put_varint(o + used, b->flows);
            used += put_varint(o + used, b->packets);
            used += put_varint(o + used, b->bytes);
        }
    }
    free(t->both);
    *out = o;
    return used;
none:
    free(t->both);
    return 0;
}

/* ENC_DICT bytes (rsize, n rows) into the set: the distinct values (dv, ascending), each row's
 * code (codes) and the column itself (out, 16 bytes a row). Every value must be larger than the
 * one before and every code name a value. */
static int dict_decode(const uint8_t *raw, size_t rsize, size_t n, eng_coldict *dv, uint8_t *out)
{
    /* out NULL: the values and codes only (a caller that reads the column through them) */
    ns_cur cur = ns_cur_make(raw, rsize);
    uint64_t m;
    if (!get_varint(&cur, &m) || m > n || (m == 0) != (n == 0))
        return NS_E_CORRUPT;
    uint8_t *vals = (uint8_t *)(uintptr_t)dv->vals;
    uint32_t *codes = (uint32_t *)(uintptr_t)dv->codes;
    if (!get_ascending(&cur, (size_t)m, true, vals))
        return NS_E_CORRUPT;
    uint32_t cw = dict_code_width(m);
    if (cur.left != (size_t)cw * n)
        return NS_E_CORRUPT;
    const uint8_t *p = cur.p;
    /* one loop a code width, checked once at the end (a loop over the planes with a check a
     * row was most of a conversations query's decoding) */
    uint32_t top = 0;
#define DICT_CODES(EXPR)                                                                           \
    for (size_t i = i0; i < n; i++) {                                                              \
        uint32_t code = (EXPR);                                                                    \
        top = code > top ? code : top;                                                             \
        codes[i] = code;                                                                           \
    }
    size_t i0 = 0; /* rows decoded by the SSE2 loops below, 16 at a time */
#if defined(__SSE2__)
    /* one and two byte codes (up to 65,536 values: every minute segment) widened 16 at a
     * time, their maximum kept in a register; gcc 12 at -O2 left these loops scalar */
    const __m128i zero = _mm_setzero_si128();
    if (cw == 1) {
        __m128i mx = zero;
        for (; i0 + 16 <= n; i0 += 16) {
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + i0));
            mx = _mm_max_epu8(mx, b);
            __m128i lo = _mm_unpacklo_epi8(b, zero), hi = _mm_unpackhi_epi8(b, zero);
            __m128i *o = (__m128i *)(void *)(codes + i0);
            _mm_storeu_si128(o, _mm_unpacklo_epi16(lo, zero));
            _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(lo, zero));
            _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(hi, zero));
            _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(hi, zero));
        }
        uint8_t m8[16];
        _mm_storeu_si128((__m128i *)(void *)m8, mx);
        for (int k = 0; k < 16; k++)
            top = m8[k] > top ? m8[k] : top;
    } else if (cw == 2) {
        /* unsigned 16-bit maximum through the signed one: flip the top bit both ways */
        const __m128i flip = _mm_set1_epi16((short)0x8000);
        __m128i mx = _mm_set1_epi16((short)0x8000);
        for (; i0 + 16 <= n; i0 += 16) {
            __m128i l = _mm_loadu_si128((const __m128i *)(const void *)(p + i0));
            __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(p + n + i0));
            __m128i a = _mm_unpacklo_epi8(l, h), b = _mm_unpackhi_epi8(l, h);
            mx = _mm_max_epi16(mx, _mm_xor_si128(a, flip));
            mx = _mm_max_epi16(mx, _mm_xor_si128(b, flip));
            __m128i *o = (__m128i *)(void *)(codes + i0);
            _mm_storeu_si128(o, _mm_unpacklo_epi16(a, zero));
            _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(a, zero));
            _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(b, zero));
            _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(b, zero));
        }
        uint16_t m16[8];
        _mm_storeu_si128((__m128i *)(void *)m16, _mm_xor_si128(mx, flip));
        for (int k = 0; k < 8; k++)
            top = m16[k] > top ? m16[k] : top;
    }
#endif
    switch (cw) {
    case 1:
        DICT_CODES(p[i])
        break;
    case 2:
        DICT_CODES(p[i] | (uint32_t)p[n + i] << 8)
        break;
    case 3:
        DICT_CODES(p[i] | (uint32_t)p[n + i] << 8 | (uint32_t)p[2 * n + i] << 16)
        break;
    default:
        DICT_CODES(p[i] | (uint32_t)p[n + i] << 8 | (uint32_t)p[2 * n + i] << 16 |
                   (uint32_t)p[3 * n + i] << 24)
        break;
    }
#undef DICT_CODES
    if (n && top >= m)
        return NS_E_CORRUPT;
    for (size_t i = 0; out && i < n; i++)
        memcpy(out + i * 16, vals + (size_t)codes[i] * 16, 16);
    dv->n = (size_t)m;
    return 0;
}

/* ENC_BY_EXPORTER bytes into out (n values of 4 bytes), through the exporter column exp (16
 * bytes a row): exporters ascending, each row's exporter in the table. */
static int byexp_decode(const uint8_t *raw, size_t rsize, size_t n, const uint8_t *exp,
                        uint8_t *out)
{
    ns_cur cur = ns_cur_make(raw, rsize);
    uint64_t m;
    byexp *b = calloc(1, sizeof *b);
    int rc = NS_E_CORRUPT;
    if (!b)
        return NS_E_NOMEM;
    if (!get_varint(&cur, &m) || m == 0 || m > SEG_BYEXP_MAX)
        goto out;
    uint8_t prev[16];
    for (uint64_t j = 0; j < m; j++) {
        uint8_t a[16];
        uint64_t v;
        if (!ns_cur_bytes(&cur, a, 16) || !get_varint(&cur, &v) || v > UINT32_MAX ||
            (j > 0 && memcmp(prev, a, 16) >= 0))
            goto out;
        memcpy(prev, a, 16);
        size_t slot = byexp_slot(b, a);
        memcpy(b->tab[slot].addr, a, 16);
        b->tab[slot].value = (uint32_t)v;
        b->tab[slot].used = true;
    }
    if (cur.left != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const byexp_ent *e = &b->tab[byexp_slot(b, exp + i * 16)];
        if (!e->used)
            goto out; /* a row from an exporter the table lacks */
        ns_put_le32(out + i * 4, e->value);
    }
    rc = 0;
out:
    free(b);
    return rc;
}

/* ENC_BY_ADDR bytes (rsize) into out (n values of w bytes), through the codes of the address
 * column's dictionary key (already checked below its key->n values). */
static int byaddr_decode(const uint8_t *raw, size_t rsize, size_t n, uint32_t w,
                         const eng_coldict *key, uint8_t *out)
{
    size_t m = key->n;
    const uint32_t *code = key->codes;
    if (rsize != m * w)
        return NS_E_CORRUPT;
    if (w == 4) { /* AS numbers and interfaces: the common width, its loads unrolled */
        for (size_t i = 0; i < n; i++) {
            size_t j = code[i];
            out[4 * i] = raw[j];
            out[4 * i + 1] = raw[m + j];
            out[4 * i + 2] = raw[2 * m + j];
            out[4 * i + 3] = raw[3 * m + j];
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < w; k++)
            out[i * w + k] = raw[k * m + code[i]];
    return 0;
}

int eng__col_decode_raw(eng_col c, uint32_t enc, const uint8_t *raw, size_t rsize, size_t n,
                        const uint8_t *exporters, uint8_t *out)
{
    if ((unsigned)c >= ENG_NCOLS)
        return NS_E_RANGE;
    if (enc == ENC_BY_EXPORTER)
        return c == ENG_COL_SOURCE_ID && exporters ? byexp_decode(raw, rsize, n, exporters, out)
                                                   : NS_E_CORRUPT;
    if (enc != ENC_DICT)
        return col_decode(c, enc, raw, rsize, n, NULL, out);
    if (!enc_allowed(c, SEG_VERSION, enc))
        return NS_E_CORRUPT;
    uint8_t *vals = malloc(n * 16 + 16);
    uint32_t *codes = malloc(n * 4 + 4);
    eng_coldict d = {0, vals, codes};
    int rc = vals && codes ? dict_decode(raw, rsize, n, &d, out) : NS_E_NOMEM;
    free(vals);
    free(codes);
    return rc;
}

int eng__col_decode_byaddr(eng_col c, const uint8_t *raw, size_t rsize, size_t n,
                           const eng_coldict *key, uint8_t *out)
{
    if (byaddr_key(c) == ENG_NCOLS) /* any other column, or none */
        return NS_E_CORRUPT;
    for (size_t i = 0; i < n; i++)
        if (key->codes[i] >= key->n)
            return NS_E_RANGE; /* a decoded dictionary never has such a code */
    return byaddr_decode(raw, rsize, n, col_width[c], key, out);
}

/* ------------------------------------------------------------------------------------------ */
/* Writer */

static int seg_write(const char *path, eng_flow *const *chunks, unsigned shift,
                     const uint32_t *perm, size_t n, uint32_t version, bool ref);

int eng_seg_write(const char *path, const eng_flow *rows, size_t n)
{
    return eng__seg_write_version(path, rows, n, SEG_VERSION);
}

int eng__seg_write_version(const char *path, const eng_flow *rows, size_t n, uint32_t version)
{
    eng_flow *one[1] = {(eng_flow *)(uintptr_t)rows}; /* only read */
    return seg_write(path, one, 31, NULL, n, version, false);
}

int eng__seg_write_ref(const char *path, eng_flow *const *chunks, unsigned shift,
                       const uint32_t *perm, size_t n)
{
    return seg_write(path, chunks, shift, perm, n, SEG_VERSION, true);
}

int eng__seg_write_perm(const char *path, eng_flow *const *chunks, unsigned shift,
                        const uint32_t *perm, size_t n)
{
    return seg_write(path, chunks, shift, perm, n, SEG_VERSION, false);
}

/* Rows per block of the encoding pass: a block's rows (136 KB) stay in cache while every
 * column takes its bytes from them. Column by column over a whole segment read all of its rows
 * (136 MB for 1M) once per column. */
#define SEG_BLOCK        1024u
#define SEG_GATHER_AHEAD 8u

/* Where the writer's blobs go: each is compressed with zc into comp (cap bytes) and appended to
 * fd at off. */
typedef struct zblob {
    ZSTD_CCtx *zc;
    uint8_t *comp;
    size_t cap;
    int fd;
    uint64_t off;
} zblob;

/* Whether column c in encoding enc is compressed without zstd's Huffman coding of literals.
 * The codes of a destination dictionary and the ports are nearly random bytes: Huffman saves
 * them a sixth (dst) or a twentieth (ports) of their size and is most of their decoding time,
 * which falls to a fifth (dst) and two fifths (ports) without it, on every query that reads
 * them (measured on a benchmark minute: +0.34 and +0.08 B a flow each). The source dictionary
 * is mostly runs (rows sorted by source), the other columns gain more than they cost. */
static bool blob_nolit(eng_col c, uint32_t enc)
{
    return (c == ENG_COL_DST && enc == ENC_DICT) || c == ENG_COL_SRC_PORT || c == ENG_COL_DST_PORT;
}

/* Compresses raw (rlen bytes), appends it, and puts its directory fields at dir: offset,
 * compressed size, raw size and XXH64 of the compressed bytes, 8 bytes each (the layout of a
 * column's entry from +16, of the index's and the address totals' in the fixed part). */
static int write_blob(zblob *z, const uint8_t *raw, size_t rlen, bool nolit, uint8_t *dir)
{
    /* an older libzstd without the parameter compresses the literals: larger, still valid */
    (void)ZSTD_CCtx_setParameter(z->zc, ZSTD_c_literalCompressionMode,
                                 nolit ? ZSTD_ps_disable : ZSTD_ps_auto);
    size_t csize = ZSTD_compress2(z->zc, z->comp, z->cap, raw, rlen);
    if (ZSTD_isError(csize))
        return NS_E_COMPRESS;
    int rc = write_all(z->fd, z->comp, csize);
    if (rc < 0)
        return rc;
    ns_put_le64(dir, z->off);
    ns_put_le64(dir + 8, csize);
    ns_put_le64(dir + 16, rlen);
    ns_put_le64(dir + 24, XXH64(z->comp, csize, 0));
    z->off += csize;
    return 0;
}

/* Writes the rows chunks[perm[k] >> shift][perm[k] & mask] (k < n; perm NULL: k itself) as a
 * segment: one pass over blocks of rows gathers them, sums the footer's totals, hashes the
 * addresses for the index and appends each column's bytes to its own region of enc; then each
 * column is compressed and written. */
static int seg_write(const char *path, eng_flow *const *chunks, unsigned shift,
                     const uint32_t *perm, size_t n, uint32_t version, bool ref)
{
    char tmp[4200];
    uint8_t *enc = NULL, *comp = NULL, *footer = NULL, *idx = NULL; /* the thread's scratch */
    uint64_t *bloom = NULL, *h = NULL;
    eng_flow *blk = NULL;
    ZSTD_CCtx *zc = NULL;
    uint32_t words = 0;
    size_t idx_len = 0, coff[ENG_NCOLS + 1], clen[ENG_NCOLS], mask = ((size_t)1 << shift) - 1;
    uint8_t trailer[SEG_TRAILER];
    int fd = -1, rc;
    uint64_t off = SEG_HDR;
    int64_t tmin = n ? INT64_MAX : 0, tmax = n ? INT64_MIN : 0, prev = 0;
    uint64_t pk = 0, by = 0, fl = 0;
    uint32_t encs[ENG_NCOLS];
    dict_build dict[2];              /* src, dst */
    bool planes[2] = {false, false}; /* src, dst byte planes built (else the dictionary's) */
    atot_build at = {0};
    const uint8_t *atot = NULL;
    size_t atot_len = 0;
    byexp *bx = NULL;
    uint8_t last_src[16] = {0};
    bool fast = !ref, fuse = SEG_FUSE && fast;
    fuse_map fm;
    uint32_t bs[SEG_BLOCK], bd[SEG_BLOCK]; /* a block's source and destination ids */
    bool bsame[SEG_BLOCK];                 /* and whether they are one address */

    if (n > SEG_MAX_ROWS)
        return NS_E_TOO_MANY;
    if (version < 2 || version > SEG_VERSION)
        return NS_E_VERSION;
    /* the flows column is version 4's last: older versions end before it */
    uint32_t ncols = version >= 4 ? ENG_NCOLS : ENG_COL_FLOWS;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -ENAMETOOLONG;
    seg_wmem *wm = wmem_get();
    coff[0] = 0;
    for (int c = 0; c < ENG_NCOLS; c++) {
        coff[c + 1] = coff[c] + col_cap((eng_col)c, n);
        clen[c] = 0;
    }
    enc = wbuf(wm, WB_ENC, coff[ENG_NCOLS] + 16);
    h = wbuf(wm, WB_H, (n ? n : 1) * 2 * sizeof *h);
    blk = perm ? wbuf(wm, WB_BLK, SEG_BLOCK * sizeof *blk) : NULL;
    if (!enc || !h || (perm && !blk))
        return NS_E_NOMEM;
    for (int c = 0; c < ENG_NCOLS; c++)
        encs[c] = col_encoding((eng_col)c);
    bool v5 = version >= 5, sorted = v5;
    uint32_t ishift = index_shift(n);
    uint8_t *fences = NULL;
    if (v5) {
        fences = wbuf(wm, WB_FENCE, (((n + ((size_t)1 << ishift) - 1) >> ishift) + 1) * 16);
        if (!fences)
            return NS_E_NOMEM;
        encs[ENG_COL_SRC_PORT] = encs[ENG_COL_DST_PORT] = ENC_PLAIN;
        dict_start(&dict[0], n, 0);
        dict_start(&dict[1], n, 1);
        if (version >= 6)
            atot_start(&at, dict);
        if (!(bx = calloc(1, sizeof *bx)))
            return NS_E_NOMEM;
    }
    for (size_t s0 = 0; s0 < n; s0 += SEG_BLOCK) {
        size_t m = n - s0 < SEG_BLOCK ? n - s0 : SEG_BLOCK;
        const eng_flow *r;
        if (perm) {
            /* the permutation scatters the rows over the buffer: fetch each row's three cache
             * lines a few rows ahead of its copy */
            for (size_t i = 0; i < m; i++) {
                if (s0 + i + SEG_GATHER_AHEAD < n) {
                    uint32_t f = perm[s0 + i + SEG_GATHER_AHEAD];
                    const char *p = (const char *)&chunks[f >> shift][f & mask];
                    __builtin_prefetch(p);
                    __builtin_prefetch(p + 64);
                    __builtin_prefetch(p + sizeof(eng_flow) - 1);
                }
                uint32_t k = perm[s0 + i];
                blk[i] = chunks[k >> shift][k & mask];
            }
            r = blk;
        } else {
            r = &chunks[(s0) >> shift][(s0)&mask]; /* one array: shift 31 */
        }
        for (size_t i = 0; i < m; i++) {
            tmin = r[i].first_ms < tmin ? r[i].first_ms : tmin;
            tmax = r[i].last_ms > tmax ? r[i].last_ms : tmax;
            pk += r[i].packets;
            by += r[i].bytes;
            fl += eng_flow_count(&r[i]);
        }
        if (version >= 3)
            for (size_t i = 0; i < m; i++) {
                h[s0 + i] = eng_addr_hash(&r[i].src);
                h[n + s0 + i] = eng_addr_hash(&r[i].dst);
            }
        if (v5 && fast) {
            for (size_t i = 0; i < m; i++) {
                size_t k = s0 + i;
                const uint8_t *ps = i ? r[i - 1].src.b : last_src;
                int order = k > 0 ? cmp16(ps, r[i].src.b) : 1;
                if (order > 0 && k > 0)
                    sorted = false;
                if ((k & (((size_t)1 << ishift) - 1)) == 0)
                    memcpy(fences + (k >> ishift) * 16, r[i].src.b, 16);
                /* destinations come in no order, and a new source's slot is anywhere: fetch the
                 * slots 2A rows ahead; A rows ahead, the destination's value through the id its
                 * slot (in cache by then) most likely holds */
                if (i + 2 * SEG_GATHER_AHEAD < m) {
                    size_t f = k + 2 * SEG_GATHER_AHEAD;
                    __builtin_prefetch(&dict[0].tab[dict_slot_of(&dict[0], h[f])]);
                    __builtin_prefetch(&dict[1].tab[dict_slot_of(&dict[1], h[n + f])]);
                }
                if (i + SEG_GATHER_AHEAD < m && !dict[1].failed) {
                    uint64_t hd = h[n + k + SEG_GATHER_AHEAD];
                    uint32_t id = dict[1].tab[dict_slot_of(&dict[1], hd)].id;
                    if (id != UINT32_MAX)
                        __builtin_prefetch(dict[1].vals + (size_t)id * 16);
                }
                if (order == 0 && !dict[0].failed)
                    bs[i] = dict[0].ids[k] = dict[0].ids[k - 1]; /* the last row's source again */
                else
                    bs[i] = dict_add(&dict[0], k, r[i].src.b, h[k]);
                bd[i] = dict_add(&dict[1], k, r[i].dst.b, h[n + k]);
                bsame[i] = h[k] == h[n + k] && eq16(r[i].src.b, r[i].dst.b);
                byexp_add(bx, r[i].exporter.b, r[i].source_id);
            }
            /* the totals once the block's ids are known: the destinations' fetched ahead */
            for (size_t i = 0; i < m && at.on; i++) {
                if (i + SEG_GATHER_AHEAD < m && bd[i + SEG_GATHER_AHEAD] != UINT32_MAX)
                    __builtin_prefetch(&at.acc[1][bd[i + SEG_GATHER_AHEAD]]);
                atot_add(&at, bs[i], bd[i], bsame[i], &r[i]);
            }
        } else if (v5) {
            for (size_t i = 0; i < m; i++) {
                size_t k = s0 + i;
                if (sorted && k > 0 && memcmp(i ? r[i - 1].src.b : last_src, r[i].src.b, 16) > 0)
                    sorted = false;
                if ((k & (((size_t)1 << ishift) - 1)) == 0)
                    memcpy(fences + (k >> ishift) * 16, r[i].src.b, 16);
                if (i + SEG_GATHER_AHEAD < m && !dict[1].failed) {
                    /* destinations come in no order: fetch the slot a few rows ahead (sources
                     * are sorted, their slot is the last row's) */
                    uint64_t hd = h[n + k + SEG_GATHER_AHEAD];
                    __builtin_prefetch(&dict[1].tab[dict_slot_of(&dict[1], hd)]);
                }
                uint32_t sid = dict_add(&dict[0], k, r[i].src.b, h[k]);
                uint32_t did = dict_add(&dict[1], k, r[i].dst.b, h[n + k]);
                atot_add(&at, sid, did, h[k] == h[n + k] && memcmp(r[i].src.b, r[i].dst.b, 16) == 0,
                         &r[i]);
                byexp_add(bx, r[i].exporter.b, r[i].source_id);
            }
        }
        bool remap = s0 == 0;
        for (int side = 0; side < 2; side++)
            if (v5 && !planes[side] && dict[side].failed) {
                /* it gave up in this block: the rows before it get their planes from it */
                eng_col c = side ? ENG_COL_DST : ENG_COL_SRC;
                dict_planes(&dict[side], s0, n, enc + coff[c]);
                planes[side] = remap = true;
            }
        size_t m16 = fuse ? m & ~(size_t)15 : 0; /* rows the fused encoder takes */
        if (fuse && remap)
            fuse_map_build(&fm, encs, coff, n, v5 && !planes[0], v5 && !planes[1]);
        if (m16)
            fuse_encode(&fm, r, m16, s0, enc);
        for (int c = 0; c < ENG_NCOLS; c++) {
            int side = c == ENG_COL_SRC ? 0 : c == ENG_COL_DST ? 1 : -1;
            if (v5 && side >= 0 && !planes[side])
                continue;                           /* the dictionary will do: no planes */
            size_t k = fuse && fm.col[c] ? m16 : 0; /* the rest of the rows, one by one */
            col_encode_block((eng_col)c, encs[c], r + k, m - k, s0 + k, n, enc + coff[c], &clen[c],
                             &prev, fast);
        }
        if (m)
            memcpy(last_src, r[m - 1].src.b, 16);
    }
    for (int c = 0; c < ENG_NCOLS; c++)
        if (encs[c] != ENC_DELTA_VARINT && encs[c] != ENC_SPAN_VARINT)
            clen[c] = col_cap((eng_col)c, n);
    if (v5) {
        /* the planes stay where a dictionary or table would not be exact or smaller */
        for (int side = 0; side < 2; side++) {
            eng_col c = side ? ENG_COL_DST : ENG_COL_SRC;
            const uint32_t *order = NULL;
            size_t len = planes[side]
                             ? 0
                             : dict_finish(&dict[side], n, enc + coff[c], col_cap(c, n), &order);
            if (len) {
                encs[c] = ENC_DICT;
                clen[c] = len;
            } else if (!planes[side]) {
                dict_planes(&dict[side], n, n, enc + coff[c]); /* could not write it out */
            }
            for (int f = 0; len && version >= 7 && f < ENG_NCOLS; f++) {
                size_t flen;
                if (byaddr_key((eng_col)f) == c &&
                    (flen = byaddr_encode(&dict[side], order, n, col_width[f], enc + coff[f]))) {
                    encs[f] = ENC_BY_ADDR;
                    clen[f] = flen;
                }
            }
        }
        size_t len = byexp_finish(bx, enc + coff[ENG_COL_SOURCE_ID], col_cap(ENG_COL_SOURCE_ID, n));
        if (len) {
            encs[ENG_COL_SOURCE_ID] = ENC_BY_EXPORTER;
            clen[ENG_COL_SOURCE_ID] = len;
        }
        free(bx);
        if (version >= 6)
            atot_len = atot_finish(&at, dict, n, tmin, tmax, &atot);
    }
    addr_known kn = {0};
    if (v5 && !dict[0].failed && !dict[1].failed) {
        /* the distinct values' hashes, from the dictionaries' tables */
        uint64_t *hs = (uint64_t *)wbuf(wm, WB_DHASH, (dict[0].m + dict[1].m + 1) * sizeof *hs);
        if (hs) {
            memcpy(hs, dict[0].hashes, dict[0].m * sizeof *hs);
            memcpy(hs + dict[0].m, dict[1].hashes, dict[1].m * sizeof *hs);
            kn = (addr_known){true, {dict[0].m, dict[1].m}, hs, dict[0].m + dict[1].m};
        }
    }
    if (version >= 3 &&
        (rc = build_index(h, n, sorted ? fences : NULL, &kn, &idx, &idx_len, &bloom, &words)) < 0)
        return rc;
    size_t fixed = version >= 6   ? SEG_FOOTER_V6
                   : version >= 4 ? SEG_FOOTER_V4
                   : version >= 3 ? SEG_FOOTER_V3
                                  : SEG_FOOTER_FIXED;
    size_t flen = fixed + ncols * SEG_COLDIR + (size_t)words * 8;
    size_t big = n * 16 + 16 > idx_len ? n * 16 + 16 : idx_len;
    size_t comp_cap = ZSTD_compressBound(big > atot_len ? big : atot_len);
    comp = wbuf(wm, WB_COMP, comp_cap);
    footer = wbuf(wm, WB_FOOT, flen);
    /* one context for every column and segment: ZSTD_compress sets up (allocates, clears) its
     * own each call */
    if (wm && !wm->zc && (wm->zc = ZSTD_createCCtx()) &&
        ZSTD_isError(ZSTD_CCtx_setParameter(wm->zc, ZSTD_c_compressionLevel, SEG_ZSTD_LEVEL))) {
        ZSTD_freeCCtx(wm->zc);
        wm->zc = NULL;
    }
    zc = wm ? wm->zc : NULL;
    if (!comp || !footer || !zc)
        return NS_E_NOMEM;
    memset(footer, 0, flen);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    uint8_t hdr[SEG_HDR] = {0};
    memcpy(hdr, SEG_MAGIC, 8);
    ns_put_le32(hdr + 8, version);
    if ((rc = write_all(fd, hdr, sizeof hdr)) < 0)
        goto fail;
    ns_put_le64(footer + 0, n);
    ns_put_le64(footer + 8, (uint64_t)tmin);
    ns_put_le64(footer + 16, (uint64_t)tmax);
    ns_put_le64(footer + 24, pk);
    ns_put_le64(footer + 32, by);
    ns_put_le32(footer + 40, ncols);
    if (version >= 4)
        ns_put_le64(footer + 88, fl);

    zblob zb = {zc, comp, comp_cap, fd, off};
    for (int c = 0; c < (int)ncols; c++) {
        uint8_t *d = footer + fixed + (size_t)c * SEG_COLDIR;
        ns_put_le32(d + 0, (uint32_t)c);
        ns_put_le32(d + 4, col_width[c]);
        ns_put_le32(d + 8, encs[c]);
        if ((rc = write_blob(&zb, enc + coff[c], clen[c], blob_nolit((eng_col)c, encs[c]),
                             d + 16)) < 0)
            goto fail;
    }
    if (version >= 3) {
        if ((rc = write_blob(&zb, idx, idx_len, false, footer + 48)) < 0)
            goto fail;
        ns_put_le32(footer + 80, words);
        ns_put_le32(footer + 84, SEG_BLOOM_K);
        uint8_t *bp = footer + fixed + ncols * SEG_COLDIR;
        for (uint32_t w = 0; w < words; w++)
            ns_put_le64(bp + (size_t)w * 8, bloom[w]);
    }
    /* version 6; all zero without a table */
    if (atot_len && (rc = write_blob(&zb, atot, atot_len, false, footer + 96)) < 0)
        goto fail;
    if ((rc = write_all(fd, footer, flen)) < 0)
        goto fail;
    ns_put_le64(trailer, flen);
    ns_put_le64(trailer + 8, XXH64(footer, flen, 0));
    memcpy(trailer + 16, SEG_END, 8);
    if ((rc = write_all(fd, trailer, sizeof trailer)) < 0)
        goto fail;
    if (fsync(fd) < 0) {
        rc = -errno;
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto fail;
    }
    return eng__fsync_dir_of(path);

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader: from a file descriptor or from memory, through the same checks. */

struct eng_seg {
    int fd;             /* -1 when reading from memory */
    const uint8_t *mem; /* borrowed, for eng_seg_decode_mem */
    eng_seg_info info;
    eng_seg_colinfo cols[ENG_NCOLS];
    uint64_t *bloom; /* info.bloom_words words; NULL for version 2 */
    /* the index, once eng__seg_index_load has read it: per side, bucket b's blocks are
     * blocks[side][start[side][b] .. start[side][b+1]) */
    bool idx_loaded;
    uint32_t idx_shift, idx_m[2];
    uint32_t *idx_start[2], *idx_blocks[2];
    uint8_t *idx_fences; /* version 5, rows sorted by source: idx_m[0] fences, else NULL */
    /* version 6 address totals, once atot_load has read them: atot_n addresses ascending */
    bool atot_loaded;
    size_t atot_n;
    uint64_t atot_min_rows;
    uint8_t *atot_addrs;
    eng_addr_totals *atot;
};

static int seg_pread(eng_seg *s, uint64_t off, size_t len, uint8_t *buf)
{
    if (off > s->info.file_size || len > s->info.file_size - off)
        return NS_E_CORRUPT;
    if (s->mem) {
        memcpy(buf, s->mem + off, len);
        return 0;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(s->fd, buf + got, len - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return NS_E_TRUNC;
        got += (size_t)r;
    }
    return 0;
}

static int seg_load_footer(eng_seg *s)
{
    uint8_t trailer[SEG_TRAILER], hdr[SEG_HDR];
    uint8_t *footer = NULL;
    uint64_t flen, fsum;
    int rc;

    if (s->info.file_size < SEG_HDR + SEG_TRAILER + SEG_FOOTER_FIXED)
        return NS_E_TRUNC;
    if ((rc = seg_pread(s, 0, SEG_HDR, hdr)) < 0)
        return rc;
    if (memcmp(hdr, SEG_MAGIC, 8) != 0)
        return NS_E_MAGIC;
    ns_cur hc = ns_cur_make(hdr + 8, 8);
    ns_cur_le32(&hc, &s->info.version);
    if (s->info.version < 2 || s->info.version > SEG_VERSION)
        return NS_E_VERSION;
    uint32_t ncols = s->info.version >= 4 ? ENG_NCOLS : ENG_COL_FLOWS;
    size_t fixed = s->info.version >= 6   ? SEG_FOOTER_V6
                   : s->info.version >= 4 ? SEG_FOOTER_V4
                   : s->info.version >= 3 ? SEG_FOOTER_V3
                                          : SEG_FOOTER_FIXED;
    size_t fmax = fixed + ncols * SEG_COLDIR + (s->info.version >= 3 ? SEG_BLOOM_MAX * 8 : 0);
    if ((rc = seg_pread(s, s->info.file_size - SEG_TRAILER, SEG_TRAILER, trailer)) < 0)
        return rc;
    if (memcmp(trailer + 16, SEG_END, 8) != 0)
        return NS_E_TRUNC; /* a file cut short has lost its end marker */
    ns_cur tc = ns_cur_make(trailer, 16);
    ns_cur_le64(&tc, &flen);
    ns_cur_le64(&tc, &fsum);
    if (flen < fixed || flen > fmax || flen > s->info.file_size - SEG_TRAILER - SEG_HDR)
        return NS_E_CORRUPT;
    uint64_t foff = s->info.file_size - SEG_TRAILER - flen;
    footer = malloc((size_t)flen);
    if (!footer)
        return NS_E_NOMEM;
    if ((rc = seg_pread(s, foff, (size_t)flen, footer)) < 0)
        goto out;
    rc = NS_E_CORRUPT;
    if (XXH64(footer, (size_t)flen, 0) != fsum)
        goto out;

    ns_cur f = ns_cur_make(footer, (size_t)flen);
    uint64_t u;
    uint32_t reserved;
    ns_cur_le64(&f, &s->info.rows);
    ns_cur_le64(&f, &u);
    s->info.first_ms = (int64_t)u;
    ns_cur_le64(&f, &u);
    s->info.last_ms = (int64_t)u;
    ns_cur_le64(&f, &s->info.packets);
    ns_cur_le64(&f, &s->info.bytes);
    ns_cur_le32(&f, &s->info.ncols);
    ns_cur_le32(&f, &reserved);
    if (s->info.rows > SEG_MAX_ROWS)
        goto out;
    if (s->info.version >= 3) {
        ns_cur_le64(&f, &s->info.index_offset);
        ns_cur_le64(&f, &s->info.index_csize);
        ns_cur_le64(&f, &s->info.index_rsize);
        ns_cur_le64(&f, &s->info.index_checksum);
        ns_cur_le32(&f, &s->info.bloom_words);
        ns_cur_le32(&f, &s->info.bloom_k);
        if (s->info.bloom_words < 1 || s->info.bloom_words > SEG_BLOOM_MAX || s->info.bloom_k < 1 ||
            s->info.bloom_k > 16 || s->info.index_offset < SEG_HDR || s->info.index_offset > foff ||
            s->info.index_csize > foff - s->info.index_offset ||
            s->info.index_rsize < SEG_IDX_HDR ||
            s->info.index_rsize > SEG_IDX_HDR + (s->info.rows + 2) * 32)
            goto out;
    }
    s->info.flows = s->info.rows; /* before version 4 every row is one flow */
    if (s->info.version >= 4)
        ns_cur_le64(&f, &s->info.flows);
    if (s->info.version >= 6) {
        ns_cur_le64(&f, &s->info.atot_offset);
        ns_cur_le64(&f, &s->info.atot_csize);
        ns_cur_le64(&f, &s->info.atot_rsize);
        ns_cur_le64(&f, &s->info.atot_checksum);
        /* no table is all zero; a table's raw size is bounded by its most entries */
        bool none = s->info.atot_offset == 0 && s->info.atot_csize == 0 &&
                    s->info.atot_rsize == 0 && s->info.atot_checksum == 0;
        if (!none && (s->info.atot_offset < SEG_HDR || s->info.atot_offset > foff ||
                      s->info.atot_csize == 0 || s->info.atot_csize > foff - s->info.atot_offset ||
                      s->info.atot_rsize == 0 || s->info.atot_rsize > atot_max_bytes(s->info.rows)))
            goto out;
    }
    if (s->info.rows > SEG_MAX_ROWS || s->info.ncols != ncols ||
        (uint64_t)s->info.ncols * SEG_COLDIR + (uint64_t)s->info.bloom_words * 8 != f.left)
        goto out;
    for (uint32_t i = 0; i < s->info.ncols; i++) {
        eng_seg_colinfo *ci = &s->cols[i];
        ns_cur_le32(&f, &ci->id);
        ns_cur_le32(&f, &ci->type);
        ns_cur_le32(&f, &ci->encoding);
        ns_cur_le32(&f, &reserved);
        ns_cur_le64(&f, &ci->offset);
        ns_cur_le64(&f, &ci->csize);
        ns_cur_le64(&f, &ci->rsize);
        ns_cur_le64(&f, &ci->checksum);
        if (ci->id != i || ci->type != col_width[i] || ci->offset < SEG_HDR || ci->offset > foff ||
            ci->csize > foff - ci->offset || ci->rsize > s->info.rows * 16 + 16 ||
            !enc_allowed((eng_col)i, s->info.version, ci->encoding))
            goto out;
    }
    for (uint32_t i = 0; i < ncols; i++) /* a table by an address needs that one's dictionary */
        if (s->cols[i].encoding == ENC_BY_ADDR &&
            s->cols[byaddr_key((eng_col)i)].encoding != ENC_DICT)
            goto out;
    if (s->info.bloom_words) {
        s->bloom = malloc((size_t)s->info.bloom_words * sizeof *s->bloom);
        if (!s->bloom) {
            rc = NS_E_NOMEM;
            goto out;
        }
        /* one copy, not a cursor read a word: opening is most of what a summary costs */
        if (!ns_cur_bytes(&f, s->bloom, (size_t)s->info.bloom_words * 8)) {
            rc = NS_E_CORRUPT;
            goto out;
        }
        for (uint32_t w = 0; !SEG_HOST_LE && w < s->info.bloom_words; w++)
            s->bloom[w] = ns_get_le64((const uint8_t *)&s->bloom[w]);
    }
    rc = 0;
out:
    free(footer);
    return rc;
}

int eng_seg_open(const char *path, eng_seg **out)
{
    struct stat st;
    eng_seg *s = calloc(1, sizeof *s);
    int rc;
    if (!s)
        return NS_E_NOMEM;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        rc = -errno;
        free(s);
        return rc;
    }
    if (fstat(s->fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    s->info.file_size = (uint64_t)st.st_size;
    if ((rc = seg_load_footer(s)) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    eng_seg_close(s);
    return rc;
}

void eng_seg_close(eng_seg *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->bloom);
    for (int side = 0; side < 2; side++) {
        free(s->idx_start[side]);
        free(s->idx_blocks[side]);
    }
    free(s->idx_fences);
    free(s->atot_addrs);
    free(s->atot);
    free(s);
}

uint64_t eng__stat_ident(const struct stat *st)
{
    uint64_t v[4] = {(uint64_t)st->st_ino, (uint64_t)st->st_size, (uint64_t)st->st_mtim.tv_sec,
                     (uint64_t)st->st_mtim.tv_nsec};
    return XXH3_64bits(v, sizeof v) | 1; /* never 0: 0 is "unknown" */
}

uint64_t eng__seg_ident(const eng_seg *s)
{
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) < 0)
        return 0;
    return eng__stat_ident(&st);
}

const eng_seg_info *eng_seg_get_info(const eng_seg *s)
{
    return &s->info;
}

const eng_seg_colinfo *eng_seg_col(const eng_seg *s, uint32_t i)
{
    return i < s->info.ncols ? &s->cols[i] : NULL;
}

/* Reads column i's compressed bytes into a new buffer and checks them. */
static int seg_load_col(eng_seg *s, uint32_t i, uint8_t **out)
{
    const eng_seg_colinfo *ci = &s->cols[i];
    uint8_t *buf = malloc(ci->csize ? (size_t)ci->csize : 1);
    int rc;
    if (!buf)
        return NS_E_NOMEM;
    if ((rc = seg_pread(s, ci->offset, (size_t)ci->csize, buf)) < 0) {
        free(buf);
        return rc;
    }
    if (XXH64(buf, (size_t)ci->csize, 0) != ci->checksum) {
        free(buf);
        return NS_E_CORRUPT;
    }
    *out = buf;
    return 0;
}

int eng_seg_verify_col(eng_seg *s, uint32_t i)
{
    uint8_t *buf;
    if (i >= s->info.ncols)
        return NS_E_RANGE;
    int rc = seg_load_col(s, i, &buf);
    if (rc == 0)
        free(buf);
    return rc;
}

/* A column's scratch and output buffers grow to the largest segment read and are kept. */
/* Their contents are not kept (every read overwrites them). Large ones ask for huge pages: a
 * query process faulting its buffers in 4 KiB at a time spent a fifth of a short query there. */
#define SEG_HUGE (2u << 20)
static int grow(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    free(*p);
    *p = NULL;
    *cap = 0;
    uint8_t *np;
    if (need >= SEG_HUGE) {
        size_t size = (need + SEG_HUGE - 1) / SEG_HUGE * SEG_HUGE;
        np = aligned_alloc(SEG_HUGE, size);
#ifdef MADV_HUGEPAGE
        if (np)
            (void)madvise(np, size, MADV_HUGEPAGE); /* a hint: small pages without it */
#endif
        need = size;
    } else {
        np = malloc(need);
    }
    if (!np)
        return NS_E_NOMEM;
    *p = np;
    *cap = need;
    return 0;
}

void eng__colset_free(eng_colset *cs)
{
    for (size_t i = 0; i < ENG_NCOLS; i++) {
        free(cs->col[i]);
        free(cs->dvals[i]);
        free(cs->dcodes[i]);
        free(cs->praw[i]);
    }
    free(cs->raw);
    free(cs->comp);
    ZSTD_freeDCtx(cs->zdctx);
    memset(cs, 0, sizeof *cs);
}

int eng__seg_load_cols(eng_seg *s, uint32_t colmask, eng_colset *cs)
{
    size_t n = (size_t)s->info.rows;
    int rc;
    colmask &= ENG_COLS_ALL;
    if (colmask & ENG_COLMASK(ENG_COL_LAST))
        colmask |= ENG_COLMASK(ENG_COL_FIRST); /* last is stored relative to first */
    if ((colmask & ENG_COLMASK(ENG_COL_SOURCE_ID)) && ENG_COL_SOURCE_ID < s->info.ncols &&
        s->cols[ENG_COL_SOURCE_ID].encoding == ENC_BY_EXPORTER)
        colmask |= ENG_COLMASK(ENG_COL_EXPORTER); /* and source_id through the exporter */
    /* a column by an address's dictionary needs that column's codes, not its values */
    uint32_t keys = 0;
    for (uint32_t i = 0; i < s->info.ncols; i++)
        if ((colmask & ENG_COLMASK(i)) && s->cols[i].encoding == ENC_BY_ADDR)
            keys |= ENG_COLMASK(byaddr_key((eng_col)i));
    uint32_t codes_only = keys & ~colmask;
    colmask |= keys;
    cs->n = 0;
    cs->mask = 0;
    cs->dmask = 0;
    cs->pmask = 0;
    for (uint32_t i = 0; i < ENG_NCOLS; i++) {
        if (!(colmask & ENG_COLMASK(i)))
            continue;
        size_t bytes = n * col_width[i];
        if ((rc = grow(&cs->col[i], &cs->cap[i], bytes ? bytes : 1)) < 0)
            return rc;
        if (i >= s->info.ncols) { /* a column newer than the file: zero, as it was written */
            memset(cs->col[i], 0, bytes);
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
        const eng_seg_colinfo *ci = &s->cols[i];
        if ((rc = grow(&cs->comp, &cs->compcap, ci->csize ? (size_t)ci->csize : 1)) < 0 ||
            (rc = grow(&cs->raw, &cs->rawcap, n * 16 + 16)) < 0)
            return rc;
        if ((rc = seg_pread(s, ci->offset, (size_t)ci->csize, cs->comp)) < 0)
            return rc;
        if (XXH64(cs->comp, (size_t)ci->csize, 0) != ci->checksum)
            return NS_E_CORRUPT;
        if (i == ENG_COL_FLOWS && s->info.flows == s->info.rows) {
            /* every row is one flow (a raw segment): the column is checked but not decoded,
             * and left out of the set: a row without it counts one flow, as a 0 does (writing
             * 8 zero bytes a row was a tenth of a top-N) */
            continue;
        }
        if (!cs->zdctx && !(cs->zdctx = ZSTD_createDCtx()))
            return NS_E_NOMEM;
        if (ci->encoding == ENC_PLAIN && (SEG_HOST_LE || col_width[i] == 1) &&
            enc_allowed((eng_col)i, SEG_VERSION, ENC_PLAIN)) {
            /* plain values are the set's own layout: decompressed where they are read (a
             * copy of a port column was a tenth of a /16's decoding) */
            size_t got =
                ZSTD_decompressDCtx(cs->zdctx, cs->col[i], cs->cap[i], cs->comp, (size_t)ci->csize);
            if (ZSTD_isError(got) || got != ci->rsize || got != bytes)
                return NS_E_CORRUPT;
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
#if defined(__SSE2__)
        if ((cs->planes_ok & ENG_COLMASK(i)) && ci->encoding == ENC_TRANSPOSE &&
            col_width[i] == 8) {
            /* a counter its reader takes as planes: kept as decompressed, in its own buffer,
             * unless a high plane is in use. Transposing two counters (8 bytes a row written,
             * then read again) cost a /16 with top ports as much as its aggregation. */
            if ((rc = grow(&cs->praw[i], &cs->prawcap[i], n * 8 + 16)) < 0)
                return rc;
            size_t got = ZSTD_decompressDCtx(cs->zdctx, cs->praw[i], cs->prawcap[i], cs->comp,
                                             (size_t)ci->csize);
            if (ZSTD_isError(got) || got != ci->rsize || got != n * 8)
                return NS_E_CORRUPT;
            if (planes_used(cs->praw[i], n) <= 4) {
                cs->pmask |= ENG_COLMASK(i);
                cs->mask |= ENG_COLMASK(i);
                continue;
            }
            if ((rc = col_decode((eng_col)i, ci->encoding, cs->praw[i], got, n, NULL, cs->col[i])) <
                0)
                return rc;
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
#endif
        size_t got =
            ZSTD_decompressDCtx(cs->zdctx, cs->raw, cs->rawcap, cs->comp, (size_t)ci->csize);
        if (ZSTD_isError(got) || got != ci->rsize)
            return NS_E_CORRUPT;
        if (ci->encoding == ENC_DICT) {
            eng_coldict *dv = &cs->dict[i];
            if ((rc = grow(&cs->dvals[i], &cs->dvcap[i], n * 16 + 16)) < 0 ||
                (rc = grow((uint8_t **)&cs->dcodes[i], &cs->dccap[i], n * 4 + 4)) < 0)
                return rc;
            dv->vals = cs->dvals[i];
            dv->codes = cs->dcodes[i];
            bool expand = !((cs->dict_only | codes_only) & ENG_COLMASK(i));
            if ((rc = dict_decode(cs->raw, got, n, dv, expand ? cs->col[i] : NULL)) < 0)
                return rc;
            if (codes_only & ENG_COLMASK(i))
                continue; /* for the columns by it alone: not handed out */
            cs->dmask |= ENG_COLMASK(i);
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
        if (ci->encoding == ENC_BY_ADDR) {
            /* the address column precedes it, and was decoded above (open made sure it is a
             * dictionary) */
            eng_col key = byaddr_key((eng_col)i);
            if ((rc = byaddr_decode(cs->raw, got, n, col_width[i], &cs->dict[key], cs->col[i])) < 0)
                return rc;
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
        if (ci->encoding == ENC_BY_EXPORTER) {
            /* the exporter column precedes it, and was added to the mask above */
            if (!(cs->mask & ENG_COLMASK(ENG_COL_EXPORTER)))
                return NS_E_CORRUPT;
            if ((rc = byexp_decode(cs->raw, got, n, cs->col[ENG_COL_EXPORTER], cs->col[i])) < 0)
                return rc;
            cs->mask |= ENG_COLMASK(i);
            continue;
        }
        /* FIRST precedes LAST in the file, so it is decoded by the time LAST needs it */
        rc = col_decode((eng_col)i, ci->encoding, cs->raw, got, n,
                        (cs->mask & ENG_COLMASK(ENG_COL_FIRST)) ? cs->col[ENG_COL_FIRST] : NULL,
                        cs->col[i]);
        if (rc < 0)
            return rc;
        cs->mask |= ENG_COLMASK(i);
    }
    cs->n = n;
    return 0;
}

/* Copies column c of the set's rows idx[0..cnt) (or from..from+cnt) into rows. */
#define SEG_FILL(W)                                                                                \
    for (size_t k = 0; k < cnt; k++) {                                                             \
        size_t i = idx ? idx[k] : from + k;                                                        \
        memcpy((uint8_t *)&rows[k] + off, src + i * (W), (W));                                     \
    }

/* Columns cols of the set's rows into rows (the other fields untouched). */
static void colset_fill(const eng_colset *cs, const uint32_t *idx, size_t from, size_t cnt,
                        uint32_t cols, eng_flow *rows)
{
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        if (!(cs->mask & cols & ENG_COLMASK(c)))
            continue;
        const uint8_t *src = cs->col[c];
        size_t off = col_off[c];
        if (!SEG_HOST_LE) {
            for (size_t k = 0; k < cnt; k++)
                row_set(&rows[k], (eng_col)c, src + (idx ? idx[k] : from + k) * col_width[c]);
            continue;
        }
        switch (col_width[c]) {
        case 1:
            SEG_FILL(1)
            break;
        case 2:
            SEG_FILL(2)
            break;
        case 4:
            SEG_FILL(4)
            break;
        case 8:
            SEG_FILL(8)
            break;
        default:
            SEG_FILL(16)
            break;
        }
    }
}
#undef SEG_FILL

void eng__colset_rows(const eng_colset *cs, const uint32_t *idx, size_t from, size_t cnt,
                      eng_flow *rows)
{
    memset(rows, 0, cnt * sizeof *rows);
    colset_fill(cs, idx, from, cnt, ENG_COLS_ALL, rows);
}

size_t eng_col_width(eng_col c)
{
    return (unsigned)c < ENG_NCOLS ? col_width[c] : 0;
}

void eng_colview_rows(const eng_colview *v, size_t k0, size_t cnt, eng_flow *rows)
{
    memset(rows, 0, cnt * sizeof *rows);
    eng_colview_fill(v, k0, cnt, ENG_COLS_ALL, rows);
}

void eng_colview_fill(const eng_colview *v, size_t k0, size_t cnt, uint32_t cols, eng_flow *rows)
{
    eng_colset cs = {.n = 0, .mask = v->mask};
    uint32_t planes = 0;
    for (size_t c = 0; c < ENG_NCOLS; c++) {
        cs.col[c] = (uint8_t *)(uintptr_t)v->col[c]; /* only read */
        if (!v->col[c] && v->planes[c])
            planes |= ENG_COLMASK(c);
    }
    cs.mask &= ~planes;
    colset_fill(&cs, v->idx ? v->idx + k0 : NULL, k0, cnt, cols, rows);
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        if (!(planes & cols & ENG_COLMASK(c)))
            continue;
        for (size_t k = 0; k < cnt; k++) {
            uint8_t le[16] = {0}; /* row_set reads the column's width: 8 here */
            ns_put_le64(le, eng_col_plane_u64(v, (eng_col)c, v->idx ? v->idx[k0 + k] : k0 + k));
            row_set(&rows[k], (eng_col)c, le);
        }
    }
}

int eng_colview_unplane(const eng_colview *v, eng_colview *out, uint8_t **buf, size_t *cap)
{
    size_t need = 0;
    *out = *v;
    for (uint32_t c = 0; c < ENG_NCOLS; c++)
        if (!v->col[c] && v->planes[c])
            need += v->nrows * 8;
    if (need > *cap) {
        uint8_t *p = realloc(*buf, need);
        if (!p)
            return NS_E_NOMEM;
        *buf = p;
        *cap = need;
    }
    uint8_t *at = *buf;
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        if (v->col[c] || !v->planes[c])
            continue;
        size_t i = 0;
#if defined(__SSE2__)
        for (; i + 16 <= v->nrows; i += 16) /* planes 4 to 7 are zero */
            untranspose16_low(v->planes[c], v->nrows, i, 4, at + i * 8);
#endif
        for (; i < v->nrows; i++)
            ns_put_le64(at + i * 8, eng_col_plane_u64(v, (eng_col)c, i));
        out->col[c] = at;
        out->planes[c] = NULL;
        at += v->nrows * 8;
    }
    return 0;
}

#define SEG_GATHER(W)                                                                              \
    for (size_t i = 0; i < k; i++)                                                                 \
        memcpy(out + i * (W), in + i * sizeof(eng_flow), (W));

int eng__colset_from_rows(eng_colset *cs, const eng_flow *rows, size_t n, uint32_t mask)
{
    int rc;
    cs->n = 0;
    cs->mask = 0;
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        if (!(mask & ENG_COLMASK(c)))
            continue;
        if ((rc = grow(&cs->col[c], &cs->cap[c], n ? n * col_width[c] : 1)) < 0)
            return rc;
        cs->mask |= ENG_COLMASK(c);
    }
    /* A block of rows at a time, every column of it while the block is in cache: a pass over
     * all the rows per column read each 144-byte row from memory once per column (queries
     * over a backlog of open rows spent a quarter of the daemon's CPU here). */
    enum { BLOCK = 128 }; /* 18 KB of rows */
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t k = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (uint32_t c = 0; c < ENG_NCOLS; c++) {
            if (!(cs->mask & ENG_COLMASK(c)))
                continue;
            uint32_t w = col_width[c];
            uint8_t *out = cs->col[c] + i0 * w;
            const uint8_t *in = (const uint8_t *)&rows[i0] + col_off[c];
            if (!SEG_HOST_LE) {
                for (size_t i = 0; i < k; i++)
                    row_get(&rows[i0 + i], (eng_col)c, out + i * w);
                continue;
            }
            switch (w) { /* constant widths: the copies become single loads and stores */
            case 1:
                SEG_GATHER(1)
                break;
            case 2:
                SEG_GATHER(2)
                break;
            case 4:
                SEG_GATHER(4)
                break;
            case 8:
                SEG_GATHER(8)
                break;
            default:
                SEG_GATHER(16)
                break;
            }
        }
    }
    cs->n = n;
    return 0;
}
#undef SEG_GATHER

/* The columns a read fills: those asked for, and first_ms with last_ms (stored relative to it),
 * not the exporter column a source_id coded by exporter needs to decode. */
static uint32_t read_fills(uint32_t colmask)
{
    return colmask & ENG_COLMASK(ENG_COL_LAST) ? colmask | ENG_COLMASK(ENG_COL_FIRST) : colmask;
}

int eng_seg_read(eng_seg *s, uint32_t colmask, eng_flow *rows)
{
    eng_colset cs = {0};
    int rc = eng__seg_load_cols(s, colmask, &cs);
    if (rc == 0) {
        memset(rows, 0, cs.n * sizeof *rows);
        colset_fill(&cs, NULL, 0, cs.n, read_fills(colmask), rows);
    }
    eng__colset_free(&cs);
    return rc;
}

size_t eng__sel_rows(const uint64_t *sel, size_t n, uint32_t *idx)
{
    size_t k = 0;
    for (size_t w = 0; w < (n + 63) / 64; w++)
        for (uint64_t bits = sel[w]; bits; bits &= bits - 1) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(bits);
            if (i < n)
                idx[k++] = (uint32_t)i;
        }
    return k;
}

int eng_seg_read_sel(eng_seg *s, uint32_t colmask, const uint64_t *sel, eng_flow *rows,
                     size_t *nout)
{
    size_t n = (size_t)s->info.rows;
    uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
    eng_colset cs = {0};
    int rc;
    *nout = 0;
    if (!idx)
        return NS_E_NOMEM;
    size_t k = eng__sel_rows(sel, n, idx);
    rc = eng__seg_load_cols(s, colmask, &cs);
    if (rc == 0) {
        memset(rows, 0, k * sizeof *rows);
        colset_fill(&cs, idx, 0, k, read_fills(colmask), rows);
        *nout = k;
    }
    eng__colset_free(&cs);
    free(idx);
    return rc;
}

int eng_seg_decode_mem(const uint8_t *buf, size_t len, eng_flow **rows_out, size_t *n_out)
{
    eng_seg *s = calloc(1, sizeof *s);
    eng_flow *rows = NULL;
    int rc;
    if (!s)
        return NS_E_NOMEM;
    s->fd = -1;
    s->mem = buf;
    s->info.file_size = len;
    if ((rc = seg_load_footer(s)) < 0)
        goto fail;
    if ((rc = eng_seg_index_check(s, NULL)) < 0)
        goto fail;
    rows = malloc((size_t)(s->info.rows ? s->info.rows : 1) * sizeof *rows);
    rc = NS_E_NOMEM;
    if (!rows)
        goto fail;
    if ((rc = eng_seg_read(s, ENG_COLS_ALL, rows)) < 0 ||
        (rc = eng_seg_addr_totals_verify(s, rows, (size_t)s->info.rows)) < 0)
        goto fail;
    *rows_out = rows;
    *n_out = (size_t)s->info.rows;
    eng_seg_close(s);
    return 0;
fail:
    free(rows);
    eng_seg_close(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Index reader */

static int atot_load(eng_seg *s);

/* The blob at off (csize bytes on disk, rsize raw) into a malloc'd *raw (the caller frees it):
 * its XXH64 must be checksum and zstd must give exactly rsize bytes. */
static int read_blob(eng_seg *s, uint64_t off, uint64_t csize, uint64_t rsize, uint64_t checksum,
                     uint8_t **raw)
{
    uint8_t *comp = malloc(csize ? (size_t)csize : 1), *r = malloc(rsize ? (size_t)rsize : 1);
    int rc = NS_E_NOMEM;
    if (!comp || !r)
        goto out;
    if ((rc = seg_pread(s, off, (size_t)csize, comp)) < 0)
        goto out;
    rc = NS_E_CORRUPT;
    if (XXH64(comp, (size_t)csize, 0) != checksum)
        goto out;
    size_t got = ZSTD_decompress(r, (size_t)rsize, comp, (size_t)csize);
    if (ZSTD_isError(got) || got != rsize)
        goto out;
    rc = 0;
out:
    free(comp);
    if (rc < 0)
        free(r);
    else
        *raw = r;
    return rc;
}

/* Reads, checks and unpacks the index blob: checksum, exact decompressed size, header, bucket
 * counts that add up, blocks ascending and inside the segment, no byte left over. */
static int index_load(eng_seg *s)
{
    const eng_seg_info *in = &s->info;
    uint8_t *raw = NULL;
    if (s->idx_loaded || in->version < 3)
        return 0;
    int rc =
        read_blob(s, in->index_offset, in->index_csize, in->index_rsize, in->index_checksum, &raw);
    if (rc < 0)
        return rc;
    rc = NS_E_CORRUPT;
    ns_cur c = ns_cur_make(raw, (size_t)in->index_rsize);
    uint32_t flags = 0;
    ns_cur_le32(&c, &s->idx_shift);
    ns_cur_le32(&c, &s->idx_m[0]);
    ns_cur_le32(&c, &s->idx_m[1]);
    ns_cur_le32(&c, &flags);
    uint32_t mmax = pow2_at_least(in->rows ? in->rows : 1);
    if (s->idx_shift > 26 || (flags & ~SEG_IDX_FENCES) != 0 || (flags && in->version < 5))
        goto out;
    uint64_t nblocks = (in->rows + (1ull << s->idx_shift) - 1) >> s->idx_shift;
    if (flags & SEG_IDX_FENCES) {
        /* the source side: one fence a block, ascending (the rows are sorted by source) */
        if (s->idx_m[0] != nblocks)
            goto out;
        s->idx_fences = malloc(nblocks ? (size_t)nblocks * 16 : 1);
        if (!s->idx_fences) {
            rc = NS_E_NOMEM;
            goto out;
        }
        if (!get_ascending(&c, (size_t)nblocks, false, s->idx_fences))
            goto out;
    }
    for (int side = s->idx_fences ? 1 : 0; side < 2; side++) {
        uint32_t m = s->idx_m[side];
        if (m == 0 || (m & (m - 1)) != 0 || m > mmax)
            goto out;
        s->idx_start[side] = malloc(((size_t)m + 1) * sizeof(uint32_t));
        if (!s->idx_start[side]) {
            rc = NS_E_NOMEM;
            goto out;
        }
        uint64_t total = 0;
        s->idx_start[side][0] = 0;
        for (uint32_t b = 0; b < m; b++) {
            uint64_t cnt;
            if (!get_varint(&c, &cnt) || cnt > nblocks || total + cnt > in->rows)
                goto out; /* each row gives one entry at most */
            total += cnt;
            s->idx_start[side][b + 1] = (uint32_t)total;
        }
        s->idx_blocks[side] = malloc((size_t)(total ? total : 1) * sizeof(uint32_t));
        if (!s->idx_blocks[side]) {
            rc = NS_E_NOMEM;
            goto out;
        }
        for (uint32_t b = 0; b < m; b++) {
            uint64_t prev = 0;
            for (uint32_t e = s->idx_start[side][b]; e < s->idx_start[side][b + 1]; e++) {
                uint64_t v;
                if (!get_varint(&c, &v))
                    goto out;
                bool first = e == s->idx_start[side][b];
                if (!first && v == 0)
                    goto out; /* blocks strictly ascend */
                v = first ? v : prev + v;
                if (v >= nblocks)
                    goto out;
                s->idx_blocks[side][e] = (uint32_t)v;
                prev = v;
            }
        }
    }
    if (c.left != 0)
        goto out;
    s->idx_loaded = true;
    rc = 0;
out:
    if (rc < 0) {
        for (int side = 0; side < 2; side++) {
            free(s->idx_start[side]);
            free(s->idx_blocks[side]);
            s->idx_start[side] = s->idx_blocks[side] = NULL;
        }
        free(s->idx_fences);
        s->idx_fences = NULL;
    }
    free(raw);
    return rc;
}

int eng_seg_index_check(eng_seg *s, eng_seg_index_stats *st)
{
    int rc = index_load(s);
    if (rc == 0)
        rc = atot_load(s);
    if (rc < 0)
        return rc;
    if (st) {
        memset(st, 0, sizeof *st);
        if (s->idx_loaded) {
            st->block_rows = 1u << s->idx_shift;
            st->src_fences = s->idx_fences != NULL;
            for (int side = 0; side < 2; side++) {
                if (side == 0 && s->idx_fences) {
                    st->buckets[0] = 0;
                    st->entries[0] = s->idx_m[0];
                    continue;
                }
                st->buckets[side] = s->idx_m[side];
                st->entries[side] = s->idx_start[side][s->idx_m[side]];
            }
        }
        st->atot_entries = s->atot_n;
        st->atot_min_rows = s->atot_min_rows;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Address totals reader (version 6) */

static bool get_side(ns_cur *c, const eng_seg_info *in, bool times, eng_side_totals *t)
{
    uint64_t fo = 0, lo = 0;
    memset(t, 0, sizeof *t);
    if (!get_varint(c, &t->rows) || t->rows > in->rows)
        return false;
    if (t->rows == 0)
        return true;
    if (!get_varint(c, &t->flows) || !get_varint(c, &t->packets) || !get_varint(c, &t->bytes) ||
        (times && (!get_varint(c, &fo) || !get_varint(c, &lo))))
        return false;
    /* the counters are not checked against the footer's totals: sums of what exporters claim
     * may wrap past 2^64 (the footer's as well), and a sound file must not read as damaged;
     * a row's times may be out of order (last before first), so neither are the offsets */
    if (times) {
        t->first_ms = (int64_t)((uint64_t)in->first_ms + fo);
        t->last_ms = (int64_t)((uint64_t)in->last_ms - lo);
    }
    return true;
}

/* Reads, checks and unpacks the table: checksum, exact size, addresses ascending, every entry
 * on at least the threshold's rows with totals its segment can hold, no byte left over. */
static int atot_load(eng_seg *s)
{
    const eng_seg_info *in = &s->info;
    uint8_t *raw = NULL;
    if (s->atot_loaded || in->version < 6 || in->atot_csize == 0)
        return 0;
    int rc = read_blob(s, in->atot_offset, in->atot_csize, in->atot_rsize, in->atot_checksum, &raw);
    if (rc < 0)
        return rc;
    rc = NS_E_CORRUPT;
    ns_cur c = ns_cur_make(raw, (size_t)in->atot_rsize);
    uint64_t thr, m, sum[2] = {0, 0};
    uint64_t want = atot_threshold(in->rows);
    if (!get_varint(&c, &thr) || thr != want || !get_varint(&c, &m) || m == 0 ||
        m > 2 * in->rows / thr + 1)
        goto out;
    s->atot_addrs = malloc((size_t)m * 16);
    s->atot = malloc((size_t)m * sizeof *s->atot);
    if (!s->atot_addrs || !s->atot) {
        rc = NS_E_NOMEM;
        goto out;
    }
    if (!get_ascending(&c, (size_t)m, true, s->atot_addrs))
        goto out;
    for (size_t k = 0; k < m; k++) {
        eng_addr_totals *t = &s->atot[k];
        if (!get_side(&c, in, true, &t->src) || !get_side(&c, in, true, &t->dst) ||
            !get_side(&c, in, false, &t->both))
            goto out;
        sum[0] += t->src.rows;
        sum[1] += t->dst.rows;
        /* rows with the address on both sides are among each side's */
        if (t->both.rows > t->src.rows || t->both.rows > t->dst.rows ||
            t->src.rows + t->dst.rows - t->both.rows < thr || sum[0] > in->rows ||
            sum[1] > in->rows)
            goto out;
    }
    if (c.left != 0)
        goto out;
    s->atot_n = (size_t)m;
    s->atot_min_rows = thr;
    s->atot_loaded = true;
    rc = 0;
out:
    if (rc < 0) {
        free(s->atot_addrs);
        free(s->atot);
        s->atot_addrs = NULL;
        s->atot = NULL;
    }
    free(raw);
    return rc;
}

int eng_seg_addr_totals(eng_seg *s, const ns_addr *a, eng_addr_totals *out)
{
    int rc = atot_load(s);
    if (rc < 0)
        return rc;
    size_t lo = 0, hi = s->atot_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = memcmp(s->atot_addrs + mid * 16, a->b, 16);
        if (cmp == 0) {
            *out = s->atot[mid];
            return 1;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Whether the listed totals are those of rows[0..n) (the segment's rows, decoded): --verify's
 * check that a table behind a good checksum is also true. 0, NS_E_CORRUPT or a load error. */
int eng_seg_addr_totals_verify(eng_seg *s, const eng_flow *rows, size_t n)
{
    int rc = atot_load(s);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < s->atot_n; k++) {
        eng_addr_totals t;
        memset(&t, 0, sizeof t);
        const uint8_t *a = s->atot_addrs + k * 16;
        for (size_t i = 0; i < n; i++) {
            const eng_flow *r = &rows[i];
            bool is_src = memcmp(r->src.b, a, 16) == 0, is_dst = memcmp(r->dst.b, a, 16) == 0;
            eng_side_totals *side[3] = {is_src ? &t.src : NULL, is_dst ? &t.dst : NULL,
                                        is_src && is_dst ? &t.both : NULL};
            for (int j = 0; j < 3; j++) {
                eng_side_totals *x = side[j];
                if (!x)
                    continue;
                if (j < 2 && (x->rows == 0 || r->first_ms < x->first_ms))
                    x->first_ms = r->first_ms;
                if (j < 2 && (x->rows == 0 || r->last_ms > x->last_ms))
                    x->last_ms = r->last_ms;
                x->rows++;
                x->flows += eng_flow_count(r);
                x->packets += r->packets;
                x->bytes += r->bytes;
            }
        }
        const eng_addr_totals *w = &s->atot[k];
        const eng_side_totals *got[3] = {&w->src, &w->dst, &w->both},
                              *exp[3] = {&t.src, &t.dst, &t.both};
        for (int j = 0; j < 3; j++)
            if (got[j]->rows != exp[j]->rows || got[j]->flows != exp[j]->flows ||
                got[j]->packets != exp[j]->packets || got[j]->bytes != exp[j]->bytes ||
                (j < 2 && exp[j]->rows &&
                 (got[j]->first_ms != exp[j]->first_ms || got[j]->last_ms != exp[j]->last_ms)))
                return NS_E_CORRUPT;
    }
    return 0;
}

bool eng_seg_may_have(const eng_seg *s, const ns_addr *a)
{
    if (!s->bloom)
        return true; /* version 2: no filter */
    uint64_t h = eng_addr_hash(a), nbits = (uint64_t)s->info.bloom_words * 64;
    for (uint32_t k = 0; k < s->info.bloom_k; k++) {
        uint64_t bit = bloom_bit(h, k, nbits);
        if (!(s->bloom[bit / 64] >> (bit % 64) & 1))
            return false;
    }
    return true;
}

/* The first fence above a (above or equal when eq) among the idx_m[0] fences. */
static size_t fence_bound(const eng_seg *s, const ns_addr *a, bool eq)
{
    size_t lo = 0, hi = s->idx_m[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(s->idx_fences + mid * 16, a->b, 16);
        if (c < 0 || (c == 0 && !eq))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Rows sorted by source: a's rows lie in the blocks from the one before the first fence not
 * below a, to the last fence not above it. */
static void fence_select(const eng_seg *s, const ns_addr *a, uint64_t *sel)
{
    size_t ge = fence_bound(s, a, true), gt = fence_bound(s, a, false);
    if (gt == 0)
        return; /* below the first row's source */
    uint64_t rows = s->info.rows;
    uint64_t lo = (uint64_t)(ge ? ge - 1 : 0) << s->idx_shift;
    uint64_t hi = (uint64_t)gt << s->idx_shift;
    if (hi > rows)
        hi = rows;
    for (uint64_t r = lo; r < hi; r++)
        sel[r / 64] |= 1ull << (r % 64);
}

int eng_seg_select(eng_seg *s, const ns_addr *addrs, size_t naddrs, uint64_t *sel, size_t *nsel)
{
    uint64_t rows = s->info.rows;
    size_t words = (size_t)((rows + 63) / 64), count = 0;
    int rc;
    *nsel = 0;
    if (s->info.version < 3) {
        /* no index: every row may match */
        for (size_t w = 0; w < words; w++)
            sel[w] = ~0ull;
        if (rows % 64)
            sel[words - 1] = (1ull << (rows % 64)) - 1;
        *nsel = (size_t)rows;
        return 0;
    }
    if ((rc = index_load(s)) < 0)
        return rc;
    for (size_t i = 0; i < naddrs; i++) {
        if (!eng_seg_may_have(s, &addrs[i]))
            continue;
        uint64_t h = eng_addr_hash(&addrs[i]);
        if (s->idx_fences)
            fence_select(s, &addrs[i], sel);
        for (int side = s->idx_fences ? 1 : 0; side < 2; side++) {
            uint32_t b = (uint32_t)(h & (s->idx_m[side] - 1));
            for (uint32_t e = s->idx_start[side][b]; e < s->idx_start[side][b + 1]; e++) {
                uint64_t lo = (uint64_t)s->idx_blocks[side][e] << s->idx_shift;
                uint64_t hi = lo + (1ull << s->idx_shift);
                if (hi > rows)
                    hi = rows;
                for (uint64_t r = lo; r < hi; r++)
                    sel[r / 64] |= 1ull << (r % 64);
            }
        }
    }
    for (size_t w = 0; w < words; w++)
        count += (size_t)__builtin_popcountll(sel[w]);
    *nsel = count;
    return 0;
}
