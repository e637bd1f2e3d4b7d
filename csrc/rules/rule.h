/* rules/rule.h — what a guidance rule is: one record per rule, one file per rule (or family).
 *
 * guidance.c runs every rule the same way, per call:
 *   1. reductions: per-sample numbers over the inputs (norms, dots) on the backend, if the rule
 *      asks for them (direction_dots: ‖D_p‖², ‖D_n‖², <D_n, D_p>; `reduce`: anything else);
 *   2. coefficients: on the host, the rule fills one row (c_u, c_p, c_n_1 .. c_n_k) per sample,
 *      eps_hat_i = c_u eps_u_i + c_p eps_p_i + sum_j c_n_j eps_n_j,i   (D = eps - eps_u);
 *   3. one fused backend pass (guide->combine) applies the table;
 *   (1-3 on the backend instead: a rule whose table is one of the formula families of
 *   ccfg_coef_form describes it in `device_form`, and a backend with guide->combine_form computes
 *   reductions, table and pass where the data is, with no host round trip per step; the host
 *   `coefficients` stays the reference and the path of every other backend;)
 *   4. `after`: an elementwise pass of the rule's own (SLD), optional.
 * A rule computed elsewhere (a Python function) sets `host` instead and sees host arrays.
 * Stateful rules allocate their state in state_init (via ccfg_guide_state_alloc) and may learn
 * from the sampler's transitions (`observe`). Adding a rule: see CONTRIBUTING.md. */
#ifndef CCFG_RULES_RULE_H
#define CCFG_RULES_RULE_H

#include "ccfg.h"

/* what the rule sees of one call: k is the number of negatives active at this step */
typedef struct {
    int64_t n, dim;
    int k;
    int step;                       /* the sampler step (or the guide call's step) */
    double alpha_bar;               /* the step's ā_t (VP), NaN when the caller does not know it */
    const float *eps_u, *eps_p;     /* backend memory; eps_p == eps_u without a positive */
    const float *const *eps_n;      /* [k] */
    /* per-sample reductions (host arrays), filled before `coefficients` runs */
    const double *pp;               /* [n]     ‖D_p‖²                 (direction_dots) */
    const double *nn;               /* [k, n]  ‖D_n_j‖²               (direction_dots) */
    const double *np;               /* [k, n]  <D_n_j, D_p>           (direction_dots) */
    double *extra;                  /* [n_extra, n] what `reduce` computed */
} ccfg_rule_inputs;

struct ccfg_rule_impl {
    const char *name;               /* the registry name, as Python passes it */
    const char *const *params;      /* names of rule->p[0..], NULL-terminated (NULL: none) */
    int uses_negatives;             /* 0: negatives are never evaluated (CFG, none) */
    /* does the rule read eps_u (NULL: always). The sampler skips the null where it is unused. */
    int (*needs_null)(const ccfg_rule *r, int has_positive, int k);
    int direction_dots;             /* 1: fill pp, nn, np */
    int n_extra;                    /* rows of `extra` that reduce fills */
    int (*reduce)(const ccfg_backend *be, const ccfg_rule *r, ccfg_rule_inputs *in);
    /* the coefficient table coef[n, 2 + k] (zeroed before the call) */
    int (*coefficients)(const ccfg_rule *r, const ccfg_guide_state *st,
                        const ccfg_rule_inputs *in, double *coef);
    /* the same table as a ccfg_coef_form: the family and this call's scalars, from the functions
     * `coefficients` uses (in: sizes and step; no reductions). NULL: no device form. */
    int (*device_form)(const ccfg_rule *r, const ccfg_guide_state *st, const ccfg_rule_inputs *in,
                       ccfg_coef_form *form);
    /* after the table of an updating call: learn host state from this call's reductions (in->pp,
     * in->nn; NULL when the device form ran), never touching `out` (NULL: nothing to learn) */
    int (*learn)(const ccfg_rule *r, ccfg_guide_state *st, const ccfg_rule_inputs *in);
    /* an elementwise pass after combine, on `out` (NULL: none) */
    int (*after)(const ccfg_backend *be, const ccfg_rule *r, ccfg_guide_state *st,
                 const ccfg_rule_inputs *in, int update, float *out);
    /* the whole rule on host arrays, instead of the steps above (NULL: not such a rule) */
    int (*host)(const ccfg_rule *r, int64_t n, int64_t dim, const float *eps_u, const float *eps_p,
                int k, const float *const *eps_n, float *out);
    /* state: allocate (st->n, dim, n_neg, be are set) and learn from a transition */
    int (*state_init)(ccfg_guide_state *st, const ccfg_rule *r);
    /* what the state shows the caller as host doubles (ccfg_guide_state_values; NULL: a copy of
     * st->host): *out malloc'ed, *count its length */
    int (*state_values)(const ccfg_guide_state *st, double **out, int64_t *count);
    /* with these parameters, does the rule use its state (NULL: whenever it has state_init) */
    int (*needs_state)(const ccfg_rule *r);
    int (*observe)(const ccfg_backend *be, const ccfg_rule *r, ccfg_guide_state *st, int64_t n,
                   int64_t dim, const float *x_t, const float *x_prev, const float *eps_u,
                   int n_neg, const float *const *eps_n, double alpha_bar, double alpha_bar_prev,
                   double eta);
};

/* for state_init: device floats on st->be and host doubles, zero-filled */
int ccfg_guide_state_alloc(ccfg_guide_state *st, int64_t device_count, int64_t host_count);

/* The CFG part every linear rule starts from: c_u = 1 - wp, c_p = wp for each sample. */
static inline void ccfg_rule_cfg_row(double *c, double wp)
{
    c[0] = 1.0 - wp;
    c[1] = wp;
}

/* 2σ(z) without overflow (CCFG's contrastive weights) */
double ccfg_two_sigmoid(double z);

#endif /* CCFG_RULES_RULE_H */
