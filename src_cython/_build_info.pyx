"""Facts about the compiled extension: OpenMP and the CPU's SIMD support."""

cdef extern from "fc_cpu.h" nogil:
    int fc_openmp_enabled()
    int fc_openmp_max_threads()
    int fc_cpu_simd_level()
    int FC_SIMD_GENERIC
    int FC_SIMD_AVX2
    int FC_SIMD_AVX512

SIMD_NAMES = {FC_SIMD_GENERIC: "generic", FC_SIMD_AVX2: "avx2", FC_SIMD_AVX512: "avx512"}


def openmp_enabled():
    """Return True when the extension was compiled with OpenMP."""
    return bool(fc_openmp_enabled())


def openmp_max_threads():
    """Return OpenMP's default team size (1 without OpenMP)."""
    return fc_openmp_max_threads()


def cpu_simd_level():
    """Return the best SIMD level of this CPU: 'avx512', 'avx2' or 'generic'."""
    return SIMD_NAMES[fc_cpu_simd_level()]
