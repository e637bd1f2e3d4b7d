/* nn_vk.c — the nn.h ops on a Vulkan device: each op checks its sizes, fills the push constants
 * of its shader (shaders/nn_*.comp, float32) and records one dispatch into the device's command
 * buffer (backend_vk.c, via vk_nn.h). Nothing is submitted here: the work runs at the next host
 * sync (a download, be->sync). Optional arrays (bias, in_bias, film) are replaced by a bound
 * array the shader never reads, with a flag saying so. */
#include <math.h>
#include <stdlib.h>

#include "ccfg.h"
#include "nn.h"
#include "vk_nn.h"

/* the shaders index with 32-bit unsigned integers */
static int fits(int64_t count, const char *op)
{
    if (count < 0 || count > (int64_t)UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn %s: %lld elements is out of range", op,
                         (long long)count);
    return CCFG_OK;
}

static int vk_begin(const ccfg_backend *be) { (void)be; return CCFG_OK; }
static int vk_end(const ccfg_backend *be) { (void)be; return CCFG_OK; }

static int vk_conv2d(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                     int cout, int k, int stride, int pad0, int pad1, const float *weight,
                     const float *bias, int accumulate, float *y, float *scratch,
                     int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    if (batch < 0 || cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 ||
        pad1 < 0 || h + pad0 + pad1 < k || w + pad0 + pad1 < k)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: invalid sizes");
    const int ho = (h + pad0 + pad1 - k) / stride + 1, wo = (w + pad0 + pad1 - k) / stride + 1;
    const int64_t nx = (int64_t)cin * batch * h * w, ny = (int64_t)cout * batch * ho * wo;
    int status;
    if ((status = fits(nx, "conv2d")) || (status = fits(ny, "conv2d"))) return status;
    const float *ptrs[4] = {x, weight, bias ? bias : weight, y};
    const int64_t counts[4] = {nx, (int64_t)cout * cin * k * k, bias ? cout : 0, ny};
    ccfg_vk_push_conv2d pc = {.batch = (uint32_t)batch, .cin = (uint32_t)cin, .h = (uint32_t)h,
                              .w = (uint32_t)w, .cout = (uint32_t)cout, .k = (uint32_t)k,
                              .stride = (uint32_t)stride, .pad0 = (uint32_t)pad0,
                              .ho = (uint32_t)ho, .wo = (uint32_t)wo,
                              .flags = (bias ? 1u : 0u) | (accumulate ? 2u : 0u)};
    const int64_t quads = (int64_t)batch * ho * ((wo + CCFG_VK_CONV_PX - 1) / CCFG_VK_CONV_PX);
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_CONV2D, 4, ptrs, counts, &pc, quads, 0,
                               (uint32_t)((cout + CCFG_VK_CONV_COB - 1) / CCFG_VK_CONV_COB));
}

static int vk_group_norm(const ccfg_backend *be, int batch, int c, int hw, int groups, float eps,
                         const float *x, const float *in_bias, const float *gamma,
                         const float *beta, const float *film, int silu, float *y)
{
    if (batch < 0 || c < 1 || hw < 1 || groups < 1 || c % groups)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn group_norm: %d groups for %d channels", groups, c);
    const int64_t n = (int64_t)c * batch * hw;
    int status;
    if ((status = fits(n, "group_norm"))) return status;
    const float *ptrs[6] = {x, in_bias ? in_bias : x, gamma, beta, film ? film : x, y};
    const int64_t counts[6] = {n, in_bias ? (int64_t)batch * c : 0, c, c,
                               film ? 2 * (int64_t)batch * c : 0, n};
    ccfg_vk_push_group_norm pc = {.batch = (uint32_t)batch, .c = (uint32_t)c, .hw = (uint32_t)hw,
                                  .groups = (uint32_t)groups, .eps = eps,
                                  .flags = (in_bias ? 1u : 0u) | (film ? 2u : 0u) |
                                           (silu ? 4u : 0u)};
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_GROUP_NORM, 6, ptrs, counts, &pc,
                               (int64_t)batch * groups, 1, 1);
}

static int vk_linear(const ccfg_backend *be, int rows, int in, int out, const float *x,
                     const float *w, const float *bias, int silu_in, float *y, float *scratch)
{
    (void)scratch;
    if (rows < 0 || in < 1 || out < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn linear: invalid sizes");
    const int64_t ny = (int64_t)rows * out;
    int status;
    if ((status = fits((int64_t)rows * in, "linear")) || (status = fits(ny, "linear")) ||
        (status = fits((int64_t)in * out, "linear")))
        return status;
    const float *ptrs[4] = {x, w, bias ? bias : w, y};
    const int64_t counts[4] = {(int64_t)rows * in, (int64_t)in * out, bias ? out : 0, ny};
    ccfg_vk_push_linear pc = {.rows = (uint32_t)rows, .n_in = (uint32_t)in, .n_out = (uint32_t)out,
                              .flags = (silu_in ? 1u : 0u) | (bias ? 2u : 0u)};
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_LINEAR, 4, ptrs, counts, &pc, ny, 0, 1);
}

static int eltwise(const ccfg_backend *be, uint32_t mode, int64_t nx, const float *x, int64_t ny,
                   float *y, ccfg_vk_push_eltwise *pc)
{
    int status;
    if ((status = fits(nx, "eltwise")) || (status = fits(ny, "eltwise"))) return status;
    const float *ptrs[2] = {x, y};
    const int64_t counts[2] = {nx, ny};
    pc->count = (uint32_t)ny;
    pc->mode = mode;
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_ELTWISE, 2, ptrs, counts, pc, ny, 0, 1);
}

static int vk_silu(const ccfg_backend *be, int64_t count, const float *x, float *y)
{
    ccfg_vk_push_eltwise pc = {0};
    return eltwise(be, 1, count, x, count, y, &pc);
}

static int vk_copy(const ccfg_backend *be, int64_t count, const float *x, float *y)
{
    ccfg_vk_push_eltwise pc = {0};
    if (x == y) return CCFG_OK;
    return eltwise(be, 0, count, x, count, y, &pc);
}

static int vk_scale(const ccfg_backend *be, int64_t count, float a, float *x)
{
    ccfg_vk_push_eltwise pc = {.a = a};
    return eltwise(be, 2, count, x, count, x, &pc);
}

static int vk_upsample_nearest2x(const ccfg_backend *be, int batch, int c, int h, int w,
                                 const float *x, float *y)
{
    ccfg_vk_push_eltwise pc = {.batch = (uint32_t)batch, .c = (uint32_t)c, .h = (uint32_t)h,
                               .w = (uint32_t)w};
    const int64_t nx = (int64_t)c * batch * h * w;
    return eltwise(be, 3, nx, x, 4 * nx, y, &pc);
}

static int vk_nchw_to_cnhw(const ccfg_backend *be, int batch, int c, int hw, const float *x,
                           float mul, float add, float *y)
{
    ccfg_vk_push_eltwise pc = {.batch = (uint32_t)batch, .c = (uint32_t)c, .h = (uint32_t)hw,
                               .a = mul, .b = add};
    const int64_t n = (int64_t)c * batch * hw;
    return eltwise(be, 4, n, x, n, y, &pc);
}

static int vk_cnhw_to_nchw(const ccfg_backend *be, int batch, int c, int hw, const float *x,
                           float *y)
{
    ccfg_vk_push_eltwise pc = {.batch = (uint32_t)batch, .c = (uint32_t)c, .h = (uint32_t)hw};
    const int64_t n = (int64_t)c * batch * hw;
    return eltwise(be, 5, n, x, n, y, &pc);
}

static int vk_attention_qkv(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                            int head_dim, const float *q, const float *k, const float *v,
                            float *out, float *scratch, int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    if (batch < 0 || nq < 1 || nk < 1 || heads < 1 || head_dim < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: invalid sizes");
    if (head_dim > 256)     /* shaders/nn_attention.comp's MAX_HEAD_DIM */
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: heads of %d channels; the shader "
                         "supports up to 256 (set attention_head_dim)", head_dim);
    const int64_t nqe = (int64_t)heads * head_dim * batch * nq;
    const int64_t nke = (int64_t)heads * head_dim * batch * nk;
    int status;
    if ((status = fits(nqe, "attention")) || (status = fits(nke, "attention"))) return status;
    const float *ptrs[4] = {q, k, v, out};
    const int64_t counts[4] = {nqe, nke, nke, nqe};
    /* Keys are split between `lanes` invocations per query so that no invocation loops more
     * than ~8k key x channel steps: long sequences spread over a GPU's lanes, and Mesa's lavapipe,
     * which stops a loop after 65535 iterations per invocation, stays correct. Short sequences
     * keep one invocation per query (no merge cost). */
    uint32_t lanes = 1;
    while (lanes < CCFG_VK_ATTENTION_WG &&
           ((int64_t)nk + lanes - 1) / lanes * head_dim > 8192)
        lanes *= 2;
    ccfg_vk_push_attention pc = {.batch = (uint32_t)batch, .nq = (uint32_t)nq,
                                 .nk = (uint32_t)nk, .heads = (uint32_t)heads,
                                 .head_dim = (uint32_t)head_dim,
                                 .scale = 1.0f / sqrtf((float)head_dim), .lanes = lanes};
    /* 64 / lanes queries per workgroup, 65535 workgroups per dispatch row, rows past that */
    const int64_t queries = (int64_t)batch * heads * nq, per_group = CCFG_VK_ATTENTION_WG / lanes;
    const int64_t groups = (queries + per_group - 1) / per_group, per_row = 65535;
    const int64_t rows = (groups + per_row - 1) / per_row;
    if (rows > per_row)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: %lld queries is too many for one "
                         "dispatch", (long long)queries);
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_ATTENTION, 4, ptrs, counts, &pc,
                               groups < per_row ? groups : per_row, 1, (uint32_t)rows);
}

/* self-attention: q, k and v are the three row blocks of qkv */
static int vk_attention(const ccfg_backend *be, int batch, int hw, int heads, int head_dim,
                        const float *qkv, float *out, float *scratch, int64_t scratch_len)
{
    if (batch < 0 || hw < 1 || heads < 1 || head_dim < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: invalid sizes");
    const int64_t block = (int64_t)heads * head_dim * batch * hw;
    return vk_attention_qkv(be, batch, hw, hw, heads, head_dim, qkv, qkv + block, qkv + 2 * block,
                            out, scratch, scratch_len);
}

static int vk_layer_norm(const ccfg_backend *be, int64_t cols, int c, float eps, const float *x,
                         const float *gamma, const float *beta, float *y)
{
    int status;
    if (cols < 0 || c < 1) return ccfg_fail(CCFG_EINVAL, "Vulkan nn layer_norm: invalid sizes");
    if (!cols) return CCFG_OK;
    if ((status = fits(cols * c, "layer_norm"))) return status;
    const int affine = gamma && beta;
    /* without an affine the x binding stands in for gamma and beta (never read) */
    const float *ptrs[4] = {x, affine ? gamma : x, affine ? beta : x, y};
    const int64_t counts[4] = {cols * c, affine ? c : 1, affine ? c : 1, cols * c};
    ccfg_vk_push_layer_norm pc = {.cols = (uint32_t)cols, .c = (uint32_t)c,
                                  .affine = (uint32_t)affine, .eps = eps};
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_LAYER_NORM, 4, ptrs, counts, &pc, cols, 0, 1);
}

static int vk_geglu(const ccfg_backend *be, int64_t cols, int f, const float *x, float *y)
{
    ccfg_vk_push_eltwise pc = {0};
    if (cols < 0 || f < 1) return ccfg_fail(CCFG_EINVAL, "Vulkan nn geglu: invalid sizes");
    return eltwise(be, 6, 2 * cols * f, x, cols * f, y, &pc);
}

/* t is a host array and the table is batch x dim floats: computed on the host by the CPU op (the
 * exact float32 sequence torch uses) and uploaded, cheaper than a dispatch for so little */
static int vk_timestep_embedding(const ccfg_backend *be, int batch, int dim, const double *t,
                                 int flip_sin_to_cos, float freq_shift, float *out)
{
    const size_t n = (size_t)(batch > 0 ? batch : 0) * (size_t)(dim > 0 ? dim : 0);
    int status;
    if (!n) return CCFG_OK;
    float *host = malloc(n * sizeof *host);
    if (!host) return ccfg_fail(CCFG_ENOMEM, "out of memory for the timestep embedding");
    status = ccfg_nn_ops_cpu()->timestep_embedding(NULL, batch, dim, t, flip_sin_to_cos,
                                                     freq_shift, host);
    if (!status) status = be->upload(be, out, host, n * sizeof *host);
    free(host);
    return status;
}

/* index is a host array: one axpy per sample through the backend's own op */
static int vk_embedding_add(const ccfg_backend *be, int batch, int dim, const float *table,
                            const int32_t *index, float *y)
{
    int status = CCFG_OK;
    for (int b = 0; b < batch && !status; b++)
        status = be->axpbypcz(be, dim, 1.0, y + (int64_t)b * dim, 1.0,
                              table + (int64_t)index[b] * dim, 0.0, NULL, y + (int64_t)b * dim);
    return status;
}

static const ccfg_nn_ops vk_ops = {
    .name = "vulkan",
    .uses_scratch = 0,
    .begin = vk_begin,
    .end = vk_end,
    .conv2d = vk_conv2d,
    .group_norm = vk_group_norm,
    .linear = vk_linear,
    .silu = vk_silu,
    .timestep_embedding = vk_timestep_embedding,
    .embedding_add = vk_embedding_add,
    .attention = vk_attention,
    .attention_qkv = vk_attention_qkv,
    .layer_norm = vk_layer_norm,
    .geglu = vk_geglu,
    .upsample_nearest2x = vk_upsample_nearest2x,
    .copy = vk_copy,
    .scale = vk_scale,
    .nchw_to_cnhw = vk_nchw_to_cnhw,
    .cnhw_to_nchw = vk_cnhw_to_nchw,
};

const ccfg_nn_ops *ccfg_nn_ops_vulkan(void) { return &vk_ops; }
