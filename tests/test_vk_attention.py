"""The Vulkan attention shaders against the CPU backend and torch: the tiled shader
(nn_attention_tiled.glsl, the default: a workgroup per 32 or 64 queries, S = Q K^T and O += P V
per tile of 32 keys as register-tiled GEMMs; CCFG_VULKAN_ATTENTION=tiled32 / tiled64 force either
block; the 64-query one keeps Q resident in shared memory for heads of at most 40 channels where
the device has room; tiled-v1 is the merged shader: Q re-staged per key tile, O += P V in whole
64-column chunks) and the lanes shader it replaced (CCFG_VULKAN_ATTENTION=lanes,
nn_attention.comp). The switch is read at every call, so all run in one process.

Sizes: Stable Diffusion's self-attention at 64x64 latents (4096 tokens) with heads of 40, 64, 80
and 160 channels, its text cross-attention (77 keys), several heads and batch > 1, query and key
counts that are not multiples of the tiles, heads that are not multiples of the shader's slices
(40 channels) or chunks (64 columns), one pipeline per head width (1-4 chunks), and key sequences
long enough to need several dispatches on lavapipe (its loop limit: csrc/vk_nn.h
CCFG_VK_LOOP_BUDGET), the state carried between them. Through the UNet2DConditionModel forward too,
against diffusers.

Metric and bounds as tests/test_backend_ops.py: max|a - b| / max|b|, 1e-5 (3e-5 past 8192 keys,
float32 sums over that many terms); the UNet forward 1e-4 (tests/test_unet_condition.py)."""
import os

import numpy as np
import pytest

import ccfg
from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"
pytestmark = pytest.mark.skipif(not VK, reason="no Vulkan device")

torch = pytest.importorskip("torch")
F = torch.nn.functional

OP_TOL = 1e-5
LONG_TOL = 3e-5
# the 64-query workgroups need 26112 bytes of shared memory and 256 invocations (vk_nn.h)
FITS64 = bool(VK) and VK[0].get("max_shared_memory", 0) >= 26112 and \
    VK[0].get("max_workgroup_invocations", 0) >= 256
# the 64-query workgroups with Q resident (heads of at most 40 channels): 29696 bytes
FITSQR = FITS64 and VK[0].get("max_shared_memory", 0) >= 29696
MODES = ["tiled32"] + (["tiled64"] if FITS64 else []) + ["tiled-v1", "lanes"]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def torch_ref(q, k, v, batch, nq, nk, heads, hd):
    """torch's scaled_dot_product_attention on CNHW rows (heads*hd, batch*n)"""
    def split(a, n):
        return torch.from_numpy(a).reshape(heads, hd, batch, n).permute(2, 0, 3, 1)
    o = F.scaled_dot_product_attention(split(q, nq), split(k, nk), split(v, nk))
    return o.permute(1, 3, 0, 2).reshape(-1).numpy()


def qkv(batch, nq, nk, heads, hd, seed=0):
    rng = np.random.default_rng(seed + nq + nk + hd)
    q = (0.5 * rng.standard_normal(heads * hd * batch * nq)).astype(np.float32)
    k = (0.5 * rng.standard_normal(heads * hd * batch * nk)).astype(np.float32)
    v = rng.standard_normal(heads * hd * batch * nk).astype(np.float32)
    return q, k, v


def run(dev, batch, nq, nk, heads, hd, q, k, v):
    out = np.zeros(heads * hd * batch * nq, np.float32)
    return _core.nn_op(dev, "attention_qkv", [q, k, v], [out], (batch, nq, nk, heads, hd), (),
                       None, None)[0]


def check(monkeypatch, mode, batch, nq, nk, heads, hd):
    """the device in `mode` against the CPU, the CPU against torch; returns the profile rows"""
    monkeypatch.setenv("CCFG_VULKAN_ATTENTION", mode)
    q, k, v = qkv(batch, nq, nk, heads, hd)
    tol = LONG_TOL if nk > 1 << 13 else OP_TOL
    with ccfg.profiling.profile(DEV) as prof:
        got = run(DEV, batch, nq, nk, heads, hd, q, k, v)
    cpu = run("cpu", batch, nq, nk, heads, hd, q, k, v)
    assert np.all(np.isfinite(got))
    err = rel_err(got, cpu)
    assert err <= tol, f"{mode} {(batch, nq, nk, heads, hd)}: {err:.3g} from the CPU"
    assert rel_err(cpu, torch_ref(q, k, v, batch, nq, nk, heads, hd)) <= tol
    return [r for r in prof.rows if "attention" in r[0]]


def kind(mode, nq, hd):
    """the pipeline `mode` uses for nq queries and heads of hd channels: 64-column chunks, 32- or
    64-query workgroups ("tiled" and "tiled-v1": 64 where the device has them and nq > 32), the
    64-query ones with Q resident for heads of at most 40 channels (not "tiled-v1")"""
    if mode == "lanes":
        return "nn_attention"
    q64 = mode == "tiled64" or (mode in ("tiled", "tiled-v1") and FITS64 and nq > 32)
    if q64 and mode != "tiled-v1" and FITSQR and hd <= 40:
        return "nn_attention_tiled1_q64r"
    return f"nn_attention_tiled{(hd + 63) // 64}" + ("_q64" if q64 else "")


# SD 1.x/2.x self-attention at 64x64 latents, one head (the per-head work of 8), in the default
# mode and with 32-query workgroups
@pytest.mark.parametrize("mode", ["tiled", "tiled32"])
@pytest.mark.parametrize("hd", [40, 64, 80, 160])
def test_tiled_sd_self_attention(monkeypatch, mode, hd):
    rows = check(monkeypatch, mode, 1, 4096, 4096, 1, hd)
    assert [r[0] for r in rows] == [kind(mode, 4096, hd)]


# Q resident in shared memory (heads of at most 40 channels, 64-query workgroups) and O += P V
# by the head's own columns (nv vec4 per row group: 10 at 40, 2 at 7) against the merged
# shader's whole 64-column chunks: both against the CPU, and no worse than the merged shader
@pytest.mark.parametrize("batch,nq,nk,heads,hd", [(1, 4096, 4096, 1, 40), (2, 130, 77, 2, 37),
                                                   (1, 70, 300, 3, 7), (1, 97, 65, 1, 1)])
def test_resident_q_and_head_columns(monkeypatch, batch, nq, nk, heads, hd):
    rows = check(monkeypatch, "tiled", batch, nq, nk, heads, hd)
    assert [r[0] for r in rows] == [kind("tiled", nq, hd)]
    if FITSQR:
        assert rows[0][0] == "nn_attention_tiled1_q64r"
    q, k, v = qkv(batch, nq, nk, heads, hd)
    cpu = run("cpu", batch, nq, nk, heads, hd, q, k, v)
    errs = {}
    for mode in ("tiled", "tiled-v1"):
        monkeypatch.setenv("CCFG_VULKAN_ATTENTION", mode)
        errs[mode] = rel_err(run(DEV, batch, nq, nk, heads, hd, q, k, v), cpu)
    assert errs["tiled"] <= max(errs["tiled-v1"], 1e-7) * 1.5, errs


# (batch, nq, nk, heads, head_dim): SD's text cross-attention (77 keys) at levels 0-1, several
# heads and batch > 1; counts not multiples of the 32-query, 32-key tiles (1, 31, 33, 65, 97);
# heads past a 40-channel slice or a 64-column chunk (7, 41, 65, 130, 200) and every pipeline
# (1-4 chunks); one query, one key
SHAPES = [
    (2, 4096, 77, 8, 40),
    (2, 1024, 77, 8, 80),
    (3, 33, 65, 3, 40),
    (2, 31, 97, 2, 80),
    (1, 1, 1, 1, 1),
    (2, 17, 5, 3, 7),
    (1, 65, 33, 2, 41),
    (2, 45, 33, 2, 65),
    (1, 100, 129, 1, 130),
    (2, 7, 50, 3, 200),
    (1, 40, 31, 2, 256),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch,nq,nk,heads,hd", SHAPES)
def test_attention_shapes(monkeypatch, mode, batch, nq, nk, heads, hd):
    rows = check(monkeypatch, mode, batch, nq, nk, heads, hd)
    assert [r[0] for r in rows] == [kind(mode, nq, hd)]


# keys past what one lavapipe dispatch may loop over: blocks of keys, one dispatch each, each
# query's running maximum and sum carried between them (short last blocks included)
@pytest.mark.parametrize("mode", MODES[:-1])
@pytest.mark.parametrize("batch,nq,nk,heads,hd", [(1, 40, 5000, 2, 256), (2, 33, 13001, 1, 40),
                                                   (1, 5, 20011, 2, 200)])
def test_tiled_key_blocks(monkeypatch, mode, batch, nq, nk, heads, hd):
    rows = check(monkeypatch, mode, batch, nq, nk, heads, hd)
    assert len(rows) == 1 and rows[0][1] >= 2, rows     # several dispatches


def test_self_attention_op_both_modes(monkeypatch):
    """nn.h attention (q, k, v as the row blocks of one qkv array): both shaders agree with the
    CPU and with each other"""
    batch, hw, heads, hd = 2, 300, 2, 64
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3 * heads * hd * batch * hw).astype(np.float32)
    args = ([x], [np.zeros(heads * hd * batch * hw, np.float32)], (batch, hw, heads, hd), (),
            None, None)
    cpu = _core.nn_op("cpu", "attention", *args)[0]
    got = {}
    for mode in MODES:
        monkeypatch.setenv("CCFG_VULKAN_ATTENTION", mode)
        got[mode] = _core.nn_op(DEV, "attention", *args)[0]
        assert rel_err(got[mode], cpu) <= OP_TOL, mode
    for mode in MODES[:-1]:
        assert rel_err(got[mode], got["lanes"]) <= OP_TOL, mode


@pytest.mark.parametrize("nq", [8, 33])
def test_switch_values(monkeypatch, nq):
    q, k, v = qkv(1, nq, 8, 1, 16)
    for value in ("", "tiled"):      # unset or empty: the default
        monkeypatch.setenv("CCFG_VULKAN_ATTENTION", value)
        with ccfg.profiling.profile(DEV) as prof:
            run(DEV, 1, nq, 8, 1, 16, q, k, v)
        assert [r[0] for r in prof.rows if "attention" in r[0]] == [kind("tiled", nq, 16)]
    monkeypatch.setenv("CCFG_VULKAN_ATTENTION", "flash")
    with pytest.raises(ValueError, match="CCFG_VULKAN_ATTENTION must be tiled, tiled32, tiled64, "
                                         "tiled-v1 or lanes"):
        run(DEV, 1, nq, 8, 1, 16, q, k, v)
    if not FITS64:
        monkeypatch.setenv("CCFG_VULKAN_ATTENTION", "tiled64")
        with pytest.raises(ValueError, match="CCFG_VULKAN_ATTENTION=tiled64"):
            run(DEV, 1, nq, 8, 1, 16, q, k, v)


def test_heads_wider_than_256_refused(monkeypatch):
    for mode in MODES:
        monkeypatch.setenv("CCFG_VULKAN_ATTENTION", mode)
        q, k, v = qkv(1, 4, 4, 1, 257)
        with pytest.raises(ValueError, match="up to 256"):
            run(DEV, 1, 4, 4, 1, 257, q, k, v)


# ------------------------------------------------------------------ through the UNet forward

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd_like_unet(tmp_path_factory):
    """a small UNet2DConditionModel with SD's head widths (one head of 40 channels at level 0,
    80 at level 1), 12x12 latents (144 tokens: not a multiple of the tiles) and 77 text tokens"""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    cfg = dict(sample_size=12, in_channels=4, out_channels=4, block_out_channels=(40, 80),
               layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
               attention_head_dim=(1, 1),
               down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    m = UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("sd_like")
    m.save_pretrained(d)
    return m, ccfg.unet.UNet.from_pretrained(str(d))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("mode", ["tiled"] + MODES)
def test_unet_condition_forward(monkeypatch, sd_like_unet, mode):
    m, unet = sd_like_unet
    monkeypatch.setenv("CCFG_VULKAN_ATTENTION", mode)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    t = np.array([999, 37])
    ehs = rng.standard_normal((2, 77, 32)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), torch.as_tensor(t),
                encoder_hidden_states=torch.from_numpy(ehs)).sample.numpy()
    with ccfg.profiling.profile(DEV) as prof:
        out = unet(x, t, device=DEV, encoder_hidden_states=ehs)
    assert rel_err(out, ref) <= 1e-4
    kinds = {r[0] for r in prof.rows if "attention" in r[0]}
    # queries: 144 tokens at level 0 (heads of 40), 36 at level 1 and in the mid block (80)
    assert kinds == {kind(mode, 144, 40), kind(mode, 36, 80)}
