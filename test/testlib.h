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

#endif
