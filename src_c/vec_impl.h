/* vec_impl.h -- a vector of LANES REALs (8 floats or 4 doubles: one AVX2
 * register; 16 or 8 in the AVX-512 kernels: one AVX-512 register) and the few
 * operations the kernels need, for one type and instruction set.
 *
 * With GCC or Clang it is a vector extension type: the compiler keeps it in
 * SIMD registers (one AVX2 or AVX-512 register, or two SSE2/NEON registers). Elsewhere (FC_NO_VECTOR_EXT, or MSVC) it is a
 * struct of LANES elements with the same operations written as loops:
 * slower, same arithmetic lane by lane. Loads and stores go through memcpy,
 * which compiles to one unaligned vector move and is free of aliasing
 * questions.
 */

#if FC_VECTOR_EXT

typedef REAL FN(vec) __attribute__((vector_size(sizeof(REAL) * LANES)));
#define VEC FN(vec)

FC_INLINE VEC FN(vzero)(void) { VEC v = {0}; return v; }
FC_INLINE VEC FN(vset1)(REAL w)
{
    /* an initialiser, not a loop over lanes: GCC turns the loop into one
     * insert per lane instead of a broadcast */
#if LANES == 16
    VEC v = {w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w};
#elif LANES == 8
    VEC v = {w, w, w, w, w, w, w, w};
#else
    VEC v = {w, w, w, w};
#endif
    return v;
}
FC_INLINE VEC FN(vfma)(VEC acc, VEC a, VEC b) { return acc + a * b; }
FC_INLINE VEC FN(vadd)(VEC a, VEC b) { return a + b; }
FC_INLINE REAL FN(vlane)(VEC v, int l) { return v[l]; }

#else

typedef struct { REAL e[LANES]; } FN(vec);
#define VEC FN(vec)

FC_INLINE VEC FN(vzero)(void) { VEC v; for (int l = 0; l < LANES; l++) v.e[l] = 0; return v; }
FC_INLINE VEC FN(vset1)(REAL w) { VEC v; for (int l = 0; l < LANES; l++) v.e[l] = w; return v; }
FC_INLINE VEC FN(vfma)(VEC acc, VEC a, VEC b)
{
    for (int l = 0; l < LANES; l++) acc.e[l] += a.e[l] * b.e[l];
    return acc;
}
FC_INLINE VEC FN(vadd)(VEC a, VEC b)
{
    for (int l = 0; l < LANES; l++) a.e[l] += b.e[l];
    return a;
}
FC_INLINE REAL FN(vlane)(VEC v, int l) { return v.e[l]; }

#endif

FC_INLINE VEC FN(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void FN(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }

/* Sum of the lanes, always in the same pairwise order. */
FC_INLINE REAL FN(vsum)(VEC v)
{
    REAL s = (FN(vlane)(v, 0) + FN(vlane)(v, 1)) + (FN(vlane)(v, 2) + FN(vlane)(v, 3));
#if LANES >= 8
    s += (FN(vlane)(v, 4) + FN(vlane)(v, 5)) + (FN(vlane)(v, 6) + FN(vlane)(v, 7));
#endif
#if LANES == 16
    s += (FN(vlane)(v, 8) + FN(vlane)(v, 9)) + (FN(vlane)(v, 10) + FN(vlane)(v, 11));
    s += (FN(vlane)(v, 12) + FN(vlane)(v, 13)) + (FN(vlane)(v, 14) + FN(vlane)(v, 15));
#endif
    return s;
}
