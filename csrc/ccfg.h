/* ccfg.h — the C core's public API.
 *
 * Plain C11, no Python. Samples are float32, contiguous, flattened to (n, dim).
 * Every function returns CCFG_OK or an error status and sets a thread-local message
 * (ccfg_last_error()) naming what was wrong.
 */
#ifndef CCFG_H
#define CCFG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* status and errors */

typedef enum {
    CCFG_OK = 0,
    CCFG_EINVAL = 1,    /* bad argument value            -> ValueError   */
    CCFG_ETYPE = 2,     /* bad argument type             -> TypeError    */
    CCFG_ENOMEM = 3,    /* allocation failed             -> MemoryError  */
    CCFG_ENONFINITE = 4,/* NaN/Inf appeared while sampling -> FloatingPointError */
    CCFG_ECANCEL = 5,   /* a callback asked to stop (Ctrl-C, Python exception) */
    CCFG_EINTERNAL = 6, /* a backend or callback failed  -> RuntimeError */
} ccfg_status;

const char *ccfg_last_error(void);
/* printf-style; returns `status` so callers can `return ccfg_fail(...)` */
int ccfg_fail(int status, const char *fmt, ...);
void ccfg_clear_error(void);

/* ------------------------------------------------------------------------- */
/* backends: one table of operations per device; rules, solvers and models call only these */

typedef struct ccfg_backend {
    const char *name;
    /* memory: pointers returned are the backend's; on the CPU they are host memory */
    void *(*alloc)(size_t bytes);                 /* zero-filled, NULL on failure */
    void (*release)(void *p);
    void (*upload)(void *dst, const void *src, size_t bytes);
    void (*download)(void *dst, const void *src, size_t bytes);
    /* out[i] = <a_i, b_i> over dim elements, per sample, accumulated in double */
    void (*dot)(int64_t n, int64_t dim, const float *a, const float *b, double *out);
    /* the guidance reductions in one pass over the inputs, per sample i and negative j:
     *   pp[i] = ‖p_i - u_i‖²,  nn[j*n+i] = ‖n_j,i - u_i‖²,  np[j*n+i] = <n_j,i - u_i, p_i - u_i> */
    void (*direction_dots)(int64_t n, int64_t dim, const float *u, const float *p, int k,
                           const float *const *neg, double *pp, double *nn, double *np);
    /* out_i = sum_k coef[i*m + k] * in[k]_i : per-sample linear combination (the fused rule pass) */
    void (*combine)(int64_t n, int64_t dim, int m, const float *const *in, const double *coef,
                    float *out);
    /* out = a*x + b*y + c*z elementwise over count; y or z may be NULL (term skipped) */
    void (*axpbypcz)(int64_t count, double a, const float *x, double b, const float *y, double c,
                     const float *z, float *out);
    /* standard normals, Philox-4x32-10 (see rng.c): sample first+i, element j, stream */
    void (*randn)(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                  float *out);
    /* 1 if every value is finite */
    int (*all_finite)(int64_t count, const float *x);
    /* SLD, elementwise (methods §6), for one negative:
     *   g = mu * (eps_s - eps_u) + s_m * nu, mu = min(s_s |eps_p - eps_s|, 1) where (eps_p - eps_s) < thr else 0
     *   if update: nu <- beta_m * nu + (1 - beta_m) * g
     *   if apply:  out -= w * g  */
    void (*sld)(int64_t count, const float *eps_u, const float *eps_p, const float *eps_s, float *nu,
                double w, double s_s, double thr, double s_m, double beta_m, int update, int apply,
                float *out);
} ccfg_backend;

const ccfg_backend *ccfg_backend_cpu(void);

/* ------------------------------------------------------------------------- */
/* random numbers */

/* Philox-4x32-10 block: counter c[4], key k[2] -> out[4] */
void ccfg_philox4x32(const uint32_t c[4], const uint32_t k[2], uint32_t out[4]);
/* host reference of backend->randn */
void ccfg_randn_host(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                     float *out);

/* ------------------------------------------------------------------------- */
/* schedules and solvers (schedule.c, solver.c) */

typedef enum { CCFG_BETA_LINEAR, CCFG_BETA_SCALED_LINEAR, CCFG_BETA_SQUAREDCOS_CAP_V2 } ccfg_beta_schedule;
typedef enum { CCFG_SPACING_DEFAULT = -1, CCFG_SPACING_LEADING, CCFG_SPACING_TRAILING,
               CCFG_SPACING_LINSPACE } ccfg_spacing;
typedef enum { CCFG_SOLVER_DDIM, CCFG_SOLVER_DDPM, CCFG_SOLVER_EULER, CCFG_SOLVER_EULER_ANCESTRAL,
               CCFG_SOLVER_HEUN, CCFG_SOLVER_DPMPP_2M } ccfg_solver_kind;
typedef enum { CCFG_PRED_EPSILON, CCFG_PRED_V, CCFG_PRED_SAMPLE } ccfg_prediction;

typedef struct {
    int solver;                 /* ccfg_solver_kind */
    int steps;                  /* sampler steps, >= 1 */
    double eta;                 /* DDIM only */
    int karras;                 /* sigma-space solvers only */
    int spacing;                /* ccfg_spacing; DEFAULT = the solver's diffusers default */
    int steps_offset;
    int set_alpha_to_one;       /* DDIM final level */
    int num_train_timesteps;
    int beta_schedule;          /* ccfg_beta_schedule */
    double beta_start, beta_end;
    const double *trained_betas;/* NULL or num_train_timesteps values, overrides beta_schedule */
} ccfg_sampler_config;

/* Everything a solver walks, computed once from the config.
 * levels = model-evaluation levels per run (Heun: 2*steps-1, others: steps). */
typedef struct {
    int solver, steps, levels;
    int T;                      /* num_train_timesteps */
    double *alphas_cumprod;     /* [T] training schedule */
    double *timesteps;          /* [levels] model timestep of each evaluation (diffusers' `timesteps`) */
    double *alpha_bars;         /* [steps] ā at the start of step i */
    double *alpha_bars_next;    /* [steps] ā the step lands on (DDIM/DDPM: diffusers' prev level) */
    double *sigmas;             /* [steps+1] sqrt((1-ā)/ā) per step level, last = 0 for sigma solvers */
    double init_noise_sigma;    /* x_T = init_noise_sigma * unit noise (solver's own space) */
} ccfg_plan;

int ccfg_plan_init(ccfg_plan *plan, const ccfg_sampler_config *cfg);
void ccfg_plan_free(ccfg_plan *plan);

/* What a solver asks of the outside world. All vectors are (n, dim) on the backend. */
typedef struct {
    /* guided eps at the VP-scaled state x_vp (x_vp = x for DDIM/DDPM/DPM++, x/sqrt(1+σ²) for
     * Euler/Heun); `level` indexes plan->timesteps; stage 0 is the first evaluation of a step,
     * stage 1 Heun's corrector (stateful rules update only at stage 0). */
    int (*eps)(void *ctx, int step, int level, int stage, const float *x_vp, double timestep,
               double alpha_bar, float *eps_out);
    /* after step `step`: the VP-scaled state before and after, the levels ā -> ā_next and the eta of
     * an equivalent DDIM(eta) transition (0 deterministic, 1 DDPM / Euler ancestral). May be NULL. */
    int (*transition)(void *ctx, int step, const float *x_before_vp, const float *x_after_vp,
                      double alpha_bar, double alpha_bar_next, double eta);
    /* after each step with done = steps completed (1..steps); nonzero return cancels (its status
     * is returned). May be NULL. */
    int (*progress)(void *ctx, int done, int steps);
    void *ctx;
} ccfg_solver_callbacks;

/* Runs the whole loop. x: in = unit-variance x_T (n, dim), out = final sample.
 * trajectory: NULL or (steps+1, n, dim) VP-scaled states (before the first step, after each step).
 * Noise of step k comes from backend->randn(..., seed, stream = k + 1, first, ...). */
int ccfg_solve(const ccfg_backend *be, const ccfg_plan *plan, const ccfg_sampler_config *cfg,
               int64_t n, int64_t dim, uint64_t seed, int64_t first, float *x, float *trajectory,
               const ccfg_solver_callbacks *cb);

/* ------------------------------------------------------------------------- */
/* models */

#define CCFG_UNCOND (-1)

typedef struct {
    /* rows samples x (rows, dim) at one level; cond[r] = condition id (CCFG_UNCOND = null);
     * writes the model output (its own prediction_type) to out (rows, dim). */
    int (*eval)(void *ctx, int64_t rows, int64_t dim, const float *x, double timestep,
                double alpha_bar, const int32_t *cond, float *out);
    void *ctx;
    int prediction_type;        /* ccfg_prediction */
} ccfg_model;

/* Exact Gaussian mixture (gmm.c). Covariances as eigen-decompositions Σ_k = U_k diag(λ_k) U_kᵀ. */
typedef struct {
    int64_t K, dim;
    const double *means;        /* [K, dim] */
    const double *log_weights;  /* [K] normalised log weights */
    const double *evals;        /* [K, dim] eigenvalues */
    const double *evecs;        /* NULL (axis-aligned) or [K, dim, dim], column j = eigenvector j */
    int n_concepts;
    const uint8_t *concept_mask;/* [n_concepts, K]: 1 where component k belongs to concept c */
} ccfg_gmm;

/* eps(x) at level alpha_bar for rows with their own condition (CCFG_UNCOND = whole mixture). */
int ccfg_gmm_eps(const ccfg_gmm *g, int64_t rows, const float *x, double alpha_bar,
                 const int32_t *cond, float *out);
/* ccfg_model.eval adaptor: ctx is a ccfg_gmm* */
int ccfg_gmm_model_eval(void *ctx, int64_t rows, int64_t dim, const float *x, double timestep,
                        double alpha_bar, const int32_t *cond, float *out);

/* ------------------------------------------------------------------------- */
/* guidance rules (guidance.c) */

typedef enum {
    CCFG_RULE_NONE, CCFG_RULE_CFG, CCFG_RULE_NEGATIVE_PROMPT, CCFG_RULE_NEGATED_CFG,
    CCFG_RULE_PERP_NEG, CCFG_RULE_SLD, CCFG_RULE_DNG, CCFG_RULE_CCFG, CCFG_RULE_PYTHON
} ccfg_rule_kind;

typedef struct ccfg_rule {
    int kind;                       /* ccfg_rule_kind */
    double scale, negative_scale;   /* w, w_n (CCFG/NegatedCFG: w_n; PerpNeg: b; DNG: λ0) */
    double window_start, window_stop;
    double tau; int tau_mean; int naive_positive;   /* CCFG */
    int batch_global;                               /* Perp-Neg */
    int sld_warmup; double sld_scale, sld_threshold, sld_momentum_scale, sld_momentum_beta;
    double dng_prior, dng_temperature, dng_offset, dng_p_min, dng_p_max;
    /* PYTHON: a rule computed elsewhere (module.c calls back into Python) */
    int (*custom)(void *ctx, int64_t n, int64_t dim, const float *eps_u, const float *eps_p,
                  int n_neg, const float *const *eps_n, float *out);
    void *custom_ctx;
} ccfg_rule;

/* Per-sample, per-negative state of SLD (momentum, on the backend) and DNG (posterior, host). */
typedef struct {
    int64_t n, dim;
    int n_neg;
    int step;                       /* evaluations seen with update on */
    float *sld_nu;                  /* [n_neg, n, dim] or NULL */
    double *dng_p;                  /* [n_neg, n] or NULL */
    const ccfg_backend *be;
} ccfg_guide_state;

int ccfg_rule_stateful(const ccfg_rule *rule);
int ccfg_rule_negative_active(const ccfg_rule *rule, int step, int num_steps);
/* Allocates the state a stateful rule needs (no-op for stateless rules). */
int ccfg_guide_state_init(ccfg_guide_state *st, const ccfg_backend *be, const ccfg_rule *rule,
                          int64_t n, int64_t dim, int n_neg);
void ccfg_guide_state_free(ccfg_guide_state *st);

/* eps_hat = rule(eps_u, eps_p, eps_n). eps_p may be NULL (= eps_u). n_neg may be 0.
 * num_steps = 0: no window. update: stateful rules advance their state. */
int ccfg_guide(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
               int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
               const float *const *eps_n, int step, int num_steps, int update, float *out);

/* DNG posterior update from the transition x_t -> x_prev (VP-scaled), DDIM(eta) means. */
int ccfg_dng_observe(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                     int64_t dim, const float *x_t, const float *x_prev, const float *eps_u,
                     int n_neg, const float *const *eps_n, double alpha_bar, double alpha_bar_prev,
                     double eta);

/* ------------------------------------------------------------------------- */
/* sampling: model + rule + solver (sampler.c) */

typedef struct {
    const ccfg_model *model;
    const ccfg_rule *rule;
    int32_t positive;               /* condition id or CCFG_UNCOND for none */
    int n_neg;
    const int32_t *negatives;       /* [n_neg] condition ids */
} ccfg_guided_model;

int ccfg_sample(const ccfg_backend *be, const ccfg_guided_model *gm, const ccfg_plan *plan,
                const ccfg_sampler_config *cfg, int64_t n, int64_t dim, uint64_t seed, int64_t first,
                float *x, float *trajectory, int (*progress)(void *ctx, int done, int steps),
                void *progress_ctx);

/* ------------------------------------------------------------------------- */
/* Vulkan backend (backend_vk.c): libvulkan.so.1 is opened at run time, so everything here works
 * (and reports why not) on machines without Vulkan. Not thread-safe: one thread per device at a time.
 * CCFG_VULKAN_LOADER overrides the loader path; CCFG_VULKAN_STAGING=1 forces device-local
 * buffers with staging copies even where host-visible memory would do. */

typedef struct {
    int index;                      /* the N of "vulkan:N" */
    char name[256];
    const char *type;               /* "discrete", "integrated", "virtual", "cpu", "other" */
    uint32_t vendor_id, device_id, api_version;
    char driver_name[256], driver_info[256];
    uint64_t device_local_bytes;    /* sum of the device-local heaps */
    uint32_t subgroup_size;
    uint32_t max_storage_buffer_range, max_workgroup_invocations, max_shared_memory;
    int float64;                    /* shaderFloat64 */
    int usable;                     /* Vulkan >= 1.2 with a compute queue */
} ccfg_vk_device_info;

/* The devices found (enumerated once). *count may be 0: then ccfg_vk_unavailable() says why. */
int ccfg_vk_devices(const ccfg_vk_device_info **list, int *count);
/* NULL when at least one device exists, else the reason (backend not built, no loader, no ICD...) */
const char *ccfg_vk_unavailable(void);

/* Device buffers of float32 (or any 4-byte words). Every op below is recorded into the device's
 * current command buffer; ops that return values to the host (dot, direction_dots, all_finite,
 * download) submit it and wait. Every function returns a ccfg status. */
typedef struct ccfg_vk_buffer ccfg_vk_buffer;
int ccfg_vk_alloc(int device, size_t bytes, ccfg_vk_buffer **out);   /* zero-filled */
void ccfg_vk_free(ccfg_vk_buffer *b);
int ccfg_vk_upload(ccfg_vk_buffer *dst, const void *src, size_t bytes);
int ccfg_vk_download(void *dst, ccfg_vk_buffer *src, size_t bytes);
int ccfg_vk_flush(int device);                                     /* submit and wait */

/* the backend-table ops on device buffers; semantics as in ccfg_backend */
int ccfg_vk_axpbypcz(int64_t count, double a, ccfg_vk_buffer *x, double b, ccfg_vk_buffer *y,
                     double c, ccfg_vk_buffer *z, ccfg_vk_buffer *out);
int ccfg_vk_combine(int64_t n, int64_t dim, int m, ccfg_vk_buffer *const *in, const double *coef,
                    ccfg_vk_buffer *out);                          /* m <= 8 */
int ccfg_vk_randn(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                  ccfg_vk_buffer *out);
int ccfg_vk_dot(int64_t n, int64_t dim, ccfg_vk_buffer *a, ccfg_vk_buffer *b, double *out);
int ccfg_vk_direction_dots(int64_t n, int64_t dim, ccfg_vk_buffer *u, ccfg_vk_buffer *p, int k,
                           ccfg_vk_buffer *const *neg, double *pp, double *nn, double *np);
int ccfg_vk_all_finite(int64_t count, ccfg_vk_buffer *x, int *result);
int ccfg_vk_sld(int64_t count, ccfg_vk_buffer *eps_u, ccfg_vk_buffer *eps_p, ccfg_vk_buffer *eps_s,
                ccfg_vk_buffer *nu, double w, double s_s, double thr, double s_m, double beta_m,
                int update, int apply, ccfg_vk_buffer *out);

#ifdef __cplusplus
}
#endif
#endif /* CCFG_H */
