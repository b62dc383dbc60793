"""Fully connected layer kernels: eq. (12) forward; eq. (17)-(30) backward.

The forward and the input gradient run one sample per `prange` iteration;
the weight gradient one output row per iteration, each summing the samples
in order, so the result does not depend on the thread count
(src_c/dense_impl.h). Outputs are preallocated by the caller.

Equation numbers: Zhifei Zhang, "Derivation of Backpropagation in Convolutional Neural Network (CNN)" (2016).
"""

from cython cimport floating
from cython.parallel cimport prange

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check, check_activation



cdef enum:
    # samples that share each pass over W in the forward pass (dense_impl.h)
    SAMPLES_PER_PASS = 4

def dense_forward(const floating[:, ::1] f, const floating[:, ::1] W, const floating[::1] b,
                  floating[:, ::1] out, int act, int n_threads):
    """out[n] = f(W f[n] + b), eq. (12), f the activation code `act` (1 = sigma).

    f (N, F), W (K, F), b (K,), out (N, K).
    """
    cdef Py_ssize_t N = f.shape[0], blk, n
    cdef int F = <int>f.shape[1], K = <int>W.shape[0]
    check(W.shape[1] == F, "W has the wrong number of columns")
    check(b.shape[0] == K, "b has the wrong length")
    check(out.shape[0] == N and out.shape[1] == K, "out has the wrong shape")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        # SAMPLES_PER_PASS samples share each pass over W (the same sums as one at a time)
        for blk in prange((N + SAMPLES_PER_PASS - 1) // SAMPLES_PER_PASS, schedule="static",
                          num_threads=n_threads):
            n = blk * SAMPLES_PER_PASS
            kernels.dense_forward(&f[n, 0], <int>min(SAMPLES_PER_PASS, N - n), F, &W[0, 0], K,
                                  &b[0], act, &out[n, 0])


def dense_backward(const floating[:, ::1] f, const floating[:, ::1] W,
                   const floating[:, ::1] y, const floating[:, ::1] g, int act,
                   floating[:, ::1] dW, floating[::1] db, floating[:, ::1] df,
                   floating[:, ::1] delta, int n_threads):
    """Gradients of dense_forward given y = its output and g = dL/dy:

        delta = g * f'(z), from y    eq. (17), (23)   (g y (1 - y) for sigma)
        dW = sum_n delta[n] f[n]^T   eq. (19)
        db = sum_n delta[n]          eq. (24)
        df[n] = W^T delta[n]         eq. (30)         (skipped if df is None)

    f (N, F), W (K, F), y and g and delta (N, K) (delta: a workspace),
    dW (K, F) and db (K,) overwritten, df (N, F).
    """
    cdef Py_ssize_t N = f.shape[0], n, blk
    cdef int F = <int>f.shape[1], K = <int>W.shape[0], k, kp
    cdef bint want_df = df is not None
    cdef floating *dfp = NULL
    check(W.shape[1] == F, "W has the wrong number of columns")
    check(y.shape[0] == N and y.shape[1] == K and g.shape[0] == N and g.shape[1] == K,
          "y or g has the wrong shape")
    check(delta.shape[0] >= N and delta.shape[1] == K, "delta has the wrong shape")
    check(dW.shape[0] == K and dW.shape[1] == F and db.shape[0] == K, "dW or db has the wrong shape")
    if want_df:
        check(df.shape[0] == N and df.shape[1] == F, "df has the wrong shape")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    check(N >= 1, "empty batch")
    with nogil:
        for blk in prange((N + SAMPLES_PER_PASS - 1) // SAMPLES_PER_PASS, schedule="static",
                          num_threads=n_threads):
            n = blk * SAMPLES_PER_PASS
            if want_df:
                dfp = &df[n, 0]
            else:
                dfp = NULL
            kernels.dense_delta_input_grad(&g[n, 0], &y[n, 0], <int>min(SAMPLES_PER_PASS, N - n),
                                           K, act, &W[0, 0], F, &delta[n, 0], dfp)
        # rows in pairs, which share each load of f (the same sums as one row at a time)
        for kp in prange((K + 1) // 2, schedule="static", num_threads=n_threads):
            k = 2 * kp
            kernels.dense_weight_bias_grad(&f[0, 0], &delta[0, 0], N, F, K, k, min(k + 2, K),
                                           &dW[0, 0], &db[0])
