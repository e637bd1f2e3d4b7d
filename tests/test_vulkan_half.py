"""Half precision on Vulkan (CCFG_VULKAN_PRECISION=fp16|coop|auto; fp32 is the default): the
device features ccfg.devices() reports, the errors for a precision a device cannot run, and the
precision contract of the half-precision convolutions against independent references.

The precision is read when a device opens (once per process), so every run here is a subprocess.

The contract (docs/api.md, docs/PERFORMANCE.md):
  * a convolution of more than 32 output channels computes with float16 weights and float16
    inputs (each rounded to nearest), exact products and float32 sums: against torch's float64
    convolution of the rounded operands, max|a - b| / max|b| <= OP_EXACT (only the order of
    the float32 sums differs); against the float32 convolution of the unrounded operands, the
    rounding costs at most OP_TOL;
  * convolutions of at most 32 output channels stay float32 (<= 1e-5 against float32);
  * a whole UNet forward (every other op float32, but for coop's attention: float16 Q, K, V
    and P, tests/test_vulkan_coop_attention.py) is within FORWARD_TOL of diffusers' float32
    forward (measured on lavapipe: shipped Fashion-MNIST UNet <= 9e-5, a CIFAR-shaped
    UNet2DModel with random weights 1.0e-3; torch's bf16 autocast gives 1.3e-2 on the latter).
The cooperative-matrix shader (coop) is held to the same bounds; it runs only on a device that
lists a VK_KHR_cooperative_matrix shape it has a variant for: lavapipe >= 26 (8x8x8; `make
test-coop` runs this file there) or a GPU (16x16x16). On lavapipe 22.3 those tests skip, and
tests/test_vulkan_coop.py checks coop op by op against the definition."""
import pytest

import vk_helpers
from vk_helpers import (DEV, FASHION_MNIST, FORWARD_HEAD, HAS_COOP, INFO, VK, cifar_unet_config,
                        mesa_version, needs_coop, needs_vk)

OP_EXACT = 1e-5
OP_TOL = 2e-3
FORWARD_TOL = 3e-3

needs_16bit = pytest.mark.skipif(not INFO.get("storage_16bit"),
                                 reason="the device has no storageBuffer16BitAccess")


def coop_shape(info):
    """the shape the coop shader would use on this device (csrc/backend_vk.c decide_coop), or
    None: VK_KHR_cooperative_matrix lists 16x16x16 or 8x8x8 with float16 A and B, float32 C and
    result at subgroup scope, and the device has float16, 16-bit storage and the memory model.
    The variant also needs its subgroup size (32 or 8), the device's own or one that
    VK_EXT_subgroup_size_control pins, which ccfg.devices() does not report: a device can list a
    shape and still not run coop (it says why when asked)."""
    if not (info.get("float16") and info.get("storage_16bit") and
            info.get("vulkan_memory_model")):
        return None
    shapes = info.get("cooperative_matrix", {}).get("VK_KHR_cooperative_matrix", [])
    ok = [s["M"] for s in shapes if s["M"] == s["N"] == s["K"] and s["M"] in (16, 8) and
          (s["A"], s["B"], s["C"], s["result"], s["scope"]) ==
          ("float16", "float16", "float32", "float32", "subgroup")]
    return (max(ok),) * 3 if ok else None


COOP = coop_shape(INFO)


def run_py(code, precision, timeout=900):
    """code in a process under CCFG_VULKAN_PRECISION=precision (read when the device opens)"""
    return vk_helpers.run_py(code, env={"CCFG_VULKAN_PRECISION": precision}, timeout=timeout)


def run_json(code, precision):
    """the JSON of run_py's last line of output; the process must succeed"""
    return vk_helpers.run_json(code, env={"CCFG_VULKAN_PRECISION": precision})


# --------------------------------------------------------------------------- features

@needs_vk
def test_devices_report_half_features():
    for d in VK:
        for key in ("storage_16bit", "float16", "vulkan_memory_model"):
            assert isinstance(d[key], bool), key
        coop = d["cooperative_matrix"]
        assert isinstance(coop, dict)
        assert set(coop) <= {"VK_NV_cooperative_matrix", "VK_KHR_cooperative_matrix"}
        for shapes in coop.values():
            for s in shapes:
                assert set(s) == {"M", "N", "K", "A", "B", "C", "result", "scope"}
                assert min(s["M"], s["N"], s["K"]) >= 1
        # what the C side says the device runs agrees with the features it reports (coop needs
        # a shape, and the subgroup size and the build's shaders, which are not listed)
        assert d["precisions"][:2] == ["fp32"] + (["fp16"] if d["storage_16bit"] else [])
        assert set(d["precisions"]) <= {"fp32", "fp16", "coop"}
        if "coop" in d["precisions"]:
            assert coop_shape(d)
    mesa = mesa_version(INFO)
    if INFO.get("driver") == "llvmpipe" and mesa and mesa < (26, 0):
        # Mesa's lavapipe before 26 (22.3 on Debian 12) has 16-bit storage and no cooperative
        # matrices: the fp16 path runs in CI, the coop one is refused
        assert INFO["storage_16bit"] and INFO["cooperative_matrix"] == {}
        assert INFO["precisions"] == ["fp32", "fp16"]
    if INFO.get("driver") == "llvmpipe" and mesa and mesa >= (26, 0):
        # lavapipe 26 (Debian 13's, `make test-coop`) lists 8x8x8 float16 -> float32 in
        # subgroups of 8: the coop shader's 8x8x8 variant runs there (when this build has it)
        assert coop_shape(INFO) == (8, 8, 8) and INFO["subgroup_size"] == 8


OPEN = f"""
import numpy as np
from ccfg import _core
x = np.zeros(4, np.float32)
_core.nn_op({DEV!r}, "copy", [x], [x.copy()], (4,), (), None, None)
print("opened")
"""


@needs_vk
@pytest.mark.parametrize("value", ["", "fp32", "auto"])
def test_precisions_every_device_accepts(value):
    r = run_py(OPEN, value)
    assert r.returncode == 0 and "opened" in r.stdout, r.stderr[-2000:]


@needs_vk
@pytest.mark.parametrize("value", ["bf16", "FP16", "half"])
def test_unknown_precision_is_refused_naming_the_variable(value):
    r = run_py(OPEN, value)
    assert r.returncode != 0
    assert "ValueError: CCFG_VULKAN_PRECISION must be fp32, fp16, coop or auto" in r.stderr
    assert repr(value) in r.stderr or f"'{value}'" in r.stderr


@needs_vk
def test_coop_without_the_feature_is_refused():
    """a device that does not run coop refuses it naming the variable and the reason (the
    missing extension, shape or subgroup size, or a build without the shaders)"""
    if HAS_COOP:
        pytest.skip("this device runs the cooperative-matrix convolution")
    r = run_py(OPEN, "coop")
    assert r.returncode != 0
    assert "ValueError: CCFG_VULKAN_PRECISION=coop: Vulkan device" in r.stderr, r.stderr[-2000:]
    assert "cannot run the cooperative-matrix convolution: " in r.stderr
    if COOP is None:
        assert ("VK_KHR_cooperative_matrix" in r.stderr or
                "this build has no cooperative-matrix shaders" in r.stderr), r.stderr[-2000:]


@needs_vk
def test_fp16_without_16bit_storage_is_refused():
    if INFO.get("storage_16bit"):
        pytest.skip("this device has storageBuffer16BitAccess")
    r = run_py(OPEN, "fp16")
    assert r.returncode != 0
    assert "CCFG_VULKAN_PRECISION=fp16" in r.stderr and "storageBuffer16BitAccess" in r.stderr


# --------------------------------------------------------------------------- op by op

# (batch, cin, h, w, cout, k, stride, pad0, pad1): odd channel counts (partial stages and
# tiles), a 1x1, a stride-2 downsample padded (0, 1), more output channels than one tile,
# and at most 32 output channels (the float32 direct shader in every precision)
SHAPES = [(3, 21, 9, 7, 70, 3, 1, 1, 1), (2, 64, 8, 8, 128, 1, 1, 0, 0),
          (2, 37, 9, 9, 65, 3, 2, 0, 1), (1, 130, 6, 5, 200, 3, 1, 1, 1),
          (2, 40, 7, 7, 24, 3, 1, 1, 1)]

OPS = f"""
import json
import numpy as np
import torch
from ccfg import _core
torch.set_num_threads(1)
out = []
for i, (batch, cin, h, w, cout, k, s, p0, p1) in enumerate({SHAPES!r}):
    rng = np.random.default_rng(i)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = (3.0 * rng.standard_normal((cin, batch, h, w))).astype(np.float32)
    wt = (0.2 * rng.standard_normal((cout, cin, k, k))).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for acc in (0, 1):
        y0 = rng.standard_normal((cout, batch, ho, wo)).astype(np.float32)
        got = _core.nn_op({DEV!r}, "conv2d", [x.ravel(), wt.ravel(), None if acc else b],
                          [y0.ravel()], (batch, cin, h, w, cout, k, s, p0, p1, acc), (),
                          None, None)[0].reshape(cout, batch, ho, wo)

        def ref(xx, ww):
            # torch's convolution in float64 (NCHW), padded (p0, p1) on each spatial side
            xt = torch.from_numpy(xx.astype(np.float64)).permute(1, 0, 2, 3)
            xt = torch.nn.functional.pad(xt, (p0, p1, p0, p1))
            yt = torch.nn.functional.conv2d(xt, torch.from_numpy(ww.astype(np.float64)),
                                            stride=s)
            r = yt.permute(1, 0, 2, 3).numpy()
            return r + y0 if acc else r + b[:, None, None, None]

        def err(r):
            return float(np.abs(got - r).max() / np.abs(r).max())
        h16 = lambda a: a.astype(np.float16).astype(np.float32)
        out.append(dict(shape=[batch, cin, h, w, cout, k, s, p0, p1], acc=acc,
                        rounded=err(ref(h16(x), h16(wt))), fp32=err(ref(x, wt))))
print(json.dumps(out))
"""


def check_ops(precision):
    for r in run_json(OPS, precision):
        what = f"{r['shape']} accumulate={r['acc']}"
        if r["shape"][4] <= 32:
            assert r["fp32"] <= OP_EXACT, what          # the direct shader: float32
        else:
            assert r["rounded"] <= OP_EXACT, what
            assert r["fp32"] <= OP_TOL, what
            # the half path did run: the rounding shows against float32
            assert r["fp32"] > 10 * r["rounded"] and r["fp32"] > 1e-5, what


@needs_vk
@needs_16bit
def test_fp16_convolution_contract():
    check_ops("fp16")


@needs_vk
def test_fp32_is_the_default():
    for r in run_json(OPS, ""):
        assert r["fp32"] <= OP_EXACT, r


@needs_vk
@needs_coop
def test_coop_convolution_contract():
    check_ops("coop")


# --------------------------------------------------------------------------- the whole model

# the shipped model, then a CIFAR-shaped one (3 x 32 x 32, the blocks of
# benchmarks/gpu_vs_torch.py's model, half its channels: the full model's 143 MiB of weights
# exceed lavapipe's maxStorageBufferRange)
FORWARD = FORWARD_HEAD + FASHION_MNIST + f"""
res, outs = {{}}, {{}}
x = rng.standard_normal((3,) + unet.shape).astype(np.float32)
labels = np.array([1, 7, 10])
for t in (999, 300, 10):
    with torch.no_grad():
        ref = m(torch.from_numpy(x), t, torch.as_tensor(labels)).sample.numpy()
    out = unet(x, t, labels, device={DEV!r})
    res[f"fashion-mnist t={{t}}"] = rel(out, ref)
    outs[f"fashion-mnist t={{t}}"] = float(np.abs(out).sum())
torch.manual_seed(0)
cm = UNet2DModel(**{cifar_unet_config()!r}).eval()
cu = ccfg_copy(cm)
x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
for t in (999, 20):
    with torch.no_grad():
        ref = cm(torch.from_numpy(x), t).sample.numpy()
    out = cu(x, t, device={DEV!r})
    res[f"cifar-shaped t={{t}}"] = rel(out, ref)
    outs[f"cifar-shaped t={{t}}"] = float(np.abs(out).sum())
print(json.dumps(dict(err=res, sums=outs)))
"""


def check_forward(precision):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    got = run_json(FORWARD, precision)
    for what, e in got["err"].items():
        assert e <= FORWARD_TOL, f"{precision} {what}: {e:.3g}"
        assert e > 1e-6, f"{precision} {what}: as exact as float32; did the half path run?"
    return got


@needs_vk
@needs_16bit
def test_fp16_forward_contract_and_auto():
    fp16 = check_forward("fp16")
    # auto is fp16, bit for bit, on every device with 16-bit storage: it never picks the
    # cooperative-matrix shader, verified on lavapipe 26 only
    assert run_json(FORWARD, "auto") == fp16


@needs_vk
@needs_coop
def test_coop_forward_contract():
    check_forward("coop")


SAMPLE = f"""
import json
import numpy as np
import ccfg
unet = ccfg.models.load("fashion-mnist")
kw = dict(guidance=ccfg.CCFG(3.0), sampler="ddim", steps=4, n=2, seed=3, progress=False)
a = ccfg.sample(unet, "footwear", "sneaker", device={DEV!r}, **kw)
b = ccfg.sample(unet, "footwear", "sneaker", device="cpu", **kw)
print(json.dumps(float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())))
"""


@needs_vk
@needs_16bit
def test_fp16_sampling_run_matches_cpu():
    """the precision reaches ccfg.sample: a CCFG DDIM run on the device in fp16 against the CPU
    backend's (float32) run"""
    e = run_json(SAMPLE, "fp16")
    assert 1e-6 < e <= 1e-2, e


# --------------------------------------------------------------------------- cached weights

CACHE = f"""
import hashlib, json
import numpy as np
import ccfg
from ccfg import _core
dev = {DEV!r}
digest = lambda a: hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()
x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
labels = np.array([1, 7, 10])
res = {{}}


def run(model, key):
    with ccfg.profiling.profile(dev) as prof:
        out = model(x, 300, labels, device=dev)
    res[key] = digest(out)
    res[key + " to_f16"] = sum(c for k, c, _ in prof.rows if k == "nn_to_f16")
    res[key + " f16 conv"] = sum(c for k, c, _ in prof.rows if k == "nn_conv2d_f16")
    return out


a = ccfg.models.load("fashion-mnist")
run(a, "a placing")                 # placed here: the weights converted once
run(a, "a")                         # no conversion left in a forward
_core.vk_set_precision(dev, "fp32")
run(a, "a fp32")                    # its float16 weights are stale now
b = ccfg.models.load("fashion-mnist")
run(b, "b fp32")                    # placed under fp32: no float16 weights
_core.vk_set_precision(dev, "opened")
run(a, "a again")
run(b, "b opened")                  # placed without float16 weights, run where it needs them
print(json.dumps(res))
"""


@needs_vk
@needs_16bit
def test_half_weights_converted_once_and_never_stale():
    """In fp16 a placed model converts its float16 weights once (no nn_to_f16 dispatch in a
    forward) and computes bit for bit what the per-call conversion (CCFG_VULKAN_NO_F16_CACHE=1)
    computes. A model placed under one precision and run under another (the test hook
    _core.vk_set_precision) neither reads stale float16 weights nor misses them: it gives what a
    model placed under the precision it runs computes, bit for bit."""
    got = run_json(CACHE, "fp16")
    plain = run_json(CACHE, "fp32")
    per_call = vk_helpers.run_json(CACHE, env={"CCFG_VULKAN_PRECISION": "fp16",
                                               "CCFG_VULKAN_NO_F16_CACHE": "1"})
    # cached: converted when placed, never in a forward; the half path ran
    assert got["a placing to_f16"] > 0 and got["a to_f16"] == 0 and got["a f16 conv"] > 0
    # the per-call conversion (the path before) converts in every forward, same result
    assert per_call["a to_f16"] == per_call["a f16 conv"] > 0
    assert per_call["a"] == got["a"]
    # under fp32 the model placed under fp16 computes what fp32 computes, bit for bit: the one
    # placed under fp32 in the same process, and a process that opened the device in fp32
    assert got["a fp32"] == got["b fp32"] == plain["a"]
    assert got["a fp32 f16 conv"] == 0 and got["a fp32"] != got["a"]
    # back in fp16 both models give the fp16 result: b's float16 weights were made when it
    # first needed them (in that forward), a's again
    assert got["a again"] == got["b opened"] == got["a"]
    assert got["b opened to_f16"] > 0 and got["b opened f16 conv"] > 0
