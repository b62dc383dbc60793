"""NumPy's BLAS on one thread while fastcnn's im2col and FFT layers run.

Those layers call NumPy's BLAS between fastcnn's own OpenMP loops. Idle
OpenMP workers and idle OpenBLAS workers both spin-wait for a while, so on a
machine with few cores each pool starves the other: measured on 2 cores, an
epoch of the paper's network with im2col took 62 s with OpenBLAS's default
threads and 4.1 s with OpenBLAS on one thread (the direct kernels, which use
no BLAS, are unaffected). So while such a layer runs, BLAS gets one thread
and the parallel work is fastcnn's.

NumPy has no way to set its BLAS threads; threadpoolctl (a small package,
the optional extra `pip install fastcnn[blas]`) does it. Without it the
layers still compute the same results, slower, and say so once.
"""

import contextlib
import warnings

from fastcnn import _optional

_controller = None
_warned = False


@contextlib.contextmanager
def single_threaded():
    """Within this block, NumPy's BLAS runs on one thread (if threadpoolctl is installed)."""
    global _controller, _warned
    threadpoolctl = _optional.module("threadpoolctl")  # most networks never need it
    if threadpoolctl is None:
        if not _warned:
            _warned = True
            warnings.warn(
                "fastcnn's im2col and FFT convolutions run much slower when NumPy's BLAS "
                "threads compete with fastcnn's; install threadpoolctl "
                "(pip install 'fastcnn[blas]') to let fastcnn keep BLAS on one thread",
                RuntimeWarning, stacklevel=4)
        yield False
        return
    if _controller is None:
        _controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    with _controller.limit(limits=1):
        yield True
