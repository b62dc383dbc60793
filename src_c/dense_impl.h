/* dense_impl.h -- the fully connected layer of eq. (12) and its gradients,
 * for one floating type.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016). W is (K, F) as in eq. (12).
 */

/* sum_{i<n} a[i sa] b[i sb], in order: the scalar tails of the kernels below.
 * One function, not inlined, so that every caller gets the same rounding
 * (the compiler fuses multiply-adds differently in differently unrolled
 * copies), and a sample's result does not depend on the block it is in. */
#if defined(_MSC_VER)
__declspec(noinline)
#else
__attribute__((noinline))
#endif
static REAL FN(dot_tail)(const REAL *a, ptrdiff_t sa, const REAL *b, ptrdiff_t sb, int n)
{
    REAL t = 0;
    for (int i = 0; i < n; i++) t += a[i * sa] * b[i * sb];
    return t;
}

/* out[s][k0 : k0+KB] = W[k0 : k0+KB] f[s] for the NB <= 4 samples f[s] (rows
 * F apart), KB <= 2 rows of W at once: each load of W serves every sample,
 * each load of f[s] both rows. Each dot product runs over j in the same
 * order whatever NB and KB are: LANES partial sums, then their sum, then
 * the last F % LANES terms. */
FC_INLINE void FN(dense_rows)(const REAL *FC_RESTRICT f, int NB, int F, const REAL *FC_RESTRICT W,
                              int k0, int KB, REAL out[4][2])
{
    const int FV = F - F % LANES;
    VEC acc[4][2];
    REAL tail[4][2];
    for (int s = 0; s < NB; s++)
        for (int kb = 0; kb < KB; kb++) acc[s][kb] = FN(vzero)();
    for (int j = 0; j < FV; j += LANES) {
        VEC w[2];
        for (int kb = 0; kb < KB; kb++) w[kb] = FN(vload)(W + (ptrdiff_t)(k0 + kb) * F + j);
        for (int s = 0; s < NB; s++) {
            const VEC fv = FN(vload)(f + (ptrdiff_t)s * F + j);
            for (int kb = 0; kb < KB; kb++) acc[s][kb] = FN(vfma)(acc[s][kb], w[kb], fv);
        }
    }
    for (int s = 0; s < NB; s++)
        for (int kb = 0; kb < KB; kb++)
            tail[s][kb] = FN(dot_tail)(W + (ptrdiff_t)(k0 + kb) * F + FV, 1,
                                       f + (ptrdiff_t)s * F + FV, 1, F - FV);
    for (int s = 0; s < NB; s++)
        for (int kb = 0; kb < KB; kb++) out[s][kb] = FN(vsum)(acc[s][kb]) + tail[s][kb];
}

/* eq. (12) for NB <= 4 samples: out[s] = f(W f[s] + b), f the activation
 * `act` (sigma in the paper). f (NB, F), W (K, F), b (K), out (NB, K). The
 * samples share each pass over W, which is what a batch costs in memory
 * traffic; every output is the same, bit for bit, as with one sample. */
static void FN(dense_forward)(const REAL *f, int NB, int F, const REAL *W, int K, const REAL *b,
                              int act, REAL *out)
{
    REAL z[4][2];
    for (int k0 = 0; k0 < K; k0 += 2) {
        const int KB = K - k0 < 2 ? K - k0 : 2;
        switch (NB * 2 + KB) { /* sample and row counts known to the compiler */
        case 4 * 2 + 2: FN(dense_rows)(f, 4, F, W, k0, 2, z); break;
        case 3 * 2 + 2: FN(dense_rows)(f, 3, F, W, k0, 2, z); break;
        case 2 * 2 + 2: FN(dense_rows)(f, 2, F, W, k0, 2, z); break;
        case 1 * 2 + 2: FN(dense_rows)(f, 1, F, W, k0, 2, z); break;
        default: FN(dense_rows)(f, NB, F, W, k0, KB, z); break;
        }
        for (int s = 0; s < NB; s++)
            for (int kb = 0; kb < KB; kb++)
                out[(ptrdiff_t)s * K + k0 + kb] = z[s][kb] + b[k0 + kb];
    }
    FN(activation_forward)(act, out, (ptrdiff_t)NB * K, out);
}

/* The per-sample part of the backward pass for NB <= 4 samples, eq. (17),
 * (23), (28)-(30):
 *   delta = g * f'(z), from y     (g * y (1 - y) for sigma)
 *   df    = W^T delta             eq. (30), skipped if df is NULL
 * g, y, delta (NB, K); W (K, F); df (NB, F). Two samples share each load of
 * W; each df[s][j] sums over k in order, as for one sample. The weight and
 * bias gradients, sums over the batch, are dense_weight_bias_grad's. */
static void FN(dense_delta_input_grad)(const REAL *g, const REAL *y, int NB, int K, int act,
                                       const REAL *W, int F, REAL *delta, REAL *df)
{
    FN(activation_backward)(act, y, g, (ptrdiff_t)NB * K, delta);
    if (!df) return;
    for (int s0 = 0; s0 < NB; s0 += 2) {
        const int SB = NB - s0 < 2 ? NB - s0 : 2;
        const REAL *d = delta + (ptrdiff_t)s0 * K;
        REAL *out = df + (ptrdiff_t)s0 * F;
        /* df[s][j] = sum_k delta[s][k] W[k, j], four vectors of j at a time */
        const int FV = F - F % (4 * LANES);
        for (int j = 0; j < FV; j += 4 * LANES) {
            VEC acc[2][4];
            for (int s = 0; s < SB; s++)
                for (int jb = 0; jb < 4; jb++) acc[s][jb] = FN(vzero)();
            for (int k = 0; k < K; k++) {
                VEC w[4];
                for (int jb = 0; jb < 4; jb++)
                    w[jb] = FN(vload)(W + (ptrdiff_t)k * F + j + jb * LANES);
                for (int s = 0; s < SB; s++) {
                    const VEC ds = FN(vset1)(d[(ptrdiff_t)s * K + k]);
                    for (int jb = 0; jb < 4; jb++) acc[s][jb] = FN(vfma)(acc[s][jb], ds, w[jb]);
                }
            }
            for (int s = 0; s < SB; s++)
                for (int jb = 0; jb < 4; jb++)
                    FN(vstore)(out + (ptrdiff_t)s * F + j + jb * LANES, acc[s][jb]);
        }
        /* then one vector at a time: the same sums over k, fewer in flight */
        const int F1 = F - F % LANES;
        for (int j = FV; j < F1; j += LANES) {
            VEC acc[2];
            for (int s = 0; s < SB; s++) acc[s] = FN(vzero)();
            for (int k = 0; k < K; k++) {
                const VEC w = FN(vload)(W + (ptrdiff_t)k * F + j);
                for (int s = 0; s < SB; s++)
                    acc[s] = FN(vfma)(acc[s], FN(vset1)(d[(ptrdiff_t)s * K + k]), w);
            }
            for (int s = 0; s < SB; s++) FN(vstore)(out + (ptrdiff_t)s * F + j, acc[s]);
        }
        for (int s = 0; s < SB; s++)
            for (int j = F1; j < F; j++)
                out[(ptrdiff_t)s * F + j] = FN(dot_tail)(d + (ptrdiff_t)s * K, 1, W + j, F, K);
    }
}

/* Weight and bias gradients of rows k0 <= k < k1, summed over the batch in
 * sample order, eq. (19), (24):
 *   dW[k, :] = sum_n delta[n, k] f[n, :]        db[k] = sum_n delta[n, k]
 * f (N, F), delta (N, K). Two rows share each load of f; each entry sums
 * over n in order, as one row alone would. */
static void FN(dense_weight_bias_grad)(const REAL *f, const REAL *delta, ptrdiff_t N, int F, int K,
                                       int k0, int k1, REAL *dW, REAL *db)
{
    const int FV = F - F % (4 * LANES);
    for (int ka = k0; ka < k1; ka += 2) {
        const int KB = k1 - ka < 2 ? k1 - ka : 2;
        for (int j = 0; j < FV; j += 4 * LANES) {
            VEC acc[2][4];
            for (int kb = 0; kb < KB; kb++)
                for (int jb = 0; jb < 4; jb++) acc[kb][jb] = FN(vzero)();
            for (ptrdiff_t n = 0; n < N; n++) {
                VEC fv[4];
                for (int jb = 0; jb < 4; jb++) fv[jb] = FN(vload)(f + n * F + j + jb * LANES);
                for (int kb = 0; kb < KB; kb++) {
                    const VEC w = FN(vset1)(delta[n * K + ka + kb]);
                    for (int jb = 0; jb < 4; jb++) acc[kb][jb] = FN(vfma)(acc[kb][jb], w, fv[jb]);
                }
            }
            for (int kb = 0; kb < KB; kb++)
                for (int jb = 0; jb < 4; jb++)
                    FN(vstore)(dW + (ptrdiff_t)(ka + kb) * F + j + jb * LANES, acc[kb][jb]);
        }
        /* then one vector at a time: the same sums over n, fewer in flight */
        const int F1 = F - F % LANES;
        for (int j = FV; j < F1; j += LANES) {
            VEC acc[2];
            for (int kb = 0; kb < KB; kb++) acc[kb] = FN(vzero)();
            for (ptrdiff_t n = 0; n < N; n++) {
                const VEC fv = FN(vload)(f + n * F + j);
                for (int kb = 0; kb < KB; kb++)
                    acc[kb] = FN(vfma)(acc[kb], FN(vset1)(delta[n * K + ka + kb]), fv);
            }
            for (int kb = 0; kb < KB; kb++) FN(vstore)(dW + (ptrdiff_t)(ka + kb) * F + j, acc[kb]);
        }
        for (int kb = 0; kb < KB; kb++) {
            const int k = ka + kb;
            REAL *row = dW + (ptrdiff_t)k * F;
            for (int j = F1; j < F; j++) row[j] = FN(dot_tail)(delta + k, K, f + j, F, (int)N);
            REAL t = 0;
            for (ptrdiff_t n = 0; n < N; n++) t += delta[n * K + k];
            db[k] = t;
        }
    }
}
