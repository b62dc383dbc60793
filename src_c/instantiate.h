/* instantiate.h -- every kernel for float (_f32) and double (_f64), with the
 * suffix FC_ISA (the instruction set it is compiled for), in vectors of
 * FC_LANES_F32 floats and FC_LANES_F64 doubles (one register of that set).
 * With FC_NARROW_ISA defined, NARROW_FN(name) names the same kernel of that
 * instruction set (shorter vectors), for shapes narrower than one vector.
 * Included by kernels.h once per instruction set; not a header to include
 * directly. */

#define REAL float
#define REAL_DOUBLE 0
#define LANES FC_LANES_F32
#define FN(name) FC_CAT(FC_CAT(fc_, name), FC_CAT(_f32, FC_ISA))
#ifdef FC_NARROW_ISA
#  define NARROW_FN(name) FC_CAT(FC_CAT(fc_, name), FC_CAT(_f32, FC_NARROW_ISA))
#endif
#include "vec_impl.h"
#include "activation_impl.h"
#include "conv_impl.h"
#include "conv_maps_impl.h"
#include "pool_impl.h"
#include "dense_impl.h"
#include "loss_impl.h"
#include "optim_impl.h"
#include "norm_impl.h"
#undef REAL
#undef REAL_DOUBLE
#undef FN
#undef NARROW_FN
#undef VEC
#undef LANES

#define REAL double
#define REAL_DOUBLE 1
#define LANES FC_LANES_F64
#define FN(name) FC_CAT(FC_CAT(fc_, name), FC_CAT(_f64, FC_ISA))
#ifdef FC_NARROW_ISA
#  define NARROW_FN(name) FC_CAT(FC_CAT(fc_, name), FC_CAT(_f64, FC_NARROW_ISA))
#endif
#include "vec_impl.h"
#include "activation_impl.h"
#include "conv_impl.h"
#include "conv_maps_impl.h"
#include "pool_impl.h"
#include "dense_impl.h"
#include "loss_impl.h"
#include "optim_impl.h"
#include "norm_impl.h"
#undef REAL
#undef REAL_DOUBLE
#undef FN
#undef NARROW_FN
#undef VEC
#undef LANES
