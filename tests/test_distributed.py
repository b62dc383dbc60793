"""fastcnn.distributed: sweeps and batch prediction on a real Dask LocalCluster
(worker processes on 127.0.0.1), checked against the same work done here,
serially; a worker killed mid-sweep; the `fastcnn sweep` command."""

import csv
import math
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_cli import run as run_cli

import fastcnn
from fastcnn import distributed as fd
from helpers import need
from test_datasets import write_split

try:
    import dask
    import dask.array as da
    import distributed
except ImportError:
    dask = da = distributed = None


@pytest.fixture(scope="module", autouse=True)
def _need_dask():
    need(distributed is not None, "dask[distributed] is not installed "
         "(pip install 'fastcnn[distributed]')")


def _images(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    # labels a small CNN can learn something of: the brighter quadrant
    q = x[:, 0].reshape(n, 2, 14, 2, 14).mean(axis=(2, 4)).reshape(n, 4)
    return x, np.argmax(q, axis=1) + 3 * (x[:, 0, 14, 14] > 0.5)


@pytest.fixture(scope="module")
def data():
    x, y = _images(300, 0)
    x_test, y_test = _images(100, 1)
    return x, y, x_test, y_test


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, as a small real cluster."""
    if distributed is None:
        pytest.skip("no dask")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as c:
        yield c


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


GRID = {"lr": [0.5, 2.0], "batch_size": [10, 50]}


def _lenet(seed, **kwargs):
    return fastcnn.models.lenet5(seed=seed, **kwargs)


def _same_records(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.same_result(rb), (ra, rb)


# ------------------------------------------------------------------- grids
def test_expand_grid_product_and_union():
    assert fd.expand_grid({"lr": [1, 2], "batch_size": [10, 50]}) == [
        {"lr": 1, "batch_size": 10}, {"lr": 1, "batch_size": 50},
        {"lr": 2, "batch_size": 10}, {"lr": 2, "batch_size": 50}]
    assert fd.expand_grid([{"lr": [1]}, {"lr": 3, "optimizer": ("adam",)}]) == [
        {"lr": 1}, {"lr": 3, "optimizer": "adam"}]
    assert fd.expand_grid({"lr": np.array([0.5, 1.0])}) == [{"lr": 0.5}, {"lr": 1.0}]
    assert type(fd.expand_grid({"lr": np.array([0.5])})[0]["lr"]) is float
    assert fd.expand_grid({"activation": "tanh"}) == [{"activation": "tanh"}]


@pytest.mark.parametrize("grid, error, text", [
    ({"seed": [0, 1]}, ValueError, "seeds="),
    ({"lr": []}, ValueError, "empty"),
    ({1: [2]}, TypeError, "argument names"),
    ([], TypeError, "non-empty list"),
    ("lr=1", TypeError, "dict"),
])
def test_expand_grid_refuses(grid, error, text):
    with pytest.raises(error, match=text):
        fd.expand_grid(grid)


# ------------------------------------------------------------ serial sweep
def test_serial_sweep_is_fit_point_by_point(data):
    x, y, x_test, y_test = data
    result = fd.sweep(fastcnn.seed_cnn, GRID, data, client="serial", seeds=[0, 3])
    records, best = result
    assert [(r.point, r.seed) for r in records] == [
        (p, s) for p in fd.expand_grid(GRID) for s in (0, 3)]
    for r in records:
        model = fastcnn.seed_cnn(seed=r.seed)
        history = model.fit(x, y, batch_size=r.point["batch_size"], lr=r.point["lr"],
                            seed=r.seed, progress=False)
        assert r.status == "ok" and r.worker == "" and r.seconds > 0
        assert r.final_loss == history.epoch_loss[-1] and r.epoch_loss == history.epoch_loss
        assert r.test_error == model.evaluate(x_test, y_test)
        for name, p in model.params.items():
            np.testing.assert_array_equal(r.parameters[name], p)
    scores = [r.test_error for r in records]
    assert result.best_record is records[scores.index(min(scores))]
    for name, p in best.params.items():
        np.testing.assert_array_equal(p, result.best_record.parameters[name])


def test_grid_arguments_reach_build_and_the_optimiser(data):
    x, y = data[:2]
    grid = {"activation": ["relu", "tanh"], "optimizer": "adam", "lr": 1e-3,
            "weight_decay": [0.0, 1e-4], "epochs": 2}
    records = fd.sweep(_lenet, grid, (x, y), client="serial").records
    assert len(records) == 4
    r = records[3]
    model = _lenet(0, activation="tanh")
    model.fit(x, y, epochs=2, optimizer=fastcnn.Adam(model, lr=1e-3, weight_decay=1e-4),
              progress=False)
    for name, p in model.params.items():
        np.testing.assert_array_equal(r.parameters[name], p)
    assert len(r.epoch_loss) == 2
    # without test data the best run is the one with the lowest final loss
    assert math.isnan(r.test_error)
    best = fd.sweep(_lenet, grid, (x, y), client="serial").best_record
    assert best.final_loss == min(r.final_loss for r in records)


def test_a_diverging_point_is_recorded_not_raised(data):
    grid = {"optimizer": "sgd", "lr": [0.05, 1e30]}
    result = fd.sweep(_lenet, grid, data, client="serial")
    ok, diverged = result.records
    assert ok.status == "ok" and diverged.status == "diverged"
    assert "diverged" in diverged.message and math.isnan(diverged.final_loss)
    assert math.isnan(diverged.test_error) and diverged.epoch_loss == []
    assert result.best_record is ok
    result = fd.sweep(_lenet, {"optimizer": "sgd", "lr": 1e30}, data, client="serial")
    assert result.best is None and result.best_record is None


def test_to_csv(data, tmp_path):
    result = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0], "batch_size": [25, 50]}, data,
                      client="serial", seeds=2)
    path = tmp_path / "out" / "sweep.csv"
    result.to_csv(path)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["lr", "batch_size", "seed", "status", "final_loss", "test_error",
                             "seconds", "threads", "worker", "message"]
    assert [(float(r["lr"]), int(r["batch_size"]), int(r["seed"])) for r in rows] == [
        (1.0, 25, 0), (1.0, 25, 1), (1.0, 50, 0), (1.0, 50, 1)]
    for row, rec in zip(rows, result.records):
        assert float(row["final_loss"]) == rec.final_loss  # repr: exact
        assert float(row["test_error"]) == rec.test_error
    assert os.listdir(path.parent) == ["sweep.csv"]


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(build="seed_cnn"), TypeError, "build must be a function"),
    (dict(build=lambda seed: "model"), TypeError, "must return a fastcnn.Sequential"),
    (dict(grid={"activation": ["relu"]}), TypeError, "passed to build"),
    (dict(grid={"optimizer": "rmsprop"}), ValueError, "optimizer must be one of"),
    (dict(grid={"optimizer": "adam", "momentum": 0.9}), ValueError, "Adam has betas"),
    (dict(grid={"epochs": [1, 0]}), ValueError, "epochs"),
    (dict(grid={"batch_size": 2.5}), TypeError, "batch_size"),
    (dict(grid={"lr": [1.0, -1.0]}), ValueError, "lr"),
    (dict(data=(1, 2, 3)), TypeError, "data must be"),
    (dict(data="images.npy"), TypeError, "data must be"),
    (dict(data=(np.zeros((5, 1, 28, 28)), np.zeros(4, int))), ValueError, "5 images but y 4"),
    (dict(data=(np.zeros((5, 1, 32, 32)), np.zeros(5, int))), ValueError, "x"),
    (dict(data=(np.zeros((5, 1, 28, 28)), np.full(5, 10))), ValueError, "y"),
    (dict(data=(np.zeros((5, 1, 28, 28)), np.zeros(5, int), np.zeros((2, 1, 28, 28)),
                np.full(2, -1))), ValueError, "y_test"),
    (dict(seeds=0), ValueError, "seeds"),
    (dict(seeds=[1, 1]), ValueError, "repeats"),
    (dict(seeds=[-1]), ValueError, "seed"),
    (dict(seeds=True), TypeError, "seeds"),
    (dict(threads=0), ValueError, "threads"),
    (dict(client=42), TypeError, "client must be"),
    (dict(workers=2), ValueError, "client='local'"),
    (dict(client="local", threads_per_worker=0), ValueError, "threads_per_worker"),
])
def test_sweep_refuses_bad_arguments(data, kwargs, error, text):
    args = dict(build=fastcnn.seed_cnn, grid={"lr": [1.0]}, data=data[:2], client="serial")
    args.update(kwargs)
    with pytest.raises(error, match=text):
        fd.sweep(**args)


def test_bad_run_arguments_are_refused_before_any_run(data):
    calls = []

    def build(seed):
        calls.append(seed)
        return fastcnn.seed_cnn(seed=seed)

    for grid in ({"lr": [1.0], "epochs": [2, 0]}, {"lr": [1.0, -2.0]}):
        calls.clear()
        with pytest.raises(ValueError):
            fd.sweep(build, grid, data, client="serial", seeds=2)
        assert calls == [0]  # the check's build only: no run started


def test_threads_apply_to_the_run_not_the_process(data):
    before = fastcnn.get_num_threads()
    records = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client="serial", threads=1).records
    assert records[0].threads == 1 and fastcnn.get_num_threads() == before


def test_unreachable_scheduler_is_a_clear_error(data):
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConnectionError, match="no Dask scheduler answered at"):
            fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client="tcp://127.0.0.1:9")


# ---------------------------------------------------------- on the cluster
def test_sweep_on_a_cluster_equals_the_serial_sweep(client, data):
    serial = fd.sweep(fastcnn.seed_cnn, GRID, data, client="serial", seeds=2)
    result = fd.sweep(fastcnn.seed_cnn, GRID, data, client=client, seeds=2, progress=True)
    _same_records(serial.records, result.records)
    workers = set(client.scheduler_info()["workers"])
    assert {r.worker for r in result.records} <= workers
    assert all(r.worker and r.threads == 1 for r in result.records)
    assert result.best_record.same_result(serial.best_record)
    # the default client is the one made last in this process
    _same_records(serial.records,
                  fd.sweep(fastcnn.seed_cnn, GRID, data, seeds=2).records)


def test_cluster_sweep_with_adam_and_a_loader(client, data):
    grid = {"optimizer": "adam", "lr": [1e-3, 3e-3], "pooling": ["max", "mean"]}
    serial = fd.sweep(_lenet, grid, data, client="serial")
    # a function as data runs where the runs are: here, on the workers
    result = fd.sweep(_lenet, grid, _load_data, client=client)
    _same_records(serial.records, result.records)
    assert {r.worker for r in result.records} <= set(client.scheduler_info()["workers"])


def _load_data():
    x, y = _images(300, 0)
    x_test, y_test = _images(100, 1)
    return x, y, x_test, y_test


def test_threads_per_run_follow_the_worker(data):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        records = fd.sweep(fastcnn.seed_cnn, GRID, data, client=c).records
        assert {r.threads for r in records} == {2 if fastcnn.openmp_enabled() else 1}
        records1 = fd.sweep(fastcnn.seed_cnn, GRID, data, client=c, threads=1).records
        assert {r.threads for r in records1} == {1}
    _same_records(records, records1)


def test_an_error_in_a_run_names_it_and_keeps_the_others(client, data):
    with pytest.raises(fd.SweepError, match=r"the run of \{'lr': 1.0\} with seed 1 failed: "
                                            r"ValueError: broken on a worker") as e:
        fd.sweep(_fail_on_workers, {"lr": [1.0]}, data, client=client, seeds=2)
    assert len(e.value.records) == 2 and e.value.records[1] is None
    first = e.value.records[0]
    if first is not None:  # it may have been cancelled before it finished
        serial = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client="serial")
        assert first.same_result(serial.records[0])


def test_a_failed_serial_run_keeps_the_others(data):
    def build(seed):
        if seed == 1:
            raise ValueError("no model for seed 1")
        return fastcnn.seed_cnn(seed=seed)

    with pytest.raises(fd.SweepError, match="seed 1 failed: ValueError: no model for seed 1 "
                                            r"\(1 of 3 runs had finished") as e:
        fd.sweep(build, {"lr": [1.0]}, data, client="serial", seeds=3)
    first, second, third = e.value.records
    assert first.status == "ok" and second is None and third is None


def test_a_scheduler_without_workers_is_a_clear_error(data, monkeypatch):
    monkeypatch.setattr(fd, "WORKER_WAIT_SECONDS", 1)
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        with pytest.raises(TimeoutError, match="no Dask worker joined the scheduler"):
            fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client=c)


def test_client_local_starts_and_stops_a_cluster(data):
    serial = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client="serial", seeds=2)
    result = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0]}, data, client="local", seeds=2)
    _same_records(serial.records, result.records)
    assert all(r.worker.startswith("tcp://") for r in result.records)
    assert distributed.client._get_global_client() is None or \
        distributed.client._get_global_client().status != "running"


def test_client_local_with_its_size(data):
    """client="local" with workers and threads_per_worker: a cluster of that
    size for the call (as `fastcnn sweep --workers` asks), the same records."""
    serial = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0, 0.5]}, data, client="serial")
    result = fd.sweep(fastcnn.seed_cnn, {"lr": [1.0, 0.5]}, data, client="local", workers=1,
                      threads_per_worker=1)
    _same_records(serial.records, result.records)
    assert len({r.worker for r in result.records}) == 1
    assert all(r.threads == 1 for r in result.records)


def _fail_on_workers(seed):
    if seed == 1 and fd._worker_threads() is not None:
        raise ValueError("broken on a worker")
    return fastcnn.seed_cnn(seed=seed)


class _DieOnce:
    """build() that kills its worker process (SIGKILL, no clean-up) the first
    time it builds seed 1 on a worker; the marker file remembers."""

    def __init__(self, marker):
        self.marker = marker

    def __call__(self, seed, **kwargs):
        if seed == 1 and fd._worker_threads() is not None and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return fastcnn.seed_cnn(seed=seed, **kwargs)


def test_a_killed_worker_costs_time_not_results(data, tmp_path):
    serial = fd.sweep(fastcnn.seed_cnn, GRID, data, client="serial", seeds=2)
    marker = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        before = set(c.scheduler_info()["workers"])
        result = fd.sweep(_DieOnce(str(marker)), GRID, data, client=c, seeds=2)
        c.wait_for_workers(2, timeout=60)
        after = set(c.scheduler_info()["workers"])
    assert marker.exists()  # a worker did die, in the middle of the sweep
    assert before != after  # and its nanny started a new one
    _same_records(serial.records, result.records)


# ----------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def trained(data):
    x, y = data[:2]
    mse = fastcnn.seed_cnn(seed=1)
    mse.fit(x, y, progress=False)
    ce = fastcnn.models.lenet5(seed=2)
    ce.fit(x, y, optimizer=fastcnn.Adam(ce), progress=False)
    return {"mse": mse, "cross_entropy": ce}


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_predict_on_a_cluster_equals_predict(client, trained, loss):
    model = trained[loss]
    x, _ = _images(1000, 5)
    labels, proba = fd.predict(model, x, client=client, chunk_size=128, proba=True)
    assert labels.chunks == ((128,) * 7 + (104,),) and proba.shape == (1000, 10)
    got_labels, got_proba = dask.compute(labels, proba)
    np.testing.assert_array_equal(got_labels, model.predict(x))
    np.testing.assert_array_equal(got_proba, model.predict_proba(x))
    assert got_labels.dtype == np.int64


def test_predict_dask_array_keeps_its_chunks(client, trained):
    model = trained["mse"]
    x, _ = _images(700, 6)
    images = da.from_array(x, chunks=(100, 1, 14, 28))
    labels = fd.predict(model, images, client=client)
    assert labels.chunks == ((100,) * 7,)
    np.testing.assert_array_equal(labels.compute(), model.predict(x))
    labels = fd.predict(model, images, client=client, chunk_size=300)
    assert labels.chunks == ((300, 300, 100),)
    np.testing.assert_array_equal(labels.compute(), model.predict(x))


def test_predict_scatters_the_model_once(client, trained):
    model = trained["cross_entropy"]
    x, _ = _images(2000, 7)
    labels = fd.predict(model, x, client=client, chunk_size=100)
    graph = dict(labels.__dask_graph__())
    blocks = [task for key, task in graph.items() if key[0].startswith("fastcnn-scores")]
    # every block depends on its images and on one key that is not in the
    # graph: the model, already on every worker
    shared = {dep for task in blocks for dep in task.dependencies if not isinstance(dep, tuple)}
    assert len(blocks) == 20 and len(shared) == 1
    [key] = shared
    assert key not in graph
    assert len(client.who_has()[key]) == len(client.scheduler_info()["workers"]) == 2
    # nor the images: they went to the workers, chunk by chunk
    assert len(pickle.dumps(graph)) < x.nbytes // 10
    np.testing.assert_array_equal(labels.compute(), model.predict(x))


def test_predict_memory_mapped_file_is_read_by_the_workers(client, trained, tmp_path):
    model = trained["mse"]
    x, _ = _images(1500, 8)
    path = tmp_path / "images.npy"
    np.save(path, x)
    images = np.load(path, mmap_mode="r")
    expected = model.predict(x)
    for view, rows in ((images, slice(None)), (images[37:], slice(37, None)),
                       (images[5:900], slice(5, 900))):
        labels = fd.predict(model, view, client=client, chunk_size=256)
        # the graph carries a path and an offset, not the images
        assert len(pickle.dumps(dict(labels.__dask_graph__()))) < view.nbytes // 10
        np.testing.assert_array_equal(labels.compute(), expected[rows])
    # a view that is not one run of the file goes with the tasks instead
    labels = fd.predict(model, images[::2], client=client, chunk_size=256)
    np.testing.assert_array_equal(labels.compute(), expected[::2])
    # a file that changes after predict() is noticed, not read half old, half new
    labels = fd.predict(model, images, client=client, chunk_size=256)
    np.save(path, x[::-1].copy())
    os.utime(path, ns=(1, 1))
    with pytest.raises(RuntimeError, match="changed after predict"):
        labels.compute()
    # a file cut short behind the same modification time, too
    labels = fd.predict(model, np.load(path, mmap_mode="r"), client=client, chunk_size=256)
    stamp = os.stat(path).st_mtime_ns
    os.truncate(path, os.path.getsize(path) // 2)
    os.utime(path, ns=(stamp, stamp))
    with pytest.raises(RuntimeError, match="changed after predict"):
        labels.compute()
    np.save(path, x)
    # one the workers cannot open says why
    labels = fd.predict(model, np.load(path, mmap_mode="r"), client=client, chunk_size=256)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="filesystem they share"):
        labels.compute()


def test_predict_without_a_cluster(trained):
    model = trained["cross_entropy"]
    x, _ = _images(500, 9)
    assert distributed.client._get_global_client() is None
    labels, proba = fd.predict(model, x, chunk_size=64, proba=True)
    np.testing.assert_array_equal(labels.compute(), model.predict(x))
    np.testing.assert_array_equal(proba.compute(), model.predict_proba(x))


def test_predict_uses_the_model_as_it_was_when_called(client, trained):
    model = pickle.loads(pickle.dumps(trained["mse"]))
    x, y = _images(400, 10)
    before = model.predict(x)
    lazy = [fd.predict(model, x, chunk_size=100), fd.predict(model, x, client=client)]
    model.fit(x, y, lr=5.0, progress=False)
    assert not np.array_equal(model.predict(x), before)
    for labels in lazy:
        np.testing.assert_array_equal(labels.compute(), before)


def test_predict_empty_and_unknown_size_blocks(client, trained):
    model = trained["mse"]
    x, _ = _images(300, 11)
    images = da.from_array(x, chunks=(50, 1, 28, 28))
    bright = images.mean(axis=(1, 2, 3)) > 0.5  # some blocks keep nothing
    picked = images[bright]
    assert np.isnan(picked.shape[0])
    keep = x.mean(axis=(1, 2, 3)) > 0.5
    np.testing.assert_array_equal(fd.predict(model, picked, client=client).compute(),
                                  model.predict(x[keep]))
    nothing = images[images.mean(axis=(1, 2, 3)) > 2]
    assert fd.predict(model, nothing, client=client).compute().shape == (0,)


def test_predict_refuses_bad_input(trained):
    model = trained["mse"]
    x, _ = _images(10, 0)
    cases = [
        (dict(images=x[:, :, :20]), ValueError, r"shape \(N, 1, 28, 28\)"),
        (dict(images=x[0]), ValueError, "shape"),
        (dict(images=x[:0]), ValueError, "empty"),
        (dict(images=(x * 255).astype(np.uint8)), TypeError, "floating point"),
        (dict(images=x.tolist()), TypeError, "Dask array or a NumPy array"),
        (dict(model="model.npz"), TypeError, "fastcnn.Sequential"),
        (dict(client="tcp://127.0.0.1:8786"), TypeError, "distributed.Client"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(batch_size=-1), ValueError, "batch_size"),
        (dict(threads=0), ValueError, "threads"),
    ]
    for kwargs, error, text in cases:
        args = dict(model=model, images=x)
        args.update(kwargs)
        with pytest.raises(error, match=text):
            fd.predict(**args)
    broken = fastcnn.seed_cnn()
    broken.params["FC.bias"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fd.predict(broken, x)


# --------------------------------------------------------------------- CLI
def test_cli_sweep_on_an_existing_cluster_equals_serial(cluster, tmp_path):
    data = tmp_path / "data"
    write_split(data, 200, "train")
    write_split(data, 60, "test", rng=np.random.default_rng(1))
    common = ["sweep", "--dataset", "mnist", "--data-dir", str(data), "--lr", "0.5,1",
              "--batch-size", "20,50", "--seeds", "2"]
    tables = {}
    for scheduler in ("serial", cluster.scheduler_address, "local"):
        out = tmp_path / f"sweep-{len(tables)}.csv"
        extra = ["--workers", "2"] if scheduler == "local" else []
        r = run_cli(*common, "--scheduler", scheduler, "--csv", str(out),
                    "--save-best", str(tmp_path / "best.npz"), *extra)
        assert r.returncode == 0, r.stderr
        assert "8 runs of seed_cnn" in r.stdout and "best run: test error" in r.stdout
        assert "<- best" in r.stdout and f"wrote 8 rows to {out}" in r.stdout
        with open(out) as f:
            rows = list(csv.DictReader(f))
        tables[scheduler] = [(row["lr"], row["batch_size"], row["seed"], row["final_loss"],
                              row["test_error"]) for row in rows]
        workers = {row["worker"] for row in rows}
        assert (workers == {""}) == (scheduler == "serial")
    first, *others = tables.values()
    assert len(first) == 8 and all(t == first for t in others)
    best = fastcnn.load(tmp_path / "best.npz")
    assert best.num_parameters() == 3898


def test_cli_sweep_reports_a_diverged_run(tmp_path):
    data = tmp_path / "data"
    write_split(data, 100, "train")
    write_split(data, 30, "test", rng=np.random.default_rng(1))
    out = tmp_path / "sweep.csv"
    r = run_cli("sweep", "--model", "lenet5", "--optimizer", "sgd", "--lr", "1e30,0.01",
                "--seeds", "2", "--dataset", "mnist", "--data-dir", str(data),
                "--scheduler", "serial", "--csv", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("diverged") == 2
    assert "best mean test error over seeds" in r.stdout and "at lr=0.01" in r.stdout
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["diverged", "diverged", "ok", "ok"]
    assert "try a smaller learning rate" in rows[0]["message"]


def test_cli_sweep_writes_csv_only_when_asked_and_draws_no_bar_into_logs(tmp_path):
    data = tmp_path / "data"
    write_split(data, 60, "train")
    write_split(data, 20, "test", rng=np.random.default_rng(1))
    r = subprocess.run([sys.executable, "-m", "fastcnn", "sweep", "--dataset", "mnist",
                        "--data-dir", str(data), "--lr", "0.5,1", "--scheduler", "serial"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 runs of seed_cnn" in r.stdout and "wrote" not in r.stdout
    assert os.listdir(tmp_path) == ["data"]  # no sweep.csv left behind
    assert "run/s" not in r.stderr and "sweep:" not in r.stderr  # stderr is a pipe: no bar


@pytest.mark.parametrize("args, status, text", [
    (["--lr", "0.1,x"], 2, "positive number"),
    (["--lr", "1,1"], 2, "repeats"),
    (["--batch-size", "0"], 2, "positive integer"),
    (["--seeds", "0"], 2, "positive integer"),
    (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], 1, "--workers"),
    (["--scheduler", "serial", "--threads-per-worker", "2"], 1, "do not apply"),
])
def test_cli_sweep_errors(args, status, text):
    r = run_cli("sweep", *args)
    assert r.returncode == status
    assert text in r.stderr
