/* Integration: kill -9 with the write-ahead log. The daemon is killed in the middle of a replay,
 * `ns2flows ingest` in the middle of sealing a capture of many minutes, and the restarted daemon
 * again while it seals what it replayed. Each time, before restarting, the test reads what is
 * durable itself (segment footers, WAL records up to the first bad one, a WAL whose segment
 * exists counted once); after the restart exactly that is stored, it is at least every flow
 * appended a few sync intervals before the kill, nothing is doubled or invented (the rows are
 * compared as a multiset with an offline ingest of the same capture), and
 * `ns2flows-dump --verify` is clean. */
#include "engine/store.h"
#include "engine/wal_int.h"
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>

static char *write_conf(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/ns2flows-it-conf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void gen(const char *out, const char *flows, const char *duration)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows-gen", it_bin());
    const char *argv[] = {bin,      "--format",    "v5", "--flows", flows, "--duration",
                          duration, "--exporters", "1",  "--out",   out,   NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0));
}

static void ingest(const char *db, const char *pcap)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    const char *argv[] = {bin, "ingest", "--no-wal", "--db", db, pcap, NULL};
    cr_assert(eq(int, it_run(argv, NULL), 0));
}

static int verify(const char *db)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/ns2flows-dump", it_bin());
    const char *argv[] = {bin, "--verify", db, NULL};
    return it_run(argv, NULL);
}

/* Every row of db as a CSV line (ns2flows-dump --rows --csv), sorted. */
typedef struct lines {
    char **v;
    size_t n;
} lines;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static lines dump_rows(const char *db)
{
    char bin[512], out[300];
    snprintf(bin, sizeof bin, "%s/ns2flows-dump", it_bin());
    snprintf(out, sizeof out, "%s.csv", db);
    const char *argv[] = {bin, "--rows", "--csv", db, NULL};
    cr_assert(eq(int, it_run(argv, out), 0));
    lines l = {0};
    size_t cap = 0;
    FILE *f = fopen(out, "r");
    char buf[1024];
    cr_assert(f != NULL);
    while (fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, "first,", 6) == 0 || buf[0] < '0' || buf[0] > '9')
            continue;
        if (l.n == cap) {
            cap = cap ? cap * 2 : 4096;
            l.v = realloc(l.v, cap * sizeof *l.v);
        }
        l.v[l.n++] = strdup(buf);
    }
    fclose(f);
    unlink(out);
    qsort(l.v, l.n, sizeof *l.v, cmp_str);
    return l;
}

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Rows of got that the reference does not have as often (doubled or invented). */
static size_t extra_rows(const lines *got, const lines *ref)
{
    size_t i = 0, j = 0, extra = 0;
    while (i < got->n) {
        int c = j < ref->n ? strcmp(got->v[i], ref->v[j]) : -1;
        if (c == 0) {
            i++;
            j++;
        } else if (c < 0) {
            if (extra < 5)
                fprintf(stderr, "not in the reference (or doubled): %s", got->v[i]);
            extra++;
            i++;
        } else {
            j++;
        }
    }
    return extra;
}

/* Flows on disk counted as a restart counts them, read independently of eng_db_open: every
 * segment's footer flows total (a roll-up row stands for many; a raw segment whose roll-up
 * r<name> exists counts in it), plus the good records of every WAL file whose segment (raw or
 * roll-up) does not exist yet. *in_wal gets the latter, *rollups the roll-up segments (either
 * may be NULL). */
static uint64_t durable_flows(const char *db, uint64_t *in_wal_out, int *rollups_out)
{
    char path[600];
    uint64_t flows = 0, in_wal = 0;
    int rollups = 0;
    DIR *d = opendir(db);
    struct dirent *de;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".seg") != 0)
            continue;
        eng_seg *s;
        struct stat rst;
        /* killed between publishing a roll-up and deleting its raw segment: both are on disk,
         * and the roll-up holds the flows (a start-up deletes the raw one) */
        snprintf(path, sizeof path, "%s/r%s", db, de->d_name);
        if (de->d_name[0] != 'r' && stat(path, &rst) == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", db, de->d_name);
        cr_assert(eq(int, eng_seg_open(path, &s), 0), "%s", path);
        flows += eng_seg_get_info(s)->flows;
        eng_seg_close(s);
        rollups += de->d_name[0] == 'r';
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/wal", db);
    d = opendir(path);
    while (d && (de = readdir(d)) != NULL) {
        int64_t minute;
        uint64_t seq;
        struct stat st;
        char seg[600], up[600];
        if (!eng__wal_name_parse(de->d_name, &minute, &seq))
            continue;
        snprintf(seg, sizeof seg, "%s/m%lld-%llu.seg", db, (long long)minute,
                 (unsigned long long)seq);
        snprintf(up, sizeof up, "%s/rm%lld-%llu.seg", db, (long long)minute,
                 (unsigned long long)seq);
        if (stat(seg, &st) == 0 || stat(up, &st) == 0)
            continue;
        eng__wal_scan sc;
        snprintf(path, sizeof path, "%s/wal/%s", db, de->d_name);
        if (eng__wal_read(path, NULL, NULL, &sc) == 0)
            in_wal += sc.rows;
    }
    if (d)
        closedir(d);
    if (in_wal_out)
        *in_wal_out = in_wal;
    if (rollups_out)
        *rollups_out = rollups;
    return flows + in_wal;
}

static uint64_t status_u64(const it_daemon *d, const char *key)
{
    char *body;
    uint64_t v = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/status", &body), 200));
    cr_assert(it_json_u64(body, key, &v), "%s in %s", key, body);
    free(body);
    return v;
}

static int count_segments(const char *db)
{
    DIR *d = opendir(db);
    struct dirent *de;
    int n = 0;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        n += l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0;
    }
    closedir(d);
    return n;
}

static void kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

Test(it_crash, kill_9_during_a_replay_keeps_every_synced_flow_once, .timeout = 120)
{
    char dir[] = "/tmp/ns2flows-it-XXXXXX", ref[] = "/tmp/ns2flows-it-XXXXXX", db[256], pcap[64];
    cr_assert(mkdtemp(dir) && mkdtemp(ref));
    snprintf(pcap, sizeof pcap, "%s/c.pcap", dir);
    gen(pcap, "40000", "600");
    ingest(ref, pcap);
    lines want = dump_rows(ref);
    cr_assert(eq(sz, want.n, 40000));

    char *conf = write_conf("wal_sync_ms = 100\n");
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, NULL, extra));
    snprintf(db, sizeof db, "%s", d.db);
    char bin[512], to[64];
    snprintf(bin, sizeof bin, "%s/ns2flows-replay", it_bin());
    snprintf(to, sizeof to, "127.0.0.1:%u", d.udp);
    pid_t rp = fork();
    if (rp == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, pcap, "--to", to, "--speed", "150", "--quiet", (char *)NULL);
        _exit(127);
    }
    cr_assert(rp > 0);
    /* 600 s of capture at 150x: about 4 s of sending; kill the daemon in the middle */
    it_sleep_ms(1500);
    uint64_t r0 = status_u64(&d, "flows_stored");
    it_sleep_ms(it_ms(700)); /* seven sync intervals: everything counted in r0 is on disk */
    uint64_t r1 = status_u64(&d, "flows_stored");
    kill9(d.pid);
    d.pid = 0;
    kill9(rp);
    cr_assert(r0 > 0, "nothing arrived before the kill");
    cr_assert(r1 < 40000, "the replay had finished before the kill");

    uint64_t in_wal, durable = durable_flows(db, &in_wal, NULL);
    cr_expect(durable >= r0, "flows appended before the last sync are durable: %llu < %llu",
              (unsigned long long)durable, (unsigned long long)r0);
    cr_expect(eq(int, verify(db), 0), "segments verify after kill -9");
    cr_assert(it_daemon_start_ex(&d, db, extra), "restart after kill -9");
    uint64_t replayed = status_u64(&d, "wal_replayed_flows");
    cr_expect(eq(u64, replayed, in_wal));
    cr_assert(eq(int, it_daemon_stop(&d), 0));

    lines got = dump_rows(db);
    cr_expect(eq(sz, extra_rows(&got, &want), 0), "nothing doubled, nothing invented");
    cr_expect(eq(u64, (uint64_t)got.n, durable), "exactly what was durable");
    cr_expect(eq(int, verify(db), 0));
    long long lost = (long long)r1 - (long long)got.n;
    printf("crash during replay: %llu flows stored at the last status before the kill (%llu "
           "0.7 s earlier, all durable); %llu stored after the restart (%llu from the WAL); "
           "%lld lost in the WAL's unsynced window (wal_sync_ms 100)%s\n",
           (unsigned long long)r1, (unsigned long long)r0, (unsigned long long)got.n,
           (unsigned long long)replayed, lost > 0 ? lost : 0,
           lost < 0 ? "; more arrived between the last status and the kill" : "");
    lines_free(&got);
    lines_free(&want);
    unlink(conf);
    it_rm_rf(db);
    it_rm_rf(ref);
    unlink(pcap);
    it_rm_rf(dir);
}

Test(it_crash, kill_9_while_sealing_many_minutes_loses_nothing_durable, .timeout = 120)
{
    char dir[] = "/tmp/ns2flows-it-XXXXXX", ref[] = "/tmp/ns2flows-it-XXXXXX";
    char db[] = "/tmp/ns2flows-it-XXXXXX", bin[512], pcap[64];
    cr_assert(mkdtemp(dir) && mkdtemp(ref) && mkdtemp(db));
    snprintf(pcap, sizeof pcap, "%s/s.pcap", dir);
    gen(pcap, "120000", "7200"); /* 120 minutes of capture time: 120 segments to seal */
    ingest(ref, pcap);
    lines want = dump_rows(ref);
    cr_assert(eq(sz, want.n, 120000));

    /* 1. ns2flows ingest killed while it seals minute after minute; seal_delay keeps an hour
     * of capture time open, so the WAL holds many minutes */
    char *conf = write_conf("wal_sync_ms = 0\nseal_delay = 3600\n");
    char confpath[64];
    snprintf(confpath, sizeof confpath, "%s", conf);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    pid_t ip = fork();
    if (ip == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "ingest", "-c", confpath, "--db", db, pcap, (char *)NULL);
        _exit(127);
    }
    cr_assert(ip > 0);
    int st = 0;
    bool killed = false;
    for (int w = 0; w < it_ms(30000); w++) {
        if (count_segments(db) >= 30) {
            kill(ip, SIGKILL);
            killed = true;
            break;
        }
        if (waitpid(ip, &st, WNOHANG) == ip)
            break;
        it_sleep_ms(1);
    }
    if (killed)
        waitpid(ip, &st, 0);
    cr_assert(killed && WIFSIGNALED(st), "ingest finished before it could be killed");
    int sealed_before = count_segments(db);
    uint64_t in_wal, durable = durable_flows(db, &in_wal, NULL);
    cr_expect(eq(int, verify(db), 0));
    cr_assert(in_wal > 0, "nothing was waiting in the WAL");

    /* 2. the daemon replays those minutes, and is killed again while it seals them */
    const char *extra[] = {"-c", confpath, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, db, extra));
    for (int w = 0; w < it_ms(20000) && count_segments(db) < sealed_before + 3; w++)
        it_sleep_ms(1);
    kill9(d.pid);
    d.pid = 0;
    int sealed_mid = count_segments(db);
    uint64_t in_wal2, durable2 = durable_flows(db, &in_wal2, NULL);
    cr_expect(eq(u64, durable2, durable), "a crash while sealing loses nothing and adds nothing");
    cr_expect(eq(int, verify(db), 0));

    /* 3. a last start seals the rest */
    cr_assert(it_daemon_start_ex(&d, db, extra));
    cr_assert(eq(int, it_daemon_stop(&d), 0));
    lines got = dump_rows(db);
    cr_expect(eq(sz, extra_rows(&got, &want), 0), "nothing doubled, nothing invented");
    cr_expect(eq(u64, (uint64_t)got.n, durable));
    cr_expect(eq(int, verify(db), 0));
    printf("crash while sealing: ingest killed after %d segments with %llu flows in the WAL; the "
           "daemon killed after sealing %d more; %zu of %zu flows stored at the end (the rest "
           "not yet read from the capture or in the unsynced window)\n",
           sealed_before, (unsigned long long)in_wal, sealed_mid - sealed_before, got.n, want.n);
    lines_free(&got);
    lines_free(&want);
    unlink(confpath);
    it_rm_rf(db);
    it_rm_rf(ref);
    unlink(pcap);
    it_rm_rf(dir);
}

/* No minute is both a raw segment and a roll-up. */
static void one_tier_per_segment(const char *db)
{
    DIR *d = opendir(db);
    struct dirent *de;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        char raw[600];
        struct stat st;
        if (de->d_name[0] != 'r' || strstr(de->d_name, ".seg") == NULL)
            continue;
        snprintf(raw, sizeof raw, "%s/%s", db, de->d_name + 1);
        cr_assert(ne(int, stat(raw, &st), 0), "%s and its roll-up both exist", de->d_name + 1);
    }
    closedir(d);
}

Test(it_crash, kill_9_while_rolling_up_counts_every_flow_once, .timeout = 120)
{
    char dir[] = "/tmp/ns2flows-it-XXXXXX", db[] = "/tmp/ns2flows-it-XXXXXX", bin[512], pcap[64];
    cr_assert(mkdtemp(dir) && mkdtemp(db));
    snprintf(pcap, sizeof pcap, "%s/r.pcap", dir);
    gen(pcap, "120000", "7200"); /* 120 minutes: the budget rolls up minute after minute */

    /* 1. ns2flows ingest into a 1 MB budget, 90% for roll-ups, killed while it rolls up */
    char *conf = write_conf("wal_sync_ms = 0\nseal_delay = 0\ndb_budget = 1M\nrollup_share = 90\n");
    char confpath[64];
    snprintf(confpath, sizeof confpath, "%s", conf);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    pid_t ip = fork();
    if (ip == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "ingest", "-c", confpath, "--db", db, pcap, (char *)NULL);
        _exit(127);
    }
    cr_assert(ip > 0);
    int st = 0, rollups = 0;
    bool killed = false;
    for (int w = 0; w < it_ms(30000); w++) {
        DIR *d = opendir(db);
        struct dirent *de;
        int n = 0;
        while (d && (de = readdir(d)) != NULL)
            n += de->d_name[0] == 'r';
        if (d)
            closedir(d);
        if (n >= 10) {
            kill(ip, SIGKILL);
            killed = true;
            break;
        }
        if (waitpid(ip, &st, WNOHANG) == ip)
            break;
        it_sleep_ms(1);
    }
    if (killed)
        waitpid(ip, &st, 0);
    cr_assert(killed && WIFSIGNALED(st), "ingest finished before it could be killed");
    uint64_t durable = durable_flows(db, NULL, &rollups);
    cr_assert(ge(int, rollups, 5)); /* the 10th may have been a .tmp being written */
    cr_expect(eq(int, verify(db), 0));

    /* 2. the daemon (no budget pressure now) replays the WAL and finishes any roll-up cut
     * short: the same flows, each once */
    char *conf2 = write_conf("db_budget = 10G\nrollup_share = 90\n");
    char confpath2[64];
    snprintf(confpath2, sizeof confpath2, "%s", conf2);
    const char *extra[] = {"-c", confpath2, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, db, extra));
    char *body;
    uint64_t flows = 0;
    cr_assert(eq(int, it_http_get(d.http, "/api/v1/summary", &body), 200));
    cr_assert(it_json_u64(body, "flows", &flows), "%s", body);
    cr_assert(strstr(body, "\"tier\":\"rollup\"") != NULL, "%s", body);
    free(body);
    cr_expect(eq(u64, flows, durable), "every flow on disk counted once");
    cr_assert(eq(int, it_daemon_stop(&d), 0));
    uint64_t after = durable_flows(db, NULL, &rollups);
    cr_expect(eq(u64, after, durable), "a restart loses nothing and adds nothing");
    cr_expect(le(u64, after, 120000));
    one_tier_per_segment(db);
    cr_expect(eq(int, verify(db), 0));
    printf("crash while rolling up: ingest killed with %d roll-up segments; %llu of 120000 flows "
           "on disk (the rest not yet read, or in roll-ups the budget deleted)\n",
           rollups, (unsigned long long)after);
    unlink(confpath);
    unlink(confpath2);
    it_rm_rf(db);
    unlink(pcap);
    it_rm_rf(dir);
}
