/* conv_impl.h -- convolution-layer kernels for one floating type.
 *
 * Not a header to include directly: kernels.h includes it once per type with
 *   REAL      float or double
 *   FN(name)  the name with its type suffix (fc_name_f32, fc_name_f64)
 *   EXP       exp for REAL
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (seeds/000). Indices here are 0-based, so the
 * paper's centred u, v in -2..2 become 0..K-1 and its ceil(i/2) becomes i/2.
 *
 * Every function works on ONE sample; the Cython callers spread samples over
 * threads. Each output element is written by exactly one call and every sum
 * runs in a fixed order, so results do not depend on the thread count.
 */

/* Sum of the LANES partial sums, always in the same pairwise order. */
FC_INLINE REAL FN(hsum)(const REAL a[FC_LANES])
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* ------------------------------------------------------------------------
 * Valid correlation, many maps to many maps (the engine of forward and of
 * the input gradient):
 *
 *   out[o, i, j] = bias[o] + sum_c sum_{u<KH, v<KW} x[c, i+u, j+v] * w(o, c, u, v)
 *
 * w(o, c, u, v) = w[o*w_out + c*w_in + u*KW + v], read rotated by 180 degrees
 * when FLIP is set. Its two users:
 *   forward, eq. (5), (8):  x = a, w = k, FLIP = 1. The true convolution
 *       sum_{u,v} a(i-u, j-v) k(u, v) over the valid region is the
 *       correlation of a with rot180(k).
 *   input gradient, eq. (49)-(51): x = delta zero-padded by KH-1 rows and
 *       KW-1 columns on each side, o = input map p, c = output map q,
 *       w(p, q) = k[q, p], FLIP = 0. The full convolution of delta with
 *       rot180(k) is the valid correlation of the padded delta with k.
 * ---------------------------------------------------------------------- */

/* acc[l] += sum_c sum_{u,v} x[c, u, l+v] * w(c, u, v) for l < LANES;
 * x points at (row i, column j0) of input map 0. */
FC_INLINE void FN(corr_block)(REAL acc[FC_LANES], const REAL *FC_RESTRICT x,
                              ptrdiff_t x_map, ptrdiff_t x_row, int C,
                              const REAL *FC_RESTRICT w, ptrdiff_t w_in,
                              int KH, int KW, int flip)
{
    for (int c = 0; c < C; c++) {
        const REAL *xc = x + c * x_map;
        const REAL *wc = w + c * w_in;
        for (int u = 0; u < KH; u++) {
            const REAL *xr = xc + u * x_row;
            for (int v = 0; v < KW; v++) {
                const REAL wv = flip ? wc[(KH - 1 - u) * KW + (KW - 1 - v)]
                                     : wc[u * KW + v];
                for (int l = 0; l < FC_LANES; l++)
                    acc[l] += wv * xr[v + l];
            }
        }
    }
}

/* The same sum for one output element, in the same order (images narrower
 * than LANES). */
FC_INLINE REAL FN(corr_point)(REAL s, const REAL *FC_RESTRICT x,
                              ptrdiff_t x_map, ptrdiff_t x_row, int C,
                              const REAL *FC_RESTRICT w, ptrdiff_t w_in,
                              int KH, int KW, int flip)
{
    for (int c = 0; c < C; c++)
        for (int u = 0; u < KH; u++)
            for (int v = 0; v < KW; v++)
                s += (flip ? w[c * w_in + (KH - 1 - u) * KW + (KW - 1 - v)]
                           : w[c * w_in + u * KW + v]) *
                     x[c * x_map + u * x_row + v];
    return s;
}

/* out (O, H-KH+1, W-KW+1), contiguous; bias may be NULL. */
FC_INLINE void FN(corr_valid_body)(const REAL *FC_RESTRICT x, int C, int H, int W,
                                   ptrdiff_t x_map, ptrdiff_t x_row,
                                   const REAL *FC_RESTRICT w, ptrdiff_t w_out,
                                   ptrdiff_t w_in, int O, int KH, int KW, int flip,
                                   const REAL *FC_RESTRICT bias, int sigmoid,
                                   REAL *FC_RESTRICT out)
{
    const int OH = H - KH + 1, OW = W - KW + 1;
    for (int o = 0; o < O; o++) {
        const REAL b = bias ? bias[o] : (REAL)0;
        const REAL *wo = w + o * w_out;
        for (int i = 0; i < OH; i++) {
            REAL *orow = out + ((ptrdiff_t)o * OH + i) * OW;
            const REAL *xrow = x + i * x_row;
            if (OW < FC_LANES) {
                for (int j = 0; j < OW; j++) {
                    REAL s = FN(corr_point)(b, xrow + j, x_map, x_row, C, wo, w_in,
                                            KH, KW, flip);
                    orow[j] = sigmoid ? FN(sigmoid)(s) : s;
                }
                continue;
            }
            /* Blocks of LANES columns; the last block is shifted left to end at
             * OW, recomputing a few columns with the same arithmetic (so the
             * same values) instead of a scalar tail. */
            for (int j0 = 0;; j0 += FC_LANES) {
                if (j0 > OW - FC_LANES) j0 = OW - FC_LANES;
                REAL acc[FC_LANES];
                for (int l = 0; l < FC_LANES; l++) acc[l] = b;
                FN(corr_block)(acc, xrow + j0, x_map, x_row, C, wo, w_in, KH, KW, flip);
                for (int l = 0; l < FC_LANES; l++)
                    orow[j0 + l] = sigmoid ? FN(sigmoid)(acc[l]) : acc[l];
                if (j0 == OW - FC_LANES) break;
            }
        }
    }
}

/* ------------------------------------------------------------------------
 * Weight gradient, eq. (39)-(40) and (58)-(59):
 *
 *   dk[m, c, u, v] = sum_{i<OH, j<OW} d[m, i, j] * x[c, i + KH-1-u, j + KW-1-v]
 *
 * i.e. the valid convolution of rot180(x) with delta. Written as
 * g(a, b) = sum_{i,j} d[i, j] x[i+a, j+b] with (a, b) = (KH-1-u, KW-1-v):
 * a reduction over the whole map, kept in LANES partial sums (one per column
 * of a block) plus a scalar tail, combined in a fixed order at the end.
 * ---------------------------------------------------------------------- */

/* g[b] = sum_{i<OH, j<OW} d[i, j] * x[i, j+b] for b < NB (NB <= 8) */
FC_INLINE void FN(wgrad_cols)(const REAL *FC_RESTRICT x, ptrdiff_t x_row,
                              const REAL *FC_RESTRICT d, ptrdiff_t d_row,
                              int OH, int OW, int NB, REAL g[8])
{
    REAL acc[8][FC_LANES], tail[8];
    for (int b = 0; b < NB; b++) {
        tail[b] = 0;
        for (int l = 0; l < FC_LANES; l++) acc[b][l] = 0;
    }
    const int OWV = OW - OW % FC_LANES;
    for (int i = 0; i < OH; i++) {
        const REAL *drow = d + i * d_row;
        const REAL *xrow = x + i * x_row;
        for (int j0 = 0; j0 < OWV; j0 += FC_LANES)
            for (int b = 0; b < NB; b++)
                for (int l = 0; l < FC_LANES; l++)
                    acc[b][l] += drow[j0 + l] * xrow[j0 + b + l];
        for (int j = OWV; j < OW; j++)
            for (int b = 0; b < NB; b++)
                tail[b] += drow[j] * xrow[j + b];
    }
    for (int b = 0; b < NB; b++) g[b] = FN(hsum)(acc[b]) + tail[b];
}

/* dk (M, C, KH, KW) for one sample; d has M maps of OH x OW at the given strides. */
FC_INLINE void FN(conv_wgrad_body)(const REAL *FC_RESTRICT x, ptrdiff_t x_map,
                                   ptrdiff_t x_row, int C,
                                   const REAL *FC_RESTRICT d, ptrdiff_t d_map,
                                   ptrdiff_t d_row, int M, int OH, int OW,
                                   int KH, int KW, REAL *FC_RESTRICT dk)
{
    /* Columns done together: all KW of them when KW <= 8 (the compiler
     * unrolls when KW is a constant), else one at a time. */
    const int NB = KW <= 8 ? KW : 1;
    REAL g[8];
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            REAL *dkmc = dk + ((ptrdiff_t)m * C + c) * KH * KW;
            for (int a = 0; a < KH; a++)
                for (int b0 = 0; b0 < KW; b0 += NB) {
                    FN(wgrad_cols)(x + c * x_map + a * x_row + b0, x_row,
                                   d + m * d_map, d_row, OH, OW, NB, g);
                    for (int b = 0; b < NB; b++)
                        dkmc[(KH - 1 - a) * KW + (KW - 1 - (b0 + b))] = g[b];
                }
        }
}

/* ------------------------------------------------------------------------
 * Public per-sample entry points (the 5x5 fast path is the general body with
 * the kernel size known to the compiler, which then unrolls and vectorises it).
 * ---------------------------------------------------------------------- */

/* eq. (4)-(5), (7)-(8): out[q] = sigma(sum_p a[p] * k[q, p] + b[q]) (valid,
 * true convolution); sigma skipped when sigmoid == 0.
 * x (C, H, W), k (M, C, KH, KW), bias (M), out (M, H-KH+1, W-KW+1). */
static void FN(conv_forward)(const REAL *x, int C, int H, int W, const REAL *k,
                             int M, int KH, int KW, const REAL *bias, int sigmoid,
                             REAL *out)
{
    const ptrdiff_t KK = (ptrdiff_t)KH * KW;
    if (KH == 5 && KW == 5)
        FN(corr_valid_body)(x, C, H, W, (ptrdiff_t)H * W, W, k, C * 25, 25, M, 5, 5,
                            1, bias, sigmoid, out);
    else
        FN(corr_valid_body)(x, C, H, W, (ptrdiff_t)H * W, W, k, C * KK, KK, M, KH, KW,
                            1, bias, sigmoid, out);
}

/* Backward of conv_forward for one sample.
 *   d   = g * y (1 - y)                 eq. (37), (57)  (d = g without sigmoid)
 *   db  = sum_{i,j} d                   eq. (45), (64)
 *   dk  = rot180(x) (*) d               eq. (39)-(40), (58)-(59)
 *   dx  = sum_q d_q (*)full rot180(k_q) eq. (49)-(51)   (skipped if dx is NULL)
 * y, g (M, OH, OW): layer output and dL/dy. dpad: workspace of M maps of
 * (OH + 2(KH-1)) x (OW + 2(KW-1)) whose border is zero on entry and stays
 * zero; d is written into its interior. dk (M, C, KH, KW), db (M), dx (C, H, W). */
static void FN(conv_backward)(const REAL *x, int C, int H, int W, const REAL *k,
                              int M, int KH, int KW, const REAL *y, const REAL *g,
                              int sigmoid, REAL *dpad, REAL *dk, REAL *db, REAL *dx)
{
    const int OH = H - KH + 1, OW = W - KW + 1;
    const int HP = OH + 2 * (KH - 1), WP = OW + 2 * (KW - 1);
    const ptrdiff_t P = (ptrdiff_t)HP * WP;
    REAL *d = dpad + (KH - 1) * WP + (KW - 1); /* interior, row stride WP */

    for (int m = 0; m < M; m++) {
        REAL acc[FC_LANES] = {0}, tail = 0;
        for (int i = 0; i < OH; i++) {
            const REAL *gr = g + ((ptrdiff_t)m * OH + i) * OW;
            const REAL *yr = y + ((ptrdiff_t)m * OH + i) * OW;
            REAL *dr = d + m * P + (ptrdiff_t)i * WP;
            for (int j = 0; j < OW; j++)
                dr[j] = sigmoid ? gr[j] * yr[j] * ((REAL)1 - yr[j]) : gr[j];
            const int OWV = OW - OW % FC_LANES;
            for (int j0 = 0; j0 < OWV; j0 += FC_LANES)
                for (int l = 0; l < FC_LANES; l++) acc[l] += dr[j0 + l];
            for (int j = OWV; j < OW; j++) tail += dr[j];
        }
        db[m] = FN(hsum)(acc) + tail;
    }

    if (KH == 5 && KW == 5)
        FN(conv_wgrad_body)(x, (ptrdiff_t)H * W, W, C, d, P, WP, M, OH, OW, 5, 5, dk);
    else
        FN(conv_wgrad_body)(x, (ptrdiff_t)H * W, W, C, d, P, WP, M, OH, OW, KH, KW, dk);

    if (dx) {
        const ptrdiff_t KK = (ptrdiff_t)KH * KW;
        if (KH == 5 && KW == 5)
            FN(corr_valid_body)(dpad, M, HP, WP, P, WP, k, 25, C * 25, C, 5, 5, 0,
                                NULL, 0, dx);
        else
            FN(corr_valid_body)(dpad, M, HP, WP, P, WP, k, KK, C * KK, C, KH, KW, 0,
                                NULL, 0, dx);
    }
}

/* out[e] = sum_{n<N} ws[n, e] for e0 <= e < e1, summed in the order n = 0, 1, ...
 * (per-sample partial gradients combined in sample order: the fixed order that
 * makes the batch gradient independent of how samples were spread on threads). */
static void FN(sum_samples)(const REAL *ws, ptrdiff_t N, ptrdiff_t E, ptrdiff_t e0,
                            ptrdiff_t e1, REAL *out)
{
    for (ptrdiff_t e = e0; e < e1; e++) out[e] = ws[e];
    for (ptrdiff_t n = 1; n < N; n++) {
        const REAL *wn = ws + n * E;
        for (ptrdiff_t e = e0; e < e1; e++) out[e] += wn[e];
    }
}
