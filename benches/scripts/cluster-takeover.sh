#!/usr/bin/env bash
# What a take-over reads, with and without snapshots: three NATS servers (JetStream, R3)
# and three chatd nodes on loopback with `cluster.snapshot_every = EVERY`, chat-loadgen at
# RATE msg/s for SECS seconds spread over the nodes, then `kill -9` of the third node; prints
# the stream's size before the kill and the survivors' take-over log lines.
#   benches/scripts/cluster-takeover.sh EVERY RATE SECS [USERS]
# With KILL_AT=S the kill comes S seconds into a `--failover` run instead, and the load
# generator's oracle (lost, duplicated, reordered) says what the take-overs rebuilt.
# Needs release builds of chatd and chat-loadgen in $CARGO_TARGET_DIR (or target/) and a
# nats-server 2.10+ in $CHATD_NATS_SERVER (./dev exports it) or on PATH. Ports 4322-4324,
# 6322-6324, 8322-8324 (NATS), 7543-7545 (chatd), 9564-9566 (metrics).
set -euo pipefail
every=${1:?EVERY}; rate=${2:?RATE}; secs=${3:?SECS}; users=${4:-2000}
bin="${CARGO_TARGET_DIR:-target}/release"
nats="${CHATD_NATS_SERVER:-nats-server}"
. "$(dirname "$0")/cluster-lib.sh" takeover
printf '[cluster]\nsnapshot_every = %s\n' "$every" >"$dir/chatd.toml"
for i in 1 2 3; do
    tls=()
    if [ "$i" -gt 1 ]; then
        while [ ! -f "$dir/node-1/tls/server.key" ]; do sleep 0.2; done
        sleep 0.2
        tls=(--tls-cert "$dir/node-1/tls/server.pem" --tls-key "$dir/node-1/tls/server.key")
    fi
    "$bin/chatd" --config "$dir/chatd.toml" --data-dir "$dir/node-$i" \
        --listen "127.0.0.1:$((7542 + i))" --metrics-listen "127.0.0.1:$((9563 + i))" \
        --shards 1 --no-pin --nats "$urls" --node "node-$i" "${tls[@]}" \
        >"$dir/node-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    until curl -sf "127.0.0.1:$((9563 + i))/health" >/dev/null; do sleep 0.5; done
done
# Settled: the three own every slot between them.
until [ "$(( $(metric 1 chatd_cluster_slots_owned) + $(metric 2 chatd_cluster_slots_owned) + \
    $(metric 3 chatd_cluster_slots_owned) ))" = "$(metric 1 chatd_cluster_slots)" ]; do
    sleep 0.2
done
sleep 1
servers="127.0.0.1:7543,127.0.0.1:7544,127.0.0.1:7545"
if [ -n "${KILL_AT:-}" ]; then
    # Under load instead: accounts first, then a --failover run with the kill KILL_AT s in,
    # so the load generator's oracle judges what the take-overs rebuilt.
    "$bin/chat-loadgen" --server "$servers" --ca "$dir/node-1/tls/ca.pem" --users "$users" \
        --rate 100 --duration 2 --tokens "$dir/tokens" >/dev/null
    "$bin/chat-loadgen" --server "$servers" --ca "$dir/node-1/tls/ca.pem" --users "$users" \
        --rate "$rate" --duration "$secs" --warmup 0 --failover --tokens "$dir/tokens" \
        >"$dir/loadgen.txt" 2>&1 &
    loadgen=$!
    sleep "$KILL_AT"
    kill -9 "${pids[5]}"
    echo "killed node-3 at $KILL_AT s"
    wait "$loadgen"
    grep -v "measure |" "$dir/loadgen.txt" | tail -n 9
    for i in 1 2; do
        grep "took slots over" "$dir/node-$i.log" | tail -n 1 | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/node-$i: /"
    done
    exit 0
fi
"$bin/chat-loadgen" --server "$servers" --ca "$dir/node-1/tls/ca.pem" --users "$users" \
    --rate "$rate" --duration "$secs" --tokens "$dir/tokens" | tail -n 7
stream() {
    curl -s "127.0.0.1:8322/jsz?accounts=true&streams=true" |
        python3 -c 'import json,sys
for a in json.load(sys.stdin).get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"] == "chatd_writes":
            st = s["state"]; print("stream chatd_writes:", st["messages"], "messages,", st["bytes"], "bytes")'
}
sleep 3 # a snapshot round or two
stream
for i in 1 2 3; do
    printf 'node-%s: ' "$i"
    curl -s "127.0.0.1:$((9563 + i))/metrics" | grep -E '^chatd_cluster_snapshot(s|_purged)_total' | tr '\n' ' '
    echo
done
lines=()
for i in 1 2; do lines+=("$(wc -l <"$dir/node-$i.log")"); done
start=$(date +%s.%N)
kill -9 "${pids[5]}"
wait "${pids[5]}" 2>/dev/null || true
# Settled: the two survivors own all slots between them and both are ready.
until [ "$(( $(metric 1 chatd_cluster_slots_owned) + $(metric 2 chatd_cluster_slots_owned) ))" = \
    "$(metric 1 chatd_cluster_slots)" ] && curl -sf 127.0.0.1:9564/health >/dev/null &&
    curl -sf 127.0.0.1:9565/health >/dev/null; do
    sleep 0.1
done
echo "survivors hold every slot $(echo "$(date +%s.%N) - $start" | bc) s after the kill"
for i in 1 2; do
    tail -n +"$((lines[i - 1] + 1))" "$dir/node-$i.log" | grep "took slots over" | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/node-$i: /"
done
