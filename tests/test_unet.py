"""ccfg.models.UNet (diffusers' UNet2DModel in C) against diffusers itself, and the safetensors
reader against the safetensors library.

Every equivalence test builds a randomly initialised diffusers UNet2DModel (parameters perturbed so
that norms and biases are not at their trivial init), saves it with save_pretrained, loads it with
ccfg, and compares outputs on random inputs. Metric: max|ours - diffusers| / max|diffusers| over
the whole output; bound 1e-4 for one forward, 1e-3 for a 10-step sampling run.
"""
import json
import os

import numpy as np
import pytest

import ccfg
from ccfg import safetensors as st
from ccfg.models import PythonModel, UNet

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402

# diffusers 0.42 + NumPy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

@pytest.fixture(scope="module", autouse=True)
def torch_one_thread():
    """diffusers' reference forwards of these tiny models are fastest (and steadiest on a shared
    machine) on one thread"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FORWARD_TOL = 1e-4
SAMPLING_TOL = 1e-3


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- configurations

BASE = dict(sample_size=8, in_channels=1, out_channels=1, norm_num_groups=4, attention_head_dim=8)
CONFIGS = {
    "tiny_1_level": dict(BASE, block_out_channels=(8,), layers_per_block=1,
                         down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                         add_attention=False),
    "3_levels_attention": dict(
        BASE, sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
        layers_per_block=2, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    # scale_shift: FiLM resnets and a mid attention without GroupNorm (attn_norm_num_groups None)
    "scale_shift": dict(
        BASE, block_out_channels=(16, 32), layers_per_block=1, resnet_time_scale_shift="scale_shift",
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")),
    "class_conditional": dict(
        BASE, block_out_channels=(16, 32), layers_per_block=1, num_class_embeds=5,
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D")),
    # odd channel counts, one head of full width, the other diffusers options
    "odd_channels_options": dict(
        BASE, sample_size=(8, 12), in_channels=2, out_channels=3, block_out_channels=(24, 40),
        layers_per_block=2, norm_num_groups=8, attention_head_dim=None,
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"), flip_sin_to_cos=False, freq_shift=1,
        downsample_padding=0, center_input_sample=True, norm_eps=1e-6,
        time_embedding_dim=48, mid_block_scale_factor=1.4142135, attn_norm_num_groups=4),
    "no_mid_block_heads": dict(
        BASE, block_out_channels=(16, 24, 32), layers_per_block=1, mid_block_type=None,
        attention_head_dim=4, down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D")),
}


def make_model(config, seed=0):
    torch.manual_seed(seed)
    m = UNet2DModel(**config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def diffusers_forward(m, x, t, labels=None):
    with torch.no_grad():
        lab = None if labels is None else torch.as_tensor(labels)
        return m(torch.from_numpy(x), torch.as_tensor(t), lab).sample.float().numpy()


def inputs(config, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    size = config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else size
    x = rng.standard_normal((batch, config["in_channels"], h, w)).astype(np.float32)
    t = np.array([0, 1, 999, 500, 250, 37][:batch], dtype=np.int64)
    labels = None
    if config.get("num_class_embeds"):
        labels = rng.integers(0, config["num_class_embeds"], batch)
    return x, t, labels


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (diffusers model, folder it was saved to)"""
    out = {}
    for name, cfg in CONFIGS.items():
        m = make_model(cfg)
        d = tmp_path_factory.mktemp(name)
        m.save_pretrained(d)
        out[name] = (m, str(d))
    return out


# --------------------------------------------------------------------------- forward equivalence

@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_matches_diffusers(saved, name):
    m, folder = saved[name]
    unet = UNet.from_pretrained(folder)
    x, t, labels = inputs(CONFIGS[name])
    ref = diffusers_forward(m, x, t, labels)
    out = unet(x, t, labels)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert rel_err(out, ref) <= FORWARD_TOL, name


def test_forward_scalar_timestep_and_chunked_batch(saved):
    """a scalar timestep broadcasts; a batch larger than one planned chunk gives the same rows."""
    m, folder = saved["3_levels_attention"]
    unet = UNet.from_pretrained(folder)
    x, _, _ = inputs(CONFIGS["3_levels_attention"], batch=5)
    ref = diffusers_forward(m, x, 321)
    assert rel_err(unet(x, 321), ref) <= FORWARD_TOL
    assert rel_err(unet(x, np.float64(321.0)), ref) <= FORWARD_TOL
    # one sample at a time: the per-row results do not depend on the batch
    rows = np.concatenate([unet(x[i:i + 1], 321) for i in range(5)])
    np.testing.assert_allclose(rows, unet(x, 321), rtol=0, atol=1e-5)


def test_plan_reused(saved):
    _, folder = saved["tiny_1_level"]
    unet = UNet.from_pretrained(folder)
    x, t, _ = inputs(CONFIGS["tiny_1_level"])
    unet(x, t)
    planned = unet.plan_bytes
    assert planned > 0
    unet(x[:2], t[:2])          # smaller batch: the same plan serves it
    assert unet.plan_bytes == planned


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_files(tmp_path, dtype):
    cfg = CONFIGS["class_conditional"]
    m = make_model(cfg, seed=3)
    m.to(getattr(torch, dtype)).save_pretrained(tmp_path)
    ref_model = m.float()       # the same rounded weights in float32
    x, t, labels = inputs(cfg, seed=4)
    with open(os.path.join(tmp_path, "diffusion_pytorch_model.safetensors"), "rb") as f:
        head = f.read(int.from_bytes(f.read(8), "little")).decode()
    assert {"float16": '"F16"', "bfloat16": '"BF16"'}[dtype] in head
    out = UNet.from_pretrained(tmp_path)(x, t, labels)
    assert rel_err(out, diffusers_forward(ref_model, x, t, labels)) <= FORWARD_TOL


def test_legacy_attention_names(tmp_path, saved):
    """query/key/value/proj_attn (old AttentionBlock names) load as to_q/to_k/to_v/to_out.0."""
    from safetensors.torch import save_file

    m, folder = saved["3_levels_attention"]
    legacy = {}
    for k, v in m.state_dict().items():
        for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                         (".to_out.0.", ".proj_attn.")):
            k = k.replace(new, old)
        legacy[k] = v.contiguous()
    assert any(".proj_attn." in k for k in legacy)
    save_file(legacy, os.path.join(tmp_path, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        (tmp_path / "config.json").write_text(f.read())
    x, t, _ = inputs(CONFIGS["3_levels_attention"])
    out = UNet.from_pretrained(tmp_path)(x, t)
    assert rel_err(out, diffusers_forward(m, x, t)) <= FORWARD_TOL


def test_sharded_weights_and_sample_size(tmp_path, saved):
    m, _ = saved["scale_shift"]
    m.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.safetensors.index.json")
    unet = UNet.from_pretrained(tmp_path, sample_size=16)
    assert unet.shape == (1, 16, 16)
    x = np.random.default_rng(2).standard_normal((2, 1, 16, 16)).astype(np.float32)
    assert rel_err(unet(x, [3, 900]), diffusers_forward(m, x, np.array([3, 900]))) <= FORWARD_TOL
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["sample_size"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="sample_size"):
        ccfg.sample(UNet.from_pretrained(tmp_path), steps=2, n=1, progress=False)


def test_mixed_class_labels_per_row(saved):
    """one batch of 3N rows (null, positive, negative labels) = three separate forwards."""
    m, folder = saved["class_conditional"]
    unet = UNet.from_pretrained(folder)
    x, _, _ = inputs(CONFIGS["class_conditional"], batch=2)
    x3 = np.concatenate([x, x, x])
    labels = np.array([4, 4, 1, 1, 2, 2])
    out = unet(x3, 700, labels)
    assert rel_err(out, diffusers_forward(m, x3, 700, labels)) <= FORWARD_TOL
    for k in range(3):
        np.testing.assert_allclose(out[2 * k:2 * k + 2], unet(x, 700, labels[2 * k:2 * k + 2]),
                                   rtol=0, atol=1e-5)
    assert np.max(np.abs(out[:2] - out[2:4])) > 1e-3     # the labels matter


# --------------------------------------------------------------------------- sampling

def ddim_loop(m, x_T, steps, sched_config, labels=None, null=None, scale=None):
    """diffusers' DDIMScheduler driving diffusers' model (CFG with the null class if scale)."""
    sched = DDIMScheduler.from_config(sched_config)
    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy())
    n = x.shape[0]
    with torch.no_grad():
        for t in sched.timesteps:
            if scale is None:
                lab = None if labels is None else torch.full((n,), labels)
                eps = m(x, t, lab).sample
            else:
                lab = torch.tensor([null] * n + [labels] * n)
                u, c = m(torch.cat([x, x]), t, lab).sample.chunk(2)
                eps = u + scale * (c - u)
            x = sched.step(eps, t, x).prev_sample
    return x.numpy()


def test_ddim_10_steps_matches_diffusers_loop(saved):
    m, folder = saved["3_levels_attention"]
    unet = UNet.from_pretrained(folder)
    assert unet.scheduler is None and unet.prediction_type == "epsilon"
    n, seed = 4, 7
    x_T = ccfg.randn(seed, n, unet.shape)
    ours = ccfg.sample(unet, guidance=None, sampler="ddim", steps=10, n=n, seed=seed,
                       progress=False)
    # ccfg's schedules have no clip_sample (diffusers' DDIM default is on)
    ref = ddim_loop(m, x_T, 10, DDIMScheduler(clip_sample=False).config)
    assert rel_err(ours, ref) <= SAMPLING_TOL


def test_pipeline_folder_cfg_sampling(tmp_path, saved):
    """a pipeline folder (unet/ + scheduler/): its scheduler config sets the schedule; CFG with the
    last class as null runs one 2N-row forward per step with mixed labels."""
    from diffusers import DDPMPipeline

    m, _ = saved["class_conditional"]
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          timestep_spacing="trailing", clip_sample=False)
    DDPMPipeline(unet=m, scheduler=sched).save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "unet" / "config.json")
    unet = UNet.from_pretrained(tmp_path)
    assert unet.scheduler.beta_schedule == "scaled_linear"
    assert unet.scheduler.timestep_spacing == "trailing"
    assert unet.null_class == 4
    # the unet/ subfolder finds ../scheduler too
    assert UNet.from_pretrained(tmp_path / "unet").scheduler == unet.scheduler
    n, seed = 3, 11
    ours = ccfg.sample(unet, positive=2, guidance=ccfg.CFG(scale=3.0), steps=10, n=n, seed=seed,
                       progress=False)
    ref = ddim_loop(m, ccfg.randn(seed, n, unet.shape), 10, sched.config, labels=2, null=4,
                    scale=3.0)
    assert rel_err(ours, ref) <= SAMPLING_TOL


def test_v_prediction_from_scheduler(tmp_path, saved):
    m, folder = saved["tiny_1_level"]
    cfg = dict(DDIMScheduler(prediction_type="v_prediction", clip_sample=False).config)
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    (tmp_path / "unet").mkdir()
    m.save_pretrained(tmp_path / "unet")
    unet = UNet.from_pretrained(tmp_path)
    assert unet.prediction_type == "v_prediction"
    n, seed = 3, 5
    ours = ccfg.sample(unet, steps=10, n=n, seed=seed, progress=False)
    ref = ddim_loop(m, ccfg.randn(seed, n, unet.shape), 10, cfg)
    assert rel_err(ours, ref) <= SAMPLING_TOL


def torch_python_model(m, null):
    """the two-line torch adapter of docs/api.md"""
    @torch.no_grad()
    def fn(x, t, cond):
        labels = torch.tensor([null if c is None else c for c in cond])
        return m(torch.from_numpy(x), torch.from_numpy(t), labels).sample.numpy()
    return fn


def test_python_model_drives_diffusers_unet(saved):
    """diffusers' UNet2DModel through PythonModel and the native UNet give the same CCFG run (one
    3N-row forward per step: null, positive, negative)."""
    m, folder = saved["class_conditional"]
    unet = UNet.from_pretrained(folder)
    py = PythonModel(torch_python_model(m, null=4), shape=unet.shape)
    kw = dict(positive=1, negative=3, guidance=ccfg.CCFG(scale=4.0, tau=0.5), steps=10, n=3,
              seed=2, progress=False)
    calls = []
    orig = py.fn
    py.fn = lambda x, t, cond: (calls.append(list(cond)), orig(x, t, cond))[1]
    ref = ccfg.sample(py, **kw)
    ours = ccfg.sample(unet, **kw)
    assert rel_err(ours, ref) <= SAMPLING_TOL
    assert len(calls) == 10 and calls[0] == [None] * 3 + [1] * 3 + [3] * 3


def test_trajectory_and_progress(saved):
    _, folder = saved["tiny_1_level"]
    unet = UNet.from_pretrained(folder)
    seen = []
    x, traj = ccfg.sample(unet, steps=4, n=2, seed=3, return_trajectory=True,
                          progress=lambda done, steps: seen.append((done, steps)))
    assert traj.shape == (5, 2) + unet.shape
    np.testing.assert_array_equal(traj[0], ccfg.randn(3, 2, unet.shape))
    np.testing.assert_array_equal(traj[-1], x)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(ValueError, match="no class embedding"):
        ccfg.sample(unet, positive=0, steps=2, n=1, progress=False)


def test_concept_names(saved):
    _, folder = saved["class_conditional"]
    unet = UNet.from_pretrained(folder, concepts=["shirt", "shoe", "bag", "coat"])
    a = ccfg.sample(unet, positive="shoe", negative="coat", guidance="ccfg", steps=3, n=2,
                    progress=False)
    b = ccfg.sample(unet, positive=1, negative=3, guidance="ccfg", steps=3, n=2, progress=False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown concept"):
        ccfg.sample(unet, positive="hat", steps=2, n=1, progress=False)
    with pytest.raises(ValueError, match="null_class"):
        UNet.from_pretrained(folder, null_class=5)


# --------------------------------------------------------------------------- bad input

def write_config(folder, cfg):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("field,value", [
    ("time_embedding_type", "fourier"), ("act_fn", "gelu"), ("resnet_time_scale_shift", "spatial"),
    ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"]), ("class_embed_type", "timestep"),
    ("downsample_type", "resnet"), ("norm_num_groups", 3), ("mid_block_type", "UNetMidBlock2DCrossAttn"),
    ("downsample_padding", 2), ("_class_name", "UNet1DModel"),
])
def test_unsupported_config_names_field(tmp_path, saved, field, value):
    _, folder = saved["class_conditional"]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg[field] = value
    write_config(tmp_path, cfg)
    os.symlink(os.path.join(folder, "diffusion_pytorch_model.safetensors"),
               tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match=field):
        UNet.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config(tmp_path, saved):
    m, folder = saved["tiny_1_level"]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    write_config(tmp_path, cfg)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    missing = dict(sd)
    del missing["conv_out.bias"]
    st.save(path, missing)
    with pytest.raises(ValueError, match="conv_out.bias"):
        UNet.from_pretrained(tmp_path)
    wrong = dict(sd, **{"conv_in.weight": np.zeros((8, 1, 1, 1), np.float32)})
    st.save(path, wrong)
    with pytest.raises(ValueError, match="conv_in.weight"):
        UNet.from_pretrained(tmp_path)
    st.save(path, dict(sd, extra_tensor=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="extra_tensor"):
        UNet.from_pretrained(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        UNet.from_pretrained(tmp_path / "empty_dir")
    with pytest.raises(ValueError, match="path"):
        UNet.from_pretrained(tmp_path / "nowhere")


def test_bad_call_arguments(saved):
    _, folder = saved["class_conditional"]
    unet = UNet.from_pretrained(folder)
    x, t, labels = inputs(CONFIGS["class_conditional"])
    with pytest.raises(ValueError, match="class_labels"):
        unet(x, t)
    with pytest.raises(ValueError, match="class_labels"):
        unet(x, t, [0, 1, 5])
    with pytest.raises(ValueError, match="sample"):
        unet(x[:, :, :7, :7], t, labels)          # not a multiple of 2 (one downsampling)
    with pytest.raises(ValueError, match="sample"):
        unet(x[0], t, labels)
    with pytest.raises(ValueError, match="timestep"):
        unet(x, [1, 2], labels)
    with pytest.raises(ValueError, match="NaN"):
        unet(np.full_like(x, np.nan), t, labels)
    with pytest.raises(ValueError, match="device"):
        unet(x, t, labels, device="vulkan:99")
    _, folder1 = saved["tiny_1_level"]
    with pytest.raises(ValueError, match="class_labels"):
        UNet.from_pretrained(folder1)(x, t, labels)


# --------------------------------------------------------------------------- safetensors reader

def test_safetensors_reads_what_the_library_writes(tmp_path):
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    ref = {"a.f32": torch.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)),
           "b.f16": torch.from_numpy(rng.standard_normal((5,)).astype(np.float16)),
           "c.bf16": torch.from_numpy(rng.standard_normal((2, 3))).to(torch.bfloat16),
           "d.empty": torch.zeros((0, 4)), "e.scalar": torch.tensor(2.5)}
    save_file(ref, tmp_path / "x.safetensors", metadata={"format": "pt"})
    got = st.load(tmp_path / "x.safetensors")
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k].dtype == np.float32 and got[k].shape == tuple(v.shape)
        np.testing.assert_array_equal(got[k], v.float().numpy())


def _raw_file(path, header, data, pad=True):
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize("case,match", [
    ("truncated_data", "'w1'"), ("gap", "'w1'.*gap"), ("overlap", "'w1'.*overlap"),
    ("shape_bytes", "'w0'.*needs 16 bytes"), ("unknown_dtype", "'w0'.*unknown dtype"),
    ("trailing", "after the last tensor 'w1'"), ("bad_offsets", "'w0'.*data_offsets"),
    ("not_first", "'w0'.*start"), ("int_dtype", "'w0'.*not a float"), ("missing_key", "'w0'"),
    ("duplicate", "'w0'.*twice"),
])
def test_safetensors_errors_name_the_tensor(tmp_path, case, match):
    f32 = {"dtype": "F32", "shape": [4]}
    h = {"w0": dict(f32, data_offsets=[0, 16]), "w1": dict(f32, data_offsets=[16, 32])}
    data = bytes(32)
    if case == "truncated_data":
        data = bytes(24)
    elif case == "gap":
        h["w1"]["data_offsets"] = [20, 36]
        data = bytes(36)
    elif case == "overlap":
        h["w1"]["data_offsets"] = [12, 28]
        data = bytes(28)
    elif case == "shape_bytes":
        h["w0"]["shape"] = [2, 2]
        h["w0"]["dtype"] = "F32"
        h["w0"]["data_offsets"] = [0, 12]
        h["w1"]["data_offsets"] = [12, 28]
        data = bytes(28)
    elif case == "unknown_dtype":
        h["w0"]["dtype"] = "F12"
    elif case == "trailing":
        data = bytes(40)
    elif case == "bad_offsets":
        h["w0"]["data_offsets"] = [16, 0]
    elif case == "not_first":
        h["w0"]["data_offsets"] = [4, 20]
        h["w1"]["data_offsets"] = [20, 36]
        data = bytes(36)
    elif case == "int_dtype":
        h["w0"]["dtype"] = "I32"
    elif case == "missing_key":
        del h["w0"]["shape"]
    path = tmp_path / "bad.safetensors"
    if case == "duplicate":
        raw = ('{"w0":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
               '"w0":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}').encode()
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    else:
        _raw_file(path, h, data)
    with pytest.raises(ValueError, match=match):
        st.load(path)


def test_safetensors_header_errors(tmp_path):
    p = tmp_path / "h.safetensors"
    p.write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="truncated"):
        st.load(p)
    p.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="truncated"):
        st.load(p)
    p.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="exceeds"):
        st.load(p)
    p.write_bytes((4).to_bytes(8, "little") + b"[1] ")
    with pytest.raises(ValueError, match="JSON object"):
        st.load(p)
    p.write_bytes((4).to_bytes(8, "little") + b"{x: ")
    with pytest.raises(ValueError, match="JSON"):
        st.load(p)
    _raw_file(p, {"__metadata__": {"a": 1}}, b"")
    with pytest.raises(ValueError, match="__metadata__"):
        st.load(p)
    _raw_file(p, {"__metadata__": {"a": "b"}}, b"")
    assert st.load(p) == {}
