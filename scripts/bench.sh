#!/usr/bin/env bash
# libpgq benchmarks against the reference PGQ (official extension + pgqd + python3-pgq), in
# one run on one PostgreSQL cluster; prints every figure and then a Markdown table (the one in
# BENCHMARKS.md), which is also saved to target/bench-results.md.
#
#   scripts/bench.sh [SERVER_DSN]
#
# Without SERVER_DSN (or $PGQ_BENCH_DSN) a private throwaway cluster is started with
# scripts/pg-cluster.sh in target/ and removed at the end. With one, it must be a superuser
# DSN of a PostgreSQL server that has postgresql-15-pgq3 installed; the databases
# pgq_bench_ours and pgq_bench_official are created there and dropped again.
#
# Sizes (defaults give a run of a few minutes on 2 cores):
#   PGQ_BENCH_SECS=1          seconds per produce variant and round
#   PGQ_BENCH_ROUNDS=3        interleaved rounds per produce variant (median reported)
#   PGQ_BENCH_EVENTS=1000000  consume backlog size
#   PGQ_BENCH_BATCH=10000     events per batch in the backlog
#   PGQ_BENCH_BIG_BATCH=200000  events in the single-batch memory test (0 = skip)
#   PGQ_BENCH_SMALL_EVENTS=20000 events of the small-batch test (0 = skip)
#   PGQ_BENCH_SMALL_BATCH=10     events per batch there
#   PGQ_BENCH_RETRY_EVENTS=5000  events of the batch sent back whole for retry (0 = skip)
#   PGQ_BENCH_LATENCY_RATE=1000  events per second in the latency benchmark
#   PGQ_BENCH_LATENCY_SECS=5     seconds of measured events in the latency benchmark
#   PGQ_BENCH_IDLE_SECS=10       seconds of the idle and many-queue measurements
#   PGQ_BENCH_QUEUES=1000        queues (5 consumers each) of the many-queue benchmark
#   PGQ_BENCH_ONLY=produce,produce-cost,bulk,consume,small,retry,bigbatch,latency,idle,queues   run only these groups
# A quick smoke run: PGQ_BENCH_SECS=0.2 PGQ_BENCH_ROUNDS=1 PGQ_BENCH_EVENTS=20000 scripts/bench.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dsn=${1:-${PGQ_BENCH_DSN:-}}

command -v cargo >/dev/null || {
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
}
/usr/bin/python3 -c 'import pgq, skytools, psycopg2' 2>/dev/null || {
    echo "bench: /usr/bin/python3 lacks python3-pgq (run scripts/install-deps.sh)" >&2
    exit 1
}

# Build first, so compile time never overlaps a measurement.
echo "==> cargo bench --no-run (release)" >&2
cargo bench --quiet --bench bench --no-run

# The C ABI consumer (benches/c_consume.c) against the release library. The library's SONAME
# is libpgq.so.0, so it gets a private directory with that name (as scripts/install-lib.sh
# lays it out) and the program an rpath to it.
if [[ -f include/pgq.h ]] && command -v cc >/dev/null; then
    echo "==> C ABI consumer (release library)" >&2
    cargo build --quiet --release --lib
    libdir=$root/target/bench-lib
    rm -rf "$libdir"
    mkdir -p "$libdir"
    cp target/release/libpgq.so "$libdir/libpgq.so.0"
    ln -s libpgq.so.0 "$libdir/libpgq.so"
    cc -O2 -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude benches/c_consume.c \
        -L"$libdir" -lpgq -Wl,-rpath,"$libdir" -o "$libdir/c_consume"
    export PGQ_BENCH_C_CONSUMER=$libdir/c_consume
    # The Python binding (bindings/python) loads the same library.
    export LIBPGQ_PATH=$libdir
    # The Go binding's consumer (benches/go_consume), linked statically with the release
    # library (-tags pgq_release uses target/release/libpgq.a).
    if [[ -d bindings/go ]] && command -v go >/dev/null; then
        echo "==> Go binding consumer (release library)" >&2
        (cd benches/go_consume && go build -tags pgq_release -o "$libdir/go_consume" .)
        export PGQ_BENCH_GO_CONSUMER=$libdir/go_consume
    fi
else
    echo "==> no include/pgq.h or no C compiler: the C ABI consumer row is skipped" >&2
fi

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

if [[ -z $dsn ]]; then
    cluster=$root/target/bench-cluster.$$
    rm -rf "$cluster"
    dsn=$(scripts/pg-cluster.sh start "$cluster")
    echo "==> throwaway cluster in $cluster: $dsn" >&2
fi

mkdir -p target
out=target/bench-results.md
echo "==> running benchmarks" >&2
cargo bench --quiet --bench bench -- "$dsn" | tee "$out"
echo "==> table saved to $out" >&2
