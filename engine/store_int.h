/* engine/store_int.h — internals shared between the store's own files. Not for other modules. */
#ifndef ENG_STORE_INT_H
#define ENG_STORE_INT_H

#include "engine/store.h"

/* fsyncs the folder holding path, so a rename in it is durable. */
int eng__fsync_dir_of(const char *path);

/* eng_seg_write with a chosen format version (2 or 3): tests write version 2 files with it to
 * check that they are still read. */
int eng__seg_write_version(const char *path, const eng_flow *rows, size_t n, uint32_t version);

/* eng_seg_write of the rows chunks[perm[k] >> shift][perm[k] & (2^shift - 1)], k < n: the
 * sealer's rows, sorted by a permutation, gathered a block at a time as they are encoded. */
int eng__seg_write_perm(const char *path, eng_flow *const *chunks, unsigned shift,
                        const uint32_t *perm, size_t n);

/* Frees the calling thread's segment-writing scratch (kept between eng_seg_write calls). */
void eng__seg_write_release(void);

#endif
