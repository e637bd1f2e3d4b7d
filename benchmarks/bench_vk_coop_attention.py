"""Vulkan attention on cooperative matrices (nn_attention_coop.glsl, what CCFG_VULKAN_PRECISION=coop
runs) against the float32 tiled shader (CCFG_VULKAN_ATTENTION=tiled) on the same device, in one
process: the switch is read at every call, so the two alternate call by call. Device time of the
attention dispatches from timestamp queries (ccfg.profiling), medians over --reps interleaved
rounds; both outputs are compared with the CPU backend first (coop: float16 P and V, ~1e-3).

    build/toolchain/lavapipe-run .venv/bin/python benchmarks/bench_vk_coop_attention.py [--reps 3]
        [--big] [--unet] [--device vulkan:0]

(lavapipe 26 through tools/debian_toolchain.py's wrapper; on a GPU with VK_KHR_cooperative_matrix
run it with PYTHONPATH=. and the venv's python). CCFG_VULKAN_PRECISION is set to coop here unless
set. Cases as benchmarks/bench_vk_attention.py: Stable Diffusion's self-attention at 64x64 latents
(4096 tokens, heads of 40, 64 and 160 channels) and text cross-attention (77 keys), one head each
on lavapipe; --big: 8 heads, batch 2 (GPU sizes). Lavapipe runs with one thread (LP_NUM_THREADS=1
unless set). Skips (exit 0) without a device that runs coop. Nothing about time is asserted; say
the machine's load with any number, and that lavapipe's ratio is no GPU's. --unet adds a
UNet2DConditionModel forward under coop (random weights, diffusers needed; bench_vk_attention.py's
model: 32x32 latents = 1024 tokens, heads of 40 and 80, 77 text tokens, batch 2), coop against
tiled attention: attention and whole-forward device time, and the two outputs' distance.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("LP_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("CCFG_VULKAN_PRECISION", "coop")

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="8 heads, batch 2 (GPU sizes)")
    ap.add_argument("--device", default=None, help="vulkan:N (default: the first)")
    ap.add_argument("--unet", action="store_true", help="also a UNet2DConditionModel forward")
    a = ap.parse_args()
    sys.path.insert(0, os.getcwd())
    import ccfg
    from ccfg import _core

    vk = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d
          and d["available"] and "coop" in d.get("precisions", [])]
    if not vk:
        print("no Vulkan device runs the cooperative-matrix shaders: skipped")
        return 0
    dev = a.device or f"vulkan:{vk[0]['index']}"
    heads, batch = (8, 2) if a.big else (1, 1)
    cases = [(batch, 4096, 4096, heads, 40), (batch, 4096, 4096, heads, 64),
             (batch, 4096, 4096, heads, 160), (batch, 4096, 77, 8 if a.big else 2, 40),
             (batch, 1024, 77, 8 if a.big else 2, 80)]
    rng = np.random.default_rng(0)
    print(f"device {dev} ({vk[0]['name']}, {vk[0].get('driver_info', '')}), "
          f"CCFG_VULKAN_PRECISION={os.environ['CCFG_VULKAN_PRECISION']}, load "
          f"{os.getloadavg()[0]:.1f}, LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, "
          f"{a.reps} interleaved rounds, medians")
    modes = ["coop", "tiled"]
    print(f"{'case (batch, nq, nk, heads, hd)':<32} {'coop ms':>9} {'tiled ms':>9} "
          f"{'coop/tiled':>10} {'coop err':>9} {'tiled err':>9}  dispatches")
    saved = os.environ.get("CCFG_VULKAN_ATTENTION")
    try:
        for b, nq, nk, h, hd in cases:
            q = (0.5 * rng.standard_normal(h * hd * b * nq)).astype(np.float32)
            k = (0.5 * rng.standard_normal(h * hd * b * nk)).astype(np.float32)
            v = rng.standard_normal(h * hd * b * nk).astype(np.float32)
            args = ([q, k, v], [np.zeros(h * hd * b * nq, np.float32)], (b, nq, nk, h, hd), (),
                    None, None)
            ref = _core.nn_op("cpu", "attention_qkv", *args)[0]
            times = {m: [] for m in modes}
            calls, errs = {}, {}
            for rep in range(a.reps + 1):           # round 0: pipelines compiled, outputs checked
                for mode in modes:
                    os.environ["CCFG_VULKAN_ATTENTION"] = mode
                    with ccfg.profiling.profile(dev) as prof:
                        out = _core.nn_op(dev, "attention_qkv", *args)[0]
                    rows = [r for r in prof.rows if "attention" in r[0]]
                    if rep == 0:
                        errs[mode] = float(np.abs(out - ref).max() / np.abs(ref).max())
                        if errs[mode] > (1e-2 if mode == "coop" else 3e-5):
                            raise SystemExit(f"{mode} {(b, nq, nk, h, hd)}: {errs[mode]:.3g} "
                                             "from the CPU")
                        calls[mode] = "+".join(f"{int(r[1])} {r[0]}" for r in rows)
                    else:
                        times[mode].append(sum(r[2] for r in rows))
            med = {m: statistics.median(times[m]) for m in modes}
            print(f"{str((b, nq, nk, h, hd)):<32} {med['coop']:>9.1f} {med['tiled']:>9.1f} "
                  f"{med['coop'] / med['tiled']:>10.2f} {errs['coop']:>9.2g} "
                  f"{errs['tiled']:>9.2g}  {calls['coop']}, {calls['tiled']}", flush=True)
    finally:
        if saved is None:
            os.environ.pop("CCFG_VULKAN_ATTENTION", None)
        else:
            os.environ["CCFG_VULKAN_ATTENTION"] = saved
    if a.unet:
        unet_forward(dev, a.reps)
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


def unet_forward(dev, reps):
    """an SD-shaped UNet2DConditionModel forward under coop: coop attention against tiled,
    interleaved"""
    import tempfile

    import torch
    from diffusers import UNet2DConditionModel

    import ccfg
    torch.manual_seed(0)
    m = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                             block_out_channels=(40, 80), layers_per_block=1, norm_num_groups=8,
                             cross_attention_dim=64, attention_head_dim=(1, 1),
                             down_block_types=("CrossAttnDownBlock2D",) * 2,
                             up_block_types=("CrossAttnUpBlock2D",) * 2).eval()
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        unet = ccfg.unet.UNet.from_pretrained(d)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 32, 32)).astype(np.float32)
    t = np.array([999, 37])
    ehs = rng.standard_normal((2, 77, 64)).astype(np.float32)
    res = {"coop": [], "tiled": []}
    outs = {}
    for rep in range(reps + 1):
        for mode in ("coop", "tiled"):
            os.environ["CCFG_VULKAN_ATTENTION"] = mode
            with ccfg.profiling.profile(dev) as prof:
                outs[mode] = unet(x, t, device=dev, encoder_hidden_states=ehs)
            attn = sum(r[2] for r in prof.rows if "attention" in r[0])
            if rep:
                res[mode].append((attn, prof.device_ms))
    os.environ.pop("CCFG_VULKAN_ATTENTION", None)
    diff = float(np.abs(outs["coop"] - outs["tiled"]).max() / np.abs(outs["tiled"]).max())
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
           for k, v in res.items()}
    print(f"UNet2DConditionModel 2 x 4 x 32 x 32, heads 40/80, 77 tokens, coop convolutions "
          f"(coop vs tiled attention output {diff:.2g} apart): attention ms coop "
          f"{med['coop'][0]:.1f} tiled {med['tiled'][0]:.1f} ({med['coop'][0] / med['tiled'][0]:.2f}); "
          f"device ms coop {med['coop'][1]:.1f} tiled {med['tiled'][1]:.1f} "
          f"({med['coop'][1] / med['tiled'][1]:.2f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
