#!/usr/bin/env python3
"""Consume events with libpgq's pull consumer: batches, events, retries.

    python3 examples/python/consumer.py DSN [IDLE_SECONDS]

Reads the queue `orders` as consumer `mailer` (run producer.py first) until no batch has
come for IDLE_SECONDS (default 2), printing every event. Each batch is a context manager:
finished when the block ends normally, delivered again when it raises.
"""

import os
import sys

import libpgq


def main() -> int:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGQ_DSN", "")
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    if not dsn:
        print(__doc__, file=sys.stderr)
        return 2

    with libpgq.connect(dsn) as client:
        # A batch is what committed between two ticks. Cut one now, so that everything
        # produced so far can be read (in production a ticker thread, client.ticker(), or
        # pgqd does this continuously).
        client.force_tick("orders")
        client.tick()

        events = batches = 0
        with client.consumer("orders", "mailer") as consumer:
            for batch in consumer.batches(timeout=idle):
                with batch:
                    batches += 1
                    for ev in batch:
                        events += 1
                        retry = "" if ev.ev_retry is None else f" (retry {ev.ev_retry})"
                        print(f"#{ev.ev_id} {ev.ev_type} {ev.ev_data} "
                              f"at {ev.ev_time:%H:%M:%S}{retry}")
                        if ev.ev_type == "needs.retry" and ev.ev_retry is None:
                            ev.retry(30)  # this one comes back in 30 s, to this consumer
        print(f"{events} events in {batches} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
