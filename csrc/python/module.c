/* python/module.c — the CPython module ccfg._core: its method table and init, nothing else.
 *
 * The Python layer (the ccfg package) validates user input and hands over clean float32 arrays,
 * rule specs by name and device names; the py_*.c files re-check shapes, release the GIL around
 * the C work and turn ccfg statuses into Python exceptions (see python/py.h for the map). */
#define CCFG_PY_IMPORT_ARRAY      /* this file imports the NumPy API table for the others */
#include "python/py.h"

/* the bindings, by file */
PyObject *py_guide(PyObject *, PyObject *);             /* py_guide.c */
PyObject *py_guide_state(PyObject *, PyObject *);
PyObject *py_state_info(PyObject *, PyObject *);
PyObject *py_observe(PyObject *, PyObject *);
PyObject *py_rules(PyObject *, PyObject *);
PyObject *py_rule_uses_negatives(PyObject *, PyObject *);
int py_guide_register(PyObject *m);
PyObject *py_gmm_model(PyObject *, PyObject *);         /* py_models.c */
PyObject *py_python_model(PyObject *, PyObject *);
PyObject *py_gmm_eps(PyObject *, PyObject *);
int py_models_register(PyObject *m);
PyObject *py_plan(PyObject *, PyObject *);              /* py_sample.c */
PyObject *py_sample(PyObject *, PyObject *);
PyObject *py_unet_param_count(PyObject *, PyObject *);  /* py_unet.c */
PyObject *py_unet_new(PyObject *, PyObject *);
PyObject *py_unet_forward(PyObject *, PyObject *);
PyObject *py_unet_plan_bytes(PyObject *, PyObject *);
PyObject *py_unet_model(PyObject *, PyObject *);
int py_unet_register(PyObject *m);
PyObject *py_classifier_new(PyObject *, PyObject *);    /* py_classifier.c */
PyObject *py_classifier_forward(PyObject *, PyObject *);
int py_classifier_register(PyObject *m);
PyObject *py_randn(PyObject *, PyObject *);             /* py_devices.c */
PyObject *py_philox(PyObject *, PyObject *);
PyObject *py_devices(PyObject *, PyObject *);
PyObject *py_vk_copy_bench(PyObject *, PyObject *);
PyObject *py_vk_profile(PyObject *, PyObject *);
PyObject *py_vk_set_precision(PyObject *, PyObject *);
PyObject *py_vk_tuning(PyObject *, PyObject *);
PyObject *py_vk_op(PyObject *, PyObject *);             /* py_testhooks.c */
PyObject *py_nn_op(PyObject *, PyObject *);
PyObject *py_nn_conv2d_scratch(PyObject *, PyObject *);
PyObject *py_nn_profile(PyObject *, PyObject *);
PyObject *py_vk_tune_test(PyObject *, PyObject *);

static PyMethodDef methods[] = {
    /* guidance */
    {"guide", py_guide, METH_VARARGS,
     "guide(rule_spec, eps_u, eps_p, eps_n_list, state, step, num_steps, device) -> eps"},
    {"guide_state", py_guide_state, METH_VARARGS, "guide_state(rule_spec, n, dim, n_neg, device)"},
    {"state_info", py_state_info, METH_VARARGS, "state_info(state) -> dict (copies)"},
    {"observe", py_observe, METH_VARARGS,
     "observe(rule_spec, state, x_t, x_prev, eps_u, eps_n_list, ab, ab_prev, eta)"},
    {"rules", py_rules, METH_NOARGS, "rules() -> {name: parameter names} of the C registry"},
    {"rule_uses_negatives", py_rule_uses_negatives, METH_VARARGS,
     "rule_uses_negatives(name) -> bool: whether the rule ever evaluates negatives"},
    /* sampling and models */
    {"plan", py_plan, METH_VARARGS, "plan(sampler_spec) -> dict of schedule arrays"},
    {"sample", py_sample, METH_VARARGS, "the whole sampling loop (see ccfg/sampling.py)"},
    {"gmm_model", py_gmm_model, METH_VARARGS, "gmm_model(spec) -> Model (exact mixture)"},
    {"python_model", py_python_model, METH_VARARGS, "python_model(fn) -> Model (host callable)"},
    {"gmm_eps", py_gmm_eps, METH_VARARGS,
     "gmm_eps(spec, x, alpha_bar, cond, device='cpu') -> exact eps"},
    {"unet_param_count", py_unet_param_count, METH_VARARGS, "unet_param_count(config) -> int"},
    {"unet_new", py_unet_new, METH_VARARGS, "unet_new(config, params, device='cpu') -> UNet"},
    {"unet_forward", py_unet_forward, METH_VARARGS, "unet_forward(unet, x, t, labels) -> out"},
    {"unet_plan_bytes", py_unet_plan_bytes, METH_VARARGS, "unet_plan_bytes(unet) -> int"},
    {"unet_model", py_unet_model, METH_VARARGS,
     "unet_model(unet, h, w, null_class, class_of) -> Model"},
    {"classifier_new", py_classifier_new, METH_VARARGS,
     "classifier_new(layers, (c, h, w), features_layer, params) -> Classifier"},
    {"classifier_forward", py_classifier_forward, METH_VARARGS,
     "classifier_forward(model, images) -> (logits, features)"},
    /* devices and random numbers */
    {"devices", py_devices, METH_NOARGS,
     "devices() -> list of dicts: the CPU, then Vulkan devices or why none"},
    {"randn", py_randn, METH_VARARGS, "randn(seed, n, dim, stream, first=0) -> float32 (n, dim)"},
    {"philox4x32", py_philox, METH_VARARGS, "philox4x32((c0,c1,c2,c3), (k0,k1)) -> 4 uint32"},
    {"vk_copy_bench", py_vk_copy_bench, METH_VARARGS,
     "vk_copy_bench(device, bytes, repeats, mode=0) -> seconds per copy "
     "(0: shader, 1: vkCmdCopyBuffer)"},
    {"vk_profile", py_vk_profile, METH_VARARGS,
     "vk_profile(device, 'start'|'stop'|'read') -> time per shader kind (timestamp queries)"},
    {"vk_tuning", py_vk_tuning, METH_VARARGS,
     "vk_tuning(device, 'read'|'clear'|'save'|'load'|'identity'[, path]) -> the autotuner's decisions "
     "(CCFG_VULKAN_COOP_TILE=auto, CCFG_VULKAN_CONV_TILE=auto), their file, the device's identity"},
    /* test hooks */
    {"vk_set_precision", py_vk_set_precision, METH_VARARGS,
     "vk_set_precision(device, 'fp32'|'opened'): a device's convolution precision (tests)"},
    {"vk_op", py_vk_op, METH_VARARGS,
     "vk_op(device, op, arrays, scalars): one backend op on a backend (tests)"},
    {"nn_op", py_nn_op, METH_VARARGS,
     "nn_op(device, op, inputs, outputs, ints, floats, t, index) (tests)"},
    {"nn_conv2d_scratch", py_nn_conv2d_scratch, METH_VARARGS,
     "nn_conv2d_scratch(cin, cout, h, w, k, stride, pad0, pad1, packed, threads) -> floats of "
     "the CPU conv2d's scratch (tests)"},
    {"nn_profile", py_nn_profile, METH_VARARGS,
     "nn_profile('start'|'stop') -> {op kind: (calls, ms)} of the CPU nn ops (benchmarks)"},
    {"vk_tune_test", py_vk_tune_test, METH_VARARGS,
     "vk_tune_test(device, 'fake'|'copies', values): the autotuner's test hooks (tests)"},
    {NULL, NULL, 0, NULL},
};

/* the C core's interrupt check (ccfg_check_interrupt, between a forward's layers): runs Python's
 * signal handlers in the main thread; a KeyboardInterrupt (or a handler's exception) stays set
 * and is what the call raises (py_raise_status). Called without the GIL. */
static int python_interrupted(void)
{
    PyGILState_STATE g = PyGILState_Ensure();
    const int stop = PyErr_CheckSignals() < 0;
    PyGILState_Release(g);
    return stop;
}

static int exec_module(PyObject *m)
{
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    ccfg_set_interrupt_check(python_interrupted);
    if (py_guide_register(m) < 0 || py_models_register(m) < 0 || py_unet_register(m) < 0 ||
        py_classifier_register(m) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_core", "ccfg's C core: guidance rules, solvers, models, backends.", 0,
    methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&moduledef); }
