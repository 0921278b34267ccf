"""libpgq for Python: SkyTools PGQ transactional event queues in PostgreSQL.

A ctypes binding of the libpgq C library. Produce events in your own transactions, consume
them in batches (pulling, or with a callback run by libpgq's worker threads), tick queues
without ``pgqd``. Works on databases with libpgq's own PGQ schema or the official extension,
side by side with SkyTools' ``pgq`` module (this package is ``libpgq``, so both import).

::

    import libpgq

    with libpgq.connect("host=localhost dbname=app") as client:
        client.install()
        client.create_queue("orders")
        client.register_consumer("orders", "mailer")
        client.send("orders", "order.created", '{"id": 42}')
        client.tick()
        with client.consumer("orders", "mailer") as consumer:
            for batch in consumer.batches(timeout=1):
                with batch:
                    for ev in batch:
                        print(ev.ev_id, ev.ev_type, ev.ev_data)

Finding the library: see :mod:`libpgq._ffi` (``LIBPGQ_PATH``, a bundled copy, the
repository's ``target/`` build, the system path).
"""

from __future__ import annotations

from ._client import Client, Transaction, connect
from ._consumer import Batch, Consumer
from ._error import (
    BatchOpenError,
    ConnectError,
    ConnectionLostError,
    ConsumersAttachedError,
    DatabaseError,
    HandlerError,
    InsertDisabledError,
    InvalidInputError,
    InvalidStateError,
    InvalidUtf8Error,
    NoSuchBatchError,
    NoSuchEventError,
    NoSuchQueueError,
    NoSuchTickError,
    NotInstalledError,
    NotSubscribedError,
    NullPointerError,
    OutOfRangeError,
    PanicError,
    PermissionDeniedError,
    PgqError,
    PoolError,
    Status,
    StoppedError,
    TickerDisabledError,
    TimeoutError,
    WouldDeadlockError,
)
from ._event import Event, NewEvent
from ._ffi import ABI_VERSION, LibraryError
from ._info import ConsumerInfo, QueueInfo
from ._log import forward_logs
from ._ticker import Ticker, TickerStats
from ._worker import BatchHandler, Worker, WorkerStats

__version__ = "0.1.0"


def library_version() -> str:
    """The loaded libpgq's version (``pgq_version()``), e.g. ``"0.1.0"``."""
    from . import _ffi

    raw = _ffi.lib().pgq_version()
    return raw.decode() if raw else ""


def library_path() -> str:
    """Where the loaded libpgq came from (loads it if needed)."""
    from . import _ffi

    return _ffi.lib().path


__all__ = [
    "ABI_VERSION",
    "Batch",
    "BatchHandler",
    "BatchOpenError",
    "Client",
    "ConnectError",
    "ConnectionLostError",
    "Consumer",
    "ConsumerInfo",
    "ConsumersAttachedError",
    "DatabaseError",
    "Event",
    "HandlerError",
    "InsertDisabledError",
    "InvalidInputError",
    "InvalidStateError",
    "InvalidUtf8Error",
    "LibraryError",
    "NewEvent",
    "NoSuchBatchError",
    "NoSuchEventError",
    "NoSuchQueueError",
    "NoSuchTickError",
    "NotInstalledError",
    "NotSubscribedError",
    "NullPointerError",
    "OutOfRangeError",
    "PanicError",
    "PermissionDeniedError",
    "PgqError",
    "PoolError",
    "QueueInfo",
    "Status",
    "StoppedError",
    "Ticker",
    "TickerStats",
    "TickerDisabledError",
    "TimeoutError",
    "Transaction",
    "Worker",
    "WorkerStats",
    "WouldDeadlockError",
    "connect",
    "forward_logs",
    "library_path",
    "library_version",
]
