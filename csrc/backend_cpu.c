/* backend_cpu.c — the CPU backend: host memory, OpenMP loops, double accumulation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

static void *cpu_alloc(size_t bytes)
{
    /* calloc(0) may return NULL; a zero-sized tensor is still a valid allocation */
    return calloc(bytes ? bytes : 1, 1);
}

static void cpu_release(void *p) { free(p); }

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_dot(int64_t n, int64_t dim, const float *a, const float *b, double *out)
{
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const float *ai = a + i * dim, *bi = b + i * dim;
        double s = 0.0;
        #pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < dim; j++) s += (double)ai[j] * (double)bi[j];
        out[i] = s;
    }
}

static void cpu_direction_dots(int64_t n, int64_t dim, const float *u, const float *p, int k,
                               const float *const *neg, double *pp, double *nn, double *np)
{
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
}

static void cpu_combine(int64_t n, int64_t dim, int m, const float *const *in, const double *coef,
                        float *out)
{
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
}

static void cpu_axpbypcz(int64_t count, double a, const float *x, double b, const float *y,
                         double c, const float *z, float *out)
{
    /* double arithmetic, one rounding at the end: solver coefficients can be large and cancel */
    #pragma omp parallel for schedule(static) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) {
        double v = (double)x[i] * a;
        if (y) v += (double)y[i] * b;
        if (z) v += (double)z[i] * c;
        out[i] = (float)v;
    }
}

static int cpu_all_finite(int64_t count, const float *x)
{
    int ok = 1;
    #pragma omp parallel for schedule(static) reduction(&& : ok) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) ok = ok && isfinite(x[i]);
    return ok;
}

static void cpu_sld(int64_t count, const float *eps_u, const float *eps_p, const float *eps_s,
                    float *nu, double w, double s_s, double thr, double s_m, double beta_m,
                    int update, int apply, float *out)
{
    #pragma omp parallel for schedule(static) if (count > (1 << 18))
    for (int64_t i = 0; i < count; i++) {
        double diff = (double)eps_p[i] - (double)eps_s[i];
        double mu = diff < thr ? fmin(s_s * fabs(diff), 1.0) : 0.0;
        double g = mu * ((double)eps_s[i] - (double)eps_u[i]) + s_m * (double)nu[i];
        if (update) nu[i] = (float)(beta_m * (double)nu[i] + (1.0 - beta_m) * g);
        if (apply) out[i] = (float)((double)out[i] - w * g);
    }
}

static const ccfg_backend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .dot = cpu_dot,
    .direction_dots = cpu_direction_dots,
    .combine = cpu_combine,
    .axpbypcz = cpu_axpbypcz,
    .randn = ccfg_randn_host,
    .all_finite = cpu_all_finite,
    .sld = cpu_sld,
};

const ccfg_backend *ccfg_backend_cpu(void) { return &cpu_backend; }
