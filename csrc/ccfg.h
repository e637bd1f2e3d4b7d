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

/* Interrupts: long C work outside the sampler's steps (a network forward) asks
 * ccfg_check_interrupt() between layers; it calls the host's check (set once, e.g. by the Python
 * module: a pending Ctrl-C) at most every few milliseconds per thread and returns CCFG_ECANCEL
 * when the check says stop (nonzero), else CCFG_OK. Without a check it never stops. */
void ccfg_set_interrupt_check(int (*check)(void));
int ccfg_check_interrupt(void);

/* ------------------------------------------------------------------------- */
/* backends: a device object with memory, transfer and sync functions, the vector ops every
 * solver needs, and one capability table per kind of work (guidance kernels, the exact mixture,
 * network layers). Rules, solvers and models call only these; each table is implemented once per
 * backend (backend_cpu.c + nn_cpu.c, backend_vk.c + nn_vk.c). A backend is opened by name through
 * the registry in backend.c ("cpu", "vulkan:0"). */

struct ccfg_gmm;
struct ccfg_nn_ops;                 /* nn.h */
typedef struct ccfg_backend ccfg_backend;

/* A rule's coefficient table as a formula a backend evaluates next to the data (a rule's
 * `device_form`, rules/rule.h): on a device the reductions never go to the host. The family fixes
 * the formula, written once per backend that has combine_form; the host supplies only per-step
 * scalars. Per sample i, with D = eps - eps_u and the direction_dots reductions, rows in the
 * order of the host's `coefficients` (c_u last: it collects the others):
 *   CCFG_FORM_CONTRASTIVE (CCFG): c_p = w λ+, c_n_j = -w_n λ-_j, c_u = 1 - c_p - sum_j c_n_j,
 *       λ+ = 2σ(τ_eff ‖D_p‖²) (1 with naive_positive), λ-_j = 2σ(-τ_eff ‖D_n_j‖²);
 *   CCFG_FORM_PERPENDICULAR (Perp-Neg): c_n_j = -w b, π_j = <D_n_j, D_p> / ‖D_p‖² (0 where
 *       ‖D_p‖ = 0), of the sample or of the batch's sums (batch_global),
 *       c_p = w + sum_j w b π_j, c_u = 1 - w - sum_j (w b π_j - w b).  (b = w_n)
 *   CCFG_FORM_POSTERIOR (DNG): no reductions; p_j = exp(lp_j) from the rule's state on the
 *       backend (log p, [k][n] reals of guide->reals_alloc), c_p = w, c_n_j = -w_n p_j/(1 - p_j),
 *       c_u = 1 - w - sum_j c_n_j.  (w_n = λ0) */
typedef enum {
    CCFG_FORM_CONTRASTIVE = 1, CCFG_FORM_PERPENDICULAR = 2, CCFG_FORM_POSTERIOR = 3
} ccfg_form_family;
typedef struct {
    int family;                     /* ccfg_form_family */
    double w, w_n;                  /* the rule's scale and negative weight (CCFG w_n, Perp-Neg b) */
    double tau_eff;                 /* CONTRASTIVE: the step's τ / N (rules/ccfg.c tau_effective) */
    int naive_positive;             /* CONTRASTIVE: λ+ = 1 */
    int batch_global;               /* PERPENDICULAR: one projection over the whole batch */
    const float *state;             /* POSTERIOR: log p [k][n], backend reals (guide->reals_alloc) */
} ccfg_coef_form;

/* A log-posterior update on the backend (DNG's observe, rules/dng.c), per sample i and negative
 * j, from the reductions of direction_dots (nn = ‖n_j,i - u_i‖², np = <n_j,i - u_i, p_i - u_i>):
 *   Δ = b2 nn - b1 np;  lp_j,i = min(max(lp_j,i + (-t Δ + offset) / two_var, lo), hi)
 * in this order and in the backend's reals (double on float64 devices). */
typedef struct {
    double b2, b1, t, offset, two_var, lo, hi;
} ccfg_log_posterior_update;

/* kernels of the guidance rules (rules/ and guidance.c) */
typedef struct ccfg_guide_ops {
    /* out[i] = <a_i, b_i> over dim elements, per sample (host array), accumulated in double */
    int (*dot)(const ccfg_backend *be, int64_t n, int64_t dim, const float *a, const float *b,
               double *out);
    /* the guidance reductions in one pass over the inputs, per sample i and negative j:
     *   pp[i] = ‖p_i - u_i‖²,  nn[j*n+i] = ‖n_j,i - u_i‖²,  np[j*n+i] = <n_j,i - u_i, p_i - u_i>
     * (pp, nn, np are host arrays) */
    int (*direction_dots)(const ccfg_backend *be, int64_t n, int64_t dim, const float *u,
                          const float *p, int k, const float *const *neg, double *pp, double *nn,
                          double *np);
    /* out_i = sum_k coef[i*m + k] * in[k]_i : per-sample linear combination (the fused rule pass);
     * coef is a host array */
    int (*combine)(const ccfg_backend *be, int64_t n, int64_t dim, int m, const float *const *in,
                   const double *coef, float *out);
    /* SLD, elementwise (docs/methods.md §6), for one negative:
     *   g = mu * (eps_s - eps_u) + s_m * nu, mu = min(s_s |eps_p - eps_s|, 1) where (eps_p - eps_s) < thr else 0
     *   if update: nu <- beta_m * nu + (1 - beta_m) * g
     *   if apply:  out -= w * g  */
    int (*sld)(const ccfg_backend *be, int64_t count, const float *eps_u, const float *eps_p,
               const float *eps_s, float *nu, double w, double s_s, double thr, double s_m,
               double beta_m, int update, int apply, float *out);
    /* direction_dots, the coefficient table of `form` and combine in one go, none of it leaving
     * the backend: out_i = c_u u_i + c_p p_i + sum_j c_n_j neg[j]_i. NULL where the backend has
     * no such path: guidance.c then computes the table on the host (devices forced to with
     * CCFG_VULKAN_HOST_COEFFICIENTS=1). The CPU has one for speed, not for transfers: per row,
     * reductions, table and combine while the row is in cache (one pass over the inputs). */
    int (*combine_form)(const ccfg_backend *be, const ccfg_coef_form *form, int64_t n,
                        int64_t dim, const float *u, const float *p, int k,
                        const float *const *neg, float *out);
    /* A rule's per-sample state kept on the backend in "reals", the precision its guidance
     * kernels compute in (double where a device has float64, float elsewhere): DNG's log p, so
     * that neither its guide step nor its update waits for the device. NULL where the backend
     * keeps such state on the host (the CPU: host doubles; a device with
     * CCFG_VULKAN_HOST_COEFFICIENTS=1). reals_alloc: count reals initialised from init (backend
     * memory, freed with be->release; *floats: its size in floats); reals_read: back to doubles
     * (waits for the device); log_posterior_update: see ccfg_log_posterior_update, the
     * reductions made and used on the backend (nothing read back). */
    int (*reals_alloc)(const ccfg_backend *be, int64_t count, const double *init, float **out,
                       int64_t *floats);
    int (*reals_read)(const ccfg_backend *be, const float *src, int64_t count, double *out);
    int (*log_posterior_update)(const ccfg_backend *be, const ccfg_log_posterior_update *up,
                                int64_t n, int64_t dim, const float *u, const float *p, int k,
                                const float *const *neg, float *state);
} ccfg_guide_ops;

/* the exact Gaussian-mixture eps (gmm.c): load places the mixture's parameters on the backend
 * (*handle, NULL on the CPU), eps evaluates rows of x (cond: host array) */
typedef struct ccfg_gmm_ops {
    int (*load)(const ccfg_backend *be, const struct ccfg_gmm *g, void **handle);
    void (*free)(const ccfg_backend *be, void *handle);
    int (*eps)(const ccfg_backend *be, const struct ccfg_gmm *g, void *handle, int64_t rows,
               const float *x, double alpha_bar, const int32_t *cond, float *out);
} ccfg_gmm_ops;

/* Memory handed out by a backend is addressed by `float *` pointers and pointer arithmetic works
 * on them as usual (a block of a stacked array is `base + b * count`). Where host_memory is 1 they
 * are host memory; elsewhere they are device addresses that the host must never dereference:
 * data crosses only through upload/download. host_memory is a property of the memory only (host
 * data needs no copy); it never chooses kernels — the tables below do. Every op returns a ccfg
 * status; device ops are recorded and run later, so a failure of the device may surface at a
 * later call (always at the latest at sync or download). */
struct ccfg_backend {
    const char *name;               /* its registry name and, for messages, what it is:
                                       "cpu", "vulkan:0 (llvmpipe ...)" */
    void *ctx;                      /* the device; NULL on the CPU */
    int host_memory;                /* 1: pointers are host memory (zero-copy from the host) */
    int synchronous;                /* 1: ops finish before they return, so reading the finite
                                       watch costs no wait (a device reports at its next wait) */
    /* one caller at a time per device: held around a whole sample/guide call (CPU: no-op) */
    void (*lock)(const ccfg_backend *be, int acquire);
    int (*alloc)(const ccfg_backend *be, size_t bytes, float **out);   /* zero-filled */
    void (*release)(const ccfg_backend *be, void *p);                  /* NULL is fine */
    /* src may be reused as soon as upload returns; download waits for the device */
    int (*upload)(const ccfg_backend *be, void *dst, const void *src, size_t bytes);
    int (*download)(const ccfg_backend *be, void *dst, const void *src, size_t bytes);
    int (*sync)(const ccfg_backend *be);          /* run everything recorded, wait */
    /* optional (NULL: use sync): start what is recorded without waiting for it, waiting only
     * for work submitted before (so at most one batch runs while the host records the next) */
    int (*submit)(const ccfg_backend *be);
    /* out = a*x + b*y + c*z elementwise over count; y or z may be NULL (term skipped) */
    int (*axpbypcz)(const ccfg_backend *be, int64_t count, double a, const float *x, double b,
                    const float *y, double c, const float *z, float *out);
    /* per row i of (n, dim): out = clamp(x, -b_i, b_i), divided by b_i when divide; in float32
     * with b_i = (float)bound[i] (bound: host array [n], every b_i > 0) */
    int (*clamp_rows)(const ccfg_backend *be, int64_t n, int64_t dim, const float *x,
                      const double *bound, int divide, float *out);
    /* standard normals, Philox-4x32-10 (see rng.c): sample first+i, element j, stream */
    int (*randn)(const ccfg_backend *be, int64_t n, int64_t dim, uint64_t seed, uint64_t stream,
                 int64_t first, float *out);
    /* non-finite watch: if any of x[0..count) is NaN/Inf, the backend remembers min(tag) seen;
     * first_nonfinite waits for the work recorded so far and returns that tag (-1: none), then
     * forgets it. Lets a device check every step without waiting for it. */
    int (*watch_finite)(const ccfg_backend *be, int64_t count, const float *x, int tag);
    int (*first_nonfinite)(const ccfg_backend *be, int *tag);
    /* capability tables */
    const ccfg_guide_ops *guide;
    const ccfg_gmm_ops *gmm;
    const struct ccfg_nn_ops *nn;
};

/* The registry (backend.c): a backend by name, "cpu" or "PREFIX:N" ("vulkan:0"), opened on first
 * use. An unknown name or device fails with CCFG_EINVAL naming it. */
int ccfg_backend_open(const char *name, const ccfg_backend **out);

/* One device a registered backend offers (ccfg.devices() lists them). A backend that offers none
 * is listed once with index -1, available 0 and a note saying why. */
typedef struct {
    char name[64];                  /* what ccfg_backend_open takes: "cpu", "vulkan:0" */
    const char *backend;            /* the driver's name: "cpu", "vulkan" */
    int index;                      /* the N of "backend:N"; -1 for an unindexed backend */
    char label[256];                /* the device's own name */
    const char *type;               /* "cpu", "discrete", "integrated", "virtual", "other" */
    int available;                  /* can run ccfg */
    const char *note;               /* NULL, or why the backend offers no device */
} ccfg_device;

/* Every device of every registered backend, in registry order (*list stays valid until the next
 * call; not thread-safe against itself: the bindings call it with the GIL held). */
int ccfg_devices(const ccfg_device **list, int *count);
const ccfg_backend *ccfg_backend_cpu(void);
/* The backend of Vulkan device `device` (backend_vk.c), opened on first use (the registry's
 * "vulkan" driver). */
int ccfg_backend_vulkan(int device, const ccfg_backend **out);
/* the drivers' open and list functions, for the registry (backend.c) */
int ccfg_backend_cpu_open(int index, const ccfg_backend **out);
int ccfg_backend_cpu_list(ccfg_device *out, int max, const char **why);
int ccfg_backend_vulkan_list(ccfg_device *out, int max, const char **why);
/* host floats -> backend memory: the host array itself where the backend's memory is the host's,
 * else a new copy on the backend; ccfg_backend_drop releases what from_host made */
int ccfg_backend_from_host(const ccfg_backend *be, const float *host, size_t count, float **out);
void ccfg_backend_drop(const ccfg_backend *be, float *p);
/* all-finite check that returns at once: watch + first_nonfinite (syncs a device) */
int ccfg_all_finite(const ccfg_backend *be, int64_t count, const float *x, int *ok);
/* What the CPU guidance kernels (direction_dots, combine, combine_form) saw in this thread since
 * the last call, which clears it: CCFG_CPU_BAD_INPUT, a reduction was NaN/Inf (an input element
 * it read was: sums of squares of float32 differences cannot overflow a double);
 * CCFG_CPU_BAD_OUTPUT, a value written was NaN/Inf. Lets ccfg.guide check finiteness without a
 * pass of its own (csrc/python/py_guide.c). */
enum { CCFG_CPU_BAD_INPUT = 1, CCFG_CPU_BAD_OUTPUT = 2 };
unsigned ccfg_cpu_guide_flags(void);

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
    /* the predicted x0 of a DDIM/DDPM step, as diffusers' schedulers process it (0: off):
     * clip_sample > 0 clamps it to [-clip_sample, clip_sample] (diffusers' clip_sample_range);
     * threshold_ratio > 0 is dynamic thresholding (Imagen): per sample s = the threshold_ratio
     * quantile of |x0| clamped to [1, sample_max], x0 = clamp(x0, -s, s) / s */
    double clip_sample;
    double threshold_ratio, sample_max;
    /* DDPM only: the noise variance of a step is β_t = 1 - ā/ā_prev (diffusers' variance_type
     * "fixed_large", the DDPM paper's σ² = β and DNG's official sampler) instead of the posterior
     * variance β̃_t ("fixed_small", 0 here) */
    int variance_large;
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

/* Runs the whole loop. x (backend memory): in = unit-variance x_T (n, dim), out = final sample.
 * trajectory: NULL or a host array (steps+1, n, dim) of VP-scaled states (before the first step,
 * after each step); on a device each state is downloaded, so ask for it only when needed.
 * A NaN/Inf in the state (or a model output, see sampler.c) fails with CCFG_ENONFINITE naming the
 * step; a device reports it when the run waits for the device, never with a result. 
 * Noise of step k comes from backend->randn(..., seed, stream = k + 1, first, ...). */
int ccfg_solve(const ccfg_backend *be, const ccfg_plan *plan, const ccfg_sampler_config *cfg,
               int64_t n, int64_t dim, uint64_t seed, int64_t first, float *x, float *trajectory,
               const ccfg_solver_callbacks *cb);

/* CCFG_ENONFINITE naming what a non-finite watch tag (see solver.c) stands for */
int ccfg_nonfinite_error(const ccfg_plan *plan, int tag);

/* ------------------------------------------------------------------------- */
/* models */

#define CCFG_UNCOND (-1)

/* A model as the sampler sees it: one kind of model = one eval function (and its optional
 * begin/end), filled in by the model's own file (gmm.c, unet.c, the Python bindings). */
typedef struct ccfg_model {
    /* rows samples x (rows, dim) at one level; cond[r] = condition id (CCFG_UNCOND = null, a host
     * array); writes the model output (its own prediction_type) to out (rows, dim). x and out are
     * memory of `be` when on_backend, else host arrays (the sampler downloads x and uploads out:
     * Python models on a device pay two transfers per evaluation). */
    int (*eval)(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim, const float *x,
                double timestep, double alpha_bar, const int32_t *cond, float *out);
    /* optional, around one sampling run on `be` of n samples and up to max_rows stacked rows
     * (rows come in blocks of n, one block per condition: row r is sample r % n): place
     * parameters, plan activations, check that the model can run there (NULL: nothing to do) */
    int (*begin)(void *ctx, const ccfg_backend *be, int64_t n, int64_t max_rows);
    void (*end)(void *ctx);
    void *ctx;
    int prediction_type;        /* ccfg_prediction */
    int on_backend;
    int64_t dim;                /* values per sample it takes; 0: any */
} ccfg_model;

/* Exact Gaussian mixture (gmm.c). Covariances as eigen-decompositions Σ_k = U_k diag(λ_k) U_kᵀ. */
typedef struct ccfg_gmm {
    int64_t K, dim;
    const double *means;        /* [K, dim] */
    const double *log_weights;  /* [K] normalised log weights */
    const double *evals;        /* [K, dim] eigenvalues */
    const double *evecs;        /* NULL (axis-aligned) or [K, dim, dim], column j = eigenvector j */
    int n_concepts;
    const uint8_t *concept_mask;/* [n_concepts, K]: 1 where component k belongs to concept c */
} ccfg_gmm;

/* eps(x) at level alpha_bar for rows with their own condition (CCFG_UNCOND = whole mixture);
 * host arrays (the CPU backend's gmm_eps). */
int ccfg_gmm_eps(const ccfg_gmm *g, int64_t rows, const float *x, double alpha_bar,
                 const int32_t *cond, float *out);
/* the same with scratch made once (ccfg_gmm_work_new; the CPU backend's placement of a mixture),
 * so a sampler step allocates nothing; one evaluation at a time per work */
typedef struct ccfg_gmm_work ccfg_gmm_work;
int ccfg_gmm_work_new(const ccfg_gmm *g, ccfg_gmm_work **out);
void ccfg_gmm_work_free(ccfg_gmm_work *w);
int ccfg_gmm_eps_with(const ccfg_gmm *g, ccfg_gmm_work *w, int64_t rows, const float *x,
                      double alpha_bar, const int32_t *cond, float *out);
/* conditions are valid concept ids of g (shared by every backend) */
int ccfg_gmm_check(const ccfg_gmm *g, int64_t rows, double alpha_bar, const int32_t *cond);

/* A mixture as a model on one backend: its parameters placed there once. */
typedef struct {
    const ccfg_gmm *g;
    const ccfg_backend *be;
    void *handle;
} ccfg_gmm_model;
int ccfg_gmm_model_init(ccfg_gmm_model *m, const ccfg_backend *be, const ccfg_gmm *g);
void ccfg_gmm_model_free(ccfg_gmm_model *m);
/* ccfg_model.eval adaptor (on_backend = 1): ctx is a ccfg_gmm_model* */
int ccfg_gmm_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                        const float *x, double timestep, double alpha_bar, const int32_t *cond,
                        float *out);
/* The mixture g as a sampler model: `m` holds its placement; begin places the parameters on the
 * run's backend, end frees them. m and g must outlive the run. */
ccfg_model ccfg_gmm_as_model(ccfg_gmm_model *m, const ccfg_gmm *g);

/* ------------------------------------------------------------------------- */
/* guidance rules: guidance.c runs any rule; each rule is one record (rules/rule.h) in one file
 * of csrc/rules/, listed in rules/registry.c and found by name. */

typedef struct ccfg_rule_impl ccfg_rule_impl;

#define CCFG_MAX_RULE_NEGATIVES 64
#define CCFG_RULE_MAX_PARAMS 8

typedef struct ccfg_rule {
    const ccfg_rule_impl *impl;
    double scale, negative_scale;   /* w and the rule's negative weight (CCFG/NegatedCFG: w_n;
                                       PerpNeg: b; DNG: λ0) */
    double window_start, window_stop;   /* the negatives' window, fractions of the steps */
    double p[CCFG_RULE_MAX_PARAMS]; /* the rule's own parameters, named by impl->params */
    void *host_ctx;                 /* for a rule computed on the host (ccfg_rule_impl.host) */
} ccfg_rule;

/* the rule named `name` ("ccfg", "perp_neg", ...) or NULL */
const ccfg_rule_impl *ccfg_rule_find(const char *name);
/* every registered rule, NULL-terminated */
const ccfg_rule_impl *const *ccfg_rule_list(void);
const char *ccfg_rule_name(const ccfg_rule_impl *impl);
/* the names of the rule's own parameters (rule->p), NULL-terminated */
const char *const *ccfg_rule_param_names(const ccfg_rule_impl *impl);
/* an empty rule of this kind (window: every step): set every parameter by name next */
int ccfg_rule_init(ccfg_rule *rule, const ccfg_rule_impl *impl);
/* sets a parameter by name: "scale", "negative_scale", "window_start", "window_stop" or one of
 * the rule's own; CCFG_EINVAL naming it when the rule has no such parameter */
int ccfg_rule_set(ccfg_rule *rule, const char *name, double value);

int ccfg_rule_stateful(const ccfg_rule *rule);
/* does the rule evaluate its negatives at this step (its window; CFG never) */
int ccfg_rule_negative_active(const ccfg_rule *rule, int step, int num_steps);
/* does the rule read eps_u when there is a positive (has_positive) and k active negatives */
int ccfg_rule_needs_null(const ccfg_rule *rule, int has_positive, int k);

/* Per-sample, per-negative state of a stateful rule: numbers on the backend (SLD: momentum ν,
 * as big as the samples; DNG's log posterior where the backend has guide->reals_alloc) or on
 * the host (DNG's log posterior elsewhere, updated from per-sample reductions read back); which
 * and how many is the rule's business. */
typedef struct {
    int64_t n, dim;
    int n_neg;
    int step;                       /* evaluations seen with update on */
    const ccfg_rule_impl *impl;     /* the rule it belongs to */
    const ccfg_backend *be;
    float *device;                  /* [device_count] backend memory, or NULL */
    int64_t device_count;           /* in floats */
    int device_reals;               /* 1: `device` holds guide->reals_alloc reals, not floats */
    double *host;                   /* [host_count] host memory, or NULL */
    int64_t host_count;
} ccfg_guide_state;

/* Allocates the state a stateful rule needs (no-op for stateless rules). */
int ccfg_guide_state_init(ccfg_guide_state *st, const ccfg_backend *be, const ccfg_rule *rule,
                          int64_t n, int64_t dim, int n_neg);
void ccfg_guide_state_free(ccfg_guide_state *st);
/* What the state shows the caller as host doubles (DNG: the posterior p, [n_neg][n], read from
 * the device where it lives there; other rules: a copy of `host`): *out is malloc'ed (free it),
 * *count its length; NULL and 0 for a state without host values. Waits for a device. */
int ccfg_guide_state_values(const ccfg_guide_state *st, double **out, int64_t *count);

/* eps_hat = rule(eps_u, eps_p, eps_n). eps_p may be NULL (= eps_u). n_neg may be 0.
 * num_steps = 0: no window. update: stateful rules advance their state. */
int ccfg_guide(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
               int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
               const float *const *eps_n, int step, int num_steps, int update, float *out);
/* the same, telling the rule the step's noise level ā_t (CCFG's noise-aware τ schedules need it;
 * ccfg_guide passes NaN, "unknown") */
int ccfg_guide_at(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                  int64_t dim, const float *eps_u, const float *eps_p, int n_neg,
                  const float *const *eps_n, int step, int num_steps, double alpha_bar,
                  int update, float *out);

/* does the rule learn from the sampler's transitions (DNG) */
int ccfg_rule_observes(const ccfg_rule *rule);
/* The rule's update from the transition x_t -> x_prev (VP-scaled), DDIM(eta) means, for a rule
 * that observes (CCFG_EINVAL otherwise). */
int ccfg_guide_observe(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st,
                       int64_t n, int64_t dim, const float *x_t, const float *x_prev,
                       const float *eps_u, int n_neg, const float *const *eps_n, double alpha_bar,
                       double alpha_bar_prev, double eta);

/* ------------------------------------------------------------------------- */
/* sampling: model + rule + solver (sampler.c) */

typedef struct {
    const ccfg_model *model;
    const ccfg_rule *rule;
    int32_t positive;               /* condition id or CCFG_UNCOND for none */
    int n_neg;
    const int32_t *negatives;       /* [n_neg] condition ids */
} ccfg_guided_model;

/* x: backend memory (see ccfg_solve); trajectory: NULL or host memory */
int ccfg_sample(const ccfg_backend *be, const ccfg_guided_model *gm, const ccfg_plan *plan,
                const ccfg_sampler_config *cfg, int64_t n, int64_t dim, uint64_t seed, int64_t first,
                float *x, float *trajectory, int (*progress)(void *ctx, int done, int steps),
                void *progress_ctx);

/* ------------------------------------------------------------------------- */
/* Vulkan backend (backend_vk.c): libvulkan.so.1 is opened at run time, so everything here works
 * (and reports why not) on machines without Vulkan. ccfg_backend_vulkan(N) gives the backend
 * table of device N. Environment: CCFG_VULKAN_LOADER overrides the loader path;
 * CCFG_VULKAN_STAGING=1 forces device-local buffers with staging copies even where host-visible
 * memory would do; CCFG_VULKAN_NO_F64=1 uses the float32 shaders even where the device has
 * float64 (tests run both paths on one device); CCFG_VULKAN_HOST_COEFFICIENTS=1 computes the
 * coefficient tables of CCFG, Perp-Neg and DNG on the host as the CPU does (their reductions are
 * downloaded every step, DNG's posterior kept on the host) instead of on the device (guide ops
 * combine_form, reals_*, log_posterior_update);
 * CCFG_VULKAN_PRECISION=fp32|fp16|coop|auto picks the UNet convolutions' precision (nn_vk.c;
 * fp32 by default; fp16 and coop refuse to open a device without the features they need). */

/* one (M, N, K, types, scope) a cooperative matrix extension supports: D = A (MxK) B (KxN) + C */
typedef struct {
    uint32_t m, n, k;
    uint32_t a, b, c, result;       /* VkComponentTypeKHR/NV values (0 float16, 1 float32, ...) */
    uint32_t scope;                 /* VkScopeKHR/NV (3 = subgroup) */
    int khr;                        /* from VK_KHR_cooperative_matrix (else VK_NV_) */
} ccfg_vk_coop_shape;

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
    /* half precision (CCFG_VULKAN_PRECISION): storageBuffer16BitAccess, shaderFloat16, and the
     * cooperative matrix extensions with the shapes their properties query lists */
    int storage16, float16, memory_model;   /* ... and vulkanMemoryModel (the coop shaders) */
    int coop_nv, coop_khr;          /* the extension is present and its feature is on */
    int precisions;                 /* CCFG_VULKAN_PRECISION values it runs: bit 0 fp32, 1 fp16,
                                     * 2 coop (the coop shaders' shape and requirements) */
    int ncoop;                      /* shapes in coop[] (NV's first, then KHR's) */
    ccfg_vk_coop_shape coop[32];
} ccfg_vk_device_info;

/* The devices found (enumerated once). *count may be 0: then ccfg_vk_unavailable() says why. */
int ccfg_vk_devices(const ccfg_vk_device_info **list, int *count);
/* NULL when at least one device exists, else the reason (backend not built, no loader, no ICD...) */
const char *ccfg_vk_unavailable(void);
/* The per-dispatch profile of Vulkan device `device`, from timestamp queries written after every
 * command (each is followed by a full barrier, so consecutive timestamps time one command):
 * action 1 starts it (clearing the totals), 0 stops it, 2 only reads. Fills out with the time
 * per kind of command (a shader's name, or a staging copy) since the start. */
typedef struct {
    const char *kind;
    uint64_t count;
    double ms;
} ccfg_vk_profile_entry;
typedef struct {
    uint64_t batches;               /* submits (each waits for the device) */
    uint64_t unstamped;             /* commands past the timestamps a batch has room for */
    double wait_ms;                 /* host time spent waiting for batches */
} ccfg_vk_profile_totals;
int ccfg_vk_profile(int device, int action, ccfg_vk_profile_entry *out, int max, int *count,
                    ccfg_vk_profile_totals *totals);
/* seconds per device-to-device copy of `bytes` (mean of `repeats` recorded back to back; device
 * time from timestamps where the queue has them) by shaders/copy.comp (mode 0) or
 * vkCmdCopyBuffer (mode 1): the memory bandwidth bound that benchmarks compare guide with */
int ccfg_vk_copy_bench(int device, size_t bytes, int repeats, int mode, double *seconds);

#ifdef __cplusplus
}
#endif
#endif /* CCFG_H */
