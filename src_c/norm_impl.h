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
 * Sums run in double, in a fixed order that depends only on the sizes: each
 * sample's values of the map in NACC interleaved partial sums (position i
 * goes to partial i % NACC, which lets the compiler keep them in vector
 * registers), the partials added in order, the samples in order. One
 * thread takes a whole map, so the result is the same bit for bit whatever
 * the number of threads. The normalisation itself (and dx) is computed in
 * the data's type, from statistics kept in double.
 */

#ifndef FC_NORM_NACC
#define FC_NORM_NACC 8
#endif

/* sum_i g[i] and sum_i g[i] (a[i] - mu) over n values, in that order */
FC_INLINE void FN(norm_grad_sums)(const REAL *FC_RESTRICT g, const REAL *FC_RESTRICT a,
                                  ptrdiff_t n, double mu, double *sum_g, double *sum_g_dev)
{
    double acc[FC_NORM_NACC] = {0}, accd[FC_NORM_NACC] = {0};
    const ptrdiff_t nv = n - n % FC_NORM_NACC;
    for (ptrdiff_t i = 0; i < nv; i += FC_NORM_NACC)
        for (int l = 0; l < FC_NORM_NACC; l++) {
            acc[l] += g[i + l];
            accd[l] += g[i + l] * (a[i + l] - mu);
        }
    for (ptrdiff_t i = nv; i < n; i++) {
        acc[i - nv] += g[i];
        accd[i - nv] += g[i] * (a[i] - mu);
    }
    double s = 0, sd = 0;
    for (int l = 0; l < FC_NORM_NACC; l++) {
        s += acc[l];
        sd += accd[l];
    }
    *sum_g += s;
    *sum_g_dev += sd;
}

/* mean and biased variance of map c, in one pass over the values: sums of
 * x - K and (x - K)^2 with K the map's first value, a shift that keeps the
 * squares small (the variance is unchanged by it) */
static void FN(batchnorm_stats)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                double *mean, double *var)
{
    const double M = (double)N * (double)S;
    const double K = x[(ptrdiff_t)c * S];
    double s1 = 0, s2 = 0;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *FC_RESTRICT a = x + (n * C + c) * S;
        double acc1[FC_NORM_NACC] = {0}, acc2[FC_NORM_NACC] = {0};
        const ptrdiff_t nv = S - S % FC_NORM_NACC;
        for (ptrdiff_t i = 0; i < nv; i += FC_NORM_NACC)
            for (int l = 0; l < FC_NORM_NACC; l++) {
                const double d = a[i + l] - K;
                acc1[l] += d;
                acc2[l] += d * d;
            }
        for (ptrdiff_t i = nv; i < S; i++) {
            const double d = a[i] - K;
            acc1[i - nv] += d;
            acc2[i - nv] += d * d;
        }
        for (int l = 0; l < FC_NORM_NACC; l++) {
            s1 += acc1[l];
            s2 += acc2[l];
        }
    }
    const double d = s1 / M;
    *mean = K + d;
    *var = s2 / M - d * d > 0 ? s2 / M - d * d : 0;
}

/* y = (x - mean) * scale + shift on map c: the normalisation with
 * scale = gamma / sqrt(var + eps), shift = beta (batch statistics in
 * training, running estimates at inference) */
static void FN(batchnorm_apply)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                double mean, double scale, double shift, REAL *y)
{
    /* in the type of the data, so that the loop runs a vector at a time */
    const REAL m = (REAL)mean, a = (REAL)scale, b = (REAL)shift;
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *FC_RESTRICT xm = x + (n * C + c) * S;
        REAL *FC_RESTRICT ym = y + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) ym[i] = (xm[i] - m) * a + b;
    }
}

/* dgamma, dbeta and (if dx is not NULL) dx of map c, for the batch statistics
 * mean and invstd = 1 / sqrt(var + eps) */
static void FN(batchnorm_backward)(const REAL *x, const REAL *dy, ptrdiff_t N, int C,
                                   ptrdiff_t S, int c, double mean, double invstd, double gamma,
                                   double *dgamma, double *dbeta, REAL *dx)
{
    const double M = (double)N * (double)S;
    double sum_dy = 0, sum_dy_dev = 0;
    for (ptrdiff_t n = 0; n < N; n++)
        FN(norm_grad_sums)(dy + (n * C + c) * S, x + (n * C + c) * S, S, mean, &sum_dy,
                           &sum_dy_dev);
    const double sum_dy_xhat = sum_dy_dev * invstd;
    *dbeta = sum_dy;
    *dgamma = sum_dy_xhat;
    if (!dx) return;
    /* dx = k (dy - a - (x - mean) invstd b), in the type of the data */
    const REAL k = (REAL)(gamma * invstd), a = (REAL)(sum_dy / M), m = (REAL)mean,
               bi = (REAL)(invstd * (sum_dy_xhat / M));
    for (ptrdiff_t n = 0; n < N; n++) {
        const REAL *FC_RESTRICT xm = x + (n * C + c) * S, *FC_RESTRICT gm = dy + (n * C + c) * S;
        REAL *FC_RESTRICT dm = dx + (n * C + c) * S;
        for (ptrdiff_t i = 0; i < S; i++) dm[i] = k * (gm[i] - a - (xm[i] - m) * bi);
    }
}
