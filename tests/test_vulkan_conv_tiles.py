"""The float32 tiled convolution's variants (issue 11; CCFG_VULKAN_CONV_TILE, csrc/nn_vk.c
conv_tile, shaders/nn_conv2d.glsl): 64x128 (the default, nn_conv2d.comp), 64x128db
(double-buffered shared memory), 128x128 (256 invocations) and 128x128db. Every variant gives
every output the same float32 multiply-adds in the same order, so each must give the bits of the
default (compared as uint32, so even the sign of a zero counts) across the epilogue's flags (bias,
accumulate, the residual), the folded GroupNorm(+SiLU) (CCFG_VULKAN_NORM_FOLD=1), split-K
(CCFG_VULKAN_CONV_SPLITK=2 and auto: read once per process, hence a subprocess per setting),
input channels in two chunks, stride 2, 1x1 and 3x3 kernels, output channels and pixels that are
not multiples of the tiles. The default itself is checked against the CPU backend at the op
tolerance of tests/test_unet_vulkan.py (max|a - b| / max|b| <= 1e-5; 1e-4 for the chunked
270,000-term sums), and each variant is seen in the per-dispatch profile under its own pipeline.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"
needs_vk = pytest.mark.skipif(not VK, reason="no Vulkan device")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OP_TOL = 1e-5       # tests/test_unet_vulkan.py: float32 sums in another order
TILES = ["64x128", "64x128db", "128x128", "128x128db"]
# the profile's kind of each variant's pipeline (csrc/backend_vk.c pipe_spec)
KINDS = {"": "nn_conv2d", "64x128": "nn_conv2d", "64x128db": "nn_conv2d_t64db",
         "128x128": "nn_conv2d_t128", "128x128db": "nn_conv2d_t128db"}

# (batch, cin, h, w, cout, k, stride, pad0, pad1): 189 pixels (two pixel tiles, the second
# partial) and 70 output channels (a partial tile of 64 and of 128); a 1x1 over exactly one tile of
# each; stride 2 with asymmetric padding and 65 channels; 256 -> 256 at 4x4 (the CIFAR model's
# lowest level: several channel tiles, a long reduction); a 15x15 kernel over 1200 channels (two
# chunks of input channels that accumulate, each with its own (a, d) offset)
SHAPES = [(3, 21, 9, 7, 70, 3, 1, 1, 1), (2, 64, 8, 8, 128, 1, 1, 0, 0),
          (2, 37, 9, 9, 65, 3, 2, 0, 1), (2, 256, 4, 4, 256, 3, 1, 1, 1),
          (1, 1200, 15, 15, 40, 15, 1, 0, 0)]

CASES = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import _core
dev, shapes, tiles = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
os.environ["CCFG_VULKAN_NORM_FOLD"] = "1"     # read at every call


def err(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def cases(shape, rng):
    batch, cin, h, w, cout, k, s, p0, p1 = shape
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    ny = cout * batch * ho * wo
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = (rng.standard_normal(cout * cin * k * k) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal(ny).astype(np.float32)
    r = rng.standard_normal(ny).astype(np.float32)
    # (a, d) per sample and channel, as nn.h group_norm_affine lays them out
    ab = np.empty(2 * batch * cin, np.float32)
    ab[0::2] = rng.uniform(0.5, 1.5, batch * cin)
    ab[1::2] = rng.standard_normal(batch * cin)
    nan = np.full(ny, np.nan, np.float32)
    i = tuple(shape)
    every = {
        "bias": ("conv2d", [x, wt, b], nan, i + (0,)),
        "accumulate": ("conv2d", [x, wt, None], y0, i + (1,)),
        "residual": ("conv2d_residual", [x, wt, b, r], nan, i + (0,)),
        "fold_silu_residual": ("conv2d_packed_norm", [x, wt, b, ab, r], nan, i + (0, 1, 1)),
        "fold_accumulate": ("conv2d_packed_norm", [x, wt, None, ab], y0, i + (1, 0, 0)),
    }
    if cin * k * k < 1e5:
        return every
    # the chunked shape (each convolution ~32,000 stages per workgroup, slow on lavapipe): what
    # the chunks change, the first chunk's bias and residual and the later chunk's (a, d)
    return {n: every[n] for n in ("bias", "fold_silu_residual")}


out = {"unequal": [], "errs": [], "kinds": {}, "reduces": {}}
for shape in shapes:
    todo = cases(shape, np.random.default_rng(sum(shape)))
    first = {}
    for tile in tiles:
        os.environ["CCFG_VULKAN_CONV_TILE"] = tile
        with ccfg.profiling.profile(dev) as prof:
            got = {name: _core.nn_op(dev, op, ins, [y.copy()], ints, (), None, None)[0]
                   for name, (op, ins, y, ints) in todo.items()}
        for kind, count, _ in prof.rows:
            if kind.startswith("nn_conv2d"):
                kinds = out["kinds"].setdefault(tile, {})
                kinds[kind] = kinds.get(kind, 0) + count
        out["reduces"][tile] = out["reduces"].get(tile, 0) + sum(
            c for kind, c, _ in prof.rows if kind == "nn_conv2d_reduce")
        for name, a in got.items():
            assert np.all(np.isfinite(a)), (shape, tile, name)
            if name not in first:
                first[name] = a
            elif not np.array_equal(a.view(np.uint32), first[name].view(np.uint32)):
                out["unequal"].append([shape, tile, name, err(a, first[name])])
    # the first variant against the CPU backend (which has no conv2d_residual: the same sum as
    # the accumulate onto r)
    for name in ("bias", "accumulate", "residual"):
        if name not in todo:
            continue
        op, ins, y, ints = todo[name]
        if name == "residual":
            op, ins, y, ints = "conv2d", ins[:3], ins[3], ints[:9] + (1,)
        cpu = _core.nn_op("cpu", op, ins, [y.copy()], ints, (), None, None)[0]
        out["errs"].append([shape, name, err(first[name], cpu)])
print(json.dumps(out))
"""


def run(env, shapes, tiles):
    """the JSON of CASES run under env (on top of ours, less the switches it sets)"""
    base = {k: v for k, v in os.environ.items()
            if k not in ("CCFG_VULKAN_CONV_SPLITK", "CCFG_VULKAN_CONV_TILE")}
    r = subprocess.run([sys.executable, "-c", CASES, DEV, json.dumps(shapes), json.dumps(tiles)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=dict(base, PYTHONPATH=ROOT, **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_vk
@pytest.mark.parametrize("splitk", ["", "2", "auto"])
def test_variants_give_the_default_bits(splitk):
    """every variant, alternated in one process (unset first: the default), gives the default's
    bits in every case; the default is within the op tolerance of the CPU backend; each variant
    ran its own pipeline; split-K splits alike under every variant (the split follows the default
    tile's grid)"""
    # the chunked shape (slow on lavapipe) unsplit only: how chunks and slices compose does not
    # depend on the variant (tests/test_vk_conv_splitk.py covers it on the default)
    shapes = SHAPES if splitk == "" else SHAPES[:4]
    tiles = [""] + TILES[1:]      # unset: 64x128 (named explicitly in the forward's test)
    out = run({"CCFG_VULKAN_CONV_SPLITK": splitk}, shapes, tiles)
    assert out["unequal"] == [], out["unequal"]
    for shape, name, e in out["errs"]:
        cin, k = shape[1], shape[5]
        assert e <= (OP_TOL if cin * k * k < 1e5 else 1e-4), (shape, name, e)
    for tile in tiles:
        kinds = out["kinds"][tile]
        tiled = {k for k in kinds if k != "nn_conv2d_reduce"}
        assert tiled == {KINDS[tile]}, (tile, kinds)
    reduces = set(out["reduces"].values())
    assert len(reduces) == 1, out["reduces"]
    if splitk == "":
        assert reduces == {0}
    elif splitk == "2":
        # one reduce per convolution, 5 per shape
        assert reduces == {5 * len(shapes)}, out["reduces"]
    else:
        assert reduces.pop() > 0


@needs_vk
def test_unet_forward_alike_under_every_variant():
    """the shipped model's forward (float32, 4 rows) gives the same bits under every variant in
    one process, and the default is within the forward tolerance of the CPU"""
    code = r"""
import json, os, sys
import numpy as np, ccfg
dev, tiles = sys.argv[1], json.loads(sys.argv[2])
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
outs, kinds = {}, {}
for tile in tiles:
    os.environ["CCFG_VULKAN_CONV_TILE"] = tile
    with ccfg.profiling.profile(dev) as prof:
        outs[tile] = unet(x, 300, [0, 1, 2, 3], device=dev)
    kinds[tile] = sorted({k for k, _, _ in prof.rows if k.startswith("nn_conv2d")})
cpu = unet(x, 300, [0, 1, 2, 3])
ref = outs[tiles[0]]
print(json.dumps({"same": [bool(np.array_equal(o.view(np.uint32), ref.view(np.uint32)))
                           for o in outs.values()], "kinds": kinds,
                  "err": float(np.abs(ref.astype(np.float64) - cpu).max() / np.abs(cpu).max())}))
"""
    base = {k: v for k, v in os.environ.items()
            if k not in ("CCFG_VULKAN_CONV_SPLITK", "CCFG_VULKAN_CONV_TILE")}
    r = subprocess.run([sys.executable, "-c", code, DEV, json.dumps(TILES)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT, env=dict(base, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(out["same"]), out
    assert out["err"] <= 1e-3, out
    for tile in TILES:
        assert KINDS[tile] in out["kinds"][tile], out["kinds"]


@needs_vk
def test_bad_value_is_refused_naming_the_variable(monkeypatch):
    """an unknown CCFG_VULKAN_CONV_TILE raises naming the variable and the accepted values, on
    every path: a convolution of at most 32 output channels (the direct shader) too, so a typo
    never passes silently (tests/test_vulkan_tune.py: the float16 path)"""
    x = np.ones(2 * 64 * 16, np.float32)
    w = np.ones(64 * 64, np.float32)
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "96x128")
    with pytest.raises(ValueError, match=r"CCFG_VULKAN_CONV_TILE must be 64x128, 64x128db, "
                                         r"128x128 or 128x128db.*'96x128'"):
        _core.nn_op(DEV, "conv2d", [x, w, None], [np.zeros(2 * 64 * 16, np.float32)],
                    (2, 64, 4, 4, 64, 1, 1, 0, 0, 0), (), None, None)
    with pytest.raises(ValueError, match=r"CCFG_VULKAN_CONV_TILE must be .*'96x128'"):
        _core.nn_op(DEV, "conv2d", [x, w[:64 * 32], None], [np.zeros(2 * 32 * 16, np.float32)],
                    (2, 64, 4, 4, 32, 1, 1, 0, 0, 0), (), None, None)
    monkeypatch.delenv("CCFG_VULKAN_CONV_TILE")
    y = _core.nn_op(DEV, "conv2d", [x, w[:64 * 32], None], [np.zeros(2 * 32 * 16, np.float32)],
                    (2, 64, 4, 4, 32, 1, 1, 0, 0, 0), (), None, None)[0]
    assert np.all(y == 64.0)
