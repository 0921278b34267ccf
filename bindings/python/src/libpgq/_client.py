"""The client: connections, admin, producing, and the factories for consumers and workers."""

from __future__ import annotations

import contextlib
import datetime
import threading
from ctypes import byref, c_bool, c_int64, c_uint64, c_void_p
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, List, Optional, Type, Union

from . import _ffi
from ._consumer import Consumer
from ._error import check
from ._event import EventLike, delay_ms, event_array, one_event
from ._handle import Handle, Text, encode
from ._info import ConsumerInfo, QueueInfo, read_consumer_list, read_queue_info, read_queue_list

if TYPE_CHECKING:
    from ._ticker import Ticker
    from ._worker import BatchHandler, Worker


def connect(dsn: Text, *, pool_size: Optional[int] = None,
            connect_timeout: Optional[Union[float, datetime.timedelta]] = None,
            transaction_pooling: bool = False) -> "Client":
    """Connect to a PostgreSQL database and return a :class:`Client`.

    ``dsn`` is a libpq-style ``key=value`` string or a ``postgresql://`` URL.
    ``pool_size`` caps the connections the client keeps open; ``connect_timeout`` (seconds)
    bounds each connection attempt.

    ``transaction_pooling=True`` is for a DSN that points at a connection pooler in
    transaction pooling mode (PgBouncer ``pool_mode = transaction``): every statement is then
    sent unnamed and no session state is used, so workers and :meth:`Consumer.wait_batch`
    only poll (no ``LISTEN``), and :meth:`Client.ticker` raises :class:`InvalidInputError`
    (the ticker needs a direct connection; give it a client without the pooler).

    ::

        with libpgq.connect("host=localhost dbname=app") as client:
            client.install()
            client.create_queue("orders")
    """
    return Client(dsn, pool_size=pool_size, connect_timeout=connect_timeout,
                  transaction_pooling=transaction_pooling)


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TypeError(f"a queue setting must be str, int, float, bool or timedelta, "
                    f"not {type(value).__name__}")


class Client(Handle):
    """A connection pool to one database; safe to share between threads.

    Admin (:meth:`install`, :meth:`create_queue`, ...), producing (:meth:`send`,
    :meth:`send_many`, :meth:`transaction`), and the factories :meth:`consumer`,
    :meth:`worker` and :meth:`ticker`. Close it (or use ``with``) when done; consumers,
    workers and tickers made from it keep it alive until they are closed too.
    """

    _what = "client"

    def __init__(self, dsn: Text, *, pool_size: Optional[int] = None,
                 connect_timeout: Optional[Union[float, datetime.timedelta]] = None,
                 transaction_pooling: bool = False) -> None:
        lib = _ffi.lib()
        d = encode(dsn, "dsn")
        if not isinstance(transaction_pooling, bool):
            raise TypeError("transaction_pooling must be a bool")
        opts = None
        err = c_void_p()
        if pool_size is not None or connect_timeout is not None or transaction_pooling:
            opts = lib.pgq_client_options_new()
            try:
                if pool_size is not None:
                    if isinstance(pool_size, bool) or not isinstance(pool_size, int):
                        raise TypeError("pool_size must be an int")
                    if not 0 < pool_size < 2**32:
                        raise ValueError(f"pool_size must be at least 1, not {pool_size}")
                    check(lib.pgq_client_options_set_pool_size(opts, pool_size, byref(err)),
                          err)
                if connect_timeout is not None:
                    ms = delay_ms(connect_timeout, "connect_timeout")
                    check(lib.pgq_client_options_set_connect_timeout_ms(opts, ms, byref(err)),
                          err)
                if transaction_pooling:
                    check(lib.pgq_client_options_set_transaction_pooling(opts, True,
                                                                         byref(err)), err)
            except BaseException:
                lib.pgq_client_options_free(opts)
                raise
        out = c_void_p()
        # The options are consumed by connect, success or not.
        check(lib.pgq_client_connect(d, len(d), opts, byref(out), byref(err)), err)
        super().__init__(out.value or 0, lib.pgq_client_free)
        # Calls in flight on other threads; close() waits for them (a client is shared
        # between threads, and freeing it under a running call would crash the process).
        self._users = 0
        self._users_done = threading.Condition(threading.Lock())

    def _acquire(self) -> int:
        """The pointer, counted as in use until :meth:`_release`."""
        with self._users_done:
            ptr = self._ptr()
            self._users += 1
            return ptr

    def _release(self) -> None:
        with self._users_done:
            self._users -= 1
            if self._users == 0:
                self._users_done.notify_all()

    @contextlib.contextmanager
    def _use(self) -> Iterator[int]:
        ptr = self._acquire()
        try:
            yield ptr
        finally:
            self._release()

    def close(self) -> None:
        """Close the pool once the calls other threads have in flight have returned (new
        calls fail with :class:`InvalidStateError` at once). Safe to call more than once;
        consumers, transactions, workers and tickers made from it keep working."""
        users_done = getattr(self, "_users_done", None)
        if users_done is None:  # __init__ failed before the counter existed
            super().close()
            return
        with users_done:
            with self._swap_lock:
                ptr, free = self._handle, self._free
                self._handle = None
                self._free = None
            while self._users:
                users_done.wait()
        if ptr is not None and free is not None:
            free(ptr)

    # ---- admin ----

    def install(self) -> None:
        """Install or upgrade the PGQ schema in the database (idempotent)."""
        lib = _ffi.lib()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_install(ptr, byref(err)), err)

    def create_queue(self, queue: Text) -> bool:
        """Create a queue; True if it was created, False if it existed already."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        created = c_bool()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_create_queue(ptr, q, len(q), byref(created), byref(err)), err)
        return bool(created.value)

    def drop_queue(self, queue: Text, force: bool = False) -> None:
        """Drop a queue and its events. With consumers registered this raises
        :class:`ConsumersAttachedError` unless ``force`` (which unregisters them)."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_drop_queue(ptr, q, len(q), bool(force), byref(err)), err)

    def set_queue_config(self, queue: Text, param: Text, value: Any) -> None:
        """Set one queue setting: ``ticker_max_count``, ``ticker_max_lag``,
        ``ticker_idle_period``, ``ticker_paused``, ``rotation_period`` or
        ``external_ticker``. Values may be text, numbers, bools or timedeltas."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        p = encode(param, "param")
        v = encode(_config_value(value), "value")
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_set_queue_config(ptr, q, len(q), p, len(p), v, len(v),
                                           byref(err)), err)

    def configure(self, queue: Text, **settings: Any) -> None:
        """Several settings at once:
        ``client.configure("q", ticker_max_lag=timedelta(seconds=1), ticker_max_count=100)``."""
        for param, value in settings.items():
            self.set_queue_config(queue, param, value)

    def register_consumer(self, queue: Text, consumer: Text) -> bool:
        """Register a consumer; True if new, False if it was registered already. It receives
        the events of batches after the newest tick."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        c = encode(consumer, "consumer")
        created = c_bool()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_register_consumer(ptr, q, len(q), c, len(c), byref(created),
                                            byref(err)), err)
        return bool(created.value)

    def register_consumer_at(self, queue: Text, consumer: Text, tick_id: int) -> bool:
        """Register a consumer to start after tick ``tick_id``, or move an existing one
        there (dropping its open batch); True if it was new."""
        if isinstance(tick_id, bool) or not isinstance(tick_id, int):
            raise TypeError(f"tick_id must be an int, not {type(tick_id).__name__}")
        lib = _ffi.lib()
        q = encode(queue, "queue")
        c = encode(consumer, "consumer")
        created = c_bool()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_register_consumer_at(ptr, q, len(q), c, len(c), tick_id,
                                               byref(created), byref(err)), err)
        return bool(created.value)

    def unregister_consumer(self, queue: Text, consumer: Text) -> None:
        """Unregister a consumer (its pending retries are dropped)."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        c = encode(consumer, "consumer")
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_unregister_consumer(ptr, q, len(q), c, len(c), byref(err)), err)

    def tick(self) -> int:
        """One ticker round (``pgq.ticker()``): tick every queue that is due; returns how
        many ticked. Normally a :meth:`ticker` thread (or pgqd) does this."""
        lib = _ffi.lib()
        n = c_int64()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_tick(ptr, byref(n), byref(err)), err)
        return int(n.value)

    def force_tick(self, queue: Text) -> None:
        """Make the next ticker round tick this queue, due or not."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_force_tick(ptr, q, len(q), byref(err)), err)

    def tick_queue(self, queue: Text) -> Optional[int]:
        """Tick one queue if it is due (``pgq.ticker(queue)``); the new tick id, or ``None``
        when it was not due."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        tick = c_int64()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_tick_queue(ptr, q, len(q), byref(tick), byref(err)), err)
        return None if tick.value < 0 else int(tick.value)

    def retry_events(self) -> int:
        """Move retry events whose time has come back into their queues
        (``pgq.maint_retry_events()`` until nothing is left); returns how many moved."""
        lib = _ffi.lib()
        n = c_uint64()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_retry_events(ptr, byref(n), byref(err)), err)
        return int(n.value)

    def maintenance(self) -> int:
        """Run the due maintenance operations (table rotation, vacuum); returns how many."""
        lib = _ffi.lib()
        n = c_uint64()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_maintenance(ptr, byref(n), byref(err)), err)
        return int(n.value)

    def queue_info(self, queue: Text) -> QueueInfo:
        """One queue's state (:class:`QueueInfo`)."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        out = c_void_p()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_queue_info_get(ptr, q, len(q), byref(out), byref(err)), err)
        try:
            return read_queue_info(out.value or 0)
        finally:
            lib.pgq_queue_info_free(out)

    def queues(self) -> List[QueueInfo]:
        """Every queue, by name."""
        lib = _ffi.lib()
        out = c_void_p()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_queue_list_get(ptr, byref(out), byref(err)), err)
        try:
            return read_queue_list(out.value or 0)
        finally:
            lib.pgq_queue_list_free(out)

    def consumers(self, queue: Optional[Text] = None) -> List[ConsumerInfo]:
        """Consumers of one queue, or of every queue (:class:`ConsumerInfo`)."""
        lib = _ffi.lib()
        q = None if queue is None else encode(queue, "queue")
        out = c_void_p()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_consumer_list_get(ptr, q, 0 if q is None else len(q),
                                            byref(out), byref(err)), err)
        try:
            return read_consumer_list(out.value or 0)
        finally:
            lib.pgq_consumer_list_free(out)

    # ---- producer ----

    def send(self, queue: Text, type: Optional[Text], data: Optional[Text] = None,
             extra1: Optional[Text] = None, extra2: Optional[Text] = None,
             extra3: Optional[Text] = None, extra4: Optional[Text] = None) -> int:
        """Insert one event in its own transaction; returns its ev_id."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        keep: List[Any] = []
        ev = one_event(type, data, (extra1, extra2, extra3, extra4), keep)
        ev_id = c_int64()
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_send(ptr, q, len(q), byref(ev), byref(ev_id), byref(err)), err)
        return int(ev_id.value)

    def send_many(self, queue: Text, events: Iterable[EventLike]) -> int:
        """Insert many events in one transaction (COPY: fast); all or none. Each event is a
        :class:`NewEvent`, a tuple ``(type, data, extra1, ...)`` or a mapping. Returns how
        many were sent."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        keep: List[Any] = []
        arr, n = event_array(events, keep)
        err = c_void_p()
        with self._use() as ptr:
            check(lib.pgq_send_many(ptr, q, len(q), arr, n, byref(err)), err)
        return n

    def transaction(self) -> "Transaction":
        """A transaction on one pooled connection: events sent through it (and SQL run in
        it) commit together on :meth:`Transaction.commit` or at the end of a ``with`` block
        that did not raise, and roll back otherwise."""
        return Transaction(self)

    # ---- consumers, workers, ticker ----

    def consumer(self, queue: Text, name: Text, *, register: bool = False,
                 fetch_size: Optional[int] = None, poll_only: Optional[bool] = None,
                 poll_interval: Optional[Union[float, datetime.timedelta]] = None,
                 subconsumer: Optional[Text] = None,
                 dead_interval: Optional[Union[float, datetime.timedelta]] = None,
                 read_ahead: Optional[bool] = None) -> Consumer:
        """A pull :class:`Consumer` (``register=True`` registers it on the queue first).

        ``fetch_size``: events read per round trip; ``poll_only``: never LISTEN for the
        ticker's wake-ups (e.g. behind PgBouncer); ``poll_interval``: seconds between polls
        while waiting; ``subconsumer`` (and ``dead_interval``): a cooperative consumer, see
        :class:`Consumer`; ``read_ahead=False``: fetch only when events are needed, and never
        read the next batch ahead on another pooled connection (default on: a batch bigger
        than one fetch has its next chunk, and under :meth:`Consumer.batches` on libpgq's
        schema the next batch, read while its events are handled)."""
        c = Consumer(self, queue, name, fetch_size, poll_only, poll_interval, subconsumer,
                     dead_interval, read_ahead)
        if register:
            try:
                c.register()
            except BaseException:
                c.close()
                raise
        return c

    def worker(self, queue: Text, consumer: Text, handler: "BatchHandler",
               **options: Any) -> "Worker":
        """Run ``handler(batch)`` on libpgq's worker threads; see :class:`Worker` for the
        options."""
        from ._worker import Worker

        return Worker(self, queue, consumer, handler, **options)

    def ticker(self, **options: Any) -> "Ticker":
        """Start a ticker thread for this database; see :class:`Ticker`."""
        from ._ticker import Ticker

        return Ticker(self, **options)


class Transaction(Handle):
    """Events and SQL that commit or roll back together.

    ::

        with client.transaction() as tx:
            tx.execute("update orders set state = 'paid' where id = 42")
            tx.send("orders", "order.paid", '{"id": 42}')
        # committed here; an exception in the block rolls everything back

    Not for use from several threads at once.
    """

    _what = "transaction"

    def __init__(self, client: Client) -> None:
        lib = _ffi.lib()
        out = c_void_p()
        err = c_void_p()
        with client._use() as cptr:
            check(lib.pgq_tx_begin(cptr, byref(out), byref(err)), err)
        super().__init__(out.value or 0, lib.pgq_tx_free)
        self._client = client

    def send(self, queue: Text, type: Optional[Text], data: Optional[Text] = None,
             extra1: Optional[Text] = None, extra2: Optional[Text] = None,
             extra3: Optional[Text] = None, extra4: Optional[Text] = None) -> int:
        """Insert one event in this transaction; returns its ev_id."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        keep: List[Any] = []
        ev = one_event(type, data, (extra1, extra2, extra3, extra4), keep)
        ev_id = c_int64()
        err = c_void_p()
        with self._lock:
            check(lib.pgq_tx_send(self._ptr(), q, len(q), byref(ev), byref(ev_id),
                                  byref(err)), err)
        return int(ev_id.value)

    def send_many(self, queue: Text, events: Iterable[EventLike]) -> int:
        """Insert many events in this transaction (COPY); returns how many."""
        lib = _ffi.lib()
        q = encode(queue, "queue")
        keep: List[Any] = []
        arr, n = event_array(events, keep)
        err = c_void_p()
        with self._lock:
            check(lib.pgq_tx_send_many(self._ptr(), q, len(q), arr, n, byref(err)), err)
        return n

    def execute(self, sql: Text) -> None:
        """Run SQL in this transaction (no parameters, results are discarded)."""
        lib = _ffi.lib()
        s = encode(sql, "sql")
        err = c_void_p()
        with self._lock:
            check(lib.pgq_tx_execute(self._ptr(), s, len(s), byref(err)), err)

    def commit(self) -> None:
        """Commit. The transaction is over afterwards, also when this raises."""
        lib = _ffi.lib()
        err = c_void_p()
        with self._lock:
            ptr = self._take()
            check(lib.pgq_tx_commit(ptr, byref(err)), err)

    def rollback(self) -> None:
        """Roll back (also what closing an uncommitted transaction does)."""
        lib = _ffi.lib()
        with self._lock:
            if self._handle is not None:
                lib.pgq_tx_rollback(self._take())

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None and not self.closed:
            self.commit()
        else:
            self.rollback()

