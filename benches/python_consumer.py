#!/usr/bin/python3
"""No-op python3-pgq Consumer for the libpgq benchmarks (benches/bench/consume.rs).

    python_consumer.py DSN QUEUE CONSUMER [LAZY_FETCH]

Runs SkyTools' pgq.Consumer with a handler that touches every event's id, type and data and
does nothing else,
until no batch is left, then prints one JSON line: events, batches, secs (wall time of the
consumer loop, from start() to its end), cpu_secs and peak_rss_kib of this process, and
backend_cpu_secs: CPU time of its PostgreSQL backend (read from /proc, same machine).
LAZY_FETCH is pgq_lazy_fetch (default: the library's default, 300; 0 = get_batch_events).
Runs with Debian's system Python, which has python3-pgq.
"""

import json
import os
import resource
import sys
import tempfile
import time

import pgq


def proc_cpu_secs(pid):
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 1:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    dsn, queue, consumer = sys.argv[1:4]
    lazy = sys.argv[4] if len(sys.argv) > 4 else None
    stats = {"events": 0, "batches": 0, "backend_pid": None, "backend_cpu_secs": 0.0}

    class NoopConsumer(pgq.Consumer):
        def process_batch(self, db, batch_id, ev_list):
            n = 0
            for ev in ev_list:
                ev.id, ev.type, ev.data  # touch the fields, as the other consumers do
                n += 1
            stats["events"] += n
            stats["batches"] += 1

        def work(self):
            if stats["backend_pid"] is None:
                db = self.get_database(self.db_name)
                cur = db.cursor()
                cur.execute("select pg_backend_pid()")
                stats["backend_pid"] = cur.fetchone()[0]
                db.commit()
            got = super().work()
            if not got:
                # backlog drained: leave DBScript's loop (while the backend still lives)
                stats["backend_cpu_secs"] = proc_cpu_secs(stats["backend_pid"])
                self.looping = 0
            return got

    workdir = tempfile.mkdtemp(prefix="pgq-bench-py-")
    ini = os.path.join(workdir, "consumer.ini")
    with open(ini, "w") as f:
        f.write("[bench_consumer]\n")
        f.write(f"job_name = {consumer}\n")
        f.write(f"queue_name = {queue}\n")
        f.write("db = %s\n" % dsn.replace("%", "%%"))
        if lazy is not None:
            f.write(f"pgq_lazy_fetch = {lazy}\n")
        f.write("loop_delay = 1\n")
        f.write("use_skylog = 0\n")
        f.write(f"logfile = {os.path.join(workdir, 'consumer.log')}\n")

    c = NoopConsumer("bench_consumer", "db", [ini, "-q"])
    t0 = time.monotonic()
    c.start()
    secs = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "events": stats["events"],
        "batches": stats["batches"],
        "secs": secs,
        "cpu_secs": ru.ru_utime + ru.ru_stime,
        "peak_rss_kib": ru.ru_maxrss,
        "backend_cpu_secs": stats["backend_cpu_secs"],
    }), flush=True)


if __name__ == "__main__":
    main()
