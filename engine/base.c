/* engine/base.c — error strings, address and time parsing, clocks, the log and its rate
 * limiter: the small shared base of every module. */
#include "engine/base.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const char *ns_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case NS_E_TRUNC:
        return "truncated input";
    case NS_E_CORRUPT:
        return "corrupt data (checksum or structure)";
    case NS_E_VERSION:
        return "unsupported version";
    case NS_E_MAGIC:
        return "bad magic number";
    case NS_E_RANGE:
        return "value out of range";
    case NS_E_PARSE:
        return "parse error";
    case NS_E_NOMEM:
        return "out of memory";
    case NS_E_LOCKED:
        return "database folder locked by another process";
    case NS_E_COUNT:
        return "record count disagrees with length";
    case NS_E_UNKNOWN_KEY:
        return "unknown key";
    case NS_E_TOO_MANY:
        return "limit reached";
    case NS_E_COMPRESS:
        return "compression error";
    default:
        break;
    }
    if (rc < 0 && rc > NS_E_BASE)
        return strerror(-rc);
    return "unknown error";
}

/* ------------------------------------------------------------------------------------------ */

void ns_addr_from_v4(ns_addr *a, uint32_t v4)
{
    memset(a->b, 0, 10);
    a->b[10] = 0xff;
    a->b[11] = 0xff;
    a->b[12] = (uint8_t)(v4 >> 24);
    a->b[13] = (uint8_t)(v4 >> 16);
    a->b[14] = (uint8_t)(v4 >> 8);
    a->b[15] = (uint8_t)v4;
}

bool ns_addr_is_v4(const ns_addr *a)
{
    static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a->b, pfx, 12) == 0;
}

char *ns_addr_fmt(const ns_addr *a, char *buf, size_t cap)
{
    if (ns_addr_is_v4(a)) {
        if (!inet_ntop(AF_INET, a->b + 12, buf, (socklen_t)cap))
            buf[0] = 0;
    } else if (!inet_ntop(AF_INET6, a->b, buf, (socklen_t)cap)) {
        buf[0] = 0;
    }
    return buf;
}

int ns_addr_parse(const char *s, ns_addr *out)
{
    uint8_t v4[4];
    if (inet_pton(AF_INET, s, v4) == 1) {
        ns_addr_from_v4(out, (uint32_t)v4[0] << 24 | (uint32_t)v4[1] << 16 | (uint32_t)v4[2] << 8 |
                                 v4[3]);
        return 0;
    }
    if (inet_pton(AF_INET6, s, out->b) == 1)
        return 0;
    return NS_E_PARSE;
}

int ns_prefix_parse(const char *s, ns_prefix *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof buf)
        return NS_E_PARSE;
    memcpy(buf, s, alen);
    buf[alen] = 0;
    if (ns_addr_parse(buf, &out->addr) < 0)
        return NS_E_PARSE;
    bool v4 = strchr(buf, ':') == NULL;
    unsigned max = v4 ? 32 : 128, len = max;
    if (slash) {
        char *end;
        errno = 0;
        unsigned long l = strtoul(slash + 1, &end, 10);
        if (!isdigit((unsigned char)slash[1]) || *end || errno)
            return NS_E_PARSE;
        if (l > max)
            return NS_E_RANGE;
        len = (unsigned)l;
    }
    out->len = (uint8_t)(v4 ? len + 96 : len);
    /* clear host bits so matching is a plain masked compare */
    for (unsigned bit = out->len; bit < 128; bit++)
        out->addr.b[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

bool ns_prefix_match(const ns_prefix *p, const ns_addr *a)
{
    unsigned full = p->len / 8, rest = p->len % 8;
    if (memcmp(p->addr.b, a->b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a->b[full] & mask) == p->addr.b[full];
}

int ns_hostport_parse(const char *s, char *host, size_t hostcap, uint16_t *port)
{
    const char *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return NS_E_PARSE;
        hlen = (size_t)(close - s - 1);
        if (hlen >= hostcap)
            return NS_E_RANGE;
        memcpy(host, s + 1, hlen);
        host[hlen] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return NS_E_PARSE; /* bare IPv6 needs brackets */
        hlen = (size_t)(colon - s);
        if (hlen >= hostcap)
            return NS_E_RANGE;
        memcpy(host, s, hlen);
        host[hlen] = 0;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (colon[1] == 0 || *end != 0 || errno || !isdigit((unsigned char)colon[1]))
        return NS_E_PARSE;
    if (p > 65535)
        return NS_E_RANGE;
    if (host[0]) {
        ns_addr tmp;
        if (ns_addr_parse(host, &tmp) < 0)
            return NS_E_PARSE;
    }
    *port = (uint16_t)p;
    return 0;
}

/* Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int ns_time_parse(const char *s, int64_t *ms_out)
{
    const char *p = s;
    int y, mo, d, h, mi, sec;
    if (!*s)
        return NS_E_PARSE;
    /* epoch seconds, optionally with a fraction */
    bool numeric = true;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q) && *q != '.')
            numeric = false;
    if (numeric) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (*end || errno || v < 0 || v > 253402300799.0)
            return NS_E_RANGE;
        *ms_out = (int64_t)(v * 1000.0 + 0.5);
        return 0;
    }
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return NS_E_PARSE;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return NS_E_PARSE;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return NS_E_RANGE;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return NS_E_RANGE;
    int64_t ms = 0;
    if (*p == '.') {
        p++;
        int scale = 100, nd = 0;
        while (isdigit((unsigned char)*p)) {
            if (nd++ < 3) {
                ms += (*p - '0') * scale;
                scale /= 10;
            }
            p++;
        }
        if (nd == 0)
            return NS_E_PARSE;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return NS_E_PARSE;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return NS_E_PARSE; /* RFC 3339 requires an offset */
    }
    if (*p)
        return NS_E_PARSE;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t t = days * 86400 + h * 3600 + mi * 60 + sec - off;
    *ms_out = t * 1000 + ms;
    return 0;
}

/* A whole number followed by at most one unit letter from units (and, for sizes, an optional
 * 'B'): "10G", "90s". The shared half of the size and duration parsers. */
typedef struct unit {
    char letter;
    uint64_t mul;
} unit;

static int parse_with_unit(const char *s, const unit *units, size_t nunits, bool upcase,
                           bool allow_b, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return NS_E_PARSE;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return NS_E_RANGE;
    uint64_t mul = 1;
    if (*end) {
        char c = upcase ? (char)toupper((unsigned char)*end) : *end;
        size_t i;
        for (i = 0; i < nunits && units[i].letter != c; i++)
            ;
        if (i == nunits)
            return NS_E_PARSE;
        mul = units[i].mul;
        end++;
        if (allow_b && toupper((unsigned char)*end) == 'B')
            end++;
        if (*end)
            return NS_E_PARSE;
    }
    if (v > UINT64_MAX / mul)
        return NS_E_RANGE;
    *out = (uint64_t)v * mul;
    return 0;
}

int ns_size_parse(const char *s, uint64_t *out)
{
    static const unit units[] = {
        {'K', 1ull << 10}, {'M', 1ull << 20}, {'G', 1ull << 30}, {'T', 1ull << 40}};
    return parse_with_unit(s, units, sizeof units / sizeof units[0], true, true, out);
}

int ns_duration_parse(const char *s, uint64_t *seconds_out)
{
    static const unit units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 604800}};
    return parse_with_unit(s, units, sizeof units / sizeof units[0], false, false, seconds_out);
}

int64_t ns_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec ns_deadline_in(clockid_t clock, int64_t ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int64_t ns_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------------------------ */
/* The log: process-wide by nature (one file, one stderr). Guarded by a mutex so a reopen on
 * SIGHUP never races a writer. */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static bool log_stderr = true;
static volatile int log_level = NS_LOG_INFO;

int ns_log_open(const char *path, bool also_stderr)
{
    int fd = -1;
    if (path) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            return -errno;
    }
    pthread_mutex_lock(&log_mu);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = fd;
    log_stderr = also_stderr || fd < 0;
    pthread_mutex_unlock(&log_mu);
    return 0;
}

void ns_log_close(void)
{
    pthread_mutex_lock(&log_mu);
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    log_stderr = true;
    pthread_mutex_unlock(&log_mu);
}

void ns_log_set_level(ns_log_level lvl)
{
    log_level = (int)lvl;
}

bool ns_log_enabled(ns_log_level lvl)
{
    return (int)lvl <= log_level;
}

int ns_log_level_parse(const char *s, ns_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (ns_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = NS_LOG_WARN;
        return 0;
    }
    return NS_E_PARSE;
}

void ns_log_(ns_log_level lvl, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, tags[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    pthread_mutex_lock(&log_mu);
    if (log_fd >= 0 && write(log_fd, line, len) < 0) {
        /* nowhere better to report it; stderr below still gets the line */
    }
    if (log_stderr && write(STDERR_FILENO, line, len) < 0) {
        /* nothing to do */
    }
    pthread_mutex_unlock(&log_mu);
}

bool ns_ratelimit_ok(ns_ratelimit *rl, int64_t now_ms, uint32_t *suppressed_out)
{
    enum { BURST = 5, WINDOW_MS = 60000 };
    *suppressed_out = 0;
    if (now_ms - rl->window_start_ms >= WINDOW_MS) {
        rl->window_start_ms = now_ms;
        rl->passed = 0;
    }
    if (rl->passed < BURST) {
        rl->passed++;
        *suppressed_out = rl->suppressed;
        rl->suppressed = 0;
        return true;
    }
    rl->suppressed++;
    return false;
}

bool ns_thread_nice(int nice)
{
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) == 0;
}

void ns_thread_name(const char *what)
{
    char name[16];
    snprintf(name, sizeof name, "ns2f-%s", what);
    (void)pthread_setname_np(pthread_self(), name);
}

bool ns_mem_trim(void)
{
#ifdef __GLIBC__
    return malloc_trim(0) != 0;
#else
    return false;
#endif
}
