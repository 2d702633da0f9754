# Shared by scripts/loadgen_smoke.sh and scripts/perf.sh.

# Where cargo puts the examples (honours CARGO_TARGET_DIR, as cargo does).
examples_dir() { echo "${CARGO_TARGET_DIR:-target}/$1/examples"; }

# need COMMAND [PACKAGE]: install the Debian package (default: COMMAND) when COMMAND is missing.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing $1: install it (apt-get install ${2:-$1}) or run as root" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${2:-$1}" >/dev/null
}

# wait_for_server PORT PID LOG [HOST]: wait (at most 30 s) until the media server PID listens
# on HOST:PORT (default 127.0.0.1); fail with its log if it exits first or never listens.
wait_for_server() {
  local port=$1 pid=$2 log=$3 host=${4:-127.0.0.1}
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the media server exited before listening on port $port; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the media server did not listen on $host:$port within 30 s" >&2
  return 1
}

# Time in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# poll SECONDS WHAT COMMAND...: run COMMAND every 0.1 s until it succeeds; after SECONDS,
# `fail "no WHAT within the deadline"` (each script defines `fail`).
poll() {
  local deadline=$(($(now_ms) + $1 * 1000)) what=$2
  shift 2
  until "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "no $what within the deadline"
    sleep 0.1
  done
}

# metric NAME FILE: the sum of NAME's samples over all its label sets (0 when absent).
metric() {
  awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }' "$2"
}
