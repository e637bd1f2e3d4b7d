/* python/py_models.c — the model objects that sample() takes, and the mixture's eps.
 *
 * A model object (ccfg._core.Model) holds a ccfg_model for the sampler plus the Python objects
 * its C side points into. Each model kind makes one: gmm_model(spec) here, python_model(fn) here,
 * UNet.model(...) in py_unet.c. sample() neither knows nor asks which kind it got. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <string.h>

struct py_model {
    PyObject_HEAD
    ccfg_model model;
    PyObject *owner;                    /* keeps what model.ctx points into alive */
    void *data;                         /* the kind's own allocation (model.ctx lives in it) */
    void (*data_free)(void *data);
    PyThread_type_lock lock;            /* not owned (a UNet's), or NULL */
};

static void model_dealloc(py_model *self)
{
    if (self->data_free) self->data_free(self->data);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject py_ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccfg._core.Model",
    .tp_basicsize = sizeof(py_model),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a model as the C sampler sees it (made by a ccfg model's _c_model)",
};

PyObject *py_model_new(ccfg_model model, PyObject *owner, void *data, void (*data_free)(void *),
                       PyThread_type_lock lock)
{
    py_model *m = PyObject_New(py_model, &py_ModelType);
    if (!m) {
        if (data_free) data_free(data);
        return NULL;
    }
    m->model = model;
    m->owner = Py_XNewRef(owner);
    m->data = data;
    m->data_free = data_free;
    m->lock = lock;
    return (PyObject *)m;
}

const ccfg_model *py_model_get(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &py_ModelType)) {
        PyErr_Format(PyExc_TypeError, "model must be a ccfg model object (from _c_model), got %s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return &((py_model *)obj)->model;
}

PyThread_type_lock py_model_lock(PyObject *obj) { return ((py_model *)obj)->lock; }

/* ------------------------------------------------------------------------- */
/* the exact Gaussian mixture: a spec dict from GaussianMixture._c_spec() */

typedef struct {
    ccfg_gmm g;
    ccfg_gmm_model placed;              /* its parameters on the run's backend */
    PyArrayObject *means, *logw, *evals, *evecs, *mask;
} gmm_args;

static void gmm_args_free(void *ctx)
{
    gmm_args *a = ctx;
    if (!a) return;
    Py_XDECREF(a->means);
    Py_XDECREF(a->logw);
    Py_XDECREF(a->evals);
    Py_XDECREF(a->evecs);
    Py_XDECREF(a->mask);
    PyMem_Free(a);
}

/* spec -> a new gmm_args (NULL with an exception set) */
static gmm_args *parse_gmm(PyObject *spec)
{
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "mixture spec must be a dict");
        return NULL;
    }
    PyObject *m = PyDict_GetItemString(spec, "means"), *lw = PyDict_GetItemString(spec, "log_weights"),
             *ev = PyDict_GetItemString(spec, "evals"), *U = PyDict_GetItemString(spec, "evecs"),
             *cm = PyDict_GetItemString(spec, "concept_mask");
    if (!m || !lw || !ev || !cm) {
        PyErr_SetString(PyExc_ValueError, "mixture spec lacks means/log_weights/evals/concept_mask");
        return NULL;
    }
    gmm_args *a = PyMem_Calloc(1, sizeof *a);
    if (!a) return (gmm_args *)PyErr_NoMemory();
    a->means = py_as_array(m, NPY_FLOAT64, 2, NULL, "means");
    if (!a->means) goto fail;
    npy_intp K = PyArray_DIM(a->means, 0), D = PyArray_DIM(a->means, 1);
    npy_intp s1[1] = {K}, s2[2] = {K, D}, s3[3] = {K, D, D}, sm[2] = {-1, K};
    a->logw = py_as_array(lw, NPY_FLOAT64, 1, s1, "log_weights");
    a->evals = a->logw ? py_as_array(ev, NPY_FLOAT64, 2, s2, "evals") : NULL;
    a->mask = a->evals ? py_as_array(cm, NPY_UINT8, 2, sm, "concept_mask") : NULL;
    if (!a->mask) goto fail;
    if (U && U != Py_None) {
        a->evecs = py_as_array(U, NPY_FLOAT64, 3, s3, "evecs");
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
    return a;
fail:
    gmm_args_free(a);
    return NULL;
}

/* gmm_model(spec) -> Model */
PyObject *py_gmm_model(PyObject *self, PyObject *args)
{
    PyObject *spec;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &spec)) return NULL;
    gmm_args *a = parse_gmm(spec);
    if (!a) return NULL;
    return py_model_new(ccfg_gmm_as_model(&a->placed, &a->g), NULL, a, gmm_args_free, NULL);
}

/* the mixture's eps on `be` with host arrays (its parameters placed there for this call) */
static int gmm_eps_on(const ccfg_backend *be, const ccfg_gmm *g, int64_t rows, const float *x,
                      double ab, const int32_t *cond, float *out)
{
    const size_t count = (size_t)rows * (size_t)g->dim;
    ccfg_gmm_model m = {0};
    float *dx = NULL, *dout = NULL;
    int status;
    if ((status = ccfg_gmm_model_init(&m, be, g)) ||
        (status = ccfg_backend_from_host(be, x, count, &dx)))
        goto done;
    if (be->host_memory) {
        status = ccfg_gmm_model_eval(&m, be, rows, g->dim, dx, 0.0, ab, cond, out);
        goto done;
    }
    if ((status = be->alloc(be, count * sizeof(float), &dout)) ||
        (status = ccfg_gmm_model_eval(&m, be, rows, g->dim, dx, 0.0, ab, cond, dout)))
        goto done;
    status = be->download(be, out, dout, count * sizeof(float));
done:
    ccfg_backend_drop(be, dx);
    ccfg_backend_drop(be, dout);
    ccfg_gmm_model_free(&m);
    return status;
}

/* gmm_eps(spec, x (rows, dim), alpha_bar, cond int32 (rows,), device="cpu") -> exact eps */
PyObject *py_gmm_eps(PyObject *self, PyObject *args)
{
    PyObject *spec, *xo, *co, *out = NULL;
    double ab;
    const char *device = "cpu";
    PyArrayObject *x = NULL, *cond = NULL;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOdO|s", &spec, &xo, &ab, &co, &device)) return NULL;
    gmm_args *ga = parse_gmm(spec);
    if (!ga) return NULL;
    npy_intp sx[2] = {-1, (npy_intp)ga->g.dim};
    x = py_as_array(xo, NPY_FLOAT32, 2, sx, "x");
    if (!x) goto done;
    npy_intp sc[1] = {PyArray_DIM(x, 0)};
    cond = py_as_array(co, NPY_INT32, 1, sc, "cond");
    if (!cond) goto done;
    out = PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_FLOAT32);
    if (!out) goto done;
    int status;
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "the mixture's eps", be, NULL))) {
        status = gmm_eps_on(be, &ga->g, PyArray_DIM(x, 0), py_f32(x), ab, PyArray_DATA(cond),
                            py_f32((PyArrayObject *)out));
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        Py_CLEAR(out);
        py_raise_status(status);
    }
done:
    Py_XDECREF(x);
    Py_XDECREF(cond);
    gmm_args_free(ga);
    return out;
}

/* ------------------------------------------------------------------------- */
/* a Python callable fn(x (rows, dim), timestep, alpha_bar, cond int32 (rows,)) -> (rows, dim),
 * on host arrays (on_backend = 0: the sampler moves the data) */

static int python_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                             const float *x, double timestep, double alpha_bar,
                             const int32_t *cond, float *out)
{
    (void)be;
    py_callback cb;
    int status = py_callback_enter(&cb);       /* the run's locks, let go meanwhile */
    if (status) return status;
    PyGILState_STATE g = PyGILState_Ensure();
    status = CCFG_ECANCEL;
    npy_intp n1 = (npy_intp)rows;
    PyObject *xa = py_new_2d(rows, dim, x), *ca = PyArray_SimpleNew(1, &n1, NPY_INT32);
    if (!xa || !ca) goto done;
    memcpy(PyArray_DATA((PyArrayObject *)ca), cond, (size_t)rows * sizeof(int32_t));
    status = py_take_result(PyObject_CallFunction((PyObject *)ctx, "OddO", xa, timestep,
                                                  alpha_bar, ca),
                            rows, dim, out, "the model's output");
done:
    Py_XDECREF(xa);
    Py_XDECREF(ca);
    PyGILState_Release(g);
    const int back = py_callback_leave(&cb);
    return status ? status : back;
}

/* python_model(fn) -> Model */
PyObject *py_python_model(PyObject *self, PyObject *args)
{
    PyObject *fn;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &fn)) return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "model must be callable");
        return NULL;
    }
    const ccfg_model m = {.eval = python_model_eval, .ctx = fn, .on_backend = 0};
    return py_model_new(m, fn, NULL, NULL, NULL);
}

int py_models_register(PyObject *m)
{
    if (PyType_Ready(&py_ModelType) < 0) return -1;
    return PyModule_AddObjectRef(m, "Model", (PyObject *)&py_ModelType);
}
