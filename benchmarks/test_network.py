"""Whole networks. seed_cnn: a training step at batch 1, 50 and 256, one
epoch over 60,000 images, and inference over 10,000; fastcnn next to PyTorch
and NumPy doing the same work from the same starting parameters. LeNet-5
with Adam (models.lenet5): an epoch and inference, fastcnn on each SIMD
path next to PyTorch. (The recipe's network: test_vgg_mini.py.)"""

import numpy as np
import pytest
from conftest import IMPLS, need_impl, on_every_simd_path, record

import fastcnn
from fastcnn import bench, datasets, models

DTYPES = ["float32", "float64"]


def impl_for(name, dtype):
    need_impl(name)
    model = fastcnn.seed_cnn(seed=0, dtype=dtype)
    (impl,) = bench.implementations(model, (name,))
    return impl, model


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 50, 256], ids=lambda n: f"N{n}")
def test_step(benchmark, n, dtype, impl_name, threads):
    impl, model = impl_for(impl_name, dtype)
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28)).astype(dtype)
    t = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    benchmark.group = f"step-N{n}-{dtype}"
    record(benchmark, impl_name, threads, dtype, n, n * bench.training_macs(model))
    loss = benchmark(impl.step, x, t)
    assert np.isfinite(loss)


@pytest.fixture(scope="module")
def data():
    return {dtype: bench.data(60000, 10000, dtype) for dtype in DTYPES}


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_epoch(benchmark, dtype, impl_name, threads, data):
    x, y, _, source = data[dtype]
    impl, model = impl_for(impl_name, dtype)
    benchmark.group = f"epoch-60000-{dtype}"
    record(benchmark, impl_name, threads, dtype, 50, len(x) * bench.training_macs(model))
    benchmark.extra_info["data"] = source
    # one epoch is long enough to time by itself; the baselines take seconds each
    benchmark.pedantic(impl.epoch, args=(x, y), rounds=3 if impl_name == "fastcnn" else 1,
                       iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("impl_name", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inference(benchmark, dtype, impl_name, threads, data):
    _, _, xt, _ = data[dtype]
    impl, model = impl_for(impl_name, dtype)
    benchmark.group = f"inference-10000-{dtype}"
    record(benchmark, impl_name, threads, dtype, len(xt), len(xt) * bench.forward_macs(model))
    labels = benchmark.pedantic(impl.predict, args=(xt,), rounds=5, iterations=1, warmup_rounds=1)
    assert labels.shape == (len(xt),)


@pytest.fixture(scope="module")
def standardized():
    x, y, xt, source = bench.data(60000, 10000, "float32")
    x, xt = datasets.standardize(x, xt)
    return x.astype(np.float32), y, xt.astype(np.float32), source


@pytest.mark.parametrize("impl", on_every_simd_path("torch"))
def test_epoch_lenet5(benchmark, impl, simd, threads, standardized):
    """LeNet-5 (ReLU, max pooling, softmax cross-entropy, Adam 1e-3, batch 50),
    the recipe of issue 6, over 60,000 standardised images, float32."""
    x, y, _, source = standardized
    impl_name, kernels = simd
    model = models.lenet5(seed=0)
    (runner,) = bench.implementations(model, (impl_name,), optimizer="adam")
    benchmark.group = "epoch-lenet5-60000-float32"
    record(benchmark, impl_name, threads, "float32", 50, len(x) * bench.training_macs(model),
           simd=kernels, data=source)
    benchmark.pedantic(runner.epoch, args=(x, y), rounds=3, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("impl", on_every_simd_path("torch"))
def test_inference_lenet5(benchmark, impl, simd, threads, standardized):
    _, _, xt, _ = standardized
    impl_name, kernels = simd
    model = models.lenet5(seed=0)
    (runner,) = bench.implementations(model, (impl_name,), optimizer="adam")
    benchmark.group = "inference-lenet5-10000-float32"
    record(benchmark, impl_name, threads, "float32", len(xt), len(xt) * bench.forward_macs(model),
           simd=kernels)
    labels = benchmark.pedantic(runner.predict, args=(xt,), rounds=5, iterations=1, warmup_rounds=1)
    assert labels.shape == (len(xt),)
