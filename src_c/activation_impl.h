/* activation_impl.h -- the activations and the softmax, forward and
 * backward, for one floating type: exp written to vectorise; the sigmoid of
 * eq. (4) and tanh built on it; activation_forward and activation_backward,
 * element-wise, for every code of enum fc_activation (fc_common.h: none,
 * sigmoid, relu, tanh, tanh_opt); softmax_forward and softmax_backward, one
 * sample at a time.
 *
 * Not a header to include directly: instantiate.h includes it once per type,
 * for each instruction set kernels.h compiles, with
 *   REAL         float or double
 *   REAL_DOUBLE  0 for float, 1 for double
 *   LANES        elements per vector (8 floats, 4 doubles)
 *   FN(name)     the name with its type and ISA suffix
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016).
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

/* tanh(x). Away from 0, 1 - 2 / (1 + exp(2|x|)); near 0 that difference
 * would lose relative precision, so below |x| = 0.1 its odd Taylor series
 * (to x^15 in double, x^9 in float: truncation far below an ulp there).
 * Both are computed and one selected, so a loop of calls vectorises; NaN
 * stays NaN. */
FC_INLINE REAL FN(tanh)(REAL x)
{
    const REAL a = x < 0 ? -x : x;
    const REAL far = (REAL)1 - (REAL)2 / ((REAL)1 + FN(exp)(2 * a));
    const REAL a2 = a * a;
#if REAL_DOUBLE
    REAL p = -929569.0 / 638512875.0;
    p = p * a2 + 21844.0 / 6081075.0;
    p = p * a2 - 1382.0 / 155925.0;
    p = p * a2 + 62.0 / 2835.0;
#else
    REAL p = 62.0f / 2835.0f;
#endif
    p = p * a2 - (REAL)17 / 315;
    p = p * a2 + (REAL)2 / 15;
    p = p * a2 - (REAL)1 / 3;
    const REAL near = a + a * a2 * p;
    const REAL r = a < (REAL)0.1 ? near : far;
    return x < 0 ? -r : r;
}

#define FC_TANH_OPT_A ((REAL)1.7159)
#define FC_TANH_OPT_B ((REAL)2 / 3)

/* y = f(z) element by element for an activation code (y may be z):
 * sigmoid eq. (4); relu max(0, z) (NaN stays NaN); tanh; tanh_opt. */
static void FN(activation_forward)(int act, const REAL *z, ptrdiff_t n, REAL *y)
{
    switch (act) {
    case FC_ACT_SIGMOID:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = FN(sigmoid)(z[i]);
        break;
    case FC_ACT_RELU:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = z[i] < 0 ? (REAL)0 : z[i];
        break;
    case FC_ACT_TANH:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = FN(tanh)(z[i]);
        break;
    case FC_ACT_TANH_OPT:
        for (ptrdiff_t i = 0; i < n; i++) y[i] = FC_TANH_OPT_A * FN(tanh)(FC_TANH_OPT_B * z[i]);
        break;
    default:
        if (y != z) memcpy(y, z, sizeof(REAL) * (size_t)n);
    }
}

/* dz = dy * f'(z), with f' written in terms of the output y = f(z):
 * sigmoid y (1 - y), eq. (17), (37); relu [y > 0]; tanh 1 - y^2;
 * tanh_opt (B / A) (A^2 - y^2). dz may be dy. */
static void FN(activation_backward)(int act, const REAL *y, const REAL *dy, ptrdiff_t n, REAL *dz)
{
    switch (act) {
    case FC_ACT_SIGMOID:
        for (ptrdiff_t i = 0; i < n; i++) dz[i] = dy[i] * y[i] * ((REAL)1 - y[i]);
        break;
    case FC_ACT_RELU:
        for (ptrdiff_t i = 0; i < n; i++) dz[i] = y[i] > 0 ? dy[i] : (REAL)0;
        break;
    case FC_ACT_TANH:
        for (ptrdiff_t i = 0; i < n; i++) dz[i] = dy[i] * ((REAL)1 - y[i] * y[i]);
        break;
    case FC_ACT_TANH_OPT:
        for (ptrdiff_t i = 0; i < n; i++)
            dz[i] = dy[i] * (FC_TANH_OPT_B / FC_TANH_OPT_A) *
                    (FC_TANH_OPT_A * FC_TANH_OPT_A - y[i] * y[i]);
        break;
    default:
        if (dz != dy) memcpy(dz, dy, sizeof(REAL) * (size_t)n);
    }
}

/* Softmax of one sample's K scores: y_k = exp(z_k - m) / sum_j exp(z_j - m),
 * m = max z (the shift changes nothing but keeps exp from overflowing). */
static void FN(softmax_forward)(const REAL *z, int K, REAL *y)
{
    REAL m = z[0];
    for (int k = 1; k < K; k++) m = z[k] > m || z[k] != z[k] ? z[k] : m;
    REAL s = 0;
    for (int k = 0; k < K; k++) {
        y[k] = FN(exp)(z[k] - m);
        s += y[k];
    }
    const REAL inv = (REAL)1 / s;
    for (int k = 0; k < K; k++) y[k] *= inv;
}

/* Its backward for one sample: dz_k = y_k (dy_k - sum_j dy_j y_j). */
static void FN(softmax_backward)(const REAL *y, const REAL *dy, int K, REAL *dz)
{
    REAL dot = 0;
    for (int k = 0; k < K; k++) dot += dy[k] * y[k];
    for (int k = 0; k < K; k++) dz[k] = y[k] * (dy[k] - dot);
}
