#!/usr/bin/env bash
# bench/soak.sh — sustained replay into a small budget with queries running (issue 8, point 7).
#
#   bench/soak.sh                      # 600 s, 200M budget
#   SOAK_SECONDS=180 SOAK_RATE=200000 bench/soak.sh   # a short run at 200k flows/s
#
# Starts ns2flows on free loopback ports with db_budget = SOAK_BUDGET, replays a generated v9
# capture in whole passes at SOAK_RATE flows/s (default 1M; `max`: as fast as it goes), a query every
# second, and every SOAK_EVERY seconds samples the daemon's VmRSS, the database's disk usage and
# the ingest/database counters. At the end it stops the daemon with SIGTERM (sealing the open
# minutes) and compares the flows sent with the flows stored. Results: build/soak/<time>/
# (samples.csv, summary.txt, the daemon's log). Nothing is written to bench/RESULTS.md.
# Only loopback traffic; every process started here is stopped by pid (trap below).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_TOTAL=${SOAK_SECONDS:-600}
BUDGET=${SOAK_BUDGET:-200M}
FLOWS=${SOAK_FLOWS:-1000000}  # flows per pass of the capture
EXPORTERS=${SOAK_EXPORTERS:-16}
EVERY=${SOAK_EVERY:-5}
RATE=${SOAK_RATE:-1000000}    # flows/s to send, or max (as fast as the sender goes)
NICE=${SOAK_NICE:-10}
BIN=$ROOT/build/bin
WORK=$ROOT/build/soak
RUN=$WORK/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"

make -s all >/dev/null
CAP=$WORK/v9-$FLOWS-$EXPORTERS.pcap
if [ ! -f "$CAP" ]; then
    # one hour of flow times: the budget, not retention, decides what is kept
    "$BIN/ns2flows-gen" --format v9 --flows "$FLOWS" --exporters "$EXPORTERS" --out "$CAP" \
        --start "$(($(date +%s) - 3600))" --duration 3600 >"$CAP.totals"
fi
PER_PASS=$(sed -n 's/.*flows=\([0-9]*\).*/\1/p' "$CAP.totals")

free_port() { python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='u' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"; }
UDP=$(free_port u)
HTTP=$(free_port t)
DB=$RUN/SESSIONDB
mkdir -p "$DB"

PIDS=()
cleanup() {
    if [ -n "${SENDER:-}" ]; then pkill -P "$SENDER" 2>/dev/null || true; kill "$SENDER" 2>/dev/null || true; fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${DAEMON:-}" ]; then kill "$DAEMON" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

printf 'db_budget = %s\nseal_delay = 1\n' "$BUDGET" >"$RUN/netsaw.conf"
nice -n "$NICE" "$BIN/ns2flows" -f -c "$RUN/netsaw.conf" --db "$DB" --listen "127.0.0.1:$UDP" \
    --http "127.0.0.1:$HTTP" --listen-sflow "127.0.0.1:$(free_port u)" >"$RUN/daemon.stderr" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do
    curl -sf "127.0.0.1:$HTTP/api/v1/status" >/dev/null && break
    sleep 0.1
done

# the sender: whole passes of the capture, one after another, until time is up; the pass under
# way then finishes, so the flows sent are whole passes
# the capture's timestamps span one hour (--duration 3600): its own pace is FLOWS/3600 flows/s
SPEED_ARG=(--max)
if [ "$RATE" != max ]; then
    SPEED_ARG=(--speed "$(echo "scale=3; $RATE * 3600 / $PER_PASS" | bc)")
fi
(
    end=$(($(date +%s) + SECONDS_TOTAL))
    while [ "$(date +%s)" -lt "$end" ]; do
        "$BIN/ns2flows-replay" "$CAP" --to "127.0.0.1:$UDP" "${SPEED_ARG[@]}" --quiet >>"$RUN/replay.out"
    done
) &
SENDER=$!

# the queries: one a second, over the whole range, rotating through the endpoints
(
    i=0
    qs=("/api/v1/top?by=srcaddr&limit=10" "/api/v1/series" "/api/v1/top?by=dstport&filter=proto+tcp"
        "/api/v1/summary" "/api/v1/flows?limit=100")
    while :; do
        q=${qs[$((i % ${#qs[@]}))]}
        t0=$(date +%s.%N)
        code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$HTTP$q" || echo 000)
        echo "$(date +%s),$q,$code,$(echo "$(date +%s.%N) - $t0" | bc)" >>"$RUN/queries.csv"
        i=$((i + 1))
        sleep 1
    done
) &
PIDS+=($!)

echo "t_s,rss_kb,disk_bytes,segments,datagrams,flows_stored,open_flows,flows_dropped,segments_deleted" >"$RUN/samples.csv"
t0=$(date +%s)
while [ $(($(date +%s) - t0)) -lt "$SECONDS_TOTAL" ]; do
    sleep "$EVERY"
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DAEMON/status")
    disk=$(du -sb "$DB" | cut -f1)
    st=$(curl -s "127.0.0.1:$HTTP/api/v1/status")
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$(($(date +%s) - t0))" "$rss" "$disk" \
        "$(jq .database.segments <<<"$st")" "$(jq .ingest.datagrams <<<"$st")" \
        "$(jq .database.flows_stored <<<"$st")" "$(jq .database.open_flows <<<"$st")" \
        "$(jq .database.flows_dropped <<<"$st")" "$(jq .database.segments_deleted <<<"$st")" \
        >>"$RUN/samples.csv"
    tail -1 "$RUN/samples.csv"
done

wait "$SENDER" || true
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${PIDS[@]}" 2>/dev/null || true
PIDS=()
sleep 2 # the last datagrams in the socket buffer
final=$(curl -s "127.0.0.1:$HTTP/api/v1/status")
kill -TERM "$DAEMON"
wait "$DAEMON" || true
DAEMON=

sent_dgrams=$(awk '/^replay: sent/ {s += $3} END {print s + 0}' "$RUN/replay.out")
passes=$(grep -c '^replay: sent' "$RUN/replay.out" || true)
stored=$(jq .database.flows_stored <<<"$final")
recv_dgrams=$(jq .ingest.datagrams <<<"$final")
python3 - "$RUN" "$BUDGET" "$passes" "$PER_PASS" "$sent_dgrams" "$recv_dgrams" "${stored:-0}" \
    "$SECONDS_TOTAL" "$RATE" <<'EOF' | tee "$RUN/summary.txt"
import csv, sys
run, budget, passes, per_pass, sent_d, recv_d, stored, secs, rate = sys.argv[1:]
rows = list(csv.DictReader(open(f"{run}/samples.csv")))
q = list(csv.reader(open(f"{run}/queries.csv")))
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
b = int(budget[:-1]) * units[budget[-1]] if budget[-1] in units else int(budget)
rss = [int(r["rss_kb"]) for r in rows]
disk = [int(r["disk_bytes"]) for r in rows]
half = rss[len(rss) // 2:] or rss
sent_flows = int(passes) * int(per_pass)
print(f"soak: {secs} s at {rate} flows/s asked, budget {budget} ({b} bytes), capture {per_pass} flows per pass")
print(f"sent: {passes} passes = {sent_flows} flows, {sent_d} datagrams")
print(f"received: {recv_d} datagrams ({int(sent_d) - int(recv_d)} lost in the kernel or not sent)")
print(f"stored: {stored} flows, lost {sent_flows - int(stored)} ({(sent_flows - int(stored)) / max(sent_flows, 1) * 100:.2f} %), {int(stored) / float(secs):.0f} flows/s on average")
print(f"VmRSS kB: min {min(rss)}, max {max(rss)}, second half min {min(half)} max {max(half)}")
print(f"disk bytes: max {max(disk)} ({max(disk) / b * 100:.1f} % of the budget), last {disk[-1]}")
bad = [r for r in q if r[2] != "200"]
lat = sorted(float(r[3]) for r in q if r[2] == "200")
if lat:
    print(f"queries: {len(q)}, non-200: {len(bad)}, median {lat[len(lat)//2]*1000:.0f} ms, max {lat[-1]*1000:.0f} ms")
EOF
echo "soak: results in $RUN"
