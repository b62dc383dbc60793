"""Benchmark fixtures: every implementation pinned to the same thread count,
machine details recorded with each run.

    pytest benchmarks/ --benchmark-only --benchmark-autosave [--bench-threads 2]
"""

import numpy as np
import pytest

import fastcnn
from fastcnn import bench


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=2,
                     help="threads for fastcnn, PyTorch and NumPy's BLAS (default 2)")


@pytest.fixture(scope="session")
def threads(request):
    n = request.config.getoption("--bench-threads")
    bench.pin_threads(n)
    return n


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["cpu_model"] = bench.cpu_model()
    machine_info["fastcnn"] = {
        "version": fastcnn.__version__,
        "openmp": fastcnn.openmp_enabled(),
        "simd": fastcnn.simd_path(),
        "build": fastcnn.build_info().get("compile_args"),
        "threads": config.getoption("--bench-threads"),
    }
    machine_info["torch"] = __import__("torch").__version__ if bench.torch_available() else None
    machine_info["numpy"] = np.__version__


def record(benchmark, impl, threads, dtype, batch, macs):
    """extra_info every benchmark carries: what ran, and its arithmetic."""
    benchmark.extra_info.update(impl=impl, threads=threads, dtype=str(dtype), batch=batch,
                                flops=2 * macs)


IMPLS = ["fastcnn", "torch", "numpy"]


def need_impl(name):
    if name == "torch" and not bench.torch_available():
        pytest.skip("PyTorch is not installed")
