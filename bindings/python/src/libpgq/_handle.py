"""The base class that owns one libpgq handle, and helpers to pass text to C."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Callable, Optional, Type, TypeVar, Union

from ._error import InvalidStateError, InvalidUtf8Error

T = TypeVar("T", bound="Handle")

#: Text arguments: ``str`` (encoded as UTF-8) or ``bytes`` (must already be UTF-8; libpgq
#: checks and refuses anything else with :class:`InvalidUtf8Error`).
Text = Union[str, bytes]


class Handle:
    """Owns one pointer to a libpgq object and frees it exactly once.

    ``close()`` is idempotent; ``with obj:`` closes on exit; ``__del__`` is only a safety net
    for objects nobody closed. Every call goes through ``_ptr()``, which raises
    :class:`InvalidStateError` once the object is closed. Objects whose C type may not be
    used from two threads at once hold ``_lock`` around each call.
    """

    _what = "object"
    _handle: Optional[int] = None

    def __init__(self, ptr: int, free: Callable[[Any], None]) -> None:
        self._handle = ptr
        self._free: Optional[Callable[[Any], None]] = free
        # _lock serialises calls that use the handle (and may block); _swap_lock only
        # guards taking the pointer out, so that quick calls made from other threads (a
        # worker's stop() from its handler) never wait for a blocking call to end.
        self._lock = threading.RLock()
        self._swap_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the object was consumed, e.g. a finished batch)."""
        return self._handle is None

    def _ptr(self) -> int:
        ptr = self._handle
        if ptr is None:
            raise InvalidStateError(f"this {self._what} is closed")
        return ptr

    def _take(self) -> int:
        """Take the pointer out for a C call that consumes it (commit, finish)."""
        with self._swap_lock:
            ptr = self._ptr()
            self._handle = None
            self._free = None
        return ptr

    def close(self) -> None:
        """Free the underlying libpgq object. Safe to call more than once."""
        with self._lock:
            with self._swap_lock:
                ptr, free = self._handle, self._free
                self._handle = None
                self._free = None
            if ptr is not None and free is not None:
                free(ptr)

    def _call_quick(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a quick, thread-safe C function on the handle from any thread, also while
        another thread is blocked in a call on it; it cannot be freed meanwhile."""
        with self._swap_lock:
            return fn(self._ptr(), *args)

    def __enter__(self: T) -> T:
        self._ptr()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown module globals may already be gone; never raise here.
        try:
            if self._handle is not None:
                self.close()
        except Exception:
            pass


def encode(value: Text, what: str) -> bytes:
    """Text for a (ptr, len) argument. ``str`` that cannot be UTF-8 (lone surrogates) is
    refused here with the same error libpgq gives for bad bytes."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidUtf8Error(f"{what} is not valid UTF-8: {e.reason}") from e
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def encode_opt(value: Optional[Text], what: str) -> Optional[bytes]:
    """Like :func:`encode`; ``None`` stays ``None`` (SQL NULL)."""
    if value is None:
        return None
    return encode(value, what)
