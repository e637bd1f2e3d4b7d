"""CCFG's and Perp-Neg's coefficient tables computed on a Vulkan device (guide op combine_form,
shaders/coef.glsl) against the independent NumPy reference (tests/reference_rules.py) and the
CPU backend; DNG's posterior kept on the device (its table and its update, the same shader).

The table itself is read through probe columns: every sample gets 2 + k extra elements where
eps_u is (1, 0, 0, ..), eps_p (0, 1, 0, ..) and negative j is 1 at 2 + j, so the guided output
there is exactly the coefficient (c_u, c_p, c_n_j) the device used, rounded once to float32. The
reference applied to the same arrays gives the coefficient in float64 from the specification
(the probes enter the reductions of both alike). Zero directions cannot carry probes (the inputs
must be equal everywhere), so they are checked on the output."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ccfg
import reference_rules as R
from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
pytestmark = pytest.mark.skipif(not VK, reason="no Vulkan device")
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"
F64 = bool(VK and VK[0]["float64"])
ULP = 2.0 ** -24


def rules(w=None):
    """(name, ccfg rule with negative_window w, reference function of (u, p, negs, active))"""
    return [
        ("ccfg", ccfg.CCFG(scale=3.0, tau=0.2, negative_scale=2.0, negative_window=w),
         lambda u, p, n, a: R.ccfg_rule(u, p, n, scale=3.0, tau=0.2, negative_scale=2.0, active=a)),
        ("ccfg_mean", ccfg.CCFG(scale=5.0, tau=7.0, tau_reduce="mean", negative_window=w),
         lambda u, p, n, a: R.ccfg_rule(u, p, n, scale=5.0, tau=7.0, tau_reduce="mean", active=a)),
        ("ccfg_naive", ccfg.CCFG(scale=3.0, tau=0.05, naive_positive=True, negative_window=w),
         lambda u, p, n, a: R.ccfg_rule(u, p, n, scale=3.0, tau=0.05, naive_positive=True,
                                        active=a)),
        ("perp_neg", ccfg.PerpNeg(scale=4.0, negative_scale=0.7, negative_window=w),
         lambda u, p, n, a: R.perp_neg(u, p, n, scale=4.0, negative_scale=0.7, active=a)),
        ("perp_neg_global", ccfg.PerpNeg(scale=4.0, negative_scale=0.7, batch_global=True, negative_window=w),
         lambda u, p, n, a: R.perp_neg(u, p, n, scale=4.0, negative_scale=0.7, batch_global=True,
                                       active=a)),
    ]


RULE_IDS = [r[0] for r in rules()]


def rule_named(name, window=None):
    return next(r for r in rules(window) if r[0] == name)


def probed(n, dim, k, seed, spread=0.3):
    """u, p, [neg_j] (n, dim + 2 + k) float32 with probe columns at dim.. (see the docstring)"""
    rng = np.random.default_rng(seed)
    m = 2 + k
    u = rng.standard_normal((n, dim + m)).astype(np.float32)
    p = (u + spread * rng.standard_normal(u.shape)).astype(np.float32)
    negs = [(u + spread * rng.standard_normal(u.shape)).astype(np.float32) for _ in range(k)]
    for q, a in enumerate([u, p] + negs):
        a[:, dim:] = 0.0
        a[:, dim + q] = 1.0
    return u, p, negs


def check_table(got, want, dim, tol):
    """probe columns of the device's output against the reference's float64 coefficients: within
    `tol` of the row's scale (cancellation in c_u is bounded by the sum of the |c_q|)"""
    c_dev = got[:, dim:].astype(np.float64)
    c_ref = want[:, dim:]
    bound = tol * (1.0 + np.sum(np.abs(c_ref), axis=1, keepdims=True))
    assert np.all(np.abs(c_dev - c_ref) <= bound), float(np.max(np.abs(c_dev - c_ref) / bound))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("name", RULE_IDS)
@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("n,dim", [(1, 2), (37, 2), (9, 70), (5, 3000)])
def test_table_matches_reference_and_cpu(name, k, n, dim):
    """dim 2 and 70: one partial per sample; 3000: three partials per sample, summed on the
    device (coef.glsl stage 0)"""
    _, rule, ref = rule_named(name)
    u, p, negs = probed(n, dim, k, seed=100 * k + n)
    got = ccfg.guide(u, p, negs, rule, device=DEV)
    want = ref(u, p, negs, True)
    # one float32 rounding of the coefficient, plus the exp and summation order
    check_table(got, want, dim, 4 * ULP if F64 else 32 * ULP)
    assert rel(got, want) <= 1e-6
    cpu = ccfg.guide(u, p, negs, rule, device="cpu")
    assert rel(got, cpu) <= (1e-7 if F64 else 1e-5)


@pytest.mark.parametrize("name", RULE_IDS)
def test_many_negatives_and_samples(name):
    """7 negatives (9 inputs: combine takes 8 per dispatch) and 70,000 samples (Perp-Neg's batch
    sums over three slices of 32,768 in coef.glsl stage 1)"""
    _, rule, ref = rule_named(name)
    u, p, negs = probed(40, 5, 7, seed=7)
    check_table(ccfg.guide(u, p, negs, rule, device=DEV), ref(u, p, negs, True), 5,
                4 * ULP if F64 else 32 * ULP)
    u, p, negs = probed(70_000, 1, 2, seed=8, spread=0.05)
    got = ccfg.guide(u, p, negs, rule, device=DEV)
    want = ref(u, p, negs, True)
    check_table(got, want, 1, 4 * ULP if F64 else 64 * ULP)
    assert rel(got, ccfg.guide(u, p, negs, rule, device="cpu")) <= (1e-7 if F64 else 1e-5)


@pytest.mark.parametrize("name", RULE_IDS)
def test_zero_directions(name):
    """samples whose positive or negatives equal eps_u exactly: ‖D‖² = 0 (CCFG λ = 1,
    Perp-Neg projection 0), and a batch with no positive direction at all (global: 0 / 0)"""
    _, rule, ref = rule_named(name)
    rng = np.random.default_rng(3)
    u = rng.standard_normal((6, 40)).astype(np.float32)
    p = u + rng.standard_normal(u.shape).astype(np.float32)
    n1 = u + rng.standard_normal(u.shape).astype(np.float32)
    n2 = n1.copy()
    p[[0, 3]] = u[[0, 3]]
    n1[[1, 3]] = u[[1, 3]]
    n2[[2, 3]] = u[[2, 3]]
    for pp in (p, u.copy()):
        got = ccfg.guide(u, pp, [n1, n2], rule, device=DEV)
        want = ref(u, pp, [n1, n2], True)
        assert rel(got, want) <= 1e-6
        assert rel(got, ccfg.guide(u, pp, [n1, n2], rule, device="cpu")) <= (1e-7 if F64 else 1e-5)


@pytest.mark.parametrize("name", RULE_IDS)
def test_window_switches_the_negatives_off(name):
    """outside negative_window the step has k = 0: the device table is CFG-like (CCFG keeps λ+)"""
    _, rule, ref = rule_named(name, (0.5, 1.0))
    u, p, negs = probed(11, 30, 2, seed=5)
    for step, active in ((0, False), (4, False), (5, True), (9, True)):
        got = ccfg.guide(u, p, negs, rule, step=step, num_steps=10, device=DEV)
        want = ref(u, p, negs, active)
        assert rel(got, want) <= 1e-6, (step, rel(got, want))
        if not active:       # the negatives' probe columns get nothing
            assert np.all(got[:, 32:] == 0.0)


def run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SAME_AS_HOST = """
import numpy as np, ccfg
rng = np.random.default_rng(0)
out = {}
for name, rule in (("ccfg", ccfg.CCFG(3.0, tau=0.3)), ("perp", ccfg.PerpNeg(3.0, 0.8)),
                   ("global", ccfg.PerpNeg(3.0, 0.8, batch_global=True))):
    for dim in (2, 3000):
        u = rng.standard_normal((50, dim)).astype(np.float32)
        p, n1, n2 = (u + 0.2 * rng.standard_normal(u.shape)).astype(np.float32), u + 0.1, u - 0.3
        out[f"{name}_{dim}"] = ccfg.guide(u, p, [n1, n2], rule, device="%s")
np.savez("%s", **out)
"""


def test_device_table_equals_the_host_table_on_the_same_device(tmp_path):
    """the same device with CCFG_VULKAN_HOST_COEFFICIENTS=1 (partials read back, table from
    rules/*.c): the same partial sums in the same order, so with float64 shaders the outputs are
    equal (per-sample Perp-Neg bit for bit; CCFG up to the last bit of our exp, the batch sums up
    to their summation order); with float32 shaders within float32 rounding"""
    a, b = tmp_path / "dev.npz", tmp_path / "host.npz"
    r1 = run_py(SAME_AS_HOST % (DEV, a))
    r2 = run_py(SAME_AS_HOST % (DEV, b), CCFG_VULKAN_HOST_COEFFICIENTS="1")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    dev, host = np.load(a), np.load(b)
    for key in dev.files:
        if F64 and key.startswith("perp"):
            assert np.array_equal(dev[key], host[key]), key
        else:
            assert rel(dev[key], host[key]) <= (1e-7 if F64 else 1e-5), key


FLOAT32 = """
import numpy as np, ccfg, sys
sys.path.insert(0, "tests")
import test_device_coefficients as T
for name in T.RULE_IDS:
    _, rule, ref = T.rule_named(name)
    for k in (0, 1, 3):
        for n, dim in ((37, 2), (5, 3000)):
            u, p, negs = T.probed(n, dim, k, seed=k + n)
            got = ccfg.guide(u, p, negs, rule, device="%s")
            T.check_table(got, ref(u, p, negs, True), dim, 32 * T.ULP)
            assert T.rel(got, ccfg.guide(u, p, negs, rule, device="cpu")) <= 1e-5
print("ok")
"""


def test_float32_shaders():
    """devices without float64 (forced here with CCFG_VULKAN_NO_F64=1): the table in float"""
    r = run_py(FLOAT32 % DEV, CCFG_VULKAN_NO_F64="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


def test_sampling_with_a_window_matches_cpu():
    """whole runs: CCFG and Perp-Neg with two negatives switched on for part of the run"""
    m = ccfg.models.load("toy2d")
    for rule in (ccfg.CCFG(scale=3.0, negative_window=(0.2, 0.8)),
                 ccfg.PerpNeg(scale=3.0, negative_window=(0.3, 1.0)),
                 ccfg.PerpNeg(scale=3.0, batch_global=True)):
        kw = dict(positive="A", negative=["B", "B"], guidance=rule, steps=10, n=300,
                  progress=False)
        vk = ccfg.sample(m, device=DEV, **kw)
        cpu = ccfg.sample(m, device="cpu", **kw)
        assert rel(vk, cpu) <= 1e-5, rule


# ------------------------------------------------------------------------------------------ DNG
# DNG's posterior lives on the device as log p (rules/dng.c, coef.glsl family 3 and stage 3):
# the device's posterior against the CPU's (the same update, in double with float64 shaders) and
# both tables against the reference written from the paper (reference_rules.DNGRef, p-space).
def dng_kw(dim):
    """DNG's parameters, the temperature scaled to the row length so that the posterior moves
    by a few nats per round without sticking to its bounds (the log-likelihood ratio is a sum
    over the elements)"""
    return dict(scale=3.0, negative_scale=2.0, prior=0.3, temperature=2.0 / dim, offset=0.01,
                p_min=1e-4, p_max=0.9)


def dng_run(devices, n, dim, k, steps, eta, seed, window=None):
    """`steps` rounds of guide + observe in lockstep on each of `devices` and in the reference,
    with probed inputs and the same transitions (x_prev from the reference's output, so that
    runs in two processes see the same ones): per
    round, [(output, posterior (k, n)) per device] + [(reference output, reference posterior)]"""
    kw = dng_kw(dim + 2 + k)
    rules = [ccfg.DNG(negative_window=window, **kw) for _ in devices]
    ref = R.DNGRef(negative_window=window or (0.0, 1.0), **kw)
    rng = np.random.default_rng(seed)
    abars = np.linspace(0.3, 0.95, steps + 1)
    x = rng.standard_normal((n, dim + 2 + k)).astype(np.float32)
    states, rounds = [None] * len(devices), []
    for s in range(steps):
        u, p, negs = probed(n, dim, k, seed=seed + s)
        at = dict(step=s, num_steps=steps) if window else {}
        outs = []
        for q, dev in enumerate(devices):
            if states[q] is None:
                out, states[q] = ccfg.guide(u, p, negs, rules[q], device=dev, **at)
            else:
                out, _ = ccfg.guide(u, p, negs, rules[q], states[q], **at)
            outs.append(out)
        want = ref(u, p, negs, **at)
        a, ap = float(abars[s]), float(abars[s + 1])
        mu, s2 = R.ddim_mean(x.astype(np.float64), want, a, ap, eta)
        xp = (mu + np.sqrt(s2) * rng.standard_normal(x.shape)).astype(np.float32)
        for st in states:
            st.observe(x, xp, u, negs, a, ap, eta=eta)
        ref.observe(x, xp, u, negs, a, ap, eta=eta)
        x = xp
        rounds.append([(o, st.posterior) for o, st in zip(outs, states)] + [(want, np.stack(ref.p))])
    return rounds


def rel_max(a, b):
    """largest elementwise relative difference"""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


DNG_CASES = [(1, 37, 2), (3, 37, 2), (1, 9, 70), (3, 5, 3000), (7, 6, 5)]


@pytest.mark.parametrize("k,n,dim", DNG_CASES)
@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_dng_posterior_on_the_device(k, n, dim, eta):
    """8 rounds of guide + observe: the device's posterior (log p on the device, coef.glsl stage
    3) equals the CPU's to 1e-12 relative with float64 shaders (the same operations in the same
    order; the partial sums in another order and exp_neg for exp); the tables of both against
    the reference at check_table's tolerance, and the posteriors within 1e-6 of it (the C forms
    x_prev - μ_u and D_n in float32 before its double reductions, the reference in float64).
    dim 3000: three partials per sample, summed on the device (stage 0)"""
    rounds = dng_run(["cpu", DEV], n, dim, k, 8, eta, seed=11 * k + n)
    for r, ((cpu, p_cpu), (dev, p_dev), (want, p_ref)) in enumerate(rounds):
        check_table(cpu, want, dim, 4 * ULP)
        check_table(dev, want, dim, 4 * ULP if F64 else 32 * ULP)
        assert rel_max(p_cpu, p_ref) <= 1e-6, r
        if F64:
            assert rel_max(p_dev, p_cpu) <= 1e-12, (r, rel_max(p_dev, p_cpu))
            assert rel(dev, cpu) <= 1e-7, r
    # the posterior moved (a test of a constant p would pass anything)
    assert np.max(np.abs(np.log(rounds[-1][0][1] / 0.3))) > 0.05


def test_dng_window_on_the_device():
    """outside negative_window the step has k = 0 (CFG's table, no state read); observe still
    learns from every transition, on both backends alike"""
    rounds = dng_run(["cpu", DEV], 11, 30, 2, 10, 1.0, seed=5, window=(0.5, 1.0))
    for r, ((cpu, p_cpu), (dev, p_dev), (want, _)) in enumerate(rounds):
        assert rel(dev, want) <= 1e-6, r
        assert rel_max(p_dev, p_cpu) <= (1e-12 if F64 else 1e-5), r
        if r < 5:
            assert np.all(dev[:, 32:] == 0.0)


def test_dng_posterior_reads_back_after_a_sampling_run():
    """a whole DDPM run on the device keeps the posterior there; GuidanceState.posterior reads it
    (exp of the device's log p) and the guide step after it uses it"""
    rng = np.random.default_rng(9)
    u = rng.standard_normal((4, 6)).astype(np.float32)
    p, n1 = u + 0.5, u - 0.25
    rule = ccfg.DNG(scale=2.0, prior=0.2)
    _, st = ccfg.guide(u, p, n1, rule, device=DEV)
    assert st.posterior.shape == (1, 4) and np.allclose(st.posterior, 0.2, rtol=1e-15 if F64 else 1e-7)
    info = _core.state_info(st._c)
    assert info["device_state"] is None      # the device's reals are not float32 values


DNG_SAME_AS_HOST = """
import numpy as np, ccfg, sys
sys.path.insert(0, "tests")
import test_device_coefficients as T
out = {}
for k, n, dim in ((2, 37, 2), (3, 5, 3000)):
    rounds = T.dng_run(["%s"], n, dim, k, 6, 1.0, seed=k)
    out[f"out_{k}"] = np.stack([r[0][0] for r in rounds])
    out[f"post_{k}"] = np.stack([r[0][1] for r in rounds])
np.savez("%s", **out)
"""


@pytest.mark.parametrize("f64", [True, False], ids=["f64", "float32"])
def test_dng_device_state_equals_the_host_state_on_the_same_device(tmp_path, f64):
    """CCFG_VULKAN_HOST_COEFFICIENTS=1 keeps DNG's posterior on the host (reductions read back
    every transition, the update in rules/dng.c in double): the same posteriors as the device's
    state; with float32 shaders (CCFG_VULKAN_NO_F64=1) the float state against the double one"""
    if f64 and not F64:
        pytest.skip("no float64 on this device")
    env = {} if f64 else {"CCFG_VULKAN_NO_F64": "1"}
    a, b = tmp_path / "dev.npz", tmp_path / "host.npz"
    r1 = run_py(DNG_SAME_AS_HOST % (DEV, a), **env)
    r2 = run_py(DNG_SAME_AS_HOST % (DEV, b), CCFG_VULKAN_HOST_COEFFICIENTS="1", **env)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr[-3000:] + r2.stderr[-3000:]
    dev, host = np.load(a), np.load(b)
    for key in dev.files:
        if key.startswith("post"):
            assert rel_max(dev[key], host[key]) <= (1e-12 if f64 else 1e-5), key
        else:
            assert rel(dev[key], host[key]) <= (1e-7 if f64 else 1e-5), key


DNG_FLOAT32 = """
import numpy as np, ccfg, sys
sys.path.insert(0, "tests")
import test_device_coefficients as T
worst = 0.0
for k, n, dim in T.DNG_CASES:
    for eta in (1.0, 0.0):
        rounds = T.dng_run(["cpu", "%s"], n, dim, k, 8, eta, seed=11 * k + n)
        budget, lp_prev = 0.0, np.log(0.3)
        for (cpu, p_cpu), (dev, p_dev), (want, _) in rounds:
            T.check_table(dev, want, dim, 32 * T.ULP)
            assert T.rel(dev, cpu) <= 1e-5
            # float log p: each round rounds log p and the update's terms to float32 once, so
            # the drift grows by a few float32 ulps of |log p| + |increment| per round
            lp = np.log(p_cpu)
            budget += 8 * T.ULP * float(np.max(np.abs(lp)) + np.max(np.abs(lp - lp_prev)))
            lp_prev = lp
            err = float(np.max(np.abs(np.log(p_dev) - lp)))
            assert err <= budget, (k, n, dim, eta, err, budget)
            worst = max(worst, err / budget)
print("ok", worst)
"""


def test_dng_float32_shaders():
    """devices without float64 (forced with CCFG_VULKAN_NO_F64=1) keep log p in float on the
    device: the table within float32 rounding of the reference, and the posterior's drift from
    the CPU's bounded per round (measured: 0.6-3e-7 in log p per round, docs/PERFORMANCE.md)"""
    r = run_py(DNG_FLOAT32 % DEV, CCFG_VULKAN_NO_F64="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


def test_dng_sampling_matches_cpu():
    """whole runs with the posterior on the device: DDPM (eta = 1) and DDIM (the stride
    variance), two negatives, one run with a window"""
    m = ccfg.models.load("toy2d")
    for sampler, window in (("ddpm", None), ("ddim", None), ("ddpm", (0.3, 1.0))):
        kw = dict(positive="A", negative=["B", "B"], guidance=ccfg.DNG(3.0, negative_window=window),
                  sampler=sampler, steps=10, n=300, progress=False)
        vk = ccfg.sample(m, device=DEV, **kw)
        cpu = ccfg.sample(m, device="cpu", **kw)
        assert rel(vk, cpu) <= 1e-5, (sampler, window)


# -------------------------------------------------------------------- coef.glsl's dispatch paths
# Since the coef stages were split between two builds (the barrier-free coef_nb for stages 0, 2
# and 3) and stage 0 fused into the stages that read the reductions, the old path stays behind
# two switches: CCFG_VULKAN_COEF_UNFUSED=1 (stage 0 a dispatch of its own) and
# CCFG_VULKAN_COEF_BARRIERS=1 (every stage in the shader with barriers). The fused stages sum the
# partials by stage 0's loop in stage 0's order, so every path gives the same bits.
COEF_PATHS = """
import numpy as np, ccfg, sys
sys.path.insert(0, "tests")
import test_device_coefficients as T
out = {}
for name in T.RULE_IDS:
    _, rule, _ = T.rule_named(name)
    for k, n, dim in ((2, 37, 2), (3, 5, 3000), (1, 70, 1100)):
        u, p, negs = T.probed(n, dim, k, seed=k + n)
        out[f"{name}_{k}_{dim}"] = ccfg.guide(u, p, negs, rule, device="%s")
for k, n, dim in ((2, 37, 2), (3, 5, 3000)):
    rounds = T.dng_run(["%s"], n, dim, k, 5, 1.0, seed=k)
    out[f"dng_out_{k}"] = np.stack([r[0][0] for r in rounds])
    out[f"dng_post_{k}"] = np.stack([r[0][1] for r in rounds])
np.savez("%s", **out)
"""


@pytest.mark.parametrize("f64", [True, False], ids=["f64", "float32"])
def test_coef_paths_are_bit_identical(tmp_path, f64):
    """the default path (barrier-free build, stage 0 fused) against the old one (both switches)
    and against each switch alone: outputs and DNG's posteriors equal bit for bit, with rows of
    one partial per sample (dim 2) and of two and three (1100, 3000)"""
    if f64 and not F64:
        pytest.skip("no float64 on this device")
    base = {} if f64 else {"CCFG_VULKAN_NO_F64": "1"}
    paths = {"new": {}, "old": {"CCFG_VULKAN_COEF_UNFUSED": "1", "CCFG_VULKAN_COEF_BARRIERS": "1"},
             "unfused": {"CCFG_VULKAN_COEF_UNFUSED": "1"},
             "barriers": {"CCFG_VULKAN_COEF_BARRIERS": "1"}}
    got = {}
    for name, env in paths.items():
        path = tmp_path / f"{name}.npz"
        r = run_py(COEF_PATHS % (DEV, DEV, path), **base, **env)
        assert r.returncode == 0, r.stderr[-3000:]
        got[name] = np.load(path)
    for name in ("old", "unfused", "barriers"):
        for key in got["new"].files:
            assert np.array_equal(got["new"][key], got[name][key]), (name, key)
