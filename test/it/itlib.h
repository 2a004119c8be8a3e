/* test/it/itlib.h — helpers for integration tests that run the real programs: free loopback
 * ports, starting and stopping the daemon, a minimal HTTP/1.0 client, JSON number lookup, and
 * the nfdump answers recorded beside the shared fixtures. Header-only: each integration test
 * is its own program. */
#ifndef NS_ITLIB_H
#define NS_ITLIB_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline const char *it_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static inline const char *it_bin(void)
{
    return it_env("NS_BIN", "build/bin");
}

static inline const char *it_fixtures(void)
{
    return it_env("NS_FIXTURES", "../shared/fixtures");
}

/* Timeouts scale for slow machines (NS_TEST_TIMEOUT_MULTIPLIER, like libuv's). */
static inline int it_ms(int ms)
{
    int m = atoi(it_env("NS_TEST_TIMEOUT_MULTIPLIER", "1"));
    return ms * (m > 0 ? m : 1);
}

static inline void it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A free loopback port of the given type, found by binding port 0. */
static inline uint16_t it_free_port(int type)
{
    int fd = socket(AF_INET, type, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        return 0;
    close(fd);
    return ntohs(a.sin_port);
}

/* Runs argv (NULL-terminated) to completion; stdout and stderr go to out (if not NULL).
 * Returns the exit status or -1. */
static inline int it_run(const char *const *argv, const char *out)
{
    char *args[32];
    size_t n = 0;
    for (; argv[n] && n < 31; n++)
        args[n] = strdup(argv[n]); /* execv wants writable strings */
    args[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(args[0], args);
        _exit(127);
    }
    for (size_t i = 0; i < n; i++)
        free(args[i]);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---------------------------------------------------------------------------------------------
 * HTTP: GET path from 127.0.0.1:port, with an extra header line (or NULL). Returns the status
 * (or -1); *body is malloc'd. */
static inline int it_http_get_hdr(uint16_t port, const char *path, const char *header,
                                  char **body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    *body = NULL;
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    size_t reqcap = strlen(path) + (header ? strlen(header) : 0) + 64;
    char *req = malloc(reqcap);
    int n = snprintf(req, reqcap, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s\r\n", path,
                     header ? header : "", header ? "\r\n" : "");
    for (int off = 0; off < n;) {
        ssize_t w = write(fd, req + off, (size_t)(n - off));
        if (w <= 0) {
            free(req);
            close(fd);
            return -1;
        }
        off += (int)w;
    }
    free(req);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -1;
    }
    char *sep = strstr(buf, "\r\n\r\n");
    *body = strdup(sep ? sep + 4 : "");
    free(buf);
    return status;
}

static inline int it_http_get(uint16_t port, const char *path, char **body)
{
    return it_http_get_hdr(port, path, NULL, body);
}

/* The unsigned number after "key": in json (first occurrence at or after from). */
static inline bool it_json_u64(const char *json, const char *key, uint64_t *out)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        return false;
    char *end;
    *out = strtoull(p + strlen(pat), &end, 10);
    return end != p + strlen(pat);
}

static inline bool it_json_double(const char *json, const char *key, double *out)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        return false;
    char *end;
    *out = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

/* ---------------------------------------------------------------------------------------------
 * The daemon */
typedef struct it_daemon {
    pid_t pid;
    char db[256];
    uint16_t udp, http, sflow;
    char log[300];
} it_daemon;

/* Starts ns2flows in the foreground on free loopback ports with db (created by mkdtemp when
 * db is NULL) and the extra arguments (NULL-terminated, or NULL), without waiting for it.
 * Returns false if it could not be started. */
static inline bool it_daemon_spawn(it_daemon *d, const char *db, const char *const *extra)
{
    char bin[512], listen[64], http[64], sflow[64];
    memset(d, 0, sizeof *d);
    if (db) {
        snprintf(d->db, sizeof d->db, "%s", db);
    } else {
        snprintf(d->db, sizeof d->db, "/tmp/ns2flows-it-XXXXXX");
        if (!mkdtemp(d->db))
            return false;
    }
    d->udp = it_free_port(SOCK_DGRAM);
    d->http = it_free_port(SOCK_STREAM);
    d->sflow = it_free_port(SOCK_DGRAM);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    snprintf(listen, sizeof listen, "127.0.0.1:%u", d->udp);
    snprintf(http, sizeof http, "127.0.0.1:%u", d->http);
    snprintf(sflow, sizeof sflow, "127.0.0.1:%u", d->sflow);
    snprintf(d->log, sizeof d->log, "%s.stderr", d->db);
    d->pid = fork();
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        char fl[] = "-f", dbo[] = "--db", lo[] = "--listen", ho[] = "--http",
             so[] = "--listen-sflow";
        char *args[40] = {bin, fl, dbo, d->db, lo, listen, ho, http, so, sflow};
        int n = 10;
        for (int i = 0; extra && extra[i] && n < 39; i++)
            args[n++] = strdup(extra[i]);
        args[n] = NULL;
        execv(bin, args);
        _exit(127);
    }
    return d->pid > 0;
}

/* it_daemon_spawn, then waits until HTTP answers (200, or 401 when it asks for a password).
 * Returns false if it did not come up. */
static inline bool it_daemon_start_ex(it_daemon *d, const char *db, const char *const *extra)
{
    if (!it_daemon_spawn(d, db, extra))
        return false;
    for (int waited = 0; waited < it_ms(10000); waited += 50) {
        char *body;
        int st = it_http_get(d->http, "/api/v1/status", &body);
        free(body);
        if (st == 200 || st == 401)
            return true;
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
            d->pid = 0;
            return false;
        }
        it_sleep_ms(50);
    }
    return false;
}

static inline bool it_daemon_start(it_daemon *d, const char *db)
{
    return it_daemon_start_ex(d, db, NULL);
}

/* Sends SIGTERM and waits; returns the exit status (or -1 if it had to be killed). */
static inline int it_daemon_stop(it_daemon *d)
{
    int st;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    for (int waited = 0; waited < it_ms(15000); waited += 20) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        it_sleep_ms(20);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return -1;
}

static inline void it_rm_rf(const char *dir)
{
    char cmd[600];
    if (strncmp(dir, "/tmp/ns2flows-it-", 17) != 0)
        return; /* never anything but our own temp folders */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.stderr'", dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Replays a capture at full speed to the daemon's UDP port. Returns the exit status. */
static inline int it_replay(const it_daemon *d, const char *capture)
{
    char bin[512], to[64];
    snprintf(bin, sizeof bin, "%s/ns2flows-replay", it_bin());
    snprintf(to, sizeof to, "127.0.0.1:%u", d->udp);
    const char *argv[] = {bin, capture, "--to", to, "--max", NULL};
    return it_run(argv, NULL);
}

/* ---------------------------------------------------------------------------------------------
 * nfdump's recorded answers */
typedef struct it_nfdump_totals {
    uint64_t flows, packets, bytes;
    int64_t first, last; /* epoch seconds */
    uint64_t tcp_flows, tcp_packets, tcp_bytes; /* nfdump -I's Flows_tcp etc. */
} it_nfdump_totals;

/* Reads the "## nfdump -I" section of an .nfdump.txt file. */
static inline bool it_nfdump_totals_read(const char *path, it_nfdump_totals *t)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int seen = 0;
    if (!f)
        return false;
    memset(t, 0, sizeof *t);
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        long long s;
        if (sscanf(line, "Flows: %llu", &v) == 1 && !strchr(line, ','))
            t->flows = v, seen |= 1;
        else if (sscanf(line, "Packets: %llu", &v) == 1)
            t->packets = v, seen |= 2;
        else if (sscanf(line, "Bytes: %llu", &v) == 1)
            t->bytes = v, seen |= 4;
        else if (sscanf(line, "First: %lld", &s) == 1)
            t->first = s, seen |= 8;
        else if (sscanf(line, "Last: %lld", &s) == 1)
            t->last = s, seen |= 16;
        else if (sscanf(line, "Flows_tcp: %llu", &v) == 1)
            t->tcp_flows = v;
        else if (sscanf(line, "Packets_tcp: %llu", &v) == 1)
            t->tcp_packets = v;
        else if (sscanf(line, "Bytes_tcp: %llu", &v) == 1)
            t->tcp_bytes = v;
    }
    fclose(f);
    return seen == 31;
}

/* Per source address totals aggregated from nfdump's CSV (one line per flow). */
typedef struct it_addr_total {
    char addr[64];
    uint64_t flows, packets, bytes;
} it_addr_total;

static inline size_t it_nfdump_csv_by_src(const char *path, it_addr_total *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        char *fields[16];
        int nf = 0;
        if (line[0] < '0' || line[0] > '9')
            continue; /* header, blank, Summary */
        for (char *save = NULL, *tok = strtok_r(line, ",", &save); tok && nf < 16;
             tok = strtok_r(NULL, ",", &save))
            fields[nf++] = tok;
        if (nf < 13 || strchr(fields[0], '-') == NULL)
            continue; /* the Summary's numbers line */
        const char *sa = fields[3];
        uint64_t pk = strtoull(fields[11], NULL, 10), by = strtoull(fields[12], NULL, 10);
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(out[i].addr, sa) == 0)
                break;
        if (i == n) {
            if (n == cap)
                continue;
            memset(&out[n], 0, sizeof out[n]);
            snprintf(out[n].addr, sizeof out[n].addr, "%s", sa);
            n++;
        }
        out[i].flows++;
        out[i].packets += pk;
        out[i].bytes += by;
    }
    fclose(f);
    return n;
}

#endif
