#!/usr/bin/env bash
# Rheomesh as a user gets it, from outside this repository's workspace:
#  1. `cargo package --workspace` packages rheomesh and rheomesh-str0m (the patched str0m)
#     and builds the packaged crates on their own, as a registry would hand them out;
#  2. a throwaway crate in a temporary directory depends on rheomesh by path (no [patch],
#     no workspace around it), contains the getting-started server code
#     (scripts/consumer/main.rs), builds and runs one publish -> subscribe with str0m peers
#     over UDP on 127.0.0.1.
# The consumer starts from this repository's Cargo.lock (the versions CI tests; cargo drops
# what it does not need) and builds into target/ with the same dev profile, so dependencies
# CI already built are reused. CONSUMER_TARGET_DIR=<empty dir> measures a cold build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "cargo package --workspace (packages and verifies rheomesh-str0m and rheomesh)"
cargo package --workspace --allow-dirty --quiet
ls -l target/package/*.crate
# The verify builds (a full dependency tree each) are not needed again: give the disk back.
find target/package -mindepth 1 -maxdepth 1 ! -name '*.crate' -exec rm -rf {} +

dir=$(mktemp -d /tmp/rheomesh-consumer.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
cp scripts/consumer/main.rs "$dir/src/main.rs"
cp Cargo.lock "$dir/Cargo.lock"
cat >"$dir/Cargo.toml" <<TOML
[package]
name = "rheomesh-consumer"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rheomesh = { path = "$root", features = ["testing"] }
tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }

# Its own workspace: nothing of the repository's applies (no [patch] would either).
[workspace]

# The repository's dev profile, so the dependencies it built are reused.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 2
debug = "line-tables-only"
TOML
target_dir=${CONSUMER_TARGET_DIR:-$root/target}
echo "building the outside consumer in $dir (target $target_dir)"
start=$(date +%s)
CARGO_TARGET_DIR="$target_dir" cargo build --quiet --manifest-path "$dir/Cargo.toml"
echo "consumer built in $(( $(date +%s) - start )) s"
timeout 60 "$target_dir/debug/rheomesh-consumer"
