#!/usr/bin/env bash
# The side-by-side benchmark (BENCHMARKS.md): a release pullgate in front of a real containerd and
# a real registry on loopback, alternating pullgate and direct. Needs root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked --release -p pullgate -p pullgate-tests --bin pullgate --bin bench
PULLGATE_BIN="$PWD/target/release/pullgate" exec target/release/bench "${1:-40}"
