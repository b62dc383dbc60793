/* activation_impl.h -- the sigmoid of eq. (4) and its derivative, for one type.
 *
 * Not a header to include directly: kernels.h includes it once per type and
 * instruction set with
 *   REAL         float or double
 *   REAL_DOUBLE  0 for float, 1 for double
 *   LANES        elements per vector (8 floats, 4 doubles)
 *   FN(name)     the name with its type and ISA suffix
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (seeds/000).
 */

/* exp(x), written so that a loop of calls vectorises (libm's exp is a call
 * the compiler cannot vectorise without -ffast-math, which fastcnn does not
 * use). Cody and Waite's reduction: n = round(x / ln 2), r = x - n ln 2 in two
 * parts (exact products), so |r| <= ln(2)/2 and exp(x) = 2^n exp(r); exp(r)
 * by its Taylor series to degree 7 (float) or 13 (double), whose truncation
 * error is below half an ulp on that interval; 2^n by building its bits.
 * x is clamped to where 2^n stays a normal number, which only affects results
 * that underflow or overflow anyway (sigmoid then gives 0 or 1). NaN stays NaN:
 * the clamps are comparisons that are false for NaN. */
FC_INLINE REAL FN(exp)(REAL x)
{
#if REAL_DOUBLE
    const double hi = 709.0, lo = -708.0;
    const double log2e = 1.4426950408889634074, ln2_hi = 6.93145751953125e-1,
                 ln2_lo = 1.42860682030941723212e-6;
    const double magic = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    double t = x * log2e + magic;
    double n = t - magic;
    double r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - INT64_C(0x4338000000000000) + 1023) << 52; /* 2^n */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
#else
    const float hi = 88.0f, lo = -87.0f;
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    float t = x * log2e + magic;
    float n = t - magic;
    float r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000 + 127) << 23; /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
#endif
}

/* eq. (4): sigma(z) = 1 / (1 + exp(-z)). */
FC_INLINE REAL FN(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + FN(exp)(-z)); }

/* eq. (4), (12): y = sigma(z), element by element (y may be z). */
static void FN(sigmoid_forward)(const REAL *z, ptrdiff_t n, REAL *y)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = FN(sigmoid)(z[i]);
}

/* eq. (17), (37): dz = dy * y (1 - y). */
static void FN(sigmoid_backward)(const REAL *FC_RESTRICT y, const REAL *FC_RESTRICT dy,
                                 ptrdiff_t n, REAL *FC_RESTRICT dz)
{
    for (ptrdiff_t i = 0; i < n; i++) dz[i] = dy[i] * y[i] * ((REAL)1 - y[i]);
}
