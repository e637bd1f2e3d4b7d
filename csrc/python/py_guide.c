/* python/py_guide.c — rules by name, ccfg.guide on arrays, the guidance state, observe.
 *
 * A rule crosses from Python as (name, {parameter: value}) (ccfg/guidance.py Rule._c_spec):
 * the name picks the record from the C registry (rules/registry.c), each parameter is set by
 * name, and every parameter the rule declares must be given. "python" is the one rule defined
 * here: a Python function called back on host arrays. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <math.h>
#include <string.h>

#include "rules/rule.h"

/* ------------------------------------------------------------------------- */
/* the Python rule: fn(eps_u, eps_p, [eps_n...]) -> eps, on (n, dim) float32 arrays */

static int python_rule_host(const ccfg_rule *r, int64_t n, int64_t dim, const float *eps_u,
                            const float *eps_p, int k, const float *const *eps_n, float *out)
{
    py_callback cb;
    int status = py_callback_enter(&cb);       /* the run's locks, let go meanwhile */
    if (status) return status;
    PyGILState_STATE g = PyGILState_Ensure();
    status = CCFG_ECANCEL;
    PyObject *u = py_new_2d(n, dim, eps_u), *p = py_new_2d(n, dim, eps_p), *lst = PyList_New(k);
    if (!u || !p || !lst) goto done;
    for (int j = 0; j < k; j++) {
        PyObject *a = py_new_2d(n, dim, eps_n[j]);
        if (!a) goto done;
        PyList_SET_ITEM(lst, j, a);
    }
    status = py_take_result(PyObject_CallFunctionObjArgs((PyObject *)r->host_ctx, u, p, lst, NULL),
                            n, dim, out, "the PythonRule's result");
done:
    Py_XDECREF(u);
    Py_XDECREF(p);
    Py_XDECREF(lst);
    PyGILState_Release(g);
    const int back = py_callback_leave(&cb);
    return status ? status : back;
}

static const ccfg_rule_impl python_rule = {
    .name = "python",
    .uses_negatives = 1,
    .host = python_rule_host,
};

int py_parse_rule(PyObject *spec, ccfg_rule *r)
{
    const char *name;
    PyObject *params, *key, *value;
    Py_ssize_t pos = 0;
    memset(r, 0, sizeof *r);
    if (!PyArg_ParseTuple(spec, "sO!;a rule spec is (name, {parameter: value})", &name,
                          &PyDict_Type, &params))
        return -1;
    const ccfg_rule_impl *impl = !strcmp(name, "python") ? &python_rule : ccfg_rule_find(name);
    if (!impl) {
        PyErr_Format(PyExc_ValueError, "unknown rule %s", name);
        return -1;
    }
    if (ccfg_rule_init(r, impl)) {
        py_raise_status(CCFG_EINTERNAL);
        return -1;
    }
    while (PyDict_Next(params, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "rule parameters are named by strings");
            return -1;
        }
        if (impl == &python_rule && !strcmp(k, "fn")) {
            if (!PyCallable_Check(value)) {
                PyErr_SetString(PyExc_TypeError, "PythonRule needs a callable");
                return -1;
            }
            r->host_ctx = value;          /* borrowed: the spec outlives the call */
            continue;
        }
        double v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "rule %s: parameter %s must be a number", name, k);
            return -1;
        }
        if (ccfg_rule_set(r, k, v)) {
            py_raise_status(CCFG_EINVAL);
            return -1;
        }
    }
    const char *const *own = ccfg_rule_param_names(impl);
    for (int i = 0; own[i]; i++)
        if (!PyDict_GetItemString(params, own[i])) {
            PyErr_Format(PyExc_ValueError, "rule %s: parameter %s is missing", name, own[i]);
            return -1;
        }
    if (impl == &python_rule && !r->host_ctx) {
        PyErr_SetString(PyExc_TypeError, "PythonRule needs a callable");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* the guidance state as a Python object (opaque; ccfg/sampling.py's GuidanceState wraps it) */

typedef struct {
    PyObject_HEAD
    ccfg_guide_state st;
} StateObject;

static void state_dealloc(StateObject *self)
{
    const ccfg_backend *be = self->st.be;
    if (be && !be->synchronous && !py_run_holds(be)) {
        /* device memory is released under the device's lock, which a sampling thread may hold
         * (this thread may hold it already: a signal handler's object dies inside a run) */
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

/* guide_state(rule_spec, n, dim, n_neg, device) -> GuideState on that device */
PyObject *py_guide_state(PyObject *self, PyObject *args)
{
    PyObject *spec;
    const char *device;
    long long n, dim;
    int n_neg, status;
    ccfg_rule rule;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!LLis", &PyTuple_Type, &spec, &n, &dim, &n_neg, &device))
        return NULL;
    if (py_parse_rule(spec, &rule)) return NULL;
    StateObject *st = PyObject_New(StateObject, &StateType);
    if (!st) return NULL;
    memset(&st->st, 0, sizeof st->st);
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "ccfg.guide", be, NULL))) {
        status = ccfg_guide_state_init(&st->st, be, &rule, n, dim, n_neg);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        memset(&st->st, 0, sizeof st->st);      /* init freed what it had */
        Py_DECREF(st);
        return py_raise_status(status);
    }
    return (PyObject *)st;
}

/* state_info(state) -> {step, n, dim, n_neg, host: float64 | None, device: float32 | None}
 * (copies). host: what the state shows as host doubles (ccfg_guide_state_values: DNG's
 * posterior p, read from the device where it lives there); device_state: backend floats (SLD's
 * momentum), None for a state in the backend's reals (DNG's log p on a device). */
PyObject *py_state_info(PyObject *self, PyObject *args)
{
    StateObject *so;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!", &StateType, &so)) return NULL;
    const ccfg_guide_state *st = &so->st;
    const ccfg_backend *be = st->be;
    PyObject *host = Py_NewRef(Py_None), *dev = Py_NewRef(Py_None);
    double *values = NULL;
    int64_t nvalues = 0;
    int status = CCFG_OK;
    const int floats = st->device && !st->device_reals;
    if (floats) {
        npy_intp sh[1] = {(npy_intp)st->device_count};
        Py_SETREF(dev, PyArray_SimpleNew(1, sh, NPY_FLOAT32));
        if (!dev) goto fail;
    }
    if (st->host || st->device) {
        py_run run;
        Py_BEGIN_ALLOW_THREADS
        if (!(status = py_run_enter(&run, "reading a guidance state", be, NULL))) {
            status = ccfg_guide_state_values(st, &values, &nvalues);
            if (!status && floats)
                status = be->download(be, PyArray_DATA((PyArrayObject *)dev), st->device,
                                      (size_t)st->device_count * sizeof(float));
            py_run_leave(&run);
        }
        Py_END_ALLOW_THREADS
        if (status) {
            py_raise_status(status);
            goto fail;
        }
    }
    if (values) {
        npy_intp sh[1] = {(npy_intp)nvalues};
        Py_SETREF(host, PyArray_SimpleNew(1, sh, NPY_FLOAT64));
        if (!host) goto fail;
        memcpy(PyArray_DATA((PyArrayObject *)host), values, (size_t)nvalues * sizeof(double));
        free(values);
        values = NULL;
    }
    return Py_BuildValue("{s:i,s:L,s:L,s:i,s:s,s:s,s:N,s:N}", "step", st->step, "n",
                         (long long)st->n, "dim", (long long)st->dim, "n_neg", st->n_neg, "rule",
                         ccfg_rule_name(st->impl), "device", st->be ? st->be->name : "", "host",
                         host, "device_state", dev);
fail:
    free(values);
    Py_XDECREF(host);
    Py_XDECREF(dev);
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* guide and observe: NumPy in, NumPy out; on a device the inputs are uploaded and the result
 * downloaded */

static int guide_on(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st, int64_t n,
                    int64_t dim, const float *u, const float *p, int k, const float *const *neg,
                    int step, int num_steps, double alpha_bar, float *out)
{
    const size_t count = (size_t)n * (size_t)dim;
    float *du = NULL, *dp = NULL, *dout = NULL, *dn[PY_MAX_NEGATIVES] = {0};
    int status;
    if (be->host_memory)
        return ccfg_guide_at(be, rule, st, n, dim, u, p, k, neg, step, num_steps, alpha_bar, 1,
                             out);
    if ((status = ccfg_backend_from_host(be, u, count, &du)) ||
        (p && (status = ccfg_backend_from_host(be, p, count, &dp))))
        goto done;
    for (int j = 0; j < k; j++)
        if ((status = ccfg_backend_from_host(be, neg[j], count, &dn[j]))) goto done;
    if ((status = be->alloc(be, count * sizeof(float), &dout)) ||
        (status = ccfg_guide_at(be, rule, st, n, dim, du, dp, k, (const float *const *)dn, step,
                                num_steps, alpha_bar, 1, dout)))
        goto done;
    status = be->download(be, out, dout, count * sizeof(float));
done:
    ccfg_backend_drop(be, du);
    ccfg_backend_drop(be, dp);
    ccfg_backend_drop(be, dout);
    for (int j = 0; j < k; j++) ccfg_backend_drop(be, dn[j]);
    return status;
}

/* NaN/Inf checks of a guide call (when the caller hands the names to use in messages). On the CPU,
 * a rule with a coefficient form reads every input in its reductions and the kernels report
 * NaN/Inf as they go (ccfg_cpu_guide_flags): no pass of its own over the inputs; every other
 * path scans its inputs first (so a stateful rule never learns from them) and the result after
 * unless a CPU combine wrote it last (it flags what it writes). */
typedef struct {
    int inputs_folded, output_folded;
} guide_checks;

static guide_checks guide_checks_for(const ccfg_backend *be, const ccfg_rule *rule,
                                     const ccfg_guide_state *st, int64_t n, int64_t dim, int k,
                                     int step, int num_steps, double alpha_bar)
{
    const ccfg_rule_impl *impl = rule->impl;
    const int cpu = be == ccfg_backend_cpu();
    const int k_active = ccfg_rule_negative_active(rule, step, num_steps) ? k : 0;
    guide_checks c;
    c.output_folded = cpu && !impl->after && !impl->host;
    /* the fused pass runs when this call has a coefficient form (CCFG's batch or uncalibrated
     * pilot τ has none: the host loop reads the reductions) */
    ccfg_coef_form form = {.family = 0};
    const ccfg_rule_inputs sizes = {.n = n, .dim = dim, .k = k_active, .step = step,
                                    .alpha_bar = alpha_bar};
    if (c.output_folded && impl->device_form && !ccfg_rule_stateful(rule) && k_active == k &&
        impl->device_form(rule, st, &sizes, &form) != CCFG_OK) {
        ccfg_clear_error();   /* the call itself reports it */
        form.family = 0;
    }
    c.inputs_folded = c.output_folded && form.family != 0 && !ccfg_rule_stateful(rule) &&
                      k_active == k;
    return c;
}

/* the index of the first of `count` arrays with a NaN/Inf, or -1 */
static int first_nonfinite_array(const float *const *arr, int count, int64_t size)
{
    const ccfg_backend *cpu = ccfg_backend_cpu();
    for (int j = 0; j < count; j++) {
        int ok = 1;
        if (arr[j] && ccfg_all_finite(cpu, size, arr[j], &ok) == CCFG_OK && !ok) return j;
    }
    return -1;
}

/* guide(rule_spec, eps_u, eps_p|None, [eps_n...], state|None, step, num_steps, device
 *       [, out|None, names|None, label]) -> eps (out itself when given)
 * names: (eps_u's, eps_p's, each eps_n's) for "NAME contains NaN or Inf" (ValueError); with them
 * a NaN/Inf result raises FloatingPointError naming `label` (the rule). Without names nothing is
 * checked (the caller has). out: a C-contiguous writeable float32 (n, dim) array to write into.
 * alpha_bar: the step's ā_t (NaN = unknown), for rules that read it. */
PyObject *py_guide(PyObject *self, PyObject *args)
{
    PyObject *spec, *uo, *po, *nl, *so, *out = NULL, *outo = Py_None, *names = Py_None;
    const char *device, *label = "";
    int step, num_steps, k = 0, status = CCFG_OK;
    double alpha_bar = NAN;
    ccfg_rule rule;
    PyArrayObject *u = NULL, *p = NULL, *negs[PY_MAX_NEGATIVES] = {0};
    const float *neg_ptr[PY_MAX_NEGATIVES];
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OOOOiis|OOsd", &PyTuple_Type, &spec, &uo, &po, &nl, &so, &step,
                          &num_steps, &device, &outo, &names, &label, &alpha_bar))
        return NULL;
    if (py_parse_rule(spec, &rule)) return NULL;
    u = py_as_array(uo, NPY_FLOAT32, 2, NULL, "eps_u");
    if (!u) goto done;
    int64_t n = PyArray_DIM(u, 0), dim = PyArray_DIM(u, 1);
    npy_intp shape[2] = {(npy_intp)n, (npy_intp)dim};
    if (po != Py_None && !(p = py_as_array(po, NPY_FLOAT32, 2, shape, "eps_p"))) goto done;
    if (py_array_list(nl, n, dim, negs, neg_ptr, PY_MAX_NEGATIVES, &k, "eps_n")) goto done;
    if (names != Py_None && (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) != 2 + k)) {
        PyErr_Format(PyExc_TypeError, "guide: names must be a tuple of %d strings", 2 + k);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    Py_END_ALLOW_THREADS
    if (status) {
        py_raise_status(status);
        goto done;
    }
    ccfg_guide_state *st = NULL;
    if (so != Py_None) {
        if (!PyObject_TypeCheck(so, &StateType)) {
            PyErr_SetString(PyExc_TypeError, "state must come from ccfg.guide");
            goto done;
        }
        st = &((StateObject *)so)->st;
        if (st->impl != rule.impl) {
            PyErr_SetString(PyExc_ValueError, "state belongs to a different rule");
            goto done;
        }
        if (st->be != be) {
            PyErr_SetString(PyExc_ValueError, "state lives on another device than this call's");
            goto done;
        }
    } else if (ccfg_rule_stateful(&rule)) {
        PyErr_SetString(PyExc_ValueError, "state: a stateful rule needs its state");
        goto done;
    }
    if (outo != Py_None) {
        PyArrayObject *oa = (PyArrayObject *)outo;
        if (!PyArray_Check(outo) || PyArray_TYPE(oa) != NPY_FLOAT32) {
            PyErr_SetString(PyExc_TypeError, "out must be a float32 NumPy array");
            goto done;
        }
        if (PyArray_NDIM(oa) != 2 || PyArray_DIM(oa, 0) != shape[0] ||
            PyArray_DIM(oa, 1) != shape[1] || !PyArray_IS_C_CONTIGUOUS(oa) ||
            !PyArray_ISWRITEABLE(oa) || !PyArray_ISALIGNED(oa)) {
            PyErr_SetString(PyExc_ValueError, "out must be a writeable C-contiguous float32 array "
                            "of the inputs' shape");
            goto done;
        }
        out = Py_NewRef(outo);
    } else {
        out = PyArray_SimpleNew(2, shape, NPY_FLOAT32);
        if (!out) goto done;
    }
    const int checks = names != Py_None;
    const guide_checks gc = guide_checks_for(be, &rule, st, n, dim, k, step, num_steps,
                                                alpha_bar);
    const float *all[2 + PY_MAX_NEGATIVES];
    all[0] = py_f32(u);
    all[1] = p ? py_f32(p) : NULL;
    for (int j = 0; j < k; j++) all[2 + j] = neg_ptr[j];
    const int64_t count = n * dim;
    float *op = py_f32((PyArrayObject *)out);
    int bad_in = -1, bad_out = 0;
    if (rule.impl->host && be->synchronous) {
        /* a Python rule on the CPU runs with the GIL held throughout (it calls back at once) */
        if (checks && (bad_in = first_nonfinite_array(all, 2 + k, count)) >= 0) goto nonfinite;
        status = ccfg_guide_at(be, &rule, st, n, dim, all[0], all[1], k, neg_ptr, step, num_steps,
                               alpha_bar, 1, op);
        if (!status && checks) bad_out = first_nonfinite_array((const float *const *)&op, 1, count) >= 0;
    } else {
        py_run run;
        Py_BEGIN_ALLOW_THREADS
        if (checks && !gc.inputs_folded) bad_in = first_nonfinite_array(all, 2 + k, count);
        if (bad_in < 0 && !(status = py_run_enter(&run, "ccfg.guide", be, NULL))) {
            (void)ccfg_cpu_guide_flags();                   /* forget older reports */
            status = guide_on(be, &rule, st, n, dim, all[0], all[1], k, neg_ptr, step, num_steps,
                              alpha_bar, op);
            const unsigned flags = ccfg_cpu_guide_flags();
            py_run_leave(&run);
            if (!status && checks) {
                /* the error path only: which input it was */
                if (gc.inputs_folded && (flags & CCFG_CPU_BAD_INPUT))
                    bad_in = first_nonfinite_array(all, 2 + k, count);
                else if (gc.output_folded)
                    bad_out = (flags & CCFG_CPU_BAD_OUTPUT) != 0;
                else
                    bad_out = first_nonfinite_array((const float *const *)&op, 1, count) >= 0;
            }
        }
        Py_END_ALLOW_THREADS
    }
nonfinite:
    if (status) {
        Py_CLEAR(out);
        py_raise_status(status);
    } else if (bad_in >= 0) {
        Py_CLEAR(out);
        PyObject *nm = PyTuple_GET_ITEM(names, bad_in);
        PyErr_Format(PyExc_ValueError, "%S contains NaN or Inf", nm);
    } else if (bad_out) {
        /* finite inputs and a non-finite result: float32 overflow in the rule */
        Py_CLEAR(out);
        PyErr_Format(PyExc_FloatingPointError, "rule %s gave NaN or Inf from finite inputs "
                     "(float32 overflow: its scales or the inputs are too large)", label);
    }
done:
    Py_XDECREF(u);
    Py_XDECREF(p);
    for (int j = 0; j < PY_MAX_NEGATIVES; j++) Py_XDECREF(negs[j]);
    return out;
}

static int observe_on(const ccfg_backend *be, const ccfg_rule *rule, ccfg_guide_state *st,
                      int64_t n, int64_t dim, const float *x, const float *xp, const float *u,
                      int k, const float *const *neg, double ab, double abp, double eta)
{
    const size_t count = (size_t)n * (size_t)dim;
    float *dx = NULL, *dxp = NULL, *du = NULL, *dn[PY_MAX_NEGATIVES] = {0};
    int status;
    if ((status = ccfg_backend_from_host(be, x, count, &dx)) ||
        (status = ccfg_backend_from_host(be, xp, count, &dxp)) ||
        (status = ccfg_backend_from_host(be, u, count, &du)))
        goto done;
    for (int j = 0; j < k; j++)
        if ((status = ccfg_backend_from_host(be, neg[j], count, &dn[j]))) goto done;
    status = ccfg_guide_observe(be, rule, st, n, dim, dx, dxp, du, k, (const float *const *)dn, ab,
                                abp, eta);
done:
    ccfg_backend_drop(be, dx);
    ccfg_backend_drop(be, dxp);
    ccfg_backend_drop(be, du);
    for (int j = 0; j < k; j++) ccfg_backend_drop(be, dn[j]);
    return status;
}

/* observe(rule_spec, state, x_t, x_prev, eps_u, [eps_n...], alpha_bar, alpha_bar_prev, eta):
 * a stateful rule learns from the transition x_t -> x_prev (DNG) */
PyObject *py_observe(PyObject *self, PyObject *args)
{
    PyObject *spec, *so, *xo, *xpo, *uo, *nl, *ret = NULL;
    double ab, abp, eta;
    int k = 0;
    ccfg_rule rule;
    PyArrayObject *x = NULL, *xp = NULL, *u = NULL, *negs[PY_MAX_NEGATIVES] = {0};
    const float *neg_ptr[PY_MAX_NEGATIVES];
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!OOOOddd", &PyTuple_Type, &spec, &StateType, &so, &xo, &xpo,
                          &uo, &nl, &ab, &abp, &eta))
        return NULL;
    if (py_parse_rule(spec, &rule)) return NULL;
    x = py_as_array(xo, NPY_FLOAT32, 2, NULL, "x_t");
    if (!x) goto done;
    npy_intp shape[2] = {PyArray_DIM(x, 0), PyArray_DIM(x, 1)};
    xp = py_as_array(xpo, NPY_FLOAT32, 2, shape, "x_prev");
    u = xp ? py_as_array(uo, NPY_FLOAT32, 2, shape, "eps_u") : NULL;
    if (!u || py_array_list(nl, shape[0], shape[1], negs, neg_ptr, PY_MAX_NEGATIVES, &k, "eps_n"))
        goto done;
    int status;
    ccfg_guide_state *st = &((StateObject *)so)->st;
    const ccfg_backend *be = st->be ? st->be : ccfg_backend_cpu();
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    if (!(status = py_run_enter(&run, "GuidanceState.observe", be, NULL))) {
        status = observe_on(be, &rule, st, shape[0], shape[1], py_f32(x), py_f32(xp), py_f32(u),
                            k, neg_ptr, ab, abp, eta);
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) py_raise_status(status);
    else ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(x);
    Py_XDECREF(xp);
    Py_XDECREF(u);
    for (int j = 0; j < PY_MAX_NEGATIVES; j++) Py_XDECREF(negs[j]);
    return ret;
}

/* rules() -> {name: (parameter names...)}: the C registry, for ccfg/guidance.py's checks */
PyObject *py_rules(PyObject *self, PyObject *args)
{
    (void)self; (void)args;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (const ccfg_rule_impl *const *r = ccfg_rule_list(); *r; r++) {
        const char *const *names = ccfg_rule_param_names(*r);
        int count = 0;
        while (names[count]) count++;
        PyObject *t = PyTuple_New(count);
        if (!t) goto fail;
        for (int i = 0; i < count; i++) {
            PyObject *s = PyUnicode_FromString(names[i]);
            if (!s) {
                Py_DECREF(t);
                goto fail;
            }
            PyTuple_SET_ITEM(t, i, s);
        }
        if (py_dict_set(d, ccfg_rule_name(*r), t)) goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* rule_uses_negatives(name) -> bool: does the registered rule ever evaluate negatives (CFG, APG
 * and none do not); what a caller needs to know to prepare a negative branch */
PyObject *py_rule_uses_negatives(PyObject *self, PyObject *args)
{
    const char *name;
    (void)self;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    const ccfg_rule_impl *impl = !strcmp(name, "python") ? &python_rule : ccfg_rule_find(name);
    if (!impl) {
        PyErr_Format(PyExc_ValueError, "unknown rule %s", name);
        return NULL;
    }
    return PyBool_FromLong(impl->uses_negatives);
}

int py_guide_register(PyObject *m)
{
    if (PyType_Ready(&StateType) < 0) return -1;
    return PyModule_AddObjectRef(m, "GuideState", (PyObject *)&StateType);
}
