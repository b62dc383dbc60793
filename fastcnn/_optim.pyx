"""Optimiser updates (src_c/optim_impl.h) over the model's flat parameter
vector: one fused pass instead of a dozen NumPy temporaries, split into
contiguous chunks over threads (element-wise, so exact whatever the split).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from "kernels.h" nogil:
    const char *fc_select_isa(int want_avx2)
    void fc_adam_step_f32(float *p, const float *g, float *m, float *v, Py_ssize_t n,
                          float b1, float b2, float eps, float step, float root2, float shrink,
                          float l2)
    void fc_adam_step_f64(double *p, const double *g, double *m, double *v, Py_ssize_t n,
                          double b1, double b2, double eps, double step, double root2,
                          double shrink, double l2)


def set_isa(bint avx2):
    """Run the AVX2+FMA kernels if `avx2` and the CPU has them, else the
    baseline ones; returns the name of the version in use."""
    return fc_select_isa(avx2).decode()


ISA = set_isa(True)

cdef enum:
    # Below this many elements per thread, threads cost more than they save.
    CHUNK = 65536


def adam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
              double lr, double b1, double b2, double eps, long t, double weight_decay,
              bint decoupled, int n_threads):
    """One Adam step at step count t (>= 1), PyTorch's rule (Adam, or AdamW
    if decoupled): see src_c/optim_impl.h. p, g, m, v: same length."""
    cdef Py_ssize_t n = p.shape[0], c, chunks, lo, hi
    if g.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("fastcnn._optim: p, g, m and v must have the same length")
    if t < 1 or n_threads < 1:
        raise ValueError("fastcnn._optim: t and n_threads must be >= 1")
    cdef double step = lr / (1 - b1 ** t), root2 = 1 / sqrt(1 - b2 ** t)
    cdef double shrink = 1 - lr * weight_decay if decoupled else 1.0
    cdef double l2 = 0.0 if decoupled else weight_decay
    chunks = max(1, min(n_threads, n // CHUNK))
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=chunks):
            lo, hi = n * c // chunks, n * (c + 1) // chunks
            if floating is float:
                fc_adam_step_f32(&p[lo], &g[lo], &m[lo], &v[lo], hi - lo, b1, b2, eps, step,
                                 root2, shrink, l2)
            else:
                fc_adam_step_f64(&p[lo], &g[lo], &m[lo], &v[lo], hi - lo, b1, b2, eps, step,
                                 root2, shrink, l2)
