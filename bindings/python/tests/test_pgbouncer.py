"""Through a real PgBouncer in transaction pooling mode (the repository's
``scripts/pgbouncer.sh``: pool_mode = transaction, two server connections): a client made
with ``transaction_pooling=True`` produces from several threads, and a worker on it gets
every event exactly once; the ticker refuses such a client.

These tests need pgbouncer (``scripts/install-deps.sh postgres``); without it they fail.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import libpgq
from conftest import REPO, psycopg2, wait_until

SCRIPT = REPO / "scripts" / "pgbouncer.sh"


@pytest.fixture
def bouncer_dsn(dsn: str) -> Iterator[str]:
    """``dsn`` (a fresh database) reached through a PgBouncer of its own, stopped after."""
    parts = psycopg2.extensions.parse_dsn(dsn)
    # Under /tmp: as root the pooler runs as `postgres`, which must reach the directory.
    work = Path(tempfile.mkdtemp(prefix="pgq-pybouncer-", dir="/tmp"))
    try:
        work.chmod(0o755)
        args = [str(SCRIPT), "start", str(work / "b"), parts.get("host", "127.0.0.1"),
                str(parts.get("port", "5432")), parts["user"]]
        if parts.get("password"):
            args.append(parts["password"])
        out = subprocess.run(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             text=True)
        assert out.returncode == 0, "scripts/pgbouncer.sh start failed: is pgbouncer installed?"
        listen = psycopg2.extensions.parse_dsn(out.stdout.strip())
        yield psycopg2.extensions.make_dsn(dsn, host=listen["host"], port=listen["port"])
    finally:
        subprocess.run([str(SCRIPT), "stop", str(work / "b")], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_worker_and_producers_behind_transaction_pooling(client: libpgq.Client,
                                                         bouncer_dsn: str) -> None:
    got: List[Tuple[int, str]] = []
    lock = threading.Lock()

    def handle(batch: libpgq.Batch) -> None:
        with lock:
            got.extend((ev.ev_id, ev.ev_data or "") for ev in batch)

    # Four client connections over the pooler's two server connections.
    with libpgq.connect(bouncer_dsn, pool_size=4, transaction_pooling=True) as pooled:
        pooled.create_queue("q")
        pooled.configure("q", ticker_max_lag=datetime.timedelta(milliseconds=50))
        pooled.register_consumer("q", "w")

        def produce(t: int) -> None:
            for i in range(10):
                pooled.send("q", "t", f"{t}-{i}")
            with pooled.transaction() as tx:
                tx.send("q", "t", f"{t}-tx")

        # The ticker runs on the direct client: it needs a session of its own.
        with client.ticker(period=0.02):
            with pooled.worker("q", "w", handle, poll_interval=0.02) as worker:
                threads = [threading.Thread(target=produce, args=(t,)) for t in range(3)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                wait_until("33 events", lambda: len(got) >= 33)
                stats = worker.stats()
                assert stats.db_errors == 0 and not stats.listening
    datas = sorted(d for _, d in got)
    assert datas == sorted([f"{t}-{i}" for t in range(3) for i in range(10)]
                           + [f"{t}-tx" for t in range(3)])
    assert len({i for i, _ in got}) == len(got)  # each event once


def test_ticker_refuses_a_transaction_pooling_client(bouncer_dsn: str,
                                                     client: libpgq.Client) -> None:
    with libpgq.connect(bouncer_dsn, transaction_pooling=True) as pooled:
        with pytest.raises(libpgq.InvalidInputError, match="direct connection"):
            pooled.ticker()
    with pytest.raises(TypeError):
        libpgq.connect(bouncer_dsn, transaction_pooling="yes")  # type: ignore[arg-type]
