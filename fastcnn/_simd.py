"""Which compiled version of the kernels runs: baseline, AVX2+FMA or AVX-512.

The kernels are compiled for the baseline instruction set of the build (SSE2
on any x86-64 wheel) and, on x86-64, also for AVX2 + FMA (x86-64-v3, vectors
of 8 floats) and AVX-512 F/BW/DQ/VL (x86-64-v4, vectors of 16 floats); the
widest the CPU runs is chosen at import, as NumPy does. FASTCNN_SIMD= at
import, or set_simd_path(name), forces a narrower one (the tests use it to
check every version on one machine).

Results of the versions differ in the last bits: FMA rounds once where SSE2
rounds twice, and a 16-lane sum splits a dot product differently from an
8-lane one. Each version is exact to the oracle's tolerance and the same for
every thread count, so runs are reproducible on machines that choose the
same version: pin FASTCNN_SIMD=avx2+fma on every worker of a sweep over mixed
machines to make them all agree bit for bit.
"""

import os
import warnings

from fastcnn import _kernels

NAMES = tuple(_kernels.LEVELS)  # narrowest first


def simd_path():
    """Name of the kernels in use: "avx512", "avx2+fma", "baseline", or
    "avx2+fma (build flags)" when the build's baseline is itself AVX2."""
    return _kernels.active_isa()


def available_simd_paths():
    """The paths this CPU and build can run, fastest last."""
    paths = []
    for name in NAMES:
        chosen = _kernels.isa_up_to(_kernels.LEVELS[name])
        if chosen not in paths:
            paths.append(chosen)
    return paths


def set_simd_path(name):
    """Use "baseline", "avx2+fma", "avx512" or "auto" (the widest this CPU
    runs); returns the name of the version now in use."""
    if name != "auto" and name not in NAMES:
        raise ValueError(f"SIMD path must be 'auto' or one of {list(NAMES)}, got {name!r}")
    # one table of entry points serves every kernel module (fastcnn/_kernels.pyx)
    level = max(_kernels.LEVELS.values()) if name == "auto" else _kernels.LEVELS[name]
    if name not in ("auto", "baseline") and not _kernels.isa_up_to(level).startswith(name):
        raise ValueError(f"this CPU (or build) has no {name} kernels; "
                         f"available: {available_simd_paths()}")
    return _kernels.select_isa(level)


def _read_environment():
    value = os.environ.get("FASTCNN_SIMD", "").strip()
    if not value:
        return
    try:
        set_simd_path(value)
    except ValueError as e:
        warnings.warn(f"FASTCNN_SIMD={value!r} ignored: {e}", RuntimeWarning, stacklevel=3)


_read_environment()
