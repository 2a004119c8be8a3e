#!/usr/bin/env bash
# bench/clickhouse.sh — `make bench-clickhouse`: how fast the ClickHouse sink empties its spool
# into one and into two shards (Debian's clickhouse-server, started here on loopback).
#
# 1. ns2flows-gen makes a v5 capture of BENCH_CH_FLOWS flows (default 2M; QUICK=1: 500k);
# 2. `ns2flows ingest` stores it with clickhouse_url pointing at a closed port, so every batch
#    (clickhouse_batch_rows, default 100000) ends up in the spool;
# 3. for 1 and 2 shards: fresh servers and tables, a copy of the spool in a fresh SESSIONDB, the
#    daemon started on it with the shards' URLs; the time from its start until the spool is empty
#    gives rows/s. ClickHouse's count must equal the flows generated.
#
# Appends a dated section to bench/RESULTS.md and writes bench/clickhouse.json: no figure is
# typed by hand. Every process started here is stopped by PID, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$ROOT/build/bin
CH=$ROOT/test/clickhouse/ch.sh
if [ "${QUICK:-0}" = 1 ]; then FLOWS=${BENCH_CH_FLOWS:-500000}; MODE=quick; else
    FLOWS=${BENCH_CH_FLOWS:-2000000}; MODE=full; fi
BATCH=${BENCH_CH_BATCH:-100000}
WORK=${BENCH_WORK:-$ROOT/build/bench}/clickhouse
log() { printf 'bench-clickhouse: %s\n' "$*" >&2; }

[ -x /usr/sbin/clickhouse-server ] || { log "clickhouse-server is not installed (make deps-clickhouse)"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DPID=""
NSH=0
cleanup() {
    [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
    for i in $(seq 1 "$NSH"); do "$CH" stop "$WORK/ch" "$i" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$WORK"
mkdir -p "$WORK"
log "capture: $FLOWS v5 flows"
"$BIN/ns2flows-gen" --format v5 --flows "$FLOWS" --seed 1 --out "$WORK/cap.pcap" >"$WORK/gen.txt"
printf 'clickhouse_url = http://127.0.0.1:9/\nclickhouse_batch_rows = %s\n' "$BATCH" >"$WORK/spool.conf"
log "ns2flows ingest into a spool"
"$BIN/ns2flows" ingest -c "$WORK/spool.conf" --db "$WORK/src" "$WORK/cap.pcap" >"$WORK/ingest.txt"
stored=$(sed -n 's/.* \([0-9]*\) flows,.*/\1/p' "$WORK/ingest.txt")
spool_bytes=$(du -sb "$WORK/src/spool" | cut -f1)
log "spool: $(ls "$WORK/src/spool" | grep -c '\.rb$') batches, $spool_bytes bytes, $stored flows"

status() { curl -s "http://127.0.0.1:$1/api/v1/status"; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['clickhouse']['$1'])"; }

results=()
for n in 1 2; do
    rm -rf "$WORK/ch" "$WORK/db$n"
    mkdir -p "$WORK/db$n"
    cp -r "$WORK/src/spool" "$WORK/db$n/spool"
    https=(); tcps=(); urls=""
    for i in $(seq 1 "$n"); do https+=("$(free_port)"); tcps+=("$(free_port)"); done
    list=$(IFS=,; echo "${tcps[*]}")
    NSH=$n
    for i in $(seq 1 "$n"); do
        "$CH" start "$WORK/ch" "$i" "${https[$((i-1))]}" "${tcps[$((i-1))]}" "$(free_port)" "$list" >/dev/null
        "$CH" schema "$WORK/ch" "${https[$((i-1))]}"
        urls="$urls${urls:+, }http://127.0.0.1:${https[$((i-1))]}/"
    done
    hp=$(free_port)
    printf 'clickhouse_url = %s\nlisten = 127.0.0.1:%s\nlisten_sflow = 127.0.0.1:%s\nhttp_listen = 127.0.0.1:%s\n' \
        "$urls" "$(free_port)" "$(free_port)" "$hp" >"$WORK/d$n.conf"
    log "$n shard(s): sending"
    t0=$(date +%s.%N)
    "$BIN/ns2flows" -f -c "$WORK/d$n.conf" --db "$WORK/db$n" >"$WORK/d$n.log" 2>&1 &
    DPID=$!
    while :; do
        left=$(status "$hp" 2>/dev/null | jget spool_batches 2>/dev/null || echo x)
        [ "$left" = 0 ] && break
        kill -0 "$DPID" 2>/dev/null || { log "daemon died: $(tail -3 "$WORK/d$n.log")"; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s.%N)
    sent=$(status "$hp" | jget rows_sent)
    kill -TERM "$DPID"; wait "$DPID" || true; DPID=""
    count=0
    for i in $(seq 1 "$n"); do
        c=$(curl -sS "http://127.0.0.1:${https[$((i-1))]}/" --data-binary "SELECT count() FROM flows")
        count=$((count + c))
    done
    for i in $(seq 1 "$n"); do "$CH" stop "$WORK/ch" "$i"; done
    NSH=0
    [ "$count" = "$stored" ] || { log "ClickHouse holds $count rows, expected $stored"; exit 1; }
    secs=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    rate=$(python3 -c "print(int($sent / ($t1 - $t0)))")
    log "$n shard(s): $sent rows in $secs s = $rate rows/s"
    results+=("$n $sent $secs $rate")
done

# --- report ---
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=$(git diff --quiet 2>/dev/null || echo " with uncommitted changes")
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
CHV=$(dpkg-query -W -f '${Version}' clickhouse-server 2>/dev/null || echo unknown)
{
    printf '\n## %s, ClickHouse sink, %s mode, %s flows\n\n' "$DATE" "$MODE" "$stored"
    printf -- '- Machine: %s, %s cores (nproc); load average at the end: %s\n' "$CPU" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf -- '- Commit %s%s; clickhouse-server %s (Debian), every shard on this machine\n' "$COMMIT" "$DIRTY" "$CHV"
    printf -- '- `bench/clickhouse.sh`: a spool of %s batches (clickhouse_batch_rows = %s, %s bytes) written by `ns2flows ingest`, then sent by the daemon; time from its start until the spool is empty, ClickHouse count checked\n\n' \
        "$(ls "$WORK/src/spool" | grep -c '\.rb$')" "$BATCH" "$spool_bytes"
    printf '| shards | rows sent | seconds | rows/s |\n|---:|---:|---:|---:|\n'
    for r in "${results[@]}"; do set -- $r; printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; done
} >>bench/RESULTS.md
python3 - "$DATE" "$MODE" "$stored" "${results[@]}" >bench/clickhouse.json <<'EOF'
import json, sys
date, mode, stored, *rows = sys.argv[1:]
print(json.dumps({"date": date, "mode": mode, "flows": int(stored), "runs": [
    dict(zip(("shards", "rows", "seconds", "rows_per_s"), map(float, r.split()))) for r in rows]},
    indent=1))
EOF
log "appended to bench/RESULTS.md"
