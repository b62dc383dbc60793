"""Losses and their gradients, in one pass each (src_c/loss_impl.h): the
squared error of eq. (13), and the softmax cross-entropy on scores, both
averaged over the batch."""

from cython cimport floating

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check


def mse(const floating[:, ::1] yhat, const floating[:, ::1] t, floating[:, ::1] grad):
    """Return L = 1/N sum_n 1/2 sum_i (yhat - t)^2 (eq. 13, batch mean) and
    write grad = dL/dyhat = (yhat - t) / N. All (N, K); the sum is in double."""
    cdef Py_ssize_t N = yhat.shape[0], K = yhat.shape[1]
    cdef double loss
    check(t.shape[0] == N and t.shape[1] == K and grad.shape[0] == N and grad.shape[1] == K,
          "yhat, t and grad must have the same shape")
    check(N >= 1 and K >= 1, "empty batch")
    with nogil:
        loss = kernels.mse(&yhat[0, 0], &t[0, 0], N * K, N, &grad[0, 0])
    return loss


def cross_entropy(const floating[:, ::1] z, const floating[:, ::1] t, floating[:, ::1] grad):
    """Return L = 1/N sum_n sum_k t[n, k] (logsumexp(z[n]) - z[n, k]), the
    cross-entropy of softmax(z) against targets t, and write grad = dL/dz =
    (softmax(z[n]) sum_k t[n, k] - t[n]) / N. All (N, K); the sum is in double."""
    cdef Py_ssize_t N = z.shape[0]
    cdef int K = <int>z.shape[1]
    cdef double loss
    check(t.shape[0] == N and t.shape[1] == K and grad.shape[0] == N and grad.shape[1] == K,
          "z, t and grad must have the same shape")
    check(N >= 1 and K >= 1, "empty batch")
    with nogil:
        loss = kernels.cross_entropy(&z[0, 0], &t[0, 0], N, K, &grad[0, 0])
    return loss
