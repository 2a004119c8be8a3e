/* tools/ns2flows-replay.c — sends the UDP payloads of a pcap/pcapng capture to a collector, at
 * the capture's own pace, X times faster or as fast as possible. Each original exporter (source
 * address and port) gets its own socket, so the collector sees distinct sources as it would from
 * distinct routers (all from this host's address, though). */
#include "ingest/ingest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "ns2flows-replay"

/* One socket per exporter up to MAX_SOURCES; the rest share one. The table is open addressing
 * at most half full. */
#define MAX_SOURCES  4096u
#define SRC_SLOTS    8192u
#define SNDBUF_BYTES (1 << 20)
/* ENOBUFS/EAGAIN mean the kernel's queue is full for a moment: retry with a growing pause, but
 * give up after this long rather than hang. */
#define RETRY_BUDGET_US    1000000
#define RETRY_PAUSE_MAX_US 10000
#define PROGRESS_US        1000000

typedef struct replay_opts {
    const char *capture;
    struct sockaddr_storage to;
    socklen_t tolen;
    char to_text[80];
    double speed; /* 0: as fast as possible */
    unsigned long loops;
    int dport; /* -1: every datagram */
    bool quiet;
} replay_opts;

typedef struct src_slot {
    bool used;
    uint16_t port;
    int fd;
    ns_addr addr;
} src_slot;

typedef struct replay {
    const replay_opts *o;
    src_slot *slots; /* SRC_SLOTS entries */
    size_t nsrc;
    int shared_fd; /* sources past MAX_SOURCES, or once descriptors run out */
    bool out_of_fds;
    uint64_t sent, bytes, filtered;
    ing_pcap_stats st; /* summed over loops */
    /* Pacing: capture time maps to monotonic time as start_us + cap_us / speed, where cap_us
     * runs on across loops (base_us is where the current loop starts). */
    bool started;
    int64_t start_us, base_us, loop_first_ts, loop_max_ts;
    bool loop_has_ts;
    int64_t next_progress_us;
} replay;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " CAPTURE --to HOST:PORT [--speed X | --max] [--loop N] [--dport P]\n"
            "                       [--quiet]\n"
            "Sends every UDP payload found in CAPTURE (pcap or pcapng) to a collector.\n"
            "  -t, --to HOST:PORT  where to send: 127.0.0.1:2055, [::1]:2055; ':PORT' means\n"
            "                      127.0.0.1 (numeric addresses only)\n"
            "  -s, --speed X       X times the capture's pace (X > 0; default 1: the pace of\n"
            "                      the capture timestamps)\n"
            "  -m, --max           as fast as possible\n"
            "  -l, --loop N        send the capture N times, each pass after the previous\n"
            "  -d, --dport P       only datagrams originally sent to UDP port P\n"
            "  -q, --quiet         no progress lines on stderr (the summary is still printed)\n"
            "  -h, --help          this text\n"
            "Each original exporter (source address and port) gets its own socket, up to %u.\n"
            "Prints 'replay: sent D datagrams, B bytes (...)' on stdout at the end.\n"
            "Exit status: 0 done, 1 runtime error or interrupted, 2 usage error.\n",
            MAX_SOURCES);
}

/* Prints "ns2flows-replay: <message>" and a hint; returns the usage exit status. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    return 2;
}

static int parse_target(const char *s, replay_opts *o)
{
    char host[64];
    uint16_t port = 0;
    ns_addr a;
    if (ns_hostport_parse(s, host, sizeof host, &port) < 0)
        return usage_error("--to: expected ADDR:PORT or [IPV6]:PORT, got '%s'", s);
    if (port == 0)
        return usage_error("--to: port 0 is not a destination: '%s'", s);
    if (!host[0])
        snprintf(host, sizeof host, "127.0.0.1");
    if (ns_addr_parse(host, &a) < 0)
        return usage_error("--to: not a numeric address: '%s'", s);
    memset(&o->to, 0, sizeof o->to);
    if (ns_addr_is_v4(&a)) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        memcpy(&sin.sin_addr, a.b + 12, 4);
        memcpy(&o->to, &sin, sizeof sin);
        o->tolen = sizeof sin;
        snprintf(o->to_text, sizeof o->to_text, "%s:%u", host, port);
    } else {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof sin6);
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        memcpy(&sin6.sin6_addr, a.b, 16);
        memcpy(&o->to, &sin6, sizeof sin6);
        o->tolen = sizeof sin6;
        snprintf(o->to_text, sizeof o->to_text, "[%s]:%u", host, port);
    }
    return 0;
}

/* Returns 0, or 2 after printing a usage error. --help exits here. */
static int parse_args(int argc, char **argv, replay_opts *o)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},    {"speed", required_argument, NULL, 's'},
        {"max", no_argument, NULL, 'm'},         {"loop", required_argument, NULL, 'l'},
        {"dport", required_argument, NULL, 'd'}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    bool have_to = false, have_speed = false, have_max = false;
    char *end;
    int c;

    memset(o, 0, sizeof *o);
    o->speed = 1.0;
    o->loops = 1;
    o->dport = -1;
    opterr = 0; /* our own messages below */
    while ((c = getopt_long(argc, argv, ":t:s:ml:d:qh", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (parse_target(optarg, o) != 0)
                return 2;
            have_to = true;
            break;
        case 's':
            errno = 0;
            o->speed = strtod(optarg, &end);
            if (end == optarg || *end || errno || !isfinite(o->speed) || o->speed <= 0)
                return usage_error("--speed: expected a positive number, got '%s'", optarg);
            have_speed = true;
            break;
        case 'm':
            have_max = true;
            break;
        case 'l': {
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (end == optarg || *end || errno || optarg[0] == '-' || n == 0)
                return usage_error("--loop: expected a count of at least 1, got '%s'", optarg);
            o->loops = n;
            break;
        }
        case 'd': {
            errno = 0;
            unsigned long p = strtoul(optarg, &end, 10);
            if (end == optarg || *end || errno || optarg[0] == '-' || p == 0 || p > 65535)
                return usage_error("--dport: expected a port 1-65535, got '%s'", optarg);
            o->dport = (int)p;
            break;
        }
        case 'q':
            o->quiet = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (have_speed && have_max)
        return usage_error("%s", "--speed and --max exclude each other");
    if (have_max)
        o->speed = 0;
    if (optind == argc)
        return usage_error("%s", "no capture file given");
    if (argc - optind > 1)
        return usage_error("one capture file only; also got '%s'", argv[optind + 1]);
    o->capture = argv[optind];
    if (!have_to)
        return usage_error("%s", "--to HOST:PORT is required");
    return 0;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleeps until the monotonic time t_us; absolute deadlines keep a long replay from drifting.
 * Returns early when a signal asked us to stop. */
static void sleep_until(int64_t t_us)
{
    struct timespec ts = {.tv_sec = (time_t)(t_us / 1000000),
                          .tv_nsec = (long)(t_us % 1000000) * 1000};
    while (!stop_requested && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void pause_us(long us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL);
}

static int new_socket(const replay_opts *o)
{
    int sndbuf = SNDBUF_BYTES;
    int fd = socket(o->to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* Best effort: a larger queue absorbs --max bursts; the default still works. */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    return fd;
}

/* Per-exporter sockets need descriptors: raise the soft limit towards the hard one so the
 * default 1024 does not cap us early. Failure only means more exporters share a socket. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    rlim_t want = MAX_SOURCES + 64u;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static size_t src_hash(const ns_addr *a, uint16_t port)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < sizeof a->b; i++)
        h = (h ^ a->b[i]) * 16777619u;
    h = (h ^ (uint32_t)(port >> 8)) * 16777619u;
    h = (h ^ (uint32_t)(port & 0xffu)) * 16777619u;
    return h;
}

/* The socket for the exporter that sent u in the capture. Returns an fd or -errno. */
static int source_fd(replay *r, const ing_udp *u)
{
    size_t mask = SRC_SLOTS - 1, i = src_hash(&u->src, u->sport) & mask;
    while (r->slots[i].used) {
        if (r->slots[i].port == u->sport && memcmp(&r->slots[i].addr, &u->src, sizeof u->src) == 0)
            return r->slots[i].fd;
        i = (i + 1) & mask;
    }
    if (r->nsrc == MAX_SOURCES || r->out_of_fds)
        return r->shared_fd;
    int fd = new_socket(r->o);
    if (fd == -EMFILE || fd == -ENFILE) {
        fprintf(stderr, PROG ": out of descriptors after %zu exporters; the rest share a socket\n",
                r->nsrc);
        r->out_of_fds = true;
        return r->shared_fd;
    }
    if (fd < 0)
        return fd;
    r->slots[i].used = true;
    r->slots[i].addr = u->src;
    r->slots[i].port = u->sport;
    r->slots[i].fd = fd;
    r->nsrc++;
    return fd;
}

/* Sends one datagram; ENOBUFS/EAGAIN (queue full) are retried for up to RETRY_BUDGET_US.
 * Returns 0 or -errno. */
static int send_payload(const replay *r, int fd, const ing_udp *u)
{
    const replay_opts *o = r->o;
    int64_t deadline = 0;
    long pause = 50;
    for (;;) {
        if (sendto(fd, u->payload, u->len, 0, (const struct sockaddr *)&o->to, o->tolen) >= 0)
            return 0;
        int e = errno;
        if (e == EINTR && !stop_requested)
            continue;
        if (e != ENOBUFS && e != EAGAIN && e != EWOULDBLOCK)
            return -e;
        int64_t now = mono_us();
        if (deadline == 0)
            deadline = now + RETRY_BUDGET_US;
        else if (now >= deadline || stop_requested)
            return -e;
        pause_us(pause);
        pause = pause * 2 > RETRY_PAUSE_MAX_US ? RETRY_PAUSE_MAX_US : pause * 2;
    }
}

/* Waits until datagram u is due. Capture timestamps may go backwards (merged captures): such a
 * datagram is due at once, and never moves the clock back for those after it. */
static void pace(replay *r, const ing_udp *u)
{
    int64_t now = mono_us();
    if (!r->started) {
        r->started = true;
        r->start_us = now;
        r->next_progress_us = now + PROGRESS_US;
    }
    if (!r->loop_has_ts) {
        r->loop_has_ts = true;
        r->loop_first_ts = r->loop_max_ts = u->ts_us;
    }
    if (u->ts_us > r->loop_max_ts)
        r->loop_max_ts = u->ts_us;
    if (r->o->speed <= 0)
        return;
    double cap_us = (double)r->base_us + (double)(u->ts_us - r->loop_first_ts);
    double wait = cap_us / r->o->speed;
    if (wait <= 0)
        return;
    if (wait > 1e17) /* absurd gaps at absurd slowness: keep the arithmetic defined */
        wait = 1e17;
    int64_t due = r->start_us + (int64_t)wait;
    if (due > now)
        sleep_until(due);
}

static void progress(replay *r, unsigned long loop)
{
    if (r->o->quiet)
        return;
    int64_t now = mono_us();
    if (now < r->next_progress_us)
        return;
    r->next_progress_us = now + PROGRESS_US;
    fprintf(stderr, "replay: %" PRIu64 " datagrams, %" PRIu64 " bytes sent (pass %lu/%lu)\n",
            r->sent, r->bytes, loop, r->o->loops);
}

static void add_stats(ing_pcap_stats *sum, const ing_pcap_stats *st)
{
    sum->packets += st->packets;
    sum->udp += st->udp;
    sum->skipped += st->skipped;
    sum->fragments += st->fragments;
    sum->malformed += st->malformed;
}

/* One pass over the open capture p, which it closes. Returns 0, or 1 after printing what
 * failed. */
static int replay_pass(replay *r, unsigned long loop, ing_pcap *p)
{
    const replay_opts *o = r->o;
    char err[512];
    ing_pcap_stats st;
    ing_udp u;
    int rc = 0, status = 0;

    r->loop_has_ts = false;
    while (!stop_requested && (rc = ing_pcap_next(p, &u, err, sizeof err)) == 1) {
        if (o->dport >= 0 && u.dport != o->dport) {
            r->filtered++;
            continue;
        }
        pace(r, &u);
        if (stop_requested)
            break;
        int fd = source_fd(r, &u);
        if (fd >= 0)
            fd = send_payload(r, fd, &u);
        if (fd < 0) {
            if (!stop_requested) {
                fprintf(stderr, PROG ": sending to %s: %s\n", o->to_text, strerror(-fd));
                status = 1;
            }
            break;
        }
        r->sent++;
        r->bytes += u.len;
        progress(r, loop);
    }
    if (rc < 0) {
        fprintf(stderr, PROG ": %s: %s\n", o->capture, err);
        status = 1;
    }
    if (r->loop_has_ts)
        r->base_us += r->loop_max_ts - r->loop_first_ts;
    ing_pcap_get_stats(p, &st);
    add_stats(&r->st, &st);
    ing_pcap_close(p);
    return status;
}

int main(int argc, char **argv)
{
    replay_opts o;
    replay r;
    ing_pcap *p = NULL;
    char err[512];
    int status = 0;

    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    ns_log_set_level(NS_LOG_WARN);

    memset(&r, 0, sizeof r);
    r.o = &o;
    r.shared_fd = -1;
    r.slots = calloc(SRC_SLOTS, sizeof *r.slots);
    if (!r.slots) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    /* Open the capture before anything else: an unreadable one is an error, not 0 datagrams. */
    rc = ing_pcap_open(o.capture, &p, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        free(r.slots);
        return 1;
    }
    raise_fd_limit();
    r.shared_fd = new_socket(&o);
    if (r.shared_fd < 0) {
        fprintf(stderr, PROG ": socket: %s\n", strerror(-r.shared_fd));
        ing_pcap_close(p);
        free(r.slots);
        return 1;
    }

    /* No SA_RESTART: a signal must cut a long sleep short so the summary still gets printed. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (!o.quiet) {
        char pace_text[64];
        if (o.speed <= 0)
            snprintf(pace_text, sizeof pace_text, "as fast as possible");
        else
            snprintf(pace_text, sizeof pace_text, "%gx the capture's pace", o.speed);
        fprintf(stderr, "replay: %s -> %s, %s, %lu pass%s\n", o.capture, o.to_text, pace_text,
                o.loops, o.loops == 1 ? "" : "es");
    }

    for (unsigned long loop = 1;; loop++) {
        status = replay_pass(&r, loop, p); /* closes p */
        if (status != 0 || stop_requested || loop == o.loops)
            break;
        rc = ing_pcap_open(o.capture, &p, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, PROG ": %s\n", err);
            status = 1;
            break;
        }
    }
    if (stop_requested) {
        fprintf(stderr, PROG ": interrupted\n");
        status = 1;
    }

    if (!o.quiet) {
        fprintf(stderr, "replay: %zu exporter socket%s", r.nsrc, r.nsrc == 1 ? "" : "s");
        if (o.dport >= 0)
            fprintf(stderr, ", %" PRIu64 " datagrams to other ports than %d left out", r.filtered,
                    o.dport);
        fprintf(stderr, "\n");
    }
    printf("replay: sent %" PRIu64 " datagrams, %" PRIu64 " bytes (skipped %" PRIu64
           " non-UDP packets, %" PRIu64 " fragments, %" PRIu64 " malformed)\n",
           r.sent, r.bytes, r.st.skipped, r.st.fragments, r.st.malformed);
    fflush(stdout);

    for (size_t i = 0; i < SRC_SLOTS; i++)
        if (r.slots[i].used)
            close(r.slots[i].fd);
    close(r.shared_fd);
    free(r.slots);
    return status;
}
