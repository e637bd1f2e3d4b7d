/* nn_cpu_conv.h — the CPU direct 3x3 convolution (stride 1, padding 1), included by nn_cpu.c once
 * per instruction set (AVX2+FMA and the baseline), CONV_FN(name) giving each copy its own names.
 * Not a header of its own: it uses nn_cpu.c's VF and CO.
 *
 * No im2col: one sample's input is copied once into zero-padded planes of (h + 2) rows of
 * wp = w + 2 floats; then output "virtual" pixel v = oy * wp + ox reads tap (ky, kx) at
 * xp[v + ky * wp + kx], so 2 VN consecutive virtual pixels are two contiguous vector loads per tap
 * whatever the row boundaries (the two virtual columns ox = w, w + 1 of each row are computed and
 * dropped: 2/(w + 2) of the work). Register tile: CO output channels x 2 VN pixels (CO = 12 with
 * AVX-512's 32 registers: 24 accumulators, 2 input loads and 12 weight broadcasts per tap and
 * input channel; 6 with AVX2's 16). Weights are packed per call as wk[co / CO][ci][tap][CO]
 * (zeros past cout), so the broadcasts of a tap are contiguous. Each output is one sum over (ci, ky, kx) in that order, whatever the batch. */

/* output channels [co0, co0 + CO) (the ones < cout stored) of sample b, from its padded planes */
static void CONV_FN(direct_block)(int cin, int h, int w, const float *xp, int64_t ps,
                                  const float *wk, int cout, int co0, const float *bias,
                                  int accumulate, float *y, int64_t n_out, int b)
{
    const int wp = w + 2;
    const int64_t nv = (int64_t)h * wp;     /* virtual pixels */
    for (int64_t v0 = 0; v0 < nv; v0 += 2 * VN) {
        VF a[CO][2];
        for (int c = 0; c < CO; c++) a[c][0] = a[c][1] = (VF){0};
        for (int ci = 0; ci < cin; ci++) {
            const float *xs = xp + ci * ps + v0;
            const float *wt = wk + (int64_t)ci * 9 * CO;
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++, wt += CO) {
                    const float *xt = xs + ky * wp + kx;
                    VF x0, x1;
                    memcpy(&x0, xt, sizeof x0);     /* unaligned loads */
                    memcpy(&x1, xt + VN, sizeof x1);
                    for (int c = 0; c < CO; c++) {
                        a[c][0] += wt[c] * x0;
                        a[c][1] += wt[c] * x1;
                    }
                }
        }
        /* the tile's valid pixels: virtual v -> (oy, ox), ox < w */
        for (int c = 0; c < CO && co0 + c < cout; c++) {
            float t[2 * VN];
            memcpy(t, &a[c][0], sizeof a[c][0]);
            memcpy(t + VN, &a[c][1], sizeof a[c][1]);
            const float bc = bias ? bias[co0 + c] : 0.0f;
            float *yc = y + (int64_t)(co0 + c) * n_out + (int64_t)b * h * w;
            /* runs of the tile along one row, the valid ones stored: y = (y + bias) + sum, the
             * im2col path's order */
            int oy = (int)(v0 / wp), ox = (int)(v0 % wp);
            const int n = nv - v0 < 2 * VN ? (int)(nv - v0) : 2 * VN;
            for (int i = 0; i < n;) {
                const int run = n - i < wp - ox ? n - i : wp - ox;
                const int valid = w - ox < run ? (w - ox > 0 ? w - ox : 0) : run;
                float *o = yc + (int64_t)oy * w + ox;
                if (accumulate)
                    for (int q = 0; q < valid; q++) o[q] = (o[q] + bc) + t[i + q];
                else
                    for (int q = 0; q < valid; q++) o[q] = bc + t[i + q];
                i += run;
                ox += run;
                if (ox == wp) {
                    ox = 0;
                    oy++;
                }
            }
        }
    }
}

/* Output channels [co0, co0 + CO) (the ones < cout stored) over columns [j0, j1) of a 1x1
 * convolution, a GEMM over CNHW's columns: y[co, j] = (y + bias) or bias, + sum_ci w[co, ci]
 * x[ci, j]. Register tile CO channels x 2 VN columns; the weights are broadcast from their rows
 * (CO sequential streams, no packing); the columns past the last whole tile one at a time, in the
 * same order of operations as a lane. */
static void CONV_FN(pointwise_block)(int cin, int64_t n, const float *x, const float *weight,
                                     int cout, int co0, const float *bias, int accumulate,
                                     float *y, int64_t j0, int64_t j1)
{
    const float *wr[CO];
    for (int c = 0; c < CO; c++)    /* rows past cout compute from row co0, never stored */
        wr[c] = weight + (int64_t)(co0 + c < cout ? co0 + c : co0) * cin;
    const int nc = cout - co0 < CO ? cout - co0 : CO;
    int64_t v0 = j0;
    for (; v0 + 2 * VN <= j1; v0 += 2 * VN) {
        VF a[CO][2];
        for (int c = 0; c < CO; c++) a[c][0] = a[c][1] = (VF){0};
        const float *xs = x + v0;
        for (int ci = 0; ci < cin; ci++, xs += n) {
            VF x0, x1;
            memcpy(&x0, xs, sizeof x0);
            memcpy(&x1, xs + VN, sizeof x1);
            for (int c = 0; c < CO; c++) {
                a[c][0] += wr[c][ci] * x0;
                a[c][1] += wr[c][ci] * x1;
            }
        }
        for (int c = 0; c < nc; c++) {
            float t[2 * VN];
            memcpy(t, &a[c][0], sizeof a[c][0]);
            memcpy(t + VN, &a[c][1], sizeof a[c][1]);
            const float bc = bias ? bias[co0 + c] : 0.0f;
            float *o = y + (int64_t)(co0 + c) * n + v0;
            if (accumulate)
                for (int q = 0; q < 2 * VN; q++) o[q] = (o[q] + bc) + t[q];
            else
                for (int q = 0; q < 2 * VN; q++) o[q] = bc + t[q];
        }
    }
    for (; v0 < j1; v0++)
        for (int c = 0; c < nc; c++) {
            float s = 0.0f;
            for (int ci = 0; ci < cin; ci++) s += wr[c][ci] * x[(int64_t)ci * n + v0];
            const float bc = bias ? bias[co0 + c] : 0.0f;
            float *o = y + (int64_t)(co0 + c) * n + v0;
            *o = (accumulate ? *o + bc : bc) + s;
        }
}
