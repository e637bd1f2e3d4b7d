"""ccfg.guide(..., out=): the result written into a caller's buffer, as NumPy ufuncs do; and the
NaN/Inf checks the C core folds into its pass over the inputs (issue 16, item 2)."""
import numpy as np
import pytest

import ccfg

SHAPE = (3, 4, 5)


def arrays(k=1, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(SHAPE, dtype=np.float32)
    p = u + 0.1 * rng.standard_normal(SHAPE, dtype=np.float32)
    ns = [u + 0.1 * rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(k)]
    return u, p, ns


@pytest.mark.parametrize("rule", [ccfg.CCFG(), ccfg.PerpNeg(), ccfg.PerpNeg(batch_global=True),
                                  ccfg.CFG(), ccfg.NegatedCFG(), ccfg.APG(eta=0.5)],
                         ids=repr)
def test_out_matches_new_array(rule):
    u, p, ns = arrays()
    want = ccfg.guide(u, p, ns[0], rule)
    out = np.full(SHAPE, np.nan, np.float32)
    got = ccfg.guide(u, p, ns[0], rule, out=out)
    assert got is out
    assert np.array_equal(out, want)


def test_out_stateful_returns_state():
    u, p, ns = arrays()
    out = np.empty(SHAPE, np.float32)
    got, state = ccfg.guide(u, p, ns[0], ccfg.SLD(), out=out)
    assert got is out and state.step == 1


@pytest.mark.parametrize("bad, exc", [
    (np.empty(SHAPE, np.float64), TypeError),
    (np.empty((3, 20), np.float32), ValueError),
    (np.empty(SHAPE, np.float32, order="F"), ValueError),
    ([0.0] * 60, TypeError),
])
def test_out_refused_names_out(bad, exc):
    u, p, ns = arrays()
    with pytest.raises(exc, match="out"):
        ccfg.guide(u, p, ns[0], ccfg.CCFG(), out=bad)


def test_out_read_only_refused():
    u, p, ns = arrays()
    out = np.empty(SHAPE, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        ccfg.guide(u, p, ns[0], ccfg.CCFG(), out=out)


def test_out_overlapping_an_input_refused():
    u, p, ns = arrays()
    with pytest.raises(ValueError, match="out shares memory"):
        ccfg.guide(u, p, ns[0], ccfg.CCFG(), out=u)


@pytest.mark.parametrize("rule", [ccfg.CCFG(), ccfg.PerpNeg(), ccfg.NegatedCFG(), ccfg.CFG()],
                         ids=repr)
@pytest.mark.parametrize("arg", [0, 1, 2, 3])
def test_non_finite_named_on_every_path(rule, arg):
    """the fused CPU pass (CCFG, Perp-Neg) finds NaN in its reductions; the other rules scan
    first: either way the error names the input, the second negative included"""
    u, p, ns = arrays(k=2)
    arrs = [u, p, ns[0], ns[1]]
    arrs[arg] = arrs[arg].copy()
    arrs[arg][2, 3, 4] = np.inf if arg % 2 else np.nan
    name = ["eps_u", "eps_p", r"eps_n\[0\]", r"eps_n\[1\]"][arg]
    with pytest.raises(ValueError, match=name):
        ccfg.guide(arrs[0], arrs[1], arrs[2:], rule)


def test_non_finite_negative_outside_the_window_still_refused():
    """outside its window a negative is not read by the rule, but a NaN in it is still an error
    (as before: the arguments are checked, whatever the step)"""
    u, p, ns = arrays()
    ns[0] = ns[0].copy()
    ns[0][0, 0, 0] = np.nan
    rule = ccfg.CCFG(negative_window=(0.5, 1.0))
    with pytest.raises(ValueError, match="eps_n"):
        ccfg.guide(u, p, ns[0], rule, step=0, num_steps=10)


def test_overflow_in_fused_pass_names_rule():
    u = np.zeros((2, 3), np.float32)
    p = np.full((2, 3), 1e30, np.float32)
    with pytest.raises(FloatingPointError, match="CCFG"):
        ccfg.guide(u, p, None, ccfg.CCFG(scale=1e30, naive_positive=True))
