#!/usr/bin/env bash
# A node joining under load: three NATS servers (JetStream, R3) and two chatd nodes on
# loopback, chat-loadgen --failover at RATE msg/s for SECS seconds over those two, and a
# third node started JOIN_AT seconds into the run (slots move to it while traffic flows);
# prints the load generator's summary (its oracle: lost, duplicated, reordered) and the
# join's take-over lines.
#   benches/scripts/cluster-join.sh RATE SECS JOIN_AT [USERS]
# Needs release builds of chatd and chat-loadgen in $CARGO_TARGET_DIR (or target/) and a
# nats-server 2.10+ in $CHATD_NATS_SERVER or on PATH. Ports as cluster-takeover.sh's.
set -euo pipefail
rate=${1:?RATE}; secs=${2:?SECS}; join_at=${3:?JOIN_AT}; users=${4:-200}
bin="${CARGO_TARGET_DIR:-target}/release"
nats="${CHATD_NATS_SERVER:-nats-server}"
. "$(dirname "$0")/cluster-lib.sh" join
node() {
    local i=$1 tls=()
    if [ "$i" -gt 1 ]; then
        tls=(--tls-cert "$dir/node-1/tls/server.pem" --tls-key "$dir/node-1/tls/server.key")
    fi
    "$bin/chatd" --data-dir "$dir/node-$i" \
        --listen "127.0.0.1:$((7542 + i))" --metrics-listen "127.0.0.1:$((9563 + i))" \
        --shards 1 --no-pin --nats "$urls" --node "node-$i" "${tls[@]}" \
        >"$dir/node-$i.log" 2>&1 &
    pids+=($!)
}
node 1
until [ -f "$dir/node-1/tls/server.key" ]; do sleep 0.2; done
sleep 0.2
node 2
for i in 1 2; do
    until curl -sf "127.0.0.1:$((9563 + i))/health" >/dev/null; do sleep 0.5; done
done
until [ "$(( $(metric 1 chatd_cluster_slots_owned) + $(metric 2 chatd_cluster_slots_owned) ))" = \
    "$(metric 1 chatd_cluster_slots)" ]; do
    sleep 0.2
done
sleep 1
servers="127.0.0.1:7543,127.0.0.1:7544"
# Accounts first (a short run), so the measured run resumes sessions; a slot still
# settling answers a login UNAVAILABLE, so it is retried.
for attempt in 1 2 3 4 5; do
    if "$bin/chat-loadgen" --server "$servers" --ca "$dir/node-1/tls/ca.pem" \
        --users "$users" --rate 100 --duration 2 --tokens "$dir/tokens" >"$dir/accounts.txt" 2>&1; then
        break
    fi
    tail -n 1 "$dir/accounts.txt"
    sleep 2
done
"$bin/chat-loadgen" --server "$servers" --ca "$dir/node-1/tls/ca.pem" --users "$users" \
    --rate "$rate" --duration "$secs" --warmup 0 --failover --tokens "$dir/tokens" \
    >"$dir/loadgen.txt" 2>&1 &
loadgen=$!
pids+=("$loadgen")
sleep "$join_at"
echo "starting node-3 at $join_at s"
node 3
wait "$loadgen"
cat "$dir/loadgen.txt"
for i in 1 2 3; do printf 'node-%s owns %s slots\n' "$i" "$(metric "$i" chatd_cluster_slots_owned)"; done
grep -h "took slots over" "$dir/node-3.log" | sed -e "s/\x1b\[[0-9;]*m//g" -e "s/^/node-3: /"
