"""ccfg's rules as diffusers guiders, for the rules diffusers lacks (CCFG, negated CFG, Perp-Neg,
SLD, APG without momentum, or any ccfg rule): drop-in objects for a diffusers loop written against
``diffusers.guiders`` (set_state, prepare_inputs, one denoiser call per prepared batch, __call__).

    guider = ccfg.guiders.CCFGGuidance(guidance_scale=7.5, tau=0.2)
    for i, t in enumerate(scheduler.timesteps):
        guider.set_state(step=i, num_inference_steps=len(scheduler.timesteps), timestep=t)
        batches = guider.prepare_inputs({"encoder_hidden_states": (cond, uncond, negative)})
        for b in batches:
            b.noise_pred = unet(latents, t, encoder_hidden_states=b.encoder_hidden_states).sample
        noise_pred = guider(batches).pred

Each field of the input dict is a tuple ``(conditional, unconditional, negative)`` (a tensor alone
is shared by every branch), so the denoiser is called once per branch: the three predictions are
``pred_cond``, ``pred_uncond`` and ``pred_neg``. The rule is applied by ``ccfg.guide`` (tensors in,
tensors of the same dtype and device out). ``start``/``stop`` switch guidance off outside that
fraction of the steps, as diffusers' guiders do (only the conditional branch is evaluated there);
a ccfg rule's own ``negative_window`` keeps applying inside. Stateful rules (SLD) keep their state
across the steps of a run and start a new one at step 0. DNG needs the transition the scheduler
took and is not offered as a guider: use ``ccfg.guide`` with ``state.observe`` in your loop.
Rules that read the step's noise level ā_t (CCFG with ``tau="nce"``, ``"auto"`` or
``"pilot_noise"``) need the scheduler's ``alphas_cumprod``: call ``guider.set_scheduler(scheduler)``
once; each step's ā_t is then ``alphas_cumprod[timestep]`` for the timestep given to ``set_state``.
Importing this module imports diffusers (``pip install 'ccfg[pipelines]'``).
"""
from __future__ import annotations

import math

from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from . import _core
from . import guidance as _g
from .sampling import guide

__all__ = ["RuleGuidance", "CCFGGuidance", "NegatedCFGGuidance", "PerpNegGuidance", "SLDGuidance",
           "APGGuidance"]


class _RuleGuider(BaseGuidance):
    """What every guider here shares; each public class registers its own constructor's
    arguments as its config (diffusers' register_to_config) and calls _init."""

    _input_predictions = ["pred_cond", "pred_uncond", "pred_neg"]

    def _init(self, rule, guidance_scale, params, start, stop, enabled):
        BaseGuidance.__init__(self, start, stop, enabled)
        cls = _g.NAMES.get(rule)
        if cls is None or cls is _g.DNG:
            known = sorted(k for k in _g.NAMES if k != "dng")
            raise ValueError(f"rule: one of {known}, got {rule!r}" +
                             (" (DNG needs the scheduler's transition: use ccfg.guide and "
                              "state.observe)" if rule == "dng" else ""))
        self.guidance_scale = guidance_scale
        self.rule = cls(scale=guidance_scale, **(params or {}))
        # the C record says whether the rule reads a negative branch at all
        self._uses_negative = _core.rule_uses_negatives(self.rule._c_spec()[0])
        self._ccfg_state = None
        self._alphas_cumprod = None

    def set_scheduler(self, scheduler):
        """Read ``scheduler.alphas_cumprod`` (a diffusers scheduler), so that each step passes
        ā_t = alphas_cumprod[timestep] to the rule (``ccfg.guide(..., alpha_bar=)``); the rules
        that do not read ā_t ignore it. Returns the guider."""
        ab = getattr(scheduler, "alphas_cumprod", None)
        if ab is None:
            raise TypeError("scheduler: needs an alphas_cumprod attribute (a diffusers DDPM-family "
                            f"scheduler), got {type(scheduler).__name__}")
        ab = [float(a) for a in (ab.tolist() if hasattr(ab, "tolist") else ab)]
        if not ab or not all(0.0 < a < 1.0 for a in ab):
            raise ValueError("scheduler: alphas_cumprod must be non-empty with every value in "
                             "(0, 1)")
        self._alphas_cumprod = ab
        return self

    def _alpha_bar(self):
        """ā_t of the current step, or None when no scheduler was set"""
        if self._alphas_cumprod is None:
            return None
        if self._timestep is None:
            raise ValueError("set_state(timestep=...) must come before the guider is called: the "
                             "rule reads ā_t at that timestep")
        t = self._timestep
        t = int(t.item() if hasattr(t, "item") else t)
        if not 0 <= t < len(self._alphas_cumprod):
            raise ValueError(f"timestep {t} is outside the scheduler's "
                             f"{len(self._alphas_cumprod)} training steps")
        return self._alphas_cumprod[t]

    def _is_enabled(self):
        if not self._enabled:
            return False
        if self._num_inference_steps is not None:
            lo = int(self._start * self._num_inference_steps)
            hi = int(self._stop * self._num_inference_steps)
            if not lo <= self._step < hi:
                return False
        return not math.isclose(self.guidance_scale, 1.0) or self._uses_negative

    @property
    def num_conditions(self) -> int:
        if not self._is_enabled():
            return 1
        return 3 if self._uses_negative else 2

    @property
    def is_conditional(self) -> bool:
        return self._count_prepared == 1

    def prepare_inputs(self, data):
        batches = []
        for index, name in zip(range(self.num_conditions), self._input_predictions):
            batches.append(self._prepare_batch(data, index, name))
        return batches

    def prepare_inputs_from_block_state(self, data, input_fields):
        batches = []
        for index, name in zip(range(self.num_conditions), self._input_predictions):
            batches.append(self._prepare_batch_from_block_state(input_fields, data, index, name))
        return batches

    def forward(self, pred_cond, pred_uncond=None, pred_neg=None) -> GuiderOutput:
        if not self._is_enabled():
            return GuiderOutput(pred=pred_cond, pred_cond=pred_cond, pred_uncond=pred_uncond)
        kw = {}
        if self._num_inference_steps is not None:
            kw = dict(step=self._step, num_steps=self._num_inference_steps)
        alpha_bar = self._alpha_bar()
        if alpha_bar is not None:
            kw["alpha_bar"] = alpha_bar
        if self.rule.stateful:
            if self._step in (None, 0):
                self._ccfg_state = None          # a new run
            pred, self._ccfg_state = guide(pred_uncond, pred_cond, pred_neg, self.rule,
                                           self._ccfg_state, **kw)
        else:
            pred = guide(pred_uncond, pred_cond, pred_neg, self.rule, **kw)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)


class RuleGuidance(_RuleGuider):
    """Any ccfg rule as a diffusers guider: ``RuleGuidance(rule="ccfg", guidance_scale=7.5,
    params={"tau": 0.2})`` builds ``ccfg.guidance.NAMES["ccfg"]`` with those arguments (the
    config holds the rule's name and arguments, so ``save_pretrained``/``from_pretrained``
    round-trip)."""

    @register_to_config
    def __init__(self, rule: str = "ccfg", guidance_scale: float = 7.5, params: dict | None = None,
                 start: float = 0.0, stop: float = 1.0, enabled: bool = True):
        self._init(rule, guidance_scale, params, start, stop, enabled)


class CCFGGuidance(_RuleGuider):
    """Contrastive CFG (ccfg.CCFG) as a diffusers guider. ``tau`` is a number or a schedule name
    (ccfg.CCFG); the schedules that read ā_t need ``set_scheduler(scheduler)`` first."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, tau: float | str = 0.2,
                 tau_reduce: str = "sum", negative_scale: float | None = None,
                 tau_scale: float = 1.0, start: float = 0.0, stop: float = 1.0,
                 enabled: bool = True):
        self._init("ccfg", guidance_scale, dict(tau=tau, tau_reduce=tau_reduce,
                                                negative_scale=negative_scale,
                                                tau_scale=tau_scale),
                   start, stop, enabled)


class NegatedCFGGuidance(_RuleGuider):
    """Negated CFG (ccfg.NegatedCFG) as a diffusers guider."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, negative_scale: float | None = None,
                 start: float = 0.0, stop: float = 1.0, enabled: bool = True):
        self._init("negated_cfg", guidance_scale, dict(negative_scale=negative_scale),
                         start, stop, enabled)


class PerpNegGuidance(_RuleGuider):
    """Perp-Neg (ccfg.PerpNeg) as a diffusers guider."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, negative_scale: float = 1.0,
                 batch_global: bool = False, start: float = 0.0, stop: float = 1.0,
                 enabled: bool = True):
        self._init("perp_neg", guidance_scale, dict(negative_scale=negative_scale,
                                                          batch_global=batch_global),
                         start, stop, enabled)


class SLDGuidance(_RuleGuider):
    """Safe Latent Diffusion (ccfg.SLD) as a diffusers guider; its momentum lives in the guider
    for the steps of one run."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, preset: str = "medium", start: float = 0.0,
                 stop: float = 1.0, enabled: bool = True):
        self._init("sld", guidance_scale, dict(preset=preset), start, stop, enabled)


class APGGuidance(_RuleGuider):
    """Adaptive projected guidance without momentum (ccfg.APG) as a diffusers guider."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, eta: float = 0.0,
                 norm_threshold: float = 0.0, start: float = 0.0, stop: float = 1.0,
                 enabled: bool = True):
        self._init("apg", guidance_scale, dict(eta=eta, norm_threshold=norm_threshold),
                         start, stop, enabled)
