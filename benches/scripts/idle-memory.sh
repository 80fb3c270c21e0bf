#!/bin/bash
# RSS per idle authenticated TLS connection: a fresh chatd on CPU 0, USERS connections from
# chat-loadgen on CPU 1 resuming saved sessions (no password hashing during the measurement).
#   benches/scripts/idle-memory.sh USERS DATA_DIR TOKENS_FILE [PREFIX]
# The accounts must exist and TOKENS_FILE hold their sessions: run chat-loadgen once with
# --users USERS --tokens TOKENS_FILE --prefix PREFIX against the same DATA_DIR first.
set -euo pipefail
users=$1 data=$2 tokens=$3 prefix=${4:-idle}
T=${CARGO_TARGET_DIR:-target}/release
pkill -x chatd || true; sleep 1
taskset -c 0 "$T/chatd" --shards 1 --log warn --data-dir "$data" >/dev/null 2>&1 &
sleep 3
pid=$(pgrep -x chatd)
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
before=$(rss)
taskset -c 1 "$T/chat-loadgen" --ca "$data/tls/ca.pem" --users "$users" --tokens "$tokens" \
    --prefix "$prefix" --rate 50 --duration 40 --warmup 0 >/dev/null 2>&1 &
loadgen=$!
for _ in $(seq 1 120); do
    [ "$(ls "/proc/$pid/fd" | wc -l)" -ge "$users" ] && break
    sleep 0.5
done
sleep 5
with=$(rss)
echo "users=$users fds=$(ls "/proc/$pid/fd" | wc -l) rss_before_kb=$before rss_with_kb=$with" \
    "per_connection_bytes=$(( (with - before) * 1024 / users ))"
wait $loadgen
pkill -x chatd
