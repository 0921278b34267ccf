#!/usr/bin/python3
"""Compatibility round trip: the reference PGQ tools working on a PGQ schema.

    roundtrip.py --backend ours|official --dsn SERVER_DSN [--pgqctl PATH]
                 [--ticker pgqd|pgqctl] [--keep]

Creates a fresh database on the server (SERVER_DSN must be a superuser's), installs PGQ into
it (backend `ours`: `pgqctl install`; backend `official`: CREATE EXTENSION pgq), then:

  * runs the real ticker daemon `pgqd` against that database (fast periods, so that it also
    moves retry events and rotates the event tables during the run),
  * produces events with plain SQL (`pgq.insert_event`, 3 and 7 arguments) and with SkyTools'
    `pgq.bulk_insert_events` (COPY into `pgq.current_event_table`), including a rolled-back
    transaction, a transaction held open across several ticks, a 1 MB payload and text that
    needs escaping,
  * consumes with two SkyTools `pgq.Consumer` subclasses in child processes, one reading
    batches through a cursor (`pgq_lazy_fetch`, i.e. `get_batch_cursor`) and tagging some
    events for retry, the other reading with `get_batch_events`,

and asserts: every committed event reaches every consumer exactly once, with the payload it
was sent with; rolled-back events never arrive; all events of one transaction arrive in one
batch; retried events come back once, to the consumer that retried them, with ev_retry = 1;
pgqd ticked, rotated the tables and stopped cleanly on SIGINT. With `--ticker pgqctl` the
same run uses `pgqctl ticker --config` with pgqd's config file instead of pgqd.

Runs with Debian's system Python (/usr/bin/python3), which has the `pgq`, `skytools` and
`psycopg2` modules from the python3-pgq package. Prints one line per step; exit status 0
means the round trip passed.
"""

import argparse
import datetime
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extensions

QUEUE = "compat_q"
STOP_TYPE = "compat.stop"
RETRY_PREFIX = "retry:"
CONSUMERS = {
    # name: (pgq_lazy_fetch, tags "retry:" events for retry)
    "compat_cursor": (7, True),
    "compat_plain": (0, False),
}


def log(msg):
    print(f"compat: {msg}", flush=True)


class Failure(Exception):
    pass


def wait_for(what, cond, timeout, interval=0.05):
    """Poll `cond` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def digest(data):
    """Short form of a payload for the consumers' output files."""
    if data is None:
        return None
    if len(data) <= 200:
        return data
    return "sha256:%s:%d" % (hashlib.sha256(data.encode()).hexdigest(), len(data))


# --------------------------------------------------------------------------------------------
# Consumer child process


def consumer_main(ini):
    import pgq

    class CompatConsumer(pgq.Consumer):
        """Writes every event it gets as a JSON line; stops by itself when the stop event
        has arrived and every event it tagged for retry has come back."""

        def __init__(self, args):
            super().__init__("compat_consumer", "db", args)
            self.out = open(self.cf.get("output_file"), "a", encoding="utf-8")
            self.do_retry = self.cf.getint("tag_retry", 0) == 1
            self.seen_stop = False
            self.waiting_retry = set()

        def process_batch(self, db, batch_id, ev_list):
            for ev in ev_list:
                rec = {
                    "batch": batch_id,
                    "id": ev.id,
                    "txid": ev.txid,
                    "retry": ev.retry,
                    "type": ev.type,
                    "data": digest(ev.data),
                    "extra": [ev.extra1, ev.extra2, ev.extra3, ev.extra4],
                }
                self.out.write(json.dumps(rec) + "\n")
                if ev.type == STOP_TYPE:
                    self.seen_stop = True
                data = ev.data or ""
                if self.do_retry and data.startswith(RETRY_PREFIX):
                    if ev.retry is None:
                        ev.tag_retry(1)
                        self.waiting_retry.add(ev.id)
                    else:
                        self.waiting_retry.discard(ev.id)
            self.out.flush()
            if self.seen_stop and not self.waiting_retry:
                # DBScript finishes this batch, then leaves its loop.
                self.looping = 0

    CompatConsumer([ini, "-q"]).start()


# --------------------------------------------------------------------------------------------
# Orchestrator


class Run:
    def __init__(self, args):
        self.args = args
        self.backend = args.backend
        self.server_dsn = args.dsn
        self.dbname = "pgq_compat_%s_%s" % (self.backend, secrets.token_hex(4))
        self.db_dsn = psycopg2.extensions.make_dsn(self.server_dsn, dbname=self.dbname)
        self.workdir = tempfile.mkdtemp(prefix="pgq-compat-")
        self.pgqd = None
        # coop.py reuses this class with its own arguments, without --ticker.
        self.ticker = getattr(args, "ticker", "pgqd")
        self.tname = "pgqctl ticker" if self.ticker == "pgqctl" else "pgqd"
        self.consumers = {}
        self.expected = {}  # data digest -> (type, extras, retried?)
        self.rolled_back = set()
        self.big_payload = None

    def connect(self, dsn=None, autocommit=True):
        conn = psycopg2.connect(dsn or self.db_dsn)
        conn.autocommit = autocommit
        return conn

    def one(self, sql, params=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            if cur.description is None:
                return None
            row = cur.fetchone()
            return row[0] if row else None

    # ---- set-up ----

    def create_database(self):
        admin = self.connect(self.server_dsn)
        with admin.cursor() as cur:
            cur.execute('create database "%s"' % self.dbname)
        admin.close()
        self.conn = self.connect()
        log(f"created database {self.dbname}")

    def install(self):
        if self.backend == "official":
            self.one("create extension pgq")
        else:
            pgqctl = self.args.pgqctl
            if not pgqctl:
                raise Failure("backend 'ours' needs --pgqctl PATH (the built pgqctl binary)")
            res = subprocess.run([pgqctl, "install", "--dsn", self.db_dsn],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise Failure("pgqctl install failed (exit %d): %s%s"
                              % (res.returncode, res.stdout, res.stderr))
        version = self.one("select pgq.version()")
        log(f"installed ({self.backend}): pgq.version() = {version}")
        # pgqd only ticks databases whose pgq.version() it accepts.
        if not version or not version.startswith("3."):
            raise Failure(f"pgq.version() is {version!r}, pgqd needs 3.x")

    def create_queue(self):
        if self.one("select pgq.create_queue(%s)", [QUEUE]) != 1:
            raise Failure("create_queue did not return 1")
        # Short periods, so that the run sees ticks, retries and rotations in seconds.
        for key, value in [("ticker_max_lag", "0.1 seconds"),
                           ("ticker_idle_period", "1 second"),
                           ("ticker_max_count", "50"),
                           ("rotation_period", "2 seconds")]:
            self.one("select pgq.set_queue_config(%s, %s, %s)", [QUEUE, key, value])
        for name in CONSUMERS:
            if self.one("select pgq.register_consumer(%s, %s)", [QUEUE, name]) != 1:
                raise Failure(f"register_consumer({name}) did not return 1")
        log(f"queue {QUEUE} created, consumers {', '.join(CONSUMERS)} registered")

    def queue_state(self):
        with self.conn.cursor() as cur:
            cur.execute("select last_tick_id, queue_cur_table, queue_switch_time"
                        " from pgq.get_queue_info(%s)", [QUEUE])
            return cur.fetchone()

    def start_pgqd(self):
        parts = psycopg2.extensions.parse_dsn(self.db_dsn)
        parts.pop("dbname", None)
        base = psycopg2.extensions.make_dsn(**parts) if parts else ""
        ini = os.path.join(self.workdir, "pgqd.ini")
        self.pgqd_log = os.path.join(self.workdir, "pgqd.log")
        with open(ini, "w") as f:
            f.write("[pgqd]\n")
            f.write(f"logfile = {self.pgqd_log}\n")
            f.write(f"pidfile = {os.path.join(self.workdir, 'pgqd.pid')}\n")
            f.write(f"base_connstr = {base}\n")
            f.write(f"initial_database = {self.dbname}\n")
            f.write(f"database_list = {self.dbname}\n")
            f.write("check_period = 60\n")
            f.write("ticker_period = 0.1\n")
            f.write("retry_period = 0.5\n")
            f.write("maint_period = 0.5\n")
        first_tick = self.queue_state()[0]
        if self.ticker == "pgqctl":
            # `pgqctl ticker` reads the same pgqd config file; it logs to stderr.
            with open(self.pgqd_log, "w") as logf:
                self.pgqd = subprocess.Popen(
                    [self.args.pgqctl, "ticker", "--config", ini],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, text=True)
        else:
            self.pgqd = subprocess.Popen([self.args.pgqd, ini], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        wait_for("pgqd to tick the queue", lambda: self.pgqd_alive() and
                 self.queue_state()[0] > first_tick, 30)
        log(f"{self.tname} (pid {self.pgqd.pid}) is ticking")

    def pgqd_alive(self):
        if self.pgqd.poll() is not None:
            raise Failure("pgqd exited with %s:\n%s" % (self.pgqd.returncode, self.pgqd_output()))
        return True

    def pgqd_output(self):
        text = ""
        if os.path.exists(self.pgqd_log):
            with open(self.pgqd_log) as f:
                text = f.read()
        return text[-4000:]

    def stop_pgqd(self):
        self.pgqd.send_signal(signal.SIGINT)
        try:
            rc = self.pgqd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.pgqd.kill()
            raise Failure("pgqd did not stop within 30 s of SIGINT")
        if rc != 0:
            raise Failure(f"pgqd exited with {rc} after SIGINT:\n{self.pgqd_output()}")
        log(f"{self.tname} stopped cleanly on SIGINT")

    def start_consumers(self):
        for name, (lazy, retry) in CONSUMERS.items():
            ini = os.path.join(self.workdir, f"{name}.ini")
            out = os.path.join(self.workdir, f"{name}.jsonl")
            with open(ini, "w") as f:
                f.write("[compat_consumer]\n")
                f.write(f"job_name = {name}\n")
                f.write(f"queue_name = {QUEUE}\n")
                # skytools' config does %-interpolation: escape the DSN's percent signs.
                f.write("db = %s\n" % self.db_dsn.replace("%", "%%"))
                f.write(f"pgq_lazy_fetch = {lazy}\n")
                f.write(f"tag_retry = {1 if retry else 0}\n")
                f.write(f"output_file = {out}\n")
                f.write("loop_delay = 0.05\n")
                f.write("exception_sleep = 1\n")
                f.write("use_skylog = 0\n")
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--consume", ini],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.consumers[name] = (proc, out)
        log("consumers started: " + ", ".join(
            f"{n} (pid {p.pid})" for n, (p, _) in self.consumers.items()))

    # ---- producing ----

    def expect(self, data, ev_type, extras=(None, None, None, None)):
        key = digest(data)
        if key in self.expected:
            raise Failure(f"test bug: payload {key!r} used twice")
        self.expected[key] = (ev_type, list(extras))

    def insert(self, cur, ev_type, data, extras=None):
        if extras is None:
            cur.execute("select pgq.insert_event(%s, %s, %s)", [QUEUE, ev_type, data])
        else:
            cur.execute("select pgq.insert_event(%s, %s, %s, %s, %s, %s, %s)",
                        [QUEUE, ev_type, data] + list(extras))
        ev_id = cur.fetchone()[0]
        if not isinstance(ev_id, int):
            raise Failure(f"insert_event returned {ev_id!r}")
        return ev_id

    def produce(self):
        import pgq

        prod = self.connect(autocommit=False)
        cur = prod.cursor()
        n = 0

        # Small transactions, both insert_event forms, some events to be retried.
        for tx in range(10):
            for i in range(20):
                n += 1
                data = (RETRY_PREFIX if n % 25 == 0 else "") + f"sql-{tx}-{i}"
                if i % 2:
                    extras = [f"e1-{n}", None, f"e3-{n}", "x" * (n % 5)]
                    self.insert(cur, "sql7", data, extras)
                    self.expect(data, "sql7", extras)
                else:
                    self.insert(cur, "sql3", data)
                    self.expect(data, "sql3")
            prod.commit()
        log(f"produced {n} events in 10 transactions with pgq.insert_event")

        # SkyTools' bulk path: COPY into pgq.current_event_table(), with text COPY must escape.
        # The event tables have no default for ev_time: a COPY must bring it.
        now = datetime.datetime.now(datetime.timezone.utc)
        rows = []
        for i in range(100):
            data = f"bulk-{i} tab\there nl\nthere bs\\ quote' dq\" ü€ 😀"
            rows.append([now, "bulk", data, f"b{i}", None, None, "last"])
            self.expect(data, "bulk", [f"b{i}", None, None, "last"])
        pgq.bulk_insert_events(cur, rows, ["time", "type", "data", "extra1", "extra2", "extra3",
                                           "extra4"], QUEUE)
        prod.commit()
        log("produced 100 events in one transaction with pgq.bulk_insert_events (COPY)")

        # Never committed: must never be delivered.
        for i in range(5):
            data = f"rolled-back-{i}"
            self.insert(cur, "rollback", data)
            self.rolled_back.add(data)
        prod.rollback()
        log("rolled back a transaction with 5 events")

        # A transaction open across several pgqd ticks: its events must still arrive, all in
        # one batch, the batch whose tick first sees the commit.
        for i in range(5):
            data = f"long-a-{i}"
            self.insert(cur, "long", data)
            self.expect(data, "long")
        start_tick = self.queue_state()[0]
        # Other transactions keep committing meanwhile, so the ticks are not idle ticks.
        side = self.connect(autocommit=True)
        side_cur = side.cursor()
        side_n = [0]

        def side_event_then_ticks():
            side_n[0] += 1
            data = f"side-{side_n[0]}"
            self.insert(side_cur, "side", data)
            self.expect(data, "side")
            return self.queue_state()[0] >= start_tick + 3

        wait_for("3 ticks while a transaction is open", side_event_then_ticks, 30, 0.05)
        for i in range(5):
            data = f"long-b-{i}"
            self.insert(cur, "long", data)
            self.expect(data, "long")
        prod.commit()
        log(f"committed a transaction held open across 3 ticks ({side_n[0]} side events)")

        # Keep producing until pgqd's maintenance has rotated the event tables, so events
        # before, during and after a rotation must all arrive.
        _, table0, switch0 = self.queue_state()
        rot_n = [0]

        def produce_until_rotated():
            rot_n[0] += 1
            data = f"rot-{rot_n[0]}"
            self.insert(side_cur, "rot", data)
            self.expect(data, "rot")
            _, table, switch = self.queue_state()
            return table != table0 and switch != switch0

        wait_for("pgqd to rotate the event tables", produce_until_rotated, 60, 0.05)
        log(f"{self.tname} rotated the event tables (produced {rot_n[0]} events meanwhile)")

        self.big_payload = "big:" + "0123456789abcdef" * (1024 * 64)  # 1 MB
        self.insert(cur, "big", self.big_payload, ["x", None, None, None])
        self.expect(self.big_payload, "big", ["x", None, None, None])
        prod.commit()

        total = len(self.expected)
        # The last event: once a consumer has seen it, it has seen everything before it.
        self.insert(cur, STOP_TYPE, "stop")
        self.expect("stop", STOP_TYPE)
        prod.commit()
        prod.close()
        side.close()
        log(f"produced {total} events in all, then the stop event")

    # ---- checking ----

    def wait_consumers(self):
        deadline = time.monotonic() + 120
        for name, (proc, _) in self.consumers.items():
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0]
                raise Failure(f"consumer {name} did not receive everything within 120 s;"
                              f" its output:\n{out[-4000:]}")
            out = proc.communicate()[0]
            if proc.returncode != 0:
                raise Failure(f"consumer {name} exited with {proc.returncode}:\n{out[-4000:]}")
            if out.strip():
                log(f"consumer {name} said:\n{out.strip()}")
        log("both consumers finished")

    def check(self):
        for name, (_, out) in self.consumers.items():
            lazy, retries = CONSUMERS[name]
            with open(out, encoding="utf-8") as f:
                recs = [json.loads(line) for line in f]
            first = {}
            again = {}
            batch_of_tx = {}
            for r in recs:
                if r["data"] in self.rolled_back:
                    raise Failure(f"{name} got a rolled-back event: {r}")
                if r["data"] not in self.expected:
                    raise Failure(f"{name} got an event nobody sent: {r}")
                if r["retry"] is None:
                    if r["data"] in first:
                        raise Failure(f"{name} got an event twice: {first[r['data']]} and {r}")
                    first[r["data"]] = r
                    if batch_of_tx.setdefault(r["txid"], r["batch"]) != r["batch"]:
                        raise Failure(f"{name}: transaction {r['txid']} split over batches "
                                      f"{batch_of_tx[r['txid']]} and {r['batch']}")
                else:
                    if r["data"] in again:
                        raise Failure(f"{name} got a retried event twice: {r}")
                    again[r["data"]] = r
            missing = set(self.expected) - set(first)
            if missing:
                raise Failure(f"{name} never got {len(missing)} events, e.g. "
                              f"{sorted(missing)[:5]}")
            for data, r in first.items():
                ev_type, extras = self.expected[data]
                if r["type"] != ev_type or r["extra"] != extras:
                    raise Failure(f"{name}: event {r} should have type {ev_type!r} and "
                                  f"extras {extras!r}")
            ids = [r["id"] for r in first.values()]
            if len(set(ids)) != len(ids):
                raise Failure(f"{name}: two different events share an ev_id")
            to_retry = {d for d in self.expected if d.startswith(RETRY_PREFIX)}
            if retries:
                if set(again) != to_retry:
                    raise Failure(f"{name}: retried events came back as {sorted(again)}, "
                                  f"expected {sorted(to_retry)}")
                for data, r in again.items():
                    if r["retry"] != 1 or r["id"] != first[data]["id"]:
                        raise Failure(f"{name}: retried event came back as {r}, first "
                                      f"delivery was {first[data]}")
            elif again:
                raise Failure(f"{name} got retry events that another consumer retried: "
                              f"{sorted(again)}")
            batches = len({r["batch"] for r in recs})
            log(f"{name}: {len(first)} events exactly once in {batches} batches"
                + (f" (cursor, {lazy} rows per fetch)" if lazy else " (get_batch_events)")
                + (f", {len(again)} retried events back once with ev_retry=1" if retries else ""))

    # ---- driver ----

    def run(self):
        ok = False
        try:
            self.create_database()
            self.install()
            self.create_queue()
            self.start_pgqd()
            self.start_consumers()
            self.produce()
            self.wait_consumers()
            self.pgqd_alive()
            self.check()
            self.stop_pgqd()
            ok = True
        finally:
            for proc, _ in self.consumers.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if self.pgqd and self.pgqd.poll() is None:
                self.pgqd.kill()
                self.pgqd.wait()
            if not ok and self.pgqd:
                log(f"pgqd log (tail):\n{self.pgqd_output()}")
            if hasattr(self, "conn"):
                self.conn.close()
            if ok and not self.args.keep:
                admin = self.connect(self.server_dsn)
                with admin.cursor() as cur:
                    cur.execute('drop database "%s"' % self.dbname)
                admin.close()
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                log(f"kept database {self.dbname} and work files in {self.workdir}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--consume":
        consumer_main(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["ours", "official"], required=True)
    p.add_argument("--dsn", required=True, help="superuser DSN of the server to test on")
    p.add_argument("--pgqctl", help="pgqctl binary (backend 'ours')")
    p.add_argument("--pgqd", default="/usr/bin/pgqd")
    p.add_argument("--ticker", choices=["pgqd", "pgqctl"], default="pgqd",
                   help="the ticker daemon: pgqd, or `pgqctl ticker` with the same config file")
    p.add_argument("--keep", action="store_true", help="keep the database and work files")
    args = p.parse_args()
    try:
        Run(args).run()
    except (Failure, psycopg2.Error) as e:
        print(f"compat: FAILED ({args.backend}, {args.ticker}): {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    log(f"PASSED ({args.backend}, ticker {args.ticker})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
