"""What the compiled kernels know about OpenMP (see fastcnn._threads for the policy)."""

from fastcnn._openmp cimport FASTCNN_OPENMP, omp_get_max_threads


def openmp_enabled():
    """True if the kernels were compiled with OpenMP (else they run serially)."""
    return bool(FASTCNN_OPENMP)


def max_threads():
    """omp_get_max_threads(): OpenMP's default team size (1 without OpenMP)."""
    return omp_get_max_threads()
