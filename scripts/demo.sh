#!/usr/bin/env bash
# The demo: a real registry and containerd on loopback, a signed and an unsigned image pulled
# through pullgate, the allow and the deny, and the audit log. Needs root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked -p pullgate -p pullgate-tests --bins
exec target/debug/demo
