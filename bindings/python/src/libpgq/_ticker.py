"""The ticker thread: cuts batches (``pgq.ticker()``), moves due retries, runs maintenance."""

from __future__ import annotations

import datetime
from ctypes import byref, c_uint64, c_void_p
from types import TracebackType
from typing import TYPE_CHECKING, Optional, Type, Union

from . import _ffi
from ._error import check
from ._event import delay_ms
from ._handle import Handle

if TYPE_CHECKING:
    from ._client import Client

Seconds = Union[float, datetime.timedelta]


class Ticker(Handle):
    """A libpgq ticker thread for the client's database (replaces ``pgqd``).

    Runs from creation until :meth:`stop` and :meth:`join` (or the end of a ``with`` block).
    Only one ticker ticks a database at a time; a second one waits its turn.

    ::

        with client.ticker(period=0.05):
            ...  # batches are cut every 50 ms while this block runs
    """

    _what = "ticker"

    def __init__(self, client: "Client", *, period: Optional[Seconds] = None,
                 retry_period: Optional[Seconds] = None,
                 maint_period: Optional[Seconds] = None) -> None:
        lib = _ffi.lib()
        start = lib.require("pgq_ticker_start")
        opts = lib.require("pgq_ticker_options_new")()
        try:
            for name, value in (("ticker_period_ms", period), ("retry_period_ms", retry_period),
                                ("maint_period_ms", maint_period)):
                if value is not None:
                    fn = lib.declare(f"pgq_ticker_options_set_{name}", _ffi.status,
                                     [c_void_p, c_uint64, _ffi._err])
                    if fn is None:
                        raise NotImplementedError(f"this libpgq has no ticker option {name}")
                    err = c_void_p()
                    check(fn(opts, delay_ms(value, name[:-3]), byref(err)), err)
        except BaseException:
            lib.require("pgq_ticker_options_free")(opts)
            raise
        out = c_void_p()
        err = c_void_p()
        check(start(client._ptr(), opts, byref(out), byref(err)), err)
        super().__init__(out.value or 0, lib.require("pgq_ticker_free"))
        self._client = client

    def stop(self) -> None:
        """Ask the ticker to stop (returns at once; idempotent)."""
        ptr = self._handle
        if ptr is None:
            return
        err = c_void_p()
        check(_ffi.lib().require("pgq_ticker_stop")(ptr, byref(err)), err)

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
