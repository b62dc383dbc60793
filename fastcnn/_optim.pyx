"""Optimiser updates (src_c/optim_impl.h) over the model's flat parameter
vector: one fused pass instead of a dozen NumPy temporaries, split into
contiguous chunks over threads (element-wise, so exact whatever the split).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cimport fastcnn._kernels as kernels
from fastcnn._kernels cimport check

cdef enum:
    # Below this many elements per thread, threads cost more than they save.
    CHUNK = 65536


def adam_step(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
              double lr, double b1, double b2, double eps, long t, double weight_decay,
              bint decoupled, int n_threads):
    """One Adam step at step count t (>= 1), PyTorch's rule (Adam, or AdamW
    if decoupled): see src_c/optim_impl.h. p, g, m, v: same length."""
    cdef Py_ssize_t n = p.shape[0], c, chunks, lo, hi
    check(g.shape[0] == n and m.shape[0] == n and v.shape[0] == n,
          "p, g, m and v must have the same length")
    check(t >= 1 and n_threads >= 1, "t and n_threads must be >= 1")
    cdef double step = lr / (1 - b1 ** t), root2 = 1 / sqrt(1 - b2 ** t)
    cdef double shrink = 1 - lr * weight_decay if decoupled else 1.0
    cdef double l2 = 0.0 if decoupled else weight_decay
    chunks = max(1, min(n_threads, n // CHUNK))
    with nogil:
        for c in prange(chunks, schedule="static", num_threads=chunks):
            lo, hi = n * c // chunks, n * (c + 1) // chunks
            kernels.adam_step(&p[lo], &g[lo], &m[lo], &v[lo], hi - lo, b1, b2, eps, step,
                              root2, shrink, l2)
