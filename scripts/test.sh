#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests against a real
# containerd and a real registry started on loopback. Needs root (containerd) on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --clients
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck scripts/*.sh .ci/run installer/*.sh installer/kubernetes/*.sh vagrant/*.sh
# The end-to-end tests run the real binary: build it first.
cargo build --workspace --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
