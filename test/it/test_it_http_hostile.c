/* Integration: hostile HTTP clients against a running daemon — path traversal (plain, percent-
 * encoded, encoded NULs), oversized headers and parameters, invalid UTF-8 everywhere a parameter
 * goes, slowloris-style connections that never finish their request, and 1000 concurrent
 * connections. Every request gets a clean 4xx (or its answer), nothing outside the API leaks,
 * and a normal request still answers afterwards. (test_it_robust.c has the 64 KB URL, too many
 * parameters, invalid UTF-8 echoed back and the nesting cap.) */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <poll.h>
#include <sys/resource.h>

/* Sends raw bytes as one request and reads the answer (up to 10 s). Returns the status, 0 if
 * the server closed without answering, -1 on a local error; *body gets the whole response. */
static int raw_request(uint16_t port, const char *req, size_t len, char **resp)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {10, 0};
    *resp = NULL;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may stop reading an oversized request and answer at once */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR); /* nothing more comes: a server waiting for more bytes sees EOF */
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *resp = buf;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    return status;
}

static bool valid_utf8(const unsigned char *s)
{
    while (*s) {
        int extra = *s < 0x80             ? 0
                    : (*s & 0xe0) == 0xc0 ? 1
                    : (*s & 0xf0) == 0xe0 ? 2
                    : (*s & 0xf8) == 0xf0 ? 3
                                          : -1;
        if (extra < 0 || (extra == 1 && *s < 0xc2))
            return false;
        s++;
        for (int i = 0; i < extra; i++, s++)
            if ((*s & 0xc0) != 0x80)
                return false;
    }
    return true;
}

static void expect_alive(const it_daemon *d)
{
    char *body;
    cr_expect(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200), "still answering");
    free(body);
    cr_expect(eq(int, waitpid(d->pid, NULL, WNOHANG), 0), "still running");
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

Test(it_http_hostile, path_traversal_and_encoded_nuls_never_leak, .timeout = 60)
{
    static const char *const paths[] = {
        "/../../../../etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%252e%252e/%252e%252e/etc/passwd",
        "/.%2e/.%2e/.%2e/etc/passwd",
        "/api/v1/../../../../etc/passwd",
        "/api/v1/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/../../../../etc/passwd",
        "/www/..%5c..%5c..%5cetc%5cpasswd",
        "/index.html/../../../etc/passwd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/api/v1/devices/..%2f..%2f..%2fetc%2fpasswd",
        "/api/v1/devices/%2e%2e",
        "/etc/passwd%00.html",
        "/index.html%00",
        "/%00",
        "/api/v1/status%00",
        "/api/v1/status%00.json",
        "/api/v1/%00status",
        "/api/v1/status/%00",
        "/ns2flows.lock",
        "/ns2flowslog.txt",
        "/SESSIONDB/ns2flowslog.txt",
        "/state/templates.bin",
    };
    it_daemon d;
    char *body;
    cr_assert(it_daemon_start(&d, NULL));
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int st = it_http_get(d.http, paths[i], &body);
        cr_expect(st == 400 || st == 404, "%s: %d", paths[i], st);
        cr_expect(body && !strstr(body, "root:") && !strstr(body, "ns2flows ") &&
                      !strstr(body, "started (pid"),
                  "%s leaked: %.200s", paths[i], body ? body : "");
        free(body);
    }
    /* the same through raw request lines that no client library would send */
    static const char *const raw[] = {
        "GET ../../etc/passwd HTTP/1.0\r\n\r\n",
        "GET /..\\..\\etc\\passwd HTTP/1.0\r\n\r\n",
        "GET http://127.0.0.1/../../etc/passwd HTTP/1.0\r\n\r\n",
        "GET * HTTP/1.0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        int st = raw_request(d.http, raw[i], strlen(raw[i]), &body);
        cr_expect(st == 0 || (st >= 400 && st < 500), "%s: %d", raw[i], st);
        cr_expect(body && !strstr(body, "root:"), "leaked");
        free(body);
    }
    /* an encoded NUL in a parameter is a bad value, not a shorter one */
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/top?by=srcaddr%00junk", &body), 400));
    free(body);
    cr_expect(eq(int, it_http_get(d.http, "/api/v1/summary?filter=any%00garbage(", &body), 400));
    free(body);
    expect_alive(&d);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_http_hostile, oversized_headers_and_parameters_are_refused, .timeout = 60)
{
    it_daemon d;
    char *body, *req = malloc(1 << 20);
    cr_assert(it_daemon_start(&d, NULL));
    /* one 100 KB header */
    int n = sprintf(req, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', 100000);
    n += 100000;
    n += sprintf(req + n, "\r\nConnection: close\r\n\r\n");
    int st = raw_request(d.http, req, (size_t)n, &body);
    cr_expect(st >= 400 && st < 500, "100 KB header: %d", st);
    free(body);
    /* 5000 small headers */
    n = sprintf(req, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 5000; i++)
        n += sprintf(req + n, "X-H%d: v\r\n", i);
    n += sprintf(req + n, "Connection: close\r\n\r\n");
    st = raw_request(d.http, req, (size_t)n, &body);
    cr_expect(st >= 400 && st < 500, "5000 headers: %d", st);
    free(body);
    /* a 20 KB parameter value (under the URL limit): the filter's own length cap says no */
    n = sprintf(req, "/api/v1/summary?filter=");
    for (int i = 0; i < 1400; i++)
        n += sprintf(req + n, "%shost+10.0.0.%d", i ? "+or+" : "", i % 250);
    st = it_http_get(d.http, req, &body);
    cr_expect(eq(int, st, 400), "20 KB filter: %d", st);
    cr_expect(body && valid_utf8((const unsigned char *)body));
    free(body);
    /* a 30 KB parameter name */
    n = sprintf(req, "/api/v1/top?");
    memset(req + n, 'k', 30000);
    strcpy(req + n + 30000, "=1");
    st = it_http_get(d.http, req, &body);
    cr_expect(eq(int, st, 400), "30 KB parameter name: %d", st);
    free(body);
    /* a request line with no end, then the connection closed */
    n = sprintf(req, "GET /api/v1/status?x=");
    memset(req + n, 'z', 200000);
    st = raw_request(d.http, req, (size_t)n + 200000, &body);
    cr_expect(st == 0 || (st >= 400 && st < 500), "endless request line: %d", st);
    free(body);
    /* a body on a GET, and a bogus method */
    const char *post = "POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
                       "Connection: close\r\n\r\nxxxx";
    st = raw_request(d.http, post, strlen(post), &body);
    cr_expect(st == 0 || (st >= 400 && st < 500), "POST with a 5 MB body announced: %d", st);
    free(body);
    free(req);
    expect_alive(&d);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_http_hostile, invalid_utf8_in_any_parameter_gets_a_valid_json_400, .timeout = 60)
{
    static const char *const paths[] = {
        "/api/v1/top?by=%c3%28",
        "/api/v1/top?by=srcaddr&filter=host+%ff%fe",
        "/api/v1/top?by=srcaddr&limit=%e2%82",
        "/api/v1/summary?from=%f0%28%8c%bc",
        "/api/v1/summary?to=%c0%af",
        "/api/v1/series?by=proto&step=%ed%a0%80",
        "/api/v1/flows?order=%80",
        "/api/v1/flows?format=%fe",
        "/api/v1/devices/%ff%fe%fd",
        "/api/v1/devices/10.0.0.1?from=%c3",
        "/api/v1/top?%ff=1",
    };
    it_daemon d;
    char *body;
    cr_assert(it_daemon_start(&d, NULL));
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int st = it_http_get(d.http, paths[i], &body);
        cr_expect(st == 400 || st == 404, "%s: %d", paths[i], st);
        cr_expect(body && valid_utf8((const unsigned char *)body), "%s: body not UTF-8", paths[i]);
        cr_expect(body && strstr(body, "\"error\"") != NULL, "%s: %s", paths[i], body);
        free(body);
    }
    expect_alive(&d);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_http_hostile, slowloris_connections_do_not_block_a_normal_request, .timeout = 90)
{
    enum { SLOW = 300 };
    static int fds[SLOW];
    it_daemon d;
    char *body;
    raise_nofile(4096);
    cr_assert(it_daemon_start(&d, NULL));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(d.http),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int open_n = 0;
    for (int i = 0; i < SLOW; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0)
            break;
        const char *start = "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        cr_assert(send(fds[i], start, strlen(start), MSG_NOSIGNAL) > 0);
        open_n++;
    }
    cr_assert(eq(int, open_n, SLOW));
    /* trickle one byte per connection, three rounds, with normal requests in between */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < SLOW; i++)
            send(fds[i], "a", 1, MSG_NOSIGNAL);
        int st = it_http_get(d.http, "/api/v1/status", &body);
        cr_expect(eq(int, st, 200), "a normal request beside %d slow ones, round %d", SLOW, round);
        free(body);
        it_sleep_ms(300);
    }
    for (int i = 0; i < SLOW; i++)
        close(fds[i]);
    expect_alive(&d);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}

Test(it_http_hostile, a_thousand_concurrent_connections, .timeout = 120)
{
    enum { CONNS = 1000 };
    static int fds[CONNS];
    static char buf[4096];
    it_daemon d;
    raise_nofile(4096);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < CONNS + 100)
        cr_skip_test("RLIMIT_NOFILE %lu is too low for %d connections", (unsigned long)rl.rlim_cur,
                     CONNS);
    cr_assert(it_daemon_start(&d, NULL));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(d.http),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int opened = 0;
    for (int i = 0; i < CONNS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0, "socket %d: %s", i, strerror(errno));
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0) {
            close(fds[i]);
            fds[i] = -1;
            continue;
        }
        opened++;
    }
    /* every connection sends its request before any answer is read */
    const char *req = "GET /api/v1/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    for (int i = 0; i < CONNS; i++)
        if (fds[i] >= 0 && send(fds[i], req, strlen(req), MSG_NOSIGNAL) < 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    int ok = 0, refused = 0, pending = 0;
    for (int i = 0; i < CONNS; i++)
        pending += fds[i] >= 0;
    static char got[CONNS][16];
    static size_t gotn[CONNS];
    for (int waited = 0; pending > 0 && waited < it_ms(60000); waited += 10) {
        struct pollfd pf[CONNS];
        int np = 0, idx[CONNS];
        for (int i = 0; i < CONNS; i++)
            if (fds[i] >= 0) {
                pf[np].fd = fds[i];
                pf[np].events = POLLIN;
                idx[np++] = i;
            }
        if (poll(pf, (nfds_t)np, 10) <= 0)
            continue;
        for (int k = 0; k < np; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int i = idx[k];
            ssize_t r = recv(fds[i], buf, sizeof buf, 0);
            if (r > 0) {
                size_t take = (size_t)r < sizeof got[i] - 1 - gotn[i] ? (size_t)r
                                                                      : sizeof got[i] - 1 - gotn[i];
                memcpy(got[i] + gotn[i], buf, take);
                gotn[i] += take;
                continue;
            }
            int st = 0;
            got[i][gotn[i]] = 0;
            if (sscanf(got[i], "HTTP/1.%*d %d", &st) == 1 && st == 200)
                ok++;
            else
                refused++;
            close(fds[i]);
            fds[i] = -1;
            pending--;
        }
    }
    cr_log_info("%d connections opened: %d answered 200, %d closed otherwise, %d pending", opened,
                ok, refused, pending);
    for (int i = 0; i < CONNS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    cr_expect(eq(int, pending, 0), "every connection got an answer or was closed");
    /* the limit is 1000 connections: nearly all of them are served, none hangs */
    cr_expect(ok >= CONNS * 9 / 10, "%d of %d answered", ok, opened);
    expect_alive(&d);
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    it_rm_rf(d.db);
}
