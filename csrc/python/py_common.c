/* python/py_common.c — errors, array conversion and backends by name, for every binding. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <math.h>
#include <string.h>

PyObject *py_raise_status(int status)
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

PyArrayObject *py_as_array(PyObject *obj, int type, int ndim, const npy_intp *shape,
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

PyObject *py_new_2d(int64_t n, int64_t dim, const float *src)
{
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    PyObject *a = PyArray_SimpleNew(2, shape, NPY_FLOAT32);
    if (a && n > 0 && dim > 0)
        memcpy(PyArray_DATA((PyArrayObject *)a), src, (size_t)(n * dim) * sizeof(float));
    return a;
}

int py_take_result(PyObject *res, int64_t rows, int64_t dim, float *out, const char *what)
{
    if (!res) return CCFG_ECANCEL;
    npy_intp shape[2] = {(npy_intp)rows, (npy_intp)dim};
    PyArrayObject *a = py_as_array(res, NPY_FLOAT32, 2, shape, what);
    Py_DECREF(res);
    if (!a) return CCFG_ECANCEL;
    memcpy(out, PyArray_DATA(a), (size_t)(rows * dim) * sizeof(float));
    Py_DECREF(a);
    return CCFG_OK;
}

int py_array_list(PyObject *list, int64_t n, int64_t dim, PyArrayObject **arrs,
                  const float **ptrs, int max, int *count, const char *name)
{
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list", name);
        return -1;
    }
    Py_ssize_t k = PyList_GET_SIZE(list);
    if (k > max) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d negatives", name, max);
        return -1;
    }
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    for (Py_ssize_t j = 0; j < k; j++) {
        arrs[j] = py_as_array(PyList_GET_ITEM(list, j), NPY_FLOAT32, 2, shape, name);
        if (!arrs[j]) return -1;
        ptrs[j] = py_f32(arrs[j]);
        *count = (int)j + 1;
    }
    return 0;
}

int py_dict_set(PyObject *d, const char *key, PyObject *v)
{
    int rc = v ? PyDict_SetItemString(d, key, v) : -1;
    Py_XDECREF(v);
    return rc;
}

int py_open_backend(const char *name, const ccfg_backend **be)
{
    return ccfg_backend_open(name, be);
}

/* ------------------------------------------------------------------------- */
/* runs and callbacks (py.h) */

static _Thread_local py_run *current_run;

/* the CPU backend's lock does nothing: holding it twice is no deadlock */
static int device_lock_blocks(const ccfg_backend *be) { return be && be != ccfg_backend_cpu(); }

int py_run_enter(py_run *r, const char *what, const ccfg_backend *be, PyThread_type_lock model_lock)
{
    for (const py_run *o = current_run; o; o = o->outer) {
        if (!o->held) continue;
        if (model_lock && o->model_lock == model_lock)
            return ccfg_fail(CCFG_EINTERNAL, "re-entrant call: %s uses a model that %s is already "
                             "using in this thread (call it from a progress callback, a "
                             "PythonModel or a PythonRule instead)", what, o->what);
        if (o->be == be && device_lock_blocks(be))
            return ccfg_fail(CCFG_EINTERNAL, "re-entrant call: %s is already running on device "
                             "%s in this thread (call %s from a progress callback, a PythonModel "
                             "or a PythonRule instead)", o->what, be->name, what);
    }
    r->what = what;
    r->be = be;
    r->model_lock = model_lock;
    if (model_lock) PyThread_acquire_lock(model_lock, WAIT_LOCK);
    if (be) be->lock(be, 1);
    r->held = 1;
    r->outer = current_run;
    current_run = r;
    return CCFG_OK;
}

int py_run_holds(const ccfg_backend *be)
{
    for (const py_run *o = current_run; o; o = o->outer)
        if (o->held && o->be == be) return 1;
    return 0;
}

void py_run_leave(py_run *r)
{
    if (r->held) {
        if (r->be) r->be->lock(r->be, 0);
        if (r->model_lock) PyThread_release_lock(r->model_lock);
        r->held = 0;
    }
    current_run = r->outer;
}

int py_callback_enter(py_callback *cb)
{
    py_run *r = current_run;
    int status;
    cb->run = NULL;
    cb->tag = -1;
    /* only the run's own C code (GIL released) lets go of it: a callback reached from Python
     * code that runs inside the run (a signal handler) leaves the locks alone */
    if (!r || !r->held || PyGILState_Check()) return CCFG_OK;
    /* the device runs what is recorded, and its non-finite watch is read (a run the callback
     * starts clears it) */
    if (r->be && (status = r->be->first_nonfinite(r->be, &cb->tag))) return status;
    if (r->be) r->be->lock(r->be, 0);
    if (r->model_lock) PyThread_release_lock(r->model_lock);
    r->held = 0;
    cb->run = r;
    return CCFG_OK;
}

int py_callback_leave(py_callback *cb)
{
    py_run *r = cb->run;
    int status = CCFG_OK;
    if (!r) return CCFG_OK;
    if (r->model_lock) PyThread_acquire_lock(r->model_lock, WAIT_LOCK);
    if (r->be) r->be->lock(r->be, 1);
    r->held = 1;
    cb->run = NULL;
    if (cb->tag >= 0 && r->be) {
        /* report it again: a NaN watched under the same tag */
        const float nan = NAN;
        float *p = NULL;
        if (!(status = r->be->alloc(r->be, sizeof nan, &p)) &&
            !(status = r->be->upload(r->be, p, &nan, sizeof nan)))
            status = r->be->watch_finite(r->be, 1, p, cb->tag);
        r->be->release(r->be, p);
    }
    return status;
}
