"""Callbacks for `Sequential.fit`: code that runs at the events of training.

Subclass `Callback` and pass instances as `fit(..., callbacks=[...])`. The
events, in order:

    on_train_begin(model, history)        history holds resumed epochs, if any
    on_epoch_begin(epoch, model)          epoch counts from 1
    on_batch_end(epoch, batch, loss, model)
    on_epoch_end(epoch, logs, model)      logs: see below
    on_train_end(model, history)          also after an interruption or an error

`logs` of an epoch: {"epoch", "loss" (mean L of its batches), "smoothed_loss"
(the last rL), "seconds" (training time), "val_error" (with validation data)}.
A callback stops training after the current epoch by setting
`model.stop_training = True`.
"""

import csv
import io as _stdio
import math

import numpy as np

from fastcnn.io import atomic_write


class Callback:
    """Base class: every event does nothing."""

    def on_train_begin(self, model, history):
        """Before the first epoch; history holds the epochs of a resumed fit."""

    def on_epoch_begin(self, epoch, model):
        """Before epoch `epoch` (counting from 1)."""

    def on_batch_end(self, epoch, batch, loss, model):
        """After the SGD step of batch `batch` (from 1) of `epoch`; loss is its L."""

    def on_epoch_end(self, epoch, logs, model):
        """After an epoch (and its checkpoint); logs as in the module's docstring."""

    def on_train_end(self, model, history):
        """After the last epoch, and also when training stops on an error or Ctrl-C."""


class EarlyStopping(Callback):
    """Stop when a monitored figure has not improved for `patience` epochs.

    Parameters
    ----------
    monitor : "val_error" or "loss"
        Lower is better for both. "val_error" needs fit's validation_data.
    patience : int
        Epochs without improvement before stopping.
    min_delta : float
        The least decrease that counts as an improvement.
    restore_best : bool
        At the end, put back the parameters of the best epoch.

    Attributes after training: best (the best value), best_epoch, stopped_epoch
    (0 if training ran to the end).
    """

    def __init__(self, monitor="val_error", patience=3, min_delta=0.0, restore_best=True):
        if monitor not in ("val_error", "loss"):
            raise ValueError(f"monitor must be 'val_error' or 'loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best = restore_best

    def on_train_begin(self, model, history):
        self.best, self.best_epoch, self.stopped_epoch, self._wait = math.inf, 0, 0, 0
        self._best_params = None

    def on_epoch_end(self, epoch, logs, model):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                             f"compute (pass validation_data for 'val_error')")
        value = logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best:
                self._best_params = model._flat_params.copy()
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = epoch
                model.stop_training = True

    def on_train_end(self, model, history):
        if self.restore_best and self._best_params is not None and self.stopped_epoch:
            model._flat_params[...] = self._best_params


class CSVLogger(Callback):
    """Write one CSV row per epoch: epoch, loss, smoothed_loss, seconds[, val_error].

    The file is rewritten whole, atomically, after every epoch, so it is
    never left half-written; after a resumed fit it holds every epoch,
    those before the interruption included.
    """

    def __init__(self, path):
        self.path = path

    def on_train_begin(self, model, history):
        self._rows = [history.epoch_logs(e) for e in range(1, len(history.epoch_seconds) + 1)]
        if self._rows:
            self._write()

    def on_epoch_end(self, epoch, logs, model):
        self._rows.append(dict(logs))
        self._write()

    def _write(self):
        fields = ["epoch", "loss", "smoothed_loss", "seconds"]
        if any("val_error" in row for row in self._rows):
            fields.append("val_error")
        text = _stdio.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self._rows:
            writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                             for k, v in row.items()})
        data = text.getvalue().encode()
        atomic_write(self.path, lambda f: f.write(data))
