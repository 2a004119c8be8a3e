/* engine/wal.c — the write-ahead log's file format: encoding rows into checksummed records,
 * creating and appending WAL files, and reading them back at start-up up to the last good
 * record. engine/db.c decides when to write, fsync, replay and delete (docs/architecture.md).
 *
 * Rows are written field by field in a fixed little-endian layout (133 bytes a row), never as
 * the in-memory struct, so a WAL outlives a compiler or padding change. A record's checksum
 * covers its header and payload: a torn write at a crash, or a flipped byte, ends the replay at
 * that record instead of feeding garbage into the store. */
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
#define WAL_ENC_BLOCK 64u       /* rows encoded before their checksum is summed (8.5 KB) */

size_t eng__wal_rec_size(size_t n)
{
    return ENG_WAL_REC_HDR + n * ENG_WAL_ROW;
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
 * below keep it so), the first 129 bytes of a row are the struct's own: one copy instead of
 * thirty stores. The format stays the fixed one either way. */
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

static inline void row_encode(uint8_t *p, const eng_flow *r)
{
#ifdef WAL_ROW_COPY
    memcpy(p, r, WAL_ROW_COPY);
    ns_put_le16(p + 129, r->vlan);
    p[131] = r->direction;
    p[132] = r->flow_type;
#else
    eng__wal_row_encode_fields(p, r);
#endif
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

static uint64_t rec_checksum(const uint8_t *hdr16, const uint8_t *payload, size_t len)
{
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    XXH64_update(&st, hdr16, 16);
    XXH64_update(&st, payload, len);
    return XXH64_digest(&st);
}

void eng__wal_encode(uint8_t *out, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    uint8_t *payload = out + ENG_WAL_REC_HDR;
    XXH64_state_t st;
    ns_put_le32(out, (uint32_t)(n * ENG_WAL_ROW));
    ns_put_le32(out + 4, (uint32_t)n);
    ns_put_le64(out + 8, (uint64_t)recv_ms);
    /* rec_checksum's value, summed a block at a time while the block is in cache: a burst's
     * record (4 MB) read back whole after encoding came from L3 */
    XXH64_reset(&st, 0);
    XXH64_update(&st, out, 16);
    for (size_t i = 0; i < n; i += WAL_ENC_BLOCK) {
        size_t k = n - i < WAL_ENC_BLOCK ? n - i : WAL_ENC_BLOCK;
        uint8_t *p = payload + i * ENG_WAL_ROW;
        for (size_t j = 0; j < k; j++)
            row_encode(p + j * ENG_WAL_ROW, &rows[i + j]);
        XXH64_update(&st, p, k * ENG_WAL_ROW);
    }
    ns_put_le64(out + 16, XXH64_digest(&st));
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
    ns_put_le32(hdr + 12, ENG_WAL_ROW);
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
    if (version != ENG_WAL_VERSION || rowsize != ENG_WAL_ROW) {
        rc = NS_E_VERSION;
        goto out;
    }
    sc->minute = (int64_t)minute;
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
        if (n == 0 || n > ENG_WAL_MAX_ROWS || (uint64_t)len != (uint64_t)n * ENG_WAL_ROW) {
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
        if (rec_checksum(rh, payload, len) != sum) {
            sc->tail_rc = NS_E_CORRUPT;
            break;
        }
        ns_cur pc = ns_cur_make(payload, len);
        for (size_t done = 0; done < n;) {
            size_t k = n - done < RBUF_ROWS ? n - done : RBUF_ROWS;
            for (size_t i = 0; i < k; i++)
                row_decode(&pc, &rows[i]); /* cannot fail: len == n * row size */
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
