/* guidance.c — runs any guidance rule (rules/rule.h) on noise predictions, per sample.
 *
 * Every rule is (1) per-sample reductions on the backend, (2) a coefficient table on the host,
 * (3) one fused backend pass (guide->combine), (4) optionally an elementwise pass of its own;
 * a rule with a device form has 1-3 done by the backend's combine_form where there is one.
 * This file does the bookkeeping around those steps: parameters by name, the negatives' window,
 * the state, and the host copies a rule computed on the host needs on a device. Formulas:
 * docs/methods.md, one file per rule in rules/. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "rules/rule.h"

const char *ccfg_rule_name(const ccfg_rule_impl *impl) { return impl->name; }

const char *const *ccfg_rule_param_names(const ccfg_rule_impl *impl)
{
    static const char *const none[] = {NULL};
    return impl->params ? impl->params : none;
}

int ccfg_rule_init(ccfg_rule *rule, const ccfg_rule_impl *impl)
{
    memset(rule, 0, sizeof *rule);
    rule->impl = impl;
    rule->window_stop = 1.0;
    int count = 0;
    while (impl->params && impl->params[count]) count++;
    if (count > CCFG_RULE_MAX_PARAMS)
        return ccfg_fail(CCFG_EINTERNAL, "rule %s has %d parameters, at most %d fit", impl->name,
                         count, CCFG_RULE_MAX_PARAMS);
    return CCFG_OK;
}

int ccfg_rule_set(ccfg_rule *rule, const char *name, double value)
{
    const ccfg_rule_impl *impl = rule->impl;
    if (!strcmp(name, "scale")) rule->scale = value;
    else if (!strcmp(name, "negative_scale")) rule->negative_scale = value;
    else if (!strcmp(name, "window_start")) rule->window_start = value;
    else if (!strcmp(name, "window_stop")) rule->window_stop = value;
    else {
        for (int i = 0; impl->params && impl->params[i]; i++)
            if (!strcmp(impl->params[i], name)) {
                rule->p[i] = value;
                return CCFG_OK;
            }
        return ccfg_fail(CCFG_EINVAL, "rule %s has no parameter %s", impl->name, name);
    }
    return CCFG_OK;
}

int ccfg_rule_stateful(const ccfg_rule *rule)
{
    const ccfg_rule_impl *impl = rule->impl;
    return impl->state_init != NULL && (!impl->needs_state || impl->needs_state(rule));
}

int ccfg_rule_observes(const ccfg_rule *rule) { return rule->impl->observe != NULL; }

/* diffusers' guider window: step i of N is inside when int(start N) <= i < int(stop N) */
int ccfg_rule_negative_active(const ccfg_rule *rule, int step, int num_steps)
{
    if (!rule->impl->uses_negatives) return 0;
    if (num_steps <= 0) return 1;
    /* int() of diffusers, in doubles: a window value out of int's range (or NaN) must not be
     * converted to int (undefined); a NaN bound leaves the negatives off */
    const double lo = trunc(rule->window_start * num_steps);
    const double hi = trunc(rule->window_stop * num_steps);
    return step >= lo && step < hi;
}

int ccfg_rule_needs_null(const ccfg_rule *rule, int has_positive, int k)
{
    return rule->impl->needs_null ? rule->impl->needs_null(rule, has_positive, k) : 1;
}

/* 2σ(z) without overflow */
double ccfg_two_sigmoid(double z)
{
    return z >= 0 ? 2.0 / (1.0 + exp(-z)) : 2.0 * exp(z) / (1.0 + exp(z));
}

int ccfg_guide_state_alloc(ccfg_guide_state *st, int64_t device_count, int64_t host_count)
{
    int status;
    if (device_count > 0) {
        if ((status = st->be->alloc(st->be, (size_t)device_count * sizeof(float), &st->device)))
            return status;
        st->device_count = device_count;
    }
    if (host_count > 0) {
        st->host = calloc((size_t)host_count, sizeof(double));
        if (!st->host)
            return ccfg_fail(CCFG_ENOMEM, "out of memory allocating guidance state (n=%lld)",
                             (long long)st->n);
        st->host_count = host_count;
    }
    return CCFG_OK;
}

int ccfg_guide_state_init(ccfg_guide_state *st, const ccfg_backend *be, const ccfg_rule *rule,
                          int64_t n, int64_t dim, int n_neg)
{
    memset(st, 0, sizeof *st);
    st->n = n;
    st->dim = dim;
    st->n_neg = n_neg;
    st->be = be;
    st->impl = rule->impl;
    if (!ccfg_rule_stateful(rule) || n_neg == 0) return CCFG_OK;
    int status = rule->impl->state_init(st, rule);
    if (status) ccfg_guide_state_free(st);
    return status;
}

void ccfg_guide_state_free(ccfg_guide_state *st)
{
    if (st->device && st->be) st->be->release(st->be, st->device);
    free(st->host);
    st->device = NULL;
    st->host = NULL;
    st->device_count = st->host_count = 0;
    st->device_reals = 0;
}

int ccfg_guide_state_values(const ccfg_guide_state *st, double **out, int64_t *count)
{
    *out = NULL;
    *count = 0;
    if (!st->impl) return CCFG_OK;
    if (st->impl->state_values && (st->host || st->device))
        return st->impl->state_values(st, out, count);
    if (!st->host) return CCFG_OK;
    if (!(*out = malloc((size_t)st->host_count * sizeof **out)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory reading a guidance state");
    memcpy(*out, st->host, (size_t)st->host_count * sizeof **out);
    *count = st->host_count;
    return CCFG_OK;
}

/* A rule computed on the host sees host arrays: on a device its inputs are downloaded and its
 * output uploaded. It sees exactly what was evaluated: the window only decides which negatives. */
static int host_rule(const ccfg_backend *be, const ccfg_rule *rule, int64_t n, int64_t dim,
                     const float *eps_u, const float *eps_p, int k, const float *const *eps_n,
                     float *out)
{
    if (be->host_memory) return rule->impl->host(rule, n, dim, eps_u, eps_p, k, eps_n, out);
    const size_t bytes = (size_t)n * (size_t)dim * sizeof(float);
    int status = CCFG_OK;
    float *host = malloc(bytes * (size_t)(3 + k));
    const float *neg[CCFG_MAX_RULE_NEGATIVES];
    if (k > CCFG_MAX_RULE_NEGATIVES)
        status = ccfg_fail(CCFG_EINVAL, "a rule on host arrays takes at most %d negatives",
                           CCFG_MAX_RULE_NEGATIVES);
    else if (!host)
        status = ccfg_fail(CCFG_ENOMEM, "out of memory copying a host rule's inputs");
    if (status) goto done;
    const size_t count = (size_t)n * (size_t)dim;
    float *hu = host, *hp = host + count, *ho = host + 2 * count;
    if ((status = be->download(be, hu, eps_u, bytes)) || (status = be->download(be, hp, eps_p, bytes)))
        goto done;
    for (int j = 0; j < k; j++) {
        float *hn = host + (3 + (size_t)j) * count;
        if ((status = be->download(be, hn, eps_n[j], bytes))) goto done;
        neg[j] = hn;
    }
    if ((status = rule->impl->host(rule, n, dim, hu, hp, k, neg, ho))) goto done;
    status = be->upload(be, out, ho, bytes);
done:
    free(host);
    return status;
}

static int state_matches(const ccfg_guide_state *st, const ccfg_rule *rule, int64_t n,
                         int64_t dim, int n_neg)
{
    return st && st->impl == rule->impl && st->n == n && st->dim == dim && st->n_neg == n_neg;
}

int ccfg_guide(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
               int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
               const float *const *eps_n, int step, int num_steps, int update, float *out)
{
    return ccfg_guide_at(be, rule, st, n, dim, eps_u, eps_p, n_neg, eps_n, step, num_steps, NAN,
                         update, out);
}

int ccfg_guide_at(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                  int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
                  const float *const *eps_n, int step, int num_steps, double alpha_bar,
                  int update, float *out)
{
    const ccfg_rule_impl *impl = rule->impl;
    int status = CCFG_OK;
    if (n < 0 || dim < 0 || n_neg < 0 || n_neg > CCFG_MAX_RULE_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "guide: n = %lld, dim = %lld and %d negatives (at most %d) "
                         "are not sizes", (long long)n, (long long)dim, n_neg,
                         CCFG_MAX_RULE_NEGATIVES);
    const int k = ccfg_rule_negative_active(rule, step, num_steps) ? n_neg : 0;
    const int m = 2 + k;                       /* inputs: eps_u, eps_p, negatives */
    const float **in = NULL;
    double *coef = NULL, *pp = NULL, *nn = NULL, *np = NULL, *extra = NULL;

    if (ccfg_rule_stateful(rule) && !state_matches(st, rule, n, dim, n_neg))
        return ccfg_fail(CCFG_EINVAL, "state does not match this batch (n=%lld, dim=%lld, "
                         "negatives=%d)", (long long)n, (long long)dim, n_neg);
    if (!eps_p) eps_p = eps_u;                 /* no positive: D_p = 0 */

    if (impl->host) return host_rule(be, rule, n, dim, eps_u, eps_p, k, eps_n, out);

    /* 1-3 on the backend, where it has them: a device sends no reductions to the host (a rule
     * whose table needs this call's reductions on the host gives family 0 and takes the host loop) */
    if (impl->device_form && be->guide->combine_form) {
        ccfg_coef_form form;
        const ccfg_rule_inputs ri = {.n = n, .dim = dim, .k = k, .step = step,
                                     .alpha_bar = alpha_bar, .eps_u = eps_u, .eps_p = eps_p,
                                     .eps_n = eps_n};
        if ((status = impl->device_form(rule, st, &ri, &form))) return status;
        if (form.family) {
            if ((status = be->guide->combine_form(be, &form, n, dim, eps_u, eps_p, k, eps_n, out)))
                return status;
            if (update && impl->learn && (status = impl->learn(rule, st, &ri))) return status;
            if (impl->after && (status = impl->after(be, rule, st, &ri, update, out)))
                return status;
            if (update && st) st->step++;
            return CCFG_OK;
        }
    }

    const size_t kn = (size_t)n * (size_t)(k ? k : 1);
    in = malloc((size_t)m * sizeof *in);
    coef = calloc((size_t)n * (size_t)m, sizeof *coef);
    pp = malloc((size_t)n * sizeof *pp);
    nn = malloc(kn * sizeof *nn);
    np = malloc(kn * sizeof *np);
    extra = impl->n_extra ? malloc((size_t)n * (size_t)impl->n_extra * sizeof *extra) : NULL;
    if (!in || !coef || !pp || !nn || !np || (impl->n_extra && !extra)) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in guidance");
        goto done;
    }
    in[0] = eps_u;
    in[1] = eps_p;
    for (int j = 0; j < k; j++) in[2 + j] = eps_n[j];
    ccfg_rule_inputs ri = {
        .n = n, .dim = dim, .k = k, .step = step, .alpha_bar = alpha_bar, .eps_u = eps_u, .eps_p = eps_p,
        .eps_n = eps_n, .pp = pp, .nn = nn, .np = np, .extra = extra,
    };

    /* 1. per-sample reductions on the guidance directions D = eps - eps_u, one pass */
    if (impl->direction_dots &&
        (status = be->guide->direction_dots(be, n, dim, eps_u, eps_p, k, eps_n, pp, nn, np)))
        goto done;
    if (impl->reduce && (status = impl->reduce(be, rule, &ri))) goto done;
    /* 2. coefficients on the host, 3. one fused pass, 4. the rule's own elementwise pass */
    if ((status = impl->coefficients(rule, st, &ri, coef)) ||
        (status = be->guide->combine(be, n, dim, m, in, coef, out)))
        goto done;
    if (update && impl->learn && (status = impl->learn(rule, st, &ri))) goto done;
    if (impl->after && (status = impl->after(be, rule, st, &ri, update, out))) goto done;
    if (update && st) st->step++;

done:
    free(in);
    free(coef);
    free(pp);
    free(nn);
    free(np);
    free(extra);
    return status;
}

int ccfg_guide_observe(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st,
                       int64_t n, int64_t dim, const float *x_t, const float *x_prev,
                       const float *eps_u, int n_neg, const float *const *eps_n, double alpha_bar,
                       double alpha_bar_prev, double eta)
{
    if (!rule->impl->observe)
        return ccfg_fail(CCFG_EINVAL, "rule %s does not learn from transitions", rule->impl->name);
    if (!state_matches(st, rule, n, dim, n_neg) || (!st->host && !st->device))
        return ccfg_fail(CCFG_EINVAL, "state does not belong to a %s rule with this batch",
                         rule->impl->name);
    return rule->impl->observe(be, rule, st, n, dim, x_t, x_prev, eps_u, n_neg, eps_n, alpha_bar,
                               alpha_bar_prev, eta);
}
