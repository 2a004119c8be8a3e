/* Integration: privileges. Started as root with `user = nobody`, the daemon opens its sockets,
 * database and log, gives the folder to nobody and becomes nobody for good (uid, gid, groups and
 * capabilities read from /proc), and still receives, stores and answers (skipped unless root).
 * Also: dist/ns2flows.service passes systemd-analyze verify without a word (skipped if absent). */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <grp.h>
#include <pwd.h>

/* The value fields of a /proc/<pid>/status line ("Uid:", "CapEff:"...) into out. */
static bool proc_status_line(pid_t pid, const char *key, char *out, size_t cap)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    bool found = false;
    if (!f)
        return false;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':') {
            const char *v = line + strlen(key) + 1;
            while (*v == '\t' || *v == ' ')
                v++;
            snprintf(out, cap, "%s", v);
            out[strcspn(out, "\n")] = 0;
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

static const char *write_conf(char *path, const char *text)
{
    strcpy(path, "/tmp/ns2flows-it-conf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

static uint64_t summary_flows(const it_daemon *d)
{
    char *body;
    uint64_t f = 0;
    cr_assert(eq(int, it_http_get(d->http, "/api/v1/summary", &body), 200));
    it_json_u64(body, "flows", &f);
    free(body);
    return f;
}

Test(it_privdrop, root_drops_to_user_and_still_stores, .timeout = 60)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to start the daemon as root");
    struct passwd *pw = getpwnam("nobody");
    if (!pw)
        cr_skip_test("no user nobody");
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    char conf[64], want[64], got[256], pcap[600];
    write_conf(conf, "user = nobody\n");
    const char *extra[] = {"-c", conf, NULL};
    it_daemon d;
    cr_assert(it_daemon_start_ex(&d, NULL, extra), "start as root with user = nobody");

    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)uid, uid, uid, uid);
    cr_assert(proc_status_line(d.pid, "Uid", got, sizeof got));
    cr_expect(eq(str, got, want), "real, effective, saved and fs uid");
    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)gid, gid, gid, gid);
    cr_assert(proc_status_line(d.pid, "Gid", got, sizeof got));
    cr_expect(eq(str, got, want), "real, effective, saved and fs gid");
    cr_assert(proc_status_line(d.pid, "Groups", got, sizeof got));
    cr_expect(strstr(got, "0 ") != got && strcmp(got, "0") != 0, "no root group left: '%s'", got);
    cr_assert(proc_status_line(d.pid, "CapEff", got, sizeof got));
    cr_expect(strcmp(got, "0000000000000000") == 0, "no capabilities left: %s", got);
    cr_assert(proc_status_line(d.pid, "CapPrm", got, sizeof got));
    cr_expect(strcmp(got, "0000000000000000") == 0, "none to regain: %s", got);
    cr_assert(proc_status_line(d.pid, "NoNewPrivs", got, sizeof got));
    cr_expect(strcmp(got, "1") == 0, "NoNewPrivs %s", got);

    /* the folder is now the user's, and ingest still works after the drop */
    struct stat st;
    cr_assert(stat(d.db, &st) == 0);
    cr_expect(eq(u32, (uint32_t)st.st_uid, (uint32_t)uid), "database folder given to nobody");
    snprintf(pcap, sizeof pcap, "%s/real/akvorado/netflow__nfv5.pcap", it_fixtures());
    cr_assert(eq(int, it_replay(&d, pcap), 0));
    for (int w = 0; w < it_ms(10000) && summary_flows(&d) < 29; w += 50)
        it_sleep_ms(50);
    cr_expect(eq(u64, summary_flows(&d), 29));
    cr_expect(eq(int, it_daemon_stop(&d), 0), "the final seal, as nobody, works");
    {
        /* the first configuration file is root's and 0600: the log warns SIGHUP cannot read it */
        char log0[400], t0[65536] = "";
        snprintf(log0, sizeof log0, "%s/ns2flowslog.txt", d.db);
        FILE *f0 = fopen(log0, "r");
        cr_assert(f0 != NULL);
        t0[fread(t0, 1, sizeof t0 - 1, f0)] = 0;
        fclose(f0);
        cr_expect(strstr(t0, "user nobody cannot read") != NULL, "%s", t0);
    }

    /* every file the daemon wrote belongs to nobody */
    DIR *dir = opendir(d.db);
    struct dirent *de;
    int segs = 0;
    cr_assert(dir != NULL);
    while ((de = readdir(dir)) != NULL) {
        char path[600];
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", d.db, de->d_name);
        cr_assert(lstat(path, &st) == 0);
        cr_expect(eq(u32, (uint32_t)st.st_uid, (uint32_t)uid), "%s owned by %u", path,
                  (unsigned)st.st_uid);
        size_t l = strlen(de->d_name);
        segs += l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0;
    }
    closedir(dir);
    cr_expect(segs > 0, "a segment was sealed");

    /* a second start (the folder is nobody's already) keeps the flows; with group = the
     * process runs with that group, and SIGHUP still reopens the log as nobody */
    char db[256], conf2[64], text2[128];
    snprintf(db, sizeof db, "%s", d.db);
    struct group *gr = getgrnam("daemon");
    gid_t gid2 = gr ? gr->gr_gid : gid;
    snprintf(text2, sizeof text2, "user = nobody\n%s", gr ? "group = daemon\n" : "");
    write_conf(conf2, text2);
    cr_assert(chmod(conf2, 0644) == 0); /* SIGHUP re-reads it as nobody */
    const char *extra2[] = {"-c", conf2, NULL};
    char log[400], text[65536] = "";
    snprintf(log, sizeof log, "%s/ns2flowslog.txt", db);
    unlink(log); /* only this run's lines */
    cr_assert(it_daemon_start_ex(&d, db, extra2));
    cr_expect(eq(u64, summary_flows(&d), 29));
    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)gid2, gid2, gid2, gid2);
    cr_assert(proc_status_line(d.pid, "Gid", got, sizeof got));
    cr_expect(eq(str, got, want), "group = daemon");
    cr_assert(kill(d.pid, SIGHUP) == 0);
    for (int w = 0; w < it_ms(5000) && !strstr(text, "log reopened"); w += 50) {
        it_sleep_ms(50);
        FILE *f = fopen(log, "r");
        cr_assert(f != NULL);
        text[fread(text, 1, sizeof text - 1, f)] = 0;
        fclose(f);
    }
    cr_expect(strstr(text, "reload: configuration re-read, log reopened") != NULL);
    cr_expect(strstr(text, "cannot reopen log") == NULL, "SIGHUP as nobody: %s", text);
    cr_expect(strstr(text, "running as user nobody") != NULL);
    cr_expect(strstr(text, "cannot read") == NULL, "the file is readable: no warning");
    cr_expect(eq(int, it_daemon_stop(&d), 0));
    unlink(conf);
    unlink(conf2);
    it_rm_rf(db);
}

Test(it_privdrop, unknown_user_or_group_refuses_to_start, .timeout = 30)
{
    char conf[64], bin[512], out[300];
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    snprintf(out, sizeof out, "%s.out", write_conf(conf, "user = no-such-user-ns2flows\n"));
    const char *check[] = {bin, "-c", conf, "--check-config", NULL};
    cr_expect(eq(int, it_run(check, out), 2));
    char text[4096] = "";
    FILE *f = fopen(out, "r");
    cr_assert(f != NULL);
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    cr_expect(strstr(text, "no such user") != NULL, "%s", text);
    unlink(conf);

    write_conf(conf, "group = nogroup\n");
    cr_expect(eq(int, it_run(check, out), 2), "group without user");
    unlink(conf);
    write_conf(conf, "user = root\n");
    cr_expect(eq(int, it_run(check, out), 2), "dropping to root is no drop");
    unlink(conf);
    unlink(out);
}

/* dist/ns2flows.service, filled in as `make install` does, passes systemd-analyze verify with no
 * complaint at all (it exits 0 even on unknown or malformed settings, so its output counts). */
Test(it_privdrop, systemd_unit_verifies_cleanly, .timeout = 30)
{
    const char *sa = "/usr/bin/systemd-analyze";
    char prefix[512], unit[128], out[160], cmd[1400];
    if (access(sa, X_OK) != 0)
        cr_skip_test("no systemd-analyze");
    /* ExecStart must name an existing program: point @PREFIX@ at the build */
    snprintf(prefix, sizeof prefix, "%s", it_bin());
    char *slash = strrchr(prefix, '/');
    cr_assert(slash != NULL && prefix[0] == '/', "NS_BIN must be absolute: %s", prefix);
    *slash = 0;
    snprintf(unit, sizeof unit, "/tmp/ns2flows-it-unit-%ld/ns2flows.service", (long)getpid());
    snprintf(out, sizeof out, "%s.out", unit);
    snprintf(cmd, sizeof cmd,
             "mkdir -p \"$(dirname %s)\" && sed 's|@PREFIX@|%s|g; s|@SYSCONFDIR@|/etc|g' "
             "dist/ns2flows.service > %s",
             unit, prefix, unit);
    cr_assert(eq(int, system(cmd), 0));
    const char *verify[] = {sa, "verify", unit, NULL};
    cr_expect(eq(int, it_run(verify, out), 0));
    char text[8192] = "";
    FILE *f = fopen(out, "r");
    cr_assert(f != NULL);
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    cr_expect(text[0] == 0, "systemd-analyze verify said: %s", text);
    snprintf(cmd, sizeof cmd, "rm -rf \"$(dirname %s)\"", unit);
    cr_expect(eq(int, system(cmd), 0));
}
