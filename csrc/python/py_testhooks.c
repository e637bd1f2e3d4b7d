/* python/py_testhooks.c — single backend ops from Python, for the op-by-op tests that compare
 * every backend with independent references (tests/test_vulkan.py, tests/test_unet_vulkan.py).
 * Test hooks: the GIL stays held in vk_op. */
#include "python/py.h"      /* first: Python.h sets the feature macros */

#include <string.h>

#include "nn.h"
#include "vk_nn.h"
#include "vk_tune.h"

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
    py_run run;
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
    if ((status = py_run_enter(&run, "vk_op", be, NULL))) goto done;
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
        if ((a[1] && PyArray_SIZE(a[1]) != count) || (a[2] && PyArray_SIZE(a[2]) != count)) {
            PyErr_SetString(PyExc_ValueError, "vk_op axpbypcz: x, y and z must share one size");
            goto done;
        }
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
        /* n and dim as doubles: in range before they become integers, their product too */
        if (!(s[0] >= 0.0 && s[0] <= 2147483647.0 && s[1] >= 0.0 && s[1] <= 2147483647.0) ||
            s[0] * s[1] > 1e12) {
            PyErr_SetString(PyExc_ValueError, "vk_op randn: n and dim must be in [0, 2^31) and "
                            "n * dim at most 10^12");
            goto done;
        }
        npy_intp sh[2] = {(npy_intp)s[0], (npy_intp)s[1]};
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
    if (locked) py_run_leave(&run);
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
 * Sizes are ints, as in C, but checked here against the arrays before anything runs (nn_check):
 * the CPU ops trust their caller (the UNet plans its sizes), so a hook that passed them on
 * unchecked would read and write past the arrays. Scratch is sized from the arguments. */
enum { NN_MAX_ARRAYS = 6 };

/* what one op reads and writes, in floats, from its sizes */
typedef struct {
    int ni, nf;                     /* ints and floats it takes */
    int nin, nout;                  /* inputs and outputs it uses */
    int64_t in[NN_MAX_ARRAYS];      /* floats each input needs (0: not used) */
    int optional[NN_MAX_ARRAYS];    /* 1: the input may be None */
    int64_t out[NN_MAX_ARRAYS];
    int64_t t, index;               /* host arrays: entries needed (-1: not used) */
    int64_t scratch;                /* CPU scratch floats at the least */
} nn_need;

/* a * b * ... for sizes already checked >= 0, or -1 past 2^62 */
static int64_t prod(int n, const int64_t *v)
{
    int64_t r = 1;
    for (int i = 0; i < n; i++) {
        if (v[i] && r > ((int64_t)1 << 62) / v[i]) return -1;
        r *= v[i];
    }
    return r;
}
#define PROD(...) prod((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), \
                       (int64_t[]){__VA_ARGS__})

static const char wrong_ints[] = "wrong number of ints";

/* fills *w for op with the ints iv; an error message (static) if the sizes are invalid */
static const char *nn_need_of(const char *op, const int64_t *iv, int ni, nn_need *w)
{
    memset(w, 0, sizeof *w);
    w->t = w->index = -1;
#define EXPECT(i, f) do { w->ni = (i); w->nf = (f); if (ni != (i)) return wrong_ints; } \
    while (0)
#define AT_LEAST(k, lo) do { if (iv[k] < (lo)) return "the sizes are out of range"; } while (0)
/* the convolution ops' first nine ints (batch, cin, h, w, cout, k, stride, pad0, pad1): checked,
 * and the output's height and width */
#define CONV_SIZES()                                                                            \
    for (int k = 1; k <= 6; k++) AT_LEAST(k, 1);                                               \
    AT_LEAST(0, 0); AT_LEAST(7, 0); AT_LEAST(8, 0);                                            \
    const int64_t b = iv[0], cin = iv[1], h = iv[2], wd = iv[3], cout = iv[4], k = iv[5];      \
    const int64_t s = iv[6], p0 = iv[7], p1 = iv[8];                                           \
    if (h + p0 + p1 < k || wd + p0 + p1 < k) return "the kernel is larger than the image";    \
    const int64_t ho = (h + p0 + p1 - k) / s + 1, wo = (wd + p0 + p1 - k) / s + 1
    if (!strcmp(op, "conv2d") || !strcmp(op, "conv2d_residual")) {
        /* conv2d_residual: the last int says whether the residual is y itself (1) or input 3 */
        EXPECT(10, 0);
        CONV_SIZES();
        w->nin = 3; w->nout = 1;
        w->in[0] = PROD(cin, b, h, wd);
        w->in[1] = PROD(cout, cin, k, k);
        w->in[2] = cout; w->optional[2] = 1;
        w->out[0] = PROD(cout, b, ho, wo);
        if (!strcmp(op, "conv2d_residual") && !iv[9]) {
            w->nin = 4;
            w->in[3] = w->out[0];
        }
        w->scratch = PROD(cin, k, k, wo > 256 ? wo : 256);
    } else if (!strcmp(op, "conv2d_packed_norm")) {
        /* ints: conv2d's ten, silu, whether input 4 is a residual; inputs x, w, bias, ab */
        EXPECT(12, 0);
        CONV_SIZES();
        w->nin = iv[11] ? 5 : 4; w->nout = 1;
        w->in[0] = PROD(cin, b, h, wd);
        w->in[1] = PROD(cout, cin, k, k);
        w->in[2] = cout; w->optional[2] = 1;
        w->in[3] = PROD(2, b, cin);
        w->out[0] = PROD(cout, b, ho, wo);
        if (iv[11]) w->in[4] = w->out[0];
        w->scratch = PROD(cin, k, k, wo > 256 ? wo : 256);
    } else if (!strcmp(op, "group_norm") || !strcmp(op, "group_norm_affine")) {
        /* group_norm_affine: the same ints (the last, silu, unused) and (a, d) out */
        EXPECT(5, 1);
        AT_LEAST(0, 0); AT_LEAST(1, 1); AT_LEAST(2, 1); AT_LEAST(3, 1);
        if (iv[1] % iv[3]) return "groups must divide the channels";
        w->nin = 5; w->nout = 1;
        w->in[0] = w->out[0] = PROD(iv[1], iv[0], iv[2]);
        if (op[10] == '_') w->out[0] = PROD(2, iv[0], iv[1]);
        w->in[1] = PROD(iv[0], iv[1]); w->optional[1] = 1;
        w->in[2] = w->in[3] = iv[1];
        w->in[4] = PROD(2, iv[0], iv[1]); w->optional[4] = 1;
    } else if (!strcmp(op, "linear")) {
        EXPECT(4, 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1); AT_LEAST(2, 1);
        w->nin = 3; w->nout = 1;
        w->in[0] = PROD(iv[0], iv[1]);
        w->in[1] = PROD(iv[2], iv[1]);
        w->in[2] = iv[2]; w->optional[2] = 1;
        w->out[0] = PROD(iv[0], iv[2]);
        if (iv[3]) w->scratch = w->in[0];       /* the CPU stages SiLU(x) there */
    } else if (!strcmp(op, "silu") || !strcmp(op, "copy")) {
        EXPECT(1, 0);
        AT_LEAST(0, 0);
        w->nin = w->nout = 1;
        w->in[0] = w->out[0] = iv[0];
    } else if (!strcmp(op, "scale")) {
        EXPECT(1, 1);
        AT_LEAST(0, 0);
        w->nout = 1;
        w->out[0] = iv[0];
    } else if (!strcmp(op, "timestep_embedding")) {
        EXPECT(3, 1);
        AT_LEAST(0, 0); AT_LEAST(1, 1);
        w->nout = 1;
        w->out[0] = PROD(iv[0], iv[1]);
        w->t = iv[0];
    } else if (!strcmp(op, "embedding_add")) {
        EXPECT(2, 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1);
        w->nin = w->nout = 1;
        w->in[0] = iv[1];       /* one row at the least; the indices are checked against it */
        w->out[0] = PROD(iv[0], iv[1]);
        w->index = iv[0];
    } else if (!strcmp(op, "attention")) {
        EXPECT(4, 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1); AT_LEAST(2, 1); AT_LEAST(3, 1);
        w->nin = w->nout = 1;
        w->out[0] = PROD(iv[2], iv[3], iv[0], iv[1]);
        w->in[0] = PROD(3, iv[2], iv[3], iv[0], iv[1]);
        w->scratch = PROD(iv[1], iv[1]);
    } else if (!strcmp(op, "attention_qkv")) {
        EXPECT(5, 0);
        AT_LEAST(0, 0);
        for (int k = 1; k <= 4; k++) AT_LEAST(k, 1);
        w->nin = 3; w->nout = 1;
        w->in[0] = w->out[0] = PROD(iv[3], iv[4], iv[0], iv[1]);
        w->in[1] = w->in[2] = PROD(iv[3], iv[4], iv[0], iv[2]);
        w->scratch = PROD(iv[1], iv[2]);
    } else if (!strcmp(op, "layer_norm")) {
        EXPECT(2, 1);
        AT_LEAST(0, 0); AT_LEAST(1, 1);
        w->nin = 3; w->nout = 1;
        w->in[0] = w->out[0] = PROD(iv[0], iv[1]);
        w->in[1] = w->in[2] = iv[1];
        w->optional[1] = w->optional[2] = 1;
    } else if (!strcmp(op, "geglu")) {
        EXPECT(2, 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1);
        w->nin = w->nout = 1;
        w->in[0] = PROD(2, iv[0], iv[1]);
        w->out[0] = PROD(iv[0], iv[1]);
    } else if (!strcmp(op, "upsample_nearest2x")) {
        EXPECT(4, 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1); AT_LEAST(2, 1); AT_LEAST(3, 1);
        w->nin = w->nout = 1;
        w->in[0] = PROD(iv[0], iv[1], iv[2], iv[3]);
        w->out[0] = PROD(4, iv[0], iv[1], iv[2], iv[3]);
    } else if (!strcmp(op, "nchw_to_cnhw") || !strcmp(op, "cnhw_to_nchw")) {
        EXPECT(3, op[0] == 'n' ? 2 : 0);
        AT_LEAST(0, 0); AT_LEAST(1, 1); AT_LEAST(2, 1);
        w->nin = w->nout = 1;
        w->in[0] = w->out[0] = PROD(iv[0], iv[1], iv[2]);
    } else {
        return "unknown op";
    }
#undef EXPECT
#undef AT_LEAST
#undef CONV_SIZES
    for (int i = 0; i < NN_MAX_ARRAYS; i++)
        if (w->in[i] < 0 || w->out[i] < 0) return "the sizes are too large";
    if (w->scratch < 0) return "the sizes are too large";
    return NULL;
}

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
    if (!strcmp(op, "conv2d_residual")) {
        NEED(10, 0);
        if (!ops->conv2d_residual)
            return ccfg_fail(CCFG_EINVAL, "nn_op conv2d_residual: the %s backend has none",
                             ops->name);
        return ops->conv2d_residual(be, iv[0], iv[1], iv[2], iv[3], in[0], iv[4], iv[5], iv[6],
                                    iv[7], iv[8], in[1], NULL, in[2], iv[9] ? out[0] : in[3],
                                    out[0], scratch, scratch_len);
    }
    if (!strcmp(op, "conv2d_packed_norm")) {
        int done = 0, status;
        NEED(12, 0);
        if (!ops->conv2d_packed_norm)
            return ccfg_fail(CCFG_EINVAL, "nn_op conv2d_packed_norm: the %s backend has none",
                             ops->name);
        if ((status = ops->conv2d_packed_norm(be, iv[0], iv[1], iv[2], iv[3], in[0], in[3], iv[10],
                                              iv[4], iv[5], iv[6], iv[7], iv[8], in[1], NULL,
                                              in[2], iv[11] ? in[4] : NULL, iv[9], out[0],
                                              scratch, scratch_len, &done)))
            return status;
        if (!done)
            return ccfg_fail(CCFG_EINVAL, "nn_op conv2d_packed_norm: the %s backend declined "
                             "this layer", ops->name);
        return CCFG_OK;
    }
    if (!strcmp(op, "group_norm_affine")) {
        NEED(5, 1);
        if (!ops->group_norm_affine)
            return ccfg_fail(CCFG_EINVAL, "nn_op group_norm_affine: the %s backend has none",
                             ops->name);
        return ops->group_norm_affine(be, iv[0], iv[1], iv[2], iv[3], (float)fv[0], in[0], in[1],
                                      in[2], in[3], in[4], out[0]);
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

/* nn_conv2d_scratch(cin, cout, h, w, k, stride, pad0, pad1, packed, threads): nn.h's
 * ccfg_nn_conv2d_scratch, for tests/test_conv_scratch.py; arguments that are not a convolution
 * raise ValueError naming the argument (the C function returns 0 for them) */
PyObject *py_nn_conv2d_scratch(PyObject *self, PyObject *args)
{
    int cin, cout, h, w, k, stride, pad0, pad1, packed, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiiiiiii", &cin, &cout, &h, &w, &k, &stride, &pad0, &pad1,
                          &packed, &threads))
        return NULL;
    if (threads < 1)
        return PyErr_Format(PyExc_ValueError, "nn_conv2d_scratch: threads must be >= 1, got %d",
                            threads);
    if (cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 || pad1 < 0)
        return PyErr_Format(PyExc_ValueError, "nn_conv2d_scratch: channels %d -> %d, size %d x "
                            "%d, kernel %d, stride %d must be positive and padding (%d, %d) not "
                            "negative", cin, cout, h, w, k, stride, pad0, pad1);
    if ((int64_t)h + pad0 + pad1 < k || (int64_t)w + pad0 + pad1 < k)
        return PyErr_Format(PyExc_ValueError, "nn_conv2d_scratch: kernel %d larger than the "
                            "padded %d x %d input", k, h, w);
    return PyLong_FromLongLong(ccfg_nn_conv2d_scratch(cin, cout, h, w, k, stride, pad0, pad1,
                                                      packed, threads));
}

PyObject *py_nn_op(PyObject *self, PyObject *args)
{
    int status = CCFG_OK, nin = 0, nout = 0, ni = 0, nf = 0;
    const char *device, *op, *why;
    PyObject *ino, *outo, *io, *fo, *to, *xo, *result = NULL;
    PyArrayObject *ain[NN_MAX_ARRAYS] = {0}, *aout[NN_MAX_ARRAYS] = {0}, *ta = NULL, *xa = NULL;
    float *din[NN_MAX_ARRAYS] = {0}, *dout[NN_MAX_ARRAYS] = {0}, *scratch = NULL;
    int iv[16];
    int64_t iv64[16];
    double fv[4];
    nn_need need;
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
        const long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(io, i));
        if (PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "nn_op %s: int %d is out of range", op, i);
            }
            return NULL;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "nn_op %s: int %d (%lld) is out of range", op, i, v);
            return NULL;
        }
        iv64[i] = v;
        iv[i] = (int)v;
    }
    for (int i = 0; i < nf; i++) {
        fv[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(fo, i));
        if (PyErr_Occurred()) return NULL;
    }
    if ((why = nn_need_of(op, iv64, ni, &need))) {
        if (why == wrong_ints)
            PyErr_Format(PyExc_ValueError, "nn_op %s: %d ints expected, got %d", op, need.ni, ni);
        else
            PyErr_Format(PyExc_ValueError, "nn_op %s: %s", op, why);
        return NULL;
    }
    if (nf != need.nf || nin < need.nin || nout < need.nout) {
        PyErr_Format(PyExc_ValueError, "nn_op %s: %d ints, %d floats, %d inputs and %d outputs "
                     "expected", op, need.ni, need.nf, need.nin, need.nout);
        return NULL;
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
    /* every array the op reads or writes holds what the sizes say (a larger one is fine) */
    for (int i = 0; i < need.nin; i++) {
        if (!ain[i] && !need.optional[i]) {
            PyErr_Format(PyExc_ValueError, "nn_op %s: input %d is required", op, i);
            goto done;
        }
        if (ain[i] && PyArray_SIZE(ain[i]) < need.in[i]) {
            PyErr_Format(PyExc_ValueError, "nn_op %s: input %d holds %zd floats, the sizes need "
                         "%lld", op, i, (Py_ssize_t)PyArray_SIZE(ain[i]), (long long)need.in[i]);
            goto done;
        }
    }
    for (int i = 0; i < need.nout; i++)
        if (PyArray_SIZE(aout[i]) < need.out[i]) {
            PyErr_Format(PyExc_ValueError, "nn_op %s: output %d holds %zd floats, the sizes need "
                         "%lld", op, i, (Py_ssize_t)PyArray_SIZE(aout[i]), (long long)need.out[i]);
            goto done;
        }
    if (need.t >= 0 && (!ta || PyArray_SIZE(ta) < need.t)) {
        PyErr_Format(PyExc_ValueError, "nn_op %s: t must hold %lld timesteps", op,
                     (long long)need.t);
        goto done;
    }
    if (need.index >= 0) {
        if (!xa || PyArray_SIZE(xa) < need.index) {
            PyErr_Format(PyExc_ValueError, "nn_op %s: index must hold %lld entries", op,
                         (long long)need.index);
            goto done;
        }
        /* every index a row of the table (input 0, rows of iv[1] floats) */
        const int64_t rows = PyArray_SIZE(ain[0]) / iv64[1];
        for (int64_t b = 0; b < need.index; b++) {
            const int32_t k = ((const int32_t *)PyArray_DATA(xa))[b];
            if (k < 0 || k >= rows) {
                PyErr_Format(PyExc_ValueError, "nn_op %s: index[%lld] = %d is outside the table's "
                             "%lld rows", op, (long long)b, k, (long long)rows);
                goto done;
            }
        }
    }
    /* scratch for the CPU kernels: what the op needs at the least (need.scratch), else room for
     * parallel tiles (conv2d, attention split theirs between threads) */
    int64_t scratch_len = (int64_t)1 << 22;
    if (need.scratch > scratch_len) scratch_len = need.scratch;
    if ((uint64_t)scratch_len > SIZE_MAX / sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "nn_op %s: the sizes are too large", op);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    py_run run;
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "nn_op", be, NULL))) {
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
        py_run_leave(&run);
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

/* nn_profile(action) -> {kind: (calls, ms)}: time per op kind of the CPU nn table
 * (ccfg_nn_cpu_profile), process-wide; "start" clears and turns timing on (returns {}), "stop"
 * turns it off and returns the totals. For benchmarks (bench_unet.py --profile). */
PyObject *py_nn_profile(PyObject *self, PyObject *args)
{
    const char *action;
    const char *names[32];
    double ms[32];
    int64_t calls[32];
    (void)self;
    if (!PyArg_ParseTuple(args, "s", &action)) return NULL;
    int start;
    if (!strcmp(action, "start")) start = 1;
    else if (!strcmp(action, "stop")) start = 0;
    else {
        PyErr_Format(PyExc_ValueError, "action: 'start' or 'stop', got '%s'", action);
        return NULL;
    }
    const int n = ccfg_nn_cpu_profile(start, names, ms, calls, 32);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *t = Py_BuildValue("(Ld)", (long long)calls[i], ms[i]);
        if (!t || PyDict_SetItemString(d, names[i], t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(t);
    }
    return d;
}

/* ---- the autotuner's test hooks (vk_tune.h; tests/test_vulkan_tune.py): its cache, selection
 * and timestamp path on any Vulkan device, without the convolutions' variants */

/* candidate i of the "copies" family copies sizes[i] floats (vkCmdCopyBuffer) */
typedef struct {
    const ccfg_backend *be;
    float *src, *dst;
    const int64_t *sizes;
} tune_copies;

static int tune_copy_run(void *ctx, int id)
{
    const tune_copies *c = ctx;
    int done = 0;
    const int status = ccfg_vk_nn_copy(c->be, c->sizes[id], c->src, c->dst, &done);
    if (!status && !done) return ccfg_fail(CCFG_EINTERNAL, "vk_tune_test: the copy overlaps");
    return status;
}

/* vk_tune_test(device, action, values):
 *   "fake" (t0, t1, ...): the medians of later measures replaced by these ms (() turns it off)
 *   "copies" (key, size0, size1, ...): tune the family "test copies" at key over candidates
 *     i = a copy of size_i floats -> (chosen i, whether the cache answered) */
PyObject *py_vk_tune_test(PyObject *self, PyObject *args)
{
    static const char *const key_names[1] = {"key"};
    static const ccfg_vk_tune_kind kind = {"test copies", key_names, 1};
    static const char *const names[CCFG_VK_TUNE_MAX_CANDIDATES] = {
        "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13",
        "c14", "c15"};
    const char *device, *action;
    PyObject *values;
    double v[CCFG_VK_TUNE_MAX_CANDIDATES + 1];
    int64_t sizes[CCFG_VK_TUNE_MAX_CANDIDATES], most = 1;
    int ids[CCFG_VK_TUNE_MAX_CANDIDATES], status, choice = -1, hit = 0, fake;
    const ccfg_backend *be = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "ssO!", &device, &action, &PyTuple_Type, &values)) return NULL;
    const Py_ssize_t nv = PyTuple_GET_SIZE(values);
    if (!strcmp(action, "fake")) fake = 1;
    else if (!strcmp(action, "copies")) fake = 0;
    else {
        PyErr_Format(PyExc_ValueError, "action: 'fake' or 'copies', got '%s'", action);
        return NULL;
    }
    if (nv > CCFG_VK_TUNE_MAX_CANDIDATES + !fake || (!fake && nv < 2)) {
        PyErr_SetString(PyExc_ValueError, "values: too many or too few");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nv; i++) {
        v[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(values, i));
        if (PyErr_Occurred()) return NULL;
    }
    const int n = (int)nv - !fake;
    for (int i = 0; !fake && i < n; i++) {
        sizes[i] = (int64_t)v[i + 1];
        ids[i] = i;
        if (sizes[i] < 1 || sizes[i] > ((int64_t)1 << 26)) {
            PyErr_Format(PyExc_ValueError, "values: size %d out of range", i);
            return NULL;
        }
        if (sizes[i] > most) most = sizes[i];
    }
    py_run run;
    Py_BEGIN_ALLOW_THREADS
    status = py_open_backend(device, &be);
    if (!status && !(status = py_run_enter(&run, "vk_tune_test", be, NULL))) {
        if (fake) {
            status = ccfg_vk_tune_fake_times(be, n, v);
        } else {
            const int64_t key[1] = {(int64_t)v[0]};
            tune_copies c = {.be = be, .sizes = sizes};
            status = ccfg_vk_tune_lookup(be, &kind, key, n, ids, names, &hit, &choice);
            if (!status && !hit) {
                status = ccfg_vk_nn_scratch(be, (size_t)most * sizeof(float), &c.src);
                if (!status) status = ccfg_vk_nn_scratch(be, (size_t)most * sizeof(float), &c.dst);
                if (!status)
                    status = ccfg_vk_tune_measure(be, &kind, key, n, ids, names, tune_copy_run,
                                                  &c, "vk_tune_test", &choice);
                be->release(be, c.src);
                be->release(be, c.dst);
            }
        }
        py_run_leave(&run);
    }
    Py_END_ALLOW_THREADS
    if (status) return py_raise_status(status);
    if (fake) Py_RETURN_NONE;
    return Py_BuildValue("(iO)", choice, hit ? Py_True : Py_False);
}
