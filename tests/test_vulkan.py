"""The Vulkan backend against the CPU backend, op by op (lavapipe here, any GPU elsewhere).

References: randn is the CPU backend itself (_core.randn); the other ops are NumPy float64
replicas of backend_cpu.c's double arithmetic (one rounding to float32 at the end), so they give
the CPU backend's values. Error measures as in the issue: normalized error ‖a−b‖²/‖b‖² for
elementwise ops, relative error for reductions."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ccfg
from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
WHY = next((d["note"] for d in _core.devices() if d["backend"] == "vulkan" and "note" in d), "")
needs_vk = pytest.mark.skipif(not VK, reason=f"no Vulkan device: {WHY}")
DEV = f"vulkan:{VK[0]['index']}" if VK else "vulkan:0"   # the backend the op hooks open by name

# (n, dim): 1, 7 and ~1e6 elements, batch 1 and 65 (65 x 1000003 floats would exceed lavapipe's
# 128 MiB maxStorageBufferRange, which phase 1 refuses rather than chunks)
SHAPES = [(1, 1), (1, 7), (65, 1), (65, 7), (1, 1000003), (65, 15385)]


def nerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum((a - b) ** 2) / max(np.sum(b ** 2), 1e-300))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def rand(rng, shape, k=1):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(k)]


def f64(x):
    return np.asarray(x, np.float64)


# ------------------------------------------------------------------------- devices

def test_devices_print_as_selector_and_name():
    ds = ccfg.devices()
    assert str(ds[0]).startswith("cpu (") and "threads, OpenBLAS)" in str(ds[0])
    assert ds[0]["available"]
    vks = [d for d in ds if d["backend"] == "vulkan"]
    assert vks, "devices() must mention Vulkan, found or not"
    for d in vks:
        if "index" in d:
            assert str(d) == f"vulkan:{d['index']} {d['name']} ({d['type']})"
            assert d["type"] in ("discrete", "integrated", "virtual", "cpu", "other")
            for key in ("vendor_id", "driver", "driver_info", "device_local_bytes", "subgroup_size",
                        "max_storage_buffer_range", "max_workgroup_invocations", "max_shared_memory"):
                assert key in d
        else:
            assert not d["available"] and d["note"]


@needs_vk
def test_lavapipe_or_gpu_reports_limits():
    d = VK[0]
    assert d["max_storage_buffer_range"] >= 1 << 27 and d["max_workgroup_invocations"] >= 128
    assert d["subgroup_size"] >= 1 and d["max_shared_memory"] >= 16384


# ------------------------------------------------------------------------- elementwise ops

@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("terms", ["x", "xy", "xyz"])
def test_axpbypcz(shape, terms):
    rng = np.random.default_rng(1)
    x, y, z = rand(rng, shape, 3)
    a, b, c = 1.7, -2.3, 0.45
    want = f64(x) * a + (f64(y) * b if "y" in terms else 0) + (f64(z) * c if "z" in terms else 0)
    got = _core.vk_op(DEV, "axpbypcz", (x, y if "y" in terms else None, z if "z" in terms else None),
                      (a, b, c))
    assert got.shape == x.shape and got.dtype == np.float32
    assert nerr(got, want.astype(np.float32)) <= 1e-10


@needs_vk
def test_axpbypcz_in_place():
    rng = np.random.default_rng(2)
    x, y = rand(rng, (65, 7), 2)
    got = _core.vk_op(DEV, "axpbypcz", (x, y, None), (0.5, 3.0, 0.0, 1.0))
    assert nerr(got, (0.5 * f64(x) + 3.0 * f64(y)).astype(np.float32)) <= 1e-10


@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("m", [1, 3, 8])
def test_combine(shape, m):
    rng = np.random.default_rng(3)
    ins = rand(rng, shape, m)
    n = shape[0]
    coef = rng.standard_normal((n, m)) * 4
    coef[:, 0] = 1 - coef[:, 1:].sum(axis=1) if m > 1 else coef[:, 0]   # cancelling, like rules
    want = sum(coef[:, q:q + 1] * f64(ins[q]) for q in range(m))
    got = _core.vk_op(DEV, "combine", (*ins, coef), ())
    assert nerr(got, want.astype(np.float32)) <= 1e-10


@needs_vk
@pytest.mark.parametrize("m", [9, 15])
def test_combine_more_than_8_inputs(m):
    """Chunks of 8 inputs per dispatch, later chunks adding to the output."""
    rng = np.random.default_rng(33)
    shape = (65, 7)
    ins = rand(rng, shape, m)
    coef = rng.standard_normal((shape[0], m)) * 4
    want = sum(coef[:, q:q + 1] * f64(ins[q]) for q in range(m))
    got = _core.vk_op(DEV, "combine", (*ins, coef), ())
    assert nerr(got, want.astype(np.float32)) <= 1e-10


@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("update,apply", [(1, 1), (1, 0), (0, 1)])
def test_sld(shape, update, apply):
    rng = np.random.default_rng(4)
    u, p, s_, nu, out = rand(rng, shape, 5)
    p = (s_ + 0.02 * rng.standard_normal(shape)).astype(np.float32)   # both sides of the gate
    w, s_s, thr, s_m, beta_m = 7.5, 20.0, 0.01, 0.3, 0.4
    diff = f64(p) - f64(s_)
    mu = np.where(diff < thr, np.minimum(s_s * np.abs(diff), 1.0), 0.0)
    g = mu * (f64(s_) - f64(u)) + s_m * f64(nu)
    want_nu = (beta_m * f64(nu) + (1 - beta_m) * g).astype(np.float32) if update else nu
    want_out = (f64(out) - w * g).astype(np.float32) if apply else out
    got_nu, got_out = _core.vk_op(DEV, "sld", (u, p, s_, nu, out),
                                  (w, s_s, thr, s_m, beta_m, update, apply))
    assert nerr(got_nu, want_nu) <= 1e-10
    assert nerr(got_out, want_out) <= 1e-10


@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
def test_all_finite(shape):
    rng = np.random.default_rng(5)
    (x,) = rand(rng, shape)
    assert _core.vk_op(DEV, "all_finite", (x,), ()) is True
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, x.size - 1, x.size // 2):
            y = x.copy()
            y.flat[where] = bad
            assert _core.vk_op(DEV, "all_finite", (y,), ()) is False


# ------------------------------------------------------------------------- noise

@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed,stream,first", [(0, 0, 0), (2**40 + 12345, 7, 3), (2**64 - 1, 2**32 + 5, 2**32 - 2)])
def test_randn_same_stream_as_cpu(shape, seed, stream, first):
    n, dim = shape
    got = _core.vk_op(DEV, "randn", (), (n, dim, seed, stream, first))
    want = _core.randn(seed, n, dim, stream, first)
    assert nerr(got, want) <= 1e-10
    # float32 Box–Muller with exact range reduction: every value within a few float32 ulps
    assert np.max(np.abs(f64(got) - f64(want)) / np.maximum(np.abs(f64(want)), 1e-3)) <= 2e-6


@needs_vk
def test_randn_tail_and_angles():
    """The whole uniform range: the largest |z| (u near 0) and values near the zeros of cos/sin
    (u near a quarter) agree too, relative to the value's own size."""
    got = _core.vk_op(DEV, "randn", (), (64, 4096, 11, 1, 0))
    want = _core.randn(11, 64, 4096, 1, 0)
    big = np.abs(want) > 3.5
    assert big.any() and rel(got[big], want[big]) <= 2e-6
    assert np.max(np.abs(f64(got) - f64(want))) <= 2e-6


# ------------------------------------------------------------------------- reductions

@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
def test_dot(shape):
    rng = np.random.default_rng(6)
    a, b = rand(rng, shape, 2)
    b = (b + a).astype(np.float32)                     # keep the dots away from 0
    want = np.einsum("ij,ij->i", f64(a), f64(b))
    got = _core.vk_op(DEV, "dot", (a, b), ())
    assert got.dtype == np.float64 and rel(got, want) <= 1e-5


@needs_vk
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_direction_dots(shape, k):
    rng = np.random.default_rng(7)
    u, p = rand(rng, shape, 2)
    negs = [(p * 0.5 + x).astype(np.float32) for x in rand(rng, shape, k)]   # <D_n, D_p> != 0
    dp = f64(p) - f64(u)
    pp, nn, np_ = _core.vk_op(DEV, "direction_dots", (u, p, *negs), ())
    assert rel(pp, np.sum(dp * dp, axis=1)) <= 1e-5
    for q, n_ in enumerate(negs):
        dn = f64(n_) - f64(u)
        assert rel(nn[q], np.sum(dn * dn, axis=1)) <= 1e-5
        assert rel(np_[q], np.sum(dn * dp, axis=1)) <= 1e-5


# ------------------------------------------------------------------------- limits and failure

@needs_vk
def test_buffer_beyond_max_storage_buffer_range_is_refused():
    limit = VK[0]["max_storage_buffer_range"]
    if limit >= 1 << 30:
        pytest.skip("device allows bindings of 1 GiB or more")
    x = np.zeros(limit // 4 + 1, np.float32)
    with pytest.raises(ValueError, match="maxStorageBufferRange"):
        _core.vk_op(DEV, "all_finite", (x,), ())


@needs_vk
def test_bad_device_index():
    with pytest.raises(ValueError, match="no Vulkan device 99"):
        _core.vk_op("vulkan:99", "all_finite", (np.ones(3, np.float32),), ())


def run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=120)


@needs_vk
def test_large_staging_buffers_are_reused_correctly():
    """Transfers above the recycled sizes (16 MiB) go through the spare staging buffers, which are
    reused across calls and directions: a second, different array must come back exactly."""
    code = """
import numpy as np
from ccfg import _core
rng = np.random.default_rng(1)
for trial in range(3):
    n = (5, 6, 5)[trial]
    x = rng.standard_normal((n, 1 << 20)).astype(np.float32)      # 20-24 MiB
    r = _core.vk_op("vulkan:0", "axpbypcz", (x, None, None), (1.0, 0.0, 0.0))
    assert np.array_equal(r, x), trial
print("ok")
"""
    r = run_py(code, CCFG_VULKAN_STAGING="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@needs_vk
def test_staging_path():
    """Device-local buffers with staging copies (the discrete-GPU path), forced on this device."""
    code = """
import numpy as np
from ccfg import _core
rng = np.random.default_rng(0)
x, y = rng.standard_normal((2, 65, 777)).astype(np.float32)
r = _core.vk_op("vulkan:0", "axpbypcz", (x, y, None), (2.0, -1.0, 0.0))
assert np.max(np.abs(r - (2.0 * x.astype(np.float64) - y).astype(np.float32))) < 1e-6
d = _core.vk_op("vulkan:0", "dot", (x, x), ())
assert np.allclose(d, (x.astype(np.float64) ** 2).sum(1), rtol=1e-5)
z = _core.vk_op("vulkan:0", "randn", (), (65, 777, 3, 0, 0))
assert np.allclose(z, _core.randn(3, 65, 777, 0, 0), atol=2e-6)
assert _core.vk_op("vulkan:0", "all_finite", (x,), ()) is True
print("ok")
"""
    r = run_py(code, CCFG_VULKAN_STAGING="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("env,reason", [
    ({"CCFG_VULKAN_LOADER": "/nonexistent/libvulkan.so.1"}, "no Vulkan loader"),
    ({"VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json"}, ""),
])
def test_missing_loader_or_driver_falls_back_to_cpu(env, reason):
    code = """
import numpy as np, ccfg
from ccfg import _core
ds = ccfg.devices()
print("\\n".join(str(d) for d in ds))
vk = [d for d in ds if d["backend"] == "vulkan"]
assert len(vk) == 1 and not vk[0]["available"] and vk[0]["note"], vk
try:
    _core.vk_op("vulkan:0", "all_finite", (np.ones(3, np.float32),), ())
except RuntimeError as e:
    print("error:", e)
else:
    raise SystemExit("vk_op without a device must raise")
x = ccfg.sample(ccfg.models.load("toy2d"), positive="A", negative="B", guidance=ccfg.CCFG(scale=3.0),
                steps=5, n=4, progress=False)
assert x.shape == (4, 2) and np.isfinite(x).all()
print("cpu ok")
"""
    r = run_py(code, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cpu (" in r.stdout and "cpu ok" in r.stdout
    assert "vulkan: none (" in r.stdout and "error: no Vulkan device:" in r.stdout
    if not WHY.startswith("Vulkan backend not built"):     # else that is the reason given
        assert reason in r.stdout


@needs_vk
def test_copy_bench_modes():
    """the bandwidth bound of the benchmarks: the copy shader (mode 0) and vkCmdCopyBuffer (mode 1)
    both time a copy, which the benchmark checks word for word (an error otherwise), at sizes that
    are and are not multiples of a workgroup's 128 vec4s, and of one vec4; another mode is
    refused"""
    for mode in (0, 1):
        for nbytes in (1 << 20, (1 << 20) + 48, (1 << 20) + 16 * 700, 16, 16400):
            assert _core.vk_copy_bench(DEV, nbytes, 3, mode) > 0.0
    with pytest.raises(ValueError, match="mode 2"):
        _core.vk_copy_bench(DEV, 1 << 20, 3, 2)
    with pytest.raises(ValueError, match="16 bytes"):
        _core.vk_copy_bench(DEV, 15, 3, 0)
