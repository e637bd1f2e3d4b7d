/* rules/dng.c — Dynamic Negative Guidance (Koulischer et al., arXiv 2410.14398; docs/methods.md
 * §4): negated CFG whose negative weight follows a per-sample posterior p that the sample
 * belongs to the negative concept,
 *   eps_hat = eps_u + w D_p - λ0 sum_j p_j/(1 - p_j) D_n_j,
 * p_j updated after each transition x_t -> x_prev from the likelihood of that move under the
 * negative's and the null's DDIM(eta) means (observe). λ0 is the rule's negative_scale. The state
 * is p on the host, [n_neg, n]: on a device its coefficient table is uploaded each step (no wait)
 * and observe reads its reductions back once per transition (one wait; docs/PERFORMANCE.md says
 * what moving p to the device would take). */
#include <math.h>
#include <stdlib.h>

#include "rules/rule.h"

enum { PRIOR, TEMPERATURE, OFFSET, P_MIN, P_MAX };
static const char *const params[] = {"prior", "temperature", "offset", "p_min", "p_max", NULL};

static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    const int m = 2 + in->k;
    for (int64_t i = 0; i < in->n; i++) {
        double *c = coef + i * m;
        ccfg_rule_cfg_row(c, r->scale);
        for (int j = 0; j < in->k; j++) {
            const double p = st->host[(int64_t)j * in->n + i];
            const double cn = r->negative_scale * p / (1.0 - p);
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
    return CCFG_OK;
}

static int state_init(ccfg_guide_state *st, const ccfg_rule *r)
{
    int status = ccfg_guide_state_alloc(st, 0, (int64_t)st->n_neg * st->n);
    if (status) return status;
    for (int64_t q = 0; q < st->host_count; q++) st->host[q] = r->p[PRIOR];
    return CCFG_OK;
}

static int observe(const ccfg_backend *be, const ccfg_rule *r, ccfg_guide_state *st, int64_t n,
                   int64_t dim, const float *x_t, const float *x_prev, const float *eps_u,
                   int n_neg, const float *const *eps_n, double alpha_bar, double alpha_bar_prev,
                   double eta)
{
    int status = CCFG_OK;
    float *zero = NULL, *r_u = NULL, *d_n = NULL;
    double *rr = NULL, *dd = NULL, *rd = NULL;
    const int64_t count = n * dim;

    if (!(alpha_bar > 0.0 && alpha_bar <= 1.0 && alpha_bar_prev > 0.0 && alpha_bar_prev <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "alpha_bar and alpha_bar_prev must lie in (0, 1]");

    /* DDIM(eta) transition x_t -> x_prev: mean A x_t + B eps, noise variance s² = eta² β̃ */
    const double beta_tilde = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev);
    const double s2 = alpha_bar < 1.0 ? eta * eta * beta_tilde : 0.0;
    const double A = sqrt(alpha_bar_prev / alpha_bar);
    const double B = sqrt(fmax(1.0 - alpha_bar_prev - s2, 0.0)) - A * sqrt(1.0 - alpha_bar);
    /* the likelihood needs a variance; a deterministic step uses its stride variance (§4.3) */
    const double var = eta > 0.0 ? s2 : 1.0 - alpha_bar / alpha_bar_prev;
    if (!(var > 0.0) || n_neg == 0 || n == 0) return CCFG_OK;   /* no move, nothing to learn */
    if (n_neg > CCFG_MAX_RULE_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "DNG takes at most %d negatives", CCFG_MAX_RULE_NEGATIVES);

    /* every D_n_j at once: their reductions come back in one read (on a device, one wait per
     * transition rather than two per negative) */
    if ((status = be->alloc(be, (size_t)count * sizeof(float), &zero)) ||
        (status = be->alloc(be, (size_t)count * sizeof(float), &r_u)) ||
        (status = be->alloc(be, (size_t)count * (size_t)n_neg * sizeof(float), &d_n)))
        goto done;
    rr = malloc((size_t)n * sizeof *rr);
    dd = malloc((size_t)n * (size_t)n_neg * sizeof *dd);
    rd = malloc((size_t)n * (size_t)n_neg * sizeof *rd);
    if (!rr || !dd || !rd) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in DNG update");
        goto done;
    }
    /* r_u = x_prev - μ_u;  x_prev - μ_n = r_u - B D_n, so
     * ‖x_prev-μ_n‖² - ‖x_prev-μ_u‖² = B²‖D_n‖² - 2B <r_u, D_n> (no cancellation of big norms) */
    if ((status = be->axpbypcz(be, count, 1.0, x_prev, -A, x_t, -B, eps_u, r_u))) goto done;
    const float *d_ns[CCFG_MAX_RULE_NEGATIVES];
    for (int j = 0; j < n_neg; j++) {
        float *dj = d_n + (int64_t)j * count;
        if ((status = be->axpbypcz(be, count, 1.0, eps_n[j], -1.0, eps_u, 0.0, NULL, dj)))
            goto done;
        d_ns[j] = dj;
    }
    /* direction_dots about the zero vector: nn_j = ‖D_n_j‖², np_j = <D_n_j, r_u> */
    if ((status = be->guide->direction_dots(be, n, dim, zero, r_u, n_neg, d_ns, rr, dd, rd)))
        goto done;
    const double lo = log(r->p[P_MIN]), hi = log(r->p[P_MAX]);
    for (int j = 0; j < n_neg; j++) {
        for (int64_t i = 0; i < n; i++) {
            const int64_t q = (int64_t)j * n + i;
            double delta = B * B * dd[q] - 2.0 * B * rd[q];
            double *p = st->host + (int64_t)j * n + i;
            double lp = log(*p) + (-r->p[TEMPERATURE] * delta + r->p[OFFSET]) / (2.0 * var);
            *p = exp(fmin(fmax(lp, lo), hi));
        }
    }
done:
    be->release(be, zero);
    be->release(be, r_u);
    be->release(be, d_n);
    free(rr);
    free(dd);
    free(rd);
    return status;
}

const ccfg_rule_impl ccfg_rule_dng = {
    .name = "dng",
    .params = params,
    .uses_negatives = 1,
    .coefficients = coefficients,
    .state_init = state_init,
    .observe = observe,
};
