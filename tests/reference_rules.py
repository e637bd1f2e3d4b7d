"""Independent NumPy reference for every ccfg guidance rule.

Written only from the specification (``docs/methods.md`` §1-§6, §10c, and ``docs/api.md``),
never from the C core. Everything is computed in float64. Conventions:

- ``eps_u``, ``eps_p`` are arrays of shape ``(N, ...)``; ``eps_p=None`` means ``eps_p = eps_u``.
- ``eps_n`` is None, one array, or a list of arrays; several negatives each contribute their own
  term (own state for stateful rules) and the terms add.
- Norms / dots reduce per sample over all non-batch dimensions (Perp-Neg ``batch_global``: whole batch).
- ``active=False`` means "outside ``negative_window``": the rule acts as if there were no negative.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "as_neg_list", "in_window", "sigmoid",
    "cfg", "negative_prompt", "negated_cfg", "composable_not", "perp_neg", "ccfg_rule",
    "SLD_PRESETS", "SLDRef", "DNGRef", "ddim_mean", "apg", "CCFGScheduleRef",
]


# ----------------------------------------------------------------------------------------- helpers
def _f64(a):
    return np.array(a, dtype=np.float64, copy=True)


def _prep(eps_u, eps_p, eps_n):
    u = _f64(eps_u)
    p = u.copy() if eps_p is None else _f64(eps_p)
    ns = [_f64(n) for n in as_neg_list(eps_n)]
    return u, p, ns


def as_neg_list(eps_n):
    if eps_n is None:
        return []
    if isinstance(eps_n, (list, tuple)):
        return list(eps_n)
    return [eps_n]


def _sq(a):
    """Per-sample squared norm, shape (N, 1, 1, ...) for broadcasting."""
    n = a.shape[0]
    s = np.sum(a.reshape(n, -1) ** 2, axis=1)
    return s.reshape((n,) + (1,) * (a.ndim - 1))


def _dot(a, b):
    n = a.shape[0]
    s = np.sum(a.reshape(n, -1) * b.reshape(n, -1), axis=1)
    return s.reshape((n,) + (1,) * (a.ndim - 1))


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def in_window(window, step, num_steps):
    """api.md: step i of N is inside when int(start*N) <= i < int(stop*N)."""
    start, stop = window
    if step is None or num_steps is None:
        return True
    return int(start * num_steps) <= step < int(stop * num_steps)


# ------------------------------------------------------------------------------- stateless rules
def cfg(eps_u, eps_p, eps_n=None, scale=7.5):
    """§2.1: eps_u + w D_p (negatives ignored)."""
    u, p, _ = _prep(eps_u, eps_p, None)
    return u + scale * (p - u)


def negative_prompt(eps_u, eps_p, eps_n=None, scale=7.5, active=True):
    """§2.2 / api: eps_u + w D_p - (w-1) Σ_j D_n_j (= eps_n + w (eps_p - eps_n) for one negative)."""
    u, p, ns = _prep(eps_u, eps_p, eps_n)
    out = u + scale * (p - u)
    if active:
        for n in ns:
            out = out - (scale - 1.0) * (n - u)
    return out


def negated_cfg(eps_u, eps_p, eps_n=None, scale=7.5, negative_scale=None, active=True):
    """§2.3: eps_u + w D_p - w_n Σ_j D_n_j, w_n = negative_scale or scale."""
    u, p, ns = _prep(eps_u, eps_p, eps_n)
    wn = scale if negative_scale is None else negative_scale
    out = u + scale * (p - u)
    if active:
        for n in ns:
            out = out - wn * (n - u)
    return out


def composable_not(eps_u, eps_p, eps_n=None, scale=7.5, active=True):
    """§2.3: eps_u + w (eps_p - eps_n) == NegatedCFG(w, w)."""
    return negated_cfg(eps_u, eps_p, eps_n, scale, scale, active)


def perp_neg(eps_u, eps_p, eps_n=None, scale=7.5, negative_scale=1.0, batch_global=False,
             active=True):
    """§5: eps_u + w (D_p - b Σ_j perp(D_n_j, D_p)); perp(a,b) = a - <a,b>/|b|^2 b.

    Per sample, or over the whole batch when batch_global. |b|^2 == 0 -> perp(a, b) = a.
    """
    u, p, ns = _prep(eps_u, eps_p, eps_n)
    dp = p - u
    out = u + scale * dp
    if not active:
        return out
    for n in ns:
        dn = n - u
        if batch_global:
            bb = float(np.sum(dp * dp))
            ab = float(np.sum(dn * dp))
            coef = 0.0 if bb == 0.0 else ab / bb
            perp = dn - coef * dp
        else:
            bb = _sq(dp)
            ab = _dot(dn, dp)
            safe = np.where(bb == 0.0, 1.0, bb)
            coef = np.where(bb == 0.0, 0.0, ab / safe)
            perp = dn - coef * dp
        out = out - scale * negative_scale * perp
    return out


def ccfg_rule(eps_u, eps_p, eps_n=None, scale=7.5, tau=0.2, tau_reduce="sum",
              negative_scale=None, naive_positive=False, active=True, return_lambdas=False):
    """§3.1: eps_u + w λ+ D_p - w_n Σ_j λ-_j D_n_j,

    λ+ = 2σ(τ |D_p|^2) (1 if naive_positive), λ- = 2σ(-τ |D_n|^2);
    tau_reduce='mean' divides the squared norms by the number of elements per sample.
    """
    u, p, ns = _prep(eps_u, eps_p, eps_n)
    wn = scale if negative_scale is None else negative_scale
    per = int(np.prod(u.shape[1:])) if u.ndim > 1 else 1
    div = float(per) if tau_reduce == "mean" else 1.0
    dp = p - u
    lam_p = np.ones((u.shape[0],) + (1,) * (u.ndim - 1)) if naive_positive \
        else 2.0 * sigmoid(tau * _sq(dp) / div)
    out = u + scale * lam_p * dp
    lam_ns = []
    if active:
        for n in ns:
            dn = n - u
            lam_n = 2.0 * sigmoid(-tau * _sq(dn) / div)
            lam_ns.append(lam_n)
            out = out - wn * lam_n * dn
    if return_lambdas:
        return out, lam_p, lam_ns
    return out


# -------------------------------------------------------------------------------------- SLD (§6)
# (warm-up δ steps, s_S, threshold λ, s_m, β_m)
SLD_PRESETS = {
    "weak": (15, 20.0, 0.0, 0.0, 0.0),
    "medium": (10, 1000.0, 0.01, 0.3, 0.4),
    "strong": (7, 2000.0, 0.025, 0.5, 0.7),
    "max": (0, 5000.0, 1.0, 0.5, 0.7),
}


class SLDRef:
    """Safe Latent Diffusion with momentum per sample and per negative (docs/methods.md §6, §10c).

    Per step i (i = ``step`` if given, else the number of previous calls):
      μ   = min(s_S |eps_p - eps_S|, 1) elementwise, 0 where (eps_p - eps_S) >= λ
      γ   = μ ⊙ (eps_S - eps_u) + s_m ν
      ν   ← β_m ν + (1 - β_m) γ              (every step, warm-up included)
      G   = D_p - Σ_j γ_j if i >= δ else D_p
      eps = eps_u + w G
    Safety guidance is off when s_S < 1. Outside the window: no use, no update of ν.
    """

    def __init__(self, scale=7.5, preset="medium", warmup=None, safety_scale=None, threshold=None,
                 momentum_scale=None, momentum_beta=None, negative_window=(0.0, 1.0)):
        d, s_s, lam, s_m, b_m = SLD_PRESETS[preset]
        self.scale = scale
        self.warmup = d if warmup is None else warmup
        self.s_s = s_s if safety_scale is None else safety_scale
        self.lam = lam if threshold is None else threshold
        self.s_m = s_m if momentum_scale is None else momentum_scale
        self.b_m = b_m if momentum_beta is None else momentum_beta
        self.window = negative_window
        self.nu = None
        self.count = 0

    def __call__(self, eps_u, eps_p, eps_n=None, step=None, num_steps=None):
        u, p, ns = _prep(eps_u, eps_p, eps_n)
        i = self.count if step is None else step
        self.count += 1
        dp = p - u
        g = dp.copy()
        active = in_window(self.window, i, num_steps) and self.s_s >= 1.0
        if active and ns:
            if self.nu is None:
                self.nu = [np.zeros_like(u) for _ in ns]
            for j, n in enumerate(ns):
                diff = p - n
                mu = np.minimum(self.s_s * np.abs(diff), 1.0)
                mu = np.where(diff >= self.lam, 0.0, mu)
                gamma = mu * (n - u) + self.s_m * self.nu[j]
                self.nu[j] = self.b_m * self.nu[j] + (1.0 - self.b_m) * gamma
                if i >= self.warmup:
                    g = g - gamma
        return u + self.scale * g


# -------------------------------------------------------------------------------------- DNG (§4)
def ddim_mean(x_t, eps, alpha_bar, alpha_bar_prev, eta):
    """Mean of the DDIM(eta) transition with noise prediction eps, and its variance s^2."""
    a, ap = float(alpha_bar), float(alpha_bar_prev)
    beta_tilde = (1.0 - ap) / (1.0 - a) * (1.0 - a / ap)
    s2 = eta * eta * beta_tilde
    mu = math.sqrt(ap) / math.sqrt(a) * (x_t - math.sqrt(1.0 - a) * eps) \
        + math.sqrt(max(1.0 - ap - s2, 0.0)) * eps
    return mu, s2


class DNGRef:
    """Dynamic Negative Guidance with a posterior p per sample and per negative.

    guide: eps = eps_u + w D_p - λ0 Σ_j p_j/(1-p_j) D_n_j, p from the previous observe (starts at prior).
    observe: p ← clamp(p · exp((-T (|x'-μ_n|^2 - |x'-μ_u|^2) + δ) / (2 var)), p_min, p_max),
      μ_c the DDIM(eta) transition mean with eps_c, var = eta^2 β̃, or 1 - ā/ā' when eta = 0.
    """

    def __init__(self, scale=7.5, negative_scale=None, prior=0.01, temperature=0.2, offset=2e-4,
                 p_min=1e-6, p_max=0.8, negative_window=(0.0, 1.0)):
        self.scale = scale
        self.lam0 = scale if negative_scale is None else negative_scale
        self.prior = prior
        self.T = temperature
        self.delta = offset
        self.p_min = p_min
        self.p_max = p_max
        self.window = negative_window
        self.p = None  # list over negatives of arrays (N,)
        self.count = 0

    def _ensure(self, n_batch, k):
        if self.p is None:
            self.p = [np.full(n_batch, float(self.prior)) for _ in range(k)]

    def __call__(self, eps_u, eps_p, eps_n=None, step=None, num_steps=None):
        u, p, ns = _prep(eps_u, eps_p, eps_n)
        i = self.count if step is None else step
        self.count += 1
        out = u + self.scale * (p - u)
        if ns and in_window(self.window, i, num_steps):
            self._ensure(u.shape[0], len(ns))
            shp = (u.shape[0],) + (1,) * (u.ndim - 1)
            for j, n in enumerate(ns):
                pj = self.p[j].reshape(shp)
                out = out - self.lam0 * pj / (1.0 - pj) * (n - u)
        return out

    def observe(self, x_t, x_prev, eps_u, eps_n, alpha_bar, alpha_bar_prev, eta=1.0):
        x_t, x_prev, u = _f64(x_t), _f64(x_prev), _f64(eps_u)
        ns = [_f64(n) for n in as_neg_list(eps_n)]
        self._ensure(u.shape[0], len(ns))
        mu_u, s2 = ddim_mean(x_t, u, alpha_bar, alpha_bar_prev, eta)
        var = s2 if eta != 0 else 1.0 - float(alpha_bar) / float(alpha_bar_prev)
        nb = u.shape[0]
        du = np.sum((x_prev - mu_u).reshape(nb, -1) ** 2, axis=1)
        for j, n in enumerate(ns):
            mu_n, _ = ddim_mean(x_t, n, alpha_bar, alpha_bar_prev, eta)
            dn = np.sum((x_prev - mu_n).reshape(nb, -1) ** 2, axis=1)
            expo = (-self.T * (dn - du) + self.delta) / (2.0 * var)
            with np.errstate(over="ignore"):
                newp = self.p[j] * np.exp(expo)
            self.p[j] = np.clip(newp, self.p_min, self.p_max)
        return self


# ------------------------------------------------------------------------------------------- APG
def apg(eps_u, eps_p, scale=7.5, eta=0.0, norm_threshold=0.0):
    """Adaptive Projected Guidance, Sadat, Hilliges & Weber (arXiv 2410.02416), Algorithm 1 without
    momentum, on noise predictions: D = eps_p - eps_u; if r > 0, D *= min(1, r / ||D||);
    D_par = <D, v> v with v = eps_p / ||eps_p|| (v = 0 when eps_p = 0); D_orth = D - D_par;
    result = eps_p + (w - 1) (D_orth + eta D_par). Per sample, in float64."""
    u, p, _ = _prep(eps_u, eps_p, None)
    d = p - u
    if norm_threshold > 0:
        norm = np.sqrt(_sq(d))
        with np.errstate(divide="ignore"):
            d = d * np.minimum(1.0, norm_threshold / norm)
    pnorm = np.sqrt(_sq(p))
    v = np.divide(p, pnorm, out=np.zeros_like(p), where=pnorm > 0)
    d_par = _dot(d, v) * v
    d_orth = d - d_par
    return p + (scale - 1.0) * (d_orth + eta * d_par)


# --------------------------------------------------------------------- CCFG τ schedules (§3.7)
class CCFGScheduleRef:
    """CCFG with a τ schedule (docs/methods.md §3.7), one τ_t per step, then the official rule
    ``ccfg_rule`` with ``tau=τ_t``. Written from the derivations, not from the C:

    - "dim":         τ_t = s / sqrt(N)                         (N elements per sample)
    - "nce":         τ_t = s / (2 (1 - ā_t))
    - "pilot":       τ_0 = s · logit⁻¹-solved so that λ- = 2σ(-τ m) = 1/2 at m, the median of
                     ‖D_n‖² over samples and negatives at the first call with negatives; frozen
    - "pilot_noise": τ_0 as for pilot, then τ_t = τ_0 ā_0(1-ā_0) / (ā_t(1-ā_t))
    - "batch":       the pilot's τ computed again at every call (no state)
    A call without active negatives calibrates (for that call only) on the median ‖D_p‖².
    ``update=False`` (Heun's corrector) never calibrates."""

    def __init__(self, schedule, scale=7.5, tau_scale=1.0, negative_scale=None,
                 naive_positive=False):
        self.schedule, self.scale, self.s = schedule, scale, tau_scale
        self.negative_scale, self.naive_positive = negative_scale, naive_positive
        self.tau0 = None
        self.ab0 = None

    def _calibrate(self, u, p, ns):
        sq = [_sq(n - u).ravel() for n in ns] if ns else [_sq(p - u).ravel()]
        m = float(np.median(np.concatenate(sq)))
        # solve 2σ(-τ m) = 1/2, i.e. σ(τ m) = 3/4: τ m = log(0.75 / 0.25)
        return self.s * math.log(0.75 / 0.25) / m if m > 0 else 0.0

    def tau_t(self, eps_u, eps_p, eps_n=None, alpha_bar=None, active=True, update=True):
        u, p, ns = _prep(eps_u, eps_p, eps_n)
        ns = ns if active else []
        N = int(np.prod(u.shape[1:]))
        sch = self.schedule
        if sch == "dim":
            return self.s / math.sqrt(N)
        if sch == "nce":
            return self.s / (2.0 * (1.0 - alpha_bar))
        if sch == "batch" or (sch in ("pilot", "pilot_noise") and self.tau0 is None):
            tau = self._calibrate(u, p, ns)
            if sch != "batch" and update and ns and tau > 0:
                self.tau0, self.ab0 = tau, alpha_bar
            return tau         # at the pilot call itself ā_t = ā_0: no rescaling
        if sch == "pilot":
            return self.tau0
        if sch == "pilot_noise":
            return self.tau0 * self.ab0 * (1 - self.ab0) / (alpha_bar * (1 - alpha_bar))
        raise ValueError(sch)

    def __call__(self, eps_u, eps_p, eps_n=None, alpha_bar=None, active=True, update=True):
        tau = self.tau_t(eps_u, eps_p, eps_n, alpha_bar, active, update)
        return ccfg_rule(eps_u, eps_p, eps_n if active else None, scale=self.scale, tau=tau,
                         negative_scale=self.negative_scale, naive_positive=self.naive_positive)
