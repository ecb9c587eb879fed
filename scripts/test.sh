#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests against a real
# containerd and a real registry started on loopback. Needs root (containerd) on Debian 12.
# The end-to-end tests run twice: on Debian 12's containerd 1.6, then, the tests that start a
# containerd only, on containerd 2.x (what kind and AKS nodes run; setup.sh fetches it).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --clients
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck scripts/*.sh .ci/run installer/*.sh installer/kubernetes/*.sh vagrant/*.sh
# The end-to-end tests run the real binary: build it first.
cargo build --workspace --locked

containerd2="${PULLGATE_TEST_TOOLS:-/var/cache/pullgate-tests}/bin/containerd2"
# Each run names its containerd, in its banner and in a failure's last line (the rig also prints
# the version in every failing test's output).
run_on() {
    local containerd="$1" version
    shift
    version="$("$containerd" --version)"
    echo "=== end-to-end tests on $version ($containerd)"
    if ! PULLGATE_TEST_CONTAINERD="$containerd" "$@"; then
        echo "=== FAILED on $version ($containerd)" >&2
        return 1
    fi
}

status=0
if cargo nextest --version >/dev/null 2>&1; then
    run_on "$(command -v containerd)" cargo nextest run --workspace --locked --no-fail-fast || status=1
else
    run_on "$(command -v containerd)" cargo test --workspace --locked --no-fail-fast || status=1
fi
# The second run: only the test files that start a containerd (through TestEnv or Containerd).
mapfile -t containerd_tests < <(grep -lE 'TestEnv|Containerd' tests/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')
targets=()
for t in "${containerd_tests[@]}"; do targets+=(--test "$t"); done
if cargo nextest --version >/dev/null 2>&1; then
    run_on "$containerd2" cargo nextest run -p pullgate-tests --locked --no-fail-fast "${targets[@]}" || status=1
else
    run_on "$containerd2" cargo test -p pullgate-tests --locked --no-fail-fast "${targets[@]}" || status=1
fi
exit "$status"
