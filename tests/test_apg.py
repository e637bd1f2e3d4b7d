"""APG (adaptive projected guidance), added by the CONTRIBUTING.md recipe: checked against a NumPy
reference written from the paper's Algorithm 1 (tests/reference_rules.py) and against diffusers'
own implementation (diffusers.guiders.adaptive_projected_guidance.normalized_guidance)."""
import numpy as np
import pytest

import ccfg
from reference_rules import apg as apg_ref, cfg as cfg_ref

SHAPES = [(1, 2), (5, 3), (4, 4, 8, 8), (3, 1, 28, 28)]
PARAMS = [(7.5, 0.0, 0.0), (3.0, 0.5, 0.0), (5.0, 1.0, 0.0), (5.0, 0.0, 2.5), (2.0, 0.3, 0.05),
          (1.0, 0.0, 1.0), (0.0, 0.0, 0.0)]


def pair(shape, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(shape).astype(np.float32)
    p = (u + 0.7 * rng.standard_normal(shape)).astype(np.float32)
    return u, p


def close(a, b, rtol=2e-5):
    return np.max(np.abs(a - b)) <= rtol * max(1.0, np.max(np.abs(b)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w,eta,r", PARAMS)
def test_apg_matches_reference(shape, w, eta, r):
    u, p = pair(shape, 11 + len(shape))
    got = ccfg.guide(u, p, None, ccfg.APG(scale=w, eta=eta, norm_threshold=r))
    assert got.dtype == np.float32 and got.shape == shape
    assert close(got, apg_ref(u, p, w, eta, r))


@pytest.mark.parametrize("w,eta,r", PARAMS)
def test_apg_matches_diffusers(w, eta, r):
    torch = pytest.importorskip("torch")
    apg_mod = pytest.importorskip("diffusers.guiders.adaptive_projected_guidance")
    u, p = pair((4, 4, 8, 8), 5)
    # the paper's form eps_p + (w-1) update is diffusers' original formulation at scale w - 1
    want = apg_mod.normalized_guidance(torch.from_numpy(p).double(), torch.from_numpy(u).double(),
                                       w - 1.0, None, eta, r, use_original_formulation=True)
    got = ccfg.guide(u, p, None, ccfg.APG(scale=w, eta=eta, norm_threshold=r))
    assert close(got, want.numpy())


def test_apg_eta_one_without_rescaling_is_cfg():
    u, p = pair((6, 3, 4, 4), 2)
    got = ccfg.guide(u, p, None, ccfg.APG(scale=4.0, eta=1.0))
    assert close(got, cfg_ref(u, p, None, 4.0))


def test_apg_scale_one_is_the_positive():
    u, p = pair((6, 10), 3)
    got = ccfg.guide(u, p, None, ccfg.APG(scale=1.0, eta=0.3, norm_threshold=0.5))
    assert close(got, p.astype(np.float64))


def test_apg_ignores_negatives_and_zero_positive():
    u, p = pair((4, 16), 4)
    n = p + 1.0
    rule = ccfg.APG(scale=3.0, eta=0.2)
    assert np.array_equal(ccfg.guide(u, p, n, rule), ccfg.guide(u, p, None, rule))
    # eps_p = 0: no direction to project on, D_par = 0
    z = np.zeros_like(p)
    assert close(ccfg.guide(u, z, None, rule), apg_ref(u, z, 3.0, 0.2, 0.0))


def test_apg_by_name_and_repr():
    assert isinstance(ccfg.guidance.get("apg"), ccfg.APG)
    assert repr(ccfg.APG(scale=5.0, eta=0.5)) == "APG(scale=5.0, eta=0.5, norm_threshold=0.0)"


@pytest.mark.parametrize("kw,exc,name", [({"eta": "x"}, TypeError, "eta"),
                                         ({"norm_threshold": -1.0}, ValueError, "norm_threshold"),
                                         ({"eta": float("nan")}, ValueError, "eta")])
def test_apg_bad_parameters_name_the_argument(kw, exc, name):
    with pytest.raises(exc, match=name):
        ccfg.APG(**kw)


def test_apg_samples_the_toy_mixture_like_the_reference_loop():
    """ccfg.sample with APG equals a DDIM loop written here around the exact mixture's eps and the
    NumPy reference (same noise, same schedule)."""
    model = ccfg.models.GaussianMixture.toy_2d()
    rule = ccfg.APG(scale=3.0, eta=0.0, norm_threshold=1.0)
    x = ccfg.sample(model, positive="A", guidance=rule, sampler="ddim", steps=10, n=64, seed=3,
                    progress=False, device="cpu")
    plan = ccfg.schedulers.plan("ddim", 10, model.scheduler)
    cur = ccfg.randn(3, 64, (2,)).astype(np.float64)
    for i in range(10):
        ab, abn = plan["alpha_bars"][i], plan["alpha_bars_next"][i]
        xf = cur.astype(np.float32)
        e_u = model.eps(xf, ab, None).astype(np.float64)
        e_p = model.eps(xf, ab, "A").astype(np.float64)
        eps = apg_ref(e_u, e_p, 3.0, 0.0, 1.0)
        x0 = (cur - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        cur = np.sqrt(abn) * x0 + np.sqrt(1 - abn) * eps
    assert np.max(np.abs(x - cur)) < 1e-3


VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d]


@pytest.mark.skipif(not VK, reason="no Vulkan device")
def test_apg_on_vulkan_matches_cpu():
    u, p = pair((5, 4, 8, 8), 9)
    rule = ccfg.APG(scale=6.0, eta=0.25, norm_threshold=3.0)
    cpu = ccfg.guide(u, p, None, rule)
    vk = ccfg.guide(u, p, None, rule, device=f"vulkan:{VK[0]['index']}")
    assert close(vk, cpu, 1e-5)
