"""The squared-error loss of eq. (13), averaged over the batch.

    L = 1/N sum_n 1/2 sum_i (yhat_n(i) - y_n(i))^2

with y one-hot. Its gradient dL/dyhat = (yhat - y) / N is where
backpropagation starts (eq. 15-16: dL/dyhat(i) = yhat(i) - y(i) per sample);
the 1/N is DeepLearnToolbox's averaging of the batch.
"""

import numpy as np


def mse(yhat, target):
    """Return (L, dL/dyhat) for outputs `yhat` (N, K) and targets (N, K)."""
    n = yhat.shape[0]
    e = yhat - target
    loss = 0.5 * float(np.einsum("ij,ij->", e, e, dtype=np.float64)) / n
    e /= n
    return loss, e
