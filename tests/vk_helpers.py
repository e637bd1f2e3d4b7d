"""Set-up shared by the Vulkan test files (not a test file: pytest collects nothing here).

- The device under test: the first Vulkan device of ``_core.devices()`` (lavapipe on CI; the
  Debian 13 one, with cooperative matrices, under ``build/toolchain/lavapipe-run``), its entry,
  the skip marks of the tests that need it, and its Mesa version (mesa_version).
- Subprocess runs: the precision (CCFG_VULKAN_PRECISION) and several other switches are read
  when a device opens, once per process, so a test that sets one runs its device in a fresh
  Python from the repository root (the local ``ccfg``).
- The head of the whole-forward scripts such a subprocess runs (diffusers' forward against
  ccfg's on the same weights) and the two models of the GroupNorm-fold forwards, written once.
- The CIFAR-shaped UNet2DModel configuration the half-precision forward runs (the blocks of the
  benchmarks' model, ``benchmarks/bench_common.py`` cifar_unet; tests do not import
  benchmarks/)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccfg import _core

ROOT = Path(__file__).resolve().parents[1]

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
WHY = next((d["note"] for d in _core.devices() if d["backend"] == "vulkan" and "note" in d), "")
INFO = VK[0] if VK else {}
DEV = f"vulkan:{INFO['index']}" if VK else "vulkan:0"   # the backend the op hooks open by name
HAS_COOP = "coop" in INFO.get("precisions", [])
needs_vk = pytest.mark.skipif(not VK, reason=f"no Vulkan device: {WHY}")
needs_coop = pytest.mark.skipif(
    not HAS_COOP, reason="the device does not run the cooperative-matrix shaders (a "
    "VK_KHR_cooperative_matrix shape 16x16x16 or 8x8x8 float16 -> float32: lavapipe >= 26 "
    "through build/toolchain/lavapipe-run, `make test-coop`, or a GPU)")


def mesa_version(info):
    """(major, minor) of a Mesa driver's driver_info ('Mesa 26.1.6-1~bpo13+1 (LLVM 19.1.7)'), or
    None"""
    m = re.search(r"Mesa (\d+)\.(\d+)", info.get("driver_info", ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def run_py(code, *args, env=None, drop=(), timeout=900):
    """``python -c code args`` from the repository root with os.environ, less the variables
    named in drop, updated by env; the CompletedProcess (text output captured)"""
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def run_json(code, *args, **kw):
    """run_py (same arguments), which must succeed: the JSON its last line of output holds"""
    r = run_py(code, *args, **kw)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# The head of a whole-forward script: the imports, rel (max|a - b| / max|b| in float64), rng
# (seed 0) and ccfg_copy(model): a diffusers model saved to a temporary folder and loaded by ccfg
# (the same weights). Plain text, to prepend to a script.
FORWARD_HEAD = r"""
import json, os, sys, tempfile
import numpy as np, torch, diffusers
from diffusers import UNet2DModel
import ccfg
from ccfg.models import FASHION_MNIST_DIR
diffusers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)
rel = lambda a, b: float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())
rng = np.random.default_rng(0)


def ccfg_copy(model):
    d = tempfile.mkdtemp()
    model.save_pretrained(d)
    return ccfg.models.UNet.from_pretrained(d)
"""

# After FORWARD_HEAD: the shipped Fashion-MNIST model, ccfg's load (unet) and diffusers' load of
# the same weights (m)
FASHION_MNIST = r"""
unet = ccfg.models.load("fashion-mnist")
m = UNet2DModel.from_pretrained(os.path.join(FASHION_MNIST_DIR, "unet"),
                                low_cpu_mem_usage=False).eval()
"""

# The GroupNorm-fold forwards' two models, after FORWARD_HEAD, FASHION_MNIST and a script's own
# run(name, ccfg model, diffusers model, x, t, labels) that fills res: the shipped model (its
# 24-channel layers decline: the direct shader; 48 and 96 fold) and one with FiLM (scale_shift)
# and groups of more than 8192 values (48 channels in 2 groups at 32x32): unfolded, such a
# GroupNorm takes three dispatches (statistics in two, phase 1 writing (a, d), then the
# normalisation pass that writes the tensor); folded two, the normalised tensor never written.
FOLD_MODELS = r"""
run("fashion-mnist", unet, m, rng.standard_normal((3,) + unet.shape).astype(np.float32), 300,
    np.array([1, 7, 10]))
torch.manual_seed(0)
cm = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(48, 96),
                 layers_per_block=1, norm_num_groups=2, resnet_time_scale_shift="scale_shift",
                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                 add_attention=False).eval()
run("large-groups", ccfg_copy(cm), cm, rng.standard_normal((2, 3, 32, 32)).astype(np.float32),
    20, None)
print(json.dumps(res))
"""


def fold_forward_script(run_def):
    """a GroupNorm-fold forward script: FORWARD_HEAD, FASHION_MNIST, res = {}, run_def (the
    script's run) and FOLD_MODELS; the device is its sys.argv[1] (dev)"""
    return FORWARD_HEAD + FASHION_MNIST + "dev = sys.argv[1]\nres = {}\n" + run_def + FOLD_MODELS


def cifar_unet_config(channels=(64, 128, 128, 128)):
    """UNet2DModel keyword arguments of the CIFAR-shaped model (3 x 32 x 32): a DownBlock2D then
    AttnDownBlock2Ds (attention at every level but the first, heads of 32 channels), 32 groups,
    two layers per block; benchmarks/bench_common.py cifar_unet's blocks. The default is half
    the benchmarks' channels (128, 256, 256, 256): the full model's 143 MiB of weights exceed
    lavapipe's maxStorageBufferRange."""
    attn = len(channels) - 1
    return dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
                layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
                down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * attn,
                up_block_types=("AttnUpBlock2D",) * attn + ("UpBlock2D",))
