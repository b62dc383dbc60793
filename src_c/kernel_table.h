/* kernel_table.h -- the entry points of the fastcnn kernels as a table of
 * function pointers: one member per kernel and floating type.
 *
 * kernels.h fills one table per instruction set it compiles (baseline, and
 * AVX2 + FMA on x86-64); fastcnn._kernels holds a pointer to the one in use
 * and the other extension modules call through it (fastcnn/_kernels.pxd).
 * This header declares only the table, so those modules compile none of the
 * kernels themselves.
 *
 * Equation numbers are those of Zhang, "Derivation of Backpropagation in
 * Convolutional Neural Network" (Zhifei Zhang, 2016); the kernels' own comments in
 * *_impl.h files give the index conventions. Every kernel works on one
 * sample (or one chunk of a flat array); the Cython callers spread samples
 * over threads.
 */
#ifndef FASTCNN_KERNEL_TABLE_H
#define FASTCNN_KERNEL_TABLE_H

#include "fc_common.h"

/* REAL is float in the _f32 members, double in the _f64 ones. */
#define FC_KERNEL_MEMBERS(REAL, T)                                                             \
    /* eq. (4)-(5), (7)-(8): out[q] = f(sum_p x[p] * k[q, p] + bias[q]), valid true            \
     * convolution. x (C, H, W), k (M, C, KH, KW), out (M, H-KH+1, W-KW+1). */                 \
    void (*conv_forward##T)(const REAL *x, int C, int H, int W, const REAL *k, int M,          \
                            int KH, int KW, const REAL *bias, int act, REAL *out);             \
    /* Its gradients, eq. (37), (45), (39)-(40), (49)-(51): delta from y and g = dL/dy,        \
     * then db, this sample's weight-gradient partials gk and dx (if not NULL). */             \
    void (*conv_backward##T)(const REAL *x, int C, int H, int W, const REAL *k, int M,         \
                             int KH, int KW, const REAL *y, const REAL *g, int act,            \
                             REAL *ws, REAL *gk, REAL *db, REAL *dx);                          \
    /* Elements of conv_backward's per-thread delta workspace and of one sample's              \
     * weight-gradient partials. */                                                            \
    ptrdiff_t (*conv_ws_delta_size##T)(int M, int OH, int OW, int KH);                         \
    ptrdiff_t (*conv_ws_wgrad_size##T)(int M, int C, int KH, int KW, int OW);                  \
    /* dk (M, C, KH, KW) from the partials summed over the batch. */                           \
    void (*conv_wgrad_from_partials##T)(const REAL *g, int M, int C, int KH, int KW, int OW,   \
                                        REAL *dk);                                             \
    /* The same layer with maps in the vector lanes and a stride s (conv_maps_impl.h):        \
     * n rounded up to whole vectors; the weights rearranged (wT, forward or input-gradient   \
     * layout); forward; backward (delta, db, weight-gradient partials, dx if not NULL);      \
     * the sizes of its per-thread workspace and per-sample partials; dk from the partials. */ \
    int (*conv_maps_round##T)(int n);                                                          \
    void (*conv_maps_weights##T)(const REAL *k, const REAL *bias, int M, int C, int KH,        \
                                 int KW, int input_grad, REAL *wT);                            \
    void (*conv_maps_forward##T)(const REAL *x, int C, int H, int W, const REAL *wT, int M,    \
                                 int KH, int KW, int s, int act, REAL *out);                   \
    void (*conv_maps_backward##T)(const REAL *x, int C, int H, int W, const REAL *wTdx,        \
                                  int M, int KH, int KW, int s, const REAL *y, const REAL *g,  \
                                  int act, REAL *ws, REAL *gk, REAL *db, REAL *dx);            \
    ptrdiff_t (*conv_maps_ws_size##T)(int M, int H, int W, int KH, int KW, int OH, int OW);    \
    ptrdiff_t (*conv_maps_wgrad_size##T)(int M, int C, int KH, int KW);                        \
    void (*conv_maps_wgrad_from_partials##T)(const REAL *g, int M, int C, int KH, int KW,      \
                                             REAL *dk);                                        \
    /* out[e] = sum_{n<N} ws[n, e] for e0 <= e < e1, in sample order. */                       \
    void (*sum_samples##T)(const REAL *ws, ptrdiff_t N, ptrdiff_t E, ptrdiff_t e0,             \
                           ptrdiff_t e1, REAL *out);                                           \
    /* eq. (6), (9): s x s means; eq. (32), (52): their gradient, 1/s^2 upsampled. */          \
    void (*mean_pool##T)(const REAL *x, int C, int H, int W, int s, REAL *out);                \
    void (*mean_upsample##T)(const REAL *g, int C, int H, int W, int s, REAL *dx);             \
    /* s x s maxima every `step` pixels with their flat argmax; the gradient sent back         \
     * to those pixels. */                                                                     \
    void (*max_pool##T)(const REAL *x, int C, int H, int W, int s, int step, REAL *out,        \
                        int32_t *arg);                                                         \
    void (*max_unpool##T)(const REAL *g, const int32_t *arg, int C, int H, int W, int OH,      \
                          int OW, REAL *dx);                                                   \
    /* eq. (12): out = f(W f + b) for NB <= 4 samples (rows of f and out). W (K, F). */       \
    void (*dense_forward##T)(const REAL *f, int NB, int F, const REAL *W, int K,               \
                             const REAL *b, int act, REAL *out);                               \
    /* eq. (17), (30) for NB samples: delta = g * f'(z) from y; df = W^T delta (if not NULL). */\
    void (*dense_delta_input_grad##T)(const REAL *g, const REAL *y, int NB, int K, int act,    \
                                      const REAL *W, int F, REAL *delta, REAL *df);            \
    /* eq. (19), (24): dW[k] = sum_n delta[n, k] f[n], db[k] = sum_n delta[n, k] for           \
     * k0 <= k < k1, in sample order. */                                                       \
    void (*dense_weight_bias_grad##T)(const REAL *f, const REAL *delta, ptrdiff_t N, int F,    \
                                      int K, int k0, int k1, REAL *dW, REAL *db);              \
    /* One Adam (or AdamW) step on n elements (optim_impl.h). */                               \
    void (*adam_step##T)(REAL *p, const REAL *g, REAL *m, REAL *v, ptrdiff_t n, REAL b1,       \
                         REAL b2, REAL eps, REAL step, REAL root2, REAL shrink, REAL l2);      \
    /* eq. (13) over a batch: the loss (in double), and grad = (yhat - t) / N. */              \
    double (*mse##T)(const REAL *yhat, const REAL *t, ptrdiff_t E, ptrdiff_t N,                \
                     REAL *grad);                                                              \
    /* Softmax cross-entropy on scores z over a batch: the loss, and grad = dL/dz. */          \
    double (*cross_entropy##T)(const REAL *z, const REAL *t, ptrdiff_t N, int K,               \
                               REAL *grad);                                                    \
    /* y = f(z) and dz = dy * f'(z) (from y) for an activation code, element-wise. */          \
    void (*activation_forward##T)(int act, const REAL *z, ptrdiff_t n, REAL *y);               \
    void (*activation_backward##T)(int act, const REAL *y, const REAL *dy, ptrdiff_t n,        \
                                   REAL *dz);                                                  \
    /* One sample's softmax over K scores, and its Jacobian applied to dy. */                  \
    void (*softmax_forward##T)(const REAL *z, int K, REAL *y);                                 \
    void (*softmax_backward##T)(const REAL *y, const REAL *dy, int K, REAL *dz);               \
    /* Batch normalisation of map c of x (N, C, S) (norm_impl.h): its mean and biased          \
     * variance; y = (x - mean) * scale + shift; and the gradients of the normalisation. */    \
    void (*batchnorm_stats##T)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,          \
                               double *mean, double *var);                                     \
    void (*batchnorm_apply##T)(const REAL *x, ptrdiff_t N, int C, ptrdiff_t S, int c,          \
                               double mean, double scale, double shift, REAL *y);              \
    void (*batchnorm_backward##T)(const REAL *x, const REAL *dy, ptrdiff_t N, int C,           \
                                  ptrdiff_t S, int c, double mean, double invstd,              \
                                  double gamma, double *dgamma, double *dbeta, REAL *dx);

typedef struct fc_kernel_table {
    const char *isa; /* "baseline", "avx2+fma" or "avx2+fma (build flags)" */
    FC_KERNEL_MEMBERS(float, _f32)
    FC_KERNEL_MEMBERS(double, _f64)
} fc_kernel_table;

#undef FC_KERNEL_MEMBERS

#endif
