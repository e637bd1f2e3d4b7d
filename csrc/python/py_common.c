/* python/py_common.c — errors, array conversion and backends by name, for every binding. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

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
