"""Sampler and noise-schedule configuration, with diffusers' names and defaults.

The schedule itself (betas, timesteps, sigmas) is computed in C (``csrc/schedule.c``);
:func:`plan` shows what a sampler will walk.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os

import numpy as np

from . import _core
from . import _validate as _v

__all__ = ["SchedulerConfig", "SAMPLERS", "plan"]

# must match ccfg_solver_kind in csrc/ccfg.h
SAMPLERS = {"ddim": 0, "ddpm": 1, "euler": 2, "euler_ancestral": 3, "heun": 4, "dpmpp_2m": 5}
# diffusers scheduler class -> sampler name
CLASS_NAMES = {
    "DDIMScheduler": "ddim", "DDPMScheduler": "ddpm", "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral", "HeunDiscreteScheduler": "heun",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
}
_BETAS = {"linear": 0, "scaled_linear": 1, "squaredcos_cap_v2": 2}
_SPACINGS = {None: -1, "leading": 0, "trailing": 1, "linspace": 2}
PREDICTIONS = {"epsilon": 0, "v_prediction": 1, "sample": 2}
# the most training timesteps a config may declare (diffusers' models use 1000)
MAX_TRAIN_TIMESTEPS = 1_000_000
# the smallest last alpha_bar of a training schedule (diffusers' schedules end near 1e-9..1e-3)
MIN_ALPHA_BAR = 1e-30

# DDPM's noise variance (diffusers' variance_type): "fixed_small" = the posterior variance β̃_t
# (diffusers' default; "fixed_small_log" is the same variance computed through its log),
# "fixed_large" = β_t (the DDPM paper's other choice, and DNG's official sampler)
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")

# diffusers scheduler options ccfg implements at one setting only (what ccfg's samplers do): a
# config with another value raises, naming the option, rather than being silently run otherwise
_FIXED = {
    "use_karras_sigmas": (False,),           # ccfg.sample(karras=True) selects Karras sigmas
    "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "use_flow_sigmas": (False,),
    "use_lu_lambdas": (False,), "use_dynamic_shifting": (False,), "euler_at_final": (False,),
    "flow_shift": (1.0,), "time_shift_type": ("exponential",), "interpolation_type": ("linear",),
    "timestep_type": ("discrete",), "sigma_min": (None,), "sigma_max": (None,),
    "final_sigmas_type": ("zero",), "solver_order": (2,), "algorithm_type": ("dpmsolver++",),
    "solver_type": ("midpoint",), "lower_order_final": (True,),
    "lambda_min_clipped": (float("-inf"),),
}


def _same(value, allowed):
    return any(value is a or (type(value) is type(a) and value == a) or
               (isinstance(a, float) and isinstance(value, (int, float))
                and not isinstance(value, bool) and float(value) == a) for a in allowed)


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The training noise schedule and timestep spacing (diffusers' config fields)."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple | None = None
    prediction_type: str = "epsilon"
    timestep_spacing: str | None = None      # None: each sampler's diffusers default
    steps_offset: int = 0
    set_alpha_to_one: bool = True
    # the predicted x0 of ddim/ddpm steps, as diffusers processes it (docs/methods.md §15.4-15.5);
    # off by default here (diffusers' DDIMScheduler() and DDPMScheduler() default to clip_sample=True,
    # and from_config takes whatever a config says)
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    rescale_betas_zero_snr: bool = False
    # the ddpm sampler's noise variance (see VARIANCE_TYPES); other samplers ignore it, as
    # diffusers' other schedulers have no such option
    variance_type: str | None = None

    def __post_init__(self):
        T = self.num_train_timesteps
        if isinstance(T, (bool, np.bool_)) or not isinstance(T, numbers.Integral):
            raise TypeError(f"num_train_timesteps must be an integer, got {T!r}")
        # the schedule keeps several float64 arrays of this length: bounded so that an untrusted
        # scheduler_config.json cannot make it allocate gigabytes (diffusers models use 1000)
        _v.integer(T, "num_train_timesteps", low=2, high=MAX_TRAIN_TIMESTEPS)
        object.__setattr__(self, "num_train_timesteps", int(T))
        off = self.steps_offset
        if isinstance(off, (bool, np.bool_)) or not isinstance(off, numbers.Integral):
            raise TypeError(f"steps_offset must be an integer, got {off!r}")
        # every timestep plus the offset must stay below num_train_timesteps
        _v.integer(off, "steps_offset", low=0, high=int(T) - 1)
        object.__setattr__(self, "steps_offset", int(off))
        # names are matched case-insensitively (stored in their canonical lower case)
        for field in ("beta_schedule", "prediction_type", "timestep_spacing", "variance_type"):
            v = getattr(self, field)
            if isinstance(v, str):
                object.__setattr__(self, field, v.strip().lower())
        if not isinstance(self.beta_schedule, str) or self.beta_schedule not in _BETAS:
            raise ValueError(f"beta_schedule must be one of {sorted(_BETAS)}, got {self.beta_schedule!r}")
        if not isinstance(self.prediction_type, str) or self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {sorted(PREDICTIONS)}, "
                             f"got {self.prediction_type!r}")
        if self.variance_type is not None and (not isinstance(self.variance_type, str) or
                                               self.variance_type not in VARIANCE_TYPES):
            raise ValueError(f"variance_type: ccfg's ddpm sampler supports "
                             f"{', '.join(map(repr, VARIANCE_TYPES))} or None, got "
                             f"{self.variance_type!r}")
        if not isinstance(self.timestep_spacing, (str, type(None))) or \
                self.timestep_spacing not in _SPACINGS:
            raise ValueError("timestep_spacing must be 'leading', 'trailing', 'linspace' or None, "
                             f"got {self.timestep_spacing!r}")
        for name in ("beta_start", "beta_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
        for name in ("clip_sample", "thresholding", "rescale_betas_zero_snr", "set_alpha_to_one"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name, low in (("clip_sample_range", 0.0), ("sample_max_value", 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v > low or
                                                                              (low and v == low)):
                raise ValueError(f"{name} must be a number {'>=' if low else '>'} {low:g}, "
                                 f"got {v!r}")
        r = self.dynamic_thresholding_ratio
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must lie in (0, 1], got {r!r}")
        if self.rescale_betas_zero_snr:
            raise ValueError("rescale_betas_zero_snr: ccfg's samplers do not rescale betas to a "
                             "zero terminal SNR yet; this config cannot be honoured")
        if self.trained_betas is not None:
            tb = self.trained_betas
            if isinstance(tb, (str, bytes, dict)) or not hasattr(tb, "__len__") or any(
                    isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real) for b in tb):
                raise ValueError("trained_betas must be a list of numbers in (0, 1), got "
                                 f"{type(tb).__name__}")
            betas = np.asarray(tb, dtype=np.float64)
            if betas.shape != (self.num_train_timesteps,) or not np.all((betas > 0) & (betas < 1)):
                raise ValueError("trained_betas must hold num_train_timesteps values in (0, 1)")
            object.__setattr__(self, "trained_betas", tuple(betas.tolist()))
        self._check_alphas_cumprod()

    def _check_alphas_cumprod(self):
        """The training schedule's last alpha_bar must stay above MIN_ALPHA_BAR: the samplers
        divide by its square root and scale the noise by sqrt((1 - ā)/ā) in float32, and an
        underflowing product (beta_start=0.875, beta_end=0.5) gave NaN levels without a word.
        (The cosine schedule's is fixed by num_train_timesteps and stays far above it.)"""
        if self.trained_betas is None and self.beta_schedule == "squaredcos_cap_v2":
            return
        T = self.num_train_timesteps
        if self.trained_betas is not None:
            betas, what = np.asarray(self.trained_betas), "trained_betas"
        else:
            lo, hi = float(self.beta_start), float(self.beta_end)
            if self.beta_schedule == "scaled_linear":
                lo, hi = lo ** 0.5, hi ** 0.5
            betas = np.linspace(lo, hi, T)
            if self.beta_schedule == "scaled_linear":
                betas = betas * betas
            what = (f"beta_start={self.beta_start!r}, beta_end={self.beta_end!r} "
                    f"({self.beta_schedule}, num_train_timesteps={T})")
        log_last = float(np.sum(np.log1p(-np.clip(betas, 0.0, 1.0 - 1e-16))))
        if log_last < math.log(MIN_ALPHA_BAR):
            raise ValueError(f"{what}: alphas_cumprod falls to exp({log_last:.4g}), below "
                             f"{MIN_ALPHA_BAR:g}; the betas are too large for the samplers "
                             "(float32 levels)")

    @classmethod
    def from_config(cls, config):
        """From a diffusers config dict, a path to ``scheduler_config.json`` or its folder.

        Returns the config; the diffusers class name (if any) is in ``config.sampler_name``."""
        if isinstance(config, (str, os.PathLike)):
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "scheduler_config.json")
            config = _v.json_file(path, path)
        if not isinstance(config, dict):
            raise TypeError("scheduler config must be a dict or a path to scheduler_config.json")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in config.items():
            if not isinstance(key, str):
                raise TypeError(f"scheduler config: option names must be strings, got {key!r}")
            if key.startswith("_"):              # _class_name, _diffusers_version: metadata
                continue
            if key in fields:
                kwargs[key] = value
                continue
            if key not in _FIXED:
                raise ValueError(f"{key}: a scheduler option ccfg does not know; it cannot be "
                                 "honoured (remove it from the config if it has no effect)")
            if not _same(value, _FIXED[key]):
                raise ValueError(f"{key}={value!r}: ccfg's samplers support only "
                                 f"{' or '.join(repr(v) for v in _FIXED[key])}")
        return cls(**kwargs)

    def _spec(self, sampler, steps, eta=0.0, karras=False, noise_variance=None):
        """Flat tuple for the C core (layout of parse_sampler in csrc/python/py_sample.c).
        ``noise_variance`` (ddpm): overrides ``variance_type`` when given."""
        # (the C plan refuses them for samplers other than ddim and ddpm, naming the option)
        clip = float(self.clip_sample_range) if self.clip_sample else 0.0
        ratio = float(self.dynamic_thresholding_ratio) if self.thresholding else 0.0
        return (SAMPLERS[sampler], steps, float(eta), bool(karras),
                _SPACINGS[self.timestep_spacing], int(self.steps_offset),
                bool(self.set_alpha_to_one), int(self.num_train_timesteps),
                _BETAS[self.beta_schedule], float(self.beta_start), float(self.beta_end),
                None if self.trained_betas is None else np.asarray(self.trained_betas),
                clip, ratio, float(self.sample_max_value),
                sampler == "ddpm" and (noise_variance or self.variance_type) == "fixed_large")


def as_config(scheduler, default=None):
    """A SchedulerConfig from None (the default), a config, a dict or a path."""
    if scheduler is None:
        scheduler = default if default is not None else SchedulerConfig()
    if isinstance(scheduler, SchedulerConfig):
        return scheduler
    if isinstance(scheduler, (dict, str, os.PathLike)):
        return SchedulerConfig.from_config(scheduler)
    raise TypeError("scheduler must be a SchedulerConfig, a dict or a path to scheduler_config.json")


def check_sampler(sampler):
    """The sampler's canonical name (matched case-insensitively: "DDIM" is "ddim")."""
    return _v.name(sampler, "sampler", SAMPLERS)


def plan(sampler, steps, config=None, karras=False, eta=0.0):
    """The levels a sampler walks: dict of ``timesteps``, ``alpha_bars``, ``alpha_bars_next``,
    ``sigmas``, ``init_noise_sigma``, ``alphas_cumprod``."""
    cfg = as_config(config)
    steps = _v.integer(steps, "steps", low=1)
    return _core.plan(cfg._spec(check_sampler(sampler), steps, eta, karras))
