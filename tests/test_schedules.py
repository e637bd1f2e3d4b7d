"""ccfg.schedulers.plan against diffusers' scheduler objects and an independent float64 reference.

Tolerances: diffusers computes betas / alphas_cumprod / sigmas in float32 (its alphas_cumprod differs
from the float64 product by up to 1.3e-5 relative on squaredcos_cap_v2, its sigmas by up to 2.6e-4),
and its Karras timesteps come from a float32 log-sigma interpolation (up to 0.04 off the float64
value where log sigma is flat, near t = 999 on squaredcos_cap_v2).
"""
import itertools
import json

import numpy as np
import pytest

import ccfg
from ccfg.schedulers import SchedulerConfig, plan
from reference_solvers import SIGMA_SAMPLERS, SAMPLERS, VP_SAMPLERS, diffusers_scheduler, plan_reference

# diffusers 0.42 + NumPy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BETAS = ["linear", "scaled_linear", "squaredcos_cap_v2"]
SPACINGS = ["leading", "trailing", "linspace"]
STEPS = [1, 2, 7, 10, 50]


def _cfg(beta, spacing, **kw):
    d = dict(beta_schedule=beta, timestep_spacing=spacing)
    if beta == "scaled_linear":  # Stable Diffusion's values
        d.update(beta_start=0.00085, beta_end=0.012)
    d.update(kw)
    return d


def _cases():
    for s, sp, b, n in itertools.product(SAMPLERS, SPACINGS, BETAS, STEPS):
        for k in ([False, True] if s in SIGMA_SAMPLERS else [False]):
            yield pytest.param(s, sp, b, n, k, id=f"{s}-{sp}-{b}-{n}{'-karras' if k else ''}")


@pytest.fixture(scope="module")
def diffusers_mod():
    return pytest.importorskip("diffusers")


def _t_atol(sampler, beta, karras):
    if not karras:
        return 1e-4
    if sampler == "dpmpp_2m" and beta == "squaredcos_cap_v2":
        # diffusers truncates the unrounded Karras timesteps to int64 (e.g. 998.99999 -> 998)
        return 1.0 + 1e-9
    return 0.05


def _heun_step_sigmas(d_sigmas):
    """diffusers' Heun sigmas [s0, s1, s1, ..., sN-1, sN-1, 0] -> [s0, ..., sN-1, 0]."""
    return np.concatenate([d_sigmas[:1], d_sigmas[1:-1:2], d_sigmas[-1:]])


@pytest.mark.parametrize("sampler,spacing,beta,steps,karras", list(_cases()))
def test_plan_matches_diffusers_and_reference(diffusers_mod, sampler, spacing, beta, steps, karras):
    cfg = _cfg(beta, spacing)
    got = plan(sampler, steps, SchedulerConfig(**cfg), karras=karras)
    ref = plan_reference(sampler, steps, cfg, karras)
    d = diffusers_scheduler(sampler, steps, cfg, karras)
    d_t = d.timesteps.double().numpy()
    d_ac = d.alphas_cumprod.double().numpy()

    n_eval = 2 * steps - 1 if sampler == "heun" else steps
    assert np.shape(got["timesteps"]) == (n_eval,)
    assert np.shape(got["sigmas"]) == (steps + 1,)

    # training schedule
    np.testing.assert_allclose(got["alphas_cumprod"], ref["alphas_cumprod"], rtol=1e-9)
    np.testing.assert_allclose(got["alphas_cumprod"], d_ac, rtol=3e-5)

    # model timesteps
    atol = _t_atol(sampler, beta, karras)
    np.testing.assert_allclose(got["timesteps"], d_t, rtol=0, atol=atol, err_msg="timesteps vs diffusers")
    np.testing.assert_allclose(got["timesteps"], ref["timesteps"], rtol=0,
                               atol=atol if sampler == "dpmpp_2m" else min(atol, 1e-3),
                               err_msg="timesteps vs reference")

    # init_noise_sigma
    np.testing.assert_allclose(float(got["init_noise_sigma"]), float(d.init_noise_sigma), rtol=5e-4)
    np.testing.assert_allclose(float(got["init_noise_sigma"]), ref["init_noise_sigma"], rtol=1e-6)

    if sampler in SIGMA_SAMPLERS:
        d_s = d.sigmas.double().numpy()
        if sampler == "heun":
            d_s = _heun_step_sigmas(d_s)
        assert got["sigmas"][-1] == 0
        np.testing.assert_allclose(got["sigmas"], d_s, rtol=5e-4, atol=1e-7, err_msg="sigmas vs diffusers")
        np.testing.assert_allclose(got["sigmas"], ref["sigmas"], rtol=1e-6, atol=1e-12,
                                   err_msg="sigmas vs reference")
    else:
        np.testing.assert_allclose(got["alpha_bars"], ref["alpha_bars"], rtol=1e-9)
        np.testing.assert_allclose(got["alpha_bars_next"], ref["alpha_bars_next"], rtol=1e-9)
        # diffusers' own alpha_prod_t / alpha_prod_t_prev
        ti = d.timesteps.numpy().astype(np.int64)
        if sampler == "ddim":
            prev = ti - d.config.num_train_timesteps // steps
            final = float(d.final_alpha_cumprod)
        else:
            prev = np.array([int(d.previous_timestep(int(t))) for t in ti])
            final = 1.0
        d_next = np.where(prev >= 0, d_ac[np.clip(prev, 0, None)], final)
        np.testing.assert_allclose(got["alpha_bars"], d_ac[ti], rtol=3e-5)
        np.testing.assert_allclose(got["alpha_bars_next"], d_next, rtol=3e-5)
        np.testing.assert_allclose(got["sigmas"], ref["sigmas"], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_plan_defaults(sampler):
    """config=None: diffusers' defaults (linear 1e-4..0.02, 1000 steps, the sampler's default spacing)."""
    got = plan(sampler, 20)
    ref = plan_reference(sampler, 20, None)
    np.testing.assert_allclose(got["timesteps"], ref["timesteps"], atol=1e-4)
    np.testing.assert_allclose(got["sigmas"], ref["sigmas"], rtol=1e-6)
    np.testing.assert_allclose(float(got["init_noise_sigma"]), ref["init_noise_sigma"], rtol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler", "dpmpp_2m"])
def test_plan_steps_offset_and_alpha_to_one(diffusers_mod, sampler):
    cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
               timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False)
    got = plan(sampler, 25, SchedulerConfig(**cfg))
    ref = plan_reference(sampler, 25, cfg)
    d = diffusers_scheduler(sampler, 25, cfg)
    np.testing.assert_allclose(got["timesteps"], d.timesteps.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(got["timesteps"], ref["timesteps"], atol=1e-4)
    if sampler in VP_SAMPLERS:
        np.testing.assert_allclose(got["alpha_bars_next"], ref["alpha_bars_next"], rtol=1e-9)
    else:
        np.testing.assert_allclose(got["sigmas"], ref["sigmas"], rtol=1e-6)
        np.testing.assert_allclose(got["sigmas"], d.sigmas.double().numpy(), rtol=5e-4)


def test_plan_trained_betas():
    betas = np.linspace(2e-4, 0.03, 1000) ** 1.1
    cfg = dict(trained_betas=betas.tolist())
    got = plan("euler", 10, SchedulerConfig(trained_betas=tuple(betas)))
    ref = plan_reference("euler", 10, cfg)
    np.testing.assert_allclose(got["alphas_cumprod"], np.cumprod(1 - betas), rtol=1e-12)
    np.testing.assert_allclose(got["sigmas"], ref["sigmas"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# SchedulerConfig.from_config with diffusers' scheduler_config.json
# ---------------------------------------------------------------------------------------------
_CLASSES = {
    "ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler", "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}


def _saved(diffusers_mod, sampler, tmp_path, **kw):
    cls = getattr(diffusers_mod, _CLASSES[sampler])
    sch = cls(**kw)
    sch.save_config(str(tmp_path))
    path = tmp_path / "scheduler_config.json"
    assert path.exists()
    return sch, path


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_from_config_json(diffusers_mod, sampler, tmp_path):
    kw = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
              beta_schedule="scaled_linear", prediction_type="v_prediction",
              timestep_spacing="trailing", steps_offset=1)
    if sampler == "ddim":
        kw["set_alpha_to_one"] = False
    sch, path = _saved(diffusers_mod, sampler, tmp_path, **kw)
    for src in (str(path), path, json.loads(path.read_text()), dict(sch.config)):
        c = SchedulerConfig.from_config(src)
        assert c.num_train_timesteps == 1000
        assert c.beta_start == pytest.approx(0.00085) and c.beta_end == pytest.approx(0.012)
        assert c.beta_schedule == "scaled_linear"
        assert c.prediction_type == "v_prediction"
        assert c.timestep_spacing == "trailing"
        assert c.steps_offset == 1
        if sampler == "ddim":
            assert c.set_alpha_to_one is False
    # the loaded config plans what diffusers, loaded from the same file, walks
    c = SchedulerConfig.from_config(str(path))
    d = getattr(diffusers_mod, _CLASSES[sampler]).from_pretrained(str(tmp_path))
    d.set_timesteps(12)
    got = plan(sampler, 12, c)
    np.testing.assert_allclose(got["timesteps"], d.timesteps.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(got["alphas_cumprod"], d.alphas_cumprod.double().numpy(), rtol=3e-5)
    if sampler in SIGMA_SAMPLERS:
        d_s = d.sigmas.double().numpy()
        if sampler == "heun":
            d_s = _heun_step_sigmas(d_s)
        np.testing.assert_allclose(got["sigmas"], d_s, rtol=5e-4, atol=1e-7)
    np.testing.assert_allclose(float(got["init_noise_sigma"]), float(d.init_noise_sigma), rtol=5e-4)


def test_from_config_default_json_and_squaredcos(diffusers_mod, tmp_path):
    """A DDIM config with diffusers' defaults (leading spacing, clip_sample etc. ignored)."""
    sch, path = _saved(diffusers_mod, "ddim", tmp_path, beta_schedule="squaredcos_cap_v2")
    c = SchedulerConfig.from_config(str(path))
    assert c.beta_schedule == "squaredcos_cap_v2"
    assert c.timestep_spacing == "leading"
    got = plan("ddim", 10, c)
    d = diffusers_scheduler("ddim", 10, dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="leading"))
    np.testing.assert_allclose(got["timesteps"], d.timesteps.double().numpy(), atol=0)


def test_from_config_trained_betas(diffusers_mod, tmp_path):
    betas = (np.linspace(1e-4, 0.02, 1000) ** 1.05).tolist()
    sch, path = _saved(diffusers_mod, "euler", tmp_path, trained_betas=betas)
    c = SchedulerConfig.from_config(str(path))
    got = plan("euler", 8, c)
    d = diffusers_mod.EulerDiscreteScheduler.from_pretrained(str(tmp_path))
    d.set_timesteps(8)
    np.testing.assert_allclose(got["sigmas"], d.sigmas.double().numpy(), rtol=5e-4, atol=1e-7)


def test_sample_accepts_config_path(diffusers_mod, tmp_path):
    """ccfg.sample(scheduler=<path to scheduler_config.json>) uses that schedule."""
    sch, path = _saved(diffusers_mod, "ddim", tmp_path, beta_schedule="scaled_linear",
                       beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing")
    seen = []

    def fn(x, t, cond):
        seen.append(np.array(t))
        return 0.1 * np.tanh(x)

    m = ccfg.models.PythonModel(fn, (3,))
    ccfg.sample(m, sampler="ddim", steps=5, n=2, scheduler=str(path), progress=False)
    ts = np.array([s[0] for s in seen])
    d = diffusers_scheduler("ddim", 5, dict(beta_schedule="scaled_linear", beta_start=0.00085,
                                            beta_end=0.012, timestep_spacing="trailing"))
    np.testing.assert_array_equal(ts, d.timesteps.double().numpy())
