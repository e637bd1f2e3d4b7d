"""Scheduler options as diffusers runs them (issue 12, item 3): clip_sample and dynamic
thresholding of DDIM/DDPM's predicted x0, checked step by step against diffusers' own schedulers on
a model whose x0 predictions leave [-1, 1]; options ccfg cannot honour are refused by name."""
import importlib

import numpy as np
import pytest

import ccfg
from ccfg.schedulers import SchedulerConfig

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE, N, SEED, STEPS = (3, 4), 6, 7, 12
VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]


def fn(x, t):
    """eps whose x0 = (x - sqrt(1-a) eps)/sqrt(a) is far outside [-1, 1] at the noisy steps"""
    return 0.3 * np.tanh(x) + 0.05 * np.cos(3.0 * x)


def ccfg_run(sampler, opts, eta=0.0, device="cpu"):
    model = ccfg.models.PythonModel(lambda x, t, c: fn(x, t).astype(np.float32), SHAPE)
    kw = dict(eta=eta) if sampler == "ddim" else {}
    return ccfg.sample(model, sampler=sampler, steps=STEPS, n=N, seed=SEED, progress=False,
                       scheduler=SchedulerConfig.from_config(opts), device=device, **kw)


def diffusers_run(sampler, opts, eta=0.0):
    cls = diffusers.DDIMScheduler if sampler == "ddim" else diffusers.DDPMScheduler
    sch = cls.from_config(opts)
    sch.set_timesteps(STEPS)
    noises = [ccfg.randn(SEED, N, SHAPE, stream=k + 1) for k in range(STEPS)]
    mod = importlib.import_module(f"diffusers.schedulers.scheduling_{sampler}")
    orig, k = mod.randn_tensor, {"k": 0}
    mod.randn_tensor = lambda shape, *a, **kw: torch.as_tensor(noises[k["k"]])
    try:
        x = torch.as_tensor(ccfg.randn(SEED, N, SHAPE, stream=0))
        for i, t in enumerate(sch.timesteps):
            k["k"] = i
            out = torch.as_tensor(fn(x.numpy(), float(t)).astype(np.float32))
            kw = dict(eta=eta, variance_noise=torch.as_tensor(noises[i])) \
                if sampler == "ddim" and eta > 0 else ({"eta": eta} if sampler == "ddim" else {})
            x = sch.step(out, t, x, **kw).prev_sample.to(torch.float32)
    finally:
        mod.randn_tensor = orig
    return x.double().numpy()


def options(sampler, **kw):
    cls = diffusers.DDIMScheduler if sampler == "ddim" else diffusers.DDPMScheduler
    return dict(cls(**kw).config)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
@pytest.mark.parametrize("opts", [dict(clip_sample=True),
                                  dict(clip_sample=True, clip_sample_range=0.5),
                                  dict(clip_sample=False, thresholding=True,
                                       dynamic_thresholding_ratio=0.8, sample_max_value=2.0),
                                  dict(clip_sample=False, thresholding=True,
                                       dynamic_thresholding_ratio=0.995, sample_max_value=1.5),
                                  dict(clip_sample=False)])
def test_matches_diffusers(sampler, eta, opts):
    cfg = options(sampler, **opts)
    got, want = ccfg_run(sampler, cfg, eta), diffusers_run(sampler, cfg, eta)
    assert rel(got, want) <= 1e-5, rel(got, want)


def test_the_options_change_the_result():
    """not a test that cannot fail: clipping moves this run by far more than the tolerance"""
    on, off = options("ddim", clip_sample=True), options("ddim", clip_sample=False)
    assert rel(ccfg_run("ddim", on), ccfg_run("ddim", off)) > 0.05
    thr = options("ddim", clip_sample=False, thresholding=True, dynamic_thresholding_ratio=0.8,
                  sample_max_value=2.0)
    assert rel(ccfg_run("ddim", thr), ccfg_run("ddim", on)) > 0.05


@pytest.mark.skipif(not VK, reason="no Vulkan device")
@pytest.mark.parametrize("opts", [dict(clip_sample=True),
                                  dict(clip_sample=False, thresholding=True,
                                       dynamic_thresholding_ratio=0.8, sample_max_value=2.0)])
def test_vulkan_matches_cpu(opts):
    cfg = options("ddim", **opts)
    vk = ccfg_run("ddim", cfg, eta=1.0, device=VK[0]["selector"])
    assert rel(vk, ccfg_run("ddim", cfg, eta=1.0)) <= 1e-6


def test_defaults_and_loading():
    assert SchedulerConfig().clip_sample is False            # ccfg's default: no processing
    c = SchedulerConfig.from_config(dict(diffusers.DDIMScheduler().config))
    assert c.clip_sample is True and c.clip_sample_range == 1.0   # diffusers' DDIM default, kept
    for cls in ("DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
                "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                "DPMSolverMultistepScheduler"):
        SchedulerConfig.from_config(dict(getattr(diffusers, cls)().config))   # all load


@pytest.mark.parametrize("key,value", [("use_karras_sigmas", True), ("variance_type", "learned"),
                                       ("solver_order", 3), ("timestep_type", "continuous"),
                                       ("final_sigmas_type", "sigma_min"),
                                       ("some_future_option", 1)])
def test_options_ccfg_cannot_honour_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=key):
        SchedulerConfig.from_config({key: value})


def test_refusals_name_the_field():
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        SchedulerConfig.from_config(dict(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="dynamic_thresholding_ratio"):
        SchedulerConfig(thresholding=True, dynamic_thresholding_ratio=1.5)
    with pytest.raises(ValueError, match="clip_sample_range"):
        SchedulerConfig(clip_sample=True, clip_sample_range=0.0)
    with pytest.raises(TypeError, match="clip_sample"):
        SchedulerConfig(clip_sample="yes")
    model = ccfg.models.PythonModel(lambda x, t, c: x, SHAPE)
    for sampler in ("euler", "heun", "dpmpp_2m", "euler_ancestral"):
        with pytest.raises(ValueError, match="clip_sample"):
            ccfg.sample(model, sampler=sampler, steps=2, n=1, progress=False,
                        scheduler=SchedulerConfig(clip_sample=True))
