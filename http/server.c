/* http/server.c — the libmicrohttpd side: binding, a worker thread pool, connection limits and
 * timeouts (a slow client cannot pin a worker), and the hand-off of each request to
 * http_dispatch(). */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#define MAX_PARAMS 32

struct http_server {
    struct MHD_Daemon *mhd;
    http_opts o;
};

typedef struct kv_collect {
    http_kv kv[MAX_PARAMS];
    size_t n;
    bool overflow;
} kv_collect;

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    kv_collect *c = cls;
    (void)kind;
    if (c->n == MAX_PARAMS) {
        c->overflow = true;
        return MHD_NO;
    }
    c->kv[c->n].key = key;
    c->kv[c->n].val = value;
    c->n++;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **state)
{
    http_server *s = cls;
    static int first_call_marker;
    kv_collect kv = {.n = 0};
    ns_buf body = {0};
    const char *ctype = "application/json";
    int status;
    (void)version;
    (void)upload_data;
    if (*state == NULL) {
        /* first call: headers only; answer on the second */
        *state = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* we take no bodies; drain and answer */
        return MHD_YES;
    }
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_kv, &kv);
    if (kv.overflow) {
        ns_buf_puts(&body, "{\"error\":\"too many parameters\"}\n");
        status = 400;
    } else {
        const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
        bool csv = accept && strstr(accept, "text/csv") != NULL;
        status = http_dispatch_ex(&s->o, method, url, kv.kv, kv.n, csv, &body, &ctype);
    }
    if (body.oom) {
        ns_buf_free(&body);
        return MHD_NO;
    }
    static char empty[1];
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(body.len, body.p ? body.p : empty, MHD_RESPMEM_MUST_COPY);
    ns_buf_free(&body);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (status == 405)
        MHD_add_response_header(resp, "Allow", "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decoding of the path and of every parameter, as libmicrohttpd's own except that "%00"
 * stays as it is: a decoded NUL would silently cut "/api/v1/status%00.json" or
 * "by=srcaddr%00junk" short to something valid. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *w = s;
    int hi, lo;
    (void)cls;
    (void)conn;
    for (const char *r = s; *r;) {
        if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    ns_log(NS_LOG_WARN, "http: %s", msg);
}

int http_start(const http_opts *o, http_server **out, char *err, size_t errcap)
{
    char host[64];
    uint16_t port;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY | MHD_USE_ERROR_LOG;
    if (ns_hostport_parse(o->listen, host, sizeof host, &port) < 0) {
        snprintf(err, errcap, "http listen '%s' is not ADDR:PORT", o->listen);
        return NS_E_PARSE;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (!host[0] || inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errcap, "http listen '%s': not an IP address", o->listen);
        return NS_E_PARSE;
    }
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return NS_E_NOMEM;
    s->o = *o;
    s->mhd = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(o->threads ? o->threads : 4), MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)0, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errcap, "http: cannot listen on %s (address in use or not available)",
                 o->listen);
        free(s);
        return -EADDRINUSE;
    }
    *out = s;
    return 0;
}

void http_stop(http_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
