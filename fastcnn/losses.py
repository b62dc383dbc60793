"""Losses, averaged over the batch, and their gradients.

mse, the paper's squared error of eq. (13):

    L = 1/N sum_n 1/2 sum_i (yhat_n(i) - y_n(i))^2,   dL/dyhat = (yhat - y) / N

with y one-hot: where backpropagation starts (eq. 15-16 per sample; the 1/N
is DeepLearnToolbox's averaging of the batch).

cross_entropy, the softmax cross-entropy on scores z (logits) from a last
layer without activation:

    L = 1/N sum_n -sum_k y_nk log softmax(z_n)_k,    dL/dz = (softmax(z) - y) / N

fused and stable: log(softmax) is computed as z - logsumexp(z), never as the
log of a softmax that may have underflowed.
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


def cross_entropy(scores, target, grad=None):
    """Return (L, dL/dscores) for scores (N, K) and targets (N, K) (one-hot,
    or rows of class probabilities); the gradient goes into `grad` if given."""
    if grad is None:
        grad = np.empty_like(scores)
    loss = _loss.cross_entropy(scores, target, grad)
    return loss, grad


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}
