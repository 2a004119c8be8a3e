/* http/http_int.h — what the files of http/ share and nobody else sees. */
#ifndef HTTP_HTTP_INT_H
#define HTTP_HTTP_INT_H

#include "http/http.h"

/* The embedded files of http/www/, written by http/embed.sh at build time. */
extern const http_static_file http__www[];
extern const size_t http__www_n;

/* Constant-time equality of a secret and a guess: the time taken depends only on the secret's
 * length, never on where the first difference is. */
bool http__secret_eq(const char *secret, const char *guess);

/* A pool of max_running query threads. http__guard_run() queues fn(arg) there and waits at
 * most timeout_ms for it. Returns 0 when fn finished in time (the caller owns arg; done is not
 * called). -ETIMEDOUT when the wait timed out: fn then still runs to its end (or, if it had not
 * started, never runs) and the pool calls done(arg), which must free arg; the caller must not
 * touch arg again. -EAGAIN when max_running calls are already queued or running (fn is not
 * run). http__guard_free() lets every queued call end, then stops the pool (at shutdown, before
 * what the calls use goes away). */
typedef struct http_guard http_guard;
int http__guard_new(unsigned max_running, http_guard **out);
int http__guard_run(http_guard *g, void (*fn)(void *), void (*done)(void *), void *arg,
                    unsigned timeout_ms);
void http__guard_free(http_guard *g); /* NULL is fine */

#endif
