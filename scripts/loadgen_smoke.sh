#!/usr/bin/env bash
# Smoke test of the loadgen example against the example media server, both on 127.0.0.1:
# a light load must be delivered completely and reported (with the server's CPU and RSS),
# and an unreachable server must be a clear, prompt error. Performance figures come from
# release builds run by hand (README "Performance"); this only checks that the tools work.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
port=3917
cargo build --example media_server --example loadgen
target/debug/examples/media_server --shards 2 --port "$port" >/tmp/rheomesh-smoke-server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
wait_for_server "$port" "$server" /tmp/rheomesh-smoke-server.log
out=$(mktemp)
timeout 120 target/debug/examples/loadgen --url "ws://127.0.0.1:$port/socket" \
  --publishers 2 --subscribers-per-publisher 3 --pps 50 --duration 3 --warmup 1 \
  --server-pid "$server" --json --no-progress >"$out"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const fail = (m) => { console.error("loadgen smoke: " + m); console.error(JSON.stringify(r, null, 2)); process.exit(1); };
  if (r.peers_connected !== 8) fail("expected 8 peers connected, got " + r.peers_connected);
  if (!(r.packets_sent > 0)) fail("nothing sent");
  if (!(r.delivery_ratio >= 0.99)) fail("delivery " + r.delivery_ratio);
  if (!r.server || !(r.server.cpu_s_window >= 0) || !(r.server.rss_loaded_kb > 0)) fail("no server figures");
  console.log("loadgen smoke: " + r.packets_received + "/" + r.packets_expected + " delivered, p99 " + r.latency_us.p99 + " us");
' "$out"
rm -f "$out"
# `timeout` bounds it: a hang is killed, and then the message check below fails.
if timeout 30 target/debug/examples/loadgen --url "ws://127.0.0.1:1/socket" --duration 1 2>/tmp/rheomesh-smoke-err.txt; then
  echo "loadgen smoke: an unreachable server must be an error" >&2
  exit 1
fi
grep -q "cannot connect" /tmp/rheomesh-smoke-err.txt || { cat /tmp/rheomesh-smoke-err.txt >&2; exit 1; }
echo "loadgen smoke: unreachable server reported: $(head -c 200 /tmp/rheomesh-smoke-err.txt)"
