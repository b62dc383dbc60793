"""Convolution-layer kernels: forward, and backward (bias, weight, input gradients).

Each entry point checks that the shapes of its arguments agree (bounds checks
are off in this module), then runs the per-sample C kernels of
src_c/conv_impl.h (through fastcnn._kernels) over the batch with `prange`,
one sample per iteration. Callers (the layers' convolution code) pass
C-contiguous arrays of one dtype, which Cython's fused-type dispatch
enforces. Outputs are preallocated by the caller.

Equation numbers: Zhifei Zhang, "Derivation of Backpropagation in Convolutional Neural Network (CNN)" (2016).
"""

from cython cimport floating
from cython.parallel cimport prange, threadid

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check, check_activation


def workspace_sizes(int out_maps, int in_maps, int KH, int KW, int OH, int OW, str dtype):
    """Elements of conv_backward's workspaces: (per thread, per sample).

    The per-thread workspace holds delta in the layouts the kernels read; it
    must be zero when first used (its padding is never written). The
    per-sample one holds that sample's weight-gradient partial sums.
    """
    if dtype == "float32":
        return (kernels.conv_ws_delta_size[float](out_maps, OH, OW, KH),
                kernels.conv_ws_wgrad_size[float](out_maps, in_maps, KH, KW, OW))
    return (kernels.conv_ws_delta_size[double](out_maps, OH, OW, KH),
            kernels.conv_ws_wgrad_size[double](out_maps, in_maps, KH, KW, OW))


cdef enum:
    # Parameters summed per prange iteration in the sample reduction.
    SUM_CHUNK = 256


cdef void sum_in_sample_order(floating[:, ::1] parts, Py_ssize_t N, floating[::1] out,
                              int n_threads) noexcept nogil:
    """out[e] = sum_{n<N} parts[n, e], summed in sample order: chunks of the
    elements go to threads, and each element's sum is done by one thread, so
    the result is the same bit for bit whatever the number of threads."""
    cdef Py_ssize_t E = out.shape[0], ch, e0, e1
    for ch in prange((E + SUM_CHUNK - 1) // SUM_CHUNK, schedule="static",
                     num_threads=n_threads):
        e0 = ch * SUM_CHUNK
        e1 = min(e0 + SUM_CHUNK, E)
        kernels.sum_samples(&parts[0, 0], N, E, e0, e1, &out[0])


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                 const floating[::1] bias, floating[:, :, :, ::1] out,
                 int act, int n_threads):
    """Valid true convolution of every input map with its kernel, plus bias,
    through the activation: eq. (4)-(5) and (7)-(8),

        out[n, q] = f(sum_p x[n, p] * k[q, p] + bias[q])

    x (N, C, H, W), k (M, C, KH, KW), bias (M,), out (N, M, H-KH+1, W-KW+1).
    `act` is an activation code (fastcnn._kernels.ACTIVATION_CODES: 1 = sigma).
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    check(k.shape[1] == C, "kernel input maps != input maps")
    check(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    check(bias.shape[0] == M, "bias length != output maps")
    check(out.shape[0] == N and out.shape[1] == M and out.shape[2] == H - KH + 1
          and out.shape[3] == W - KW + 1, "output array has the wrong shape")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    if N == 0:
        return
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.conv_forward(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
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
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    cdef int OH = H - KH + 1, OW = W - KW + 1, t
    cdef bint want_dx = dx is not None
    cdef floating *dxp = NULL
    cdef Py_ssize_t Sd, Sw
    check(k.shape[1] == C, "kernel input maps != input maps")
    check(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    Sd = kernels.conv_ws_delta_size[floating](M, OH, OW, KH)
    Sw = kernels.conv_ws_wgrad_size[floating](M, C, KH, KW, OW)
    check(y.shape[0] == N and y.shape[1] == M and y.shape[2] == OH and y.shape[3] == OW,
          "y has the wrong shape")
    check(grad.shape[0] == N and grad.shape[1] == M and grad.shape[2] == OH
          and grad.shape[3] == OW, "grad has the wrong shape")
    check(dk.shape[0] == M and dk.shape[1] == C and dk.shape[2] == KH and dk.shape[3] == KW,
          "dk has the wrong shape")
    check(db.shape[0] == M, "db has the wrong shape")
    if want_dx:
        check(dx.shape[0] == N and dx.shape[1] == C and dx.shape[2] == H and dx.shape[3] == W,
              "dx has the wrong shape")
    check(ws_delta.shape[0] >= n_threads and ws_delta.shape[1] == Sd,
          "ws_delta has the wrong shape")
    check(ws_dk.shape[0] >= N and ws_dk.shape[1] == Sw, "ws_dk has the wrong shape")
    check(ws_db.shape[0] >= N and ws_db.shape[1] == M, "ws_db has the wrong shape")
    check(ws_sum.shape[0] == Sw, "ws_sum has the wrong shape")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    check(N >= 1, "empty batch")

    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            t = threadid()
            if want_dx:
                dxp = &dx[n, 0, 0, 0]
            else:
                dxp = NULL
            kernels.conv_backward(&x[n, 0, 0, 0], C, H, W, &k[0, 0, 0, 0], M, KH, KW,
                                  &y[n, 0, 0, 0], &grad[n, 0, 0, 0], act,
                                  &ws_delta[t, 0], &ws_dk[n, 0], &ws_db[n, 0], dxp)
        sum_in_sample_order(ws_dk, N, ws_sum, n_threads)
        kernels.conv_wgrad_from_partials(&ws_sum[0], M, C, KH, KW, OW, &dk[0, 0, 0, 0])
        kernels.sum_samples(&ws_db[0, 0], N, M, 0, M, &db[0])


# ------------------------------------------------- maps in the vector lanes
# src_c/conv_maps_impl.h: the same layer for narrow maps and strides, with
# LANES neighbouring maps in a vector. The weights are rearranged once per
# call (per batch) into a buffer the caller owns.

def maps_sizes(int out_maps, int in_maps, int KH, int KW, int H, int W, int stride, str dtype):
    """Elements of the maps kernels' buffers for a layer with input maps of
    H x W: (forward weights, input-gradient weights, per-thread workspace,
    per-sample weight-gradient partials). The workspace must be zero when
    first used (its padding is never written)."""
    cdef int OH = (H - KH) // stride + 1, OW = (W - KW) // stride + 1
    if dtype == "float32":
        mq = kernels.conv_maps_round[float](out_maps)
        cq = kernels.conv_maps_round[float](in_maps)
        return (in_maps * KH * KW * mq + mq, out_maps * KH * KW * cq + cq,
                kernels.conv_maps_ws_size[float](out_maps, H, W, KH, KW, OH, OW),
                kernels.conv_maps_wgrad_size[float](out_maps, in_maps, KH, KW))
    mq = kernels.conv_maps_round[double](out_maps)
    cq = kernels.conv_maps_round[double](in_maps)
    return (in_maps * KH * KW * mq + mq, out_maps * KH * KW * cq + cq,
            kernels.conv_maps_ws_size[double](out_maps, H, W, KH, KW, OH, OW),
            kernels.conv_maps_wgrad_size[double](out_maps, in_maps, KH, KW))


def conv_maps_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                      const floating[::1] bias, floating[::1] wT, floating[:, :, :, ::1] out,
                      int stride, int act, int n_threads):
    """conv_forward with a stride and maps in the vector lanes, eq. (4)-(5)
    and (7)-(8):

        out[n, q, i, j] = f(sum_p sum_{u,v} x[n, p, s*i+u, s*j+v] k[q, p, KH-1-u, KW-1-v] + bias[q])

    x (N, C, H, W), k (M, C, KH, KW), bias (M,), out (N, M, (H-KH)//s+1,
    (W-KW)//s+1); wT: a buffer of maps_sizes()[0] elements for the weights
    rearranged.
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3]
    check(stride >= 1, "stride must be >= 1")
    check(k.shape[1] == C, "kernel input maps != input maps")
    check(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    check(bias.shape[0] == M, "bias length != output maps")
    cdef int OH = (H - KH) // stride + 1, OW = (W - KW) // stride + 1
    check(out.shape[0] == N and out.shape[1] == M and out.shape[2] == OH and out.shape[3] == OW,
          "output array has the wrong shape")
    cdef int mq = kernels.conv_maps_round[floating](M)
    check(wT.shape[0] == C * KH * KW * mq + mq, "wT has the wrong size")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    if N == 0:
        return
    with nogil:
        kernels.conv_maps_weights(&k[0, 0, 0, 0], &bias[0], M, C, KH, KW, 0, &wT[0])
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.conv_maps_forward(&x[n, 0, 0, 0], C, H, W, &wT[0], M, KH, KW, stride, act,
                                      &out[n, 0, 0, 0])


def conv_maps_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] k,
                       const floating[:, :, :, ::1] y, const floating[:, :, :, ::1] grad,
                       int stride, int act, floating[:, :, :, ::1] dk, floating[::1] db,
                       floating[:, :, :, ::1] dx, floating[::1] wTdx,
                       floating[:, ::1] ws_delta, floating[:, ::1] ws_dk,
                       floating[:, ::1] ws_db, floating[::1] ws_sum, int n_threads):
    """Gradients of conv_maps_forward, given y = its output and grad = dL/dy:

        delta = grad * f'(z), from y                         eq. (37), (57)
        db[q] = sum_n sum_ij delta[n, q]                     eq. (45), (64)
        dk[q, p] = sum_n sum_ij delta[n, q, i, j] x[n, p, s*i.., s*j..]   eq. (39)-(40)
        dx[n, p] = sum_q delta[n, q] dilated by s *full rot180(k[q, p])   eq. (49)-(51)

    dk and db are overwritten; dx may be None (first layer). wTdx: a buffer
    of maps_sizes()[1] elements (unused without dx); ws_delta (>= n_threads,
    maps_sizes()[2]), zero when first used; ws_dk (>= N, maps_sizes()[3]) and
    ws_db (>= N, M) one slot per sample, summed in sample order into ws_sum,
    so that results are the same bit for bit whatever the number of threads.
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int M = <int>k.shape[0], KH = <int>k.shape[2], KW = <int>k.shape[3], t
    cdef bint want_dx = dx is not None
    cdef floating *dxp = NULL
    cdef Py_ssize_t Sd, Sw
    check(stride >= 1, "stride must be >= 1")
    check(k.shape[1] == C, "kernel input maps != input maps")
    check(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    cdef int OH = (H - KH) // stride + 1, OW = (W - KW) // stride + 1
    cdef int cq = kernels.conv_maps_round[floating](C)
    Sd = kernels.conv_maps_ws_size[floating](M, H, W, KH, KW, OH, OW)
    Sw = kernels.conv_maps_wgrad_size[floating](M, C, KH, KW)
    check(y.shape[0] == N and y.shape[1] == M and y.shape[2] == OH and y.shape[3] == OW,
          "y has the wrong shape")
    check(grad.shape[0] == N and grad.shape[1] == M and grad.shape[2] == OH
          and grad.shape[3] == OW, "grad has the wrong shape")
    check(dk.shape[0] == M and dk.shape[1] == C and dk.shape[2] == KH and dk.shape[3] == KW,
          "dk has the wrong shape")
    check(db.shape[0] == M, "db has the wrong shape")
    if want_dx:
        check(dx.shape[0] == N and dx.shape[1] == C and dx.shape[2] == H and dx.shape[3] == W,
              "dx has the wrong shape")
        check(wTdx.shape[0] == M * KH * KW * cq + cq, "wTdx has the wrong size")
    check(ws_delta.shape[0] >= n_threads and ws_delta.shape[1] == Sd,
          "ws_delta has the wrong shape")
    check(ws_dk.shape[0] >= N and ws_dk.shape[1] == Sw, "ws_dk has the wrong shape")
    check(ws_db.shape[0] >= N and ws_db.shape[1] == M, "ws_db has the wrong shape")
    check(ws_sum.shape[0] == Sw, "ws_sum has the wrong shape")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    check(N >= 1, "empty batch")

    with nogil:
        if want_dx:
            kernels.conv_maps_weights(&k[0, 0, 0, 0], <floating *>NULL, M, C, KH, KW, 1, &wTdx[0])
        for n in prange(N, schedule="static", num_threads=n_threads):
            t = threadid()
            if want_dx:
                dxp = &dx[n, 0, 0, 0]
            else:
                dxp = NULL
            kernels.conv_maps_backward(&x[n, 0, 0, 0], C, H, W, &wTdx[0] if want_dx else NULL,
                                       M, KH, KW, stride, &y[n, 0, 0, 0], &grad[n, 0, 0, 0], act,
                                       &ws_delta[t, 0], &ws_dk[n, 0], &ws_db[n, 0], dxp)
        sum_in_sample_order(ws_dk, N, ws_sum, n_threads)
        kernels.conv_maps_wgrad_from_partials(&ws_sum[0], M, C, KH, KW, &dk[0, 0, 0, 0])
        kernels.sum_samples(&ws_db[0, 0], N, M, 0, M, &db[0])
