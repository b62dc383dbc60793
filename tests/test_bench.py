"""The benchmark baselines do the same work as fastcnn, and the benchmark
suite and `fastcnn bench` keep running (timings are not checked here: they
belong to benchmarks/, never to the test suite)."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastcnn
from fastcnn import bench
from helpers import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_arithmetic_of_the_paper_network():
    model = fastcnn.seed_cnn()
    assert bench.forward_macs(model) == 86400 + 115200 + 1920      # PERF_NOTES: 203.5k
    assert bench.training_macs(model) == 2 * 203520 + 115200 + 1920  # about 1.05 MFLOP


@pytest.mark.parametrize("which", ["torch", "numpy"])
def test_baselines_do_the_same_work(which):
    if which == "torch":
        need(bench.torch_available(), "PyTorch is not installed")
    model = fastcnn.seed_cnn(seed=3, dtype="float64")
    fc, other = bench.implementations(model, ("fastcnn", which))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.random((7, 1, 28, 28))
        t = np.eye(10)[rng.integers(0, 10, 7)]
        assert other.step(x, t) == pytest.approx(fc.step(x, t), rel=1e-12)
    mine = fc.model.params
    theirs = other.p if which == "numpy" else {
        "C1.weight": other.net[0].weight.detach().numpy()[:, :, ::-1, ::-1],
        "FC.weight": other.net[7].weight.detach().numpy()}
    for name in ("C1.weight", "FC.weight"):
        np.testing.assert_allclose(theirs[name], mine[name], rtol=1e-10, atol=1e-14)
    x = rng.random((20, 1, 28, 28))
    np.testing.assert_array_equal(other.predict(x), fc.predict(x))
    # the model handed in is left as it was
    np.testing.assert_array_equal(model.params["C1.weight"],
                                  fastcnn.seed_cnn(seed=3, dtype="float64").params["C1.weight"])


def test_lenet5_with_adam_does_the_same_work_in_torch():
    """The LeNet-5 benchmark's PyTorch twin: the same losses step by step
    (cross-entropy, Adam 1e-3), and the same predictions."""
    need(bench.torch_available(), "PyTorch is not installed")
    model = fastcnn.models.lenet5(seed=2, dtype="float64")
    fc, other = bench.implementations(model, ("fastcnn", "torch"), optimizer="adam")
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((9, 1, 28, 28))
        t = np.eye(10)[rng.integers(0, 10, 9)]
        assert other.step(x, t) == pytest.approx(fc.step(x, t), rel=1e-9)
    x = rng.standard_normal((30, 1, 28, 28))
    np.testing.assert_array_equal(other.predict(x), fc.predict(x))
    with pytest.raises(ValueError, match="seed_cnn with SGD only"):
        bench.implementations(model, ("numpy",))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        bench.implementations(model, ("fastcnn",), optimizer="rmsprop")


def test_bench_command_prints_the_table():
    r = subprocess.run([sys.executable, "-m", "fastcnn", "bench", "--threads", "1",
                        "--impl", "fastcnn,numpy", "--epoch-images", "500", "--repeat", "1"],
                       capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    for text in ("seconds per epoch", "inference, images/s", "training step, batch 1",
                 "GFLOP/s", "fastcnn", "numpy"):
        assert text in r.stdout
    bad = subprocess.run([sys.executable, "-m", "fastcnn", "bench", "--impl", "tensorflow"],
                         capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    assert bad.returncode == 1 and "--impl takes a subset" in bad.stderr


@pytest.mark.slow
def test_benchmark_suite_runs():
    """Every benchmark at batch 1 runs once (--benchmark-disable), torch included."""
    pytest.importorskip("pytest_benchmark")
    if not os.path.isdir(os.path.join(ROOT, "benchmarks")):
        pytest.skip("needs the source tree")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--benchmark-disable", "-k", "N1", "--bench-threads", "2",
                        os.path.join(ROOT, "benchmarks")],
                       capture_output=True, text=True, timeout=1200, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


@pytest.mark.slow
def test_new_benchmark_groups_and_compare_run():
    """The tracking command's own tests, and one case of each newer group
    (3x3 layers, dense, vgg_mini, LeNet-5 on every SIMD path) run once."""
    pytest.importorskip("pytest_benchmark")
    if not os.path.isdir(os.path.join(ROOT, "benchmarks")):
        pytest.skip("needs the source tree")
    r = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--benchmark-disable", "--bench-threads", "2", "-k",
                        "compare or 16to32_14x14-s1 or dense or (vgg_mini and step)",
                        os.path.join(ROOT, "benchmarks")],
                       capture_output=True, text=True, timeout=1200, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
