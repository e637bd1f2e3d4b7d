"""Vulkan attention: the tiled shader (nn_attention_tiled.glsl, the default) against the lanes
shader (CCFG_VULKAN_ATTENTION=lanes, nn_attention.comp) on the same device, in one process: the
switch is read at every call, so the two alternate call by call. Device time of the attention
dispatches from timestamp queries (ccfg.profiling), medians over --reps interleaved rounds; the
output of both is compared with the CPU backend first.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vk_attention.py [--reps 3] [--big] [--device vulkan:0]
        [--unet] [--modes tiled,lanes] [--tokens 4096]

--modes lists the CCFG_VULKAN_ATTENTION values to alternate (tiled32 and tiled64 force the 32- or
64-query workgroups that "tiled" picks between; tiled-v1 is the tiled shader as first merged: Q
re-staged per key tile, P V in whole 64-column chunks, no prefetch; coop is the attention on
cooperative matrices, float16 Q, K, V and P); ratios are against the last one.
`--modes tiled,tiled-v1` compares the current shader with the merged one, `--modes coop,tiled`
the tensor-core attention with the float32 one (CCFG_VULKAN_PRECISION is then set to coop unless
set; the device must run coop: on lavapipe 26, start the script with
`build/toolchain/lavapipe-run .venv/bin/python`, tools/debian_toolchain.py). Each output is
compared with the CPU backend first (float32 modes within 3e-5, coop within 1e-2).

Cases (batch, nq, nk, heads, head_dim): Stable Diffusion 1.x's self-attention at 64x64 latents
(4096 tokens) with heads of 40 (level 0) and 160 (level 2's width at level 0's length), SD 2.x's
64, and the text cross-attention (77 keys). On lavapipe one head each (the per-head work is the
same with 8); --big runs all 8 heads and batch 2 (GPU sizes). --unet adds a UNet2DConditionModel
forward (random weights, diffusers needed: 32x32 latents = 1024 tokens, one head of 40 channels at
level 0 and of 80 at level 1, 77 text tokens, batch 2): attention and total device time. Lavapipe runs with one thread
(LP_NUM_THREADS=1 unless set) so that other work on the machine disturbs it less. Skips (exit 0)
without a Vulkan device. Nothing about time is asserted; say the machine's load with any number.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("LP_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main():
    if "coop" in " ".join(sys.argv):       # before ccfg opens the device: coop needs it
        os.environ.setdefault("CCFG_VULKAN_PRECISION", "coop")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="8 heads, batch 2 (GPU sizes)")
    ap.add_argument("--device", default=None, help="vulkan:N (default: the first)")
    ap.add_argument("--unet", action="store_true", help="also a UNet2DConditionModel forward")
    ap.add_argument("--tokens", type=int, default=4096,
                    help="query length of the self-attention cases (default 4096: SD's 64x64 "
                         "latents; the cross-attention cases take it and a quarter of it)")
    ap.add_argument("--modes", default="tiled,lanes",
                    help="CCFG_VULKAN_ATTENTION values to alternate; ratios are against the last")
    a = ap.parse_args()
    if a.tokens < 4 or a.reps < 1:
        ap.error("--tokens must be at least 4 and --reps at least 1")
    sys.path.insert(0, os.getcwd())
    import ccfg
    from ccfg import _core

    modes = a.modes.split(",")
    vk = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d
          and d["available"] and ("coop" not in modes or "coop" in d.get("precisions", []))]
    if not vk:
        print("no Vulkan device" + (" that runs coop" if "coop" in modes else "") + ": skipped")
        return 0
    dev = a.device or f"vulkan:{vk[0]['index']}"
    heads, batch = (8, 2) if a.big else (1, 1)
    t = a.tokens
    cases = [(batch, t, t, heads, 40), (batch, t, t, heads, 64),
             (batch, t, t, heads, 160), (batch, t, 77, 8 if a.big else 2, 40),
             (batch, t // 4, 77, 8 if a.big else 2, 80)]
    rng = np.random.default_rng(0)
    print(f"device {dev} ({vk[0]['name']}, {vk[0].get('driver_info', '')}), load "
          f"{os.getloadavg()[0]:.1f}, LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, "
          f"CCFG_VULKAN_PRECISION={os.environ.get('CCFG_VULKAN_PRECISION', '-')}, {a.reps} "
          f"interleaved rounds, medians")
    print(f"{'case (batch, nq, nk, heads, hd)':<34} "
          + " ".join(f"{m + ' ms':>12}" for m in modes) + " "
          + " ".join(f"{m + '/' + modes[-1]:>16}" for m in modes[:-1]) + " "
          + " ".join(f"{m + ' err':>12}" for m in modes) + "  dispatches")
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
            print(f"{str((b, nq, nk, h, hd)):<34} "
                  + " ".join(f"{med[m]:>12.1f}" for m in modes) + " "
                  + " ".join(f"{med[m] / med[modes[-1]]:>16.2f}" for m in modes[:-1]) + " "
                  + " ".join(f"{errs[m]:>12.2g}" for m in modes) + "  "
                  + ", ".join(calls[m] for m in modes), flush=True)
    finally:
        if saved is None:
            os.environ.pop("CCFG_VULKAN_ATTENTION", None)
        else:
            os.environ["CCFG_VULKAN_ATTENTION"] = saved
    if a.unet:
        unet_forward(dev, a.reps, modes)
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


def unet_forward(dev, reps, modes):
    """an SD-shaped UNet2DConditionModel forward in each mode, interleaved; ratios against the
    last mode"""
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
    res = {mode: [] for mode in modes}
    outs = {}
    for rep in range(reps + 1):
        for mode in modes:
            os.environ["CCFG_VULKAN_ATTENTION"] = mode
            with ccfg.profiling.profile(dev) as prof:
                outs[mode] = unet(x, t, device=dev, encoder_hidden_states=ehs)
            attn = sum(r[2] for r in prof.rows if "attention" in r[0])
            if rep:
                res[mode].append((attn, prof.device_ms))
    os.environ.pop("CCFG_VULKAN_ATTENTION", None)
    last = modes[-1]
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
           for k, v in res.items()}
    print(f"UNet2DConditionModel 2 x 4 x 32 x 32, heads 40/80, 77 tokens, "
          f"CCFG_VULKAN_PRECISION={os.environ.get('CCFG_VULKAN_PRECISION', '-')}:")
    for mode in modes:
        diff = float(np.abs(outs[mode] - outs[last]).max() / np.abs(outs[last]).max())
        print(f"  {mode:<9} attention ms {med[mode][0]:8.1f} ({med[mode][0] / med[last][0]:.2f}x "
              f"{last}), device ms {med[mode][1]:8.1f} ({med[mode][1] / med[last][1]:.2f}x), "
              f"output {diff:.2g} from {last}'s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
