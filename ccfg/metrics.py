"""Exact metrics for samples of a `ccfg.models.GaussianMixture` (NumPy, float64).

For "positive but not negative" the exact target is the mixture of the positive concept's
components outside every negative concept, with renormalised weights (docs/methods.md §3.6, §11.3).

- `negative_leakage`: mean posterior mass (data density, all components) on negative components.
- `target_precision`: fraction of samples whose most likely component is a target component.
- `target_tv`: total variation between the samples' most-likely-component histogram and the target
  weights (0 = right components in the right proportions).
- `off_support_rate`: fraction of samples whose data log-density is below the `quantile` of the
  data's own log-density (threshold estimated from exact data samples, deterministic).
- `mean_nll`: mean negative data log-density (off-manifold distortion).
- `target_distance`: energy distance (or sliced Wasserstein-2) to exact samples of the target.

Memory stays bounded for N up to 100k and more: densities are computed in row chunks; pairwise
distances in blocks of `_BLOCK` rows; energy distance subsamples each side to at most `max_samples`
(default 4000) points.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _validate as _v
from . import data
from .classifier import Classifier, load_classifier
from .models import GaussianMixture

__all__ = ["negative_leakage", "target_precision", "target_tv", "off_support_rate", "mean_nll",
           "target_distance", "energy_distance", "sliced_wasserstein", "target",
           "component_occupancy", "summary"]

_BLOCK = 1024
MAX_SAMPLES = 4000


# ---------------------------------------------------------------------- argument checks
def _check_model(model):
    if not isinstance(model, GaussianMixture):
        raise TypeError(f"model: expected a ccfg.models.GaussianMixture, got "
                        f"{type(model).__name__}")


def _check_samples(model, x, argname="x"):
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{argname}: expected a real array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != model.dim:
        raise ValueError(f"{argname}: expected shape (N, {model.dim}), got {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{argname}: no samples")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{argname}: contains non-finite values")
    return arr


def _components(model, concepts, argname, allow_none=False):
    """Union of the components of one concept or a list of concepts (sorted list)."""
    if concepts is None:
        if allow_none:
            return []
        raise ValueError(f"{argname}: a concept is required; known concepts: "
                         f"{model.concept_names}")
    if isinstance(concepts, (str, numbers.Integral, np.integer)):
        concepts = [concepts]
    try:
        concepts = list(concepts)
    except TypeError:
        raise TypeError(f"{argname}: expected a concept name or a list of them") from None
    out = set()
    for i, c in enumerate(concepts):
        cid = model._condition_id(c, argname if len(concepts) == 1 else f"{argname}[{i}]")
        out.update(model.concepts[model.concept_names[cid]])
    return sorted(out)


def target(model, positive, negative=None):
    """Sorted component indices of the exact target: positive components minus every component
    of the negative concept(s)."""
    _check_model(model)
    pos = _components(model, positive, "positive")
    neg = set(_components(model, negative, "negative", allow_none=True))
    t = [k for k in pos if k not in neg]
    if not t:
        raise ValueError(f"negative: removes every component of positive={positive!r}; the "
                         f"target is empty")
    return t


def _target_weights(model, tgt):
    w = np.zeros(model.K)
    w[tgt] = model.weights[tgt]
    return w / w.sum()


# ---------------------------------------------------------------------- component metrics
def component_occupancy(model, x):
    """(K,) fraction of samples whose most likely component (data posterior) is k."""
    _check_model(model)
    x = _check_samples(model, x)
    arg = np.argmax(model.posterior(x), axis=1)
    return np.bincount(arg, minlength=model.K) / x.shape[0]


def negative_leakage(model, x, negative):
    """Mean posterior mass on the components of the negative concept(s)."""
    _check_model(model)
    neg = _components(model, negative, "negative")
    x = _check_samples(model, x)
    return float(np.mean(np.sum(model.posterior(x)[:, neg], axis=1)))


def target_precision(model, x, positive, negative=None):
    """Fraction of samples whose most likely component is in the exact target."""
    tgt = target(model, positive, negative)
    x = _check_samples(model, x)
    arg = np.argmax(model.posterior(x), axis=1)
    return float(np.mean(np.isin(arg, tgt)))


def target_tv(model, x, positive, negative=None):
    """Total variation between the most-likely-component histogram and the target weights."""
    tgt = target(model, positive, negative)
    occ = component_occupancy(model, x)
    return float(0.5 * np.sum(np.abs(occ - _target_weights(model, tgt))))


def _log_density_threshold(model, quantile, n_ref, seed):
    key = ("logp_quantile", float(quantile), int(n_ref), seed)
    if key not in model._cache:
        ref = model.sample_data(int(n_ref), seed=seed)
        model._cache[key] = float(np.quantile(model.log_prob(ref), quantile))
    return model._cache[key]


def off_support_rate(model, x, quantile=1e-3, n_ref=200_000, seed=0):
    """Fraction of samples with data log-density below the data's own `quantile` log-density
    (estimated once from `n_ref` exact data samples drawn with `seed`, cached on the model)."""
    _check_model(model)
    if not (isinstance(quantile, numbers.Real) and 0.0 < quantile < 1.0):
        raise ValueError(f"quantile: expected 0 < quantile < 1, got {quantile!r}")
    if not isinstance(n_ref, (numbers.Integral, np.integer)) or n_ref < 1:
        raise ValueError(f"n_ref: expected a positive integer, got {n_ref!r}")
    x = _check_samples(model, x)
    thr = _log_density_threshold(model, quantile, n_ref, seed)
    return float(np.mean(model.log_prob(x) < thr))


def mean_nll(model, x):
    """Mean negative data log-density of the samples (nats)."""
    _check_model(model)
    x = _check_samples(model, x)
    return float(-np.mean(model.log_prob(x)))


# ---------------------------------------------------------------------- distances
def _mean_pairwise_distance(a, b, same=False):
    """Mean Euclidean distance over all pairs (V-statistic; the diagonal counts when same)."""
    total = 0.0
    bb = np.einsum("nd,nd->n", b, b)
    for i in range(0, a.shape[0], _BLOCK):
        ai = a[i:i + _BLOCK]
        d2 = np.einsum("nd,nd->n", ai, ai)[:, None] + bb[None, :] - 2.0 * (ai @ b.T)
        np.maximum(d2, 0.0, out=d2)
        if same:    # exact zeros on the diagonal (the expansion leaves rounding there)
            r = np.arange(ai.shape[0])
            d2[r, i + r] = 0.0
        total += float(np.sum(np.sqrt(d2)))
    return total / (a.shape[0] * b.shape[0])


def _subsample(x, max_samples, rng):
    if x.shape[0] <= max_samples:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=max_samples, replace=False))]


def _sample_sets(x, y):
    """Two sample sets as float64 (N, D) and (M, D) arrays with the same D (1-D input = D of 1)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: expected (N, D) and (M, D) arrays, got {x.shape} and {y.shape}")
    return x, y


def energy_distance(x, y, max_samples=MAX_SAMPLES, seed=0):
    """Energy distance sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) between two sample sets (V-statistics,
    as scipy.stats.energy_distance in 1-D). Each set is subsampled (without replacement,
    deterministically from `seed`) to at most `max_samples` points."""
    x, y = _sample_sets(x, y)
    if not isinstance(max_samples, (numbers.Integral, np.integer)) or max_samples < 2:
        raise ValueError(f"max_samples: expected an integer >= 2, got {max_samples!r}")
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_samples, rng), _subsample(y, max_samples, rng)
    e = (2.0 * _mean_pairwise_distance(x, y) - _mean_pairwise_distance(x, x, True)
         - _mean_pairwise_distance(y, y, True))
    return float(np.sqrt(max(e, 0.0)))


def _wp_1d_pow(u, v, p):
    """W_p(u, v)^p between two 1-D empirical distributions (exact, any sizes): the integral over
    q in (0, 1) of |F_u^-1(q) - F_v^-1(q)|^p, piecewise constant between merged quantile steps."""
    u, v = np.sort(u), np.sort(v)
    if u.size == v.size:
        return float(np.mean(np.abs(u - v) ** p))
    qu = np.arange(1, u.size + 1) / u.size
    qv = np.arange(1, v.size + 1) / v.size
    q = np.union1d(qu, qv)
    dq = np.diff(np.concatenate([[0.0], q]))
    iu = np.minimum(np.searchsorted(qu, q - 1e-12), u.size - 1)
    iv = np.minimum(np.searchsorted(qv, q - 1e-12), v.size - 1)
    return float(np.sum(dq * np.abs(u[iu] - v[iv]) ** p))


def sliced_wasserstein(x, y, n_projections=256, seed=0, p=2):
    """Sliced p-Wasserstein distance: (mean over random unit directions of W_p^p between the 1-D
    projections)^(1/p), directions drawn from `seed`.

    Note: between multimodal sample sets W2 is dominated by the transport of small mode-count
    imbalances across the gaps between modes (binomial noise), so same-distribution values are not
    small at moderate n; p=1 is much less sensitive to that."""
    x, y = _sample_sets(x, y)
    if not isinstance(n_projections, (numbers.Integral, np.integer)) or n_projections < 1:
        raise ValueError(f"n_projections: expected a positive integer, got {n_projections!r}")
    if not (isinstance(p, numbers.Real) and p >= 1):
        raise ValueError(f"p: expected a number >= 1, got {p!r}")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((x.shape[1], int(n_projections)))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    total = 0.0
    for j in range(0, dirs.shape[1], 64):
        px, py = x @ dirs[:, j:j + 64], y @ dirs[:, j:j + 64]
        for c in range(px.shape[1]):
            total += _wp_1d_pow(px[:, c], py[:, c], p)
    return float((total / dirs.shape[1]) ** (1.0 / p))


def target_distance(model, x, positive, negative=None, method="energy", n_ref=MAX_SAMPLES, seed=0,
                    max_samples=MAX_SAMPLES, p=2):
    """Distance between samples `x` and `n_ref` exact samples (drawn with `seed`) of the target
    mixture of "positive but not negative".

    method: "energy" (energy distance, each side subsampled to `max_samples`) or
    "sliced_wasserstein" (sliced W_p, default p = 2, 256 directions; see `sliced_wasserstein`).
    """
    tgt = target(model, positive, negative)
    x = _check_samples(model, x)
    method = _v.name(method, "method", ("energy", "sliced_wasserstein"))
    if not isinstance(n_ref, (numbers.Integral, np.integer)) or n_ref < 2:
        raise ValueError(f"n_ref: expected an integer >= 2, got {n_ref!r}")
    ref, _ = model._sample_components(int(n_ref), seed, tgt)
    if method == "energy":
        return energy_distance(x, ref, max_samples=max_samples, seed=seed)
    return sliced_wasserstein(x, ref, seed=seed, p=p)


def summary(model, x, positive, negative=None, quantile=1e-3, seed=0):
    """Every metric in one dict (for tables)."""
    _check_model(model)
    x = _check_samples(model, x)
    tgt = target(model, positive, negative)
    post = model.posterior(x)
    arg = np.argmax(post, axis=1)
    occ = np.bincount(arg, minlength=model.K) / x.shape[0]
    out = {"n": int(x.shape[0]), "target": [model.names[k] for k in tgt]}
    if negative is not None:
        neg = _components(model, negative, "negative")
        out["negative_leakage"] = float(np.mean(np.sum(post[:, neg], axis=1)))
    out["target_precision"] = float(np.mean(np.isin(arg, tgt)))
    out["target_tv"] = float(0.5 * np.sum(np.abs(occ - _target_weights(model, tgt))))
    out["off_support_rate"] = off_support_rate(model, x, quantile=quantile, seed=seed)
    out["mean_nll"] = mean_nll(model, x)
    out["energy_distance"] = target_distance(model, x, positive, negative, seed=seed)
    return out


# ====================================================================== image models
# Fashion-MNIST samples are scored by the shipped evaluation classifier (ccfg/weights/classifier),
# run by ccfg's C core (csrc/classifier.c): no torch at evaluation time. Concepts are the names of
# ccfg.data (a class, a group, or a list of them for the negative: Q is their union). The
# classifier itself (loading, the C forward pass) is ccfg.classifier; its Classifier and
# load_classifier are re-exported here.

__all__ += ["Classifier", "load_classifier", "classify", "features", "concept_rates", "coverage_kl",
            "frechet_distance", "real_features", "image_summary"]

def classify(images):
    """Class index (0-9, the dataset's numbering) of each (N, 1, 32, 32) image in [-1, 1]."""
    return load_classifier().classify(images)


def features(images):
    """Penultimate classifier features (after the spatial mean), (N, 128) float32."""
    return load_classifier().features(images)


def _concept_set(concepts, argname, allow_none=False):
    if concepts is None:
        if allow_none:
            return set()
        raise ValueError(f"{argname}: a concept name is required")
    if isinstance(concepts, str):
        concepts = [concepts]
    out = set()
    for name in concepts:
        if not isinstance(name, str):
            raise TypeError(f"{argname}: expected concept names, got {type(name).__name__}")
        try:
            out.update(data.concept_classes(name))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{argname}: {e}") from None
    return out


def _target_classes(positive, negative):
    p = _concept_set(positive, "positive")
    q = _concept_set(negative, "negative", allow_none=True)
    t = sorted(p - q)
    if not t:
        raise ValueError(f"positive {positive!r} minus negative {negative!r} contains no class")
    return sorted(p), sorted(q), t


def _check_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size == 0:
        raise ValueError("labels: empty")
    return labels.astype(np.int64)


def concept_rates(labels, positive, negative=None):
    """From class labels: ``target_precision`` (fraction in P \\ Q), ``negative_leakage`` (in Q;
    0 without a negative) and ``off_positive_rate`` (outside P)."""
    labels = _check_labels(labels)
    p, q, t = _target_classes(positive, negative)
    return {"target_precision": float(np.mean(np.isin(labels, t))),
            "negative_leakage": float(np.mean(np.isin(labels, q))) if q else 0.0,
            "off_positive_rate": float(np.mean(~np.isin(labels, p)))}


def coverage_kl(labels, positive, negative=None):
    """KL(h || uniform) in nats of the class histogram h of the labels that fall in P \\ Q, over the
    classes of P \\ Q (0: every target class equally often; log |P \\ Q| at most: one class).
    nan when no label falls in P \\ Q (there is no histogram to score)."""
    labels = _check_labels(labels)
    _, _, t = _target_classes(positive, negative)
    inside = labels[np.isin(labels, t)]
    if inside.size == 0:
        return float("nan")
    h = np.array([np.sum(inside == c) for c in t], dtype=np.float64) / inside.size
    nz = h > 0
    return float(np.sum(h[nz] * np.log(h[nz] * len(t))))


def frechet_distance(a, b):
    """Fréchet distance between Gaussians fitted to feature sets a (n, F) and b (m, F):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), unbiased covariances, float64.
    tr (S_a S_b)^(1/2) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2))) (symmetric PSD, so the
    eigenvalues are real and clipped at 0 against rounding)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a, b: expected (n, F) and (m, F) feature arrays, got {a.shape}, "
                         f"{b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("a, b: at least 2 rows each")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a, b: contain NaN or infinity")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = ra @ sb @ ra
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_sqrt = np.sum(np.sqrt(np.clip(ev, 0, None)))
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * tr_sqrt)


_REAL = {}


def real_features(split="test", path=None):
    """(features (N, F), labels (N,)) of the real Fashion-MNIST split (cached)."""
    key = (split, None if path is None else str(path))
    if key not in _REAL:
        x, y = data.fashion_mnist(split, path)
        _REAL[key] = (features(x), y)
    return _REAL[key]


def image_summary(images, positive, negative=None, seed=0, real=None):
    """Every image metric in one dict. The Fréchet distance compares the samples' features with
    half B of the real test images of P \\ Q (split in two disjoint random halves by ``seed``);
    ``frechet_floor`` compares as many real images from half A (at most all of it) with the same
    half B: the value a perfect sampler of that size would get. ``real``: (features, labels) of
    real images (default: the test split)."""
    clf = load_classifier()
    images = _v.images(images, clf.input_shape)
    feats_x, labels = clf.features(images), clf.classify(images)
    out = {"n": int(labels.shape[0])}
    out.update(concept_rates(labels, positive, negative))
    out["coverage_kl"] = coverage_kl(labels, positive, negative)
    rf, rl = real_features() if real is None else real
    _, _, t = _target_classes(positive, negative)
    idx = np.flatnonzero(np.isin(rl, t))
    perm = np.random.default_rng(seed).permutation(idx)
    half_a, half_b = perm[: len(perm) // 2], perm[len(perm) // 2:]
    n = min(labels.shape[0], len(half_a))
    out["frechet"] = frechet_distance(feats_x, rf[half_b]) if labels.shape[0] >= 2 else float("nan")
    out["frechet_floor"] = frechet_distance(rf[half_a[:n]], rf[half_b]) if n >= 2 else float("nan")
    return out


# ====================================================================== statistics
# Paired comparisons (ccfg.compare): rules share noise, so sample i of seed s starts from the same
# x_T and meets the same step noise under every rule. The unit of resampling is that x_T: one
# bootstrap resample draws units with replacement and EVERY rule's metric is recomputed on the
# same draw, so the spread of a difference reflects only how the two rules differ on the same
# starting points. Intervals are percentile intervals (Efron & Tibshirani 1993, §13.3).

__all__ += ["bootstrap_counts", "paired_bootstrap", "percentile_interval", "kernel_distance",
            "polynomial_kernel"]


def bootstrap_counts(n, n_boot=2000, seed=0):
    """(n_boot, n) integer counts: row r says how often resample r drew each of the n units
    (n draws with replacement, uniform). The same counts serve every rule and every metric of a
    comparison, which is what makes the resamples paired."""
    n = _v.integer(n, "n", low=1)
    n_boot = _v.integer(n_boot, "n_boot", low=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + n * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def percentile_interval(boot, confidence=0.95):
    """(low, high): the (1-c)/2 and (1+c)/2 quantiles of the bootstrap values (NaNs dropped;
    (nan, nan) when none is left)."""
    if not (isinstance(confidence, numbers.Real) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    b = np.asarray(boot, dtype=np.float64).ravel()
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(b, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


def paired_bootstrap(a, b, n_boot=2000, confidence=0.95, seed=0, counts=None):
    """Bootstrap interval of mean(a) - mean(b) for paired per-unit values (a[i] and b[i] measured
    on the same unit, e.g. the same x_T under two rules). Resamples units with replacement
    (``counts`` from :func:`bootstrap_counts`, or ``n_boot`` fresh ones from ``seed``) and
    returns a dict: ``estimate`` (the difference on all units), ``low``, ``high`` (the percentile
    interval at ``confidence``), ``n``, ``n_boot`` and ``resolved`` (True when the interval
    excludes 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 1:
        raise ValueError(f"a, b: expected two 1-D arrays of the same non-zero length, got "
                         f"{a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a, b: contain NaN or infinity")
    d = a - b
    if counts is None:
        counts = bootstrap_counts(d.size, n_boot, seed)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != d.size:
        raise ValueError(f"counts: expected (n_boot, {d.size}), got {counts.shape}")
    boot = counts @ d / d.size
    lo, hi = percentile_interval(boot, confidence)
    return {"estimate": float(d.mean()), "low": lo, "high": hi, "n": int(d.size),
            "n_boot": int(counts.shape[0]), "resolved": bool(lo > 0.0 or hi < 0.0)}


def polynomial_kernel(x, y, degree=3, gamma=None, coef0=1.0):
    """k(x, y) = (gamma x·y + coef0)^degree, gamma = 1/D by default: the kernel of the kernel
    inception distance (Bińkowski et al. 2018), as a matrix (len(x), len(y))."""
    x, y = _sample_sets(x, y)
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return (g * (x @ y.T) + coef0) ** degree


def kernel_distance(x, y, degree=3, gamma=None, coef0=1.0):
    """Unbiased squared MMD between sample sets x (m, D) and y (n, D) with the cubic polynomial
    kernel (the KID of Bińkowski et al., "Demystifying MMD GANs", 2018, on the full sets rather
    than averaged over subsets):
    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m-1)) + Σ_{i≠j} k(y_i, y_j)/(n(n-1)) - 2 Σ k(x_i, y_j)/(mn).
    Unlike the Fréchet distance it has no small-sample bias: its expectation is the population
    MMD², 0 when x and y come from one distribution (so single values can be negative)."""
    x, y = _sample_sets(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x, y: at least 2 rows each")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x, y: contain NaN or infinity")
    m, n = x.shape[0], y.shape[0]
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())
