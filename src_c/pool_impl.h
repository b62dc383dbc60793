/* pool_impl.h -- mean pooling and its upsampling, max pooling and its
 * backward, for one floating type.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with REAL, REAL_DOUBLE, LANES
 * and FN(name) defined.
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016), with 0-based indices: the
 * paper's C(2i-u, 2j-v), u, v in {0, 1}, 1-based, is C[2i+u, 2j+v] here.
 *
 *   S(i, j)  = 1/s^2 sum_{u,v<s} C(s i + u, s j + v)      eq. (6), (9)
 *   dC(i, j) = 1/s^2 dS(i / s, j / s)                     eq. (32), (52)
 *
 * Rows and columns past s * floor(H / s) are not pooled and get zero gradient.
 * The paper's s = 2 has its own loops, with the scale known to the compiler.
 */

FC_INLINE void FN(mean_pool_body)(const REAL *FC_RESTRICT x, int C, int H, int W, int s,
                                  REAL *FC_RESTRICT out)
{
    const int OH = H / s, OW = W / s;
    const REAL inv = (REAL)1 / (REAL)(s * s);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < OH; i++) {
            REAL *orow = out + ((ptrdiff_t)c * OH + i) * OW;
            const REAL *xrow = x + ((ptrdiff_t)c * H + (ptrdiff_t)s * i) * W;
            for (int j = 0; j < OW; j++) {
                /* each term scaled first: a sum of values near the type's
                 * maximum would overflow; for s = 2 the scale is exact, so
                 * this is bit for bit the scaled sum */
                REAL sum = 0;
                for (int u = 0; u < s; u++)
                    for (int v = 0; v < s; v++) sum += xrow[(ptrdiff_t)u * W + s * j + v] * inv;
                orow[j] = sum;
            }
        }
}

static void FN(mean_pool)(const REAL *x, int C, int H, int W, int s, REAL *out)
{
    if (s == 2)
        FN(mean_pool_body)(x, C, H, W, 2, out);
    else
        FN(mean_pool_body)(x, C, H, W, s, out);
}

FC_INLINE void FN(mean_upsample_body)(const REAL *FC_RESTRICT g, int C, int H, int W, int s,
                                      REAL *FC_RESTRICT dx)
{
    const int OH = H / s, OW = W / s;
    const REAL inv = (REAL)1 / (REAL)(s * s);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++) {
            REAL *drow = dx + ((ptrdiff_t)c * H + i) * W;
            int live = 0;
            if (i < OH * s) {
                const REAL *grow = g + ((ptrdiff_t)c * OH + i / s) * OW;
                live = OW * s;
                for (int j = 0; j < OW; j++)
                    for (int v = 0; v < s; v++) drow[s * j + v] = grow[j] * inv;
            }
            for (int j = live; j < W; j++) drow[j] = 0;
        }
}

static void FN(mean_upsample)(const REAL *g, int C, int H, int W, int s, REAL *dx)
{
    if (s == 2)
        FN(mean_upsample_body)(g, C, H, W, 2, dx);
    else
        FN(mean_upsample_body)(g, C, H, W, s, dx);
}

/* ------------------------------------------------------------------------
 * Max pooling over s x s windows taken every `step` pixels:
 *   S(i, j) = max_{u,v<s} C(step i + u, step j + v)
 * arg(i, j) = the flat index in the map (H W) of the maximum: the first in
 * scan order, or a NaN, which wins (NaN in, NaN out). Backward sends each
 * window's gradient to that pixel alone, adding where windows overlap (in
 * output order, so always the same sums).
 * ---------------------------------------------------------------------- */
/* The 2x2, stride-2 case (LeNet-5 and most small nets) on maps of even width,
 * written as selects over long contiguous runs so that the compiler
 * vectorises it: first each column pair of rows (2i, 2i+1) -> v, with the
 * winner's flat index; then each pair of neighbours in v. The second step
 * breaks ties (equal, or both NaN) by the smaller flat index, so the pixel
 * chosen is the scan's above. Rows go in blocks whose v fits on the stack. */
#define FC_TAKES(later, earlier) (!((later) <= (earlier)) & ((earlier) == (earlier)))
#define FC_POOL_SCRATCH 2048

static void FN(max_pool_2x2)(const REAL *x, int C, int H, int W, REAL *out, int32_t *arg)
{
    const int OH = H / 2, OW = W / 2, rows = FC_POOL_SCRATCH / W;
    REAL v[FC_POOL_SCRATCH];
    int32_t vk[FC_POOL_SCRATCH];
    for (int c = 0; c < C; c++)
        for (int i0 = 0; i0 < OH; i0 += rows) {
            const int R = OH - i0 < rows ? OH - i0 : rows;
            for (int i = 0; i < R; i++) {
                const REAL *up = x + ((ptrdiff_t)c * H + 2 * (i0 + i)) * W, *down = up + W;
                const int32_t at = 2 * (i0 + i) * W;
                REAL *vr = v + i * W;
                int32_t *kr = vk + i * W;
                for (int j = 0; j < W; j++) {
                    const int t = FC_TAKES(down[j], up[j]);
                    vr[j] = t ? down[j] : up[j];
                    kr[j] = at + j + (t ? W : 0);
                }
            }
            REAL *o = out + ((ptrdiff_t)c * OH + i0) * OW;
            int32_t *a = arg + ((ptrdiff_t)c * OH + i0) * OW;
            for (int q = 0; q < R * OW; q++) {
                const REAL l = v[2 * q], r = v[2 * q + 1];
                const int32_t kl = vk[2 * q], kr = vk[2 * q + 1];
                const int tie = (r == l) | ((r != r) & (l != l));
                const int t = FC_TAKES(r, l) | (tie & (kr < kl));
                o[q] = t ? r : l;
                a[q] = t ? kr : kl;
            }
        }
}

static void FN(max_pool)(const REAL *x, int C, int H, int W, int s, int step, REAL *out,
                         int32_t *arg)
{
#ifdef NARROW_FN
    /* GCC's AVX-512 auto-vectorisation of these loops measured 2.7x slower
     * than its AVX2 one (a 2x2 pool of 128 x 16 x 28 x 28 floats, Zen 5) */
    NARROW_FN(max_pool)(x, C, H, W, s, step, out, arg);
    return;
#endif
    if (s == 2 && step == 2 && W % 2 == 0 && W <= FC_POOL_SCRATCH) {
        FN(max_pool_2x2)(x, C, H, W, out, arg);
        return;
    }
    const int OH = (H - s) / step + 1, OW = (W - s) / step + 1;
    for (int c = 0; c < C; c++) {
        const REAL *xc = x + (ptrdiff_t)c * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                int best = (step * i) * W + step * j;
                REAL m = xc[best];
                for (int u = 0; u < s; u++)
                    for (int v = 0; v < s; v++) {
                        const int at = (step * i + u) * W + step * j + v;
                        if (xc[at] > m || (xc[at] != xc[at] && m == m)) {
                            m = xc[at];
                            best = at;
                        }
                    }
                const ptrdiff_t o = ((ptrdiff_t)c * OH + i) * OW + j;
                out[o] = m;
                arg[o] = best;
            }
    }
}

static void FN(max_unpool)(const REAL *g, const int32_t *arg, int C, int H, int W, int OH,
                           int OW, REAL *dx)
{
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * W);
    for (int c = 0; c < C; c++) {
        REAL *dc = dx + (ptrdiff_t)c * H * W;
        const ptrdiff_t o0 = (ptrdiff_t)c * OH * OW;
        for (ptrdiff_t o = o0; o < o0 + (ptrdiff_t)OH * OW; o++) dc[arg[o]] += g[o];
    }
}
