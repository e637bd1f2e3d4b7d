"""Independent NumPy references for ccfg's random numbers, schedules and samplers.

Written from the published algorithms (Random123 Philox-4x32-10, Box-Muller; DDIM, DDPM,
k-diffusion's Euler / Euler ancestral / Heun / DPM-Solver++(2M)) with diffusers' discretisation
conventions (timestep spacing, sigma interpolation, Karras sigmas, init_noise_sigma), all in
float64. Deliberately does not share any code with ccfg.
"""
from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------
# Philox-4x32-10 (Salmon et al., SC'11; Random123) and Box-Muller
# ----------------------------------------------------------------------------------------------
PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    """Vectorised Philox-4x32-10.

    counter: array (..., 4) of uint32-valued ints; key: (k0, k1) scalars or arrays (..., 2).
    Returns uint32 array (..., 4).
    """
    c = np.asarray(counter, dtype=np.uint64) & _MASK32
    k = np.asarray(key, dtype=np.uint64) & _MASK32
    c0, c1, c2, c3 = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    k0 = np.broadcast_to(k[..., 0], c0.shape).copy()
    k1 = np.broadcast_to(k[..., 1], c0.shape).copy()
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + np.uint64(PHILOX_W0)) & _MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & _MASK32
        p0 = PHILOX_M0 * c0  # < 2^64, exact in uint64
        p1 = PHILOX_M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def randn_reference(seed: int, n: int, shape, stream: int = 0) -> np.ndarray:
    """ccfg.randn as specified in docs/api.md, computed in float64 (returned as float64)."""
    shape = tuple(int(s) for s in (shape if np.iterable(shape) else (shape,)))
    m = int(np.prod(shape, dtype=np.int64))
    nblk = (m + 3) // 4
    i_idx, b_idx = np.meshgrid(np.arange(n, dtype=np.uint64), np.arange(nblk, dtype=np.uint64), indexing="ij")
    ctr = np.stack([b_idx, i_idx, np.full_like(b_idx, stream), np.zeros_like(b_idx)], axis=-1)
    key = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    u = philox4x32_10(ctr, key).astype(np.float64)  # (n, nblk, 4)
    u = (u + 0.5) / 2.0**32
    r0 = np.sqrt(-2.0 * np.log(u[..., 0]))
    t0 = 2.0 * np.pi * u[..., 1]
    r1 = np.sqrt(-2.0 * np.log(u[..., 2]))
    t1 = 2.0 * np.pi * u[..., 3]
    z = np.stack([r0 * np.cos(t0), r0 * np.sin(t0), r1 * np.cos(t1), r1 * np.sin(t1)], axis=-1)
    return z.reshape(n, nblk * 4)[:, :m].reshape((n,) + shape)


# ----------------------------------------------------------------------------------------------
# Training schedules
# ----------------------------------------------------------------------------------------------
DEFAULT_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    trained_betas=None,
    prediction_type="epsilon",
    timestep_spacing=None,
    steps_offset=0,
    set_alpha_to_one=True,
)

SIGMA_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m")
VP_SAMPLERS = ("ddim", "ddpm")
SAMPLERS = VP_SAMPLERS + SIGMA_SAMPLERS
STOCHASTIC = ("ddpm", "euler_ancestral")  # and ddim with eta > 0


def full_config(cfg=None) -> dict:
    out = dict(DEFAULT_CONFIG)
    out.update(cfg or {})
    return out


def betas_reference(cfg) -> np.ndarray:
    cfg = full_config(cfg)
    T = cfg["num_train_timesteps"]
    if cfg["trained_betas"] is not None:
        return np.asarray(cfg["trained_betas"], dtype=np.float64)
    sched = cfg["beta_schedule"]
    if sched == "linear":
        return np.linspace(cfg["beta_start"], cfg["beta_end"], T)
    if sched == "scaled_linear":
        return np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T) ** 2
    if sched == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021, cosine schedule with s=0.008, betas capped at 0.999
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
    raise ValueError(sched)


def alphas_cumprod_reference(cfg) -> np.ndarray:
    return np.cumprod(1.0 - betas_reference(cfg))


def default_spacing(sampler: str) -> str:
    return "leading" if sampler in VP_SAMPLERS else "linspace"


def _spaced_timesteps(sampler, steps, cfg):
    """diffusers' set_timesteps discretisation (float64 values, descending)."""
    T = cfg["num_train_timesteps"]
    spacing = cfg["timestep_spacing"] or default_spacing(sampler)
    off = cfg["steps_offset"]
    if sampler == "dpmpp_2m":
        # DPMSolverMultistepScheduler: N+1 points, the last (0) dropped; integer timesteps
        if spacing == "linspace":
            return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(np.int64).astype(np.float64)
        if spacing == "leading":
            ratio = T // (steps + 1)
            return (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64).astype(np.float64) + off
        if spacing == "trailing":
            return np.arange(T, 0, -T / steps).round().astype(np.int64).astype(np.float64) - 1
        raise ValueError(spacing)
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps)[::-1]
        if sampler in VP_SAMPLERS:
            ts = ts.round()
        else:
            ts = ts.astype(np.float32).astype(np.float64)  # diffusers keeps float32 (e.g. 166.5)
        return ts.copy()
    if spacing == "leading":
        ratio = T // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(np.float64) + off
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / steps)).astype(np.float64) - 1
    raise ValueError(spacing)


def sigma_to_t(sigma, log_sigmas):
    """Log-sigma linear interpolation onto the training timestep grid (k-diffusion / diffusers)."""
    sigma = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return (1 - w) * low + w * high


def karras_sigmas(sigma_min, sigma_max, steps, rho=7.0):
    ramp = np.linspace(0, 1, steps)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + ramp * (b - a)) ** rho


def plan_reference(sampler: str, steps: int, cfg=None, karras: bool = False) -> dict:
    """Reference for ccfg.schedulers.plan with diffusers' conventions.

    timesteps: model timesteps of every model evaluation (Heun: 2N-1, [t0, t1, t1, ..., tN-1, tN-1]);
    sigmas: N+1 step sigmas (last 0) for sigma samplers, sqrt((1-a)/a) of alpha_bars + last
    alpha_bars_next for VP samplers; alpha_bars / alpha_bars_next: VP samplers only.
    step_timesteps: the N per-step timesteps.
    """
    cfg = full_config(cfg)
    if sampler not in SAMPLERS:
        raise ValueError(sampler)
    ac = alphas_cumprod_reference(cfg)
    T = cfg["num_train_timesteps"]
    spacing = cfg["timestep_spacing"] or default_spacing(sampler)
    ts = _spaced_timesteps(sampler, steps, cfg)
    out = {"alphas_cumprod": ac}
    if sampler in VP_SAMPLERS:
        if karras:
            raise ValueError("karras")
        ti = ts.astype(np.int64)
        ab = ac[ti]
        final = 1.0 if (sampler == "ddpm" or cfg["set_alpha_to_one"]) else ac[0]
        if sampler == "ddim":
            prev = ti - T // steps  # diffusers DDIM: fixed stride whatever the spacing
        else:
            prev = np.append(ti[1:], -1)  # diffusers DDPM: the next timestep of the list
        ab_next = np.where(prev >= 0, ac[np.clip(prev, 0, None)], final)
        out.update(
            timesteps=ts, step_timesteps=ts, alpha_bars=ab, alpha_bars_next=ab_next,
            sigmas=np.sqrt((1 - np.append(ab, ab_next[-1])) / np.append(ab, ab_next[-1])),
            init_noise_sigma=1.0,
        )
        return out

    train_sigmas = np.sqrt((1 - ac) / ac)
    log_sigmas = np.log(train_sigmas)
    if sampler == "dpmpp_2m":
        if karras:
            sig = karras_sigmas(train_sigmas[0], train_sigmas[-1], steps)
            t = sigma_to_t(sig, log_sigmas)
            if cfg["beta_schedule"] != "squaredcos_cap_v2":
                t = t.round()
            ts = np.trunc(t)  # diffusers stores DPM timesteps as int64
        else:
            sig = np.interp(ts, np.arange(T), train_sigmas)
        sig = np.append(sig, 0.0)
        init = 1.0
    else:
        sig = np.interp(ts, np.arange(T), train_sigmas)
        if karras:
            sig = karras_sigmas(sig[-1], sig[0], steps)
            ts = sigma_to_t(sig, log_sigmas)
        sig = np.append(sig, 0.0)
        smax = sig.max()
        init = smax if spacing in ("linspace", "trailing") else math.sqrt(smax**2 + 1)
    out.update(sigmas=sig, step_timesteps=ts, init_noise_sigma=float(init))
    if sampler == "heun":
        out["timesteps"] = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
    else:
        out["timesteps"] = ts
    return out


def make_test_model(cfg=None):
    """A smooth, nonlinear, well-conditioned test model fn(x_in, t) -> output of cfg's prediction_type.

    Its clean-sample prediction is x0 = a x + 0.3 s tanh(x) + 0.1 sin(t/100), a = sqrt(abar(t)),
    s = sqrt(1-abar(t)), abar(t) = 1/(1+sigma(t)^2) with sigma(t) linearly interpolated on the
    training grid (diffusers' convention for fractional timesteps). It behaves like a denoiser
    (a x is the posterior mean for N(0, I) data), so float32 round-off is not amplified by
    1/sqrt(abar_T) the way an arbitrary eps = g(x, t) would be on squaredcos_cap_v2 (abar_T ~ 3e-10).
    """
    cfg = full_config(cfg)
    ac = alphas_cumprod_reference(cfg)
    train_sigmas = np.sqrt((1 - ac) / ac)
    grid = np.arange(len(ac), dtype=np.float64)
    pt = cfg["prediction_type"]

    def fn(x, t):
        x = np.asarray(x, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
        sig = np.interp(t, grid, train_sigmas)
        ab = 1.0 / (1.0 + sig * sig)
        a, s = np.sqrt(ab), np.sqrt(1.0 - ab)
        x0 = a * x + 0.3 * s * np.tanh(x) + 0.1 * np.sin(t / 100.0)
        eps = (x - a * x0) / s
        if pt == "epsilon":
            return eps
        if pt == "v_prediction":
            return a * eps - s * x0
        return x0

    return fn


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------
def _to_eps_x0(out, x_in, ab, prediction_type):
    """Model output at VP input x_in with alpha_bar ab -> (eps, x0)."""
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    if prediction_type == "epsilon":
        eps = out
        x0 = (x_in - s * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * x_in - s * out
        eps = a * out + s * x_in
    elif prediction_type == "sample":
        x0 = out
        eps = (x_in - a * x0) / s
    else:
        raise ValueError(prediction_type)
    return eps, x0


def sample_reference(fn, sampler, steps, x_T, cfg=None, *, eta=0.0, karras=False, noises=None,
                     return_trajectory=False):
    """Reference sampling loop in float64.

    fn(x_in, t) -> model output (x_in VP-scaled input, t float64 (B,)). `noises[k]` is the noise
    of step k (stochastic samplers). Returns x0 (and the VP-scaled trajectory, (steps+1, ...)).
    """
    cfg = full_config(cfg)
    p = plan_reference(sampler, steps, cfg, karras)
    pt = cfg["prediction_type"]
    x = np.asarray(x_T, dtype=np.float64) * p["init_noise_sigma"]
    B = x.shape[0]

    def model(x_in, t):
        # the model sees float32 input and returns float32 (PythonModel contract); everything
        # else is float64
        x_in = np.asarray(x_in, dtype=np.float32)
        out = fn(x_in, np.full(B, t, dtype=np.float64))
        return np.asarray(out, dtype=np.float32).astype(np.float64)

    traj = []
    if sampler in VP_SAMPLERS:
        traj.append(x.copy())
        for k in range(steps):
            t, ab, abn = p["timesteps"][k], p["alpha_bars"][k], p["alpha_bars_next"][k]
            eps, x0 = _to_eps_x0(model(x, t), x, ab, pt)
            if sampler == "ddim":
                var = (1 - abn) / (1 - ab) * (1 - ab / abn)
                std = eta * math.sqrt(var)
                x = math.sqrt(abn) * x0 + math.sqrt(1 - abn - std**2) * eps
                if eta > 0:
                    x = x + std * noises[k]
            else:  # ddpm, posterior mean + fixed_small (β̃_t) or fixed_large (β_t) variance
                beta_t = 1 - ab / abn
                x = (math.sqrt(abn) * beta_t / (1 - ab)) * x0 + (math.sqrt(ab / abn) * (1 - abn) / (1 - ab)) * x
                if t > 0:
                    var = beta_t if cfg.get("variance_type") == "fixed_large" else \
                        max((1 - abn) / (1 - ab) * beta_t, 1e-20)
                    x = x + math.sqrt(var) * noises[k]
            traj.append(x.copy())
    else:
        sig, ts = p["sigmas"], p["step_timesteps"]

        def denoise(xs, s, t):  # sigma-space denoiser D(x, sigma)
            ab = 1.0 / (1.0 + s * s)
            x_in = xs * math.sqrt(ab)
            _, x0 = _to_eps_x0(model(x_in, t), x_in, ab, pt)
            return x0

        if sampler == "dpmpp_2m":  # diffusers' DPM state is VP-scaled: x_T * 1.0
            x = x * math.sqrt(1 + sig[0] ** 2)
        traj.append(x / math.sqrt(1 + sig[0] ** 2))
        old = None
        for k in range(steps):
            s, sn = sig[k], sig[k + 1]
            d0 = denoise(x, s, ts[k])
            if sampler == "euler":
                x = x + (x - d0) / s * (sn - s)
            elif sampler == "euler_ancestral":
                s_up = math.sqrt(sn**2 * (s**2 - sn**2) / s**2)
                s_down = math.sqrt(sn**2 - s_up**2)
                x = x + (x - d0) / s * (s_down - s) + s_up * noises[k]
            elif sampler == "heun":
                d = (x - d0) / s
                x_e = x + d * (sn - s)
                if sn == 0:
                    x = x_e
                else:
                    d2 = (x_e - denoise(x_e, sn, ts[k + 1])) / sn
                    x = x + (d + d2) / 2 * (sn - s)
            elif sampler == "dpmpp_2m":
                if sn == 0:
                    x = d0
                else:
                    lam, lam_n = -math.log(s), -math.log(sn)
                    h = lam_n - lam
                    if old is None:
                        dd = d0
                    else:
                        r = (lam - (-math.log(sig[k - 1]))) / h
                        dd = (1 + 1 / (2 * r)) * d0 - 1 / (2 * r) * old
                    x = (sn / s) * x - math.expm1(-h) * dd
                old = d0
            traj.append(x / math.sqrt(1 + sn**2))
    x = traj[-1]
    if return_trajectory:
        return x, np.stack(traj)
    return x


# ----------------------------------------------------------------------------------------------
# diffusers as a second, independent reference (imported lazily; needs the dev extra)
# ----------------------------------------------------------------------------------------------
_DIFFUSERS_CLASS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}
_DIFFUSERS_MODULE = {
    "ddim": "scheduling_ddim",
    "ddpm": "scheduling_ddpm",
    "euler": "scheduling_euler_discrete",
    "euler_ancestral": "scheduling_euler_ancestral_discrete",
    "heun": "scheduling_heun_discrete",
    "dpmpp_2m": "scheduling_dpmsolver_multistep",
}


def diffusers_config(sampler, cfg=None) -> dict:
    """diffusers constructor kwargs equivalent to a ccfg config dict (no clipping)."""
    cfg = full_config(cfg)
    kw = dict(
        num_train_timesteps=cfg["num_train_timesteps"], beta_start=cfg["beta_start"],
        beta_end=cfg["beta_end"], beta_schedule=cfg["beta_schedule"],
        trained_betas=cfg["trained_betas"], prediction_type=cfg["prediction_type"],
        timestep_spacing=cfg["timestep_spacing"] or default_spacing(sampler),
        steps_offset=cfg["steps_offset"],
    )
    if sampler == "ddim":
        kw.update(clip_sample=False, set_alpha_to_one=cfg["set_alpha_to_one"])
    elif sampler == "ddpm":
        kw.update(clip_sample=False, variance_type=cfg.get("variance_type") or "fixed_small")
    elif sampler == "heun":
        kw.update(clip_sample=False)
    elif sampler == "dpmpp_2m":
        kw.update(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
                  lower_order_final=True, final_sigmas_type="zero")
    return kw


def diffusers_scheduler(sampler, steps, cfg=None, karras=False):
    """A diffusers scheduler for `sampler`, with set_timesteps(steps) done.

    diffusers' EulerAncestralDiscreteScheduler has no Karras option: its sigmas/timesteps are
    taken from EulerDiscreteScheduler(use_karras_sigmas=True) (same Karras construction).
    """
    import diffusers

    cls = getattr(diffusers, _DIFFUSERS_CLASS[sampler])
    kw = diffusers_config(sampler, cfg)
    if karras and sampler in ("euler", "dpmpp_2m"):
        kw["use_karras_sigmas"] = True
    sch = cls(**kw)
    if karras and sampler == "heun":
        # HeunDiscreteScheduler.__init__ runs set_timesteps(1000) (with Karras: a slow 1000x1000
        # sigma->t search); its result is overwritten by set_timesteps(steps) below anyway
        sch.register_to_config(use_karras_sigmas=True)
        sch.use_karras_sigmas = True
    sch.set_timesteps(steps)
    if karras and sampler == "euler_ancestral":
        e = diffusers.EulerDiscreteScheduler(**kw, use_karras_sigmas=True)
        e.set_timesteps(steps)
        sch.sigmas = e.sigmas.clone()
        sch.timesteps = e.timesteps.clone()
        sch._step_index = None
    return sch


def diffusers_sample(fn, sampler, steps, x_T, cfg=None, *, eta=0.0, karras=False, noises=None,
                     return_trajectory=False):
    """The standard diffusers loop (float32): x = x_T * init_noise_sigma; scale_model_input, fn, step.

    `noises[k]` is injected as step k's noise (DDIM: variance_noise; DDPM / Euler ancestral:
    randn_tensor patched in the scheduler's module). Trajectory is VP-scaled like ccfg's.
    """
    import importlib

    import torch

    sch = diffusers_scheduler(sampler, steps, cfg, karras)
    if hasattr(sch, "set_begin_index"):
        # start at index 0 explicitly: with repeated timesteps (DPM++ Karras on squaredcos_cap_v2
        # gives e.g. [998, 998, 998, ...]) diffusers' timestep lookup would start at index 1
        sch.set_begin_index(0)
    mod = importlib.import_module("diffusers.schedulers." + _DIFFUSERS_MODULE[sampler])
    cur = {"k": 0}
    orig = getattr(mod, "randn_tensor", None)

    def fake_randn(shape, *a, **kw):
        z = torch.as_tensor(np.asarray(noises[cur["k"]], dtype=np.float32))
        assert tuple(z.shape) == tuple(shape)
        return z

    x = torch.as_tensor(np.asarray(x_T, dtype=np.float32)) * sch.init_noise_sigma
    x = x.to(torch.float32)
    sigma_space = sampler in ("euler", "euler_ancestral", "heun")

    def vp(xx, k):
        if not sigma_space:
            return xx.double().numpy().copy()
        s = float(sch.sigmas[k * 2 if sampler == "heun" else k]) if k < steps else 0.0
        return xx.double().numpy() / math.sqrt(1 + s * s)

    traj = [vp(x, 0)]
    if noises is not None and orig is not None:
        mod.randn_tensor = fake_randn
    try:
        ts = sch.timesteps
        step_k = 0
        for j, t in enumerate(ts):
            cur["k"] = step_k
            inp = sch.scale_model_input(x, t)
            tt = np.full(x.shape[0], float(t), dtype=np.float64)
            out = torch.as_tensor(np.asarray(fn(inp.numpy().astype(np.float32), tt), dtype=np.float32))
            kw = {}
            if sampler == "ddim":
                kw["eta"] = eta
                if eta > 0:
                    kw["variance_noise"] = torch.as_tensor(np.asarray(noises[step_k], dtype=np.float32))
            x = sch.step(out, t, x, **kw).prev_sample.to(torch.float32)
            finished_step = not (sampler == "heun" and not sch.state_in_first_order)
            if sampler == "heun" and j == len(ts) - 1:
                finished_step = True
            if finished_step:
                step_k += 1
                traj.append(vp(x, step_k))
    finally:
        if orig is not None:
            mod.randn_tensor = orig
    xf = x.double().numpy()
    if return_trajectory:
        return xf, np.stack(traj)
    return xf
