#!/usr/bin/env bash
# Install the system packages libpgq's tests and demo need, on Debian or Ubuntu.
#
#   scripts/install-deps.sh [--check] [GROUP...]
#
# GROUPs (default: all of them):
#   postgres   PostgreSQL 15 server with contrib, and the reference PGQ implementation we
#              test against: postgresql-15-pgq3 (official extension), pgqd (ticker daemon),
#              python3-pgq (SkyTools Python consumer); pgbouncer for the tests behind a
#              transaction pooler (tests/pgbouncer.rs, scripts/pgbouncer.sh)
#   c          C/C++ compilers, valgrind and pkg-config for the C ABI tests (tests/c,
#              examples/c)
#   cbindgen   the C header generator (scripts/gen-header.sh), a cargo tool: installed with
#              `cargo install cbindgen --locked --version $cbindgen_version` when missing
#   python     venv and pip for the Python binding's tests (bindings/python/run-tests.sh)
#   go         Go toolchain (golang-go) and gcc for cgo, to build and test bindings/go
#
# Idempotent. When everything is already there it only looks (no apt, no sudo, well under a
# second), so CI re-runs stay quick. Otherwise it runs `apt-get update` and installs the
# missing packages in one go, through sudo when not root. On Ubuntu releases without
# PostgreSQL 15 it adds the PostgreSQL project's apt repository (apt.postgresql.org) first.
#
# Run it before starting any cluster: installing can upgrade the PostgreSQL binaries under a
# running server.
#
#   --check   only report what is missing; exit 1 if anything is
#
# Environment: PGQ_SKIP_DEPS=1 skips everything (you provide the tools yourself).
set -euo pipefail

prog=${0##*/}
pg_major=15

# Each group is a list of "package|check" entries; `check` is a file that exists once the
# package is installed (empty: ask dpkg). To add a group, add a function
# groups_<name> printing its entries and list the name in all_groups.
all_groups=(postgres c cbindgen python go)

groups_postgres() {
    # postgresql-15 ships contrib too (postgresql-contrib is only a meta package for the
    # distribution's default major version, which is not 15 everywhere).
    echo "postgresql-$pg_major|/usr/lib/postgresql/$pg_major/bin/postgres"
    echo "postgresql-$pg_major-pgq3|/usr/share/postgresql/$pg_major/extension/pgq.control"
    echo "pgqd|/usr/bin/pgqd"
    echo "python3-pgq|/usr/lib/python3/dist-packages/pgq/__init__.py"
    # Debian's package also enables a system pgbouncer service on port 6432; the tests
    # start their own (scripts/pgbouncer.sh) and do not use it.
    echo "pgbouncer|/usr/sbin/pgbouncer"
}

groups_c() {
    echo "gcc|/usr/bin/gcc"
    echo "g++|/usr/bin/g++"
    echo "valgrind|/usr/bin/valgrind"
    echo "pkg-config|/usr/bin/pkg-config"
}

# Pinned: the checked-in include/pgq.h is compared with this version's output.
cbindgen_version=0.29.4
groups_cbindgen() { :; } # not apt: handled by ensure_cbindgen

groups_python() {
    echo "python3-venv|"
    echo "python3-pip|"
}

groups_go() {
    # The Go binding (bindings/go) builds with Debian 12's Go 1.19 and cgo (gcc).
    echo "golang-go|/usr/bin/go"
    echo "gcc|/usr/bin/gcc"
}

die() {
    echo "$prog: $*" >&2
    exit 1
}

check_only=0
wanted=()
for arg in "$@"; do
    case $arg in
    --check) check_only=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    -*) die "unknown option $arg (try --help)" ;;
    *)
        declare -F "groups_$arg" >/dev/null || die "unknown group '$arg' (known: ${all_groups[*]})"
        wanted+=("$arg")
        ;;
    esac
done
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${all_groups[@]}")

if [[ ${PGQ_SKIP_DEPS:-0} == 1 ]]; then
    echo "$prog: PGQ_SKIP_DEPS=1, not checking system packages" >&2
    exit 0
fi

is_installed() {
    local pkg=$1 check=$2
    if [[ -n $check ]]; then
        [[ -e $check ]]
    else
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]]
    fi
}

# cbindgen comes from crates.io through cargo, not from apt.
ensure_cbindgen() {
    local have
    have=$(cbindgen --version 2>/dev/null | awk '{print $2}') || true
    [[ $have == "$cbindgen_version" ]] && return 0
    if [[ $check_only == 1 ]]; then
        echo "$prog: missing: cbindgen $cbindgen_version (have: ${have:-none})" >&2
        return 1
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust first (for cbindgen)"
    echo "$prog: installing cbindgen $cbindgen_version with cargo" >&2
    cargo install cbindgen --locked --version "$cbindgen_version"
}
if [[ " ${wanted[*]} " == *" cbindgen "* ]]; then
    ensure_cbindgen || exit 1
fi

missing=()
for group in "${wanted[@]}"; do
    while IFS='|' read -r pkg check; do
        is_installed "$pkg" "$check" || missing+=("$pkg")
    done < <("groups_$group")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$prog: all system packages present (${wanted[*]})" >&2
    exit 0
fi
if [[ $check_only == 1 ]]; then
    echo "$prog: missing: ${missing[*]}" >&2
    exit 1
fi

command -v apt-get >/dev/null ||
    die "missing ${missing[*]} and this is not a Debian/Ubuntu system (no apt-get); install them yourself, or set PG_BINDIR for another PostgreSQL"

sudo=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}; run as root or install sudo"
    sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
    -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

echo "$prog: installing ${missing[*]}" >&2
"${apt[@]}" update

# Debian 12 has PostgreSQL 15; other releases may not. Then use the PostgreSQL project's
# own repository, set up by the helper script postgresql-common ships for exactly this.
if ! apt-cache show "postgresql-$pg_major" >/dev/null 2>&1 ||
    [[ -z "$(apt-cache policy "postgresql-$pg_major" | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]]; then
    echo "$prog: postgresql-$pg_major is not in the configured apt sources; adding apt.postgresql.org" >&2
    "${apt[@]}" install --no-install-recommends postgresql-common ca-certificates curl gnupg
    "${sudo[@]}" /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
    "${apt[@]}" update
fi

"${apt[@]}" install --no-install-recommends "${missing[@]}"

# Verify by the same checks, so a package that installed under another layout is caught.
still=()
for group in "${wanted[@]}"; do
    while IFS='|' read -r pkg check; do
        is_installed "$pkg" "$check" || still+=("$pkg ($check)")
    done < <("groups_$group")
done
[[ ${#still[@]} -eq 0 ]] || die "installed, but still missing: ${still[*]}"
echo "$prog: done" >&2
