/* backend_vk.c — the Vulkan backend: loader opened at run time, devices, buffers, pipelines
 * (its ops are in backend_vk_ops.c; what the two share is vk_backend.h).
 *
 * Why dlopen: `import ccfg` must work, and the CPU backend must run, on machines without Vulkan.
 * The Vulkan headers are used for types only (VK_NO_PROTOTYPES); every entry point is resolved
 * through vkGetInstanceProcAddr.
 *
 * Addresses: the backend hands out "device addresses" as `float *` that the host never
 * dereferences (as ggml does): each allocation gets a range of a per-device fake address space
 * (non-canonical on x86-64, so a stray dereference faults at once), pointer arithmetic on them
 * works, and every op resolves a pointer to (buffer, element offset) by lookup. The offsets reach
 * the shaders as push constants, so sub-arrays at any element need no descriptor offset (whose
 * minStorageBufferOffsetAlignment would forbid most of them).
 *
 * Execution model: each device has one command buffer that ops are recorded into, with a global
 * memory barrier after every command (simple and always correct; ops of a step depend on each
 * other anyway). The batch is submitted when the host needs a result (reductions, downloads, the
 * non-finite watch) or on sync. Descriptor sets come from a per-device pool reset after every
 * submit. Pipelines are created on first use from SPIR-V embedded at build time
 * (build/shaders/NAME.spv.h); devices with shaderFloat64 get the *_f64 variants, which do the CPU
 * backend's double arithmetic.
 *
 * Memory: on CPU and integrated devices every buffer is host-visible and coherent (persistently
 * mapped: uploads and downloads are memcpy). On discrete GPUs buffers are device-local and data
 * moves through staging buffers copied inside the batch. CCFG_VULKAN_STAGING=1 forces the
 * second path anywhere (tests use it on lavapipe). */
#define _POSIX_C_SOURCE 200809L     /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "nn.h"
#include "vk_nn.h"

/* the registry's list: every device found (ccfg_vk_devices), or why there is none */
int ccfg_backend_vulkan_list(ccfg_device *out, int max, const char **why)
{
    const ccfg_vk_device_info *info;
    int count = 0;
    ccfg_vk_devices(&info, &count);
    if (count == 0) *why = ccfg_vk_unavailable();
    for (int i = 0; i < count && i < max; i++) {
        snprintf(out[i].name, sizeof out[i].name, "vulkan:%d", info[i].index);
        snprintf(out[i].label, sizeof out[i].label, "%s", info[i].name);
        out[i].index = info[i].index;
        out[i].type = info[i].type;
        out[i].available = info[i].usable;
    }
    return count < max ? count : max;
}

#ifdef CCFG_NO_VULKAN
/* Built without glslc or the Vulkan headers: every entry point reports why. */

static const char no_vk[] = "Vulkan backend not built: " CCFG_NO_VULKAN;

int ccfg_vk_devices(const ccfg_vk_device_info **list, int *count)
{
    *list = NULL;
    *count = 0;
    return CCFG_OK;
}
const char *ccfg_vk_unavailable(void) { return no_vk; }
int ccfg_backend_vulkan(int device, const ccfg_backend **out)
{
    (void)device;
    *out = NULL;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_nn_dispatch(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                        const int64_t *counts, void *push, int64_t items, int per_group,
                        uint32_t groups_y)
{
    (void)be; (void)kernel; (void)nbuf; (void)ptrs; (void)counts; (void)push; (void)items;
    (void)per_group; (void)groups_y;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_nn_scratch(const ccfg_backend *be, size_t bytes, float **out)
{
    (void)be; (void)bytes;
    *out = NULL;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_nn_precision(const ccfg_backend *be)
{
    (void)be;
    return 0;
}
int ccfg_vk_nn_set_precision(const ccfg_backend *be, int precision)
{
    (void)be; (void)precision;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
void ccfg_vk_nn_limits(const ccfg_backend *be, uint32_t *shared_bytes, uint32_t *invocations)
{
    (void)be;
    *shared_bytes = 16384; /* Vulkan's guaranteed minimums: never reached without a device */
    *invocations = 128;
}
int ccfg_vk_nn_copy(const ccfg_backend *be, int64_t count, const float *x, float *y, int *done)
{
    (void)be; (void)count; (void)x; (void)y;
    *done = 0;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_profile(int device, int action, ccfg_vk_profile_entry *out, int max, int *count,
                    ccfg_vk_profile_totals *totals)
{
    (void)device; (void)action; (void)out; (void)max; (void)totals;
    *count = 0;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_copy_bench(int device, size_t bytes, int repeats, int mode, double *seconds)
{
    (void)device; (void)bytes; (void)repeats; (void)mode;
    *seconds = 0.0;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}

#else /* the real backend */

#include <dlfcn.h>
#include <time.h>

#include "vk_backend.h"
/* ------------------------------------------------------------------------- */
/* entry points, resolved at run time */

#define VK_GLOBAL_FNS(X) X(CreateInstance) X(EnumerateInstanceVersion)
#define VK_INSTANCE_FNS(X)                                                                        \
    X(DestroyInstance) X(EnumeratePhysicalDevices) X(GetPhysicalDeviceProperties)                 \
    X(GetPhysicalDeviceProperties2) X(GetPhysicalDeviceFeatures) X(GetPhysicalDeviceFeatures2)    \
    X(EnumerateDeviceExtensionProperties)                                                         \
    X(GetPhysicalDeviceMemoryProperties) X(GetPhysicalDeviceQueueFamilyProperties)                \
    X(CreateDevice) X(DestroyDevice) X(GetDeviceQueue) X(CreateBuffer) X(DestroyBuffer)           \
    X(GetBufferMemoryRequirements) X(AllocateMemory) X(FreeMemory) X(BindBufferMemory)            \
    X(MapMemory) X(InvalidateMappedMemoryRanges) X(CreateShaderModule) X(DestroyShaderModule) X(CreateDescriptorSetLayout)       \
    X(CreatePipelineLayout) X(CreateComputePipelines) X(CreateDescriptorPool)                     \
    X(ResetDescriptorPool) X(AllocateDescriptorSets) X(UpdateDescriptorSets)                      \
    X(CreateCommandPool) X(DestroyCommandPool) X(AllocateCommandBuffers) X(BeginCommandBuffer)    \
    X(EndCommandBuffer) X(CmdBindPipeline) X(CmdBindDescriptorSets) X(CmdPushConstants)           \
    X(CmdDispatch) X(CmdPipelineBarrier) X(CmdCopyBuffer) X(CmdFillBuffer) X(QueueSubmit)         \
    X(CreateFence) X(DestroyFence) X(WaitForFences) X(ResetFences) X(DestroyDescriptorPool)       \
    X(DestroyPipeline) X(DestroyPipelineLayout) X(DestroyDescriptorSetLayout)                   \
    X(CreateQueryPool) X(DestroyQueryPool) X(CmdResetQueryPool) X(CmdWriteTimestamp)            \
    X(GetQueryPoolResults)

#define VK_MEMBER(f) PFN_vk##f f;
static struct {
    PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
    VK_GLOBAL_FNS(VK_MEMBER)
    VK_INSTANCE_FNS(VK_MEMBER)
} vk;

/* ------------------------------------------------------------------------- */
/* shaders (SPIR-V generated by setup.py) and their pipelines */

#define SPV(name) static const uint32_t spv_##name[] =
SPV(axpbypcz)
#include "axpbypcz.spv.h"
;
SPV(axpbypcz_f64)
#include "axpbypcz_f64.spv.h"
;
SPV(combine)
#include "combine.spv.h"
;
SPV(combine_f64)
#include "combine_f64.spv.h"
;
SPV(sld)
#include "sld.spv.h"
;
SPV(sld_f64)
#include "sld_f64.spv.h"
;
SPV(gmm_eps)
#include "gmm_eps.spv.h"
;
SPV(gmm_eps_f64)
#include "gmm_eps_f64.spv.h"
;
SPV(randn)
#include "randn.spv.h"
;
SPV(randn_f64)
#include "randn_f64.spv.h"
;
SPV(dots)
#include "dots.spv.h"
;
SPV(dots_f64)
#include "dots_f64.spv.h"
;
SPV(finite)
#include "finite.spv.h"
;
SPV(copy)
#include "copy.spv.h"
;
SPV(clamp_rows)
#include "clamp_rows.spv.h"
;
SPV(coef)
#include "coef.spv.h"
;
SPV(coef_f64)
#include "coef_f64.spv.h"
;
SPV(coef_nb)
#include "coef_nb.spv.h"
;
SPV(coef_nb_f64)
#include "coef_nb_f64.spv.h"
;
SPV(nn_conv2d)
#include "nn_conv2d.spv.h"
;
SPV(nn_group_norm)
#include "nn_group_norm.spv.h"
;
SPV(nn_group_norm_sg)
#include "nn_group_norm_sg.spv.h"
;
SPV(nn_linear)
#include "nn_linear.spv.h"
;
SPV(nn_attention)
#include "nn_attention.spv.h"
;
SPV(nn_eltwise)
#include "nn_eltwise.spv.h"
;
SPV(nn_layer_norm)
#include "nn_layer_norm.spv.h"
;
SPV(nn_conv2d_direct)
#include "nn_conv2d_direct.spv.h"
;
SPV(nn_to_f16)
#include "nn_to_f16.spv.h"
;
SPV(nn_conv2d_f16)
#include "nn_conv2d_f16.spv.h"
;
#ifndef CCFG_NO_COOP_KHR
SPV(nn_conv2d_coop)
#include "nn_conv2d_coop.spv.h"
;
SPV(nn_conv2d_coop8)
#include "nn_conv2d_coop8.spv.h"
;
SPV(nn_conv2d_coop_sb)
#include "nn_conv2d_coop_sb.spv.h"
;
SPV(nn_conv2d_coop8_sb)
#include "nn_conv2d_coop8_sb.spv.h"
;
SPV(nn_conv2d_coop_t24)
#include "nn_conv2d_coop_t24.spv.h"
;
SPV(nn_conv2d_coop_t44)
#include "nn_conv2d_coop_t44.spv.h"
;
SPV(nn_conv2d_coop_t22p)
#include "nn_conv2d_coop_t22p.spv.h"
;
SPV(nn_conv2d_coop_t24p)
#include "nn_conv2d_coop_t24p.spv.h"
;
SPV(nn_conv2d_coop_t44p)
#include "nn_conv2d_coop_t44p.spv.h"
;
SPV(nn_conv2d_coop_t22pp)
#include "nn_conv2d_coop_t22pp.spv.h"
;
SPV(nn_conv2d_coop_t24pp)
#include "nn_conv2d_coop_t24pp.spv.h"
;
SPV(nn_conv2d_coop_t44pp)
#include "nn_conv2d_coop_t44pp.spv.h"
;
SPV(nn_conv2d_coop8_t24)
#include "nn_conv2d_coop8_t24.spv.h"
;
SPV(nn_conv2d_coop8_t44)
#include "nn_conv2d_coop8_t44.spv.h"
;
SPV(nn_conv2d_coop8_t22p)
#include "nn_conv2d_coop8_t22p.spv.h"
;
SPV(nn_conv2d_coop8_t24p)
#include "nn_conv2d_coop8_t24p.spv.h"
;
SPV(nn_conv2d_coop8_t44p)
#include "nn_conv2d_coop8_t44p.spv.h"
;
SPV(nn_conv2d_coop8_t22pp)
#include "nn_conv2d_coop8_t22pp.spv.h"
;
SPV(nn_conv2d_coop8_t24pp)
#include "nn_conv2d_coop8_t24pp.spv.h"
;
SPV(nn_conv2d_coop8_t44pp)
#include "nn_conv2d_coop8_t44pp.spv.h"
;
#else
/* built without a glslc for GL_KHR_cooperative_matrix (setup.py): placeholders, never made into
 * pipelines (coop_variant is 0 on every device and says why) */
SPV(nn_conv2d_coop) {0};
SPV(nn_conv2d_coop8) {0};
SPV(nn_conv2d_coop_sb) {0};
SPV(nn_conv2d_coop8_sb) {0};
SPV(nn_conv2d_coop_t24) {0};
SPV(nn_conv2d_coop_t44) {0};
SPV(nn_conv2d_coop_t22p) {0};
SPV(nn_conv2d_coop_t24p) {0};
SPV(nn_conv2d_coop_t44p) {0};
SPV(nn_conv2d_coop_t22pp) {0};
SPV(nn_conv2d_coop_t24pp) {0};
SPV(nn_conv2d_coop_t44pp) {0};
SPV(nn_conv2d_coop8_t24) {0};
SPV(nn_conv2d_coop8_t44) {0};
SPV(nn_conv2d_coop8_t22p) {0};
SPV(nn_conv2d_coop8_t24p) {0};
SPV(nn_conv2d_coop8_t44p) {0};
SPV(nn_conv2d_coop8_t22pp) {0};
SPV(nn_conv2d_coop8_t24pp) {0};
SPV(nn_conv2d_coop8_t44pp) {0};
#endif
SPV(nn_attention_tiled1)
#include "nn_attention_tiled1.spv.h"
;
SPV(nn_attention_tiled2)
#include "nn_attention_tiled2.spv.h"
;
SPV(nn_attention_tiled3)
#include "nn_attention_tiled3.spv.h"
;
SPV(nn_attention_tiled4)
#include "nn_attention_tiled4.spv.h"
;
SPV(nn_attention_tiled1_q64)
#include "nn_attention_tiled1_q64.spv.h"
;
SPV(nn_attention_tiled2_q64)
#include "nn_attention_tiled2_q64.spv.h"
;
SPV(nn_attention_tiled3_q64)
#include "nn_attention_tiled3_q64.spv.h"
;
SPV(nn_attention_tiled4_q64)
#include "nn_attention_tiled4_q64.spv.h"
;
SPV(nn_attention_tiled1_q64r)
#include "nn_attention_tiled1_q64r.spv.h"
;
SPV(nn_conv2d_reduce)
#include "nn_conv2d_reduce.spv.h"
;
#ifndef CCFG_NO_COOP_KHR
SPV(nn_attention_coop1)
#include "nn_attention_coop1.spv.h"
;
SPV(nn_attention_coop2)
#include "nn_attention_coop2.spv.h"
;
SPV(nn_attention_coop3)
#include "nn_attention_coop3.spv.h"
;
SPV(nn_attention_coop4)
#include "nn_attention_coop4.spv.h"
;
SPV(nn_attention_coop8_1)
#include "nn_attention_coop8_1.spv.h"
;
SPV(nn_attention_coop8_2)
#include "nn_attention_coop8_2.spv.h"
;
SPV(nn_attention_coop8_3)
#include "nn_attention_coop8_3.spv.h"
;
SPV(nn_attention_coop8_4)
#include "nn_attention_coop8_4.spv.h"
;
#else
/* placeholders, as for the coop convolution: never made into pipelines */
SPV(nn_attention_coop1) {0};
SPV(nn_attention_coop2) {0};
SPV(nn_attention_coop3) {0};
SPV(nn_attention_coop4) {0};
SPV(nn_attention_coop8_1) {0};
SPV(nn_attention_coop8_2) {0};
SPV(nn_attention_coop8_3) {0};
SPV(nn_attention_coop8_4) {0};
#endif
SPV(nn_conv2d_t64db)
#include "nn_conv2d_t64db.spv.h"
;
SPV(nn_conv2d_t128)
#include "nn_conv2d_t128.spv.h"
;
SPV(nn_conv2d_t128db)
#include "nn_conv2d_t128db.spv.h"
;
#undef SPV

#define PIPE(P, name, nb, push) [P] = {#name, spv_##name, sizeof spv_##name, nb, sizeof(push)}
static const struct {
    const char *name;
    const uint32_t *code;
    size_t size;
    uint32_t bindings, push;
} pipe_spec[P_COUNT] = {
    PIPE(P_AXPBYPCZ, axpbypcz, 4, push_axpbypcz),
    PIPE(P_AXPBYPCZ_F64, axpbypcz_f64, 4, push_axpbypcz),
    PIPE(P_COMBINE, combine, 10, push_combine),
    PIPE(P_COMBINE_F64, combine_f64, 10, push_combine),
    PIPE(P_SLD, sld, 5, push_sld),
    PIPE(P_SLD_F64, sld_f64, 5, push_sld),
    PIPE(P_GMM, gmm_eps, 8, push_gmm),
    PIPE(P_GMM_F64, gmm_eps_f64, 8, push_gmm),
    PIPE(P_RANDN, randn, 1, push_randn),
    PIPE(P_RANDN_F64, randn_f64, 1, push_randn),
    PIPE(P_DOTS, dots, 4, push_dots),
    PIPE(P_DOTS_F64, dots_f64, 4, push_dots),
    PIPE(P_FINITE, finite, 2, push_finite),
    PIPE(P_COPY, copy, 2, push_copy),
    PIPE(P_CLAMP, clamp_rows, 3, push_clamp),
    PIPE(P_COEF, coef, 4, push_coef),
    PIPE(P_COEF_F64, coef_f64, 4, push_coef),
    PIPE(P_COEF_NB, coef_nb, 4, push_coef),
    PIPE(P_COEF_NB_F64, coef_nb_f64, 4, push_coef),
    PIPE(P_NN_GROUP_NORM_SG, nn_group_norm_sg, 7, ccfg_vk_push_group_norm),
    PIPE(P_NN_CONV2D, nn_conv2d, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_GROUP_NORM, nn_group_norm, 7, ccfg_vk_push_group_norm),
    PIPE(P_NN_LINEAR, nn_linear, 4, ccfg_vk_push_linear),
    PIPE(P_NN_ATTENTION, nn_attention, 5, ccfg_vk_push_attention),
    PIPE(P_NN_ELTWISE, nn_eltwise, 2, ccfg_vk_push_eltwise),
    PIPE(P_NN_LAYER_NORM, nn_layer_norm, 4, ccfg_vk_push_layer_norm),
    PIPE(P_NN_CONV2D_DIRECT, nn_conv2d_direct, CCFG_VK_CONV_BINDINGS, ccfg_vk_push_conv2d),
    PIPE(P_NN_TO_F16, nn_to_f16, 2, ccfg_vk_push_to_f16),
    PIPE(P_NN_CONV2D_F16, nn_conv2d_f16, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP, nn_conv2d_coop, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8, nn_conv2d_coop8, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_ATTENTION_TILED1, nn_attention_tiled1, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED2, nn_attention_tiled2, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED3, nn_attention_tiled3, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED4, nn_attention_tiled4, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED1_Q64, nn_attention_tiled1_q64, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED2_Q64, nn_attention_tiled2_q64, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED3_Q64, nn_attention_tiled3_q64, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED4_Q64, nn_attention_tiled4_q64, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_TILED1_Q64R, nn_attention_tiled1_q64r, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_CONV2D_REDUCE, nn_conv2d_reduce, CCFG_VK_CONV_REDUCE_BINDINGS,
         ccfg_vk_push_conv2d_reduce),
    PIPE(P_NN_CONV2D_COOP_SB, nn_conv2d_coop_sb, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_SB, nn_conv2d_coop8_sb, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_ATTENTION_COOP1, nn_attention_coop1, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP2, nn_attention_coop2, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP3, nn_attention_coop3, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP4, nn_attention_coop4, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP8_1, nn_attention_coop8_1, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP8_2, nn_attention_coop8_2, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP8_3, nn_attention_coop8_3, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_ATTENTION_COOP8_4, nn_attention_coop8_4, 5, ccfg_vk_push_attention_tiled),
    PIPE(P_NN_CONV2D_COOP_T24, nn_conv2d_coop_t24, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T44, nn_conv2d_coop_t44, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T22P, nn_conv2d_coop_t22p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T24P, nn_conv2d_coop_t24p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T44P, nn_conv2d_coop_t44p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T22PP, nn_conv2d_coop_t22pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T24PP, nn_conv2d_coop_t24pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP_T44PP, nn_conv2d_coop_t44pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T24, nn_conv2d_coop8_t24, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T44, nn_conv2d_coop8_t44, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T22P, nn_conv2d_coop8_t22p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T24P, nn_conv2d_coop8_t24p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T44P, nn_conv2d_coop8_t44p, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T22PP, nn_conv2d_coop8_t22pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T24PP, nn_conv2d_coop8_t24pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_COOP8_T44PP, nn_conv2d_coop8_t44pp, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_T64DB, nn_conv2d_t64db, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_T128, nn_conv2d_t128, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
    PIPE(P_NN_CONV2D_T128DB, nn_conv2d_t128db, CCFG_VK_CONV_TILED_BINDINGS,
         ccfg_vk_push_conv2d_tiled),
};
#undef PIPE

/* recycled buffers: power-of-two sizes up to RECYCLE_MAX each, RECYCLE_TOTAL bytes kept idle */
#define RECYCLE_MAX ((size_t)16 << 20)
#define RECYCLE_TOTAL ((size_t)64 << 20)
/* above RECYCLE_MAX, the largest idle staging buffer of each direction is kept (up to SPARE_MAX):
 * large uploads and downloads then allocate and page-fault no new host-visible memory */
#define SPARE_MAX ((size_t)1 << 30)

/* ------------------------------------------------------------------------- */
/* state */

static struct {
    void *lib;
    VkInstance instance;
    int count;
    ccfg_vk_device_info info[MAX_DEVICES];
    VkPhysicalDevice phys[MAX_DEVICES];
    uint32_t qfam[MAX_DEVICES];
    int subgroup_arith[MAX_DEVICES];    /* subgroup arithmetic in compute shaders */
    uint32_t ts_bits[MAX_DEVICES];      /* the queue family's timestampValidBits */
    float ts_period[MAX_DEVICES];       /* ns per timestamp tick */
    vk_dev *dev[MAX_DEVICES];
    char reason[512];           /* why there is no device, when count == 0 */
    /* the cooperative-matrix convolution (describe_half, decide_coop): its variant
     * (CCFG_VK_PRECISION_COOP or _COOP8) or 0 and then why not; whether its pipeline pins the
     * subgroup size (VK_EXT_subgroup_size_control, enabled with the device) */
    int coop_variant[MAX_DEVICES];
    int coop_pin[MAX_DEVICES];
    char coop_why[MAX_DEVICES][320];
    uint32_t coop_stages[MAX_DEVICES];  /* VK_KHR_cooperative_matrix's supported stages */
    /* subgroup size control (Vulkan 1.3 core or the EXT extension, then sg_ext): usable for
     * compute with full subgroups, and its range of sizes */
    int sg_control[MAX_DEVICES], sg_ext[MAX_DEVICES];
    uint32_t sg_min[MAX_DEVICES], sg_max[MAX_DEVICES];
} g;

static const char *vk_result_name(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    default: return "VkResult error";
    }
}

/* A failed call on device d: RuntimeError naming the device, the call and the result. */
static int vk_fail(const vk_dev *d, const char *what, VkResult r)
{
    return ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s): %s failed: %s (%d)", d->index,
                     g.info[d->index].name, what, vk_result_name(r), (int)r);
}

/* ------------------------------------------------------------------------- */
/* instance and device enumeration (once per process) */

static const char *type_name(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

/* VK_KHR_cooperative_matrix is newer than the Vulkan headers this builds with (1.3.239): its
 * structures as the registry defines them (extension 507; the component and scope enums have the
 * NV extension's values) */
#define CCFG_STYPE_COOP_FEATURES_KHR ((VkStructureType)1000506000)
#define CCFG_STYPE_COOP_PROPERTIES_KHR ((VkStructureType)1000506001)
typedef struct {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix, cooperativeMatrixRobustBufferAccess;
} coop_features_khr;
typedef struct {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    uint32_t AType, BType, CType, ResultType;
    VkBool32 saturatingAccumulation;
    uint32_t scope;
} coop_properties_khr;
typedef VkResult (VKAPI_PTR *pfn_coop_properties_khr)(VkPhysicalDevice, uint32_t *,
                                                      coop_properties_khr *);
#define CCFG_STYPE_COOP_DEVICE_PROPERTIES_KHR ((VkStructureType)1000506002)
typedef struct {
    VkStructureType sType;
    void *pNext;
    VkShaderStageFlags cooperativeMatrixSupportedStages;
} coop_device_properties_khr;
/* the component types and scope of VkCooperativeMatrixPropertiesKHR this build's shaders use */
enum { COOP_FLOAT16 = 0, COOP_FLOAT32 = 1, COOP_SCOPE_SUBGROUP = 3 };

/* whether device pd offers extension `name` */
static int has_extension(VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    int found = 0;
    if (vk.EnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || !n) return 0;
    VkExtensionProperties *ext = malloc((size_t)n * sizeof *ext);
    if (!ext) return 0;         /* reported as absent: the half paths stay off */
    VkResult r = vk.EnumerateDeviceExtensionProperties(pd, NULL, &n, ext);
    if (r == VK_SUCCESS || r == VK_INCOMPLETE)
        for (uint32_t e = 0; e < n && !found; e++) found = !strcmp(ext[e].extensionName, name);
    free(ext);
    return found;
}

/* The half-precision features of pd (Vulkan >= 1.2): 16-bit storage, float16 arithmetic and the
 * cooperative matrix extensions with their (M, N, K, types, scope) list. Only recorded here; a
 * device enables them when CCFG_VULKAN_PRECISION asks for a path that uses them (get_device). */
static void describe_half(ccfg_vk_device_info *info, VkPhysicalDevice pd)
{
    info->coop_nv = has_extension(pd, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    info->coop_khr = has_extension(pd, "VK_KHR_cooperative_matrix");
    VkPhysicalDeviceCooperativeMatrixFeaturesNV nv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    coop_features_khr khr = {.sType = CCFG_STYPE_COOP_FEATURES_KHR};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
    /* chain an extension's structure only where the extension exists */
    void **tail = &f12.pNext;
    if (info->coop_nv) {
        *tail = &nv;
        tail = &nv.pNext;
    }
    if (info->coop_khr) {
        *tail = &khr;
        tail = &khr.pNext;
    }
    /* subgroup size control through its extension: the instance asks for Vulkan 1.2, so the
     * 1.3 core feature is not ours to use; drivers keep listing the extension */
    const int i = info->index;
    g.sg_ext[i] = has_extension(pd, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT};
    if (g.sg_ext[i]) *tail = &sgf;
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vk.GetPhysicalDeviceFeatures2(pd, &f2);
    info->storage16 = f11.storageBuffer16BitAccess == VK_TRUE;
    info->float16 = f12.shaderFloat16 == VK_TRUE;
    info->memory_model = f12.vulkanMemoryModel == VK_TRUE;
    info->coop_nv = info->coop_nv && nv.cooperativeMatrix == VK_TRUE;
    info->coop_khr = info->coop_khr && khr.cooperativeMatrix == VK_TRUE;

    /* the stages the KHR matrices run in, and the range of subgroup sizes a pipeline can ask for */
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sgp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT};
    coop_device_properties_khr kp = {.sType = CCFG_STYPE_COOP_DEVICE_PROPERTIES_KHR};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    void **ptail = &p2.pNext;
    if (g.sg_ext[i]) {
        *ptail = &sgp;
        ptail = &sgp.pNext;
    }
    if (info->coop_khr) *ptail = &kp;
    vk.GetPhysicalDeviceProperties2(pd, &p2);
    g.coop_stages[i] = info->coop_khr ? kp.cooperativeMatrixSupportedStages : 0;
    g.sg_control[i] = g.sg_ext[i] && sgf.subgroupSizeControl == VK_TRUE &&
                      sgf.computeFullSubgroups == VK_TRUE &&
                      (sgp.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                      sgp.maxComputeWorkgroupSubgroups >= CCFG_VK_COOP_SUBGROUPS;
    g.sg_min[i] = g.sg_control[i] ? sgp.minSubgroupSize : 0;
    g.sg_max[i] = g.sg_control[i] ? sgp.maxSubgroupSize : 0;

    /* the shapes: the query functions are instance-level entry points of the extensions, absent
     * from older loaders (then no shapes, and the coop path stays off) */
    const int cap = (int)(sizeof info->coop / sizeof info->coop[0]);
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get_nv =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vk.GetInstanceProcAddr(
            g.instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    uint32_t n = 0;
    if (info->coop_nv && get_nv && get_nv(pd, &n, NULL) == VK_SUCCESS && n) {
        VkCooperativeMatrixPropertiesNV *pr = calloc(n, sizeof *pr);
        if (pr) {
            for (uint32_t j = 0; j < n; j++)
                pr[j].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
            VkResult r = get_nv(pd, &n, pr);
            for (uint32_t j = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && j < n &&
                                 info->ncoop < cap; j++)
                info->coop[info->ncoop++] = (ccfg_vk_coop_shape){
                    pr[j].MSize, pr[j].NSize, pr[j].KSize, (uint32_t)pr[j].AType,
                    (uint32_t)pr[j].BType, (uint32_t)pr[j].CType, (uint32_t)pr[j].DType,
                    (uint32_t)pr[j].scope, 0};
            free(pr);
        }
    }
    pfn_coop_properties_khr get_khr = (pfn_coop_properties_khr)vk.GetInstanceProcAddr(
        g.instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    n = 0;
    if (info->coop_khr && get_khr && get_khr(pd, &n, NULL) == VK_SUCCESS && n) {
        coop_properties_khr *pr = calloc(n, sizeof *pr);
        if (pr) {
            for (uint32_t j = 0; j < n; j++) pr[j].sType = CCFG_STYPE_COOP_PROPERTIES_KHR;
            VkResult r = get_khr(pd, &n, pr);
            for (uint32_t j = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && j < n &&
                                 info->ncoop < cap; j++)
                info->coop[info->ncoop++] = (ccfg_vk_coop_shape){
                    pr[j].MSize, pr[j].NSize, pr[j].KSize, pr[j].AType, pr[j].BType,
                    pr[j].CType, pr[j].ResultType, pr[j].scope, 1};
            free(pr);
        }
    }
}

static void decide_coop(int i);
static int coop_variant(int i);

static void describe_device(int i, VkPhysicalDevice pd)
{
    ccfg_vk_device_info *info = &g.info[i];
    VkPhysicalDeviceProperties props;
    vk.GetPhysicalDeviceProperties(pd, &props);

    memset(info, 0, sizeof *info);
    info->index = i;
    snprintf(info->name, sizeof info->name, "%s", props.deviceName);
    info->type = type_name(props.deviceType);
    info->vendor_id = props.vendorID;
    info->device_id = props.deviceID;
    info->api_version = props.apiVersion;
    info->max_storage_buffer_range = props.limits.maxStorageBufferRange;
    info->max_workgroup_invocations = props.limits.maxComputeWorkGroupInvocations;
    info->max_shared_memory = props.limits.maxComputeSharedMemorySize;

    /* subgroup properties are core in 1.1, driver properties in 1.2: chain only what exists */
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
    if (props.apiVersion >= VK_API_VERSION_1_2) sub.pNext = &drv;
    if (props.apiVersion >= VK_API_VERSION_1_1) {
        vk.GetPhysicalDeviceProperties2(pd, &p2);
        info->subgroup_size = sub.subgroupSize;
        g.subgroup_arith[i] = (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                              (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
    }
    if (props.apiVersion >= VK_API_VERSION_1_2) {
        snprintf(info->driver_name, sizeof info->driver_name, "%s", drv.driverName);
        snprintf(info->driver_info, sizeof info->driver_info, "%s", drv.driverInfo);
    }

    VkPhysicalDeviceFeatures feat;
    vk.GetPhysicalDeviceFeatures(pd, &feat);
    info->float64 = feat.shaderFloat64 == VK_TRUE;

    VkPhysicalDeviceMemoryProperties mem;
    vk.GetPhysicalDeviceMemoryProperties(pd, &mem);
    for (uint32_t h = 0; h < mem.memoryHeapCount; h++)
        if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            info->device_local_bytes += mem.memoryHeaps[h].size;

    /* any family with compute will do: one queue, used by one thread */
    uint32_t nq = 0;
    VkQueueFamilyProperties qf[32];
    vk.GetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    if (nq > 32) nq = 32;
    vk.GetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    int has_compute = 0;
    for (uint32_t q = 0; q < nq && !has_compute; q++)
        if (qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            g.qfam[i] = q;
            g.ts_bits[i] = qf[q].timestampValidBits;
            has_compute = 1;
        }
    g.ts_period[i] = props.limits.timestampPeriod;
    info->usable = has_compute && props.apiVersion >= VK_API_VERSION_1_2;
    if (props.apiVersion >= VK_API_VERSION_1_2) describe_half(info, pd);
    if (props.apiVersion >= VK_API_VERSION_1_2)
        decide_coop(i);
    else
        snprintf(g.coop_why[i], sizeof g.coop_why[i], "Vulkan %u.%u (needs 1.2)",
                 VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion));
    info->precisions = 1 | (info->storage16 ? 2 : 0) | (coop_variant(i) ? 4 : 0);
}

static void destroy_device(vk_dev *d);
static int flush(vk_dev *d);

/* At exit (after Python's finalisation has freed its objects): every device and the instance,
 * so drivers and the validation layer see a clean shutdown. A device still held by a running
 * thread is left alone, and then the instance too. */
static void teardown(void)
{
    int busy = 0;
    for (int i = 0; i < g.count; i++) {
        vk_dev *d = g.dev[i];
        if (!d) continue;
        if (pthread_mutex_trylock(&d->mutex) != 0) {
            busy = 1;
            continue;
        }
        if (d->recording || d->inflight) flush(d);
        pthread_mutex_unlock(&d->mutex);
        destroy_device(d);
        g.dev[i] = NULL;
    }
    if (!busy && g.instance) {
        vk.DestroyInstance(g.instance, NULL);
        g.instance = VK_NULL_HANDLE;
    }
}

/* Fills g; on failure g.count stays 0 and g.reason says why. Never crashes without Vulkan. */
static void init_instance(void)
{
    const char *path = getenv("CCFG_VULKAN_LOADER");
    if (!path || !*path) path = "libvulkan.so.1";
    g.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g.lib) {
        const char *e = dlerror();
        snprintf(g.reason, sizeof g.reason, "no Vulkan loader: cannot open %s (%s)", path,
                 e ? e : "dlopen failed");
        return;
    }
    /* dlsym returns void*; going through memcpy keeps -Wpedantic quiet about the conversion */
    void *sym = dlsym(g.lib, "vkGetInstanceProcAddr");
    if (!sym) {
        snprintf(g.reason, sizeof g.reason, "%s has no vkGetInstanceProcAddr", path);
        goto fail;
    }
    memcpy(&vk.GetInstanceProcAddr, &sym, sizeof sym);

#define LOAD_GLOBAL(f) vk.f = (PFN_vk##f)vk.GetInstanceProcAddr(NULL, "vk" #f);
    VK_GLOBAL_FNS(LOAD_GLOBAL)
#undef LOAD_GLOBAL
    if (!vk.CreateInstance) {
        snprintf(g.reason, sizeof g.reason, "the Vulkan loader %s has no vkCreateInstance", path);
        goto fail;
    }
    uint32_t loader_version = VK_API_VERSION_1_0;
    if (vk.EnumerateInstanceVersion) vk.EnumerateInstanceVersion(&loader_version);
    if (loader_version < VK_API_VERSION_1_2) {
        snprintf(g.reason, sizeof g.reason, "the Vulkan loader is version %u.%u; ccfg needs 1.2",
                 VK_API_VERSION_MAJOR(loader_version), VK_API_VERSION_MINOR(loader_version));
        goto fail;
    }

    const VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "ccfg",
        .pEngineName = "ccfg", .apiVersion = VK_API_VERSION_1_2,
    };
    const VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                      .pApplicationInfo = &app};
    VkResult r = vk.CreateInstance(&ici, NULL, &g.instance);
    if (r != VK_SUCCESS) {
        /* the loader answers VK_ERROR_INCOMPATIBLE_DRIVER when it finds no ICD at all */
        snprintf(g.reason, sizeof g.reason, "vkCreateInstance failed: %s%s", vk_result_name(r),
                 r == VK_ERROR_INCOMPATIBLE_DRIVER ? " (no Vulkan driver (ICD) installed?)" : "");
        g.instance = VK_NULL_HANDLE;
        goto fail;
    }

#define LOAD_INSTANCE(f)                                                                          \
    vk.f = (PFN_vk##f)vk.GetInstanceProcAddr(g.instance, "vk" #f);                                \
    if (!vk.f) {                                                                                  \
        snprintf(g.reason, sizeof g.reason, "the Vulkan loader lacks vk" #f);                     \
        goto fail_instance;                                                                       \
    }
    VK_INSTANCE_FNS(LOAD_INSTANCE)
#undef LOAD_INSTANCE

    uint32_t n = 0;
    r = vk.EnumeratePhysicalDevices(g.instance, &n, NULL);
    if (r != VK_SUCCESS) {
        snprintf(g.reason, sizeof g.reason, "vkEnumeratePhysicalDevices failed: %s", vk_result_name(r));
        goto fail_instance;
    }
    if (n == 0) {
        snprintf(g.reason, sizeof g.reason, "no Vulkan devices (the loader found no driver exposing one)");
        goto fail_instance;
    }
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    r = vk.EnumeratePhysicalDevices(g.instance, &n, g.phys);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        snprintf(g.reason, sizeof g.reason, "vkEnumeratePhysicalDevices failed: %s", vk_result_name(r));
        goto fail_instance;
    }
    for (uint32_t i = 0; i < n; i++) describe_device((int)i, g.phys[i]);
    g.count = (int)n;
    /* registered after the driver loaded: runs before the driver's own exit handlers */
    atexit(teardown);
    return;

fail_instance:
    vk.DestroyInstance(g.instance, NULL);
    g.instance = VK_NULL_HANDLE;
fail:
    dlclose(g.lib);
    g.lib = NULL;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

int ccfg_vk_devices(const ccfg_vk_device_info **list, int *count)
{
    pthread_once(&init_once, init_instance);
    *list = g.count ? g.info : NULL;
    *count = g.count;
    return CCFG_OK;
}

const char *ccfg_vk_unavailable(void)
{
    pthread_once(&init_once, init_instance);
    return g.count ? NULL : g.reason;
}

/* ------------------------------------------------------------------------- */
/* logical devices, created on first use */

static void destroy_buffer(vk_buffer *b);

static void destroy_device(vk_dev *d)
{
    if (!d) return;
    if (d->flag) destroy_buffer(d->flag);
    while (d->garbage) {
        vk_buffer *b = d->garbage;
        d->garbage = b->next;
        destroy_buffer(b);
    }
    for (int i = 0; i < d->nranges; i++) destroy_buffer(d->ranges[i].buf);   /* never released */
    while (d->recycled) {
        vk_buffer *b = d->recycled;
        d->recycled = b->next;
        destroy_buffer(b);
    }
    for (int k = 0; k < BUF_KINDS; k++)
        if (d->spare[k]) destroy_buffer(d->spare[k]);
    free(d->ranges);
    vkb_tune_free(d);           /* before the device: it holds a query pool of it */
    if (d->dev) {
        for (int p = 0; p < P_COUNT; p++) {
            if (d->pipe[p].pipeline) vk.DestroyPipeline(d->dev, d->pipe[p].pipeline, NULL);
            if (d->pipe[p].layout) vk.DestroyPipelineLayout(d->dev, d->pipe[p].layout, NULL);
            if (d->pipe[p].dsl) vk.DestroyDescriptorSetLayout(d->dev, d->pipe[p].dsl, NULL);
        }
        for (int i = 0; i < 2; i++) {
            if (d->pools[i]) vk.DestroyDescriptorPool(d->dev, d->pools[i], NULL);
            if (d->fences[i]) vk.DestroyFence(d->dev, d->fences[i], NULL);
        }
        if (d->queries) vk.DestroyQueryPool(d->dev, d->queries, NULL);
        if (d->cmd_pool) vk.DestroyCommandPool(d->dev, d->cmd_pool, NULL);
        vk.DestroyDevice(d->dev, NULL);
    }
    pthread_mutex_destroy(&d->mutex);
    free(d);
}

static int create_buffer(vk_dev *d, size_t bytes, int kind, vk_buffer **out);
static void init_backend_table(vk_dev *d);

/* The cooperative matrix variant device i runs, into g.coop_variant[i] (0: none, and
 * g.coop_why[i] says why): shaders/nn_conv2d_coop.glsl's 16 x 16 x 16 in subgroups of 32
 * (CCFG_VK_PRECISION_COOP) or 8 x 8 x 8 in subgroups of 8 (_COOP8), the first whose shape
 * VK_KHR_cooperative_matrix lists with float16 A and B, float32 C and result at subgroup scope
 * and whose subgroup size the device runs: its own, or one VK_EXT_subgroup_size_control pins
 * (with full subgroups). The shader also needs float16 arithmetic, 16-bit storage and the Vulkan
 * memory model (its SPIR-V declares them), and compute among the matrices' stages. Where the
 * device can pin the size, the pipeline does so even when it is the device's own: then full
 * subgroups are guaranteed rather than assumed (CCFG_VULKAN_COOP_NO_PIN=1: never). */
static void decide_coop(int i)
{
    const ccfg_vk_device_info *v = &g.info[i];
    static const struct { int variant; uint32_t mnk, sg; } variants[] = {
        {CCFG_VK_PRECISION_COOP, CCFG_VK_COOP_BK, CCFG_VK_COOP_SUBGROUP},
        {CCFG_VK_PRECISION_COOP8, CCFG_VK_COOP8_BK, CCFG_VK_COOP8_SUBGROUP}};
    char *why = g.coop_why[i];
    const size_t n = sizeof g.coop_why[i];
    /* CCFG_VULKAN_COOP_NO_PIN=1: never pin, as on a device without subgroup size control (the
     * variant then needs the device's own size; lets lavapipe, which can pin, test that path) */
    const char *np = getenv("CCFG_VULKAN_COOP_NO_PIN");
    const int no_pin = np && *np && strcmp(np, "0");
    g.coop_variant[i] = 0;
    g.coop_pin[i] = 0;
#ifdef CCFG_NO_COOP_KHR
    (void)v;
    (void)variants;
    (void)no_pin;
    snprintf(why, n, "this build has no cooperative-matrix shaders: %s", CCFG_NO_COOP_KHR);
#else
    if (!v->coop_khr) {
        snprintf(why, n, "no VK_KHR_cooperative_matrix (the extension with its "
                 "cooperativeMatrix feature)");
        return;
    }
    if (!v->float16 || !v->storage16 || !v->memory_model) {
        snprintf(why, n, "VK_KHR_cooperative_matrix without%s%s%s", v->float16 ? "" :
                 " shaderFloat16", v->storage16 ? "" : " storageBuffer16BitAccess",
                 v->memory_model ? "" : " vulkanMemoryModel");
        return;
    }
    if (!(g.coop_stages[i] & VK_SHADER_STAGE_COMPUTE_BIT)) {
        snprintf(why, n, "VK_KHR_cooperative_matrix not in compute shaders");
        return;
    }
    int listed = 0;
    for (size_t k = 0; k < sizeof variants / sizeof variants[0]; k++) {
        const uint32_t mnk = variants[k].mnk, sg = variants[k].sg;
        int has = 0;
        for (int j = 0; j < v->ncoop && !has; j++) {
            const ccfg_vk_coop_shape *c = &v->coop[j];
            has = c->khr && c->m == mnk && c->n == mnk && c->k == mnk && c->a == COOP_FLOAT16 &&
                  c->b == COOP_FLOAT16 && c->c == COOP_FLOAT32 && c->result == COOP_FLOAT32 &&
                  c->scope == COOP_SCOPE_SUBGROUP;
        }
        if (!has) continue;
        const int pin = g.sg_control[i] && g.sg_min[i] <= sg && sg <= g.sg_max[i] && !no_pin;
        if (pin || v->subgroup_size == sg) {
            g.coop_variant[i] = variants[k].variant;
            g.coop_pin[i] = pin;
            why[0] = 0;
            return;
        }
        if (!listed)    /* the reason of the first listed shape */
            snprintf(why, n, "VK_KHR_cooperative_matrix lists %ux%ux%u float16 -> float32, which "
                     "runs in subgroups of %u, but the device's subgroups are %u and "
                     "VK_EXT_subgroup_size_control cannot pin %u for compute", mnk, mnk, mnk, sg,
                     v->subgroup_size, sg);
        listed = 1;
    }
    if (!listed)
        snprintf(why, n, "VK_KHR_cooperative_matrix lists neither 16x16x16 nor 8x8x8 with float16 "
                 "A and B, float32 C and result at subgroup scope");
#endif
}

static int coop_variant(int i)
{
    return g.coop_variant[i];
}

/* CCFG_VULKAN_PRECISION for device i: fp32 (unset or empty: the default), fp16 (needs
 * storageBuffer16BitAccess), coop (a cooperative matrix shape, coop_variant) or auto (fp16 where
 * the device has 16-bit storage, else fp32). auto never picks coop: the cooperative-matrix shader
 * has been checked against the CPU only on lavapipe 26 (8x8x8), never on a GPU (16x16x16), so
 * only an explicit coop runs it.
 * Asking for what the device lacks is an error naming the variable. */
static int choose_precision(int i, int *out)
{
    const char *env = getenv("CCFG_VULKAN_PRECISION");
    const ccfg_vk_device_info *v = &g.info[i];
    const int coop = coop_variant(i);
    *out = CCFG_VK_PRECISION_FP32;
    if (!env || !*env || !strcmp(env, "fp32")) return CCFG_OK;
    if (!strcmp(env, "auto")) {
        *out = v->storage16 ? CCFG_VK_PRECISION_FP16 : CCFG_VK_PRECISION_FP32;
        return CCFG_OK;
    }
    if (!strcmp(env, "fp16")) {
        if (!v->storage16)
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_PRECISION=fp16: Vulkan device %d (%s) has "
                             "no storageBuffer16BitAccess (unset it, or set it to fp32 or auto)",
                             i, v->name);
        *out = CCFG_VK_PRECISION_FP16;
        return CCFG_OK;
    }
    if (!strcmp(env, "coop")) {
        if (!coop)
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_PRECISION=coop: Vulkan device %d (%s) "
                             "cannot run the cooperative-matrix convolution: %s; see "
                             "ccfg.devices() (unset it, or set it to fp16, fp32 or auto)", i,
                             v->name, g.coop_why[i]);
        *out = coop;
        return CCFG_OK;
    }
    return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_PRECISION must be fp32, fp16, coop or auto, not "
                     "'%s'", env);
}

/* vkCreateDevice for d with the features its precision uses and no others: float64 as before;
 * 16-bit storage for fp16; with it shaderFloat16, vulkanMemoryModel and VK_KHR_cooperative_matrix
 * for coop, and VK_EXT_subgroup_size_control where the coop pipeline pins its subgroup size */
static VkResult create_logical_device(vk_dev *d, const VkDeviceQueueCreateInfo *qci)
{
    const int half = d->precision != CCFG_VK_PRECISION_FP32;
    const int coop = d->precision == CCFG_VK_PRECISION_COOP ||
                     d->precision == CCFG_VK_PRECISION_COOP8;
    const int pin = coop && g.coop_pin[d->index];
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
        .subgroupSizeControl = VK_TRUE, .computeFullSubgroups = VK_TRUE};
    coop_features_khr khr = {.sType = CCFG_STYPE_COOP_FEATURES_KHR, .pNext = pin ? &sgf : NULL,
                             .cooperativeMatrix = VK_TRUE};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = coop ? &khr : NULL,
        .shaderFloat16 = coop ? VK_TRUE : VK_FALSE,
        .vulkanMemoryModel = coop ? VK_TRUE : VK_FALSE};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12,
        .storageBuffer16BitAccess = VK_TRUE};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    f2.features.shaderFloat64 = d->f64 ? VK_TRUE : VK_FALSE;
    const char *ext[2] = {"VK_KHR_cooperative_matrix",
                          VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = qci};
    if (half) {
        dci.pNext = &f2;        /* pEnabledFeatures must then be NULL */
        dci.enabledExtensionCount = coop ? (pin ? 2 : 1) : 0;
        dci.ppEnabledExtensionNames = coop ? ext : NULL;
        return vk.CreateDevice(d->phys, &dci, NULL, &d->dev);
    }
    dci.pEnabledFeatures = &f2.features;
    return vk.CreateDevice(d->phys, &dci, NULL, &d->dev);
}

static int get_device(int index, vk_dev **out)
{
    VkResult r;
    vk_dev *d = NULL;
    *out = NULL;
    const char *why = ccfg_vk_unavailable();
    if (why) return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", why);
    if (index < 0 || index >= g.count)
        return ccfg_fail(CCFG_EINVAL, "no Vulkan device %d (found %d)", index, g.count);
    if (g.dev[index]) {
        *out = g.dev[index];
        return CCFG_OK;
    }
    if (!g.info[index].usable)
        return ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s) cannot run ccfg: needs Vulkan 1.2 "
                         "and a compute queue", index, g.info[index].name);

    d = calloc(1, sizeof *d);
    if (!d) return ccfg_fail(CCFG_ENOMEM, "out of memory opening Vulkan device %d", index);
    if (pthread_mutex_init(&d->mutex, NULL)) {
        free(d);
        return ccfg_fail(CCFG_EINTERNAL, "cannot create a mutex for Vulkan device %d", index);
    }
    d->index = index;
    d->max_storage_buffer_range = g.info[index].max_storage_buffer_range;
    d->loop_limit = strstr(g.info[index].driver_name, "llvmpipe") ? 65535 : 0;
    d->tick_ns = g.ts_period[index];
    d->ts_mask = g.ts_bits[index] >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << g.ts_bits[index]) - 1);
    d->phys = g.phys[index];
    d->batch = 1;
    vk.GetPhysicalDeviceMemoryProperties(d->phys, &d->mem);
    /* CPU and integrated devices share host memory: mapping everything is both simplest and fastest */
    const char *type = g.info[index].type;
    const char *staging = getenv("CCFG_VULKAN_STAGING");
    d->mapped = (!strcmp(type, "cpu") || !strcmp(type, "integrated")) &&
                !(staging && *staging && strcmp(staging, "0"));

    const float prio = 1.0f;
    const VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                         .queueFamilyIndex = g.qfam[index], .queueCount = 1,
                                         .pQueuePriorities = &prio};
    /* float64 shaders where the device has them: the CPU backend's arithmetic (see real.glsl) */
    const char *no_f64 = getenv("CCFG_VULKAN_NO_F64");
    d->f64 = g.info[index].float64 && !(no_f64 && *no_f64 && strcmp(no_f64, "0"));
    /* the coefficient tables of rules with a device form on the host, as before combine_form
     * (tests compare the two paths on one device; benchmarks measure the round trip it saves) */
    const char *host_coef = getenv("CCFG_VULKAN_HOST_COEFFICIENTS");
    d->host_coefficients = host_coef && *host_coef && strcmp(host_coef, "0");
    /* the old coef path, for A/B runs and the bit-identity tests: every stage in the shader
     * with stage 1's barriers, and stage 0's sums of the partials a dispatch of their own */
    const char *coef_bar = getenv("CCFG_VULKAN_COEF_BARRIERS");
    d->coef_barriers = coef_bar && *coef_bar && strcmp(coef_bar, "0");
    const char *coef_unf = getenv("CCFG_VULKAN_COEF_UNFUSED");
    d->coef_unfused = coef_unf && *coef_unf && strcmp(coef_unf, "0");
    int status;
    if ((status = choose_precision(index, &d->precision))) goto fail_status;
    d->opened_precision = d->precision;
    /* subgroup-reduction variants where the device has subgroup arithmetic in compute shaders
     * (Vulkan 1.1 core, optional per operation class); CCFG_VULKAN_NO_SUBGROUP=1 forces the
     * shared-memory trees (tests run both on one device) */
    const char *no_sg = getenv("CCFG_VULKAN_NO_SUBGROUP");
    d->subgroup = g.subgroup_arith[index] && !(no_sg && *no_sg && strcmp(no_sg, "0"));
    /* the mixture's stacked conditions share densities (gmm_eps.glsl mode 2); off: every row on
     * its own, as before (tests compare the two; benchmarks measure the sharing) */
    const char *no_share = getenv("CCFG_VULKAN_GMM_NO_SHARING");
    d->gmm_sharing = !(no_share && *no_share && strcmp(no_share, "0"));
    /* gmm_eps modes 1-2: parameters in shared memory, the row's x and per-component values in
     * the invocation's own arrays, the condition ids kept on the device between calls; off: all
     * in global memory and cond uploaded per call, as before (the same bits; for A/B) */
    const char *gmm_v1 = getenv("CCFG_VULKAN_GMM_V1");
    d->gmm_near = !(gmm_v1 && *gmm_v1 && strcmp(gmm_v1, "0"));
    /* be->submit waits for the batch it submits, as before the two slots (benchmarks compare) */
    const char *sync_pacing = getenv("CCFG_VULKAN_SYNC_PACING");
    d->sync_pacing = sync_pacing && *sync_pacing && strcmp(sync_pacing, "0");
    r = create_logical_device(d, &qci);
    if (r != VK_SUCCESS) {
        d->dev = VK_NULL_HANDLE;
        vk_fail(d, "vkCreateDevice", r);
        goto fail;
    }
    vk.GetDeviceQueue(d->dev, g.qfam[index], 0, &d->queue);

    const VkCommandPoolCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                         .queueFamilyIndex = g.qfam[index]};
    if ((r = vk.CreateCommandPool(d->dev, &cpi, NULL, &d->cmd_pool)) != VK_SUCCESS) {
        vk_fail(d, "vkCreateCommandPool", r);
        goto fail;
    }
    const VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                             .commandPool = d->cmd_pool,
                                             .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                             .commandBufferCount = 2};
    if ((r = vk.AllocateCommandBuffers(d->dev, &cai, d->cmds)) != VK_SUCCESS) {
        vk_fail(d, "vkAllocateCommandBuffers", r);
        goto fail;
    }
    /* two slots (command buffer, fence, descriptor pool): one records while the other runs */
    const VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    const VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                     .descriptorCount = POOL_SETS * MAX_BINDINGS};
    const VkDescriptorPoolCreateInfo dpi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = POOL_SETS, .poolSizeCount = 1,
                                            .pPoolSizes = &ps};
    for (int i = 0; i < 2; i++) {
        if ((r = vk.CreateFence(d->dev, &fci, NULL, &d->fences[i])) != VK_SUCCESS) {
            d->fences[i] = VK_NULL_HANDLE;
            vk_fail(d, "vkCreateFence", r);
            goto fail;
        }
        if ((r = vk.CreateDescriptorPool(d->dev, &dpi, NULL, &d->pools[i])) != VK_SUCCESS) {
            d->pools[i] = VK_NULL_HANDLE;
            vk_fail(d, "vkCreateDescriptorPool", r);
            goto fail;
        }
    }
    d->cur = 0;
    d->cmd = d->cmds[0];
    d->fence = d->fences[0];
    d->desc_pool = d->pools[0];
    /* the fake address space of device i: [(i+1) << 48, (i+2) << 48) */
    d->next_addr = (uintptr_t)(index + 1) << 48;
    snprintf(d->name, sizeof d->name, "vulkan:%d (%s)", index, g.info[index].name);
    init_backend_table(d);
    if ((status = create_buffer(d, sizeof(uint32_t), BUF_DEVICE, &d->flag)) || (status = vkb_fill_flag(d)))
        goto fail_status;
    g.dev[index] = d;
    *out = d;
    return CCFG_OK;
fail:
    destroy_device(d);
    return CCFG_EINTERNAL;
fail_status:
    destroy_device(d);
    return status;
}

/* the subgroup size the cooperative-matrix pipeline p was written for (SG of nn_conv2d_coop.glsl
 * and nn_attention_coop.glsl: every tile and staging of a shape runs in that shape's subgroups),
 * or 0 for any other */
static uint32_t coop_pipe_subgroup(int p)
{
    if (p == P_NN_CONV2D_COOP || p == P_NN_CONV2D_COOP_SB ||
        (p >= P_NN_CONV2D_COOP_T24 && p <= P_NN_CONV2D_COOP_T44PP) ||
        (p >= P_NN_ATTENTION_COOP1 && p <= P_NN_ATTENTION_COOP4))
        return CCFG_VK_COOP_SUBGROUP;
    if (p == P_NN_CONV2D_COOP8 || p == P_NN_CONV2D_COOP8_SB ||
        (p >= P_NN_CONV2D_COOP8_T24 && p <= P_NN_CONV2D_COOP8_T44PP) ||
        (p >= P_NN_ATTENTION_COOP8_1 && p <= P_NN_ATTENTION_COOP8_4))
        return CCFG_VK_COOP8_SUBGROUP;
    return 0;
}

/* Pipeline p of device d, created on first use. */
static int get_pipe(vk_dev *d, int p, vk_pipe **out)
{
    VkResult r;
    vk_pipe *pp = &d->pipe[p];
    VkShaderModule mod = VK_NULL_HANDLE;
    int status = CCFG_EINTERNAL;
    if (pp->pipeline) {
        *out = pp;
        return CCFG_OK;
    }

    VkDescriptorSetLayoutBinding b[MAX_BINDINGS];
    for (uint32_t i = 0; i < pipe_spec[p].bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    const VkDescriptorSetLayoutCreateInfo dli = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = pipe_spec[p].bindings, .pBindings = b};
    if (!pp->dsl && (r = vk.CreateDescriptorSetLayout(d->dev, &dli, NULL, &pp->dsl)) != VK_SUCCESS) {
        pp->dsl = VK_NULL_HANDLE;
        vk_fail(d, "vkCreateDescriptorSetLayout", r);
        goto fail;
    }
    const VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0,
                                     .size = pipe_spec[p].push};
    const VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                            .setLayoutCount = 1, .pSetLayouts = &pp->dsl,
                                            .pushConstantRangeCount = 1,
                                            .pPushConstantRanges = &pcr};
    if (!pp->layout && (r = vk.CreatePipelineLayout(d->dev, &pli, NULL, &pp->layout)) != VK_SUCCESS) {
        pp->layout = VK_NULL_HANDLE;
        vk_fail(d, "vkCreatePipelineLayout", r);
        goto fail;
    }
    const VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                          .codeSize = pipe_spec[p].size,
                                          .pCode = pipe_spec[p].code};
    if ((r = vk.CreateShaderModule(d->dev, &smi, NULL, &mod)) != VK_SUCCESS) {
        mod = VK_NULL_HANDLE;
        vk_fail(d, "vkCreateShaderModule", r);
        goto fail;
    }
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = mod, .pName = "main"},
        .layout = pp->layout};
    /* the coop convolution's cooperative matrices span a subgroup of the size its variant was
     * written for: pinned, with full subgroups, where the device can (decide_coop); so do the
     * coop attention's (coop_pipe_subgroup) */
    const uint32_t coop_sg = coop_pipe_subgroup(p);
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
        .requiredSubgroupSize = coop_sg};
    if (coop_sg && g.coop_pin[d->index]) {
        cpi.stage.pNext = &rss;
        cpi.stage.flags = VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT_EXT;
    }
    if ((r = vk.CreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &cpi, NULL, &pp->pipeline)) != VK_SUCCESS) {
        pp->pipeline = VK_NULL_HANDLE;
        ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s): creating the %s pipeline failed: %s",
                  d->index, g.info[d->index].name, pipe_spec[p].name, vk_result_name(r));
        goto fail;
    }
    *out = pp;
    status = CCFG_OK;
fail:
    /* the pipeline keeps what it needs; the module is no longer needed either way */
    if (mod) vk.DestroyShaderModule(d->dev, mod, NULL);
    return status;
}

/* ------------------------------------------------------------------------- */
/* batches */

static int begin(vk_dev *d)
{
    if (d->lost)
        return ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s) failed earlier and is unusable",
                         d->index, g.info[d->index].name);
    if (d->recording) return CCFG_OK;
    const VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkResult r = vk.BeginCommandBuffer(d->cmd, &bi);   /* resets it: the pool allows that */
    if (r != VK_SUCCESS) return vk_fail(d, "vkBeginCommandBuffer", r);
    d->recording = 1;
    if (d->profiling) {
        vk.CmdResetQueryPool(d->cmd, d->queries, 0, PROFILE_QUERIES);
        vk.CmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, d->queries, 0);
        d->nqueries = 1;
    }
    return CCFG_OK;
}

/* Profile: the command just recorded (and its barrier) ended; every command is followed by a
 * full barrier, so the difference of consecutive timestamps is that command's time. */
static void stamp(vk_dev *d, int kind)
{
    if (!d->profiling) return;
    if (d->nqueries >= PROFILE_QUERIES) {
        d->prof_unstamped++;
        return;
    }
    vk.CmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, d->queries, d->nqueries);
    d->query_kind[d->nqueries++] = (int16_t)kind;
}

/* after a batch ran: its timestamps into the per-kind totals */
static int collect_profile(vk_dev *d)
{
    uint64_t *t = d->query_ticks;
    if (!d->profiling || d->nqueries < 2) return CCFG_OK;
    VkResult r = vk.GetQueryPoolResults(d->dev, d->queries, 0, d->nqueries,
                                        sizeof d->query_ticks, t, sizeof t[0],
                                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) return vk_fail(d, "vkGetQueryPoolResults", r);
    for (uint32_t q = 1; q < d->nqueries; q++) {
        const uint64_t ticks = ((t[q] & d->ts_mask) - (t[q - 1] & d->ts_mask)) & d->ts_mask;
        d->prof_count[d->query_kind[q]]++;
        d->prof_ns[d->query_kind[q]] += (double)ticks * d->tick_ns;
    }
    d->nqueries = 0;
    return CCFG_OK;
}

/* Everything written before (shaders, copies, fills) is visible to everything after, including
 * the host once the batch's fence has signalled. */
static void barrier(vk_dev *d)
{
    const VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                         VK_ACCESS_HOST_READ_BIT};
    vk.CmdPipelineBarrier(d->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                              VK_PIPELINE_STAGE_HOST_BIT,
                          0, 1, &mb, 0, NULL, 0, NULL);
}

static void destroy_buffer(vk_buffer *b)
{
    /* unmapping is implicit in vkFreeMemory */
    if (b->buf) vk.DestroyBuffer(b->d->dev, b->buf, NULL);
    if (b->mem) vk.FreeMemory(b->d->dev, b->mem, NULL);
    free(b);
}

/* Batches. One batch records at a time, in slot d->cur (d->cmd, d->fence and d->desc_pool are
 * that slot's). flush submits it and waits for everything. submit_async (be->submit: the UNet's
 * Ctrl-C pacing) submits it and waits only for the batch submitted before it, which ran while the
 * host recorded this one: the device is not left idle while the host records, and at most one
 * batch is in flight (d->inflight, in slot 1 - d->cur). A buffer that a batch not yet done uses
 * (batch_used > done_batch) is released only after that batch has run (garbage). */
static void recycle(vk_buffer *b);

/* the garbage of the batches that have run into the recycled lists */
static void collect_garbage(vk_dev *d)
{
    vk_buffer **pp = &d->garbage;
    while (*pp) {
        vk_buffer *b = *pp;
        if (b->batch_used <= d->done_batch) {
            *pp = b->next;
            recycle(b);
        } else {
            pp = &b->next;
        }
    }
}

/* end the open batch (slot d->cur) and submit it with the slot's fence */
static int submit_open(vk_dev *d)
{
    VkResult r;
    d->recording = 0;
    d->batch++;
    if ((r = vk.EndCommandBuffer(d->cmd)) != VK_SUCCESS) return vk_fail(d, "vkEndCommandBuffer", r);
    if ((r = vk.ResetFences(d->dev, 1, &d->fence)) != VK_SUCCESS)
        return vk_fail(d, "vkResetFences", r);
    const VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                             .pCommandBuffers = &d->cmd};
    if ((r = vk.QueueSubmit(d->queue, 1, &si, d->fence)) != VK_SUCCESS)
        return vk_fail(d, "vkQueueSubmit", r);
    if (d->profiling) d->prof_batches++;
    return CCFG_OK;
}

/* wait for batch number `batch`, submitted from slot s, and retire it: its timestamps, its
 * descriptor sets; the batches are run in order, so every earlier one is done too */
static int wait_slot(vk_dev *d, int s, uint64_t batch)
{
    VkResult r;
    int status;
    struct timespec w0, w1;
    if (d->profiling) clock_gettime(CLOCK_MONOTONIC, &w0);
    if ((r = vk.WaitForFences(d->dev, 1, &d->fences[s], VK_TRUE, UINT64_MAX)) != VK_SUCCESS)
        return vk_fail(d, "vkWaitForFences", r);
    if (d->profiling) {
        clock_gettime(CLOCK_MONOTONIC, &w1);
        d->prof_wait_ns += 1e9 * (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec);
        if ((status = collect_profile(d)) != CCFG_OK) return status;
    }
    if ((r = vk.ResetDescriptorPool(d->dev, d->pools[s], 0)) != VK_SUCCESS)
        return vk_fail(d, "vkResetDescriptorPool", r);
    d->done_batch = batch;
    return CCFG_OK;
}

/* Submit the open batch and wait for it and for the one in flight. */
static int flush(vk_dev *d)
{
    int status = CCFG_OK;
    const uint64_t open = d->batch;
    const int recorded = d->recording;
    if (recorded) status = submit_open(d);
    if (!status && d->inflight) {
        status = wait_slot(d, 1 - d->cur, d->inflight);
        d->inflight = 0;
    }
    if (!status && recorded) status = wait_slot(d, d->cur, open);
    /* a failed batch leaves its outputs undefined and maybe the device lost: refuse further work
     * rather than return results that look good */
    if (status != CCFG_OK) d->lost = 1;
    else collect_garbage(d);
    return status;
}

/* Submit the open batch without waiting for it; wait for the batch in flight before it (if any)
 * and record the next batch in its slot. With the profile on (one query pool, read per batch)
 * this is flush. */
static int submit_async(vk_dev *d)
{
    int status;
    if (d->profiling) return flush(d);
    if (!d->recording) return CCFG_OK;
    const uint64_t open = d->batch;
    if ((status = submit_open(d)) != CCFG_OK) goto fail;
    if (d->inflight && (status = wait_slot(d, 1 - d->cur, d->inflight)) != CCFG_OK) goto fail;
    d->inflight = open;
    d->cur = 1 - d->cur;
    d->cmd = d->cmds[d->cur];
    d->fence = d->fences[d->cur];
    d->desc_pool = d->pools[d->cur];
    collect_garbage(d);
    return CCFG_OK;
fail:
    d->lost = 1;
    return status;
}

/* Record one dispatch of pipeline p over bufs (pipe_spec[p].bindings of them). */
int vkb_dispatch(vk_dev *d, int p, vk_buffer *const *bufs, const void *push,
                 uint32_t gx, uint32_t gy)
{
    vk_pipe *pp;
    VkDescriptorSet set;
    VkResult r;
    int status;
    if ((status = get_pipe(d, p, &pp)) != CCFG_OK) return status;
    if ((status = begin(d)) != CCFG_OK) return status;

    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorPool = d->desc_pool, .descriptorSetCount = 1,
                                      .pSetLayouts = &pp->dsl};
    r = vk.AllocateDescriptorSets(d->dev, &ai, &set);
    if (r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) {
        /* a long batch used the pool up: run what is recorded (which resets it) and go on */
        if ((status = flush(d)) != CCFG_OK) return status;
        if ((status = begin(d)) != CCFG_OK) return status;
        r = vk.AllocateDescriptorSets(d->dev, &ai, &set);
    }
    if (r != VK_SUCCESS) return vk_fail(d, "vkAllocateDescriptorSets", r);

    VkDescriptorBufferInfo bi[MAX_BINDINGS];
    VkWriteDescriptorSet w[MAX_BINDINGS];
    for (uint32_t i = 0; i < pipe_spec[p].bindings; i++) {
        bi[i] = (VkDescriptorBufferInfo){.buffer = bufs[i]->buf, .offset = 0, .range = VK_WHOLE_SIZE};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set,
                                      .dstBinding = i, .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
        bufs[i]->batch_used = d->batch;
    }
    vk.UpdateDescriptorSets(d->dev, pipe_spec[p].bindings, w, 0, NULL);
    vk.CmdBindPipeline(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pp->pipeline);
    vk.CmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pp->layout, 0, 1, &set, 0, NULL);
    vk.CmdPushConstants(d->cmd, pp->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pipe_spec[p].push, push);
    vk.CmdDispatch(d->cmd, gx, gy, 1);
    barrier(d);
    stamp(d, p);
    return CCFG_OK;
}

/* workgroups for a grid-stride loop over count items */
uint32_t vkb_groups_for(int64_t count)
{
    int64_t gsz = (count + LOCAL_SIZE - 1) / LOCAL_SIZE;
    return (uint32_t)(gsz < 1 ? 1 : gsz > MAX_GROUPS ? MAX_GROUPS : gsz);
}

/* ------------------------------------------------------------------------- */
/* buffers */

static int find_memory(const vk_dev *d, uint32_t bits, VkMemoryPropertyFlags want, uint32_t *out)
{
    for (uint32_t i = 0; i < d->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (d->mem.memoryTypes[i].propertyFlags & want) == want) {
            *out = i;
            return 1;
        }
    return 0;
}

/* kind BUF_UPLOAD / BUF_READBACK: a staging buffer (mapped); BUF_DEVICE: a storage buffer for the
 * device (mapped too on devices whose memory the host sees, d->mapped) */
static int create_buffer(vk_dev *d, size_t bytes, int kind, vk_buffer **out)
{
    VkResult r;
    int status = CCFG_EINTERNAL;
    *out = NULL;
    /* Small buffers come in power-of-two sizes and are recycled (see recycle): in the steady state
     * a step (coefficients, partials, staging, the mixture's level) allocates no device memory. */
    size_t cls = 0;
    if (bytes <= RECYCLE_MAX)
        for (cls = 256; cls < bytes; cls <<= 1) {}
    for (vk_buffer **pp = &d->recycled; cls && *pp; pp = &(*pp)->next)
        if ((*pp)->size == cls && (*pp)->kind == kind) {
            vk_buffer *b = *pp;
            *pp = b->next;
            d->recycled_bytes -= cls;
            b->next = NULL;
            b->batch_used = 0;
            *out = b;
            return CCFG_OK;
        }
    if (!cls && kind != BUF_DEVICE && d->spare[kind] && d->spare[kind]->size >= bytes) {
        *out = d->spare[kind];
        d->spare[kind] = NULL;
        (*out)->batch_used = 0;
        return CCFG_OK;
    }
    vk_buffer *b = calloc(1, sizeof *b);
    if (!b) return ccfg_fail(CCFG_ENOMEM, "out of host memory for a Vulkan buffer");
    b->d = d;
    b->kind = kind;
    b->recyclable = cls != 0;
    /* Vulkan has no empty buffers; whole words keep vkCmdFillBuffer valid */
    b->size = cls ? cls : (bytes + 3) & ~(size_t)3;
    const VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = b->size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    if ((r = vk.CreateBuffer(d->dev, &bci, NULL, &b->buf)) != VK_SUCCESS) {
        b->buf = VK_NULL_HANDLE;
        status = vk_fail(d, "vkCreateBuffer", r);
        goto fail;
    }
    VkMemoryRequirements req;
    vk.GetBufferMemoryRequirements(d->dev, b->buf, &req);
    const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    const VkMemoryPropertyFlags dl = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    const VkMemoryPropertyFlags cached = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    const int mapped = kind != BUF_DEVICE || d->mapped;
    uint32_t type;
    int found = kind == BUF_READBACK
                    ? find_memory(d, req.memoryTypeBits, hv | cached, &type) ||
                          find_memory(d, req.memoryTypeBits,
                                      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | cached, &type) ||
                          find_memory(d, req.memoryTypeBits, hv, &type)
                : mapped ? find_memory(d, req.memoryTypeBits, hv | dl, &type) ||
                               find_memory(d, req.memoryTypeBits, hv, &type)
                         : find_memory(d, req.memoryTypeBits, dl, &type) ||
                               find_memory(d, req.memoryTypeBits, 0, &type);
    if (!found) {
        status = ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s): no memory type for a %s buffer",
                           d->index, g.info[d->index].name, mapped ? "host-visible" : "device");
        goto fail;
    }
    const VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                      .allocationSize = req.size, .memoryTypeIndex = type};
    b->coherent = (d->mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    if ((r = vk.AllocateMemory(d->dev, &mai, NULL, &b->mem)) != VK_SUCCESS) {
        b->mem = VK_NULL_HANDLE;
        status = ccfg_fail(CCFG_EINTERNAL, "Vulkan device %d (%s): allocating %zu bytes failed: %s",
                           d->index, g.info[d->index].name, (size_t)req.size, vk_result_name(r));
        goto fail;
    }
    if ((r = vk.BindBufferMemory(d->dev, b->buf, b->mem, 0)) != VK_SUCCESS) {
        status = vk_fail(d, "vkBindBufferMemory", r);
        goto fail;
    }
    if (mapped && (r = vk.MapMemory(d->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map)) != VK_SUCCESS) {
        b->map = NULL;
        status = vk_fail(d, "vkMapMemory", r);
        goto fail;
    }
    *out = b;
    return CCFG_OK;
fail:
    destroy_buffer(b);
    return status;
}

/* An idle buffer (no batch in flight uses it): kept for reuse while the total allows. */
static void recycle(vk_buffer *b)
{
    vk_dev *d = b->d;
    if (b->recyclable && !d->lost && d->recycled_bytes + b->size <= RECYCLE_TOTAL) {
        b->next = d->recycled;
        d->recycled = b;
        d->recycled_bytes += b->size;
    } else if (!b->recyclable && b->kind != BUF_DEVICE && !d->lost && b->size <= SPARE_MAX &&
               (!d->spare[b->kind] || d->spare[b->kind]->size <= b->size)) {
        if (d->spare[b->kind]) destroy_buffer(d->spare[b->kind]);
        b->next = NULL;
        d->spare[b->kind] = b;
    } else {
        destroy_buffer(b);
    }
}

/* Release now, or after the batches that use it have run. */
void vkb_release_buffer(vk_buffer *b)
{
    vk_dev *d = b->d;
    if (b->batch_used > d->done_batch) {   /* the open batch or the one in flight uses it */
        b->next = d->garbage;
        d->garbage = b;
    } else {
        recycle(b);
    }
}

/* Buffers the backend keeps for itself (partials, coefficients, parameters) live outside the
 * address space and are released after the batch that uses them. */
int vkb_new_buffer(vk_dev *d, size_t bytes, vk_buffer **out)
{
    vk_buffer *b = NULL;
    int status;
    *out = NULL;
    if (bytes > g.info[d->index].max_storage_buffer_range)
        return ccfg_fail(CCFG_EINVAL, "%s: a buffer of %zu bytes exceeds the device's "
                         "maxStorageBufferRange (%u bytes); use fewer samples per call", d->name,
                         bytes, g.info[d->index].max_storage_buffer_range);
    if ((status = create_buffer(d, bytes, BUF_DEVICE, &b)) != CCFG_OK) return status;
    if (b->map) {
        memset(b->map, 0, b->size);
    } else {
        if ((status = begin(d)) != CCFG_OK) goto fail;
        vk.CmdFillBuffer(d->cmd, b->buf, 0, VK_WHOLE_SIZE, 0);
        b->batch_used = d->batch;
        barrier(d);
    }
    *out = b;
    return CCFG_OK;
fail:
    vkb_release_buffer(b);
    return status;
}

/* host -> b at byte offset `at`; src may be reused at once */
int vkb_write_buffer(vk_buffer *b, size_t at, const void *src, size_t bytes)
{
    vk_dev *d = b->d;
    vk_buffer *st = NULL;
    int status;
    if (!bytes) return CCFG_OK;
    if (b->map) {
        /* host writes land at once: work recorded earlier on this buffer must run first */
        if (b->batch_used > d->done_batch && (status = flush(d)) != CCFG_OK) return status;
        memcpy((char *)b->map + at, src, bytes);
        return CCFG_OK;
    }
    /* the copy is ordered inside the batch, so nothing has to be submitted here */
    if ((status = create_buffer(d, bytes, BUF_UPLOAD, &st)) != CCFG_OK) return status;
    memcpy(st->map, src, bytes);
    if ((status = begin(d)) == CCFG_OK) {
        const VkBufferCopy region = {.srcOffset = 0, .dstOffset = at, .size = bytes};
        vk.CmdCopyBuffer(d->cmd, st->buf, b->buf, 1, &region);
        st->batch_used = b->batch_used = d->batch;
        barrier(d);
        stamp(d, PROF_UPLOAD);
    }
    vkb_release_buffer(st);
    return status;
}

/* what the device wrote to b is visible to host reads (non-coherent memory needs an invalidate) */
static int host_sees(vk_buffer *b)
{
    VkResult r;
    if (b->coherent) return CCFG_OK;
    const VkMappedMemoryRange range = {.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
                                       .memory = b->mem, .offset = 0, .size = VK_WHOLE_SIZE};
    if ((r = vk.InvalidateMappedMemoryRanges(b->d->dev, 1, &range)) != VK_SUCCESS)
        return vk_fail(b->d, "vkInvalidateMappedMemoryRanges", r);
    return CCFG_OK;
}

/* b at byte offset `at` -> host, after everything recorded has run */
int vkb_read_buffer(void *dst, vk_buffer *b, size_t at, size_t bytes)
{
    vk_dev *d = b->d;
    vk_buffer *st = NULL;
    int status;
    if (b->map || !bytes) {
        if ((status = flush(d)) != CCFG_OK || (bytes && (status = host_sees(b)) != CCFG_OK))
            return status;
        if (bytes) memcpy(dst, (const char *)b->map + at, bytes);
        return CCFG_OK;
    }
    if ((status = create_buffer(d, bytes, BUF_READBACK, &st)) != CCFG_OK) return status;
    if ((status = begin(d)) != CCFG_OK) goto fail;
    const VkBufferCopy region = {.srcOffset = at, .dstOffset = 0, .size = bytes};
    vk.CmdCopyBuffer(d->cmd, b->buf, st->buf, 1, &region);
    st->batch_used = b->batch_used = d->batch;
    barrier(d);
    stamp(d, PROF_DOWNLOAD);
    if ((status = flush(d)) != CCFG_OK || (status = host_sees(st)) != CCFG_OK) goto fail;
    memcpy(dst, st->map, bytes);
fail:
    vkb_release_buffer(st);
    return status;
}

/* ------------------------------------------------------------------------- */
/* device addresses */

/* The range holding [p, p + bytes), as buffer and element offset. A pointer that is not ours is
 * a bug in the caller: said clearly rather than crashed on. */
int vkb_resolve(vk_dev *d, const void *p, size_t bytes, vk_buffer **buf, uint32_t *elem)
{
    const uintptr_t a = (uintptr_t)p;
    int lo = 0, hi = d->nranges - 1, found = -1;
    while (lo <= hi) {                  /* last range with base <= a */
        const int mid = (lo + hi) / 2;
        if (d->ranges[mid].base <= a) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (found < 0 || a - d->ranges[found].base + bytes > d->ranges[found].size || (a & 3u))
        return ccfg_fail(CCFG_EINTERNAL, "%s: %p (%zu bytes) is not memory of this device",
                         d->name, p, bytes);
    *buf = d->ranges[found].buf;
    *elem = (uint32_t)((a - d->ranges[found].base) / 4);
    return CCFG_OK;
}

/* a device address range of `bytes`, zero-filled when `zero` (be->alloc), else left as the
 * memory comes (scratch an op writes before it reads, ccfg_vk_nn_scratch: no fill command) */
static int alloc_range(vk_dev *d, size_t bytes, int zero, float **out)
{
    vk_buffer *b = NULL;
    int status;
    *out = NULL;
    if (d->nranges == 0) d->next_addr = (uintptr_t)(d->index + 1) << 48;   /* reuse the space */
    const size_t span = (bytes + 255) & ~(size_t)255;
    if (d->next_addr + span + 256 >= (uintptr_t)(d->index + 2) << 48)
        return ccfg_fail(CCFG_ENOMEM, "%s: device address space exhausted", d->name);
    if (d->nranges == d->cap_ranges) {
        const int cap = d->cap_ranges ? 2 * d->cap_ranges : 32;
        vk_range *r = realloc(d->ranges, (size_t)cap * sizeof *r);
        if (!r) return ccfg_fail(CCFG_ENOMEM, "out of memory for the device address table");
        d->ranges = r;
        d->cap_ranges = cap;
    }
    if (zero) {
        if ((status = vkb_new_buffer(d, bytes, &b)) != CCFG_OK) return status;
    } else {
        if (bytes > d->max_storage_buffer_range)
            return ccfg_fail(CCFG_EINVAL, "%s: a buffer of %zu bytes exceeds the device's "
                             "maxStorageBufferRange (%u bytes)", d->name, bytes,
                             d->max_storage_buffer_range);
        if ((status = create_buffer(d, bytes, BUF_DEVICE, &b)) != CCFG_OK) return status;
    }
    d->ranges[d->nranges++] = (vk_range){.base = d->next_addr, .size = bytes, .buf = b};
    *out = (float *)d->next_addr;
    d->next_addr += span + 256;         /* a gap: one-past-the-end never aliases the next range */
    return CCFG_OK;
}

static int vk_alloc(const ccfg_backend *be, size_t bytes, float **out)
{
    return alloc_range(be->ctx, bytes, 1, out);
}

int ccfg_vk_nn_scratch(const ccfg_backend *be, size_t bytes, float **out)
{
    return alloc_range(be->ctx, bytes, 0, out);
}

static void vk_release(const ccfg_backend *be, void *p)
{
    vk_dev *d = be->ctx;
    if (!p) return;
    for (int i = 0; i < d->nranges; i++)
        if (d->ranges[i].base == (uintptr_t)p) {
            vkb_release_buffer(d->ranges[i].buf);
            memmove(d->ranges + i, d->ranges + i + 1, (size_t)(d->nranges - i - 1) * sizeof *d->ranges);
            d->nranges--;
            return;
        }
}

static int vk_upload(const ccfg_backend *be, void *dst, const void *src, size_t bytes)
{
    vk_buffer *b = NULL;
    uint32_t at = 0;
    int status = vkb_resolve(be->ctx, dst, bytes, &b, &at);
    return status ? status : vkb_write_buffer(b, (size_t)at * 4, src, bytes);
}

static int vk_download(const ccfg_backend *be, void *dst, const void *src, size_t bytes)
{
    vk_buffer *b = NULL;
    uint32_t at = 0;
    int status = vkb_resolve(be->ctx, src, bytes, &b, &at);
    return status ? status : vkb_read_buffer(dst, b, (size_t)at * 4, bytes);
}

static int vk_sync(const ccfg_backend *be) { return flush(be->ctx); }
static int vk_submit(const ccfg_backend *be)
{
    vk_dev *d = be->ctx;
    return d->sync_pacing ? flush(d) : submit_async(d);
}

static void vk_lock(const ccfg_backend *be, int acquire)
{
    vk_dev *d = be->ctx;
    if (acquire) pthread_mutex_lock(&d->mutex);
    else pthread_mutex_unlock(&d->mutex);
}

/* ------------------------------------------------------------------------- */
/* the backend table */

/* ------------------------------------------------------------------------- */
/* nn.h ops (nn_vk.c records them through this) */

/* nn kernel k runs pipeline P_NN_FIRST + k: the two lists (vk_nn.h, vk_backend.h) must grow
 * together, or a kernel would run another's shader */
_Static_assert(P_COUNT - P_NN_FIRST == CCFG_VK_NN_COUNT, "vk_nn.h's kernels and the P_NN_* "
               "pipelines are out of step");
_Static_assert(P_NN_CONV2D_COOP_T24 - P_NN_FIRST == CCFG_VK_NN_CONV2D_COOP_TILES &&
               P_NN_CONV2D_COOP8_T24 - P_NN_FIRST == CCFG_VK_NN_CONV2D_COOP8_TILES &&
               P_NN_CONV2D_COOP8_T24 - P_NN_CONV2D_COOP_T24 == CCFG_VK_COOP_TILE_COUNT - 1,
               "the coop tile kernels and pipelines are out of step");
_Static_assert(P_NN_CONV2D_T64DB - P_NN_FIRST == CCFG_VK_NN_CONV2D_TILES &&
               P_NN_CONV2D_T128DB - P_NN_CONV2D_T64DB == CCFG_VK_CONV_TILE_COUNT - 2,
               "the float32 convolution's tile kernels and pipelines are out of step");
_Static_assert(P_NN_ATTENTION_TILED1 - P_NN_FIRST == CCFG_VK_NN_ATTENTION_TILED &&
               P_NN_ATTENTION_TILED1_Q64 - P_NN_FIRST == CCFG_VK_NN_ATTENTION_TILED_Q64 &&
               P_NN_ATTENTION_TILED1_Q64R - P_NN_FIRST == CCFG_VK_NN_ATTENTION_TILED1_Q64R,
               "the tiled attention kernels and pipelines are out of step");
_Static_assert(P_NN_ATTENTION_COOP1 - P_NN_FIRST == CCFG_VK_NN_ATTENTION_COOP &&
               P_NN_ATTENTION_COOP8_1 - P_NN_FIRST == CCFG_VK_NN_ATTENTION_COOP8,
               "the coop attention kernels and pipelines are out of step");

int ccfg_vk_nn_precision(const ccfg_backend *be) { return ((const vk_dev *)be->ctx)->precision; }

/* test hook (vk_nn.h): the convolutions' precision of an open device changed in place, as if it
 * had opened under another CCFG_VULKAN_PRECISION, so that tests can run a model placed under one
 * precision under another. Only fp32 (needs no feature) or the precision it opened with (whose
 * features the logical device has; -1 for it). The caller holds the device (py_run_enter). */
int ccfg_vk_nn_set_precision(const ccfg_backend *be, int precision)
{
    vk_dev *d = be->ctx;
    if (precision < 0) precision = d->opened_precision;
    if (precision != CCFG_VK_PRECISION_FP32 && precision != d->opened_precision)
        return ccfg_fail(CCFG_EINVAL, "%s: precision %d needs device features it was not opened "
                         "with (it opened with precision %d; open it under that "
                         "CCFG_VULKAN_PRECISION)", d->name, precision, d->opened_precision);
    d->precision = precision;
    return CCFG_OK;
}

void ccfg_vk_nn_limits(const ccfg_backend *be, uint32_t *shared_bytes, uint32_t *invocations)
{
    const ccfg_vk_device_info *info = &g.info[((const vk_dev *)be->ctx)->index];
    *shared_bytes = info->max_shared_memory;
    *invocations = info->max_workgroup_invocations;
}

int ccfg_vk_nn_dispatch(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                        const int64_t *counts, void *push, int64_t items, int per_group,
                        uint32_t groups_y)
{
    vk_dev *d = be->ctx;
    vk_buffer *bufs[MAX_BINDINGS];
    uint32_t *offs = push;
    static const char *names[CCFG_VK_NN_COUNT] = {"conv2d", "group_norm", "linear", "attention",
                                                  "eltwise", "layer_norm", "conv2d", "to_f16",
                                                  "conv2d", "conv2d", "conv2d", "attention",
                                                  "attention", "attention", "attention",
                                                  "attention", "attention", "attention",
                                                  "attention", "attention", "conv2d", "conv2d",
                                                  "conv2d", "attention", "attention", "attention",
                                                  "attention", "attention", "attention",
                                                  "attention", "attention", "conv2d", "conv2d",
                                                  "conv2d", "conv2d", "conv2d", "conv2d", "conv2d",
                                                  "conv2d", "conv2d", "conv2d", "conv2d", "conv2d",
                                                  "conv2d", "conv2d", "conv2d", "conv2d",
                                                  "conv2d", "conv2d", "conv2d"};
    int status;
    if (kernel < 0 || kernel >= CCFG_VK_NN_COUNT || nbuf < 1 ||
        (uint32_t)nbuf != pipe_spec[P_NN_FIRST + kernel].bindings)
        return ccfg_fail(CCFG_EINTERNAL, "%s: nn kernel %d with %d arrays", d->name, kernel, nbuf);
    if (items < 0 || items > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s nn %s: %lld work items is out of range", d->name,
                         names[kernel], (long long)items);
    if (groups_y < 1 || groups_y > MAX_GROUPS)
        return ccfg_fail(CCFG_EINVAL, "%s nn %s: %u workgroup rows is out of range", d->name,
                         names[kernel], groups_y);
    if (!items) return CCFG_OK;
    for (int i = 0; i < nbuf; i++)
        if ((status = vkb_resolve_all(d, counts[i], &ptrs[i], 1, &bufs[i], &offs[i], names[kernel])))
            return status;
    const uint32_t groups = per_group ? (uint32_t)(items < MAX_GROUPS ? items : MAX_GROUPS)
                                      : vkb_groups_for(items);
    /* group_norm's subgroup twin: the same bindings, push block and phases */
    const int p = kernel == CCFG_VK_NN_GROUP_NORM && d->subgroup ? P_NN_GROUP_NORM_SG
                                                                 : P_NN_FIRST + kernel;
    return vkb_dispatch(d, p, bufs, push, groups, groups_y);
}

/* y = x over count floats as a transfer command (vkCmdCopyBuffer: the driver's copy path, at or
 * near the device's memory bandwidth, no descriptor set). Overlapping ranges of one buffer are
 * undefined for vkCmdCopyBuffer: the caller (nn_vk.c) copies those with the eltwise shader. */
int ccfg_vk_nn_copy(const ccfg_backend *be, int64_t count, const float *x, float *y, int *done)
{
    vk_dev *d = be->ctx;
    vk_buffer *xb, *yb;
    uint32_t xo, yo;
    int status;
    *done = 0;
    if (count <= 0) {
        *done = 1;
        return CCFG_OK;
    }
    if ((status = vkb_resolve_all(d, count, &x, 1, &xb, &xo, "copy")) ||
        (status = vkb_resolve_all(d, count, (const float *const *)&y, 1, &yb, &yo, "copy")))
        return status;
    if (xb == yb && (int64_t)xo < (int64_t)yo + count && (int64_t)yo < (int64_t)xo + count)
        return CCFG_OK;     /* overlapping: not done here */
    if ((status = begin(d)) != CCFG_OK) return status;
    const VkBufferCopy region = {.srcOffset = (VkDeviceSize)xo * 4,
                                 .dstOffset = (VkDeviceSize)yo * 4,
                                 .size = (VkDeviceSize)count * 4};
    vk.CmdCopyBuffer(d->cmd, xb->buf, yb->buf, 1, &region);
    xb->batch_used = yb->batch_used = d->batch;
    barrier(d);
    stamp(d, PROF_COPY);
    *done = 1;
    return CCFG_OK;
}

static void init_backend_table(vk_dev *d)
{
    d->be = (ccfg_backend){
        .name = d->name,
        .ctx = d,
        .host_memory = 0,
        .synchronous = 0,
        .lock = vk_lock,
        .alloc = vk_alloc,
        .release = vk_release,
        .upload = vk_upload,
        .download = vk_download,
        .sync = vk_sync,
        .submit = vk_submit,
        .axpbypcz = vkb_axpbypcz,
        .clamp_rows = vkb_clamp_rows,
        .randn = vkb_randn,
        .watch_finite = vkb_watch_finite,
        .first_nonfinite = vkb_first_nonfinite,
        .guide = d->host_coefficients ? &vkb_guide_ops_host_coefficients : &vkb_guide_ops,
        .gmm = &vkb_gmm_ops,
        .nn = ccfg_nn_ops_vulkan(),
    };
}

static pthread_mutex_t open_mutex = PTHREAD_MUTEX_INITIALIZER;

int ccfg_backend_vulkan(int device, const ccfg_backend **out)
{
    vk_dev *d;
    *out = NULL;
    pthread_mutex_lock(&open_mutex);     /* two threads must not open one device twice */
    int status = get_device(device, &d);
    pthread_mutex_unlock(&open_mutex);
    if (status) return status;
    *out = &d->be;
    return CCFG_OK;
}

/* the per-dispatch profile of device `device`: action 1 starts (and clears) it, 0 stops it, 2 only
 * reads. The totals so far go to out (one entry per kind that ran, at most max). */
int ccfg_vk_profile(int device, int action, ccfg_vk_profile_entry *out, int max, int *count,
                    ccfg_vk_profile_totals *totals)
{
    const ccfg_backend *be;
    int status;
    *count = 0;
    if ((status = ccfg_backend_vulkan(device, &be))) return status;
    vk_dev *d = be->ctx;
    if ((status = flush(d))) return status;          /* what ran so far belongs to the old state */
    if (action == 1) {
        if (!g.ts_bits[d->index] || !(d->tick_ns > 0.0))
            return ccfg_fail(CCFG_EINVAL, "%s has no timestamps on its compute queue: it cannot "
                             "be profiled", d->name);
        if (!d->queries) {
            const VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                              .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                              .queryCount = PROFILE_QUERIES};
            VkResult r = vk.CreateQueryPool(d->dev, &qi, NULL, &d->queries);
            if (r != VK_SUCCESS) {
                d->queries = VK_NULL_HANDLE;
                return vk_fail(d, "vkCreateQueryPool", r);
            }
        }
        memset(d->prof_count, 0, sizeof d->prof_count);
        memset(d->prof_ns, 0, sizeof d->prof_ns);
        d->prof_batches = d->prof_unstamped = 0;
        d->prof_wait_ns = 0.0;
        d->profiling = 1;
    } else if (action == 0) {
        d->profiling = 0;
    }
    for (int k = 0; k < PROF_KINDS && *count < max; k++) {
        if (!d->prof_count[k]) continue;
        out[*count].kind = k == PROF_UPLOAD ? "upload (staging copy)"
                           : k == PROF_DOWNLOAD ? "download (staging copy)"
                           : k == PROF_COPY ? "copy (vkCmdCopyBuffer)" : pipe_spec[k].name;
        out[*count].count = d->prof_count[k];
        out[*count].ms = d->prof_ns[k] * 1e-6;
        (*count)++;
    }
    totals->batches = d->prof_batches;
    totals->unstamped = d->prof_unstamped;
    totals->wait_ms = d->prof_wait_ns * 1e-6;
    return CCFG_OK;
}

/* seconds per copy of `bytes` between two device buffers, `repeats` copies recorded back to back
 * (a barrier after each, as in a real batch) and submitted once: mode 0 by shaders/copy.comp,
 * mode 1 by vkCmdCopyBuffer (the driver's copy, the bound to compare the shader with). Timed on
 * the device by two timestamps around the copies where the queue has them (so the submit and the
 * host's wait, tens of microseconds to a millisecond on a GPU, are not counted: a 64 MiB copy
 * takes ~30 us on an H200), else by the host's clock around submit and wait. */
int ccfg_vk_copy_bench(int device, size_t bytes, int repeats, int mode, double *seconds)
{
    const ccfg_backend *be;
    vk_buffer *src = NULL, *dst = NULL;
    uint32_t *pattern = NULL;
    VkQueryPool qp = VK_NULL_HANDLE;
    VkResult r;
    int status;
    *seconds = 0.0;
    if (mode != 0 && mode != 1)
        return ccfg_fail(CCFG_EINVAL, "copy benchmark: mode %d (0: shader, 1: vkCmdCopyBuffer)",
                         mode);
    if ((status = ccfg_backend_vulkan(device, &be))) return status;
    vk_dev *d = be->ctx;
    bytes &= ~(size_t)15;
    if (!bytes) return ccfg_fail(CCFG_EINVAL, "copy benchmark: at least 16 bytes");
    /* a pattern in src, checked in dst afterwards: a wrong copy is an error, not a bandwidth */
    if (!(pattern = malloc(bytes)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory for the copy benchmark");
    for (size_t i = 0; i < bytes / 4; i++) pattern[i] = (uint32_t)(i * 2654435761u) ^ 0x5bd1e995u;
    if ((status = vkb_new_buffer(d, bytes, &src)) || (status = vkb_new_buffer(d, bytes, &dst)) ||
        (status = vkb_write_buffer(src, 0, pattern, bytes)) || (status = flush(d)))
        goto fail;
    const int stamped = g.ts_bits[d->index] && d->tick_ns > 0.0 && !d->profiling;
    if (stamped) {
        const VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                          .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 2};
        if ((r = vk.CreateQueryPool(d->dev, &qi, NULL, &qp)) != VK_SUCCESS) {
            qp = VK_NULL_HANDLE;
            status = vk_fail(d, "vkCreateQueryPool", r);
            goto fail;
        }
    }
    vk_buffer *bufs[2] = {src, dst};
    const uint32_t count = (uint32_t)(bytes / 16);
    const push_copy pc = {count};
    const uint32_t groups = vkb_groups_for((int64_t)count);    /* copy.comp: one vec4 each */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((status = begin(d)) != CCFG_OK) goto fail;
    if (qp) {
        vk.CmdResetQueryPool(d->cmd, qp, 0, 2);
        vk.CmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, 0);
    }
    for (int i = 0; i < repeats && !status; i++) {
        if (mode == 0) {
            status = vkb_dispatch(d, P_COPY, bufs, &pc, groups, 1);
        } else {
            const VkBufferCopy region = {.srcOffset = 0, .dstOffset = 0, .size = bytes};
            vk.CmdCopyBuffer(d->cmd, src->buf, dst->buf, 1, &region);
            src->batch_used = dst->batch_used = d->batch;
            barrier(d);
        }
    }
    if (!status && qp) vk.CmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, 1);
    if (!status) status = flush(d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (status) goto fail;
    *seconds = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / repeats;
    if (qp) {
        uint64_t t[2];
        r = vk.GetQueryPoolResults(d->dev, qp, 0, 2, sizeof t, t, sizeof t[0],
                                   VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r != VK_SUCCESS) {
            status = vk_fail(d, "vkGetQueryPoolResults", r);
            goto fail;
        }
        const uint64_t ticks = ((t[1] & d->ts_mask) - (t[0] & d->ts_mask)) & d->ts_mask;
        *seconds = (double)ticks * d->tick_ns * 1e-9 / repeats;
    }
    memset(pattern, 0, bytes);
    if ((status = vkb_read_buffer(pattern, dst, 0, bytes))) goto fail;
    for (size_t i = 0; i < bytes / 4; i++)
        if (pattern[i] != ((uint32_t)(i * 2654435761u) ^ 0x5bd1e995u)) {
            status = ccfg_fail(CCFG_EINTERNAL, "%s: the copy benchmark (mode %d) copied word "
                               "%zu of %zu wrongly", d->name, mode, i, bytes / 4);
            goto fail;
        }
fail:
    free(pattern);
    if (src) vkb_release_buffer(src);
    if (dst) vkb_release_buffer(dst);
    if (!status) status = flush(d);
    /* the batch that used the pool has run (flush waits) or the device is lost */
    if (qp) vk.DestroyQueryPool(d->dev, qp, NULL);
    return status;
}

/* ------------------------------------------------------------------------- */
/* the autotuner's plumbing (vk_tune.c; declared in vk_backend.h) */

int vkb_flush(vk_dev *d) { return flush(d); }

int vkb_timestamps_new(vk_dev *d, uint32_t count, VkQueryPool *out)
{
    *out = VK_NULL_HANDLE;
    if (!g.ts_bits[d->index] || !(d->tick_ns > 0.0))
        return ccfg_fail(CCFG_EINVAL, "%s has no timestamps on its compute queue", d->name);
    const VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                      .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = count};
    VkResult r = vk.CreateQueryPool(d->dev, &qi, NULL, out);
    if (r != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return vk_fail(d, "vkCreateQueryPool", r);
    }
    return CCFG_OK;
}

void vkb_timestamps_free(vk_dev *d, VkQueryPool qp)
{
    if (qp && d->dev) vk.DestroyQueryPool(d->dev, qp, NULL);
}

int vkb_timestamp(vk_dev *d, VkQueryPool qp, uint32_t reset, uint32_t query)
{
    int status;
    if ((status = begin(d)) != CCFG_OK) return status;
    if (reset) vk.CmdResetQueryPool(d->cmd, qp, 0, reset);
    vk.CmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, query);
    return CCFG_OK;
}

int vkb_timestamps_read(vk_dev *d, VkQueryPool qp, uint32_t count, double *ns)
{
    uint64_t t[64];
    if (count < 2 || count > 64)
        return ccfg_fail(CCFG_EINTERNAL, "%s: %u timestamps to read", d->name, count);
    VkResult r = vk.GetQueryPoolResults(d->dev, qp, 0, count, sizeof t, t, sizeof t[0],
                                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) return vk_fail(d, "vkGetQueryPoolResults", r);
    for (uint32_t q = 1; q < count; q++)
        ns[q - 1] = (double)(((t[q] & d->ts_mask) - (t[q - 1] & d->ts_mask)) & d->ts_mask) *
                    d->tick_ns;
    return CCFG_OK;
}

/* FNV-1a (64 bits) over every pipeline's SPIR-V and size, once per process: the shader build a
 * saved tuning decision was measured with (vk_tune.c) */
static uint64_t shader_hash;
static pthread_once_t shader_hash_once = PTHREAD_ONCE_INIT;

static void hash_shaders(void)
{
    uint64_t h = 1469598103934665603ull;
    for (int p = 0; p < P_COUNT; p++) {
        const unsigned char *b = (const unsigned char *)pipe_spec[p].code;
        const uint64_t size = pipe_spec[p].size;
        for (int i = 0; i < 8; i++) h = (h ^ ((size >> (8 * i)) & 0xff)) * 1099511628211ull;
        for (size_t i = 0; i < pipe_spec[p].size; i++) h = (h ^ b[i]) * 1099511628211ull;
    }
    shader_hash = h;
}

int vkb_device_identity(vk_dev *d, uint32_t *vendor, uint32_t *device, uint32_t *driver,
                        uint8_t uuid[VK_UUID_SIZE], uint64_t *shaders)
{
    VkPhysicalDeviceProperties props;
    vk.GetPhysicalDeviceProperties(d->phys, &props);
    *vendor = props.vendorID;
    *device = props.deviceID;
    *driver = props.driverVersion;
    memcpy(uuid, props.pipelineCacheUUID, VK_UUID_SIZE);
    if (pthread_once(&shader_hash_once, hash_shaders))
        return ccfg_fail(CCFG_EINTERNAL, "%s: hashing the shaders failed", d->name);
    *shaders = shader_hash;
    return CCFG_OK;
}

#endif /* CCFG_NO_VULKAN */
