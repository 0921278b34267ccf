"""The exception hierarchy: one class per status, matching built-in bases (no database)."""

from __future__ import annotations

import builtins

import pytest

import libpgq
from libpgq._error import error_class, make_error


@pytest.mark.parametrize("status", list(libpgq.Status))
def test_every_status_has_its_class(status: libpgq.Status) -> None:
    if status == libpgq.Status.OK:
        return
    e = make_error(status, "msg", "XX000")
    assert isinstance(e, libpgq.PgqError)
    assert e.status == status and e.sqlstate == "XX000" and e.message == "msg"
    if status != libpgq.Status.ERROR:
        assert type(e).STATUS == status, type(e)


def test_builtin_bases_and_unknown_statuses() -> None:
    assert issubclass(libpgq.InvalidInputError, ValueError)
    assert issubclass(libpgq.InvalidUtf8Error, libpgq.InvalidInputError)
    assert issubclass(libpgq.ConnectError, ConnectionError)
    assert issubclass(libpgq.NoSuchQueueError, LookupError)
    assert issubclass(libpgq.TimeoutError, builtins.TimeoutError)
    assert issubclass(libpgq.PermissionDeniedError, PermissionError)
    # A status from a newer library: still a PgqError, number kept.
    e = make_error(999, "from the future")
    assert type(e) is libpgq.PgqError and e.status == 999
    assert error_class(1) is libpgq.PgqError
    assert str(make_error(18, "boom", "42P01")) == "boom (SQLSTATE 42P01)"
    assert str(make_error(18, "boom")) == "boom"


def test_status_numbers_match_the_header() -> None:
    import re

    from conftest import REPO

    header = (REPO / "include" / "pgq.h").read_text()
    numbers = dict((name, int(n)) for name, n in
                   re.findall(r"PGQ_STATUS_([A-Z0-9_]+) = (\d+)", header))
    assert numbers == {s.name: s.value for s in libpgq.Status}
