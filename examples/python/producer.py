#!/usr/bin/env python3
"""Produce events with libpgq: one at a time, in bulk, and inside your own transaction.

    python3 examples/python/producer.py DSN [COUNT]

Installs PGQ into the database (idempotent), creates the queue `orders` and registers the
consumer `mailer` (see consumer.py and worker.py), then sends COUNT (default 10) events
each way and prints their ids.
"""

import json
import os
import sys

import libpgq


def main() -> int:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGQ_DSN", "")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if not dsn:
        print(__doc__, file=sys.stderr)
        return 2

    with libpgq.connect(dsn) as client:
        client.install()
        client.create_queue("orders")
        client.register_consumer("orders", "mailer")

        # One event, in its own transaction: ev_type, ev_data, and up to four extras.
        for i in range(count):
            ev_id = client.send("orders", "order.created", json.dumps({"id": i}),
                                extra1="shop-1")
            print(f"sent #{ev_id} order.created id={i}")

        # Many events in one transaction (COPY): all of them or none.
        n = client.send_many("orders", [
            libpgq.NewEvent("order.line", json.dumps({"order": i, "sku": f"sku-{i}"}))
            for i in range(count)
        ])
        print(f"sent {n} order.line events in one transaction")

        # Events in a transaction together with your own SQL: they are published exactly
        # when it commits, and never if it rolls back.
        with client.transaction() as tx:
            tx.execute("create table if not exists example_orders (id int primary key)")
            tx.execute(f"insert into example_orders select generate_series(0, {count - 1}) "
                       "on conflict do nothing")
            ev_id = tx.send("orders", "orders.stored", str(count))
        print(f"sent #{ev_id} orders.stored with the transaction that stored the orders")

        try:
            with client.transaction() as tx:
                tx.send("orders", "never.published", "rolled back")
                raise RuntimeError("something went wrong")
        except RuntimeError:
            print("rolled back a transaction: its event is never delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
