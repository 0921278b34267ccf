"""Bad input: wrong types, closed handles, unknown names, text that is not UTF-8.

Every case gets a clear exception, and nothing already sent is lost."""

from __future__ import annotations

import pytest

import libpgq
from conftest import cut, drain


def test_wrong_types(client: libpgq.Client, queue: str) -> None:
    with pytest.raises(TypeError, match="queue must be str or bytes, not int"):
        client.send(1, "t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be str or bytes, not dict"):
        client.send(queue, "t", {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="extra3"):
        client.send(queue, "t", "d", None, None, 3.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event 1 must be a NewEvent, tuple or mapping"):
        client.send_many(queue, [("ok",), 42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="event 0: a tuple needs 1 to 6 items"):
        client.send_many(queue, [tuple("abcdefg")])
    with pytest.raises(ValueError, match="unknown field"):
        client.send_many(queue, [{"type": "t", "payload": "x"}])
    with pytest.raises(TypeError):
        client.consumer(queue, None)  # type: ignore[arg-type]
    with client.consumer(queue, "c") as consumer:
        with pytest.raises(TypeError, match="timeout"):
            consumer.next_batch(timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            consumer.next_batch(timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            consumer.next_batch(timeout=float("nan"))
        with pytest.raises(ValueError, match="too large"):
            consumer.next_batch(timeout=float("inf"))
        with pytest.raises(ValueError, match="fetch_size"):
            consumer.set_fetch_size(0)
        with pytest.raises(TypeError):
            consumer.set_fetch_size("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        libpgq.connect(None)  # type: ignore[arg-type]
    # Nothing above sent anything, and the client still works.
    client.send(queue, "t", "after")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == ["after"]


def test_non_utf8_text_is_refused(client: libpgq.Client, queue: str) -> None:
    client.send(queue, "t", "before")
    # bytes that are not UTF-8: libpgq itself refuses them.
    with pytest.raises(libpgq.InvalidUtf8Error) as ei:
        client.send(queue, "t", b"\xff\xfe not utf-8")
    assert ei.value.status == libpgq.Status.INVALID_UTF8
    assert isinstance(ei.value, ValueError)
    with pytest.raises(libpgq.InvalidUtf8Error):
        client.send_many(queue, [("t", "fine"), ("t", b"\xc3")])
    with pytest.raises(libpgq.InvalidUtf8Error):
        client.create_queue(b"\x80bad")
    # str with a lone surrogate cannot be UTF-8 at all.
    with pytest.raises(libpgq.InvalidUtf8Error, match="not valid UTF-8"):
        client.send(queue, "t", "half a pair: \ud800")
    with pytest.raises(libpgq.InvalidUtf8Error, match="event 1: extra2"):
        client.send_many(queue, [("t", "fine"), ("t", "x", None, "\udc80")])
    with pytest.raises(libpgq.InvalidUtf8Error):
        with client.transaction() as tx:
            tx.send(queue, "t", "in tx")
            tx.send(queue, "\udcff")
    # A NUL byte is valid UTF-8 but PostgreSQL text cannot hold it.
    with pytest.raises(libpgq.PgqError):
        client.send(queue, "t", "nul\x00inside")
    client.send(queue, "t", "after")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == ["before", "after"]


def test_unknown_queue_and_consumer(client: libpgq.Client, queue: str) -> None:
    with pytest.raises(libpgq.NoSuchQueueError) as ei:
        client.send("nope", "t", "d")
    assert isinstance(ei.value, LookupError)
    assert ei.value.message
    with pytest.raises(libpgq.NoSuchQueueError):
        client.send_many("nope", [("t",)])
    with pytest.raises(libpgq.NoSuchQueueError):
        client.queue_info("nope")
    with pytest.raises(libpgq.NoSuchQueueError):
        client.register_consumer("nope", "c")
    with client.consumer(queue, "not_registered") as consumer:
        with pytest.raises(libpgq.NotSubscribedError):
            consumer.next_batch(timeout=0)
    with pytest.raises((libpgq.NoSuchQueueError, libpgq.NotSubscribedError)):
        with client.consumer("nope", "c") as consumer:
            consumer.next_batch(timeout=0)


def test_empty_names_are_refused(client: libpgq.Client) -> None:
    with pytest.raises(libpgq.InvalidInputError):
        client.create_queue("")
    with pytest.raises(libpgq.PgqError):
        client.register_consumer("", "c")


def test_closed_handles(client: libpgq.Client, queue: str, dsn: str) -> None:
    other = libpgq.connect(dsn)
    other.close()
    other.close()
    assert other.closed
    with pytest.raises(libpgq.InvalidStateError, match="client is closed"):
        other.send(queue, "t")
    with pytest.raises(libpgq.InvalidStateError):
        other.consumer(queue, "c")
    with pytest.raises(libpgq.InvalidStateError):
        with other:
            pass

    consumer = client.consumer(queue, "c")
    consumer.close()
    with pytest.raises(libpgq.InvalidStateError, match="consumer is closed"):
        consumer.next_batch()

    client.send(queue, "t", "x")
    cut(client, queue)
    with client.consumer(queue, "c") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        batch.finish()
        with pytest.raises(libpgq.InvalidStateError, match="batch is closed"):
            batch.finish()
        with pytest.raises(libpgq.InvalidStateError):
            list(batch)
        with pytest.raises(libpgq.InvalidStateError):
            batch.retry(1, 0)
        batch.close()  # harmless


def test_error_objects_carry_status_sqlstate_message(client: libpgq.Client) -> None:
    with pytest.raises(libpgq.PgqError) as ei:
        with client.transaction() as tx:
            tx.execute("select * from no_such_table")
    e = ei.value
    assert isinstance(e, libpgq.DatabaseError)
    assert e.status == libpgq.Status.DATABASE
    assert e.sqlstate == "42P01"
    assert "no_such_table" in e.message
    assert "42P01" in str(e)
    assert "DatabaseError" in repr(e)
    # Data errors (SQLSTATE class 22) are the caller's bad input.
    with pytest.raises(libpgq.InvalidInputError) as ei:
        with client.transaction() as tx:
            tx.execute("select 1/0")
    assert ei.value.sqlstate == "22012"
    assert "division by zero" in ei.value.message


def test_objects_outlive_their_closed_client(dsn: str) -> None:
    client = libpgq.connect(dsn)
    client.install()
    client.create_queue("q")
    consumer = client.consumer("q", "c", register=True)
    tx = client.transaction()
    client.close()
    # The library keeps the pool alive for what was made from the client.
    tx.send("q", "t", "from a transaction begun before close")
    tx.commit()
    with libpgq.connect(dsn) as other:
        cut(other, "q")
    with consumer:
        assert [e.ev_data for e in drain(consumer, timeout=5)] == [
            "from a transaction begun before close"]
