"""Property-based tests (hypothesis, issue 13 must-have 2): generated calls at ccfg.guide,
ccfg.sample, the model constructors, SchedulerConfig and the UNet config parser, with random
shapes, dtypes and values including extremes and junk. Each call must give a result (finite, of
the promised shape) or raise ValueError/TypeError/RuntimeError/FloatingPointError whose message
names one of the arguments (or config fields) involved; anything else (another exception, a
crash, a NaN in a result) fails.

The examples are derandomized (the same on every run and in CI) and nothing is stored in a
hypothesis database. ``CALLS`` counts the calls made; ``test_zz_call_count`` (last in the file)
checks the total and prints it (run with ``-s`` to see it). ``CCFG_PROPERTIES_SCALE=k`` runs k
times the examples and ``CCFG_PROPERTIES_RANDOM=1`` draws new ones (a longer hunt, not for CI)."""
from __future__ import annotations

import collections
import math
import os
import re
import time

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ccfg  # noqa: E402
from ccfg import guidance as G  # noqa: E402
from ccfg import schedulers as S  # noqa: E402
from ccfg import unet as U  # noqa: E402
from ccfg.models import GaussianMixture, PythonModel, UNet  # noqa: E402

CALLS = collections.Counter()
OK = collections.Counter()
MSGS = collections.defaultdict(collections.Counter)          # the calls that returned a result
RAN = set()
T0 = time.perf_counter()
ERRORS = (ValueError, TypeError, RuntimeError, FloatingPointError)


# a longer, random run (not for CI): CCFG_PROPERTIES_SCALE=10 CCFG_PROPERTIES_RANDOM=1
_SCALE = float(os.environ.get("CCFG_PROPERTIES_SCALE", "1"))
_RANDOM = bool(os.environ.get("CCFG_PROPERTIES_RANDOM"))


def cfg(n):
    return settings(max_examples=max(1, int(n * _SCALE)), deadline=None,
                    derandomize=not _RANDOM, database=None,
                    suppress_health_check=list(HealthCheck))


def call(kind, names, fn, /, *args, **kwargs):
    """fn(*args, **kwargs): its result, or None when it raised one of ERRORS whose message is
    non-empty and mentions one of ``names``. Any other exception propagates (a failure)."""
    CALLS[kind] += 1
    try:
        out = fn(*args, **kwargs)
        OK[kind] += 1
        return out
    except ERRORS as exc:
        msg = str(exc)
        MSGS[kind][re.sub(r"[-0-9.e+]+", "#", msg)[:70]] += 1
        assert msg.strip(), f"{type(exc).__name__} with an empty message"
        assert any(n in msg for n in names), (
            f"{type(exc).__name__}({msg!r}) names none of {sorted(names)}")
        return None


# ----------------------------------------------------------------------------- value strategies
EXTREME_FLOATS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45, 5e-324, 1e30, -1e30, 3.4e38,
                                  3.5e38, 1e39, -1e39, 1e308, float("inf"), float("-inf"),
                                  float("nan")])
FLOATS = st.one_of(st.floats(-10, 10), st.floats(0, 1), EXTREME_FLOATS,
                   st.floats(allow_nan=True, allow_infinity=True))
INTS = st.one_of(st.integers(-3, 20), st.sampled_from([2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63,
                                                      2 ** 64, 10 ** 30, -2 ** 31 - 1]))
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.lists(st.integers(0, 3),
                                                                          max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
ANY = st.one_of(FLOATS, INTS, JUNK)


def rare(odds):
    """True about once in odds + 1 draws (hypothesis favours the first element of a choice, so
    not ``integers(0, odds) == 0``, which it draws far more often)."""
    return st.sampled_from([False] * odds + [True])


@st.composite
def mostly(draw, valid, bad=ANY, odds=8):
    """``valid`` (odds in odds + 1), else ``bad``: most calls get past the argument checks and
    reach the computation, some test the checks."""
    return draw(bad) if draw(rare(odds)) else draw(valid)


PARAM = mostly(st.one_of(st.floats(-10, 10), st.floats(0, 1)))
WINDOW = mostly(st.one_of(st.none(), st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted)
                          .map(tuple)),
                st.one_of(st.tuples(FLOATS, FLOATS), st.lists(st.floats(0, 1), max_size=3),
                          JUNK))


def _py_fn(kind):
    def fn(u, p, ns):
        if kind == "ok":
            with np.errstate(over="ignore", invalid="ignore"):
                return u + 2.0 * (p - u)
        if kind == "nan":
            return np.full_like(u, np.nan)
        if kind == "inf64":
            return np.full(u.shape, 1e39)
        if kind == "shape":
            return u[:, None]
        if kind == "list":
            return u.tolist()
        if kind == "str":
            return np.full(u.shape, "x")
        if kind == "masked":
            return np.ma.masked_array(u, mask=np.ones(u.shape, bool))
        return None
    fn.__name__ = f"rule_{kind}"
    return fn


PY_KINDS = ["ok", "nan", "inf64", "shape", "list", "str", "masked", "none"]

def P(lo, hi):
    return mostly(st.floats(lo, hi))


SCALE = mostly(st.one_of(st.floats(-2, 20), st.sampled_from([1e30, 3e38, -1e30])))
NSCALE = mostly(st.one_of(st.none(), st.floats(0, 10)))
BOOL = mostly(st.booleans())
RULE_KWARGS = {
    G.CFG: {"scale": SCALE, "negative_window": WINDOW},
    G.NegativePrompt: {"scale": SCALE, "negative_window": WINDOW},
    G.ComposableNot: {"scale": SCALE, "negative_window": WINDOW},
    G.NegatedCFG: {"scale": SCALE, "negative_scale": NSCALE, "negative_window": WINDOW},
    G.PerpNeg: {"scale": SCALE, "negative_scale": P(0, 5), "batch_global": BOOL,
                "negative_window": WINDOW},
    G.SLD: {"scale": SCALE, "preset": mostly(st.sampled_from(sorted(G.SLD_PRESETS))),
            "warmup": mostly(st.integers(0, 5)), "safety_scale": P(0, 5000),
            "threshold": P(-1, 1), "momentum_scale": P(0, 1), "momentum_beta": P(0, 1),
            "negative_window": WINDOW},
    G.DNG: {"scale": SCALE, "negative_scale": NSCALE, "prior": P(1e-6, 0.8),
            "temperature": P(0, 2), "offset": P(-1, 1), "p_min": P(1e-9, 1e-6),
            "p_max": P(0.8, 0.99), "negative_window": WINDOW},
    G.CCFG: {"scale": SCALE, "tau": P(0, 2), "tau_reduce": mostly(st.sampled_from(
        ["sum", "mean"])), "negative_scale": NSCALE, "naive_positive": BOOL,
        "negative_window": WINDOW},
    G.APG: {"scale": SCALE, "eta": P(-1, 2), "norm_threshold": P(0, 10)},
    G.PythonRule: {"fn": mostly(st.just("ok"), st.sampled_from(PY_KINDS), odds=2).map(_py_fn),
                   "negative_window": WINDOW},
}
assert set(RULE_KWARGS) >= set(G.NAMES.values()), "a rule class has no strategy here"


@st.composite
def rules(draw, sane=False):
    """(rule or None, the names a construction error may mention)"""
    cls = draw(st.sampled_from(sorted(RULE_KWARGS, key=lambda c: c.__name__)))
    opts = RULE_KWARGS[cls]
    if sane:       # moderate parameters: what a sampling run would use
        sane_opts = {k: v for k, v in opts.items() if k in ("scale", "tau", "negative_scale")}
        kwargs = draw(st.fixed_dictionaries({}, optional={k: st.floats(0, 8) for k in sane_opts}))
        if cls is G.PythonRule:
            kwargs["fn"] = draw(st.sampled_from(["ok", "ok", "nan", "shape"]).map(_py_fn))
    else:
        required = {"fn": opts["fn"]} if cls is G.PythonRule else {}
        kwargs = draw(st.fixed_dictionaries(
            required, optional={k: v for k, v in opts.items() if k not in required}))
    names = set(kwargs) | {"negative_window", "prior", "p_min", "p_max", "preset", "fn"}
    rule = call("rule constructors", names, cls, **kwargs)
    return rule


@st.composite
def eps_inputs(draw):
    """(eps_u, eps_p, eps_n): arrays of a random shape and dtype, values from normal to extreme,
    sometimes of mismatched shapes, junk dtypes, masked arrays or nested lists."""
    n = draw(st.integers(1, 4))
    shape = (n,) + tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    size = int(np.prod(shape))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.float16]))
    scale = draw(mostly(st.just(1.0), st.sampled_from([1e-30, 1e20, 1e38, 1e39]), odds=4))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)

    def one():
        with np.errstate(over="ignore", invalid="ignore"):
            a = (scale * rng.standard_normal(size)).reshape(shape).astype(dtype)
        if draw(rare(150)) and size:
            a.flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from(
                [np.nan, np.inf, -np.inf]))
        variant = draw(st.sampled_from(range(200, -1, -1)))
        if variant == 0:
            with np.errstate(invalid="ignore"):
                return a.astype(draw(st.sampled_from([np.int32, np.complex64, object,
                                                      np.bool_])))
        if variant == 1:
            return np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
        if variant == 2:
            return a.tolist()
        if variant == 3:
            return np.zeros(shape[:-1] + (shape[-1] + 1,) if len(shape) > 1 else (n + 1,),
                            dtype)
        if variant == 4:
            return a[None]
        return a

    u = one()
    p = None if draw(rare(5)) else one()
    k = draw(st.integers(0, 3))
    if k == 0:
        ns = draw(st.sampled_from([None, []]))
    elif k == 1 and draw(st.booleans()):
        ns = one()
    else:
        ns = [one() for _ in range(k)]
    return u, p, ns


GUIDE_NAMES = {"eps_u", "eps_p", "eps_n", "rule", "state", "step", "num_steps", "device",
               "PythonRule", "negative_window"}


def check_guide_result(res, u, rule):
    if res is None:
        return None
    out, state = res if isinstance(res, tuple) else (res, None)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == np.shape(u)
    assert np.all(np.isfinite(out)), f"{rule!r}: a non-finite result came back silently"
    return state


# ------------------------------------------------------------------------------------ ccfg.guide
@cfg(1000)
@given(inputs=eps_inputs(), drawn=st.lists(rules(), min_size=1, max_size=3),
       step=mostly(st.one_of(st.none(), st.integers(0, 10)), INTS),
       num_steps=mostly(st.one_of(st.none(), st.integers(1, 10)), INTS),
       device=mostly(st.sampled_from(["cpu", None]), st.sampled_from(["gpu:7", 3, "vulkan:99"]),
                     odds=30))
def test_guide_properties(inputs, drawn, step, num_steps, device):
    RAN.add("guide")
    u, p, ns = inputs
    # every registered rule by name, with its defaults, then the drawn ones
    for rule in [*sorted(G.NAMES), *drawn]:
        if rule is None:
            continue
        res = call("guide", GUIDE_NAMES, ccfg.guide, u, p, ns, rule, step=step,
                   num_steps=num_steps, device=device)
        state = check_guide_result(res, u, rule)
        if state is not None:     # a stateful rule: a second call with its state
            res = call("guide", GUIDE_NAMES, ccfg.guide, u, p, ns, rule, state, device=device)
            check_guide_result(res, u, rule)


# ----------------------------------------------------------------------------------- ccfg.sample
@st.composite
def mixtures(draw):
    K = draw(st.integers(1, 4))
    D = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    means = rng.uniform(-3, 3, (K, D))
    kind = draw(st.sampled_from(["scalar", "iso", "diag", "full"]))
    if kind == "scalar":
        covs = draw(st.floats(0.01, 2))
    elif kind == "iso":
        covs = rng.uniform(0.01, 1, K)
    elif kind == "diag":
        covs = rng.uniform(0.01, 1, (K, D))
    else:
        A = rng.standard_normal((K, D, D))
        covs = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(D)
    weights = None if draw(st.booleans()) else rng.uniform(0.1, 1, K)
    concepts = {f"k{j}": sorted(set(draw(st.lists(st.integers(0, K - 1), min_size=1,
                                                   max_size=K))))
                for j in range(draw(st.sampled_from([2, 3, 1, 0])))}
    if draw(rare(3)):     # far apart or very narrow components
        means = means * draw(st.sampled_from([1e3, 1e6]))
    return GaussianMixture(means, covs, weights=weights, concepts=concepts)


def _model_fn(kind):
    def fn(x, t, cond):
        if kind == "ok":
            return 0.5 * x
        if kind == "nan":
            return np.full_like(x, np.nan)
        if kind == "shape":
            return x[:, :1]
        return [[0.0]]
    return fn


CONDITION = mostly(st.one_of(st.none(), st.sampled_from(["k0", "k1", "k2"]),
                             st.integers(0, 2)),
                   st.one_of(st.sampled_from(["zz", -1, 7]), INTS, JUNK))
SAMPLE_NAMES = {"model", "positive", "negative", "guidance", "sampler", "steps", "n", "seed",
                "x_T", "return_trajectory", "progress", "eta", "karras", "scheduler", "device",
                "null", "PythonRule", "rule", "num_train_timesteps", "timestep_spacing",
                "steps_offset"}


@cfg(1000)
@given(data=st.data(), model_kind=mostly(st.just("gmm"), st.sampled_from(["ok", "ok", "nan",
                                                                         "shape", "list"]),
                                         odds=3),
       guidance=mostly(st.one_of(st.none(), st.sampled_from(sorted(G.NAMES)), rules(sane=True)),
                       st.one_of(rules(), JUNK), odds=5),
       sampler=mostly(st.sampled_from(sorted(S.SAMPLERS))),
       steps=mostly(st.integers(1, 6), st.one_of(INTS, JUNK)),
       n=mostly(st.integers(1, 4), st.sampled_from([0, -1, 2 ** 31, 2 ** 64, True, 1.5, "2",
                                                    None])),
       seed=mostly(st.integers(0, 2 ** 64 - 1), INTS), eta=mostly(st.just(0.0), PARAM),
       karras=mostly(st.just(False), st.one_of(st.just(True), JUNK), odds=4))
def test_sample_properties(data, model_kind, guidance, sampler, steps, n, seed, eta, karras):
    RAN.add("sample")
    if model_kind == "gmm":
        model = data.draw(mixtures())
        positive = data.draw(CONDITION)
        negative = data.draw(st.one_of(CONDITION, st.lists(CONDITION, max_size=3)))
        if positive is None and data.draw(st.booleans()):
            negative = None
    else:
        model = PythonModel(_model_fn(model_kind), data.draw(st.sampled_from([2, (1, 2), 3])))
        positive = data.draw(st.one_of(st.none(), st.text(max_size=3), st.integers()))
        negative = data.draw(st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=2)))
        if data.draw(st.booleans()):
            positive = negative = None
    kwargs = dict(guidance=guidance, sampler=sampler, steps=steps, n=n, seed=seed, eta=eta,
                  karras=karras, progress=False, device="cpu")
    if data.draw(rare(5)):
        kwargs["scheduler"] = data.draw(st.fixed_dictionaries({}, optional={
            "num_train_timesteps": st.one_of(st.integers(2, 50), INTS),
            "timestep_spacing": st.sampled_from(["leading", "trailing", "linspace", None, "x"]),
            "steps_offset": st.one_of(st.integers(0, 2), INTS)}))
    if data.draw(rare(5)):
        kwargs["return_trajectory"] = True
    if type(n) is int and 1 <= n <= 4 and data.draw(rare(6)):
        kwargs["x_T"] = np.random.default_rng(0).standard_normal((n,) + model.shape) * \
            data.draw(st.sampled_from([1.0, 1e39]))
    names = SAMPLE_NAMES | ({"PythonRule"} if isinstance(guidance, G.PythonRule) else set())
    res = call("sample", names, ccfg.sample, model, positive, negative, **kwargs)
    if res is not None:
        x = res[0] if isinstance(res, tuple) else res
        assert x.shape == (n,) + model.shape and x.dtype == np.float32
        assert np.all(np.isfinite(x)), "a non-finite sample came back silently"


# ----------------------------------------------------------------------------- model constructors
@st.composite
def gmm_args(draw):
    """Mostly consistent (means, covs, weights, concepts, names), sometimes one part junk."""
    K = draw(st.integers(1, 4))
    D = draw(st.integers(1, 3))
    el = mostly(st.floats(-5, 5), st.one_of(EXTREME_FLOATS, st.floats(-1e6, 1e6)), odds=20)
    means = draw(st.lists(st.lists(el, min_size=D, max_size=D), min_size=K, max_size=K))
    var = mostly(st.floats(1e-3, 3), st.one_of(EXTREME_FLOATS, st.floats(-1, 1e-3)), odds=20)
    kind = draw(st.sampled_from(["scalar", "iso", "diag", "full"]))
    if kind == "scalar":
        covs = draw(var)
    elif kind == "iso":
        covs = draw(st.lists(var, min_size=K, max_size=K))
    elif kind == "diag":
        covs = draw(st.lists(st.lists(var, min_size=D, max_size=D), min_size=K, max_size=K))
    else:
        A = np.array(draw(st.lists(st.floats(-2, 2), min_size=K * D * D, max_size=K * D * D)))
        A = A.reshape(K, D, D)
        covs = (A @ A.transpose(0, 2, 1) + draw(st.sampled_from([1e-3, 0.1, 0.0, -1.0]))
                * np.eye(D)).tolist()
    weights = draw(st.one_of(st.none(), st.lists(mostly(st.floats(0.01, 5), odds=20),
                                                 min_size=K, max_size=K)))
    names = draw(st.one_of(st.none(), st.just([f"n{k}" for k in range(K)])))
    members = st.lists(mostly(st.integers(0, K - 1), st.one_of(st.integers(-2, K + 1),
                                                             st.text(max_size=2)), odds=20),
                       min_size=1, max_size=K)
    concepts = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                                         members, max_size=3)))
    args = dict(means=means, covs=covs, weights=weights, concepts=concepts, names=names)
    if draw(rare(6)):
        args[draw(st.sampled_from(sorted(args)))] = draw(ARRAYISH)
    return args


ARRAYISH = st.one_of(
    st.lists(st.lists(st.floats(-5, 5), min_size=1, max_size=3), min_size=1, max_size=3),
    st.lists(FLOATS, max_size=4), FLOATS, st.lists(st.lists(FLOATS, max_size=3), max_size=3),
    st.lists(st.lists(st.lists(st.floats(-2, 2), min_size=1, max_size=2), max_size=2),
             max_size=3), JUNK)
GMM_NAMES = {"means", "covs", "weights", "concepts", "names", "x", "alpha_bar", "concept"}


@cfg(1500)
@given(args=gmm_args(), data=st.data(), alpha_bar=mostly(st.floats(0, 1), PARAM))
def test_gaussian_mixture_properties(args, data, alpha_bar):
    RAN.add("gmm")
    m = call("GaussianMixture", GMM_NAMES, GaussianMixture, **args)
    if m is None:
        return
    x = data.draw(mostly(st.lists(st.lists(mostly(st.floats(-10, 10), st.floats(-1e6, 1e6)),
                                           min_size=m.dim, max_size=m.dim),
                                  min_size=1, max_size=3), ARRAYISH))
    concept = data.draw(mostly(st.one_of(st.none(), st.sampled_from(m.concept_names or [None])),
                               st.one_of(st.integers(-1, 5), st.text(max_size=2))))
    for fn in (m.eps, m._eps_numpy):
        out = call("GaussianMixture.eps", GMM_NAMES, fn, x, alpha_bar, concept)
        if out is not None:
            assert np.all(np.isfinite(out)), "eps: a non-finite result came back silently"
    if data.draw(st.booleans()):
        out = call("GaussianMixture.log_prob", GMM_NAMES, m.log_prob, x, concept)
        if out is not None:       # -inf: a density that underflows float64, not an error
            assert not np.any(np.isnan(out)), "log_prob: NaN came back silently"
        out = call("GaussianMixture.posterior", GMM_NAMES, m.posterior, x)
        if out is not None:
            assert np.all(np.isfinite(out)), "posterior: a non-finite result came back silently"


@cfg(600)
@given(fn=mostly(st.just(_model_fn("ok")), JUNK), shape=mostly(
           st.one_of(st.integers(1, 5), st.lists(st.integers(1, 4), min_size=1, max_size=3)),
           st.one_of(st.integers(-2, 0), st.lists(st.one_of(st.integers(-1, 4), FLOATS),
                                                  max_size=3), INTS, JUNK)),
       prediction_type=mostly(st.sampled_from(["epsilon", "v_prediction", "sample"]),
                              st.one_of(st.just("x"), JUNK)))
def test_python_model_properties(fn, shape, prediction_type):
    RAN.add("python_model")
    call("PythonModel", {"fn", "shape", "prediction_type"}, PythonModel, fn, shape,
         prediction_type)


# ------------------------------------------------------------------------------ SchedulerConfig
SCHED_FIELDS = {
    "num_train_timesteps": mostly(st.integers(2, 2000), st.one_of(INTS, FLOATS, JUNK), odds=12),
    "beta_start": mostly(st.floats(1e-5, 1e-2), odds=12),
    "beta_end": mostly(st.floats(1e-3, 0.5), odds=12),
    "beta_schedule": mostly(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]),
                            st.one_of(st.just("cosine"), JUNK), odds=12),
    "trained_betas": mostly(st.none(), st.one_of(st.lists(st.floats(1e-4, 0.5), min_size=1,
                                                          max_size=5), JUNK), odds=12),
    "prediction_type": mostly(st.sampled_from(["epsilon", "v_prediction", "sample"]), odds=12),
    "timestep_spacing": mostly(st.sampled_from(["leading", "trailing", "linspace", None]),
                               odds=12),
    "steps_offset": mostly(st.integers(0, 3), st.one_of(INTS, FLOATS, JUNK), odds=12),
    "set_alpha_to_one": mostly(st.booleans(), odds=12),
    "clip_sample": mostly(st.booleans(), odds=12),
    "clip_sample_range": mostly(st.floats(0.1, 10), odds=12),
    "thresholding": mostly(st.booleans(), odds=12),
    "dynamic_thresholding_ratio": mostly(st.floats(0.5, 1), odds=12),
    "sample_max_value": mostly(st.floats(1, 10), odds=12),
    "rescale_betas_zero_snr": mostly(st.just(False), odds=12),
}
DIFFUSERS_EXTRA = {k: mostly(st.sampled_from(list(v)), odds=12) for k, v in S._FIXED.items()}
SCHED_NAMES = set(SCHED_FIELDS) | set(S._FIXED) | {"steps", "sampler", "karras", "eta", "config",
                                                   "scheduler", "spacing"}


@cfg(1500)
@given(fields=st.fixed_dictionaries({}, optional=SCHED_FIELDS),
       extra=st.fixed_dictionaries({}, optional=DIFFUSERS_EXTRA),
       unknown=mostly(st.just({}), st.dictionaries(st.text(min_size=1, max_size=4), ANY,
                                                   max_size=1)),
       sampler=mostly(st.sampled_from(sorted(S.SAMPLERS))),
       steps=mostly(st.integers(1, 30), INTS), karras=mostly(st.just(False), st.just(True), 4),
       eta=st.one_of(st.just(0.0), st.floats(0, 1)))
def test_scheduler_config_properties(fields, extra, unknown, sampler, steps, karras, eta):
    RAN.add("scheduler")
    c = call("SchedulerConfig", SCHED_NAMES, ccfg.SchedulerConfig, **fields)
    d = dict(fields, **extra, **unknown, _class_name="DDIMScheduler")
    names = SCHED_NAMES | {k for k in unknown if isinstance(k, str)}
    c2 = call("SchedulerConfig.from_config", names, ccfg.SchedulerConfig.from_config, d)
    for conf in (c, c2):
        if conf is None:
            continue
        plan = call("schedulers.plan", SCHED_NAMES, S.plan, sampler, steps, conf, karras=karras,
                    eta=eta)
        if plan is not None:
            for k in ("timesteps", "alpha_bars", "alphas_cumprod"):
                assert np.all(np.isfinite(plan[k])), f"plan: non-finite {k}"


# ------------------------------------------------------------------------- UNet config parsing
UNET_FIELDS = [
    "_class_name", "sample_size", "in_channels", "out_channels", "block_out_channels",
    "layers_per_block", "norm_num_groups", "norm_eps", "down_block_types", "up_block_types",
    "mid_block_type", "attention_head_dim", "attn_norm_num_groups", "add_attention",
    "num_class_embeds", "time_embedding_dim", "time_embedding_type", "flip_sin_to_cos",
    "freq_shift", "resnet_time_scale_shift", "downsample_padding", "center_input_sample",
    "mid_block_scale_factor", "act_fn", "class_embed_type", "downsample_type", "upsample_type",
    "cross_attention_dim", "transformer_layers_per_block", "use_linear_projection",
    "upcast_attention", *U._CONDITION_FIXED]
BASES = [
    dict(_class_name="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
         block_out_channels=[8], layers_per_block=1, norm_num_groups=4,
         down_block_types=["DownBlock2D"], up_block_types=["UpBlock2D"], add_attention=False),
    dict(_class_name="UNet2DModel", sample_size=8, in_channels=2, out_channels=2,
         block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
         down_block_types=["DownBlock2D", "AttnDownBlock2D"],
         up_block_types=["AttnUpBlock2D", "UpBlock2D"], num_class_embeds=3),
    dict(_class_name="UNet2DConditionModel", sample_size=8, in_channels=1, out_channels=1,
         block_out_channels=[8, 8], layers_per_block=1, norm_num_groups=4,
         cross_attention_dim=8, attention_head_dim=2,
         down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
         up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"]),
]
CHOICES = ["UNet2DModel", "UNet2DConditionModel", "DownBlock2D", "AttnDownBlock2D", "UpBlock2D",
           "AttnUpBlock2D", "CrossAttnDownBlock2D", "CrossAttnUpBlock2D", "UNetMidBlock2D",
           "UNetMidBlock2DCrossAttn", "silu", "gelu", "positional", "fourier", "default",
           "scale_shift", "conv"]
UNET_VALUE = st.one_of(st.integers(0, 16), st.sampled_from([1, 2, 4, 8, 16]), INTS, FLOATS,
                       st.sampled_from(CHOICES), st.none(), st.booleans(),
                       st.lists(st.one_of(st.integers(0, 16), st.sampled_from(CHOICES)),
                                max_size=4), JUNK)
UNET_NAMES = set(UNET_FIELDS) | {"config", "sample_size", "tensors"}


@st.composite
def unet_configs(draw):
    if draw(rare(4)):        # anything
        return draw(st.dictionaries(st.sampled_from(UNET_FIELDS), UNET_VALUE, max_size=8))
    cfg = dict(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        cfg[draw(st.sampled_from(UNET_FIELDS))] = draw(UNET_VALUE)
    if draw(rare(8)):
        cfg.pop(draw(st.sampled_from(sorted(cfg))), None)
    return cfg


@cfg(2000)
@given(config=unet_configs(), sample_size=mostly(st.none(), UNET_VALUE),
       build=st.integers(0, 2))
def test_unet_config_properties(config, sample_size, build):
    RAN.add("unet")
    c = call("unet._c_config", UNET_NAMES, U._c_config, config)
    if c is None:
        return
    count = U._param_count(c)
    entries = 0
    total = 0
    for names, shape in U._param_layout(c):
        k = len(names) if isinstance(names, tuple) else 1
        total += k * math.prod(shape)
        entries += 1
        if entries > 5000:
            break
    else:
        assert total == count, "_param_count differs from the layout"
    if build or count > 200_000 or entries > 5000:
        return
    tensors = {}
    for names, shape in U._param_layout(c):
        for n_ in (names if isinstance(names, tuple) else (names,)):
            tensors[n_] = np.full(shape, 0.01, np.float32)
    unet = call("UNet", UNET_NAMES, UNet, config, tensors, sample_size=sample_size)
    if unet is None or unet.shape is None or max(unet.shape[1:]) > 16:
        return
    x = np.ones((1,) + unet.shape, np.float32)
    labels = [0] if unet.num_class_embeds else None
    ctx = np.ones((2, unet.cross_attention_dim), np.float32) if unet.cross_attention_dim \
        else None
    out = call("UNet.__call__", UNET_NAMES | {"sample", "timestep", "class_labels",
                                              "encoder_hidden_states"},
               unet, x, 10, labels, encoder_hidden_states=ctx)
    if out is not None:
        assert out.shape == (1, c["out_channels"]) + unet.shape[1:]
        assert np.all(np.isfinite(out))


# ---------------------------------------------------- sharded checkpoints: the weight_map's paths
SHARD_NAMES = ["a.safetensors", "sub/b.safetensors", "../outside.safetensors",
               "sub/../../outside.safetensors", "link.safetensors", "sub/../a.safetensors",
               "./a.safetensors", "", ".", "..", "sub", "\x00a", "missing.safetensors",
               "a.safetensors/", "//etc/passwd"]


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    """a model folder (TINY UNet config) with shards inside, one outside and a symlink out"""
    from ccfg import safetensors as sft
    root = tmp_path_factory.mktemp("shards")
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    cfg = BASES[0]
    (folder / "config.json").write_text(__import__("json").dumps(cfg))
    tensors = {}
    for names, shape in U._param_layout(U._c_config(cfg)):
        for n_ in (names if isinstance(names, tuple) else (names,)):
            tensors[n_] = np.zeros(shape, np.float32)
    names = sorted(tensors)
    half = len(names) // 2
    for path, part in ((folder / "a.safetensors", names[:half]),
                       (folder / "sub" / "b.safetensors", names[half:]),
                       (root / "outside.safetensors", names)):
        sft.save(str(path), {n_: tensors[n_] for n_ in part})
    (folder / "link.safetensors").symlink_to(root / "outside.safetensors")
    return folder, names, half


@cfg(300)
@given(data=st.data())
def test_weight_map_properties(shard_folder, data):
    """UNet.from_pretrained on a sharded folder whose index names random paths: a result, or a
    ValueError naming the index, the entry or the tensor; and no file outside the folder is read
    (every path _st.load opens resolves inside it)."""
    import json
    import os
    from ccfg import safetensors as sft
    RAN.add("weight_map")
    folder, names, half = shard_folder
    good = {n_: "a.safetensors" if i < half else "sub/b.safetensors"
            for i, n_ in enumerate(names)}
    wm = dict(good)
    for _ in range(data.draw(st.integers(0, 3))):
        wm[data.draw(st.sampled_from(names))] = data.draw(st.sampled_from(SHARD_NAMES))
    index = {"metadata": {}, "weight_map": wm}
    if data.draw(rare(8)):
        index = data.draw(st.one_of(JUNK, st.just({"weight_map": data.draw(JUNK)})))
    path = folder / (U.WEIGHTS_NAME + ".index.json")
    path.write_text(json.dumps(index))
    opened = []
    real_load = sft.load

    def spy(p, names_=None):
        opened.append(os.path.realpath(p))
        return real_load(p, names_)

    U._st.load = spy
    try:
        call("UNet.from_pretrained (sharded)", {"index.json", "weight_map", "tensor", "path"},
             UNet.from_pretrained, folder)
    finally:
        U._st.load = real_load
    root = os.path.realpath(folder)
    for p in opened:
        assert os.path.commonpath([root, p]) == root, f"read {p}, outside the model folder"


# ------------------------------------------------------------------------------ the total count
def test_zz_call_count():
    """The closing count (run the whole file: ``pytest -s tests/test_properties.py``)."""
    if RAN != {"guide", "sample", "gmm", "python_model", "scheduler", "unet", "weight_map"}:
        pytest.skip("only part of the file ran")
    total = sum(CALLS.values())
    print(f"\nhypothesis: {total} generated calls in {time.perf_counter() - T0:.1f} s: "
          + ", ".join(f"{k} {v} ({OK[k]} results)" for k, v in sorted(CALLS.items())))
    if os.environ.get("CCFG_PROPERTIES_DEBUG"):     # the commonest errors of each kind
        for k, c in MSGS.items():
            print(k, c.most_common(8))
    assert total >= 10_000
