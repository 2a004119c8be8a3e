/* http/guard.c — runs one API query on a thread of its own so that the worker that waits for
 * it can give up at http_query_timeout_ms and answer 503. The engine has no way to stop a scan
 * from outside yet, so a query given up on still runs to its end in the background; a cap on
 * how many run at once keeps such queries from piling up. */
#include "http/http_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct http_guard {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a job finished (waiters and the drain both wait on it) */
    unsigned running, max;
};

typedef struct job {
    http_guard *g;
    void (*fn)(void *);
    void (*done)(void *);
    void *arg;
    bool finished;  /* under g->mu */
    bool abandoned; /* under g->mu: the waiter timed out; this thread cleans up */
} job;

int http__guard_new(unsigned max_running, http_guard **out)
{
    http_guard *g = calloc(1, sizeof *g);
    pthread_condattr_t ca;
    if (!g)
        return NS_E_NOMEM;
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step cannot cut a wait short */
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->max = max_running ? max_running : 1;
    *out = g;
    return 0;
}

static void *job_main(void *p)
{
    job *j = p;
    http_guard *g = j->g;
    j->fn(j->arg);
    pthread_mutex_lock(&g->mu);
    j->finished = true;
    bool abandoned = j->abandoned;
    g->running--;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    /* g may be gone from here on (the drain has seen running drop); done must not need it */
    if (abandoned) {
        j->done(j->arg);
        free(j);
    }
    return NULL;
}

int http__guard_run(http_guard *g, void (*fn)(void *), void (*done)(void *), void *arg,
                    unsigned timeout_ms)
{
    job *j = calloc(1, sizeof *j);
    pthread_attr_t at;
    pthread_t t;
    if (!j)
        return NS_E_NOMEM;
    *j = (job){.g = g, .fn = fn, .done = done, .arg = arg};
    pthread_mutex_lock(&g->mu);
    if (g->running >= g->max) {
        pthread_mutex_unlock(&g->mu);
        free(j);
        return -EAGAIN;
    }
    g->running++;
    pthread_mutex_unlock(&g->mu);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &at, job_main, j);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        pthread_mutex_lock(&g->mu);
        g->running--;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        free(j);
        return -rc;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    while (!j->finished)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT)
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
    while (g->running > 0)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
