/* backend_vk_ops.c — the Vulkan backend's ops, each recorded as one or a few shader dispatches
 * into the device's batch (backend_vk.c): the solver's vector ops (axpbypcz, randn, the
 * non-finite watch), the guidance table (dot, direction_dots, combine, sld) and the exact mixture
 * (gmm). Shaders in shaders/; the *_f64 twins do the CPU backend's double arithmetic where the
 * device has float64. */
#ifndef CCFG_NO_VULKAN
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vk_backend.h"


/* count floats at each of the pointers -> buffers and element offsets; counts beyond the 32-bit
 * element indices of the shaders are refused (buffers never get that big: maxStorageBufferRange) */
int vkb_resolve_all(vk_dev *d, int64_t count, const float *const *ptrs, int np, vk_buffer **bufs,
                    uint32_t *offs, const char *op)
{
    int status;
    if (count < 0 || count > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s %s: %lld elements is out of range", d->name, op,
                         (long long)count);
    for (int i = 0; i < np; i++)
        if ((status = vkb_resolve(d, ptrs[i], (size_t)count * sizeof(float), &bufs[i], &offs[i])))
            return status;
    return CCFG_OK;
}

/* the pipeline doing REAL arithmetic: its _F64 twin where the device has float64 */
int vkb_pipe_real(const vk_dev *d, int p) { return d->f64 ? p + 1 : p; }

/* the float and the double bits of a coefficient (real.glsl's COEF) */
static void coef_bits(double v, float *f, uint32_t bits[2])
{
    *f = (float)v;
    memcpy(bits, &v, sizeof v);     /* little-endian: low word first, as packDouble2x32 takes */
}


int vkb_axpbypcz(const ccfg_backend *be, int64_t count, double a, const float *x, double b,
                 const float *y, double c, const float *z, float *out)
{
    vk_dev *d = be->ctx;
    /* an absent term binds x in its place: every binding must be a valid buffer */
    const float *ptrs[4] = {x, y ? y : x, z ? z : x, out};
    vk_buffer *bufs[4];
    uint32_t o[4];
    int status;
    if (!count) return CCFG_OK;
    if ((status = vkb_resolve_all(d, count, ptrs, 4, bufs, o, "axpbypcz"))) return status;
    push_axpbypcz pc = {.count = (uint32_t)count, .terms = (y ? 1u : 0u) | (z ? 2u : 0u),
                        .ox = o[0], .oy = o[1], .oz = o[2], .oo = o[3]};
    coef_bits(a, &pc.af, pc.ad);
    coef_bits(b, &pc.bf, pc.bd);
    coef_bits(c, &pc.cf, pc.cd);
    return vkb_dispatch(d, vkb_pipe_real(d, P_AXPBYPCZ), bufs, &pc, vkb_groups_for(count), 1);
}

/* a host array of doubles as a new buffer of the shaders' REAL (double or float) */
static int upload_reals(vk_dev *d, const double *v, size_t count, vk_buffer **out)
{
    const size_t bytes = count * (d->f64 ? sizeof(double) : sizeof(float));
    float *f = NULL;
    int status;
    *out = NULL;
    if ((status = vkb_new_buffer(d, bytes, out))) return status;
    if (d->f64) return vkb_write_buffer(*out, 0, v, bytes);
    if (!(f = malloc(bytes ? bytes : 1))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory converting coefficients");
    } else {
        for (size_t i = 0; i < count; i++) f[i] = (float)v[i];
        status = vkb_write_buffer(*out, 0, f, bytes);
    }
    free(f);
    return status;
}

/* out = the combination of the m inputs by the coefficient table cb (REAL [n][m], on the device) */
static int record_combine(vk_dev *d, int64_t n, int64_t dim, int m, const float *const *in,
                          vk_buffer *cb, float *out)
{
    vk_buffer *bufs[MAX_BINDINGS], *ob;
    uint32_t oo;
    int status;
    if ((status = vkb_resolve_all(d, n * dim, (const float *const *)&out, 1, &ob, &oo, "combine")))
        return status;
    /* 8 inputs per dispatch; later dispatches add to out */
    for (int q0 = 0; q0 < m; q0 += COMBINE_INPUTS) {
        const int mq = m - q0 < COMBINE_INPUTS ? m - q0 : COMBINE_INPUTS;
        push_combine pc = {.count = (uint32_t)(n * dim), .dim = (uint32_t)dim, .m = (uint32_t)mq,
                           .stride_c = (uint32_t)m, .first_c = (uint32_t)q0,
                           .accumulate = q0 > 0, .oo = oo};
        const float *ptrs[COMBINE_INPUTS];
        for (int q = 0; q < COMBINE_INPUTS; q++) ptrs[q] = in[q0 + (q < mq ? q : 0)];
        if ((status = vkb_resolve_all(d, n * dim, ptrs, COMBINE_INPUTS, bufs + 2, pc.oi, "combine")))
            return status;
        bufs[0] = ob;
        bufs[1] = cb;
        if ((status = vkb_dispatch(d, vkb_pipe_real(d, P_COMBINE), bufs, &pc, vkb_groups_for(n * dim), 1)))
            return status;
    }
    return CCFG_OK;
}

static int vk_combine(const ccfg_backend *be, int64_t n, int64_t dim, int m, const float *const *in,
                      const double *coef, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *cb = NULL;
    int status;
    if (n < 0 || dim < 0 || m < 1)
        return ccfg_fail(CCFG_EINVAL, "%s combine: needs n, dim >= 0 and m >= 1", d->name);
    if (!n || !dim) return CCFG_OK;
    if ((status = upload_reals(d, coef, (size_t)(n * m), &cb)) == CCFG_OK)
        status = record_combine(d, n, dim, m, in, cb, out);
    if (cb) vkb_release_buffer(cb);     /* after the batch: the dispatches read it */
    return status;
}

int vkb_clamp_rows(const ccfg_backend *be, int64_t n, int64_t dim, const float *x,
                   const double *bound, int divide, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *bufs[3], *bb = NULL;
    uint32_t o[2];
    float *host = NULL;
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "%s clamp_rows: n and dim must be >= 0", d->name);
    if (!n || !dim) return CCFG_OK;
    const float *ptrs[2] = {x, out};
    vk_buffer *xb[2];
    if ((status = vkb_resolve_all(d, n * dim, ptrs, 2, xb, o, "clamp_rows"))) return status;
    if (!(host = malloc((size_t)n * sizeof *host)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory for clamp bounds");
    for (int64_t i = 0; i < n; i++) host[i] = (float)bound[i];
    if ((status = vkb_new_buffer(d, (size_t)n * sizeof *host, &bb)) ||
        (status = vkb_write_buffer(bb, 0, host, (size_t)n * sizeof *host)))
        goto done;
    bufs[0] = xb[0];
    bufs[1] = bb;
    bufs[2] = xb[1];
    const push_clamp pc = {(uint32_t)(n * dim), (uint32_t)dim, divide != 0, o[0], o[1]};
    status = vkb_dispatch(d, P_CLAMP, bufs, &pc, vkb_groups_for(n * dim), 1);
done:
    if (bb) vkb_release_buffer(bb);
    free(host);
    return status;
}

int vkb_randn(const ccfg_backend *be, int64_t n, int64_t dim, uint64_t seed, uint64_t stream,
              int64_t first, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *ob;
    uint32_t oo;
    int status;
    if (n < 0 || dim < 0) return ccfg_fail(CCFG_EINVAL, "%s randn: n and dim must be >= 0", d->name);
    if (!n || !dim) return CCFG_OK;
    if ((status = vkb_resolve_all(d, n * dim, (const float *const *)&out, 1, &ob, &oo, "randn")))
        return status;
    const int64_t blocks = (dim + 3) / 4;
    /* the CPU puts (uint32_t)stream and (uint32_t)(first + i) in the counter: same wrap here */
    const push_randn pc = {(uint32_t)n, (uint32_t)dim, (uint32_t)blocks, (uint32_t)seed,
                           (uint32_t)(seed >> 32), (uint32_t)stream, (uint32_t)first, oo};
    return vkb_dispatch(d, vkb_pipe_real(d, P_RANDN), &ob, &pc, vkb_groups_for(n * blocks), 1);
}

/* Record the dots shader over all rows (split where n exceeds the y-dispatch limit). */
static int record_dots(vk_dev *d, vk_buffer *const *bufs, int64_t n, int64_t dim, uint32_t groups,
                       uint32_t mode, uint32_t base, const uint32_t o[3])
{
    int status;
    if (groups == 1 && dim <= DOTS_ROW_ALONE) {     /* short rows: an invocation each */
        const push_dots pc = {(uint32_t)dim, 1, mode, (uint32_t)n, 0, base, o[0], o[1], o[2], 1};
        return vkb_dispatch(d, vkb_pipe_real(d, P_DOTS), bufs, &pc,
                        (uint32_t)((n + LOCAL_SIZE - 1) / LOCAL_SIZE), 1);
    }
    for (int64_t row0 = 0; row0 < n; row0 += MAX_GROUPS) {
        const int64_t rows = n - row0 < MAX_GROUPS ? n - row0 : MAX_GROUPS;
        const push_dots pc = {(uint32_t)dim, groups, mode, (uint32_t)n, (uint32_t)row0, base,
                              o[0], o[1], o[2], 0};
        if ((status = vkb_dispatch(d, vkb_pipe_real(d, P_DOTS), bufs, &pc, groups, (uint32_t)rows)))
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
    if ((status = vkb_resolve_all(d, n * dim, ptrs, 2, bufs, o, "dot"))) return status;
    bufs[2] = bufs[0];
    o[2] = o[0];
    const uint32_t groups = dot_groups(dim);
    const size_t bytes = (size_t)n * groups * (d->f64 ? sizeof(double) : sizeof(float));
    if (!(part = malloc(bytes))) return ccfg_fail(CCFG_ENOMEM, "out of memory for dot partials");
    if ((status = vkb_new_buffer(d, bytes, &pb)) != CCFG_OK) goto fail;
    bufs[3] = pb;
    if ((status = record_dots(d, bufs, n, dim, groups, 0, 0, o)) != CCFG_OK) goto fail;
    if ((status = vkb_read_buffer(part, pb, 0, bytes)) != CCFG_OK) goto fail;
    sum_partials(d, part, 0, n, groups, out);
fail:
    if (pb) vkb_release_buffer(pb);
    free(part);
    return status;
}

/* The direction_dots partials, recorded into a new buffer *pb: one block of 3 planes
 * [3][n][groups] per negative (one for k = 0, where only pp exists), block j holding ‖D_p‖²,
 * ‖D_n_j‖², <D_n_j, D_p> (coef.glsl reads this layout). */
static int record_direction_dots(vk_dev *d, int64_t n, int64_t dim, const float *u,
                                 const float *p, int k, const float *const *neg, vk_buffer **pb,
                                 uint32_t *groups_out, size_t *bytes_out)
{
    vk_buffer *bufs[4];
    const float *ptrs[2] = {u, p};
    uint32_t o[3] = {0, 0, 0};
    int status;
    *pb = NULL;
    if ((status = vkb_resolve_all(d, n * dim, ptrs, 2, bufs, o, "direction_dots"))) return status;
    bufs[2] = bufs[1];
    o[2] = o[1];
    const uint32_t groups = dot_groups(dim);
    const size_t plane = (size_t)n * groups, blocks = k ? (size_t)k : 1;
    const size_t bytes = blocks * 3 * plane * (d->f64 ? sizeof(double) : sizeof(float));
    if (blocks * 3 * plane > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s direction_dots: too many samples and negatives", d->name);
    if ((status = vkb_new_buffer(d, bytes, pb)) != CCFG_OK) return status;
    bufs[3] = *pb;
    if (k == 0 && (status = record_dots(d, bufs, n, dim, groups, 1, 0, o)) != CCFG_OK) return status;
    for (int q = 0; q < k; q++) {
        /* every negative's pass also yields ‖D_p‖², as on the CPU; the first one is kept */
        if ((status = vkb_resolve_all(d, n * dim, &neg[q], 1, &bufs[2], &o[2], "direction_dots")) ||
            (status = record_dots(d, bufs, n, dim, groups, 2, (uint32_t)(q * 3 * plane), o)))
            return status;
    }
    *groups_out = groups;
    *bytes_out = bytes;
    return CCFG_OK;
}

static int vk_direction_dots(const ccfg_backend *be, int64_t n, int64_t dim, const float *u,
                             const float *p, int k, const float *const *neg, double *pp, double *nn,
                             double *np)
{
    vk_dev *d = be->ctx;
    vk_buffer *pb = NULL;
    void *part = NULL;
    uint32_t groups = 0;
    size_t bytes = 0;
    int status;
    if (n < 0 || dim < 0 || k < 0)
        return ccfg_fail(CCFG_EINVAL, "%s direction_dots: n, dim and k must be >= 0", d->name);
    if (!n) return CCFG_OK;
    if ((status = record_direction_dots(d, n, dim, u, p, k, neg, &pb, &groups, &bytes))) goto fail;
    const size_t plane = (size_t)n * groups;
    if (!(part = malloc(bytes))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory for direction_dots partials");
        goto fail;
    }
    if ((status = vkb_read_buffer(part, pb, 0, bytes)) != CCFG_OK) goto fail;
    sum_partials(d, part, 0, n, groups, pp);
    for (int q = 0; q < k; q++) {
        sum_partials(d, part, (size_t)q * 3 * plane + plane, n, groups, nn + (int64_t)q * n);
        sum_partials(d, part, (size_t)q * 3 * plane + 2 * plane, n, groups, np + (int64_t)q * n);
    }
fail:
    if (pb) vkb_release_buffer(pb);
    free(part);
    return status;
}

/* a rule's state on the device (guide ops reals_*, below) */
static int resolve_reals(vk_dev *d, const float *p, int64_t count, vk_buffer **buf, const char *op);

/* coef.glsl's pipeline for `stage`: stage 1 (Perp-Neg's batch sums) needs the shader with the
 * shared arrays and barriers; the others run in the barrier-free build (coef_nb), which lavapipe
 * runs without coroutines (CCFG_VULKAN_COEF_BARRIERS=1: all in the old one) */
static int coef_pipe(const vk_dev *d, uint32_t stage)
{
    return vkb_pipe_real(d, stage == 1 || d->coef_barriers ? P_COEF : P_COEF_NB);
}

/* Where a sample has several partials (groups > 1): fused (flag 4), the stages that read a
 * reduction sum its partials themselves, in stage 0's order, and stage 0 is not recorded; one
 * dispatch fewer, the same values bit for bit. CCFG_VULKAN_COEF_UNFUSED=1 records stage 0 into
 * *rb (a new buffer of pc->count reals) as before. Returns a status; *rb stays NULL if fused. */
static int record_partial_sums(vk_dev *d, push_coef *pc, vk_buffer *bufs[4], vk_buffer **rb)
{
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    int status;
    *rb = NULL;
    if (pc->groups <= 1) return CCFG_OK;         /* the partials are the reductions */
    if (!d->coef_unfused) {
        pc->flags |= 4u;
        return CCFG_OK;
    }
    if ((status = vkb_new_buffer(d, (size_t)pc->count * real, rb))) return status;
    bufs[1] = *rb;
    pc->stage = 0;
    return vkb_dispatch(d, coef_pipe(d, 0), bufs, pc, vkb_groups_for(pc->count), 1);
}

/* The table *cb (REAL [n][2 + k]) of a form with reductions (CCFG, Perp-Neg): the direction_dots
 * partials and coef.glsl's stages 0-2, recorded into the open batch. */
static int record_reduced_table(vk_dev *d, const ccfg_coef_form *form, int64_t n, int64_t dim,
                                const float *u, const float *p, int k, const float *const *neg,
                                vk_buffer **cb)
{
    vk_buffer *pb = NULL, *rb = NULL, *gb = NULL, *bufs[4];
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    const int global = form->family == CCFG_FORM_PERPENDICULAR && form->batch_global && k > 0;
    uint32_t groups = 0;
    size_t bytes = 0;
    int status;
    if ((status = record_direction_dots(d, n, dim, u, p, k, neg, &pb, &groups, &bytes))) goto fail;
    const uint32_t slices = (uint32_t)((n + 128 * 256 - 1) / (128 * 256));   /* coef.glsl SLICE */
    push_coef pc = {.n = (uint32_t)n, .k = (uint32_t)k, .groups = groups,
                    .count = (uint32_t)((k ? (size_t)k : 1) * 3 * (size_t)n),
                    .family = (uint32_t)form->family,
                    .flags = (form->naive_positive ? 1u : 0u) | (global ? 2u : 0u),
                    .slices = slices};
    coef_bits(form->w, &pc.wf, pc.wd);
    coef_bits(form->w_n, &pc.wnf, pc.wnd);
    coef_bits(form->tau_eff, &pc.tauf, pc.taud);
    if ((status = vkb_new_buffer(d, (size_t)n * (size_t)(2 + k) * real, cb)) ||
        (global && (status = vkb_new_buffer(d, (size_t)k * slices * 2 * real, &gb))))
        goto fail;
    /* unused bindings get any valid buffer; Red is the partials themselves unless stage 0 runs */
    bufs[0] = pb;
    bufs[1] = pb;
    bufs[2] = *cb;
    bufs[3] = gb ? gb : pb;
    if ((status = record_partial_sums(d, &pc, bufs, &rb))) goto fail;
    if (global) {
        pc.stage = 1;
        if ((status = vkb_dispatch(d, coef_pipe(d, 1), bufs, &pc, slices, (uint32_t)k)))
            goto fail;
    }
    pc.stage = 2;
    status = vkb_dispatch(d, coef_pipe(d, 2), bufs, &pc, vkb_groups_for(n), 1);
fail:
    /* released after the batch has run: the dispatches read them (*cb is the caller's) */
    if (pb) vkb_release_buffer(pb);
    if (rb) vkb_release_buffer(rb);
    if (gb) vkb_release_buffer(gb);
    return status;
}

/* DNG's table *cb (CCFG_FORM_POSTERIOR) from its state log p alone: coef.glsl stage 2, family 3,
 * the state bound as Glob (Part and Red unused: no reductions) */
static int record_posterior_table(vk_dev *d, const ccfg_coef_form *form, int64_t n, int k,
                                  vk_buffer **cb)
{
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    vk_buffer *sb, *bufs[4];                   /* sb: the state's buffer, not ours to release */
    int status;
    if ((status = resolve_reals(d, form->state, (int64_t)k * n, &sb, "guide")) ||
        (status = vkb_new_buffer(d, (size_t)n * (size_t)(2 + k) * real, cb)))
        return status;
    push_coef pc = {.n = (uint32_t)n, .k = (uint32_t)k, .stage = 2,
                    .family = CCFG_FORM_POSTERIOR};
    coef_bits(form->w, &pc.wf, pc.wd);
    coef_bits(form->w_n, &pc.wnf, pc.wnd);
    bufs[0] = bufs[1] = bufs[3] = sb;
    bufs[2] = *cb;
    return vkb_dispatch(d, coef_pipe(d, 2), bufs, &pc, vkb_groups_for(n), 1);
}

/* Guidance with a coefficient form (ccfg.h): the table made on the device (from the
 * direction_dots reductions, or from DNG's state) and combine reading it, all recorded into the
 * open batch. Nothing is read back, so a step of CCFG, Perp-Neg or DNG waits for the device no
 * more than NegatedCFG's. */
static int vk_combine_form(const ccfg_backend *be, const ccfg_coef_form *form, int64_t n,
                           int64_t dim, const float *u, const float *p, int k,
                           const float *const *neg, float *out)
{
    vk_dev *d = be->ctx;
    vk_buffer *cb = NULL;
    const int m = 2 + k;
    int status;
    if (n < 0 || dim < 0 || k < 0 || k > CCFG_MAX_RULE_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "%s guide: needs n, dim >= 0 and 0..%d negatives", d->name,
                         CCFG_MAX_RULE_NEGATIVES);
    if (form->family != CCFG_FORM_CONTRASTIVE && form->family != CCFG_FORM_PERPENDICULAR &&
        form->family != CCFG_FORM_POSTERIOR)
        return ccfg_fail(CCFG_EINTERNAL, "%s guide: no coefficient form %d", d->name, form->family);
    if (!n || !dim) return CCFG_OK;
    if ((size_t)n * (size_t)m > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s guide: too many samples and negatives", d->name);
    status = form->family == CCFG_FORM_POSTERIOR
                 ? record_posterior_table(d, form, n, k, &cb)
                 : record_reduced_table(d, form, n, dim, u, p, k, neg, &cb);
    if (!status) {
        const float *in[2 + CCFG_MAX_RULE_NEGATIVES];
        in[0] = u;
        in[1] = p;
        for (int j = 0; j < k; j++) in[2 + j] = neg[j];
        status = record_combine(d, n, dim, m, in, cb, out);
    }
    if (cb) vkb_release_buffer(cb);     /* after the batch: the dispatches read it */
    return status;
}

/* ------------------------------------------------------------------------- */
/* a rule's state in the shaders' REAL (guide ops reals_*): DNG's log p stays on the device */

/* the buffer of `count` reals at device address p, which must start its buffer (be->alloc
 * gives each allocation a buffer of its own: coef.glsl binds the state at element 0) */
static int resolve_reals(vk_dev *d, const float *p, int64_t count, vk_buffer **buf, const char *op)
{
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    uint32_t at = 0;
    int status;
    if (!p || count < 0 || (uint64_t)count > UINT32_MAX)
        return ccfg_fail(CCFG_EINTERNAL, "%s %s: no state of %lld reals", d->name, op,
                         (long long)count);
    if ((status = vkb_resolve(d, p, (size_t)(count ? count : 1) * real, buf, &at))) return status;
    if (at != 0)
        return ccfg_fail(CCFG_EINTERNAL, "%s %s: a rule's state must start its buffer", d->name, op);
    return CCFG_OK;
}

static int vk_reals_alloc(const ccfg_backend *be, int64_t count, const double *init, float **out,
                          int64_t *floats)
{
    vk_dev *d = be->ctx;
    const size_t real = d->f64 ? sizeof(double) : sizeof(float);
    float *f = NULL;
    int status;
    *out = NULL;
    *floats = 0;
    if (count < 1 || (uint64_t)count > UINT32_MAX)
        return ccfg_fail(CCFG_EINVAL, "%s: a state of %lld reals", d->name, (long long)count);
    const size_t bytes = (size_t)count * real;
    if ((status = be->alloc(be, bytes, out))) return status;
    if (d->f64) {
        status = be->upload(be, *out, init, bytes);
    } else if (!(f = malloc(bytes))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory initialising a guidance state");
    } else {
        for (int64_t q = 0; q < count; q++) f[q] = (float)init[q];
        status = be->upload(be, *out, f, bytes);
    }
    free(f);
    if (status) {
        be->release(be, *out);
        *out = NULL;
        return status;
    }
    *floats = (int64_t)(bytes / sizeof(float));
    return CCFG_OK;
}

static int vk_reals_read(const ccfg_backend *be, const float *src, int64_t count, double *out)
{
    vk_dev *d = be->ctx;
    float *f = NULL;
    int status;
    if (count < 1) return CCFG_OK;
    if (d->f64) return be->download(be, out, src, (size_t)count * sizeof(double));
    if (!(f = malloc((size_t)count * sizeof *f)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory reading a guidance state");
    if (!(status = be->download(be, f, src, (size_t)count * sizeof *f)))
        for (int64_t q = 0; q < count; q++) out[q] = f[q];
    free(f);
    return status;
}

/* DNG's update on the device: the direction_dots partials, their sums (coef.glsl stage 0) and
 * the update of the state (stage 3), recorded into the open batch; nothing is read back. */
static int vk_log_posterior_update(const ccfg_backend *be, const ccfg_log_posterior_update *up,
                                   int64_t n, int64_t dim, const float *u, const float *p, int k,
                                   const float *const *neg, float *state)
{
    vk_dev *d = be->ctx;
    vk_buffer *pb = NULL, *rb = NULL, *sb = NULL, *bufs[4];
    uint32_t groups = 0;
    size_t bytes = 0;
    int status;
    if (n < 0 || dim < 0 || k < 0 || k > CCFG_MAX_RULE_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "%s posterior update: needs n, dim >= 0 and 0..%d "
                         "negatives", d->name, CCFG_MAX_RULE_NEGATIVES);
    if (!n || !k) return CCFG_OK;
    if ((status = resolve_reals(d, state, (int64_t)k * n, &sb, "posterior update"))) return status;
    if ((status = record_direction_dots(d, n, dim, u, p, k, neg, &pb, &groups, &bytes))) goto fail;
    push_coef pc = {.n = (uint32_t)n, .k = (uint32_t)k, .groups = groups,
                    .count = (uint32_t)((size_t)k * 3 * (size_t)n), .family = 0};
    coef_bits(up->b2, &pc.wf, pc.wd);
    coef_bits(up->b1, &pc.wnf, pc.wnd);
    coef_bits(up->t, &pc.tauf, pc.taud);
    coef_bits(up->offset, &pc.offf, pc.offd);
    coef_bits(up->two_var, &pc.varf, pc.vard);
    coef_bits(up->lo, &pc.lof, pc.lod);
    coef_bits(up->hi, &pc.hif, pc.hid);
    bufs[0] = pb;
    bufs[1] = pb;                       /* Red: the partials themselves unless stage 0 runs */
    bufs[2] = pb;                       /* Coef: unused by stages 0 and 3 */
    bufs[3] = sb;
    if ((status = record_partial_sums(d, &pc, bufs, &rb))) goto fail;
    pc.stage = 3;
    status = vkb_dispatch(d, coef_pipe(d, 3), bufs, &pc, vkb_groups_for(k * n), 1);
fail:
    /* released after the batch has run: the dispatches read them */
    if (pb) vkb_release_buffer(pb);
    if (rb) vkb_release_buffer(rb);
    return status;
}

/* the watch flag back to "nothing seen", ordered after everything recorded */
int vkb_fill_flag(vk_dev *d)
{
    const uint32_t none = 0xFFFFFFFFu;
    return vkb_write_buffer(d->flag, 0, &none, sizeof none);
}

int vkb_watch_finite(const ccfg_backend *be, int64_t count, const float *x, int tag)
{
    vk_dev *d = be->ctx;
    vk_buffer *bufs[2];
    uint32_t o[1] = {0};
    int status;
    if (!count) return CCFG_OK;
    if (tag < 0) return ccfg_fail(CCFG_EINVAL, "%s watch_finite: tag must be >= 0", d->name);
    if ((status = vkb_resolve_all(d, count, (const float *const *)&x, 1, bufs, o, "watch_finite")))
        return status;
    bufs[1] = d->flag;
    const push_finite pc = {(uint32_t)count, o[0], (uint32_t)tag};
    return vkb_dispatch(d, P_FINITE, bufs, &pc, vkb_groups_for(count), 1);
}

int vkb_first_nonfinite(const ccfg_backend *be, int *tag)
{
    vk_dev *d = be->ctx;
    uint32_t v;
    int status;
    *tag = -1;
    if ((status = vkb_read_buffer(&v, d->flag, 0, sizeof v))) return status;
    if (v == 0xFFFFFFFFu) return CCFG_OK;
    *tag = (int)v;
    return vkb_fill_flag(d);
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
    if ((status = vkb_resolve_all(d, count, ptrs, 5, bufs, o, "sld"))) return status;
    push_sld pc = {.count = (uint32_t)count, .flags = (update ? 1u : 0u) | (apply ? 2u : 0u),
                   .ou = o[0], .op = o[1], .os = o[2], .on = o[3], .oo = o[4]};
    coef_bits(w, &pc.wf, pc.wd);
    coef_bits(s_s, &pc.ssf, pc.ssd);
    coef_bits(thr, &pc.thrf, pc.thrd);
    coef_bits(s_m, &pc.smf, pc.smd);
    coef_bits(beta_m, &pc.betaf, pc.betad);
    return vkb_dispatch(d, vkb_pipe_real(d, P_SLD), bufs, &pc, vkb_groups_for(count), 1);
}

/* ------------------------------------------------------------------------- */
/* the exact Gaussian mixture (shaders/gmm_eps.glsl) */

typedef struct {
    vk_buffer *U, *UT, *mask, *scratch;     /* means and variances reach it per level (bias) */
    int64_t chunk;                  /* rows per dispatch (scratch holds their w_k or lp_k) */
    int per_row;                    /* mode 1 of the shader: an invocation per row */
    double *bias;                   /* [3 + K + 2 K D] host staging of the level (gmm_eps.glsl) */
    /* d->gmm_near: the condition ids of the last call, on the device and on the host; the
     * sampler passes the same ids every step, so a step compares instead of uploading */
    vk_buffer *cond;
    int32_t *cond_host;
    int64_t cond_rows;
} vk_gmm;

static void vk_gmm_free(const ccfg_backend *be, void *handle)
{
    vk_gmm *m = handle;
    vk_buffer *bs[4];
    (void)be;
    if (!m) return;
    bs[0] = m->U; bs[1] = m->UT; bs[2] = m->mask; bs[3] = m->scratch;
    for (int i = 0; i < 4; i++)
        if (bs[i]) vkb_release_buffer(bs[i]);
    if (m->cond) vkb_release_buffer(m->cond);
    free(m->cond_host);
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
    /* an invocation of gmm_eps.glsl loops about 2 K ceil(D / 128) (D + 1) times with full
     * covariances, 2 K ceil(D / 128) with diagonal ones, 3 K D for small rows (an invocation per
     * row, D <= 64), plus 8 K + a few for the reductions: past 3/4 of a driver's loop limit
     * (the count misses short loops: lavapipe was wrong from K = 100, D = 160 on, counted 65.4k,
     * right at K = 90, counted 58.9k), refused rather than silently wrong */
    const int64_t tiles = (D + 127) / 128;
    const int64_t loops = (gm->evecs ? 2 * K * tiles * (D + 1) : D <= 64 ? 3 * K * D
                                                                          : 2 * K * tiles) +
                          8 * K + 256;
    if (d->loop_limit && loops > (int64_t)d->loop_limit / 4 * 3)
        return ccfg_fail(CCFG_EINVAL, "%s: the exact mixture with K = %lld components of "
                         "dimension %lld (%s covariances) loops past this driver's limit of %u "
                         "iterations per invocation; run it on the CPU (device=\"cpu\")",
                         d->name, (long long)K, (long long)D, gm->evecs ? "full" : "diagonal",
                         d->loop_limit);
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
        if (cap > d->max_storage_buffer_range) cap = d->max_storage_buffer_range;
        m->chunk = (int64_t)(cap / per_row);
        if (m->chunk < 1)
            status = ccfg_fail(CCFG_EINVAL, "%s: a full-covariance mixture with K = %lld, dim = "
                               "%lld needs more scratch per sample than one binding holds",
                               d->name, (long long)K, (long long)D);
        if (m->chunk > MAX_GROUPS) m->chunk = MAX_GROUPS;
        if (status || (status = vkb_new_buffer(d, (size_t)m->chunk * per_row, &m->scratch))) goto fail;
    } else if (D <= 64 && d->gmm_near && K <= GMM_KPRIV) {
        /* small rows: an invocation each, their K (mode 2: 2 K) values in the invocation's own
         * array (gmm_eps.glsl KPRIV): no scratch, so no chunks but the dispatch's group limit */
        m->per_row = 1;
        m->chunk = (int64_t)MAX_GROUPS * LOCAL_SIZE;
    } else if (D <= 64) {
        /* small rows: an invocation each, log-likelihoods of `chunk` rows in the scratch */
        m->per_row = 1;
        m->chunk = (int64_t)(((size_t)8 << 20) / ((size_t)K * real));
        if (m->chunk > (int64_t)MAX_GROUPS * LOCAL_SIZE) m->chunk = (int64_t)MAX_GROUPS * LOCAL_SIZE;
        if ((status = vkb_new_buffer(d, (size_t)m->chunk * (size_t)K * real, &m->scratch))) goto fail;
    } else {
        m->chunk = MAX_GROUPS;
    }
    const size_t nm = (size_t)gm->n_concepts * (size_t)K;
    if (!(mask = malloc((nm ? nm : 1) * sizeof *mask))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory loading the mixture");
        goto fail;
    }
    for (size_t i = 0; i < nm; i++) mask[i] = gm->concept_mask[i];
    if ((status = vkb_new_buffer(d, (nm ? nm : 1) * sizeof *mask, &m->mask)) ||
        (status = vkb_write_buffer(m->mask, 0, mask, nm * sizeof *mask)))
        goto fail;
    *handle = m;
fail:
    free(t);
    free(mask);
    if (status) vk_gmm_free(be, m);
    return status;
}

/* The sampler stacks the same x once per condition (blocks of n rows, each its own condition).
 * x is device memory, so the blocks are guessed from the host's cond: nb runs of one condition
 * each, all of one length, 2 <= nb <= 2 + CCFG_MAX_RULE_NEGATIVES; 1 otherwise (per-sample
 * conditions, one condition). A wrong guess costs only the comparison: the shader shares a
 * row's densities only with rows whose x is bit for bit the same. */
static int stacked_blocks(int64_t rows, const int32_t *cond)
{
    int64_t len = 1;
    while (len < rows && cond[len] == cond[0]) len++;
    if (len == rows || rows % len) return 1;
    const int64_t nb = rows / len;
    if (nb > 2 + CCFG_MAX_RULE_NEGATIVES) return 1;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = b * len; r < (b + 1) * len; r++)
            if (cond[r] != cond[b * len] || (b && cond[b * len] == cond[(b - 1) * len])) return 1;
    return (int)nb;
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
    if ((status = vkb_resolve_all(d, rows * D, ptrs, 2, bufs, o, "gmm_eps"))) return status;
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
    if ((status = upload_reals(d, m->bias, (size_t)(3 + K + 2 * K * D), &lvl))) goto fail;
    const size_t cbytes = (size_t)rows * sizeof *cond;
    if (d->gmm_near && m->cond && m->cond_rows == rows && !memcmp(m->cond_host, cond, cbytes)) {
        cb = m->cond;               /* the same ids as the last call: already there */
    } else {
        /* a new buffer, never a write into the old one (a batch in flight may still read it:
         * that write would wait for the device); the old one is freed once its batch ran */
        if ((status = vkb_new_buffer(d, cbytes, &cb)) ||
            (status = vkb_write_buffer(cb, 0, cond, cbytes)))
            goto fail;
        if (d->gmm_near) {
            int32_t *h = realloc(m->cond_host, cbytes);
            if (h) {                /* without the host copy the next call just uploads again */
                memcpy(h, cond, cbytes);
                if (m->cond) vkb_release_buffer(m->cond);
                m->cond = cb;
                m->cond_host = h;
                m->cond_rows = rows;
            } else {
                free(m->cond_host);
                m->cond_host = NULL;
                if (m->cond) vkb_release_buffer(m->cond);
                m->cond = NULL;
                m->cond_rows = 0;
            }
        }
    }
    /* unused bindings (no rotations, no scratch) get any valid buffer */
    bufs[2] = m->U ? m->U : m->mask;
    bufs[3] = m->UT ? m->UT : m->mask;
    bufs[4] = lvl;
    bufs[5] = cb;
    bufs[6] = m->mask;
    bufs[7] = m->scratch ? m->scratch : m->mask;
    /* mode 2 (rows stacked per condition, gmm_eps.glsl): an invocation loops about K D + K for
     * its row, then per block D + K + K D, and 3 K D + 4 K more for a row on its own: within 3/4
     * of a driver's loop limit, else mode 1 */
    int nb = m->per_row && d->gmm_sharing ? stacked_blocks(rows, cond) : 1;
    if (nb > 1 && d->loop_limit &&
        K * D + K + nb * (D + K + K * D + 3 * K * D + 4 * K) + 256 > (int64_t)d->loop_limit / 4 * 3)
        nb = 1;
    if (nb > 1) {
        /* the unique rows of block 0, chunk / 2 per dispatch (2 K reals of scratch each; none
         * with d->gmm_near and K <= GMM_KPRIV, then chunk) */
        const int64_t mr = rows / nb, per = m->scratch ? m->chunk / 2 : m->chunk;
        for (int64_t u0 = 0; u0 < mr; u0 += per) {
            const int64_t nr = mr - u0 < per ? mr - u0 : per;
            const push_gmm pc = {(uint32_t)D, (uint32_t)K, 0, 2, (uint32_t)nr, o[0], o[1],
                                 (uint32_t)u0, (uint32_t)nb, (uint32_t)mr, (uint32_t)d->gmm_near};
            if ((status = vkb_dispatch(d, vkb_pipe_real(d, P_GMM), bufs, &pc,
                                       (uint32_t)((nr + LOCAL_SIZE - 1) / LOCAL_SIZE), 1)))
                goto fail;
        }
    }
    for (int64_t r0 = 0; nb == 1 && r0 < rows; r0 += m->chunk) {
        const int64_t nr = rows - r0 < m->chunk ? rows - r0 : m->chunk;
        const push_gmm pc = {(uint32_t)D, (uint32_t)K, m->U != NULL, (uint32_t)m->per_row,
                             (uint32_t)nr, o[0], o[1], (uint32_t)r0, 1, 0, (uint32_t)d->gmm_near};
        const uint32_t groups = m->per_row ? (uint32_t)((nr + LOCAL_SIZE - 1) / LOCAL_SIZE) : (uint32_t)nr;
        if ((status = vkb_dispatch(d, vkb_pipe_real(d, P_GMM), bufs, &pc, groups, 1))) goto fail;
    }
fail:
    if (lvl) vkb_release_buffer(lvl);
    if (cb && cb != m->cond) vkb_release_buffer(cb);
    return status;
}

const ccfg_guide_ops vkb_guide_ops = {
    .dot = vk_dot,
    .direction_dots = vk_direction_dots,
    .combine = vk_combine,
    .sld = vk_sld,
    .combine_form = vk_combine_form,
    .reals_alloc = vk_reals_alloc,
    .reals_read = vk_reals_read,
    .log_posterior_update = vk_log_posterior_update,
};

const ccfg_guide_ops vkb_guide_ops_host_coefficients = {
    .dot = vk_dot,
    .direction_dots = vk_direction_dots,
    .combine = vk_combine,
    .sld = vk_sld,
};

const ccfg_gmm_ops vkb_gmm_ops = {
    .load = vk_gmm_load,
    .free = vk_gmm_free,
    .eps = vk_gmm_eps,
};

#endif /* CCFG_NO_VULKAN */
