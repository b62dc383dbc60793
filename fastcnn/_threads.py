"""One thread-count policy for every kernel.

The count is resolved here, in Python, and passed to each kernel as an
explicit argument (scikit-learn's pattern): an explicit `set_num_threads(n)`
wins; otherwise FASTCNN_NUM_THREADS as read at import; otherwise OpenMP's
default capped by the CPUs this process may use. A serial build (no OpenMP)
always runs one thread. Results are identical for every count.
"""

import os
import threading
import warnings
from contextlib import contextmanager

from fastcnn import _openmp

_requested = None  # set by set_num_threads / FASTCNN_NUM_THREADS
_this_thread = threading.local()  # a count for the calling thread only (threads_here)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_count(n, what):
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"{what} must be a positive integer, got {n!r}")
    n = int(n.__index__())
    if n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n}")
    return n


def set_num_threads(n):
    """Use `n` threads in every fastcnn kernel from now on (n >= 1).

    Results are bit for bit the same for every `n`. In a build without OpenMP
    (see `fastcnn.openmp_enabled()`) the kernels run on one thread whatever `n` is.
    """
    global _requested
    _requested = _check_count(n, "the number of threads")


def get_num_threads():
    """The number of threads the kernels will use."""
    if not _openmp.openmp_enabled():
        return 1
    here = getattr(_this_thread, "n", None)
    if here is not None:
        return here
    if _requested is not None:
        return _requested
    return max(1, min(_openmp.max_threads(), _usable_cpus()))


@contextmanager
def threads_here(n):
    """Kernels called from this Python thread use `n` threads inside the
    block (None: no change); other threads, and this one after it, keep
    their setting. For jobs that run side by side in one process (Dask
    tasks on a worker's threads)."""
    before = getattr(_this_thread, "n", None)
    if n is not None:
        _this_thread.n = _check_count(n, "the number of threads")
    try:
        yield
    finally:
        _this_thread.n = before


def _read_environment():
    global _requested
    value = os.environ.get("FASTCNN_NUM_THREADS", "").strip()
    if not value:
        return
    try:
        _requested = _check_count(int(value), "FASTCNN_NUM_THREADS")
    except (TypeError, ValueError):
        warnings.warn(
            f"FASTCNN_NUM_THREADS={value!r} is not a positive integer; ignoring it",
            RuntimeWarning,
            stacklevel=3,
        )


_read_environment()
