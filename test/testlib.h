/* test/testlib.h — what the engine's unit tests share: a scratch folder for each test. */
#ifndef NS_TEST_TESTLIB_H
#define NS_TEST_TESTLIB_H

#include "engine/store.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test__rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A new empty folder /tmp/ns2flows-test-<tag>-XXXXXX, its path in dir (cap bytes). */
static inline void test_mkdtemp(char *dir, size_t cap, const char *tag)
{
    snprintf(dir, cap, "/tmp/ns2flows-test-%s-XXXXXX", tag);
    cr_assert(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
}

/* Removes dir and everything in it. */
static inline void test_rm_rf(const char *dir)
{
    nftw(dir, test__rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The whole file at path, malloc'd (the caller frees it); its length in *len. */
static inline uint8_t *test_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
    cr_assert(buf != NULL);
    cr_assert(eq(sz, fread(buf, 1, (size_t)sz, f), (size_t)sz));
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

/* Writes buf[0..len) as the whole file at path. */
/* The database in dir with options o, opened or the test fails with the engine's message. */
static inline eng_db *test_open_db(const char *dir, const eng_db_opts *o)
{
    eng_db *db = NULL;
    char err[512] = "";
    int rc = eng_db_open(dir, o, &db, err, sizeof err);
    cr_assert(eq(int, rc, 0), "eng_db_open: %s (%s)", ns_strerror(rc), err);
    return db;
}

/* v as a LEB128 varint (the segment format's, docs/FORMAT.md) at p; returns its length. */
static inline size_t test_put_varint(uint8_t *p, uint64_t v)
{
    size_t k = 0;
    while (v >= 0x80) {
        p[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[k++] = (uint8_t)v;
    return k;
}

static inline void test_spit(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "create %s: %s", path, strerror(errno));
    cr_assert(eq(sz, fwrite(buf, 1, len, f), len));
    cr_assert(eq(int, fclose(f), 0));
}

/* xorshift64: the next number of the sequence in *state (never 0). */
static inline uint64_t test_xorshift(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* A suite whose tests each get an empty scratch folder (tmpdir, removed after the test) and
 * tpath(name), a path inside it (in one of four rotating buffers); the engine logs errors only.
 * The file includes engine/base.h (ns_log_set_level) before using it. */
#define TEST_SCRATCH_SUITE(suite, tag)                                                             \
    static char tmpdir[64];                                                                        \
    static void setup(void)                                                                        \
    {                                                                                              \
        test_mkdtemp(tmpdir, sizeof tmpdir, tag);                                                  \
        ns_log_set_level(NS_LOG_ERROR);                                                            \
    }                                                                                              \
    static void teardown(void)                                                                     \
    {                                                                                              \
        test_rm_rf(tmpdir);                                                                        \
    }                                                                                              \
    TestSuite(suite, .init = setup, .fini = teardown);                                             \
    __attribute__((unused)) static const char *tpath(const char *name)                             \
    {                                                                                              \
        static char bufs_[4][256];                                                                 \
        static int k_;                                                                             \
        char *p_ = bufs_[k_++ % 4];                                                                \
        snprintf(p_, 256, "%s/%s", tmpdir, name);                                                  \
        return p_;                                                                                 \
    }

/* The row a dictionary-coded view holds at i, its addresses only (the rest zero): src and dst
 * values (16 bytes each) by the row's codes. Tests of filters over dictionaries match it with
 * qry_filter_match for their brute-force answer. */
static inline eng_flow test_row_of_codes(const uint8_t *svals, const uint32_t *scodes,
                                         const uint8_t *dvals, const uint32_t *dcodes, size_t i)
{
    eng_flow r;
    memset(&r, 0, sizeof r);
    memcpy(r.src.b, svals + (size_t)scodes[i] * 16, 16);
    memcpy(r.dst.b, dvals + (size_t)dcodes[i] * 16, 16);
    return r;
}

/* Sorts n values of 16 bytes (addresses) as unsigned bytes and keeps one of each: returns how
 * many are left, ascending, at the front of vals (a dictionary's values). */
static inline int test_cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}
static inline size_t test_sort_unique16(uint8_t *vals, size_t n)
{
    qsort(vals, n, 16, test_cmp16);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || memcmp(vals + (m - 1) * 16, vals + i * 16, 16) != 0)
            memmove(vals + m++ * 16, vals + i * 16, 16);
    return m;
}

#endif
