/* fastconv's SIMD vocabulary, portable C: a "vector" is one scalar.
 *
 * The same names as fc_simd_avx512.h (which lists them); included with FC_DOUBLE and
 * FC_T defined, removed by fc_simd_undef.h.  FC_NREG is a nominal register budget for
 * the tile shapes; the streaming store is a plain store and the fence does nothing.
 */
#define FC_ATTR
#define FC_NREG 16
#define FCV FC_T
#define FCV_L 1
#define FCV_ZERO() ((FC_T)0)
#define FCV_SET1(s) ((FC_T)(s))
#define FCV_LOAD(p) (*(p))
#define FCV_LOADN(p, n) ((void)(n), *(p))
#define FCV_STORE(p, v) (*(p) = (v))
#define FCV_STOREN(p, v, n) ((void)(n), *(p) = (v))
#define FCV_STREAM(p, v) (*(p) = (v))
#define FCV_STREAM_HALF(p, v) (*(p) = (v))
#define FCV_FMA(a, b, c) ((a) * (b) + (c))
#define FCV_ADD(a, b) ((a) + (b))
#define FCV_MAX(a, b) ((a) > (b) ? (a) : (b))   /* b when either is NaN, as x86 max */
#define FCV_RELU(v) ((v) < 0 ? (FC_T)0 : (v))
#define FCI int
#define FCI_LOAD(p) (*(p))
#define FCV_GATHER(p, i) ((p)[i])
#define FCV_BYTES ((int)sizeof(FC_T))
#define FCV_SFENCE() ((void)0)
#define FCV_PASS_POS(f, g) ((f) > 0 ? (g) : (FC_T)0)
