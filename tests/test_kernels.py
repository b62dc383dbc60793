"""Every kernel against the oracle (tests/oracle.py), through the layers that
call it: random shapes, map counts and kernel sizes, both dtypes, 1e-12
relative in float64 and 1e-5 in float32."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcnn
import oracle
from helpers import assert_close, restore_simd_path

# (N, in_maps, out_maps, H, W, KH, KW): the paper's two layers, 5x5 on widths
# below, at and above the 8-column block, non-square images and kernels,
# 1x1 and large kernels.
CONV_SHAPES = [
    (3, 1, 6, 28, 28, 5, 5),
    (2, 6, 12, 12, 12, 5, 5),
    (2, 2, 3, 9, 13, 5, 5),
    (1, 3, 2, 5, 5, 5, 5),
    (2, 2, 3, 11, 7, 3, 3),
    (2, 3, 4, 10, 17, 1, 1),
    (1, 2, 2, 14, 20, 7, 7),
    (2, 1, 2, 16, 19, 11, 11),
    (2, 2, 2, 12, 15, 2, 4),
    (1, 2, 3, 13, 30, 9, 3),
    # few output maps on wide images: weight gradient along rows, not maps
    (2, 3, 1, 12, 30, 5, 5),
    (1, 2, 2, 9, 40, 3, 3),
    (1, 1, 1, 12, 40, 3, 10),
    # input gradient in blocks of 2-3 maps; tiles of one row for short maps
    (1, 5, 3, 10, 12, 3, 3),
    (1, 7, 2, 9, 9, 5, 5),
    (2, 4, 2, 11, 11, 5, 5),
    (1, 3, 2, 2, 10, 2, 2),
    (2, 2, 3, 6, 35, 5, 5),
]


def make_conv(shape, dtype, rng, activation="sigmoid"):
    n, c, m, h, w, kh, kw = shape
    layer = fastcnn.Conv2D(c, m, (kh, kw), activation=activation, name="C")
    layer.build((c, h, w), dtype)
    layer.params["weight"][...] = rng.uniform(-0.5, 0.5, layer.params["weight"].shape)
    layer.params["bias"][...] = rng.uniform(-0.5, 0.5, m)
    x = rng.random((n, c, h, w)).astype(dtype)
    return layer, x


def check_conv(shape, dtype, rng, activation):
    layer, x = make_conv(shape, dtype, rng, activation)
    k, b = layer.params["weight"], layer.params["bias"]
    y = layer.forward(x)
    assert y.dtype == dtype
    assert_close(y, oracle.conv_valid(x, k, b, activation), dtype)

    grad = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(grad)
    delta = oracle.conv_delta(grad, y, activation)
    # the gradients are sums that may cancel: float32 rounding follows the
    # size of the terms (the same sums over absolute values), not the result
    ad, ax, ak = np.abs(delta), np.abs(x), np.abs(k)
    assert_close(layer.grads["bias"], oracle.conv_bias_grad(delta), dtype,
                 scale=oracle.conv_bias_grad(ad).max())
    assert_close(layer.grads["weight"], oracle.conv_weight_grad(x, delta, shape[5:]), dtype,
                 scale=oracle.conv_weight_grad(ax, ad, shape[5:]).max())
    assert_close(dx, oracle.conv_input_grad(delta, k, shape[3:5]), dtype,
                 scale=oracle.conv_input_grad(ad, ak, shape[3:5]).max())


@pytest.mark.parametrize("activation", ["sigmoid", None])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "N{}C{}M{}-{}x{}-k{}x{}".format(*s))
def test_conv_matches_oracle(shape, activation, dtype, rng, simd):
    check_conv(shape, dtype, rng, activation)


@st.composite
def conv_shapes(draw):
    kh, kw = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 5)),
            kh + draw(st.integers(0, 14)), kw + draw(st.integers(0, 20)), kh, kw)


@given(shape=conv_shapes(), dtype=st.sampled_from(["float32", "float64"]),
       activation=st.sampled_from(["sigmoid", None]), seed=st.integers(0, 2**32 - 1),
       path=st.sampled_from([p.split(" ")[0] for p in fastcnn.available_simd_paths()]))
def test_conv_matches_oracle_random_shapes(shape, dtype, activation, seed, path):
    before = fastcnn.simd_path()
    fastcnn.set_simd_path(path)
    try:
        check_conv(shape, np.dtype(dtype), np.random.default_rng(seed), activation)
    finally:
        restore_simd_path(before)


def test_first_layer_skips_input_gradient(rng):
    layer, x = make_conv((2, 1, 3, 10, 10, 5, 5), np.float64, rng)
    y = layer.forward(x)
    assert layer.backward(np.ones_like(y), need_input_grad=False) is None
    with_dx = layer.grads["weight"].copy()
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(layer.grads["weight"], with_dx)


def test_gradients_are_overwritten_not_accumulated(rng):
    layer, x = make_conv((2, 2, 3, 9, 9, 5, 5), np.float64, rng)
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    layer.backward(g)
    first = layer.grads["weight"].copy()
    layer.backward(g)
    np.testing.assert_array_equal(layer.grads["weight"], first)


def test_batch_size_changes_reuse_workspaces(rng):
    # a bigger batch after a smaller one and back again
    layer, _ = make_conv((1, 2, 3, 12, 12, 5, 5), np.float64, rng)
    for n in (2, 5, 1, 5):
        x = rng.random((n, 2, 12, 12))
        y = layer.forward(x)
        g = rng.standard_normal(y.shape)
        layer.backward(g)
        delta = oracle.conv_delta(g, y)
        assert_close(layer.grads["weight"], oracle.conv_weight_grad(x, delta, (5, 5)))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("hw", [(24, 24), (8, 8), (7, 9), (13, 6)])
def test_mean_pool_matches_oracle(scale, hw, dtype, rng, simd):
    h, w = hw
    if scale > min(h, w):
        pytest.skip("scale larger than the image")
    layer = fastcnn.MeanPool2D(scale, name="S")
    layer.build((3, h, w), dtype)
    x = rng.random((2, 3, h, w)).astype(dtype)
    y = layer.forward(x)
    assert y.shape == (2, 3, h // scale, w // scale)
    assert_close(y, oracle.mean_pool(x, scale), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(layer.backward(g), oracle.mean_upsample(g, (h, w), scale), dtype)


def test_sigmoid_layer_matches_oracle(dtype, rng, simd):
    layer = fastcnn.Sigmoid(name="s")
    layer.build((2, 5, 7), dtype)
    z = (rng.standard_normal((3, 2, 5, 7)) * 10).astype(dtype)
    y = layer.forward(z)
    assert_close(y, oracle.sigmoid(z.astype(np.float64)), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(layer.backward(g), oracle.conv_delta(g, y), dtype)


def test_sigmoid_saturates_without_nan(dtype, simd):
    layer = fastcnn.Sigmoid(name="s")
    layer.build((4,), dtype)
    big = np.finfo(dtype).max
    y = layer.forward(np.array([[-big, -1000.0, 1000.0, big]], dtype=dtype))
    # exp's argument is clamped where the result under- or overflows anyway
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [[0, 0, 1, 1]], rtol=0, atol=1e-37)


@pytest.mark.parametrize("activation", ["sigmoid", None])
@pytest.mark.parametrize("features, outputs", [(12, 5), (70, 13), (192, 10), (64, 1)])
def test_dense_matches_oracle(features, outputs, activation, dtype, rng, simd):
    layer = fastcnn.Dense(features, outputs, activation=activation, name="FC")
    layer.build((features,), dtype)
    layer.params["weight"][...] = rng.uniform(-1, 1, (outputs, features))
    layer.params["bias"][...] = rng.uniform(-1, 1, outputs)
    f = rng.random((4, features)).astype(dtype)
    y = layer.forward(f)
    W, b = layer.params["weight"], layer.params["bias"]
    assert_close(y, oracle.dense(f, W, b, activation), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    df = layer.backward(g)
    delta = oracle.conv_delta(g, y, activation)
    assert_close(layer.grads["weight"], delta.T @ f.astype(np.float64), dtype)   # eq. (19)
    assert_close(layer.grads["bias"], delta.sum(0), dtype)                       # eq. (24)
    assert_close(df, delta @ W.astype(np.float64), dtype)                        # eq. (30)


def test_flatten_is_c_order(rng):
    layer = fastcnn.Flatten(name="F")
    layer.build((3, 4, 4), np.float64)
    x = rng.random((2, 3, 4, 4))
    np.testing.assert_array_equal(layer.forward(x), x.reshape(2, -1))
    np.testing.assert_array_equal(layer.backward(x.reshape(2, -1)), x)


@pytest.mark.parametrize("F, K", [(12, 7), (13, 9), (33, 17), (70, 11), (1568, 20)])
def test_dense_result_of_a_sample_does_not_depend_on_its_batch(F, K, dtype, rng, simd):
    """Samples share passes over W in blocks: a sample's outputs and input
    gradient are the same bits alone as in any batch (so predictions do not
    depend on batch_size)."""
    from fastcnn import _dense

    f, W = rng.random((7, F)).astype(dtype), rng.random((K, F)).astype(dtype)
    b, g = rng.random(K).astype(dtype), rng.random((7, K)).astype(dtype)
    out = np.empty((7, K), dtype)
    _dense.dense_forward(f, W, b, out, 1, 2)
    df = np.empty_like(f)
    _dense.dense_backward(f, W, out, g, 1, np.empty_like(W), np.empty(K, dtype), df,
                          np.empty((7, K), dtype), 2)
    for i in range(7):
        one, dfi = np.empty((1, K), dtype), np.empty((1, F), dtype)
        _dense.dense_forward(f[i:i + 1], W, b, one, 1, 1)
        _dense.dense_backward(f[i:i + 1], W, one, g[i:i + 1], 1, np.empty_like(W),
                              np.empty(K, dtype), dfi, np.empty((1, K), dtype), 1)
        np.testing.assert_array_equal(one[0], out[i])
        np.testing.assert_array_equal(dfi[0], df[i])
