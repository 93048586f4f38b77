"""Build the compiled fan-out core (``studyrooms.media._fanout``) with cffi in API mode.

Run by ``make setup`` (``python -m studyrooms.media.fanout_build``): gcc and the Python headers come
from the machine (scripts/install-build-deps.sh installs them on Debian). The C sources are
``fanout.c`` / ``fanout.h`` beside this file; the shared object lands beside them.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "studyrooms.media._fanout"


def make_builder() -> FFI:
    ffibuilder = FFI()
    with open(os.path.join(HERE, "fanout.h"), encoding="utf-8") as f:
        ffibuilder.cdef(f.read())
    ffibuilder.set_source(
        MODULE,
        '#include "fanout.h"',
        sources=[os.path.join(HERE, "fanout.c"), os.path.join(HERE, "ingress.c")],
        include_dirs=[HERE],
        extra_compile_args=["-O2", "-fno-strict-aliasing", "-Wall"],
        libraries=["m"],
    )
    return ffibuilder


def build(verbose: bool = False) -> str:
    """Compile in a scratch folder and copy the extension next to this file; returns its path."""
    tmp = tempfile.mkdtemp(prefix="studyrooms-fanout-")
    try:
        built = make_builder().compile(tmpdir=tmp, verbose=verbose)
        for old in glob.glob(os.path.join(HERE, "_fanout.*.so")):
            os.remove(old)
        dest = os.path.join(HERE, os.path.basename(built))
        shutil.copy2(built, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    path = build(verbose="-v" in sys.argv)
    print(f"built {os.path.relpath(path)}")
