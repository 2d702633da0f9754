#!/usr/bin/env bash
# Runs every test of the project: Rust (format, lints, docs, unit and integration tests with
# real peers, once more through the portable send path, packaging and an outside consumer), the TypeScript client (unit tests, bundle), the browser end-to-end tests
# (headless Chromium against the example server), the loadgen smoke test and a join storm
# beside a live call. Installs what a test needs when it is
# missing (Chromium, Node.js, ffmpeg, GStreamer, the npm packages). `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

t0=$(date +%s)
# A CI run builds everything once, cold: incremental caches would only cost disk.
export CARGO_INCREMENTAL=0
# Each step says how much disk is left: a run that fills a small disk says where.
disk() { df -Pm . | awk 'NR==2 { printf "%d MB free", $4 }'; }
step() { printf '\n==> [%ss, %s] %s\n' "$(( $(date +%s) - t0 ))" "$(disk)" "$*"; }
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing $*: install it (apt-get install $*) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

step "tools"
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
command -v chromium >/dev/null || apt_install chromium
# The recording tests' receiver and prober.
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || apt_install --no-install-recommends ffmpeg
# GStreamer reads the same SDP (gst-launch-1.0, sdpdemux in -bad, depayloaders and matroskamux in -good).
gst-inspect-1.0 sdpdemux >/dev/null 2>&1 && gst-inspect-1.0 matroskamux >/dev/null 2>&1 || apt_install --no-install-recommends gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
# The cluster tests (tests/e2e/14-cluster, 15-cluster-layers) start a redis-server of their own on a free port.
command -v redis-server >/dev/null || apt_install --no-install-recommends redis-server
echo "node $(node --version), npm $(npm --version), $(chromium --version 2>/dev/null || echo chromium)"

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets -- -D warnings

step "rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "cargo test (unit + integration: real str0m peers over UDP on 127.0.0.1)"
cargo test
# The hostile-client tests again, optimized: their latency bounds are an optimized build's
# (a debug build applies a large SDP on the shard ≈ 10× slower).
cargo test --release --test hostile

step "benchmarks, each run once (criterion --test: what they assert, not their timings)"
cargo bench --bench forwarding --bench pieces -- --test

step "integration tests again through the portable send path (send_to, no pinning)"
cargo clippy --lib --features portable -- -D warnings
cargo test --features portable --test sfu --test getting_started --test observability

step "as a dependency: cargo package --workspace, and a crate outside the workspace"
./scripts/consumer_check.sh

step "client: npm ci, unit tests, bundle"
cd "$root/client"
npm ci --no-audit --no-fund
npm test
npm run build
cd "$root"
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- client/dist; then
  echo "client/dist is out of date: run 'npm run build' in client/ and commit it" >&2
  git --no-pager diff --stat -- client/dist >&2
  exit 1
fi

if [ -d tests/e2e ]; then
  step "browser end-to-end tests (headless Chromium, example server on 127.0.0.1)"
  cargo build --example media_server
  cd "$root/tests/e2e"
  npm ci --no-audit --no-fund
  npm test
  cd "$root"
fi

step "loadgen smoke test (example server + loadgen on 127.0.0.1)"
./scripts/loadgen_smoke.sh

step "join storm: 2000 participants join and leave beside a live call (release build)"
./scripts/join_storm.sh 2000
step "done"
