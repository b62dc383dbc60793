"""Helpers shared by the tests: the dtype-aware tolerance, and the switch
that turns 'data, torch or onnx missing' skips into failures in CI, the way
back to a kernel version."""

import os

import numpy as np
import pytest

import fastcnn

# Agreement with the float64 oracle: the bound for each dtype.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

REQUIRE = os.environ.get("FASTCNN_REQUIRE_DATA", "").strip() not in ("", "0")


def need(condition, reason):
    """Skip unless `condition`; with FASTCNN_REQUIRE_DATA=1 (CI) fail instead,
    so that no real-data, PyTorch or ONNX test silently goes missing."""
    if condition:
        return
    if REQUIRE:
        pytest.fail(f"required by FASTCNN_REQUIRE_DATA=1 but unavailable: {reason}")
    pytest.skip(reason)


def import_torch():
    try:
        import torch
    except ImportError:
        torch = None
    need(torch is not None, "PyTorch is not installed (pip install torch==2.13.0)")
    return torch


def import_onnx():
    """(onnx, onnxruntime), or a skip (a failure in CI) when either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        onnx = onnxruntime = None
    need(onnx is not None, 'onnx and onnxruntime are not installed (pip install ".[test]", '
                           'or pip install onnx onnxruntime)')
    return onnx, onnxruntime


def assert_close(actual, desired, dtype=None, rtol=None, scale=None):
    """actual (fastcnn, in `dtype`) against desired (the float64 oracle):
    relative 1e-12 in float64, 1e-5 in float32, with an absolute floor of the
    same size relative to the largest value (sums that cancel to near zero),
    or to `scale` if larger: the size of the terms summed, for methods such as
    the FFT whose rounding follows the operands, not the result."""
    actual = np.asarray(actual)
    desired = np.asarray(desired, dtype=np.float64)
    rtol = rtol if rtol is not None else RTOL[np.dtype(dtype or actual.dtype)]
    assert actual.shape == desired.shape, f"shape {actual.shape} != {desired.shape}"
    scale = max(float(np.abs(desired).max()) if desired.size else 0.0, scale or 0.0)
    np.testing.assert_allclose(actual.astype(np.float64), desired, rtol=rtol, atol=rtol * scale)


def restore_simd_path(before):
    """Back to the kernel version `before` (a name fastcnn.simd_path() gave)."""
    fastcnn.set_simd_path(before.split(" ")[0])
