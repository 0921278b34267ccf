"""Finding, checking and declaring the libpgq shared library.

Everything in this module is private. It loads the library once, on first use (so that
``import libpgq`` works, and type checkers and ``help()`` work, even where no library is
installed), refuses a library whose ``pgq_abi_version()`` is not the one this package was
written for, and declares ``argtypes``/``restype`` for every symbol it uses, so that ctypes
converts and checks arguments instead of guessing.

``ctypes.CDLL`` releases the GIL around every foreign call: while one Python thread waits
inside libpgq for a batch, the others keep running.

Where the library comes from, first match wins:

1. ``LIBPGQ_PATH``: a file, or a directory holding the library. When set, nothing else is
   tried: an explicit choice that does not work is an error, not a hint.
2. A copy bundled inside this package (next to this file), as a wheel built for distribution
   carries it.
3. The libpgq repository this package sits in (a checkout where ``pip install
   ./bindings/python`` was run, or a virtual environment under its ``target/``):
   ``$CARGO_TARGET_DIR`` or ``target/`` with ``release/`` and ``debug/``, the most recently
   built first.
4. The system's library path (``ctypes.util.find_library("pgq")``, then the plain name).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, List, Optional, Tuple

#: The C ABI version this package speaks (``PGQ_ABI_VERSION`` in ``pgq.h``).
ABI_VERSION = 1

if sys.platform == "win32":  # pragma: no cover - libpgq is built and tested on Linux
    LIB_FILE = "pgq.dll"
elif sys.platform == "darwin":  # pragma: no cover
    LIB_FILE = "libpgq.dylib"
else:
    LIB_FILE = "libpgq.so"


class LibraryError(OSError):
    """libpgq could not be loaded, or the library found is not one this package can use.

    ``tried`` lists each place looked at with what was wrong with it.
    """

    def __init__(self, message: str, tried: List[Tuple[str, str]]) -> None:
        lines = [message]
        lines += [f"  - {where}: {why}" for where, why in tried]
        if not tried:
            lines.append("  (nothing to try)")
        lines.append(
            "Build it with `cargo build` in the libpgq repository, or point LIBPGQ_PATH at "
            f"the {LIB_FILE} to use."
        )
        super().__init__("\n".join(lines))
        self.tried = tried


# --------------------------------------------------------------------------------------------
# C types


class pgq_str(Structure):
    """``pgq_str``: a borrowed view, ``data == NULL`` meaning SQL NULL (outputs).

    ``data`` is a ``char`` pointer so that ``s.data[:s.len]`` copies the bytes in one C-level
    slice (several times faster than ``ctypes.string_at``, which is itself a foreign call).
    """

    _fields_ = [("data", POINTER(ctypes.c_char)), ("len", c_size_t)]


class pgq_str_in(Structure):
    """The same layout as ``pgq_str``, for inputs: ctypes keeps the bytes alive."""

    _fields_ = [("data", c_char_p), ("len", c_size_t)]


class pgq_event_fields(Structure):
    """``pgq_event_fields``: every field of an event, filled in one call."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("retry", c_int32),
        ("id", c_int64),
        ("time_us", c_int64),
        ("txid", c_int64),
        ("type", pgq_str),
        ("data", pgq_str),
        ("extra1", pgq_str),
        ("extra2", pgq_str),
        ("extra3", pgq_str),
        ("extra4", pgq_str),
    ]


class pgq_new_event(Structure):
    _fields_ = [
        ("type", pgq_str_in),
        ("data", pgq_str_in),
        ("extra1", pgq_str_in),
        ("extra2", pgq_str_in),
        ("extra3", pgq_str_in),
        ("extra4", pgq_str_in),
    ]


#: ``int32_t (*pgq_batch_handler)(void *user_data, pgq_batch *batch)``
pgq_batch_handler = CFUNCTYPE(c_int32, c_void_p, c_void_p)
#: ``void (*)(void *user_data)``
pgq_free_fn = CFUNCTYPE(None, c_void_p)
#: ``void (*pgq_log_fn)(void *, pgq_log_level, const char *, size_t, const char *, size_t)``
pgq_log_fn = CFUNCTYPE(None, c_void_p, c_uint32, c_void_p, c_size_t, c_void_p, c_size_t)

_err = POINTER(c_void_p)  # pgq_error **
_p = c_void_p  # any opaque handle pointer
_s = (c_char_p, c_size_t)  # a (ptr, len) string argument
status = c_uint32

# name: (restype, argtypes). Symbols marked optional below may be missing from a library
# that does not have that part of the ABI yet; using them then raises a clear error.
_PROTOTYPES: "dict[str, Tuple[Any, List[Any]]]" = {
    # errors and version
    "pgq_error_message": (c_char_p, [_p]),
    "pgq_error_sqlstate": (c_char_p, [_p]),
    "pgq_error_status": (status, [_p]),
    "pgq_error_free": (None, [_p]),
    "pgq_version": (c_char_p, []),
    "pgq_abi_version": (c_uint32, []),
    "pgq_set_logger": (status, [pgq_log_fn, _p, pgq_free_fn, c_uint32, _err]),
    # client and admin
    "pgq_client_options_new": (_p, []),
    "pgq_client_options_free": (None, [_p]),
    "pgq_client_options_set_pool_size": (status, [_p, c_uint32, _err]),
    "pgq_client_options_set_connect_timeout_ms": (status, [_p, c_uint64, _err]),
    "pgq_client_options_set_transaction_pooling": (status, [_p, c_bool, _err]),
    "pgq_client_connect": (status, [*_s, _p, POINTER(_p), _err]),
    "pgq_client_free": (None, [_p]),
    "pgq_install": (status, [_p, _err]),
    "pgq_create_queue": (status, [_p, *_s, POINTER(c_bool), _err]),
    "pgq_drop_queue": (status, [_p, *_s, c_bool, _err]),
    "pgq_set_queue_config": (status, [_p, *_s, *_s, *_s, _err]),
    "pgq_register_consumer": (status, [_p, *_s, *_s, POINTER(c_bool), _err]),
    "pgq_unregister_consumer": (status, [_p, *_s, *_s, _err]),
    "pgq_tick": (status, [_p, POINTER(c_int64), _err]),
    "pgq_force_tick": (status, [_p, *_s, _err]),
    "pgq_tick_queue": (status, [_p, *_s, POINTER(c_int64), _err]),
    "pgq_retry_events": (status, [_p, POINTER(c_uint64), _err]),
    "pgq_maintenance": (status, [_p, POINTER(c_uint64), _err]),
    "pgq_register_consumer_at": (status, [_p, *_s, *_s, c_int64, POINTER(c_bool), _err]),
    "pgq_status_name": (c_char_p, [c_uint32]),
    # info
    "pgq_queue_info_get": (status, [_p, *_s, POINTER(_p), _err]),
    "pgq_queue_info_free": (None, [_p]),
    "pgq_queue_list_get": (status, [_p, POINTER(_p), _err]),
    "pgq_queue_list_len": (c_size_t, [_p]),
    "pgq_queue_list_at": (_p, [_p, c_size_t]),
    "pgq_queue_list_free": (None, [_p]),
    "pgq_consumer_list_get": (status, [_p, *_s, POINTER(_p), _err]),
    "pgq_consumer_list_len": (c_size_t, [_p]),
    "pgq_consumer_list_at": (_p, [_p, c_size_t]),
    "pgq_consumer_list_free": (None, [_p]),
    # producer
    "pgq_send": (status, [_p, *_s, POINTER(pgq_new_event), POINTER(c_int64), _err]),
    "pgq_send_many": (status, [_p, *_s, POINTER(pgq_new_event), c_size_t, _err]),
    "pgq_tx_begin": (status, [_p, POINTER(_p), _err]),
    "pgq_tx_send": (status, [_p, *_s, POINTER(pgq_new_event), POINTER(c_int64), _err]),
    "pgq_tx_send_many": (status, [_p, *_s, POINTER(pgq_new_event), c_size_t, _err]),
    "pgq_tx_execute": (status, [_p, *_s, _err]),
    "pgq_tx_commit": (status, [_p, _err]),
    "pgq_tx_rollback": (None, [_p]),
    "pgq_tx_free": (None, [_p]),
    # pull consumer
    "pgq_consumer_new": (status, [_p, *_s, *_s, POINTER(_p), _err]),
    "pgq_consumer_register": (status, [_p, POINTER(c_bool), _err]),
    "pgq_consumer_unregister": (status, [_p, _err]),
    "pgq_consumer_set_subconsumer": (status, [_p, *_s, c_uint64, _err]),
    "pgq_consumer_register_subconsumer": (status, [_p, POINTER(c_bool), _err]),
    "pgq_consumer_unregister_subconsumer": (status, [_p, c_bool, _err]),
    "pgq_consumer_set_fetch_size": (status, [_p, c_uint32, _err]),
    "pgq_consumer_set_poll_only": (status, [_p, c_bool, _err]),
    "pgq_consumer_set_poll_interval_ms": (status, [_p, c_uint64, _err]),
    # workers and ticker (may be missing from an older library: see Lib.require)
    "pgq_worker_options_new": (_p, []),
    "pgq_worker_options_free": (None, [_p]),
    "pgq_worker_start": (status, [_p, *_s, *_s, _p, pgq_batch_handler, _p, pgq_free_fn,
                                  POINTER(_p), _err]),
    "pgq_worker_stop": (status, [_p, _err]),
    "pgq_worker_join": (status, [_p, _err]),
    "pgq_worker_stats_get": (status, [_p, _p, _err]),
    "pgq_worker_free": (None, [_p]),
    "pgq_ticker_options_new": (_p, []),
    "pgq_ticker_options_free": (None, [_p]),
    "pgq_ticker_start": (status, [_p, _p, POINTER(_p), _err]),
    "pgq_ticker_stop": (status, [_p, _err]),
    "pgq_ticker_join": (status, [_p, _err]),
    "pgq_ticker_stats_get": (status, [_p, _p, _err]),
    "pgq_ticker_free": (None, [_p]),
    "pgq_consumer_next_batch": (status, [_p, c_uint64, POINTER(_p), _err]),
    "pgq_consumer_free": (None, [_p]),
    "pgq_batch_id": (c_int64, [_p]),
    "pgq_batch_tick_id": (c_int64, [_p]),
    "pgq_batch_prev_tick_id": (c_int64, [_p]),
    "pgq_batch_queue": (pgq_str, [_p]),
    "pgq_batch_consumer": (pgq_str, [_p]),
    "pgq_batch_subconsumer": (pgq_str, [_p]),
    "pgq_batch_tick_time_us": (c_int64, [_p]),
    "pgq_batch_is_stopping": (c_bool, [_p]),
    "pgq_batch_next_event": (status, [_p, POINTER(_p), _err]),
    "pgq_batch_next_event_fields": (status, [_p, POINTER(_p), POINTER(pgq_event_fields), _err]),
    "pgq_batch_retry": (status, [_p, c_int64, c_uint64, _err]),
    "pgq_batch_finish": (status, [_p, _err]),
    # optional: libpgq 0.1 builds before it lack it (then finish, then next_batch)
    "pgq_batch_finish_next": (status, [_p, _p, POINTER(_p), _err]),
    # optional: libpgq 0.1 builds before reading ahead into the next batch lack these
    "pgq_batch_looked_ahead": (c_bool, [_p]),
    "pgq_consumer_set_read_ahead": (status, [_p, c_bool, _err]),
    "pgq_batch_free": (None, [_p]),
    "pgq_event_id": (c_int64, [_p]),
    "pgq_event_time_us": (c_int64, [_p]),
    "pgq_event_txid": (c_int64, [_p]),
    "pgq_event_retry": (c_int32, [_p]),
    "pgq_event_type": (pgq_str, [_p]),
    "pgq_event_data": (pgq_str, [_p]),
    "pgq_event_extra1": (pgq_str, [_p]),
    "pgq_event_extra2": (pgq_str, [_p]),
    "pgq_event_extra3": (pgq_str, [_p]),
    "pgq_event_extra4": (pgq_str, [_p]),
}


def _quick(name: str) -> bool:
    """Accessors that only read memory the caller already holds: called without releasing
    the GIL (releasing and re-taking it would cost more than the call itself). Everything
    that may wait — for the server, a lock, a thread — goes through CDLL, which releases it.
    """
    if name.endswith("_get"):
        return False  # pgq_queue_info_get and friends ask the server
    return name.startswith(("pgq_event_", "pgq_queue_info_", "pgq_consumer_info_",
                            "pgq_error_", "pgq_status_name")) or name in (
        "pgq_batch_id", "pgq_batch_tick_id", "pgq_batch_prev_tick_id", "pgq_batch_queue",
        "pgq_batch_consumer", "pgq_batch_subconsumer", "pgq_batch_tick_time_us",
        "pgq_batch_is_stopping", "pgq_batch_looked_ahead", "pgq_version",
        "pgq_abi_version", "pgq_queue_list_len", "pgq_queue_list_at",
        "pgq_consumer_list_len", "pgq_consumer_list_at")


class Lib:
    """The loaded library: each declared symbol is an attribute; missing optional ones are
    ``None``."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.cdll = cdll
        # The same loaded library, for calls that keep the GIL (see _quick).
        self.pydll = ctypes.PyDLL(path, handle=cdll._handle)
        self.path = path
        self.missing: List[str] = []
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(self.pydll if _quick(name) else cdll, name)
            except AttributeError:
                self.missing.append(name)
                setattr(self, name, None)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not declared above: a typo, or a symbol this package does
        # not know about.
        raise AttributeError(f"libpgq symbol {name!r} is not declared in libpgq._ffi")

    def declare(self, name: str, restype: Any, argtypes: List[Any]) -> Any:
        """Declare (once) and return a symbol that is not in the fixed table, or None."""
        fn = self.__dict__.get(name)
        if fn is not None:
            return fn
        try:
            fn = getattr(self.pydll if _quick(name) else self.cdll, name)
        except AttributeError:
            return None
        fn.restype = restype
        fn.argtypes = argtypes
        setattr(self, name, fn)
        return fn

    def require(self, name: str) -> Any:
        """The symbol, or a ``NotImplementedError`` naming what this library lacks."""
        fn = self.__dict__.get(name)
        if fn is None:
            raise NotImplementedError(
                f"the libpgq library at {self.path} has no {name}(): "
                "it is older than this feature"
            )
        return fn


_lock = threading.Lock()
_lib: Optional[Lib] = None


def lib() -> Lib:
    """The loaded, checked library (loaded on the first call)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load()
    return _lib


def _candidates() -> Tuple[List[str], bool]:
    """Places to try in order, and whether they came from LIBPGQ_PATH (then exclusive)."""
    env = os.environ.get("LIBPGQ_PATH", "").strip()
    if env:
        p = Path(env)
        return [str(p / LIB_FILE) if p.is_dir() else str(p)], True

    found: List[str] = [str(Path(__file__).resolve().parent / LIB_FILE)]

    builds: List[Path] = []
    target_dirs: List[Path] = []
    if os.environ.get("CARGO_TARGET_DIR"):
        target_dirs.append(Path(os.environ["CARGO_TARGET_DIR"]))
    repo = _find_repo(Path(__file__).resolve().parent)
    if repo is not None:
        target_dirs.append(repo / "target")
    for t in target_dirs:
        for profile in ("release", "debug"):
            builds.append(t / profile / LIB_FILE)
    # The most recently built first: after `cargo build` the debug build is the fresh one
    # even when an older release build lies around.
    existing = [b for b in builds if b.is_file()]
    existing.sort(key=lambda b: b.stat().st_mtime, reverse=True)
    found += [str(b) for b in existing]
    found += [str(b) for b in builds if not b.is_file()]

    system = ctypes.util.find_library("pgq")
    if system:
        found.append(system)
    found.append(LIB_FILE)  # the dynamic linker's own search (LD_LIBRARY_PATH, ld.so.cache)
    return found, False


def _find_repo(start: Path) -> Optional[Path]:
    """The libpgq checkout above ``start``: a directory whose Cargo.toml is package pgq."""
    for d in [start, *start.parents]:
        cargo = d / "Cargo.toml"
        if cargo.is_file():
            try:
                text = cargo.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if 'name = "pgq"' in text:
                return d
    return None


def _load() -> Lib:
    candidates, explicit = _candidates()
    tried: List[Tuple[str, str]] = []
    for cand in candidates:
        where = f"LIBPGQ_PATH={cand}" if explicit else cand
        is_path = os.sep in cand
        if is_path and not os.path.exists(cand):
            tried.append((where, "no such file"))
            continue
        try:
            cdll = ctypes.CDLL(cand)
        except OSError as e:
            tried.append((where, f"cannot load: {e}"))
            continue
        try:
            abi_fn = cdll.pgq_abi_version
        except AttributeError:
            tried.append((where, "not libpgq: it has no pgq_abi_version()"))
            continue
        abi_fn.restype = c_uint32
        abi_fn.argtypes = []
        abi = abi_fn()
        if abi != ABI_VERSION:
            tried.append(
                (where, f"ABI version {abi}, but this package needs ABI version {ABI_VERSION}")
            )
            continue
        path = cand
        if not is_path:
            path = _loaded_path(cdll) or cand
        return Lib(cdll, path)
    raise LibraryError(
        f"could not load libpgq (ABI version {ABI_VERSION}); tried, in order:", tried
    )


def _loaded_path(cdll: ctypes.CDLL) -> Optional[str]:
    """Where the dynamic linker found a library loaded by plain name (Linux only)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.rstrip().endswith("/" + LIB_FILE):
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return None


def reset_for_tests() -> None:
    """Forget the loaded library, so that the next ``lib()`` searches again (tests only:
    the first library stays mapped in the process)."""
    global _lib
    with _lock:
        _lib = None
