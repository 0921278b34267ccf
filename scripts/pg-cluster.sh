#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests, demos and benchmarks.
#
#   scripts/pg-cluster.sh start   DIR   initdb into DIR (first time), start on a free port on
#                                       127.0.0.1, wait until it accepts connections, print ONE
#                                       line on stdout: a superuser key=value DSN.
#   scripts/pg-cluster.sh stop    DIR   immediate stop; does nothing if nothing runs (idempotent)
#   scripts/pg-cluster.sh restart DIR   immediate stop + start on the same port; prints the DSN
#   scripts/pg-cluster.sh dsn     DIR   print the DSN of the running cluster (exit 1 if stopped)
#   scripts/pg-cluster.sh status  DIR   exit 0 when the cluster in DIR runs, 3 when it does not
#
# The cluster is tuned for speed, not durability (fsync, synchronous_commit and
# full_page_writes are off): never point it at data you care about. Authentication is trust,
# but the server listens on 127.0.0.1 only and has no Unix socket.
#
# initdb refuses to run as root, so as root every server program runs as the `postgres` OS
# user (override with PGQ_CLUSTER_USER) and DIR is chowned to it; DIR's parent directories
# must let that user through. As any other user the programs run as that user. The
# database superuser is always called `postgres`.
#
# Environment: PG_BINDIR (default: PostgreSQL 15, else the newest installed server),
# PGQ_CLUSTER_USER (OS user when run as root, default postgres).
#
# Everything except the DSN goes to stderr, so `dsn=$(scripts/pg-cluster.sh start DIR)` works.
set -euo pipefail

prog=${0##*/}

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "${1:-2}"
}

find_bindir() {
    if [[ -n ${PG_BINDIR:-} ]]; then
        [[ -x $PG_BINDIR/postgres ]] || die "PG_BINDIR=$PG_BINDIR has no postgres binary"
        echo "$PG_BINDIR"
        return
    fi
    if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $d && -x $d/postgres ]]; then
        echo "$d"
        return
    fi
    if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/postgres" ]]; then
        pg_config --bindir
        return
    fi
    die "no PostgreSQL server binaries found (install postgresql-15, run scripts/install-deps.sh, or set PG_BINDIR)"
}

# Run a server program as the cluster's OS user. `cd /` because that user may not be
# allowed into the caller's working directory.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$owner" -- "$@")
    else
        (cd / && "$@")
    fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port that is free right now. Another process may still take it before the server binds
# it; start_server retries with a new port when that happens. Ports come from below the
# kernel's ephemeral range so outgoing connections do not collide with them.
pick_port() {
    local port i
    for i in $(seq 1 200); do
        port=$((15000 + RANDOM % 17000))
        if ! port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# Our settings live at the end of postgresql.conf, where a test's ALTER SYSTEM (which
# rewrites postgresql.auto.conf) cannot drop them.
conf_port() {
    sed -n "s/^port = \([0-9]*\).*/\1/p" "$dir/postgresql.conf" 2>/dev/null | tail -n 1
}

dsn_for() {
    echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres"
}

is_running() {
    [[ -f $dir/postmaster.pid ]] && as_owner "$bindir/pg_ctl" status -D "$dir" >/dev/null 2>&1
}

init_cluster() {
    if [[ ! -e $dir ]]; then
        mkdir -p "$dir"
    fi
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir"
        runuser -u "$owner" -- test -x "$dir" -a -w "$dir" ||
            die "OS user $owner cannot enter $dir: a parent directory is closed to it (use a directory under /tmp or the repository's target/)"
    fi
    chmod 700 "$dir"
    local out
    if ! out=$(as_owner "$bindir/initdb" -D "$dir" -U postgres --auth=trust \
        --locale=C -E UTF8 --no-sync 2>&1); then
        echo "$out" >&2
        die "initdb failed in $dir"
    fi
    # Our own pg_hba.conf: TCP from 127.0.0.1 only. There is no Unix socket to match.
    cat >"$dir/pg_hba.conf" <<'EOF'
# pg-cluster.sh throwaway cluster: trust, loopback TCP only.
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
EOF
    # Appended, so these win over initdb's defaults above them.
    cat >>"$dir/postgresql.conf" <<'EOF'
# pg-cluster.sh: a throwaway cluster tuned for test speed, not durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
max_locks_per_transaction = 256
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir/pg_hba.conf" "$dir/postgresql.conf"
    fi
}

set_port() {
    local tmp
    tmp=$(grep -v '^port = ' "$dir/postgresql.conf" || true)
    # Rewrite in place (not a new file) so the file keeps its owner.
    printf '%s\nport = %s\n' "$tmp" "$1" >"$dir/postgresql.conf"
}

# Start the server on port $1 and wait until it accepts connections.
# Returns 2 when the port was taken meanwhile, 1 on any other failure.
start_on() {
    local port=$1 out
    set_port "$port"
    : >>"$dir/log"
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir/log"
    fi
    local before
    before=$(wc -c <"$dir/log")
    # -w: pg_ctl waits until the postmaster reports "ready" in postmaster.pid (a condition,
    # not a fixed sleep); -t bounds that wait.
    if ! out=$(as_owner "$bindir/pg_ctl" start -D "$dir" -l "$dir/log" -w -t 120 2>&1); then
        if tail -c +"$((before + 1))" "$dir/log" | grep -q 'could not bind\|Address already in use\|could not create any TCP/IP sockets'; then
            return 2
        fi
        echo "$out" >&2
        echo "--- last lines of $dir/log:" >&2
        tail -n 20 "$dir/log" >&2 || true
        return 1
    fi
    # Belt and braces: the postmaster said ready; confirm a TCP client gets in.
    local i
    for i in $(seq 1 100); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 5; then
            return 0
        fi
        if ! is_running; then
            break
        fi
        sleep 0.1
    done
    echo "server started but does not accept connections on 127.0.0.1:$port; see $dir/log" >&2
    return 1
}

cmd_start() {
    if is_running; then
        dsn_for "$(conf_port)"
        return
    fi
    if [[ ! -f $dir/PG_VERSION ]]; then
        if [[ -e $dir && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
            die "$dir exists, is not empty and holds no cluster"
        fi
        init_cluster
    fi
    # Reuse the cluster's previous port when it is still free, so a restarted cluster keeps
    # its DSN; otherwise pick another one.
    local port attempt rc
    port=$(conf_port)
    if [[ -z $port ]] || port_in_use "$port"; then
        port=$(pick_port)
    fi
    for attempt in $(seq 1 20); do
        rc=0
        start_on "$port" || rc=$?
        case $rc in
        0)
            dsn_for "$port"
            return
            ;;
        2) port=$(pick_port) ;;
        *) die "could not start PostgreSQL in $dir" ;;
        esac
    done
    die "could not find a free port for PostgreSQL after 20 attempts"
}

cmd_stop() {
    if [[ ! -f $dir/postmaster.pid ]]; then
        return 0
    fi
    local out
    if ! out=$(as_owner "$bindir/pg_ctl" stop -D "$dir" -m immediate -w -t 60 2>&1); then
        if is_running; then
            echo "$out" >&2
            die "could not stop PostgreSQL in $dir"
        fi
    fi
}

cmd_restart() {
    [[ -f $dir/PG_VERSION ]] || die "$dir holds no cluster (run start first)"
    local port
    port=$(conf_port)
    cmd_stop
    # The same port, always: clients reconnect to the DSN they already have.
    local rc=0
    start_on "$port" || rc=$?
    case $rc in
    0) dsn_for "$port" ;;
    2) die "port $port was taken while the cluster was down" ;;
    *) die "could not restart PostgreSQL in $dir" ;;
    esac
}

[[ $# -eq 2 ]] || usage
action=$1
case $2 in
/*) dir=$2 ;;
*) dir=$PWD/$2 ;;
esac
owner=${PGQ_CLUSTER_USER:-postgres}
bindir=$(find_bindir)
export LC_ALL=C

case $action in
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
dsn)
    is_running || die "no cluster runs in $dir"
    dsn_for "$(conf_port)"
    ;;
status)
    if is_running; then exit 0; else exit 3; fi
    ;;
-h | --help | help) usage 0 ;;
*) usage ;;
esac
