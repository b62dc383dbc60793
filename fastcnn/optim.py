"""Optimisers and learning-rate schedules.

SGD is section 3 of the paper, eq. (65)-(70): p <- p - alpha * dp, with the
usual additions (momentum, Nesterov, weight decay). Adam is Kingma and Ba's.
Both update, in place, the parameters of a model from its gradients (as
`backprop` leaves them), following PyTorch's torch.optim update rules, so
the same settings train the same way in both.

A schedule sets the learning rate from the optimiser's initial rate: at the
start of each epoch of fit (StepLR, CosineLR), or before every step
(OneCycleLR: warm-up, then decay).

`create("sgd" | "momentum" | "adam", model)` makes one by name, with the
learning rate of DEFAULT_LR unless given: what the command line and the
Dask sweeps use.
"""

import math

import numpy as np

from fastcnn import _optim, _threads
from fastcnn._validate import (
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive_float,
)
from fastcnn.layers import Conv2D, Dense


class Optimizer:
    """Base class: holds the model and the learning rate `lr`.

    Subclasses implement step(); config(), state() and load_state() let a
    checkpoint of fit save and restore everything the optimiser remembers,
    so that a resumed fit continues bit for bit.
    """

    def __init__(self, model, lr, decay=None):
        self.model = model
        self.lr = check_positive_float(lr, "lr")
        self._flat = getattr(model, "flat_params", None)
        self._scratch = None
        self.decay = self._check_decay(decay)
        self._decay_mask = None  # 1 where weight decay applies, 0 elsewhere (decay given)

    def __getstate__(self):
        # _flat is a view of the model's parameters: a pickled copy of it
        # would be a separate array, and steps after unpickling would miss
        # the model. It is taken from the (unpickled) model again instead.
        state = self.__dict__.copy()
        state["_flat"] = state["_scratch"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._flat = getattr(self.model, "flat_params", None)

    def _check_decay(self, decay):
        """The parameter names weight decay applies to (None: all of them)."""
        if decay is None:
            return None
        params = getattr(self.model, "params", {})
        names = [n for n in params if decay(n)] if callable(decay) else list(decay)
        unknown = [n for n in names if n not in params]
        if isinstance(decay, str) or unknown:
            raise ValueError(f"decay must be parameter names of the model (or a function of a "
                             f"name), got {decay!r}" + (f"; unknown: {unknown}" if unknown else ""))
        return [n for n in params if n in set(names)]  # in the model's order

    def _decayed_mask(self):
        """The flat 0/1 vector of decay (built once)."""
        if self._decay_mask is None:
            mask = np.zeros_like(self._flat)
            offset = 0
            for name, p in self.model.params.items():
                if name in self.decay:
                    mask[offset:offset + p.size] = 1
                offset += p.size
            self._decay_mask = mask
        return self._decay_mask

    def step(self, threads=None):
        """Update every parameter once from the current gradients, holding the
        model's lock for writing; `threads` as fastcnn.get_num_threads()."""
        if self._flat is None:
            raise TypeError(f"{type(self).__name__} needs a fastcnn Sequential model")
        with self.model.lock.writing():
            self._update(_threads.resolve(threads))

    def _update(self, threads):
        raise NotImplementedError

    def config(self):
        """The hyperparameters, as JSON-compatible values."""
        config = {"type": type(self).__name__, "lr": self.lr}
        if self.decay is not None:
            config["decay"] = list(self.decay)
        return config

    def state(self):
        """(JSON-compatible state, {name: array}): what the optimiser remembers."""
        return {}, {}

    def load_state(self, state, arrays):
        """Restore what state() returned."""

    def _flat_arrays(self):
        if self._flat is None:
            raise TypeError(f"{type(self).__name__} needs a fastcnn Sequential model")
        if self._scratch is None:
            self._scratch = np.empty_like(self._flat)
        return self._flat, self.model.flat_grads, self._scratch

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, eq. (65)-(70): p <- p - lr * g.

    With weight decay, g = dp + weight_decay * p; with momentum, a velocity
    v <- momentum * v + g (v = g at the first step) replaces g, or, with
    nesterov=True, g + momentum * v does (PyTorch's rules).

    Parameters
    ----------
    model : Sequential
    lr : float
        The learning rate alpha of section 3 (1.0 in the DeepLearnToolbox demo).
    momentum : float in [0, 1)
    nesterov : bool
    weight_decay : float >= 0
        The L2 penalty's factor.
    decay : list of parameter names, or a function name -> bool, optional
        The parameters weight decay applies to (default: all);
        `weights_only(model)` names the weights of Conv2D and Dense layers,
        leaving biases and batch norm's parameters out (as PyTorch's
        parameter groups or optax's masks do).
    """

    def __init__(self, model, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0,
                 decay=None):
        super().__init__(model, lr, decay)
        self.momentum = check_fraction(momentum, "momentum")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        nesterov = check_bool(nesterov, "nesterov")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = nesterov
        self._velocity = None

    def step(self, threads=None):
        """One update of every parameter: eq. (65)-(70)."""
        if self._flat is None:  # any object with params and grads dictionaries
            if self.momentum or self.weight_decay:
                raise TypeError("momentum and weight decay need a fastcnn Sequential model")
            for name, p in self.model.params.items():
                p -= self.lr * self.model.grads[name]
            return
        super().step(threads)

    def _update(self, threads):
        p, g, scratch = self._flat_arrays()
        if not self.momentum and not self.weight_decay:
            # the paper's update: one operation over all the model's parameters
            np.multiply(g, self.lr, out=scratch)
            p -= scratch
            return
        d = scratch
        np.copyto(d, g)
        if self.weight_decay:
            d += self.weight_decay * (p if self.decay is None else p * self._decayed_mask())
        if self.momentum:
            if self._velocity is None:
                self._velocity = d.copy()
            else:
                self._velocity *= self.momentum
                self._velocity += d
            if self.nesterov:
                d += self.momentum * self._velocity
            else:
                np.copyto(d, self._velocity)
        d *= self.lr
        p -= d

    def config(self):
        return dict(super().config(), momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)

    def state(self):
        return {}, ({} if self._velocity is None else {"velocity": self._velocity.copy()})

    def load_state(self, state, arrays):
        self._velocity = None
        if "velocity" in arrays:
            self._velocity = _state_array(self, arrays, "velocity")


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), with PyTorch's update rule:

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    weight_decay adds weight_decay * p to g (an L2 penalty, as torch.optim.Adam),
    or with decoupled=True multiplies p by 1 - lr * weight_decay first
    (as torch.optim.AdamW).
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False, decay=None):
        super().__init__(model, lr, decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (check_fraction(betas[0], "betas[0]"), check_fraction(betas[1], "betas[1]"))
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        self.decoupled = check_bool(decoupled, "decoupled")
        self.t = 0
        self._m = self._v = None

    def _update(self, threads):
        """One Adam update of every parameter."""
        p, g, _ = self._flat_arrays()
        b1, b2 = self.betas
        if self._m is None:
            self._m, self._v = np.zeros_like(p), np.zeros_like(p)
        self.t += 1
        if self.decay is None or not self.weight_decay:
            _optim.adam_step(p, g, self._m, self._v, self.lr, b1, b2, self.eps, self.t,
                             self.weight_decay, self.decoupled, threads)
            return
        # the parameters with and without decay, as runs of the flat vector
        for lo, hi, decayed in self._runs():
            _optim.adam_step(p[lo:hi], g[lo:hi], self._m[lo:hi], self._v[lo:hi], self.lr, b1,
                             b2, self.eps, self.t, self.weight_decay if decayed else 0.0,
                             self.decoupled, threads)

    def _runs(self):
        """(start, stop, decayed) of the flat vector's runs of parameters with
        and without weight decay."""
        runs, offset = [], 0
        for name, p in self.model.params.items():
            decayed = name in self.decay
            if runs and runs[-1][2] == decayed:
                runs[-1][1] = offset + p.size
            else:
                runs.append([offset, offset + p.size, decayed])
            offset += p.size
        return runs

    def config(self):
        return dict(super().config(), betas=list(self.betas), eps=self.eps,
                    weight_decay=self.weight_decay, decoupled=self.decoupled)

    def state(self):
        if self._m is None:
            return {"t": self.t}, {}
        return {"t": self.t}, {"m": self._m.copy(), "v": self._v.copy()}

    def load_state(self, state, arrays):
        t = state.get("t", 0)
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"Adam's step count t must be an integer >= 0, got {t!r}")
        self.t = t
        self._m = self._v = None
        if "m" in arrays and "v" in arrays:
            self._m, self._v = _state_array(self, arrays, "m"), _state_array(self, arrays, "v")


def _state_array(optimizer, arrays, name):
    """arrays[name] as the optimiser's own copy, if it is one finite number
    per parameter (a damaged checkpoint must not reach the kernels)."""
    p = optimizer._flat_arrays()[0]
    a = arrays[name]
    if not isinstance(a, np.ndarray) or a.shape != p.shape or a.dtype.kind != "f":
        raise ValueError(f"{type(optimizer).__name__} state {name!r} has "
                         f"{getattr(a, 'dtype', type(a).__name__)} shape {np.shape(a)}; "
                         f"expected one float per parameter, shape {p.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{type(optimizer).__name__} state {name!r} contains NaN or infinity")
    return np.array(a, dtype=p.dtype)


class StepLR:
    """lr = initial lr * gamma ** ((epoch - 1) // step_size): divide by 1/gamma
    every step_size epochs (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size")
        self.gamma = check_positive_float(gamma, "gamma")

    def __call__(self, epoch, initial_lr):
        """The learning rate of epoch `epoch` (counting from 1)."""
        return initial_lr * self.gamma ** ((epoch - 1) // self.step_size)

    def config(self):
        """The schedule's settings, as JSON-compatible values."""
        return {"type": "StepLR", "step_size": self.step_size, "gamma": self.gamma}


class CosineLR:
    """lr = min_lr + (initial lr - min_lr) (1 + cos(pi (epoch - 1) / epochs)) / 2:
    from the initial rate down to min_lr over `epochs` epochs along a half
    cosine (torch.optim.lr_scheduler.CosineAnnealingLR with T_max = epochs)."""

    def __init__(self, epochs, min_lr=0.0):
        self.epochs = check_int(epochs, "epochs")
        self.min_lr = check_nonnegative(min_lr, "min_lr")

    def __call__(self, epoch, initial_lr):
        """The learning rate of epoch `epoch` (counting from 1)."""
        return self.min_lr + (initial_lr - self.min_lr) * (
            1 + math.cos(math.pi * (epoch - 1) / self.epochs)) / 2

    def config(self):
        """The schedule's settings, as JSON-compatible values."""
        return {"type": "CosineLR", "epochs": self.epochs, "min_lr": self.min_lr}


def weights_only(model):
    """The names of the weights of the model's Conv2D and Dense layers: what
    weight decay usually applies to (not biases, not batch norm's scale and
    shift). For SGD(..., decay=weights_only(model))."""
    return [f"{layer.name}.weight" for layer in model.layers
            if isinstance(layer, (Conv2D, Dense))]


class OneCycleLR:
    """A learning rate set before every step (Smith and Topin's one-cycle
    policy, as PyTorch's OneCycleLR computes it): from start x the
    optimiser's rate up to the rate itself over the first `warmup` fraction
    of the steps, then down to end x the rate at the last step, linearly or
    along a half cosine.

    With T the steps of the whole fit, s the step from 0, the warm-up ending
    at step E1 = warmup T - 1 and the decay at E2 = T - 1:

        s <= E1: lr = a + (peak - a) s / E1                          a = start peak
        s >  E1: lr = peak + (b - peak) d((s - E1) / (E2 - E1))      b = end peak

    d(u) = u ("linear") or (1 - cos(pi u)) / 2 ("cosine"). This is
    torch.optim.lr_scheduler.OneCycleLR(max_lr=peak, pct_start=warmup,
    div_factor=1 / start, final_div_factor=start / end, three_phase=False).
    """

    per_step = True

    def __init__(self, warmup=0.2, start=0.1, end=0.0, decay="linear"):
        self.warmup = check_fraction(warmup, "warmup")
        self.start = check_nonnegative(start, "start")
        self.end = check_nonnegative(end, "end")
        self.decay = check_choice(decay, "decay", ("linear", "cosine"))

    def _anneal(self, a, b, u):
        if self.decay == "cosine":
            return b + (a - b) / 2 * (math.cos(math.pi * u) + 1)
        return (b - a) * u + a

    def __call__(self, step, total, initial_lr):
        """The learning rate of step `step` (from 0) of `total`."""
        peak = initial_lr
        e1, e2 = self.warmup * total - 1, total - 1
        if step <= e1 and e1 > 0:
            return self._anneal(self.start * peak, peak, step / e1)
        start = max(e1, 0)
        return self._anneal(peak, self.end * peak, (step - start) / max(e2 - start, 1))

    def config(self):
        """The schedule's settings, as JSON-compatible values."""
        return {"type": "OneCycleLR", "warmup": self.warmup, "start": self.start,
                "end": self.end, "decay": self.decay}


# The learning rate each optimiser starts from unless told otherwise: the
# paper's alpha for plain SGD, and the usual rates with momentum and for Adam.
DEFAULT_LR = {"sgd": 1.0, "momentum": 0.1, "adam": 1e-3}
DEFAULT_MOMENTUM = 0.9  # of "momentum"


def name_and_rate(spec, what="optimizer"):
    """(name, lr) from a name of `create` or a (name, lr) pair; lr defaults
    to DEFAULT_LR[name]."""
    if isinstance(spec, str):
        name, lr = spec, None
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, lr = spec
    else:
        raise TypeError(f"{what} must be one of {tuple(DEFAULT_LR)} or a (name, lr) pair, "
                        f"got {spec!r}")
    check_choice(name, what, tuple(DEFAULT_LR))
    lr = DEFAULT_LR[name] if lr is None else check_positive_float(lr, f"{what}'s lr")
    return name, lr


def create(name, model, lr=None, momentum=None, weight_decay=0.0):
    """An optimiser for `model` by name: "sgd" (the paper's eq. (65)-(70)),
    "momentum" (SGD with DEFAULT_MOMENTUM unless given) or "adam"; lr
    defaults to DEFAULT_LR[name]."""
    check_choice(name, "optimizer", tuple(DEFAULT_LR))
    lr = DEFAULT_LR[name] if lr is None else lr
    if name == "adam":
        if momentum is not None:
            raise ValueError("momentum is an argument of SGD; Adam has betas instead")
        return Adam(model, lr=lr, weight_decay=weight_decay)
    if momentum is None:
        momentum = DEFAULT_MOMENTUM if name == "momentum" else 0.0
    return SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
