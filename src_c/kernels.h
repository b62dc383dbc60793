/* kernels.h -- the per-sample kernels of fastcnn, for float and double, for
 * more than one instruction set, chosen at run time.
 *
 * Each *_impl.h is written once over a type REAL; instantiate.h compiles them
 * for float and double, as NumPy's .src templates do, so both precisions run
 * the same loops. On x86-64 with GCC or Clang they are compiled twice in this
 * one translation unit: for the baseline the compiler targets (SSE2 for any
 * x86-64 wheel) and, through a target pragma, for x86-64-v3 (AVX2 + FMA). A
 * wheel therefore runs on every x86-64 CPU and uses AVX2 where the CPU has it,
 * as NumPy does. Each version fills one fc_kernel_table (kernel_table.h) with
 * its entry points; fc_kernels_for() picks the table. This header is compiled
 * into one extension module, fastcnn._kernels, which holds the pointer to the
 * table in use; the other modules call through it.
 *
 * Results of the two versions differ in the last bits (FMA rounds once where
 * SSE2 rounds twice); each is deterministic and independent of threads.
 */
#ifndef FASTCNN_KERNELS_H
#define FASTCNN_KERNELS_H

#include "kernel_table.h"

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

/* ---- one table of entry points per instruction set ---- */

/* the members of kernel_table.h for one type T (_f32, _f64), from the functions
 * instantiate.h compiled for instruction set ISA (_base, _avx2) */
#define FC_TABLE_ENTRIES(T, ISA)                                       \
    .conv_forward##T = fc_conv_forward##T##ISA,                        \
    .conv_backward##T = fc_conv_backward##T##ISA,                      \
    .conv_ws_delta_size##T = fc_conv_ws_delta_size##T##ISA,            \
    .conv_ws_wgrad_size##T = fc_conv_ws_wgrad_size##T##ISA,            \
    .conv_wgrad_from_partials##T = fc_conv_wgrad_from_partials##T##ISA, \
    .sum_samples##T = fc_sum_samples##T##ISA,                          \
    .mean_pool##T = fc_mean_pool##T##ISA,                              \
    .mean_upsample##T = fc_mean_upsample##T##ISA,                      \
    .max_pool##T = fc_max_pool##T##ISA,                                \
    .max_unpool##T = fc_max_unpool##T##ISA,                            \
    .dense_forward##T = fc_dense_forward##T##ISA,                      \
    .dense_delta_input_grad##T = fc_dense_delta_input_grad##T##ISA,    \
    .dense_weight_bias_grad##T = fc_dense_weight_bias_grad##T##ISA,    \
    .adam_step##T = fc_adam_step##T##ISA,                              \
    .mse##T = fc_mse##T##ISA,                                          \
    .cross_entropy##T = fc_cross_entropy##T##ISA,                      \
    .activation_forward##T = fc_activation_forward##T##ISA,            \
    .activation_backward##T = fc_activation_backward##T##ISA,          \
    .softmax_forward##T = fc_softmax_forward##T##ISA,                  \
    .softmax_backward##T = fc_softmax_backward##T##ISA,                \
    .batchnorm_stats##T = fc_batchnorm_stats##T##ISA,                  \
    .batchnorm_apply##T = fc_batchnorm_apply##T##ISA,                  \
    .batchnorm_backward##T = fc_batchnorm_backward##T##ISA

#define FC_KERNEL_TABLE(ISA, NAME) \
    { .isa = NAME, FC_TABLE_ENTRIES(_f32, ISA), FC_TABLE_ENTRIES(_f64, ISA) }

#if defined(__AVX2__) && defined(__FMA__)
/* the baseline itself was built for AVX2 (FASTCNN_MARCH) */
static const fc_kernel_table fc_kernels_base = FC_KERNEL_TABLE(_base, "avx2+fma (build flags)");
#else
static const fc_kernel_table fc_kernels_base = FC_KERNEL_TABLE(_base, "baseline");
#endif
#if FC_DISPATCH_AVX2
static const fc_kernel_table fc_kernels_avx2 = FC_KERNEL_TABLE(_avx2, "avx2+fma");
#endif

/* ---- choosing the instruction set ---- */

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

/* The AVX2 + FMA table if want_avx2 and this CPU runs it, else the baseline
 * one; fc_kernels_for(1) is the fastest this CPU runs. */
static const fc_kernel_table *fc_kernels_for(int want_avx2)
{
#if FC_DISPATCH_AVX2
    if (want_avx2 && fc_cpu_has_avx2_fma()) return &fc_kernels_avx2;
#else
    (void)want_avx2;
#endif
    return &fc_kernels_base;
}

#endif
