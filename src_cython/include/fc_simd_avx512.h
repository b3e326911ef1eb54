/* fastconv's SIMD vocabulary, AVX-512 (F, BW, VL, DQ) + FMA: 32 zmm registers.
 *
 * Included by a kernel template with FC_DOUBLE (0: float, 1: double) and FC_T defined;
 * no include guard (once per dtype), every name is removed by fc_simd_undef.h.  The
 * three vocabulary headers (fc_simd_avx512.h, fc_simd_avx2.h, fc_simd_generic.h)
 * define the same names:
 *
 *   FC_ATTR                  target attribute of every function using the vocabulary
 *   FC_NREG                  vector registers of the ISA
 *   FCV, FCV_L               vector type and its lanes; FCV_BYTES its size
 *   FCV_ZERO(), FCV_SET1(s)  zero, broadcast of a scalar
 *   FCV_LOAD(p), FCV_STORE(p, v)            unaligned full-vector load / store
 *   FCV_LOADN(p, n), FCV_STOREN(p, v, n)    first n lanes only (0 < n <= FCV_L); a
 *                                           masked load reads zero past n and never
 *                                           touches memory past n
 *   FCV_STREAM(p, v)         non-temporal store of a full vector, p FCV_BYTES-aligned
 *   FCV_STREAM_HALF(p, v)    the same as two non-temporal half-vector stores, p only
 *                            FCV_BYTES / 2-aligned (v evaluated twice: a variable)
 *   FCV_SFENCE()             orders the streaming stores before later stores
 *   FCV_FMA(a, b, c)         a * b + c, one rounding
 *   FCV_ADD(a, b), FCV_MAX(a, b)
 *   FCV_RELU(v)              max(0, v) keeping NaN (v is the operand max returns when
 *                            either is NaN)
 *   FCI, FCI_LOAD(p)         FCV_L 32-bit lane indices; FCV_GATHER(p, i) p[i[j]] per lane
 *   FCV_PASS_POS(f, g)       g in the lanes where f > 0, +0 elsewhere (NaN f: +0); the
 *                            passed lanes keep g's bits exactly (-0.0, NaN payloads)
 */
#define FC_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define FC_NREG 32
#if FC_DOUBLE
#define FCV __m512d
#define FCV_L 8
#define FCV_MASK(n) ((__mmask8)((1u << (n)) - 1u))
#define FCV_ZERO() _mm512_setzero_pd()
#define FCV_SET1(s) _mm512_set1_pd(s)
#define FCV_LOAD(p) _mm512_loadu_pd(p)
#define FCV_LOADN(p, n) _mm512_maskz_loadu_pd(FCV_MASK(n), (p))
#define FCV_STORE(p, v) _mm512_storeu_pd((p), (v))
#define FCV_STOREN(p, v, n) _mm512_mask_storeu_pd((p), FCV_MASK(n), (v))
#define FCV_STREAM(p, v) _mm512_stream_pd((p), (v))
#define FCV_STREAM_HALF(p, v)                                                           \
    do {                                                                                \
        _mm256_stream_pd((p), _mm512_castpd512_pd256(v));                               \
        _mm256_stream_pd((p) + 4, _mm512_extractf64x4_pd((v), 1));                      \
    } while (0)
#define FCV_FMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define FCV_ADD(a, b) _mm512_add_pd((a), (b))
#define FCV_MAX(a, b) _mm512_max_pd((a), (b))
#define FCV_RELU(v) _mm512_max_pd(_mm512_setzero_pd(), (v))
#define FCI __m256i
#define FCI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define FCV_GATHER(p, i) _mm512_i32gather_pd((i), (p), 8)
#else
#define FCV __m512
#define FCV_L 16
#define FCV_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define FCV_ZERO() _mm512_setzero_ps()
#define FCV_SET1(s) _mm512_set1_ps(s)
#define FCV_LOAD(p) _mm512_loadu_ps(p)
#define FCV_LOADN(p, n) _mm512_maskz_loadu_ps(FCV_MASK(n), (p))
#define FCV_STORE(p, v) _mm512_storeu_ps((p), (v))
#define FCV_STOREN(p, v, n) _mm512_mask_storeu_ps((p), FCV_MASK(n), (v))
#define FCV_STREAM(p, v) _mm512_stream_ps((p), (v))
#define FCV_STREAM_HALF(p, v)                                                           \
    do {                                                                                \
        _mm256_stream_ps((p), _mm512_castps512_ps256(v));                               \
        _mm256_stream_ps((p) + 8, _mm512_extractf32x8_ps((v), 1));                      \
    } while (0)
#define FCV_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define FCV_ADD(a, b) _mm512_add_ps((a), (b))
#define FCV_MAX(a, b) _mm512_max_ps((a), (b))
#define FCV_RELU(v) _mm512_max_ps(_mm512_setzero_ps(), (v))
#define FCI __m512i
#define FCI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define FCV_GATHER(p, i) _mm512_i32gather_ps((i), (p), 4)
#endif
#define FCV_BYTES (FCV_L * (int)sizeof(FC_T))
#define FCV_SFENCE() _mm_sfence()
#if FC_DOUBLE
#define FCV_PASS_POS(f, g) _mm512_maskz_mov_pd(_mm512_cmp_pd_mask((f), _mm512_setzero_pd(), _CMP_GT_OQ), (g))
#else
#define FCV_PASS_POS(f, g) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((f), _mm512_setzero_ps(), _CMP_GT_OQ), (g))
#endif
