/* nn_cpu_conv.h — the CPU 3x3 convolution kernels (stride 1, padding 1: direct, and Winograd
 * F(2x2,3x3) below) and the 1x1 tile, included by nn_cpu.c once per instruction set (AVX-512,
 * AVX2+FMA and the baseline), CONV_FN(name) giving each copy its own names.
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

/* Winograd F(2x2, 3x3) for stride 1, padding 1 (Lavin & Gray 2016, "Fast Algorithms for
 * Convolutional Neural Networks"): a 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A over the
 * tile's 4x4 input patch d, 16 products per input channel instead of 36. The three steps below
 * work on a block of WNV VN tile "columns" (lanes), the GEMM step being the direct kernel's
 * register tile shape (WCO output channels x WNV VN columns: 8 x 48 on AVX-512, exact for channel
 * counts that are multiples of 8; 6 x 16 otherwise) over the input channels of one of the 16
 * transform positions. Columns: the input of a group of samples is stored as four polyphase
 * planes per channel (nn_cpu.c pad_polyphase): plane (rp, cp) holds padded[2i + rp][2j + cp] for
 * i < hq, j < wq, samples one after the other, so tile (ty, tx) of a sample is column
 * ty * wq + tx of it and reads its patch entry (r, c) at column + (r >> 1) wq + (c >> 1) of plane
 * (r & 1, c & 1): contiguous vector loads whatever the rows (the column tx = wq - 1 of each row
 * and the row ty = hq - 1 of each sample are computed and dropped). Every column goes through the
 * same vector operations in the same order, wherever it falls, so a sample's result does not
 * depend on its batch. */

/* the polyphase planes of samples [b0, b0 + g) (see the Winograd note above): plane
 * (ci, phase = 2 rp + cp) at pp + (ci * 4 + phase) * pst holds, for sample bl, at bl * hq * wq +
 * i * wq + j, the zero-padded input's pixel (2i + rp, 2j + cp), i.e. x[ci, b0 + bl, 2i + rp - 1,
 * 2j + cp - 1] or 0 outside; zeros from g * hq * wq to pst (the last block's reads) */
static void CONV_FN(pad_polyphase)(int cin, int h, int w, const float *x, int64_t n_in, int b0,
                                   int g, int hq, int wq, int64_t pst, const float *ab, int silu,
                                   float *tmp, float *pp)
{
    const int64_t hwq = (int64_t)hq * wq, hw = (int64_t)h * w;
    for (int ci = 0; ci < cin; ci++) {
        for (int bl = 0; bl < g; bl++) {
            const float *src = x + ci * n_in + (int64_t)(b0 + bl) * hw;
            if (ab) {
                /* the folded GroupNorm(+SiLU) over the sample's plane into tmp (h w floats:
                 * stays in L1/L2 for the four phases below; one long loop that vectorises) */
                const int64_t at = 2 * ((int64_t)(b0 + bl) * cin + ci);
                const float a = ab[at], d = ab[at + 1];
                float *restrict tv = tmp;
                const float *restrict sv = src;
                if (silu) {
                    #pragma omp simd
                    for (int64_t p = 0; p < hw; p++) tv[p] = silu1(sv[p] * a + d);
                } else {
                    #pragma omp simd
                    for (int64_t p = 0; p < hw; p++) tv[p] = sv[p] * a + d;
                }
                src = tmp;
            }
            for (int ph = 0; ph < 4; ph++) {
                const int rp = ph >> 1, cp = ph & 1;
                float *pl = pp + (ci * 4 + ph) * pst + bl * hwq;
                for (int i = 0; i < hq; i++) {
                    float *restrict rw = pl + (int64_t)i * wq;
                    const int iy = 2 * i + rp - 1;
                    if (iy < 0 || iy >= h) {
                        memset(rw, 0, (size_t)wq * sizeof(float));
                        continue;
                    }
                    const float *restrict sr = src + (int64_t)iy * w;
                    /* column j reads ix = 2j + cp - 1: j = 0 is padding when cp = 0; a plain
                     * strided copy in between (vectorised), the edges apart */
                    if (cp == 0) {
                        rw[0] = 0.0f;
                        for (int j = 1; j <= w / 2; j++) rw[j] = sr[2 * j - 1];
                        for (int j = w / 2 + 1; j < wq; j++) rw[j] = 0.0f;
                    } else {
                        for (int j = 0; j < (w + 1) / 2; j++) rw[j] = sr[2 * j];
                        for (int j = (w + 1) / 2; j < wq; j++) rw[j] = 0.0f;
                    }
                }
            }
        }
        for (int ph = 0; ph < 4; ph++) {
            float *pl = pp + (ci * 4 + ph) * pst;
            memset(pl + g * hwq, 0, (size_t)(pst - g * hwq) * sizeof(float));
        }
    }
}

/* V[pos][ci][0 .. WNV VN) = (B^T d B)[pos] for the WNV VN columns from g0 of the planes pp (plane
 * (ci, phase) at pp + (ci * 4 + phase) * pst) */
static void CONV_FN(wino_input)(int cin, const float *pp, int64_t pst, int wq, int64_t g0,
                                float *V)
{
    const int64_t vs = (int64_t)cin * WNV * VN;    /* one position's block of V */
    for (int ci = 0; ci < cin; ci++)
        for (int k = 0; k < WNV; k++) {
            VF d[4][4], t[4][4];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) {
                    const float *src = pp + (ci * 4 + (r & 1) * 2 + (c & 1)) * pst + g0 + k * VN
                                       + (r >> 1) * wq + (c >> 1);
                    memcpy(&d[r][c], src, sizeof d[r][c]);
                }
            for (int c = 0; c < 4; c++) {       /* B^T d: rows */
                t[0][c] = d[0][c] - d[2][c];
                t[1][c] = d[1][c] + d[2][c];
                t[2][c] = d[2][c] - d[1][c];
                t[3][c] = d[1][c] - d[3][c];
            }
            float *o = V + (int64_t)ci * WNV * VN + k * VN;
            for (int r = 0; r < 4; r++) {       /* (B^T d) B: columns */
                const VF v0 = t[r][0] - t[r][2], v1 = t[r][1] + t[r][2];
                const VF v2 = t[r][2] - t[r][1], v3 = t[r][1] - t[r][3];
                memcpy(o + (r * 4 + 0) * vs, &v0, sizeof v0);
                memcpy(o + (r * 4 + 1) * vs, &v1, sizeof v1);
                memcpy(o + (r * 4 + 2) * vs, &v2, sizeof v2);
                memcpy(o + (r * 4 + 3) * vs, &v3, sizeof v3);
            }
        }
}

/* M[pos][c][0 .. WNV VN) = sum_ci U[pos][ci][c] V[pos][ci][.] for the WCO channels of one tile;
 * U: this tile's packed weights of position 0, position p at U + p * ustride (WCO floats per ci) */
static void CONV_FN(wino_gemm)(int cin, const float *V, const float *U, int64_t ustride, float *M)
{
    const int64_t vs = (int64_t)cin * WNV * VN;
    for (int pos = 0; pos < 16; pos++) {
        VF a[WCO][WNV];
        for (int c = 0; c < WCO; c++)
            for (int k = 0; k < WNV; k++) a[c][k] = (VF){0};
        const float *vp = V + pos * vs, *wt = U + pos * ustride;
        for (int ci = 0; ci < cin; ci++, vp += WNV * VN, wt += WCO) {
            VF xv[WNV];
            for (int k = 0; k < WNV; k++) memcpy(&xv[k], vp + k * VN, sizeof xv[k]);
            for (int c = 0; c < WCO; c++)
                for (int k = 0; k < WNV; k++) a[c][k] += wt[c] * xv[k];
        }
        float *m = M + pos * WCO * WNV * VN;
        for (int c = 0; c < WCO; c++)
            for (int k = 0; k < WNV; k++) memcpy(m + (c * WNV + k) * VN, &a[c][k], sizeof a[c][k]);
    }
}

/* the 2x2 outputs A^T M A of channel c's columns into t[4][WNV VN] (y00, y01, y10, y11) */
static void CONV_FN(wino_output)(const float *M, int c, float *t)
{
    for (int k = 0; k < WNV; k++) {
        VF m[16];
        for (int pos = 0; pos < 16; pos++)
            memcpy(&m[pos], M + ((pos * WCO + c) * WNV + k) * VN, sizeof m[pos]);
        VF s0[4], s1[4];
        for (int j = 0; j < 4; j++) {           /* A^T M: rows */
            s0[j] = m[j] + m[4 + j] + m[8 + j];
            s1[j] = m[4 + j] - m[8 + j] - m[12 + j];
        }
        const VF y00 = s0[0] + s0[1] + s0[2], y01 = s0[1] - s0[2] - s0[3];
        const VF y10 = s1[0] + s1[1] + s1[2], y11 = s1[1] - s1[2] - s1[3];
        memcpy(t + 0 * WNV * VN + k * VN, &y00, sizeof y00);
        memcpy(t + 1 * WNV * VN + k * VN, &y01, sizeof y01);
        memcpy(t + 2 * WNV * VN + k * VN, &y10, sizeof y10);
        memcpy(t + 3 * WNV * VN + k * VN, &y11, sizeof y11);
    }
}

/* lanes 0 .. VN/2 - 1 of two vectors interleaved (a0 b0 a1 b1 ...); clang (the fuzz build) has
 * __builtin_shufflevector with the indices as arguments, GCC __builtin_shuffle with a mask */
#if VN == 16
#define WINO_ZIP_IDX 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#else
#define WINO_ZIP_IDX 0, 8, 1, 9, 2, 10, 3, 11
#endif
#ifdef __clang__
#define WINO_ZIP(a, b) __builtin_shufflevector(a, b, WINO_ZIP_IDX)
#else
typedef int32_t CONV_FN(vint) __attribute__((vector_size(sizeof(VF))));
#define WINO_ZIP(a, b) __builtin_shuffle(a, b, (CONV_FN(vint)){WINO_ZIP_IDX})
#endif

/* the valid tiles of columns [g0, g0 + n) (t: y00, y01, y10, y11 rows of cb floats) into output
 * channel plane yc: y = (y + bias) + v, or bias + v (the direct path's order) */
static void CONV_FN(wino_store)(const float *t, int cb, int64_t g0, int n, int hq, int wq, int h, int w,
                       int b0, float bc, int accumulate, float *restrict yc)
{
    const int64_t hwq = (int64_t)hq * wq;
    for (int q = 0; q < n;) {
        const int64_t g = g0 + q;
        const int bl = (int)(g / hwq), vt = (int)(g % hwq), ty = vt / wq, tx = vt % wq;
        int run = wq - tx;
        if (run > n - q) run = n - q;
        const int valid = tx + run > wq - 1 ? wq - 1 - tx : run;    /* drop column wq - 1 */
        if (ty < hq - 1 && valid > 0) {
            const int oy = 2 * ty, ox = 2 * tx;
            const int full = ox + 2 * valid > w ? valid - 1 : valid;  /* odd w: half a tile */
            float *restrict o = yc + (int64_t)(b0 + bl) * h * w + (int64_t)oy * w + ox;
            for (int i = 0; i < 2 && oy + i < h; i++, o += w) {
                const float *restrict ta = t + (2 * i) * cb + q;
                const float *restrict tb = t + (2 * i + 1) * cb + q;
                /* VN / 2 tiles at a time: their two columns interleaved into one vector
                 * (t rows have VN floats of slack for the loads past the run) */
                int k = 0;
                for (; k + VN / 2 <= full; k += VN / 2) {
                    VF va, vb, v;
                    memcpy(&va, ta + k, sizeof va);
                    memcpy(&vb, tb + k, sizeof vb);
                    v = WINO_ZIP(va, vb);
                    if (accumulate) {
                        VF ov;
                        memcpy(&ov, o + 2 * k, sizeof ov);
                        v = (ov + bc) + v;
                    } else {
                        v = bc + v;
                    }
                    memcpy(o + 2 * k, &v, sizeof v);
                }
                if (accumulate) {
                    for (; k < full; k++) {
                        o[2 * k] = (o[2 * k] + bc) + ta[k];
                        o[2 * k + 1] = (o[2 * k + 1] + bc) + tb[k];
                    }
                    if (full < valid) o[2 * full] = (o[2 * full] + bc) + ta[full];
                } else {
                    for (; k < full; k++) {
                        o[2 * k] = bc + ta[k];
                        o[2 * k + 1] = bc + tb[k];
                    }
                    if (full < valid) o[2 * full] = bc + ta[full];
                }
            }
        }
        q += run;
    }
}
#undef WINO_ZIP_IDX
#undef WINO_ZIP
