#!/bin/sh
# The DaemonSet's container (installer/kubernetes/daemonset.yaml): installs pullgate onto the
# node it runs on, then keeps the node in step with the ConfigMap and Secret it mounts, and
# reports through its readiness whether the node really runs pullgate.
#
# The host's root file system is mounted at $HOST_ROOT (/host). install.sh writes the files
# there (--root), and reaches the host's systemd by running the host's own systemctl chrooted
# into it: `chroot /host systemctl ...` talks to PID 1 over /run/systemd/private, which is the
# host's /run. systemctl refuses to act from a chroot unless told that it is fine, hence
# SYSTEMD_IGNORE_CHROOT (systemd up to 256) and SYSTEMD_IN_CHROOT=0 (later versions).
#
# Every $PULLGATE_SYNC_INTERVAL seconds it runs install.sh with its inputs (binary, config,
# policy, trusted root). install.sh is idempotent: a pass that finds the node as it was left
# changes nothing; one that finds a unit or drop-in gone or edited (a node image upgrade, a hand
# edit), pullgate stopped, or kubelet's own unit changed (the drop-in is derived from it) puts
# the node right, and rolls back if pullgate or kubelet do not come up. Then it runs
# `pullgate doctor` on the host ($PULLGATE_DOCTOR_CMD): the host is judged, not the inputs.
# A version of the inputs whose install failed is retried after $PULLGATE_RETRY_INTERVAL
# seconds (each try restarts services to roll back), or as soon as the inputs change again.
#
#   node-sync.sh              sync, then keep syncing (the DaemonSet's command)
#   node-sync.sh --once       sync once and exit with install.sh's status, or doctor's
#   node-sync.sh --uninstall  run uninstall.sh on the host once, then idle (to remove pullgate
#                             from every node before deleting the DaemonSet)
#
# $PULLGATE_SYNC_STATE/ready, the pod's readiness probe, exists while the last pass installed
# the current inputs and doctor found nothing failed on the host (exit status 0), or, with
# --uninstall, once pullgate is removed.
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
# The installed binary, with the host's paths: its configuration, sockets, kubelet's files.
DOCTOR_CMD=${PULLGATE_DOCTOR_CMD:-chroot $HOST_ROOT /usr/local/bin/pullgate doctor}
if [ -z "${PULLGATE_RUN_CMD+set}" ]; then
    # install.sh's check that the binary starts on the host, with the host's loader and C library:
    # chrooted into the host, it runs the image's file through a descriptor (/proc/self/fd is
    # the host's /proc there), so nothing is copied onto the host first.
    # shellcheck disable=SC2016,SC2089 # expanded by the sh install.sh runs it with
    PULLGATE_RUN_CMD='chroot "${PULLGATE_ROOT:-/}" /proc/self/fd/3 --version 3<"$PULLGATE_CANDIDATE"'
fi
SYSTEMD_IGNORE_CHROOT=1
SYSTEMD_IN_CHROOT=0
PULLGATE_ROOT=$HOST_ROOT
# shellcheck disable=SC2090 # PULLGATE_RUN_CMD is run by sh -c, quotes and all
export SYSTEMCTL PULLGATE_CHECK_CMD PULLGATE_RUN_CMD SYSTEMD_IGNORE_CHROOT SYSTEMD_IN_CHROOT PULLGATE_ROOT

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

# As the container's PID 1, sh ignores SIGTERM unless it traps it. The trap runs between
# commands: while idle (sleeping in the background, see pause) the pod stops at once; during an
# install.sh run, only once that run has committed or rolled back, never half-way through.
trap 'exit 0' TERM INT
pause() { # SECONDS
    sleep "$1" &
    wait $! || true
}

if [ "$MODE" = uninstall ]; then
    rm -f "$SYNC_STATE/ready"
    "$INSTALLER_DIR/uninstall.sh" --root "$HOST_ROOT"
    rm -f "$SYNC_STATE/installed"
    touch "$SYNC_STATE/ready"
    say "pullgate is removed from this node; delete the DaemonSet now"
    while :; do pause 3600; done
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

indent() { sed 's/^/    /' "$1"; }

# Runs doctor on the host. Ready only when it finds nothing failed; its findings are printed when
# it starts failing and whenever what fails changes, not on every pass.
judge_host() {
    if sh -c "$DOCTOR_CMD" >"$SYNC_STATE/doctor.out" 2>&1; then
        if [ ! -f "$SYNC_STATE/ready" ]; then say "pullgate doctor finds nothing failed on the node: ready"; fi
        rm -f "$SYNC_STATE/doctor-failed"
        touch "$SYNC_STATE/ready"
        return 0
    else
        status=$?
        rm -f "$SYNC_STATE/ready"
        grep '^FAIL' "$SYNC_STATE/doctor.out" >"$SYNC_STATE/doctor.fails" || true
        if [ ! -f "$SYNC_STATE/doctor-failed" ] || ! cmp -s "$SYNC_STATE/doctor.fails" "$SYNC_STATE/doctor-failed"; then
            say "pullgate doctor fails on the node ($status): not ready until it passes"
            indent "$SYNC_STATE/doctor.out"
        fi
        mv "$SYNC_STATE/doctor.fails" "$SYNC_STATE/doctor-failed"
        return "$status"
    fi
}

# One pass: install.sh with the current inputs (unless this version failed within the retry
# interval), then doctor. Returns install.sh's status if it failed, else doctor's.
sync_once() {
    sum=$(inputs_sum)
    if [ -f "$SYNC_STATE/failed" ] && [ "$(cat "$SYNC_STATE/failed")" = "$sum" ] &&
        [ "$(($(date +%s) - $(cat "$SYNC_STATE/failed-at")))" -lt "$RETRY_INTERVAL" ]; then
        rm -f "$SYNC_STATE/ready"
        return 1
    fi
    fresh=1
    if [ -f "$SYNC_STATE/installed" ] && [ "$(cat "$SYNC_STATE/installed")" = "$sum" ]; then fresh=0; fi
    if [ "$fresh" -eq 1 ]; then
        rm -f "$SYNC_STATE/ready"
        say "inputs changed ($sum): installing"
    fi
    if install_now >"$SYNC_STATE/install.out" 2>&1; then
        rm -f "$SYNC_STATE/failed" "$SYNC_STATE/failed-at"
        if [ "$fresh" -eq 1 ]; then
            indent "$SYNC_STATE/install.out"
            printf '%s\n' "$sum" >"$SYNC_STATE/installed"
            say "installed; the node runs pullgate with these inputs"
        elif [ "$(tail -n 1 "$SYNC_STATE/install.out")" != "pullgate-install: done: nothing changed" ]; then
            say "the node differed from what was installed; install.sh put it right:"
            indent "$SYNC_STATE/install.out"
        fi
    else
        status=$?
        indent "$SYNC_STATE/install.out"
        printf '%s\n' "$sum" >"$SYNC_STATE/failed"
        date +%s >"$SYNC_STATE/failed-at"
        rm -f "$SYNC_STATE/installed" "$SYNC_STATE/ready"
        say "install failed ($status); the node keeps what it had; retrying in ${RETRY_INTERVAL}s or when the inputs change"
        return "$status"
    fi
    judge_host
}

if [ "$MODE" = once ]; then
    sync_once
    exit $?
fi

while :; do
    sync_once || true
    pause "$INTERVAL"
done
