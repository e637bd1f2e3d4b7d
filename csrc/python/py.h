/* python/py.h — what the files of the CPython module ccfg._core share: the NumPy C API set-up,
 * status -> exception mapping, array conversion and the backend by name.
 *
 * The module is split by Python-facing concern, each file readable top to bottom:
 *   module.c        the method table and module init (nothing else)
 *   py_common.c     errors, arrays, backends by name (this header's functions)
 *   py_guide.c      rules by name, ccfg.guide, the guidance state type, observe
 *   py_models.c     model objects handed to sample (mixture, Python callable), mixture eps
 *   py_sample.c     schedules (plan) and the whole sampling loop
 *   py_unet.c       the UNet type: create, forward, and its sampler model
 *   py_classifier.c the evaluation classifier type
 *   py_devices.c    devices(), random numbers, the copy benchmark
 *   py_testhooks.c  single backend ops for the op-by-op tests (vk_op, nn_op)
 * The GIL is released around C work; callbacks into Python take it back. */
#ifndef CCFG_PY_H
#define CCFG_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
/* one NumPy API table for all files of the module; module.c imports it */
#define PY_ARRAY_UNIQUE_SYMBOL ccfg_ARRAY_API
#ifndef CCFG_PY_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "ccfg.h"

enum { PY_MAX_NEGATIVES = CCFG_MAX_RULE_NEGATIVES };

/* ---- errors: a ccfg status as the matching Python exception; returns NULL */
PyObject *py_raise_status(int status);

/* ---- arrays */
/* A C-contiguous array of `type` with ndim dims; shape entries < 0 are free. New reference. */
PyArrayObject *py_as_array(PyObject *obj, int type, int ndim, const npy_intp *shape,
                           const char *name);
static inline float *py_f32(PyArrayObject *a) { return (float *)PyArray_DATA(a); }
/* copy of a C buffer as a new (n, dim) float32 array */
PyObject *py_new_2d(int64_t n, int64_t dim, const float *src);
/* the result of a callback -> out (rows, dim); takes the reference; returns a status */
int py_take_result(PyObject *res, int64_t rows, int64_t dim, float *out, const char *what);
/* a list of (n, dim) float32 arrays -> new references in arrs[], pointers in ptrs[] */
int py_array_list(PyObject *list, int64_t n, int64_t dim, PyArrayObject **arrs,
                  const float **ptrs, int max, int *count, const char *name);
/* d[key] = v, stealing v; -1 on error */
int py_dict_set(PyObject *d, const char *key, PyObject *v);

/* ---- backends: opened by name ("cpu", "vulkan:0"); call with the GIL released (opening a
 * device the first time takes a while) */
int py_open_backend(const char *name, const ccfg_backend **be);

/* ---- runs: the locks a call holds while C computes (GIL released), per thread.
 * A call that computes on a device takes the model's lock (a UNet's, or NULL) and then the
 * device's, through py_run_enter, and lets go with py_run_leave. A callback into Python from
 * inside a run (progress, a Python model or rule) is bracketed by py_callback_enter/leave, which
 * let go of the innermost run's locks meanwhile (after the device has run what was recorded;
 * a pending non-finite report is kept and re-reported): the callback may call ccfg.guide,
 * ccfg.sample or the same UNet on the same device, and other threads may use them. Python code
 * that runs while a run holds its locks (a signal handler in a Ctrl-C check) and calls in again
 * gets CCFG_EINTERNAL ("re-entrant call: ...", a RuntimeError) from py_run_enter instead of
 * waiting for itself forever. */
typedef struct py_run py_run;
struct py_run {
    const char *what;               /* "ccfg.sample", ... (for the re-entrancy message) */
    const ccfg_backend *be;
    PyThread_type_lock model_lock;  /* NULL: none */
    int held;                       /* the locks are held (not let go by a callback) */
    py_run *outer;                  /* the enclosing run of this thread, or NULL */
};
typedef struct {
    py_run *run;                    /* the run let go of, or NULL */
    int tag;                        /* its pending non-finite report (-1: none) */
} py_callback;
int py_run_enter(py_run *r, const char *what, const ccfg_backend *be, PyThread_type_lock model_lock);
void py_run_leave(py_run *r);
/* 1 if a run of this thread holds be's lock now (a deallocator then frees without taking it) */
int py_run_holds(const ccfg_backend *be);
/* both without the GIL: enter before taking it, leave after giving it back */
int py_callback_enter(py_callback *cb);
int py_callback_leave(py_callback *cb);

/* ---- objects shared between files */
/* a rule by name with its parameters by name: spec = (name, {param: value}) (ccfg/guidance.py
 * Rule._c_spec); a Python rule ("python") carries its function as params["fn"] */
int py_parse_rule(PyObject *spec, ccfg_rule *rule);
/* the model objects (py_models.c): what sample() takes as its model */
typedef struct py_model py_model;
extern PyTypeObject py_ModelType;
/* a new model object around `model`: `owner` (a reference is taken) and `data` (freed by
 * data_free when the object dies) keep what model.ctx points into alive; `lock` (may be NULL, not
 * owned: a UNet's) serialises runs of one model between threads: runs take it before the
 * device's lock (py_run_enter) */
PyObject *py_model_new(ccfg_model model, PyObject *owner, void *data, void (*data_free)(void *),
                       PyThread_type_lock lock);
const ccfg_model *py_model_get(PyObject *obj);
PyThread_type_lock py_model_lock(PyObject *obj);

#endif /* CCFG_PY_H */
