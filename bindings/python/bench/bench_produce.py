#!/usr/bin/env python3
"""Benchmark: producing, libpgq's Python binding vs SkyTools' producer helpers.

    python bench_produce.py SERVER_DSN [--single N] [--bulk N] [--payload BYTES]

In a database of its own (created and dropped on the server SERVER_DSN names):

  single   N events (default 2000), each in its own transaction:
           libpgq Client.send  vs  pgq.insert_event + commit (psycopg2)
  bulk     N events (default 100000) in one transaction:
           libpgq Client.send_many (COPY)  vs  pgq.bulk_insert_events (COPY via skytools)

Prints the best of 3 interleaved rounds, wall time and this process's CPU time.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Callable, Dict

import libpgq
from bench_consume import QUEUE, drop_db, make_db


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server_dsn")
    p.add_argument("--single", type=int, default=2000)
    p.add_argument("--bulk", type=int, default=100_000)
    p.add_argument("--payload", type=int, default=100)
    args = p.parse_args()

    import pgq
    import psycopg2

    dsn = make_db(args.server_dsn)
    data = "x" * args.payload
    try:
        with libpgq.connect(dsn) as client:
            client.install()
            client.create_queue(QUEUE)
            conn = psycopg2.connect(dsn)
            cur = conn.cursor()

            def lib_single() -> None:
                for i in range(args.single):
                    client.send(QUEUE, "bench", data, str(i))

            def sky_single() -> None:
                for i in range(args.single):
                    pgq.insert_event(cur, QUEUE, "bench", data, str(i))
                    conn.commit()

            def lib_bulk() -> None:
                client.send_many(QUEUE, (("bench", data, str(i)) for i in range(args.bulk)))

            def sky_bulk() -> None:
                now = datetime.datetime.now(datetime.timezone.utc)
                rows = [[now, "bench", data, str(i)] for i in range(args.bulk)]
                pgq.bulk_insert_events(cur, rows, ["time", "type", "data", "extra1"], QUEUE)
                conn.commit()

            cases: Dict[str, Dict[str, Callable[[], None]]] = {
                f"single x{args.single}": {"libpgq": lib_single, "skytools": sky_single},
                f"bulk x{args.bulk}": {"libpgq": lib_bulk, "skytools": sky_bulk},
            }
            for case, contenders in cases.items():
                wall: Dict[str, float] = {}
                cpu: Dict[str, float] = {}
                n = args.single if case.startswith("single") else args.bulk
                for _ in range(3):
                    for label, fn in contenders.items():
                        t, c = time.perf_counter(), time.process_time()
                        fn()
                        dt, dc = time.perf_counter() - t, time.process_time() - c
                        wall[label] = min(wall.get(label, dt), dt)
                        cpu[label] = min(cpu.get(label, dc), dc)
                for label in contenders:
                    print(f"{case:14s} {label:9s} {wall[label]:7.3f}s wall "
                          f"{n / wall[label]:9.0f} events/s | client CPU "
                          f"{cpu[label] / n * 1e6:6.2f} us/event")
                print(f"{case:14s} libpgq vs skytools: {wall['skytools'] / wall['libpgq']:.2f}x "
                      f"wall, {cpu['skytools'] / cpu['libpgq']:.2f}x client CPU")
            conn.close()
    finally:
        drop_db(args.server_dsn, dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
