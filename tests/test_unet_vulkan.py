"""The UNet on a Vulkan device (lavapipe here): the nn.h ops of nn_vk.c against the CPU ops of
nn_cpu.c on random inputs of odd sizes, the whole forward against diffusers' own forward for every
configuration of tests/test_unet.py, and sampling runs on the device against the CPU backend and
diffusers' DDIM loop.

Metric: max|a - b| / max|b| over the whole output. Bounds: 1e-5 per op (float32 sums in another
order), 1e-3 for a forward (issue 4), 1e-3 for sampling."""
import numpy as np
import pytest

import ccfg
from ccfg import _core
from ccfg.models import UNet

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from diffusers import DDIMScheduler  # noqa: E402

# the fixtures and helpers of the CPU tests: same configurations, same weights
from test_unet import (CONFIGS, ddim_loop, diffusers_forward, inputs, rel_err,  # noqa: E402,F401
                       saved, torch_one_thread)
# the device under test, its skip mark, subprocess runs (switches read when a device opens)
from vk_helpers import DEV, VK, fold_forward_script, needs_vk, run_json, run_py  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OP_TOL = 1e-5
FORWARD_TOL = 1e-3
SAMPLING_TOL = 1e-3


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32).ravel()


def both(op, inputs, outputs, ints, floats=(), t=None, index=None):
    """(Vulkan result, CPU result) of one nn op, each a list of the output arrays"""
    vk = _core.nn_op(DEV, op, inputs, outputs, tuple(ints), tuple(floats), t, index)
    cpu = _core.nn_op("cpu", op, inputs, outputs, tuple(ints), tuple(floats), t, index)
    return vk, cpu


def check(op, inputs, outputs, ints, floats=(), t=None, index=None, tol=OP_TOL):
    vk, cpu = both(op, inputs, outputs, ints, floats, t, index)
    for a, b, init in zip(vk, cpu, outputs):
        # a test that cannot fail is a defect: the op must have written something
        assert not np.array_equal(b, init), f"{op}: the CPU op left its output unchanged"
        assert np.all(np.isfinite(a)), op
        err = rel_err(a, b)
        assert err <= tol, f"{op}: {err:.3g}"
    return vk, cpu


# --------------------------------------------------------------------------- op by op

@needs_vk
@pytest.mark.parametrize("k,stride,pad0,pad1", [(3, 1, 1, 1), (1, 1, 0, 0), (3, 2, 1, 1),
                                                (3, 2, 0, 1), (2, 1, 0, 1)])
@pytest.mark.parametrize("bias,accumulate", [(True, False), (False, True)])
def test_conv2d(k, stride, pad0, pad1, bias, accumulate):
    rng = np.random.default_rng(k * 100 + stride * 10 + pad0)
    batch, cin, h, w, cout = 3, 5, 9, 7, 11
    ho, wo = (h + pad0 + pad1 - k) // stride + 1, (w + pad0 + pad1 - k) // stride + 1
    x, wt = rnd(rng, cin, batch, h, w), rnd(rng, cout, cin, k, k)
    b = rnd(rng, cout) if bias else None
    y0 = rnd(rng, cout, batch, ho, wo)
    check("conv2d", [x, wt, b], [y0], (batch, cin, h, w, cout, k, stride, pad0, pad1, accumulate))


# (batch, cin, h, w, cout, k, stride, pad0, pad1): the direct shader (<= 32 output channels) and
# the tiled one, a 1x1, a stride-2 downsample, and input channels split into chunks that
# accumulate (a 15x15 kernel: 9 chunks in the direct shader, 2 in the tiled one), where the
# residual belongs to the first chunk only
RESIDUAL_SHAPES = [(3, 5, 9, 7, 11, 3, 1, 1, 1), (2, 21, 9, 7, 70, 3, 1, 1, 1),
                   (2, 64, 8, 8, 128, 1, 1, 0, 0), (2, 37, 9, 9, 65, 3, 2, 0, 1),
                   (1, 1200, 15, 15, 8, 15, 1, 0, 0), (1, 1200, 15, 15, 40, 15, 1, 0, 0)]


@needs_vk
@pytest.mark.parametrize("shape", RESIDUAL_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_residual(shape, bias):
    """nn.h conv2d_residual: y = (conv + bias) + r with r a binding of its own. Bit for bit the
    copy of r into y and the accumulating conv2d it replaces in a resnet; within float32 sums of
    torch's float64 convolution + bias + r; y's old contents never read (NaN there); r = y is
    the accumulate. The CPU backend has no such op and says so."""
    batch, cin, h, w, cout, k, s, p0, p1 = shape
    rng = np.random.default_rng(cin + cout + k)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x, wt = rnd(rng, cin, batch, h, w), 0.1 * rnd(rng, cout, cin, k, k)
    b = rnd(rng, cout) if bias else None
    r = rnd(rng, cout, batch, ho, wo)
    ints = (batch, cin, h, w, cout, k, s, p0, p1)
    nan = np.full(r.size, np.nan, np.float32)
    got = _core.nn_op(DEV, "conv2d_residual", [x, wt, b, r], [nan], ints + (0,), (), None, None)[0]
    acc = _core.nn_op(DEV, "conv2d", [x, wt, b], [r], ints + (1,), (), None, None)[0]
    own = _core.nn_op(DEV, "conv2d_residual", [x, wt, b], [r], ints + (1,), (), None, None)[0]
    assert np.array_equal(got, acc) and np.array_equal(own, acc)
    xt = torch.from_numpy(x.reshape(cin, batch, h, w).astype(np.float64)).permute(1, 0, 2, 3)
    xt = torch.nn.functional.pad(xt, (p0, p1, p0, p1))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(wt.reshape(cout, cin, k, k)
                                                          .astype(np.float64)), stride=s)
    ref = ref.permute(1, 0, 2, 3).numpy().ravel() + r
    if bias:
        ref = ref + np.repeat(b.astype(np.float64), batch * ho * wo)
    # float32 sums of 270,000 terms in the chunked shapes: their rounding grows with the length
    assert rel_err(got, ref) <= (OP_TOL if cin * k * k < 1e5 else 1e-4)
    with pytest.raises(ValueError, match="conv2d_residual: the cpu backend has none"):
        _core.nn_op("cpu", "conv2d_residual", [x, wt, b, r], [nan], ints + (0,), (), None, None)


@needs_vk
@pytest.mark.parametrize("in_bias,film,silu", [(False, False, False), (True, False, True),
                                               (False, True, True), (True, True, False)])
def test_group_norm(in_bias, film, silu):
    rng = np.random.default_rng(int(in_bias) + 2 * int(film) + 4 * int(silu))
    batch, c, hw, groups = 3, 12, 35, 4
    x = 3.0 * rnd(rng, c, batch, hw) + 1.5        # an offset: the variance is not trivial
    ib = rnd(rng, batch, c) if in_bias else None
    fl = 0.3 * rnd(rng, batch, 2 * c) if film else None
    check("group_norm", [x, ib, rnd(rng, c), rnd(rng, c), fl],
          [np.zeros(c * batch * hw, np.float32)], (batch, c, hw, groups, silu), (1e-5,))


# (batch, c, hw, groups): a (sample, group) of at most 8192 values (vk_nn.h CCFG_VK_GN_FUSED) is
# one workgroup of one dispatch; one more value takes the three-dispatch path
GN_SIZES = [(2, 8, 2048, 2), (2, 8, 2049, 2), (5, 6, 1, 3), (1, 64, 1025, 8)]


@needs_vk
@pytest.mark.parametrize("batch,c,hw,groups", GN_SIZES)
def test_group_norm_one_dispatch_and_three(batch, c, hw, groups):
    rng = np.random.default_rng(batch * c + hw)
    x = 3.0 * rnd(rng, c, batch, hw) + 1.5
    ib, film = rnd(rng, batch, c), 0.3 * rnd(rng, batch, 2 * c)
    check("group_norm", [x, ib, rnd(rng, c), rnd(rng, c), film], [np.zeros(c * batch * hw, np.float32)], (batch, c, hw, groups, True), (1e-5,))


@needs_vk
def test_group_norm_without_subgroup_operations():
    """CCFG_VULKAN_NO_SUBGROUP=1: the shared-memory trees instead of subgroupAdd (devices without
    subgroup arithmetic), both paths, against the CPU"""
    code = f"""
import numpy as np
from ccfg import _core
rng = np.random.default_rng(4)
for batch, c, hw, groups in {GN_SIZES!r}:
    x = (3.0 * rng.standard_normal(c * batch * hw) + 1.5).astype(np.float32)
    args = ([x, None, rng.standard_normal(c).astype(np.float32),
             rng.standard_normal(c).astype(np.float32), None], [np.zeros_like(x)],
            (batch, c, hw, groups, True), (1e-5,), None, None)
    a = _core.nn_op("{DEV}", "group_norm", *args)[0]
    b = _core.nn_op("cpu", "group_norm", *args)[0]
    err = np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()
    assert err <= {OP_TOL}, (batch, c, hw, groups, err)
print("ok")
"""
    r = run_py(code, env={"CCFG_VULKAN_NO_SUBGROUP": "1"}, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# ------------------------------------------------ GroupNorm(+SiLU) folded into the convolution

def gn_ref(x, batch, c, hw, groups, eps, gamma, beta, ib=None, film=None, silu=False):
    """nn.h group_norm from its formula in float64 (torch's GroupNorm: biased variance): x and the
    result (c, batch, hw) in CNHW"""
    v = x.reshape(c, batch, hw).astype(np.float64).transpose(1, 0, 2)      # (batch, c, hw)
    if ib is not None:
        v = v + ib.reshape(batch, c, 1)
    g = v.reshape(batch, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    v = g.reshape(batch, c, hw) * gamma[:, None] + beta[:, None]
    if film is not None:
        f = film.reshape(batch, 2 * c).astype(np.float64)
        v = v * (1 + f[:, :c, None]) + f[:, c:, None]
    if silu:
        v = v / (1 + np.exp(-v))
    return v.transpose(1, 0, 2)


def conv_ref(v, batch, cin, h, w, wt, cout, k, s, p0, p1, bias=None):
    """nn.h conv2d from its formula in float64: v (cin, batch, h, w) zero-padded by p0 before and
    p1 after, kernel wt (cout, cin, k, k), stride s; the result (cout, batch, ho, wo) flattened"""
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    vp = np.zeros((cin, batch, h + p0 + p1, w + p0 + p1))
    vp[:, :, p0:p0 + h, p0:p0 + w] = v.reshape(cin, batch, h, w)
    W = wt.reshape(cout, cin, k, k).astype(np.float64)
    y = np.zeros((cout, batch, ho, wo))
    for ky in range(k):
        for kx in range(k):
            patch = vp[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]
            y += np.einsum("oc,cbyx->obyx", W[:, :, ky, kx], patch)
    if bias is not None:
        y += bias.astype(np.float64)[:, None, None, None]
    return y.ravel()


@needs_vk
@pytest.mark.parametrize("in_bias,film", [(False, False), (True, False), (False, True),
                                          (True, True)])
@pytest.mark.parametrize("batch,c,hw,groups", GN_SIZES)
def test_group_norm_affine(in_bias, film, batch, c, hw, groups):
    """nn.h group_norm_affine on Vulkan: x a + d is the GroupNorm (with the ResNet's time bias or
    FiLM) of the formula, for one-workgroup groups and the large ones (phases 0 and 1, which then
    writes (a, d) itself); and it agrees with the CPU's (a, d)"""
    rng = np.random.default_rng(batch * c + hw + 7 * in_bias + 11 * film)
    x = 3.0 * rnd(rng, c, batch, hw) + 1.5
    ib = rnd(rng, batch, c) if in_bias else None
    fl = 0.3 * rnd(rng, batch, 2 * c) if film else None
    gamma, beta = rnd(rng, c), rnd(rng, c)
    args = ([x, ib, gamma, beta, fl], [np.zeros(2 * batch * c, np.float32)],
            (batch, c, hw, groups, 0), (1e-5,), None, None)
    ab = _core.nn_op(DEV, "group_norm_affine", *args)[0]
    a, d = ab[0::2].reshape(batch, c), ab[1::2].reshape(batch, c)
    got = x.reshape(c, batch, hw) * a.T[:, :, None] + d.T[:, :, None]
    ref = gn_ref(x, batch, c, hw, groups, 1e-5, gamma, beta, ib, fl)
    assert rel_err(got, ref) <= OP_TOL
    assert rel_err(ab, _core.nn_op("cpu", "group_norm_affine", *args)[0]) <= OP_TOL


# (batch, cin, h, w, cout, k, stride, pad0, pad1, groups): odd images, input channels not a
# multiple of the stage width (8), two output-channel tiles, a stride-2 and a 1x1, input
# channels in two chunks (the 15x15 kernel: (a, d) from the chunk's first channel), and groups
# of more than 8192 values (the statistics in two dispatches)
NORM_CONV_SHAPES = [(3, 20, 7, 9, 70, 3, 1, 1, 1, 4), (2, 36, 9, 5, 65, 3, 1, 1, 1, 6),
                    (2, 24, 7, 6, 40, 3, 2, 1, 1, 8), (2, 12, 5, 7, 48, 1, 1, 0, 0, 3),
                    (1, 1200, 15, 15, 40, 15, 1, 0, 0, 8), (2, 16, 60, 50, 40, 3, 1, 1, 1, 1)]


def norm_conv_case(shape, silu, seed):
    """inputs of conv2d_packed_norm for shape (Vulkan's (a, d)), the float64 reference (the
    GroupNorm, then SiLU, then the zero-padded convolution) and the normalised tensor v"""
    batch, cin, h, w, cout, k, s, p0, p1, groups = shape
    rng = np.random.default_rng(seed)
    x = 2.0 * rnd(rng, cin, batch, h, w) + 0.5
    gamma, beta = rnd(rng, cin), rnd(rng, cin) + 2.0    # SiLU(d) far from 0 at the padding
    wt, b = 0.1 * rnd(rng, cout, cin, k, k), rnd(rng, cout)
    ab = _core.nn_op(DEV, "group_norm_affine", [x, None, gamma, beta, None],
                     [np.zeros(2 * batch * cin, np.float32)], (batch, cin, h * w, groups, 0),
                     (1e-5,), None, None)[0]
    v = gn_ref(x, batch, cin, h * w, groups, 1e-5, gamma, beta, silu=silu)
    return x, wt, b, ab, conv_ref(v, batch, cin, h, w, wt, cout, k, s, p0, p1, b), v


@pytest.fixture
def norm_fold(monkeypatch):
    """the fold is off unless CCFG_VULKAN_NORM_FOLD=1 (read at every call)"""
    monkeypatch.setenv("CCFG_VULKAN_NORM_FOLD", "1")


@needs_vk
@pytest.mark.usefixtures("norm_fold")
@pytest.mark.parametrize("shape", NORM_CONV_SHAPES)
@pytest.mark.parametrize("silu", [True, False])
def test_conv2d_packed_norm(shape, silu):
    """nn.h conv2d_packed_norm on Vulkan (the tiled float32 shader staging x a + d, then SiLU):
    the convolution of the normalised tensor with zero padding, against the float64 reference
    written from the formulas; y's old contents never read (NaN there); accumulate onto y and a
    residual in the epilogue (bit for bit the copy and accumulate)"""
    batch, cin, h, w, cout, k, s, p0, p1, groups = shape
    x, wt, b, ab, ref, _ = norm_conv_case(shape, silu, cin + cout + k + silu)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    ny = cout * batch * ho * wo
    ints = (batch, cin, h, w, cout, k, s, p0, p1)
    nan = np.full(ny, np.nan, np.float32)
    got = _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab], [nan], ints + (0, silu, 0), (),
                      None, None)[0]
    # float32 sums of up to 270,000 terms in the chunked shape
    tol = OP_TOL if cin * k * k < 1e5 else 1e-4
    assert rel_err(got, ref) <= tol
    r = rnd(np.random.default_rng(1), ny)
    acc = _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab], [r], ints + (1, silu, 0), (),
                      None, None)[0]
    res = _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab, r], [nan], ints + (0, silu, 1),
                      (), None, None)[0]
    assert np.array_equal(acc, res)
    assert rel_err(res, ref + r) <= tol


@needs_vk
@pytest.mark.usefixtures("norm_fold")
def test_conv2d_packed_norm_pads_with_zeros():
    """the padding is of the normalised tensor: 0, not SiLU(d), what a fold that normalised the
    padded input would compute (a test that could fail: the two references differ by far more
    than the tolerance)"""
    shape = NORM_CONV_SHAPES[0]
    batch, cin, h, w, cout, k, s, p0, p1, groups = shape
    x, wt, b, ab, ref, v = norm_conv_case(shape, True, 3)
    d = ab[1::2].reshape(batch, cin).T.astype(np.float64)
    vp = np.broadcast_to((d / (1 + np.exp(-d)))[:, :, None, None],
                         (cin, batch, h + p0 + p1, w + p0 + p1)).copy()
    vp[:, :, p0:p0 + h, p0:p0 + w] = v.reshape(cin, batch, h, w)
    wrong = conv_ref(vp, batch, cin, h + p0 + p1, w + p0 + p1, wt, cout, k, s, 0, 0, b)
    got = _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab],
                      [np.zeros(ref.size, np.float32)], (batch, cin, h, w, cout, k, s, p0, p1,
                                                         0, 1, 0), (), None, None)[0]
    assert rel_err(got, ref) <= OP_TOL
    assert rel_err(wrong, ref) > 100 * OP_TOL


@needs_vk
@pytest.mark.usefixtures("norm_fold")
def test_conv2d_packed_norm_declines_and_refuses():
    """nn.h: the Vulkan op declines (done = 0) a layer of at most 32 output channels (the direct
    shader), the hook says so; the CPU needs packed weights; bad sizes are refused"""
    shape = (2, 16, 6, 6, 32, 3, 1, 1, 1, 4)
    x, wt, b, ab, ref, _ = norm_conv_case(shape, True, 5)
    ints = (2, 16, 6, 6, 32, 3, 1, 1, 1, 0, 1, 0)
    out = [np.zeros(ref.size, np.float32)]
    with pytest.raises(ValueError, match="vulkan backend declined this layer"):
        _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab], out, ints, (), None, None)
    with pytest.raises(ValueError, match="packed"):
        _core.nn_op("cpu", "conv2d_packed_norm", [x, wt, b, ab], out, ints, (), None, None)
    with pytest.raises(ValueError, match="input 3"):
        _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab[:10]], out, ints, (), None, None)


NORM_FOLD_OPS = f"""
import json, sys
import numpy as np
sys.path.insert(0, "tests")
from test_unet_vulkan import NORM_CONV_SHAPES, norm_conv_case, rel_err
from ccfg import _core
errs = []
for shape in NORM_CONV_SHAPES[:3] + NORM_CONV_SHAPES[5:]:
    batch, cin, h, w, cout, k, s, p0, p1, groups = shape
    x, wt, b, ab, ref, _ = norm_conv_case(shape, True, 9)
    try:
        got = _core.nn_op("{DEV}", "conv2d_packed_norm", [x, wt, b, ab],
                          [np.zeros(ref.size, np.float32)],
                          (batch, cin, h, w, cout, k, s, p0, p1, 0, 1, 0), (), None, None)[0]
        errs.append(rel_err(got, ref))
    except ValueError as e:
        errs.append(str(e))
print(json.dumps(errs))
"""


@needs_vk
@pytest.mark.parametrize("env,tol", [(dict(CCFG_VULKAN_PRECISION="fp16",
                                           CCFG_VULKAN_NORM_FOLD="1"), 2e-3),
                                     (dict(CCFG_VULKAN_CONV_SPLITK="3",
                                           CCFG_VULKAN_NORM_FOLD="1"), OP_TOL),
                                     (dict(CCFG_VULKAN_NORM_FOLD="0"), None)])
def test_conv2d_packed_norm_half_splitk_and_switch(env, tol):
    """the float16 tiled shader folds too (the normalised value rounded to float16 as it is
    staged: the fp16 op contract), split-K's slices stage the normalised input, and
    without CCFG_VULKAN_NORM_FOLD=1 (the default) every layer is declined"""
    if "CCFG_VULKAN_PRECISION" in env and not VK[0].get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    errs = run_json(NORM_FOLD_OPS, env=env, timeout=600)
    for e in errs:
        if tol is None:
            assert "declined" in e, e
        else:
            assert isinstance(e, float) and e <= tol, errs
            if "CCFG_VULKAN_PRECISION" in env:
                assert e > 1e-6, "as exact as float32: did the half path run?"


@needs_vk
@pytest.mark.parametrize("silu_in,bias", [(False, True), (True, True), (True, False)])
def test_linear(silu_in, bias):
    rng = np.random.default_rng(7 + silu_in)
    rows, n_in, n_out = 5, 37, 23
    b = rnd(rng, n_out) if bias else None
    check("linear", [rnd(rng, rows, n_in), rnd(rng, n_out, n_in), b],
          [np.zeros(rows * n_out, np.float32)], (rows, n_in, n_out, silu_in))


@needs_vk
@pytest.mark.parametrize("dim,flip,shift", [(32, True, 0.0), (33, False, 1.0)])
def test_timestep_embedding(dim, flip, shift):
    t = np.array([0.0, 1.0, 999.0, 37.5])
    check("timestep_embedding", [], [np.zeros(4 * dim, np.float32)], (4, dim, flip), (shift,), t=t)


@needs_vk
def test_embedding_add():
    rng = np.random.default_rng(3)
    batch, dim, classes = 4, 19, 5
    index = np.array([4, 0, 2, 4], np.int32)
    check("embedding_add", [rnd(rng, classes, dim)], [rnd(rng, batch, dim)], (batch, dim),
          index=index)


@needs_vk
@pytest.mark.parametrize("heads,head_dim,hw", [(1, 24, 15), (3, 8, 16), (2, 5, 1)])
def test_attention(heads, head_dim, hw):
    rng = np.random.default_rng(heads * 10 + hw)
    batch = 3
    qkv = 2.0 * rnd(rng, 3 * heads * head_dim, batch, hw)     # peaked softmax rows too
    check("attention", [qkv], [np.zeros(heads * head_dim * batch * hw, np.float32)],
          (batch, hw, heads, head_dim))


@needs_vk
@pytest.mark.parametrize("batch,hw,heads,head_dim,tol", [
    (1, 1024, 1, 32, OP_TOL),       # was wrong from ~30k tokens x head_dim on (issue 13's repro)
    (2, 1000, 2, 32, OP_TOL),
    (1, 2048, 1, 16, OP_TOL),
    (1, 14000, 1, 1, 5e-5),         # 14k keys summed in one row: float32 rounding grows
    (70, 1024, 1, 1, OP_TOL),       # 71,680 queries: more workgroups than one dispatch row holds
])      # Stable Diffusion's sizes and longer sequences: tests/test_backend_ops.py
def test_attention_at_scale(batch, hw, heads, head_dim, tol):
    rng = np.random.default_rng(hw + head_dim)
    qkv = rnd(rng, 3 * heads * head_dim, batch, hw)
    check("attention", [qkv], [np.zeros(heads * head_dim * batch * hw, np.float32)],
          (batch, hw, heads, head_dim), tol=tol)


@needs_vk
@pytest.mark.parametrize("size", [32, 64, pytest.param(128, marks=pytest.mark.slow)])
def test_attention_unet_matches_cpu(tmp_path, size):
    """The reliability report's reproducer: one attention head of 32 channels over 32x32 pixels
    (1024 tokens x 32) was 16 % wrong on lavapipe, silently; and larger (4096, 16384 tokens)."""
    torch = pytest.importorskip("torch")
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=[32],
                    down_block_types=["AttnDownBlock2D"], up_block_types=["UpBlock2D"],
                    layers_per_block=1, norm_num_groups=1, attention_head_dim=None,
                    add_attention=False).eval()
    m.save_pretrained(tmp_path)
    unet = UNet.from_pretrained(str(tmp_path))
    x = np.random.default_rng(0).standard_normal((2 if size < 128 else 1, 1, size, size))
    x = x.astype(np.float32)
    cpu = unet(x, 500, device="cpu")
    assert rel_err(unet(x, 500, device=DEV), cpu) <= FORWARD_TOL * 1e-2
    with torch.no_grad():
        ref = m(torch.from_numpy(x), 500).sample.numpy()
    assert rel_err(cpu, ref) <= FORWARD_TOL


@needs_vk
def test_elementwise_and_layout_ops():
    rng = np.random.default_rng(5)
    batch, c, h, w = 3, 5, 7, 9
    n = batch * c * h * w
    x = rnd(rng, n)
    check("silu", [x], [np.zeros(n, np.float32)], (n,))
    check("copy", [x], [np.zeros(n, np.float32)], (n,))
    check("scale", [], [x], (n,), (-0.7,))
    check("upsample_nearest2x", [x], [np.zeros(4 * n, np.float32)], (batch, c, h, w))
    check("nchw_to_cnhw", [x], [np.zeros(n, np.float32)], (batch, c, h * w), (2.0, -1.0))
    check("cnhw_to_nchw", [x], [np.zeros(n, np.float32)], (batch, c, h * w))


@needs_vk
def test_op_errors_are_clear():
    with pytest.raises(ValueError, match="head"):
        _core.nn_op(DEV, "attention", [np.zeros(3 * 300 * 2, np.float32)],
                    [np.zeros(300 * 2, np.float32)], (1, 2, 1, 300), (), None, None)
    with pytest.raises(ValueError, match="groups"):
        _core.nn_op(DEV, "group_norm", [np.zeros(10, np.float32), None, np.zeros(5, np.float32),
                                        np.zeros(5, np.float32), None],
                    [np.zeros(10, np.float32)], (1, 5, 2, 2, 0), (1e-5,), None, None)
    # an array too small for the sizes given: refused by the hook, not read out of bounds
    with pytest.raises(ValueError, match="input 0 holds 4 floats, the sizes need 8"):
        _core.nn_op(DEV, "copy", [np.zeros(4, np.float32)], [np.zeros(8, np.float32)], (8,), (),
                    None, None)


# --------------------------------------------------------------------------- the whole model

@needs_vk
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_on_vulkan_matches_diffusers(saved, name):
    m, folder = saved[name]
    unet = UNet.from_pretrained(folder)
    x, t, labels = inputs(CONFIGS[name])
    ref = diffusers_forward(m, x, t, labels)
    out = unet(x, t, labels, device=DEV)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert rel_err(out, ref) <= FORWARD_TOL, name
    # the CPU model is untouched by the device copy of the weights
    assert rel_err(unet(x, t, labels), ref) <= 1e-4


@needs_vk
def test_pipelined_forward_is_deterministic(saved):
    """issue 11: the forward's pacing submits a piece without waiting for it (be->submit, two
    command buffers) while the next is recorded; buffers a running piece uses are freed only
    after it ran. The same forward, repeated and with other work between, is bit for bit the
    same, and matches the CPU; with the profile on (every piece waited for) too."""
    m, folder = saved["3_levels_attention"]
    unet = UNet.from_pretrained(folder)
    x, t, labels = inputs(CONFIGS["3_levels_attention"])
    first = unet(x, t, labels, device=DEV)
    for _ in range(2):
        _core.vk_op(DEV, "axpbypcz", (x.ravel(), None, None), (2.0, 0.0, 0.0))
        assert np.array_equal(unet(x, t, labels, device=DEV), first)
    with ccfg.profiling.profile(DEV) as prof:
        assert np.array_equal(unet(x, t, labels, device=DEV), first)
    assert prof.batches >= 2       # the pacing submitted pieces (lavapipe: at every checkpoint)
    assert rel_err(first, unet(x, t, labels)) <= FORWARD_TOL


@needs_vk
def test_sync_pacing_switch_gives_the_same_forward():
    """CCFG_VULKAN_SYNC_PACING=1 (each pacing submit waits, as before the two command buffers:
    the benchmarks' comparison) computes the same forward bit for bit"""
    import os
    code = f"""
import numpy as np, ccfg
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
np.save(__import__("sys").argv[1], unet(x, 300, [0, 1, 2, 3], device="{DEV}"))
"""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        outs = []
        for i, flag in enumerate(("0", "1")):
            path = os.path.join(tmp, f"{i}.npy")
            r = run_py(code, path, env={"CCFG_VULKAN_SYNC_PACING": flag}, timeout=300)
            assert r.returncode == 0, r.stderr
            outs.append(np.load(path))
    assert np.array_equal(outs[0], outs[1])


RESIDUAL_RUN = """
import json, sys
import numpy as np, ccfg
from diffusers import UNet2DModel
dev = sys.argv[2]
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
unet(x, 300, [0, 1, 2, 3], device=dev)
with ccfg.profiling.profile(dev) as prof:
    out = unet(x, 300, [0, 1, 2, 3], device=dev)
np.save(sys.argv[1], out)
print(json.dumps(sum(c for k, c, _ in prof.rows if k.startswith("copy"))))
"""


@needs_vk
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_residual_in_the_convolution_gives_the_same_forward(precision):
    """issue 11: a resnet without a 1x1 shortcut adds its input in conv2's epilogue (nn.h
    conv2d_residual) instead of copying it into the output for conv2 to accumulate onto: the
    shipped model's forward is bit for bit the one with CCFG_VULKAN_NO_CONV_RESIDUAL=1 (the copy,
    as before) in float32 and in float16 (the f16 shader's epilogue), with 3 copies fewer"""
    import os
    import tempfile
    if precision == "fp16" and not VK[0].get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    with tempfile.TemporaryDirectory() as tmp:
        outs, copies = [], []
        for i, flag in enumerate(("0", "1")):
            path = os.path.join(tmp, f"{i}.npy")
            copies.append(run_json(RESIDUAL_RUN, path, DEV, env={
                "CCFG_VULKAN_NO_CONV_RESIDUAL": flag, "CCFG_VULKAN_PRECISION": precision},
                timeout=300))
            outs.append(np.load(path))
    assert np.array_equal(outs[0], outs[1])
    # the shipped model's resnets without a shortcut: 2 at 32x32, 1 in the mid block
    assert copies[1] - copies[0] == 3, copies


# the device forwards, one process per fold state (tests/vk_helpers.py FOLD_MODELS: the models)
NORM_FOLD_RUN = fold_forward_script("""
def run(name, unet, m, x, t, labels):
    with torch.no_grad():
        lab = None if labels is None else torch.as_tensor(labels)
        ref = m(torch.from_numpy(x), t, lab).sample.numpy()
    unet(x, t, labels, device=dev)      # placed (and packed) before the profile
    with ccfg.profiling.profile(dev) as prof:
        out = unet(x, t, labels, device=dev)
    res[name] = dict(err=rel(out, ref), calls=sum(c for _, c, _ in prof.rows),
                     gn=sum(c for k, c, _ in prof.rows if k.startswith("nn_group_norm")))
""")


@needs_vk
@pytest.mark.parametrize("precision,tol", [("fp32", FORWARD_TOL), ("fp16", 3e-3)])
def test_norm_fold_forward_matches_diffusers_with_fewer_dispatches(precision, tol):
    """issue 11: a resnet's GroupNorm+SiLU folded into the convolution that reads it (nn.h
    group_norm_affine + conv2d_packed_norm: the normalised tensor never written) gives the
    forward diffusers computes, in float32 and float16 (tests/test_vulkan_half.py's
    tolerance), as does the unfused path (the default; CCFG_VULKAN_NORM_FOLD=1 folds). Dispatches per forward:
    the same count where a group fits one workgroup (a statistics dispatch replaces the
    normalisation's), 15 fewer in the model of large groups (two dispatches instead of three for
    each of its 8 resnets' 2 norms but one: norm1 of the 48 -> 96 resnet at 16x16 has 24 x 256
    values per group, one workgroup either way); the switch is the positive control."""
    if precision == "fp16" and not VK[0].get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    got = {flag: run_json(NORM_FOLD_RUN, DEV, env={"CCFG_VULKAN_NORM_FOLD": flag,
                                                   "CCFG_VULKAN_PRECISION": precision},
                          timeout=600)
           for flag in ("1", "0")}
    for flag, res in got.items():
        for name, v in res.items():
            assert v["err"] <= tol, (precision, flag, name, v)
    fold, unfold = got["1"], got["0"]
    assert fold["fashion-mnist"]["calls"] == unfold["fashion-mnist"]["calls"]
    assert unfold["large-groups"]["calls"] - fold["large-groups"]["calls"] == 15, got
    assert unfold["large-groups"]["gn"] - fold["large-groups"]["gn"] == 15, got


@needs_vk
def test_ddim_on_vulkan_matches_diffusers_and_cpu(saved):
    m, folder = saved["3_levels_attention"]
    unet = UNet.from_pretrained(folder)
    n, seed = 2, 7
    x_T = ccfg.randn(seed, n, unet.shape)
    kw = dict(guidance=None, sampler="ddim", steps=10, n=n, seed=seed, progress=False)
    vk = ccfg.sample(unet, device=DEV, **kw)
    cpu = ccfg.sample(unet, device="cpu", **kw)
    ref = ddim_loop(m, x_T, 10, DDIMScheduler(clip_sample=False).config)
    assert rel_err(vk, ref) <= SAMPLING_TOL
    assert rel_err(vk, cpu) <= SAMPLING_TOL


@needs_vk
def test_guided_sampling_on_vulkan_matches_cpu(saved):
    """CCFG with a negative class: one forward of 3N rows per step (null, positive, negative)
    with mixed labels, every step on the device"""
    _, folder = saved["class_conditional"]
    unet = UNet.from_pretrained(folder)
    kw = dict(positive=1, negative=[2], guidance=ccfg.CCFG(scale=3.0), sampler="ddim", steps=4,
              n=3, seed=11, progress=False, return_trajectory=True)
    vk, traj_vk = ccfg.sample(unet, device=DEV, **kw)
    cpu, traj_cpu = ccfg.sample(unet, device="cpu", **kw)
    assert rel_err(vk, cpu) <= SAMPLING_TOL
    assert rel_err(traj_vk, traj_cpu) <= SAMPLING_TOL
    assert not np.allclose(traj_cpu[0], traj_cpu[-1])


def test_auto_device_and_errors(saved):
    _, folder = saved["tiny_1_level"]
    unet = UNet.from_pretrained(folder)
    x = ccfg.sample(unet, steps=2, n=2, progress=False, device="auto")
    assert x.shape == (2,) + unet.shape and np.all(np.isfinite(x))
    with pytest.raises(ValueError, match="device"):
        ccfg.sample(unet, steps=2, n=2, progress=False, device="vulkan:99")
    with pytest.raises(ValueError, match="device"):
        unet(np.zeros((1,) + unet.shape, np.float32), 1, device="vulkan:99")
    with pytest.raises(TypeError, match="device"):
        unet(np.zeros((1,) + unet.shape, np.float32), 1, device=3)
