/* engine/segment.c — one minute of flows as a columnar segment file.
 *
 * Layout (fixed little-endian; docs/format.md has the full tables):
 *
 *   OFFSET  SIZE  FIELD
 *   0       8     magic "NS2FSEG\0"
 *   8       4     format version (2)
 *   12      4     flags (0)
 *   16      ...   column blobs, each zstd-compressed after its encoding
 *   F       ...   footer: totals + column directory (48 bytes a column)
 *   end-24  8     footer length (bytes from F to end-24)
 *   end-16  8     xxh64 of the footer
 *   end-8   8     magic "NS2FEND\0"
 *
 * The footer sits at the end so a file is written front to back once and opened by reading
 * its last bytes. Every column has its own xxh64 so one flipped byte names the column. */
#include "engine/store.h"
#include "engine/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define SEG_MAGIC        "NS2FSEG"
#define SEG_END          "NS2FEND"
#define SEG_VERSION      2u /* 2: vlan, direction, flow_type columns */
#define SEG_HDR          16u
#define SEG_TRAILER      24u
#define SEG_FOOTER_FIXED 48u
#define SEG_COLDIR       48u
#define SEG_MAX_ROWS     (1u << 26) /* 64M rows a segment: a sanity cap for readers */
#define SEG_ZSTD_LEVEL   3

enum { ENC_PLAIN = 0, ENC_TRANSPOSE = 1, ENC_DELTA_VARINT = 2, ENC_SPAN_VARINT = 3 };

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
};
#undef OFF
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SEG_HOST_LE 1
#else
#define SEG_HOST_LE 0
#endif

static const char *const col_names[ENG_NCOLS] = {
    "first_ms", "last_ms",   "packets",  "bytes",    "exporter",  "src",
    "dst",      "nexthop",   "src_as",   "dst_as",   "in_if",     "out_if",
    "sampling", "source_id", "src_port", "dst_port", "proto",     "tcp_flags",
    "tos",      "src_mask",  "dst_mask", "vlan",     "direction", "flow_type",
};

const char *eng_col_name(eng_col c)
{
    return (unsigned)c < ENG_NCOLS ? col_names[c] : "?";
}

static uint32_t col_encoding(eng_col c)
{
    if (c == ENG_COL_FIRST)
        return ENC_DELTA_VARINT;
    if (c == ENG_COL_LAST)
        return ENC_SPAN_VARINT;
    return col_width[c] == 1 ? ENC_PLAIN : ENC_TRANSPOSE;
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

static bool get_varint(ns_cur *c, uint64_t *out)
{
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

/* Little-endian fields into byte planes; the width a constant in each copy, as below. */
#define SEG_TRANSPOSE(W)                                                                           \
    for (size_t i = 0; i < n; i++) {                                                               \
        uint8_t v[W];                                                                              \
        memcpy(v, (const uint8_t *)&rows[i] + off, (W));                                           \
        for (uint32_t k = 0; k < (W); k++)                                                         \
            buf[k * n + i] = v[k];                                                                 \
    }

static bool transpose(const eng_flow *rows, size_t n, size_t off, uint32_t w, uint8_t *buf)
{
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

/* Encodes column c of rows into buf (capacity n*10 at least); returns bytes used. */
static size_t col_encode(eng_col c, const eng_flow *rows, size_t n, uint8_t *buf)
{
    uint32_t w = col_width[c];
    size_t used = 0;
    switch (col_encoding(c)) {
    case ENC_DELTA_VARINT: {
        int64_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            used += put_varint(buf + used, zigzag(wrap_sub(rows[i].first_ms, prev)));
            prev = rows[i].first_ms;
        }
        return used;
    }
    case ENC_SPAN_VARINT:
        for (size_t i = 0; i < n; i++)
            used += put_varint(buf + used, zigzag(wrap_sub(rows[i].last_ms, rows[i].first_ms)));
        return used;
    case ENC_TRANSPOSE: {
        /* Byte k of every value together: high bytes of ports, counters and v4-mapped
         * prefixes become long runs that zstd squeezes to nothing. */
        uint8_t v[16];
        if (SEG_HOST_LE && transpose(rows, n, col_off[c], w, buf))
            return n * w;
        for (size_t i = 0; i < n; i++) {
            if (SEG_HOST_LE)
                memcpy(v, (const uint8_t *)&rows[i] + col_off[c], w);
            else
                row_get(&rows[i], c, v);
            for (uint32_t k = 0; k < w; k++)
                buf[k * n + i] = v[k];
        }
        return n * w;
    }
    default:
        for (size_t i = 0; i < n; i++)
            buf[i] = *((const uint8_t *)&rows[i] + col_off[c]);
        return n;
    }
}

/* Byte planes back into little-endian fields, the width a constant in each copy so the
 * compiler unrolls the gather: decoding is the hot loop of every query. */
#define SEG_UNTRANSPOSE(W)                                                                         \
    for (size_t i = 0; i < n; i++) {                                                               \
        uint8_t v[W];                                                                              \
        for (uint32_t k = 0; k < (W); k++)                                                         \
            v[k] = raw[k * n + i];                                                                 \
        memcpy((uint8_t *)&rows[i] + off, v, (W));                                                 \
    }

static bool untranspose(const uint8_t *raw, size_t n, eng_flow *rows, size_t off, uint32_t w)
{
    switch (w) {
    case 2:
        SEG_UNTRANSPOSE(2)
        return true;
    case 4:
        SEG_UNTRANSPOSE(4)
        return true;
    case 8:
        SEG_UNTRANSPOSE(8)
        return true;
    case 16:
        SEG_UNTRANSPOSE(16)
        return true;
    default:
        return false;
    }
}

/* Decodes raw (rsize bytes) of column c with encoding enc into rows[0..n). */
static int col_decode(eng_col c, uint32_t enc, const uint8_t *raw, size_t rsize, eng_flow *rows,
                      size_t n)
{
    uint32_t w = col_width[c];
    ns_cur cur = ns_cur_make(raw, rsize);
    if (enc != col_encoding(c))
        return NS_E_CORRUPT;
    switch (enc) {
    case ENC_DELTA_VARINT: {
        int64_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            if (!get_varint(&cur, &v))
                return NS_E_CORRUPT;
            prev = (int64_t)((uint64_t)prev + (uint64_t)unzigzag(v));
            rows[i].first_ms = prev;
        }
        break;
    }
    case ENC_SPAN_VARINT:
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            if (!get_varint(&cur, &v))
                return NS_E_CORRUPT;
            /* needs ENG_COL_FIRST decoded first: eng_seg_read orders it so */
            rows[i].last_ms = (int64_t)((uint64_t)rows[i].first_ms + (uint64_t)unzigzag(v));
        }
        break;
    case ENC_TRANSPOSE: {
        uint8_t v[16];
        if (rsize != n * w)
            return NS_E_CORRUPT;
        cur.left = 0;
        if (SEG_HOST_LE && untranspose(raw, n, rows, col_off[c], w))
            break;
        for (size_t i = 0; i < n; i++) {
            for (uint32_t k = 0; k < w; k++)
                v[k] = raw[k * n + i];
            if (SEG_HOST_LE)
                memcpy((uint8_t *)&rows[i] + col_off[c], v, w);
            else
                row_set(&rows[i], c, v);
        }
        break;
    }
    default:
        if (rsize != n)
            return NS_E_CORRUPT;
        for (size_t i = 0; i < n; i++)
            *((uint8_t *)&rows[i] + col_off[c]) = raw[i];
        cur.left = 0;
        break;
    }
    return cur.left == 0 ? 0 : NS_E_CORRUPT;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer */

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

int eng_seg_write(const char *path, const eng_flow *rows, size_t n)
{
    char tmp[4200];
    uint8_t *enc = NULL, *comp = NULL;
    uint8_t footer[SEG_FOOTER_FIXED + ENG_NCOLS * SEG_COLDIR];
    uint8_t trailer[SEG_TRAILER];
    int fd = -1, rc;
    uint64_t off = SEG_HDR;
    int64_t tmin = n ? INT64_MAX : 0, tmax = n ? INT64_MIN : 0;
    uint64_t pk = 0, by = 0;

    if (n > SEG_MAX_ROWS)
        return NS_E_TOO_MANY;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -ENAMETOOLONG;
    size_t enc_cap = (n ? n : 1) * 16 + 16;
    size_t comp_cap = ZSTD_compressBound(enc_cap);
    enc = malloc(enc_cap);
    comp = malloc(comp_cap);
    if (!enc || !comp) {
        rc = NS_E_NOMEM;
        goto fail;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    uint8_t hdr[SEG_HDR] = {0};
    memcpy(hdr, SEG_MAGIC, 8);
    ns_put_le32(hdr + 8, SEG_VERSION);
    if ((rc = write_all(fd, hdr, sizeof hdr)) < 0)
        goto fail;

    for (size_t i = 0; i < n; i++) {
        if (rows[i].first_ms < tmin)
            tmin = rows[i].first_ms;
        if (rows[i].last_ms > tmax)
            tmax = rows[i].last_ms;
        pk += rows[i].packets;
        by += rows[i].bytes;
    }
    memset(footer, 0, sizeof footer);
    ns_put_le64(footer + 0, n);
    ns_put_le64(footer + 8, (uint64_t)tmin);
    ns_put_le64(footer + 16, (uint64_t)tmax);
    ns_put_le64(footer + 24, pk);
    ns_put_le64(footer + 32, by);
    ns_put_le32(footer + 40, ENG_NCOLS);

    for (int c = 0; c < ENG_NCOLS; c++) {
        size_t rsize = col_encode((eng_col)c, rows, n, enc);
        size_t csize = ZSTD_compress(comp, comp_cap, enc, rsize, SEG_ZSTD_LEVEL);
        if (ZSTD_isError(csize)) {
            rc = NS_E_COMPRESS;
            goto fail;
        }
        if ((rc = write_all(fd, comp, csize)) < 0)
            goto fail;
        uint8_t *d = footer + SEG_FOOTER_FIXED + (size_t)c * SEG_COLDIR;
        ns_put_le32(d + 0, (uint32_t)c);
        ns_put_le32(d + 4, col_width[c]);
        ns_put_le32(d + 8, col_encoding((eng_col)c));
        ns_put_le64(d + 16, off);
        ns_put_le64(d + 24, csize);
        ns_put_le64(d + 32, rsize);
        ns_put_le64(d + 40, XXH64(comp, csize, 0));
        off += csize;
    }
    if ((rc = write_all(fd, footer, sizeof footer)) < 0)
        goto fail;
    ns_put_le64(trailer, sizeof footer);
    ns_put_le64(trailer + 8, XXH64(footer, sizeof footer, 0));
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
    free(enc);
    free(comp);
    return eng__fsync_dir_of(path);

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(enc);
    free(comp);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader: from a file descriptor or from memory, through the same checks. */

struct eng_seg {
    int fd;             /* -1 when reading from memory */
    const uint8_t *mem; /* borrowed, for eng_seg_decode_mem */
    eng_seg_info info;
    eng_seg_colinfo cols[ENG_NCOLS];
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
    uint8_t footer[SEG_FOOTER_FIXED + ENG_NCOLS * SEG_COLDIR];
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
    if (s->info.version != SEG_VERSION)
        return NS_E_VERSION;
    if ((rc = seg_pread(s, s->info.file_size - SEG_TRAILER, SEG_TRAILER, trailer)) < 0)
        return rc;
    if (memcmp(trailer + 16, SEG_END, 8) != 0)
        return NS_E_TRUNC; /* a file cut short has lost its end marker */
    ns_cur tc = ns_cur_make(trailer, 16);
    ns_cur_le64(&tc, &flen);
    ns_cur_le64(&tc, &fsum);
    if (flen < SEG_FOOTER_FIXED || flen > sizeof footer ||
        flen > s->info.file_size - SEG_TRAILER - SEG_HDR)
        return NS_E_CORRUPT;
    uint64_t foff = s->info.file_size - SEG_TRAILER - flen;
    if ((rc = seg_pread(s, foff, (size_t)flen, footer)) < 0)
        return rc;
    if (XXH64(footer, (size_t)flen, 0) != fsum)
        return NS_E_CORRUPT;

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
    if (s->info.rows > SEG_MAX_ROWS || s->info.ncols != ENG_NCOLS ||
        (uint64_t)s->info.ncols * SEG_COLDIR != f.left)
        return NS_E_CORRUPT;
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
            ci->csize > foff - ci->offset || ci->rsize > s->info.rows * 16 + 16)
            return NS_E_CORRUPT;
    }
    return 0;
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
    free(s);
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

int eng_seg_read(eng_seg *s, uint32_t colmask, eng_flow *rows)
{
    size_t n = (size_t)s->info.rows;
    uint8_t *raw = NULL;
    int rc = 0;
    if (colmask & ENG_COLMASK(ENG_COL_LAST))
        colmask |= ENG_COLMASK(ENG_COL_FIRST); /* last is stored relative to first */
    memset(rows, 0, n * sizeof *rows);
    raw = malloc(n * 16 + 16);
    if (!raw)
        return NS_E_NOMEM;
    for (uint32_t i = 0; i < s->info.ncols; i++) {
        uint8_t *comp;
        if (!(colmask & ENG_COLMASK(i)))
            continue;
        if ((rc = seg_load_col(s, i, &comp)) < 0)
            break;
        const eng_seg_colinfo *ci = &s->cols[i];
        size_t got = ZSTD_decompress(raw, n * 16 + 16, comp, (size_t)ci->csize);
        free(comp);
        if (ZSTD_isError(got) || got != ci->rsize) {
            rc = NS_E_CORRUPT;
            break;
        }
        if ((rc = col_decode((eng_col)i, ci->encoding, raw, got, rows, n)) < 0)
            break;
    }
    free(raw);
    return rc;
}

int eng_seg_decode_mem(const uint8_t *buf, size_t len, eng_flow **rows_out, size_t *n_out)
{
    eng_seg s = {.fd = -1, .mem = buf};
    eng_flow *rows;
    int rc;
    s.info.file_size = len;
    if ((rc = seg_load_footer(&s)) < 0)
        return rc;
    rows = malloc((size_t)(s.info.rows ? s.info.rows : 1) * sizeof *rows);
    if (!rows)
        return NS_E_NOMEM;
    if ((rc = eng_seg_read(&s, ENG_COLS_ALL, rows)) < 0) {
        free(rows);
        return rc;
    }
    *rows_out = rows;
    *n_out = (size_t)s.info.rows;
    return 0;
}
