#!/usr/bin/python3
"""Compatibility: SkyTools' cooperative consumer (python3-pgq's pgq.CoopConsumer) on pgq_coop.

    coop.py --backend ours|official --dsn SERVER_DSN --pgqctl PATH [--keep]

Creates a fresh database on the server (SERVER_DSN must be a superuser's) and installs PGQ
into it with `pgqctl install` (backend `official`: after CREATE EXTENSION pgq, where
`pgqctl install` leaves the extension alone and adds our pgq_coop next to it). With `pgqd`
ticking, moving retries and rotating, it then:

  * registers four sub-consumers of one consumer with CoopConsumer's `--register`
    (pgq_coop.register_subconsumer);
  * lets sub-consumer `crash` take a batch and die without finishing it;
  * runs three sub-consumers in child processes (two of them with `subconsumer_timeout`,
    i.e. pgq_coop.next_batch with a dead interval) while events are produced, some of which
    they tag for retry;

and asserts: every event reaches exactly one sub-consumer, once; no batch goes to two live
sub-consumers; the dead sub-consumer's batch is taken over; retried events come back once,
with ev_retry = 1, through the shared stream; `--unregister`
(pgq_coop.unregister_subconsumer(..., 0)) works; pgqd rotates the event tables while idle
sub-consumers are registered. Exit status 0 means it passed.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psycopg2

import roundtrip
from roundtrip import Failure, log, wait_for

QUEUE = roundtrip.QUEUE
CONSUMER = "coop_main"
# sub-consumer name: subconsumer_timeout ("" = never take over a sibling's batch)
LIVE = {"s0": "", "s1": "1 second", "s2": "1 second"}
CRASH = "crash"
RETRY_PREFIX = "retry:"


def consumer_main(ini):
    import pgq

    class CompatCoopConsumer(pgq.CoopConsumer):
        def __init__(self, args):
            super().__init__("compat_coop", "db", args)
            self.out = open(self.cf.get("output_file"), "a", encoding="utf-8")
            self.crash = self.cf.getint("crash", 0) == 1

        def process_batch(self, db, batch_id, ev_list):
            events = list(ev_list)
            if self.crash and events:
                # Die holding the batch: no finish_batch, no cleanup.
                os._exit(3)
            for ev in events:
                rec = {"sub": self.subconsumer_name, "batch": batch_id, "id": ev.id,
                       "retry": ev.retry, "data": ev.data}
                self.out.write(json.dumps(rec) + "\n")
                if (ev.data or "").startswith(RETRY_PREFIX) and ev.retry is None:
                    ev.tag_retry(1)
            self.out.flush()

    CompatCoopConsumer([ini] + sys.argv[3:]).start()


class CoopRun(roundtrip.Run):
    def __init__(self, args):
        super().__init__(args)
        self.dbname = self.dbname.replace("pgq_compat_", "pgq_compat_coop_")
        self.db_dsn = psycopg2.extensions.make_dsn(self.server_dsn, dbname=self.dbname)
        self.subs = {}  # name -> (ini, output file)
        self.procs = {}
        self.expected = set()

    def install(self):
        if self.backend == "official":
            self.one("create extension pgq")
        res = subprocess.run([self.args.pgqctl, "install", "--dsn", self.db_dsn],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise Failure("pgqctl install failed (exit %d): %s%s"
                          % (res.returncode, res.stdout, res.stderr))
        n = self.one("select count(*) from pg_proc where pronamespace = 'pgq_coop'::regnamespace"
                     " and proname = 'next_batch'")
        if n != 2:
            raise Failure(f"pgq_coop.next_batch: {n} overloads after pgqctl install, expected 2")
        log(f"installed ({self.backend}): pgq {self.one('select pgq.version()')} + pgq_coop")

    def create_queue(self):
        self.one("select pgq.create_queue(%s)", [QUEUE])
        for key, value in [("ticker_max_lag", "0.1 seconds"),
                           ("ticker_idle_period", "1 second"),
                           ("ticker_max_count", "20"),
                           ("rotation_period", "2 seconds")]:
            self.one("select pgq.set_queue_config(%s, %s, %s)", [QUEUE, key, value])

    def write_ini(self, name, timeout, crash=False):
        ini = os.path.join(self.workdir, f"{name}.ini")
        out = os.path.join(self.workdir, f"{name}.jsonl")
        with open(ini, "w") as f:
            f.write("[compat_coop]\n")
            f.write(f"job_name = coop_{name}\n")
            f.write(f"queue_name = {QUEUE}\n")
            f.write(f"consumer_name = {CONSUMER}\n")
            f.write(f"subconsumer_name = {name}\n")
            if timeout:
                f.write(f"subconsumer_timeout = {timeout}\n")
            f.write("db = %s\n" % self.db_dsn.replace("%", "%%"))
            f.write(f"crash = {1 if crash else 0}\n")
            f.write(f"output_file = {out}\n")
            f.write("loop_delay = 0.05\n")
            f.write("exception_sleep = 1\n")
            f.write("use_skylog = 0\n")
        self.subs[name] = (ini, out)

    def script(self, name, *flags):
        ini, _ = self.subs[name]
        return [sys.executable, os.path.abspath(__file__), "--consume", ini, "-q", *flags]

    def register(self):
        self.write_ini(CRASH, "", crash=True)
        for name, timeout in LIVE.items():
            self.write_ini(name, timeout)
        for name in self.subs:
            res = subprocess.run(self.script(name, "--register"), capture_output=True, text=True)
            if res.returncode != 0:
                raise Failure(f"--register {name} failed: {res.stdout}{res.stderr}")
        subs = self.one("select string_agg(consumer_name, ',' order by consumer_name)"
                        " from pgq.get_consumer_info(%s)", [QUEUE])
        want = ",".join(sorted([CONSUMER] + [f"{CONSUMER}.{n}" for n in self.subs]))
        if subs != want:
            raise Failure(f"after --register the consumers are {subs}, expected {want}")
        log(f"registered {len(self.subs)} sub-consumers of {CONSUMER} with --register")

    def start(self, name):
        self.procs[name] = subprocess.Popen(self.script(name), stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)

    def produce(self, n_tx, per_tx, tag):
        """n_tx transactions, each in a batch of its own (one tick after each), so that the
        batches spread over the sub-consumers."""
        conn = self.connect(autocommit=False)
        cur = conn.cursor()
        for tx in range(n_tx):
            for i in range(per_tx):
                data = (RETRY_PREFIX if (tx * per_tx + i) % 17 == 5 else "") + f"{tag}-{tx}-{i}"
                cur.execute("select pgq.insert_event(%s, %s, %s)", [QUEUE, "coop", data])
                self.expected.add(data)
            conn.commit()
            tick = self.queue_state()[0]
            wait_for("pgqd to tick", lambda: self.pgqd_alive() and self.queue_state()[0] > tick,
                     30, 0.01)
        conn.close()

    def crash_holding_a_batch(self):
        self.start(CRASH)
        self.produce(1, 10, "first")
        proc = self.procs.pop(CRASH)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise Failure("sub-consumer 'crash' never got a batch")
        if rc != 3:
            raise Failure(f"sub-consumer 'crash' exited with {rc}: {proc.communicate()[0]}")
        self.crashed_batch = self.one(
            "select current_batch from pgq.get_consumer_info(%s, %s)",
            [QUEUE, f"{CONSUMER}.{CRASH}"])
        if self.crashed_batch is None:
            raise Failure("the crashed sub-consumer holds no batch")
        log(f"sub-consumer '{CRASH}' died holding batch {self.crashed_batch}")

    def rotate_with_subconsumers(self):
        """Idle sub-consumers have no position: they must not hold back table rotation."""
        _, table0, switch0 = self.queue_state()
        conn = self.connect()
        n = [0]

        def produce_until_rotated():
            n[0] += 1
            data = f"rot-{n[0]}"
            with conn.cursor() as cur:
                cur.execute("select pgq.insert_event(%s, %s, %s)", [QUEUE, "coop", data])
            self.expected.add(data)
            _, table, switch = self.queue_state()
            return self.pgqd_alive() and table != table0 and switch != switch0

        wait_for("pgqd to rotate the event tables", produce_until_rotated, 60, 0.05)
        conn.close()
        log(f"pgqd rotated the event tables with sub-consumers registered ({n[0]} events meanwhile)")

    def records(self):
        recs = []
        for name in LIVE:
            _, out = self.subs[name]
            if os.path.exists(out):
                with open(out, encoding="utf-8") as f:
                    recs.extend(json.loads(line) for line in f if line.endswith("\n"))
        return recs

    def all_delivered(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise Failure(f"sub-consumer {name} exited with {proc.returncode}:\n"
                              f"{proc.communicate()[0][-4000:]}")
        recs = self.records()
        first = {r["data"] for r in recs if r["retry"] is None}
        again = {r["data"] for r in recs if r["retry"] is not None}
        retried = {d for d in self.expected if d.startswith(RETRY_PREFIX)}
        return first >= self.expected and again >= retried

    def stop_consumers(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        for name, proc in self.procs.items():
            try:
                out = proc.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                raise Failure(f"sub-consumer {name} did not stop within 30 s of SIGINT")
            if proc.returncode != 0:
                raise Failure(f"sub-consumer {name} exited with {proc.returncode}:\n{out[-4000:]}")
        log("live sub-consumers stopped on SIGINT")

    def check(self):
        recs = self.records()
        first, again, owner = {}, {}, {}
        for r in recs:
            if r["data"] not in self.expected:
                raise Failure(f"an event nobody sent: {r}")
            seen = first if r["retry"] is None else again
            if r["data"] in seen:
                raise Failure(f"delivered twice: {seen[r['data']]} and {r}")
            seen[r["data"]] = r
            if owner.setdefault(r["batch"], r["sub"]) != r["sub"]:
                raise Failure(f"batch {r['batch']} went to {owner[r['batch']]} and {r['sub']}")
        missing = self.expected - set(first)
        if missing:
            raise Failure(f"{len(missing)} events never arrived, e.g. {sorted(missing)[:5]}")
        retried = {d for d in self.expected if d.startswith(RETRY_PREFIX)}
        if set(again) != retried:
            raise Failure(f"retried events came back as {sorted(again)}, expected {sorted(retried)}")
        for data, r in again.items():
            if r["retry"] != 1 or r["id"] != first[data]["id"]:
                raise Failure(f"retried event came back as {r}, first as {first[data]}")
        taker = owner.get(self.crashed_batch)
        if taker not in ("s1", "s2"):
            raise Failure(f"the dead sub-consumer's batch {self.crashed_batch} went to {taker!r},"
                          " expected a sub-consumer with subconsumer_timeout")
        per_sub = {n: sum(1 for b in owner.values() if b == n) for n in LIVE}
        log(f"{len(first)} events exactly once in {len(owner)} batches {per_sub}; "
            f"batch {self.crashed_batch} of the dead sub-consumer taken over by {taker}; "
            f"{len(again)} retried events back once")

    def unregister(self):
        res = subprocess.run(self.script("s0", "--unregister"), capture_output=True, text=True)
        if res.returncode != 0:
            raise Failure(f"--unregister s0 failed: {res.stdout}{res.stderr}")
        left = self.one("select count(*) from pgq.get_consumer_info(%s, %s)",
                        [QUEUE, f"{CONSUMER}.s0"])
        if left != 0:
            raise Failure("s0 is still registered after --unregister")
        log("--unregister removed sub-consumer s0")

    def run(self):
        ok = False
        try:
            self.create_database()
            self.install()
            self.create_queue()
            self.register()
            self.start_pgqd()
            self.crash_holding_a_batch()
            for name in LIVE:
                self.start(name)
            self.produce(30, 10, "main")
            wait_for("every event at the sub-consumers", self.all_delivered, 120, 0.1)
            self.rotate_with_subconsumers()
            wait_for("every event at the sub-consumers", self.all_delivered, 120, 0.1)
            self.stop_consumers()
            self.pgqd_alive()
            self.check()
            self.unregister()
            self.stop_pgqd()
            ok = True
        finally:
            for proc in self.procs.values():
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
    if len(sys.argv) >= 3 and sys.argv[1] == "--consume":
        consumer_main(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["ours", "official"], required=True)
    p.add_argument("--dsn", required=True, help="superuser DSN of the server to test on")
    p.add_argument("--pgqctl", required=True, help="pgqctl binary")
    p.add_argument("--pgqd", default="/usr/bin/pgqd")
    p.add_argument("--ticker", choices=["pgqd", "pgqctl"], default="pgqd",
                   help="the ticker daemon: pgqd, or `pgqctl ticker` with the same config file")
    p.add_argument("--keep", action="store_true", help="keep the database and work files")
    args = p.parse_args()
    start = time.monotonic()
    try:
        CoopRun(args).run()
    except (Failure, psycopg2.Error) as e:
        print(f"compat coop: FAILED ({args.backend}): {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    log(f"coop PASSED ({args.backend}) in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
