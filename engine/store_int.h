/* engine/store_int.h — internals shared between the store's own files. Not for other modules. */
#ifndef ENG_STORE_INT_H
#define ENG_STORE_INT_H

#include "engine/store.h"

/* fsyncs the folder holding path, so a rename in it is durable. */
int eng__fsync_dir_of(const char *path);

/* eng_seg_write with a chosen format version (2 or 3): tests write version 2 files with it to
 * check that they are still read. */
int eng__seg_write_version(const char *path, const eng_flow *rows, size_t n, uint32_t version);

/* The decoded columns of one segment: the scan's fast path. Each column in mask is an array of
 * n values of the column's width (8 for times and counters, 16 for addresses, 4, 2 or 1 for the
 * rest) in little-endian byte order. Buffers grow to the largest segment read and are kept for
 * the next one; a zeroed eng_colset is empty; release with eng__colset_free(). */
typedef struct eng_colset {
    size_t n;      /* rows */
    uint32_t mask; /* columns decoded (ENG_COL_LAST brings ENG_COL_FIRST) */
    uint8_t *col[ENG_NCOLS];
    size_t cap[ENG_NCOLS];
    uint8_t *raw, *comp; /* decompression scratch */
    size_t rawcap, compcap;
    void *zdctx; /* a ZSTD_DCtx kept for the set's reads (ZSTD_decompress allocates one a call) */
    /* the dictionary-coded columns among them (src, dst): dict[c] is valid when dmask has c;
     * those also in dict_only (set by the caller) are not expanded into col[c] */
    uint32_t dmask, dict_only;
    eng_coldict dict[ENG_NCOLS];
    uint8_t *dvals[ENG_NCOLS];
    uint32_t *dcodes[ENG_NCOLS];
    size_t dvcap[ENG_NCOLS], dccap[ENG_NCOLS];
    /* the columns of planes_ok (set by the caller) left as byte planes (pmask): praw[c] holds
     * their decompressed planes, col[c] is not written */
    uint32_t pmask, planes_ok;
    uint8_t *praw[ENG_NCOLS];
    size_t prawcap[ENG_NCOLS];
} eng_colset;
/* Reads, checks and decodes the columns of s in colmask into cs (a column the file predates
 * reads as zeros). The flows column of a raw segment (every row one flow) is checked but left
 * out of cs->mask: a row without it counts one flow. 0, or NS_E_CORRUPT / NS_E_NOMEM /
 * -errno. */
int eng__seg_load_cols(eng_seg *s, uint32_t colmask, eng_colset *cs);
/* Rows idx[0..cnt) of the set (idx NULL: rows from..from+cnt) into rows[0..cnt), the columns
 * not in the set zero. */
void eng__colset_rows(const eng_colset *cs, const uint32_t *idx, size_t from, size_t cnt,
                      eng_flow *rows);
void eng__colset_free(eng_colset *cs);
/* The columns in mask of rows[0..n) into cs (the open minutes' rows, for column callbacks). */
int eng__colset_from_rows(eng_colset *cs, const eng_flow *rows, size_t n, uint32_t mask);
/* The rows set in sel (n rows, as eng_seg_select fills it) into idx, ascending; their count. */
size_t eng__sel_rows(const uint64_t *sel, size_t n, uint32_t *idx);

/* The decoded-column cache (engine/cache.c): thread-safe; a NULL cache caches nothing. */
typedef struct eng_cache eng_cache;
typedef struct eng_cache_ent eng_cache_ent;
int eng__cache_new(size_t budget_bytes, eng_cache **out);
void eng__cache_free(eng_cache *c);
/* Entries are keyed by the file: its segment name (eng__cache_file_id, the owner a drop
 * matches) mixed with the identity of the file on disk (eng__seg_ident: inode, size, mtime), so
 * that a file changed behind the daemon's back is read, and checked, again. */
uint64_t eng__cache_file_id(const char *segment_name);
uint64_t eng__cache_file_key(uint64_t owner, uint64_t ident);
/* The identity of an open segment's file (0 for one read from memory), and of a file stat()
 * describes: the same value for the same inode, size and modification time. */
uint64_t eng__seg_ident(const eng_seg *s);
struct stat;
uint64_t eng__stat_ident(const struct stat *st);
/* Entry col of file: its data and a reference (release it), or NULL. col is a column
 * (< ENG_NCOLS) or a tag with ENG_CACHE_TAG set (the index's answer for some addresses). */
#define ENG_CACHE_TAG (1ull << 63)
const uint8_t *eng__cache_get(eng_cache *c, uint64_t file, uint64_t col, eng_cache_ent **ref);
/* Whether a column of len bytes is worth keeping (small enough for the budget). */
bool eng__cache_wants(const eng_cache *c, size_t len);
/* Keeps a copy of data[0..len) as column col of file: the copy and a reference, or NULL (no
 * memory: nothing kept). */
const uint8_t *eng__cache_put(eng_cache *c, uint64_t owner, uint64_t file, uint64_t col,
                              const uint8_t *data, size_t len, eng_cache_ent **ref);
void eng__cache_release(eng_cache *c, eng_cache_ent *ref);
/* Forgets the columns of the segment named owner (it left the catalog). */
void eng__cache_drop_file(eng_cache *c, uint64_t owner);
void eng__cache_stats(eng_cache *c, uint64_t *bytes, uint64_t *hits, uint64_t *misses);
/* eng_seg_write of the rows chunks[perm[k] >> shift][perm[k] & (2^shift - 1)], k < n: the
 * sealer's rows, sorted by a permutation, gathered a block at a time as they are encoded. */
int eng__seg_write_perm(const char *path, eng_flow *const *chunks, unsigned shift,
                        const uint32_t *perm, size_t n);
/* eng__seg_write_perm (perm NULL: the rows in order) through the writer's reference paths
 * only, none of its fast ones (the SSE2 encoder, ...): the tests compare the bytes. */
int eng__seg_write_ref(const char *path, eng_flow *const *chunks, unsigned shift,
                       const uint32_t *perm, size_t n);
/* The sealer's sort: perm[0..n) gets the rows chunks[i >> shift][i & (2^shift - 1)], i < n, in
 * (source address, first_ms) order, ties in row order. general: the general path only (the
 * tests' reference for the narrow-key one). 1 when the narrow-key sort did it, 0 when the
 * general one did, or NS_E_NOMEM. */
int eng__seal_sort(eng_flow *const *chunks, unsigned shift, size_t n, uint32_t *perm, bool general);

/* Decodes one column's bytes after decompression (raw, rsize) in encoding enc for n rows into
 * out (n values of the column's width), with the checks a segment read makes; exporters is the
 * decoded exporter column, which a source_id coded by exporter needs. For the decoders' tests. */
int eng__col_decode_raw(eng_col c, uint32_t enc, const uint8_t *raw, size_t rsize, size_t n,
                        const uint8_t *exporters, uint8_t *out);
/* The same for column c coded by its address's dictionary (encoding 6, version 7): key is
 * that address column's decoded dictionary (its values and n rows' codes). */
int eng__col_decode_byaddr(eng_col c, const uint8_t *raw, size_t rsize, size_t n,
                           const eng_coldict *key, uint8_t *out);

/* Frees the calling thread's segment-writing scratch (kept between eng_seg_write calls). */
void eng__seg_write_release(void);

#endif
