"""The three registries the core dispatches through: rules by name with parameters by name,
backends by name, models as handles. Python and C must agree on every rule's parameter names."""
import numpy as np
import pytest

import ccfg
from ccfg import _core

RULES = [ccfg.CFG(), ccfg.NegativePrompt(), ccfg.NegatedCFG(), ccfg.ComposableNot(),
         ccfg.PerpNeg(), ccfg.SLD(), ccfg.DNG(), ccfg.CCFG(), ccfg.APG()]
X = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)


def test_every_rule_class_has_a_c_record_with_the_same_parameters():
    registry = _core.rules()
    for rule in RULES + [ccfg.guidance.get(None)]:
        name, params = rule._c_spec()
        assert name in registry, name
        own = set(params) - {"scale", "negative_scale", "window_start", "window_stop"}
        assert own == set(registry[name]), (name, own, registry[name])
    # and every C rule is reachable from Python (by name or as the no-guidance rule)
    assert set(registry) == {r._c_spec()[0] for r in RULES} | {"none"}


def test_unknown_rule_and_parameter_names_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown rule nope"):
        _core.guide(("nope", {}), X, X, [], None, 0, 0, "cpu")
    with pytest.raises(ValueError, match="has no parameter taux"):
        _core.guide(("ccfg", {"scale": 2.0, "taux": 1.0}), X, X, [], None, 0, 0, "cpu")
    name, params = ccfg.CCFG()._c_spec()
    del params["tau"]
    with pytest.raises(ValueError, match="parameter tau is missing"):
        _core.guide((name, params), X, X, [], None, 0, 0, "cpu")
    with pytest.raises(TypeError, match="tau must be a number"):
        _core.guide((name, dict(params, tau="x")), X, X, [], None, 0, 0, "cpu")


def test_backends_are_opened_by_name():
    spec = ccfg.CFG(2.0)._c_spec()
    want = X + 1.0 * (X - X)
    assert np.array_equal(_core.guide(spec, X, X, [], None, 0, 0, "cpu"), want)
    for bad in ("gpu", "cuda:0", "vulkan", "vulkan:x", "cpu:0", ""):
        with pytest.raises(ValueError, match="no backend named"):
            _core.guide(spec, X, X, [], None, 0, 0, bad)


def test_sample_takes_only_model_handles():
    spec = ccfg.CFG(2.0)._c_spec()
    sampler = ccfg.SchedulerConfig()._spec("ddim", 2, 0.0, False)
    with pytest.raises(TypeError, match="ccfg model object"):
        _core.sample(object(), 0, spec, sampler, -1, (), 0, 0, X, False, None, "cpu")
    with pytest.raises(TypeError, match="must be a ccfg model"):
        ccfg.sample(object(), n=2, steps=2, progress=False)


def test_a_mixture_handle_refuses_samples_of_another_size():
    model = ccfg.models.GaussianMixture.toy_2d()
    handle, pos, negs = model._c_model("cpu", "A", ["B"])
    spec = ccfg.CCFG(2.0)._c_spec()
    sampler = ccfg.SchedulerConfig()._spec("ddim", 2, 0.0, False)
    with pytest.raises(ValueError, match="x_T has 5 values per sample, the model 2"):
        _core.sample(handle, 0, spec, sampler, pos, negs, 0, 0, X, False, None, "cpu")
