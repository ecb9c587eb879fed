#!/usr/bin/env bash
# Installs what the demo and the tests run against: containerd, runc, the CNCF registry,
# protoc (containerd-client's build), htpasswd (the auth tests), shellcheck, and systemd
# (systemd-analyze and systemd-socket-activate, for the unit and socket-activation tests), jq
# (the jq lines of docs/audit-log.md are run against a real audit log), logrotate (the
# shipped /etc/logrotate.d/pullgate is run against a real pullgate), and binutils (objdump:
# scripts/check-binary.sh reads the built binary's glibc symbol versions).
# With --clients (the test suite), also the clients users call pullgate with and the tools they
# sign with, built once into $PULLGATE_TEST_TOOLS (default /var/cache/pullgate-tests) and kept:
# crictl from cri-tools, cosign v2 and v3, oras, the Notary Project's notation, rekor-tiles' POSIX
# server (a Rekor v2 log) and Sigstore's timestamp-server (an RFC 3161 TSA) (each built through the
# Go module proxy),
# gRPC C-core's Python client grpcio (PyPI), and containerd 2.x (what kind and AKS nodes run;
# Debian 12 has 1.6) from Debian sid, unpacked into $PULLGATE_TEST_TOOLS/containerd-<version> and
# linked as $PULLGATE_TEST_TOOLS/bin/containerd2.
# What is already present is not installed again, so a second run needs no network.
set -euo pipefail

packages=(containerd runc docker-registry protobuf-compiler apache2-utils shellcheck systemd jq logrotate binutils)
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
notation_version=v1.3.2
rekor_tiles_version=v2.3.0
timestamp_authority_version=v2.1.3
grpcio_version=1.85.4

# go_tool NAME PACKAGE VERSION: builds PACKAGE@VERSION into $tools/bin/NAME unless that version
# is there. Modules and build cache live under $tools/go (the machine's own stay untouched) and
# are removed at the end: only the binaries are kept.
built_go=false
go_tool() {
    local name=$1 package=$2 version=$3 module=${4:-}
    [ "$(cat "$tools/bin/$name.version" 2>/dev/null)" = "$version" ] && return 0
    command -v go >/dev/null || { echo "setup: go is required to build $name" >&2; exit 1; }
    echo "setup: building $name $version into $tools/bin"
    mkdir -p "$tools/bin" "$tools/go/out"
    # GOTOOLCHAIN=local: a module that wants a newer Go fails here instead of fetching one.
    export GOPATH="$tools/go/path" GOCACHE="$tools/go/cache" GOTOOLCHAIN=local GOFLAGS="-modcacherw -buildvcs=false"
    if [ -z "$module" ]; then
        GOBIN="$tools/go/out" go install "$package@$version"
    else
        # Some versions cannot be installed by `go install pkg@version` through the proxy (it
        # answers the version-list lookup notation needs with 403): a throwaway module that
        # requires MODULE@VERSION builds the package instead.
        local work="$tools/go/module-$name"
        rm -rf "$work" && mkdir -p "$work"
        (cd "$work" && go mod init pullgate-tools/"$name" >/dev/null 2>&1 &&
            go mod edit -require="$module@$version" &&
            go build -mod=mod -o "$tools/go/out/$(basename "$package")" "$package")
    fi
    unset GOPATH GOCACHE GOTOOLCHAIN GOFLAGS
    mv "$tools/go/out/$(basename "$package")" "$tools/bin/$name"
    echo "$version" >"$tools/bin/$name.version"
    built_go=true
}
go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl "$crictl_version"
go_tool cosign2 github.com/sigstore/cosign/v2/cmd/cosign "$cosign2_version"
go_tool cosign3 github.com/sigstore/cosign/v3/cmd/cosign "$cosign3_version"
go_tool oras oras.land/oras/cmd/oras "$oras_version"
go_tool notation github.com/notaryproject/notation/cmd/notation "$notation_version" github.com/notaryproject/notation
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

# containerd 2.x from Debian's archive, without touching the machine's apt state: a sources list,
# lists and cache of our own in a temp dir, apt-get download, dpkg-deb -x. apt checks the .deb
# against sid's Release file, signed by the archive key Debian 12 already trusts. The binary needs
# only libc 2.34 (Debian 12 has 2.36), so it runs here as it is.
containerd2_version=2.1.9+ds1-5
containerd2_dir="$tools/containerd-$containerd2_version"
if [ ! -x "$containerd2_dir/usr/bin/containerd" ]; then
    echo "setup: fetching containerd $containerd2_version from Debian sid into $containerd2_dir"
    apt_tmp="$(mktemp -d)"
    trap 'rm -rf "$apt_tmp"' EXIT
    mkdir -p "$apt_tmp/lists/partial" "$apt_tmp/cache/archives/partial" "$apt_tmp/parts" "$apt_tmp/deb"
    if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
        # As root, apt downloads as the unprivileged _apt: give it the directories it writes.
        chmod 755 "$apt_tmp"
        chown _apt "$apt_tmp/lists/partial" "$apt_tmp/cache/archives/partial" "$apt_tmp/deb"
    fi
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
        >"$apt_tmp/sources.list"
    apt_own_state=(
        -o "Dir::Etc::SourceList=$apt_tmp/sources.list"
        -o "Dir::Etc::SourceParts=$apt_tmp/parts"
        -o "Dir::State::Lists=$apt_tmp/lists"
        -o "Dir::Cache=$apt_tmp/cache"
        -o "Dir::State::status=/dev/null"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Debug::NoLocking=true"
    )
    apt-get "${apt_own_state[@]}" -qq update
    # sid drops a version when the next one arrives: then this pin must move (apt-get says which
    # versions it has).
    (cd "$apt_tmp/deb" && apt-get "${apt_own_state[@]}" -qq download "containerd=$containerd2_version") || {
        echo "setup: Debian sid no longer serves containerd $containerd2_version; set containerd2_version in $0 to a 2.x it serves" >&2
        exit 1
    }
    rm -rf "$containerd2_dir.tmp"
    dpkg-deb -x "$apt_tmp"/deb/containerd_*.deb "$containerd2_dir.tmp"
    "$containerd2_dir.tmp/usr/bin/containerd" --version | grep -q " 2\." || {
        echo "setup: $containerd2_dir.tmp/usr/bin/containerd is not containerd 2.x" >&2
        exit 1
    }
    mv "$containerd2_dir.tmp" "$containerd2_dir"
fi
ln -sfn "../containerd-$containerd2_version/usr/bin/containerd" "$tools/bin/containerd2"
