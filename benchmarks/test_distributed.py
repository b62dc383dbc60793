"""Sweeps and batch prediction on Dask (fastcnn.distributed), next to the same
work done in this process. A sweep of 4 runs of the paper's network (lr 0.3
and 1, seeds 0 and 1, batch 50, one epoch over 60,000 images): serially with
every run on the suite's threads, and on a LocalCluster of one single-thread
worker per thread, started before each Dask benchmark and stopped after it
(the data's transfer to the workers is timed, the cluster's start is not). Inference over 100,000
images: model.predict here, and predict() over the cluster's workers, of an
array in memory (sent to them) and of a memory-mapped .npy (read by them).

    pytest benchmarks/test_distributed.py --benchmark-only
"""

import numpy as np
import pytest

import fastcnn
from fastcnn import bench

distributed = pytest.importorskip("distributed")
fd = pytest.importorskip("fastcnn.distributed")

GRID = {"lr": [0.3, 1.0], "batch_size": 50}


@pytest.fixture(scope="module")
def fashion():
    x, y, xt, _ = bench.data(60000, 10000, "float32")
    # test error measured on the first 10,000 training images: the same work
    return x, y, xt, x[:10000], y[:10000]


@pytest.fixture
def cluster_client(threads):
    # per test, so that no idle cluster shares the cores with the timings
    # done here (an OpenMP team waits at every barrier for a preempted thread)
    with distributed.LocalCluster(n_workers=threads, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("where", ["serial", "local"])
def test_sweep_4_runs(benchmark, where, threads, fashion, request):
    benchmark.group = "sweep-seed_cnn-4-runs"
    benchmark.extra_info.update(where=where, threads=threads, runs=4, images=60000)
    x, y, _, x_check, y_check = fashion
    data = (x, y, x_check, y_check)
    client = "serial" if where == "serial" else request.getfixturevalue("cluster_client")

    result = benchmark.pedantic(fd.sweep, args=(fastcnn.seed_cnn, GRID, data),
                                kwargs=dict(client=client, seeds=2), rounds=3, iterations=1,
                                warmup_rounds=0)
    assert [r.status for r in result.records] == ["ok"] * 4


@pytest.mark.parametrize("where", ["here", "dask", "dask-memmap"])
def test_predict_100k(benchmark, where, threads, fashion, request, tmp_path):
    x = np.concatenate([fashion[2]] * 10)
    model = fastcnn.seed_cnn(seed=0)
    model.fit(fashion[0][:6000], fashion[1][:6000], progress=False)
    benchmark.group = "predict-seed_cnn-100000"
    benchmark.extra_info.update(where=where, threads=threads, images=len(x))
    if where == "here":
        labels = benchmark.pedantic(model.predict, args=(x,), rounds=3, iterations=1,
                                    warmup_rounds=1)
    else:
        client = request.getfixturevalue("cluster_client")
        images = x
        if where == "dask-memmap":
            np.save(tmp_path / "x.npy", x)
            images = np.load(tmp_path / "x.npy", mmap_mode="r")
        # predict() too: an array in memory is sent to the workers there
        labels = benchmark.pedantic(
            lambda: fd.predict(model, images, client=client, chunk_size=10000).compute(),
            rounds=3, iterations=1, warmup_rounds=1)
    np.testing.assert_array_equal(labels, model.predict(x))
