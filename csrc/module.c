/* module.c — the CPython module ccfg._core: arguments, NumPy conversion, errors, the GIL.
 *
 * The only file of the core that knows Python. The Python layer (the ccfg package) validates user input
 * and hands over clean float32 (n, dim) arrays and parameter tuples; this file re-checks shapes,
 * releases the GIL around the C work and turns ccfg statuses into Python exceptions. Python
 * models, rules and progress bars are called back from C with the GIL re-acquired. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>

#include <omp.h>
#include <string.h>

#include "ccfg.h"
#include "unet.h"

/* ------------------------------------------------------------------------- */
/* errors */

static PyObject *raise_status(int status)
{
    if (PyErr_Occurred()) return NULL;       /* a callback's Python exception wins */
    const char *msg = ccfg_last_error();
    switch (status) {
    case CCFG_EINVAL: PyErr_SetString(PyExc_ValueError, msg); break;
    case CCFG_ETYPE: PyErr_SetString(PyExc_TypeError, msg); break;
    case CCFG_ENOMEM: PyErr_SetString(PyExc_MemoryError, msg); break;
    case CCFG_ENONFINITE: PyErr_SetString(PyExc_FloatingPointError, msg); break;
    case CCFG_ECANCEL: PyErr_SetString(PyExc_KeyboardInterrupt, msg[0] ? msg : "cancelled"); break;
    default: PyErr_SetString(PyExc_RuntimeError, msg[0] ? msg : "ccfg internal error"); break;
    }
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* backends: device = -1 is the CPU backend, N >= 0 Vulkan device N (ccfg/sampling.py resolves
 * "auto", "cpu", "vulkan:N"). A device is used by one caller at a time: its lock is taken with
 * the GIL released (a Python model called back from C needs the GIL while holding the lock). */

static int get_backend(int device, const ccfg_backend **be)
{
    if (device < 0) {
        *be = ccfg_backend_cpu();
        return CCFG_OK;
    }
    return ccfg_backend_vulkan(device, be);
}

/* host floats -> backend memory: on the CPU the array itself, on a device a new copy */
static int to_backend(const ccfg_backend *be, const float *host, size_t count, float **out)
{
    int status;
    *out = NULL;
    if (be->host_memory) {
        *out = (float *)host;
        return CCFG_OK;
    }
    if ((status = be->alloc(be, count * sizeof(float), out))) return status;
    return be->upload(be, *out, host, count * sizeof(float));
}

static void drop_backend(const ccfg_backend *be, float *p)
{
    if (!be->host_memory) be->release(be, p);
}

/* ------------------------------------------------------------------------- */
/* array conversion */

/* A C-contiguous array of `type` with ndim dims; shape entries < 0 are free. New reference. */
static PyArrayObject *as_array(PyObject *obj, int type, int ndim, const npy_intp *shape,
                               const char *name)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, type, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions, got %d", name, ndim,
                     PyArray_NDIM(a));
        goto fail;
    }
    for (int d = 0; d < ndim; d++)
        if (shape && shape[d] >= 0 && PyArray_DIM(a, d) != shape[d]) {
            PyErr_Format(PyExc_ValueError, "%s has size %zd in dimension %d, expected %zd", name,
                         (Py_ssize_t)PyArray_DIM(a, d), d, (Py_ssize_t)shape[d]);
            goto fail;
        }
    return a;
fail:
    Py_DECREF(a);
    return NULL;
}

static float *f32(PyArrayObject *a) { return (float *)PyArray_DATA(a); }

/* ------------------------------------------------------------------------- */
/* parameter tuples (built by ccfg/guidance.py and ccfg/schedulers.py) */

static int parse_rule(PyObject *spec, ccfg_rule *r, PyObject **pyfn)
{
    memset(r, 0, sizeof *r);
    *pyfn = NULL;
    if (!PyArg_ParseTuple(spec, "idddddpppiddddddddd|O;rule spec", &r->kind, &r->scale,
                          &r->negative_scale, &r->window_start, &r->window_stop, &r->tau,
                          &r->tau_mean, &r->naive_positive, &r->batch_global,
                          &r->sld_warmup, &r->sld_scale, &r->sld_threshold,
                          &r->sld_momentum_scale, &r->sld_momentum_beta, &r->dng_prior,
                          &r->dng_temperature, &r->dng_offset, &r->dng_p_min, &r->dng_p_max,
                          pyfn))
        return -1;
    if (r->kind < CCFG_RULE_NONE || r->kind > CCFG_RULE_PYTHON) {
        PyErr_Format(PyExc_ValueError, "unknown rule kind %d", r->kind);
        return -1;
    }
    if (r->kind == CCFG_RULE_PYTHON && (!*pyfn || !PyCallable_Check(*pyfn))) {
        PyErr_SetString(PyExc_TypeError, "PythonRule needs a callable");
        return -1;
    }
    return 0;
}

typedef struct {
    ccfg_sampler_config cfg;
    PyArrayObject *betas;                    /* keeps trained_betas alive */
} sampler_args;

static int parse_sampler(PyObject *spec, sampler_args *s)
{
    PyObject *betas = Py_None;
    ccfg_sampler_config *c = &s->cfg;
    memset(s, 0, sizeof *s);
    if (!PyArg_ParseTuple(spec, "iidpiipiidd|O;sampler spec", &c->solver, &c->steps, &c->eta,
                          &c->karras, &c->spacing, &c->steps_offset, &c->set_alpha_to_one,
                          &c->num_train_timesteps, &c->beta_schedule, &c->beta_start,
                          &c->beta_end, &betas))
        return -1;
    if (betas != Py_None) {
        npy_intp shape[1] = {c->num_train_timesteps};
        s->betas = as_array(betas, NPY_FLOAT64, 1, shape, "trained_betas");
        if (!s->betas) return -1;
        c->trained_betas = (const double *)PyArray_DATA(s->betas);
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Python callbacks from C (GIL re-acquired) */

/* copy of a C buffer as a new (n, dim) float32 array */
static PyObject *new_2d(int64_t n, int64_t dim, const float *src)
{
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    PyObject *a = PyArray_SimpleNew(2, shape, NPY_FLOAT32);
    if (a && n > 0 && dim > 0) memcpy(PyArray_DATA((PyArrayObject *)a), src, (size_t)(n * dim) * sizeof(float));
    return a;
}

/* result of a callback -> out (rows, dim); returns a status */
static int take_result(PyObject *res, int64_t rows, int64_t dim, float *out, const char *what)
{
    if (!res) return CCFG_ECANCEL;
    npy_intp shape[2] = {(npy_intp)rows, (npy_intp)dim};
    PyArrayObject *a = as_array(res, NPY_FLOAT32, 2, shape, what);
    Py_DECREF(res);
    if (!a) return CCFG_ECANCEL;
    memcpy(out, PyArray_DATA(a), (size_t)(rows * dim) * sizeof(float));
    Py_DECREF(a);
    return CCFG_OK;
}

static int python_rule(void *ctx, int64_t n, int64_t dim, const float *eps_u, const float *eps_p,
                       int n_neg, const float *const *eps_n, float *out)
{
    PyGILState_STATE g = PyGILState_Ensure();
    int status = CCFG_ECANCEL;
    PyObject *u = new_2d(n, dim, eps_u), *p = new_2d(n, dim, eps_p), *lst = PyList_New(n_neg);
    if (!u || !p || !lst) goto done;
    for (int j = 0; j < n_neg; j++) {
        PyObject *a = new_2d(n, dim, eps_n[j]);
        if (!a) goto done;
        PyList_SET_ITEM(lst, j, a);
    }
    status = take_result(PyObject_CallFunctionObjArgs((PyObject *)ctx, u, p, lst, NULL), n, dim,
                         out, "the PythonRule's result");
done:
    Py_XDECREF(u);
    Py_XDECREF(p);
    Py_XDECREF(lst);
    PyGILState_Release(g);
    return status;
}

/* ccfg_model.eval of a Python model: host arrays (on_backend = 0; sampler.c moves the data) */
static int python_model(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                        const float *x, double timestep, double alpha_bar, const int32_t *cond,
                        float *out)
{
    (void)be;
    PyGILState_STATE g = PyGILState_Ensure();
    int status = CCFG_ECANCEL;
    npy_intp n1 = (npy_intp)rows;
    PyObject *xa = new_2d(rows, dim, x), *ca = PyArray_SimpleNew(1, &n1, NPY_INT32);
    if (!xa || !ca) goto done;
    memcpy(PyArray_DATA((PyArrayObject *)ca), cond, (size_t)rows * sizeof(int32_t));
    status = take_result(PyObject_CallFunction((PyObject *)ctx, "OddO", xa, timestep, alpha_bar, ca),
                         rows, dim, out, "the model's output");
done:
    Py_XDECREF(xa);
    Py_XDECREF(ca);
    PyGILState_Release(g);
    return status;
}

typedef struct { PyObject *fn; } progress_ctx;

static int python_progress(void *vctx, int done, int steps)
{
    progress_ctx *c = vctx;
    PyGILState_STATE g = PyGILState_Ensure();
    int status = CCFG_OK;
    /* Ctrl-C in Jupyter: stop within one step */
    if (PyErr_CheckSignals() < 0) status = CCFG_ECANCEL;
    else if (c->fn && c->fn != Py_None) {
        PyObject *r = PyObject_CallFunction(c->fn, "ii", done, steps);
        if (!r) status = CCFG_ECANCEL;
        Py_XDECREF(r);
    }
    PyGILState_Release(g);
    return status;
}

/* ------------------------------------------------------------------------- */
/* Gaussian mixture spec (from GaussianMixture._c_spec()) */

typedef struct {
    ccfg_gmm g;
    PyArrayObject *means, *logw, *evals, *evecs, *mask;
} gmm_args;

static void gmm_args_clear(gmm_args *a)
{
    Py_XDECREF(a->means);
    Py_XDECREF(a->logw);
    Py_XDECREF(a->evals);
    Py_XDECREF(a->evecs);
    Py_XDECREF(a->mask);
}

static int parse_gmm(PyObject *spec, gmm_args *a)
{
    memset(a, 0, sizeof *a);
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "mixture spec must be a dict");
        return -1;
    }
    PyObject *m = PyDict_GetItemString(spec, "means"), *lw = PyDict_GetItemString(spec, "log_weights"),
             *ev = PyDict_GetItemString(spec, "evals"), *U = PyDict_GetItemString(spec, "evecs"),
             *cm = PyDict_GetItemString(spec, "concept_mask");
    if (!m || !lw || !ev || !cm) {
        PyErr_SetString(PyExc_ValueError, "mixture spec lacks means/log_weights/evals/concept_mask");
        return -1;
    }
    a->means = as_array(m, NPY_FLOAT64, 2, NULL, "means");
    if (!a->means) goto fail;
    npy_intp K = PyArray_DIM(a->means, 0), D = PyArray_DIM(a->means, 1);
    npy_intp s1[1] = {K}, s2[2] = {K, D}, s3[3] = {K, D, D}, sm[2] = {-1, K};
    a->logw = as_array(lw, NPY_FLOAT64, 1, s1, "log_weights");
    a->evals = a->logw ? as_array(ev, NPY_FLOAT64, 2, s2, "evals") : NULL;
    a->mask = a->evals ? as_array(cm, NPY_UINT8, 2, sm, "concept_mask") : NULL;
    if (!a->mask) goto fail;
    if (U && U != Py_None) {
        a->evecs = as_array(U, NPY_FLOAT64, 3, s3, "evecs");
        if (!a->evecs) goto fail;
    }
    a->g.K = K;
    a->g.dim = D;
    a->g.means = PyArray_DATA(a->means);
    a->g.log_weights = PyArray_DATA(a->logw);
    a->g.evals = PyArray_DATA(a->evals);
    a->g.evecs = a->evecs ? PyArray_DATA(a->evecs) : NULL;
    a->g.n_concepts = (int)PyArray_DIM(a->mask, 0);
    a->g.concept_mask = PyArray_DATA(a->mask);
    return 0;
fail:
    gmm_args_clear(a);
    return -1;
}

/* ------------------------------------------------------------------------- */
/* guidance state as a Python object (opaque; ccfg/guidance.py wraps it) */

typedef struct {
    PyObject_HEAD
    ccfg_guide_state st;
    int kind;
    int device;                 /* where the state lives (-1: CPU) */
} StateObject;

static void state_dealloc(StateObject *self)
{
    const ccfg_backend *be = self->st.be;
    if (be && !be->host_memory) {
        Py_BEGIN_ALLOW_THREADS
        be->lock(be, 1);
        ccfg_guide_state_free(&self->st);
        be->lock(be, 0);
        Py_END_ALLOW_THREADS
    } else {
        ccfg_guide_state_free(&self->st);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccfg._core.GuideState",
    .tp_basicsize = sizeof(StateObject),
    .tp_dealloc = (destructor)state_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "per-sample state of a stateful guidance rule (C side)",
};

/* ------------------------------------------------------------------------- */
/* module functions */

static PyObject *mod_randn(PyObject *self, PyObject *args)
{
    unsigned long long seed, stream;
    long long n, dim, first = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLK|L", &seed, &n, &dim, &stream, &first)) return NULL;
    if (n < 0 || dim < 0) {
        PyErr_SetString(PyExc_ValueError, "n and dim must be >= 0");
        return NULL;
    }
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    PyObject *out = PyArray_SimpleNew(2, shape, NPY_FLOAT32);
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ccfg_randn_host(n, dim, seed, stream, first, f32((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    return out;
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
        int rc = PyDict_SetItemString(d, f[i].k, a);
        Py_DECREF(a);
        if (rc) goto fail;
    }
    PyObject *s = PyFloat_FromDouble(p->init_noise_sigma);
    if (!s || PyDict_SetItemString(d, "init_noise_sigma", s)) { Py_XDECREF(s); goto fail; }
    Py_DECREF(s);
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *mod_plan(PyObject *self, PyObject *args)
{
    PyObject *spec, *out = NULL;
    sampler_args sa;
    ccfg_plan plan;
    (void)self;
    memset(&plan, 0, sizeof plan);
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &spec)) return NULL;
    if (parse_sampler(spec, &sa)) return NULL;
    int status = ccfg_plan_init(&plan, &sa.cfg);
    if (status) raise_status(status);
    else out = plan_dict(&plan);
    ccfg_plan_free(&plan);
    Py_XDECREF(sa.betas);
    return out;
}

/* the mixture's eps on `be` with host arrays (its parameters placed there for this call) */
static int gmm_eps_on(const ccfg_backend *be, const ccfg_gmm *g, int64_t rows, const float *x,
                      double ab, const int32_t *cond, float *out)
{
    const size_t count = (size_t)rows * (size_t)g->dim;
    ccfg_gmm_model m = {0};
    float *dx = NULL, *dout = NULL;
    int status;
    if (be->host_memory) return ccfg_gmm_eps(g, rows, x, ab, cond, out);
    if ((status = ccfg_gmm_model_init(&m, be, g)) || (status = to_backend(be, x, count, &dx)) ||
        (status = be->alloc(be, count * sizeof(float), &dout)) ||
        (status = ccfg_gmm_model_eval(&m, be, rows, g->dim, dx, 0.0, ab, cond, dout)))
        goto done;
    status = be->download(be, out, dout, count * sizeof(float));
done:
    be->release(be, dx);
    be->release(be, dout);
    ccfg_gmm_model_free(&m);
    return status;
}

static PyObject *mod_gmm_eps(PyObject *self, PyObject *args)
{
    PyObject *spec, *xo, *co, *out = NULL;
    double ab;
    int device = -1;
    gmm_args ga;
    PyArrayObject *x = NULL, *cond = NULL;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOdO|i", &spec, &xo, &ab, &co, &device)) return NULL;
    if (parse_gmm(spec, &ga)) return NULL;
    npy_intp sx[2] = {-1, (npy_intp)ga.g.dim};
    x = as_array(xo, NPY_FLOAT32, 2, sx, "x");
    if (!x) goto done;
    npy_intp sc[1] = {PyArray_DIM(x, 0)};
    cond = as_array(co, NPY_INT32, 1, sc, "cond");
    if (!cond) goto done;
    out = PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_FLOAT32);
    if (!out) goto done;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        status = gmm_eps_on(be, &ga.g, PyArray_DIM(x, 0), f32(x), ab, PyArray_DATA(cond),
                            f32((PyArrayObject *)out));
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        Py_CLEAR(out);
        raise_status(status);
    }
done:
    Py_XDECREF(x);
    Py_XDECREF(cond);
    gmm_args_clear(&ga);
    return out;
}

static PyObject *mod_guide_state(PyObject *self, PyObject *args)
{
    PyObject *spec, *pyfn;
    long long n, dim;
    int n_neg, device = -1, status;
    ccfg_rule rule;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!LLi|i", &PyTuple_Type, &spec, &n, &dim, &n_neg, &device))
        return NULL;
    if (parse_rule(spec, &rule, &pyfn)) return NULL;
    StateObject *st = PyObject_New(StateObject, &StateType);
    if (!st) return NULL;
    memset(&st->st, 0, sizeof st->st);
    st->kind = rule.kind;
    st->device = device;
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        status = ccfg_guide_state_init(&st->st, be, &rule, n, dim, n_neg);
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        memset(&st->st, 0, sizeof st->st);      /* init freed what it had */
        Py_DECREF(st);
        return raise_status(status);
    }
    return (PyObject *)st;
}

static PyObject *mod_state_info(PyObject *self, PyObject *args)
{
    StateObject *st;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &StateType, &st)) return NULL;
    PyObject *p = Py_None, *nu = Py_None;
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    if (st->st.dng_p) {
        npy_intp sh[2] = {st->st.n_neg, (npy_intp)st->st.n};
        Py_DECREF(p);
        p = PyArray_SimpleNew(2, sh, NPY_FLOAT64);
        if (!p) goto fail;
        memcpy(PyArray_DATA((PyArrayObject *)p), st->st.dng_p, (size_t)(sh[0] * sh[1]) * sizeof(double));
    }
    if (st->st.sld_nu) {
        npy_intp sh[3] = {st->st.n_neg, (npy_intp)st->st.n, (npy_intp)st->st.dim};
        Py_DECREF(nu);
        nu = PyArray_SimpleNew(3, sh, NPY_FLOAT32);
        if (!nu) goto fail;
        const ccfg_backend *be = st->st.be;
        int status;
        Py_BEGIN_ALLOW_THREADS
        be->lock(be, 1);
        status = be->download(be, PyArray_DATA((PyArrayObject *)nu), st->st.sld_nu,
                              (size_t)(sh[0] * sh[1] * sh[2]) * sizeof(float));
        be->lock(be, 0);
        Py_END_ALLOW_THREADS
        if (status) {
            raise_status(status);
            goto fail;
        }
    }
    return Py_BuildValue("{s:i,s:L,s:L,s:i,s:N,s:N}", "step", st->st.step, "n", (long long)st->st.n,
                         "dim", (long long)st->st.dim, "n_neg", st->st.n_neg, "dng_p", p,
                         "sld_nu", nu);
fail:
    Py_XDECREF(p);
    Py_XDECREF(nu);
    return NULL;
}

/* eps_n list -> new references in arrs[], float pointers in ptrs[] */
static int neg_arrays(PyObject *list, int64_t n, int64_t dim, PyArrayObject **arrs,
                      const float **ptrs, int max, int *count)
{
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "eps_n must be a list");
        return -1;
    }
    Py_ssize_t k = PyList_GET_SIZE(list);
    if (k > max) {
        PyErr_Format(PyExc_ValueError, "eps_n: at most %d negatives", max);
        return -1;
    }
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    for (Py_ssize_t j = 0; j < k; j++) {
        arrs[j] = as_array(PyList_GET_ITEM(list, j), NPY_FLOAT32, 2, shape, "eps_n");
        if (!arrs[j]) return -1;
        ptrs[j] = f32(arrs[j]);
        *count = (int)j + 1;
    }
    return 0;
}

enum { MAXNEG = CCFG_MAX_RULE_NEGATIVES };

/* ccfg_guide on `be` with host inputs and output: on a device the inputs are uploaded and the
 * result downloaded (NumPy in, NumPy out) */
static int guide_on(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                    int64_t dim, const float *u, const float *p, int k, const float *const *neg,
                    int step, int num_steps, float *out)
{
    const size_t count = (size_t)n * (size_t)dim;
    float *du = NULL, *dp = NULL, *dout = NULL, *dn[MAXNEG] = {0};
    int status;
    if (be->host_memory)
        return ccfg_guide(be, rule, st, n, dim, u, p, k, neg, step, num_steps, 1, out);
    if ((status = to_backend(be, u, count, &du)) || (p && (status = to_backend(be, p, count, &dp))))
        goto done;
    for (int j = 0; j < k; j++)
        if ((status = to_backend(be, neg[j], count, &dn[j]))) goto done;
    if ((status = be->alloc(be, count * sizeof(float), &dout)) ||
        (status = ccfg_guide(be, rule, st, n, dim, du, dp, k, (const float *const *)dn, step,
                             num_steps, 1, dout)))
        goto done;
    status = be->download(be, out, dout, count * sizeof(float));
done:
    drop_backend(be, du);
    drop_backend(be, dp);
    drop_backend(be, dout);
    for (int j = 0; j < k; j++) drop_backend(be, dn[j]);
    return status;
}

/* ccfg_dng_observe on `be` with host inputs */
static int observe_on(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st,
                      int64_t n, int64_t dim, const float *x, const float *xp, const float *u,
                      int k, const float *const *neg, double ab, double abp, double eta)
{
    const size_t count = (size_t)n * (size_t)dim;
    float *dx = NULL, *dxp = NULL, *du = NULL, *dn[MAXNEG] = {0};
    int status;
    if ((status = to_backend(be, x, count, &dx)) || (status = to_backend(be, xp, count, &dxp)) ||
        (status = to_backend(be, u, count, &du)))
        goto done;
    for (int j = 0; j < k; j++)
        if ((status = to_backend(be, neg[j], count, &dn[j]))) goto done;
    status = ccfg_dng_observe(be, rule, st, n, dim, dx, dxp, du, k, (const float *const *)dn, ab,
                              abp, eta);
done:
    if (!be->host_memory) {
        be->release(be, dx);
        be->release(be, dxp);
        be->release(be, du);
        for (int j = 0; j < k; j++) be->release(be, dn[j]);
    }
    return status;
}

static PyObject *mod_guide(PyObject *self, PyObject *args)
{
    PyObject *spec, *uo, *po, *nl, *so, *pyfn, *out = NULL;
    int step, num_steps, k = 0, device = -1;
    ccfg_rule rule;
    PyArrayObject *u = NULL, *p = NULL, *negs[MAXNEG] = {0};
    const float *neg_ptr[MAXNEG];
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOOOii|i", &PyTuple_Type, &spec, &uo, &po, &nl, &so, &step,
                          &num_steps, &device))
        return NULL;
    if (parse_rule(spec, &rule, &pyfn)) return NULL;
    rule.custom = python_rule;
    rule.custom_ctx = pyfn;
    u = as_array(uo, NPY_FLOAT32, 2, NULL, "eps_u");
    if (!u) goto done;
    int64_t n = PyArray_DIM(u, 0), dim = PyArray_DIM(u, 1);
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    if (po != Py_None && !(p = as_array(po, NPY_FLOAT32, 2, shape, "eps_p"))) goto done;
    if (neg_arrays(nl, n, dim, negs, neg_ptr, MAXNEG, &k)) goto done;
    ccfg_guide_state *st = NULL;
    if (so != Py_None) {
        if (!PyObject_TypeCheck(so, &StateType)) {
            PyErr_SetString(PyExc_TypeError, "state must come from ccfg.guide");
            goto done;
        }
        st = &((StateObject *)so)->st;
        if (((StateObject *)so)->kind != rule.kind) {
            PyErr_SetString(PyExc_ValueError, "state belongs to a different rule");
            goto done;
        }
        if (((StateObject *)so)->device != device) {
            PyErr_SetString(PyExc_ValueError, "state lives on another device than this call's");
            goto done;
        }
    } else if (ccfg_rule_stateful(&rule)) {
        PyErr_SetString(PyExc_ValueError, "state: a stateful rule needs its state");
        goto done;
    }
    out = PyArray_SimpleNew(2, shape, NPY_FLOAT32);
    if (!out) goto done;
    int status;
    const ccfg_backend *be = NULL;
    /* a Python rule on the CPU runs with the GIL held throughout (its callback re-enters Python) */
    if (rule.kind == CCFG_RULE_PYTHON && device < 0) {
        status = ccfg_guide(ccfg_backend_cpu(), &rule, st, n, dim, f32(u), p ? f32(p) : NULL, k,
                            neg_ptr, step, num_steps, 1, f32((PyArrayObject *)out));
    } else {
        Py_BEGIN_ALLOW_THREADS
        status = get_backend(device, &be);
        if (!status) {
            be->lock(be, 1);
            status = guide_on(be, &rule, st, n, dim, f32(u), p ? f32(p) : NULL, k, neg_ptr, step,
                              num_steps, f32((PyArrayObject *)out));
            be->lock(be, 0);
        }
        Py_END_ALLOW_THREADS
    }
    if (status) {
        Py_CLEAR(out);
        raise_status(status);
    }
done:
    Py_XDECREF(u);
    Py_XDECREF(p);
    for (int j = 0; j < MAXNEG; j++) Py_XDECREF(negs[j]);
    return out;
}

static PyObject *mod_dng_observe(PyObject *self, PyObject *args)
{
    PyObject *spec, *so, *xo, *xpo, *uo, *nl, *pyfn, *ret = NULL;
    double ab, abp, eta;
    int k = 0;
    ccfg_rule rule;
    PyArrayObject *x = NULL, *xp = NULL, *u = NULL, *negs[MAXNEG] = {0};
    const float *neg_ptr[MAXNEG];
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!OOOOddd", &PyTuple_Type, &spec, &StateType, &so, &xo, &xpo,
                          &uo, &nl, &ab, &abp, &eta))
        return NULL;
    if (parse_rule(spec, &rule, &pyfn)) return NULL;
    x = as_array(xo, NPY_FLOAT32, 2, NULL, "x_t");
    if (!x) goto done;
    npy_intp shape[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)};
    xp = as_array(xpo, NPY_FLOAT32, 2, shape, "x_prev");
    u = xp ? as_array(uo, NPY_FLOAT32, 2, shape, "eps_u") : NULL;
    if (!u || neg_arrays(nl, shape[0], shape[1], negs, neg_ptr, MAXNEG, &k)) goto done;
    int status;
    ccfg_guide_state *st = &((StateObject *)so)->st;
    const ccfg_backend *be = st->be ? st->be : ccfg_backend_cpu();
    Py_BEGIN_ALLOW_THREADS
    be->lock(be, 1);
    status = observe_on(be, &rule, st, shape[0], shape[1], f32(x), f32(xp), f32(u), k, neg_ptr,
                        ab, abp, eta);
    be->lock(be, 0);
    Py_END_ALLOW_THREADS
    if (status) raise_status(status);
    else ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(x);
    Py_XDECREF(xp);
    Py_XDECREF(u);
    for (int j = 0; j < MAXNEG; j++) Py_XDECREF(negs[j]);
    return ret;
}

/* The whole run on `be`; x is a host array (in: x_T, out: the result, written only on success),
 * the trajectory a host array or NULL. model_kind 0 places the mixture g on the backend. */
/* model kind 2, a UNet (the UNet block below): (unet, h, w, null_class, class_of) from
 * ccfg/unet.py's _c_unet_spec; begin locks the model and plans it for `rows`, end undoes both */
typedef struct {
    PyObject *unet;
    int h, w, null_class;
    int device;                 /* where the UNet's weights are */
    PyArrayObject *class_of;
    ccfg_unet_model um;
    int locked;
} unet_args;
static int parse_unet_args(PyObject *spec, unet_args *ua);
static int unet_args_begin(unet_args *ua, int64_t rows, ccfg_model *model);
static void unet_args_end(unet_args *ua);
static void unet_args_clear(unet_args *ua);

static int sample_on(const ccfg_backend *be, int model_kind, const ccfg_gmm *g, ccfg_model *model,
                     const ccfg_guided_model *gm, const ccfg_plan *plan,
                     const ccfg_sampler_config *cfg, int64_t n, int64_t dim, uint64_t seed,
                     int64_t first, float *x, float *traj, progress_ctx *pc)
{
    ccfg_gmm_model gmod = {0};
    float *dx = NULL;
    int status;
    if (model_kind == 0) {
        if ((status = ccfg_gmm_model_init(&gmod, be, g))) goto done;
        model->ctx = &gmod;
    }
    if ((status = to_backend(be, x, (size_t)n * (size_t)dim, &dx)) ||
        (status = ccfg_sample(be, gm, plan, cfg, n, dim, seed, first, dx, traj, python_progress,
                              pc)))
        goto done;
    if (!be->host_memory) status = be->download(be, x, dx, (size_t)n * (size_t)dim * sizeof(float));
done:
    if (dx) drop_backend(be, dx);
    ccfg_gmm_model_free(&gmod);
    return status;
}

/* sample(model_kind, model, prediction_type, rule_spec, sampler_spec, positive, negatives,
 *        seed, first, x_T, want_trajectory, progress) -> x or (x, trajectory)
 * model_kind 0: model = GaussianMixture spec dict; 1: model = callable(x, t, alpha_bar, cond);
 * 2: model = (UNet, h, w, null_class, class_of int32) from ccfg/unet.py (_c_unet_spec) */
static PyObject *mod_sample(PyObject *self, PyObject *args)
{
    PyObject *model_obj, *rspec, *sspec, *negs_obj, *xo, *prog, *pyfn, *result = NULL;
    PyObject *xout = NULL, *traj = NULL;
    int model_kind, pred, positive, want_traj, n_neg = 0, status = CCFG_OK, device = -1;
    unsigned long long seed;
    long long first;
    ccfg_rule rule;
    sampler_args sa = {0};
    gmm_args ga = {0};
    unet_args ua;
    ccfg_plan plan;
    int32_t neg_ids[MAXNEG];
    PyArrayObject *x = NULL;
    memset(&plan, 0, sizeof plan);
    memset(&ua, 0, sizeof ua);
    (void)self;
    if (!PyArg_ParseTuple(args, "iOiO!O!iOKLOpO|i", &model_kind, &model_obj, &pred, &PyTuple_Type,
                          &rspec, &PyTuple_Type, &sspec, &positive, &negs_obj, &seed, &first, &xo,
                          &want_traj, &prog, &device))
        return NULL;
    if (parse_rule(rspec, &rule, &pyfn) || parse_sampler(sspec, &sa)) goto done;
    rule.custom = python_rule;
    rule.custom_ctx = pyfn;
    if (!PyTuple_Check(negs_obj) || PyTuple_GET_SIZE(negs_obj) > MAXNEG) {
        PyErr_Format(PyExc_ValueError, "negative: at most %d negatives", MAXNEG);
        goto done;
    }
    n_neg = (int)PyTuple_GET_SIZE(negs_obj);
    for (int j = 0; j < n_neg; j++) {
        neg_ids[j] = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(negs_obj, j));
        if (PyErr_Occurred()) goto done;
    }
    ccfg_model model = {.prediction_type = pred};
    if (model_kind == 2) {
        if (parse_unet_args(model_obj, &ua)) goto done;
        if (ua.device != device) {
            PyErr_Format(PyExc_ValueError, "device: the UNet's weights are on device %d, the run "
                         "asks for %d", ua.device, device);
            goto done;
        }
    } else if (model_kind == 0) {
        if (parse_gmm(model_obj, &ga)) goto done;
        model.eval = ccfg_gmm_model_eval;     /* ctx: the mixture placed on the backend */
        model.on_backend = 1;
    } else {
        if (!PyCallable_Check(model_obj)) {
            PyErr_SetString(PyExc_TypeError, "model must be callable");
            goto done;
        }
        model.eval = python_model;
        model.ctx = model_obj;
    }
    x = as_array(xo, NPY_FLOAT32, 2, NULL, "x_T");
    if (!x) goto done;
    int64_t n = PyArray_DIM(x, 0), dim = PyArray_DIM(x, 1);
    if (model_kind == 0 && dim != ga.g.dim) {
        PyErr_Format(PyExc_ValueError, "x_T has %lld values per sample, the mixture %lld",
                     (long long)dim, (long long)ga.g.dim);
        goto done;
    }
    xout = PyArray_NewCopy(x, NPY_CORDER);
    if (!xout) goto done;
    status = ccfg_plan_init(&plan, &sa.cfg);
    if (status) { raise_status(status); goto done; }
    if (want_traj) {
        npy_intp sh[3] = {plan.steps + 1, (npy_intp)n, (npy_intp)dim};
        traj = PyArray_SimpleNew(3, sh, NPY_FLOAT32);
        if (!traj) goto done;
    }
    ccfg_guided_model gm = {.model = &model, .rule = &rule, .positive = positive,
                            .n_neg = n_neg, .negatives = neg_ids};
    progress_ctx pc = {prog};
    const ccfg_backend *be = NULL;
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    /* a UNet plans its activations here, once, for the largest stacked batch of the loop */
    if (!status && model_kind == 2) status = unet_args_begin(&ua, (2 + (int64_t)n_neg) * n, &model);
    if (!status) {
        be->lock(be, 1);
        status = sample_on(be, model_kind, &ga.g, &model, &gm, &plan, &sa.cfg, n, dim, seed, first,
                           f32((PyArrayObject *)xout), traj ? f32((PyArrayObject *)traj) : NULL,
                           &pc);
        be->lock(be, 0);
    }
    unet_args_end(&ua);
    Py_END_ALLOW_THREADS
    if (status) { raise_status(status); goto done; }
    result = traj ? PyTuple_Pack(2, xout, traj) : Py_NewRef(xout);
done:
    ccfg_plan_free(&plan);
    Py_XDECREF(sa.betas);
    gmm_args_clear(&ga);
    unet_args_clear(&ua);
    Py_XDECREF(x);
    Py_XDECREF(xout);
    Py_XDECREF(traj);
    return result;
}

static PyObject *mod_philox(PyObject *self, PyObject *args)
{
    unsigned int c[4], k[2];
    uint32_t out[4];
    (void)self;
    if (!PyArg_ParseTuple(args, "(IIII)(II)", &c[0], &c[1], &c[2], &c[3], &k[0], &k[1])) return NULL;
    const uint32_t cc[4] = {c[0], c[1], c[2], c[3]}, kk[2] = {k[0], k[1]};
    ccfg_philox4x32(cc, kk, out);
    return Py_BuildValue("(IIII)", out[0], out[1], out[2], out[3]);
}

/* ------------------------------------------------------------------------- */
/* devices and the Vulkan test hook */

static int dict_set(PyObject *d, const char *key, PyObject *v)   /* steals v */
{
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;
    Py_XDECREF(v);
    return rc;
}

/* [cpu entry, one dict per Vulkan device] or [cpu entry, {"backend": "vulkan", "available": False,
 * "note": why}] */
static PyObject *mod_devices(PyObject *self, PyObject *args)
{
    const ccfg_vk_device_info *info;
    int count;
    PyObject *list = NULL, *d = NULL;
    (void)self; (void)args;
    ccfg_vk_devices(&info, &count);
    if (!(list = PyList_New(0))) return NULL;
    if (!(d = PyDict_New())) goto fail;
    if (dict_set(d, "backend", PyUnicode_FromString("cpu")) ||
        dict_set(d, "threads", PyLong_FromLong(omp_get_max_threads())) ||
        PyList_Append(list, d))
        goto fail;
    Py_CLEAR(d);
    for (int i = 0; i < count; i++) {
        const ccfg_vk_device_info *v = &info[i];
        if (!(d = PyDict_New())) goto fail;
        if (dict_set(d, "backend", PyUnicode_FromString("vulkan")) ||
            dict_set(d, "index", PyLong_FromLong(v->index)) ||
            dict_set(d, "name", PyUnicode_FromString(v->name)) ||
            dict_set(d, "type", PyUnicode_FromString(v->type)) ||
            dict_set(d, "vendor_id", PyLong_FromUnsignedLong(v->vendor_id)) ||
            dict_set(d, "device_id", PyLong_FromUnsignedLong(v->device_id)) ||
            dict_set(d, "api_version", PyUnicode_FromFormat("%u.%u.%u", v->api_version >> 22,
                                                            (v->api_version >> 12) & 0x3ffu,
                                                            v->api_version & 0xfffu)) ||
            dict_set(d, "driver", PyUnicode_FromString(v->driver_name)) ||
            dict_set(d, "driver_info", PyUnicode_FromString(v->driver_info)) ||
            dict_set(d, "device_local_bytes", PyLong_FromUnsignedLongLong(v->device_local_bytes)) ||
            dict_set(d, "subgroup_size", PyLong_FromUnsignedLong(v->subgroup_size)) ||
            dict_set(d, "max_storage_buffer_range", PyLong_FromUnsignedLong(v->max_storage_buffer_range)) ||
            dict_set(d, "max_workgroup_invocations", PyLong_FromUnsignedLong(v->max_workgroup_invocations)) ||
            dict_set(d, "max_shared_memory", PyLong_FromUnsignedLong(v->max_shared_memory)) ||
            dict_set(d, "float64", PyBool_FromLong(v->float64)) ||
            dict_set(d, "available", PyBool_FromLong(v->usable)) ||
            PyList_Append(list, d))
            goto fail;
        Py_CLEAR(d);
    }
    if (count == 0) {
        if (!(d = PyDict_New())) goto fail;
        if (dict_set(d, "backend", PyUnicode_FromString("vulkan")) ||
            dict_set(d, "available", PyBool_FromLong(0)) ||
            dict_set(d, "note", PyUnicode_FromString(ccfg_vk_unavailable())) ||
            PyList_Append(list, d))
            goto fail;
        Py_CLEAR(d);
    }
    return list;
fail:
    Py_XDECREF(d);
    Py_DECREF(list);
    return NULL;
}

enum { VKOP_MAX = 16, VKOP_GAP = 3 };

/* a new float32 array shaped like `like` */
static PyObject *new_like(PyArrayObject *like)
{
    return PyArray_SimpleNew(PyArray_NDIM(like), PyArray_DIMS(like), NPY_FLOAT32);
}

/* vk_op(device, op, arrays, scalars): one backend op on backend `device` (-1: the CPU backend)
 * through the backend table; tests compare it with references. Every input array is uploaded
 * into ONE allocation at odd element offsets and every output lives at an odd offset too, so
 * the device-address arithmetic is exercised by every op. A test hook: the GIL stays held.
 *   axpbypcz (x, y|None, z|None) (a, b, c[, in_place]) -> out
 *   combine (in_0 .. in_m-1, coef float64 (n, m)) () -> out (n, dim)
 *   randn () (n, dim, seed, stream, first) -> (n, dim)
 *   dot (a, b) () -> float64 (n,)
 *   direction_dots (u, p, neg_0 ..) () -> (pp (n,), nn (k, n), np (k, n))
 *   all_finite (x,) () -> bool
 *   sld (eps_u, eps_p, eps_s, nu, out) (w, s_s, thr, s_m, beta_m, update, apply) -> (nu, out) */
static PyObject *mod_vk_op(PyObject *self, PyObject *args)
{
    int device, status = CCFG_OK, locked = 0;
    const char *op;
    PyObject *arrs, *scal, *result = NULL, *r0 = NULL, *r1 = NULL, *r2 = NULL;
    PyArrayObject *a[VKOP_MAX] = {0}, *coef = NULL;
    const ccfg_backend *be = NULL;
    float *pool = NULL, *dout = NULL, *in[VKOP_MAX] = {0};
    double s[8] = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "isO!O!", &device, &op, &PyTuple_Type, &arrs, &PyTuple_Type, &scal))
        return NULL;
    const int is_combine = !strcmp(op, "combine");
    Py_ssize_t na = PyTuple_GET_SIZE(arrs), ns = PyTuple_GET_SIZE(scal);
    if (na > VKOP_MAX || ns > 8) {
        PyErr_SetString(PyExc_ValueError, "vk_op: too many arrays or scalars");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < ns; i++) {
        s[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(scal, i));
        if (PyErr_Occurred()) return NULL;
    }
    int nb = (int)na - (is_combine ? 1 : 0);
    if (is_combine && nb < 1) {
        PyErr_SetString(PyExc_ValueError, "vk_op combine: needs inputs and coefficients");
        return NULL;
    }
    size_t total = VKOP_GAP;
    for (int i = 0; i < nb; i++) {
        PyObject *o = PyTuple_GET_ITEM(arrs, i);
        if (o == Py_None) continue;
        a[i] = (PyArrayObject *)PyArray_FROM_OTF(o, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
        if (!a[i]) goto done;
        total += (size_t)PyArray_SIZE(a[i]) + VKOP_GAP;
    }
    int64_t n = 0, dim = 0, count = a[0] ? (int64_t)PyArray_SIZE(a[0]) : 0;
    if (a[0] && PyArray_NDIM(a[0]) == 2) {
        n = PyArray_DIM(a[0], 0);
        dim = PyArray_DIM(a[0], 1);
    }
    if ((status = get_backend(device, &be))) goto done;
    be->lock(be, 1);
    locked = 1;
    /* the inputs, packed at odd offsets into one allocation */
    if ((status = be->alloc(be, total * sizeof(float), &pool))) goto done;
    size_t at = VKOP_GAP;
    for (int i = 0; i < nb; i++) {
        if (!a[i]) continue;
        in[i] = pool + at;
        if ((status = be->upload(be, in[i], PyArray_DATA(a[i]), (size_t)PyArray_NBYTES(a[i]))))
            goto done;
        at += (size_t)PyArray_SIZE(a[i]) + VKOP_GAP;
    }
    float *out = NULL;
    if (!strcmp(op, "axpbypcz") && a[0] && nb == 3) {
        const int in_place = ns > 3 && s[3] != 0.0;
        if (!in_place && (status = be->alloc(be, (size_t)(count + VKOP_GAP) * 4, &dout))) goto done;
        out = in_place ? in[0] : dout + VKOP_GAP;
        if ((status = be->axpbypcz(be, count, s[0], in[0], s[1], in[1], s[2], in[2], out))) goto done;
        if (!(r0 = new_like(a[0]))) goto done;
        if ((status = be->download(be, PyArray_DATA((PyArrayObject *)r0), out, (size_t)count * 4))) goto done;
        result = Py_NewRef(r0);
    } else if (is_combine && a[0] && n > 0) {
        npy_intp cs[2] = {(npy_intp)n, (npy_intp)nb};
        coef = as_array(PyTuple_GET_ITEM(arrs, nb), NPY_FLOAT64, 2, cs, "coef");
        if (!coef) goto done;
        for (int i = 0; i < nb; i++)
            if (!a[i] || PyArray_SIZE(a[i]) != count) {
                PyErr_SetString(PyExc_ValueError, "vk_op combine: inputs must share one shape");
                goto done;
            }
        if ((status = be->alloc(be, (size_t)(count + VKOP_GAP) * 4, &dout))) goto done;
        out = dout + VKOP_GAP;
        if ((status = be->combine(be, n, dim, nb, (const float *const *)in,
                                  (const double *)PyArray_DATA(coef), out)))
            goto done;
        if (!(r0 = new_like(a[0]))) goto done;
        if ((status = be->download(be, PyArray_DATA((PyArrayObject *)r0), out, (size_t)count * 4))) goto done;
        result = Py_NewRef(r0);
    } else if (!strcmp(op, "randn") && ns == 5) {
        /* seed and stream as exact integers: a double would lose bits above 2^53 */
        unsigned long long seed = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(scal, 2));
        unsigned long long stream = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(scal, 3));
        long long first = PyLong_AsLongLong(PyTuple_GET_ITEM(scal, 4));
        if (PyErr_Occurred()) goto done;
        npy_intp sh[2] = {(npy_intp)s[0], (npy_intp)s[1]};
        if (sh[0] < 0 || sh[1] < 0) {
            PyErr_SetString(PyExc_ValueError, "vk_op randn: n and dim must be >= 0");
            goto done;
        }
        if (!(r0 = PyArray_SimpleNew(2, sh, NPY_FLOAT32))) goto done;
        size_t bytes = (size_t)(sh[0] * sh[1]) * 4;
        if ((status = be->alloc(be, bytes + VKOP_GAP * 4, &dout)) ||
            (status = be->randn(be, sh[0], sh[1], seed, stream, first, dout + VKOP_GAP)) ||
            (status = be->download(be, PyArray_DATA((PyArrayObject *)r0), dout + VKOP_GAP, bytes)))
            goto done;
        result = Py_NewRef(r0);
    } else if (!strcmp(op, "dot") && nb == 2 && a[0] && a[1] && n > 0) {
        npy_intp sh[1] = {(npy_intp)n};
        if (PyArray_SIZE(a[1]) != count) {
            PyErr_SetString(PyExc_ValueError, "vk_op dot: a and b differ in size");
            goto done;
        }
        if (!(r0 = PyArray_SimpleNew(1, sh, NPY_FLOAT64))) goto done;
        if ((status = be->dot(be, n, dim, in[0], in[1], (double *)PyArray_DATA((PyArrayObject *)r0))))
            goto done;
        result = Py_NewRef(r0);
    } else if (!strcmp(op, "direction_dots") && nb >= 2 && n > 0) {
        const int k = nb - 2;
        npy_intp s1[1] = {(npy_intp)n}, s2[2] = {(npy_intp)k, (npy_intp)n};
        for (int i = 0; i < nb; i++)
            if (!a[i] || PyArray_SIZE(a[i]) != count) {
                PyErr_SetString(PyExc_ValueError, "vk_op direction_dots: inputs must share one shape");
                goto done;
            }
        if (!(r0 = PyArray_SimpleNew(1, s1, NPY_FLOAT64)) || !(r1 = PyArray_ZEROS(2, s2, NPY_FLOAT64, 0)) ||
            !(r2 = PyArray_ZEROS(2, s2, NPY_FLOAT64, 0)))
            goto done;
        if ((status = be->direction_dots(be, n, dim, in[0], in[1], k, (const float *const *)(in + 2),
                                         (double *)PyArray_DATA((PyArrayObject *)r0),
                                         (double *)PyArray_DATA((PyArrayObject *)r1),
                                         (double *)PyArray_DATA((PyArrayObject *)r2))))
            goto done;
        result = PyTuple_Pack(3, r0, r1, r2);
    } else if (!strcmp(op, "all_finite") && nb == 1 && a[0]) {
        int ok = 0;
        if ((status = ccfg_all_finite(be, count, in[0], &ok))) goto done;
        result = PyBool_FromLong(ok);
    } else if (!strcmp(op, "sld") && nb == 5 && ns == 7) {
        for (int i = 0; i < nb; i++)
            if (!a[i] || PyArray_SIZE(a[i]) != count) {
                PyErr_SetString(PyExc_ValueError, "vk_op sld: inputs must share one shape");
                goto done;
            }
        if ((status = be->sld(be, count, in[0], in[1], in[2], in[3], s[0], s[1], s[2], s[3], s[4],
                              s[5] != 0.0, s[6] != 0.0, in[4])))
            goto done;
        if (!(r0 = new_like(a[3])) || !(r1 = new_like(a[4]))) goto done;
        if ((status = be->download(be, PyArray_DATA((PyArrayObject *)r0), in[3], (size_t)count * 4)) ||
            (status = be->download(be, PyArray_DATA((PyArrayObject *)r1), in[4], (size_t)count * 4)))
            goto done;
        result = PyTuple_Pack(2, r0, r1);
    } else {
        PyErr_Format(PyExc_ValueError, "vk_op: unknown op %s or wrong arguments for it", op);
    }
done:
    if (status) {
        Py_CLEAR(result);
        raise_status(status);
    }
    if (be) {
        be->release(be, pool);
        be->release(be, dout);
    }
    if (locked) be->lock(be, 0);
    for (int i = 0; i < VKOP_MAX; i++) Py_XDECREF(a[i]);
    Py_XDECREF(coef);
    Py_XDECREF(r0);
    Py_XDECREF(r1);
    Py_XDECREF(r2);
    return result;
}

/* vk_copy_bench(device, bytes, repeats) -> seconds per copy (shaders/copy.comp) */
static PyObject *mod_vk_copy_bench(PyObject *self, PyObject *args)
{
    int device, repeats, status;
    unsigned long long bytes;
    double sec = 0.0;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKi", &device, &bytes, &repeats)) return NULL;
    if (repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "repeats must be >= 1");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        status = ccfg_vk_copy_bench(device, (size_t)bytes, repeats, &sec);
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    if (status) return raise_status(status);
    return PyFloat_FromDouble(sec);
}

/* ------------------------------------------------------------------------- */
/* UNet2DModel (csrc/unet.h): ccfg/unet.py reads the files and checks names and shapes; this block
 * owns the C model, runs its forward and the sampling loop with the GIL released. A lock per
 * model serialises callers from several Python threads (the plan's buffers are shared). */

typedef struct {
    PyObject_HEAD
    ccfg_unet *u;
    PyThread_type_lock lock;
    int device;                 /* -1: the CPU backend, else the Vulkan device it lives on */
} UNetObject;

static void unet_dealloc(UNetObject *self)
{
    if (self->u) {
        /* device memory is released under the device's lock, which a sampling thread may hold */
        const ccfg_backend *be = ccfg_unet_backend(self->u);
        Py_BEGIN_ALLOW_THREADS
        be->lock(be, 1);
        ccfg_unet_free(self->u);
        be->lock(be, 0);
        Py_END_ALLOW_THREADS
    }
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject UNetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccfg._core.UNet",
    .tp_basicsize = sizeof(UNetObject),
    .tp_dealloc = (destructor)unet_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a UNet2DModel in C (made by ccfg.models.UNet)",
};

static int cfg_int(PyObject *d, const char *key, int *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_ValueError, "unet config lacks %s", key);
        return -1;
    }
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = (int)x;
    return 0;
}

static int cfg_float(PyObject *d, const char *key, float *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        PyErr_Format(PyExc_ValueError, "unet config lacks %s", key);
        return -1;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    *out = (float)x;
    return 0;
}

static int cfg_ints(PyObject *d, const char *key, int n, int *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v || !PyTuple_Check(v) || PyTuple_GET_SIZE(v) != n) {
        PyErr_Format(PyExc_ValueError, "unet config: %s must be a tuple of %d ints", key, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        long x = PyLong_AsLong(PyTuple_GET_ITEM(v, i));
        if (x == -1 && PyErr_Occurred()) return -1;
        out[i] = (int)x;
    }
    return 0;
}

/* the dict built by ccfg/unet.py (_c_config) -> ccfg_unet_config */
static int parse_unet_config(PyObject *d, ccfg_unet_config *c)
{
    memset(c, 0, sizeof *c);
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "unet config must be a dict");
        return -1;
    }
    if (cfg_int(d, "levels", &c->levels)) return -1;
    if (c->levels < 1 || c->levels > CCFG_UNET_MAX_LEVELS) {
        PyErr_Format(PyExc_ValueError, "block_out_channels: 1 to %d levels supported",
                     CCFG_UNET_MAX_LEVELS);
        return -1;
    }
    if (cfg_int(d, "in_channels", &c->in_channels) || cfg_int(d, "out_channels", &c->out_channels) ||
        cfg_ints(d, "channels", c->levels, c->channels) ||
        cfg_ints(d, "down_attention", c->levels, c->down_attention) ||
        cfg_ints(d, "up_attention", c->levels, c->up_attention) ||
        cfg_int(d, "layers_per_block", &c->layers_per_block) ||
        cfg_int(d, "mid_block", &c->mid_block) || cfg_int(d, "mid_attention", &c->mid_attention) ||
        cfg_int(d, "mid_attention_groups", &c->mid_attention_groups) ||
        cfg_int(d, "norm_groups", &c->norm_groups) || cfg_float(d, "norm_eps", &c->norm_eps) ||
        cfg_int(d, "head_dim", &c->head_dim) || cfg_int(d, "time_embed_dim", &c->time_embed_dim) ||
        cfg_int(d, "flip_sin_to_cos", &c->flip_sin_to_cos) ||
        cfg_float(d, "freq_shift", &c->freq_shift) || cfg_int(d, "scale_shift", &c->scale_shift) ||
        cfg_int(d, "downsample_padding", &c->downsample_padding) ||
        cfg_int(d, "center_input_sample", &c->center_input_sample) ||
        cfg_int(d, "num_class_embeds", &c->num_class_embeds) ||
        cfg_float(d, "mid_block_scale_factor", &c->mid_block_scale_factor))
        return -1;
    return 0;
}

static PyObject *mod_unet_param_count(PyObject *self, PyObject *args)
{
    PyObject *d;
    ccfg_unet_config c;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &d) || parse_unet_config(d, &c)) return NULL;
    int64_t n = ccfg_unet_param_count(&c);
    if (n == 0) return raise_status(CCFG_EINVAL);
    return PyLong_FromLongLong(n);
}

/* unet_new(config dict, params float32 1-D, device=-1) -> UNet with its weights on the device */
static PyObject *mod_unet_new(PyObject *self, PyObject *args)
{
    PyObject *d, *po;
    ccfg_unet_config c;
    int device = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO|i", &d, &po, &device) || parse_unet_config(d, &c)) return NULL;
    PyArrayObject *params = as_array(po, NPY_FLOAT32, 1, NULL, "params");
    if (!params) return NULL;
    UNetObject *obj = PyObject_New(UNetObject, &UNetType);
    if (!obj) {
        Py_DECREF(params);
        return NULL;
    }
    obj->u = NULL;
    obj->device = device;
    obj->lock = PyThread_allocate_lock();
    if (!obj->lock) {
        Py_DECREF(params);
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    const ccfg_backend *be = NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        status = ccfg_unet_create(&c, f32(params), PyArray_DIM(params, 0), be, &obj->u);
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(params);
    if (status) {
        Py_DECREF(obj);
        return raise_status(status);
    }
    return (PyObject *)obj;
}

/* unet_forward(unet, x float32 (B, C, H, W), t float64 (B,), labels int32 (B,) or None) */
static PyObject *mod_unet_forward(PyObject *self, PyObject *args)
{
    UNetObject *obj;
    PyObject *xo, *to, *lo, *out = NULL;
    PyArrayObject *x = NULL, *t = NULL, *lab = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOO", &UNetType, &obj, &xo, &to, &lo)) return NULL;
    const ccfg_unet_config *c = ccfg_unet_get_config(obj->u);
    npy_intp sx[4] = {-1, c->in_channels, -1, -1};
    if (!(x = as_array(xo, NPY_FLOAT32, 4, sx, "sample"))) goto done;
    npy_intp sb[1] = {PyArray_DIM(x, 0)};
    if (!(t = as_array(to, NPY_FLOAT64, 1, sb, "timestep"))) goto done;
    if (lo != Py_None && !(lab = as_array(lo, NPY_INT32, 1, sb, "class_labels"))) goto done;
    npy_intp so[4] = {sb[0], c->out_channels, PyArray_DIM(x, 2), PyArray_DIM(x, 3)};
    if (!(out = PyArray_SimpleNew(4, so, NPY_FLOAT32))) goto done;
    int status = CCFG_OK;
    if (sb[0] > 0) {
        Py_BEGIN_ALLOW_THREADS
        const ccfg_backend *be = ccfg_unet_backend(obj->u);
        PyThread_acquire_lock(obj->lock, WAIT_LOCK);
        be->lock(be, 1);
        status = ccfg_unet_forward(obj->u, sb[0], (int)so[2], (int)so[3], f32(x),
                                   (const double *)PyArray_DATA(t),
                                   lab ? (const int32_t *)PyArray_DATA(lab) : NULL,
                                   f32((PyArrayObject *)out));
        be->lock(be, 0);
        PyThread_release_lock(obj->lock);
        Py_END_ALLOW_THREADS
    }
    if (status) {
        Py_CLEAR(out);
        raise_status(status);
    }
done:
    Py_XDECREF(x);
    Py_XDECREF(t);
    Py_XDECREF(lab);
    return out;
}

static PyObject *mod_unet_plan_bytes(PyObject *self, PyObject *args)
{
    UNetObject *obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &UNetType, &obj)) return NULL;
    return PyLong_FromLongLong(ccfg_unet_plan_bytes(obj->u));
}

static int parse_unet_args(PyObject *spec, unet_args *ua)
{
    PyObject *co;
    if (!PyTuple_Check(spec) ||
        !PyArg_ParseTuple(spec, "O!iiiO", &UNetType, &ua->unet, &ua->h, &ua->w, &ua->null_class,
                          &co)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a UNet model is (unet, h, w, null_class, class_of)");
        return -1;
    }
    if (!(ua->class_of = as_array(co, NPY_INT32, 1, NULL, "class_of"))) return -1;
    Py_INCREF(ua->unet);
    ua->device = ((UNetObject *)ua->unet)->device;
    return 0;
}

/* called with the GIL released */
static int unet_args_begin(unet_args *ua, int64_t rows, ccfg_model *model)
{
    UNetObject *obj = (UNetObject *)ua->unet;
    PyThread_acquire_lock(obj->lock, WAIT_LOCK);
    ua->locked = 1;
    model->eval = ccfg_unet_model_eval;
    model->ctx = &ua->um;
    model->on_backend = 1;         /* x and out stay on the UNet's (= the sampler's) backend */
    return ccfg_unet_model_init(&ua->um, obj->u, ua->h, ua->w, ua->null_class,
                                (int)PyArray_DIM(ua->class_of, 0),
                                (const int32_t *)PyArray_DATA(ua->class_of), rows);
}

static void unet_args_end(unet_args *ua)
{
    if (!ua->locked) return;
    ccfg_unet_model_free(&ua->um);
    PyThread_release_lock(((UNetObject *)ua->unet)->lock);
    ua->locked = 0;
}

static void unet_args_clear(unet_args *ua)
{
    Py_CLEAR(ua->class_of);
    Py_CLEAR(ua->unet);
}

/* nn_op(device, op, inputs, outputs, ints, floats, t, index) -> list of outputs: one nn.h op on
 * a backend, for the op-by-op tests (tests/test_unet_vulkan.py). inputs: float32 arrays or None
 * (an absent optional argument); outputs: float32 arrays whose copies are uploaded (initial values
 * for accumulate / in-place ops), run through the op and returned; t: float64 host array
 * (timestep_embedding), index: int32 host array (embedding_add), else None. Sizes are the
 * caller's business (ints), as in C; the arrays are only bounds the backend checks against. */
enum { NN_MAX_ARRAYS = 6 };

static int nn_call(const ccfg_backend *be, const ccfg_nn_ops *ops, const char *op, float **in,
                   float **out, const int *iv, int ni, const double *fv, int nf, const double *t,
                   const int32_t *index, float *scratch, int64_t scratch_len)
{
#define NEED(ki, kf)                                                                              \
    if (ni != (ki) || nf != (kf))                                                                 \
        return ccfg_fail(CCFG_EINVAL, "nn_op %s: %d ints and %d floats expected", op, ki, kf)
    if (!strcmp(op, "conv2d")) {
        NEED(10, 0);
        return ops->conv2d(be, iv[0], iv[1], iv[2], iv[3], in[0], iv[4], iv[5], iv[6], iv[7], iv[8],
                           in[1], in[2], iv[9], out[0], scratch, scratch_len);
    }
    if (!strcmp(op, "group_norm")) {
        NEED(5, 1);
        return ops->group_norm(be, iv[0], iv[1], iv[2], iv[3], (float)fv[0], in[0], in[1], in[2],
                               in[3], in[4], iv[4], out[0]);
    }
    if (!strcmp(op, "linear")) {
        NEED(4, 0);
        return ops->linear(be, iv[0], iv[1], iv[2], in[0], in[1], in[2], iv[3], out[0], scratch);
    }
    if (!strcmp(op, "silu")) {
        NEED(1, 0);
        return ops->silu(be, iv[0], in[0], out[0]);
    }
    if (!strcmp(op, "timestep_embedding")) {
        NEED(3, 1);
        return ops->timestep_embedding(be, iv[0], iv[1], t, iv[2], (float)fv[0], out[0]);
    }
    if (!strcmp(op, "embedding_add")) {
        NEED(2, 0);
        return ops->embedding_add(be, iv[0], iv[1], in[0], index, out[0]);
    }
    if (!strcmp(op, "attention")) {
        NEED(4, 0);
        return ops->attention(be, iv[0], iv[1], iv[2], iv[3], in[0], out[0], scratch, scratch_len);
    }
    if (!strcmp(op, "upsample_nearest2x")) {
        NEED(4, 0);
        return ops->upsample_nearest2x(be, iv[0], iv[1], iv[2], iv[3], in[0], out[0]);
    }
    if (!strcmp(op, "copy")) {
        NEED(1, 0);
        return ops->copy(be, iv[0], in[0], out[0]);
    }
    if (!strcmp(op, "scale")) {
        NEED(1, 1);
        return ops->scale(be, iv[0], (float)fv[0], out[0]);
    }
    if (!strcmp(op, "nchw_to_cnhw")) {
        NEED(3, 2);
        return ops->nchw_to_cnhw(be, iv[0], iv[1], iv[2], in[0], (float)fv[0], (float)fv[1], out[0]);
    }
    if (!strcmp(op, "cnhw_to_nchw")) {
        NEED(3, 0);
        return ops->cnhw_to_nchw(be, iv[0], iv[1], iv[2], in[0], out[0]);
    }
#undef NEED
    return ccfg_fail(CCFG_EINVAL, "nn_op: unknown op %s", op);
}

static PyObject *mod_nn_op(PyObject *self, PyObject *args)
{
    int device, status = CCFG_OK, nin = 0, nout = 0, ni = 0, nf = 0;
    const char *op;
    PyObject *ino, *outo, *io, *fo, *to, *xo, *result = NULL;
    PyArrayObject *ain[NN_MAX_ARRAYS] = {0}, *aout[NN_MAX_ARRAYS] = {0}, *ta = NULL, *xa = NULL;
    float *din[NN_MAX_ARRAYS] = {0}, *dout[NN_MAX_ARRAYS] = {0}, *scratch = NULL;
    int iv[16];
    double fv[4];
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "isO!O!O!O!OO", &device, &op, &PyList_Type, &ino, &PyList_Type,
                          &outo, &PyTuple_Type, &io, &PyTuple_Type, &fo, &to, &xo))
        return NULL;
    nin = (int)PyList_GET_SIZE(ino);
    nout = (int)PyList_GET_SIZE(outo);
    ni = (int)PyTuple_GET_SIZE(io);
    nf = (int)PyTuple_GET_SIZE(fo);
    if (nin > NN_MAX_ARRAYS || nout > NN_MAX_ARRAYS || nout < 1 || ni > 16 || nf > 4) {
        PyErr_SetString(PyExc_ValueError, "nn_op: too many arguments");
        return NULL;
    }
    for (int i = 0; i < ni; i++) {
        iv[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(io, i));
        if (PyErr_Occurred()) return NULL;
    }
    for (int i = 0; i < nf; i++) {
        fv[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(fo, i));
        if (PyErr_Occurred()) return NULL;
    }
    for (int i = 0; i < nin; i++) {
        PyObject *o = PyList_GET_ITEM(ino, i);
        if (o != Py_None && !(ain[i] = as_array(o, NPY_FLOAT32, 1, NULL, "input"))) goto done;
    }
    for (int i = 0; i < nout; i++) {
        PyArrayObject *a = as_array(PyList_GET_ITEM(outo, i), NPY_FLOAT32, 1, NULL, "output");
        if (!a) goto done;
        aout[i] = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
        Py_DECREF(a);
        if (!aout[i]) goto done;
    }
    if (to != Py_None && !(ta = as_array(to, NPY_FLOAT64, 1, NULL, "t"))) goto done;
    if (xo != Py_None && !(xa = as_array(xo, NPY_INT32, 1, NULL, "index"))) goto done;
    /* scratch for the CPU kernels: generous for the small sizes of the tests */
    const int64_t scratch_len = (int64_t)1 << 22;
    Py_BEGIN_ALLOW_THREADS
    status = get_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        for (int i = 0; i < nin && !status; i++)
            if (ain[i]) {
                const size_t bytes = (size_t)PyArray_NBYTES(ain[i]);
                status = be->alloc(be, bytes ? bytes : 4, &din[i]);
                if (!status) status = be->upload(be, din[i], f32(ain[i]), bytes);
            }
        for (int i = 0; i < nout && !status; i++) {
            const size_t bytes = (size_t)PyArray_NBYTES(aout[i]);
            status = be->alloc(be, bytes ? bytes : 4, &dout[i]);
            if (!status) status = be->upload(be, dout[i], f32(aout[i]), bytes);
        }
        if (!status) status = be->alloc(be, (size_t)scratch_len * sizeof(float), &scratch);
        if (!status)
            status = nn_call(be, be->host_memory ? ccfg_nn_ops_cpu() : ccfg_nn_ops_vulkan(), op,
                             din, dout, iv, ni, fv, nf, ta ? (const double *)PyArray_DATA(ta) : NULL,
                             xa ? (const int32_t *)PyArray_DATA(xa) : NULL, scratch, scratch_len);
        for (int i = 0; i < nout && !status; i++)
            status = be->download(be, f32(aout[i]), dout[i], (size_t)PyArray_NBYTES(aout[i]));
        for (int i = 0; i < NN_MAX_ARRAYS; i++) {
            be->release(be, din[i]);
            be->release(be, dout[i]);
        }
        be->release(be, scratch);
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        raise_status(status);
        goto done;
    }
    if (!(result = PyList_New(nout))) goto done;
    for (int i = 0; i < nout; i++) PyList_SET_ITEM(result, i, Py_NewRef((PyObject *)aout[i]));
done:
    for (int i = 0; i < NN_MAX_ARRAYS; i++) {
        Py_XDECREF(ain[i]);
        Py_XDECREF(aout[i]);
    }
    Py_XDECREF(ta);
    Py_XDECREF(xa);
    return result;
}

/* called from exec_module */
static int unet_register(PyObject *m)
{
    if (PyType_Ready(&UNetType) < 0) return -1;
    return PyModule_AddObjectRef(m, "UNet", (PyObject *)&UNetType);
}

/* ------------------------------------------------------------------------- */
/* The evaluation classifier (csrc/classifier.h): ccfg/metrics.py reads config.json and the
 * safetensors file, checks names and shapes, and passes the layer list and one parameter vector.
 * A lock per model serialises Python threads (the planned activations are shared). */
#include "classifier.h"

typedef struct {
    PyObject_HEAD
    ccfg_classifier *c;
    PyThread_type_lock lock;
} ClassifierObject;

static void classifier_dealloc(ClassifierObject *self)
{
    ccfg_classifier_free(self->c);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ClassifierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccfg._core.Classifier",
    .tp_basicsize = sizeof(ClassifierObject),
    .tp_dealloc = (destructor)classifier_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the evaluation classifier in C (made by ccfg.metrics)",
};

/* classifier_new(layers, (c, h, w), features_layer, params float32 1-D) -> Classifier;
 * layers: tuple of (type, in, out, kernel, stride, padding, groups, eps) */
static PyObject *mod_classifier_new(PyObject *self, PyObject *args)
{
    PyObject *lo, *po, *result = NULL;
    PyArrayObject *params = NULL;
    ccfg_cls_layer *layers = NULL;
    ClassifierObject *obj = NULL;
    int c, h, w, features_layer, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!(iii)iO", &PyTuple_Type, &lo, &c, &h, &w, &features_layer, &po))
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(lo);
    if (n < 1 || n > 1024) {
        PyErr_SetString(PyExc_ValueError, "layers: 1 to 1024 layers");
        return NULL;
    }
    if (!(layers = PyMem_Calloc((size_t)n, sizeof *layers))) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ccfg_cls_layer *l = &layers[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(lo, i), "iiiiiiif;layers: each a tuple (type, in, "
                              "out, kernel, stride, padding, groups, eps)", &l->type,
                              &l->in_channels, &l->out_channels, &l->kernel, &l->stride,
                              &l->padding, &l->groups, &l->eps))
            goto done;
    }
    if (!(params = as_array(po, NPY_FLOAT32, 1, NULL, "params"))) goto done;
    if (!(obj = PyObject_New(ClassifierObject, &ClassifierType))) goto done;
    obj->c = NULL;
    if (!(obj->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = ccfg_classifier_create(layers, (int)n, c, h, w, features_layer, f32(params),
                                    (int64_t)PyArray_DIM(params, 0), &obj->c);
    Py_END_ALLOW_THREADS
    if (status) {
        raise_status(status);
        goto done;
    }
    result = (PyObject *)obj;
    obj = NULL;
done:
    Py_XDECREF(obj);
    Py_XDECREF(params);
    PyMem_Free(layers);
    return result;
}

/* classifier_forward(model, x float32 (N, c, h, w)) -> (logits (N, outputs), features (N, F)) */
static PyObject *mod_classifier_forward(PyObject *self, PyObject *args)
{
    ClassifierObject *obj;
    PyObject *xo, *logits = NULL, *feats = NULL, *result = NULL;
    PyArrayObject *x = NULL;
    int status = CCFG_OK;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &ClassifierType, &obj, &xo)) return NULL;
    if (!(x = as_array(xo, NPY_FLOAT32, 4, NULL, "images"))) goto done;
    const npy_intp n = PyArray_DIM(x, 0);
    npy_intp sl[2] = {n, ccfg_classifier_outputs(obj->c)};
    npy_intp sf[2] = {n, ccfg_classifier_features(obj->c)};
    if (!(logits = PyArray_SimpleNew(2, sl, NPY_FLOAT32))) goto done;
    if (!(feats = PyArray_SimpleNew(2, sf, NPY_FLOAT32))) goto done;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(obj->lock, WAIT_LOCK);
    status = ccfg_classifier_forward(obj->c, (int64_t)n, f32(x), f32((PyArrayObject *)logits),
                                     sf[1] ? f32((PyArrayObject *)feats) : NULL);
    PyThread_release_lock(obj->lock);
    Py_END_ALLOW_THREADS
    if (status) {
        raise_status(status);
        goto done;
    }
    result = PyTuple_Pack(2, logits, feats);
done:
    Py_XDECREF(x);
    Py_XDECREF(logits);
    Py_XDECREF(feats);
    return result;
}

static int classifier_register(PyObject *m)
{
    if (PyType_Ready(&ClassifierType) < 0) return -1;
    return PyModule_AddObjectRef(m, "Classifier", (PyObject *)&ClassifierType);
}

static PyMethodDef methods[] = {
    {"randn", mod_randn, METH_VARARGS, "randn(seed, n, dim, stream, first=0) -> float32 (n, dim)"},
    {"philox4x32", mod_philox, METH_VARARGS, "philox4x32((c0,c1,c2,c3), (k0,k1)) -> 4 uint32"},
    {"plan", mod_plan, METH_VARARGS, "plan(sampler_spec) -> dict of schedule arrays"},
    {"gmm_eps", mod_gmm_eps, METH_VARARGS, "gmm_eps(spec, x, alpha_bar, cond, device=-1) -> exact eps"},
    {"guide_state", mod_guide_state, METH_VARARGS, "guide_state(rule_spec, n, dim, n_neg)"},
    {"state_info", mod_state_info, METH_VARARGS, "state_info(state) -> dict (copies)"},
    {"guide", mod_guide, METH_VARARGS,
     "guide(rule_spec, eps_u, eps_p, eps_n_list, state, step, num_steps) -> eps"},
    {"dng_observe", mod_dng_observe, METH_VARARGS,
     "dng_observe(rule_spec, state, x_t, x_prev, eps_u, eps_n_list, ab, ab_prev, eta)"},
    {"sample", mod_sample, METH_VARARGS, "the whole sampling loop (see ccfg/sampling.py)"},
    {"devices", mod_devices, METH_NOARGS, "devices() -> list of dicts: the CPU, then Vulkan devices or why none"},
    {"vk_op", mod_vk_op, METH_VARARGS, "vk_op(device, op, arrays, scalars): one backend op on a backend (tests)"},
    {"vk_copy_bench", mod_vk_copy_bench, METH_VARARGS, "vk_copy_bench(device, bytes, repeats) -> seconds per copy"},
    {"unet_param_count", mod_unet_param_count, METH_VARARGS, "unet_param_count(config) -> int"},
    {"unet_new", mod_unet_new, METH_VARARGS, "unet_new(config, params, device=-1) -> UNet"},
    {"unet_forward", mod_unet_forward, METH_VARARGS, "unet_forward(unet, x, t, labels) -> out"},
    {"nn_op", mod_nn_op, METH_VARARGS, "nn_op(device, op, inputs, outputs, ints, floats, t, index) (tests)"},
    {"unet_plan_bytes", mod_unet_plan_bytes, METH_VARARGS, "unet_plan_bytes(unet) -> int"},
    {"classifier_new", mod_classifier_new, METH_VARARGS,
     "classifier_new(layers, (c, h, w), features_layer, params) -> Classifier"},
    {"classifier_forward", mod_classifier_forward, METH_VARARGS,
     "classifier_forward(model, images) -> (logits, features)"},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    if (PyType_Ready(&StateType) < 0) return -1;
    if (PyModule_AddObjectRef(m, "GuideState", (PyObject *)&StateType) < 0) return -1;
    if (unet_register(m) < 0) return -1;
    if (classifier_register(m) < 0) return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_core", "ccfg's C core: guidance rules, solvers, exact mixtures.", 0,
    methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&moduledef); }
