"""The C kernels of every family, compiled once, and the choice of their
instruction set.

src_c/kernels.h compiles the kernels for the baseline instruction set of the
build and, on x86-64 with GCC or Clang, again for AVX2 + FMA, and fills one
table of entry points (src_c/kernel_table.h) per version. This module holds
the one pointer to the table in use. The kernel modules (_conv, _pool,
_activation, _dense, _loss, _optim) call through it with the wrappers of
_kernels.pxd; fastcnn._simd sets it with select_isa().

ACTIVATION_CODES maps the layers' activation names to the codes of
src_c/fc_common.h that the kernels take.
"""

cdef extern from "kernels.h" nogil:
    const fc_kernel_table *fc_kernels_for(int want_avx2)


cdef const fc_kernel_table *_active = fc_kernels_for(True)


cdef const fc_kernel_table *active_kernels() noexcept nogil:
    return _active


def select_isa(bint avx2):
    """Run the AVX2+FMA kernels (every family at once) if `avx2` and the CPU
    has them, else the baseline ones; returns the name of the version in use."""
    global _active
    _active = fc_kernels_for(avx2)
    return active_isa()


def active_isa():
    """Name of the kernels in use: "baseline", "avx2+fma", or "avx2+fma (build
    flags)" when the baseline itself was compiled for AVX2."""
    return _active.isa.decode()


# the fastest version this CPU runs
BEST_ISA = fc_kernels_for(True).isa.decode()

ACTIVATION_CODES = {
    None: FC_ACT_NONE,
    "sigmoid": FC_ACT_SIGMOID,
    "relu": FC_ACT_RELU,
    "tanh": FC_ACT_TANH,
    "tanh_opt": FC_ACT_TANH_OPT,
}
# FC_ACT_COUNT: the codes are 0 <= code < ACTIVATION_COUNT
ACTIVATION_COUNT = FC_ACT_COUNT
