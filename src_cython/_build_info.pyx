"""Facts about the compiled extension: OpenMP and the CPU's SIMD support."""
from cython.parallel cimport parallel

from fastconv_c cimport (FC_SIMD_AVX2, FC_SIMD_AVX512, FC_SIMD_GENERIC, fc_cpu_simd_level,
                         fc_openmp_enabled, fc_team_size, fc_thread_num)

SIMD_NAMES = {FC_SIMD_GENERIC: "generic", FC_SIMD_AVX2: "avx2", FC_SIMD_AVX512: "avx512"}


def openmp_enabled():
    """Return True when the extension was compiled with OpenMP."""
    return bool(fc_openmp_enabled())


def cpu_simd_level():
    """Return the best SIMD level of this CPU: 'avx512', 'avx2' or 'generic'."""
    return SIMD_NAMES[fc_cpu_simd_level()]


def parallel_team_size(int num_threads):
    """Threads OpenMP actually starts for ``parallel(num_threads=num_threads)``.

    Every kernel opens its parallel region the same way, so this tells whether
    a requested thread count is honoured (1 in a build without OpenMP).
    """
    cdef int size = 0
    cdef int *p = &size
    with nogil, parallel(num_threads=num_threads):
        if fc_thread_num() == 0:
            p[0] = fc_team_size()
    return size
