"""Split-K in the Vulkan convolution (issue 11; csrc/nn_vk.c conv_tiled_dispatch): the reduction
(taps x input channels) of a tiled convolution split into S slices, each a workgroup writing its
partial tile to scratch, then nn_conv2d_reduce.comp summing the S partials in slice order and
applying bias, accumulate and residual. CCFG_VULKAN_CONV_SPLITK is read once per process, so
every case runs in a subprocess with it set: forced S = 2, 3, 7 (and the default rule with
"auto") against torch's float64 convolution at the op tolerance of tests/test_unet_vulkan.py, the
split visible in the per-dispatch profile, the same bits on repeats and across batch sizes, and
the UNet forward against the CPU at the forward tolerance.

Metric: max|a - b| / max|b| over the whole output."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ccfg import _core

pytest.importorskip("torch")

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"
needs_vk = pytest.mark.skipif(not VK, reason="no Vulkan device")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OP_TOL = 1e-5       # tests/test_unet_vulkan.py: float32 sums in another order
FORWARD_TOL = 1e-3

# (batch, cin, h, w, cout, k, stride, pad0, pad1): odd sizes and a partial channel tile, a 1x1,
# a stride-2 downsample with asymmetric padding, the 4x4 layer (256 -> 256), and input
# channels split into 2 chunks that accumulate (the loop budget: a 15x15 kernel over 1200
# channels), each chunk split on its own
SHAPES = [(3, 21, 9, 7, 70, 3, 1, 1, 1), (2, 64, 8, 8, 128, 1, 1, 0, 0),
          (2, 37, 9, 9, 65, 3, 2, 0, 1), (2, 256, 4, 4, 256, 3, 1, 1, 1),
          (1, 1200, 15, 15, 40, 15, 1, 0, 0)]

OPS = r"""
import json, sys
import numpy as np, torch
import ccfg
from ccfg import _core
dev, shapes, half = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"


def ref(x, wt, b, y0, r, batch, cin, h, w, cout, k, s, p0, p1):
    # torch float64 from the float32 inputs (CNHW flattened, as nn.h keeps them)
    xt = torch.from_numpy(x.reshape(cin, batch, h, w).astype(np.float64)).permute(1, 0, 2, 3)
    xt = torch.nn.functional.pad(xt, (p0, p1, p0, p1))
    wt64 = torch.from_numpy(wt.reshape(cout, cin, k, k).astype(np.float64))
    o = torch.nn.functional.conv2d(xt, wt64, stride=s).permute(1, 0, 2, 3).numpy().ravel()
    if b is not None:
        o = o + np.repeat(b.astype(np.float64), o.size // cout)
    if y0 is not None:
        o = o + y0
    if r is not None:
        o = o + r
    return o


def err(a, b):
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


out = {"errs": [], "reduces": 0}
rng = np.random.default_rng(11)
with ccfg.profiling.profile(dev) as prof:
    for shape in shapes:
        batch, cin, h, w, cout, k, s, p0, p1 = shape
        ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
        x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
        wt = (rng.standard_normal(cout * cin * k * k) / np.sqrt(cin * k * k)).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        y0 = rng.standard_normal(cout * batch * ho * wo).astype(np.float32)
        r = rng.standard_normal(y0.size).astype(np.float32)
        nan = np.full(y0.size, np.nan, np.float32)
        ints = tuple(shape)
        cases = {
            "bias": (_core.nn_op(dev, "conv2d", [x, wt, b], [nan], ints + (0,), (), None, None)[0],
                     ref(x, wt, b, None, None, *shape)),
            "accumulate": (_core.nn_op(dev, "conv2d", [x, wt, None], [y0], ints + (1,), (), None,
                                       None)[0], ref(x, wt, None, y0, None, *shape)),
            "residual": (_core.nn_op(dev, "conv2d_residual", [x, wt, b, r], [nan], ints + (0,), (),
                                     None, None)[0], ref(x, wt, b, None, r, *shape)),
        }
        for name, (got, want) in cases.items():
            assert np.all(np.isfinite(got)), (shape, name)
            out["errs"].append([shape, name, err(got, want)])
        # the same bits again, and for the first sample alone (batch invariance: a pixel's sums do
        # not depend on the grid when S is forced)
        again = _core.nn_op(dev, "conv2d_residual", [x, wt, b, r], [nan], ints + (0,), (), None,
                            None)[0]
        assert np.array_equal(again, cases["residual"][0]), shape
        n1 = h * w
        x1 = np.ascontiguousarray(x.reshape(cin, batch, n1)[:, :1]).ravel()
        one = _core.nn_op(dev, "conv2d", [x1, wt, b], [np.full(cout * ho * wo, np.nan, np.float32)],
                          (1,) + ints[1:] + (0,), (), None, None)[0]
        first = cases["bias"][0].reshape(cout, batch, ho * wo)[:, 0].ravel()
        out.setdefault("batch_equal", []).append(bool(np.array_equal(one, first)))
out["reduces"] = sum(c for kind, c, _ in prof.rows if kind == "nn_conv2d_reduce")
print(json.dumps(out))
"""


def run(code, env, *args):
    """the last line of `code`'s output (JSON), run with env on top of ours less the switch"""
    base = {k: v for k, v in os.environ.items() if k != "CCFG_VULKAN_CONV_SPLITK"}
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env=dict(base, PYTHONPATH=ROOT, **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_vk
@pytest.mark.parametrize("splitk", ["2", "3", "7"])
def test_forced_split_matches_float64_torch(splitk):
    """S forced: every case within the op tolerance of torch float64 (1e-4 for the chunked 15x15
    kernel's 270,000-term sums, as tests/test_unet_vulkan.py), one reduce dispatch per chunk of
    every convolution (5 per shape: bias, accumulate, residual, the repeat and the batch of one;
    twice that for the 2-chunk shape), bit-identical repeats and batch-invariant bits"""
    out = run(OPS, {"CCFG_VULKAN_CONV_SPLITK": splitk}, DEV, json.dumps(SHAPES), "0")
    for shape, name, e in out["errs"]:
        cin, k = shape[1], shape[5]
        assert e <= (OP_TOL if cin * k * k < 1e5 else 1e-4), (shape, name, e)
    # 5 convolutions per shape, the last shape in 2 chunks: 5 x 5 + 5 reduces
    assert out["reduces"] == 5 * len(SHAPES) + 5, out["reduces"]
    assert all(out["batch_equal"]), out["batch_equal"]


@needs_vk
def test_split_off_and_the_default_dispatch_no_reduce():
    """CCFG_VULKAN_CONV_SPLITK=0 and the default (unset: off on every device until a GPU run has
    checked the rule): no split"""
    for env in ({"CCFG_VULKAN_CONV_SPLITK": "0"}, {}):
        out = run(OPS, env, DEV, json.dumps(SHAPES[:2]), "0")
        assert out["reduces"] == 0
        assert max(e for _, _, e in out["errs"]) <= OP_TOL


@needs_vk
def test_float16_shader_splits_too():
    """CCFG_VULKAN_PRECISION=fp16: nn_conv2d_f16.comp's slices and the same reduce; within the
    float16 path's own bound of torch float64 (inputs rounded to float16: ~1e-3 relative), and
    within float32 rounding of the unsplit float16 path (the same products, sums in another
    order)"""
    if not VK[0].get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    shapes = json.dumps(SHAPES[:4])
    split = run(OPS, {"CCFG_VULKAN_CONV_SPLITK": "3", "CCFG_VULKAN_PRECISION": "fp16"}, DEV,
                shapes, "1")
    whole = run(OPS, {"CCFG_VULKAN_CONV_SPLITK": "0", "CCFG_VULKAN_PRECISION": "fp16"}, DEV,
                shapes, "1")
    assert split["reduces"] == 5 * 4 and whole["reduces"] == 0
    for (shape, name, es), (_, _, ew) in zip(split["errs"], whole["errs"]):
        assert es <= 2e-3, (shape, name, es)
        assert abs(es - ew) <= 1e-5, (shape, name, es, ew)
    assert all(split["batch_equal"])


FORWARD = r"""
import json, sys
import numpy as np, ccfg
dev = sys.argv[1]
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
labels = [0, 1, 2, 3]
with ccfg.profiling.profile(dev) as prof:
    got = unet(x, 300, labels, device=dev)
again = unet(x, 300, labels, device=dev)
cpu = unet(x, 300, labels)
print(json.dumps({"err": float(np.abs(got.astype(np.float64) - cpu).max() / np.abs(cpu).max()),
                  "same": bool(np.array_equal(got, again)),
                  "reduces": sum(c for k, c, _ in prof.rows if k == "nn_conv2d_reduce"),
                  "tiled": sum(c for k, c, _ in prof.rows if k == "nn_conv2d")}))
"""


@needs_vk
@pytest.mark.parametrize("splitk", ["3", "auto"])
def test_unet_forward_with_split_matches_cpu(splitk):
    """the shipped model's forward with every tiled convolution split (3) and with the GPU rule
    applied on lavapipe (auto: its 4-row grids are small, so it splits their long reductions)
    equals the CPU forward within the forward tolerance, the same bits when repeated"""
    out = run(FORWARD, {"CCFG_VULKAN_CONV_SPLITK": splitk}, DEV)
    assert out["err"] <= FORWARD_TOL, out
    assert out["same"]
    # forced, every tiled convolution splits (each has 2 or more stages); the rule skips those
    # with fewer than 2 x 16 stages (1x1s, the narrow levels)
    if splitk == "auto":
        assert 0 < out["reduces"] < out["tiled"], out
    else:
        assert out["reduces"] == out["tiled"] > 0, out


@needs_vk
def test_bad_switch_value_is_refused_naming_it():
    code = (r"import numpy as np, sys; from ccfg import _core; "
            r"x = np.ones(2 * 64 * 16, np.float32); "
            r"_core.nn_op(sys.argv[1], 'conv2d', [x, np.ones(64 * 64, np.float32), None], "
            r"[np.zeros(2 * 64 * 16, np.float32)], (2, 64, 4, 4, 64, 1, 1, 0, 0, 0), (), None, "
            r"None)")
    r = subprocess.run([sys.executable, "-c", code, DEV], capture_output=True, text=True,
                       timeout=300, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT, CCFG_VULKAN_CONV_SPLITK="two"))
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "CCFG_VULKAN_CONV_SPLITK=two" in r.stderr, r.stderr[-2000:]
