"""Test harness: a real PostgreSQL server and one fresh database per test.

The server is ``PGQ_TEST_DSN`` (a superuser DSN) when set; otherwise a private throwaway
cluster is started once for the session with the repository's ``scripts/pg-cluster.sh``
and stopped at the end. Every test that asks for ``dsn`` (or ``client``) gets a database of
its own, named after the test, dropped when the test passed and kept when it failed.

psycopg2 (Debian's python3-psycopg2, which python3-pgq brings along) does the harness's own
SQL; the code under test never uses it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

import pytest

import libpgq

psycopg2 = pytest.importorskip("psycopg2", reason="the test harness needs psycopg2")
import psycopg2.extensions  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def wait_until(what: str, cond: Callable[[], T], timeout: float = 15.0,
               interval: float = 0.02) -> T:
    """Poll ``cond`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sql(dsn: str, query: str, params: Any = None, autocommit: bool = True) -> Any:
    """Run one statement over psycopg2; the first column of the first row, if any."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = autocommit
        with conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone() if cur.description is not None else None
        if not autocommit:
            conn.commit()
        return row[0] if row else None
    finally:
        conn.close()


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    dsn = os.environ.get("PGQ_TEST_DSN", "").strip()
    cluster: Optional[str] = None
    if not dsn:
        cluster = tempfile.mkdtemp(prefix="pgq-pytest-", dir=REPO / "target")
        os.chmod(cluster, 0o755)
        out = subprocess.run([str(REPO / "scripts" / "pg-cluster.sh"), "start", cluster],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                             check=True)
        dsn = out.stdout.strip()
    # PGQ's roles are cluster-wide: create them up front, so that parallel installs into
    # different databases cannot race to create them.
    for role in ("pgq_reader", "pgq_writer", "pgq_admin"):
        sql(dsn, f"do $$ begin create role {role}; "
                 "exception when duplicate_object then null; end $$")
    try:
        yield dsn
    finally:
        if cluster is not None:
            subprocess.run([str(REPO / "scripts" / "pg-cluster.sh"), "stop", cluster],
                           check=False)
            shutil.rmtree(cluster, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _db_name(node: Any) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", node.name.lower())[:40]
    return f"pyt_{base}_{secrets.token_hex(3)}"


@pytest.fixture
def dsn(server_dsn: str, request: Any) -> Iterator[str]:
    """A DSN of a fresh, empty database for this test."""
    name = _db_name(request.node)
    sql(server_dsn, f'create database "{name}"')
    yield psycopg2.extensions.make_dsn(server_dsn, dbname=name)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\nkept database {name} of the failed test", file=sys.stderr)
        return
    sql(server_dsn, f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=["ours", "official"])
def backend(request: Any) -> str:
    """Run a test on our schema (``Client.install``) and on the official extension."""
    return str(request.param)


def install(client: libpgq.Client, dsn: str, backend: str) -> None:
    if backend == "official":
        sql(dsn, "create extension pgq")
    else:
        client.install()


@pytest.fixture
def client(dsn: str) -> Iterator[libpgq.Client]:
    """A client on a fresh database with our PGQ schema installed."""
    with libpgq.connect(dsn) as c:
        c.install()
        yield c


@pytest.fixture
def any_client(dsn: str, backend: str) -> Iterator[libpgq.Client]:
    """A client on a fresh database with PGQ installed, once per backend."""
    with libpgq.connect(dsn) as c:
        install(c, dsn, backend)
        yield c


def cut(client: libpgq.Client, queue: str) -> None:
    """Make a batch boundary now: force a tick of ``queue`` and run one ticker round."""
    client.force_tick(queue)
    client.tick()


@pytest.fixture
def queue(client: libpgq.Client) -> str:
    """A queue ``q`` with consumer ``c`` registered."""
    client.create_queue("q")
    client.register_consumer("q", "c")
    return "q"


def drain(consumer: libpgq.Consumer, timeout: float = 0) -> list:
    """Every event of every batch there is: waits up to ``timeout`` for the first batch,
    then takes the ones already there; finishes them all."""
    events: list = []
    batch = consumer.next_batch(timeout=timeout)
    while batch is not None:
        with batch:
            events.extend(batch)
        batch = consumer.next_batch(timeout=0)
    return events


def run_in_thread(fn: Callable[[], Any]) -> Dict[str, Any]:
    """Start ``fn`` on a thread; the dict gets ``result`` or ``error`` and ``thread``."""
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    box["thread"] = t
    t.start()
    return box
