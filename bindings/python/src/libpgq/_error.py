"""The exception hierarchy, and ``check()``, which turns a ``pgq_error*`` into one of them."""

from __future__ import annotations

import builtins
import ctypes
import enum
from typing import Dict, Optional, Type

from . import _ffi


class Status(enum.IntEnum):
    """``pgq_status``: what kind of failure (stable numbers, shared with the C ABI)."""

    OK = 0
    ERROR = 1
    NULL_POINTER = 2
    INVALID_UTF8 = 3
    INVALID_INPUT = 4
    CONNECT = 5
    POOL = 6
    CONNECTION_LOST = 7
    NO_SUCH_QUEUE = 8
    NOT_SUBSCRIBED = 9
    CONSUMERS_ATTACHED = 10
    NO_SUCH_BATCH = 11
    NO_SUCH_EVENT = 12
    NO_SUCH_TICK = 13
    INSERT_DISABLED = 14
    TICKER_DISABLED = 15
    NOT_INSTALLED = 16
    PERMISSION_DENIED = 17
    DATABASE = 18
    TIMEOUT = 19
    STOPPED = 20
    WOULD_DEADLOCK = 21
    HANDLER = 22
    PANIC = 23
    INVALID_STATE = 24
    OUT_OF_RANGE = 25
    BATCH_OPEN = 26


class PgqError(Exception):
    """Any error libpgq reports.

    Attributes:
        status: the :class:`Status` (an ``int`` when the library sent a number this package
            does not know yet).
        sqlstate: the five-character SQLSTATE when PostgreSQL sent one, else ``None``.
        message: the text, meant for a human.

    Catch a subclass to handle one kind (``except libpgq.NoSuchQueueError``), or this class
    for all of them.
    """

    #: The status this class stands for (``None`` on the base class).
    STATUS: Optional[Status] = None

    def __init__(self, message: str, status: int = Status.ERROR, sqlstate: Optional[str] = None):
        super().__init__(message)
        self.message = message
        try:
            self.status: int = Status(status)
        except ValueError:
            self.status = status
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        if self.sqlstate:
            return f"{self.message} (SQLSTATE {self.sqlstate})"
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"sqlstate={self.sqlstate!r})"
        )


class InvalidInputError(PgqError, ValueError):
    """An argument was refused: empty or malformed name, bad configuration value, text that
    is not valid UTF-8 or contains NUL, a number out of range."""

    STATUS = Status.INVALID_INPUT


class InvalidUtf8Error(InvalidInputError):
    """Text given as ``bytes`` is not valid UTF-8 (``str`` with lone surrogates too)."""

    STATUS = Status.INVALID_UTF8


class NullPointerError(InvalidInputError):
    """The library got a NULL where it needed a pointer (a bug in this package)."""

    STATUS = Status.NULL_POINTER


class OutOfRangeError(InvalidInputError):
    """A number does not fit what the library or the server accepts."""

    STATUS = Status.OUT_OF_RANGE


class ConnectError(PgqError, ConnectionError):
    """Could not connect to PostgreSQL (bad DSN, server down, authentication failed)."""

    STATUS = Status.CONNECT


class PoolError(PgqError):
    """No connection became free in the pool in time."""

    STATUS = Status.POOL


class ConnectionLostError(PgqError, ConnectionError):
    """The connection broke during a call; what it did may or may not have committed."""

    STATUS = Status.CONNECTION_LOST


class NoSuchQueueError(PgqError, LookupError):
    """The queue does not exist."""

    STATUS = Status.NO_SUCH_QUEUE


class NotSubscribedError(PgqError, LookupError):
    """The consumer is not registered on the queue."""

    STATUS = Status.NOT_SUBSCRIBED


class ConsumersAttachedError(PgqError):
    """The queue still has consumers (drop it with ``force=True``)."""

    STATUS = Status.CONSUMERS_ATTACHED


class NoSuchBatchError(PgqError, LookupError):
    """The batch is not open (any more)."""

    STATUS = Status.NO_SUCH_BATCH


class NoSuchEventError(PgqError, LookupError):
    """The event is not in the batch."""

    STATUS = Status.NO_SUCH_EVENT


class NoSuchTickError(PgqError, LookupError):
    """The tick does not exist."""

    STATUS = Status.NO_SUCH_TICK


class InsertDisabledError(PgqError):
    """Inserts into the queue are disabled."""

    STATUS = Status.INSERT_DISABLED


class TickerDisabledError(PgqError):
    """The queue's ticker is paused or external."""

    STATUS = Status.TICKER_DISABLED


class NotInstalledError(PgqError):
    """The database has no PGQ schema: call :meth:`Client.install` first."""

    STATUS = Status.NOT_INSTALLED


class PermissionDeniedError(PgqError, PermissionError):
    """The database user lacks a privilege."""

    STATUS = Status.PERMISSION_DENIED


class DatabaseError(PgqError):
    """Any other error PostgreSQL reported (see ``sqlstate``)."""

    STATUS = Status.DATABASE


class TimeoutError(PgqError, builtins.TimeoutError):
    """An operation did not finish in time."""

    STATUS = Status.TIMEOUT


class StoppedError(PgqError):
    """The worker or ticker has been stopped."""

    STATUS = Status.STOPPED


class WouldDeadlockError(PgqError):
    """The call would wait for itself (joining a worker from its own handler)."""

    STATUS = Status.WOULD_DEADLOCK


class HandlerError(PgqError):
    """A batch handler failed. Raised by the Python side with the handler's own exception
    as ``__cause__``."""

    STATUS = Status.HANDLER


class PanicError(PgqError):
    """libpgq hit an internal bug (a Rust panic, caught at the C boundary)."""

    STATUS = Status.PANIC


class InvalidStateError(PgqError):
    """The object cannot do that any more: closed, finished, committed or stopped."""

    STATUS = Status.INVALID_STATE


class BatchOpenError(PgqError):
    """A cooperative subconsumer still has an open batch (finish it, or unregister with
    ``release_batch=True``)."""

    STATUS = Status.BATCH_OPEN


_BY_STATUS: Dict[int, Type[PgqError]] = {
    cls.STATUS: cls
    for cls in (
        InvalidInputError,
        InvalidUtf8Error,
        NullPointerError,
        OutOfRangeError,
        ConnectError,
        PoolError,
        ConnectionLostError,
        NoSuchQueueError,
        NotSubscribedError,
        ConsumersAttachedError,
        NoSuchBatchError,
        NoSuchEventError,
        NoSuchTickError,
        InsertDisabledError,
        TickerDisabledError,
        NotInstalledError,
        PermissionDeniedError,
        DatabaseError,
        TimeoutError,
        StoppedError,
        WouldDeadlockError,
        HandlerError,
        PanicError,
        InvalidStateError,
        BatchOpenError,
    )
    if cls.STATUS is not None
}


def error_class(status: int) -> Type[PgqError]:
    """The exception class for a status (``PgqError`` for ERROR and unknown numbers)."""
    return _BY_STATUS.get(status, PgqError)


def make_error(status: int, message: str, sqlstate: Optional[str] = None) -> PgqError:
    return error_class(status)(message, status, sqlstate)


def take_error(status: int, err: ctypes.c_void_p) -> PgqError:
    """Build the exception for a failed call from its ``pgq_error*`` and free that."""
    lib = _ffi.lib()
    if not err.value:
        return make_error(status, f"libpgq call failed with status {status} and no error object")
    try:
        raw = lib.pgq_error_message(err)
        message = raw.decode("utf-8", "replace") if raw else "(no message)"
        raw_state = lib.pgq_error_sqlstate(err)
        sqlstate = raw_state.decode("ascii", "replace") if raw_state else None
        real_status = int(lib.pgq_error_status(err)) or status
    finally:
        lib.pgq_error_free(err)
        err.value = None
    return make_error(real_status, message, sqlstate)


def check(status: int, err: ctypes.c_void_p) -> None:
    """Raise the typed exception when a call failed; free its error object either way."""
    if status != 0:
        raise take_error(status, err)
