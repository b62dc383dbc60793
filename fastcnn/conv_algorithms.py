"""Three ways to compute a convolution layer, with the same results.

    direct   the sums of eq. (5), (39), (49) of Zhang's derivation (seeds/000),
             in register-tiled C kernels (fastcnn._conv);
    im2col   Wang's section 3 (seeds/001), as Caffe does it: the input is
             reorganised into columns so that the convolution is one matrix
             product, Z = W X_col, computed by NumPy's BLAS; the backward pass
             uses the matrix-derivative rules of its eq. (16) and (21);
    fft      Wang's section 4: convolution is a product of spectra. Real FFTs
             of a size P x Q >= H x W with small prime factors, so that the
             circular convolution equals the linear one on the valid region.

Each class has forward(x, out) and backward(grad, dx) for a Conv2D layer,
reads the layer's parameters and writes its gradients, and keeps its own
workspaces. `choose` is what algorithm="auto" uses.

The three agree with the oracle of tests/oracle.py (1e-10 in float64, 1e-4
relative in float32; the direct kernels to 1e-12 and 1e-5). Each is
deterministic: the same bits for every thread count.
"""

import concurrent.futures
import math
import threading

import numpy as np

from fastcnn import _activation, _blas, _conv, _im2col, _optional
from fastcnn._threads import get_num_threads

ALGORITHMS = ("direct", "im2col", "fft", "auto")


def _scipy_fft():
    """scipy.fft, which is faster and runs transforms on several threads, or
    None where SciPy is absent (then numpy.fft is used)."""
    return _optional.module("scipy.fft")


def _activate_inplace(a, act, threads):
    """a = f(a) for the activation code act (eq. 4 for the sigmoid)."""
    if act:
        flat = a.reshape(-1)
        _activation.activation_forward(flat, flat, act, threads)


def _delta(layer, y, grad, threads, out):
    """eq. (37), (57): delta = dL/dC * f'(z), from the output y (C (1 - C) for sigma)."""
    if layer.act:
        _activation.activation_backward(y.reshape(-1), grad.reshape(-1), out.reshape(-1),
                                        layer.act, threads)
        return out
    return grad


class ConvAlgorithm:
    """What the three algorithms provide to a Conv2D layer (`layer`).

    They compute the layer's convolution on its padded input, with the
    layer's kernels, bias and activation. Those with native_stride compute
    only the strided output; the others every position, and the layer keeps
    each stride-th.
    """

    name = None
    native_stride = False

    def forward(self, x, out):
        """out (N, M, OH, OW) = f(x * k + b) for the padded input x (N, C, H, W):
        eq. (4)-(5), (7)-(8)."""
        raise NotImplementedError

    def backward(self, x, y, grad, dx):
        """From x and y = forward's input and output, and grad = dL/dy, fill
        layer.grads and, unless dx is None, write dL/dx (N, C, H, W) into dx:
        eq. (37)-(45), (39)-(40), (49)-(51)."""
        raise NotImplementedError


class Direct(ConvAlgorithm):
    """The kernels of eq. (5), (37)-(45), (39)-(40), (49)-(51), in fastcnn._conv."""

    name = "direct"

    def __init__(self, layer):
        self.layer = layer
        self._ws = {}

    def forward(self, x, out):
        layer = self.layer
        _conv.conv_forward(x, layer.params["weight"], layer.params["bias"], out, layer.act,
                           get_num_threads())

    def backward(self, x, y, grad, dx):
        layer = self.layer
        t = get_num_threads()
        ws = self._workspaces(grad.shape[0], t)
        _conv.conv_backward(x, layer.params["weight"], y, grad, layer.act,
                            layer.grads["weight"], layer.grads["bias"], dx, ws["delta"],
                            ws["dk"], ws["db"], ws["sum"], t)

    def _workspaces(self, n, threads):
        # Allocated on first use and when the batch or the thread count grows,
        # then reused: delta in the kernels' layouts (one per thread; zero
        # padding that is never written), and one slot of weight-gradient
        # partial sums per sample, summed in sample order.
        layer, ws = self.layer, self._ws
        if not ws:
            (m, oh, ow), (kh, kw) = layer.inner_shape, layer.kernel_size
            ws["sizes"] = _conv.workspace_sizes(m, layer.in_maps, kh, kw, oh, ow, layer.dtype.name)
            ws["sum"] = np.empty(ws["sizes"][1], layer.dtype)
        per_thread, per_sample = ws["sizes"]
        if ws.get("threads", 0) < threads:
            ws["delta"] = np.zeros((threads, per_thread), layer.dtype)
            ws["threads"] = threads
        if ws.get("samples", 0) < n:
            ws["dk"] = np.empty((n, per_sample), layer.dtype)
            ws["db"] = np.empty((n, layer.out_maps), layer.dtype)
            ws["samples"] = n
        return ws


class _Pool:
    """fastcnn's threads for work done by NumPy (which releases the GIL): the
    GEMMs of im2col and the per-frequency products of the FFT, with NumPy's
    BLAS itself on one thread (fastcnn._blas). Tasks are fixed by the data,
    not by the number of threads, and their results are combined in task
    order, so the answer is the same for every thread count."""

    def __init__(self):
        self._executor, self._size = None, 0
        self.local = threading.local()

    def map(self, fn, tasks):
        threads = get_num_threads()
        if threads == 1 or len(tasks) == 1:
            return [fn(task) for task in tasks]
        if self._size != threads:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._executor = concurrent.futures.ThreadPoolExecutor(threads, "fastcnn")
            self._size = threads
        return list(self._executor.map(fn, tasks))


_pool = _Pool()


# Multiply-adds below which splitting work among threads costs more than it saves.
_TASK_MACS = 8 << 20


def _tasks_for(macs, limit=8):
    """How many tasks to cut `macs` of work into: a function of the work only."""
    return int(max(1, min(limit, macs // _TASK_MACS)))


def _split(n, parts):
    """[0, n) in `parts` nearly equal consecutive ranges (fewer if n < parts)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


class Im2col(ConvAlgorithm):
    """Convolution as a matrix product (seeds/001, section 3).

    With X_col = im2col(x), of shape (C KH KW, N OH OW), and the rotated
    kernels as a matrix W (M, C KH KW), the layer is Z = W X_col, eq. (1)-(3)
    of seeds/001 in matrix form. For the backward pass, seeds/001 derives for
    Z = X Y:  d/dX = dZ Y^T  (eq. 16)  and  d/dY = X^T dZ  (eq. 21). Here:
        dW     = delta X_col^T      eq. (16): the weight gradient
        dX_col = W^T delta          eq. (21): then col2im gives the input gradient
    The batch is cut into up to TASKS groups of samples (more for more work,
    never depending on the number of threads), run on fastcnn's threads;
    each builds its columns in blocks of at most COLUMN_BYTES (of samples, or
    of output rows for big images), multiplies them with NumPy's BLAS, and
    builds them again in backward rather than keeping them. The weight
    gradient is the sum of the tasks' partial sums, in task order.
    """

    name = "im2col"
    native_stride = True
    COLUMN_BYTES = 8 << 20
    TASKS = 8

    def __init__(self, layer):
        self.layer = layer
        c = layer.in_maps
        self.kh, self.kw = layer.kernel_size
        self.stride = layer.stride
        self.m, self.oh, self.ow = layer.output_shape
        self.ckk = c * self.kh * self.kw

    def _blocks(self, n0, n1):
        """(n0, n1, i0, i1) blocks of samples n0..n1-1 and output rows i0..i1-1."""
        row_bytes = self.ckk * self.ow * self.layer.dtype.itemsize
        sample_bytes = row_bytes * self.oh
        if sample_bytes <= self.COLUMN_BYTES:
            step = max(1, self.COLUMN_BYTES // sample_bytes)
            for a in range(n0, n1, step):
                yield a, min(n1, a + step), 0, self.oh
        else:
            rows = max(1, self.COLUMN_BYTES // row_bytes)
            for a in range(n0, n1):
                for i0 in range(0, self.oh, rows):
                    yield a, a + 1, i0, min(self.oh, i0 + rows)

    def _buffer(self, name, shape):
        # per thread: tasks run at the same time
        buffers = getattr(_pool.local, "buffers", None)
        if buffers is None:
            buffers = _pool.local.buffers = {}
        key = (name, self.layer.dtype)
        buf = buffers.get(key)
        size = int(np.prod(shape))
        if buf is None or buf.size < size:
            buf = buffers[key] = np.empty(size, self.layer.dtype)
        return buf[:size].reshape(shape)

    def _tasks(self, n):
        return _tasks_for(n * self.m * self.ckk * self.oh * self.ow, self.TASKS)

    def _wrot(self):
        """W[q, (c, u, v)] = k[q, c, KH-1-u, KW-1-v]: the kernels as a matrix."""
        k = self.layer.params["weight"]
        return np.ascontiguousarray(k[:, :, ::-1, ::-1]).reshape(self.m, self.ckk)

    def _columns(self, x, block, threads):
        n0, n1, i0, i1 = block
        cols = self._buffer("cols", (self.ckk, (n1 - n0) * (i1 - i0) * self.ow))
        _im2col.im2col(x, self.kh, self.kw, self.stride, n0, n1, i0, i1, cols, threads)
        return cols

    def _copy_threads(self, tasks):
        # with one task the copies may use fastcnn's threads; with several,
        # the tasks already do
        return get_num_threads() if len(tasks) == 1 else 1

    def forward(self, x, out):
        with _blas.single_threaded():
            wrot = self._wrot()
            tasks = _split(x.shape[0], self._tasks(x.shape[0]))
            t = self._copy_threads(tasks)
            _pool.map(lambda task: self._forward_task(x, out, wrot, task, t), tasks)
        layer = self.layer
        out += layer.params["bias"][:, None, None]
        _activate_inplace(out, layer.act, get_num_threads())

    def _forward_task(self, x, out, wrot, task, threads):
        for block in self._blocks(*task):
            n0, n1, i0, i1 = block
            cols = self._columns(x, block, threads)
            z = self._buffer("z", (self.m, cols.shape[1]))
            np.matmul(wrot, cols, out=z)                                # Z = W X_col
            out[n0:n1, :, i0:i1, :] = z.reshape(self.m, n1 - n0, i1 - i0, self.ow).transpose(1, 0, 2, 3)

    def backward(self, x, y, grad, dx):
        layer = self.layer
        delta = _delta(layer, y, grad, get_num_threads(), np.empty_like(grad))
        np.sum(delta, axis=(0, 2, 3), out=layer.grads["bias"])                # eq. (45), (64)
        if dx is not None:
            dx[...] = 0
        with _blas.single_threaded():
            wrot = self._wrot()
            tasks = _split(delta.shape[0], self._tasks(delta.shape[0]))
            t = self._copy_threads(tasks)
            partials = _pool.map(lambda task: self._backward_task(x, delta, wrot, dx, task, t),
                                 tasks)
        dw = partials[0]
        for part in partials[1:]:  # in task order: the same sum for every thread count
            dw += part
        layer.grads["weight"][...] = dw.reshape(self.m, -1, self.kh, self.kw)[:, :, ::-1, ::-1]

    def _backward_task(self, x, delta, wrot, dx, task, threads):
        dw = np.zeros((self.m, self.ckk), self.layer.dtype)
        for block in self._blocks(*task):
            n0, n1, i0, i1 = block
            cols = self._columns(x, block, threads)
            d = self._buffer("d", (self.m, cols.shape[1]))
            d.reshape(self.m, n1 - n0, i1 - i0, self.ow)[...] = (
                delta[n0:n1, :, i0:i1, :].transpose(1, 0, 2, 3))
            dw += d @ cols.T                                            # eq. (16): dW = dZ X_col^T
            if dx is not None:
                dcols = self._buffer("dcols", cols.shape)
                np.matmul(wrot.T, d, out=dcols)                         # eq. (21): dX_col = W^T dZ
                _im2col.col2im(dcols, self.kh, self.kw, self.stride, n0, n1, i0, i1, dx, threads)
        return dw


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


class FFT(ConvAlgorithm):
    """Convolution through the spectrum (seeds/001, section 4).

    With a hat for the 2-D real DFT of size P x Q, P >= H, Q >= W (zero
    padding), circular convolution is a product of spectra (its eq. 31). The
    linear convolution x * k has size H + KH - 1 and, folded onto period P,
    only spills into rows below KH - 1: the valid rows KH-1..H-1 stay exact,
    so P >= H is enough.
        forward   z = irfft(sum_p xhat_p khat_qp)[KH-1:H, KW-1:W]          eq. (5), (8)
        weight    dk_qp(u, v) = c(KH-1-u, KW-1-v), c = irfft(sum_n conj(dhat_q) xhat_p)
                  the correlation of x with delta (conjugate spectrum),
                  rotated: eq. (39)-(40)
        input     dx_p = irfft(sum_q dhat_q conj(khat_qp) phase)[:H, :W]  eq. (49)-(51)
                  conj(khat) times the phase exp(-2 pi i f (K-1) / P) is the
                  spectrum of the rotated kernel rot180(k)
    The sums over maps are batched matrix products, one per frequency.
    """

    name = "fft"

    def __init__(self, layer):
        self.layer = layer
        _, self.h, self.w = layer.padded_shape
        self.kh, self.kw = layer.kernel_size
        self.p, self.q = fast_len(self.h), fast_len(self.w)
        self._phase = None  # made on first use: building a layer allocates no workspace
        self._xf = self._kf = None

    @property
    def phase(self):
        """exp(-2 pi i (fy (KH-1) / P + fx (KW-1) / Q)): the spectrum of
        rot180(k) is conj(spectrum of k) times this (real k)."""
        if self._phase is None:
            fy = np.arange(self.p)[:, None]
            fx = np.arange(self.q // 2 + 1)[None, :]
            phase = np.exp(-2j * np.pi * (fy * (self.kh - 1) / self.p
                                          + fx * (self.kw - 1) / self.q))
            self._phase = phase.astype(np.complex64 if self.layer.dtype == np.float32
                                       else np.complex128)
        return self._phase

    def _rfft(self, a, threads):
        s = (self.p, self.q)
        fft = _scipy_fft()
        if fft is not None:
            return fft.rfft2(a, s=s, workers=threads)
        return np.fft.rfft2(a, s=s)

    def _irfft(self, a, threads):
        s = (self.p, self.q)
        fft = _scipy_fft()
        if fft is not None:
            return fft.irfft2(a, s=s, workers=threads)
        return np.fft.irfft2(a, s=s)

    @staticmethod
    def _mapsum(a, b):
        """Per frequency, a (N, C, P, F) by b (C, M, P, F), summed over C ->
        (N, M, P, F): one small matrix product per frequency row, the rows
        shared among fastcnn's threads."""
        out = np.empty((a.shape[0], b.shape[1]) + a.shape[2:], np.result_type(a, b))
        at, bt, ot = a.transpose(2, 3, 0, 1), b.transpose(2, 3, 0, 1), out.transpose(2, 3, 0, 1)

        def rows(span):
            lo, hi = span
            ot[lo:hi] = np.matmul(at[lo:hi], bt[lo:hi])

        macs = a.shape[0] * a.shape[1] * b.shape[1] * a.shape[2] * a.shape[3]
        _pool.map(rows, _split(a.shape[2], _tasks_for(4 * macs)))  # complex: 4 real products
        return out

    def forward(self, x, out):
        with _blas.single_threaded():
            self._forward(x, out)

    def backward(self, x, y, grad, dx):
        with _blas.single_threaded():
            self._backward(x, y, grad, dx)

    def _forward(self, x, out):
        layer, t = self.layer, get_num_threads()
        # spectra of the input and the kernels, kept for backward
        self._xf = xf = self._rfft(x, t)                             # (N, C, P, Q/2+1)
        self._kf = kf = self._rfft(layer.params["weight"], t)        # (M, C, P, Q/2+1)
        z = self._irfft(self._mapsum(xf, kf.transpose(1, 0, 2, 3)), t)
        out[...] = z[:, :, self.kh - 1 : self.h, self.kw - 1 : self.w]
        out += layer.params["bias"][:, None, None]
        _activate_inplace(out, layer.act, t)

    def _backward(self, x, y, grad, dx):
        layer, t = self.layer, get_num_threads()
        if self._xf is None:  # a second backward after one forward: the spectra again
            self._xf = self._rfft(x, t)
            self._kf = self._rfft(layer.params["weight"], t)
        delta = _delta(layer, y, grad, t, np.empty_like(grad))
        np.sum(delta, axis=(0, 2, 3), out=layer.grads["bias"])                # eq. (45), (64)
        df = self._rfft(delta, t)                                    # (N, M, P, Q/2+1)
        # sum over samples and positions of conj(delta) x: the correlation
        cf = self._mapsum(np.conj(df).transpose(1, 0, 2, 3), self._xf)  # (M, C, P, Q/2+1)
        c = self._irfft(cf, t)[:, :, : self.kh, : self.kw]
        layer.grads["weight"][...] = c[:, :, ::-1, ::-1]
        if dx is not None:
            krot = np.conj(self._kf) * self.phase                    # spectrum of rot180(k)
            full = self._irfft(self._mapsum(df, krot), t)            # (N, C, P, Q)
            dx[...] = full[:, :, : self.h, : self.w]
        self._xf = self._kf = None


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


def choose(layer):
    """The algorithm "auto" uses for a Conv2D layer.

    A rule of the layer's shape only, never a timing at run time, so that a
    model computes the same bits on every run: the measured crossover table
    fastcnn/_crossover.py (median times of the three algorithms over image
    size, kernel size and maps, from benchmarks/test_sweep.py) is
    interpolated in log-log space at the layer's geometric-mean image size
    sqrt(H W), kernel size sqrt(KH KW) and maps sqrt(in out). The fastest
    predicted algorithm wins, if it beats direct by SWITCH_GAIN. A strided
    layer gets im2col, the one that computes only the strided positions.
    """
    from fastcnn import _crossover as table

    if layer.stride > 1:
        return "im2col"  # computes only the strided positions; the others compute all
    c, h, w = layer.padded_shape
    kh, kw = layer.kernel_size
    point = (0.5 * math.log(h * w), 0.5 * math.log(kh * kw), 0.5 * math.log(c * layer.out_maps))
    axes = [[math.log(v) for v in values] for values in (table.SIZES, table.KERNELS, table.MAPS)]
    predicted = {name: _interpolate(cube, axes, point) for name, cube in table.LOG_SECONDS.items()}
    other = min(("im2col", "fft"), key=predicted.__getitem__)
    # Leave the direct kernels (exact to the oracle's tightest tolerance, and
    # the steadiest to time) only for a clear win: near ties are noise.
    return other if predicted[other] < predicted["direct"] - math.log(SWITCH_GAIN) else "direct"


def make(layer):
    """The algorithm object for layer.algorithm ("auto" resolved by `choose`)."""
    name = layer.algorithm if layer.algorithm != "auto" else choose(layer)
    return {"direct": Direct, "im2col": Im2col, "fft": FFT}[name](layer)
