/* Integration: the HTTP server's own duties, against the real daemon — the embedded Flows
 * Window files (types, ETag and 304, nothing outside the table), basic auth on every path,
 * HTTPS with a throwaway certificate (openssl makes it, curl checks it), and the limits on the
 * time range and rows a query may ask for. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

/* Sends req as is; returns the status, *resp the whole answer (headers and body, malloc'd). */
static int raw(uint16_t port, const char *req, char **resp)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    size_t cap = 1 << 20, len = 0;
    *resp = calloc(1, cap);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (ssize_t r; len < cap - 1 && (r = read(fd, *resp + len, cap - 1 - len)) > 0;)
        len += (size_t)r;
    close(fd);
    int status = -1;
    if (sscanf(*resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

static int get(uint16_t port, const char *path, const char *extra_header, char **resp)
{
    char req[2048];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n%s%s\r\n", path,
             extra_header ? extra_header : "", extra_header ? "\r\n" : "");
    return raw(port, req, resp);
}

/* The value of header name in a raw answer, copied into out ("" if absent). */
static void header(const char *resp, const char *name, char *out, size_t cap)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\r\n%s: ", name);
    const char *p = strcasestr(resp, pat);
    out[0] = 0;
    if (!p)
        return;
    p += strlen(pat);
    size_t n = strcspn(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p ? p + 4 : "";
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 1 << 20);
    *len = f ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

static void b64(const char *in, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

Test(it_http, page_files_with_types_etags_and_nothing_else, .timeout = 60)
{
    it_daemon d;
    char *resp, ct[128], etag[64], hdr[128], *want;
    size_t wlen;
    cr_assert(it_daemon_start(&d, NULL));

    cr_assert(eq(int, get(d.http, "/", NULL, &resp), 200));
    header(resp, "Content-Type", ct, sizeof ct);
    cr_expect(strcmp(ct, "text/html; charset=utf-8") == 0);
    header(resp, "Content-Security-Policy", hdr, sizeof hdr);
    cr_expect(strstr(hdr, "default-src 'self'") != NULL, "%s", hdr);
    want = slurp("http/www/index.html", &wlen);
    cr_expect(wlen > 0 && strcmp(body_of(resp), want) == 0, "/ is http/www/index.html");
    free(want);
    header(resp, "ETag", etag, sizeof etag);
    cr_assert(strlen(etag) > 2 && etag[0] == '"', "ETag: %s", etag);
    free(resp);

    /* the browser's copy is current: 304, no body */
    snprintf(hdr, sizeof hdr, "If-None-Match: %s", etag);
    cr_expect(eq(int, get(d.http, "/index.html", hdr, &resp), 304));
    cr_expect(strcmp(body_of(resp), "") == 0);
    free(resp);
    cr_expect(eq(int, get(d.http, "/", "If-None-Match: \"0000\"", &resp), 200));
    free(resp);

    cr_assert(eq(int, get(d.http, "/app.js", NULL, &resp), 200));
    header(resp, "Content-Type", ct, sizeof ct);
    cr_expect(strcmp(ct, "text/javascript; charset=utf-8") == 0);
    want = slurp("http/www/app.js", &wlen);
    cr_expect(strlen(body_of(resp)) == wlen && strcmp(body_of(resp), want) == 0);
    free(want);
    free(resp);
    cr_expect(eq(int, get(d.http, "/app.css", NULL, &resp), 200));
    header(resp, "Content-Type", ct, sizeof ct);
    cr_expect(strcmp(ct, "text/css; charset=utf-8") == 0);
    free(resp);

    /* only names in the embedded table: no path reaches a file */
    static const char *const bad[] = {
        "/../http/www/index.html",
        "/%2e%2e/%2e%2e/etc/passwd",
        "//index.html",
        "/index.html/",
        "/index.html%00",
        "/www/index.html",
        "/./index.html",
        "/INDEX.HTML",
        "/http/www/app.js",
        "/etc/passwd",
        "/app.js?../x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = get(d.http, bad[i], NULL, &resp);
        /* "/app.js?../x" is /app.js with a parameter: a file of the table, served; every other
         * is refused ("%00" stays undecoded, so it cannot cut the path short) */
        if (strcmp(bad[i], "/app.js?../x") == 0)
            cr_expect(eq(int, st, 200), "%s", bad[i]);
        else
            cr_expect(eq(int, st, 404), "%s -> %d", bad[i], st);
        cr_expect(strstr(resp, "root:") == NULL, "%s", bad[i]);
        free(resp);
    }
    cr_expect(eq(int, raw(d.http, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n", &resp), 405));
    free(resp);
    cr_expect(eq(int, raw(d.http, "HEAD / HTTP/1.0\r\n\r\n", &resp), 200));
    cr_expect(strcmp(body_of(resp), "") == 0);
    free(resp);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_http, basic_auth_guards_every_path, .timeout = 60)
{
    char db[] = "/tmp/ns2flows-it-XXXXXX", conf[300], pw[300], text[700], hdr[300], cred[200];
    cr_assert(mkdtemp(db) != NULL);
    snprintf(pw, sizeof pw, "%s.pw", db);
    snprintf(conf, sizeof conf, "%s.conf", db);
    write_file(pw, "s3cret\n");
    snprintf(text, sizeof text, "http_user = admin\nhttp_password_file = %s\n", pw);
    write_file(conf, text);
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, db, extra));

    static const char *const paths[] = {"/",        "/app.js",     "/api/v1/status",
                                        "/metrics", "/api/v1/top", "/api/v1/nosuch"};
    static const struct {
        const char *userpass;
        bool ok;
    } tries[] = {
        {NULL, false},           {"admin:s3cret", true},
        {"admin:s3cre", false},  {"admin:s3cret!", false},
        {"admin:S3cret", false}, {"Admin:s3cret", false},
        {"admin:", false},       {":s3cret", false},
        {"admins3cret", false},
    };
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        for (size_t t = 0; t < sizeof tries / sizeof tries[0]; t++) {
            char *resp;
            if (tries[t].userpass) {
                b64(tries[t].userpass, cred);
                snprintf(hdr, sizeof hdr, "Authorization: Basic %s", cred);
            }
            int st = get(d.http, paths[p], tries[t].userpass ? hdr : NULL, &resp);
            if (tries[t].ok) {
                cr_expect(st == (strcmp(paths[p], "/api/v1/nosuch") == 0 ? 404 : 200), "%s %s: %d",
                          paths[p], tries[t].userpass, st);
            } else {
                char www[128];
                cr_expect(eq(int, st, 401), "%s %s", paths[p],
                          tries[t].userpass ? tries[t].userpass : "(none)");
                header(resp, "WWW-Authenticate", www, sizeof www);
                cr_expect(strncmp(www, "Basic realm=", 12) == 0, "%s", www);
                cr_expect(strstr(resp, "root") == NULL && strstr(resp, "\"version\"") == NULL,
                          "nothing leaks: %s", resp);
            }
            free(resp);
        }
    }
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    unlink(pw);
    unlink(conf);
    it_rm_rf(db);
}

/* Runs curl; returns the HTTP status it printed (0: no answer), the body in body_path. */
static int curl(const char *url, const char *userpass, const char *body_path)
{
    char out[320];
    snprintf(out, sizeof out, "%s.code", body_path);
    const char *argv[] = {"/usr/bin/curl",
                          "-sk",
                          "--max-time",
                          "5",
                          "-o",
                          body_path,
                          "-w",
                          "%{http_code}",
                          "-u",
                          userpass ? userpass : "x:y",
                          url,
                          NULL};
    it_run(argv, out);
    size_t n;
    char *code = slurp(out, &n);
    int st = atoi(code);
    free(code);
    unlink(out);
    return st;
}

Test(it_http, https_with_a_throwaway_certificate_and_auth, .timeout = 90)
{
    char db[] = "/tmp/ns2flows-it-XXXXXX", conf[300], pw[300], cert[300], key[300], text[1400],
         url[200], body[320], *resp;
    cr_assert(access("/usr/bin/curl", X_OK) == 0, "curl is needed (make deps installs it)");
    cr_assert(access("/usr/bin/openssl", X_OK) == 0, "openssl is needed (make deps installs it)");
    cr_assert(mkdtemp(db) != NULL);
    snprintf(pw, sizeof pw, "%s.pw", db);
    snprintf(conf, sizeof conf, "%s.conf", db);
    snprintf(cert, sizeof cert, "%s.cert.pem", db);
    snprintf(key, sizeof key, "%s.key.pem", db);
    snprintf(body, sizeof body, "%s.body", db);
    const char *gen[] = {"/usr/bin/openssl",
                         "req",
                         "-x509",
                         "-newkey",
                         "ec",
                         "-pkeyopt",
                         "ec_paramgen_curve:prime256v1",
                         "-nodes",
                         "-keyout",
                         key,
                         "-out",
                         cert,
                         "-days",
                         "1",
                         "-subj",
                         "/CN=127.0.0.1",
                         NULL};
    cr_assert(eq(int, it_run(gen, NULL), 0), "openssl made no certificate");
    write_file(pw, "tls-pass\n");

    /* half a pair is refused at start-up, naming both keys */
    snprintf(text, sizeof text, "http_tls_cert = %s\n", cert);
    write_file(conf, text);
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_spawn(&d, db, extra));
    int st;
    cr_assert(eq(int, waitpid(d.pid, &st, 0), d.pid));
    bool exit1 = WIFEXITED(st) && WEXITSTATUS(st) == 1;
    cr_expect(exit1, "start-up fails with status 1");
    size_t n;
    char *log = slurp(d.log, &n);
    cr_expect(strstr(log, "http_tls_cert and http_tls_key") != NULL, "%s", log);
    free(log);

    snprintf(text, sizeof text,
             "http_tls_cert = %s\nhttp_tls_key = %s\nhttp_user = ops\nhttp_password_file = %s\n",
             cert, key, pw);
    write_file(conf, text);
    cr_assert(it_daemon_spawn(&d, db, extra));
    snprintf(url, sizeof url, "https://127.0.0.1:%u/api/v1/status", d.http);
    int code = 0;
    for (int waited = 0; waited < it_ms(10000) && code != 200; waited += 100) {
        code = curl(url, "ops:tls-pass", body);
        if (code != 200)
            it_sleep_ms(100);
    }
    cr_assert(eq(int, code, 200), "no HTTPS answer");
    char *b = slurp(body, &n);
    cr_expect(strstr(b, "\"version\"") != NULL, "%s", b);
    free(b);
    cr_expect(eq(int, curl(url, "ops:wrong", body), 401));
    snprintf(url, sizeof url, "https://127.0.0.1:%u/", d.http);
    cr_expect(eq(int, curl(url, "ops:tls-pass", body), 200));
    /* plain HTTP on the HTTPS port gets no HTTP answer */
    cr_expect(get(d.http, "/api/v1/status", NULL, &resp) != 200);
    free(resp);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    const char *files[] = {pw, conf, cert, key, body};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    it_rm_rf(db);
}

Test(it_http, limits_on_time_range_and_rows, .timeout = 60)
{
    char db[] = "/tmp/ns2flows-it-XXXXXX", conf[300], bin[512], pcap[600], path[300], *body;
    cr_assert(mkdtemp(db) != NULL);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    /* 45 flows over 3 seconds of 2010 */
    snprintf(pcap, sizeof pcap, "%s/generated/softflowd-v9-tcpreplay_test.pcap", it_fixtures());
    const char *ingest[] = {bin, "ingest", "--db", db, pcap, NULL};
    cr_assert(eq(int, it_run(ingest, NULL), 0));
    snprintf(conf, sizeof conf, "%s.conf", db);
    write_file(conf, "http_max_range = 1\nhttp_max_rows = 5\n");
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, db, extra));

    double oldest = 0, newest = 0;
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/status", &body), 200));
    cr_assert(it_json_double(body, "oldest", &oldest) && it_json_double(body, "newest", &newest));
    free(body);
    cr_assert(newest - oldest > 1.5, "the capture spans more than the limit");

    /* the whole store is more than 1 s of data: refused, naming the limit */
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/summary", &body), 400));
    cr_expect(strstr(body, "http_max_range") != NULL && strstr(body, "'from'") != NULL, "%s", body);
    free(body);
    /* a range wider than the limit but holding less data than it is fine */
    snprintf(path, sizeof path, "/api/v1/summary?from=%.0f&to=%.0f", oldest - 86400, oldest + 0.5);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 200), "%s", body);
    free(body);
    snprintf(path, sizeof path, "/api/v1/top?from=%.3f&to=%.3f&limit=5", oldest, oldest + 1);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 200), "%s", body);
    free(body);
    snprintf(path, sizeof path, "/api/v1/top?from=%.3f&to=%.3f&limit=6", oldest, oldest + 1);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 400));
    cr_expect(strstr(body, "'limit'") != NULL && strstr(body, "1 to 5") != NULL, "%s", body);
    free(body);
    snprintf(path, sizeof path, "/api/v1/flows?from=%.3f&to=%.3f&limit=6", oldest, oldest + 1);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 400));
    cr_expect(strstr(body, "'limit'") != NULL, "%s", body);
    free(body);
    snprintf(path, sizeof path, "/api/v1/devices/172.16.11.12?to=%.3f", newest);
    cr_expect(eq(int, it_http_get(d.http, path, &body), 400), "device window too: %s", body);
    free(body);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    unlink(conf);
    it_rm_rf(db);
}
