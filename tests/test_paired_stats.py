"""ccfg.metrics' statistics against independent computations: the paired bootstrap against
scipy.stats.bootstrap and explicit index resampling; the kernel distance (KID) against a double
loop written from Bińkowski et al. 2018 and its unbiasedness."""
import numpy as np
import pytest

from ccfg import metrics as M


def test_bootstrap_counts_are_resamples():
    c = M.bootstrap_counts(7, n_boot=500, seed=3)
    assert c.shape == (500, 7) and np.all(c.sum(1) == 7) and c.min() >= 0
    # the same draws, made explicitly
    idx = np.random.default_rng(3).integers(0, 7, size=(500, 7))
    np.testing.assert_array_equal(c, np.stack([np.bincount(r, minlength=7) for r in idx]))


def test_paired_bootstrap_is_index_resampling():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(size=40) + 0.3
    r = M.paired_bootstrap(a, b, n_boot=300, seed=9)
    idx = np.random.default_rng(9).integers(0, 40, size=(300, 40))
    boot = np.array([np.mean(a[i]) - np.mean(b[i]) for i in idx])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert r["low"] == pytest.approx(lo, abs=1e-12) and r["high"] == pytest.approx(hi, abs=1e-12)
    assert r["estimate"] == pytest.approx(a.mean() - b.mean())
    assert r["n"] == 40 and r["n_boot"] == 300


def test_paired_bootstrap_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    base = rng.normal(size=200)
    a = base + rng.normal(scale=0.5, size=200)
    b = base + 0.2 + rng.normal(scale=0.5, size=200)
    ours = M.paired_bootstrap(a, b, n_boot=20000, seed=2)
    ref = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis) - np.mean(y, axis),
                          paired=True, vectorized=True, n_resamples=20000, method="percentile",
                          confidence_level=0.95, random_state=np.random.default_rng(5))
    se = ref.standard_error
    # Monte Carlo error of a 2.5 % quantile from 20000 resamples is about 0.02 se
    assert ours["low"] == pytest.approx(ref.confidence_interval.low, abs=0.1 * se)
    assert ours["high"] == pytest.approx(ref.confidence_interval.high, abs=0.1 * se)
    assert ours["resolved"] == (ref.confidence_interval.high < 0 or ref.confidence_interval.low > 0)


def test_paired_bootstrap_exact_cases():
    a = np.arange(10.0)
    r = M.paired_bootstrap(a + 0.5, a, n_boot=100)
    assert r["low"] == r["high"] == pytest.approx(0.5) and r["resolved"]
    r = M.paired_bootstrap(np.zeros(5), np.zeros(5))
    assert r["low"] == r["high"] == 0.0 and not r["resolved"]
    # pairing matters: a large common spread cancels in the paired difference
    rng = np.random.default_rng(4)
    common = rng.normal(scale=100, size=50)
    r = M.paired_bootstrap(common + 1 + rng.normal(scale=0.1, size=50), common)
    assert r["resolved"] and r["high"] - r["low"] < 0.2


def test_paired_bootstrap_errors():
    with pytest.raises(ValueError, match="a, b"):
        M.paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="a, b"):
        M.paired_bootstrap([np.nan], [0.0])
    with pytest.raises(ValueError, match="counts"):
        M.paired_bootstrap(np.zeros(3), np.zeros(3), counts=np.ones((5, 4)))
    with pytest.raises(ValueError, match="confidence"):
        M.percentile_interval([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_counts(3, n_boot=0)


def _mmd2_loop(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)^3, by the definition (Bińkowski et al. 2018,
    eq. for MMD²_u), one pair at a time."""
    d = x.shape[1]
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kernel_distance_against_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 5)), rng.normal(loc=0.3, size=(9, 5))
    assert M.kernel_distance(x, y) == pytest.approx(_mmd2_loop(x, y), rel=1e-10)
    # with duplicated rows (a bootstrap resample): pairs of distinct positions, duplicates count
    xd = x[[0, 0, 1, 2, 2, 2, 5]]
    assert M.kernel_distance(xd, y) == pytest.approx(_mmd2_loop(xd, y), rel=1e-10)
    assert M.kernel_distance(x, x) == pytest.approx(_mmd2_loop(x, x), rel=1e-10)


def test_kernel_distance_is_unbiased_and_frechet_is_not():
    """Same distribution, small sets: KID averages to 0 (within its standard error), the
    Fréchet distance is biased upward by far more."""
    rng = np.random.default_rng(1)
    kid, fd = [], []
    for _ in range(200):
        x, y = rng.normal(size=(20, 4)), rng.normal(size=(30, 4))
        kid.append(M.kernel_distance(x, y))
        fd.append(M.frechet_distance(x, y))
    kid = np.array(kid)
    assert abs(kid.mean()) < 3 * kid.std() / np.sqrt(kid.size)
    assert np.mean(fd) > 0.3 and min(fd) > 0


def test_kernel_distance_errors():
    with pytest.raises(ValueError, match="x, y"):
        M.kernel_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="x, y"):
        M.kernel_distance(np.zeros((3, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="x, y"):
        M.kernel_distance(np.full((3, 2), np.nan), np.zeros((4, 2)))
