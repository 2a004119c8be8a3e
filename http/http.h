/* http/http.h — the HTTP API (libmicrohttpd): /api/v1/status, /api/v1/summary, /api/v1/top,
 * /api/v1/exporters, /metrics (Prometheus text). Answers JSON; /api/v1/top also CSV. Every bad
 * parameter gets a 400 with
 * {"error": "..."} naming it. Knows nothing of packets or segment internals: what the daemon
 * wants to add about ingest arrives through callbacks. */
#ifndef HTTP_HTTP_H
#define HTTP_HTTP_H

#include "engine/query.h"

/* Appends JSON for the daemon's own parts. For status_extra: zero or more `"key":value`
 * members, each preceded by a comma. For exporters: one JSON array. */
typedef void (*http_json_fn)(void *arg, ns_buf *out);

/* Another place to answer /api/v1/summary, /top and /series from (query_backend =
 * clickhouse): the same contracts as qry_summary, qry_top and qry_series, with the filter as
 * text (NULL when absent; the route has already checked its syntax). error names the cause of
 * the last failure on the calling thread, for the 502 answer. */
typedef struct http_backend {
    void *arg;
    int (*summary)(void *arg, int64_t from_ms, int64_t to_ms, const char *filter, qry_totals *out);
    int (*top)(void *arg, int64_t from_ms, int64_t to_ms, const char *filter, qry_by by,
               qry_metric metric, size_t limit, qry_top_result *out);
    int (*series)(void *arg, int64_t from_ms, int64_t step_ms, size_t nbuckets, const char *filter,
                  qry_totals *buckets);
    const char *(*error)(void);
} http_backend;

typedef struct http_opts {
    const char *listen; /* "ADDR:PORT" or "[V6]:PORT" */
    eng_db *db;         /* borrowed; must outlive the server */
    int64_t start_ms;   /* daemon start, for uptime */
    http_json_fn status_extra;
    void *status_arg;
    http_json_fn exporters;
    void *exporters_arg;
    http_json_fn metrics; /* appends Prometheus text for /metrics (ingest's series) */
    void *metrics_arg;
    unsigned threads;            /* worker threads (0: 4) */
    size_t max_limit;            /* largest `limit` accepted (0: 10000) */
    const http_backend *backend; /* NULL: the embedded store answers every query */
} http_opts;

typedef struct http_server http_server;

/* Binds and starts serving. The opts are copied (the strings they point to are borrowed). */
int http_start(const http_opts *o, http_server **out, char *err, size_t errcap);
/* Stops accepting, finishes running requests, frees. NULL is fine. */
void http_stop(http_server *s);

/* One query parameter. */
typedef struct http_kv {
    const char *key;
    const char *val;
} http_kv;

/* Routes one request without any socket (the server calls it; tests and the fuzz target call it
 * directly). Fills body and *content_type (static string) and returns the HTTP status. */
int http_dispatch(const http_opts *o, const char *method, const char *path, const http_kv *params,
                  size_t nparams, ns_buf *body, const char **content_type);
/* The same, for a client that asked for CSV (Accept: text/csv): list endpoints then answer CSV
 * unless format= says otherwise. */
int http_dispatch_ex(const http_opts *o, const char *method, const char *path,
                     const http_kv *params, size_t nparams, bool prefer_csv, ns_buf *body,
                     const char **content_type);

#endif
