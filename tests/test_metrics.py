"""Exact mixture metrics: hand-checkable cases, calibration on exact data, distances."""
import math

import numpy as np
import pytest
from scipy.stats import energy_distance as scipy_energy, wasserstein_distance

from ccfg import metrics
from ccfg.models import GaussianMixture


def far_mixture():
    """Four 1-D unit-variance components 20 apart: posteriors at the means are one-hot to e^-200."""
    return GaussianMixture(np.array([[0.0], [20.0], [40.0], [60.0]]), np.ones(4),
                           concepts={"A": [0, 1, 2], "B": [2, 3], "C": [1]},
                           names=["A1", "A2", "A3", "B1"])


# ----------------------------------------------------------------------------- targets
def test_target_sets():
    toy = GaussianMixture.toy_2d()
    assert metrics.target(toy, "A", "B") == [0, 1]
    assert [toy.names[k] for k in metrics.target(toy, "A", "B")] == ["A1", "A2"]
    assert metrics.target(toy, "A") == [0, 1, 2]
    assert metrics.target(toy, "A", ["B", "C"]) == [0, 1]
    assert metrics.target(toy, 0, 1) == [0, 1]              # concept indices work too
    m = far_mixture()
    assert metrics.target(m, "A", ["B", "C"]) == [0]
    with pytest.raises(ValueError, match="empty"):
        metrics.target(m, "C", "A")
    with pytest.raises(ValueError, match="positive.*known concepts"):
        metrics.target(toy, "Z", "B")
    with pytest.raises(ValueError, match=r"negative\[1\]"):
        metrics.target(toy, "A", ["B", "Z"])
    with pytest.raises(TypeError, match="negative"):
        metrics.target(toy, "A", 1.5)
    with pytest.raises(TypeError, match="model"):
        metrics.target("toy", "A", "B")


# ----------------------------------------------------------------------------- hand cases
def test_leakage_and_precision_at_component_means():
    m = far_mixture()
    x = m.means.copy()                                      # one sample at each component
    # posterior mass on B = {A3, B1}: 1 for the last two samples, 0 for the first two
    assert metrics.negative_leakage(m, x, "B") == pytest.approx(0.5, abs=1e-12)
    assert metrics.negative_leakage(m, x, ["B", "C"]) == pytest.approx(0.75, abs=1e-12)
    # target of A not B = {A1, A2}: two of four samples
    assert metrics.target_precision(m, x, "A", "B") == 0.5
    assert metrics.target_precision(m, x[:2], "A", "B") == 1.0
    assert metrics.target_precision(m, x[2:], "A", "B") == 0.0
    # occupancy and total variation to the target weights (1/2, 1/2, 0, 0)
    np.testing.assert_array_equal(metrics.component_occupancy(m, x), [0.25] * 4)
    assert metrics.target_tv(m, x, "A", "B") == pytest.approx(0.5)
    assert metrics.target_tv(m, x[[0, 1, 0, 1]], "A", "B") == pytest.approx(0.0)
    assert metrics.target_tv(m, x[[0, 0]], "A", "B") == pytest.approx(0.5)


def test_leakage_at_midpoint_is_half():
    m = GaussianMixture(np.array([[-1.0, 0.0], [1.0, 0.0]]), [0.3, 0.3],
                        concepts={"L": [0], "R": [1]})
    x = np.array([[0.0, 0.0], [0.0, 5.0], [0.0, -2.0]])     # on the bisector: r = 1/2 exactly
    assert metrics.negative_leakage(m, x, "R") == pytest.approx(0.5, abs=1e-15)
    # a point at distance u along the axis: r_R = sigmoid(2 u Δ/2 / v) with Δ = 2, v = 0.3
    u = 0.1
    expected = 1.0 / (1.0 + math.exp(-2.0 * u / 0.3))
    assert metrics.negative_leakage(m, np.array([[u, 0.0]]), "R") == pytest.approx(expected,
                                                                                  rel=1e-12)


def test_exact_target_samples_score_perfectly():
    for model in (GaussianMixture.toy_2d(), GaussianMixture.high_dim(64)):
        tgt = metrics.target(model, "A", "B")
        x, _ = model._sample_components(5000, 3, tgt)
        # the floor is the components' own overlap: at d = 64 (‖Δμ‖/σ = 6.3) about 5 Φ(-3.16) = 0.4%
        # of exact samples are most likely under another component (0.05% for toy_2d)
        assert metrics.target_precision(model, x, "A", "B") > 0.99
        assert metrics.negative_leakage(model, x, "B") < 0.005
        # samples of the whole concept A put 1/3 of their mass on A3, a negative component
        xa = model.sample_data(6000, seed=4, concept="A")
        assert metrics.negative_leakage(model, xa, "B") == pytest.approx(1 / 3, abs=0.025)
        assert metrics.target_precision(model, xa, "A", "B") == pytest.approx(2 / 3, abs=0.025)


# ----------------------------------------------------------------------------- off support
def test_off_support_rate_matches_quantile_on_exact_data():
    model = GaussianMixture.toy_2d()
    x = model.sample_data(100_000, seed=42)
    for q in (1e-3, 1e-2):
        rate = metrics.off_support_rate(model, x, quantile=q)
        # binomial noise of the rate plus that of the threshold (200k reference samples)
        tol = 4 * math.sqrt(q * (1 - q) * (1 / 1e5 + 1 / 2e5))
        assert abs(rate - q) < tol, (q, rate)
    # deterministic (and the threshold is cached on the model)
    assert metrics.off_support_rate(model, x[:1000]) == metrics.off_support_rate(model, x[:1000])
    assert any(k[0] == "logp_quantile" for k in model._cache)
    # samples pushed far off the data are all off support; samples at the means none
    assert metrics.off_support_rate(model, x[:500] + 10.0) == 1.0
    assert metrics.off_support_rate(model, model.means) == 0.0
    with pytest.raises(ValueError, match="quantile"):
        metrics.off_support_rate(model, x, quantile=0.0)
    with pytest.raises(ValueError, match="n_ref"):
        metrics.off_support_rate(model, x, n_ref=0)


def test_mean_nll():
    m = GaussianMixture(np.zeros((1, 3)), [2.0])
    x = np.zeros((4, 3))
    assert metrics.mean_nll(m, x) == pytest.approx(1.5 * math.log(2 * math.pi * 2.0))


# ----------------------------------------------------------------------------- distances
def test_energy_distance_matches_scipy_in_1d():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=300), rng.normal(0.4, 1.3, size=200)
    assert metrics.energy_distance(u[:, None], v[:, None]) == pytest.approx(scipy_energy(u, v),
                                                                            rel=1e-9)
    assert metrics.energy_distance(u, u) == 0.0


def test_energy_distance_same_vs_different():
    model = GaussianMixture.toy_2d()
    a = model.sample_data(3000, seed=1)
    b = model.sample_data(3000, seed=2)
    same = metrics.energy_distance(a, b)
    shifted = metrics.energy_distance(a, b + np.array([0.3, 0.0]))
    other = metrics.energy_distance(a, model.sample_data(3000, seed=2, concept="A"))
    assert same < 0.08                       # null level at n = 3000 (see test_gmm's calibration)
    assert shifted > 3 * same and other > 10 * same


def test_energy_distance_subsamples_large_inputs():
    model = GaussianMixture.toy_2d()
    x = model.sample_data(100_000, seed=8)
    d1 = metrics.target_distance(model, x, "A", None, n_ref=4000)
    d2 = metrics.target_distance(model, x, "A", None, n_ref=4000)
    assert d1 == d2                                         # deterministic subsample
    # the whole mixture is far from concept A; concept A samples are close
    xa = model.sample_data(100_000, seed=9, concept="A")
    assert metrics.target_distance(model, xa, "A", None) < 0.08 < d1
    with pytest.raises(ValueError, match="max_samples"):
        metrics.energy_distance(x, x, max_samples=1)


def test_target_distance_prefers_exact_target():
    model = GaussianMixture.toy_2d()
    tgt, _ = model._sample_components(4000, 21, [0, 1])
    xa = model.sample_data(4000, seed=22, concept="A")
    # concept A puts a third of its mass on A3, outside the target {A1, A2}
    for method, p, ratio in (("energy", 2, 5), ("sliced_wasserstein", 1, 5),
                             ("sliced_wasserstein", 2, 2.5)):
        good = metrics.target_distance(model, tgt, "A", "B", method=method, p=p)
        bad = metrics.target_distance(model, xa, "A", "B", method=method, p=p)
        # sliced W2 of same-distribution multimodal sets is inflated by mode-count noise
        assert bad > ratio * good, (method, p, good, bad)
    with pytest.raises(ValueError, match="method"):
        metrics.target_distance(model, tgt, "A", "B", method="kl")


def test_sliced_wasserstein_exact_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1))
    # 1-D: translation by t gives W2 = |t| exactly, also with unequal sizes
    assert metrics.sliced_wasserstein(x, x + 0.7) == pytest.approx(0.7, rel=1e-12)
    y = np.repeat(x, 2, axis=0)
    assert metrics.sliced_wasserstein(x, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sliced_wasserstein(x, y - 0.25) == pytest.approx(0.25, rel=1e-9)
    # unequal sizes against the sorted-quantile formula on a common grid
    u, v = rng.normal(size=3), rng.normal(size=2)
    grid = (np.arange(6) + 0.5) / 6                         # breakpoints of 1/3 and 1/2 steps
    fu, fv = np.sort(u)[(grid * 3).astype(int)], np.sort(v)[(grid * 2).astype(int)]
    ref = math.sqrt(np.mean((fu - fv) ** 2))
    assert metrics.sliced_wasserstein(u[:, None], v[:, None]) == pytest.approx(ref, rel=1e-12)
    # p = 1 against scipy's 1-D W1 (unequal sizes)
    a, b = rng.normal(size=37), rng.normal(0.3, 2.0, size=23)
    assert metrics.sliced_wasserstein(a, b, p=1) == pytest.approx(wasserstein_distance(a, b),
                                                                  rel=1e-10)
    with pytest.raises(ValueError, match="p"):
        metrics.sliced_wasserstein(a, b, p=0.5)
    # D dims, translation t: sqrt(mean over directions of (t·θ)²) ~ |t| / sqrt(D)
    z = rng.normal(size=(500, 4))
    t = np.array([1.0, -2.0, 0.5, 0.0])
    sw = metrics.sliced_wasserstein(z, z + t, n_projections=4000)
    assert sw == pytest.approx(np.linalg.norm(t) / 2.0, rel=0.05)


# ----------------------------------------------------------------------------- summary, checks
def test_summary():
    model = GaussianMixture.toy_2d()
    x = model.sample_data(3000, seed=5, concept="A")
    s = metrics.summary(model, x, "A", "B")
    assert s["target"] == ["A1", "A2"] and s["n"] == 3000
    assert s["negative_leakage"] == pytest.approx(metrics.negative_leakage(model, x, "B"))
    assert s["target_precision"] == pytest.approx(metrics.target_precision(model, x, "A", "B"))
    assert s["target_tv"] == pytest.approx(metrics.target_tv(model, x, "A", "B"))
    assert s["off_support_rate"] == metrics.off_support_rate(model, x)
    assert s["mean_nll"] == pytest.approx(metrics.mean_nll(model, x))
    assert s["energy_distance"] == metrics.target_distance(model, x, "A", "B")
    assert "negative_leakage" not in metrics.summary(model, x, "A")


def test_argument_validation():
    model = GaussianMixture.toy_2d()
    x = model.sample_data(10)
    with pytest.raises(ValueError, match="x"):
        metrics.negative_leakage(model, np.zeros((5, 3)), "B")
    with pytest.raises(ValueError, match="x"):
        metrics.target_precision(model, np.zeros(2), "A", "B")
    with pytest.raises(ValueError, match="x"):
        metrics.negative_leakage(model, np.full((2, 2), np.nan), "B")
    with pytest.raises(TypeError, match="x"):
        metrics.negative_leakage(model, np.array([["a", "b"]]), "B")
    with pytest.raises(ValueError, match="negative"):
        metrics.negative_leakage(model, x, "nope")
    with pytest.raises(ValueError, match="negative"):
        metrics.negative_leakage(model, x, None)
    with pytest.raises(ValueError, match="positive"):
        metrics.summary(model, x, "nope", "B")
    with pytest.raises(TypeError, match="model"):
        metrics.negative_leakage(object(), x, "B")
    with pytest.raises(ValueError, match="x, y"):
        metrics.energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="n_projections"):
        metrics.sliced_wasserstein(x, x, n_projections=0)


def test_large_inputs_bounded_high_dim():
    model = GaussianMixture.high_dim(1024)
    x = model.sample_data(3000, seed=1, concept="A")
    assert metrics.negative_leakage(model, x, "B") == pytest.approx(1 / 3, abs=0.04)
    d = metrics.target_distance(model, x, "A", "B", n_ref=1000, max_samples=1000)
    assert np.isfinite(d) and d > 0
