#!/usr/bin/env bash
# Build libpgq and install the C library, header and pkg-config file under a prefix.
#
#   scripts/install-lib.sh [--debug] PREFIX
#
# Installs
#   PREFIX/lib/libpgq.so.X.Y.Z  the shared library (SONAME libpgq.so.0), with the symlinks
#   PREFIX/lib/libpgq.so.0      (what programs load) and PREFIX/lib/libpgq.so (what -lpgq
#                               finds)
#   PREFIX/lib/libpgq.a         the static library
#   PREFIX/include/pgq.h        the header
#   PREFIX/lib/pkgconfig/pgq.pc for pkg-config
#
# Then a C program builds with
#   export PKG_CONFIG_PATH=PREFIX/lib/pkgconfig     # unless PREFIX is a system prefix
#   cc app.c $(pkg-config --cflags --libs pgq)
# and runs with PREFIX/lib on the loader's path (LD_LIBRARY_PATH, or ldconfig for a system
# prefix such as /usr/local).
#
# --debug installs the debug build (faster to build; what the tests use), default release.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prog=${0##*/}
profile=release

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

args=()
for a in "$@"; do
    case $a in
    --debug) profile=debug ;;
    -h | --help) usage ;;
    -*) echo "$prog: unknown option $a" >&2; usage ;;
    *) args+=("$a") ;;
    esac
done
[[ ${#args[@]} -eq 1 ]] || usage
mkdir -p "${args[0]}"
prefix=$(cd "${args[0]}" && pwd)

cd "$root"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
if [[ $profile == release ]]; then
    cargo build --lib --release --quiet
else
    cargo build --lib --quiet
fi
target=${CARGO_TARGET_DIR:-$root/target}/$profile

libdir=$prefix/lib
install -d "$libdir" "$libdir/pkgconfig" "$prefix/include"
install -m 0755 "$target/libpgq.so" "$libdir/libpgq.so.$version"
ln -sfn "libpgq.so.$version" "$libdir/libpgq.so.0"
ln -sfn "libpgq.so.0" "$libdir/libpgq.so"
install -m 0644 "$target/libpgq.a" "$libdir/libpgq.a"
install -m 0644 include/pgq.h "$prefix/include/pgq.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@VERSION@|$version|g" \
    pgq.pc.in >"$libdir/pkgconfig/pgq.pc"
chmod 0644 "$libdir/pkgconfig/pgq.pc"
echo "$prog: installed libpgq $version ($profile) under $prefix" >&2
