/* test/test_engine_cache.c — the decoded-column cache (engine/cache.c): hits and misses, the
 * byte budget held by evicting the least recently used, entries in use never freed under their
 * user (ASan would see it), drops by segment, and many threads at once. */
#include "engine/store_int.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>

static eng_cache *cache;

static void fini(void)
{
    eng__cache_free(cache);
    cache = NULL;
}

TestSuite(cache, .fini = fini);

static const uint8_t *put(uint64_t owner, uint64_t col, uint8_t fill, size_t len)
{
    uint8_t buf[4096];
    eng_cache_ent *ref;
    cr_assert(len <= sizeof buf);
    memset(buf, fill, len);
    const uint8_t *kept = eng__cache_put(cache, owner, owner * 7, col, buf, len, &ref);
    cr_assert(kept != NULL);
    cr_assert(memcmp(kept, buf, len) == 0, "a copy of what was put");
    eng__cache_release(cache, ref);
    return kept;
}

static bool has(uint64_t owner, uint64_t col, uint8_t fill)
{
    eng_cache_ent *ref;
    const uint8_t *d = eng__cache_get(cache, owner * 7, col, &ref);
    if (!d)
        return false;
    bool same = d[0] == fill;
    eng__cache_release(cache, ref);
    return same;
}

Test(cache, hits_misses_and_the_least_recently_used_goes_first)
{
    uint64_t bytes, hits, misses;
    cr_assert(eq(int, eng__cache_new(4000, &cache), 0));
    cr_assert(eng__cache_wants(cache, 1000));
    cr_assert(eng__cache_wants(cache, 1001) == false, "a quarter of the budget at most");
    cr_assert(has(1, 0, 0) == false);
    put(1, 0, 0x11, 1000);
    put(2, 0, 0x22, 1000);
    put(3, 0, 0x33, 1000);
    put(4, 0, 0x44, 1000);
    cr_assert(has(1, 0, 0x11)); /* 1 is now the most recent */
    put(5, 0, 0x55, 1000);      /* over budget: 2, the least recent, goes */
    cr_assert(has(2, 0, 0x22) == false);
    cr_assert(has(1, 0, 0x11) && has(3, 0, 0x33) && has(4, 0, 0x44) && has(5, 0, 0x55));
    eng__cache_stats(cache, &bytes, &hits, &misses);
    cr_assert(eq(u64, bytes, 4000));
    cr_assert(eq(u64, misses, 2));
    cr_assert(eq(u64, hits, 5));
}

Test(cache, an_entry_in_use_outlives_eviction_and_drops)
{
    eng_cache_ent *ref, *ref2;
    uint8_t buf[1000];
    cr_assert(eq(int, eng__cache_new(2000, &cache), 0));
    memset(buf, 0x77, sizeof buf);
    const uint8_t *held = eng__cache_put(cache, 9, 63, 3, buf, sizeof buf, &ref);
    cr_assert(held != NULL);
    /* push far past the budget: the held entry cannot go, the others make room */
    for (uint64_t o = 10; o < 20; o++)
        put(o, 3, (uint8_t)o, 500);
    cr_assert(eq(u8, held[999], 0x77), "still readable");
    /* its segment leaves the catalog while it is read: gone from the cache, freed at release */
    eng__cache_drop_file(cache, 9);
    cr_assert(eng__cache_get(cache, 63, 3, &ref2) == NULL);
    cr_assert(eq(u8, held[0], 0x77), "still readable until released");
    eng__cache_release(cache, ref);
    uint64_t bytes, hits, misses;
    eng__cache_stats(cache, &bytes, &hits, &misses);
    cr_assert(bytes <= 2000, "the budget holds once nothing is in use: %" PRIu64, bytes);
}

Test(cache, drop_takes_every_column_and_tag_of_a_segment)
{
    cr_assert(eq(int, eng__cache_new(1u << 20, &cache), 0));
    put(1, 0, 1, 100);
    put(1, 5, 2, 100);
    put(1, ENG_CACHE_TAG | 12345, 3, 100);
    put(2, 5, 4, 100);
    eng__cache_drop_file(cache, 1);
    cr_assert(has(1, 0, 1) == false && has(1, 5, 2) == false &&
              has(1, ENG_CACHE_TAG | 12345, 3) == false);
    cr_assert(has(2, 5, 4), "another segment's columns stay");
}

Test(cache, a_second_put_of_the_same_column_replaces_the_first)
{
    cr_assert(eq(int, eng__cache_new(1u << 20, &cache), 0));
    put(1, 2, 0xaa, 64);
    put(1, 2, 0xbb, 64);
    cr_assert(has(1, 2, 0xbb));
    uint64_t bytes, hits, misses;
    eng__cache_stats(cache, &bytes, &hits, &misses);
    cr_assert(eq(u64, bytes, 64), "one copy kept");
}

static void *hammer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    uint8_t buf[512];
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        uint64_t owner = (seed >> 8) % 64, col = (seed >> 4) % 4;
        eng_cache_ent *ref;
        const uint8_t *d = eng__cache_get(cache, owner * 7, col, &ref);
        if (d) {
            /* every byte of a column is its owner's mark: never another's, never freed */
            if (d[0] != (uint8_t)owner || d[511] != (uint8_t)owner)
                return (void *)1;
            eng__cache_release(cache, ref);
        } else {
            memset(buf, (uint8_t)owner, sizeof buf);
            if (eng__cache_put(cache, owner, owner * 7, col, buf, sizeof buf, &ref))
                eng__cache_release(cache, ref);
        }
        if (seed % 97 == 0)
            eng__cache_drop_file(cache, owner);
    }
    return NULL;
}

Test(cache, many_threads_at_once)
{
    pthread_t th[4];
    void *bad = NULL;
    cr_assert(eq(int, eng__cache_new(40 * 512, &cache), 0));
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert(eq(int, pthread_create(&th[i], NULL, hammer, (void *)(i + 1)), 0));
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad = r ? r : bad;
    }
    cr_assert(eq(ptr, bad, NULL), "a reader saw another column's bytes");
    uint64_t bytes, hits, misses;
    eng__cache_stats(cache, &bytes, &hits, &misses);
    cr_assert(bytes <= 40 * 512);
    cr_assert(hits > 0 && misses > 0);
}
