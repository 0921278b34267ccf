"""The ticker thread: cuts batches (``pgq.ticker()``), moves due retries, runs maintenance."""

from __future__ import annotations

import datetime
import atexit
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
from typing import TYPE_CHECKING, Any, List, Optional, Type, Union

from . import _ffi
from ._error import InvalidStateError, check
from ._event import delay_ms, from_us
from ._handle import Handle, Text, encode

if TYPE_CHECKING:
    from ._client import Client

Seconds = Union[float, datetime.timedelta]


class _CTickerStats(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("active", c_uint32),
        ("standby", c_uint32),
        ("ticks", c_uint64),
        ("rounds", c_uint64),
        ("retry_events_moved", c_uint64),
        ("maintenance_runs", c_uint64),
        ("maintenance_calls", c_uint64),
        ("tables_vacuumed", c_uint64),
        ("errors", c_uint64),
        ("reconnects", c_uint64),
        ("last_tick_us", c_int64),
        # Later fields: a library older than them fills only what comes before; they then
        # stay 0.
        ("full_rounds", c_uint64),
    ]


@dataclass(frozen=True)
class TickerStats:
    """Counters of a running ticker (:meth:`Ticker.stats`)."""

    #: Databases this ticker ticks now / waits on because another ticker holds them.
    active: int
    standby: int
    ticks: int
    rounds: int
    retry_events_moved: int
    maintenance_runs: int
    maintenance_calls: int
    tables_vacuumed: int
    errors: int
    reconnects: int
    last_tick_time: Optional[datetime.datetime]
    #: Rounds that ran the full ``pgq.ticker()`` (not only the cheap checks); 0 with a
    #: library that does not count them.
    full_rounds: int = 0


_live: "weakref.WeakSet[Ticker]" = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for t in list(_live):
        try:
            t.close()
        except BaseException:  # noqa: B036
            pass


class Ticker(Handle):
    """A libpgq ticker thread for the client's database (replaces ``pgqd``).

    Runs from creation until :meth:`stop` and :meth:`join` (or the end of a ``with`` block).
    Only one ticker ticks a database at a time; another one stands by and takes over when
    the first goes away (``takeover_period``). ``period`` is how often it looks for queues
    due a tick; ``retry_period`` and ``maint_period`` how often it moves due retry events
    and runs maintenance; ``notify`` wakes listening consumers after each tick. ``eager``
    (default on, libpgq's schema only) ticks a queue as soon as it has new events and its
    last tick is ``eager_min_lag`` old, instead of waiting for the queue's
    ``ticker_max_count`` / ``ticker_max_lag``; ``eager=False`` ticks like pgqd.

    ::

        with client.ticker(period=0.05):
            ...  # batches are cut every 50 ms while this block runs
    """

    _what = "ticker"

    def __init__(self, client: "Client", *, period: Optional[Seconds] = None,
                 retry_period: Optional[Seconds] = None,
                 maint_period: Optional[Seconds] = None,
                 takeover_period: Optional[Seconds] = None,
                 notify: Optional[bool] = None, name: Optional[Text] = None,
                 eager: Optional[bool] = None,
                 eager_min_lag: Optional[Seconds] = None) -> None:
        lib = _ffi.lib()
        start = lib.require("pgq_ticker_start")
        # Counted as in use until started, so that close() on another thread waits; taken
        # before the options exist, so that a closed client leaks nothing.
        cptr = client._acquire()
        try:
            opts = lib.require("pgq_ticker_options_new")()
            try:
                for opt, value in (("ticker_period_ms", period),
                                   ("retry_period_ms", retry_period),
                                   ("maint_period_ms", maint_period),
                                   ("takeover_period_ms", takeover_period)):
                    if value is not None:
                        self._opt(opts, opt, [c_uint64], delay_ms(value, opt[:-3]))
                if notify is not None:
                    self._opt(opts, "notify", [c_bool], bool(notify))
                if eager is not None or eager_min_lag is not None:
                    lag = (0 if eager_min_lag is None
                           else delay_ms(eager_min_lag, "eager_min_lag"))
                    self._opt(opts, "eager", [c_bool, c_uint64],
                              True if eager is None else bool(eager), lag)
                if name is not None:
                    n = encode(name, "name")
                    self._opt(opts, "name", [c_char_p, c_size_t], n, len(n))
            except BaseException:
                lib.require("pgq_ticker_options_free")(opts)
                raise
            out = c_void_p()
            err = c_void_p()
            # The options are consumed, success or not.
            check(start(cptr, opts, byref(out), byref(err)), err)
        finally:
            client._release()
        super().__init__(out.value or 0, lib.require("pgq_ticker_free"))
        self._client = client
        _live.add(self)

    @staticmethod
    def _opt(opts: int, name: str, ctypes_: List[Any], *values: Any) -> None:
        fn = _ffi.lib().declare(f"pgq_ticker_options_set_{name}", _ffi.status,
                                [c_void_p, *ctypes_, _ffi._err])
        if fn is None:
            raise NotImplementedError(f"this libpgq has no ticker option {name}")
        err = c_void_p()
        check(fn(opts, *values, byref(err)), err)

    def stats(self) -> TickerStats:
        """The ticker's counters."""
        s = _CTickerStats()
        s.struct_size = sizeof(_CTickerStats)
        err = c_void_p()
        check(self._call_quick(_ffi.lib().require("pgq_ticker_stats_get"), byref(s), byref(err)),
              err)
        return TickerStats(
            active=s.active, standby=s.standby, ticks=s.ticks, rounds=s.rounds,
            retry_events_moved=s.retry_events_moved, maintenance_runs=s.maintenance_runs,
            maintenance_calls=s.maintenance_calls, tables_vacuumed=s.tables_vacuumed,
            errors=s.errors, reconnects=s.reconnects,
            last_tick_time=None if s.last_tick_us < 0 else from_us(s.last_tick_us),
            full_rounds=s.full_rounds,
        )

    def close(self) -> None:
        """Stop the ticker, wait for its thread and free it."""
        super().close()
        _live.discard(self)

    def stop(self) -> None:
        """Ask the ticker to stop (returns at once; idempotent)."""
        if self._handle is None:
            return
        err = c_void_p()
        try:
            st = self._call_quick(_ffi.lib().require("pgq_ticker_stop"), byref(err))
        except InvalidStateError:
            return  # closed meanwhile: stopped anyway
        check(st, err)

    def join(self) -> None:
        """Wait for the ticker thread to end, then free it; raises what stopped it, if it
        was an error."""
        with self._lock:
            ptr = self._handle
            if ptr is None:
                return
            err = c_void_p()
            try:
                check(_ffi.lib().require("pgq_ticker_join")(ptr, byref(err)), err)
            finally:
                self.close()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._handle is None:
            return
        self.stop()
        if exc_type is None:
            self.join()
        else:
            self.close()
