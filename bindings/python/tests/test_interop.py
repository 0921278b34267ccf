"""Interop with SkyTools' python3-pgq (module ``pgq``) on the same queues, both backends:
events it produces are consumed here, and events produced here are consumed by its
``pgq.Consumer``."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, List

import pytest

import libpgq
from conftest import cut, drain

pgq = pytest.importorskip("pgq", reason="SkyTools' python3-pgq is not importable")
import psycopg2  # noqa: E402

EXTRAS = ("e1", None, "", "ü€😀 tab\there")


def test_skytools_produces_libpgq_consumes(any_client: libpgq.Client, dsn: str) -> None:
    c = any_client
    c.create_queue("q")
    c.register_consumer("q", "c")
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        a = pgq.insert_event(cur, "q", "sky.one", "data-1", *EXTRAS)
        b = pgq.insert_event(cur, "q", "sky.two", None)
        conn.commit()
        now = datetime.datetime.now(datetime.timezone.utc)
        rows = [[now, "sky.bulk", f"bulk-{i} quote' bs\\ nl\n", f"x{i}"] for i in range(50)]
        pgq.bulk_insert_events(cur, rows, ["time", "type", "data", "extra1"], "q")
        conn.commit()
        pgq.insert_event(cur, "q", "sky.rolled.back", "never")
        conn.rollback()
    finally:
        conn.close()
    cut(c, "q")
    with c.consumer("q", "c") as consumer:
        evs = drain(consumer, timeout=5)
    assert [(e.ev_id, e.ev_type, e.ev_data, e.ev_extra1, e.ev_extra2, e.ev_extra3,
             e.ev_extra4) for e in evs[:2]] == [
        (a, "sky.one", "data-1", *EXTRAS), (b, "sky.two", None, None, None, None, None)]
    bulk = evs[2:]
    assert [(e.ev_type, e.ev_data, e.ev_extra1) for e in bulk] == [
        ("sky.bulk", f"bulk-{i} quote' bs\\ nl\n", f"x{i}") for i in range(50)]
    assert len({e.ev_txid for e in bulk}) == 1
    assert abs((bulk[0].ev_time - now).total_seconds()) < 1


def make_skytools_consumer(tmp_path: Path, dsn: str, queue: str, name: str,
                           retry_type: str = "") -> Any:
    """A SkyTools ``pgq.Consumer`` that records what it gets; driven with ``work()``."""

    class Recorder(pgq.Consumer):  # type: ignore[misc]
        def __init__(self, args: List[str]) -> None:
            super().__init__("recorder", "db", args)
            self.got: List[tuple] = []

        def process_batch(self, db: Any, batch_id: int, ev_list: Any) -> None:
            for ev in ev_list:
                self.got.append((ev.id, ev.type, ev.data, ev.extra1, ev.extra2, ev.extra3,
                                 ev.extra4, ev.retry, ev.txid))
                if retry_type and ev.type == retry_type and ev.retry is None:
                    ev.tag_retry(0)

    ini = tmp_path / f"{name}.ini"
    ini.write_text(
        "[recorder]\n"
        f"job_name = {name}\n"
        f"queue_name = {queue}\n"
        "db = %s\n" % dsn.replace("%", "%%")
        + "use_skylog = 0\n"
        "logfile = %s\n" % (tmp_path / f"{name}.log")
        + "pidfile = %s\n" % (tmp_path / f"{name}.pid")
    )
    return Recorder([str(ini), "-q"])


def work_until_idle(consumer: Any, max_rounds: int = 100) -> None:
    """Call ``work()`` until it reports no batch (bounded)."""
    for _ in range(max_rounds):
        if not consumer.work():
            return
    pytest.fail(f"the SkyTools consumer still had batches after {max_rounds} rounds")


def test_libpgq_produces_skytools_consumes(any_client: libpgq.Client, dsn: str,
                                          tmp_path: Path) -> None:
    c = any_client
    c.create_queue("q")
    sky = make_skytools_consumer(tmp_path, dsn, "q", "sky", retry_type="again")
    sky.register_consumer()
    one = c.send("q", "lib.one", "d1", *EXTRAS)
    c.send_many("q", [("lib.many", f"m{i}", None, None, None, f"x{i}") for i in range(20)])
    with c.transaction() as tx:
        t1 = tx.send("q", "again", "retry me")
        tx.send("q", "lib.tx", None)
    with pytest.raises(RuntimeError):
        with c.transaction() as tx:
            tx.send("q", "lib.rolled.back", "never")
            raise RuntimeError("roll back")
    cut(c, "q")
    work_until_idle(sky)
    got = sky.got
    assert got[0][:7] == (one, "lib.one", "d1", *EXTRAS)
    assert [g[1:7] for g in got[1:21]] == [
        ("lib.many", f"m{i}", None, None, None, f"x{i}") for i in range(20)]
    assert [g[1:3] for g in got[21:]] == [("again", "retry me"), ("lib.tx", None)]
    assert len({g[8] for g in got[1:21]}) == 1
    assert all(g[7] is None for g in got)

    # SkyTools' retry of our event comes back to it, with ev_retry = 1.
    with c.transaction() as tx:
        tx.execute("select pgq.maint_retry_events()")
    cut(c, "q")
    sky.got = []
    work_until_idle(sky)
    assert [(g[0], g[1], g[7]) for g in sky.got] == [(t1, "again", 1)]
    # And our consumer info sees SkyTools' consumer as a registered one.
    assert [i.consumer_name for i in c.consumers("q")] == ["sky"]
