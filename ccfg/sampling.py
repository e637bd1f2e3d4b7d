"""The two calls researchers make: ``sample`` (the whole loop in C) and ``guide`` (one rule on
arrays from their own loop). Both validate input here and hand clean float32 arrays to C."""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from . import _core, _device, _tensors
from . import _validate as _v
from . import guidance as _g
from .schedulers import PREDICTIONS, VARIANCE_TYPES, as_config, check_sampler

__all__ = ["sample", "guide", "randn", "GuidanceState", "dng_scaled_offset"]


def _rule_spec(rule, shape):
    """The rule's C spec; a PythonRule's function is adapted to the (n, dim) arrays C passes."""
    name, params = rule._c_spec()
    if "fn" not in params:
        return (name, params)
    fn = params["fn"]

    label = f"the PythonRule {getattr(fn, '__name__', type(fn).__name__)!s}"

    def flat_fn(u, p, negs):
        out = fn(u.reshape(shape), p.reshape(shape), [e.reshape(shape) for e in negs])
        if _tensors.is_tensor(out):
            out = _tensors.to_array(out, label)
        out = _v.as_array(out, label)       # (ragged or masked: a TypeError naming the rule)
        if out.dtype.kind not in "fiu":
            raise TypeError(f"{label} returned dtype {out.dtype}, expected real numbers")
        if out.shape != shape:
            raise ValueError(f"{label} returned shape {out.shape}, expected {shape}")
        if not _v.all_finite(out) or (out.dtype.kind == "f" and out.size and
                                      np.max(np.abs(out)) > _v.FLOAT32_MAX):
            raise FloatingPointError(f"{label} returned NaN or Inf (or values beyond the "
                                     "float32 range)")
        return _v.flat(out)

    return (name, dict(params, fn=flat_fn))


class GuidanceState:
    """Per-sample state of a stateful rule (SLD momentum, DNG posterior) across ``guide`` calls."""

    def __init__(self, rule, n, shape, n_neg, device="cpu"):
        if not isinstance(rule, _g.Rule):
            raise TypeError(f"rule must be a guidance rule, got {type(rule).__name__}")
        n = _v.integer(n, "n", low=1)
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be a sequence of ints, got {type(shape).__name__}")
        shape = tuple(shape)
        if not shape or not all(_v.is_int(s) and s >= 0 for s in shape) or shape[0] != n:
            raise ValueError(f"shape must be (n, ...) with n = {n} and sizes >= 0, got {shape}")
        shape = tuple(int(s) for s in shape)
        n_neg = _v.integer(n_neg, "n_neg", low=0)
        self.rule = rule
        self.n = n
        self.shape = shape
        self.n_neg = n_neg
        self._dev = _device.resolve(device)
        dim = int(np.prod(shape[1:], dtype=np.int64))
        self._c = _core.guide_state(rule._c_spec(), n, dim, n_neg, self._dev)

    @property
    def device(self):
        """Where the state lives: 'cpu' or 'vulkan:N' (guide calls with it run there)."""
        return self._dev

    @property
    def step(self):
        """Number of ``guide`` calls this state has seen."""
        return _core.state_info(self._c)["step"]

    @property
    def posterior(self):
        """DNG: posterior probability of each negative per sample, shape (n_neg, n)."""
        if self.rule.name != "dng":
            return None
        p = _core.state_info(self._c)["host"]
        return None if p is None else p.reshape(self.n_neg, self.n)

    @property
    def momentum(self):
        """SLD: the momentum ν per negative, shape (n_neg, *shape)."""
        if self.rule.name != "sld":
            return None
        nu = _core.state_info(self._c)["device_state"]
        return None if nu is None else nu.reshape((self.n_neg,) + self.shape)

    def observe(self, x_t, x_prev, eps_u, eps_n, alpha_bar, alpha_bar_prev, eta=1.0):
        """DNG: learn from the transition ``x_t -> x_prev`` the caller took (docs/methods.md §4).

        The means are those of a DDIM(eta) step with each prediction; the likelihood variance is
        ``eta² β̃`` (the DDPM posterior variance at eta = 1) or the stride variance
        ``1 - ā/ā_prev`` when eta = 0."""
        if self.rule.name != "dng":
            raise ValueError("observe: only a DNG state learns from transitions")
        x_t = _v.eps_array(x_t, "x_t", self.shape, shape_of="the state's shape")
        x_prev = _v.eps_array(x_prev, "x_prev", self.shape, shape_of="the state's shape")
        eps_u = _v.eps_array(eps_u, "eps_u", self.shape, shape_of="the state's shape")
        negs = _negatives(eps_n, self.shape)
        if len(negs) != self.n_neg:
            raise ValueError(f"eps_n: the state tracks {self.n_neg} negatives, got {len(negs)}")
        ab = _v.real(alpha_bar, "alpha_bar", low=0.0, high=1.0, low_open=True)
        abp = _v.real(alpha_bar_prev, "alpha_bar_prev", low=0.0, high=1.0, low_open=True)
        eta = _v.real(eta, "eta", low=0.0)
        _core.observe(self.rule._c_spec(), self._c, _v.flat(x_t), _v.flat(x_prev), _v.flat(eps_u),
                          [_v.flat(e) for e in negs], ab, abp, eta)

    def __repr__(self):
        return f"GuidanceState({self.rule!r}, n={self.n}, negatives={self.n_neg}, step={self.step})"


def _negative_names(eps_n):
    if eps_n is None:
        return []
    if isinstance(eps_n, (list, tuple)):
        return [f"eps_n[{i}]" for i in range(len(eps_n))]
    return ["eps_n"]


def _negatives(eps_n, shape, finite=True):
    if eps_n is None:
        return []
    if isinstance(eps_n, (list, tuple)):
        return [_v.eps_array(e, f"eps_n[{i}]", shape, finite) for i, e in enumerate(eps_n)]
    return [_v.eps_array(eps_n, "eps_n", shape, finite)]


def _out_array(out, shape, inputs):
    """``guide``'s ``out=``: a writeable C-contiguous float32 NumPy array of the inputs' shape that
    shares no memory with what the core reads (it is written while they are read)."""
    if not isinstance(out, np.ndarray) or isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.dtype != np.float32:
        raise TypeError(f"out must have dtype float32, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape} (the shape of eps_u)")
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError("out must be a writeable, aligned, C-contiguous array")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out shares memory with an input; pass a separate buffer")
    return out.reshape(shape[0], -1)


def guide(eps_u, eps_p, eps_n, rule, state=None, *, step=None, num_steps=None, device=None,
          out=None, alpha_bar=None):
    """Apply a guidance ``rule`` to noise predictions from your own loop.

    ``eps_u``, ``eps_p`` (or None): arrays (N, ...); ``eps_n``: None, an array or a list of arrays.
    Returns a new float32 array (N, ...); stateful rules (SLD, DNG) return ``(eps, state)``.
    PyTorch tensors work too (any float dtype, any device, ``requires_grad`` or not): they are read
    detached as float32 on the host (no copy for a float32 CPU tensor) and the result comes back
    as a tensor of ``eps_u``'s dtype and device, outside autograd.
    ``device``: "cpu" (default), "auto", "vulkan" or "vulkan:N" (see docs/api.md); on a Vulkan
    device the arrays are uploaded and the result downloaded each call, and a stateful rule's
    state stays there (later calls with it run on its device).
    ``out``: a float32 NumPy array of ``eps_u``'s shape (C-contiguous, writeable, sharing no
    memory with the inputs) to write the result into, as NumPy ufuncs do; it is returned (as it
    is, also when the inputs are tensors). Reusing one buffer across calls saves allocating and
    first-touching the result's pages each call.
    ``alpha_bar``: the step's noise level ā_t in (0, 1), for rules that read it (CCFG with
    ``tau="nce"`` or ``"pilot_noise"``; they raise naming it when it is missing)."""
    rule = _g.get(rule, "rule")
    if isinstance(rule, _g._NoGuidance):
        raise TypeError("rule must be a guidance rule or a rule name, got None")
    ref = eps_u if _tensors.is_tensor(eps_u) else None
    eps_u, eps_p, eps_n = _host_arrays(eps_u, eps_p, eps_n)
    # float32 arrays are checked for NaN/Inf by the core as it reads them (names passed below)
    u = _v.eps_array(eps_u, "eps_u", finite=False)
    shape = u.shape
    p = None if eps_p is None else _v.eps_array(eps_p, "eps_p", shape, finite=False)
    negs = _negatives(eps_n, shape, finite=False)
    names = ("eps_u", "eps_p", *_negative_names(eps_n))
    dev = None if device is None else _device.resolve(device)
    if state is not None:
        if not isinstance(state, GuidanceState):
            raise TypeError(f"state must be a GuidanceState from ccfg.guide, got {type(state).__name__}")
        if state.rule != rule:
            raise ValueError(f"state belongs to {state.rule!r}, not {rule!r}")
        if state.shape != shape or state.n_neg != len(negs):
            raise ValueError(f"state was made for shape {state.shape} with {state.n_neg} negatives, "
                             f"got shape {shape} with {len(negs)}")
        if dev is not None and dev != state.device:
            raise ValueError(f"device={device!r}, but the state lives on {state.device}")
        dev = state.device
    elif rule.stateful:
        state = GuidanceState(rule, shape[0], shape, len(negs), device=dev or "cpu")
    if dev is None:
        dev = "cpu"
    if num_steps is None:
        if rule.negative_window != (0.0, 1.0):
            raise ValueError("num_steps: a negative_window needs step and num_steps")
        num_steps = 0
    else:
        num_steps = _v.integer(num_steps, "num_steps", low=1)
    if step is None:
        step = state.step if state is not None else 0
    step = _v.integer(step, "step", low=0)
    alpha_bar = (float("nan") if alpha_bar is None else
                 _v.real(alpha_bar, "alpha_bar", low=0.0, high=1.0, low_open=True))
    flat_u, flat_p = _v.flat(u), None if p is None else _v.flat(p)
    flat_n = [_v.flat(e) for e in negs]
    target = None
    if out is not None:
        target = _out_array(out, shape, [a for a in (flat_u, flat_p, *flat_n) if a is not None])
    # NaN/Inf inputs raise ValueError naming the input; a NaN/Inf result (float32 overflow in
    # the rule) FloatingPointError naming the rule
    res = _core.guide(_rule_spec(rule, shape), flat_u, flat_p, flat_n,
                      None if state is None else state._c, step, num_steps, dev, target, names,
                      repr(rule), alpha_bar)
    if out is not None:
        res = out
    else:
        res = res.reshape(shape)
        if ref is not None:
            res = _tensors.like(res, ref)
    return (res, state) if rule.stateful else res


def _host_arrays(eps_u, eps_p, eps_n):
    """Torch tensors among the inputs as float32 NumPy arrays (see ccfg/_tensors.py)."""
    def conv(x, name):
        return _tensors.to_array(x, name) if _tensors.is_tensor(x) else x
    if isinstance(eps_n, (list, tuple)):
        eps_n = [conv(e, f"eps_n[{i}]") for i, e in enumerate(eps_n)]
    else:
        eps_n = conv(eps_n, "eps_n")
    return conv(eps_u, "eps_u"), conv(eps_p, "eps_p"), eps_n


def randn(seed, n, shape, stream=0):
    """Standard normals, float32 (n, *shape): sample i of seed s is the same whatever n is."""
    seed = _v.seed(seed)
    # the Philox counter holds the sample index, the block of 4 values and the stream in 32 bits
    # each: past these they would wrap and repeat earlier numbers
    n = _v.integer(n, "n", low=0, high=2 ** 32)
    stream = _v.integer(stream, "stream", low=0, high=2 ** 32 - 1)
    shape = _v.shape(shape)
    dim = math.prod(shape)
    if dim > 2 ** 34:
        raise ValueError(f"shape: {dim} values per sample; at most 2**34 (the counter's block "
                         "index is 32 bits)")
    return _core.randn(seed, n, dim, stream, 0).reshape((n,) + shape)


def _interactive(stream):
    """A terminal or a Jupyter kernel's stream: where a redrawn (\\r) bar renders as one line."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):        # no isatty, or a closed stream
        return False
    # ipykernel's OutStream renders \r like a terminal; a log file or a pipe does not
    return type(stream).__module__.startswith("ipykernel")


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Progress:
    """Progress of one ``sample`` run on stderr (read when the run starts, so a redirected
    ``sys.stderr`` is honoured). On a terminal or in Jupyter: a one-line bar redrawn with ``\\r``
    at most every 0.1 s. Anywhere else (a log file, a pipe, CI): plain lines, one every 10 % of
    the steps or 5 s, whichever comes later, and one at the end — each with step/steps, elapsed
    time and ETA, so a log gets a few readable lines instead of hundreds of redraws."""

    LINE_FRACTION = 0.1      # a plain line every 10 % of the steps ...
    LINE_SECONDS = 5.0       # ... but not more often than every 5 s

    def __init__(self, label, stream=None):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.bar = _interactive(self.stream)
        self.t0 = self.last = time.perf_counter()
        self.last_done = 0

    def __call__(self, done, steps):
        now = time.perf_counter()
        elapsed = now - self.t0
        eta = elapsed / done * (steps - done) if done else float("nan")
        timing = f"{_clock(elapsed)} elapsed" + (f", ETA {_clock(eta)}" if 0 < done < steps else "")
        if self.bar:
            if done < steps and now - self.last < 0.1:
                return
            width = 30
            bar = "#" * (width * done // steps)
            self.stream.write(f"\r{self.label} [{bar:.<{width}}] {done}/{steps} {timing}")
            if done == steps:
                self.stream.write("\n")
        else:
            if done < steps and (done - self.last_done < max(1, steps * self.LINE_FRACTION)
                                 or now - self.last < self.LINE_SECONDS):
                return
            self.last_done = done
            self.stream.write(f"{self.label}: step {done}/{steps} ({100 * done // steps}%), "
                              f"{timing}\n")
        self.last = now
        self.stream.flush()


def _negative_list(negative):
    if negative is None:
        return []
    return list(negative) if isinstance(negative, (list, tuple)) else [negative]


def _offset_drift_weight(plan, sampler, eta):
    """sum over the run's steps of 1 / (2 var_k): the log p one unit of DNG offset adds over
    the run. var_k is the variance DNG's update (csrc/rules/dng.c) divides by at step k: η² β̃
    for a stochastic step (η = 1 for ddpm and euler_ancestral, DDIM's eta), the stride variance
    1 - ā/ā_prev for a deterministic one; steps with var_k = 0 (the last, onto ā = 1) add
    nothing."""
    ab = np.asarray(plan["alpha_bars"], np.float64)
    abn = np.asarray(plan["alpha_bars_next"], np.float64)
    e = 1.0 if sampler in ("ddpm", "euler_ancestral") else (eta if sampler == "ddim" else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if e > 0:
            bt = (1.0 - abn) / (1.0 - ab) * (1.0 - ab / abn)
            var = np.where(ab < 1.0, e * e * bt, 0.0)
        else:
            var = 1.0 - ab / abn
        w = np.where(var > 0, 0.5 / np.where(var > 0, var, 1.0), 0.0)
    return float(np.sum(w))


def dng_scaled_offset(sampler, steps, scheduler=None, eta=0.0, offset=_g.DNG.OFFICIAL_OFFSET,
                      reference_steps=None):
    """DNG's per-step offset for a run of ``steps`` steps of ``sampler`` such that the offset's
    total drift of log p, sum_k offset_K / (2 var_k), equals that of ``offset`` over the official
    run (DDPM with ``reference_steps`` steps, default ``num_train_timesteps``, on the same
    training schedule):  offset_K = offset * W_ref / W_run with W = sum_k 1 / (2 var_k)
    (docs/methods.md §4). On the linear schedule the official run drifts 29.2 nats, a DDPM run
    of 10-100 steps with the official offset 1.0-1.35 nats, so the scaled offset is 22-29 times
    the official one there. The total matches, not its timing: a short run gets most of it in its
    last step (98.9 % at 20 DDPM steps), the official run half of it before t = 50
    (docs/methods.md §4.5)."""
    cfg = as_config(scheduler)
    sampler = check_sampler(sampler)
    steps = _v.integer(steps, "steps", low=1)
    eta = _v.real(eta, "eta", low=0.0)
    offset = _v.real(offset, "offset")
    ref = cfg.num_train_timesteps if reference_steps is None else \
        _v.integer(reference_steps, "reference_steps", low=1)
    w_run = _offset_drift_weight(_core.plan(cfg._spec(sampler, steps, eta)), sampler, eta)
    w_ref = _offset_drift_weight(_core.plan(cfg._spec("ddpm", ref)), "ddpm", 1.0)
    if w_run <= 0:
        raise ValueError(f"sampler: a {sampler} run of {steps} steps has no step DNG learns from")
    return offset * w_ref / w_run


def sample(model, positive=None, negative=None, guidance=None, sampler="ddim", steps=50, n=16,
           seed=0, x_T=None, return_trajectory=False, progress=True, *, eta=0.0, karras=False,
           scheduler=None, device="auto", null=None, noise_variance=None):
    """Sample ``model`` with a negative-guidance rule; returns float32 (n, *model.shape).

    ``guidance``: a rule (``ccfg.CCFG(scale=5)``), a name (``"ccfg"``) or None. ``positive``: one
    condition; ``negative``: one or a list; ``null``: the unconditional condition (a PythonModel
    receives it instead of None, e.g. an empty prompt's embedding; a class-conditional UNet takes a
    class or concept for its null class). ``device``: "auto" (a GPU if there is one and the model
    runs there, else the CPU), "cpu", "vulkan" or "vulkan:N". ``progress``: True (a bar on a
    terminal or in Jupyter, a plain line with ETA every 10 % / 5 s in logs and pipes), False
    (silent) or a callable(step, steps). Names (sampler, rule, device, concepts) are matched
    case-insensitively. ``noise_variance`` (ddpm only): "fixed_small" (β̃_t, diffusers' default)
    or "fixed_large" (β_t, DNG's official sampler); None takes the scheduler config's
    ``variance_type``. A DNG with ``offset="scaled"`` gets its offset sized to this run
    (``dng_scaled_offset``). See docs/api.md for every argument."""
    if not hasattr(model, "_c_model"):
        raise TypeError("model must be a ccfg model (GaussianMixture, PythonModel, UNet, ...), "
                        f"got {type(model).__name__}")
    shape = getattr(model, "shape", None)
    if shape is None:
        raise ValueError("model: it has no sample shape (a UNet whose config has no sample_size: "
                         "load it with UNet.from_pretrained(path, sample_size=...))")
    shape = _v.shape(shape)
    rule = _g.get(guidance)
    sampler = check_sampler(sampler)
    steps = _v.integer(steps, "steps", low=1)
    n = _v.integer(n, "n", low=1)
    seed = _v.seed(seed)
    eta = _v.real(eta, "eta", low=0.0)
    if not isinstance(karras, bool):
        raise TypeError("karras must be a bool")
    if karras and sampler in ("ddim", "ddpm"):
        raise ValueError(f"karras: Karras sigmas need a sigma-space sampler, not {sampler!r}")
    if eta and sampler != "ddim":
        raise ValueError(f"eta applies to the ddim sampler only, not {sampler!r}")
    if noise_variance is not None:
        noise_variance = _v.name(noise_variance, "noise_variance", VARIANCE_TYPES)
        if sampler != "ddpm":
            raise ValueError(f"noise_variance applies to the ddpm sampler only, not {sampler!r}")
    # a model evaluated on the host (PythonModel) would make a GPU pay two transfers per step for
    # a few cheap vector ops: "auto" keeps such runs on the CPU backend; the C models (mixtures,
    # UNet) run on whichever device is picked
    dev = _device.resolve(device, host_model=not model._runs_in_c)
    cfg = as_config(scheduler, getattr(model, "scheduler", None))
    pred = _v.name(getattr(model, "prediction_type", None) or cfg.prediction_type,
                   "prediction_type", PREDICTIONS)

    if isinstance(rule, _g.DNG) and rule.offset == "scaled":
        rule = rule._with_offset(dng_scaled_offset(sampler, steps, cfg, eta))

    if x_T is None:
        x0 = randn(seed, n, shape, 0)
    else:
        x0 = _v.eps_array(x_T, "x_T", (n,) + shape, shape_of="(n,) + the model's sample shape")
    # the model hands C one handle for this run, with its condition ids (CONTRIBUTING.md)
    cmodel, pos, neg_ids = model._c_model(dev, positive, _negative_list(negative), null)

    if progress is True:
        prog = _Progress(f"{type(rule).__name__} {sampler}")
    elif progress is False or progress is None:
        prog = None
    elif callable(progress):
        prog = progress
    else:
        raise TypeError("progress must be a bool or a callable(step, steps)")

    try:
        res = _core.sample(cmodel, PREDICTIONS[pred], _rule_spec(rule, (n,) + shape),
                           cfg._spec(sampler, steps, eta, karras, noise_variance), pos, neg_ids,
                           seed, 0,
                           _v.flat(x0), bool(return_trajectory), prog, dev)
    except FloatingPointError as exc:
        msg = str(exc)
        if "model" in msg or "PythonRule" in msg:       # already says whose output it was
            raise
        # finite model outputs, a non-finite guided prediction or step: say which run it was
        raise FloatingPointError(f"{msg}: guidance {rule!r} with sampler {sampler!r} overflowed "
                                 "float32 (lower the guidance scales)") from None
    if return_trajectory:
        x, traj = res
        return x.reshape((n,) + shape), traj.reshape((traj.shape[0], n) + shape)
    return res.reshape((n,) + shape)
