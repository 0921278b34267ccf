"""Finding and checking the libpgq shared library (no database needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import libpgq
from conftest import REPO

PROBE = """
import libpgq
try:
    print("loaded", libpgq.library_path())
except libpgq.LibraryError as e:
    print("refused")
    print(e)
"""


def run_probe(env_path: str) -> str:
    env = dict(os.environ, LIBPGQ_PATH=env_path)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def build_fake(tmp_path: Path, body: str) -> Path:
    cc = "cc"
    src = tmp_path / "fake.c"
    src.write_text(body)
    lib = tmp_path / "libpgq.so"
    res = subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"no working C compiler: {res.stderr}")
    return lib


def test_loads_the_built_library_and_reports_versions() -> None:
    path = libpgq.library_path()
    assert Path(path).name == "libpgq.so"
    bundled = Path(libpgq.__file__).parent / "libpgq.so"
    if not os.environ.get("LIBPGQ_PATH") and bundled.is_file():
        # Installed with a bundled copy (setup.py): that copy comes first.
        assert path == str(bundled)
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert version is not None
    assert libpgq.library_version() == version.group(1)


def test_abi_version_matches_the_header() -> None:
    header = (REPO / "include" / "pgq.h").read_text()
    m = re.search(r"#define PGQ_ABI_VERSION (\d+)", header)
    assert m is not None, "pgq.h defines PGQ_ABI_VERSION"
    assert int(m.group(1)) == libpgq.ABI_VERSION


def test_refuses_a_library_with_another_abi_version(tmp_path: Path) -> None:
    lib = build_fake(tmp_path, "unsigned pgq_abi_version(void) { return 999; }\n")
    out = run_probe(str(lib))
    assert out.startswith("refused"), out
    assert f"LIBPGQ_PATH={lib}: ABI version 999, but this package needs ABI version " \
           f"{libpgq.ABI_VERSION}" in out


def test_refuses_a_library_that_is_not_libpgq(tmp_path: Path) -> None:
    lib = build_fake(tmp_path, "int something_else(void) { return 1; }\n")
    out = run_probe(str(lib))
    assert out.startswith("refused"), out
    assert "not libpgq: it has no pgq_abi_version()" in out


def test_libpgq_path_may_name_a_directory_and_nothing_else_is_tried(tmp_path: Path) -> None:
    out = run_probe(str(tmp_path))
    assert out.startswith("refused"), out
    assert f"LIBPGQ_PATH={tmp_path / 'libpgq.so'}: no such file" in out
    # An explicit choice is not silently replaced by another library.
    assert "target/debug" not in out
    assert "cargo build" in out


def test_libpgq_path_directory_with_the_real_library() -> None:
    real = Path(libpgq.library_path())
    out = run_probe(str(real.parent))
    assert out.strip() == f"loaded {real}"


def test_importing_works_without_a_library(tmp_path: Path) -> None:
    # import, the exception classes and dataclasses need no library; the first call does.
    code = ("import libpgq, pgq\n"
            "assert libpgq.NewEvent('t').type == 't'\n"
            "assert pgq.Event is not None and libpgq.Event is not pgq.Event\n"
            "try:\n    libpgq.connect('dbname=x')\n"
            "except libpgq.LibraryError as e:\n    print('refused', len(e.tried))\n")
    env = dict(os.environ, LIBPGQ_PATH=str(tmp_path / "nothing.so"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused 1"
