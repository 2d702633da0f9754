#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, docs, Rust unit and integration tests.
# Installs what a test needs when it is missing. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets -- -D warnings

step "rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

step "cargo test (unit + integration: real str0m peers over UDP on 127.0.0.1)"
cargo test
