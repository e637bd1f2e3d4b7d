"""benchmarks/gpu_vs_torch.py runs every row at smoke sizes (on lavapipe and torch CPU here), its
correctness checks pass, and without a GPU its full mode skips cleanly. Times are not asserted."""
import os
import subprocess
import sys

import pytest

import ccfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_vs_torch.py")
VK = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


@pytest.mark.skipif(not VK, reason="no Vulkan device")
def test_smoke_runs_every_row_and_its_checks_pass():
    pytest.importorskip("diffusers")
    r = run("--smoke", "--profile")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "MISMATCH" not in out and out.count("check ") >= 8
    for row in ("round trip", "CCFG per step", "PerpNeg per step", "DNG per step",
                "mixture CCFG d=2", "mixture CCFG d=64", "forward, 4 rows fp32",
                "Fashion-MNIST CCFG DDIM"):
        assert row in out, row
    assert "profile, one UNet forward" in out and "nn_conv2d" in out
    # the UNet section again in fp16 (a subprocess) where the device has 16-bit storage
    if "fp16" in VK[0].get("precisions", []):
        assert "fp16 vs torch fp32" in out and "forward, 4 rows fp16 (torch bf16)" in out
        assert "nn_conv2d_f16" in out


def test_full_mode_skips_without_a_gpu():
    gpu = [d for d in VK if d["type"] in ("discrete", "integrated")]
    torch = pytest.importorskip("torch")
    if gpu and torch.cuda.is_available():
        pytest.skip("a GPU is here: the full run is a benchmark, not a test")
    r = run("--only", "transfers")
    assert r.returncode == 0 and r.stdout.startswith("skipped:"), r.stdout + r.stderr
