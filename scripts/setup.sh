#!/usr/bin/env bash
# Installs what the demo and the tests run against: containerd, runc, the CNCF registry,
# protoc (containerd-client's build), htpasswd (the auth tests), shellcheck, and systemd
# (systemd-analyze and systemd-socket-activate, for the unit and socket-activation tests), and jq
# (the jq lines of docs/audit-log.md are run against a real audit log).
# Packages already present are not installed again, so a second run needs no network.
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
