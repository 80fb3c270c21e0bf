#!/bin/bash
# Side-by-side runs of ../shared/peers (2000 users, its chat workload), one per binary, with
# the figures an A/B of chatd builds needs on one line each.
#   benches/scripts/peers-ab.sh RATE SECONDS BIN [BIN | mqtt ...]
#     one 10-ish s run per argument, in order (alternate builds: A B A B mqtt)
#   MODE=syscalls benches/scripts/peers-ab.sh RATE 14 BIN
#     also counts chatd's syscalls for 5 s from the run's 6th second (perf tracepoints)
#   MODE=profile OUT=/tmp/p.data benches/scripts/peers-ab.sh RATE 14 BIN
#     also records 5 s of chatd with call graphs (perf record; `perf report -i OUT`)
# Run from the project root; needs ../shared/peers/setup.sh once per machine. Loopback only;
# every run is bounded by SECONDS plus the harness's drain.
set -euo pipefail
rate=$1 secs=$2; shift 2
mode=${MODE:-plain}
export PEERS_TARGET=${PEERS_TARGET:-$HOME/.cache/peers-target} USERS=${USERS:-2000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# perf on the running chatd, after the warm-up, while the run goes on.
observe() {
    for _ in $(seq 1 300); do grep -q 'server pid' "$log" 2>/dev/null && break; sleep 0.2; done
    sleep 6
    local pid
    pid=$(pgrep -f -- '--config .*peers/conf/chatd.toml' | head -1)
    [ -n "$pid" ] || return 0
    case "$mode" in
    syscalls)
        perf stat -p "$pid" -e 'syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write' \
            -- sleep 5 2>&1 | grep -E 'syscalls' | awk -v r="$rate" '{ printf "  %s per message: %.2f\n", $2, $1 / (r * 5) }' ;;
    profile)
        perf record -F 1999 --call-graph dwarf,16384 -o "${OUT:-/tmp/peers-ab.data}" -p "$pid" -- sleep 5 2>&1 | tail -1 ;;
    esac
}

for bin in "$@"; do
    if [ "$bin" = mqtt ]; then
        RATE=$rate DURATION=$secs ../shared/peers/run.sh mqtt rate >"$log" 2>&1 || true
    else
        CHATD_BIN=$bin RATE=$rate DURATION=$secs ../shared/peers/run.sh chatd rate >"$log" 2>&1 &
        run=$!
        [ "$mode" = plain ] || observe
        wait "$run" || true
    fi
    line=$(grep '^RESULT' "$log" | tail -1 || true)
    if [ -z "$line" ]; then
        echo "$bin: no result"; tail -5 "$log"; continue
    fi
    echo "$bin rate=$rate $(echo "$line" | grep -oE '(recv|lost|p50|p99|p99.9|harness_cpu|server_cpu|server_rq_wait|srv_err)=[^ ]+' | tr '\n' ' ')"
done
