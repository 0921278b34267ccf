"""Events: what a producer sends (:class:`NewEvent`) and what a consumer gets (:class:`Event`)."""

from __future__ import annotations

import ctypes
import datetime
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _ffi
from ._handle import Text, encode, encode_opt

if TYPE_CHECKING:
    from ._consumer import Batch

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def from_us(us: int) -> datetime.datetime:
    """Microseconds since the Unix epoch -> aware UTC datetime (exact, no float rounding)."""
    return _EPOCH + datetime.timedelta(microseconds=us)


def delay_ms(delay: Union[float, int, datetime.timedelta], what: str = "delay") -> int:
    """Seconds (or a timedelta) -> whole milliseconds, refusing negatives and non-numbers."""
    if isinstance(delay, datetime.timedelta):
        secs = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, "
                        f"not {type(delay).__name__}")
    else:
        secs = float(delay)
    if not secs >= 0:  # also catches NaN
        raise ValueError(f"{what} must be zero or more seconds, not {delay!r}")
    if secs * 1000 >= 2**63:  # also infinity
        raise ValueError(f"{what} is too large: {delay!r}")
    ms = round(secs * 1000)
    return ms


@dataclass(frozen=True)
class NewEvent:
    """An event to send: the same fields as SkyTools' ``pgq.insert_event`` takes.

    Every field is text or ``None`` (SQL NULL). ``str`` is sent as UTF-8; ``bytes`` must
    already be UTF-8.
    """

    type: Optional[Text]
    data: Optional[Text] = None
    extra1: Optional[Text] = None
    extra2: Optional[Text] = None
    extra3: Optional[Text] = None
    extra4: Optional[Text] = None


#: What ``send_many`` accepts for one event: a :class:`NewEvent`, a tuple
#: ``(type, data, extra1, ...)`` of one to six items, or a mapping with keys ``type``,
#: ``data``, ``extra1``..``extra4`` (or the SkyTools names ``ev_type``, ``ev_data``, ...).
EventLike = Union[NewEvent, Sequence[Optional[Text]], Mapping[str, Optional[Text]]]

_FIELDS = ("type", "data", "extra1", "extra2", "extra3", "extra4")


def _fields_of(ev: Any, i: int) -> Tuple[Optional[Text], ...]:
    if isinstance(ev, NewEvent):
        return (ev.type, ev.data, ev.extra1, ev.extra2, ev.extra3, ev.extra4)
    if isinstance(ev, Mapping):
        unknown = [k for k in ev if k not in _FIELDS and k[3:] not in _FIELDS]
        if unknown:
            raise ValueError(f"event {i}: unknown field(s) {unknown!r}")
        return tuple(ev.get(f, ev.get("ev_" + f)) for f in _FIELDS)
    if isinstance(ev, (tuple, list)):
        if not 1 <= len(ev) <= 6:
            raise ValueError(f"event {i}: a tuple needs 1 to 6 items (type, data, "
                             f"extra1..extra4), got {len(ev)}")
        return tuple(ev) + (None,) * (6 - len(ev))
    raise TypeError(f"event {i} must be a NewEvent, tuple or mapping, not {type(ev).__name__}")


def fill(slot: _ffi.pgq_new_event, fields: Sequence[Optional[Text]], keep: List[Any],
         where: str = "") -> None:
    """Write one event's fields into a ``pgq_new_event``; ``keep`` holds the bytes alive
    until the C call has copied them."""
    for name, value in zip(_FIELDS, fields):
        b = encode_opt(value, f"{where}{name}")
        s = getattr(slot, name)
        if b is None:
            s.data = None
            s.len = 0
        else:
            keep.append(b)
            s.data = b  # a pointer into b; ctypes and `keep` hold b alive
            s.len = len(b)


def one_event(type: Optional[Text], data: Optional[Text], extras: Sequence[Optional[Text]],
              keep: List[Any]) -> _ffi.pgq_new_event:
    ev = _ffi.pgq_new_event()
    fill(ev, (type, data, *extras), keep)
    return ev


# The C layout of pgq_new_event on LP64 platforms: six {pointer, size_t} pairs. When it
# holds, event_array packs the whole array in one go instead of filling ctypes structures
# field by field (about twice as fast, which matters for send_many of 100 000 events).
_PACKED = ctypes.sizeof(_ffi.pgq_new_event) == 96 and ctypes.sizeof(ctypes.c_void_p) == 8 \
    and ctypes.sizeof(ctypes.c_size_t) == 8 and array("Q").itemsize == 8


def event_array(events: Iterable[EventLike], keep: List[Any]) -> Tuple[Any, int]:
    """A C array of ``pgq_new_event`` for ``events``, and its length; ``keep`` holds what
    must stay alive until the C call returns."""
    if not _PACKED:
        return _event_array_structs(events, keep)
    pieces: List[bytes] = []
    ptrs: List[int] = []  # offset + 1 into the joined text, 0 for NULL
    lens: List[int] = []
    add_piece, add_ptr, add_len = pieces.append, ptrs.append, lens.append
    off = 1
    n = 0
    for i, ev in enumerate(events):
        n += 1
        fields = ev if type(ev) is tuple and len(ev) == 6 else _fields_of(ev, i)
        for k, v in enumerate(fields):
            if v is None:
                add_ptr(0)
                add_len(0)
                continue
            if type(v) is str:
                try:
                    b = v.encode()
                except UnicodeEncodeError:
                    b = encode(v, f"event {i}: {_FIELDS[k]}")  # raises InvalidUtf8Error
            else:
                b = encode(v, f"event {i}: {_FIELDS[k]}")
            add_piece(b)
            add_ptr(off)
            add_len(len(b))
            off += len(b)
    if n == 0:
        return (_ffi.pgq_new_event * 1)(), 0  # a valid pointer; the library reads nothing
    blob = b"".join(pieces)
    base = ctypes.cast(ctypes.c_char_p(blob), ctypes.c_void_p).value
    assert base is not None
    base -= 1
    packed = array("Q", bytes(16 * len(ptrs)))
    packed[0::2] = array("Q", [p and p + base for p in ptrs])
    packed[1::2] = array("Q", lens)
    keep.append(blob)
    keep.append(packed)
    addr, _ = packed.buffer_info()
    return ctypes.cast(addr, ctypes.POINTER(_ffi.pgq_new_event)), n


def _event_array_structs(events: Iterable[EventLike], keep: List[Any]) -> Tuple[Any, int]:
    items = list(events)
    arr = (_ffi.pgq_new_event * max(len(items), 1))()
    for i, ev in enumerate(items):
        fill(arr[i], _fields_of(ev, i), keep, f"event {i}: ")
    return arr, len(items)


_KEYS = ("ev_id", "ev_time", "ev_txid", "ev_retry", "ev_type", "ev_data", "ev_extra1",
         "ev_extra2", "ev_extra3", "ev_extra4")


class Event:
    """One event of a batch, with SkyTools' attribute names.

    ``ev_id``, ``ev_txid`` (int), ``ev_time`` (aware UTC ``datetime``), ``ev_retry``
    (``None`` on first delivery, then how many times it came back), ``ev_type``,
    ``ev_data``, ``ev_extra1``..``ev_extra4`` (``str`` or ``None``). The short names
    SkyTools' ``pgq.Event`` also answers to (``id``, ``txid``, ``time``, ``type``, ``data``,
    ``extra1``..``extra4``) work too; the retry count is only ``ev_retry``, because
    :meth:`retry` asks for the event to come back. Like SkyTools' events they are also
    dict-like: ``ev["ev_data"]``, ``ev["data"]``, ``ev.get(...)``, ``ev.keys()``.

    The fields are copied out of the library, so an event stays valid after its batch is
    finished (but :meth:`retry` only works while the batch is open).
    """

    __slots__ = (
        "ev_id",
        "ev_time_us",
        "ev_txid",
        "ev_retry",
        "ev_type",
        "ev_data",
        "ev_extra1",
        "ev_extra2",
        "ev_extra3",
        "ev_extra4",
        "_batch",
    )

    ev_id: int
    ev_time_us: int
    ev_txid: int
    ev_retry: Optional[int]
    ev_type: Optional[str]
    ev_data: Optional[str]
    ev_extra1: Optional[str]
    ev_extra2: Optional[str]
    ev_extra3: Optional[str]
    ev_extra4: Optional[str]
    _batch: "Batch"

    @property
    def ev_time(self) -> datetime.datetime:
        """When the event was inserted (aware, UTC)."""
        return from_us(self.ev_time_us)

    # SkyTools' short names.
    @property
    def id(self) -> int:
        return self.ev_id

    @property
    def txid(self) -> int:
        return self.ev_txid

    @property
    def time(self) -> datetime.datetime:
        return from_us(self.ev_time_us)

    @property
    def type(self) -> Optional[str]:
        return self.ev_type

    @property
    def data(self) -> Optional[str]:
        return self.ev_data

    @property
    def extra1(self) -> Optional[str]:
        return self.ev_extra1

    @property
    def extra2(self) -> Optional[str]:
        return self.ev_extra2

    @property
    def extra3(self) -> Optional[str]:
        return self.ev_extra3

    @property
    def extra4(self) -> Optional[str]:
        return self.ev_extra4

    # SkyTools' events are also dict-like, keyed by column name.
    def __getitem__(self, key: str) -> Any:
        name = key if key.startswith("ev_") else "ev_" + key
        if name not in _KEYS:
            raise KeyError(key)
        return getattr(self, name)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> List[str]:
        return list(_KEYS)

    def retry(self, delay: Union[float, datetime.timedelta] = 60) -> None:
        """Have this event delivered again, to this consumer only, after ``delay`` seconds
        (the retry happens when the batch is finished; if the batch is not finished, the
        whole batch comes back anyway)."""
        self._batch.retry(self.ev_id, delay)

    def tag_retry(self, retry_time: Union[float, datetime.timedelta] = 60) -> None:
        """SkyTools' name for :meth:`retry`."""
        self.retry(retry_time)

    def __repr__(self) -> str:
        return (
            f"<Event id={self.ev_id} type={self.ev_type!r} data={self.ev_data!r} "
            f"retry={self.ev_retry} txid={self.ev_txid}>"
        )
