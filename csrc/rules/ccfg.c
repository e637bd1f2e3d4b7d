/* rules/ccfg.c — Contrastive CFG (Chang, Lee, Chung & Ye, arXiv 2411.17077; docs/methods.md §3):
 *   eps_hat = eps_u + w λ+ D_p - w_n sum_j λ-_j D_n_j,
 *   λ+ = 2σ(τ ‖D_p‖² / N),  λ-_j = 2σ(-τ ‖D_n_j‖² / N)   per sample,
 * N = 1 for the official summed norm (tau_mean = 0), the element count for tau_reduce="mean";
 * naive_positive keeps λ+ = 1 (the paper's ablation). The host loop and the device form
 * (CCFG_FORM_CONTRASTIVE, evaluated on the backend) take the step's τ_eff = τ / N from one
 * function, tau_effective. */
#include "rules/rule.h"

enum { TAU, TAU_MEAN, NAIVE_POSITIVE };
static const char *const params[] = {"tau", "tau_mean", "naive_positive", NULL};

/* the step's τ_eff, a host scalar: λ± = 2σ(±τ_eff ‖D‖²) */
static double tau_effective(const ccfg_rule *r, const ccfg_rule_inputs *in)
{
    const double norm = r->p[TAU_MEAN] != 0.0 ? (double)in->dim : 1.0;
    return r->p[TAU] / norm;
}

static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    const int m = 2 + in->k;
    const double w = r->scale, wn = r->negative_scale, tau = tau_effective(r, in);
    for (int64_t i = 0; i < in->n; i++) {
        double *c = coef + i * m;
        const double wp = r->p[NAIVE_POSITIVE] != 0.0 ? w : w * ccfg_two_sigmoid(tau * in->pp[i]);
        ccfg_rule_cfg_row(c, wp);
        for (int j = 0; j < in->k; j++) {
            const double cn = wn * ccfg_two_sigmoid(-tau * in->nn[(int64_t)j * in->n + i]);
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
    return CCFG_OK;
}

static int device_form(const ccfg_rule *r, const ccfg_rule_inputs *in, ccfg_coef_form *form)
{
    *form = (ccfg_coef_form){.family = CCFG_FORM_CONTRASTIVE, .w = r->scale,
                             .w_n = r->negative_scale, .tau_eff = tau_effective(r, in),
                             .naive_positive = r->p[NAIVE_POSITIVE] != 0.0};
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_ccfg = {
    .name = "ccfg",
    .params = params,
    .uses_negatives = 1,
    .direction_dots = 1,
    .coefficients = coefficients,
    .device_form = device_form,
};
