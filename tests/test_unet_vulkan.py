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

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
WHY = next((d["note"] for d in _core.devices() if d["backend"] == "vulkan" and "note" in d), "")
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"   # the backend the op hooks open by name
needs_vk = pytest.mark.skipif(not VK, reason=f"no Vulkan device: {WHY}")

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
    import os
    import subprocess
    import sys
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
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, CCFG_VULKAN_NO_SUBGROUP="1"))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


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
    import subprocess
    import sys
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
            r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, CCFG_VULKAN_SYNC_PACING=flag))
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
    import json
    import os
    import subprocess
    import sys
    import tempfile
    if precision == "fp16" and not VK[0].get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    with tempfile.TemporaryDirectory() as tmp:
        outs, copies = [], []
        for i, flag in enumerate(("0", "1")):
            path = os.path.join(tmp, f"{i}.npy")
            env = dict(os.environ, CCFG_VULKAN_NO_CONV_RESIDUAL=flag,
                       CCFG_VULKAN_PRECISION=precision)
            r = subprocess.run([sys.executable, "-c", RESIDUAL_RUN, path, DEV],
                               capture_output=True, text=True, timeout=300, env=env)
            assert r.returncode == 0, r.stderr[-3000:]
            outs.append(np.load(path))
            copies.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert np.array_equal(outs[0], outs[1])
    # the shipped model's resnets without a shortcut: 2 at 32x32, 1 in the mid block
    assert copies[1] - copies[0] == 3, copies


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
