#!/usr/bin/env bash
# Compatibility round trip with the reference tools (pgqd ticker, python3-pgq Consumer).
#
#   tests/compat/run.sh [ours|official|both] [SERVER_DSN]
#
# Backend `ours` installs our schema with `pgqctl install`; `official` uses the
# postgresql-15-pgq3 extension (CREATE EXTENSION pgq); `both` (default) runs one, then the
# other. SERVER_DSN (or $PGQ_TEST_DSN) is a superuser DSN; each run creates its own database
# there and drops it when it passes. Without one, a throwaway cluster is started in target/
# and stopped at the end. PGQCTL may name a pgqctl binary; otherwise it is built (debug).
# See roundtrip.py for what is checked (it runs once with pgqd and once with `pgqctl ticker`
# reading the same pgqd config file); coop.py then runs python3-pgq's CoopConsumer on our
# pgq_coop (which `pgqctl install` also adds next to the official extension).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
backend=${1:-both}
dsn=${2:-${PGQ_TEST_DSN:-}}
case $backend in
ours) backends=(ours) ;;
official) backends=(official) ;;
both) backends=(ours official) ;;
*)
    echo "usage: $0 [ours|official|both] [SERVER_DSN]" >&2
    exit 2
    ;;
esac

# Debian's python3-pgq lives in the system Python, not in whatever python3 is first on PATH.
python=/usr/bin/python3
"$python" -c 'import pgq, skytools, psycopg2' 2>/dev/null ||
    { echo "compat: $python lacks the pgq/skytools/psycopg2 modules (run scripts/install-deps.sh)" >&2; exit 1; }

if [[ -z $dsn ]]; then
    cluster=$root/target/compat-cluster.$$
    trap '"$root/scripts/pg-cluster.sh" stop "$cluster"; rm -rf "$cluster"' EXIT
    dsn=$("$root/scripts/pg-cluster.sh" start "$cluster")
fi

pgqctl=${PGQCTL:-}
if [[ -z $pgqctl ]]; then
    (cd "$root" && cargo build --quiet --bin pgqctl)
    pgqctl=${CARGO_TARGET_DIR:-$root/target}/debug/pgqctl
fi

rc=0
for b in "${backends[@]}"; do
    # The round trip with pgqd, then with `pgqctl ticker` reading the same pgqd config file.
    for t in pgqd pgqctl; do
        "$python" "$root/tests/compat/roundtrip.py" --backend "$b" --dsn "$dsn" \
            --ticker "$t" ${pgqctl:+--pgqctl "$pgqctl"} || rc=1
    done
    "$python" "$root/tests/compat/coop.py" --backend "$b" --dsn "$dsn" --pgqctl "$pgqctl" || rc=1
done
exit $rc
