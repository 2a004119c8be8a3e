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
} eng_colset;
/* Reads, checks and decodes the columns of s in colmask into cs (a column the file predates
 * reads as zeros). 0, or NS_E_CORRUPT / NS_E_NOMEM / -errno. */
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

#endif
