"""im2col and col2im: the reorganisation that turns a convolution into one
matrix product (Jianfeng Wang, "Forward and Backward Propagation of
Convolutional Layer", 2015, section 3, as Caffe does it).

For a block of samples n0 <= n < n1 and output rows i0 <= i < i1, with
stride s,

    cols[(c, u, v), (n, i, j)] = x[n, c, s i + u, s j + v]

so that the valid correlation with the rotated kernel, i.e. the true
convolution of eq. (5), is the product Wrot @ cols with
Wrot[q, (c, u, v)] = k[q, c, KH-1-u, KW-1-v]. col2im is its transpose: it
adds every column entry back onto the pixel it came from.

im2col runs its rows (c, u, v) in parallel; col2im its (sample, map) pairs,
each of which owns its part of dx and adds in a fixed order, so both give
the same result for every thread count.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels cimport check


cdef inline int _check_block(Py_ssize_t N, int H, int W, int KH, int KW, int S, Py_ssize_t n0,
                             Py_ssize_t n1, int i0, int i1) except -1:
    check(1 <= KH <= H and 1 <= KW <= W, "kernel larger than the image")
    check(S >= 1, "stride must be >= 1")
    check(0 <= n0 < n1 <= N, "sample range out of bounds")
    check(0 <= i0 < i1 <= (H - KH) // S + 1, "row range out of bounds")
    return 0


def im2col(const floating[:, :, :, ::1] x, int KH, int KW, int S, Py_ssize_t n0, Py_ssize_t n1,
           int i0, int i1, floating[:, ::1] cols, int n_threads):
    """cols[(c*KH + u)*KW + v, ((n-n0)*(i1-i0) + i-i0)*OW + j] = x[n, c, S i+u, S j+v]."""
    cdef int C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int OW, R = i1 - i0
    cdef Py_ssize_t r, n, col
    cdef int c, u, v, i, j
    _check_block(x.shape[0], H, W, KH, KW, S, n0, n1, i0, i1)
    OW = (W - KW) // S + 1  # after the check that S >= 1
    check(cols.shape[0] == C * KH * KW and cols.shape[1] == (n1 - n0) * R * OW,
          "cols has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for r in prange(C * KH * KW, schedule="static", num_threads=n_threads):
            c = <int>(r // (KH * KW))
            u = <int>((r // KW) % KH)
            v = <int>(r % KW)
            col = 0
            for n in range(n0, n1):
                for i in range(i0, i1):
                    for j in range(OW):
                        cols[r, col + j] = x[n, c, S * i + u, S * j + v]
                    col = col + OW


def col2im(const floating[:, ::1] dcols, int KH, int KW, int S, Py_ssize_t n0, Py_ssize_t n1,
           int i0, int i1, floating[:, :, :, ::1] dx, int n_threads):
    """dx[n, c, S i+u, S j+v] += dcols[(c*KH + u)*KW + v, ((n-n0)*(i1-i0) + i-i0)*OW + j]
    (the transpose of im2col; dx is added to, not overwritten)."""
    cdef int C = <int>dx.shape[1], H = <int>dx.shape[2], W = <int>dx.shape[3]
    cdef int OW, R = i1 - i0
    cdef Py_ssize_t pair, n, col, r
    cdef int c, u, v, i, j
    _check_block(dx.shape[0], H, W, KH, KW, S, n0, n1, i0, i1)
    OW = (W - KW) // S + 1  # after the check that S >= 1
    check(dcols.shape[0] == C * KH * KW and dcols.shape[1] == (n1 - n0) * R * OW,
          "dcols has the wrong shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for pair in prange((n1 - n0) * C, schedule="static", num_threads=n_threads):
            n = n0 + pair // C
            c = <int>(pair % C)
            for u in range(KH):
                for v in range(KW):
                    r = (c * KH + u) * KW + v
                    col = (n - n0) * R * OW
                    for i in range(i0, i1):
                        for j in range(OW):
                            dx[n, c, S * i + u, S * j + v] += dcols[r, col + j]
                        col = col + OW
