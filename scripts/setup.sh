#!/usr/bin/env bash
# Installs what the demo and the tests run against: containerd, runc, the CNCF registry,
# protoc (containerd-client's build), htpasswd (the auth tests), shellcheck, and systemd
# (systemd-analyze and systemd-socket-activate, for the unit and socket-activation tests), and jq
# (the jq lines of docs/audit-log.md are run against a real audit log).
# With --clients (the test suite), also the clients users call pullgate with and the tools they
# sign with, built once into $PULLGATE_TEST_TOOLS (default /var/cache/pullgate-tests) and kept:
# crictl from cri-tools, cosign v2 and v3, oras, rekor-tiles' POSIX server (a Rekor v2 log) and
# Sigstore's timestamp-server (an RFC 3161 TSA) (each `go install` through the Go module proxy),
# and gRPC C-core's Python client grpcio (PyPI).
# What is already present is not installed again, so a second run needs no network.
set -euo pipefail

packages=(containerd runc docker-registry protobuf-compiler apache2-utils shellcheck systemd jq)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust 1.86 or later) is required" >&2; exit 1; }

[ "${1:-}" = --clients ] || exit 0
tools="${PULLGATE_TEST_TOOLS:-/var/cache/pullgate-tests}"
crictl_version=v1.37.0
cosign2_version=v2.6.5
cosign3_version=v3.1.3
oras_version=v1.3.6
rekor_tiles_version=v2.3.0
timestamp_authority_version=v2.1.3
grpcio_version=1.85.4

# go_tool NAME PACKAGE VERSION: builds PACKAGE@VERSION into $tools/bin/NAME unless that version
# is there. Modules and build cache live under $tools/go (the machine's own stay untouched) and
# are removed at the end: only the binaries are kept.
built_go=false
go_tool() {
    local name=$1 package=$2 version=$3
    [ "$(cat "$tools/bin/$name.version" 2>/dev/null)" = "$version" ] && return 0
    command -v go >/dev/null || { echo "setup: go is required to build $name" >&2; exit 1; }
    echo "setup: building $name $version into $tools/bin"
    mkdir -p "$tools/bin" "$tools/go/out"
    # GOTOOLCHAIN=local: a module that wants a newer Go fails here instead of fetching one.
    GOPATH="$tools/go/path" GOCACHE="$tools/go/cache" GOBIN="$tools/go/out" GOTOOLCHAIN=local \
        GOFLAGS="-modcacherw -buildvcs=false" go install "$package@$version"
    mv "$tools/go/out/$(basename "$package")" "$tools/bin/$name"
    echo "$version" >"$tools/bin/$name.version"
    built_go=true
}
go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl "$crictl_version"
go_tool cosign2 github.com/sigstore/cosign/v2/cmd/cosign "$cosign2_version"
go_tool cosign3 github.com/sigstore/cosign/v3/cmd/cosign "$cosign3_version"
go_tool oras oras.land/oras/cmd/oras "$oras_version"
go_tool rekor-tiles github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix "$rekor_tiles_version"
go_tool timestamp-server github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server "$timestamp_authority_version"
if "$built_go"; then
    rm -rf "$tools/go"
fi

if [ "$(cat "$tools/python/grpcio.version" 2>/dev/null)" != "$grpcio_version" ]; then
    command -v python3 >/dev/null || { echo "setup: python3 is required for grpcio" >&2; exit 1; }
    echo "setup: installing grpcio $grpcio_version into $tools/python"
    rm -rf "$tools/python"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$tools/python" "grpcio==$grpcio_version"
    echo "$grpcio_version" >"$tools/python/grpcio.version"
fi
