/* rules/ccfg.c — Contrastive CFG (Chang, Lee, Chung & Ye, arXiv 2411.17077; docs/methods.md §3):
 *   eps_hat = eps_u + w λ+ D_p - w_n sum_j λ-_j D_n_j,
 *   λ+ = 2σ(τ_t ‖D_p‖² / N),  λ-_j = 2σ(-τ_t ‖D_n_j‖² / N)   per sample,
 * N = 1 for the official summed norm (tau_mean = 0), the element count for tau_reduce="mean";
 * naive_positive keeps λ+ = 1 (the paper's ablation).
 *
 * τ_t is one scalar per step, from tau_effective (docs/methods.md §3.7 derives each schedule):
 *   constant     τ_t = tau                                   (official, the default)
 *   dim          τ_t = tau / sqrt(dim)
 *   nce          τ_t = tau / (2 (1 - ā_t))                   (needs the step's ā_t)
 *   pilot        τ_t = tau ln3 / median ‖D_n‖² at the first step with negatives, then frozen
 *   pilot_noise  pilot, times ā_0(1-ā_0) / (ā_t(1-ā_t))     (needs ā_t)
 *   batch        τ_t = tau ln3 / median ‖D_n‖² of this step (no state; couples the batch)
 * The pilot schedules keep [τ_0, ā_0] in a two-double host state, written in `learn` so that
 * only updating evaluations (not Heun's corrector) calibrate.
 *
 * The host loop (`coefficients`) and the device form (CCFG_FORM_CONTRASTIVE, evaluated where the
 * data is, with no host round trip) take τ_t from the same tau_effective. A call whose τ_t needs
 * this call's reductions on the host (batch; a pilot not yet calibrated) has no device form. */
#include <math.h>
#include <stdlib.h>

#include "rules/rule.h"

enum { TAU, TAU_MEAN, NAIVE_POSITIVE, TAU_SCHEDULE };
static const char *const params[] = {"tau", "tau_mean", "naive_positive", "tau_schedule", NULL};

/* tau_schedule codes, as ccfg/guidance.py (CCFG._SCHEDULES) passes them */
enum { S_CONSTANT, S_DIM, S_NCE, S_PILOT, S_PILOT_NOISE, S_BATCH, S_COUNT };
static const char *const schedule_names[] = {"constant", "dim",         "nce",
                                             "pilot",    "pilot_noise", "batch"};

static int schedule_of(const ccfg_rule *r)
{
    const double s = r->p[TAU_SCHEDULE];
    return (s >= 0 && s < S_COUNT && s == floor(s)) ? (int)s : -1;
}

static int comparing(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of the step's ‖D_n_j‖² over samples and negatives (‖D_p‖² when no negative is
 * active at this step): the batch's typical squared guidance difference */
static int median_norm(const ccfg_rule_inputs *in, double *median)
{
    const int64_t count = in->k ? (int64_t)in->k * in->n : in->n;
    const double *src = in->k ? in->nn : in->pp;
    if (count == 0) {
        *median = 0.0;
        return CCFG_OK;
    }
    double *v = malloc((size_t)count * sizeof *v);
    if (!v) return ccfg_fail(CCFG_ENOMEM, "out of memory for CCFG's calibration (n=%lld)",
                             (long long)in->n);
    for (int64_t q = 0; q < count; q++) v[q] = src[q];
    qsort(v, (size_t)count, sizeof *v, comparing);
    *median = count % 2 ? v[count / 2] : 0.5 * (v[count / 2 - 1] + v[count / 2]);
    free(v);
    return CCFG_OK;
}

/* τ such that λ- = 2σ(-τ m) is 1/2 at m: 2σ(-ln3) = 1/2; tau scales it. A batch whose guidance
 * differences all vanish (m = 0) gives τ = 0: negated CFG, the λ- = 1 limit it is already in. */
static double calibrated(double tau, double m) { return m > 0.0 ? tau * log(3.0) / m : 0.0; }

static int needs_alpha_bar(const ccfg_rule *r, const ccfg_rule_inputs *in)
{
    const double ab = in->alpha_bar;
    if (ab > 0.0 && ab < 1.0) return CCFG_OK;
    return ccfg_fail(CCFG_EINVAL, "CCFG tau=\"%s\" needs the step's noise level alpha_bar in "
                     "(0, 1) (ccfg.guide(..., alpha_bar=...)); got %g",
                     schedule_names[schedule_of(r)], ab);
}

/* The τ of this step: one host scalar per step, whatever the schedule (the coefficient loop
 * and a device-side coefficient pass both take it from here). */
static int tau_effective(const ccfg_rule *r, const ccfg_guide_state *st,
                         const ccfg_rule_inputs *in, double *tau_t)
{
    const double tau = r->p[TAU];
    const int s = schedule_of(r);
    const double *cal = (st && st->host && st->host_count >= 2 && st->host[0] > 0.0) ? st->host
                                                                                     : NULL;
    double m;
    int status;
    switch (s) {
    case S_CONSTANT:
        *tau_t = r->p[TAU_MEAN] != 0.0 ? tau / (double)in->dim : tau;
        return CCFG_OK;
    case S_DIM:
        *tau_t = tau / sqrt((double)in->dim);
        return CCFG_OK;
    case S_NCE:
        if ((status = needs_alpha_bar(r, in))) return status;
        *tau_t = tau / (2.0 * (1.0 - in->alpha_bar));
        return CCFG_OK;
    case S_PILOT:
    case S_PILOT_NOISE:
        if (s == S_PILOT_NOISE && (status = needs_alpha_bar(r, in))) return status;
        if (cal) {
            *tau_t = cal[0];
            if (s == S_PILOT_NOISE) {
                const double g0 = cal[1] * (1.0 - cal[1]);
                *tau_t *= g0 / (in->alpha_bar * (1.0 - in->alpha_bar));
            }
            return CCFG_OK;
        }
        /* not calibrated yet: this step is the pilot (after() stores it) */
        /* fall through */
    case S_BATCH:
        if ((status = median_norm(in, &m))) return status;
        *tau_t = calibrated(tau, m);
        return CCFG_OK;
    default:
        return ccfg_fail(CCFG_EINVAL, "CCFG: tau_schedule %g is not a schedule (0..%d)",
                         r->p[TAU_SCHEDULE], S_COUNT - 1);
    }
}

static int coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef)
{
    const int m = 2 + in->k;
    const double w = r->scale, wn = r->negative_scale;
    double tau = 0.0;
    int status = tau_effective(r, st, in, &tau);
    if (status) return status;
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

/* The same table as a ccfg_coef_form, when τ_t is known without this call's reductions; else
 * family 0 (the host loop runs). */
static int device_form(const ccfg_rule *r, const ccfg_guide_state *st, const ccfg_rule_inputs *in,
                       ccfg_coef_form *form)
{
    const int s = schedule_of(r);
    const int calibrated_state = st && st->host && st->host_count >= 2 && st->host[0] > 0.0;
    *form = (ccfg_coef_form){.family = 0};
    if (s == S_BATCH || ((s == S_PILOT || s == S_PILOT_NOISE) && !calibrated_state))
        return CCFG_OK;
    double tau = 0.0;
    int status = tau_effective(r, st, in, &tau);
    if (status) return status;
    *form = (ccfg_coef_form){.family = CCFG_FORM_CONTRASTIVE, .w = r->scale,
                             .w_n = r->negative_scale, .tau_eff = tau,
                             .naive_positive = r->p[NAIVE_POSITIVE] != 0.0};
    return CCFG_OK;
}

/* the pilot schedules only: state [τ_0, ā_0], τ_0 = 0 until calibrated */
static int needs_state(const ccfg_rule *r)
{
    const int s = schedule_of(r);
    return s == S_PILOT || s == S_PILOT_NOISE;
}

static int state_init(ccfg_guide_state *st, const ccfg_rule *r)
{
    (void)r;
    return ccfg_guide_state_alloc(st, 0, 2);
}

/* calibrate once, at the first updating evaluation with an active negative (so a negative
 * window that opens late calibrates on the negatives, not on the positive) */
static int learn(const ccfg_rule *r, ccfg_guide_state *st, const ccfg_rule_inputs *in)
{
    if (!needs_state(r) || !st || !st->host || st->host_count < 2 ||
        st->host[0] > 0.0 || in->k == 0 || !in->nn)
        return CCFG_OK;
    double m;
    int status = median_norm(in, &m);
    if (status) return status;
    st->host[0] = calibrated(r->p[TAU], m);
    st->host[1] = in->alpha_bar;
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_ccfg = {
    .name = "ccfg",
    .params = params,
    .uses_negatives = 1,
    .direction_dots = 1,
    .coefficients = coefficients,
    .device_form = device_form,
    .learn = learn,
    .needs_state = needs_state,
    .state_init = state_init,
};
