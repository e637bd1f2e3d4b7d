"""Bad input to ccfg.guide and the rule constructors raises TypeError/ValueError naming the argument
(never a crash, never a silent NaN)."""
from __future__ import annotations

import numpy as np
import pytest

import ccfg


def arrays(shape=(3, 2, 4), k=1, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(shape).astype(dtype)
    p = (u + 0.3 * rng.standard_normal(shape)).astype(dtype)
    ns = [(u + 0.3 * rng.standard_normal(shape)).astype(dtype) for _ in range(k)]
    return u, p, ns


RULES = [ccfg.CFG, ccfg.NegativePrompt, ccfg.NegatedCFG, ccfg.ComposableNot, ccfg.PerpNeg,
         ccfg.SLD, ccfg.DNG, ccfg.CCFG]
RULE_IDS = [r.__name__ for r in RULES]


# ------------------------------------------------------------------------------- array shapes
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("bad_shape", [(3, 2, 5), (2, 2, 4), (3, 8), (3, 2, 4, 1)], ids=str)
def test_eps_p_shape_mismatch(rule, bad_shape):
    u, _, ns = arrays()
    p = np.zeros(bad_shape, np.float32)
    with pytest.raises(ValueError, match="eps_p"):
        ccfg.guide(u, p, ns[0], rule())


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("bad_shape", [(3, 2, 5), (4, 2, 4), (3, 8)], ids=str)
def test_eps_n_shape_mismatch(rule, bad_shape):
    u, p, ns = arrays(k=2)
    bad = np.zeros(bad_shape, np.float32)
    with pytest.raises(ValueError, match="eps_n"):
        ccfg.guide(u, p, bad, rule())
    with pytest.raises(ValueError, match="eps_n"):
        ccfg.guide(u, p, [ns[0], bad], rule())


@pytest.mark.parametrize("bad", [np.float32(1.0), np.zeros((0, 3), np.float32)],
                         ids=["0d", "empty_batch"])
def test_eps_u_without_batch(bad):
    with pytest.raises(ValueError, match="eps_u"):
        ccfg.guide(bad, None, None, ccfg.CFG())


# ------------------------------------------------------------------------------------ dtypes
BAD_DTYPES = [np.complex64, np.complex128, object, np.bool_]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("arg", ["eps_u", "eps_p", "eps_n"])
def test_bad_dtype(dtype, arg):
    u, p, ns = arrays()
    bad = np.ones(u.shape, dtype=dtype)
    args = {"eps_u": u, "eps_p": p, "eps_n": ns[0]}
    args[arg] = bad
    with pytest.raises(TypeError, match=arg):
        ccfg.guide(args["eps_u"], args["eps_p"], args["eps_n"], ccfg.CCFG())


def test_bad_dtype_in_negative_list():
    u, p, ns = arrays(k=2)
    with pytest.raises(TypeError, match="eps_n"):
        ccfg.guide(u, p, [ns[0], ns[1].astype(np.complex64)], ccfg.NegatedCFG())


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.float16, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_any_real_dtype_is_read_as_float32(dtype):
    """One dtype rule for guide, sample and UNet (docs/api.md): any real dtype -> float32."""
    rng = np.random.default_rng(0)
    u, p, n = (rng.integers(-3, 4, (4, 6)).astype(dtype) for _ in range(3))
    if dtype == np.uint8:
        u, p, n = (np.abs(a.astype(np.int64)).astype(dtype) for a in (u, p, n))
    out = ccfg.guide(u, p, n, ccfg.CCFG(5.0))
    ref = ccfg.guide(*(a.astype(np.float32) for a in (u, p, n)), ccfg.CCFG(5.0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    m = ccfg.models.GaussianMixture.toy_2d()
    x_T = np.ones((3, 2), dtype)
    np.testing.assert_array_equal(
        ccfg.sample(m, "A", "B", "ccfg", steps=3, n=3, x_T=x_T, progress=False, device="cpu"),
        ccfg.sample(m, "A", "B", "ccfg", steps=3, n=3, x_T=x_T.astype(np.float32),
                    progress=False, device="cpu"))


@pytest.mark.parametrize("arg", ["eps_u", "eps_p", "eps_n"])
@pytest.mark.parametrize("bad", ["abc", {"a": 1}, object(), 3.5j], ids=["str", "dict", "object",
                                                                        "complex_scalar"])
def test_non_array_types(arg, bad):
    u, p, ns = arrays()
    args = {"eps_u": u, "eps_p": p, "eps_n": ns[0]}
    args[arg] = bad
    with pytest.raises((TypeError, ValueError), match=arg):
        ccfg.guide(args["eps_u"], args["eps_p"], args["eps_n"], ccfg.CCFG())


def test_eps_u_none():
    _, p, ns = arrays()
    with pytest.raises(TypeError, match="eps_u"):
        ccfg.guide(None, p, ns[0], ccfg.CFG())


# ----------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("arg", ["eps_u", "eps_p", "eps_n"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite(value, arg, dtype):
    u, p, ns = arrays(dtype=dtype)
    args = {"eps_u": u, "eps_p": p, "eps_n": ns[0]}
    args[arg] = args[arg].copy()
    args[arg][1, 1, 2] = value
    with pytest.raises(ValueError, match=arg):
        ccfg.guide(args["eps_u"], args["eps_p"], args["eps_n"], ccfg.CCFG())


def test_non_finite_in_second_negative():
    u, p, ns = arrays(k=3)
    ns[2] = ns[2].copy()
    ns[2][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="eps_n"):
        ccfg.guide(u, p, ns, ccfg.NegatedCFG())


# ------------------------------------------------------------------------- rule parameters
@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("bad", ["7.5", None, [7.5], True], ids=["str", "none", "list", "bool"])
def test_scale_wrong_type(rule, bad):
    with pytest.raises(TypeError, match="scale"):
        rule(scale=bad)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_scale_not_finite(rule, bad):
    with pytest.raises(ValueError, match="scale"):
        rule(scale=bad)


@pytest.mark.parametrize("make", [lambda: ccfg.NegatedCFG(negative_scale="2"),
                                  lambda: ccfg.CCFG(negative_scale="2"),
                                  lambda: ccfg.PerpNeg(negative_scale="2"),
                                  lambda: ccfg.DNG(negative_scale="2")])
def test_negative_scale_wrong_type(make):
    with pytest.raises(TypeError, match="negative_scale"):
        make()


@pytest.mark.parametrize("tau", [-0.1, -1e-9, float("-inf"), float("nan")])
def test_ccfg_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        ccfg.CCFG(tau=tau)


def test_ccfg_tau_wrong_type():
    with pytest.raises(TypeError, match="tau"):
        ccfg.CCFG(tau="0.2")


@pytest.mark.parametrize("bad", ["max", "sums", "", "l2"])
def test_ccfg_bad_tau_reduce(bad):
    with pytest.raises(ValueError, match="tau_reduce"):
        ccfg.CCFG(tau_reduce=bad)


def test_ccfg_bad_tau_reduce_type():
    with pytest.raises((TypeError, ValueError), match="tau_reduce"):
        ccfg.CCFG(tau_reduce=1)


@pytest.mark.parametrize("bad", ["extreme", "Medium ", "none", ""])
def test_sld_unknown_preset(bad):
    with pytest.raises(ValueError, match="preset"):
        ccfg.SLD(preset=bad)


def test_sld_preset_wrong_type():
    with pytest.raises((TypeError, ValueError), match="preset"):
        ccfg.SLD(preset=3)


@pytest.mark.parametrize("kw,name", [(dict(warmup=-1), "warmup"), (dict(warmup=1.5), "warmup"),
                                     (dict(momentum_beta=1.5), "momentum_beta"),
                                     (dict(threshold="x"), "threshold"),
                                     (dict(safety_scale=-1.0), "safety_scale")])
def test_sld_bad_overrides(kw, name):
    with pytest.raises((TypeError, ValueError), match=name):
        ccfg.SLD(**kw)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("window", [(0.6, 0.4), (-0.1, 0.5), (0.2, 1.5), (0.0, float("nan"))],
                         ids=["start>stop", "neg_start", "stop>1", "nan"])
def test_bad_window(rule, window):
    with pytest.raises(ValueError, match="negative_window"):
        rule(negative_window=window)


@pytest.mark.parametrize("window", [(0.5,), (0.1, 0.2, 0.3), "0.1,0.5", 0.5])
def test_bad_window_type(window):
    with pytest.raises((TypeError, ValueError), match="negative_window"):
        ccfg.CCFG(negative_window=window)


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_dng_bad_prior(prior):
    with pytest.raises(ValueError, match="prior"):
        ccfg.DNG(prior=prior)


def test_dng_prior_wrong_type():
    with pytest.raises(TypeError, match="prior"):
        ccfg.DNG(prior="0.01")


@pytest.mark.parametrize("kw,name", [(dict(p_max=1.0), "p_max"), (dict(p_min=0.0), "p_min"),
                                     (dict(temperature=-1.0), "temperature")])
def test_dng_bad_parameters(kw, name):
    with pytest.raises(ValueError, match=name):
        ccfg.DNG(**kw)


def test_python_rule_not_callable():
    with pytest.raises(TypeError, match="fn"):
        ccfg.PythonRule(42)


# ------------------------------------------------------------------------------------ rule
@pytest.mark.parametrize("bad", [42, object(), np.zeros(3), ccfg.CCFG, None],
                         ids=["int", "object", "array", "class", "none"])
def test_rule_not_a_rule(bad):
    u, p, ns = arrays()
    with pytest.raises(TypeError, match="rule"):
        ccfg.guide(u, p, ns[0], bad)


def test_rule_unknown_name():
    u, p, ns = arrays()
    with pytest.raises(ValueError, match="rule"):
        ccfg.guide(u, p, ns[0], "contrastive-magic")


# ------------------------------------------------------------------------------------ state
def test_state_from_other_rule():
    u, p, ns = arrays()
    _, s_sld = ccfg.guide(u, p, ns[0], ccfg.SLD())
    with pytest.raises((TypeError, ValueError), match="state"):
        ccfg.guide(u, p, ns[0], ccfg.DNG(), s_sld)
    _, s_dng = ccfg.guide(u, p, ns[0], ccfg.DNG())
    with pytest.raises((TypeError, ValueError), match="state"):
        ccfg.guide(u, p, ns[0], ccfg.SLD(), s_dng)
    with pytest.raises((TypeError, ValueError), match="state"):
        ccfg.guide(u, p, ns[0], ccfg.SLD(preset="strong"), ccfg.guide(u, p, ns[0], ccfg.SLD())[1])


@pytest.mark.parametrize("rule", [ccfg.SLD, ccfg.DNG], ids=["SLD", "DNG"])
def test_state_other_batch_size(rule):
    u, p, ns = arrays((3, 2, 4))
    r = rule()
    _, st = ccfg.guide(u, p, ns[0], r)
    u5, p5, ns5 = arrays((5, 2, 4))
    with pytest.raises(ValueError, match="state"):
        ccfg.guide(u5, p5, ns5[0], r, st)
    u2, p2, ns2 = arrays((3, 8))
    with pytest.raises(ValueError, match="state"):
        ccfg.guide(u2, p2, ns2[0], r, st)
    # the state is still usable with the right inputs after the refused calls
    _, st = ccfg.guide(u, p, ns[0], r, st)
    assert st.step == 2


@pytest.mark.parametrize("bad", [object(), {"step": 1}, 3])
def test_state_not_a_state(bad):
    u, p, ns = arrays()
    with pytest.raises(TypeError, match="state"):
        ccfg.guide(u, p, ns[0], ccfg.SLD(), bad)


# ---------------------------------------------------------------------------- step / window
def test_window_without_num_steps():
    u, p, ns = arrays()
    with pytest.raises(ValueError, match="num_steps"):
        ccfg.guide(u, p, ns[0], ccfg.CCFG(negative_window=(0.2, 0.8)), step=3)


@pytest.mark.parametrize("kw,name", [(dict(step=-1, num_steps=10), "step"),
                                     (dict(step=1, num_steps=0), "num_steps"),
                                     (dict(step=1.5, num_steps=10), "step"),
                                     (dict(step=1, num_steps="10"), "num_steps")])
def test_bad_step(kw, name):
    u, p, ns = arrays()
    with pytest.raises((TypeError, ValueError), match=name):
        ccfg.guide(u, p, ns[0], ccfg.NegatedCFG(negative_window=(0.2, 0.8)), **kw)


# -------------------------------------------------------------------------------- observe
def _dng_state(k=1):
    u, p, ns = arrays(k=k)
    _, st = ccfg.guide(u, p, ns if k != 1 else ns[0], ccfg.DNG())
    return st, u, ns


def test_observe_bad_shapes():
    st, u, ns = _dng_state()
    x = np.zeros_like(u)
    with pytest.raises(ValueError, match="x_prev"):
        st.observe(x, np.zeros((3, 2, 5), np.float32), u, ns[0], 0.5, 0.6)
    with pytest.raises(ValueError, match="x_t"):
        st.observe(np.zeros((2, 2, 4), np.float32), x, u, ns[0], 0.5, 0.6)
    with pytest.raises(ValueError, match="eps_n"):
        st.observe(x, x, u, [ns[0], ns[0]], 0.5, 0.6)


@pytest.mark.parametrize("ab,abp,name", [(0.0, 0.5, "alpha_bar"), (1.5, 0.5, "alpha_bar"),
                                         (0.5, -0.1, "alpha_bar_prev"),
                                         (0.5, float("nan"), "alpha_bar_prev")])
def test_observe_bad_alpha_bar(ab, abp, name):
    st, u, ns = _dng_state()
    with pytest.raises(ValueError, match=name):
        st.observe(u, u, u, ns[0], ab, abp)


def test_observe_non_finite():
    st, u, ns = _dng_state()
    bad = u.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="x_prev"):
        st.observe(u, bad, u, ns[0], 0.5, 0.6)


def test_observe_on_sld_state():
    u, p, ns = arrays()
    _, st = ccfg.guide(u, p, ns[0], ccfg.SLD())
    with pytest.raises((TypeError, ValueError)):
        st.observe(u, u, u, ns[0], 0.5, 0.6)


# ---------------------------------------------------------------------------- PythonRule
def test_python_rule_wrong_output_shape():
    u, p, ns = arrays()
    with pytest.raises(ValueError):
        ccfg.guide(u, p, ns[0], ccfg.PythonRule(lambda a, b, c: a[:, :1]))


def test_python_rule_exception_propagates():
    u, p, ns = arrays()

    def boom(a, b, c):
        raise KeyError("boom")

    with pytest.raises(Exception) as info:
        ccfg.guide(u, p, ns[0], ccfg.PythonRule(boom))
    assert "boom" in str(info.value) or isinstance(info.value, KeyError)
    # the interpreter and the module are fine afterwards
    out = ccfg.guide(u, p, ns[0], ccfg.CFG(scale=1.0))
    np.testing.assert_array_equal(out, p)


def test_x_T_of_the_wrong_shape_names_what_it_must_match():
    model = ccfg.models.GaussianMixture.toy_2d()
    with pytest.raises(ValueError, match=r"x_T has shape \(3, 2\), expected \(4, 2\) "
                                         r"\(\(n,\) \+ the model's sample shape\)"):
        ccfg.sample(model, n=4, steps=2, x_T=np.zeros((3, 2), np.float32), progress=False)
