/* backend_cpu.c — the CPU backend: host memory, OpenMP loops, double accumulation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "nn.h"

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
    (void)be;
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const float *ui = u + i * dim, *pi = p + i * dim;
        double spp = 0.0;
        if (k == 0) {
            #pragma omp simd reduction(+ : spp)
            for (int64_t j = 0; j < dim; j++) {
                double dp = (double)pi[j] - (double)ui[j];
                spp += dp * dp;
            }
        }
        /* the first negative's pass also yields ‖D_p‖²: every input is read once when k = 1 */
        for (int q = 0; q < k; q++) {
            const float *ni = neg[q] + i * dim;
            double snn = 0.0, snp = 0.0, s = 0.0;
            #pragma omp simd reduction(+ : snn, snp, s)
            for (int64_t j = 0; j < dim; j++) {
                double dp = (double)pi[j] - (double)ui[j], dn = (double)ni[j] - (double)ui[j];
                snn += dn * dn;
                snp += dn * dp;
                s += dp * dp;
            }
            nn[(int64_t)q * n + i] = snn;
            np[(int64_t)q * n + i] = snp;
            if (q == 0) spp = s;
        }
        pp[i] = spp;
    }
    return CCFG_OK;
}

static int cpu_combine(const ccfg_backend *be, int64_t n, int64_t dim, int m,
                       const float *const *in, const double *coef, float *out)
{
    (void)be;
    /* in double, a tile at a time: the coefficients (e.g. 1 - w and w) cancel, so float sums
     * would lose bits; tiles keep each loop a simple vectorisable stream */
    enum { TILE = 512 };
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const double *c = coef + i * m;
        double acc[TILE];
        for (int64_t j0 = 0; j0 < dim; j0 += TILE) {
            const int64_t len = dim - j0 < TILE ? dim - j0 : TILE;
            const float *x0 = in[0] + i * dim + j0;
            #pragma omp simd
            for (int64_t j = 0; j < len; j++) acc[j] = c[0] * (double)x0[j];
            for (int q = 1; q < m; q++) {
                const float *xq = in[q] + i * dim + j0;
                const double cq = c[q];
                if (cq == 0.0) continue;
                #pragma omp simd
                for (int64_t j = 0; j < len; j++) acc[j] += cq * (double)xq[j];
            }
            float *o = out + i * dim + j0;
            #pragma omp simd
            for (int64_t j = 0; j < len; j++) o[j] = (float)acc[j];
        }
    }
    return CCFG_OK;
}

static int cpu_axpbypcz(const ccfg_backend *be, int64_t count, double a, const float *x,
                        double b, const float *y, double c, const float *z, float *out)
{
    (void)be;
    /* double arithmetic, one rounding at the end: solver coefficients can be large and cancel */
    #pragma omp parallel for schedule(static) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) {
        double v = (double)x[i] * a;
        if (y) v += (double)y[i] * b;
        if (z) v += (double)z[i] * c;
        out[i] = (float)v;
    }
    return CCFG_OK;
}

/* the first non-finite tag of this thread's work (the CPU runs ops in the calling thread) */
static _Thread_local int cpu_bad_tag = -1;

static int cpu_watch_finite(const ccfg_backend *be, int64_t count, const float *x, int tag)
{
    int ok = 1;
    (void)be;
    #pragma omp parallel for schedule(static) reduction(&& : ok) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) ok = ok && isfinite(x[i]);
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

static int cpu_gmm_load(const ccfg_backend *be, const ccfg_gmm *g, void **handle)
{
    (void)be; (void)g;
    *handle = NULL;
    return CCFG_OK;
}

static void cpu_gmm_free(const ccfg_backend *be, void *handle) { (void)be; (void)handle; }

static int cpu_gmm_eps(const ccfg_backend *be, const ccfg_gmm *g, void *handle, int64_t rows,
                       const float *x, double alpha_bar, const int32_t *cond, float *out)
{
    (void)be; (void)handle;
    return ccfg_gmm_eps(g, rows, x, alpha_bar, cond, out);
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
