/* nn.h — the neural-network ops a diffusers UNet2DModel is made of, one function per op.
 *
 * Layout: every activation is channel-major over the whole batch, "CNHW": element (c, b, y, x) of
 * a tensor with B samples of H x W pixels sits at  c*(B*H*W) + b*(H*W) + y*W + x. A convolution is
 * then one GEMM over all B*H*W columns (a 1x1 convolution is the GEMM alone), skip concatenation
 * along channels is two contiguous copies and a per-head attention slice is a sub-matrix.
 * Only the model boundary (input, output) is NCHW.
 *
 * A backend implements the whole table and hands it out as be->nn (nn_cpu.c: OpenBLAS sgemm +
 * OpenMP loops; nn_vk.c: compute shaders recorded into the device's command buffer). Calling
 * convention: every op takes the backend it runs on first (`be`; the CPU table also accepts NULL) and returns a ccfg status (CCFG_OK, or an error already reported
 * through ccfg_fail). Float pointers are the backend's memory (host memory on the CPU, device
 * addresses from be->alloc on Vulkan); the per-sample inputs t (timestep_embedding) and index
 * (embedding_add) are host arrays on every backend. Callers pass the ops' scratch, sized by the
 * *_scratch helpers; the Vulkan table ignores it (its group_norm and long attention keep a few
 * floats per group or query in device memory of their own, freed after the batch that uses
 * them). Scratch of conv2d and attention is split between threads, so more scratch means more
 * parallel tiles. A Vulkan op only records work: results are there after be->sync (or a
 * download). */
#ifndef CCFG_NN_H
#define CCFG_NN_H

#include <stdint.h>

#include "ccfg.h"

typedef struct ccfg_nn_ops {
    const char *name;
    /* 1: conv2d and attention work in the caller's scratch (split between host threads);
     * 0: the kernels tile on their own and ignore it */
    int uses_scratch;
    /* around each forward: the CPU pins OpenBLAS to one thread (its loops thread the GEMMs
     * themselves); a GPU backend would open and submit its command buffer */
    int (*begin)(const ccfg_backend *be);
    int (*end)(const ccfg_backend *be);
    /* 2-D convolution, kernel k x k (k odd or even), stride s, zero padding pad0 before and pad1
     * after each spatial dimension (diffusers' Downsample2D with padding 0 pads (0, 1)):
     *   y[co, b, oy, ox] = (accumulate ? y : 0) + bias[co]
     *                      + sum_{ci,ky,kx} w[co, ci, ky, kx] x[ci, b, oy*s + ky - pad0, ox*s + kx - pad0]
     * Output size ho = (h + pad0 + pad1 - k) / s + 1 (likewise wo). w: (cout, cin, k, k) as stored
     * by PyTorch; bias may be NULL. scratch: scratch_len floats, ccfg_nn_conv2d_scratch() on the CPU
     * (less: slower paths; a layer left to im2col with less than one output row of cin k k wo
     * floats is refused). */
    int (*conv2d)(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                  int cout, int k, int stride, int pad0, int pad1, const float *weight,
                  const float *bias, int accumulate, float *y, float *scratch, int64_t scratch_len);
    /* Optional (NULL where a backend has none): weights pre-packed once, when a model is placed,
     * in the layout the backend's convolution reads (the CPU: Winograd-transformed 3x3 filters;
     * Vulkan in half precision: the float16 weights of every layer its tiled shaders run),
     * instead of repacking them on every call.
     * conv2d_packed_len: floats the packed form of this layer takes on be *as be is configured
     * now*, 0 if the layer has none. It may change while a model is placed (Vulkan: the device's
     * precision), so a caller that keeps packed forms compares it with the length it packed
     * before each use, and packs again if they differ (unet.c repack_if_stale);
     * conv2d_pack: writes it to `packed` (backend memory of that many floats);
     * conv2d_packed: conv2d (same arguments and result) reading `packed`, the output of
     * conv2d_pack for the same layer on the same backend in this process, with the same
     * conv2d_packed_len since (NULL: as conv2d). A layer that has no packed form now refuses a
     * non-NULL `packed`. */
    int64_t (*conv2d_packed_len)(const ccfg_backend *be, int cin, int cout, int k, int stride,
                                 int pad0, int pad1);
    int (*conv2d_pack)(const ccfg_backend *be, int cin, int cout, int k, int stride, int pad0,
                       int pad1, const float *weight, float *packed);
    int (*conv2d_packed)(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                         int cout, int k, int stride, int pad0, int pad1, const float *weight,
                         const float *packed, const float *bias, int accumulate, float *y,
                         float *scratch, int64_t scratch_len);
    /* Optional (NULL where a backend has none; the CPU): conv2d_packed (packed may be NULL: as
     * conv2d) adding a residual input in its epilogue instead of accumulating onto y:
     *   y[co, b, oy, ox] = (bias[co] + sum ...) + residual[co, b, oy, ox]
     * residual: like y (cout, batch, ho, wo), an array that does not overlap y, or y itself (then
     * this is accumulate). The result is bit for bit that of copying residual into y and
     * accumulating onto it, without the copy's pass over memory (a resnet's skip connection). */
    int (*conv2d_residual)(const ccfg_backend *be, int batch, int cin, int h, int w,
                           const float *x, int cout, int k, int stride, int pad0, int pad1,
                           const float *weight, const float *packed, const float *bias,
                           const float *residual, float *y, float *scratch, int64_t scratch_len);
    /* Optional (NULL where a backend has none): a GroupNorm(+SiLU) folded into the convolution
     * that reads its output, the normalised tensor never written (the CPU: stride-1 3x3 layers
     * with packed Winograd weights; Vulkan: its tiled float32 and float16 shaders).
     * group_norm_affine: group_norm's arguments, but instead of y it writes the (a, d) per sample
     * b and channel ci with which group_norm computes v = x * a + d before its SiLU, to
     * ab[2 (b c + ci)] and ab[2 (b c + ci) + 1] (ab: 2 batch c floats);
     * conv2d_packed_norm: conv2d_packed of silu ? SiLU(x a + d) : x a + d (zero padding as
     * conv2d: the padding is of the normalised tensor), or *done = 0 with nothing written where
     * the backend does not fuse this layer (decided by the layer's shape, the scratch and the
     * backend's settings, never the batch): the caller then runs group_norm and conv2d_packed.
     * residual: NULL, or as conv2d_residual's (added in the epilogue; accumulate then 0), which
     * a backend without conv2d_residual declines (*done = 0). A backend whose ops tile on their
     * own (uses_scratch 0) decides by the shape alone and takes batch 0 as a question: nothing
     * recorded, x, ab and y unread, *done says whether it would fuse this layer, so a caller
     * computes (a, d) only for a layer that reads them (unet.c norm_folds). The CPU needs the
     * layer's packed weights and decides at the call. */
    int (*group_norm_affine)(const ccfg_backend *be, int batch, int c, int hw, int groups,
                             float eps, const float *x, const float *in_bias, const float *gamma,
                             const float *beta, const float *film, float *ab);
    int (*conv2d_packed_norm)(const ccfg_backend *be, int batch, int cin, int h, int w,
                              const float *x, const float *ab, int silu, int cout, int k,
                              int stride, int pad0, int pad1, const float *weight,
                              const float *packed, const float *bias, const float *residual,
                              int accumulate, float *y, float *scratch, int64_t scratch_len,
                              int *done);
    /* GroupNorm over (channels of the group, h*w) per sample, then optional FiLM and SiLU:
     *   v = x + in_bias[b, c]                      (in_bias (batch, c) or NULL: ResNet time bias)
     *   v = (v - mean) / sqrt(var + eps) * gamma[c] + beta[c]   (biased variance, as torch)
     *   v = v * (1 + film[b, c]) + film[b, c + c_total]          (film (batch, 2c) or NULL)
     *   y = silu ? v * sigmoid(v) : v                            (y may alias x) */
    int (*group_norm)(const ccfg_backend *be, int batch, int c, int hw, int groups, float eps,
                      const float *x, const float *in_bias, const float *gamma, const float *beta,
                      const float *film, int silu, float *y);
    /* y[r, o] = bias[o] + sum_i x[r, i] w[o, i]; x (rows, in), w (out, in), y (rows, out) row-major;
     * silu_in applies SiLU to x first (x is not modified; scratch rows*in floats, or NULL if not) */
    int (*linear)(const ccfg_backend *be, int rows, int in, int out, const float *x, const float *w,
                  const float *bias, int silu_in, float *y, float *scratch);
    /* y = x * sigmoid(x) elementwise (y may alias x) */
    int (*silu)(const ccfg_backend *be, int64_t count, const float *x, float *y);
    /* diffusers' get_timestep_embedding in float32, as torch computes it:
     *   f_j = exp(-ln(10000) j / (dim/2 - freq_shift)), a = t_b f_j, out[b] = [sin a, cos a]
     *   ([cos a, sin a] when flip_sin_to_cos; a zero last column when dim is odd). out (batch, dim) */
    int (*timestep_embedding)(const ccfg_backend *be, int batch, int dim, const double *t,
                              int flip_sin_to_cos, float freq_shift, float *out);
    /* y[b, :] += table[index[b], :]  (class embedding added to the time embedding) */
    int (*embedding_add)(const ccfg_backend *be, int batch, int dim, const float *table,
                         const int32_t *index, float *y);
    /* multi-head self-attention over the hw pixels of each sample (softmax in float32):
     *   qkv: (3*heads*head_dim, batch*hw) CNHW rows = [q heads | k heads | v heads]
     *   out: (heads*head_dim, batch*hw), out_h = V_h softmax(K_hᵀ Q_h / sqrt(head_dim))
     * scratch: scratch_len floats, at least ccfg_nn_attention_scratch(head_dim) (one thread's
     * blocks; n times that lets n threads work at once) */
    int (*attention)(const ccfg_backend *be, int batch, int hw, int heads, int head_dim,
                     const float *qkv, float *out, float *scratch, int64_t scratch_len);
    /* attention with queries and keys of their own lengths (cross-attention over a text
     * condition): q (heads*head_dim, batch*nq), k and v (heads*head_dim, batch*nk), out like q;
     * out_h[:, b, i] = V_h[:, b, :] softmax(K_h[:, b, :]ᵀ q_h[:, b, i] / sqrt(head_dim)).
     * attention above is this with q, k, v the three row blocks of qkv and nq = nk = hw.
     * scratch: as attention's, at least ccfg_nn_attention_scratch(head_dim) */
    int (*attention_qkv)(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                         int head_dim, const float *q, const float *k, const float *v, float *out,
                         float *scratch, int64_t scratch_len);
    /* LayerNorm over the c channels of every column (a token in CNHW), as torch's:
     *   y[:, j] = (x[:, j] - mean_j) / sqrt(var_j + eps) * gamma + beta   (biased variance)
     * x, y (c, cols); gamma, beta (c) or NULL (no affine); y may alias x */
    int (*layer_norm)(const ccfg_backend *be, int64_t cols, int c, float eps, const float *x,
                      const float *gamma, const float *beta, float *y);
    /* GEGLU (diffusers' feed-forward gate): x (2f, cols) holds [h; g] row blocks, y (f, cols) =
     * h * gelu(g), gelu exact: g/2 (1 + erf(g/√2)) */
    int (*geglu)(const ccfg_backend *be, int64_t cols, int f, const float *x, float *y);
    /* nearest-neighbour 2x upsampling: y (c, batch, 2h, 2w) from x (c, batch, h, w) */
    int (*upsample_nearest2x)(const ccfg_backend *be, int batch, int c, int h, int w,
                              const float *x, float *y);
    /* y = x (count floats; skip concatenation along channels is two of these in CNHW) */
    int (*copy)(const ccfg_backend *be, int64_t count, const float *x, float *y);
    /* x *= a */
    int (*scale)(const ccfg_backend *be, int64_t count, float a, float *x);
    /* layout at the model boundary: NCHW (batch, c, hw) <-> CNHW (c, batch, hw); a = 2x - 1 style
     * affine on the way in (center_input_sample): y = mul * x + add */
    int (*nchw_to_cnhw)(const ccfg_backend *be, int batch, int c, int hw, const float *x, float mul,
                        float add, float *y);
    int (*cnhw_to_nchw)(const ccfg_backend *be, int batch, int c, int hw, const float *x, float *y);
} ccfg_nn_ops;

const ccfg_nn_ops *ccfg_nn_ops_cpu(void);
/* the shaders of backend_vk.c (float32); the table is the same for every Vulkan device, `be`
 * says which. Without the Vulkan backend built, every op fails with the reason. */
const ccfg_nn_ops *ccfg_nn_ops_vulkan(void);

/* floats of scratch the CPU's conv2d (conv2d_packed, conv2d_packed_norm) uses for a k x k layer
 * of cin -> cout channels, stride and padding pad0/pad1, on h x w inputs, split between `threads`
 * threads: what the path it takes for that shape needs (Winograd's planes per thread, and its
 * transformed weights once unless packed: the caller passes the layer's conv2d_pack output; the
 * direct kernel's padded planes; im2col's cache-sized tile of output rows, and at least the one
 * output row below which conv2d refuses a layer that falls to im2col). Linear in the input's
 * size: a 1 x w image gets O(w). 0 for a
 * 1x1 unpadded layer (it needs none) and for arguments that are not a convolution (threads < 1
 * among them); saturates at 2^60 floats (an allocation that then fails). */
int64_t ccfg_nn_conv2d_scratch(int cin, int cout, int h, int w, int k, int stride, int pad0,
                               int pad1, int packed, int threads);
/* floats of scratch attention and attention_qkv need per thread for heads of head_dim channels
 * (blocks of queries, their accumulators and one block of scores: independent of the token
 * counts) */
int64_t ccfg_nn_attention_scratch(int head_dim);

/* time per op kind of the CPU table, process-wide, for benchmarks (off by default; off, it costs
 * one untaken branch per op call): start = 1 clears the totals and turns timing on (returns 0);
 * start = 0 turns it off and writes up to cap kinds that were called (name, total ms, calls),
 * returning how many */
int ccfg_nn_cpu_profile(int start, const char **names, double *ms, int64_t *calls, int cap);

#endif /* CCFG_NN_H */
