"""Models ccfg can sample: the exact Gaussian mixture and any Python callable.

`GaussianMixture` is the ground truth of the package: its noise prediction is exact, for the whole
mixture and for every concept (a set of components), so the true target of "positive but not
negative" is known in closed form (the positive components outside every negative concept).

Conventions (docs/methods.md §1, §3.6): VP path ``x_t = sqrt(ā) x_0 + sqrt(1-ā) ε``. Given component
``k`` the noised sample is ``x_t | k ~ N(sqrt(ā) μ_k, ā Σ_k + (1-ā) I)`` and the exact noise
prediction is ``eps(x_t) = -sqrt(1-ā) ∇ log p_t(x_t)
= sqrt(1-ā) Σ_k r_k(x_t) (ā Σ_k + (1-ā) I)^{-1} (x_t - sqrt(ā) μ_k)`` with ``r_k`` the posterior
responsibilities of the noised mixture (renormalised within the concept for a conditional
prediction).
"""
from __future__ import annotations

import math
import os
import numbers
from collections.abc import Mapping

import numpy as np

from . import _validate as _v
from . import data
from .unet import UNet      # diffusers UNet2DModel in C; see ccfg/unet.py

__all__ = ["GaussianMixture", "PythonModel", "UNet", "load", "PRESETS"]

_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_LOG_2PI = math.log(2.0 * math.pi)
# rows per chunk are chosen so that one chunk's work arrays hold about this many float64 values
_CHUNK_VALUES = 1 << 21
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _is_int(v):
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _float_array(value, argname):
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{argname}: expected an array of real numbers ({exc})") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{argname}: contains non-finite values (NaN or Inf)")
    return arr


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


class GaussianMixture:
    """Exact Gaussian mixture with concepts (sets of components).

    Parameters
    ----------
    means : (K, D) array
        Component means.
    covs : (K,) variances (isotropic), (K, D) diagonals, or (K, D, D) symmetric positive-definite
        matrices. A scalar is one isotropic variance shared by every component.
    weights : (K,) positive array, optional
        Mixture weights (normalised here); uniform when omitted.
    concepts : dict name -> list of component indices (or component names), optional
        A concept is the sub-mixture of its components with renormalised weights. The concept id
        used by the C core is the position of the name in ``concept_names`` (insertion order).
    names : list of K distinct strings, optional
        Component names (default ``"c0", "c1", ...``).

    Attributes: ``shape = (D,)``, ``dim``, ``K``, ``means``, ``weights``, ``names``, ``concepts``
    (name -> sorted list of component indices), ``concept_names``, ``prediction_type = "epsilon"``,
    ``scheduler = None`` (sampling uses the default ``SchedulerConfig``), ``info`` (a dict
    describing a preset).
    """

    prediction_type = "epsilon"
    scheduler = None

    def __init__(self, means, covs, weights=None, concepts=None, names=None):
        means = _float_array(means, "means")
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means: expected shape (K, D) with K, D >= 1, got {means.shape}")
        if np.max(np.abs(means)) > _v.FLOAT32_MAX:
            raise ValueError(f"means: values beyond the float32 range (|x| > "
                             f"{_v.FLOAT32_MAX:.4g}); ccfg samples in float32")
        K, D = means.shape
        self.K, self.dim, self.shape = int(K), int(D), (int(D),)
        self.means = means

        # --- covariances -> eigen-decomposition Σ_k = U_k diag(λ_k) U_kᵀ
        covs = _float_array(covs, "covs")
        evecs = None
        if covs.ndim == 0:
            covs = np.full(K, float(covs))
        if covs.ndim == 1:
            if covs.shape != (K,):
                raise ValueError(f"covs: K variances expected, shape ({K},), got {covs.shape}")
            if np.any(covs <= 0):
                raise ValueError("covs: variances must be > 0")
            evals = np.repeat(covs[:, None], D, axis=1)
            self._cov_kind = "isotropic"
        elif covs.ndim == 2:
            if covs.shape != (K, D):
                raise ValueError(f"covs: diagonals expected, shape ({K}, {D}), got {covs.shape}")
            if np.any(covs <= 0):
                raise ValueError("covs: diagonal variances must be > 0")
            evals = covs.copy()
            self._cov_kind = "diagonal"
        elif covs.ndim == 3:
            if covs.shape != (K, D, D):
                raise ValueError(f"covs: full matrices expected, shape ({K}, {D}, {D}), "
                                 f"got {covs.shape}")
            for k in range(K):
                c = covs[k]
                tol = 1e-10 * max(1.0, float(np.max(np.abs(c))))
                if np.max(np.abs(c - c.T)) > tol:
                    raise ValueError(f"covs[{k}]: covariance matrix is not symmetric")
            offdiag = covs.copy()
            idx = np.arange(D)
            offdiag[:, idx, idx] = 0.0
            if not np.any(offdiag):
                # every matrix is diagonal: keep the axis-aligned fast path
                evals = covs[:, idx, idx].copy()
                if np.any(evals <= 0):
                    bad = int(np.argmax(np.any(evals <= 0, axis=1)))
                    raise ValueError(f"covs[{bad}]: covariance matrix is not positive definite")
                self._cov_kind = "diagonal"
            else:
                evals = np.empty((K, D))
                evecs = np.empty((K, D, D))
                for k in range(K):
                    c = 0.5 * (covs[k] + covs[k].T)
                    lam, U = np.linalg.eigh(c)
                    if lam[0] <= 1e-12 * max(1.0, float(lam[-1])):
                        raise ValueError(f"covs[{k}]: covariance matrix is not positive definite "
                                         f"(smallest eigenvalue {lam[0]:.3g})")
                    evals[k], evecs[k] = lam, U
                evecs = np.ascontiguousarray(evecs)
                self._cov_kind = "full"
        else:
            raise ValueError(f"covs: expected shape ({K},), ({K}, {D}) or ({K}, {D}, {D}), "
                             f"got {covs.shape}")
        # the noise predictions divide by the variances and sampling runs in float32: variances
        # outside float32's normal range would overflow them (1e-320 gave inf silently)
        lo, hi = float(np.min(evals)), float(np.max(evals))
        if lo < _FLOAT32_TINY or hi > _v.FLOAT32_MAX:
            raise ValueError(f"covs: variances (eigenvalues) must lie in [{_FLOAT32_TINY:.4g}, "
                             f"{_v.FLOAT32_MAX:.4g}] (float32's normal range), got "
                             f"[{lo:.4g}, {hi:.4g}]")
        self._evals = np.ascontiguousarray(evals)
        self._evecs = evecs

        # --- weights
        if weights is None:
            w = np.full(K, 1.0 / K)
        else:
            w = _float_array(weights, "weights")
            if w.shape != (K,):
                raise ValueError(f"weights: expected shape ({K},), got {w.shape}")
            if np.any(w <= 0):
                raise ValueError("weights: every weight must be > 0")
            w = w / w.sum()
            if np.any(w < np.finfo(np.float64).tiny):
                raise ValueError("weights: a weight is too small next to the others (it "
                                 "normalises to 0); drop its component instead")
        self.weights = w
        self._log_weights = np.log(w) - _logsumexp(np.log(w), axis=0)

        # --- component names
        if names is None:
            names = [f"c{k}" for k in range(K)]
        else:
            if isinstance(names, str) or not hasattr(names, "__len__"):
                raise TypeError("names: expected a list of K strings")
            names = list(names)
            if len(names) != K:
                raise ValueError(f"names: expected {K} names, got {len(names)}")
            for nm in names:
                if not isinstance(nm, str):
                    raise TypeError(f"names: expected strings, got {type(nm).__name__}")
            if len(set(names)) != K:
                raise ValueError("names: component names must be distinct")
        self.names = names

        # --- concepts
        if concepts is None:
            concepts = {}
        if not isinstance(concepts, Mapping):
            raise TypeError("concepts: expected a dict name -> list of component indices")
        out = {}
        for cname, members in concepts.items():
            if not isinstance(cname, str):
                raise TypeError(f"concepts: concept names must be strings, got {cname!r}")
            if isinstance(members, (str, bytes)) or _is_int(members):
                members = [members]
            try:
                members = list(members)
            except TypeError:
                raise TypeError(f"concepts[{cname!r}]: expected a list of component indices") \
                    from None
            if not members:
                raise ValueError(f"concepts[{cname!r}]: a concept needs at least one component")
            idx = []
            for m in members:
                if isinstance(m, str):
                    if m not in names:
                        raise ValueError(f"concepts[{cname!r}]: unknown component name {m!r}")
                    idx.append(names.index(m))
                elif _is_int(m):
                    if not 0 <= int(m) < K:
                        raise ValueError(f"concepts[{cname!r}]: component index {int(m)} out of "
                                         f"range [0, {K})")
                    idx.append(int(m))
                else:
                    raise TypeError(f"concepts[{cname!r}]: component indices must be integers, "
                                    f"got {type(m).__name__}")
            out[cname] = sorted(set(idx))
        self.concepts = out
        self.concept_names = list(out)
        mask = np.zeros((len(out), K), dtype=np.uint8)
        for c, cname in enumerate(self.concept_names):
            mask[c, out[cname]] = 1
        self._concept_mask = mask

        for arr in (self.means, self.weights, self._log_weights, self._evals, self._concept_mask):
            arr.flags.writeable = False
        if self._evecs is not None:
            self._evecs.flags.writeable = False
        self._spec = None
        self._cache = {}        # used by ccfg.metrics (reference thresholds)
        self.info = {}

    # ------------------------------------------------------------------ presentation
    def __repr__(self):
        cs = ", ".join(f"{c}={[self.names[k] for k in m]}" for c, m in self.concepts.items())
        return (f"GaussianMixture(K={self.K}, dim={self.dim}, covariances={self._cov_kind}, "
                f"concepts={{{cs}}})")

    @property
    def covariances(self):
        """(K, D, D) covariance matrices (rebuilt from the eigen-decomposition)."""
        if self._evecs is None:
            out = np.zeros((self.K, self.dim, self.dim))
            i = np.arange(self.dim)
            out[:, i, i] = self._evals
            return out
        U, lam = self._evecs, self._evals
        return np.einsum("kij,kj,klj->kil", U, lam, U)

    # ------------------------------------------------------------------ C contract
    def _c_spec(self):
        """The arrays the C core's `ccfg_gmm` consumes (cached)."""
        if self._spec is None:
            self._spec = {
                "means": np.ascontiguousarray(self.means, dtype=np.float64),
                "log_weights": np.ascontiguousarray(self._log_weights, dtype=np.float64),
                "evals": np.ascontiguousarray(self._evals, dtype=np.float64),
                "evecs": None if self._evecs is None
                else np.ascontiguousarray(self._evecs, dtype=np.float64),
                "concept_mask": np.ascontiguousarray(self._concept_mask, dtype=np.uint8),
            }
        return self._spec

    # the model handle ccfg.sample hands to C (see CONTRIBUTING.md, "A model kind"): the C core
    # places the parameters on the run's device
    _runs_in_c = True

    def _c_model(self, device, positive, negatives, null=None):
        """(C model, positive id, negative ids) for one ccfg.sample run."""
        from . import _core
        if null is not None:
            raise ValueError("null: the exact mixture's null is the whole mixture; it cannot "
                             "be replaced")
        pos = -1 if positive is None else self._condition_id(positive, "positive")
        ids = tuple(self._condition_id(v, "negative") for v in negatives)
        return _core.gmm_model(self._c_spec()), pos, ids

    def _condition_id(self, value, argname):
        """Concept id (index in `concept_names`) of a concept name or index."""
        if isinstance(value, str):
            # exact, else the one name equal to it case-insensitively
            name = _v.canonical(value, self.concept_names)
            if name is None:
                raise ValueError(f"{argname}: unknown concept {value!r}; known concepts: "
                                 f"{self.concept_names}")
            return self.concept_names.index(name)
        if _is_int(value):
            v = int(value)
            if 0 <= v < len(self.concept_names):
                return v
            raise ValueError(f"{argname}: concept index {v} out of range; known concepts: "
                             f"{self.concept_names}")
        raise TypeError(f"{argname}: expected a concept name (str) or concept index (int), got "
                        f"{type(value).__name__}")

    def _component_set(self, value, argname):
        """Sorted component indices of a concept (None -> every component)."""
        if value is None:
            return list(range(self.K))
        return self.concepts[self.concept_names[self._condition_id(value, argname)]]

    # ------------------------------------------------------------------ helpers
    def _check_x(self, x, argname="x"):
        arr = _v.as_array(x, argname)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{argname}: expected a real array, got dtype {arr.dtype}")
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"{argname}: expected shape (N, {self.dim}), got {np.shape(x)}")
        if arr.size and arr.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                big = np.max(np.abs(arr)) > _v.FLOAT32_MAX     # (NaN: checked by the caller)
            if big:
                raise ValueError(f"{argname}: values beyond the float32 range (|x| > "
                                 f"{_v.FLOAT32_MAX:.4g}); ccfg computes in float32")
        return arr, single

    def _row_ids(self, concept, n, argname="concept"):
        """Per-row condition ids (int32, -1 = whole mixture) from None, one condition, or N."""
        if concept is None:
            return np.full(n, -1, dtype=np.int32)
        if isinstance(concept, str) or _is_int(concept):
            return np.full(n, self._condition_id(concept, argname), dtype=np.int32)
        try:
            seq = list(concept)
        except TypeError:
            raise TypeError(f"{argname}: expected None, a concept name/index, or one per row") \
                from None
        if len(seq) != n:
            raise ValueError(f"{argname}: {len(seq)} conditions for {n} rows")
        return np.array([-1 if c is None else self._condition_id(c, f"{argname}[{i}]")
                         for i, c in enumerate(seq)], dtype=np.int32)

    def _log_weights_for(self, cid):
        if cid < 0:
            return self._log_weights
        return np.where(self._concept_mask[cid].astype(bool), self._log_weights, -np.inf)

    def _chunk_rows(self, per_row):
        return max(1, _CHUNK_VALUES // max(1, per_row))

    def _component_loglik(self, x, alpha_bar, grad=False):
        """log N(x; a μ_k, a²Σ_k + s² I) for every component, (N, K); with grad also the
        (N, K, D) array of C_k^{-1} (x - a μ_k). x is float64 (N, D) (one chunk)."""
        a2 = float(alpha_bar)
        a, s2 = math.sqrt(a2), 1.0 - a2
        N, K, D = x.shape[0], self.K, self.dim
        ll = np.empty((N, K))
        g = np.empty((N, K, D)) if grad else None
        for k in range(K):
            c = a2 * self._evals[k] + s2                # eigenvalues of C_k
            y = x - a * self.means[k]
            z = y if self._evecs is None else y @ self._evecs[k]
            zc = z / c
            ll[:, k] = -0.5 * (D * _LOG_2PI + np.sum(np.log(c)) + np.einsum("nd,nd->n", z, zc))
            if grad:
                g[:, k, :] = zc if self._evecs is None else zc @ self._evecs[k].T
        return ll, g

    # ------------------------------------------------------------------ exact NumPy methods
    def log_prob(self, x, concept=None):
        """Data log-density log p(x) (float64, (N,)); a concept = the mixture of its components
        with renormalised weights."""
        x, single = self._check_x(x)
        x = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("x: contains non-finite values")
        cid = -1 if concept is None else self._condition_id(concept, "concept")
        lw = self._log_weights_for(cid)
        lw = lw - _logsumexp(lw, axis=0)
        out = np.empty(x.shape[0])
        step = self._chunk_rows(self.K * self.dim)
        for i in range(0, x.shape[0], step):
            ll, _ = self._component_loglik(x[i:i + step], 1.0)
            out[i:i + step] = _logsumexp(ll + lw, axis=1)
        return out[0] if single else out

    def posterior(self, x):
        """Responsibilities p(k | x) under the data density, (N, K) float64."""
        x, single = self._check_x(x)
        x = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("x: contains non-finite values")
        out = np.empty((x.shape[0], self.K))
        step = self._chunk_rows(self.K * self.dim)
        for i in range(0, x.shape[0], step):
            ll, _ = self._component_loglik(x[i:i + step], 1.0)
            t = ll + self._log_weights
            out[i:i + step] = np.exp(t - _logsumexp(t, axis=1)[:, None])
        return out[0] if single else out

    def _sample_components(self, n, seed, comps):
        """n exact samples from the sub-mixture of `comps` (renormalised weights)."""
        rng = np.random.default_rng(seed)
        comps = np.asarray(comps, dtype=np.int64)
        w = self.weights[comps] / self.weights[comps].sum()
        labels = comps[rng.choice(len(comps), size=n, p=w)]
        z = rng.standard_normal((n, self.dim))
        z *= np.sqrt(self._evals[labels])
        if self._evecs is not None:
            z = np.einsum("nij,nj->ni", self._evecs[labels], z)
        return self.means[labels] + z, labels

    def sample_data(self, n, seed=0, concept=None, return_labels=False):
        """`n` exact samples of the data distribution (or of a concept), float64 (n, D).
        With ``return_labels`` also the (n,) component of each sample."""
        if not _is_int(n) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        comps = self._component_set(concept, "concept")
        x, labels = self._sample_components(int(n), seed, comps)
        return (x, labels) if return_labels else x

    def _check_alpha_bar(self, alpha_bar):
        if isinstance(alpha_bar, (bool, np.bool_)) or not isinstance(alpha_bar, (numbers.Real,
                                                                                np.floating,
                                                                                np.integer)):
            if not (isinstance(alpha_bar, np.ndarray) and alpha_bar.ndim == 0):
                raise TypeError(f"alpha_bar: expected a real number, got "
                                f"{type(alpha_bar).__name__}")
        ab = float(alpha_bar)
        if not (math.isfinite(ab) and 0.0 <= ab <= 1.0):
            raise ValueError(f"alpha_bar: expected 0 <= alpha_bar <= 1, got {ab}")
        return ab

    def _eps_numpy(self, x, alpha_bar, concept=None):
        """Exact noise prediction in float64 (independent reference of the C core)."""
        ab = self._check_alpha_bar(alpha_bar)
        x, single = self._check_x(x)
        x = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("x: contains non-finite values")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = self._eps_ids(x, ab, self._row_ids(concept, x.shape[0]), single)
        if not _v.all_finite(out):
            raise FloatingPointError(
                f"eps: the exact noise prediction at alpha_bar={ab} overflows (x, the means or "
                "the inverse variances are too large)")
        return out

    def _eps_ids(self, x, ab, ids, single=False):
        s = math.sqrt(1.0 - ab)
        out = np.empty_like(x)
        step = self._chunk_rows(2 * self.K * self.dim)
        for cid in np.unique(ids):
            rows = np.nonzero(ids == cid)[0]
            lw = self._log_weights_for(int(cid))
            for i in range(0, len(rows), step):
                r = rows[i:i + step]
                ll, g = self._component_loglik(x[r], ab, grad=True)
                t = ll + lw
                resp = np.exp(t - _logsumexp(t, axis=1)[:, None])
                out[r] = s * np.einsum("nk,nkd->nd", resp, g)
        return out[0] if single else out

    def eps(self, x, alpha_bar, concept=None):
        """Exact noise prediction at level ā, float32 (N, D) (or (D,) for one vector).

        ``concept``: None (whole mixture), a concept name or index, or one of those per row.
        Runs in the C core (`ccfg._core.gmm_eps`); falls back to NumPy when the core lacks it.
        """
        ab = self._check_alpha_bar(alpha_bar)
        arr, single = self._check_x(x)
        ids = self._row_ids(concept, arr.shape[0])
        fn = None
        try:
            from . import _core
            fn = getattr(_core, "gmm_eps", None)
        except ImportError:
            fn = None
        if ab == 0.0:          # pure noise: eps = x exactly (the C core takes 0 < ā <= 1)
            xf = np.array(arr, dtype=np.float32)
            if not np.all(np.isfinite(xf)):
                raise ValueError("x: contains non-finite values")
            out = xf
        elif fn is None:
            xf = arr.astype(np.float64)
            if not np.all(np.isfinite(xf)):
                raise ValueError("x: contains non-finite values")
            out = self._eps_ids(xf, ab, ids).astype(np.float32)
        else:
            xf = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(xf)):
                raise ValueError("x: contains non-finite values")
            out = fn(self._c_spec(), xf, ab, ids)
        if not _v.all_finite(out):
            raise FloatingPointError(
                f"eps: the exact noise prediction at alpha_bar={ab} overflows float32 (x, the "
                "means or the inverse variances are too large)")
        return out[0] if single else out

    # ------------------------------------------------------------------ presets
    @classmethod
    def toy_2d(cls):
        """2-D mixture of 7 isotropic components with overlapping concepts.

        ``A = {A1, A2, A3}`` (the left arc), ``B = {A3, B1}`` (A3 is shared; B1 sits right of it,
        in the middle), ``C = {C1, C2, C3}`` (neither A nor B, the right arc). The exact target of
        "A but not B" is {A1, A2}. Equal weights; isotropic variances 0.06-0.12; nearest pairs
        about 6 standard deviations apart (0.05% of exact samples are most likely under another
        component than their own).
        """
        names = ["A1", "A2", "A3", "B1", "C1", "C2", "C3"]
        means = np.array([
            [-2.2, 1.7],    # A1
            [-2.2, -1.7],   # A2
            [-0.9, 0.0],    # A3  (in A and in B)
            [0.9, 0.0],     # B1
            [2.2, 1.9],     # C1
            [2.2, -1.9],    # C2
            [2.8, 0.0],     # C3
        ])
        variances = np.array([0.12, 0.12, 0.08, 0.08, 0.08, 0.08, 0.06])
        concepts = {"A": ["A1", "A2", "A3"], "B": ["A3", "B1"], "C": ["C1", "C2", "C3"]}
        m = cls(means, variances, concepts=concepts, names=names)
        m.info = {"preset": "toy2d"}
        return m

    @classmethod
    def high_dim(cls, d=64, seed=0, delta=0.25, var=0.1):
        """d-dimensional mixture with the concept structure of `toy_2d` (7 components).

        Means ``μ_k = (delta / sqrt(2)) h_k`` with ``h_k`` mutually orthogonal ±1 vectors (rows of a
        Sylvester–Hadamard matrix with random column signs when d is a power of two, random signs
        otherwise). Every pair of components is then at ``‖μ_j - μ_k‖² = d delta²`` exactly: the
        root-mean-square separation per coordinate is ``delta`` whatever d, so ``‖Δμ‖²`` grows
        with d as in docs/methods.md §3.6 (delta = 0.25: ‖Δμ‖² = 4 at d=64, 64 at d=1024), which is
        what makes a summed-norm τ dimension dependent. Isotropic variance ``var`` per coordinate
        (0.1 keeps components well separated at d=64: ‖Δμ‖/σ = 6.3; ``var=1`` is the exact §3.6
        setting). Pass ``delta = c / sqrt(d)`` to hold ‖Δμ‖² = c² fixed instead. Equal weights;
        concepts A = {A1, A2, A3}, B = {A3, B1}, C = {C1, C2, C3}; `seed` picks the rows/signs.
        """
        if not _is_int(d) or d < 8:
            raise ValueError(f"d: expected an integer >= 8, got {d!r}")
        d = int(d)
        for nm, v in (("delta", delta), ("var", var)):
            if not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
                raise ValueError(f"{nm}: expected a positive number, got {v!r}")
        names = ["A1", "A2", "A3", "B1", "C1", "C2", "C3"]
        K = len(names)
        rng = np.random.default_rng(seed)
        if d & (d - 1) == 0:
            H = np.ones((1, 1))
            while H.shape[0] < d:
                H = np.block([[H, H], [H, -H]])
            rows = rng.choice(d, size=K, replace=False)
            signs = rng.choice([-1.0, 1.0], size=d)
            h = H[rows] * signs
            layout = "hadamard"
        else:
            h = rng.choice([-1.0, 1.0], size=(K, d))
            layout = "random_signs"
        means = (delta / math.sqrt(2.0)) * h
        concepts = {"A": ["A1", "A2", "A3"], "B": ["A3", "B1"], "C": ["C1", "C2", "C3"]}
        m = cls(means, np.full(K, float(var)), concepts=concepts, names=names)
        m.info = {"preset": f"gmm{d}", "d": d, "seed": seed, "delta": float(delta),
                  "var": float(var), "sq_separation": float(np.sum((means[0] - means[1]) ** 2)),
                  "layout": layout}
        return m


class PythonModel:
    """Any callable as a model: ``fn(x, t, cond)`` with ``x`` float32 ``(B, *shape)``, ``t`` float64
    ``(B,)`` model timesteps and ``cond`` a list of B conditions (None = unconditional); returns an
    array ``(B, *shape)`` of the model's ``prediction_type`` ("epsilon", "v_prediction" or
    "sample")."""

    def __init__(self, fn, shape, prediction_type="epsilon", scheduler=None):
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        if _is_int(shape):
            shape = (shape,)
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(f"shape: expected a tuple of positive integers, got {shape!r}") \
                from None
        if not shape or not all(_is_int(s) for s in shape):
            raise TypeError(f"shape: expected a tuple of positive integers, got {shape!r}")
        if any(s < 1 for s in shape):
            raise ValueError(f"shape: every dimension must be >= 1, got {shape!r}")
        prediction_type = _v.name(prediction_type, "prediction_type", _PREDICTION_TYPES)
        self.fn = fn
        self.shape = tuple(int(s) for s in shape)
        self.dim = int(np.prod(self.shape))
        self.prediction_type = prediction_type
        self.scheduler = scheduler

    def __call__(self, x, t, cond):
        return self.fn(x, t, cond)

    # evaluated on the host: device="auto" keeps its runs on the CPU backend (a GPU would pay two
    # transfers per evaluation for a few vector ops)
    _runs_in_c = False

    def _c_model(self, device, positive, negatives, null=None):
        """(C model, positive id, negative ids) for one ccfg.sample run: the condition values
        are numbered 0.. in order (positive first) and handed back to fn by that number; the
        unconditional rows get ``null`` (None unless given)."""
        from . import _core
        values = ([] if positive is None else [positive]) + list(negatives)
        pos = -1 if positive is None else 0
        ids = tuple(range(len(values) - len(negatives), len(values)))
        fn, shape = self.fn, self.shape

        def call(x, t, alpha_bar, cond):
            rows = x.shape[0]
            conds = [null if c < 0 else values[c] for c in cond.tolist()]
            out = _v.as_array(fn(x.reshape((rows,) + shape), np.full(rows, t), conds),
                              "the model's output")
            if out.dtype.kind not in "fiu":
                raise TypeError(f"the model returned dtype {out.dtype}, expected real numbers")
            if out.shape != (rows,) + shape:
                raise ValueError(f"the model returned shape {out.shape}, expected "
                                 f"{(rows,) + shape}")
            return np.ascontiguousarray(out, dtype=np.float32).reshape(rows, -1)

        return _core.python_model(call), pos, ids

    def __repr__(self):
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return (f"PythonModel({name}, shape={self.shape}, "
                f"prediction_type={self.prediction_type!r})")


PRESETS = {
    "toy2d": lambda: GaussianMixture.toy_2d(),
    "gmm64": lambda: GaussianMixture.high_dim(d=64),
    "gmm1024": lambda: GaussianMixture.high_dim(d=1024),
}


FASHION_MNIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                                 "fashion-mnist")


def _load_fashion_mnist(path=FASHION_MNIST_DIR):
    """The concept-conditional Fashion-MNIST UNet (default: the shipped one, trained by
    tools/train_fashion_mnist.py); conditions are the concept names of ccfg.data."""
    if not os.path.isfile(os.path.join(path, "unet", "config.json")):
        raise FileNotFoundError(f"the Fashion-MNIST model is not installed at {path} (it ships "
                                "with the package; reinstall ccfg)")
    return UNet.from_pretrained(path, concepts=list(data.concepts()))


def load(name):
    """A packaged model by name: "toy2d", "gmm64", "gmm1024" (exact mixtures) or "fashion-mnist"
    (the shipped concept-conditional UNet, 32x32x1)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    name = _v.canonical(name, ["fashion-mnist", *PRESETS]) or name
    if name == "fashion-mnist":
        model = _load_fashion_mnist()
    else:
        try:
            factory = PRESETS[name]
        except KeyError:
            raise ValueError(f"name: unknown model {name!r}; known models: "
                             f"{sorted(PRESETS) + ['fashion-mnist']}") \
                from None
        model = factory()
    model._ccfg_preset = name      # ccfg.sweep sends it to workers by this name
    return model

