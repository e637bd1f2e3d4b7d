/* fuzz/schedule_fuzz.c — schedules and plans (csrc/schedule.c) as ccfg/schedulers.py and
 * ccfg.sample reach them, on any sampler config: solver, steps, spacing, offsets, beta schedule,
 * trained betas (any values), x0 processing, eta, Karras sigmas. ccfg_plan_init must accept or
 * refuse with a message; an accepted plan must be well formed (finite, ordered where diffusers'
 * is), and a small one is walked by ccfg_solve on a toy model (eps = a x, NaN where the bytes
 * say) with noise, trajectory and a progress callback that may cancel. */
#include "fuzz.h"

enum {
    MAX_TRAINED = 4096,     /* trained_betas given only this long */
    MAX_SOLVE_STEPS = 64,   /* ccfg_solve walks plans this short */
};

typedef struct {
    double a;
    int nan_at;             /* model output NaN at this evaluation (-1: never) */
    int calls, cancel_at;
} toy;

static int toy_eps(void *ctx, int step, int level, int stage, const float *x_vp, double timestep,
                   double alpha_bar, float *eps_out)
{
    (void)step; (void)level; (void)stage; (void)timestep; (void)alpha_bar;
    toy *t = ctx;
    /* n * dim floats: the harness's n = 1, dim = 8 */
    for (int i = 0; i < 8; i++) eps_out[i] = (float)(t->a * x_vp[i]);
    if (t->calls++ == t->nan_at) eps_out[0] = NAN;
    return CCFG_OK;
}

static int toy_progress(void *ctx, int done, int steps)
{
    (void)steps;
    toy *t = ctx;
    return done == t->cancel_at ? ccfg_fail(CCFG_ECANCEL, "cancelled by the fuzzer") : CCFG_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    ccfg_sampler_config c;
    memset(&c, 0, sizeof c);
    c.solver = fz_int(&in, 0, 5);
    c.steps = fz_int(&in, 1, 50);
    c.eta = fz_double(&in, 0.0, 1.0);
    c.karras = fz_int(&in, 0, 1);
    c.spacing = fz_int(&in, -1, 2);
    c.steps_offset = fz_int(&in, 0, 2);
    c.set_alpha_to_one = fz_int(&in, 0, 1);
    c.num_train_timesteps = fz_int(&in, 2, 1000);
    c.beta_schedule = fz_int(&in, 0, 2);
    c.beta_start = fz_double(&in, 0.0, 0.01);
    c.beta_end = fz_double(&in, 0.0, 0.05);
    const uint8_t x0 = fz_u8(&in);
    c.clip_sample = x0 % 3 == 1 ? fz_double(&in, 0.0, 2.0) : 0.0;
    c.threshold_ratio = x0 % 3 == 2 ? fz_double(&in, 0.0, 1.0) : 0.0;
    c.sample_max = fz_double(&in, 1.0, 4.0);
    double *betas = NULL;
    if (fz_u8(&in) % 8 == 0 && c.num_train_timesteps >= 1 && c.num_train_timesteps <= MAX_TRAINED) {
        betas = malloc((size_t)c.num_train_timesteps * sizeof *betas);
        if (!betas) return 0;
        for (int i = 0; i < c.num_train_timesteps; i++) betas[i] = fz_double(&in, 1e-4, 0.02);
        c.trained_betas = betas;
    }

    if (getenv("FUZZ_VERBOSE"))     /* replaying one input: say what it is */
        fprintf(stderr, "solver %d steps %d eta %g karras %d spacing %d offset %d alpha_to_one %d "
                "T %d schedule %d beta %g..%g clip %g ratio %g max %g trained %s\n", c.solver,
                c.steps, c.eta, c.karras, c.spacing, c.steps_offset, c.set_alpha_to_one,
                c.num_train_timesteps, c.beta_schedule, c.beta_start, c.beta_end, c.clip_sample,
                c.threshold_ratio, c.sample_max, betas ? "yes" : "no");
    ccfg_plan plan;
    ccfg_clear_error();
    int status = ccfg_plan_init(&plan, &c);
    if (status) {
        fz_check_error(status);
        free(betas);
        return 0;
    }
    const int N = plan.steps, L = plan.levels;
    FZ_CHECK(N == c.steps && L == (c.solver == CCFG_SOLVER_HEUN ? 2 * N - 1 : N),
             "plan of %d steps, %d levels for %d steps", N, L, c.steps);
    for (int i = 0; i < plan.T; i++)
        FZ_CHECK(plan.alphas_cumprod[i] > 0.0 && plan.alphas_cumprod[i] <= 1.0,
                 "alphas_cumprod[%d] = %g", i, plan.alphas_cumprod[i]);
    for (int i = 0; i < L; i++)
        FZ_CHECK(isfinite(plan.timesteps[i]), "timestep %d = %g", i, plan.timesteps[i]);
    for (int i = 0; i < N; i++)
        FZ_CHECK(plan.alpha_bars[i] >= 0.0 && plan.alpha_bars[i] <= 1.0 &&
                 plan.alpha_bars_next[i] >= 0.0 && plan.alpha_bars_next[i] <= 1.0,
                 "alpha_bars[%d] = %g, next %g", i, plan.alpha_bars[i], plan.alpha_bars_next[i]);
    FZ_CHECK(plan.init_noise_sigma > 0.0 && isfinite(plan.init_noise_sigma),
             "init_noise_sigma %g", plan.init_noise_sigma);

    if (N <= MAX_SOLVE_STEPS) {
        enum { DIM = 8 };
        float x[DIM];
        float *traj = fz_u8(&in) % 4 == 0 ? malloc((size_t)(N + 1) * DIM * sizeof(float)) : NULL;
        toy t = {.a = fz_double(&in, -1.0, 1.0), .nan_at = fz_int(&in, -1, 2 * N),
                 .cancel_at = fz_int(&in, -1, N)};
        ccfg_solver_callbacks cb = {.eps = toy_eps, .progress = toy_progress, .ctx = &t};
        const ccfg_backend *be = ccfg_backend_cpu();
        const uint64_t seed = fz_u64(&in);
        const int64_t first = (int64_t)fz_u64(&in) >> 1;
        be->randn(be, 1, DIM, seed, 0, first, x);
        ccfg_clear_error();
        status = ccfg_solve(be, &plan, &c, 1, DIM, seed, first, x, traj, &cb);
        if (status) fz_check_error(status);
        free(traj);
    }
    ccfg_plan_free(&plan);
    free(betas);
    return 0;
}
