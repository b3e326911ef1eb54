/* Template body of the ReLU kernels; included by fc_relu.h once per (dtype, SIMD
 * level), after the SIMD vocabulary header of that level (fc_simd_*.h, see the list
 * in fc_simd_avx512.h) and with FC_FN(name) appending the variant's suffix.  No
 * include guard on purpose.
 *
 * Both kernels run over a contiguous run of n elements: four vectors per step, then
 * single vectors, then one masked vector for the tail.  With `stream` (the caller
 * decides, out of place only) the output is written with non-temporal stores from its
 * first FCV_BYTES-aligned element on (a masked head reaches that alignment); they
 * skip the read-for-ownership of every output line, and are worth it only for outputs
 * that would not stay in cache.  Every element is computed by the same expression
 * whichever path writes it, so the result does not depend on alignment or on how the
 * caller cuts the run.
 */

/* y = max(0, x) elementwise (FCV_RELU: NaN stays NaN, -inf becomes 0); y may be x. */
FC_ATTR static inline void FC_FN(fc_relu_run)(const FC_T *x, FC_T *y, ptrdiff_t n,
                                               int stream) {
    ptrdiff_t i = 0;
    (void)stream;
#if FCV_L > 1
    if (stream && ((uintptr_t)y % sizeof(FC_T)) == 0) {
        const ptrdiff_t head = (ptrdiff_t)(((FCV_BYTES - ((uintptr_t)y % FCV_BYTES)) %
                                            FCV_BYTES) / sizeof(FC_T));
        if (head + FCV_L <= n) {
            if (head) FCV_STOREN(y, FCV_RELU(FCV_LOADN(x, head)), head);
            for (i = head; i + FCV_L <= n; i += FCV_L)
                FCV_STREAM(y + i, FCV_RELU(FCV_LOAD(x + i)));
            FCV_SFENCE();
        }
    }
#endif
    for (; i + 4 * FCV_L <= n; i += 4 * FCV_L) {
        FCV a = FCV_LOAD(x + i), b = FCV_LOAD(x + i + FCV_L);
        FCV c = FCV_LOAD(x + i + 2 * FCV_L), d = FCV_LOAD(x + i + 3 * FCV_L);
        FCV_STORE(y + i, FCV_RELU(a));
        FCV_STORE(y + i + FCV_L, FCV_RELU(b));
        FCV_STORE(y + i + 2 * FCV_L, FCV_RELU(c));
        FCV_STORE(y + i + 3 * FCV_L, FCV_RELU(d));
    }
    for (; i + FCV_L <= n; i += FCV_L)
        FCV_STORE(y + i, FCV_RELU(FCV_LOAD(x + i)));
#if FCV_L > 1
    if (i < n) FCV_STOREN(y + i, FCV_RELU(FCV_LOADN(x + i, n - i)), n - i);
#endif
}

/* dx = dy where f > 0, else +0 (FCV_PASS_POS: a NaN in f gives 0; a passed dy keeps
 * its bits).  dx may be dy or f. */
FC_ATTR static inline void FC_FN(fc_relu_grad_run)(const FC_T *f, const FC_T *dy, FC_T *dx,
                                                    ptrdiff_t n, int stream) {
    ptrdiff_t i = 0;
    (void)stream;
#if FCV_L > 1
    if (stream && ((uintptr_t)dx % sizeof(FC_T)) == 0) {
        const ptrdiff_t head = (ptrdiff_t)(((FCV_BYTES - ((uintptr_t)dx % FCV_BYTES)) %
                                            FCV_BYTES) / sizeof(FC_T));
        if (head + FCV_L <= n) {
            if (head)
                FCV_STOREN(dx, FCV_PASS_POS(FCV_LOADN(f, head), FCV_LOADN(dy, head)), head);
            for (i = head; i + FCV_L <= n; i += FCV_L)
                FCV_STREAM(dx + i, FCV_PASS_POS(FCV_LOAD(f + i), FCV_LOAD(dy + i)));
            FCV_SFENCE();
        }
    }
#endif
    for (; i + 4 * FCV_L <= n; i += 4 * FCV_L) {
        FCV a = FCV_PASS_POS(FCV_LOAD(f + i), FCV_LOAD(dy + i));
        FCV b = FCV_PASS_POS(FCV_LOAD(f + i + FCV_L), FCV_LOAD(dy + i + FCV_L));
        FCV c = FCV_PASS_POS(FCV_LOAD(f + i + 2 * FCV_L), FCV_LOAD(dy + i + 2 * FCV_L));
        FCV d = FCV_PASS_POS(FCV_LOAD(f + i + 3 * FCV_L), FCV_LOAD(dy + i + 3 * FCV_L));
        FCV_STORE(dx + i, a);
        FCV_STORE(dx + i + FCV_L, b);
        FCV_STORE(dx + i + 2 * FCV_L, c);
        FCV_STORE(dx + i + 3 * FCV_L, d);
    }
    for (; i + FCV_L <= n; i += FCV_L)
        FCV_STORE(dx + i, FCV_PASS_POS(FCV_LOAD(f + i), FCV_LOAD(dy + i)));
#if FCV_L > 1
    if (i < n)
        FCV_STOREN(dx + i, FCV_PASS_POS(FCV_LOADN(f + i, n - i), FCV_LOADN(dy + i, n - i)),
                   n - i);
#endif
}
