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
#   PGQ_BENCH_ONLY=produce,bulk,consume,bigbatch   run only these groups
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
