#!/bin/sh
# The DaemonSet's container (installer/kubernetes/daemonset.yaml): installs pullgate onto the
# node it runs on, then keeps the node in step with the ConfigMap and Secret it mounts.
#
# The host's root file system is mounted at $HOST_ROOT (/host). install.sh writes the files
# there (--root), and reaches the host's systemd by running the host's own systemctl chrooted
# into it: `chroot /host systemctl ...` talks to PID 1 over /run/systemd/private, which is the
# host's /run. systemctl refuses to act from a chroot unless told that it is fine, hence
# SYSTEMD_IGNORE_CHROOT (systemd up to 256) and SYSTEMD_IN_CHROOT=0 (later versions).
#
# Every $PULLGATE_SYNC_INTERVAL seconds it hashes its inputs (binary, config, policy, trusted
# root); when they differ from what was last installed, it runs install.sh again, which changes
# only what differs and rolls back if pullgate does not come up. A failed version is retried
# after $PULLGATE_RETRY_INTERVAL seconds, or as soon as the inputs change again.
#
#   node-sync.sh              sync, then keep syncing (the DaemonSet's command)
#   node-sync.sh --once       sync once and exit with install.sh's status
#   node-sync.sh --uninstall  run uninstall.sh on the host once, then idle (to remove pullgate
#                             from every node before deleting the DaemonSet)
#
# $PULLGATE_SYNC_STATE/ready exists while the node runs pullgate with the current inputs (or,
# with --uninstall, once pullgate is removed): the pod's readiness probe.
set -eu

PROG=pullgate-node-sync
HOST_ROOT=${HOST_ROOT:-/host}
SOURCE_CONFIG=${PULLGATE_SOURCE_CONFIG:-/etc/pullgate-source/config}
SOURCE_TRUST=${PULLGATE_SOURCE_TRUST:-/etc/pullgate-source/trust}
HERE=$(cd "$(dirname "$0")" && pwd)
INSTALLER_DIR=${PULLGATE_INSTALLER_DIR:-$HERE/..}
BINARY=${PULLGATE_BINARY:-/usr/local/bin/pullgate}
INTERVAL=${PULLGATE_SYNC_INTERVAL:-30}
RETRY_INTERVAL=${PULLGATE_RETRY_INTERVAL:-600}
SYNC_STATE=${PULLGATE_SYNC_STATE:-/run/pullgate-sync}

if [ -z "${SYSTEMCTL+set}" ]; then SYSTEMCTL="chroot $HOST_ROOT systemctl"; fi
if [ -z "${PULLGATE_CHECK_CMD+set}" ]; then
    PULLGATE_CHECK_CMD="chroot $HOST_ROOT /usr/local/bin/pullgate policy check /etc/pullgate/policy.yaml"
fi
if [ -z "${PULLGATE_RUN_CMD+set}" ]; then
    # install.sh's check that the binary starts on the host, with the host's loader and C library:
    # chrooted into the host, it runs the image's file through a descriptor (/proc/self/fd is
    # the host's /proc there), so nothing is copied onto the host first.
    # shellcheck disable=SC2016,SC2089 # expanded by the sh install.sh runs it with
    PULLGATE_RUN_CMD='chroot "${PULLGATE_ROOT:-/}" /proc/self/fd/3 --version 3<"$PULLGATE_CANDIDATE"'
fi
SYSTEMD_IGNORE_CHROOT=1
SYSTEMD_IN_CHROOT=0
# shellcheck disable=SC2090 # PULLGATE_RUN_CMD is run by sh -c, quotes and all
export SYSTEMCTL PULLGATE_CHECK_CMD PULLGATE_RUN_CMD SYSTEMD_IGNORE_CHROOT SYSTEMD_IN_CHROOT

say() { printf '%s: %s\n' "$PROG" "$*"; }

MODE=loop
case ${1:-} in
'') ;;
--once) MODE=once ;;
--uninstall) MODE=uninstall ;;
-h | --help)
    sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    printf '%s: unknown argument: %s (see --help)\n' "$PROG" "$1" >&2
    exit 1
    ;;
esac

mkdir -p "$SYNC_STATE"

if [ "$MODE" = uninstall ]; then
    rm -f "$SYNC_STATE/ready"
    "$INSTALLER_DIR/uninstall.sh" --root "$HOST_ROOT"
    rm -f "$SYNC_STATE/installed"
    touch "$SYNC_STATE/ready"
    say "pullgate is removed from this node; delete the DaemonSet now"
    while :; do sleep 3600; done
fi

# One line per input: its sha256 and name. A missing trusted root is an input too ("none").
inputs_sum() {
    for input in "$BINARY" "$SOURCE_CONFIG/config.yaml" "$SOURCE_CONFIG/policy.yaml" "$SOURCE_TRUST/trusted_root.json"; do
        if [ -f "$input" ]; then
            printf '%s %s\n' "$(sha256sum <"$input" | cut -d ' ' -f 1)" "$input"
        else
            printf 'none %s\n' "$input"
        fi
    done | sha256sum | cut -d ' ' -f 1
}

# Runs install.sh for the current inputs; returns its status.
install_now() {
    set -- --root "$HOST_ROOT" --binary "$BINARY" --policy "$SOURCE_CONFIG/policy.yaml"
    if [ -f "$SOURCE_CONFIG/config.yaml" ]; then set -- "$@" --config "$SOURCE_CONFIG/config.yaml"; fi
    if [ -f "$SOURCE_TRUST/trusted_root.json" ]; then
        set -- "$@" --trusted-root "$SOURCE_TRUST/trusted_root.json"
    fi
    "$INSTALLER_DIR/install.sh" "$@"
}

# Installs when the inputs differ from the last installed ones (or the last failed ones, after
# the retry interval). Returns install.sh's status, 0 when there was nothing to do.
sync_once() {
    sum=$(inputs_sum)
    if [ -f "$SYNC_STATE/installed" ] && [ "$(cat "$SYNC_STATE/installed")" = "$sum" ]; then
        touch "$SYNC_STATE/ready"
        return 0
    fi
    rm -f "$SYNC_STATE/ready"
    if [ -f "$SYNC_STATE/failed" ] && [ "$(cat "$SYNC_STATE/failed")" = "$sum" ] &&
        [ "$(($(date +%s) - $(cat "$SYNC_STATE/failed-at")))" -lt "$RETRY_INTERVAL" ]; then
        return 1
    fi
    say "inputs changed ($sum): installing"
    if install_now; then
        printf '%s\n' "$sum" >"$SYNC_STATE/installed"
        touch "$SYNC_STATE/ready"
        rm -f "$SYNC_STATE/failed" "$SYNC_STATE/failed-at"
        say "installed; the node runs pullgate with these inputs"
        return 0
    else
        status=$?
        printf '%s\n' "$sum" >"$SYNC_STATE/failed"
        date +%s >"$SYNC_STATE/failed-at"
        rm -f "$SYNC_STATE/installed"
        say "install failed ($status); the node keeps what it had; retrying in ${RETRY_INTERVAL}s or when the inputs change"
        return "$status"
    fi
}

if [ "$MODE" = once ]; then
    sync_once
    exit $?
fi

while :; do
    sync_once || true
    sleep "$INTERVAL"
done
