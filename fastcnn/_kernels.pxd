# The one way from a kernel module (_conv, _pool, _activation, _dense, _loss,
# _optim, _im2col) to the C kernels, which are compiled once, into
# fastcnn._kernels (src_c/kernels.h):
#
#   cimport fastcnn._kernels as kernels
#   from fastcnn._kernels cimport check, check_activation
#
#   kernels.conv_forward(&x[n, 0, 0, 0], C, H, W, ...)   # float or double
#
# It declares
# - the table of entry points (src_c/kernel_table.h), one per instruction
#   set, and active_kernels(), the table in use (fastcnn._simd chooses it);
# - one inline wrapper per kernel, fused over `floating`: the dtype branch
#   (the _f32 or _f64 member) is taken here, once, for every caller;
# - the activation codes (src_c/fc_common.h) and check_activation();
# - check(), the argument check that raises "fastcnn._conv: ..." errors.
#
# The inline functions are compiled into each module that cimports them.

from cython cimport floating
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t


cdef extern from "fc_common.h" nogil:
    # the `act` argument of the kernels; valid codes are 0 <= act < FC_ACT_COUNT
    enum fc_activation:
        FC_ACT_NONE
        FC_ACT_SIGMOID
        FC_ACT_RELU
        FC_ACT_TANH
        FC_ACT_TANH_OPT
        FC_ACT_COUNT


cdef extern from "kernel_table.h" nogil:
    ctypedef struct fc_kernel_table:
        const char *isa
        void (*conv_forward_f32)(const float *x, int C, int H, int W, const float *k, int M,
                                 int KH, int KW, const float *bias, int act,
                                 float *out) noexcept nogil
        void (*conv_forward_f64)(const double *x, int C, int H, int W, const double *k, int M,
                                 int KH, int KW, const double *bias, int act,
                                 double *out) noexcept nogil
        void (*conv_backward_f32)(const float *x, int C, int H, int W, const float *k, int M,
                                  int KH, int KW, const float *y, const float *g, int act,
                                  float *ws, float *gk, float *db, float *dx) noexcept nogil
        void (*conv_backward_f64)(const double *x, int C, int H, int W, const double *k, int M,
                                  int KH, int KW, const double *y, const double *g, int act,
                                  double *ws, double *gk, double *db, double *dx) noexcept nogil
        ptrdiff_t (*conv_ws_delta_size_f32)(int M, int OH, int OW, int KH) noexcept nogil
        ptrdiff_t (*conv_ws_delta_size_f64)(int M, int OH, int OW, int KH) noexcept nogil
        ptrdiff_t (*conv_ws_wgrad_size_f32)(int M, int C, int KH, int KW, int OW) noexcept nogil
        ptrdiff_t (*conv_ws_wgrad_size_f64)(int M, int C, int KH, int KW, int OW) noexcept nogil
        void (*conv_wgrad_from_partials_f32)(const float *g, int M, int C, int KH, int KW, int OW,
                                             float *dk) noexcept nogil
        void (*conv_wgrad_from_partials_f64)(const double *g, int M, int C, int KH, int KW, int OW,
                                             double *dk) noexcept nogil
        int (*conv_maps_round_f32)(int n) noexcept nogil
        void (*conv_maps_weights_f32)(const float *k, const float *bias, int M, int C, int KH, int KW,
                                     int input_grad, float *wT) noexcept nogil
        void (*conv_maps_forward_f32)(const float *x, int C, int H, int W, const float *wT, int M,
                                     int KH, int KW, int s, int act, float *out) noexcept nogil
        void (*conv_maps_backward_f32)(const float *x, int C, int H, int W, const float *wTdx, int M,
                                      int KH, int KW, int s, const float *y, const float *g, int act,
                                      float *ws, float *gk, float *db, float *dx) noexcept nogil
        ptrdiff_t (*conv_maps_ws_size_f32)(int M, int H, int W, int KH, int KW, int OH,
                                          int OW) noexcept nogil
        ptrdiff_t (*conv_maps_wgrad_size_f32)(int M, int C, int KH, int KW) noexcept nogil
        void (*conv_maps_wgrad_from_partials_f32)(const float *g, int M, int C, int KH, int KW,
                                                 float *dk) noexcept nogil
        int (*conv_maps_round_f64)(int n) noexcept nogil
        void (*conv_maps_weights_f64)(const double *k, const double *bias, int M, int C, int KH, int KW,
                                     int input_grad, double *wT) noexcept nogil
        void (*conv_maps_forward_f64)(const double *x, int C, int H, int W, const double *wT, int M,
                                     int KH, int KW, int s, int act, double *out) noexcept nogil
        void (*conv_maps_backward_f64)(const double *x, int C, int H, int W, const double *wTdx, int M,
                                      int KH, int KW, int s, const double *y, const double *g, int act,
                                      double *ws, double *gk, double *db, double *dx) noexcept nogil
        ptrdiff_t (*conv_maps_ws_size_f64)(int M, int H, int W, int KH, int KW, int OH,
                                          int OW) noexcept nogil
        ptrdiff_t (*conv_maps_wgrad_size_f64)(int M, int C, int KH, int KW) noexcept nogil
        void (*conv_maps_wgrad_from_partials_f64)(const double *g, int M, int C, int KH, int KW,
                                                 double *dk) noexcept nogil
        void (*sum_samples_f32)(const float *ws, ptrdiff_t N, ptrdiff_t E, ptrdiff_t e0,
                                ptrdiff_t e1, float *out) noexcept nogil
        void (*sum_samples_f64)(const double *ws, ptrdiff_t N, ptrdiff_t E, ptrdiff_t e0,
                                ptrdiff_t e1, double *out) noexcept nogil
        void (*mean_pool_f32)(const float *x, int C, int H, int W, int s,
                              float *out) noexcept nogil
        void (*mean_pool_f64)(const double *x, int C, int H, int W, int s,
                              double *out) noexcept nogil
        void (*mean_upsample_f32)(const float *g, int C, int H, int W, int s,
                                  float *dx) noexcept nogil
        void (*mean_upsample_f64)(const double *g, int C, int H, int W, int s,
                                  double *dx) noexcept nogil
        void (*max_pool_f32)(const float *x, int C, int H, int W, int s, int step, float *out,
                             int32_t *arg) noexcept nogil
        void (*max_pool_f64)(const double *x, int C, int H, int W, int s, int step, double *out,
                             int32_t *arg) noexcept nogil
        void (*max_unpool_f32)(const float *g, const int32_t *arg, int C, int H, int W, int OH,
                               int OW, float *dx) noexcept nogil
        void (*max_unpool_f64)(const double *g, const int32_t *arg, int C, int H, int W, int OH,
                               int OW, double *dx) noexcept nogil
        void (*dense_forward_f32)(const float *f, int NB, int F, const float *W, int K,
                                  const float *b, int act, float *out) noexcept nogil
        void (*dense_forward_f64)(const double *f, int NB, int F, const double *W, int K,
                                  const double *b, int act, double *out) noexcept nogil
        void (*dense_delta_input_grad_f32)(const float *g, const float *y, int NB, int K,
                                           int act, const float *W, int F, float *delta,
                                           float *df) noexcept nogil
        void (*dense_delta_input_grad_f64)(const double *g, const double *y, int NB, int K,
                                           int act, const double *W, int F, double *delta,
                                           double *df) noexcept nogil
        void (*dense_weight_bias_grad_f32)(const float *f, const float *delta, ptrdiff_t N,
                                           int F, int K, int k0, int k1, float *dW,
                                           float *db) noexcept nogil
        void (*dense_weight_bias_grad_f64)(const double *f, const double *delta, ptrdiff_t N,
                                           int F, int K, int k0, int k1, double *dW,
                                           double *db) noexcept nogil
        void (*adam_step_f32)(float *p, const float *g, float *m, float *v, ptrdiff_t n,
                              float b1, float b2, float eps, float step, float root2,
                              float shrink, float l2) noexcept nogil
        void (*adam_step_f64)(double *p, const double *g, double *m, double *v, ptrdiff_t n,
                              double b1, double b2, double eps, double step, double root2,
                              double shrink, double l2) noexcept nogil
        double (*mse_f32)(const float *yhat, const float *t, ptrdiff_t E, ptrdiff_t N,
                          float *grad) noexcept nogil
        double (*mse_f64)(const double *yhat, const double *t, ptrdiff_t E, ptrdiff_t N,
                          double *grad) noexcept nogil
        double (*cross_entropy_f32)(const float *z, const float *t, ptrdiff_t N, int K,
                                    float *grad) noexcept nogil
        double (*cross_entropy_f64)(const double *z, const double *t, ptrdiff_t N, int K,
                                    double *grad) noexcept nogil
        void (*activation_forward_f32)(int act, const float *z, ptrdiff_t n,
                                       float *y) noexcept nogil
        void (*activation_forward_f64)(int act, const double *z, ptrdiff_t n,
                                       double *y) noexcept nogil
        void (*activation_backward_f32)(int act, const float *y, const float *dy, ptrdiff_t n,
                                        float *dz) noexcept nogil
        void (*activation_backward_f64)(int act, const double *y, const double *dy,
                                        ptrdiff_t n, double *dz) noexcept nogil
        void (*softmax_forward_f32)(const float *z, int K, float *y) noexcept nogil
        void (*softmax_forward_f64)(const double *z, int K, double *y) noexcept nogil
        void (*softmax_backward_f32)(const float *y, const float *dy, int K,
                                     float *dz) noexcept nogil
        void (*softmax_backward_f64)(const double *y, const double *dy, int K,
                                     double *dz) noexcept nogil
        void (*batchnorm_stats_f32)(const float *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                    double *mean, double *var) noexcept nogil
        void (*batchnorm_stats_f64)(const double *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                    double *mean, double *var) noexcept nogil
        void (*batchnorm_apply_f32)(const float *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                    double mean, double scale, double shift,
                                    float *y) noexcept nogil
        void (*batchnorm_apply_f64)(const double *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                    double mean, double scale, double shift,
                                    double *y) noexcept nogil
        void (*batchnorm_backward_f32)(const float *x, const float *dy, ptrdiff_t N, int C,
                                       ptrdiff_t S, int c, double mean, double invstd,
                                       double gamma, double *dgamma, double *dbeta,
                                       float *dx) noexcept nogil
        void (*batchnorm_backward_f64)(const double *x, const double *dy, ptrdiff_t N, int C,
                                       ptrdiff_t S, int c, double mean, double invstd,
                                       double gamma, double *dgamma, double *dbeta,
                                       double *dx) noexcept nogil


# The table in use: the baseline, AVX2+FMA or AVX-512 kernels (select_isa).
cdef const fc_kernel_table *active_kernels() noexcept nogil


# ---- argument checks --------------------------------------------------------

cdef inline int check(bint ok, str what) except -1:
    """Raise ValueError("<module>: <what>") unless ok, <module> being the
    calling module (__name__ is looked up where this inline function is
    compiled in): "fastcnn._conv: kernel larger than the image"."""
    if not ok:
        raise ValueError(f"{__name__}: {what}")
    return 0


cdef inline int check_activation(int act) except -1:
    return check(0 <= act < FC_ACT_COUNT, "unknown activation code")


# ---- the kernels, one name each for float and double -------------------------
# Each works on one sample (or one chunk of a flat array); see
# src_c/kernel_table.h for what it computes and the *_impl.h for how.

cdef inline void conv_forward(const floating *x, int C, int H, int W, const floating *k, int M,
                              int KH, int KW, const floating *bias, int act,
                              floating *out) noexcept nogil:
    if floating is float:
        active_kernels().conv_forward_f32(x, C, H, W, k, M, KH, KW, bias, act, out)
    else:
        active_kernels().conv_forward_f64(x, C, H, W, k, M, KH, KW, bias, act, out)


cdef inline void conv_backward(const floating *x, int C, int H, int W, const floating *k, int M,
                               int KH, int KW, const floating *y, const floating *g, int act,
                               floating *ws, floating *gk, floating *db,
                               floating *dx) noexcept nogil:
    if floating is float:
        active_kernels().conv_backward_f32(x, C, H, W, k, M, KH, KW, y, g, act, ws, gk, db, dx)
    else:
        active_kernels().conv_backward_f64(x, C, H, W, k, M, KH, KW, y, g, act, ws, gk, db, dx)


# The workspace sizes take no array, so Cython cannot infer the type from
# the arguments: `dtype` is a type tag, never read, and callers name the
# specialisation: conv_ws_delta_size[float](M, OH, OW, KH).
cdef inline ptrdiff_t conv_ws_delta_size(int M, int OH, int OW, int KH,
                                         floating dtype=0) noexcept nogil:
    if floating is float:
        return active_kernels().conv_ws_delta_size_f32(M, OH, OW, KH)
    else:
        return active_kernels().conv_ws_delta_size_f64(M, OH, OW, KH)


cdef inline ptrdiff_t conv_ws_wgrad_size(int M, int C, int KH, int KW, int OW,
                                         floating dtype=0) noexcept nogil:
    if floating is float:
        return active_kernels().conv_ws_wgrad_size_f32(M, C, KH, KW, OW)
    else:
        return active_kernels().conv_ws_wgrad_size_f64(M, C, KH, KW, OW)


cdef inline void conv_wgrad_from_partials(const floating *g, int M, int C, int KH, int KW, int OW,
                                          floating *dk) noexcept nogil:
    if floating is float:
        active_kernels().conv_wgrad_from_partials_f32(g, M, C, KH, KW, OW, dk)
    else:
        active_kernels().conv_wgrad_from_partials_f64(g, M, C, KH, KW, OW, dk)


# The convolution with maps in the vector lanes (src_c/conv_maps_impl.h).
cdef inline int conv_maps_round(int n, floating dtype=0) noexcept nogil:
    if floating is float:
        return active_kernels().conv_maps_round_f32(n)
    else:
        return active_kernels().conv_maps_round_f64(n)


cdef inline void conv_maps_weights(const floating *k, const floating *bias, int M, int C, int KH,
                                   int KW, int input_grad, floating *wT) noexcept nogil:
    if floating is float:
        active_kernels().conv_maps_weights_f32(k, bias, M, C, KH, KW, input_grad, wT)
    else:
        active_kernels().conv_maps_weights_f64(k, bias, M, C, KH, KW, input_grad, wT)


cdef inline void conv_maps_forward(const floating *x, int C, int H, int W, const floating *wT,
                                   int M, int KH, int KW, int s, int act,
                                   floating *out) noexcept nogil:
    if floating is float:
        active_kernels().conv_maps_forward_f32(x, C, H, W, wT, M, KH, KW, s, act, out)
    else:
        active_kernels().conv_maps_forward_f64(x, C, H, W, wT, M, KH, KW, s, act, out)


cdef inline void conv_maps_backward(const floating *x, int C, int H, int W, const floating *wTdx,
                                    int M, int KH, int KW, int s, const floating *y,
                                    const floating *g, int act, floating *ws, floating *gk,
                                    floating *db, floating *dx) noexcept nogil:
    if floating is float:
        active_kernels().conv_maps_backward_f32(x, C, H, W, wTdx, M, KH, KW, s, y, g, act, ws,
                                                gk, db, dx)
    else:
        active_kernels().conv_maps_backward_f64(x, C, H, W, wTdx, M, KH, KW, s, y, g, act, ws,
                                                gk, db, dx)


cdef inline ptrdiff_t conv_maps_ws_size(int M, int H, int W, int KH, int KW, int OH, int OW,
                                        floating dtype=0) noexcept nogil:
    if floating is float:
        return active_kernels().conv_maps_ws_size_f32(M, H, W, KH, KW, OH, OW)
    else:
        return active_kernels().conv_maps_ws_size_f64(M, H, W, KH, KW, OH, OW)


cdef inline ptrdiff_t conv_maps_wgrad_size(int M, int C, int KH, int KW,
                                           floating dtype=0) noexcept nogil:
    if floating is float:
        return active_kernels().conv_maps_wgrad_size_f32(M, C, KH, KW)
    else:
        return active_kernels().conv_maps_wgrad_size_f64(M, C, KH, KW)


cdef inline void conv_maps_wgrad_from_partials(const floating *g, int M, int C, int KH, int KW,
                                               floating *dk) noexcept nogil:
    if floating is float:
        active_kernels().conv_maps_wgrad_from_partials_f32(g, M, C, KH, KW, dk)
    else:
        active_kernels().conv_maps_wgrad_from_partials_f64(g, M, C, KH, KW, dk)


cdef inline void sum_samples(const floating *ws, ptrdiff_t N, ptrdiff_t E, ptrdiff_t e0,
                             ptrdiff_t e1, floating *out) noexcept nogil:
    if floating is float:
        active_kernels().sum_samples_f32(ws, N, E, e0, e1, out)
    else:
        active_kernels().sum_samples_f64(ws, N, E, e0, e1, out)


cdef inline void mean_pool(const floating *x, int C, int H, int W, int s,
                           floating *out) noexcept nogil:
    if floating is float:
        active_kernels().mean_pool_f32(x, C, H, W, s, out)
    else:
        active_kernels().mean_pool_f64(x, C, H, W, s, out)


cdef inline void mean_upsample(const floating *g, int C, int H, int W, int s,
                               floating *dx) noexcept nogil:
    if floating is float:
        active_kernels().mean_upsample_f32(g, C, H, W, s, dx)
    else:
        active_kernels().mean_upsample_f64(g, C, H, W, s, dx)


# arg: the argmax indices, NumPy intc arrays in the entry points, int32_t in
# the C kernels (the same type on every platform fastcnn builds for).
cdef inline void max_pool(const floating *x, int C, int H, int W, int s, int step,
                          floating *out, int *arg) noexcept nogil:
    if floating is float:
        active_kernels().max_pool_f32(x, C, H, W, s, step, out, <int32_t *>arg)
    else:
        active_kernels().max_pool_f64(x, C, H, W, s, step, out, <int32_t *>arg)


cdef inline void max_unpool(const floating *g, const int *arg, int C, int H, int W, int OH,
                            int OW, floating *dx) noexcept nogil:
    if floating is float:
        active_kernels().max_unpool_f32(g, <const int32_t *>arg, C, H, W, OH, OW, dx)
    else:
        active_kernels().max_unpool_f64(g, <const int32_t *>arg, C, H, W, OH, OW, dx)


cdef inline void dense_forward(const floating *f, int NB, int F, const floating *W, int K,
                               const floating *b, int act, floating *out) noexcept nogil:
    if floating is float:
        active_kernels().dense_forward_f32(f, NB, F, W, K, b, act, out)
    else:
        active_kernels().dense_forward_f64(f, NB, F, W, K, b, act, out)


cdef inline void dense_delta_input_grad(const floating *g, const floating *y, int NB, int K,
                                        int act, const floating *W, int F, floating *delta,
                                        floating *df) noexcept nogil:
    if floating is float:
        active_kernels().dense_delta_input_grad_f32(g, y, NB, K, act, W, F, delta, df)
    else:
        active_kernels().dense_delta_input_grad_f64(g, y, NB, K, act, W, F, delta, df)


cdef inline void dense_weight_bias_grad(const floating *f, const floating *delta, ptrdiff_t N,
                                        int F, int K, int k0, int k1, floating *dW,
                                        floating *db) noexcept nogil:
    if floating is float:
        active_kernels().dense_weight_bias_grad_f32(f, delta, N, F, K, k0, k1, dW, db)
    else:
        active_kernels().dense_weight_bias_grad_f64(f, delta, N, F, K, k0, k1, dW, db)


cdef inline void adam_step(floating *p, const floating *g, floating *m, floating *v,
                           ptrdiff_t n, floating b1, floating b2, floating eps, floating step,
                           floating root2, floating shrink, floating l2) noexcept nogil:
    if floating is float:
        active_kernels().adam_step_f32(p, g, m, v, n, b1, b2, eps, step, root2, shrink, l2)
    else:
        active_kernels().adam_step_f64(p, g, m, v, n, b1, b2, eps, step, root2, shrink, l2)


cdef inline double mse(const floating *yhat, const floating *t, ptrdiff_t E, ptrdiff_t N,
                       floating *grad) noexcept nogil:
    if floating is float:
        return active_kernels().mse_f32(yhat, t, E, N, grad)
    else:
        return active_kernels().mse_f64(yhat, t, E, N, grad)


cdef inline double cross_entropy(const floating *z, const floating *t, ptrdiff_t N, int K,
                                 floating *grad) noexcept nogil:
    if floating is float:
        return active_kernels().cross_entropy_f32(z, t, N, K, grad)
    else:
        return active_kernels().cross_entropy_f64(z, t, N, K, grad)


cdef inline void activation_forward(int act, const floating *z, ptrdiff_t n,
                                    floating *y) noexcept nogil:
    if floating is float:
        active_kernels().activation_forward_f32(act, z, n, y)
    else:
        active_kernels().activation_forward_f64(act, z, n, y)


cdef inline void activation_backward(int act, const floating *y, const floating *dy,
                                     ptrdiff_t n, floating *dz) noexcept nogil:
    if floating is float:
        active_kernels().activation_backward_f32(act, y, dy, n, dz)
    else:
        active_kernels().activation_backward_f64(act, y, dy, n, dz)


cdef inline void softmax_forward(const floating *z, int K, floating *y) noexcept nogil:
    if floating is float:
        active_kernels().softmax_forward_f32(z, K, y)
    else:
        active_kernels().softmax_forward_f64(z, K, y)


cdef inline void softmax_backward(const floating *y, const floating *dy, int K,
                                  floating *dz) noexcept nogil:
    if floating is float:
        active_kernels().softmax_backward_f32(y, dy, K, dz)
    else:
        active_kernels().softmax_backward_f64(y, dy, K, dz)


cdef inline void batchnorm_stats(const floating *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                 double *mean, double *var) noexcept nogil:
    if floating is float:
        active_kernels().batchnorm_stats_f32(x, N, C, S, c, mean, var)
    else:
        active_kernels().batchnorm_stats_f64(x, N, C, S, c, mean, var)


cdef inline void batchnorm_apply(const floating *x, ptrdiff_t N, int C, ptrdiff_t S, int c,
                                 double mean, double scale, double shift,
                                 floating *y) noexcept nogil:
    if floating is float:
        active_kernels().batchnorm_apply_f32(x, N, C, S, c, mean, scale, shift, y)
    else:
        active_kernels().batchnorm_apply_f64(x, N, C, S, c, mean, scale, shift, y)


cdef inline void batchnorm_backward(const floating *x, const floating *dy, ptrdiff_t N, int C,
                                    ptrdiff_t S, int c, double mean, double invstd,
                                    double gamma, double *dgamma, double *dbeta,
                                    floating *dx) noexcept nogil:
    if floating is float:
        active_kernels().batchnorm_backward_f32(x, dy, N, C, S, c, mean, invstd, gamma, dgamma,
                                                dbeta, dx)
    else:
        active_kernels().batchnorm_backward_f64(x, dy, N, C, S, c, mean, invstd, gamma, dgamma,
                                                dbeta, dx)
