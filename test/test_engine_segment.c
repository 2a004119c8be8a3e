/* Tests of the segment file (engine/segment.c): write/read round trips (0, 1, 100k rows, every
 * field at distinctive and extreme values), column subsets, footer totals, per-column checksums
 * that name the damaged column, footer checksum, forged footers behind a valid checksum,
 * truncation at every length, magic and version checks, the in-memory decoder, and the atomic
 * write (no .tmp left, missing folder). */
#include "engine/store.h"
#include "engine/store_int.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define T0 1704164645123LL /* 2024-01-02T03:04:05.123Z */

/* ---------------------------------------------------------------------------------------------
 * Fixtures: a temp folder per test, rows with distinctive values, file helpers. */

TEST_SCRATCH_SUITE(seg, "seg");

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void addr_of(ns_addr *a, const char *text)
{
    cr_assert(eq(int, ns_addr_parse(text, a), 0), "bad test address %s", text);
}

/* Row i of a generated set: every column differs from row to row, first_ms jumps back and
 * forth around T0, spans from 0 to 5 minutes, every 7th row has IPv6 addresses, every 1000th
 * maximal counters. */
static eng_flow make_row(size_t i)
{
    uint64_t h = mix(i), g = mix(h);
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = T0 + (int64_t)(h % 120000) - 60000;
    f.last_ms = f.first_ms + (i % 5 == 0 ? 0 : (int64_t)(g % 300000));
    f.packets = i % 1000 == 0 ? UINT64_MAX : 1 + (h >> 40);
    f.bytes = i % 1000 == 0 ? UINT64_MAX : 40 + (g >> 24);
    if (i % 7 == 3) {
        for (int k = 0; k < 16; k++) {
            f.src.b[k] = (uint8_t)(h >> (k * 4));
            f.dst.b[k] = (uint8_t)(g >> (k * 4));
            f.exporter.b[k] = (uint8_t)(0x20 + k);
            f.nexthop.b[k] = (uint8_t)(i + (size_t)k);
        }
    } else {
        ns_addr_from_v4(&f.src, (uint32_t)h);
        ns_addr_from_v4(&f.dst, (uint32_t)g);
        ns_addr_from_v4(&f.exporter, 0xc0000200u | (uint32_t)(i % 4));
        ns_addr_from_v4(&f.nexthop, (uint32_t)(h >> 32));
    }
    f.src_as = (uint32_t)(g >> 32);
    f.dst_as = (uint32_t)(h >> 16);
    f.in_if = (uint32_t)i;
    f.out_if = (uint32_t)~i;
    f.sampling = 1 + (uint32_t)(i % 3) * 999;
    f.source_id = (uint32_t)(g >> 8);
    f.src_port = (uint16_t)h;
    f.dst_port = (uint16_t)(g >> 16);
    f.proto = (uint8_t)(h >> 56);
    f.tcp_flags = (uint8_t)(g >> 56);
    f.tos = (uint8_t)(h >> 48);
    f.src_mask = (uint8_t)(i % 129);
    f.dst_mask = (uint8_t)(g % 33);
    f.vlan = (uint16_t)(h >> 4);
    f.direction = (uint8_t)(i % 3);
    f.flow_type = (uint8_t)(g >> 3);
    return f;
}

static eng_flow *make_rows(size_t n)
{
    eng_flow *rows = calloc(n ? n : 1, sizeof *rows);
    cr_assert(rows != NULL);
    for (size_t i = 0; i < n; i++)
        rows[i] = make_row(i);
    return rows;
}

/* Three hand-made rows: IPv4 and IPv6, maximal counters and widths, first times that go
 * backwards, a zero span and a long one. */
static void special_rows(eng_flow r[3])
{
    memset(r, 0, 3 * sizeof *r);
    r[0].first_ms = T0;
    r[0].last_ms = T0 + 59999;
    r[0].packets = UINT64_MAX;
    r[0].bytes = UINT64_MAX - 1;
    addr_of(&r[0].exporter, "192.0.2.1");
    addr_of(&r[0].src, "10.1.2.3");
    addr_of(&r[0].dst, "255.255.255.255");
    addr_of(&r[0].nexthop, "0.0.0.0");
    r[0].src_as = UINT32_MAX;
    r[0].dst_as = 64512;
    r[0].in_if = 0x01020304u;
    r[0].out_if = UINT32_MAX - 7;
    r[0].sampling = 1;
    r[0].source_id = 0x0107;
    r[0].src_port = 65535;
    r[0].dst_port = 0x0800; /* ICMP echo request, type<<8|code */
    r[0].proto = 255;
    r[0].tcp_flags = 0xff;
    r[0].tos = 0xb8;
    r[0].src_mask = 32;
    r[0].dst_mask = 0;
    r[0].vlan = 4095;
    r[0].direction = ENG_DIR_INGRESS;
    r[0].flow_type = ENG_FT_NETFLOW5;

    r[1].first_ms = T0 - 3600000; /* an hour earlier: a negative delta */
    r[1].last_ms = T0 - 3600000;  /* zero span */
    r[1].packets = 1;
    r[1].bytes = 0;
    addr_of(&r[1].exporter, "2001:db8::1");
    addr_of(&r[1].src, "2001:db8:85a3::8a2e:370:7334");
    addr_of(&r[1].dst, "ff02::1");
    addr_of(&r[1].nexthop, "fe80::1");
    r[1].src_as = 0;
    r[1].dst_as = 4200000000u;
    r[1].in_if = 1;
    r[1].out_if = 0;
    r[1].sampling = UINT32_MAX;
    r[1].source_id = UINT32_MAX;
    r[1].src_port = 0;
    r[1].dst_port = 443;
    r[1].proto = 58;
    r[1].tcp_flags = 0;
    r[1].tos = 1;
    r[1].src_mask = 128;
    r[1].dst_mask = 64;
    r[1].vlan = 65535;
    r[1].direction = ENG_DIR_EGRESS;
    r[1].flow_type = ENG_FT_IPFIX;

    r[2].first_ms = 1000; /* far in the past, then a huge span up to after T0 */
    r[2].last_ms = T0 + 86400000;
    r[2].packets = 0x0123456789abcdefULL;
    r[2].bytes = 0xfedcba9876543210ULL;
    addr_of(&r[2].exporter, "::ffff:198.51.100.9");
    addr_of(&r[2].src, "::");
    addr_of(&r[2].dst, "::1");
    addr_of(&r[2].nexthop, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
    r[2].src_as = 13335;
    r[2].dst_as = 15169;
    r[2].in_if = 0x80000000u;
    r[2].out_if = 0x7fffffffu;
    r[2].sampling = 1000;
    r[2].source_id = 0;
    r[2].src_port = 1;
    r[2].dst_port = 256;
    r[2].proto = 6;
    r[2].tcp_flags = 0x12;
    r[2].tos = 0;
    r[2].src_mask = 1;
    r[2].dst_mask = 255;
    r[2].vlan = 0x0100;
    r[2].direction = 255;
    r[2].flow_type = ENG_FT_SFLOW5;
}

/* Name of the first column where a and b differ, or NULL. */
static const char *flow_diff(const eng_flow *a, const eng_flow *b)
{
    if (a->first_ms != b->first_ms)
        return "first_ms";
    if (a->last_ms != b->last_ms)
        return "last_ms";
    if (a->packets != b->packets)
        return "packets";
    if (a->bytes != b->bytes)
        return "bytes";
    if (memcmp(&a->exporter, &b->exporter, 16))
        return "exporter";
    if (memcmp(&a->src, &b->src, 16))
        return "src";
    if (memcmp(&a->dst, &b->dst, 16))
        return "dst";
    if (memcmp(&a->nexthop, &b->nexthop, 16))
        return "nexthop";
    if (a->src_as != b->src_as)
        return "src_as";
    if (a->dst_as != b->dst_as)
        return "dst_as";
    if (a->in_if != b->in_if)
        return "in_if";
    if (a->out_if != b->out_if)
        return "out_if";
    if (a->sampling != b->sampling)
        return "sampling";
    if (a->source_id != b->source_id)
        return "source_id";
    if (a->src_port != b->src_port)
        return "src_port";
    if (a->dst_port != b->dst_port)
        return "dst_port";
    if (a->proto != b->proto)
        return "proto";
    if (a->tcp_flags != b->tcp_flags)
        return "tcp_flags";
    if (a->tos != b->tos)
        return "tos";
    if (a->src_mask != b->src_mask)
        return "src_mask";
    if (a->dst_mask != b->dst_mask)
        return "dst_mask";
    if (a->vlan != b->vlan)
        return "vlan";
    if (a->direction != b->direction)
        return "direction";
    if (a->flow_type != b->flow_type)
        return "flow_type";
    if (a->flows != b->flows)
        return "flows";
    return NULL;
}

static void assert_rows_equal(const eng_flow *got, const eng_flow *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *d = flow_diff(&got[i], &want[i]);
        cr_assert(d == NULL, "row %zu: column %s differs", i, d ? d : "");
    }
}

/* want with only the columns of mask kept (the rest zero), as eng_seg_read fills them. */
static eng_flow only_cols(const eng_flow *in, uint32_t mask)
{
    eng_flow z;
    memset(&z, 0, sizeof z);
    for (int c = 0; c < ENG_NCOLS; c++) {
        if (!(mask & ENG_COLMASK(c)))
            continue;
#define KEEP(col, field)                                                                           \
    case col:                                                                                      \
        z.field = in->field;                                                                       \
        break
        switch ((eng_col)c) {
            KEEP(ENG_COL_FIRST, first_ms);
            KEEP(ENG_COL_LAST, last_ms);
            KEEP(ENG_COL_PACKETS, packets);
            KEEP(ENG_COL_BYTES, bytes);
            KEEP(ENG_COL_EXPORTER, exporter);
            KEEP(ENG_COL_SRC, src);
            KEEP(ENG_COL_DST, dst);
            KEEP(ENG_COL_NEXTHOP, nexthop);
            KEEP(ENG_COL_SRC_AS, src_as);
            KEEP(ENG_COL_DST_AS, dst_as);
            KEEP(ENG_COL_IN_IF, in_if);
            KEEP(ENG_COL_OUT_IF, out_if);
            KEEP(ENG_COL_SAMPLING, sampling);
            KEEP(ENG_COL_SOURCE_ID, source_id);
            KEEP(ENG_COL_SRC_PORT, src_port);
            KEEP(ENG_COL_DST_PORT, dst_port);
            KEEP(ENG_COL_PROTO, proto);
            KEEP(ENG_COL_TCP_FLAGS, tcp_flags);
            KEEP(ENG_COL_TOS, tos);
            KEEP(ENG_COL_SRC_MASK, src_mask);
            KEEP(ENG_COL_DST_MASK, dst_mask);
            KEEP(ENG_COL_VLAN, vlan);
            KEEP(ENG_COL_DIRECTION, direction);
            KEEP(ENG_COL_FLOW_TYPE, flow_type);
            KEEP(ENG_COL_FLOWS, flows);
        case ENG_NCOLS:
            break;
        }
#undef KEEP
    }
    return z;
}

static uint32_t le32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes rows as a segment, reads every column back and checks rows and info. */
static void round_trip(const eng_flow *rows, size_t n)
{
    const char *path = tpath("rt.seg");
    eng_seg *s = NULL;
    cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    const eng_seg_info *in = eng_seg_get_info(s);
    struct stat st;
    cr_assert(eq(int, stat(path, &st), 0));
    size_t flen;
    uint8_t *file = test_slurp(path, &flen);
    cr_assert(eq(u32, in->version, le32_at(file + 8))); /* what the header says */
    cr_assert(ge(u32, in->version, 1));
    free(file);
    cr_assert(eq(u64, in->rows, n));
    cr_assert(eq(u32, in->ncols, ENG_NCOLS));
    cr_assert(eq(u64, in->file_size, (uint64_t)st.st_size));
    int64_t lo = n ? INT64_MAX : 0, hi = n ? INT64_MIN : 0;
    uint64_t pk = 0, by = 0; /* totals wrap like the writer's */
    for (size_t i = 0; i < n; i++) {
        lo = rows[i].first_ms < lo ? rows[i].first_ms : lo;
        hi = rows[i].last_ms > hi ? rows[i].last_ms : hi;
        pk += rows[i].packets;
        by += rows[i].bytes;
    }
    cr_assert(eq(i64, in->first_ms, lo));
    cr_assert(eq(i64, in->last_ms, hi));
    cr_assert(eq(u64, in->packets, pk));
    cr_assert(eq(u64, in->bytes, by));
    for (uint32_t c = 0; c < ENG_NCOLS; c++)
        cr_assert(eq(int, eng_seg_verify_col(s, c), 0), "column %s", eng_col_name((eng_col)c));
    eng_flow *got = malloc((n ? n : 1) * sizeof *got);
    cr_assert(got != NULL);
    memset(got, 0xa5, (n ? n : 1) * sizeof *got);
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
    assert_rows_equal(got, rows, n);
    free(got);
    eng_seg_close(s);
}

/* ---------------------------------------------------------------------------------------------
 * Round trips */

Test(seg, every_field_round_trips_with_distinctive_values)
{
    eng_flow r[3];
    special_rows(r);
    round_trip(r, 3);
}

Test(seg, zero_rows)
{
    const char *path = tpath("empty.seg");
    eng_seg *s = NULL;
    eng_flow dummy;
    cr_assert(eq(int, eng_seg_write(path, NULL, 0), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    const eng_seg_info *in = eng_seg_get_info(s);
    cr_assert(eq(u64, in->rows, 0));
    cr_assert(eq(i64, in->first_ms, 0));
    cr_assert(eq(i64, in->last_ms, 0));
    cr_assert(eq(u64, in->packets, 0));
    cr_assert(eq(u64, in->bytes, 0));
    for (uint32_t c = 0; c < ENG_NCOLS; c++)
        cr_assert(eq(int, eng_seg_verify_col(s, c), 0));
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, &dummy), 0));
    eng_seg_close(s);

    size_t len, n = 99;
    uint8_t *buf = test_slurp(path, &len);
    eng_flow *rows = NULL;
    cr_assert(eq(int, eng_seg_decode_mem(buf, len, &rows, &n), 0));
    cr_assert(eq(sz, n, 0));
    free(rows);
    free(buf);
}

Test(seg, one_row)
{
    eng_flow r[3];
    special_rows(r);
    round_trip(&r[1], 1);
    round_trip(&r[2], 1);
}

Test(seg, hundred_thousand_rows)
{
    const size_t n = 100000;
    eng_flow *rows = make_rows(n);
    round_trip(rows, n);
    free(rows);
}

/* Times at the ends of int64: the deltas and spans between them do not fit an int64, so the
 * encoder subtracts modulo 2^64 as the decoder adds (once signed overflow, caught by UBSan). */
Test(seg, extreme_times_round_trip)
{
    eng_flow r[4];
    memset(r, 0, sizeof r);
    r[0].first_ms = INT64_MAX;
    r[0].last_ms = INT64_MAX;
    r[1].first_ms = INT64_MIN;
    r[1].last_ms = INT64_MAX;
    r[2].first_ms = -1;
    r[2].last_ms = 0;
    r[3].first_ms = INT64_MAX - 1;
    r[3].last_ms = INT64_MAX;
    round_trip(r, 4);
}

Test(seg, subsets_of_columns_leave_the_others_zero)
{
    const size_t n = 500;
    const char *path = tpath("sub.seg");
    eng_flow *rows = make_rows(n), *got = calloc(n, sizeof *got);
    eng_seg *s;
    cr_assert(got != NULL);
    cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    const uint32_t masks[] = {
        0,
        ENG_COLMASK(ENG_COL_BYTES),
        ENG_COLMASK(ENG_COL_FIRST),
        ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST_PORT) | ENG_COLMASK(ENG_COL_PROTO),
        ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST) | ENG_COLMASK(ENG_COL_EXPORTER),
        ENG_COLS_ALL & ~(ENG_COLMASK(ENG_COL_LAST) | ENG_COLMASK(ENG_COL_NEXTHOP)),
        ENG_COLMASK(ENG_COL_DST_MASK) | ENG_COLMASK(ENG_COL_TOS) | ENG_COLMASK(ENG_COL_SAMPLING),
    };
    for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
        memset(got, 0xa5, n * sizeof *got);
        cr_assert(eq(int, eng_seg_read(s, masks[m], got), 0), "mask %#x", masks[m]);
        for (size_t i = 0; i < n; i++) {
            eng_flow want = only_cols(&rows[i], masks[m]);
            const char *d = flow_diff(&got[i], &want);
            cr_assert(d == NULL, "mask %#x row %zu: column %s", masks[m], i, d ? d : "");
        }
    }
    /* last_ms is stored relative to first_ms, so asking for last alone fills first too */
    cr_assert(eq(int, eng_seg_read(s, ENG_COLMASK(ENG_COL_LAST), got), 0));
    for (size_t i = 0; i < n; i++) {
        eng_flow want = only_cols(&rows[i], ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST));
        const char *d = flow_diff(&got[i], &want);
        cr_assert(d == NULL, "last only, row %zu: column %s", i, d ? d : "");
    }
    eng_seg_close(s);
    free(rows);
    free(got);
}

/* The open minutes' rows turned into columns for a scan (eng__colset_from_rows, a block of
 * rows at a time) and back through a column view: each asked column as it was, the rest zero,
 * at sizes around the block's 128 rows. */
Test(seg, rows_to_columns_and_back_for_every_mask_and_block_edge)
{
    const size_t sizes[] = {0, 1, 127, 128, 129, 1000};
    const uint32_t masks[] = {
        ENG_COLS_ALL,
        ENG_COLMASK(ENG_COL_BYTES),
        ENG_COLMASK(ENG_COL_SRC) | ENG_COLMASK(ENG_COL_DST_PORT) | ENG_COLMASK(ENG_COL_PROTO),
        ENG_COLMASK(ENG_COL_FIRST) | ENG_COLMASK(ENG_COL_LAST) | ENG_COLMASK(ENG_COL_EXPORTER),
        ENG_COLS_ALL & ~(ENG_COLMASK(ENG_COL_LAST) | ENG_COLMASK(ENG_COL_NEXTHOP)),
        ENG_COLMASK(ENG_COL_DST_MASK) | ENG_COLMASK(ENG_COL_VLAN) | ENG_COLMASK(ENG_COL_SAMPLING),
    };
    eng_flow *rows = make_rows(1000), *got = calloc(1000, sizeof *got);
    cr_assert(got != NULL);
    eng_colset cs = {0};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
        for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
            size_t n = sizes[z];
            cr_assert(eq(int, eng__colset_from_rows(&cs, rows, n, masks[m]), 0));
            cr_assert(eq(sz, cs.n, n));
            cr_assert(eq(u32, cs.mask, masks[m]));
            eng_colview v = {.n = n, .mask = cs.mask};
            for (size_t c = 0; c < ENG_NCOLS; c++)
                v.col[c] = cs.col[c];
            memset(got, 0xa5, 1000 * sizeof *got);
            eng_colview_rows(&v, 0, n, got);
            for (size_t i = 0; i < n; i++) {
                eng_flow want = only_cols(&rows[i], masks[m]);
                const char *d = flow_diff(&got[i], &want);
                cr_assert(d == NULL, "n %zu mask %#x row %zu: column %s", n, masks[m], i,
                          d ? d : "");
            }
        }
    eng__colset_free(&cs);
    free(rows);
    free(got);
}

Test(seg, column_directory_describes_the_blobs)
{
    const size_t n = 1000;
    const char *path = tpath("dir.seg");
    eng_flow *rows = make_rows(n);
    eng_seg *s;
    cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    uint64_t expect_off = 16; /* blobs follow the 16-byte header back to back */
    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        const eng_seg_colinfo *ci = eng_seg_col(s, c);
        cr_assert(ci != NULL);
        cr_assert(eq(u32, ci->id, c));
        cr_assert(eq(u64, ci->offset, expect_off), "column %s", eng_col_name((eng_col)c));
        cr_assert(ci->csize > 0);
        expect_off += ci->csize;
    }
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_SRC)->type, 16));
    cr_assert(eq(u32, eng_seg_col(s, ENG_COL_PROTO)->type, 1));
    cr_assert(eq(u64, eng_seg_col(s, ENG_COL_SRC_PORT)->rsize, 2 * n));
    cr_assert(eng_seg_col(s, ENG_NCOLS) == NULL);
    cr_assert(eq(int, eng_seg_verify_col(s, ENG_NCOLS), NS_E_RANGE));
    /* then the index blob, the address totals blob when there is one, the footer (128 + 48 a
     * column + the bloom filter) and the 24-byte trailer end the file */
    const eng_seg_info *in = eng_seg_get_info(s);
    cr_assert(eq(u64, in->index_offset, expect_off));
    expect_off += in->index_csize;
    if (in->atot_csize) {
        cr_assert(eq(u64, in->atot_offset, expect_off));
        expect_off += in->atot_csize;
    }
    cr_assert(eq(u64, expect_off + 128 + 48 * ENG_NCOLS + 8 * in->bloom_words + 24, in->file_size));
    eng_seg_close(s);
    free(rows);
}

Test(seg, decode_mem_gives_the_same_rows_as_the_file_reader)
{
    const size_t n = 3000;
    const char *path = tpath("mem.seg");
    eng_flow *rows = make_rows(n), *file_rows = calloc(n, sizeof *file_rows), *mem_rows = NULL;
    eng_seg *s;
    size_t len, got_n = 0;
    cr_assert(file_rows != NULL);
    cr_assert(eq(int, eng_seg_write(path, rows, n), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, file_rows), 0));
    eng_seg_close(s);
    uint8_t *buf = test_slurp(path, &len);
    cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mem_rows, &got_n), 0));
    cr_assert(eq(sz, got_n, n));
    assert_rows_equal(mem_rows, file_rows, n);
    assert_rows_equal(mem_rows, rows, n);
    free(mem_rows);
    free(buf);
    free(file_rows);
    free(rows);
}

/* ---------------------------------------------------------------------------------------------
 * Damage: every check names what it found */

Test(seg, one_flipped_byte_in_a_column_fails_exactly_that_column)
{
    const size_t n = 200;
    const char *good = tpath("good.seg"), *bad = tpath("bad.seg");
    eng_flow *rows = make_rows(n), *got = calloc(n, sizeof *got);
    eng_seg *s;
    size_t len;
    cr_assert(got != NULL);
    cr_assert(eq(int, eng_seg_write(good, rows, n), 0));
    cr_assert(eq(int, eng_seg_open(good, &s), 0));
    eng_seg_colinfo cols[ENG_NCOLS];
    for (uint32_t c = 0; c < ENG_NCOLS; c++)
        cols[c] = *eng_seg_col(s, c);
    eng_seg_close(s);
    uint8_t *orig = test_slurp(good, &len), *buf = malloc(len);
    cr_assert(buf != NULL);

    for (uint32_t c = 0; c < ENG_NCOLS; c++) {
        const char *name = eng_col_name((eng_col)c);
        memcpy(buf, orig, len);
        buf[cols[c].offset + cols[c].csize / 2] ^= 0x40;
        test_spit(bad, buf, len);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0), "column %s: footer is intact", name);
        for (uint32_t j = 0; j < ENG_NCOLS; j++)
            cr_assert(eq(int, eng_seg_verify_col(s, j), j == c ? NS_E_CORRUPT : 0),
                      "flipped %s, verified %s", name, eng_col_name((eng_col)j));
        cr_assert(eq(int, eng_seg_read(s, ENG_COLMASK(c), got), NS_E_CORRUPT), "column %s", name);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), NS_E_CORRUPT), "column %s", name);
        /* the other columns still read (last needs first, so it goes with it) */
        uint32_t others = ENG_COLS_ALL & ~ENG_COLMASK(c);
        if (c == ENG_COL_FIRST)
            others &= ~ENG_COLMASK(ENG_COL_LAST);
        cr_assert(eq(int, eng_seg_read(s, others, got), 0), "all but %s", name);
        eng_seg_close(s);

        eng_flow *mrows = NULL;
        size_t mn = 0;
        cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mrows, &mn), NS_E_CORRUPT), "%s", name);
        cr_assert(mrows == NULL);
    }
    free(buf);
    free(orig);
    free(got);
    free(rows);
}

Test(seg, flipped_byte_in_footer_or_trailer_fails_open)
{
    const size_t n = 50;
    const char *good = tpath("good.seg"), *bad = tpath("bad.seg");
    eng_flow *rows = make_rows(n);
    eng_seg *s = NULL;
    size_t len;
    cr_assert(eq(int, eng_seg_write(good, rows, n), 0));
    uint8_t *orig = test_slurp(good, &len), *buf = malloc(len);
    cr_assert(buf != NULL);
    const size_t flen = le32_at(orig + len - 24), foot = len - 24 - flen;
    /* every byte of the footer: totals, column count, each directory entry */
    for (size_t off = foot; off < len - 24; off++) {
        memcpy(buf, orig, len);
        buf[off] ^= 0x01;
        test_spit(bad, buf, len);
        s = NULL;
        cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_CORRUPT), "footer byte %zu", off - foot);
        cr_assert(s == NULL);
    }
    /* the footer's length and checksum in the trailer */
    for (size_t off = len - 24; off < len - 8; off++) {
        memcpy(buf, orig, len);
        buf[off] ^= 0x01;
        test_spit(bad, buf, len);
        cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_CORRUPT), "trailer byte %zu", off);
    }
    /* the end marker: the file looks cut short */
    memcpy(buf, orig, len);
    buf[len - 3] ^= 0x01;
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_TRUNC));
    free(buf);
    free(orig);
    free(rows);
}

Test(seg, truncated_files_fail_with_an_ns_code)
{
    const size_t n = 20;
    const char *good = tpath("good.seg"), *bad = tpath("cut.seg");
    eng_flow *rows = make_rows(n);
    size_t len;
    cr_assert(eq(int, eng_seg_write(good, rows, n), 0));
    uint8_t *orig = test_slurp(good, &len);
    const size_t named[] = {0, 10, len / 2, len - 1};
    for (size_t k = 0; k < 4; k++) {
        eng_seg *s = NULL;
        test_spit(bad, orig, named[k]);
        cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_TRUNC), "cut at %zu of %zu", named[k], len);
        cr_assert(s == NULL);
    }
    /* and every other length, file and memory readers alike */
    for (size_t cut = 0; cut < len; cut++) {
        eng_seg *s = NULL;
        eng_flow *mrows = NULL;
        size_t mn = 0;
        test_spit(bad, orig, cut);
        int rc = eng_seg_open(bad, &s);
        cr_assert(rc <= NS_E_TRUNC && rc > NS_E_LAST, "cut at %zu: rc %d", cut, rc);
        cr_assert(s == NULL);
        rc = eng_seg_decode_mem(orig, cut, &mrows, &mn);
        cr_assert(rc <= NS_E_TRUNC && rc > NS_E_LAST, "mem cut at %zu: rc %d", cut, rc);
        cr_assert(mrows == NULL);
    }
    free(orig);
    free(rows);
}

Test(seg, wrong_magic_and_version)
{
    const size_t n = 5;
    const char *good = tpath("good.seg"), *bad = tpath("bad.seg");
    eng_flow *rows = make_rows(n);
    eng_seg *s = NULL;
    size_t len;
    cr_assert(eq(int, eng_seg_write(good, rows, n), 0));
    uint8_t *buf = test_slurp(good, &len);
    cr_assert(eq(int, memcmp(buf, "NS2FSEG\0", 8), 0));
    cr_assert(eq(int, memcmp(buf + len - 8, "NS2FEND\0", 8), 0));

    buf[0] = 'X';
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_MAGIC));
    buf[0] = 'N';
    buf[7] = '!';
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_MAGIC));
    buf[7] = 0;

    const uint8_t v = buf[8]; /* the version the writer uses (small, in the low byte) */
    cr_assert(eq(u32, le32_at(buf + 8), v));
    buf[8] = (uint8_t)(v + 1); /* a newer format */
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_VERSION));
    eng_flow *mrows = NULL;
    size_t mn = 0;
    cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mrows, &mn), NS_E_VERSION));
    cr_assert(mrows == NULL);
    buf[8] = v;
    buf[11] = 1; /* the high byte */
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_VERSION));
    buf[11] = 0;
    buf[8] = 0;
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_VERSION));
    buf[8] = v;
    /* the untouched bytes open again */
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), 0));
    eng_seg_close(s);
    free(buf);
    free(rows);
}

static void put_le32_at(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64_at(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the footer checksum in the trailer, as a forger would. */
static void reseal(uint8_t *buf, size_t len)
{
    uint64_t flen = 0;
    for (int i = 7; i >= 0; i--)
        flen = flen << 8 | buf[len - 24 + (size_t)i];
    put_le64_at(buf + len - 16, XXH64(buf + len - 24 - flen, (size_t)flen, 0));
}

/* Footers whose checksum is right but whose content is not: the structural checks behind
 * the checksum still refuse them, and nothing reads out of bounds. */
Test(seg, forged_footer_with_valid_checksum_is_still_checked)
{
    const size_t n = 40;
    const char *good = tpath("good.seg"), *bad = tpath("forged.seg");
    eng_flow *rows = make_rows(n);
    eng_seg *s = NULL;
    size_t len;
    cr_assert(eq(int, eng_seg_write(good, rows, n), 0));
    uint8_t *orig = test_slurp(good, &len), *buf = malloc(len);
    cr_assert(buf != NULL);
    const size_t flen = le32_at(orig + len - 24), foot = len - 24 - flen, F = 128; /* version 6 */
    /* unchanged but resealed: still fine */
    memcpy(buf, orig, len);
    reseal(buf, len);
    test_spit(bad, buf, len);
    cr_assert(eq(int, eng_seg_open(bad, &s), 0));
    eng_seg_close(s);

    struct {
        const char *what;
        size_t off; /* from the footer start */
        int width;
        uint64_t value;
    } cases[] = {
        {"column id out of order", F + 48 * 3 + 0, 4, 4},
        {"column width", F + 48 * ENG_COL_SRC + 4, 4, 8},
        {"encoding the column may not have", F + 48 * ENG_COL_SRC + 8, 4, 3},
        {"encoding no version has", F + 48 * ENG_COL_DST_PORT + 8, 4, 9},
        {"blob inside the header", F + 48 * 0 + 16, 8, 8},
        {"blob past the footer", F + 48 * 2 + 24, 8, UINT64_MAX / 2},
        {"blob starts past the footer", F + 48 * (ENG_NCOLS - 1) + 16, 8, foot + 1},
        {"raw size beyond the row count", F + 48 * 1 + 32, 8, n * 16 + 17},
        {"column count", 40, 4, ENG_NCOLS - 1},
        {"row count above the cap", 0, 8, (1u << 26) + 1},
        {"index inside the header", 48, 8, 8},
        {"index past the footer", 56, 8, UINT64_MAX / 2},
        {"index raw size beyond the row count", 64, 8, 16 + (n + 2) * 32 + 1},
        {"no bloom words", 80, 4, 0},
        {"bloom words beyond the footer", 80, 4, 1u << 20},
        {"no bloom probes", 84, 4, 0},
        {"address totals offset without a blob", 96, 8, 16},
        {"address totals inside the header", 104, 8, 10},
        {"address totals raw size beyond the bound", 112, 8, 1u << 30},
        {"address totals checksum without a blob", 120, 8, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(buf, orig, len);
        if (cases[k].width == 4)
            put_le32_at(buf + foot + cases[k].off, (uint32_t)cases[k].value);
        else
            put_le64_at(buf + foot + cases[k].off, cases[k].value);
        reseal(buf, len);
        test_spit(bad, buf, len);
        s = NULL;
        cr_assert(eq(int, eng_seg_open(bad, &s), NS_E_CORRUPT), "%s", cases[k].what);
        cr_assert(s == NULL);
        eng_flow *mrows = NULL;
        size_t mn = 0;
        cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mrows, &mn), NS_E_CORRUPT), "%s",
                  cases[k].what);
    }

    /* these open (the directory is plausible) but the data does not decode as described */
    struct {
        const char *what;
        size_t off;
        int width;
        uint64_t value;
        uint32_t mask;
    } late[] = {
        /* byte planes read as a dictionary, or the other way round: both allowed for src */
        {"encoding of src", F + 48 * ENG_COL_SRC + 8, 4,
         le32_at(orig + foot + F + 48 * ENG_COL_SRC + 8) == 1 ? 4u : 1u, ENG_COLMASK(ENG_COL_SRC)},
        {"one row more", 0, 8, n + 1, ENG_COLMASK(ENG_COL_SRC_PORT)},
        {"one row less", 0, 8, n - 1, ENG_COLMASK(ENG_COL_BYTES)},
        {"varint column, rows doubled", 0, 8, 2 * n, ENG_COLMASK(ENG_COL_FIRST)},
    };
    for (size_t k = 0; k < sizeof late / sizeof late[0]; k++) {
        memcpy(buf, orig, len);
        if (late[k].width == 4)
            put_le32_at(buf + foot + late[k].off, (uint32_t)late[k].value);
        else
            put_le64_at(buf + foot + late[k].off, late[k].value);
        reseal(buf, len);
        test_spit(bad, buf, len);
        cr_assert(eq(int, eng_seg_open(bad, &s), 0), "%s", late[k].what);
        eng_flow *big = calloc((size_t)eng_seg_get_info(s)->rows + 1, sizeof *big);
        cr_assert(big != NULL);
        cr_assert(eq(int, eng_seg_read(s, late[k].mask, big), NS_E_CORRUPT), "%s", late[k].what);
        free(big);
        eng_seg_close(s);
        eng_flow *mrows = NULL;
        size_t mn = 0;
        cr_assert(eq(int, eng_seg_decode_mem(buf, len, &mrows, &mn), NS_E_CORRUPT), "%s",
                  late[k].what);
        cr_assert(mrows == NULL);
    }
    free(buf);
    free(orig);
    free(rows);
}

Test(seg, missing_file_is_enoent)
{
    eng_seg *s = NULL;
    cr_assert(eq(int, eng_seg_open(tpath("nope.seg"), &s), -ENOENT));
    cr_assert(s == NULL);
}

/* ---------------------------------------------------------------------------------------------
 * Atomic write */

Test(seg, no_tmp_file_is_left_after_a_write)
{
    eng_flow *rows = make_rows(100);
    cr_assert(eq(int, eng_seg_write(tpath("a.seg"), rows, 100), 0));
    cr_assert(eq(int, eng_seg_write(tpath("b.seg"), rows, 0), 0));
    cr_assert(eq(int, access(tpath("a.seg.tmp"), F_OK), -1));
    cr_assert(eq(int, errno, ENOENT));
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    int files = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        files++;
        size_t l = strlen(de->d_name);
        cr_assert(l < 4 || strcmp(de->d_name + l - 4, ".tmp") != 0, "left: %s", de->d_name);
    }
    closedir(d);
    cr_assert(eq(int, files, 2));
    free(rows);
}

Test(seg, rewriting_replaces_the_file)
{
    eng_flow r[3];
    eng_seg *s;
    special_rows(r);
    const char *path = tpath("re.seg");
    cr_assert(eq(int, eng_seg_write(path, r, 3), 0));
    cr_assert(eq(int, eng_seg_write(path, r, 1), 0));
    cr_assert(eq(int, eng_seg_open(path, &s), 0));
    cr_assert(eq(u64, eng_seg_get_info(s)->rows, 1));
    eng_seg_close(s);
}

Test(seg, write_into_missing_folder_is_enoent)
{
    eng_flow r[3];
    special_rows(r);
    cr_assert(eq(int, eng_seg_write(tpath("no/such/dir/x.seg"), r, 3), -ENOENT));
    cr_assert(eq(int, access(tpath("no"), F_OK), -1));
}
