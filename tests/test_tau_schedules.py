"""CCFG's τ schedules (docs/methods.md §3.7): ccfg.guide and whole sampling runs against the NumPy
reference written from the derivations (tests/reference_rules.py: CCFGScheduleRef), on the CPU and
on a Vulkan device (lavapipe here); bad arguments raise naming them."""
import importlib.util
import math
import os

import numpy as np
import pytest

import ccfg
from ccfg import _core
from ccfg.models import GaussianMixture

from reference_rules import CCFGScheduleRef, ccfg_rule
from reference_solvers import plan_reference

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
DEVICES = ["cpu"] + ([f"vulkan:{VK[0]['index']}"] if VK else [])
SCHEDULES = ["dim", "nce", "pilot", "pilot_noise", "batch"]
STATEFUL = {"pilot", "pilot_noise"}


def _inputs(rng, shape, k, spread=1.0):
    u = rng.standard_normal(shape).astype(np.float32)
    p = (u + 0.3 * rng.standard_normal(shape)).astype(np.float32)
    # per-sample magnitudes that differ, so the batch median is not every sample's value
    mags = spread * rng.uniform(0.05, 0.6, size=(shape[0],) + (1,) * (len(shape) - 1))
    negs = [(u + mags * rng.standard_normal(shape)).astype(np.float32) for _ in range(k)]
    return u, p, negs


def _close(got, want, tol=2e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
    assert err <= tol, f"max error {err:.3g} (tolerance {tol})"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_guide_matches_reference_over_steps(schedule, k, device):
    """Four consecutive calls with new predictions and noise levels: the stateful schedules must
    calibrate on the first call and keep that τ."""
    rng = np.random.default_rng(7 + k)
    shape = (5, 2, 4, 4)
    rule = ccfg.CCFG(scale=3.0, tau=schedule, tau_scale=1.3)
    ref = CCFGScheduleRef(schedule, scale=3.0, tau_scale=1.3)
    state = None
    for step, ab in enumerate([0.02, 0.3, 0.7, 0.97]):
        u, p, negs = _inputs(rng, shape, k, spread=1.0 + step)
        out = ccfg.guide(u, p, negs, rule, state, device=device, alpha_bar=ab)
        if schedule in STATEFUL:
            out, state = out
        else:
            assert isinstance(out, np.ndarray)
        _close(out, ref(u, p, negs, alpha_bar=ab))
    if schedule in STATEFUL:
        assert ref.tau0 is not None and ref.tau0 > 0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_is_the_official_rule_at_its_tau(schedule):
    """At every step the schedule is the official constant-τ rule at τ_t (CCFG(tau=τ_t))."""
    rng = np.random.default_rng(3)
    u, p, negs = _inputs(rng, (6, 16), 1)
    ref = CCFGScheduleRef(schedule, scale=2.0)
    tau = ref.tau_t(u, p, negs, alpha_bar=0.4)
    out = ccfg.guide(u, p, negs, ccfg.CCFG(scale=2.0, tau=schedule), alpha_bar=0.4)
    out = out[0] if isinstance(out, tuple) else out
    const = ccfg.guide(u, p, negs, ccfg.CCFG(scale=2.0, tau=tau))
    _close(out, const, 1e-6)
    _close(out, ccfg_rule(u, p, negs, scale=2.0, tau=tau))


def test_nce_and_dim_formulas_by_hand():
    """τ_t written out: nce = s / (2 (1 - ā)), dim = s / sqrt(N)."""
    rng = np.random.default_rng(4)
    u, p, negs = _inputs(rng, (3, 64), 1)
    for ab in (0.1, 0.5, 0.9):
        got = ccfg.guide(u, p, negs, ccfg.CCFG(scale=4.0, tau="nce", tau_scale=0.7), alpha_bar=ab)
        _close(got, ccfg_rule(u, p, negs, scale=4.0, tau=0.7 / (2 * (1 - ab))))
    got = ccfg.guide(u, p, negs, ccfg.CCFG(scale=4.0, tau="dim", tau_scale=2.0))
    _close(got, ccfg_rule(u, p, negs, scale=4.0, tau=2.0 / 8.0))


def test_pilot_gives_half_weight_at_the_median():
    """The pilot's calibration: λ- = 1/2 for the sample whose ‖D_n‖² is the batch median (odd n)."""
    rng = np.random.default_rng(5)
    u, p, negs = _inputs(rng, (7, 32), 1)
    _, _, lam_n = ccfg_rule(u, p, negs, scale=1.0, tau=CCFGScheduleRef("pilot").tau_t(u, p, negs),
                            return_lambdas=True)
    assert np.isclose(np.median(lam_n[0].ravel()), 0.5)
    out, state = ccfg.guide(u, p, negs, ccfg.CCFG(scale=1.0, tau="pilot"))
    host = _core.state_info(state._c)["host"]
    d2 = np.sum((negs[0].astype(np.float64) - u) ** 2, axis=1)
    assert math.isclose(host[0], math.log(3.0) / np.median(d2), rel_tol=1e-5)


def test_auto_is_the_documented_schedule():
    rng = np.random.default_rng(6)
    u, p, negs = _inputs(rng, (4, 8), 1)
    auto = ccfg.CCFG(scale=3.0, tau="auto")
    named = ccfg.CCFG(scale=3.0, tau=ccfg.CCFG.AUTO)
    assert auto.tau_schedule == ccfg.CCFG.AUTO
    a = ccfg.guide(u, p, negs, auto, alpha_bar=0.5)
    b = ccfg.guide(u, p, negs, named, alpha_bar=0.5)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    np.testing.assert_array_equal(a, b)
    assert "tau='auto'" in repr(auto)


def test_default_stays_official():
    r = ccfg.CCFG()
    assert r.tau == 0.2 and r.tau_reduce == "sum" and r.tau_schedule == "constant"
    assert not r.stateful
    assert repr(r) == ("CCFG(scale=7.5, tau=0.2, tau_reduce='sum', negative_scale=None, "
                       "naive_positive=False)")


# ---------------------------------------------------------------------- whole runs
def _toy():
    return GaussianMixture.toy_2d()


def _reference_ddim(model, schedule, w, steps, x_T):
    """DDIM (η = 0) on the exact mixture with the reference rule, in float64."""
    p = plan_reference("ddim", steps)
    ref = CCFGScheduleRef(schedule, scale=w)
    x = x_T.astype(np.float64)
    for k in range(steps):
        ab, abn = p["alpha_bars"][k], p["alpha_bars_next"][k]
        xi = x.astype(np.float32)
        e_u = model._eps_numpy(xi, ab).astype(np.float32)
        e_p = model._eps_numpy(xi, ab, "A").astype(np.float32)
        e_n = model._eps_numpy(xi, ab, "B").astype(np.float32)
        eps = ref(e_u, e_p, [e_n], alpha_bar=ab)
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        x = math.sqrt(abn) * x0 + math.sqrt(1 - abn) * eps
    return x


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sampling_matches_reference_loop(schedule):
    """ccfg.sample passes each step's ā_t to the rule: a whole DDIM run equals the reference
    loop that hands the plan's ā_t to the reference rule."""
    model = _toy()
    x_T = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    got = ccfg.sample(model, positive="A", negative="B", guidance=ccfg.CCFG(scale=3.0, tau=schedule),
                      sampler="ddim", steps=8, n=64, x_T=x_T, progress=False, device="cpu")
    want = _reference_ddim(model, schedule, 3.0, 8, x_T)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 1e-4, err


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler", "euler_ancestral", "heun",
                                     "dpmpp_2m"])
@pytest.mark.parametrize("schedule", ["nce", "pilot_noise"])
def test_every_solver_runs(schedule, sampler):
    x = ccfg.sample(_toy(), positive="A", negative="B", guidance=ccfg.CCFG(scale=3.0, tau=schedule),
                    sampler=sampler, steps=6, n=16, progress=False, device="cpu")
    assert x.shape == (16, 2) and np.all(np.isfinite(x))


@pytest.mark.skipif(not VK, reason="no Vulkan device")
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_vulkan_sampling_matches_cpu(schedule):
    model = GaussianMixture.high_dim(16, delta=0.5, var=0.1)
    kw = dict(positive="A", negative="B", guidance=ccfg.CCFG(scale=3.0, tau=schedule),
              sampler="ddim", steps=8, n=32, seed=1, progress=False)
    cpu = ccfg.sample(model, device="cpu", **kw)
    vk = ccfg.sample(model, device=DEVICES[1], **kw)
    assert np.linalg.norm(vk - cpu) / np.linalg.norm(cpu) < 1e-4


def test_negative_window_calibrates_on_negatives():
    """With the negatives off for the first half, the pilot calibrates when they switch on."""
    model = _toy()
    rule = ccfg.CCFG(scale=3.0, tau="pilot", negative_window=(0.5, 1.0))
    x = ccfg.sample(model, positive="A", negative="B", guidance=rule, steps=8, n=16,
                    progress=False, device="cpu")
    assert np.all(np.isfinite(x))


# ---------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kw, exc, word", [
    (dict(tau="fast"), ValueError, "tau"),
    (dict(tau=-1.0), ValueError, "tau"),
    (dict(tau=[0.2]), TypeError, "tau"),
    (dict(tau=float("nan")), ValueError, "tau"),
    (dict(tau=None), TypeError, "tau"),
    (dict(tau="nce", tau_reduce="mean"), ValueError, "tau_reduce"),
    (dict(tau=0.3, tau_scale=2.0), ValueError, "tau_scale"),
    (dict(tau="nce", tau_scale=0.0), ValueError, "tau_scale"),
    (dict(tau="nce", tau_scale="x"), TypeError, "tau_scale"),
])
def test_bad_arguments_name_themselves(kw, exc, word):
    with pytest.raises(exc, match=word):
        ccfg.CCFG(**kw)


@pytest.mark.parametrize("schedule", ["nce", "pilot_noise"])
def test_guide_without_noise_level_names_alpha_bar(schedule):
    rng = np.random.default_rng(1)
    u, p, negs = _inputs(rng, (2, 4), 1)
    with pytest.raises(ValueError, match="alpha_bar"):
        ccfg.guide(u, p, negs, ccfg.CCFG(tau=schedule))
    with pytest.raises(ValueError, match="alpha_bar"):
        ccfg.guide(u, p, negs, ccfg.CCFG(tau=schedule), alpha_bar=1.5)


def test_schedule_names_are_case_insensitive():
    assert ccfg.CCFG(tau=" NCE ").tau == "nce"


# ---------------------------------------------------------------------- the study script
def test_tau_study_quick(tmp_path):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "tau_study.py")
    spec = importlib.util.spec_from_file_location("tau_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "TAU.md"
    res = mod.main(["--quick", "--out", str(out), "--json", str(tmp_path / "t.json")])
    assert len(res) == 2
    for r in res:
        s = r["summary"]
        assert 0.0 <= s["best"] <= 1.0
        assert set(s["schedules"]) >= {"nce", "pilot", "dim"}
    text = out.read_text()
    assert "best fixed τ" in text and "--quick" in text
