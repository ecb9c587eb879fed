#!/bin/sh
# Removes what installer/install.sh installed and puts the node back exactly as it was before the
# first install: files install.sh replaced come back byte for byte (mode and type too), files and
# directories it created are removed, and so is its own record under /var/lib/pullgate/install.
# pullgate's state (admitted.json in /var/lib/pullgate, stateDir's default) goes too: the
# verifications in it belong to the pullgate being removed, and a later install verifies again.
#
# kubelet is switched back first (its drop-in restored, kubelet restarted if it runs), and only
# then is pullgate stopped, so kubelet never points at a socket nobody serves. The audit log in
# /var/log/pullgate is pullgate's record, not the installer's, and stays.
#
# SYSTEMCTL and KUBELET_READY_CMD work as for install.sh. Running it again, or on a node where
# nothing was installed, changes nothing.
set -eu

PROG=pullgate-uninstall

usage() {
    cat <<'EOF'
Usage: uninstall.sh [OPTIONS]

Undo installer/install.sh on this node (or under --root), restoring what it replaced.

Options:
  --root DIR            uninstall from DIR instead of / (no systemctl unless SYSTEMCTL is set)
  --ready-timeout SECS  how long to wait for kubelet to run again (default: 60)
  --dry-run             print what would change, change nothing
  -h, --help            show this help
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

ROOT=/
READY_TIMEOUT=${PULLGATE_READY_TIMEOUT:-60}
DRY_RUN=0

need_value() { [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"; }

while [ "$#" -gt 0 ]; do
    case $1 in
    --root) need_value "$@"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#*=}; shift ;;
    --ready-timeout) need_value "$@"; READY_TIMEOUT=$2; shift 2 ;;
    --ready-timeout=*) READY_TIMEOUT=${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case $READY_TIMEOUT in
'' | *[!0-9]*) die "--ready-timeout must be a whole number of seconds, not '$READY_TIMEOUT'" ;;
esac

[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
R=$(cd "$ROOT" && pwd)
[ "$R" = / ] && R=

if [ -z "${SYSTEMCTL+set}" ]; then
    if [ -z "$R" ]; then SYSTEMCTL=systemctl; else SYSTEMCTL=; fi
fi
PULLGATE_ROOT=$R
export SYSTEMCTL PULLGATE_ROOT
if [ -z "${KUBELET_READY_CMD:-}" ]; then
    # shellcheck disable=SC2016 # expanded by the sh that runs the command, not here
    KUBELET_READY_CMD='$SYSTEMCTL is-active --quiet kubelet.service && sleep 3 && $SYSTEMCTL is-active --quiet kubelet.service'
fi

STATE=/var/lib/pullgate/install
# pullgate's own state: systemd's StateDirectory=pullgate, the configuration's default stateDir.
PULLGATE_STATE=/var/lib/pullgate
MANIFEST=$STATE/manifest
DROPIN_PATH=/etc/systemd/system/kubelet.service.d/90-pullgate.conf

if [ ! -f "$R$MANIFEST" ]; then
    say "nothing to uninstall under ${R:-/}: no $R$MANIFEST"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pullgate-uninstall.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The manifest is read from a copy: the state directory goes away before the directories do.
cp "$R$MANIFEST" "$WORK/manifest"
sed '1!G;h;$!d' "$WORK/manifest" >"$WORK/reversed"

if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run under ${R:-/}: nothing is changed"
else
    say "uninstalling under ${R:-/}"
fi

systemctl_do() {
    say "systemctl $*"
    [ "$DRY_RUN" -eq 1 ] && return 0
    # shellcheck disable=SC2086 # SYSTEMCTL may be a command with arguments (chroot /host systemctl)
    $SYSTEMCTL "$@"
}

systemctl_query() {
    # shellcheck disable=SC2086
    $SYSTEMCTL "$@" >/dev/null 2>&1
}

# Puts back the node's original PATH, or removes PATH when the installer created it.
restore() { # PATH
    dest=$R$1
    orig=$R$STATE/orig$1
    if [ -e "$orig" ] || [ -L "$orig" ]; then
        say "restore   $dest"
        [ "$DRY_RUN" -eq 1 ] && return 0
        tmp=$(dirname "$dest")/.$(basename "$dest").pullgate-tmp
        rm -rf "$tmp"
        cp -a "$orig" "$tmp"
        mv -f "$tmp" "$dest"
    elif [ -e "$dest" ] || [ -L "$dest" ]; then
        say "remove    $dest"
        [ "$DRY_RUN" -eq 1 ] && return 0
        rm -f "$dest"
    fi
}

# 1. kubelet back to containerd, while pullgate still serves.
if grep -qxF "file $DROPIN_PATH" "$WORK/manifest"; then
    restore "$DROPIN_PATH"
    if [ -n "$SYSTEMCTL" ]; then
        kubelet_was_active=0
        if systemctl_query is-active --quiet kubelet.service; then kubelet_was_active=1; fi
        systemctl_do daemon-reload
        if [ "$kubelet_was_active" -eq 1 ]; then
            systemctl_do restart kubelet.service
            say "wait      for kubelet to run again (at most ${READY_TIMEOUT}s): $KUBELET_READY_CMD"
            if [ "$DRY_RUN" -eq 0 ]; then
                deadline=$(($(date +%s) + READY_TIMEOUT))
                until sh -c "$KUBELET_READY_CMD" >/dev/null 2>&1; do
                    if [ "$(date +%s)" -ge "$deadline" ]; then
                        warn "kubelet does not run after its pullgate drop-in was removed (see: journalctl -u kubelet.service); going on"
                        break
                    fi
                    sleep 1
                done
            fi
        fi
    fi
fi

# 2. pullgate stopped and disabled.
if [ -n "$SYSTEMCTL" ]; then
    systemctl_do disable --now pullgate.service pullgate.socket ||
        warn "systemctl could not stop or disable pullgate; its unit files are removed all the same"
fi

# 3. Every other file, newest first.
while read -r kind path; do
    [ "$kind" = file ] || continue
    [ "$path" = "$DROPIN_PATH" ] && continue
    restore "$path"
done <"$WORK/reversed"

if [ -n "$SYSTEMCTL" ]; then systemctl_do daemon-reload; fi

# 4. The installer's record and pullgate's state (pullgate is stopped now), then the
# directories the installer created, newest first. A directory that holds something the
# installer did not put there stays.
state_dir=$R$STATE
say "remove    $state_dir"
[ "$DRY_RUN" -eq 1 ] || rm -rf -- "$state_dir"
for state_file in admitted.json admitted.json.tmp; do
    if [ -e "$R$PULLGATE_STATE/$state_file" ]; then
        say "remove    $R$PULLGATE_STATE/$state_file"
        [ "$DRY_RUN" -eq 1 ] || rm -f -- "$R$PULLGATE_STATE/$state_file"
    fi
done
while read -r kind path; do
    [ "$kind" = dir ] || continue
    [ -d "$R$path" ] || continue
    if [ "$DRY_RUN" -eq 1 ]; then
        say "rmdir     $R$path (if empty)"
    elif rmdir "$R$path" 2>/dev/null; then
        say "rmdir     $R$path"
    else
        warn "$R$path was created by the installer but holds other files now; it stays"
    fi
done <"$WORK/reversed"

if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run: nothing was changed"
else
    say "done"
fi
