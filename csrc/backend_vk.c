/* backend_vk.c — the Vulkan backend: loader opened at run time, devices, buffers, pipelines.
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
int ccfg_vk_copy_bench(int device, size_t bytes, int repeats, double *seconds)
{
    (void)device; (void)bytes; (void)repeats;
    *seconds = 0.0;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}

#else /* the real backend */

#define VK_NO_PROTOTYPES
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>
#include <vulkan/vulkan.h>
/* ------------------------------------------------------------------------- */
/* entry points, resolved at run time */

#define VK_GLOBAL_FNS(X) X(CreateInstance) X(EnumerateInstanceVersion)
#define VK_INSTANCE_FNS(X)                                                                        \
    X(DestroyInstance) X(EnumeratePhysicalDevices) X(GetPhysicalDeviceProperties)                 \
    X(GetPhysicalDeviceProperties2) X(GetPhysicalDeviceFeatures)                                  \
    X(GetPhysicalDeviceMemoryProperties) X(GetPhysicalDeviceQueueFamilyProperties)                \
    X(CreateDevice) X(DestroyDevice) X(GetDeviceQueue) X(CreateBuffer) X(DestroyBuffer)           \
    X(GetBufferMemoryRequirements) X(AllocateMemory) X(FreeMemory) X(BindBufferMemory)            \
    X(MapMemory) X(CreateShaderModule) X(DestroyShaderModule) X(CreateDescriptorSetLayout)       \
    X(CreatePipelineLayout) X(CreateComputePipelines) X(CreateDescriptorPool)                     \
    X(ResetDescriptorPool) X(AllocateDescriptorSets) X(UpdateDescriptorSets)                      \
    X(CreateCommandPool) X(DestroyCommandPool) X(AllocateCommandBuffers) X(BeginCommandBuffer)    \
    X(EndCommandBuffer) X(CmdBindPipeline) X(CmdBindDescriptorSets) X(CmdPushConstants)           \
    X(CmdDispatch) X(CmdPipelineBarrier) X(CmdCopyBuffer) X(CmdFillBuffer) X(QueueSubmit)         \
    X(CreateFence) X(DestroyFence) X(WaitForFences) X(ResetFences) X(DestroyDescriptorPool)       \
    X(DestroyPipeline) X(DestroyPipelineLayout) X(DestroyDescriptorSetLayout)

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
SPV(nn_conv2d)
#include "nn_conv2d.spv.h"
;
SPV(nn_group_norm)
#include "nn_group_norm.spv.h"
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
#undef SPV

/* push constants, laid out as the shaders' `Push` blocks (std430: uvec2 on 8 bytes). A
 * coefficient travels as float and as the bits of its double (real.glsl). */
typedef struct {
    uint32_t count, terms, ox, oy, oz, oo;
    float af, bf, cf;
    uint32_t pad;
    uint32_t ad[2], bd[2], cd[2];
} push_axpbypcz;
typedef struct { uint32_t count, dim, m, stride_c, first_c, accumulate, oo, oi[8]; } push_combine;
typedef struct {
    uint32_t count, flags, ou, op, os, on, oo;
    float wf, ssf, thrf, smf, betaf;
    uint32_t wd[2], ssd[2], thrd[2], smd[2], betad[2];
} push_sld;
typedef struct { uint32_t D, K, full, mode, rows, ox, oo, row0; } push_gmm;
typedef struct { uint32_t rows, dim, blocks, seed_lo, seed_hi, stream, first, oo; } push_randn;
typedef struct { uint32_t dim, groups, mode, rows, row0, base, ou, op, on, per_row; } push_dots;
typedef struct { uint32_t count, ox, tag; } push_finite;
typedef struct { uint32_t count; } push_copy;

/* a pipeline with an _F64 twin is followed by it: P_X + 1 */
enum { P_AXPBYPCZ, P_AXPBYPCZ_F64, P_COMBINE, P_COMBINE_F64, P_SLD, P_SLD_F64, P_GMM, P_GMM_F64,
       P_DOTS, P_DOTS_F64, P_RANDN, P_RANDN_F64, P_FINITE, P_COPY,
       /* the nn.h ops (nn_vk.c), float32 only, in vk_nn.h's CCFG_VK_NN_* order */
       P_NN_FIRST, P_NN_CONV2D = P_NN_FIRST, P_NN_GROUP_NORM, P_NN_LINEAR, P_NN_ATTENTION,
       P_NN_ELTWISE, P_COUNT };

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
    PIPE(P_NN_CONV2D, nn_conv2d, 4, ccfg_vk_push_conv2d),
    PIPE(P_NN_GROUP_NORM, nn_group_norm, 6, ccfg_vk_push_group_norm),
    PIPE(P_NN_LINEAR, nn_linear, 4, ccfg_vk_push_linear),
    PIPE(P_NN_ATTENTION, nn_attention, 2, ccfg_vk_push_attention),
    PIPE(P_NN_ELTWISE, nn_eltwise, 2, ccfg_vk_push_eltwise),
};
#undef PIPE

enum { MAX_BINDINGS = 10, LOCAL_SIZE = 128, MAX_GROUPS = 65535, MAX_DEVICES = 16,
       POOL_SETS = 256, COMBINE_INPUTS = 8, GMM_MAX_K = 256, DOTS_ROW_ALONE = 64 };
/* recycled buffers: power-of-two sizes up to RECYCLE_MAX each, RECYCLE_TOTAL bytes kept idle */
#define RECYCLE_MAX ((size_t)16 << 20)
#define RECYCLE_TOTAL ((size_t)64 << 20)

/* ------------------------------------------------------------------------- */
/* state */

typedef struct {
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} vk_pipe;

typedef struct vk_buffer vk_buffer;

/* one allocation handed out as a device address range [base, base + size) */
typedef struct {
    uintptr_t base;
    size_t size;
    vk_buffer *buf;
} vk_range;

typedef struct vk_dev {
    int index;
    VkPhysicalDevice phys;
    VkPhysicalDeviceMemoryProperties mem;
    VkDevice dev;
    VkQueue queue;
    VkCommandPool cmd_pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkDescriptorPool desc_pool;
    vk_pipe pipe[P_COUNT];
    int mapped;                 /* buffers are host-visible and persistently mapped */
    int f64;                    /* the *_F64 pipelines (shaderFloat64 enabled) */
    int recording;              /* cmd is open with commands not yet submitted */
    uint64_t batch;             /* number of the open (or next) batch */
    int lost;                   /* a submit failed: every later call fails */
    vk_buffer *garbage;         /* released once the open batch has run */
    vk_buffer *recycled;        /* idle buffers for reuse (create_buffer) */
    size_t recycled_bytes;
    vk_buffer *flag;            /* the non-finite watch: min tag seen, 0xFFFFFFFF = none */
    /* fake address space: ranges sorted by base (bases only grow) */
    vk_range *ranges;
    int nranges, cap_ranges;
    uintptr_t next_addr;
    pthread_mutex_t mutex;      /* held by the one caller using the device (lock op) */
    char name[320];
    ccfg_backend be;
} vk_dev;

struct vk_buffer {
    vk_dev *d;
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    void *map;                  /* NULL unless the memory is host-visible */
    uint64_t batch_used;        /* last batch that records a command on it (0: none) */
    int staging;                /* created as a staging buffer (create_buffer's host_visible) */
    int recyclable;             /* a power-of-two size class */
    vk_buffer *next;            /* garbage or recycled list */
};

static struct {
    void *lib;
    VkInstance instance;
    int count;
    ccfg_vk_device_info info[MAX_DEVICES];
    VkPhysicalDevice phys[MAX_DEVICES];
    uint32_t qfam[MAX_DEVICES];
    vk_dev *dev[MAX_DEVICES];
    char reason[512];           /* why there is no device, when count == 0 */
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
            has_compute = 1;
        }
    info->usable = has_compute && props.apiVersion >= VK_API_VERSION_1_2;
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
        if (d->recording) flush(d);
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
    free(d->ranges);
    if (d->dev) {
        for (int p = 0; p < P_COUNT; p++) {
            if (d->pipe[p].pipeline) vk.DestroyPipeline(d->dev, d->pipe[p].pipeline, NULL);
            if (d->pipe[p].layout) vk.DestroyPipelineLayout(d->dev, d->pipe[p].layout, NULL);
            if (d->pipe[p].dsl) vk.DestroyDescriptorSetLayout(d->dev, d->pipe[p].dsl, NULL);
        }
        if (d->desc_pool) vk.DestroyDescriptorPool(d->dev, d->desc_pool, NULL);
        if (d->fence) vk.DestroyFence(d->dev, d->fence, NULL);
        if (d->cmd_pool) vk.DestroyCommandPool(d->dev, d->cmd_pool, NULL);
        vk.DestroyDevice(d->dev, NULL);
    }
    pthread_mutex_destroy(&d->mutex);
    free(d);
}

static int create_buffer(vk_dev *d, size_t bytes, int host_visible, vk_buffer **out);
static int fill_flag(vk_dev *d);
static void init_backend_table(vk_dev *d);

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
    const VkPhysicalDeviceFeatures feat = {.shaderFloat64 = d->f64 ? VK_TRUE : VK_FALSE};
    const VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                    .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci,
                                    .pEnabledFeatures = &feat};
    r = vk.CreateDevice(d->phys, &dci, NULL, &d->dev);
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
                                             .commandBufferCount = 1};
    if ((r = vk.AllocateCommandBuffers(d->dev, &cai, &d->cmd)) != VK_SUCCESS) {
        vk_fail(d, "vkAllocateCommandBuffers", r);
        goto fail;
    }
    const VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((r = vk.CreateFence(d->dev, &fci, NULL, &d->fence)) != VK_SUCCESS) {
        vk_fail(d, "vkCreateFence", r);
        goto fail;
    }
    const VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                     .descriptorCount = POOL_SETS * MAX_BINDINGS};
    const VkDescriptorPoolCreateInfo dpi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = POOL_SETS, .poolSizeCount = 1,
                                            .pPoolSizes = &ps};
    if ((r = vk.CreateDescriptorPool(d->dev, &dpi, NULL, &d->desc_pool)) != VK_SUCCESS) {
        vk_fail(d, "vkCreateDescriptorPool", r);
        goto fail;
    }
    /* the fake address space of device i: [(i+1) << 48, (i+2) << 48) */
    d->next_addr = (uintptr_t)(index + 1) << 48;
    snprintf(d->name, sizeof d->name, "vulkan:%d (%s)", index, g.info[index].name);
    init_backend_table(d);
    int status;
    if ((status = create_buffer(d, sizeof(uint32_t), 0, &d->flag)) || (status = fill_flag(d)))
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
    const VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = mod, .pName = "main"},
        .layout = pp->layout};
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

/* Submit the open batch and wait for it. */
static void recycle(vk_buffer *b);

static int flush(vk_dev *d)
{
    VkResult r;
    int status = CCFG_OK;
    if (!d->recording) return CCFG_OK;
    d->recording = 0;
    d->batch++;
    if ((r = vk.EndCommandBuffer(d->cmd)) != VK_SUCCESS) {
        status = vk_fail(d, "vkEndCommandBuffer", r);
        goto fail;
    }
    if ((r = vk.ResetFences(d->dev, 1, &d->fence)) != VK_SUCCESS) {
        status = vk_fail(d, "vkResetFences", r);
        goto fail;
    }
    const VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                             .pCommandBuffers = &d->cmd};
    if ((r = vk.QueueSubmit(d->queue, 1, &si, d->fence)) != VK_SUCCESS) {
        status = vk_fail(d, "vkQueueSubmit", r);
        goto fail;
    }
    if ((r = vk.WaitForFences(d->dev, 1, &d->fence, VK_TRUE, UINT64_MAX)) != VK_SUCCESS) {
        status = vk_fail(d, "vkWaitForFences", r);
        goto fail;
    }
    if ((r = vk.ResetDescriptorPool(d->dev, d->desc_pool, 0)) != VK_SUCCESS) {
        status = vk_fail(d, "vkResetDescriptorPool", r);
        goto fail;
    }
fail:
    /* a failed batch leaves its outputs undefined and maybe the device lost: refuse further work
     * rather than return results that look good */
    if (status != CCFG_OK) d->lost = 1;
    else {
        while (d->garbage) {
            vk_buffer *b = d->garbage;
            d->garbage = b->next;
            recycle(b);
        }
    }
    return status;
}

/* Record one dispatch of pipeline p over bufs (pipe_spec[p].bindings of them). */
static int dispatch(vk_dev *d, int p, vk_buffer *const *bufs, const void *push,
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
    return CCFG_OK;
}

/* workgroups for a grid-stride loop over count items */
static uint32_t groups_for(int64_t count)
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

/* host_visible: a staging buffer (mapped, coherent); else a storage buffer for the device */
static int create_buffer(vk_dev *d, size_t bytes, int host_visible, vk_buffer **out)
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
        if ((*pp)->size == cls && (*pp)->staging == host_visible) {
            vk_buffer *b = *pp;
            *pp = b->next;
            d->recycled_bytes -= cls;
            b->next = NULL;
            b->batch_used = 0;
            *out = b;
            return CCFG_OK;
        }
    vk_buffer *b = calloc(1, sizeof *b);
    if (!b) return ccfg_fail(CCFG_ENOMEM, "out of host memory for a Vulkan buffer");
    b->d = d;
    b->staging = host_visible;
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
    const int mapped = host_visible || d->mapped;
    uint32_t type;
    int found = mapped ? find_memory(d, req.memoryTypeBits, hv | dl, &type) ||
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
    } else {
        destroy_buffer(b);
    }
}

/* Release now, or after the open batch if it still uses the buffer. */
static void release_buffer(vk_buffer *b)
{
    vk_dev *d = b->d;
    if (d->recording && b->batch_used == d->batch) {
        b->next = d->garbage;
        d->garbage = b;
    } else {
        recycle(b);
    }
}

/* Buffers the backend keeps for itself (partials, coefficients, parameters) live outside the
 * address space and are released after the batch that uses them. */
static int new_buffer(vk_dev *d, size_t bytes, vk_buffer **out)
{
    vk_buffer *b = NULL;
    int status;
    *out = NULL;
    if (bytes > g.info[d->index].max_storage_buffer_range)
        return ccfg_fail(CCFG_EINVAL, "%s: a buffer of %zu bytes exceeds the device's "
                         "maxStorageBufferRange (%u bytes); use fewer samples per call", d->name,
                         bytes, g.info[d->index].max_storage_buffer_range);
    if ((status = create_buffer(d, bytes, 0, &b)) != CCFG_OK) return status;
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
    release_buffer(b);
    return status;
}

/* host -> b at byte offset `at`; src may be reused at once */
static int write_buffer(vk_buffer *b, size_t at, const void *src, size_t bytes)
{
    vk_dev *d = b->d;
    vk_buffer *st = NULL;
    int status;
    if (!bytes) return CCFG_OK;
    if (b->map) {
        /* host writes land at once: work recorded earlier on this buffer must run first */
        if (d->recording && b->batch_used == d->batch && (status = flush(d)) != CCFG_OK) return status;
        memcpy((char *)b->map + at, src, bytes);
        return CCFG_OK;
    }
    /* the copy is ordered inside the batch, so nothing has to be submitted here */
    if ((status = create_buffer(d, bytes, 1, &st)) != CCFG_OK) return status;
    memcpy(st->map, src, bytes);
    if ((status = begin(d)) == CCFG_OK) {
        const VkBufferCopy region = {.srcOffset = 0, .dstOffset = at, .size = bytes};
        vk.CmdCopyBuffer(d->cmd, st->buf, b->buf, 1, &region);
        st->batch_used = b->batch_used = d->batch;
        barrier(d);
    }
    release_buffer(st);
    return status;
}

/* b at byte offset `at` -> host, after everything recorded has run */
static int read_buffer(void *dst, vk_buffer *b, size_t at, size_t bytes)
{
    vk_dev *d = b->d;
    vk_buffer *st = NULL;
    int status;
    if (b->map || !bytes) {
        if ((status = flush(d)) != CCFG_OK) return status;
        if (bytes) memcpy(dst, (const char *)b->map + at, bytes);
        return CCFG_OK;
    }
    if ((status = create_buffer(d, bytes, 1, &st)) != CCFG_OK) return status;
    if ((status = begin(d)) != CCFG_OK) goto fail;
    const VkBufferCopy region = {.srcOffset = at, .dstOffset = 0, .size = bytes};
    vk.CmdCopyBuffer(d->cmd, b->buf, st->buf, 1, &region);
    st->batch_used = b->batch_used = d->batch;
    barrier(d);
    if ((status = flush(d)) != CCFG_OK) goto fail;
    memcpy(dst, st->map, bytes);
fail:
    release_buffer(st);
    return status;
}

/* ------------------------------------------------------------------------- */
/* device addresses */

/* The range holding [p, p + bytes), as buffer and element offset. A pointer that is not ours is
 * a bug in the caller: said clearly rather than crashed on. */
static int resolve(vk_dev *d, const void *p, size_t bytes, vk_buffer **buf, uint32_t *elem)
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

static int vk_alloc(const ccfg_backend *be, size_t bytes, float **out)
{
    vk_dev *d = be->ctx;
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
    if ((status = new_buffer(d, bytes, &b)) != CCFG_OK) return status;
    d->ranges[d->nranges++] = (vk_range){.base = d->next_addr, .size = bytes, .buf = b};
    *out = (float *)d->next_addr;
    d->next_addr += span + 256;         /* a gap: one-past-the-end never aliases the next range */
    return CCFG_OK;
}

static void vk_release(const ccfg_backend *be, void *p)
{
    vk_dev *d = be->ctx;
    if (!p) return;
    for (int i = 0; i < d->nranges; i++)
        if (d->ranges[i].base == (uintptr_t)p) {
            release_buffer(d->ranges[i].buf);
            memmove(d->ranges + i, d->ranges + i + 1, (size_t)(d->nranges - i - 1) * sizeof *d->ranges);
            d->nranges--;
            return;
        }
}

static int vk_upload(const ccfg_backend *be, void *dst, const void *src, size_t bytes)
{
    vk_buffer *b = NULL;
    uint32_t at = 0;
    int status = resolve(be->ctx, dst, bytes, &b, &at);
    return status ? status : write_buffer(b, (size_t)at * 4, src, bytes);
}

static int vk_download(const ccfg_backend *be, void *dst, const void *src, size_t bytes)
{
    vk_buffer *b = NULL;
    uint32_t at = 0;
    int status = resolve(be->ctx, src, bytes, &b, &at);
    return status ? status : read_buffer(dst, b, (size_t)at * 4, bytes);
}

static int vk_sync(const ccfg_backend *be) { return flush(be->ctx); }

static void vk_lock(const ccfg_backend *be, int acquire)
{
    vk_dev *d = be->ctx;
    if (acquire) pthread_mutex_lock(&d->mutex);
    else pthread_mutex_unlock(&d->mutex);
}

/* ------------------------------------------------------------------------- */
/* ops */

/* count floats at each of the pointers -> buffers and element offsets; counts beyond the 32-bit
 * element indices of the shaders are refused (buffers never get that big: maxStorageBufferRange) */
static int resolve_all(vk_dev *d, int64_t count, const float *const *ptrs, int np, vk_buffer **bufs,
                       uint32_t *offs, const char *op)
{
    int status;
    if (count < 0 || count > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s %s: %lld elements is out of range", d->name, op,
                         (long long)count);
    for (int i = 0; i < np; i++)
        if ((status = resolve(d, ptrs[i], (size_t)count * sizeof(float), &bufs[i], &offs[i])))
            return status;
    return CCFG_OK;
}

/* the pipeline doing REAL arithmetic: its _F64 twin where the device has float64 */
static int pipe_real(const vk_dev *d, int p) { return d->f64 ? p + 1 : p; }

/* the float and the double bits of a coefficient (real.glsl's COEF) */
static void coef_bits(double v, float *f, uint32_t bits[2])
{
    *f = (float)v;
    memcpy(bits, &v, sizeof v);     /* little-endian: low word first, as packDouble2x32 takes */
}


static int vk_axpbypcz(const ccfg_backend *be, int64_t count, double a, const float *x, double b,
                       const float *y, double c, const float *z, float *out)
{
    vk_dev *d = be->ctx;
    /* an absent term binds x in its place: every binding must be a valid buffer */
    const float *ptrs[4] = {x, y ? y : x, z ? z : x, out};
    vk_buffer *bufs[4];
    uint32_t o[4];
    int status;
    if (!count) return CCFG_OK;
    if ((status = resolve_all(d, count, ptrs, 4, bufs, o, "axpbypcz"))) return status;
    push_axpbypcz pc = {.count = (uint32_t)count, .terms = (y ? 1u : 0u) | (z ? 2u : 0u),
                        .ox = o[0], .oy = o[1], .oz = o[2], .oo = o[3]};
    coef_bits(a, &pc.af, pc.ad);
    coef_bits(b, &pc.bf, pc.bd);
    coef_bits(c, &pc.cf, pc.cd);
    return dispatch(d, pipe_real(d, P_AXPBYPCZ), bufs, &pc, groups_for(count), 1);
}

/* a host array of doubles as a new buffer of the shaders' REAL (double or float) */
static int upload_reals(vk_dev *d, const double *v, size_t count, vk_buffer **out)
{
    const size_t bytes = count * (d->f64 ? sizeof(double) : sizeof(float));
    float *f = NULL;
    int status;
    *out = NULL;
    if ((status = new_buffer(d, bytes, out))) return status;
    if (d->f64) return write_buffer(*out, 0, v, bytes);
    if (!(f = malloc(bytes ? bytes : 1))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory converting coefficients");
    } else {
        for (size_t i = 0; i < count; i++) f[i] = (float)v[i];
        status = write_buffer(*out, 0, f, bytes);
    }
    free(f);
    return status;
}

static int vk_combine(const ccfg_backend *be, int64_t n, int64_t dim, int m, const float *const *in,
                      const double *coef, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *cb = NULL, *bufs[MAX_BINDINGS], *ob;
    uint32_t oo;
    int status;
    if (n < 0 || dim < 0 || m < 1)
        return ccfg_fail(CCFG_EINVAL, "%s combine: needs n, dim >= 0 and m >= 1", d->name);
    if (!n || !dim) return CCFG_OK;
    if ((status = resolve_all(d, n * dim, (const float *const *)&out, 1, &ob, &oo, "combine")))
        return status;
    if ((status = upload_reals(d, coef, (size_t)(n * m), &cb))) goto fail;
    /* 8 inputs per dispatch; later dispatches add to out */
    for (int q0 = 0; q0 < m; q0 += COMBINE_INPUTS) {
        const int mq = m - q0 < COMBINE_INPUTS ? m - q0 : COMBINE_INPUTS;
        push_combine pc = {.count = (uint32_t)(n * dim), .dim = (uint32_t)dim, .m = (uint32_t)mq,
                           .stride_c = (uint32_t)m, .first_c = (uint32_t)q0,
                           .accumulate = q0 > 0, .oo = oo};
        const float *ptrs[COMBINE_INPUTS];
        for (int q = 0; q < COMBINE_INPUTS; q++) ptrs[q] = in[q0 + (q < mq ? q : 0)];
        if ((status = resolve_all(d, n * dim, ptrs, COMBINE_INPUTS, bufs + 2, pc.oi, "combine")))
            goto fail;
        bufs[0] = ob;
        bufs[1] = cb;
        if ((status = dispatch(d, pipe_real(d, P_COMBINE), bufs, &pc, groups_for(n * dim), 1)))
            goto fail;
    }
fail:
    if (cb) release_buffer(cb);     /* after the batch: the dispatches read it */
    return status;
}

static int vk_randn(const ccfg_backend *be, int64_t n, int64_t dim, uint64_t seed, uint64_t stream,
                    int64_t first, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *ob;
    uint32_t oo;
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "%s randn: n and dim must be >= 0", d->name);
    if (!n || !dim) return CCFG_OK;
    if ((status = resolve_all(d, n * dim, (const float *const *)&out, 1, &ob, &oo, "randn")))
        return status;
    const int64_t blocks = (dim + 3) / 4;
    /* the CPU puts (uint32_t)stream and (uint32_t)(first + i) in the counter: same wrap here */
    const push_randn pc = {(uint32_t)n, (uint32_t)dim, (uint32_t)blocks, (uint32_t)seed,
                           (uint32_t)(seed >> 32), (uint32_t)stream, (uint32_t)first, oo};
    return dispatch(d, pipe_real(d, P_RANDN), &ob, &pc, groups_for(n * blocks), 1);
}

/* Record the dots shader over all rows (split where n exceeds the y-dispatch limit). */
static int record_dots(vk_dev *d, vk_buffer *const *bufs, int64_t n, int64_t dim, uint32_t groups,
                       uint32_t mode, uint32_t base, const uint32_t o[3])
{
    int status;
    if (groups == 1 && dim <= DOTS_ROW_ALONE) {     /* short rows: an invocation each */
        const push_dots pc = {(uint32_t)dim, 1, mode, (uint32_t)n, 0, base, o[0], o[1], o[2], 1};
        return dispatch(d, pipe_real(d, P_DOTS), bufs, &pc,
                        (uint32_t)((n + LOCAL_SIZE - 1) / LOCAL_SIZE), 1);
    }
    for (int64_t row0 = 0; row0 < n; row0 += MAX_GROUPS) {
        const int64_t rows = n - row0 < MAX_GROUPS ? n - row0 : MAX_GROUPS;
        const push_dots pc = {(uint32_t)dim, groups, mode, (uint32_t)n, (uint32_t)row0, base,
                              o[0], o[1], o[2], 0};
        if ((status = dispatch(d, pipe_real(d, P_DOTS), bufs, &pc, groups, (uint32_t)rows)))
            return status;
    }
    return CCFG_OK;
}

/* partial sums per sample: about 8 elements per thread, at most 1024 workgroups per sample */
static uint32_t dot_groups(int64_t dim)
{
    int64_t gsz = (dim + LOCAL_SIZE * 8 - 1) / (LOCAL_SIZE * 8);
    return (uint32_t)(gsz < 1 ? 1 : gsz > 1024 ? 1024 : gsz);
}

/* out[i] = sum of the `groups` partials of row i (REAL: double or float), in double; `at` counts
 * partials from the start of the buffer */
static void sum_partials(const vk_dev *d, const void *part, size_t at, int64_t n, uint32_t groups,
                         double *out)
{
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (uint32_t gi = 0; gi < groups; gi++) {
            const size_t q = at + (size_t)i * groups + gi;
            s += d->f64 ? ((const double *)part)[q] : (double)((const float *)part)[q];
        }
        out[i] = s;
    }
}

static int vk_dot(const ccfg_backend *be, int64_t n, int64_t dim, const float *a, const float *b,
                  double *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *pb = NULL, *bufs[4];
    const float *ptrs[2] = {a, b};
    uint32_t o[3] = {0, 0, 0};
    void *part = NULL;
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "%s dot: n and dim must be >= 0", d->name);
    if (!n) return CCFG_OK;
    if ((status = resolve_all(d, n * dim, ptrs, 2, bufs, o, "dot"))) return status;
    bufs[2] = bufs[0];
    o[2] = o[0];
    const uint32_t groups = dot_groups(dim);
    const size_t bytes = (size_t)n * groups * (d->f64 ? sizeof(double) : sizeof(float));
    if (!(part = malloc(bytes))) return ccfg_fail(CCFG_ENOMEM, "out of memory for dot partials");
    if ((status = new_buffer(d, bytes, &pb)) != CCFG_OK) goto fail;
    bufs[3] = pb;
    if ((status = record_dots(d, bufs, n, dim, groups, 0, 0, o)) != CCFG_OK) goto fail;
    if ((status = read_buffer(part, pb, 0, bytes)) != CCFG_OK) goto fail;
    sum_partials(d, part, 0, n, groups, out);
fail:
    if (pb) release_buffer(pb);
    free(part);
    return status;
}

static int vk_direction_dots(const ccfg_backend *be, int64_t n, int64_t dim, const float *u,
                             const float *p, int k, const float *const *neg, double *pp, double *nn,
                             double *np)
{
    vk_dev *d = be->ctx;
    vk_buffer *pb = NULL, *bufs[4];
    const float *ptrs[2] = {u, p};
    uint32_t o[3] = {0, 0, 0};
    void *part = NULL;
    int status;
    if (n < 0 || dim < 0 || k < 0)
        return ccfg_fail(CCFG_EINVAL, "%s direction_dots: n, dim and k must be >= 0", d->name);
    if (!n) return CCFG_OK;
    if ((status = resolve_all(d, n * dim, ptrs, 2, bufs, o, "direction_dots"))) return status;
    bufs[2] = bufs[1];
    o[2] = o[1];
    /* one block of 3 planes [3][n][groups] per negative (one for k = 0, where only pp exists) */
    const uint32_t groups = dot_groups(dim);
    const size_t plane = (size_t)n * groups, blocks = k ? (size_t)k : 1;
    const size_t bytes = blocks * 3 * plane * (d->f64 ? sizeof(double) : sizeof(float));
    if (blocks * 3 * plane > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s direction_dots: too many samples and negatives", d->name);
    if (!(part = malloc(bytes))) return ccfg_fail(CCFG_ENOMEM, "out of memory for direction_dots partials");
    if ((status = new_buffer(d, bytes, &pb)) != CCFG_OK) goto fail;
    bufs[3] = pb;
    if (k == 0 && (status = record_dots(d, bufs, n, dim, groups, 1, 0, o)) != CCFG_OK) goto fail;
    for (int q = 0; q < k; q++) {
        /* every negative's pass also yields ‖D_p‖², as on the CPU; the first one is kept */
        if ((status = resolve_all(d, n * dim, &neg[q], 1, &bufs[2], &o[2], "direction_dots")) ||
            (status = record_dots(d, bufs, n, dim, groups, 2, (uint32_t)(q * 3 * plane), o)))
            goto fail;
    }
    if ((status = read_buffer(part, pb, 0, bytes)) != CCFG_OK) goto fail;
    sum_partials(d, part, 0, n, groups, pp);
    for (int q = 0; q < k; q++) {
        sum_partials(d, part, (size_t)q * 3 * plane + plane, n, groups, nn + (int64_t)q * n);
        sum_partials(d, part, (size_t)q * 3 * plane + 2 * plane, n, groups, np + (int64_t)q * n);
    }
fail:
    if (pb) release_buffer(pb);
    free(part);
    return status;
}

/* the watch flag back to "nothing seen", ordered after everything recorded */
static int fill_flag(vk_dev *d)
{
    const uint32_t none = 0xFFFFFFFFu;
    return write_buffer(d->flag, 0, &none, sizeof none);
}

static int vk_watch_finite(const ccfg_backend *be, int64_t count, const float *x, int tag)
{
    vk_dev *d = be->ctx;
    vk_buffer *bufs[2];
    uint32_t o[1] = {0};
    int status;
    if (!count) return CCFG_OK;
    if (tag < 0) return ccfg_fail(CCFG_EINVAL, "%s watch_finite: tag must be >= 0", d->name);
    if ((status = resolve_all(d, count, (const float *const *)&x, 1, bufs, o, "watch_finite")))
        return status;
    bufs[1] = d->flag;
    const push_finite pc = {(uint32_t)count, o[0], (uint32_t)tag};
    return dispatch(d, P_FINITE, bufs, &pc, groups_for(count), 1);
}

static int vk_first_nonfinite(const ccfg_backend *be, int *tag)
{
    vk_dev *d = be->ctx;
    uint32_t v;
    int status;
    *tag = -1;
    if ((status = read_buffer(&v, d->flag, 0, sizeof v))) return status;
    if (v == 0xFFFFFFFFu) return CCFG_OK;
    *tag = (int)v;
    return fill_flag(d);
}

static int vk_sld(const ccfg_backend *be, int64_t count, const float *eps_u, const float *eps_p,
                  const float *eps_s, float *nu, double w, double s_s, double thr, double s_m,
                  double beta_m, int update, int apply, float *out)
{
    vk_dev *d = be->ctx;
    const float *ptrs[5] = {eps_u, eps_p, eps_s, nu, out};
    vk_buffer *bufs[5];
    uint32_t o[5];
    int status;
    if (!count || (!update && !apply)) return CCFG_OK;
    if ((status = resolve_all(d, count, ptrs, 5, bufs, o, "sld"))) return status;
    push_sld pc = {.count = (uint32_t)count, .flags = (update ? 1u : 0u) | (apply ? 2u : 0u),
                   .ou = o[0], .op = o[1], .os = o[2], .on = o[3], .oo = o[4]};
    coef_bits(w, &pc.wf, pc.wd);
    coef_bits(s_s, &pc.ssf, pc.ssd);
    coef_bits(thr, &pc.thrf, pc.thrd);
    coef_bits(s_m, &pc.smf, pc.smd);
    coef_bits(beta_m, &pc.betaf, pc.betad);
    return dispatch(d, pipe_real(d, P_SLD), bufs, &pc, groups_for(count), 1);
}

/* ------------------------------------------------------------------------- */
/* the exact Gaussian mixture (shaders/gmm_eps.glsl) */

typedef struct {
    vk_buffer *U, *UT, *mask, *scratch;     /* means and variances reach it per level (bias) */
    int64_t chunk;                  /* rows per dispatch (scratch holds their w_k or lp_k) */
    int per_row;                    /* mode 1 of the shader: an invocation per row */
    double *bias;                   /* [3 + K + 2 K D] host staging of the level (gmm_eps.glsl) */
} vk_gmm;

static void vk_gmm_free(const ccfg_backend *be, void *handle)
{
    vk_gmm *m = handle;
    vk_buffer *bs[4];
    (void)be;
    if (!m) return;
    bs[0] = m->U; bs[1] = m->UT; bs[2] = m->mask; bs[3] = m->scratch;
    for (int i = 0; i < 4; i++)
        if (bs[i]) release_buffer(bs[i]);
    free(m->bias);
    free(m);
}

static int vk_gmm_load(const ccfg_backend *be, const ccfg_gmm *gm, void **handle)
{
    vk_dev *d = be->ctx;
    const int64_t K = gm->K, D = gm->dim;
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    double *t = NULL;
    uint32_t *mask = NULL;
    int status = CCFG_OK;
    *handle = NULL;
    if (K < 1 || K > GMM_MAX_K)
        return ccfg_fail(CCFG_EINVAL, "%s: the exact mixture on a device takes 1..%d components, "
                         "this one has %lld", d->name, GMM_MAX_K, (long long)K);
    vk_gmm *m = calloc(1, sizeof *m);
    if (!m || !(m->bias = malloc((size_t)(3 + K + 2 * K * D) * sizeof *m->bias))) {
        free(m);
        return ccfg_fail(CCFG_ENOMEM, "out of memory loading the mixture");
    }
    if (gm->evecs) {
        const size_t kdd = (size_t)(K * D * D);
        if (!(t = malloc(kdd * sizeof *t))) {
            status = ccfg_fail(CCFG_ENOMEM, "out of memory loading the mixture");
            goto fail;
        }
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = 0; j < D; j++) t[(k * D + j) * D + i] = gm->evecs[(k * D + i) * D + j];
        if ((status = upload_reals(d, gm->evecs, kdd, &m->U)) ||
            (status = upload_reals(d, t, kdd, &m->UT)))
            goto fail;
        /* the scratch keeps w_k of `chunk` rows: about 32 MiB, within the binding limit */
        const size_t per_row = (size_t)(K * D) * real;
        size_t cap = (size_t)32 << 20;
        if (cap > g.info[d->index].max_storage_buffer_range) cap = g.info[d->index].max_storage_buffer_range;
        m->chunk = (int64_t)(cap / per_row);
        if (m->chunk < 1)
            status = ccfg_fail(CCFG_EINVAL, "%s: a full-covariance mixture with K = %lld, dim = "
                               "%lld needs more scratch per sample than one binding holds",
                               d->name, (long long)K, (long long)D);
        if (m->chunk > MAX_GROUPS) m->chunk = MAX_GROUPS;
        if (status || (status = new_buffer(d, (size_t)m->chunk * per_row, &m->scratch))) goto fail;
    } else if (D <= 64) {
        /* small rows: an invocation each, log-likelihoods of `chunk` rows in the scratch */
        m->per_row = 1;
        m->chunk = (int64_t)(((size_t)8 << 20) / ((size_t)K * real));
        if (m->chunk > (int64_t)MAX_GROUPS * LOCAL_SIZE) m->chunk = (int64_t)MAX_GROUPS * LOCAL_SIZE;
        if ((status = new_buffer(d, (size_t)m->chunk * (size_t)K * real, &m->scratch))) goto fail;
    } else {
        m->chunk = MAX_GROUPS;
    }
    const size_t nm = (size_t)gm->n_concepts * (size_t)K;
    if (!(mask = malloc((nm ? nm : 1) * sizeof *mask))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory loading the mixture");
        goto fail;
    }
    for (size_t i = 0; i < nm; i++) mask[i] = gm->concept_mask[i];
    if ((status = new_buffer(d, (nm ? nm : 1) * sizeof *mask, &m->mask)) ||
        (status = write_buffer(m->mask, 0, mask, nm * sizeof *mask)))
        goto fail;
    *handle = m;
fail:
    free(t);
    free(mask);
    if (status) vk_gmm_free(be, m);
    return status;
}

static int vk_gmm_eps(const ccfg_backend *be, const ccfg_gmm *gm, void *handle, int64_t rows,
                      const float *x, double alpha_bar, const int32_t *cond, float *out)
{
    vk_dev *d = be->ctx;
    vk_gmm *m = handle;
    const int64_t K = gm->K, D = gm->dim;
    const float *ptrs[2] = {x, out};
    vk_buffer *bufs[MAX_BINDINGS], *lvl = NULL, *cb = NULL;
    uint32_t o[2] = {0, 0};
    int status;
    if (!rows) return CCFG_OK;
    if ((status = resolve_all(d, rows * D, ptrs, 2, bufs, o, "gmm_eps"))) return status;
    /* the level: a, s², s, each component's log w_k - ½ log det C_k (GLSL has no double log),
     * a μ_k and 1 / c_k (the same for every row) */
    const double a = sqrt(alpha_bar), s2 = 1.0 - alpha_bar;
    double *amu = m->bias + 3 + K, *inv_c = amu + K * D;
    m->bias[0] = a;
    m->bias[1] = s2;
    m->bias[2] = sqrt(s2);
    for (int64_t k = 0; k < K; k++) {
        double logdet = 0.0;
        for (int64_t j = 0; j < D; j++) {
            const double c = a * a * gm->evals[k * D + j] + s2;
            logdet += log(c);
            amu[k * D + j] = a * gm->means[k * D + j];
            inv_c[k * D + j] = 1.0 / c;
        }
        m->bias[3 + k] = gm->log_weights[k] - 0.5 * logdet;
    }
    if ((status = upload_reals(d, m->bias, (size_t)(3 + K + 2 * K * D), &lvl)) ||
        (status = new_buffer(d, (size_t)rows * sizeof *cond, &cb)) ||
        (status = write_buffer(cb, 0, cond, (size_t)rows * sizeof *cond)))
        goto fail;
    /* unused bindings (no rotations, no scratch) get any valid buffer */
    bufs[2] = m->U ? m->U : m->mask;
    bufs[3] = m->UT ? m->UT : m->mask;
    bufs[4] = lvl;
    bufs[5] = cb;
    bufs[6] = m->mask;
    bufs[7] = m->scratch ? m->scratch : m->mask;
    for (int64_t r0 = 0; r0 < rows; r0 += m->chunk) {
        const int64_t nr = rows - r0 < m->chunk ? rows - r0 : m->chunk;
        const push_gmm pc = {(uint32_t)D, (uint32_t)K, m->U != NULL, (uint32_t)m->per_row,
                             (uint32_t)nr, o[0], o[1], (uint32_t)r0};
        const uint32_t groups = m->per_row ? (uint32_t)((nr + LOCAL_SIZE - 1) / LOCAL_SIZE) : (uint32_t)nr;
        if ((status = dispatch(d, pipe_real(d, P_GMM), bufs, &pc, groups, 1))) goto fail;
    }
fail:
    if (lvl) release_buffer(lvl);
    if (cb) release_buffer(cb);
    return status;
}

/* ------------------------------------------------------------------------- */
/* the backend table */

/* ------------------------------------------------------------------------- */
/* nn.h ops (nn_vk.c records them through this) */

int ccfg_vk_nn_dispatch(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                        const int64_t *counts, void *push, int64_t items, int per_group,
                        uint32_t groups_y)
{
    vk_dev *d = be->ctx;
    vk_buffer *bufs[MAX_BINDINGS];
    uint32_t *offs = push;
    static const char *names[CCFG_VK_NN_COUNT] = {"conv2d", "group_norm", "linear", "attention",
                                                  "eltwise"};
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
        if ((status = resolve_all(d, counts[i], &ptrs[i], 1, &bufs[i], &offs[i], names[kernel])))
            return status;
    const uint32_t groups = per_group ? (uint32_t)(items < MAX_GROUPS ? items : MAX_GROUPS)
                                      : groups_for(items);
    return dispatch(d, P_NN_FIRST + kernel, bufs, push, groups, groups_y);
}

static const ccfg_guide_ops vk_guide_ops = {
    .dot = vk_dot,
    .direction_dots = vk_direction_dots,
    .combine = vk_combine,
    .sld = vk_sld,
};

static const ccfg_gmm_ops vk_gmm_ops = {
    .load = vk_gmm_load,
    .free = vk_gmm_free,
    .eps = vk_gmm_eps,
};

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
        .axpbypcz = vk_axpbypcz,
        .randn = vk_randn,
        .watch_finite = vk_watch_finite,
        .first_nonfinite = vk_first_nonfinite,
        .guide = &vk_guide_ops,
        .gmm = &vk_gmm_ops,
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

/* seconds per copy of `bytes` by shaders/copy.comp (the device's memory bandwidth, benchmarks) */
int ccfg_vk_copy_bench(int device, size_t bytes, int repeats, double *seconds)
{
    const ccfg_backend *be;
    vk_buffer *src = NULL, *dst = NULL;
    int status;
    *seconds = 0.0;
    if ((status = ccfg_backend_vulkan(device, &be))) return status;
    vk_dev *d = be->ctx;
    bytes &= ~(size_t)15;
    if ((status = new_buffer(d, bytes, &src)) || (status = new_buffer(d, bytes, &dst)) ||
        (status = flush(d)))
        goto fail;
    vk_buffer *bufs[2] = {src, dst};
    const push_copy pc = {(uint32_t)(bytes / 16)};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < repeats && !status; r++)
        status = dispatch(d, P_COPY, bufs, &pc, groups_for((int64_t)(bytes / 16)), 1);
    if (!status) status = flush(d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *seconds = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / repeats;
fail:
    if (src) release_buffer(src);
    if (dst) release_buffer(dst);
    if (!status) status = flush(d);
    return status;
}

#endif /* CCFG_NO_VULKAN */
