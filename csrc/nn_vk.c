/* nn_vk.c — the nn.h ops on a Vulkan device: each op checks its sizes, fills the push constants
 * of its shader (shaders/nn_*.comp, float32) and records its dispatches into the device's command
 * buffer (backend_vk.c, via vk_nn.h). Nothing is submitted here: the work runs at the next host
 * sync (a download, be->sync). Optional arrays (bias, in_bias, film) are replaced by a bound
 * array the shader never reads, with a flag saying so.
 *
 * No invocation may loop more than CCFG_VK_LOOP_BUDGET times, whatever the sizes (vk_nn.h: a
 * software device silently stops longer loops): long reductions are split between invocations
 * (layer_norm's and attention's lanes, group_norm's slices) or between dispatches that accumulate
 * (linear's inputs, conv2d's input channels, attention's key blocks). group_norm and long
 * attention keep a few floats per (sample, group) or query in device scratch of their own,
 * released once the batch that uses it has run. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "nn.h"
#include "vk_nn.h"
#include "vk_tune.h"

/* the shaders index with 32-bit unsigned integers */
static int fits(int64_t count, const char *op)
{
    if (count < 0 || count > (int64_t)UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn %s: %lld elements is out of range", op,
                         (long long)count);
    return CCFG_OK;
}

/* the rounds of a grid-stride loop over `items` (at most 65535 workgroups of 128 invocations) */
static int64_t grid_rounds(int64_t items)
{
    const int64_t per = (int64_t)CCFG_VK_MAX_GROUPS * CCFG_VK_LOCAL_SIZE;
    return items > per ? (items + per - 1) / per : 1;
}

/* one dispatch of `groups` workgroups (one item each) in rows of at most 65535 */
static int dispatch_groups(const ccfg_backend *be, int kernel, int nbuf, const float *const *ptrs,
                           const int64_t *counts, void *push, int64_t groups, const char *op)
{
    const int64_t per_row = CCFG_VK_MAX_GROUPS, rows = (groups + per_row - 1) / per_row;
    if (rows > per_row)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn %s: %lld workgroups is too many for one dispatch",
                         op, (long long)groups);
    if (!groups) return CCFG_OK;
    return ccfg_vk_nn_dispatch(be, kernel, nbuf, ptrs, counts, push,
                               groups < per_row ? groups : per_row, 1, (uint32_t)rows);
}

static int vk_begin(const ccfg_backend *be) { (void)be; return CCFG_OK; }
static int vk_end(const ccfg_backend *be) { (void)be; return CCFG_OK; }

/* CCFG_VULKAN_NO_F16_CACHE=1: no packed form, so every half-precision convolution converts its
 * weights into scratch as it runs (the path before the cached weights; for A/B). Read once. */
static int f16_cache_off(void)
{
    static int off = -1;
    if (off < 0) {
        const char *v = getenv("CCFG_VULKAN_NO_F16_CACHE");
        off = v && *v && strcmp(v, "0") ? 1 : 0;
    }
    return off;
}

/* Off by default: the rule's constants are guesses that no GPU run has checked yet, lavapipe
 * runs 1.8x slower with it (a few cores are filled without it), and since S follows the grid a
 * sample's output would depend on its batch by float32 rounding.
 * CCFG_VULKAN_CONV_SPLITK: unset or "" off, "auto" the rule (conv_splitk) on every device, "0" or
 * "1" off, S >= 2 (at most 4096) S slices for
 * every tiled convolution that has that many stages (for tests and A/B). Read once; *mode: -2
 * unset, -1 auto, else the number. Another value is refused, naming the variable. */
static int splitk_env(int *mode)
{
    static int parsed, value = -2, bad;
    if (!parsed) {
        const char *v = getenv("CCFG_VULKAN_CONV_SPLITK");
        if (v && *v) {
            char *end = NULL;
            const long n = strtol(v, &end, 10);
            if (!strcmp(v, "auto"))
                value = -1;
            else if (end != v && !*end && n >= 0 && n <= 4096)
                value = (int)n;
            else
                bad = 1;
        }
        parsed = 1;
    }
    *mode = value;
    if (bad)
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_CONV_SPLITK=%s: expected 0 (off), a number of "
                         "slices up to 4096 or auto", getenv("CCFG_VULKAN_CONV_SPLITK"));
    return CCFG_OK;
}

/* Split-K for one dispatch of a tiled convolution: groups workgroups (pixel tiles x mtiles
 * channel tiles) reducing `stages` stages each, ny outputs. *sps: stages per slice, or 0 for no
 * split. The default rule (vk_nn.h CCFG_VK_SPLITK_*) uses only the grid and the reduction length,
 * not the device: Vulkan's core API exposes no count of compute units, and a GPU too small for
 * TARGET workgroups only pays the partial sums' traffic. The slices are then evened out (S = ceil(stages / sps): every slice
 * non-empty). */
static int conv_splitk(int64_t groups, int64_t mtiles, int64_t stages,
                       int64_t ny, int64_t *sps)
{
    int mode, status;
    int64_t s;
    *sps = 0;
    if ((status = splitk_env(&mode))) return status;
    if (mode >= 0)
        s = mode;
    else if (mode == -2)
        s = 1;  /* unset: off until a GPU run has measured the rule (see splitk_env) */
    else {
        s = (CCFG_VK_SPLITK_TARGET + groups - 1) / groups;
        if (s > CCFG_VK_SPLITK_MAX) s = CCFG_VK_SPLITK_MAX;
        if (s > stages / CCFG_VK_SPLITK_MIN_STAGES) s = stages / CCFG_VK_SPLITK_MIN_STAGES;
    }
    if (s > stages) s = stages;
    /* the workgroup rows are slices x channel tiles; the reduce loops s times per element of its
     * grid-stride loop (the loop budget); the shaders index the S x ny partial sums in 32 bits */
    if (s > CCFG_VK_MAX_GROUPS / mtiles) s = CCFG_VK_MAX_GROUPS / mtiles;
    if (s > CCFG_VK_LOOP_BUDGET / grid_rounds(ny)) s = CCFG_VK_LOOP_BUDGET / grid_rounds(ny);
    if (ny > 0 && s > (int64_t)UINT32_MAX / ny) s = (int64_t)UINT32_MAX / ny;
    if (s >= 2) *sps = (stages + s - 1) / s;
    return CCFG_OK;
}

/* CCFG_VULKAN_CONV_TILE: the float32 tiled convolution's variant (vk_nn.h CCFG_VK_CONV_TILE_*,
 * shaders/nn_conv2d.glsl): its kernel, output channels per tile, invocations per workgroup and
 * shared-memory stages. Unset or empty: 64x128, the default until a GPU run says otherwise. Read
 * at every convolution, so one process can alternate them (A/B runs, an autotuner: every variant
 * computes the same bits, so choosing by speed never changes a result). */
static const struct { const char *name; int kernel, bm, invocations, nbuf; }
    conv_tiles[CCFG_VK_CONV_TILE_COUNT] = {
        {"64x128", CCFG_VK_NN_CONV2D, CCFG_VK_CONV_BM, 2 * CCFG_VK_CONV_BM, 1},
        {"64x128db", CCFG_VK_NN_CONV2D_TILES, CCFG_VK_CONV_BM, 2 * CCFG_VK_CONV_BM, 2},
        {"128x128", CCFG_VK_NN_CONV2D_T128, CCFG_VK_CONV_BM_128, 2 * CCFG_VK_CONV_BM_128, 1},
        {"128x128db", CCFG_VK_NN_CONV2D_T128DB, CCFG_VK_CONV_BM_128, 2 * CCFG_VK_CONV_BM_128, 2}};

/* CCFG_VULKAN_CONV_TILE=auto: the tuner (vk_tune.c, simt_autotune below) picks per shape;
 * conv_forced: the variant a tuning run forces (-1: none), thread-local as the run is this
 * thread's recursive call of conv2d_any */
enum { CONV_TILE_AUTO = -1 };
static _Thread_local int conv_forced = -1;

/* read (and validated) by every convolution, whatever its path, so a bad value never passes
 * silently where the float32 tiled shader does not run (fp16, coop, <= 32 output channels) */
static int conv_tile(int *out)
{
    const char *v = getenv("CCFG_VULKAN_CONV_TILE");
    *out = CCFG_VK_CONV_TILE_64X128;
    if (conv_forced >= 0) {
        *out = conv_forced;
        return CCFG_OK;
    }
    if (!v || !*v) return CCFG_OK;
    if (!strcmp(v, "auto")) {
        *out = CONV_TILE_AUTO;
        return CCFG_OK;
    }
    for (int t = 0; t < CCFG_VK_CONV_TILE_COUNT; t++)
        if (!strcmp(v, conv_tiles[t].name)) {
            *out = t;
            return CCFG_OK;
        }
    return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_CONV_TILE must be 64x128, 64x128db, 128x128 or "
                     "128x128db (output channels x pixels per workgroup; db: double-buffered "
                     "shared memory) or auto (the fastest per shape, timed on the device: "
                     "vk_tune.c), not '%s'", v);
}

/* does float32 variant t fit the device: its shared memory ((BM + BN) x BK floats per stage)
 * and workgroup size. Vulkan guarantees 128 invocations and 16 KiB, so 128x128 (256
 * invocations) may not run where the default does. */
static int conv_tile_fits(int t, uint32_t shared, uint32_t inv, int64_t *need)
{
    *need = (int64_t)conv_tiles[t].nbuf * (conv_tiles[t].bm + CCFG_VK_CONV_BN) * CCFG_VK_CONV_BK *
            4;
    return *need <= (int64_t)shared && (uint32_t)conv_tiles[t].invocations <= inv;
}

/* the output channels per workgroup of tiled kernel `kernel` (a conv_tiles variant, or
 * nn_conv2d_f16.comp's CCFG_VK_CONV_BM) */
static int64_t tiled_bm(int kernel)
{
    for (int t = 0; t < CCFG_VK_CONV_TILE_COUNT; t++)
        if (conv_tiles[t].kernel == kernel) return conv_tiles[t].bm;
    return CCFG_VK_CONV_BM;
}

/* One dispatch (one chunk of input channels) of a tiled convolution, `kernel` nn_conv2d.comp (or
 * a variant of it, conv_tiles) or nn_conv2d_f16.comp, with pc's flags: one dispatch unsplit; with
 * split-K, the S slices' partial sums into device scratch (S x ny floats) and
 * nn_conv2d_reduce.comp summing them in slice order,
 * then bias, accumulate and residual as pc's flags say (the unsplit epilogue's order). Chunks
 * compose: each chunk splits its own stages and its reduce accumulates onto the earlier ones.
 * ptrs, counts: the convolution's five arrays (x, w, bias, y, r) and ab (vk_nn.h
 * CCFG_VK_CONV_TILED_BINDINGS; without a folded GroupNorm x stands in, unread); abstride: the
 * input channels per sample of ab. mtiles: the channel tiles of the default's CCFG_VK_CONV_BM,
 * from which split-K decides, so that every variant splits alike (the same slices, the same
 * bits); the workgroup rows follow the kernel's own tile (tiled_bm). */
static int conv_tiled_dispatch(const ccfg_backend *be, int kernel, const float *const *ptrs,
                               const int64_t *counts, const ccfg_vk_push_conv2d *pc0,
                               uint32_t abstride, int64_t items, int64_t mtiles, int64_t ny,
                               int64_t bk)
{
    ccfg_vk_push_conv2d_tiled pc = {.batch = pc0->batch, .cin = pc0->cin, .h = pc0->h,
                                    .w = pc0->w, .cout = pc0->cout, .k = pc0->k,
                                    .stride = pc0->stride, .pad0 = pc0->pad0, .ho = pc0->ho,
                                    .wo = pc0->wo, .flags = pc0->flags, .wstride = pc0->wstride,
                                    .abstride = abstride};
    const int64_t stages = (int64_t)pc.k * pc.k * ((pc.cin + bk - 1) / bk);
    int64_t sps;
    int status;
    const int64_t bm = tiled_bm(kernel), ktiles = (pc.cout + bm - 1) / bm;
    if ((status = conv_splitk(items * mtiles, mtiles, stages, ny, &sps))) return status;
    if (!sps)
        return ccfg_vk_nn_dispatch(be, kernel, CCFG_VK_CONV_TILED_BINDINGS, ptrs, counts, &pc,
                                   items, 1, (uint32_t)ktiles);
    const int64_t slices = (stages + sps - 1) / sps;
    float *part = NULL;
    if ((status = ccfg_vk_nn_scratch(be, (size_t)(slices * ny) * sizeof(float), &part)))
        return status;
    const uint32_t flags = pc.flags;
    /* the slices write raw sums: nothing but x, w and ab is read; they keep the input's flags
     * (the folded GroupNorm) and leave the epilogue's to the reduce */
    const float *sp[CCFG_VK_CONV_TILED_BINDINGS] = {ptrs[0], ptrs[1], part, part, part, ptrs[5]};
    const int64_t sc[CCFG_VK_CONV_TILED_BINDINGS] = {counts[0], counts[1], 0, slices * ny, 0,
                                                     counts[5]};
    pc.split = (uint32_t)sps;
    pc.flags = flags & (CCFG_VK_CONV_NORM | CCFG_VK_CONV_NORM_SILU);
    status = ccfg_vk_nn_dispatch(be, kernel, CCFG_VK_CONV_TILED_BINDINGS, sp, sc, &pc, items, 1,
                                 (uint32_t)(slices * ktiles));
    if (!status) {
        const float *rp[CCFG_VK_CONV_REDUCE_BINDINGS] = {part, ptrs[2], ptrs[3], ptrs[4]};
        const int64_t rc[CCFG_VK_CONV_REDUCE_BINDINGS] = {slices * ny, counts[2], counts[3],
                                                          counts[4]};
        ccfg_vk_push_conv2d_reduce rpc = {.count = (uint32_t)ny,
                                          .n_out = (uint32_t)(ny / pc.cout),
                                          .slices = (uint32_t)slices, .flags = flags & 7u};
        status = ccfg_vk_nn_dispatch(be, CCFG_VK_NN_CONV2D_REDUCE, CCFG_VK_CONV_REDUCE_BINDINGS,
                                     rp, rc, &rpc, ny, 0, 1);
    }
    be->release(be, part);      /* after the batch that uses it (backend_vk.c) */
    return status;
}

/* CCFG_VULKAN_COOP_SINGLE_BUFFER=1: the coop convolution with one shared-memory stage and two
 * barriers per stage (the path before double buffering; the same sums in the same order, so the
 * same bits). Read at every convolution, so one process can alternate the two (A/B runs). */
static int coop_single_buffer(void)
{
    const char *v = getenv("CCFG_VULKAN_COOP_SINGLE_BUFFER");
    return v && *v && strcmp(v, "0");
}

/* CCFG_VULKAN_COOP_TILE: the coop convolution's tile and staging (vk_nn.h CCFG_VK_COOP_TILE_*),
 * FM x FN accumulators per subgroup and whether the staging packs float16 pairs. Unset or empty:
 * 2x2, the default until a GPU run says otherwise. Read at every convolution, so one process can
 * alternate them (A/B runs; every tile computes the same bits, shaders/nn_conv2d_coop.glsl). */
static const struct { const char *name; int fm, fn, packed, pad; }
    coop_tiles[CCFG_VK_COOP_TILE_COUNT] = {
        {"2x2", 2, 2, 0, 0}, {"2x4", 2, 4, 0, 0}, {"4x4", 4, 4, 0, 0},
        {"2x2p", 2, 2, 1, 0}, {"2x4p", 2, 4, 1, 0}, {"4x4p", 4, 4, 1, 0},
        {"2x2pp", 2, 2, 1, 1}, {"2x4pp", 2, 4, 1, 1}, {"4x4pp", 4, 4, 1, 1}};

/* CCFG_VULKAN_COOP_TILE=auto: the tuner (vk_tune.c, coop_autotune below) picks per shape;
 * coop_forced: the tile a tuning run forces (-1: none), thread-local as the run is this thread's
 * recursive call of vk_conv2d_half */
enum { COOP_TILE_AUTO = -1 };
static _Thread_local int coop_forced = -1;

static int coop_tile(int *out)
{
    const char *v = getenv("CCFG_VULKAN_COOP_TILE");
    *out = CCFG_VK_COOP_TILE_2X2;
    if (coop_forced >= 0) {
        *out = coop_forced;
        return CCFG_OK;
    }
    if (!v || !*v) return CCFG_OK;
    if (!strcmp(v, "auto")) {
        *out = COOP_TILE_AUTO;
        return CCFG_OK;
    }
    for (int t = 0; t < CCFG_VK_COOP_TILE_COUNT; t++)
        if (!strcmp(v, coop_tiles[t].name)) {
            *out = t;
            return CCFG_OK;
        }
    return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_COOP_TILE must be 2x2, 2x4, 4x4, 2x2p, 2x4p, 4x4p, "
                     "2x2pp, 2x4pp, 4x4pp (accumulators per subgroup; p: packed staging, pp: "
                     "packed with padded shared-memory rows) or auto (the fastest per shape, timed "
                     "on the device: vk_tune.c), not '%s'", v);
}

/* the coop shader's shared memory for a tile (nn_conv2d_coop.glsl As, Bs: two stages of float16
 * (one with the single-buffer switch), rows 8 float16 longer when padded, Cs: 4 float32
 * fragments of bk x bk) */
static int64_t coop_shared_need(int coop8, int tile, int sb)
{
    const int64_t bm = (coop8 ? CCFG_VK_COOP8_BM : CCFG_VK_COOP_BM) / 2 * coop_tiles[tile].fm;
    const int64_t bn = (coop8 ? CCFG_VK_COOP8_BN : CCFG_VK_COOP_BN) / 2 * coop_tiles[tile].fn;
    const int64_t bk = coop8 ? CCFG_VK_COOP8_BK : CCFG_VK_COOP_BK;
    const int64_t pad = coop_tiles[tile].pad ? 8 : 0;
    return (sb ? 1 : 2) * (bm * (bk + pad) + bk * (bn + pad)) * 2 + 4 * bk * bk * 4;
}

static int coop_autotune(const ccfg_backend *be, int precision, int batch, int cin, int h, int w,
                         const float *x, int cout, int k, int stride, int pad0, int ho, int wo,
                         const float *weight, const float *w16, const float *bias,
                         const float *residual, int accumulate, const float *ab, int silu,
                         float *y, int *tile);

/* conv2d with float16 weights and inputs and float32 sums (CCFG_VULKAN_PRECISION=fp16, coop,
 * auto; vk_conv2d's sizes already checked, tiled sizes only): nn_conv2d_f16.comp (the tiled
 * shader's tiles) or nn_conv2d_coop*.comp (cooperative matrices) run over chunks of input channels
 * as the float32 shader's do. w16: the layer's float16 weights (its packed form, vk_conv2d_pack,
 * converted once when the model was placed), or NULL: then they are converted here into float16
 * device scratch (nn_to_f16.comp; read once, 1.5x their float32 bytes moved per call, released
 * after the batch). Chunks are multiples of 8 or 16 channels, so a chunk's first weight is an
 * even float16 index: a whole 32-bit element, the unit of the bound arrays' offsets. ab, silu:
 * a folded GroupNorm (vk_conv2d_packed_norm; the float16 tiled shader and every coop variant
 * stage x a + d, then SiLU, in float32 and round that to float16), or NULL. */
static int vk_conv2d_half(const ccfg_backend *be, int precision, int batch, int cin, int h,
                          int w, const float *x, int cout, int k, int stride, int pad0, int ho,
                          int wo, const float *weight, const float *w16, const float *bias,
                          const float *residual, int accumulate, const float *ab, int silu,
                          float *y)
{
    const int coop = precision == CCFG_VK_PRECISION_COOP || precision == CCFG_VK_PRECISION_COOP8;
    const int64_t kk = (int64_t)k * k, n_in = (int64_t)batch * h * w;
    const int64_t nx = (int64_t)cin * n_in, ny = (int64_t)cout * batch * ho * wo;
    const int64_t nw = (int64_t)cout * cin * kk, nw32 = (nw + 1) / 2;
    /* the tile and stage of the shader: nn_conv2d_f16's, or the coop variant's */
    const int coop8 = precision == CCFG_VK_PRECISION_COOP8;
    int tile = CCFG_VK_COOP_TILE_2X2, status;
    if (coop && (status = coop_tile(&tile))) return status;
    if (tile == COOP_TILE_AUTO &&
        (status = coop_autotune(be, precision, batch, cin, h, w, x, cout, k, stride, pad0, ho, wo,
                                weight, w16, bias, residual, accumulate, ab, silu, y, &tile)))
        return status;
    const int sb = coop && coop_single_buffer();
    if (sb && tile != CCFG_VK_COOP_TILE_2X2)    /* the _sb pipelines exist for 2x2 only */
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_COOP_SINGLE_BUFFER=1 runs only the 2x2 tile, "
                         "not CCFG_VULKAN_COOP_TILE=%s", coop_tiles[tile].name);
    /* the default tile is 2 x 2 fragments per subgroup: the others scale it */
    const int64_t bm = !coop ? CCFG_VK_CONV_BM
                             : (coop8 ? CCFG_VK_COOP8_BM : CCFG_VK_COOP_BM) / 2 *
                                   coop_tiles[tile].fm;
    const int64_t bn = !coop ? CCFG_VK_CONV_BN
                             : (coop8 ? CCFG_VK_COOP8_BN : CCFG_VK_COOP_BN) / 2 *
                                   coop_tiles[tile].fn;
    const int64_t bk = !coop ? CCFG_VK_CONV_BK : coop8 ? CCFG_VK_COOP8_BK : CCFG_VK_COOP_BK;
    if ((status = fits(nw, "conv2d"))) return status;
    if (coop) {
        /* the shader's shared memory (nn_conv2d_coop.glsl As, Bs: two stages of float16, rows
         * 8 float16 longer when padded, Cs: 4 float32 fragments of bk x bk) against the device's
         * limit: a larger tile may not fit where 2x2 does (NVIDIA: 48 KiB without opt-in; 4x4
         * of 16 x 16 x 16 needs 20 KiB, padded 24.5 KiB) */
        uint32_t shared = 0, inv = 0;
        ccfg_vk_nn_limits(be, &shared, &inv);
        const int64_t need = coop_shared_need(coop8, tile, sb);
        if (need > (int64_t)shared)
            return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: CCFG_VULKAN_COOP_TILE=%s needs %lld "
                             "bytes of shared memory, the device has %u",
                             coop_tiles[tile].name, (long long)need, shared);
    }
    const int64_t items = (ny / cout + bn - 1) / bn;
    const int64_t mtiles = (cout + bm - 1) / bm;
    if (mtiles > CCFG_VK_MAX_GROUPS)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: %d output channels is too many", cout);
    /* the float32 tiled shader's budget (vk_conv2d), with this shader's stage width: the coop
     * shader's loops per tile are its stages (its staging and epilogue loops are unrolled) */
    const int64_t rounds = (items + CCFG_VK_MAX_GROUPS - 1) / CCFG_VK_MAX_GROUPS;
    const int64_t budget = CCFG_VK_LOOP_BUDGET / (rounds > 1 ? rounds : 1);
    int64_t chunk = ((budget - k) / kk - 1) * bk;
    if (chunk < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: a %dx%d kernel over %lld output pixels "
                         "is more work per invocation than the device can loop", k, k,
                         (long long)(ny / cout));
    if (chunk > cin) chunk = cin;

    float *conv16 = NULL;       /* the weights converted here, when not packed */
    if (!w16) {
        if ((status = ccfg_vk_nn_scratch(be, (size_t)nw32 * sizeof(float), &conv16)))
            return status;
        const float *ptrs[2] = {weight, conv16};
        const int64_t counts[2] = {nw, nw32};
        ccfg_vk_push_to_f16 pc = {.count = (uint32_t)nw};
        status = ccfg_vk_nn_dispatch(be, CCFG_VK_NN_TO_F16, 2, ptrs, counts, &pc, nw, 0, 1);
        w16 = conv16;
    }
    ccfg_vk_push_conv2d pc = {.batch = (uint32_t)batch, .h = (uint32_t)h,
                              .w = (uint32_t)w, .cout = (uint32_t)cout, .k = (uint32_t)k,
                              .stride = (uint32_t)stride, .pad0 = (uint32_t)pad0,
                              .ho = (uint32_t)ho, .wo = (uint32_t)wo,
                              .wstride = (uint32_t)((int64_t)cin * kk)};
    const int kernel = !coop ? CCFG_VK_NN_CONV2D_F16
                       : tile != CCFG_VK_COOP_TILE_2X2
                           ? (coop8 ? CCFG_VK_NN_CONV2D_COOP8_TILES
                                    : CCFG_VK_NN_CONV2D_COOP_TILES) + tile - 1
                       : coop8 ? (sb ? CCFG_VK_NN_CONV2D_COOP8_SB : CCFG_VK_NN_CONV2D_COOP8)
                               : (sb ? CCFG_VK_NN_CONV2D_COOP_SB : CCFG_VK_NN_CONV2D_COOP);
    for (int64_t c0 = 0; c0 < cin && !status; c0 += chunk) {
        const int64_t nc = cin - c0 < chunk ? cin - c0 : chunk;
        if ((c0 * kk) % 2) {        /* chunks are multiples of bk (8 or 16): never */
            status = ccfg_fail(CCFG_EINTERNAL, "Vulkan nn conv2d: a float16 chunk at an odd "
                               "weight");
            break;
        }
        /* ab (the tiled shader's sixth binding) from the chunk's first channel */
        const float *ptrs[CCFG_VK_CONV_TILED_BINDINGS] = {x + c0 * n_in, w16 + c0 * kk / 2,
                                                          bias ? bias : x, y,
                                                          residual ? residual : y,
                                                          ab ? ab + 2 * c0 : x};
        const int64_t counts[CCFG_VK_CONV_TILED_BINDINGS] = {
            nx - c0 * n_in, nw32 - c0 * kk / 2, bias ? cout : 0, ny, residual ? ny : 0,
            ab ? 2 * (int64_t)batch * cin - 2 * c0 : 0};
        pc.cin = (uint32_t)nc;
        pc.flags = (bias && c0 == 0 ? 1u : 0u) | (accumulate || c0 > 0 ? 2u : 0u) |
                   (residual && c0 == 0 ? 4u : 0u) | (ab ? (uint32_t)CCFG_VK_CONV_NORM : 0u) |
                   (ab && silu ? (uint32_t)CCFG_VK_CONV_NORM_SILU : 0u);
        /* split-K in the float16 tiled shader; the coop shaders have none (split = 0) but the
         * tiled shaders' bindings and push block: ab, its offset and abstride (the fold) */
        if (kernel == CCFG_VK_NN_CONV2D_F16) {
            status = conv_tiled_dispatch(be, kernel, ptrs, counts, &pc, (uint32_t)cin, items,
                                         mtiles, ny, bk);
        } else {
            ccfg_vk_push_conv2d_tiled tp = {.batch = pc.batch, .cin = pc.cin, .h = pc.h,
                                            .w = pc.w, .cout = pc.cout, .k = pc.k,
                                            .stride = pc.stride, .pad0 = pc.pad0, .ho = pc.ho,
                                            .wo = pc.wo, .flags = pc.flags,
                                            .wstride = pc.wstride, .abstride = (uint32_t)cin};
            status = ccfg_vk_nn_dispatch(be, kernel, CCFG_VK_CONV_TILED_BINDINGS, ptrs, counts,
                                         &tp, items, 1, (uint32_t)mtiles);
        }
    }
    if (conv16) be->release(be, conv16);    /* after the batch that uses it (backend_vk.c) */
    return status;
}

/* ---- run-time tuning of the convolution's variants (vk_tune.h; CCFG_VULKAN_COOP_TILE=auto,
 * CCFG_VULKAN_CONV_TILE=auto)
 *
 * A convolution's arguments, for the tuner's runs: conv runs the convolution once into y_run
 * with the variant *forced (a thread-local its variant chooser reads first: coop_forced,
 * conv_forced) set to the candidate. The runs write into device scratch, never into the real y:
 * accumulate and the residual read y (with accumulate the scratch starts as a copy of y, so the
 * runs read what the real one will). The residual, x, the weights and bias are only read. */
typedef struct conv_tune_args conv_tune_args;
struct conv_tune_args {
    const ccfg_backend *be;
    int precision, batch, cin, h, w, cout, k, stride, pad0, pad1, ho, wo, accumulate, silu;
    const float *x, *weight, *w16, *bias, *residual, *ab;
    float *y;                   /* the real output: copied into the scratch with accumulate */
    float *y_run;               /* the runs' output (scratch) */
    int *forced;
    int (*conv)(const conv_tune_args *a, float *y);
    /* optional, on a miss before the runs: what all runs can share (coop: the weights in float16
     * once, else every run converts them inside its timestamps) into device scratch tmp,
     * released after the runs */
    int (*prepare)(conv_tune_args *a);
    float *tmp;
};

/* the key: everything that changes a convolution's work. For the coop tiles, the chunking over
 * input channels (and the pixel tiles, the grid) follow from these and the constant
 * CCFG_VK_LOOP_BUDGET for every candidate, so they are covered. The float32 family adds its
 * chunk of input channels and split-K's slices (CCFG_VULKAN_CONV_SPLITK is not in the fields
 * above, and a saved decision must not outlive a change of the budget or the split rule). */
enum { CONV_KEY = 15, SIMT_KEY = CONV_KEY + 3 };
static const char *const conv_key_names[SIMT_KEY] = {
    "batch", "cin", "h", "w", "cout", "k", "stride", "pad0", "ho", "wo", "bias", "accumulate",
    "residual", "norm", "silu", "chunk", "slices", "slices_last"};

static int conv_tune_run(void *ctx, int id)
{
    const conv_tune_args *a = ctx;
    *a->forced = id;
    const int status = a->conv(a, a->y_run);
    *a->forced = -1;
    return status;
}

/* the variant for a's shape: the cached choice, or (a miss) the fastest of the n candidates
 * (ids, names; the default first) timed on the device into scratch. extra: the family's key
 * fields past the CONV_KEY common ones (kind->nkey in all). One candidate: it, untimed. */
static int conv_autotune(conv_tune_args *a, const ccfg_vk_tune_kind *kind, const int64_t *extra,
                         int n, const int *ids, const char *const *names, const char *what,
                         int *choice)
{
    const ccfg_backend *be = a->be;
    int64_t key[CCFG_VK_TUNE_KEY] = {a->batch, a->cin, a->h, a->w, a->cout, a->k, a->stride,
                                     a->pad0, a->ho, a->wo, a->bias != NULL, a->accumulate != 0,
                                     a->residual != NULL, a->ab != NULL, a->silu != 0};
    const int64_t ny = (int64_t)a->cout * a->batch * a->ho * a->wo;
    int status, done = 0, hit = 0;
    *choice = ids[0];
    if (n == 1 || ny == 0) return CCFG_OK;     /* nothing to choose, or no work to time */
    if (kind->nkey < CONV_KEY || kind->nkey > CCFG_VK_TUNE_KEY)
        return ccfg_fail(CCFG_EINTERNAL, "Vulkan nn conv2d: %d key fields", kind->nkey);
    for (int i = CONV_KEY; i < kind->nkey; i++) key[i] = extra[i - CONV_KEY];
    if ((status = ccfg_vk_tune_lookup(be, kind, key, n, ids, names, &hit, choice)) || hit)
        return status;
    if (a->prepare && (status = a->prepare(a))) goto done;
    if ((status = ccfg_vk_nn_scratch(be, (size_t)ny * sizeof(float), &a->y_run))) goto done;
    if (a->accumulate && !(status = ccfg_vk_nn_copy(be, ny, a->y, a->y_run, &done)) && !done)
        status = ccfg_fail(CCFG_EINTERNAL, "Vulkan nn conv2d: tuning scratch overlaps y");
    if (!status)
        status = ccfg_vk_tune_measure(be, kind, key, n, ids, names, conv_tune_run, a, what,
                                      choice);
done:
    /* after the batch that uses them (backend_vk.c); release ignores NULL */
    be->release(be, a->y_run);
    be->release(be, a->tmp);
    a->y_run = a->tmp = NULL;
    return status;
}

/* CCFG_VULKAN_TUNE_CANDIDATES for a family whose variants are names (count): one list for both
 * families, each token applying to the family whose variant it names */
static int tune_candidates(const char *const *names, int count, int *out)
{
    const char *known[CCFG_VK_COOP_TILE_COUNT + CCFG_VK_CONV_TILE_COUNT];
    int n = 0;
    for (int t = 0; t < CCFG_VK_COOP_TILE_COUNT; t++) known[n++] = coop_tiles[t].name;
    for (int t = 0; t < CCFG_VK_CONV_TILE_COUNT; t++) known[n++] = conv_tiles[t].name;
    return ccfg_vk_tune_candidates(names, count, known, n, out);
}

static int coop_run(const conv_tune_args *a, float *y)
{
    return vk_conv2d_half(a->be, a->precision, a->batch, a->cin, a->h, a->w, a->x, a->cout, a->k,
                          a->stride, a->pad0, a->ho, a->wo, a->weight, a->w16, a->bias,
                          a->residual, a->accumulate, a->ab, a->silu, y);
}

/* the layer's weights in float16 once for all the tuning runs (vk_conv2d_half's conversion) */
static int coop_weights16(conv_tune_args *a)
{
    const int64_t nw = (int64_t)a->cout * a->cin * a->k * a->k, nw32 = (nw + 1) / 2;
    int status;
    if ((status = ccfg_vk_nn_scratch(a->be, (size_t)nw32 * sizeof(float), &a->tmp)))
        return status;
    const float *ptrs[2] = {a->weight, a->tmp};
    const int64_t counts[2] = {nw, nw32};
    ccfg_vk_push_to_f16 pc = {.count = (uint32_t)nw};
    a->w16 = a->tmp;
    return ccfg_vk_nn_dispatch(a->be, CCFG_VK_NN_TO_F16, 2, ptrs, counts, &pc, nw, 0, 1);
}

/* CCFG_VULKAN_COOP_TILE=auto: the coop tile for this shape, timed once per shape and device.
 * Candidates: every tile whose shared memory fits the device, 2x2 (the default) first, those of
 * CCFG_VULKAN_TUNE_CANDIDATES only where it is set. */
static int coop_autotune(const ccfg_backend *be, int precision, int batch, int cin, int h, int w,
                         const float *x, int cout, int k, int stride, int pad0, int ho, int wo,
                         const float *weight, const float *w16, const float *bias,
                         const float *residual, int accumulate, const float *ab, int silu,
                         float *y, int *tile)
{
    static const ccfg_vk_tune_kind kinds[2] = {{"conv2d coop", conv_key_names, CONV_KEY},
                                               {"conv2d coop8", conv_key_names, CONV_KEY}};
    const char *names[CCFG_VK_COOP_TILE_COUNT];
    int ids[CCFG_VK_COOP_TILE_COUNT], listed[CCFG_VK_COOP_TILE_COUNT], n = 0, status;
    const int coop8 = precision == CCFG_VK_PRECISION_COOP8;
    const ccfg_vk_tune_kind *kind = &kinds[coop8];
    uint32_t shared = 0, inv = 0;
    *tile = CCFG_VK_COOP_TILE_2X2;
    if (coop_single_buffer())   /* the _sb pipelines exist for 2x2 only */
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_COOP_SINGLE_BUFFER=1 runs only the 2x2 tile, "
                         "not CCFG_VULKAN_COOP_TILE=auto");
    for (int t = 0; t < CCFG_VK_COOP_TILE_COUNT; t++) names[t] = coop_tiles[t].name;
    if ((status = tune_candidates(names, CCFG_VK_COOP_TILE_COUNT, listed))) return status;
    ccfg_vk_nn_limits(be, &shared, &inv);
    for (int t = 0; t < CCFG_VK_COOP_TILE_COUNT; t++)
        if (listed[t] && coop_shared_need(coop8, t, 0) <= (int64_t)shared) {
            ids[n] = t;
            names[n++] = coop_tiles[t].name;
        }
    if (!n)
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_TUNE_CANDIDATES: no listed tile fits the "
                         "device's %u bytes of shared memory", shared);
    conv_tune_args a = {.be = be, .precision = precision, .batch = batch, .cin = cin, .h = h,
                        .w = w, .cout = cout, .k = k, .stride = stride, .pad0 = pad0, .ho = ho,
                        .wo = wo, .accumulate = accumulate, .silu = silu, .x = x,
                        .weight = weight, .w16 = w16, .bias = bias, .residual = residual,
                        .ab = ab, .y = y, .forced = &coop_forced, .conv = coop_run,
                        .prepare = w16 ? NULL : coop_weights16};
    return conv_autotune(&a, kind, NULL, n, ids, names, "CCFG_VULKAN_COOP_TILE", tile);
}

/* conv2d, from the layer's float16 weights w16 (vk_conv2d_pack) where given, adding residual (an
 * array like y, or NULL) in the epilogue of its first chunk, reading its input through a folded
 * GroupNorm where ab is given ((a, d) per sample and input channel, then SiLU if silu; the tiled
 * shaders only) */
static int conv2d_any(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                      int cout, int k, int stride, int pad0, int pad1, const float *weight,
                      const float *w16, const float *bias, const float *residual, int accumulate,
                      const float *ab, int silu, float *y);

static int vk_conv2d(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                     int cout, int k, int stride, int pad0, int pad1, const float *weight,
                     const float *bias, int accumulate, float *y, float *scratch,
                     int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    return conv2d_any(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, NULL, bias,
                      NULL, accumulate, NULL, 0, y);
}

/* the packed form (nn.h conv2d_packed_len): a layer the tiled shaders run in half precision keeps
 * its weights in float16, (cout cin k k + 1) / 2 floats; none in fp32, for at most BM / 2 output
 * channels (the float32 direct shader in every precision) and with CCFG_VULKAN_NO_F16_CACHE=1 */
static int64_t vk_conv2d_packed_len(const ccfg_backend *be, int cin, int cout, int k, int stride,
                                    int pad0, int pad1)
{
    (void)stride;
    (void)pad0;
    (void)pad1;
    if (cin < 1 || cout <= CCFG_VK_CONV_BM / 2 || k < 1 || f16_cache_off() ||
        ccfg_vk_nn_precision(be) == CCFG_VK_PRECISION_FP32)
        return 0;
    return ((int64_t)cout * cin * k * k + 1) / 2;
}

/* the layer's weights converted to float16 into `packed` (one nn_to_f16.comp dispatch, recorded:
 * done when the batch runs, before any convolution recorded after it reads them) */
static int vk_conv2d_pack(const ccfg_backend *be, int cin, int cout, int k, int stride, int pad0,
                          int pad1, const float *weight, float *packed)
{
    const int64_t len = vk_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1);
    const int64_t nw = (int64_t)cout * cin * k * k;
    int status;
    if (!len)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_pack: a %dx%d convolution of %d output "
                         "channels has no packed form on this device (precision fp32, at most "
                         "%d output channels, or CCFG_VULKAN_NO_F16_CACHE)", k, k, cout,
                         CCFG_VK_CONV_BM / 2);
    if ((status = fits(nw, "conv2d_pack"))) return status;
    const float *ptrs[2] = {weight, packed};
    const int64_t counts[2] = {nw, len};
    ccfg_vk_push_to_f16 pc = {.count = (uint32_t)nw};
    return ccfg_vk_nn_dispatch(be, CCFG_VK_NN_TO_F16, 2, ptrs, counts, &pc, nw, 0, 1);
}

static int vk_conv2d_packed(const ccfg_backend *be, int batch, int cin, int h, int w,
                            const float *x, int cout, int k, int stride, int pad0, int pad1,
                            const float *weight, const float *packed, const float *bias,
                            int accumulate, float *y, float *scratch, int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    /* float16 weights made under another precision (or switch) than the device's now would be
     * read as what they are not: refuse them (the UNet packs again first: repack_if_stale) */
    if (packed && !vk_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed: the layer has no packed form on "
                         "this device now (its precision is fp32 or the layer stays float32): "
                         "its float16 weights are stale");
    return conv2d_any(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, packed, bias,
                      NULL, accumulate, NULL, 0, y);
}

/* CCFG_VULKAN_NO_CONV_RESIDUAL=1: conv2d_residual copies the residual into y and accumulates
 * onto it (the path before the residual binding; for A/B). Read once. */
static int conv_residual_off(void)
{
    static int off = -1;
    if (off < 0) {
        const char *v = getenv("CCFG_VULKAN_NO_CONV_RESIDUAL");
        off = v && *v && strcmp(v, "0") ? 1 : 0;
    }
    return off;
}

static int vk_copy(const ccfg_backend *be, int64_t count, const float *x, float *y);

/* nn.h conv2d_residual: the residual is the shaders' fifth binding, added to the first chunk's
 * sums ((conv + bias) + r, the order of the accumulate it replaces); no copy into y first */
static int vk_conv2d_residual(const ccfg_backend *be, int batch, int cin, int h, int w,
                              const float *x, int cout, int k, int stride, int pad0, int pad1,
                              const float *weight, const float *packed, const float *bias,
                              const float *residual, float *y, float *scratch,
                              int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    if (!residual)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_residual: no residual");
    if (packed && !vk_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_residual: the layer has no packed form on "
                         "this device now (its precision is fp32 or the layer stays float32): "
                         "its float16 weights are stale");
    if (batch < 0 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 || pad1 < 0 ||
        h + pad0 + pad1 < k || w + pad0 + pad1 < k)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: invalid sizes");
    const int64_t ho = (h + pad0 + pad1 - k) / stride + 1, wo = (w + pad0 + pad1 - k) / stride + 1;
    const int64_t ny = (int64_t)cout * batch * ho * wo;
    /* device addresses of one address space (backend_vk.c): a residual that overlaps y without
     * being y would be read where other invocations write */
    if (residual != y && (uintptr_t)residual < (uintptr_t)(y + ny) &&
        (uintptr_t)y < (uintptr_t)(residual + ny))
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_residual: the residual overlaps y");
    if (residual == y || conv_residual_off()) {
        int status = vk_copy(be, ny, residual, y);
        if (status) return status;
        return conv2d_any(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, packed,
                          bias, NULL, 1, NULL, 0, y);
    }
    return conv2d_any(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, packed, bias,
                      residual, 0, NULL, 0, y);
}

static int simt_run(const conv_tune_args *a, float *y)
{
    return conv2d_any(a->be, a->batch, a->cin, a->h, a->w, a->x, a->cout, a->k, a->stride,
                      a->pad0, a->pad1, a->weight, NULL, a->bias, a->residual, a->accumulate,
                      a->ab, a->silu, y);
}

/* split-K's slices of a float32 tiled dispatch of nc input channels (conv_tiled_dispatch's
 * rule, with the default tile's channel tiles): 1 unsplit */
static int simt_slices(int64_t nc, int k, int64_t items, int64_t mtiles, int64_t ny,
                       int64_t *slices)
{
    const int64_t stages = (int64_t)k * k * ((nc + CCFG_VK_CONV_BK - 1) / CCFG_VK_CONV_BK);
    int64_t sps = 0;
    const int status = conv_splitk(items * mtiles, mtiles, stages, ny, &sps);
    *slices = sps ? (stages + sps - 1) / sps : 1;
    return status;
}

/* CCFG_VULKAN_CONV_TILE=auto: the float32 variant for this shape, timed once per shape and
 * device. Candidates: every variant that fits the device's shared memory and workgroup size,
 * 64x128 (the default) first, those of CCFG_VULKAN_TUNE_CANDIDATES only where it names float32
 * variants. items, mtiles, chunk: conv2d_any's grid and chunk of input channels. */
static int simt_autotune(const ccfg_backend *be, int batch, int cin, int h, int w,
                         const float *x, int cout, int k, int stride, int pad0, int pad1, int ho,
                         int wo, const float *weight, const float *bias, const float *residual,
                         int accumulate, const float *ab, int silu, float *y, int64_t items,
                         int64_t mtiles, int64_t chunk, int *tile)
{
    static const ccfg_vk_tune_kind kind = {"conv2d fp32", conv_key_names, SIMT_KEY};
    const char *names[CCFG_VK_CONV_TILE_COUNT];
    int ids[CCFG_VK_CONV_TILE_COUNT], listed[CCFG_VK_CONV_TILE_COUNT], n = 0, status;
    const int64_t ny = (int64_t)cout * batch * ho * wo;
    int64_t extra[SIMT_KEY - CONV_KEY] = {chunk, 1, 1}, need = 0;
    uint32_t shared = 0, inv = 0;
    *tile = CCFG_VK_CONV_TILE_64X128;
    for (int t = 0; t < CCFG_VK_CONV_TILE_COUNT; t++) names[t] = conv_tiles[t].name;
    if ((status = tune_candidates(names, CCFG_VK_CONV_TILE_COUNT, listed))) return status;
    ccfg_vk_nn_limits(be, &shared, &inv);
    for (int t = 0; t < CCFG_VK_CONV_TILE_COUNT; t++)
        if (listed[t] && conv_tile_fits(t, shared, inv, &need)) {
            ids[n] = t;
            names[n++] = conv_tiles[t].name;
        }
    if (!n)     /* the default fits every device (16 KiB, 128 invocations) */
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_TUNE_CANDIDATES: no listed float32 variant "
                         "fits the device's %u bytes of shared memory and %u invocations",
                         shared, inv);
    /* the first chunk's and the last chunk's split (the chunks between are the first's) */
    const int64_t last = cin - (cin - 1) / chunk * chunk;
    if ((status = simt_slices(chunk, k, items, mtiles, ny, &extra[1])) ||
        (status = simt_slices(last, k, items, mtiles, ny, &extra[2])))
        return status;
    conv_tune_args a = {.be = be, .precision = CCFG_VK_PRECISION_FP32, .batch = batch,
                        .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride,
                        .pad0 = pad0, .pad1 = pad1, .ho = ho, .wo = wo, .accumulate = accumulate,
                        .silu = silu, .x = x, .weight = weight, .bias = bias,
                        .residual = residual, .ab = ab, .y = y, .forced = &conv_forced,
                        .conv = simt_run};
    return conv_autotune(&a, &kind, extra, n, ids, names, "CCFG_VULKAN_CONV_TILE", tile);
}

static int conv2d_any(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                      int cout, int k, int stride, int pad0, int pad1, const float *weight,
                      const float *w16, const float *bias, const float *residual, int accumulate,
                      const float *ab, int silu, float *y)
{
    if (batch < 0 || cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 ||
        pad1 < 0 || h + pad0 + pad1 < k || w + pad0 + pad1 < k)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: invalid sizes");
    const int ho = (h + pad0 + pad1 - k) / stride + 1, wo = (w + pad0 + pad1 - k) / stride + 1;
    const int64_t nx = (int64_t)cin * batch * h * w, ny = (int64_t)cout * batch * ho * wo;
    int status;
    if ((status = fits(nx, "conv2d")) || (status = fits(ny, "conv2d"))) return status;
    const int64_t kk = (int64_t)k * k, n_in = (int64_t)batch * h * w;
    /* At most BM / 2 output channels (first and last layers, narrow models): the tiled shader
     * would waste half or more of its multiply-adds on channels that do not exist, so the direct
     * shader computes them (8-channel blocks, no shared memory). Otherwise the implicit GEMM. */
    const int direct = cout <= CCFG_VK_CONV_BM / 2;
    const int precision = ccfg_vk_nn_precision(be);
    /* CCFG_VULKAN_CONV_TILE is checked on every path, though only the float32 tiled one uses it */
    int tile = CCFG_VK_CONV_TILE_64X128;
    if ((status = conv_tile(&tile))) return status;
    if (!direct && precision != CCFG_VK_PRECISION_FP32)
        return vk_conv2d_half(be, precision, batch, cin, h, w, x, cout, k, stride, pad0, ho, wo,
                              weight, w16, bias, residual, accumulate, ab, silu, y);
    if (ab && direct)   /* vk_conv2d_packed_norm declines these */
        return ccfg_fail(CCFG_EINTERNAL, "Vulkan nn conv2d: a folded GroupNorm in the direct "
                         "shader");
    int64_t items, rounds;
    uint32_t groups_y;
    if (direct) {
        items = (int64_t)batch * ho * ((wo + CCFG_VK_CONV_PX - 1) / CCFG_VK_CONV_PX);
        rounds = grid_rounds(items);
        groups_y = (uint32_t)((cout + CCFG_VK_CONV_COB - 1) / CCFG_VK_CONV_COB);
    } else {
        /* tiles of BN output pixels (x workgroups, a grid-stride loop past 65535) by BM output
         * channels (y workgroups) */
        items = (ny / cout + CCFG_VK_CONV_BN - 1) / CCFG_VK_CONV_BN;
        rounds = (items + CCFG_VK_MAX_GROUPS - 1) / CCFG_VK_MAX_GROUPS;
        const int64_t mtiles = (cout + CCFG_VK_CONV_BM - 1) / CCFG_VK_CONV_BM;
        if (mtiles > CCFG_VK_MAX_GROUPS)
            return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: %d output channels is too many",
                             cout);
        groups_y = (uint32_t)mtiles;
    }
    /* The input channels go in chunks that keep an invocation's loops within the budget, later
     * chunks accumulating onto the first. Per round of its grid-stride loop an invocation loops
     * k x (1 + k x (1 + channels)) times in the direct shader, and k*k x channels / BK times in
     * the tiled one (once per stage of BK channels; the loops inside a stage are unrolled; the
     * bound below, k + k*k x (1 + channels / BK), keeps a margin), whose chunks are multiples of
     * BK. Every float32 variant has the default's BN and BK, so the same chunks. */
    const int64_t budget = CCFG_VK_LOOP_BUDGET / (rounds > 1 ? rounds : 1);
    int64_t chunk = direct ? (budget - k - kk) / kk
                           : ((budget - k) / kk - 1) * CCFG_VK_CONV_BK;
    if (chunk < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: a %dx%d kernel over %lld output pixels "
                         "is more work per invocation than the device can loop", k, k,
                         (long long)(ny / cout));
    if (chunk > cin) chunk = cin;
    if (!direct) {
        if (tile == CONV_TILE_AUTO &&
            (status = simt_autotune(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, ho, wo,
                                    weight, bias, residual, accumulate, ab, silu, y, items,
                                    groups_y, chunk, &tile)))
            return status;
        uint32_t shared = 0, inv = 0;
        int64_t need = 0;
        ccfg_vk_nn_limits(be, &shared, &inv);
        if (!conv_tile_fits(tile, shared, inv, &need))
            return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d: CCFG_VULKAN_CONV_TILE=%s needs %lld "
                             "bytes of shared memory and %d invocations per workgroup, the device "
                             "has %u and %u", conv_tiles[tile].name, (long long)need,
                             conv_tiles[tile].invocations, shared, inv);
    }
    ccfg_vk_push_conv2d pc = {.batch = (uint32_t)batch, .h = (uint32_t)h,
                              .w = (uint32_t)w, .cout = (uint32_t)cout, .k = (uint32_t)k,
                              .stride = (uint32_t)stride, .pad0 = (uint32_t)pad0,
                              .ho = (uint32_t)ho, .wo = (uint32_t)wo,
                              .wstride = (uint32_t)((int64_t)cin * kk)};
    for (int64_t c0 = 0; c0 < cin; c0 += chunk) {
        const int64_t nc = cin - c0 < chunk ? cin - c0 : chunk;
        /* the direct shader binds the first five; ab from the chunk's first channel */
        const float *ptrs[CCFG_VK_CONV_TILED_BINDINGS] = {x + c0 * n_in, weight + c0 * kk,
                                                          bias ? bias : weight, y,
                                                          residual ? residual : y,
                                                          ab ? ab + 2 * c0 : x};
        const int64_t counts[CCFG_VK_CONV_TILED_BINDINGS] = {
            nx - c0 * n_in, (int64_t)cout * cin * kk - c0 * kk, bias ? cout : 0, ny,
            residual ? ny : 0, ab ? 2 * (int64_t)batch * cin - 2 * c0 : 0};
        pc.cin = (uint32_t)nc;
        pc.flags = (bias && c0 == 0 ? 1u : 0u) | (accumulate || c0 > 0 ? 2u : 0u) |
                   (residual && c0 == 0 ? 4u : 0u) | (ab ? (uint32_t)CCFG_VK_CONV_NORM : 0u) |
                   (ab && silu ? (uint32_t)CCFG_VK_CONV_NORM_SILU : 0u);
        status = direct ? ccfg_vk_nn_dispatch(be, CCFG_VK_NN_CONV2D_DIRECT, CCFG_VK_CONV_BINDINGS,
                                              ptrs, counts, &pc, items, 0, groups_y)
                        : conv_tiled_dispatch(be, conv_tiles[tile].kernel, ptrs, counts, &pc,
                                              (uint32_t)cin, items, groups_y, ny,
                                              CCFG_VK_CONV_BK);
        if (status) return status;
    }
    return CCFG_OK;
}

/* group_norm (affine 0) or group_norm_affine (affine 1: y is the (a, d) array, 2 batch c floats;
 * the same statistics, then the shader's CCFG_VK_GN_AFFINE step instead of the normalisation) */
static int group_norm_any(const ccfg_backend *be, int batch, int c, int hw, int groups, float eps,
                          const float *x, const float *in_bias, const float *gamma,
                          const float *beta, const float *film, int silu, int affine, float *y)
{
    const char *op = affine ? "group_norm_affine" : "group_norm";
    if (batch < 0 || c < 1 || hw < 1 || groups < 1 || c % groups)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn %s: %d groups for %d channels", op, groups, c);
    if (!x || !gamma || !beta || !y)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn %s: x, gamma, beta and the output are needed",
                         op);
    const int64_t n = (int64_t)c * batch * hw, ny = affine ? 2 * (int64_t)batch * c : n;
    int status;
    if ((status = fits(n, op))) return status;
    const int64_t pairs = (int64_t)batch * groups, per_group = (int64_t)(c / groups) * hw;
    if (!pairs) return CCFG_OK;
    ccfg_vk_push_group_norm pc = {.batch = (uint32_t)batch, .c = (uint32_t)c, .hw = (uint32_t)hw,
                                  .groups = (uint32_t)groups, .eps = eps,
                                  .flags = (in_bias ? 1u : 0u) | (film ? 2u : 0u) |
                                           (silu && !affine ? 4u : 0u) |
                                           (affine ? (uint32_t)CCFG_VK_GN_AFFINE : 0u)};
    if (per_group <= CCFG_VK_GN_FUSED) {
        /* one dispatch, a workgroup per (sample, group); the stats binding is never read (y
         * stands in) */
        const float *ptrs[7] = {x, in_bias ? in_bias : x, gamma, beta, film ? film : x, y, y};
        const int64_t counts[7] = {n, in_bias ? (int64_t)batch * c : 0, c, c,
                                   film ? 2 * (int64_t)batch * c : 0, ny, 0};
        pc.phase = 3;
        return dispatch_groups(be, CCFG_VK_NN_GROUP_NORM, 7, ptrs, counts, &pc, pairs, op);
    }
    /* phase 0 takes slices of 128 x e values of a group (e >= 16, so large groups spread over
     * many workgroups; larger when a group would have more than 4096 slices, which phase 1
     * loops over): phase 0 loops about 2e times, phase 1 at most 4096 */
    int64_t e = 16;
    while ((per_group + 128 * e - 1) / (128 * e) > 4096) e *= 2;
    const int64_t part = 128 * e, parts = (per_group + part - 1) / part;
    const int64_t nstats = 2 * pairs * (parts + 1);
    if ((status = fits(nstats, op))) return status;
    float *stats = NULL;
    if ((status = ccfg_vk_nn_scratch(be, (size_t)nstats * sizeof(float), &stats))) return status;
    const float *ptrs[7] = {x, in_bias ? in_bias : x, gamma, beta, film ? film : x, y, stats};
    const int64_t counts[7] = {n, in_bias ? (int64_t)batch * c : 0, c, c,
                               film ? 2 * (int64_t)batch * c : 0, ny, nstats};
    pc.part = (uint32_t)part;
    pc.parts = (uint32_t)parts;
    /* (a, d) straight from phase 1 (no phase 2) where its invocations' loops stay within the
     * budget: one per pair, each over its pair's slices and channels */
    const int merge_ab = affine && (parts + c / groups) * grid_rounds(pairs) <= CCFG_VK_LOOP_BUDGET;
    if (merge_ab) pc.flags |= CCFG_VK_GN_AFFINE_MERGE;
    pc.phase = 0;
    status = dispatch_groups(be, CCFG_VK_NN_GROUP_NORM, 7, ptrs, counts, &pc, pairs * parts, op);
    pc.phase = 1;
    if (!status)
        status = ccfg_vk_nn_dispatch(be, CCFG_VK_NN_GROUP_NORM, 7, ptrs, counts, &pc, pairs, 0, 1);
    /* phase 2: an invocation per element, or per (sample, channel) for (a, d) */
    pc.phase = 2;
    if (!status && !merge_ab)
        status = ccfg_vk_nn_dispatch(be, CCFG_VK_NN_GROUP_NORM, 7, ptrs, counts, &pc,
                                     affine ? (int64_t)batch * c : n, 0, 1);
    be->release(be, stats);     /* after the batch that uses it (backend_vk.c) */
    return status;
}

static int vk_group_norm(const ccfg_backend *be, int batch, int c, int hw, int groups, float eps,
                         const float *x, const float *in_bias, const float *gamma,
                         const float *beta, const float *film, int silu, float *y)
{
    return group_norm_any(be, batch, c, hw, groups, eps, x, in_bias, gamma, beta, film, silu, 0,
                          y);
}

/* nn.h group_norm_affine: group_norm's statistics (the same dispatches), then (a, d) per sample
 * and channel instead of the normalised tensor */
static int vk_group_norm_affine(const ccfg_backend *be, int batch, int c, int hw, int groups,
                                float eps, const float *x, const float *in_bias,
                                const float *gamma, const float *beta, const float *film,
                                float *ab)
{
    return group_norm_any(be, batch, c, hw, groups, eps, x, in_bias, gamma, beta, film, 0, 1,
                          ab);
}

/* CCFG_VULKAN_NORM_FOLD, three states: "0" the fold off everywhere, any other non-empty value on
 * everywhere, unset or empty each shader family's default: off for the SIMT tiled shaders
 * (float32, fp16), vk_nn.h CCFG_VK_COOP_NORM_FOLD_DEFAULT (0: off) for the cooperative-matrix
 * convolutions (CCFG_VULKAN_PRECISION=coop). Where it is off conv2d_packed_norm declines the
 * layer, so the UNet runs each GroupNorm(+SiLU) as its own pass that writes the normalised
 * tensor and the convolution reads it back.
 * - SIMT: off because those shaders are issue-bound: normalising every staged input (once per
 *   tap and output-channel tile) costs them more than the pass over memory it saves
 *   (docs/PERFORMANCE.md, "GroupNorm(+SiLU) folded into the tiled convolutions": 0.5-3.5 %
 *   slower on lavapipe, a loss predicted on the H200).
 * - coop: off too, by the H200 arithmetic of docs/PERFORMANCE.md, "GroupNorm(+SiLU) folded into
 *   the cooperative-matrix convolution": its staging is issue-bound as well (round 2's model),
 *   and the normalisation adds ~9 issue slots and 2 special-function instructions per staged
 *   input, 35-97 % more time per folded convolution against a memory pass of ~0.1 ms per
 *   forward at 48 rows; it pays only where bank conflicts bind the unpadded tiles. Its own
 *   constant, so that a GPU run can flip it alone.
 * Read at every call (a few per resnet, against a convolution's dispatch), so one process can
 * interleave the two paths (benchmarks/bench_vk_switches.py, benchmarks/coop_ab.py --fold).
 * coop: whether the layer would run on cooperative matrices. */
static int norm_fold_off(int coop)
{
    const char *v = getenv("CCFG_VULKAN_NORM_FOLD");
    if (!v || !*v) return !(coop && CCFG_VK_COOP_NORM_FOLD_DEFAULT);
    return !strcmp(v, "0");
}

/* nn.h conv2d_packed_norm: the tiled shaders (float32, and float16 in CCFG_VULKAN_PRECISION=fp16)
 * and the coop ones (CCFG_VULKAN_PRECISION=coop) stage every input as x a + d (then SiLU), flags
 * CCFG_VK_CONV_NORM(_SILU). Declined (*done = 0) by the layer's shape, the device's precision and
 * the switch above alone: at most BM / 2 output channels (the direct shader, every precision),
 * or the fold off for the layer's shader. batch 0: records nothing, so a
 * caller may ask before it computes (a, d). A residual (like conv2d_residual's) is added in the
 * first chunk's epilogue: a resnet's conv2 reads its normalised input and adds its skip in one
 * pass. */
static int vk_conv2d_packed_norm(const ccfg_backend *be, int batch, int cin, int h, int w,
                                 const float *x, const float *ab, int silu, int cout, int k,
                                 int stride, int pad0, int pad1, const float *weight,
                                 const float *packed, const float *bias, const float *residual,
                                 int accumulate, float *y, float *scratch, int64_t scratch_len,
                                 int *done)
{
    (void)scratch;
    (void)scratch_len;
    *done = 0;
    if (batch < 0 || cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 ||
        pad1 < 0 || h + pad0 + pad1 < k || w + pad0 + pad1 < k)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed_norm: invalid sizes");
    if (packed && !vk_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed_norm: the layer has no packed form "
                         "on this device now (its precision is fp32 or the layer stays float32): "
                         "its float16 weights are stale");
    const int precision = ccfg_vk_nn_precision(be);
    const int coop = precision == CCFG_VK_PRECISION_COOP || precision == CCFG_VK_PRECISION_COOP8;
    if (norm_fold_off(coop) || cout <= CCFG_VK_CONV_BM / 2 ||
        (!coop && precision != CCFG_VK_PRECISION_FP32 && precision != CCFG_VK_PRECISION_FP16))
        return CCFG_OK;
    if (!batch) {
        *done = 1;
        return CCFG_OK;
    }
    if (!ab || !x || !y)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed_norm: x, ab and y are needed");
    int status;
    if ((status = fits(2 * (int64_t)batch * cin, "conv2d_packed_norm"))) return status;
    if (residual) {
        if (accumulate)
            return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed_norm: a residual and "
                             "accumulate together");
        const int64_t ho = (h + pad0 + pad1 - k) / stride + 1;
        const int64_t wo = (w + pad0 + pad1 - k) / stride + 1;
        const int64_t ny = (int64_t)cout * batch * ho * wo;
        if (residual != y && (uintptr_t)residual < (uintptr_t)(y + ny) &&
            (uintptr_t)y < (uintptr_t)(residual + ny))
            return ccfg_fail(CCFG_EINVAL, "Vulkan nn conv2d_packed_norm: the residual overlaps y");
        /* as conv2d_residual: the copy and accumulate where the residual is y or is switched
         * off (CCFG_VULKAN_NO_CONV_RESIDUAL) */
        if (residual == y || conv_residual_off()) {
            if ((status = vk_copy(be, ny, residual, y))) return status;
            residual = NULL;
            accumulate = 1;
        }
    }
    if ((status = conv2d_any(be, batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight,
                             packed, bias, residual, accumulate, ab, silu, y)))
        return status;
    *done = 1;
    return CCFG_OK;
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
    /* an invocation loops over its inputs once per round of its grid-stride loop: long inputs go
     * in chunks within the budget, later chunks accumulating onto the first */
    const int64_t chunk = CCFG_VK_LOOP_BUDGET / grid_rounds(ny);
    ccfg_vk_push_linear pc = {.rows = (uint32_t)rows, .n_out = (uint32_t)out, .ld = (uint32_t)in};
    for (int64_t i0 = 0; i0 < in; i0 += chunk) {
        const float *ptrs[4] = {x + i0, w + i0, bias ? bias : w, y};
        const int64_t counts[4] = {(int64_t)rows * in - i0, (int64_t)in * out - i0,
                                   bias ? out : 0, ny};
        pc.n_in = (uint32_t)(in - i0 < chunk ? in - i0 : chunk);
        pc.flags = (silu_in ? 1u : 0u) | (bias && i0 == 0 ? 2u : 0u) | (i0 > 0 ? 4u : 0u);
        if ((status = ccfg_vk_nn_dispatch(be, CCFG_VK_NN_LINEAR, 4, ptrs, counts, &pc, ny, 0, 1)))
            return status;
    }
    return CCFG_OK;
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

/* a transfer command (the UNet's skip concatenations and residual copies): the driver's copy
 * path instead of a shader and a descriptor set; overlapping ranges through the eltwise shader */
static int vk_copy(const ccfg_backend *be, int64_t count, const float *x, float *y)
{
    ccfg_vk_push_eltwise pc = {0};
    int status, done = 0;
    if (x == y) return CCFG_OK;
    if ((status = fits(count, "copy"))) return status;
    if ((status = ccfg_vk_nn_copy(be, count, x, y, &done)) || done) return status;
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

/* Both attention shaders' key blocks: keys [k0, k0 + kn) per dispatch, `block` keys each (the
 * loop budget), the first (flags bit 0) starting from nothing and the last (bit 1) normalising;
 * between blocks each query's running maximum and sum wait in `state` (2 floats per query, device
 * scratch) and its unnormalised output in `out`. pc is the shader's push block, whose k0, kn and
 * flags fields the caller points to; `extra` is or-ed into every block's flags. */
static int attention_key_blocks(const ccfg_backend *be, int kernel, const float *q, const float *k,
                                const float *v, float *out, int64_t nqe, int64_t nke,
                                int64_t queries, int64_t nk, int64_t block, int64_t groups,
                                void *pc, uint32_t *k0f, uint32_t *knf, uint32_t *flagsf,
                                uint32_t extra)
{
    int status;
    float *state = NULL;
    if (block < nk) {
        if ((status = fits(2 * queries, "attention"))) return status;
        if ((status = ccfg_vk_nn_scratch(be, (size_t)(2 * queries) * sizeof(float), &state)))
            return status;
    }
    const float *ptrs[5] = {q, k, v, out, state ? state : out};
    const int64_t counts[5] = {nqe, nke, nke, nqe, state ? 2 * queries : 0};
    status = CCFG_OK;
    for (int64_t k0 = 0; k0 < nk && !status; k0 += block) {
        *k0f = (uint32_t)k0;
        *knf = (uint32_t)(nk - k0 < block ? nk - k0 : block);
        *flagsf = (k0 == 0 ? 1u : 0u) | (k0 + block >= nk ? 2u : 0u) | extra;
        status = dispatch_groups(be, kernel, 5, ptrs, counts, pc, groups, "attention");
    }
    be->release(be, state);     /* after the batch that uses it (backend_vk.c) */
    return status;
}

/* The lanes shader (nn_attention.comp, CCFG_VULKAN_ATTENTION=lanes): a few invocations per query
 * split its keys, each holding a whole head_dim accumulator (sizes checked by the caller) */
static int attention_lanes(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                           int head_dim, const float *q, const float *k, const float *v,
                           float *out, int64_t nqe, int64_t nke)
{
    /* Keys go through shared memory in tiles of tk keys, shared by the workgroup's 64 / lanes
     * queries. Keys are split between `lanes` invocations per query so that one invocation does
     * not loop over ~8k key x channel steps (long sequences spread over a GPU's lanes), but at
     * most tk / KB of them, so that a tile gives every lane a round of KB keys. Short sequences
     * keep one invocation per query (no merge cost). */
    const int64_t fit = CCFG_VK_ATTENTION_TILE / head_dim;     /* >= 7 keys */
    uint32_t lanes = 1;
    while (lanes < CCFG_VK_ATTENTION_WG && 2 * lanes * CCFG_VK_ATTENTION_KB <= fit &&
           ((int64_t)nk + lanes - 1) / lanes * head_dim > 8192)
        lanes *= 2;
    /* whole rounds of KB keys for every lane: no lane idles in a tile's last round */
    const int64_t round = (int64_t)CCFG_VK_ATTENTION_KB * lanes;
    const int64_t tk = fit >= round ? fit / round * round : fit;
    /* An invocation loops about 11 head_dim + 64 times besides its keys (reading its query,
     * clearing its accumulator, the merge); per tile, about tk x head_dim / 64 times to copy it
     * and 3 head_dim + 1 times per round of KB keys of its lanes: keys go in blocks of whole
     * tiles within the budget, one dispatch each; between blocks each query's running maximum
     * and sum wait in `state` (shaders/nn_attention.comp) */
    const int64_t per_tile = (tk * head_dim + CCFG_VK_ATTENTION_WG - 1) / CCFG_VK_ATTENTION_WG +
                             (tk + CCFG_VK_ATTENTION_KB * lanes - 1) /
                             (CCFG_VK_ATTENTION_KB * lanes) * (3 * (int64_t)head_dim + 1) + 2;
    const int64_t tiles = (CCFG_VK_LOOP_BUDGET - 11 * (int64_t)head_dim - 64) / per_tile;
    const int64_t per_block = (tiles > 1 ? tiles : 1) * tk;
    const int64_t block = per_block < nk ? per_block : nk;
    /* ceil(nq / (64 / lanes)) workgroups per (sample, head), 65535 per dispatch row, rows past
     * that */
    const int64_t queries = (int64_t)batch * heads * nq, per_group = CCFG_VK_ATTENTION_WG / lanes;
    const int64_t groups = (int64_t)batch * heads * ((nq + per_group - 1) / per_group);
    if (!queries) return CCFG_OK;
    ccfg_vk_push_attention pc = {.batch = (uint32_t)batch, .nq = (uint32_t)nq,
                                 .nk = (uint32_t)nk, .heads = (uint32_t)heads,
                                 .head_dim = (uint32_t)head_dim,
                                 .scale = 1.0f / sqrtf((float)head_dim), .lanes = lanes,
                                 .tk = (uint32_t)tk};
    return attention_key_blocks(be, CCFG_VK_NN_ATTENTION, q, k, v, out, nqe, nke, queries, nk,
                                block, groups, &pc, &pc.k0, &pc.kn, &pc.flags, 0u);
}

/* The tiled shader (nn_attention_tiled.glsl, the default; the pipeline with ceil(head_dim / DV)
 * chunks of columns): a workgroup per BR queries of one
 * (sample, head), S = Q K^T and O += P V per tile of BC keys as register-tiled GEMMs from shared
 * memory (sizes checked by the caller). mode (attention_mode): 1 32-query workgroups, 2 64-query,
 * 3 64-query with Q resident in shared memory (heads of at most DC channels); v1: O += P V in
 * whole DV-column chunks, as the merged shader did */
/* The tiled and the coop shaders' dispatches (one push block, ccfg_vk_push_attention_tiled): a
 * workgroup per br queries of one (sample, head), keys in blocks of `tiles` tiles of bc keys (at
 * least one tile; the caller's loop budget), through attention_key_blocks. */
static int attention_tiles(const ccfg_backend *be, int kernel, int batch, int nq, int nk,
                           int heads, int head_dim, int64_t br, int64_t bc, int64_t tiles,
                           const float *q, const float *k, const float *v, float *out,
                           int64_t nqe, int64_t nke, uint32_t extra)
{
    const int64_t per_block = (tiles > 1 ? tiles : 1) * bc;
    const int64_t block = per_block < nk ? per_block : nk;
    const int64_t queries = (int64_t)batch * heads * nq;
    const int64_t groups = (int64_t)batch * heads * ((nq + br - 1) / br);
    if (!queries) return CCFG_OK;
    ccfg_vk_push_attention_tiled pc = {.batch = (uint32_t)batch, .nq = (uint32_t)nq,
                                       .nk = (uint32_t)nk, .heads = (uint32_t)heads,
                                       .head_dim = (uint32_t)head_dim,
                                       .scale = 1.0f / sqrtf((float)head_dim)};
    return attention_key_blocks(be, kernel, q, k, v, out, nqe, nke, queries, nk, block, groups,
                                &pc, &pc.k0, &pc.kn, &pc.flags, extra);
}

static int attention_tiled(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                           int head_dim, const float *q, const float *k, const float *v,
                           float *out, int64_t nqe, int64_t nke, int mode, int v1)
{
    const int q64 = mode >= 2;
    const int64_t bc = CCFG_VK_ATTN_TILED_BC;
    const int64_t br = q64 ? CCFG_VK_ATTN_TILED_BR64 : CCFG_VK_ATTN_TILED_BR;
    const int64_t wg = q64 ? CCFG_VK_ATTN_TILED_WG64 : CCFG_VK_ATTN_TILED_WG;
    /* An invocation's loops per tile of keys, an upper bound whether or not the compiler unrolls
     * the constant-count ones: per slice of DC channels of S = Q K^T, 1 + DC x (BR + BC) / WG
     * staging loads + at most DC / 4 rounds of 4 channels; per chunk of DV columns of O += P V,
     * 1 + BC x DV / WG staging loads + BC keys; the softmax 16 and the tile loop 1. Besides the tiles, about 200 (loading
     * and storing 4 x 4 vec4 of state and output). Keys go in blocks of whole tiles within the
     * budget, one dispatch each; between blocks each query's running maximum and sum wait in
     * `state` (2 floats per query) and its unnormalised output in `out`. */
    const int64_t slices = (head_dim + CCFG_VK_ATTN_TILED_DC - 1) / CCFG_VK_ATTN_TILED_DC;
    const int64_t chunks = (head_dim + CCFG_VK_ATTN_TILED_DV - 1) / CCFG_VK_ATTN_TILED_DV;
    const int64_t per_tile = slices * (1 + CCFG_VK_ATTN_TILED_DC * (br + bc) / wg +
                                       (CCFG_VK_ATTN_TILED_DC + 3) / 4) +
                             chunks * (2 + bc * CCFG_VK_ATTN_TILED_DV / wg + bc) + 21;
    /* the resident Q's staging, once: DC x BR / WG loads */
    const int64_t tiles = (CCFG_VK_LOOP_BUDGET - 200 - CCFG_VK_ATTN_TILED_DC * br / wg) /
                          per_tile;     /* >= 75 (head_dim 256) */
    const int kernel = mode == 3 ? CCFG_VK_NN_ATTENTION_TILED1_Q64R
                                 : (q64 ? CCFG_VK_NN_ATTENTION_TILED_Q64
                                        : CCFG_VK_NN_ATTENTION_TILED) + (int)chunks - 1;
    return attention_tiles(be, kernel, batch, nq, nk, heads, head_dim, br, bc, tiles, q, k, v,
                           out, nqe, nke, v1 ? (uint32_t)CCFG_VK_ATTN_TILED_PV_WHOLE : 0u);
}

/* The cooperative-matrix shader (nn_attention_coop.glsl; precision: the device's
 * CCFG_VK_PRECISION_COOP or _COOP8, whose variant it runs; the pipeline with ceil(head_dim / DS)
 * slices): a workgroup per BR queries of one (sample, head), S = Q K^T and P V per tile of BC keys
 * on float16 matrices with float32 accumulators, the softmax and O in float32 (sizes checked by
 * the caller). */
static int attention_coop(const ccfg_backend *be, int precision, int batch, int nq, int nk,
                          int heads, int head_dim, const float *q, const float *k, const float *v,
                          float *out, int64_t nqe, int64_t nke)
{
    const int c8 = precision == CCFG_VK_PRECISION_COOP8;
    const int64_t br = c8 ? CCFG_VK_ATTN_COOP8_BR : CCFG_VK_ATTN_COOP_BR;
    const int64_t bc = c8 ? CCFG_VK_ATTN_COOP8_BC : CCFG_VK_ATTN_COOP_BC;
    const int64_t wg = c8 ? CCFG_VK_ATTN_COOP8_WG : CCFG_VK_ATTN_COOP_WG;
    const int64_t mnk = c8 ? CCFG_VK_COOP8_BK : CCFG_VK_COOP_BK;    /* the matrices' M = N = K */
    const int64_t ds = CCFG_VK_ATTN_COOP_DS;
    const int64_t slices = (head_dim + ds - 1) / ds;
    /* An invocation's loops per tile of keys, counting the unrolled ones too (an upper bound for
     * lavapipe's loop limit): per slice of K and of V, DS x BC / WG staging stores and
     * (DS / C) x (BC / C) matrix products; per C-column block of P V, C C / SG updates (<= C);
     * the softmax's 3 x BC keys; the tile loop 1 and a margin. Besides the tiles, Q's slices and
     * the state and output, about slices x (DS BR / WG + 2 DS) + 200. Keys go in blocks of
     * whole tiles within the budget, one dispatch each (attention_key_blocks). */
    const int64_t per_slice = ds * bc / wg + (ds / mnk) * (bc / mnk);
    const int64_t per_tile = slices * (2 * per_slice + (ds / mnk) * mnk) + 3 * bc + 16;
    const int64_t fixed = slices * (ds * br / wg + 2 * ds) + 200;
    const int64_t tiles = (CCFG_VK_LOOP_BUDGET - fixed) / per_tile;    /* >= 27 (head_dim 256) */
    const int kernel = (c8 ? CCFG_VK_NN_ATTENTION_COOP8 : CCFG_VK_NN_ATTENTION_COOP) +
                       (int)slices - 1;
    return attention_tiles(be, kernel, batch, nq, nk, heads, head_dim, br, bc, tiles, q, k, v,
                           out, nqe, nke, 0u);
}

/* CCFG_VULKAN_ATTENTION: the attention shader. "tiled" (unset or empty: the default) is the tiled
 * shader with 64-query workgroups where the device has their shared memory and 256 invocations and
 * there are more than 32 queries, else 32-query ones; the 64-query ones keep Q resident in shared
 * memory for heads of at most DC channels where the device has that much more. "tiled32" and
 * "tiled64" force either block size (tiled64 fails on a device without it); "tiled-v1" is the
 * merged shader (Q re-staged per key tile, O += P V in whole 64-column chunks) and "lanes" the
 * shader before the tiled one, kept for A/B comparisons. Read at every call, so one process can
 * compare them. *mode: 0 lanes, 1 tiled with 32-query workgroups, 2 with 64, 3 with 64 and Q
 * resident, 4 the cooperative-matrix shader (below); *v1: the merged shader's P V. */
static int attention_mode(const ccfg_backend *be, int nq, int head_dim, int *mode, int *v1)
{
    const char *env = getenv("CCFG_VULKAN_ATTENTION");
    uint32_t shared = 0, invocations = 0;
    ccfg_vk_nn_limits(be, &shared, &invocations);
    /* Under CCFG_VULKAN_PRECISION=coop (the device's precision COOP or COOP8) unset or empty, and
     * "coop", pick the cooperative-matrix shader (*mode 4) where the device has its shared memory
     * and invocations; "coop" raises where it cannot run, unset falls back to "tiled". Any other
     * value names a float32 shader, under every precision (for A/B). */
    const int prec = ccfg_vk_nn_precision(be);
    const int c8 = prec == CCFG_VK_PRECISION_COOP8;
    const int cprec = c8 || prec == CCFG_VK_PRECISION_COOP;
    const uint32_t cshared = c8 ? CCFG_VK_ATTN_COOP8_SHARED : CCFG_VK_ATTN_COOP_SHARED;
    const uint32_t cwg = c8 ? CCFG_VK_ATTN_COOP8_WG : CCFG_VK_ATTN_COOP_WG;
    const int coop_fits = cprec && shared >= cshared && invocations >= cwg;
    if (env && !strcmp(env, "coop")) {
        if (!coop_fits)
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_ATTENTION=coop: %s", !cprec ?
                             "the device's convolutions are not on cooperative matrices (set "
                             "CCFG_VULKAN_PRECISION=coop before the device opens)" :
                             "the device has too little shared memory or too few invocations per "
                             "workgroup for the cooperative-matrix attention (vk_nn.h "
                             "CCFG_VK_ATTN_COOP_SHARED)");
        *mode = 4;
        *v1 = 0;
        return CCFG_OK;
    }
    if ((!env || !*env) && coop_fits) {
        *mode = 4;
        *v1 = 0;
        return CCFG_OK;
    }
    const int fits64 = shared >= CCFG_VK_ATTN_TILED_SHARED64 &&
                       invocations >= CCFG_VK_ATTN_TILED_WG64;
    const int mode64 = fits64 && shared >= CCFG_VK_ATTN_TILED_SHARED_QR &&
                       head_dim <= CCFG_VK_ATTN_TILED_DC ? 3 : 2;
    *v1 = 0;
    if (!env || !*env || !strcmp(env, "tiled"))
        *mode = fits64 && nq > CCFG_VK_ATTN_TILED_BR ? mode64 : 1;
    else if (!strcmp(env, "tiled-v1")) {
        *mode = fits64 && nq > CCFG_VK_ATTN_TILED_BR ? 2 : 1;
        *v1 = 1;
    } else if (!strcmp(env, "tiled32")) *mode = 1;
    else if (!strcmp(env, "tiled64")) {
        if (!fits64)
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_ATTENTION=tiled64: the device has %u bytes "
                             "of shared memory and %u invocations per workgroup; the 64-query "
                             "shader needs %d and %d", shared, invocations,
                             CCFG_VK_ATTN_TILED_SHARED64, CCFG_VK_ATTN_TILED_WG64);
        *mode = mode64;
    } else if (!strcmp(env, "lanes")) *mode = 0;
    else
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_ATTENTION must be tiled, tiled32, tiled64, "
                         "tiled-v1 or lanes (or coop, under CCFG_VULKAN_PRECISION=coop), not "
                         "'%.40s'", env);
    return CCFG_OK;
}

static int vk_attention_qkv(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                            int head_dim, const float *q, const float *k, const float *v,
                            float *out, float *scratch, int64_t scratch_len)
{
    (void)scratch;
    (void)scratch_len;
    if (batch < 0 || nq < 1 || nk < 1 || heads < 1 || head_dim < 1)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: invalid sizes");
    if (head_dim > 256)     /* both shaders' widest head (MAX_HEAD_DIM, NVC x DV) */
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn attention: heads of %d channels; the shader "
                         "supports up to 256 (set attention_head_dim)", head_dim);
    const int64_t nqe = (int64_t)heads * head_dim * batch * nq;
    const int64_t nke = (int64_t)heads * head_dim * batch * nk;
    int status, mode = 1, v1 = 0;
    if ((status = fits(nqe, "attention")) || (status = fits(nke, "attention"))) return status;
    if ((status = attention_mode(be, nq, head_dim, &mode, &v1))) return status;
    if (mode == 4)
        return attention_coop(be, ccfg_vk_nn_precision(be), batch, nq, nk, heads, head_dim, q, k,
                              v, out, nqe, nke);
    return mode ? attention_tiled(be, batch, nq, nk, heads, head_dim, q, k, v, out, nqe, nke,
                                  mode, v1)
                : attention_lanes(be, batch, nq, nk, heads, head_dim, q, k, v, out, nqe, nke);
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
    /* `lanes` invocations share a column's channels when one alone would loop past the budget
     * (three passes over its share, two trees of log2(lanes) steps) */
    uint32_t lanes = 1;
    while (lanes < 128 && 3 * (((int64_t)c + lanes - 1) / lanes) + 64 > CCFG_VK_LOOP_BUDGET)
        lanes *= 2;
    if (3 * (((int64_t)c + lanes - 1) / lanes) + 64 > CCFG_VK_LOOP_BUDGET)
        return ccfg_fail(CCFG_EINVAL, "Vulkan nn layer_norm: %d channels is more than the device "
                         "can loop over", c);
    /* without an affine the x binding stands in for gamma and beta (never read) */
    const float *ptrs[4] = {x, affine ? gamma : x, affine ? beta : x, y};
    const int64_t counts[4] = {cols * c, affine ? c : 1, affine ? c : 1, cols * c};
    ccfg_vk_push_layer_norm pc = {.cols = (uint32_t)cols, .c = (uint32_t)c,
                                  .affine = (uint32_t)affine, .eps = eps, .lanes = lanes};
    const int64_t per_group = 128 / lanes;
    return dispatch_groups(be, CCFG_VK_NN_LAYER_NORM, 4, ptrs, counts, &pc,
                           (cols + per_group - 1) / per_group, "layer_norm");
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
    .conv2d_packed_len = vk_conv2d_packed_len,
    .conv2d_pack = vk_conv2d_pack,
    .conv2d_packed = vk_conv2d_packed,
    .conv2d_residual = vk_conv2d_residual,
    .group_norm_affine = vk_group_norm_affine,
    .conv2d_packed_norm = vk_conv2d_packed_norm,
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
