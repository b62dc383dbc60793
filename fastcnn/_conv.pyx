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
    const char *fc_select_isa(int want_avx2)
    const char *fc_best_isa()
    void fc_conv_forward_f32(const float *x, int C, int H, int W, const float *k,
                             int M, int KH, int KW, const float *bias, int act,
                             float *out)
    void fc_conv_forward_f64(const double *x, int C, int H, int W, const double *k,
                             int M, int KH, int KW, const double *bias, int act,
                             double *out)
    void fc_conv_backward_f32(const float *x, int C, int H, int W, const float *k,
                              int M, int KH, int KW, const float *y, const float *g,
                              int act, float *ws, float *gk, float *db, float *dx)
    void fc_conv_backward_f64(const double *x, int C, int H, int W, const double *k,
                              int M, int KH, int KW, const double *y, const double *g,
                              int act, double *ws, double *gk, double *db, double *dx)
    Py_ssize_t fc_conv_ws_delta_f32(int M, int OH, int OW, int KH)
    Py_ssize_t fc_conv_ws_delta_f64(int M, int OH, int OW, int KH)
    Py_ssize_t fc_conv_ws_wgrad_f32(int M, int C, int KH, int KW, int OW)
    Py_ssize_t fc_conv_ws_wgrad_f64(int M, int C, int KH, int KW, int OW)
    void fc_conv_wgrad_finish_f32(const float *g, int M, int C, int KH, int KW, int OW,
                                  float *dk)
    void fc_conv_wgrad_finish_f64(const double *g, int M, int C, int KH, int KW, int OW,
                                  double *dk)
    void fc_sum_samples_f32(const float *ws, Py_ssize_t N, Py_ssize_t E,
                            Py_ssize_t e0, Py_ssize_t e1, float *out)
    void fc_sum_samples_f64(const double *ws, Py_ssize_t N, Py_ssize_t E,
                            Py_ssize_t e0, Py_ssize_t e1, double *out)


def set_isa(bint avx2):
    """Run the AVX2+FMA kernels if `avx2` and the CPU has them, else the
    baseline ones; returns the name of the version in use."""
    return fc_select_isa(avx2).decode()


ISA = set_isa(True)
BEST_ISA = fc_best_isa().decode()


def workspace_sizes(int out_maps, int in_maps, int KH, int KW, int OH, int OW, str dtype):
    """Elements of conv_backward's workspaces: (per thread, per sample).

    The per-thread workspace holds delta in the layouts the kernels read; it
    must be zero when first used (its padding is never written). The
    per-sample one holds that sample's weight-gradient partial sums.
    """
    if dtype == "float32":
        return (fc_conv_ws_delta_f32(out_maps, OH, OW, KH),
                fc_conv_ws_wgrad_f32(out_maps, in_maps, KH, KW, OW))
    return (fc_conv_ws_delta_f64(out_maps, OH, OW, KH),
            fc_conv_ws_wgrad_f64(out_maps, in_maps, KH, KW, OW))


cdef enum:
    # Parameters summed per prange iteration in the sample reduction.
    SUM_CHUNK = 256


cdef inline void _need(bint ok, str what) except *:
    if not ok:
        raise ValueError("fastcnn._conv: " + what)


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                 const floating[::1] bias, floating[:, :, :, ::1] out,
                 int act, int n_threads):
    """Valid true convolution of every input map with its kernel, plus bias,
    through the activation: eq. (4)-(5) and (7)-(8),

        out[n, q] = f(sum_p x[n, p] * k[q, p] + bias[q])

    x (N, C, H, W), k (M, C, KH, KW), bias (M,), out (N, M, H-KH+1, W-KW+1).
    `act` is an activation code (fastcnn.layers.ACTIVATION_CODES: 1 = sigma).
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    _need(k.shape[1] == C, "kernel input maps != input maps")
    _need(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    _need(bias.shape[0] == M, "bias length != output maps")
    _need(out.shape[0] == N and out.shape[1] == M and out.shape[2] == H - KH + 1
          and out.shape[3] == W - KW + 1, "output array has the wrong shape")
    _need(0 <= act <= 4, "unknown activation code")
    _need(n_threads >= 1, "n_threads must be >= 1")
    if N == 0:
        return
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            if floating is float:
                fc_conv_forward_f32(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                    &bias[0], act, &out[n, 0, 0, 0])
            else:
                fc_conv_forward_f64(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                    &bias[0], act, &out[n, 0, 0, 0])


def conv_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                  const floating[:, :, :, ::1] y, const floating[:, :, :, ::1] grad,
                  int act, floating[:, :, :, ::1] dk, floating[::1] db,
                  floating[:, :, :, ::1] dx, floating[:, ::1] ws_delta,
                  floating[:, ::1] ws_dk, floating[:, ::1] ws_db, floating[::1] ws_sum,
                  int n_threads):
    """Gradients of conv_forward, given y = its output and grad = dL/dy:

        delta = grad * f'(z), from y               eq. (37), (57): grad y (1 - y) for sigma
        db[q] = sum_n sum_ij delta[n, q]           eq. (45), (64)
        dk[q, p] = sum_n rot180(x[n, p]) * delta[n, q]      eq. (39)-(40), (58)-(59)
        dx[n, p] = sum_q delta[n, q] *full rot180(k[q, p])  eq. (49)-(51)

    dk (M, C, KH, KW) and db (M,) are overwritten, not accumulated. dx (N, C,
    H, W) may be None when the input gradient is not wanted (first layer).
    Workspaces, owned by the caller and reused across batches (sizes from
    workspace_sizes): ws_delta (>= n_threads, per-thread size), zero when first
    used; ws_dk (>= N, per-sample size) and ws_db (>= N, M), one slot per
    sample, summed afterwards in sample order (into ws_sum) so that the result
    is the same bit for bit whatever the number of threads.
    """
    cdef Py_ssize_t N = x.shape[0], n, ch, e0, e1
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    cdef int OH = H - KH + 1, OW = W - KW + 1, t
    cdef bint want_dx = dx is not None
    cdef floating *dxp = NULL
    cdef Py_ssize_t Sd, Sw
    _need(k.shape[1] == C, "kernel input maps != input maps")
    _need(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    if floating is float:
        Sd = fc_conv_ws_delta_f32(M, OH, OW, KH)
        Sw = fc_conv_ws_wgrad_f32(M, C, KH, KW, OW)
    else:
        Sd = fc_conv_ws_delta_f64(M, OH, OW, KH)
        Sw = fc_conv_ws_wgrad_f64(M, C, KH, KW, OW)
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
    _need(ws_delta.shape[0] >= n_threads and ws_delta.shape[1] == Sd,
          "ws_delta has the wrong shape")
    _need(ws_dk.shape[0] >= N and ws_dk.shape[1] == Sw, "ws_dk has the wrong shape")
    _need(ws_db.shape[0] >= N and ws_db.shape[1] == M, "ws_db has the wrong shape")
    _need(ws_sum.shape[0] == Sw, "ws_sum has the wrong shape")
    _need(0 <= act <= 4, "unknown activation code")
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
                                     &y[n, 0, 0, 0], &grad[n, 0, 0, 0], act,
                                     &ws_delta[t, 0], &ws_dk[n, 0], &ws_db[n, 0], dxp)
            else:
                fc_conv_backward_f64(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                     &y[n, 0, 0, 0], &grad[n, 0, 0, 0], act,
                                     &ws_delta[t, 0], &ws_dk[n, 0], &ws_db[n, 0], dxp)
        # Sum the per-sample partials in sample order; chunks of them go to
        # threads, and each one's sum is done by one thread.
        for ch in prange((Sw + SUM_CHUNK - 1) // SUM_CHUNK, schedule="static",
                         num_threads=n_threads):
            e0 = ch * SUM_CHUNK
            e1 = min(e0 + SUM_CHUNK, Sw)
            if floating is float:
                fc_sum_samples_f32(&ws_dk[0, 0], N, Sw, e0, e1, &ws_sum[0])
            else:
                fc_sum_samples_f64(&ws_dk[0, 0], N, Sw, e0, e1, &ws_sum[0])
        if floating is float:
            fc_conv_wgrad_finish_f32(&ws_sum[0], M, C, KH, KW, OW, &dk[0, 0, 0, 0])
            fc_sum_samples_f32(&ws_db[0, 0], N, M, 0, M, &db[0])
        else:
            fc_conv_wgrad_finish_f64(&ws_sum[0], M, C, KH, KW, OW, &dk[0, 0, 0, 0])
            fc_sum_samples_f64(&ws_db[0, 0], N, M, 0, M, &db[0])
