"""The CPU's 3x3 convolution paths inside a UNet (docs/PERFORMANCE.md, "UNet2DModel on the CPU:
Winograd"): Winograd F(2x2,3x3) with filters packed at load, the GroupNorm+SiLU folded into its
input copy, and the fallbacks (GroupNorm written, then Winograd; the direct kernel), each against
diffusers' UNet2DModel on images whose lower level has odd sizes (half tiles at the edges). The
environment switches are read once per process, hence subprocesses."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import UNet2DModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FORWARD_TOL = 1e-4

# 18 x 26 -> 9 x 13 at the second level: odd heights and widths, non-square, 8+ pixels wide
CONFIG = dict(sample_size=(18, 26), in_channels=2, out_channels=2, block_out_channels=(16, 32),
              layers_per_block=2, norm_num_groups=8, attention_head_dim=8,
              down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=3)

SCRIPT = r"""
import sys
import numpy as np
import ccfg
folder, xs = sys.argv[1], sys.argv[2]
x = np.load(xs)
unet = ccfg.models.UNet.from_pretrained(folder)
out = unet(x, np.array([3, 500, 999, 40]), np.array([0, 1, 2, 1]))
one = unet(x[1:2], np.array([500]), np.array([1]))
np.save(xs.replace(".npy", "_out.npy"), out)
np.save(xs.replace(".npy", "_one.npy"), one)
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = UNet2DModel(**CONFIG).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("odd")
    m.save_pretrained(d)
    x = np.random.default_rng(3).standard_normal((4, 2, 18, 26)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), torch.tensor([3, 500, 999, 40]),
                torch.tensor([0, 1, 2, 1])).sample.numpy()
    return str(d), x, ref


@pytest.mark.parametrize("env", [{}, {"CCFG_CPU_FUSE_NORM": "0"}, {"CCFG_CPU_WINOGRAD": "0"},
                                 {"CCFG_CPU_KERNELS": "avx2"}, {"CCFG_CPU_KERNELS": "baseline"}],
                         ids=["winograd_fused", "winograd_unfused", "direct", "avx2", "baseline"])
def test_odd_sizes_match_diffusers(model, tmp_path, env):
    folder, x, ref = model
    xs = str(tmp_path / "x.npy")
    np.save(xs, x)
    res = subprocess.run([sys.executable, "-c", SCRIPT, folder, xs], cwd=ROOT,
                         env=dict(os.environ, **env), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = np.load(xs.replace(".npy", "_out.npy"))
    one = np.load(xs.replace(".npy", "_one.npy"))
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    assert err <= FORWARD_TOL, (env, err)
    # a sample alone and in a batch of 4: the same columns' arithmetic (batch invariance)
    assert np.abs(one[0] - out[1]).max() <= 1e-5 * np.abs(out[1]).max(), env
