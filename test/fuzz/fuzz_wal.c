/* Fuzz target: the write-ahead log reader (eng__wal_read) on arbitrary file contents. A WAL file
 * is read at start-up from a folder that a crash, a full disk or a bad sector may have left in
 * any state. The reader must hand on whole good records only, stop at the first torn or corrupt
 * one, and say where: rows handed on must match the records and rows it reports, and the good
 * part it reports must lie inside the file. Each input is read twice: as it is, and with every
 * record's checksum made right again (eng__wal_rec_checksum), because a mutated byte almost
 * never passes a checksum and the fuzzer would otherwise never reach the row decoders. The bytes
 * go through a memfd, so the reader's own file path runs. */
#include "engine/wal_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    uint64_t calls, rows;
} seen;

static int on_rows(void *arg, int64_t recv_ms, const eng_flow *rows, size_t n)
{
    seen *s = arg;
    volatile uint64_t sink = 0;
    (void)recv_ms;
    if (n == 0)
        abort(); /* a callback always carries rows */
    for (size_t i = 0; i < n; i++)
        sink += rows[i].bytes + rows[i].packets; /* touch every row: ASan checks the buffer */
    (void)sink;
    s->calls++;
    s->rows += n;
    return 0;
}

/* Makes each record's checksum right, as far as the records' lengths stay inside the file. */
static void fix_checksums(uint8_t *b, size_t size)
{
    if (size < ENG_WAL_HDR)
        return;
    uint32_t version = ns_get_le32(b + 8);
    size_t off = ENG_WAL_HDR;
    while (size - off >= ENG_WAL_REC_HDR) {
        uint8_t *h = b + off;
        uint64_t len = ns_get_le32(h);
        if (len > size - off - ENG_WAL_REC_HDR)
            return;
        ns_put_le64(h + 16, eng__wal_rec_checksum(version, h, h + ENG_WAL_REC_HDR, (size_t)len));
        off += ENG_WAL_REC_HDR + (size_t)len;
    }
}

static void read_wal(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_wal", MFD_CLOEXEC);
    if (fd < 0)
        return;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return;
        }
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    seen s = {0, 0};
    eng__wal_scan sc;
    int rc = eng__wal_read(path, on_rows, &s, &sc);
    close(fd);
    if (rc != 0) {
        if (s.calls) /* a bad file header is refused before any row */
            abort();
        return;
    }
    /* every row handed on is counted in a good record, and the good part is inside the file */
    if (s.rows != sc.rows || sc.good_len < ENG_WAL_HDR || sc.good_len > sc.file_len ||
        sc.file_len != size || (sc.records == 0) != (sc.rows == 0))
        abort();
    if (sc.tail_rc == 0 && sc.good_len != sc.file_len)
        abort(); /* a clean end reads the file to its last byte */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (4u << 20))
        return 0;
    read_wal(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    fix_checksums(copy, size);
    read_wal(copy, size);
    free(copy);
    return 0;
}
