"""Whole runs on a Vulkan device (lavapipe here, a GPU elsewhere) against the CPU backend.

The CPU backend is the reference here: its rules, solvers and mixture are themselves checked
against independent NumPy/diffusers references in test_guidance.py, test_solvers.py and
test_gmm.py. Agreement is the relative error ‖x_vk - x_cpu‖ / ‖x_cpu‖ of the final samples
(issue 3: <= 1e-5 for whole runs). Devices without float64 shaders (and the float32 path forced
with CCFG_VULKAN_NO_F64=1) are held to the same bound."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ccfg
from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
WHY = next((d["note"] for d in _core.devices() if d["backend"] == "vulkan" and "note" in d), "")
needs_vk = pytest.mark.skipif(not VK, reason=f"no Vulkan device: {WHY}")
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"
TOL = 1e-5

RULES = {
    "cfg": lambda: ccfg.CFG(scale=3.0),
    "negative_prompt": lambda: ccfg.NegativePrompt(scale=3.0),
    "negated_cfg": lambda: ccfg.NegatedCFG(scale=3.0, negative_scale=1.5),
    "perp_neg": lambda: ccfg.PerpNeg(scale=3.0, negative_scale=1.0),
    "sld": lambda: ccfg.SLD(scale=3.0, warmup=2),
    "dng": lambda: ccfg.DNG(scale=3.0),
    "ccfg": lambda: ccfg.CCFG(scale=3.0, tau=0.2),
    "ccfg_tau_mean": lambda: ccfg.CCFG(scale=3.0, tau=2.0, tau_reduce="mean"),
}
SOLVERS = ["ddim", "ddpm", "euler", "euler_ancestral", "heun", "dpmpp_2m"]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def both(model, **kw):
    kw.setdefault("progress", False)
    cpu = ccfg.sample(model, device="cpu", **kw)
    vk = ccfg.sample(model, device=DEV, **kw)
    return cpu, vk


@pytest.fixture(scope="module")
def toy():
    return ccfg.models.load("toy2d")


def full_cov_mixture(dim, K=3, seed=0):
    """A mixture with rotated (full) covariances: exercises the shader's two rotations."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, dim, dim))
    covs = A @ A.transpose(0, 2, 1) / dim + 0.05 * np.eye(dim)
    means = 2.0 * rng.standard_normal((K, dim))
    return ccfg.models.GaussianMixture(means, covs, concepts={"a": [0, 1], "b": [2]})


# ------------------------------------------------------------------------- every rule x solver

@needs_vk
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("rule", list(RULES))
def test_sample_agrees_with_cpu(toy, rule, solver):
    cpu, vk = both(toy, positive="A", negative="B", guidance=RULES[rule](), sampler=solver,
                   steps=8, n=65, seed=5)
    assert vk.dtype == np.float32 and vk.shape == cpu.shape
    assert np.isfinite(vk).all()
    assert rel(vk, cpu) <= TOL, (rule, solver, rel(vk, cpu))


@needs_vk
def test_sample_two_negatives_and_window(toy):
    rule = ccfg.CCFG(scale=3.0, negative_window=(0.2, 0.8))
    cpu, vk = both(toy, positive="A", negative=["B", "C"], guidance=rule, steps=10, n=33, seed=1)
    assert rel(vk, cpu) <= TOL


@needs_vk
@pytest.mark.parametrize("model", ["gmm64", "gmm1024"])
def test_sample_axis_aligned_mixtures(model):
    """gmm64: one shader invocation per row; gmm1024: a workgroup per row."""
    m = ccfg.models.load(model)
    names = m.concept_names
    cpu, vk = both(m, positive=names[0], negative=names[1], guidance=ccfg.CCFG(scale=3.0),
                   sampler="dpmpp_2m", steps=6, n=9, seed=2)
    assert rel(vk, cpu) <= TOL


@needs_vk
@pytest.mark.parametrize("dim", [5, 70])
def test_sample_full_covariance_mixture(dim):
    m = full_cov_mixture(dim)
    cpu, vk = both(m, positive="a", negative="b", guidance=ccfg.DNG(scale=2.0), sampler="heun",
                   steps=5, n=7, seed=4)
    assert rel(vk, cpu) <= TOL


@needs_vk
@pytest.mark.parametrize("kind", ["iso_small", "iso_big", "full_small", "full_big"])
def test_gmm_eps_on_device_matches_numpy(kind):
    """The device mixture (shaders/gmm_eps.glsl) at several levels against the model's own
    float64 NumPy eps (written from the formula in models.py, independent of the C core)."""
    if kind.startswith("iso"):
        m = ccfg.models.load("gmm64" if kind == "iso_small" else "gmm1024")
    else:
        m = full_cov_mixture(6 if kind == "full_small" else 70)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((20, m.dim)) + m.means[rng.integers(0, m.K, 20)]).astype(np.float32)
    spec = m._c_spec()
    for ab in (0.9999, 0.5, 0.01):
        for concept in (None, 0, 1):
            cond = np.full(20, -1 if concept is None else concept, np.int32)
            want = m._eps_numpy(x.astype(np.float64), ab, concept)
            got = _core.gmm_eps(spec, x, ab, cond, DEV)
            assert rel(got, want) <= TOL, (kind, ab, concept, rel(got, want))


STACKED_CODE = """
import numpy as np, ccfg
from ccfg import _core
def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
m = ccfg.models.load("{model}")
rng = np.random.default_rng(3)
n = 37
x = (rng.standard_normal((n, m.dim)) + m.means[rng.integers(0, m.K, n)]).astype(np.float32)
# far from concept 1: that condition's best component is hundreds of nats below the row's best
only_a = np.flatnonzero(m._concept_mask[0] & ~m._concept_mask[1].astype(bool))[0]
x[:5] = (8.0 * m.means[only_a]).astype(np.float32)
xs = np.concatenate([x, x, x])
xs[n + 7] += 0.5                   # one row of block 1 differs: computed on its own
cond = np.repeat(np.array([0, 1, -1], np.int32), n)
spec = m._c_spec()
worst = 0.0
for ab in (0.9999, 0.5, 0.01):
    got = _core.gmm_eps(spec, xs, ab, cond, "{dev}")
    for b, concept in enumerate((0, 1, None)):
        want = m._eps_numpy(xs[b * n:(b + 1) * n].astype(np.float64), ab, concept)
        worst = max(worst, rel(got[b * n:(b + 1) * n], want))
print("worst", worst)
"""


@needs_vk
@pytest.mark.parametrize("model", ["toy_2d", "gmm64"])
@pytest.mark.parametrize("env", [{}, {"CCFG_VULKAN_NO_F64": "1"},
                                 {"CCFG_VULKAN_GMM_NO_SHARING": "1"}])
def test_stacked_conditions_share_densities(model, env):
    """issue 11: the sampler's blocks of the same x (one per condition) share their densities on
    the device (gmm_eps.glsl mode 2), against the model's float64 NumPy eps, block by block, with
    a row that differs from its block-0 row and rows whose condition underflows the shared exps;
    float32 shaders, and sharing off, the same"""
    import os
    import subprocess
    import sys
    code = STACKED_CODE.format(model=model, dev=DEV)
    if model == "toy_2d":
        code = code.replace('ccfg.models.load("toy_2d")', "ccfg.models.GaussianMixture.toy_2d()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, **env))
    assert r.returncode == 0, r.stderr
    worst = float(r.stdout.split()[-1])
    assert worst <= (1e-5 if env.get("CCFG_VULKAN_NO_F64") else TOL), worst


NEAR_CODE = """
import sys, numpy as np, ccfg
from ccfg import _core
rng = np.random.default_rng(4)
def iso(K, D):
    return ccfg.models.GaussianMixture(rng.standard_normal((K, D)), np.full(K, 0.3),
                                       concepts={{"a": list(range(K // 2)), "b": list(range(K // 2, K))}})
models = [ccfg.models.GaussianMixture.toy_2d(), ccfg.models.load("gmm64"), iso(8, 64), iso(16, 64),
          iso(32, 8), iso(40, 8)]
out, worst = {{}}, 0.0
for i, m in enumerate(models):
    n = 301
    x = (rng.standard_normal((n, m.dim)) + m.means[rng.integers(0, m.K, n)]).astype(np.float32)
    x[:3] = 8.0 * m.means[0]
    xs = np.concatenate([x, x, x])
    xs[n + 7] += 0.5
    stacked = np.repeat(np.array([0, 1, -1], np.int32), n)
    mixed = rng.integers(-1, 2, 3 * n).astype(np.int32)
    spec = m._c_spec()
    for ab in (0.9999, 0.5, 0.01):
        for j, cond in enumerate((stacked, mixed)):
            got = _core.gmm_eps(spec, xs, ab, cond, "{dev}")
            out[f"{{i}} {{ab}} {{j}}"] = got
            for c in (-1, 0, 1):
                sel = cond == c
                want = m._eps_numpy(xs[sel].astype(np.float64), ab, None if c < 0 else c)
                worst = max(worst, float(np.linalg.norm(got[sel] - want) / np.linalg.norm(want)))
np.savez(sys.argv[1], **out)
print("worst", worst)
"""


@needs_vk
@pytest.mark.parametrize("env", [{}, {"CCFG_VULKAN_NO_F64": "1"},
                                 {"CCFG_VULKAN_GMM_NO_SHARING": "1"}])
def test_gmm_near_memory_matches_the_old_path(tmp_path, env):
    """issue 11: gmm_eps.glsl modes 1-2 with the level's parameters in shared memory, the row's
    x and per-component values in the invocation's own arrays (K <= 32: no scratch, one
    dispatch), cond kept on the device and the double exp by Horner's rule give the same bits as
    CCFG_VULKAN_GMM_V1=1 (all in global memory; float64: within float32 rounding), on mixtures
    that take each branch: parameters in shared memory or not (K = 16, D = 64: 2067 reals >
    1088), own arrays or the scratch (K = 40); and both match the model's float64 NumPy eps"""
    outs = []
    for v1 in ("0", "1"):
        path = tmp_path / f"v1_{v1}.npz"
        r = subprocess.run([sys.executable, "-c", NEAR_CODE.format(dev=DEV), str(path)],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, CCFG_VULKAN_GMM_V1=v1, **env))
        assert r.returncode == 0, r.stderr
        assert float(r.stdout.split()[-1]) <= TOL, r.stdout
        outs.append(np.load(path))
    for key in outs[0].files:
        a, b = outs[0][key], outs[1][key]
        if env.get("CCFG_VULKAN_NO_F64"):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), key
        else:
            # the float64 exps differ (exp_fast, exp_neg: ~1e-16): the same float32 eps but for
            # a rounding (bit for bit on lavapipe in every case here)
            ulp = np.spacing(np.abs(b).max(axis=1, keepdims=True))
            assert np.all(np.abs(a - b) <= 4 * ulp), key


@needs_vk
@pytest.mark.parametrize("n", [1, 65])
def test_batch_sizes(toy, n):
    cpu, vk = both(toy, positive="A", negative="B", guidance="ccfg", steps=6, n=n, seed=9)
    assert rel(vk, cpu) <= TOL


@needs_vk
def test_same_seed_same_noise(toy):
    """Stochastic solvers draw every step's noise on the device: the same stream as the CPU."""
    cpu, vk = both(toy, positive="A", guidance="cfg", sampler="ddpm", steps=10, n=16, seed=123)
    other = ccfg.sample(toy, positive="A", guidance="cfg", sampler="ddpm", steps=10, n=16, seed=124,
                        progress=False, device=DEV)
    assert rel(vk, cpu) <= TOL and rel(other, cpu) > 1e-2


@needs_vk
def test_trajectory(toy):
    kw = dict(positive="A", negative="B", guidance="ccfg", sampler="euler", steps=6, n=5, seed=3,
              return_trajectory=True, progress=False)
    x0, t0 = ccfg.sample(toy, device="cpu", **kw)
    x1, t1 = ccfg.sample(toy, device=DEV, **kw)
    assert t1.shape == t0.shape == (7, 5, 2)
    assert rel(t1, t0) <= TOL and rel(x1, x0) <= TOL
    assert np.array_equal(t1[-1], x1) or rel(t1[-1], x1) <= TOL


@needs_vk
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_python_model_on_device(toy, pred):
    """A PythonModel sees host arrays (downloaded per evaluation) and its output goes back up."""
    def fn(x, t, cond):
        ab = np.interp(t, np.arange(1000), ccfg.schedulers.plan("ddim", 1000)["alphas_cumprod"])
        eps = np.stack([toy.eps(x[i:i + 1], ab[i], concept=c)[0] for i, c in enumerate(cond)])
        if pred == "epsilon":
            return eps
        a, s = np.sqrt(ab)[:, None], np.sqrt(1 - ab)[:, None]
        x0 = (x - s * eps) / a
        return a * eps - s * x0 if pred == "v_prediction" else x0
    model = ccfg.models.PythonModel(fn, (2,), prediction_type=pred)
    cpu, vk = both(model, positive="A", negative="B", guidance="ccfg", steps=5, n=6, seed=0)
    assert rel(vk, cpu) <= TOL


@needs_vk
def test_python_rule_on_device(toy):
    rule = ccfg.PythonRule(lambda u, p, negs: u + 2.0 * (p - u) - 0.5 * sum(n - u for n in negs))
    cpu, vk = both(toy, positive="A", negative="B", guidance=rule, steps=5, n=6, seed=0)
    assert rel(vk, cpu) <= TOL


# ------------------------------------------------------------------------- guide on a device

def eps_inputs(shape, k, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(shape).astype(np.float32)
    p = (u + 0.3 * rng.standard_normal(shape)).astype(np.float32)
    negs = [(u + 0.3 * rng.standard_normal(shape)).astype(np.float32) for _ in range(k)]
    return u, p, negs


@needs_vk
@pytest.mark.parametrize("rule", [r for r in RULES if r not in ("sld", "dng")])
@pytest.mark.parametrize("shape", [(1, 1), (65, 7), (3, 4, 5, 5)])
def test_guide_stateless(rule, shape):
    u, p, negs = eps_inputs(shape, 2)
    want = ccfg.guide(u, p, negs, RULES[rule]())
    got = ccfg.guide(u, p, negs, RULES[rule](), device=DEV)
    assert got.shape == want.shape and got.dtype == np.float32
    assert rel(got, want) <= TOL


@needs_vk
def test_guide_big_sample():
    u, p, negs = eps_inputs((1, 1000003), 1)
    rule = ccfg.CCFG(scale=7.5, tau=1e-6)
    assert rel(ccfg.guide(u, p, negs, rule, device=DEV), ccfg.guide(u, p, negs, rule)) <= TOL


@needs_vk
@pytest.mark.parametrize("rule", ["sld", "dng"])
def test_guide_stateful(rule):
    shape = (9, 3, 5)
    r = RULES[rule]()
    st_cpu = st_vk = None
    for step in range(6):
        u, p, negs = eps_inputs(shape, 2, seed=step)
        if st_cpu is None:
            want, st_cpu = ccfg.guide(u, p, negs, r)
            got, st_vk = ccfg.guide(u, p, negs, r, device=DEV)
            assert st_vk.device == DEV and st_cpu.device == "cpu"
        else:
            want, _ = ccfg.guide(u, p, negs, r, st_cpu)
            got, _ = ccfg.guide(u, p, negs, r, st_vk)     # runs where its state lives
        assert rel(got, want) <= TOL, step
        if rule == "dng":
            x_t = np.random.default_rng(step).standard_normal(shape).astype(np.float32)
            x_prev = (0.9 * x_t + 0.1 * u).astype(np.float32)
            st_cpu.observe(x_t, x_prev, u, negs, 0.5, 0.6)
            st_vk.observe(x_t, x_prev, u, negs, 0.5, 0.6)
            assert rel(st_vk.posterior, st_cpu.posterior) <= TOL
    assert st_vk.step == st_cpu.step == 6
    if rule == "sld":
        assert rel(st_vk.momentum, st_cpu.momentum) <= TOL and np.abs(st_cpu.momentum).max() > 0
    with pytest.raises(ValueError, match="lives on"):
        ccfg.guide(u, p, negs, r, st_vk, device="cpu")


# ------------------------------------------------------------------------- selectors and failure

def test_device_selectors(toy):
    kw = dict(positive="A", guidance="cfg", steps=2, n=2, progress=False)
    for bad in ("gpu", "vulkan:x", "vulkan:-1", ""):
        with pytest.raises(ValueError, match="device"):
            ccfg.sample(toy, device=bad, **kw)
    with pytest.raises(TypeError, match="device"):
        ccfg.sample(toy, device=0, **kw)
    with pytest.raises(ValueError, match="device"):
        ccfg.guide(np.ones((2, 3)), None, None, "cfg", device="tpu")
    ref = ccfg.sample(toy, device="cpu", **kw)
    # auto never picks a CPU-type Vulkan device (lavapipe) over the CPU backend
    if not any(d["type"] in ("discrete", "integrated") for d in VK):
        assert np.array_equal(ccfg.sample(toy, device="auto", **kw), ref)
    assert np.array_equal(ccfg.sample(toy, device=ccfg.devices()[0], **kw), ref)


@needs_vk
def test_device_entry_and_bad_index(toy):
    kw = dict(positive="A", guidance="cfg", steps=2, n=2, progress=False)
    entry = next(d for d in ccfg.devices() if d.get("selector") == DEV)
    a = ccfg.sample(toy, device=entry, **kw)
    b = ccfg.sample(toy, device="vulkan", **kw) if len(VK) == 1 else a
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="no such device"):
        ccfg.sample(toy, device="vulkan:99", **kw)


@needs_vk
def test_nan_raises_naming_the_step(toy):
    """A model turning non-finite at step 3 fails with the step named, never a result, and the
    device stays usable."""
    def fn(x, t, cond):
        out = np.zeros_like(x)
        if t[0] < 600:
            out[0, 0] = np.nan
        return out
    model = ccfg.models.PythonModel(fn, (2,))
    steps = ccfg.schedulers.plan("ddim", 10)["timesteps"]
    first_bad = int(np.argmax(steps < 600))
    for dev in ("cpu", DEV):
        with pytest.raises(FloatingPointError, match=f"model returned non-finite values at step "
                                                     f"{first_bad}"):
            ccfg.sample(model, steps=10, n=3, progress=False, device=dev)
    cpu, vk = both(toy, positive="A", guidance="cfg", steps=3, n=3)
    assert rel(vk, cpu) <= TOL


@needs_vk
def test_buffer_beyond_max_storage_buffer_range():
    """Stacked model inputs larger than one binding are refused with a clear error (lavapipe:
    128 MiB), before the model is called."""
    limit = VK[0]["max_storage_buffer_range"]
    if limit >= 1 << 30:
        pytest.skip("device allows bindings of 1 GiB or more")
    dim = limit // 4 // 3 + 1            # three stacked blocks (null, positive, negative)
    calls = []
    model = ccfg.models.PythonModel(lambda x, t, c: calls.append(1) or np.zeros_like(x), (dim,))
    with pytest.raises(ValueError, match="maxStorageBufferRange"):
        ccfg.sample(model, positive=1, negative=2, guidance="ccfg", steps=2, n=1, progress=False,
                    device=DEV)
    assert not calls


def run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_missing_loader_auto_falls_back_and_vulkan_raises():
    code = """
    import numpy as np, ccfg
    m = ccfg.models.load("toy2d")
    kw = dict(positive="A", negative="B", guidance="ccfg", steps=3, n=4, progress=False)
    x = ccfg.sample(m, device="auto", **kw)
    assert np.array_equal(x, ccfg.sample(m, device="cpu", **kw))
    for sel in ("vulkan", "vulkan:0"):
        try:
            ccfg.sample(m, device=sel, **kw)
        except RuntimeError as e:
            print("error:", e)
        else:
            raise SystemExit(sel + " without a loader must raise")
    try:
        ccfg.guide(np.ones((2, 3)), None, None, "cfg", device="vulkan")
    except RuntimeError as e:
        print("guide error:", e)
    print("ok")
    """
    r = run_py(code, CCFG_VULKAN_LOADER="/nonexistent/libvulkan.so.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout and r.stdout.count("error:") == 3
    if not WHY.startswith("Vulkan backend not built"):
        assert "no Vulkan loader: cannot open /nonexistent/libvulkan.so.1" in r.stdout


# Perp-Neg on the 2-D toy is ill-conditioned (its projection divides by ‖D_p‖², tiny for some
# samples): x_T perturbed by 1e-7 moves the CPU's own result by up to 1e-1. The float64 shaders
# reproduce the CPU bit for bit there; the float32 ones cannot, so that path skips it.
SAMPLES = """
import os
import numpy as np, ccfg
dev = "%s"
m = ccfg.models.load("toy2d")
rules = [ccfg.CCFG(scale=3.0), ccfg.SLD(scale=3.0, warmup=1), ccfg.DNG(scale=3.0)]
if not os.environ.get("CCFG_VULKAN_NO_F64"):
    rules.append("perp_neg")
for rule in rules:
    for solver in ("dpmpp_2m", "euler_ancestral"):
        a = ccfg.sample(m, positive="A", negative="B", guidance=rule, sampler=solver, steps=4, n=7,
                        progress=False, device=dev)
        b = ccfg.sample(m, positive="A", negative="B", guidance=rule, sampler=solver, steps=4, n=7,
                        progress=False, device="cpu")
        err = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert err <= 1e-5, (rule, solver, err)
rng = np.random.default_rng(0)
A = rng.standard_normal((3, 70, 70))
g = ccfg.models.GaussianMixture(rng.standard_normal((3, 70)), A @ A.transpose(0, 2, 1) / 70 + 0.1 * np.eye(70),
                                concepts={"a": [0, 1], "b": [2]})
for mm, pos, neg in ((g, "a", "b"), (ccfg.models.load("gmm1024"), 0, 1)):
    a = ccfg.sample(mm, positive=pos, negative=neg, guidance="ccfg", steps=3, n=5, progress=False, device=dev)
    b = ccfg.sample(mm, positive=pos, negative=neg, guidance="ccfg", steps=3, n=5, progress=False, device="cpu")
    assert np.linalg.norm(a - b) / np.linalg.norm(b) <= 1e-5
u = rng.standard_normal((5, 9)).astype(np.float32)
out, st = ccfg.guide(u, u + 0.1, [u - 0.1], ccfg.SLD(scale=3.0), device=dev)
print("ok")
"""


@needs_vk
@pytest.mark.parametrize("env", [{}, {"CCFG_VULKAN_STAGING": "1"}, {"CCFG_VULKAN_NO_F64": "1"}],
                         ids=["mapped", "staging", "float32"])
def test_paths_in_subprocess(env):
    """The discrete-GPU path (device-local buffers + staging) and the float32 shaders of devices
    without float64, forced on this device."""
    r = run_py(SAMPLES % DEV, **env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


LAYER_JSON = "/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json"


@needs_vk
@pytest.mark.skipif(not os.path.exists(LAYER_JSON), reason="Khronos validation layer not installed")
@pytest.mark.parametrize("staging", ["0", "1"])
def test_validation_layer_reports_no_errors(tmp_path, staging):
    """Every op of the loop under VK_LAYER_KHRONOS_validation with synchronization validation.
    Best-practices warnings are switched on as the positive control: they show the layer runs
    and logs where we look; errors and sync hazards must not appear."""
    settings = tmp_path / "vk_layer_settings.txt"
    settings.write_text(
        "khronos_validation.report_flags = error,warn,perf\n"
        "khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG\n"
        "khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_BEST_PRACTICES_EXT,"
        "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT\n")
    r = run_py(SAMPLES % DEV, VK_INSTANCE_LAYERS="VK_LAYER_KHRONOS_validation",
               VK_LAYER_SETTINGS_PATH=str(settings), CCFG_VULKAN_STAGING=staging)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "ok" in r.stdout, out[-3000:]
    assert "Validation Performance Warning" in out, "the layer did not report (not loaded?)"
    bad = [line for line in out.splitlines()
           if "Validation Error" in line or "SYNC-HAZARD" in line or "Validation Warning" in line]
    assert not bad, "\n".join(bad[:10])


@needs_vk
@pytest.mark.skipif(not (VK and VK[0]["float64"]), reason="device without float64 shaders")
def test_noise_bitwise_equal_with_float64():
    """With float64 shaders the device's normals are the CPU's bit for bit (Box–Muller in double,
    one rounding), not merely within float32 ulps."""
    got = _core.vk_op(DEV, "randn", (), (65, 20011, 2**40 + 7, 3, 5))
    want = _core.randn(2**40 + 7, 65, 20011, 3, 5)
    assert np.array_equal(got, want)


@needs_vk
def test_too_many_components_refused_naming_the_device():
    rng = np.random.default_rng(0)
    K = 300
    m = ccfg.models.GaussianMixture(rng.standard_normal((K, 2)), np.full(K, 0.1),
                                    concepts={"a": list(range(K // 2)), "b": list(range(K // 2, K))})
    with pytest.raises(ValueError, match=f"{DEV} .*1..256 components"):
        ccfg.sample(m, positive="a", guidance="cfg", steps=2, n=2, progress=False, device=DEV)
    ccfg.sample(m, positive="a", guidance="cfg", steps=2, n=2, progress=False, device="cpu")


@needs_vk
def test_threads_share_a_device(toy):
    """Two threads on one device, one with a Python model (which takes the GIL from inside the
    run): the device lock is taken with the GIL released, so neither can deadlock the other."""
    import threading
    model = ccfg.models.PythonModel(lambda x, t, c: np.zeros_like(x), (2,))
    results, errors = {}, []

    def work(name, m):
        try:
            kw = dict(positive="A", guidance="cfg", steps=20, n=32, progress=False, device=DEV)
            if m is model:
                kw.pop("positive")
            results[name] = [ccfg.sample(m, **kw) for _ in range(3)]
        except Exception as e:      # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=("gmm", toy)),
               threading.Thread(target=work, args=("py", model))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors
    ref = ccfg.sample(toy, positive="A", guidance="cfg", steps=20, n=32, progress=False, device="cpu")
    assert all(rel(x, ref) <= TOL for x in results["gmm"])


@needs_vk
def test_model_exception_leaves_device_usable(toy):
    def fn(x, t, cond):
        if t[0] < 500:
            raise KeyError("boom")
        return np.zeros_like(x)
    with pytest.raises(KeyError, match="boom"):
        ccfg.sample(ccfg.models.PythonModel(fn, (2,)), steps=10, n=3, progress=False, device=DEV)
    cpu, vk = both(toy, positive="A", negative="B", guidance="ccfg", steps=4, n=5)
    assert rel(vk, cpu) <= TOL
