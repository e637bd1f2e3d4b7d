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

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GUIDE_CLONES_GMM __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GUIDE_CLONES_GMM
#endif

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

/* ------------------------------------------------------------------------- */
/* Axis-aligned components (evecs NULL: isotropic or diagonal covariances), the common case, in
 * blocks of R rows held across SIMD lanes: every quantity of a row lives in its own lane, so a
 * row's result never depends on its neighbours, the block size, the thread or the batch size
 * (the sampler's promise: the same sample whatever n), and nothing is summed horizontally.
 * Per block: x transposed to (D, R) in double; log-densities q_k = log w_k - ½ log|C_k|
 * - ½ Σ_d (x_d - a μ_kd)² / c_kd, a vectorised exp, then per condition the responsibilities and
 * eps_d = s Σ_k r_k (x_d - a μ_kd) / c_kd. Rows the sampler stacked for several conditions
 * (identical x, bit for bit) share their densities and exps. */
enum { GMM_R = 16, EPS_ROWWISE = 16 };

/* exp(x) for x <= 0 in double, vectorisable (no table, no branch): 2^k e^r with |r| <= ln2/2,
 * e^r by its Taylor polynomial to degree 13 (truncation < 5e-18 relative), 2^k built in the
 * exponent bits. Below -708 it returns 0 (the responsibilities divide by a sum >= 1: such a
 * term is below 1e-307 of it). Agrees with libm's exp to a few ulp. */
static inline double exp_nonpos(double x)
{
    const double LOG2E = 1.4426950408889634, LN2_HI = 6.93147180369123816490e-01,
                 LN2_LO = 1.90821492927058770002e-10, SHIFT = 6755399441055744.0;   /* 1.5 * 2^52 */
    const double keep = x >= -708.0 ? 1.0 : 0.0;
    x = x >= -708.0 ? x : -708.0;
    const double kd = x * LOG2E + SHIFT;           /* k = round(x log2 e) in the low bits */
    const double k = kd - SHIFT;
    const double r = (x - k * LN2_HI) - k * LN2_LO;
    double p = 1.0 / 6227020800.0;                 /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t kb, sb;
    const double shift = SHIFT;
    memcpy(&kb, &kd, sizeof kb);
    memcpy(&sb, &shift, sizeof sb);
    const int64_t bits = (kb - sb + 1023) << 52;   /* 2^k, k in [-1022, 0] here */
    double two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k * keep;
}

/* the step's constants of axis-aligned components: shared by every block of one call */
typedef struct {
    int64_t K, D;
    int iso;                        /* every component isotropic: eps by the cheaper form */
    double a, s;
    const double *amu;              /* [K, D] a μ */
    const double *ic;               /* [K, D] 1 / c_kd */
    const double *base;             /* [K] log w_k - ½ Σ_d log c_kd */
    const uint8_t *mask;            /* concept masks [n_concepts, K] */
    int expand;                     /* log-densities by the expanded form (q_expanded) */
    const double *ctr;              /* expanded: [D] the centre m_d = a (1/K) Σ_k μ_kd */
    const double *amuw;             /* expanded: [K, D] (a μ_kd - m_d) / c_kd (isotropic: no 1/c) */
    const double *mmw;              /* expanded: [K] Σ_d (a μ_kd - m_d)² / c_kd (isotropic: no 1/c) */
    double icmax;                   /* expanded: the largest 1 / c_kd */
} gmm_axis;

/* per-thread scratch of one block, in doubles */
static size_t axis_scratch(int64_t K, int64_t D) { return (size_t)(3 * D + 3 * K + 5) * GMM_R; }

/* Log-densities by the expanded form, from GMM_EXPAND_K components in GMM_EXPAND_D dimensions:
 * with y = x - m and ν_k = aμ_k - m, m the components' centre (fewer digits cancel: below),
 *     Σ_d (y_d - ν_kd)² / c_kd = Σ_d y_d² / c_kd - 2 Σ_d y_d (ν_kd / c_kd) + Σ_d ν_kd² / c_kd,
 * the last term once per step (axis_params), the isotropic first term ‖y‖² / c once per row. The
 * middle term is a (R x D) x (D x KB) product with the R rows in SIMD lanes and KB components in
 * registers: x is loaded once per dimension for KB components, one multiply-add per (row, k, d)
 * where the direct form takes a subtraction and a multiply-add (isotropic; diagonal: two
 * multiply-adds instead of a subtraction and two multiplications). Each (row, k) sum runs over d
 * in order 0..D-1 in its own accumulator, whatever the tile or the row's neighbours, so a row's
 * result never depends on the batch. Cancellation: in double the result carries an absolute
 * error of about 1e-16 (‖y‖² + ‖ν_k‖²) / c against the direct form's 1e-16 q; q enters
 * exp(q - max q), so the responsibilities change by that much relative. Centring keeps ‖y‖ and
 * ‖ν_k‖ at the mixture's spread, not its offset from the origin (means 1000 away, c = 1e-3:
 * 3e-5 relative error in eps uncentred, float32 rounding centred); a sum that cancels below
 * zero is set to zero. Where the error could still show, the direct form is used: a step whose
 * largest ‖ν_k‖² / c exceeds GMM_EXPAND_SAFE (axis_params), and a row whose ‖y‖² / c does
 * (axis_block; it depends on that row alone). Components 1000 apart at c = 1e-3 (‖y‖² / c ~ 4e10)
 * gave 6e-6 relative error in eps without this guard. */
#define GMM_EXPAND_SAFE 1e8
enum { GMM_KB = 4, GMM_EXPAND_K = 8, GMM_EXPAND_D = 16 };

static inline __attribute__((always_inline)) void q_expanded(const gmm_axis *P, const int KB,
                                                             int64_t k0, const double *yT,
                                                             const double *yy, double *q,
                                                             double *M)
{
    enum { R = GMM_R };
    const int64_t D = P->D;
    double acc[GMM_KB][R], acc2[GMM_KB][R];
    for (int j = 0; j < KB; j++)
        for (int i = 0; i < R; i++) acc[j][i] = acc2[j][i] = 0.0;
    for (int64_t d = 0; d < D; d++) {
        const double *yd = yT + d * R;
        for (int j = 0; j < KB; j++) {
            const double m = P->amuw[(k0 + j) * D + d];
            #pragma omp simd
            for (int i = 0; i < R; i++) acc[j][i] += yd[i] * m;
        }
        if (!P->iso) {
            for (int j = 0; j < KB; j++) {
                const double c = P->ic[(k0 + j) * D + d];
                #pragma omp simd
                for (int i = 0; i < R; i++) acc2[j][i] += (yd[i] * yd[i]) * c;
            }
        }
    }
    for (int j = 0; j < KB; j++) {
        const int64_t k = k0 + j;
        const double b = P->base[k], mm = P->mmw[k], c = P->iso ? P->ic[k * D] : 1.0;
        #pragma omp simd
        for (int i = 0; i < R; i++) {
            double t = ((P->iso ? yy[i] : acc2[j][i]) + mm) - 2.0 * acc[j][i];
            t = t > 0.0 ? t * c : 0.0;
            q[k * R + i] = b - 0.5 * t;
            M[i] = q[k * R + i] > M[i] ? q[k * R + i] : M[i];
        }
    }
}

/* eps of one row at dimensions [d0, d0 + V): w[k * stride] the row's weight of component k
 * (r_k, or r_k / c_k in the isotropic form, where ai = Σ_k r_k / c_k) */
static inline __attribute__((always_inline)) void eps_chunk(const gmm_axis *P, const int V,
                                                            int64_t d0, const double *w,
                                                            int64_t stride, double ai,
                                                            const float *xi, float *o)
{
    const int64_t K = P->K, D = P->D;
    double acc[32];
    if (P->iso) {
        #pragma omp simd
        for (int l = 0; l < V; l++) acc[l] = (double)xi[d0 + l] * ai;
        for (int64_t k = 0; k < K; k++) {
            const double wk = w[k * stride], *m = P->amu + k * D + d0;
            #pragma omp simd
            for (int l = 0; l < V; l++) acc[l] -= wk * m[l];
        }
    } else {
        #pragma omp simd
        for (int l = 0; l < V; l++) acc[l] = 0.0;
        for (int64_t k = 0; k < K; k++) {
            const double wk = w[k * stride], *m = P->amu + k * D + d0, *c = P->ic + k * D + d0;
            #pragma omp simd
            for (int l = 0; l < V; l++) acc[l] += wk * (((double)xi[d0 + l] - m[l]) * c[l]);
        }
    }
    const double sc = P->s;
    #pragma omp simd
    for (int l = 0; l < V; l++) o[d0 + l] = (float)(sc * acc[l]);
}

/* eps_chunk for V = 8 NV dimensions in vector variables: GCC kept eps_chunk's acc[32] on the
 * stack (a load-store chain per component); the same operations per element in the same order,
 * so the same bits */
typedef double gmm_v8 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) void eps_chunk_v(const gmm_axis *P, const int NV,
                                                              int64_t d0, const double *w,
                                                              int64_t stride, double ai,
                                                              const float *xi, float *o)
{
    const int64_t K = P->K, D = P->D;
    gmm_v8 acc[4], xv[4];
    #pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
        for (int l = 0; l < 8; l++) xv[j][l] = (double)xi[d0 + 8 * j + l];
    if (P->iso) {
        #pragma GCC unroll 4
        for (int j = 0; j < NV; j++) acc[j] = xv[j] * ai;
        for (int64_t k = 0; k < K; k++) {
            const double wk = w[k * stride], *m = P->amu + k * D + d0;
            #pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                gmm_v8 mv;
                memcpy(&mv, m + 8 * j, sizeof mv);
                acc[j] -= wk * mv;
            }
        }
    } else {
        #pragma GCC unroll 4
        for (int j = 0; j < NV; j++) acc[j] = (gmm_v8){0};
        for (int64_t k = 0; k < K; k++) {
            const double wk = w[k * stride], *m = P->amu + k * D + d0, *c = P->ic + k * D + d0;
            #pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                gmm_v8 mv, cv;
                memcpy(&mv, m + 8 * j, sizeof mv);
                memcpy(&cv, c + 8 * j, sizeof cv);
                acc[j] += wk * ((xv[j] - mv) * cv);
            }
        }
    }
    const double sc = P->s;
    #pragma GCC unroll 4
    for (int j = 0; j < NV; j++)
        for (int l = 0; l < 8; l++) o[d0 + 8 * j + l] = (float)(sc * acc[j][l]);
}

/* one block: x rows src[0..nr) (the rest of the R lanes repeat row src[0]); for each of nb
 * conditions j, outputs to rows dst[j * R + i] (< 0: none) with that row's condition */
GUIDE_CLONES_GMM
static void axis_block(const gmm_axis *P, int nr, const int64_t *src, int nb, const int64_t *dst,
                       const float *x, const int32_t *cond, float *out, double *ws)
{
    enum { R = GMM_R };
    const int64_t K = P->K, D = P->D;
    double *xT = ws, *q = xT + D * R, *E = q + K * R, *W = E + K * R, *mx = W + K * R;
    double *M = mx + R, *tot = M + R, *A = tot + R, *eT = A + R;  /* eT: eps (D, R), D small */
    double *yT = eT + D * R, *yy = yT + D * R;          /* the expanded form: x - m (D, R), ‖y‖² */
    for (int i = 0; i < R; i++) {
        const float *xi = x + src[i < nr ? i : 0] * D;
        for (int64_t d = 0; d < D; d++) xT[d * R + i] = (double)xi[d];
    }
    /* log densities; M: the largest per lane */
    int far[R] = {0}, any_far = 0;   /* far[i]: lane i by the direct form (expanded steps) */
    for (int i = 0; i < R; i++) M[i] = -INFINITY;
    if (P->expand) {
        for (int i = 0; i < R; i++) yy[i] = 0.0;
        for (int64_t d = 0; d < D; d++) {
            const double m = P->ctr[d];
            #pragma omp simd
            for (int i = 0; i < R; i++) {
                yT[d * R + i] = xT[d * R + i] - m;
                yy[i] += yT[d * R + i] * yT[d * R + i];
            }
        }
        int64_t k = 0;
        for (; k + GMM_KB <= K; k += GMM_KB) q_expanded(P, GMM_KB, k, yT, yy, q, M);
        for (; k < K; k++) q_expanded(P, 1, k, yT, yy, q, M);
        /* rows far from the centre (q_expanded's guard): their densities again, directly */
        for (int i = 0; i < R; i++) {
            far[i] = yy[i] * P->icmax > GMM_EXPAND_SAFE;
            any_far |= far[i];
            if (far[i]) M[i] = -INFINITY;
        }
    }
    for (int64_t k = 0; k < K && (!P->expand || any_far); k++) {
        const double *amu = P->amu + k * D, *ic = P->ic + k * D;
        double acc[R];
        for (int i = 0; i < R; i++) acc[i] = 0.0;
        if (P->iso) {
            for (int64_t d = 0; d < D; d++) {
                const double m = amu[d], *xd = xT + d * R;
                #pragma omp simd
                for (int i = 0; i < R; i++) {
                    const double t = xd[i] - m;
                    acc[i] += t * t;
                }
            }
            const double c = ic[0];
            #pragma omp simd
            for (int i = 0; i < R; i++) acc[i] *= c;
        } else {
            for (int64_t d = 0; d < D; d++) {
                const double m = amu[d], c = ic[d], *xd = xT + d * R;
                #pragma omp simd
                for (int i = 0; i < R; i++) {
                    const double t = xd[i] - m;
                    acc[i] += t * t * c;
                }
            }
        }
        const double b = P->base[k];
        #pragma omp simd
        for (int i = 0; i < R; i++) {
            if (!P->expand || far[i]) q[k * R + i] = b - 0.5 * acc[i];
            M[i] = q[k * R + i] > M[i] ? q[k * R + i] : M[i];
        }
    }
    for (int64_t k = 0; k < K; k++) {
        #pragma omp simd
        for (int i = 0; i < R; i++) E[k * R + i] = exp_nonpos(q[k * R + i] - M[i]);
    }
    for (int j = 0; j < nb; j++) {
        const int64_t *dj = dst + j * R;
        /* responsibilities within each lane's condition: exp(q - M) renormalised over the
         * allowed components; a condition whose best component lies far below M (its exps
         * would lose precision or vanish) gets exps of its own. The common case, every lane of
         * the block with one condition (the sampler's stacked blocks), goes across lanes;
         * the per-lane loop below does the same operations in the same order. */
        int uniform = nr > 0 && dj[0] >= 0;
        const int32_t c0 = uniform ? cond[dj[0]] : 0;
        for (int i = 1; i < nr && uniform; i++) uniform = dj[i] >= 0 && cond[dj[i]] == c0;
        const uint8_t *mk0 = uniform && c0 >= 0 ? P->mask + (int64_t)c0 * K : NULL;
        if (uniform) {
            for (int i = 0; i < R; i++) {
                tot[i] = 0.0;
                mx[i] = -INFINITY;
            }
            for (int64_t k = 0; k < K; k++) {
                if (mk0 && !mk0[k]) continue;
                #pragma omp simd
                for (int i = 0; i < R; i++) mx[i] = q[k * R + i] > mx[i] ? q[k * R + i] : mx[i];
            }
            for (int i = 0; i < nr && uniform; i++) uniform = !(M[i] - mx[i] > 600.0);
        }
        if (uniform) {
            for (int64_t k = 0; k < K; k++) {
                if (mk0 && !mk0[k]) {
                    #pragma omp simd
                    for (int i = 0; i < R; i++) W[k * R + i] = 0.0;
                    continue;               /* tot += 0.0 would change nothing */
                }
                #pragma omp simd
                for (int i = 0; i < R; i++) {
                    W[k * R + i] = E[k * R + i];
                    tot[i] += E[k * R + i];
                }
            }
        } else {
            for (int i = 0; i < R; i++) {
                tot[i] = 0.0;
                mx[i] = -INFINITY;
            }
            for (int i = 0; i < R; i++) {
                if (i >= nr || dj[i] < 0) {                 /* a lane without output */
                    tot[i] = 1.0;
                    for (int64_t k = 0; k < K; k++) W[k * R + i] = 0.0;
                    continue;
                }
                const uint8_t *mk = cond[dj[i]] >= 0 ? P->mask + (int64_t)cond[dj[i]] * K : NULL;
                for (int64_t k = 0; k < K; k++)
                    if ((!mk || mk[k]) && q[k * R + i] > mx[i]) mx[i] = q[k * R + i];
                const int own = M[i] - mx[i] > 600.0;
                for (int64_t k = 0; k < K; k++) {
                    const double e = (mk && !mk[k]) ? 0.0
                                     : own ? exp_nonpos(q[k * R + i] - mx[i]) : E[k * R + i];
                    W[k * R + i] = e;
                    tot[i] += e;
                }
            }
        }
        for (int64_t k = 0; k < K; k++) {
            #pragma omp simd
            for (int i = 0; i < R; i++) W[k * R + i] /= tot[i];
        }
        /* eps; the isotropic form: s (x_d Σ_k r_k/c_k - Σ_k (r_k/c_k) a μ_kd) */
        if (P->iso) {
            for (int i = 0; i < R; i++) A[i] = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const double c = P->ic[k * D];
                #pragma omp simd
                for (int i = 0; i < R; i++) {
                    W[k * R + i] *= c;
                    A[i] += W[k * R + i];
                }
            }
        }
        if (D < EPS_ROWWISE) {
            /* few dimensions (the 2-D toy): across lanes, then transposed back */
            for (int64_t d = 0; d < D; d++) {
                double acc[R];
                const double *xd = xT + d * R;
                if (P->iso) {
                    #pragma omp simd
                    for (int i = 0; i < R; i++) acc[i] = xd[i] * A[i];
                    for (int64_t k = 0; k < K; k++) {
                        const double m = P->amu[k * D + d];
                        #pragma omp simd
                        for (int i = 0; i < R; i++) acc[i] -= W[k * R + i] * m;
                    }
                } else {
                    for (int i = 0; i < R; i++) acc[i] = 0.0;
                    for (int64_t k = 0; k < K; k++) {
                        const double m = P->amu[k * D + d], c = P->ic[k * D + d];
                        #pragma omp simd
                        for (int i = 0; i < R; i++) acc[i] += W[k * R + i] * ((xd[i] - m) * c);
                    }
                }
                #pragma omp simd
                for (int i = 0; i < R; i++) eT[d * R + i] = P->s * acc[i];
            }
            for (int i = 0; i < nr; i++) {
                if (dj[i] < 0) continue;
                float *o = out + dj[i] * D;
                for (int64_t d = 0; d < D; d++) o[d] = (float)eT[d * R + i];
            }
            continue;
        }
        /* eps row by row, across d: the weights are per row (a broadcast), so the result comes
         * out in row order with no transpose back (a scalar strided loop was a quarter of
         * this function at d = 64); per element the same operations in the same order as
         * across lanes. 32 dimensions at a time keep four independent sums in registers
         * through the K components; then 8 at a time, then one. */
        for (int i = 0; i < nr; i++) {
            if (dj[i] < 0) continue;
            const float *xi = x + src[i] * D;
            float *o = out + dj[i] * D;
            const double ai = P->iso ? A[i] : 0.0;
            int64_t d0 = 0;
            for (; d0 + 32 <= D; d0 += 32) eps_chunk_v(P, 4, d0, W + i, R, ai, xi, o);
            for (; d0 + 8 <= D; d0 += 8) eps_chunk_v(P, 1, d0, W + i, R, ai, xi, o);
            for (; d0 < D; d0++) eps_chunk(P, 1, d0, W + i, R, ai, xi, o);
        }
    }
}

/* the step's constants (K log evaluations per dimension, once per call) */
static void axis_params(const ccfg_gmm *g, double alpha_bar, int iso, int expand, double *amu,
                        double *ic, double *base, double *ctr, double *amuw, double *mmw,
                        gmm_axis *P)
{
    const int64_t K = g->K, D = g->dim;
    const double a = sqrt(alpha_bar), s2 = 1.0 - alpha_bar;
    for (int64_t k = 0; k < K; k++) {
        double logdet = 0.0;
        for (int64_t d = 0; d < D; d++) {
            const double c = a * a * g->evals[k * D + d] + s2;
            amu[k * D + d] = a * g->means[k * D + d];
            ic[k * D + d] = 1.0 / c;
            logdet += log(c);
        }
        base[k] = g->log_weights[k] - 0.5 * logdet;
    }
    if (expand) {
        /* the expanded form's constants, relative to the centre of the noised means */
        for (int64_t d = 0; d < D; d++) {
            double m = 0.0;
            for (int64_t k = 0; k < K; k++) m += amu[k * D + d];
            ctr[d] = m / (double)K;
        }
        for (int64_t k = 0; k < K; k++) {
            double mm = 0.0;
            for (int64_t d = 0; d < D; d++) {
                const double v = amu[k * D + d] - ctr[d], w = iso ? 1.0 : ic[k * D + d];
                amuw[k * D + d] = v * w;
                mm += v * v * w;
            }
            mmw[k] = mm;
        }
    }
    double icmax = 0.0, numax = 0.0;
    for (int64_t k = 0; k < K && expand; k++) {
        for (int64_t d = 0; d < D; d++) icmax = fmax(icmax, ic[k * D + d]);
        numax = fmax(numax, iso ? mmw[k] * ic[k * D] : mmw[k]);
    }
    if (numax > GMM_EXPAND_SAFE) expand = 0;   /* q_expanded's guard: the whole step directly */
    *P = (gmm_axis){.K = K, .D = D, .iso = iso, .a = a, .s = sqrt(s2), .amu = amu, .ic = ic,
                    .base = base, .mask = g->concept_mask, .expand = expand, .ctr = ctr,
                    .amuw = amuw, .mmw = mmw, .icmax = icmax};
}

/* every component's eigenvalues equal (the isotropic eps form applies) */
static int all_isotropic(const ccfg_gmm *g)
{
    for (int64_t k = 0; k < g->K; k++)
        for (int64_t d = 1; d < g->dim; d++)
            if (g->evals[k * g->dim + d] != g->evals[k * g->dim]) return 0;
    return 1;
}

/* rows stacked by the sampler as nb blocks of the same x: the largest nb <= 2 + the most
 * negatives with rows % nb == 0 and the blocks' first rows equal (each row is still compared
 * before it shares) */
static int stacked_blocks(int64_t rows, int64_t D, const float *x)
{
    for (int nb = 2 + CCFG_MAX_RULE_NEGATIVES; nb >= 2; nb--) {
        if (rows % nb) continue;
        const int64_t m = rows / nb;
        int same = 1;
        for (int j = 1; j < nb && same; j++)
            same = !memcmp(x, x + j * m * D, (size_t)D * sizeof *x);
        if (same) return nb;
    }
    return 1;
}

/* rows [u0, u1) of the first stacked block with their copies in the other blocks */
static void axis_range(const gmm_axis *P, int64_t u0, int64_t u1, int64_t m, int nb,
                       int all_same, const float *x, const int32_t *cond, float *out, double *ws)
{
    enum { R = GMM_R };
    const int64_t D = P->D;
    int64_t src[R], dst[(2 + CCFG_MAX_RULE_NEGATIVES) * R];
    for (int64_t u = u0; u < u1; u += R) {
        const int nr = (int)(u1 - u < R ? u1 - u : R);
        for (int i = 0; i < nr; i++) src[i] = u + i;
        for (int j = 0; j < nb; j++)
            for (int i = 0; i < nr; i++) {
                const int64_t r = u + i + j * m;
                dst[j * R + i] = (j == 0 || all_same ||
                                  !memcmp(x + r * D, x + (u + i) * D, (size_t)D * sizeof *x))
                                     ? r : -1;
            }
        axis_block(P, nr, src, nb, dst, x, cond, out, ws);
        /* a row that differs from its block-0 row (not the sampler's stacking): on its own */
        for (int j = 1; j < nb; j++)
            for (int i = 0; i < nr; i++)
                if (dst[j * R + i] < 0) {
                    const int64_t r = u + i + j * m;
                    axis_block(P, 1, &r, 1, &r, x, cond, out, ws);
                }
    }
}

/* all rows, threads over blocks of rows; ws: `threads` scratch areas of axis_scratch doubles */
static void axis_eps(const gmm_axis *P, int64_t rows, const float *x, const int32_t *cond,
                     float *out, double *ws, int threads)
{
    const int nb = stacked_blocks(rows, P->D, x);
    const int64_t m = rows / nb, per = 4 * GMM_R, chunks = (m + per - 1) / per;
    const size_t scratch = axis_scratch(P->K, P->D);
    (void)scratch, (void)threads;  /* read only by OpenMP (fuzz builds have none) */
    #pragma omp parallel for schedule(dynamic) num_threads(threads) \
        if (threads > 1 && rows * P->K * P->D > (1 << 15))
    for (int64_t c = 0; c < chunks; c++) {
#ifdef _OPENMP
        double *w = ws + (size_t)omp_get_thread_num() * scratch;
#else
        double *w = ws;
#endif
        const int64_t u0 = c * per, u1 = u0 + per < m ? u0 + per : m;
        /* the sampler's blocks are copies: one comparison per chunk and block instead of a
         * memcmp call per row (6% of a d=64 step); rows one by one only when they differ */
        int all_same = 1;
        for (int j = 1; j < nb && all_same; j++)
            all_same = !memcmp(x + u0 * P->D, x + (j * m + u0) * P->D,
                               (size_t)((u1 - u0) * P->D) * sizeof *x);
        axis_range(P, u0, u1, m, nb, all_same, x, cond, out, w);
    }
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

/* what one evaluation needs besides the mixture, allocated once per placement (cpu_gmm_load):
 * no allocation per sampler step */
struct ccfg_gmm_work {
    int iso, threads, expand;
    double *amu, *ic, *base;        /* axis-aligned: the step's constants */
    double *ctr, *amuw, *mmw;       /* the expanded form's constants */
    double *scratch;                /* axis-aligned: per-thread block scratch */
};

int ccfg_gmm_work_new(const ccfg_gmm *g, ccfg_gmm_work **out)
{
    ccfg_gmm_work *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w) goto fail;
    if (!g->evecs) {
        const size_t kd = (size_t)(g->K * g->dim);
#ifdef _OPENMP
        w->threads = omp_get_max_threads();
#else
        w->threads = 1;
#endif
        w->iso = all_isotropic(g);
        /* the expanded form where it was measured faster (docs/PERFORMANCE.md, the section
         * on issue 16 item 4: from K = 8 and d = 16; at K = 4, d = 32-64 0.95-1.01x of the
         * direct form, at d = 2-8 within 1-9%); CCFG_GMM_EXPANDED=0/1 forces one form (tests,
         * measurements), read once per placement */
        const char *env = getenv("CCFG_GMM_EXPANDED");
        w->expand = env && *env ? env[0] != '0' : g->K >= GMM_EXPAND_K && g->dim >= GMM_EXPAND_D;
        w->ctr = malloc((size_t)(g->dim ? g->dim : 1) * sizeof *w->ctr);
        w->amuw = malloc((kd ? kd : 1) * sizeof *w->amuw);
        w->mmw = malloc((size_t)(g->K ? g->K : 1) * sizeof *w->mmw);
        w->amu = malloc((kd ? kd : 1) * sizeof *w->amu);
        w->ic = malloc((kd ? kd : 1) * sizeof *w->ic);
        w->base = malloc((size_t)(g->K ? g->K : 1) * sizeof *w->base);
        w->scratch = malloc(axis_scratch(g->K, g->dim) * (size_t)w->threads * sizeof *w->scratch);
        if (!w->amu || !w->ic || !w->base || !w->scratch || !w->ctr || !w->amuw || !w->mmw)
            goto fail;
    }
    *out = w;
    return CCFG_OK;
fail:
    ccfg_gmm_work_free(w);
    return ccfg_fail(CCFG_ENOMEM, "out of memory for the Gaussian-mixture denoiser");
}

void ccfg_gmm_work_free(ccfg_gmm_work *w)
{
    if (!w) return;
    free(w->amu);
    free(w->ic);
    free(w->base);
    free(w->ctr);
    free(w->amuw);
    free(w->mmw);
    free(w->scratch);
    free(w);
}

/* full covariances: blocks of rows through BLAS, in double */
static int full_eps(const ccfg_gmm *g, int64_t rows, const float *x, double alpha_bar,
                    const int32_t *cond, float *out)
{
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

int ccfg_gmm_eps_with(const ccfg_gmm *g, ccfg_gmm_work *w, int64_t rows, const float *x,
                      double alpha_bar, const int32_t *cond, float *out)
{
    int status = ccfg_gmm_check(g, rows, alpha_bar, cond);
    if (status) return status;
    if (g->evecs) return full_eps(g, rows, x, alpha_bar, cond, out);
    if (rows <= 0 || g->dim <= 0) return CCFG_OK;
    gmm_axis P;
    axis_params(g, alpha_bar, w->iso, w->expand, w->amu, w->ic, w->base, w->ctr, w->amuw, w->mmw,
                &P);
    axis_eps(&P, rows, x, cond, out, w->scratch, w->threads);
    return CCFG_OK;
}

int ccfg_gmm_eps(const ccfg_gmm *g, int64_t rows, const float *x, double alpha_bar,
                 const int32_t *cond, float *out)
{
    ccfg_gmm_work *w;
    int status = ccfg_gmm_work_new(g, &w);
    if (status) return status;
    status = ccfg_gmm_eps_with(g, w, rows, x, alpha_bar, cond, out);
    ccfg_gmm_work_free(w);
    return status;
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
