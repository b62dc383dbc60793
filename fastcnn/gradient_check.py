"""Backpropagation checked numerically: `fastcnn.gradcheck`.

For a sample of the entries p of every parameter, the central difference

    (L(p + eps) - L(p - eps)) / (2 eps)

of the batch loss L (eq. (13) or the cross-entropy) is compared with the
gradient that backprop computes (sections 2 and 3 of Zhang's derivation).
They agree to about eps^2 plus rounding, which float64 keeps near 1e-9 for
eps = 1e-5; float32 rounding would swamp the difference, so the check needs
a float64 model.
"""

from typing import NamedTuple

import numpy as np

from fastcnn._validate import check_int, check_positive_float


class GradientCheck(NamedTuple):
    """What gradcheck found: per parameter name, the entries it checked and
    the largest relative difference |numeric - exact| / max(|numeric|,
    |exact|, 1e-7) among them."""

    entries: dict
    errors: dict
    rtol: float

    @property
    def worst(self):
        """The largest relative difference over all parameters."""
        return max(self.errors.values(), default=0.0)

    @property
    def ok(self):
        """True if every difference is below rtol."""
        return self.worst < self.rtol


def gradcheck(model, x, y, samples=25, eps=1e-5, rtol=1e-5, seed=0):
    """Compare model.backprop's gradients with central differences of the loss.

    Parameters
    ----------
    model : Sequential, float64
    x, y : a batch, as backprop takes it (images (N, C, H, W), labels or targets)
    samples : int
        Entries checked per parameter tensor (all of a smaller one), chosen
        at random without repeats.
    eps : float
        The step of the central difference.
    rtol : float
        The largest relative difference that passes (GradientCheck.ok).
    seed : int or numpy.random.Generator
        Chooses the entries.

    Returns
    -------
    GradientCheck

    The model's parameters are changed by +-eps one at a time and put back
    exactly; its gradients are left as backprop computes them at the
    parameters given. Other threads wait while the check runs.
    """
    if np.dtype(model.dtype) != np.float64:
        raise ValueError(f"gradcheck needs a float64 model (central differences in "
                         f"{np.dtype(model.dtype).name} are swamped by rounding); build it with "
                         f"dtype='float64'")
    samples = check_int(samples, "samples")
    eps = check_positive_float(eps, "eps")
    rtol = check_positive_float(rtol, "rtol")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(
        check_int(seed, "seed", minimum=0))
    entries, errors = {}, {}
    with model.lock.writing():
        model.backprop(x, y)
        exact = {name: g.copy() for name, g in model.grads.items()}
        for name, p in model.params.items():
            flat = p.reshape(-1)
            picks = rng.choice(flat.size, min(samples, flat.size), replace=False)
            worst = 0.0
            for i in picks:
                saved = flat[i]
                flat[i] = saved + eps
                up = model.backprop(x, y)
                flat[i] = saved - eps
                down = model.backprop(x, y)
                flat[i] = saved
                numeric = (up - down) / (2 * eps)
                e = exact[name].reshape(-1)[i]
                worst = max(worst, abs(numeric - e) / max(abs(numeric), abs(e), 1e-7))
            entries[name], errors[name] = len(picks), worst
        model.backprop(x, y)
    return GradientCheck(entries, errors, rtol)
