"""The three convolution algorithms (direct, im2col + GEMM, FFT) against the
oracle, each other, PyTorch-free gradient checks, determinism, and "auto"."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcnn
import oracle
from fastcnn import _blas, _tasks, conv_algorithms
from helpers import assert_close

# 1e-10 relative in float64 and 1e-4 in float32 (issue 4; direct stays at 1e-12 / 1e-5)
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}

# (N, in_maps, out_maps, H, W, KH, KW): non-square images, kernels 1 to 11, many maps
SHAPES = [
    (3, 1, 6, 28, 28, 5, 5),
    (2, 6, 12, 12, 12, 5, 5),
    (2, 3, 4, 13, 21, 1, 1),
    (2, 2, 3, 17, 11, 3, 2),
    (1, 4, 5, 20, 16, 7, 7),
    (2, 2, 2, 23, 19, 11, 11),
    (1, 16, 24, 10, 14, 3, 3),
    (1, 3, 2, 11, 30, 9, 4),
    (5, 1, 1, 8, 9, 8, 9),
]


def layer_and_input(shape, algorithm, dtype, seed=0):
    n, c, m, h, w, kh, kw = shape
    rng = np.random.default_rng(seed)
    layer = fastcnn.Conv2D(c, m, (kh, kw), activation="sigmoid", algorithm=algorithm, name="C")
    layer.build((c, h, w), dtype)
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, layer.params["weight"].shape)
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, m)
    return layer, rng.random((n, c, h, w)).astype(dtype), rng


def check_against_oracle(shape, algorithm, dtype, seed=0):
    dtype = np.dtype(dtype)
    layer, x, rng = layer_and_input(shape, algorithm, dtype, seed)
    assert layer.algorithm_used == algorithm
    k, b = layer.params["weight"], layer.params["bias"]
    y = layer.forward(x)
    assert y.dtype == dtype
    assert_close(y, oracle.conv_valid(x, k, b), dtype, rtol=TOL[dtype])
    grad = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(grad)
    delta = oracle.conv_delta(grad, y)
    assert_close(layer.grads["bias"], oracle.conv_bias_grad(delta), dtype, rtol=TOL[dtype])
    assert_close(layer.grads["weight"], oracle.conv_weight_grad(x, delta, shape[5:]), dtype,
                 rtol=TOL[dtype])
    assert_close(dx, oracle.conv_input_grad(delta, k, shape[3:5]), dtype, rtol=TOL[dtype])


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}C{}M{}-{}x{}-k{}x{}".format(*s))
def test_matches_oracle(shape, algorithm, dtype):
    check_against_oracle(shape, algorithm, dtype)


@st.composite
def shapes(draw):
    kh, kw = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 6)),
            kh + draw(st.integers(0, 12)), kw + draw(st.integers(0, 12)), kh, kw)


@given(shape=shapes(), algorithm=st.sampled_from(["im2col", "fft"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**31))
def test_matches_oracle_random_shapes(shape, algorithm, dtype, seed):
    check_against_oracle(shape, algorithm, dtype, seed)


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_without_activation(algorithm, rng):
    a = fastcnn.Conv2D(3, 2, 4, algorithm=algorithm)
    d = fastcnn.Conv2D(3, 2, 4, algorithm="direct")
    for layer in (a, d):
        layer.build((3, 9, 13), "float64")
        layer.params["weight"][...] = np.arange(96).reshape(2, 3, 4, 4) / 50 - 1
        layer.params["bias"][...] = [0.5, -0.25]
    x = rng.random((2, 3, 9, 13))
    np.testing.assert_allclose(a.forward(x), d.forward(x), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(a.forward(x).shape)
    np.testing.assert_allclose(a.backward(g), d.backward(g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.grads["weight"], d.grads["weight"], rtol=1e-10, atol=1e-12)


def test_im2col_row_blocks_and_tasks(monkeypatch, rng, threads):
    """Big images are cut into blocks of output rows, big batches into tasks
    run on several threads: the same values, and the same bits for 1 and 2
    threads."""
    monkeypatch.setattr(conv_algorithms, "COLUMN_BYTES", 2000)  # a few rows per block
    monkeypatch.setattr(_tasks, "TASK_MACS", 1000)              # many tasks
    shape = (7, 3, 4, 16, 19, 5, 3)
    check_against_oracle(shape, "im2col", "float64")
    results = []
    for t in (1, 2):
        fastcnn.set_num_threads(t)
        layer, x, rng2 = layer_and_input(shape, "im2col", "float32", seed=3)
        y = layer.forward(x)
        dx = layer.backward(rng2.standard_normal(y.shape).astype(np.float32))
        results.append((y, layer.grads["weight"].copy(), dx))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_fft_sizes_have_small_prime_factors(monkeypatch):
    for n in [1, 7, 11, 13, 28, 97, 128, 131]:
        m = conv_algorithms.fast_len(n)
        assert m >= n
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
    # NumPy's FFT when SciPy is absent: the same answer
    monkeypatch.setattr(conv_algorithms, "_scipy_fft", lambda: None)
    assert conv_algorithms.fast_len(131) == 135
    check_against_oracle((2, 2, 3, 13, 11, 5, 3), "fft", "float64")


def test_without_threadpoolctl_results_are_the_same_and_it_says_so(monkeypatch, rng):
    expected = None
    for missing in (False, True):
        if missing:
            monkeypatch.setattr(_blas._optional, "module", lambda name: None)
            monkeypatch.setattr(_blas, "_warned", False)
        layer, x, _ = layer_and_input((4, 2, 3, 10, 10, 3, 3), "im2col", "float64", seed=1)
        if missing:
            with pytest.warns(RuntimeWarning, match="threadpoolctl"):
                y = layer.forward(x)
            np.testing.assert_array_equal(y, expected)
        else:
            expected = layer.forward(x)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
def test_gradcheck_network(algorithm, rng):
    model = fastcnn.Sequential(
        [fastcnn.Conv2D(2, 3, 3, activation="sigmoid", algorithm=algorithm), fastcnn.MeanPool2D(2),
         fastcnn.Conv2D(3, 2, (2, 4), activation="sigmoid", algorithm=algorithm),
         fastcnn.Flatten(), fastcnn.Dense(2 * 4 * 3, 3, activation="sigmoid")],
        input_shape=(2, 12, 14), dtype="float64", seed=1)
    x, labels = rng.random((3, 2, 12, 14)), np.array([0, 2, 1])
    model.backprop(x, labels)
    for name, p in model.params.items():
        for index in list(np.ndindex(p.shape))[:: max(1, p.size // 15)]:
            saved, eps = p[index], 1e-6
            p[index] = saved + eps
            up = model.backprop(x, labels)
            p[index] = saved - eps
            down = model.backprop(x, labels)
            p[index] = saved
            model.backprop(x, labels)
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - model.grads[name][index]) <= 1e-7 * max(1, abs(numeric)), name


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_training_is_bitwise_identical_across_threads(algorithm, threads, rng):
    x, y = rng.random((40, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 40)
    params = []
    for t in (1, 2):
        fastcnn.set_num_threads(t)
        model = fastcnn.seed_cnn(seed=2, algorithm=algorithm)
        model.fit(x, y, epochs=1, batch_size=10, progress=False)
        params.append(model.params)
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name], params[1][name])


def test_algorithms_train_alike(rng):
    """A few SGD steps of seed_cnn give the same model, to rounding, with each."""
    x, y = rng.random((30, 1, 28, 28)), rng.integers(0, 10, 30)
    models = {}
    for algorithm in ("direct", "im2col", "fft"):
        models[algorithm] = fastcnn.seed_cnn(seed=0, dtype="float64", algorithm=algorithm)
        models[algorithm].fit(x, y, epochs=2, batch_size=10, progress=False)
    for algorithm in ("im2col", "fft"):
        for name, p in models["direct"].params.items():
            np.testing.assert_allclose(models[algorithm].params[name], p, rtol=1e-9, atol=1e-12)


def test_algorithm_argument_config_and_files(tmp_path):
    with pytest.raises(ValueError, match="algorithm must be one of"):
        fastcnn.Conv2D(1, 2, 3, algorithm="winograd")
    model = fastcnn.seed_cnn(algorithm="fft")
    assert [layer.algorithm_used for layer in model.layers[:3:2]] == ["fft", "fft"]
    assert "fft" in model.summary()
    model.save(tmp_path / "m.npz")
    again = fastcnn.load(tmp_path / "m.npz")
    assert [layer.algorithm for layer in again.layers[:3:2]] == ["fft", "fft"]
    assert fastcnn.seed_cnn().layers[0].algorithm == "auto"


def test_auto_is_a_rule_of_the_shape():
    """auto never times anything: the same shape, the same choice."""
    for shape in [(1, 28, 6, 5), (6, 12, 12, 5), (16, 128, 16, 11), (64, 64, 64, 3)]:
        c, h, m, k = shape
        picks = set()
        for _ in range(3):
            layer = fastcnn.Conv2D(c, m, k, algorithm="auto")
            layer.build((c, h, h), "float32")
            picks.add(layer.algorithm_used)
        assert len(picks) == 1 and picks <= {"direct", "im2col", "fft"}
    assert fastcnn.seed_cnn().layers[0].algorithm_used == "direct"
