/* The column-wise decoder of simple v9/IPFIX templates (ingest/templates.c, decode_fast) must give
 * exactly the rows of the record-by-record one: every capture in the shared fixtures and captures
 * of the project's generator are decoded both ways, through fresh exporter tables, and compared
 * row by row, field by field. The generator's templates must take the fast path (counted), so the
 * comparison is not vacuous. */
#include "ingest/ingest_int.h"
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <ftw.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct rowvec {
    eng_flow *rows;
    size_t n, cap;
} rowvec;

static int keep_rows(void *arg, const eng_flow *rows, size_t n)
{
    rowvec *v = arg;
    if (n == 0)
        return 0;
    if (v->n + n > v->cap) {
        size_t cap = (v->n + n) * 2;
        eng_flow *p = realloc(v->rows, cap * sizeof *p);
        cr_assert(p != NULL);
        v->rows = p;
        v->cap = cap;
    }
    memcpy(v->rows + v->n, rows, n * sizeof *rows);
    v->n += n;
    return 0;
}

/* Every datagram of path through ing_decode with the fast path on or off. */
static rowvec decode_all(const char *path, bool fast, uint64_t *errors)
{
    rowvec v = {0};
    ing_exporters *ex = NULL;
    ing_pcap *p = NULL;
    ing_udp u;
    char err[256];
    eng_flow buf[700]; /* small: batches fill mid-set and are handed on */
    ing_batch b = {.rows = buf, .cap = 700, .flush = keep_rows, .flush_arg = &v};
    cr_assert(eq(int, ing_exporters_new(1024, &ex), 0));
    cr_assert(eq(int, ing_pcap_open(path, &p, err, sizeof err), 0), "%s: %s", path, err);
    ing__fast_path = fast;
    *errors = 0;
    while (ing_pcap_next(p, &u, err, sizeof err) == 1) {
        int rc = ing_decode(ex, &u.src, u.ts_us / 1000, u.payload, u.len, &b);
        if (rc == ING_E_BATCH) {
            ing_batch_flush(&b);
            rc = ing_decode(ex, &u.src, u.ts_us / 1000, u.payload, u.len, &b);
        }
        *errors += rc < 0;
    }
    ing_batch_flush(&b);
    ing__fast_path = true;
    ing_pcap_close(p);
    ing_exporters_free(ex);
    return v;
}

static bool same_row(const eng_flow *a, const eng_flow *b)
{
    return a->first_ms == b->first_ms && a->last_ms == b->last_ms && a->packets == b->packets &&
           a->bytes == b->bytes && memcmp(&a->exporter, &b->exporter, 16) == 0 &&
           memcmp(&a->src, &b->src, 16) == 0 && memcmp(&a->dst, &b->dst, 16) == 0 &&
           memcmp(&a->nexthop, &b->nexthop, 16) == 0 && a->src_as == b->src_as &&
           a->dst_as == b->dst_as && a->in_if == b->in_if && a->out_if == b->out_if &&
           a->sampling == b->sampling && a->source_id == b->source_id &&
           a->src_port == b->src_port && a->dst_port == b->dst_port && a->proto == b->proto &&
           a->tcp_flags == b->tcp_flags && a->tos == b->tos && a->src_mask == b->src_mask &&
           a->dst_mask == b->dst_mask && a->vlan == b->vlan && a->direction == b->direction &&
           a->flow_type == b->flow_type && a->flows == b->flows;
}

static uint64_t compared_rows, compared_files;

static void compare_file(const char *path)
{
    uint64_t e1, e2;
    rowvec slow = decode_all(path, false, &e1);
    rowvec fast = decode_all(path, true, &e2);
    cr_assert(eq(u64, e1, e2), "%s: decode errors", path);
    cr_assert(eq(sz, fast.n, slow.n), "%s: rows", path);
    for (size_t i = 0; i < fast.n; i++)
        cr_assert(same_row(&fast.rows[i], &slow.rows[i]), "%s: row %zu differs", path, i);
    compared_rows += fast.n;
    compared_files++;
    free(slow.rows);
    free(fast.rows);
}

static int visit(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    size_t l = strlen(path);
    if (flag == FTW_F && ((l > 5 && strcmp(path + l - 5, ".pcap") == 0) ||
                          (l > 7 && strcmp(path + l - 7, ".pcapng") == 0)))
        compare_file(path);
    return 0;
}

Test(fastpath, fixtures_decode_the_same_both_ways, .timeout = 120)
{
    const char *dir = it_fixtures();
    ns_log_set_level(NS_LOG_ERROR);
    if (access(dir, R_OK) != 0)
        cr_skip_test("no fixtures at %s", dir);
    uint64_t before = atomic_load(&ing__fast_sets);
    cr_assert(eq(int, nftw(dir, visit, 16, FTW_PHYS), 0));
    printf("fast path: %llu data sets of %llu captures (%llu rows compared)\n",
           (unsigned long long)(atomic_load(&ing__fast_sets) - before),
           (unsigned long long)compared_files, (unsigned long long)compared_rows);
    cr_assert(compared_files > 20, "captures compared: %llu", (unsigned long long)compared_files);
    cr_assert(compared_rows > 1000);
}

Test(fastpath, generated_captures_take_the_fast_path_and_decode_the_same, .timeout = 120)
{
    char dir[] = "/tmp/ns2flows-fastpath-XXXXXX", bin[512], out[300];
    ns_log_set_level(NS_LOG_ERROR);
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(bin, sizeof bin, "%s/ns2flows-gen", it_bin());
    const char *fmts[] = {"v9", "ipfix"};
    for (int i = 0; i < 2; i++) {
        snprintf(out, sizeof out, "%s/%s.pcap", dir, fmts[i]);
        const char *argv[] = {bin,           "--format", fmts[i], "--flows", "20000",
                              "--exporters", "3",        "--out", out,       NULL};
        cr_assert(eq(int, it_run(argv, NULL), 0));
        uint64_t before = atomic_load(&ing__fast_sets);
        compare_file(out);
        cr_assert(atomic_load(&ing__fast_sets) > before, "%s: no set took the fast path", fmts[i]);
        unlink(out);
    }
    rmdir(dir);
}
