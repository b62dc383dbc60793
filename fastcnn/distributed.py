"""Many small runs, or one model over many images, on a Dask cluster.

Small CNNs are cheap to train, so one trains many of them: learning rates and
batch sizes over several seeds (the paper's alpha = 1, batch 50 is one point
of such a grid), or one trained model over millions of images. Past one
machine fastcnn hands that work to Dask's distributed scheduler rather than
growing one of its own (``pip install fastcnn[distributed]``):

    sweep(build, grid, data, client)     one training run per grid point and
                                         seed, each a Dask task
    predict(model, images, client)       labels (and probabilities) of a Dask
                                         array of images, block by block

A run is the same function on a worker as here, and fastcnn's training gives
the same parameters bit for bit whatever the number of threads, so a sweep on
a cluster returns exactly the records a serial sweep returns (on workers whose
CPUs take the same SIMD path: see fastcnn.simd_path()).

Dask is imported when first needed: without it, sweep(..., client="serial")
still works.
"""

import concurrent.futures
import itertools
import math
import mmap
import os
import pickle
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from fastcnn import _optional, _threads, optim
from fastcnn._files import write_csv
from fastcnn._validate import check_count, check_images, check_int, check_labels, check_targets
from fastcnn.model import Sequential, scores_to_proba

__all__ = ["FIT_KEYS", "Run", "SweepError", "SweepResult", "expand_grid", "predict", "sweep"]

# Grid keys that go to the training run; every other key goes to build().
FIT_KEYS = ("lr", "batch_size", "epochs", "optimizer", "momentum", "weight_decay")
OPTIMIZERS = tuple(optim.DEFAULT_LR)  # "sgd", "momentum", "adam"

# A worker process runs one fastcnn job at a time when it gives each job all
# its threads: two OpenMP teams on the same cores spin against each other.
# Prediction always takes it (a block's job uses all the worker's threads).
_exclusive = threading.Lock()


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(f"fastcnn.distributed needs Dask's distributed scheduler: "
                          f"{_optional.install_hint('distributed')}") from None
    return distributed


# --------------------------------------------------------------------- grid
def expand_grid(grid):
    """The grid points, in order, as a list of dicts.

    `grid` is a dict from argument name to a list of values, expanded into
    their product with the last key varying fastest (as itertools.product
    and scikit-learn's ParameterGrid), or a list of such dicts, whose
    expansions are concatenated. A value that is not a list, tuple, range or
    1-d array is a single value.
    """
    if isinstance(grid, dict):
        grids = [grid]
    elif isinstance(grid, (list, tuple)) and grid and all(isinstance(g, dict) for g in grid):
        grids = list(grid)
    else:
        raise TypeError(f"grid must be a dict of argument name -> list of values, or a "
                        f"non-empty list of such dicts, got {grid!r}")
    points = []
    for g in grids:
        names, values = [], []
        for name, value in g.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise TypeError(f"grid keys must be argument names, got {name!r}")
            if name == "seed":
                raise ValueError("'seed' cannot be a grid key: give the seeds with seeds=")
            if isinstance(value, (list, tuple, range)) or (
                    isinstance(value, np.ndarray) and value.ndim == 1):
                value = list(value)
                if not value:
                    raise ValueError(f"grid[{name!r}] is empty: give it at least one value")
            else:
                value = [value]
            names.append(name)
            values.append([v.item() if isinstance(v, np.generic) else v for v in value])
        points.extend(dict(zip(names, combo)) for combo in itertools.product(*values))
    return points


def _split_point(point):
    """(arguments of build, arguments of the training run)."""
    model_args = {k: v for k, v in point.items() if k not in FIT_KEYS}
    fit_args = {k: v for k, v in point.items() if k in FIT_KEYS}
    return model_args, fit_args


def _check_seeds(seeds):
    if isinstance(seeds, bool):
        raise TypeError(f"seeds must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, (int, np.integer)):
        return list(range(check_int(seeds, "seeds")))
    try:
        seeds = list(seeds)
    except TypeError:
        raise TypeError(f"seeds must be a count or a list of seeds, got {seeds!r}") from None
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    seeds = [check_int(s, "each seed", minimum=0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has repeats: {seeds}; give each seed once")
    return seeds


def _optimizer(model, fit_args):
    """The optimiser a grid point asks for, by name (fastcnn.optim.create):
    SGD (the paper's eq. (65)-(70)), SGD with momentum, or Adam, with the
    point's momentum and weight decay if given."""
    return optim.create(fit_args.get("optimizer", "sgd"), model, lr=fit_args.get("lr"),
                        momentum=fit_args.get("momentum"),
                        weight_decay=fit_args.get("weight_decay", 0.0))


# ------------------------------------------------------------------ threads
def _worker_threads():
    """The threads of the Dask worker this task runs on, or None outside one."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return worker.state.nthreads


@contextmanager
def _kernel_threads(threads, exclusive):
    """Run fastcnn's kernels from this thread with `threads` threads. None:
    on a Dask worker, as many as the worker has, one such job at a time in
    the process; here, the current setting. `exclusive` takes the process's
    job lock anyway. Only this thread's count changes (threads_here): runs
    side by side in one process do not change each other's."""
    on_worker = _worker_threads()
    if threads is None and on_worker is not None:
        threads, exclusive = on_worker, True
    with _exclusive if exclusive else nullcontext(), _threads.threads_here(threads):
        yield


# -------------------------------------------------------------------- sweep
@dataclass(frozen=True, eq=False)
class Run:
    """What one training run of a sweep gave.

    point: the grid point (build's arguments and the run's: lr, batch_size, ...)
    seed: initialises the model (build(seed=...)) and shuffles its epochs (fit)
    status: "ok", or "diverged" when fit stopped on a NaN or infinite loss
    final_loss: mean batch loss of the last epoch (NaN if diverged)
    test_error: fraction of test images misclassified (NaN without test data or
        if diverged)
    epoch_loss: mean batch loss of each epoch
    parameters: name -> array, the trained model's parameters (model.params)
    seconds: wall time of the run: build, fit and evaluation
    threads: the kernel threads it used
    worker: address of the Dask worker that ran it ("" when run here)
    message: why it diverged ("" if it did not)
    """

    point: dict
    seed: int
    status: str
    final_loss: float
    test_error: float
    epoch_loss: list
    parameters: dict = field(repr=False)
    seconds: float
    threads: int
    worker: str
    message: str = ""

    def same_result(self, other):
        """True if both runs trained the same thing to the same bits:
        point, seed, status, losses, test error and every parameter
        (time and worker aside)."""
        def same(a, b):
            return a == b or (math.isnan(a) and math.isnan(b))
        return (self.point == other.point and self.seed == other.seed
                and self.status == other.status and same(self.final_loss, other.final_loss)
                and same(self.test_error, other.test_error)
                and len(self.epoch_loss) == len(other.epoch_loss)
                and all(map(same, self.epoch_loss, other.epoch_loss))
                and self.parameters.keys() == other.parameters.keys()
                and all(np.array_equal(p, other.parameters[k]) for k, p in self.parameters.items()))

    def row(self):
        """One flat dict for a table: the point, the seed and the results."""
        return dict(self.point, seed=self.seed, status=self.status, final_loss=self.final_loss,
                    test_error=self.test_error, seconds=round(self.seconds, 3),
                    threads=self.threads, worker=self.worker, message=self.message)


def _score(run):
    # the test error when there is one, else the last epoch's loss
    return run.final_loss if math.isnan(run.test_error) else run.test_error


def _best_index(records):
    ok = [i for i, r in enumerate(records) if r.status == "ok"]
    if not ok:
        return None
    # min keeps the first of equals: ties go to the earlier grid point
    return min(ok, key=lambda i: _score(records[i]))


class SweepResult(NamedTuple):
    """records: one Run per grid point and seed, in grid order (seeds
    innermost); best: the model of the best run, rebuilt with build() and
    given its trained parameters (None if every run diverged). The best run
    has the lowest test error, or without test data the lowest final loss;
    ties go to the earlier run."""

    records: list
    best: Optional[Sequential]

    @property
    def best_record(self):
        """The Run that `best` comes from (None if every run diverged)."""
        i = _best_index(self.records)
        return None if i is None else self.records[i]

    def rows(self):
        """The records as flat dicts (Run.row), in grid order."""
        return [r.row() for r in self.records]

    def to_csv(self, path):
        """Write the rows to `path` as CSV, atomically."""
        write_csv(path, self.rows())


def _check_data(data):
    """(x, y, x_test, y_test), the test pair None when absent; a callable
    (a loader, called where the runs are) is returned as it is."""
    if callable(data):
        return data
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 4):
        raise TypeError("data must be (x, y), (x, y, x_test, y_test) or a function "
                        f"returning one of these, got {type(data).__name__}"
                        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    data = tuple(data) + (None, None) * (len(data) == 2)
    for name, a in zip(("x", "y", "x_test", "y_test"), data):
        if a is not None and not isinstance(a, np.ndarray):
            raise TypeError(f"data's {name} must be a NumPy array, got {type(a).__name__}"
                            + (" (for a Dask array, compute it or pass a function that loads "
                               "the data on the workers)" if hasattr(a, "dask") else ""))
    for (nx, x), (ny, y) in ((("x", data[0]), ("y", data[1])),
                             (("x_test", data[2]), ("y_test", data[3]))):
        if x is not None and len(x) != len(y):
            raise ValueError(f"data's {nx} has {len(x)} images but {ny} {len(y)} labels")
    return data


def _loaded(data):
    return _check_data(data() if callable(data) else data)


def _train(build, point, seed, data, threads):
    """One run of the sweep: build(seed=seed, **model arguments), train it
    with the point's optimiser and batch size, evaluate it on the test data.
    The same function whether it runs here or as a Dask task."""
    with _kernel_threads(threads, exclusive=False):
        start = time.perf_counter()
        x, y, x_test, y_test = _loaded(data)
        model_args, fit_args = _split_point(point)
        model = _build(build, model_args, seed)
        optimizer = _optimizer(model, fit_args)
        status, message, test_error = "ok", "", math.nan
        try:
            history = model.fit(x, y, epochs=fit_args.get("epochs", 1),
                                batch_size=fit_args.get("batch_size", 50), optimizer=optimizer,
                                seed=seed, progress=False)
            final_loss = history.epoch_loss[-1]
            if x_test is not None:
                test_error = model.evaluate(x_test, y_test)
        except FloatingPointError as e:  # a point of the grid may well diverge
            status, message, final_loss = "diverged", str(e), math.nan
        parameters = {name: p.copy() for name, p in model.params.items()}
        worker = ""
        if _worker_threads() is not None:
            from distributed import get_worker
            worker = get_worker().address
        return Run(point=dict(point), seed=seed, status=status, final_loss=float(final_loss),
                   test_error=float(test_error),
                   epoch_loss=[] if status != "ok" else [float(v) for v in history.epoch_loss],
                   parameters=parameters, seconds=time.perf_counter() - start,
                   threads=_threads.get_num_threads(), worker=worker, message=message)


def _build(build, model_args, seed):
    model = build(seed=seed, **model_args)
    if not isinstance(model, Sequential):
        raise TypeError(f"build(seed=..., **{model_args}) must return a fastcnn.Sequential, "
                        f"got {type(model).__name__}")
    return model


def _check_build(build, points, seeds, data):
    """Before any task is sent, so that a mistake is reported at once: build
    the model of every distinct set of build arguments here, check the data
    against it, and make every point's optimiser and run arguments."""
    if not callable(build):
        raise TypeError(f"build must be a function returning a model (e.g. "
                        f"fastcnn.models.lenet5), got {build!r}")
    built = []  # (build arguments, model): arguments may not be hashable
    for point in points:
        model_args, fit_args = _split_point(point)
        model = next((m for args, m in built if args == model_args), None)
        if model is None:
            try:
                model = _build(build, model_args, seeds[0])
            except TypeError as e:
                raise TypeError(f"build(seed={seeds[0]}, **{model_args}) failed: {e}; grid "
                                f"keys other than {FIT_KEYS} are passed to build") from e
            built.append((model_args, model))
            if not callable(data):
                x, y, x_test, y_test = data
                check_images(x, model.input_shape, model.dtype, copy_dtype=False)
                check_targets(y, len(x), model.num_classes, model.dtype)
                if x_test is not None:
                    check_images(x_test, model.input_shape, model.dtype, name="x_test",
                                 copy_dtype=False)
                    check_labels(y_test, len(x_test), model.num_classes, name="y_test")
        _optimizer(model, fit_args)
        for key, default in (("epochs", 1), ("batch_size", 50)):
            check_int(fit_args.get(key, default), f"grid[{key!r}]")


@contextmanager
def _connect(client, workers=None, threads_per_worker=None):
    """The Client to use (None: run here), closing what was opened for it.
    workers and threads_per_worker size a LocalCluster (client="local")."""
    if (workers, threads_per_worker) != (None, None) and client != "local":
        raise ValueError("workers and threads_per_worker set up the cluster of client='local'; "
                         f"they do not apply to client={client!r}")
    if workers is not None:
        workers = check_count(workers, "workers")
    if threads_per_worker is not None:
        threads_per_worker = check_count(threads_per_worker, "threads_per_worker")
    if isinstance(client, str):
        if client == "serial":
            yield None
            return
        distributed = _import_distributed()
        if client == "local":
            # by default, workers and threads per worker as Dask chooses for this machine
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                          dashboard_address=":0") as cluster, \
                    distributed.Client(cluster) as c:
                yield c
            return
        try:  # waits distributed.comm.timeouts.connect (Dask's config) at most
            c = distributed.Client(client)
        except OSError as e:
            raise ConnectionError(f"no Dask scheduler answered at {client!r} ({e}); start one "
                                  "with `dask scheduler` and workers with `dask worker "
                                  "ADDRESS`, or use client='local'") from None
        with c:
            yield c
        return
    if client is None:
        try:
            import distributed
            yield distributed.default_client()
        except (ImportError, ValueError):  # no Dask, or no client made in this process
            yield None
        return
    distributed = _import_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, a scheduler address, 'local', "
                        f"'serial' or None, got {client!r}")
    yield client


def sweep(build, grid, data, client=None, *, seeds=1, threads=None, progress=False,
          workers=None, threads_per_worker=None):
    """Train one model per grid point and seed, as Dask tasks.

    Parameters
    ----------
    build : callable
        build(seed=seed, **arguments) returns a fresh fastcnn model, e.g.
        fastcnn.seed_cnn or fastcnn.models.lenet5. It is sent to the workers
        (pickled by cloudpickle: a function of a script is sent by value, one
        of a module must be importable there).
    grid : dict or list of dicts
        Argument name -> list of values (see expand_grid). The keys of
        FIT_KEYS set the run: lr, batch_size (default 50), epochs (default 1),
        optimizer ("sgd", the default, "momentum" or "adam"), momentum, weight_decay;
        every other key is an argument of build. The learning rate defaults
        to 1.0 for SGD (the paper's alpha) and 1e-3 for Adam.
    data : (x, y) or (x, y, x_test, y_test), or a function returning one
        Training images and labels as fit takes them (NumPy arrays), and
        test data for the test error. Arrays are sent to every worker once
        (scattered with broadcast=True); a function is called by each run
        on its worker instead, for data the workers can load themselves.
    client : distributed.Client, str or None
        A Client; a scheduler address ("tcp://host:8786"), connected to for
        this call; "local", a LocalCluster of this machine's cores for this
        call; "serial", every run here one after another; None, the Client
        made last in this process, else "serial".
    seeds : int or list of int
        Seeds 0..seeds-1, or these seeds, for every grid point.
    threads : int, optional
        Kernel threads per run. Default: as many as the run's worker has,
        with one run at a time per worker process (so several runs never
        share a core); here, the current setting. With threads=1 a worker
        runs as many at once as it has threads. Only the run's own thread
        is set, not the process's setting. The results are the same bit for
        bit either way.
    progress : bool
        A progress bar over the runs (tqdm).
    workers, threads_per_worker : int, optional
        With client="local": the cluster's worker processes and their
        threads (default: as Dask chooses for this machine).

    Returns
    -------
    SweepResult
        (records, best): a Run per grid point and seed in grid order (seeds
        innermost), and the best run's model. A run whose loss became NaN or
        infinite is recorded with status "diverged"; any other error in a run
        stops the sweep with a SweepError whose .records holds the runs that
        had finished. A worker that dies mid-run (its process killed, its
        machine lost) costs only time: Dask runs its tasks again elsewhere,
        and the records are the same. (Dask gives up on a task, KilledWorker,
        after it has been on distributed.scheduler.allowed-failures workers
        that died, 3 by default.)

    Runs wait for a worker's lock, not in Dask's queue, when a worker has
    more threads than one run at a time may use (threads=None): Dask cannot
    move those to idle workers, so for sweeps give workers one thread each
    (`dask worker ADDRESS --nthreads 1 --nworkers N`, Dask's default on
    small machines), or pass threads=1.
    """
    points = expand_grid(grid)
    seeds = _check_seeds(seeds)
    data = _check_data(data)
    if threads is not None:
        threads = check_count(threads, "threads")
    _check_build(build, points, seeds, data)
    runs = [(point, seed) for point in points for seed in seeds]
    from tqdm.auto import tqdm

    with _connect(client, workers, threads_per_worker) as c, tqdm(total=len(runs), desc="sweep", unit="run",
                                     disable=not progress) as bar:
        if c is None:
            data = _loaded(data)  # a loader is called once here
            records = [None] * len(runs)
            for i, (point, seed) in enumerate(runs):
                try:
                    records[i] = _train(build, point, seed, data, threads)
                except Exception as e:
                    raise _failed(runs, i, e, records) from e
                bar.update()
        else:
            records = _sweep_on(c, build, runs, data, threads, bar)
    i = _best_index(records)
    best = None
    if i is not None:
        run = records[i]
        best = _build(build, _split_point(run.point)[0], run.seed)
        for name, p in best.params.items():
            p[...] = run.parameters[name]
    return SweepResult(records, best)


class SweepError(RuntimeError):
    """A run of a sweep failed (other than by diverging). `records` holds
    what the sweep had: the Run of every run that finished, None for the
    others, in grid order."""

    def __init__(self, message, records):
        super().__init__(message)
        self.records = records


def _failed(runs, i, error, records):
    point, seed = runs[i]
    done = sum(r is not None for r in records)
    return SweepError(f"the run of {point} with seed {seed} failed: {type(error).__name__}: "
                      f"{error} ({done} of {len(runs)} runs had finished; their records are "
                      f"in this error's .records)", records)


# how long a sweep waits for a scheduler's first worker
WORKER_WAIT_SECONDS = 60


def _sweep_on(client, build, runs, data, threads, bar):
    from distributed import as_completed

    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        raise TimeoutError(f"no Dask worker joined the scheduler at {client.scheduler.address} "
                           f"in {WORKER_WAIT_SECONDS} s; start some with `dask worker "
                           f"{client.scheduler.address}`") from None
    if not callable(data):
        # a fresh key: a sweep right after another on the same data must not
        # find the first one's key on its way out of the cluster
        [data] = client.scatter([data], broadcast=True, hash=False)
    def submit(i):
        point, seed = runs[i]
        future = client.submit(_train, build, point, seed, data, threads, pure=False)
        index[future.key] = i
        return future

    index, records = {}, [None] * len(runs)
    futures = [submit(i) for i in range(len(runs))]
    retries = {}
    try:
        pending = as_completed(futures)
        for future in pending:
            i = index[future.key]
            try:
                records[i] = future.result()
            except concurrent.futures.CancelledError as e:
                # Seen under load when a worker dies: the scheduler forgets a
                # task it had rescheduled ("already forgotten"). Nothing of
                # the run is lost: run it again, a few times at most.
                retries[i] = retries.get(i, 0) + 1
                if retries[i] > RESUBMITS:
                    raise _failed(runs, i, e, records) from e
                futures.append(submit(i))
                pending.add(futures[-1])
                continue
            except Exception as e:
                raise _failed(runs, i, e, records) from e
            bar.update()
    finally:
        client.cancel([f for f in futures if not f.done()])
    return records


# how many times a run whose task the scheduler cancelled is submitted again
RESUBMITS = 3


# ------------------------------------------------------------------ predict
class _FileRows:
    """The rows of a C-ordered array in a file, mapped where they are read:
    a memory-mapped array reaches the workers as its path and offset, not as
    its contents (the file must be on a filesystem the workers share)."""

    def __init__(self, path, offset, dtype, shape):
        self.path, self.offset = os.path.abspath(path), int(offset)
        self.dtype, self.shape = np.dtype(dtype), tuple(int(s) for s in shape)
        self.ndim = len(self.shape)
        self._stamp = os.stat(self.path).st_mtime_ns

    def __getitem__(self, key):
        try:
            changed = os.stat(self.path).st_mtime_ns != self._stamp
            rows = None if changed else np.memmap(self.path, self.dtype, "r",
                                                  offset=self.offset, shape=self.shape)
        except (FileNotFoundError, PermissionError) as e:
            raise FileNotFoundError(
                f"cannot read the images from {self.path} on this machine ({e}): a memory-"
                "mapped array is read by the workers from its file, which must be on a "
                "filesystem they share; pass a Dask array otherwise") from None
        except ValueError:  # shorter than when predict() saw it
            changed = True
        if changed:
            raise RuntimeError(f"{self.path} changed after predict() was called; call it again")
        return np.array(rows[key])

    def __dask_tokenize__(self):
        return (self.path, self.offset, self.dtype.str, self.shape, self._stamp)


def _file_rows(images):
    """A _FileRows for a memory-mapped array whose memory is its file's,
    else None. np.memmap keeps the offset of the whole mapping even in a
    view, so the view's own offset is found from its address."""
    if not isinstance(images, np.memmap) or not images.flags.c_contiguous:
        return None
    mapping = getattr(images, "_mmap", None)
    if mapping is None or images.filename is None or images.mode == "c":
        return None  # no file, or copy-on-write pages the file does not have
    start = np.frombuffer(mapping, np.uint8).ctypes.data
    mapped_from = images.offset - images.offset % mmap.ALLOCATIONGRANULARITY
    offset = mapped_from + images.ctypes.data - start
    return _FileRows(images.filename, offset, images.dtype, images.shape)


def _as_dask_images(images, model, chunk_size, client):
    import dask.array as da

    if isinstance(images, da.Array):
        x = images
    elif isinstance(images, np.ndarray):
        _check_image_shape(images, model)  # before anything is sent anywhere
        if images.shape[0] == 0:
            raise ValueError(f"images is empty: shape {images.shape}; expected at least one")
        rows = chunk_size or _rows_per_chunk(images)
        source = _file_rows(images)
        if source is None and client is not None:
            # straight to the workers, chunk by chunk: in the graph they would
            # all pass through the scheduler
            starts = range(0, images.shape[0], rows)
            parts = client.scatter([np.ascontiguousarray(images[a:a + rows]) for a in starts],
                                   hash=False)
            x = da.concatenate([da.from_delayed(part, (min(rows, images.shape[0] - a),)
                                                + images.shape[1:], images.dtype)
                                for a, part in zip(starts, parts)])
        else:
            x = da.from_array(np.ascontiguousarray(images) if source is None else source,
                              chunks=(rows,) + images.shape[1:])
    else:
        raise TypeError(f"images must be a Dask array or a NumPy array (N, C, H, W), "
                        f"got {type(images).__name__}")
    _check_image_shape(x, model)
    x = x.rechunk({1: -1, 2: -1, 3: -1} if chunk_size is None or not isinstance(images, da.Array)
                  else {0: chunk_size, 1: -1, 2: -1, 3: -1})
    return x


def _check_image_shape(x, model):
    if x.ndim != 4 or tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, model.input_shape))}) "
                         f"for this model, got {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"images must be floating point (float32 or float64), got {x.dtype}")


def _rows_per_chunk(images):
    # about 32 MB of images per task
    return max(1, (32 << 20) // max(1, images[:1].nbytes))


def _scores_block(block, model, batch_size, threads):
    if block.shape[0] == 0:  # Dask arrays may have empty blocks (after a mask)
        return np.empty((0,) + model.output_shape, model.dtype)
    with _kernel_threads(threads, exclusive=True):
        return model.predict_scores(block, batch_size)


def _labels_block(scores):
    # as Sequential.predict: the first largest score
    return np.argmax(scores, axis=1).astype(np.int64)


def _proba_block(scores, loss):
    return scores_to_proba(scores.copy(), loss)


def predict(model, images, client=None, *, proba=False, chunk_size=None, batch_size=256,
            threads=None):
    """Class labels of `images` as a Dask array, computed block by block.

    Parameters
    ----------
    model : fastcnn.Sequential
        Sent to the workers once: scattered (broadcast) through `client`, or,
        without one, a single key of the graph that every block refers to;
        either way a copy as it is now, so training it further does not
        change the result.
    images : dask.array.Array or numpy.ndarray, (N, C, H, W) floating point
        A NumPy array is split into chunks of `chunk_size` images. A memory-
        mapped one (np.load(path, mmap_mode="r")) is read by the workers from
        its file, which must then be on a filesystem they share; any other
        is scattered to the workers chunk by chunk when predict is called
        (a worker lost before the compute loses its chunks: for work that
        must survive that, use a file or a Dask array).
    client : distributed.Client or None
        The client whose workers get the model; None: the Client made last in
        this process, if any, else the model stays in the graph (Dask's local
        threaded scheduler then computes it).
    proba : bool
        Also return the probabilities (Sequential.predict_proba), computed
        from the same scores.
    chunk_size : int, optional
        Images per task (default: about 32 MB of images; a Dask array keeps
        its chunks unless this is given).
    batch_size : int
        Images per forward pass inside a task.
    threads : int, optional
        Kernel threads per task; default: all of the worker's (each worker
        process computes one block at a time).

    Returns
    -------
    labels : dask.array.Array (N,) int64
        Equal to model.predict(images), element for element.
    proba : dask.array.Array (N, K), only with proba=True
        Equal to model.predict_proba(images).

    The arrays are lazy: compute them (labels.compute(), dask.compute(labels,
    proba), or store them with da.to_npy_stack / to_zarr) while the client is
    open.
    """
    import dask

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastcnn.Sequential, got {type(model).__name__}")
    model.num_classes  # noqa: B018 - raises for a model that does not classify
    model.check_parameters()
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size")
    batch_size = check_int(batch_size, "batch_size")
    if threads is not None:
        threads = check_count(threads, "threads")
    if isinstance(client, str):
        raise TypeError("predict returns lazy arrays, computed after it returns: pass a "
                        f"distributed.Client (or None), not {client!r}")
    with _connect(client) as c:
        x = _as_dask_images(images, model, chunk_size, c)
        # a copy, as it is now, either way: training the model further does
        # not change what these arrays compute
        shared = (c.scatter(model, broadcast=True, hash=False) if c is not None
                  else dask.delayed(pickle.loads(pickle.dumps(model)), pure=False))
    # meta: the type of each block, which Dask would otherwise find by
    # calling the functions on empty arrays (and a model not yet here)
    k = model.output_shape[0]
    rows = np.empty((0, k), model.dtype)
    scores = x.map_blocks(_scores_block, shared, batch_size, threads, drop_axis=[2, 3],
                          chunks=(x.chunks[0], (k,)), meta=rows, token="fastcnn-scores")
    labels = scores.map_blocks(_labels_block, drop_axis=1, meta=np.empty(0, np.int64),
                               token="fastcnn-labels")
    if not proba:
        return labels
    return labels, scores.map_blocks(_proba_block, model.loss, meta=rows, token="fastcnn-proba")
