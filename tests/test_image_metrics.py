"""Image metrics (ccfg.metrics) vs independent NumPy/SciPy computations on synthetic inputs."""
import numpy as np
import pytest
import scipy.linalg

import ccfg.metrics as metrics
from ccfg import data


def _frechet_scipy(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("n,m,f", [(400, 300, 5), (50, 80, 12), (1000, 1000, 3)])
def test_frechet_matches_scipy_sqrtm(n, m, f):
    rng = np.random.default_rng(n + f)
    a = rng.normal(size=(n, f)) @ rng.normal(size=(f, f)) + rng.normal(size=f)
    b = rng.normal(size=(m, f)) @ rng.normal(size=(f, f)) * 0.7 + 1.5
    assert metrics.frechet_distance(a, b) == pytest.approx(_frechet_scipy(a, b), rel=1e-6, abs=1e-8)


def test_frechet_closed_form_gaussians():
    # known value: N(0, I) vs N(m, 4I) in F dims -> |m|^2 + F (1 + 4 - 2*2) = |m|^2 + F
    rng = np.random.default_rng(0)
    f = 4
    a = rng.normal(size=(200_000, f))
    b = rng.normal(size=(200_000, f)) * 2 + 3
    assert metrics.frechet_distance(a, b) == pytest.approx(9 * f + f, rel=2e-2)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_bad_input():
    with pytest.raises(ValueError):
        metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError):
        metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))


def _sets(positive, negative):
    p = set(data.concept_classes(positive))
    q = set()
    for name in ([negative] if isinstance(negative, str) else negative or []):
        q |= set(data.concept_classes(name))
    return p, q


@pytest.mark.parametrize("positive,negative", [("footwear", "sneaker"), ("top", "shirt"),
                                               ("upper-body", ["dress", "coat"]),
                                               ("warm", "footwear"), ("top", None),
                                               ("bag", "footwear")])
def test_concept_rates_and_coverage_vs_loops(positive, negative):
    rng = np.random.default_rng(len(positive))
    labels = rng.integers(0, 10, size=777)
    p, q = _sets(positive, negative)
    t = sorted(p - q)
    r = metrics.concept_rates(labels, positive, negative)
    # independent: count with plain Python loops
    assert r["target_precision"] == pytest.approx(sum(int(l) in t for l in labels) / 777)
    assert r["negative_leakage"] == pytest.approx(sum(int(l) in q for l in labels) / 777)
    assert r["off_positive_rate"] == pytest.approx(sum(int(l) not in p for l in labels) / 777)
    inside = [int(l) for l in labels if int(l) in t]
    hist = np.array([inside.count(c) for c in t], float) / len(inside)
    u = np.full(len(t), 1.0 / len(t))
    want = float(np.sum(scipy.special.rel_entr(hist, u)))
    assert metrics.coverage_kl(labels, positive, negative) == pytest.approx(want, abs=1e-12)


def test_coverage_extremes():
    # one class of footwear \ sneaker only -> log 2; uniform -> 0; none inside -> nan
    assert metrics.coverage_kl(np.full(10, 5), "footwear", "sneaker") == pytest.approx(np.log(2))
    uniform = np.array([5, 9, 5, 9, 7])
    assert metrics.coverage_kl(uniform, "footwear", "sneaker") == pytest.approx(0.0)
    assert np.isnan(metrics.coverage_kl(np.array([7, 0]), "footwear", "sneaker"))


def test_label_metric_errors():
    with pytest.raises(ValueError, match="no class"):
        metrics.concept_rates(np.array([1]), "sneaker", "footwear")
    with pytest.raises(ValueError, match="positive"):
        metrics.concept_rates(np.array([1]), "hat")
    with pytest.raises(ValueError, match="labels"):
        metrics.coverage_kl(np.array([0.5]), "top")
    with pytest.raises(ValueError, match="labels"):
        metrics.concept_rates(np.array([], dtype=np.int64), "top")


def test_image_summary_on_real_images_uses_classifier():
    # real footwear images, classified by the C classifier: rates equal concept_rates of those
    # labels, and a real subset of P \ Q sits near the real-vs-real floor
    try:
        x, y = data.fashion_mnist("test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    # a small reference set keeps this fast: (features, labels) of 1500 real images
    ref_x, ref_y = x[:1500], y[:1500]
    real = (metrics.features(ref_x), ref_y)
    imgs = x[1500:1500 + 300][np.isin(y[1500:1800], [5, 9])]
    s = metrics.image_summary(imgs, "footwear", "sneaker", real=real)
    labels = metrics.classify(imgs)
    for k, v in metrics.concept_rates(labels, "footwear", "sneaker").items():
        assert s[k] == v
    assert s["target_precision"] > 0.9
    assert s["n"] == len(imgs)
    # sneakers are far from sandals/boots in feature space: much larger distance than real ones
    sneakers = x[1500:3000][y[1500:3000] == 7][:len(imgs)]
    s2 = metrics.image_summary(sneakers, "footwear", "sneaker", real=real)
    assert s2["negative_leakage"] > 0.9
    assert s2["frechet"] > 3 * s["frechet"]
    assert s["frechet"] < 3 * s["frechet_floor"] + 1.0
