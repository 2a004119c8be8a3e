#!/bin/bash
# Starts and stops ClickHouse instances for the sink tests and the bench: each one a plain
# background process (never the system service) on 127.0.0.1, with its own data dir, stopped
# by its PID. All instances form the cluster "ns2flows" (one shard each).
#
#   ch.sh start BASE I HTTP TCP INTER TCPLIST   start instance I in BASE/s<I>; TCPLIST: the native
#                                              ports of every shard, comma separated
#   ch.sh stop BASE I                          stop instance I (TERM, KILL after 30 s)
#   ch.sh kill BASE I                          kill instance I at once (SIGKILL), as a crash would
#   ch.sh schema BASE HTTP                     create dist/clickhouse.sql's tables on one instance
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER=${CH_SERVER:-/usr/bin/clickhouse-server}
[ -x "$SERVER" ] || SERVER=/usr/sbin/clickhouse-server

ping_http() { curl -s --max-time 1 "http://127.0.0.1:$1/ping" 2>/dev/null || true; }

cmd=$1; base=$2
case "$cmd" in
start)
    i=$3; http=$4; tcp=$5; inter=$6; list=$7
    d=$base/s$i
    mkdir -p "$d/log" "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas"
    shards=""
    IFS=, read -ra ports <<< "$list"
    for p in "${ports[@]}"; do
        shards="$shards<shard><replica><host>127.0.0.1</host><port>$p</port></replica></shard>"
    done
    sed -e "s#@BASE@#$d#g" -e "s#@HTTP@#$http#g" -e "s#@TCP@#$tcp#g" -e "s#@INTER@#$inter#g" \
        -e "s#@SHARDS@#$shards#" "$HERE/config.xml.in" > "$d/config.xml"
    cp "$HERE/users.xml" "$d/users.xml"
    nohup "$SERVER" --config-file="$d/config.xml" </dev/null >"$d/log/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" > "$d/pid"
    for _ in $(seq 1 600); do
        [ "$(ping_http "$http")" = "Ok." ] && { echo "s$i ready pid=$pid http=$http"; exit 0; }
        kill -0 "$pid" 2>/dev/null || { echo "s$i failed to start" >&2; tail -5 "$d/log/server.err.log" >&2 || true; exit 1; }
        sleep 0.1
    done
    echo "s$i not ready after 60 s" >&2; exit 1 ;;
kill)
    d=$base/s$3
    [ -f "$d/pid" ] || exit 0
    pid=$(cat "$d/pid")
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$d/pid" ;;
stop)
    d=$base/s$3
    [ -f "$d/pid" ] || exit 0
    pid=$(cat "$d/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for n in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$d/pid" ;;
schema)
    http=$3
    # statements end with ';'; comments dropped; blank pieces skipped
    readarray -d ';' -t stmts < <(sed -e 's/--.*$//' "$HERE/../../dist/clickhouse.sql")
    for stmt in "${stmts[@]}"; do
        [ -n "${stmt//[[:space:]]/}" ] || continue
        out=$(curl -sS "http://127.0.0.1:$http/" --data-binary "$stmt") || exit 1
        [ -z "$out" ] || { echo "schema: $out" >&2; exit 1; }
    done ;;
*) echo "usage: ch.sh start|stop|schema ..." >&2; exit 2 ;;
esac
