"""Time to accuracy: the Fashion-MNIST recipe, four epochs with the test
error after each, in fastcnn (recipes.fashion_mnist) and in PyTorch
(baselines.torch_fashion_mnist: same network and starting parameters, same
optimizer, schedule, batches and order), one round each, on the suite's
threads. Only on request, and only with the real Fashion-MNIST:

    python -P -m pytest benchmarks/test_time_to_accuracy.py --benchmark-only --time-to-accuracy

The round's time is the whole recipe, evaluations included. What counts is
in extra_info: seconds_to_target, the training seconds (evaluation
excluded) until the end of the first epoch with a test error of at most
0.08 (None if none reached it), that epoch, and each epoch's seconds and
test error. compare.py compares seconds_to_target.
"""

from types import SimpleNamespace

import pytest
from baselines import torch_fashion_mnist
from conftest import need_impl, record, torch_capability

import fastcnn
from fastcnn import datasets, recipes

TARGET = 0.08  # 92% accuracy, which the recipe reaches in four epochs
EPOCHS = 4


@pytest.fixture(scope="module")
def fashion_mnist(request):
    if not request.config.getoption("--time-to-accuracy"):
        pytest.skip("minutes long: run with --time-to-accuracy")
    try:
        for split in ("train", "test"):
            datasets.locate("fashion-mnist", split, download_missing=False)
    except FileNotFoundError as e:
        pytest.skip(f"needs the real Fashion-MNIST: {e}")
    return datasets.load("fashion-mnist", "train") + datasets.load("fashion-mnist", "test")


def train_fastcnn(x, y, xt, yt):
    _, history = recipes.fashion_mnist(x, y, validation_data=(xt, yt), epochs=EPOCHS,
                                       progress=False)
    return history.epoch_seconds, history.val_error


def train_torch(x, y, xt, yt):
    return torch_fashion_mnist(x, y, validation_data=(xt, yt), epochs=EPOCHS)


@pytest.mark.parametrize("impl", ["fastcnn", "torch"])
def test_time_to_accuracy(benchmark, impl, threads, fashion_mnist):
    need_impl(impl)
    x, y, xt, yt = fashion_mnist
    train = train_fastcnn if impl == "fastcnn" else train_torch
    benchmark.group = f"time_to_accuracy-vgg_mini-{TARGET}-fashion_mnist-float32"
    simd = fastcnn.simd_path() if impl == "fastcnn" else torch_capability()
    record(benchmark, impl, threads, "float32", 128, 0, simd=simd)
    seconds, errors = benchmark.pedantic(train, args=(x, y, xt, yt), rounds=1, iterations=1,
                                         warmup_rounds=0)
    reached = recipes.first_epoch_below(SimpleNamespace(val_error=errors, epoch_seconds=seconds),
                                        TARGET)
    epoch, to_target = reached if reached else (None, None)
    benchmark.extra_info.update(target_error=TARGET, seconds_to_target=to_target,
                                epoch_reached=epoch, epoch_seconds=list(seconds),
                                val_errors=list(errors))
    assert len(errors) == EPOCHS
