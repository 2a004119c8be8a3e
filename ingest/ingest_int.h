/* ingest/ingest_int.h — internals shared by the decoders and the exporter table. Not for other
 * modules. The template store lives per exporter; its lock is the exporter's. */
#ifndef ING_INGEST_INT_H
#define ING_INGEST_INT_H

#include "ingest/ingest.h"

/* Caps on what an exporter controls (over a cap: counted and dropped). */
#define ING_MAX_TEMPLATES 512    /* templates per exporter */
#define ING_MAX_FIELDS    128    /* fields per template */
#define ING_MAX_SAMPLERS  256    /* sampler table entries per exporter */
#define ING_PENDING_BYTES 262144 /* data held per exporter while its template is missing */
#define ING_PENDING_MS    60000  /* ... and for at most this long */
#define ING_MAX_PENDING   256    /* held sets per exporter */

typedef struct ing_tmpl_field {
    uint16_t ie;
    uint16_t len; /* 65535 = variable length (IPFIX) */
    uint32_t pen; /* enterprise number, 0 = IANA */
} ing_tmpl_field;

typedef struct ing_tmpl {
    uint32_t domain; /* v9 source ID / IPFIX observation domain */
    uint16_t id;
    uint8_t version; /* 9 or 10 */
    bool options;
    uint16_t scope_count;
    uint16_t nfields;
    uint32_t min_len;   /* bytes of a record with every varlen field empty */
    ing_tmpl_field f[]; /* nfields */
} ing_tmpl;

typedef struct ing_sampler {
    uint32_t domain;
    uint64_t id; /* UINT64_MAX: the domain's default (options without a sampler id) */
    uint32_t rate;
} ing_sampler;

typedef struct ing_pending {
    uint32_t domain;
    uint16_t tid;
    uint8_t version;
    int64_t recv_ms;
    int64_t export_ms;
    uint32_t uptime_ms; /* v9 header sysUptime */
    size_t len;
    uint8_t data[]; /* the data set's records */
} ing_pending;

/* Template-based protocol state of one exporter (v9 and IPFIX). */
typedef struct ing_nfstate {
    ing_tmpl *tmpls[ING_MAX_TEMPLATES];
    size_t ntmpls;
    ing_sampler samplers[ING_MAX_SAMPLERS];
    size_t nsamplers;
    int64_t sys_init_ms; /* IPFIX systemInitTimeMilliseconds, 0 = unknown */
    ing_pending *pending[ING_MAX_PENDING];
    size_t npending, pending_bytes;
    bool dirty; /* templates or samplers changed since the last save */
} ing_nfstate;

/* Counters the template decoders bump (kept in ing_exporter_stats). */
typedef struct ing_nfctx {
    ing_nfstate *nf;
    ing_exporter_stats *st;
    const ns_addr *exporter;
    int64_t recv_ms;
    ing_batch *out;
    size_t records;       /* data records of this message (IPFIX sequence), options ones too */
    bool records_unknown; /* a set was held: its record count is not known yet */
} ing_nfctx;

/* Whether data sets of simple templates are decoded column-wise (templates.c); tests turn it
 * off to compare with the record-by-record decoder. */
extern bool ing__fast_path;
extern _Atomic uint64_t ing__fast_sets; /* data sets it decoded (tests check it is used) */

void ing__nfstate_free(ing_nfstate *nf);
/* Adds a template read back from the state file (no pending release, no counters). */
int ing__nfstate_add_loaded(ing_nfstate *nf, ing_tmpl *t);

/* Parses a template set (or options template set) body. */
int ing__tmpl_set(ing_nfctx *c, uint8_t version, uint32_t domain, bool options, ns_cur set);
/* Decodes a data set body with template tid, or holds it until the template arrives. */
int ing__data_set(ing_nfctx *c, uint8_t version, uint32_t domain, uint16_t tid, int64_t export_ms,
                  uint32_t uptime_ms, ns_cur set);
/* Drops held data older than the limit. */
void ing__pending_expire(ing_nfctx *c);

/* The two message decoders (v9.c, ipfix.c). Return flows added or an ING_E_* code. Version,
 * sequence and domain are reported for sequence tracking. */
int ing__v9_decode(ing_nfctx *c, const uint8_t *pkt, size_t len, uint32_t *seq, uint32_t *domain);
int ing__ipfix_decode(ing_nfctx *c, const uint8_t *pkt, size_t len, uint32_t *seq,
                      uint32_t *domain);

#endif
