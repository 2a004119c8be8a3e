/* tools/ns2flows.c — the collector daemon: reads netsaw.conf and the command line, opens
 * SESSIONDB, starts the UDP listeners and the HTTP API, and waits for signals (SIGTERM/SIGINT:
 * drain and seal, exit 0; SIGHUP: reopen the log and reload what can be reloaded). */
#include "engine/query.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "sink/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

typedef struct override {
    const char *key;
    const char *val;
} override;

typedef struct cli {
    const char *config_path;
    override ov[64];
    int nov;
    bool foreground, check_only;
} cli;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ns2flows [options]\n"
            "  -c, --config FILE     read netsaw.conf FILE (options below override it)\n"
            "      --db DIR          database folder (default ./SESSIONDB)\n"
            "      --listen ADDR:PORT  UDP NetFlow/IPFIX listener; repeatable; [::]:PORT for IPv6\n"
            "      --listen-sflow ADDR:PORT  UDP sFlow listener; repeatable\n"
            "      --http ADDR:PORT  HTTP API address (default 127.0.0.1:8080)\n"
            "  -f, --foreground      stay in the foreground and log to stderr too\n"
            "      --check-config    validate the configuration and exit\n"
            "      --help-config     list every configuration key with its default\n"
            "      --version         print the version\n"
            "  -h, --help            this text\n");
}

static int parse_cli(int argc, char **argv, cli *c)
{
    enum { O_DB = 256, O_LISTEN, O_LISTEN_SFLOW, O_HTTP, O_CHECK, O_HELPCFG, O_VERSION };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"db", required_argument, NULL, O_DB},
        {"listen", required_argument, NULL, O_LISTEN},
        {"http", required_argument, NULL, O_HTTP},
        {"listen-sflow", required_argument, NULL, O_LISTEN_SFLOW},
        {"foreground", no_argument, NULL, 'f'},
        {"check-config", no_argument, NULL, O_CHECK},
        {"help-config", no_argument, NULL, O_HELPCFG},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    memset(c, 0, sizeof *c);
    while ((o = getopt_long(argc, argv, "c:fh", opts, NULL)) != -1) {
        const char *key = NULL;
        switch (o) {
        case 'c':
            c->config_path = optarg;
            break;
        case 'f':
            c->foreground = true;
            break;
        case O_DB:
            key = "db_path";
            break;
        case O_LISTEN:
            key = "listen";
            break;
        case O_LISTEN_SFLOW:
            key = "listen_sflow";
            break;
        case O_HTTP:
            key = "http_listen";
            break;
        case O_CHECK:
            c->check_only = true;
            break;
        case O_HELPCFG:
            ns_config_help(stdout);
            exit(0);
        case O_VERSION:
            printf("ns2flows %s\n", NS_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (key) {
            if (c->nov == (int)(sizeof c->ov / sizeof c->ov[0])) {
                fprintf(stderr, "ns2flows: too many options\n");
                return -1;
            }
            c->ov[c->nov].key = key;
            c->ov[c->nov++].val = optarg;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ns2flows: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Builds the configuration: defaults, then the file, then the command line. */
static int build_config(const cli *c, ns_config *cfg, char *err, size_t errcap)
{
    char why[512];
    bool cli_listen = false, cli_listen_sflow = false;
    ns_config_defaults(cfg);
    if (c->config_path) {
        int rc = ns_config_load(cfg, c->config_path, err, errcap);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < c->nov; i++) {
        if (strcmp(c->ov[i].key, "listen") == 0 && !cli_listen) {
            ns_config_clear_listen(cfg); /* the command line's list replaces the file's */
            cli_listen = true;
        }
        if (strcmp(c->ov[i].key, "listen_sflow") == 0 && !cli_listen_sflow) {
            ns_config_clear_listen_sflow(cfg);
            cli_listen_sflow = true;
        }
        int rc = ns_config_set(cfg, c->ov[i].key, c->ov[i].val, why, sizeof why);
        if (rc < 0) {
            snprintf(err, errcap, "command line: %s: %s", c->ov[i].key, why);
            return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

typedef struct daemon_ctx {
    ing_listener *listener;
    ing_exporters *exporters;
    snk_sink *sink; /* NULL without clickhouse_url */
} daemon_ctx;

static void status_extra(void *arg, ns_buf *out)
{
    daemon_ctx *d = arg;
    ing_listener_json(d->listener, out);
    ns_buf_puts(out, ",\"exporters\":");
    ing_exporters_json(d->exporters, out);
    ns_buf_printf(out, ",\"exporters_over_cap\":%llu,\"exporters_not_allowed\":%llu",
                  (unsigned long long)ing_exporters_overflow(d->exporters),
                  (unsigned long long)ing_exporters_refused(d->exporters));
    if (d->sink)
        snk_json(d->sink, out);
}

static void metrics_text(void *arg, ns_buf *out)
{
    daemon_ctx *d = arg;
    ing_listener_prometheus(d->listener, out);
    ns_buf_printf(out,
                  "# HELP ns2flows_exporters_over_cap_total Datagrams dropped: max_exporters "
                  "reached.\n# TYPE ns2flows_exporters_over_cap_total counter\n"
                  "ns2flows_exporters_over_cap_total %llu\n"
                  "# HELP ns2flows_exporters_not_allowed_total Datagrams dropped: sender not in "
                  "exporters_allow.\n# TYPE ns2flows_exporters_not_allowed_total counter\n"
                  "ns2flows_exporters_not_allowed_total %llu\n",
                  (unsigned long long)ing_exporters_overflow(d->exporters),
                  (unsigned long long)ing_exporters_refused(d->exporters));
    ing_exporters_prometheus(d->exporters, out);
    if (d->sink)
        snk_prometheus(d->sink, out);
}

static void startup_failed(const char *msg);

/* query_backend = clickhouse: the HTTP routes' backend calls these. */
static int ch_summary(void *arg, int64_t from, int64_t to, const char *filter, qry_totals *out)
{
    return snk_query_summary(arg, from, to, filter, out);
}

static int ch_top(void *arg, int64_t from, int64_t to, const char *filter, qry_by by,
                  qry_metric metric, size_t limit, qry_top_result *out)
{
    return snk_query_top(arg, from, to, filter, by, metric, limit, out);
}

static int ch_series(void *arg, int64_t from, int64_t step, size_t nb, const char *filter,
                     qry_totals *b)
{
    return snk_query_series(arg, from, step, nb, filter, b);
}

/* Opens the ClickHouse sink when clickhouse_url is set (its spool lives in SESSIONDB/spool) and
 * taps the database so it sees every row stored. *out stays NULL without clickhouse_url. */
static int open_sink(const ns_config *cfg, eng_db *db, snk_sink **out, char *err, size_t errcap)
{
    const char *urls[NS_MAX_CH_URLS];
    char spool[4200];
    *out = NULL;
    if (cfg->nclickhouse_url == 0) {
        if (strcmp(cfg->query_backend, "clickhouse") == 0) {
            snprintf(err, errcap, "query_backend = clickhouse needs clickhouse_url");
            return NS_E_PARSE;
        }
        return 0;
    }
    for (int i = 0; i < cfg->nclickhouse_url; i++)
        urls[i] = cfg->clickhouse_url[i];
    snprintf(spool, sizeof spool, "%s/spool", eng_db_dir(db));
    snk_opts so = {.urls = urls,
                   .nurls = (size_t)cfg->nclickhouse_url,
                   .table = cfg->clickhouse_table,
                   .spool_dir = spool,
                   .batch_rows = cfg->clickhouse_batch_rows,
                   .batch_ms = cfg->clickhouse_batch_ms,
                   .spool_max = cfg->clickhouse_spool_max};
    int rc = snk_open(&so, out, err, errcap);
    if (rc < 0)
        return rc;
    eng_db_set_tap(db, snk_append, *out);
    ns_log(NS_LOG_INFO, "clickhouse sink: %d shard(s), table %s, batches of %llu rows or %llu ms",
           cfg->nclickhouse_url, cfg->clickhouse_table,
           (unsigned long long)cfg->clickhouse_batch_rows,
           (unsigned long long)cfg->clickhouse_batch_ms);
    return 0;
}

static snk_sink *start_sink(const ns_config *cfg, eng_db *db)
{
    char err[1024];
    snk_sink *sink = NULL;
    if (open_sink(cfg, db, &sink, err, sizeof err) < 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "ns2flows: %s", err);
        eng_db_close(db);
        startup_failed(msg);
    }
    return sink;
}

static void exporters_json(void *arg, ns_buf *out)
{
    daemon_ctx *d = arg;
    ing_exporters_json(d->exporters, out);
}

/* Forks into the background. The parent waits on a pipe until the child reports that start-up
 * worked (exit 0) or why it failed (the message is printed, exit 1). */
static int report_fd = -1;
static bool log_file_open; /* before it is, a daemon's errors go only to the waiting parent */

static void daemonize(void)
{
    int p[2];
    if (pipe(p) < 0) {
        perror("ns2flows: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("ns2flows: fork");
        exit(1);
    }
    if (pid > 0) {
        char msg[1024];
        close(p[1]);
        ssize_t n = read(p[0], msg, sizeof msg - 1);
        if (n > 0 && msg[0] == 0)
            exit(0);
        if (n > 0) {
            msg[n] = 0;
            fprintf(stderr, "%s\n", msg);
        } else {
            fprintf(stderr, "ns2flows: start-up failed\n");
        }
        exit(1);
    }
    close(p[0]);
    report_fd = p[1];
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        close(null);
    }
}

static void startup_failed(const char *msg)
{
    /* in the foreground the log already copies to stderr; a daemon tells its waiting parent */
    if (report_fd >= 0) {
        ssize_t w = write(report_fd, msg, strlen(msg));
        (void)w;
        if (!log_file_open)
            exit(1);
    }
    ns_log(NS_LOG_ERROR, "%s", msg);
    exit(1);
}

static void startup_done(void)
{
    if (report_fd < 0)
        return;
    char ok = 0;
    ssize_t w = write(report_fd, &ok, 1);
    (void)w;
    close(report_fd);
    report_fd = -1;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDERR_FILENO);
        close(null);
    }
}

#define TEMPLATES_STATE "templates.bin"

/* Persists the exporters' templates and samplers so a restart decodes at once. */
static void save_templates(eng_db *db, ing_exporters *ex)
{
    ns_buf b = {0};
    ing_exporters_save(ex, &b);
    int rc = b.oom ? NS_E_NOMEM : eng_db_state_write(db, TEMPLATES_STATE, b.p, b.len);
    if (rc < 0)
        ns_log(NS_LOG_ERROR, "cannot save templates: %s", ns_strerror(rc));
    ns_buf_free(&b);
}

static void load_templates(eng_db *db, ing_exporters *ex)
{
    uint8_t *buf;
    size_t len;
    int rc = eng_db_state_read(db, TEMPLATES_STATE, &buf, &len);
    if (rc == -ENOENT)
        return;
    if (rc == 0) {
        rc = ing_exporters_load(ex, buf, len);
        free(buf);
    }
    if (rc < 0)
        ns_log(NS_LOG_WARN, "templates from the last run not used: %s; waiting for refreshes",
               ns_strerror(rc));
    else
        ns_log(NS_LOG_INFO, "templates of %d exporters restored from the last run", rc);
}

static int open_log(const ns_config *cfg, bool foreground)
{
    char path[4200];
    ns_config_log_path(cfg, path, sizeof path);
    ns_log_set_level(cfg->log_level);
    return ns_log_open(path, foreground);
}

/* The roll-up key columns the configuration names (validated when it was read). */
static uint32_t rollup_keys_of(const ns_config *cfg)
{
    uint32_t keys = 0;
    char err[256];
    if (eng_rollup_keys_parse(cfg->rollup_keys, &keys, err, sizeof err) < 0)
        keys = 0; /* the default */
    return keys;
}

static void reload(const cli *c, ns_config *cfg, eng_db *db, bool foreground)
{
    ns_config next;
    char err[1024], diff[512];
    if (build_config(c, &next, err, sizeof err) < 0) {
        ns_log(NS_LOG_ERROR, "reload: %s; keeping the running configuration", err);
        return;
    }
    if (ns_config_diff_nonreloadable(cfg, &next, diff, sizeof diff) > 0)
        ns_log(NS_LOG_WARN, "reload: %s changed; restart ns2flows to apply", diff);
    /* take only what can change at run time */
    cfg->db_budget = next.db_budget;
    cfg->retention_s = next.retention_s;
    cfg->rollup_share = next.rollup_share;
    memcpy(cfg->rollup_keys, next.rollup_keys, sizeof cfg->rollup_keys);
    cfg->log_level = next.log_level;
    memcpy(cfg->log_file, next.log_file, sizeof cfg->log_file);
    int rc = open_log(cfg, foreground);
    if (rc < 0)
        ns_log(NS_LOG_ERROR, "reload: cannot reopen log: %s", ns_strerror(rc));
    eng_db_set_rollup(db, (uint32_t)cfg->rollup_share, rollup_keys_of(cfg));
    eng_db_set_limits(db, cfg->db_budget, cfg->retention_s);
    ns_log(NS_LOG_INFO, "reload: configuration re-read, log reopened");
}

/* ------------------------------------------------------------------------------------------ */
/* Privileges: started as root with `user` set, the daemon opens its sockets, database and log
 * first, then gives the database folder to that user and becomes it for good. */

typedef struct run_as {
    bool drop; /* false: user unset, or already running as that user */
    uid_t uid;
    gid_t gid;
} run_as;

/* Resolved before anything is opened, so a misspelt name fails start-up at once. */
static int resolve_run_as(const ns_config *cfg, run_as *ra, char *err, size_t errcap)
{
    char buf[16384];
    memset(ra, 0, sizeof *ra);
    if (!cfg->user[0]) {
        if (cfg->group[0]) {
            snprintf(err, errcap, "group = %s needs user = as well", cfg->group);
            return -1;
        }
        return 0;
    }
    struct passwd pw, *pwp = NULL;
    if (getpwnam_r(cfg->user, &pw, buf, sizeof buf, &pwp) != 0 || !pwp) {
        snprintf(err, errcap, "user = %s: no such user", cfg->user);
        return -1;
    }
    if (pw.pw_uid == 0) {
        snprintf(err, errcap, "user = %s: that is root; name an unprivileged user", cfg->user);
        return -1;
    }
    ra->uid = pw.pw_uid;
    ra->gid = pw.pw_gid;
    if (cfg->group[0]) {
        struct group gr, *grp = NULL;
        if (getgrnam_r(cfg->group, &gr, buf, sizeof buf, &grp) != 0 || !grp) {
            snprintf(err, errcap, "group = %s: no such group", cfg->group);
            return -1;
        }
        if (gr.gr_gid == 0) {
            snprintf(err, errcap, "group = %s: that is root's group; name another", cfg->group);
            return -1;
        }
        ra->gid = gr.gr_gid;
    }
    if (geteuid() == ra->uid)
        return 0; /* started as that user already (systemd User=, su) */
    if (geteuid() != 0) {
        snprintf(err, errcap,
                 "user = %s: only root can switch to another user; start ns2flows as root or "
                 "as %s, or remove the key",
                 cfg->user, cfg->user);
        return -1;
    }
    ra->drop = true;
    return 0;
}

static uid_t chown_uid;
static gid_t chown_gid;
static int chown_errno;
static char chown_failed[4200];

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    if (st->st_uid == chown_uid && st->st_gid == chown_gid)
        return 0;
    if (lchown(path, chown_uid, chown_gid) < 0) {
        chown_errno = errno;
        snprintf(chown_failed, sizeof chown_failed, "%s", path);
        return 1;
    }
    return 0;
}

/* The database folder belongs to ns2flows: whatever in it is not yet the user's (a folder made
 * by an earlier run as root) is given to the user. Symbolic links are not followed and other
 * file systems not entered. A log file outside the folder is given over too, so SIGHUP can
 * reopen it. */
static int chown_db(const ns_config *cfg, const run_as *ra, char *err, size_t errcap)
{
    char log[4200];
    struct stat st;
    chown_uid = ra->uid;
    chown_gid = ra->gid;
    chown_errno = 0;
    if (nftw(cfg->db_path, chown_one, 16, FTW_PHYS | FTW_MOUNT) != 0) {
        snprintf(err, errcap, "cannot give %.900s to user %s: %s",
                 chown_errno ? chown_failed : cfg->db_path, cfg->user,
                 strerror(chown_errno ? chown_errno : errno));
        return -1;
    }
    ns_config_log_path(cfg, log, sizeof log);
    if (lstat(log, &st) == 0 && S_ISREG(st.st_mode) && chown_one(log, &st, 0, NULL) != 0) {
        snprintf(err, errcap, "cannot give the log %.900s to user %s: %s", log, cfg->user,
                 strerror(chown_errno));
        return -1;
    }
    return 0;
}

/* Becomes the user for good: supplementary groups, group, then user (glibc applies each to every
 * thread), and checks that root cannot be regained. */
static int drop_privileges(const ns_config *cfg, const run_as *ra, char *err, size_t errcap)
{
    if (initgroups(cfg->user, ra->gid) < 0) {
        snprintf(err, errcap, "initgroups(%s): %s", cfg->user, strerror(errno));
        return -1;
    }
    if (setgid(ra->gid) < 0 || setuid(ra->uid) < 0) {
        snprintf(err, errcap, "cannot become user %s: %s", cfg->user, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || getuid() != ra->uid ||
        geteuid() != ra->uid || getgid() != ra->gid || getegid() != ra->gid) {
        snprintf(err, errcap, "user %s: root privileges could not be given up", cfg->user);
        return -1;
    }
#ifdef __linux__
    /* nothing exec'd later can gain privileges either */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        ns_log(NS_LOG_WARN, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
#endif
    return 0;
}

/* Starts the HTTP API or fails start-up (stopping what runs). */
static void start_http(const http_opts *ho, http_server **http, ing_listener *l, snk_sink *sink,
                       eng_db *db)
{
    char err[1024];
    if (http_start(ho, http, err, sizeof err) < 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "ns2flows: %s", err);
        ing_listener_stop(l);
        snk_close(sink);
        eng_db_close(db);
        startup_failed(msg);
    }
}

#define OFFLINE_WAL_SYNC_MS 60000

/* Opens the database of an offline subcommand (ingest, compact) as the configuration says, with
 * --db's folder instead of db_path when given; no sealer thread: the command seals by capture
 * time or at the end. Prints "ns2flows CMD: why" and returns -1 on failure. */
static int open_offline_db(const char *cmd, ns_config *cfg, const char *db_path, bool no_wal,
                           eng_db **db)
{
    char err[1024];
    if (db_path)
        snprintf(cfg->db_path, sizeof cfg->db_path, "%s", db_path);
    eng_db_opts dbo = {.budget_bytes = cfg->db_budget,
                       .retention_s = cfg->retention_s,
                       .rollup_share = (uint32_t)cfg->rollup_share,
                       .rollup_keys = rollup_keys_of(cfg),
                       .no_sealer_thread = true,
                       .unsealed_bytes = cfg->unsealed_memory, /* ingest seals when full */
                       .seal_delay_s = cfg->seal_delay_s,      /* in capture time, for ingest */
                       /* the capture is the durable copy: the WAL guards against the command
                        * dying (the page cache outlives it), a machine crash means ingesting
                        * again. fsyncing it every second as the daemon does made a 10M-flow
                        * ingest wait 4 s on the disk; 0 (fsync as flows arrive) is kept */
                       .wal_sync_ms =
                           cfg->wal_sync_ms == 0 || cfg->wal_sync_ms > OFFLINE_WAL_SYNC_MS
                               ? cfg->wal_sync_ms
                               : OFFLINE_WAL_SYNC_MS,
                       .no_wal = no_wal};
    if (eng_db_open(cfg->db_path, &dbo, db, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows %s: %s\n", cmd, err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* `ns2flows ingest [--db DIR] [--dport P]... CAPTURE...`: offline ingest through the same
 * decoders, for back-filling and tests. */

static void ingest_progress(void *arg, const char *path, uint64_t datagrams, uint64_t flows)
{
    (void)arg;
    fprintf(stderr, "\r%s: %llu datagrams, %llu flows", path, (unsigned long long)datagrams,
            (unsigned long long)flows);
}

static int cmd_ingest(int argc, char **argv)
{
    enum { O_DB = 256, O_DPORT, O_NOWAL };
    static const struct option opts[] = {
        {"db", required_argument, NULL, O_DB},  {"dport", required_argument, NULL, O_DPORT},
        {"no-wal", no_argument, NULL, O_NOWAL}, {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    ns_config cfg;
    char err[1024];
    uint16_t dports[16];
    size_t ndports = 0;
    const char *db_path = NULL;
    bool no_wal = false;
    int o;
    ns_config_defaults(&cfg);
    optind = 1;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            if (ns_config_load(&cfg, optarg, err, sizeof err) < 0) {
                fprintf(stderr, "ns2flows ingest: %s\n", err);
                return 2;
            }
            break;
        case O_DB:
            db_path = optarg;
            break;
        case O_NOWAL: /* the capture is the durable copy: re-ingest it after a crash */
            no_wal = true;
            break;
        case O_DPORT: {
            char *end;
            unsigned long p = strtoul(optarg, &end, 10);
            if (*end || p == 0 || p > 65535 || ndports == 16) {
                fprintf(stderr, "ns2flows ingest: bad --dport '%s'\n", optarg);
                return 2;
            }
            dports[ndports++] = (uint16_t)p;
            break;
        }
        case 'h':
            printf("usage: ns2flows ingest [-c FILE] [--db DIR] [--dport PORT]... [--no-wal] "
                   "CAPTURE...\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: ns2flows ingest [-c FILE] [--db DIR] [--dport PORT]... [--no-wal] "
                        "CAPTURE...\n");
        return 2;
    }
    eng_db *db;
    ing_exporters *ex;
    if (open_offline_db("ingest", &cfg, db_path, no_wal, &db) < 0)
        return 1;
    if (ing_exporters_new(cfg.max_exporters, &ex) < 0) {
        eng_db_close(db);
        return 1;
    }
    ns_log_set_level(NS_LOG_ERROR);
    /* with clickhouse_url the flows also go to the sink's spool; what is not sent before the
     * end stays there for the daemon to send */
    snk_sink *sink = NULL;
    if (open_sink(&cfg, db, &sink, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows ingest: %s\n", err);
        eng_db_close(db);
        ing_exporters_free(ex);
        return 1;
    }
    ing_offline_opts oo = {.dports = dports,
                           .ndports = ndports,
                           .progress = isatty(STDERR_FILENO) ? ingest_progress : NULL};
    ing_offline_stats st;
    int64_t t0 = ns_mono_ms();
    int rc = ing_offline(db, ex, (const char *const *)(argv + optind), (size_t)(argc - optind), &oo,
                         &st, err, sizeof err);
    eng_db_set_tap(db, NULL, NULL);
    snk_close(sink); /* what was not sent goes to the spool */
    /* what eng_db_close() would seal, sealed here so that its time is counted below; a failure
     * is retried by the close and counted in rows_dropped */
    if (eng_db_seal_due(db, INT64_MAX, true) < 0)
        fprintf(stderr, "ns2flows ingest: sealing failed, retrying at close\n");
    eng_db_stats dst;
    eng_db_get_stats(db, &dst);
    eng_db_close(db); /* seals what is left */
    ing_exporters_free(ex);
    double secs = (double)(ns_mono_ms() - t0) / 1000.0;
    if (oo.progress)
        fputc('\n', stderr);
    printf("ingest: %llu files, %llu datagrams, %llu flows, %llu decode errors, %llu skipped, "
           "%llu not stored, %.2f s\n",
           (unsigned long long)st.files, (unsigned long long)st.datagrams,
           (unsigned long long)st.flows, (unsigned long long)st.decode_errors,
           (unsigned long long)st.skipped, (unsigned long long)st.store_dropped, secs);
    double seal_s = (double)dst.seal_ns / 1e9;
    printf("seal: %llu rows, %llu segments, %.3f s, %.0f rows/s\n",
           (unsigned long long)dst.rows_sealed, (unsigned long long)dst.segments, seal_s,
           seal_s > 0 ? (double)dst.rows_sealed / seal_s : 0.0);
    if (rc < 0) {
        fprintf(stderr, "ns2flows ingest: %s\n", err);
        return 1;
    }
    return 0;
}

/* `ns2flows compact [-c FILE] [--db DIR]`: merges what the daemon's compactor would (every
 * closed hour's minute segments, then every closed day's) once, now, and prints what it did and
 * how long it took. For back-filled folders and the benchmark; the database must not be open in
 * a daemon (the lock says so). */
static int cmd_compact(int argc, char **argv)
{
    enum { O_DB = 256 };
    static const struct option opts[] = {
        {"db", required_argument, NULL, O_DB},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ns_config cfg;
    char err[1024];
    const char *db_path = NULL;
    int o;
    ns_config_defaults(&cfg);
    optind = 1;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            if (ns_config_load(&cfg, optarg, err, sizeof err) < 0) {
                fprintf(stderr, "ns2flows compact: %s\n", err);
                return 2;
            }
            break;
        case O_DB:
            db_path = optarg;
            break;
        case 'h':
            printf("usage: ns2flows compact [-c FILE] [--db DIR]\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "usage: ns2flows compact [-c FILE] [--db DIR]\n");
        return 2;
    }
    eng_db *db;
    if (open_offline_db("compact", &cfg, db_path, false, &db) < 0)
        return 1;
    ns_log_set_level(NS_LOG_WARN);
    eng_db_stats before, after;
    eng_db_get_stats(db, &before);
    int64_t t0 = ns_mono_ms();
    int rc = eng_db_compact(db, ns_now_ms());
    double secs = (double)(ns_mono_ms() - t0) / 1000.0;
    eng_db_get_stats(db, &after);
    int crc = eng_db_close(db);
    double merge_s = (double)after.compact_ns / 1e9;
    printf("compact: %d merges, %llu segments merged, %llu -> %llu segments, %llu -> %llu bytes, "
           "%llu rows written, %.3f s merging, %.0f rows/s, %.2f s\n",
           rc < 0 ? 0 : rc, (unsigned long long)after.segments_compacted,
           (unsigned long long)before.segments, (unsigned long long)after.segments,
           (unsigned long long)before.disk_bytes, (unsigned long long)after.disk_bytes,
           (unsigned long long)after.rows_compacted, merge_s,
           merge_s > 0 ? (double)after.rows_compacted / merge_s : 0.0, secs);
    if (rc < 0 || crc < 0) {
        fprintf(stderr, "ns2flows compact: %s\n", ns_strerror(rc < 0 ? rc : crc));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli c;
    if (argc > 1 && strcmp(argv[1], "ingest") == 0)
        return cmd_ingest(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "compact") == 0)
        return cmd_compact(argc - 1, argv + 1);
    ns_config cfg;
    char err[1024];
#ifdef M_MMAP_THRESHOLD
    /* Queries allocate and free megabytes (group tables, scan buffers) many times a second:
     * served from mmap, every one paid its page faults again (a fifth of a device view's
     * time). From the heap, and not trimmed back at once, the pages are reused; the peak
     * stays what it was, so the RSS is as flat as before, only not given back between queries. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    if (parse_cli(argc, argv, &c) < 0)
        return 2;
    if (build_config(&c, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows: %s\n", err);
        return 2;
    }
    run_as ra;
    if (resolve_run_as(&cfg, &ra, err, sizeof err) < 0) {
        fprintf(stderr, "ns2flows: %s\n", err);
        return 2;
    }
    if (c.check_only) {
        printf("ns2flows: configuration OK\n");
        return 0;
    }
    if (!c.foreground)
        daemonize();

    /* Signals are taken synchronously by this thread only: every thread started below inherits
     * the blocked mask, and no handler runs inside library code. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t start_ms = ns_now_ms();
    ns_log_set_level(cfg.log_level);
    eng_db_opts dbo = {.budget_bytes = cfg.db_budget,
                       .retention_s = cfg.retention_s,
                       .rollup_share = (uint32_t)cfg.rollup_share,
                       .rollup_keys = rollup_keys_of(&cfg),
                       .seal_delay_s = cfg.seal_delay_s,
                       .wal_sync_ms = cfg.wal_sync_ms,
                       .cache_bytes = cfg.query_cache,
                       .unsealed_bytes = cfg.unsealed_memory,
                       .compactor = true};
    eng_db *db = NULL;
    if (eng_db_open(cfg.db_path, &dbo, &db, err, sizeof err) < 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "ns2flows: %s", err);
        startup_failed(msg);
    }
    int rc = open_log(&cfg, c.foreground);
    if (rc < 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "ns2flows: cannot open log file: %s", ns_strerror(rc));
        startup_failed(msg);
    }
    log_file_open = true;

    ing_exporters *ex = NULL;
    if (ing_exporters_new(cfg.max_exporters, &ex) < 0)
        startup_failed("ns2flows: out of memory");
    if (ing_exporters_allow(ex, cfg.exporters_allow) < 0)
        startup_failed("ns2flows: exporters_allow: bad prefix list");
    load_templates(db, ex);
    snk_sink *sink = start_sink(&cfg, db);
    const char *addrs[2 * NS_MAX_LISTEN], *kinds[2 * NS_MAX_LISTEN];
    int naddrs = 0;
    for (int i = 0; i < cfg.nlisten; i++) {
        kinds[naddrs] = "netflow";
        addrs[naddrs++] = cfg.listen[i];
    }
    for (int i = 0; i < cfg.nlisten_sflow; i++) {
        kinds[naddrs] = "sflow";
        addrs[naddrs++] = cfg.listen_sflow[i];
    }
    /* With a user to drop to, the receive threads parse nothing and HTTP answers nothing until
     * the drop: only binding happens as root (HTTP on a port below 1024 has to start before,
     * and so answers as root for the few milliseconds until the drop). */
    ing_listener_opts lo = {.addrs = addrs,
                            .kinds = kinds,
                            .naddrs = naddrs,
                            .threads = (unsigned)cfg.ingest_threads,
                            .rcvbuf = cfg.rcvbuf,
                            .hold = ra.drop};
    ing_listener *l = NULL;
    if (ing_listener_start(&lo, ex, db, &l, err, sizeof err) < 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "ns2flows: %s", err);
        snk_close(sink);
        eng_db_close(db);
        startup_failed(msg);
    }
    daemon_ctx dctx = {.listener = l, .exporters = ex, .sink = sink};
    http_backend chb = {.arg = sink,
                        .summary = ch_summary,
                        .top = ch_top,
                        .series = ch_series,
                        .error = snk_query_error};
    http_server *http = NULL;
    http_opts ho = {.listen = cfg.http_listen,
                    .db = db,
                    .start_ms = start_ms,
                    .status_extra = status_extra,
                    .status_arg = &dctx,
                    .exporters = exporters_json,
                    .exporters_arg = &dctx,
                    .metrics = metrics_text,
                    .metrics_arg = &dctx,
                    .threads = (unsigned)cfg.http_threads,
                    .max_limit = (size_t)cfg.http_max_rows,
                    .max_connections = (unsigned)cfg.http_max_connections,
                    .idle_timeout_s = (unsigned)cfg.http_idle_timeout_s,
                    .query_timeout_ms = (unsigned)cfg.http_query_timeout_ms,
                    .max_range_ms =
                        (int64_t)(cfg.http_max_range_s > INT64_MAX / 1000 ? INT64_MAX / 1000
                                                                          : cfg.http_max_range_s) *
                        1000,
                    .user = cfg.http_user,
                    .password_file = cfg.http_password_file,
                    .tls_cert = cfg.http_tls_cert,
                    .tls_key = cfg.http_tls_key,
                    .backend = sink && strcmp(cfg.query_backend, "clickhouse") == 0 ? &chb : NULL};
    char hhost[64];
    uint16_t hport = 0;
    /* before the drop: a port below 1024, and secrets (password file, TLS key) that only root
     * may read; they are read once, at start */
    bool http_first =
        cfg.http_listen[0] &&
        (!ra.drop || ns_hostport_parse(cfg.http_listen, hhost, sizeof hhost, &hport) < 0 ||
         hport < 1024 || cfg.http_password_file[0] || cfg.http_tls_key[0]);
    if (http_first)
        start_http(&ho, &http, l, sink, db);
    if (ra.drop) {
        if (chown_db(&cfg, &ra, err, sizeof err) < 0 ||
            drop_privileges(&cfg, &ra, err, sizeof err) < 0) {
            char msg[1100];
            snprintf(msg, sizeof msg, "ns2flows: %s", err);
            ing_listener_stop(l);
            http_stop(http);
            snk_close(sink);
            eng_db_close(db);
            startup_failed(msg);
        }
        ns_log(NS_LOG_INFO, "running as user %s (uid %ld, gid %ld)", cfg.user, (long)ra.uid,
               (long)ra.gid);
        /* SIGHUP re-reads the file as the user */
        if (c.config_path && access(c.config_path, R_OK) < 0)
            ns_log(NS_LOG_WARN,
                   "user %s cannot read %s (%s): SIGHUP will keep the running configuration; "
                   "make it readable to the user's group (chgrp, chmod 640)",
                   cfg.user, c.config_path, strerror(errno));
    }
    ing_listener_go(l);
    if (cfg.http_listen[0] && !http)
        start_http(&ho, &http, l, sink, db);
    if (!ra.drop && geteuid() == 0)
        ns_log(NS_LOG_WARN, "running as root; set user = to drop privileges after start-up");
    eng_db_stats st;
    eng_db_get_stats(db, &st);
    char lsn[2 * NS_MAX_LISTEN * 100] = "";
    for (int i = 0; i < 2 * NS_MAX_LISTEN; i++) {
        char a[96];
        if (!ing_listener_addr(l, i, a, sizeof a))
            break;
        strcat(lsn, " ");
        strcat(lsn, a);
    }
    ns_log(NS_LOG_INFO, "ns2flows %s started (pid %ld): db %s (%llu segments),%s, http %s",
           NS_VERSION, (long)getpid(), cfg.db_path, (unsigned long long)st.segments, lsn,
           cfg.http_listen[0] ? cfg.http_listen : "off");
    startup_done();

    for (unsigned tick = 1;; tick++) {
        siginfo_t si;
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&sigs, &si, &ts);
        if (tick % 10 == 0 && ing_exporters_dirty(ex))
            save_templates(db, ex);
        if (sig == SIGHUP) {
            reload(&c, &cfg, db, c.foreground);
        } else if (sig == SIGTERM || sig == SIGINT) {
            ns_log(NS_LOG_INFO, "signal %d: stopping (draining ingest, sealing open minutes)", sig);
            break;
        }
    }
    ing_listener_stop(l); /* stop receiving first: nothing arrives after the final seal */
    http_stop(http);
    eng_db_set_tap(db, NULL, NULL);
    snk_close(sink); /* what is still in memory goes to the spool, for the next run */
    save_templates(db, ex);
    eng_db_get_stats(db, &st);
    int close_rc = eng_db_close(db);
    ing_exporters_free(ex);
    if (close_rc < 0) {
        ns_log(NS_LOG_ERROR, "stopped with unsealed flows lost: %s", ns_strerror(close_rc));
        ns_log_close();
        return 1;
    }
    ns_log(NS_LOG_INFO, "stopped cleanly; %llu flows stored this run",
           (unsigned long long)st.rows_stored);
    ns_log_close();
    return 0;
}
