# Shared by cluster-takeover.sh and cluster-join.sh (sourced, not run): a scratch dir,
# three NATS servers (JetStream, R3) on ports 4322-4324 (routes 6322-6324, monitoring
# 8322-8324), chatd nodes on 7543+ (metrics 9564+), and cleanup of everything on exit.
# Expects $bin and $nats; sets $dir, $urls and the pids array.
dir=$(mktemp -d "/tmp/chatd-$1.XXXXXX")
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
echo "data: $dir"
routes=""; urls=""
for i in 1 2 3; do routes="${routes:+$routes,}nats://127.0.0.1:$((6321 + i))"; done
for i in 1 2 3; do
    mkdir -p "$dir/nats-$i"
    "$nats" -a 127.0.0.1 -p $((4321 + i)) -m $((8321 + i)) -n "nats-$i" -js -sd "$dir/nats-$i" \
        --cluster_name "$1" --cluster "nats://127.0.0.1:$((6321 + i))" --routes "$routes" \
        -l "$dir/nats-$i.log" &
    pids+=($!)
    urls="${urls:+$urls,}nats://127.0.0.1:$((4321 + i))"
done
metric() { curl -s "127.0.0.1:$((9563 + $1))/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
