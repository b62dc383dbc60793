/* activation_impl.h -- the sigmoid of eq. (4) and its derivative for one floating type.
 *
 * Not a header to include directly: kernels.h includes it once per type with
 *   REAL      float or double
 *   FN(name)  the name with its type suffix (fc_name_f32, fc_name_f64)
 *   EXP       exp for REAL
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (seeds/000). Indices are 0-based, so the
 * paper's centred u, v in -2..2 become 0..K-1 and its ceil(i/2) becomes i/2.
 */

/* eq. (4): sigma(z) = 1 / (1 + exp(-z)). exp(-z) overflows to inf for very
 * negative z, which gives exactly 0, never NaN. */
FC_INLINE REAL FN(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + EXP(-z)); }

/* eq. (4), (12): y = sigma(z), element by element. */
static void FN(sigmoid_forward)(const REAL *z, ptrdiff_t n, REAL *y)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = FN(sigmoid)(z[i]);
}

/* eq. (17), (37): dz = dy * y (1 - y). */
static void FN(sigmoid_backward)(const REAL *y, const REAL *dy, ptrdiff_t n, REAL *dz)
{
    for (ptrdiff_t i = 0; i < n; i++) dz[i] = dy[i] * y[i] * ((REAL)1 - y[i]);
}
