"""The convolution kernels with maps in the vector lanes (src_c/conv_maps_impl.h):
forward with a stride, eq. (4)-(5), and its gradients, eq. (37)-(51), against
the oracle written from the equations, on every kernel version this CPU runs;
deterministic whatever the thread count or a sample's place in its batch;
the rule that picks them (fastcnn.conv_algorithms.uses_maps_kernel)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcnn
import oracle
from fastcnn import _conv, _kernels, conv_algorithms
from helpers import assert_close, restore_simd_path

PATHS = [p.split(" ")[0] for p in fastcnn.available_simd_paths()]
ACT = _kernels.ACTIVATION_CODES


def run_maps(x, k, b, stride, activation, threads=2, want_dx=True):
    """(y, grad, dk, db, dx) from the maps kernels, with grad a fixed function of y."""
    dt = x.dtype
    n, c, h, w = x.shape
    m, _, kh, kw = k.shape
    wt, wtdx, per_thread, per_sample = _conv.maps_sizes(m, c, kh, kw, h, w, stride, dt.name)
    y = np.empty((n, m, (h - kh) // stride + 1, (w - kw) // stride + 1), dt)
    _conv.conv_maps_forward(x, k, b, np.empty(wt, dt), y, stride, ACT[activation], threads)
    grad = np.cos(7 * y + 1).astype(dt)  # a function of each output alone
    dk, db = np.empty_like(k), np.empty_like(b)
    dx = np.empty_like(x) if want_dx else None
    _conv.conv_maps_backward(x, k, y, grad, stride, ACT[activation], dk, db, dx,
                             np.empty(wtdx, dt), np.zeros((threads, per_thread), dt),
                             np.empty((n, per_sample), dt), np.empty((n, m), dt),
                             np.empty(per_sample, dt), threads)
    return y, grad, dk, db, dx


@st.composite
def shapes(draw):
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    stride = draw(st.integers(1, 3))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 40)),
            kh + draw(st.integers(0, 12)), kw + draw(st.integers(0, 30)), kh, kw, stride)


@given(shape=shapes(), dtype=st.sampled_from(["float32", "float64"]),
       activation=st.sampled_from(["sigmoid", "relu", None]), seed=st.integers(0, 2**32 - 1),
       path=st.sampled_from(PATHS))
def test_maps_kernels_match_the_oracle(shape, dtype, activation, seed, path):
    n, c, m, h, w, kh, kw, stride = shape
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    x = rng.random((n, c, h, w)).astype(dtype)
    k = rng.uniform(-0.5, 0.5, (m, c, kh, kw)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, m).astype(dtype)
    before = fastcnn.simd_path()
    fastcnn.set_simd_path(path)
    try:
        y, grad, dk, db, dx = run_maps(x, k, b, stride, activation)
    finally:
        restore_simd_path(before)
    assert_close(y, oracle.conv_general(x, k, b, stride, activation=activation), dtype)
    rdk, rdb, rdx = oracle.conv_general_grads(x, k, y, grad, stride, activation=activation)
    # sums that may cancel: float32 rounding follows the sums of |terms|
    sdk, sdb, sdx = oracle.conv_general_grads(np.abs(x), np.abs(k), y, np.abs(grad), stride,
                                              activation=activation)
    assert_close(dk, rdk, dtype, scale=np.abs(sdk).max())
    assert_close(db, rdb, dtype, scale=np.abs(sdb).max())
    assert_close(dx, rdx, dtype, scale=np.abs(sdx).max())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_do_not_depend_on_threads_or_batch(path, dtype, restore):
    fastcnn.set_simd_path(path)
    rng = np.random.default_rng(1)
    x = rng.random((5, 16, 16, 16)).astype(dtype)
    k = rng.uniform(-0.5, 0.5, (32, 16, 3, 3)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, 32).astype(dtype)
    for stride in (1, 2):
        one = run_maps(x, k, b, stride, "relu", threads=1)
        two = run_maps(x, k, b, stride, "relu", threads=2)
        for a, c in zip(one, two):
            np.testing.assert_array_equal(a, c)
        alone = run_maps(x[3:4], k, b, stride, "relu")
        np.testing.assert_array_equal(alone[0][0], one[0][3])  # forward, sample 3
        np.testing.assert_array_equal(alone[4][0], one[4][3])  # its input gradient


@pytest.fixture
def restore():
    before = fastcnn.simd_path()
    yield
    restore_simd_path(before)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(16, 32, 16, 16, 3), (6, 12, 12, 12, 5), (3, 5, 10, 30, 3)])
def test_maps_forward_is_the_pixel_kernels_sum(path, shape, restore):
    """Where the pixel kernels vectorise, both compute each output as the same
    sum in the same order: switching kernels moves no bit."""
    fastcnn.set_simd_path(path)
    c, m, h, w, kk = shape
    rng = np.random.default_rng(2)
    x = rng.random((2, c, h, w)).astype(np.float32)
    k = rng.uniform(-0.5, 0.5, (m, c, kk, kk)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, m).astype(np.float32)
    pixels = np.empty((2, m, h - kk + 1, w - kk + 1), np.float32)
    _conv.conv_forward(x, k, b, pixels, ACT["sigmoid"], 2)
    np.testing.assert_array_equal(run_maps(x, k, b, 1, "sigmoid")[0], pixels)


def test_the_rule_that_picks_the_maps_kernels():
    def shape(c, m, size, k, stride=1):
        return conv_algorithms.ConvShape(c, m, k, k, stride, size, size, np.dtype("float32"))
    uses = conv_algorithms.uses_maps_kernel
    assert not uses(shape(1, 6, 28, 5)) and not uses(shape(1, 6, 28, 5), backward=True)
    assert uses(shape(16, 32, 16, 3)) and uses(shape(16, 32, 16, 3), backward=True)
    assert uses(shape(1, 4, 9, 3))  # 7 pixels wide: narrower than the pixel kernels' tiles
    assert uses(shape(1, 4, 28, 3, stride=2)) and uses(shape(1, 4, 28, 3, 2), backward=True)


def test_arguments_are_checked():
    x = np.zeros((1, 2, 8, 8), np.float32)
    k = np.zeros((3, 2, 3, 3), np.float32)
    b = np.zeros(3, np.float32)
    out = np.empty((1, 3, 6, 6), np.float32)
    with pytest.raises(ValueError, match="wT has the wrong size"):
        _conv.conv_maps_forward(x, k, b, np.empty(5, np.float32), out, 1, 0, 1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _conv.conv_maps_forward(x, k, b, np.empty(5, np.float32), out, 0, 0, 1)
    with pytest.raises(ValueError, match="output array has the wrong shape"):
        wt = _conv.maps_sizes(3, 2, 3, 3, 8, 8, 2, "float32")[0]
        _conv.conv_maps_forward(x, k, b, np.empty(wt, np.float32), out, 2, 0, 1)
