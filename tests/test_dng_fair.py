"""DNG run as its method requires (issue 15): the scaled offset and the official sampler.

References are independent of ccfg's C: diffusers' DDPMScheduler for the timesteps and the
training schedule, and a NumPy transcription of the official DNG loop (Koulischer et al.,
FelixKoulischer/Dynamic-Negative-Guidance `gen_batch_DNG` / `compute_posterior_DNG`, as
docs/methods.md §4 writes it) for the whole run with fixed-large noise."""
import math

import numpy as np
import pytest

import ccfg
from ccfg.sampling import dng_scaled_offset
from ccfg.schedulers import SchedulerConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _drift_weight_diffusers(steps, T=1000, **cfg):
    """sum_k 1/(2 β̃_k) over a diffusers DDPM run of `steps` steps (β̃ > 0 only): diffusers'
    timesteps and previous_timestep, the training schedule in float64 (diffusers keeps it in
    float32, which moves the sum, dominated by the tiny β̃ of the last steps, by 1e-4)."""
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDPMScheduler(num_train_timesteps=T, **cfg)
    sch.set_timesteps(steps)
    lo, hi = cfg.get("beta_start", 1e-4), cfg.get("beta_end", 0.02)
    if cfg.get("beta_schedule") == "scaled_linear":
        betas = np.linspace(lo ** 0.5, hi ** 0.5, T) ** 2
    else:
        betas = np.linspace(lo, hi, T)
    ac = np.cumprod(1.0 - betas)
    total = 0.0
    for t in sch.timesteps.numpy():
        prev = sch.previous_timestep(int(t))
        prev = int(prev) if not hasattr(prev, "item") else int(prev.item())
        a, ap = ac[t], (ac[prev] if prev >= 0 else 1.0)
        bt = (1 - ap) / (1 - a) * (1 - a / ap)
        if bt > 0:
            total += 0.5 / bt
    return total


@pytest.mark.parametrize("steps", [10, 20, 50, 100])
def test_scaled_offset_matches_drift_from_diffusers(steps):
    w_ref = _drift_weight_diffusers(1000)
    w_run = _drift_weight_diffusers(steps)
    want = 2e-4 * w_ref / w_run
    got = dng_scaled_offset("ddpm", steps)
    assert got == pytest.approx(want, rel=1e-9)
    # the offset's drift over the run is the official run's: 2e-4 * w_ref (29.2 nats)
    assert got * w_run == pytest.approx(2e-4 * w_ref, rel=1e-9)
    assert 2e-4 * w_ref == pytest.approx(29.22, abs=0.01)


def test_scaled_offset_other_schedule_and_reference():
    cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    want = 3e-4 * _drift_weight_diffusers(500, **cfg) / _drift_weight_diffusers(25, **cfg)
    got = dng_scaled_offset("ddpm", 25, SchedulerConfig(**cfg), offset=3e-4, reference_steps=500)
    assert got == pytest.approx(want, rel=1e-9)
    assert dng_scaled_offset("ddpm", 1000) == pytest.approx(2e-4, rel=1e-12)


def test_scaled_offset_in_sample_is_the_number():
    m = ccfg.models.GaussianMixture.toy_2d()
    kw = dict(positive="A", negative="B", sampler="ddpm", steps=20, n=64, seed=4, progress=False,
              device="cpu")
    a = ccfg.sample(m, guidance=ccfg.DNG(3.0, offset="scaled"), **kw)
    b = ccfg.sample(m, guidance=ccfg.DNG(3.0, offset=dng_scaled_offset("ddpm", 20)), **kw)
    c = ccfg.sample(m, guidance=ccfg.DNG(3.0), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert repr(ccfg.DNG(offset="scaled")).count("offset='scaled'") == 1


def test_scaled_offset_errors():
    with pytest.raises(ValueError, match="offset"):
        ccfg.DNG(offset="auto")
    with pytest.raises(TypeError, match="offset"):
        ccfg.DNG(offset=[1])
    u = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="offset='scaled'"):
        ccfg.guide(u, u, u, ccfg.DNG(offset="scaled"))
    with pytest.raises(ValueError, match="steps"):
        dng_scaled_offset("ddpm", 0)


def _official_dng(eps_fn, x_T, noises, ac, lam0, prior, temp, delta, p_min, p_max):
    """The official DNG loop (docs/methods.md §4.1) in float64: DDPM over every training step,
    eps = eps_u - λ p/(1-p) (eps_n - eps_u), noise sqrt(β_t) z (fixed large), the posterior
    scored with the posterior variance β̃_t."""
    T = len(ac)
    x = x_T.astype(np.float64)
    p = np.full(x.shape[0], prior)
    for k, t in enumerate(range(T - 1, -1, -1)):
        a = ac[t]
        ap = ac[t - 1] if t > 0 else 1.0
        alpha = a / ap
        beta = 1 - alpha
        eu, en = eps_fn(x, t, None), eps_fn(x, t, 1)
        lam = lam0 * p / (1 - p)
        e = eu - lam[:, None] * (en - eu)
        mean = (x - beta / math.sqrt(1 - a) * e) / math.sqrt(alpha)
        x_new = mean + (math.sqrt(beta) * noises[k] if t > 0 else 0.0)
        s2 = (1 - ap) / (1 - a) * beta
        if s2 > 0:
            mu_u = (x - beta / math.sqrt(1 - a) * eu) / math.sqrt(alpha)
            mu_n = (x - beta / math.sqrt(1 - a) * en) / math.sqrt(alpha)
            d = np.sum((x_new - mu_n) ** 2, 1) - np.sum((x_new - mu_u) ** 2, 1)
            p = np.clip(p * np.exp((-temp * d + delta) / (2 * s2)), p_min, p_max)
        x = x_new
    return x


_VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and d.get("available")]
DEVICES = ["cpu"] + [pytest.param(d["selector"], id="vulkan") for d in _VK[:1]]


@pytest.mark.parametrize("device", DEVICES)
def test_official_loop_with_fixed_large_noise(device):
    """ccfg's DNG on DDPM over every training step with noise_variance="fixed_large" is the
    official loop (a short 60-step training schedule keeps the test fast). On a Vulkan device
    the posterior lives on the device (log p, shaders/coef.glsl)."""
    T, n, dim = 60, 6, 4
    cfg = SchedulerConfig(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2)
    ac = np.cumprod(1 - np.linspace(1e-3, 0.2, T))

    def eps_fn(x, t, cond):
        shift = 0.0 if cond is None else 0.5
        return 0.4 * x + shift * np.array([1.0, -0.5, 0.25, 0.0])

    def model_fn(x, t, cond):
        out = np.stack([eps_fn(x[i:i + 1].astype(np.float64), t[i], c)[0]
                        for i, c in enumerate(cond)])
        return out.astype(np.float32)

    model = ccfg.models.PythonModel(model_fn, (dim,))
    rule = ccfg.DNG(scale=1.0, negative_scale=2.0, prior=0.2, temperature=0.5, offset=2e-3,
                    p_min=1e-6, p_max=0.9)
    got = ccfg.sample(model, positive=None, negative=1, guidance=rule, sampler="ddpm", steps=T,
                      n=n, seed=5, progress=False, scheduler=cfg, noise_variance="fixed_large",
                      device=device)
    x_T = ccfg.randn(5, n, (dim,), stream=0)
    noises = [ccfg.randn(5, n, (dim,), stream=k + 1).astype(np.float64) for k in range(T)]
    want = _official_dng(eps_fn, x_T, noises, ac, 2.0, 0.2, 0.5, 2e-3, 1e-6, 0.9)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # fixed_small noise is another run
    small = ccfg.sample(model, positive=None, negative=1, guidance=rule, sampler="ddpm", steps=T,
                        n=n, seed=5, progress=False, scheduler=cfg, device="cpu")
    assert not np.allclose(small, want, atol=1e-3)
