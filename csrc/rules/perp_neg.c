/* rules/perp_neg.c — Perp-Neg (Armandpour et al., arXiv 2304.04968; docs/methods.md §5):
 *   eps_hat = eps_u + w (D_p - b sum_j perp(D_n_j, D_p)),
 *   perp(D_n, D_p) = D_n - (<D_n, D_p> / ‖D_p‖²) D_p,
 * the projection per sample, or one projection over the whole batch (batch_global). b is the
 * rule's negative_scale. The device form (CCFG_FORM_PERPENDICULAR) is the same table computed on
 * the backend, with the batch sums reduced there. */
#include "rules/rule.h"

enum { BATCH_GLOBAL };
static const char *const params[] = {"batch_global", NULL};

static double sum_n(const double *v, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return s;
}

static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    const int m = 2 + in->k;
    const int64_t n = in->n;
    const double w = r->scale, b = r->negative_scale;
    const int global = r->p[BATCH_GLOBAL] != 0.0;
    for (int64_t i = 0; i < n; i++) ccfg_rule_cfg_row(coef + i * m, w);
    for (int j = 0; j < in->k; j++) {
        const double *dnp = in->np + (int64_t)j * n;
        double global_proj = 0.0;
        if (global) {
            const double den = sum_n(in->pp, n);
            global_proj = den > 0.0 ? sum_n(dnp, n) / den : 0.0;
        }
        for (int64_t i = 0; i < n; i++) {
            double *c = coef + i * m;
            /* w b perp(D_n, D_p) = w b D_n - w b proj D_p */
            const double proj = global ? global_proj : (in->pp[i] > 0.0 ? dnp[i] / in->pp[i] : 0.0);
            const double cn = w * b;
            c[1] += w * b * proj;
            c[0] -= w * b * proj;
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
    return CCFG_OK;
}

static int device_form(const ccfg_rule *r, const ccfg_guide_state *st,
                       const ccfg_rule_inputs *in, ccfg_coef_form *form)
{
    (void)st;
    (void)in;
    *form = (ccfg_coef_form){.family = CCFG_FORM_PERPENDICULAR, .w = r->scale,
                             .w_n = r->negative_scale,
                             .batch_global = r->p[BATCH_GLOBAL] != 0.0};
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_perp_neg = {
    .name = "perp_neg",
    .params = params,
    .uses_negatives = 1,
    .direction_dots = 1,
    .coefficients = coefficients,
    .device_form = device_form,
};
