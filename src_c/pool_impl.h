/* pool_impl.h -- mean pooling and its upsampling for one floating type.
 *
 * Not a header to include directly: kernels.h includes it once per type with
 *   REAL      float or double
 *   FN(name)  the name with its type suffix (fc_name_f32, fc_name_f64)
 *   EXP       exp for REAL
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (seeds/000). Indices are 0-based, so the
 * paper's centred u, v in -2..2 become 0..K-1 and its ceil(i/2) becomes i/2.
 */

/* ------------------------------------------------------------------------
 * Mean pooling, eq. (6), (9), and its backward, eq. (32), (52), for a scale s:
 *   S(i, j)  = 1/s^2 sum_{u,v<s} C(s i + u, s j + v)
 *   dC(i, j) = 1/s^2 dS(i / s, j / s)   (rows/columns past s*floor(H/s): 0)
 * ---------------------------------------------------------------------- */
static void FN(mean_pool)(const REAL *x, int C, int H, int W, int s, REAL *out)
{
    const int OH = H / s, OW = W / s;
    const REAL inv = (REAL)1 / (REAL)(s * s);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < OH; i++) {
            REAL *orow = out + ((ptrdiff_t)c * OH + i) * OW;
            for (int j = 0; j < OW; j++) {
                REAL sum = 0;
                for (int u = 0; u < s; u++)
                    for (int v = 0; v < s; v++)
                        sum += x[((ptrdiff_t)c * H + s * i + u) * W + s * j + v];
                orow[j] = sum * inv;
            }
        }
}

static void FN(mean_upsample)(const REAL *g, int C, int H, int W, int s, REAL *dx)
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
                for (int j = 0; j < live; j++) drow[j] = grow[j / s] * inv;
            }
            for (int j = live; j < W; j++) drow[j] = 0;
        }
}
