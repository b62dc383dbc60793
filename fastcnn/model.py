"""Sequential models, and the paper's network.

`seed_cnn()` builds the network of Zhang's "Derivation of Backpropagation in
Convolutional Neural Network" (its Figure 1), which is the MATLAB
DeepLearnToolbox demo: 28x28 input, C1 (6 maps, 5x5, sigmoid), S1 (2x2
mean), C2 (12 maps, 5x5, sigmoid), S2 (2x2 mean), FC (192 -> 10, sigmoid),
squared error, SGD.

A model holds its layers and their parameters; the arrays of a call (layer
outputs, gradients, scratch) live in a workspace of that call
(fastcnn._workspace). So one model can serve several threads at once:
forward passes (forward, activations, predict, predict_proba,
predict_scores, evaluate) run side by side and each gives exactly what it
would give alone; a training step (backprop, a step of fit, an optimiser's
step) waits for them and has the model to itself, and forward passes wait
for it. `model.lock` is that lock, for code that changes parameters by hand.
"""

import math
from collections import Counter
from functools import partial

import numpy as np

from fastcnn import _activation, _modelfile, _threads, losses, optim, training
from fastcnn._threads import SharedLock
from fastcnn._validate import (
    check_dtype,
    check_images,
    check_int,
    check_labels,
    check_shape,
    check_targets,
)
from fastcnn._workspace import Workspace, WorkspacePool
from fastcnn.layers import (
    ACTIVATION_CODES,
    Activation,
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    MeanPool2D,
    layers_from_config,
)

# Default names follow the paper's letters: C for convolution, S for
# subsampling (pooling), F for fully connected.
_NAME_PREFIX = {"Conv2D": "C", "MeanPool2D": "S", "Dense": "F", "Flatten": "flatten",
                "Sigmoid": "sigmoid"}


class Sequential:
    """Layers applied one after the other.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple of int
        Shape of one input image (C, H, W).
    dtype : "float32" or "float64"
        Precision of parameters, activations and gradients.
    seed : int
        Seed of the numpy Generator that initialises the parameters.
    loss : "mse" or "cross_entropy"
        What backprop and fit minimise (fastcnn.losses): the paper's squared
        error on the outputs, or the softmax cross-entropy on the scores of
        a last layer without activation.
    classes : list of str, optional
        A name per output class (see `classes` below).
    default_optimizer : str or (str, float), optional
        What `fit` trains with when given neither an optimizer nor a
        learning rate: a name of fastcnn.optim.create ("sgd", "momentum",
        "adam") and its learning rate (optim.DEFAULT_LR by default). When not
        given: the paper's plain SGD with alpha = 1 for loss="mse" (the
        squared error of sigmoid outputs, which that rate suits), Adam with
        lr 1e-3 for "cross_entropy" (today's ReLU networks, which SGD at
        alpha = 1 sends to chance level). The builders of fastcnn.models set
        their own.

    Attributes
    ----------
    params, grads : dict of str -> ndarray
        Every parameter and its gradient, named "<layer>.<param>" in layer
        order. The arrays are the model's own: writing into them changes it.
    buffers : dict of str -> ndarray
        State that is not trained but saved with the model, named alike:
        batch norm's running estimates, dropout's key and mask count.
        Training passes (fit, backprop) update them; inference passes
        (forward, predict, evaluate) only read them.
    classes : list of str or None
        The name of each class, in output order (datasets.CLASS_NAMES gives
        those of the datasets), or None. Saved with the model; predict and
        evaluate on the command line print them.
    lock : fastcnn._threads.SharedLock
        Forward passes hold it for reading, training steps for writing; hold
        `with model.lock.writing():` to change parameters by hand while other
        threads use the model.

    Parameters that hold NaN or infinity (written into `params`, or left by
    a diverged training) are refused: forward, activations, backprop,
    predict, predict_proba, evaluate and fit raise ValueError naming the
    parameter, rather than return NaN outputs or meaningless predictions
    (unless told check_input=False, which skips every check).
    `fastcnn.load` refuses a file with such parameters in the same way.
    """

    # the layer outputs predict_scores keeps for a batch, at most (bytes)
    PREDICT_BYTES = 256 << 20

    def __init__(self, layers, input_shape, dtype="float32", seed=0, loss="mse", classes=None,
                 default_optimizer=None):
        if isinstance(layers, Layer):
            raise TypeError(f"layers must be a list of fastcnn layers, got a single layer "
                            f"{layers!r}: put it in a list")
        try:
            self.layers = list(layers)
        except TypeError:
            raise TypeError(f"layers must be a non-empty list of fastcnn layers, "
                            f"got {layers!r}") from None
        if loss not in losses.LOSSES:
            raise ValueError(f"loss must be one of {sorted(losses.LOSSES)}, got {loss!r}")
        self.loss = loss
        if not self.layers or not all(isinstance(layer, Layer) for layer in self.layers):
            bad = next((x for x in self.layers if not isinstance(x, Layer)), None)
            raise TypeError("layers must be a non-empty list of fastcnn layers"
                            + (f", got {bad!r} in it" if self.layers else ", got an empty one"))
        self.dtype = check_dtype(dtype)
        shape = check_shape(input_shape, "input_shape must be (channels, height, width)")
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        self.input_shape = shape
        if len({id(layer) for layer in self.layers}) != len(self.layers):
            raise ValueError("the same layer object appears twice; create one per position")
        if any(layer.dtype is not None for layer in self.layers):
            raise ValueError("a layer already belongs to another model; create new layers")
        given = [layer.name for layer in self.layers]
        try:
            self._name_layers()
            for layer in self.layers:
                shape = layer.build(shape, self.dtype)
            self.output_shape = shape
            if loss == "cross_entropy":
                self._check_scores_layer()
        except Exception:
            # leave the layers as they were given, so the user can fix and retry
            for layer, name in zip(self.layers, given):
                layer.unbuild(name)
            raise
        self._gather_parameters()
        self._folds = _inference_folds(self.layers)
        self.lock = SharedLock()
        # the pool makes workspaces from the layers, not from the model: it
        # must not keep the model alive (a reference cycle)
        self._workspaces = WorkspacePool(partial(Workspace, self.layers, self.output_shape,
                                                 self.dtype))
        self.stop_training = False  # set by a callback to end fit after the epoch
        self._classes = None
        self.classes = classes
        if default_optimizer is None:
            default_optimizer = "sgd" if loss == "mse" else "adam"
        self.default_optimizer = optim.name_and_rate(default_optimizer, "default_optimizer")
        self.reset_parameters(seed)

    @property
    def classes(self):
        return self._classes

    @classes.setter
    def classes(self, names):
        if names is None:
            self._classes = None
            return
        if not isinstance(names, (list, tuple, np.ndarray)):
            raise TypeError(f"classes must be a list of class names, got {names!r}")
        names = [str(n) for n in names]
        if len(names) != self.num_classes:
            raise ValueError(f"classes must name the model's {self.num_classes} classes, "
                             f"got {len(names)} names")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"classes must be distinct names; {twice!r} appears twice")
        self._classes = names

    def class_name(self, k):
        """The name of class id k: classes[k], or str(k) for a model without names."""
        return self._classes[k] if self._classes is not None else str(k)

    def _check_scores_layer(self):
        last = next((layer for layer in reversed(self.layers) if not isinstance(layer, Flatten)),
                    None)
        if not isinstance(last, (Dense, Conv2D)) or last.activation is not None:
            raise ValueError(
                "loss='cross_entropy' applies the softmax itself: the last layer must be a "
                f"Dense or Conv2D without activation (scores), not {last!r}")

    def _gather_parameters(self):
        # All parameters live in one flat array and all gradients in another;
        # each layer's arrays are views into them. An SGD step is then one
        # vector operation, and params/grads stay the layers' own arrays.
        total = sum(p.size for layer in self.layers for p in layer.params.values())
        self._flat_params = np.zeros(total, self.dtype)
        self._flat_grads = np.zeros(total, self.dtype)
        self.params, self.grads, offset = {}, {}, 0
        for layer in self.layers:
            for pname, p in list(layer.params.items()):
                span = slice(offset, offset + p.size)
                layer.params[pname] = self._flat_params[span].reshape(p.shape)
                layer.grads[pname] = self._flat_grads[span].reshape(p.shape)
                self.params[f"{layer.name}.{pname}"] = layer.params[pname]
                self.grads[f"{layer.name}.{pname}"] = layer.grads[pname]
                offset += p.size
        # state that is not trained (batch norm's running estimates, dropout's
        # mask counter): the layers' own arrays, saved with the model
        self.buffers = {f"{layer.name}.{bname}": b for layer in self.layers
                        for bname, b in layer.buffers.items()}

    def _name_layers(self):
        named = Counter(layer.name for layer in self.layers if layer.name is not None)
        for name, count in named.items():
            if count > 1:
                raise ValueError(f"two layers are named {name!r}; layer names must be unique")
        taken, counts = set(named), {}
        for layer in self.layers:
            if layer.name is None:
                prefix = _NAME_PREFIX.get(type(layer).__name__, type(layer).__name__.lower())
                while layer.name is None or layer.name in taken:
                    counts[prefix] = counts.get(prefix, 0) + 1
                    layer.name = f"{prefix}{counts[prefix]}"
                taken.add(layer.name)

    @property
    def flat_params(self):
        """Every parameter in one vector, in `params` order: the arrays of
        `params` are views into it (an optimiser updates it in one pass)."""
        return self._flat_params

    @property
    def flat_grads(self):
        """Every gradient in one vector, in `grads` order (views, as flat_params)."""
        return self._flat_grads

    # ------------------------------------------------------------------ setup
    def reset_parameters(self, seed=0):
        """Initialise every layer from np.random.default_rng(seed), in layer
        order (eq. (1)-(3) for the paper's layers): same seed, same weights."""
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        with self.lock.writing():
            for layer in self.layers:
                layer.reset_parameters(rng)

    def check_parameters(self):
        """Raise ValueError, naming it, if a parameter holds NaN or infinity."""
        if np.isfinite(self._flat_params).all():
            return
        name = next(n for n, p in self.params.items() if not np.isfinite(p).all())
        raise ValueError(f"parameter {name} contains NaN or infinity; re-initialise the model "
                         f"(reset_parameters) or load a good one")

    @property
    def num_classes(self):
        """K, the number of outputs per image of a classifier; ValueError for
        a model whose output is not one score per class."""
        if len(self.output_shape) != 1:
            raise ValueError(
                f"the model's output has shape {self.output_shape} per image; training and "
                f"evaluation need one score per class, shape (K,): end it with Flatten and Dense"
            )
        return self.output_shape[0]

    def num_parameters(self):
        """Number of trainable scalars (3898 for seed_cnn, as in section 1.1)."""
        return sum(p.size for p in self.params.values())

    def summary(self):
        """A table of layers with their output shapes and parameter counts."""
        rows = [("layer", "type", "output shape", "parameters")]
        rows.append(("input", "", str(("N",) + self.input_shape).replace("'", ""), ""))
        for layer in self.layers:
            rows.append((layer.name, layer.describe(),
                         str(("N",) + layer.output_shape).replace("'", ""),
                         str(layer.num_parameters())))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total parameters: {self.num_parameters()}  ({self.dtype.name})")
        name, lr = self.default_optimizer
        lines.append(f"fit without an optimizer trains with: {name}, lr {lr:g}")
        if self._classes is not None:
            lines.append("classes: " + ", ".join(self._classes))
        return "\n".join(lines)

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], input_shape={self.input_shape}, dtype={self.dtype.name!r})"

    # ------------------------------------------- passes, in a workspace
    def workspace(self, rows, train=False, threads=None):
        """A new Workspace (fastcnn._workspace) for batches of up to `rows`
        images: every array a forward pass needs, and with train=True a
        backward pass too (what train_batch needs), for `threads` kernel
        threads (default: fastcnn.get_num_threads()). One thread uses a
        workspace at a time."""
        return Workspace(self.layers, self.output_shape, self.dtype, check_int(rows, "rows"),
                         bool(train), _threads.resolve(threads))

    def _forward_pass(self, x, p, threads, fold=False):
        """Section 1, feedforward, through the Pass p; returns the output.
        With fold=True (inference, when no layer's own output is wanted),
        each Conv2D -> BatchNorm2D [-> activation] runs as one convolution
        (Conv2D.forward_folded_into)."""
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            p.xs[i] = x
            folding = self._folds.get(i) if fold and not p.scratch[i].train else None
            if folding:
                last, act = folding
                x = layer.forward_folded_into(x, p.out[i], p.scratch[i], threads,
                                              self.layers[i + 1], act)
                p.ys[i : last + 1] = [None] * (last - i) + [x]
                i = last + 1
                continue
            x = p.ys[i] = layer.forward_into(x, p.out[i], p.scratch[i], threads)
            i += 1
        return x

    def _backward_pass(self, grad, p, threads):
        """Section 2, backpropagation of dL/d(output) through the Pass p."""
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward_into(p.xs[i], p.ys[i], grad, p.dx[i], p.scratch[i],
                                                threads)

    def train_batch(self, x, t, workspace):
        """Sections 1 and 2 for one batch, without checks: the loss L of
        eq. (13) (batch mean), with `grads` filled.

        x (n, C, H, W) C-contiguous in the model's dtype and t (n, K) one-hot
        targets, as fit gathers them; `workspace` from
        workspace(rows >= n, train=True). Hold `lock.writing()` when other
        threads may use the model. `backprop` is the checked version.
        """
        # cheap checks, so that a misuse is an error here rather than deep in a kernel
        n = x.shape[0]
        if not workspace.train:
            raise ValueError("train_batch needs a workspace made with train=True")
        if x.dtype != self.dtype or t.dtype != self.dtype or not x.flags.c_contiguous:
            raise ValueError(f"train_batch takes C-contiguous {self.dtype.name} images and "
                             f"targets (as fit gathers them), got {x.dtype} and {t.dtype}")
        if x.shape[1:] != self.input_shape or t.shape != (n,) + self.output_shape:
            raise ValueError(f"train_batch takes images (n,) + {self.input_shape} and targets "
                             f"(n,) + {self.output_shape}, got {x.shape} and {t.shape}")
        p = workspace.at(n)
        yhat = self._forward_pass(x, p, workspace.threads)
        loss, grad = losses.LOSSES[self.loss](yhat, t, p.grad)
        self._backward_pass(grad, p, workspace.threads)
        return loss

    # ------------------------------------------------------- one step, paper
    def forward(self, x, training=False):
        """Section 1, feedforward: images x (N, C, H, W) -> outputs (N, K), a new array.

        An inference pass: batch norm uses its running estimates, dropout
        lets everything through. With training=True, the pass fit makes
        (batch statistics, which move the running estimates; dropout masks),
        holding the model for writing."""
        x = check_images(x, self.input_shape, self.dtype)
        threads = _threads.get_num_threads()
        lock = self.lock.writing() if training else self.lock.reading()
        with lock:
            self.check_parameters()
            with self._workspaces.borrow(x.shape[0], bool(training), threads) as ws:
                return self._forward_pass(x, ws.at(x.shape[0]), threads,
                                          fold=not training).copy()

    def activations(self, x):
        """Every layer's output for images x (N, C, H, W), in layer order:
        {layer name: new array (N,) + layer.output_shape}. The maps of the
        paper's Figure 1, for looking at."""
        x = check_images(x, self.input_shape, self.dtype)
        threads = _threads.get_num_threads()
        with self.lock.reading():
            self.check_parameters()
            with self._workspaces.borrow(x.shape[0], False, threads) as ws:
                p = ws.at(x.shape[0])
                self._forward_pass(x, p, threads)
                return {layer.name: y.copy() for layer, y in zip(self.layers, p.ys)}

    def backprop(self, x, y):
        """Sections 1 and 2: feedforward x, then backpropagate the loss of eq. (13)
        (averaged over the batch) against labels y (N,) or one-hot targets (N, K).

        Fills `grads` (overwriting them) and returns the batch loss L.
        """
        x = check_images(x, self.input_shape, self.dtype)
        t = check_targets(y, x.shape[0], self.num_classes, self.dtype)
        threads = _threads.get_num_threads()
        with self.lock.writing():
            self.check_parameters()
            with self._workspaces.borrow(x.shape[0], True, threads) as ws:
                return self.train_batch(x, t, ws)

    # ---------------------------------------------------------- training, use
    def fit(self, x, y, epochs=1, batch_size=50, lr=None, seed=0, progress=True,
            validation_data=None, callbacks=None, checkpoint_dir=None, resume=False,
            optimizer=None, schedule=None, validation_split=None, drop_last=False,
            label_smoothing=0.0, augment=None, verbose="auto"):
        """Train with SGD on mini-batches, as the DeepLearnToolbox demo does.

        Parameters
        ----------
        x : ndarray (N, C, H, W)
            Training images, floating point in [0, 1] (a memory-mapped array is fine).
        y : ndarray (N,) of int, or (N, K)
            Class labels, or one-hot targets.
        epochs : int
            Epochs in all; with resume=True, those already done count.
        batch_size : int
            Samples per SGD step (50 in the demo); the last batch of an epoch
            may be smaller. A batch_size larger than the number of images
            gives one batch of all of them per epoch, as in Keras and with
            PyTorch's DataLoader.
        lr : float, optional
            Learning rate alpha of eq. (65)-(70) for plain SGD. Give it to
            the optimizer instead when you pass one. With neither lr nor
            optimizer, fit trains with the model's `default_optimizer`
            (summary() names it): the demo's SGD at alpha = 1 for seed_cnn,
            Adam at 1e-3 for LeNet-5 and for other cross-entropy models.
        seed : int
            Seeds the shuffle of every epoch (np.random.default_rng(seed)).
        progress : bool
            False: show nothing (verbose=0).
        verbose : 0, 1, 2 or "auto"
            What to show, as Keras's fit: 0 nothing, 1 a progress bar per
            epoch with loss, smoothed loss and images/s (a widget in
            Jupyter), 2 one line per epoch. "auto": a bar where one is seen
            (a terminal, Jupyter), else a line per epoch (logs, pipes).
        validation_data : (x_val, y_val), optional
            Evaluated after each epoch into `History.val_error`.
        callbacks : list of fastcnn.callbacks.Callback, optional
            Called at the start and end of training, of each epoch, before
            each step and after each batch (see fastcnn.callbacks:
            EarlyStopping, CSVLogger).
        checkpoint_dir : path, optional
            Save `last.npz` after every epoch and `best.npz` after the best
            (lowest validation error, else lowest mean loss), atomically
            (fastcnn.callbacks.ModelCheckpoint).
        resume : bool
            Go on from checkpoint_dir/last.npz: its parameters, shuffling
            state, optimiser state and history. The result equals, bit for
            bit, that of a run that was never interrupted.
        optimizer : fastcnn.optim.Optimizer, optional
            Made for this model: SGD(model, lr, momentum, nesterov,
            weight_decay) or Adam(model, ...). Default: see lr.
        schedule : fastcnn.optim.StepLR, CosineLR or OneCycleLR, optional
            Sets the optimizer's learning rate at the start of every epoch
            (StepLR, CosineLR) or before every step (OneCycleLR).
        validation_split : float in (0, 1), optional
            Hold out this fraction of x and y (the last images, before any
            shuffling, as Keras does) as the validation data.
        drop_last : bool
            Leave out the last batch of an epoch when it is not full (as
            PyTorch's DataLoader(drop_last=True)).
        label_smoothing : float in [0, 1)
            For loss="cross_entropy": train against (1 - e) y + e / K instead
            of the one-hot y (PyTorch's CrossEntropyLoss(label_smoothing=e)).
        augment : list of fastcnn.augment steps, optional
            Applied in order to every training batch (RandomCrop,
            HorizontalFlip), seeded by `seed`.

        Returns
        -------
        History
            Per-batch loss and smoothed loss, per-epoch mean loss, time and
            validation error.

        For a given seed, the trained parameters are the same bit for bit
        whatever the number of threads. Ctrl-C finishes the current batch
        and raises KeyboardInterrupt with the model consistent (see
        fastcnn.training). If training diverges (a batch's loss, or a
        parameter after an epoch's last step, is NaN or infinite), fit
        raises FloatingPointError saying where, rather than go on with NaN.
        Other threads may predict with the model meanwhile: each of their
        calls sees the parameters between two steps (see `lock`).
        """
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            progress=progress, validation_data=validation_data,
                            callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume,
                            optimizer=optimizer, schedule=schedule,
                            validation_split=validation_split, drop_last=drop_last,
                            label_smoothing=label_smoothing, augment=augment, verbose=verbose)

    def predict_scores(self, x, batch_size=256, check_input=True):
        """Outputs (N, K) of `forward`, computed batch_size images at a time
        (memory stays small whatever N is; x may be memory-mapped).
        check_input=False skips the checks of x (shape, dtype, finite values)
        and of the parameters, for a caller that has made them (fit's
        validation data, checked once per fit)."""
        if check_input:
            x = check_images(x, self.input_shape, self.dtype, copy_dtype=False)
        batch_size = check_int(batch_size, "batch_size")
        threads = _threads.get_num_threads()
        n = x.shape[0]
        # a model with large maps computes fewer images at a time, so that
        # its workspace stays within PREDICT_BYTES (results do not depend on it)
        per_image = sum(math.prod(layer.output_shape) for layer in self.layers) * self.dtype.itemsize
        batch_size = max(1, min(batch_size, self.PREDICT_BYTES // max(per_image, 1)))
        out = np.empty((n,) + self.output_shape, dtype=self.dtype)
        with self.lock.reading():
            if check_input:
                self.check_parameters()
            with self._workspaces.borrow(min(batch_size, n), False, threads) as ws:
                for start in range(0, n, batch_size):
                    xb = np.ascontiguousarray(x[start : start + batch_size], dtype=self.dtype)
                    out[start : start + batch_size] = self._forward_pass(xb, ws.at(xb.shape[0]),
                                                                         threads, fold=True)
        if not np.isfinite(out).all():
            raise self._overflow(x, np.flatnonzero(~np.isfinite(out.reshape(n, -1)).all(axis=1)))
        return out

    def _overflow(self, x, rows):
        """The FloatingPointError for finite images whose outputs are not:
        which image, the first layer that overflowed, and how large the
        image's values are (parameters are finite, inputs are checked)."""
        i = int(rows[0])
        image = np.ascontiguousarray(x[i : i + 1], dtype=self.dtype)
        layer = next((name for name, a in self.activations(image).items()
                      if not np.isfinite(a).all()), "?")
        peak = float(np.max(np.abs(image)))
        return FloatingPointError(
            f"the forward pass overflowed: {len(rows)} image(s), the first at index {i}, give "
            f"non-finite outputs from finite values (first in layer {layer}); that image's "
            f"values reach {peak:.3g}, where fastcnn's networks expect pixels in [0, 1] or "
            f"standardised ones: scale the images")

    def predict_proba(self, x, batch_size=256):
        """Class probabilities (N, K): the softmax of the scores for a
        cross-entropy model; for the paper's squared error, the outputs as
        they are (sigmoids, not normalised)."""
        return scores_to_proba(self.predict_scores(x, batch_size), self.loss)

    def predict(self, x, batch_size=256, check_input=True):
        """Class ids (N,) int64: the index of the largest output for each image."""
        self.num_classes  # noqa: B018 - raises for a model that does not classify
        return np.argmax(self.predict_scores(x, batch_size, check_input), axis=1).astype(np.int64)

    def evaluate(self, x, y, batch_size=256, check_input=True):
        """Fraction of images misclassified, in [0, 1]; y is (N,) labels or (N, K) one-hot.
        check_input=False: as for predict_scores, and y must be (N,) labels."""
        if check_input:
            x = check_images(x, self.input_shape, self.dtype, copy_dtype=False)
            y = check_labels(y, x.shape[0], self.num_classes)
        return float(np.mean(self.predict(x, batch_size, check_input) != y))

    # ------------------------------------------------------------ persistence
    def get_config(self):
        """Architecture as JSON-compatible values (no parameters), with the
        class names and the default optimizer (see _modelfile.architecture)."""
        name, lr = self.default_optimizer
        config = {
            "input_shape": list(self.input_shape),
            "dtype": self.dtype.name,
            "loss": self.loss,
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()}
                       for layer in self.layers],
            "default_optimizer": {"name": name, "lr": lr},
        }
        if self._classes is not None:
            config["classes"] = list(self._classes)
        return config

    @classmethod
    def from_config(cls, config, layers=None):
        """Rebuild an (initialised, untrained) model from get_config()'s output
        (files written before classes and default_optimizer existed lack
        them); `layers`, if given, are those of config["layers"], already
        made by layers_from_config."""
        opt = config.get("default_optimizer")
        if opt is not None:
            if not isinstance(opt, dict) or set(opt) != {"name", "lr"}:
                raise ValueError(f"default_optimizer must be {{'name': ..., 'lr': ...}}, "
                                 f"got {opt!r}")
            opt = (opt["name"], opt["lr"])
        if layers is None:
            layers = layers_from_config(config)
        return cls(layers, config["input_shape"], dtype=config["dtype"],
                   loss=config.get("loss", "mse"), classes=config.get("classes"),
                   default_optimizer=opt)

    def __reduce__(self):
        # pickle (multiprocessing, Dask) holds what save() writes: the
        # architecture and the flat parameters. Pickling the attributes would
        # copy every layer's array on its own, so the layers' parameters would
        # no longer be views into _flat_params and an optimiser step after
        # unpickling would not reach them; it would also carry the workspaces.
        with self.lock.reading():  # the parameters of a whole number of steps
            flat = self._flat_params.copy()
            buffers = {name: b.copy() for name, b in self.buffers.items()}
        return (_unpickle, (type(self), self.get_config(), flat, self.stop_training, buffers))

    def save(self, path):
        """Write architecture and parameters to a .npz file (no pickle), atomically."""
        with self.lock.reading():
            _modelfile.write(path, self)


def scores_to_proba(scores, loss, threads=None):
    """Probabilities from a model's scores (N, K), in place: the softmax for
    loss="cross_entropy", the scores themselves for "mse"."""
    if loss == "cross_entropy":
        _activation.softmax_forward(scores, scores, _threads.resolve(threads))
    return scores


def _unpickle(cls, config, flat_params, stop_training, buffers=None):
    model = cls.from_config(config)
    model._flat_params[...] = flat_params
    for name, value in (buffers or {}).items():
        model.buffers[name][...] = value
    model.stop_training = stop_training
    return model


def seed_cnn(seed=0, dtype="float32", algorithm="auto"):
    """The network of the paper (Figure 1) and the DeepLearnToolbox demo.

    C1: Conv2D(1 -> 6, 5x5) + sigmoid      eq. (4)-(5)    (N, 6, 24, 24)
    S1: MeanPool2D(2)                      eq. (6)        (N, 6, 12, 12)
    C2: Conv2D(6 -> 12, 5x5) + sigmoid     eq. (7)-(8)    (N, 12, 8, 8)
    S2: MeanPool2D(2)                      eq. (9)        (N, 12, 4, 4)
    F:  Flatten                            eq. (10)       (N, 192)
    FC: Dense(192 -> 10) + sigmoid         eq. (12)       (N, 10)

    3898 parameters, initialised by eq. (1)-(3) from np.random.default_rng(seed).
    `algorithm` ("auto", "direct", "im2col" or "fft") is given to both Conv2D layers.
    """
    return Sequential(
        [
            Conv2D(1, 6, 5, activation="sigmoid", algorithm=algorithm, name="C1"),
            MeanPool2D(2, name="S1"),
            Conv2D(6, 12, 5, activation="sigmoid", algorithm=algorithm, name="C2"),
            MeanPool2D(2, name="S2"),
            Flatten(name="F"),
            Dense(192, 10, activation="sigmoid", name="FC"),
        ],
        input_shape=(1, 28, 28),
        dtype=dtype,
        seed=seed,
        default_optimizer=("sgd", 1.0),  # the demo's alpha
    )


def _inference_folds(layers):
    """{i: (last, act)}: layers i..last are a Conv2D without activation, the
    BatchNorm2D of its maps and, if one follows, an element-wise activation
    (code act, else 0), which inference runs as one convolution."""
    folds = {}
    for i, layer in enumerate(layers[:-1]):
        norm = layers[i + 1]
        if not (isinstance(layer, Conv2D) and layer.activation is None
                and type(norm) is BatchNorm2D and norm.maps == layer.out_maps):
            continue
        after = layers[i + 2] if i + 2 < len(layers) else None
        if isinstance(after, Activation) and after.function in ACTIVATION_CODES:
            folds[i] = (i + 2, ACTIVATION_CODES[after.function])
        else:
            folds[i] = (i + 1, 0)
    return folds
