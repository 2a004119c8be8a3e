/* engine/query_int.h — test hooks of engine/query.c. Not for other modules. */
#ifndef QRY_QUERY_INT_H
#define QRY_QUERY_INT_H

#include <stddef.h>
#include <stdint.h>

/* The first of keys[j..n) (each its high and low 64 bits; ascending as 128-bit numbers) that is
 * not below (hi, lo), n when none is, j when j >= n: the search the conversations path uses to
 * find each dictionary value among the addresses it has met. SIZE_MAX when out of memory. */
size_t qry__known_seek(const uint64_t (*keys)[2], size_t n, size_t j, uint64_t hi, uint64_t lo);

#endif
