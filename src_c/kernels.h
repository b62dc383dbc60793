/* kernels.h -- the per-sample kernels of fastcnn, for float and double, for
 * more than one instruction set, chosen at run time.
 *
 * Each *_impl.h is written once over a type REAL; instantiate.h compiles them
 * for float and double, as NumPy's .src templates do, so both precisions run
 * the same loops. On x86-64 with GCC or Clang they are compiled three times in
 * this one translation unit: for the baseline the compiler targets (SSE2 for
 * any x86-64 wheel) and, through target pragmas, for x86-64-v3 (AVX2 + FMA,
 * vectors of 8 floats or 4 doubles) and x86-64-v4 (AVX-512 F/BW/DQ/VL, vectors
 * of 16 floats or 8 doubles). A wheel therefore runs on every x86-64 CPU and
 * uses the widest vectors the CPU has, as NumPy does. Each version fills one
 * fc_kernel_table (kernel_table.h) with its entry points; fc_kernels_for()
 * picks the table. This header is compiled into one extension module,
 * fastcnn._kernels, which holds the pointer to the table in use; the other
 * modules call through it.
 *
 * Results of the versions differ in the last bits (FMA rounds once where SSE2
 * rounds twice; 16-lane sums split a dot product differently from 8-lane
 * ones); each is deterministic and independent of threads.
 */
#ifndef FASTCNN_KERNELS_H
#define FASTCNN_KERNELS_H

#include "kernel_table.h"

/* the AVX2 and AVX-512 versions are compiled unless the baseline already is
 * one (a build with FASTCNN_MARCH) */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#  if !(defined(__AVX2__) && defined(__FMA__))
#    define FC_DISPATCH_AVX2 1
#  else
#    define FC_DISPATCH_AVX2 0
#  endif
#  if !defined(__AVX512F__) && FC_VECTOR_EXT
/* (the AVX-512 version is written in vector extension types: the plain-struct
 * fallback of vec_impl.h leaves register width to the auto-vectoriser) */
#    define FC_DISPATCH_AVX512 1
#  else
#    define FC_DISPATCH_AVX512 0
#  endif
#else
#  define FC_DISPATCH_AVX2 0
#  define FC_DISPATCH_AVX512 0
#endif

/* the baseline: whatever the compiler flags allow, 32-byte vectors */
#define FC_LANES_F32 8
#define FC_LANES_F64 4
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

#if FC_DISPATCH_AVX512
#  undef FC_LANES_F32
#  undef FC_LANES_F64
#  define FC_LANES_F32 16
#  define FC_LANES_F64 8
#  if defined(__clang__)
#    pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#  else
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#  endif
/* maps narrower than a 16-float vector run the AVX2 kernels (conv_impl.h) */
#  if FC_DISPATCH_AVX2
#    define FC_NARROW_ISA _avx2
#  else
#    define FC_NARROW_ISA _base
#  endif
#  define FC_ISA _avx512
#  include "instantiate.h"
#  undef FC_ISA
#  undef FC_NARROW_ISA
#  if defined(__clang__)
#    pragma clang attribute pop
#  else
#    pragma GCC pop_options
#  endif
#endif

/* ---- one table of entry points per instruction set ---- */

/* the members of kernel_table.h for one type T (_f32, _f64), from the functions
 * instantiate.h compiled for instruction set ISA (_base, _avx2, _avx512) */
#define FC_TABLE_ENTRIES(T, ISA)                                       \
    .conv_forward##T = fc_conv_forward##T##ISA,                        \
    .conv_backward##T = fc_conv_backward##T##ISA,                      \
    .conv_ws_delta_size##T = fc_conv_ws_delta_size##T##ISA,            \
    .conv_ws_wgrad_size##T = fc_conv_ws_wgrad_size##T##ISA,            \
    .conv_wgrad_from_partials##T = fc_conv_wgrad_from_partials##T##ISA, \
    .conv_maps_round##T = fc_conv_maps_round##T##ISA,                  \
    .conv_maps_weights##T = fc_conv_maps_weights##T##ISA,              \
    .conv_maps_forward##T = fc_conv_maps_forward##T##ISA,              \
    .conv_maps_backward##T = fc_conv_maps_backward##T##ISA,            \
    .conv_maps_ws_size##T = fc_conv_maps_ws_size##T##ISA,              \
    .conv_maps_wgrad_size##T = fc_conv_maps_wgrad_size##T##ISA,        \
    .conv_maps_wgrad_from_partials##T = fc_conv_maps_wgrad_from_partials##T##ISA, \
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
#if FC_DISPATCH_AVX512
static const fc_kernel_table fc_kernels_avx512 = FC_KERNEL_TABLE(_avx512, "avx512");
#endif

/* ---- choosing the instruction set ---- */

/* The levels fc_kernels_for() takes: the widest version wanted. */
enum fc_isa_level { FC_ISA_BASELINE = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 };

/* The widest level this CPU runs (and this build has). */
static int fc_cpu_isa_level(void)
{
#if FC_DISPATCH_AVX2 || FC_DISPATCH_AVX512
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return FC_ISA_BASELINE;
#  if FC_DISPATCH_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return FC_ISA_AVX512;
#  endif
    return FC_ISA_AVX2;
#else
    return FC_ISA_BASELINE; /* the baseline table is the best this build has */
#endif
}

/* The table of the widest version at most `want` (an fc_isa_level) that this
 * CPU runs; fc_kernels_for(FC_ISA_AVX512) is the fastest there is. */
static const fc_kernel_table *fc_kernels_for(int want)
{
    const int level = want < fc_cpu_isa_level() ? want : fc_cpu_isa_level();
#if FC_DISPATCH_AVX512
    if (level >= FC_ISA_AVX512) return &fc_kernels_avx512;
#endif
#if FC_DISPATCH_AVX2
    if (level >= FC_ISA_AVX2) return &fc_kernels_avx2;
#endif
    (void)level;
    return &fc_kernels_base;
}

#endif
