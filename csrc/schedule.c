/* schedule.c — the training noise schedule and the levels each solver walks.
 *
 * Everything here mirrors diffusers' schedulers (DDIM, DDPM, EulerDiscrete, EulerAncestralDiscrete,
 * HeunDiscrete, DPMSolverMultistep): the same timesteps, sigmas and "previous" levels, quirks
 * included, so a run with the same model and noise follows the same trajectory. diffusers computes
 * the schedule in float32; we use double throughout (ā differs by ~1e-7 relative). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

static const char *const solver_names[] = {"ddim", "ddpm", "euler", "euler_ancestral", "heun",
                                           "dpmpp_2m"};
static const char *const spacing_names[] = {"leading", "trailing", "linspace"};

/* the training schedule is held in full (a few arrays of T doubles): bounded so that an untrusted
 * scheduler config cannot ask for gigabytes (diffusers' schedulers use 1000) */
enum { MAX_TRAIN_TIMESTEPS = 1 << 20 };

static int is_sigma_solver(int s) { return s != CCFG_SOLVER_DDIM && s != CCFG_SOLVER_DDPM; }

/* value i of numpy.linspace(a, b, num): i * ((b - a) / (num - 1)) + a, the endpoint exact */
static double linspace_at(double a, double b, int num, int i)
{
    if (num == 1) return a;
    if (i == num - 1) return b;
    return i * ((b - a) / (num - 1)) + a;
}

/* value i of numpy.arange(start, 0, -step): numpy fills start + i*d, d = (start - step) - start */
static double arange_down_at(double start, double step, int i)
{
    if (i == 0) return start;
    if (i == 1) return start - step;
    return start + i * ((start - step) - start);
}

/* Glide's cosine ā(t), t in [0, 1] */
static double cosine_alpha_bar(double t)
{
    const double c = cos((t + 0.008) / 1.008 * 3.14159265358979323846 / 2.0);
    return c * c;
}

static int make_alphas_cumprod(const ccfg_sampler_config *cfg, double *ac)
{
    const int T = cfg->num_train_timesteps;
    if (!cfg->trained_betas && (cfg->beta_schedule < CCFG_BETA_LINEAR ||
                                cfg->beta_schedule > CCFG_BETA_SQUAREDCOS_CAP_V2))
        return ccfg_fail(CCFG_EINVAL, "beta_schedule must be linear, scaled_linear or "
                         "squaredcos_cap_v2, got %d", cfg->beta_schedule);
    if (!cfg->trained_betas && cfg->beta_schedule != CCFG_BETA_SQUAREDCOS_CAP_V2 &&
        !(cfg->beta_start >= 0.0 && cfg->beta_end >= 0.0))
        return ccfg_fail(CCFG_EINVAL, "beta_start and beta_end must be >= 0, got %g and %g",
                         cfg->beta_start, cfg->beta_end);
    double prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta;
        if (cfg->trained_betas) {
            beta = cfg->trained_betas[i];
        } else if (cfg->beta_schedule == CCFG_BETA_LINEAR) {
            beta = linspace_at(cfg->beta_start, cfg->beta_end, T, i);
        } else if (cfg->beta_schedule == CCFG_BETA_SCALED_LINEAR) {
            const double r = linspace_at(sqrt(cfg->beta_start), sqrt(cfg->beta_end), T, i);
            beta = r * r;
        } else {
            beta = 1.0 - cosine_alpha_bar((i + 1.0) / T) / cosine_alpha_bar((double)i / T);
            beta = fmin(beta, 0.999);
        }
        /* beta = 0 would put σ = 0 inside the schedule (log σ, 1/(1-ā) blow up), beta = 1 ā = 0 */
        if (!(beta > 0.0 && beta < 1.0)) {
            if (cfg->trained_betas)
                return ccfg_fail(CCFG_EINVAL, "trained_betas[%d] = %g is outside (0, 1)", i, beta);
            return ccfg_fail(CCFG_EINVAL, "beta_start = %g, beta_end = %g give beta[%d] = %g, "
                             "outside (0, 1)", cfg->beta_start, cfg->beta_end, i, beta);
        }
        /* a beta below double precision (1 - beta == 1) adds no noise: ā would stay 1, σ 0 */
        if (1.0 - beta == 1.0)
            return ccfg_fail(CCFG_EINVAL, "%s[%d] = %g adds no noise in double precision (1 - beta "
                             "rounds to 1)", cfg->trained_betas ? "trained_betas" : "beta", i, beta);
        prod *= 1.0 - beta;
        /* ā this small makes σ² = (1 - ā)/ā overflow (or ā reach 0): the plan would hold NaN */
        if (!(prod > 1e-300))
            return ccfg_fail(CCFG_EINVAL, "alphas_cumprod underflows at training step %d of %d "
                             "(the betas remove all signal): use fewer num_train_timesteps or "
                             "smaller betas", i, T);
        ac[i] = prod;
    }
    return CCFG_OK;
}

/* The N sampler timesteps, descending, as set_timesteps computes them.
 * DDIM/DDPM round linspace to integers; Euler/Heun keep it fractional (float32). DPM-Solver spaces
 * N+1 points and drops the last (t = 0) for linspace and leading. */
static void spaced_timesteps(int solver, int spacing, int T, int N, int offset, double *t)
{
    const int dpm = solver == CCFG_SOLVER_DPMPP_2M;
    for (int i = 0; i < N; i++) {
        double v;
        if (spacing == CCFG_SPACING_LINSPACE) {
            if (dpm) {
                v = rint(linspace_at(0.0, T - 1.0, N + 1, N - i));
            } else {
                v = linspace_at(0.0, T - 1.0, N, N - 1 - i);
                v = is_sigma_solver(solver) ? (double)(float)v : rint(v);
            }
        } else if (spacing == CCFG_SPACING_LEADING) {
            v = dpm ? (double)(N - i) * (T / (N + 1)) : (double)(N - 1 - i) * (T / N);
            v += offset;
        } else {
            /* numpy's float arange sometimes yields N+1 values (the last one -1, past the end);
             * diffusers then runs an extra step at t = -1. We keep the first N. */
            v = rint(arange_down_at((double)T, (double)T / N, i)) - 1.0;
        }
        t[i] = v;
    }
}

/* numpy.interp(t, arange(T), sig): linear in σ between training steps, clamped at the ends */
static double sigma_at(const double *sig, int T, double t)
{
    if (t <= 0.0) return sig[0];
    if (t >= T - 1) return sig[T - 1];
    const int j = (int)t;
    return sig[j] + (sig[j + 1] - sig[j]) * (t - j);
}

/* diffusers' _sigma_to_t: the training step whose log σ brackets log σ, linear in log σ */
static double sigma_to_t(const double *log_sig, int T, double sigma)
{
    const double ls = log(fmax(sigma, 1e-10));
    /* the last j with log σ_j at or below: log σ never decreases with t (every beta is in (0, 1)),
     * so the condition holds on a prefix, found by bisection (a scan made Karras plans
     * O(steps x num_train_timesteps)) */
    int lo = 0, hi = T;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (ls - log_sig[mid] >= 0.0) lo = mid + 1;
        else hi = mid;
    }
    int low = lo > 0 ? lo - 1 : 0;
    if (low > T - 2) low = T - 2;
    double w = (log_sig[low] - ls) / (log_sig[low] - log_sig[low + 1]);
    w = fmin(fmax(w, 0.0), 1.0);
    return (1.0 - w) * low + w * (low + 1);
}

/* Karras et al. (2022) ρ = 7 schedule between smax and smin, N values */
static void karras_sigmas(double smin, double smax, int N, double *out)
{
    const double rho = 7.0, lo = pow(smin, 1.0 / rho), hi = pow(smax, 1.0 / rho);
    for (int i = 0; i < N; i++) out[i] = pow(hi + linspace_at(0.0, 1.0, N, i) * (lo - hi), rho);
}

/* DDIM / DDPM: integer timesteps, ā at t and at the level the step lands on */
static int vp_levels(ccfg_plan *plan, const ccfg_sampler_config *cfg, const double *st)
{
    const int N = plan->steps, ratio = plan->T / N;
    const double *ac = plan->alphas_cumprod;
    for (int i = 0; i < N; i++) {
        const int t = (int)st[i];
        double next;
        if (plan->solver == CCFG_SOLVER_DDIM) {
            /* DDIM steps back T//N whatever the spacing; past 0 it lands on final_alpha_cumprod */
            const int prev = t - ratio;
            next = prev >= 0 ? ac[prev] : (cfg->set_alpha_to_one ? 1.0 : ac[0]);
        } else {
            /* DDPM's previous_timestep: the next entry of the schedule, clean data at the end */
            next = i + 1 < N ? ac[(int)st[i + 1]] : 1.0;
        }
        plan->timesteps[i] = st[i];
        plan->alpha_bars[i] = ac[t];
        plan->alpha_bars_next[i] = next;
        plan->sigmas[i] = sqrt((1.0 - ac[t]) / ac[t]);
    }
    const double last = plan->alpha_bars_next[N - 1];
    plan->sigmas[N] = sqrt((1.0 - last) / last);
    plan->init_noise_sigma = 1.0;
    return CCFG_OK;
}

/* Euler, Euler ancestral, Heun, DPM++: σ = sqrt((1-ā)/ā) interpolated at the timesteps (or Karras
 * σ and the timesteps they map back to); st is updated in place. work: scratch [T]. */
static int sigma_levels(ccfg_plan *plan, const ccfg_sampler_config *cfg, int spacing, double *st,
                        double *work)
{
    const int solver = plan->solver, N = plan->steps, T = plan->T;
    const int dpm = solver == CCFG_SOLVER_DPMPP_2M;
    const double *ac = plan->alphas_cumprod;
    double *sig = plan->sigmas, *train_sig = work;
    for (int j = 0; j < T; j++) train_sig[j] = sqrt((1.0 - ac[j]) / ac[j]);
    if (cfg->karras) {
        /* Euler/Heun span the spaced schedule's ends, DPM-Solver the whole training range */
        const double smin = dpm ? train_sig[0] : sigma_at(train_sig, T, st[N - 1]);
        const double smax = dpm ? train_sig[T - 1] : sigma_at(train_sig, T, st[0]);
        karras_sigmas(smin, smax, N, sig);
        double *log_sig = work;
        for (int j = 0; j < T; j++) log_sig[j] = log(train_sig[j]);
        for (int i = 0; i < N; i++) {
            const double t = sigma_to_t(log_sig, T, sig[i]);
            /* DPM-Solver keeps integer timesteps: rounded, except cosine schedules (truncated) */
            if (dpm) st[i] = cfg->beta_schedule == CCFG_BETA_SQUAREDCOS_CAP_V2 ? floor(t) : rint(t);
            else st[i] = (double)(float)t;
        }
    } else {
        for (int i = 0; i < N; i++) sig[i] = sigma_at(train_sig, T, st[i]);
    }
    sig[N] = 0.0;
    /* equal neighbouring σ (DPM-Solver's leading spacing, steps close to T) make its h = 0 */
    for (int i = 0; dpm && i + 1 < N; i++)
        if (!(sig[i] > sig[i + 1]))
            return ccfg_fail(CCFG_EINVAL, "steps = %d repeats a noise level with %s spacing and "
                             "num_train_timesteps = %d", N, spacing_names[spacing], T);

    for (int i = 0; i < N; i++) {
        plan->alpha_bars[i] = 1.0 / (1.0 + sig[i] * sig[i]);
        plan->alpha_bars_next[i] = 1.0 / (1.0 + sig[i + 1] * sig[i + 1]);
    }
    if (solver == CCFG_SOLVER_HEUN) {
        /* diffusers repeats every timestep after the first: step i evaluates t_i, then t_{i+1} */
        plan->timesteps[0] = st[0];
        for (int i = 1; i < N; i++) plan->timesteps[2 * i - 1] = plan->timesteps[2 * i] = st[i];
    } else {
        memcpy(plan->timesteps, st, (size_t)N * sizeof(double));
    }
    if (dpm) {
        plan->init_noise_sigma = 1.0;      /* DPM-Solver works on the VP state */
    } else {
        double smax = 0.0;
        for (int i = 0; i <= N; i++) smax = fmax(smax, sig[i]);
        /* diffusers: leading spacing starts from unit VP noise, the others from σ_max · noise */
        plan->init_noise_sigma = spacing == CCFG_SPACING_LEADING ? sqrt(smax * smax + 1.0) : smax;
    }
    return CCFG_OK;
}

void ccfg_plan_free(ccfg_plan *plan)
{
    if (!plan) return;
    free(plan->alphas_cumprod);
    free(plan->timesteps);
    free(plan->alpha_bars);
    free(plan->alpha_bars_next);
    free(plan->sigmas);
    memset(plan, 0, sizeof *plan);
}

int ccfg_plan_init(ccfg_plan *plan, const ccfg_sampler_config *cfg)
{
    if (!plan || !cfg) return ccfg_fail(CCFG_EINVAL, "plan and cfg must not be NULL");
    memset(plan, 0, sizeof *plan);
    const int solver = cfg->solver, N = cfg->steps, T = cfg->num_train_timesteps;
    int status = CCFG_OK;
    double *st = NULL, *work = NULL;      /* per-step timesteps, scratch [T] */

    /* ---- arguments */
    if (solver < CCFG_SOLVER_DDIM || solver > CCFG_SOLVER_DPMPP_2M)
        return ccfg_fail(CCFG_EINVAL, "solver must be one of ddim, ddpm, euler, euler_ancestral, "
                         "heun, dpmpp_2m, got %d", solver);
    const char *name = solver_names[solver];
    if (T < 2 || T > MAX_TRAIN_TIMESTEPS)
        return ccfg_fail(CCFG_EINVAL, "num_train_timesteps must be in [2, %d], got %d",
                         MAX_TRAIN_TIMESTEPS, T);
    if (N < 1) return ccfg_fail(CCFG_EINVAL, "steps must be >= 1, got %d", N);
    if (N > T)
        return ccfg_fail(CCFG_EINVAL, "steps must be <= num_train_timesteps (%d), got %d", T, N);
    int spacing = cfg->spacing;
    if (spacing == CCFG_SPACING_DEFAULT)
        spacing = is_sigma_solver(solver) ? CCFG_SPACING_LINSPACE : CCFG_SPACING_LEADING;
    if (spacing < CCFG_SPACING_LEADING || spacing > CCFG_SPACING_LINSPACE)
        return ccfg_fail(CCFG_EINVAL, "timestep_spacing must be leading, trailing or linspace, "
                         "got %d", cfg->spacing);
    if (cfg->steps_offset < 0)
        return ccfg_fail(CCFG_EINVAL, "steps_offset must be >= 0, got %d", cfg->steps_offset);
    if (cfg->karras && !is_sigma_solver(solver))
        return ccfg_fail(CCFG_EINVAL, "karras sigmas need a sigma-space solver (euler, "
                         "euler_ancestral, heun, dpmpp_2m), not %s", name);
    if (solver == CCFG_SOLVER_DDIM && !(cfg->eta >= 0.0 && cfg->eta <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "eta must be in [0, 1], got %g", cfg->eta);
    if (!(cfg->clip_sample >= 0.0 && isfinite(cfg->clip_sample)))
        return ccfg_fail(CCFG_EINVAL, "clip_sample_range must be a finite number > 0, got %g",
                         cfg->clip_sample);
    if (!(cfg->threshold_ratio >= 0.0 && cfg->threshold_ratio <= 1.0))
        return ccfg_fail(CCFG_EINVAL, "dynamic_thresholding_ratio must lie in (0, 1], got %g",
                         cfg->threshold_ratio);
    if (cfg->threshold_ratio > 0.0 && !(cfg->sample_max >= 1.0 && isfinite(cfg->sample_max)))
        return ccfg_fail(CCFG_EINVAL, "sample_max_value must be a finite number >= 1, got %g",
                         cfg->sample_max);
    if ((cfg->clip_sample > 0.0 || cfg->threshold_ratio > 0.0) && is_sigma_solver(solver))
        return ccfg_fail(CCFG_EINVAL, "%s: the %s sampler does not process x0 in ccfg (only ddim "
                         "and ddpm do); load the scheduler config with it off",
                         cfg->threshold_ratio > 0.0 ? "thresholding" : "clip_sample", name);

    const int levels = solver == CCFG_SOLVER_HEUN ? 2 * N - 1 : N;
    plan->solver = solver;
    plan->steps = N;
    plan->levels = levels;
    plan->T = T;
    plan->alphas_cumprod = malloc((size_t)T * sizeof(double));
    plan->timesteps = malloc((size_t)levels * sizeof(double));
    plan->alpha_bars = malloc((size_t)N * sizeof(double));
    plan->alpha_bars_next = malloc((size_t)N * sizeof(double));
    plan->sigmas = malloc((size_t)(N + 1) * sizeof(double));
    st = malloc((size_t)N * sizeof(double));
    work = malloc((size_t)T * sizeof(double));
    if (!plan->alphas_cumprod || !plan->timesteps || !plan->alpha_bars || !plan->alpha_bars_next ||
        !plan->sigmas || !st || !work) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory for a %d-step plan", N);
        goto fail;
    }

    /* ---- training schedule and the sampler's timesteps */
    if ((status = make_alphas_cumprod(cfg, plan->alphas_cumprod))) goto fail;
    spaced_timesteps(solver, spacing, T, N, cfg->steps_offset, st);
    if (st[0] > T - 1) {
        status = ccfg_fail(CCFG_EINVAL, "steps_offset = %d puts timestep %g past "
                           "num_train_timesteps - 1 = %d", cfg->steps_offset, st[0], T - 1);
        goto fail;
    }

    status = is_sigma_solver(solver) ? sigma_levels(plan, cfg, spacing, st, work)
                                     : vp_levels(plan, cfg, st);
fail:
    free(st);
    free(work);
    if (status) ccfg_plan_free(plan);
    return status;
}
