# The one place fastcnn talks to OpenMP. Without OpenMP (FASTCNN_NO_OPENMP=1,
# or a compiler that lacks it) the shim answers "one thread, thread 0", and
# Cython's prange loops compile to plain serial loops with the same results.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_OPENMP 1
    #else
    #define FASTCNN_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint FASTCNN_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
