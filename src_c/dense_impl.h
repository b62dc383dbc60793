/* dense_impl.h -- the fully connected layer of eq. (12) and its gradients,
 * for one floating type.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016). W is (K, F) as in eq. (12).
 */

/* out[k0 : k0+KB] = W[k0 : k0+KB] f, KB <= 4 rows at once sharing each load of f */
FC_INLINE void FN(dense_rows)(const REAL *FC_RESTRICT f, int F, const REAL *FC_RESTRICT W,
                              int k0, int KB, REAL out[4])
{
    const int FV = F - F % LANES;
    VEC acc[4];
    REAL tail[4];
    for (int kb = 0; kb < KB; kb++) {
        acc[kb] = FN(vzero)();
        tail[kb] = 0;
    }
    for (int j = 0; j < FV; j += LANES) {
        const VEC fv = FN(vload)(f + j);
        for (int kb = 0; kb < KB; kb++)
            acc[kb] = FN(vfma)(acc[kb], FN(vload)(W + (ptrdiff_t)(k0 + kb) * F + j), fv);
    }
    for (int j = FV; j < F; j++)
        for (int kb = 0; kb < KB; kb++) tail[kb] += W[(ptrdiff_t)(k0 + kb) * F + j] * f[j];
    for (int kb = 0; kb < KB; kb++) out[kb] = FN(vsum)(acc[kb]) + tail[kb];
}

/* eq. (12) for one sample: out = f(W f + b), f the activation `act` (sigma in
 * the paper). f (F), W (K, F), b (K), out (K). */
static void FN(dense_forward)(const REAL *f, int F, const REAL *W, int K, const REAL *b,
                              int act, REAL *out)
{
    REAL z[4];
    for (int k0 = 0; k0 < K; k0 += 4) {
        const int KB = K - k0 < 4 ? K - k0 : 4;
        switch (KB) { /* row counts known to the compiler */
        case 4: FN(dense_rows)(f, F, W, k0, 4, z); break;
        case 3: FN(dense_rows)(f, F, W, k0, 3, z); break;
        case 2: FN(dense_rows)(f, F, W, k0, 2, z); break;
        default: FN(dense_rows)(f, F, W, k0, 1, z); break;
        }
        for (int kb = 0; kb < KB; kb++) out[k0 + kb] = z[kb] + b[k0 + kb];
    }
    FN(activation_forward)(act, out, K, out);
}

/* The per-sample part of the backward pass, eq. (17), (23), (28)-(30):
 *   delta = g * f'(z), from y     (g * y (1 - y) for sigma)
 *   df    = W^T delta             eq. (30), skipped if df is NULL
 * g, y, delta (K); W (K, F); df (F). The weight and bias gradients, sums
 * over the batch, are dense_weight_bias_grad's. */
static void FN(dense_delta_input_grad)(const REAL *g, const REAL *y, int K, int act,
                                       const REAL *W, int F, REAL *delta, REAL *df)
{
    FN(activation_backward)(act, y, g, K, delta);
    if (!df) return;
    /* df[j] = sum_k delta[k] W[k, j], four vectors of j at a time */
    const int FV = F - F % (4 * LANES);
    for (int j = 0; j < FV; j += 4 * LANES) {
        VEC acc[4];
        for (int jb = 0; jb < 4; jb++) acc[jb] = FN(vzero)();
        for (int k = 0; k < K; k++) {
            const VEC w = FN(vset1)(delta[k]);
            for (int jb = 0; jb < 4; jb++)
                acc[jb] = FN(vfma)(acc[jb], w, FN(vload)(W + (ptrdiff_t)k * F + j + jb * LANES));
        }
        for (int jb = 0; jb < 4; jb++) FN(vstore)(df + j + jb * LANES, acc[jb]);
    }
    for (int j = FV; j < F; j++) {
        REAL s = 0;
        for (int k = 0; k < K; k++) s += delta[k] * W[(ptrdiff_t)k * F + j];
        df[j] = s;
    }
}

/* Weight and bias gradients of rows k0 <= k < k1, summed over the batch in
 * sample order, eq. (19), (24):
 *   dW[k, :] = sum_n delta[n, k] f[n, :]        db[k] = sum_n delta[n, k]
 * f (N, F), delta (N, K). */
static void FN(dense_weight_bias_grad)(const REAL *f, const REAL *delta, ptrdiff_t N, int F, int K,
                                       int k0, int k1, REAL *dW, REAL *db)
{
    const int FV = F - F % (4 * LANES);
    for (int k = k0; k < k1; k++) {
        REAL *row = dW + (ptrdiff_t)k * F;
        for (int j = 0; j < FV; j += 4 * LANES) {
            VEC acc[4];
            for (int jb = 0; jb < 4; jb++) acc[jb] = FN(vzero)();
            for (ptrdiff_t n = 0; n < N; n++) {
                const VEC w = FN(vset1)(delta[n * K + k]);
                for (int jb = 0; jb < 4; jb++)
                    acc[jb] = FN(vfma)(acc[jb], w, FN(vload)(f + n * F + j + jb * LANES));
            }
            for (int jb = 0; jb < 4; jb++) FN(vstore)(row + j + jb * LANES, acc[jb]);
        }
        for (int j = FV; j < F; j++) {
            REAL s = 0;
            for (ptrdiff_t n = 0; n < N; n++) s += delta[n * K + k] * f[n * F + j];
            row[j] = s;
        }
        REAL s = 0;
        for (ptrdiff_t n = 0; n < N; n++) s += delta[n * K + k];
        db[k] = s;
    }
}
