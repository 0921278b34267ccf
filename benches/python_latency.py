#!/usr/bin/python3
"""python3-pgq Consumer with default settings, measuring commit-to-handler latency, for the
libpgq benchmarks (benches/bench/runtime.rs).

    python_latency.py DSN QUEUE CONSUMER [LOOP_DELAY]

Every event's ev_data is the producer's clock (microseconds since the epoch) just before it
inserted the event; the handler records now - that for events of type `bench.latency`
(`bench.filler` events only keep the stream going). Stops after the event of type
`bench.stop` and prints one JSON line: count and the sorted latencies' p50/p99/max in
milliseconds. Left running without events it only idles (the idle benchmark stops it with
SIGTERM). LOOP_DELAY (seconds) overrides DBScript's default loop_delay for the hand-tuned
variant. Runs with Debian's system Python, which has python3-pgq.
"""

import json
import os
import sys
import tempfile
import time

import pgq


def main():
    dsn, queue, consumer = sys.argv[1:4]
    loop_delay = sys.argv[4] if len(sys.argv) > 4 else None
    lat = []

    class LatencyConsumer(pgq.Consumer):
        def process_batch(self, db, batch_id, ev_list):
            for ev in ev_list:
                now = time.time() * 1e6
                if ev.type == "bench.stop":
                    self.looping = 0
                if ev.type != "bench.latency":
                    continue
                lat.append((now - int(ev.data)) / 1000.0)

    workdir = tempfile.mkdtemp(prefix="pgq-bench-lat-")
    ini = os.path.join(workdir, "consumer.ini")
    with open(ini, "w") as f:
        # Nothing but what a consumer needs: every timing setting stays at its default
        # unless LOOP_DELAY is given.
        f.write("[bench_latency]\n")
        f.write(f"job_name = {consumer}\n")
        f.write(f"queue_name = {queue}\n")
        f.write("db = %s\n" % dsn.replace("%", "%%"))
        f.write("use_skylog = 0\n")
        if loop_delay is not None:
            f.write(f"loop_delay = {loop_delay}\n")
        f.write(f"logfile = {os.path.join(workdir, 'consumer.log')}\n")

    LatencyConsumer("bench_latency", "db", [ini, "-q"]).start()
    lat.sort()

    def pct(p):
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(len(lat) * p))]

    print(json.dumps({"count": len(lat), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": lat[-1] if lat else 0.0}), flush=True)


if __name__ == "__main__":
    main()
