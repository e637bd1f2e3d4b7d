/* backend_cpu.c — the CPU backend: host memory, OpenMP loops, double accumulation. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "nn.h"
#include "rules/rule.h"       /* ccfg_two_sigmoid: the rules' own 2σ, for the same bits */

#ifdef _OPENMP
#include <omp.h>
#endif

/* elementwise ops (axpbypcz, the NaN watch) go parallel above this many floats (16 MiB) */
#define ELEMENTWISE_PARALLEL (1 << 22)

/* Host memory; every op runs to completion before it returns, so statuses are immediate. */

static void cpu_lock(const ccfg_backend *be, int acquire) { (void)be; (void)acquire; }

static int cpu_alloc(const ccfg_backend *be, size_t bytes, float **out)
{
    (void)be;
    /* calloc(0) may return NULL; a zero-sized tensor is still a valid allocation */
    *out = calloc(bytes ? bytes : 1, 1);
    if (!*out) return ccfg_fail(CCFG_ENOMEM, "out of memory allocating %zu bytes", bytes);
    return CCFG_OK;
}

static void cpu_release(const ccfg_backend *be, void *p)
{
    (void)be;
    free(p);
}

static int cpu_copy(const ccfg_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return CCFG_OK;
}

static int cpu_sync(const ccfg_backend *be) { (void)be; return CCFG_OK; }

/* ------------------------------------------------------------------------- */
/* Guidance kernels. Each is a function over a range of rows, compiled for AVX-512 and AVX2 as
 * well as the baseline and picked at load time (the reductions and the combine accumulate in
 * double: 8 lanes instead of SSE2's 2 keep them at memory speed). One call per thread: the
 * OpenMP region splits the rows, so a (100k x 2) batch pays no per-row dispatch.
 *
 * They also report NaN/Inf for free (ccfg_cpu_guide_flags): the reductions are sums of squares
 * of D = eps - eps_u in double, which cannot overflow for float32 inputs, so they are finite
 * exactly when every input element they read is; the output is tested while it is written. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CCFG_NO_CLONES)
#define GUIDE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GUIDE_CLONES
#endif

static _Thread_local unsigned cpu_guide_flags;

unsigned ccfg_cpu_guide_flags(void)
{
    const unsigned f = cpu_guide_flags;
    cpu_guide_flags = 0;
    return f;
}

/* Rows go to threads in chunks of about 256 KiB of each input, handed out as threads come
 * free: on a shared machine a thread that loses its core does not hold the other back (a static
 * half each would wait for it). */
static int64_t chunk_rows(int64_t dim)
{
    const int64_t r = ((int64_t)1 << 16) / (dim > 0 ? dim : 1);
    return r < 1 ? 1 : r;
}

/* parallel above this many elements: below it the OpenMP wake-up costs more than it saves */
#define GUIDE_PARALLEL(n, dim) ((n) > 1 && (n) * (dim) > (1 << 17))

/* Sums over a row in a fixed order: LANES running sums (element j goes to sum j % LANES), then
 * those summed pairwise. Independent sums keep the adds from waiting on each other (two AVX-512
 * registers per sum), and the order is the same whatever the vector width, so every clone (and
 * every batch size: rows never mix) gives the same bits. Rows shorter than LANES sum in order. */
enum { LANES = 16 };

static inline double lanes_total(double *a)
{
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) a[l] += a[l + w];
    return a[0];
}

/* one row's reductions of the direction D_n = n - u with D_p = p - u: ‖D_p‖² (want_pp), ‖D_n‖²
 * (want_nn), <D_n, D_p> (want_np); n may be NULL when only ‖D_p‖² is wanted */
static inline void row_sums(int64_t dim, const float *ui, const float *pi, const float *ni,
                            int want_pp, int want_nn, int want_np, double *pp, double *nn,
                            double *np)
{
    if (dim < LANES) {
        /* short rows (a 2-D mixture): in element order, without the lanes' setup */
        double a = 0.0, b = 0.0, c = 0.0;
        for (int64_t j = 0; j < dim; j++) {
            const double u = (double)ui[j], dp = (double)pi[j] - u;
            if (want_pp) a += dp * dp;
            if (want_nn || want_np) {
                const double dn = (double)ni[j] - u;
                if (want_nn) b += dn * dn;
                if (want_np) c += dn * dp;
            }
        }
        if (want_pp) *pp = a;
        if (want_nn) *nn = b;
        if (want_np) *np = c;
        return;
    }
    double spp[LANES] = {0}, snn[LANES] = {0}, snp[LANES] = {0};
    int64_t j0 = 0;
    for (; j0 + LANES <= dim; j0 += LANES) {
        #pragma omp simd
        for (int l = 0; l < LANES; l++) {
            const double u = (double)ui[j0 + l], dp = (double)pi[j0 + l] - u;
            if (want_pp) spp[l] += dp * dp;
            if (want_nn || want_np) {
                const double dn = (double)ni[j0 + l] - u;
                if (want_nn) snn[l] += dn * dn;
                if (want_np) snp[l] += dn * dp;
            }
        }
    }
    for (int l = 0; j0 + l < dim; l++) {
        const double u = (double)ui[j0 + l], dp = (double)pi[j0 + l] - u;
        if (want_pp) spp[l] += dp * dp;
        if (want_nn || want_np) {
            const double dn = (double)ni[j0 + l] - u;
            if (want_nn) snn[l] += dn * dn;
            if (want_np) snp[l] += dn * dp;
        }
    }
    if (want_pp) *pp = lanes_total(spp);
    if (want_nn) *nn = lanes_total(snn);
    if (want_np) *np = lanes_total(snp);
}

/* one row's direction_dots (the definition in ccfg.h; k = 0 fills pp only), or only what a
 * coefficient form needs (want_nn, want_np: CCFG reads ‖D_n‖², Perp-Neg <D_n, D_p>). The first
 * negative's pass also yields ‖D_p‖²: every input is read once. A non-finite input element
 * makes a wanted sum it enters non-finite (see above), and every input enters one. */
static inline void dots_row(int64_t dim, const float *ui, const float *pi, int k,
                            const float *const *neg, int64_t off, int want_nn, int want_np,
                            double *pp, double *nn, double *np)
{
    if (k == 0) {
        row_sums(dim, ui, pi, NULL, 1, 0, 0, pp, NULL, NULL);
        return;
    }
    for (int q = 0; q < k; q++) {
        const float *ni = neg[q] + off;
        if (want_nn && want_np)
            row_sums(dim, ui, pi, ni, q == 0, 1, 1, pp, &nn[q], &np[q]);
        else if (want_nn)
            row_sums(dim, ui, pi, ni, q == 0, 1, 0, pp, &nn[q], NULL);
        else
            row_sums(dim, ui, pi, ni, q == 0, 0, 1, pp, NULL, &np[q]);
    }
}

/* one row of out = sum_q c[q] in[q] in double, rounded once: the coefficients (e.g. 1 - w and
 * w) cancel, so float sums would lose bits. An input after the first with a zero coefficient is
 * skipped; up to four inputs go in one loop (each element read once, summed in input order),
 * more a tile at a time through an accumulator. Returns 0 when a written value is NaN/Inf
 * (float32 overflow). The fused pass (form_rows) reads a row twice, the reductions from memory
 * and this from cache; a software prefetch of the next row here was measured slower than the
 * hardware prefetcher alone (PERFORMANCE.md, issue 16 items 2 and 4) and is gone. */
static inline __attribute__((always_inline)) int combine_row(int64_t dim, int m, const float *const *in, int64_t off,
                              const double *c, float *out)
{
    enum { TILE = 512 };
    const float *x[2 + CCFG_MAX_RULE_NEGATIVES];
    double cc[2 + CCFG_MAX_RULE_NEGATIVES];     /* not `= {0}`: 66 doubles per row at dim 64 */
    int used = 0, ok = 1;
    cc[1] = cc[2] = cc[3] = 0.0;                /* read (times a repeated x[0]) when used < 4 */
    for (int q = 0; q < m; q++)
        if (q == 0 || c[q] != 0.0) {
            x[used] = in[q] + off;
            cc[used++] = c[q];
        }
    float *o = out + off;
    if (dim < LANES && used <= 3) {
        /* short rows (a 2-D mixture, 100k of them a step): the same sums element by element,
         * without the tile and vector-loop set-up that cost more than the row */
        const float *x0 = x[0], *x1 = x[used > 1], *x2 = x[used > 2 ? 2 : 0];
        for (int64_t j = 0; j < dim; j++) {
            const float v = used == 1 ? (float)(cc[0] * (double)x0[j])
                            : used == 2 ? (float)(cc[0] * (double)x0[j] + cc[1] * (double)x1[j])
                                        : (float)(cc[0] * (double)x0[j] + cc[1] * (double)x1[j] +
                                                  cc[2] * (double)x2[j]);
            o[j] = v;
            ok &= fabsf(v) <= FLT_MAX;
        }
        return ok;
    }
    for (int64_t j0 = 0; j0 < dim; j0 += TILE) {
        const int64_t len = dim - j0 < TILE ? dim - j0 : TILE;
        int tile_ok = 1;
        if (used <= 4) {
            const float *x0 = x[0] + j0, *x1 = x[used > 1] + j0, *x2 = x[used > 2 ? 2 : 0] + j0,
                        *x3 = x[used > 3 ? 3 : 0] + j0;
            const double c0 = cc[0], c1 = cc[1], c2 = cc[2], c3 = cc[3];
            float *oj = o + j0;
            if (used == 1) {
                #pragma omp simd reduction(& : tile_ok)
                for (int64_t j = 0; j < len; j++) {
                    const float v = (float)(c0 * (double)x0[j]);
                    oj[j] = v;
                    tile_ok &= fabsf(v) <= FLT_MAX;          /* false for NaN too */
                }
            } else if (used == 2) {
                #pragma omp simd reduction(& : tile_ok)
                for (int64_t j = 0; j < len; j++) {
                    const float v = (float)(c0 * (double)x0[j] + c1 * (double)x1[j]);
                    oj[j] = v;
                    tile_ok &= fabsf(v) <= FLT_MAX;
                }
            } else if (used == 3) {
                #pragma omp simd reduction(& : tile_ok)
                for (int64_t j = 0; j < len; j++) {
                    const float v = (float)(c0 * (double)x0[j] + c1 * (double)x1[j] +
                                            c2 * (double)x2[j]);
                    oj[j] = v;
                    tile_ok &= fabsf(v) <= FLT_MAX;
                }
            } else {
                #pragma omp simd reduction(& : tile_ok)
                for (int64_t j = 0; j < len; j++) {
                    const float v = (float)(c0 * (double)x0[j] + c1 * (double)x1[j] +
                                            c2 * (double)x2[j] + c3 * (double)x3[j]);
                    oj[j] = v;
                    tile_ok &= fabsf(v) <= FLT_MAX;
                }
            }
        } else {
            double acc[TILE];
            #pragma omp simd
            for (int64_t j = 0; j < len; j++) acc[j] = cc[0] * (double)x[0][j0 + j];
            for (int q = 1; q < used; q++) {
                const float *xq = x[q] + j0;
                const double cq = cc[q];
                #pragma omp simd
                for (int64_t j = 0; j < len; j++) acc[j] += cq * (double)xq[j];
            }
            #pragma omp simd reduction(& : tile_ok)
            for (int64_t j = 0; j < len; j++) {
                const float v = (float)acc[j];
                o[j0 + j] = v;
                tile_ok &= fabsf(v) <= FLT_MAX;
            }
        }
        ok &= tile_ok;
    }
    return ok;
}

GUIDE_CLONES
static unsigned dots_rows(int64_t lo, int64_t hi, int64_t n, int64_t dim, const float *u,
                          const float *p, int k, const float *const *neg, double *pp, double *nn,
                          double *np)
{
    unsigned flags = 0;
    double rn[CCFG_MAX_RULE_NEGATIVES], rp[CCFG_MAX_RULE_NEGATIVES];
    for (int64_t i = lo; i < hi; i++) {
        const int64_t off = i * dim;
        dots_row(dim, u + off, p + off, k, neg, off, 1, 1, &pp[i], rn, rp);
        int ok = isfinite(pp[i]);
        for (int q = 0; q < k; q++) {
            nn[(int64_t)q * n + i] = rn[q];
            np[(int64_t)q * n + i] = rp[q];
            ok &= isfinite(rn[q]) && isfinite(rp[q]);
        }
        if (!ok) flags |= CCFG_CPU_BAD_INPUT;
    }
    return flags;
}

GUIDE_CLONES
static unsigned combine_rows(int64_t lo, int64_t hi, int64_t dim, int m, const float *const *in,
                             const double *coef, float *out)
{
    int ok = 1;
    for (int64_t i = lo; i < hi; i++) ok &= combine_row(dim, m, in, i * dim, coef + i * m, out);
    return ok ? 0u : CCFG_CPU_BAD_OUTPUT;
}

/* a row's coefficients from its reductions, in the operations (and order) of the rule's host
 * `coefficients` (rules/ccfg.c, rules/perp_neg.c), so both paths give the same bits;
 * proj_global: Perp-Neg's batch projection per negative, NULL for the per-sample one */
static void form_row(const ccfg_coef_form *f, int k, double pp, const double *nn,
                     const double *np, const double *proj_global, double *c)
{
    const double w = f->w;
    if (f->family == CCFG_FORM_CONTRASTIVE) {
        const double tau = f->tau_eff;
        const double wp = f->naive_positive ? w : w * ccfg_two_sigmoid(tau * pp);
        c[0] = 1.0 - wp;
        c[1] = wp;
        for (int j = 0; j < k; j++) {
            const double cn = f->w_n * ccfg_two_sigmoid(-tau * nn[j]);
            c[2 + j] = -cn;
            c[0] += cn;
        }
    } else {                                    /* CCFG_FORM_PERPENDICULAR, b = w_n */
        const double b = f->w_n;
        c[0] = 1.0 - w;
        c[1] = w;
        for (int j = 0; j < k; j++) {
            const double proj = proj_global ? proj_global[j] : (pp > 0.0 ? np[j] / pp : 0.0);
            const double cn = w * b;
            c[1] += w * b * proj;
            c[0] -= w * b * proj;
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
}

/* the fused pass: per row, reductions, coefficients and combine while the row is in cache, so
 * the inputs cross the memory bus once */
GUIDE_CLONES
static unsigned form_rows(const ccfg_coef_form *f, int64_t lo, int64_t hi, int64_t dim, int k,
                          const float *const *in, float *out)
{
    unsigned flags = 0;
    int ok_out = 1;
    double rn[CCFG_MAX_RULE_NEGATIVES], rp[CCFG_MAX_RULE_NEGATIVES];
    double c[2 + CCFG_MAX_RULE_NEGATIVES];
    for (int64_t i = lo; i < hi; i++) {
        const int64_t off = i * dim;
        double pp = 0.0;
        if (f->family == CCFG_FORM_CONTRASTIVE)
            dots_row(dim, in[0] + off, in[1] + off, k, in + 2, off, 1, 0, &pp, rn, rp);
        else
            dots_row(dim, in[0] + off, in[1] + off, k, in + 2, off, 0, 1, &pp, rn, rp);
        const double *wanted = f->family == CCFG_FORM_CONTRASTIVE ? rn : rp;
        int ok = isfinite(pp);
        for (int q = 0; q < k; q++) ok &= isfinite(wanted[q]);
        if (!ok) flags |= CCFG_CPU_BAD_INPUT;
        form_row(f, k, pp, rn, rp, NULL, c);
        ok_out &= combine_row(dim, 2 + k, in, off, c, out);
    }
    return flags | (ok_out ? 0u : CCFG_CPU_BAD_OUTPUT);
}

static int cpu_dot(const ccfg_backend *be, int64_t n, int64_t dim, const float *a, const float *b,
                   double *out)
{
    (void)be;
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const float *ai = a + i * dim, *bi = b + i * dim;
        double s = 0.0;
        #pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < dim; j++) s += (double)ai[j] * (double)bi[j];
        out[i] = s;
    }
    return CCFG_OK;
}

static int cpu_direction_dots(const ccfg_backend *be, int64_t n, int64_t dim, const float *u,
                              const float *p, int k, const float *const *neg, double *pp,
                              double *nn, double *np)
{
    unsigned flags = 0;
    (void)be;
    const int64_t rows = chunk_rows(dim), chunks = (n + rows - 1) / rows;
    #pragma omp parallel for schedule(dynamic) reduction(| : flags) if (GUIDE_PARALLEL(n, dim))
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t lo = ch * rows, hi = lo + rows < n ? lo + rows : n;
        flags |= dots_rows(lo, hi, n, dim, u, p, k, neg, pp, nn, np);
    }
    cpu_guide_flags |= flags;
    return CCFG_OK;
}

static int cpu_combine(const ccfg_backend *be, int64_t n, int64_t dim, int m,
                       const float *const *in, const double *coef, float *out)
{
    unsigned flags = 0;
    (void)be;
    const int64_t rows = chunk_rows(dim), chunks = (n + rows - 1) / rows;
    #pragma omp parallel for schedule(dynamic) reduction(| : flags) if (GUIDE_PARALLEL(n, dim))
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t lo = ch * rows, hi = lo + rows < n ? lo + rows : n;
        flags |= combine_rows(lo, hi, dim, m, in, coef, out);
    }
    cpu_guide_flags |= flags;
    return CCFG_OK;
}

/* Perp-Neg over the whole batch: the projection needs every row's reductions first, so two
 * passes (reductions, then the table and combine), summed in the host rule's order */
static int cpu_form_global(const ccfg_backend *be, const ccfg_coef_form *f, int64_t n,
                           int64_t dim, int k, const float *const *in, float *out)
{
    const int m = 2 + k;
    int status = CCFG_OK;
    double *pp = malloc((size_t)n * sizeof *pp), *nn = malloc((size_t)n * k * sizeof *nn);
    double *np = malloc((size_t)n * k * sizeof *np), *coef = malloc((size_t)n * m * sizeof *coef);
    double proj[CCFG_MAX_RULE_NEGATIVES];
    if (!pp || !nn || !np || !coef) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in guidance (n=%lld)", (long long)n);
        goto done;
    }
    if ((status = cpu_direction_dots(be, n, dim, in[0], in[1], k, in + 2, pp, nn, np))) goto done;
    double den = 0.0;
    for (int64_t i = 0; i < n; i++) den += pp[i];
    for (int j = 0; j < k; j++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += np[(int64_t)j * n + i];
        proj[j] = den > 0.0 ? s / den : 0.0;
    }
    for (int64_t i = 0; i < n; i++) form_row(f, k, pp[i], NULL, NULL, proj, coef + i * m);
    status = cpu_combine(be, n, dim, m, in, coef, out);
done:
    free(pp);
    free(nn);
    free(np);
    free(coef);
    return status;
}

/* direction_dots, the form's table and combine (ccfg.h) in one pass over the inputs */
static int cpu_combine_form(const ccfg_backend *be, const ccfg_coef_form *f, int64_t n,
                            int64_t dim, const float *u, const float *p, int k,
                            const float *const *neg, float *out)
{
    const float *in[2 + CCFG_MAX_RULE_NEGATIVES];
    unsigned flags = 0;
    if (n < 0 || dim < 0 || k < 0 || k > CCFG_MAX_RULE_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "cpu guide: needs n, dim >= 0 and 0..%d negatives",
                         CCFG_MAX_RULE_NEGATIVES);
    if (f->family != CCFG_FORM_CONTRASTIVE && f->family != CCFG_FORM_PERPENDICULAR)
        return ccfg_fail(CCFG_EINTERNAL, "cpu guide: no coefficient form %d", f->family);
    if (!n || !dim) return CCFG_OK;
    in[0] = u;
    in[1] = p;
    for (int j = 0; j < k; j++) in[2 + j] = neg[j];
    if (f->family == CCFG_FORM_PERPENDICULAR && f->batch_global && k > 0)
        return cpu_form_global(be, f, n, dim, k, in, out);
    const int64_t rows = chunk_rows(dim), chunks = (n + rows - 1) / rows;
    #pragma omp parallel for schedule(dynamic) reduction(| : flags) if (GUIDE_PARALLEL(n, dim))
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t lo = ch * rows, hi = lo + rows < n ? lo + rows : n;
        flags |= form_rows(f, lo, hi, dim, k, in, out);
    }
    cpu_guide_flags |= flags;
    return CCFG_OK;
}

/* out = a x + b y + c z over [lo, hi), in double with one rounding at the end (solver
 * coefficients can be large and cancel). Cloned per ISA like the guidance kernels: the baseline
 * build is SSE2, 2 doubles a step. The sampler stacks its state once per condition with
 * (a = 1, no y, no z): a copy, since (float)(double)v == v for every float v but a signalling NaN
 * (which the NaN watch reports either way). */
GUIDE_CLONES
static void axpbypcz_range(int64_t lo, int64_t hi, double a, const float *x, double b,
                           const float *y, double c, const float *z, float *out)
{
    if (a == 1.0 && !y && !z) {
        if (out != x) memmove(out + lo, x + lo, (size_t)(hi - lo) * sizeof *out);
        return;
    }
    if (y && z) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++)
            out[i] = (float)((double)x[i] * a + (double)y[i] * b + (double)z[i] * c);
    } else if (y) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = (float)((double)x[i] * a + (double)y[i] * b);
    } else if (z) {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = (float)((double)x[i] * a + (double)z[i] * c);
    } else {
        #pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = (float)((double)x[i] * a);
    }
}

static int cpu_axpbypcz(const ccfg_backend *be, int64_t count, double a, const float *x,
                        double b, const float *y, double c, const float *z, float *out)
{
    (void)be;
    /* Elementwise passes run several times per sampler step; a second thread pays off only on
     * large arrays (waking it costs more than a pass over a few MB, and on a loaded machine
     * far more: PERFORMANCE.md, issue 16) */
    if (count <= ELEMENTWISE_PARALLEL) {
        axpbypcz_range(0, count, a, x, b, y, c, z, out);
        return CCFG_OK;
    }
    const int64_t per = 1 << 16, chunks = (count + per - 1) / per;
    #pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t lo = ch * per, hi = lo + per < count ? lo + per : count;
        axpbypcz_range(lo, hi, a, x, b, y, c, z, out);
    }
    return CCFG_OK;
}

/* the first non-finite tag of this thread's work (the CPU runs ops in the calling thread) */
static _Thread_local int cpu_bad_tag = -1;

/* 1 when x[lo, hi) is all finite: the largest |x| as bits (sign cleared) is below the
 * exponent-all-ones pattern of Inf and NaN. An integer max vectorises; the float form
 * (fabsf(v) <= FLT_MAX, false for NaN) compiled to a scalar compare-and-set loop. */
GUIDE_CLONES
static int finite_range(int64_t lo, int64_t hi, const float *x)
{
    uint32_t m = 0;
    #pragma omp simd reduction(max : m)
    for (int64_t i = lo; i < hi; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bits &= 0x7fffffffu;
        m = bits > m ? bits : m;
    }
    return m < 0x7f800000u;
}

static int cpu_watch_finite(const ccfg_backend *be, int64_t count, const float *x, int tag)
{
    int ok = 1;
    (void)be;
    /* it runs on every model output and every state of a sampler step, and on every input of
     * ccfg.guide whose rule does not fold the check into its reductions */
    if (count <= ELEMENTWISE_PARALLEL) {
        ok = finite_range(0, count, x);
    } else {
        const int64_t per = 1 << 16, chunks = (count + per - 1) / per;
        #pragma omp parallel for schedule(static) reduction(& : ok)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t lo = ch * per, hi = lo + per < count ? lo + per : count;
            ok &= finite_range(lo, hi, x);
        }
    }
    if (!ok && (cpu_bad_tag < 0 || tag < cpu_bad_tag)) cpu_bad_tag = tag;
    return CCFG_OK;
}

static int cpu_first_nonfinite(const ccfg_backend *be, int *tag)
{
    (void)be;
    *tag = cpu_bad_tag;
    cpu_bad_tag = -1;
    return CCFG_OK;
}

/* a mixture placed on the CPU: its scratch, made once per run (no allocation per step) */
static int cpu_gmm_load(const ccfg_backend *be, const ccfg_gmm *g, void **handle)
{
    ccfg_gmm_work *w = NULL;
    (void)be;
    int status = ccfg_gmm_work_new(g, &w);
    *handle = w;
    return status;
}

static void cpu_gmm_free(const ccfg_backend *be, void *handle)
{
    (void)be;
    ccfg_gmm_work_free(handle);
}

static int cpu_gmm_eps(const ccfg_backend *be, const ccfg_gmm *g, void *handle, int64_t rows,
                       const float *x, double alpha_bar, const int32_t *cond, float *out)
{
    (void)be;
    return handle ? ccfg_gmm_eps_with(g, handle, rows, x, alpha_bar, cond, out)
                  : ccfg_gmm_eps(g, rows, x, alpha_bar, cond, out);
}

static int cpu_clamp_rows(const ccfg_backend *be, int64_t n, int64_t dim, const float *x,
                          const double *bound, int divide, float *out)
{
    (void)be;
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const float b = (float)bound[i];
        const float *xi = x + i * dim;
        float *oi = out + i * dim;
        for (int64_t j = 0; j < dim; j++) {
            const float v = fminf(fmaxf(xi[j], -b), b);
            oi[j] = divide ? v / b : v;
        }
    }
    return CCFG_OK;
}

static int cpu_randn(const ccfg_backend *be, int64_t n, int64_t dim, uint64_t seed,
                     uint64_t stream, int64_t first, float *out)
{
    (void)be;
    ccfg_randn_host(n, dim, seed, stream, first, out);
    return CCFG_OK;
}

static int cpu_sld(const ccfg_backend *be, int64_t count, const float *eps_u, const float *eps_p,
                   const float *eps_s, float *nu, double w, double s_s, double thr, double s_m,
                   double beta_m, int update, int apply, float *out)
{
    (void)be;
    #pragma omp parallel for schedule(static) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) {
        double diff = (double)eps_p[i] - (double)eps_s[i];
        double mu = diff < thr ? fmin(s_s * fabs(diff), 1.0) : 0.0;
        double g = mu * ((double)eps_s[i] - (double)eps_u[i]) + s_m * (double)nu[i];
        if (update) nu[i] = (float)(beta_m * (double)nu[i] + (1.0 - beta_m) * g);
        if (apply) out[i] = (float)((double)out[i] - w * g);
    }
    return CCFG_OK;
}

static const ccfg_guide_ops cpu_guide_ops = {
    .dot = cpu_dot,
    .direction_dots = cpu_direction_dots,
    .combine = cpu_combine,
    .sld = cpu_sld,
    .combine_form = cpu_combine_form,
};

static const ccfg_gmm_ops cpu_gmm_ops = {
    .load = cpu_gmm_load,
    .free = cpu_gmm_free,
    .eps = cpu_gmm_eps,
};

static ccfg_backend cpu_backend = {
    .name = "cpu",
    .ctx = NULL,
    .host_memory = 1,
    .synchronous = 1,
    .lock = cpu_lock,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .axpbypcz = cpu_axpbypcz,
    .clamp_rows = cpu_clamp_rows,
    .randn = cpu_randn,
    .watch_finite = cpu_watch_finite,
    .first_nonfinite = cpu_first_nonfinite,
    .guide = &cpu_guide_ops,
    .gmm = &cpu_gmm_ops,
    .nn = NULL,             /* nn_cpu.c's table, set on first use (see ccfg_backend_cpu) */
};

/* the network table lives in nn_cpu.c; it is a constant, so setting it twice is harmless */
const ccfg_backend *ccfg_backend_cpu(void)
{
    if (!cpu_backend.nn) cpu_backend.nn = ccfg_nn_ops_cpu();
    return &cpu_backend;
}

int ccfg_all_finite(const ccfg_backend *be, int64_t count, const float *x, int *ok)
{
    int status, tag;
    *ok = 0;
    if ((status = be->first_nonfinite(be, &tag))) return status;     /* forget older reports */
    if ((status = be->watch_finite(be, count, x, 0))) return status;
    if ((status = be->first_nonfinite(be, &tag))) return status;
    *ok = tag < 0;
    return CCFG_OK;
}

/* the registry's driver (backend.c): one device, "cpu" */
int ccfg_backend_cpu_open(int index, const ccfg_backend **out)
{
    (void)index;
    *out = ccfg_backend_cpu();
    return CCFG_OK;
}

int ccfg_backend_cpu_list(ccfg_device *out, int max, const char **why)
{
    (void)why;
    if (max < 1) return 0;
    snprintf(out->name, sizeof out->name, "cpu");
    snprintf(out->label, sizeof out->label, "cpu");
    out->type = "cpu";
    out->available = 1;
    return 1;
}
