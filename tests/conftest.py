"""Fixtures: dtypes, random generators, thread-setting cleanup, Hypothesis profiles."""

import os

import numpy as np
import pytest

import fastcnn

try:
    from hypothesis import settings
except ImportError:  # hypothesis is a test extra; tests that need it import it
    settings = None

if settings is not None:
    settings.register_profile("dev", max_examples=25, deadline=None)
    settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

from helpers import REQUIRE, restore_simd_path


def pytest_report_header(config):
    return (f"fastcnn {fastcnn.__version__} from {os.path.dirname(fastcnn.__file__)}; "
            f"OpenMP {'on' if fastcnn.openmp_enabled() else 'off'}, "
            f"{fastcnn.get_num_threads()} threads; FASTCNN_REQUIRE_DATA={'1' if REQUIRE else '0'}")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["baseline", "avx2+fma", "avx512"])
def simd(request):
    """Run the test on each version of the kernels this CPU runs (portable,
    AVX2+FMA, AVX-512), restoring the choice afterwards."""
    if not any(p.startswith(request.param) for p in fastcnn.available_simd_paths()):
        pytest.skip(f"this CPU or build has no {request.param} kernels")
    before = fastcnn.simd_path()
    fastcnn.set_simd_path(request.param)
    yield fastcnn.simd_path()
    restore_simd_path(before)


@pytest.fixture
def threads():
    """Restore the thread setting after a test that changes it."""
    before = fastcnn._threads._requested
    yield
    fastcnn._threads._requested = before
