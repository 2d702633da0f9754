# Shared by scripts/loadgen_smoke.sh and scripts/perf.sh.

# wait_for_server PORT PID LOG: wait (at most 30 s) until the media server PID listens on
# 127.0.0.1:PORT; fail with its log if it exits first or never listens.
wait_for_server() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the media server exited before listening on port $port; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the media server did not listen on 127.0.0.1:$port within 30 s" >&2
  return 1
}
