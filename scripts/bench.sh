#!/usr/bin/env bash
# The side-by-side benchmark (BENCHMARKS.md): a release pullgate in front of a real containerd and
# a real registry on loopback, alternating pullgate and direct. Needs root on Debian 12.
#
#   scripts/bench.sh [--baseline <git-rev>] [--rtt <n>ms] [ROUNDS]
#
# --rtt <n>ms puts the registry a round trip of n milliseconds away: containerd and pullgate each
# reach it through a latency proxy of the bench's own (tests/src/latency_proxy.rs, loopback only,
# the delay added per direction to every chunk of every connection), named as the registry's
# server in the hosts.toml each reads. The proxies also count the registry requests of each cold
# pull by kind (manifest GET and HEAD, blob GET, referrers, other) and the connections opened.
#
# --baseline <git-rev> compares two versions in one run: it checks that revision out in a git
# worktree at target/bench-baseline/src (kept, so a second run rebuilds only what changed), builds
# its release pullgate there with its own target dir (target/bench-baseline/target), and runs it
# beside this tree's build: a second pullgate with the same configuration and policy in front of
# the same containerd. Every round then measures current, baseline and direct in an order that
# rotates by round, and the table adds the baseline's figures and the ratio current/baseline.
# Setting PULLGATE_BASELINE_BIN to an already built pullgate does the same without building.
# `git worktree remove target/bench-baseline/src` drops the checkout.
#
# Builds run under `nice -n 10`: the benchmark is often run on a machine others compile on.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/bench.sh [--baseline <git-rev>] [--rtt <n>ms] [ROUNDS]" >&2
    exit 2
}

baseline_rev=""
rounds=40
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline)
            [ $# -ge 2 ] || usage
            baseline_rev="$2"
            shift 2
            ;;
        --rtt)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+ms$ ]]; then usage; fi
            bench_args+=(--rtt "$2")
            shift 2
            ;;
        -h | --help) usage ;;
        *)
            [[ "$1" =~ ^[0-9]+$ ]] || usage
            rounds="$1"
            shift
            ;;
    esac
done

scripts/setup.sh

if [ -n "$baseline_rev" ]; then
    commit="$(git rev-parse --verify "${baseline_rev}^{commit}")"
    src="$PWD/target/bench-baseline/src"
    if [ -e "$src/.git" ]; then
        git -C "$src" checkout --quiet --detach "$commit"
    else
        mkdir -p target/bench-baseline
        git worktree add --detach "$src" "$commit"
    fi
    echo "bench: building the baseline pullgate at $(git log -1 --format='%h %s' "$commit")" >&2
    (cd "$src" && CARGO_TARGET_DIR="$PWD/../target" nice -n 10 \
        cargo build --locked --release -p pullgate --bin pullgate)
    export PULLGATE_BASELINE_BIN="$PWD/target/bench-baseline/target/release/pullgate"
fi

nice -n 10 cargo build --locked --release -p pullgate -p pullgate-tests --bin pullgate --bin bench
PULLGATE_BIN="$PWD/target/release/pullgate" exec target/release/bench "${bench_args[@]}" "$rounds"
