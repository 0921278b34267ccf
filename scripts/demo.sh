#!/usr/bin/env bash
# The libpgq demo: install PGQ, create a queue, produce, tick, consume, retry, print status.
#
#   scripts/demo.sh [DSN]
#
# Without a DSN (argument or $PGQ_DSN) it installs what it needs (scripts/install-deps.sh),
# starts a private throwaway PostgreSQL cluster (scripts/pg-cluster.sh, under target/),
# runs the demo in a fresh database there, and removes the cluster at the end. With a DSN
# it runs on that database instead: it installs the pgq schema there if missing and
# (re)creates the queue `demo_orders` and the table `demo_order`.
#
# The demo itself is examples/demo.rs (`cargo run --example demo -- DSN`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dsn=${1:-${PGQ_DSN:-}}

command -v cargo >/dev/null || {
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
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

if [[ -z $dsn ]]; then
    # Packages before any server starts: installing may upgrade the PostgreSQL binaries.
    scripts/install-deps.sh postgres
    # Build first, so the cluster does not sit idle during a long first compile.
    cargo build --quiet --example demo
    cluster=$root/target/demo-cluster.$$
    rm -rf "$cluster"
    server=$(scripts/pg-cluster.sh start "$cluster")
    echo "started a throwaway PostgreSQL: $server" >&2
    psql "$server" -q -X -v ON_ERROR_STOP=1 -c 'create database pgq_demo' >/dev/null
    dsn=${server/dbname=postgres/dbname=pgq_demo}
fi

echo "running the demo on: $dsn" >&2
echo >&2
cargo run --quiet --example demo -- "$dsn"
