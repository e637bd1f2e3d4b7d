/* rules/linear.c — the rules whose coefficients are constants: no guidance, CFG, the negative
 * prompt and negated CFG (docs/methods.md §2). Per sample, with D = eps - eps_u:
 *   none:            eps_p (or eps_u without a positive)
 *   cfg:             eps_u + w D_p                         (negatives ignored)
 *   negative_prompt: eps_n + w (eps_p - eps_n)             (the negative replaces the null)
 *   negated_cfg:     eps_u + w D_p - w_n sum_j D_n_j       (Composable NOT when w_n = w) */
#include "rules/rule.h"

/* the plain prediction: the null only when there is no positive */
static int none_needs_null(const ccfg_rule *r, int has_positive, int k)
{
    (void)r; (void)k;
    return !has_positive;
}

static int none_coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                             const ccfg_rule_inputs *in, double *coef)
{
    (void)r; (void)st;
    for (int64_t i = 0; i < in->n; i++) ccfg_rule_cfg_row(coef + i * (2 + in->k), 1.0);
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_none = {
    .name = "none",
    .uses_negatives = 0,
    .needs_null = none_needs_null,
    .coefficients = none_coefficients,
};

static int cfg_coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                            const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    for (int64_t i = 0; i < in->n; i++) ccfg_rule_cfg_row(coef + i * (2 + in->k), r->scale);
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_cfg = {
    .name = "cfg",
    .uses_negatives = 0,
    .coefficients = cfg_coefficients,
};

/* CFG plus a constant weight cn on each negative direction: c_n_j = -cn, c_u += cn */
static void constant_negatives(const ccfg_rule_inputs *in, double wp, double cn, double *coef)
{
    const int m = 2 + in->k;
    for (int64_t i = 0; i < in->n; i++) {
        double *c = coef + i * m;
        ccfg_rule_cfg_row(c, wp);
        for (int j = 0; j < in->k; j++) {
            c[2 + j] = -cn;
            c[0] += cn;
        }
    }
}

/* with one negative, eps_n takes the null's place: eps_u is not evaluated */
static int negative_prompt_needs_null(const ccfg_rule *r, int has_positive, int k)
{
    (void)r; (void)has_positive;
    return k != 1;
}

static int negative_prompt_coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                                        const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    constant_negatives(in, r->scale, r->scale - 1.0, coef);
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_negative_prompt = {
    .name = "negative_prompt",
    .uses_negatives = 1,
    .needs_null = negative_prompt_needs_null,
    .coefficients = negative_prompt_coefficients,
};

static int negated_cfg_coefficients(const ccfg_rule *r, const ccfg_guide_state *st,
                                    const ccfg_rule_inputs *in, double *coef)
{
    (void)st;
    constant_negatives(in, r->scale, r->negative_scale, coef);
    return CCFG_OK;
}

const ccfg_rule_impl ccfg_rule_negated_cfg = {
    .name = "negated_cfg",
    .uses_negatives = 1,
    .coefficients = negated_cfg_coefficients,
};
