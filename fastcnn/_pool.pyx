"""Pooling kernels, one sample per `prange` iteration (src_c/pool_impl.h):
mean pooling, eq. (6), (9), and its 1/s^2 upsampling, eq. (32), (52); max
pooling, which records each window's argmax, and its backward, which sends
each window's gradient to that pixel.

Equation numbers: Zhifei Zhang, "Derivation of Backpropagation in Convolutional Neural Network (CNN)" (2016).
"""

from cython cimport floating
from cython.parallel cimport prange

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check


def mean_pool(const floating[:, :, :, ::1] x, int scale, floating[:, :, :, ::1] out,
              int n_threads):
    """out[n, c, i, j] = 1/s^2 sum_{u,v<s} x[n, c, s i + u, s j + v]: eq. (6), (9).

    x (N, C, H, W), out (N, C, H // s, W // s).
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    check(1 <= scale <= H and scale <= W, "scale must be in 1..min(H, W)")
    check(out.shape[0] == N and out.shape[1] == C and out.shape[2] == H // scale
          and out.shape[3] == W // scale, "output array has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.mean_pool(&x[n, 0, 0, 0], C, H, W, scale, &out[n, 0, 0, 0])


def mean_upsample(const floating[:, :, :, ::1] grad, int scale, floating[:, :, :, ::1] dx,
                  int n_threads):
    """dx[n, c, i, j] = 1/s^2 grad[n, c, i // s, j // s]: eq. (32), (52).

    grad (N, C, H // s, W // s), dx (N, C, H, W); rows and columns of dx that
    pooling left out (H or W not a multiple of s) get zero.
    """
    cdef Py_ssize_t N = dx.shape[0], n
    cdef int C = <int>dx.shape[1], H = <int>dx.shape[2], W = <int>dx.shape[3]
    check(1 <= scale <= H and scale <= W, "scale must be in 1..min(H, W)")
    check(grad.shape[0] == N and grad.shape[1] == C and grad.shape[2] == H // scale
          and grad.shape[3] == W // scale, "grad has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.mean_upsample(&grad[n, 0, 0, 0], C, H, W, scale, &dx[n, 0, 0, 0])


def max_pool(const floating[:, :, :, ::1] x, int size, int step, floating[:, :, :, ::1] out,
             int[:, :, :, ::1] arg, int n_threads):
    """out[n, c, i, j] = max over the size x size window at (step i, step j);
    arg = the window's argmax as a flat index into the (H, W) map.

    x (N, C, H, W), out and arg (N, C, (H - size) // step + 1, (W - size) // step + 1).
    """
    cdef Py_ssize_t N = x.shape[0], n
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    check(1 <= size <= H and size <= W and step >= 1, "size must be in 1..min(H, W), step >= 1")
    cdef int OH = (H - size) // step + 1, OW = (W - size) // step + 1
    check(out.shape[0] == N and out.shape[1] == C and out.shape[2] == OH and out.shape[3] == OW,
          "output array has the wrong shape")
    check(arg.shape[0] == N and arg.shape[1] == C and arg.shape[2] == OH and arg.shape[3] == OW,
          "arg array has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.max_pool(&x[n, 0, 0, 0], C, H, W, size, step, &out[n, 0, 0, 0],
                             &arg[n, 0, 0, 0])


def max_unpool(const floating[:, :, :, ::1] grad, const int[:, :, :, ::1] arg,
               floating[:, :, :, ::1] dx, int n_threads):
    """dx = 0, then dx[n, c].flat[arg[n, c, i, j]] += grad[n, c, i, j] in order.

    grad and arg (N, C, OH, OW) from max_pool; dx (N, C, H, W). arg must come
    from max_pool on maps of this (H, W): its entries are checked.
    """
    cdef Py_ssize_t N = dx.shape[0], n
    cdef int C = <int>dx.shape[1], H = <int>dx.shape[2], W = <int>dx.shape[3]
    cdef int OH = <int>grad.shape[2], OW = <int>grad.shape[3]
    check(grad.shape[0] == N and grad.shape[1] == C, "grad has the wrong shape")
    check(arg.shape[0] == N and arg.shape[1] == C and arg.shape[2] == OH and arg.shape[3] == OW,
          "arg has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    # the kernel writes where arg points: check every index first
    cdef Py_ssize_t e, total = N * C * OH * OW
    cdef const int *a
    cdef bint bad = False
    if total:
        a = &arg[0, 0, 0, 0]
        for e in range(total):
            if a[e] < 0 or a[e] >= H * W:
                bad = True
                break
    check(not bad, "arg holds indices outside the maps")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.max_unpool(&grad[n, 0, 0, 0], &arg[n, 0, 0, 0], C, H, W, OH, OW,
                               &dx[n, 0, 0, 0])
