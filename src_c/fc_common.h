/* fc_common.h -- portability macros shared by the fastcnn kernels.
 *
 * The kernels are plain C: no allocation, no OpenMP (threading lives in the
 * Cython callers), no intrinsics. They are written so that an optimising
 * compiler vectorises them: inner loops run over LANES adjacent columns held
 * in vectors of LANES elements (8 floats or 4 doubles: one AVX2 register).
 */
#ifndef FASTCNN_COMMON_H
#define FASTCNN_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER)
#  define FC_RESTRICT __restrict
#  define FC_INLINE static __forceinline
#else
#  define FC_RESTRICT __restrict__
#  define FC_INLINE static inline __attribute__((always_inline))
#endif

/* Unroll the next loop completely (its trip count is a constant once
 * inlined): register tiles indexed by the loop variable stay in registers. */
#if defined(__clang__)
#  define FC_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#  define FC_UNROLL _Pragma("GCC unroll 64")
#else
#  define FC_UNROLL
#endif

/* GCC/Clang vector extensions, unless FC_NO_VECTOR_EXT asks for the plain
 * struct fallback of vec_impl.h (what other compilers get). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FC_NO_VECTOR_EXT)
#  define FC_VECTOR_EXT 1
#else
#  define FC_VECTOR_EXT 0
#endif

/* Activation codes: the `act` argument of the kernels. fastcnn._kernels
 * declares them (fastcnn/_kernels.pxd) and builds ACTIVATION_CODES, the
 * name -> code mapping of the Python layers, from them. */
enum fc_activation {
    FC_ACT_NONE = 0,     /* identity */
    FC_ACT_SIGMOID = 1,  /* eq. (4): 1 / (1 + exp(-z)) */
    FC_ACT_RELU = 2,     /* max(0, z) */
    FC_ACT_TANH = 3,
    FC_ACT_TANH_OPT = 4, /* DeepLearnToolbox's tanh_opt: 1.7159 tanh(2z/3) */
    FC_ACT_COUNT         /* the number of codes: valid codes are 0 <= act < FC_ACT_COUNT */
};

#define FC_CAT_(a, b) a##b
#define FC_CAT(a, b) FC_CAT_(a, b)

#endif
