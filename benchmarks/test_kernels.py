"""Each convolution-layer kernel alone, fastcnn next to PyTorch and NumPy.

Groups are named op-shape-batch-dtype, e.g. conv_fwd-C2_5x5-N50-float32:
  conv_fwd          valid convolution + bias + sigmoid         eq. (4)-(8)
  conv_wgrad        delta, bias and weight gradients           eq. (37)-(45), (58)-(64)
  conv_wgrad_dgrad  the same plus the input gradient           eq. (49)-(51)
  pool, upsample    2x2 mean pooling and its 1/4 upsampling    eq. (6), (9), (32), (52)
Shapes: C1_5x5 (1->6 maps, 28x28), C2_5x5 (6->12, 12x12), C2_3x3 (6->12,
12x12, a kernel size without a specialised path).
"""

import numpy as np
import pytest
from conftest import IMPLS, need_impl, record

from fastcnn import _conv, _pool, bench

SHAPES = {"C1_5x5": (1, 6, 28, 5), "C2_5x5": (6, 12, 12, 5), "C2_3x3": (6, 12, 12, 3)}
BATCHES = [1, 50, 256]
DTYPES = ["float32", "float64"]


class Case:
    """Inputs of one layer, shared by the three implementations."""

    def __init__(self, shape, n, dtype):
        c, m, h, k = SHAPES[shape]
        rng = np.random.default_rng(0)
        self.dtype, self.k = np.dtype(dtype), k
        self.x = rng.random((n, c, h, h)).astype(dtype)
        self.w = rng.uniform(-0.3, 0.3, (m, c, k, k)).astype(dtype)
        self.b = np.zeros(m, dtype)
        oh = h - k + 1
        self.y = rng.random((n, m, oh, oh)).astype(dtype)
        self.g = rng.standard_normal((n, m, oh, oh)).astype(dtype)
        self.macs = m * oh * oh * c * k * k * n


def fastcnn_conv(case, op, threads):
    n, m = case.x.shape[0], case.w.shape[0]
    out = np.empty_like(case.y)
    if op == "conv_fwd":
        return lambda: _conv.conv_forward(case.x, case.w, case.b, out, True, threads)
    c, h, _ = case.x.shape[1:]
    oh = case.y.shape[2]
    per_thread, per_sample = _conv.workspace_sizes(m, c, case.k, case.k, oh, oh, case.dtype.name)
    ws = (np.zeros((threads, per_thread), case.dtype), np.empty((n, per_sample), case.dtype),
          np.empty((n, m), case.dtype), np.empty(per_sample, case.dtype))
    dk, db = np.empty_like(case.w), np.empty_like(case.b)
    dx = np.empty_like(case.x) if op == "conv_wgrad_dgrad" else None
    return lambda: _conv.conv_backward(case.x, case.w, case.y, case.g, True, dk, db, dx, *ws, threads)


def torch_conv(case, op):
    import torch
    import torch.nn.functional as F

    x, y, g = (torch.from_numpy(a) for a in (case.x, case.y, case.g))
    w = torch.from_numpy(case.w[:, :, ::-1, ::-1].copy())  # PyTorch correlates
    b = torch.from_numpy(case.b)
    if op == "conv_fwd":
        return lambda: torch.sigmoid(F.conv2d(x, w, b))

    def backward():
        delta = g * y * (1 - y)
        torch.nn.grad.conv2d_weight(x, w.shape, delta)
        delta.sum((0, 2, 3))
        if op == "conv_wgrad_dgrad":
            torch.nn.grad.conv2d_input(x.shape, w, delta)
    return backward


def numpy_conv(case, op):
    impl = bench.NumpyImpl.__new__(bench.NumpyImpl)
    impl.p, impl.dtype = {"L.weight": case.w, "L.bias": case.b}, case.dtype
    if op == "conv_fwd":
        return lambda: impl._conv(case.x, "L")
    cols, _, _ = impl._cols(case.x, case.k, case.k)

    def backward():
        delta = case.g * case.y * (1 - case.y)
        impl._conv_grads(delta, cols, "L", case.x.shape, op == "conv_wgrad_dgrad")
    return backward


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("op", ["conv_fwd", "conv_wgrad", "conv_wgrad_dgrad"])
def test_conv(benchmark, op, shape, n, dtype, impl, threads):
    need_impl(impl)
    case = Case(shape, n, dtype)
    fn = {"fastcnn": lambda: fastcnn_conv(case, op, threads), "torch": lambda: torch_conv(case, op),
          "numpy": lambda: numpy_conv(case, op)}[impl]()
    benchmark.group = f"{op}-{shape}-N{n}-{dtype}"
    passes = {"conv_fwd": 1, "conv_wgrad": 1, "conv_wgrad_dgrad": 2}[op]
    record(benchmark, impl, threads, dtype, n, passes * case.macs)
    benchmark(fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("op", ["pool", "upsample"])
def test_pool(benchmark, op, n, dtype, impl, threads):
    need_impl(impl)
    rng = np.random.default_rng(0)
    big = rng.random((n, 6, 24, 24)).astype(dtype)
    small = rng.random((n, 6, 12, 12)).astype(dtype)
    if impl == "fastcnn":
        fn = {"pool": lambda: _pool.mean_pool(big, 2, np.empty_like(small), threads),
              "upsample": lambda: _pool.mean_upsample(small, 2, np.empty_like(big), threads)}[op]
    elif impl == "torch":
        import torch
        import torch.nn.functional as F

        tb, ts = torch.from_numpy(big), torch.from_numpy(small)
        fn = {"pool": lambda: F.avg_pool2d(tb, 2),
              "upsample": lambda: torch.ops.aten.avg_pool2d_backward(
                  ts, tb, [2, 2], [2, 2], [0, 0], False, True, None)}[op]
    else:
        fn = {"pool": lambda: bench.NumpyImpl._pool(big),
              "upsample": lambda: bench.NumpyImpl._unpool(small)}[op]
    benchmark.group = f"{op}-S1_2x2-N{n}-{dtype}"
    record(benchmark, impl, threads, dtype, n, 0)
    benchmark(fn)
