"""Build fastconv's Cython extensions.

Every ``src_cython/<name>.pyx`` becomes the private module
``fastconv._backends.cython.<name>``, next to the driver that calls it
(``fastconv/_backends/cython/driver.py``).  The C entry points are declared
once in ``src_cython/fastconv_c.pxd``; the kernels are the headers of
``src_cython/include/``.  This file is the one place for Cython compiler
directives and C flags.

OpenMP is used when the compiler accepts ``-fopenmp``; otherwise the build
warns loudly and produces a working serial build (``fastconv.show_config()``
then reports ``openmp: False``).  No ``-march`` flag is ever passed: SIMD code
paths carry per-function ``target`` attributes and are chosen at run time.
Set ``FASTCONV_DEBUG_BUILD=1`` to turn bounds checking on for debugging.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("FASTCONV_DEBUG_BUILD", "") not in ("", "0")

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}


def _compiler_accepts_openmp():
    """Return True when the C compiler can build and link ``-fopenmp`` code."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    if shutil.which(cc[0]) is None:
        return False
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp, "omp_check.c")
        c_file.write_text(src)
        cmd = cc + ["-fopenmp", str(c_file), "-o", str(Path(tmp, "omp_check"))]
        try:
            result = subprocess.run(cmd, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
    return result.returncode == 0


if os.environ.get("FASTCONV_NO_OPENMP", "") not in ("", "0"):
    USE_OPENMP = False
else:
    USE_OPENMP = _compiler_accepts_openmp()
if not USE_OPENMP:
    banner = "*" * 72
    msg = (
        f"\n{banner}\nfastconv: the C compiler does not support OpenMP (-fopenmp).\n"
        "Building a SERIAL extension: every kernel will run on one thread.\n"
        f"{banner}\n"
    )
    warnings.warn(msg)
    print(msg, file=sys.stderr)

COMPILE_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]
LINK_ARGS = []
if USE_OPENMP:
    COMPILE_ARGS.append("-fopenmp")
    LINK_ARGS.append("-fopenmp")
if DEBUG:
    COMPILE_ARGS = [a if a != "-O3" else "-O0" for a in COMPILE_ARGS] + ["-g"]

SRC = HERE / "src_cython"
INCLUDE = SRC / "include"
PACKAGE = "fastconv._backends.cython"
#: a module is rebuilt when any kernel header or the declarations change
DEPENDS = [str(p.relative_to(HERE)) for p in sorted(INCLUDE.glob("*.h"))] + [
    str((SRC / "fastconv_c.pxd").relative_to(HERE))]

extensions = [
    Extension(
        f"{PACKAGE}.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include(), str(INCLUDE.relative_to(HERE))],
        depends=DEPENDS + ([str((SRC / "fc_parallel.h").relative_to(HERE))]
                           if pyx.stem == "_parallel" else []),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # the thread pool (fc_parallel.h) uses POSIX threads
        extra_compile_args=COMPILE_ARGS + (["-pthread"] if pyx.stem == "_parallel" else []),
        extra_link_args=LINK_ARGS + (["-pthread"] if pyx.stem == "_parallel" else []),
    )
    for pyx in sorted(SRC.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=CYTHON_DIRECTIVES,
        include_path=["src_cython"],
    ),
)
