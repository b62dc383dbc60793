"""Stochastic gradient descent, section 3, eq. (65)-(70): p <- p - alpha * dp."""

import numpy as np

from fastcnn._validate import check_positive_float


class SGD:
    """Plain SGD on every parameter of `model`, in place.

    Parameters
    ----------
    model : Sequential
        Its `params` are updated with its `grads` (as filled by `backprop`).
    lr : float
        The learning rate alpha of section 3 (1.0 in the DeepLearnToolbox demo).
    """

    def __init__(self, model, lr=1.0):
        self.model = model
        self.lr = check_positive_float(lr, "lr")
        self._scratch = None

    def step(self):
        """One update of every parameter: eq. (65)-(70)."""
        flat = getattr(self.model, "_flat_params", None)
        if flat is not None:
            # a Sequential keeps all parameters in one array: one update, into
            # a scratch array kept from step to step (nothing allocated)
            if self._scratch is None or self._scratch.shape != flat.shape:
                self._scratch = np.empty_like(flat)
            np.multiply(self.model._flat_grads, self.lr, out=self._scratch)
            flat -= self._scratch
            return
        grads = self.model.grads
        for name, p in self.model.params.items():
            p -= self.lr * grads[name]

    def __repr__(self):
        return f"SGD(lr={self.lr})"
