"""The attention on cooperative matrices (shaders/nn_attention_coop.glsl, GL_KHR_cooperative_matrix):
what CCFG_VULKAN_PRECISION=coop runs for attention unless CCFG_VULKAN_ATTENTION names a float32
shader. It runs on a device that runs the coop convolution: Mesa's lavapipe >= 26 (8x8x8 float16
-> float32 in subgroups of 8, the nn_attention_coop8_* pipelines; run this file with
`build/toolchain/lavapipe-run .venv/bin/python -m pytest ...`, tools/debian_toolchain.py) or a
GPU listing 16x16x16 (nn_attention_coop*, not yet run anywhere). Elsewhere (lavapipe 22.3) the
tests that need it skip.

The precision is read when a device opens (once per process), so every run is a subprocess.

Reference, written from the definition (not from any of our outputs): Q, K and V rounded to
float16 by NumPy (round to nearest even), per (sample, head) S = scale Q K^T in float64 with the
shader's float32 scale (1 / sqrt(head_dim) rounded to float32), the softmax in float64 (m the row
maximum, p = e^(S - m), l = sum p), O = p V / l.

Tolerance, derived per output element. The shader computes p in float32 and rounds it to
float16 before P V, and divides by the sum l' of the rounded values, so its output is
O' = sum_j p'_j v_j / sum_j p'_j with p'_j = p_j + dp_j, and exactly
    O' - O = sum_j dp_j (v_j - O) / l',   so   |O' - O| <= sum_j |dp_j| |v_j - O| / l'.
|dp_j| (in the scale of the row's final maximum, where l' >= 1):
  * float16 rounding of P: u16 p_j, u16 = 2^-11, where p_j is a normal float16 (>= 2^-14) at
    the running maximum of its tile (which is at most the final one, so p_j there is at least
    p_j here); below that (a subnormal, or flushed to zero) at most p_j itself;
  * float32 errors before that rounding, relative rho p_j: S's float32 sum of the exact float16
    products over head_dim (padded to the matrices' K with zeros) is within gamma_DP scale
    sum_d |q_d k_d| of the exact one (Higham eq. 4.4, any order), one rounding each for the
    scale and for S - m, so p_j is off by at most e^(2 dS) - 1; exp is within (3 + 2|x|) ulp
    (Vulkan's precision for exp), |x| <= R = m - min_j S_j, for p_j and for each tile's rescale
    factor alpha (which scales O and l alike but weights earlier tiles against later ones: at
    most T of them, T the number of key tiles), and a few ulp for the rest.
Then the float32 sums of P V (the matrix product's over a tile of BC <= 64 keys, the rescaled
running sums over T tiles) and of l, and the final division: gamma_(BC + 3T + 8) (sum p|v| / l +
|O|), twice (O and l). The bound is the sum of these, no margin factor: every term is a
worst case. With u16 = 2^-11 it is about 5e-4 sum_j w_j |v_j - O| per element, and it is
the P term that dominates (the float32 terms are ~1e-5 of it). On lavapipe 26 the errors reach
0.03-0.25 of it. It catches a lost, doubled or misplaced key tile, a wrong scale, mask or
row/column mapping, or a wrong rescale; it is too loose to tell float16 V or a float32 sum l
from the shader's choices (errors of the order of u16 |O|).

Also asserted: rounding happened (against the float64 attention of the unrounded inputs the
error exceeds 1e-6 relative), the profile shows the coop pipeline of the head's width class, and
CCFG_VULKAN_ATTENTION=tiled under coop runs the float32 shader (within 1e-5 of the CPU).
The whole UNet2DConditionModel forward under coop is held to the coop contract's bound against
diffusers' float32 forward (tests/test_vulkan_half.py FORWARD_TOL, docs/api.md)."""
import re

import pytest

from vk_helpers import DEV, FORWARD_HEAD, needs_coop, needs_vk, run_json, run_py

FORWARD_TOL = 3e-3      # the coop contract's whole-forward bound (tests/test_vulkan_half.py)


def run_coop(code):
    """code's JSON from a process under CCFG_VULKAN_PRECISION=coop with CCFG_VULKAN_ATTENTION
    unset (the attention coop picks by default)"""
    return run_json(code, env={"CCFG_VULKAN_PRECISION": "coop"}, drop=("CCFG_VULKAN_ATTENTION",),
                    timeout=1800)


# --------------------------------------------------------------------------- op by op

# (batch, nq, nk, heads, head_dim): Stable Diffusion's self-attention at 64x64 latents (4096
# tokens, heads of 40 and 64 channels), text cross-attention (77 keys: not a multiple of any
# tile) with heads of 80 and 160, odd token counts, batch x heads > 1, the small test models'
# widths (1-32 channels: padded to the matrices' K inside the shader), a head just under the
# widest class (250 channels) and key sequences long enough for several dispatches on lavapipe
# (its loop limit; the state carried between them)
CASES = [(1, 4096, 4096, 1, 40), (1, 4096, 4096, 1, 64), (2, 1000, 77, 2, 80),
         (1, 4096, 77, 1, 160), (3, 97, 65, 2, 37), (2, 130, 300, 3, 7), (1, 33, 1, 1, 1),
         (2, 64, 64, 4, 16), (1, 100, 100, 8, 4), (1, 257, 2000, 1, 32), (1, 70, 1100, 1, 250),
         (2, 77, 77, 2, 120)]

OPS = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core
U32, U16 = 2.0 ** -24, 2.0 ** -11
info = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d][0]
C = 8 if info["subgroup_size"] == 8 and {"M": 8, "N": 8, "K": 8, "A": "float16", "B": "float16",
    "C": "float32", "result": "float32", "scope": "subgroup"} in \
    info["cooperative_matrix"].get("VK_KHR_cooperative_matrix", []) else 16

def gamma(n):
    return n * U32 / (1 - n * U32)

def run(dev, batch, nq, nk, heads, hd, q, k, v):
    out = np.zeros(heads * hd * batch * nq, np.float32)
    return _core.nn_op(dev, "attention_qkv", [q, k, v], [out], (batch, nq, nk, heads, hd), (),
                       None, None)[0]

def attention(Q, K, V, scale):
    # one (sample, head): Q (nq, hd), K, V (nk, hd) in float64; returns O, p, m, l
    S = scale * (Q @ K.T)
    m = S.max(axis=1, keepdims=True)
    p = np.exp(S - m)
    l = p.sum(axis=1, keepdims=True)
    return p @ V / l, S, p, m, l

out = []
for i, (batch, nq, nk, heads, hd) in enumerate(CASES):
    rng = np.random.default_rng(200 + i)
    q = (0.5 * rng.standard_normal(heads * hd * batch * nq)).astype(np.float32)
    k = (0.5 * rng.standard_normal(heads * hd * batch * nk)).astype(np.float32)
    v = rng.standard_normal(heads * hd * batch * nk).astype(np.float32)
    os.environ.pop("CCFG_VULKAN_ATTENTION", None)
    with ccfg.profiling.profile(DEV) as prof:
        got = run(DEV, batch, nq, nk, heads, hd, q, k, v)
    kinds = sorted({r[0] for r in prof.rows if "attention" in r[0]})
    os.environ["CCFG_VULKAN_ATTENTION"] = "tiled"
    with ccfg.profiling.profile(DEV) as prof:
        tiled = run(DEV, batch, nq, nk, heads, hd, q, k, v)
    tiled_kinds = sorted({r[0] for r in prof.rows if "attention" in r[0]})
    cpu = run("cpu", batch, nq, nk, heads, hd, q, k, v)

    scale = float(np.float32(1.0) / np.sqrt(np.float32(hd)))
    DP = -(-hd // C) * C
    T = -(-nk // 32) + 1        # key tiles, at the smallest tile (more tiles: a larger bound)
    sh = lambda a, n: a.reshape(heads, hd, batch, n).astype(np.float64)
    q4, k4, v4 = sh(q, nq), sh(k, nk), sh(v, nk)
    r16 = lambda a: a.astype(np.float16).astype(np.float64)
    q16, k16, v16 = sh(r16(q), nq), sh(r16(k), nk), sh(r16(v), nk)
    g = got.reshape(heads, hd, batch, nq).astype(np.float64)
    worst = err_exact = mag = 0.0
    for b in range(batch):
        for h in range(heads):
            Q, K, V = q16[h, :, b].T, k16[h, :, b].T, v16[h, :, b].T
            O, S, p, m, l = attention(Q, K, V, scale)
            G = g[h, :, b].T
            # float32 before the float16 rounding of p (relative): S's sum, scale and S - m
            dS = gamma(DP) * scale * (np.abs(Q) @ np.abs(K).T) + 2 * U32 * np.abs(S) + U32 * np.abs(m)
            R = (m - S.min(axis=1, keepdims=True))
            rho = np.expm1(2 * dS.max(axis=1, keepdims=True)) + \
                (T + 2) * (3 + 2 * R) * 2 * U32 + 8 * U32
            dp = np.where(p >= 2.0 ** -14, U16 * p, p) + rho * p
            av = np.abs(V)
            bound = (dp @ av + np.abs(O) * dp.sum(axis=1, keepdims=True)) / l
            bound += 2 * gamma(64 + 3 * T + 8) * ((p @ av) / l + np.abs(O))
            worst = max(worst, float((np.abs(G - O) / bound).max()))
            O32 = attention(q4[h, :, b].T, k4[h, :, b].T, v4[h, :, b].T, scale)[0]
            err_exact = max(err_exact, float(np.abs(G - O32).max()))
            mag = max(mag, float(np.abs(O32).max()))
    rel = lambda a, c: float(np.abs(a.astype(np.float64) - c).max() / np.abs(c).max())
    out.append(dict(case=[batch, nq, nk, heads, hd], worst=worst, unrounded=err_exact / mag,
                    cpu=rel(got, cpu), tiled=rel(tiled, cpu), kinds=kinds,
                    tiled_kinds=tiled_kinds, C=C, finite=bool(np.all(np.isfinite(got)))))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ops():
    code = f"DEV = {DEV!r}\nCASES = {CASES!r}\n" + OPS
    return run_coop(code)


@needs_coop
def test_coop_attention_against_the_definition(ops):
    for r in ops:
        assert r["finite"], r
        assert r["worst"] <= 1.0, f"{r['case']}: error {r['worst']:.3g} x the bound"
        # the float16 rounding happened (the unrounded inputs' attention is not reproduced)
        assert r["unrounded"] > 1e-6, r


@needs_coop
def test_coop_attention_pipelines_and_the_tiled_switch(ops):
    for r in ops:
        hd = r["case"][4]
        name = "nn_attention_coop" + ("8_" if r["C"] == 8 else "") + str((hd + 63) // 64)
        assert r["kinds"] == [name], r
        # CCFG_VULKAN_ATTENTION=tiled under coop: the float32 shader, as without coop
        assert all(k.startswith("nn_attention_tiled") for k in r["tiled_kinds"]), r
        assert r["tiled"] <= 3e-5, r


@needs_vk
@pytest.mark.parametrize("precision", ["", "fp16"])
def test_coop_attention_refused_without_coop_precision(precision):
    """CCFG_VULKAN_ATTENTION=coop where the device's convolutions are not on cooperative matrices
    raises naming the variable and what to set"""
    code = (f"import numpy as np\nfrom ccfg import _core\nz = np.zeros(64, np.float32)\n"
            f"_core.nn_op({DEV!r}, 'attention_qkv', [z, z, z], [z.copy()], (1, 8, 8, 1, 8), (), "
            f"None, None)\n")
    r = run_py(code, env={"CCFG_VULKAN_PRECISION": precision, "CCFG_VULKAN_ATTENTION": "coop"},
               timeout=300)
    if precision == "fp16" and r.returncode and "storageBuffer16BitAccess" in r.stderr:
        pytest.skip("the device has no 16-bit storage")
    assert r.returncode != 0
    assert "CCFG_VULKAN_ATTENTION=coop: the device's convolutions are not on cooperative " \
           "matrices" in r.stderr, r.stderr[-2000:]


# --------------------------------------------------------------------------- the whole model

FORWARD = FORWARD_HEAD + r"""
from diffusers import UNet2DConditionModel
# heads of 40 and 64 channels (one head per level: diffusers' attention_head_dim is the count
# for SD 1.x configs), 256 and 64 tokens, 77 text tokens; and tests/test_unet_condition.py's
# sd15_layout widths (8 heads of 4, 8 and 16 channels)
CONFIGS = {
    "heads_40_64": dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(40, 64),
                        layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                        attention_head_dim=1,
                        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    "sd15_layout": dict(sample_size=16, in_channels=4, out_channels=4,
                        block_out_channels=(32, 64, 128, 128), layers_per_block=2,
                        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
                        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
}
res = {}
for name, cfg in CONFIGS.items():
    torch.manual_seed(0)
    m = UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    unet = ccfg_copy(m)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    ehs = rng.standard_normal((2, 77, 32)).astype(np.float32)
    t = np.array([999, 37])
    with torch.no_grad():
        ref = m(torch.from_numpy(x), torch.as_tensor(t),
                encoder_hidden_states=torch.from_numpy(ehs)).sample.numpy()
    r = {}
    for mode in ("", "tiled"):
        os.environ["CCFG_VULKAN_ATTENTION"] = mode
        with ccfg.profiling.profile(DEV) as prof:
            out = unet(x, t, device=DEV, encoder_hidden_states=ehs)
        r[mode or "default"] = dict(err=rel(out, ref), sum=float(np.abs(out).sum()),
                                    kinds=sorted({k[0] for k in prof.rows if "attention" in k[0]}))
    res[name] = r
print(json.dumps(res))
"""


@needs_coop
def test_coop_forward_with_coop_attention():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    got = run_coop(f"DEV = {DEV!r}\n" + FORWARD)
    for name, r in got.items():
        coop, tiled = r["default"], r["tiled"]
        assert coop["kinds"] and all(re.fullmatch(r"nn_attention_coop(8_)?1", k)
                                     for k in coop["kinds"]), (name, coop)
        assert all(k.startswith("nn_attention_tiled") for k in tiled["kinds"]), (name, tiled)
        for what in (coop, tiled):
            assert what["err"] <= FORWARD_TOL, (name, r)
            assert what["err"] > 1e-6, (name, r)    # the half path ran
        assert coop["sum"] != tiled["sum"], (name, r)   # the attention's rounding shows
