/* ingest/offline.c — captures into the store without sockets: for tests, for back-filling, and
 * for measuring the decoders alone. Same decoders, same exporter table, same store. */
#include "ingest/ingest.h"

#include <stdio.h>
#include <stdlib.h>

/* Rows decoded before they are handed to the store: the WAL encoding and the open minute's
 * copy then read them from L2 (8192 rows are 1.2 MB); 32768 (4.7 MB) came from L3. */
#define ROW_BATCH 8192
#define ROW_ROOM  2048 /* a batch with less room left is flushed before the next datagram */

typedef struct off_flush {
    eng_db *db;
    int64_t recv_ms;
    ing_offline_stats *st;
} off_flush;

static int store_rows(void *arg, const eng_flow *rows, size_t n)
{
    off_flush *fa = arg;
    /* waits for sealing when unsealed_memory is full: a capture can be replayed again, but
     * nothing is lost by waiting (eng_db_append, the listener's, drops instead) */
    if (n && eng_db_append_wait(fa->db, fa->recv_ms, rows, n) < 0)
        fa->st->store_dropped += n;
    return 0;
}

int ing_offline(eng_db *db, ing_exporters *ex, const char *const *paths, size_t npaths,
                const ing_offline_opts *o, ing_offline_stats *st, char *err, size_t errcap)
{
    off_flush fa = {.db = db, .recv_ms = 0, .st = st};
    ing_batch b = {.rows = malloc(ROW_BATCH * sizeof(eng_flow)),
                   .n = 0,
                   .cap = ROW_BATCH,
                   .flush = store_rows,
                   .flush_arg = &fa};
    int rc = 0;
    memset(st, 0, sizeof *st);
    if (!b.rows)
        return NS_E_NOMEM;
    for (size_t i = 0; i < npaths && rc == 0; i++) {
        ing_pcap *p;
        ing_udp u;
        int64_t batch_ms = 0;
        if ((rc = ing_pcap_open(paths[i], &p, err, errcap)) < 0)
            break;
        st->files++;
        while ((rc = ing_pcap_next(p, &u, err, errcap)) == 1) {
            bool want = o == NULL || o->ndports == 0;
            for (size_t k = 0; !want && k < o->ndports; k++)
                want = u.dport == o->dports[k];
            if (!want) {
                st->skipped++;
                continue;
            }
            int64_t recv_ms = u.ts_us / 1000;
            /* one append per minute of capture time, as the listener does per receive burst */
            bool new_minute = recv_ms / 60000 != batch_ms / 60000;
            if (b.n && (new_minute || b.cap - b.n < ROW_ROOM))
                ing_batch_flush(&b);
            /* capture time is the clock here: seal minutes as it passes them, so a capture of
             * any length streams through memory instead of piling up in open minutes */
            if (new_minute && batch_ms && eng_db_seal_due(db, recv_ms, false) < 0)
                st->seal_errors++;
            batch_ms = recv_ms;
            fa.recv_ms = recv_ms;
            st->datagrams++;
            int n = ing_decode(ex, &u.src, recv_ms, u.payload, u.len, &b);
            if (n == ING_E_BATCH) {
                ing_batch_flush(&b);
                n = ing_decode(ex, &u.src, recv_ms, u.payload, u.len, &b);
            }
            if (n < 0)
                st->decode_errors++;
            else
                st->flows += (uint64_t)n;
            if (o && o->progress && (st->datagrams & 0xffff) == 0)
                o->progress(o->progress_arg, paths[i], st->datagrams, st->flows);
        }
        ing_batch_flush(&b);
        ing_pcap_close(p);
        if (rc == 0 && o && o->progress)
            o->progress(o->progress_arg, paths[i], st->datagrams, st->flows);
    }
    free(b.rows);
    return rc < 0 ? rc : 0;
}
