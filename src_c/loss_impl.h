/* loss_impl.h -- the squared error of eq. (13), for one floating type.
 *
 * Not a header to include directly: kernels.h includes it once per type and
 * instruction set with REAL, REAL_DOUBLE, LANES and FN(name) defined.
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
