/* fc_common.h -- portability macros shared by the fastcnn kernels.
 *
 * The kernels are plain C99: no allocation, no OpenMP (threading lives in the
 * Cython callers), no intrinsics. They are written so that an optimising
 * compiler vectorises them: inner loops run over LANES adjacent output
 * columns held in small local arrays, which become SIMD registers.
 */
#ifndef FASTCNN_COMMON_H
#define FASTCNN_COMMON_H

#include <stddef.h>
#include <math.h>

#if defined(_MSC_VER)
#  define FC_RESTRICT __restrict
#  define FC_INLINE static __forceinline
#else
#  define FC_RESTRICT __restrict__
#  define FC_INLINE static inline __attribute__((always_inline))
#endif

/* Columns computed together. 8 floats fill an AVX2 register (4 doubles fill
 * one, so a double block is two registers); SSE2 builds use two or four. */
#define FC_LANES 8

#endif
