#!/usr/bin/env bash
# The relay's cost: the example server twice, as a cluster on a redis-server of this
# script's own (127.0.0.1, no persistence), publishers on node 1 and subscribers on node 2,
# so every packet crosses the relay between them once. Both servers (one shard each) pinned
# to CPU 0, loadgen to CPU 1, as in scripts/perf.sh. Reports node 2's CPU per forwarded
# packet (--server-pid), node 1's per relayed packet (--relay-pid) and the end-to-end
# latency, which includes the hop (compare scripts/perf.sh with the same arguments).
#   ./scripts/perf_relay.sh -p 4 -s 25 --pps 150 --duration 10
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server
cargo build --release --example media_server --example loadgen
bin=$(examples_dir release)
redis_port=${PERF_REDIS_PORT:-6391}
port1=${PERF_PORT:-3918}
port2=$((port1 + 1))
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >/tmp/rheomesh-perf-redis.log 2>&1 &
redis=$!
pids=("$redis")
trap 'kill -INT "${pids[@]}" 2>/dev/null || true' EXIT
secret=perf-relay-secret-0123456789
node() {
  RUST_LOG=${PERF_LOG:-warn} taskset -c 0 "$bin/media_server" --shards 1 --port "$1" \
    --redis "redis://127.0.0.1:$redis_port/" --node-id "perf-$1" --relay-secret "$secret" \
    >"/tmp/rheomesh-perf-node-$1.log" 2>&1 &
  echo $!
}
node1=$(node "$port1")
node2=$(node "$port2")
pids+=("$node1" "$node2")
wait_for_server "$port1" "$node1" "/tmp/rheomesh-perf-node-$port1.log"
wait_for_server "$port2" "$node2" "/tmp/rheomesh-perf-node-$port2.log"
taskset -c 1 "$bin/loadgen" --url "ws://127.0.0.1:$port1/socket" \
  --subscribe-url "ws://127.0.0.1:$port2/socket" \
  --server-pid "$node2" --relay-pid "$node1" "$@"
