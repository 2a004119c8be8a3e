/* http/guard.c — runs API queries on a small pool of query threads so that the worker that
 * waits for one can give up at http_query_timeout_ms and answer 503. The engine has no way to
 * stop a scan from outside yet, so a query given up on while running still runs to its end (one
 * given up on before it started is dropped unrun); a cap on queries queued or running keeps
 * such queries from piling up. */
#include "http/http_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct job {
    void (*fn)(void *);
    void (*done)(void *);
    void *arg;
    struct job *next; /* in the queue */
    bool finished;    /* under g->mu */
    bool abandoned;   /* under g->mu: the waiter gave up; the pool frees the job */
} job;

struct http_guard {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stop */
    pthread_cond_t done; /* a job finished */
    job *head, *tail;
    unsigned pending; /* queued or running */
    unsigned max;
    bool stop;
    pthread_t *threads;
    unsigned nthreads;
};

static void *pool_main(void *p)
{
    http_guard *g = p;
    ns_thread_name("http");
    /* below receiving and sealing: a dashboard waits on a busy core, flows are not lost */
    (void)ns_thread_nice(NS_NICE_QUERY);
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->head && !g->stop)
            pthread_cond_wait(&g->work, &g->mu);
        if (!g->head)
            break; /* stopping, and nothing left queued */
        job *j = g->head;
        g->head = j->next;
        if (!g->head)
            g->tail = NULL;
        bool skip = j->abandoned; /* nobody waits for it any more: do not start it */
        pthread_mutex_unlock(&g->mu);
        if (!skip)
            j->fn(j->arg);
        pthread_mutex_lock(&g->mu);
        j->finished = true;
        g->pending--;
        if (j->abandoned) {
            pthread_mutex_unlock(&g->mu);
            j->done(j->arg);
            free(j);
            pthread_mutex_lock(&g->mu);
        } else {
            pthread_cond_broadcast(&g->done);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int http__guard_new(unsigned max_running, http_guard **out)
{
    http_guard *g = calloc(1, sizeof *g);
    pthread_condattr_t ca;
    if (!g)
        return NS_E_NOMEM;
    g->max = max_running ? max_running : 1;
    g->threads = calloc(g->max, sizeof *g->threads);
    if (!g->threads) {
        free(g);
        return NS_E_NOMEM;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->work, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step cannot cut a wait short */
    pthread_cond_init(&g->done, &ca);
    pthread_condattr_destroy(&ca);
    for (; g->nthreads < g->max; g->nthreads++) {
        int rc = pthread_create(&g->threads[g->nthreads], NULL, pool_main, g);
        if (rc != 0) {
            http__guard_free(g);
            return -rc;
        }
    }
    *out = g;
    return 0;
}

int http__guard_run(http_guard *g, void (*fn)(void *), void (*done)(void *), void *arg,
                    unsigned timeout_ms)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NS_E_NOMEM;
    *j = (job){.fn = fn, .done = done, .arg = arg};
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    if (g->pending >= g->max) {
        pthread_mutex_unlock(&g->mu);
        free(j);
        return -EAGAIN;
    }
    g->pending++;
    if (g->tail)
        g->tail->next = j;
    else
        g->head = j;
    g->tail = j;
    pthread_cond_signal(&g->work);
    while (!j->finished)
        if (pthread_cond_timedwait(&g->done, &g->mu, &dl) == ETIMEDOUT)
            break;
    if (j->finished) {
        pthread_mutex_unlock(&g->mu);
        free(j);
        return 0;
    }
    j->abandoned = true;
    pthread_mutex_unlock(&g->mu);
    return -ETIMEDOUT;
}

void http__guard_free(http_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->work);
    pthread_mutex_unlock(&g->mu);
    for (unsigned i = 0; i < g->nthreads; i++)
        pthread_join(g->threads[i], NULL); /* each runs the queue dry first */
    pthread_cond_destroy(&g->work);
    pthread_cond_destroy(&g->done);
    pthread_mutex_destroy(&g->mu);
    free(g->threads);
    free(g);
}
