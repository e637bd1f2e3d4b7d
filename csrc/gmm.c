/* gmm.c — the exact noise prediction of a noised Gaussian mixture.
 *
 * x_t = a x_0 + s ε with a = sqrt(ā), s = sqrt(1-ā), x_0 ~ Σ_k w_k N(μ_k, Σ_k), so
 * x_t | k ~ N(a μ_k, C_k), C_k = a² Σ_k + s² I = U_k diag(a² λ_k + s²) U_kᵀ, and
 *     eps(x_t) = -s ∇ log p_t(x_t) = s Σ_k r_k(x_t) C_k⁻¹ (x_t - a μ_k),
 * r_k the posterior responsibilities, restricted to a concept's components for a conditional
 * prediction. Work in double; rows are processed in blocks so full covariances use BLAS. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

/* rows per block: keeps the K whitened copies of a block around 8 MB */
static int64_t block_rows(int64_t K, int64_t dim)
{
    int64_t b = (int64_t)(1 << 20) / (K * dim > 0 ? K * dim : 1);
    return b < 1 ? 1 : (b > 256 ? 256 : b);
}

/* one block of `rows` rows; scratch: z [K*rows*dim], logp [rows*K], y [rows*dim] */
static void gmm_block(const ccfg_gmm *g, int64_t rows, const float *x, double a, double s2,
                      const int32_t *cond, float *out, double *z, double *logp, double *y)
{
    const int64_t K = g->K, D = g->dim;
    for (int64_t k = 0; k < K; k++) {
        const double *mu = g->means + k * D, *lam = g->evals + k * D;
        double *zk = z + k * rows * D;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t d = 0; d < D; d++) y[r * D + d] = (double)x[r * D + d] - a * mu[d];
        /* z = y U (rows of whitening coordinates); axis-aligned covariances skip the rotation */
        if (g->evecs)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D, (int)D, 1.0,
                        y, (int)D, g->evecs + k * D * D, (int)D, 0.0, zk, (int)D);
        else
            memcpy(zk, y, (size_t)(rows * D) * sizeof *y);
        double logdet = 0.0;
        for (int64_t d = 0; d < D; d++) logdet += log(a * a * lam[d] + s2);
        for (int64_t r = 0; r < rows; r++) {
            double q = 0.0, *zr = zk + r * D;
            for (int64_t d = 0; d < D; d++) {
                double c = a * a * lam[d] + s2;
                q += zr[d] * zr[d] / c;
                zr[d] /= c;                  /* keep C⁻¹ in whitened coordinates */
            }
            logp[r * K + k] = g->log_weights[k] - 0.5 * (q + logdet);
        }
    }
    /* responsibilities within each row's condition (softmax over allowed components) */
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *mask = cond[r] >= 0 ? g->concept_mask + (int64_t)cond[r] * K : NULL;
        double *lp = logp + r * K, mx = -INFINITY, tot = 0.0;
        for (int64_t k = 0; k < K; k++)
            if (!mask || mask[k]) mx = fmax(mx, lp[k]);
        for (int64_t k = 0; k < K; k++) {
            lp[k] = (!mask || mask[k]) ? exp(lp[k] - mx) : 0.0;
            tot += lp[k];
        }
        for (int64_t k = 0; k < K; k++) lp[k] /= tot;
    }
    /* eps = s Σ_k r_k U_k (z_k / c): weight each whitened copy, rotate back, accumulate */
    const double s = sqrt(s2);
    memset(y, 0, (size_t)(rows * D) * sizeof *y);
    for (int64_t k = 0; k < K; k++) {
        double *zk = z + k * rows * D;
        for (int64_t r = 0; r < rows; r++) {
            double wr = s * logp[r * K + k];
            for (int64_t d = 0; d < D; d++) zk[r * D + d] *= wr;
        }
        if (g->evecs)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)D, (int)D, 1.0, zk,
                        (int)D, g->evecs + k * D * D, (int)D, 1.0, y, (int)D);
        else
            for (int64_t q = 0; q < rows * D; q++) y[q] += zk[q];
    }
    for (int64_t q = 0; q < rows * D; q++) out[q] = (float)y[q];
}

int ccfg_gmm_check(const ccfg_gmm *g, int64_t rows, double alpha_bar, const int32_t *cond)
{
    if (!(alpha_bar >= 0.0 && alpha_bar <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "alpha_bar must lie in [0, 1], got %g", alpha_bar);
    for (int64_t r = 0; r < rows; r++)
        if (cond[r] < CCFG_UNCOND || cond[r] >= g->n_concepts)
            return ccfg_fail(CCFG_EINVAL, "condition id %d is not a concept of this mixture",
                             (int)cond[r]);
    return CCFG_OK;
}

int ccfg_gmm_eps(const ccfg_gmm *g, int64_t rows, const float *x, double alpha_bar,
                 const int32_t *cond, float *out)
{
    int status = ccfg_gmm_check(g, rows, alpha_bar, cond);
    if (status) return status;
    const int64_t K = g->K, D = g->dim, B = block_rows(K, D);
    const int64_t nblocks = (rows + B - 1) / B;
    const double a = sqrt(alpha_bar), s2 = 1.0 - alpha_bar;
    int failed = 0;

    /* threads only pay off on big batches; idle OpenMP workers spin and slow small calls */
    #pragma omp parallel if (rows * K * D > (1 << 20))
    {
        double *z = malloc((size_t)(K * B * D) * sizeof *z);
        double *logp = malloc((size_t)(B * K) * sizeof *logp);
        double *y = malloc((size_t)(B * D) * sizeof *y);
        if (!z || !logp || !y) {
            #pragma omp atomic write
            failed = 1;
        }
        /* every thread must reach the worksharing loop, or none: decide after a barrier */
        #pragma omp barrier
        int any_failed;
        #pragma omp atomic read
        any_failed = failed;
        if (!any_failed) {
            #pragma omp for schedule(dynamic)
            for (int64_t b = 0; b < nblocks; b++) {
                int64_t r0 = b * B, nr = rows - r0 < B ? rows - r0 : B;
                gmm_block(g, nr, x + r0 * D, a, s2, cond + r0, out + r0 * D, z, logp, y);
            }
        }
        free(z);
        free(logp);
        free(y);
    }
    if (failed) return ccfg_fail(CCFG_ENOMEM, "out of memory in the Gaussian-mixture denoiser");
    return CCFG_OK;
}

int ccfg_gmm_model_init(ccfg_gmm_model *m, const ccfg_backend *be, const ccfg_gmm *g)
{
    m->g = g;
    m->be = be;
    m->handle = NULL;
    return be->gmm->load(be, g, &m->handle);
}

void ccfg_gmm_model_free(ccfg_gmm_model *m)
{
    if (m->be) m->be->gmm->free(m->be, m->handle);
    m->handle = NULL;
    m->be = NULL;
}

int ccfg_gmm_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                        const float *x, double timestep, double alpha_bar, const int32_t *cond,
                        float *out)
{
    const ccfg_gmm_model *m = ctx;
    int status;
    (void)timestep;                          /* the exact model needs only the noise level */
    if (be != m->be)
        return ccfg_fail(CCFG_EINVAL, "the mixture was loaded on %s, not %s", m->be->name, be->name);
    if (dim != m->g->dim) return ccfg_fail(CCFG_EINVAL, "dim %lld != mixture dim %lld",
                                           (long long)dim, (long long)m->g->dim);
    if ((status = ccfg_gmm_check(m->g, rows, alpha_bar, cond))) return status;
    return be->gmm->eps(be, m->g, m->handle, rows, x, alpha_bar, cond, out);
}

/* the sampler model: parameters placed on the run's backend at begin, freed at end */
static int gmm_begin(void *ctx, const ccfg_backend *be, int64_t n, int64_t max_rows)
{
    ccfg_gmm_model *m = ctx;
    (void)n;
    (void)max_rows;
    return ccfg_gmm_model_init(m, be, m->g);
}

static void gmm_end(void *ctx) { ccfg_gmm_model_free(ctx); }

ccfg_model ccfg_gmm_as_model(ccfg_gmm_model *m, const ccfg_gmm *g)
{
    m->g = g;
    m->be = NULL;
    m->handle = NULL;
    return (ccfg_model){.eval = ccfg_gmm_model_eval, .begin = gmm_begin, .end = gmm_end, .ctx = m,
                        .on_backend = 1, .dim = g->dim};
}
