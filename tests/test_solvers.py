"""Whole sampling trajectories of ccfg.sample (guidance=None, a PythonModel) against diffusers'
schedulers and an independent float64 NumPy reference (tests/reference_solvers.py).

The test model (reference_solvers.make_test_model) is a smooth nonlinear function of (x, t) that
behaves like a denoiser. An arbitrary eps = g(x, t) gives x0 predictions of size ~1/sqrt(abar_T)
(400 on the linear schedule, 5e4 on squaredcos_cap_v2), and diffusers' float32 state then differs
from a float64 computation by far more than 1e-4; with a denoiser-like model float32 and float64
agree to ~5e-5 on linear / scaled_linear. squaredcos_cap_v2 (sigma_max = 5.5e4) stays ill-conditioned
in float32 for sigma-space samplers (diffusers' Heun is off by ~7 after a 2-step run), so it is
checked against the float64 reference only.

Stochastic samplers: step k of ccfg draws ccfg.randn(seed, n, shape, stream=k+1); the same noise is
injected into diffusers (DDIM: variance_noise; DDPM / Euler ancestral: randn_tensor patched in the
scheduler module) and into the reference.
"""
import numpy as np
import pytest

import ccfg
from ccfg.schedulers import SchedulerConfig
from reference_solvers import (
    SAMPLERS, SIGMA_SAMPLERS, VP_SAMPLERS, diffusers_sample, full_config, make_test_model, plan_reference,
    sample_reference,
)

# diffusers 0.42 + NumPy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (3, 4)
N = 5
SEED = 1234
RTOL = ATOL = 1e-4


def _cfg(beta="linear", spacing=None, pt="epsilon", **kw):
    d = dict(beta_schedule=beta, timestep_spacing=spacing, prediction_type=pt)
    if beta == "scaled_linear":
        d.update(beta_start=0.00085, beta_end=0.012)
    d.update(kw)
    return d


def _stochastic(sampler, eta):
    return sampler in ("ddpm", "euler_ancestral") or (sampler == "ddim" and eta > 0)


def _noises(sampler, steps, eta, seed=SEED, n=N, shape=SHAPE):
    if not _stochastic(sampler, eta):
        return None
    return [ccfg.randn(seed, n, shape, stream=k + 1).astype(np.float64) for k in range(steps)]


def _ccfg_model(fn, pt, shape=SHAPE, calls=None):
    def f(x, t, cond):
        assert x.dtype == np.float32 and t.dtype == np.float64
        assert len(cond) == x.shape[0] and all(c is None for c in cond)
        if calls is not None:
            calls.append((x.copy(), t.copy()))
        return fn(x, t).astype(np.float32)

    return ccfg.models.PythonModel(f, shape, prediction_type=pt)


def _run(sampler, steps, cfg, *, eta=0.0, karras=False, x_T=None, seed=SEED, n=N, traj=True, calls=None):
    cfg = full_config(cfg)
    fn = make_test_model(cfg)
    model = _ccfg_model(fn, cfg["prediction_type"], calls=calls)
    kw = dict(eta=eta) if sampler == "ddim" else {}
    out = ccfg.sample(model, guidance=None, sampler=sampler, steps=steps, n=n, seed=seed, x_T=x_T,
                      return_trajectory=traj, progress=False, karras=karras,
                      scheduler=SchedulerConfig(**cfg), **kw)
    return out


def _close(got, want, what, rtol=RTOL, atol=ATOL):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        idx = np.unravel_index(np.argmax(err - rtol * np.abs(want)), err.shape)
        raise AssertionError(f"{what}: {bad.sum()}/{bad.size} off, max |diff| {err.max():.3e} "
                             f"at {idx}: got {got[idx]:.7g} want {want[idx]:.7g}")


def _compare(sampler, steps, cfg, *, eta=0.0, karras=False, with_diffusers=True, rtol=RTOL, atol=ATOL):
    x_T = ccfg.randn(SEED, N, SHAPE, stream=0)
    x, traj = _run(sampler, steps, cfg, eta=eta, karras=karras)
    assert x.dtype == np.float32 and x.shape == (N,) + SHAPE
    assert traj.shape == (steps + 1, N) + SHAPE
    fn = make_test_model(cfg)
    noises = _noises(sampler, steps, eta)
    xr, tr = sample_reference(fn, sampler, steps, x_T.astype(np.float64), cfg, eta=eta, karras=karras,
                              noises=noises, return_trajectory=True)
    _close(traj, tr, "trajectory vs reference", rtol, atol)
    _close(x, xr, "final vs reference", rtol, atol)
    if with_diffusers:
        pytest.importorskip("diffusers")
        xd, td = diffusers_sample(fn, sampler, steps, x_T, cfg, eta=eta, karras=karras, noises=noises,
                                  return_trajectory=True)
        # diffusers works in float32; its own distance from the float64 reference is allowed on top
        # (ccfg may round differently, e.g. it never stores sigma_max * x_T in float32)
        slack = float(np.abs(np.asarray(td, np.float64) - tr).max())
        _close(traj, td, "trajectory vs diffusers", rtol, atol + slack)
        _close(x, xd, "final vs diffusers", rtol, atol + slack)
    return x, traj


def _params(samplers, pts=("epsilon", "v_prediction", "sample")):
    for s in samplers:
        for pt in pts:
            yield s, pt


def _diffusers_supports(sampler, pt):
    return not (sampler == "euler_ancestral" and pt == "sample")  # NotImplementedError in diffusers


# ------------------------------------------------------------------------------------------------
# whole trajectories
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", ["linear", "scaled_linear"])
@pytest.mark.parametrize("sampler,pt", list(_params(SAMPLERS)))
def test_trajectory_default_spacing(sampler, pt, beta):
    _compare(sampler, 10, _cfg(beta, None, pt), eta=0.0,
             with_diffusers=_diffusers_supports(sampler, pt))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_trajectory_spacings(sampler, spacing):
    _compare(sampler, 7, _cfg("scaled_linear", spacing, "epsilon", steps_offset=1 if spacing == "leading" else 0))


@pytest.mark.parametrize("beta", ["linear", "scaled_linear"])
@pytest.mark.parametrize("sampler,pt", list(_params(SIGMA_SAMPLERS, ("epsilon", "v_prediction"))))
def test_trajectory_karras(sampler, pt, beta):
    _compare(sampler, 10, _cfg(beta, None, pt), karras=True)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("pt", ["epsilon", "v_prediction"])
def test_trajectory_ddim_eta(eta, pt):
    _compare("ddim", 10, _cfg("scaled_linear", None, pt), eta=eta)


@pytest.mark.parametrize("pt", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_trajectory_squaredcos_vs_reference(sampler, pt):
    """squaredcos_cap_v2 (abar_T ~ 3e-10): float64 reference only (diffusers' float32 is too coarse).

    Sigma-space samplers use "leading" spacing here (t_max = 900, sigma ~ 6): with t = 999
    (sigma = 5.5e4) a relative perturbation of x_T by one float32 ulp moves the float64 reference
    trajectory by 3e-4 (Euler) and 0.57 (Heun); that case is test_squaredcos_t999_as_accurate_as_diffusers.
    """
    spacing = "leading" if sampler in ("euler", "euler_ancestral", "heun") else None
    cfg = _cfg("squaredcos_cap_v2", spacing, pt)
    eta = 0.5 if sampler == "ddim" else 0.0
    _compare(sampler, 10, cfg, eta=eta, with_diffusers=False)
    if sampler in SIGMA_SAMPLERS and sampler != "dpmpp_2m":
        # Karras, default spacing (sigma_max = 5.5e4, but the first Karras interval is short).
        # DPM++ Karras on squaredcos_cap_v2 is left out: its timesteps are truncated to integers,
        # and float32 rounding in diffusers makes the first one 998 rather than 999.
        _compare(sampler, 10, _cfg("squaredcos_cap_v2", None, pt), karras=True, with_diffusers=False)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun"])
def test_squaredcos_t999_as_accurate_as_diffusers(sampler):
    """From t = 999 on squaredcos_cap_v2 (sigma_max = 5.5e4) float32 round-off is amplified (see
    above); ccfg must be at least as close to the float64 reference as diffusers is."""
    pytest.importorskip("diffusers")
    cfg = _cfg("squaredcos_cap_v2", "linspace", "epsilon")
    x_T = ccfg.randn(SEED, N, SHAPE, stream=0)
    x, traj = _run(sampler, 10, cfg)
    fn = make_test_model(cfg)
    noises = _noises(sampler, 10, 0.0)
    _, tr = sample_reference(fn, sampler, 10, x_T.astype(np.float64), cfg, noises=noises, return_trajectory=True)
    _, td = diffusers_sample(fn, sampler, 10, x_T, cfg, noises=noises, return_trajectory=True)
    err_ccfg = np.abs(traj - tr).max()
    err_diffusers = np.abs(td - tr).max()
    assert err_ccfg <= err_diffusers + 1e-4, (err_ccfg, err_diffusers)


@pytest.mark.parametrize("steps", [2, 3, 25])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_trajectory_steps(sampler, steps):
    """Short runs (DPM++ with lower_order_final, Heun's last Euler step) and a longer one.

    diffusers (float32) is compared for >= 7 steps only on linear: with 2-3 steps the last interval
    goes down to sigma(0) = 0.01, and diffusers' Heun differs from float64 by 1e-3 there."""
    cfg = _cfg("scaled_linear", "trailing", "epsilon")
    _compare(sampler, steps, cfg, eta=0.3 if sampler == "ddim" else 0.0,
             with_diffusers=not (sampler == "heun" and steps < 7))


# ------------------------------------------------------------------------------------------------
# a single step of each solver, every prediction type (trailing: t = 999 -> 0)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", ["linear", "scaled_linear"])
@pytest.mark.parametrize("sampler,pt", list(_params(SAMPLERS)))
def test_single_step(sampler, pt, beta):
    cfg = _cfg(beta, "trailing", pt)
    _compare(sampler, 1, cfg, eta=1.0 if sampler == "ddim" else 0.0,
             with_diffusers=_diffusers_supports(sampler, pt), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("sampler,pt", list(_params(SAMPLERS)))
def test_first_step(sampler, pt):
    """trajectory[1] of a 20-step run: one step from sigma_max with every prediction type."""
    cfg = _cfg("linear", None, pt)
    x, traj = _run(sampler, 20, cfg, eta=0.0)
    fn = make_test_model(cfg)
    x_T = ccfg.randn(SEED, N, SHAPE, stream=0).astype(np.float64)
    _, tr = sample_reference(fn, sampler, 20, x_T, cfg, noises=_noises(sampler, 20, 0.0),
                             return_trajectory=True)
    _close(traj[:2], tr[:2], "first step vs reference", 1e-5, 2e-5)


# ------------------------------------------------------------------------------------------------
# the model calls: one batched call per evaluation, at the planned timesteps, with VP-scaled input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_model_calls(sampler):
    steps = 6
    cfg = _cfg("scaled_linear", None, "epsilon")
    calls = []
    x, traj = _run(sampler, steps, cfg, calls=calls, karras=False)
    ref = plan_reference(sampler, steps, cfg)
    n_eval = 2 * steps - 1 if sampler == "heun" else steps
    assert len(calls) == n_eval
    for xin, t in calls:
        assert xin.shape == (N,) + SHAPE and t.shape == (N,)
        assert np.all(t == t[0])
    np.testing.assert_allclose([t[0] for _, t in calls], ref["timesteps"], atol=1e-4)
    # the first call sees the (VP-scaled) initial state
    np.testing.assert_allclose(calls[0][0], traj[0], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# trajectory, determinism, x_T vs seed, n
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_return_trajectory(sampler):
    steps = 8
    cfg = _cfg("scaled_linear", None, "epsilon")
    x, traj = _run(sampler, steps, cfg, eta=0.5 if sampler == "ddim" else 0.0)
    assert traj.shape == (steps + 1, N) + SHAPE
    assert traj.dtype == np.float32
    if sampler in VP_SAMPLERS:
        np.testing.assert_array_equal(traj[-1], x)
        np.testing.assert_array_equal(traj[0], ccfg.randn(SEED, N, SHAPE, stream=0))
    else:  # the last sigma is 0: x / sqrt(1 + 0) = x
        np.testing.assert_allclose(traj[-1], x, rtol=1e-6, atol=1e-7)
        # VP-scaled start: diffusers' x_T * init_noise_sigma, divided by sqrt(1 + sigma_0^2) for the
        # sigma-space schedulers (DPM++ keeps a VP state: init_noise_sigma = 1)
        p = plan_reference(sampler, steps, cfg)
        s0 = p["sigmas"][0]
        x_T = ccfg.randn(SEED, N, SHAPE, stream=0).astype(np.float64)
        want = x_T if sampler == "dpmpp_2m" else x_T * p["init_noise_sigma"] / np.sqrt(1 + s0 * s0)
        np.testing.assert_allclose(traj[0], want, rtol=1e-5, atol=1e-6)
    x2 = _run(sampler, steps, cfg, eta=0.5 if sampler == "ddim" else 0.0, traj=False)
    np.testing.assert_array_equal(x2, x)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_deterministic_and_seeded(sampler):
    cfg = _cfg("linear", None, "epsilon")
    eta = 1.0 if sampler == "ddim" else 0.0
    a = _run(sampler, 6, cfg, eta=eta, seed=7, traj=False)
    b = _run(sampler, 6, cfg, eta=eta, seed=7, traj=False)
    np.testing.assert_array_equal(a, b)
    c = _run(sampler, 6, cfg, eta=eta, seed=8, traj=False)
    assert not np.allclose(a, c)
    # x_T given explicitly = the seed's own initial noise
    d = _run(sampler, 6, cfg, eta=eta, seed=7, traj=False, x_T=ccfg.randn(7, N, SHAPE, stream=0))
    np.testing.assert_array_equal(a, d)
    # x_T as float64 (any float array) is accepted
    e = _run(sampler, 6, cfg, eta=eta, seed=7, traj=False,
             x_T=ccfg.randn(7, N, SHAPE, stream=0).astype(np.float64))
    np.testing.assert_array_equal(a, e)
    # a different x_T changes the result; for stochastic samplers the step noise still follows seed
    f = _run(sampler, 6, cfg, eta=eta, seed=7, traj=False, x_T=ccfg.randn(8, N, SHAPE, stream=0))
    assert not np.allclose(a, f)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler_ancestral", "dpmpp_2m"])
def test_sample_i_independent_of_n(sampler):
    cfg = _cfg("linear", None, "epsilon")
    eta = 1.0 if sampler == "ddim" else 0.0
    a = _run(sampler, 5, cfg, eta=eta, n=2, traj=False)
    b = _run(sampler, 5, cfg, eta=eta, n=6, traj=False)
    np.testing.assert_allclose(a, b[:2], rtol=1e-6, atol=1e-6)


def test_stochastic_noise_streams():
    """DDPM with explicit x_T: the result depends on seed only through the step noise."""
    cfg = _cfg("linear", None, "epsilon")
    x_T = ccfg.randn(0, N, SHAPE, stream=0)
    a = _run("ddpm", 5, cfg, x_T=x_T, seed=1, traj=False)
    b = _run("ddpm", 5, cfg, x_T=x_T, seed=2, traj=False)
    assert not np.allclose(a, b)
    fn = make_test_model(cfg)
    for seed, got in ((1, a), (2, b)):
        want = sample_reference(fn, "ddpm", 5, x_T.astype(np.float64), cfg,
                                noises=_noises("ddpm", 5, 0.0, seed=seed))
        _close(got, want, f"ddpm seed {seed}")


@pytest.mark.parametrize("beta", ["linear", "scaled_linear"])
def test_ddpm_fixed_large_against_diffusers(beta):
    """variance_type="fixed_large" (noise variance β_t): step by step against diffusers'
    DDPMScheduler(variance_type="fixed_large") and the float64 reference on the same noise."""
    cfg = _cfg(beta, None, "epsilon", variance_type="fixed_large")
    x, _ = _compare("ddpm", 6, cfg)
    small = _run("ddpm", 6, _cfg(beta, None, "epsilon"), traj=False)
    assert not np.allclose(x, small, atol=1e-3)        # the option reaches the sampler


def test_noise_variance_argument_is_the_config_option():
    """sample(noise_variance=...) overrides the config's variance_type, both ways."""
    model = _ccfg_model(make_test_model(full_config()), "epsilon")
    run = lambda cfg, **kw: ccfg.sample(model, sampler="ddpm", steps=5, n=N, seed=3,  # noqa: E731
                                        progress=False, scheduler=SchedulerConfig(**cfg), **kw)
    large = run(dict(variance_type="fixed_large"))
    np.testing.assert_array_equal(run({}, noise_variance="FIXED_LARGE"), large)
    np.testing.assert_array_equal(run(dict(variance_type="fixed_large"),
                                      noise_variance="fixed_small"), run({}))
    np.testing.assert_array_equal(run({}, noise_variance="fixed_small_log"), run({}))
    with pytest.raises(ValueError, match="noise_variance"):
        ccfg.sample(model, sampler="ddim", steps=3, n=2, progress=False,
                    noise_variance="fixed_large")
    with pytest.raises(ValueError, match="noise_variance"):
        run({}, noise_variance="learned")
    with pytest.raises(ValueError, match="variance_type"):
        SchedulerConfig(variance_type="learned_range")


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_noise_shared_across_rules(sampler, eta):
    """Paired comparisons (ccfg.compare) rest on this: seed s gives every rule the same x_T and
    the same per-step noise, whatever conditions the rule evaluates. CFG (null + positive, 2
    branches) and NegatedCFG with negative_scale 0 (3 branches) give the same guided eps, so
    the same noise must give bit-identical samples; and with guidance=None (1 branch) at scale
    1, too. A model whose output depends on the condition makes the branches differ."""
    def fn(x, t, cond):
        shift = np.array([0.0 if c is None else 0.1 * (1 + int(c)) for c in cond], np.float32)
        return (0.2 * x + shift.reshape(-1, 1, 1)).astype(np.float32)

    model = ccfg.models.PythonModel(fn, SHAPE)
    kw = dict(sampler=sampler, steps=6, n=N, seed=11, progress=False, positive=0, negative=1)
    if sampler == "ddim":
        kw["eta"] = eta
    a = ccfg.sample(model, guidance=ccfg.CFG(2.0), **kw)
    b = ccfg.sample(model, guidance=ccfg.NegatedCFG(2.0, negative_scale=0.0), **kw)
    np.testing.assert_array_equal(a, b)
    c = ccfg.sample(model, guidance=ccfg.CFG(1.0), **kw)
    d = ccfg.sample(model, guidance=None, **dict(kw, negative=None))
    np.testing.assert_allclose(c, d, rtol=0, atol=1e-6)
    # and the shared x_T is randn(seed, n, shape, stream 0)
    x_T = ccfg.randn(11, N, SHAPE, stream=0)
    np.testing.assert_array_equal(ccfg.sample(model, guidance=ccfg.CFG(2.0), x_T=x_T, **kw), a)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def _model():
    return ccfg.models.PythonModel(lambda x, t, c: 0.1 * x, SHAPE)


@pytest.mark.parametrize("steps", [0, -3])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        ccfg.sample(_model(), sampler="ddim", steps=steps, n=2, progress=False)


def test_bad_sampler():
    with pytest.raises(ValueError, match="sampler"):
        ccfg.sample(_model(), sampler="plms", steps=3, n=2, progress=False)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_karras_needs_sigma_sampler(sampler):
    with pytest.raises(ValueError, match="karras"):
        ccfg.sample(_model(), sampler=sampler, steps=3, n=2, karras=True, progress=False)


@pytest.mark.parametrize("bad", [(2, 3, 5), (3, 3, 4), (2, 12), (3, 4)])
def test_bad_x_T_shape(bad):
    with pytest.raises(ValueError, match="x_T"):
        ccfg.sample(_model(), sampler="euler", steps=3, n=2, x_T=np.zeros(bad, np.float32), progress=False)


@pytest.mark.parametrize("n", [0, -1])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        ccfg.sample(_model(), sampler="ddim", steps=3, n=n, progress=False)


def test_bad_eta():
    with pytest.raises(ValueError, match="eta"):
        ccfg.sample(_model(), sampler="ddim", steps=3, n=2, eta=-0.1, progress=False)


def test_plan_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        ccfg.schedulers.plan("euler", 0)
