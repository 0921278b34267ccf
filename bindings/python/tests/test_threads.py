"""Blocking calls release the GIL; a client is shared between threads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List

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


def test_the_gil_is_released_inside_one_blocking_call(client: libpgq.Client,
                                                      queue: str) -> None:
    # Consumer.next_batch waits in slices, so the test above would pass even if each slice
    # held the GIL. Here one single C call waits 1.5 s (no batch is there), and the main
    # thread must run Python code in the middle of it.
    from ctypes import byref, c_void_p

    from libpgq import _ffi

    lib = _ffi.lib()
    times: Dict[str, float] = {}
    entered = threading.Event()

    with client.consumer(queue, "c") as consumer:
        def wait_in_c() -> int:
            out, err = c_void_p(), c_void_p()
            entered.set()
            times["enter"] = time.monotonic()
            st = lib.pgq_consumer_next_batch(consumer._ptr(), 1500, byref(out), byref(err))
            times["exit"] = time.monotonic()
            return int(st)

        box = run_in_thread(wait_in_c)
        assert entered.wait(10)
        # Busy Python work, sampled once a millisecond (bounded: the call lasts 1.5 s).
        stamps = [time.monotonic()]
        while box["thread"].is_alive() and len(stamps) < 100_000:
            now = time.monotonic()
            if now - stamps[-1] >= 0.001:
                stamps.append(now)
        box["thread"].join(10)
    assert box.get("result") == 0, box.get("error")
    enter, exit_ = times["enter"], times["exit"]
    assert exit_ - enter >= 1.0
    inside = [t for t in stamps if enter + 0.3 < t < exit_ - 0.3]
    assert inside, "the main thread did not run while the other waited inside libpgq"


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


def test_closing_a_client_other_threads_use(client: libpgq.Client, queue: str,
                                             dsn: str) -> None:
    shared = libpgq.connect(dsn)
    sent: List[int] = []
    started = threading.Event()

    def produce() -> str:
        for i in range(100_000):  # bounded; ends at the close below long before that
            try:
                sent.append(shared.send(queue, "t", str(i)))
            except libpgq.InvalidStateError as e:
                return str(e)
            started.set()
        return "never closed"

    box = run_in_thread(produce)
    assert started.wait(30)
    shared.close()  # waits for the send in flight, then frees
    box["thread"].join(30)
    assert box.get("result") == "this client is closed", box
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        assert [e.ev_id for e in drain(consumer, timeout=5)] == sent
