"""Forwarding libpgq's log records to Python's :mod:`logging`."""

from __future__ import annotations

import atexit
import logging
import threading
from ctypes import byref, c_void_p, string_at
from typing import Optional

from . import _ffi
from ._error import check

# PGQ_LOG_* levels and the Python levels they become.
_TO_PY = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: 5}

_lock = threading.Lock()
_installed = False


def _pgq_level(level: int) -> int:
    """The most verbose PGQ_LOG_* level that ``level`` (a Python level) lets through."""
    if level <= 5:
        return 5  # TRACE
    if level <= logging.DEBUG:
        return 4
    if level <= logging.INFO:
        return 3
    if level <= logging.WARNING:
        return 2
    return 1


def _on_record(user_data: Optional[int], level: int, target: Optional[int], target_len: int,
               msg: Optional[int], msg_len: int) -> None:
    # Runs on whichever thread logged (ctypes takes the GIL); must never raise into C.
    try:
        t = string_at(target, target_len).decode("utf-8", "replace") if target else ""
        m = string_at(msg, msg_len).decode("utf-8", "replace") if msg else ""
        name = "libpgq"
        if t:
            name += "." + t.replace("::", ".")
        logging.getLogger(name).log(_TO_PY.get(level, logging.ERROR), "%s", m)
    except BaseException:  # noqa: B036 - nothing may unwind into C
        pass


# Module global: C may call it for as long as the process runs.
_callback = _ffi.pgq_log_fn(_on_record)
# NULL function pointers (ctypes refuses None for a CFUNCTYPE argument).
_NO_LOG = _ffi.pgq_log_fn()
_NO_FREE = _ffi.pgq_free_fn()


def forward_logs(level: Optional[int] = logging.INFO) -> None:
    """Send libpgq's log records to :mod:`logging`, to loggers named ``libpgq.<module>``
    (``libpgq.pgq.consumer``, ...), up to ``level`` (a :mod:`logging` level); ``None``
    turns forwarding off.

    Records are filtered by ``level`` inside the library (cheap), then by Python's own
    logger configuration. Forwarding is switched off at interpreter exit.
    """
    global _installed
    lib = _ffi.lib()
    err = c_void_p()
    with _lock:
        if level is None:
            check(lib.pgq_set_logger(_NO_LOG, None, _NO_FREE, 0, byref(err)), err)
            _installed = False
            return
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"level must be a logging level (int) or None, not "
                            f"{type(level).__name__}")
        check(lib.pgq_set_logger(_callback, None, _NO_FREE, _pgq_level(level), byref(err)), err)
        if not _installed:
            atexit.register(_off_at_exit)
        _installed = True


def _off_at_exit() -> None:
    # Library threads may still log while the interpreter shuts down; stop calling into it.
    try:
        if _installed:
            err = c_void_p()
            _ffi.lib().pgq_set_logger(_NO_LOG, None, _NO_FREE, 0, byref(err))
            if err.value:
                _ffi.lib().pgq_error_free(err)
    except BaseException:  # noqa: B036
        pass
