#!/usr/bin/env bash
# Run every libpgq check and test. This is the README's test command; .ci/run calls it.
#
#   scripts/test.sh [SERVER_DSN]
#
# Steps: system packages (scripts/install-deps.sh), cargo fmt --check, clippy with warnings
# as errors, rustdoc with warnings as errors, the C header check (scripts/gen-header.sh
# --verify), one throwaway PostgreSQL cluster, cargo test
# (unit, integration, bins, examples, doctests) against it, the C ABI checks (tests/c/run.sh:
# C tests under sanitizers, a C++ include check, the C examples under valgrind), the Go
# binding's go vet, gofmt and go test -race (bindings/go), the demo (scripts/demo.sh),
# the compatibility round trip with the reference tools (tests/compat) on our schema and on
# the official extension, and the Python binding (bindings/python/run-tests.sh: venv, mypy,
# pytest).
#
# SERVER_DSN (or $PGQ_TEST_DSN): a superuser DSN of a running PostgreSQL 13+ server to test
# on instead of a throwaway cluster. Tests create and drop their own databases there. The
# official-extension tests need postgresql-15-pgq3 installed on that server.
#
# A failing step does not stop the others (set PGQ_TEST_FAIL_FAST=1 to stop at the first);
# the summary at the end lists every step, and the exit status is non-zero if any failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dsn=${1:-${PGQ_TEST_DSN:-}}
fail_fast=${PGQ_TEST_FAIL_FAST:-0}

results=()
failed=0
t_all=$SECONDS

# step NAME COMMAND...: run one step, record its result and time.
step() {
    local name=$1 t0=$SECONDS rc=0
    shift
    echo
    echo "==> $name"
    "$@" || rc=$?
    local secs=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then
        results+=("$(printf 'ok    %4ss  %s' "$secs" "$name")")
    else
        results+=("$(printf 'FAIL  %4ss  %s (exit %s)' "$secs" "$name" "$rc")")
        failed=1
        if [[ $fail_fast == 1 ]]; then
            summary
        fi
    fi
    return 0
}

summary() {
    echo
    echo "==> summary ($((SECONDS - t_all))s)"
    printf '  %s\n' "${results[@]}"
    if [[ $failed -ne 0 ]]; then
        echo "FAILED"
        exit 1
    fi
    echo "all passed"
    exit 0
}

cluster=""
cleanup() {
    if [[ -n $cluster ]]; then
        scripts/pg-cluster.sh stop "$cluster" || true
        rm -rf "$cluster"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v cargo >/dev/null || {
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
}

# Packages first: installing may upgrade the PostgreSQL binaries, so no cluster may run yet.
step "system packages (scripts/install-deps.sh)" scripts/install-deps.sh
[[ $failed -eq 0 ]] || summary

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --all-targets --all-features --quiet -- -D warnings
step "cargo doc -D warnings" env RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --quiet
step "C header up to date, versions match Cargo.toml (scripts/gen-header.sh --verify)" scripts/gen-header.sh --verify

start_cluster() {
    cluster=$root/target/test-cluster.$$
    rm -rf "$cluster"
    # Inside step's `||` errexit is off: check by hand.
    dsn=$(scripts/pg-cluster.sh start "$cluster") || return 1
    echo "throwaway cluster in $cluster: $dsn"
}
if [[ -z $dsn ]]; then
    step "throwaway PostgreSQL cluster" start_cluster
    [[ -n $dsn ]] || summary
else
    echo
    echo "==> using the given server: $dsn"
fi
export PGQ_TEST_DSN=$dsn

# The README's demo, in a database of its own, so the demo cannot rot unnoticed.
run_demo() {
    local db=pgq_demo_test_$$ ddsn rc=0
    psql "$dsn" -q -X -v ON_ERROR_STOP=1 -c "create database $db" >/dev/null || return 1
    ddsn=$(/usr/bin/python3 -c 'import sys, psycopg2.extensions as e
print(e.make_dsn(sys.argv[1], dbname=sys.argv[2]))' "$dsn" "$db") || return 1
    scripts/demo.sh "$ddsn" || rc=$?
    if [[ $rc -eq 0 ]]; then
        psql "$dsn" -q -X -c "drop database $db" >/dev/null || true
    fi
    return $rc
}

step "cargo test" cargo test --no-fail-fast
step "C ABI: tests/c under ASan/UBSan, C++ header, examples/c under valgrind" tests/c/run.sh "$dsn"

# The Go binding (bindings/go) links target/debug/libpgq.a and needs only Go's standard
# library: no module downloads (GOPROXY=off), no toolchain downloads (GOTOOLCHAIN=local).
go_env=(env GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly)
go_vet() {
    cargo build --lib --quiet || return 1 # the libpgq.a the package links
    (cd bindings/go && "${go_env[@]}" go vet ./...)
}
go_test() {
    cargo build --lib --quiet || return 1
    local log rc=0
    log=$(mktemp)
    (cd bindings/go && "${go_env[@]}" go test -race -count=1 ./...) 2>&1 | tee "$log" || rc=1
    # The binding's tests must have run: vanished tests must not pass quietly.
    if grep -q 'no tests to run' "$log" || ! grep -qE '^ok\s+github.com/libpgq/libpgq/bindings/go\s' "$log"; then
        echo "go test ran no tests" >&2
        rc=1
    fi
    rm -f "$log"
    return $rc
}
go_fmt() {
    local files
    files=$(cd bindings/go && gofmt -l .) || return 1
    [[ -z $files ]] || { echo "not gofmt-formatted: $files" >&2; return 1; }
}
step "go vet (bindings/go)" go_vet
step "gofmt -l (bindings/go)" go_fmt
step "go test -race (bindings/go)" go_test
step "demo (scripts/demo.sh)" run_demo
step "compat: pgqd / pgqctl ticker + python3-pgq on our schema" tests/compat/run.sh ours "$dsn"
step "compat: pgqd / pgqctl ticker + python3-pgq on the official extension" tests/compat/run.sh official "$dsn"
step "python binding (bindings/python)" bindings/python/run-tests.sh

summary
