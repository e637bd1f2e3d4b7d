/* python/py_classifier.c — the evaluation classifier type (csrc/classifier.h): ccfg/classifier.py
 * reads config.json and the safetensors file, checks names and shapes, and passes the layer list
 * and one parameter vector. A lock per model serialises Python threads (the planned activations
 * are shared). */
#include "python/py.h"
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
PyObject *py_classifier_new(PyObject *self, PyObject *args)
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
    if (!(params = py_as_array(po, NPY_FLOAT32, 1, NULL, "params"))) goto done;
    if (!(obj = PyObject_New(ClassifierObject, &ClassifierType))) goto done;
    obj->c = NULL;
    if (!(obj->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = ccfg_classifier_create(layers, (int)n, c, h, w, features_layer, py_f32(params),
                                    (int64_t)PyArray_DIM(params, 0), &obj->c);
    Py_END_ALLOW_THREADS
    if (status) {
        py_raise_status(status);
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
PyObject *py_classifier_forward(PyObject *self, PyObject *args)
{
    ClassifierObject *obj;
    PyObject *xo, *logits = NULL, *feats = NULL, *result = NULL;
    PyArrayObject *x = NULL;
    int status = CCFG_OK;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &ClassifierType, &obj, &xo)) return NULL;
    if (!(x = py_as_array(xo, NPY_FLOAT32, 4, NULL, "images"))) goto done;
    const npy_intp n = PyArray_DIM(x, 0);
    npy_intp sl[2] = {n, ccfg_classifier_outputs(obj->c)};
    npy_intp sf[2] = {n, ccfg_classifier_features(obj->c)};
    if (!(logits = PyArray_SimpleNew(2, sl, NPY_FLOAT32))) goto done;
    if (!(feats = PyArray_SimpleNew(2, sf, NPY_FLOAT32))) goto done;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(obj->lock, WAIT_LOCK);
    status = ccfg_classifier_forward(obj->c, (int64_t)n, py_f32(x), py_f32((PyArrayObject *)logits),
                                     sf[1] ? py_f32((PyArrayObject *)feats) : NULL);
    PyThread_release_lock(obj->lock);
    Py_END_ALLOW_THREADS
    if (status) {
        py_raise_status(status);
        goto done;
    }
    result = PyTuple_Pack(2, logits, feats);
done:
    Py_XDECREF(x);
    Py_XDECREF(logits);
    Py_XDECREF(feats);
    return result;
}

int py_classifier_register(PyObject *m)
{
    if (PyType_Ready(&ClassifierType) < 0) return -1;
    return PyModule_AddObjectRef(m, "Classifier", (PyObject *)&ClassifierType);
}

