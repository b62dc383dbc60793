/* loss_impl.h -- the losses over a batch and their gradients, for one
 * floating type: the squared error of eq. (13), and the softmax
 * cross-entropy on scores.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 */

/* eq. (13) averaged over a batch of N rows (E elements in all):
 *   L = 1/N sum 1/2 (yhat - t)^2,   grad = dL/dyhat = (yhat - t) / N.
 * The sum is accumulated in double, in element order. */
static double FN(mse)(const REAL *yhat, const REAL *t, ptrdiff_t E, ptrdiff_t N, REAL *grad)
{
    double sum = 0;
    const REAL inv = (REAL)1 / (REAL)N;
    for (ptrdiff_t e = 0; e < E; e++) {
        const REAL err = yhat[e] - t[e];
        sum += (double)err * (double)err;
        grad[e] = err * inv;
    }
    return 0.5 * sum / (double)N;
}

/* Softmax cross-entropy on scores z (logits), averaged over N rows of K:
 *   L = 1/N sum_n sum_k t_nk (lse(z_n) - z_nk),  lse(z) = m + log sum_k exp(z_k - m)
 *   grad = dL/dz = (softmax(z_n) sum_k t_nk - t_n) / N
 * with m = max_k z_k, so nothing overflows (the softmax and the loss fused:
 * log(softmax) is never formed). The sum is accumulated in double, in order. */
static double FN(cross_entropy)(const REAL *z, const REAL *t, ptrdiff_t N, int K, REAL *grad)
{
    double sum = 0;
    const REAL inv = (REAL)1 / (REAL)N;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *zn = z + n * K, *tn = t + n * K;
        REAL *gn = grad + n * K;
        REAL m = zn[0];
        for (int k = 1; k < K; k++) m = zn[k] > m || zn[k] != zn[k] ? zn[k] : m;
        REAL s = 0, mass = 0;
        for (int k = 0; k < K; k++) {
            gn[k] = FN(exp)(zn[k] - m);
            s += gn[k];
            mass += tn[k];
        }
        const double lse = (double)m + log((double)s);
        const REAL scale = mass / s * inv;
        for (int k = 0; k < K; k++) {
            sum += (double)tn[k] * (lse - (double)zn[k]);
            gn[k] = gn[k] * scale - tn[k] * inv;
        }
    }
    return sum / (double)N;
}
