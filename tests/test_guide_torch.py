"""ccfg.guide on PyTorch tensors (issue 12, item 4a): any float dtype, requires_grad, results as
tensors of the input's dtype and device, equal to the NumPy path."""
import numpy as np
import pytest

import ccfg

torch = pytest.importorskip("torch")


def tensors(dtype=torch.float32, requires_grad=False, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(0)
    u, p, n = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))
    if requires_grad:
        u.requires_grad_(True)
    return u, p, n


@pytest.mark.parametrize("rule", [ccfg.CCFG(5.0), ccfg.PerpNeg(4.0), ccfg.NegatedCFG(3.0),
                                  ccfg.APG(4.0, eta=0.5)])
def test_float32_cpu_equals_numpy_path(rule):
    u, p, n = tensors()
    got = ccfg.guide(u, p, n, rule)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device == u.device
    want = ccfg.guide(u.numpy(), p.numpy(), n.numpy(), rule)
    assert np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2),
                                       (torch.float64, 1e-6)])
def test_other_dtypes_come_back_in_their_dtype(dtype, tol):
    u, p, n = tensors(dtype)
    got = ccfg.guide(u, p, [n], ccfg.CCFG(5.0))
    assert got.dtype == dtype and got.shape == u.shape
    want = ccfg.guide(u.float().numpy(), p.float().numpy(), [n.float().numpy()], ccfg.CCFG(5.0))
    err = (got.double().numpy() - want).__abs__().max() / np.abs(want).max()
    assert err <= tol


def test_requires_grad_is_detached():
    u, p, n = tensors(requires_grad=True)
    got = ccfg.guide(u, p, n, ccfg.CCFG(5.0))
    assert not got.requires_grad
    assert np.array_equal(got.numpy(), ccfg.guide(u.detach().numpy(), p.numpy(), n.numpy(),
                                                  ccfg.CCFG(5.0)))


def test_stateful_rule_and_mixed_inputs():
    u, p, n = tensors()
    out, state = ccfg.guide(u, p.numpy(), n, ccfg.SLD(7.5))          # NumPy and torch mixed
    assert isinstance(out, torch.Tensor) and state.step == 1
    out2, _ = ccfg.guide(u, p, n, ccfg.SLD(7.5), state)
    assert isinstance(out2, torch.Tensor) and state.step == 2


def test_integer_tensors_are_read_as_float32_and_bool_refused_by_name():
    """The dtype rule of docs/api.md: any real dtype is read as float32 (as for arrays)."""
    u, p, n = tensors()
    p_int = p.round().to(torch.int32)
    out = ccfg.guide(u, p_int, n, ccfg.CCFG(5.0))
    ref = ccfg.guide(u, p_int.float(), n, ccfg.CCFG(5.0))
    assert torch.equal(out, ref)
    out = ccfg.guide(u.round().to(torch.int64), p, n, ccfg.CCFG(5.0))
    assert out.dtype == torch.float32            # an integer eps_u: the result is float32
    with pytest.raises(TypeError, match="eps_p"):
        ccfg.guide(u, p > 0, n, ccfg.CCFG(5.0))
    with pytest.raises(TypeError, match=r"eps_n\[0\]"):
        ccfg.guide(u, p, [n.to(torch.complex64)], ccfg.CCFG(5.0))
