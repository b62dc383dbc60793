"""Element-wise activations (src_c/activation_impl.h) on flat arrays, split
into contiguous chunks over threads (element-wise, so exact whatever the
split), and the softmax, one sample per `prange` iteration.

Activation codes (enum fc_activation of src_c/fc_common.h, by name in
fastcnn._kernels.ACTIVATION_CODES): none, sigmoid (eq. 4 of Zhang's
derivation), relu, tanh, tanh_opt (DeepLearnToolbox's
1.7159 tanh(2x/3)).
"""

from cython cimport floating
from cython.parallel cimport prange

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check, check_activation

cdef enum:
    # Below this many elements per thread, threads cost more than they save.
    CHUNK = 16384


def activation_forward(const floating[::1] z, floating[::1] y, int act, int n_threads):
    """y = f(z) for activation code `act`; z and y flat, same length (may alias)."""
    cdef Py_ssize_t n = z.shape[0], ch, i0, i1
    check(y.shape[0] == n, "z and y differ in length")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for ch in prange((n + CHUNK - 1) // CHUNK, schedule="static", num_threads=n_threads):
            i0 = ch * CHUNK
            i1 = min(i0 + CHUNK, n)
            kernels.activation_forward(act, &z[i0], i1 - i0, &y[i0])


def activation_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dz,
                        int act, int n_threads):
    """dz = dy * f'(z), written with the output y = f(z): y (1 - y) for sigmoid,
    eq. (17), (37); [y > 0] for relu; 1 - y^2 for tanh. All flat, same length."""
    cdef Py_ssize_t n = y.shape[0], ch, i0, i1
    check(dy.shape[0] == n and dz.shape[0] == n, "y, dy and dz differ in length")
    check_activation(act)
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for ch in prange((n + CHUNK - 1) // CHUNK, schedule="static", num_threads=n_threads):
            i0 = ch * CHUNK
            i1 = min(i0 + CHUNK, n)
            kernels.activation_backward(act, &y[i0], &dy[i0], i1 - i0, &dz[i0])


def softmax_forward(const floating[:, ::1] z, floating[:, ::1] y, int n_threads):
    """y[n] = softmax(z[n]) over each row: exp(z - max z) / sum exp(z - max z)."""
    cdef Py_ssize_t N = z.shape[0], n
    cdef int K = <int>z.shape[1]
    check(y.shape[0] == N and y.shape[1] == K, "z and y differ in shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.softmax_forward(&z[n, 0], K, &y[n, 0])


def softmax_backward(const floating[:, ::1] y, const floating[:, ::1] dy, floating[:, ::1] dz,
                     int n_threads):
    """dz[n] = y[n] * (dy[n] - sum_k dy[n, k] y[n, k]): the softmax's Jacobian applied."""
    cdef Py_ssize_t N = y.shape[0], n
    cdef int K = <int>y.shape[1]
    check(dy.shape[0] == N and dy.shape[1] == K and dz.shape[0] == N and dz.shape[1] == K,
           "y, dy and dz differ in shape")
    check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for n in prange(N, schedule="static", num_threads=n_threads):
            kernels.softmax_backward(&y[n, 0], &dy[n, 0], K, &dz[n, 0])
