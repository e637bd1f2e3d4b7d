"""The network ops a text-conditioned UNet's transformer blocks need (cross-attention with its
own key length, LayerNorm over channels, GEGLU), on every backend, against PyTorch's functions
on the same numbers. Layout CNHW: a token is a column."""
import numpy as np
import pytest

from ccfg import _core

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ["cpu"] + [d["selector"] for d in _core.devices()
                      if d["backend"] == "vulkan" and "index" in d and d["available"]]
TOL = 1e-5


def op(dev, name, inputs, out_size, ints, floats=()):
    return _core.nn_op(dev, name, inputs, [np.zeros(out_size, np.float32)], tuple(ints),
                       tuple(floats), None, None)[0]


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("dev", BACKENDS)
@pytest.mark.parametrize("batch,nq,nk,heads,hd", [(2, 64, 77, 8, 40), (1, 16, 7, 2, 5),
                                                  (3, 1, 12, 1, 160), (2, 1024, 16, 4, 32)])
def test_attention_qkv_matches_torch(dev, batch, nq, nk, heads, hd):
    rng = np.random.default_rng(nq + nk)
    inner = heads * hd
    q = rng.standard_normal((inner, batch * nq)).astype(np.float32)
    k = rng.standard_normal((inner, batch * nk)).astype(np.float32)
    v = rng.standard_normal((inner, batch * nk)).astype(np.float32)
    got = op(dev, "attention_qkv", [q.ravel(), k.ravel(), v.ravel()], inner * batch * nq,
             (batch, nq, nk, heads, hd)).reshape(inner, batch * nq)

    def heads_first(a, n):        # (inner, batch*n) -> (batch, heads, n, hd)
        return torch.from_numpy(a).reshape(heads, hd, batch, n).permute(2, 0, 3, 1)
    ref = F.scaled_dot_product_attention(heads_first(q, nq), heads_first(k, nk), heads_first(v, nk))
    want = ref.permute(1, 3, 0, 2).reshape(inner, batch * nq).numpy()
    assert rel(got, want) <= TOL


@pytest.mark.parametrize("dev", BACKENDS)
@pytest.mark.parametrize("cols,c,affine", [(300, 320, True), (5, 7, False), (1000, 64, True)])
def test_layer_norm_matches_torch(dev, cols, c, affine):
    rng = np.random.default_rng(c)
    x = (3.0 + 2.0 * rng.standard_normal((c, cols))).astype(np.float32)    # an offset mean
    g = rng.standard_normal(c).astype(np.float32) if affine else None
    b = rng.standard_normal(c).astype(np.float32) if affine else None
    got = op(dev, "layer_norm", [x.ravel(), g, b], c * cols, (cols, c), (1e-5,)).reshape(c, cols)
    want = F.layer_norm(torch.from_numpy(x.T.copy()), (c,),
                        None if g is None else torch.from_numpy(g),
                        None if b is None else torch.from_numpy(b), eps=1e-5).numpy().T
    assert rel(got, want) <= TOL


@pytest.mark.parametrize("dev", BACKENDS)
def test_geglu_matches_diffusers_formula(dev):
    rng = np.random.default_rng(1)
    f, cols = 48, 130
    x = (2.0 * rng.standard_normal((2 * f, cols))).astype(np.float32)
    got = op(dev, "geglu", [x.ravel()], f * cols, (cols, f)).reshape(f, cols)
    h, gate = torch.from_numpy(x.T.copy()).chunk(2, dim=-1)     # diffusers GEGLU on tokens
    want = (h * F.gelu(gate)).numpy().T
    assert rel(got, want) <= TOL


def test_cpu_refuses_scratch_too_small_and_bad_sizes():
    with pytest.raises(ValueError, match="sizes"):
        op("cpu", "layer_norm", [np.zeros(4, np.float32), None, None], 4, (4, 0), (1e-5,))
