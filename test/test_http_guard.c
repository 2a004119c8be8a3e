/* http/guard.c (queries under a deadline), the constant-time secret comparison, and the
 * embedded-file table's lookup. */
#include "http/http_int.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <time.h>

typedef struct slow {
    int sleep_ms;
    atomic_int ran, done;
} slow;

static void slow_fn(void *arg)
{
    slow *s = arg;
    struct timespec ts = {s->sleep_ms / 1000, (long)(s->sleep_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&s->ran, 1);
}

static void slow_done(void *arg)
{
    slow *s = arg;
    atomic_store(&s->done, 1);
}

Test(http_guard, fast_query_answers_in_time)
{
    http_guard *g;
    slow s = {.sleep_ms = 1};
    cr_assert(eq(int, http__guard_new(2, &g), 0));
    cr_expect(eq(int, http__guard_run(g, slow_fn, slow_done, &s, 5000), 0));
    cr_expect(eq(int, atomic_load(&s.ran), 1));
    cr_expect(eq(int, atomic_load(&s.done), 0), "the caller keeps its argument");
    http__guard_free(g);
}

Test(http_guard, slow_query_times_out_and_cleans_up_after_itself)
{
    http_guard *g;
    slow s = {.sleep_ms = 400};
    cr_assert(eq(int, http__guard_new(1, &g), 0));
    cr_expect(eq(int, http__guard_run(g, slow_fn, slow_done, &s, 20), -ETIMEDOUT));
    cr_expect(eq(int, atomic_load(&s.ran), 0), "gave up before the query ended");
    /* the slow one still runs, and is the only one allowed: the next is refused at once */
    slow s2 = {.sleep_ms = 1};
    cr_expect(eq(int, http__guard_run(g, slow_fn, slow_done, &s2, 1000), -EAGAIN));
    cr_expect(eq(int, atomic_load(&s2.ran), 0));
    http__guard_free(g); /* waits for the slow one */
    cr_expect(eq(int, atomic_load(&s.ran), 1));
    for (int i = 0; i < 200 && !atomic_load(&s.done); i++) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    cr_expect(eq(int, atomic_load(&s.done), 1), "done() ran for the abandoned query");
}

Test(http_secret, equal_only_when_equal)
{
    cr_expect(http__secret_eq("s3cret", "s3cret"));
    cr_expect(not(http__secret_eq("s3cret", "s3cre")));
    cr_expect(not(http__secret_eq("s3cret", "s3cret!")));
    cr_expect(not(http__secret_eq("s3cret", "S3cret")));
    cr_expect(not(http__secret_eq("s3cret", "")));
    cr_expect(not(http__secret_eq("a", "b")));
    cr_expect(http__secret_eq("", ""));
}

Test(http_static, only_table_names_are_found)
{
    const http_static_file *f = http_static_find("/");
    cr_assert(f != NULL);
    cr_expect(strcmp(f->name, "/index.html") == 0);
    cr_expect(http_static_find("/index.html") == f);
    cr_expect(http_static_find("/app.js") != NULL);
    static const char *const bad[] = {
        "",          "index.html", "/../index.html", "//index.html", "/index.html/",
        "/./app.js", "/APP.JS",    "/app.js.",       "/app"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect(http_static_find(bad[i]) == NULL, "%s", bad[i]);
    cr_expect(strcmp(http_static_type("/x.js"), "text/javascript; charset=utf-8") == 0);
    cr_expect(strcmp(http_static_type("/x"), "application/octet-stream") == 0);
    char a[32], b[32];
    http_static_etag(f, a, sizeof a);
    http_static_etag(http_static_find("/app.js"), b, sizeof b);
    cr_expect(a[0] == '"' && strcmp(a, b) != 0, "%s %s", a, b);
}
