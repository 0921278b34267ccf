#!/usr/bin/env bash
# Test the Python binding: a venv, the package, libpgq built, mypy, pytest.
#
#   bindings/python/run-tests.sh [PYTEST_ARGS...]
#
# Creates (once) a virtual environment in target/pyvenv from Debian's /usr/bin/python3 with
# --system-site-packages, so SkyTools' python3-pgq (module `pgq`) and psycopg2 are importable
# next to ours (module `libpgq`) for the interop tests; pip-installs this package and the
# test tools (pytest, mypy: from PyPI the first time, then already there); builds libpgq
# (`cargo build --lib`, the cdylib) and installs the package with that build bundled in it
# (setup.py), which is the library the tests then load; runs mypy --strict on the package,
# then pytest on bindings/python/tests with any arguments given.
#
# The tests use PGQ_TEST_DSN (a superuser DSN) when set, else start their own throwaway
# cluster. Exit status: non-zero when anything failed, also when pytest collected no tests
# (pytest's status 5), so a broken collection never passes as green.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/pyvenv
python=/usr/bin/python3

[[ -x $python ]] || { echo "python binding: $python not found (scripts/install-deps.sh python)" >&2; exit 1; }
if [[ ! -x $venv/bin/python ]]; then
    echo "python binding: creating $venv" >&2
    rm -rf "$venv"
    "$python" -m venv --system-site-packages "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"$venv/bin/python" -c 'import pytest, mypy' 2>/dev/null || "${pip[@]}" install pytest mypy

cargo build --quiet --lib
# --no-build-isolation: setuptools comes from the system, so installing needs no network.
LIBPGQ_PATH=$target/debug/libpgq.so LIBPGQ_BUNDLE=1 \
    "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall ./bindings/python >/dev/null
unset LIBPGQ_PATH

echo "python binding: mypy --strict" >&2
(cd bindings/python && "$venv/bin/python" -m mypy --strict src/libpgq)

# Run from the tests directory's parent so `import libpgq` is the installed package.
cd bindings/python
rc=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" tests || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "python binding: pytest collected no tests" >&2
fi
exit $rc
