/* http/server.c — the libmicrohttpd side: binding (HTTP, or HTTPS through GnuTLS), a worker
 * thread pool, connection limits and idle timeouts (a slow client cannot pin a worker), basic
 * auth on every path, the embedded Flows Window files, and the hand-off of each API request to
 * http_dispatch() under a deadline. */
#include "http/http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define MAX_PARAMS   32
#define MAX_FILE     (1u << 20) /* password, certificate and key files */
#define REALM_HEADER "Basic realm=\"ns2flows\", charset=\"UTF-8\""
#define PAGE_CSP                                                                                   \
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "              \
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

struct http_server {
    struct MHD_Daemon *mhd;
    http_opts o;
    http_guard *guard; /* NULL without a query timeout */
    char *password;    /* first line of password_file; NULL without auth */
    char *tls_cert, *tls_key;
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

bool http__secret_eq(const char *secret, const char *guess)
{
    size_t ls = strlen(secret), lg = strlen(guess);
    volatile unsigned char d = ls != lg;
    /* walks the secret's length whatever the guess, reading the guess only within its own */
    for (size_t i = 0; i < ls; i++)
        d |= (unsigned char)(secret[i] ^ (i < lg ? guess[i] : 0));
    return d == 0;
}

/* True when the request carries the configured user and password. */
static bool authorized(const http_server *s, struct MHD_Connection *conn)
{
    bool ok;
#if MHD_VERSION >= 0x00097600
    struct MHD_BasicAuthInfo *ai = MHD_basic_auth_get_username_password3(conn);
    if (!ai)
        return false;
    /* a NUL inside either would cut the comparison short: refuse it */
    ok = ai->username && ai->password && strlen(ai->username) == ai->username_len &&
         strlen(ai->password) == ai->password_len;
    if (ok) {
        bool u = http__secret_eq(s->o.user, ai->username);
        bool p = http__secret_eq(s->password, ai->password);
        ok = u & p; /* both compared whatever the first gave */
    }
    MHD_free(ai);
#else
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(conn, &pass);
    ok = user && pass;
    if (ok) {
        bool u = http__secret_eq(s->o.user, user);
        bool p = http__secret_eq(s->password, pass);
        ok = u & p;
    }
    if (user)
        MHD_free(user);
    if (pass)
        MHD_free(pass);
#endif
    return ok;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *ctype,
                              const char *body, size_t len, enum MHD_ResponseMemoryMode mode,
                              const char *cache)
{
    static char empty[1];
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? (void *)(uintptr_t)body : empty, mode);
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", cache);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (status == 405)
        MHD_add_response_header(resp, "Allow", "GET, HEAD");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", REALM_HEADER);
    if (status == 503)
        MHD_add_response_header(resp, "Retry-After", "5");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result answer_error(struct MHD_Connection *conn, unsigned status, const char *json)
{
    return answer(conn, status, "application/json", json, strlen(json), MHD_RESPMEM_MUST_COPY,
                  "no-store");
}

/* One embedded file: 304 when the client's copy is current, else the bytes (none for HEAD). */
static enum MHD_Result serve_static(struct MHD_Connection *conn, const char *method,
                                    const http_static_file *f)
{
    char etag[32];
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer_error(conn, 405, "{\"error\":\"method not allowed; use GET\"}\n");
    http_static_etag(f, etag, sizeof etag);
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = inm && strstr(inm, etag) != NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        fresh ? 0 : f->len, (void *)(uintptr_t)f->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    const char *type = http_static_type(f->name);
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "ETag", etag);
    /* revalidate every time (a cheap 304): a new daemon build shows its new page at once */
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (strncmp(type, "text/html", 9) == 0) {
        MHD_add_response_header(resp, "Content-Security-Policy", PAGE_CSP);
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    }
    enum MHD_Result rc = MHD_queue_response(conn, fresh ? 304 : 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* One API request, with its own copies of everything it reads: a query given up on at the
 * deadline outlives the connection it came from. */
typedef struct api_job {
    const http_opts *o;
    const char *method, *url;
    http_kv kv[MAX_PARAMS];
    size_t n;
    bool csv;
    int64_t deadline_ms; /* the engine stops the query's scans here (0: never) */
    int status;
    const char *ctype;
    ns_buf body;
    char strings[]; /* method, url, keys and values, NUL-terminated one after the other */
} api_job;

static char *put_str(char **p, const char *s)
{
    char *start = *p;
    size_t l = strlen(s) + 1;
    memcpy(start, s, l);
    *p += l;
    return start;
}

static api_job *job_new(const http_opts *o, const char *method, const char *url,
                        const kv_collect *kv, bool csv)
{
    size_t need = strlen(method) + strlen(url) + 2;
    for (size_t i = 0; i < kv->n; i++)
        need += strlen(kv->kv[i].key) + (kv->kv[i].val ? strlen(kv->kv[i].val) : 0) + 2;
    api_job *j = calloc(1, sizeof *j + need);
    if (!j)
        return NULL;
    char *p = j->strings;
    j->o = o;
    j->csv = csv;
    j->ctype = "application/json";
    j->method = put_str(&p, method);
    j->url = put_str(&p, url);
    for (size_t i = 0; i < kv->n; i++) {
        j->kv[i].key = put_str(&p, kv->kv[i].key);
        j->kv[i].val = kv->kv[i].val ? put_str(&p, kv->kv[i].val) : NULL;
    }
    j->n = kv->n;
    return j;
}

static void job_run(void *arg)
{
    api_job *j = arg;
    /* a query given up on stops scanning at the deadline instead of running to its end */
    qry_set_deadline(j->deadline_ms);
    j->status = http_dispatch_ex(j->o, j->method, j->url, j->kv, j->n, j->csv, &j->body, &j->ctype);
    qry_set_deadline(0);
}

static void job_free(void *arg)
{
    api_job *j = arg;
    ns_buf_free(&j->body);
    free(j);
}

static enum MHD_Result serve_api(http_server *s, struct MHD_Connection *conn, const char *url,
                                 const char *method)
{
    kv_collect kv = {.n = 0};
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_kv, &kv);
    if (kv.overflow)
        return answer_error(conn, 400, "{\"error\":\"too many parameters\"}\n");
    const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
    bool csv = accept && strstr(accept, "text/csv") != NULL;
    api_job *j = job_new(&s->o, method, url, &kv, csv);
    if (!j)
        return MHD_NO;
    if (s->o.query_timeout_ms)
        j->deadline_ms = ns_now_ms() + s->o.query_timeout_ms;
    /* status, exporters and metrics read counters, not segments: they answer at once, even
     * when slow queries fill the pool (monitoring keeps working under load) */
    bool cheap = strcmp(url, "/api/v1/status") == 0 || strcmp(url, "/api/v1/exporters") == 0 ||
                 strcmp(url, "/metrics") == 0;
    if (!s->guard || cheap) {
        job_run(j);
    } else {
        int rc = http__guard_run(s->guard, job_run, job_free, j, s->o.query_timeout_ms);
        if (rc == -ETIMEDOUT) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "{\"error\":\"the query took longer than %u ms (http_query_timeout_ms); "
                     "narrow the time range or the filter\"}\n",
                     s->o.query_timeout_ms);
            return answer_error(conn, 503, msg); /* j now belongs to the query's thread */
        }
        if (rc == -EAGAIN) {
            job_free(j);
            return answer_error(conn, 503,
                                "{\"error\":\"too many slow queries still running; try again "
                                "later\"}\n");
        }
        if (rc < 0) {
            job_free(j);
            return answer_error(conn, 500, "{\"error\":\"cannot start the query\"}\n");
        }
    }
    enum MHD_Result r = MHD_NO;
    if (!j->body.oom)
        r = answer(conn, (unsigned)j->status, j->ctype, j->body.p, j->body.len,
                   MHD_RESPMEM_MUST_COPY, "no-store");
    job_free(j);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **state)
{
    http_server *s = cls;
    static int first_call_marker;
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
    if (s->password && !authorized(s, conn))
        return answer_error(conn, 401, "{\"error\":\"authentication required\"}\n");
    const http_static_file *f = http_static_find(url);
    if (f)
        return serve_static(conn, method, f);
    return serve_api(s, conn, url, method);
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

/* Reads a whole (small) file into a malloc'd NUL-terminated string. */
static int slurp(const char *what, const char *path, char **out, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (!f) {
        rc = -errno;
        snprintf(err, errcap, "%s '%s': %s", what, path, strerror(errno));
        return rc;
    }
    buf = malloc(MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return NS_E_NOMEM;
    }
    len = fread(buf, 1, MAX_FILE + 1, f);
    if (ferror(f) || len > MAX_FILE) {
        snprintf(err, errcap, "%s '%s': %s", what, path,
                 len > MAX_FILE ? "larger than 1 MiB" : "read error");
        rc = len > MAX_FILE ? NS_E_TOO_MANY : -EIO;
        free(buf);
        buf = NULL;
    } else {
        buf[len] = 0;
    }
    fclose(f);
    *out = buf;
    return rc;
}

static int load_secrets(http_server *s, const http_opts *o, char *err, size_t errcap)
{
    bool user = o->user && *o->user, pwf = o->password_file && *o->password_file;
    bool cert = o->tls_cert && *o->tls_cert, key = o->tls_key && *o->tls_key;
    int rc;
    if (user != pwf) {
        snprintf(err, errcap, "http_user and http_password_file go together: set both or neither");
        return NS_E_PARSE;
    }
    if (cert != key) {
        snprintf(err, errcap, "http_tls_cert and http_tls_key go together: set both or neither");
        return NS_E_PARSE;
    }
    if (pwf) {
        struct stat st;
        if ((rc = slurp("http_password_file", o->password_file, &s->password, err, errcap)) < 0)
            return rc;
        s->password[strcspn(s->password, "\r\n")] = 0; /* the first line */
        if (!s->password[0]) {
            snprintf(err, errcap, "http_password_file '%s': the first line is empty",
                     o->password_file);
            return NS_E_PARSE;
        }
        if (strchr(o->user, ':')) {
            snprintf(err, errcap, "http_user: a basic-auth user name cannot contain ':'");
            return NS_E_PARSE;
        }
        if (stat(o->password_file, &st) == 0 && (st.st_mode & 077))
            ns_log(NS_LOG_WARN, "http_password_file %s can be read by other users (chmod 600)",
                   o->password_file);
    }
    if (cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errcap, "http_tls_cert: this libmicrohttpd was built without TLS");
            return NS_E_VERSION;
        }
        if ((rc = slurp("http_tls_cert", o->tls_cert, &s->tls_cert, err, errcap)) < 0 ||
            (rc = slurp("http_tls_key", o->tls_key, &s->tls_key, err, errcap)) < 0)
            return rc;
    }
    return 0;
}

static void server_free(http_server *s)
{
    http__guard_free(s->guard);
    if (s->password) {
        memset(s->password, 0, strlen(s->password));
        free(s->password);
    }
    if (s->tls_key) {
        memset(s->tls_key, 0, strlen(s->tls_key));
        free(s->tls_key);
    }
    free(s->tls_cert);
    free(s);
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
    int rc = load_secrets(s, o, err, errcap);
    unsigned threads = o->threads ? o->threads : 4;
    /* the workers' own queries, plus as many again given up on but still running */
    if (rc == 0 && o->query_timeout_ms)
        rc = http__guard_new(2 * threads, &s->guard);
    if (rc < 0) {
        server_free(s);
        return rc;
    }
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_THREAD_POOL_SIZE, threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, o->max_connections ? o->max_connections : 1000, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s ? o->idle_timeout_s : 30, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 65536, NULL},
        {MHD_OPTION_END, 0, NULL}, /* HTTPS key and certificate go here and after */
        {MHD_OPTION_END, 0, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    if (s->tls_cert) {
        size_t n = 0;
        while (opts[n].option != MHD_OPTION_END)
            n++;
        flags |= MHD_USE_TLS;
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
    }
    s->mhd = MHD_start_daemon(flags, port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                              mhd_log, NULL, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd) {
        if (s->tls_cert)
            snprintf(err, errcap,
                     "https: cannot listen on %s (address in use, or the certificate or key "
                     "in %s / %s does not load)",
                     o->listen, o->tls_cert, o->tls_key);
        else
            snprintf(err, errcap, "http: cannot listen on %s (address in use or not available)",
                     o->listen);
        server_free(s);
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
    server_free(s); /* waits for queries given up on: they still read the database */
}
