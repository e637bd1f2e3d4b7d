/* solver.c — the sampling loop, step for step as diffusers' schedulers.
 *
 * The state lives in each solver's own space: the VP state x_t = √ā x0 + √(1-ā) ε for DDIM, DDPM
 * and DPM++; the sigma-space state x = x_t / √ā = x0 + σ ε for Euler, Euler ancestral and Heun.
 * The model always sees the VP view. Given eps, every step is an affine map of a few vectors: one
 * or two backend axpbypcz calls, their coefficients computed here in double. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "ccfg.h"

static const char *const solver_names[] = {"ddim", "ddpm", "euler", "euler_ancestral", "heun",
                                           "dpmpp_2m"};

/* buffers, each (n, dim): X, XN the state and the next one (swapped every step; step 0 reads x_T
 * in place); VP, VPN their VP views (sigma space only); EPS the model's eps; AUX0 noise, Heun's
 * corrector eps or DPM++'s x0; AUX1 Heun's predictor or DPM++'s previous x0 */
enum { X, XN, VP, VPN, EPS, AUX0, AUX1, NBUF };

typedef struct {
    const ccfg_backend *be;
    const ccfg_plan *plan;
    const ccfg_solver_callbacks *cb;
    int64_t n, dim, count;
    uint64_t seed;
    int64_t first;
    double eta;         /* DDIM's eta, 0 for the others */
    int sigma_space;    /* state x = x_t/√ā (Euler, Euler ancestral, Heun) rather than x_t */
    /* DDIM/DDPM x0 processing (clip_sample, thresholding): off when both are 0 */
    double clip, ratio, sample_max;
    double *bounds;     /* [n] per-row bounds (host) */
    float *host_x0;     /* [n, dim] x0 on the host, for the quantiles (NULL on host memory) */
    double *sorted;     /* [dim] one row's |x0|, sorted */
    int variance_large; /* DDPM: β_t noise (fixed_large) rather than β̃_t */
} solve_args;

/* a failed backend call ends the loop with its status (the caller frees the buffers) */
#define TRY(call)                                                                                 \
    do {                                                                                          \
        if ((status = (call)) != CCFG_OK) return status;                                          \
    } while (0)

/* Tags of the non-finite watch: 2 step for the model's output at `step` (sampler.c), 2 step + 1
 * for the state after `step`; the smallest is the first thing that went bad. */
int ccfg_nonfinite_error(const ccfg_plan *plan, int tag)
{
    const int step = tag / 2, level = plan->solver == CCFG_SOLVER_HEUN ? 2 * step : step;
    if (tag % 2 == 0)
        return ccfg_fail(CCFG_ENONFINITE, "the model returned non-finite values at step %d", step);
    return ccfg_fail(CCFG_ENONFINITE, "non-finite values at step %d (steps 0..%d; %s, timestep %g)",
                     step, plan->steps - 1, solver_names[plan->solver], plan->timesteps[level]);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The predicted x0 of a DDIM/DDPM step, x0 = (k x - √(1-ā) ε) / √ā, processed as diffusers'
 * schedulers do (docs/methods.md §15.4-15.5): clip_sample clamps it to ±clip_sample_range; dynamic
 * thresholding (Imagen; diffusers' _threshold_sample) takes per sample the `ratio` quantile s of
 * |x0| (linear interpolation, as torch.quantile), clamps s to [1, sample_max] and maps x0 to
 * clamp(x0, -s, s) / s. The quantile is taken on the host (a download per step on a device). */
static int processed_x0(const solve_args *r, const float *cur, const float *eps, double k,
                        double a, float *x0)
{
    const ccfg_backend *be = r->be;
    const int64_t n = r->n, dim = r->dim;
    int status;
    TRY(be->axpbypcz(be, r->count, k / sqrt(a), cur, -sqrt((1.0 - a) / a), eps, 0.0, NULL, x0));
    if (r->ratio <= 0.0) {
        for (int64_t i = 0; i < n; i++) r->bounds[i] = r->clip;
        return be->clamp_rows(be, n, dim, x0, r->bounds, 0, x0);
    }
    const float *h = x0;
    if (!be->host_memory) {
        TRY(be->download(be, r->host_x0, x0, (size_t)r->count * sizeof(float)));
        h = r->host_x0;
    }
    const double pos = r->ratio * (double)(dim - 1);
    const int64_t lo = (int64_t)floor(pos), hi = lo + 1 < dim ? lo + 1 : lo;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < dim; j++) r->sorted[j] = fabs((double)h[i * dim + j]);
        qsort(r->sorted, (size_t)dim, sizeof(double), cmp_double);
        const double q = r->sorted[lo] + (r->sorted[hi] - r->sorted[lo]) * (pos - (double)lo);
        r->bounds[i] = fmin(fmax(q, 1.0), r->sample_max);
    }
    return be->clamp_rows(be, n, dim, x0, r->bounds, 1, x0);
}

/* x_T -> x_0; the callbacks see VP states, the buffers are allocated by the caller */
static int loop(const solve_args *r, float *x, float *trajectory, float *const buf[NBUF])
{
    const ccfg_backend *be = r->be;
    const ccfg_plan *plan = r->plan;
    const ccfg_solver_callbacks *cb = r->cb;
    const int kind = plan->solver, steps = plan->steps, sigma_space = r->sigma_space;
    const int64_t n = r->n, dim = r->dim, count = r->count;
    const double eta = r->eta;
    const double *sig = plan->sigmas, *ab = plan->alpha_bars, *abn = plan->alpha_bars_next;
    const int x0_processed = r->clip > 0.0 || r->ratio > 0.0;
    int status;
    /* The state is k * cur. The first step reads x_T in place with k = init_noise_sigma: storing
     * σ_max x_T in float32 would round a value the step then mostly cancels (σ_max ~ 1e4 on
     * squaredcos_cap_v2). */
    float *cur = x, *nxt = buf[XN], *eps = buf[EPS];
    double k = plan->init_noise_sigma;
    float *vp = sigma_space ? buf[VP] : cur, *vpn = sigma_space ? buf[VPN] : nxt;
    float *m0 = buf[AUX0], *m1 = buf[AUX1];     /* DPM++: x0 of this step and of the last */

    if (sigma_space)
        TRY(be->axpbypcz(be, count, k / sqrt(1.0 + sig[0] * sig[0]), x, 0.0, NULL, 0.0, NULL, vp));
    if (trajectory) TRY(be->download(be, trajectory, vp, (size_t)count * sizeof(float)));

    for (int i = 0; i < steps; i++) {
        const double s = sig[i], s1 = sig[i + 1];
        const int level = kind == CCFG_SOLVER_HEUN ? 2 * i : i;
        status = cb->eps(cb->ctx, i, level, 0, vp, plan->timesteps[level], ab[i], eps);
        if (status) return status;

        double eta_eq = 0.0;    /* the DDIM eta of this transition, for the callback */
        double std = 0.0;       /* coefficient of fresh noise; drawn only when nonzero */
        switch (kind) {
        case CCFG_SOLVER_DDIM: {
            /* x' = √ā' x0 + √(1-ā'-std²) ε + std z, x0 = (x - √(1-ā) ε)/√ā  (DDIM eq. 12) */
            const double a = ab[i], an = abn[i];
            const double var = (1.0 - an) / (1.0 - a) * (1.0 - a / an);
            /* noise only when eta > 0 (its buffer exists only then): 0 * NaN is NaN, and var is
             * NaN where ā = 1 */
            std = eta > 0.0 ? eta * sqrt(var) : 0.0;
            if (x0_processed) {
                /* x0 clipped or thresholded; ε stays the model's (use_clipped_model_output off) */
                TRY(processed_x0(r, cur, eps, k, a, buf[AUX1]));
                TRY(be->axpbypcz(be, count, sqrt(an), buf[AUX1],
                                 sqrt(fmax(1.0 - an - std * std, 0.0)), eps, 0.0, NULL, nxt));
            } else {
                const double cx = sqrt(an / a);
                const double ce = sqrt(fmax(1.0 - an - std * std, 0.0)) - sqrt(an * (1.0 - a) / a);
                TRY(be->axpbypcz(be, count, k * cx, cur, ce, eps, 0.0, NULL, nxt));
            }
            eta_eq = eta;
            break;
        }
        case CCFG_SOLVER_DDPM: {
            /* posterior mean (DDPM eq. 7) from x0 and x; noise variance β̃_t (fixed_small) or
             * β_t (fixed_large), as diffusers' DDPMScheduler: no noise at t = 0, the fixed_small
             * variance clamped at 1e-20 elsewhere. The rule's transition callback still reports
             * eta = 1 (the β̃_t posterior): DNG's official code adds β_t noise but scores the move
             * with β̃_t, and so does this. */
            const double a = ab[i], an = abn[i], alpha = a / an, beta = 1.0 - alpha;
            const double c0 = sqrt(an) * beta / (1.0 - a);
            const double cx = c0 / sqrt(a) + sqrt(alpha) * (1.0 - an) / (1.0 - a);
            const double ce = -c0 * sqrt((1.0 - a) / a);
            if (plan->timesteps[i] > 0.0)
                std = r->variance_large ? sqrt(beta) : sqrt(fmax((1.0 - an) / (1.0 - a) * beta, 1e-20));
            if (x0_processed) {
                /* the posterior mean from the processed x0 and x */
                TRY(processed_x0(r, cur, eps, k, a, buf[AUX1]));
                TRY(be->axpbypcz(be, count, c0, buf[AUX1],
                                 k * sqrt(alpha) * (1.0 - an) / (1.0 - a), cur, 0.0, NULL, nxt));
            } else {
                TRY(be->axpbypcz(be, count, k * cx, cur, ce, eps, 0.0, NULL, nxt));
            }
            eta_eq = 1.0;
            break;
        }
        case CCFG_SOLVER_EULER:
            /* dx/dσ = ε */
            TRY(be->axpbypcz(be, count, k, cur, s1 - s, eps, 0.0, NULL, nxt));
            break;
        case CCFG_SOLVER_EULER_ANCESTRAL: {
            /* Euler down to σ_down, then noise up to σ': σ_up² + σ_down² = σ'², σ_down = σ'²/σ */
            const double down = s1 * s1 / s;
            std = s1 * sqrt(s * s - s1 * s1) / s;
            TRY(be->axpbypcz(be, count, k, cur, down - s, eps, 0.0, NULL, nxt));
            eta_eq = 1.0;
            break;
        }
        case CCFG_SOLVER_HEUN: {
            if (s1 == 0.0) {    /* the last step is plain Euler (no eval at σ = 0) */
                TRY(be->axpbypcz(be, count, k, cur, -s, eps, 0.0, NULL, nxt));
                break;
            }
            float *pred = buf[AUX1], *eps2 = buf[AUX0];
            TRY(be->axpbypcz(be, count, k, cur, s1 - s, eps, 0.0, NULL, pred));
            /* vpn is free until the step ends: the predictor's VP view */
            TRY(be->axpbypcz(be, count, 1.0 / sqrt(1.0 + s1 * s1), pred, 0.0, NULL, 0.0, NULL, vpn));
            status = cb->eps(cb->ctx, i, level + 1, 1, vpn, plan->timesteps[level + 1], abn[i],
                             eps2);
            if (status) return status;
            TRY(be->axpbypcz(be, count, k, cur, 0.5 * (s1 - s), eps, 0.5 * (s1 - s), eps2, nxt));
            break;
        }
        case CCFG_SOLVER_DPMPP_2M: {
            /* DPM-Solver++(2M), midpoint: x' = (σ'_t/σ_t) x - α' (e^{-h} - 1) (D0 + D1/2) with
             * λ = log(α_t/σ_t) = -log σ, D0 = x0, D1 = (x0 - x0_prev)/r0; first order at the first
             * step and at the last (to σ = 0, where it lands on x0) */
            const double a = 1.0 / sqrt(1.0 + s * s);
            TRY(be->axpbypcz(be, count, k / a, cur, -s, eps, 0.0, NULL, m0));   /* x0 = (x - σ_t ε)/α */
            if (s1 == 0.0) {
                TRY(be->axpbypcz(be, count, 1.0, m0, 0.0, NULL, 0.0, NULL, nxt));
            } else {
                const double an = 1.0 / sqrt(1.0 + s1 * s1), h = log(s / s1);
                const double cx = (s1 * an) / (s * a), c = -an * expm1(-h);
                if (i == 0) {
                    TRY(be->axpbypcz(be, count, k * cx, cur, c, m0, 0.0, NULL, nxt));
                } else {
                    const double r0 = log(sig[i - 1] / s) / h;   /* h_prev / h */
                    TRY(be->axpbypcz(be, count, k * cx, cur, c * (1.0 + 0.5 / r0), m0, -c * 0.5 / r0, m1,
                                 nxt));
                }
            }
            float *t = m0; m0 = m1; m1 = t;
            break;
        }
        }
        if (std != 0.0) {
            float *z = buf[AUX0];
            TRY(be->randn(be, n, dim, r->seed, (uint64_t)i + 1, r->first, z));
            TRY(be->axpbypcz(be, count, 1.0, nxt, std, z, 0.0, NULL, nxt));
        }
        /* a device is checked when the run waits for it (at the latest at the end) */
        TRY(be->watch_finite(be, count, nxt, 2 * i + 1));
        if (be->synchronous) {
            int bad;
            TRY(be->first_nonfinite(be, &bad));
            if (bad >= 0) return ccfg_nonfinite_error(plan, bad);
        }
        if (sigma_space)
            TRY(be->axpbypcz(be, count, 1.0 / sqrt(1.0 + s1 * s1), nxt, 0.0, NULL, 0.0, NULL, vpn));
        if (trajectory) {
            float *slot = trajectory + (int64_t)(i + 1) * count;
            TRY(be->download(be, slot, vpn, (size_t)count * sizeof(float)));
        }
        if (cb->transition &&
            (status = cb->transition(cb->ctx, i, vp, vpn, ab[i], abn[i], eta_eq)))
            return status;
        float *t = i == 0 ? buf[X] : cur;     /* x_T itself is the caller's, never written */
        cur = nxt; nxt = t; k = 1.0;
        if (sigma_space) { t = vp; vp = vpn; vpn = t; }
        else { vp = cur; vpn = nxt; }
        if (cb->progress && (status = cb->progress(cb->ctx, i + 1, steps))) return status;
    }
    TRY(be->axpbypcz(be, count, 1.0, cur, 0.0, NULL, 0.0, NULL, x));
    int bad;
    TRY(be->first_nonfinite(be, &bad));
    return bad >= 0 ? ccfg_nonfinite_error(plan, bad) : CCFG_OK;
}

int ccfg_solve(const ccfg_backend *be, const ccfg_plan *plan, const ccfg_sampler_config *cfg,
               int64_t n, int64_t dim, uint64_t seed, int64_t first, float *x, float *trajectory,
               const ccfg_solver_callbacks *cb)
{
    if (!be || !plan || !cfg || !x || !cb || !cb->eps)
        return ccfg_fail(CCFG_EINVAL, "ccfg_solve: backend, plan, cfg, x and cb->eps are required");
    if (n < 1 || dim < 1)
        return ccfg_fail(CCFG_EINVAL, "n and dim must be >= 1, got n = %lld, dim = %lld",
                         (long long)n, (long long)dim);
    if (plan->solver != cfg->solver || plan->steps != cfg->steps)
        return ccfg_fail(CCFG_EINVAL, "the plan (solver %d, %d steps) was not made from this cfg "
                         "(solver %d, %d steps)", plan->solver, plan->steps, cfg->solver,
                         cfg->steps);
    const int kind = plan->solver;
    if (kind == CCFG_SOLVER_DDIM && !(cfg->eta >= 0.0 && cfg->eta <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "eta must be in [0, 1], got %g", cfg->eta);
    solve_args r = {
        .be = be, .plan = plan, .cb = cb, .n = n, .dim = dim, .count = n * dim, .seed = seed,
        .first = first, .eta = kind == CCFG_SOLVER_DDIM ? cfg->eta : 0.0,
        .sigma_space = kind == CCFG_SOLVER_EULER || kind == CCFG_SOLVER_EULER_ANCESTRAL ||
                       kind == CCFG_SOLVER_HEUN,
        .clip = cfg->clip_sample, .ratio = cfg->threshold_ratio, .sample_max = cfg->sample_max,
        .variance_large = cfg->variance_large,
    };
    if (cfg->variance_large && kind != CCFG_SOLVER_DDPM)
        return ccfg_fail(CCFG_EINVAL, "variance_large (fixed_large noise): only the ddpm sampler "
                         "takes it, not %s", solver_names[kind]);
    /* plan_init refuses these for other samplers; a plan made from another config must not
     * drop them silently either */
    const int x0_processed = r.clip > 0.0 || r.ratio > 0.0;
    if (x0_processed && kind != CCFG_SOLVER_DDIM && kind != CCFG_SOLVER_DDPM)
        return ccfg_fail(CCFG_EINVAL, "clip_sample/thresholding: only the ddim and ddpm samplers "
                         "process x0, not %s", solver_names[kind]);
    int need[NBUF] = {1, 1, r.sigma_space, r.sigma_space, 1, 0, 0};
    need[AUX0] = (kind == CCFG_SOLVER_DDIM && r.eta > 0.0) || kind == CCFG_SOLVER_DDPM ||
                 kind == CCFG_SOLVER_EULER_ANCESTRAL || kind == CCFG_SOLVER_HEUN ||
                 kind == CCFG_SOLVER_DPMPP_2M;
    need[AUX1] = kind == CCFG_SOLVER_HEUN || kind == CCFG_SOLVER_DPMPP_2M || x0_processed;

    float *buf[NBUF] = {0};
    int status = CCFG_OK, stale;
    if (x0_processed) {
        r.bounds = malloc((size_t)n * sizeof *r.bounds);
        if (r.ratio > 0.0) {
            r.sorted = malloc((size_t)dim * sizeof *r.sorted);
            if (!be->host_memory) r.host_x0 = malloc((size_t)r.count * sizeof *r.host_x0);
        }
        if (!r.bounds || (r.ratio > 0.0 && (!r.sorted || (!be->host_memory && !r.host_x0)))) {
            status = ccfg_fail(CCFG_ENOMEM, "out of memory for x0 processing");
            goto fail;
        }
    }
    /* forget what an earlier, failed run may have left in the watch */
    if ((status = be->first_nonfinite(be, &stale))) return status;
    for (int b = 0; b < NBUF; b++)
        if (need[b] && (status = be->alloc(be, (size_t)r.count * sizeof(float), &buf[b])))
            goto fail;
    status = loop(&r, x, trajectory, buf);
fail:
    for (int b = 0; b < NBUF; b++) be->release(be, buf[b]);
    free(r.bounds);
    free(r.sorted);
    free(r.host_x0);
    return status;
}
