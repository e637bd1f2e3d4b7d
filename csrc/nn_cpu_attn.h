/* nn_cpu_attn.h — the CPU attention kernel, flash-style; included by nn_cpu.c once per instruction
 * set (AVX2+FMA and the baseline), ATTN_FN(name) giving each copy its own names. Not a header of
 * its own: it uses nn_cpu.c's exp_fast, VF, ATTN_QB and ATTN_KB.
 *
 * One call computes ATTN_QB queries of one (sample, head) against all nk keys. The layout is
 * CNHW's: row c of q, k, v is channel c, tokens contiguous along it, so a query block's scores
 * are kept transposed, st[j][i] (key j, query i): then queries lie along the vector lanes and the
 * whole online softmax is lane-wise (a running max m[i] and sum l[i] per query, no horizontal
 * reductions), and both products are broadcast-FMA loops over contiguous rows:
 *   st[j][i] = sum_c k[c][j] * qs[c][i]          (qs: the query block times 1/sqrt(d))
 *   o[c][i]  = o[c][i] * alpha[i] + sum_j v[c][j] * p[j][i]
 * Keys go in blocks of ATTN_KB so that st (ATTN_KB x ATTN_QB floats, 32 KiB) stays in L1/L2; the
 * block's k and v rows are read once per query block. Per thread: ws of ATTN_QB * (2d + ATTN_KB)
 * + ATTN_KB * d floats, 64-byte aligned (ccfg_nn_attention_scratch); 64-byte aligned. */

/* st[j][0..QB) for the keys [0, jn4) of the block (jn4 a multiple of 4; keys past the block's
 * end are zeros in kp and their scores are never read): 4 keys x 2 vectors of queries per register
 * tile. kp: the block's keys packed in groups of 4, kp[(j/4) * 4d + 4c + j%4] = k[c][j],
 * so that the tile reads them contiguously (unpacked, a head's d rows lie batch*nk floats apart:
 * at SD's 2 x 4096 tokens, 32 KiB, all on one L1 set) */
static inline void ATTN_FN(scores)(int d, int jn4, const float *qs, const float *kp, float *st)
{
    for (int j = 0; j < jn4; j += 4)
        for (int sub = 0; sub < ATTN_QB; sub += 2 * VN) {
            VF a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0},
                a31 = {0};
            const float *kc = kp + (int64_t)j * d;
            for (int c = 0; c < d; c++, kc += 4) {
                const VF q0 = *(const VF *)(qs + c * ATTN_QB + sub);
                const VF q1 = *(const VF *)(qs + c * ATTN_QB + sub + VN);
                const float k0 = kc[0], k1 = kc[1], k2 = kc[2], k3 = kc[3];
                a00 += k0 * q0;
                a01 += k0 * q1;
                a10 += k1 * q0;
                a11 += k1 * q1;
                a20 += k2 * q0;
                a21 += k2 * q1;
                a30 += k3 * q0;
                a31 += k3 * q1;
            }
            float *s = st + (int64_t)j * ATTN_QB + sub;
            *(VF *)(s) = a00;
            *(VF *)(s + VN) = a01;
            *(VF *)(s + ATTN_QB) = a10;
            *(VF *)(s + ATTN_QB + VN) = a11;
            *(VF *)(s + 2 * ATTN_QB) = a20;
            *(VF *)(s + 2 * ATTN_QB + VN) = a21;
            *(VF *)(s + 3 * ATTN_QB) = a30;
            *(VF *)(s + 3 * ATTN_QB + VN) = a31;
        }
}

/* o[c][i] = o[c][i] * alpha[i] + sum_{j < jn} v[c][j] p[j][i]: 4 channels x 2 vectors of queries per tile */
static inline void ATTN_FN(accumulate)(int d, int jn, const float *p, const float *v, int64_t nks,
                                       const float *alpha, float *o)
{
    int c = 0;
    for (; c + 4 <= d; c += 4)
        for (int sub = 0; sub < ATTN_QB; sub += 2 * VN) {
            const VF al0 = *(const VF *)(alpha + sub), al1 = *(const VF *)(alpha + sub + VN);
            float *o0 = o + c * ATTN_QB + sub;
            VF a00 = *(VF *)(o0) * al0, a01 = *(VF *)(o0 + VN) * al1;
            VF a10 = *(VF *)(o0 + ATTN_QB) * al0, a11 = *(VF *)(o0 + ATTN_QB + VN) * al1;
            VF a20 = *(VF *)(o0 + 2 * ATTN_QB) * al0, a21 = *(VF *)(o0 + 2 * ATTN_QB + VN) * al1;
            VF a30 = *(VF *)(o0 + 3 * ATTN_QB) * al0, a31 = *(VF *)(o0 + 3 * ATTN_QB + VN) * al1;
            const float *v0 = v + c * nks, *v1 = v0 + nks, *v2 = v1 + nks, *v3 = v2 + nks;
            for (int j = 0; j < jn; j++) {
                const VF p0 = *(const VF *)(p + (int64_t)j * ATTN_QB + sub);
                const VF p1 = *(const VF *)(p + (int64_t)j * ATTN_QB + sub + VN);
                a00 += v0[j] * p0;
                a01 += v0[j] * p1;
                a10 += v1[j] * p0;
                a11 += v1[j] * p1;
                a20 += v2[j] * p0;
                a21 += v2[j] * p1;
                a30 += v3[j] * p0;
                a31 += v3[j] * p1;
            }
            *(VF *)(o0) = a00;
            *(VF *)(o0 + VN) = a01;
            *(VF *)(o0 + ATTN_QB) = a10;
            *(VF *)(o0 + ATTN_QB + VN) = a11;
            *(VF *)(o0 + 2 * ATTN_QB) = a20;
            *(VF *)(o0 + 2 * ATTN_QB + VN) = a21;
            *(VF *)(o0 + 3 * ATTN_QB) = a30;
            *(VF *)(o0 + 3 * ATTN_QB + VN) = a31;
        }
    for (; c < d; c++)      /* the last channels, one at a time */
        for (int sub = 0; sub < ATTN_QB; sub += 2 * VN) {
            float *o0 = o + c * ATTN_QB + sub;
            VF a0 = *(VF *)(o0) * *(const VF *)(alpha + sub);
            VF a1 = *(VF *)(o0 + VN) * *(const VF *)(alpha + sub + VN);
            const float *vc = v + c * nks;
            for (int j = 0; j < jn; j++) {
                a0 += vc[j] * *(const VF *)(p + (int64_t)j * ATTN_QB + sub);
                a1 += vc[j] * *(const VF *)(p + (int64_t)j * ATTN_QB + sub + VN);
            }
            *(VF *)(o0) = a0;
            *(VF *)(o0 + VN) = a1;
        }
}

/* queries [0, qn) (qn <= ATTN_QB) of one (sample, head): q and out rows strided by nqs floats, k
 * and v rows by nks; ws: ATTN_QB * (2d + ATTN_KB) floats, 64-byte aligned */
static void ATTN_FN(query_block)(int d, int qn, int nk, float scale, const float *q, int64_t nqs,
                                 const float *k, const float *v, int64_t nks, float *out,
                                 float *ws)
{
    float *qs = ws, *o = ws + (int64_t)d * ATTN_QB, *st = o + (int64_t)d * ATTN_QB;
    float *kp = st + (int64_t)ATTN_KB * ATTN_QB;
    float m[ATTN_QB] __attribute__((aligned(64))), l[ATTN_QB] __attribute__((aligned(64)));
    float alpha[ATTN_QB] __attribute__((aligned(64)));
    for (int c = 0; c < d; c++) {
        const float *qc = q + c * nqs;
        float *qd = qs + c * ATTN_QB;
        for (int i = 0; i < qn; i++) qd[i] = qc[i] * scale;
        for (int i = qn; i < ATTN_QB; i++) qd[i] = 0.0f;     /* padding lanes: finite, unused */
    }
    memset(o, 0, (size_t)d * ATTN_QB * sizeof(float));
    for (int i = 0; i < ATTN_QB; i++) {
        m[i] = -INFINITY;      /* the first block's alpha = exp(-inf) = 0 (exp_fast: 1.7e-38) */
        l[i] = 0.0f;
    }
    for (int j0 = 0; j0 < nk; j0 += ATTN_KB) {
        const int jn = nk - j0 < ATTN_KB ? nk - j0 : ATTN_KB;
        const int jn4 = (jn + 3) & ~3;
        for (int c = 0; c < d; c++) {   /* whole groups of 4 as one 16-byte move each */
            const float *kc = k + c * nks + j0;
            float *kd = kp + 4 * c;
            int j = 0;
            for (; j + 4 <= jn; j += 4, kd += 4 * d) memcpy(kd, kc + j, 4 * sizeof(float));
            for (int jj = 0; j < jn4; j++, jj++) kd[jj] = j < jn ? kc[j] : 0.0f;
        }
        ATTN_FN(scores)(d, jn4, qs, kp, st);
        /* online softmax, lane-wise: new running max, the factor for what was accumulated under
         * the old one, p = exp(s - max) in place, and the running sum */
        float mx[ATTN_QB] __attribute__((aligned(64))), sum[ATTN_QB] __attribute__((aligned(64)));
        for (int i = 0; i < ATTN_QB; i++) mx[i] = m[i];
        for (int j = 0; j < jn; j++) {
            const float *s = st + (int64_t)j * ATTN_QB;
            #pragma omp simd
            for (int i = 0; i < ATTN_QB; i++) mx[i] = s[i] > mx[i] ? s[i] : mx[i];
        }
        #pragma omp simd
        for (int i = 0; i < ATTN_QB; i++) {
            alpha[i] = exp_fast(m[i] - mx[i]);
            m[i] = mx[i];
            sum[i] = 0.0f;
        }
        for (int j = 0; j < jn; j++) {
            float *s = st + (int64_t)j * ATTN_QB;
            #pragma omp simd
            for (int i = 0; i < ATTN_QB; i++) {
                s[i] = exp_fast(s[i] - mx[i]);
                sum[i] += s[i];
            }
        }
        #pragma omp simd
        for (int i = 0; i < ATTN_QB; i++) l[i] = l[i] * alpha[i] + sum[i];
        ATTN_FN(accumulate)(d, jn, st, v + j0, nks, alpha, o);
    }
    for (int i = 0; i < ATTN_QB; i++) l[i] = 1.0f / l[i];
    for (int c = 0; c < d; c++) {
        float *oc = out + c * nqs;
        const float *os = o + c * ATTN_QB;
        for (int i = 0; i < qn; i++) oc[i] = os[i] * l[i];
    }
}
