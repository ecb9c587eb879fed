#!/usr/bin/env bash
# Checks that a pullgate binary runs on every supported node: an x86-64 ELF executable, linked
# only against the C library's own shared objects, whose GLIBC_x.y symbol versions are all at
# or below the floor. The floor is the glibc of the oldest supported node image: Ubuntu 22.04
# and Azure Linux 2.0 have 2.35 (Ubuntu 24.04 has 2.39, Azure Linux 3.0 2.38, kind's Debian
# trixie 2.41). The dynamic loader refuses to start a binary that names a newer version.
#
#   scripts/check-binary.sh [--glibc-floor X.Y] BINARY
#
# Reads the binary with objdump (binutils). scripts/release.sh runs it on the release build,
# and the test suite on the binary it builds (tests/tests/e2e/binary.rs).
set -euo pipefail

GLIBC_FLOOR=2.35
# What every glibc system has; anything else (libssl, libz...) may be missing on a node.
ALLOWED_LIBS=" libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 "

die() {
    printf 'check-binary: %s\n' "$*" >&2
    exit 1
}

while [ "$#" -gt 0 ]; do
    case $1 in
    --glibc-floor) [ "$#" -ge 2 ] || die "--glibc-floor needs a value"; GLIBC_FLOOR=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option: $1" ;;
    *) break ;;
    esac
done
[ "$#" -eq 1 ] || die "usage: check-binary.sh [--glibc-floor X.Y] BINARY"
binary=$1
[ -f "$binary" ] || die "$binary is not a file"
[[ $GLIBC_FLOOR =~ ^[0-9]+\.[0-9]+$ ]] || die "--glibc-floor must be X.Y, not '$GLIBC_FLOOR'"
command -v objdump >/dev/null || die "objdump is missing: apt-get install binutils"

# "file format elf64-x86-64" is objdump's name for an x86-64 ELF; anything else (another
# architecture, a Mach-O from a macOS build) is not what the nodes run.
format=$(objdump -f "$binary" 2>/dev/null | sed -n 's/.*file format //p' | head -n 1) || true
[ -n "$format" ] ||
    die "$binary is not an ELF file objdump knows (a macOS build? a script?); the nodes run x86-64 (amd64) Linux ELF executables"
[ "$format" = elf64-x86-64 ] ||
    die "$binary is not an x86-64 ELF executable (objdump reads it as $format); the nodes run x86-64 (amd64) Linux ELF executables"

# Libraries the loader must find on the node.
needed=$(objdump -p "$binary" | awk '$1 == "NEEDED" { print $2 }')
for lib in $needed; do
    [[ $ALLOWED_LIBS == *" $lib "* ]] ||
        die "$binary needs $lib, which a node may not have (allowed: the C library's own:$ALLOWED_LIBS)"
done

# One "VERSION SYMBOL" line per versioned dynamic symbol: objdump -T prints the version in
# the column before the name, in parentheses when it is not the default ("(GLIBC_2.34)").
versions=$(objdump -T "$binary" | awk '{
    for (i = 1; i < NF; i++) if ($i ~ /^\(?GLIBC_[0-9.]+\)?$/) { v = $i; gsub(/[()]/, "", v); print v, $NF }
}' | sort -u)
[ -n "$versions" ] || die "$binary names no GLIBC symbol versions: is it dynamically linked against glibc?"

# Versions compare as numbers, part by part: 2.9 < 2.10 < 2.35.
above=$(printf '%s\n' "$versions" | awk -v floor="$GLIBC_FLOOR" '{
    v = substr($1, 7); n = split(v, a, "."); split(floor, f, ".")
    if (a[1] + 0 > f[1] + 0 || (a[1] + 0 == f[1] + 0 && a[2] + 0 > f[2] + 0)) print "  " $1 " " $2
}')
highest=$(printf '%s\n' "$versions" | awk '{ print substr($1, 7) }' | sort -t . -k1,1n -k2,2n -k3,3n | tail -n 1)
if [ -n "$above" ]; then
    printf 'check-binary: %s needs glibc %s, above the floor %s, for:\n%s\n' \
        "$binary" "$highest" "$GLIBC_FLOOR" "$above" >&2
    die "it would not start on nodes with glibc $GLIBC_FLOOR; build it on an older distribution (scripts/release.sh, docs/building.md)"
fi
printf 'check-binary: %s: x86-64 ELF, needs glibc %s (floor %s), links %s\n' \
    "$binary" "$highest" "$GLIBC_FLOOR" "$(echo "$needed" | tr '\n' ' ' | sed 's/ $//')"
