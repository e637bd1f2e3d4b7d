/* python/py_devices.c — what there is to run on: devices(), counter-based random numbers on
 * the host, and the device copy benchmark. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_nn.h"
#include "vk_tune.h"

PyObject *py_randn(PyObject *self, PyObject *args)
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
    ccfg_randn_host(n, dim, seed, stream, first, py_f32((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    return out;
}
PyObject *py_philox(PyObject *self, PyObject *args)
{
    unsigned int c[4], k[2];
    uint32_t out[4];
    (void)self;
    if (!PyArg_ParseTuple(args, "(IIII)(II)", &c[0], &c[1], &c[2], &c[3], &k[0], &k[1])) return NULL;
    const uint32_t cc[4] = {c[0], c[1], c[2], c[3]}, kk[2] = {k[0], k[1]};
    ccfg_philox4x32(cc, kk, out);
    return Py_BuildValue("(IIII)", out[0], out[1], out[2], out[3]);
}

/* the details one kind of backend adds to its entries (a new backend may add none) */
/* {"VK_NV_cooperative_matrix": [shape, ...], "VK_KHR_cooperative_matrix": [...]} for the
 * extensions the device has (their feature on), each shape a dict of M, N, K, the A, B, C and
 * result types ("float16", "float32", ... or the number) and the scope */
static PyObject *coop_shapes(const ccfg_vk_device_info *v)
{
    static const char *const types[] = {"float16", "float32", "float64", "sint8", "sint16",
                                        "sint32", "sint64", "uint8", "uint16", "uint32", "uint64"};
    PyObject *out = PyDict_New(), *lists[2] = {NULL, NULL};
    if (!out) return NULL;
    const int has[2] = {v->coop_nv, v->coop_khr};
    static const char *const ext[2] = {"VK_NV_cooperative_matrix", "VK_KHR_cooperative_matrix"};
    for (int e = 0; e < 2; e++) {
        if (!has[e]) continue;
        if (!(lists[e] = PyList_New(0)) || PyDict_SetItemString(out, ext[e], lists[e])) goto fail;
    }
    for (int i = 0; i < v->ncoop; i++) {
        const ccfg_vk_coop_shape *c = &v->coop[i];
        PyObject *list = lists[c->khr ? 1 : 0], *item;
        if (!list) continue;
        const uint32_t t[4] = {c->a, c->b, c->c, c->result};
        PyObject *names[4];
        for (int j = 0; j < 4; j++)
            names[j] = t[j] < sizeof types / sizeof *types ? PyUnicode_FromString(types[t[j]])
                                                           : PyLong_FromUnsignedLong(t[j]);
        item = Py_BuildValue("{s:I,s:I,s:I,s:N,s:N,s:N,s:N,s:s}", "M", c->m, "N", c->n, "K",
                             c->k, "A", names[0], "B", names[1], "C", names[2], "result",
                             names[3], "scope",
                             c->scope == 3 ? "subgroup" : c->scope == 2 ? "workgroup" : "other");
        if (!item || PyList_Append(list, item)) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    Py_XDECREF(lists[0]);
    Py_XDECREF(lists[1]);
    return out;
fail:
    Py_XDECREF(lists[0]);
    Py_XDECREF(lists[1]);
    Py_DECREF(out);
    return NULL;
}

/* the CCFG_VULKAN_PRECISION values the device runs ("auto" always: the best of these) */
static PyObject *precisions(const ccfg_vk_device_info *v)
{
    static const char *const names[3] = {"fp32", "fp16", "coop"};
    PyObject *list = PyList_New(0);
    for (int b = 0; list && b < 3; b++) {
        if (!(v->precisions & (1 << b))) continue;
        PyObject *s = PyUnicode_FromString(names[b]);
        if (!s || PyList_Append(list, s)) {
            Py_XDECREF(s);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(s);
    }
    return list;
}

static int backend_details(PyObject *d, const ccfg_device *dev)
{
    if (!strcmp(dev->backend, "cpu"))
        return py_dict_set(d, "threads", PyLong_FromLong(omp_get_max_threads()));
    if (!strcmp(dev->backend, "vulkan") && dev->index >= 0) {
        const ccfg_vk_device_info *info, *v = NULL;
        int count;
        ccfg_vk_devices(&info, &count);
        for (int i = 0; i < count; i++)
            if (info[i].index == dev->index) v = &info[i];
        if (!v) return 0;
        return py_dict_set(d, "vendor_id", PyLong_FromUnsignedLong(v->vendor_id)) ||
               py_dict_set(d, "device_id", PyLong_FromUnsignedLong(v->device_id)) ||
               py_dict_set(d, "api_version",
                           PyUnicode_FromFormat("%u.%u.%u", v->api_version >> 22,
                                                (v->api_version >> 12) & 0x3ffu,
                                                v->api_version & 0xfffu)) ||
               py_dict_set(d, "driver", PyUnicode_FromString(v->driver_name)) ||
               py_dict_set(d, "driver_info", PyUnicode_FromString(v->driver_info)) ||
               py_dict_set(d, "device_local_bytes",
                           PyLong_FromUnsignedLongLong(v->device_local_bytes)) ||
               py_dict_set(d, "subgroup_size", PyLong_FromUnsignedLong(v->subgroup_size)) ||
               py_dict_set(d, "max_storage_buffer_range",
                           PyLong_FromUnsignedLong(v->max_storage_buffer_range)) ||
               py_dict_set(d, "max_workgroup_invocations",
                           PyLong_FromUnsignedLong(v->max_workgroup_invocations)) ||
               py_dict_set(d, "max_shared_memory", PyLong_FromUnsignedLong(v->max_shared_memory)) ||
               py_dict_set(d, "float64", PyBool_FromLong(v->float64)) ||
               py_dict_set(d, "storage_16bit", PyBool_FromLong(v->storage16)) ||
               py_dict_set(d, "float16", PyBool_FromLong(v->float16)) ||
               py_dict_set(d, "vulkan_memory_model", PyBool_FromLong(v->memory_model)) ||
               py_dict_set(d, "cooperative_matrix", coop_shapes(v)) ||
               py_dict_set(d, "precisions", precisions(v));
    }
    return 0;
}

/* devices() -> one dict per device of every registered backend (csrc/backend.c): backend,
 * selector (the name ccfg_backend_open takes), index (indexed backends), name, type, available,
 * and the backend's details; a backend without devices appears once with available False and a
 * note saying why */
PyObject *py_devices(PyObject *self, PyObject *args)
{
    const ccfg_device *devs;
    int count;
    PyObject *list = NULL, *d = NULL;
    (void)self; (void)args;
    ccfg_devices(&devs, &count);
    if (!(list = PyList_New(0))) return NULL;
    for (int i = 0; i < count; i++) {
        const ccfg_device *v = &devs[i];
        if (!(d = PyDict_New())) goto fail;
        if (py_dict_set(d, "backend", PyUnicode_FromString(v->backend)) ||
            py_dict_set(d, "available", PyBool_FromLong(v->available)))
            goto fail;
        if (v->note) {
            if (py_dict_set(d, "note", PyUnicode_FromString(v->note))) goto fail;
        } else if (py_dict_set(d, "selector", PyUnicode_FromString(v->name)) ||
                   py_dict_set(d, "name", PyUnicode_FromString(v->label)) ||
                   py_dict_set(d, "type", PyUnicode_FromString(v->type)) ||
                   (v->index >= 0 && py_dict_set(d, "index", PyLong_FromLong(v->index))) ||
                   backend_details(d, v)) {
            goto fail;
        }
        if (PyList_Append(list, d)) goto fail;
        Py_CLEAR(d);
    }
    return list;
fail:
    Py_XDECREF(d);
    Py_DECREF(list);
    return NULL;
}

/* vk_copy_bench(device, bytes, repeats, mode=0) -> seconds per copy (mode 0: shaders/copy.comp,
 * 1: vkCmdCopyBuffer; device time where the queue has timestamps); device is a Vulkan device's
 * name ("vulkan:N") */
PyObject *py_vk_copy_bench(PyObject *self, PyObject *args)
{
    int repeats, status, index = -1, mode = 0;
    const char *device;
    unsigned long long bytes;
    double sec = 0.0;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "sKi|i", &device, &bytes, &repeats, &mode)) return NULL;
    if (repeats < 1) {
        PyErr_SetString(PyExc_ValueError, "repeats must be >= 1");
        return NULL;
    }
    if (sscanf(device, "vulkan:%d", &index) != 1 || index < 0) {
        PyErr_Format(PyExc_ValueError, "device: the copy benchmark needs 'vulkan:N', got '%s'",
                     device);
        return NULL;
    }
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "the copy benchmark", be, NULL))) {
        status = ccfg_vk_copy_bench(index, (size_t)bytes, repeats, mode, &sec);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) return py_raise_status(status);
    return PyFloat_FromDouble(sec);
}

/* vk_profile(device, action) -> {"kinds": [(kind, count, ms)...], "batches", "unstamped",
 * "wait_ms"}: action "start" (clears), "stop" or "read"; device is "vulkan:N" (ccfg.profiling) */
PyObject *py_vk_profile(PyObject *self, PyObject *args)
{
    const char *device, *action;
    int index = -1, act, status, count = 0;
    ccfg_vk_profile_entry entries[64];
    ccfg_vk_profile_totals totals = {0};
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "ss", &device, &action)) return NULL;
    if (!strcmp(action, "start")) act = 1;
    else if (!strcmp(action, "stop")) act = 0;
    else if (!strcmp(action, "read")) act = 2;
    else {
        PyErr_Format(PyExc_ValueError, "action: 'start', 'stop' or 'read', got '%s'", action);
        return NULL;
    }
    if (sscanf(device, "vulkan:%d", &index) != 1 || index < 0) {
        PyErr_Format(PyExc_ValueError, "device: only Vulkan devices are profiled ('vulkan:N'), "
                     "got '%s'", device);
        return NULL;
    }
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "the profile", be, NULL))) {
        status = ccfg_vk_profile(index, act, entries, 64, &count, &totals);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) return py_raise_status(status);
    PyObject *kinds = PyList_New(count);
    if (!kinds) return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *t = Py_BuildValue("(sKd)", entries[i].kind, (unsigned long long)entries[i].count,
                                    entries[i].ms);
        if (!t) {
            Py_DECREF(kinds);
            return NULL;
        }
        PyList_SET_ITEM(kinds, i, t);
    }
    return Py_BuildValue("{s:N,s:K,s:K,s:d}", "kinds", kinds, "batches",
                         (unsigned long long)totals.batches, "unstamped",
                         (unsigned long long)totals.unstamped, "wait_ms", totals.wait_ms);
}

/* vk_tuning(device, action[, path]) -> {"entries": [{"family", "key": {field: value},
 * "candidates": [(name, median ms, [ms of each timed run])], "choice": name, "loaded": bool}],
 * "tuned", "hits", "runs", "loaded"}: the autotuner's decisions on "vulkan:N" (vk_tune.h;
 * ccfg.profiling.tuning); action "read", or "clear" (forgets them and zeroes the counters, then
 * returns the empty state). With a path: "save" -> the decisions written; "load" -> (applied,
 * lines of other devices); "identity" (no path) -> the device's identity as the file writes it.
 * File errors name `path` (ccfg.profiling.save_tuning / load_tuning's argument). */
PyObject *py_vk_tuning(PyObject *self, PyObject *args)
{
    const char *device, *action, *path = NULL;
    int index = -1, status, count = 0, clear = 0, applied = 0, other = 0;
    enum { READ, CLEAR, SAVE, LOAD, IDENTITY } act;
    char id[CCFG_VK_TUNE_ID_LEN] = "";
    ccfg_vk_tune_entry *entries = NULL;
    ccfg_vk_tune_stats stats = {0};
    const ccfg_backend *be = NULL;
    PyObject *list = NULL, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "ss|s", &device, &action, &path)) return NULL;
    if (!strcmp(action, "read")) act = READ;
    else if (!strcmp(action, "clear")) act = CLEAR;
    else if (!strcmp(action, "save")) act = SAVE;
    else if (!strcmp(action, "load")) act = LOAD;
    else if (!strcmp(action, "identity")) act = IDENTITY;
    else {
        PyErr_Format(PyExc_ValueError, "action: 'read', 'clear', 'save', 'load' or 'identity', "
                     "got '%s'", action);
        return NULL;
    }
    if ((act == SAVE || act == LOAD) && (!path || !*path)) {
        PyErr_SetString(PyExc_ValueError, "path: a file name is needed to save or load");
        return NULL;
    }
    clear = act == CLEAR;
    if (sscanf(device, "vulkan:%d", &index) != 1 || index < 0) {
        PyErr_Format(PyExc_ValueError, "device: only Vulkan devices are tuned ('vulkan:N'), "
                     "got '%s'", device);
        return NULL;
    }
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "the tuning cache", be, NULL))) {
        if (act == SAVE) status = ccfg_vk_tune_save(be, path, "path", &count);
        else if (act == LOAD) status = ccfg_vk_tune_load(be, path, "path", 0, &applied, &other);
        else if (act == IDENTITY) status = ccfg_vk_tune_identity(be, id);
        else {
            if (clear) status = ccfg_vk_tune_clear(be);
            if (!status) status = ccfg_vk_tune_snapshot(be, &entries, &count, &stats);
        }
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) return py_raise_status(status);
    if (act == SAVE) return PyLong_FromLong(count);
    if (act == LOAD) return Py_BuildValue("(ii)", applied, other);
    if (act == IDENTITY) return PyUnicode_FromString(id);
    if (!(list = PyList_New(count))) goto done;
    for (int i = 0; i < count; i++) {
        const ccfg_vk_tune_entry *e = &entries[i];
        PyObject *key = PyDict_New(), *cands = PyList_New(e->n), *entry = NULL;
        int ok = key && cands;
        for (int j = 0; ok && j < e->nkey; j++) {
            PyObject *v = PyLong_FromLongLong((long long)e->key[j]);
            ok = v && PyDict_SetItemString(key, e->key_names[j], v) == 0;
            Py_XDECREF(v);
        }
        for (int c = 0; ok && c < e->n; c++) {
            PyObject *runs = PyList_New(CCFG_VK_TUNE_RUNS), *t = NULL;
            ok = runs != NULL;
            for (int r = 0; ok && r < CCFG_VK_TUNE_RUNS; r++) {
                PyObject *v = PyFloat_FromDouble(e->ms[c][r]);
                if (!v) ok = 0;
                else PyList_SET_ITEM(runs, r, v);
            }
            if (ok) ok = (t = Py_BuildValue("(sdN)", e->names[c], e->median_ms[c], runs)) != NULL;
            else Py_XDECREF(runs);
            if (ok) PyList_SET_ITEM(cands, c, t);
        }
        if (ok)
            entry = Py_BuildValue("{s:s,s:O,s:O,s:s,s:O}", "family", e->family, "key", key,
                                  "candidates", cands, "choice", e->names[e->choice], "loaded",
                                  e->loaded ? Py_True : Py_False);
        Py_XDECREF(key);
        Py_XDECREF(cands);
        if (!entry) goto done;
        PyList_SET_ITEM(list, i, entry);
    }
    result = Py_BuildValue("{s:O,s:K,s:K,s:K,s:K}", "entries", list, "tuned",
                           (unsigned long long)stats.tuned, "hits", (unsigned long long)stats.hits,
                           "runs", (unsigned long long)stats.runs, "loaded",
                           (unsigned long long)stats.loaded);
done:
    Py_XDECREF(list);
    free(entries);
    return result;
}

/* vk_set_precision(device, which): test hook (tests/test_vulkan_half.py): the convolutions'
 * precision of the device "vulkan:N" changed in place, as if it had opened under another
 * CCFG_VULKAN_PRECISION: "fp32", or "opened": back to the precision it opened with */
PyObject *py_vk_set_precision(PyObject *self, PyObject *args)
{
    const char *device, *name;
    int index = -1, precision, status;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "ss", &device, &name)) return NULL;
    if (sscanf(device, "vulkan:%d", &index) != 1 || index < 0) {
        PyErr_Format(PyExc_ValueError, "device: 'vulkan:N', got '%s'", device);
        return NULL;
    }
    if (!strcmp(name, "fp32")) precision = CCFG_VK_PRECISION_FP32;
    else if (!strcmp(name, "opened")) precision = -1;
    else {
        PyErr_Format(PyExc_ValueError, "which: 'fp32' or 'opened', got '%s'", name);
        return NULL;
    }
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "vk_set_precision", be, NULL))) {
        status = ccfg_vk_nn_set_precision(be, precision);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) return py_raise_status(status);
    Py_RETURN_NONE;
}
