/* test/testlib.h — what the engine's unit tests share: a scratch folder for each test. */
#ifndef NS_TEST_TESTLIB_H
#define NS_TEST_TESTLIB_H

#include <criterion/criterion.h>
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

#endif
