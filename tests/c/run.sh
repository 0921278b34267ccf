#!/usr/bin/env bash
# Build and run the C ABI checks against a running PostgreSQL:
#
#   tests/c/run.sh SERVER_DSN
#
# SERVER_DSN: a superuser DSN (as scripts/test.sh passes); fresh databases are created on
# it and dropped again when everything passed.
#
# 1. installs the debug library with scripts/install-lib.sh into target/c-tests/prefix
#    (so the install command and pgq.pc are tested too);
# 2. builds tests/c/test_capi.c with -std=c11 -Wall -Wextra -Werror -pedantic and
#    ASan/UBSan against a library built with the cargo feature test-hooks, and runs it;
# 3. builds tests/c/cxx_header.cpp with g++ through pkg-config and runs it;
# 4. builds examples/c with `cc ... $(pkg-config --cflags --libs pgq)` and runs them under
#    valgrind memcheck (leaks and invalid accesses are errors; valgrind and ASan cannot be
#    combined, so the examples are built without sanitizers), checking what they print.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
prog=tests/c/run.sh
[[ $# -eq 1 ]] || {
    echo "usage: $prog SERVER_DSN" >&2
    exit 2
}
server_dsn=$1
work=$root/target/c-tests
rm -rf "$work"
mkdir -p "$work/hooks"

cflags=(-std=c11 -Wall -Wextra -Werror -pedantic -g)

# Libraries: the hooks build for the C tests, the plain install for the rest.
cargo build --lib --quiet --features test-hooks
cp target/debug/libpgq.so "$work/hooks/libpgq.so.0"
ln -s libpgq.so.0 "$work/hooks/libpgq.so"
scripts/install-lib.sh --debug "$work/prefix"
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig

dbs=()
# new_db NAME: creates a database and sets new_dsn to its DSN. (Not run as $(new_db ..):
# a subshell would lose the dbs+= that lets drop_dbs clean up.)
new_db() {
    local db=pgq_c_${1}_$$
    psql "$server_dsn" -q -X -v ON_ERROR_STOP=1 -c "create database $db" >/dev/null
    dbs+=("$db")
    new_dsn=$(/usr/bin/python3 -c 'import sys, psycopg2.extensions as e
print(e.make_dsn(sys.argv[1], dbname=sys.argv[2]))' "$server_dsn" "$db")
}
drop_dbs() {
    for db in "${dbs[@]}"; do
        psql "$server_dsn" -q -X -c "drop database if exists $db" >/dev/null || true
    done
}

echo "-- C tests (ASan + UBSan)"
gcc "${cflags[@]}" -fsanitize=address,undefined -fno-omit-frame-pointer \
    -fno-sanitize-recover=undefined -I include tests/c/test_capi.c \
    -L "$work/hooks" -lpgq -lpthread -o "$work/test_capi"
new_db tests; dsn=$new_dsn
LD_LIBRARY_PATH=$work/hooks ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1 RUST_BACKTRACE=0 "$work/test_capi" "$dsn"

echo "-- C++ includes the header"
# shellcheck disable=SC2046
g++ -std=c++11 -Wall -Wextra -Werror -pedantic tests/c/cxx_header.cpp \
    $(pkg-config --cflags --libs pgq) -o "$work/cxx_header"
LD_LIBRARY_PATH=$work/prefix/lib "$work/cxx_header"

echo "-- examples under valgrind"
for ex in producer pull_consumer worker_consumer; do
    # shellcheck disable=SC2046
    cc "${cflags[@]}" "examples/c/$ex.c" $(pkg-config --cflags --libs pgq) -lpthread -o "$work/$ex"
done
vg=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect)
new_db examples; dsn=$new_dsn
export LD_LIBRARY_PATH=$work/prefix/lib
# expect FILE LINE: the example's output must contain LINE.
expect() {
    grep -qxF -- "$2" "$1" || {
        echo "$prog: expected the line '$2' in the output:" >&2
        cat "$1" >&2
        return 1
    }
}
"${vg[@]}" "$work/producer" "$dsn" orders 0 >"$work/out1"
expect "$work/out1" "queue orders created"
"${vg[@]}" "$work/pull_consumer" "$dsn" orders mailer 0 >"$work/out2"
expect "$work/out2" "consumer mailer registered on orders"
"${vg[@]}" "$work/worker_consumer" "$dsn" orders auditor 0 >"$work/out2w"
expect "$work/out2w" "consumer auditor registered on orders"
"${vg[@]}" "$work/producer" "$dsn" orders 10 >"$work/out3"
expect "$work/out3" "sent 10 events to orders"
"${vg[@]}" "$work/pull_consumer" "$dsn" orders mailer 10 60 >"$work/out4"
expect "$work/out4" "consumed 10 events in 1 batches"
for i in 1 2 3; do expect "$work/out4" "event $i type=example.single data=$i extra1=NULL retry=-1"; done
for i in 4 5 6; do expect "$work/out4" "event $i type=example.bulk data=$i extra1=bulk retry=-1"; done
for i in 7 8 9 10; do expect "$work/out4" "event $i type=example.tx data=$i extra1=NULL retry=-1"; done
# The worker gets the same 10 events through its handler, with the in-process ticker.
"${vg[@]}" "$work/worker_consumer" "$dsn" orders auditor 10 120 >"$work/out5"
expect "$work/out5" "consumed 10 events"
for i in $(seq 1 10); do grep -q "^event $i type=example\.[a-z]* data=$i\$" "$work/out5" || {
    echo "$prog: worker_consumer did not print event $i:" >&2
    cat "$work/out5" >&2
    exit 1
}; done
echo "examples: output as expected, valgrind clean"

drop_dbs
echo "$prog: all C checks passed"
