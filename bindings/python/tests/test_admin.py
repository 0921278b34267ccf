"""Admin: install, queues, configuration, consumers, info dataclasses."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

import libpgq
from conftest import cut, sql


def test_install_is_idempotent(dsn: str) -> None:
    with libpgq.connect(dsn) as client:
        with pytest.raises(libpgq.PgqError):
            client.create_queue("q")  # no schema yet
        client.install()
        client.install()
        assert client.create_queue("q") is True
    assert sql(dsn, "select count(*) from pgq.queue") == 1


def test_create_and_drop_queue(any_client: libpgq.Client) -> None:
    c = any_client
    assert c.create_queue("orders") is True
    assert c.create_queue("orders") is False
    assert [q.name for q in c.queues()] == ["orders"]
    c.drop_queue("orders")
    assert c.queues() == []
    with pytest.raises(libpgq.NoSuchQueueError) as ei:
        c.drop_queue("orders")
    assert ei.value.status == libpgq.Status.NO_SUCH_QUEUE
    assert "orders" in str(ei.value) or "queue" in str(ei.value).lower()


def test_drop_queue_with_consumers_needs_force(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    c.register_consumer("q", "c1")
    with pytest.raises(libpgq.ConsumersAttachedError):
        c.drop_queue("q")
    assert [q.name for q in c.queues()] == ["q"]
    c.drop_queue("q", force=True)
    assert c.queues() == []


def test_queue_info_is_a_dataclass_with_real_values(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    info = c.queue_info("q")
    assert dataclasses.is_dataclass(info)
    assert info.name == "q"
    assert info.ntables == 3
    assert info.cur_table == 0
    assert info.rotation_period == datetime.timedelta(hours=2)
    assert info.ticker_max_count == 500
    assert info.ticker_max_lag == datetime.timedelta(seconds=3)
    assert info.ticker_idle_period == datetime.timedelta(minutes=1)
    assert info.external_ticker is False and info.ticker_paused is False
    assert info.ev_new == 0
    assert isinstance(info.last_tick_id, int)
    assert isinstance(info.switch_time, datetime.datetime)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - info.switch_time).total_seconds()) < 600
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]


def test_configure(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    c.configure("q", ticker_max_count=7, ticker_max_lag=datetime.timedelta(milliseconds=500),
                ticker_idle_period="10 seconds", ticker_paused=True)
    info = c.queue_info("q")
    assert info.ticker_max_count == 7
    assert info.ticker_max_lag == datetime.timedelta(milliseconds=500)
    assert info.ticker_idle_period == datetime.timedelta(seconds=10)
    assert info.ticker_paused is True
    with pytest.raises(libpgq.PgqError):
        c.set_queue_config("q", "no_such_setting", 1)
    with pytest.raises(libpgq.PgqError):
        c.set_queue_config("q", "ticker_max_count", "not a number")
    with pytest.raises(TypeError):
        c.set_queue_config("q", "ticker_max_count", [1])


def test_register_unregister_and_consumer_info(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    c.create_queue("r")
    assert c.register_consumer("q", "a") is True
    assert c.register_consumer("q", "a") is False
    c.register_consumer("q", "b")
    c.register_consumer("r", "a")
    infos = c.consumers("q")
    assert [(i.queue_name, i.consumer_name) for i in infos] == [("q", "a"), ("q", "b")]
    everyone = c.consumers()
    assert sorted((i.queue_name, i.consumer_name) for i in everyone) == [
        ("q", "a"), ("q", "b"), ("r", "a")]
    a = infos[0]
    assert dataclasses.is_dataclass(a)
    assert a.current_batch is None and a.next_tick is None
    assert isinstance(a.last_tick, int)
    assert a.lag is None or isinstance(a.lag, datetime.timedelta)

    # An open batch shows in the info.
    c.send("q", "t", "d")
    cut(c, "q")
    with c.consumer("q", "a") as consumer:
        batch = consumer.next_batch(timeout=5)
        assert batch is not None
        (info,) = [i for i in c.consumers("q") if i.consumer_name == "a"]
        assert info.current_batch == batch.id
        assert info.next_tick == batch.tick_id
        batch.finish()

    c.unregister_consumer("q", "b")
    assert [i.consumer_name for i in c.consumers("q")] == ["a"]
    c.unregister_consumer("q", "b")  # like pgq.unregister_consumer: 0 rows, no error
    assert [i.consumer_name for i in c.consumers("q")] == ["a"]


def test_tick_and_force_tick(any_client: libpgq.Client) -> None:
    c = any_client
    c.create_queue("q")
    before = c.queue_info("q").last_tick_id
    assert before is not None
    c.force_tick("q")
    assert c.tick() >= 1
    after = c.queue_info("q").last_tick_id
    assert after is not None and after > before
    with pytest.raises(libpgq.NoSuchQueueError):
        c.force_tick("nope")


def test_connect_errors(server_dsn: str) -> None:
    with pytest.raises(libpgq.ConnectError) as ei:
        libpgq.connect("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2")
    assert isinstance(ei.value, ConnectionError)
    assert ei.value.message
    with pytest.raises(libpgq.PgqError):
        libpgq.connect("this is = not a dsn ' at all")
    with libpgq.connect(server_dsn, pool_size=2, connect_timeout=5) as client:
        assert not client.closed
    assert client.closed
