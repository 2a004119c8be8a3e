/* Tests of the memory cap on rows waiting to be sealed (eng_db_opts.unsealed_bytes, the
 * configuration's unsealed_memory) and of the budget's "sealing is behind" branch:
 * - with sealing held back, appends past the cap are dropped whole, counted exactly
 *   (rows_dropped_memory = rows offered - rows kept), kept out of the WAL, and every row that was
 *   accepted is stored once sealing resumes;
 * - eng_db_append_wait (offline ingest's) and ing_offline on a generated v5 capture never drop:
 *   they seal instead, and memory stays under the cap throughout;
 * - with more open rows than eng_db_opts.behind_rows, the budget deletes the oldest raw segments
 *   without rolling them up until the raw tier fits. */
#include "engine/store.h"
#include "engine/wal_int.h"
#include "ingest/ingest.h"
#include "test/testlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define M0  1704164640000LL /* 2024-01-02T03:04:00Z, a minute boundary */
#define MIN 60000LL

TEST_SCRATCH_SUITE(unsealed, "unsealed");

static eng_db_stats stats(eng_db *db)
{
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    return st;
}

/* Row `id` (kept in in_if), received at recv_ms. */
static eng_flow flow(uint32_t id, int64_t recv_ms)
{
    eng_flow f;
    memset(&f, 0, sizeof f);
    f.first_ms = recv_ms - 5000 - (int64_t)(id % 50);
    f.last_ms = recv_ms - 1000;
    f.packets = id + 1u;
    f.bytes = 100u * (id + 1u);
    f.in_if = id;
    ns_addr_from_v4(&f.src, 0x0a000000u | (id * 2654435761u >> 8));
    ns_addr_from_v4(&f.dst, 0xc0a80000u | (id & 0xffffu));
    ns_addr_from_v4(&f.exporter, 0xc0000201u);
    f.proto = 6;
    f.sampling = 1;
    return f;
}

static eng_flow *make_rows(uint32_t id0, size_t n, int64_t recv_ms)
{
    eng_flow *rows = malloc((n ? n : 1) * sizeof *rows);
    cr_assert(rows != NULL);
    for (size_t i = 0; i < n; i++)
        rows[i] = flow(id0 + (uint32_t)i, recv_ms);
    return rows;
}

/* How often a scan saw each id. */
typedef struct seen {
    uint32_t cap;
    uint8_t *n;
    uint64_t rows;
} seen;

static int seen_cb(void *arg, const eng_flow *rows, size_t n)
{
    seen *s = arg;
    for (size_t i = 0; i < n; i++) {
        cr_assert(lt(u32, rows[i].in_if, s->cap));
        if (s->n[rows[i].in_if] < 255)
            s->n[rows[i].in_if]++;
        s->rows++;
    }
    return 0;
}

static seen scan_all(eng_db *db, uint32_t cap)
{
    seen s = {.cap = cap, .n = calloc(cap, 1)};
    cr_assert(s.n != NULL);
    cr_assert(
        eq(int, eng_db_scan(db, INT64_MIN, INT64_MAX, ENG_COLMASK(ENG_COL_IN_IF), seen_cb, &s), 0));
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * The receive path: past the cap, appends are dropped and counted, never waited for */

Test(unsealed, appends_past_the_cap_are_dropped_counted_and_the_rest_is_stored)
{
    const uint64_t cap = 4u << 20; /* about 29 000 rows */
    const size_t batch = 1000, nbatch = 60;
    /* the WAL thread's fsync holds buffers for a moment (their memory too): not in this test */
    eng_db_opts o = {
        .seal_delay_s = 2, .no_sealer_thread = true, .unsealed_bytes = cap, .wal_sync_ms = 600000};
    eng_db *db = test_open_db(tmpdir, &o);
    bool *kept = calloc(nbatch, sizeof *kept);
    uint64_t nkept = 0, wal_recs = 0;
    cr_assert(kept != NULL);
    for (size_t k = 0; k < nbatch; k++) {
        /* two minutes, both waiting: the cap is one for all open buffers */
        int64_t recv = k % 3 == 2 ? M0 + MIN + 500 : M0 + 500;
        eng_flow *rows = make_rows((uint32_t)(k * batch), batch, recv);
        int rc = eng_db_append(db, recv, rows, batch);
        uint8_t *rec = malloc(eng__wal_rec_size(batch)); /* the record it wrote, if kept */
        cr_assert(rec != NULL);
        size_t reclen = eng__wal_encode(rec, recv, rows, batch);
        free(rec);
        free(rows);
        cr_assert(rc == 0 || rc == NS_E_NOMEM, "batch %zu: %s", k, ns_strerror(rc));
        kept[k] = rc == 0;
        if (kept[k]) {
            nkept += batch;
            wal_recs += reclen;
        }
        eng_db_stats st = stats(db);
        cr_assert(le(u64, st.unsealed_bytes, cap), "batch %zu: %" PRIu64, k, st.unsealed_bytes);
        cr_assert(le(u64, st.open_rows * sizeof(eng_flow), cap));
        cr_assert(eq(u64, st.open_rows, nkept), "batch %zu", k);
        cr_assert(eq(u64, st.rows_dropped_memory, (k + 1) * batch - nkept), "batch %zu", k);
        cr_assert(eq(u64, st.rows_dropped, st.rows_dropped_memory));
        cr_assert(eq(u64, st.unsealed_bytes_max, cap));
        /* dropped rows never reach the WAL: a restart must not bring them back. Its bytes are
         * the kept records and a header per file (a buffer, cut at a quarter of the cap) */
        cr_assert(ge(u64, st.wal_bytes, wal_recs + ENG_WAL_HDR), "batch %zu", k);
        cr_assert(eq(u64, (st.wal_bytes - wal_recs) % ENG_WAL_HDR, 0), "batch %zu", k);
        cr_assert(le(u64, (st.wal_bytes - wal_recs) / ENG_WAL_HDR, 16), "batch %zu", k);
    }
    /* most of the cap was used, and the flood was more than it */
    cr_assert(ge(u64, nkept * sizeof(eng_flow), cap / 2), "kept %" PRIu64, nkept);
    cr_assert(lt(u64, nkept, (uint64_t)nbatch * batch));

    /* sealing resumes: every accepted row is stored once, no dropped one */
    cr_assert(ge(int, eng_db_seal_due(db, 0, true), 2), "two minutes at least");
    seen s = scan_all(db, (uint32_t)(nbatch * batch + batch));
    cr_assert(eq(u64, s.rows, nkept));
    for (size_t k = 0; k < nbatch; k++)
        for (size_t i = 0; i < batch; i++)
            cr_assert(eq(int, s.n[k * batch + i], kept[k] ? 1 : 0), "batch %zu row %zu", k, i);
    free(s.n);
    eng_db_stats st = stats(db);
    cr_assert(eq(u64, st.rows_sealed, nkept));
    cr_assert(eq(u64, st.open_rows, 0));

    /* the memory is free again: the next rows are taken */
    uint32_t id = (uint32_t)(nbatch * batch);
    eng_flow *rows = make_rows(id, batch, M0 + 2 * MIN);
    cr_assert(eq(int, eng_db_append(db, M0 + 2 * MIN, rows, batch), 0));
    free(rows);
    cr_assert(eq(u64, stats(db).rows_dropped_memory, (uint64_t)nbatch * batch - nkept));
    cr_assert(eq(int, eng_db_close(db), 0));

    /* and a restart finds the accepted rows only, each once */
    db = test_open_db(tmpdir, &o);
    s = scan_all(db, (uint32_t)(nbatch * batch + batch));
    cr_assert(eq(u64, s.rows, nkept + batch));
    for (size_t i = 0; i < batch; i++)
        cr_assert(eq(int, s.n[id + i], 1));
    free(s.n);
    cr_assert(eq(int, eng_db_close(db), 0));
    free(kept);
}

/* ---------------------------------------------------------------------------------------------
 * The offline path: appends wait for sealing instead of dropping */

static void append_wait_all(eng_db *db, uint64_t cap, uint32_t nrows, size_t batch)
{
    for (uint32_t id = 0; id < nrows; id += (uint32_t)batch) {
        size_t n = nrows - id < batch ? nrows - id : batch;
        int64_t recv = M0 + 100 + id / 1000; /* all in one minute: nothing is due by time */
        eng_flow *rows = make_rows(id, n, recv);
        cr_assert(eq(int, eng_db_append_wait(db, recv, rows, n), 0), "rows from %u", id);
        free(rows);
        cr_assert(le(u64, stats(db).unsealed_bytes, cap), "rows from %u", id);
    }
}

static void assert_all_stored_once(eng_db *db, uint32_t nrows, uint64_t appended)
{
    eng_db_stats st = stats(db);
    cr_assert(eq(u64, st.rows_dropped, 0));
    cr_assert(eq(u64, st.rows_dropped_memory, 0));
    cr_assert(eq(u64, st.rows_stored, appended));
    seen s = scan_all(db, nrows);
    cr_assert(eq(u64, s.rows, nrows));
    for (uint32_t id = 0; id < nrows; id++)
        cr_assert(eq(int, s.n[id], 1), "id %u", id);
    free(s.n);
}

Test(unsealed, append_wait_seals_instead_of_dropping)
{
    const uint64_t cap = 4u << 20;
    const uint32_t nrows = 200000; /* over six times what the cap holds */
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true, .unsealed_bytes = cap};
    eng_db *db = test_open_db(tmpdir, &o);
    append_wait_all(db, cap, nrows, 3000);
    eng_db_stats st = stats(db);
    cr_assert(ge(u64, st.segments, nrows * sizeof(eng_flow) / cap), "sealed as it went");
    cr_assert(gt(u64, st.rows_sealed, 0));
    assert_all_stored_once(db, nrows, nrows);
    cr_assert(eq(int, eng_db_close(db), 0));
    db = test_open_db(tmpdir, &o); /* what was open at close was sealed; nothing replayed twice */
    assert_all_stored_once(db, nrows, 0);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(unsealed, append_wait_seals_full_buffers_at_once)
{
    const uint64_t cap = 64u << 20; /* not reached */
    const uint32_t nrows = 100000, seal_rows = 20000;
    eng_db_opts o = {
        .seal_delay_s = 2, .no_sealer_thread = true, .unsealed_bytes = cap, .seal_rows = seal_rows};
    eng_db *db = test_open_db(tmpdir, &o);
    append_wait_all(db, cap, nrows, 2500);
    /* the caller is the sealer: each buffer is sealed when it fills, not at the minute's end */
    eng_db_stats st = stats(db);
    cr_assert(eq(u64, st.segments, nrows / seal_rows));
    cr_assert(eq(u64, st.open_rows, 0));
    assert_all_stored_once(db, nrows, nrows);
    cr_assert(eq(int, eng_db_close(db), 0));
}

Test(unsealed, append_wait_with_sealer_threads_loses_nothing, .timeout = 60)
{
    const uint64_t cap = 4u << 20;
    const uint32_t nrows = 150000;
    eng_db_opts o = {
        .seal_delay_s = 2, .seal_threads = 2, .unsealed_bytes = cap, .seal_rows = 9000};
    eng_db *db = test_open_db(tmpdir, &o);
    append_wait_all(db, cap, nrows, 1500);
    cr_assert(eq(int, eng_db_seal_due(db, 0, true) >= 0, 1));
    assert_all_stored_once(db, nrows, nrows);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* ---------------------------------------------------------------------------------------------
 * ing_offline (`ns2flows ingest`) on a generated v5 capture bigger than the cap */

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v & 0xffffu);
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A classic pcap of ndgram v5 datagrams of 30 records, Ethernet/IPv4/UDP to port 2055, one
 * millisecond apart in one minute of capture time; record r of datagram d has dOctets
 * d * 30 + r + 1. */
static void write_v5_pcap(const char *path, uint32_t ndgram, uint32_t t0_s)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL);
    uint8_t gh[24] = {0};
    le32(gh, 0xa1b2c3d4u);
    gh[4] = 2;
    gh[6] = 4;
    le32(gh + 16, 65535);
    le32(gh + 20, 1); /* Ethernet */
    cr_assert(eq(sz, fwrite(gh, 1, sizeof gh, f), sizeof gh));
    enum { NREC = 30, V5LEN = 24 + NREC * 48, UDPLEN = 8 + V5LEN, IPLEN = 20 + UDPLEN };
    uint8_t pkt[14 + IPLEN];
    for (uint32_t d = 0; d < ndgram; d++) {
        memset(pkt, 0, sizeof pkt);
        pkt[12] = 0x08; /* IPv4 */
        uint8_t *ip = pkt + 14, *udp = ip + 20, *v5 = udp + 8;
        ip[0] = 0x45;
        put16(ip + 2, IPLEN);
        ip[8] = 64;
        ip[9] = 17;
        put32(ip + 12, 0x7f000001u);
        put32(ip + 16, 0x7f000001u);
        put16(udp, 40000);
        put16(udp + 2, 2055);
        put16(udp + 4, UDPLEN);
        put16(v5, 5);
        put16(v5 + 2, NREC);
        put32(v5 + 4, 100000);    /* sysUptime ms */
        put32(v5 + 8, t0_s);      /* unix secs */
        put32(v5 + 16, d * NREC); /* flow sequence */
        for (uint32_t r = 0; r < NREC; r++) {
            uint8_t *rec = v5 + 24 + r * 48;
            uint32_t id = d * NREC + r;
            put32(rec, 0x0a000000u | id); /* src */
            put32(rec + 4, 0xc0a80001u);  /* dst */
            put32(rec + 16, 1);           /* packets */
            put32(rec + 20, id + 1);      /* octets */
            put32(rec + 24, 99000);       /* first (uptime) */
            put32(rec + 28, 99500);       /* last */
            put16(rec + 32, (uint16_t)(1024 + r));
            put16(rec + 34, 443);
            rec[38] = 6;
        }
        uint8_t rh[16];
        uint64_t us = (uint64_t)t0_s * 1000000u + (uint64_t)d * 1000u;
        le32(rh, (uint32_t)(us / 1000000u));
        le32(rh + 4, (uint32_t)(us % 1000000u));
        le32(rh + 8, (uint32_t)sizeof pkt);
        le32(rh + 12, (uint32_t)sizeof pkt);
        cr_assert(eq(sz, fwrite(rh, 1, sizeof rh, f), sizeof rh));
        cr_assert(eq(sz, fwrite(pkt, 1, sizeof pkt, f), sizeof pkt));
    }
    cr_assert(eq(int, fclose(f), 0));
}

typedef struct tap_watch {
    eng_db *db;
    uint64_t cap, max_unsealed, calls;
} tap_watch;

/* runs on the appending thread after each append the database kept */
static void watch_tap(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    tap_watch *w = arg;
    (void)recv_ms;
    (void)rows;
    (void)n;
    eng_db_stats st;
    eng_db_get_stats(w->db, &st);
    w->max_unsealed = st.unsealed_bytes > w->max_unsealed ? st.unsealed_bytes : w->max_unsealed;
    w->calls++;
}

typedef struct sums {
    uint64_t rows, bytes;
} sums;

static int sums_cb(void *arg, const eng_flow *rows, size_t n)
{
    sums *s = arg;
    for (size_t i = 0; i < n; i++) {
        s->rows++;
        s->bytes += rows[i].bytes;
    }
    return 0;
}

Test(unsealed, offline_ingest_of_a_capture_bigger_than_the_cap_loses_nothing, .timeout = 60)
{
    const uint32_t ndgram = 4000, nflows = ndgram * 30; /* 120 000 flows, 16 MB of rows */
    const uint64_t cap = 4u << 20;
    char cap_path[256], dbdir[256];
    snprintf(cap_path, sizeof cap_path, "%s/v5.pcap", tmpdir);
    snprintf(dbdir, sizeof dbdir, "%s/db", tmpdir);
    write_v5_pcap(cap_path, ndgram, (uint32_t)(M0 / 1000) + 1);

    /* as `ns2flows ingest` opens it: no sealer thread, sealed by capture time or at the end */
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true, .unsealed_bytes = cap};
    eng_db *db = NULL;
    ing_exporters *ex = NULL;
    char err[512] = "";
    cr_assert(eq(int, eng_db_open(dbdir, &o, &db, err, sizeof err), 0), "%s", err);
    cr_assert(eq(int, ing_exporters_new(16, &ex), 0));
    tap_watch w = {.db = db, .cap = cap};
    eng_db_set_tap(db, watch_tap, &w);
    const char *paths[] = {cap_path};
    ing_offline_stats ost;
    cr_assert(eq(int, ing_offline(db, ex, paths, 1, NULL, &ost, err, sizeof err), 0), "%s", err);
    cr_assert(eq(u64, ost.flows, nflows));
    cr_assert(eq(u64, ost.decode_errors, 0));
    cr_assert(eq(u64, ost.store_dropped, 0));
    eng_db_stats st = stats(db);
    cr_assert(eq(u64, st.rows_dropped, 0));
    cr_assert(eq(u64, st.rows_dropped_memory, 0));
    cr_assert(eq(u64, st.rows_stored, nflows));
    cr_assert(gt(u64, w.calls, 0));
    cr_assert(le(u64, w.max_unsealed, cap), "%" PRIu64, w.max_unsealed);
    cr_assert(ge(u64, st.segments, (uint64_t)nflows * sizeof(eng_flow) / cap),
              "sealed while the minute was still going");
    cr_assert(eq(int, eng_db_seal_due(db, 0, true) >= 0, 1));
    sums s = {0};
    cr_assert(
        eq(int, eng_db_scan(db, INT64_MIN, INT64_MAX, ENG_COLMASK(ENG_COL_BYTES), sums_cb, &s), 0));
    cr_assert(eq(u64, s.rows, nflows));
    cr_assert(eq(u64, s.bytes, (uint64_t)nflows * (nflows + 1) / 2));
    eng_db_set_tap(db, NULL, NULL);
    cr_assert(eq(int, eng_db_close(db), 0));
    ing_exporters_free(ex);
}

/* ---------------------------------------------------------------------------------------------
 * The budget when sealing is behind: raw segments go without their roll-ups */

typedef struct seg_file {
    long long minute;
    uint64_t size;
} seg_file;

static int cmp_seg_file(const void *a, const void *b)
{
    const seg_file *x = a, *y = b;
    return (x->minute > y->minute) - (x->minute < y->minute);
}

/* The raw minute segments m<minute>-<seq>.seg under tmpdir, oldest first; returns how many. */
static size_t raw_segments(seg_file *out, size_t cap)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    size_t n = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        long long m;
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != 'm' || l < 5 || strcmp(de->d_name + l - 4, ".seg") != 0 ||
            sscanf(de->d_name, "m%lld-", &m) != 1)
            continue;
        char p[512];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
        cr_assert(eq(int, stat(p, &st), 0));
        cr_assert(lt(sz, n, cap));
        out[n++] = (seg_file){m, (uint64_t)st.st_size};
    }
    closedir(d);
    qsort(out, n, sizeof *out, cmp_seg_file);
    return n;
}

enum { NMIN = 8, SEG_ROWS = 300, OPEN_ROWS = 600 };

/* NMIN minutes of SEG_ROWS rows each, appended and sealed one after the other. */
static void seal_minutes(eng_db *db)
{
    for (uint32_t m = 0; m < NMIN; m++) {
        int64_t recv = M0 + m * MIN + 500;
        eng_flow *rows = make_rows(m * SEG_ROWS, SEG_ROWS, recv);
        cr_assert(eq(int, eng_db_append(db, recv, rows, SEG_ROWS), 0));
        free(rows);
        cr_assert(eq(int, eng_db_seal_due(db, M0 + (m + 1) * MIN, false), 1), "minute %u", m);
    }
}

/* NMIN sealed minutes of SEG_ROWS rows, then OPEN_ROWS rows left open in a later minute. */
static eng_db *fill_for_budget_rows(uint64_t behind_rows, uint64_t seal_rows, seg_file *segs)
{
    eng_db_opts o = {.seal_delay_s = 0,
                     .no_sealer_thread = true,
                     .no_wal = true, /* the raw tier is then segments and small files only */
                     .rollup_share = 30,
                     .behind_rows = behind_rows,
                     .seal_rows = seal_rows};
    eng_db *db = test_open_db(tmpdir, &o);
    seal_minutes(db);
    int64_t recv = M0 + 20 * MIN;
    eng_flow *rows = make_rows(NMIN * SEG_ROWS, OPEN_ROWS, recv);
    cr_assert(eq(int, eng_db_append(db, recv, rows, OPEN_ROWS), 0));
    free(rows);
    cr_assert(eq(sz, raw_segments(segs, NMIN), NMIN));
    return db;
}

static eng_db *fill_for_budget(uint64_t behind_rows, seg_file *segs)
{
    return fill_for_budget_rows(behind_rows, 0, segs);
}

/* A budget whose raw part (70%) is what is used now less 4.5 average segments. */
static uint64_t budget_dropping_four_and_a_half(eng_db *db, const seg_file *segs)
{
    uint64_t seg_bytes = 0;
    for (size_t i = 0; i < NMIN; i++)
        seg_bytes += segs[i].size;
    uint64_t raw_cap = stats(db).disk_bytes - seg_bytes * 9 / (2 * NMIN);
    return raw_cap * 100 / 70 + 1;
}

Test(unsealed, sealing_behind_deletes_the_oldest_raw_segments_without_rolling_them_up)
{
    seg_file segs[NMIN], left[NMIN];
    eng_db *db = fill_for_budget(OPEN_ROWS - 1, segs);
    cr_assert(gt(u64, stats(db).open_rows, OPEN_ROWS - 1), "sealing counts as behind");
    uint64_t budget = budget_dropping_four_and_a_half(db, segs);
    eng_db_set_limits(db, budget, 0);

    eng_db_stats st = stats(db);
    uint64_t raw_cap = budget - (budget / 100 * 30 + budget % 100 * 30 / 100);
    size_t n = raw_segments(left, NMIN);
    size_t gone = NMIN - n;
    cr_assert(ge(sz, gone, 4));
    cr_assert(le(u64, st.disk_bytes - st.rollup_bytes, raw_cap), "the raw tier fits");
    cr_assert(le(u64, st.disk_bytes, budget), "the budget holds");
    /* no more went than needed: with the newest deleted one back it would not fit */
    cr_assert(gt(u64, st.disk_bytes + segs[gone - 1].size, raw_cap));
    /* the oldest went first: what is left is the newest minutes, in full */
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(i64, left[i].minute, segs[gone + i].minute), "segment %zu", i);
    /* without roll-ups, each one counted */
    cr_assert(eq(u64, st.rollup_skipped, gone));
    cr_assert(eq(u64, st.segments_deleted, gone));
    cr_assert(eq(u64, st.segments_rolled_up, 0));
    cr_assert(eq(u64, st.rollup_segments, 0));
    /* queries see the kept minutes and the open rows, each row once */
    seen s = scan_all(db, NMIN * SEG_ROWS + OPEN_ROWS);
    for (uint32_t id = 0; id < NMIN * SEG_ROWS + OPEN_ROWS; id++)
        cr_assert(eq(int, s.n[id], id >= gone * SEG_ROWS ? 1 : 0), "id %u", id);
    free(s.n);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* The same store with sealing keeping up (open rows under behind_rows): rolled up instead. */
Test(unsealed, sealing_in_time_rolls_the_oldest_raw_segments_up)
{
    seg_file segs[NMIN];
    eng_db *db = fill_for_budget(OPEN_ROWS, segs);
    eng_db_set_limits(db, budget_dropping_four_and_a_half(db, segs), 0);
    eng_db_stats st = stats(db);
    cr_assert(eq(u64, st.rollup_skipped, 0));
    cr_assert(ge(u64, st.segments_rolled_up, 4));
    cr_assert(ge(u64, st.rollup_segments, 1));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* The same store in a flood (more rows waiting than a buffer holds, sealing not behind): the
 * tiers keep a reserve of 32 bytes a row of a buffer below the budget, and a raw tier over its
 * share by more than that has outrun the roll-ups: its oldest go without them. */
Test(unsealed, a_flood_keeps_a_reserve_and_deletes_what_outran_the_rollups)
{
    seg_file segs[NMIN], left[NMIN];
    const uint64_t seal_rows = OPEN_ROWS - 100;
    eng_db *db = fill_for_budget_rows(OPEN_ROWS, seal_rows, segs);
    cr_assert(gt(u64, stats(db).open_rows, seal_rows), "a flood");
    uint64_t budget = budget_dropping_four_and_a_half(db, segs);
    uint64_t reserve = seal_rows * 32 < budget / 8 ? seal_rows * 32 : budget / 8;
    eng_db_set_limits(db, budget, 0);
    eng_db_stats st = stats(db);
    uint64_t inner = budget - reserve;
    uint64_t raw_cap = inner - (inner / 100 * 30 + inner % 100 * 30 / 100);
    size_t n = raw_segments(left, NMIN), gone = NMIN - n;
    cr_assert(ge(sz, gone, 4));
    cr_assert(le(u64, st.disk_bytes - st.rollup_bytes, raw_cap), "the raw tier fits its share");
    cr_assert(le(u64, st.disk_bytes, budget - reserve), "the reserve is kept");
    cr_assert(eq(u64, st.segments_rolled_up, 0), "no roll-up");
    cr_assert(eq(u64, st.rollup_skipped, gone));
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(i64, left[i].minute, segs[gone + i].minute), "the oldest went first");
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* ---------------------------------------------------------------------------------------------
 * The budget while the WAL grows between seals: the append makes room */

/* Bytes of every regular file under dir, at any depth (what du -sb counts, less folders). */
static uint64_t folder_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t sum = 0;
    cr_assert(d != NULL, "%s", dir);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (lstat(p, &st) < 0)
            continue;
        if (S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
        else if (S_ISDIR(st.st_mode))
            sum += folder_bytes(p);
    }
    closedir(d);
    return sum;
}

/* NMIN sealed minutes of SEG_ROWS rows with the WAL on and no roll-ups; returns the store,
 * its segments in segs. */
static eng_db *fill_with_wal(uint64_t seal_rows, bool compactor, seg_file *segs)
{
    eng_db_opts o = {.seal_delay_s = 0,
                     .no_sealer_thread = true,
                     .compactor = compactor,
                     .seal_rows = seal_rows};
    eng_db *db = test_open_db(tmpdir, &o);
    seal_minutes(db);
    cr_assert(eq(sz, raw_segments(segs, NMIN), NMIN));
    cr_assert(eq(u64, stats(db).wal_bytes, 0), "sealed minutes leave no WAL");
    return db;
}

/* Appends rows [id0, id0 + n) in batches of 50 into the open minute, checking after each that
 * the folder is at most `limit` and that the segments left are the newest, in full. Returns
 * the number of segments left. */
static size_t append_within(eng_db *db, uint32_t id0, uint32_t n, uint64_t limit,
                            const seg_file *segs)
{
    seg_file left[NMIN];
    size_t nleft = NMIN;
    for (uint32_t id = id0; id < id0 + n; id += 50) {
        int64_t recv = M0 + 20 * MIN + 1000;
        eng_flow *rows = make_rows(id, 50, recv);
        cr_assert(eq(int, eng_db_append(db, recv, rows, 50), 0), "rows from %u", id);
        free(rows);
        uint64_t du = folder_bytes(tmpdir);
        cr_assert(le(u64, du, limit), "rows from %u: folder %" PRIu64, id, du);
        size_t k = raw_segments(left, NMIN);
        cr_assert(le(sz, k, nleft), "rows from %u", id);
        nleft = k;
        for (size_t i = 0; i < k; i++)
            cr_assert(eq(i64, left[i].minute, segs[NMIN - k + i].minute), "the oldest go first");
    }
    return nleft;
}

/* Every row of the segments left and of the open minute is there once, no other. */
static void assert_left_and_open(eng_db *db, size_t nleft, uint32_t open0, uint32_t nopen)
{
    seen s = scan_all(db, open0 + nopen);
    for (uint32_t id = 0; id < open0 + nopen; id++) {
        int want = id >= open0 || id >= (NMIN - nleft) * SEG_ROWS ? 1 : 0;
        cr_assert(eq(int, s.n[id], want), "id %u", id);
    }
    free(s.n);
}

/* A flood (more open rows than a buffer holds): the tiers are held below the budget by the
 * reserve, and a WAL growing between seals (none run here) deletes the oldest raw segments at
 * once, so the folder never passes the budget less the reserve. */
Test(unsealed, a_flood_wal_growing_between_seals_makes_room_at_once)
{
    seg_file segs[NMIN];
    const uint64_t seal_rows = 100;
    eng_db *db = fill_with_wal(seal_rows, false, segs);
    uint64_t used = folder_bytes(tmpdir);
    /* a budget whose target (less the reserve, at most an eighth) holds the store as it is */
    uint64_t budget = used * 8 / 7 + 64;
    uint64_t reserve = seal_rows * 32 < budget / 8 ? seal_rows * 32 : budget / 8;
    eng_db_set_limits(db, budget, 0);
    cr_assert(eq(u64, stats(db).segments_deleted, 0), "nothing over the budget yet");
    const uint32_t open0 = NMIN * SEG_ROWS, nopen = 1500;
    size_t nleft = append_within(db, open0, nopen, budget - reserve, segs);
    eng_db_stats st = stats(db);
    cr_assert(gt(u64, st.open_rows, seal_rows), "a flood");
    cr_assert(lt(sz, nleft, (size_t)NMIN - 2), "the WAL's growth took segments");
    cr_assert(eq(u64, st.segments_deleted, NMIN - nleft));
    cr_assert(eq(u64, st.rows_dropped, 0));
    assert_left_and_open(db, nleft, open0, nopen);
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* Appends 20 rows to the open minute of a store filled to budget - 1 byte: the WAL takes it
 * over the budget, by less than a segment (16 bytes a row of a buffer); returns the folder's
 * size after. */
static uint64_t just_over(eng_db *db, uint64_t budget, uint64_t seal_rows)
{
    int64_t recv = M0 + 20 * MIN + 1000;
    eng_flow *rows = make_rows(NMIN * SEG_ROWS, 20, recv);
    cr_assert(eq(int, eng_db_append(db, recv, rows, 20), 0));
    free(rows);
    uint64_t du = folder_bytes(tmpdir);
    cr_assert(le(u64, du, budget + seal_rows * 16));
    return du;
}

/* No flood: a WAL over the budget by less than a segment deletes nothing itself (the pass it
 * waits for rolls up where roll-ups are on); without a compactor thread, nothing goes. */
Test(unsealed, a_wal_just_over_the_budget_waits_for_a_pass)
{
    seg_file segs[NMIN];
    const uint64_t seal_rows = 2000;
    eng_db *db = fill_with_wal(seal_rows, false, segs);
    uint64_t budget = folder_bytes(tmpdir) + 1;
    eng_db_set_limits(db, budget, 0);
    cr_assert(gt(u64, just_over(db, budget, seal_rows), budget));
    cr_assert(eq(u64, stats(db).segments_deleted, 0));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* With the compactor thread, the same WAL wakes it, and its pass brings the folder back inside
 * the budget at once, without waiting for a seal or its next merge (10 s on: a merge would
 * replace the minute segments by an hour's). */
Test(unsealed, a_wal_just_over_the_budget_wakes_the_compactor)
{
    seg_file segs[NMIN], left[NMIN];
    const uint64_t seal_rows = 2000;
    eng_db *db = fill_with_wal(seal_rows, true, segs);
    uint64_t budget = folder_bytes(tmpdir) + 1;
    eng_db_set_limits(db, budget, 0);
    (void)just_over(db, budget, seal_rows);
    for (int i = 0; i < 3000 && folder_bytes(tmpdir) > budget; i++)
        usleep(10000);
    cr_assert(le(u64, folder_bytes(tmpdir), budget), "the pass made room");
    cr_assert(eq(u64, stats(db).segments_deleted, 1), "one segment was enough");
    cr_assert(eq(sz, raw_segments(left, NMIN), NMIN - 1), "the oldest went, before any merge");
    cr_assert(eq(i64, left[0].minute, segs[1].minute));
    cr_assert(eq(int, eng_db_close(db), 0));
}

/* ---------------------------------------------------------------------------------------------
 * The seal's sort (scatter by top bits, then each bucket in cache) at sizes around its edges */

/* Seals n rows of one minute and reads the segment back: (source, first) ascending, rows with
 * the same key in the order appended (the sort is stable), each row once. src_span and
 * time_span choose how many key bits vary (both 2^32: exactly 64). */
static void sealed_in_order(uint32_t n, uint64_t src_span, uint64_t time_span, uint64_t seed)
{
    eng_db_opts o = {.seal_delay_s = 2, .no_sealer_thread = true, .no_wal = true};
    eng_db *db = test_open_db(tmpdir, &o);
    eng_flow *rows = make_rows(0, n, M0 + 1000);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t r = test_xorshift(&seed);
        if (i % 4 == 3) { /* a repeat of an earlier key: ties */
            rows[i].src = rows[r % i].src;
            rows[i].first_ms = rows[r % i].first_ms;
        } else {
            ns_addr_from_v4(&rows[i].src, (uint32_t)(r % src_span));
            rows[i].first_ms = M0 - (int64_t)((r >> 32) % time_span);
        }
        rows[i].last_ms = rows[i].first_ms;
    }
    if (n > 2) { /* the extremes, so the spans are exactly those asked */
        ns_addr_from_v4(&rows[0].src, 0);
        rows[0].first_ms = rows[0].last_ms = M0;
        ns_addr_from_v4(&rows[1].src, (uint32_t)(src_span - 1));
        rows[1].first_ms = rows[1].last_ms = M0 - (int64_t)(time_span - 1);
    }
    cr_assert(eq(int, eng_db_append(db, M0 + 1000, rows, n), 0));
    cr_assert(eq(int, eng_db_seal_due(db, 0, true), 1));
    cr_assert(eq(int, eng_db_close(db), 0));
    free(rows);

    DIR *d = opendir(tmpdir);
    struct dirent *de;
    size_t segs = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".seg") != 0)
            continue;
        char p[512];
        eng_seg *s;
        snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
        cr_assert(eq(int, eng_seg_open(p, &s), 0));
        cr_assert(eq(u64, eng_seg_get_info(s)->rows, n));
        eng_flow *got = calloc(n, sizeof *got);
        uint8_t *once = calloc(n, 1);
        cr_assert(got != NULL && once != NULL);
        cr_assert(eq(int, eng_seg_read(s, ENG_COLS_ALL, got), 0));
        for (uint32_t i = 0; i < n; i++) {
            cr_assert(lt(u32, got[i].in_if, n));
            cr_assert(eq(u8, once[got[i].in_if]++, 0), "id %u twice", got[i].in_if);
            if (i == 0)
                continue;
            int c = memcmp(got[i - 1].src.b, got[i].src.b, 16);
            bool ok = c < 0 || (c == 0 && (got[i - 1].first_ms < got[i].first_ms ||
                                           (got[i - 1].first_ms == got[i].first_ms &&
                                            got[i - 1].in_if < got[i].in_if)));
            cr_assert(ok, "n %u: row %u out of order", n, i);
        }
        free(once);
        free(got);
        eng_seg_close(s);
        segs++;
    }
    closedir(d);
    cr_assert(eq(sz, segs, 1));
    test_rm_rf(tmpdir);
    cr_assert(eq(int, mkdir(tmpdir, 0700), 0));
}

Test(unsealed, the_seal_sorts_stably_at_every_size, .timeout = 60)
{
    static const uint32_t sizes[] = {1, 2, 3, 16, 17, 300, 1023, 1024, 1025, 5000, 70000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        sealed_in_order(sizes[k], 1u << 20, 600000, 7 + k);        /* packed, few bits */
        sealed_in_order(sizes[k], 1ull << 32, 1ull << 32, 99 + k); /* packed, all 64 bits */
        sealed_in_order(sizes[k], 1ull << 32, 1ull << 33, 5 + k);  /* 65 bits: wide */
        sealed_in_order(sizes[k], 1, 1, 3 + k);                    /* one key: no bit varies */
    }
}
