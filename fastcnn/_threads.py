"""Threads: how many each kernel call uses, and how one model is shared
between Python threads.

The count is resolved here, in Python, once per public call, and passed to
every kernel of that call as an explicit argument (scikit-learn's pattern):
a count set for the calling thread (threads_here) wins; then an explicit
`set_num_threads(n)`; then FASTCNN_NUM_THREADS as read at import; otherwise
OpenMP's default capped by the CPUs this process may use. A serial build (no
OpenMP) always runs one thread. Results are identical for every count.

Sharing a model: `SharedLock` lets any number of readers (forward passes:
predict, evaluate) run at once, and gives a writer (a training step, which
changes parameters and gradients) the model to itself.
"""

import os
import threading
import warnings
from contextlib import contextmanager

from fastcnn import _openmp
from fastcnn._validate import check_count

_requested = None  # set by set_num_threads / FASTCNN_NUM_THREADS
_this_thread = threading.local()  # a count for the calling thread only (threads_here)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# computed once: the CPUs usable by the process and OpenMP's default do not
# change while it runs, and asking costs a system call
_DEFAULT = None


def set_num_threads(n):
    """Use `n` threads in every fastcnn kernel from now on (n >= 1).

    Results are bit for bit the same for every `n`. In a build without OpenMP
    (see `fastcnn.openmp_enabled()`) the kernels run on one thread whatever `n` is.
    """
    global _requested
    _requested = check_count(n, "the number of threads")


def get_num_threads():
    """The number of threads the kernels will use."""
    global _DEFAULT
    if not _openmp.openmp_enabled():
        return 1
    here = getattr(_this_thread, "n", None)
    if here is not None:
        return here
    if _requested is not None:
        return _requested
    if _DEFAULT is None:
        _DEFAULT = max(1, min(_openmp.max_threads(), _usable_cpus()))
    return _DEFAULT


def resolve(threads=None):
    """The count for one call: `threads` if given (checked), else get_num_threads()."""
    if threads is None:
        return get_num_threads()
    return check_count(threads, "threads") if _openmp.openmp_enabled() else 1


@contextmanager
def threads_here(n):
    """Kernels called from this Python thread use `n` threads inside the
    block (None: no change); other threads, and this one after it, keep
    their setting. For jobs that run side by side in one process (Dask
    tasks on a worker's threads)."""
    before = getattr(_this_thread, "n", None)
    if n is not None:
        _this_thread.n = check_count(n, "the number of threads")
    try:
        yield
    finally:
        _this_thread.n = before


class SharedLock:
    """A readers-writer lock: `reading()` blocks may run together, a
    `writing()` block runs alone. A thread may nest blocks: read inside its
    own read or write block, write inside its own write block (a callback of
    fit that predicts, say); it must not ask to write while it reads. Waiting
    writers go first, so a stream of readers cannot keep one out forever."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None  # the thread that writes
        self._depth = 0  # its nested writing() blocks
        self._waiting = 0  # writers waiting
        self._mine = threading.local()  # this thread's nested reading() blocks

    def reading(self):
        """Context manager: read (run a forward pass) alongside other readers."""
        return _Reading(self)

    def writing(self):
        """Context manager: write (train) with no reader or other writer."""
        return _Writing(self)

    def _acquire_read(self):
        mine = self._mine
        depth = getattr(mine, "depth", 0)
        if depth or self._writer == threading.get_ident():
            mine.depth = depth + 1
            return
        with self._cond:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        mine.depth = 1

    def _release_read(self):
        mine = self._mine
        mine.depth -= 1
        if mine.depth or self._writer == threading.get_ident():
            return
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def _acquire_write(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                if getattr(self._mine, "depth", 0):
                    raise RuntimeError("a thread cannot train a model inside its own forward "
                                       "pass of it (predict, evaluate)")
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer = me
            self._depth += 1

    def _release_write(self):
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._writer = None
                self._cond.notify_all()


class _Reading:
    __slots__ = ("lock",)

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        self.lock._acquire_read()

    def __exit__(self, *exc):
        self.lock._release_read()


class _Writing(_Reading):
    __slots__ = ()

    def __enter__(self):
        self.lock._acquire_write()

    def __exit__(self, *exc):
        self.lock._release_write()


def _read_environment():
    global _requested
    value = os.environ.get("FASTCNN_NUM_THREADS", "").strip()
    if not value:
        return
    try:
        _requested = check_count(int(value), "FASTCNN_NUM_THREADS")
    except (TypeError, ValueError):
        warnings.warn(
            f"FASTCNN_NUM_THREADS={value!r} is not a positive integer; ignoring it",
            RuntimeWarning,
            stacklevel=3,
        )


_read_environment()
