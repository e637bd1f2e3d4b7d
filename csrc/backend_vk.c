/* backend_vk.c — the Vulkan backend: loader opened at run time, devices, buffers, pipelines.
 *
 * Why dlopen: `import ccfg` must work, and the CPU backend must run, on machines without Vulkan.
 * The Vulkan headers are used for types only (VK_NO_PROTOTYPES); every entry point is resolved
 * through vkGetInstanceProcAddr.
 *
 * Execution model: each device has one command buffer that ops are recorded into, with a global
 * memory barrier after every command (simple and always correct; ops of a step depend on each
 * other anyway). The batch is submitted when the host needs a result (reductions, downloads) or
 * on ccfg_vk_flush. Descriptor sets come from a per-device pool reset after every submit.
 * Pipelines are created on first use from SPIR-V embedded at build time (build/shaders/NAME.spv.h).
 *
 * Memory: on CPU and integrated devices every buffer is host-visible and coherent (persistently
 * mapped: uploads and downloads are memcpy). On discrete GPUs buffers are device-local and data
 * moves through staging buffers copied inside the batch. CCFG_VULKAN_STAGING=1 forces the
 * second path anywhere (tests use it on lavapipe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

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
int ccfg_vk_alloc(int device, size_t bytes, ccfg_vk_buffer **out)
{
    (void)device; (void)bytes;
    *out = NULL;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
void ccfg_vk_free(ccfg_vk_buffer *b) { (void)b; }
int ccfg_vk_upload(ccfg_vk_buffer *dst, const void *src, size_t bytes)
{
    (void)dst; (void)src; (void)bytes;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_download(void *dst, ccfg_vk_buffer *src, size_t bytes)
{
    (void)dst; (void)src; (void)bytes;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_flush(int device)
{
    (void)device;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
/* the ops are unreachable without a buffer, which ccfg_vk_alloc never hands out */
int ccfg_vk_axpbypcz(int64_t count, double a, ccfg_vk_buffer *x, double b, ccfg_vk_buffer *y,
                     double c, ccfg_vk_buffer *z, ccfg_vk_buffer *out)
{
    (void)count; (void)a; (void)x; (void)b; (void)y; (void)c; (void)z; (void)out;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_combine(int64_t n, int64_t dim, int m, ccfg_vk_buffer *const *in, const double *coef,
                    ccfg_vk_buffer *out)
{
    (void)n; (void)dim; (void)m; (void)in; (void)coef; (void)out;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_randn(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                  ccfg_vk_buffer *out)
{
    (void)n; (void)dim; (void)seed; (void)stream; (void)first; (void)out;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_dot(int64_t n, int64_t dim, ccfg_vk_buffer *a, ccfg_vk_buffer *b, double *out)
{
    (void)n; (void)dim; (void)a; (void)b; (void)out;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_direction_dots(int64_t n, int64_t dim, ccfg_vk_buffer *u, ccfg_vk_buffer *p, int k,
                           ccfg_vk_buffer *const *neg, double *pp, double *nn, double *np)
{
    (void)n; (void)dim; (void)u; (void)p; (void)k; (void)neg; (void)pp; (void)nn; (void)np;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_all_finite(int64_t count, ccfg_vk_buffer *x, int *result)
{
    (void)count; (void)x; (void)result;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}
int ccfg_vk_sld(int64_t count, ccfg_vk_buffer *eps_u, ccfg_vk_buffer *eps_p, ccfg_vk_buffer *eps_s,
                ccfg_vk_buffer *nu, double w, double s_s, double thr, double s_m, double beta_m,
                int update, int apply, ccfg_vk_buffer *out)
{
    (void)count; (void)eps_u; (void)eps_p; (void)eps_s; (void)nu; (void)w; (void)s_s; (void)thr;
    (void)s_m; (void)beta_m; (void)update; (void)apply; (void)out;
    return ccfg_fail(CCFG_EINTERNAL, "no Vulkan device: %s", no_vk);
}

#else /* the real backend */

#define VK_NO_PROTOTYPES
#include <dlfcn.h>
#include <pthread.h>
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

static const uint32_t spv_axpbypcz[] =
#include "axpbypcz.spv.h"
;
static const uint32_t spv_combine[] =
#include "combine.spv.h"
;
static const uint32_t spv_randn[] =
#include "randn.spv.h"
;
static const uint32_t spv_dots[] =
#include "dots.spv.h"
;
static const uint32_t spv_all_finite[] =
#include "all_finite.spv.h"
;
static const uint32_t spv_sld[] =
#include "sld.spv.h"
;

/* push constants, laid out as the shaders' `Push` blocks */
typedef struct { uint32_t count, terms; float a, b, c; } push_axpbypcz;
typedef struct { uint32_t count, dim, m; } push_combine;
typedef struct { uint32_t rows, dim, blocks, seed_lo, seed_hi, stream, first; } push_randn;
typedef struct { uint32_t dim, groups, mode, rows, row0, base; } push_dots;
typedef struct { uint32_t count; } push_all_finite;
typedef struct { uint32_t count, flags; float w, s_s, thr, s_m, beta_m; } push_sld;

enum { P_AXPBYPCZ, P_COMBINE, P_RANDN, P_DOTS, P_ALL_FINITE, P_SLD, P_COUNT };

static const struct {
    const char *name;
    const uint32_t *code;
    size_t size;
    uint32_t bindings, push;
} pipe_spec[P_COUNT] = {
    [P_AXPBYPCZ] = {"axpbypcz", spv_axpbypcz, sizeof spv_axpbypcz, 4, sizeof(push_axpbypcz)},
    [P_COMBINE] = {"combine", spv_combine, sizeof spv_combine, 10, sizeof(push_combine)},
    [P_RANDN] = {"randn", spv_randn, sizeof spv_randn, 1, sizeof(push_randn)},
    [P_DOTS] = {"dots", spv_dots, sizeof spv_dots, 4, sizeof(push_dots)},
    [P_ALL_FINITE] = {"all_finite", spv_all_finite, sizeof spv_all_finite, 2, sizeof(push_all_finite)},
    [P_SLD] = {"sld", spv_sld, sizeof spv_sld, 5, sizeof(push_sld)},
};

enum { MAX_BINDINGS = 10, LOCAL_SIZE = 128, MAX_GROUPS = 65535, MAX_DEVICES = 16,
       POOL_SETS = 256 };

/* ------------------------------------------------------------------------- */
/* state */

typedef struct {
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} vk_pipe;

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
    int recording;              /* cmd is open with commands not yet submitted */
    uint64_t batch;             /* number of the open (or next) batch */
    int lost;                   /* a submit failed: every later call fails */
    ccfg_vk_buffer *garbage;    /* released once the open batch has run */
} vk_dev;

struct ccfg_vk_buffer {
    vk_dev *d;
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    void *map;                  /* NULL unless the memory is host-visible */
    uint64_t batch_used;        /* last batch that records a command on it (0: none) */
    ccfg_vk_buffer *next;       /* garbage list */
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

static void destroy_device(vk_dev *d)
{
    if (!d) return;
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
    free(d);
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
    const VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                    .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
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
    g.dev[index] = d;
    *out = d;
    return CCFG_OK;
fail:
    destroy_device(d);
    return CCFG_EINTERNAL;
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

static void destroy_buffer(ccfg_vk_buffer *b)
{
    /* unmapping is implicit in vkFreeMemory */
    if (b->buf) vk.DestroyBuffer(b->d->dev, b->buf, NULL);
    if (b->mem) vk.FreeMemory(b->d->dev, b->mem, NULL);
    free(b);
}

/* Submit the open batch and wait for it. */
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
            ccfg_vk_buffer *b = d->garbage;
            d->garbage = b->next;
            destroy_buffer(b);
        }
    }
    return status;
}

/* Record one dispatch of pipeline p over bufs (pipe_spec[p].bindings of them). */
static int dispatch(vk_dev *d, int p, ccfg_vk_buffer *const *bufs, const void *push,
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
static int create_buffer(vk_dev *d, size_t bytes, int host_visible, ccfg_vk_buffer **out)
{
    VkResult r;
    int status = CCFG_EINTERNAL;
    ccfg_vk_buffer *b = calloc(1, sizeof *b);
    *out = NULL;
    if (!b) return ccfg_fail(CCFG_ENOMEM, "out of host memory for a Vulkan buffer");
    b->d = d;
    /* Vulkan has no empty buffers; whole words keep vkCmdFillBuffer valid */
    b->size = bytes < 4 ? 4 : (bytes + 3) & ~(size_t)3;
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

/* Release now, or after the open batch if it still uses the buffer. */
static void release_buffer(ccfg_vk_buffer *b)
{
    vk_dev *d = b->d;
    if (d->recording && b->batch_used == d->batch) {
        b->next = d->garbage;
        d->garbage = b;
    } else {
        destroy_buffer(b);
    }
}

int ccfg_vk_alloc(int device, size_t bytes, ccfg_vk_buffer **out)
{
    vk_dev *d;
    ccfg_vk_buffer *b = NULL;
    int status;
    *out = NULL;
    if ((status = get_device(device, &d)) != CCFG_OK) return status;
    /* one binding covers a whole buffer; larger tensors need chunked bindings (not yet) */
    if (bytes > g.info[device].max_storage_buffer_range)
        return ccfg_fail(CCFG_EINVAL, "Vulkan device %d (%s): a buffer of %zu bytes exceeds the "
                         "device's maxStorageBufferRange (%u bytes)", device, g.info[device].name,
                         bytes, g.info[device].max_storage_buffer_range);
    if ((status = create_buffer(d, bytes, 0, &b)) != CCFG_OK) goto fail;
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
    if (b) release_buffer(b);
    return status;
}

void ccfg_vk_free(ccfg_vk_buffer *b)
{
    if (b) release_buffer(b);
}

int ccfg_vk_flush(int device)
{
    vk_dev *d;
    int status = get_device(device, &d);
    return status != CCFG_OK ? status : flush(d);
}

static int check_size(const ccfg_vk_buffer *b, size_t bytes, const char *what)
{
    if (!b) return ccfg_fail(CCFG_EINVAL, "Vulkan: %s is NULL", what);
    if (bytes > b->size)
        return ccfg_fail(CCFG_EINVAL, "Vulkan: %s holds %zu bytes, the op needs %zu", what,
                         (size_t)b->size, bytes);
    return CCFG_OK;
}

int ccfg_vk_upload(ccfg_vk_buffer *dst, const void *src, size_t bytes)
{
    int status;
    ccfg_vk_buffer *st = NULL;
    if ((status = check_size(dst, bytes, "upload destination")) != CCFG_OK) return status;
    if (!bytes) return CCFG_OK;
    vk_dev *d = dst->d;
    if (dst->map) {
        /* host writes land at once: work recorded earlier on this buffer must run first */
        if (d->recording && dst->batch_used == d->batch && (status = flush(d)) != CCFG_OK) return status;
        memcpy(dst->map, src, bytes);
        return CCFG_OK;
    }
    /* the copy is ordered inside the batch, so nothing has to be submitted here */
    if ((status = create_buffer(d, bytes, 1, &st)) != CCFG_OK) goto fail;
    memcpy(st->map, src, bytes);
    if ((status = begin(d)) != CCFG_OK) goto fail;
    const VkBufferCopy region = {.size = bytes};
    vk.CmdCopyBuffer(d->cmd, st->buf, dst->buf, 1, &region);
    st->batch_used = dst->batch_used = d->batch;
    barrier(d);
fail:
    if (st) release_buffer(st);
    return status;
}

int ccfg_vk_download(void *dst, ccfg_vk_buffer *src, size_t bytes)
{
    int status;
    ccfg_vk_buffer *st = NULL;
    if ((status = check_size(src, bytes, "download source")) != CCFG_OK) return status;
    vk_dev *d = src->d;
    if (src->map) {
        if ((status = flush(d)) != CCFG_OK) return status;
        if (bytes) memcpy(dst, src->map, bytes);
        return CCFG_OK;
    }
    if (!bytes) return flush(d);
    if ((status = create_buffer(d, bytes, 1, &st)) != CCFG_OK) goto fail;
    if ((status = begin(d)) != CCFG_OK) goto fail;
    const VkBufferCopy region = {.size = bytes};
    vk.CmdCopyBuffer(d->cmd, src->buf, st->buf, 1, &region);
    st->batch_used = src->batch_used = d->batch;
    barrier(d);
    if ((status = flush(d)) != CCFG_OK) goto fail;
    memcpy(dst, st->map, bytes);
fail:
    if (st) release_buffer(st);
    return status;
}

/* ------------------------------------------------------------------------- */
/* ops */

/* all buffers on one device and large enough for `count` floats */
static int check_bufs(int64_t count, ccfg_vk_buffer *const *bufs, int nb, const char *op)
{
    int status;
    for (int i = 0; i < nb; i++) {
        if (!bufs[i]) return ccfg_fail(CCFG_EINVAL, "Vulkan %s: buffer %d is NULL", op, i);
        if ((status = check_size(bufs[i], (size_t)count * sizeof(float), op)) != CCFG_OK) return status;
        if (bufs[i]->d != bufs[0]->d)
            return ccfg_fail(CCFG_EINVAL, "Vulkan %s: buffers on different devices", op);
    }
    return CCFG_OK;
}

int ccfg_vk_axpbypcz(int64_t count, double a, ccfg_vk_buffer *x, double b, ccfg_vk_buffer *y,
                     double c, ccfg_vk_buffer *z, ccfg_vk_buffer *out)
{
    /* an absent term binds x in its place: every binding must be a valid buffer */
    ccfg_vk_buffer *bufs[4] = {x, y ? y : x, z ? z : x, out};
    int status;
    if (count < 0) return ccfg_fail(CCFG_EINVAL, "Vulkan axpbypcz: count < 0");
    if ((status = check_bufs(count, bufs, 4, "axpbypcz")) != CCFG_OK) return status;
    if (!count) return CCFG_OK;
    const push_axpbypcz pc = {(uint32_t)count, (y ? 1u : 0u) | (z ? 2u : 0u), (float)a, (float)b,
                              (float)c};
    return dispatch(x->d, P_AXPBYPCZ, bufs, &pc, groups_for(count), 1);
}

int ccfg_vk_combine(int64_t n, int64_t dim, int m, ccfg_vk_buffer *const *in, const double *coef,
                    ccfg_vk_buffer *out)
{
    ccfg_vk_buffer *bufs[MAX_BINDINGS], *cb = NULL;
    float *cf = NULL;
    int status;
    if (n < 0 || dim < 0 || m < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan combine: needs n, dim >= 0 and m >= 1");
    if (m > MAX_BINDINGS - 2)
        return ccfg_fail(CCFG_EINVAL, "Vulkan combine: at most %d inputs, got %d", MAX_BINDINGS - 2, m);
    bufs[0] = out;
    for (int q = 0; q < MAX_BINDINGS - 2; q++) bufs[2 + q] = in[q < m ? q : 0];
    bufs[1] = out;      /* checked below with the rest, replaced by the coefficients */
    if ((status = check_bufs(n * dim, bufs, MAX_BINDINGS, "combine")) != CCFG_OK) return status;
    if (!n || !dim) return CCFG_OK;

    /* the coefficients travel as float32: the shader combines in float32 with fma */
    cf = malloc((size_t)(n * m) * sizeof *cf);
    if (!cf) return ccfg_fail(CCFG_ENOMEM, "out of memory for combine coefficients");
    for (int64_t i = 0; i < n * m; i++) cf[i] = (float)coef[i];
    if ((status = ccfg_vk_alloc(out->d->index, (size_t)(n * m) * sizeof *cf, &cb)) != CCFG_OK) goto fail;
    if ((status = ccfg_vk_upload(cb, cf, (size_t)(n * m) * sizeof *cf)) != CCFG_OK) goto fail;
    bufs[1] = cb;
    const push_combine pc = {(uint32_t)(n * dim), (uint32_t)dim, (uint32_t)m};
    status = dispatch(out->d, P_COMBINE, bufs, &pc, groups_for(n * dim), 1);
fail:
    if (cb) release_buffer(cb);     /* after the batch: the dispatch reads it */
    free(cf);
    return status;
}

int ccfg_vk_randn(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                  ccfg_vk_buffer *out)
{
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "Vulkan randn: n and dim must be >= 0");
    if ((status = check_bufs(n * dim, &out, 1, "randn")) != CCFG_OK) return status;
    if (!n || !dim) return CCFG_OK;
    const int64_t blocks = (dim + 3) / 4;
    /* the CPU puts (uint32_t)stream and (uint32_t)(first + i) in the counter: same wrap here */
    const push_randn pc = {(uint32_t)n, (uint32_t)dim, (uint32_t)blocks, (uint32_t)seed,
                           (uint32_t)(seed >> 32), (uint32_t)stream, (uint32_t)first};
    return dispatch(out->d, P_RANDN, &out, &pc, groups_for(n * blocks), 1);
}

/* Record the dots shader over all rows (split where n exceeds the y-dispatch limit). */
static int record_dots(vk_dev *d, ccfg_vk_buffer *const *bufs, int64_t n, int64_t dim,
                       uint32_t groups, uint32_t mode, uint32_t base)
{
    int status;
    for (int64_t row0 = 0; row0 < n; row0 += MAX_GROUPS) {
        const int64_t rows = n - row0 < MAX_GROUPS ? n - row0 : MAX_GROUPS;
        const push_dots pc = {(uint32_t)dim, groups, mode, (uint32_t)n, (uint32_t)row0, base};
        if ((status = dispatch(d, P_DOTS, bufs, &pc, groups, (uint32_t)rows)) != CCFG_OK) return status;
    }
    return CCFG_OK;
}

/* partial sums per sample: about 8 elements per thread, at most 1024 workgroups per sample */
static uint32_t dot_groups(int64_t dim)
{
    int64_t gsz = (dim + LOCAL_SIZE * 8 - 1) / (LOCAL_SIZE * 8);
    return (uint32_t)(gsz < 1 ? 1 : gsz > 1024 ? 1024 : gsz);
}

/* out[i] = sum of the `groups` float partials of row i, in double */
static void sum_partials(const float *part, int64_t n, uint32_t groups, double *out)
{
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (uint32_t gi = 0; gi < groups; gi++) s += (double)part[i * groups + gi];
        out[i] = s;
    }
}

int ccfg_vk_dot(int64_t n, int64_t dim, ccfg_vk_buffer *a, ccfg_vk_buffer *b, double *out)
{
    ccfg_vk_buffer *pb = NULL, *bufs[4] = {a, b, a, NULL};
    float *part = NULL;
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "Vulkan dot: n and dim must be >= 0");
    if ((status = check_bufs(n * dim, bufs, 3, "dot")) != CCFG_OK) return status;
    if (!n) return CCFG_OK;
    const uint32_t groups = dot_groups(dim);
    const size_t bytes = (size_t)n * groups * sizeof(float);
    part = malloc(bytes);
    if (!part) return ccfg_fail(CCFG_ENOMEM, "out of memory for dot partials");
    if ((status = ccfg_vk_alloc(a->d->index, bytes, &pb)) != CCFG_OK) goto fail;
    bufs[3] = pb;
    if ((status = record_dots(a->d, bufs, n, dim, groups, 0, 0)) != CCFG_OK) goto fail;
    if ((status = ccfg_vk_download(part, pb, bytes)) != CCFG_OK) goto fail;
    sum_partials(part, n, groups, out);
fail:
    if (pb) release_buffer(pb);
    free(part);
    return status;
}

int ccfg_vk_direction_dots(int64_t n, int64_t dim, ccfg_vk_buffer *u, ccfg_vk_buffer *p, int k,
                           ccfg_vk_buffer *const *neg, double *pp, double *nn, double *np)
{
    ccfg_vk_buffer *pb = NULL, *bufs[4] = {u, p, p, NULL};
    float *part = NULL;
    int status;
    if (n < 0 || dim < 0 || k < 0)
        return ccfg_fail(CCFG_EINVAL, "Vulkan direction_dots: n, dim and k must be >= 0");
    if ((status = check_bufs(n * dim, bufs, 2, "direction_dots")) != CCFG_OK) return status;
    for (int q = 0; q < k; q++) {
        ccfg_vk_buffer *c[2] = {u, neg[q]};
        if ((status = check_bufs(n * dim, c, 2, "direction_dots")) != CCFG_OK) return status;
    }
    if (!n) return CCFG_OK;
    /* one block of 3 planes [3][n][groups] per negative (one for k = 0, where only pp exists) */
    const uint32_t groups = dot_groups(dim);
    const size_t plane = (size_t)n * groups, blocks = k ? (size_t)k : 1;
    const size_t bytes = blocks * 3 * plane * sizeof(float);
    if (bytes / sizeof(float) > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "Vulkan direction_dots: too many samples and negatives");
    part = malloc(bytes);
    if (!part) return ccfg_fail(CCFG_ENOMEM, "out of memory for direction_dots partials");
    if ((status = ccfg_vk_alloc(u->d->index, bytes, &pb)) != CCFG_OK) goto fail;
    bufs[3] = pb;
    if (k == 0) {
        if ((status = record_dots(u->d, bufs, n, dim, groups, 1, 0)) != CCFG_OK) goto fail;
    }
    for (int q = 0; q < k; q++) {
        /* every negative's pass also yields ‖D_p‖², as on the CPU; the first one is kept */
        bufs[2] = neg[q];
        if ((status = record_dots(u->d, bufs, n, dim, groups, 2, (uint32_t)(q * 3 * plane))) != CCFG_OK)
            goto fail;
    }
    if ((status = ccfg_vk_download(part, pb, bytes)) != CCFG_OK) goto fail;
    sum_partials(part, n, groups, pp);
    for (int q = 0; q < k; q++) {
        sum_partials(part + (size_t)q * 3 * plane + plane, n, groups, nn + (int64_t)q * n);
        sum_partials(part + (size_t)q * 3 * plane + 2 * plane, n, groups, np + (int64_t)q * n);
    }
fail:
    if (pb) release_buffer(pb);
    free(part);
    return status;
}

int ccfg_vk_all_finite(int64_t count, ccfg_vk_buffer *x, int *result)
{
    ccfg_vk_buffer *flag = NULL, *bufs[2] = {x, NULL};
    uint32_t bad = 0;
    int status;
    if (count < 0) return ccfg_fail(CCFG_EINVAL, "Vulkan all_finite: count < 0");
    if ((status = check_bufs(count, bufs, 1, "all_finite")) != CCFG_OK) return status;
    *result = 1;
    if (!count) return CCFG_OK;
    if ((status = ccfg_vk_alloc(x->d->index, sizeof bad, &flag)) != CCFG_OK) goto fail;
    bufs[1] = flag;
    const push_all_finite pc = {(uint32_t)count};
    if ((status = dispatch(x->d, P_ALL_FINITE, bufs, &pc, groups_for(count), 1)) != CCFG_OK) goto fail;
    if ((status = ccfg_vk_download(&bad, flag, sizeof bad)) != CCFG_OK) goto fail;
    *result = bad == 0;
fail:
    if (flag) release_buffer(flag);
    return status;
}

int ccfg_vk_sld(int64_t count, ccfg_vk_buffer *eps_u, ccfg_vk_buffer *eps_p, ccfg_vk_buffer *eps_s,
                ccfg_vk_buffer *nu, double w, double s_s, double thr, double s_m, double beta_m,
                int update, int apply, ccfg_vk_buffer *out)
{
    ccfg_vk_buffer *bufs[5] = {eps_u, eps_p, eps_s, nu, out};
    int status;
    if (count < 0) return ccfg_fail(CCFG_EINVAL, "Vulkan sld: count < 0");
    if ((status = check_bufs(count, bufs, 5, "sld")) != CCFG_OK) return status;
    if (!count || (!update && !apply)) return CCFG_OK;
    const push_sld pc = {(uint32_t)count, (update ? 1u : 0u) | (apply ? 2u : 0u), (float)w,
                         (float)s_s, (float)thr, (float)s_m, (float)beta_m};
    return dispatch(eps_u->d, P_SLD, bufs, &pc, groups_for(count), 1);
}

#endif /* CCFG_NO_VULKAN */
