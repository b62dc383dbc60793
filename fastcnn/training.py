"""The training loop behind `Sequential.fit`: mini-batch SGD as the
DeepLearnToolbox demo runs it.

`fit` checks its arguments once (the validation set included), turns what
it is asked for into callbacks (fastcnn.callbacks: divergence checks, the
learning-rate schedule, checkpoints, the progress bar), resumes from a
checkpoint if asked, and runs `train`, which is only this: for every epoch,
for every batch, a training step (backprop and the optimiser's step,
eq. (65)-(70)), with the callbacks called at the events of training.

Determinism. The shuffle of every epoch comes from one generator seeded by
fit's seed, and nothing else in training is random, so the trained
parameters are the same bit for bit for a given seed, whatever the thread
count, and a resumed run equals one that was never stopped.

Ctrl-C. The first interrupt lets the current batch finish (its step
included), then fit raises KeyboardInterrupt: the model holds the parameters
after that batch, and the last checkpoint those after the last whole epoch.
A second Ctrl-C interrupts at once.

Sharing the model. Each step holds the model's lock for writing, so other
threads may predict with it meanwhile and each of their calls sees the
parameters between two steps.
"""

import signal
import threading
import time
import zlib

import numpy as np

from fastcnn import _threads, optim
from fastcnn import augment as _augment
from fastcnn import callbacks as _callbacks
from fastcnn._validate import (
    check_bool,
    check_fraction,
    check_images,
    check_int,
    check_labels,
    check_targets,
)
from fastcnn.optim import SGD, Optimizer

# the checkpoint files (fastcnn.callbacks.ModelCheckpoint)
LAST, BEST = _callbacks.ModelCheckpoint.LAST, _callbacks.ModelCheckpoint.BEST


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

    _FIELDS = ("loss", "smoothed_loss", "epoch_loss", "epoch_seconds", "val_error")

    def __init__(self):
        self.loss = []
        self.smoothed_loss = []
        self.epoch_loss = []
        self.epoch_seconds = []
        self.val_error = []
        self._batches = []  # batches of each epoch

    def record_batch(self, loss):
        """Add a batch's loss, and its smoothed loss."""
        smoothed = loss if not self.smoothed_loss else 0.99 * self.smoothed_loss[-1] + 0.01 * loss
        self.loss.append(loss)
        self.smoothed_loss.append(smoothed)

    def record_epoch(self, seconds, batches):
        """Close an epoch of `batches` batches that took `seconds` to train."""
        self.epoch_seconds.append(seconds)
        self.epoch_loss.append(float(np.mean(self.loss[-batches:])))
        self._batches.append(batches)

    def epoch_logs(self, epoch):
        """The figures of epoch `epoch` (counting from 1), as callbacks get them."""
        last_batch = int(np.sum(self._batches[:epoch])) - 1
        logs = {"epoch": epoch, "loss": self.epoch_loss[epoch - 1],
                "smoothed_loss": self.smoothed_loss[last_batch],
                "seconds": self.epoch_seconds[epoch - 1]}
        if len(self.val_error) >= epoch:
            logs["val_error"] = self.val_error[epoch - 1]
        return logs

    def state(self):
        """(figures, batches per epoch): everything, as JSON-compatible lists."""
        return {name: getattr(self, name) for name in self._FIELDS}, list(self._batches)

    def restore(self, figures, batches):
        """Put back what state() returned (a resumed fit)."""
        for name in self._FIELDS:
            setattr(self, name, [float(v) for v in figures[name]])
        self._batches = [int(b) for b in batches]

    def __repr__(self):
        return (f"History(batches={len(self.loss)}, epochs={len(self.epoch_seconds)}, "
                f"last_loss={self.loss[-1] if self.loss else None})")


class Batches:
    """The training set in mini-batches: each epoch a new order from `rng`
    (seeded once, by fit's seed), each batch gathered into the same two
    arrays (fit allocates nothing per batch).

    x and y are checked once here: images (N, C, H, W) of any floating
    dtype (converted batch by batch, so a memory-mapped set is never copied
    whole), labels or one-hot targets.
    """

    def __init__(self, model, x, y, batch_size, seed, drop_last=False, label_smoothing=0.0,
                 augment=None):
        self.x = check_images(x, model.input_shape, model.dtype, copy_dtype=False)
        self.n = n = self.x.shape[0]
        self.t = check_targets(y, n, model.num_classes, model.dtype)
        self.label_smoothing = check_fraction(label_smoothing, "label_smoothing")
        if self.label_smoothing:
            if model.loss != "cross_entropy":
                raise ValueError("label_smoothing is for loss='cross_entropy' models")
            # PyTorch's rule: the targets (1 - e) y + e / K
            e = self.label_smoothing
            self.t = (self.t * (1 - e) + e / model.num_classes).astype(model.dtype)
        self.batch_size = check_int(batch_size, "batch_size")
        # more than there are images: one batch of all of them, as Keras and
        # PyTorch's DataLoader do (batch_size is kept as given for checkpoints)
        self.rows = min(self.batch_size, n)
        self.drop_last = check_bool(drop_last, "drop_last")
        # the batches of an epoch: the last partial one left out with drop_last
        self.per_epoch = n // self.rows if self.drop_last else -(-n // self.rows)
        self.seed = check_int(seed, "seed", minimum=0)
        self.rng = np.random.default_rng(self.seed)
        self.augment = _augment.check_steps(augment)
        # the augmentation's own draws: a stream apart from the shuffle's, so
        # that adding augmentation does not change the order of the batches
        self.augment_rng = np.random.default_rng([self.seed, 1]) if self.augment else None
        self._xb = np.empty((self.rows,) + model.input_shape, model.dtype)
        self._tb = np.empty((self.rows,) + model.output_shape, model.dtype)
        self._x_rows, self._xb_rows = self.x, self._xb
        self.current = None
        if self.x.dtype == model.dtype and not self.x.flags.aligned and self.x.flags.c_contiguous:
            # Arrays that arrive through pickled buffers (Dask, joblib, sockets)
            # may start at an address that is no multiple of the item size;
            # NumPy then gathers them element by element, ~100x slower. Their
            # rows as bytes are gathered with one copy each.
            self._x_rows = self.x.reshape(n, -1).view(np.uint8)
            self._xb_rows = self._xb.reshape(self.rows, -1).view(np.uint8)

    def epoch(self):
        """Yield (x, t) for every batch of a new epoch, in a new order."""
        order = self.rng.permutation(self.n)
        for start in range(0, self.per_epoch * self.rows, self.rows):
            idx = order[start : start + self.rows]
            xb, tb = self._xb[: len(idx)], self._tb[: len(idx)]
            if self.x.dtype == xb.dtype:
                np.take(self._x_rows, idx, axis=0, out=self._xb_rows[: len(idx)], mode="clip")
            else:
                xb[...] = self.x[idx]
            np.take(self.t, idx, axis=0, out=tb, mode="clip")
            for step in self.augment:
                step(xb, self.augment_rng)
            self.current = xb  # for callbacks that look at the batch (DivergenceCheck)
            yield xb, tb
        self.current = None

    def images_in(self, batch):
        """The number of images in batch `batch` (from 1) of an epoch."""
        return min(self.rows, self.n - (batch - 1) * self.rows)

    @property
    def images_per_epoch(self):
        """The images an epoch trains on (fewer than n with drop_last)."""
        return min(self.n, self.per_epoch * self.rows)

    def fingerprint(self):
        """A cheap check that a resumed fit sees the same data: CRC-32 of the
        targets and of about a thousand evenly spaced images."""
        crc = zlib.crc32(np.ascontiguousarray(self.t).tobytes())
        step = max(1, self.n // 1000)
        return zlib.crc32(np.ascontiguousarray(self.x[::step]).tobytes(), crc)


class Run:
    """One call of fit, as its callbacks see it (`callback.run`, while fit
    runs): the model, optimizer, batches (with the shuffling generator
    `batches.rng`), history, the epochs asked for and done, the thread count,
    and `arguments`, what a checkpoint must share with a fit that resumes
    from it (taken when fit starts)."""

    def __init__(self, model, optimizer, batches, epochs, schedule, validation):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.epochs, self.epochs_done = epochs, 0
        self.validation = validation
        self.history = History()
        self.threads = _threads.get_num_threads()
        self.arguments = {"batch_size": batches.batch_size, "optimizer": optimizer.config(),
                          "schedule": None if schedule is None else schedule.config(),
                          "seed": batches.seed, "samples": batches.n,
                          "data": batches.fingerprint(), "validation": validation is not None}
        # recorded only when used, so that older checkpoints resume
        if batches.drop_last:
            self.arguments["drop_last"] = True
        if batches.label_smoothing:
            self.arguments["label_smoothing"] = batches.label_smoothing
        if batches.augment:
            self.arguments["augment"] = [step.config() for step in batches.augment]


def fit(model, x, y, epochs=1, batch_size=50, lr=None, seed=0, progress=True,
        validation_data=None, callbacks=None, checkpoint_dir=None, resume=False,
        optimizer=None, schedule=None, validation_split=None, drop_last=False,
        label_smoothing=0.0, augment=None, verbose="auto"):
    """See Sequential.fit."""
    if validation_split is not None:
        x, y, validation_data = _split_off_validation(x, y, validation_split, validation_data)
    batches = Batches(model, x, y, batch_size, seed, drop_last, label_smoothing, augment)
    epochs = check_int(epochs, "epochs")
    optimizer = _check_optimizer(model, optimizer, lr)
    if schedule is not None and not callable(getattr(schedule, "config", None)):
        raise TypeError(f"schedule must be a fastcnn.optim schedule (StepLR, CosineLR), "
                        f"got {schedule!r}")
    given = _callbacks.check_callbacks(callbacks)
    validation = _check_validation(model, validation_data)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")

    run = Run(model, optimizer, batches, epochs, schedule, validation)
    verbose = _callbacks.resolve_verbose(verbose, check_bool(progress, "progress"))
    own = [_callbacks.DivergenceCheck(), _callbacks.ChanceLevelCheck()]
    if schedule is not None:
        own.append(_callbacks.LearningRateSchedule(schedule))
    hint = ""
    if checkpoint_dir is not None:
        checkpoint = _callbacks.ModelCheckpoint(checkpoint_dir)
        if resume:
            checkpoint.restore(run)
        own.append(checkpoint)
        hint = checkpoint.resume_hint()
    own.append(_callbacks.ProgressBar(verbose))
    return train(run, own + given, interrupt_hint=hint)


def train(run, callbacks, interrupt_hint=""):
    """The loop: for every epoch, for every batch, a training step; the
    callbacks at the events (fastcnn.callbacks). Returns run.history."""
    model, optimizer, history = run.model, run.optimizer, run.history
    model.check_parameters()
    workspace = model.workspace(run.batches.rows, train=True, threads=run.threads)
    for cb in callbacks:
        cb.run = run
    model.stop_training = False
    _each(callbacks, "on_train_begin", model, history)
    try:
        with _StopOnInterrupt(interrupt_hint) as interrupt:
            for epoch in range(run.epochs_done + 1, run.epochs + 1):
                if model.stop_training:
                    break
                _each(callbacks, "on_epoch_begin", epoch, model)
                start = time.perf_counter()
                for batch, (x, t) in enumerate(run.batches.epoch(), 1):
                    with model.lock.writing():
                        loss = model.train_batch(x, t, workspace)        # sections 1 and 2
                        _each(callbacks, "on_before_step", epoch, batch, loss, model)
                        optimizer.step(threads=run.threads)              # section 3
                    history.record_batch(loss)
                    _each(callbacks, "on_batch_end", epoch, batch, loss, model)
                    interrupt.check(epoch, batch)
                seconds = time.perf_counter() - start
                _each(callbacks, "on_batches_end", epoch, batch, model)
                history.record_epoch(seconds, batch)
                if run.validation is not None:
                    history.val_error.append(model.evaluate(*run.validation, check_input=False))
                _each(callbacks, "on_epoch_end", epoch, history.epoch_logs(epoch), model)
                run.epochs_done = epoch
    finally:
        _each(callbacks, "on_train_end", model, history)
        for cb in callbacks:
            cb.run = None  # a callback kept by the user does not keep the data alive
    return history


def _each(callbacks, event, *args):
    for cb in callbacks:
        getattr(cb, event)(*args)


def _check_optimizer(model, optimizer, lr):
    """The optimizer fit uses: the one given (made for this model); plain SGD
    with alpha = lr when only lr is given (eq. (65)-(70)); with neither, the
    model's own default_optimizer (the paper's SGD at alpha = 1 for
    seed_cnn, Adam at 1e-3 for LeNet-5, ...)."""
    if optimizer is None and lr is None:
        name, rate = model.default_optimizer
        return optim.create(name, model, lr=rate)
    if optimizer is None:
        return SGD(model, lr=lr)
    if lr is not None:
        raise ValueError("give the learning rate to the optimizer, not to fit")
    if not isinstance(optimizer, Optimizer) or optimizer.model is not model:
        raise ValueError("optimizer must be a fastcnn optimizer made for this model")
    return optimizer


def _split_off_validation(x, y, fraction, validation_data):
    """(x, y, (x_val, y_val)): the last `fraction` of the images (before any
    shuffling, as Keras does) held out for validation."""
    if validation_data is not None:
        raise ValueError("give validation_data or validation_split, not both")
    fraction = check_fraction(fraction, "validation_split")
    n = len(x)
    held = int(n * fraction)
    if not 0 < held < n:
        raise ValueError(f"validation_split={fraction} of {n} images leaves "
                         f"{'no validation' if held == 0 else 'no training'} images")
    return x[: n - held], y[: n - held], (x[n - held:], y[n - held:])


def _check_validation(model, validation_data):
    """(x_val, labels) checked once, or None."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError(f"validation_data must be a pair (x_val, y_val), got "
                        f"{type(validation_data).__name__}"
                        + (f" of length {len(validation_data)}"
                           if isinstance(validation_data, (tuple, list)) else ""))
    x_val, y_val = validation_data
    x_val = check_images(x_val, model.input_shape, model.dtype, name="x_val", copy_dtype=False)
    return x_val, check_labels(y_val, x_val.shape[0], model.num_classes, name="y_val")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped fit after batch `batch` of epoch `epoch`; the model
    holds the parameters after that batch."""

    def __init__(self, epoch, batch, hint=""):
        super().__init__(f"training interrupted in epoch {epoch} after batch {batch}; the model "
                         f"holds the parameters after that batch" + hint)
        self.epoch, self.batch = epoch, batch


class _StopOnInterrupt:
    """SIGINT during fit: note it and let the batch finish; a second one stops
    at once (or, if it lands while the model's lock is being taken or given
    back, as soon as that is done, so the lock is never left held)."""

    def __init__(self, hint=""):
        self.hint = hint

    def __enter__(self):
        self.requested = self.abort = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if not self.requested:
            self.requested = True
            return
        if _in_lock_bookkeeping(frame):
            self.abort = True
            return
        raise KeyboardInterrupt

    def check(self, epoch, batch):
        """After a batch: stop here if Ctrl-C was pressed during it."""
        if self.abort:
            raise KeyboardInterrupt
        if self.requested:
            raise TrainingInterrupted(epoch, batch, self.hint)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _in_lock_bookkeeping(frame):
    """True if `frame` runs inside fastcnn._threads (a SharedLock being taken
    or released), where an exception would leave the lock held."""
    while frame is not None:
        if frame.f_code.co_filename == _threads.__file__:
            return True
        frame = frame.f_back
    return False
