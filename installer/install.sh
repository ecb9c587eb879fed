#!/bin/sh
# Installs pullgate on a node, or into a directory tree with --root: the binary, the systemd
# units, the configuration, policy and trusted root, the logrotate configuration for the audit
# log, and the kubelet drop-in that points kubelet's image service at pullgate. Running it again
# with the same inputs changes nothing (and puts back what went missing since); with new inputs
# it changes only what differs. installer/uninstall.sh puts the node back exactly as it was
# before the first install. installer/README.md explains the design.
#
# A run is one transaction: every file it replaces is copied first, and if anything fails —
# the policy check, pullgate not becoming ready, kubelet not coming back — the run is undone,
# files byte for byte, and the services are put back as they were.
#
# Everything that touches the running system goes through variables, so that the DaemonSet can
# reach the host from a container and the tests can watch what would happen:
#   SYSTEMCTL            command for systemctl (default "systemctl"; with --root, none: then
#                        nothing is started and the units are enabled through symlinks only)
#   PULLGATE_CHECK_CMD   sh command that validates the installed files before pullgate is
#                        (re)started (default without --root: pullgate policy check)
#   PULLGATE_READY_CMD   sh command that succeeds once pullgate serves (default: the service is
#                        active — Type=notify, so after READY=1 — and its socket exists)
#   KUBELET_READY_CMD    sh command that succeeds once a restarted kubelet runs (default: active,
#                        and still active three seconds later)
#   PULLGATE_RUN_CMD     sh command that runs the given binary, $PULLGATE_CANDIDATE, with
#                        --version as the node would, before anything is touched (default
#                        without --root: the binary itself; with --root, none: not run)
#   PULLGATE_NODE_ARCH   the node's machine as `uname -m` names it (default: `uname -m`, the
#                        kernel's, which a container shares with its node)
# The commands run with PULLGATE_ROOT (the --root prefix, "" for /) and SYSTEMCTL set.
set -eu

PROG=pullgate-install
TAB=$(printf '\t')

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS]

Install or update pullgate on this node (or under --root) and point kubelet at it.

Options:
  --root DIR            install into DIR instead of / (no systemctl unless SYSTEMCTL is set)
  --binary PATH         the pullgate binary to install (default: ./pullgate)
  --config PATH         configuration for /etc/pullgate/config.yaml (default: keep the node's,
                        or install installer/config.yaml where there is none)
  --policy PATH         policy for /etc/pullgate/policy.yaml (required where there is none)
  --trusted-root PATH   Sigstore trusted_root.json for /etc/pullgate/trust/trusted_root.json
                        (default: keep the node's, if any)
  --units DIR           directory with pullgate.socket, pullgate.service, pullgate.logrotate
                        and kubelet-pullgate.conf (default: ../systemd next to this script)
  --no-kubelet-wiring   do not install or change the kubelet drop-in (wire kubelet yourself,
                        e.g. with imageServiceEndpoint in KubeletConfiguration)
  --ready-timeout SECS  how long to wait for pullgate and kubelet to be ready (default: 60)
  --dry-run             print what would change, change nothing
  -h, --help            show this help

Files the node had are kept under /var/lib/pullgate/install/ so that uninstall.sh can restore
them. Given files always win: a file changed on the node since the last install is replaced,
and a copy of the changed file is kept under /var/lib/pullgate/install/edited/.
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# --- Arguments --------------------------------------------------------------------------------

ROOT=/
BINARY=./pullgate
CONFIG_SRC=
POLICY_SRC=
TRUST_SRC=
UNITS_SRC=
WIRE_KUBELET=1
READY_TIMEOUT=${PULLGATE_READY_TIMEOUT:-60}
DRY_RUN=0

need_value() { [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"; }

while [ "$#" -gt 0 ]; do
    case $1 in
    --root) need_value "$@"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#*=}; shift ;;
    --binary) need_value "$@"; BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#*=}; shift ;;
    --config) need_value "$@"; CONFIG_SRC=$2; shift 2 ;;
    --config=*) CONFIG_SRC=${1#*=}; shift ;;
    --policy) need_value "$@"; POLICY_SRC=$2; shift 2 ;;
    --policy=*) POLICY_SRC=${1#*=}; shift ;;
    --trusted-root) need_value "$@"; TRUST_SRC=$2; shift 2 ;;
    --trusted-root=*) TRUST_SRC=${1#*=}; shift ;;
    --units) need_value "$@"; UNITS_SRC=$2; shift 2 ;;
    --units=*) UNITS_SRC=${1#*=}; shift ;;
    --no-kubelet-wiring) WIRE_KUBELET=0; shift ;;
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

HERE=$(cd "$(dirname "$0")" && pwd)
[ -n "$UNITS_SRC" ] || UNITS_SRC=$HERE/../systemd

[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
# R is prepended to every node path: "" for the real root, so paths stay as systemd sees them.
R=$(cd "$ROOT" && pwd)
[ "$R" = / ] && R=

# Without --root the node's own systemctl; with it, none unless one is given (even an empty
# SYSTEMCTL= means none).
if [ -z "${SYSTEMCTL+set}" ]; then
    if [ -z "$R" ]; then SYSTEMCTL=systemctl; else SYSTEMCTL=; fi
fi
PULLGATE_ROOT=$R
export SYSTEMCTL PULLGATE_ROOT

# The commands are expanded by the sh that runs them, not here.
if [ -z "${PULLGATE_READY_CMD:-}" ]; then
    # shellcheck disable=SC2016
    PULLGATE_READY_CMD='$SYSTEMCTL is-active --quiet pullgate.service && test -S "$PULLGATE_ROOT/run/pullgate/pullgate.sock"'
fi
if [ -z "${KUBELET_READY_CMD:-}" ]; then
    # shellcheck disable=SC2016
    KUBELET_READY_CMD='$SYSTEMCTL is-active --quiet kubelet.service && sleep 3 && $SYSTEMCTL is-active --quiet kubelet.service'
fi
if [ -z "${PULLGATE_CHECK_CMD+set}" ]; then
    # The installed binary checks the installed policy where both can be run as the node will.
    if [ -z "$R" ]; then
        PULLGATE_CHECK_CMD='/usr/local/bin/pullgate policy check /etc/pullgate/policy.yaml'
    else
        PULLGATE_CHECK_CMD=
    fi
fi

# --- Where things go on the node ----------------------------------------------------------------

BIN_PATH=/usr/local/bin/pullgate
UNIT_DIR=/etc/systemd/system
SOCKET_PATH=$UNIT_DIR/pullgate.socket
SERVICE_PATH=$UNIT_DIR/pullgate.service
CONF_DIR=/etc/pullgate
CONFIG_PATH=$CONF_DIR/config.yaml
POLICY_PATH=$CONF_DIR/policy.yaml
TRUST_DIR=$CONF_DIR/trust
TRUST_PATH=$TRUST_DIR/trusted_root.json
DROPIN_NAME=90-pullgate.conf
DROPIN_DIR=$UNIT_DIR/kubelet.service.d
DROPIN_PATH=$DROPIN_DIR/$DROPIN_NAME
LOGROTATE_PATH=/etc/logrotate.d/pullgate
# What `systemctl enable` would create, made by hand when there is no systemctl.
SOCKET_WANTS=$UNIT_DIR/sockets.target.wants/pullgate.socket
SERVICE_WANTS=$UNIT_DIR/multi-user.target.wants/pullgate.service
# The installer's own records: manifest, sums, and the node's original files.
STATE=/var/lib/pullgate/install
MANIFEST=$STATE/manifest
SUMS=$STATE/sums
# systemd's unit search path, highest precedence first (systemd.unit(5)).
UNIT_SEARCH="/etc/systemd/system /run/systemd/system /usr/local/lib/systemd/system /usr/lib/systemd/system /lib/systemd/system"

# --- Preflight: everything that can be checked before the node is touched -----------------------

absolute() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }

source_file() { # NAME PATH
    [ -f "$2" ] || die "$1 $2 is not a file"
    absolute "$2"
}

# Refuses a binary that cannot run on this node, with what to build instead: another
# architecture's (or a macOS build), or one that fails to start here, such as one linked
# against a newer glibc than the node has (docs/building.md).
check_binary() { # PATH
    candidate=$1
    header=$(od -An -tx1 -N20 "$candidate" | tr -s ' \n' '  ')
    case $header in
    " 7f 45 4c 46 "*) ;;
    " cf fa ed fe "* | " fe ed fa cf "* | " ca fe ba be "*)
        die "--binary $candidate is a macOS (Mach-O) executable; nodes run Linux: build pullgate for Linux (docs/building.md)" ;;
    " 23 21 "*) die "--binary $candidate is a script, not the pullgate binary" ;;
    *) die "--binary $candidate is not an ELF executable" ;;
    esac
    # e_machine: bytes 18 and 19, little-endian on every architecture pullgate builds for.
    machine=$(printf '%s\n' "$header" | awk '{ print $20 $19 }')
    case $machine in
    003e) built_for=x86_64 ;;
    00b7) built_for=aarch64 ;;
    0028) built_for=arm ;;
    0003) built_for=i686 ;;
    00f3) built_for=riscv64 ;;
    0015) built_for=ppc64 ;;
    0016) built_for=s390x ;;
    *) built_for="machine 0x$machine" ;;
    esac
    node_arch=${PULLGATE_NODE_ARCH:-$(uname -m)}
    case $node_arch in
    arm*) node_arch=arm ;;
    i?86) node_arch=i686 ;;
    ppc64*) node_arch=ppc64 ;;
    esac
    [ "$built_for" = "$node_arch" ] ||
        die "--binary $candidate is built for $built_for, but this node is $node_arch: build pullgate for $node_arch (docs/building.md)"

    if [ -z "${PULLGATE_RUN_CMD+set}" ] && [ -z "$R" ]; then
        # shellcheck disable=SC2016 # expanded by the sh that runs it
        PULLGATE_RUN_CMD='"$PULLGATE_CANDIDATE" --version'
    fi
    if [ -z "${PULLGATE_RUN_CMD:-}" ]; then
        say "not run   $candidate --version (with --root, only PULLGATE_RUN_CMD can run it as the node would)"
        return 0
    fi
    # Bounded in time, and with no input: whatever the file turns out to be, it cannot hang the run.
    limit=
    if command -v timeout >/dev/null 2>&1; then limit="timeout 30"; fi
    # shellcheck disable=SC2086 # $limit is a command and its argument, or nothing
    if ! version=$(PULLGATE_CANDIDATE=$candidate $limit sh -c "$PULLGATE_RUN_CMD" </dev/null 2>&1); then
        printf '%s\n' "$version" | head -n 5 | sed 's/^/    /' >&2
        die "--binary $candidate does not run on this node ($PULLGATE_RUN_CMD failed); a binary linked against a newer glibc than the node's fails like this: build it with scripts/release.sh (docs/building.md)"
    fi
    case $version in
    "pullgate "*) say "binary    $candidate: $version ($built_for)" ;;
    *) die "--binary $candidate is not pullgate: --version printed '$(printf '%s' "$version" | head -n 1)'" ;;
    esac
}

BINARY=$(source_file --binary "$BINARY")
check_binary "$BINARY"
for unit in pullgate.socket pullgate.service pullgate.logrotate kubelet-pullgate.conf; do
    [ -f "$UNITS_SRC/$unit" ] || die "$UNITS_SRC/$unit is missing (see --units)"
done
UNITS_SRC=$(cd "$UNITS_SRC" && pwd)
[ -z "$CONFIG_SRC" ] || CONFIG_SRC=$(source_file --config "$CONFIG_SRC")
[ -z "$POLICY_SRC" ] || POLICY_SRC=$(source_file --policy "$POLICY_SRC")
[ -z "$TRUST_SRC" ] || TRUST_SRC=$(source_file --trusted-root "$TRUST_SRC")
if [ -z "$CONFIG_SRC" ] && [ ! -e "$R$CONFIG_PATH" ] && [ ! -L "$R$CONFIG_PATH" ]; then
    CONFIG_SRC=$(source_file "default configuration" "$HERE/config.yaml")
fi
if [ -z "$POLICY_SRC" ] && [ ! -e "$R$POLICY_PATH" ] && [ ! -L "$R$POLICY_PATH" ]; then
    die "$R$POLICY_PATH does not exist: give the policy with --policy (pullgate has no default policy)"
fi
for path in $BIN_PATH $SOCKET_PATH $SERVICE_PATH $CONFIG_PATH $POLICY_PATH $TRUST_PATH $LOGROTATE_PATH $DROPIN_PATH $MANIFEST $SUMS; do
    if [ -d "$R$path" ] && [ ! -L "$R$path" ]; then die "$R$path is a directory; expected a file"; fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pullgate-install.XXXXXX")
TXN_OPEN=0
finish() {
    status=$1
    trap - EXIT
    if [ "$status" -ne 0 ] && [ "$TXN_OPEN" -eq 1 ]; then
        rollback
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap 'finish $?' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The unit file and drop-ins that make up kubelet.service under the root, in the order systemd
# reads them: the unit, then drop-ins sorted by file name, where a drop-in in a directory earlier
# in the search path hides one of the same name later in it. Writes "name<TAB>path" lines for
# the drop-ins to $WORK/dropins and sets KUBELET_UNIT ("" when there is none).
in_root() { # PATH: a symlink's target, resolved inside the root
    if [ -L "$1" ]; then
        target=$(readlink "$1")
        case $target in
        /dev/null) printf '/dev/null\n' ;;
        /*) printf '%s%s\n' "$R" "$target" ;;
        *) printf '%s/%s\n' "$(dirname "$1")" "$target" ;;
        esac
    else
        printf '%s\n' "$1"
    fi
}

kubelet_files() {
    KUBELET_UNIT=
    for dir in $UNIT_SEARCH; do
        candidate=$R$dir/kubelet.service
        if [ -z "$KUBELET_UNIT" ] && { [ -e "$candidate" ] || [ -L "$candidate" ]; }; then
            KUBELET_UNIT=$(in_root "$candidate")
        fi
    done
    : >"$WORK/dropins.all"
    for dir in $UNIT_SEARCH; do
        for dropin in "$R$dir/kubelet.service.d/"*.conf; do
            [ -e "$dropin" ] || [ -L "$dropin" ] || continue
            printf '%s\t%s\n' "${dropin##*/}" "$(in_root "$dropin")" >>"$WORK/dropins.all"
        done
    done
    LC_ALL=C awk -F "$TAB" '!seen[$1]++' "$WORK/dropins.all" | LC_ALL=C sort -t "$TAB" -k1,1 >"$WORK/dropins"
}

# Reads unit files named as arguments in order and prints three lines: how many ExecStart=
# commands [Service] ends up with and whether any ExecStart= line appeared, then the last
# command, then the file it came from. Follows systemd's syntax: comments, sections, and lines
# continued by a backslash (the backslash becomes a space); an empty ExecStart= clears the list.
exec_start_of() {
    LC_ALL=C awk '
        function handle(l,   eq, key, val) {
            sub(/^[ \t]+/, "", l); sub(/[ \t]+$/, "", l)
            if (l == "" || l ~ /^[#;]/) return
            if (l ~ /^\[.*\]$/) { section = l; return }
            if (section != "[Service]") return
            eq = index(l, "=")
            if (eq == 0) return
            key = substr(l, 1, eq - 1); sub(/[ \t]+$/, "", key)
            if (key != "ExecStart") return
            val = substr(l, eq + 1); sub(/^[ \t]+/, "", val)
            seen = 1
            if (val == "") { count = 0; cmd = ""; from = "" } else { count++; cmd = val; from = file }
        }
        FNR == 1 { if (pending != "") handle(pending); pending = ""; section = ""; file = FILENAME }
        {
            l = $0; sub(/\r$/, "", l)
            if (pending != "") {
                t = l; sub(/^[ \t]+/, "", t)
                if (t ~ /^[#;]/) next
                l = pending " " l
            }
            if (l ~ /\\$/) { pending = substr(l, 1, length(l) - 1); next }
            pending = ""
            handle(l)
        }
        END {
            if (pending != "") handle(pending)
            printf "%d %d\n%s\n%s\n", count, seen, cmd, from
        }
    ' "$@"
}

# Writes the drop-in this node needs to $WORK/dropin: the shipped one, with kubelet's own
# command line (the one systemd would run without the drop-in) before $PULLGATE_KUBELET_ARGS,
# and the file that command line came from named in its comment. Derived afresh on every run,
# so that a kubelet unit changed since the last run is carried over, not masked.
render_dropin() {
    kubelet_files
    [ -n "$KUBELET_UNIT" ] ||
        die "kubelet.service was not found under ${R:-/} ($UNIT_SEARCH): install kubelet first, or pass --no-kubelet-wiring and set imageServiceEndpoint yourself"
    [ "$KUBELET_UNIT" != /dev/null ] || die "kubelet.service is masked under ${R:-/}"
    set -- "$KUBELET_UNIT"
    while IFS=$TAB read -r name path; do
        if [ "$name" = "$DROPIN_NAME" ]; then continue; fi
        # Names compare as systemd sorts them: bytewise.
        if [ "$(printf '%s\n%s\n' "$name" "$DROPIN_NAME" | LC_ALL=C sort | head -n 1)" = "$name" ]; then
            set -- "$@" "$path"
        else
            after=$(exec_start_of "$path" | head -n 1)
            case $after in
            *" 1") die "$path sets ExecStart= and sorts after $DROPIN_NAME, so pullgate's drop-in would have no effect: fold that ExecStart= into an earlier drop-in, or pass --no-kubelet-wiring and set imageServiceEndpoint in KubeletConfiguration" ;;
            esac
        fi
    done <"$WORK/dropins"
    exec_start_of "$@" >"$WORK/exec"
    count=$(sed -n '1s/ .*//p' "$WORK/exec")
    command=$(sed -n '2p' "$WORK/exec")
    from=$(sed -n '3p' "$WORK/exec")
    [ "$count" = 1 ] || die "kubelet.service under ${R:-/} has $count ExecStart= commands, expected one; cannot add pullgate's flag to it"
    case $command in
    *PULLGATE_KUBELET_ARGS*) die "kubelet's command line already names PULLGATE_KUBELET_ARGS outside $DROPIN_NAME: is pullgate wired by hand?" ;;
    *"sh -c"* | *"sh -ec"* | *"sh -euc"*) die "kubelet runs through a shell ($command): a flag appended would not reach it; pass --no-kubelet-wiring and set imageServiceEndpoint in KubeletConfiguration" ;;
    esac
    KUBELET_EXEC=$command KUBELET_EXEC_FROM=${from#"$R"} LC_ALL=C awk '
        /^ExecStart=./ { print "ExecStart=" ENVIRON["KUBELET_EXEC"] " $PULLGATE_KUBELET_ARGS"; next }
        /^# ExecStart taken from: / { print "# ExecStart taken from: " ENVIRON["KUBELET_EXEC_FROM"]; next }
        { print }
    ' "$UNITS_SRC/kubelet-pullgate.conf" >"$WORK/dropin"
}

if [ "$WIRE_KUBELET" -eq 1 ]; then render_dropin; fi

# --- The transaction ------------------------------------------------------------------------------
#
# Every change is logged in $WORK/txn ("mkdir", "create", or "replace" with a copy of what was
# there), so rollback can undo the run in reverse, byte for byte.

TXN=$WORK/txn
mkdir "$TXN" "$TXN/prev"
: >"$TXN/log"
TXN_N=0

tx_mkdir() { # PATH MODE
    printf 'mkdir\t-\t%s\n' "$1" >>"$TXN/log"
    mkdir "$1"
    chmod "$2" "$1"
}

# Before changing PATH: remember what is there.
tx_remember() { # PATH
    if [ -e "$1" ] || [ -L "$1" ]; then
        TXN_N=$((TXN_N + 1))
        cp -a "$1" "$TXN/prev/$TXN_N"
        printf 'replace\t%s\t%s\n' "$TXN_N" "$1" >>"$TXN/log"
    else
        printf 'create\t-\t%s\n' "$1" >>"$TXN/log"
    fi
}

# Replaces PATH atomically: a file written beside it, then renamed over it.
tx_write() { # PATH SOURCE MODE
    tx_remember "$1"
    tmp=$(dirname "$1")/.$(basename "$1").pullgate-tmp
    rm -f "$tmp"
    cp "$2" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$1"
}

tx_copy() { # PATH SOURCE: a copy keeping type, mode and times (symlinks stay symlinks)
    tx_remember "$1"
    tmp=$(dirname "$1")/.$(basename "$1").pullgate-tmp
    rm -rf "$tmp"
    cp -a "$2" "$tmp"
    mv -f "$tmp" "$1"
}

tx_link() { # PATH TARGET
    tx_remember "$1"
    tmp=$(dirname "$1")/.$(basename "$1").pullgate-tmp
    rm -f "$tmp"
    ln -s "$2" "$tmp"
    mv -f "$tmp" "$1"
}

tx_mkdir_p() { # DIR MODE: directories inside the installer's state, not in the manifest
    [ -d "$1" ] && return 0
    tx_mkdir_p "$(dirname "$1")" 0755
    tx_mkdir "$1" "$2"
}

rollback() {
    set +e
    say "undoing this run"
    sed '1!G;h;$!d' "$TXN/log" >"$TXN/log.reversed"
    while IFS=$TAB read -r verb n path; do
        case $verb in
        replace)
            tmp=$(dirname "$path")/.$(basename "$path").pullgate-tmp
            rm -rf "$tmp"
            cp -a "$TXN/prev/$n" "$tmp" && mv -f "$tmp" "$path"
            ;;
        create) rm -f "$path" ;;
        mkdir) rmdir "$path" ;;
        esac
    done <"$TXN/log.reversed"
    if [ -n "$SYSTEMCTL" ]; then
        if [ "$DAEMON_RELOADED" -eq 1 ]; then systemctl_do daemon-reload; fi
        if [ "$PULLGATE_WAS_ACTIVE" -eq 1 ]; then
            if [ "$SOCKET_CHANGED" -eq 1 ]; then
                systemctl_do stop pullgate.service
                systemctl_do restart pullgate.socket
                systemctl_do start pullgate.service
            elif [ "$PULLGATE_TOUCHED" -eq 1 ]; then
                systemctl_do restart pullgate.service
            fi
        elif [ "$PULLGATE_STARTED" -eq 1 ]; then
            systemctl_do stop pullgate.service pullgate.socket
        fi
        # shellcheck disable=SC2086 # a list of unit names
        if [ -n "$ENABLED_UNITS" ]; then systemctl_do disable $ENABLED_UNITS; fi
        if [ "$KUBELET_RESTARTED" -eq 1 ]; then systemctl_do restart kubelet.service; fi
    fi
    TXN_OPEN=0
    say "the node is as it was before this run"
}

# --- Recording what the installer owns --------------------------------------------------------------
#
# $STATE/manifest lists, in the order they were made, "dir PATH" for directories the installer
# created and "file PATH" for files it manages; $STATE/orig/PATH keeps each managed file the node
# had before (none: the installer created it). $STATE/sums holds the sha256 of what was installed
# last, to notice files changed on the node since.

in_manifest() { [ -f "$R$MANIFEST" ] && grep -qxF "$1" "$R$MANIFEST"; }

manifest_add() { # LINE
    if [ -f "$R$MANIFEST" ]; then cp "$R$MANIFEST" "$TXN/manifest"; else : >"$TXN/manifest"; fi
    printf '%s\n' "$1" >>"$TXN/manifest"
    tx_write "$R$MANIFEST" "$TXN/manifest" 0600
}

sum_of() { sha256sum <"$1" | cut -d ' ' -f 1; }

recorded_sum() { # PATH
    [ -f "$R$SUMS" ] || return 0
    awk -v p="$1" '$2 == p { print $1 }' "$R$SUMS"
}

record_sum() { # PATH SUM: in place, so a file put back leaves the record as it was
    if [ -f "$R$SUMS" ]; then cp "$R$SUMS" "$TXN/sums.old"; else : >"$TXN/sums.old"; fi
    awk -v p="$1" -v s="$2" '
        $2 == p { print s " " p; found = 1; next }
        { print }
        END { if (!found) print s " " p }
    ' "$TXN/sums.old" >"$TXN/sums"
    tx_write "$R$SUMS" "$TXN/sums" 0600
}

PLANNED_DIRS=$WORK/planned-dirs
: >"$PLANNED_DIRS"

# Makes DIR (and missing parents, 0755) and records each one made.
ensure_dir() { # DIR MODE
    if [ -d "$R$1" ] || grep -qxF "$1" "$PLANNED_DIRS"; then return 0; fi
    parent=$(dirname "$1")
    [ "$parent" = / ] || ensure_dir "$parent" 0755
    printf '%s\n' "$1" >>"$PLANNED_DIRS"
    say "mkdir     ${R}$1 ($2)"
    [ "$DRY_RUN" -eq 1 ] && return 0
    if [ "$1" = "$STATE" ] || [ "${STATE#"$1"/}" != "$STATE" ]; then
        # The state directory and its parents come before the manifest can record them.
        tx_mkdir "$R$1" "$2"
        printf 'dir %s\n' "$1" >>"$WORK/state-dirs"
    else
        manifest_add "dir $1"
        tx_mkdir "$R$1" "$2"
    fi
}

# Puts SOURCE at PATH with MODE unless it is there already. Sets CHANGED to 1 or 0.
manage_file() { # PATH SOURCE MODE
    CHANGED=0
    dest=$R$1
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$2" "$dest" &&
        [ "$(stat -c %a "$dest")" = "$(printf '%s' "$3" | sed 's/^0*//')" ]; then
        say "unchanged ${R}$1"
        return 0
    fi
    CHANGED=1
    ensure_dir "$(dirname "$1")" 0755
    if ! in_manifest "file $1"; then
        if [ -e "$dest" ] || [ -L "$dest" ]; then
            say "replace   ${R}$1 ($3; the node's file is kept for uninstall)"
        else
            say "create    ${R}$1 ($3)"
        fi
        [ "$DRY_RUN" -eq 1 ] && return 0
        if [ -e "$dest" ] || [ -L "$dest" ]; then
            tx_mkdir_p "$(dirname "$R$STATE/orig$1")" 0700
            tx_copy "$R$STATE/orig$1" "$dest"
        fi
        manifest_add "file $1"
    else
        say "update    ${R}$1 ($3)"
        [ "$DRY_RUN" -eq 1 ] && return 0
        last=$(recorded_sum "$1")
        if [ -n "$last" ] && [ -f "$dest" ] && [ "$(sum_of "$dest")" != "$last" ]; then
            tx_mkdir_p "$(dirname "$R$STATE/edited$1")" 0700
            tx_copy "$R$STATE/edited$1" "$dest"
            warn "${R}$1 was changed on the node since the last install; it is replaced, and the changed copy is kept at ${R}$STATE/edited$1"
        fi
    fi
    tx_write "$dest" "$2" "$3"
    record_sum "$1" "$(sum_of "$2")"
}

# As manage_file, for a symlink to TARGET.
manage_link() { # PATH TARGET
    CHANGED=0
    dest=$R$1
    if [ -L "$dest" ] && [ "$(readlink "$dest")" = "$2" ]; then
        say "unchanged ${R}$1"
        return 0
    fi
    CHANGED=1
    ensure_dir "$(dirname "$1")" 0755
    say "link      ${R}$1 -> $2"
    [ "$DRY_RUN" -eq 1 ] && return 0
    if ! in_manifest "file $1"; then
        if [ -e "$dest" ] || [ -L "$dest" ]; then
            tx_mkdir_p "$(dirname "$R$STATE/orig$1")" 0700
            tx_copy "$R$STATE/orig$1" "$dest"
        fi
        manifest_add "file $1"
    fi
    tx_link "$dest" "$2"
}

has_logrotate() {
    for dir in /usr/sbin /sbin /usr/bin; do
        if [ -x "$R$dir/logrotate" ]; then return 0; fi
    done
    return 1
}

# --- Talking to systemd ----------------------------------------------------------------------------

systemctl_do() { # ARGS: a change to the running system
    say "systemctl $*"
    SYSTEMD_TOUCHED=1
    [ "$DRY_RUN" -eq 1 ] && return 0
    # shellcheck disable=SC2086 # SYSTEMCTL may be a command with arguments (chroot /host systemctl)
    $SYSTEMCTL "$@"
}

systemctl_query() { # ARGS: read-only, also run in a dry run
    # shellcheck disable=SC2086
    $SYSTEMCTL "$@" >/dev/null 2>&1
}

# Runs the sh command CMD until it succeeds or TIMEOUT seconds pass; keeps its last output.
wait_for() { # WHAT CMD TIMEOUT
    deadline=$(($(date +%s) + $3))
    while :; do
        if sh -c "$2" >"$WORK/wait.out" 2>&1; then return 0; fi
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}

explain_failure() { # WHAT
    if [ -s "$WORK/wait.out" ]; then sed 's/^/    /' "$WORK/wait.out" >&2; fi
    printf '%s: error: %s\n' "$PROG" "$1" >&2
}

# --- The run -------------------------------------------------------------------------------------------

UNITS_CHANGED=0
SYSTEMD_TOUCHED=0
DAEMON_RELOADED=0
SOCKET_CHANGED=0
RESTART_NEEDED=0
RELOAD_NEEDED=0
KUBELET_CHANGED=0
PULLGATE_WAS_ACTIVE=0
PULLGATE_TOUCHED=0
PULLGATE_STARTED=0
ENABLED_UNITS=
KUBELET_RESTARTED=0

if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run under ${R:-/}: nothing is changed"
else
    say "installing under ${R:-/}"
fi

TXN_OPEN=$((1 - DRY_RUN))
ensure_dir "$STATE" 0700
if [ -s "$WORK/state-dirs" ] && [ "$DRY_RUN" -eq 0 ]; then
    while read -r line; do manifest_add "$line"; done <"$WORK/state-dirs"
fi

manage_file "$BIN_PATH" "$BINARY" 0755
RESTART_NEEDED=$((RESTART_NEEDED | CHANGED))
manage_file "$SOCKET_PATH" "$UNITS_SRC/pullgate.socket" 0644
SOCKET_CHANGED=$CHANGED
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
manage_file "$SERVICE_PATH" "$UNITS_SRC/pullgate.service" 0644
UNITS_CHANGED=$((UNITS_CHANGED | CHANGED))
RESTART_NEEDED=$((RESTART_NEEDED | CHANGED))
ensure_dir "$CONF_DIR" 0750
if [ -n "$CONFIG_SRC" ]; then
    manage_file "$CONFIG_PATH" "$CONFIG_SRC" 0640
    RESTART_NEEDED=$((RESTART_NEEDED | CHANGED))
else
    say "keep      ${R}$CONFIG_PATH (no --config given)"
fi
if [ -n "$POLICY_SRC" ]; then
    manage_file "$POLICY_PATH" "$POLICY_SRC" 0640
    RELOAD_NEEDED=$((RELOAD_NEEDED | CHANGED))
else
    say "keep      ${R}$POLICY_PATH (no --policy given)"
fi
if [ -n "$TRUST_SRC" ]; then
    ensure_dir "$TRUST_DIR" 0750
    manage_file "$TRUST_PATH" "$TRUST_SRC" 0640
    RELOAD_NEEDED=$((RELOAD_NEEDED | CHANGED))
elif [ -e "$R$TRUST_PATH" ]; then
    say "keep      ${R}$TRUST_PATH (no --trusted-root given)"
fi
# Rotation by moving the file and SIGHUP (systemctl reload), which keeps the audit chain whole.
# Installed where logrotate is missing too, so that it works once logrotate is installed.
manage_file "$LOGROTATE_PATH" "$UNITS_SRC/pullgate.logrotate" 0644
if ! has_logrotate; then
    warn "no logrotate under ${R:-/} (/usr/sbin, /sbin, /usr/bin): nothing rotates pullgate's audit log, which grows until the disk is full and enforced pulls are refused; install logrotate, or rotate it as docs/audit-log.md says"
fi
if [ -z "$SYSTEMCTL" ]; then
    # What `systemctl enable` does (WantedBy= in the units), for a tree systemd boots later.
    manage_link "$SOCKET_WANTS" "$SOCKET_PATH"
    manage_link "$SERVICE_WANTS" "$SERVICE_PATH"
fi

if [ -n "$PULLGATE_CHECK_CMD" ]; then
    say "check     $PULLGATE_CHECK_CMD"
    if [ "$DRY_RUN" -eq 0 ] && ! sh -c "$PULLGATE_CHECK_CMD" >"$WORK/wait.out" 2>&1; then
        explain_failure "the new files do not pass the check ($PULLGATE_CHECK_CMD); pullgate was left as it was"
        exit 1
    fi
fi

if [ -n "$SYSTEMCTL" ]; then
    if systemctl_query is-active --quiet pullgate.service; then PULLGATE_WAS_ACTIVE=1; fi
    if [ "$UNITS_CHANGED" -eq 1 ]; then
        DAEMON_RELOADED=1
        systemctl_do daemon-reload
    fi
    for unit in pullgate.socket pullgate.service; do
        if ! systemctl_query is-enabled --quiet "$unit"; then ENABLED_UNITS="$ENABLED_UNITS $unit"; fi
    done
    # shellcheck disable=SC2086 # a list of unit names
    if [ -n "$ENABLED_UNITS" ]; then systemctl_do enable $ENABLED_UNITS; fi
    if [ "$PULLGATE_WAS_ACTIVE" -eq 1 ]; then
        if [ "$SOCKET_CHANGED" -eq 1 ]; then
            # systemd does not restart a socket while its service runs.
            PULLGATE_TOUCHED=1
            systemctl_do stop pullgate.service
            systemctl_do restart pullgate.socket
            systemctl_do start pullgate.service
        elif [ "$RESTART_NEEDED" -eq 1 ]; then
            PULLGATE_TOUCHED=1
            systemctl_do restart pullgate.service
        elif [ "$RELOAD_NEEDED" -eq 1 ]; then
            # SIGHUP: the new policy and trusted root, or the last good ones if they are refused.
            PULLGATE_TOUCHED=1
            systemctl_do reload pullgate.service
        fi
    else
        PULLGATE_STARTED=1
        systemctl_do start pullgate.socket pullgate.service
    fi
    say "wait      for pullgate to be ready (at most ${READY_TIMEOUT}s): $PULLGATE_READY_CMD"
    if [ "$DRY_RUN" -eq 0 ] && ! wait_for pullgate "$PULLGATE_READY_CMD" "$READY_TIMEOUT"; then
        # shellcheck disable=SC2086
        $SYSTEMCTL status --no-pager --lines=20 pullgate.service >&2 || true
        explain_failure "pullgate did not become ready within ${READY_TIMEOUT}s, so kubelet was not switched over (see: journalctl -u pullgate.service)"
        exit 1
    fi
else
    say "not starting pullgate: no systemctl under --root (set SYSTEMCTL to use one); it starts when systemd boots this tree"
fi

if [ "$WIRE_KUBELET" -eq 1 ]; then
    manage_file "$DROPIN_PATH" "$WORK/dropin" 0644
    KUBELET_CHANGED=$CHANGED
    if [ "$KUBELET_CHANGED" -eq 1 ] && [ -n "$SYSTEMCTL" ]; then
        kubelet_was_active=0
        if systemctl_query is-active --quiet kubelet.service; then kubelet_was_active=1; fi
        DAEMON_RELOADED=1
        systemctl_do daemon-reload
        if [ "$kubelet_was_active" -eq 1 ]; then
            KUBELET_RESTARTED=1
            systemctl_do restart kubelet.service
            say "wait      for kubelet to run again (at most ${READY_TIMEOUT}s): $KUBELET_READY_CMD"
            if [ "$DRY_RUN" -eq 0 ] && ! wait_for kubelet "$KUBELET_READY_CMD" "$READY_TIMEOUT"; then
                explain_failure "kubelet did not run with pullgate's drop-in within ${READY_TIMEOUT}s (see: journalctl -u kubelet.service)"
                exit 1
            fi
        else
            say "kubelet is not running; it uses pullgate when it starts"
        fi
    fi
else
    say "kubelet wiring left alone (--no-kubelet-wiring)"
fi

TXN_OPEN=0
if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run: nothing was changed"
elif [ -s "$TXN/log" ] || [ "$SYSTEMD_TOUCHED" -eq 1 ]; then
    say "done"
else
    # node-sync.sh re-applies every interval and tells a pass that changed nothing by this line.
    say "done: nothing changed"
fi
