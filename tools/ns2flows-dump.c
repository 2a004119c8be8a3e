/* tools/ns2flows-dump.c — segment inspector: a segment's header and columns (type, encoding,
 * sizes, checksum state), its address index and bloom filter, its rows as text, CSV or JSON, and
 * --verify (columns and index) for scripts and cron. */
#include "engine/store.h"

#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

typedef struct dump_opts {
    bool rows, csv, json, verify, quiet, list; /* csv: machine output (json is one too) */
} dump_opts;

static void fmt_time(int64_t ms, char *buf, size_t cap)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03dZ", (int)(ms % 1000 < 0 ? -(ms % 1000) : ms % 1000));
}

static void print_rows(const eng_flow *r, size_t n, bool csv, bool json)
{
    char t1[40], t2[40], s[64], d[64], e[64], nh[64];
    if (csv && !json)
        printf("first,last,exporter,src,dst,src_port,dst_port,proto,tcp_flags,tos,packets,bytes,"
               "in_if,out_if,src_as,dst_as,src_mask,dst_mask,nexthop,sampling,source_id,vlan,"
               "direction,flow_type,flows\n");
    for (size_t i = 0; i < n; i++) {
        fmt_time(r[i].first_ms, t1, sizeof t1);
        fmt_time(r[i].last_ms, t2, sizeof t2);
        ns_addr_fmt(&r[i].src, s, sizeof s);
        ns_addr_fmt(&r[i].dst, d, sizeof d);
        ns_addr_fmt(&r[i].exporter, e, sizeof e);
        ns_addr_fmt(&r[i].nexthop, nh, sizeof nh);
        if (json) /* JSON Lines: one object a flow, the columns by their names */
            printf("{\"first\":\"%s\",\"last\":\"%s\",\"exporter\":\"%s\",\"src\":\"%s\","
                   "\"dst\":\"%s\",\"src_port\":%u,\"dst_port\":%u,\"proto\":%u,"
                   "\"tcp_flags\":%u,\"tos\":%u,\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64
                   ",\"in_if\":%u,\"out_if\":%u,\"src_as\":%u,\"dst_as\":%u,\"src_mask\":%u,"
                   "\"dst_mask\":%u,\"nexthop\":\"%s\",\"sampling\":%u,\"source_id\":%u,"
                   "\"vlan\":%u,\"direction\":%u,\"flow_type\":%u,\"flows\":%" PRIu64 "}\n",
                   t1, t2, e, s, d, r[i].src_port, r[i].dst_port, r[i].proto, r[i].tcp_flags,
                   r[i].tos, r[i].packets, r[i].bytes, r[i].in_if, r[i].out_if, r[i].src_as,
                   r[i].dst_as, r[i].src_mask, r[i].dst_mask, nh, r[i].sampling, r[i].source_id,
                   r[i].vlan, r[i].direction, r[i].flow_type, eng_flow_count(&r[i]));
        else if (csv)
            printf("%s,%s,%s,%s,%s,%u,%u,%u,%u,%u,%" PRIu64 ",%" PRIu64
                   ",%u,%u,%u,%u,%u,%u,%s,%u,%u,%u,%u,%u,%" PRIu64 "\n",
                   t1, t2, e, s, d, r[i].src_port, r[i].dst_port, r[i].proto, r[i].tcp_flags,
                   r[i].tos, r[i].packets, r[i].bytes, r[i].in_if, r[i].out_if, r[i].src_as,
                   r[i].dst_as, r[i].src_mask, r[i].dst_mask, nh, r[i].sampling, r[i].source_id,
                   r[i].vlan, r[i].direction, r[i].flow_type, eng_flow_count(&r[i]));
        else
            printf("%s %s %-15s %5u -> %-15s %5u proto %3u flags 0x%02x pkts %" PRIu64
                   " bytes %" PRIu64 " if %u/%u as %u/%u rate %u flows %" PRIu64 "\n",
                   t1, t2, s, r[i].src_port, d, r[i].dst_port, r[i].proto, r[i].tcp_flags,
                   r[i].packets, r[i].bytes, r[i].in_if, r[i].out_if, r[i].src_as, r[i].dst_as,
                   r[i].sampling, eng_flow_count(&r[i]));
    }
}

/* Returns 0 when the segment is sound, 1 when any check failed. */
static int dump_one(const char *path, const dump_opts *o)
{
    eng_seg *s;
    int rc = eng_seg_open(path, &s), bad = 0;
    if (rc < 0) {
        printf("%s: %s\n", path, ns_strerror(rc));
        return 1;
    }
    const eng_seg_info *in = eng_seg_get_info(s);
    if (o->list) {
        /* one line a segment: what an operator scans to see where the bytes go */
        char t1[40], t2[40];
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        fmt_time(in->first_ms, t1, sizeof t1);
        fmt_time(in->last_ms, t2, sizeof t2);
        const char *tier = eng_seg_name_tier(base);
        printf("%-28s %-6s %s %s %10" PRIu64 " %12" PRIu64 " %6.1f %10" PRIu64 "\n", base,
               tier ? tier : "?", t1, t2, in->rows, in->file_size,
               in->flows ? (double)in->file_size / (double)in->flows : 0.0, in->flows);
        eng_seg_close(s);
        return 0;
    }
    if (!o->rows || !o->csv) {
        char t1[40], t2[40];
        fmt_time(in->first_ms, t1, sizeof t1);
        fmt_time(in->last_ms, t2, sizeof t2);
        /* the tier is in the name the database gives: m<minute>, h<hour>, d<day>, r<...> */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        const char *tier = eng_seg_name_tier(base);
        printf("%s: format %u, tier %s, %" PRIu64 " rows, %" PRIu64 " flows, %" PRIu64
               " bytes on disk (%.1f B/flow)\n",
               path, in->version, tier ? tier : "?", in->rows, in->flows, in->file_size,
               in->flows ? (double)in->file_size / (double)in->flows : 0.0);
        printf("  time %s .. %s, packets %" PRIu64 ", bytes %" PRIu64 "\n", t1, t2, in->packets,
               in->bytes);
        if (!o->quiet)
            printf("  %-10s %4s %-9s %10s %10s %10s  %s\n", "column", "type", "encoding", "offset",
                   "raw", "stored", "checksum");
    }
    static const char *const enc[] = {"plain", "transpose",   "delta",     "span",
                                      "dict",  "by-exporter", "by-address"};
    for (uint32_t i = 0; i < in->ncols; i++) {
        const eng_seg_colinfo *c = eng_seg_col(s, i);
        int v = eng_seg_verify_col(s, i);
        if (v < 0)
            bad = 1;
        if ((!o->rows || !o->csv) && (!o->quiet || v < 0))
            printf("  %-10s %4u %-9s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "  %s\n",
                   eng_col_name((eng_col)c->id), c->type,
                   c->encoding < sizeof enc / sizeof enc[0] ? enc[c->encoding] : "?", c->offset,
                   c->rsize, c->csize, v < 0 ? "BAD" : "ok");
    }
    /* the address index (format 3): its own checksum and structure */
    eng_seg_index_stats ix;
    int iv = eng_seg_index_check(s, &ix);
    if (iv < 0)
        bad = 1;
    if ((!o->rows || !o->csv) && (!o->quiet || iv < 0)) {
        if (in->version < 3)
            printf("  index      none (format %u)\n", in->version);
        else if (iv < 0)
            printf("  index      %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "  BAD (%s)\n",
                   in->index_offset, in->index_rsize, in->index_csize, ns_strerror(iv));
        else if (ix.src_fences)
            printf("  index      %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                   "  ok: blocks of %u rows; src %" PRIu64 " fences (rows sorted by src)"
                   "; dst %u buckets %" PRIu64 " entries\n"
                   "  bloom      %u bits, %u probes, %u bytes in the footer\n",
                   in->index_offset, in->index_rsize, in->index_csize, ix.block_rows, ix.entries[0],
                   ix.buckets[1], ix.entries[1], in->bloom_words * 64, in->bloom_k,
                   in->bloom_words * 8);
        else
            printf("  index      %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                   "  ok: blocks of %u rows; src %u buckets %" PRIu64
                   " entries; dst %u buckets %" PRIu64 " entries\n"
                   "  bloom      %u bits, %u probes, %u bytes in the footer\n",
                   in->index_offset, in->index_rsize, in->index_csize, ix.block_rows, ix.buckets[0],
                   ix.entries[0], ix.buckets[1], ix.entries[1], in->bloom_words * 64, in->bloom_k,
                   in->bloom_words * 8);
        if (in->version >= 6 && in->atot_csize == 0)
            printf("  addr totals none (no address on enough rows, or too many distinct)\n");
        else if (in->version >= 6 && iv == 0)
            printf("  addr totals %9" PRIu64 " %10" PRIu64 " %10" PRIu64 "  ok: %" PRIu64
                   " addresses on %" PRIu64 " rows or more\n",
                   in->atot_offset, in->atot_rsize, in->atot_csize, ix.atot_entries,
                   ix.atot_min_rows);
    }
    if ((o->rows || o->verify) && !bad) {
        eng_flow *rows = malloc((size_t)(in->rows ? in->rows : 1) * sizeof *rows);
        if (!rows) {
            eng_seg_close(s);
            return 1;
        }
        rc = eng_seg_read(s, ENG_COLS_ALL, rows);
        if (rc < 0) {
            printf("%s: cannot decode: %s\n", path, ns_strerror(rc));
            bad = 1;
        } else if (o->verify && (rc = eng_seg_addr_totals_verify(s, rows, (size_t)in->rows)) < 0) {
            printf("%s: address totals disagree with the rows: %s\n", path, ns_strerror(rc));
            bad = 1;
        } else if (o->rows) {
            print_rows(rows, (size_t)in->rows, o->csv, o->json);
        }
        free(rows);
    }
    eng_seg_close(s);
    return bad;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rows", no_argument, NULL, 'r'},
        {"csv", no_argument, NULL, 'C'},
        {"json", no_argument, NULL, 'J'},
        {"verify", no_argument, NULL, 'v'},
        {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    dump_opts o = {0};
    int c;
    while ((c = getopt_long(argc, argv, "rvlh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            o.rows = true;
            break;
        case 'C':
            o.rows = o.csv = true;
            break;
        case 'J':
            o.rows = o.csv = o.json = true;
            break;
        case 'v':
            o.verify = o.quiet = true;
            break;
        case 'l':
            o.list = true;
            break;
        case 'h':
            printf("usage: ns2flows-dump [--list] [--rows] [--csv|--json] [--verify] FILE|DIR...\n"
                   "  shows segment headers, columns and index; --list one line a segment\n"
                   "  (name, tier, first, last, rows, bytes, bytes a flow, flows);\n"
                   "  --rows prints the flows (--csv as CSV, --json as one JSON object a line);\n"
                   "  --verify checks every checksum (columns and address index) and decodes\n"
                   "  everything; exits 1 on any mismatch\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr,
                "usage: ns2flows-dump [--list] [--rows] [--csv|--json] [--verify] FILE|DIR...\n");
        return 2;
    }
    int bad = 0, checked = 0;
    for (int a = optind; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) < 0) {
            perror(argv[a]);
            bad = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= dump_one(argv[a], &o);
            checked++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0, cap = 0;
        while (d && (de = readdir(d)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len < 5 || strcmp(de->d_name + len - 4, ".seg") != 0)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                char **nn = realloc(names, cap * sizeof *nn);
                if (!nn)
                    break;
                names = nn;
            }
            size_t plen = strlen(argv[a]) + len + 2;
            names[n] = malloc(plen);
            if (!names[n])
                break;
            snprintf(names[n++], plen, "%s/%s", argv[a], de->d_name);
        }
        if (d)
            closedir(d);
        if (n > 1) /* an empty folder has no array: qsort(NULL, 0) is undefined */
            qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            bad |= dump_one(names[i], &o);
            checked++;
            free(names[i]);
        }
        free(names);
    }
    if (o.list && !o.verify)
        printf("%d segment%s\n", checked, checked == 1 ? "" : "s");
    if (o.verify)
        printf("verify: %d segment%s checked, %s\n", checked, checked == 1 ? "" : "s",
               bad ? "ERRORS FOUND" : "all checksums ok");
    return bad;
}
