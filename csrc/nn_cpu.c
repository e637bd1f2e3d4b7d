/* nn_cpu.c — the CPU implementation of nn.h: convolutions and attention as OpenBLAS sgemm calls
 * (im2col for k > 1), everything elementwise as OpenMP loops. Layout CNHW (see nn.h). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "nn.h"

/* an im2col tile narrower than this makes the GEMM inefficient */
enum { MIN_CONV_TILE = 256 };
/* parallel loops below this many elements run on one thread */
#define PAR_MIN (1 << 15)

int64_t ccfg_nn_conv2d_scratch(int cin, int k) { return (int64_t)cin * k * k * MIN_CONV_TILE; }

int64_t ccfg_nn_attention_scratch(int hw) { return (int64_t)hw * hw; }

static inline float silu1(float v) { return v / (1.0f + expf(-v)); }

/* col[r, j - j0] for output columns j in [j0, j0 + cols): r = (ci, ky, kx), zero outside */
static void im2col(int batch, int cin, int h, int w, const float *x, int k, int stride, int pad0,
                   int ho, int wo, int64_t j0, int64_t cols, float *col)
{
    const int64_t n_in = (int64_t)batch * h * w;
    const int K = cin * k * k;
    #pragma omp parallel for schedule(static) if ((int64_t)K * cols > PAR_MIN)
    for (int r = 0; r < K; r++) {
        const int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        const float *xc = x + ci * n_in;
        float *dst = col + (int64_t)r * cols;
        int64_t j = j0;
        int b = (int)(j / ((int64_t)ho * wo));
        int rem = (int)(j % ((int64_t)ho * wo));
        int oy = rem / wo, ox = rem % wo;
        for (int64_t t = 0; t < cols; t++) {
            const int iy = oy * stride + ky - pad0, ix = ox * stride + kx - pad0;
            dst[t] = (iy >= 0 && iy < h && ix >= 0 && ix < w)
                         ? xc[(int64_t)b * h * w + (int64_t)iy * w + ix] : 0.0f;
            if (++ox == wo) {
                ox = 0;
                if (++oy == ho) { oy = 0; b++; }
            }
        }
    }
}

static void cpu_conv2d(int batch, int cin, int h, int w, const float *x, int cout, int k,
                       int stride, int pad0, int pad1, const float *weight, const float *bias,
                       int accumulate, float *y, float *scratch, int64_t scratch_len)
{
    const int ho = (h + pad0 + pad1 - k) / stride + 1, wo = (w + pad0 + pad1 - k) / stride + 1;
    const int64_t n_out = (int64_t)batch * ho * wo;
    const int K = cin * k * k;
    /* bias first, then every GEMM accumulates (beta = 1) */
    #pragma omp parallel for schedule(static) if ((int64_t)cout * n_out > PAR_MIN)
    for (int co = 0; co < cout; co++) {
        float *row = y + co * n_out;
        const float b = bias ? bias[co] : 0.0f;
        if (!accumulate) for (int64_t j = 0; j < n_out; j++) row[j] = b;
        else if (b != 0.0f) for (int64_t j = 0; j < n_out; j++) row[j] += b;
    }
    if (k == 1 && stride == 1 && pad0 == 0 && pad1 == 0) {   /* 1x1: the GEMM alone */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)n_out, cin, 1.0f, weight,
                    cin, x, (int)n_out, 1.0f, y, (int)n_out);
        return;
    }
    int64_t tile = scratch_len / K;
    if (tile > n_out) tile = n_out;
    if (tile < 1) tile = 1;     /* the planner gives at least MIN_CONV_TILE */
    for (int64_t j0 = 0; j0 < n_out; j0 += tile) {
        const int64_t cols = n_out - j0 < tile ? n_out - j0 : tile;
        im2col(batch, cin, h, w, x, k, stride, pad0, ho, wo, j0, cols, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)cols, K, 1.0f, weight, K,
                    scratch, (int)cols, 1.0f, y + j0, (int)n_out);
    }
}

static void cpu_group_norm(int batch, int c, int hw, int groups, float eps, const float *x,
                           const float *in_bias, const float *gamma, const float *beta,
                           const float *film, int silu, float *y)
{
    const int cpg = c / groups;
    const int64_t n = (int64_t)batch * hw;
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)c * n > PAR_MIN)
    for (int b = 0; b < batch; b++) {
        for (int g = 0; g < groups; g++) {
            /* two passes in double: the mean, then the centred sum of squares */
            double sum = 0.0;
            for (int ci = g * cpg; ci < (g + 1) * cpg; ci++) {
                const float *xr = x + ci * n + (int64_t)b * hw;
                const float add = in_bias ? in_bias[(int64_t)b * c + ci] : 0.0f;
                double s = 0.0;
                #pragma omp simd reduction(+ : s)
                for (int p = 0; p < hw; p++) s += (double)(xr[p] + add);
                sum += s;
            }
            const double count = (double)cpg * hw, mean = sum / count;
            double ss = 0.0;
            for (int ci = g * cpg; ci < (g + 1) * cpg; ci++) {
                const float *xr = x + ci * n + (int64_t)b * hw;
                const float add = in_bias ? in_bias[(int64_t)b * c + ci] : 0.0f;
                double s = 0.0;
                #pragma omp simd reduction(+ : s)
                for (int p = 0; p < hw; p++) {
                    const double d = (double)(xr[p] + add) - mean;
                    s += d * d;
                }
                ss += s;
            }
            const double rstd = 1.0 / sqrt(ss / count + (double)eps);
            for (int ci = g * cpg; ci < (g + 1) * cpg; ci++) {
                const float *xr = x + ci * n + (int64_t)b * hw;
                float *yr = y + ci * n + (int64_t)b * hw;
                const float add = in_bias ? in_bias[(int64_t)b * c + ci] : 0.0f;
                /* v = (x + add - mean) * rstd * gamma + beta = x * a + d */
                float a = (float)(rstd * gamma[ci]);
                float d = (float)(((double)add - mean) * rstd * gamma[ci] + beta[ci]);
                if (film) {
                    const float sc = 1.0f + film[(int64_t)b * 2 * c + ci];
                    const float sh = film[(int64_t)b * 2 * c + c + ci];
                    a *= sc;
                    d = d * sc + sh;
                }
                if (silu)
                    for (int p = 0; p < hw; p++) yr[p] = silu1(xr[p] * a + d);
                else
                    for (int p = 0; p < hw; p++) yr[p] = xr[p] * a + d;
            }
        }
    }
}

static void cpu_silu(int64_t count, const float *x, float *y)
{
    #pragma omp parallel for schedule(static) if (count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) y[i] = silu1(x[i]);
}

static void cpu_linear(int rows, int in, int out, const float *x, const float *w, const float *bias,
                       int silu_in, float *y, float *scratch)
{
    if (silu_in) {
        cpu_silu((int64_t)rows * in, x, scratch);
        x = scratch;
    }
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) y[(int64_t)r * out + o] = bias ? bias[o] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 1.0f,
                y, out);
}

static void cpu_timestep_embedding(int batch, int dim, const double *t, int flip_sin_to_cos,
                                   float freq_shift, float *out)
{
    /* float32 arithmetic in torch's order, so the embedding matches diffusers' rounding */
    const int half = dim / 2;
    const float neg_log_period = (float)(-log(10000.0));
    for (int b = 0; b < batch; b++) {
        const float tb = (float)t[b];
        float *o = out + (int64_t)b * dim;
        for (int j = 0; j < half; j++) {
            const float e = (neg_log_period * (float)j) / ((float)half - freq_shift);
            const float a = tb * expf(e);
            const float s = sinf(a), c = cosf(a);
            o[j] = flip_sin_to_cos ? c : s;
            o[half + j] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

static void cpu_embedding_add(int batch, int dim, const float *table, const int32_t *index,
                              float *y)
{
    for (int b = 0; b < batch; b++) {
        const float *row = table + (int64_t)index[b] * dim;
        for (int j = 0; j < dim; j++) y[(int64_t)b * dim + j] += row[j];
    }
}

/* one (sample, head): S = Kᵀ Q scaled, softmax over keys, out = V Sᵀ */
static void attention_one(int64_t n, int hw, int d, float scale, const float *q, const float *k,
                          const float *v, float *out, float *s)
{
    /* s[i, j] = scale * <q_i, k_j> (row i = query pixel) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, scale, q, (int)n, k, (int)n,
                0.0f, s, hw);
    for (int i = 0; i < hw; i++) {
        float *row = s + (int64_t)i * hw, m = row[0], sum = 0.0f;
        for (int j = 1; j < hw; j++) m = row[j] > m ? row[j] : m;
        for (int j = 0; j < hw; j++) {
            row[j] = expf(row[j] - m);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < hw; j++) row[j] *= inv;
    }
    /* out[:, i] = sum_j v[:, j] s[i, j] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, 1.0f, v, (int)n, s, hw, 0.0f,
                out, (int)n);
}

static void cpu_attention(int batch, int hw, int heads, int head_dim, const float *qkv, float *out,
                          float *scratch, int64_t scratch_len)
{
    const int64_t n = (int64_t)batch * hw, inner = (int64_t)heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int pairs = batch * heads;
    const int64_t per = (int64_t)hw * hw;
    int slots = (int)(scratch_len / per);
    if (slots > omp_get_max_threads()) slots = omp_get_max_threads();
    if (slots < 1) slots = 1;
    /* small (sample, head) problems run side by side, one single-threaded sgemm each; large ones
     * one after the other with OpenBLAS threading inside */
    const int side_by_side = slots > 1 && per * head_dim < (1 << 22);
    #pragma omp parallel for schedule(dynamic) num_threads(slots) if (side_by_side)
    for (int p = 0; p < pairs; p++) {
        const int b = p / heads, h = p % heads;
        const int64_t off = (int64_t)b * hw;
        float *s = scratch + (side_by_side ? (int64_t)omp_get_thread_num() * per : 0);
        attention_one(n, hw, head_dim, scale, qkv + h * head_dim * n + off,
                      qkv + (inner + h * head_dim) * n + off,
                      qkv + (2 * inner + h * head_dim) * n + off, out + h * head_dim * n + off, s);
    }
}

static void cpu_upsample_nearest2x(int batch, int c, int h, int w, const float *x, float *y)
{
    const int64_t planes = (int64_t)c * batch;
    #pragma omp parallel for schedule(static) if (planes * h * w > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w;
        float *yp = y + p * 4 * h * w;
        for (int iy = 0; iy < h; iy++) {
            float *r0 = yp + (int64_t)(2 * iy) * 2 * w, *r1 = r0 + 2 * w;
            for (int ix = 0; ix < w; ix++) {
                const float v = xp[(int64_t)iy * w + ix];
                r0[2 * ix] = r0[2 * ix + 1] = v;
            }
            memcpy(r1, r0, (size_t)(2 * w) * sizeof(float));
        }
    }
}

static void cpu_copy(int64_t count, const float *x, float *y)
{
    if (count > 0 && x != y) memcpy(y, x, (size_t)count * sizeof(float));
}

static void cpu_scale(int64_t count, float a, float *x)
{
    #pragma omp parallel for schedule(static) if (count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) x[i] *= a;
}

static void cpu_nchw_to_cnhw(int batch, int c, int hw, const float *x, float mul, float add,
                             float *y)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)batch * c * hw > PAR_MIN)
    for (int ci = 0; ci < c; ci++)
        for (int b = 0; b < batch; b++) {
            const float *src = x + ((int64_t)b * c + ci) * hw;
            float *dst = y + ((int64_t)ci * batch + b) * hw;
            for (int p = 0; p < hw; p++) dst[p] = mul * src[p] + add;
        }
}

static void cpu_cnhw_to_nchw(int batch, int c, int hw, const float *x, float *y)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)batch * c * hw > PAR_MIN)
    for (int b = 0; b < batch; b++)
        for (int ci = 0; ci < c; ci++)
            memcpy(y + ((int64_t)b * c + ci) * hw, x + ((int64_t)ci * batch + b) * hw,
                   (size_t)hw * sizeof(float));
}

static const ccfg_nn_ops cpu_ops = {
    .name = "cpu",
    .conv2d = cpu_conv2d,
    .group_norm = cpu_group_norm,
    .linear = cpu_linear,
    .silu = cpu_silu,
    .timestep_embedding = cpu_timestep_embedding,
    .embedding_add = cpu_embedding_add,
    .attention = cpu_attention,
    .upsample_nearest2x = cpu_upsample_nearest2x,
    .copy = cpu_copy,
    .scale = cpu_scale,
    .nchw_to_cnhw = cpu_nchw_to_cnhw,
    .cnhw_to_nchw = cpu_cnhw_to_nchw,
};

const ccfg_nn_ops *ccfg_nn_ops_cpu(void) { return &cpu_ops; }
