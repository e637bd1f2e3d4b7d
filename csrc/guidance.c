/* guidance.c — every guidance rule, on noise predictions, per sample.
 *
 * All rules but SLD are, per sample i, a linear combination
 *     eps_hat_i = c_u eps_u_i + c_p eps_p_i + sum_j c_j eps_n_j,i
 * whose coefficients depend only on per-sample reductions (norms, dots) and state. So each rule is
 * (1) a few per-sample reductions, (2) coefficients on the host, (3) one fused backend pass
 * (`combine`). SLD is elementwise and has its own backend op. Formulas: docs/methods.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

int ccfg_rule_stateful(const ccfg_rule *rule)
{
    return rule->kind == CCFG_RULE_SLD || rule->kind == CCFG_RULE_DNG;
}

/* diffusers' guider window: step i of N is inside when int(start N) <= i < int(stop N) */
int ccfg_rule_negative_active(const ccfg_rule *rule, int step, int num_steps)
{
    if (rule->kind == CCFG_RULE_NONE || rule->kind == CCFG_RULE_CFG) return 0;
    if (num_steps <= 0) return 1;
    int lo = (int)(rule->window_start * num_steps);
    int hi = (int)(rule->window_stop * num_steps);
    return step >= lo && step < hi;
}

int ccfg_guide_state_init(ccfg_guide_state *st, const ccfg_backend *be, const ccfg_rule *rule,
                          int64_t n, int64_t dim, int n_neg)
{
    memset(st, 0, sizeof *st);
    st->n = n;
    st->dim = dim;
    st->n_neg = n_neg;
    st->be = be;
    int status = CCFG_OK;
    if (rule->kind == CCFG_RULE_SLD && n_neg > 0 &&
        (status = be->alloc(be, (size_t)n_neg * (size_t)n * (size_t)dim * sizeof(float),
                            &st->sld_nu)))
        goto fail;
    if (rule->kind == CCFG_RULE_DNG && n_neg > 0) {
        st->dng_p = malloc((size_t)n_neg * (size_t)n * sizeof(double));
        if (!st->dng_p) {
            status = ccfg_fail(CCFG_ENOMEM, "out of memory allocating guidance state (n=%lld)",
                               (long long)n);
            goto fail;
        }
        for (int64_t q = 0; q < (int64_t)n_neg * n; q++) st->dng_p[q] = rule->dng_prior;
    }
    return CCFG_OK;
fail:
    ccfg_guide_state_free(st);
    return status;
}

void ccfg_guide_state_free(ccfg_guide_state *st)
{
    if (st->sld_nu && st->be) st->be->release(st->be, st->sld_nu);
    free(st->dng_p);
    st->sld_nu = NULL;
    st->dng_p = NULL;
}

/* 2σ(z) and 2σ(-z) without overflow */
static double two_sigmoid(double z)
{
    return z >= 0 ? 2.0 / (1.0 + exp(-z)) : 2.0 * exp(z) / (1.0 + exp(z));
}

/* A PythonRule sees host arrays: on a device its inputs are downloaded and its output uploaded.
 * It sees exactly what was evaluated: the window only decides which negatives. */
static int python_rule(const ccfg_backend *be, const ccfg_rule *rule, int64_t n, int64_t dim,
                       const float *eps_u, const float *eps_p, int k, const float *const *eps_n,
                       float *out)
{
    if (be->host_memory)
        return rule->custom(rule->custom_ctx, n, dim, eps_u, eps_p, k, eps_n, out);
    const size_t bytes = (size_t)n * (size_t)dim * sizeof(float);
    int status = CCFG_OK;
    float *host = malloc(bytes * (size_t)(3 + k));
    const float *neg[CCFG_MAX_RULE_NEGATIVES];
    if (k > CCFG_MAX_RULE_NEGATIVES)
        status = ccfg_fail(CCFG_EINVAL, "a PythonRule takes at most %d negatives",
                           CCFG_MAX_RULE_NEGATIVES);
    else if (!host)
        status = ccfg_fail(CCFG_ENOMEM, "out of memory copying a PythonRule's inputs");
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
    if ((status = rule->custom(rule->custom_ctx, n, dim, hu, hp, k, neg, ho))) goto done;
    status = be->upload(be, out, ho, bytes);
done:
    free(host);
    return status;
}

/* sum_i of a per-sample quantity, for Perp-Neg's batch-global projection */
static double sum_n(const double *v, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return s;
}

int ccfg_guide(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
               int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
               const float *const *eps_n, int step, int num_steps, int update, float *out)
{
    int status = CCFG_OK;
    const int kind = rule->kind;
    const int k = ccfg_rule_negative_active(rule, step, num_steps) ? n_neg : 0;
    const int m = 2 + k;                       /* inputs: eps_u, eps_p, negatives */
    const double w = rule->scale, wn = rule->negative_scale;
    const double norm = rule->tau_mean ? (double)dim : 1.0;   /* CCFG's tau_reduce */
    const float **in = NULL;
    double *coef = NULL, *r_p = NULL, *r_n = NULL, *dot_np = NULL;

    if (ccfg_rule_stateful(rule) && (!st || st->n != n || st->dim != dim || st->n_neg != n_neg))
        return ccfg_fail(CCFG_EINVAL, "state does not match this batch (n=%lld, dim=%lld, "
                         "negatives=%d)", (long long)n, (long long)dim, n_neg);
    if (!eps_p) eps_p = eps_u;                 /* no positive: D_p = 0 */

    if (kind == CCFG_RULE_PYTHON) return python_rule(be, rule, n, dim, eps_u, eps_p, k, eps_n, out);

    in = malloc((size_t)m * sizeof *in);
    coef = malloc((size_t)n * (size_t)m * sizeof *coef);
    r_p = malloc((size_t)n * sizeof *r_p);
    r_n = malloc((size_t)n * (size_t)(k ? k : 1) * sizeof *r_n);
    dot_np = malloc((size_t)n * (size_t)(k ? k : 1) * sizeof *dot_np);
    if (!in || !coef || !r_p || !r_n || !dot_np) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in guidance");
        goto done;
    }
    in[0] = eps_u;
    in[1] = eps_p;
    for (int j = 0; j < k; j++) in[2 + j] = eps_n[j];

    /* per-sample reductions on the guidance directions D = eps - eps_u, one pass */
    if ((kind == CCFG_RULE_CCFG || kind == CCFG_RULE_PERP_NEG) &&
        (status = be->direction_dots(be, n, dim, eps_u, eps_p, k, eps_n, r_p, r_n, dot_np)))
        goto done;

    /* coefficients: start from CFG's (or none), then each negative adds its term */
    for (int64_t i = 0; i < n; i++) {
        double *c = coef + i * m;
        memset(c, 0, (size_t)m * sizeof *c);
        double wp = kind == CCFG_RULE_NONE ? 1.0 : w;     /* weight on D_p */
        if (kind == CCFG_RULE_CCFG && !rule->naive_positive)
            wp = w * two_sigmoid(rule->tau * r_p[i] / norm);
        c[0] = 1.0 - wp;
        c[1] = wp;
    }

    for (int j = 0; j < k; j++) {
        const double *rn = r_n + (int64_t)j * n, *dnp = dot_np + (int64_t)j * n;
        /* Perp-Neg's projection coefficient <D_n, D_p>/‖D_p‖², per sample or whole batch */
        double global_proj = 0.0;
        if (kind == CCFG_RULE_PERP_NEG && rule->batch_global) {
            double den = sum_n(r_p, n);
            global_proj = den > 0.0 ? sum_n(dnp, n) / den : 0.0;
        }
        for (int64_t i = 0; i < n; i++) {
            double *c = coef + i * m;
            double cn = 0.0;                 /* weight on D_n_j (subtracted) */
            switch (kind) {
            case CCFG_RULE_NEGATIVE_PROMPT: cn = w - 1.0; break;
            case CCFG_RULE_NEGATED_CFG: cn = wn; break;
            case CCFG_RULE_CCFG: cn = wn * two_sigmoid(-rule->tau * rn[i] / norm); break;
            case CCFG_RULE_PERP_NEG: {
                /* w b perp(D_n, D_p) = w b D_n - w b proj D_p */
                double proj = rule->batch_global ? global_proj
                              : (r_p[i] > 0.0 ? dnp[i] / r_p[i] : 0.0);
                cn = w * wn;
                c[1] += w * wn * proj;
                c[0] -= w * wn * proj;
                break;
            }
            case CCFG_RULE_DNG: {
                double p = st->dng_p[(int64_t)j * n + i];
                cn = wn * p / (1.0 - p);
                break;
            }
            default: cn = 0.0; break;        /* SLD: elementwise below */
            }
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }

    if ((status = be->combine(be, n, dim, m, in, coef, out))) goto done;

    if (kind == CCFG_RULE_SLD && rule->sld_scale >= 1.0) {
        /* methods §6 / §10c: γ from the gate + momentum; ν updated every step, applied after warm-up */
        const int apply = step >= rule->sld_warmup;
        for (int j = 0; j < k; j++)
            if ((status = be->sld(be, (int64_t)n * dim, eps_u, eps_p, eps_n[j],
                                  st->sld_nu + (int64_t)j * n * dim, w, rule->sld_scale,
                                  rule->sld_threshold, rule->sld_momentum_scale,
                                  rule->sld_momentum_beta, update, apply, out)))
                goto done;
    }
    if (update && st) st->step++;

done:
    free(in);
    free(coef);
    free(r_p);
    free(r_n);
    free(dot_np);
    return status;
}

int ccfg_dng_observe(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                     int64_t dim, const float *x_t, const float *x_prev, const float *eps_u,
                     int n_neg, const float *const *eps_n, double alpha_bar, double alpha_bar_prev,
                     double eta)
{
    int status = CCFG_OK;
    float *r_u = NULL, *d_n = NULL;
    double *dd = NULL, *rd = NULL;
    const int64_t count = n * dim;

    if (rule->kind != CCFG_RULE_DNG || !st || !st->dng_p || st->n != n || st->dim != dim ||
        st->n_neg != n_neg)
        return ccfg_fail(CCFG_EINVAL, "state does not belong to a DNG rule with this batch");
    if (!(alpha_bar > 0.0 && alpha_bar <= 1.0 && alpha_bar_prev > 0.0 && alpha_bar_prev <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "alpha_bar and alpha_bar_prev must lie in (0, 1]");

    /* DDIM(eta) transition x_t -> x_prev: mean A x_t + B eps, noise variance s² = eta² β̃ */
    const double beta_tilde = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev);
    const double s2 = alpha_bar < 1.0 ? eta * eta * beta_tilde : 0.0;
    const double A = sqrt(alpha_bar_prev / alpha_bar);
    const double B = sqrt(fmax(1.0 - alpha_bar_prev - s2, 0.0)) - A * sqrt(1.0 - alpha_bar);
    /* the likelihood needs a variance; a deterministic step uses its stride variance (methods §4.3) */
    const double var = eta > 0.0 ? s2 : 1.0 - alpha_bar / alpha_bar_prev;
    if (!(var > 0.0) || n_neg == 0) return CCFG_OK;   /* no move, nothing to learn */

    if ((status = be->alloc(be, (size_t)count * sizeof(float), &r_u)) ||
        (status = be->alloc(be, (size_t)count * sizeof(float), &d_n)))
        goto done;
    dd = malloc((size_t)n * sizeof *dd);
    rd = malloc((size_t)n * sizeof *rd);
    if (!dd || !rd) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory in DNG update");
        goto done;
    }
    /* r_u = x_prev - μ_u;  x_prev - μ_n = r_u - B D_n, so
     * ‖x_prev-μ_n‖² - ‖x_prev-μ_u‖² = B²‖D_n‖² - 2B <r_u, D_n> (no cancellation of big norms) */
    if ((status = be->axpbypcz(be, count, 1.0, x_prev, -A, x_t, -B, eps_u, r_u))) goto done;
    const double lo = log(rule->dng_p_min), hi = log(rule->dng_p_max);
    for (int j = 0; j < n_neg; j++) {
        if ((status = be->axpbypcz(be, count, 1.0, eps_n[j], -1.0, eps_u, 0.0, NULL, d_n)) ||
            (status = be->dot(be, n, dim, d_n, d_n, dd)) ||
            (status = be->dot(be, n, dim, r_u, d_n, rd)))
            goto done;
        for (int64_t i = 0; i < n; i++) {
            double delta = B * B * dd[i] - 2.0 * B * rd[i];
            double *p = st->dng_p + (int64_t)j * n + i;
            double lp = log(*p) + (-rule->dng_temperature * delta + rule->dng_offset) / (2.0 * var);
            *p = exp(fmin(fmax(lp, lo), hi));
        }
    }
done:
    be->release(be, r_u);
    be->release(be, d_n);
    free(dd);
    free(rd);
    return status;
}
