/* vk_nn.h — what nn_vk.c (the nn.h ops as shaders) needs from backend_vk.c: the nn pipelines,
 * their push constants (laid out as the shaders' `Push` blocks, element offsets of the bound
 * arrays first) and one dispatch call. Internal to csrc/. */
#ifndef CCFG_VK_NN_H
#define CCFG_VK_NN_H

#include <stdint.h>

#include "ccfg.h"

/* shaders/nn_conv2d.comp (an implicit GEMM): a workgroup computes a tile of BM output channels
 * (the y workgroups) x BN output pixels (the x workgroups, grid-stride past 65535), staging BK
 * input channels of one tap at a time in shared memory ((BM + BN) x BK floats, 6 KiB) */
enum { CCFG_VK_CONV_BM = 64, CCFG_VK_CONV_BN = 128, CCFG_VK_CONV_BK = 8 };
/* shaders/nn_conv2d_direct.comp, for convolutions of at most BM / 2 output channels (where the
 * tile would waste half its multiply-adds or more): an invocation computes COB output channels
 * (the y workgroups are channel blocks) at PX adjacent pixels of a row, reading x and w directly */
enum { CCFG_VK_CONV_COB = 8, CCFG_VK_CONV_PX = 4 };

/* What one invocation may loop, in iterations of all its loops together. Mesa's lavapipe ends
 * every invocation's loops after 65535 iterations in total (gallivm's loop limiter, shared by all
 * loops of a shader) and the results are then silently wrong, so no shader may depend on the
 * sizes for its loop counts: nn_vk.c splits reductions across invocations (lanes) or dispatches
 * (chunks of the reduced dimension, accumulated) to stay within this budget, half the limit:
 * the host's counts are upper bounds of the loops that depend on sizes, and the margin covers
 * the short fixed ones (constant-count loops such as conv2d's register blocks are unrolled). A
 * GPU has no such limit; there the split only costs a few extra dispatches at sizes no model
 * reaches. */
enum { CCFG_VK_LOOP_BUDGET = 32768 };
/* workgroups per dispatch dimension and invocations per workgroup of the grid-stride shaders
 * (backend_vk.c MAX_GROUPS, LOCAL_SIZE): one invocation loops over ceil(items / (65535 * 128))
 * items */
enum { CCFG_VK_MAX_GROUPS = 65535, CCFG_VK_LOCAL_SIZE = 128 };

enum { CCFG_VK_NN_CONV2D, CCFG_VK_NN_GROUP_NORM, CCFG_VK_NN_LINEAR, CCFG_VK_NN_ATTENTION,
       CCFG_VK_NN_ELTWISE, CCFG_VK_NN_LAYER_NORM, CCFG_VK_NN_CONV2D_DIRECT,
       /* the half-precision convolutions (CCFG_VULKAN_PRECISION): weights converted to float16
        * (to_f16), the tiled shader with float16 weights and inputs (conv2d_f16), and its
        * cooperative matrix twins (16 x 16 x 16 and 8 x 8 x 8 shapes, GL_KHR_cooperative_matrix) */
       CCFG_VK_NN_TO_F16, CCFG_VK_NN_CONV2D_F16, CCFG_VK_NN_CONV2D_COOP, CCFG_VK_NN_CONV2D_COOP8,
       /* attention as two small GEMMs per key tile (nn_attention_tiled.glsl; the default,
        * CCFG_VULKAN_ATTENTION=lanes picks CCFG_VK_NN_ATTENTION), one pipeline per head width:
        * TILED + n - 1 holds n chunks of DV columns (heads of up to 64 n channels) */
       CCFG_VK_NN_ATTENTION_TILED, CCFG_VK_NN_ATTENTION_TILED2, CCFG_VK_NN_ATTENTION_TILED3,
       CCFG_VK_NN_ATTENTION_TILED4,
       /* the same with 64-query workgroups (TILED_Q64 + n - 1), where the device has the shared
        * memory (CCFG_VK_ATTN_TILED_SHARED64) and 256 invocations per workgroup */
       CCFG_VK_NN_ATTENTION_TILED_Q64, CCFG_VK_NN_ATTENTION_TILED2_Q64,
       CCFG_VK_NN_ATTENTION_TILED3_Q64, CCFG_VK_NN_ATTENTION_TILED4_Q64,
       /* 64-query workgroups with Q resident in shared memory for the whole key walk, heads of
        * at most DC channels (CCFG_VK_ATTN_TILED_SHARED_QR bytes) */
       CCFG_VK_NN_ATTENTION_TILED1_Q64R,
       /* split-K's second dispatch: the partial sums of the slices, in order, plus the epilogue */
       CCFG_VK_NN_CONV2D_REDUCE,
       /* the coop twins with one shared-memory stage (CCFG_VULKAN_COOP_SINGLE_BUFFER=1: the
        * path before double buffering, for A/B runs) */
       CCFG_VK_NN_CONV2D_COOP_SB, CCFG_VK_NN_CONV2D_COOP8_SB,
       /* attention on cooperative matrices (nn_attention_coop.glsl; the precision's variant),
        * one pipeline per head width: ATTENTION_COOP + n - 1 (16 x 16 x 16) or
        * ATTENTION_COOP8 + n - 1 (8 x 8 x 8) holds n slices of 64 channels */
       CCFG_VK_NN_ATTENTION_COOP, CCFG_VK_NN_ATTENTION_COOP2, CCFG_VK_NN_ATTENTION_COOP3,
       CCFG_VK_NN_ATTENTION_COOP4, CCFG_VK_NN_ATTENTION_COOP8, CCFG_VK_NN_ATTENTION_COOP8_2,
       CCFG_VK_NN_ATTENTION_COOP8_3, CCFG_VK_NN_ATTENTION_COOP8_4,
       /* the coop twins' other tiles and stagings (CCFG_VULKAN_COOP_TILE, CCFG_VK_COOP_TILE_*):
        * COOP_TILES + t - 1 (16 x 16 x 16) and COOP8_TILES + t - 1 (8 x 8 x 8) run tile t > 0 */
       CCFG_VK_NN_CONV2D_COOP_TILES, CCFG_VK_NN_CONV2D_COOP_T44, CCFG_VK_NN_CONV2D_COOP_T22P,
       CCFG_VK_NN_CONV2D_COOP_T24P, CCFG_VK_NN_CONV2D_COOP_T44P, CCFG_VK_NN_CONV2D_COOP_T22PP,
       CCFG_VK_NN_CONV2D_COOP_T24PP, CCFG_VK_NN_CONV2D_COOP_T44PP,
       CCFG_VK_NN_CONV2D_COOP8_TILES, CCFG_VK_NN_CONV2D_COOP8_T44, CCFG_VK_NN_CONV2D_COOP8_T22P,
       CCFG_VK_NN_CONV2D_COOP8_T24P, CCFG_VK_NN_CONV2D_COOP8_T44P, CCFG_VK_NN_CONV2D_COOP8_T22PP,
       CCFG_VK_NN_CONV2D_COOP8_T24PP, CCFG_VK_NN_CONV2D_COOP8_T44PP,
       /* the float32 tiled convolution's other tiles (CCFG_VULKAN_CONV_TILE,
        * CCFG_VK_CONV_TILE_*): CONV2D_TILES + t - 1 runs tile t > 0 (nn_conv2d_t*.comp) */
       CCFG_VK_NN_CONV2D_TILES, CCFG_VK_NN_CONV2D_T128, CCFG_VK_NN_CONV2D_T128DB,
       CCFG_VK_NN_COUNT };

/* The convolutions' precision on a device (CCFG_VULKAN_PRECISION, read when the device opens):
 * FP32 the float32 shaders; FP16 nn_conv2d_f16.comp (float16 weights and inputs, float32 sums);
 * COOP and COOP8 nn_conv2d_coop*.comp (the same on cooperative matrices of 16 x 16 x 16 in
 * subgroups of 32, or 8 x 8 x 8 in subgroups of 8). Convolutions of at most CCFG_VK_CONV_BM / 2 output channels stay float32 in
 * every mode (the direct shader: first and last layers of narrow models). */
enum { CCFG_VK_PRECISION_FP32, CCFG_VK_PRECISION_FP16, CCFG_VK_PRECISION_COOP,
       CCFG_VK_PRECISION_COOP8 };
int ccfg_vk_nn_precision(const ccfg_backend *be);
/* test hook: sets an open device's precision to FP32 or back to the one it opened with (-1; whose
 * features its logical device has); an error otherwise. A placed model notices at its next
 * forward (nn.h conv2d_packed_len; unet.c repack_if_stale). */
int ccfg_vk_nn_set_precision(const ccfg_backend *be, int precision);
/* shaders/nn_conv2d_coop.glsl: a workgroup of CCFG_VK_COOP_SUBGROUPS subgroups; per variant its
 * tile (output channels x pixels), the input channels per stage (also the matrices' M = N = K)
 * and the subgroup size it runs with: COOP 16 x 16 x 16 in subgroups of 32, COOP8 8 x 8 x 8 in
 * subgroups of 8 */
enum { CCFG_VK_COOP_SUBGROUPS = 4,
       CCFG_VK_COOP_BM = 64, CCFG_VK_COOP_BN = 64, CCFG_VK_COOP_BK = 16, CCFG_VK_COOP_SUBGROUP = 32,
       CCFG_VK_COOP8_BM = 32, CCFG_VK_COOP8_BN = 32, CCFG_VK_COOP8_BK = 8,
       CCFG_VK_COOP8_SUBGROUP = 8 };
/* the coop convolution's tiles (CCFG_VULKAN_COOP_TILE, read at every convolution): FM x FN
 * accumulators per subgroup, so a workgroup tile of 2 FM M x 2 FN N (the BM, BN above are 2x2's),
 * and the staging: plain (one float16 per store) or packed (float16 pairs, 32-bit stores), the
 * PP ones packed with shared-memory rows padded by 16 bytes (against bank conflicts).
 * 2X2 is the default (nn_conv2d_coop*.comp); tile t > 0 runs CCFG_VK_NN_CONV2D_COOP*_TILES + t - 1
 * (nn_conv2d_coop*_t*.comp) */
enum { CCFG_VK_COOP_TILE_2X2, CCFG_VK_COOP_TILE_2X4, CCFG_VK_COOP_TILE_4X4, CCFG_VK_COOP_TILE_2X2P,
       CCFG_VK_COOP_TILE_2X4P, CCFG_VK_COOP_TILE_4X4P, CCFG_VK_COOP_TILE_2X2PP,
       CCFG_VK_COOP_TILE_2X4PP, CCFG_VK_COOP_TILE_4X4PP, CCFG_VK_COOP_TILE_COUNT };
/* the float32 tiled convolution's variants (shaders/nn_conv2d.glsl; CCFG_VULKAN_CONV_TILE, read
 * at every convolution): 64X128 the default (nn_conv2d.comp: BM x BN above, 128 invocations, one
 * shared-memory stage), 64X128DB double-buffered stages, 128X128 tiles of BM_128 output channels
 * (256 invocations, 8 KiB of shared memory per stage), 128X128DB both. Every variant computes the
 * bits of the default; tile t > 0 runs CCFG_VK_NN_CONV2D_TILES + t - 1. */
enum { CCFG_VK_CONV_TILE_64X128, CCFG_VK_CONV_TILE_64X128DB, CCFG_VK_CONV_TILE_128X128,
       CCFG_VK_CONV_TILE_128X128DB, CCFG_VK_CONV_TILE_COUNT, CCFG_VK_CONV_BM_128 = 128 };
/* CCFG_VULKAN_NORM_FOLD unset or empty (nn_vk.c norm_fold_off): whether a GroupNorm(+SiLU) is
 * folded into the coop convolution that reads it (1) or applied as its own pass (0); the SIMT
 * shaders' default is off. 0 by the H200 arithmetic (docs/PERFORMANCE.md, "GroupNorm(+SiLU)
 * folded into the cooperative-matrix convolution"): the coop staging is issue-bound and
 * normalising every staged input (per tap and channel tile: two special-function instructions
 * and ~9 issue slots each) costs more than the memory pass it saves, unless the fragment loads'
 * bank conflicts bind. A GPU run that shows otherwise flips this one constant. */
enum { CCFG_VK_COOP_NORM_FOLD_DEFAULT = 0 };
/* shaders/nn_to_f16.comp: ox, oy element offsets (oy in 32-bit elements of the float16 array) */
typedef struct { uint32_t ox, oy, count; } ccfg_vk_push_to_f16;

/* every convolution shader (nn_conv2d*.comp): bindings x, w, bias, y and the residual r (added in
 * the epilogue, flags bit 2; y stands in, unread, without one); cin: the input channels of this
 * dispatch (a chunk: x and w start at its first channel), wstride: floats per output channel of w
 * (all input channels x k x k); split: split-K (the tiled float32 and float16 shaders only; 0
 * elsewhere and without it): stages (of BK channels of one tap) per slice; the y workgroup rows
 * are then S slices x the channel tiles, and each slice's raw partial sums go to slice s of y
 * (scratch of S x cout x P floats) */
enum { CCFG_VK_CONV_BINDINGS = 5 };
typedef struct {
    uint32_t ox, ow, ob, oy, ores;
    uint32_t batch, cin, h, w, cout, k, stride, pad0, ho, wo, flags, wstride;
    uint32_t split;
} ccfg_vk_push_conv2d;
/* the tiled float32 and float16 shaders (nn_conv2d.comp, nn_conv2d_f16.comp) and the coop ones
 * (nn_conv2d_coop*.comp, no split-K: split 0) have a sixth binding, ab: a GroupNorm folded into
 * the input (nn.h conv2d_packed_norm; flags bit 3, bit 4 for its SiLU): every staged input is
 * x a + d with the (a, d) of its sample b and channel ci at ab[2 (b abstride + ci)] (abstride:
 * all input channels; ab starts at the chunk's first channel), then SiLU (float32; the float16
 * shaders round that). Their push block is the one above with ab's offset after the other
 * offsets and abstride last. */
enum { CCFG_VK_CONV_TILED_BINDINGS = 6, CCFG_VK_CONV_NORM = 8, CCFG_VK_CONV_NORM_SILU = 16 };
typedef struct {
    uint32_t ox, ow, ob, oy, ores, oab;
    uint32_t batch, cin, h, w, cout, k, stride, pad0, ho, wo, flags, wstride;
    uint32_t split;
    uint32_t abstride;
} ccfg_vk_push_conv2d_tiled;
/* shaders/nn_conv2d_reduce.comp: bindings part (slices x count floats), bias, y, r; y = ((sum of
 * the slices in order + bias) + y if accumulate) + r, flags as the convolution's */
enum { CCFG_VK_CONV_REDUCE_BINDINGS = 4 };
typedef struct {
    uint32_t opart, ob, oy, ores, count, n_out, slices, flags;
} ccfg_vk_push_conv2d_reduce;
/* Split-K's default rule (nn_vk.c conv_splitk; CCFG_VULKAN_CONV_SPLITK overrides it): a tiled
 * convolution of G = pixel tiles x channel tiles workgroups is split into S = ceil(TARGET / G)
 * slices when that is 2 or more, at most MAX and at most stages / MIN_STAGES (a slice reduces at
 * least MIN_STAGES stages of BK channels, so that its 32 KiB partial tile is small against the
 * 6 KiB x MIN_STAGES it stages). TARGET: 512 workgroups, about 4 resident per SM of a 132-SM
 * GPU (docs/PERFORMANCE.md "Split-K"). */
enum { CCFG_VK_SPLITK_TARGET = 512, CCFG_VK_SPLITK_MAX = 32, CCFG_VK_SPLITK_MIN_STAGES = 16 };
/* shaders/nn_group_norm.glsl: a (sample, group) of at most GN_FUSED values is one workgroup of
 * one dispatch (phase 3: statistics and normalisation, nothing in scratch); larger ones take three
 * phases: 0 partial statistics of `part`-sized slices of each (sample, group), 1 their merge into
 * (mean, 1/std) per (sample, group), 2 the normalisation. 8192 values: an invocation loops 3 x 64
 * times, and a GPU still gets a workgroup per (sample, group) (48 rows x 32 groups = 1536 at
 * CIFAR's 32x32 x 4 channels); past that, slices spread a group over many workgroups.
 * flags: bit 0 in_bias, bit 1 film, bit 2 silu, bit 3 (AFFINE, nn.h group_norm_affine): the
 * (a, d) per sample and channel into y (2 batch c floats) instead of the normalised tensor, bit 4
 * (AFFINE_MERGE) with it: phase 1 writes them and phase 2 is not run. */
enum { CCFG_VK_GN_FUSED = 8192, CCFG_VK_GN_AFFINE = 8, CCFG_VK_GN_AFFINE_MERGE = 16 };
typedef struct {
    uint32_t ox, oib, og, obe, of, oy, os;
    uint32_t batch, c, hw, groups;
    float eps;
    uint32_t flags, phase, part, parts;
} ccfg_vk_push_group_norm;
/* n_in: the inputs of this dispatch (a chunk: x and w start at its first input), ld: floats per
 * row of x and of w (all inputs) */
typedef struct { uint32_t ox, ow, ob, oy, rows, n_in, n_out, flags, ld; } ccfg_vk_push_linear;
/* keys [k0, k0 + kn) of each query in this dispatch; flags bit 0: the first block of keys (no
 * state yet), bit 1: the last (normalise). Between blocks the running maximum and sum of every
 * query live in the state array (2 floats per query) and its unnormalised output in `out`. */
typedef struct {
    uint32_t oq, ok, ov, oo, os, batch, nq, nk, heads, head_dim;
    float scale;
    uint32_t lanes;             /* invocations sharing one query's keys (a power of two <= 64) */
    uint32_t k0, kn, flags;
    uint32_t tk;                /* keys per shared-memory tile: a multiple of KB x lanes */
} ccfg_vk_push_attention;
/* lanes: invocations sharing one column's channels (a power of two <= 128) */
typedef struct {
    uint32_t ox, og, ob, oy, cols, c, affine;
    float eps;
    uint32_t lanes;
} ccfg_vk_push_layer_norm;
/* shaders/nn_attention.comp's workgroup: 64 invocations = 64 / lanes queries of one (sample,
 * head); an invocation takes KB keys per round of its loop; K and V go through shared memory in
 * tiles of TILE / head_dim keys (TILE floats each) */
enum { CCFG_VK_ATTENTION_WG = 64, CCFG_VK_ATTENTION_KB = 4, CCFG_VK_ATTENTION_TILE = 1920 };
/* shaders/nn_attention_tiled.glsl: a workgroup of WG invocations takes BR queries of one (sample,
 * head) and walks the keys in tiles of BC; the reduction over head_dim goes in slices of DC
 * channels (S = Q K^T) and chunks of DV columns (O += P V). Keys [k0, k0 + kn) per dispatch, flags
 * and the state array as in ccfg_vk_push_attention. */
enum { CCFG_VK_ATTN_TILED_WG = 128, CCFG_VK_ATTN_TILED_BR = 32, CCFG_VK_ATTN_TILED_BC = 32,
       CCFG_VK_ATTN_TILED_DC = 40, CCFG_VK_ATTN_TILED_DV = 64,
       /* the 64-query variant: 256 invocations, 26112 bytes of shared memory */
       CCFG_VK_ATTN_TILED_WG64 = 256, CCFG_VK_ATTN_TILED_BR64 = 64,
       CCFG_VK_ATTN_TILED_SHARED64 = 26112,
       /* the same with Q resident (nn_attention_tiled1_q64r.comp, heads of at most DC channels):
        * Q 64 x 40 floats + the K slice or V chunk (32 x 17 vec4) + P (64 x 9 vec4) + 384 floats */
       CCFG_VK_ATTN_TILED_SHARED_QR = 29696,
       /* push flags bit 2: O += P V in whole DV-column chunks (the merged shader, for A/B) */
       CCFG_VK_ATTN_TILED_PV_WHOLE = 4 };
typedef struct {
    uint32_t oq, ok, ov, oo, os, batch, nq, nk, heads, head_dim;
    float scale;
    uint32_t k0, kn, flags;
} ccfg_vk_push_attention_tiled;
/* shaders/nn_attention_coop.glsl: 4 subgroups take BR queries of one (sample, head), C rows each,
 * and walk the keys in tiles of BC; K and V are staged in slices of DS channels. Per variant
 * (COOP: 16 x 16 x 16 in subgroups of 32; COOP8: 8 x 8 x 8 in subgroups of 8) its block, tile
 * and shared memory (bytes). Push constants, keys per dispatch, flags and the state array:
 * ccfg_vk_push_attention_tiled's. */
enum { CCFG_VK_ATTN_COOP_DS = 64,
       CCFG_VK_ATTN_COOP_BR = 64, CCFG_VK_ATTN_COOP_BC = 64, CCFG_VK_ATTN_COOP_WG = 128,
       CCFG_VK_ATTN_COOP_SHARED = 37120,
       CCFG_VK_ATTN_COOP8_BR = 32, CCFG_VK_ATTN_COOP8_BC = 32, CCFG_VK_ATTN_COOP8_WG = 32,
       CCFG_VK_ATTN_COOP8_SHARED = 12800 };
typedef struct {
    uint32_t ox, oy, count, mode, batch, c, h, w;
    float a, b;
} ccfg_vk_push_eltwise;

/* the device's maxComputeSharedMemorySize (bytes) and maxComputeWorkGroupInvocations */
void ccfg_vk_nn_limits(const ccfg_backend *be, uint32_t *shared_bytes, uint32_t *invocations);

/* Records one dispatch of nn pipeline `kernel` on the Vulkan backend be: binding i is the array
 * at device address ptrs[i] holding counts[i] floats; its element offset is written to the i-th
 * uint32 of `push` (the offsets lead every nn push block). `items` work items: one workgroup
 * each when per_group (group_norm), else one invocation each (grid-stride loops), times
 * groups_y workgroup rows (conv2d's output-channel blocks; 1 elsewhere). */
int ccfg_vk_nn_dispatch(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                        const int64_t *counts, void *push, int64_t items, int per_group,
                        uint32_t groups_y);

/* Device scratch for an op's own bookkeeping (group_norm's statistics, attention's state
 * between key blocks): like be->alloc but not zero-filled (no fill command); free it with
 * be->release right after recording (it lives until the batch using it has run). */
int ccfg_vk_nn_scratch(const ccfg_backend *be, size_t bytes, float **out);

/* y = x (count floats) as a transfer command (vkCmdCopyBuffer); *done = 0 when the two ranges
 * overlap in one buffer, which the caller then copies another way. */
int ccfg_vk_nn_copy(const ccfg_backend *be, int64_t count, const float *x, float *y, int *done);

#endif /* CCFG_VK_NN_H */
