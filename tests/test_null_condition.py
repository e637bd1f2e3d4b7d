"""ccfg.sample(..., null=): the unconditional branch's condition given by the caller (issue 12
item 1 for the models there are: array conditions for a PythonModel, a null class for a UNet)."""
import numpy as np
import pytest

import ccfg
from ccfg.models import PythonModel

SHAPE = (2, 3)


def embedding_model(seen):
    """eps depends on an array condition (an embedding) or on None"""
    def fn(x, t, cond):
        seen.extend(type(c).__name__ if c is None else c.shape for c in cond)
        shift = np.stack([np.zeros(SHAPE, np.float32) if c is None else
                          np.full(SHAPE, float(c.mean()), np.float32) for c in cond])
        return 0.1 * x + shift
    return PythonModel(fn, SHAPE)


def test_array_conditions_and_null_reach_the_model():
    seen = []
    emb_p, emb_n, emb_0 = (np.full((4, 5), v, np.float32) for v in (1.0, -1.0, 0.25))
    kw = dict(positive=emb_p, negative=[emb_n], guidance=ccfg.CCFG(3.0), steps=3, n=2,
              progress=False)
    a = ccfg.sample(embedding_model(seen), null=emb_0, **kw)
    assert seen and all(s == (4, 5) for s in seen)           # no None: the null is the array
    seen.clear()
    b = ccfg.sample(embedding_model(seen), **kw)
    assert "NoneType" in seen
    assert not np.allclose(a, b)                             # the null changes the result


def test_reference_loop_with_null():
    """a DDIM loop written here with the same null embedding gives the same samples"""
    emb_p, emb_0 = np.full((4, 5), 0.7, np.float32), np.full((4, 5), -0.3, np.float32)
    seen = []
    model = embedding_model(seen)
    x = ccfg.sample(model, positive=emb_p, guidance=ccfg.CFG(2.0), null=emb_0, steps=4, n=3,
                    seed=1, progress=False)
    plan = ccfg.schedulers.plan("ddim", 4)
    cur = ccfg.randn(1, 3, SHAPE).astype(np.float64)
    for i in range(4):
        ab, abn = plan["alpha_bars"][i], plan["alpha_bars_next"][i]
        xf = cur.astype(np.float32)
        e_u = model.fn(xf, None, [emb_0] * 3).astype(np.float64)
        e_p = model.fn(xf, None, [emb_p] * 3).astype(np.float64)
        eps = e_u + 2.0 * (e_p - e_u)
        x0 = (cur - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        cur = np.sqrt(abn) * x0 + np.sqrt(1 - abn) * eps
    assert np.max(np.abs(x - cur)) < 1e-5


def test_null_for_models_that_cannot_take_one():
    toy = ccfg.models.GaussianMixture.toy_2d()
    with pytest.raises(ValueError, match="null"):
        ccfg.sample(toy, "A", "B", ccfg.CCFG(2.0), steps=2, n=2, progress=False, null="A")


def test_unet_null_class_for_one_run():
    unet = ccfg.models.load("fashion-mnist")
    kw = dict(positive="footwear", negative="sneaker", guidance=ccfg.CCFG(3.0), steps=2, n=2,
              progress=False, device="cpu")
    default = ccfg.sample(unet, **kw)
    same = ccfg.sample(unet, null=unet.null_class, **kw)
    other = ccfg.sample(unet, null="top", **kw)
    assert np.array_equal(default, same) and not np.allclose(default, other)
    with pytest.raises(ValueError, match="null"):
        ccfg.sample(unet, null="no such concept", **kw)
