/* nn.h — the neural-network ops a diffusers UNet2DModel is made of, one function per op.
 *
 * Layout: every activation is channel-major over the whole batch, "CNHW": element (c, b, y, x) of
 * a tensor with B samples of H x W pixels sits at  c*(B*H*W) + b*(H*W) + y*W + x. A convolution is
 * then one GEMM over all B*H*W columns (a 1x1 convolution is the GEMM alone), skip concatenation
 * along channels is two contiguous copies and a per-head attention slice is a sub-matrix.
 * Only the model boundary (input, output) is NCHW.
 *
 * A backend implements the whole table (nn_cpu.c: OpenBLAS sgemm + OpenMP loops). The pointers are
 * the backend's memory (host memory on the CPU). Ops never allocate: callers pass scratch sized by
 * the *_scratch helpers. Scratch of conv2d and attention is split between threads, so more scratch
 * means more parallel tiles. */
#ifndef CCFG_NN_H
#define CCFG_NN_H

#include <stdint.h>

typedef struct ccfg_nn_ops {
    const char *name;
    /* around each forward: the CPU pins OpenBLAS to one thread (its loops thread the GEMMs
     * themselves); a GPU backend would open and submit its command buffer */
    void (*begin)(void);
    void (*end)(void);
    /* 2-D convolution, kernel k x k (k odd or even), stride s, zero padding pad0 before and pad1
     * after each spatial dimension (diffusers' Downsample2D with padding 0 pads (0, 1)):
     *   y[co, b, oy, ox] = (accumulate ? y : 0) + bias[co]
     *                      + sum_{ci,ky,kx} w[co, ci, ky, kx] x[ci, b, oy*s + ky - pad0, ox*s + kx - pad0]
     * Output size ho = (h + pad0 + pad1 - k) / s + 1 (likewise wo). w: (cout, cin, k, k) as stored
     * by PyTorch; bias may be NULL. scratch: scratch_len floats, at least ccfg_nn_conv2d_scratch(). */
    void (*conv2d)(int batch, int cin, int h, int w, const float *x, int cout, int k, int stride,
                   int pad0, int pad1, const float *weight, const float *bias, int accumulate,
                   float *y, float *scratch, int64_t scratch_len);
    /* GroupNorm over (channels of the group, h*w) per sample, then optional FiLM and SiLU:
     *   v = x + in_bias[b, c]                      (in_bias (batch, c) or NULL: ResNet time bias)
     *   v = (v - mean) / sqrt(var + eps) * gamma[c] + beta[c]   (biased variance, as torch)
     *   v = v * (1 + film[b, c]) + film[b, c + c_total]          (film (batch, 2c) or NULL)
     *   y = silu ? v * sigmoid(v) : v                            (y may alias x) */
    void (*group_norm)(int batch, int c, int hw, int groups, float eps, const float *x,
                       const float *in_bias, const float *gamma, const float *beta,
                       const float *film, int silu, float *y);
    /* y[r, o] = bias[o] + sum_i x[r, i] w[o, i]; x (rows, in), w (out, in), y (rows, out) row-major;
     * silu_in applies SiLU to x first (x is not modified; scratch rows*in floats, or NULL if not) */
    void (*linear)(int rows, int in, int out, const float *x, const float *w, const float *bias,
                   int silu_in, float *y, float *scratch);
    /* y = x * sigmoid(x) elementwise (y may alias x) */
    void (*silu)(int64_t count, const float *x, float *y);
    /* diffusers' get_timestep_embedding in float32, as torch computes it:
     *   f_j = exp(-ln(10000) j / (dim/2 - freq_shift)), a = t_b f_j, out[b] = [sin a, cos a]
     *   ([cos a, sin a] when flip_sin_to_cos; a zero last column when dim is odd). out (batch, dim) */
    void (*timestep_embedding)(int batch, int dim, const double *t, int flip_sin_to_cos,
                               float freq_shift, float *out);
    /* y[b, :] += table[index[b], :]  (class embedding added to the time embedding) */
    void (*embedding_add)(int batch, int dim, const float *table, const int32_t *index, float *y);
    /* multi-head self-attention over the hw pixels of each sample (softmax in float32):
     *   qkv: (3*heads*head_dim, batch*hw) CNHW rows = [q heads | k heads | v heads]
     *   out: (heads*head_dim, batch*hw), out_h = V_h softmax(K_hᵀ Q_h / sqrt(head_dim))
     * scratch: scratch_len floats, at least ccfg_nn_attention_scratch(hw) (more lets several
     * (sample, head) pairs run at once) */
    void (*attention)(int batch, int hw, int heads, int head_dim, const float *qkv, float *out,
                      float *scratch, int64_t scratch_len);
    /* nearest-neighbour 2x upsampling: y (c, batch, 2h, 2w) from x (c, batch, h, w) */
    void (*upsample_nearest2x)(int batch, int c, int h, int w, const float *x, float *y);
    /* y = x (count floats; skip concatenation along channels is two of these in CNHW) */
    void (*copy)(int64_t count, const float *x, float *y);
    /* x *= a */
    void (*scale)(int64_t count, float a, float *x);
    /* layout at the model boundary: NCHW (batch, c, hw) <-> CNHW (c, batch, hw); a = 2x - 1 style
     * affine on the way in (center_input_sample): y = mul * x + add */
    void (*nchw_to_cnhw)(int batch, int c, int hw, const float *x, float mul, float add, float *y);
    void (*cnhw_to_nchw)(int batch, int c, int hw, const float *x, float *y);
} ccfg_nn_ops;

const ccfg_nn_ops *ccfg_nn_ops_cpu(void);

/* floats of scratch conv2d wants per thread for images w pixels wide (one cache-sized tile of
 * output rows; less than one row per thread would be an error) */
int64_t ccfg_nn_conv2d_scratch(int cin, int k, int w);
/* floats of scratch attention needs at the least (one score matrix) */
int64_t ccfg_nn_attention_scratch(int hw);

#endif /* CCFG_NN_H */
