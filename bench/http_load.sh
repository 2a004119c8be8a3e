#!/usr/bin/env bash
# bench/http_load.sh — issue 7 point 5: wrk against /api/v1/top and /api/v1/devices/{addr} on a
# store of FLOWS flows, while live ingest runs: latency (p50/p90/p99), requests/s, errors, and
# whether ingest lost flows meanwhile. Prints a summary and writes build/bench/http/results.json;
# it does not touch bench/RESULTS.md (bench/bench.py may take the JSON into its report).
#
#   bench/http_load.sh                       # 10M flows, 30 s per endpoint
#   FLOWS=1000000 SECONDS_EACH=10 bench/http_load.sh   # a quick look
#
# Only loopback traffic; the daemon and the replay it starts are stopped by pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FLOWS=${FLOWS:-10000000}
LIVE_FLOWS=${LIVE_FLOWS:-2000000}  # replayed while wrk runs
SECONDS_EACH=${SECONDS_EACH:-30}
CONNECTIONS=${CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-2}
HTTP_THREADS=${HTTP_THREADS:-4}
START=${START:-1767225600}        # the generator's default: 2026-01-01T00:00:00Z
DURATION=${DURATION:-86400}       # the store holds one day of flows
WORK=${WORK:-$ROOT/build/bench/http}
BIN=$ROOT/build/bin

log() { printf 'http_load: %s\n' "$*" >&2; }
for tool in wrk curl python3; do
    command -v $tool >/dev/null 2>&1 || {
        log "installing $tool"
        apt-get install -y --no-install-recommends $tool >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends $tool >/dev/null; }
    }
done
make -s all
mkdir -p "$WORK"
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }

# --- the store: FLOWS flows over DURATION seconds, loaded offline (made once, then reused) ---
STORE=$WORK/store-$FLOWS-$DURATION
if [ ! -f "$STORE/.done" ]; then
    rm -rf "$STORE" && mkdir -p "$STORE"
    log "generating $FLOWS flows"
    "$BIN/ns2flows-gen" --format v9 --flows "$FLOWS" --start "$START" --duration "$DURATION" \
        --exporters 16 --out "$WORK/store.pcap" >/dev/null
    log "ingesting them"
    "$BIN/ns2flows" ingest --db "$STORE/db" "$WORK/store.pcap" >&2
    rm -f "$WORK/store.pcap"
    touch "$STORE/.done"
fi
# live traffic for during the runs: flows of the same day, sent while wrk asks
"$BIN/ns2flows-gen" --format v9 --flows "$LIVE_FLOWS" --start "$START" --duration "$DURATION" \
    --exporters 4 --seed 2 --out "$WORK/live.pcap" >"$WORK/live.totals"
LIVE_EXPECTED=$(sed -n 's/.*flows=\([0-9]*\).*/\1/p' "$WORK/live.totals")

DB=$WORK/db-run
rm -rf "$DB" && cp -a "$STORE/db" "$DB"
HTTP=$(free_port SOCK_STREAM)
UDP=$(free_port SOCK_DGRAM)
SFLOW=$(free_port SOCK_DGRAM)
printf 'http_threads = %s\nhttp_query_timeout_ms = 60000\n' "$HTTP_THREADS" >"$WORK/netsaw.conf"
"$BIN/ns2flows" -f -c "$WORK/netsaw.conf" --db "$DB" --listen "127.0.0.1:$UDP" \
    --listen-sflow "127.0.0.1:$SFLOW" --http "127.0.0.1:$HTTP" 2>"$WORK/daemon.log" &
DAEMON=$!
REPLAY=
cleanup() {
    [ -n "$REPLAY" ] && kill "$REPLAY" 2>/dev/null || true
    kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$HTTP/api/v1/status" >/dev/null && break; sleep 0.1; done
BASE="http://127.0.0.1:$HTTP"
stored() { curl -s "$BASE/api/v1/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["database"]["flows_stored"], d["ingest"]["flows"], d["ingest"]["store_dropped"])'; }

# the busiest source of the busiest hour is the device asked about
FROM=$((START + DURATION / 2))
TO=$((FROM + 3600))
DEV=$(curl -s "$BASE/api/v1/top?by=srcaddr&limit=1&from=$FROM&to=$TO" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["key"]["srcaddr"])')
log "store of $FLOWS flows; device $DEV; one-hour window $FROM..$TO"

# paced so that the capture's day lasts about as long as the wrk runs
SPEED=$((DURATION / (2 * SECONDS_EACH)))
"$BIN/ns2flows-replay" "$WORK/live.pcap" --to "127.0.0.1:$UDP" --speed "$SPEED" --quiet \
    >"$WORK/replay.out" 2>&1 &
REPLAY=$!

declare -A URLS=(
    [top_1h]="$BASE/api/v1/top?by=srcaddr&limit=10&from=$FROM&to=$TO"
    [device_1h]="$BASE/api/v1/devices/$DEV?from=$FROM&to=$TO"
)
RESULTS="{}"
for name in top_1h device_1h; do
    log "wrk $name for ${SECONDS_EACH}s, $CONNECTIONS connections"
    wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${SECONDS_EACH}s" --latency "${URLS[$name]}" \
        >"$WORK/wrk-$name.txt"
    RESULTS=$(python3 - "$WORK/wrk-$name.txt" "$name" "$RESULTS" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
lat = dict((p, ms(v)) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: (.*)", text)
r = json.loads(sys.argv[3])
r[sys.argv[2]] = {"p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
                  "requests_per_s": rps, "requests": reqs,
                  "non_2xx": int(non2xx.group(1)) if non2xx else 0,
                  "socket_errors": sock.group(1) if sock else ""}
print(json.dumps(r))
EOF
)
done
for _ in $(seq 600); do kill -0 "$REPLAY" 2>/dev/null || break; sleep 0.1; done
kill "$REPLAY" 2>/dev/null && log "replay still running after the wrk runs: stopped"
wait "$REPLAY" 2>/dev/null || true
REPLAY=
sleep 1
read -r STORED INGESTED DROPPED <<<"$(stored)"
SENT=$(sed -n 's/^replay: sent \([0-9]*\) datagrams.*/\1/p' "$WORK/replay.out" | tail -1)
DATAGRAMS=$(curl -s "$BASE/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ingest"]["datagrams"])')
python3 - "$RESULTS" "$FLOWS" "$DEV" "$INGESTED" "$DROPPED" "${SENT:-}" "$DATAGRAMS" \
    "$CONNECTIONS" "$SECONDS_EACH" "$HTTP_THREADS" "$WORK/results.json" "$LIVE_EXPECTED" <<'EOF'
import json, sys, os, platform, subprocess
r = json.loads(sys.argv[1])
out = {"store_flows": int(sys.argv[2]), "device": sys.argv[3],
       "live": {"flows_ingested": int(sys.argv[4]), "store_dropped": int(sys.argv[5]),
                "datagrams_sent": int(sys.argv[6]) if sys.argv[6] else None,
                "datagrams_received": int(sys.argv[7]), "flows_expected": int(sys.argv[12])},
       "connections": int(sys.argv[8]), "seconds_each": int(sys.argv[9]),
       "http_threads": int(sys.argv[10]), "cores": os.cpu_count(),
       "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip(),
       "endpoints": r}
json.dump(out, open(sys.argv[11], "w"), indent=1)
print(f"store {out['store_flows']} flows, device {out['device']}, {out['connections']} connections,"
      f" {out['http_threads']} HTTP threads, {out['cores']} cores")
for k, v in r.items():
    print(f"{k:10} p50 {v['p50_ms']:.1f} ms  p90 {v['p90_ms']:.1f} ms  p99 {v['p99_ms']:.1f} ms"
          f"  {v['requests_per_s']:.0f} req/s  non-2xx {v['non_2xx']}  {v['socket_errors']}")
l = out["live"]
print(f"live ingest meanwhile: {l['datagrams_received']} datagrams received of"
      f" {l['datagrams_sent']} sent, {l['flows_ingested']} flows of {l['flows_expected']},"
      f" {l['store_dropped']} refused by the store")
EOF
log "results in $WORK/results.json"
