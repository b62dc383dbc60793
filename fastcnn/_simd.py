"""Which compiled version of the kernels runs: baseline or AVX2+FMA.

The kernels are compiled for the baseline instruction set of the build (SSE2
on any x86-64 wheel) and, on x86-64, also for AVX2 + FMA; the faster one is
chosen at import from what the CPU reports, as NumPy does. FASTCNN_SIMD=
baseline at import, or set_simd_path("baseline"), forces the portable one
(the tests use it to check both on one machine). Results of the two differ
in the last bits (FMA rounds once where SSE2 rounds twice); each is exact to
the oracle's tolerance and the same for every thread count.
"""

import os
import warnings

from fastcnn import _kernels


def simd_path():
    """Name of the kernels in use: "avx2+fma", "baseline", or "avx2+fma (build flags)"."""
    return _kernels.active_isa()


def available_simd_paths():
    """The paths this CPU and build can run, fastest last."""
    return ["baseline"] if _kernels.BEST_ISA == "baseline" else ["baseline", _kernels.BEST_ISA]


def set_simd_path(name):
    """Use "baseline", "avx2+fma" or "auto" (the fastest this CPU runs)."""
    if name not in ("auto", "baseline", "avx2+fma"):
        raise ValueError(f"SIMD path must be 'auto', 'baseline' or 'avx2+fma', got {name!r}")
    # one table of entry points serves every kernel module (fastcnn/_kernels.pyx)
    path = _kernels.select_isa(name != "baseline")
    if name == "avx2+fma" and not path.startswith("avx2"):
        set_simd_path("auto")
        raise ValueError("this CPU (or build) has no AVX2+FMA kernels; "
                         f"available: {available_simd_paths()}")
    return path


def _read_environment():
    value = os.environ.get("FASTCNN_SIMD", "").strip()
    if not value:
        return
    try:
        set_simd_path(value)
    except ValueError as e:
        warnings.warn(f"FASTCNN_SIMD={value!r} ignored: {e}", RuntimeWarning, stacklevel=3)


_read_environment()
