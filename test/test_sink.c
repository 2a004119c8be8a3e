/* test/test_sink.c — the ClickHouse sink without a server: the RowBinary layout, batches cut
 * by size and by day, spool files written before anything is sent and found again by the next
 * run, the spool cap dropping the oldest batches with a count, and no batch lost uncounted when
 * a file vanishes or a bind's folder sync fails. A shard URL on a closed loopback port stands for
 * a ClickHouse that is down, a small HTTP loop for one that is up. (test/clickhouse/ runs a real
 * one.) */
#include "sink/sink.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char dir[256];
static const char *dead_url[] = {"http://127.0.0.1:9/"}; /* discard port: nothing listens */

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ns2flows-test-sink-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
    strcat(dir, "/spool");
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strlen(dir) - 6), dir);
    int rc = system(cmd);
    (void)rc;
}

TestSuite(sink, .init = setup, .fini = teardown);

static eng_flow flow(uint32_t i)
{
    eng_flow f = {0};
    f.first_ms = 1700000000000 + i;
    f.last_ms = f.first_ms + 500;
    f.packets = 10 + i;
    f.bytes = 1000 + i;
    ns_addr_from_v4(&f.exporter, 0x0a000001);
    ns_addr_from_v4(&f.src, 0xc0a80000 + i);
    ns_addr_parse("2001:db8::7", &f.dst);
    f.src_as = 64500;
    f.dst_as = 64501;
    f.in_if = 3;
    f.out_if = 4;
    f.sampling = 1;
    f.source_id = 0x0102;
    f.src_port = 1234;
    f.dst_port = 443;
    f.proto = 6;
    f.tcp_flags = 0x1b;
    f.tos = 0x20;
    f.src_mask = 24;
    f.dst_mask = 64;
    f.vlan = 100;
    f.direction = ENG_DIR_INGRESS;
    f.flow_type = ENG_FT_IPFIX;
    return f;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

Test(sink, rowbinary_layout_follows_the_table)
{
    uint8_t row[SNK_ROW_BYTES + 1];
    memset(row, 0xee, sizeof row);
    eng_flow f = flow(7);
    snk_encode_row(row, 0x1122334455667788ull, 1700000123456, &f);
    cr_assert(eq(u64, le(row, 8), 0x1122334455667788ull));     /* batch_id */
    cr_assert(eq(u64, le(row + 8, 4), 1700000123u));           /* recv_time, seconds */
    cr_assert(eq(u64, le(row + 12, 8), 1700000000007ull));     /* first_ms */
    cr_assert(eq(u64, le(row + 20, 8), 1700000000507ull));     /* last_ms */
    cr_assert(eq(u64, le(row + 28, 8), 17));                   /* packets */
    cr_assert(eq(u64, le(row + 36, 8), 1007));                 /* bytes */
    cr_assert(eq(int, memcmp(row + 44, f.exporter.b, 16), 0)); /* addresses, network order */
    cr_assert(eq(int, memcmp(row + 60, f.src.b, 16), 0));
    cr_assert(eq(u8, row[60 + 10], 0xff)); /* v4-mapped */
    cr_assert(eq(u8, row[60 + 15], 7));
    cr_assert(eq(int, memcmp(row + 76, f.dst.b, 16), 0));
    cr_assert(eq(u64, le(row + 108, 4), 64500));  /* src_as */
    cr_assert(eq(u64, le(row + 128, 4), 0x0102)); /* source_id */
    cr_assert(eq(u64, le(row + 132, 2), 1234));   /* src_port */
    cr_assert(eq(u64, le(row + 134, 2), 443));
    cr_assert(eq(u8, row[136], 6)); /* proto, flags, tos, masks */
    cr_assert(eq(u8, row[137], 0x1b));
    cr_assert(eq(u8, row[138], 0x20));
    cr_assert(eq(u8, row[139], 24));
    cr_assert(eq(u8, row[140], 64));
    cr_assert(eq(u64, le(row + 141, 2), 100)); /* vlan */
    cr_assert(eq(u8, row[143], ENG_DIR_INGRESS));
    cr_assert(eq(u8, row[144], ENG_FT_IPFIX));
    cr_assert(eq(u8, row[145], 0xee)); /* nothing past the row */
}

/* The spool files in dir: count and total size. */
static size_t spool_files(uint64_t *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;
    *bytes = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d))) {
        char p[600];
        struct stat sb;
        size_t l = strlen(de->d_name);
        if (l < 3 || strcmp(de->d_name + l - 3, ".rb") != 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        cr_assert(eq(int, stat(p, &sb), 0));
        n++;
        *bytes += (uint64_t)sb.st_size;
    }
    closedir(d);
    return n;
}

static snk_sink *open_sink_at(const char *const *urls, uint64_t batch_rows, uint64_t spool_max,
                              bool senders)
{
    snk_opts o = {.urls = urls,
                  .nurls = 1,
                  .table = "flows",
                  .spool_dir = dir,
                  .batch_rows = batch_rows,
                  .batch_ms = 600000,
                  .spool_max = spool_max,
                  .retry_min_ms = 50,
                  .retry_max_ms = 100,
                  .no_sender_threads = !senders};
    snk_sink *s = NULL;
    char err[256];
    int rc = snk_open(&o, &s, err, sizeof err);
    cr_assert(eq(int, rc, 0), "%s", err);
    return s;
}

static snk_sink *open_sink(uint64_t batch_rows, uint64_t spool_max, bool senders)
{
    return open_sink_at(dead_url, batch_rows, spool_max, senders);
}

static void append(snk_sink *s, int64_t recv_ms, uint32_t n)
{
    eng_flow *rows = calloc(n, sizeof *rows);
    for (uint32_t i = 0; i < n; i++)
        rows[i] = flow(i);
    snk_append(s, recv_ms, rows, n);
    free(rows);
}

Test(sink, batches_are_spooled_before_sending_and_kept_while_the_shard_is_down)
{
    snk_sink *s = open_sink(1000, 1u << 30, true);
    append(s, 1700000000000, 2500); /* two full batches, 500 rows open */
    snk_flush(s);
    usleep(300000); /* the sender tries (and fails) meanwhile */
    snk_stats st;
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.rows_in, 2500));
    cr_assert(eq(u64, st.batches_spooled, 3));
    cr_assert(eq(u64, st.spool_batches, 3));
    cr_assert(eq(u64, st.spool_bytes, 2500u * SNK_ROW_BYTES));
    cr_assert(eq(u64, st.batches_sent, 0));
    cr_assert(st.retries > 0, "no failed attempt"); /* not gt(): 2.4.1 tests >= */
    uint64_t bytes;
    cr_assert(eq(sz, spool_files(&bytes), 3));
    cr_assert(eq(u64, bytes, 2500u * SNK_ROW_BYTES));
    snk_close(s);

    /* the next run finds them and queues them, oldest first */
    s = open_sink(1000, 1u << 30, false);
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.spool_batches, 3));
    cr_assert(eq(u64, st.spool_bytes, 2500u * SNK_ROW_BYTES));
    snk_close(s);
}

Test(sink, a_batch_never_spans_two_receive_days)
{
    snk_sink *s = open_sink(1000, 1u << 30, false);
    append(s, 1700006399000, 10); /* 2023-11-14 23:59:59 */
    append(s, 1700006400000, 10); /* the next day */
    append(s, 1700006401000, 10);
    snk_flush(s);
    snk_stats st;
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.batches_spooled, 2));
    uint64_t bytes;
    cr_assert(eq(sz, spool_files(&bytes), 2));
    cr_assert(eq(u64, bytes, 30u * SNK_ROW_BYTES));
    snk_close(s);
}

Test(sink, spool_cap_drops_the_oldest_batches_and_counts_them)
{
    const uint64_t cap = 1u << 20, batch = 1000u * SNK_ROW_BYTES; /* 7 batches fit */
    snk_sink *s = open_sink(1000, cap, false);
    for (int i = 0; i < 10; i++) {
        append(s, 1700000000000 + i, 1000);
        snk_flush(s);
    }
    snk_stats st;
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.batches_spooled, 10));
    cr_assert(eq(u64, st.spool_batches, cap / batch));
    cr_assert(eq(u64, st.dropped_batches, 10 - cap / batch));
    cr_assert(eq(u64, st.dropped_rows, (10 - cap / batch) * 1000));
    cr_assert(le(u64, st.spool_bytes, cap));
    uint64_t bytes;
    cr_assert(eq(sz, spool_files(&bytes), cap / batch));
    cr_assert(eq(u64, bytes, st.spool_bytes));
    snk_close(s);
}

Test(sink, damaged_spool_file_is_set_aside_at_start)
{
    cr_assert(eq(int, mkdir(dir, 0755), 0));
    char p[600];
    snprintf(p, sizeof p, "%s/b0000000000000001-00000000000000aa-19675.rb", dir);
    FILE *f = fopen(p, "w");
    cr_assert(f != NULL);
    fputs("not a whole row", f);
    fclose(f);
    snk_sink *s = open_sink(1000, 1u << 30, false);
    snk_stats st;
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.spool_batches, 0));
    snprintf(p, sizeof p, "%s/rejected/b0000000000000001-00000000000000aa-19675.rb", dir);
    cr_assert(eq(int, access(p, F_OK), 0));
    snk_close(s);
}

Test(sink, configuration_keys)
{
    ns_config c;
    char err[256];
    ns_config_defaults(&c);
    cr_assert(eq(int, c.nclickhouse_url, 0));
    cr_assert(strcmp(c.clickhouse_table, "flows") == 0, "%s", c.clickhouse_table);
    cr_assert(eq(u64, c.clickhouse_batch_rows, 100000));
    cr_assert(eq(u64, c.clickhouse_batch_ms, 2000));
    cr_assert(eq(u64, c.clickhouse_spool_max, 1ull << 30));
    cr_assert(strcmp(c.query_backend, "local") == 0, "%s", c.query_backend);
    /* comma separated and repeated both append */
    cr_assert(eq(
        int, ns_config_set(&c, "clickhouse_url", "http://a:8123/, http://b:8123/", err, sizeof err),
        0));
    cr_assert(
        eq(int, ns_config_set(&c, "clickhouse_url", "https://c/?user=x", err, sizeof err), 0));
    cr_assert(eq(int, c.nclickhouse_url, 3));
    cr_assert(strcmp(c.clickhouse_url[1], "http://b:8123/") == 0, "%s", c.clickhouse_url[1]);
    cr_assert(strcmp(c.clickhouse_url[2], "https://c/?user=x") == 0, "%s", c.clickhouse_url[2]);
    cr_assert(
        eq(int, ns_config_set(&c, "clickhouse_url", "ftp://a/", err, sizeof err), NS_E_PARSE));
    cr_assert(eq(int, ns_config_set(&c, "clickhouse_url", "", err, sizeof err), 0));
    cr_assert(eq(int, c.nclickhouse_url, 0), "an empty value clears the list");
    cr_assert(eq(int, ns_config_set(&c, "clickhouse_table", "flows_v2", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&c, "clickhouse_table", "x; DROP TABLE y", err, sizeof err),
                 NS_E_PARSE));
    cr_assert(eq(int, ns_config_set(&c, "clickhouse_table", "1abc", err, sizeof err), NS_E_PARSE));
    cr_assert(eq(int, ns_config_set(&c, "query_backend", "clickhouse", err, sizeof err), 0));
    cr_assert(eq(int, ns_config_set(&c, "query_backend", "mysql", err, sizeof err), NS_E_PARSE));
    cr_assert(eq(int, ns_config_set(&c, "clickhouse_batch_rows", "1000001", err, sizeof err),
                 NS_E_RANGE));
    cr_assert(
        eq(int, ns_config_set(&c, "clickhouse_spool_max", "10K", err, sizeof err), NS_E_RANGE));
    ns_config d;
    ns_config_defaults(&d);
    char diff[512];
    ns_config_set(&d, "clickhouse_url", "http://a:8123/", err, sizeof err);
    cr_assert(eq(int, ns_config_diff_nonreloadable(&c, &d, diff, sizeof diff) > 0, 1));
    cr_assert(strstr(diff, "clickhouse_url") != NULL, "%s", diff);
}

Test(sink, rejected_files_share_the_cap_and_go_first)
{
    const uint64_t cap = 1u << 20, batch = 1000u * SNK_ROW_BYTES;
    char p[600];
    cr_assert(eq(int, mkdir(dir, 0755), 0));
    snprintf(p, sizeof p, "%s/rejected", dir);
    cr_assert(eq(int, mkdir(p, 0755), 0));
    for (int i = 0; i < 2; i++) { /* two refused batches from an earlier run: 2 x 300000 bytes */
        snprintf(p, sizeof p, "%s/rejected/b%016x-00000000000000aa-19675.rb", dir, i + 1);
        FILE *f = fopen(p, "w");
        cr_assert(f != NULL);
        for (int k = 0; k < 300000; k++)
            fputc(0, f);
        fclose(f);
    }
    snk_sink *s = open_sink(1000, cap, false);
    snk_stats st;
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.rejected_bytes, 600000));
    for (int i = 0; i < 4; i++) { /* 4 x 145000 + 600000 > 1 MiB: the older rejected file goes */
        append(s, 1700000000000 + i, 1000);
        snk_flush(s);
    }
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.rejected_dropped, 1));
    cr_assert(eq(u64, st.rejected_bytes, 300000));
    cr_assert(eq(u64, st.dropped_batches, 0));
    cr_assert(eq(u64, st.spool_batches, 4));
    snprintf(p, sizeof p, "%s/rejected/b%016x-00000000000000aa-19675.rb", dir, 1);
    cr_assert(access(p, F_OK) != 0, "the oldest rejected file is still there");
    for (int i = 0; i < 4; i++) { /* then the other one, then waiting batches */
        append(s, 1700000000100 + i, 1000);
        snk_flush(s);
    }
    snk_get_stats(s, &st);
    cr_assert(eq(u64, st.rejected_dropped, 2));
    cr_assert(eq(u64, st.rejected_bytes, 0));
    cr_assert(eq(u64, st.spool_batches, cap / batch));
    cr_assert(eq(u64, st.dropped_batches, 8 - cap / batch));
    cr_assert(le(u64, st.spool_bytes + st.rejected_bytes, cap));
    snk_close(s);
}

/* Waits (10 s at most) until no batch waits in the spool. */
static void wait_spool_empty(snk_sink *s, snk_stats *st)
{
    for (int waited = 0;; waited += 20) {
        snk_get_stats(s, st);
        if (st->spool_batches == 0)
            return;
        cr_assert(waited < 10000, "the spool still holds %llu batches",
                  (unsigned long long)st->spool_batches);
        usleep(20000);
    }
}

Test(sink, a_spool_file_that_vanishes_is_counted_as_dropped)
{
    snk_sink *s = open_sink(1000, 1u << 30, true); /* the shard is down: the batch waits */
    append(s, 1700000000000, 10);
    snk_flush(s);
    DIR *d = opendir(dir);
    struct dirent *de;
    int removed = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d))) {
        char p[600];
        if (de->d_name[0] != 'b')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        removed += unlink(p) == 0;
    }
    closedir(d);
    cr_assert(eq(int, removed, 1));
    snk_stats st;
    wait_spool_empty(s, &st);
    cr_assert(eq(u64, st.dropped_batches, 1), "a batch vanished without a count");
    cr_assert(eq(u64, st.dropped_rows, 10));
    cr_assert(eq(u64, st.batches_sent, 0));
    snk_close(s);
}

/* ---------------------------------------------------------------------------------------------
 * A failing folder sync while a batch is bound to a shard. fsync is replaced in this program so
 * that the next fail_dir_fsyncs syncs of a folder fail with EIO (the sink is linked in
 * statically, so its calls come here). */
static atomic_int fail_dir_fsyncs;

int fsync(int fd)
{
    struct stat sb;
    if (atomic_load(&fail_dir_fsyncs) > 0 && fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode) &&
        atomic_fetch_sub(&fail_dir_fsyncs, 1) > 0) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

/* A stand-in for one ClickHouse shard: an INSERT is taken (its rows counted), any other
 * request is the sink's check of a bound batch and hears "not running, no rows". */
typedef struct fake_shard {
    int fd;
    uint16_t port;
    pthread_t th;
    atomic_ullong insert_rows;
    atomic_int inserts, checks;
} fake_shard;

static void fake_serve(fake_shard *f, int c)
{
    static char req[1 << 16];
    size_t got = 0, need = SIZE_MAX;
    while (got < sizeof req - 1 && got < need) {
        ssize_t r = read(c, req + got, sizeof req - 1 - got);
        if (r <= 0)
            return; /* the sink broke the request off before it sent it */
        got += (size_t)r;
        req[got] = 0;
        char *end = strstr(req, "\r\n\r\n");
        if (end && need == SIZE_MAX) {
            size_t len = 0;
            for (char *h = strstr(req, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
                if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
                    len = strtoul(h + 17, NULL, 10);
            need = (size_t)(end + 4 - req) + len;
        }
    }
    char *end = strstr(req, "\r\n\r\n");
    cr_assert(end != NULL && got == need, "a request the fake shard cannot read");
    const char *answer = "0\t0\n";
    if (strstr(req, "INSERT") && strstr(req, "INSERT") < strstr(req, "\r\n")) {
        atomic_fetch_add(&f->insert_rows, (got - (size_t)(end + 4 - req)) / SNK_ROW_BYTES);
        atomic_fetch_add(&f->inserts, 1);
        answer = "";
    } else {
        atomic_fetch_add(&f->checks, 1);
    }
    char out[256];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     strlen(answer), answer);
    cr_assert(eq(int, (int)write(c, out, (size_t)n), n));
}

static void *fake_main(void *arg)
{
    fake_shard *f = arg;
    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0)
            return NULL; /* shut down */
        fake_serve(f, c);
        close(c);
    }
}

Test(sink, a_bound_batch_whose_folder_sync_failed_is_sent_later_not_lost)
{
    fake_shard f = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert(f.fd >= 0);
    cr_assert(eq(int, bind(f.fd, (struct sockaddr *)&a, sizeof a), 0));
    cr_assert(eq(int, getsockname(f.fd, (struct sockaddr *)&a, &al), 0));
    f.port = ntohs(a.sin_port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", f.port);
    const char *urls[] = {url};
    /* bound but not listening: the shard refuses until the fault is armed */
    snk_sink *s = open_sink_at(urls, 1000, 1u << 30, true);
    append(s, 1700000000000, 10);
    snk_flush(s); /* spooled (the spool thread's own folder sync is behind us) */
    atomic_store(&fail_dir_fsyncs, 2); /* the bind's sync, then the first retry's */
    cr_assert(eq(int, listen(f.fd, 8), 0));
    cr_assert(eq(int, pthread_create(&f.th, NULL, fake_main, &f), 0));
    snk_stats st;
    wait_spool_empty(s, &st);
    cr_assert(eq(int, atomic_load(&fail_dir_fsyncs), 0), "the bind's folder sync never failed");
    cr_assert(eq(u64, st.dropped_batches, 0), "the batch was lost");
    cr_assert(eq(u64, st.rejected_batches, 0));
    cr_assert(eq(u64, st.batches_sent, 1));
    cr_assert(eq(u64, st.rows_sent, 10));
    cr_assert(eq(u64, (uint64_t)atomic_load(&f.insert_rows), 10), "the shard got other rows");
    cr_assert(eq(int, atomic_load(&f.inserts), 1));
    cr_assert(atomic_load(&f.checks) >= 2, "the bound batch was sent again unchecked");
    uint64_t bytes;
    cr_assert(eq(sz, spool_files(&bytes), 0));
    snk_close(s);
    shutdown(f.fd, SHUT_RDWR);
    close(f.fd);
    pthread_join(f.th, NULL);
}
