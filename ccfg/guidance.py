"""Guidance rules: one small class per rule, holding its parameters.

The maths runs in C (one file per rule in ``csrc/rules/``, run by ``csrc/guidance.c``); these
classes validate parameters, print a readable repr for ablation records, and hand the C core the
rule's registry name with its parameters by name (``_c_spec``). Formulas and defaults:
``docs/api.md`` and ``docs/methods.md``. Adding a rule: ``CONTRIBUTING.md``.
"""
from __future__ import annotations

from . import _validate as _v

# the rule classes: `import ccfg` exports exactly these (a new rule adds its class name here)
__all__ = ["Rule", "CFG", "NegativePrompt", "NegatedCFG", "ComposableNot", "PerpNeg", "SLD",
           "DNG", "CCFG", "APG", "PythonRule"]

# rule name -> class, filled by Rule.__init_subclass__ as the classes below are defined
NAMES = {}

# Safe Latent Diffusion presets (docs/methods.md §6): warm-up steps, s_S, threshold λ, s_m, β_m
SLD_PRESETS = {
    "weak": (15, 20.0, 0.0, 0.0, 0.0),
    "medium": (10, 1000.0, 0.01, 0.3, 0.4),
    "strong": (7, 2000.0, 0.025, 0.5, 0.7),
    "max": (0, 5000.0, 1.0, 0.5, 0.7),
}


class Rule:
    """Base class: a guidance rule on noise predictions (see ``ccfg.guide``).

    A subclass sets ``name`` (what ``guidance="..."`` accepts), ``_c_rule`` (the C registry name,
    ``csrc/rules/registry.c``) and returns its own parameters, by the C names, from
    ``_c_params``; public subclasses are listed in ``NAMES`` by themselves."""

    _c_rule = "none"
    stateful = False
    name = "none"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.name not in ("none", "python"):
            NAMES[cls.name] = cls

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

    def _c_params(self):
        """The rule's own parameters for the C core, by the names its C file declares."""
        return {}

    def _c_spec(self):
        """(C registry name, {parameter: value}) for the C core (csrc/python/py_guide.c)."""
        params = {"scale": self.scale, "negative_scale": float(self.effective_negative_scale),
                  "window_start": self.negative_window[0],
                  "window_stop": self.negative_window[1]}
        params.update(self._c_params())
        return (self._c_rule, params)


class _NoGuidance(Rule):
    """The plain positive prediction (or the unconditional one when there is no positive)."""

    name = "none"

    def __init__(self):
        super().__init__(1.0)

    def _params(self):
        return {}


class CFG(Rule):
    """Classifier-free guidance, ``eps_u + w (eps_p - eps_u)``; negatives are ignored."""

    _c_rule = "cfg"
    name = "cfg"


class NegativePrompt(Rule):
    """The negative replaces the null prediction: ``eps_n + w (eps_p - eps_n)`` (2 NFE/step)."""

    _c_rule = "negative_prompt"
    name = "negative_prompt"


class NegatedCFG(Rule):
    """Negated CFG: ``eps_u + w D_p - w_n D_n`` (signed guidance when ``negative_scale`` differs)."""

    _c_rule = "negated_cfg"
    name = "negated_cfg"

    def __init__(self, scale=7.5, negative_scale=None, negative_window=None):
        super().__init__(scale, negative_window)
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)

    def _params(self):
        return {"scale": self.scale, "negative_scale": self.negative_scale}


class ComposableNot(Rule):
    """Composable Diffusion's NOT: ``eps_u + w (eps_p - eps_n)``, i.e. negated CFG with w_n = w."""

    _c_rule = "negated_cfg"       # with w_n = w (effective_negative_scale)
    name = "composable_not"


class PerpNeg(Rule):
    """Perp-Neg: ``eps_u + w (D_p - b perp(D_n, D_p))``, projection per sample unless
    ``batch_global=True`` (the official/ComfyUI behaviour: one projection over the batch)."""

    _c_rule = "perp_neg"
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

    def _c_params(self):
        return {"batch_global": self.batch_global}


class SLD(Rule):
    """Safe Latent Diffusion: elementwise-gated safety term with momentum (stateful)."""

    _c_rule = "sld"
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
        # a step index in C (an int): bounded so it cannot overflow there
        self.warmup = p[0] if warmup is None else _v.integer(warmup, "warmup", low=0,
                                                             high=_v.INT_MAX)
        self.safety_scale = p[1] if safety_scale is None else _v.real(
            safety_scale, "safety_scale", low=0.0)
        self.threshold = p[2] if threshold is None else _v.real(threshold, "threshold")
        self.momentum_scale = p[3] if momentum_scale is None else _v.real(
            momentum_scale, "momentum_scale")
        self.momentum_beta = p[4] if momentum_beta is None else _v.real(
            momentum_beta, "momentum_beta", low=0.0, high=1.0)

    def _params(self):
        return {"scale": self.scale, "preset": self.preset, "warmup": self.warmup,
                "safety_scale": self.safety_scale, "threshold": self.threshold,
                "momentum_scale": self.momentum_scale, "momentum_beta": self.momentum_beta}

    def _c_params(self):
        return {"warmup": self.warmup, "safety_scale": self.safety_scale,
                "threshold": self.threshold, "momentum_scale": self.momentum_scale,
                "momentum_beta": self.momentum_beta}


class DNG(Rule):
    """Dynamic Negative Guidance: negative scale ``λ0 p/(1-p)`` from a per-sample posterior ``p``
    that the sample belongs to the negative, updated from each transition (stateful).

    ``offset`` (δ): the per-step bias of the posterior update, ``δ / (2 s²)`` nats of ``log p`` per
    step. The
    official value 2e-4 (the DNG README's run) is sized for DDPM with the training schedule's
    1000 steps (about 29 nats over that run on the linear schedule, but 1-1.4 nats over 20-100
    steps). ``offset="scaled"`` makes ``ccfg.sample`` scale the official δ to the run so that the
    offset's drift of ``log p`` over the whole run equals the official 1000-step run's
    (``ccfg.sampling.dng_scaled_offset``; derivation in docs/methods.md §4); a number is used as
    is (the default is the official constant). DNG's official sampler is DDPM with
    ``noise_variance="fixed_large"`` (``ccfg.sample``) and ``num_train_timesteps`` steps."""

    _c_rule = "dng"
    name = "dng"
    stateful = True
    # the official per-step offset (DNG README run; docs/methods.md §4)
    OFFICIAL_OFFSET = 2e-4

    def __init__(self, scale=7.5, negative_scale=None, prior=0.01, temperature=0.2, offset=2e-4,
                 p_min=1e-6, p_max=0.8, negative_window=None):
        super().__init__(scale, negative_window)
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)
        self.prior = _v.real(prior, "prior", low=0.0, high=1.0, low_open=True)
        if self.prior >= 1.0:
            raise ValueError(f"prior must be < 1, got {self.prior}")
        self.temperature = _v.real(temperature, "temperature", low=0.0)
        if isinstance(offset, str):
            self.offset = _v.name(offset, "offset", ("scaled",))
        else:
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

    def _with_offset(self, offset):
        """A copy with a numeric offset (how ccfg.sample runs ``offset="scaled"``)."""
        import copy
        out = copy.copy(self)
        out.offset = _v.real(offset, "offset")
        return out

    def _c_params(self):
        if self.offset == "scaled":
            raise ValueError("offset='scaled' is sized from the run's schedule and step count: "
                             "ccfg.sample resolves it; with ccfg.guide pass a number, e.g. "
                             "ccfg.sampling.dng_scaled_offset(sampler, steps)")
        return {"prior": self.prior, "temperature": self.temperature, "offset": self.offset,
                "p_min": self.p_min, "p_max": self.p_max}


class CCFG(Rule):
    """Contrastive CFG: ``eps_u + w λ+ D_p - w_n λ- D_n`` with ``λ+ = 2σ(τ_t‖D_p‖²)``,
    ``λ- = 2σ(-τ_t‖D_n‖²)`` per sample (docs/methods.md §3).

    ``tau``: a number is the official constant τ (default 0.2, summed norms: the authors' code);
    ``tau_reduce="mean"`` divides the squared norms by the element count. A name picks a τ
    schedule, one τ_t per step, multiplied by ``tau_scale`` (docs/methods.md §3.7 derives each,
    docs/TAU.md measures them against the best fixed τ):

    - ``"auto"``: the recommended schedule (currently ``"nce"``);
    - ``"dim"``: ``τ_t = tau_scale / sqrt(N)`` (N elements per sample);
    - ``"nce"``: ``τ_t = tau_scale / (2 (1 - ā_t))``, the log-likelihood ratio of the noisy
      conditionals for unit-variance data (needs the step's ā_t: samplers pass it,
      ``ccfg.guide`` takes ``alpha_bar=``);
    - ``"pilot"``: ``τ = tau_scale ln3 / median‖D_n‖²`` measured on the batch at the first step
      with negatives (λ- = 1/2 at the median), then frozen (stateful);
    - ``"pilot_noise"``: the pilot τ, then rescaled by the expected growth of ‖D‖²,
      ``ā_0(1-ā_0) / (ā_t(1-ā_t))`` (needs ā_t; stateful);
    - ``"batch"``: the pilot's calibration redone at every step (no state; a sample's τ depends
      on the rest of its batch).
    """

    _c_rule = "ccfg"
    name = "ccfg"
    # tau schedule -> the code csrc/rules/ccfg.c reads as tau_schedule
    _SCHEDULES = {"constant": 0, "dim": 1, "nce": 2, "pilot": 3, "pilot_noise": 4, "batch": 5}
    AUTO = "nce"

    def __init__(self, scale=7.5, tau=0.2, tau_reduce="sum", negative_scale=None,
                 naive_positive=False, negative_window=None, tau_scale=1.0):
        super().__init__(scale, negative_window)
        tau_reduce = _v.name(tau_reduce, "tau_reduce", ("sum", "mean"))
        if isinstance(tau, str):
            try:
                float(tau)
            except ValueError:
                pass
            else:       # a number in a string is a mistake, not a schedule name
                raise TypeError(f"tau must be a real number or a schedule name, got the string "
                                f"{tau!r} (pass the number itself)")
            names = sorted(set(self._SCHEDULES) - {"constant"}) + ["auto"]
            self.tau = _v.name(tau, "tau", names)
            if tau_reduce != "sum":
                raise ValueError(f"tau_reduce: {tau_reduce!r} applies to a constant tau; the "
                                 f"schedule tau={self.tau!r} sets its own normalisation")
        else:
            try:
                self.tau = _v.real(tau, "tau", low=0.0)
            except TypeError:
                raise TypeError(f"tau must be a real number or a schedule name "
                                f"({', '.join(repr(n) for n in sorted(self._SCHEDULES))}, "
                                f"'auto'), got {type(tau).__name__}") from None
        self.tau_scale = _v.real(tau_scale, "tau_scale", low=0.0, low_open=True)
        if not isinstance(tau, str) and self.tau_scale != 1.0:
            raise ValueError("tau_scale: multiplies a named tau schedule; with a numeric tau "
                             "give the number itself")
        self.tau_reduce = tau_reduce
        self.negative_scale = _v.real(negative_scale, "negative_scale", allow_none=True)
        if not isinstance(naive_positive, bool):
            raise TypeError("naive_positive must be a bool")
        self.naive_positive = naive_positive

    @property
    def tau_schedule(self):
        """The schedule the C core runs: "constant" for a numeric tau, "auto" resolved."""
        if not isinstance(self.tau, str):
            return "constant"
        return self.AUTO if self.tau == "auto" else self.tau

    @property
    def stateful(self):
        return self.tau_schedule in ("pilot", "pilot_noise")

    def _params(self):
        p = {"scale": self.scale, "tau": self.tau, "tau_reduce": self.tau_reduce,
             "negative_scale": self.negative_scale, "naive_positive": self.naive_positive}
        if isinstance(self.tau, str):
            p["tau_scale"] = self.tau_scale
        return p

    def _c_params(self):
        named = isinstance(self.tau, str)
        return {"tau": self.tau_scale if named else self.tau,
                "tau_mean": self.tau_reduce == "mean",
                "naive_positive": self.naive_positive,
                "tau_schedule": self._SCHEDULES[self.tau_schedule]}


class APG(Rule):
    """Adaptive Projected Guidance (Sadat, Hilliges & Weber, arXiv 2410.02416, Algorithm 1, without
    momentum): ``eps_p + (w - 1) (D_orth + eta D_par)``, where ``D = eps_p - eps_u`` is first
    rescaled to norm at most ``norm_threshold`` per sample (0: no rescaling) and split into its
    parts parallel and orthogonal to ``eps_p``. ``eta = 1`` without rescaling is CFG. Negatives are
    ignored (a positive-only baseline, like CFG); applied to noise predictions (the paper applies
    it to the denoised prediction)."""

    _c_rule = "apg"
    name = "apg"

    def __init__(self, scale=7.5, eta=0.0, norm_threshold=0.0):
        super().__init__(scale)
        self.eta = _v.real(eta, "eta")
        self.norm_threshold = _v.real(norm_threshold, "norm_threshold", low=0.0)

    def _params(self):
        return {"scale": self.scale, "eta": self.eta, "norm_threshold": self.norm_threshold}

    def _c_params(self):
        return {"eta": self.eta, "norm_threshold": self.norm_threshold}


class PythonRule(Rule):
    """A rule written in Python: ``fn(eps_u, eps_p, eps_n_list) -> eps`` on arrays (n, ...)."""

    _c_rule = "python"            # defined by the bindings: calls fn back on host arrays
    name = "python"

    def __init__(self, fn, negative_window=None):
        if not callable(fn):
            raise TypeError("fn must be callable")
        super().__init__(1.0, negative_window)
        self.fn = fn

    def _params(self):
        return {"fn": getattr(self.fn, "__name__", repr(self.fn))}

    def _c_params(self):
        return {"fn": self.fn}



def get(guidance, argname="guidance"):
    """A rule from a rule object, a name (``"ccfg"``) or None (no guidance)."""
    if guidance is None:
        return _NoGuidance()
    if isinstance(guidance, Rule):
        return guidance
    if isinstance(guidance, str):
        key = guidance.strip().lower().replace("-", "_")
        if key not in NAMES:
            raise ValueError(f"{argname}: unknown rule {guidance!r}; known: {sorted(NAMES)}")
        return NAMES[key]()
    raise TypeError(f"{argname} must be a guidance rule, a rule name or None, "
                    f"got {type(guidance).__name__}")
