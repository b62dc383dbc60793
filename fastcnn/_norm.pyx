"""Batch-normalisation kernels (src_c/norm_impl.h): one map (channel) per
`prange` iteration, each map's sums over the batch taken in sample order by
one thread, so the results do not depend on the number of threads.

Arrays are (N, C, S): S = H W positions per map for BatchNorm2D, 1 for
BatchNorm1D. Ioffe and Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift" (2015).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check


def batchnorm_train(const floating[:, :, ::1] x, const floating[::1] gamma,
                    const floating[::1] beta, double eps, floating[:, :, ::1] y,
                    double[::1] mean, double[::1] var, double[::1] invstd, int n_threads):
    """Normalise by the batch's own statistics:

        mean[c], var[c] = mean and biased variance of map c over the batch
        invstd[c] = 1 / sqrt(var[c] + eps)
        y = gamma[c] (x - mean[c]) invstd[c] + beta[c]

    x and y (N, C, S); gamma, beta (C,); mean, var, invstd (C,) float64, written.
    """
    cdef Py_ssize_t N = x.shape[0], S = x.shape[2]
    cdef int C = <int>x.shape[1], c
    check(N >= 1 and S >= 1, "empty batch")
    check(y.shape[0] == N and y.shape[1] == C and y.shape[2] == S, "y has the wrong shape")
    check(gamma.shape[0] == C and beta.shape[0] == C, "gamma or beta has the wrong length")
    check(mean.shape[0] == C and var.shape[0] == C and invstd.shape[0] == C,
          "mean, var or invstd has the wrong length")
    check(eps > 0, "eps must be > 0")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            kernels.batchnorm_stats(&x[0, 0, 0], N, C, S, c, &mean[c], &var[c])
            invstd[c] = 1.0 / sqrt(var[c] + eps)
            kernels.batchnorm_apply(&x[0, 0, 0], N, C, S, c, mean[c], gamma[c] * invstd[c],
                                    beta[c], &y[0, 0, 0])


def batchnorm_eval(const floating[:, :, ::1] x, const floating[::1] gamma,
                   const floating[::1] beta, const floating[::1] running_mean,
                   const floating[::1] running_var, double eps, floating[:, :, ::1] y,
                   int n_threads):
    """Normalise by the running estimates (inference):
    y = gamma[c] (x - running_mean[c]) / sqrt(running_var[c] + eps) + beta[c]."""
    cdef Py_ssize_t N = x.shape[0], S = x.shape[2]
    cdef int C = <int>x.shape[1], c
    check(y.shape[0] == N and y.shape[1] == C and y.shape[2] == S, "y has the wrong shape")
    check(gamma.shape[0] == C and beta.shape[0] == C and running_mean.shape[0] == C
          and running_var.shape[0] == C, "gamma, beta or a running estimate has the wrong length")
    check(eps > 0, "eps must be > 0")
    check(n_threads >= 1, "n_threads must be >= 1")
    if N == 0 or S == 0:
        return
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            kernels.batchnorm_apply(&x[0, 0, 0], N, C, S, c, running_mean[c],
                                    gamma[c] / sqrt(running_var[c] + eps), beta[c], &y[0, 0, 0])


def batchnorm_backward(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                       const double[::1] mean, const double[::1] invstd,
                       const floating[::1] gamma, floating[::1] dgamma, floating[::1] dbeta,
                       floating[:, :, ::1] dx, int n_threads):
    """Gradients of batchnorm_train, for its x, mean and invstd and dy = dL/dy:

        dbeta[c] = sum dy,   dgamma[c] = sum dy xhat,   xhat = (x - mean) invstd
        dx = gamma invstd (dy - dbeta / M - xhat dgamma / M)     (M = N S)

    dgamma and dbeta are overwritten; dx may be None (no input gradient)."""
    cdef Py_ssize_t N = x.shape[0], S = x.shape[2]
    cdef int C = <int>x.shape[1], c
    cdef bint want_dx = dx is not None
    cdef floating *dxp = NULL
    cdef double dg, db
    check(N >= 1 and S >= 1, "empty batch")
    check(dy.shape[0] == N and dy.shape[1] == C and dy.shape[2] == S, "dy has the wrong shape")
    check(mean.shape[0] == C and invstd.shape[0] == C and gamma.shape[0] == C
          and dgamma.shape[0] == C and dbeta.shape[0] == C,
          "mean, invstd, gamma, dgamma or dbeta has the wrong length")
    if want_dx:
        check(dx.shape[0] == N and dx.shape[1] == C and dx.shape[2] == S, "dx has the wrong shape")
        dxp = &dx[0, 0, 0]
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for c in prange(C, schedule="static", num_threads=n_threads):
            dg = 0.0  # assigned here, so each thread has its own (Cython's prange rule)
            db = 0.0
            kernels.batchnorm_backward(&x[0, 0, 0], &dy[0, 0, 0], N, C, S, c, mean[c], invstd[c],
                                       gamma[c], &dg, &db, dxp)
            dgamma[c] = <floating>dg
            dbeta[c] = <floating>db
