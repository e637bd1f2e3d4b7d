/* vk_backend.h — what the two files of the Vulkan backend share (internal to csrc/):
 *   backend_vk.c      the loader, devices, pipelines, batches, buffers and device addresses,
 *                     the memory/transfer/sync half of the backend table, the registry's open;
 *   backend_vk_ops.c  the ops: the solver's vector ops, the guidance and mixture tables.
 * (nn_vk.c records the network ops through vk_nn.h.) Only compiled with the Vulkan headers. */
#ifndef CCFG_VK_BACKEND_H
#define CCFG_VK_BACKEND_H

#define VK_NO_PROTOTYPES
#include <pthread.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "ccfg.h"

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
typedef struct { uint32_t D, K, full, mode, rows, ox, oo, row0, nb, m, flags; } push_gmm;
typedef struct { uint32_t rows, dim, blocks, seed_lo, seed_hi, stream, first, oo; } push_randn;
typedef struct { uint32_t dim, groups, mode, rows, row0, base, ou, op, on, per_row; } push_dots;
typedef struct { uint32_t count, ox, tag; } push_finite;
typedef struct {
    uint32_t n, k, groups, count, stage, family, flags, slices;
    float wf, wnf, tauf, offf, varf, lof, hif;  /* DNG's update: w = b2, wn = b1, tau = t */
    uint32_t pad;
    uint32_t wd[2], wnd[2], taud[2], offd[2], vard[2], lod[2], hid[2];
} push_coef;                        /* 120 bytes: within the 128 every device has */
typedef struct { uint32_t count; } push_copy;
typedef struct { uint32_t count, dim, divide, ox, oo; } push_clamp;

/* a pipeline with an _F64 twin is followed by it: P_X + 1 */
enum { P_AXPBYPCZ, P_AXPBYPCZ_F64, P_COMBINE, P_COMBINE_F64, P_SLD, P_SLD_F64, P_GMM, P_GMM_F64,
       P_DOTS, P_DOTS_F64, P_RANDN, P_RANDN_F64, P_FINITE, P_COPY, P_CLAMP, P_COEF, P_COEF_F64,
       P_COEF_NB, P_COEF_NB_F64,    /* coef.glsl without stage 1's barriers (COEF_NO_BARRIER) */
       P_NN_GROUP_NORM_SG,      /* nn_group_norm's subgroup twin (vk_dev.subgroup) */
       /* the nn.h ops (nn_vk.c), float32 only, in vk_nn.h's CCFG_VK_NN_* order */
       P_NN_FIRST, P_NN_CONV2D = P_NN_FIRST, P_NN_GROUP_NORM, P_NN_LINEAR, P_NN_ATTENTION,
       P_NN_ELTWISE, P_NN_LAYER_NORM, P_NN_CONV2D_DIRECT, P_NN_TO_F16, P_NN_CONV2D_F16,
       P_NN_CONV2D_COOP, P_NN_CONV2D_COOP8, P_NN_ATTENTION_TILED1, P_NN_ATTENTION_TILED2,
       P_NN_ATTENTION_TILED3, P_NN_ATTENTION_TILED4, P_NN_ATTENTION_TILED1_Q64,
       P_NN_ATTENTION_TILED2_Q64, P_NN_ATTENTION_TILED3_Q64, P_NN_ATTENTION_TILED4_Q64,
       P_NN_ATTENTION_TILED1_Q64R,
       P_NN_CONV2D_REDUCE, P_NN_CONV2D_COOP_SB, P_NN_CONV2D_COOP8_SB,
       P_NN_ATTENTION_COOP1, P_NN_ATTENTION_COOP2, P_NN_ATTENTION_COOP3, P_NN_ATTENTION_COOP4,
       P_NN_ATTENTION_COOP8_1, P_NN_ATTENTION_COOP8_2, P_NN_ATTENTION_COOP8_3,
       P_NN_ATTENTION_COOP8_4,
       /* the coop convolution's other tiles (vk_nn.h CCFG_VK_NN_CONV2D_COOP_TILES, COOP8_TILES) */
       P_NN_CONV2D_COOP_T24, P_NN_CONV2D_COOP_T44, P_NN_CONV2D_COOP_T22P, P_NN_CONV2D_COOP_T24P,
       P_NN_CONV2D_COOP_T44P, P_NN_CONV2D_COOP_T22PP, P_NN_CONV2D_COOP_T24PP,
       P_NN_CONV2D_COOP_T44PP,
       P_NN_CONV2D_COOP8_T24, P_NN_CONV2D_COOP8_T44, P_NN_CONV2D_COOP8_T22P, P_NN_CONV2D_COOP8_T24P,
       P_NN_CONV2D_COOP8_T44P, P_NN_CONV2D_COOP8_T22PP, P_NN_CONV2D_COOP8_T24PP,
       P_NN_CONV2D_COOP8_T44PP,
       /* the float32 tiled convolution's other tiles (vk_nn.h CCFG_VK_NN_CONV2D_TILES) */
       P_NN_CONV2D_T64DB, P_NN_CONV2D_T128, P_NN_CONV2D_T128DB, P_COUNT };

/* the profile: timestamps per batch, and the kinds it reports (the pipelines, then the copies) */
enum { PROFILE_QUERIES = 4096, PROF_UPLOAD = P_COUNT, PROF_DOWNLOAD, PROF_COPY, PROF_KINDS };

enum { MAX_BINDINGS = 10, LOCAL_SIZE = 128, MAX_GROUPS = 65535, MAX_DEVICES = 16,
       POOL_SETS = 256, COMBINE_INPUTS = 8, GMM_MAX_K = 256, DOTS_ROW_ALONE = 64,
       GMM_KPRIV = 32 /* gmm_eps.glsl KPRIV */ };

typedef struct {
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} vk_pipe;

typedef struct vk_buffer vk_buffer;

/* what a buffer is for: the device's own storage, or host-visible staging in one direction.
 * Readback staging prefers HOST_CACHED memory: host reads from uncached (write-combined) memory
 * run at a fraction of a GB/s on discrete GPUs. */
enum { BUF_DEVICE, BUF_UPLOAD, BUF_READBACK, BUF_KINDS };

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
    VkCommandBuffer cmds[2];    /* two slots: one records while the other's batch runs */
    VkFence fences[2];
    VkDescriptorPool pools[2];
    int cur;                    /* the recording slot; d->cmd, fence, desc_pool are its */
    VkCommandBuffer cmd;
    VkFence fence;
    VkDescriptorPool desc_pool;
    uint64_t inflight;          /* the batch submitted without a wait (slot 1 - cur), 0: none */
    uint64_t done_batch;        /* every batch up to this number has run */
    vk_pipe pipe[P_COUNT];
    int mapped;                 /* buffers are host-visible and persistently mapped */
    int f64;                    /* the *_F64 pipelines (shaderFloat64 enabled) */
    int host_coefficients;      /* CCFG_VULKAN_HOST_COEFFICIENTS: no guide op combine_form */
    int coef_barriers;          /* CCFG_VULKAN_COEF_BARRIERS: every coef stage in P_COEF */
    int coef_unfused;           /* CCFG_VULKAN_COEF_UNFUSED: coef stage 0 a dispatch of its own */
    int precision;              /* CCFG_VULKAN_PRECISION: a CCFG_VK_PRECISION_* (vk_nn.h) */
    int opened_precision;       /* the precision the logical device was created for (its
                                 * features); precision differs only through a test hook */
    int subgroup;               /* subgroup arithmetic in compute (CCFG_VULKAN_NO_SUBGROUP: off) */
    int gmm_sharing;            /* gmm_eps mode 2 (CCFG_VULKAN_GMM_NO_SHARING=1: off) */
    int gmm_near;               /* gmm_eps modes 1-2 keep parameters and row values near, cond
                                 * kept between calls (CCFG_VULKAN_GMM_V1=1: off) */
    int sync_pacing;            /* CCFG_VULKAN_SYNC_PACING: be->submit waits (flush) */
    int recording;              /* cmd is open with commands not yet submitted */
    uint64_t batch;             /* number of the open (or next) batch */
    int lost;                   /* a submit failed: every later call fails */
    vk_buffer *garbage;         /* released once the open batch has run */
    vk_buffer *recycled;        /* idle buffers for reuse (create_buffer) */
    vk_buffer *spare[BUF_KINDS];/* the largest idle staging buffer above RECYCLE_MAX, per kind */
    size_t recycled_bytes;
    vk_buffer *flag;            /* the non-finite watch: min tag seen, 0xFFFFFFFF = none */
    /* fake address space: ranges sorted by base (bases only grow) */
    vk_range *ranges;
    int nranges, cap_ranges;
    uintptr_t next_addr;
    pthread_mutex_t mutex;      /* held by the one caller using the device (lock op) */
    uint32_t max_storage_buffer_range;  /* bytes one binding may span */
    /* iterations an invocation's loops may run in total before the driver ends them silently
     * (Mesa's llvmpipe/lavapipe: 65535); 0: no such limit. The nn shaders stay within
     * CCFG_VK_LOOP_BUDGET on every device (nn_vk.c); the mixture's refuses work past it here. */
    uint32_t loop_limit;
    /* the per-dispatch profile (ccfg_vk_profile): a timestamp after every command of a batch */
    int profiling;
    VkQueryPool queries;        /* PROFILE_QUERIES timestamps, reset at the start of each batch */
    uint32_t nqueries;          /* written in the open batch (query 0: the batch's start) */
    int16_t query_kind[PROFILE_QUERIES];    /* what ended at query i: a P_* or PROF_* kind */
    uint64_t query_ticks[PROFILE_QUERIES];  /* the batch's timestamps, read back */
    double tick_ns;             /* timestampPeriod */
    uint64_t ts_mask;           /* the queue's timestampValidBits */
    uint64_t prof_count[PROF_KINDS];
    double prof_ns[PROF_KINDS];
    uint64_t prof_batches, prof_unstamped;  /* submits; commands past PROFILE_QUERIES */
    double prof_wait_ns;        /* host time spent waiting for batches */
    char name[320];
    ccfg_backend be;
    struct vk_tune *tune;       /* the autotuner's cache (vk_tune.c), NULL until first used */
} vk_dev;

struct vk_buffer {
    vk_dev *d;
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    void *map;                  /* NULL unless the memory is host-visible */
    uint64_t batch_used;        /* last batch that records a command on it (0: none) */
    int kind;                   /* BUF_DEVICE, BUF_UPLOAD or BUF_READBACK (create_buffer) */
    int coherent;               /* host-coherent memory (else invalidate before host reads) */
    int recyclable;             /* a power-of-two size class */
    vk_buffer *next;            /* garbage or recycled list */
};

/* ---- backend_vk.c: batches, buffers, addresses */
/* Record one dispatch of pipeline p over bufs (the pipeline's bindings of them). */
int vkb_dispatch(vk_dev *d, int p, vk_buffer *const *bufs, const void *push, uint32_t groups,
                 uint32_t groups_y);
/* workgroups for a grid-stride loop over count items */
uint32_t vkb_groups_for(int64_t count);
/* a buffer the backend keeps for itself (partials, coefficients, parameters) */
int vkb_new_buffer(vk_dev *d, size_t bytes, vk_buffer **out);
void vkb_release_buffer(vk_buffer *b);
/* host -> b at byte offset `at` (src reusable at once); b -> host after everything recorded */
int vkb_write_buffer(vk_buffer *b, size_t at, const void *src, size_t bytes);
int vkb_read_buffer(void *dst, vk_buffer *b, size_t at, size_t bytes);
/* the buffer and element offset holding the device address range [p, p + bytes) */
int vkb_resolve(vk_dev *d, const void *p, size_t bytes, vk_buffer **buf, uint32_t *elem);

/* ---- backend_vk.c: what the autotuner (vk_tune.c) needs. Submit the open batch and wait for
 * everything; a timestamp pool of `count` queries (an error where the queue has none); record,
 * into the open batch, a reset of queries [0, reset) (none: 0) and then a timestamp at `query`
 * (after everything recorded before it: every command is followed by a full barrier); the ns
 * between consecutive timestamps 0..count-1 of a pool whose batch has run (count - 1 of them). */
int vkb_flush(vk_dev *d);
int vkb_timestamps_new(vk_dev *d, uint32_t count, VkQueryPool *out);
void vkb_timestamps_free(vk_dev *d, VkQueryPool qp);
int vkb_timestamp(vk_dev *d, VkQueryPool qp, uint32_t reset, uint32_t query);
int vkb_timestamps_read(vk_dev *d, VkQueryPool qp, uint32_t count, double *ns);
/* vk_tune.c: the device's tuning cache and pool, freed with the device (destroy_device) */
void vkb_tune_free(vk_dev *d);
/* what a saved tuning decision is valid for (vk_tune.c): the device's vendorID, deviceID,
 * driverVersion and pipelineCacheUUID, and a hash of every compiled shader */
int vkb_device_identity(vk_dev *d, uint32_t *vendor, uint32_t *device, uint32_t *driver,
                        uint8_t uuid[VK_UUID_SIZE], uint64_t *shaders);

/* ---- backend_vk_ops.c: the ops */
int vkb_resolve_all(vk_dev *d, int64_t count, const float *const *ptrs, int np, vk_buffer **bufs,
                    uint32_t *offs, const char *what);
int vkb_pipe_real(const vk_dev *d, int p);
int vkb_fill_flag(vk_dev *d);
int vkb_axpbypcz(const ccfg_backend *be, int64_t count, double a, const float *x, double b,
                 const float *y, double c, const float *z, float *out);
int vkb_clamp_rows(const ccfg_backend *be, int64_t n, int64_t dim, const float *x,
                   const double *bound, int divide, float *out);
int vkb_randn(const ccfg_backend *be, int64_t n, int64_t dim, uint64_t seed, uint64_t stream,
              int64_t first, float *out);
int vkb_watch_finite(const ccfg_backend *be, int64_t count, const float *x, int tag);
int vkb_first_nonfinite(const ccfg_backend *be, int *tag);
extern const ccfg_guide_ops vkb_guide_ops;
extern const ccfg_guide_ops vkb_guide_ops_host_coefficients;    /* the same without combine_form */
extern const ccfg_gmm_ops vkb_gmm_ops;

#endif /* CCFG_VK_BACKEND_H */
