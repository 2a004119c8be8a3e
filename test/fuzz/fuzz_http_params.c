/* Fuzz target: HTTP routing and parameter validation, without sockets. The input is read as
 * "path?k=v&k=v..." and dispatched against an empty database. Every answer must be a status
 * the API documents, with a body. */
#include "http/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static eng_db *db;
    static char dir[] = "/tmp/ns2flows-fuzz-http-XXXXXX";
    char text[4096], *params[32];
    http_kv kv[32];
    size_t nkv = 0;
    if (!db) {
        char err[256];
        eng_db_opts o = {.no_sealer_thread = true};
        ns_log_set_level(NS_LOG_ERROR);
        if (!mkdtemp(dir) || eng_db_open(dir, &o, &db, err, sizeof err) < 0)
            abort();
    }
    if (size >= sizeof text)
        size = sizeof text - 1;
    memcpy(text, data, size);
    text[size] = 0;
    char *q = strchr(text, '?');
    if (q) {
        *q++ = 0;
        for (char *save = NULL, *tok = strtok_r(q, "&", &save); tok && nkv < 32;
             tok = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(tok, '=');
            if (eq)
                *eq++ = 0;
            params[nkv] = tok;
            kv[nkv].key = params[nkv];
            kv[nkv].val = eq;
            nkv++;
        }
    }
    http_opts o = {.listen = "127.0.0.1:0", .db = db, .start_ms = 0};
    ns_buf body = {0};
    const char *ctype = NULL;
    int st = http_dispatch(&o, "GET", text, kv, nkv, &body, &ctype);
    if (st != 200 && st != 400 && st != 404 && st != 405)
        abort();
    if (!ctype || body.len == 0)
        abort();
    ns_buf_free(&body);
    return 0;
}
