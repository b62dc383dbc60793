"""Element-wise sigmoid kernels (src_c/activation_impl.h) on flat arrays,
split into contiguous chunks over threads (element-wise, so exact whatever
the split).

Equation numbers: Zhang, "Derivation of Backpropagation in CNN" (seeds/000).
"""

from cython cimport floating
from cython.parallel cimport prange

cdef extern from "kernels.h" nogil:
    const char *fc_select_isa(int want_avx2)
    void fc_sigmoid_forward_f32(const float *z, Py_ssize_t n, float *y)
    void fc_sigmoid_forward_f64(const double *z, Py_ssize_t n, double *y)
    void fc_sigmoid_backward_f32(const float *y, const float *dy, Py_ssize_t n, float *dz)
    void fc_sigmoid_backward_f64(const double *y, const double *dy, Py_ssize_t n, double *dz)

cdef enum:
    # Below this many elements per thread, threads cost more than they save.
    CHUNK = 16384



def set_isa(bint avx2):
    """Run the AVX2+FMA kernels if `avx2` and the CPU has them, else the
    baseline ones; returns the name of the version in use."""
    return fc_select_isa(avx2).decode()


ISA = set_isa(True)

cdef inline void _check(bint ok, str what) except *:
    if not ok:
        raise ValueError("fastcnn._activation: " + what)


def sigmoid_forward(const floating[::1] z, floating[::1] y, int n_threads):
    """y = 1 / (1 + exp(-z)), eq. (4), (12); z and y flat, same length (may alias)."""
    cdef Py_ssize_t n = z.shape[0], ch, i0, i1
    _check(y.shape[0] == n, "z and y differ in length")
    _check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for ch in prange((n + CHUNK - 1) // CHUNK, schedule="static", num_threads=n_threads):
            i0 = ch * CHUNK
            i1 = min(i0 + CHUNK, n)
            if floating is float:
                fc_sigmoid_forward_f32(&z[i0], i1 - i0, &y[i0])
            else:
                fc_sigmoid_forward_f64(&z[i0], i1 - i0, &y[i0])


def sigmoid_backward(const floating[::1] y, const floating[::1] dy, floating[::1] dz,
                     int n_threads):
    """dz = dy * y * (1 - y), eq. (17), (23), (37); all flat, same length."""
    cdef Py_ssize_t n = y.shape[0], ch, i0, i1
    _check(dy.shape[0] == n and dz.shape[0] == n, "y, dy and dz differ in length")
    _check(n_threads >= 1, "n_threads must be >= 1")
    with nogil:
        for ch in prange((n + CHUNK - 1) // CHUNK, schedule="static", num_threads=n_threads):
            i0 = ch * CHUNK
            i1 = min(i0 + CHUNK, n)
            if floating is float:
                fc_sigmoid_backward_f32(&y[i0], &dy[i0], i1 - i0, &dz[i0])
            else:
                fc_sigmoid_backward_f64(&y[i0], &dy[i0], i1 - i0, &dz[i0])
