"""The pull consumer: ask for a batch, read its events, finish it."""

from __future__ import annotations

import ctypes
import datetime
import struct
import time
from ctypes import byref, c_bool, c_void_p
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Type, Union

from . import _ffi
from ._error import check
from ._event import Event, delay_ms, from_us
from ._handle import Handle, Text, encode

if TYPE_CHECKING:
    from ._client import Client

# pgq_event_fields as struct.unpack_from sees it (native sizes and alignment, like C).
_FIELDS_LAYOUT = struct.Struct("@IiqqqPNPNPNPNPNPN")
_FIELDS_LAYOUT_OK = _FIELDS_LAYOUT.size == ctypes.sizeof(_ffi.pgq_event_fields)

# Waiting "forever" happens in slices this long, so that Ctrl-C (which Python only sees
# between C calls) stops a waiting consumer promptly.
_WAIT_SLICE_MS = 250


def _text(s: Any) -> Optional[str]:
    d = s.data
    return bytes(d[: s.len]).decode("utf-8", "replace") if d else None


def _timeout_ms(timeout: Optional[Union[float, datetime.timedelta]]) -> Optional[int]:
    if timeout is None:
        return None
    return delay_ms(timeout, "timeout")


class Consumer(Handle):
    """A pull consumer: one registered consumer of one queue.

    Made by :meth:`Client.consumer`. Not for use from several threads at once (calls are
    serialised by a lock, but batches come one at a time: use one consumer per thread, or a
    worker). With a ``subconsumer`` name it is a cooperative consumer (``pgq_coop``): the
    subconsumers of one consumer share its batches, each batch going to one of them, and
    with ``dead_interval`` one takes over the open batch of a sibling silent that long.

    ::

        with client.consumer("orders", "mailer") as consumer:
            for batch in consumer.batches(timeout=5):
                with batch:
                    for ev in batch:
                        handle(ev.ev_type, ev.ev_data)
    """

    _what = "consumer"

    def __init__(self, client: "Client", queue: Text, name: Text,
                 fetch_size: Optional[int] = None, poll_only: Optional[bool] = None,
                 poll_interval: Optional[Union[float, datetime.timedelta]] = None,
                 subconsumer: Optional[Text] = None,
                 dead_interval: Optional[Union[float, datetime.timedelta]] = None,
                 read_ahead: Optional[bool] = None) -> None:
        lib = _ffi.lib()
        q = encode(queue, "queue")
        n = encode(name, "consumer name")
        out = c_void_p()
        err = c_void_p()
        with client._use() as cptr:
            check(lib.pgq_consumer_new(cptr, q, len(q), n, len(n), byref(out), byref(err)), err)
        super().__init__(out.value or 0, lib.pgq_consumer_free)
        self._client = client  # keeps the client alive at least as long as this consumer
        self.queue: str = q.decode()
        self.name: str = n.decode()
        self._batch: Optional[Batch] = None
        self.subconsumer: Optional[str] = None
        if subconsumer is not None:
            sub = encode(subconsumer, "subconsumer")
            ms = 0 if dead_interval is None else delay_ms(dead_interval, "dead_interval")
            err = c_void_p()
            check(lib.require("pgq_consumer_set_subconsumer")(self._ptr(), sub, len(sub), ms,
                                                               byref(err)), err)
            self.subconsumer = sub.decode()
        elif dead_interval is not None:
            raise ValueError("dead_interval needs a subconsumer")
        if fetch_size is not None:
            self.set_fetch_size(fetch_size)
        if read_ahead is not None:
            err = c_void_p()
            check(lib.require("pgq_consumer_set_read_ahead")(self._ptr(), bool(read_ahead),
                                                              byref(err)), err)
        if poll_only is not None or poll_interval is not None:
            err = c_void_p()
            if poll_only is not None:
                check(lib.pgq_consumer_set_poll_only(self._ptr(), bool(poll_only), byref(err)),
                      err)
            if poll_interval is not None:
                ms = delay_ms(poll_interval, "poll_interval")
                check(lib.pgq_consumer_set_poll_interval_ms(self._ptr(), ms, byref(err)), err)

    def register(self) -> bool:
        """Register this consumer on its queue (a cooperative one: its subconsumer, and the
        consumer too if needed); True if new, False if it already was."""
        lib = _ffi.lib()
        created = c_bool()
        err = c_void_p()
        fn = (lib.pgq_consumer_register if self.subconsumer is None
              else lib.require("pgq_consumer_register_subconsumer"))
        with self._lock:
            check(fn(self._ptr(), byref(created), byref(err)), err)
        return bool(created.value)

    def unregister(self, release_batch: bool = False) -> None:
        """Unregister this consumer from its queue (its pending retries are dropped). A
        cooperative consumer unregisters only its subconsumer; if that has an open batch
        this raises :class:`BatchOpenError` unless ``release_batch``, which leaves the
        batch to a sibling."""
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            if self.subconsumer is None:
                check(lib.pgq_consumer_unregister(self._ptr(), byref(err)), err)
            else:
                fn = lib.require("pgq_consumer_unregister_subconsumer")
                check(fn(self._ptr(), bool(release_batch), byref(err)), err)

    def set_fetch_size(self, n: int) -> None:
        """How many events libpgq reads from the server per round trip."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"fetch_size must be an int, not {type(n).__name__}")
        if not 0 < n < 2**32:
            raise ValueError(f"fetch_size must be between 1 and {2**32 - 1}, not {n}")
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            check(lib.pgq_consumer_set_fetch_size(self._ptr(), n, byref(err)), err)

    def next_batch(self, timeout: Optional[Union[float, datetime.timedelta]] = 0
                   ) -> Optional["Batch"]:
        """The next batch, or ``None`` if none came within ``timeout`` seconds (0: do not
        wait; ``None``: wait until one comes).

        While waiting the consumer listens for the ticker's wake-ups (unless ``poll_only``)
        and polls every ``poll_interval``; the GIL is released meanwhile, and the wait is
        cut in slices of a quarter second so that Ctrl-C stops it. A batch that is still
        open from an earlier call is closed unfinished first (it will be delivered again).
        """
        ms = _timeout_ms(timeout)
        lib = _ffi.lib()
        with self._lock:
            if self._batch is not None and not self._batch.closed:
                self._batch.close()
            self._batch = None
            deadline = None if ms is None else time.monotonic() + ms / 1000
            out = c_void_p()
            err = c_void_p()
            while True:
                if deadline is None:
                    wait = _WAIT_SLICE_MS
                else:
                    left = max(0, round((deadline - time.monotonic()) * 1000))
                    wait = min(left, _WAIT_SLICE_MS)
                check(lib.pgq_consumer_next_batch(self._ptr(), wait, byref(out), byref(err)),
                      err)
                if out.value:
                    self._batch = Batch(out.value)
                    return self._batch
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def batches(self, timeout: Optional[Union[float, datetime.timedelta]] = None
                ) -> Iterator["Batch"]:
        """Yield batches as they come; stop when none came within ``timeout`` seconds
        (``None``: never stop by itself).

        Use each batch as a context manager: ``with batch:`` finishes it when the block
        ends normally and leaves it for redelivery when the block raises. A batch the loop
        body left open is finished when the loop asks for the next one (the body ran to
        its end); when the loop ends early (``break``, an exception) the open batch is
        released unfinished and will be delivered again.
        """
        batch = self.next_batch(timeout)
        while batch is not None:
            try:
                yield batch
            except GeneratorExit:
                batch.close()
                raise
            # An open batch is finished and the next one taken in one call when there is
            # one already; otherwise wait for it.
            following = self.finish_and_next(batch) if not batch.closed else None
            batch = following if following is not None else self.next_batch(timeout)

    def finish_and_next(self, batch: "Batch") -> Optional["Batch"]:
        """Finish ``batch`` (one of this consumer's) and take the next batch in the same
        transaction: one round trip and one commit fewer than :meth:`Batch.finish` followed
        by :meth:`next_batch`, and with ``read_ahead`` (the default) the next batch may
        already have been read while ``batch`` was handled. Returns ``None`` when there is
        no next batch yet (wait for it with :meth:`next_batch`). ``batch`` is consumed, also
        when this raises (then nothing was committed and it comes again).

        ::

            batch = consumer.next_batch(timeout=None)
            while batch is not None:
                for ev in batch:
                    handle(ev)
                batch = consumer.finish_and_next(batch) or consumer.next_batch(timeout=None)
        """
        lib = _ffi.lib()
        fn = lib.pgq_batch_finish_next
        if fn is None:  # an older library
            batch.finish()
            return None
        out = c_void_p()
        err = c_void_p()
        with self._lock:
            consumer = self._ptr()
            with batch._lock:
                ptr = batch._take()
                check(fn(ptr, consumer, byref(out), byref(err)), err)
                batch._done = True
            self._batch = Batch(out.value) if out.value else None
            return self._batch

    def close(self) -> None:
        """Release an open batch (unfinished: it comes again) and free the consumer."""
        b = self._batch
        if b is not None:
            b.close()
            self._batch = None
        super().close()


class Batch(Handle):
    """One batch: iterate it for its events, then :meth:`finish` it.

    As a context manager it finishes when the block ends normally and is released
    unfinished (delivered again later) when the block raises.

    Attributes: ``id`` (batch id), ``tick_id`` (the tick the batch ends at),
    ``prev_tick_id`` (the tick it starts after, when known), ``tick_time`` (when the end
    tick was taken), ``queue``, ``consumer``, ``subconsumer`` (cooperative mode, else
    ``None``).
    """

    _what = "batch"

    def __init__(self, ptr: int, free: Optional[Callable[[Any], None]] = None) -> None:
        lib = _ffi.lib()
        super().__init__(ptr, lib.pgq_batch_free if free is None else free)
        self.queue: str = _text(lib.pgq_batch_queue(ptr)) or ""
        self.consumer: str = _text(lib.pgq_batch_consumer(ptr)) or ""
        self.subconsumer: Optional[str] = _text(lib.pgq_batch_subconsumer(ptr))
        self.tick_time: datetime.datetime = from_us(lib.pgq_batch_tick_time_us(ptr))
        self.id: int = lib.pgq_batch_id(ptr)
        self.tick_id: int = lib.pgq_batch_tick_id(ptr)
        prev = lib.pgq_batch_prev_tick_id(ptr)
        self.prev_tick_id: Optional[int] = None if prev < 0 else prev
        self._done = False

    @property
    def looked_ahead(self) -> bool:
        """Whether the server read and sorted this batch while the batch before it was
        handled (``read_ahead``, on by default; a batch :meth:`Consumer.batches` took after
        a batch bigger than one fetch). False with a library that cannot do that."""
        ptr = self._handle
        fn = _ffi.lib().pgq_batch_looked_ahead
        return bool(ptr is not None and fn is not None and fn(ptr))

    @property
    def is_stopping(self) -> bool:
        """Inside a worker's handler: whether the worker is stopping (a long handler may
        cut its work short and raise, to have the batch delivered again later). Always
        False for a pull consumer's batch."""
        ptr = self._handle
        return bool(ptr is not None and _ffi.lib().pgq_batch_is_stopping(ptr))

    def __iter__(self) -> Iterator[Event]:
        """The batch's events in ev_id order, streamed from the server (each event is read
        once; iterating again continues where the last iteration stopped)."""
        lib = _ffi.lib()
        if lib.pgq_batch_next_event_fields is not None and _FIELDS_LAYOUT_OK:
            return self._iter_fields(lib)
        return self._iter_accessors(lib)

    def _iter_fields(self, lib: _ffi.Lib) -> Iterator[Event]:
        # One C call per event fills a pgq_event_fields; the numbers and pointers come out
        # of it with one struct.unpack_from, and only non-NULL text fields are copied.
        next_fields = lib.pgq_batch_next_event_fields
        f = _ffi.pgq_event_fields()
        f.struct_size = ctypes.sizeof(f)
        raw = memoryview(f).cast("B")
        unpack = _FIELDS_LAYOUT.unpack_from
        out = c_void_p()
        err = c_void_p()
        pout, pf, perr = byref(out), byref(f), byref(err)
        new = Event.__new__
        lock = self._lock
        while True:
            with lock:
                ptr = self._handle
                if ptr is None:
                    self._ptr()  # raises InvalidStateError
                st = next_fields(ptr, pout, pf, perr)
                if st:
                    check(st, err)
                if not out.value:
                    return
                (_, r, e_id, e_time, e_txid, p_type, n_type, p_data, n_data, p_e1, n_e1,
                 p_e2, n_e2, p_e3, n_e3, p_e4, n_e4) = unpack(raw)
                e = new(Event)
                e.ev_id = e_id
                e.ev_time_us = e_time
                e.ev_txid = e_txid
                e.ev_retry = None if r < 0 else r
                e.ev_type = f.type.data[:n_type].decode() if p_type else None
                e.ev_data = f.data.data[:n_data].decode() if p_data else None
                e.ev_extra1 = f.extra1.data[:n_e1].decode() if p_e1 else None
                e.ev_extra2 = f.extra2.data[:n_e2].decode() if p_e2 else None
                e.ev_extra3 = f.extra3.data[:n_e3].decode() if p_e3 else None
                e.ev_extra4 = f.extra4.data[:n_e4].decode() if p_e4 else None
                e._batch = self
            yield e

    def _iter_accessors(self, lib: _ffi.Lib) -> Iterator[Event]:
        # For a library without pgq_batch_next_event_fields: ten accessor calls per event.
        next_event = lib.pgq_batch_next_event
        ev_id = lib.pgq_event_id
        ev_time = lib.pgq_event_time_us
        ev_txid = lib.pgq_event_txid
        ev_retry = lib.pgq_event_retry
        texts = (lib.pgq_event_type, lib.pgq_event_data, lib.pgq_event_extra1,
                 lib.pgq_event_extra2, lib.pgq_event_extra3, lib.pgq_event_extra4)
        t_type, t_data, t_e1, t_e2, t_e3, t_e4 = texts
        out = c_void_p()
        err = c_void_p()
        pout = byref(out)
        perr = byref(err)
        new = Event.__new__
        lock = self._lock

        # Hot loop: everything is a local, and the text fields are copied with pointer
        # slices (see _ffi.pgq_str); the event view is only valid until the next call.
        while True:
            with lock:
                ptr = self._handle
                if ptr is None:
                    self._ptr()  # raises InvalidStateError
                st = next_event(ptr, pout, perr)
                if st:
                    check(st, err)
                p = out.value
                if not p:
                    return
                e = new(Event)
                e.ev_id = ev_id(p)
                e.ev_time_us = ev_time(p)
                e.ev_txid = ev_txid(p)
                r = ev_retry(p)
                e.ev_retry = None if r < 0 else r
                s = t_type(p)
                d = s.data
                e.ev_type = d[: s.len].decode() if d else None
                s = t_data(p)
                d = s.data
                e.ev_data = d[: s.len].decode() if d else None
                s = t_e1(p)
                d = s.data
                e.ev_extra1 = d[: s.len].decode() if d else None
                s = t_e2(p)
                d = s.data
                e.ev_extra2 = d[: s.len].decode() if d else None
                s = t_e3(p)
                d = s.data
                e.ev_extra3 = d[: s.len].decode() if d else None
                s = t_e4(p)
                d = s.data
                e.ev_extra4 = d[: s.len].decode() if d else None
                e._batch = self
            yield e

    def events(self) -> List[Event]:
        """All (remaining) events of the batch as a list."""
        return list(self)

    def retry(self, event: Union[Event, int], delay: Union[float, datetime.timedelta] = 60
              ) -> None:
        """Have one event (an :class:`Event` or an ev_id) delivered again to this consumer
        after ``delay`` seconds. Takes effect when the batch is finished."""
        ev_id = event.ev_id if isinstance(event, Event) else event
        if isinstance(ev_id, bool) or not isinstance(ev_id, int):
            raise TypeError(f"event must be an Event or an ev_id int, not {type(event).__name__}")
        ms = delay_ms(delay)
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            check(lib.pgq_batch_retry(self._ptr(), ev_id, ms, byref(err)), err)

    def finish(self) -> None:
        """Close the batch as processed: its events are done (except those given to
        :meth:`retry`). The batch is consumed, also when this raises."""
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            ptr = self._take()
            check(lib.pgq_batch_finish(ptr, byref(err)), err)
            self._done = True

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` succeeded."""
        return self._done

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None and not self.closed:
            self.finish()
        else:
            self.close()

    def __repr__(self) -> str:
        state = "finished" if self._done else ("closed" if self.closed else "open")
        return f"<Batch id={self.id} tick_id={self.tick_id} {state}>"
