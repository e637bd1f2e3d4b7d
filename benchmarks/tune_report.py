"""The autotuner's decisions (CCFG_VULKAN_COOP_TILE=auto) for a CIFAR-sized UNet2DModel forward,
and what tuning costs and gains against the default 2x2 tile, in one process:

  1. a forward with 2x2 (the model placed, 2x2's pipelines made), then one more timed;
  2. the tuning cache cleared, `auto` set: the first forward (it times every candidate of every
     convolution shape: its wall time less a 2x2 forward is the cost of tuning) and its bits
     against 2x2's (they must be equal: exit status 1 otherwise);
  3. ccfg.profiling.tuning(): per shape, each candidate's median device time and the choice;
  4. --rounds rounds of a 2x2 forward and a tuned `auto` forward, alternated (the order flips
     every round), medians of the per-round ratios auto / 2x2 of the wall time and of the
     convolutions' device time (ccfg.profiling).

    CCFG_VULKAN_PRECISION=coop build/toolchain/lavapipe-run .venv/bin/python \\
        benchmarks/tune_report.py [--rows 48] [--channels 64,128,128,128] [--rounds 3] \\
        [--candidates 2x2,2x2p,...]

On a GPU, the issue's CIFAR-sized model: --channels 128,256,256,256 (its 143 MB of float32
weights exceed lavapipe's 128 MiB maxStorageBufferRange, hence the half-width default).

--candidates sets CCFG_VULKAN_TUNE_CANDIDATES (default: every tile that fits the device). On
lavapipe every number is a lavapipe number (a CPU running the shaders), never a GPU's. Set
LP_NUM_THREADS=1 on lavapipe for steadier numbers on a loaded machine.
"""
import argparse
import os
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--channels", default="64,128,128,128",
                    help="block_out_channels (128,256,256,256: the issue's CIFAR-sized 35.7M "
                         "parameters, past lavapipe's 128 MiB maxStorageBufferRange)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", default="",
                    help="CCFG_VULKAN_TUNE_CANDIDATES (comma-separated tiles; default: all)")
    args = ap.parse_args(argv)
    if args.rounds < 0 or args.rows < 1:
        ap.error("--rounds must be >= 0 and --rows >= 1")
    import torch
    from bench_common import cifar_unet, coop_device
    import ccfg
    torch.set_num_threads(1)
    vk = coop_device()
    if vk is None:
        return 1
    os.environ["CCFG_VULKAN_TUNE_CANDIDATES"] = args.candidates
    os.environ.pop("CCFG_VULKAN_COOP_SINGLE_BUFFER", None)
    dev = vk["selector"]
    ch = tuple(map(int, args.channels.split(",")))
    m, d = cifar_unet(ch)
    unet = ccfg.models.UNet.from_pretrained(d)
    x = np.random.default_rng(0).standard_normal((args.rows, 3, 32, 32)).astype(np.float32)
    print(f"{dev} {vk['name']} {vk.get('driver_info', '')}; {args.rows} rows, channels "
          f"{ch}; candidates {args.candidates or 'all that fit'}; LP_NUM_THREADS="
          f"{os.environ.get('LP_NUM_THREADS', 'unset')}; load {os.getloadavg()[0]:.1f}")

    def forward(tile):
        os.environ["CCFG_VULKAN_COOP_TILE"] = tile
        with ccfg.profiling.profile(dev) as prof:
            t0 = time.perf_counter()
            out = unet(x, 500, device=dev)
            wall = time.perf_counter() - t0
        conv = sum(ms for k, _, ms in prof.rows if k.startswith("nn_conv2d_coop"))
        return out, wall, conv

    ref, w0, _ = forward("2x2")
    _, w_2x2, c_2x2 = forward("2x2")
    print(f"2x2: first forward {w0:.2f} s (places the model, makes 2x2's pipelines), then "
          f"{w_2x2:.2f} s (convolutions {c_2x2:.0f} ms device)")
    ccfg.profiling.clear_tuning(dev)
    out, w_first, _ = forward("auto")
    t = ccfg.profiling.tuning(dev)
    same = bool(np.array_equal(out, ref))
    print(f"auto: first forward {w_first:.2f} s: tuning cost {w_first - w_2x2:.2f} s over a 2x2 "
          f"forward ({t.tuned} shapes x candidates x 4 runs = {t.runs} candidate runs; includes "
          f"making the other tiles' pipelines); bits {'equal to' if same else 'DIFFERENT from'} "
          f"2x2's")
    print(t)
    # per shape: the chosen tile's median against 2x2's
    gain = [(e["key"], dict((n, ms) for n, ms, _ in e["candidates"]), e["choice"])
            for e in t.entries]
    tot_2x2 = sum(c["2x2"] for _, c, _ in gain if "2x2" in c)
    tot_best = sum(c[ch_] for _, c, ch_ in gain if "2x2" in c)
    if tot_2x2:
        print(f"sum over the tuned shapes (each once): 2x2 {tot_2x2:.2f} ms, chosen "
              f"{tot_best:.2f} ms: {tot_best / tot_2x2:.3f}")
    walls, convs = [], []
    for r in range(args.rounds):
        order = ["2x2", "auto"] if r % 2 == 0 else ["auto", "2x2"]
        res = {tile: forward(tile) for tile in order}
        same = same and all(np.array_equal(res[k][0], ref) for k in res)
        walls.append(res["auto"][1] / res["2x2"][1])
        convs.append(res["auto"][2] / res["2x2"][2])
        print(f"round {r}: 2x2 {res['2x2'][1] * 1e3:.0f} ms (convolutions {res['2x2'][2]:.0f} "
              f"ms device), auto {res['auto'][1] * 1e3:.0f} ms ({res['auto'][2]:.0f}): "
              f"{walls[-1]:.3f}, {convs[-1]:.3f}; load {os.getloadavg()[0]:.1f}")
    t2 = ccfg.profiling.tuning(dev)
    if args.rounds:
        print(f"median ratio auto / 2x2: forward {np.median(walls):.3f}, convolutions' device "
              f"time {np.median(convs):.3f} (rounds {args.rounds}); tuned forwards added "
              f"{t2.runs - t.runs} candidate runs; load {os.getloadavg()[0]:.1f}")
    print("bits: " + ("every auto forward equal to 2x2's" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
