"""What docs/api.md promises across batch sizes (issue 13, item 4): the noise and a whole run on an
exact mixture are bit-identical whatever n is; a UNet on the CPU agrees to float32 rounding (its
GEMMs are blocked by the batch's column count), within the bounds the docs quote."""
import numpy as np

import ccfg


def test_noise_and_mixture_runs_are_bit_identical_across_n():
    assert np.array_equal(ccfg.randn(3, 5, (2, 3)), ccfg.randn(3, 50, (2, 3))[:5])
    m = ccfg.models.GaussianMixture.toy_2d()
    kw = dict(positive="A", negative="B", guidance=ccfg.CCFG(3.0), sampler="euler_ancestral",
              steps=15, seed=2, progress=False, device="cpu")
    assert np.array_equal(ccfg.sample(m, n=5, **kw), ccfg.sample(m, n=40, **kw)[:5])


def test_unet_across_batch_sizes_within_the_documented_bounds():
    u = ccfg.models.load("fashion-mnist")
    x = ccfg.randn(1, 20, u.shape)
    c = u.concepts["footwear"]
    small, big = u(x[:5], 500, c), u(x, 500, c)[:5]
    assert np.abs(small - big).max() <= 1e-5 * np.abs(big).max()
    kw = dict(positive="footwear", negative="sneaker", guidance=ccfg.CCFG(5.0), steps=6, seed=0,
              progress=False, device="cpu")
    a, b = ccfg.sample(u, n=5, **kw), ccfg.sample(u, n=20, **kw)[:5]
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
