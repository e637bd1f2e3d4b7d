"""Guidance rules: one small class per rule, holding its parameters.

The maths runs in C (``csrc/guidance.c``); these classes validate parameters, print a readable
repr for ablation records, and hand the C core a flat parameter tuple. Formulas and defaults:
``docs/api.md`` and ``docs/methods.md``.
"""
from __future__ import annotations

from . import _validate as _v

__all__ = ["Rule", "CFG", "NegativePrompt", "NegatedCFG", "ComposableNot", "PerpNeg", "SLD",
           "DNG", "CCFG", "PythonRule", "get", "NAMES"]

# must match ccfg_rule_kind in csrc/ccfg.h
_NONE, _CFG, _NP, _NEGATED, _PERP, _SLD, _DNG, _CCFG, _PYTHON = range(9)

# Safe Latent Diffusion presets (docs/methods.md §6): warm-up steps, s_S, threshold λ, s_m, β_m
SLD_PRESETS = {
    "weak": (15, 20.0, 0.0, 0.0, 0.0),
    "medium": (10, 1000.0, 0.01, 0.3, 0.4),
    "strong": (7, 2000.0, 0.025, 0.5, 0.7),
    "max": (0, 5000.0, 1.0, 0.5, 0.7),
}


class Rule:
    """Base class: a guidance rule on noise predictions (see ``ccfg.guide``)."""

    _kind = _NONE
    stateful = False
    name = "none"

    def __init__(self, scale=7.5, negative_window=None):
        self.scale = _v.real(scale, "scale")
        self.negative_window = _v.window(negative_window)

    # parameters shown in repr and compared by ==, in order
    def _params(self):
        return {"scale": self.scale}

    def __repr__(self):
        params = dict(self._params())
        if self.negative_window != (0.0, 1.0):
            params["negative_window"] = self.negative_window
        body = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({body})"

    def __eq__(self, other):
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))

    @property
    def effective_negative_scale(self):
        ns = getattr(self, "negative_scale", None)
        return self.scale if ns is None else ns

    def _spec(self):
        """Flat parameter tuple for the C core (layout of parse_rule in csrc/module.c)."""
        g = self.__dict__.get
        sld = g("_sld", (0, 0.0, 0.0, 0.0, 0.0))
        return (self._kind, self.scale, float(self.effective_negative_scale),
                self.negative_window[0], self.negative_window[1],
                float(g("tau", 0.0)), g("tau_reduce", "sum") == "mean",
                bool(g("naive_positive", False)), bool(g("batch_global", False)),
                int(sld[0]), float(sld[1]), float(sld[2]), float(sld[3]), float(sld[4]),
                float(g("prior", 0.5)), float(g("temperature", 0.0)), float(g("offset", 0.0)),
                float(g("p_min", 1e-6)), float(g("p_max", 0.99)), g("fn", None))


class _NoGuidance(Rule):
    """The plain positive prediction (or the unconditional one when there is no positive)."""

    name = "none"

    def __init__(self):
        super().__init__(1.0)

    def _params(self):
        return {}


class CFG(Rule):
    """Classifier-free guidance, ``eps_u + w (eps_p - eps_u)``; negatives are ignored."""

    _kind = _CFG
    name = "cfg"


class NegativePrompt(Rule):
    """The negative replaces the null prediction: ``eps_n + w (eps_p - eps_n)`` (2 NFE/step)."""

    _kind = _NP
    name = "negative_prompt"


class NegatedCFG(Rule):
    """Negated CFG: ``eps_u + w D_p - w_n D_n`` (signed guidance when ``negative_scale`` differs)."""

    _kind = _NEGATED
    name = "negated_cfg"

    def __init__(self, scale=7.5, negative_scale=None, negative_window=None):
        super().__init__(scale, negative_window)
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)

    def _params(self):
        return {"scale": self.scale, "negative_scale": self.negative_scale}


class ComposableNot(Rule):
    """Composable Diffusion's NOT: ``eps_u + w (eps_p - eps_n)``, i.e. negated CFG with w_n = w."""

    _kind = _NEGATED
    name = "composable_not"


class PerpNeg(Rule):
    """Perp-Neg: ``eps_u + w (D_p - b perp(D_n, D_p))``, projection per sample unless
    ``batch_global=True`` (the official/ComfyUI behaviour: one projection over the batch)."""

    _kind = _PERP
    name = "perp_neg"

    def __init__(self, scale=7.5, negative_scale=1.0, batch_global=False, negative_window=None):
        super().__init__(scale, negative_window)
        self.negative_scale = _v.real(negative_scale, "negative_scale")
        if not isinstance(batch_global, bool):
            raise TypeError("batch_global must be a bool")
        self.batch_global = batch_global

    def _params(self):
        return {"scale": self.scale, "negative_scale": self.negative_scale,
                "batch_global": self.batch_global}


class SLD(Rule):
    """Safe Latent Diffusion: elementwise-gated safety term with momentum (stateful)."""

    _kind = _SLD
    name = "sld"
    stateful = True

    def __init__(self, scale=7.5, preset="medium", warmup=None, safety_scale=None, threshold=None,
                 momentum_scale=None, momentum_beta=None, negative_window=None):
        super().__init__(scale, negative_window)
        if not isinstance(preset, str):
            raise TypeError("preset must be a string")
        if preset not in SLD_PRESETS:
            raise ValueError(f"preset must be one of {sorted(SLD_PRESETS)}, got {preset!r}")
        self.preset = preset
        p = SLD_PRESETS[preset]
        self.warmup = p[0] if warmup is None else _v.integer(warmup, "warmup", low=0)
        self.safety_scale = p[1] if safety_scale is None else _v.real(
            safety_scale, "safety_scale", low=0.0)
        self.threshold = p[2] if threshold is None else _v.real(threshold, "threshold")
        self.momentum_scale = p[3] if momentum_scale is None else _v.real(
            momentum_scale, "momentum_scale")
        self.momentum_beta = p[4] if momentum_beta is None else _v.real(
            momentum_beta, "momentum_beta", low=0.0, high=1.0)
        self._sld = (self.warmup, self.safety_scale, self.threshold, self.momentum_scale,
                     self.momentum_beta)

    def _params(self):
        return {"scale": self.scale, "preset": self.preset, "warmup": self.warmup,
                "safety_scale": self.safety_scale, "threshold": self.threshold,
                "momentum_scale": self.momentum_scale, "momentum_beta": self.momentum_beta}


class DNG(Rule):
    """Dynamic Negative Guidance: negative scale ``λ0 p/(1-p)`` from a per-sample posterior ``p``
    that the sample belongs to the negative, updated from each transition (stateful)."""

    _kind = _DNG
    name = "dng"
    stateful = True

    def __init__(self, scale=7.5, negative_scale=None, prior=0.01, temperature=0.2, offset=2e-4,
                 p_min=1e-6, p_max=0.8, negative_window=None):
        super().__init__(scale, negative_window)
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)
        self.prior = _v.real(prior, "prior", low=0.0, high=1.0, low_open=True)
        if self.prior >= 1.0:
            raise ValueError(f"prior must be < 1, got {self.prior}")
        self.temperature = _v.real(temperature, "temperature", low=0.0)
        self.offset = _v.real(offset, "offset")
        self.p_min = _v.real(p_min, "p_min", low=0.0, low_open=True)
        self.p_max = _v.real(p_max, "p_max", high=1.0)
        if self.p_max >= 1.0:
            raise ValueError(f"p_max must be < 1, got {self.p_max}")
        if not self.p_min <= self.prior <= self.p_max:
            raise ValueError(f"prior {self.prior} must lie in [p_min, p_max] = "
                             f"[{self.p_min}, {self.p_max}]")

    def _params(self):
        return {"scale": self.scale, "negative_scale": self.negative_scale, "prior": self.prior,
                "temperature": self.temperature, "offset": self.offset, "p_min": self.p_min,
                "p_max": self.p_max}


class CCFG(Rule):
    """Contrastive CFG: ``eps_u + w λ+ D_p - w_n λ- D_n`` with ``λ+ = 2σ(τ‖D_p‖²)``,
    ``λ- = 2σ(-τ‖D_n‖²)`` per sample. ``tau_reduce="sum"`` is the official rule; ``"mean"``
    divides the squared norms by the element count (a τ that carries across resolutions)."""

    _kind = _CCFG
    name = "ccfg"

    def __init__(self, scale=7.5, tau=0.2, tau_reduce="sum", negative_scale=None,
                 naive_positive=False, negative_window=None):
        super().__init__(scale, negative_window)
        self.tau = _v.real(tau, "tau", low=0.0)
        if tau_reduce not in ("sum", "mean"):
            raise ValueError(f"tau_reduce must be 'sum' or 'mean', got {tau_reduce!r}")
        self.tau_reduce = tau_reduce
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)
        if not isinstance(naive_positive, bool):
            raise TypeError("naive_positive must be a bool")
        self.naive_positive = naive_positive

    def _params(self):
        return {"scale": self.scale, "tau": self.tau, "tau_reduce": self.tau_reduce,
                "negative_scale": self.negative_scale, "naive_positive": self.naive_positive}


class PythonRule(Rule):
    """A rule written in Python: ``fn(eps_u, eps_p, eps_n_list) -> eps`` on arrays (n, ...)."""

    _kind = _PYTHON
    name = "python"

    def __init__(self, fn, negative_window=None):
        if not callable(fn):
            raise TypeError("fn must be callable")
        super().__init__(1.0, negative_window)
        self.fn = fn

    def _params(self):
        return {"fn": getattr(self.fn, "__name__", repr(self.fn))}


NAMES = {
    "cfg": CFG, "negative_prompt": NegativePrompt, "negated_cfg": NegatedCFG,
    "composable_not": ComposableNot, "perp_neg": PerpNeg, "sld": SLD, "dng": DNG, "ccfg": CCFG,
}


def get(guidance, argname="guidance"):
    """A rule from a rule object, a name (``"ccfg"``) or None (no guidance)."""
    if guidance is None:
        return _NoGuidance()
    if isinstance(guidance, Rule):
        return guidance
    if isinstance(guidance, str):
        key = guidance.lower().replace("-", "_")
        if key not in NAMES:
            raise ValueError(f"{argname}: unknown rule {guidance!r}; known: {sorted(NAMES)}")
        return NAMES[key]()
    raise TypeError(f"{argname} must be a guidance rule, a rule name or None, "
                    f"got {type(guidance).__name__}")
