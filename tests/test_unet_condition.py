"""ccfg.unet.UNet as diffusers' UNet2DConditionModel (text-conditioned, csrc/unet.c) against
diffusers itself, on the CPU and on a Vulkan device when there is one.

Every equivalence test builds a randomly initialised diffusers UNet2DConditionModel (parameters
perturbed so that the zero-initialised layers, e.g. each Transformer2DModel's proj_out, matter),
saves it with save_pretrained, loads it with ccfg and compares outputs on random inputs. Metric:
max|ours - diffusers| / max|diffusers| over the whole output; bound 1e-4 for one forward, 1e-3 for
a guided DDIM run (against a loop written here: diffusers' model and DDIMScheduler, the NumPy rule
references of tests/reference_rules.py).

The slow test (the full-size SD 1.5 UNet, ~860M parameters) is deselected by default; run it with
``pytest -m slow tests/test_unet_condition.py``.
"""
import copy
import gc
import json
import os
import re
import time

import numpy as np
import pytest

import ccfg
from ccfg.unet import UNet

import reference_rules as R
from reference_solvers import diffusers_scheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel, UNet2DModel  # noqa: E402

# diffusers 0.42 + NumPy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FORWARD_TOL = 1e-4
SAMPLING_TOL = 1e-3

VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d]
DEVICES = ["cpu", pytest.param(
    "vulkan", marks=pytest.mark.skipif(not VK, reason="no Vulkan device (ccfg.devices())"))]


@pytest.fixture(scope="module", autouse=True)
def torch_one_thread():
    """diffusers' forwards of these small models are fastest (and steadiest) on one thread"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- configurations

TINY = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, attention_head_dim=2, norm_num_groups=8)

CONFIGS = {
    "tiny": TINY,
    # Stable Diffusion 1.5's layout at a fraction of its width: block types, 2 layers per block,
    # 8 heads at every level, 1x1-conv proj_in/proj_out
    "sd15_layout": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128, 128),
        layers_per_block=2, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
        use_linear_projection=False,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    # Stable Diffusion 2.x's options: heads per level (diffusers' attention_head_dim), linear
    # proj_in/proj_out, upcast attention, transformer layers per level (the mid block uses the
    # last level's heads and layers, the up blocks the levels' reversed)
    "sd2_options": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64),
        layers_per_block=2, norm_num_groups=8, cross_attention_dim=40,
        attention_head_dim=(1, 2, 4, 8), use_linear_projection=True, upcast_attention=True,
        transformer_layers_per_block=(1, 2, 3, 2),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "class_conditional": dict(TINY, num_class_embeds=5),
    "scale_shift": dict(TINY, resnet_time_scale_shift="scale_shift"),
    "no_mid_block": dict(TINY, mid_block_type=None,
                         down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
    # the other accepted options at non-default values, lists diffusers broadcasts included
    "options": dict(
        TINY, sample_size=(8, 12), in_channels=3, out_channels=5, layers_per_block=2,
        cross_attention_dim=[24, 24], only_cross_attention=[False, False],
        flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, time_embedding_dim=48,
        center_input_sample=True, downsample_padding=0, mid_block_scale_factor=1.4142135,
        act_fn="swish"),
}


def make_model(config, seed=0):
    torch.manual_seed(seed)
    m = UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def diffusers_forward(m, x, t, ehs, labels=None):
    with torch.no_grad():
        ehs = torch.as_tensor(np.asarray(ehs, np.float32))
        if ehs.ndim == 2:
            ehs = ehs[None]
        ehs = ehs.expand(x.shape[0], -1, -1)
        lab = None if labels is None else torch.as_tensor(labels)
        return m(torch.from_numpy(x), torch.as_tensor(t), encoder_hidden_states=ehs,
                 class_labels=lab).sample.float().numpy()


def cross_dim(config):
    d = config["cross_attention_dim"]
    return d[0] if isinstance(d, (list, tuple)) else d


def inputs(config, batch=3, tokens=7, seed=1):
    """(x, timesteps, encoder_hidden_states (batch, tokens, D), class labels or None)"""
    rng = np.random.default_rng(seed)
    size = config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else size
    x = rng.standard_normal((batch, config["in_channels"], h, w)).astype(np.float32)
    t = np.array([0, 999, 500, 37][:batch], dtype=np.int64)
    ehs = rng.standard_normal((batch, tokens, cross_dim(config))).astype(np.float32)
    labels = None
    if config.get("num_class_embeds"):
        labels = rng.integers(0, config["num_class_embeds"], batch)
    return x, t, ehs, labels


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (diffusers model, folder it was saved to, ccfg UNet loaded from it)"""
    out = {}
    for name, cfg in CONFIGS.items():
        m = make_model(cfg)
        d = tmp_path_factory.mktemp(name)
        m.save_pretrained(d)
        out[name] = (m, str(d), UNet.from_pretrained(d))
    return out


# --------------------------------------------------------------------------- forward equivalence

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_matches_diffusers(saved, name, device):
    m, _, unet = saved[name]
    assert unet.class_name == "UNet2DConditionModel"
    assert unet.cross_attention_dim == cross_dim(CONFIGS[name])
    assert unet.num_parameters == sum(p.numel() for p in m.parameters())
    x, t, ehs, labels = inputs(CONFIGS[name])
    ref = diffusers_forward(m, x, t, ehs, labels)
    out = unet(x, t, labels, device=device, encoder_hidden_states=ehs)
    assert out.dtype == np.float32 and out.shape == ref.shape
    err = rel_err(out, ref)
    assert err <= FORWARD_TOL, f"{name} on {device}: {err:.3g}"
    # the condition matters (cross-attention is not a no-op with these weights)
    other = unet(x, t, labels, device=device, encoder_hidden_states=np.roll(ehs, 1, axis=0))
    for i in range(x.shape[0]):
        assert np.max(np.abs(other[i] - out[i])) > 1e-3 * np.max(np.abs(ref)), i


@pytest.mark.parametrize("device", DEVICES)
def test_shared_condition_broadcasts(saved, device):
    """one condition (L, D) or (1, L, D) for every sample = the same tokens repeated per sample;
    a torch tensor and other real dtypes are accepted"""
    m, _, unet = saved["tiny"]
    x, t, ehs, _ = inputs(TINY)
    one = ehs[0]
    rep = np.repeat(one[None], x.shape[0], axis=0)
    full = unet(x, t, device=device, encoder_hidden_states=rep)
    assert rel_err(full, diffusers_forward(m, x, t, rep)) <= FORWARD_TOL
    np.testing.assert_array_equal(unet(x, t, device=device, encoder_hidden_states=one), full)
    np.testing.assert_array_equal(unet(x, t, device=device, encoder_hidden_states=one[None]), full)
    np.testing.assert_array_equal(
        unet(x, t, device=device, encoder_hidden_states=torch.from_numpy(one)), full)
    np.testing.assert_array_equal(
        unet(x, t, device=device, encoder_hidden_states=one.astype(np.float64)), full)
    # per-sample conditions: each row equals its own single-sample forward
    per = unet(x, t, device=device, encoder_hidden_states=ehs)
    for i in range(x.shape[0]):
        row = unet(x[i:i + 1], t[i:i + 1], device=device, encoder_hidden_states=ehs[i])
        np.testing.assert_allclose(row[0], per[i], rtol=0, atol=1e-5 * np.max(np.abs(per)))


@pytest.mark.parametrize("device", DEVICES)
def test_token_counts_image_sizes_and_batches_vary(saved, device):
    """the plan follows the call: other token counts, a non-square image, other batch sizes, and
    back"""
    m, _, unet = saved["sd15_layout"]
    cfg = CONFIGS["sd15_layout"]
    for batch, tokens, hw in ((2, 7, (16, 16)), (1, 1, (16, 16)), (3, 77, (8, 24)),
                              (2, 7, (16, 16))):
        x, t, ehs, _ = inputs(dict(cfg, sample_size=hw), batch=batch, tokens=tokens,
                              seed=batch + tokens)
        out = unet(x, t, device=device, encoder_hidden_states=ehs)
        err = rel_err(out, diffusers_forward(m, x, t, ehs))
        assert err <= FORWARD_TOL, (batch, tokens, hw, err)


@pytest.mark.parametrize("dtype,variant", [("float16", "fp16"), ("bfloat16", "bf16")])
def test_half_precision_variant(tmp_path, saved, dtype, variant):
    """save_pretrained(..., variant=) of a half-precision model: ccfg reads the rounded weights,
    whose forward is diffusers' model converted back to float32"""
    m = copy.deepcopy(saved["sd2_options"][0])
    m.to(getattr(torch, dtype)).save_pretrained(tmp_path, variant=variant)
    path = tmp_path / f"diffusion_pytorch_model.{variant}.safetensors"
    with open(path, "rb") as f:
        head = f.read(int.from_bytes(f.read(8), "little")).decode()
    assert {"float16": '"F16"', "bfloat16": '"BF16"'}[dtype] in head
    assert '"F32"' not in head
    ref_model = m.float()
    x, t, ehs, _ = inputs(CONFIGS["sd2_options"], seed=4)
    out = UNet.from_pretrained(tmp_path, variant=variant)(x, t, encoder_hidden_states=ehs)
    ref = diffusers_forward(ref_model, x, t, ehs)
    assert rel_err(out, ref) <= FORWARD_TOL
    # and the rounding is visible: the float32 weights give another output
    full = saved["sd2_options"][2](x, t, encoder_hidden_states=ehs)
    assert rel_err(full, ref) > 3 * FORWARD_TOL
    # only the variant's file was written
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
        UNet.from_pretrained(tmp_path)


def test_layers_per_block_as_equal_list(tmp_path):
    cfg = dict(TINY, layers_per_block=[2, 2])
    m = make_model(cfg)
    m.save_pretrained(tmp_path)
    unet = UNet.from_pretrained(tmp_path)
    x, t, ehs, _ = inputs(cfg)
    assert rel_err(unet(x, t, encoder_hidden_states=ehs),
                   diffusers_forward(m, x, t, ehs)) <= FORWARD_TOL


def test_class_labels_matter(saved):
    m, _, unet = saved["class_conditional"]
    x, t, ehs, _ = inputs(CONFIGS["class_conditional"], batch=2)
    a = unet(x, t, [0, 0], encoder_hidden_states=ehs)
    b = unet(x, t, [3, 3], encoder_hidden_states=ehs)
    assert rel_err(b, diffusers_forward(m, x, t, ehs, [3, 3])) <= FORWARD_TOL
    assert np.max(np.abs(a - b)) > 1e-3 * np.max(np.abs(a))
    with pytest.raises(ValueError, match="class_labels"):
        unet(x, t, encoder_hidden_states=ehs)
    with pytest.raises(ValueError, match="class_labels"):
        unet(x, t, [0, 5], encoder_hidden_states=ehs)
    with pytest.raises(ValueError, match="num_class_embeds"):
        ccfg.sample(unet, positive=ehs[0], null=ehs[1], guidance=ccfg.CFG(2.0), steps=2, n=1,
                    device="cpu", progress=False)


# --------------------------------------------------------------------------- config refusals

def write_config(folder, cfg):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("field,value", [
    ("only_cross_attention", True),
    ("only_cross_attention", [True, False]),
    ("dual_cross_attention", True),
    ("encoder_hid_dim", 16),
    ("encoder_hid_dim_type", "text_proj"),
    ("addition_embed_type", "text_time"),
    ("time_cond_proj_dim", 8),
    ("conv_in_kernel", 1),
    ("conv_out_kernel", 1),
    ("attention_type", "gated"),
    ("class_embeddings_concat", True),
    ("cross_attention_norm", "group_norm"),
    ("num_attention_heads", 2),
    ("reverse_transformer_layers_per_block", [[1, 1], [1, 1]]),
    ("transformer_layers_per_block", [[1], [1]]),
    ("layers_per_block", [1, 2]),
    ("cross_attention_dim", [24, 32]),
    ("down_block_types", ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
    ("up_block_types", ["UpBlock2D", "SimpleCrossAttnUpBlock2D"]),
    ("down_block_types", ["CrossAttnDownBlock2D"]),
    ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
    ("time_embedding_type", "fourier"),
    ("class_embed_type", "timestep"),
    ("act_fn", "gelu"),
    ("resnet_time_scale_shift", "spatial"),
    ("attention_head_dim", [2, 4, 8]),
    ("attention_head_dim", 64),
    ("upcast_attention", "yes"),
    ("norm_num_groups", 5),
])
def test_unsupported_config_names_field(tmp_path, saved, field, value):
    _, folder, _ = saved["tiny"]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg[field] = value
    write_config(tmp_path, cfg)
    os.symlink(os.path.join(folder, "diffusion_pytorch_model.safetensors"),
               tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="^" + re.escape(field)):
        UNet.from_pretrained(tmp_path)


def test_weights_of_another_layout_are_refused(tmp_path, saved):
    """the sd2 weights under a config without linear projections: the tensor is named"""
    m, folder, _ = saved["sd2_options"]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    write_config(tmp_path, dict(cfg, use_linear_projection=False))
    os.symlink(os.path.join(folder, "diffusion_pytorch_model.safetensors"),
               tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match=r"proj_in\.weight"):
        UNet.from_pretrained(tmp_path)


# --------------------------------------------------------------------------- bad input

def test_encoder_hidden_states_errors(saved):
    _, _, unet = saved["tiny"]
    x, t, ehs, _ = inputs(TINY)          # B = 3, L = 7, D = 24
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*\(L, 24\).*\(3, 7, 25\)"):
        unet(x, t, encoder_hidden_states=np.zeros((3, 7, 25), np.float32))
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*7, 25\)"):
        unet(x, t, encoder_hidden_states=np.zeros((7, 25), np.float32))
    with pytest.raises(ValueError, match=r"encoder_hidden_states: 2 conditions for 3 samples"):
        unet(x, t, encoder_hidden_states=ehs[:2])
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*\(24,\)"):
        unet(x, t, encoder_hidden_states=ehs[0, 0])
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*\(3, 0, 24\)"):
        unet(x, t, encoder_hidden_states=ehs[:, :0])
    bad = ehs.copy()
    bad[1, 3, 5] = np.nan
    with pytest.raises(ValueError, match="encoder_hidden_states: contains NaN"):
        unet(x, t, encoder_hidden_states=bad)
    bad[1, 3, 5] = np.inf
    with pytest.raises(ValueError, match="encoder_hidden_states: contains NaN or Inf"):
        unet(x, t, encoder_hidden_states=bad)
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*\(B, L, 24\)"):
        unet(x, t)
    with pytest.raises(TypeError, match="encoder_hidden_states"):
        unet(x, t, encoder_hidden_states=np.full((7, 24), "a"))
    with pytest.raises(ValueError, match="class_labels"):
        unet(x, t, [0, 1, 2], encoder_hidden_states=ehs)
    with pytest.raises(ValueError, match="sample"):
        unet(x[:, :3], t, encoder_hidden_states=ehs)


def test_encoder_hidden_states_refused_without_cross_attention(tmp_path):
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,),
                    layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",), add_attention=False)
    m.save_pretrained(tmp_path)
    unet = UNet.from_pretrained(tmp_path)
    assert unet.class_name == "UNet2DModel" and unet.cross_attention_dim == 0
    x = np.zeros((2, 1, 8, 8), np.float32)
    unet(x, 10)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(x, 10, encoder_hidden_states=np.zeros((2, 3, 4), np.float32))


# --------------------------------------------------------------------------- sampling

STEPS, N, SEED = 5, 2, 3


@pytest.fixture(scope="module")
def prompts():
    """(null, positive, negative 1, negative 2): (L, D) token arrays for the tiny model"""
    rng = np.random.default_rng(5)
    return tuple(rng.standard_normal((6, 24)).astype(np.float32) for _ in range(4))


def reference_loop(m, x_T, steps, rule, null, pos, negs):
    """diffusers' DDIMScheduler configured as ccfg's default schedule, diffusers' model evaluated
    once per condition, the NumPy rule in float64"""
    sched = diffusers_scheduler("ddim", steps)
    plan = ccfg.schedulers.plan("ddim", steps)
    np.testing.assert_array_equal(sched.timesteps.numpy(), plan["timesteps"])
    x = torch.from_numpy(np.array(x_T, np.float32))
    n = x.shape[0]
    lambdas = []

    def ev(tokens, t):          # (L, D): every sample's; (n, L, D): one per sample
        ehs = torch.from_numpy(tokens)
        ehs = ehs[None].expand(n, -1, -1) if ehs.ndim == 2 else ehs
        return m(x, t, encoder_hidden_states=ehs).sample.double().numpy()

    with torch.no_grad():
        for t in sched.timesteps:
            eu = None if null is None else ev(null, t)
            ep = None if pos is None else ev(pos, t)
            eps = rule(eu, ep, [ev(e, t) for e in negs], lambdas)
            x = sched.step(torch.from_numpy(eps.astype(np.float32)), t, x).prev_sample
    return x.numpy(), lambdas


def _ccfg_ref(u, p, ns, lambdas, **kw):
    out, lp, lns = R.ccfg_rule(u, p, ns, return_lambdas=True, **kw)
    lambdas.append((lp, lns))
    return out


RULES = {
    "cfg": (ccfg.CFG(scale=3.0), True, lambda u, p, ns, lam: R.cfg(u, p, ns, scale=3.0)),
    "ccfg": (ccfg.CCFG(scale=3.0, tau=1.0), True,
             lambda u, p, ns, lam: _ccfg_ref(u, p, ns, lam, scale=3.0, tau=1.0)),
    # a negative prompt replaces the null: no null needed (eps_u cancels out of the rule)
    "negative_prompt": (ccfg.NegativePrompt(scale=3.0), False,
                        lambda u, p, ns, lam: R.negative_prompt(np.zeros_like(p), p, ns[:1],
                                                                scale=3.0)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", list(RULES))
def test_guided_ddim_matches_reference_loop(saved, prompts, rule, device):
    m, _, unet = saved["tiny"]
    assert unet.scheduler is None and unet.shape == (4, 8, 8)
    null, pos, n1, n2 = prompts
    guidance, with_null, ref_rule = RULES[rule]
    negs = [n1, n2] if rule != "negative_prompt" else [n1]
    out = ccfg.sample(unet, positive=pos, negative=negs, null=null if with_null else None,
                      guidance=guidance, sampler="ddim", steps=STEPS, n=N, seed=SEED,
                      device=device, progress=False)
    assert out.shape == (N,) + unet.shape and out.dtype == np.float32
    x_T = ccfg.randn(SEED, N, unet.shape)
    ref, lambdas = reference_loop(m, x_T, STEPS, ref_rule, null if with_null else None, pos, negs)
    err = rel_err(out, ref)
    assert err <= SAMPLING_TOL, f"{rule} on {device}: {err:.3g}"
    if rule == "ccfg":
        # some weights lie in their sigmoid's working range (a wrong tau would be seen)
        lp = np.concatenate([np.ravel(a) for a, _ in lambdas])
        ln = np.concatenate([np.ravel(b) for _, bs in lambdas for b in bs])
        assert np.any((1.1 < lp) & (lp < 1.9)) and np.any((0.1 < ln) & (ln < 0.9))
    # the negatives and the guidance matter
    plain = ccfg.sample(unet, positive=pos, null=null, guidance=guidance, steps=STEPS, n=N,
                        seed=SEED, device=device, progress=False)
    assert np.max(np.abs(plain - out)) > 1e-3 * np.max(np.abs(out)) or rule == "cfg"
    if rule == "cfg":
        np.testing.assert_array_equal(plain, out)     # CFG ignores the negatives


def test_condition_shapes_accepted_in_sampling(saved, prompts):
    """(1, L, D) and torch tensors are the same conditions as (L, D)"""
    _, _, unet = saved["tiny"]
    null, pos, n1, _ = prompts
    kw = dict(guidance=ccfg.CCFG(scale=2.0), steps=2, n=2, seed=1, device="cpu", progress=False)
    a = ccfg.sample(unet, positive=pos, negative=n1, null=null, **kw)
    b = ccfg.sample(unet, positive=pos[None], negative=[torch.from_numpy(n1)],
                    null=torch.from_numpy(null)[None], **kw)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_conditions_and_unconditional_sampling(saved, prompts, device):
    """(n, L, D) conditions: sample i is guided by its own tokens (here: its own positive and
    second negative); unconditional sampling runs the null alone"""
    m, _, unet = saved["tiny"]
    null, pos, n1, n2 = prompts
    rng = np.random.default_rng(9)
    pos_n = np.stack([pos, rng.standard_normal(pos.shape).astype(np.float32)])
    n2_n = np.stack([n2, rng.standard_normal(n2.shape).astype(np.float32)])
    kw = dict(sampler="ddim", steps=STEPS, n=N, seed=SEED, device=device, progress=False)
    rule = ccfg.CCFG(scale=3.0, tau=1.0)
    out = ccfg.sample(unet, positive=pos_n, negative=[n1, n2_n], null=null, guidance=rule, **kw)
    x_T = ccfg.randn(SEED, N, unet.shape)
    ref, _ = reference_loop(m, x_T, STEPS, RULES["ccfg"][2], null, pos_n, [n1, n2_n])
    assert rel_err(out, ref) <= SAMPLING_TOL
    # sample 0 has the shared run's conditions, sample 1 others
    shared = ccfg.sample(unet, positive=pos, negative=[n1, n2], null=null, guidance=rule, **kw)
    np.testing.assert_allclose(out[0], shared[0], rtol=0, atol=1e-5 * np.max(np.abs(shared)))
    assert np.max(np.abs(out[1] - shared[1])) > 1e-3 * np.max(np.abs(shared))

    unc = ccfg.sample(unet, null=null, guidance=None, **kw)
    ref, _ = reference_loop(m, x_T, STEPS, lambda u, p, ns, lam: u, null, None, [])
    assert rel_err(unc, ref) <= SAMPLING_TOL


def test_sampling_errors(saved, prompts):
    _, _, unet = saved["tiny"]
    null, pos, n1, n2 = prompts
    kw = dict(steps=2, n=1, device="cpu", progress=False)
    for rule in (ccfg.CFG(2.0), ccfg.CCFG(2.0), ccfg.NegatedCFG(2.0)):
        with pytest.raises(ValueError, match="null"):
            ccfg.sample(unet, positive=pos, negative=[n1], guidance=rule, **kw)
    # no condition at all (unconditional sampling without null=)
    with pytest.raises(ValueError, match="^null: .*pass null="):
        ccfg.sample(unet, guidance=None, **kw)
    # token counts must agree, the null's included
    with pytest.raises(ValueError, match=r"^positive, negative, null: .*negative 5, null 6"):
        ccfg.sample(unet, positive=pos, negative=[n1[:5]], null=null, guidance=ccfg.CCFG(2.0),
                    **kw)
    with pytest.raises(ValueError, match=r"^positive, negative\[0\], negative\[1\], null: "
                       r".*positive 6, negative\[0\] 6, negative\[1\] 6, null 4"):
        ccfg.sample(unet, positive=pos, negative=[n1, n2], null=null[:4],
                    guidance=ccfg.CCFG(2.0), **kw)
    with pytest.raises(ValueError, match=r"^positive: .*\(L, 24\).*6, 25\)"):
        ccfg.sample(unet, positive=np.zeros((6, 25), np.float32), null=null,
                    guidance=ccfg.CFG(2.0), **kw)
    with pytest.raises(ValueError, match=r"negative\[1\]"):
        ccfg.sample(unet, positive=pos, negative=[n1, np.zeros((6, 23), np.float32)], null=null,
                    guidance=ccfg.CCFG(2.0), **kw)
    # per-sample conditions: one, or one per sample
    with pytest.raises(ValueError, match="null: 2 embeddings for n = 1 samples"):
        ccfg.sample(unet, positive=pos, null=np.stack([null, null]), guidance=ccfg.CFG(2.0),
                    **kw)
    with pytest.raises(ValueError, match="2 embeddings for n = 1 samples"):
        ccfg.sample(unet, positive=np.stack([pos, pos]), null=null, guidance=ccfg.CFG(2.0), **kw)
    with pytest.raises(ValueError, match="2 embeddings for n = 3 samples"):
        ccfg.sample(unet, positive=pos, negative=[n1, np.stack([n2, n2])], null=null,
                    guidance=ccfg.CCFG(2.0), **dict(kw, n=3))
    bad = pos.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="positive: contains NaN"):
        ccfg.sample(unet, positive=bad, null=null, guidance=ccfg.CFG(2.0), **kw)


# --------------------------------------------------------------------------- full size (slow)

@pytest.mark.slow
def test_full_size_sd15_forward(tmp_path):
    """diffusers' default UNet2DConditionModel with SD 1.5's cross_attention_dim and sample size
    (~860M parameters), random weights: one 64x64 forward, batch 1, on the CPU"""
    cfg = dict(cross_attention_dim=768, sample_size=64)
    torch.set_num_threads(os.cpu_count() or 1)
    m = make_model(cfg)
    n_params = sum(p.numel() for p in m.parameters())
    assert 850e6 < n_params < 870e6
    m.save_pretrained(tmp_path)
    x, t, ehs, _ = inputs(dict(cfg, in_channels=4), batch=1, tokens=77)
    t = np.array([601])
    t0 = time.perf_counter()
    ref = diffusers_forward(m, x, t, ehs)
    t_ref = time.perf_counter() - t0
    del m
    gc.collect()
    t0 = time.perf_counter()
    unet = UNet.from_pretrained(tmp_path)
    t_load = time.perf_counter() - t0
    assert unet.num_parameters == n_params
    t0 = time.perf_counter()
    out = unet(x, t, encoder_hidden_states=ehs)
    t_ours = time.perf_counter() - t0
    err = rel_err(out, ref)
    print(f"\nSD 1.5 UNet ({n_params / 1e6:.0f}M parameters), 64x64, batch 1: diffusers "
          f"{t_ref:.1f} s, ccfg load {t_load:.1f} s, ccfg forward {t_ours:.1f} s, "
          f"relative max error {err:.3g}")
    assert err <= FORWARD_TOL
