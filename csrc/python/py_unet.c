/* python/py_unet.c — the UNet type (csrc/unet.h): ccfg/unet.py reads the files and checks names
 * and shapes; this file owns the C model, runs its forward with the GIL released and makes its
 * sampler model (unet_model). A lock per UNet serialises callers from several Python threads
 * (the plan's buffers are shared); it is always taken before the device's lock. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <string.h>

#include "unet.h"

typedef struct {
    PyObject_HEAD
    ccfg_unet *u;
    PyThread_type_lock lock;
} UNetObject;

static void unet_dealloc(UNetObject *self)
{
    if (self->u) {
        /* device memory is released under the device's lock, which a sampling thread may hold */
        const ccfg_backend *be = ccfg_unet_backend(self->u);
        if (py_run_holds(be)) {
            ccfg_unet_free(self->u);   /* this thread holds it: a signal handler inside a run */
        } else {
            Py_BEGIN_ALLOW_THREADS
            be->lock(be, 1);
            ccfg_unet_free(self->u);
            be->lock(be, 0);
            Py_END_ALLOW_THREADS
        }
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
    .tp_doc = "a UNet2DModel or UNet2DConditionModel in C (made by ccfg.models.UNet)",
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
        cfg_float(d, "mid_block_scale_factor", &c->mid_block_scale_factor) ||
        cfg_int(d, "cross_attention_dim", &c->cross_attention_dim) ||
        cfg_ints(d, "heads", c->levels, c->heads) ||
        cfg_ints(d, "transformer_layers", c->levels, c->transformer_layers))
        return -1;
    return 0;
}

PyObject *py_unet_param_count(PyObject *self, PyObject *args)
{
    PyObject *d;
    ccfg_unet_config c;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &d) || parse_unet_config(d, &c)) return NULL;
    int64_t n = ccfg_unet_param_count(&c);
    if (n == 0) return py_raise_status(CCFG_EINVAL);
    return PyLong_FromLongLong(n);
}

/* unet_new(config dict, params float32 1-D, device="cpu") -> UNet with its weights there */
PyObject *py_unet_new(PyObject *self, PyObject *args)
{
    PyObject *d, *po;
    ccfg_unet_config c;
    const char *device = "cpu";
    (void)self;
    if (!PyArg_ParseTuple(args, "OO|s", &d, &po, &device) || parse_unet_config(d, &c)) return NULL;
    PyArrayObject *params = py_as_array(po, NPY_FLOAT32, 1, NULL, "params");
    if (!params) return NULL;
    UNetObject *obj = PyObject_New(UNetObject, &UNetType);
    if (!obj) {
        Py_DECREF(params);
        return NULL;
    }
    obj->u = NULL;
    obj->lock = PyThread_allocate_lock();
    if (!obj->lock) {
        Py_DECREF(params);
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    const ccfg_backend *be = NULL;
    int status;
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "placing a UNet", be, NULL))) {
        status = ccfg_unet_create(&c, py_f32(params), PyArray_DIM(params, 0), be, &obj->u);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(params);
    if (status) {
        Py_DECREF(obj);
        return py_raise_status(status);
    }
    return (PyObject *)obj;
}

/* unet_forward(unet, x float32 (B, C, H, W), t float64 (B,), labels int32 (B,) or None,
 *              context float32 (1 or B, L, D) or None) */
PyObject *py_unet_forward(PyObject *self, PyObject *args)
{
    UNetObject *obj;
    PyObject *xo, *to, *lo, *co = Py_None, *out = NULL;
    PyArrayObject *x = NULL, *t = NULL, *lab = NULL, *ctx = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOO|O", &UNetType, &obj, &xo, &to, &lo, &co)) return NULL;
    const ccfg_unet_config *c = ccfg_unet_get_config(obj->u);
    npy_intp sx[4] = {-1, c->in_channels, -1, -1};
    if (!(x = py_as_array(xo, NPY_FLOAT32, 4, sx, "sample"))) goto done;
    npy_intp sb[1] = {PyArray_DIM(x, 0)};
    if (!(t = py_as_array(to, NPY_FLOAT64, 1, sb, "timestep"))) goto done;
    if (lo != Py_None && !(lab = py_as_array(lo, NPY_INT32, 1, sb, "class_labels"))) goto done;
    npy_intp sc[3] = {-1, -1, c->cross_attention_dim};
    if (co != Py_None && !(ctx = py_as_array(co, NPY_FLOAT32, 3, sc, "encoder_hidden_states")))
        goto done;
    if (ctx && PyArray_DIM(ctx, 1) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "encoder_hidden_states: too many tokens");
        goto done;
    }
    npy_intp so[4] = {sb[0], c->out_channels, PyArray_DIM(x, 2), PyArray_DIM(x, 3)};
    if (!(out = PyArray_SimpleNew(4, so, NPY_FLOAT32))) goto done;
    int status = CCFG_OK;
    if (sb[0] > 0) {
        py_run run;
        Py_BEGIN_ALLOW_THREADS
        const ccfg_backend *be = ccfg_unet_backend(obj->u);
        status = py_run_enter(&run, "the UNet's forward", be, obj->lock);
        if (!status) {
            status = ccfg_unet_forward(obj->u, sb[0], (int)so[2], (int)so[3], py_f32(x),
                                       (const double *)PyArray_DATA(t),
                                       lab ? (const int32_t *)PyArray_DATA(lab) : NULL,
                                       ctx ? py_f32(ctx) : NULL, ctx ? PyArray_DIM(ctx, 0) : 0,
                                       ctx ? (int)PyArray_DIM(ctx, 1) : 0,
                                       py_f32((PyArrayObject *)out));
            py_run_leave(&run);
        }
        Py_END_ALLOW_THREADS
    }
    if (status) {
        Py_CLEAR(out);
        py_raise_status(status);
    }
done:
    Py_XDECREF(x);
    Py_XDECREF(t);
    Py_XDECREF(lab);
    Py_XDECREF(ctx);
    return out;
}

PyObject *py_unet_plan_bytes(PyObject *self, PyObject *args)
{
    UNetObject *obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &UNetType, &obj)) return NULL;
    return PyLong_FromLongLong(ccfg_unet_plan_bytes(obj->u));
}

/* ------------------------------------------------------------------------- */
/* the UNet as a sampler model: unet_model(unet, h, w, null_class, class_of int32[,
 * contexts float32 (k, L, D) or None, counts int32 (conditions,) or None,
 * null_context float32 (k0, L, D) or None]) -> Model.
 * A class-conditional UNet: condition id c is class class_of[c], the null is null_class (-1: no
 * class input). A text-conditioned one: condition c owns counts[c] consecutive token arrays of
 * `contexts` (1 shared, or one per sample), the null the k0 of null_context (unet.h). */

typedef struct {
    ccfg_unet_model um;
    UNetObject *unet;
    PyArrayObject *class_of, *contexts, *counts, *null_context;
} unet_model_ctx;

static void unet_model_free(void *ctx)
{
    unet_model_ctx *c = ctx;
    ccfg_unet_model_free(&c->um);
    Py_XDECREF(c->unet);
    Py_XDECREF(c->class_of);
    Py_XDECREF(c->contexts);
    Py_XDECREF(c->counts);
    Py_XDECREF(c->null_context);
    PyMem_Free(c);
}

PyObject *py_unet_model(PyObject *self, PyObject *args)
{
    UNetObject *unet;
    PyObject *co, *xo = Py_None, *ko = Py_None, *no = Py_None;
    int h, w, null_class;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!iiiO|OOO", &UNetType, &unet, &h, &w, &null_class, &co, &xo, &ko,
                          &no))
        return NULL;
    unet_model_ctx *c = PyMem_Calloc(1, sizeof *c);
    if (!c) return PyErr_NoMemory();
    c->unet = (UNetObject *)Py_NewRef((PyObject *)unet);
    const int D = ccfg_unet_get_config(unet->u)->cross_attention_dim;
    npy_intp sx[3] = {-1, -1, D}, sn[3] = {-1, -1, D};
    if (!(c->class_of = py_as_array(co, NPY_INT32, 1, NULL, "class_of")) ||
        (xo != Py_None && !(c->contexts = py_as_array(xo, NPY_FLOAT32, 3, sx, "contexts"))) ||
        (ko != Py_None && !(c->counts = py_as_array(ko, NPY_INT32, 1, NULL, "counts")))) {
        unet_model_free(c);
        return NULL;
    }
    if (!c->contexts != !c->counts) {
        PyErr_SetString(PyExc_ValueError, "contexts and counts come together");
        unet_model_free(c);
        return NULL;
    }
    int64_t total = 0;
    for (npy_intp i = 0; c->counts && i < PyArray_DIM(c->counts, 0); i++) {
        const int32_t k = ((const int32_t *)PyArray_DATA(c->counts))[i];
        if (k < 1) break;
        total += k;
    }
    if (c->contexts && total != PyArray_DIM(c->contexts, 0)) {
        PyErr_SetString(PyExc_ValueError, "counts must be >= 1 and add up to len(contexts)");
        unet_model_free(c);
        return NULL;
    }
    /* the null's tokens must be as many as the conditions' (they share the planned buffers) */
    if (c->contexts) sn[1] = PyArray_DIM(c->contexts, 1);
    if (no != Py_None && !(c->null_context = py_as_array(no, NPY_FLOAT32, 3, sn, "null"))) {
        unet_model_free(c);
        return NULL;
    }
    const int ctx_len = c->contexts ? (int)PyArray_DIM(c->contexts, 1)
                        : c->null_context ? (int)PyArray_DIM(c->null_context, 1) : 0;
    const ccfg_model m = ccfg_unet_as_model(
        &c->um, unet->u, h, w, null_class,
        c->counts ? (int)PyArray_DIM(c->counts, 0) : (int)PyArray_DIM(c->class_of, 0),
        (const int32_t *)PyArray_DATA(c->class_of), c->contexts ? py_f32(c->contexts) : NULL,
        c->counts ? (const int32_t *)PyArray_DATA(c->counts) : NULL,
        c->null_context ? py_f32(c->null_context) : NULL,
        c->null_context ? (int)PyArray_DIM(c->null_context, 0) : 0, ctx_len);
    return py_model_new(m, NULL, c, unet_model_free, unet->lock);
}

int py_unet_register(PyObject *m)
{
    if (PyType_Ready(&UNetType) < 0) return -1;
    return PyModule_AddObjectRef(m, "UNet", (PyObject *)&UNetType);
}
