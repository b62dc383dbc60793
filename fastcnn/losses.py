"""The squared-error loss of eq. (13), averaged over the batch.

    L = 1/N sum_n 1/2 sum_i (yhat_n(i) - y_n(i))^2

with y one-hot. Its gradient dL/dyhat = (yhat - y) / N is where
backpropagation starts (eq. 15-16: dL/dyhat(i) = yhat(i) - y(i) per sample);
the 1/N is DeepLearnToolbox's averaging of the batch.
"""

import numpy as np

from fastcnn import _loss


def mse(yhat, target, grad=None):
    """Return (L, dL/dyhat) for outputs `yhat` (N, K) and targets (N, K) of
    one dtype; dL/dyhat goes into `grad` if given (same shape and dtype)."""
    if grad is None:
        grad = np.empty_like(yhat)
    loss = _loss.mse(yhat, target, grad)
    return loss, grad
