/* fastconv's SIMD vocabulary, AVX2 + FMA: 16 ymm registers.
 *
 * The same names as fc_simd_avx512.h (which lists them); included with FC_DOUBLE and
 * FC_T defined, removed by fc_simd_undef.h.  Masked loads and stores of the first n
 * lanes use vmaskmov (kernels keep them off the hot path: tails only).
 */
#define FC_ATTR __attribute__((target("avx2,fma")))
#define FC_NREG 16
#if FC_DOUBLE
#define FCV __m256d
#define FCV_L 4
#define FCV_MASK(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))
#define FCV_ZERO() _mm256_setzero_pd()
#define FCV_SET1(s) _mm256_set1_pd(s)
#define FCV_LOAD(p) _mm256_loadu_pd(p)
#define FCV_LOADN(p, n) _mm256_maskload_pd((p), FCV_MASK(n))
#define FCV_STORE(p, v) _mm256_storeu_pd((p), (v))
#define FCV_STOREN(p, v, n) _mm256_maskstore_pd((p), FCV_MASK(n), (v))
#define FCV_STREAM(p, v) _mm256_stream_pd((p), (v))
#define FCV_STREAM_HALF(p, v)                                                           \
    do {                                                                                \
        _mm_stream_pd((p), _mm256_castpd256_pd128(v));                                  \
        _mm_stream_pd((p) + 2, _mm256_extractf128_pd((v), 1));                          \
    } while (0)
#define FCV_FMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define FCV_ADD(a, b) _mm256_add_pd((a), (b))
#define FCV_MAX(a, b) _mm256_max_pd((a), (b))
#define FCV_RELU(v) _mm256_max_pd(_mm256_setzero_pd(), (v))
#define FCI __m128i
#define FCI_LOAD(p) _mm_loadu_si128((const __m128i *)(p))
#define FCV_GATHER(p, i) _mm256_i32gather_pd((p), (i), 8)
#else
#define FCV __m256
#define FCV_L 8
#define FCV_MASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define FCV_ZERO() _mm256_setzero_ps()
#define FCV_SET1(s) _mm256_set1_ps(s)
#define FCV_LOAD(p) _mm256_loadu_ps(p)
#define FCV_LOADN(p, n) _mm256_maskload_ps((p), FCV_MASK(n))
#define FCV_STORE(p, v) _mm256_storeu_ps((p), (v))
#define FCV_STOREN(p, v, n) _mm256_maskstore_ps((p), FCV_MASK(n), (v))
#define FCV_STREAM(p, v) _mm256_stream_ps((p), (v))
#define FCV_STREAM_HALF(p, v)                                                           \
    do {                                                                                \
        _mm_stream_ps((p), _mm256_castps256_ps128(v));                                  \
        _mm_stream_ps((p) + 4, _mm256_extractf128_ps((v), 1));                          \
    } while (0)
#define FCV_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define FCV_ADD(a, b) _mm256_add_ps((a), (b))
#define FCV_MAX(a, b) _mm256_max_ps((a), (b))
#define FCV_RELU(v) _mm256_max_ps(_mm256_setzero_ps(), (v))
#define FCI __m256i
#define FCI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define FCV_GATHER(p, i) _mm256_i32gather_ps((p), (i), 4)
#endif
#define FCV_BYTES (FCV_L * (int)sizeof(FC_T))
#define FCV_SFENCE() _mm_sfence()
#if FC_DOUBLE
#define FCV_PASS_POS(f, g) _mm256_and_pd(_mm256_cmp_pd((f), _mm256_setzero_pd(), _CMP_GT_OQ), (g))
#else
#define FCV_PASS_POS(f, g) _mm256_and_ps(_mm256_cmp_ps((f), _mm256_setzero_ps(), _CMP_GT_OQ), (g))
#endif
