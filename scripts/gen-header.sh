#!/usr/bin/env bash
# Regenerate include/pgq.h (the C header) from src/ffi with cbindgen.
#
#   scripts/gen-header.sh            write include/pgq.h
#   scripts/gen-header.sh --verify   fail if include/pgq.h differs from what would be
#                                    generated, or if its version macros disagree with
#                                    Cargo.toml (what scripts/test.sh runs)
#
# cbindgen reads src/ffi/mod.rs and the modules it declares (not the whole crate: the rest
# has no C surface). Install it with `cargo install cbindgen --locked` (scripts/install-
# deps.sh does that when it is missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prog=${0##*/}

command -v cbindgen >/dev/null || {
    echo "$prog: cbindgen not found; run scripts/install-deps.sh cbindgen (or: cargo install cbindgen --locked)" >&2
    exit 1
}

# The checked-in header is the output of this cbindgen version (scripts/install-deps.sh
# installs it); another version may format differently and make --verify fail.
pinned=0.29.4
have=$(cbindgen --version | awk '{print $2}')
if [[ $have != "$pinned" ]]; then
    echo "$prog: warning: cbindgen $have, the header is generated with $pinned (cargo install cbindgen --locked --version $pinned)" >&2
fi

generate() {
    cbindgen --quiet --config cbindgen.toml --output "$1" src/ffi/mod.rs
}

check_versions() {
    local version major minor patch rc=0
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
    IFS=. read -r major minor patch <<<"${version%%[-+]*}"
    for want in "PGQ_VERSION \"$version\"" "PGQ_VERSION_MAJOR $major" \
        "PGQ_VERSION_MINOR $minor" "PGQ_VERSION_PATCH $patch"; do
        if ! grep -qx "#define $want" include/pgq.h; then
            echo "$prog: include/pgq.h lacks '#define $want' (Cargo.toml version is $version): update after_includes in cbindgen.toml and regenerate" >&2
            rc=1
        fi
    done
    local abi
    abi=$(sed -n 's/^pub const ABI_VERSION: u32 = \([0-9]*\);$/\1/p' src/ffi/version.rs)
    if ! grep -qx "#define PGQ_ABI_VERSION $abi" include/pgq.h; then
        echo "$prog: include/pgq.h's PGQ_ABI_VERSION differs from ABI_VERSION=$abi in src/ffi/version.rs" >&2
        rc=1
    fi
    return $rc
}

case ${1:-} in
--verify)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    generate "$tmp"
    if ! diff -u include/pgq.h "$tmp"; then
        echo "$prog: include/pgq.h is out of date: run scripts/gen-header.sh and commit it" >&2
        exit 1
    fi
    check_versions
    echo "$prog: include/pgq.h is up to date (version $(sed -n 's/^#define PGQ_VERSION "\(.*\)"$/\1/p' include/pgq.h))"
    ;;
"")
    generate include/pgq.h
    check_versions
    echo "$prog: wrote include/pgq.h"
    ;;
*)
    echo "usage: $prog [--verify]" >&2
    exit 2
    ;;
esac
