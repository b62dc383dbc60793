/* kernels.h -- the per-sample kernels of fastcnn, for float and double, for
 * more than one instruction set, chosen at run time.
 *
 * Each *_impl.h is written once over a type REAL; instantiate.h compiles them
 * for float and double, as NumPy's .src templates do, so both precisions run
 * the same loops. On x86-64 with GCC or Clang they are compiled twice in this
 * one translation unit: for the baseline the compiler targets (SSE2 for any
 * x86-64 wheel) and, through a target pragma, for x86-64-v3 (AVX2 + FMA). A
 * wheel therefore runs on every x86-64 CPU and uses AVX2 where the CPU has it,
 * as NumPy does. fc_select_isa() makes the choice; the public names below
 * (fc_conv_forward_f32, ...) call the chosen version.
 *
 * Results of the two versions differ in the last bits (FMA rounds once where
 * SSE2 rounds twice); each is deterministic and independent of threads.
 */
#ifndef FASTCNN_KERNELS_H
#define FASTCNN_KERNELS_H

#include "fc_common.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) \
    && !(defined(__AVX2__) && defined(__FMA__))
#  define FC_DISPATCH_AVX2 1
#else
#  define FC_DISPATCH_AVX2 0
#endif

/* the baseline: whatever the compiler flags allow */
#define FC_ISA _base
#include "instantiate.h"
#undef FC_ISA

#if FC_DISPATCH_AVX2
#  if defined(__clang__)
#    pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#  else
#    pragma GCC push_options
#    pragma GCC target("avx2,fma")
#  endif
#  define FC_ISA _avx2
#  include "instantiate.h"
#  undef FC_ISA
#  if defined(__clang__)
#    pragma clang attribute pop
#  else
#    pragma GCC pop_options
#  endif
#endif

/* ---- choosing the instruction set ---- */

static int fc_use_avx2 = 0;

/* 1 if this CPU runs the AVX2 + FMA version. */
static int fc_cpu_has_avx2_fma(void)
{
#if FC_DISPATCH_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static const char *fc_isa_name(int avx2)
{
#if defined(__AVX2__) && defined(__FMA__)
    (void)avx2;
    return "avx2+fma (build flags)"; /* the baseline itself was built for AVX2 */
#else
    return avx2 ? "avx2+fma" : "baseline";
#endif
}

/* The fastest version this CPU runs. */
static const char *fc_best_isa(void) { return fc_isa_name(fc_cpu_has_avx2_fma()); }

/* Use the AVX2 version if want_avx2 and the CPU has it; returns the name of
 * the version now in use. */
static const char *fc_select_isa(int want_avx2)
{
    fc_use_avx2 = want_avx2 && fc_cpu_has_avx2_fma();
    return fc_isa_name(fc_use_avx2);
}

#if FC_DISPATCH_AVX2
#  define FC_PICK(name) (fc_use_avx2 ? FC_CAT(name, _avx2) : FC_CAT(name, _base))
#else
#  define FC_PICK(name) FC_CAT(name, _base)
#endif

#define fc_conv_forward_f32      FC_PICK(fc_conv_forward_f32)
#define fc_conv_forward_f64      FC_PICK(fc_conv_forward_f64)
#define fc_conv_backward_f32     FC_PICK(fc_conv_backward_f32)
#define fc_conv_backward_f64     FC_PICK(fc_conv_backward_f64)
#define fc_conv_ws_delta_f32     FC_PICK(fc_conv_ws_delta_f32)
#define fc_conv_ws_delta_f64     FC_PICK(fc_conv_ws_delta_f64)
#define fc_conv_ws_wgrad_f32     FC_PICK(fc_conv_ws_wgrad_f32)
#define fc_conv_ws_wgrad_f64     FC_PICK(fc_conv_ws_wgrad_f64)
#define fc_conv_wgrad_finish_f32 FC_PICK(fc_conv_wgrad_finish_f32)
#define fc_conv_wgrad_finish_f64 FC_PICK(fc_conv_wgrad_finish_f64)
#define fc_sum_samples_f32       FC_PICK(fc_sum_samples_f32)
#define fc_sum_samples_f64       FC_PICK(fc_sum_samples_f64)
#define fc_mean_pool_f32         FC_PICK(fc_mean_pool_f32)
#define fc_mean_pool_f64         FC_PICK(fc_mean_pool_f64)
#define fc_mean_upsample_f32     FC_PICK(fc_mean_upsample_f32)
#define fc_mean_upsample_f64     FC_PICK(fc_mean_upsample_f64)
#define fc_dense_forward_f32     FC_PICK(fc_dense_forward_f32)
#define fc_dense_forward_f64     FC_PICK(fc_dense_forward_f64)
#define fc_dense_backward_sample_f32 FC_PICK(fc_dense_backward_sample_f32)
#define fc_dense_backward_sample_f64 FC_PICK(fc_dense_backward_sample_f64)
#define fc_dense_wgrad_f32       FC_PICK(fc_dense_wgrad_f32)
#define fc_dense_wgrad_f64       FC_PICK(fc_dense_wgrad_f64)
#define fc_adam_step_f32         FC_PICK(fc_adam_step_f32)
#define fc_adam_step_f64         FC_PICK(fc_adam_step_f64)
#define fc_mse_f32               FC_PICK(fc_mse_f32)
#define fc_mse_f64               FC_PICK(fc_mse_f64)
#define fc_activation_forward_f32  FC_PICK(fc_activation_forward_f32)
#define fc_activation_forward_f64  FC_PICK(fc_activation_forward_f64)
#define fc_activation_backward_f32 FC_PICK(fc_activation_backward_f32)
#define fc_activation_backward_f64 FC_PICK(fc_activation_backward_f64)
#define fc_softmax_forward_f32   FC_PICK(fc_softmax_forward_f32)
#define fc_softmax_forward_f64   FC_PICK(fc_softmax_forward_f64)
#define fc_softmax_backward_f32  FC_PICK(fc_softmax_backward_f32)
#define fc_softmax_backward_f64  FC_PICK(fc_softmax_backward_f64)
#define fc_cross_entropy_f32     FC_PICK(fc_cross_entropy_f32)
#define fc_cross_entropy_f64     FC_PICK(fc_cross_entropy_f64)
#define fc_max_pool_f32          FC_PICK(fc_max_pool_f32)
#define fc_max_pool_f64          FC_PICK(fc_max_pool_f64)
#define fc_max_unpool_f32        FC_PICK(fc_max_unpool_f32)
#define fc_max_unpool_f64        FC_PICK(fc_max_unpool_f64)

#endif
