"""Under load: two models trained at once in two Python threads, kernels that
let other Python threads run, and prediction over a million memory-mapped
images in bounded memory."""

import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastcnn
from fastcnn import _conv


def small_data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def train(build, seed, x, y, **fit):
    model = build(seed=seed)
    model.fit(x, y, epochs=2, batch_size=25, seed=seed, progress=False, **fit)
    return model.params


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("build, optimizer", [(fastcnn.seed_cnn, None),
                                              (fastcnn.models.lenet5, "adam")])
def test_two_models_trained_at_once_equal_one_after_the_other(build, optimizer):
    x, y = small_data()

    def run(seed):
        if optimizer is None:
            return train(build, seed, x, y, lr=1.0)
        model = build(seed=seed)
        model.fit(x, y, epochs=2, batch_size=25, seed=seed, progress=False,
                  optimizer=fastcnn.Adam(model, lr=1e-3))
        return model.params

    serial = [run(1), run(2)]
    results, errors = [None, None], []

    def worker(i):
        try:
            results[i] = run(i + 1)
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    for i in range(2):
        assert_same(results[i], serial[i])


def test_kernels_release_the_gil():
    """While one thread is inside a long convolution kernel, another keeps
    running Python: the kernel runs in `with nogil`."""
    rng = np.random.default_rng(0)
    x = rng.random((3000, 6, 12, 12), dtype=np.float32)
    k = rng.random((12, 6, 5, 5), dtype=np.float32)
    b = np.zeros(12, np.float32)
    out = np.empty((3000, 12, 8, 8), np.float32)
    started = time.perf_counter()
    _conv.conv_forward(x, k, b, out, 1, 1)
    one_call = time.perf_counter() - started
    calls = max(1, int(0.3 / max(one_call, 1e-4)))
    done = threading.Event()

    def convolve():
        for _ in range(calls):
            _conv.conv_forward(x, k, b, out, 1, 1)
        done.set()

    count = 0
    t = threading.Thread(target=convolve)
    t.start()
    while not done.is_set():
        count += 1
    t.join()
    # holding the GIL, the kernel would let this loop run only between calls
    assert count > 20 * calls, (count, calls)


@pytest.mark.slow
def test_predict_and_evaluate_a_million_memory_mapped_images(tmp_path):
    """1,000,000 images (3.1 GB of float32) in a memory-mapped .npy: predict
    and evaluate go through them in chunks; what they allocate stays far
    below 1 GiB (the labels and scores they return are 48 MB)."""
    n = 1_000_000
    path = tmp_path / "images.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 1, 28, 28))
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, 2000, replace=False))
    x[rows] = rng.random((len(rows), 1, 28, 28), dtype=np.float32)  # the rest is zeros
    x.flush()
    del x
    images = np.load(path, mmap_mode="r")
    model = fastcnn.seed_cnn(seed=0)
    model.fit(np.asarray(images[rows]), np.arange(len(rows)) % 10, epochs=1, progress=False)

    tracemalloc.start()
    try:
        labels = model.predict(images)
        _, predict_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        error = model.evaluate(images, np.zeros(n, np.int64))
        _, evaluate_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"predict allocated at most {predict_peak / 2**20:.0f} MiB, "
          f"evaluate {evaluate_peak / 2**20:.0f} MiB, for {n} images")
    assert labels.shape == (n,)
    assert predict_peak < 2**30 and evaluate_peak < 2**30
    np.testing.assert_array_equal(labels[rows], model.predict(np.asarray(images[rows])))
    zero_label = model.predict(np.zeros((1, 1, 28, 28), np.float32))[0]
    others = np.setdiff1d(np.arange(n), rows)[:1000]
    assert (labels[others] == zero_label).all()
    assert error == pytest.approx(np.mean(labels != 0))
