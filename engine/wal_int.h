/* engine/wal_int.h — the write-ahead log's file format (engine/wal.c), for engine/db.c and the
 * tests. Not for other modules.
 *
 * One WAL file per open-minute buffer, SESSIONDB/wal/m<minute>-<seq>.wal; the segment that
 * seals the buffer gets the same name with .seg, so a WAL file whose segment exists is already
 * stored. Layout (fixed little-endian, docs/FORMAT.md has the tables):
 *
 *   file header (32 B): magic "NS2FWAL\0", version (2; 1 is still read), row size (0 in
 *   version 2: rows vary; 133 in version 1), minute (i64), seq (u64)
 *   records, back to back:
 *     OFFSET SIZE FIELD
 *     0      4    payload bytes
 *     4      4    rows (1 .. ENG_WAL_MAX_ROWS)
 *     8      8    recv_ms (signed)
 *     16     8    version 2: XXH3-64 of the payload followed by bytes 0..15;
 *                 version 1: XXH64 (seed 0) of bytes 0..15 followed by the payload
 *     24     ...  rows: version 2 ENG_WAL_ROW2_MIN .. ENG_WAL_ROW2_MAX bytes each, version 1
 *                 133 bytes each */
#ifndef ENG_WAL_INT_H
#define ENG_WAL_INT_H

#include "engine/store.h"

#define ENG_WAL_HDR      32u
#define ENG_WAL_REC_HDR  24u
#define ENG_WAL_ROW      133u /* version 1's row */
#define ENG_WAL_ROW2_MIN 70u  /* version 2's rows: every field in its short form */
#define ENG_WAL_ROW2_MAX 134u /* ... and in its long form */
#define ENG_WAL_VERSION  2u
#define ENG_WAL_MAX_ROWS (1u << 20) /* per record: a sanity cap for the reader */
#define ENG_WAL_DIR      "wal"

/* Bytes one record of n rows may take at most (what eng__wal_encode's out must hold). */
size_t eng__wal_rec_size(size_t n);

/* A record's checksum (the header's bytes 16..23): version 2, XXH3-64 of the payload then
 * header bytes 0..15; version 1, XXH64 (seed 0) of header bytes 0..15 then the payload. */
uint64_t eng__wal_rec_checksum(uint32_t version, const uint8_t *hdr16, const uint8_t *payload,
                               size_t len);

/* Encodes one version 2 record of rows[0..n) into out (eng__wal_rec_size(n) bytes of room);
 * returns the bytes it took. */
size_t eng__wal_encode(uint8_t *out, int64_t recv_ms, const eng_flow *rows, size_t n);
/* One version 1 row (ENG_WAL_ROW bytes) written field by field (tests write version 1 files
 * with it: they are still read). */
void eng__wal_row_encode_fields(uint8_t *p, const eng_flow *r);

/* Creates path (replacing a leftover) with its file header; *fd_out is open for writing.
 * Returns 0 or -errno (the file is then removed). */
int eng__wal_create(const char *path, int64_t minute, uint64_t seq, int *fd_out);

/* Writes len bytes at off; on failure cuts the file back to off so it stays a run of whole
 * records. Returns 0 or -errno. */
int eng__wal_write(int fd, uint64_t off, const void *buf, size_t len);

/* Parses "m<minute>-<seq>.wal". */
bool eng__wal_name_parse(const char *name, int64_t *minute, uint64_t *seq);

/* Called for each good record; rows are valid during the call only. Non-zero stops. */
typedef int (*eng__wal_cb)(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n);

typedef struct eng__wal_scan {
    int64_t minute; /* from the file header */
    uint64_t seq;
    uint32_t version;  /* of the file: appends go on only in files of ENG_WAL_VERSION */
    uint64_t good_len; /* bytes up to the end of the last good record (>= header) */
    uint64_t file_len;
    uint64_t records, rows;
    int tail_rc; /* 0 clean end; NS_E_TRUNC torn tail; NS_E_CORRUPT bad record */
} eng__wal_scan;

/* Reads the WAL file at path, calling cb for every good record up to the first torn or
 * corrupt one (where it stops: what follows cannot be trusted). Returns 0 (see sc->tail_rc
 * for how the file ended), NS_E_MAGIC / NS_E_VERSION / NS_E_TRUNC for a bad file header,
 * a callback's non-zero value, or -errno. */
int eng__wal_read(const char *path, eng__wal_cb cb, void *arg, eng__wal_scan *sc);

#endif
