/* engine/config.c — netsaw.conf: one table drives parsing, validation (file:line: key: why),
 * --help-config and what SIGHUP may change. */
#include "engine/base.h"
#include "engine/store.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum {
    CT_STRING,
    CT_SIZE,
    CT_DURATION,
    CT_UINT,
    CT_HOSTPORT,
    CT_LISTEN,
    CT_LISTEN_SFLOW,
    CT_LOGLEVEL,
    CT_PREFIXES,
    CT_URLS,       /* clickhouse_url: repeatable, comma separated */
    CT_IDENT,      /* an SQL identifier: [A-Za-z_][A-Za-z0-9_]* */
    CT_BACKEND,    /* local | clickhouse */
    CT_ROLLUP_KEYS /* comma-separated roll-up key names (eng_rollup_keys_parse) */
} ctype;

typedef struct cfg_def {
    const char *name;
    ctype type;
    const char *def;
    size_t off;
    size_t size; /* for strings */
    uint64_t min, max;
    bool reloadable;
    const char *help;
} cfg_def;

#define F(field) offsetof(ns_config, field), sizeof(((ns_config *)0)->field)

static const cfg_def defs[] = {
    {"db_path", CT_STRING, "./SESSIONDB", F(db_path), 0, 0, false,
     "database folder (SESSIONDB): segments, lock, log"},
    {"db_budget", CT_SIZE, "10G", F(db_budget), 1u << 20, UINT64_MAX, true,
     "bytes everything under db_path may use (K/M/G/T); the oldest segments go first"},
    {"query_cache", CT_SIZE, "256M", F(query_cache), 0, UINT64_MAX, false,
     "decoded columns of sealed segments kept in memory for later queries (K/M/G); 0: none"},
    {"unsealed_memory", CT_SIZE, "1G", F(unsealed_memory), 64u << 20, UINT64_MAX, false,
     "memory for flows waiting to be sealed (K/M/G); past it received flows are dropped and "
     "counted (flows_dropped_memory) until sealing catches up"},
    {"retention", CT_DURATION, "0", F(retention_s), 0, UINT64_MAX, true,
     "delete flows older than this (s/m/h/d/w); 0 keeps them until the budget needs space"},
    {"rollup_share", CT_UINT, "30", F(rollup_share), 0, 90, true,
     "percent of db_budget kept for per-minute roll-ups of flows the budget deletes; "
     "0 = no roll-ups (raw segments are deleted directly)"},
    {"rollup_keys", CT_ROLLUP_KEYS, "srcaddr,dstaddr,proto,dstport,exporter,inif,outif",
     F(rollup_keys), 0, 0, true,
     "what a roll-up keeps per minute (bytes, packets, flows summed): any of srcaddr dstaddr "
     "proto dstport exporter inif outif srcport srcas dstas tos vlan"},
    {"listen", CT_LISTEN, "0.0.0.0:2055, [::]:2055", F(listen), 0, 0, false,
     "UDP ADDR:PORT for NetFlow/IPFIX, comma separated or repeated; [::]:PORT for IPv6"},
    {"listen_sflow", CT_LISTEN_SFLOW, "0.0.0.0:6343, [::]:6343", F(listen_sflow), 0, 0, false,
     "UDP ADDR:PORT for sFlow v5, comma separated or repeated"},
    {"ingest_threads", CT_UINT, "0", F(ingest_threads), 0, 64, false,
     "receive threads per listen address (SO_REUSEPORT); 0 = one per CPU core"},
    {"http_listen", CT_HOSTPORT, "127.0.0.1:8080", F(http_listen), 0, 0, false,
     "HTTP API ADDR:PORT; an empty value disables HTTP"},
    {"http_threads", CT_UINT, "4", F(http_threads), 1, 64, false,
     "HTTP worker threads (libmicrohttpd's thread pool); queries run in parallel up to this"},
    {"http_max_connections", CT_UINT, "1000", F(http_max_connections), 1, 100000, false,
     "HTTP connections open at once; more are refused until some close"},
    {"http_idle_timeout", CT_DURATION, "30", F(http_idle_timeout_s), 1, 3600, false,
     "close an HTTP connection that sends or reads nothing for this long (slow clients)"},
    {"http_query_timeout_ms", CT_UINT, "15000", F(http_query_timeout_ms), 0, 3600000, false,
     "an API answer not ready after this many ms is a 503 error; 0 waits for ever"},
    {"http_max_range", CT_DURATION, "0", F(http_max_range_s), 0, UINT64_MAX, false,
     "longest time range one query may cover (of the data held), e.g. 31d; 0 = no limit"},
    {"http_max_rows", CT_UINT, "10000", F(http_max_rows), 1, 10000, false,
     "largest `limit` of /api/v1/top and /api/v1/flows"},
    {"http_user", CT_STRING, "", F(http_user), 0, 0, false,
     "user name for HTTP basic auth on every path; empty = no authentication"},
    {"http_password_file", CT_STRING, "", F(http_password_file), 0, 0, false,
     "file whose first line is the basic-auth password (needed with http_user)"},
    {"http_tls_cert", CT_STRING, "", F(http_tls_cert), 0, 0, false,
     "PEM certificate (chain) file: serve HTTPS instead of HTTP; needs http_tls_key"},
    {"http_tls_key", CT_STRING, "", F(http_tls_key), 0, 0, false,
     "PEM private key file for http_tls_cert"},
    {"log_file", CT_STRING, "", F(log_file), 0, 0, true,
     "log file; empty means <db_path>/ns2flowslog.txt"},
    {"log_level", CT_LOGLEVEL, "info", F(log_level), 0, 0, true, "error, warn, info or debug"},
    {"rcvbuf", CT_SIZE, "32M", F(rcvbuf), 65536, 1u << 30, false,
     "UDP socket receive buffer in bytes (capped by net.core.rmem_max unless root)"},
    {"seal_delay", CT_DURATION, "2", F(seal_delay_s), 0, 3600, false,
     "seconds after a minute ends before it is sealed into a segment"},
    {"wal_sync_ms", CT_UINT, "1000", F(wal_sync_ms), 0, 60000, false,
     "milliseconds between fsyncs of the write-ahead log; a crash loses at most this window; "
     "0 = fsync as soon as flows arrive"},
    {"exporters_allow", CT_PREFIXES, "", F(exporters_allow), 0, 0, false,
     "only these exporters (comma-separated addresses or prefixes, v4 and v6); empty = all"},
    {"max_exporters", CT_UINT, "4096", F(max_exporters), 1, 1000000, false,
     "exporters tracked at most; datagrams from more are counted and dropped"},
    {"user", CT_STRING, "", F(user), 0, 0, false,
     "started as root: run as this user once sockets, database and log are open; empty = stay"},
    {"group", CT_STRING, "", F(group), 0, 0, false,
     "with user: run with this group instead of the user's primary group"},
    {"clickhouse_url", CT_URLS, "", F(clickhouse_url), 0, 0, false,
     "ClickHouse HTTP URL of each shard (http://HOST:8123/), comma separated or repeated; "
     "empty = no ClickHouse sink"},
    {"clickhouse_table", CT_IDENT, "flows", F(clickhouse_table), 0, 0, false,
     "table the sink inserts into on each shard; queries read <table>_all (Distributed)"},
    {"clickhouse_batch_rows", CT_UINT, "100000", F(clickhouse_batch_rows), 1, 1000000, false,
     "a ClickHouse batch is cut at this many rows"},
    {"clickhouse_batch_ms", CT_UINT, "2000", F(clickhouse_batch_ms), 10, 600000, false,
     "or this many milliseconds after its first row"},
    {"clickhouse_spool_max", CT_SIZE, "1G", F(clickhouse_spool_max), 1u << 20, UINT64_MAX, false,
     "bytes of unsent batches kept in <db_path>/spool; past it the oldest batch is dropped"},
    {"query_backend", CT_BACKEND, "local", F(query_backend), 0, 0, false,
     "where /api/v1/summary, /top and /series read: local (the embedded store) or clickhouse"},
};
#define NDEFS (sizeof defs / sizeof defs[0])

static const cfg_def *find_def(const char *key)
{
    for (size_t i = 0; i < NDEFS; i++)
        if (strcmp(defs[i].name, key) == 0)
            return &defs[i];
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

void ns_config_clear_listen(ns_config *cfg)
{
    cfg->nlisten = 0;
    cfg->listen_is_default = false;
}

void ns_config_clear_listen_sflow(ns_config *cfg)
{
    cfg->nlisten_sflow = 0;
    cfg->listen_sflow_is_default = false;
}

static int add_listen(char (*list)[80], int *n, bool *is_default, const char *val, char *err,
                      size_t errcap)
{
    char buf[1024];
    if (strlen(val) >= sizeof buf) {
        snprintf(err, errcap, "value too long");
        return NS_E_RANGE;
    }
    strcpy(buf, val);
    if (*is_default) {
        *n = 0;
        *is_default = false;
    }
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char host[64];
        uint16_t port;
        tok = trim(tok);
        if (!*tok)
            continue;
        if (ns_hostport_parse(tok, host, sizeof host, &port) < 0 || port == 0) {
            snprintf(err, errcap, "'%s' is not ADDR:PORT (IPv6 as [ADDR]:PORT)", tok);
            return NS_E_PARSE;
        }
        if (*n == NS_MAX_LISTEN) {
            snprintf(err, errcap, "more than %d listen addresses", NS_MAX_LISTEN);
            return NS_E_TOO_MANY;
        }
        snprintf(list[(*n)++], sizeof list[0], "%s", tok);
    }
    return 0;
}

/* clickhouse_url: "http://host:port/" entries, appended (an empty value clears the list). */
static int add_urls(ns_config *cfg, const char *val, char *err, size_t errcap)
{
    char buf[4096];
    if (strlen(val) >= sizeof buf) {
        snprintf(err, errcap, "value too long");
        return NS_E_RANGE;
    }
    strcpy(buf, val);
    if (!*trim(buf)) {
        cfg->nclickhouse_url = 0;
        return 0;
    }
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) {
            snprintf(err, errcap, "'%.64s' is not an http:// or https:// URL", tok);
            return NS_E_PARSE;
        }
        for (const char *q = tok; *q; q++) {
            if (isspace((unsigned char)*q) || *q == '"') {
                snprintf(err, errcap, "'%.64s': blank or quote inside a URL", tok);
                return NS_E_PARSE;
            }
        }
        if (strlen(tok) >= sizeof cfg->clickhouse_url[0]) {
            snprintf(err, errcap, "URL longer than %zu bytes", sizeof cfg->clickhouse_url[0] - 1);
            return NS_E_RANGE;
        }
        if (cfg->nclickhouse_url == NS_MAX_CH_URLS) {
            snprintf(err, errcap, "more than %d ClickHouse URLs", NS_MAX_CH_URLS);
            return NS_E_TOO_MANY;
        }
        snprintf(cfg->clickhouse_url[cfg->nclickhouse_url++], sizeof cfg->clickhouse_url[0], "%s",
                 tok);
    }
    return 0;
}

int ns_config_set(ns_config *cfg, const char *key, const char *val, char *err, size_t errcap)
{
    const cfg_def *d = find_def(key);
    char *base = (char *)cfg;
    uint64_t v = 0;
    int rc = 0;
    if (!d) {
        snprintf(err, errcap, "unknown key (ns2flows --help-config lists them)");
        return NS_E_UNKNOWN_KEY;
    }
    switch (d->type) {
    case CT_STRING:
        if (strlen(val) >= d->size) {
            snprintf(err, errcap, "value longer than %zu bytes", d->size - 1);
            return NS_E_RANGE;
        }
        memcpy(base + d->off, val, strlen(val) + 1);
        return 0;
    case CT_PREFIXES: {
        char tmp[1024];
        if (strlen(val) >= d->size) {
            snprintf(err, errcap, "value longer than %zu bytes", d->size - 1);
            return NS_E_RANGE;
        }
        strcpy(tmp, val);
        int count = 0;
        for (char *save = NULL, *tok = strtok_r(tmp, ", ", &save); tok;
             tok = strtok_r(NULL, ", ", &save)) {
            ns_prefix p;
            if (ns_prefix_parse(tok, &p) < 0) {
                snprintf(err, errcap, "'%s' is not an address or prefix", tok);
                return NS_E_PARSE;
            }
            if (++count > NS_MAX_PREFIXES) {
                snprintf(err, errcap, "more than %d prefixes", NS_MAX_PREFIXES);
                return NS_E_TOO_MANY;
            }
        }
        memcpy(base + d->off, val, strlen(val) + 1);
        return 0;
    }
    case CT_URLS:
        return add_urls(cfg, val, err, errcap);
    case CT_IDENT: {
        bool ok = *val && strlen(val) < d->size && !isdigit((unsigned char)*val);
        for (const char *q = val; *q; q++)
            if (!isalnum((unsigned char)*q) && *q != '_')
                ok = false;
        if (!ok) {
            snprintf(err, errcap, "'%.64s' is not a table name (letters, digits, _)", val);
            return NS_E_PARSE;
        }
        memcpy(base + d->off, val, strlen(val) + 1);
        return 0;
    }
    case CT_ROLLUP_KEYS: {
        uint32_t keys;
        if (strlen(val) >= d->size) {
            snprintf(err, errcap, "value longer than %zu bytes", d->size - 1);
            return NS_E_RANGE;
        }
        if ((rc = eng_rollup_keys_parse(val, &keys, err, errcap)) < 0)
            return rc;
        memcpy(base + d->off, val, strlen(val) + 1);
        return 0;
    }
    case CT_BACKEND:
        if (strcmp(val, "local") != 0 && strcmp(val, "clickhouse") != 0) {
            snprintf(err, errcap, "'%.64s' is not local or clickhouse", val);
            return NS_E_PARSE;
        }
        memcpy(base + d->off, val, strlen(val) + 1);
        return 0;
    case CT_LISTEN:
        return add_listen(cfg->listen, &cfg->nlisten, &cfg->listen_is_default, val, err, errcap);
    case CT_LISTEN_SFLOW:
        return add_listen(cfg->listen_sflow, &cfg->nlisten_sflow, &cfg->listen_sflow_is_default,
                          val, err, errcap);
    case CT_HOSTPORT: {
        char host[64];
        uint16_t port;
        if (*val && (ns_hostport_parse(val, host, sizeof host, &port) < 0 || port == 0)) {
            snprintf(err, errcap, "'%s' is not ADDR:PORT", val);
            return NS_E_PARSE;
        }
        snprintf(base + d->off, d->size, "%s", val);
        return 0;
    }
    case CT_LOGLEVEL: {
        ns_log_level l;
        if (ns_log_level_parse(val, &l) < 0) {
            snprintf(err, errcap, "'%s' is not one of error, warn, info, debug", val);
            return NS_E_PARSE;
        }
        memcpy(base + d->off, &l, sizeof l);
        return 0;
    }
    case CT_SIZE:
        rc = ns_size_parse(val, &v);
        if (rc < 0)
            snprintf(err, errcap, "'%s' is not a size (like 500M or 10G)", val);
        break;
    case CT_DURATION:
        rc = ns_duration_parse(val, &v);
        if (rc < 0)
            snprintf(err, errcap, "'%s' is not a duration (like 30, 90s, 15m, 7d)", val);
        break;
    case CT_UINT: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(val, &end, 10);
        if (!isdigit((unsigned char)*val) || *end || errno) {
            snprintf(err, errcap, "'%s' is not a whole number", val);
            rc = NS_E_PARSE;
        }
        v = u;
        break;
    }
    }
    if (rc < 0)
        return rc;
    if (v < d->min || v > d->max) {
        snprintf(err, errcap, "%llu is outside %llu..%llu", (unsigned long long)v,
                 (unsigned long long)d->min, (unsigned long long)d->max);
        return NS_E_RANGE;
    }
    memcpy(base + d->off, &v, sizeof v);
    return 0;
}

void ns_config_defaults(ns_config *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NDEFS; i++) {
        int rc = ns_config_set(cfg, defs[i].name, defs[i].def, err, sizeof err);
        (void)rc; /* the table's own defaults parse; test_base_config checks it */
    }
    cfg->listen_is_default = true;
    cfg->listen_sflow_is_default = true;
}

int ns_config_load(ns_config *cfg, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    char line[4096], why[512];
    int lineno = 0, rc = 0;
    if (!f) {
        rc = -errno;
        snprintf(err, errcap, "%s: cannot open: %s", path, strerror(errno));
        return rc;
    }
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errcap, "%s:%d: line longer than %zu bytes", path, lineno,
                     sizeof line - 2);
            rc = NS_E_PARSE;
            break;
        }
        /* '#' starts a comment unless it is inside a quoted value */
        bool quoted = false;
        for (char *q = line; *q; q++) {
            if (*q == '"')
                quoted = !quoted;
            else if (*q == '#' && !quoted) {
                *q = 0;
                break;
            }
        }
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errcap, "%s:%d: expected 'key = value'", path, lineno);
            rc = NS_E_PARSE;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        if (!*key) {
            snprintf(err, errcap, "%s:%d: missing key before '='", path, lineno);
            rc = NS_E_PARSE;
            break;
        }
        /* values may be quoted to keep spaces or '#' literal */
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        if ((rc = ns_config_set(cfg, key, val, why, sizeof why)) < 0) {
            snprintf(err, errcap, "%s:%d: %s: %s", path, lineno, key, why);
            break;
        }
    }
    fclose(f);
    return rc;
}

void ns_config_help(void *file)
{
    FILE *f = file;
    fprintf(f, "# netsaw.conf keys (key = value, '#' starts a comment)\n");
    for (size_t i = 0; i < NDEFS; i++) {
        fprintf(f, "\n# %s%s\n", defs[i].help, defs[i].reloadable ? " [reloadable]" : "");
        fprintf(f, "%s = %s\n", defs[i].name, defs[i].def);
    }
}

static bool same_list(const char (*a)[80], int na, const char (*b)[80], int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

int ns_config_diff_nonreloadable(const ns_config *a, const ns_config *b, char *buf, size_t cap)
{
    int n = 0;
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < NDEFS; i++) {
        const cfg_def *d = &defs[i];
        bool differs;
        if (d->reloadable)
            continue;
        if (d->type == CT_LISTEN) {
            differs = !same_list(a->listen, a->nlisten, b->listen, b->nlisten);
        } else if (d->type == CT_LISTEN_SFLOW) {
            differs =
                !same_list(a->listen_sflow, a->nlisten_sflow, b->listen_sflow, b->nlisten_sflow);
        } else if (d->type == CT_URLS) {
            differs = a->nclickhouse_url != b->nclickhouse_url;
            for (int k = 0; !differs && k < a->nclickhouse_url; k++)
                differs = strcmp(a->clickhouse_url[k], b->clickhouse_url[k]) != 0;
        } else if (d->type == CT_STRING || d->type == CT_HOSTPORT || d->type == CT_PREFIXES ||
                   d->type == CT_IDENT || d->type == CT_BACKEND || d->type == CT_ROLLUP_KEYS) {
            differs = strncmp((const char *)a + d->off, (const char *)b + d->off, d->size) != 0;
        } else {
            differs = memcmp((const char *)a + d->off, (const char *)b + d->off, d->size) != 0;
        }
        if (differs) {
            int w = snprintf(buf + used, cap - used, "%s%s", n ? ", " : "", d->name);
            if (w > 0 && (size_t)w < cap - used)
                used += (size_t)w;
            n++;
        }
    }
    return n;
}

void ns_config_log_path(const ns_config *cfg, char *buf, size_t cap)
{
    if (cfg->log_file[0])
        snprintf(buf, cap, "%s", cfg->log_file);
    else
        snprintf(buf, cap, "%s/ns2flowslog.txt", cfg->db_path);
}
