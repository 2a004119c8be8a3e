/* ingest/sflow.h — sFlow version 5 (sflow.org, "sFlow Version 5", July 2004) datagram decoding:
 * flow samples become flow rows, counter samples update a per-exporter interface table.
 * Internal to ingest/. The state is per exporter and is NOT thread-safe: the exporter table's
 * per-exporter mutex guards it (as it guards ing_nfstate). */
#ifndef ING_SFLOW_H
#define ING_SFLOW_H

#include "ingest/ingest.h"

/* Errors: the block -11100..-11199 (-11150..-11159 belong to ingest/packet.h). */
enum {
    ING_E_SFLOW_AGENT = -11100,      /* agent address type is neither 1 (IPv4) nor 2 (IPv6) */
    ING_E_SFLOW_SAMPLES = -11101,    /* more samples than ING_SFLOW_MAX_SAMPLES: dropped whole */
    ING_E_SFLOW_SAMPLE_LEN = -11102, /* a sample's length runs past the datagram */
    ING_E_SFLOW_COUNT = -11103,      /* the datagram ends before its sample count is reached */
    ING_E_SFLOW_SAMPLE = -11104,     /* a sample's fields or records do not fit its length */
    ING_E_SFLOW_CAP = -11105,        /* a sample over a cap (records, header bytes): dropped */
};

/* Caps on what an agent controls; over a cap: counted (over_cap) and dropped. */
#define ING_SFLOW_MAX_SAMPLES 1024 /* samples per datagram */
#define ING_SFLOW_MAX_RECORDS 64   /* flow or counter records per sample */
#define ING_SFLOW_MAX_HEADER  1024 /* bytes of a sampled_header record's header */
#define ING_SFLOW_MAX_IFS     1024 /* interface table entries per exporter */

/* The latest generic interface counters (counter record 0:1) of one ifIndex, and the agent's
 * drop counter of flow samples whose data source is that ifIndex. */
typedef struct ing_sflow_if {
    uint32_t ifindex;
    uint64_t speed;      /* ifSpeed, bits/s */
    uint64_t in_octets;  /* ifInOctets */
    uint64_t out_octets; /* ifOutOctets */
    uint32_t in_ucast;   /* ifInUcastPkts */
    uint32_t out_ucast;  /* ifOutUcastPkts */
    uint32_t in_errors;  /* ifInErrors */
    uint32_t out_errors; /* ifOutErrors */
    uint32_t drops;      /* last `drops` of a flow sample from this data source (cumulative) */
    bool has_counters;   /* false: only flow samples named this ifIndex so far */
    bool has_drops;
    int64_t updated_ms; /* receive time of the last counter record, 0 = none */
} ing_sflow_if;

/* Per-exporter sFlow state. Make it zeroed (ing__sflow_state_new or calloc); it holds no
 * pointers, so it may also live inside another struct. */
typedef struct ing_sflow_state {
    uint64_t datagrams;       /* datagrams given to ing__sflow_decode */
    uint64_t datagrams_bad;   /* ... refused whole: short, version, agent type, sample cap */
    uint64_t flow_samples;    /* flow samples (compact 0:1 and expanded 0:3) decoded */
    uint64_t counter_samples; /* counter samples (0:2 and 0:4) decoded */
    uint64_t samples_skipped; /* sample formats we do not decode, skipped by their length */
    uint64_t records_skipped; /* flow / counter record formats we do not use, skipped likewise */
    uint64_t samples_bad;     /* samples whose length lies or whose records do not fit */
    uint64_t over_cap;        /* samples (or whole datagrams) dropped at a cap */
    uint64_t non_ip;          /* flow samples whose packet had no IP header (row still made) */
    uint64_t rows_dropped;    /* flow samples that found the caller's batch full */
    uint64_t agent_drops;     /* sum of increases of the agents' `drops` counters */
    uint64_t ifs_refused;     /* counter records of a new ifIndex with the table full */
    size_t nifs;
    ing_sflow_if ifs[ING_SFLOW_MAX_IFS]; /* sorted by ifindex */
} ing_sflow_state;

/* Allocates a zeroed state; *out is owned by the caller, released with ing__sflow_state_free.
 * Returns 0 or NS_E_NOMEM. */
int ing__sflow_state_new(ing_sflow_state **out);
void ing__sflow_state_free(ing_sflow_state *st); /* NULL is fine */

/* Decodes one sFlow v5 datagram (pkt, len: borrowed for the call) received from `from` at
 * recv_ms, appending one row per flow sample to out while out->n < out->cap (a sample that
 * finds the batch full is counted in rows_dropped; the call never returns ING_E_BATCH).
 * Rows: first_ms = last_ms = recv_ms; exporter = the agent address of the datagram header
 * (`from` when the agent says 0.0.0.0 or ::); source_id = sub-agent id; in_if/out_if from the
 * sample (0 when the interface format is not an ifIndex: discarded, multiple); sampling =
 * sampling_rate (0 taken as 1); packets = sampling; bytes = frame length × sampling; packet
 * fields from the sampled_header (ing__packet_decode), else from sampled_ipv4 / sampled_ipv6;
 * vlan from the header, else extended_switch's src_vlan; nexthop and masks from
 * extended_router; flow_type = ENG_FT_SFLOW5.
 * Counter samples update st's interface table (generic interface counters) and add no rows.
 * Each sample is read through its own bounded cursor; a sample whose length runs past the
 * datagram stops the datagram (earlier rows are kept). *seq receives the header's sequence
 * number and *sub_agent a key of the stream it counts in: a hash of (agent address, sub-agent
 * id), since a relay sends several agents from one address (both 0 if the header did not
 * parse); the sequence counts datagrams per stream.
 * Returns the rows added; or, when none were added, a negative code: ING_E_SHORT,
 * ING_E_VERSION, ING_E_SFLOW_* (0 if the datagram was fine but carried no flow sample). */
int ing__sflow_decode(ing_sflow_state *st, const ns_addr *from, int64_t recv_ms, const uint8_t *pkt,
                      size_t len, ing_batch *out, uint32_t *seq, uint32_t *sub_agent);

/* Appends `,"sflow":{counters...,"interfaces":[{"ifindex":N,...},...]}` (a JSON member preceded
 * by a comma, for an exporter's object). Times are epoch seconds with milliseconds. */
void ing__sflow_json(const ing_sflow_state *st, ns_buf *out);

/* Names an ING_E_SFLOW_* or ING_E_PKT_* code; other codes go to ing_strerror(). Thread-safe. */
const char *ing__sflow_strerror(int rc);

#endif
