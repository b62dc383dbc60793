"""The C kernels of every family, compiled once, and the choice of their
instruction set.

src_c/kernels.h compiles the kernels for the baseline instruction set of the
build and, on x86-64 with GCC or Clang, again for AVX2 + FMA and for AVX-512,
and fills one table of entry points (src_c/kernel_table.h) per version. This module holds
the one pointer to the table in use. The kernel modules (_conv, _pool,
_activation, _dense, _loss, _optim) call through it with the wrappers of
_kernels.pxd; fastcnn._simd sets it with select_isa().

ACTIVATION_CODES maps the layers' activation names to the codes of
src_c/fc_common.h that the kernels take.
"""

cdef extern from "kernels.h" nogil:
    enum:
        FC_ISA_BASELINE
        FC_ISA_AVX2
        FC_ISA_AVX512
    const fc_kernel_table *fc_kernels_for(int want)


cdef const fc_kernel_table *_active = fc_kernels_for(FC_ISA_AVX512)


cdef const fc_kernel_table *active_kernels() noexcept nogil:
    return _active


# the versions, narrowest first, by the level fc_kernels_for takes
LEVELS = {"baseline": FC_ISA_BASELINE, "avx2+fma": FC_ISA_AVX2, "avx512": FC_ISA_AVX512}


def select_isa(int level):
    """Run the widest version of the kernels (every family at once) up to
    `level` (a value of LEVELS) that this CPU runs; returns its name."""
    global _active
    _active = fc_kernels_for(level)
    return active_isa()


def active_isa():
    """Name of the kernels in use: "baseline", "avx2+fma", "avx512", or "avx2+fma
    (build flags)" when the baseline itself was compiled for AVX2."""
    return _active.isa.decode()


def isa_up_to(int level):
    """Name of the version select_isa(level) would choose."""
    return fc_kernels_for(level).isa.decode()


# the fastest version this CPU runs
BEST_ISA = isa_up_to(FC_ISA_AVX512)

ACTIVATION_CODES = {
    None: FC_ACT_NONE,
    "sigmoid": FC_ACT_SIGMOID,
    "relu": FC_ACT_RELU,
    "tanh": FC_ACT_TANH,
    "tanh_opt": FC_ACT_TANH_OPT,
}
# FC_ACT_COUNT: the codes are 0 <= code < ACTIVATION_COUNT
ACTIVATION_COUNT = FC_ACT_COUNT
