"""The coop convolution's double-buffered stages against one stage (CCFG_VULKAN_COOP_SINGLE_BUFFER=1,
the path before), in one process, alternated call by call (the switch is read at every
convolution), medians of the per-round ratios; the convolutions' device time from
ccfg.profiling and the forward's wall time. The two must agree bit for bit (same sums, same
order); exit status 1 otherwise or when the device does not run coop.

    CCFG_VULKAN_PRECISION=coop build/toolchain/lavapipe-run .venv/bin/python \\
        benchmarks/coop_ab.py [--rounds 7] [--rows 4] [--channels 64,128,128,128]

Model: benchmarks/bench_vulkan_half.py's CIFAR-shaped UNet2DModel (3 x 32 x 32, random weights,
torch seed 0). Set LP_NUM_THREADS=1 on lavapipe for steadier numbers on a loaded machine.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--channels", default="64,128,128,128")
    args = ap.parse_args(argv)
    import torch
    from diffusers import UNet2DModel
    import ccfg
    from ccfg import _core
    torch.set_num_threads(1)
    vks = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
    if not vks or os.environ.get("CCFG_VULKAN_PRECISION") != "coop" or \
            "coop" not in vks[0]["precisions"]:
        print("needs CCFG_VULKAN_PRECISION=coop on a device that runs it (lavapipe >= 26: "
              "build/toolchain/lavapipe-run)")
        return 1
    dev = vks[0]["selector"]
    ch = tuple(map(int, args.channels.split(",")))
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=ch,
                    layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
                    down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (len(ch) - 1),
                    up_block_types=("AttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",)).eval()
    d = tempfile.mkdtemp(prefix="ccfg_coop_ab_")
    m.save_pretrained(d)
    unet = ccfg.models.UNet.from_pretrained(d)
    x = np.random.default_rng(0).standard_normal((args.rows, 3, 32, 32)).astype(np.float32)
    print(f"{dev} {vks[0]['name']} {vks[0].get('driver_info', '')}; {args.rows} rows, channels "
          f"{ch}; LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}; load "
          f"{os.getloadavg()[0]:.1f}")

    def run(single):
        os.environ["CCFG_VULKAN_COOP_SINGLE_BUFFER"] = "1" if single else "0"
        with ccfg.profiling.profile(dev) as prof:
            t0 = time.perf_counter()
            out = unet(x, 500, device=dev)
            wall = time.perf_counter() - t0
        conv = {k: ms for k, _, ms in prof.rows if k.startswith("nn_conv2d_coop")}
        return out, wall, conv

    a, _, conv_a = run(False)       # placed, pipelines made
    b, _, conv_b = run(True)
    same = np.array_equal(a, b)
    print(f"double-buffered kinds {sorted(conv_a)}, single {sorted(conv_b)}; bit for bit "
          f"{'equal' if same else 'DIFFERENT'}")
    walls, convs = [], []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        res = {s: run(s) for s in order}
        wd, cd = res[False][1], sum(res[False][2].values())
        ws, cs = res[True][1], sum(res[True][2].values())
        walls.append(wd / ws)
        convs.append(cd / cs)
        print(f"round {r}: double {wd * 1e3:.0f} ms (convolutions {cd:.0f} ms device), single "
              f"{ws * 1e3:.0f} ms ({cs:.0f} ms); ratios {wd / ws:.3f}, {cd / cs:.3f}; load "
              f"{os.getloadavg()[0]:.1f}")
    print(f"median ratio double / single: forward {np.median(walls):.3f}, convolutions' device "
          f"time {np.median(convs):.3f} (rounds {args.rounds}); load {os.getloadavg()[0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
