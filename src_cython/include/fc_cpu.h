/* Build and CPU facts for fastconv, shared by every compiled module.
 *
 * fc_openmp_enabled(): 1 when the module was compiled with OpenMP.
 * fc_team_size(), fc_thread_num(): the OpenMP team, as omp_get_num_threads/_thread_num.
 * fc_cpu_simd_level(): the best SIMD level this CPU supports, found at run
 *   time with __builtin_cpu_supports (never from -march):
 *   FC_SIMD_AVX512 (AVX-512 F/BW/VL/DQ + FMA), FC_SIMD_AVX2 (AVX2 + FMA),
 *   FC_SIMD_GENERIC (portable C).
 */
#ifndef FASTCONV_FC_CPU_H
#define FASTCONV_FC_CPU_H

#ifdef _OPENMP
#include <omp.h>
#endif

#define FC_SIMD_GENERIC 0
#define FC_SIMD_AVX2 1
#define FC_SIMD_AVX512 2

static inline int fc_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The size of the current OpenMP team and this thread's number in it (1 and 0
 * outside a parallel region, or without OpenMP). */
static inline int fc_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int fc_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int fc_cpu_simd_level(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return FC_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FC_SIMD_AVX2;
#endif
    return FC_SIMD_GENERIC;
}

#endif
