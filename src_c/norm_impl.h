/* norm_impl.h -- batch normalisation of one map (channel) over a batch, for
 * one floating type (Ioffe and Szegedy, "Batch Normalization: Accelerating
 * Deep Network Training by Reducing Internal Covariate Shift", 2015).
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 *
 * x is (N, C, S), S = H W positions per map (S = 1 for features); map c of
 * sample n is the S values at x + (n C + c) S. With M = N S values per map:
 *
 *   mu = 1/M sum x,   var = 1/M sum (x - mu)^2   (biased: what normalises)
 *   xhat = (x - mu) / sqrt(var + eps),   y = gamma xhat + beta
 *
 * and, with dy = dL/dy and sums over the map's M values,
 *
 *   dbeta = sum dy,   dgamma = sum dy xhat
 *   dx = gamma / sqrt(var + eps) (dy - dbeta / M - xhat dgamma / M)
 *
 * Sums run in double, over the samples in order and within a sample over
 * the positions in order: one thread takes a whole map, so the result is the
 * same bit for bit whatever the number of threads.
 */

/* mean and biased variance of map c (two passes: the second sums squares of
 * deviations, which a one-pass sum of squares would lose to cancellation) */
static void FN(batchnorm_stats)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                double *mean, double *var)
{
    const double M = (double)N * (double)S;
    double sum = 0;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *xm = x + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) sum += xm[i];
    }
    const double mu = sum / M;
    double sq = 0;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *xm = x + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) {
            const double d = xm[i] - mu;
            sq += d * d;
        }
    }
    *mean = mu;
    *var = sq / M;
}

/* y = (x - mean) * scale + shift on map c: the normalisation with
 * scale = gamma / sqrt(var + eps), shift = beta (batch statistics in
 * training, running estimates at inference) */
static void FN(batchnorm_apply)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                double mean, double scale, double shift, REAL *y)
{
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *FC_RESTRICT xm = x + (n * C + c) * S;
        REAL *FC_RESTRICT ym = y + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) ym[i] = (REAL)((xm[i] - mean) * scale + shift);
    }
}

/* dgamma, dbeta and (if dx is not NULL) dx of map c, for the batch statistics
 * mean and invstd = 1 / sqrt(var + eps) */
static void FN(batchnorm_backward)(const REAL *x, const REAL *dy, ptrdiff_t N, int C,
                                   ptrdiff_t S, int c, double mean, double invstd, double gamma,
                                   double *dgamma, double *dbeta, REAL *dx)
{
    const double M = (double)N * (double)S;
    double sum_dy = 0, sum_dy_xhat = 0;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *xm = x + (n * C + c) * S, *gm = dy + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) {
            sum_dy += gm[i];
            sum_dy_xhat += gm[i] * ((xm[i] - mean) * invstd);
        }
    }
    *dbeta = sum_dy;
    *dgamma = sum_dy_xhat;
    if (!dx) return;
    const double k = gamma * invstd, a = sum_dy / M, b = sum_dy_xhat / M;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *FC_RESTRICT xm = x + (n * C + c) * S, *FC_RESTRICT gm = dy + (n * C + c) * S;
        REAL *FC_RESTRICT dm = dx + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++)
            dm[i] = (REAL)(k * (gm[i] - a - (xm[i] - mean) * invstd * b));
    }
}
