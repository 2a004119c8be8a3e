-- ns2flows ClickHouse tables (docs/CLICKHOUSE.md). Run on every shard. Works on ClickHouse 18.16
-- (Debian 12) and on current releases. The sink inserts into `flows` on each shard, RowBinary in
-- exactly this column order; queries read `flows_all`. Replace "ns2flows" in the Distributed
-- engine with your cluster's name from <remote_servers>.
CREATE TABLE IF NOT EXISTS flows
(
    batch_id  UInt64,          -- the sink's batch; a retried batch is checked by it, never doubled
    recv_time DateTime('UTC'), -- when the collector received the flow; partitions by UTC day
    first_ms  Int64,           -- flow start and end, epoch milliseconds
    last_ms   Int64,
    packets   UInt64,          -- already scaled by the sampling rate
    bytes     UInt64,
    exporter  FixedString(16), -- addresses: 16 bytes, network order, IPv4 as ::ffff:a.b.c.d
    src_addr  FixedString(16),
    dst_addr  FixedString(16),
    nexthop   FixedString(16),
    src_as    UInt32,
    dst_as    UInt32,
    in_if     UInt32,
    out_if    UInt32,
    sampling  UInt32,
    source_id UInt32,
    src_port  UInt16,
    dst_port  UInt16,          -- ICMP: type << 8 | code
    proto     UInt8,
    tcp_flags UInt8,
    tos       UInt8,
    src_mask  UInt8,
    dst_mask  UInt8,
    vlan      UInt16,
    direction UInt8,
    flow_type UInt8
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(recv_time)
ORDER BY (intDiv(first_ms, 60000), exporter)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS flows_all AS flows
ENGINE = Distributed(ns2flows, default, flows, rand());
