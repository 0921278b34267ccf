#!/usr/bin/python3
"""No-op pull consumer over libpgq's Python binding (bindings/python), for the benchmarks
(benches/bench/consume.rs).

    python_libpgq_consumer.py DSN QUEUE CONSUMER FETCH_SIZE

Drains the consumer's backlog touching each event's id, type and data (as
python_consumer.py does with python3-pgq), then prints one JSON line: events, batches, secs,
cpu_secs, peak_rss_kib. It then keeps its connections open until stdin is closed, so that the
benchmark can read the CPU time of its server backends. The library comes from LIBPGQ_PATH
(scripts/bench.sh points it at the release build).
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings",
                                "python", "src"))
import libpgq  # noqa: E402


def main():
    dsn, queue, consumer, fetch = sys.argv[1:5]
    events = batches = 0
    t0 = time.monotonic()
    # Two connections: batches() reads the next batch ahead on the second.
    client = libpgq.Client(dsn, pool_size=2)
    with client.consumer(queue, consumer, fetch_size=int(fetch)) as c:
        # The body leaves each batch open: batches() finishes it and takes the next one in
        # one call (which is what lets the next one be read ahead).
        for batch in c.batches(timeout=0):
            for ev in batch:
                ev.id, ev.type, ev.data  # noqa: B018 - touch the fields
                events += 1
            batches += 1
        secs = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({
            "events": events,
            "batches": batches,
            "secs": secs,
            "cpu_secs": ru.ru_utime + ru.ru_stime,
            "peak_rss_kib": ru.ru_maxrss,
        }), flush=True)
        sys.stdin.read()
    client.close()


if __name__ == "__main__":
    main()
