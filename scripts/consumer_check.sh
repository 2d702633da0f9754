#!/usr/bin/env bash
# Rheomesh as a user gets it, from outside this repository's workspace:
#  1. `cargo package --workspace` packages rheomesh and rheomesh-str0m (the patched str0m)
#     into the .crate files a registry would hand out;
#  2. a throwaway crate in a temporary directory depends on those packaged crates (rheomesh
#     unpacked and named by path; rheomesh-str0m, which the packaged rheomesh names by
#     version as from crates.io, supplied by the consumer's [patch.crates-io] in place of the
#     registry), contains the getting-started server code (scripts/consumer/main.rs), builds
#     and runs one publish -> subscribe with str0m peers over UDP on 127.0.0.1.
# So it checks what `cargo package`'s own verification would (the packaged crates build on
# their own) and more (they work for a user), in one build: the verification built each
# package's whole dependency tree again with the default profile (5.5 min of CI).
# The consumer starts from this repository's Cargo.lock (the versions CI tests; cargo drops
# what it does not need) and builds into target/ with the same dev profile, so dependencies
# CI already built are reused. CONSUMER_TARGET_DIR=<empty dir> measures a cold build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "cargo package --workspace (the .crate files of rheomesh-str0m and rheomesh)"
rm -f target/package/*.crate
cargo package --workspace --no-verify --allow-dirty --quiet
ls -l target/package/*.crate

dir=$(mktemp -d /tmp/rheomesh-consumer.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src" "$dir/crates"
for c in target/package/*.crate; do tar -xzf "$c" -C "$dir/crates"; done
rheomesh_dir=$(ls -d "$dir"/crates/rheomesh-[0-9]*)
str0m_dir=$(ls -d "$dir"/crates/rheomesh-str0m-*)
cp scripts/consumer/main.rs "$dir/src/main.rs"
cp Cargo.lock "$dir/Cargo.lock"
cat >"$dir/Cargo.toml" <<TOML
[package]
name = "rheomesh-consumer"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rheomesh = { path = "$rheomesh_dir", features = ["testing"] }
tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }

# Its own workspace: nothing of the repository's applies.
[workspace]

# In place of the registry: the packaged rheomesh names rheomesh-str0m by version.
[patch.crates-io]
rheomesh-str0m = { path = "$str0m_dir" }

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
