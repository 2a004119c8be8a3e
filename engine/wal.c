/* engine/wal.c — the write-ahead log's file format: encoding rows into checksummed records,
 * creating and appending WAL files, and reading them back at start-up up to the last good
 * record. engine/db.c decides when to write, fsync, replay and delete (docs/architecture.md).
 *
 * Rows are written field by field in a fixed little-endian layout, never as the in-memory
 * struct, so a WAL outlives a compiler or padding change. Version 2 (written) gives each row a
 * flags byte and stores IPv4 addresses, times near the record's and 32-bit counters short (70
 * bytes for a typical IPv4 row instead of 133): the WAL's cost is its bytes (encoding, checksum,
 * the kernel's copy into the page cache, truncation at delete), and half the bytes halve it.
 * Version 1 (133 bytes a row, XXH64) is still read. A record's checksum covers its header and
 * payload: a torn write at a crash, or a flipped byte, ends the replay at that record instead of
 * feeding garbage into the store. */
#include "engine/wal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

#define WAL_MAGIC     "NS2FWAL" /* 8 bytes with its NUL */
#define RBUF_ROWS     4096u     /* rows decoded per callback */
#define WAL_ENC_BLOCK 64u       /* rows encoded before their checksum is summed (<= 8.6 KB) */

size_t eng__wal_rec_size(size_t n)
{
    return ENG_WAL_REC_HDR + n * ENG_WAL_ROW2_MAX;
}

static uint8_t *put_addr(uint8_t *p, const ns_addr *a)
{
    memcpy(p, a->b, 16);
    return p + 16;
}

/* The row in the WAL's fixed layout, field by field (the reference the copy below must equal;
 * test_engine_wal.c compares them). */
void eng__wal_row_encode_fields(uint8_t *p, const eng_flow *r)
{
    ns_put_le64(p, (uint64_t)r->first_ms);
    ns_put_le64(p + 8, (uint64_t)r->last_ms);
    ns_put_le64(p + 16, r->packets);
    ns_put_le64(p + 24, r->bytes);
    p = put_addr(p + 32, &r->exporter);
    p = put_addr(p, &r->src);
    p = put_addr(p, &r->dst);
    p = put_addr(p, &r->nexthop);
    ns_put_le32(p, r->src_as);
    ns_put_le32(p + 4, r->dst_as);
    ns_put_le32(p + 8, r->in_if);
    ns_put_le32(p + 12, r->out_if);
    ns_put_le32(p + 16, r->sampling);
    ns_put_le32(p + 20, r->source_id);
    ns_put_le16(p + 24, r->src_port);
    ns_put_le16(p + 26, r->dst_port);
    p[28] = r->proto;
    p[29] = r->tcp_flags;
    p[30] = r->tos;
    p[31] = r->src_mask;
    p[32] = r->dst_mask;
    ns_put_le16(p + 33, r->vlan);
    p[35] = r->direction;
    p[36] = r->flow_type; /* 32 + 64 + 37 = 133 */
}

/* On a little-endian host whose eng_flow has the WAL row's layout up to dst_mask (the asserts
 * below keep it so), the row's bytes from src_as to dst_mask are the struct's own: one copy
 * instead of thirteen stores. The format stays the fixed one either way. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WAL_ROW_COPY 129u
_Static_assert(offsetof(eng_flow, first_ms) == 0 && offsetof(eng_flow, last_ms) == 8 &&
                   offsetof(eng_flow, packets) == 16 && offsetof(eng_flow, bytes) == 24 &&
                   offsetof(eng_flow, exporter) == 32 && offsetof(eng_flow, src) == 48 &&
                   offsetof(eng_flow, dst) == 64 && offsetof(eng_flow, nexthop) == 80 &&
                   offsetof(eng_flow, src_as) == 96 && offsetof(eng_flow, dst_as) == 100 &&
                   offsetof(eng_flow, in_if) == 104 && offsetof(eng_flow, out_if) == 108 &&
                   offsetof(eng_flow, sampling) == 112 && offsetof(eng_flow, source_id) == 116 &&
                   offsetof(eng_flow, src_port) == 120 && offsetof(eng_flow, dst_port) == 122 &&
                   offsetof(eng_flow, proto) == 124 && offsetof(eng_flow, tcp_flags) == 125 &&
                   offsetof(eng_flow, tos) == 126 && offsetof(eng_flow, src_mask) == 127 &&
                   offsetof(eng_flow, dst_mask) == 128,
               "eng_flow no longer starts with the WAL row's layout: drop WAL_ROW_COPY");
#endif

/* Version 2 rows. Flags, then the times, the counters and the four addresses (exporter, src,
 * dst, nexthop) each in their short or long form, then the 37 bytes of v1's offsets 96..132. */
enum { W2_ADDR4 = 1, W2_TIME32 = 2, W2_CNT32 = 4 };
#define W2_TAIL 37u

/* ::ffff:a.b.c.d */
static inline bool is_v4m(const ns_addr *a)
{
    uint64_t lo;
    uint32_t mid;
    memcpy(&lo, a->b, 8);
    memcpy(&mid, a->b + 8, 4);
    return lo == 0 && mid == ns_get_le32((const uint8_t[4]){0, 0, 0xff, 0xff});
}

/* v - base as a 32-bit signed value, if it is one */
static inline bool fits32(int64_t v, int64_t base, int32_t *out)
{
    uint64_t d = (uint64_t)v - (uint64_t)base; /* wraps instead of overflowing */
    int32_t d32 = (int32_t)(uint32_t)d;
    *out = d32;
    return (uint64_t)(int64_t)d32 == d;
}

static inline uint8_t *put_tail(uint8_t *p, const eng_flow *r)
{
#ifdef WAL_ROW_COPY
    memcpy(p, &r->src_as, 33); /* src_as .. dst_mask: the struct's bytes 96..128 */
#else
    ns_put_le32(p, r->src_as);
    ns_put_le32(p + 4, r->dst_as);
    ns_put_le32(p + 8, r->in_if);
    ns_put_le32(p + 12, r->out_if);
    ns_put_le32(p + 16, r->sampling);
    ns_put_le32(p + 20, r->source_id);
    ns_put_le16(p + 24, r->src_port);
    ns_put_le16(p + 26, r->dst_port);
    p[28] = r->proto;
    p[29] = r->tcp_flags;
    p[30] = r->tos;
    p[31] = r->src_mask;
    p[32] = r->dst_mask;
#endif
    ns_put_le16(p + 33, r->vlan);
    p[35] = r->direction;
    p[36] = r->flow_type;
    return p + W2_TAIL;
}

/* Writes one version 2 row at p; returns its length (ENG_WAL_ROW2_MIN .. ENG_WAL_ROW2_MAX). */
static inline size_t row_encode2(uint8_t *p, const eng_flow *r, int64_t recv_ms)
{
    uint8_t *q = p + 1, fl = 0;
    int32_t f32, l32;
    if (fits32(r->first_ms, recv_ms, &f32) && fits32(r->last_ms, recv_ms, &l32)) {
        fl |= W2_TIME32;
        ns_put_le32(q, (uint32_t)f32);
        ns_put_le32(q + 4, (uint32_t)l32);
        q += 8;
    } else {
        ns_put_le64(q, (uint64_t)r->first_ms);
        ns_put_le64(q + 8, (uint64_t)r->last_ms);
        q += 16;
    }
    if ((r->packets | r->bytes) >> 32 == 0) {
        fl |= W2_CNT32;
        ns_put_le32(q, (uint32_t)r->packets);
        ns_put_le32(q + 4, (uint32_t)r->bytes);
        q += 8;
    } else {
        ns_put_le64(q, r->packets);
        ns_put_le64(q + 8, r->bytes);
        q += 16;
    }
    if (is_v4m(&r->exporter) && is_v4m(&r->src) && is_v4m(&r->dst) && is_v4m(&r->nexthop)) {
        fl |= W2_ADDR4;
        memcpy(q, r->exporter.b + 12, 4);
        memcpy(q + 4, r->src.b + 12, 4);
        memcpy(q + 8, r->dst.b + 12, 4);
        memcpy(q + 12, r->nexthop.b + 12, 4);
        q += 16;
    } else {
        q = put_addr(q, &r->exporter);
        q = put_addr(q, &r->src);
        q = put_addr(q, &r->dst);
        q = put_addr(q, &r->nexthop);
    }
    q = put_tail(q, r);
    p[0] = fl;
    return (size_t)(q - p);
}

static bool get_addr2(ns_cur *c, bool v4, ns_addr *a)
{
    if (!v4)
        return ns_cur_bytes(c, a->b, 16);
    uint8_t v[4];
    if (!ns_cur_bytes(c, v, 4))
        return false;
    memset(a->b, 0, 10);
    a->b[10] = a->b[11] = 0xff;
    memcpy(a->b + 12, v, 4);
    return true;
}

/* Reads one version 2 row; false if the payload ends inside it or its flags are unknown. */
static bool row_decode2(ns_cur *c, int64_t recv_ms, eng_flow *r)
{
    uint8_t fl;
    memset(r, 0, sizeof *r);
    if (!ns_cur_u8(c, &fl) || (fl & ~(W2_ADDR4 | W2_TIME32 | W2_CNT32)) != 0)
        return false;
    if (fl & W2_TIME32) {
        uint32_t f, l;
        if (!ns_cur_le32(c, &f) || !ns_cur_le32(c, &l))
            return false;
        r->first_ms = (int64_t)((uint64_t)recv_ms + (uint64_t)(int64_t)(int32_t)f);
        r->last_ms = (int64_t)((uint64_t)recv_ms + (uint64_t)(int64_t)(int32_t)l);
    } else {
        uint64_t f, l;
        if (!ns_cur_le64(c, &f) || !ns_cur_le64(c, &l))
            return false;
        r->first_ms = (int64_t)f;
        r->last_ms = (int64_t)l;
    }
    if (fl & W2_CNT32) {
        uint32_t pk, by;
        if (!ns_cur_le32(c, &pk) || !ns_cur_le32(c, &by))
            return false;
        r->packets = pk;
        r->bytes = by;
    } else if (!ns_cur_le64(c, &r->packets) || !ns_cur_le64(c, &r->bytes)) {
        return false;
    }
    bool v4 = fl & W2_ADDR4;
    return get_addr2(c, v4, &r->exporter) && get_addr2(c, v4, &r->src) &&
           get_addr2(c, v4, &r->dst) && get_addr2(c, v4, &r->nexthop) &&
           ns_cur_le32(c, &r->src_as) && ns_cur_le32(c, &r->dst_as) && ns_cur_le32(c, &r->in_if) &&
           ns_cur_le32(c, &r->out_if) && ns_cur_le32(c, &r->sampling) &&
           ns_cur_le32(c, &r->source_id) && ns_cur_le16(c, &r->src_port) &&
           ns_cur_le16(c, &r->dst_port) && ns_cur_u8(c, &r->proto) && ns_cur_u8(c, &r->tcp_flags) &&
           ns_cur_u8(c, &r->tos) && ns_cur_u8(c, &r->src_mask) && ns_cur_u8(c, &r->dst_mask) &&
           ns_cur_le16(c, &r->vlan) && ns_cur_u8(c, &r->direction) && ns_cur_u8(c, &r->flow_type);
}

static bool row_decode(ns_cur *c, eng_flow *r)
{
    uint64_t f, l;
    memset(r, 0, sizeof *r);
    return ns_cur_le64(c, &f) && ns_cur_le64(c, &l) && ns_cur_le64(c, &r->packets) &&
           ns_cur_le64(c, &r->bytes) && ns_cur_bytes(c, r->exporter.b, 16) &&
           ns_cur_bytes(c, r->src.b, 16) && ns_cur_bytes(c, r->dst.b, 16) &&
           ns_cur_bytes(c, r->nexthop.b, 16) && ns_cur_le32(c, &r->src_as) &&
           ns_cur_le32(c, &r->dst_as) && ns_cur_le32(c, &r->in_if) && ns_cur_le32(c, &r->out_if) &&
           ns_cur_le32(c, &r->sampling) && ns_cur_le32(c, &r->source_id) &&
           ns_cur_le16(c, &r->src_port) && ns_cur_le16(c, &r->dst_port) &&
           ns_cur_u8(c, &r->proto) && ns_cur_u8(c, &r->tcp_flags) && ns_cur_u8(c, &r->tos) &&
           ns_cur_u8(c, &r->src_mask) && ns_cur_u8(c, &r->dst_mask) && ns_cur_le16(c, &r->vlan) &&
           ns_cur_u8(c, &r->direction) && ns_cur_u8(c, &r->flow_type) &&
           (r->first_ms = (int64_t)f, r->last_ms = (int64_t)l, true);
}

/* A record's checksum. Version 1: XXH64 (seed 0) of the header's bytes 0..15, then the payload.
 * Version 2: XXH3-64 of the payload, then the header's bytes 0..15 (the encoder sums the rows
 * as it writes them, before it knows the length the header starts with). */
uint64_t eng__wal_rec_checksum(uint32_t version, const uint8_t *hdr16, const uint8_t *payload,
                               size_t len)
{
    if (version == 1) {
        XXH64_state_t st;
        XXH64_reset(&st, 0);
        XXH64_update(&st, hdr16, 16);
        XXH64_update(&st, payload, len);
        return XXH64_digest(&st);
    }
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, payload, len);
    XXH3_64bits_update(&st, hdr16, 16);
    return XXH3_64bits_digest(&st);
}

size_t eng__wal_encode(uint8_t *out, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    uint8_t *payload = out + ENG_WAL_REC_HDR, *p = payload;
    XXH3_state_t st;
    /* eng__wal_rec_checksum's value, summed a block at a time while the block is in cache: a
     * burst's record (2 MB) read back whole after encoding came from L3 */
    XXH3_64bits_reset(&st);
    for (size_t i = 0; i < n; i += WAL_ENC_BLOCK) {
        size_t k = n - i < WAL_ENC_BLOCK ? n - i : WAL_ENC_BLOCK;
        uint8_t *b = p;
        for (size_t j = 0; j < k; j++)
            p += row_encode2(p, &rows[i + j], recv_ms);
        XXH3_64bits_update(&st, b, (size_t)(p - b));
    }
    size_t len = (size_t)(p - payload);
    ns_put_le32(out, (uint32_t)len);
    ns_put_le32(out + 4, (uint32_t)n);
    ns_put_le64(out + 8, (uint64_t)recv_ms);
    XXH3_64bits_update(&st, out, 16);
    ns_put_le64(out + 16, XXH3_64bits_digest(&st));
    return ENG_WAL_REC_HDR + len;
}

static int write_all(int fd, uint64_t off, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        off += (uint64_t)w;
        len -= (size_t)w;
    }
    return 0;
}

int eng__wal_write(int fd, uint64_t off, const void *buf, size_t len)
{
    int rc = write_all(fd, off, buf, len);
    if (rc < 0 && ftruncate(fd, (off_t)off) < 0) {
        /* the next write lands at off again and overwrites the partial record; if it never
         * comes, replay cuts the torn tail */
    }
    return rc;
}

int eng__wal_create(const char *path, int64_t minute, uint64_t seq, int *fd_out)
{
    uint8_t hdr[ENG_WAL_HDR] = {0};
    memcpy(hdr, WAL_MAGIC, 8);
    ns_put_le32(hdr + 8, ENG_WAL_VERSION);
    ns_put_le32(hdr + 12, 0); /* version 2: rows of varying length */
    ns_put_le64(hdr + 16, (uint64_t)minute);
    ns_put_le64(hdr + 24, seq);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, 0, hdr, sizeof hdr);
    if (rc < 0) {
        close(fd);
        unlink(path);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

bool eng__wal_name_parse(const char *name, int64_t *minute, uint64_t *seq)
{
    long long m;
    unsigned long long s;
    int used = 0;
    if (sscanf(name, "m%lld-%llu.wal%n", &m, &s, &used) != 2 || name[used] != 0)
        return false;
    *minute = m;
    *seq = s;
    return true;
}

/* Reads exactly len bytes; returns len, fewer at end of file, or -errno. */
static ssize_t read_full(int fd, uint8_t *p, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int eng__wal_read(const char *path, eng__wal_cb cb, void *arg, eng__wal_scan *sc)
{
    uint8_t hdr[ENG_WAL_HDR];
    uint8_t *payload = NULL;
    eng_flow *rows = NULL;
    size_t cap = 0;
    struct stat st;
    int rc = 0;
    memset(sc, 0, sizeof *sc);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    sc->file_len = (uint64_t)st.st_size;
    ssize_t r = read_full(fd, hdr, sizeof hdr);
    if (r < 0) {
        rc = (int)r;
        goto out;
    }
    if ((size_t)r < sizeof hdr) {
        rc = NS_E_TRUNC;
        goto out;
    }
    ns_cur c = ns_cur_make(hdr, sizeof hdr);
    uint32_t version, rowsize;
    uint64_t minute;
    if (memcmp(hdr, WAL_MAGIC, 8) != 0) {
        rc = NS_E_MAGIC;
        goto out;
    }
    ns_cur_skip(&c, 8);
    ns_cur_le32(&c, &version);
    ns_cur_le32(&c, &rowsize);
    ns_cur_le64(&c, &minute);
    ns_cur_le64(&c, &sc->seq);
    if (!(version == 1 && rowsize == ENG_WAL_ROW) && !(version == 2 && rowsize == 0)) {
        rc = NS_E_VERSION;
        goto out;
    }
    sc->minute = (int64_t)minute;
    sc->version = version;
    sc->good_len = ENG_WAL_HDR;
    rows = malloc(RBUF_ROWS * sizeof *rows);
    if (!rows) {
        rc = NS_E_NOMEM;
        goto out;
    }
    for (;;) {
        uint8_t rh[ENG_WAL_REC_HDR];
        uint32_t len, n;
        uint64_t recv, sum;
        r = read_full(fd, rh, sizeof rh);
        if (r < 0) {
            rc = (int)r;
            goto out;
        }
        if (r == 0)
            break; /* clean end */
        if ((size_t)r < sizeof rh) {
            sc->tail_rc = NS_E_TRUNC;
            break;
        }
        c = ns_cur_make(rh, sizeof rh);
        ns_cur_le32(&c, &len);
        ns_cur_le32(&c, &n);
        ns_cur_le64(&c, &recv);
        ns_cur_le64(&c, &sum);
        bool len_ok = version == 1 ? (uint64_t)len == (uint64_t)n * ENG_WAL_ROW
                                   : (uint64_t)len >= (uint64_t)n * ENG_WAL_ROW2_MIN &&
                                         (uint64_t)len <= (uint64_t)n * ENG_WAL_ROW2_MAX;
        if (n == 0 || n > ENG_WAL_MAX_ROWS || !len_ok) {
            sc->tail_rc = NS_E_CORRUPT;
            break;
        }
        uint64_t left = sc->file_len > sc->good_len + ENG_WAL_REC_HDR
                            ? sc->file_len - sc->good_len - ENG_WAL_REC_HDR
                            : 0;
        if (len > left) {
            sc->tail_rc = NS_E_TRUNC; /* declared longer than what is left: a torn write */
            break;
        }
        if (len > cap) {
            uint8_t *np = realloc(payload, len);
            if (!np) {
                rc = NS_E_NOMEM;
                goto out;
            }
            payload = np;
            cap = len;
        }
        r = read_full(fd, payload, len);
        if (r < 0) {
            rc = (int)r;
            goto out;
        }
        if ((size_t)r < len) {
            sc->tail_rc = NS_E_TRUNC;
            break;
        }
        if (eng__wal_rec_checksum(version, rh, payload, len) != sum) {
            sc->tail_rc = NS_E_CORRUPT;
            break;
        }
        /* a version 2 record whose rows do not fill its payload exactly is corrupt: checked
         * before any of its rows is handed on, so a record is replayed whole or not at all */
        ns_cur pc = ns_cur_make(payload, len);
        bool rows_ok = true;
        for (uint32_t i = 0; version == 2 && i < n && rows_ok; i++)
            rows_ok = row_decode2(&pc, (int64_t)recv, &rows[0]);
        if (!rows_ok || (version == 2 && pc.left != 0)) {
            sc->tail_rc = NS_E_CORRUPT;
            break;
        }
        pc = ns_cur_make(payload, len);
        for (size_t done = 0; done < n;) {
            size_t k = n - done < RBUF_ROWS ? n - done : RBUF_ROWS;
            for (size_t i = 0; i < k; i++) /* cannot fail: checked above, or len == n * 133 */
                version == 1 ? row_decode(&pc, &rows[i])
                             : row_decode2(&pc, (int64_t)recv, &rows[i]);
            if (cb && (rc = cb(arg, (int64_t)recv, rows, k)) != 0)
                goto out;
            done += k;
        }
        sc->good_len += ENG_WAL_REC_HDR + len;
        sc->records++;
        sc->rows += n;
    }
out:
    free(rows);
    free(payload);
    close(fd);
    return rc;
}
