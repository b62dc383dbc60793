"""The arrays of one pass through a model, kept apart from the model.

A forward pass writes every layer's output; a training pass also every
layer's input gradient and the loss gradient; and layers need scratch
arrays of their own (a zero-padded copy of the input, a direct
convolution's per-sample weight-gradient partial sums, the argmax of max
pooling, ...). A `Workspace` holds all of them for batches of up to `rows`
images, allocated once; a smaller batch uses the first rows of each.

The model's layers hold only what defines them (hyperparameters,
parameters, gradients); the state of a call lives in its workspace, and a
workspace serves one call at a time. So any number of threads can run one
model at once, each with its own workspace: `WorkspacePool` lends them out
and keeps a few idle ones for the next calls, within a fixed budget.
"""

import threading
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from fastcnn import _kernels


class Buffer(NamedTuple):
    """What a layer asks for: an array of `shape` per sample (per_sample) or
    in all, of `dtype` (None: the model's), zero-filled once if `zero` (a
    layer that writes only its inside keeps the border zero)."""

    shape: tuple
    dtype: object = None
    per_sample: bool = True
    zero: bool = False


def per_sample(shape, dtype=None, zero=False):
    """A scratch array with a row for each sample of the batch."""
    return Buffer(tuple(shape), dtype, True, zero)


def whole(shape, dtype=None, zero=False):
    """A scratch array of a fixed shape, whatever the batch."""
    return Buffer(tuple(shape), dtype, False, zero)


class Scratch:
    """A layer's scratch arrays for one batch, as attributes (s.padded, ...),
    and `train`: whether a backward pass follows the forward one."""

    def __init__(self, train):
        self.train = train


def allocate(buffers, rows, dtype):
    """{name: array} for a layer's {name: Buffer}, with room for `rows` samples."""
    def alloc(buffer):
        shape = ((rows,) if buffer.per_sample else ()) + tuple(buffer.shape)
        return (np.zeros if buffer.zero else np.empty)(shape, buffer.dtype or dtype)
    return {name: alloc(buffer) for name, buffer in buffers.items()}


def scratch_of(arrays, buffers, n, train):
    """A Scratch of `arrays` (from allocate) for a batch of n samples."""
    s = Scratch(train)
    for name, a in arrays.items():
        setattr(s, name, a[:n] if buffers[name].per_sample else a)
    return s


class Pass:
    """The arrays of a batch of n images: per layer, its output (`out`),
    input gradient (`dx`, None where not needed) and scratch; the loss
    gradient (`grad`); and, filled by the forward pass, each layer's input
    (`xs`) and output (`ys`) for the backward pass."""

    def __init__(self, n, out, dx, scratch, grad):
        self.n, self.out, self.dx, self.scratch, self.grad = n, out, dx, scratch, grad
        self.xs = [None] * len(out)
        self.ys = [None] * len(out)

    def release(self):
        """Drop the references to the last batch (it may be the caller's array),
        and what layers kept of it for a backward pass (FFT spectra)."""
        self.xs[:] = [None] * len(self.xs)
        self.ys[:] = [None] * len(self.ys)
        for s in self.scratch:
            s.spectra = None


class Workspace:
    """Every array a pass of `layers` needs, for up to `rows` images.

    train: also input gradients and the loss gradient; threads: the kernels'
    thread count (per-thread scratch is sized by it). `at(n)` gives the
    arrays for a batch of n <= rows images.
    """

    def __init__(self, layers, output_shape, dtype, rows, train, threads):
        self.rows, self.train, self.threads = rows, train, threads
        self.dtype = np.dtype(dtype)
        # scratch layouts follow the vector width of the kernels in use
        self.simd = _kernels.active_isa()

        def rows_of(shape, wanted=True):
            return np.empty((rows,) + tuple(shape), self.dtype) if wanted else None

        self._out = [rows_of(layer.output_shape, layer.writes_output) for layer in layers]
        self._dx = [rows_of(layer.input_shape, train and i > 0 and layer.writes_input_grad)
                    for i, layer in enumerate(layers)]
        self._buffers = [layer.scratch(rows, train, threads) for layer in layers]
        self._scratch = [allocate(b, rows, self.dtype) for b in self._buffers]
        self._grad = rows_of(output_shape, train)
        arrays = [a for a in self._out + self._dx + [self._grad] if a is not None]
        arrays += [a for s in self._scratch for a in s.values()]
        self.nbytes = sum(a.nbytes for a in arrays)
        self._pass = None

    def at(self, n):
        """The Pass for a batch of n images (1 <= n <= rows): views of the
        first n rows. The last one is kept: fit asks for the same n again
        and again."""
        if self._pass is not None and self._pass.n == n:
            return self._pass
        if not 1 <= n <= self.rows:
            raise ValueError(f"a workspace for {self.rows} images cannot take {n}")

        def rows(a):
            return None if a is None else a[:n]

        scratch = [scratch_of(a, b, n, self.train) for a, b in zip(self._scratch, self._buffers)]
        self._pass = Pass(n, [rows(a) for a in self._out], [rows(a) for a in self._dx], scratch,
                          rows(self._grad))
        return self._pass

    def release(self):
        """Forget the last batch's inputs, before the workspace goes idle."""
        if self._pass is not None:
            self._pass.release()


class WorkspacePool:
    """A model's idle workspaces, lent out to its calls.

    `borrow` gives a calling thread a workspace of its own: an idle one that
    fits (same mode, thread count and kernel version, room for the batch), or
    a new one. At most KEEP idle workspaces are kept, each of at most
    KEEP_BYTES; the others are left to the garbage collector. Thread-safe.
    """

    KEEP = 2
    KEEP_BYTES = 64 << 20

    def __init__(self, make):
        self._make = make  # make(rows, train, threads) -> Workspace
        self._idle = []  # most recently used last
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, rows, train, threads):
        """A Workspace for batches of up to `rows` images, for this block only."""
        with self._lock:
            simd = _kernels.active_isa()
            ws = next((w for w in reversed(self._idle) if w.train == train and w.threads == threads
                       and w.rows >= rows and w.simd == simd), None)
            if ws is not None:
                self._idle.remove(ws)
        if ws is None:
            ws = self._make(rows, train, threads)
        try:
            yield ws
        finally:
            ws.release()
            if ws.nbytes <= self.KEEP_BYTES:
                with self._lock:
                    self._idle.append(ws)
                    del self._idle[:-self.KEEP]

    def clear(self):
        """Drop every idle workspace."""
        with self._lock:
            self._idle.clear()
