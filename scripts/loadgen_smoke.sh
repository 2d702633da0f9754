#!/usr/bin/env bash
# Smoke test of the example media server's deployment surface and of the loadgen example,
# everything on 127.0.0.0/8:
# - a light load is delivered completely and reported (with the server's CPU and RSS);
# - /healthz answers 200 "ok"; /metrics counts the call while it runs
#   (rheomesh_rtp_forwarded_total above a scrape taken before the load, participants,
#   tracks and down-tracks as loadgen set them up) and goes back to no sessions after it;
# - a server with --tls (self-signed) and --http-bind 127.0.0.2 carries a wss:// load with
#   loadgen --insecure; without --insecure loadgen says why it refuses the certificate;
#   its --ice-server reaches the shards (they send a STUN request to it);
# - a server with --tls-cert/--tls-key serves that certificate (curl verifies it);
# - SIGTERM during a call and SIGINT stop the servers with exit code 0 within the bound;
# - bad flags and an unreachable server are clear, prompt errors.
# Every wait polls a condition with a deadline. Performance figures come from release builds
# run by hand (README "Performance"); this only checks that the tools work.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need curl
need node nodejs
need openssl
cargo build --example media_server --example loadgen
bin=$(examples_dir debug)
port=3917
tls_port=3919
stun_port=3920
cert_port=3921
log=/tmp/rheomesh-smoke-server.log
tls_log=/tmp/rheomesh-smoke-tls-server.log
cert_log=/tmp/rheomesh-smoke-cert-server.log
http="http://127.0.0.1:$port"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "loadgen smoke: FAILED: $*" >&2
  exit 1
}
scrape() { curl -fsS --max-time 5 "$http/metrics" >"$1"; }
exited() { ! kill -0 "$1" 2>/dev/null || grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
# stop_server PID SIGNAL LOG: send SIGNAL, expect exit code 0 within 6 s (the server's own
# bound is 5 s) and "bye" in its log.
stop_server() {
  local pid=$1 sig=$2 server_log=$3 t0 rc=0
  t0=$(now_ms)
  kill "-$sig" "$pid"
  poll 6 "exit of the server after SIG$sig" exited "$pid"
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || { cat "$server_log" >&2; fail "the server exited with $rc after SIG$sig"; }
  grep -q '^bye$' "$server_log" || { cat "$server_log" >&2; fail "no clean exit after SIG$sig"; }
  echo "loadgen smoke: SIG$sig: server exited 0 after $(($(now_ms) - t0)) ms"
}

# Bad flags: clear errors, no server.
if "$bin/media_server" --bind 0.0.0.0 --port 0 2>"$tmp/err"; then fail "--bind 0.0.0.0 was accepted"; fi
grep -q "concrete address" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear --bind 0.0.0.0 error"; }
if "$bin/media_server" --ice-server turn:127.0.0.1 --port 0 2>"$tmp/err"; then fail "turn: accepted"; fi
grep -q "only stun:" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear --ice-server error"; }
if "$bin/media_server" --tls-cert /nonexistent.pem --tls-key /nonexistent.key --port 0 2>"$tmp/err"; then
  fail "a missing certificate file was accepted"
fi
grep -q "tls-cert /nonexistent.pem" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear --tls-cert error"; }
if "$bin/loadgen" --bind 0.0.0.0 2>"$tmp/err"; then fail "loadgen --bind 0.0.0.0 was accepted"; fi
grep -q "concrete address" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear loadgen --bind error"; }
echo "loadgen smoke: bad flags rejected clearly"

# A UDP listener standing in for a STUN server: it reports the first binding request.
node -e '
  const s = require("dgram").createSocket("udp4");
  const t = setTimeout(() => process.exit(1), 60000);
  s.on("message", (m) => { if (m.length >= 20 && m.readUInt16BE(0) === 1) { console.log("stun request"); clearTimeout(t); s.close(); } });
  s.bind(Number(process.argv[1]), "127.0.0.1", () => console.log("listening"));
' "$stun_port" >"$tmp/stun.out" 2>&1 &
stun=$!
pids+=("$stun")

"$bin/media_server" --shards 2 --port "$port" >"$log" 2>&1 &
server=$!
pids+=("$server")
"$bin/media_server" --shards 1 --port "$tls_port" --http-bind 127.0.0.2 --tls \
  --ice-server "stun:127.0.0.1:$stun_port" >"$tls_log" 2>&1 &
tls_server=$!
pids+=("$tls_server")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "openssl could not make a test certificate"; }
"$bin/media_server" --shards 1 --port "$cert_port" --tls-cert "$tmp/cert.pem" \
  --tls-key "$tmp/key.pem" >"$cert_log" 2>&1 &
cert_server=$!
pids+=("$cert_server")
wait_for_server "$port" "$server" "$log"
wait_for_server "$tls_port" "$tls_server" "$tls_log" 127.0.0.2
wait_for_server "$cert_port" "$cert_server" "$cert_log"

# --tls-cert/--tls-key: the server presents that certificate.
code=$(curl -s --cacert "$tmp/cert.pem" -o /dev/null -w '%{http_code}' --max-time 5 \
  "https://127.0.0.1:$cert_port/healthz")
[ "$code" = 200 ] || fail "https with --tls-cert: /healthz answered $code"
stop_server "$cert_server" TERM "$cert_log"

code=$(curl -s -o "$tmp/healthz" -w '%{http_code}' --max-time 5 "$http/healthz")
[ "$code" = 200 ] && [ "$(cat "$tmp/healthz")" = ok ] || fail "/healthz answered $code $(cat "$tmp/healthz")"
scrape "$tmp/before"
grep -q '^rheomesh_rtp_forwarded_total{shard="1"} ' "$tmp/before" ||
  { cat "$tmp/before" >&2; fail "/metrics has no per-shard rheomesh_rtp_forwarded_total"; }
before=$(metric rheomesh_rtp_forwarded_total "$tmp/before")

timeout 120 "$bin/loadgen" --url "ws://127.0.0.1:$port/socket" \
  --publishers 2 --subscribers-per-publisher 3 --pps 50 --duration 3 --warmup 1 \
  --server-pid "$server" --json --no-progress >"$tmp/loadgen.json" &
loadgen=$!
pids+=("$loadgen")
# While loadgen runs: the call is visible in /metrics.
call_visible() {
  exited "$loadgen" && fail "loadgen ended before /metrics showed the call"
  scrape "$tmp/during" || return 1
  [ "$(metric rheomesh_rtp_forwarded_total "$tmp/during")" -gt "$before" ] &&
    [ "$(metric rheomesh_participants "$tmp/during")" = 8 ] &&
    [ "$(metric rheomesh_tracks "$tmp/during")" = 2 ] &&
    [ "$(metric rheomesh_down_tracks "$tmp/during")" = 6 ]
}
poll 60 "call in /metrics (8 participants, 2 tracks, 6 down-tracks, forwarded RTP growing)" call_visible
during=$(metric rheomesh_rtp_forwarded_total "$tmp/during")
wait "$loadgen" || fail "loadgen exited with $?"
scrape "$tmp/after"
after=$(metric rheomesh_rtp_forwarded_total "$tmp/after")
[ "$after" -ge "$during" ] || fail "rheomesh_rtp_forwarded_total went down: $during -> $after"
bytes=$(metric rheomesh_rtp_forwarded_bytes_total "$tmp/after")
[ "$bytes" -gt "$after" ] || fail "rheomesh_rtp_forwarded_bytes_total $bytes for $after packets"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const forwarded = Number(process.argv[2]);
  const fail = (m) => { console.error("loadgen smoke: FAILED: " + m); console.error(JSON.stringify(r, null, 2)); process.exit(1); };
  if (r.peers_connected !== 8) fail("expected 8 peers connected, got " + r.peers_connected);
  if (!(r.packets_sent > 0)) fail("nothing sent");
  if (!(r.delivery_ratio >= 0.99)) fail("delivery " + r.delivery_ratio);
  if (!r.server || !(r.server.cpu_s_window >= 0) || !(r.server.rss_loaded_kb > 0)) fail("no server figures");
  if (!(forwarded >= r.packets_received)) fail("/metrics counted " + forwarded + " forwarded packets, loadgen received " + r.packets_received);
  console.log("loadgen smoke: " + r.packets_received + "/" + r.packets_expected + " delivered, p99 " + r.latency_us.p99 + " us");
' "$tmp/loadgen.json" "$after"
echo "loadgen smoke: /metrics rheomesh_rtp_forwarded_total $before before, $during during, $after after the load"
sessions_gone() {
  scrape "$tmp/idle" && [ "$(metric rheomesh_sessions "$tmp/idle")" = 0 ] &&
    [ "$(metric rheomesh_participants "$tmp/idle")" = 0 ] && [ "$(metric rheomesh_rooms "$tmp/idle")" = 0 ]
}
poll 15 "return to zero sessions, participants and rooms in /metrics" sessions_gone

# wss:// through the self-signed certificate: HTTP on 127.0.0.2, server media on 127.0.0.1,
# loadgen's peers on 127.0.0.3.
code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://127.0.0.2:$tls_port/healthz")
[ "$code" = 200 ] || fail "https /healthz answered $code"
if timeout 30 "$bin/loadgen" --url "wss://127.0.0.2:$tls_port/socket" --duration 1 2>"$tmp/err"; then
  fail "loadgen accepted a self-signed certificate without --insecure"
fi
grep -q "use --insecure" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear certificate error"; }
echo "loadgen smoke: wss:// without --insecure refused: $(head -c 300 "$tmp/err")"
timeout 60 "$bin/loadgen" --url "wss://127.0.0.2:$tls_port/socket" --insecure --bind 127.0.0.3 \
  --publishers 1 --subscribers-per-publisher 2 --pps 50 --duration 1 --warmup 0.5 \
  --json --no-progress >"$tmp/wss.json"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.peers_connected !== 3 || !(r.delivery_ratio >= 0.99)) {
    console.error("loadgen smoke: FAILED: wss run " + JSON.stringify(r, null, 2)); process.exit(1);
  }
  console.log("loadgen smoke: wss:// --insecure: " + r.packets_received + "/" + r.packets_expected + " delivered");
' "$tmp/wss.json"
poll 10 "STUN request from the shard (--ice-server)" grep -q "stun request" "$tmp/stun.out"
echo "loadgen smoke: --ice-server reached the shard"
stop_server "$tls_server" INT "$tls_log"

# SIGTERM while a call is in progress: sessions are told, transports closed, exit 0.
"$bin/loadgen" --url "ws://127.0.0.1:$port/socket" --publishers 1 --subscribers-per-publisher 1 \
  --pps 50 --duration 60 --warmup 0 --no-progress >/dev/null 2>"$tmp/lg.err" &
call=$!
pids+=("$call")
in_call() {
  exited "$call" && { cat "$tmp/lg.err" >&2; fail "loadgen ended early"; }
  scrape "$tmp/call" && [ "$(metric rheomesh_sessions "$tmp/call")" = 2 ] &&
    [ "$(metric rheomesh_down_tracks "$tmp/call")" = 1 ]
}
poll 30 "call in progress (2 sessions, 1 down-track)" in_call
stop_server "$server" TERM "$log"
grep -q "sessions closed" "$log" || fail "the server did not wait for its sessions"
kill "$call" 2>/dev/null || true
wait "$call" 2>/dev/null || true

# `timeout` bounds it: a hang is killed, and then the message check below fails.
if timeout 30 "$bin/loadgen" --url "ws://127.0.0.1:1/socket" --duration 1 2>"$tmp/err"; then
  fail "an unreachable server must be an error"
fi
grep -q "cannot connect" "$tmp/err" || { cat "$tmp/err" >&2; fail "unclear error for an unreachable server"; }
echo "loadgen smoke: unreachable server reported: $(head -c 200 "$tmp/err")"
echo "loadgen smoke: passed"
