"""Build hook: bundle the libpgq shared library into the package when one has been built.

Everything else is in pyproject.toml. When `pip install ./bindings/python` runs in a libpgq
checkout, the most recently built library (``$LIBPGQ_PATH`` if set, else
``$CARGO_TARGET_DIR`` or ``target/``, ``release/`` or ``debug/``) is copied into the
package, so the installed package works from any virtual environment, wherever it lies.
Without a built library the package installs without one and looks for it at run time
(see ``libpgq/_ffi.py``). ``LIBPGQ_BUNDLE=0`` turns bundling off.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
LIB_FILE = {"win32": "pgq.dll", "darwin": "libpgq.dylib"}.get(sys.platform, "libpgq.so")


def built_library():
    explicit = os.environ.get("LIBPGQ_PATH", "").strip()
    if explicit:
        p = Path(explicit)
        p = p / LIB_FILE if p.is_dir() else p
        return p if p.is_file() else None
    repo = HERE.parents[1]
    targets = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    targets.append(repo / "target")
    found = [t / prof / LIB_FILE for t in targets for prof in ("release", "debug")]
    found = [f for f in found if f.is_file()]
    return max(found, key=lambda f: f.stat().st_mtime) if found else None


class BuildPyBundlingLibpgq(build_py):
    def run(self):
        super().run()
        if os.environ.get("LIBPGQ_BUNDLE", "1") == "0":
            return
        lib = built_library()
        if lib is None:
            print("libpgq: no built library found to bundle; it is looked for at run time")
            return
        dest = Path(self.build_lib) / "libpgq" / LIB_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        print(f"libpgq: bundled {lib}")


cmdclass = {"build_py": BuildPyBundlingLibpgq}

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # no wheel package: sdists and plain installs still work
    bdist_wheel = None

if bdist_wheel is not None:

    class BdistWheelForThisPlatform(bdist_wheel):
        """A wheel that carries the library is for this platform only (any Python 3: the
        package itself is pure Python over ctypes): py3-none-<platform>."""

        def finalize_options(self):
            super().finalize_options()
            if os.environ.get("LIBPGQ_BUNDLE", "1") != "0" and built_library() is not None:
                self.root_is_pure = False

        def get_tag(self):
            python, abi, plat = super().get_tag()
            if not self.root_is_pure:
                return "py3", "none", plat
            return python, abi, plat

    cmdclass["bdist_wheel"] = BdistWheelForThisPlatform

setup(cmdclass=cmdclass)
