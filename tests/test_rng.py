"""ccfg.randn against an independent NumPy Philox-4x32-10 + Box-Muller (docs/api.md, ccfg.randn)."""
import numpy as np
import pytest

import ccfg
from reference_solvers import philox4x32_10, randn_reference

# Random123 known-answer vectors (kat_vectors, philox4x32 10 rounds): counter, key, output
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _box_muller(words):
    u = (np.asarray(words, dtype=np.float64) + 0.5) / 2.0**32
    r0, t0 = np.sqrt(-2 * np.log(u[0])), 2 * np.pi * u[1]
    r1, t1 = np.sqrt(-2 * np.log(u[2])), 2 * np.pi * u[3]
    return np.array([r0 * np.cos(t0), r0 * np.sin(t0), r1 * np.cos(t1), r1 * np.sin(t1)])


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_reference_philox_known_answers(ctr, key, expected):
    out = philox4x32_10(np.array(ctr, dtype=np.uint64), np.array(key, dtype=np.uint64))
    assert [int(v) for v in out] == list(expected)


def test_randn_through_counter_zero_kat():
    """Counter (0, 0, 0, 0), key (0, 0) is element block 0 of sample 0, stream 0, seed 0."""
    z = ccfg.randn(0, 1, (4,), stream=0)[0].astype(np.float64)
    np.testing.assert_allclose(z, _box_muller(KAT[0][2]), rtol=1e-5, atol=1e-6)


def test_randn_max_seed():
    """Seed 2^64-1 is key (0xffffffff, 0xffffffff), the key of the second KAT vector."""
    seed = 2**64 - 1
    got = ccfg.randn(seed, 2, (8,), stream=3).astype(np.float64)
    want = randn_reference(seed, 2, (8,), 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(
    "seed,n,shape,stream",
    [
        (0, 3, (5,), 0),
        (1, 4, (2, 3, 5), 0),  # 30 elements: a partial last block of 4
        (12345, 2, (7,), 1),
        (12345, 2, (7,), 17),
        (2**32 + 7, 3, (9,), 3),  # key high word non-zero
        (2**63 + 2**40 + 11, 2, (4, 4), 2),
        (7, 1, (1,), 0),
        (7, 5, (1, 2, 1), 1000),
    ],
)
def test_randn_matches_reference(seed, n, shape, stream):
    got = ccfg.randn(seed, n, shape, stream=stream)
    assert got.dtype == np.float32
    assert got.shape == (n,) + shape
    want = randn_reference(seed, n, shape, stream)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-5, atol=2e-6)


def test_randn_large_matches_reference():
    got = ccfg.randn(2024, 64, (1000,), stream=5).astype(np.float64)
    want = randn_reference(2024, 64, (1000,), 5)
    err = np.abs(got - want)
    # float32 output: a few ulp of |z| (|z| <= ~6.7)
    assert np.all(err <= 2e-6 + 1e-5 * np.abs(want)), float(err.max())


def test_prefix_independent_of_n():
    a = ccfg.randn(99, 3, (6, 5), stream=2)
    b = ccfg.randn(99, 10, (6, 5), stream=2)
    np.testing.assert_array_equal(a, b[:3])
    # and sample i alone
    for i in range(3):
        assert np.array_equal(a[i], b[i])


def test_streams_and_seeds_differ():
    base = ccfg.randn(5, 4, (64,), stream=0)
    for other in (ccfg.randn(5, 4, (64,), stream=1), ccfg.randn(5, 4, (64,), stream=2),
                  ccfg.randn(6, 4, (64,), stream=0), ccfg.randn(5 + 2**32, 4, (64,), stream=0)):
        assert not np.any(other == base)
    # different samples of one draw differ
    assert not np.any(base[0] == base[1])


def test_deterministic():
    np.testing.assert_array_equal(ccfg.randn(3, 8, (33,), 4), ccfg.randn(3, 8, (33,), 4))


def test_moments_and_ks():
    stats = pytest.importorskip("scipy.stats")
    z = ccfg.randn(31337, 1000, (1000,), stream=0).astype(np.float64).ravel()
    assert z.size == 10**6
    assert np.all(np.isfinite(z))
    # standard errors for 1e6 draws: mean 1e-3, var ~1.4e-3, skew ~2.4e-3, kurt ~4.9e-3
    assert abs(z.mean()) < 5e-3
    assert abs(z.var() - 1) < 7e-3
    assert abs(stats.skew(z)) < 1.2e-2
    assert abs(stats.kurtosis(z)) < 2.5e-2
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # each Box-Muller output position separately
    for j in range(4):
        zj = z.reshape(-1, 4)[:, j]
        assert stats.kstest(zj, "norm").pvalue > 1e-4
    # adjacent pairs uncorrelated
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5e-3
