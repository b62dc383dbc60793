/* kernels.h -- the per-sample kernels of fastcnn, for float and double.
 *
 * Each *_impl.h is written once over a type REAL; this header instantiates
 * them for float (suffix _f32) and double (suffix _f64), as NumPy's .src
 * templates do, so both precisions run the very same loops.
 */
#ifndef FASTCNN_KERNELS_H
#define FASTCNN_KERNELS_H

#include "fc_common.h"

#define REAL float
#define FN(name) fc_##name##_f32
#define EXP expf
#include "activation_impl.h"
#include "conv_impl.h"
#include "pool_impl.h"
#undef REAL
#undef FN
#undef EXP

#define REAL double
#define FN(name) fc_##name##_f64
#define EXP exp
#include "activation_impl.h"
#include "conv_impl.h"
#include "pool_impl.h"
#undef REAL
#undef FN
#undef EXP

#endif
