"""The two calls researchers make: ``sample`` (the whole loop in C) and ``guide`` (one rule on
arrays from their own loop). Both validate input here and hand clean float32 arrays to C."""
from __future__ import annotations

import numbers
import sys
import time

import numpy as np

from . import _core
from . import guidance as _g
from .schedulers import PREDICTIONS, as_config, check_sampler

__all__ = ["sample", "guide", "randn", "GuidanceState"]

# auto's preference among Vulkan device types; lavapipe-like CPU devices ("cpu") never win over
# the CPU backend, but "vulkan" and "vulkan:N" can select them
_AUTO_TYPES = ("discrete", "integrated")
_VULKAN_ORDER = ("discrete", "integrated", "virtual", "cpu", "other")


def _vulkan_devices():
    return [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]


def _vulkan_missing():
    notes = [d.get("note") for d in _core.devices() if d["backend"] == "vulkan" and "index" not in d]
    return notes[0] if notes and notes[0] else "no usable Vulkan device"


def _device(device, name="device"):
    """A device selector -> the C core's index: -1 for the CPU backend, N for Vulkan device N.

    "auto": a discrete GPU, else an integrated one, else the CPU backend; "cpu"; "vulkan": the best
    Vulkan device of any type (lavapipe included); "vulkan:N"; or an entry of ccfg.devices()."""
    if isinstance(device, dict) and "selector" in device:
        device = device["selector"]
    if not isinstance(device, str):
        raise TypeError(f"{name} must be 'auto', 'cpu', 'vulkan', 'vulkan:N' or an entry of "
                        f"ccfg.devices(), got {type(device).__name__}")
    sel = device.strip().lower()
    if sel == "cpu":
        return -1
    if sel == "auto":
        usable = [d for d in _vulkan_devices() if d["available"] and d["type"] in _AUTO_TYPES]
        if not usable:
            return -1
        return min(usable, key=lambda d: (_AUTO_TYPES.index(d["type"]), d["index"]))["index"]
    if sel == "vulkan":
        usable = [d for d in _vulkan_devices() if d["available"]]
        if not usable:
            raise RuntimeError(f"{name}='vulkan': no Vulkan device: {_vulkan_missing()}")
        return min(usable, key=lambda d: (_VULKAN_ORDER.index(d["type"]), d["index"]))["index"]
    if sel.startswith("vulkan:"):
        num = sel[len("vulkan:"):]
        if not num.isdigit():
            raise ValueError(f"{name}: expected 'vulkan:N' with a device number N, got {device!r}")
        idx = int(num)
        found = _vulkan_devices()
        if not found:
            raise RuntimeError(f"{name}={device!r}: no Vulkan device: {_vulkan_missing()}")
        match = [d for d in found if d["index"] == idx]
        if not match:
            raise ValueError(f"{name}={device!r}: no such device (found vulkan:0..vulkan:"
                             f"{len(found) - 1})")
        if not match[0]["available"]:
            raise RuntimeError(f"{name}={device!r}: {match[0]['name']} cannot run ccfg "
                               "(needs Vulkan 1.2 and a compute queue)")
        return idx
    raise ValueError(f"{name} must be 'auto', 'cpu', 'vulkan' or 'vulkan:N', got {device!r}")


def _device_name(index):
    return "cpu" if index < 0 else f"vulkan:{index}"

_FLOAT_KINDS = (np.float16, np.float32, np.float64)


def _eps_array(value, name, shape=None):
    """A finite float array of at least 1 dimension; TypeError/ValueError naming ``name``."""
    if not isinstance(value, np.ndarray):
        if hasattr(value, "__array__") or isinstance(value, (list, tuple)):
            value = np.asarray(value)
        else:
            raise TypeError(f"{name} must be a NumPy array, got {type(value).__name__}")
    if value.dtype.type not in _FLOAT_KINDS:
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if value.ndim < 1 or value.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {value.shape}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape} (the shape of eps_u)")
    if not _all_finite(value):
        raise ValueError(f"{name} contains NaN or Inf")
    return value


def _all_finite(a):
    # a sum is NaN/Inf whenever an element is (one fast pass, no temporary); only an overflowing
    # sum of finite values needs the exact elementwise check
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    return bool(np.isfinite(a).all())


def _flat(a):
    return np.ascontiguousarray(a, dtype=np.float32).reshape(a.shape[0], -1)


def _python_rule_spec(rule, shape):
    """The rule's C tuple, with its Python function adapted to (n, dim) arrays."""
    spec = rule._spec()
    if rule._kind != _g._PYTHON:
        return spec
    fn = rule.fn

    def flat_fn(u, p, negs):
        out = fn(u.reshape(shape), p.reshape(shape), [e.reshape(shape) for e in negs])
        out = np.asarray(out)
        if out.shape != shape:
            raise ValueError(f"the PythonRule returned shape {out.shape}, expected {shape}")
        return _flat(out)

    return spec[:-1] + (flat_fn,)


class GuidanceState:
    """Per-sample state of a stateful rule (SLD momentum, DNG posterior) across ``guide`` calls."""

    def __init__(self, rule, n, shape, n_neg, device="cpu"):
        self.rule = rule
        self.n = n
        self.shape = tuple(shape)
        self.n_neg = n_neg
        self._device = _device(device)
        dim = int(np.prod(shape[1:], dtype=np.int64))
        self._c = _core.guide_state(rule._spec(), n, dim, n_neg, self._device)

    @property
    def device(self):
        """Where the state lives: 'cpu' or 'vulkan:N' (guide calls with it run there)."""
        return _device_name(self._device)

    @property
    def step(self):
        """Number of ``guide`` calls this state has seen."""
        return _core.state_info(self._c)["step"]

    @property
    def posterior(self):
        """DNG: posterior probability of each negative per sample, shape (n_neg, n)."""
        return _core.state_info(self._c)["dng_p"]

    @property
    def momentum(self):
        """SLD: the momentum ν per negative, shape (n_neg, *shape)."""
        nu = _core.state_info(self._c)["sld_nu"]
        return None if nu is None else nu.reshape((self.n_neg,) + self.shape)

    def observe(self, x_t, x_prev, eps_u, eps_n, alpha_bar, alpha_bar_prev, eta=1.0):
        """DNG: learn from the transition ``x_t -> x_prev`` the caller took (methods §4).

        The means are those of a DDIM(eta) step with each prediction; the likelihood variance is
        ``eta² β̃`` (the DDPM posterior variance at eta = 1) or the stride variance
        ``1 - ā/ā_prev`` when eta = 0."""
        if self.rule._kind != _g._DNG:
            raise ValueError("observe: only a DNG state learns from transitions")
        x_t = _eps_array(x_t, "x_t", self.shape)
        x_prev = _eps_array(x_prev, "x_prev", self.shape)
        eps_u = _eps_array(eps_u, "eps_u", self.shape)
        negs = _negatives(eps_n, self.shape)
        if len(negs) != self.n_neg:
            raise ValueError(f"eps_n: the state tracks {self.n_neg} negatives, got {len(negs)}")
        ab = _g._real(alpha_bar, "alpha_bar", low=0.0, high=1.0, low_open=True)
        abp = _g._real(alpha_bar_prev, "alpha_bar_prev", low=0.0, high=1.0, low_open=True)
        eta = _g._real(eta, "eta", low=0.0)
        _core.dng_observe(self.rule._spec(), self._c, _flat(x_t), _flat(x_prev), _flat(eps_u),
                          [_flat(e) for e in negs], ab, abp, eta)

    def __repr__(self):
        return f"GuidanceState({self.rule!r}, n={self.n}, negatives={self.n_neg}, step={self.step})"


def _negatives(eps_n, shape):
    if eps_n is None:
        return []
    if isinstance(eps_n, (list, tuple)):
        return [_eps_array(e, f"eps_n[{i}]", shape) for i, e in enumerate(eps_n)]
    return [_eps_array(eps_n, "eps_n", shape)]


def guide(eps_u, eps_p, eps_n, rule, state=None, *, step=None, num_steps=None, device=None):
    """Apply a guidance ``rule`` to noise predictions from your own loop.

    ``eps_u``, ``eps_p`` (or None): arrays (N, ...); ``eps_n``: None, an array or a list of arrays.
    Returns a new float32 array (N, ...); stateful rules (SLD, DNG) return ``(eps, state)``.
    ``device``: "cpu" (default), "auto", "vulkan" or "vulkan:N" (see docs/api.md); on a Vulkan
    device the arrays are uploaded and the result downloaded each call, and a stateful rule's
    state stays there (later calls with it run on its device)."""
    rule = _g.get(rule, "rule")
    if isinstance(rule, _g._NoGuidance):
        raise TypeError("rule must be a guidance rule or a rule name, got None")
    u = _eps_array(eps_u, "eps_u")
    shape = u.shape
    p = None if eps_p is None else _eps_array(eps_p, "eps_p", shape)
    negs = _negatives(eps_n, shape)
    dev = None if device is None else _device(device)
    if state is not None:
        if not isinstance(state, GuidanceState):
            raise TypeError(f"state must be a GuidanceState from ccfg.guide, got {type(state).__name__}")
        if state.rule != rule:
            raise ValueError(f"state belongs to {state.rule!r}, not {rule!r}")
        if state.shape != shape or state.n_neg != len(negs):
            raise ValueError(f"state was made for shape {state.shape} with {state.n_neg} negatives, "
                             f"got shape {shape} with {len(negs)}")
        if dev is not None and dev != state._device:
            raise ValueError(f"device={device!r}, but the state lives on {state.device}")
        dev = state._device
    elif rule.stateful:
        state = GuidanceState(rule, shape[0], shape, len(negs),
                              device=_device_name(-1 if dev is None else dev))
    if dev is None:
        dev = -1
    if num_steps is None:
        if rule.negative_window != (0.0, 1.0):
            raise ValueError("num_steps: a negative_window needs step and num_steps")
        num_steps = 0
    else:
        num_steps = _g._int(num_steps, "num_steps", low=1)
    if step is None:
        step = state.step if state is not None else 0
    step = _g._int(step, "step", low=0)
    out = _core.guide(_python_rule_spec(rule, shape), _flat(u), None if p is None else _flat(p),
                      [_flat(e) for e in negs], None if state is None else state._c, step,
                      num_steps, dev)
    out = out.reshape(shape)
    return (out, state) if rule.stateful else out


def randn(seed, n, shape, stream=0):
    """Standard normals, float32 (n, *shape): sample i of seed s is the same whatever n is."""
    seed = _seed(seed)
    n = _g._int(n, "n", low=0)
    stream = _g._int(stream, "stream", low=0)
    shape = _shape(shape)
    dim = int(np.prod(shape, dtype=np.int64))
    return _core.randn(seed, n, dim, stream, 0).reshape((n,) + shape)


def _seed(seed):
    seed = _g._int(seed, "seed", low=0)
    if seed >= 2 ** 64:
        raise ValueError("seed must be < 2**64")
    return seed


def _shape(shape):
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must have positive sizes, got {shape}")
    return shape


class _Progress:
    """A one-line progress bar on stderr (terminals and Jupyter), redrawn at most every 0.1 s."""

    def __init__(self, label):
        self.label = label
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done, steps):
        now = time.perf_counter()
        if done < steps and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        bar = "#" * (width * done // steps)
        sys.stderr.write(f"\r{self.label} [{bar:.<{width}}] {done}/{steps} {now - self.t0:.1f}s")
        if done == steps:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _conditions(model, positive, negative):
    """Condition ids for the C core and, for Python models, the id -> value table."""
    negs = [] if negative is None else list(negative) if isinstance(negative, (list, tuple)) else [negative]
    if hasattr(model, "_condition_id"):
        pos = -1 if positive is None else model._condition_id(positive, "positive")
        ids = tuple(model._condition_id(v, "negative") for v in negs)
        return pos, ids, None
    values = ([] if positive is None else [positive]) + negs
    pos = -1 if positive is None else 0
    ids = tuple(range(len(values) - len(negs), len(values)))
    return pos, ids, values


def _python_model(model, shape, values):
    fn = model.fn

    def call(x, t, alpha_bar, cond):
        rows = x.shape[0]
        conds = [None if c < 0 else values[c] for c in cond.tolist()]
        out = np.asarray(fn(x.reshape((rows,) + shape), np.full(rows, t), conds))
        if out.shape != (rows,) + shape:
            raise ValueError(f"the model returned shape {out.shape}, expected {(rows,) + shape}")
        return np.ascontiguousarray(out, dtype=np.float32).reshape(rows, -1)

    return call


def sample(model, positive=None, negative=None, guidance=None, sampler="ddim", steps=50, n=16,
           seed=0, x_T=None, return_trajectory=False, progress=True, *, eta=0.0, karras=False,
           scheduler=None, device="auto"):
    """Sample ``model`` with a negative-guidance rule; returns float32 (n, *model.shape).

    ``guidance``: a rule (``ccfg.CCFG(scale=5)``), a name (``"ccfg"``) or None. ``positive``: one
    condition; ``negative``: one or a list. ``device``: "auto" (a GPU if there is one and the model
    runs there, else the CPU), "cpu", "vulkan" or "vulkan:N". See docs/api.md for every argument."""
    shape = getattr(model, "shape", None)
    native = hasattr(model, "_c_unet_sample")      # ccfg.models.UNet: the model runs in C too
    if native and shape is None:
        raise ValueError("model: the UNet's config has no sample_size; load it with "
                         "UNet.from_pretrained(path, sample_size=...)")
    if shape is None or not (native or hasattr(model, "_c_spec") or hasattr(model, "fn")):
        raise TypeError("model must be a ccfg model (GaussianMixture, PythonModel, ...), "
                        f"got {type(model).__name__}")
    shape = _shape(shape)
    rule = _g.get(guidance)
    sampler = check_sampler(sampler)
    steps = _g._int(steps, "steps", low=1)
    n = _g._int(n, "n", low=1)
    seed = _seed(seed)
    eta = _g._real(eta, "eta", low=0.0)
    if not isinstance(karras, bool):
        raise TypeError("karras must be a bool")
    if karras and sampler in ("ddim", "ddpm"):
        raise ValueError(f"karras: Karras sigmas need a sigma-space sampler, not {sampler!r}")
    if eta and sampler != "ddim":
        raise ValueError(f"eta applies to the ddim sampler only, not {sampler!r}")
    # a model evaluated on the host (PythonModel) would make a GPU pay two transfers per step for
    # a few cheap vector ops: "auto" keeps such runs on the CPU backend
    host_model = not hasattr(model, "_c_spec")
    dev = -1 if host_model and isinstance(device, str) and device.strip().lower() == "auto" \
        else _device(device)
    cfg = as_config(scheduler, getattr(model, "scheduler", None))
    pred = getattr(model, "prediction_type", None) or cfg.prediction_type
    if pred not in PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {sorted(PREDICTIONS)}, got {pred!r}")

    if x_T is None:
        x0 = randn(seed, n, shape, 0)
    else:
        x0 = _eps_array(x_T, "x_T", (n,) + shape)
    pos, neg_ids, values = _conditions(model, positive, negative)
    if native:
        kind, cmodel = 2, None
    elif hasattr(model, "_c_spec"):
        kind, cmodel = 0, model._c_spec()
    else:
        kind, cmodel = 1, _python_model(model, shape, values)

    if progress is True:
        prog = _Progress(f"{type(rule).__name__} {sampler}")
    elif progress is False or progress is None:
        prog = None
    elif callable(progress):
        prog = progress
    else:
        raise TypeError("progress must be a bool or a callable(step, steps)")

    if native:
        if dev != -1:    # the UNet's layers exist on the CPU only (csrc/nn_cpu.c)
            raise ValueError(f"device: a UNet runs on the CPU only, got {device!r}")
        res = model._c_unet_sample(PREDICTIONS[pred], _python_rule_spec(rule, (n,) + shape),
                                   cfg._spec(sampler, steps, eta, karras), pos, neg_ids, seed, 0,
                                   _flat(x0), bool(return_trajectory), prog)
    else:
        res = _core.sample(kind, cmodel, PREDICTIONS[pred], _python_rule_spec(rule, (n,) + shape),
                           cfg._spec(sampler, steps, eta, karras), pos, neg_ids, seed, 0,
                           _flat(x0), bool(return_trajectory), prog, dev)
    if return_trajectory:
        x, traj = res
        return x.reshape((n,) + shape), traj.reshape((traj.shape[0], n) + shape)
    return res.reshape((n,) + shape)
