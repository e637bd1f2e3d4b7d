"""Issue 13, items 5 and 6: out-of-range or non-finite arguments raise a ValueError/TypeError/
FloatingPointError that names what is wrong (never an OverflowError from C argument parsing, a
silent wrap or a silent NaN)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ccfg
from ccfg.models import GaussianMixture

u32 = np.zeros((2, 3), np.float32)


# ============================================================ item 5: exception types, names
mix = GaussianMixture.toy_2d()


@pytest.mark.parametrize("value", [2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30])
def test_steps_beyond_c_int_name_steps(value):
    with pytest.raises(ValueError, match="steps"):
        ccfg.sample(mix, steps=value, n=2, progress=False)
    with pytest.raises(ValueError, match="steps"):
        ccfg.schedulers.plan("ddim", value)


@pytest.mark.parametrize("value", [2 ** 31, 2 ** 64])
def test_guide_step_and_num_steps_beyond_c_int(value):
    with pytest.raises(ValueError, match="step"):
        ccfg.guide(u32, u32, u32, ccfg.CFG(), step=value)
    with pytest.raises(ValueError, match="num_steps"):
        ccfg.guide(u32, u32, u32, ccfg.CFG(), num_steps=value)


@pytest.mark.parametrize("field", ["steps_offset", "num_train_timesteps"])
@pytest.mark.parametrize("value", [2 ** 31, 2 ** 64])
def test_scheduler_ints_beyond_c_int(field, value):
    with pytest.raises(ValueError, match=field):
        ccfg.SchedulerConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        ccfg.SchedulerConfig.from_config({field: value})


def test_num_train_timesteps_bounded():
    """a scheduler_config.json with num_train_timesteps = 2**30 made C allocate gigabytes"""
    with pytest.raises(ValueError, match="num_train_timesteps"):
        ccfg.SchedulerConfig(num_train_timesteps=2 ** 30)


@pytest.mark.parametrize("value,exc", [(1.7, TypeError), ("1", TypeError), (True, TypeError),
                                       (-1, ValueError), (1000, ValueError)])
def test_steps_offset_must_be_an_int_in_range(value, exc):
    with pytest.raises(exc, match="steps_offset"):
        ccfg.SchedulerConfig(steps_offset=value)
    with pytest.raises(exc, match="steps_offset"):
        ccfg.SchedulerConfig.from_config({"steps_offset": value})


@pytest.mark.parametrize("field", ["set_alpha_to_one", "clip_sample", "thresholding"])
def test_scheduler_bools_refuse_strings(field):
    with pytest.raises(TypeError, match=field):
        ccfg.SchedulerConfig.from_config({field: "no"})


def test_num_train_timesteps_float_names_field():
    with pytest.raises((TypeError, ValueError), match="num_train_timesteps"):
        ccfg.SchedulerConfig(num_train_timesteps=1000.0)


@pytest.mark.parametrize("value", [2 ** 31, 2 ** 40, 2 ** 64])
def test_sld_warmup_bounded_at_construction(value):
    with pytest.raises(ValueError, match="warmup"):
        ccfg.SLD(warmup=value)


# ============================================================= item 6: silent non-finite values
@pytest.mark.parametrize("arg", ["eps_u", "eps_p", "eps_n"])
def test_guide_float64_beyond_float32_range(arg):
    """float64 1e39 became inf in the float32 conversion: NaN/inf out, a NumPy warning only"""
    a = {"eps_u": np.zeros((2, 3)), "eps_p": np.zeros((2, 3)), "eps_n": np.zeros((2, 3))}
    a[arg] = np.full((2, 3), 1e39)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=arg):
            ccfg.guide(a["eps_u"], a["eps_p"], a["eps_n"], ccfg.CCFG())


def test_x_T_beyond_float32_range():
    with pytest.raises(ValueError, match="x_T"):
        ccfg.sample(mix, n=2, steps=2, x_T=np.full((2, 2), -1e39), progress=False)


@pytest.mark.parametrize("arg", ["eps_u", "eps_p", "eps_n"])
def test_guide_refuses_masked_arrays(arg):
    """a NaN under a masked array's mask passed the finiteness check"""
    a = {"eps_u": np.zeros((2, 3)), "eps_p": np.zeros((2, 3)), "eps_n": np.zeros((2, 3))}
    data = np.zeros((2, 3))
    data[0, 0] = np.nan
    a[arg] = np.ma.masked_array(data, mask=np.isnan(data))
    with pytest.raises(TypeError, match=arg):
        ccfg.guide(a["eps_u"], a["eps_p"], a["eps_n"], ccfg.CFG())


def test_python_rule_nan_output_raises():
    rule = ccfg.PythonRule(lambda u, p, ns: np.full_like(u, np.nan))
    with pytest.raises(FloatingPointError, match="PythonRule"):
        ccfg.guide(u32, u32, u32, rule)
    with pytest.raises(FloatingPointError, match="PythonRule"):
        ccfg.sample(mix, positive="A", negative="B", guidance=rule, steps=2, n=2, progress=False)


def test_guide_overflowing_rule_raises():
    """finite inputs, a scale that overflows float32: the result was inf without a word"""
    u = np.zeros((2, 3), np.float32)
    p = np.full((2, 3), 1e30, np.float32)
    with pytest.raises(FloatingPointError, match="CFG"):
        ccfg.guide(u, p, None, ccfg.CFG(scale=1e30))


@pytest.mark.parametrize("stream", [2 ** 32, 2 ** 32 + 5, 2 ** 64, 2 ** 70])
def test_randn_stream_out_of_range(stream):
    """stream 2**32 gave stream 0's numbers (the counter holds 32 bits of it)"""
    with pytest.raises(ValueError, match="stream"):
        ccfg.randn(0, 2, 3, stream=stream)


def test_randn_largest_stream_is_distinct():
    a = ccfg.randn(0, 2, 3, stream=2 ** 32 - 1)
    assert not np.array_equal(a, ccfg.randn(0, 2, 3, stream=0))


@pytest.mark.parametrize("seed", [2 ** 64, -1])
def test_randn_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="seed"):
        ccfg.randn(seed, 2, 3)


def test_randn_sample_index_cannot_wrap():
    """the sample index in the counter is 32 bits: n past 2**32 would repeat samples"""
    with pytest.raises(ValueError, match="n"):
        ccfg.randn(0, 2 ** 32 + 1, 0)




# ================================================== found by tests/test_properties.py (hypothesis)
def test_gmm_mean_beyond_float32_refused():
    """a mean of 1e39 (finite in float64) made eps return -inf without a word"""
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([[1e39, 0.0]], 1.0)


@pytest.mark.parametrize("var", [1e-320, 1e-45, 1e39])
def test_gmm_variances_outside_float32_refused(var):
    """a variance of 1e-320 overflowed 1/variance: inf noise predictions, NumPy warnings only"""
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture([[0.0, 0.0]], var)


def test_gmm_eps_overflow_raises():
    m = GaussianMixture([[3e38]], 1.0)
    with pytest.raises(FloatingPointError, match="eps"):
        m.eps([[-3e38]], 0.5)


@pytest.mark.parametrize("method", ["eps", "log_prob", "posterior"])
def test_gmm_x_beyond_float32_or_ragged_names_x(method):
    """x = 1e300 gave NaN posteriors; a ragged x raised NumPy's unnamed 'inhomogeneous shape'"""
    m = GaussianMixture([[0.0]], 1.0)
    args = (0.5,) if method == "eps" else ()
    with pytest.raises(ValueError, match="x"):
        getattr(m, method)([[1e300]], *args)
    with pytest.raises(TypeError, match="x"):
        getattr(m, method)([[0.0], [0.0, 0.0]], *args)


def test_gmm_huge_integer_means_named():
    """means=[[10**400]] raised OverflowError from NumPy"""
    with pytest.raises((TypeError, ValueError), match="means"):
        GaussianMixture([[10 ** 400]], 1.0)


def test_guide_zero_width_samples_with_a_stateful_rule():
    """(N, 0) arrays are accepted by guide; a stateful rule must take them too"""
    z = np.zeros((2, 0), np.float32)
    out, state = ccfg.guide(z, z, z, ccfg.SLD())
    assert out.shape == (2, 0) and state.step == 1


def test_python_model_ragged_output_names_the_model():
    model = ccfg.models.PythonModel(lambda x, t, c: [[0.0], [0.0, 0.0]], 2)
    with pytest.raises(TypeError, match="model"):
        ccfg.sample(model, steps=2, n=2, progress=False)


def test_sample_overflow_names_the_guidance():
    """the C message named only the step ("non-finite values at step 0 (...)")"""
    mix2 = GaussianMixture.toy_2d()
    with pytest.raises(FloatingPointError, match=r"guidance CFG\(scale=3e\+38\)"):
        ccfg.sample(mix2, positive="A", negative="B", guidance=ccfg.CFG(scale=3e38), steps=3,
                    n=2, progress=False)


@pytest.mark.parametrize("kwargs,field", [
    (dict(beta_start=0.875, beta_end=0.5), "beta_start"),
    (dict(beta_start=0.2, beta_end=0.3, beta_schedule="scaled_linear"), "beta_start"),
    (dict(num_train_timesteps=4, trained_betas=[1 - 1e-9] * 4), "trained_betas"),
], ids=["linear", "scaled_linear", "trained"])
def test_schedule_whose_alphas_cumprod_underflows_refused(kwargs, field):
    """found by tests/test_properties.py: beta_start=0.875, beta_end=0.5 gave NaN levels in
    plan (and non-finite samples) without naming the schedule"""
    with pytest.raises(ValueError, match=field):
        ccfg.SchedulerConfig(**kwargs)


def test_gmm_weight_that_normalises_to_zero_refused():
    """found by tests/test_properties.py: weights [1, 1, 5e-324] gave log(0) = -inf weights"""
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([[0.0], [1.0], [2.0]], 1.0, weights=[1.0, 1.0, 5e-324])


@pytest.mark.parametrize("out,exc", [([[0.0], [1.0, 2.0]], TypeError), ("x", TypeError)],
                         ids=["ragged", "string"])
def test_python_rule_bad_output_names_the_rule(out, exc):
    rule = ccfg.PythonRule(lambda u, p, ns: out)
    with pytest.raises(exc, match="PythonRule"):
        ccfg.guide(u32, u32, u32, rule)
