#!/usr/bin/env bash
# A join storm beside a live call (issue 11, item 3), everything on 127.0.0.1:
# JOINS participants (default 2000) connect at once, each in a room of its own, each with a
# negotiated publish transport and ICE/DTLS connected, while a 1 x 5 call at 150 packets/s
# runs on the same (only) shard of the example server. The storm starts once the call's
# measured window has begun and must end inside it. Fails unless
#   - every storm participant connected,
#   - the call delivered at least MIN_DELIVERY of its packets in the window (default 0.95),
#     with p99 latency <= P99_BOUND_MS (default 20, the issue's bound for large offers). On
#     the project machine the call gets 100 % (README); a slower or busier machine pushes the
#     pinned shard into overload, and then it sheds some of the call's video (counted as
#     overload_pause, printed below) instead of queueing: the latency bound is what a storm
#     that hurt the call would break (p99 627 ms before issue 11),
#   - the server's peak RSS stayed under 256 KiB per participant,
#   - the server went back to zero sessions and participants afterwards.
# Usage: scripts/join_storm.sh [JOINS]; env PROFILE=release|debug (default release),
# CALL_SECONDS (the call's window, default 15), P99_BOUND_MS, MIN_DELIVERY, PORT (default 3931), PIN=0 (do
# not pin the server to CPU 0 and the load generators to CPU 1).
# `scripts/test.sh` runs it; it prints the figures the README quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need node nodejs
need curl
joins=${1:-2000}
profile=${PROFILE:-release}
call_s=${CALL_SECONDS:-15}
bound_ms=${P99_BOUND_MS:-20}
min_delivery=${MIN_DELIVERY:-0.95}
port=${PORT:-3931}
if [ "$profile" = release ]; then
  cargo build --release --example media_server --example loadgen
else
  cargo build --example media_server --example loadgen
fi
bin=$(examples_dir "$profile")
# SERVER_BIN: another media_server binary (e.g. an earlier build, for a before/after).
server_bin=${SERVER_BIN:-$bin/media_server}
# Each storm participant holds a WebSocket in both processes and a UDP socket in loadgen.
ulimit -n $((joins * 3 + 1024)) 2>/dev/null || true
[ "$(ulimit -n)" -ge $((joins * 2 + 256)) ] || {
  echo "join storm: $joins joins need $((joins * 2 + 256)) file descriptors, ulimit -n is $(ulimit -n)" >&2
  exit 1
}

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "join storm: FAILED: $*" >&2
  exit 1
}
http="http://127.0.0.1:$port"

# As scripts/perf.sh: the server on CPU 0, the load generators on CPU 1 (on a one-CPU host
# everything shares CPU 0). PIN=0: no pinning, everything competes for every CPU.
load_cpu=1
[ "$(nproc)" -ge 2 ] || load_cpu=0
server_cpus=0
if [ "${PIN:-1}" = 0 ]; then
  server_cpus=0-$(($(nproc) - 1))
  load_cpu=
fi
taskset -c "$server_cpus" "$server_bin" --shards 1 --port "$port" --max-connections $((joins + 64)) >"$tmp/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_for_server "$port" "$server" "$tmp/server.log"

"$bin/loadgen" --url "ws://127.0.0.1:$port/socket" --publishers 1 --subscribers-per-publisher 5 \
  --pps 150 --warmup 1 --duration "$call_s" --drain 1 --server-pid "$server" --json ${load_cpu:+--pin-cpu "$load_cpu"} \
  >"$tmp/call.json" 2>"$tmp/call.err" &
call=$!
pids+=("$call")
in_window() {
  kill -0 "$call" 2>/dev/null || { cat "$tmp/call.err" >&2; fail "the call's loadgen ended early"; }
  grep -q '\[measure' "$tmp/call.err"
}
poll 60 "measured window of the call" in_window

rss_before=$(awk '/VmRSS/ { print $2 }' "/proc/$server/status")
start=$(now_ms)
timeout 120 "$bin/loadgen" --url "ws://127.0.0.1:$port/socket" --room storm --rooms "$joins" \
  --publishers "$joins" --subscribers-per-publisher 0 --pps 1 --payload 200 \
  --warmup 0 --duration 0.2 --drain 0 --connect-concurrency "$joins" --connect-timeout 90 \
  ${load_cpu:+--pin-cpu "$load_cpu"} --json --no-progress >"$tmp/storm.json" 2>"$tmp/storm.err" ||
  { tail -20 "$tmp/storm.err" >&2; fail "the storm's loadgen failed"; }
storm_ms=$(($(now_ms) - start))
rss_peak_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$server/status")
kill -0 "$call" 2>/dev/null || fail "the storm outlasted the call's window (${storm_ms} ms): raise CALL_SECONDS"
wait "$call" || { cat "$tmp/call.err" >&2; fail "the call's loadgen exited with $?"; }
curl -fsS --max-time 5 "$http/metrics" >"$tmp/after" || fail "no /metrics"
echo "join storm: server counters: $(grep -E '^rheomesh_(dropped_total|send_errors_total|session_panics_total)' "$tmp/after" | tr '\n' ' ')"

node -e '
  const fs = require("fs");
  const call = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const storm = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const [joins, stormMs, bound, minDelivery] = process.argv.slice(3).map(Number);
  const fail = (m) => { console.error("join storm: FAILED: " + m); process.exit(1); };
  const lat = call.latency_us;
  console.log(`join storm: ${storm.peers_connected}/${joins} participants joined (publish transport, ICE/DTLS) in ${stormMs} ms ` +
    `(setup per participant p50 ${storm.setup_ms_per_peer_p50} ms, max ${storm.setup_ms_per_peer_max} ms)`);
  console.log(`join storm: the call during it: ${call.packets_received}/${call.packets_expected} delivered, ` +
    `latency p50 ${lat.p50} us, p99 ${lat.p99} us, max ${lat.max} us; server CPU ${call.server?.cpu_s_window?.toFixed(2)} s in the ${call.window_measured_s.toFixed(1)} s window`);
  console.log(`join storm: kernel UDP errors in the window (whole host): ${JSON.stringify(call.kernel_udp_window)}`);
  if (storm.peers_connected !== joins) fail(`only ${storm.peers_connected} of ${joins} joined`);
  if (call.peers_connected !== 6) fail(`the call has ${call.peers_connected} of 6 peers`);
  if (!(call.packets_expected > 0) || !(call.delivery_ratio >= minDelivery)) fail(`the call lost packets: delivery ${call.delivery_ratio} (at least ${minDelivery} wanted)`);
  if (!(lat.p99 <= bound * 1000)) fail(`the call p99 latency ${lat.p99} us exceeds ${bound} ms`);
' "$tmp/call.json" "$tmp/storm.json" "$joins" "$storm_ms" "$bound_ms" "$min_delivery"
echo "join storm: server RSS $rss_before KiB when the storm began, peak $rss_peak_kb KiB"
# Bounded memory: measured ≈ 160 MiB at the peak for 2000 (≈ 74 KiB per participant).
[ "$rss_peak_kb" -le $((joins * 256)) ] || fail "peak RSS $rss_peak_kb KiB exceeds 256 KiB per participant"

idle() {
  curl -fsS --max-time 5 "$http/metrics" >"$tmp/idle" &&
    [ "$(metric rheomesh_sessions "$tmp/idle")" = 0 ] && [ "$(metric rheomesh_participants "$tmp/idle")" = 0 ]
}
poll 30 "return to zero sessions and participants" idle
echo "join storm: passed"
