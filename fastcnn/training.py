"""The training loop behind `Sequential.fit`: mini-batch SGD as the
DeepLearnToolbox demo runs it, with callbacks, checkpoints and a clean stop
on Ctrl-C.

Checkpoints. With checkpoint_dir, after every epoch the model is written to
`last.npz`, and to `best.npz` when the epoch is the best so far (lowest
validation error, or lowest mean loss without validation data). Each file
is an ordinary model file (fastcnn.load reads it) that also holds the state
of training: the epochs done, the exact state of the shuffling generator,
the history and the arguments of fit. Files are written to a temporary name
and renamed, so neither is ever half-written.

Resuming. fit(..., checkpoint_dir=d, resume=True) loads d/last.npz into the
model and goes on from the epoch after it. Since the shuffle of every epoch
comes from the saved generator state and nothing else in training is
random, the result is the same, bit for bit, as a run that was never
stopped.

Ctrl-C. The first interrupt lets the current batch finish (its SGD step
included), then fit raises KeyboardInterrupt: the model holds the parameters
after that batch, and the last checkpoint those after the last whole epoch.
A second Ctrl-C interrupts at once.
"""

import json
import os
import signal
import sys
import threading
import time
import zlib

import numpy as np

from fastcnn import io
from fastcnn._validate import (
    check_images,
    check_int,
    check_labels,
    check_positive_float,
    check_targets,
)
from fastcnn.callbacks import Callback
from fastcnn.optim import SGD, Optimizer

LAST, BEST = "last.npz", "best.npz"


class History:
    """What `fit` records.

    Attributes
    ----------
    loss : list of float
        L of every batch, eq. (13) averaged over the batch.
    smoothed_loss : list of float
        rL = 0.99 rL + 0.01 L per batch, rL starting at the first L (the curve
        DeepLearnToolbox plots).
    epoch_loss : list of float
        Mean of L over each epoch's batches.
    epoch_seconds : list of float
        Wall time of each epoch's training (validation excluded).
    val_error : list of float
        Error on `validation_data` after each epoch (empty without it).
    """

    def __init__(self):
        self.loss = []
        self.smoothed_loss = []
        self.epoch_loss = []
        self.epoch_seconds = []
        self.val_error = []
        self._batches = []  # batches of each epoch

    def _record(self, loss):
        smoothed = loss if not self.smoothed_loss else 0.99 * self.smoothed_loss[-1] + 0.01 * loss
        self.loss.append(loss)
        self.smoothed_loss.append(smoothed)

    def epoch_logs(self, epoch):
        """The figures of epoch `epoch` (counting from 1), as callbacks get them."""
        logs = {"epoch": epoch, "loss": self.epoch_loss[epoch - 1],
                "smoothed_loss": self._epoch_end_smoothed[epoch - 1],
                "seconds": self.epoch_seconds[epoch - 1]}
        if len(self.val_error) >= epoch:
            logs["val_error"] = self.val_error[epoch - 1]
        return logs

    @property
    def _epoch_end_smoothed(self):
        ends = np.cumsum(self._batches)
        return [self.smoothed_loss[e - 1] for e in ends]

    def _state(self):
        return {name: getattr(self, name) for name in
                ("loss", "smoothed_loss", "epoch_loss", "epoch_seconds", "val_error")}

    @classmethod
    def _from_state(cls, state, batches):
        history = cls()
        for name, values in state.items():
            setattr(history, name, [float(v) for v in values])
        history._batches = list(batches)
        return history

    def __repr__(self):
        return (f"History(batches={len(self.loss)}, epochs={len(self.epoch_seconds)}, "
                f"last_loss={self.loss[-1] if self.loss else None})")


class _StopOnInterrupt:
    """SIGINT during fit: note it and let the batch finish; a second one stops at once."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _fingerprint(x, t):
    """A cheap check that a resumed fit sees the same data: CRC-32 of the
    targets and of about a thousand evenly spaced images."""
    crc = zlib.crc32(np.ascontiguousarray(t).tobytes())
    step = max(1, x.shape[0] // 1000)
    return zlib.crc32(np.ascontiguousarray(x[::step]).tobytes(), crc)


def fit(model, x, y, epochs=1, batch_size=50, lr=None, seed=0, progress=True,
        validation_data=None, callbacks=None, checkpoint_dir=None, resume=False,
        optimizer=None, schedule=None):
    """See Sequential.fit."""
    x = check_images(x, model.input_shape, model.dtype, copy_dtype=False)
    n = x.shape[0]
    t = check_targets(y, n, model._classes(), model.dtype)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    # more than there are images: one batch of all of them, as Keras and
    # PyTorch's DataLoader do (the argument is kept as given for checkpoints)
    batch_rows = min(batch_size, n)
    if optimizer is None:
        optimizer = SGD(model, lr=1.0 if lr is None else check_positive_float(lr, "lr"))
    else:
        if lr is not None:
            raise ValueError("give the learning rate to the optimizer, not to fit")
        if not isinstance(optimizer, Optimizer) or optimizer.model is not model:
            raise ValueError("optimizer must be a fastcnn optimizer made for this model")
    if schedule is not None and not callable(getattr(schedule, "config", None)):
        raise TypeError(f"schedule must be a fastcnn.optim schedule (StepLR, CosineLR), "
                        f"got {schedule!r}")
    initial_lr = optimizer.lr
    seed = check_int(seed, "seed", minimum=0)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be fastcnn.callbacks.Callback objects, got {cb!r}")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError(f"validation_data must be a pair (x_val, y_val), got "
                            f"{type(validation_data).__name__}"
                            + (f" of length {len(validation_data)}"
                               if isinstance(validation_data, (tuple, list)) else ""))
        x_val, y_val = validation_data
        x_val = check_images(x_val, model.input_shape, model.dtype, name="x_val", copy_dtype=False)
        y_val = check_labels(y_val, x_val.shape[0], model._classes(), name="y_val")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")

    arguments = {"batch_size": batch_size, "optimizer": optimizer.config(),
                 "schedule": None if schedule is None else schedule.config(), "seed": seed,
                 "samples": n, "data": _fingerprint(x, t),
                 "validation": validation_data is not None}
    rng = np.random.default_rng(seed)
    history = History()
    start_epoch, best = 0, None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        if resume:
            state, arrays = _restore(model, os.path.join(checkpoint_dir, LAST), arguments)
            optimizer.load_state(state["optimizer"], arrays)
            rng.bit_generator.state = state["rng"]
            history = History._from_state(state["history"], state["batches"])
            start_epoch, best = state["epochs_done"], state["best"]
    model._check_parameters()

    show = bool(progress) and sys.stderr.isatty()
    # the batch is gathered into the same two arrays every time
    x_batch = np.empty((batch_rows,) + model.input_shape, model.dtype)
    x_rows, x_batch_rows = x, x_batch
    if x.dtype == model.dtype and not x.flags.aligned and x.flags.c_contiguous:
        # Arrays that arrive through pickled buffers (Dask, joblib, sockets)
        # may start at an address that is no multiple of the item size;
        # NumPy then gathers them element by element, ~100x slower. Their
        # rows as bytes are gathered with one copy each.
        x_rows = x.reshape(n, -1).view(np.uint8)
        x_batch_rows = x_batch.reshape(batch_rows, -1).view(np.uint8)
    t_batch = np.empty((batch_rows,) + model.output_shape, model.dtype)
    from tqdm.auto import tqdm  # here, not at import: it brings in asyncio (70 ms)

    model.stop_training = False
    for cb in callbacks:
        cb.on_train_begin(model, history)
    try:
        with _StopOnInterrupt() as interrupt:
            for epoch in range(start_epoch + 1, epochs + 1):
                if model.stop_training:
                    break
                if schedule is not None:
                    optimizer.lr = schedule(epoch, initial_lr)
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, model)
                order = rng.permutation(n)
                start_time, first_batch = time.perf_counter(), len(history.loss)
                with tqdm(total=n, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True,
                          disable=not show, leave=True) as bar:
                    for batch, start in enumerate(range(0, n, batch_rows), 1):
                        idx = order[start : start + batch_rows]
                        xb, tb = x_batch[: len(idx)], t_batch[: len(idx)]
                        if x.dtype == model.dtype:
                            np.take(x_rows, idx, axis=0, out=x_batch_rows[: len(idx)],
                                    mode="clip")
                        else:
                            xb[...] = x[idx]
                        np.take(t, idx, axis=0, out=tb, mode="clip")
                        loss = model._backprop(xb, tb)
                        if not np.isfinite(loss):
                            raise FloatingPointError(
                                f"training diverged in epoch {epoch}, batch {batch}: the loss "
                                f"is {loss}. The parameters are those before that batch; try a "
                                f"smaller learning rate (lr={optimizer.lr})")
                        optimizer.step()
                        history._record(loss)
                        for cb in callbacks:
                            cb.on_batch_end(epoch, batch, loss, model)
                        bar.update(len(idx))
                        if show:
                            bar.set_postfix(loss=f"{loss:.4f}",
                                            smoothed=f"{history.smoothed_loss[-1]:.4f}",
                                            refresh=False)
                        if interrupt.requested:
                            raise KeyboardInterrupt(
                                f"training interrupted in epoch {epoch} after batch {batch}; "
                                "the model holds the parameters after that batch"
                                + (f", {checkpoint_dir}/{LAST} those after the last whole epoch "
                                   "(resume=True goes on from there)" if checkpoint_dir else ""))
                if not np.isfinite(model._flat_params).all():
                    # the last step of the epoch; the others are caught by the next loss
                    raise FloatingPointError(
                        f"training diverged in epoch {epoch}, batch {batch}: its step left "
                        f"parameters that are NaN or infinite; try a smaller learning rate "
                        f"(lr={optimizer.lr})")
                history.epoch_seconds.append(time.perf_counter() - start_time)
                history.epoch_loss.append(float(np.mean(history.loss[first_batch:])))
                history._batches.append(len(history.loss) - first_batch)
                if validation_data is not None:
                    history.val_error.append(model.evaluate(x_val, y_val))
                logs = history.epoch_logs(epoch)
                if checkpoint_dir is not None:
                    score = logs.get("val_error", logs["loss"])
                    improved = best is None or score < best["score"]
                    if improved:
                        best = {"score": score, "epoch": epoch}
                    opt_state, opt_arrays = optimizer.state()
                    state = {"epochs_done": epoch, "rng": rng.bit_generator.state,
                             "history": history._state(), "batches": history._batches,
                             "best": best, "arguments": arguments, "optimizer": opt_state}
                    for name in (LAST, BEST) if improved else (LAST,):
                        io.save(model, os.path.join(checkpoint_dir, name), training_state=state,
                                training_arrays=opt_arrays)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs, model)
    finally:
        for cb in callbacks:
            cb.on_train_end(model, history)
    return history


def _restore(model, path, arguments):
    """Load a checkpoint into model; return its training state after checking
    it was made by the same kind of fit on the same data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    saved, state, arrays = io.load(path, with_training_state=True)
    if state is None:
        raise ValueError(f"{path} is a model file without training state; it cannot be resumed")
    if saved.get_config() != model.get_config():
        raise ValueError(f"{path} holds a different architecture than this model: "
                         f"{json.dumps(saved.get_config())}")
    for key, value in arguments.items():
        if state["arguments"].get(key) != value:
            what = {"samples": "number of training images", "data": "training data",
                    "validation": "use of validation data", "optimizer": "optimizer or its settings",
                    "schedule": "learning-rate schedule"}.get(key, key)
            raise ValueError(f"{path} was made with a different {what} "
                             f"({state['arguments'].get(key)!r}, now {value!r}); resume with "
                             f"the same data and arguments, or start a new checkpoint_dir")
    model._flat_params[...] = saved._flat_params
    return state, arrays
