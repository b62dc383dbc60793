"""fit's machinery: callbacks, early stopping, CSV log, checkpoints, resuming
bit for bit, and a clean stop on Ctrl-C (a real SIGINT)."""

import csv
import os
import signal

import numpy as np
import pytest

import fastcnn
from fastcnn.callbacks import Callback, CSVLogger, EarlyStopping


@pytest.fixture
def data(rng):
    x = rng.random((60, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 60)
    return x, y, x[:20], y[:20]


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, model, history):
        self.events.append(("begin", len(history.epoch_seconds)))

    def on_epoch_begin(self, epoch, model):
        self.events.append(("epoch", epoch))

    def on_batch_end(self, epoch, batch, loss, model):
        self.events.append(("batch", epoch, batch))

    def on_epoch_end(self, epoch, logs, model):
        self.events.append(("end", epoch, sorted(logs)))

    def on_train_end(self, model, history):
        self.events.append(("done",))


def test_callback_events(data):
    x, y, xv, yv = data
    rec = Recorder()
    fastcnn.seed_cnn(seed=0).fit(x, y, epochs=2, batch_size=25, progress=False,
                                 validation_data=(xv, yv), callbacks=[rec])
    keys = ["epoch", "loss", "seconds", "smoothed_loss", "val_error"]
    assert rec.events == [("begin", 0),
                          ("epoch", 1), ("batch", 1, 1), ("batch", 1, 2), ("batch", 1, 3),
                          ("end", 1, keys),
                          ("epoch", 2), ("batch", 2, 1), ("batch", 2, 2), ("batch", 2, 3),
                          ("end", 2, keys), ("done",)]
    with pytest.raises(TypeError, match="Callback"):
        fastcnn.seed_cnn().fit(x, y, progress=False, callbacks=[print])


def test_epoch_logs_match_history(data):
    x, y, xv, yv = data
    logs = []

    class Keep(Callback):
        def on_epoch_end(self, epoch, epoch_logs, model):
            logs.append(epoch_logs)

    h = fastcnn.seed_cnn().fit(x, y, epochs=3, batch_size=20, progress=False,
                               validation_data=(xv, yv), callbacks=[Keep()])
    for e, entry in enumerate(logs):
        assert entry["loss"] == pytest.approx(np.mean(h.loss[3 * e : 3 * e + 3]))
        assert entry["smoothed_loss"] == h.smoothed_loss[3 * e + 2]
        assert entry["val_error"] == h.val_error[e]
    assert h.epoch_loss == [entry["loss"] for entry in logs]


def test_early_stopping_stops_and_restores_the_best(data):
    x, y, xv, yv = data
    model = fastcnn.seed_cnn(seed=1)
    kept = {}

    class KeepEpochs(Callback):
        def on_epoch_end(self, epoch, logs, m):
            kept[epoch] = (logs["val_error"], m._flat_params.copy())

    # a huge learning rate: the validation error soon stops improving
    stop = EarlyStopping("val_error", patience=2)
    h = model.fit(x, y, epochs=30, batch_size=10, lr=5.0, progress=False,
                  validation_data=(xv, yv), callbacks=[KeepEpochs(), stop])
    assert 0 < stop.stopped_epoch < 30 and len(h.epoch_seconds) == stop.stopped_epoch
    assert stop.stopped_epoch == stop.best_epoch + 2
    assert stop.best == min(v for v, _ in kept.values())
    np.testing.assert_array_equal(model._flat_params, kept[stop.best_epoch][1])
    with pytest.raises(ValueError, match="validation_data"):
        fastcnn.seed_cnn().fit(x, y, epochs=2, progress=False, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping("accuracy")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_csv_logger(data, tmp_path):
    x, y, xv, yv = data
    path = tmp_path / "log.csv"
    h = fastcnn.seed_cnn().fit(x, y, epochs=3, batch_size=30, progress=False,
                               validation_data=(xv, yv), callbacks=[CSVLogger(path)])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_error"]) for r in rows] == h.val_error
    assert [float(r["loss"]) for r in rows] == h.epoch_loss
    assert os.listdir(tmp_path) == ["log.csv"]


def test_checkpoints_last_and_best(data, tmp_path):
    x, y, xv, yv = data
    model = fastcnn.seed_cnn(seed=2)
    h = model.fit(x, y, epochs=4, batch_size=20, lr=3.0, progress=False,
                  validation_data=(xv, yv), checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "last.npz"]
    last = fastcnn.load(tmp_path / "last.npz")
    assert_same(snapshot(last), snapshot(model))
    best, state, _ = fastcnn.io.load(tmp_path / "best.npz", with_training_state=True)
    assert state["epochs_done"] == int(np.argmin(h.val_error)) + 1
    assert best.evaluate(xv, yv) == min(h.val_error)


def test_resume_is_bit_for_bit(data, tmp_path):
    x, y, xv, yv = data
    straight = fastcnn.seed_cnn(seed=3)
    h_straight = straight.fit(x, y, epochs=5, batch_size=13, seed=7, progress=False,
                              validation_data=(xv, yv))
    first = fastcnn.seed_cnn(seed=3)
    first.fit(x, y, epochs=2, batch_size=13, seed=7, progress=False, validation_data=(xv, yv),
              checkpoint_dir=tmp_path)
    # a new process would start from a fresh model: any initialisation will do
    later = fastcnn.seed_cnn(seed=99)
    h = later.fit(x, y, epochs=5, batch_size=13, seed=7, progress=False,
                  validation_data=(xv, yv), checkpoint_dir=tmp_path, resume=True)
    assert_same(snapshot(later), snapshot(straight))
    assert h.loss == h_straight.loss and h.smoothed_loss == h_straight.smoothed_loss
    assert h.val_error == h_straight.val_error and h.epoch_loss == h_straight.epoch_loss


def test_resume_refuses_other_runs(data, tmp_path):
    x, y, xv, yv = data
    fastcnn.seed_cnn().fit(x, y, epochs=1, batch_size=20, progress=False, checkpoint_dir=tmp_path)
    args = dict(epochs=2, batch_size=20, progress=False, checkpoint_dir=tmp_path, resume=True)
    for change, match in [(dict(batch_size=10), "batch_size"), (dict(lr=0.5), "optimizer"),
                          (dict(seed=1), "seed")]:
        with pytest.raises(ValueError, match=match):
            fastcnn.seed_cnn().fit(x, y, **{**args, **change})
    with pytest.raises(ValueError, match="training data"):
        fastcnn.seed_cnn().fit(x[::-1], y[::-1], **args)
    with pytest.raises(ValueError, match="number of training images"):
        fastcnn.seed_cnn().fit(x[:40], y[:40], **args)
    with pytest.raises(ValueError, match="different architecture"):
        fastcnn.seed_cnn(dtype="float64").fit(x, y, **args)
    with pytest.raises(ValueError, match="needs the checkpoint_dir"):
        fastcnn.seed_cnn().fit(x, y, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fastcnn.seed_cnn().fit(x, y, **{**args, "checkpoint_dir": tmp_path / "empty"})
    os.makedirs(tmp_path / "plain")
    fastcnn.seed_cnn().save(tmp_path / "plain" / "last.npz")
    with pytest.raises(ValueError, match="without training state"):
        fastcnn.seed_cnn().fit(x, y, **{**args, "checkpoint_dir": tmp_path / "plain"})


class CtrlC(Callback):
    """Send SIGINT to this process after a given batch (as a user pressing Ctrl-C)."""

    def __init__(self, epoch, batch, times=1):
        self.at, self.times, self.seen = (epoch, batch), times, None

    def on_batch_end(self, epoch, batch, loss, model):
        if (epoch, batch) == self.at:
            self.seen = {k: v.copy() for k, v in model.params.items()}
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_cleanly_and_resumes_bit_for_bit(data, tmp_path):
    x, y, _, _ = data
    straight = fastcnn.seed_cnn(seed=4)
    straight.fit(x, y, epochs=4, batch_size=20, progress=False)

    model = fastcnn.seed_cnn(seed=4)
    ctrl_c = CtrlC(epoch=3, batch=2)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="epoch 3 after batch 2"):
        model.fit(x, y, epochs=4, batch_size=20, progress=False, checkpoint_dir=tmp_path,
                  callbacks=[ctrl_c])
    assert signal.getsignal(signal.SIGINT) is handler  # fit put it back
    # the model holds the parameters after the batch that was running
    assert_same(snapshot(model), ctrl_c.seen)
    # the checkpoint, those after epoch 2, and nothing half-written beside it
    _, state, _ = fastcnn.io.load(tmp_path / "last.npz", with_training_state=True)
    assert state["epochs_done"] == 2
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "last.npz"]
    resumed = fastcnn.seed_cnn(seed=0)
    resumed.fit(x, y, epochs=4, batch_size=20, progress=False, checkpoint_dir=tmp_path,
                resume=True)
    assert_same(snapshot(resumed), snapshot(straight))


def test_second_ctrl_c_stops_at_once(data):
    x, y, _, _ = data
    with pytest.raises(KeyboardInterrupt) as info:
        fastcnn.seed_cnn().fit(x, y, epochs=2, batch_size=20, progress=False,
                               callbacks=[CtrlC(epoch=1, batch=1, times=2)])
    assert "after batch" not in str(info.value)  # raised by the second signal, not after the batch


def test_progress_bar_on_a_terminal(data, monkeypatch, capsys):
    """On a terminal the bar shows images/s, loss and smoothed loss; off one,
    or with progress=False, nothing is drawn."""
    import sys

    x, y, _, _ = data
    fastcnn.seed_cnn().fit(x, y, epochs=1, batch_size=20, progress=True)  # stderr is captured
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fastcnn.seed_cnn().fit(x, y, epochs=2, batch_size=20, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "img/s" in err and "loss=" in err and "smoothed=" in err
    fastcnn.seed_cnn().fit(x, y, epochs=1, batch_size=20, progress=False)
    assert capsys.readouterr().err == ""


def test_unaligned_images_train_the_same(data):
    """Arrays from pickled buffers (Dask, joblib) may start at an address that
    is no multiple of 4; fit gathers their batches as bytes, to the same bits."""
    x, y = data[:2]
    raw = np.empty(x.nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64 + 2
    shifted = np.ndarray(x.shape, x.dtype, buffer=raw, offset=start)
    shifted[...] = x
    assert not shifted.flags.aligned
    a, b = fastcnn.seed_cnn(seed=2), fastcnn.seed_cnn(seed=2)
    ha = a.fit(x, y, batch_size=7, epochs=2, progress=False)
    hb = b.fit(shifted, y, batch_size=7, epochs=2, progress=False)
    assert ha.loss == hb.loss
    np.testing.assert_array_equal(a._flat_params, b._flat_params)


def test_resume_with_a_schedule_is_bit_for_bit(data, tmp_path):
    """The arguments a checkpoint records are those fit started with, not the
    learning rate a schedule has set by the end of the first epoch."""
    x, y, xv, yv = data

    def run(model, epochs, **kwargs):
        opt = fastcnn.SGD(model, lr=0.01, momentum=0.9)
        return model.fit(x, y, epochs=epochs, batch_size=20, optimizer=opt, progress=False,
                         schedule=fastcnn.CosineLR(3, min_lr=0.001), **kwargs)

    straight = fastcnn.seed_cnn(seed=5)
    run(straight, 3)
    first = fastcnn.seed_cnn(seed=5)
    run(first, 1, checkpoint_dir=tmp_path)
    later = fastcnn.seed_cnn(seed=0)
    run(later, 3, checkpoint_dir=tmp_path, resume=True)
    assert_same(snapshot(later), snapshot(straight))


def test_resume_refuses_an_oversized_architecture_before_building_it(data, tmp_path):
    """A small checkpoint whose architecture asks for a huge layer is refused
    before anything of that size is allocated."""
    import json
    import zipfile

    x, y, _, _ = data
    fastcnn.seed_cnn().fit(x, y, epochs=1, batch_size=20, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "last.npz"
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    with np.load(path, allow_pickle=False) as f:
        config = json.loads(str(f["__config__"]))
    config["model"]["layers"][-1]["config"].update(in_features=192, out_features=10**8)
    buf = np.lib.format
    import io as stdio

    raw = stdio.BytesIO()
    buf.write_array(raw, np.array(json.dumps(config)))
    entries["__config__.npy"] = raw.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data_ in entries.items():
            z.writestr(name, data_)
    # 10**8 outputs: 400 MB of activations per image (the limit), of parameters (the file)
    with pytest.raises(ValueError, match="more than the (file|limit)"):
        fastcnn.seed_cnn().fit(x, y, epochs=2, batch_size=20, progress=False,
                               checkpoint_dir=tmp_path, resume=True)


def test_no_event_for_a_fit_that_cannot_start(data):
    """A model with NaN parameters is refused before any callback hears of
    the fit (as before the loop was split into callbacks)."""
    x, y, _, _ = data
    model = fastcnn.seed_cnn()
    model.params["FC.bias"][0] = np.nan
    rec = Recorder()
    with pytest.raises(ValueError, match="NaN"):
        model.fit(x, y, progress=False, callbacks=[rec])
    assert rec.events == []


def test_callbacks_let_go_of_the_run(data):
    x, y, xv, yv = data
    stop = EarlyStopping(patience=5)
    fastcnn.seed_cnn().fit(x, y, epochs=1, progress=False, validation_data=(xv, yv),
                           callbacks=[stop])
    assert stop.run is None  # the callback does not keep the data alive


def test_a_diverged_epoch_is_not_recorded_or_validated(data):
    """A step that leaves NaN parameters at the end of an epoch stops fit before
    that epoch's figures, validation or checkpoint."""
    x, y, xv, yv = data

    class Poison(Callback):
        def on_before_step(self, epoch, batch, loss, model):
            if (epoch, batch) == (2, 3):  # the last batch of epoch 2
                model.grads["FC.bias"][0] = np.nan

    rec = Recorder()
    with pytest.raises(FloatingPointError, match="epoch 2, batch 3: its step left"):
        fastcnn.seed_cnn().fit(x, y, epochs=3, batch_size=20, progress=False,
                               validation_data=(xv, yv), callbacks=[Poison(), rec])
    assert ("end", 1, ["epoch", "loss", "seconds", "smoothed_loss", "val_error"]) in rec.events
    assert not any(e[0] == "end" and e[1] == 2 for e in rec.events)
    assert rec.events[-1] == ("done",)
