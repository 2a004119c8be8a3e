/* http/static.c — the Flows Window page: the files of http/www/, embedded in the binary by
 * http/embed.sh, looked up by exact name. Nothing here opens a file, so no request path (with
 * "..", "%2e", "//" or anything else) can reach outside the table. */
#include "http/http_int.h"

#include <stdio.h>
#include <xxhash.h>

const http_static_file *http_static_find(const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < http__www_n; i++)
        if (strcmp(http__www[i].name, path) == 0)
            return &http__www[i];
    return NULL;
}

const char *http_static_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

void http_static_etag(const http_static_file *f, char *buf, size_t cap)
{
    /* a hash of the bytes: a new build with the same page keeps browsers' caches valid */
    snprintf(buf, cap, "\"%016llx\"", (unsigned long long)XXH3_64bits(f->data, f->len));
}
