"""Blocking calls release the GIL; a client is shared between threads."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import libpgq
from conftest import cut, drain, run_in_thread, sql


def test_other_threads_run_while_one_waits_for_a_batch(client: libpgq.Client,
                                                      queue: str) -> None:
    waiting = threading.Event()

    def consume() -> list:
        with client.consumer(queue, "c") as consumer:
            waiting.set()
            batch = consumer.next_batch(timeout=30)
            assert batch is not None
            with batch:
                return [e.ev_data for e in batch]

    box = run_in_thread(consume)
    assert waiting.wait(10)
    # This thread runs Python (and calls libpgq) while the other is blocked in
    # pgq_consumer_next_batch: with the GIL held there, none of this could happen and the
    # consumer would time out empty-handed.
    counted = sum(i for i in range(200_000))
    assert counted > 0
    client.send(queue, "t", "woke you")
    cut(client, queue)
    box["thread"].join(30)
    assert not box["thread"].is_alive()
    assert "error" not in box, box.get("error")
    assert box["result"] == ["woke you"]


def test_one_client_many_producer_threads(client: libpgq.Client, queue: str) -> None:
    n_threads, per_thread = 4, 50

    def produce(k: int) -> None:
        for i in range(per_thread):
            client.send(queue, "t", f"{k}-{i}")

    boxes = [run_in_thread(lambda k=k: produce(k)) for k in range(n_threads)]
    for b in boxes:
        b["thread"].join(60)
        assert "error" not in b, b.get("error")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        got = drain(consumer, timeout=5)
    assert sorted(e.ev_data for e in got) == sorted(
        f"{k}-{i}" for k in range(n_threads) for i in range(per_thread))


def test_library_logs_reach_python_logging(client: libpgq.Client, queue: str, dsn: str,
                                          caplog: Any) -> None:
    # The library warns when it cannot roll back an unfinished batch: break the batch's
    # connection under it and close the batch.
    client.send(queue, "t", "x")
    cut(client, queue)
    libpgq.forward_logs(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="libpgq"):
            with client.consumer(queue, "c") as consumer:
                batch = consumer.next_batch(timeout=5)
                assert batch is not None
                killed = sql(dsn, "select count(pg_terminate_backend(pid)) from "
                                  "pg_stat_activity where datname = current_database() and "
                                  "state = 'idle in transaction' and pid <> pg_backend_pid()")
                assert killed >= 1
                batch.close()
            records = [r for r in caplog.records if r.name.startswith("libpgq.")]
            assert any(r.levelno == logging.WARNING and "rolling back unfinished batch"
                       in r.getMessage() for r in records), [r.getMessage() for r in records]
    finally:
        libpgq.forward_logs(None)
    with pytest.raises(TypeError):
        libpgq.forward_logs("debug")  # type: ignore[arg-type]
