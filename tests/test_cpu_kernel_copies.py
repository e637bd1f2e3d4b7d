"""The CPU's attention and convolution kernels are compiled once per instruction set (AVX-512,
AVX2+FMA, baseline; nn_cpu.c picks one at run time). This machine picks the widest it has, so the
other copies — what a laptop without AVX-512 runs — are exercised here by capping the choice with
CCFG_CPU_KERNELS (read once per process, hence a subprocess) and running the op and UNet tests,
whose references are NumPy and diffusers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cap", ["avx2", "baseline"])
def test_lower_kernel_copies_pass_the_op_tests(cap):
    env = dict(os.environ, CCFG_CPU_KERNELS=cap)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "tests/test_backend_ops.py", "tests/test_nn_transformer_ops.py",
           "-k", "(conv2d or attention) and not vulkan"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout, res.stdout[-2000:]
