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
        for (int64_t j = 0; j < dim; j++) s += (double)ai[j] * (double)bi[j];
        out[i] = s;
    }
}

static void cpu_combine(int64_t n, int64_t dim, int m, const float *const *in, const double *coef,
                        float *out)
{
    /* per element in double: the coefficients (e.g. 1 - w and w) cancel, so float sums lose bits */
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        const double *c = coef + i * m;
        float *o = out + i * dim;
        for (int64_t j = 0; j < dim; j++) {
            double v = 0.0;
            for (int k = 0; k < m; k++) v += c[k] * (double)in[k][i * dim + j];
            o[j] = (float)v;
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
    .combine = cpu_combine,
    .axpbypcz = cpu_axpbypcz,
    .randn = ccfg_randn_host,
    .all_finite = cpu_all_finite,
    .sld = cpu_sld,
};

const ccfg_backend *ccfg_backend_cpu(void) { return &cpu_backend; }
