"""NumPy's BLAS on one thread while fastcnn's im2col and FFT layers run.

Those layers call NumPy's BLAS between fastcnn's own OpenMP loops. Idle
OpenMP workers and idle OpenBLAS workers both spin-wait for a while, so on a
machine with few cores each pool starves the other (benchmarks/README.md
has the figures). And OpenBLAS splits a large product differently for
different thread counts, which changes the last bits of the result. So the
products of those layers run with BLAS on one thread, and the parallel work
is fastcnn's: the same bits for every thread count.

BLAS's thread count is a setting of the whole process, so these sections
run one at a time in the process, whichever Python thread calls them: the
first to enter sets BLAS to one thread, and puts back what was there when
it leaves. (Other code that uses NumPy's BLAS at the same time runs on one
thread too, meanwhile.) OpenBLAS ignores openblas_set_num_threads from other
threads once the main thread has called it; its openblas_set_num_threads_local
(0.3.27 and newer) takes effect from any thread, so it is used where it
exists, and threadpoolctl's limit otherwise.

NumPy has no way to set its BLAS threads; threadpoolctl (a small package,
one of fastcnn's dependencies) does it. In an installation without it (a
vendored copy, say) the layers still compute, slower and not always to the
same bits, and say so once.
"""

import contextlib
import ctypes
import functools
import threading
import warnings

from fastcnn import _optional

_section = threading.RLock()  # one BLAS section at a time in the process
_depth = 0  # nested single_threaded() blocks of the thread that holds _section
_restore = None  # puts BLAS's thread count back, at the end of the outermost block
_controller = None  # NumPy's BLAS libraries, found once
_warned = False


@contextlib.contextmanager
def single_threaded():
    """Within this block NumPy's BLAS runs on one thread, for this thread and
    the worker threads it waits for; other threads' blocks wait for it.
    Yields False where threadpoolctl is missing (BLAS runs as it is set)."""
    global _depth, _restore, _warned
    threadpoolctl = _optional.module("threadpoolctl")  # most networks never need it
    if threadpoolctl is None:
        if not _warned:
            _warned = True
            warnings.warn(
                "fastcnn's im2col and FFT convolutions run much slower when NumPy's BLAS "
                "threads compete with fastcnn's; install threadpoolctl "
                "(pip install threadpoolctl; fastcnn depends on it) to let fastcnn keep BLAS "
                "on one thread",
                RuntimeWarning, stacklevel=4)
        yield False
        return
    with _section:
        if not _depth:
            _restore = _one_thread(threadpoolctl)
        _depth += 1
        try:
            yield True
        finally:
            _depth -= 1
            if not _depth:
                _restore()
                _restore = None


def _one_thread(threadpoolctl):
    """Set BLAS to one thread; return the function that undoes it."""
    global _controller
    setter = _settable_from_any_thread(threadpoolctl)
    if setter is not None:
        before = setter(1)
        return lambda: setter(before)
    if _controller is None:
        _controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return _controller.limit(limits=1).restore_original_limits


@functools.lru_cache(maxsize=None)
def _settable_from_any_thread(threadpoolctl):
    """OpenBLAS's openblas_set_num_threads_local (it returns the count it
    replaces), or None where NumPy's BLAS has none."""
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") != "blas" or info.get("internal_api") != "openblas":
            continue
        try:
            fn = ctypes.CDLL(info["filepath"]).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None
