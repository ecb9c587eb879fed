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

# cargo-nextest when installed (per-test timeouts), else cargo test; "$@" are cargo's target
# options, then test-name filters after "--". Called through run_on.
# shellcheck disable=SC2317
run_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --locked --no-fail-fast "$@"
    else
        cargo test --locked --no-fail-fast "$@"
    fi
}

status=0
run_on "$(command -v containerd)" run_tests --workspace || status=1
# The second run: only the tests that start a containerd (through TestEnv or Containerd): the
# suites of the e2e binary by their path, and the binaries of their own. image_volumes starts
# containerd 2.x itself in the first run already.
mapfile -t suites < <(grep -lE 'TestEnv|Containerd' tests/tests/e2e/*.rs | xargs -n1 basename | sed 's/\.rs$//' |
    grep -vx -e main -e image_volumes)
filters=()
for s in "${suites[@]}"; do filters+=("$s::"); done
run_on "$containerd2" run_tests -p pullgate-tests --test e2e -- "${filters[@]}" || status=1
mapfile -t binaries < <(grep -lE 'TestEnv|Containerd' tests/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')
for b in "${binaries[@]}"; do
    run_on "$containerd2" run_tests -p pullgate-tests --test "$b" || status=1
done
exit "$status"
