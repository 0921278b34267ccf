"""Callback workers (libpgq's threads call a Python function) and the ticker."""

from __future__ import annotations

import datetime
import threading
from typing import Any, List

import pytest

import libpgq
from conftest import cut, drain, wait_until

FAST = dict(ticker_max_lag=datetime.timedelta(milliseconds=50))


@pytest.fixture
def fast_queue(client: libpgq.Client) -> str:
    """Queue ``q`` (consumer ``w``) that a running ticker cuts within ~50 ms."""
    client.create_queue("q")
    client.configure("q", **FAST)
    client.register_consumer("q", "w")
    return "q"


def test_worker_runs_the_handler_on_its_threads(client: libpgq.Client,
                                                fast_queue: str) -> None:
    got: List[Any] = []
    threads = set()
    lock = threading.Lock()

    def handle(batch: libpgq.Batch) -> None:
        with lock:
            threads.add(threading.current_thread().ident)
            got.extend((batch.id, ev.ev_data) for ev in batch)

    with client.ticker(period=0.02) as ticker:
        with client.worker(fast_queue, "w", handle, fetch_size=10) as worker:
            client.send_many(fast_queue, [("t", str(i)) for i in range(25)])
            wait_until("25 events", lambda: len(got) >= 25)
            stats = wait_until("the stats to count them", lambda: (
                lambda s: s if s.events >= 25 else None)(worker.stats()))
            assert stats.batches >= 1 and stats.handler_errors == 0
        assert worker.closed
        tstats = ticker.stats()
        assert tstats.ticks >= 1 and 1 <= tstats.full_rounds <= tstats.rounds
    assert [d for _, d in got] == [str(i) for i in range(25)]
    assert threading.main_thread().ident not in threads
    # Everything was finished: nothing comes again.
    cut(client, fast_queue)
    with client.consumer(fast_queue, "w") as consumer:
        assert drain(consumer, timeout=5) == []


def test_handler_exception_stops_the_worker_and_keeps_the_batch(client: libpgq.Client,
                                                                fast_queue: str) -> None:
    client.send(fast_queue, "t", "poison")
    cut(client, fast_queue)
    calls = []

    def handle(batch: libpgq.Batch) -> None:
        for ev in batch:
            calls.append(ev.ev_data)
            raise KeyError(f"cannot handle {ev.ev_data}")

    worker = client.worker(fast_queue, "w", handle)
    with pytest.raises(libpgq.HandlerError) as ei:
        worker.run(timeout=30)
    assert isinstance(ei.value.__cause__, KeyError)
    assert "cannot handle poison" in str(ei.value)
    assert ei.value.status == libpgq.Status.HANDLER
    assert calls == ["poison"]
    assert worker.closed
    assert [type(e) for e in worker.errors] == [KeyError]
    # Not finished: the same event is there for the next consumer run.
    with client.consumer(fast_queue, "w") as consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == ["poison"]


def test_with_block_raises_the_handler_error(client: libpgq.Client, fast_queue: str) -> None:
    client.send(fast_queue, "t", "x")
    cut(client, fast_queue)

    def handle(batch: libpgq.Batch) -> None:
        raise RuntimeError("boom")

    with pytest.raises(libpgq.HandlerError) as ei:
        with client.worker(fast_queue, "w", handle) as worker:
            wait_until("the handler to fail", lambda: worker.errors)
    assert isinstance(ei.value.__cause__, RuntimeError)


def test_on_error_retry_delivers_the_batch_again(client: libpgq.Client,
                                                 fast_queue: str) -> None:
    client.send_many(fast_queue, [("t", "a"), ("t", "b")])
    cut(client, fast_queue)
    seen: List[List[str]] = []
    done = threading.Event()

    def handle(batch: libpgq.Batch) -> None:
        seen.append([ev.ev_data for ev in batch])
        if len(seen) == 1:
            raise ValueError("first time fails")
        done.set()

    with client.worker(fast_queue, "w", handle, on_error="retry",
                       retry_backoff=(0.05, 0.1)) as worker:
        worker.run(timeout=30, until=done)
        assert done.is_set()
    assert seen == [["a", "b"], ["a", "b"]]
    assert [type(e) for e in worker.errors] == [ValueError]


def test_event_retry_inside_a_worker(client: libpgq.Client, fast_queue: str) -> None:
    got: List[Any] = []
    done = threading.Event()

    def handle(batch: libpgq.Batch) -> None:
        for ev in batch:
            got.append((ev.ev_data, ev.ev_retry))
            if ev.ev_data == "again" and ev.ev_retry is None:
                ev.retry(0)
            if ev.ev_retry == 1:
                done.set()

    with client.ticker(period=0.02, retry_period=0.05):
        with client.worker(fast_queue, "w", handle) as worker:
            client.send_many(fast_queue, [("t", "again"), ("t", "once")])
            worker.run(timeout=30, until=done)
    assert got == [("again", None), ("once", None), ("again", 1)]


def test_worker_batch_rules(client: libpgq.Client, fast_queue: str) -> None:
    seen: List[Any] = []

    def handle(batch: libpgq.Batch) -> None:
        seen.append(batch.queue)
        with batch:  # harmless: the worker finishes it
            list(batch)
        try:
            batch.finish()
        except libpgq.InvalidStateError as e:
            seen.append(e)
        try:
            worker.join()
        except libpgq.WouldDeadlockError as e:
            seen.append(e)
        worker.stop()  # allowed from the handler; takes effect after it returns

    worker = client.worker(fast_queue, "w", handle)
    # The handler refers to `worker`: give it a batch only now.
    client.send(fast_queue, "t", "x")
    cut(client, fast_queue)
    worker.run(timeout=30)
    assert seen[0] == fast_queue
    assert isinstance(seen[1], libpgq.InvalidStateError)
    assert isinstance(seen[2], libpgq.WouldDeadlockError)
    assert worker.closed
    with client.consumer(fast_queue, "w") as consumer:
        assert drain(consumer, timeout=0) == []


def test_worker_bad_input(client: libpgq.Client, fast_queue: str, dsn: str) -> None:
    with pytest.raises(TypeError, match="callable"):
        client.worker(fast_queue, "w", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        client.worker(fast_queue, "w", print, on_error="ignore")
    with pytest.raises(ValueError, match="fetch_size"):
        client.worker(fast_queue, "w", print, fetch_size=0)
    with pytest.raises(libpgq.InvalidInputError):
        client.worker(fast_queue, "w", print, workers=2)  # needs a subconsumer
    w = client.worker(fast_queue, "w", print)
    w.close()
    w.close()
    with pytest.raises(libpgq.InvalidStateError):
        w.stats()
    w.stop()  # a no-op once closed
    closed = libpgq.connect(dsn)
    closed.close()
    with pytest.raises(libpgq.InvalidStateError):
        closed.worker(fast_queue, "w", print)
    with pytest.raises(libpgq.InvalidStateError):
        closed.ticker()


def test_ticker_cuts_batches_for_a_pull_consumer(client: libpgq.Client,
                                                 fast_queue: str) -> None:
    with client.ticker(period=0.02) as ticker:
        with client.consumer(fast_queue, "w") as consumer:
            client.send(fast_queue, "t", "ticked by the ticker")
            batch = consumer.next_batch(timeout=30)
            assert batch is not None
            with batch:
                assert [e.ev_data for e in batch] == ["ticked by the ticker"]
        stats = ticker.stats()
        assert stats.active == 1 and stats.ticks >= 1
        assert stats.last_tick_time is not None
    assert ticker.closed
    with pytest.raises(libpgq.InvalidStateError):
        ticker.stats()


def test_second_ticker_stands_by(client: libpgq.Client, fast_queue: str) -> None:
    with client.ticker(period=0.02, name="first") as first:
        wait_until("the first ticker to be active", lambda: first.stats().active == 1)
        with client.ticker(period=0.02, takeover_period=0.05, name="second") as second:
            wait_until("the second ticker to stand by", lambda: second.stats().standby == 1)
            assert first.stats().active == 1
            first.stop()
            first.join()
            wait_until("the second ticker to take over", lambda: second.stats().active == 1)


def test_long_handler_sees_the_worker_stopping(client: libpgq.Client,
                                               fast_queue: str) -> None:
    entered = threading.Event()
    saw_stop: List[bool] = []

    def handle(batch: libpgq.Batch) -> None:
        entered.set()
        saw_stop.append(batch.is_stopping)
        # A long job that checks now and then whether it should give up (bounded).
        wait_until("the worker to stop", lambda: batch.is_stopping, timeout=30)
        saw_stop.append(batch.is_stopping)
        raise InterruptedError("cut short: deliver this batch again later")

    worker = client.worker(fast_queue, "w", handle, on_error="retry")
    client.send(fast_queue, "t", "long job")
    cut(client, fast_queue)
    assert entered.wait(30)
    worker.stop()
    worker.join()
    assert saw_stop == [False, True]
    with client.consumer(fast_queue, "w") as consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == ["long job"]


def test_cooperative_worker_threads_share_the_batches(client: libpgq.Client,
                                                      fast_queue: str) -> None:
    for sub in ("s-0", "s-1"):  # registered up front, so they see every event from now on
        client.consumer(fast_queue, "w", subconsumer=sub, register=True).close()
    lock = threading.Lock()
    seen: List[Any] = []

    def handle(batch: libpgq.Batch) -> None:
        evs = [ev.ev_data for ev in batch]
        with lock:
            seen.extend((batch.subconsumer, batch.id, d) for d in evs)

    n = 40
    with client.ticker(period=0.02):
        with client.worker(fast_queue, "w", handle, workers=2, subconsumer="s") as worker:
            for i in range(n):
                client.send(fast_queue, "t", str(i))
                if i % 5 == 4:
                    client.force_tick(fast_queue)
            wait_until(f"{n} events", lambda: len(seen) >= n, timeout=60)
            assert worker.stats().threads >= 2  # the two workers (and a listener)
    datas = [d for _, _, d in seen]
    assert sorted(datas, key=int) == [str(i) for i in range(n)]  # each exactly once
    assert {s for s, _, _ in seen} <= {"s-0", "s-1"}


def test_handler_may_use_the_client(client: libpgq.Client, fast_queue: str) -> None:
    # A handler that forwards every event to another queue, in one transaction per batch:
    # libpgq is called from inside its own callback.
    client.create_queue("out")
    client.register_consumer("out", "reader")

    def forward(batch: libpgq.Batch) -> None:
        with client.transaction() as tx:
            tx.send_many("out", [("fwd", ev.ev_data) for ev in batch])

    with client.worker(fast_queue, "w", forward) as worker:
        client.send_many(fast_queue, [("t", str(i)) for i in range(10)])
        cut(client, fast_queue)
        # A handled batch means its forwarding transaction committed.
        wait_until("the batch to be handled", lambda: worker.stats().batches >= 1)
        worker.stop()
    cut(client, "out")
    with client.consumer("out", "reader") as consumer:
        assert [(e.ev_type, e.ev_data) for e in drain(consumer, timeout=5)] == [
            ("fwd", str(i)) for i in range(10)]


def test_ticker_eager_and_by_the_queue_rules(client: libpgq.Client) -> None:
    # The queue's own rules would tick only after 1000 events or an hour.
    client.create_queue("q")
    client.configure("q", ticker_max_count=1000, ticker_max_lag="1 hour",
                     ticker_idle_period="1 hour")
    client.register_consumer("q", "c")
    with client.consumer("q", "c") as consumer:
        # Eager (the default): one event is enough for a tick.
        with client.ticker(period=0.02, eager=True, eager_min_lag=0.01):
            client.send("q", "t", "eager")
            assert [e.ev_data for e in drain(consumer, timeout=30)] == ["eager"]
        # By the queue's rules, like pgqd: ticks once ticker_max_count events are there.
        client.configure("q", ticker_max_count=3)
        with client.ticker(period=0.02, eager=False):
            client.send_many("q", [("t", "a"), ("t", "b"), ("t", "c")])
            assert [e.ev_data for e in drain(consumer, timeout=30)] == ["a", "b", "c"]


def test_worker_reads_batches_ahead(client: libpgq.Client, queue: str) -> None:
    # A backlog of batches bigger than one fetch: the worker reads the next batch ahead
    # (libpgq's schema) and counts it; with read_ahead=False it does not. Every event once.
    client.register_consumer(queue, "off")
    for b in range(6):
        client.send_many(queue, [("t", f"{b}-{i}") for i in range(7)])
        cut(client, queue)
    for name, on in (("c", True), ("off", False)):
        got: List[Any] = []
        lock = threading.Lock()

        def handle(batch: libpgq.Batch) -> None:
            with lock:
                got.extend(ev.ev_data for ev in batch)

        with client.worker(queue, name, handle, fetch_size=3, read_ahead=on) as worker:
            stats = wait_until("the backlog", lambda: (
                lambda s: s if s.events >= 42 else None)(worker.stats()))
        assert sorted(got) == sorted(f"{b}-{i}" for b in range(6) for i in range(7))
        assert (stats.looked_ahead >= 1) if on else (stats.looked_ahead == 0), (name, stats)
