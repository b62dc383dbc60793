"""One model used from several Python threads at once: every forward pass
gives exactly its serial result, and training is never disturbed by
predictions (the model's lock, fastcnn._threads.SharedLock)."""

import threading

import numpy as np
import pytest

import fastcnn
from fastcnn import _blas, _threads, _workspace
from fastcnn.callbacks import Callback
from fastcnn.models import lenet5


def run_in_threads(fn, count):
    """fn(i) in `count` threads started together; their results, in order."""
    results, errors = [None] * count, []
    start = threading.Barrier(count)

    def work(i):
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    if errors:
        raise errors[0]
    return results


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.random((300, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    return x, y


def trained(build, data, **kwargs):
    x, y = data
    model = build(seed=1, **kwargs)
    model.fit(x[:200], y[:200], epochs=1, batch_size=20, progress=False,
              **({"optimizer": fastcnn.Adam(model)} if build is lenet5 else {}))
    return model


@pytest.mark.parametrize("build, kwargs", [
    (fastcnn.seed_cnn, {}),
    (fastcnn.seed_cnn, {"algorithm": "im2col"}),
    (fastcnn.seed_cnn, {"algorithm": "fft"}),
    (lenet5, {}),
], ids=["seed_cnn", "seed_cnn-im2col", "seed_cnn-fft", "lenet5"])
def test_four_threads_evaluating_equal_the_serial_value(build, kwargs, data):
    x, y = data
    model = trained(build, data, **kwargs)
    serial = model.evaluate(x, y, batch_size=64)
    proba = model.predict_proba(x[:50], batch_size=16)
    # several batch sizes, so that calls need workspaces of different sizes
    results = run_in_threads(
        lambda i: [model.evaluate(x, y, batch_size=(64, 33, 64, 100)[i]) for _ in range(20)], 4)
    assert all(r == serial for calls in results for r in calls), (serial, results)
    more = run_in_threads(lambda i: [model.predict_proba(x[:50], batch_size=16),
                                     model.forward(x[:7 + i]),
                                     model.activations(x[:3])["C1"]], 4)
    for i, (p, out, maps) in enumerate(more):
        np.testing.assert_array_equal(p, proba)
        np.testing.assert_array_equal(out, model.forward(x[:7 + i]))
        np.testing.assert_array_equal(maps, model.activations(x[:3])["C1"])


class Snapshots(Callback):
    """The parameters after every step of a fit, as flat vectors."""

    def __init__(self):
        self.after = []

    def on_train_begin(self, model, history):
        self.after.append(model.flat_params.copy())

    def on_batch_end(self, epoch, batch, loss, model):
        self.after.append(model.flat_params.copy())


def test_fit_while_another_thread_predicts(data):
    """fit's result is bit for bit that of an undisturbed fit, and every
    prediction made meanwhile is that of the parameters between two steps."""
    x, y = data
    alone = lenet5(seed=3)
    alone.fit(x, y, epochs=2, batch_size=25, seed=4, progress=False,
              optimizer=fastcnn.Adam(alone))

    model = lenet5(seed=3)
    snapshots, done, seen = Snapshots(), threading.Event(), []

    def predict_until_done(i):
        if i == 0:
            try:
                model.fit(x, y, epochs=2, batch_size=25, seed=4, progress=False,
                          optimizer=fastcnn.Adam(model), callbacks=[snapshots])
            finally:
                done.set()
        else:
            while not done.is_set():
                seen.append(model.predict_scores(x[:40], batch_size=16))

    run_in_threads(predict_until_done, 2)
    for name, p in alone.params.items():
        np.testing.assert_array_equal(model.params[name], p)
    assert seen
    # the scores each set of parameters gives, to match every prediction against
    probe = lenet5(seed=0)
    expected = []
    for flat in snapshots.after:
        probe.flat_params[...] = flat
        expected.append(probe.predict_scores(x[:40], batch_size=16))
    for scores in seen:
        assert any(np.array_equal(scores, e) for e in expected), \
            "a prediction saw parameters in the middle of a step"


def test_backprop_from_two_threads_is_one_at_a_time(data):
    x, y = data
    model = fastcnn.seed_cnn(seed=2)
    losses = {i: model.backprop(x[i * 50:(i + 1) * 50], y[i * 50:(i + 1) * 50]) for i in (0, 1)}
    results = run_in_threads(
        lambda i: [(model.backprop(x[i * 50:(i + 1) * 50], y[i * 50:(i + 1) * 50]),
                    model.flat_grads.copy()) for _ in range(10)], 2)
    for i, calls in enumerate(results):
        assert all(loss == losses[i] for loss, _ in calls)


def test_shared_lock_rules():
    lock = _threads.SharedLock()
    order = []
    with lock.reading():
        with lock.reading():  # a thread may nest its reads
            pass
        with pytest.raises(RuntimeError, match="cannot train a model inside"):
            with lock.writing():
                pass
    with lock.writing():
        with lock.writing(), lock.reading():  # nor do the writer's own blocks wait
            order.append("nested")

    # a writer waits for the readers in their blocks, and readers for a writer
    reading, release = threading.Event(), threading.Event()

    def reader():
        with lock.reading():
            reading.set()
            release.wait(10)
            order.append("read")

    def writer():
        reading.wait(10)
        with lock.writing():
            order.append("write")

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    reading.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["nested", "read", "write"]


def test_blas_runs_on_one_thread_in_every_calling_thread():
    """A product big enough for OpenBLAS to split among threads gives, inside
    single_threaded() in four threads at once, what it gives in the main
    thread; the process's BLAS setting is the same afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    a, b = rng.random((12, 150)).astype(np.float32), rng.random((150, 8192)).astype(np.float32)
    with _blas.single_threaded():
        one = a @ b

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    before = blas_threads()

    def products(i):
        with _blas.single_threaded():
            return [a @ b for _ in range(5)]

    for calls in run_in_threads(products, 4):
        for c in calls:
            np.testing.assert_array_equal(c, one)
    assert blas_threads() == before


def test_workspaces_are_kept_within_a_budget(data, monkeypatch):
    x, _ = data
    model = fastcnn.seed_cnn()
    for batch_size in (1, 7, 50, 256, 3):
        model.predict(x, batch_size=batch_size)
    model.backprop(x[:10], np.zeros(10, int))
    pool = model._workspaces
    assert len(pool._idle) <= pool.KEEP
    monkeypatch.setattr(_workspace.WorkspacePool, "KEEP_BYTES", 1000)
    pool.clear()
    model.predict(x, batch_size=256)
    assert pool._idle == []  # too big to keep


def test_a_model_is_freed_when_its_last_reference_goes(data):
    """No reference cycle: without the garbage collector, a model and its
    idle workspaces go when the last reference does."""
    import gc
    import weakref

    x, _ = data
    gc.disable()
    try:
        model = fastcnn.seed_cnn()
        model.predict(x[:10])
        ref = weakref.ref(model)
        del model
        assert ref() is None
    finally:
        gc.enable()


def test_a_layer_on_its_own_keeps_its_thread_count(threads, rng):
    """forward and backward of a layer used alone run on the same thread
    count, whatever set_num_threads says in between."""
    x = rng.random((5, 3, 12, 12))
    g = rng.standard_normal((5, 4, 10, 10))
    results = []
    for algorithm in ("direct", "im2col"):
        for change in (False, True):
            fastcnn.set_num_threads(1)
            layer = fastcnn.Conv2D(3, 4, 3, activation="sigmoid", algorithm=algorithm, name="c")
            layer.build((3, 12, 12), "float64")
            layer.reset_parameters(np.random.default_rng(0))
            layer.forward(x)
            if change:
                fastcnn.set_num_threads(2)
            results.append((layer.backward(g), layer.grads["weight"].copy()))
    for dx, dw in results[1:]:
        np.testing.assert_allclose(dx, results[0][0], rtol=1e-10)
        np.testing.assert_allclose(dw, results[0][1], rtol=1e-10)


def test_train_batch_says_what_it_needs(data):
    x, y = data
    model = fastcnn.seed_cnn()
    t = np.eye(10, dtype=np.float32)[y[:8]]
    with pytest.raises(ValueError, match="train=True"):
        model.train_batch(x[:8], t, model.workspace(8))
    ws = model.workspace(8, train=True)
    with pytest.raises(ValueError, match="float32"):
        model.train_batch(x[:8].astype(np.float64), t, ws)
    with pytest.raises(ValueError, match="targets"):
        model.train_batch(x[:8], t[:, :5].copy(), ws)
    with pytest.raises(ValueError, match="cannot take 9"):
        model.train_batch(x[:9], np.eye(10, dtype=np.float32)[y[:9]], ws)
    assert np.isfinite(model.train_batch(x[:8], t, ws))
