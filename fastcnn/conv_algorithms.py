"""Three ways to compute a convolution layer, with the same results.

    direct   the sums of eq. (5), (39), (49) of Zhang's "Derivation of
             Backpropagation in Convolutional Neural Network", in
             register-tiled C kernels (fastcnn._conv), with a stride;
    im2col   section 3 of Wang's "Forward and Backward Propagation of
             Convolutional Layer", as Caffe does it: the input is reorganised
             into columns so that the convolution is one matrix product,
             Z = W X_col, computed by NumPy's BLAS; the backward pass uses the
             matrix-derivative rules of Wang's eq. (16) and (21);
    fft      Wang's section 4: convolution is a product of spectra. Real FFTs
             of a size P x Q >= H x W with small prime factors, so that the
             circular convolution equals the linear one on the valid region.

Each algorithm is a pair of functions of explicit arrays, holding nothing
between calls (what a forward pass leaves for its backward pass, such as
the FFT's spectra, goes into the call's scratch):

    forward(x, weight, bias, act, stride, out, s, threads)
        out = f(x * weight + bias) for the (padded) input x (N, C, H, W):
        eq. (4)-(5), (7)-(8);
    backward(x, weight, y, grad, act, stride, dweight, dbias, dx, s, threads)
        from forward's input x and output y, and grad = dL/dy, write the
        weight and bias gradients and, unless dx is None, dL/dx:
        eq. (37)-(45), (39)-(40), (49)-(51);

where `s` holds the scratch arrays that `scratch(shape, act, rows, train,
threads)` asked for (fastcnn._workspace; s.train says whether a backward
pass follows) and `threads` is the thread count of the call. An algorithm
with native_stride computes only the strided output positions; the others
compute every position, and the layer keeps each stride-th.

The three agree with the oracle of tests/oracle.py (1e-10 in float64, 1e-4
relative in float32; the direct kernels to 1e-12 and 1e-5). Each is
deterministic: the same bits for every thread count. `choose` is what
algorithm="auto" uses.
"""

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from fastcnn import _activation, _blas, _conv, _im2col, _kernels, _optional, _tasks
from fastcnn._workspace import per_sample, whole

ALGORITHMS = ("direct", "im2col", "fft", "auto")


class ConvShape(NamedTuple):
    """The sizes of a convolution: maps, kernel, stride, the (padded) input
    maps it sees, and the output maps of every position (stride 1)."""

    in_maps: int
    out_maps: int
    kh: int
    kw: int
    stride: int
    height: int  # of the padded input
    width: int
    dtype: np.dtype

    @property
    def inner(self):
        """(M, OH, OW) of the stride-1 valid convolution."""
        return (self.out_maps, self.height - self.kh + 1, self.width - self.kw + 1)

    @property
    def strided(self):
        """(M, OH, OW) of the output with the stride."""
        s = self.stride
        return (self.out_maps, (self.height - self.kh) // s + 1, (self.width - self.kw) // s + 1)


class Algorithm(NamedTuple):
    """One way of computing a convolution layer (see the module docstring)."""

    name: str
    native_stride: bool
    scratch: Callable
    forward: Callable
    backward: Callable


def _scipy_fft():
    """scipy.fft, which is faster and runs transforms on several threads, or
    None where SciPy is absent (then numpy.fft is used)."""
    return _optional.module("scipy.fft")


def _activate_inplace(a, act, threads):
    """a = f(a) for the activation code act (eq. 4 for the sigmoid)."""
    if act:
        flat = a.reshape(-1)
        _activation.activation_forward(flat, flat, act, threads)


def _delta(y, grad, act, threads, out):
    """eq. (37), (57): delta = dL/dC * f'(z), from the output y (C (1 - C) for
    sigma), into out; grad itself without activation."""
    if not act:
        return grad
    _activation.activation_backward(y.reshape(-1), grad.reshape(-1), out.reshape(-1), act,
                                    threads)
    return out


# ------------------------------------------------------------------ direct
# Two families of C kernels compute the same sums: pixels of one map in the
# vector lanes (src_c/conv_impl.h), for wide maps and few input maps, and
# neighbouring maps in the lanes (src_c/conv_maps_impl.h), for narrow maps,
# deep layers and strides. Which one runs is a rule of the layer's shape
# (never a timing), chosen for the forward and the backward pass separately;
# the thresholds are medians measured on AVX2 and AVX-512 (benchmarks/README.md).
# Narrower than this, the pixel kernels fall back to one output at a time.
PIXEL_KERNEL_MIN_WIDTH = 8
# Terms per output (in_maps x KH x KW) from which the maps kernel's forward wins.
MAPS_FORWARD_MIN_TERMS = 32
# in_maps x out_maps from which its backward pass wins.
MAPS_BACKWARD_MIN_PAIRS = 512


def uses_maps_kernel(shape, backward=False):
    """Whether the direct algorithm runs the maps-in-lanes kernels for this
    ConvShape's forward (or backward) pass; always for a stride."""
    m, oh, ow = shape.inner
    if shape.stride > 1:
        return True
    if backward:
        return shape.in_maps * shape.out_maps >= MAPS_BACKWARD_MIN_PAIRS
    return ow < PIXEL_KERNEL_MIN_WIDTH or \
        shape.in_maps * shape.kh * shape.kw >= MAPS_FORWARD_MIN_TERMS


def _direct_scratch(shape, act, rows, train, threads):
    # The maps kernels' rearranged weights; for the backward pass, what its
    # kernel needs in its layouts: delta, one per thread (zero padding that is
    # never written), and one slot of weight-gradient partial sums per sample,
    # summed afterwards in sample order.
    m = shape.out_maps
    maps_forward, maps_backward = uses_maps_kernel(shape), train and uses_maps_kernel(shape, True)
    need = {}
    if maps_forward or maps_backward:
        weights, dx_weights, per_thread, per_sample_sums = _conv.maps_sizes(
            m, shape.in_maps, shape.kh, shape.kw, shape.height, shape.width, shape.stride,
            shape.dtype.name)
    if maps_forward:
        need["weights_by_maps"] = whole((weights,))
    if not train:
        return need
    if maps_backward:
        need["input_grad_weights"] = whole((dx_weights,))
    else:
        _, oh, ow = shape.inner
        per_thread, per_sample_sums = _conv.workspace_sizes(m, shape.in_maps, shape.kh,
                                                             shape.kw, oh, ow, shape.dtype.name)
    need.update(delta_ws=whole((threads, per_thread), zero=True),
                wgrad_parts=per_sample((per_sample_sums,)), bgrad_parts=per_sample((m,)),
                wgrad_sum=whole((per_sample_sums,)))
    return need


def direct_forward(x, weight, bias, act, stride, out, s, threads):
    """eq. (4)-(5): the fused kernel, out = f(x * k + b)."""
    if hasattr(s, "weights_by_maps"):
        _conv.conv_maps_forward(x, weight, bias, s.weights_by_maps, out, stride, act, threads)
    else:
        _conv.conv_forward(x, weight, bias, out, act, threads)


def direct_backward(x, weight, y, grad, act, stride, dweight, dbias, dx, s, threads):
    """eq. (37)-(45), (39)-(40), (49)-(51) in one fused kernel per sample."""
    if hasattr(s, "input_grad_weights"):
        _conv.conv_maps_backward(x, weight, y, grad, stride, act, dweight, dbias, dx,
                                 s.input_grad_weights, s.delta_ws, s.wgrad_parts, s.bgrad_parts,
                                 s.wgrad_sum, threads)
    else:
        _conv.conv_backward(x, weight, y, grad, act, dweight, dbias, dx, s.delta_ws,
                            s.wgrad_parts, s.bgrad_parts, s.wgrad_sum, threads)


DIRECT = Algorithm("direct", True, _direct_scratch, direct_forward, direct_backward)


# ------------------------------------------------------------------ im2col
# Bytes of columns built at a time: blocks of samples, or of output rows of
# one sample for big images; and the most tasks a batch is cut into.
COLUMN_BYTES = 8 << 20
IM2COL_TASKS = 8


def _im2col_geometry(shape):
    m, oh, ow = shape.strided
    ckk = shape.in_maps * shape.kh * shape.kw
    return m, oh, ow, ckk


def _blocks(shape, n0, n1):
    """(n0, n1, i0, i1) blocks of samples n0..n1-1 and output rows i0..i1-1,
    each with at most COLUMN_BYTES of columns (or one output row)."""
    m, oh, ow, ckk = _im2col_geometry(shape)
    row_bytes = ckk * ow * shape.dtype.itemsize
    sample_bytes = row_bytes * oh
    if sample_bytes <= COLUMN_BYTES:
        step = max(1, COLUMN_BYTES // sample_bytes)
        for a in range(n0, n1, step):
            yield a, min(n1, a + step), 0, oh
    else:
        rows = max(1, COLUMN_BYTES // row_bytes)
        for a in range(n0, n1):
            for i0 in range(0, oh, rows):
                yield a, a + 1, i0, min(oh, i0 + rows)


def _im2col_tasks(shape, n):
    """The batch cut into groups of samples: more for more work, never
    depending on the number of threads."""
    m, oh, ow, ckk = _im2col_geometry(shape)
    return _tasks.split(n, _tasks.count(n * m * ckk * oh * ow, IM2COL_TASKS))


def _im2col_scratch(shape, act, rows, train, threads):
    # per task running at once: its columns and products, for the largest
    # block any batch of up to `rows` images can have
    m, oh, ow, ckk = _im2col_geometry(shape)
    row_bytes = ckk * ow * shape.dtype.itemsize
    if row_bytes * oh <= COLUMN_BYTES:
        block = min(rows, max(1, COLUMN_BYTES // (row_bytes * oh))) * oh * ow
    else:
        block = min(oh, max(1, COLUMN_BYTES // row_bytes)) * ow
    slots = _tasks.slots(_im2col_tasks(shape, rows), threads)
    need = {"cols": whole((slots, ckk * block)), "z": whole((slots, m * block))}
    if train:
        need.update(d=whole((slots, m * block)), dcols=whole((slots, ckk * block)))
        if act:
            need["delta"] = per_sample(shape.strided)
    return need


def _slot(buffer, slot, shape):
    return buffer[slot, : math.prod(shape)].reshape(shape)


def _wrot(weight):
    """W[q, (c, u, v)] = k[q, c, KH-1-u, KW-1-v]: the kernels as a matrix."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1]).reshape(weight.shape[0], -1)


def _copy_threads(tasks, threads):
    # with one task the column copies may use all the threads; with several,
    # the tasks already do
    return threads if len(tasks) == 1 else 1


def im2col_forward(x, weight, bias, act, stride, out, s, threads):
    """Z = W X_col (Wang, section 3, eq. (1)-(3) in matrix form), then f(Z + b)."""
    shape = _shape_of(x, weight, stride)
    m, oh, ow, ckk = _im2col_geometry(shape)
    wrot = _wrot(weight)
    tasks = _im2col_tasks(shape, x.shape[0])
    t = _copy_threads(tasks, threads)

    def task(span, slot):
        for n0, n1, i0, i1 in _blocks(shape, *span):
            width = (n1 - n0) * (i1 - i0) * ow
            cols = _slot(s.cols, slot, (ckk, width))
            _im2col.im2col(x, shape.kh, shape.kw, stride, n0, n1, i0, i1, cols, t)
            z = _slot(s.z, slot, (m, width))
            np.matmul(wrot, cols, out=z)                                # Z = W X_col
            out[n0:n1, :, i0:i1, :] = z.reshape(m, n1 - n0, i1 - i0, ow).transpose(1, 0, 2, 3)

    with _blas.single_threaded():
        _tasks.run(task, tasks, threads)
    out += bias[:, None, None]
    _activate_inplace(out, act, threads)


def im2col_backward(x, weight, y, grad, act, stride, dweight, dbias, dx, s, threads):
    """With delta = dL/dZ (eq. 37):
        dW     = delta X_col^T      Wang's eq. (16): the weight gradient
        dX_col = W^T delta          Wang's eq. (21): then col2im gives dL/dx
    per task, the weight gradient summed over the tasks in task order."""
    shape = _shape_of(x, weight, stride)
    m, oh, ow, ckk = _im2col_geometry(shape)
    delta = _delta(y, grad, act, threads, getattr(s, "delta", None))
    np.sum(delta, axis=(0, 2, 3), out=dbias)                                 # eq. (45), (64)
    if dx is not None:
        dx[...] = 0
    wrot = _wrot(weight)
    tasks = _im2col_tasks(shape, x.shape[0])
    t = _copy_threads(tasks, threads)

    def task(span, slot):
        dw = np.zeros((m, ckk), shape.dtype)
        for n0, n1, i0, i1 in _blocks(shape, *span):
            width = (n1 - n0) * (i1 - i0) * ow
            cols = _slot(s.cols, slot, (ckk, width))
            _im2col.im2col(x, shape.kh, shape.kw, stride, n0, n1, i0, i1, cols, t)
            d = _slot(s.d, slot, (m, width))
            d.reshape(m, n1 - n0, i1 - i0, ow)[...] = delta[n0:n1, :, i0:i1, :].transpose(1, 0, 2, 3)
            dw += d @ cols.T                                            # eq. (16): dW = dZ X_col^T
            if dx is not None:
                dcols = _slot(s.dcols, slot, (ckk, width))
                np.matmul(wrot.T, d, out=dcols)                         # eq. (21): dX_col = W^T dZ
                _im2col.col2im(dcols, shape.kh, shape.kw, stride, n0, n1, i0, i1, dx, t)
        return dw

    with _blas.single_threaded():
        partials = _tasks.run(task, tasks, threads)
    dw = partials[0]
    for part in partials[1:]:  # in task order: the same sum for every thread count
        dw += part
    dweight[...] = dw.reshape(m, -1, shape.kh, shape.kw)[:, :, ::-1, ::-1]


IM2COL = Algorithm("im2col", True, _im2col_scratch, im2col_forward, im2col_backward)


# --------------------------------------------------------------------- fft
def fast_len(n):
    """Smallest m >= n whose prime factors are 2, 3 and 5: a fast FFT size."""
    fft = _scipy_fft()
    if fft is not None:
        return fft.next_fast_len(n, real=True)
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _rfft(a, size, threads):
    fft = _scipy_fft()
    if fft is not None:
        return fft.rfft2(a, s=size, workers=threads)
    return np.fft.rfft2(a, s=size)


def _irfft(a, size, threads):
    fft = _scipy_fft()
    if fft is not None:
        return fft.irfft2(a, s=size, workers=threads)
    return np.fft.irfft2(a, s=size)


def _mapsum(a, b, threads):
    """Per frequency, a (N, C, P, F) by b (C, M, P, F), summed over C ->
    (N, M, P, F): one small matrix product per frequency row, the rows
    shared among fastcnn's threads."""
    out = np.empty((a.shape[0], b.shape[1]) + a.shape[2:], np.result_type(a, b))
    at, bt, ot = a.transpose(2, 3, 0, 1), b.transpose(2, 3, 0, 1), out.transpose(2, 3, 0, 1)

    def rows(span, slot):
        lo, hi = span
        ot[lo:hi] = np.matmul(at[lo:hi], bt[lo:hi])

    macs = a.shape[0] * a.shape[1] * b.shape[1] * a.shape[2] * a.shape[3]
    _tasks.run(rows, _tasks.split(a.shape[2], _tasks.count(4 * macs)), threads)  # complex: 4 products
    return out


@functools.lru_cache(maxsize=64)
def _phase(p, q, kh, kw, dtype):
    """exp(-2 pi i (fy (KH-1) / P + fx (KW-1) / Q)): the spectrum of rot180(k)
    is conj(spectrum of k) times this (real k). A constant of the layer's
    shape, made once (read-only)."""
    fy = np.arange(p)[:, None]
    fx = np.arange(q // 2 + 1)[None, :]
    phase = np.exp(-2j * np.pi * (fy * (kh - 1) / p + fx * (kw - 1) / q))
    phase = phase.astype(np.complex64 if dtype == np.float32 else np.complex128)
    phase.flags.writeable = False
    return phase


def _fft_scratch(shape, act, rows, train, threads):
    # the spectra of forward's input and kernels are kept for backward, in
    # s.spectra, as the transforms return them
    return {"delta": per_sample(shape.inner)} if train and act else {}


def fft_forward(x, weight, bias, act, stride, out, s, threads):
    """z = irfft(sum_p xhat_p khat_qp)[KH-1:H, KW-1:W], eq. (5), (8), then f(z + b).

    With a hat for the 2-D real DFT of size P x Q, P >= H, Q >= W (zero
    padding), circular convolution is a product of spectra (Wang's eq. 31).
    The linear convolution x * k has size H + KH - 1 and, folded onto period
    P, only spills into rows below KH - 1: the valid rows KH-1..H-1 stay
    exact, so P >= H is enough.
    """
    _, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    size = (fast_len(h), fast_len(w))
    with _blas.single_threaded():
        xf = _rfft(x, size, threads)                                 # (N, C, P, Q/2+1)
        kf = _rfft(weight, size, threads)                            # (M, C, P, Q/2+1)
        z = _irfft(_mapsum(xf, kf.transpose(1, 0, 2, 3), threads), size, threads)
    if s.train:  # backward needs the spectra
        s.spectra = xf, kf
    out[...] = z[:, :, kh - 1 : h, kw - 1 : w]
    out += bias[:, None, None]
    _activate_inplace(out, act, threads)


def fft_backward(x, weight, y, grad, act, stride, dweight, dbias, dx, s, threads):
    """weight  dk_qp(u, v) = c(KH-1-u, KW-1-v), c = irfft(sum_n conj(dhat_q) xhat_p):
               the correlation of x with delta (conjugate spectrum), rotated,
               eq. (39)-(40)
    input      dx_p = irfft(sum_q dhat_q conj(khat_qp) phase)[:H, :W], eq. (49)-(51):
               conj(khat) times the phase exp(-2 pi i f (K-1) / P) is the
               spectrum of the rotated kernel rot180(k)
    The sums over maps are batched matrix products, one per frequency."""
    _, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    size = (fast_len(h), fast_len(w))
    with _blas.single_threaded():
        xf, kf = getattr(s, "spectra", None) or (_rfft(x, size, threads),
                                                 _rfft(weight, size, threads))
        s.spectra = None  # a second backward after one forward computes them again
        delta = _delta(y, grad, act, threads, getattr(s, "delta", None))
        np.sum(delta, axis=(0, 2, 3), out=dbias)                            # eq. (45), (64)
        df = _rfft(delta, size, threads)                             # (N, M, P, Q/2+1)
        # sum over samples and positions of conj(delta) x: the correlation
        cf = _mapsum(np.conj(df).transpose(1, 0, 2, 3), xf, threads)     # (M, C, P, Q/2+1)
        c = _irfft(cf, size, threads)[:, :, :kh, :kw]
        dweight[...] = c[:, :, ::-1, ::-1]
        if dx is not None:
            krot = np.conj(kf) * _phase(*size, kh, kw, np.dtype(x.dtype))  # spectrum of rot180(k)
            full = _irfft(_mapsum(df, krot, threads), size, threads)  # (N, C, P, Q)
            dx[...] = full[:, :, :h, :w]


FFT = Algorithm("fft", False, _fft_scratch, fft_forward, fft_backward)


def _shape_of(x, weight, stride):
    m, c, kh, kw = weight.shape
    return ConvShape(c, m, kh, kw, stride, x.shape[2], x.shape[3], x.dtype)


# -------------------------------------------------------------------- auto
def _interpolate(cube, axes, point):
    """Trilinear interpolation of cube[i][j][k] on axes (each increasing) at
    point, clamped to the grid."""
    weights = []
    for axis, x in zip(axes, point):
        x = min(max(x, axis[0]), axis[-1])
        i = max(0, min(len(axis) - 2, next((n for n in range(len(axis) - 1) if x <= axis[n + 1]), 0)))
        t = 0.0 if len(axis) == 1 else (x - axis[i]) / (axis[i + 1] - axis[i])
        weights.append(((i, 1 - t), (min(i + 1, len(axis) - 1), t)))
    return sum(wa * wb * wc * cube[a][b][c]
               for a, wa in weights[0] for b, wb in weights[1] for c, wc in weights[2])


# "auto" moves away from the direct kernels only if another algorithm is
# predicted to be at least this much faster.
SWITCH_GAIN = 1.1


def _table_for(tables):
    """The measured table of the kernel version in use; the portable
    kernels, measured nowhere, take the nearest (AVX2's)."""
    active = _kernels.active_isa().split(" ")[0]
    return tables.get(active) or tables.get("avx2+fma") or next(iter(tables.values()))


def choose(shape):
    """The algorithm "auto" uses for a convolution of ConvShape `shape`.

    A rule of the shape only, never a timing at run time, so that a model
    computes the same bits on every run: the measured crossover table
    fastcnn/_crossover.py (median times of the three algorithms over image
    size, kernel size and maps, from benchmarks/test_sweep.py, for the
    kernel version in use: AVX-512 and AVX2 trade places on some shapes) is
    interpolated in log-log space at the geometric-mean image size
    sqrt(H W), kernel size sqrt(KH KW) and maps sqrt(in out). The fastest
    predicted algorithm wins, if it beats direct by SWITCH_GAIN. A strided
    convolution gets direct, whose maps kernels compute only the strided
    positions.
    """
    from fastcnn import _crossover as table  # a table of numbers, read when first needed

    if shape.stride > 1:
        return "direct"
    point = (0.5 * math.log(shape.height * shape.width), 0.5 * math.log(shape.kh * shape.kw),
             0.5 * math.log(shape.in_maps * shape.out_maps))
    axes = [[math.log(v) for v in values] for values in (table.SIZES, table.KERNELS, table.MAPS)]
    predicted = {name: _interpolate(cube, axes, point)
                 for name, cube in _table_for(table.LOG_SECONDS).items()}
    other = min(("im2col", "fft"), key=predicted.__getitem__)
    # Leave the direct kernels (exact to the oracle's tightest tolerance, and
    # the steadiest to time) only for a clear win: near ties are noise.
    return other if predicted[other] < predicted["direct"] - math.log(SWITCH_GAIN) else "direct"


BY_NAME = {a.name: a for a in (DIRECT, IM2COL, FFT)}


def get(name, shape):
    """The Algorithm for `name` ("auto" resolved by `choose`)."""
    return BY_NAME[choose(shape) if name == "auto" else name]
