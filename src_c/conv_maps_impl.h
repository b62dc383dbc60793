/* conv_maps_impl.h -- convolution kernels with maps in the vector lanes.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined. Equation numbers are those of Zhang, "Derivation of
 * Backpropagation in Convolutional Neural Network" (Zhifei Zhang, 2016), with
 * the stride of Wang, "Forward and Backward Propagation of Convolutional
 * Layer" (Jiafeng Wang); indices are 0-based as in conv_impl.h.
 *
 * conv_impl.h puts neighbouring output *pixels* of one map in a vector, which
 * needs maps at least a vector wide. Deeper layers have narrow maps (14 x 14,
 * 7 x 7) but many of them (16-64): here a vector holds one pixel of LANES
 * neighbouring *maps*, as oneDNN's blocked nChw16c layouts do, so the width
 * of a map no longer matters and a stride costs nothing. The public arrays
 * stay (N, C, H, W): inputs are read a pixel at a time (broadcast to every
 * lane) and a tile of outputs is transposed back when it is stored. Weights
 * are rearranged once per batch into wT[c][u][v][o], o padded with zeros to a
 * whole number of vectors (conv_maps_weights).
 *
 * One kernel, a correlation with maps in lanes, serves twice:
 *
 *   corr_maps:  out[o, i, j] = b[o] + sum_c sum_{u,v} in[c, s*i+u, s*j+v] wT[c][u][v][o]
 *
 *   forward, eq. (5), (8):  in = x, wT[p][u][v][q] = k[q, p, KH-1-u, KW-1-v]
 *       (the valid true convolution is the correlation with the rotated kernel);
 *   input gradient, eq. (47)-(51):  in = delta dilated by the stride and padded
 *       with KH-1, KW-1 zeros (the full convolution), s = 1, wT[q][u][v][p] =
 *       k[q, p, u, v], out = dx.
 *
 * The weight gradient, eq. (39)-(40), sums x against the delta of LANES maps
 * at once (wgrad_maps). Every output element is the same sum in the same
 * order wherever its tile falls, so results do not depend on the batch or
 * the thread count. The forward sums are those of conv_impl.h's vector tiles
 * term for term: where those run, both kernels give the same bits.
 */

/* Tiles: JB output pixels of a row x QB vectors of maps, all in registers:
 * 32 vector registers with AVX-512 allow 12 x 2 (or 24 x 1 where the maps
 * fill one vector), 16 (AVX2) 6 x 2 or 12 x 1. Fewer independent sums
 * than that leave the multiply-add units waiting on their latency. */
#if LANES * (REAL_DOUBLE ? 8 : 4) == 64
#  define FC_MAPS_JB 12
#else
#  define FC_MAPS_JB 6
#endif

FC_INLINE int FN(maps_round)(int n) { return (n + LANES - 1) / LANES * LANES; }

/* n rounded up to a whole number of vectors of the kernels in use. */
static int FN(conv_maps_round)(int n) { return FN(maps_round)(n); }

/* wT from k (M, C, KH, KW): for the forward pass (input_grad = 0),
 * wT[p][u][v][q] = k[q, p, KH-1-u, KW-1-v], q < round(M), then round(M)
 * biases; for the input gradient, wT[q][u][v][p] = k[q, p, u, v], p <
 * round(C), then round(C) zeros. Padding lanes are zero. */
static void FN(conv_maps_weights)(const REAL *k, const REAL *bias, int M, int C, int KH, int KW,
                                  int input_grad, REAL *wT)
{
    const int OQ = input_grad ? FN(maps_round)(C) : FN(maps_round)(M);
    const int CI = input_grad ? M : C;
    const ptrdiff_t E = (ptrdiff_t)CI * KH * KW * OQ;
    memset(wT, 0, sizeof(REAL) * (size_t)(E + OQ));
    for (int q = 0; q < M; q++)
        for (int p = 0; p < C; p++)
            for (int u = 0; u < KH; u++)
                for (int v = 0; v < KW; v++) {
                    const REAL w = k[(((ptrdiff_t)q * C + p) * KH + u) * KW + v];
                    if (input_grad)
                        wT[(((ptrdiff_t)q * KH + u) * KW + v) * OQ + p] = w;
                    else
                        wT[(((ptrdiff_t)p * KH + KH - 1 - u) * KW + KW - 1 - v) * OQ + q] = w;
                }
    if (bias && !input_grad)
        for (int q = 0; q < M; q++) wT[E + q] = bias[q];
}

/* One tile of corr_maps: pixels j0 .. j0+JB-1 of output row i, maps q0 ..
 * q0 + QB*LANES - 1; `in` points at in[0, s*i, s*j0], `w` at wT[0][0][0][q0]. */
FC_INLINE void FN(corr_maps_tile)(const REAL *FC_RESTRICT in, ptrdiff_t in_map, int IW,
                                  const REAL *FC_RESTRICT w, const REAL *FC_RESTRICT b, int OQ,
                                  int CI, int KH, int KW, int s, int JB, int QB, int taps,
                                  VEC acc[2 * FC_MAPS_JB][2])
{
    for (int qv = 0; qv < QB; qv++) {
        const VEC bv = FN(vload)(b + qv * LANES);
        for (int jb = 0; jb < JB; jb++) acc[jb][qv] = bv;
    }
    for (int c = 0; c < CI; c++)
        for (int u = 0; u < KH; u++) {
            const REAL *row = in + c * in_map + (ptrdiff_t)u * IW;
            const REAL *wu = w + ((ptrdiff_t)c * KH + u) * KW * OQ;
            if (taps && s == 1 && QB == 1 && KW <= 5) {
                /* one vector of maps: each input pixel, loaded once, serves
                 * the KW outputs it touches (output jb takes tap t - jb), so
                 * the broadcasts no longer outnumber the multiply-adds; each
                 * output still sums its terms in the order v = 0, 1, ... */
                VEC wv[5];
                for (int v = 0; v < KW; v++) wv[v] = FN(vload)(wu + (ptrdiff_t)v * OQ);
                FC_UNROLL
                for (int t = 0; t < JB + KW - 1; t++) {
                    const VEC xb = FN(vset1)(row[t]);
                    FC_UNROLL
                    for (int v = KW - 1; v >= 0; v--) {
                        const int jb = t - v;
                        if (jb >= 0 && jb < JB) acc[jb][0] = FN(vfma)(acc[jb][0], xb, wv[v]);
                    }
                }
                continue;
            }
            for (int v = 0; v < KW; v++) {
                VEC wv[2];
                for (int qv = 0; qv < QB; qv++) wv[qv] = FN(vload)(wu + (ptrdiff_t)v * OQ + qv * LANES);
                for (int jb = 0; jb < JB; jb++) {
                    const VEC xb = FN(vset1)(row[jb * s + v]);
                    for (int qv = 0; qv < QB; qv++) acc[jb][qv] = FN(vfma)(acc[jb][qv], xb, wv[qv]);
                }
            }
        }
}

/* One output row i of maps q0 .. q0+QB*LANES-1 (those below MO), in tiles
 * of JB pixels; the last tile moves back to end at OW (the outputs it
 * repeats get the same values). */
FC_INLINE void FN(corr_maps_row)(const REAL *in, int CI, int IH, int IW, const REAL *wT, int OQ,
                                 int MO, int KH, int KW, int s, int OH, int OW, int i, int q0,
                                 int QB, int JB, int taps, REAL *out)
{
    const REAL *b = wT + (ptrdiff_t)CI * KH * KW * OQ + q0;
    const int nq = MO - q0 < QB * LANES ? MO - q0 : QB * LANES;
    const ptrdiff_t OHW = (ptrdiff_t)OH * OW;
    for (int j0 = 0;; j0 += JB) {
        if (j0 > OW - JB) j0 = OW - JB;
        VEC acc[2 * FC_MAPS_JB][2];
        FN(corr_maps_tile)(in + (ptrdiff_t)s * i * IW + (ptrdiff_t)s * j0, (ptrdiff_t)IH * IW, IW,
                           wT + q0, b, OQ, CI, KH, KW, s, JB, QB, taps, acc);
        /* back to (maps, rows, columns): each lane to its own map */
        REAL t[2 * FC_MAPS_JB][2 * LANES];
        for (int jb = 0; jb < JB; jb++)
            for (int qv = 0; qv < QB; qv++) FN(vstore)(t[jb] + qv * LANES, acc[jb][qv]);
        for (int q = 0; q < nq; q++) {
            REAL *o = out + (q0 + q) * OHW + (ptrdiff_t)i * OW + j0;
            for (int jb = 0; jb < JB; jb++) o[jb] = t[jb][q];
        }
        if (j0 == OW - JB) break;
    }
}

/* JB, QB and (for one vector of maps, where tiles share taps) KW known to
 * the compiler, so the tile stays in registers */
#define FC_MAPS_ROW_ONE_VECTOR(J)                                                           \
    if (KW == 3)                                                                            \
        FN(corr_maps_row)(in, CI, IH, IW, wT, OQ, MO, KH, 3, s, OH, OW, i, q0, 1, J, 1, out); \
    else if (KW == 5)                                                                       \
        FN(corr_maps_row)(in, CI, IH, IW, wT, OQ, MO, KH, 5, s, OH, OW, i, q0, 1, J, 1, out); \
    else                                                                                    \
        FN(corr_maps_row)(in, CI, IH, IW, wT, OQ, MO, KH, KW, s, OH, OW, i, q0, 1, J, 0, out);
#define FC_MAPS_ROW_CASE(J)                                                                 \
    case J:                                                                                 \
        if (QB == 2) {                                                                      \
            FN(corr_maps_row)(in, CI, IH, IW, wT, OQ, MO, KH, KW, s, OH, OW, i, q0, 2, J, 0, out); \
        } else {                                                                            \
            FC_MAPS_ROW_ONE_VECTOR(J)                                                       \
        }                                                                                   \
        break;
#define FC_MAPS_ROW_CASE1(J)                                                                \
    case J:                                                                                 \
        FC_MAPS_ROW_ONE_VECTOR(J)                                                           \
        break;

/* corr_maps for one sample: out (MO, OH, OW) from in (CI, IH, IW) and wT
 * (CI, KH, KW, round(MO)) + round(MO) biases, stride s. */
static void FN(corr_maps)(const REAL *in, int CI, int IH, int IW, const REAL *wT, int MO,
                          int KH, int KW, int s, int OH, int OW, REAL *out)
{
    const int OQ = FN(maps_round)(MO);
    /* as few tiles per row as the registers allow, as even as possible */
    const int JBmax = OQ == LANES ? 2 * FC_MAPS_JB : FC_MAPS_JB;
    const int tiles = (OW + JBmax - 1) / JBmax;
    const int JB = (OW + tiles - 1) / tiles;
    for (int i = 0; i < OH; i++)
        for (int q0 = 0; q0 < OQ; q0 += 2 * LANES) {
            const int QB = OQ - q0 >= 2 * LANES ? 2 : 1;
            switch (JB) {
            FC_MAPS_ROW_CASE(1) FC_MAPS_ROW_CASE(2) FC_MAPS_ROW_CASE(3) FC_MAPS_ROW_CASE(4)
            FC_MAPS_ROW_CASE(5) FC_MAPS_ROW_CASE(6)
#if FC_MAPS_JB > 6
            FC_MAPS_ROW_CASE(7) FC_MAPS_ROW_CASE(8) FC_MAPS_ROW_CASE(9) FC_MAPS_ROW_CASE(10)
            FC_MAPS_ROW_CASE(11) FC_MAPS_ROW_CASE(12)
            FC_MAPS_ROW_CASE1(13) FC_MAPS_ROW_CASE1(14) FC_MAPS_ROW_CASE1(15)
            FC_MAPS_ROW_CASE1(16) FC_MAPS_ROW_CASE1(17) FC_MAPS_ROW_CASE1(18)
            FC_MAPS_ROW_CASE1(19) FC_MAPS_ROW_CASE1(20) FC_MAPS_ROW_CASE1(21)
            FC_MAPS_ROW_CASE1(22) FC_MAPS_ROW_CASE1(23) FC_MAPS_ROW_CASE1(24)
#else
            FC_MAPS_ROW_CASE1(7) FC_MAPS_ROW_CASE1(8) FC_MAPS_ROW_CASE1(9)
            FC_MAPS_ROW_CASE1(10) FC_MAPS_ROW_CASE1(11) FC_MAPS_ROW_CASE1(12)
#endif
            default: break;
            }
        }
}
#undef FC_MAPS_ROW_CASE
#undef FC_MAPS_ROW_CASE1
#undef FC_MAPS_ROW_ONE_VECTOR

/* eq. (4)-(5), (7)-(8) with stride s for one sample: out[q] = f(z_q),
 * z_q(i, j) = b_q + sum_p sum_{u,v} x[p, s*i+u, s*j+v] k[q, p, KH-1-u, KW-1-v].
 * x (C, H, W); wT from conv_maps_weights(input_grad = 0); out (M, OH, OW)
 * with OH = (H-KH)/s + 1, OW = (W-KW)/s + 1. */
static void FN(conv_maps_forward)(const REAL *x, int C, int H, int W, const REAL *wT, int M,
                                  int KH, int KW, int s, int act, REAL *out)
{
    const int OH = (H - KH) / s + 1, OW = (W - KW) / s + 1;
    FN(corr_maps)(x, C, H, W, wT, M, KH, KW, s, OH, OW, out);
    FN(activation_forward)(act, out, (ptrdiff_t)M * OH * OW, out); /* eq. (4) */
}

/* ------------------------------------------------------------------------
 * Backward, one sample. The workspace (conv_maps_ws_size elements) holds
 *   dT: delta = dL/dz (eq. 37, 57) as dT[i][j][q], q padded to round(M);
 *   Dp: delta dilated by s and padded with KH-1 rows and KW-1 columns of
 *       zeros on each side, M maps of (H + KH - 1) x (W + KW - 1): only the
 *       positions s*i + KH-1, s*j + KW-1 are ever written, the rest stays
 *       zero from when the layer allocated it;
 *   one row of delta (OW).
 * ---------------------------------------------------------------------- */

static ptrdiff_t FN(conv_maps_ws_size)(int M, int H, int W, int KH, int KW, int OH, int OW)
{
    return (ptrdiff_t)OH * OW * FN(maps_round)(M) + (ptrdiff_t)M * (H + KH - 1) * (W + KW - 1) + OW;
}

/* g[p][u][v][q] = sum_{i,j} x[p, s*i+u, s*j+v] dT[i][j][q] for UB rows u
 * from u0, VB columns v from v0 and QB vectors of q from q0, all in
 * registers (UB * VB * QB <= 24). */
FC_INLINE void FN(wgrad_maps_tile)(const REAL *FC_RESTRICT xp, int W, const REAL *FC_RESTRICT dT,
                                   int MQ, int OH, int OW, int s, int u0, int UB, int v0, int VB,
                                   int KW, int q0, int QB, REAL *FC_RESTRICT gp /* &g[p][0][0][0] */)
{
    VEC acc[24];
    for (int a = 0; a < UB * VB * QB; a++) acc[a] = FN(vzero)();
    for (int i = 0; i < OH; i++) {
        const REAL *xr = xp + (ptrdiff_t)(s * i + u0) * W + v0;
        const REAL *dr = dT + (ptrdiff_t)i * OW * MQ + q0;
        for (int j = 0; j < OW; j++) {
            VEC dv[2];
            for (int qv = 0; qv < QB; qv++) dv[qv] = FN(vload)(dr + (ptrdiff_t)j * MQ + qv * LANES);
            for (int u = 0; u < UB; u++)
                for (int v = 0; v < VB; v++) {
                    const VEC xb = FN(vset1)(xr[(ptrdiff_t)u * W + s * j + v]);
                    for (int qv = 0; qv < QB; qv++)
                        acc[(u * VB + v) * QB + qv] = FN(vfma)(acc[(u * VB + v) * QB + qv], xb, dv[qv]);
                }
        }
    }
    for (int u = 0; u < UB; u++)
        for (int v = 0; v < VB; v++)
            for (int qv = 0; qv < QB; qv++)
                FN(vstore)(gp + (((ptrdiff_t)(u0 + u) * KW + v0 + v) * MQ) + q0 + qv * LANES,
                           acc[(u * VB + v) * QB + qv]);
}

/* weight-gradient partials of one sample, eq. (39)-(40) with stride s:
 * g[p][u][v][q] = sum_{i,j} x[p, s*i+u, s*j+v] delta[q, i, j] */
static void FN(wgrad_maps)(const REAL *x, int C, int H, int W, const REAL *dT, int M, int KH,
                           int KW, int s, int OH, int OW, REAL *g)
{
    const int MQ = FN(maps_round)(M);
    for (int p = 0; p < C; p++) {
        const REAL *xp = x + (ptrdiff_t)p * H * W;
        REAL *gp = g + (ptrdiff_t)p * KH * KW * MQ;
        for (int q0 = 0; q0 < MQ; q0 += 2 * LANES) {
            const int QB = MQ - q0 >= 2 * LANES ? 2 : 1;
            /* columns, then rows, of the kernel per tile: as many as 24 registers hold */
            const int VB = KW * QB <= 24 ? KW : 24 / QB;
            const int UB = 24 / (VB * QB);
            for (int u0 = 0; u0 < KH; u0 += UB) {
                const int ub = KH - u0 < UB ? KH - u0 : UB;
                for (int v0 = 0; v0 < KW; v0 += VB) {
                    const int vb = KW - v0 < VB ? KW - v0 : VB;
                    /* the paper's and today's kernel sizes with constant tiles */
                    if (KW == 3 && QB == 2 && ub == 3)
                        FN(wgrad_maps_tile)(xp, W, dT, MQ, OH, OW, s, u0, 3, 0, 3, 3, q0, 2, gp);
                    else if (KW == 3 && QB == 1 && ub == 3)
                        FN(wgrad_maps_tile)(xp, W, dT, MQ, OH, OW, s, u0, 3, 0, 3, 3, q0, 1, gp);
                    else if (KW == 5 && QB == 2 && ub == 2)
                        FN(wgrad_maps_tile)(xp, W, dT, MQ, OH, OW, s, u0, 2, 0, 5, 5, q0, 2, gp);
                    else if (KW == 5 && QB == 1 && ub == 4)
                        FN(wgrad_maps_tile)(xp, W, dT, MQ, OH, OW, s, u0, 4, 0, 5, 5, q0, 1, gp);
                    else
                        FN(wgrad_maps_tile)(xp, W, dT, MQ, OH, OW, s, u0, ub, v0, vb, KW, q0, QB,
                                            gp);
                }
            }
        }
    }
}

/* Elements of one sample's weight-gradient partials. */
static ptrdiff_t FN(conv_maps_wgrad_size)(int M, int C, int KH, int KW)
{
    return (ptrdiff_t)C * KH * KW * FN(maps_round)(M);
}

/* dk (M, C, KH, KW) from the partials summed over the batch:
 * dk[q, p, KH-1-u, KW-1-v] = g[p][u][v][q]. */
static void FN(conv_maps_wgrad_from_partials)(const REAL *g, int M, int C, int KH, int KW, REAL *dk)
{
    const int MQ = FN(maps_round)(M);
    for (int p = 0; p < C; p++)
        for (int u = 0; u < KH; u++)
            for (int v = 0; v < KW; v++)
                for (int q = 0; q < M; q++)
                    dk[(((ptrdiff_t)q * C + p) * KH + KH - 1 - u) * KW + KW - 1 - v] =
                        g[(((ptrdiff_t)p * KH + u) * KW + v) * MQ + q];
}

/* Backward of conv_maps_forward for one sample:
 *   delta = g * f'(z), from y               eq. (37), (57)
 *   db    = sum_{i,j} delta                 eq. (45), (64)
 *   gk    = this sample's weight-gradient partials (conv_maps_wgrad_from_partials)
 *   dx    = the full correlation of the dilated delta with wTdx, eq. (49)-(51)
 *           (skipped if dx is NULL)
 * x (C, H, W); wTdx from conv_maps_weights(input_grad = 1); y and g (M, OH,
 * OW); ws: conv_maps_ws_size elements, zero on first use; db (M); dx (C, H, W). */
static void FN(conv_maps_backward)(const REAL *x, int C, int H, int W, const REAL *wTdx, int M,
                                   int KH, int KW, int s, const REAL *y, const REAL *g, int act,
                                   REAL *ws, REAL *gk, REAL *db, REAL *dx)
{
    const int OH = (H - KH) / s + 1, OW = (W - KW) / s + 1, MQ = FN(maps_round)(M);
    const int HP = H + KH - 1, WP = W + KW - 1;
    REAL *dT = ws, *Dp = ws + (ptrdiff_t)OH * OW * MQ, *row = Dp + (ptrdiff_t)M * HP * WP;
    for (int q = 0; q < M; q++)
        for (int i = 0; i < OH; i++) {
            const ptrdiff_t at = ((ptrdiff_t)q * OH + i) * OW;
            FN(activation_backward)(act, y + at, g + at, OW, row); /* eq. (37), (57) */
            REAL *dp = Dp + ((ptrdiff_t)q * HP + KH - 1 + s * i) * WP + KW - 1;
            REAL *dt = dT + (ptrdiff_t)i * OW * MQ + q;
            for (int j = 0; j < OW; j++) {
                dp[s * j] = row[j];
                dt[(ptrdiff_t)j * MQ] = row[j];
            }
        }
    /* eq. (45), (64): db = sum_{i,j} dT[i][j][:], one lane per map */
    for (int q0 = 0; q0 < MQ; q0 += LANES) {
        VEC acc = FN(vzero)();
        for (ptrdiff_t e = 0; e < (ptrdiff_t)OH * OW; e++) acc = FN(vadd)(acc, FN(vload)(dT + e * MQ + q0));
        REAL t[LANES];
        FN(vstore)(t, acc);
        for (int l = 0; l < LANES && q0 + l < M; l++) db[q0 + l] = t[l];
    }
    FN(wgrad_maps)(x, C, H, W, dT, M, KH, KW, s, OH, OW, gk);
    if (dx) FN(corr_maps)(Dp, M, HP, WP, wTdx, C, KH, KW, 1, H, W, dx);
}

#undef FC_MAPS_JB
