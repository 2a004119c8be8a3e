#!/usr/bin/env bash
# bench/run.sh — `make bench`: ns2flows and nfdump (nfcapd) measured side by side, on this
# machine, in one run: offline and live UDP ingest, bytes per flow on disk, query times; then
# ns2flows' storage engine (seal and compaction rows/s), HTTP under load (wrk) and a soak.
# `make bench QUICK=1` does about 1M flows in about five minutes; the full mode 10M.
#
# This script installs what is missing, builds the captures (build/bench/, never committed) and
# checks them; bench/bench.py does the measuring, phase by phase, and writes bench/results.json
# and a dated section appended to bench/RESULTS.md. See bench/README.md.
#
# Only loopback traffic; every process started is stopped again (trap below, and bench.py
# stops its own daemons by pid however it ends).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# --- Parameters. Each can be overridden from the environment (BENCH_FLOWS=... and so on). ---
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    MODE=quick
    FLOWS=${BENCH_FLOWS:-1000000}
    LIVE_FORMATS=${BENCH_LIVE_FORMATS:-v9}
    # One second per step: 8 to 60 times what the receive buffers hold at these rates.
    RATES=${BENCH_RATES:-"500000 1000000 2000000 4000000"}
    STEP_SECONDS=${BENCH_STEP_SECONDS:-1}
    REFINE=${BENCH_REFINE:-1}
    RUNS=${BENCH_RUNS:-5}
    HTTP_SECONDS=${BENCH_HTTP_SECONDS:-5}
    SOAK_SECONDS=${BENCH_SOAK_SECONDS:-0} # skipped: see bench/README.md
else
    MODE=full
    FLOWS=${BENCH_FLOWS:-10000000}
    LIVE_FORMATS=${BENCH_LIVE_FORMATS:-"v5 v9 ipfix"}
    RATES=${BENCH_RATES:-"250000 500000 1000000 1500000 2000000 3000000 4000000 6000000"}
    STEP_SECONDS=${BENCH_STEP_SECONDS:-3}
    REFINE=${BENCH_REFINE:-2}
    RUNS=${BENCH_RUNS:-7}
    HTTP_SECONDS=${BENCH_HTTP_SECONDS:-30}
    SOAK_SECONDS=${BENCH_SOAK_SECONDS:-600}
fi
HTTP_LIVE_FPS=${BENCH_HTTP_LIVE_FPS:-100000} # flows/s replayed while wrk loads the HTTP API
SOAK_FPS=${BENCH_SOAK_FPS:-1000000}          # the soak's replay rate, flows/s
SOAK_BUDGET_MB=${BENCH_SOAK_BUDGET_MB:-200}  # the soak's db_budget
SOAK_CPUS=${BENCH_SOAK_CPUS:-all}            # the soak's daemon: all (not pinned) or collector
FORMATS=${BENCH_FORMATS:-"v5 v9 ipfix"} # captures made and ingested offline
STORE_FORMAT=${BENCH_STORE_FORMAT:-v9}  # the capture both stores hold for storage and queries
SEED=${BENCH_SEED:-1}
START=${BENCH_START:-1767225600} # 2026-01-01T00:00:00Z, the generator's default
DURATION=${BENCH_DURATION:-3600} # one hour of flows
EXPORTERS=${BENCH_EXPORTERS:-16}
WARMUP=${BENCH_WARMUP:-1}
WAIT_QUIET=${BENCH_WAIT_QUIET:-0} # seconds to wait for other processes to leave the CPU
WORK=${BENCH_WORK:-$ROOT/build/bench}

# The same receive buffer for both collectors: nfcapd's SO_RCVBUF is capped by
# net.core.rmem_max, ns2flows (as root) forces its own, so ask both for what nfcapd can get.
RMEM_MAX=$(cat /proc/sys/net/core/rmem_max)
RCVBUF=$((RMEM_MAX < 33554432 ? RMEM_MAX : 33554432))
RCVBUF=$((RCVBUF < 65536 ? 65536 : RCVBUF)) # ns2flows' smallest rcvbuf

T0=$(date +%s.%N)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RUN=$WORK/runs/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN/logs" "$RUN/data" "$WORK/captures"

log() { printf 'bench: %s\n' "$*" >&2; }

# Runs a command and logs it (repository paths shortened to ./) for RESULTS.md.
cmd() {
    printf '%s\n' "$*" | sed "s|$ROOT/|./|g" >>"$RUN/commands.txt"
    "$@"
}

CHILD=""
cleanup() {
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Packages: installed only when missing. ---
need=()
{ command -v nfcapd && command -v nfdump; } >/dev/null 2>&1 || need+=(nfdump)
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time) # GNU time: queries' peak memory
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only if the package lists do not know them yet
    cmd $SUDO apt-get install -y --no-install-recommends "${need[@]}" ||
        { cmd $SUDO apt-get update && cmd $SUDO apt-get install -y --no-install-recommends "${need[@]}"; }
fi

# --- Programs (the Makefile's bench target has built them; this covers a direct call). ---
BIN=$ROOT/build/bin
for p in ns2flows ns2flows-replay ns2flows-gen; do
    [ -x "$BIN/$p" ] || { cmd make -s all && break; }
done

# --- Captures: made on demand, kept in build/bench/captures, checked every run. ---
# Beside each capture, FILE.totals: line 1 what `ns2flows-gen --check` read back from it, line 2
# a stamp of the generator source and the arguments, line 3 the command that made it. A capture
# is reused when the stamp is the same and it still reads back the same totals.
capture() {
    local fmt=$1 out stamp gen_line="" check_line made=()
    out=$WORK/captures/$fmt-$FLOWS-s$SEED.pcap
    stamp="gen $(sha256sum tools/ns2flows-gen.c | cut -c1-16) $fmt $FLOWS $SEED $START $DURATION $EXPORTERS"
    if [ -f "$out" ] && [ -f "$out.totals" ] && [ "$(sed -n 2p "$out.totals")" = "$stamp" ] &&
        [ -n "$(sed -n 3p "$out.totals")" ]; then
        log "capture $fmt: reusing ${out#"$ROOT"/}"
        printf '# reused, made earlier by: %s\n' "$(sed -n 3p "$out.totals")" >>"$RUN/commands.txt"
    else
        log "capture $fmt: generating $FLOWS flows"
        made=("$BIN/ns2flows-gen" --format "$fmt" --flows "$FLOWS" --seed "$SEED" --start "$START"
            --duration "$DURATION" --exporters "$EXPORTERS" --out "$out")
        gen_line=$(cmd "${made[@]}")
        rm -f "$out.totals"
    fi
    check_line=$(cmd "$BIN/ns2flows-gen" --check "$out")
    # what was written (or, for a reused capture, read back when it was made) must be what is
    # read back now
    [ -n "$gen_line" ] || gen_line=$(sed -n 1p "$out.totals")
    if [ "$gen_line" != "$check_line" ]; then
        log "capture $fmt: expected '$gen_line' but read back '$check_line'"
        exit 1
    fi
    if [ ${#made[@]} -gt 0 ]; then
        printf '%s\n%s\n%s\n' "$check_line" "$stamp" "${made[*]}" | sed "s|$ROOT/|./|g" >"$out.totals"
    fi
}
read -ra formats <<<"$FORMATS"
read -ra live_formats <<<"$LIVE_FORMATS"
read -ra rates <<<"$RATES"
for fmt in "${formats[@]}"; do
    capture "$fmt"
done

[ -f bench/RESULTS.md ] || cat >bench/RESULTS.md <<'EOF'
# Benchmark results

Written by `make bench` (bench/run.sh): each run appends one dated section below; nothing here is
typed by hand. bench/README.md says what is measured and how; bench/results.json holds the last
run's figures for machines.
EOF

# --- Measurements, one phase at a time (see bench/bench.py). ---
PY=(python3 bench/bench.py --root "$ROOT" --work "$WORK" --run "$RUN" --mode "$MODE"
    --date "$DATE" --t0 "$T0" --flows "$FLOWS" --seed "$SEED" --start "$START"
    --duration "$DURATION" --exporters "$EXPORTERS" --formats "${formats[@]}"
    --live-formats "${live_formats[@]}" --store-format "$STORE_FORMAT" --rates "${rates[@]}"
    --step-seconds "$STEP_SECONDS" --refine "$REFINE" --rcvbuf "$RCVBUF" --runs "$RUNS"
    --warmup "$WARMUP" --wait-quiet "$WAIT_QUIET" --http-seconds "$HTTP_SECONDS"
    --http-live-fps "$HTTP_LIVE_FPS" --soak-seconds "$SOAK_SECONDS" --soak-fps "$SOAK_FPS"
    --soak-budget-mb "$SOAK_BUDGET_MB" --soak-cpus "$SOAK_CPUS")
for phase in probe offline live storage queries engine http soak report; do
    log "phase $phase"
    "${PY[@]}" "$phase" &
    CHILD=$!
    wait "$CHILD"
    CHILD=""
done
log "done in $(python3 -c "import time; print(round(time.time() - $T0))") s; data and logs in ${RUN#"$ROOT"/}"
