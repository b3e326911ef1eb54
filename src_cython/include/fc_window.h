/* Which taps of a sliding window fall inside the input.
 *
 * Along one axis a window starts at `start` (= out_index * stride - pad_before,
 * possibly negative) and has taps start + k*d for 0 <= k < K.  The taps inside
 * [0, size) form one contiguous range of k, [fc_first_tap, fc_end_tap), found
 * here with integer arithmetic so that kernels never test taps one by one.
 */
#ifndef FASTCONV_FC_WINDOW_H
#define FASTCONV_FC_WINDOW_H

#include <stddef.h>

/* First tap index k with start + k*d >= 0 (may be >= K: no tap inside). */
static inline int fc_first_tap(ptrdiff_t start, int d) {
    return start >= 0 ? 0 : (int)((-start + d - 1) / d);
}

/* One past the last tap index k < K with start + k*d < size. */
static inline int fc_end_tap(ptrdiff_t start, int d, int K, ptrdiff_t size) {
    if (start > size - 1) return 0;
    ptrdiff_t end = (size - 1 - start) / d + 1;
    return end < K ? (int)end : K;
}

/* Rows (independent work items) per interruptible chunk: about `work` operations
 * when one row costs `row_work`, a multiple of `team` threads (at least `team`),
 * never more than `rows`; all `rows` when `work` <= 0.  A kernel runs its rows
 * chunk by chunk and looks for a pending signal (Ctrl-C) between chunks; a chunk
 * only groups whole rows, so the chunking never changes a result. */
static inline ptrdiff_t fc_rows_per_chunk(ptrdiff_t rows, double row_work, double work,
                                          int team) {
    if (work <= 0 || rows <= 0) return rows > 0 ? rows : 1;
    if (team < 1) team = 1;
    double per = row_work > 1.0 ? work / row_work : work;
    ptrdiff_t step = per >= (double)rows ? rows : (ptrdiff_t)per;
    step = step / team * team;
    if (step < team) step = team;
    return step < rows ? step : rows;
}

#endif
