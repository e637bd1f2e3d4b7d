"""The cooperative-matrix convolution (CCFG_VULKAN_PRECISION=coop, shaders/nn_conv2d_coop.glsl on
GL_KHR_cooperative_matrix) on a device that runs it: Mesa's lavapipe >= 26 (8x8x8 float16 ->
float32 in subgroups of 8, the nn_conv2d_coop8 variant; `make test-coop` runs this file under
Debian 13's lavapipe, tools/debian_toolchain.py) or a GPU listing 16x16x16 (nn_conv2d_coop, not
yet run anywhere). On a device without it (lavapipe 22.3) every test skips.

The precision is read when a device opens (once per process), so every run is a subprocess.

Reference, written from the definition of the convolution (not from any of our outputs): the
input and the weights rounded to float16 by NumPy (round to nearest even), their products exact
and summed in float64 (a product of two float16 has at most 22 significant bits, so float64
holds it exactly and the float64 sum of n of them is within n 2^-53 of the exact one), then
bias, the accumulated y or the residual added in float64.

Tolerance: the shader sums those exact products in float32 in an order of its own (the
cooperative matrix's, then stage after stage, chunk after chunk through y), then adds the
epilogue's terms. Whatever the order, a float32 sum of m terms is within gamma_m sum |term| of
the exact sum, gamma_m = m u / (1 - m u), u = 2^-24 (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., eq. 4.4 holds for any summation tree: depth <= m - 1). So every output must
satisfy |got - ref| <= gamma_(n + 4) (sum |w16 x16| + |bias| + |y0| + |r|), n = cin k k (the
4: bias, y or the residual, and the chunks' stores, with margin): a bound no correct order can
exceed. It is far tighter than float16's own step (2^-11 relative): a product rounded to float16
or an input rounded the wrong way (about 2^-12 of a term) exceeds it unless n is in the
thousands, and the whole-output metric of docs/api.md's contract, max|got - ref| / max|ref| <=
1e-5, is asserted too (the chunked case's gamma is 0.016)."""
import os

import pytest

import vk_helpers
from vk_helpers import DEV, HAS_COOP, INFO, VK, mesa_version, needs_coop, run_py

OP_EXACT = 1e-5

# CCFG_VULKAN_COOP_TILE: accumulators per subgroup (2x2 the default), p: the packed staging, pp:
# packed with padded shared-memory rows
TILES = ["2x2", "2x4", "4x4", "2x2p", "2x4p", "4x4p", "2x2pp", "2x4pp", "4x4pp"]


def run_json(code, precision, timeout=1200, tile=None):
    """vk_helpers.run_json under CCFG_VULKAN_PRECISION=precision (and CCFG_VULKAN_COOP_TILE=tile)"""
    env = {"CCFG_VULKAN_PRECISION": precision}
    drop = ()
    if tile is not None:
        env["CCFG_VULKAN_COOP_TILE"] = tile
        if tile != "2x2":   # the single-buffer switch has a 2x2 pipeline only (else an error)
            drop = ("CCFG_VULKAN_COOP_SINGLE_BUFFER",)
    return vk_helpers.run_json(code, env=env, drop=drop, timeout=timeout)


# --------------------------------------------------------------------------- the device

@pytest.mark.skipif(not VK or INFO.get("driver") != "llvmpipe" or
                    (mesa_version(INFO) or (0, 0)) < (26, 0), reason="not lavapipe >= 26")
def test_lavapipe_26_runs_the_8x8x8_variant():
    """lavapipe >= 26 lists 8x8x8 float16 -> float32 at subgroup scope, its subgroups are 8, and
    ccfg offers coop there (or, in a build without a glslc for GL_KHR_cooperative_matrix, refuses
    it naming that reason)"""
    shapes = INFO["cooperative_matrix"].get("VK_KHR_cooperative_matrix", [])
    assert {"M": 8, "N": 8, "K": 8, "A": "float16", "B": "float16", "C": "float32",
            "result": "float32", "scope": "subgroup"} in shapes
    assert INFO["subgroup_size"] == 8
    assert INFO["float16"] and INFO["storage_16bit"] and INFO["vulkan_memory_model"]
    if not HAS_COOP:
        code = (f"from ccfg import _core; import numpy as np; x = np.zeros(4, np.float32); "
                f"_core.nn_op({DEV!r}, 'copy', [x], [x.copy()], (4,), (), None, None)")
        r = run_py(code, env={"CCFG_VULKAN_PRECISION": "coop"}, timeout=300)
        assert r.returncode != 0
        assert "this build has no cooperative-matrix shaders" in r.stderr, r.stderr[-2000:]
        pytest.skip("this build has no cooperative-matrix shaders (no KHR-capable glslc)")


# --------------------------------------------------------------------------- op by op

# (batch, cin, h, w, cout, k, stride, pad0, pad1, mode): mode "bias", "acc" (accumulate onto y),
# "res" (conv2d_residual: bias and a residual of its own) or "res_y" (the residual is y itself).
# Partial tiles in both dimensions (cout and the pixels not multiples of the tile, 32 x 32 for
# 8x8x8, 64 x 64 for 16x16x16), cin not a multiple of the stage (8 or 16 channels), k = 1 and 3,
# stride 2 with diffusers' (0, 1) padding and (1, 1), batch > 1, more than one channel tile.
CASES = [(3, 21, 9, 7, 70, 3, 1, 1, 1, "bias"), (3, 21, 9, 7, 70, 3, 1, 1, 1, "acc"),
         (2, 64, 8, 8, 128, 1, 1, 0, 0, "bias"), (2, 13, 5, 3, 33, 1, 1, 0, 0, "acc"),
         (2, 37, 9, 9, 65, 3, 2, 0, 1, "bias"), (1, 40, 10, 10, 96, 3, 2, 1, 1, "acc"),
         (1, 130, 6, 5, 200, 3, 1, 1, 1, "res"), (2, 24, 7, 6, 48, 3, 1, 1, 1, "res_y"),
         (4, 9, 3, 4, 40, 3, 1, 1, 1, "bias")]
# input channels past the loop budget: two chunks, the second accumulating onto the first
CHUNKED = [(1, 30000, 3, 3, 40, 3, 1, 1, 1, "bias")]

OPS = r"""
import json
import numpy as np
from ccfg import _core
U = 2.0 ** -24
out = []
for i, (batch, cin, h, w, cout, k, s, p0, p1, mode) in enumerate(CASES):
    rng = np.random.default_rng(100 + i)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = (3.0 * rng.standard_normal((cin, batch, h, w))).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal((cout, batch, ho, wo)).astype(np.float32)
    r = rng.standard_normal((cout, batch, ho, wo)).astype(np.float32)
    ints = (batch, cin, h, w, cout, k, s, p0, p1)
    if mode in ("bias", "acc"):
        acc = mode == "acc"
        got = _core.nn_op(DEV, "conv2d", [x.ravel(), wt.ravel(), None if acc else b],
                          [y0.ravel()], ints + (int(acc),), (), None, None)[0]
    elif mode == "res":
        nan = np.full(y0.size, np.nan, np.float32)
        got = _core.nn_op(DEV, "conv2d_residual", [x.ravel(), wt.ravel(), b, r.ravel()], [nan],
                          ints + (0,), (), None, None)[0]
    else:
        got = _core.nn_op(DEV, "conv2d_residual", [x.ravel(), wt.ravel(), b], [y0.ravel()],
                          ints + (1,), (), None, None)[0]
    got = got.reshape(cout, batch, ho, wo).astype(np.float64)

    # the definition: float16 operands (NumPy rounds to nearest even), exact products, float64
    x16 = x.astype(np.float16).astype(np.float64)
    w16 = wt.astype(np.float16).astype(np.float64)
    xp = np.pad(x16, ((0, 0), (0, 0), (p0, p1), (p0, p1)))
    ref = np.zeros((cout, batch, ho, wo))
    mag = np.zeros((cout, batch, ho, wo))      # sum |w16 x16| per output
    ref32 = np.zeros((cout, batch, ho, wo))    # the unrounded operands (did float16 happen?)
    x32 = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p0, p1), (p0, p1)))
    for ky in range(k):
        for kx in range(k):
            sl = (slice(None), slice(None), slice(ky, ky + s * (ho - 1) + 1, s),
                  slice(kx, kx + s * (wo - 1) + 1, s))
            ref += np.einsum("oc,cbhw->obhw", w16[:, :, ky, kx], xp[sl])
            mag += np.einsum("oc,cbhw->obhw", np.abs(w16[:, :, ky, kx]), np.abs(xp[sl]))
            ref32 += np.einsum("oc,cbhw->obhw", wt[:, :, ky, kx].astype(np.float64), x32[sl])
    extra = {"bias": b[:, None, None, None], "acc": y0, "res": b[:, None, None, None] + r,
             "res_y": b[:, None, None, None] + y0}[mode].astype(np.float64)
    extra_mag = {"bias": np.abs(b)[:, None, None, None], "acc": np.abs(y0),
                 "res": np.abs(b)[:, None, None, None] + np.abs(r),
                 "res_y": np.abs(b)[:, None, None, None] + np.abs(y0)}[mode]
    ref, ref32 = ref + extra, ref32 + extra
    m = cin * k * k + 4
    gamma = m * U / (1 - m * U)
    bound = gamma * (mag + extra_mag)
    err = np.abs(got - ref)
    out.append(dict(case=[batch, cin, h, w, cout, k, s, p0, p1, mode],
                    finite=bool(np.isfinite(got).all()),
                    worst=float((err / bound).max()), rel=float(err.max() / np.abs(ref).max()),
                    fp32=float(np.abs(got - ref32).max() / np.abs(ref32).max())))
print(json.dumps(out))
"""


def check_cases(cases, tile=None):
    code = f"DEV = {DEV!r}\nCASES = {cases!r}\n" + OPS
    for r in run_json(code, "coop", tile=tile):
        what = str(r["case"])
        assert r["finite"], what
        # every output within the float32 summation bound of the definition
        assert r["worst"] <= 1.0, f"{what}: {r['worst']:.3g} x the bound"
        assert r["rel"] <= OP_EXACT, f"{what}: {r['rel']:.3g}"
        # and the operands were rounded to float16: against the unrounded convolution the
        # rounding shows, far above the summation error
        assert r["fp32"] > 10 * r["rel"] and r["fp32"] > 1e-5, what


@needs_coop
@pytest.mark.parametrize("tile", TILES)
def test_coop_convolution_against_the_definition(tile):
    """every tile and staging (CCFG_VULKAN_COOP_TILE) on its own: partial tiles of each size"""
    check_cases(CASES, tile)


@needs_coop
@pytest.mark.parametrize("tile", ["2x2", "4x4pp"])
def test_coop_convolution_chunked_input_channels(tile):
    """30000 input channels x 3 x 3 taps: more stages than an invocation may loop (lavapipe's
    loop limiter, CCFG_VK_LOOP_BUDGET), so the channels go in two dispatches, the second
    accumulating onto the first (the default tile and the largest, packed and padded)"""
    check_cases(CHUNKED, tile)


# --------------------------------------------------------------------------- which shader ran

PROFILED = r"""
import json
import numpy as np
import ccfg
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(0).standard_normal((2,) + unet.shape).astype(np.float32)
unet(x, 500, np.array([1, 7]), device=DEV)        # placed: weights converted once
with ccfg.profiling.profile(DEV) as prof:
    unet(x, 500, np.array([1, 7]), device=DEV)
print(json.dumps({k: c for k, c, _ in prof.rows}))
"""


@needs_coop
def test_coop_runs_the_cooperative_matrix_shader_and_auto_does_not():
    """under coop every convolution of more than 32 output channels is the cooperative-matrix
    shader of the device's variant (the float16 tiled shader never runs); auto stays fp16"""
    code = f"DEV = {DEV!r}\n" + PROFILED
    coop = run_json(code, "coop")
    fp16 = run_json(code, "fp16")
    auto = run_json(code, "auto")
    kinds = [k for k in coop if k.startswith("nn_conv2d_coop")]
    assert len(kinds) == 1 and coop[kinds[0]] > 0, coop
    if INFO.get("driver") == "llvmpipe":              # 8x8x8, subgroups of 8
        single = os.environ.get("CCFG_VULKAN_COOP_SINGLE_BUFFER", "0") not in ("", "0")
        assert kinds == ["nn_conv2d_coop8_sb" if single else "nn_conv2d_coop8"]
    assert "nn_conv2d_f16" not in coop
    # the same convolutions, one shader for the other
    assert coop[kinds[0]] == fp16["nn_conv2d_f16"]
    assert auto == fp16 and not any(k.startswith("nn_conv2d_coop") for k in auto)


# --------------------------------------------------------------------------- sampling

SAMPLE = r"""
import json
import numpy as np
import ccfg
unet = ccfg.models.load("fashion-mnist")
kw = dict(guidance=ccfg.CCFG(3.0), sampler="ddim", steps=4, n=2, seed=3, progress=False)
a = ccfg.sample(unet, "footwear", "sneaker", device=DEV, **kw)
b = ccfg.sample(unet, "footwear", "sneaker", device="cpu", **kw)
print(json.dumps(float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())))
"""


@needs_coop
def test_coop_sampling_run_matches_cpu():
    """the precision reaches ccfg.sample: a CCFG DDIM-4 run on the device under coop against the
    CPU backend's float32 run, at the fp16 path's bound (docs/api.md)"""
    e = run_json(f"DEV = {DEV!r}\n" + SAMPLE, "coop")
    assert 1e-6 < e <= 1e-2, e


# --------------------------------------------------------------------------- the stages

BUFFERS = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core
out, kinds = {}, set()
for i, (batch, cin, h, w, cout, k, s, p0, p1, mode) in enumerate(CASES):
    rng = np.random.default_rng(200 + i)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal(cout * batch * ho * wo).astype(np.float32)
    got = {}
    for single in ("0", "1", "0"):
        os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = single
        with ccfg.profiling.profile(DEV) as prof:
            got.setdefault(single, []).append(_core.nn_op(
                DEV, "conv2d", [x, wt, b], [y0], (batch, cin, h, w, cout, k, s, p0, p1, 1), (),
                None, None)[0].tobytes())
        kinds |= {k for k, _, _ in prof.rows if k.startswith("nn_conv2d_coop")}
    out[str(i)] = got["0"][0] == got["0"][1] == got["1"][0]
print(json.dumps(dict(same=out, kinds=sorted(kinds))))
"""


@needs_coop
def test_double_buffered_stages_match_one_stage_bit_for_bit():
    """the double-buffered stages (the default) and one stage (CCFG_VULKAN_COOP_SINGLE_BUFFER=1,
    read at every convolution) sum the same products in the same order: the same bits"""
    got = run_json(f"DEV = {DEV!r}\nCASES = {CASES!r}\n" + BUFFERS, "coop")
    assert got["same"] and all(got["same"].values()), got
    assert len(got["kinds"]) == 2 and got["kinds"][1] == got["kinds"][0] + "_sb", got


# --------------------------------------------------------------------------- the tiles

TILED = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core
same, kinds = {}, []
os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = "0"     # the tiles' own stages (2x2 has both)
for i, (batch, cin, h, w, cout, k, s, p0, p1, mode) in enumerate(CASES):
    rng = np.random.default_rng(400 + i)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal(cout * batch * ho * wo).astype(np.float32)
    got = {}
    # each tile twice, interleaved with the others: the switch is read at every convolution
    for tile in TILES + TILES[::-1]:
        os.environ["CCFG_VULKAN_COOP_TILE"] = tile
        with ccfg.profiling.profile(DEV) as prof:
            got.setdefault(tile, []).append(_core.nn_op(
                DEV, "conv2d", [x, wt, b], [y0], (batch, cin, h, w, cout, k, s, p0, p1, 1), (),
                None, None)[0].tobytes())
        if i == 0 and len(got[tile]) == 1:
            kinds.append([k for k, _, _ in prof.rows if k.startswith("nn_conv2d_coop")])
    same[str(i)] = {t: v[0] == v[1] == got["2x2"][0] for t, v in got.items()}
errors = {}
for bad in ("3x3", "4X4"):
    os.environ["CCFG_VULKAN_COOP_TILE"] = bad
    try:
        _core.nn_op(DEV, "conv2d", [x, wt, b], [y0], (batch, cin, h, w, cout, k, s, p0, p1, 1),
                    (), None, None)
    except Exception as e:
        errors[bad] = f"{type(e).__name__}: {e}"
os.environ["CCFG_VULKAN_COOP_TILE"] = "4x4"
os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = "1"
try:
    _core.nn_op(DEV, "conv2d", [x, wt, b], [y0], (batch, cin, h, w, cout, k, s, p0, p1, 1), (),
                None, None)
except Exception as e:
    errors["sb"] = f"{type(e).__name__}: {e}"
print(json.dumps(dict(same=same, kinds=kinds, errors=errors)))
"""


@needs_coop
def test_tiles_alternate_in_one_process_and_compute_the_same_bits():
    """CCFG_VULKAN_COOP_TILE read at every convolution: each tile runs its own shader (the
    profile names it), and every tile and staging gives the bits of 2x2 (each accumulator gets
    the same multiplies of the same fragments in the same order, nn_conv2d_coop.glsl); a value it
    does not know, or a tile with the single-buffer switch, is an error naming the variable"""
    got = run_json(f"DEV = {DEV!r}\nCASES = {CASES!r}\nTILES = {TILES!r}\n" + TILED, "coop")
    for case, per_tile in got["same"].items():
        assert all(per_tile.values()), (CASES[int(case)], per_tile)
    base = got["kinds"][0]
    assert len(base) == 1 and base[0] in ("nn_conv2d_coop", "nn_conv2d_coop8"), got["kinds"]
    suffix = {t: "_t" + t.replace("x", "") for t in TILES[1:]}
    assert got["kinds"] == [base] + [[base[0] + suffix[t]] for t in TILES[1:]], got["kinds"]
    for bad in ("3x3", "4X4"):
        assert got["errors"][bad].startswith("ValueError") and \
            "CCFG_VULKAN_COOP_TILE" in got["errors"][bad] and bad in got["errors"][bad], got
    assert "CCFG_VULKAN_COOP_SINGLE_BUFFER" in got["errors"]["sb"] and \
        "CCFG_VULKAN_COOP_TILE=4x4" in got["errors"]["sb"], got


# --------------------------------------------------------------------------- the subgroup size

DIGEST = r"""
import hashlib, json
import numpy as np
from ccfg import _core
h = hashlib.sha256()
for i, (batch, cin, h_, w, cout, k, s, p0, p1, mode) in enumerate(CASES):
    rng = np.random.default_rng(300 + i)
    ho, wo = (h_ + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = rng.standard_normal(cin * batch * h_ * w).astype(np.float32)
    wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = np.zeros(cout * batch * ho * wo, np.float32)
    h.update(_core.nn_op(DEV, "conv2d", [x, wt, b], [y0], (batch, cin, h_, w, cout, k, s, p0, p1,
                                                         0), (), None, None)[0].tobytes())
print(json.dumps(h.hexdigest()))
"""


@needs_coop
def test_unpinned_subgroup_size_gives_the_same_bits(monkeypatch):
    """where the device can pin the variant's subgroup size (VK_EXT_subgroup_size_control, as
    lavapipe 26 can) the pipeline pins it; CCFG_VULKAN_COOP_NO_PIN=1 takes the path of a device
    that cannot, which needs the device's own size to be the variant's: on a device whose own
    size is it, the same shader in the same subgroups, the same bits"""
    code = f"DEV = {DEV!r}\nCASES = {CASES!r}\n" + DIGEST
    pinned = run_json(code, "coop")
    monkeypatch.setenv("CCFG_VULKAN_COOP_NO_PIN", "1")
    if INFO.get("driver") == "llvmpipe":    # own size 8: the 8x8x8 variant runs unpinned
        assert run_json(code, "coop") == pinned
    else:
        r = run_py(code, env={"CCFG_VULKAN_PRECISION": "coop"}, timeout=1200)
        assert r.returncode == 0 or "cannot pin" in r.stderr, r.stderr[-2000:]
