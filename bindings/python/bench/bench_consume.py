#!/usr/bin/env python3
"""Benchmark: consume a backlog with a no-op handler, libpgq's Python binding vs SkyTools.

    python bench_consume.py SERVER_DSN [--events N] [--batches B] [--payload BYTES] [--rounds R]

SERVER_DSN is a superuser DSN; the benchmark creates a database of its own there, installs
libpgq's PGQ schema, produces N events (default 100000) of BYTES bytes of data (default 100)
cut into B batches (default 10), and lets each contender read the same backlog as its own
registered consumer, iterating every event and touching its id, type and data:

  libpgq pull     Consumer.batches() / `for ev in batch` (events streamed, fetch size 1000)
  libpgq worker   Client.worker(handler) on libpgq's threads (when the library has workers)
  skytools        python3-pgq's pgq.Consumer (process_batch, its default cursor fetch)

Each contender is timed R times (default 5, rounds interleaved; the consumer is moved back with
register_consumer_at between rounds) and the best round is printed in events per second.
Needs the system Python's python3-pgq for the SkyTools contender (skipped without it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List

import libpgq

QUEUE = "bench_q"


def make_db(server_dsn: str) -> str:
    import psycopg2
    import psycopg2.extensions

    name = f"pgq_bench_{secrets.token_hex(4)}"
    conn = psycopg2.connect(server_dsn)
    conn.autocommit = True
    conn.cursor().execute(f'create database "{name}"')
    conn.close()
    return str(psycopg2.extensions.make_dsn(server_dsn, dbname=name))


def drop_db(server_dsn: str, dsn: str) -> None:
    import psycopg2
    import psycopg2.extensions

    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    conn = psycopg2.connect(server_dsn)
    conn.autocommit = True
    conn.cursor().execute(f'drop database if exists "{name}" with (force)')
    conn.close()


def produce(client: libpgq.Client, n: int, batches: int, payload: int) -> List[int]:
    """Send the backlog; returns the tick ids that cut it (first = before any event)."""
    ticks = [client.queue_info(QUEUE).last_tick_id or 0]
    per = max(1, n // batches)
    sent = 0
    data = "x" * payload
    while sent < n:
        k = min(per, n - sent)
        for off in range(0, k, 10_000):
            m = min(10_000, k - off)
            client.send_many(QUEUE, (("bench", data, str(sent + off + i)) for i in range(m)))
        sent += k
        client.force_tick(QUEUE)
        client.tick()
        ticks.append(client.queue_info(QUEUE).last_tick_id or 0)
    return ticks


def bench_pull(client: libpgq.Client, name: str, n: int) -> int:
    seen = 0
    with client.consumer(QUEUE, name, fetch_size=1000) as consumer:
        for batch in consumer.batches(timeout=0):
            with batch:
                for ev in batch:
                    ev.ev_id, ev.ev_type, ev.ev_data  # noqa: B018 - touch the fields
                    seen += 1
    return seen


def bench_worker(client: libpgq.Client, name: str, n: int) -> int:
    seen = [0]
    done = threading.Event()

    def handler(batch: libpgq.Batch) -> None:
        for ev in batch:
            ev.ev_id, ev.ev_type, ev.ev_data  # noqa: B018
            seen[0] += 1
        if seen[0] >= n:
            done.set()

    with client.worker(QUEUE, name, handler) as worker:
        if not done.wait(600):
            raise RuntimeError(f"worker saw only {seen[0]} of {n} events in 600 s")
        worker.stop()
    return seen[0]


def bench_skytools(dsn: str, name: str, n: int) -> int:
    import pgq

    seen = [0]

    class Bench(pgq.Consumer):  # type: ignore[misc]
        def process_batch(self, db: Any, batch_id: int, ev_list: Any) -> None:
            for ev in ev_list:
                ev.id, ev.type, ev.data  # noqa: B018
                seen[0] += 1

    with tempfile.TemporaryDirectory() as tmp:
        ini = os.path.join(tmp, "bench.ini")
        with open(ini, "w") as f:
            f.write(f"[bench]\njob_name = {name}\nqueue_name = {QUEUE}\n"
                    f"db = {dsn.replace('%', '%%')}\nuse_skylog = 0\n"
                    f"logfile = {tmp}/bench.log\npidfile = {tmp}/bench.pid\n")
        c = Bench("bench", "db", [ini, "-q"])
        while c.work():
            pass
        c.close_database("db")
    return seen[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server_dsn")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    dsn = make_db(args.server_dsn)
    try:
        with libpgq.connect(dsn) as client:
            client.install()
            client.create_queue(QUEUE)
            client.set_queue_config(QUEUE, "ticker_max_count", 10_000_000)
            contenders: Dict[str, Callable[[str], int]] = {
                "libpgq pull": lambda name: bench_pull(client, name, args.events),
            }
            try:
                _ = libpgq._ffi.lib().require("pgq_worker_start")
                contenders["libpgq worker"] = lambda name: bench_worker(client, name,
                                                                         args.events)
            except NotImplementedError:
                print("libpgq worker: skipped (this libpgq has no workers yet)")
            try:
                import pgq  # noqa: F401

                contenders["skytools"] = lambda name: bench_skytools(dsn, name, args.events)
            except ImportError:
                print("skytools: skipped (python3-pgq is not importable)")
            names = {label: f"c{i}" for i, label in enumerate(contenders)}
            for name in names.values():
                client.register_consumer(QUEUE, name)
            t0 = time.perf_counter()
            ticks = produce(client, args.events, args.batches, args.payload)
            print(f"backlog: {args.events} events x {args.payload} B in {len(ticks) - 1} "
                  f"batches, produced in {time.perf_counter() - t0:.2f}s "
                  f"(libpgq {libpgq.library_version()} at {libpgq.library_path()})")
            # Rounds interleave the contenders, so that a load change on a shared machine
            # hits them alike; the best round of each counts.
            # Wall time, and this process's CPU time (all its threads: Python, libpgq's
            # or psycopg2's C code), which is steadier than wall time on a busy machine;
            # the server's work is in neither.
            results: Dict[str, float] = {}
            cpu: Dict[str, float] = {}
            for _ in range(args.rounds):
                for label, fn in contenders.items():
                    client.register_consumer_at(QUEUE, names[label], ticks[0])
                    t, c = time.perf_counter(), time.process_time()
                    seen = fn(names[label])
                    dt, dc = time.perf_counter() - t, time.process_time() - c
                    if seen != args.events:
                        raise RuntimeError(f"{label} saw {seen} events, expected {args.events}")
                    results[label] = min(results.get(label, dt), dt)
                    cpu[label] = min(cpu.get(label, dc), dc)
            for label, best in results.items():
                print(f"{label:14s} best of {args.rounds}: {best:7.3f}s wall "
                      f"{args.events / best:9.0f} events/s | client CPU {cpu[label]:6.3f}s "
                      f"{cpu[label] / args.events * 1e6:5.2f} us/event")
            if "skytools" in results:
                for label, t in results.items():
                    if label != "skytools":
                        print(f"{label} vs skytools: {results['skytools'] / t:.2f}x wall, "
                              f"{cpu['skytools'] / cpu[label]:.2f}x client CPU")
    finally:
        drop_db(args.server_dsn, dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
