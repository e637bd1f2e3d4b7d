/* rules/apg.c — Adaptive Projected Guidance (Sadat, Hilliges & Weber, arXiv 2410.02416,
 * Algorithm 1, without momentum; docs/methods.md "APG"). Per sample, with D = eps_p - eps_u:
 *   D <- D min(1, r / ‖D‖)                         (norm_threshold r > 0; r = 0: no rescaling)
 *   D_par = (<D, eps_p> / ‖eps_p‖²) eps_p,  D_orth = D - D_par
 *   eps_hat = eps_p + (w - 1) (D_orth + η D_par)
 * Negatives are not used (a positive-only baseline, like CFG). As a linear combination:
 *   c_u = -(w-1) s,  c_p = 1 + (w-1) s - (w-1) s (1-η) a,  s = min(1, r/‖D‖), a = <D,p>/‖p‖². */
#include <math.h>
#include <stdlib.h>

#include "rules/rule.h"

enum { ETA, NORM_THRESHOLD };
static const char *const params[] = {"eta", "norm_threshold", NULL};

/* extra rows: <eps_p, eps_p> and <eps_u, eps_p>, per sample */
enum { PP_EPS, UP_EPS, N_EXTRA };

static int reduce(const ccfg_backend *be, const ccfg_rule *r, ccfg_rule_inputs *in)
{
    int status;
    (void)r;
    if ((status = be->guide->dot(be, in->n, in->dim, in->eps_p, in->eps_p, in->extra + PP_EPS * in->n)))
        return status;
    return be->guide->dot(be, in->n, in->dim, in->eps_u, in->eps_p, in->extra + UP_EPS * in->n);
}

static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    const int m = 2 + in->k;
    const double w1 = r->scale - 1.0, eta = r->p[ETA], thr = r->p[NORM_THRESHOLD];
    for (int64_t i = 0; i < in->n; i++) {
        const double dd = in->pp[i];                                 /* ‖D‖² */
        const double pp = in->extra[PP_EPS * in->n + i];             /* ‖eps_p‖² */
        const double dp = pp - in->extra[UP_EPS * in->n + i];        /* <D, eps_p> */
        const double s = thr > 0.0 && dd > 0.0 ? fmin(1.0, thr / sqrt(dd)) : 1.0;
        const double a = pp > 0.0 ? dp / pp : 0.0;
        double *c = coef + i * m;
        c[0] = -w1 * s;
        c[1] = 1.0 + w1 * s - w1 * s * (1.0 - eta) * a;
    }
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_apg = {
    .name = "apg",
    .params = params,
    .uses_negatives = 0,
    .direction_dots = 1,
    .n_extra = N_EXTRA,
    .reduce = reduce,
    .coefficients = coefficients,
};
