/* rules/sld.c — Safe Latent Diffusion (Schramowski et al., arXiv 2211.05105; docs/methods.md §6,
 * §10c): CFG plus, per negative (the safety concept eps_S = eps_n), an elementwise safety term
 *   g = μ ⊙ (eps_S - eps_u) + s_m ν,  μ = min(s_S |eps_p - eps_S|, 1) where eps_p - eps_S < λ, else 0
 *   ν <- β_m ν + (1 - β_m) g       (every step: momentum per sample and negative)
 *   eps_hat = eps_u + w D_p - w g  (from step `warmup` on)
 * The state is ν on the backend, [n_neg, n, dim]. */
#include <math.h>

#include "rules/rule.h"

enum { WARMUP, SAFETY_SCALE, THRESHOLD, MOMENTUM_SCALE, MOMENTUM_BETA };
static const char *const params[] = {"warmup", "safety_scale", "threshold", "momentum_scale",
                                     "momentum_beta", NULL};

/* CFG; the negatives enter elementwise in `after` (their coefficients stay zero) */
static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    for (int64_t i = 0; i < in->n; i++) ccfg_rule_cfg_row(coef + i * (2 + in->k), r->scale);
    return CCFG_OK;
}

static int after(const ccfg_backend *be, const ccfg_rule *r, ccfg_guide_state *st,
                 const ccfg_rule_inputs *in, int update, float *out)
{
    int status;
    /* s_S < 1 switches the safety guidance off, as the official pipeline does */
    if (r->p[SAFETY_SCALE] < 1.0) return CCFG_OK;
    /* compared in doubles: a warmup beyond int (or NaN) must not be converted (undefined) */
    const int apply = in->step >= trunc(r->p[WARMUP]);
    const int64_t count = in->n * in->dim;
    if (count == 0) return CCFG_OK;     /* no momentum was allocated (st->device is NULL) */
    for (int j = 0; j < in->k; j++)
        if ((status = be->guide->sld(be, count, in->eps_u, in->eps_p, in->eps_n[j],
                                     st->device + (int64_t)j * count, r->scale,
                                     r->p[SAFETY_SCALE], r->p[THRESHOLD], r->p[MOMENTUM_SCALE],
                                     r->p[MOMENTUM_BETA], update, apply, out)))
            return status;
    return CCFG_OK;
}

static int state_init(ccfg_guide_state *st, const ccfg_rule *r)
{
    (void)r;
    return ccfg_guide_state_alloc(st, (int64_t)st->n_neg * st->n * st->dim, 0);
}

const ccfg_rule_impl ccfg_rule_sld = {
    .name = "sld",
    .params = params,
    .uses_negatives = 1,
    .coefficients = coefficients,
    .after = after,
    .state_init = state_init,
};
