/* Integration: a full disk. As root, the test mounts a 4 MB tmpfs, fills most of it with a file
 * of its own, and runs the daemon with its database there (the log outside). Flows are replayed
 * until the WAL and then the seal fail with ENOSPC: the daemon keeps the flows in memory, counts
 * (wal_errors, seal_errors) and logs what happened, leaves no half-written file, and queries keep
 * answering. Then the filler is deleted: the minute is sealed, new flows are stored again, and
 * after a restart every flow is there once. Skipped when not root or when mount fails. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <sys/mount.h>

static uint64_t status_u64(const it_daemon *d, const char *key)
{
    char *body;
    uint64_t v = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
    cr_assert(it_json_u64(body, key, &v), "%s in %s", key, body);
    free(body);
    return v;
}

static uint64_t summary_flows(const it_daemon *d)
{
    char *body;
    uint64_t f = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/summary", &body), 200), "queries answer");
    it_json_u64(body, "flows", &f);
    free(body);
    return f;
}

static int count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        n += l > s && strcmp(de->d_name + l - s, suffix) == 0;
    }
    closedir(d);
    return n;
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    bool found = false;
    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void gen(const char *out, const char *flows, const char *seed)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows-gen", it_bin());
    const char *argv[] = {bin,  "--format", "v5", "--flows", flows, "--duration",
                          "60", "--seed",   seed, "--out",   out,   NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0));
}

/* Waits until the daemon has stored want flows in all (they arrive over UDP from loopback). */
static void wait_stored(const it_daemon *d, uint64_t want)
{
    for (int w = 0; w < it_ms(15000) && status_u64(d, "flows_stored") < want; w += 50)
        it_sleep_ms(50);
    cr_assert(eq(u64, status_u64(d, "flows_stored"), want));
}

Test(it_diskfull, full_disk_keeps_flows_in_memory_and_storing_resumes, .timeout = 150)
{
    char mnt[] = "/tmp/ns2flows-it-XXXXXX", db[300], filler[300], log[300], conf[300];
    char pcap1[300], pcap2[300], text[600];
    if (geteuid() != 0)
        cr_skip_test("needs root to mount a small tmpfs");
    cr_assert(mkdtemp(mnt) != NULL);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m") < 0) {
        rmdir(mnt);
        cr_skip_test("cannot mount a tmpfs: %s", strerror(errno));
    }
    snprintf(db, sizeof db, "%s/db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    /* everything but the database lives outside the small filesystem */
    snprintf(log, sizeof log, "%s.log", mnt);
    snprintf(conf, sizeof conf, "%s.conf", mnt);
    snprintf(pcap1, sizeof pcap1, "%s.1.pcap", mnt);
    snprintf(pcap2, sizeof pcap2, "%s.2.pcap", mnt);
    gen(pcap1, "20000", "1");
    gen(pcap2, "3000", "2");
    snprintf(text, sizeof text, "seal_delay = 0\nwal_sync_ms = 100\nlog_file = %s\n", log);
    FILE *f = fopen(conf, "w");
    cr_assert(f != NULL);
    fputs(text, f);
    fclose(f);

    /* leave about 400 KB: 20000 flows need ~1.5 MB of WAL and ~300 KB of segment */
    f = fopen(filler, "w");
    cr_assert(f != NULL);
    static char chunk[65536];
    memset(chunk, 0xa5, sizeof chunk);
    for (int i = 0; i < 58; i++)
        cr_assert(eq(sz, fwrite(chunk, 1, sizeof chunk, f), sizeof chunk));
    cr_assert(eq(int, fclose(f), 0));

    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, db, extra));
    cr_assert(eq(int, it_replay(&d, pcap1), 0));
    wait_stored(&d, 20000);
    cr_expect(status_u64(&d, "wal_errors") > 0, "the WAL ran out of space");
    cr_expect(eq(u64, summary_flows(&d), 20000), "queries answer from memory");

    /* the minute ends (seal_delay 0): sealing fails, the flows stay in memory */
    for (int w = 0; w < it_ms(75000) && status_u64(&d, "seal_errors") == 0; w += 200)
        it_sleep_ms(200);
    cr_assert(status_u64(&d, "seal_errors") > 0, "the seal never failed");
    cr_expect(eq(u64, status_u64(&d, "open_flows"), 20000));
    cr_expect(eq(u64, status_u64(&d, "flows_dropped"), 0));
    cr_expect(eq(int, count_suffix(db, ".tmp"), 0), "no half-written segment left");
    cr_expect(eq(int, count_suffix(db, ".seg"), 0));
    cr_expect(eq(u64, summary_flows(&d), 20000), "queries answer while the disk is full");
    cr_expect(file_has(log, "cannot seal minute"), "the log says the seal failed");
    cr_expect(file_has(log, "No space left on device"), "the log names the cause");
    cr_expect(file_has(log, "cannot write the WAL"), "the log says the WAL failed");

    /* space returns: the sealer's next retry stores the minute */
    cr_assert(eq(int, unlink(filler), 0));
    for (int w = 0; w < it_ms(20000) && status_u64(&d, "open_flows") > 0; w += 100)
        it_sleep_ms(100);
    cr_expect(eq(u64, status_u64(&d, "open_flows"), 0), "sealed once space returned");
    cr_expect(count_suffix(db, ".seg") > 0);
    uint64_t werr = status_u64(&d, "wal_errors");
    cr_assert(eq(int, it_replay(&d, pcap2), 0));
    wait_stored(&d, 23000);
    cr_expect(eq(u64, status_u64(&d, "wal_errors"), werr), "the WAL writes again");
    /* 70 bytes: the smallest WAL row (version 2, every field in its short form) */
    cr_expect(status_u64(&d, "wal_bytes") > 3000u * 70u, "the new flows are in the WAL");
    cr_expect(eq(u64, summary_flows(&d), 23000));
    cr_assert(eq(int, it_daemon_stop(&d), 0));

    cr_assert(it_daemon_start_ex(&d, db, extra));
    cr_expect(eq(u64, summary_flows(&d), 23000), "every flow once after a restart");
    cr_assert(eq(int, it_daemon_stop(&d), 0));
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows-dump", it_bin());
    const char *verify[] = {bin, "--verify", db, NULL};
    cr_expect(eq(int, it_run(verify, NULL), 0));

    cr_assert(eq(int, umount(mnt), 0));
    rmdir(mnt);
    unlink(log);
    unlink(conf);
    unlink(pcap1);
    unlink(pcap2);
}
