"""A GroupNorm(+SiLU) folded into the cooperative-matrix convolution (nn.h conv2d_packed_norm
under CCFG_VULKAN_PRECISION=coop, shaders/nn_conv2d_coop.glsl flags bits 3 and 4): every staged
input is x a + d with its sample's and channel's (a, d) (nn.h group_norm_affine), then SiLU,
computed in float32 and then rounded to float16; out-of-image taps are 0 (the padding of the
normalised tensor). CCFG_VULKAN_NORM_FOLD: "1" on everywhere, "0" off everywhere, unset or
empty each family's default: off for the SIMT shaders, csrc/vk_nn.h
CCFG_VK_COOP_NORM_FOLD_DEFAULT for coop (off, by the H200 arithmetic of docs/PERFORMANCE.md; read
here from the header, so a flip of that constant needs no change to this file).

Runs where tests/test_vulkan_coop.py runs (lavapipe >= 26: `build/toolchain/lavapipe-run
.venv/bin/python -m pytest -q tests/test_vulkan_coop_fold.py`; a GPU listing 16x16x16); the coop
tests skip elsewhere. The precision is read when a device opens, so the device runs in a
subprocess; the references are computed here, in float64 NumPy from the definitions.

The folded convolution's reference. With the device's (a, d) (float32, checked against a NumPy
GroupNorm below): v = SiLU(x a + d) in float64, rounded to float16 by NumPy (nearest even):
v16; the weights rounded likewise: w16; then the definition of tests/test_vulkan_coop.py (exact
products, float64 sums, zero padding). The shader computes v in float32, v' = v + e, and
rounds v' instead of v, so where v lies within |e| of a float16 rounding boundary its float16
input is the neighbour of v16. Bound on |e| (u = 2^-24; Vulkan's precision of exp is
3 + 2|t| ULP and of a division 2.5 ULP, one ULP at most 2u relative):
  - t = x a + d: |t' - t| <= u |x a| + u (|x a| (1 + u) + |d|) <= 2u (|x a| + |d|), with or
    without a fused multiply-add;
  - SiLU's slope is at most 1.1 (|s'(t)| = |sigma(t) (1 + t (1 - sigma(t)))|), so the error of t
    moves s by at most 1.1 times it;
  - s = t / (1 + exp(-t)) evaluated in float32: exp (3 + 2|t|) 2u, the addition u, the division
    5u: at most (12 + 4|t|) u |s|;
  so eps = 2 (1.1 * 2u (|x a| + |d|) + (12 + 4|t|) u |v|) with a factor 2 of margin (without
  SiLU, 2 * 2u (|x a| + |d|)). The float16 input q the shader used is then within
  delta = max(f16(v + eps) - v16, v16 - f16(v - eps)) of v16 (rounding is monotone), 0 unless v
  is that close to a boundary, plus 2^-14 where |v| <= 2^-14 + eps (a device that flushes
  float16 subnormals). Per output, with m = cin k k + 4 and gamma_m = m u / (1 - m u) (any
  float32 summation order, tests/test_vulkan_coop.py):
      |got - ref| <= gamma_m (sum |w16| (|v16| + delta) + |extra|) + sum |w16| delta.
The folded against the unfolded coop result: the unfolded path rounds the device's normalised
float32 tensor vu (read back here) to float16, so the two differ where the two float16 inputs
do: |fold - unfold| <= sum |w16| (delta + |v16 - f16(vu)|) + both summation bounds (the same
shader sums both in the same order: they are equal where every input is)."""
import json
import re

import numpy as np
import pytest

from test_vulkan_coop import TILES  # noqa: E402
from vk_helpers import (DEV, INFO, ROOT, fold_forward_script, needs_coop, needs_vk,  # noqa: E402
                        run_json)

U = 2.0 ** -24
EPS = 1e-5          # the GroupNorm's epsilon
F16_MIN_NORMAL = 2.0 ** -14

# (batch, cin, h, w, cout, k, stride, pad0, pad1, groups, mode, silu): mode "bias" (y's old
# contents never read: NaN), "acc" (bias, then onto y) or "res" (bias and a residual). Partial
# tiles in both dimensions, cin not a multiple of the stage (8 or 16), tiles of pixels spanning
# several samples (each pixel's own (a, d)), stride 2 with diffusers' (0, 1) padding, a 1x1,
# more than one channel tile, with and without SiLU.
CASES = [(3, 21, 9, 7, 70, 3, 1, 1, 1, 3, "bias", True),
         (2, 37, 9, 9, 65, 3, 2, 0, 1, 1, "acc", True),
         (1, 130, 6, 5, 200, 3, 1, 1, 1, 10, "res", False),
         (4, 24, 3, 4, 40, 1, 1, 0, 0, 8, "bias", True)]
# input channels past the loop budget: two chunks (ab read from the chunk's first channel, its
# stride all channels), two samples
CHUNKED = [(2, 30000, 3, 3, 40, 3, 1, 1, 1, 100, "res", True)]
# every tile and staging, and the single-buffer 2x2 (CCFG_VULKAN_COOP_SINGLE_BUFFER=1)
VARIANTS = TILES + ["2x2sb"]
# whether coop folds with CCFG_VULKAN_NORM_FOLD unset
COOP_DEFAULT = bool(int(re.search(r"CCFG_VK_COOP_NORM_FOLD_DEFAULT = (\d)",
                                  (ROOT / "csrc" / "vk_nn.h").read_text()).group(1)))


# --------------------------------------------------------------------------- inputs, references

def make_inputs(case, seed):
    batch, cin, h, w, cout, k, s, p0, p1, groups, mode, silu = case
    rng = np.random.default_rng(seed)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    f = np.float32
    return dict(
        x=(2.0 * rng.standard_normal((cin, batch, h, w)) + 0.5).astype(f),
        gamma=rng.standard_normal(cin).astype(f),
        beta=(rng.standard_normal(cin) + 2.0).astype(f),     # SiLU(d) far from 0 at the padding
        wt=(rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(f),
        b=rng.standard_normal(cout).astype(f),
        y0=rng.standard_normal((cout, batch, ho, wo)).astype(f),
        r=rng.standard_normal((cout, batch, ho, wo)).astype(f))


def f16(v):
    """v rounded to the nearest float16 (NumPy: round to nearest even), back in float64"""
    return np.asarray(v, np.float64).astype(np.float16).astype(np.float64)


def silu(t):
    return t / (1.0 + np.exp(-t))


def group_norm_def(x, groups, gamma, beta):
    """GroupNorm from its definition (float64): per sample and group of channels, (x - mean) /
    sqrt(var + eps) (biased variance), then gamma, beta per channel; x is (cin, batch, h, w)"""
    cin, batch = x.shape[:2]
    g = x.astype(np.float64).reshape(groups, cin // groups, batch, -1)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    n = ((g - mean) / np.sqrt(var + EPS)).reshape(x.shape)
    return n * gamma[:, None, None, None] + beta[:, None, None, None]


def staged(x, ab, use_silu):
    """what the folded shader stages, from the device's (a, d): v (float64), its float16 v16, and
    delta, the bound of |q - v16| for the float16 q the shader rounds its float32 v' to (the
    module's docstring)"""
    cin, batch = x.shape[:2]
    a = ab[0::2].astype(np.float64).reshape(batch, cin).T[:, :, None, None]
    d = ab[1::2].astype(np.float64).reshape(batch, cin).T[:, :, None, None]
    xa = x.astype(np.float64) * a
    t = xa + d
    e_t = 2 * U * (np.abs(xa) + np.abs(d))
    if use_silu:
        v = silu(t)
        eps = 2 * (1.1 * e_t + (12 + 4 * np.abs(t)) * U * np.abs(v))
    else:
        v = t
        eps = 2 * e_t
    v16 = f16(v)
    delta = np.maximum(f16(v + eps) - v16, v16 - f16(v - eps))
    delta = np.where(np.abs(v) <= F16_MIN_NORMAL + eps, np.maximum(delta, F16_MIN_NORMAL), delta)
    return v, v16, delta


def conv(xin, wt, k, s, p0, p1, ho, wo):
    """the zero-padded convolution in float64: xin (cin, batch, h, w), wt (cout, cin, k, k)"""
    xp = np.pad(np.asarray(xin, np.float64), ((0, 0), (0, 0), (p0, p1), (p0, p1)))
    out = np.zeros((wt.shape[0], xin.shape[1], ho, wo))
    for ky in range(k):
        for kx in range(k):
            sl = (slice(None), slice(None), slice(ky, ky + s * (ho - 1) + 1, s),
                  slice(kx, kx + s * (wo - 1) + 1, s))
            out += np.einsum("oc,cbhw->obhw", wt[:, :, ky, kx].astype(np.float64), xp[sl])
    return out


def extra_terms(case, inp):
    """the epilogue's terms (bias, y or the residual) and their magnitudes"""
    mode = case[10]
    b = inp["b"].astype(np.float64)[:, None, None, None]
    add = {"bias": 0.0, "acc": inp["y0"], "res": inp["r"]}[mode]
    return b + add, np.abs(b) + np.abs(add)


# --------------------------------------------------------------------------- the device's side

DEVICE = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import _core
DEV, path = sys.argv[1], sys.argv[2]
spec = json.load(open(path + ".json"))
data = np.load(path + ".in.npz")
out, kinds, states = {}, {}, {}


def fold(i, case, variant):
    batch, cin, h, w, cout, k, s, p0, p1, groups, mode, silu = case
    x, wt, b, y0, r = (data[f"{n}{i}"] for n in ("x", "wt", "b", "y0", "r"))
    ints = (batch, cin, h, w, cout, k, s, p0, p1)
    ab = out[f"ab{i}"]
    nan = np.full(y0.size, np.nan, np.float32)
    if variant is not None:
        os.environ["CCFG_VULKAN_COOP_TILE"] = variant.replace("sb", "")
        os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = "1" if variant.endswith("sb") else "0"
    ins = [x.ravel(), wt.ravel(), b, ab] + ([r.ravel()] if mode == "res" else [])
    y = y0.ravel() if mode == "acc" else nan
    return _core.nn_op(DEV, "conv2d_packed_norm", ins, [y],
                       ints + (int(mode == "acc"), int(silu), int(mode == "res")), (), None,
                       None)[0]


for i, case in enumerate(spec["cases"]):
    batch, cin, h, w, cout, k, s, p0, p1, groups, mode, silu = case
    x, gamma, beta = (data[f"{n}{i}"] for n in ("x", "gamma", "beta"))
    out[f"ab{i}"] = _core.nn_op(DEV, "group_norm_affine", [x.ravel(), None, gamma, beta, None],
                                [np.zeros(2 * batch * cin, np.float32)],
                                (batch, cin, h * w, groups, 0), (1e-5,), None, None)[0]
    os.environ["CCFG_VULKAN_NORM_FOLD"] = "1"
    for variant in spec["variants"]:
        with ccfg.profiling.profile(DEV) as prof:
            out[f"fold{i}_{variant}"] = fold(i, case, variant)
        kinds[variant] = sorted(k for k, _, _ in prof.rows if k.startswith("nn_conv2d"))
    if spec["unfolded"]:
        os.environ["CCFG_VULKAN_COOP_TILE"] = "2x2"
        os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = "0"
        wt, b, y0, r = (data[f"{n}{i}"] for n in ("wt", "b", "y0", "r"))
        vu = _core.nn_op(DEV, "group_norm", [x.ravel(), None, gamma, beta, None],
                         [np.zeros(x.size, np.float32)], (batch, cin, h * w, groups, int(silu)),
                         (1e-5,), None, None)[0]
        out[f"vu{i}"] = vu
        ints = (batch, cin, h, w, cout, k, s, p0, p1)
        nan = np.full(y0.size, np.nan, np.float32)
        if mode == "res":
            got = _core.nn_op(DEV, "conv2d_residual", [vu, wt.ravel(), b, r.ravel()], [nan],
                              ints + (0,), (), None, None)[0]
        else:
            got = _core.nn_op(DEV, "conv2d", [vu, wt.ravel(), b],
                              [y0.ravel() if mode == "acc" else nan],
                              ints + (int(mode == "acc"),), (), None, None)[0]
        out[f"unfold{i}"] = got
        # CCFG_VULKAN_NORM_FOLD's states under coop: "1" folds, "0" declines, unset and empty
        # as the default
        for flag in (None, "", "1", "0"):
            if flag is None:
                os.environ.pop("CCFG_VULKAN_NORM_FOLD", None)
            else:
                os.environ["CCFG_VULKAN_NORM_FOLD"] = flag
            try:
                states[repr(flag)] = bool(np.array_equal(fold(i, case, None),
                                                         out[f"fold{i}_2x2"]))
            except ValueError as e:
                states[repr(flag)] = str(e)
np.savez(path + ".out.npz", **out)
print(json.dumps(dict(kinds=kinds, states=states)))
"""


def run_device(tmp_path, cases, variants, unfolded, seed0):
    """the device's results for cases (inputs made here) in one coop process"""
    path = str(tmp_path / "run")
    inputs = [make_inputs(c, seed0 + i) for i, c in enumerate(cases)]
    np.savez(path + ".in.npz", **{f"{n}{i}": a for i, inp in enumerate(inputs)
                                  for n, a in inp.items()})
    with open(path + ".json", "w") as f:
        json.dump(dict(cases=cases, variants=variants, unfolded=unfolded), f)
    meta = run_json(DEVICE, DEV, path, env={"CCFG_VULKAN_PRECISION": "coop"}, timeout=1800)
    return inputs, dict(np.load(path + ".out.npz")), meta


def fold_reference(case, inp, ab):
    """the module docstring's reference and bound for the folded convolution: (ref, bound, v,
    v16, w16, extra, extra_mag, the count of inputs near a float16 boundary)"""
    batch, cin, h, w, cout, k, s, p0, p1, groups, mode, use_silu = case
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    v, v16, delta = staged(inp["x"], ab, use_silu)
    w16 = f16(inp["wt"])
    extra, extra_mag = extra_terms(case, inp)
    ref = conv(v16, w16, k, s, p0, p1, ho, wo) + extra
    mag = conv(np.abs(v16), np.abs(w16), k, s, p0, p1, ho, wo)
    magd = conv(delta, np.abs(w16), k, s, p0, p1, ho, wo)
    m = cin * k * k + 4
    gamma = m * U / (1 - m * U)
    bound = gamma * (mag + magd + extra_mag) + magd
    return dict(ref=ref, bound=bound, v=v, v16=v16, w16=w16, delta=delta, extra=extra,
                extra_mag=extra_mag, mag=mag, gamma=gamma, near=int((delta > 0).sum()),
                shape=(cout, batch, ho, wo))


def check_fold(case, inp, ab, got, what):
    """got (a folded coop result) within the bound of the reference; returns its figures"""
    batch, cin, h, w, cout, k, s, p0, p1, groups, mode, use_silu = case
    R = fold_reference(case, inp, ab)
    got = got.reshape(R["shape"]).astype(np.float64)
    assert np.isfinite(got).all(), what
    err = np.abs(got - R["ref"])
    worst = float((err / R["bound"]).max())
    rel = float(err.max() / np.abs(R["ref"]).max())
    assert worst <= 1.0, f"{what}: {worst:.3g} x the bound ({R['near']} inputs near a boundary)"
    # the normalised input was rounded to float16: against the unrounded operands the rounding
    # shows, far above what is left
    ho, wo = R["shape"][2:]
    ref32 = conv(R["v"], inp["wt"], k, s, p0, p1, ho, wo) + R["extra"]
    fp32 = float(np.abs(got - ref32).max() / np.abs(ref32).max())
    assert fp32 > 3 * rel and fp32 > 1e-5, (what, fp32, rel)
    return dict(worst=worst, rel=rel, fp32=fp32, near=R["near"])


# --------------------------------------------------------------------------- the tests

@needs_coop
def test_fold_every_variant_against_the_definition(tmp_path):
    """every tile and staging (CCFG_VULKAN_COOP_TILE) and the single-buffer 2x2, folding
    (CCFG_VULKAN_NORM_FOLD=1): within the bound of the definition (normalised in float64 from the device's (a, d),
    rounded to float16); the device's (a, d) is the GroupNorm of its definition; the padding is
    0, not SiLU(d) (what normalising the padded input would give: far outside the bound)"""
    inputs, out, meta = run_device(tmp_path, CASES, VARIANTS, False, 500)
    coop8 = INFO.get("driver") == "llvmpipe"
    for variant in VARIANTS:
        base = "nn_conv2d_coop8" if coop8 else "nn_conv2d_coop"
        kind = base + ("_sb" if variant == "2x2sb" else
                       "" if variant == "2x2" else "_t" + variant.replace("x", ""))
        assert meta["kinds"][variant] == [kind], (variant, meta["kinds"])
    for i, (case, inp) in enumerate(zip(CASES, inputs)):
        ab = out[f"ab{i}"]
        batch, cin, h, w, cout, k, s, p0, p1, groups, mode, use_silu = case
        # the device's (a, d) against GroupNorm's definition
        v = staged(inp["x"], ab, False)[0]
        gn = group_norm_def(inp["x"], groups, inp["gamma"], inp["beta"])
        assert np.abs(v - gn).max() <= 1e-5 * np.abs(gn).max(), case
        for variant in VARIANTS:
            res = check_fold(case, inp, ab, out[f"fold{i}_{variant}"], f"{case} {variant}")
            assert res["rel"] <= 1e-4, (case, variant, res)
        # the padding: 0 of the normalised tensor, not SiLU(d) of a padded x
        if use_silu and p0:     # (diffusers' (0, 1) padding of case 1 is never read)
            R = fold_reference(case, inp, ab)
            d = ab[1::2].astype(np.float64).reshape(batch, cin).T
            vp = np.broadcast_to(silu(d)[:, :, None, None],
                                 (cin, batch, h + p0 + p1, w + p0 + p1)).copy()
            vp[:, :, p0:p0 + h, p0:p0 + w] = R["v16"]
            ho, wo = R["shape"][2:]
            wrong = conv(vp, R["w16"], k, s, 0, 0, ho, wo) + R["extra"]
            got = out[f"fold{i}_2x2"].reshape(R["shape"])
            assert np.abs(got - wrong).max() > 100 * R["bound"].max(), case


@needs_coop
@pytest.mark.parametrize("variant", ["2x2", "4x4pp"])
def test_fold_chunked_input_channels(tmp_path, variant):
    """30000 input channels: two dispatches, the second reading ab from its first channel with
    every channel's stride, accumulating onto the first (the default tile and the largest, packed
    and padded)"""
    inputs, out, _ = run_device(tmp_path, CHUNKED, [variant], False, 700)
    check_fold(CHUNKED[0], inputs[0], out["ab0"], out[f"fold0_{variant}"], variant)


@needs_coop
def test_fold_against_unfolded_coop_and_the_switch(tmp_path):
    """the folded and the unfolded coop convolutions (the latter reads the device's normalised
    float32 tensor, rounded to float16 as it is staged) differ only through the float16
    rounding of their inputs: within the bound of the module's docstring, equal where every
    input rounds alike. The unfolded result holds test_vulkan_coop.py's exact bound on its own
    inputs. CCFG_VULKAN_NORM_FOLD under coop: "1" folds, "0" declines the layer, unset and empty
    do what CCFG_VK_COOP_NORM_FOLD_DEFAULT says"""
    inputs, out, meta = run_device(tmp_path, CASES, ["2x2"], True, 600)
    for i, (case, inp) in enumerate(zip(CASES, inputs)):
        batch, cin, h, w, cout, k, s, p0, p1, groups, mode, use_silu = case
        R = fold_reference(case, inp, out[f"ab{i}"])
        ho, wo = R["shape"][2:]
        vu16 = f16(out[f"vu{i}"].reshape(inp["x"].shape))
        unfold = out[f"unfold{i}"].reshape(R["shape"]).astype(np.float64)
        fold = out[f"fold{i}_2x2"].reshape(R["shape"]).astype(np.float64)
        w16a = np.abs(R["w16"])
        mag_u = conv(np.abs(vu16), w16a, k, s, p0, p1, ho, wo)
        # the unfolded path: the definition on its own float16 inputs, exactly as in
        # test_vulkan_coop.py
        ref_u = conv(vu16, R["w16"], k, s, p0, p1, ho, wo) + R["extra"]
        assert (np.abs(unfold - ref_u) <= R["gamma"] * (mag_u + R["extra_mag"])).all(), case
        # folded against unfolded
        dd = R["delta"] + np.abs(R["v16"] - vu16)
        magdd = conv(dd, w16a, k, s, p0, p1, ho, wo)
        bound = magdd + R["gamma"] * (R["mag"] + conv(R["delta"], w16a, k, s, p0, p1, ho, wo) +
                                      mag_u + 2 * R["extra_mag"])
        assert (np.abs(fold - unfold) <= bound).all(), \
            (case, float((np.abs(fold - unfold) / bound).max()))
        # where no input of an output can round differently, the two are the same sums
        alike = magdd == 0
        assert np.array_equal(fold[alike], unfold[alike]), case
    st = meta["states"]
    assert st["'1'"] is True and "declined" in st["'0'"], st
    for unset in ("None", "''"):
        assert (st[unset] is True) if COOP_DEFAULT else ("declined" in st[unset]), st


SIMT = r"""
import json, os, sys
import numpy as np
from ccfg import _core
DEV = sys.argv[1]
rng = np.random.default_rng(0)
batch, cin, h, w, cout, k, groups = 2, 16, 6, 6, 64, 3, 4
x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
gamma, beta = np.ones(cin, np.float32), np.zeros(cin, np.float32)
wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
b = np.zeros(cout, np.float32)
ab = _core.nn_op(DEV, "group_norm_affine", [x, None, gamma, beta, None],
                 [np.zeros(2 * batch * cin, np.float32)], (batch, cin, h * w, groups, 0), (1e-5,),
                 None, None)[0]
res = {}
for flag in (None, "", "0", "1"):
    if flag is None:
        os.environ.pop("CCFG_VULKAN_NORM_FOLD", None)
    else:
        os.environ["CCFG_VULKAN_NORM_FOLD"] = flag
    try:
        _core.nn_op(DEV, "conv2d_packed_norm", [x, wt, b, ab],
                    [np.zeros(cout * batch * h * w, np.float32)],
                    (batch, cin, h, w, cout, k, 1, 1, 1, 0, 1, 0), (), None, None)
        res[repr(flag)] = "folded"
    except ValueError as e:
        res[repr(flag)] = "declined" if "declined" in str(e) else str(e)
print(json.dumps(res))
"""


@needs_vk
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fold_stays_off_by_default_for_the_simt_shaders(precision):
    """CCFG_VULKAN_NORM_FOLD unset or empty: the float32 and fp16 tiled shaders decline the
    fold (issue-bound: docs/PERFORMANCE.md); "1" folds, "0" declines"""
    if precision == "fp16" and not INFO.get("storage_16bit"):
        pytest.skip("the device has no storageBuffer16BitAccess")
    assert run_json(SIMT, DEV, env={"CCFG_VULKAN_PRECISION": precision}, timeout=600) == {
        "None": "declined", "''": "declined", "'0'": "declined", "'1'": "folded"}


# the device forwards: every fold state in one process (the switch is read at every call)
FORWARD = fold_forward_script(r"""
def run(name, unet, m, x, t, labels):
    with torch.no_grad():
        lab = None if labels is None else torch.as_tensor(labels)
        ref = m(torch.from_numpy(x), t, lab).sample.numpy()
    res[name] = {}
    outs = {}
    # the switch is read at every call: the three states in one process, the model placed once
    for flag in (None, "0", "1"):
        if flag is None:
            os.environ.pop("CCFG_VULKAN_NORM_FOLD", None)
        else:
            os.environ["CCFG_VULKAN_NORM_FOLD"] = flag
        unet(x, t, labels, device=dev)      # placed (and packed) before the profile
        with ccfg.profiling.profile(dev) as prof:
            out = unet(x, t, labels, device=dev)
        outs[flag] = out
        res[name][repr(flag)] = dict(
            err=rel(out, ref), calls=sum(c for _, c, _ in prof.rows),
            gn=sum(c for k, c, _ in prof.rows if k.startswith("nn_group_norm")),
            coop=sum(c for k, c, _ in prof.rows if k.startswith("nn_conv2d_coop")))
    res[name]["unset_is_1"] = bool(np.array_equal(outs["1"], outs[None]))
    res[name]["unset_is_0"] = bool(np.array_equal(outs["0"], outs[None]))
    res[name]["fold_vs_unfolded"] = rel(outs["1"], outs["0"])
""")


@needs_coop
def test_unet_forward_with_the_fold_matches_diffusers_with_fewer_dispatches():
    """issue 11: whole UNet2DModel forwards under coop with the fold ("1"), without it ("0")
    and with the switch unset (the bits of the one CCFG_VK_COOP_NORM_FOLD_DEFAULT names), each
    within the coop contract (3e-3) of diffusers' float32 forward. Dispatches: the same count on the shipped model (every group
    fits one workgroup: one statistics dispatch replaces one normalisation dispatch), 15
    GroupNorm dispatches fewer on the model of large groups (the normalisation passes gone: two
    dispatches instead of three for each of its 16 resnet norms but one, whose 24 x 256 values
    fit one workgroup); the convolutions are the same coop dispatches"""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    got = run_json(FORWARD, DEV, env={"CCFG_VULKAN_PRECISION": "coop"}, timeout=1800)
    for name, res in got.items():
        for flag in ("None", "'0'", "'1'"):
            assert 1e-6 < res[flag]["err"] <= 3e-3, (name, flag, res)
        assert res["unset_is_1" if COOP_DEFAULT else "unset_is_0"], (name, res)
        assert res["'1'"]["coop"] == res["'0'"]["coop"] > 0, (name, res)
    fm, lg = got["fashion-mnist"], got["large-groups"]
    assert fm["'1'"]["calls"] == fm["'0'"]["calls"], fm
    assert lg["'0'"]["calls"] - lg["'1'"]["calls"] == 15, lg
    assert lg["'0'"]["gn"] - lg["'1'"]["gn"] == 15, lg
    # the fold changed the inputs' float16 rounding, so the forward moved (by about what coop
    # and fp16 differ: docs/PERFORMANCE.md), but within the contract
    assert 0 < lg["fold_vs_unfolded"] <= 3e-3 and 0 < fm["fold_vs_unfolded"] <= 3e-3, got
