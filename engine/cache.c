/* engine/cache.c — decoded columns of sealed segments, kept between queries.
 *
 * Decoding a column (zstd, then planes or varints back into values) is most of what a small
 * query costs, and the Flows Window asks the same segments again and again (auto-refresh,
 * several operators on one busy device). Sealed segments never change, so their decoded
 * columns can be kept: keyed by (segment file, column), bounded in bytes, least recently used
 * first out. Entries in use by a scan are referenced and never freed under it; a segment that
 * leaves the catalog (deleted, merged, quarantined) has its entries dropped. */
#include "engine/store_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <xxhash.h>

#define CACHE_BUCKETS 4096u /* chains stay short: entries are megabytes, the budget megabytes */

struct eng_cache_ent {
    uint64_t file;  /* the segment's name and the file's identity (a rewritten file misses) */
    uint64_t owner; /* the segment's name alone: what eng__cache_drop_file() matches */
    uint64_t col;   /* a column, or another tag of the file (engine/store_int.h) */
    uint32_t refs;
    bool dead; /* dropped while in use: freed by the last release */
    size_t len;
    uint8_t *data;
    struct eng_cache_ent *hnext;       /* hash chain */
    struct eng_cache_ent *prev, *next; /* LRU list, most recent first */
};

struct eng_cache {
    pthread_mutex_t mu;
    size_t budget, used;
    uint64_t hits, misses;
    eng_cache_ent *buckets[CACHE_BUCKETS];
    eng_cache_ent *head, *tail;
};

uint64_t eng__cache_file_id(const char *name)
{
    return XXH3_64bits(name, strlen(name));
}

uint64_t eng__cache_file_key(uint64_t owner, uint64_t ident)
{
    uint64_t k[2] = {owner, ident};
    return XXH3_64bits(k, sizeof k);
}

int eng__cache_new(size_t budget, eng_cache **out)
{
    eng_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NS_E_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    c->budget = budget;
    *out = c;
    return 0;
}

static size_t bucket_of(uint64_t file, uint64_t col)
{
    return (size_t)((file ^ (uint64_t)col * 0x9e3779b97f4a7c15ull) % CACHE_BUCKETS);
}

static void lru_unlink(eng_cache *c, eng_cache_ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(eng_cache *c, eng_cache_ent *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void hash_unlink(eng_cache *c, eng_cache_ent *e)
{
    eng_cache_ent **p = &c->buckets[bucket_of(e->file, e->col)];
    while (*p && *p != e)
        p = &(*p)->hnext;
    if (*p)
        *p = e->hnext;
    e->hnext = NULL;
}

static void ent_free(eng_cache_ent *e)
{
    free(e->data);
    free(e);
}

/* Takes e out of the cache: freed now, or by its last user. */
static void remove_locked(eng_cache *c, eng_cache_ent *e)
{
    hash_unlink(c, e);
    lru_unlink(c, e);
    c->used -= e->len;
    if (e->refs)
        e->dead = true;
    else
        ent_free(e);
}

static void evict_locked(eng_cache *c)
{
    eng_cache_ent *e = c->tail;
    while (e && c->used > c->budget) {
        eng_cache_ent *prev = e->prev;
        if (!e->refs)
            remove_locked(c, e);
        e = prev;
    }
}

void eng__cache_free(eng_cache *c)
{
    if (!c)
        return;
    while (c->head)
        remove_locked(c, c->head); /* no scan runs any more: nothing is referenced */
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const uint8_t *eng__cache_get(eng_cache *c, uint64_t file, uint64_t col, eng_cache_ent **ref)
{
    const uint8_t *data = NULL;
    *ref = NULL;
    if (!c)
        return NULL;
    pthread_mutex_lock(&c->mu);
    for (eng_cache_ent *e = c->buckets[bucket_of(file, col)]; e; e = e->hnext)
        if (e->file == file && e->col == col) {
            e->refs++;
            lru_unlink(c, e);
            lru_push_front(c, e);
            *ref = e;
            data = e->data;
            break;
        }
    if (data)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->mu);
    return data;
}

bool eng__cache_wants(const eng_cache *c, size_t len)
{
    return c && c->budget && len <= c->budget / 4; /* one column may not empty the cache */
}

const uint8_t *eng__cache_put(eng_cache *c, uint64_t owner, uint64_t file, uint64_t col,
                              const uint8_t *data, size_t len, eng_cache_ent **ref)
{
    eng_cache_ent *e = calloc(1, sizeof *e);
    *ref = NULL;
    if (!e || !(e->data = malloc(len ? len : 1))) {
        free(e);
        return NULL; /* not cached: the caller reads its own copy */
    }
    memcpy(e->data, data, len);
    e->file = file;
    e->owner = owner;
    e->col = col;
    e->len = len;
    e->refs = 1;
    pthread_mutex_lock(&c->mu);
    size_t b = bucket_of(file, col);
    for (eng_cache_ent *o = c->buckets[b]; o; o = o->hnext)
        if (o->file == file && o->col == col) { /* another scan put it first */
            remove_locked(c, o);
            break;
        }
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push_front(c, e);
    c->used += len;
    evict_locked(c);
    pthread_mutex_unlock(&c->mu);
    *ref = e;
    return e->data;
}

void eng__cache_release(eng_cache *c, eng_cache_ent *e)
{
    if (!c || !e)
        return;
    pthread_mutex_lock(&c->mu);
    e->refs--;
    bool gone = e->dead && e->refs == 0;
    if (!gone && c->used > c->budget)
        evict_locked(c); /* entries that were in use when the budget was passed */
    pthread_mutex_unlock(&c->mu);
    if (gone)
        ent_free(e);
}

void eng__cache_drop_file(eng_cache *c, uint64_t owner)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    for (eng_cache_ent *e = c->head, *next; e; e = next) {
        next = e->next;
        if (e->owner == owner)
            remove_locked(c, e);
    }
    pthread_mutex_unlock(&c->mu);
}

void eng__cache_stats(eng_cache *c, uint64_t *bytes, uint64_t *hits, uint64_t *misses)
{
    *bytes = *hits = *misses = 0;
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *bytes = c->used;
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}
