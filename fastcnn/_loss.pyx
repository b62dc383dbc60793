"""Losses and their gradients, in one pass each (src_c/loss_impl.h): the
squared error of eq. (13), and the softmax cross-entropy on scores, both
averaged over the batch."""

from cython cimport floating

cdef extern from "kernels.h" nogil:
    const char *fc_select_isa(int want_avx2)
    double fc_mse_f32(const float *yhat, const float *t, Py_ssize_t E, Py_ssize_t N, float *grad)
    double fc_mse_f64(const double *yhat, const double *t, Py_ssize_t E, Py_ssize_t N,
                      double *grad)
    double fc_cross_entropy_f32(const float *z, const float *t, Py_ssize_t N, int K, float *grad)
    double fc_cross_entropy_f64(const double *z, const double *t, Py_ssize_t N, int K,
                                double *grad)


def set_isa(bint avx2):
    """Run the AVX2+FMA kernels if `avx2` and the CPU has them, else the
    baseline ones; returns the name of the version in use."""
    return fc_select_isa(avx2).decode()


ISA = set_isa(True)


def mse(const floating[:, ::1] yhat, const floating[:, ::1] t, floating[:, ::1] grad):
    """Return L = 1/N sum_n 1/2 sum_i (yhat - t)^2 (eq. 13, batch mean) and
    write grad = dL/dyhat = (yhat - t) / N. All (N, K); the sum is in double."""
    cdef Py_ssize_t N = yhat.shape[0], K = yhat.shape[1]
    cdef double loss
    if t.shape[0] != N or t.shape[1] != K or grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError("fastcnn._loss: yhat, t and grad must have the same shape")
    if N < 1 or K < 1:
        raise ValueError("fastcnn._loss: empty batch")
    with nogil:
        if floating is float:
            loss = fc_mse_f32(&yhat[0, 0], &t[0, 0], N * K, N, &grad[0, 0])
        else:
            loss = fc_mse_f64(&yhat[0, 0], &t[0, 0], N * K, N, &grad[0, 0])
    return loss


def cross_entropy(const floating[:, ::1] z, const floating[:, ::1] t, floating[:, ::1] grad):
    """Return L = 1/N sum_n sum_k t[n, k] (logsumexp(z[n]) - z[n, k]), the
    cross-entropy of softmax(z) against targets t, and write grad = dL/dz =
    (softmax(z[n]) sum_k t[n, k] - t[n]) / N. All (N, K); the sum is in double."""
    cdef Py_ssize_t N = z.shape[0]
    cdef int K = <int>z.shape[1]
    cdef double loss
    if t.shape[0] != N or t.shape[1] != K or grad.shape[0] != N or grad.shape[1] != K:
        raise ValueError("fastcnn._loss: z, t and grad must have the same shape")
    if N < 1 or K < 1:
        raise ValueError("fastcnn._loss: empty batch")
    with nogil:
        if floating is float:
            loss = fc_cross_entropy_f32(&z[0, 0], &t[0, 0], N, K, &grad[0, 0])
        else:
            loss = fc_cross_entropy_f64(&z[0, 0], &t[0, 0], N, K, &grad[0, 0])
    return loss
