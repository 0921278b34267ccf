"""Producing and pull-consuming: fields, bulk, transactions, batches, retries."""

from __future__ import annotations

import datetime

import pytest

import libpgq
from conftest import cut, drain, sql


def test_send_and_consume_every_field(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    c.register_consumer("q", "c")
    t0 = datetime.datetime.now(datetime.timezone.utc)
    id1 = c.send("q", "order.created", '{"id": 42}', "e1", None, "", "ü€😀\ttab\nnl")
    id2 = c.send("q", None)
    id3 = c.send("q", type="kw", data="d", extra4="x")
    assert id1 < id2 < id3
    cut(c, "q")
    with c.consumer("q", "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        with batch:
            evs = list(batch)
        assert batch.finished and batch.closed
    assert [e.ev_id for e in evs] == [id1, id2, id3]
    e1, e2, e3 = evs
    assert (e1.ev_type, e1.ev_data, e1.ev_extra1, e1.ev_extra2, e1.ev_extra3, e1.ev_extra4) \
        == ("order.created", '{"id": 42}', "e1", None, "", "ü€😀\ttab\nnl")
    # SkyTools' short names answer too.
    assert (e1.id, e1.type, e1.data, e1.extra1, e1.extra2, e1.extra3, e1.extra4) == (
        e1.ev_id, e1.ev_type, e1.ev_data, e1.ev_extra1, e1.ev_extra2, e1.ev_extra3,
        e1.ev_extra4)
    assert e1.txid == e1.ev_txid and e1.time == e1.ev_time
    assert e1["ev_data"] == e1["data"] == e1.get("data") == '{"id": 42}'
    assert e1["ev_retry"] is None and e1.get("nope", 7) == 7
    assert e1.keys()[:3] == ["ev_id", "ev_time", "ev_txid"]
    with pytest.raises(KeyError):
        e1["nope"]
    assert (e2.ev_type, e2.ev_data, e2.ev_extra1, e2.ev_extra4) == (None, None, None, None)
    assert (e3.ev_type, e3.ev_data, e3.ev_extra4) == ("kw", "d", "x")
    for e in evs:
        assert e.ev_retry is None
        assert e.ev_time.tzinfo is not None
        assert abs((e.ev_time - t0).total_seconds()) < 60
    # One send = one transaction.
    assert len({e.ev_txid for e in evs}) == 3
    # The events are copies: still readable after the batch is finished.
    assert repr(e1).startswith(f"<Event id={id1} type='order.created'")


def test_ev_time_is_exact(client: libpgq.Client, queue: str, dsn: str) -> None:
    ev_id = client.send(queue, "t", "d")
    cut(client, queue)
    stored = sql(dsn, "select extract(epoch from ev_time)::numeric * 1000000 from pgq.event_1 "
                      "where ev_id = %s", [ev_id])
    with client.consumer(queue, "c") as consumer:
        (ev,) = drain(consumer, timeout=5)
    us = (ev.ev_time - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) \
        // datetime.timedelta(microseconds=1)
    assert us == int(stored)


def test_send_many_all_forms_in_one_transaction(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    c.register_consumer("q", "c")
    events = [
        libpgq.NewEvent("a", "1", extra2="x"),
        ("b", "2"),
        ("c",),
        ["d", None, "e1", "e2", "e3", "e4"],
        {"type": "e", "data": "5", "extra3": "z"},
        {"ev_type": "f", "ev_data": "tab\tnl\nbs\\quote'"},
        (b"bytes-type", b"bytes-data"),
        ("", "", "", None, "", "ü€😀"),
    ]
    assert c.send_many("q", events) == len(events)
    assert c.send_many("q", []) == 0
    cut(c, "q")
    with c.consumer("q", "c") as consumer:
        evs = drain(consumer, timeout=5)
    got = [(e.ev_type, e.ev_data, e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4)
           for e in evs]
    assert got == [
        ("a", "1", None, "x", None, None),
        ("b", "2", None, None, None, None),
        ("c", None, None, None, None, None),
        ("d", None, "e1", "e2", "e3", "e4"),
        ("e", "5", None, None, "z", None),
        ("f", "tab\tnl\nbs\\quote'", None, None, None, None),
        ("bytes-type", "bytes-data", None, None, None, None),
        ("", "", "", None, "", "ü€😀"),
    ]
    assert len({e.ev_txid for e in evs}) == 1


def test_send_many_large(client: libpgq.Client, queue: str) -> None:
    n = 5000
    client.send_many(queue, ((f"t{i % 7}", f"data-{i}") for i in range(n)))
    cut(client, queue)
    with client.consumer(queue, "c", fetch_size=300) as consumer:
        evs = drain(consumer, timeout=5)
    assert [e.ev_data for e in evs] == [f"data-{i}" for i in range(n)]


def test_transaction_commits_events_and_sql_together(any_client: libpgq.Client,
                                                    dsn: str) -> None:
    c = any_client
    c.create_queue("q")
    c.register_consumer("q", "c")
    sql(dsn, "create table orders (id int primary key, state text)")
    with c.transaction() as tx:
        tx.execute("insert into orders values (1, 'new')")
        a = tx.send("q", "order.created", "1")
        tx.send_many("q", [("order.line", "1/1"), ("order.line", "1/2")])
        # Not visible to others before commit.
        assert sql(dsn, "select count(*) from orders") == 0
    assert tx.closed
    assert sql(dsn, "select state from orders where id = 1") == "new"

    with pytest.raises(RuntimeError, match="boom"):
        with c.transaction() as tx:
            tx.execute("insert into orders values (2, 'new')")
            tx.send("q", "order.created", "2")
            raise RuntimeError("boom")
    assert sql(dsn, "select count(*) from orders") == 1

    tx = c.transaction()
    tx.send("q", "explicit", "rolled back")
    tx.rollback()
    tx.rollback()  # idempotent
    with pytest.raises(libpgq.InvalidStateError):
        tx.send("q", "t")

    tx = c.transaction()
    tx.send("q", "explicit", "committed")
    tx.commit()
    with pytest.raises(libpgq.InvalidStateError):
        tx.commit()

    cut(c, "q")
    with c.consumer("q", "c") as consumer:
        evs = drain(consumer, timeout=5)
    assert [(e.ev_type, e.ev_data) for e in evs] == [
        ("order.created", "1"), ("order.line", "1/1"), ("order.line", "1/2"),
        ("explicit", "committed")]
    assert evs[0].ev_id == a
    assert evs[0].ev_txid == evs[1].ev_txid == evs[2].ev_txid != evs[3].ev_txid


def test_transaction_sql_error_rolls_back(client: libpgq.Client, queue: str,
                                          dsn: str) -> None:
    with pytest.raises(libpgq.DatabaseError) as ei:
        with client.transaction() as tx:
            tx.send(queue, "t", "lost")
            tx.execute("select * from no_such_table")
    assert ei.value.sqlstate == "42P01"
    client.send(queue, "t", "kept")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == ["kept"]


def test_batch_exception_leaves_it_for_redelivery(client: libpgq.Client, queue: str) -> None:
    client.send_many(queue, [("t", str(i)) for i in range(3)])
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        first_id = batch.id
        with pytest.raises(ValueError, match="handler failed"):
            with batch:
                for ev in batch:
                    if ev.ev_data == "1":
                        raise ValueError("handler failed")
        assert batch.closed and not batch.finished
        again = consumer.next_batch(timeout=5)
        assert again is not None
        assert again.id == first_id
        with again:
            assert [e.ev_data for e in again] == ["0", "1", "2"]
        assert consumer.next_batch(timeout=0) is None


def test_batch_attributes(client: libpgq.Client, queue: str) -> None:
    client.send(queue, "t", "x")
    t0 = datetime.datetime.now(datetime.timezone.utc)
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        with batch:
            assert (batch.queue, batch.consumer, batch.subconsumer) == (queue, "c", None)
            assert abs((batch.tick_time - t0).total_seconds()) < 60
            assert batch.prev_tick_id is not None and batch.prev_tick_id < batch.tick_id
            assert batch.is_stopping is False
            assert repr(batch) == f"<Batch id={batch.id} tick_id={batch.tick_id} open>"
        assert repr(batch).endswith("finished>")


def test_batches_loop(client: libpgq.Client, queue: str) -> None:
    for i in range(3):
        client.send(queue, "t", str(i))
        cut(client, queue)
    seen = []
    batch_ids = []
    with client.consumer(queue, "c") as consumer:
        for batch in consumer.batches(timeout=0.5):
            batch_ids.append(batch.id)
            # Without `with`: finished when the loop asks for the next one.
            seen.extend(e.ev_data for e in batch)
        assert consumer.next_batch(timeout=0) is None
    assert seen == ["0", "1", "2"]
    assert len(batch_ids) == len(set(batch_ids)) >= 3


def test_break_out_of_batches_leaves_the_batch(client: libpgq.Client, queue: str) -> None:
    client.send(queue, "t", "x")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        gen = consumer.batches(timeout=1)
        for batch in gen:
            first = batch.id
            break
        gen.close()  # what the garbage collector does to an abandoned loop
        batch2 = consumer.next_batch(timeout=5)
        assert batch2 is not None and batch2.id == first
        batch2.finish()


def test_empty_batches_are_finished_too(client: libpgq.Client, queue: str) -> None:
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        with batch:
            assert list(batch) == []
        assert batch.finished


def test_retry_brings_an_event_back(client: libpgq.Client, queue: str, dsn: str) -> None:
    a = client.send(queue, "t", "again")
    b = client.send(queue, "t", "once")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        with batch:
            for ev in batch:
                if ev.ev_id == a:
                    ev.retry(0)
        with pytest.raises(libpgq.InvalidStateError):
            ev.retry(0)  # the batch is over
        # The retry queue is moved back by maintenance (here by hand, like the ticker does).
        assert sql(dsn, "select pgq.maint_retry_events()") == 1
        cut(client, queue)
        evs = drain(consumer, timeout=5)
    assert [(e.ev_id, e.ev_data, e.ev_retry) for e in evs] == [(a, "again", 1)]
    assert b != a


def test_retry_through_the_batch_and_skytools_name(client: libpgq.Client, queue: str,
                                                   dsn: str) -> None:
    ids = [client.send(queue, "t", str(i)) for i in range(3)]
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        with batch:
            evs = batch.events()
            batch.retry(ids[0], datetime.timedelta(0))
            evs[1].tag_retry(0)
        assert sql(dsn, "select pgq.maint_retry_events()") == 2
        cut(client, queue)
        assert sorted(e.ev_id for e in drain(consumer, timeout=5)) == ids[:2]


def test_unfinished_batch_is_released_on_close(client: libpgq.Client, queue: str) -> None:
    client.send(queue, "t", "x")
    cut(client, queue)
    consumer = client.consumer(queue, "c")
    batch = consumer.next_batch(timeout=5)
    assert batch is not None
    consumer.close()
    assert batch.closed
    with client.consumer(queue, "c") as again:
        assert [e.ev_data for e in drain(again, timeout=5)] == ["x"]


def test_consumer_register_and_independence(client: libpgq.Client) -> None:
    client.create_queue("q")
    a = client.consumer("q", "a", register=True)
    with client.consumer("q", "b") as b:
        assert b.register() is True
        assert b.register() is False
        client.send("q", "t", "shared")
        cut(client, "q")
        assert [e.ev_data for e in drain(a, timeout=5)] == ["shared"]
        assert [e.ev_data for e in drain(b, timeout=5)] == ["shared"]
    a.close()
    a.close()


def test_next_batch_timeout_zero_and_waiting(client: libpgq.Client, queue: str) -> None:
    with client.consumer(queue, "c") as consumer:
        assert consumer.next_batch(timeout=0) is None
        assert consumer.next_batch(timeout=0.1) is None
        assert list(consumer.batches(timeout=0)) == []


def test_retry_of_an_event_not_in_the_batch_fails_the_finish(client: libpgq.Client,
                                                             queue: str) -> None:
    client.send(queue, "t", "x")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        list(batch)
        batch.retry(10**12, 0)  # tagged now, applied by finish
        with pytest.raises(libpgq.NoSuchEventError):
            batch.finish()
        assert batch.closed and not batch.finished
        # Nothing was committed: the same batch comes again.
        again = consumer.next_batch(timeout=5)
        assert again is not None and again.id == batch.id
        with again:
            assert [e.ev_data for e in again] == ["x"]


def test_both_ways_of_reading_events_agree(client: libpgq.Client) -> None:
    # The binding reads events with pgq_batch_next_event_fields (one call per event) when
    # the library has it, else with the ten accessors: both must give the same events.
    from libpgq import _ffi

    lib = _ffi.lib()
    assert lib.pgq_batch_next_event_fields is not None
    client.create_queue("q")
    client.register_consumer("q", "fields")
    client.register_consumer("q", "accessors")
    client.send_many("q", [("t", "d", "e1", None, "", "ü€😀"), (None,), ("", "x" * 100_000)])
    client.send("q", "single", None, None, None, None, "last")
    cut(client, "q")

    def read(name: str, fast: bool) -> list:
        with client.consumer("q", name) as consumer:
            batch = consumer.next_batch(timeout=5)
            assert batch is not None
            with batch:
                it = batch._iter_fields(lib) if fast else batch._iter_accessors(lib)
                return [(e.ev_id, e.ev_time_us, e.ev_txid, e.ev_retry, e.ev_type, e.ev_data,
                         e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4) for e in it]

    fast, slow = read("fields", True), read("accessors", False)
    assert fast == slow
    assert [r[4:] for r in fast] == [
        ("t", "d", "e1", None, "", "ü€😀"), (None, None, None, None, None, None),
        ("", "x" * 100_000, None, None, None, None), ("single", None, None, None, None, "last")]


def test_batches_loop_takes_ready_batches_with_the_finish(client: libpgq.Client,
                                                          queue: str) -> None:
    # Batches that are ready one after another come through pgq_batch_finish_next (which
    # this library has): every event comes once, in order.
    assert libpgq._ffi.lib().pgq_batch_finish_next is not None
    for i in range(4):
        client.send(queue, "t", str(i))
        cut(client, queue)
    seen = []
    with client.consumer(queue, "c") as consumer:
        gen = consumer.batches(timeout=0.5)
        for batch in gen:
            seen.extend(e.ev_data for e in batch)
        assert consumer.next_batch(timeout=0) is None
    assert seen == ["0", "1", "2", "3"]


def test_batches_loop_reads_the_next_batch_ahead(client: libpgq.Client, queue: str) -> None:
    # Batches bigger than one fetch, taken through batches(): from the third on, each was
    # read ahead while the one before was handled (libpgq's schema); with read_ahead=False
    # none is. Every event comes once, in order, either way.
    for name in ("ahead", "plain"):
        client.register_consumer(queue, name)
    for b in range(5):
        client.send_many(queue, [("t", f"{b}-{i}") for i in range(7)])
        cut(client, queue)
    want = [f"{b}-{i}" for b in range(5) for i in range(7)]
    for name, on in (("ahead", True), ("plain", False)):
        seen, looked = [], []
        with client.consumer(queue, name, fetch_size=3, read_ahead=on) as consumer:
            for batch in consumer.batches(timeout=0):
                looked.append(batch.looked_ahead)
                seen.extend(e.ev_data for e in batch)
        assert seen == want
        assert looked == ([False, False, True, True, True] if on else [False] * 5), name


def test_finish_and_next_by_hand(client: libpgq.Client, queue: str) -> None:
    # The public finish_and_next: a manual loop sees every event once, in order; a batch
    # that is already closed is refused without touching the consumer.
    for i in range(3):
        client.send(queue, "t", str(i))
        cut(client, queue)
    seen = []
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=0)
        while batch is not None:
            seen.extend(e.ev_data for e in batch)
            batch = consumer.finish_and_next(batch)
        assert consumer.next_batch(timeout=0) is None
        client.send(queue, "t", "late")
        cut(client, queue)
        late = consumer.next_batch(timeout=0)
        assert late is not None
        late.close()
        with pytest.raises(libpgq.InvalidStateError):
            consumer.finish_and_next(late)
        again = consumer.next_batch(timeout=0)
        assert again is not None and again.id == late.id
        assert [e.ev_data for e in again] == ["late"]
        again.finish()
    assert seen == ["0", "1", "2"]
