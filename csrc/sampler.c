/* sampler.c — model + guidance rule as the eps function a solver integrates.
 *
 * Each evaluation stacks the state once per condition the rule needs this step (rows: null,
 * positive, negatives, each a block of n), makes ONE model call, converts the output to eps and
 * applies the rule. Negatives outside the rule's window are not evaluated at all. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

enum { MAX_NEGATIVES = CCFG_MAX_RULE_NEGATIVES };

typedef struct {
    const ccfg_backend *be;
    const ccfg_guided_model *gm;
    const ccfg_plan *plan;
    int64_t n, dim;
    int max_blocks;
    float *x_in;            /* [max_blocks, n, dim] stacked model input */
    float *y[2];            /* [max_blocks, n, dim] model output per stage (stage 0 kept for DNG) */
    int32_t *cond;          /* [max_blocks * n], host */
    float *host_x, *host_y; /* host copies for a host model on a device, else NULL */
    ccfg_guide_state state;
    /* where the blocks of the last stage-0 evaluation live, for the DNG update */
    const float *last_u;
    const float *last_n[MAX_NEGATIVES];
    int last_k;
    int (*progress)(void *, int, int);
    void *progress_ctx;
} sampler_ctx;

/* eps from the model's own parameterisation; x_t = a x0 + s eps, v = a eps - s x0 */
static int to_eps(const ccfg_backend *be, int pred, int64_t count, const float *x, float *y,
                  double alpha_bar)
{
    const double a = sqrt(alpha_bar), s = sqrt(1.0 - alpha_bar);
    if (pred == CCFG_PRED_V) return be->axpbypcz(be, count, a, y, s, x, 0.0, NULL, y);
    if (pred == CCFG_PRED_SAMPLE) return be->axpbypcz(be, count, -a / s, y, 1.0 / s, x, 0.0, NULL, y);
    return CCFG_OK;
}

/* One model call on the stacked input. A model that reads host arrays gets copies when the
 * backend is a device (two transfers per evaluation: the documented cost of Python models). */
static int call_model(sampler_ctx *c, int64_t rows, const float *x_in, double timestep,
                      double alpha_bar, float *y)
{
    const ccfg_backend *be = c->be;
    const ccfg_model *model = c->gm->model;
    const size_t bytes = (size_t)rows * (size_t)c->dim * sizeof(float);
    int status;
    if (model->on_backend || be->host_memory)
        return model->eval(model->ctx, be, rows, c->dim, x_in, timestep, alpha_bar, c->cond, y);
    if ((status = be->download(be, c->host_x, x_in, bytes)) ||
        (status = model->eval(model->ctx, be, rows, c->dim, c->host_x, timestep, alpha_bar,
                              c->cond, c->host_y)))
        return status;
    return be->upload(be, y, c->host_y, bytes);
}

static int eval_eps(void *vctx, int step, int level, int stage, const float *x_vp,
                    double timestep, double alpha_bar, float *eps_out)
{
    sampler_ctx *c = vctx;
    const ccfg_backend *be = c->be;
    const ccfg_guided_model *gm = c->gm;
    const ccfg_rule *rule = gm->rule;
    const int64_t n = c->n, dim = c->dim, count = n * dim;
    const int steps = c->plan->steps;
    const int active = ccfg_rule_negative_active(rule, step, steps);
    const int k = active ? gm->n_neg : 0;
    const int has_pos = gm->positive != CCFG_UNCOND;
    (void)level;

    /* which conditions to evaluate: the rule says whether it reads the null (a negative prompt
     * replaces it; no guidance with a positive needs only the positive) */
    const int need_u = ccfg_rule_needs_null(rule, has_pos, k);
    int32_t ids[2 + MAX_NEGATIVES];
    int nb = 0;
    if (need_u) ids[nb++] = CCFG_UNCOND;
    if (has_pos) ids[nb++] = gm->positive;
    for (int j = 0; j < k; j++) ids[nb++] = gm->negatives[j];

    int status;
    /* one block (unguided, or a rule that needs one condition): the model reads the state in
     * place (models never write their input); several: stacked once per condition */
    const float *x_in = nb == 1 ? x_vp : c->x_in;
    for (int b = 0; b < nb; b++) {
        if (nb > 1 &&
            (status = be->axpbypcz(be, count, 1.0, x_vp, 0.0, NULL, 0.0, NULL, c->x_in + b * count)))
            return status;
        for (int64_t i = 0; i < n; i++) c->cond[b * n + i] = ids[b];
    }
    float *y = c->y[stage ? 1 : 0];
    if ((status = call_model(c, nb * n, x_in, timestep, alpha_bar, y)) ||
        (status = to_eps(be, gm->model->prediction_type, nb * count, x_in, y, alpha_bar)) ||
        (status = be->watch_finite(be, nb * count, y, 2 * step)))
        return status;
    if (be->synchronous) {      /* a device reports at its next wait (solver.c) */
        int bad;
        if ((status = be->first_nonfinite(be, &bad))) return status;
        if (bad >= 0) return ccfg_nonfinite_error(c->plan, bad);
    }

    int b = 0;
    const float *eps_u = need_u ? y + (b++) * count : NULL;
    const float *eps_p = has_pos ? y + (b++) * count : NULL;
    const float *eps_n[MAX_NEGATIVES];
    for (int j = 0; j < k; j++) eps_n[j] = y + (b++) * count;
    if (!eps_u) eps_u = k ? eps_n[0] : eps_p;    /* its coefficient is zero (see above) */

    if (stage == 0) {
        c->last_u = eps_u;
        c->last_k = k;
        for (int j = 0; j < k; j++) c->last_n[j] = eps_n[j];
    }
    /* the rule applies the same window, so it reads eps_n only when they were evaluated */
    return ccfg_guide_at(be, rule, &c->state, n, dim, eps_u, eps_p, gm->n_neg, eps_n, step, steps,
                         alpha_bar, stage == 0, eps_out);
}

static int on_transition(void *vctx, int step, const float *x_before, const float *x_after,
                         double alpha_bar, double alpha_bar_next, double eta)
{
    sampler_ctx *c = vctx;
    const ccfg_rule *rule = c->gm->rule;
    (void)step;
    if (!ccfg_rule_observes(rule) || c->last_k == 0) return CCFG_OK;
    return ccfg_guide_observe(c->be, rule, &c->state, c->n, c->dim, x_before, x_after, c->last_u,
                              c->last_k, c->last_n, alpha_bar, alpha_bar_next, eta);
}

static int on_progress(void *vctx, int step, int steps)
{
    sampler_ctx *c = vctx;
    return c->progress ? c->progress(c->progress_ctx, step, steps) : CCFG_OK;
}

int ccfg_sample(const ccfg_backend *be, const ccfg_guided_model *gm, const ccfg_plan *plan,
                const ccfg_sampler_config *cfg, int64_t n, int64_t dim, uint64_t seed, int64_t first,
                float *x, float *trajectory, int (*progress)(void *ctx, int step, int steps),
                void *progress_ctx)
{
    int status;
    sampler_ctx c;
    memset(&c, 0, sizeof c);
    if (gm->n_neg < 0 || gm->n_neg > MAX_NEGATIVES)
        return ccfg_fail(CCFG_EINVAL, "negative: at most %d negatives, got %d", MAX_NEGATIVES,
                         gm->n_neg);
    const ccfg_model *model = gm->model;
    int begun = 0;
    if (model->dim > 0 && model->dim != dim)
        return ccfg_fail(CCFG_EINVAL, "x_T has %lld values per sample, the model %lld",
                         (long long)dim, (long long)model->dim);
    c.be = be;
    c.gm = gm;
    c.plan = plan;
    c.n = n;
    c.dim = dim;
    c.max_blocks = 2 + gm->n_neg;
    c.progress = progress;
    c.progress_ctx = progress_ctx;
    const size_t bytes = (size_t)c.max_blocks * (size_t)n * (size_t)dim * sizeof(float);
    if ((status = be->alloc(be, bytes, &c.x_in)) || (status = be->alloc(be, bytes, &c.y[0])) ||
        (status = be->alloc(be, bytes, &c.y[1])))
        goto fail;
    c.cond = malloc((size_t)c.max_blocks * (size_t)n * sizeof *c.cond);
    if (!gm->model->on_backend && !be->host_memory) {
        c.host_x = malloc(bytes);
        c.host_y = malloc(bytes);
    }
    if (!c.cond || (!gm->model->on_backend && !be->host_memory && (!c.host_x || !c.host_y))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory for %lld samples of %lld values",
                           (long long)n, (long long)dim);
        goto fail;
    }
    status = ccfg_guide_state_init(&c.state, be, gm->rule, n, dim, gm->n_neg);
    if (status) goto fail;
    /* the model prepares for the largest stacked batch of the loop (a UNet plans its activations
     * once, a mixture places its parameters on the backend) */
    if (model->begin && (status = model->begin(model->ctx, be, n, (int64_t)c.max_blocks * n))) goto fail;
    begun = 1;

    const ccfg_solver_callbacks cb = {
        .eps = eval_eps, .transition = on_transition, .progress = on_progress, .ctx = &c,
    };
    status = ccfg_solve(be, plan, cfg, n, dim, seed, first, x, trajectory, &cb);
fail:
    if (begun && model->end) model->end(model->ctx);
    ccfg_guide_state_free(&c.state);
    be->release(be, c.x_in);
    be->release(be, c.y[0]);
    be->release(be, c.y[1]);
    free(c.cond);
    free(c.host_x);
    free(c.host_y);
    return status;
}
