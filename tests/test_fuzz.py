"""Fuzzing (Hypothesis): every entry point fed random shapes, dtypes, values,
memory layouts, arguments and damaged files.

The rule under test: bad input gets a clear exception of a documented type
(TypeError for the wrong kind of thing, ValueError for a wrong value --
DatasetError, a ValueError, for data files -- FileNotFoundError for a
missing file, FloatingPointError when training diverges, RuntimeError for a
layer used before it is built or backward before forward); good input gets a
sane answer: the right shape, finite where the input was, the same as for a
clean C-contiguous copy, and the same as a NumPy reference. Anything else
fails: another exception, a wrong answer, a hang, a crash.

The kernels run without bounds checks, so the fuzzing that drives them
through the layers with random shapes runs in child processes
(test_kernels_in_a_child_process): a segfault or an abort there fails that
test, naming the last example tried, instead of killing the test run.
"""

import gzip
import io as stdio
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastcnn
from fastcnn import datasets
from fastcnn.datasets import DatasetError

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

TESTS = os.path.dirname(os.path.abspath(__file__))


def examples(share):
    """A share of the profile's max_examples (100 with "ci", 25 with "dev")."""
    return max(5, round(settings().max_examples * share))


OUTCOMES = Counter()


def outcome(label):
    """Count what an example came to (shown by --hypothesis-show-statistics,
    and checked for the child processes): a fuzzer whose examples are all
    refused would test little."""
    OUTCOMES[label] += 1
    hypothesis.event(label)


def log(*what):
    """In a child process, name the example before running it: if it crashes
    the interpreter, the last line the parent shows is the culprit."""
    if os.environ.get("FASTCNN_FUZZ_LOG"):
        print("example:", *what, file=sys.stderr, flush=True)


# ------------------------------------------------------------ random arrays
DTYPES = ("float64", "float32", "float16", "longdouble", "int8", "uint8", "int64", "bool",
          "complex64", "complex128", "object", "U6", "datetime64[s]")
VALUES = ("unit", "normal", "nan", "inf", "huge", "tiny", "zeros")
LAYOUTS = ("C", "F", "strided", "read-only", "byte-swapped", "list")


@dataclass(frozen=True)
class ArraySpec:
    """How to make a random array: printed compactly in a falsifying example."""

    dtype: str = "float64"
    values: str = "unit"
    layout: str = "C"
    seed: int = 0

    def build(self, shape):
        rng = np.random.default_rng(self.seed)
        a = rng.random(shape)
        if self.values == "normal":
            a = rng.standard_normal(shape) * 3
        elif self.values == "zeros":
            a = np.zeros(shape)
        elif self.values == "tiny":
            a = a * 1e-300
        a = np.array(a)
        if self.values in ("nan", "inf", "huge") and a.size:
            where = rng.integers(0, a.size, max(1, a.size // 7))
            choices = {"nan": [np.nan], "inf": [np.inf, -np.inf], "huge": [1e300, -1e39, 3.5e38]}
            a.flat[where] = rng.choice(choices[self.values], where.size)
        kind = np.dtype(self.dtype).kind
        if kind in "iu":
            a = rng.integers(-3 if kind == "i" else 0, 9, shape).astype(self.dtype)
        elif kind == "b":
            a = rng.random(shape) < 0.5
        elif kind == "c":
            with np.errstate(over="ignore", invalid="ignore"):
                a = (a + 1j * a).astype(self.dtype)
        elif kind in "OU":
            a = a.astype(self.dtype)
        elif kind == "M":
            a = np.zeros(shape, self.dtype)
        else:
            with np.errstate(over="ignore"):
                a = a.astype(self.dtype)
        a = np.array(a, dtype=self.dtype)  # 0-d arrays, not NumPy scalars
        if self.layout == "F":
            a = np.asfortranarray(a)
        elif self.layout == "strided" and a.ndim:
            big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            big[..., ::2] = a
            a = big[..., ::2]
        elif self.layout == "read-only":
            a = a.copy()
            a.flags.writeable = False
        elif self.layout == "byte-swapped" and a.dtype.kind in "iufc" and a.dtype.itemsize > 1:
            a = a.astype(a.dtype.newbyteorder())
        elif self.layout == "list":
            a = a.tolist()
        return a


def array_specs(dtypes=DTYPES, values=VALUES, layouts=LAYOUTS):
    return st.builds(ArraySpec, st.sampled_from(dtypes), st.sampled_from(values),
                     st.sampled_from(layouts), st.integers(0, 2**32 - 1))


def clean_specs():
    """Floating-point arrays of moderate values, in any layout."""
    return array_specs(("float64", "float32"), ("unit", "normal"), LAYOUTS)


def overflows(a, dtype):
    """True if a finite value of a becomes inf in dtype."""
    if a.dtype.kind != "f" or np.dtype(dtype).itemsize >= a.dtype.itemsize:
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.any(np.isfinite(a) & ~np.isfinite(a.astype(dtype))))


def moderate(a, bound=1e4):
    """Finite, and small enough that no sum in a small network overflows."""
    a = np.asarray(a)
    return a.dtype.kind in "biuf" and bool(np.all(np.isfinite(a))) and (
        a.size == 0 or float(np.max(np.abs(a.astype(np.float64)))) <= bound)


def raises(expected, call):
    """Run call(); it must raise an instance of one of `expected` (a tuple;
    empty: it must not raise). Returns the result, or None after the raise."""
    if expected:
        with pytest.raises(tuple(expected)):
            call()
        return None
    return call()


# ------------------------------------------------------- NumPy references
TANH_OPT = 1.7159


def act_ref(z, act):
    with np.errstate(over="ignore"):
        return {None: lambda: z, "sigmoid": lambda: 1 / (1 + np.exp(-z)),
                "relu": lambda: np.maximum(z, 0), "tanh": lambda: np.tanh(z),
                "tanh_opt": lambda: TANH_OPT * np.tanh(2 * z / 3)}[act]()


def act_grad_ref(y, g, act):
    return {None: lambda: g, "sigmoid": lambda: g * y * (1 - y), "relu": lambda: g * (y > 0),
            "tanh": lambda: g * (1 - y * y),
            "tanh_opt": lambda: g * TANH_OPT * 2 / 3 * (1 - (y / TANH_OPT) ** 2)}[act]()


def conv_ref(x, k, b, stride, pads, act, g):
    """Forward and backward of a Conv2D layer in float64, as the paper writes
    them: a true convolution (a correlation with the rotated kernel) of the
    zero-padded input, every stride-th position. Returns (y, dx, dk, db) and
    the same computed from absolute values (the size of the terms, for the
    tolerance)."""
    top, bottom, left, right = pads

    def run(x, k, b, g, act):
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        kh, kw = k.shape[2:]
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        krot = k[:, :, ::-1, ::-1]
        z = np.einsum("ncijuv,mcuv->nmij", win, krot) + b[None, :, None, None]
        y = act_ref(z, act)
        delta = act_grad_ref(y, g, act)
        oh, ow = y.shape[2:]
        dxp = np.zeros_like(xp)
        for u in range(kh):
            for v in range(kw):
                dxp[:, :, u : u + stride * oh : stride, v : v + stride * ow : stride] += np.einsum(
                    "nmij,mc->ncij", delta, krot[:, :, u, v])
        dx = dxp[:, :, top : top + x.shape[2], left : left + x.shape[3]]
        dk = np.einsum("ncijuv,nmij->mcuv", win, delta)[:, :, ::-1, ::-1]
        return y, dx, dk, delta.sum(axis=(0, 2, 3))

    exact = run(x, k, b, g, act)
    # terms' size: the linear parts with |.|, and |delta| bounded by |g| (f' <= 1.15)
    size = run(np.abs(x), np.abs(k), np.abs(b), 1.2 * np.abs(g), None)
    return exact, size


def assert_near(got, want, size, dtype, what, tol=None):
    """|got - want| within tol times the size of the terms (`size`: their
    absolute values, or a bound; one scale for the whole array, since FFT
    errors spread over the whole map)."""
    tol = tol or (3e-4 if np.dtype(dtype) == np.float32 else 1e-10)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all(), f"{what}: not finite"
    size = np.asarray(size)
    scale = float(np.max(np.abs(size))) if size.size else 0.0
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    assert err <= tol * scale + 1e-30, f"{what}: error {err:.3g} > {tol:.0e} * {scale:.3g}"


# ======================================================================
# Kernels through the layers, in child processes
# ======================================================================
ACTIVATIONS = (None, "sigmoid", "relu", "tanh", "tanh_opt")
PADDINGS = st.one_of(st.just("valid"), st.just("same"), st.integers(0, 3),
                     st.tuples(st.integers(0, 3), st.integers(0, 3)))


@dataclass(frozen=True)
class ConvCase:
    dtype: str
    n: int
    c: int
    m: int
    h: int
    w: int
    kernel: tuple
    stride: int
    padding: object
    activation: object
    algorithm: str
    threads: int
    seed: int
    x: ArraySpec


@settings(max_examples=examples(1.5), suppress_health_check=list(HealthCheck))
@given(case=st.builds(
    ConvCase, st.sampled_from(["float32", "float64"]), st.integers(1, 3), st.integers(1, 4),
    st.integers(1, 4), st.integers(1, 12), st.integers(1, 12),
    st.tuples(st.integers(1, 6), st.integers(1, 6)), st.integers(1, 3), PADDINGS,
    st.sampled_from(ACTIVATIONS), st.sampled_from(["auto", "direct", "im2col", "fft"]),
    st.sampled_from([1, 2]), st.integers(0, 2**32 - 1),
    st.one_of(clean_specs(), clean_specs(), array_specs())))
def fuzz_conv2d(case):
    """Conv2D with random shapes, kernel, stride, padding, activation and
    algorithm: forward and backward against the NumPy reference."""
    log(case)
    fastcnn.set_num_threads(case.threads)
    kh, kw = case.kernel
    try:
        conv = fastcnn.Conv2D(case.c, case.m, case.kernel, activation=case.activation,
                              algorithm=case.algorithm, stride=case.stride, padding=case.padding)
    except ValueError as e:
        assert case.padding == "same" and case.stride != 1, e
        return outcome("refused: 'same' padding with a stride")
    pads = conv._pads
    hp, wp = case.h + pads[0] + pads[1], case.w + pads[2] + pads[3]
    if hp < kh or wp < kw:
        with pytest.raises(ValueError, match="smaller than"):
            conv.build((case.c, case.h, case.w), case.dtype)
        assert conv.dtype is None
        return outcome("refused: kernel larger than the input")
    conv.build((case.c, case.h, case.w), case.dtype)
    oh, ow = (hp - kh) // case.stride + 1, (wp - kw) // case.stride + 1
    assert conv.output_shape == (case.m, oh, ow)
    rng = np.random.default_rng(case.seed)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape) * 0.5
    conv.params["bias"][...] = rng.standard_normal(case.m) * 0.5

    x = case.x.build((case.n, case.c, case.h, case.w))
    xa = np.asarray(x)
    if xa.dtype.kind not in "biuf":
        with pytest.raises(TypeError, match="expected real numbers"):
            conv.forward(x)
        return outcome("refused: dtype")
    if overflows(xa, case.dtype):
        with pytest.raises(ValueError, match="too large"):
            conv.forward(x)
        return outcome("refused: values overflow the dtype")
    y = conv.forward(x)
    assert y.shape == (case.n, case.m, oh, ow) and y.dtype == case.dtype
    g = rng.standard_normal(y.shape)
    dx = conv.backward(g)
    assert dx.shape == (case.n, case.c, case.h, case.w) and dx.dtype == case.dtype
    if not moderate(xa):
        return outcome("ran: NaN, inf or huge input")  # no crash is all there is to check
    outcome("checked against the reference")
    xc = xa.astype(case.dtype).astype(np.float64)
    k = conv.params["weight"].astype(np.float64)
    b = conv.params["bias"].astype(np.float64)
    gc = g.astype(case.dtype).astype(np.float64)
    (y_ref, dx_ref, dk_ref, db_ref), sizes = conv_ref(xc, k, b, case.stride, pads,
                                                      case.activation, gc)
    what = f"{conv.algorithm_used} {case}"
    # the FFT's rounding spreads over the whole map: where the exact terms
    # are all zero (padding only), it is of the size of one product
    xm, km, gm = (float(np.abs(a).max()) for a in (xc, k, gc))
    floors = (xm * km, gm * km, gm * xm, 0)
    sizes = [np.append(size.ravel(), floor) for size, floor in zip(sizes, floors)]
    assert_near(y, y_ref, sizes[0], case.dtype, "output " + what)
    # the reference backward starts from the float64 output; the layer's
    # from its own: compare the gradients with a slightly wider tolerance
    tol = 2e-3 if case.dtype == "float32" else 1e-8
    assert_near(dx, dx_ref, sizes[1], case.dtype, "input gradient " + what, tol)
    assert_near(conv.grads["weight"], dk_ref, sizes[2], case.dtype, "weight gradient " + what, tol)
    assert_near(conv.grads["bias"], db_ref, sizes[3], case.dtype, "bias gradient " + what, tol)
    # backward again (the FFT drops its spectra after one), and without dx
    grads = {k: v.copy() for k, v in conv.grads.items()}
    assert conv.backward(g, need_input_grad=False) is None
    for name in grads:
        np.testing.assert_array_equal(conv.grads[name], grads[name])
    # another batch size, then back: buffers kept per size must not mix
    conv.forward(rng.random((case.n + 1, case.c, case.h, case.w)))
    np.testing.assert_array_equal(conv.forward(x), y)


POOL_ACT_KINDS = ("MeanPool2D", "MaxPool2D", "Sigmoid", "ReLU", "Tanh", "TanhOpt", "Softmax",
                  "Flatten", "Dense")
SIZE_ARGS = st.one_of(st.integers(1, 4), st.integers(1, 4), st.integers(-1, 0),
                      st.sampled_from([2.0, True, "2", None, 2**31, 2**40, np.int64(2)]))


@dataclass(frozen=True)
class LayerCase:
    kind: str
    args: tuple
    dtype: str
    n: int
    shape: tuple
    shape_error: int  # 0: the built input shape; else change one entry by this
    threads: int
    x: ArraySpec
    grad: ArraySpec
    seed: int


def make_layer(kind, args):
    a, b, act = args
    if kind == "MeanPool2D":
        return fastcnn.MeanPool2D(a)
    if kind == "MaxPool2D":
        return fastcnn.MaxPool2D(a, stride=b)
    if kind == "Dense":
        return fastcnn.Dense(a, b, activation=act)
    if kind == "TanhOpt":
        return fastcnn.Tanh(scaled=True)
    return getattr(fastcnn, kind)()


def size_error(value, allow_none=False):
    """The exception check_size raises for a layer argument, or None."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return TypeError
    return ValueError if not 1 <= value <= 2**31 - 1 else None


def pool_ref(kind, layer, x, g):
    if kind == "MeanPool2D":
        s = layer.scale
        n, c, h, w = x.shape
        oh, ow = h // s, w // s
        y = x[:, :, : oh * s, : ow * s].reshape(n, c, oh, s, ow, s).mean(axis=(3, 5))
        dx = np.zeros_like(x)
        dx[:, :, : oh * s, : ow * s] = np.repeat(np.repeat(g, s, 2), s, 3) / (s * s)
        return y, dx
    size, step = layer.size, layer.stride
    win = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::step, ::step]
    y = win.max(axis=(4, 5))
    first = win.reshape(win.shape[:4] + (-1,)).argmax(axis=-1)  # first maximum in scan order
    n, c, oh, ow = y.shape
    ni, ci, ii, jj = np.indices((n, c, oh, ow))
    dx = np.zeros_like(x)
    np.add.at(dx, (ni, ci, ii * step + first // size, jj * step + first % size), g)
    return y, dx


def layer_ref(kind, layer, x, g):
    """{what: (value, size of its terms)} in float64 for finite x and g:
    what is "output", "input gradient" and each parameter's gradient."""
    ax, ag = np.abs(x), np.abs(g)
    gmax = float(ag.max()) if ag.size else 0.0
    if kind in ("MeanPool2D", "MaxPool2D"):
        y, dx = pool_ref(kind, layer, x, g)
        overlap = math.ceil(layer.size / layer.stride) ** 2 if kind == "MaxPool2D" else 1
        return {"output": (y, ax), "input gradient": (dx, gmax * overlap)}
    if kind == "Flatten":
        return {"output": (x.reshape(len(x), -1), 0), "input gradient": (g.reshape(x.shape), 0)}
    if kind == "Softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
        return {"output": (y, 1), "input gradient": (y * (g - (g * y).sum(axis=1, keepdims=True)),
                                                     2 * gmax)}
    if kind == "Dense":
        w = layer.params["weight"].astype(np.float64)
        b = layer.params["bias"].astype(np.float64)
        y = act_ref(x @ w.T + b, layer.activation)
        delta = act_grad_ref(y, g, layer.activation)
        return {"output": (y, ax @ np.abs(w).T + np.abs(b)),
                "input gradient": (delta @ w, 1.2 * ag @ np.abs(w)),
                "weight": (delta.T @ x, 1.2 * ag.T @ ax), "bias": (delta.sum(axis=0), 1.2 * ag.sum(axis=0))}
    act = {"Sigmoid": "sigmoid", "ReLU": "relu", "Tanh": "tanh", "TanhOpt": "tanh_opt"}[kind]
    y = act_ref(x, act)
    return {"output": (y, np.abs(y) + 1),
            "input gradient": (act_grad_ref(y, g, act), gmax * (float(np.abs(y).max()) + 1) ** 2)}


@st.composite
def layer_cases(draw):
    kind = draw(st.sampled_from(POOL_ACT_KINDS))
    if kind in ("MeanPool2D", "MaxPool2D"):
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    elif kind in ("Softmax", "Dense"):
        shape = (draw(st.integers(1, 12)),)
    else:
        shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    a, b = draw(SIZE_ARGS), draw(st.one_of(st.none(), SIZE_ARGS))
    if kind == "Dense":
        a = draw(st.one_of(st.just(shape[0]), SIZE_ARGS))
        b = draw(st.one_of(st.integers(1, 5), SIZE_ARGS))
    return LayerCase(kind, (a, b, draw(st.sampled_from(ACTIVATIONS))),
                     draw(st.sampled_from(["float32", "float64"])), draw(st.integers(0, 3)), shape,
                     draw(st.sampled_from([0, 0, 0, -1, 1])), draw(st.sampled_from([1, 2])),
                     draw(st.one_of(clean_specs(), array_specs())),
                     draw(st.one_of(clean_specs(), clean_specs(), array_specs())),
                     draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=examples(1.5), suppress_health_check=list(HealthCheck))
@given(case=layer_cases())
def fuzz_layers(case):
    """Pooling, activations, Softmax, Flatten and Dense used directly, with
    random arguments, shapes, dtypes, values and layouts."""
    log(case)
    fastcnn.set_num_threads(case.threads)
    a, b, act = case.args
    expected = None
    if case.kind in ("MeanPool2D", "MaxPool2D"):
        expected = size_error(a) or (size_error(b, allow_none=True) if case.kind == "MaxPool2D"
                                     else None)
    elif case.kind == "Dense":
        expected = size_error(a) or size_error(b)
    if expected:
        with pytest.raises(expected):
            make_layer(case.kind, case.args)
        return outcome("refused: layer arguments")
    layer = make_layer(case.kind, case.args)
    with pytest.raises(RuntimeError, match="not built"):
        layer.forward(np.zeros((1,) + case.shape))
    too_small = case.kind in ("MeanPool2D", "MaxPool2D") and min(case.shape[1:]) < a
    wrong_features = case.kind == "Dense" and a != case.shape[0]
    if too_small or wrong_features:
        with pytest.raises(ValueError):
            layer.build(case.shape, case.dtype)
        assert layer.dtype is None
        return outcome("refused: input shape at build")
    layer.build(case.shape, case.dtype)
    rng = np.random.default_rng(case.seed)
    for p in layer.params.values():
        p[...] = rng.standard_normal(p.shape)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1,) + layer.output_shape))

    shape = (case.n,) + case.shape
    if case.shape_error:
        i = case.seed % len(shape)
        shape = shape[:i] + (max(0, shape[i] + case.shape_error),) + shape[i + 1 :]
    x = case.x.build(shape)
    xa = np.asarray(x)
    if xa.dtype.kind not in "biuf":
        with pytest.raises(TypeError, match="expected real numbers"):
            layer.forward(x)
        return outcome("refused: input dtype")
    n = shape[0]
    if overflows(xa, case.dtype) or shape[1:] != case.shape or n == 0:
        with pytest.raises(ValueError):
            layer.forward(x)
        return outcome("refused: input shape or overflow")
    y = layer.forward(x)
    assert y.shape == (n,) + layer.output_shape and y.dtype == case.dtype
    assert y.flags.c_contiguous and y.flags.writeable
    g = case.grad.build(y.shape)
    ga = np.asarray(g)
    if ga.dtype.kind not in "biuf":
        with pytest.raises(TypeError, match="expected real numbers"):
            layer.backward(g)
        return outcome("refused: gradient dtype")
    if overflows(ga, case.dtype):
        with pytest.raises(ValueError, match="too large"):
            layer.backward(g)
        return outcome("refused: gradient overflows the dtype")
    dx = layer.backward(g)
    assert dx.shape == shape and dx.dtype == case.dtype
    with pytest.raises(ValueError, match="gradient has shape"):
        layer.backward(np.zeros((n + 1,) + layer.output_shape))
    if not (moderate(xa, 50) and moderate(ga, 1e3)):
        # functions bounded by their input stay finite whatever its size (mean
        # pooling is left out: its C kernel sums before it scales, so values
        # near the dtype's maximum give inf; test_validation has it as xfail)
        if case.kind not in ("MeanPool2D", "Dense") and np.isfinite(xa.astype(case.dtype)).all():
            assert np.isfinite(y).all(), f"{case}: finite input, output not finite"
            if moderate(ga, 1e3):
                assert np.isfinite(dx).all(), f"{case}: finite input and gradient, dx not finite"
        return outcome("ran: NaN, inf or huge input")
    outcome("checked against the reference")
    # the reference from the values the layer saw (ties of max pooling included)
    xc = xa.astype(case.dtype).astype(np.float64)
    gc = ga.astype(case.dtype).astype(np.float64)
    got = dict({"output": y, "input gradient": dx}, **layer.grads)
    tol = 1e-4 if case.dtype == "float32" else 1e-10
    for what, (want, size) in layer_ref(case.kind, layer, xc, gc).items():
        assert_near(got[what], want, size, case.dtype, f"{what} of {case}", tol)


# a vocabulary of layers with small random arguments, for random networks
def random_layer(draw):
    kind = draw(st.sampled_from(["Conv2D", "Conv2D", "MeanPool2D", "MaxPool2D", "Sigmoid",
                                 "ReLU", "Tanh", "Softmax", "Flatten", "Flatten", "Dense", "Dense"]))
    small = st.integers(1, 4)
    if kind == "Conv2D":
        stride = draw(st.integers(1, 2))
        return ("Conv2D", dict(in_maps=draw(small), out_maps=draw(small),
                               kernel_size=draw(st.one_of(small, st.tuples(small, small))),
                               activation=draw(st.sampled_from(ACTIVATIONS)),
                               algorithm=draw(st.sampled_from(["auto", "direct", "im2col", "fft"])),
                               stride=stride, padding=draw(PADDINGS if stride == 1 else
                                                           st.integers(0, 2))))
    if kind == "MeanPool2D":
        return (kind, dict(scale=draw(st.integers(1, 3))))
    if kind == "MaxPool2D":
        return (kind, dict(size=draw(st.integers(1, 3)), stride=draw(st.none() | st.integers(1, 3))))
    if kind == "Dense":
        return (kind, dict(in_features=draw(st.integers(1, 40)), out_features=draw(st.integers(1, 6)),
                           activation=draw(st.sampled_from(ACTIVATIONS))))
    return (kind, {})


@dataclass(frozen=True)
class NetCase:
    layers: tuple
    input_shape: object
    dtype: object
    loss: str
    fit: bool  # make the layers fit together, and end with Dense scores
    n: int
    batch_size: int
    threads: int
    seed: int


@st.composite
def net_cases(draw):
    fit = draw(st.booleans())
    layers = tuple(random_layer(draw) for _ in range(draw(st.integers(1, 6))))
    input_shape = draw(st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    loss = draw(st.sampled_from(["mse", "cross_entropy"]))
    if not fit:  # anything goes
        input_shape = draw(st.one_of(st.just(input_shape), st.sampled_from(
            [(28, 28), (1, 0, 5), (1, -2, 5), (1, 2.0, 3), None, 7, "abc", (1, 2**31, 1)])))
        dtype = draw(st.sampled_from([dtype, "float16", ">f8", 3]))
        loss = draw(st.sampled_from([loss, "hinge"]))
    return NetCase(layers, input_shape, dtype, loss, fit, draw(st.integers(1, 4)),
                   draw(st.integers(1, 5)), draw(st.sampled_from([1, 2])),
                   draw(st.integers(0, 2**32 - 1)))


def build_net(case):
    """The case's layers; with case.fit, made to fit together where they can
    (each Conv2D and Dense takes what the layers before it give, a Flatten
    comes before a Dense or Softmax on maps, maps layers after a Flatten
    go) and ended by Flatten and Dense scores."""
    if not case.fit:
        return [getattr(fastcnn, kind)(**args) for kind, args in case.layers]
    head = ("Dense", dict(in_features=1, out_features=1 + case.seed % 5,
                          activation=None if case.loss == "cross_entropy" else "sigmoid"))
    layers, shape = [], case.input_shape
    for kind, args in case.layers + (head,):
        if kind in ("Dense", "Softmax") and len(shape) != 1:
            layers.append(fastcnn.Flatten())
            shape = (math.prod(shape),)
        if kind in ("Conv2D", "MeanPool2D", "MaxPool2D") and len(shape) != 3:
            continue
        if kind == "Conv2D":
            args = dict(args, in_maps=shape[0])
        elif kind == "Dense":
            args = dict(args, in_features=shape[0])
        layers.append(getattr(fastcnn, kind)(**args))
        try:
            shape = layers[-1].compute_output_shape(shape)
        except (ValueError, TypeError):
            break  # too small for the next layer: let Sequential say so
    return layers


@settings(max_examples=examples(1.0), suppress_health_check=list(HealthCheck))
@given(case=net_cases())
def fuzz_sequential(case):
    """Sequential models of random layers for random input shapes: built or
    refused with ValueError/TypeError; when built, forward, backprop,
    predict, evaluate, fit and a save/load round trip work and are finite."""
    log(case)
    fastcnn.set_num_threads(case.threads)
    layers = build_net(case)
    try:
        model = fastcnn.Sequential(layers, case.input_shape, dtype=case.dtype, loss=case.loss,
                                   seed=case.seed)
    except (ValueError, TypeError):
        # the layers are left as given, to be used again
        assert all(layer.dtype is None and not layer.params for layer in layers)
        return outcome("refused: construction")
    assert case.dtype in ("float32", "float64", ">f8") and case.loss in ("mse", "cross_entropy")
    assert model.dtype.isnative
    assert isinstance(model.summary(), str) and isinstance(repr(model), str)
    rng = np.random.default_rng(case.seed)
    x = rng.random((case.n,) + model.input_shape)
    y = model.forward(x)
    assert y.shape == (case.n,) + model.output_shape and np.isfinite(y).all()
    acts = model.activations(x)
    np.testing.assert_array_equal(acts[model.layers[-1].name], y)
    if len(model.output_shape) != 1:
        for call in (lambda: model.predict(x), lambda: model.backprop(x, np.zeros(case.n, int)),
                     lambda: model.fit(x, np.zeros(case.n, int), progress=False)):
            with pytest.raises(ValueError, match="one score per class"):
                call()
        return outcome("built: output not one score per class")
    k = model.output_shape[0]
    labels = rng.integers(0, k, case.n)
    loss = model.backprop(x, labels)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in model.grads.values())
    predicted = model.predict(x)
    assert predicted.shape == (case.n,) and ((predicted >= 0) & (predicted < k)).all()
    assert 0 <= model.evaluate(x, labels) <= 1
    history = model.fit(x, labels, batch_size=case.batch_size, lr=0.1, progress=False)
    assert len(history.loss) == math.ceil(case.n / min(case.batch_size, case.n))
    assert np.isfinite(history.loss).all()
    with tempfile.TemporaryDirectory() as d:
        model.save(os.path.join(d, "m.npz"))
        again = fastcnn.load(os.path.join(d, "m.npz"))
    outcome("built, trained, saved and loaded")
    assert again.get_config() == model.get_config()
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


CHILD_FUZZERS = ("fuzz_conv2d", "fuzz_layers", "fuzz_sequential")


@pytest.mark.parametrize("fuzzer", CHILD_FUZZERS)
def test_kernels_in_a_child_process(fuzzer):
    """Run a fuzzer that reaches the kernels in a child Python: a crash (signal)
    or a hang is a failure that names the last example, not a dead pytest."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    env = dict(os.environ, FASTCNN_FUZZ_LOG="1", PYTHONPATH=os.pathsep.join(
        [root, TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    code = (f"import json, conftest, test_fuzz; test_fuzz.{fuzzer}(); "
            f"print('outcomes:', json.dumps(test_fuzz.OUTCOMES))")
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], env=env,
                              cwd=root, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-3000:]
        pytest.fail(f"{fuzzer} hung (300 s) in a child process; its last lines:\n"
                    f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}")
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"failed (exit status {proc.returncode})")
        lines = (proc.stdout + proc.stderr).splitlines()
        pytest.fail(f"{fuzzer} {how} in a child process; its last lines:\n" + "\n".join(lines[-80:]))
    outcomes = json.loads(proc.stdout.rsplit("outcomes:", 1)[1])
    ran = sum(v for k, v in outcomes.items() if not k.startswith("refused"))
    assert ran >= sum(outcomes.values()) // 5, f"most examples were refused: {outcomes}"
    print(fuzzer, outcomes)


# ======================================================================
# Model entry points, in this process (inputs are checked before any kernel)
# ======================================================================
_MODELS = {}


def small_model(key):
    """Two small networks, built once: the paper's kind (MSE, sigmoid) and a
    cross-entropy one with a strided, padded convolution."""
    if key not in _MODELS:
        loss, dtype = key
        if loss == "mse":
            layers = [fastcnn.Conv2D(2, 3, 3, activation="sigmoid"), fastcnn.MaxPool2D(2),
                      fastcnn.Flatten(), fastcnn.Dense(27, 4, activation="sigmoid")]
            shape = (2, 8, 8)
        else:
            layers = [fastcnn.Conv2D(1, 3, (2, 3), activation="relu", stride=2, padding=1),
                      fastcnn.MeanPool2D(2), fastcnn.Flatten(), fastcnn.Dense(12, 5)]
            shape = (1, 9, 7)
        _MODELS[key] = fastcnn.Sequential(layers, shape, dtype=dtype, loss=loss, seed=3)
    return _MODELS[key]


MODEL_KEYS = [(loss, dtype) for loss in ("mse", "cross_entropy") for dtype in ("float32", "float64")]


def image_error(a, model):
    """The exception model.forward must raise for images a, or None."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return TypeError
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[1:] != model.input_shape:
        return ValueError
    if not np.isfinite(a).all() or overflows(a, model.dtype):
        return ValueError
    return None


@st.composite
def image_shapes(draw, input_shape):
    c, h, w = input_shape
    kind = draw(st.sampled_from(["good", "good", "good", "good", "empty", "near", "other"]))
    if kind in ("good", "empty"):
        return (draw(st.integers(1, 4)) if kind == "good" else 0, c, h, w)
    if kind == "near":
        return (draw(st.integers(1, 3)), draw(st.integers(c - 1, c + 1)),
                draw(st.integers(h - 1, h + 1)), draw(st.integers(w - 1, w + 1)))
    return tuple(draw(st.lists(st.integers(0, 5), max_size=5)))


@settings(max_examples=examples(1.0), suppress_health_check=list(HealthCheck))
@given(data=st.data(), key=st.sampled_from(MODEL_KEYS), spec=st.one_of(clean_specs(), array_specs()))
def test_model_entry_points_with_random_arrays(data, key, spec):
    """forward, predict, predict_proba, activations, evaluate and backprop on
    random arrays: refused with the right exception, or a sane answer."""
    model = small_model(key)
    shape = data.draw(image_shapes(model.input_shape), label="shape")
    check_entry_points(model, spec.build(shape), shape[0] if shape else 1)


@settings(max_examples=examples(0.5), suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(MODEL_KEYS), n=st.integers(1, 3), spec=array_specs(
    ("float64", "longdouble", "float32", "float16"), ("huge", "nan", "inf", "tiny", "normal")))
def test_model_entry_points_with_awkward_values(key, n, spec):
    """The same with images of the right shape holding NaN, inf, values too
    large for the model's dtype, or tiny ones."""
    model = small_model(key)
    check_entry_points(model, spec.build((n,) + model.input_shape), n)


def check_entry_points(model, x, n):
    expected = image_error(x, model)
    k = model.output_shape[0]
    labels = np.arange(n) % k
    before = model._flat_params.copy()
    calls = {"forward": model.forward, "predict": model.predict,
             "predict_proba": model.predict_proba, "activations": model.activations,
             "evaluate": lambda a: model.evaluate(a, labels, batch_size=3),
             "backprop": lambda a: model.backprop(a, labels)}
    results = {name: raises((expected,) if expected else (), lambda c=call: c(x))
               for name, call in calls.items()}
    np.testing.assert_array_equal(model._flat_params, before)  # nothing trains the model
    outcome(f"refused: {expected.__name__}" if expected else "ran")
    if expected:
        return
    clean = np.ascontiguousarray(np.asarray(x), dtype=model.dtype)
    out = results["forward"]
    assert out.shape == (n, k) and out.dtype == model.dtype
    np.testing.assert_array_equal(out, model.forward(clean))  # layout and dtype change nothing
    assert results["predict"].shape == (n,) and results["predict"].dtype == np.int64
    assert ((results["predict"] >= 0) & (results["predict"] < k)).all()
    assert 0 <= results["evaluate"] <= 1
    assert list(results["activations"]) == [layer.name for layer in model.layers]
    if moderate(x):
        assert np.isfinite(out).all() and np.isfinite(results["backprop"])
        np.testing.assert_array_equal(results["predict"], np.argmax(out, axis=1))
        if model.loss == "cross_entropy":
            np.testing.assert_allclose(results["predict_proba"].sum(axis=1), 1, rtol=1e-5)


LABEL_KINDS = ("ints", "list", "uint8", "out_of_range", "negative", "too_many", "too_few", "float",
               "bool", "strings", "onehot", "onehot_nan", "onehot_huge", "onehot_wrong_k",
               "onehot_complex", "scalar", "3d", "empty")


def make_labels(kind, n, k, rng, dtype):
    """Labels of a kind and the exceptions fit must raise for them (one of),
    and those it may raise: (array, errors, may)."""
    ints = rng.integers(0, k, n)
    onehot = np.eye(k)[ints]
    table = {
        "ints": (ints, ()), "list": (ints.tolist(), ()), "uint8": (ints.astype(np.uint8), ()),
        "out_of_range": (np.append(ints[:-1], k), (ValueError,)),
        "negative": (np.append(ints[:-1], -1), (ValueError,)),
        "too_many": (np.append(ints, 0), (ValueError,)), "too_few": (ints[:-1], (ValueError,)),
        "float": (ints.astype(float), (TypeError,)), "bool": (ints > 0, (TypeError,)),
        "strings": (ints.astype(str), (TypeError,)), "onehot": (onehot, ()),
        "onehot_nan": (np.where(onehot > 0, np.nan, 0), (ValueError,)),
        "onehot_wrong_k": (np.eye(k + 1)[ints], (ValueError,)),
        "onehot_complex": (onehot + 0j, (TypeError,)), "scalar": (np.int64(1), (ValueError,)),
        "3d": (onehot[:, :, None], (ValueError,)), "empty": (np.zeros(0, int), (ValueError,)),
        # 1e300 does not fit float32: refused; in float64, training may diverge
        "onehot_huge": (onehot * 1e300, (ValueError,) if dtype == "float32" else ()),
    }
    labels, errors = table[kind]
    may = (FloatingPointError,) if kind == "onehot_huge" else ()
    return labels, errors, may


GOOD_LABELS = ("ints", "list", "uint8", "onehot")
BATCH_SIZES = st.one_of(st.integers(-2, 8), st.sampled_from(
    [10**12, 2.0, 2.5, "2", None, True, np.int64(3), np.uint8(2), float("nan")]))


@settings(max_examples=examples(1.0), suppress_health_check=list(HealthCheck))
@given(data=st.data(), key=st.sampled_from(MODEL_KEYS), x_spec=clean_specs(),
       valid=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_fit_with_random_arguments(data, key, x_spec, valid, seed):
    """fit with random batch sizes (0, negative, larger than the data, not
    ints), labels (out of range, wrong length, floats...), epochs, learning
    rates and validation data: refused before training with the right
    exception, or trained with the right number of finite losses. Half the
    examples draw only valid arguments."""

    def pick(good, bad):
        return data.draw(st.sampled_from(good if valid else good + bad))

    n = data.draw(st.integers(1, 6) if valid else st.integers(0, 6), label="n")
    labels = pick(GOOD_LABELS, tuple(k for k in LABEL_KINDS if k not in GOOD_LABELS))
    batch_size = data.draw(st.integers(1, 8) | st.just(10**12) | st.just(np.int64(3))
                           if valid else BATCH_SIZES, label="batch_size")
    epochs = pick([1, 2, np.int32(1)], [0, -1, 1.0])
    lr = pick([None, 0.5, 0.05], [0, -1.0, float("nan"), float("inf"), "1", 1e300])
    validation = pick(["none", "good"], ["not a pair", "triple", "bad images", "bad labels"])
    loss, dtype = key
    template = small_model(key)
    model = fastcnn.Sequential.from_config(template.get_config())
    rng = np.random.default_rng(seed)
    k = model.output_shape[0]
    x = x_spec.build((n,) + model.input_shape)
    errors = set()
    if n == 0:
        errors.add(ValueError)
        y, label_errors, may = np.zeros(0, int), (), ()
    else:
        y, label_errors, may = make_labels(labels, n, k, rng, dtype)
    errors.update(label_errors)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        errors.add(TypeError)
    elif epochs < 1:
        errors.add(ValueError)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        errors.add(TypeError)
    elif batch_size < 1:
        errors.add(ValueError)
    if isinstance(lr, str):
        errors.add(TypeError)
    elif lr is not None and not (math.isfinite(lr) and lr > 0):
        errors.add(ValueError)
    xv = rng.random((3,) + model.input_shape)
    validation_data = {"none": None, "good": (xv, [0, 1, 0]), "not a pair": 5,
                       "triple": (xv, [0, 1, 0], 1), "bad images": (xv[:, :, :-1], [0, 1, 0]),
                       "bad labels": (xv, [0, 1, k])}[validation]
    errors.update({"not a pair": (TypeError,), "triple": (TypeError,),
                   "bad images": (ValueError,), "bad labels": (ValueError,)}.get(validation, ()))
    if lr == 1e300:
        may += (FloatingPointError,)  # a huge step may diverge
    before = model._flat_params.copy()
    try:
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            progress=False, validation_data=validation_data)
    except tuple(errors) + may as e:
        if not isinstance(e, FloatingPointError):
            # refused before training: the model is untouched
            np.testing.assert_array_equal(model._flat_params, before)
        assert str(e)
        return outcome(f"refused: {type(e).__name__}")
    outcome("trained")
    assert not errors, f"fit accepted what it should refuse ({sorted(e.__name__ for e in errors)})"
    batches = math.ceil(n / min(int(batch_size), n))
    assert len(history.loss) == int(epochs) * batches
    assert np.isfinite(history.loss).all() and np.isfinite(model._flat_params).all()
    if validation == "good":
        assert len(history.val_error) == int(epochs)
        assert all(0 <= e <= 1 for e in history.val_error)


# ======================================================================
# Damaged model files
# ======================================================================
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A model file and a checkpoint (with Adam's state), and where their zip
    headers are (the bytes whose damage is most interesting)."""
    d = tmp_path_factory.mktemp("model_files")
    model = small_model(("cross_entropy", "float32"))
    model = fastcnn.Sequential.from_config(model.get_config())
    x = np.random.default_rng(0).random((6,) + model.input_shape)
    model.fit(x, [0, 1, 2, 3, 4, 0], batch_size=4, progress=False, checkpoint_dir=d / "ck",
              optimizer=fastcnn.Adam(model, lr=0.01))
    model.save(d / "model.npz")
    files = {}
    for name, path in (("model", d / "model.npz"), ("checkpoint", d / "ck" / "last.npz")):
        data = path.read_bytes()
        meta = []
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                start = info.header_offset
                meta += range(start, start + 30 + len(info.filename) + 128)
            meta += range(z.start_dir, len(data))
        original = fastcnn.load(path, with_training_state=True)
        files[name] = (data, sorted(set(p for p in meta if p < len(data))), original)
    return d, model, files


EDITS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 16)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("zero"), st.integers(0, 2**20), st.integers(1, 64)),
)


def damage(data, meta, edits, in_meta):
    b = bytearray(data)
    for edit, use_meta in zip(edits, in_meta):
        op, pos = edit[0], edit[1]
        if not b:
            break
        pos = meta[pos % len(meta)] if use_meta and meta else pos
        pos %= len(b)
        if op == "flip":
            b[pos] ^= 1 << edit[2]
        elif op == "set":
            b[pos] = edit[2]
        elif op == "truncate":
            del b[pos:]
        elif op == "delete":
            del b[pos : pos + edit[2]]
        elif op == "insert":
            b[pos:pos] = edit[2]
        else:
            b[pos : pos + edit[2]] = bytes(len(b[pos : pos + edit[2]]))
    return bytes(b)


@settings(max_examples=examples(1.5), suppress_health_check=list(HealthCheck))
@given(which=st.sampled_from(["model", "checkpoint"]), edits=st.lists(EDITS, min_size=1, max_size=4),
       in_meta=st.lists(st.booleans(), min_size=4, max_size=4))
def test_load_damaged_files(model_files, which, edits, in_meta):
    d, _, files = model_files
    data, meta, original = files[which]
    path = d / f"damaged-{which}.npz"
    path.write_bytes(damage(data, meta, edits, in_meta))
    try:
        loaded = fastcnn.load(path, with_training_state=True)
    except ValueError as e:
        assert str(e).startswith(str(path)) and "not a usable fastcnn model file" in str(e), e
        return outcome("refused")
    outcome("loaded")
    # what loads despite the damage (times, unused fields) is the model saved
    model, state, arrays = loaded
    assert model.get_config() == original[0].get_config()
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], original[0].params[name])
    assert state == original[1] and sorted(arrays) == sorted(original[2])
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], original[2][name])


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40),
    st.sampled_from([0, -1, 2**31, 2**40, 10**20, 28, 192, 12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["fft", "im2col", "same", "valid", "relu", "Dense", "Conv2D", "Flatten",
                     "float16", "float64", ">f4", "cross_entropy", "", "a.b", "__config__"]),
    st.text(max_size=6))
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "config", "name", "in_features", "layers", "x"]) | st.text(max_size=4),
        children, max_size=3), max_leaves=6)


def json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from json_paths(value, prefix + (i,))


def json_edit(obj, path, value, delete):
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


@settings(max_examples=examples(1.0), suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), JSON_VALUES, st.booleans()), min_size=1,
                      max_size=3),
       param_edit=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), array_specs(),
                                                  st.lists(st.integers(0, 6), max_size=3))))
def test_load_tampered_architecture_and_arrays(model_files, edits, param_edit):
    """Valid zip archives (no CRC to fail) whose JSON architecture and
    arrays are tampered with: each loads as a working model or is refused
    with ValueError."""
    d, model, _ = model_files
    config = {"format": "fastcnn-model", "format_version": 1, "fastcnn_version": fastcnn.__version__,
              "model": model.get_config()}
    for index, value, delete in edits:
        paths = list(json_paths(config))
        path = paths[index % len(paths)]
        config = json_edit(config, path, value, delete and path != ())
    arrays = {name: p.copy() for name, p in model.params.items()}
    if param_edit is not None:
        index, spec, shape = param_edit
        name = sorted(arrays)[index % len(arrays)]
        arrays[name] = np.asarray(spec.build(tuple(shape)))
    try:
        arrays["__config__"] = np.array(json.dumps(config))
    except (TypeError, ValueError):
        return  # not JSON
    path = d / "tampered.npz"
    buf = stdio.BytesIO()
    np.savez(buf, **arrays)  # object arrays get pickled: load must refuse, not unpickle
    path.write_bytes(buf.getvalue())
    try:
        loaded = fastcnn.load(path)
    except ValueError as e:
        assert str(e).startswith(str(path)) and "not a usable fastcnn model file" in str(e), e
        return outcome("refused")
    outcome("loaded")
    assert all(np.isfinite(p).all() for p in loaded.params.values())
    for name, p in loaded.params.items():
        np.testing.assert_array_equal(p, arrays[name])
    if math.prod(loaded.input_shape) <= 10**5:
        out = loaded.forward(np.zeros((2,) + loaded.input_shape))
        assert out.shape == (2,) + loaded.output_shape


def npy_header(raw):
    """(shape, fortran_order, dtype, header length) of a .npy entry's bytes."""
    f = stdio.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(f)
    return shape, fortran, dtype, f.tell()


def deflated(entries, claims=None):
    """A zip of `entries` {name: bytes}, deflated; claims {name: size} makes
    the zip directory (local header and central directory alike) announce
    that many bytes once decompressed."""
    out = stdio.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n, content in entries.items():
            z.writestr(n, content)
    b = bytearray(out.getvalue())
    with zipfile.ZipFile(stdio.BytesIO(bytes(b))) as z:
        offsets, pos = {i.filename: i.header_offset for i in z.infolist()}, z.start_dir
    for name, size in (claims or {}).items():
        b[offsets[name] + 22 : offsets[name] + 26] = size.to_bytes(4, "little")
    while b[pos : pos + 4] == b"PK\x01\x02":
        n_len, x_len, c_len = (int.from_bytes(b[pos + k : pos + k + 2], "little")
                               for k in (28, 30, 32))
        name = b[pos + 46 : pos + 46 + n_len].decode()
        if name in (claims or {}):
            b[pos + 24 : pos + 28] = claims[name].to_bytes(4, "little")
        pos += 46 + n_len + x_len + c_len
    return bytes(b)


@settings(max_examples=examples(1.0), suppress_health_check=list(HealthCheck))
@given(which=st.sampled_from(["model", "checkpoint"]), entry=st.integers(0, 100),
       factor=st.one_of(st.none(), st.integers(2, 2**26)),
       claim=st.one_of(st.none(), st.just("agree"), st.integers(0, 2**32 - 1)))
def test_load_compressed_entries_that_claim_too_much(model_files, which, entry, factor, claim):
    """Deflated model files whose entries announce more than they hold (a
    larger shape in the .npy header, a larger size in the zip directory, or
    both made to agree): each loads as saved or is refused with ValueError,
    and loading never allocates more than a few MB (tracemalloc counts
    NumPy's arrays)."""
    import tracemalloc

    d, _, files = model_files
    data, _, original = files[which]
    with zipfile.ZipFile(stdio.BytesIO(data)) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    name = sorted(entries)[entry % len(entries)]
    shape, fortran, dtype, start = npy_header(entries[name])
    if factor is not None:  # the header announces factor times more
        if dtype.kind == "U":
            chars = min(max(1, dtype.itemsize // 4) * factor, 2**28)  # NumPy caps a string
            dtype, shape = np.dtype(f"<U{chars}"), ()
        else:
            shape = (max(1, math.prod(shape)) * factor,)
        header = stdio.BytesIO()
        np.lib.format.write_array_header_1_0(header, {
            "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
            "shape": shape})
        entries[name] = header.getvalue() + entries[name][start:]
        start = len(header.getvalue())
    if claim == "agree":  # the zip directory agrees with the header
        claim = start + math.prod(shape) * dtype.itemsize
    claims = {name: claim} if claim is not None and claim < 2**32 else {}
    path = d / f"claims-{which}.npz"
    path.write_bytes(deflated(entries, claims))
    tracemalloc.start()
    try:
        loaded = fastcnn.load(path, with_training_state=True)
    except ValueError as e:
        assert str(e).startswith(str(path)) and "not a usable fastcnn model file" in str(e), e
        outcome("refused")
        loaded = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 24 << 20, f"loading took {peak:,} bytes"
    if loaded is None:
        return
    outcome("loaded")
    model, state, arrays = loaded
    for n in model.params:
        np.testing.assert_array_equal(model.params[n], original[0].params[n])
    assert state == original[1]


# ======================================================================
# IDX files
# ======================================================================
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
DIMS = st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**32 - 1, 65536, 1]),
                 st.integers(0, 2**32 - 1))


@st.composite
def idx_bytes(draw):
    kind = draw(st.sampled_from(["random", "valid", "valid", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=80))
    type_byte = draw(st.sampled_from(sorted(IDX_TYPES)))
    if kind == "valid":
        shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
        size = math.prod(shape) * np.dtype(IDX_TYPES[type_byte]).itemsize
        body = draw(st.binary(min_size=size, max_size=size))
        data = bytes([0, 0, type_byte, len(shape)]) + b"".join(
            s.to_bytes(4, "big") for s in shape) + body
        cut = draw(st.sampled_from(["none", "none", "truncate", "extend"]))
        if cut == "truncate" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif cut == "extend":
            data += draw(st.binary(min_size=1, max_size=8))
        return data
    ndim = draw(st.sampled_from([0, 1, 2, 3, 4, 64, 65, 70, 255]))
    dims = draw(st.lists(DIMS, min_size=min(ndim, 6), max_size=min(ndim, 6)))
    dims = (dims * (ndim // max(1, len(dims)) + 1))[:ndim]
    return (bytes([0, 0, type_byte, ndim]) + b"".join(s.to_bytes(4, "big") for s in dims)
            + draw(st.binary(max_size=40)))


def decode_idx(data):
    """An independent IDX decoder: the array, or None if data is not IDX."""
    if len(data) < 4 or data[0] or data[1] or data[2] not in IDX_TYPES or not data[3]:
        return None
    ndim, dtype = data[3], np.dtype(IDX_TYPES[data[2]])
    if len(data) < 4 + 4 * ndim:
        return None
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != 4 + 4 * ndim + math.prod(shape) * dtype.itemsize:
        return None
    try:
        return np.frombuffer(data[4 + 4 * ndim :], dtype).reshape(shape)
    except ValueError:  # more dimensions than NumPy has
        return None


@settings(max_examples=examples(1.5), suppress_health_check=list(HealthCheck))
@given(data=idx_bytes(), compress=st.booleans(),
       gzip_damage=st.one_of(st.none(), st.tuples(st.sampled_from(["truncate", "flip"]),
                                                  st.integers(0, 10**6), st.integers(0, 7))))
def test_read_idx_random_files(tmp_path_factory, data, compress, gzip_damage):
    path = tmp_path_factory.getbasetemp() / "fuzz.idx"
    raw = gzip.compress(data) if compress else data
    if compress and gzip_damage:
        op, pos, bit = gzip_damage
        raw = bytearray(raw)
        if op == "truncate":
            del raw[pos % len(raw):]
        else:
            raw[pos % len(raw)] ^= 1 << bit
        raw = bytes(raw)
    path.write_bytes(raw)
    want = decode_idx(data)
    try:
        got = datasets.read_idx(path)
    except DatasetError as e:
        assert str(e).startswith(str(path)), e
        # refused: data that is not IDX, or a damaged gzip stream
        assert want is None or (compress and gzip_damage), f"refused a good file: {e}"
        return outcome("refused")
    outcome("read")
    assert want is not None, f"accepted a bad file as {got.dtype} {got.shape}"
    assert got.shape == want.shape and got.dtype == want.dtype.newbyteorder("=")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, want)
