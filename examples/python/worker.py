#!/usr/bin/env python3
"""A callback worker: libpgq's threads fetch batches and call your function, a ticker
thread cuts the batches (no pgqd needed).

    python3 examples/python/worker.py DSN [--count N]

Consumes the queue `orders` as consumer `mailer` (run producer.py first, and again while
this runs). Without --count it runs until Ctrl-C, which stops it cleanly: the batch in hand
is finished or left for redelivery, never half-done. With --count it stops by itself once
it has seen N events.
"""

import argparse
import datetime
import os
import sys
import threading

import libpgq


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dsn", nargs="?", default=os.environ.get("PGQ_DSN", ""))
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    args = p.parse_args()
    if not args.dsn:
        p.print_usage(sys.stderr)
        return 2

    with libpgq.connect(args.dsn) as client:
        client.install()
        client.create_queue("orders")
        client.register_consumer("orders", "mailer")
        # Cut batches quickly: at most 100 ms after an event (PGQ's default is 3 s).
        client.configure("orders", ticker_max_lag=datetime.timedelta(milliseconds=100))

        seen = 0
        lock = threading.Lock()
        enough = threading.Event()

        def handle(batch: libpgq.Batch) -> None:
            # Runs on a libpgq worker thread, once per batch. Returning normally finishes
            # the batch; raising leaves it to be delivered again (and stops this worker).
            nonlocal seen
            for ev in batch:
                print(f"batch {batch.id}: #{ev.ev_id} {ev.ev_type} {ev.ev_data}", flush=True)
                with lock:
                    seen += 1
                    if args.count and seen >= args.count:
                        enough.set()  # run() below stops the worker after this batch

        with client.ticker(period=0.02):
            with client.worker("orders", "mailer", handle) as worker:
                print("worker running (Ctrl-C stops it)", flush=True)
                worker.run(until=enough)  # or Ctrl-C, stop(), or a handler error
        print(f"stopped cleanly after {seen} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
