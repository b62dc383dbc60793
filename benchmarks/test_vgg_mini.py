"""The Fashion-MNIST recipe's network (models.vgg_mini as
recipes.fashion_mnist builds and trains it), fastcnn on each SIMD path next
to PyTorch (benchmarks/baselines.py) from the same starting parameters:

  step-vgg_mini-N128-float32        one training step: forward, loss with label
                                    smoothing, backward, Nesterov SGD with weight decay
  epoch-vgg_mini-60000-float32      recipes.fashion_mnist for one epoch (468 steps of
                                    128, one-cycle schedule, model built from the data)
  inference-vgg_mini-10000-float32  class ids of 10,000 images, batch norm's running
                                    estimates
"""

import numpy as np
import pytest
from baselines import SMOOTHING, TorchRecipe, recipe_model, torch_fashion_mnist
from conftest import on_every_simd_path, record

import fastcnn
from fastcnn import bench, optim, recipes

BATCH = 128
IMPLS = on_every_simd_path("torch")


@pytest.fixture(scope="module")
def data():
    return bench.data(60000, 10000, "float32")


def fastcnn_step(model):
    """A training step as fit makes it, on a fixed batch (targets already
    smoothed, as fit's are), with the recipe's optimizer."""
    sgd = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    decay=optim.weights_only(model))
    threads = fastcnn.get_num_threads()
    ws = model.workspace(BATCH, train=True, threads=threads)

    def step(x, t):
        with model.lock.writing():
            loss = model.train_batch(x, t, ws)
            sgd.step(threads=threads)
        return loss
    return step


def torch_step(model):
    import torch

    twin = TorchRecipe(model)
    return lambda x, labels: twin.step(torch.from_numpy(x), torch.from_numpy(labels))


@pytest.mark.parametrize("impl", IMPLS)
def test_step_vgg_mini(benchmark, impl, simd, threads, data):
    name, kernels = simd
    x, y = data[0][:BATCH].copy(), data[1][:BATCH].copy()
    model = recipe_model(data[0])
    if name == "fastcnn":
        t = np.eye(10, dtype=np.float32)[y] * (1 - SMOOTHING) + np.float32(SMOOTHING / 10)
        fn, args = fastcnn_step(model), (x, t)
    else:
        fn, args = torch_step(model), (x, y)
    benchmark.group = f"step-vgg_mini-N{BATCH}-float32"
    record(benchmark, name, threads, "float32", BATCH, BATCH * bench.training_macs(model),
           simd=kernels)
    fn(*args)  # untimed: first-call set-up (page faults, PyTorch's primitive caches)
    # the step changes the parameters; timing does not depend on their values
    loss = benchmark(fn, *args)
    assert np.isfinite(loss)


@pytest.mark.parametrize("impl", IMPLS)
def test_epoch_vgg_mini(benchmark, impl, simd, threads, data):
    name, kernels = simd
    x, y, _, source = data
    model = recipe_model(x)
    if name == "fastcnn":
        def epoch():
            recipes.fashion_mnist(x, y, epochs=1, progress=False)
    else:
        def epoch():
            torch_fashion_mnist(x, y, epochs=1)
    benchmark.group = "epoch-vgg_mini-60000-float32"
    steps = len(x) // BATCH
    record(benchmark, name, threads, "float32", BATCH,
           steps * BATCH * bench.training_macs(model), simd=kernels, data=source)
    # seconds long: one round each
    benchmark.pedantic(epoch, rounds=1, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_inference_vgg_mini(benchmark, impl, simd, threads, data):
    name, kernels = simd
    x, _, xt, _ = data
    model = recipe_model(x)
    predict = model.predict if name == "fastcnn" else TorchRecipe(model).predict
    benchmark.group = "inference-vgg_mini-10000-float32"
    record(benchmark, name, threads, "float32", len(xt), len(xt) * bench.forward_macs(model),
           simd=kernels)
    # a second or more per round on the slower paths: few rounds
    labels = benchmark.pedantic(predict, args=(xt,), rounds=3, iterations=1, warmup_rounds=1)
    assert labels.shape == (len(xt),)
