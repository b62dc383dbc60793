/* conv_impl.h -- convolution-layer kernels for one floating type.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016). Indices here are 0-based, so the
 * paper's centred u, v in -2..2 become 0..K-1: the input pixel a(i-u, j-v) of
 * eq. (5) is a[i + K-1 - u, j + K-1 - v].
 *
 * Every function works on ONE sample; the Cython callers spread samples over
 * threads. Each output element is written by exactly one call and every sum
 * runs in a fixed order, so results do not depend on the thread count.
 *
 * Speed comes from register tiles: a tile keeps RB x CB vectors of LANES
 * partial sums in registers while the loops over maps and kernel offsets run,
 * so each multiply-add costs one load of the input and no store. The 5x5
 * kernels of the paper get the same code with KH = KW = 5 known to the
 * compiler, which then unrolls the kernel loops.
 */

/* In the AVX-512 kernels (16 floats a vector) a layer whose output maps are
 * narrower than one vector, or that has at most half a vector of output
 * maps, runs the AVX2 kernels (8 floats) instead, NARROW_FN: their tiles fit
 * such maps, where 16-lane tiles would leave lanes idle (the weight gradient
 * of the paper's C1, 6 maps, filled 6 of 16 lanes and ran 2x slower) or fall
 * back to one output at a time. The choice depends on the layer's shape
 * only, so forward, backward and the workspace sizes of one layer always
 * agree on it. */
#undef FC_CONV_NARROW
#undef FC_CONV_NARROW_VOID
#ifdef NARROW_FN
FC_INLINE int FN(conv_narrow)(int M, int OW) { return OW < LANES || 2 * M <= LANES; }
#  define FC_CONV_NARROW(M, OW, call) \
    if (FN(conv_narrow)(M, OW)) return NARROW_FN call
#  define FC_CONV_NARROW_VOID(M, OW, call) \
    if (FN(conv_narrow)(M, OW)) { NARROW_FN call; return; }
#else
#  define FC_CONV_NARROW(M, OW, call) (void)0
#  define FC_CONV_NARROW_VOID(M, OW, call) (void)0
#endif

/* ------------------------------------------------------------------------
 * Forward, eq. (5) and (8): for output map q,
 *
 *   z_q(i, j) = b_q + sum_p sum_{u,v} a_p(i-u, j-v) k_pq(u, v)
 *             = b_q + sum_p sum_{u,v} a[p, i+u, j+v] * k[q, p, KH-1-u, KW-1-v]
 *
 * (the valid true convolution is the correlation with the rotated kernel),
 * then C_q = sigma(z_q), eq. (4), (7).
 * ---------------------------------------------------------------------- */

/* One tile: RB rows x CB*LANES columns of z_q starting at x = &a[0, i0, j0];
 * k = k[q] (C, KH, KW). */
FC_INLINE void FN(conv_tile)(const REAL *FC_RESTRICT x, ptrdiff_t x_map, ptrdiff_t x_row,
                             int C, const REAL *FC_RESTRICT k, int KH, int KW, REAL b,
                             int RB, int CB, REAL *FC_RESTRICT out, ptrdiff_t out_row)
{
    VEC acc[8][3]; /* RB <= 8, CB <= 3 */
    for (int r = 0; r < RB; r++)
        for (int cb = 0; cb < CB; cb++) acc[r][cb] = FN(vset1)(b);
    for (int c = 0; c < C; c++) {
        const REAL *xc = x + c * x_map;
        const REAL *kc = k + (ptrdiff_t)c * KH * KW;
        for (int u = 0; u < KH; u++) {
            const REAL *krot = kc + (ptrdiff_t)(KH - 1 - u) * KW; /* row KH-1-u of k */
            for (int v = 0; v < KW; v++) {
                const VEC w = FN(vset1)(krot[KW - 1 - v]);
                for (int r = 0; r < RB; r++) {
                    const REAL *xr = xc + (r + u) * x_row + v;
                    for (int cb = 0; cb < CB; cb++)
                        acc[r][cb] = FN(vfma)(acc[r][cb], w, FN(vload)(xr + cb * LANES));
                }
            }
        }
    }
    for (int r = 0; r < RB; r++)
        for (int cb = 0; cb < CB; cb++) FN(vstore)(out + r * out_row + cb * LANES, acc[r][cb]);
}

/* z_q for the whole map, tiled RB x CB*LANES. A last tile that would run past
 * the edge is moved back to end at it: it recomputes a few outputs with the
 * same arithmetic, hence the same values, instead of needing a scalar tail.
 * Needs OH >= RB and OW >= CB*LANES. */
FC_INLINE void FN(conv_map_tiled)(const REAL *x, int C, int H, int W, const REAL *k,
                                  int KH, int KW, REAL b, int RB, int CB, REAL *out)
{
    const int OH = H - KH + 1, OW = W - KW + 1, TW = CB * LANES;
    for (int i0 = 0;; i0 += RB) {
        if (i0 > OH - RB) i0 = OH - RB;
        for (int j0 = 0;; j0 += TW) {
            if (j0 > OW - TW) j0 = OW - TW;
            FN(conv_tile)(x + (ptrdiff_t)i0 * W + j0, (ptrdiff_t)H * W, W, C, k, KH, KW, b,
                          RB, CB, out + (ptrdiff_t)i0 * OW + j0, OW);
            if (j0 == OW - TW) break;
        }
        if (i0 == OH - RB) break;
    }
}

/* The same sums one output at a time, for maps narrower than LANES. */
static void FN(conv_map_scalar)(const REAL *x, int C, int H, int W, const REAL *k, int KH,
                                int KW, REAL b, REAL *out)
{
    const int OH = H - KH + 1, OW = W - KW + 1;
    for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++) {
            REAL s = b;
            for (int c = 0; c < C; c++)
                for (int u = 0; u < KH; u++)
                    for (int v = 0; v < KW; v++)
                        s += x[((ptrdiff_t)c * H + i + u) * W + j + v] *
                             k[((ptrdiff_t)c * KH + KH - 1 - u) * KW + KW - 1 - v];
            out[(ptrdiff_t)i * OW + j] = s;
        }
}

/* z_q for one output map, in tiles shaped by the output width in vectors:
 * 3 rows x 3 vectors (the paper's C1 in float), 4 x 2 or 8 x 1 (its C2): at
 * least 8 independent sums, enough to hide the latency of a multiply-add;
 * one row at a time for short maps, one output at a time for narrow ones. */
FC_INLINE void FN(conv_map)(const REAL *x, int C, int H, int W, const REAL *k,
                            int KH, int KW, REAL b, REAL *out)
{
    const int OH = H - KH + 1, nvec = (W - KW + 1) / LANES;
    if (nvec >= 3) {
        if (OH >= 3) FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 3, 3, out);
        else FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 1, 3, out);
    } else if (nvec == 2) {
        if (OH >= 4) FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 4, 2, out);
        else FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 1, 2, out);
    } else if (nvec == 1) {
        if (OH >= 8) FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 8, 1, out);
        else FN(conv_map_tiled)(x, C, H, W, k, KH, KW, b, 1, 1, out);
    } else {
        FN(conv_map_scalar)(x, C, H, W, k, KH, KW, b, out);
    }
}

/* eq. (4)-(5), (7)-(8) for one sample: out[q] = f(sum_p a[p] * k[q, p] + b[q]),
 * f the activation `act` (FC_ACT_*: sigma in the paper).
 * x (C, H, W), k (M, C, KH, KW), bias (M), out (M, H-KH+1, W-KW+1). */
static void FN(conv_forward)(const REAL *x, int C, int H, int W, const REAL *k, int M,
                             int KH, int KW, const REAL *bias, int act, REAL *out)
{
    FC_CONV_NARROW_VOID(M, W - KW + 1, (conv_forward)(x, C, H, W, k, M, KH, KW, bias, act, out));
    const ptrdiff_t OHW = (ptrdiff_t)(H - KH + 1) * (W - KW + 1);
    for (int q = 0; q < M; q++) {
        const REAL *kq = k + (ptrdiff_t)q * C * KH * KW;
        REAL *zq = out + q * OHW;
        if (KH == 5 && KW == 5)
            FN(conv_map)(x, C, H, W, kq, 5, 5, bias[q], zq);
        else
            FN(conv_map)(x, C, H, W, kq, KH, KW, bias[q], zq);
        FN(activation_forward)(act, zq, OHW, zq); /* eq. (4): C_q = sigma(z_q) */
    }
}

/* ------------------------------------------------------------------------
 * Backward, one sample. The workspace (conv_ws_delta_size elements) holds
 *   d:  delta = dL/dz (eq. 37, 57) as M maps of OH + 2(KH-1) rows of DW
 *       columns: KH-1 zero rows above and below each map, zero columns
 *       right of OW (DW = OW rounded up to LANES);
 *   dT: the same delta as dT[i][j][q], q padded with zeros to MQ (narrow maps).
 * Zeros are written when the layer allocates it and are never overwritten.
 * ---------------------------------------------------------------------- */

FC_INLINE int FN(round_lanes)(int n) { return (n + LANES - 1) / LANES * LANES; }

/* The weight gradient is vectorised over output maps unless there are too
 * few of them to fill a vector and the maps are wide enough to vectorise
 * along their rows instead. */
FC_INLINE int FN(wgrad_by_maps)(int M, int OW) { return 2 * M >= LANES || OW < 2 * LANES; }

static ptrdiff_t FN(conv_ws_delta_size)(int M, int OH, int OW, int KH)
{
    FC_CONV_NARROW(M, OW, (conv_ws_delta_size)(M, OH, OW, KH));
    return (ptrdiff_t)M * (OH + 2 * (KH - 1)) * FN(round_lanes)(OW) +
           (FN(wgrad_by_maps)(M, OW) ? (ptrdiff_t)OH * OW * FN(round_lanes)(M) : 0);
}

/* Elements of one sample's weight-gradient partial sums (see conv_wgrad_from_partials). */
static ptrdiff_t FN(conv_ws_wgrad_size)(int M, int C, int KH, int KW, int OW)
{
    FC_CONV_NARROW(M, OW, (conv_ws_wgrad_size)(M, C, KH, KW, OW));
    return (ptrdiff_t)C * KH * KW * (FN(wgrad_by_maps)(M, OW) ? FN(round_lanes)(M) : M);
}

/* Weight gradient, eq. (39)-(40), (58)-(59):
 *
 *   dk_pq(u, v) = sum_{i,j} a_p(i-u, j-v) delta_q(i, j)
 *   dk[q, p, KH-1-a, KW-1-b] = sum_{i,j} delta[q, i, j] * x[p, i+a, j+b]
 *
 * the valid convolution of rot180(a_p) with delta_q. Two ways to vectorise it.
 *
 * Few output maps on wide maps: along j. For each (q, p, a), all KW values of b are summed at
 * once, each in LANES partial sums (two sets, even and odd rows, to keep
 * enough sums in flight) plus a scalar tail, combined in a fixed order. */
FC_INLINE void FN(wgrad_accumulate)(VEC acc[8], const REAL *FC_RESTRICT xrow,
                                    const REAL *FC_RESTRICT drow, int OWV, int NB)
{
    for (int j0 = 0; j0 < OWV; j0 += LANES) {
        const VEC dv = FN(vload)(drow + j0);
        for (int b = 0; b < NB; b++) acc[b] = FN(vfma)(acc[b], dv, FN(vload)(xrow + j0 + b));
    }
}

FC_INLINE void FN(wgrad_row)(const REAL *FC_RESTRICT x, int W, const REAL *FC_RESTRICT d,
                             int DW, int OH, int OW, int NB, REAL g[8])
{
    VEC even[8], odd[8];
    REAL tail[8];
    for (int b = 0; b < NB; b++) {
        even[b] = odd[b] = FN(vzero)();
        tail[b] = 0;
    }
    const int OWV = OW - OW % LANES;
    int i = 0;
    for (; i + 1 < OH; i += 2) {
        FN(wgrad_accumulate)(even, x + (ptrdiff_t)i * W, d + (ptrdiff_t)i * DW, OWV, NB);
        FN(wgrad_accumulate)(odd, x + (ptrdiff_t)(i + 1) * W, d + (ptrdiff_t)(i + 1) * DW, OWV, NB);
    }
    if (i < OH) FN(wgrad_accumulate)(even, x + (ptrdiff_t)i * W, d + (ptrdiff_t)i * DW, OWV, NB);
    for (i = 0; i < OH; i++) {
        const REAL *drow = d + (ptrdiff_t)i * DW, *xrow = x + (ptrdiff_t)i * W;
        for (int j = OWV; j < OW; j++)
            for (int b = 0; b < NB; b++) tail[b] += drow[j] * xrow[j + b];
    }
    for (int b = 0; b < NB; b++) g[b] = FN(vsum)(FN(vadd)(even[b], odd[b])) + tail[b];
}

FC_INLINE void FN(wgrad_by_columns)(const REAL *x, int C, int H, int W, const REAL *d, int M,
                                    int KH, int KW, REAL *dk)
{
    const int OH = H - KH + 1, OW = W - KW + 1, DW = FN(round_lanes)(OW);
    const int NB = KW <= 8 ? KW : 1; /* all columns at once when KW <= 8 */
    REAL g[8];
    for (int q = 0; q < M; q++)
        for (int p = 0; p < C; p++) {
            REAL *dkqp = dk + ((ptrdiff_t)q * C + p) * KH * KW;
            for (int a = 0; a < KH; a++)
                for (int b0 = 0; b0 < KW; b0 += NB) {
                    FN(wgrad_row)(x + ((ptrdiff_t)p * H + a) * W + b0, W,
                                  d + ((ptrdiff_t)q * (OH + 2 * (KH - 1)) + KH - 1) * DW, DW,
                                  OH, OW, NB, g);
                    for (int b = 0; b < NB; b++)
                        dkqp[(KH - 1 - a) * KW + (KW - 1 - (b0 + b))] = g[b];
                }
        }
}

/* Otherwise along q. g[p][a][b][q] = sum_{i,j} x[p, i+a, j+b] * dT[i][j][q]
 * for QB vectors of q and NB columns b at a time: every partial sum is a
 * whole output, so no lanes are summed across; the partials stay in this
 * [p][a][b][q] layout until conv_wgrad_from_partials. */
FC_INLINE void FN(wgrad_maps_cols)(VEC acc[5][2], const REAL *FC_RESTRICT xrow,
                                   const REAL *FC_RESTRICT drow, int MQ, int j, int NB, int QB)
{
    VEC dv[2];
    for (int qv = 0; qv < QB; qv++) dv[qv] = FN(vload)(drow + (ptrdiff_t)j * MQ + qv * LANES);
    for (int b = 0; b < NB; b++) {
        const VEC xb = FN(vset1)(xrow[j + b]);
        for (int qv = 0; qv < QB; qv++) acc[b][qv] = FN(vfma)(acc[b][qv], xb, dv[qv]);
    }
}

FC_INLINE void FN(wgrad_maps_block)(const REAL *FC_RESTRICT x, int W, const REAL *FC_RESTRICT dT,
                                    int MQ, int OH, int OW, int b0, int NB, int q0, int QB,
                                    REAL *FC_RESTRICT g /* &g[p][a][0][0] */)
{
    /* NB <= 5, QB <= 2; with one vector of maps, a second set of sums for
     * odd columns keeps enough of them in flight */
    VEC even[5][2], odd[5][2];
    for (int b = 0; b < NB; b++)
        for (int qv = 0; qv < QB; qv++) even[b][qv] = odd[b][qv] = FN(vzero)();
    for (int i = 0; i < OH; i++) {
        const REAL *xrow = x + (ptrdiff_t)i * W + b0;
        const REAL *drow = dT + (ptrdiff_t)i * OW * MQ + q0;
        int j = 0;
        if (QB == 1)
            for (; j + 1 < OW; j += 2) {
                FN(wgrad_maps_cols)(even, xrow, drow, MQ, j, NB, QB);
                FN(wgrad_maps_cols)(odd, xrow, drow, MQ, j + 1, NB, QB);
            }
        for (; j < OW; j++) FN(wgrad_maps_cols)(even, xrow, drow, MQ, j, NB, QB);
    }
    for (int b = 0; b < NB; b++)
        for (int qv = 0; qv < QB; qv++)
            FN(vstore)(g + (ptrdiff_t)(b0 + b) * MQ + q0 + qv * LANES,
                       QB == 1 ? FN(vadd)(even[b][qv], odd[b][qv]) : even[b][qv]);
}

FC_INLINE void FN(wgrad_by_maps_body)(const REAL *x, int C, int H, int W, const REAL *dT, int M,
                                      int KH, int KW, REAL *g)
{
    const int OH = H - KH + 1, OW = W - KW + 1, MQ = FN(round_lanes)(M);
    for (int p = 0; p < C; p++)
        for (int a = 0; a < KH; a++) {
            const REAL *xa = x + ((ptrdiff_t)p * H + a) * W;
            REAL *ga = g + ((ptrdiff_t)p * KH + a) * KW * MQ;
            for (int q0 = 0; q0 < MQ; q0 += 2 * LANES)
                for (int b0 = 0; b0 < KW; b0 += 5) {
                    const int NB = KW - b0 < 5 ? KW - b0 : 5;
                    if (MQ - q0 >= 2 * LANES) {
                        switch (NB) {
                        case 5: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 5, q0, 2, ga); break;
                        case 4: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 4, q0, 2, ga); break;
                        case 3: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 3, q0, 2, ga); break;
                        case 2: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 2, q0, 2, ga); break;
                        default: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 1, q0, 2, ga); break;
                        }
                    } else {
                        switch (NB) {
                        case 5: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 5, q0, 1, ga); break;
                        case 4: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 4, q0, 1, ga); break;
                        case 3: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 3, q0, 1, ga); break;
                        case 2: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 2, q0, 1, ga); break;
                        default: FN(wgrad_maps_block)(xa, W, dT, MQ, OH, OW, b0, 1, q0, 1, ga); break;
                        }
                    }
                }
        }
}

/* dk (M, C, KH, KW) from the weight-gradient partials summed over the batch:
 * a copy when they were summed along rows (wgrad_by_columns, already in dk's
 * layout), else the [p][a][b][q] -> [q][p][KH-1-a][KW-1-b] move. */
static void FN(conv_wgrad_from_partials)(const REAL *g, int M, int C, int KH, int KW, int OW,
                                         REAL *dk)
{
    FC_CONV_NARROW_VOID(M, OW, (conv_wgrad_from_partials)(g, M, C, KH, KW, OW, dk));
    const ptrdiff_t E = (ptrdiff_t)M * C * KH * KW;
    if (!FN(wgrad_by_maps)(M, OW)) {
        memcpy(dk, g, sizeof(REAL) * (size_t)E);
        return;
    }
    const int MQ = FN(round_lanes)(M);
    for (int p = 0; p < C; p++)
        for (int a = 0; a < KH; a++)
            for (int b = 0; b < KW; b++)
                for (int q = 0; q < M; q++)
                    dk[(((ptrdiff_t)q * C + p) * KH + KH - 1 - a) * KW + KW - 1 - b] =
                        g[(((ptrdiff_t)p * KH + a) * KW + b) * MQ + q];
}

/* Input gradient, eq. (47)-(51):
 *
 *   dS_p(i, j) = sum_q sum_{u,v} delta_q(i+u, j+v) k_pq(u, v)      (centred u, v)
 *              = sum_q delta_q *full rot180(k_pq)
 *   dx[p, i, j] = sum_q sum_{u,v} delta[q, i-(KH-1)+u, j-(KW-1)+v] * k[q, p, u, v]
 *
 * with delta zero outside its map. For a kernel column v the row segment
 * dx[p, i, s:s+OW], s = KW-1-v, gets sum_q sum_u k[q, p, u, v] * delta row
 * i-(KH-1)+u: a tile keeps RB rows x PB input maps of these sums in
 * registers (each delta row load serves PB maps, each weight RB rows), and
 * the zero rows of the padded delta stand in for rows outside the map. */
FC_INLINE void FN(input_grad_tile)(const REAL *FC_RESTRICT d, int M, int HP, int DW,
                                   const REAL *FC_RESTRICT k, int C, int KH, int KW, int p0, int PB,
                                   int i0, int RB, int v, int j0, VEC acc[8][3])
{
    const ptrdiff_t KK = (ptrdiff_t)KH * KW;
    for (int r = 0; r < RB; r++)
        for (int pb = 0; pb < PB; pb++) acc[r][pb] = FN(vzero)();
    for (int q = 0; q < M; q++) {
        const REAL *kq = k + ((ptrdiff_t)q * C + p0) * KK + v;
        const REAL *dq = d + ((ptrdiff_t)q * HP + i0) * DW + j0; /* padded row i0 = delta row i0-(KH-1) */
        for (int u = 0; u < KH; u++) {
            VEC w[3];
            for (int pb = 0; pb < PB; pb++) w[pb] = FN(vset1)(kq[pb * KK + u * KW]);
            for (int r = 0; r < RB; r++) {
                const VEC dv = FN(vload)(dq + (ptrdiff_t)(r + u) * DW);
                for (int pb = 0; pb < PB; pb++) acc[r][pb] = FN(vfma)(acc[r][pb], w[pb], dv);
            }
        }
    }
}

FC_INLINE void FN(input_grad_maps)(const REAL *FC_RESTRICT d, int M, int OH, int OW,
                                   const REAL *FC_RESTRICT k, int C, int KH, int KW, int p0, int PB,
                                   int RB, REAL *FC_RESTRICT dx)
{
    const int H = OH + KH - 1, W = OW + KW - 1, HP = OH + 2 * (KH - 1), DW = FN(round_lanes)(OW);
    int done = 0; /* rows of dx finished */
    for (int i0 = 0; done < H; i0 += RB) {
        /* the last tile moves back to end at row H; rows it repeats are not added twice */
        if (i0 > H - RB) i0 = H - RB;
        for (int v = 0; v < KW; v++) {
            const int s = KW - 1 - v;
            for (int j0 = 0; j0 < DW; j0 += LANES) {
                VEC acc[8][3];
                FN(input_grad_tile)(d, M, HP, DW, k, C, KH, KW, p0, PB, i0, RB, v, j0, acc);
                const int n = OW - j0 < LANES ? OW - j0 : LANES;
                for (int r = done - i0; r < RB; r++)
                    for (int pb = 0; pb < PB; pb++) {
                        REAL *out = dx + ((ptrdiff_t)(p0 + pb) * H + i0 + r) * W + s + j0;
                        if (n == LANES) {
                            FN(vstore)(out, FN(vadd)(FN(vload)(out), acc[r][pb]));
                        } else {
                            for (int l = 0; l < n; l++) out[l] += FN(vlane)(acc[r][pb], l);
                        }
                    }
            }
        }
        done = i0 + RB;
    }
}

FC_INLINE void FN(input_grad_full_conv)(const REAL *FC_RESTRICT d, int M, int OH, int OW,
                                        const REAL *FC_RESTRICT k, int C, int KH, int KW,
                                        REAL *FC_RESTRICT dx)
{
    const int H = OH + KH - 1;
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * (OW + KW - 1));
    /* blocks of at most 3 maps, as even as possible (6 maps: 3 + 3); tiles
     * of 4 rows (8 for single maps), or single rows for short maps */
    const int blocks = (C + 2) / 3;
    for (int blk = 0, p0 = 0; blk < blocks; blk++) {
        const int PB = (C - p0 + (blocks - blk) - 1) / (blocks - blk);
        if (PB == 3 && H >= 4) FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 3, 4, dx);
        else if (PB == 2 && H >= 4) FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 2, 4, dx);
        else if (PB == 1 && H >= 8) FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 1, 8, dx);
        else if (PB == 3) FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 3, 1, dx);
        else if (PB == 2) FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 2, 1, dx);
        else FN(input_grad_maps)(d, M, OH, OW, k, C, KH, KW, p0, 1, 1, dx);
        p0 += PB;
    }
}

/* Backward of conv_forward for one sample:
 *   d   = g * f'(z), from y = f(z)          eq. (37), (57): g * y (1 - y) for sigma
 *   db  = sum_{i,j} d                       eq. (45), (64)
 *   dk  = rot180(x) (*) d                   eq. (39)-(40), (58)-(59)
 *   dx  = sum_q d_q (*)full rot180(k_q)     eq. (49)-(51)   (skipped if dx is NULL)
 * x (C, H, W), k (M, C, KH, KW), y and g (M, OH, OW): the layer's output and
 * dL/dy. ws: conv_ws_delta_size elements, zero on first use (see above).
 * Outputs: gk, this sample's conv_ws_wgrad_size weight-gradient partials (turned
 * into dk by conv_wgrad_from_partials once summed over the batch); db (M); dx (C, H, W). */
static void FN(conv_backward)(const REAL *x, int C, int H, int W, const REAL *k, int M,
                              int KH, int KW, const REAL *y, const REAL *g, int act,
                              REAL *ws, REAL *gk, REAL *db, REAL *dx)
{
    FC_CONV_NARROW_VOID(M, W - KW + 1, (conv_backward)(x, C, H, W, k, M, KH, KW, y, g, act, ws, gk, db, dx));
    const int OH = H - KH + 1, OW = W - KW + 1, DW = FN(round_lanes)(OW);
    const int HP = OH + 2 * (KH - 1), by_maps = FN(wgrad_by_maps)(M, OW), MQ = FN(round_lanes)(M);
    REAL *d = ws, *dT = ws + (ptrdiff_t)M * HP * DW;
    /* A first layer (no input gradient) needs delta only as dT: computed
     * there directly, it saves writing delta by rows and a pass that
     * transposes it (benchmarks/README.md has the time it saves). */
    const int delta_in_dT_only = by_maps && !dx;
    if (delta_in_dT_only) {
        REAL *row = d + (ptrdiff_t)(KH - 1) * DW; /* an inner row of d, free here */
        for (int q = 0; q < M; q++)
            for (int i = 0; i < OH; i++) {
                const ptrdiff_t at = ((ptrdiff_t)q * OH + i) * OW;
                const REAL *gr = g + at, *yr = y + at;
                REAL *dTr = dT + (ptrdiff_t)i * OW * MQ + q;
                if (act == FC_ACT_SIGMOID) {
                    for (int j = 0; j < OW; j++) dTr[(ptrdiff_t)j * MQ] = gr[j] * yr[j] * ((REAL)1 - yr[j]);
                } else if (act == FC_ACT_NONE) {
                    for (int j = 0; j < OW; j++) dTr[(ptrdiff_t)j * MQ] = gr[j];
                } else {
                    FN(activation_backward)(act, yr, gr, OW, row);
                    for (int j = 0; j < OW; j++) dTr[(ptrdiff_t)j * MQ] = row[j];
                }
            }
    } else {
        /* delta by rows into the padded layout, eq. (37), (57) */
        for (int q = 0; q < M; q++)
            for (int i = 0; i < OH; i++)
                FN(activation_backward)(act, y + ((ptrdiff_t)q * OH + i) * OW,
                                        g + ((ptrdiff_t)q * OH + i) * OW, OW,
                                        d + ((ptrdiff_t)q * HP + KH - 1 + i) * DW);
    }
    if (by_maps) {
        /* and as dT[i][j][q]; then db = sum_{i,j} dT[i][j][:], one lane per map */
        for (int q = 0; q < M && !delta_in_dT_only; q++)
            for (int i = 0; i < OH; i++) {
                const REAL *dr = d + ((ptrdiff_t)q * HP + KH - 1 + i) * DW;
                REAL *col = dT + (ptrdiff_t)i * OW * MQ + q;
                for (int j = 0; j < OW; j++) col[(ptrdiff_t)j * MQ] = dr[j];
            }
        for (int q0 = 0; q0 < MQ; q0 += LANES) {
            VEC acc = FN(vzero)();
            for (ptrdiff_t e = 0; e < (ptrdiff_t)OH * OW; e++)
                acc = FN(vadd)(acc, FN(vload)(dT + e * MQ + q0));
            for (int l = 0; l < LANES && q0 + l < M; l++) db[q0 + l] = FN(vlane)(acc, l);
        }
    } else {
        /* eq. (45), (64): the zero padding adds nothing, so whole blocks are summed */
        for (int q = 0; q < M; q++) {
            VEC acc = FN(vzero)();
            for (int i = 0; i < OH; i++) {
                const REAL *dr = d + ((ptrdiff_t)q * HP + KH - 1 + i) * DW;
                for (int j0 = 0; j0 < DW; j0 += LANES) acc = FN(vadd)(acc, FN(vload)(dr + j0));
            }
            db[q] = FN(vsum)(acc);
        }
    }

    if (by_maps) {
        if (KH == 5 && KW == 5)
            FN(wgrad_by_maps_body)(x, C, H, W, dT, M, 5, 5, gk);
        else
            FN(wgrad_by_maps_body)(x, C, H, W, dT, M, KH, KW, gk);
    } else {
        if (KH == 5 && KW == 5)
            FN(wgrad_by_columns)(x, C, H, W, d, M, 5, 5, gk);
        else
            FN(wgrad_by_columns)(x, C, H, W, d, M, KH, KW, gk);
    }

    if (dx) {
        if (KH == 5 && KW == 5)
            FN(input_grad_full_conv)(d, M, OH, OW, k, C, 5, 5, dx);
        else
            FN(input_grad_full_conv)(d, M, OH, OW, k, C, KH, KW, dx);
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
