/* python/py_testhooks.c — single backend ops from Python, for the op-by-op tests that compare
 * every backend with independent references (tests/test_vulkan.py, tests/test_unet_vulkan.py).
 * Test hooks: the GIL stays held in vk_op. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <string.h>

#include "nn.h"

enum { VKOP_MAX = 16, VKOP_GAP = 3 };

/* a new float32 array shaped like `like` */
static PyObject *new_like(PyArrayObject *like)
{
    return PyArray_SimpleNew(PyArray_NDIM(like), PyArray_DIMS(like), NPY_FLOAT32);
}

/* vk_op(device, op, arrays, scalars): one backend op on the backend named `device` ("cpu",
 * "vulkan:N") through its tables; tests compare it with references. Every input array is uploaded
 * into ONE allocation at odd element offsets and every output lives at an odd offset too, so
 * the device-address arithmetic is exercised by every op. A test hook: the GIL stays held.
 *   axpbypcz (x, y|None, z|None) (a, b, c[, in_place]) -> out
 *   combine (in_0 .. in_m-1, coef float64 (n, m)) () -> out (n, dim)
 *   randn () (n, dim, seed, stream, first) -> (n, dim)
 *   dot (a, b) () -> float64 (n,)
 *   direction_dots (u, p, neg_0 ..) () -> (pp (n,), nn (k, n), np (k, n))
 *   all_finite (x,) () -> bool
 *   sld (eps_u, eps_p, eps_s, nu, out) (w, s_s, thr, s_m, beta_m, update, apply) -> (nu, out) */
PyObject *py_vk_op(PyObject *self, PyObject *args)
{
    int status = CCFG_OK, locked = 0;
    const char *device, *op;
    PyObject *arrs, *scal, *result = NULL, *r0 = NULL, *r1 = NULL, *r2 = NULL;
    PyArrayObject *a[VKOP_MAX] = {0}, *coef = NULL;
    const ccfg_backend *be = NULL;
    float *pool = NULL, *dout = NULL, *in[VKOP_MAX] = {0};
    double s[8] = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "ssO!O!", &device, &op, &PyTuple_Type, &arrs, &PyTuple_Type, &scal))
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
    if ((status = py_open_backend(device, &be))) goto done;
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
        coef = py_as_array(PyTuple_GET_ITEM(arrs, nb), NPY_FLOAT64, 2, cs, "coef");
        if (!coef) goto done;
        for (int i = 0; i < nb; i++)
            if (!a[i] || PyArray_SIZE(a[i]) != count) {
                PyErr_SetString(PyExc_ValueError, "vk_op combine: inputs must share one shape");
                goto done;
            }
        if ((status = be->alloc(be, (size_t)(count + VKOP_GAP) * 4, &dout))) goto done;
        out = dout + VKOP_GAP;
        if ((status = be->guide->combine(be, n, dim, nb, (const float *const *)in,
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
        if ((status = be->guide->dot(be, n, dim, in[0], in[1], (double *)PyArray_DATA((PyArrayObject *)r0))))
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
        if ((status = be->guide->direction_dots(be, n, dim, in[0], in[1], k, (const float *const *)(in + 2),
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
        if ((status = be->guide->sld(be, count, in[0], in[1], in[2], in[3], s[0], s[1], s[2], s[3], s[4],
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
        py_raise_status(status);
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

/* nn_op(device, op, inputs, outputs, ints, floats, t, index) -> list of outputs: one nn.h op on
 * a backend (its be->nn table), for the op-by-op tests (tests/test_unet_vulkan.py). inputs:
 * float32 arrays or None (an absent optional argument); outputs: float32 arrays whose copies are
 * uploaded (initial values for accumulate / in-place ops), run through the op and returned; t:
 * float64 host array (timestep_embedding), index: int32 host array (embedding_add), else None.
 * Sizes are the caller's business (ints), as in C; the arrays are only bounds the backend checks
 * against. */
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
    if (!strcmp(op, "attention_qkv")) {
        NEED(5, 0);
        return ops->attention_qkv(be, iv[0], iv[1], iv[2], iv[3], iv[4], in[0], in[1], in[2],
                                  out[0], scratch, scratch_len);
    }
    if (!strcmp(op, "layer_norm")) {
        NEED(2, 1);
        return ops->layer_norm(be, iv[0], iv[1], (float)fv[0], in[0], in[1], in[2], out[0]);
    }
    if (!strcmp(op, "geglu")) {
        NEED(2, 0);
        return ops->geglu(be, iv[0], iv[1], in[0], out[0]);
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

PyObject *py_nn_op(PyObject *self, PyObject *args)
{
    int status = CCFG_OK, nin = 0, nout = 0, ni = 0, nf = 0;
    const char *device, *op;
    PyObject *ino, *outo, *io, *fo, *to, *xo, *result = NULL;
    PyArrayObject *ain[NN_MAX_ARRAYS] = {0}, *aout[NN_MAX_ARRAYS] = {0}, *ta = NULL, *xa = NULL;
    float *din[NN_MAX_ARRAYS] = {0}, *dout[NN_MAX_ARRAYS] = {0}, *scratch = NULL;
    int iv[16];
    double fv[4];
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "ssO!O!O!O!OO", &device, &op, &PyList_Type, &ino, &PyList_Type,
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
        if (o != Py_None && !(ain[i] = py_as_array(o, NPY_FLOAT32, 1, NULL, "input"))) goto done;
    }
    for (int i = 0; i < nout; i++) {
        PyArrayObject *a = py_as_array(PyList_GET_ITEM(outo, i), NPY_FLOAT32, 1, NULL, "output");
        if (!a) goto done;
        aout[i] = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
        Py_DECREF(a);
        if (!aout[i]) goto done;
    }
    if (to != Py_None && !(ta = py_as_array(to, NPY_FLOAT64, 1, NULL, "t"))) goto done;
    if (xo != Py_None && !(xa = py_as_array(xo, NPY_INT32, 1, NULL, "index"))) goto done;
    /* scratch for the CPU kernels: generous for the small sizes of the tests; attention needs a
     * tokens x tokens score matrix (ints: batch, hw, heads, head_dim) */
    int64_t scratch_len = (int64_t)1 << 22;
    if (!strcmp(op, "attention") && ni >= 2 && (int64_t)iv[1] * iv[1] > scratch_len)
        scratch_len = (int64_t)iv[1] * iv[1];
    if (!strcmp(op, "attention_qkv") && ni >= 3 && (int64_t)iv[1] * iv[2] > scratch_len)
        scratch_len = (int64_t)iv[1] * iv[2];
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status) {
        be->lock(be, 1);
        for (int i = 0; i < nin && !status; i++)
            if (ain[i]) {
                const size_t bytes = (size_t)PyArray_NBYTES(ain[i]);
                status = be->alloc(be, bytes ? bytes : 4, &din[i]);
                if (!status) status = be->upload(be, din[i], py_f32(ain[i]), bytes);
            }
        for (int i = 0; i < nout && !status; i++) {
            const size_t bytes = (size_t)PyArray_NBYTES(aout[i]);
            status = be->alloc(be, bytes ? bytes : 4, &dout[i]);
            if (!status) status = be->upload(be, dout[i], py_f32(aout[i]), bytes);
        }
        if (!be->nn->uses_scratch) scratch_len = 0;     /* the device kernels tile themselves */
        else if (!status) status = be->alloc(be, (size_t)scratch_len * sizeof(float), &scratch);
        if (!status)
            status = nn_call(be, be->nn, op,
                             din, dout, iv, ni, fv, nf, ta ? (const double *)PyArray_DATA(ta) : NULL,
                             xa ? (const int32_t *)PyArray_DATA(xa) : NULL, scratch, scratch_len);
        for (int i = 0; i < nout && !status; i++)
            status = be->download(be, py_f32(aout[i]), dout[i], (size_t)PyArray_NBYTES(aout[i]));
        for (int i = 0; i < NN_MAX_ARRAYS; i++) {
            be->release(be, din[i]);
            be->release(be, dout[i]);
        }
        be->release(be, scratch);
        be->lock(be, 0);
    }
    Py_END_ALLOW_THREADS
    if (status) {
        py_raise_status(status);
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

