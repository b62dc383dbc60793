"""The kernel shim (fastcnn/_kernels.pyx, .pxd): one choice of instruction set
for every kernel module, activation codes from the C enum, and argument
errors named after the module that raises them."""

import numpy as np
import pytest

import fastcnn
from fastcnn import _activation, _conv, _dense, _im2col, _kernels, _loss, _optim, _pool
from helpers import restore_simd_path


def one_of_each_family(dtype):
    """A result from four modules whose kernels round differently with FMA:
    a convolution, a 3x3 mean pool (1/9 is inexact), a sigmoid, a dense layer."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 12, 12)).astype(dtype)
    k = rng.uniform(-0.5, 0.5, (4, 3, 5, 5)).astype(dtype)
    conv = np.empty((2, 4, 8, 8), dtype)
    _conv.conv_forward(x, k, np.zeros(4, dtype), conv, 0, 1)
    pool = np.empty((2, 3, 4, 4), dtype)
    _pool.mean_pool(x, 3, pool, 1)
    z = rng.standard_normal(1000).astype(dtype)
    sigmoid = np.empty_like(z)
    _activation.activation_forward(z, sigmoid, _kernels.ACTIVATION_CODES["sigmoid"], 1)
    f, w = rng.random((3, 50)).astype(dtype), rng.standard_normal((7, 50)).astype(dtype)
    dense = np.empty((3, 7), dtype)
    _dense.dense_forward(f, w, np.zeros(7, dtype), dense, 0, 1)
    return {"conv": conv, "pool": pool, "activation": sigmoid, "dense": dense}


@pytest.fixture
def restore_simd():
    before = fastcnn.simd_path()
    yield
    restore_simd_path(before)


def test_the_active_path_is_held_in_one_place(restore_simd):
    for name in ("baseline", "auto", *fastcnn.available_simd_paths()):
        path = fastcnn.set_simd_path(name.split(" ")[0])
        assert fastcnn.simd_path() == _kernels.active_isa() == path
    assert fastcnn.available_simd_paths()[-1] == _kernels.BEST_ISA
    for module in (_conv, _pool, _activation, _dense, _loss, _optim):
        assert not hasattr(module, "set_isa") and not hasattr(module, "ISA")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_set_simd_path_switches_every_family_at_once(dtype, restore_simd):
    if "avx2+fma" not in fastcnn.available_simd_paths():
        pytest.skip("needs a CPU with AVX2+FMA and a build with both kernel versions")
    fastcnn.set_simd_path("baseline")
    baseline = one_of_each_family(dtype)
    fastcnn.set_simd_path("avx2+fma")
    avx2 = one_of_each_family(dtype)
    fastcnn.set_simd_path("baseline")
    again = one_of_each_family(dtype)
    optimised = "-O3" in fastcnn.build_info().get("compile_args", [])
    for family in baseline:
        # FMA rounds a*b + c once: the last bits move in every family together
        # (in an optimised build: a sanitizer's -O1 build may leave some sums
        # uncontracted)
        assert not optimised or not np.array_equal(baseline[family], avx2[family]), family
        tol = 1e-5 if dtype == "float32" else 1e-12  # of the largest value: sums may cancel
        np.testing.assert_allclose(baseline[family], avx2[family], rtol=tol,
                                   atol=tol * np.abs(baseline[family]).max())
        np.testing.assert_array_equal(baseline[family], again[family])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avx512_kernels_agree_with_avx2(dtype, restore_simd):
    if "avx512" not in fastcnn.available_simd_paths():
        pytest.skip("needs a CPU with AVX-512 (x86-64-v4)")
    fastcnn.set_simd_path("avx2+fma")
    avx2 = one_of_each_family(dtype)
    fastcnn.set_simd_path("avx512")
    avx512 = one_of_each_family(dtype)
    for family in avx2:
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(avx512[family], avx2[family], rtol=tol,
                                   atol=tol * np.abs(avx2[family]).max())
    if dtype == "float32":
        # 8x8 output maps are narrower than 16 floats: the AVX2 kernel runs them
        np.testing.assert_array_equal(avx512["conv"], avx2["conv"])


def test_a_workspace_follows_the_path_it_was_sized_for(restore_simd):
    """Workspace layouts depend on the vector width; a model switched to
    another path between calls gets workspaces of that path."""
    paths = [p.split(" ")[0] for p in fastcnn.available_simd_paths()]
    model = fastcnn.Sequential([fastcnn.layers.Conv2D(2, 8, 3, activation="relu", padding=1,
                                                      algorithm="direct"),
                                fastcnn.layers.Flatten(), fastcnn.layers.Dense(8 * 40 * 40, 10)],
                               input_shape=(2, 40, 40), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 40, 40)).astype(np.float32)
    y = rng.integers(0, 10, 3)
    results = {}
    for path in paths + paths[::-1]:
        fastcnn.set_simd_path(path)
        results.setdefault(path, []).append(
            (model.predict_proba(x), model.backprop(x, y),
             model.layers[0].grads["weight"].copy()))
    for (p1, l1, g1), (p2, l2, g2) in results.values():
        np.testing.assert_array_equal(p1, p2)
        assert l1 == l2
        np.testing.assert_array_equal(g1, g2)


def test_activation_codes_are_the_c_enum():
    codes = _kernels.ACTIVATION_CODES
    assert codes == {None: 0, "sigmoid": 1, "relu": 2, "tanh": 3, "tanh_opt": 4}
    assert sorted(codes.values()) == list(range(_kernels.ACTIVATION_COUNT))
    # each name computes its function in the C kernels
    z = np.linspace(-3, 3, 61)
    expected = {None: z, "sigmoid": 1 / (1 + np.exp(-z)), "relu": np.maximum(z, 0),
                "tanh": np.tanh(z), "tanh_opt": 1.7159 * np.tanh(2 * z / 3)}
    for name, code in codes.items():
        y = np.empty_like(z)
        _activation.activation_forward(z, y, code, 1)
        np.testing.assert_allclose(y, expected[name], rtol=1e-13, atol=1e-15, err_msg=str(name))
    # codes outside the enum are refused by every module that takes one
    y = np.empty_like(z)
    for bad in (-1, _kernels.ACTIVATION_COUNT):
        with pytest.raises(ValueError, match=r"^fastcnn\._activation: unknown activation code$"):
            _activation.activation_forward(z, y, bad, 1)
        with pytest.raises(ValueError, match=r"^fastcnn\._dense: unknown activation code$"):
            _dense.dense_forward(np.ones((1, 2)), np.ones((1, 2)), np.ones(1), np.empty((1, 1)), bad, 1)
        with pytest.raises(ValueError, match=r"^fastcnn\._conv: unknown activation code$"):
            _conv.conv_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), np.ones(1),
                               np.empty((1, 1, 2, 2)), bad, 1)


def test_layers_use_the_same_codes():
    # the layers read the codes from the kernels' enum, not a copy
    assert fastcnn.layers.ACTIVATION_CODES is _kernels.ACTIVATION_CODES


def test_errors_name_the_module_that_raises_them():
    a = np.ones((2, 2))
    cases = [
        (lambda: _pool.mean_pool(np.ones((1, 1, 4, 4)), 5, np.empty((1, 1, 1, 1)), 1),
         "fastcnn._pool: scale must be in 1..min(H, W)"),
        (lambda: _loss.mse(a, np.ones((2, 3)), a.copy()),
         "fastcnn._loss: yhat, t and grad must have the same shape"),
        (lambda: _loss.cross_entropy(np.ones((0, 2)), np.ones((0, 2)), np.ones((0, 2))),
         "fastcnn._loss: empty batch"),
        (lambda: _optim.adam_step(np.ones(2), np.ones(2), np.ones(2), np.ones(2), 0.1, 0.9, 0.99,
                                  1e-8, 0, 0.0, False, 1),
         "fastcnn._optim: t and n_threads must be >= 1"),
        (lambda: _im2col.im2col(np.ones((1, 1, 4, 4)), 2, 2, 0, 0, 1, 0, 1, np.empty((4, 3)), 1),
         "fastcnn._im2col: stride must be >= 1"),
        (lambda: _conv.conv_forward(np.ones((1, 1, 3, 3)), np.ones((1, 2, 2, 2)), np.ones(1),
                                    np.empty((1, 1, 2, 2)), 0, 1),
         "fastcnn._conv: kernel input maps != input maps"),
        (lambda: _activation.softmax_forward(a, np.empty((2, 3)), 1),
         "fastcnn._activation: z and y differ in shape"),
        (lambda: _dense.dense_forward(a, np.ones((3, 3)), np.ones(3), np.empty((2, 3)), 0, 1),
         "fastcnn._dense: W has the wrong number of columns"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
