"""Queue and consumer information, as dataclasses read out of libpgq's info objects."""

from __future__ import annotations

import datetime
import math
from ctypes import c_bool, c_double, c_int32, c_int64, c_void_p
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _ffi
from ._event import from_us


@dataclass(frozen=True)
class QueueInfo:
    """One queue's state (``pgq.get_queue_info``)."""

    name: str
    ntables: int
    cur_table: int
    rotation_period: datetime.timedelta
    switch_time: datetime.datetime
    external_ticker: bool
    ticker_paused: bool
    ticker_max_count: int
    ticker_max_lag: datetime.timedelta
    ticker_idle_period: datetime.timedelta
    #: Time since the last tick.
    ticker_lag: Optional[datetime.timedelta]
    #: Event rate over the last ticks, when known.
    ev_per_sec: Optional[float]
    #: Events inserted since the last tick.
    ev_new: int
    last_tick_id: Optional[int]


@dataclass(frozen=True)
class ConsumerInfo:
    """One consumer's state on one queue (``pgq.get_consumer_info``)."""

    queue_name: str
    consumer_name: str
    #: Age of the consumer's last finished tick.
    lag: Optional[datetime.timedelta]
    #: Time since the consumer last asked for or finished a batch.
    last_seen: Optional[datetime.timedelta]
    #: The tick the consumer has processed up to.
    last_tick: Optional[int]
    #: The open batch, if any.
    current_batch: Optional[int]
    #: The end tick of the open batch, if any.
    next_tick: Optional[int]
    #: Events after ``last_tick`` (an estimate), when known.
    pending_events: Optional[int]


def _text(v: Any) -> str:
    if not v.data:
        return ""
    return bytes(v.data[: v.len]).decode("utf-8", "replace")


def _ms(v: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=v)


def _opt_ms(v: int) -> Optional[datetime.timedelta]:
    return None if v < 0 else datetime.timedelta(milliseconds=v)


def _opt_int(v: int) -> Optional[int]:
    return None if v < 0 else v


def _opt_float(v: float) -> Optional[float]:
    # libpgq says -1.0 for "unknown"; a real rate is never negative.
    return None if v < 0 or math.isnan(v) else v


# field: (C accessor suffix, C return type, conversion)
_Field = Tuple[str, Any, Callable[[Any], Any]]
_QUEUE_FIELDS: Dict[str, _Field] = {
    "name": ("name", _ffi.pgq_str, _text),
    "ntables": ("ntables", c_int32, int),
    "cur_table": ("cur_table", c_int32, int),
    "rotation_period": ("rotation_period_ms", c_int64, _ms),
    "switch_time": ("switch_time_us", c_int64, from_us),
    "external_ticker": ("external_ticker", c_bool, bool),
    "ticker_paused": ("ticker_paused", c_bool, bool),
    "ticker_max_count": ("ticker_max_count", c_int32, int),
    "ticker_max_lag": ("ticker_max_lag_ms", c_int64, _ms),
    "ticker_idle_period": ("ticker_idle_period_ms", c_int64, _ms),
    "ticker_lag": ("ticker_lag_ms", c_int64, _opt_ms),
    "ev_per_sec": ("ev_per_sec", c_double, _opt_float),
    "ev_new": ("ev_new", c_int64, int),
    "last_tick_id": ("last_tick_id", c_int64, _opt_int),
}
_CONSUMER_FIELDS: Dict[str, _Field] = {
    "queue_name": ("queue", _ffi.pgq_str, _text),
    "consumer_name": ("name", _ffi.pgq_str, _text),
    "lag": ("lag_ms", c_int64, _opt_ms),
    "last_seen": ("last_seen_ms", c_int64, _opt_ms),
    "last_tick": ("last_tick", c_int64, _opt_int),
    "current_batch": ("current_batch", c_int64, _opt_int),
    "next_tick": ("next_tick", c_int64, _opt_int),
    "pending_events": ("pending_events", c_int64, _opt_int),
}


def _reader(prefix: str, fields: Dict[str, _Field]) -> Callable[[int], Dict[str, Any]]:
    lib = _ffi.lib()
    getters = []
    for field, (suffix, restype, conv) in fields.items():
        name = f"{prefix}_{suffix}"
        fn = lib.declare(name, restype, [c_void_p])
        if fn is None:
            raise NotImplementedError(f"the libpgq library at {lib.path} has no {name}()")
        getters.append((field, fn, conv))

    def read(ptr: int) -> Dict[str, Any]:
        return {field: conv(fn(ptr)) for field, fn, conv in getters}

    return read


_readers: Dict[str, Callable[[int], Dict[str, Any]]] = {}


def _read(kind: str, ptr: int) -> Dict[str, Any]:
    r = _readers.get(kind)
    if r is None:
        if kind == "queue":
            r = _reader("pgq_queue_info", _QUEUE_FIELDS)
        else:
            r = _reader("pgq_consumer_info", _CONSUMER_FIELDS)
        _readers[kind] = r
    return r(ptr)


def read_queue_info(ptr: int) -> QueueInfo:
    return QueueInfo(**_read("queue", ptr))


def read_queue_list(ptr: int) -> List[QueueInfo]:
    lib = _ffi.lib()
    n = lib.pgq_queue_list_len(ptr)
    return [read_queue_info(lib.pgq_queue_list_at(ptr, i)) for i in range(n)]


def read_consumer_list(ptr: int) -> List[ConsumerInfo]:
    lib = _ffi.lib()
    n = lib.pgq_consumer_list_len(ptr)
    return [ConsumerInfo(**_read("consumer", lib.pgq_consumer_list_at(ptr, i)))
            for i in range(n)]
