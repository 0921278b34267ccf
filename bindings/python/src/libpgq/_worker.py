"""Callback workers: libpgq's own threads fetch batches and call a Python function.

The C side gets one module-level trampoline (a CFUNCTYPE object that lives as long as the
module) and a small integer as ``user_data``; the integer indexes ``_slots``, which holds
the Python handler. So no Python object's address ever crosses into C, and nothing the C
side holds can be garbage-collected under it. The trampoline catches every exception the
handler raises (an exception must never unwind through C), keeps it in the slot and
returns non-zero, which tells libpgq to leave the batch unfinished (it is delivered again).
libpgq calls ``_free_slot`` exactly once, after the last handler call, when the worker is
freed.
"""

from __future__ import annotations

import atexit
import datetime
import itertools
import logging
import threading
import time
import weakref
from ctypes import (
    Structure,
    byref,
    c_bool,
    c_char_p,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
    sizeof,
)
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, Union

from . import _ffi
from ._consumer import Batch
from ._error import HandlerError, InvalidStateError, Status, check, take_error
from ._event import delay_ms, from_us
from ._handle import Handle, Text, encode

if TYPE_CHECKING:
    from ._client import Client

log = logging.getLogger("libpgq")

Seconds = Union[float, datetime.timedelta]

#: ``handler(batch)``: read the batch's events (``for ev in batch``); return normally when
#: they are handled (events given to ``ev.retry()`` come back later), raise to have the
#: whole batch delivered again.
BatchHandler = Callable[[Batch], Any]


class _Slot:
    __slots__ = ("handler", "queue", "errors", "lock", "failed", "stop_on_error")

    def __init__(self, handler: BatchHandler, queue: str, stop_on_error: bool) -> None:
        self.handler = handler
        self.queue = queue
        self.errors: List[BaseException] = []
        self.lock = threading.Lock()
        self.failed = threading.Event()
        self.stop_on_error = stop_on_error


_slots: Dict[int, _Slot] = {}
_slot_ids = itertools.count(1)
_slots_lock = threading.Lock()


class _WorkerBatch(Batch):
    """A batch the worker owns: the handler reads it and may retry events; libpgq finishes
    it (or not) from the handler's outcome once the handler has returned."""

    def finish(self) -> None:
        raise InvalidStateError(
            "a worker's batch is finished by the worker when the handler returns; "
            "return normally instead of calling finish()"
        )

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        # `with batch:` inside a handler changes nothing: the handler's outcome decides.
        return None


def _no_free(_ptr: Any) -> None:
    return None


def _handle_batch(user_data: Optional[int], batch_ptr: Optional[int]) -> int:
    # Runs on a libpgq worker thread, holding the GIL (ctypes takes it for the call).
    slot = _slots.get(user_data or 0)
    if slot is None or not batch_ptr:
        return 1
    try:
        batch = _WorkerBatch(batch_ptr, _no_free)
    except BaseException as e:  # noqa: B036 - nothing may unwind into C
        with slot.lock:
            slot.errors.append(e)
        return 1
    try:
        slot.handler(batch)
    except BaseException as e:  # noqa: B036 - nothing may unwind into C
        with slot.lock:
            slot.errors.append(e)
        if slot.stop_on_error:
            slot.failed.set()
        else:
            log.warning("libpgq worker on %s: the handler raised %r; the batch will be "
                        "delivered again", slot.queue, e)
        return 1
    finally:
        # The pointer is only valid during this call.
        batch._handle = None
    return 0


def _drop_slot(user_data: Optional[int]) -> None:
    with _slots_lock:
        _slots.pop(user_data or 0, None)


# The C function pointers: module globals, so they live as long as any worker can call them.
_trampoline = _ffi.pgq_batch_handler(_handle_batch)
_free_slot = _ffi.pgq_free_fn(_drop_slot)


class _CWorkerStats(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("threads", c_uint32),
        ("events", c_uint64),
        ("batches", c_uint64),
        ("retries", c_uint64),
        ("errors", c_uint64),
        ("handler_errors", c_uint64),
        ("db_errors", c_uint64),
        ("reconnects", c_uint64),
        ("wakeups", c_uint64),
        ("empty_polls", c_uint64),
        ("lag_ms", c_int64),
        ("last_batch_time_us", c_int64),
        ("listening", c_bool),
        # Later fields: a library older than them fills only what comes before (and says
        # so in struct_size); they then stay 0.
        ("looked_ahead", c_uint64),
    ]


@dataclass(frozen=True)
class WorkerStats:
    """Counters of a running worker (:meth:`Worker.stats`)."""

    threads: int
    events: int
    batches: int
    retries: int
    errors: int
    handler_errors: int
    db_errors: int
    reconnects: int
    wakeups: int
    empty_polls: int
    #: Age of the last batch's end tick when it was taken, if any.
    lag: Optional[datetime.timedelta]
    last_batch_time: Optional[datetime.datetime]
    #: Whether the worker is listening for the ticker's wake-ups (else it polls).
    listening: bool
    #: Batches the server had read and sorted while the batch before was handled
    #: (``read_ahead``); 0 with a library that cannot do that.
    looked_ahead: int = 0


# Workers still running at interpreter exit are stopped first: their threads must not call
# into an interpreter that is being torn down.
_live: "weakref.WeakSet[Worker]" = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for w in list(_live):
        try:
            w.close()
        except BaseException:  # noqa: B036
            pass


def _count(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")
    if not 0 < n < 2**32:
        raise ValueError(f"{what} must be between 1 and {2**32 - 1}, not {n}")
    return n


class Worker(Handle):
    """Consumer threads inside libpgq that call ``handler(batch)`` once per batch.

    Made by :meth:`Client.worker`. The handler runs on a libpgq thread (holding the GIL
    while it runs Python; waiting for the database happens without it). It reads the batch
    with ``for ev in batch`` and may ``ev.retry(delay)``; returning normally finishes the
    batch, raising leaves it unfinished (delivered again).

    ``on_error="stop"`` (default): the first exception stops the worker, and :meth:`run`,
    :meth:`join` and the end of a ``with`` block raise :class:`HandlerError` with the
    handler's exception as ``__cause__``. ``on_error="retry"``: the worker logs it, waits
    (``retry_backoff=(initial, max)`` seconds, doubling) and tries the batch again;
    :attr:`errors` keeps the exceptions.

    Options: ``fetch_size`` (events read per round trip), ``poll_interval`` (seconds between
    polls when no wake-up came), ``poll_only`` (never LISTEN, e.g. behind PgBouncer),
    ``read_ahead`` (default True: read the next chunk, and on libpgq's schema the next
    batch, while the handler works; the latter on a spare pooled connection),
    ``subconsumer`` (cooperative mode: the worker consumes as that subconsumer of its
    consumer, sharing the batches with the other subconsumers) with ``workers`` threads
    (each its own subconsumer ``<sub>-0``, ``<sub>-1``, ...; more than one thread needs a
    subconsumer; handler calls then overlap, each with its own batch) and
    ``dead_interval`` (take over the batch of a subconsumer silent that long).

    ::

        def handle(batch):
            for ev in batch:
                print(ev.ev_id, ev.ev_data)

        with client.worker("orders", "mailer", handle) as worker:
            worker.run()   # until Ctrl-C (a clean stop) or a handler error (raised)
    """

    _what = "worker"

    def __init__(self, client: "Client", queue: Text, consumer: Text, handler: BatchHandler,
                 *, on_error: str = "stop", workers: Optional[int] = None,
                 fetch_size: Optional[int] = None, poll_interval: Optional[Seconds] = None,
                 poll_only: Optional[bool] = None,
                 read_ahead: Optional[bool] = None,
                 retry_backoff: Optional[Tuple[Seconds, Seconds]] = None,
                 subconsumer: Optional[Text] = None,
                 dead_interval: Optional[Seconds] = None) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if on_error not in ("stop", "retry"):
            raise ValueError(f"on_error must be 'stop' or 'retry', not {on_error!r}")
        lib = _ffi.lib()
        start = lib.require("pgq_worker_start")
        q = encode(queue, "queue")
        c = encode(consumer, "consumer")
        stop_on_error = on_error == "stop"
        # Counted as in use until started, so that close() on another thread waits; taken
        # before the options exist, so that a closed client leaks nothing.
        cptr = client._acquire()
        try:
            opts = lib.require("pgq_worker_options_new")()
            try:
                self._opt(opts, "stop_on_error", [c_bool], stop_on_error)
                if workers is not None:
                    self._opt(opts, "workers", [c_uint32], _count(workers, "workers"))
                if fetch_size is not None:
                    self._opt(opts, "fetch_size", [c_uint32], _count(fetch_size, "fetch_size"))
                if poll_interval is not None:
                    self._opt(opts, "poll_interval_ms", [c_uint64],
                              delay_ms(poll_interval, "poll_interval"))
                if poll_only is not None:
                    self._opt(opts, "poll_only", [c_bool], bool(poll_only))
                if read_ahead is not None:
                    self._opt(opts, "read_ahead", [c_bool], bool(read_ahead))
                if subconsumer is not None:
                    sub = encode(subconsumer, "subconsumer")
                    ms = (0 if dead_interval is None
                          else delay_ms(dead_interval, "dead_interval"))
                    self._opt(opts, "subconsumer", [c_char_p, c_size_t, c_uint64], sub,
                              len(sub), ms)
                if retry_backoff is not None:
                    initial, most = retry_backoff
                    self._opt(opts, "retry_backoff_ms", [c_uint64, c_uint64],
                              delay_ms(initial, "retry_backoff"), delay_ms(most, "retry_backoff"))
            except BaseException:
                lib.require("pgq_worker_options_free")(opts)
                raise
            slot = _Slot(handler, q.decode(), stop_on_error)
            with _slots_lock:
                sid = next(_slot_ids)
                _slots[sid] = slot
            out = c_void_p()
            err = c_void_p()
            # The options are consumed, success or not. On failure libpgq does not call
            # _free_slot: drop the slot here.
            st = start(cptr, q, len(q), c, len(c), opts, _trampoline, sid, _free_slot,
                       byref(out), byref(err))
        finally:
            client._release()
        if st != 0:
            _drop_slot(sid)
            check(st, err)
        super().__init__(out.value or 0, lib.require("pgq_worker_free"))
        self._client = client
        self._slot = slot
        self._stop_requested = threading.Event()
        self.queue: str = q.decode()
        self.consumer: str = c.decode()
        _live.add(self)

    @staticmethod
    def _opt(opts: int, name: str, ctypes_: List[Any], *values: Any) -> None:
        lib = _ffi.lib()
        fn = lib.declare(f"pgq_worker_options_set_{name}", _ffi.status,
                         [c_void_p, *ctypes_, _ffi._err])
        if fn is None:
            raise NotImplementedError(f"this libpgq has no worker option {name}")
        err = c_void_p()
        check(fn(opts, *values, byref(err)), err)

    @property
    def errors(self) -> List[BaseException]:
        """Exceptions the handler raised so far (oldest first)."""
        with self._slot.lock:
            return list(self._slot.errors)

    def stop(self) -> None:
        """Ask the worker to stop after the batch in hand (returns at once; idempotent;
        may be called from the handler)."""
        self._stop_requested.set()
        if self._handle is None:
            return
        err = c_void_p()
        try:
            st = self._call_quick(_ffi.lib().require("pgq_worker_stop"), byref(err))
        except InvalidStateError:
            return  # closed meanwhile: stopped anyway
        check(st, err)

    def join(self) -> None:
        """Wait until the worker's threads have ended (after :meth:`stop`, or after a
        handler error with ``on_error="stop"``), then free it. Raises
        :class:`HandlerError` when a handler error stopped it. Not from the handler."""
        lib = _ffi.lib()
        with self._lock:
            ptr = self._handle
            if ptr is not None:
                err = c_void_p()
                st = lib.require("pgq_worker_join")(ptr, byref(err))
                if st == 0:
                    self.close()
                elif st == Status.HANDLER:
                    error = take_error(st, err)
                    self.close()
                    self._raise_handler_error(error)
                else:
                    check(st, err)  # e.g. WouldDeadlockError from inside the handler
        self._raise_handler_error(None)

    def _raise_handler_error(self, library_error: Optional[BaseException]) -> None:
        if not self._slot.stop_on_error:
            return
        errs = self.errors
        if errs:
            first = errs[0]
            raise HandlerError(
                f"the batch handler raised {type(first).__name__}: {first}; the worker "
                "stopped and the batch will be delivered again",
                Status.HANDLER,
            ) from first
        if library_error is not None:
            raise library_error

    def run(self, timeout: Optional[float] = None,
            until: Optional[threading.Event] = None) -> None:
        """Block until the worker stops, then wait for its threads and free it.

        It stops on a handler error (raised here as :class:`HandlerError`), :meth:`stop`
        (from another thread or the handler), ``until`` being set (a
        :class:`threading.Event`, e.g. set by the handler), ``timeout`` seconds, or Ctrl-C,
        which stops the worker cleanly (the batch in hand is finished or left for
        redelivery) and returns normally."""
        end = None if timeout is None else time.monotonic() + timeout
        slot = self._slot
        try:
            # Wait in Python, in short slices: Ctrl-C reaches the main thread only between
            # bytecodes, never inside a blocking C call.
            while not (slot.failed.is_set() or self._stop_requested.is_set()
                       or (until is not None and until.is_set())):
                wait = 0.2
                if end is not None:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left)
                slot.failed.wait(wait)
        except KeyboardInterrupt:
            log.info("libpgq worker %s/%s: interrupted, stopping", self.queue, self.consumer)
        self.stop()
        self.join()

    def stats(self) -> WorkerStats:
        """The library's counters for this worker."""
        s = _CWorkerStats()
        s.struct_size = sizeof(_CWorkerStats)
        err = c_void_p()
        check(self._call_quick(_ffi.lib().require("pgq_worker_stats_get"), byref(s), byref(err)),
              err)
        return WorkerStats(
            threads=s.threads, events=s.events, batches=s.batches, retries=s.retries,
            errors=s.errors, handler_errors=s.handler_errors, db_errors=s.db_errors,
            reconnects=s.reconnects, wakeups=s.wakeups, empty_polls=s.empty_polls,
            lag=None if s.lag_ms < 0 else datetime.timedelta(milliseconds=s.lag_ms),
            last_batch_time=None if s.last_batch_time_us < 0 else from_us(s.last_batch_time_us),
            listening=bool(s.listening),
            looked_ahead=s.looked_ahead,
        )

    def close(self) -> None:
        """Stop the worker, wait for its threads and free it; handler errors are not raised
        (use :meth:`join` for that). Not from the handler (call :meth:`stop` there)."""
        self._stop_requested.set()
        super().close()
        _live.discard(self)

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None:
            self.close()  # the block's own exception wins
            return
        self.stop()
        self.join()
