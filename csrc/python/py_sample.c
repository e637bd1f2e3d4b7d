/* python/py_sample.c — schedules and the whole sampling loop in C.
 *
 * sample() takes a model object (py_models.c, py_unet.c), a rule spec (py_guide.c), a sampler
 * spec (ccfg/schedulers.py SchedulerConfig._spec) and a device name; it runs model + rule +
 * solver on that backend with the GIL released. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <string.h>

/* ------------------------------------------------------------------------- */
/* the sampler spec: a tuple from ccfg/schedulers.py (SchedulerConfig._spec) */

typedef struct {
    ccfg_sampler_config cfg;
    PyArrayObject *betas;                    /* keeps trained_betas alive */
} sampler_args;

static int parse_sampler(PyObject *spec, sampler_args *s)
{
    PyObject *betas = Py_None;
    ccfg_sampler_config *c = &s->cfg;
    memset(s, 0, sizeof *s);
    if (!PyArg_ParseTuple(spec, "iidpiipiiddOdddp;sampler spec", &c->solver, &c->steps, &c->eta,
                          &c->karras, &c->spacing, &c->steps_offset, &c->set_alpha_to_one,
                          &c->num_train_timesteps, &c->beta_schedule, &c->beta_start,
                          &c->beta_end, &betas, &c->clip_sample, &c->threshold_ratio,
                          &c->sample_max, &c->variance_large))
        return -1;
    if (betas != Py_None) {
        npy_intp shape[1] = {c->num_train_timesteps};
        s->betas = py_as_array(betas, NPY_FLOAT64, 1, shape, "trained_betas");
        if (!s->betas) return -1;
        c->trained_betas = (const double *)PyArray_DATA(s->betas);
    }
    return 0;
}

static PyObject *plan_dict(const ccfg_plan *p)
{
    npy_intp nl = p->levels, ns = p->steps, ns1 = p->steps + 1, nT = p->T;
    PyObject *d = PyDict_New();
    struct { const char *k; npy_intp n; const double *v; } f[] = {
        {"timesteps", nl, p->timesteps}, {"alpha_bars", ns, p->alpha_bars},
        {"alpha_bars_next", ns, p->alpha_bars_next}, {"sigmas", ns1, p->sigmas},
        {"alphas_cumprod", nT, p->alphas_cumprod},
    };
    if (!d) return NULL;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        PyObject *a = PyArray_SimpleNew(1, &f[i].n, NPY_FLOAT64);
        if (!a) goto fail;
        memcpy(PyArray_DATA((PyArrayObject *)a), f[i].v, (size_t)f[i].n * sizeof(double));
        if (py_dict_set(d, f[i].k, a)) goto fail;
    }
    if (py_dict_set(d, "init_noise_sigma", PyFloat_FromDouble(p->init_noise_sigma))) goto fail;
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* plan(sampler_spec) -> dict of schedule arrays */
PyObject *py_plan(PyObject *self, PyObject *args)
{
    PyObject *spec, *out = NULL;
    sampler_args sa;
    ccfg_plan plan;
    (void)self;
    memset(&plan, 0, sizeof plan);
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &spec)) return NULL;
    if (parse_sampler(spec, &sa)) return NULL;
    int status = ccfg_plan_init(&plan, &sa.cfg);
    if (status) py_raise_status(status);
    else out = plan_dict(&plan);
    ccfg_plan_free(&plan);
    Py_XDECREF(sa.betas);
    return out;
}

/* ------------------------------------------------------------------------- */
/* the progress callback: Ctrl-C and the caller's function, once per step */

typedef struct { PyObject *fn; } progress_ctx;

/* A caller's function runs with the run's locks let go (py_callback_enter: the device first runs
 * what is recorded, so on a device the callback also sees real progress): it may preview with the
 * same UNet or call guide/sample on the same device. Without one, only the Ctrl-C check runs,
 * the locks held (no flush per step). */
static int python_progress(void *vctx, int done, int steps)
{
    progress_ctx *c = vctx;
    const int user = c->fn && c->fn != Py_None;
    py_callback cb = {0};
    int status = user ? py_callback_enter(&cb) : CCFG_OK;
    if (status) return status;
    PyGILState_STATE g = PyGILState_Ensure();
    /* Ctrl-C in Jupyter: stop within one step */
    if (PyErr_CheckSignals() < 0) status = CCFG_ECANCEL;
    else if (user) {
        PyObject *r = PyObject_CallFunction(c->fn, "ii", done, steps);
        if (!r) status = CCFG_ECANCEL;
        Py_XDECREF(r);
    }
    PyGILState_Release(g);
    const int back = user ? py_callback_leave(&cb) : CCFG_OK;
    return status ? status : back;
}

/* The whole run on `be`; x is a host array (in: x_T, out: the result, written only on success),
 * the trajectory a host array or NULL. */
static int sample_on(const ccfg_backend *be, const ccfg_guided_model *gm, const ccfg_plan *plan,
                     const ccfg_sampler_config *cfg, int64_t n, int64_t dim, uint64_t seed,
                     int64_t first, float *x, float *traj, progress_ctx *pc)
{
    float *dx = NULL;
    int status;
    if ((status = ccfg_backend_from_host(be, x, (size_t)n * (size_t)dim, &dx)) ||
        (status = ccfg_sample(be, gm, plan, cfg, n, dim, seed, first, dx, traj, python_progress,
                              pc)))
        goto done;
    if (!be->host_memory) status = be->download(be, x, dx, (size_t)n * (size_t)dim * sizeof(float));
done:
    ccfg_backend_drop(be, dx);
    return status;
}

/* sample(model, prediction_type, rule_spec, sampler_spec, positive, negatives, seed, first, x_T,
 *        want_trajectory, progress, device) -> x or (x, trajectory)
 * model: a Model object (a ccfg model's _c_model(device)); positive/negatives: condition ids */
PyObject *py_sample(PyObject *self, PyObject *args)
{
    PyObject *model_obj, *rspec, *sspec, *negs_obj, *xo, *prog, *result = NULL;
    PyObject *xout = NULL, *traj = NULL;
    const char *device;
    int pred, positive, want_traj, n_neg = 0, status = CCFG_OK;
    unsigned long long seed;
    long long first;
    ccfg_rule rule;
    sampler_args sa = {0};
    ccfg_plan plan;
    int32_t neg_ids[PY_MAX_NEGATIVES];
    PyArrayObject *x = NULL;
    memset(&plan, 0, sizeof plan);
    (void)self;
    if (!PyArg_ParseTuple(args, "OiO!O!iOKLOpOs", &model_obj, &pred, &PyTuple_Type, &rspec,
                          &PyTuple_Type, &sspec, &positive, &negs_obj, &seed, &first, &xo,
                          &want_traj, &prog, &device))
        return NULL;
    const ccfg_model *cmodel = py_model_get(model_obj);
    if (!cmodel || py_parse_rule(rspec, &rule) || parse_sampler(sspec, &sa)) goto done;
    if (!PyTuple_Check(negs_obj) || PyTuple_GET_SIZE(negs_obj) > PY_MAX_NEGATIVES) {
        PyErr_Format(PyExc_ValueError, "negative: at most %d negatives", PY_MAX_NEGATIVES);
        goto done;
    }
    n_neg = (int)PyTuple_GET_SIZE(negs_obj);
    for (int j = 0; j < n_neg; j++) {
        neg_ids[j] = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(negs_obj, j));
        if (PyErr_Occurred()) goto done;
    }
    ccfg_model model = *cmodel;
    model.prediction_type = pred;
    x = py_as_array(xo, NPY_FLOAT32, 2, NULL, "x_T");
    if (!x) goto done;
    int64_t n = PyArray_DIM(x, 0), dim = PyArray_DIM(x, 1);
    xout = PyArray_NewCopy(x, NPY_CORDER);
    if (!xout) goto done;
    status = ccfg_plan_init(&plan, &sa.cfg);
    if (status) {
        py_raise_status(status);
        goto done;
    }
    if (want_traj) {
        npy_intp sh[3] = {plan.steps + 1, (npy_intp)n, (npy_intp)dim};
        traj = PyArray_SimpleNew(3, sh, NPY_FLOAT32);
        if (!traj) goto done;
    }
    ccfg_guided_model gm = {.model = &model, .rule = &rule, .positive = positive,
                            .n_neg = n_neg, .negatives = neg_ids};
    progress_ctx pc = {prog};
    const ccfg_backend *be = NULL;
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    /* the model's own lock first (a UNet serialises its callers), then the device's */
    if (!status && !(status = py_run_enter(&run, "ccfg.sample", be, py_model_lock(model_obj)))) {
        status = sample_on(be, &gm, &plan, &sa.cfg, n, dim, seed, first,
                           py_f32((PyArrayObject *)xout),
                           traj ? py_f32((PyArrayObject *)traj) : NULL, &pc);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        py_raise_status(status);
        goto done;
    }
    result = traj ? PyTuple_Pack(2, xout, traj) : Py_NewRef(xout);
done:
    ccfg_plan_free(&plan);
    Py_XDECREF(sa.betas);
    Py_XDECREF(x);
    Py_XDECREF(xout);
    Py_XDECREF(traj);
    return result;
}
