"""Benchmark fixtures: every implementation pinned to the same thread count,
fastcnn run on each SIMD path the CPU has, machine details recorded with
each run.

    pytest benchmarks/ --benchmark-only --benchmark-autosave [--bench-threads 2]

Runs kept for tracking go to benchmarks/runs (committed), saved from the
repository root; benchmarks/compare.py compares two of them:

    python -P -m pytest benchmarks/ --benchmark-only \
        --benchmark-storage=benchmarks/runs --benchmark-save=LABEL
    python benchmarks/compare.py

(Run with `python -P -m pytest` or `pytest`: the checkout's fastcnn/
sources must not shadow the installed, built package; see pytest_configure.)
"""

import os
import subprocess

import numpy as np
import pytest

import fastcnn
from fastcnn import bench


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=2,
                     help="threads for fastcnn, PyTorch and NumPy's BLAS (default 2)")
    parser.addoption("--time-to-accuracy", action="store_true",
                     help="also run test_time_to_accuracy.py: the Fashion-MNIST recipe in fastcnn "
                          "and PyTorch, four epochs each (minutes)")


def pytest_configure(config):
    # `python -m pytest` from a checkout puts the checkout first on sys.path:
    # its fastcnn/*.py would then run with the compiled modules of wherever
    # fastcnn is installed, a mix that is neither (an editable install's
    # finder supplies the .so files by name). Times of that mix mean nothing.
    from fastcnn import _kernels

    here = os.path.dirname(os.path.realpath(fastcnn.__file__))
    built = os.path.dirname(os.path.realpath(_kernels.__file__))
    if here != built:
        raise pytest.UsageError(
            f"fastcnn's Python files come from {here} but its compiled kernels from {built}. "
            f"Run `python -P -m pytest ...` (or the `pytest` command) so that the checkout's "
            f"sources do not shadow the installed package, or build this checkout in place.")


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
        "simd_paths": fastcnn.available_simd_paths(),
        **_source_of_fastcnn(),
    }
    machine_info["torch"] = __import__("torch").__version__ if bench.torch_available() else None
    machine_info["numpy"] = np.__version__


def _source_of_fastcnn():
    """Where the fastcnn that ran comes from, and its commit: pytest-benchmark's
    commit_info is that of the directory pytest ran in, which need not be the
    tree fastcnn is installed from (a worktree, an editable install)."""
    where = os.path.dirname(os.path.dirname(os.path.realpath(fastcnn.__file__)))

    def git(*args):
        r = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit = dirty = None
    return {"source": where, "commit": commit, "dirty": dirty}


def record(benchmark, impl, threads, dtype, batch, macs, **more):
    """extra_info every benchmark carries: what ran, and its arithmetic."""
    benchmark.extra_info.update(impl=impl, threads=threads, dtype=str(dtype), batch=batch,
                                flops=2 * macs, **more)


IMPLS = ["fastcnn", "torch", "numpy"]


def need_impl(name):
    if name == "torch" and not bench.torch_available():
        pytest.skip("PyTorch is not installed")


def on_every_simd_path(*others):
    """Implementation ids: fastcnn once on each SIMD path this CPU and build
    run ("fastcnn-baseline", "fastcnn-avx2+fma", ...: whatever
    available_simd_paths lists), then `others` ("torch"). A test may add a
    variant of its own after a colon: "fastcnn-baseline:im2col"."""
    return [f"fastcnn-{path}" for path in fastcnn.available_simd_paths()] + list(others)


@pytest.fixture
def simd(impl):
    """For a test parametrized by on_every_simd_path: switch fastcnn to the
    path `impl` names for the test, and back to "auto" after it. Gives
    (implementation, the kernels it runs): ("fastcnn", fastcnn.simd_path())
    or ("torch", PyTorch's CPU capability, such as "AVX512")."""
    name, _, path = impl.partition(":")[0].partition("-")
    need_impl(name)
    if name != "fastcnn":
        yield name, torch_capability()
        return
    fastcnn.set_simd_path(path)
    try:
        yield name, fastcnn.simd_path()
    finally:
        fastcnn.set_simd_path("auto")


def torch_capability():
    """The instruction set PyTorch's CPU kernels use here ("AVX512", "AVX2", ...)."""
    import torch

    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get else None
