"""Callbacks for `Sequential.fit`: code that runs at the events of training.

Subclass `Callback` and pass instances as `fit(..., callbacks=[...])`. The
events, in order:

    on_train_begin(model, history)        history holds resumed epochs, if any
    on_epoch_begin(epoch, model)          epoch counts from 1
    on_before_step(epoch, batch, loss, model)
                                          after backprop, before the optimiser's
                                          step: raising here stops without it
    on_batch_end(epoch, batch, loss, model)
    on_batches_end(epoch, batch, model)   after the epoch's last step (batch is
                                          its number), before its figures are
                                          recorded and validated
    on_epoch_end(epoch, logs, model)      logs: see below
    on_train_end(model, history)          also after an interruption or an error

`logs` of an epoch: {"epoch", "loss" (mean L of its batches), "smoothed_loss"
(the last rL), "seconds" (training time), "val_error" (with validation data)}.
A callback stops training after the current epoch by setting
`model.stop_training = True`. While fit runs, `callback.run` is its
fastcnn.training.Run: the optimiser, the history, the shuffling generator.

on_before_step runs while fit holds the model's lock for writing (the
step must not be watched half-done): a callback may use the model there
from its own thread (predict, evaluate), but must not wait for another
thread that uses it, which would wait for the step.

fit's own work around its loop is done by callbacks too, run before the
ones it is given: DivergenceCheck, LearningRateSchedule (schedule=),
ChanceLevelCheck, ModelCheckpoint (checkpoint_dir=) and ProgressBar
(progress=, verbose=).
"""

import math
import os
import sys
import warnings

import numpy as np

from fastcnn import _modelfile
from fastcnn._files import write_csv
from fastcnn._validate import check_choice, check_int, check_nonnegative


class Callback:
    """Base class: every event does nothing."""

    #: the fastcnn.training.Run of the fit in progress (set by fit)
    run = None

    def on_train_begin(self, model, history):
        """Before the first epoch; history holds the epochs of a resumed fit."""

    def on_epoch_begin(self, epoch, model):
        """Before epoch `epoch` (counting from 1)."""

    def on_before_step(self, epoch, batch, loss, model):
        """After backprop of batch `batch` (from 1), before the optimiser's
        step: `model.grads` hold its gradients, loss is its L."""

    def on_batch_end(self, epoch, batch, loss, model):
        """After the SGD step of batch `batch` (from 1) of `epoch`; loss is its L."""

    def on_batches_end(self, epoch, batch, model):
        """After the last step of `epoch` (its batch `batch`), before the epoch's
        figures are recorded and the validation set is evaluated."""

    def on_epoch_end(self, epoch, logs, model):
        """After an epoch (and its checkpoint); logs as in the module's docstring."""

    def on_train_end(self, model, history):
        """After the last epoch, and also when training stops on an error or Ctrl-C."""


class DivergenceCheck(Callback):
    """Stop with FloatingPointError as soon as training diverges: a batch
    whose loss is NaN or infinite (before its step, so the parameters are
    those before it), or an epoch whose last step left NaN or infinite
    parameters (the other steps' are caught by the next loss)."""

    # images beyond this are no pixels: an overflow there is theirs, not the rate's
    INPUT_PEAK = 1e4

    def on_train_begin(self, model, history):
        self._steps = 0

    def on_batch_end(self, epoch, batch, loss, model):
        self._steps += 1

    def on_before_step(self, epoch, batch, loss, model):
        if math.isfinite(loss):
            return
        images = self.run.batches.current
        peak = float(np.max(np.abs(images))) if images is not None and images.size else 0.0
        if self._steps == 0 or peak > self.INPUT_PEAK:
            first = " before any training step, so not through the learning rate" \
                if self._steps == 0 else ""
            raise FloatingPointError(
                f"the forward pass overflowed in epoch {epoch}, batch {batch}: the loss is "
                f"{loss} from finite parameters and finite images{first}. The batch's values "
                f"reach {peak:.3g}, where fastcnn's networks expect pixels in [0, 1] or "
                f"standardised ones: scale the images")
        raise FloatingPointError(
            f"training diverged in epoch {epoch}, batch {batch}: the loss is {loss}. The "
            f"parameters are those before that batch; try a smaller learning rate "
            f"(lr={self.run.optimizer.lr})")

    def on_batches_end(self, epoch, batch, model):
        if not np.isfinite(model.flat_params).all():
            raise FloatingPointError(
                f"training diverged in epoch {epoch}, batch {batch}: its step left "
                f"parameters that are NaN or infinite; try a smaller learning rate "
                f"(lr={self.run.optimizer.lr})")


class LearningRateSchedule(Callback):
    """Set the optimiser's learning rate from its initial rate: at the start
    of every epoch to schedule(epoch, initial) (fastcnn.optim.StepLR,
    CosineLR), or, for a schedule with per_step = True, before every step
    to schedule(step, steps of the whole fit, initial) (OneCycleLR)."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.per_step = bool(getattr(schedule, "per_step", False))

    def on_train_begin(self, model, history):
        self._initial = self.run.optimizer.lr

    def on_epoch_begin(self, epoch, model):
        if not self.per_step:
            self.run.optimizer.lr = self.schedule(epoch, self._initial)

    def on_before_step(self, epoch, batch, loss, model):
        if self.per_step:
            per_epoch = self.run.batches.per_epoch
            step = (epoch - 1) * per_epoch + batch - 1
            self.run.optimizer.lr = self.schedule(step, self.run.epochs * per_epoch,
                                                  self._initial)


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
        self.monitor = check_choice(monitor, "monitor", ("val_error", "loss"))
        self.patience = check_int(patience, "patience")
        self.min_delta = check_nonnegative(min_delta, "min_delta")
        self.restore_best = bool(restore_best)

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
            if self.restore_best:  # parameters and buffers (batch norm's estimates) together
                self._best_params = {name: p.copy() for name, p in
                                     {**model.params, **model.buffers}.items()}
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = epoch
                model.stop_training = True

    def on_train_end(self, model, history):
        if self.restore_best and self._best_params is not None and self.stopped_epoch:
            with model.lock.writing():
                for name, p in {**model.params, **model.buffers}.items():
                    p[...] = self._best_params[name]


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
        write_csv(self.path, self._rows, fields)


class ModelCheckpoint(Callback):
    """Checkpoints of training, and resuming from them.

    After every epoch the model is written to `directory/last.npz`, and to
    `best.npz` when the epoch is the best so far (lowest validation error,
    or lowest mean loss without validation data). Each file is an ordinary
    model file (fastcnn.load reads it) that also holds the state of
    training: the epochs done, the exact state of the shuffling generator,
    the history, the optimiser's state and the arguments of fit. Files are
    written atomically, so neither is ever half-written.

    `restore(run)` goes on from `last.npz`: its parameters, optimiser
    state, shuffling state and history are put back into the run, after
    checking that it was made by the same kind of fit on the same data.
    Since nothing else in training is random, the result is the same, bit
    for bit, as a run that was never stopped. fit(checkpoint_dir=d,
    resume=True) does this before its first event.
    """

    LAST, BEST = "last.npz", "best.npz"

    # what each of fit's arguments is called in an error message
    _ARGUMENT_NAMES = {"samples": "number of training images", "data": "training data",
                       "validation": "use of validation data",
                       "optimizer": "optimizer or its settings",
                       "schedule": "learning-rate schedule"}

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.best = None  # {"score", "epoch"} of the best epoch so far

    def on_train_begin(self, model, history):
        os.makedirs(self.directory, exist_ok=True)

    def on_epoch_end(self, epoch, logs, model):
        run = self.run
        score = logs.get("val_error", logs["loss"])
        improved = self.best is None or score < self.best["score"]
        if improved:
            self.best = {"score": score, "epoch": epoch}
        opt_state, opt_arrays = run.optimizer.state()
        history_state, batches = run.history.state()
        state = {"epochs_done": epoch, "rng": run.batches.rng.bit_generator.state,
                 "history": history_state, "batches": batches, "best": self.best,
                 "arguments": run.arguments, "optimizer": opt_state}
        if run.batches.augment_rng is not None:
            state["augment_rng"] = run.batches.augment_rng.bit_generator.state
        with model.lock.reading():  # the parameters of a whole number of steps
            for name in (self.LAST, self.BEST) if improved else (self.LAST,):
                _modelfile.write(os.path.join(self.directory, name), model,
                                 training_state=state, training_arrays=opt_arrays)

    def resume_hint(self):
        """What an interruption message adds about this checkpoint."""
        return (f", {self.directory}/{self.LAST} those after the last whole epoch "
                "(resume=True goes on from there)")

    def restore(self, run):
        """Put the state of `last.npz` into `run` (a fastcnn.training.Run not yet
        started) and its model."""
        model, path = run.model, os.path.join(self.directory, self.LAST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"nothing to resume: {path} does not exist")
        with _modelfile.ModelFile(path) as f:
            layers = f.plan()  # before building anything from the file's architecture
            state, arrays = f.training_state(model.num_parameters())
            if state is None:
                raise ValueError(f"{path} is a model file without training state; it cannot be "
                                 f"resumed")
            _check_state(path, state)
            try:
                saved = type(model).from_config(f.model_config, layers=layers).get_config()
            except (TypeError, ValueError, KeyError) as e:
                raise _modelfile.bad(path, f"its architecture cannot be built ({e})") from None
            difference = _modelfile.architecture_difference(saved, model.get_config())
            if difference is not None:
                raise ValueError(f"{path} holds a different architecture than this model "
                                 f"({difference}); resume with the model it was made with, "
                                 f"or start a new checkpoint directory")
            for key, value in run.arguments.items():
                if state["arguments"].get(key) != value:
                    raise ValueError(
                        f"{path} was made with a different {self._ARGUMENT_NAMES.get(key, key)} "
                        f"({state['arguments'].get(key)!r}, now {value!r}); resume with the same "
                        f"data and arguments, or start a new checkpoint_dir")
            params, buffers = f.parameters(model.params), f.buffers(model.buffers)
        # everything that can be damaged is read before anything changes
        with _damaged(path, "history"):
            history = type(run.history)()
            history.restore(state["history"], state["batches"])
            if len(history.epoch_loss) != state["epochs_done"]:
                raise ValueError(f"it records {len(history.epoch_loss)} epochs, not "
                                 f"{state['epochs_done']}")
        rngs = [("rng", run.batches.rng)]
        if run.batches.augment_rng is not None:
            rngs.append(("augment_rng", run.batches.augment_rng))
        for key, rng in rngs:
            with _damaged(path, key):
                type(rng.bit_generator)().state = state[key]  # a trial on a throwaway copy
        with _damaged(path, "optimizer"):
            run.optimizer.load_state(state["optimizer"], arrays)
        with model.lock.writing():
            for name, value in params.items():
                model.params[name][...] = value
            for name, value in buffers.items():
                model.buffers[name][...] = value
        for key, rng in rngs:
            rng.bit_generator.state = state[key]
        run.history.restore(state["history"], state["batches"])
        run.epochs_done, self.best = state["epochs_done"], state["best"]


# The training state of a checkpoint: each entry and the JSON type it has.
_STATE_ENTRIES = {"arguments": dict, "optimizer": dict, "rng": dict, "history": dict,
                  "batches": list, "epochs_done": int, "best": (dict, type(None))}


_KIND_NAMES = {"best": "None or a dict"}


def _check_state(path, state):
    """A ValueError naming the file and the entry for a training state that
    lacks an entry or holds one of another type (a hand-damaged checkpoint)."""
    for key, kind in _STATE_ENTRIES.items():
        if key not in state:
            raise _modelfile.bad(path, f"its training state has no {key!r} entry")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise _modelfile.bad(path, f"its training state entry {key!r} is "
                                       f"{type(state[key]).__name__} {state[key]!r:.60}, not "
                                       f"{_KIND_NAMES.get(key, 'a ' + getattr(kind, '__name__', ''))}")
    if state["epochs_done"] < 0:
        raise _modelfile.bad(path, f"its training state entry 'epochs_done' is "
                                   f"{state['epochs_done']}")
    best = state["best"]
    if best is not None and not (set(best) == {"score", "epoch"}
                                 and isinstance(best["score"], (int, float))
                                 and isinstance(best["epoch"], int)):
        raise _modelfile.bad(path, f"its training state entry 'best' is {best!r:.60}, not "
                                   f"{{'score': number, 'epoch': int}}")


class _damaged:
    """`with _damaged(path, entry):` turns what reading a damaged entry raises
    into a ValueError naming the file and the entry."""

    def __init__(self, path, entry):
        self.path, self.entry = path, entry

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None and issubclass(kind, (KeyError, TypeError, ValueError, AttributeError,
                                                  IndexError, OverflowError)):
            raise _modelfile.bad(self.path, f"its training state entry {self.entry!r} is "
                                            f"damaged ({type(error).__name__}: {error})") from None
        return False


class ProgressBar(Callback):
    """What fit shows while it trains, by `verbose` (as Keras's fit has it):

        0  nothing
        1  a progress bar per epoch with images/s, the batch's loss and the
           smoothed loss (tqdm.auto: a widget in Jupyter when ipywidgets is
           installed, text on stderr elsewhere)
        2  one line per epoch on stdout: loss, smoothed loss, validation
           error, time (for logs and pipes, where a bar is noise)
    """

    def __init__(self, verbose=1):
        self.verbose = check_choice(verbose, "verbose", (0, 1, 2))
        self._bar = None

    def on_epoch_begin(self, epoch, model):
        if self.verbose != 1:
            return
        with warnings.catch_warnings():
            # tqdm.auto warns "IProgress not found" in a notebook without
            # ipywidgets, then draws a text bar: that bar is all we want
            warnings.filterwarnings("ignore", message="IProgress not found")
            from tqdm.auto import tqdm  # here, not at import: it brings in asyncio

        run = self.run
        self._bar = tqdm(total=run.batches.images_per_epoch, desc=f"epoch {epoch}/{run.epochs}",
                         unit="img", unit_scale=True, leave=True)

    def on_batch_end(self, epoch, batch, loss, model):
        if self._bar is None:
            return
        self._bar.update(self.run.batches.images_in(batch))
        self._bar.set_postfix(loss=f"{loss:.4f}",
                              smoothed=f"{self.run.history.smoothed_loss[-1]:.4f}", refresh=False)

    def on_batches_end(self, epoch, batch, model):
        self._close()

    def on_epoch_end(self, epoch, logs, model):
        if self.verbose != 2:
            return
        rate = self.run.batches.images_per_epoch / max(logs["seconds"], 1e-9)
        line = (f"epoch {epoch}/{self.run.epochs}: loss {logs['loss']:.4f}, smoothed "
                f"{logs['smoothed_loss']:.4f}")
        if "val_error" in logs:
            line += f", validation error {logs['val_error']:.4f}"
        print(f"{line}, {logs['seconds']:.2f} s ({rate:,.0f} images/s)", flush=True)

    def on_train_end(self, model, history):
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def resolve_verbose(verbose, progress=True):
    """fit's verbose (0, 1, 2 or "auto") as a number: "auto" (and None) is
    nothing when progress=False, a bar where someone watches (a terminal
    or a Jupyter kernel), else a line per epoch."""
    if verbose is None or (isinstance(verbose, str) and verbose == "auto"):
        if not progress:
            return 0
        return 1 if _watched() else 2
    if isinstance(verbose, bool):
        return int(verbose)
    return check_choice(verbose, "verbose", (0, 1, 2, "auto"))


def _watched():
    """Whether a bar would be seen: stderr is a terminal, or this is a
    Jupyter kernel (whose stderr is no terminal but shows bars)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _caller_outside_fastcnn():
    """The stacklevel of warnings.warn that names the first caller outside
    the package (the user's fit), not fastcnn's own loop."""
    package, frame, level = os.path.dirname(os.path.abspath(__file__)), sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


class NotLearningWarning(UserWarning):
    """A whole epoch of training did no better than chance (ChanceLevelCheck)."""


class ChanceLevelCheck(Callback):
    """Warn (NotLearningWarning, once per fit) when an epoch of at least
    MIN_BATCHES batches ends with its loss at chance level: the mean loss
    of its second half no lower than CLOSE x the loss of a model that
    ignores the image and outputs the class frequencies p of the training
    targets, the best a network that learns nothing can do:

        cross-entropy   -sum_k p_k ln p_k        (ln K for balanced classes)
        squared error   1/2 sum_k p_k (1 - p_k)   (eq. (13) at yhat = p)

    Such a run almost always has a learning rate too large for its model
    (saturated sigmoids, dead ReLUs); DivergenceCheck catches only the runs
    that reach NaN."""

    MIN_BATCHES = 10
    CLOSE = 0.98
    ABOVE = 1.08  # further above chance than SGD noise lifts a run on labels it cannot learn

    def on_train_begin(self, model, history):
        t = self.run.batches.t.reshape(self.run.batches.n, -1)
        p = t.mean(axis=0, dtype=np.float64)
        if model.loss == "cross_entropy":
            self.chance = float(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)))
        else:  # mean over samples of 1/2 sum_k (t_k - p_k)^2, exact for soft targets too
            self.chance = float(0.5 * np.sum(np.mean((t - p) ** 2, axis=0, dtype=np.float64)))
        self.warned = False

    def on_batches_end(self, epoch, batch, model):
        losses = self.run.history.loss[-batch:]
        if self.warned or batch < self.MIN_BATCHES or self.chance <= 0:
            return
        recent = float(np.mean(losses[len(losses) // 2:]))
        if recent < self.CLOSE * self.chance:
            return
        self.warned = True
        optimizer, (name, lr) = self.run.optimizer, model.default_optimizer
        if recent > self.ABOVE * self.chance:
            why = ("its loss is above that level, as when the outputs saturate: the learning "
                   "rate is too large for this model")
        else:
            why = ("the usual cause is a learning rate too large for this model; a far too "
                   "small one, or too few steps yet (the paper's sigmoid network sits at this "
                   "level for its first few hundred batches), look the same")
        own = ""
        kind = ("adam" if type(optimizer).__name__ == "Adam"
                else "momentum" if getattr(optimizer, "momentum", 0) else "sgd")
        if (name, lr) != (kind, optimizer.lr):
            own = f"; this model trains best with {name} at lr {lr:g}"
        warnings.warn(
            f"epoch {epoch}: the loss stayed at chance level (mean {recent:.4g} over the "
            f"epoch's last {len(losses) - len(losses) // 2} batches; {self.chance:.4g} is the "
            f"loss of predicting the class frequencies whatever the image): the network has "
            f"not learned. {why[0].upper() + why[1:]}. Try a learning rate 10x smaller than "
            f"{optimizer.lr:g} ({type(optimizer).__name__}){own}",
            NotLearningWarning, stacklevel=_caller_outside_fastcnn())


def check_callbacks(callbacks):
    """The list of callbacks fit was given (None: none), each a Callback."""
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be fastcnn.callbacks.Callback objects, got {cb!r}")
    return callbacks


__all__ = ["Callback", "ChanceLevelCheck", "CSVLogger", "DivergenceCheck", "EarlyStopping",
           "LearningRateSchedule", "ModelCheckpoint", "NotLearningWarning", "ProgressBar",
           "check_callbacks", "resolve_verbose"]
