#!/usr/bin/env bash
# Measure the example server with loadgen the way the README's performance figures were:
# release builds, a fresh server with one shard pinned to CPU 0, loadgen pinned to CPU 1.
#   ./scripts/perf.sh -p 4 -s 25 --pps 2000 --duration 10
# Arguments go to loadgen (see examples/loadgen/README.md); --server-pid is added.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --example media_server --example loadgen
port=${PERF_PORT:-3918}
bin=$(examples_dir release)
RUST_LOG=${PERF_LOG:-warn} taskset -c 0 "$bin/media_server" --shards 1 --port "$port" \
  >/tmp/rheomesh-perf-server.log 2>&1 &
server=$!
trap 'kill -INT "$server" 2>/dev/null || true' EXIT
wait_for_server "$port" "$server" /tmp/rheomesh-perf-server.log
taskset -c 1 "$bin/loadgen" --url "ws://127.0.0.1:$port/socket" \
  --server-pid "$server" "$@"
