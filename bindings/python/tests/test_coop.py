"""Cooperative pull consumers (pgq_coop): subconsumers of one consumer share its batches."""

from __future__ import annotations

import pytest

import libpgq
from conftest import cut


def test_subconsumers_share_the_batches(client: libpgq.Client) -> None:
    client.create_queue("q")
    s1 = client.consumer("q", "c", subconsumer="s1", register=True)
    s2 = client.consumer("q", "c", subconsumer="s2")
    assert s2.register() is True
    assert s2.register() is False
    assert s1.subconsumer == "s1"
    # pgq_coop registers each subconsumer as consumer "<consumer>.<sub>" too.
    assert [i.consumer_name for i in client.consumers("q")] == ["c", "c.s1", "c.s2"]
    with s1, s2:
        client.send("q", "t", "first")
        cut(client, "q")
        client.send("q", "t", "second")
        cut(client, "q")
        # Each subconsumer gets a batch of its own while the other holds one.
        b1 = s1.next_batch(timeout=5)
        b2 = s2.next_batch(timeout=5)
        assert b1 is not None and b2 is not None and b1.id != b2.id
        assert (b1.consumer, b1.subconsumer, b2.subconsumer) == ("c", "s1", "s2")
        with b1, b2:
            got = [e.ev_data for e in b1] + [e.ev_data for e in b2]
        assert sorted(got) == ["first", "second"]
        assert s1.next_batch(timeout=0) is None and s2.next_batch(timeout=0) is None


def test_unregister_with_an_open_batch(client: libpgq.Client) -> None:
    client.create_queue("q")
    with client.consumer("q", "c", subconsumer="s1", register=True) as s1, \
            client.consumer("q", "c", subconsumer="s2", register=True) as s2:
        client.send("q", "t", "held")
        cut(client, "q")
        b1 = s1.next_batch(timeout=5)
        assert b1 is not None
        with pytest.raises(libpgq.BatchOpenError) as ei:
            s1.unregister()
        assert ei.value.status == libpgq.Status.BATCH_OPEN
        s1.unregister(release_batch=True)
        b1.close()
        b2 = s2.next_batch(timeout=5)
        assert b2 is not None
        with b2:
            assert [e.ev_data for e in b2] == ["held"]


def test_dead_interval_needs_a_subconsumer(client: libpgq.Client) -> None:
    client.create_queue("q")
    with pytest.raises(ValueError, match="subconsumer"):
        client.consumer("q", "c", dead_interval=1)
    with pytest.raises(libpgq.InvalidInputError):
        client.consumer("q", "c", subconsumer="")
