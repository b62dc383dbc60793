"""fastcnn's threads for work done by NumPy (which releases the GIL): the
GEMMs of im2col and the per-frequency products of the FFT, with NumPy's BLAS
itself kept on one thread (fastcnn._blas).

The tasks are fixed by the data, never by the number of threads, and their
results come back in task order, so whatever combines them does so in the
same order for every thread count: the same bits.
"""

import concurrent.futures
import threading

# Multiply-adds below which splitting work among threads costs more than it saves.
TASK_MACS = 8 << 20

_executors = {}  # thread count -> executor; a handful at most, kept for the process
_executors_lock = threading.Lock()


def count(macs, limit=8):
    """How many tasks to cut `macs` multiply-adds of work into: a function of
    the work only, at most `limit`."""
    return int(max(1, min(limit, macs // TASK_MACS)))


def split(n, parts):
    """[0, n) in `parts` nearly equal consecutive ranges (fewer if n < parts)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def slots(tasks, threads):
    """How many tasks run at once: the scratch sets a caller needs."""
    return max(1, min(len(tasks), threads))


def run(fn, tasks, threads):
    """[fn(task, slot) for task in tasks], on up to `threads` threads.

    Task i runs on slot i % s (s = slots(tasks, threads)), one slot per
    thread, so a slot's scratch arrays are used by one task at a time.
    """
    s = slots(tasks, threads)
    if s == 1:
        return [fn(task, 0) for task in tasks]

    def worker(slot):
        return [fn(task, slot) for task in tasks[slot::s]]

    per_slot = list(_executor(s).map(worker, range(s)))
    return [per_slot[i % s][i // s] for i in range(len(tasks))]


def _executor(size):
    with _executors_lock:
        executor = _executors.get(size)
        if executor is None:
            executor = _executors[size] = concurrent.futures.ThreadPoolExecutor(size, "fastcnn")
        return executor
