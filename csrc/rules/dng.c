/* rules/dng.c — Dynamic Negative Guidance (Koulischer et al., arXiv 2410.14398; docs/methods.md
 * §4): negated CFG whose negative weight follows a per-sample posterior p that the sample
 * belongs to the negative concept,
 *   eps_hat = eps_u + w D_p - λ0 sum_j p_j/(1 - p_j) D_n_j,
 * p_j updated after each transition x_t -> x_prev from the likelihood of that move under the
 * negative's and the null's DDIM(eta) means (observe). λ0 is the rule's negative_scale.
 *
 * The state is log p, [n_neg, n]: the update is then an addition and a clamp, and the table
 * needs only p = exp(lp) with lp <= log p_max < 0 (a device has exp of a non-positive number in
 * double, shaders/exp_neg.glsl, but no log). Where the backend keeps rule state in its own reals
 * (guide->reals_alloc: a Vulkan device) the state lives there: the guide step is the form
 * CCFG_FORM_POSTERIOR and observe the op log_posterior_update, so nothing is read back per step.
 * Elsewhere (the CPU; a device with CCFG_VULKAN_HOST_COEFFICIENTS=1) it is host doubles and the
 * update reads the reductions back (on a device, one wait per transition). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
            const double p = exp(st->host[(int64_t)j * in->n + i]);
            const double cn = r->negative_scale * p / (1.0 - p);
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
    return CCFG_OK;
}

/* the state on the backend: the table is made there from it (family 0 with a host state, or
 * with no negative this step: the host loop, which reads no reductions either) */
static int device_form(const ccfg_rule *r, const ccfg_guide_state *st, const ccfg_rule_inputs *in,
                       ccfg_coef_form *form)
{
    memset(form, 0, sizeof *form);
    if (!st || !st->device_reals || in->k == 0) return CCFG_OK;
    form->family = CCFG_FORM_POSTERIOR;
    form->w = r->scale;
    form->w_n = r->negative_scale;
    form->state = st->device;
    return CCFG_OK;
}

static int state_init(ccfg_guide_state *st, const ccfg_rule *r)
{
    const int64_t count = (int64_t)st->n_neg * st->n;
    const double lp0 = log(r->p[PRIOR]);
    const ccfg_guide_ops *g = st->be->guide;
    if (count > 0 && g->reals_alloc && g->log_posterior_update && g->combine_form) {
        double *init = malloc((size_t)(count ? count : 1) * sizeof *init);
        if (!init) return ccfg_fail(CCFG_ENOMEM, "out of memory initialising DNG's posterior");
        for (int64_t q = 0; q < count; q++) init[q] = lp0;
        const int status = g->reals_alloc(st->be, count, init, &st->device, &st->device_count);
        free(init);
        if (!status) st->device_reals = 1;
        return status;
    }
    int status = ccfg_guide_state_alloc(st, 0, count);
    if (status) return status;
    for (int64_t q = 0; q < st->host_count; q++) st->host[q] = lp0;
    return CCFG_OK;
}

/* GuidanceState.posterior: p = exp(log p), from wherever the state lives */
static int state_values(const ccfg_guide_state *st, double **out, int64_t *count)
{
    const int64_t c = (int64_t)st->n_neg * st->n;
    int status = CCFG_OK;
    double *v = malloc((size_t)(c ? c : 1) * sizeof *v);
    *out = NULL;
    *count = 0;
    if (!v) return ccfg_fail(CCFG_ENOMEM, "out of memory reading DNG's posterior");
    if (st->device_reals) status = st->be->guide->reals_read(st->be, st->device, c, v);
    else if (st->host) memcpy(v, st->host, (size_t)c * sizeof *v);
    else status = ccfg_fail(CCFG_EINTERNAL, "DNG state without a posterior");
    if (status) {
        free(v);
        return status;
    }
    for (int64_t q = 0; q < c; q++) v[q] = exp(v[q]);
    *out = v;
    *count = c;
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
    /* ‖x_prev-μ_n‖² - ‖x_prev-μ_u‖² = B²‖D_n‖² - 2B <r_u, D_n> (see below): the same operations
     * in the same order on the host and on a device */
    const ccfg_log_posterior_update up = {
        .b2 = B * B, .b1 = 2.0 * B, .t = r->p[TEMPERATURE], .offset = r->p[OFFSET],
        .two_var = 2.0 * var, .lo = log(r->p[P_MIN]), .hi = log(r->p[P_MAX]),
    };

    /* every D_n_j at once: their reductions are made in one pass (on a device with a host
     * state, read back in one wait per transition rather than two per negative) */
    if ((status = be->alloc(be, (size_t)count * sizeof(float), &zero)) ||
        (status = be->alloc(be, (size_t)count * sizeof(float), &r_u)) ||
        (status = be->alloc(be, (size_t)count * (size_t)n_neg * sizeof(float), &d_n)))
        goto done;
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
    if (st->device_reals) {
        status = be->guide->log_posterior_update(be, &up, n, dim, zero, r_u, n_neg, d_ns,
                                                 st->device);
        goto done;
    }
    rr = malloc((size_t)n * sizeof *rr);
    dd = malloc((size_t)n * (size_t)n_neg * sizeof *dd);
    rd = malloc((size_t)n * (size_t)n_neg * sizeof *rd);
    if (!rr || !dd || !rd) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in DNG update");
        goto done;
    }
    if ((status = be->guide->direction_dots(be, n, dim, zero, r_u, n_neg, d_ns, rr, dd, rd)))
        goto done;
    for (int64_t q = 0; q < (int64_t)n_neg * n; q++) {
        const double delta = up.b2 * dd[q] - up.b1 * rd[q];
        const double lp = st->host[q] + (-up.t * delta + up.offset) / up.two_var;
        st->host[q] = fmin(fmax(lp, up.lo), up.hi);
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
    .device_form = device_form,
    .state_init = state_init,
    .state_values = state_values,
    .observe = observe,
};
