/* vk_nn.h — what nn_vk.c (the nn.h ops as shaders) needs from backend_vk.c: the nn pipelines,
 * their push constants (laid out as the shaders' `Push` blocks, element offsets of the bound
 * arrays first) and one dispatch call. Internal to csrc/. */
#ifndef CCFG_VK_NN_H
#define CCFG_VK_NN_H

#include <stdint.h>

#include "ccfg.h"

/* a conv2d invocation computes COB output channels (the y workgroups are channel blocks) at PX
 * adjacent pixels of a row (shaders/nn_conv2d.comp) */
enum { CCFG_VK_CONV_COB = 8, CCFG_VK_CONV_PX = 4 };

enum { CCFG_VK_NN_CONV2D, CCFG_VK_NN_GROUP_NORM, CCFG_VK_NN_LINEAR, CCFG_VK_NN_ATTENTION,
       CCFG_VK_NN_ELTWISE, CCFG_VK_NN_LAYER_NORM, CCFG_VK_NN_COUNT };

typedef struct {
    uint32_t ox, ow, ob, oy;
    uint32_t batch, cin, h, w, cout, k, stride, pad0, ho, wo, flags;
} ccfg_vk_push_conv2d;
typedef struct {
    uint32_t ox, oib, og, obe, of, oy;
    uint32_t batch, c, hw, groups;
    float eps;
    uint32_t flags;
} ccfg_vk_push_group_norm;
typedef struct { uint32_t ox, ow, ob, oy, rows, n_in, n_out, flags; } ccfg_vk_push_linear;
typedef struct {
    uint32_t oq, ok, ov, oo, batch, nq, nk, heads, head_dim;
    float scale;
    uint32_t lanes;             /* invocations sharing one query's keys (a power of two <= 64) */
} ccfg_vk_push_attention;
typedef struct {
    uint32_t ox, og, ob, oy, cols, c, affine;
    float eps;
} ccfg_vk_push_layer_norm;
/* shaders/nn_attention.comp's workgroup: 64 invocations = 64 / lanes queries */
enum { CCFG_VK_ATTENTION_WG = 64 };
typedef struct {
    uint32_t ox, oy, count, mode, batch, c, h, w;
    float a, b;
} ccfg_vk_push_eltwise;

/* Records one dispatch of nn pipeline `kernel` on the Vulkan backend be: binding i is the array
 * at device address ptrs[i] holding counts[i] floats; its element offset is written to the i-th
 * uint32 of `push` (the offsets lead every nn push block). `items` work items: one workgroup
 * each when per_group (group_norm), else one invocation each (grid-stride loops), times
 * groups_y workgroup rows (conv2d's output-channel blocks; 1 elsewhere). */
int ccfg_vk_nn_dispatch(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                        const int64_t *counts, void *push, int64_t items, int per_group,
                        uint32_t groups_y);

#endif /* CCFG_VK_NN_H */
