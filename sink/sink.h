/* sink/sink.h — the ClickHouse sink: decoded flows are batched, encoded as RowBinary, written
 * to a spool file under SESSIONDB/spool (fsync) and then POSTed over HTTP to one of the
 * shards; the file is removed after a 200. Also answers summary, top-N and series queries with
 * SQL against the Distributed table, for query_backend = clickhouse.
 *
 * Threads: snk_append() may be called from any number of ingest threads and never waits for
 * disk or network (it copies rows into the open batch under a short mutex). One spool thread
 * cuts batches and writes spool files; one sender thread per shard POSTs them. The query
 * functions are thread-safe. docs/CLICKHOUSE.md describes the table, the spool and the retry
 * rules. Depends on engine/ only (and libcurl). */
#ifndef SNK_SINK_H
#define SNK_SINK_H

#include "engine/query.h"

/* Errors of the sink (one code per cause). */
enum {
    SNK_E_HTTP = -12001,    /* the server answered an error status */
    SNK_E_CONNECT = -12002, /* no connection (nothing was sent) */
    SNK_E_IO = -12003,      /* the transfer broke off (the server may have the data) */
    SNK_E_ANSWER = -12004,  /* an answer that does not parse */
    SNK_E_FILTER = -12005,  /* a filter the ClickHouse backend cannot translate */
    SNK_E_NOSHARD = -12006, /* no shard answered */
};
const char *snk_strerror(int rc);

/* One flow in RowBinary, the column order of docs/CLICKHOUSE.md's table: integers
 * little-endian, addresses as FixedString(16) in network order (IPv4 mapped), recv_time as
 * DateTime (UInt32 epoch seconds). */
#define SNK_ROW_BYTES 145
void snk_encode_row(uint8_t *dst, uint64_t batch_id, int64_t recv_ms, const eng_flow *f);

typedef struct snk_opts {
    const char *const *urls; /* base URL of each shard: "http://127.0.0.1:8123/" */
    size_t nurls;
    const char *table;      /* local table on each shard; queries read <table>_all */
    const char *spool_dir;  /* created if absent; rejected/ inside it */
    uint64_t batch_rows;    /* cut a batch at this many rows (<= 1000000) */
    uint64_t batch_ms;      /* or this long after its first row */
    uint64_t spool_max;     /* bytes of spool files kept (rejected/ included); past it the oldest
                             * rejected file goes first, then the oldest waiting batch */
    uint64_t retry_min_ms;  /* backoff after a failure: doubles from this... (0: 250) */
    uint64_t retry_max_ms;  /* ...up to this (0: 8000) */
    uint64_t timeout_ms;    /* one HTTP request at most (0: 60000) */
    bool no_sender_threads; /* tests: only spool, never send */
} snk_opts;

typedef struct snk_sink snk_sink;

/* Opens the spool (batches left by a previous run are queued first), starts the spool thread
 * and one sender per shard. On success *out owns the sink; release it with snk_close(). */
int snk_open(const snk_opts *o, snk_sink **out, char *err, size_t errcap);
/* Cuts the open batch, spools what is in memory, stops the threads (a request in flight is
 * broken off; its batch stays spooled and is checked before it is sent again). NULL is fine. */
void snk_close(snk_sink *s);

/* Copies rows received at recv_ms into the open batch. Never blocks on disk or network: when
 * the spool thread is too far behind, the rows are dropped and counted (mem_dropped_rows).
 * The signature is engine/store.h's eng_tap_fn, so the daemon hands it to eng_db_set_tap. */
void snk_append(void *sink, int64_t recv_ms, const eng_flow *rows, size_t n);
/* Cuts the open batch now and waits until it is in the spool (tests, shutdown). */
void snk_flush(snk_sink *s);

typedef struct snk_stats {
    uint64_t rows_in;          /* rows given to snk_append */
    uint64_t mem_dropped_rows; /* rows dropped before reaching the spool */
    uint64_t batches_spooled;  /* spool files written */
    uint64_t spool_batches;    /* spool files now waiting */
    uint64_t spool_bytes;
    uint64_t spool_max;
    uint64_t spool_errors;    /* spool files that could not be written (rows dropped) */
    uint64_t dropped_batches; /* oldest batches removed to keep under spool_max, and spool
                               * files that vanished before they were sent */
    uint64_t dropped_rows;
    uint64_t batches_sent; /* acknowledged with a 200 */
    uint64_t rows_sent;
    uint64_t batches_found; /* a retried batch the shard already had: not sent again */
    uint64_t retries;       /* failed attempts */
    uint64_t rejected_batches;
    uint64_t rejected_rows;
    uint64_t rejected_bytes;   /* files now in spool/rejected/ (they count in spool_max too) */
    uint64_t rejected_dropped; /* rejected files removed to keep under spool_max */
    uint64_t open_rows;        /* rows in memory not yet spooled */
} snk_stats;
void snk_get_stats(snk_sink *s, snk_stats *st);
/* Appends `"clickhouse":{...}` (counters and each shard's state) as a JSON member. */
void snk_json(snk_sink *s, ns_buf *out);
/* Appends the counters as Prometheus text. */
void snk_prometheus(snk_sink *s, ns_buf *out);

/* ---------------------------------------------------------------------------------------------
 * Queries against <table>_all on the first shard that answers, with the same answers as
 * engine/query.h's functions on the same rows. filter is the filter text (NULL: all); it is
 * compiled by the engine and its program (qry_filter_test) becomes one SQL expression, so every
 * primitive of docs/FILTERS.md works; a program whose SQL would pass 64 KiB is SNK_E_FILTER. */
int snk_query_summary(snk_sink *s, int64_t from_ms, int64_t to_ms, const char *filter,
                      qry_totals *out);
int snk_query_top(snk_sink *s, int64_t from_ms, int64_t to_ms, const char *filter, qry_by by,
                  qry_metric metric, size_t limit, qry_top_result *out);
int snk_query_series(snk_sink *s, int64_t from_ms, int64_t step_ms, size_t nbuckets,
                     const char *filter, qry_totals *buckets);
/* The text of the last query error (for the HTTP answer); valid until the next query on this
 * thread. */
const char *snk_query_error(void);

#endif
