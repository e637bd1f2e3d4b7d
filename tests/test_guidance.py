"""ccfg.guide against the independent NumPy reference (tests/reference_rules.py).

Every expected value comes from the specification (docs/methods.md, docs/api.md), never from ccfg itself.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ccfg
import reference_rules as R

SHAPES = [(1, 4), (3, 2), (5, 4, 8, 8), (2, 1, 32, 32)]
# (dtype, layout) combinations: contiguous, transposed (F-order), strided, reversed batch
FORMATS = [(np.float32, "c"), (np.float64, "c"), (np.float32, "t"), (np.float64, "s"),
           (np.float32, "r"), (np.float32, "s")]
FORMATS_MAIN = FORMATS[:4]
NNEG = [0, 1, 3]


# ------------------------------------------------------------------------------------ helpers
def layout(a, kind):
    a = np.asarray(a)
    if kind == "c":
        return np.ascontiguousarray(a)
    if kind == "t":  # transposed view of a C array: same shape, reversed strides
        out = np.ascontiguousarray(a.T).T
        assert not out.flags.c_contiguous or a.ndim == 1 or a.size <= 1 or min(a.shape) == 1
        return out
    if kind == "s":  # every other element of a larger buffer
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
        assert not out.flags.c_contiguous
        return out
    if kind == "r":  # negative stride along the batch
        return np.ascontiguousarray(a[::-1])[::-1]
    raise AssertionError(kind)


def make(shape, k, seed, dtype=np.float32, kind="c", d_scale=1.0):
    """eps_u ~ N(0,1); D_p, D_n have per-sample squared norms ~ c^2, c in [0.3, 3] (so that
    the CCFG gates with tau = 0.2 are in their transition regime whatever the shape)."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    m = int(np.prod(shape[1:]))
    bshape = (n,) + (1,) * (len(shape) - 1)

    def delta():
        c = rng.uniform(0.3, 3.0, size=bshape) * d_scale
        return c * rng.standard_normal(shape) / math.sqrt(m)

    u = rng.standard_normal(shape)
    p = u + delta()
    ns = [u + delta() for _ in range(k)]
    conv = lambda a: layout(a.astype(dtype), kind)
    return conv(u), conv(p), [conv(x) for x in ns]


def neg_arg(ns, as_list=False):
    """None for no negative, the bare array for one (unless as_list), a list otherwise."""
    if len(ns) == 0:
        return None
    if len(ns) == 1 and not as_list:
        return ns[0]
    return list(ns)


def assert_close(out, ref, rtol=1e-5, atol=1e-5, what=""):
    ref = np.asarray(ref, dtype=np.float64)
    assert isinstance(out, np.ndarray), type(out)
    assert out.dtype == np.float32, out.dtype
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.all(np.isfinite(out))
    mag = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = np.abs(out.astype(np.float64) - ref)
    tol = atol * mag + rtol * np.abs(ref)
    bad = err > tol
    assert not bad.any(), (
        f"{what}: {int(bad.sum())}/{bad.size} elements off; max err {err.max():.3e} "
        f"(tol {tol.flat[int(np.argmax(err - tol))]:.3e}) at {np.unravel_index(np.argmax(err - tol), err.shape)}")


def guide(u, p, ns, rule, state=None, **kw):
    return ccfg.guide(u, p, ns, rule, state, **kw)


# Stateless rule configurations: (id, ccfg factory, reference function)
STATELESS = [
    ("cfg", lambda: ccfg.CFG(), lambda u, p, n, **a: R.cfg(u, p, n, 7.5)),
    ("cfg_w3", lambda: ccfg.CFG(scale=3.0), lambda u, p, n, **a: R.cfg(u, p, n, 3.0)),
    ("negative_prompt", lambda: ccfg.NegativePrompt(),
     lambda u, p, n, **a: R.negative_prompt(u, p, n, 7.5, **a)),
    ("negative_prompt_w4", lambda: ccfg.NegativePrompt(scale=4.0),
     lambda u, p, n, **a: R.negative_prompt(u, p, n, 4.0, **a)),
    ("negated_cfg", lambda: ccfg.NegatedCFG(),
     lambda u, p, n, **a: R.negated_cfg(u, p, n, 7.5, None, **a)),
    ("negated_cfg_ns", lambda: ccfg.NegatedCFG(scale=5.0, negative_scale=2.5),
     lambda u, p, n, **a: R.negated_cfg(u, p, n, 5.0, 2.5, **a)),
    ("composable_not", lambda: ccfg.ComposableNot(scale=4.0),
     lambda u, p, n, **a: R.composable_not(u, p, n, 4.0, **a)),
    ("perp_neg", lambda: ccfg.PerpNeg(),
     lambda u, p, n, **a: R.perp_neg(u, p, n, 7.5, 1.0, False, **a)),
    ("perp_neg_b15", lambda: ccfg.PerpNeg(scale=6.0, negative_scale=1.5),
     lambda u, p, n, **a: R.perp_neg(u, p, n, 6.0, 1.5, False, **a)),
    ("perp_neg_global", lambda: ccfg.PerpNeg(scale=7.5, negative_scale=1.5, batch_global=True),
     lambda u, p, n, **a: R.perp_neg(u, p, n, 7.5, 1.5, True, **a)),
    ("ccfg", lambda: ccfg.CCFG(),
     lambda u, p, n, **a: R.ccfg_rule(u, p, n, 7.5, 0.2, "sum", None, False, **a)),
    ("ccfg_tau05_ns", lambda: ccfg.CCFG(scale=6.0, tau=0.5, negative_scale=3.0),
     lambda u, p, n, **a: R.ccfg_rule(u, p, n, 6.0, 0.5, "sum", 3.0, False, **a)),
    ("ccfg_mean", lambda: ccfg.CCFG(scale=5.0, tau=40.0, tau_reduce="mean"),
     lambda u, p, n, **a: R.ccfg_rule(u, p, n, 5.0, 40.0, "mean", None, False, **a)),
    ("ccfg_naive", lambda: ccfg.CCFG(naive_positive=True),
     lambda u, p, n, **a: R.ccfg_rule(u, p, n, 7.5, 0.2, "sum", None, True, **a)),
]
STATELESS_IDS = [s[0] for s in STATELESS]


# ----------------------------------------------------------------- stateless rules vs reference
@pytest.mark.parametrize("cfgrule", STATELESS, ids=STATELESS_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS_MAIN, ids=lambda f: f"{np.dtype(f[0]).name}-{f[1]}")
@pytest.mark.parametrize("k", NNEG)
def test_stateless_rule_matches_reference(cfgrule, shape, fmt, k):
    name, make_rule, ref = cfgrule
    dtype, kind = fmt
    seed = 1000 + SHAPES.index(shape) * 97 + k * 13 + FORMATS.index(fmt)  # deterministic
    u, p, ns = make(shape, k, seed, dtype, kind)
    out = guide(u, p, neg_arg(ns), make_rule())
    assert_close(out, ref(u, p, ns), what=name)


@pytest.mark.parametrize("cfgrule", STATELESS, ids=STATELESS_IDS)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{np.dtype(f[0]).name}-{f[1]}")
def test_stateless_all_layouts(cfgrule, fmt):
    """Every layout (incl. negative batch stride, strided float32) on a 4-D batch, 3 negatives."""
    name, make_rule, ref = cfgrule
    dtype, kind = fmt
    u, p, ns = make((5, 4, 8, 8), 3, 1050 + FORMATS.index(fmt), dtype, kind)
    out = guide(u, p, ns, make_rule())
    assert_close(out, ref(u, p, ns), what=name)


@pytest.mark.parametrize("cfgrule", STATELESS, ids=STATELESS_IDS)
@pytest.mark.parametrize("shape", [(3, 2), (2, 1, 32, 32)], ids=str)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_missing_positive(cfgrule, shape, k):
    """api.md: eps_p=None means eps_p = eps_u (D_p = 0)."""
    name, make_rule, ref = cfgrule
    u, _, ns = make(shape, k, 7 + k)
    out = guide(u, None, neg_arg(ns), make_rule())
    assert_close(out, ref(u, None, ns), what=name)
    # identical to passing eps_u itself as the positive
    out2 = guide(u, u.copy(), neg_arg(ns), make_rule())
    assert_close(out, out2.astype(np.float64), what=name + " vs eps_p=eps_u")


@pytest.mark.parametrize("cfgrule", STATELESS, ids=STATELESS_IDS)
def test_negative_list_of_one_equals_array(cfgrule):
    name, make_rule, _ = cfgrule
    u, p, ns = make((3, 4, 2), 1, 11)
    a = guide(u, p, ns[0], make_rule())
    b = guide(u, p, [ns[0]], make_rule())
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cfgrule", STATELESS, ids=STATELESS_IDS)
def test_empty_negative_list_equals_none(cfgrule):
    name, make_rule, _ = cfgrule
    u, p, _ = make((3, 4, 2), 0, 12)
    a = guide(u, p, None, make_rule())
    b = guide(u, p, [], make_rule())
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ windows
WINDOW_RULES = [
    ("negative_prompt", lambda w: ccfg.NegativePrompt(scale=5.0, negative_window=w),
     lambda u, p, n, **a: R.negative_prompt(u, p, n, 5.0, **a)),
    ("negated_cfg", lambda w: ccfg.NegatedCFG(scale=5.0, negative_scale=3.0, negative_window=w),
     lambda u, p, n, **a: R.negated_cfg(u, p, n, 5.0, 3.0, **a)),
    ("composable_not", lambda w: ccfg.ComposableNot(scale=5.0, negative_window=w),
     lambda u, p, n, **a: R.composable_not(u, p, n, 5.0, **a)),
    ("perp_neg", lambda w: ccfg.PerpNeg(scale=5.0, negative_scale=1.5, negative_window=w),
     lambda u, p, n, **a: R.perp_neg(u, p, n, 5.0, 1.5, False, **a)),
    ("perp_neg_global", lambda w: ccfg.PerpNeg(negative_window=w, batch_global=True),
     lambda u, p, n, **a: R.perp_neg(u, p, n, 7.5, 1.0, True, **a)),
    ("ccfg", lambda w: ccfg.CCFG(scale=5.0, tau=0.3, negative_window=w),
     lambda u, p, n, **a: R.ccfg_rule(u, p, n, 5.0, 0.3, **a)),
    ("cfg", lambda w: ccfg.CFG(scale=5.0, negative_window=w),
     lambda u, p, n, **a: R.cfg(u, p, n, 5.0)),
]


@pytest.mark.parametrize("wr", WINDOW_RULES, ids=[w[0] for w in WINDOW_RULES])
@pytest.mark.parametrize("window,num_steps", [((0.25, 0.75), 8), ((0.17, 0.5), 30),
                                              ((0.0, 0.5), 10), ((0.5, 1.0), 7)])
@pytest.mark.parametrize("k", [1, 3])
def test_window_stateless(wr, window, num_steps, k):
    """Step i of N is inside when int(start*N) <= i < int(stop*N); outside: as if no negative."""
    name, make_rule, ref = wr
    rule = make_rule(window)
    lo, hi = int(window[0] * num_steps), int(window[1] * num_steps)
    seen_in = seen_out = False
    for i in range(num_steps):
        u, p, ns = make((3, 2, 4), k, 100 + i)
        out = guide(u, p, neg_arg(ns), rule, step=i, num_steps=num_steps)
        inside = lo <= i < hi
        assert R.in_window(window, i, num_steps) == inside
        seen_in |= inside
        seen_out |= not inside
        assert_close(out, ref(u, p, ns, active=inside), what=f"{name} step {i}")
        if not inside:  # outside the window the negative has no effect at all
            assert_close(out, ref(u, p, [], active=True), what=f"{name} step {i} (no negative)")
    assert seen_in and seen_out


def test_window_boundaries_exact():
    """int(0.25*8)=2 and int(0.75*8)=6: steps 2..5 are inside, 1 and 6 outside."""
    u, p, ns = make((2, 3), 1, 5)
    rule = ccfg.NegatedCFG(scale=3.0, negative_window=(0.25, 0.75))
    for i, inside in [(0, False), (1, False), (2, True), (5, True), (6, False), (7, False)]:
        out = guide(u, p, ns[0], rule, step=i, num_steps=8)
        assert_close(out, R.negated_cfg(u, p, ns, 3.0, active=inside), what=f"step {i}")


def test_default_window_needs_no_step():
    u, p, ns = make((2, 3), 1, 6)
    rule = ccfg.NegatedCFG(scale=3.0)
    a = guide(u, p, ns[0], rule)
    b = guide(u, p, ns[0], rule, step=49, num_steps=50)
    np.testing.assert_array_equal(a, b)
    assert_close(a, R.negated_cfg(u, p, ns, 3.0))


# -------------------------------------------------------------------------------------- SLD
def _sld_run(rule, ref, shape, k, n_steps, seed, dtype=np.float32, kind="c", window_steps=None,
             d_scale=1.0):
    state = None
    for i in range(n_steps):
        u, p, ns = make(shape, k, seed + i, dtype, kind, d_scale=d_scale)
        kw = {}
        if window_steps is not None:
            kw = dict(step=i, num_steps=window_steps)
        res = guide(u, p, neg_arg(ns), rule, state, **kw)
        assert isinstance(res, tuple) and len(res) == 2, "stateful rules return (eps, state)"
        out, state = res
        expected = ref(u, p, ns, **kw)
        assert_close(out, expected, what=f"step {i}")
        assert state.step == i + 1
    return state


SLD_CASES = [
    ("weak", {}, 18),
    ("medium", {}, 14),
    ("strong", {}, 10),
    ("max", {}, 4),
    ("strong", dict(warmup=2, safety_scale=50.0, threshold=0.05, momentum_scale=0.2,
                    momentum_beta=0.5), 6),
    ("medium", dict(warmup=0), 5),
    ("weak", dict(momentum_scale=0.4, momentum_beta=0.3, warmup=3), 6),
    ("max", dict(threshold=-0.01), 4),
]


@pytest.mark.parametrize("preset,over,n_steps", SLD_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'preset'}" for c in SLD_CASES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_sld_matches_reference(preset, over, n_steps, shape, k):
    rule = ccfg.SLD(scale=7.5, preset=preset, **over)
    ref = R.SLDRef(7.5, preset, **over)
    _sld_run(rule, ref, shape, k, n_steps, seed=200 + 31 * k)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{np.dtype(f[0]).name}-{f[1]}")
def test_sld_layouts_and_dtypes(fmt):
    dtype, kind = fmt
    rule = ccfg.SLD(scale=5.0, preset="strong")
    _sld_run(rule, R.SLDRef(5.0, "strong"), (3, 4, 4, 4), 2, 10, 300, dtype, kind)


def test_sld_small_differences_exercise_clamp():
    """Differences ~0.001 per element: s_S|diff| < 1 (no clamp) for many elements."""
    rule = ccfg.SLD(scale=7.5, preset="medium", warmup=1)
    _sld_run(rule, R.SLDRef(7.5, "medium", warmup=1), (2, 1, 32, 32), 1, 5, 400, d_scale=0.05)


def test_sld_off_below_unit_safety_scale():
    """api.md: safety guidance is off when safety_scale < 1 -> plain CFG."""
    rule = ccfg.SLD(scale=6.0, preset="max", safety_scale=0.5)
    state = None
    for i in range(3):
        u, p, ns = make((3, 8), 1, 500 + i)
        out, state = guide(u, p, ns[0], rule, state)
        assert_close(out, R.cfg(u, p, None, 6.0))


@pytest.mark.parametrize("preset,window,num_steps", [
    ("max", (0.25, 0.75), 12), ("medium", (0.5, 1.0), 24), ("strong", (0.0, 0.5), 20)])
@pytest.mark.parametrize("k", [1, 3])
def test_sld_window(preset, window, num_steps, k):
    """Outside the window SLD neither uses nor updates its momentum."""
    rule = ccfg.SLD(scale=7.5, preset=preset, negative_window=window)
    ref = R.SLDRef(7.5, preset, negative_window=window)
    _sld_run(rule, ref, (2, 3, 4), k, num_steps, 600, window_steps=num_steps)


def test_sld_state_is_per_run():
    """A new run (state=None) starts from zero momentum: same inputs, same outputs."""
    rule = ccfg.SLD(preset="max")
    u, p, ns = make((2, 6), 1, 700)
    a, s1 = guide(u, p, ns[0], rule, None)
    b, s1 = guide(u, p, ns[0], rule, s1)
    c, s2 = guide(u, p, ns[0], rule, None)
    np.testing.assert_array_equal(a, c)
    assert s2.step == 1 and s1.step == 2
    ref = R.SLDRef(7.5, "max")
    assert_close(a, ref(u, p, ns))
    assert_close(b, ref(u, p, ns))


def test_sld_without_positive():
    rule = ccfg.SLD(preset="strong", warmup=1)
    _sld_run(rule, R.SLDRef(7.5, "strong", warmup=1), (3, 4), 1, 1, 710)
    ref = R.SLDRef(7.5, "strong", warmup=1)
    state = None
    for i in range(4):
        u, _, ns = make((3, 4), 2, 720 + i)
        out, state = guide(u, None, ns, rule, state)
        assert_close(out, ref(u, None, ns), what=f"step {i}")


# -------------------------------------------------------------------------------------- DNG
def _dng_run(rule, ref, shape, k, rounds, seed, eta=1.0, dtype=np.float32, kind="c",
             with_positive=True):
    rng = np.random.default_rng(seed)
    abars = np.linspace(0.35, 0.9, rounds + 1)
    x = rng.standard_normal(shape).astype(np.float32)
    state = None
    for r in range(rounds):
        u, p, ns = make(shape, k, seed + 17 * r, dtype, kind)
        if not with_positive:
            p = None
        out, state = guide(u, p, neg_arg(ns), rule, state)
        expected = ref(u, p, ns)
        assert_close(out, expected, what=f"round {r}")
        assert state.step == r + 1
        a, ap = float(abars[r]), float(abars[r + 1])
        mu, s2 = R.ddim_mean(x.astype(np.float64), out.astype(np.float64), a, ap, eta)
        x_prev = (mu + math.sqrt(s2) * rng.standard_normal(shape)).astype(np.float32)
        if k:
            state.observe(x, x_prev, u, neg_arg(ns), a, ap, eta=eta)
            ref.observe(x, x_prev, u, ns, a, ap, eta=eta)
        x = x_prev
    # one more guide call exposes the posterior after the last observation
    u, p, ns = make(shape, k, seed + 999, dtype, kind)
    out, state = guide(u, p, neg_arg(ns), rule, state)
    assert_close(out, ref(u, p, ns), what="final")
    return ref


DNG_CASES = [
    ("default", {}),
    ("fast", dict(scale=5.0, negative_scale=3.0, prior=0.3, temperature=5.0, offset=0.01,
                  p_min=1e-3, p_max=0.6)),
    ("cold", dict(scale=4.0, prior=0.5, temperature=40.0, offset=-0.05, p_min=0.01, p_max=0.9)),
]


@pytest.mark.parametrize("case", DNG_CASES, ids=[c[0] for c in DNG_CASES])
@pytest.mark.parametrize("shape", [(1, 4), (3, 2), (5, 4, 8, 8), (2, 1, 32, 32)], ids=str)
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
def test_dng_matches_reference(case, shape, k, eta):
    _, kw = case
    rule = ccfg.DNG(**kw)
    ref = R.DNGRef(**kw)
    ref = _dng_run(rule, ref, shape, k, 5, 800 + 7 * k, eta=eta)
    if k and case[0] == "fast":
        # the posterior must really have moved (and been clamped somewhere) for the test to mean much
        ps = np.concatenate(ref.p)
        assert np.any(np.abs(ps - 0.3) > 1e-3)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{np.dtype(f[0]).name}-{f[1]}")
def test_dng_layouts_and_dtypes(fmt):
    dtype, kind = fmt
    kw = DNG_CASES[1][1]
    _dng_run(ccfg.DNG(**kw), R.DNGRef(**kw), (3, 2, 4, 4), 2, 4, 900, dtype=dtype, kind=kind)


def test_dng_without_positive():
    kw = DNG_CASES[1][1]
    _dng_run(ccfg.DNG(**kw), R.DNGRef(**kw), (3, 8), 1, 4, 950, with_positive=False)


def test_dng_initial_posterior_is_prior():
    """First call: λ = λ0 prior/(1-prior), e.g. 5 * 0.2/0.8 = 1.25."""
    u, p, ns = make((2, 5), 1, 960)
    out, state = guide(u, p, ns[0], ccfg.DNG(scale=3.0, negative_scale=5.0, prior=0.2), None)
    expected = u.astype(np.float64) + 3.0 * (p - u) - 1.25 * (ns[0].astype(np.float64) - u)
    assert_close(out, expected)
    assert state.step == 1


def test_dng_window():
    """Outside the window DNG acts as CFG (no negative term)."""
    rule = ccfg.DNG(scale=4.0, prior=0.3, negative_window=(0.5, 1.0))
    ref = R.DNGRef(scale=4.0, prior=0.3, negative_window=(0.5, 1.0))
    state = None
    for i in range(6):
        u, p, ns = make((2, 6), 2, 970 + i)
        out, state = guide(u, p, ns, rule, state, step=i, num_steps=6)
        assert_close(out, ref(u, p, ns, step=i, num_steps=6), what=f"step {i}")
        if i < 3:
            assert_close(out, R.cfg(u, p, None, 4.0))


# ------------------------------------------------------------------------------ CCFG specifics
TV_U = np.array([[0.1, -0.2, 0.3, 0.0]])
TV_P = TV_U + np.array([[1.0, 1.0, 0.0, 0.0]])
TV_N = TV_U + np.array([[0.0, 0.0, 3.0, 1.0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule,expected", [
    # docs/methods.md §3.5b, values as written in the spec
    (lambda: ccfg.CCFG(scale=7.5, tau=0.2), [9.080315, 8.780315, -5.064131, -1.788044]),
    (lambda: ccfg.CCFG(scale=7.5, tau=0.5), [11.065879, 10.765879, -0.001178, -0.100393]),
    (lambda: ccfg.NegatedCFG(scale=7.5), [7.6, 7.3, -22.2, -7.5]),
    (lambda: ccfg.ComposableNot(scale=7.5), [7.6, 7.3, -22.2, -7.5]),
    (lambda: ccfg.NegativePrompt(scale=7.5), [7.6, 7.3, -19.2, -6.5]),
], ids=["ccfg_official", "ccfg_megapack_tau05", "negated_cfg", "composable_not", "np_replace"])
def test_spec_test_vector(rule, expected, dtype):
    out = guide(TV_U.astype(dtype), TV_P.astype(dtype), TV_N.astype(dtype), rule())
    assert out.dtype == np.float32 and out.shape == (1, 4)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-5)


def test_spec_test_vector_lambdas():
    """The reference itself reproduces the λ± column of §3.5b."""
    _, lp, ln = R.ccfg_rule(TV_U, TV_P, TV_N, 7.5, 0.2, return_lambdas=True)
    assert abs(lp.item() - 1.197375) < 1e-6 and abs(ln[0].item() - 0.238406) < 1e-6
    _, lp, ln = R.ccfg_rule(TV_U, TV_P, TV_N, 7.5, 0.5, return_lambdas=True)
    assert abs(lp.item() - 1.462117) < 1e-6 and abs(ln[0].item() - 0.013386) < 1e-6


def test_spec_test_vector_batched_and_mean():
    """Per-sample gates: the vector repeated with scaled copies; tau_reduce='mean' with tau*4."""
    u = np.concatenate([TV_U, 2 * TV_U, TV_U])
    p = np.concatenate([TV_P, TV_U * 2 + 0.5 * (TV_P - TV_U), TV_P])
    n = np.concatenate([TV_N, TV_U * 2 + 0.1 * (TV_N - TV_U), TV_N])
    out = guide(u, p, n, ccfg.CCFG(scale=7.5, tau=0.2))
    np.testing.assert_allclose(out[0], [9.080315, 8.780315, -5.064131, -1.788044], atol=1e-5)
    np.testing.assert_allclose(out[2], out[0], atol=0)
    assert_close(out, R.ccfg_rule(u, p, n, 7.5, 0.2))
    out_mean = guide(u, p, n, ccfg.CCFG(scale=7.5, tau=0.8, tau_reduce="mean"))
    assert_close(out_mean, out.astype(np.float64))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [1, 3])
def test_ccfg_tau_to_zero_is_negated_cfg(shape, k):
    u, p, ns = make(shape, k, 1100)
    a = guide(u, p, neg_arg(ns), ccfg.CCFG(scale=6.0, tau=1e-10))
    b = guide(u, p, neg_arg(ns), ccfg.NegatedCFG(scale=6.0))
    assert_close(a, b.astype(np.float64))
    a0 = guide(u, p, neg_arg(ns), ccfg.CCFG(scale=6.0, tau=0.0, negative_scale=2.0))
    b0 = guide(u, p, neg_arg(ns), ccfg.NegatedCFG(scale=6.0, negative_scale=2.0))
    assert_close(a0, b0.astype(np.float64))


def test_ccfg_large_tau_is_cfg_at_2w():
    """τ → ∞: plain CFG at 2w, negative ignored (docs/methods.md §3.2)."""
    u, p, ns = make((3, 4, 4), 2, 1110, d_scale=3.0)
    a = guide(u, p, ns, ccfg.CCFG(scale=4.0, tau=1e4))
    assert_close(a, R.cfg(u, p, None, 8.0))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ccfg_naive_positive_is_cfg_positive_term(shape):
    u, p, ns = make(shape, 2, 1120)
    naive0 = guide(u, p, None, ccfg.CCFG(scale=7.5, naive_positive=True))
    cfg_out = guide(u, p, None, ccfg.CFG(scale=7.5))
    assert_close(naive0, cfg_out.astype(np.float64))
    naive = guide(u, p, ns, ccfg.CCFG(scale=7.5, naive_positive=True))
    _, _, lams = R.ccfg_rule(u, p, ns, 7.5, 0.2, return_lambdas=True)
    neg_term = sum(7.5 * lam * (n.astype(np.float64) - u) for lam, n in zip(lams, ns))
    assert_close(naive, cfg_out.astype(np.float64) - neg_term)


def test_ccfg_tau_reduce_mean_equals_sum_with_scaled_tau():
    u, p, ns = make((2, 1, 32, 32), 3, 1130)
    a = guide(u, p, ns, ccfg.CCFG(tau=0.2 * 1024, tau_reduce="mean"))
    b = guide(u, p, ns, ccfg.CCFG(tau=0.2, tau_reduce="sum"))
    assert_close(a, b.astype(np.float64))
    c = guide(u, p, ns, ccfg.CCFG(tau=0.2, tau_reduce="mean"))
    assert_close(c, R.ccfg_rule(u, p, ns, 7.5, 0.2, "mean"))


def test_ccfg_gates_are_in_transition_regime():
    """Guard: the generated inputs really exercise λ± away from 1 (else the tests prove little)."""
    u, p, ns = make((5, 4, 8, 8), 3, 1140)
    _, lp, lns = R.ccfg_rule(u, p, ns, 7.5, 0.2, return_lambdas=True)
    assert lp.max() > 1.3 and np.concatenate([l.ravel() for l in lns]).min() < 0.6


# ------------------------------------------------------------------------------ other limits
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_composable_not_equals_negated_cfg_ww(shape, k):
    u, p, ns = make(shape, k, 1200)
    a = guide(u, p, neg_arg(ns), ccfg.ComposableNot(scale=3.5))
    b = guide(u, p, neg_arg(ns), ccfg.NegatedCFG(scale=3.5, negative_scale=3.5))
    assert_close(a, b.astype(np.float64))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("w", [1.0, 2.0, 7.5])
def test_negative_prompt_replaces_null(shape, w):
    u, p, ns = make(shape, 1, 1210)
    out = guide(u, p, ns[0], ccfg.NegativePrompt(scale=w))
    n64 = ns[0].astype(np.float64)
    assert_close(out, n64 + w * (p.astype(np.float64) - n64))


def test_cfg_scale_one_is_positive():
    u, p, ns = make((3, 5), 2, 1220)
    out = guide(u, p, ns, ccfg.CFG(scale=1.0))
    assert_close(out, p.astype(np.float64))


def test_perp_neg_zero_positive_direction():
    """‖D_p‖² = 0 → perp(a, b) = a: Perp-Neg becomes eps_u - w b D_n."""
    u, _, ns = make((3, 6), 1, 1230)
    for bg in (False, True):
        out = guide(u, u.copy(), ns[0], ccfg.PerpNeg(scale=4.0, negative_scale=1.5, batch_global=bg))
        assert_close(out, u.astype(np.float64) - 6.0 * (ns[0].astype(np.float64) - u))


def test_perp_neg_zero_positive_one_sample_only():
    """Per-sample: a zero D_p in one sample does not affect the others."""
    u, p, ns = make((3, 6), 1, 1240)
    p = p.copy()
    p[1] = u[1]
    out = guide(u, p, ns[0], ccfg.PerpNeg(scale=4.0))
    assert_close(out, R.perp_neg(u, p, ns, 4.0, 1.0, False))


def test_perp_neg_parallel_negative_removed():
    """A negative parallel to D_p has no orthogonal part: result is CFG."""
    u, p, _ = make((3, 2, 4), 0, 1250)
    n = (u + 0.7 * (p.astype(np.float64) - u)).astype(np.float32)
    out = guide(u, p, n, ccfg.PerpNeg(scale=5.0, negative_scale=2.0))
    assert_close(out, R.cfg(u, p, None, 5.0), atol=2e-5)


def test_perp_neg_batch_global_depends_on_batch():
    u, p, ns = make((4, 3, 3), 1, 1260)
    a = guide(u, p, ns[0], ccfg.PerpNeg(batch_global=True))
    b = guide(u, p, ns[0], ccfg.PerpNeg(batch_global=False))
    assert_close(a, R.perp_neg(u, p, ns, 7.5, 1.0, True))
    assert not np.allclose(a, b, rtol=1e-4, atol=1e-4)
    # a single-sample batch is the same either way
    a1 = guide(u[:1], p[:1], ns[0][:1], ccfg.PerpNeg(batch_global=True))
    b1 = guide(u[:1], p[:1], ns[0][:1], ccfg.PerpNeg(batch_global=False))
    assert_close(a1, b1.astype(np.float64))


# ------------------------------------------------------------------------- per-sample independence
INDEP_RULES = [s for s in STATELESS if s[0] != "perp_neg_global"]


@pytest.mark.parametrize("cfgrule", INDEP_RULES, ids=[s[0] for s in INDEP_RULES])
def test_per_sample_independence_stateless(cfgrule):
    name, make_rule, _ = cfgrule
    u, p, ns = make((5, 4, 8, 8), 2, 1300)
    full = guide(u, p, ns, make_rule())
    for i in range(5):
        one = guide(u[i:i + 1], p[i:i + 1], [n[i:i + 1] for n in ns], make_rule())
        assert_close(one, full[i:i + 1].astype(np.float64), rtol=1e-6, atol=1e-6, what=f"{name} {i}")
    # changing other samples (by a lot) leaves sample 0 unchanged
    u2, p2, ns2 = make((5, 4, 8, 8), 2, 1301, d_scale=5.0)
    for a, b in [(u2, u), (p2, p)] + list(zip(ns2, ns)):
        a[0] = b[0]
    other = guide(u2, p2, ns2, make_rule())
    assert_close(other[:1], full[:1].astype(np.float64), rtol=1e-6, atol=1e-6, what=name)


@pytest.mark.parametrize("which", ["sld", "dng"])
def test_per_sample_independence_stateful(which):
    def mk():
        return ccfg.SLD(preset="strong", warmup=2) if which == "sld" else \
            ccfg.DNG(prior=0.3, temperature=5.0, p_max=0.6)
    shape = (4, 2, 4, 4)
    rule_full, rules_one = mk(), [mk() for _ in range(4)]
    s_full, s_one = None, [None] * 4
    rng = np.random.default_rng(1310)
    x = rng.standard_normal(shape).astype(np.float32)
    for r in range(5):
        u, p, ns = make(shape, 2, 1320 + r)
        full, s_full = guide(u, p, ns, rule_full, s_full)
        outs = []
        for i in range(4):
            o, s_one[i] = guide(u[i:i + 1], p[i:i + 1], [n[i:i + 1] for n in ns], rules_one[i],
                                s_one[i])
            outs.append(o)
        assert_close(np.concatenate(outs), full.astype(np.float64), rtol=1e-6, atol=1e-6,
                     what=f"round {r}")
        if which == "dng":
            a, ap = 0.4 + 0.1 * r, 0.45 + 0.1 * r
            mu, s2 = R.ddim_mean(x.astype(np.float64), full.astype(np.float64), a, ap, 1.0)
            xp = (mu + math.sqrt(s2) * rng.standard_normal(shape)).astype(np.float32)
            s_full.observe(x, xp, u, ns, a, ap, eta=1.0)
            for i in range(4):
                s_one[i].observe(x[i:i + 1], xp[i:i + 1], u[i:i + 1], [n[i:i + 1] for n in ns],
                                 a, ap, eta=1.0)
            x = xp


# --------------------------------------------------------------------- output and input hygiene
ALL_RULES = [s[1] for s in STATELESS] + [lambda: ccfg.SLD(preset="max"), lambda: ccfg.DNG()]


@pytest.mark.parametrize("make_rule", ALL_RULES,
                         ids=STATELESS_IDS + ["sld", "dng"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_is_new_float32_and_inputs_unchanged(make_rule, dtype):
    u, p, ns = make((3, 2, 4, 4), 2, 1400, dtype)
    copies = [a.copy() for a in [u, p] + ns]
    res = guide(u, p, ns, make_rule())
    out = res[0] if isinstance(res, tuple) else res
    assert isinstance(out, np.ndarray) and type(out) is np.ndarray
    assert out.dtype == np.float32 and out.shape == u.shape
    for a, c in zip([u, p] + ns, copies):
        assert not np.shares_memory(out, a)
        np.testing.assert_array_equal(a, c)
    # writing to the output does not touch the inputs
    out[...] = 123.0
    for a, c in zip([u, p] + ns, copies):
        np.testing.assert_array_equal(a, c)


def test_cfg_scale_one_float32_is_still_a_copy():
    u, p, _ = make((2, 8), 0, 1410)
    out = guide(u, p, None, ccfg.CFG(scale=1.0))
    assert not np.shares_memory(out, p) and not np.shares_memory(out, u)
    out2 = guide(u, None, None, ccfg.CFG())
    assert not np.shares_memory(out2, u)
    np.testing.assert_array_equal(out2, u)


@pytest.mark.parametrize("make_rule", [s[1] for s in STATELESS], ids=STATELESS_IDS)
def test_stateless_returns_array_not_tuple(make_rule):
    u, p, ns = make((2, 3), 1, 1420)
    res = guide(u, p, ns[0], make_rule())
    assert isinstance(res, np.ndarray)


@pytest.mark.parametrize("make_rule", [lambda: ccfg.SLD(), lambda: ccfg.DNG()], ids=["sld", "dng"])
def test_stateful_state_counts_calls(make_rule):
    rule = make_rule()
    u, p, ns = make((2, 3), 1, 1430)
    state = None
    for i in range(7):
        res = guide(u, p, ns[0], rule, state)
        assert isinstance(res, tuple) and len(res) == 2
        out, state = res
        assert state.step == i + 1
    # a fresh run restarts the count
    _, s2 = guide(u, p, ns[0], rule, None)
    assert s2.step == 1 and state.step == 7


def test_stateful_state_keyword():
    rule = ccfg.SLD(preset="max")
    u, p, ns = make((2, 3), 1, 1440)
    _, st = guide(u, p, ns[0], rule)
    _, st = ccfg.guide(u, p, ns[0], rule, state=st)
    assert st.step == 2


# -------------------------------------------------------------------------------- PythonRule
def test_python_rule():
    seen = {}

    def fn(eps_u, eps_p, eps_n_list):
        seen["args"] = (eps_u, eps_p, eps_n_list)
        return eps_u + 2.0 * (eps_p - eps_u) - 0.5 * sum(n - eps_u for n in eps_n_list)

    for shape, k in [((3, 2), 1), ((2, 1, 32, 32), 3), ((5, 4, 8, 8), 0)]:
        u, p, ns = make(shape, k, 1500 + k)
        out = guide(u, p, neg_arg(ns), ccfg.PythonRule(fn))
        u64, p64 = u.astype(np.float64), p.astype(np.float64)
        expected = u64 + 2.0 * (p64 - u64) - 0.5 * sum((n.astype(np.float64) - u64 for n in ns),
                                                      np.zeros_like(u64))
        assert_close(out, expected)
        eu, ep, en = seen["args"]
        assert np.shape(eu) == shape and np.shape(ep) == shape
        assert isinstance(en, list) and len(en) == k
        assert all(np.shape(x) == shape for x in en)


def test_python_rule_output_is_float32_copy():
    u, p, ns = make((2, 4), 1, 1510, np.float64)
    out = guide(u, p, ns[0], ccfg.PythonRule(lambda a, b, c: b))
    assert out.dtype == np.float32 and out.shape == (2, 4)
    assert not np.shares_memory(out, p)
    assert_close(out, p)


# ------------------------------------------------------------------------- reprs and names
@pytest.mark.parametrize("rule,cls,params", [
    (lambda: ccfg.CFG(scale=3.25), "CFG", ["3.25"]),
    (lambda: ccfg.NegativePrompt(scale=4.5), "NegativePrompt", ["4.5"]),
    (lambda: ccfg.NegatedCFG(scale=5.5, negative_scale=2.75), "NegatedCFG", ["5.5", "2.75"]),
    (lambda: ccfg.ComposableNot(scale=6.5), "ComposableNot", ["6.5"]),
    (lambda: ccfg.PerpNeg(scale=7.25, negative_scale=1.5, batch_global=True), "PerpNeg",
     ["7.25", "1.5", "True"]),
    (lambda: ccfg.SLD(scale=8.5, preset="strong"), "SLD", ["8.5", "strong"]),
    (lambda: ccfg.DNG(scale=9.5, prior=0.03), "DNG", ["9.5", "0.03"]),
    (lambda: ccfg.CCFG(scale=5.0, tau=0.35, tau_reduce="mean"), "CCFG", ["5.0", "0.35", "mean"]),
    (lambda: ccfg.CCFG(tau=0.2, naive_positive=True, negative_window=(0.25, 0.5)), "CCFG",
     ["0.2", "True", "0.25"]),
])
def test_repr_is_readable(rule, cls, params):
    r = repr(rule())
    assert r.startswith(cls + "("), r
    for s in params:
        assert s in r, (s, r)
    assert "object at 0x" not in r


def test_repr_names_parameters():
    r = repr(ccfg.CCFG(scale=5.0, tau=0.35))
    assert "scale" in r and "tau" in r


def _lookup(name):
    g = ccfg.guidance
    if hasattr(g, "get"):
        return g.get(name)
    raise AssertionError("ccfg.guidance exposes no string lookup")


@pytest.mark.parametrize("name,cls", [
    ("cfg", "CFG"), ("negative_prompt", "NegativePrompt"), ("negated_cfg", "NegatedCFG"),
    ("composable_not", "ComposableNot"), ("perp_neg", "PerpNeg"), ("sld", "SLD"), ("dng", "DNG"),
    ("ccfg", "CCFG")])
def test_string_names(name, cls):
    rule = _lookup(name)
    assert type(rule).__name__ == cls
    assert repr(rule) == repr(getattr(ccfg, cls)())  # defaults of each class


def test_string_rule_behaves_like_default_instance():
    u, p, ns = make((3, 4), 1, 1600)
    a = guide(u, p, ns[0], _lookup("ccfg"))
    assert_close(a, R.ccfg_rule(u, p, ns, 7.5, 0.2))


def test_classes_exported_from_ccfg():
    for name in ["CFG", "NegativePrompt", "NegatedCFG", "ComposableNot", "PerpNeg", "SLD", "DNG",
                 "CCFG", "PythonRule"]:
        assert getattr(ccfg, name) is getattr(ccfg.guidance, name)
