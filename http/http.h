/* http/http.h — the HTTP API (libmicrohttpd): /api/v1/status, /api/v1/summary, /api/v1/top,
 * /api/v1/series, /api/v1/flows, /api/v1/devices/{addr}, /api/v1/exporters, /metrics
 * (Prometheus text), and the Flows Window page at / (files embedded from http/www/). Answers
 * JSON; list endpoints also CSV. Every bad parameter gets a 400 with {"error": "..."} naming
 * it. Optional basic auth and HTTPS; limits on range, rows and query time (docs/API.md).
 * Knows nothing of packets or segment internals: what the daemon wants to add about ingest
 * arrives through callbacks. */
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
    unsigned threads; /* worker threads (0: 4) */
    size_t max_limit; /* largest `limit` accepted (0: 10000) */
    /* Robustness limits (0: the default in brackets). */
    unsigned max_connections;  /* open connections at once (1000) */
    unsigned idle_timeout_s;   /* a connection silent this long is closed (30) */
    unsigned query_timeout_ms; /* an API answer not ready by then is a 503 (0: wait for ever) */
    int64_t max_range_ms;      /* widest range of held data one query may cover (0: no limit) */
    /* Optional basic auth on every path: both set, or neither. The password is the first line
     * of the file, read once by http_start(). */
    const char *user;
    const char *password_file;
    /* Optional HTTPS (libmicrohttpd with GnuTLS): PEM files, both set or neither. */
    const char *tls_cert;
    const char *tls_key;
    const http_backend *backend; /* NULL: the embedded store answers every query */
} http_opts;

typedef struct http_server http_server;

/* Binds and starts serving. The opts are copied (the strings they point to are borrowed).
 * Files named in the opts (password, certificate, key) are read here; a problem with one is an
 * error naming it in err. */
int http_start(const http_opts *o, http_server **out, char *err, size_t errcap);
/* Stops accepting, finishes running requests, frees. NULL is fine. */
void http_stop(http_server *s);

/* One query parameter. */
typedef struct http_kv {
    const char *key;
    const char *val;
} http_kv;

/* Routes one API request without any socket (the server calls it; tests and the fuzz target
 * call it directly). Fills body and *content_type (static string) and returns the HTTP status.
 * The page's files and basic auth are the server's business, before this is called. */
int http_dispatch(const http_opts *o, const char *method, const char *path, const http_kv *params,
                  size_t nparams, ns_buf *body, const char **content_type);
/* The same, for a client that asked for CSV (Accept: text/csv): list endpoints then answer CSV
 * unless format= says otherwise. */
int http_dispatch_ex(const http_opts *o, const char *method, const char *path,
                     const http_kv *params, size_t nparams, bool prefer_csv, ns_buf *body,
                     const char **content_type);

/* ---- the Flows Window page: files of http/www/ embedded at build time (http/static.c) ---- */
typedef struct http_static_file {
    const char *name; /* "/index.html": the path it is served at */
    const unsigned char *data;
    size_t len;
} http_static_file;

/* The embedded file served at path ("/" is "/index.html"), or NULL. Only names in the table
 * match, compared whole: no file system is touched, so no path can escape. */
const http_static_file *http_static_find(const char *path);
/* Content-Type for a file name, by its extension. */
const char *http_static_type(const char *name);
/* Writes the file's entity tag (a quoted hash of its bytes) into buf (at least 24 bytes). */
void http_static_etag(const http_static_file *f, char *buf, size_t cap);

#endif
