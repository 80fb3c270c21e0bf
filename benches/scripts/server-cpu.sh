#!/bin/bash
# One open-loop run with the server's CPU use: a fresh chatd on CPU 0, chat-loadgen on CPU 1.
#   benches/scripts/server-cpu.sh RATE DATA_DIR [extra chatd flags...]
# Prints the loadgen's JSON summary and chatd's CPU (all threads) over the run. The first
# run on a data directory logs the users in (password hashing counts then); later runs
# resume the sessions saved in DATA_DIR/loadgen-tokens.
set -euo pipefail
rate=$1 data=$2; shift 2
T=${CARGO_TARGET_DIR:-target}/release
pkill -x chatd || true; sleep 1
taskset -c 0 "$T/chatd" --shards 1 --log warn --data-dir "$data" "$@" >/dev/null 2>&1 &
sleep 3
pid=$(pgrep -x chatd)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
# Saved sessions: after the first run, no password hashing falls into the measured window.
taskset -c 1 "$T/chat-loadgen" --ca "$data/tls/ca.pem" --users 200 --rate "$rate" \
    --tokens "$data/loadgen-tokens" --duration 10 --warmup 2 --pin 1 --json /dev/stdout \
    2>/dev/null | tail -1
t1=$(ticks); s1=$(date +%s.%N)
# /proc ticks are 1/100 s, so ticks per second is percent of one core.
awk -v t="$((t1 - t0))" -v a="$s0" -v b="$s1" 'BEGIN { printf "chatd cpu: %.0f %% of one core\n", t / (b - a) }'
pkill -x chatd
