/* Integration: `ns2flows ingest` reports its sealing (the benchmark's seal rows/s) and `ns2flows
 * compact` merges the minute segments of closed hours and days of an ingested folder, keeping
 * every flow: the generator's totals, read back by ns2flows-query, before and after. */
#include "test/it/itlib.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <inttypes.h>

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
}

/* Runs argv; its output in out. Returns the exit status. */
static int run_out(const char *const *argv, const char *tmp, char *out, size_t cap)
{
    int rc = it_run(argv, tmp);
    slurp(tmp, out, cap);
    return rc;
}

static size_t count_segs(const char *db, char prefix)
{
    DIR *d = opendir(db);
    struct dirent *de;
    size_t n = 0;
    cr_assert(d != NULL);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == prefix && len > 4 && strcmp(de->d_name + len - 4, ".seg") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void totals(const char *db, const char *tmp, uint64_t *f, uint64_t *p, uint64_t *b)
{
    char bin[512], out[4096];
    snprintf(bin, sizeof bin, "%s/ns2flows-query", it_bin());
    const char *argv[] = {bin, "--db", db, "-I", "-o", "json", NULL};
    cr_assert(eq(int, run_out(argv, tmp, out, sizeof out), 0), "%s", out);
    cr_assert(it_json_u64(out, "flows", f) && it_json_u64(out, "packets", p) &&
                  it_json_u64(out, "bytes", b),
              "%s", out);
}

Test(it_compact, ingest_reports_sealing_and_compact_merges_closed_hours, .timeout = 60)
{
    char dir[] = "/tmp/ns2flows-it-compact-XXXXXX", db[300], pcap[300], tmp[300], bin[512],
         gen[512], out[4096];
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(pcap, sizeof pcap, "%s/c.pcap", dir);
    snprintf(tmp, sizeof tmp, "%s/out.txt", dir);
    snprintf(bin, sizeof bin, "%s/ns2flows", it_bin());
    snprintf(gen, sizeof gen, "%s/ns2flows-gen", it_bin());

    /* two hours of one closed day, 2026-01-01 */
    const char *g[] = {gen,    "--format", "v9", "--flows", "20000", "--duration",
                       "7200", "--seed",   "3",  "--out",   pcap,    NULL};
    cr_assert(eq(int, run_out(g, tmp, out, sizeof out), 0), "%s", out);
    uint64_t wf = 0, wp = 0, wb = 0;
    cr_assert(strstr(out, " flows=") && strstr(out, "packets=") && strstr(out, " bytes="), "%s",
              out);
    cr_assert(sscanf(strstr(out, " flows="), " flows=%" SCNu64, &wf) == 1, "%s", out);
    cr_assert(sscanf(strstr(out, "packets="), "packets=%" SCNu64, &wp) == 1, "%s", out);
    cr_assert(sscanf(strstr(out, " bytes="), " bytes=%" SCNu64, &wb) == 1, "%s", out);
    cr_assert(eq(u64, wf, 20000), "%s", out);

    const char *ing[] = {bin, "ingest", "--no-wal", "--db", db, pcap, NULL};
    cr_assert(eq(int, run_out(ing, tmp, out, sizeof out), 0), "%s", out);
    unsigned long rows = 0, segs = 0;
    const char *seal = strstr(out, "seal: ");
    cr_assert(seal && sscanf(seal, "seal: %lu rows, %lu segments", &rows, &segs) == 2, "%s", out);
    cr_expect(eq(u64, rows, 20000));
    size_t minutes = count_segs(db, 'm');
    cr_expect(eq(u64, segs, minutes));
    cr_assert(minutes > 100, "%zu minute segments", minutes);

    uint64_t f, p, b;
    totals(db, tmp, &f, &p, &b);
    cr_expect(eq(u64, f, wf));

    /* hours 0 and 1 merge, then the day; a second pass finds nothing left to merge */
    const char *cmp[] = {bin, "compact", "--db", db, NULL};
    cr_assert(eq(int, run_out(cmp, tmp, out, sizeof out), 0), "%s", out);
    unsigned long merges = 0, merged = 0, before = 0, after = 0, written = 0;
    cr_assert(sscanf(out,
                     "compact: %lu merges, %lu segments merged, %lu -> %lu segments, %*u -> %*u "
                     "bytes, %lu rows written",
                     &merges, &merged, &before, &after, &written) == 5,
              "%s", out);
    cr_expect(eq(u64, merges, 3), "%s", out);
    cr_expect(eq(u64, before, minutes));
    cr_expect(eq(u64, after, 1));
    cr_expect(eq(u64, merged, minutes + 2)); /* the minutes, then the two hour segments */
    /* every row once into the day segment, and those of the two full hours once before (the
     * last flows of the capture can open a third hour of one minute, merged only by the day) */
    cr_expect(written > wf + wf * 9 / 10 && written <= 2 * wf, "%lu rows written", written);
    cr_expect(eq(u64, count_segs(db, 'm'), 0));
    cr_expect(eq(u64, count_segs(db, 'd'), 1));

    totals(db, tmp, &f, &p, &b);
    cr_expect(eq(u64, f, wf));
    cr_expect(eq(u64, p, wp));
    cr_expect(eq(u64, b, wb));

    cr_assert(eq(int, run_out(cmp, tmp, out, sizeof out), 0), "%s", out);
    cr_expect(strncmp(out, "compact: 0 merges", 17) == 0, "%s", out);
    it_rm_rf(dir);
}
