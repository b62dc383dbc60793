"""Convolution-layer kernels: forward, and backward (bias, weight, input gradients).

Each entry point checks that the shapes of its arguments agree (bounds checks
are off in this module), then runs the per-sample C kernels of
src_c/conv_impl.h over the batch with `prange`, one sample per iteration.
Callers (fastcnn.layers) pass C-contiguous arrays of one dtype, which Cython's
fused-type dispatch enforces. Outputs are preallocated by the caller.

Equation numbers: Zhang, "Derivation of Backpropagation in CNN" (seeds/000).
"""

from cython cimport floating
from cython.parallel cimport prange, threadid

cdef extern from "kernels.h" nogil:
    void fc_conv_forward_f32(const float *x, int C, int H, int W, const float *k,
                             int M, int KH, int KW, const float *bias, int sigmoid,
                             float *out)
    void fc_conv_forward_f64(const double *x, int C, int H, int W, const double *k,
                             int M, int KH, int KW, const double *bias, int sigmoid,
                             double *out)
    void fc_conv_backward_f32(const float *x, int C, int H, int W, const float *k,
                              int M, int KH, int KW, const float *y, const float *g,
                              int sigmoid, float *dpad, float *dk, float *db,
                              float *dx)
    void fc_conv_backward_f64(const double *x, int C, int H, int W, const double *k,
                              int M, int KH, int KW, const double *y, const double *g,
                              int sigmoid, double *dpad, double *dk, double *db,
                              double *dx)
    void fc_sum_samples_f32(const float *ws, Py_ssize_t N, Py_ssize_t E,
                            Py_ssize_t e0, Py_ssize_t e1, float *out)
    void fc_sum_samples_f64(const double *ws, Py_ssize_t N, Py_ssize_t E,
                            Py_ssize_t e0, Py_ssize_t e1, double *out)

cdef enum:
    # Parameters summed per prange iteration in the sample reduction.
    SUM_CHUNK = 256


cdef inline void _need(bint ok, str what) except *:
    if not ok:
        raise ValueError("fastcnn._conv: " + what)


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                 const floating[::1] bias, floating[:, :, :, ::1] out,
                 bint sigmoid, int n_threads):
    """Valid true convolution of every input map with its kernel, plus bias,
    through the sigmoid: eq. (4)-(5) and (7)-(8),

        out[n, q] = sigma(sum_p x[n, p] * k[q, p] + bias[q])

    x (N, C, H, W), k (M, C, KH, KW), bias (M,), out (N, M, H-KH+1, W-KW+1).
    The sigmoid is skipped when `sigmoid` is false.
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    _need(k.shape[1] == C, "kernel input maps != input maps")
    _need(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    _need(bias.shape[0] == M, "bias length != output maps")
    _need(out.shape[0] == N and out.shape[1] == M and out.shape[2] == H - KH + 1
          and out.shape[3] == W - KW + 1, "output array has the wrong shape")
    _need(n_threads >= 1, "n_threads must be >= 1")
    if N == 0:
        return
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            if floating is float:
                fc_conv_forward_f32(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                    &bias[0], sigmoid, &out[n, 0, 0, 0])
            else:
                fc_conv_forward_f64(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                    &bias[0], sigmoid, &out[n, 0, 0, 0])


def conv_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                  const floating[:, :, :, ::1] y, const floating[:, :, :, ::1] grad,
                  bint sigmoid, floating[:, :, :, ::1] dk, floating[::1] db,
                  floating[:, :, :, ::1] dx, floating[:, :, :, ::1] ws_pad,
                  floating[:, :, :, :, ::1] ws_dk, floating[:, ::1] ws_db,
                  int n_threads):
    """Gradients of conv_forward, given y = its output and grad = dL/dy:

        delta = grad * y * (1 - y)                 eq. (37), (57)
        db[q] = sum_n sum_ij delta[n, q]           eq. (45), (64)
        dk[q, p] = sum_n rot180(x[n, p]) * delta[n, q]      eq. (39)-(40), (58)-(59)
        dx[n, p] = sum_q delta[n, q] *full rot180(k[q, p])  eq. (49)-(51)

    dk (M, C, KH, KW) and db (M,) are overwritten, not accumulated. dx (N, C,
    H, W) may be None when the input gradient is not wanted (first layer).
    Workspaces, owned by the caller and reused across batches:
    ws_pad (T, M, OH + 2(KH-1), OW + 2(KW-1)), zero on first use, one per
    thread (T >= n_threads); ws_dk (>=N, M, C, KH, KW) and ws_db (>=N, M), one
    slot per sample, summed afterwards in sample order so that the result is
    the same bit for bit whatever the number of threads.
    """
    cdef Py_ssize_t N = x.shape[0], n, ch, e0, e1
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    cdef int OH = H - KH + 1, OW = W - KW + 1, t
    cdef Py_ssize_t E = <Py_ssize_t>M * C * KH * KW
    cdef bint want_dx = dx is not None
    cdef floating *dxp = NULL
    _need(k.shape[1] == C, "kernel input maps != input maps")
    _need(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    _need(y.shape[0] == N and y.shape[1] == M and y.shape[2] == OH and y.shape[3] == OW,
          "y has the wrong shape")
    _need(grad.shape[0] == N and grad.shape[1] == M and grad.shape[2] == OH
          and grad.shape[3] == OW, "grad has the wrong shape")
    _need(dk.shape[0] == M and dk.shape[1] == C and dk.shape[2] == KH and dk.shape[3] == KW,
          "dk has the wrong shape")
    _need(db.shape[0] == M, "db has the wrong shape")
    if want_dx:
        _need(dx.shape[0] == N and dx.shape[1] == C and dx.shape[2] == H and dx.shape[3] == W,
              "dx has the wrong shape")
    _need(ws_pad.shape[0] >= n_threads and ws_pad.shape[1] == M
          and ws_pad.shape[2] == OH + 2 * (KH - 1) and ws_pad.shape[3] == OW + 2 * (KW - 1),
          "ws_pad has the wrong shape")
    _need(ws_dk.shape[0] >= N and ws_dk.shape[1] == M and ws_dk.shape[2] == C
          and ws_dk.shape[3] == KH and ws_dk.shape[4] == KW, "ws_dk has the wrong shape")
    _need(ws_db.shape[0] >= N and ws_db.shape[1] == M, "ws_db has the wrong shape")
    _need(n_threads >= 1, "n_threads must be >= 1")
    _need(N >= 1, "empty batch")

    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            t = threadid()
            if want_dx:
                dxp = &dx[n, 0, 0, 0]
            else:
                dxp = NULL
            if floating is float:
                fc_conv_backward_f32(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                     &y[n, 0, 0, 0], &grad[n, 0, 0, 0], sigmoid,
                                     &ws_pad[t, 0, 0, 0], &ws_dk[n, 0, 0, 0, 0],
                                     &ws_db[n, 0], dxp)
            else:
                fc_conv_backward_f64(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                     &y[n, 0, 0, 0], &grad[n, 0, 0, 0], sigmoid,
                                     &ws_pad[t, 0, 0, 0], &ws_dk[n, 0, 0, 0, 0],
                                     &ws_db[n, 0], dxp)
        # Sum the per-sample partials in sample order; chunks of parameters
        # go to threads, each parameter's sum is done by one of them.
        for ch in prange((E + SUM_CHUNK - 1) // SUM_CHUNK, schedule="static",
                         num_threads=n_threads):
            e0 = ch * SUM_CHUNK
            e1 = min(e0 + SUM_CHUNK, E)
            if floating is float:
                fc_sum_samples_f32(&ws_dk[0, 0, 0, 0, 0], N, E, e0, e1, &dk[0, 0, 0, 0])
            else:
                fc_sum_samples_f64(&ws_dk[0, 0, 0, 0, 0], N, E, e0, e1, &dk[0, 0, 0, 0])
        if floating is float:
            fc_sum_samples_f32(&ws_db[0, 0], N, M, 0, M, &db[0])
        else:
            fc_sum_samples_f64(&ws_db[0, 0], N, M, 0, M, &db[0])
