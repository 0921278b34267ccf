#!/usr/bin/env bash
# Throwaway PgBouncer in transaction pooling mode, for the tests that prove libpgq works
# behind one (tests/pgbouncer.rs, the Python and Go bindings' tests).
#
#   scripts/pgbouncer.sh start DIR HOST PORT USER [PASSWORD]
#         write DIR/pgbouncer.ini for the PostgreSQL server at HOST:PORT (every database on
#         it, as the pooler's `*` entry), start pgbouncer in the background on a free port
#         on 127.0.0.1, wait until it accepts connections and print ONE line on stdout:
#         `host=127.0.0.1 port=N` (put it after the server's DSN: later keys win)
#   scripts/pgbouncer.sh stop DIR
#         stop it (SIGTERM, then SIGKILL after 10 s); does nothing if nothing runs
#
# The pooler runs `pool_mode = transaction` with `default_pool_size = 2` (override with
# PGQ_BOUNCER_POOL_SIZE), so a handful of clients already share its server connections.
# Clients log in as USER without a password (auth_type = trust, USER listed in
# DIR/userlist.txt); the pooler logs in to the server as USER with PASSWORD, if given.
# DIR/pgbouncer.log is its log.
#
# pgbouncer refuses to run as root, so as root it runs as the `postgres` OS user (override
# with PGQ_CLUSTER_USER, as for scripts/pg-cluster.sh) and DIR is chowned to it; DIR's parent
# directories must let that user through (a directory under /tmp does).
#
# Environment: PGBOUNCER (the binary; default: pgbouncer on PATH, else /usr/sbin/pgbouncer),
# PGQ_BOUNCER_POOL_SIZE, PGQ_CLUSTER_USER.
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

find_pgbouncer() {
    if [[ -n ${PGBOUNCER:-} ]]; then
        [[ -x $PGBOUNCER ]] || die "PGBOUNCER=$PGBOUNCER is not executable"
        echo "$PGBOUNCER"
    elif command -v pgbouncer >/dev/null; then
        command -v pgbouncer
    elif [[ -x /usr/sbin/pgbouncer ]]; then
        echo /usr/sbin/pgbouncer
    else
        die "pgbouncer is not installed (scripts/install-deps.sh postgres installs it)"
    fi
}

as_owner() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$owner" -- "$@")
    else
        (cd / && "$@")
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

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

# The pid of the running pooler, if there is one.
running_pid() {
    local pid
    pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        echo "$pid"
    fi
}

write_config() {
    local host=$1 port=$2 user=$3 password=$4 listen=$5
    # Double quotes in the user list are doubled, as pgbouncer reads it.
    printf '"%s" "%s"\n' "${user//\"/\"\"}" "${password//\"/\"\"}" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
; scripts/pgbouncer.sh: a throwaway pooler in transaction pooling mode.
[databases]
* = host=$host port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = ${PGQ_BOUNCER_POOL_SIZE:-2}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    chmod 600 "$dir/userlist.txt"
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir/userlist.txt" "$dir/pgbouncer.ini"
    fi
}

cmd_start() {
    [[ $# -ge 3 && $# -le 4 ]] || usage
    local host=$1 port=$2 user=$3 password=${4:-}
    if [[ -n $(running_pid) ]]; then
        die "a pgbouncer already runs in $dir (stop it first)"
    fi
    local bin
    bin=$(find_pgbouncer)
    mkdir -p "$dir"
    chmod 700 "$dir"
    if [[ $EUID -eq 0 ]]; then
        chown "$owner": "$dir"
        runuser -u "$owner" -- test -x "$dir" -a -w "$dir" ||
            die "OS user $owner cannot enter $dir: a parent directory is closed to it (use a directory under /tmp)"
    fi
    local attempt listen before i
    for attempt in $(seq 1 20); do
        listen=$(pick_port)
        write_config "$host" "$port" "$user" "$password" "$listen"
        : >>"$dir/pgbouncer.log"
        [[ $EUID -eq 0 ]] && chown "$owner": "$dir/pgbouncer.log"
        before=$(wc -c <"$dir/pgbouncer.log")
        # -d: it forks into the background once its configuration is loaded.
        if ! as_owner "$bin" -d -q "$dir/pgbouncer.ini"; then
            tail -n 20 "$dir/pgbouncer.log" >&2 || true
            die "pgbouncer did not start"
        fi
        # Wait (bounded) until it accepts connections, or gave up on its port.
        for i in $(seq 1 200); do
            if port_in_use "$listen"; then
                echo "host=127.0.0.1 port=$listen"
                return
            fi
            if [[ -z $(running_pid) ]] && [[ $i -gt 10 ]]; then
                break
            fi
            sleep 0.05
        done
        cmd_stop
        if tail -c +"$((before + 1))" "$dir/pgbouncer.log" | grep -q 'Address already in use'; then
            continue
        fi
        tail -n 20 "$dir/pgbouncer.log" >&2 || true
        die "pgbouncer started but does not accept connections on 127.0.0.1:$listen"
    done
    die "could not find a free port for pgbouncer after 20 attempts"
}

cmd_stop() {
    local pid i
    pid=$(running_pid)
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}

[[ $# -ge 2 ]] || usage
action=$1
case $2 in
/*) dir=$2 ;;
*) dir=$PWD/$2 ;;
esac
shift 2
owner=${PGQ_CLUSTER_USER:-postgres}
export LC_ALL=C

case $action in
start) cmd_start "$@" ;;
stop)
    [[ $# -eq 0 ]] || usage
    cmd_stop
    ;;
-h | --help | help) usage 0 ;;
*) usage ;;
esac
