"""Callback workers: libpgq's own threads fetch batches and call a Python function.

The C side gets one module-level trampoline (a CFUNCTYPE object that lives as long as the
module) and a small integer as ``user_data``; the integer indexes ``_slots``, which holds
the Python handler. So no Python object's address ever crosses into C, and nothing the C
side holds can be garbage-collected under it. The trampoline catches every exception the
handler raises (an exception must never unwind through C), stores it in the slot and
returns non-zero, which tells libpgq to leave the batch unfinished (it is delivered again).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import threading
import time
from ctypes import byref, c_uint32, c_uint64, c_void_p
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Type, Union

from . import _ffi
from ._consumer import Batch
from ._error import HandlerError, InvalidStateError, StoppedError, check
from ._event import delay_ms
from ._handle import Handle, Text, encode

if TYPE_CHECKING:
    from ._client import Client

log = logging.getLogger("libpgq")

#: ``handler(batch)``: read the batch's events; return normally when they are handled
#: (events given to ``retry`` come back later), raise to have the whole batch delivered again.
BatchHandler = Callable[[Batch], Any]


class _Slot:
    __slots__ = ("handler", "worker", "errors", "lock", "batches")

    def __init__(self, handler: BatchHandler) -> None:
        self.handler = handler
        self.worker: Optional[Worker] = None
        self.errors: List[BaseException] = []
        self.lock = threading.Lock()
        self.batches = 0


_slots: Dict[int, _Slot] = {}
_slot_ids = itertools.count(1)
_slots_lock = threading.Lock()


class _BorrowedBatch(Batch):
    """A batch the library owns: the handler reads it and may retry events, but libpgq
    finishes it (or not) from the handler's result, after the handler returned."""

    def __init__(self, ptr: int) -> None:
        lib = _ffi.lib()
        Handle.__init__(self, ptr, lambda _p: None)
        self._consumer = None  # type: ignore[assignment]
        self.id = lib.pgq_batch_id(ptr)
        self.tick_id = lib.pgq_batch_tick_id(ptr)
        self._done = False

    @property
    def queue(self) -> str:
        return ""

    def finish(self) -> None:
        raise InvalidStateError(
            "a worker's batch is finished by the worker when the handler returns; "
            "return normally instead of calling finish()"
        )

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        # Leave the outcome to the handler's return or raise.
        return None


def _handle_batch(user_data: Optional[int], batch_ptr: Optional[int]) -> int:
    slot = _slots.get(user_data or 0)
    if slot is None or not batch_ptr:
        return 1
    batch = _BorrowedBatch(batch_ptr)
    try:
        slot.handler(batch)
    except BaseException as e:  # noqa: B036 - nothing may unwind into C
        with slot.lock:
            slot.errors.append(e)
        w = slot.worker
        if w is not None:
            w._handler_failed(e)
        return 1
    finally:
        # The pointer is only valid during this call.
        batch._handle = None
    with slot.lock:
        slot.batches += 1
    return 0


def _drop_slot(user_data: Optional[int]) -> None:
    with _slots_lock:
        _slots.pop(user_data or 0, None)


# The C function pointers: module globals, so they live as long as any worker can call them.
_trampoline = _ffi.pgq_batch_handler(_handle_batch)
_free_slot = _ffi.pgq_free_fn(_drop_slot)


class Worker(Handle):
    """Consumer threads inside libpgq that call ``handler(batch)`` for every batch.

    ``workers`` threads (default 1) each take batches; the handler runs on those threads
    (with the GIL, so Python code in handlers does not run in parallel, but waiting for the
    database does). When the handler raises, the batch is not finished and comes again;
    with ``on_error="stop"`` (default) the worker stops and :meth:`join`, :meth:`run` and
    the end of a ``with`` block raise :class:`HandlerError` with the handler's exception as
    ``__cause__``; with ``on_error="continue"`` it keeps going and the exceptions are logged
    and kept in :attr:`errors`.

    ::

        def handle(batch):
            for ev in batch:
                print(ev.ev_id, ev.ev_data)

        with client.worker("orders", "mailer", handle) as worker:
            worker.run()        # until Ctrl-C (a clean stop) or a handler error
    """

    _what = "worker"

    def __init__(self, client: "Client", queue: Text, consumer: Text, handler: BatchHandler,
                 *, workers: Optional[int] = None, fetch_size: Optional[int] = None,
                 idle_poll: Optional[Union[float, datetime.timedelta]] = None,
                 on_error: str = "stop") -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if on_error not in ("stop", "continue"):
            raise ValueError(f"on_error must be 'stop' or 'continue', not {on_error!r}")
        lib = _ffi.lib()
        start = lib.require("pgq_worker_start")
        q = encode(queue, "queue")
        c = encode(consumer, "consumer")
        opts = lib.require("pgq_worker_options_new")()
        err = c_void_p()
        try:
            if workers is not None:
                self._set(opts, "workers", c_uint32, _count(workers, "workers"))
            if fetch_size is not None:
                self._set(opts, "fetch_size", c_uint32, _count(fetch_size, "fetch_size"))
            if idle_poll is not None:
                self._set(opts, "idle_poll_ms", c_uint64, delay_ms(idle_poll, "idle_poll"))
        except BaseException:
            lib.require("pgq_worker_options_free")(opts)
            raise
        slot = _Slot(handler)
        with _slots_lock:
            sid = next(_slot_ids)
            _slots[sid] = slot
        out = c_void_p()
        # Options are consumed; on failure libpgq calls _free_slot(user_data) itself.
        st = start(client._ptr(), q, len(q), c, len(c), opts, _trampoline, sid, _free_slot,
                   byref(out), byref(err))
        if st != 0:
            with _slots_lock:
                _slots.pop(sid, None)
            check(st, err)
        super().__init__(out.value or 0, lib.require("pgq_worker_free"))
        self._client = client
        self._slot = slot
        slot.worker = self
        self.queue = q.decode()
        self.consumer = c.decode()
        self._on_error = on_error
        self._failed = threading.Event()
        self._stopped = False

    @staticmethod
    def _set(opts: int, name: str, ctype: Any, value: int) -> None:
        lib = _ffi.lib()
        fn = lib.declare(f"pgq_worker_options_set_{name}", _ffi.status,
                         [c_void_p, ctype, _ffi._err])
        if fn is None:
            raise NotImplementedError(f"this libpgq has no worker option {name}")
        err = c_void_p()
        check(fn(opts, value, byref(err)), err)

    def _handler_failed(self, e: BaseException) -> None:
        # Called on a worker thread.
        if self._on_error == "stop":
            self._failed.set()
            try:
                self.stop()
            except Exception:
                pass
        else:
            log.error("libpgq worker %s/%s: handler raised %r; the batch will come again",
                      self.queue, self.consumer, e)

    @property
    def errors(self) -> List[BaseException]:
        """Exceptions handlers raised so far (oldest first)."""
        with self._slot.lock:
            return list(self._slot.errors)

    @property
    def batches_handled(self) -> int:
        """Batches whose handler returned normally (counted on the Python side)."""
        with self._slot.lock:
            return self._slot.batches

    def stop(self) -> None:
        """Ask the worker threads to stop after their current batch (returns at once;
        idempotent, callable from a handler)."""
        lib = _ffi.lib()
        ptr = self._handle
        if ptr is None:
            return
        err = c_void_p()
        check(lib.require("pgq_worker_stop")(ptr, byref(err)), err)

    def join(self) -> None:
        """Wait until the worker threads have stopped (after :meth:`stop` or a handler
        error with ``on_error="stop"``). Raises :class:`HandlerError` if a handler failed."""
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            ptr = self._handle
            if ptr is not None:
                st = lib.require("pgq_worker_join")(ptr, byref(err))
                if st != 0:
                    try:
                        check(st, err)
                    except StoppedError:
                        pass
                self.close()
        self._raise_handler_error()

    def _raise_handler_error(self) -> None:
        if self._on_error == "stop":
            errs = self.errors
            if errs:
                first = errs[0]
                raise HandlerError(f"the batch handler raised {type(first).__name__}: {first}"
                                   ) from first

    def run(self, timeout: Optional[float] = None) -> None:
        """Block until the worker stops: a handler error (raised here as
        :class:`HandlerError`), :meth:`stop` from another thread or a handler, ``timeout``
        seconds, or Ctrl-C, which stops the worker cleanly (the current batch is finished
        or left for redelivery) and returns normally."""
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._failed.is_set() and not self._stopped:
                if end is not None:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._failed.wait(min(left, 0.2))
                else:
                    self._failed.wait(0.2)
        except KeyboardInterrupt:
            log.info("libpgq worker %s/%s: interrupted, stopping", self.queue, self.consumer)
        self.stop()
        self.join()

    def stats(self) -> Dict[str, int]:
        """The library's counters for this worker (batches, events, errors, ...)."""
        raise NotImplementedError("declared once the C header has pgq_worker_stats")

    def close(self) -> None:
        """Stop and join the threads, and free the worker (errors are not raised)."""
        with self._lock:
            self._stopped = True
            Handle.close(self)

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._handle is not None:
            self.stop()
            self.join() if exc_type is None else self.close()
        elif exc_type is None:
            self._raise_handler_error()


def _count(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")
    if not 0 < n < 2**32:
        raise ValueError(f"{what} must be at least 1, not {n}")
    return n

