/* ingest/listen.c — UDP receive: sockets and threads per configured address. Each receive
 * thread pulls up to RX_BATCH datagrams per recvmmsg(2) call and decodes them straight into a
 * slot of its own bounded ring; a full slot (or the end of a burst) is published to the
 * listener's store thread, which appends it to the database (mutex, WAL write). So a receive
 * thread never waits for the store: when its ring is full the rows are dropped and counted
 * (queue_dropped), never blocked on. Rings are single-producer single-consumer: two atomic
 * counters, no lock. IPv6 sockets are IPV6_V6ONLY so 0.0.0.0 and [::] can share a port. */
#include "ingest/ingest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_BATCH 64
#define RX_BUFSZ 65536
/* Buffers are this far apart, not RX_BUFSZ: at a 64 KB stride the first bytes of every
 * datagram of a batch fell into the same few cache sets, and decoding read them back from
 * L3 */
#define RX_STRIDE  (RX_BUFSZ + 1600)
#define Q_SLOTS    64   /* slots of a receive thread's ring (allocated as first needed) */
#define SLOT_ROWS  4096 /* rows a slot holds; decoders publish mid-datagram when one fills */
#define PUBLISH_MS 5    /* a slot a quarter full, or this old, is published at a burst's end */
/* A recvmmsg that found fewer than RX_COALESCE datagrams waiting is followed by a pause of
 * RX_PAUSE_US before the next poll, so datagrams arrive in batches: waking up for every few
 * datagrams cost a context switch each (20,000 a second at 1.5M v5 flows/s, each preempting
 * the sealer), and the switches took more CPU than the decoding. The socket buffer holds far
 * more than the pause's worth at any rate it can take. */
#define RX_COALESCE 16
#define RX_PAUSE_US 500

/* A receive thread's ring. The thread fills slot[head % Q_SLOTS] and publishes it by moving
 * head; the store thread appends slots [tail, head) and moves tail. */
typedef struct rx_slot {
    eng_flow *rows;
    size_t n;
    int64_t recv_ms;
    /* the receive counters of the datagrams that ended in this slot: added to the listener's
     * once the rows are in the store, so a datagram counted is a datagram queryable */
    uint64_t datagrams, bytes, flows, errors;
} rx_slot;

typedef struct rx_ring {
    rx_slot slot[Q_SLOTS];
    atomic_size_t head, tail;
} rx_ring;

typedef struct rx_sock {
    int fd;
    char name[80];
    const char *kind;
    pthread_t th;
    bool running;
    struct ing_listener *l;
    rx_ring ring;
} rx_sock;

struct ing_listener {
    rx_sock *socks; /* threads sockets per address, addresses in order */
    int n;
    int naddrs;
    unsigned threads;
    atomic_bool stop;
    atomic_bool go; /* false while held: no untrusted byte is parsed before the drop */
    ing_exporters *ex;
    eng_db *db;
    atomic_uint_fast64_t datagrams, bytes, flows, decode_errors, store_dropped, queue_dropped;
    /* the store thread: drains every ring; sleeps on cv when all are empty */
    pthread_t store_th;
    bool store_running;
    atomic_bool store_stop, store_idle;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void sockaddr_to_addr(const struct sockaddr_storage *ss, ns_addr *a)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        ns_addr_from_v4(a, ntohl(s4->sin_addr.s_addr));
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        memcpy(a->b, &s6->sin6_addr, 16);
    }
}

typedef struct rx_flush {
    ing_listener *l;
    rx_ring *ring;
    ing_batch *batch;
    int64_t recv_ms; /* of the burst being decoded */
    int64_t slot_ms; /* of the first burst with rows in the current slot: the slot's time */
    uint64_t datagrams, bytes, flows, errors; /* since the last slot was published */
} rx_flush;

/* Adds counters to the listener's and clears them. */
static void count_now(ing_listener *l, uint64_t *dg, uint64_t *bytes, uint64_t *flows,
                      uint64_t *errors)
{
    atomic_fetch_add(&l->datagrams, *dg);
    atomic_fetch_add(&l->bytes, *bytes);
    atomic_fetch_add(&l->flows, *flows);
    atomic_fetch_add(&l->decode_errors, *errors);
    *dg = *bytes = *flows = *errors = 0;
}

/* The batch's rows are the ring's current slot: publish it and go on in the next one, or, when
 * the store thread is a whole ring behind, drop them (counted) and refill the same slot. */
static int publish_rows(void *arg, const eng_flow *rows, size_t n)
{
    rx_flush *fa = arg;
    rx_ring *q = fa->ring;
    (void)rows;
    if (n == 0) { /* nothing to wait for: count at once */
        count_now(fa->l, &fa->datagrams, &fa->bytes, &fa->flows, &fa->errors);
        return 0;
    }
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    rx_slot *next = &q->slot[(head + 1) % Q_SLOTS];
    if (!next->rows)
        next->rows = malloc(SLOT_ROWS * sizeof(eng_flow));
    if (head + 1 - tail >= Q_SLOTS || !next->rows) {
        atomic_fetch_add(&fa->l->queue_dropped, n);
        count_now(fa->l, &fa->datagrams, &fa->bytes, &fa->flows, &fa->errors);
        return 0;
    }
    rx_slot *s = &q->slot[head % Q_SLOTS];
    s->n = n;
    s->recv_ms = fa->slot_ms;
    fa->slot_ms = fa->recv_ms; /* the next slot fills from this burst on */
    s->datagrams = fa->datagrams;
    s->bytes = fa->bytes;
    s->flows = fa->flows;
    s->errors = fa->errors;
    fa->datagrams = fa->bytes = fa->flows = fa->errors = 0;
    atomic_store_explicit(&q->head, head + 1, memory_order_release);
    fa->batch->rows = next->rows;
    if (atomic_load_explicit(&fa->l->store_idle, memory_order_relaxed))
        pthread_cond_signal(&fa->l->cv); /* a missed wake-up costs at most the timed wait */
    return 0;
}

/* Appends every published slot of every ring; returns the rows appended. */
static size_t drain_rings(ing_listener *l)
{
    size_t total = 0;
    for (int i = 0; i < l->n; i++) {
        rx_ring *q = &l->socks[i].ring;
        size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
        for (; tail != head; tail++) {
            rx_slot *s = &q->slot[tail % Q_SLOTS];
            if (eng_db_append(l->db, s->recv_ms, s->rows, s->n) < 0)
                atomic_fetch_add(&l->store_dropped, s->n);
            count_now(l, &s->datagrams, &s->bytes, &s->flows, &s->errors);
            total += s->n;
            atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
        }
    }
    return total;
}

static void *store_main(void *arg)
{
    ing_listener *l = arg;
    ns_thread_name("store");
    for (;;) {
        bool stop = atomic_load(&l->store_stop); /* read before draining: nothing is left */
        if (drain_rings(l) > 0)
            continue;
        if (stop)
            break;
        pthread_mutex_lock(&l->mu);
        atomic_store(&l->store_idle, true);
        struct timespec ts = ns_deadline_in(CLOCK_REALTIME, 10);
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        atomic_store(&l->store_idle, false);
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

static void *rx_main(void *arg)
{
    rx_sock *s = arg;
    ing_listener *l = s->l;
    struct mmsghdr msgs[RX_BATCH];
    struct iovec iov[RX_BATCH];
    struct sockaddr_storage from[RX_BATCH];
    uint8_t *bufs = malloc((size_t)RX_BATCH * RX_STRIDE);
    ing_batch batch = {.rows = s->ring.slot[0].rows, .n = 0, .cap = SLOT_ROWS};
    rx_flush fa = {.l = l, .ring = &s->ring, .batch = &batch, .recv_ms = 0};
    batch.flush = publish_rows;
    batch.flush_arg = &fa;
    char what[16];
    snprintf(what, sizeof what, "rx-%s", s->kind);
    ns_thread_name(what);
    if (!bufs) {
        ns_log(NS_LOG_ERROR, "listen %s: out of memory; not receiving", s->name);
        return NULL;
    }
    while (!atomic_load(&l->stop)) {
        if (!atomic_load(&l->go)) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
            continue;
        }
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        /* wakes up to notice stop, or to publish rows that have waited PUBLISH_MS */
        int pr = poll(&pfd, 1, batch.n > 0 ? PUBLISH_MS : 200);
        if (pr <= 0) {
            ing_batch_flush(&batch);
            continue;
        }
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < RX_BATCH; i++) {
            iov[i].iov_base = bufs + (size_t)i * RX_STRIDE;
            iov[i].iov_len = RX_BUFSZ;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int got = recvmmsg(s->fd, msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno != EAGAIN && errno != EINTR)
                ns_log(NS_LOG_ERROR, "listen %s: recvmmsg: %s", s->name, strerror(errno));
            continue;
        }
        int64_t now = ns_now_ms();
        fa.recv_ms = now;
        if (batch.n == 0)
            fa.slot_ms = now;
        for (int i = 0; i < got; i++) {
            ns_addr a;
            size_t len = msgs[i].msg_len;
            sockaddr_to_addr(&from[i], &a);
            /* a decoder publishes the slot itself when it fills (v5 asks for a retry) */
            int rc = ing_decode(l->ex, &a, now, iov[i].iov_base, len, &batch);
            if (rc == ING_E_BATCH) {
                ing_batch_flush(&batch);
                rc = ing_decode(l->ex, &a, now, iov[i].iov_base, len, &batch);
            }
            fa.datagrams++;
            fa.bytes += len;
            if (rc < 0)
                fa.errors++;
            else
                fa.flows += (uint64_t)rc;
        }
        /* few rows are kept a little (PUBLISH_MS) so slots go out full: the ring's room is
         * counted in slots, and small bursts would fill it with small slots */
        if (batch.n == 0 || batch.n >= SLOT_ROWS / 4 || now - fa.slot_ms >= PUBLISH_MS)
            ing_batch_flush(&batch);
        if (got < RX_COALESCE) {
            struct timespec ts = {0, RX_PAUSE_US * 1000};
            nanosleep(&ts, NULL);
        }
    }
    ing_batch_flush(&batch);
    free(bufs);
    return NULL;
}

static int open_socket(const char *spec, uint64_t rcvbuf, bool reuseport, int *fd_out, char *err,
                       size_t errcap)
{
    char host[64];
    uint16_t port;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (ns_hostport_parse(spec, host, sizeof host, &port) < 0) {
        snprintf(err, errcap, "listen %s: not ADDR:PORT", spec);
        return NS_E_PARSE;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (!host[0] || inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sl = sizeof *s6;
    } else {
        snprintf(err, errcap, "listen %s: '%s' is not an IP address", spec, host);
        return NS_E_PARSE;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errcap, "listen %s: socket: %s", spec, strerror(e));
        return -e;
    }
    int one = 1;
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* several sockets on one port: the kernel spreads exporters over them by address hash, so
     * one exporter always lands on the same thread and its templates stay in order */
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        int e = errno;
        snprintf(err, errcap, "listen %s: SO_REUSEPORT: %s", spec, strerror(e));
        close(fd);
        return -e;
    }
    int want = rcvbuf > INT32_MAX / 2 ? INT32_MAX / 2 : (int)rcvbuf, got = 0;
    socklen_t gl = sizeof got;
    /* SO_RCVBUFFORCE passes net.core.rmem_max when we are root; else fall back */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    /* the kernel reports twice what it grants for payload (bookkeeping overhead) */
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &gl) == 0 && got / 2 < want)
        ns_log(NS_LOG_WARN,
               "listen %s: receive buffer is %d bytes, %d asked; raise net.core.rmem_max "
               "(sysctl -w net.core.rmem_max=%d) or run as root",
               spec, got / 2, want, want);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        int e = errno;
        snprintf(err, errcap, "listen %s: bind: %s", spec, strerror(e));
        close(fd);
        return -e;
    }
    *fd_out = fd;
    return 0;
}

int ing_listener_start(const ing_listener_opts *o, ing_exporters *ex, eng_db *db,
                       ing_listener **out, char *err, size_t errcap)
{
    ing_listener *l = calloc(1, sizeof *l);
    int rc = 0;
    if (!l)
        return NS_E_NOMEM;
    l->ex = ex;
    l->db = db;
    atomic_init(&l->stop, false);
    atomic_init(&l->store_stop, false);
    atomic_init(&l->store_idle, false);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    /* the CPUs this process may run on (taskset, cgroups), not every CPU of the machine:
     * more receive threads than CPUs only adds context switches and loss */
    cpu_set_t cpus;
    long cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus)
                                                               : sysconf(_SC_NPROCESSORS_ONLN);
    l->threads = o->threads ? o->threads : (unsigned)(cores > 0 ? cores : 1);
    if (o->naddrs > 2 * NS_MAX_LISTEN || l->threads > 64) {
        free(l);
        snprintf(err, errcap, "more than %d listen addresses or 64 threads", 2 * NS_MAX_LISTEN);
        return NS_E_TOO_MANY;
    }
    l->socks = calloc((size_t)o->naddrs * l->threads + 1, sizeof *l->socks);
    if (!l->socks) {
        free(l);
        return NS_E_NOMEM;
    }
    for (int i = 0; i < o->naddrs; i++) {
        if (l->threads > 1) {
            /* SO_REUSEPORT would let a second collector on this port silently take half the
             * traffic: first prove the port is free with a plain bind */
            int probe = -1;
            rc = open_socket(o->addrs[i], 4096, false, &probe, err, errcap);
            if (probe >= 0)
                close(probe);
            if (rc < 0 && rc != -EAFNOSUPPORT)
                goto fail;
        }
        for (unsigned t = 0; t < l->threads; t++) {
            int fd = -1;
            rc = open_socket(o->addrs[i], o->rcvbuf, l->threads > 1, &fd, err, errcap);
            if (rc == -EAFNOSUPPORT) {
                /* a host without IPv6 still runs on the default [::] + 0.0.0.0 pair */
                ns_log(NS_LOG_WARN, "%s; skipped", err);
                rc = 0;
                break;
            }
            if (rc < 0)
                goto fail;
            rx_sock *s = &l->socks[l->n++];
            s->fd = fd;
            atomic_init(&s->ring.head, 0);
            atomic_init(&s->ring.tail, 0);
            s->ring.slot[0].rows = malloc(SLOT_ROWS * sizeof(eng_flow));
            if (!s->ring.slot[0].rows) {
                snprintf(err, errcap, "out of memory for the receive queues");
                rc = NS_E_NOMEM;
                goto fail;
            }
            s->l = l;
            s->kind = o->kinds ? o->kinds[i] : "udp";
            snprintf(s->name, sizeof s->name, "%s", o->addrs[i]);
        }
    }
    if (l->n == 0) {
        snprintf(err, errcap, "no UDP listen address could be bound");
        rc = NS_E_RANGE;
        goto fail;
    }
    atomic_store(&l->go, !o->hold);
    if (pthread_create(&l->store_th, NULL, store_main, l) != 0) {
        snprintf(err, errcap, "cannot start the store thread");
        rc = -EAGAIN;
        goto fail;
    }
    l->store_running = true;
    for (int i = 0; i < l->n; i++) {
        if (pthread_create(&l->socks[i].th, NULL, rx_main, &l->socks[i]) != 0) {
            snprintf(err, errcap, "cannot start receive thread");
            rc = -EAGAIN;
            goto fail;
        }
        l->socks[i].running = true;
    }
    *out = l;
    return 0;
fail:
    ing_listener_stop(l);
    return rc;
}

void ing_listener_go(ing_listener *l)
{
    atomic_store(&l->go, true);
}

void ing_listener_stop(ing_listener *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    for (int i = 0; i < l->n; i++) {
        if (l->socks[i].running)
            pthread_join(l->socks[i].th, NULL);
        close(l->socks[i].fd);
    }
    /* the receive threads are gone, their last slots published: drain, then stop */
    if (l->store_running) {
        atomic_store(&l->store_stop, true);
        pthread_cond_signal(&l->cv);
        pthread_join(l->store_th, NULL);
    }
    for (int i = 0; i < l->n; i++)
        for (int k = 0; k < Q_SLOTS; k++)
            free(l->socks[i].ring.slot[k].rows);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->socks);
    free(l);
}

void ing_listener_get_stats(ing_listener *l, ing_listener_stats *st)
{
    st->datagrams = atomic_load(&l->datagrams);
    st->bytes = atomic_load(&l->bytes);
    st->flows = atomic_load(&l->flows);
    st->decode_errors = atomic_load(&l->decode_errors);
    st->store_dropped = atomic_load(&l->store_dropped);
    st->queue_dropped = atomic_load(&l->queue_dropped);
}

bool ing_listener_addr(ing_listener *l, int i, char *buf, size_t cap)
{
    /* sockets come in groups of `threads` per address */
    int k = i * (int)l->threads;
    if (i < 0 || k >= l->n)
        return false;
    snprintf(buf, cap, "%s %s", l->socks[k].kind, l->socks[k].name);
    return true;
}

void ing_listener_json(ing_listener *l, ns_buf *out)
{
    ing_listener_stats st;
    ns_buf_puts(out, ",\"listeners\":[");
    for (int i = 0; i < l->n; i += (int)l->threads) {
        ns_buf_puts(out, i ? ",{\"udp\":" : "{\"udp\":");
        ns_buf_json_str(out, l->socks[i].name);
        ns_buf_puts(out, ",\"protocol\":");
        ns_buf_json_str(out, l->socks[i].kind);
        ns_buf_printf(out, ",\"threads\":%u}", l->threads);
    }
    ing_listener_get_stats(l, &st);
    ns_buf_printf(out,
                  "],\"ingest\":{\"datagrams\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"flows\":%" PRIu64
                  ",\"decode_errors\":%" PRIu64 ",\"store_dropped\":%" PRIu64
                  ",\"queue_dropped\":%" PRIu64 "}",
                  st.datagrams, st.bytes, st.flows, st.decode_errors, st.store_dropped,
                  st.queue_dropped);
}

void ing_listener_prometheus(ing_listener *l, ns_buf *out)
{
    ing_listener_stats st;
    ing_listener_get_stats(l, &st);
    ns_buf_printf(out,
                  "# HELP ns2flows_ingest_datagrams_total UDP datagrams received.\n"
                  "# TYPE ns2flows_ingest_datagrams_total counter\n"
                  "ns2flows_ingest_datagrams_total %" PRIu64 "\n"
                  "# TYPE ns2flows_ingest_bytes_total counter\n"
                  "ns2flows_ingest_bytes_total %" PRIu64 "\n"
                  "# HELP ns2flows_ingest_flows_total Flows decoded.\n"
                  "# TYPE ns2flows_ingest_flows_total counter\n"
                  "ns2flows_ingest_flows_total %" PRIu64 "\n"
                  "# TYPE ns2flows_ingest_decode_errors_total counter\n"
                  "ns2flows_ingest_decode_errors_total %" PRIu64 "\n"
                  "# HELP ns2flows_ingest_store_dropped_total Flows the store could not keep.\n"
                  "# TYPE ns2flows_ingest_store_dropped_total counter\n"
                  "ns2flows_ingest_store_dropped_total %" PRIu64 "\n"
                  "# HELP ns2flows_ingest_queue_dropped_total Flows dropped because the store "
                  "thread was a whole queue behind a receive thread.\n"
                  "# TYPE ns2flows_ingest_queue_dropped_total counter\n"
                  "ns2flows_ingest_queue_dropped_total %" PRIu64 "\n",
                  st.datagrams, st.bytes, st.flows, st.decode_errors, st.store_dropped,
                  st.queue_dropped);
}
