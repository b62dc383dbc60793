/* optim_impl.h -- optimiser updates over a flat parameter vector, one fused
 * pass (included by instantiate.h once per type and instruction set).
 *
 * Adam (Kingma and Ba 2015, Algorithm 1), PyTorch's arrangement, on
 * elements [0, n) of p, g, m, v:
 *   p <- p * shrink                       (AdamW's decoupled decay; 1 otherwise)
 *   d  = g + l2 p                         (Adam's L2 penalty; 0 with AdamW)
 *   m <- b1 m + (1 - b1) d,   v <- b2 v + (1 - b2) d^2
 *   p <- p - step * m / (sqrt(v) * root2 + eps)
 * with step = lr / (1 - b1^t), root2 = 1 / sqrt(1 - b2^t). Element-wise:
 * any split over threads gives the same bits.
 */
#if REAL_DOUBLE
#  define FC_SQRT sqrt
#else
#  define FC_SQRT sqrtf
#endif

static void FN(adam_step)(REAL *FC_RESTRICT p, const REAL *FC_RESTRICT g, REAL *FC_RESTRICT m,
                          REAL *FC_RESTRICT v, ptrdiff_t n, REAL b1, REAL b2, REAL eps,
                          REAL step, REAL root2, REAL shrink, REAL l2)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const REAL d = g[i] + l2 * p[i];
        const REAL mi = b1 * m[i] + (1 - b1) * d;
        const REAL vi = b2 * v[i] + (1 - b2) * d * d;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * shrink - step * mi / (FC_SQRT(vi) * root2 + eps);
    }
}

#undef FC_SQRT
