#!/usr/bin/env bash
# Builds the binary the nodes run, target/release/pullgate, and checks it with
# scripts/check-binary.sh: an x86-64 Linux ELF needing glibc 2.35 or older, so that it starts on
# every supported node image. Build on Debian 12 (what CI runs; its release binary needs glibc
# 2.34) or another x86_64 Linux whose build passes the check; docs/building.md says what to do
# elsewhere (a newer distribution, macOS, arm64).
#
#   scripts/release.sh             cargo build --release, then the check
#   scripts/release.sh --zig       cargo zigbuild for x86_64-unknown-linux-gnu.2.28: the binary
#                                  names glibc 2.28 symbols at most, whatever this machine has;
#                                  needs cargo-zigbuild and zig (docs/building.md)
#
# Prints the path of the checked binary last.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-host}
case $mode in
host)
    cargo build --release --locked -p pullgate --bin pullgate
    binary=target/release/pullgate
    ;;
--zig)
    # glibc 2.28 is as old as zig's glibc stubs go comfortably and older than every node.
    cargo zigbuild --release --locked -p pullgate --bin pullgate --target x86_64-unknown-linux-gnu.2.28
    binary=target/x86_64-unknown-linux-gnu/release/pullgate
    ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "release: unknown argument: $1 (see --help)" >&2
    exit 1
    ;;
esac

scripts/check-binary.sh "$binary"
echo "$binary"
