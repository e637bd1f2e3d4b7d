"""The coop convolution's variants against each other in one process, alternated call by call
(the switches are read at every convolution), medians of the per-round ratios; the convolutions'
device time from ccfg.profiling and the forward's wall time. Every variant must give the bits of
the first (the same sums in the same order; --fold: within 3e-3 of it, the coop forward
contract); exit status 1 otherwise or when the device does not run coop.

Three comparisons:
  (default)  double-buffered stages against one stage (CCFG_VULKAN_COOP_SINGLE_BUFFER=1, the path
             before), both on the default 2x2 tile
  --tiles    the tiles and stagings of CCFG_VULKAN_COOP_TILE (2x2, the default, 2x4, 4x4, and
             the packed stagings 2x2p, 2x4p, 4x4p, and those with padded shared-memory rows
             2x2pp, 2x4pp, 4x4pp), each against the first of the list; the order rotates every
             round so each variant takes every position
  --fold     the GroupNorm(+SiLU) folded into the coop convolution (CCFG_VULKAN_NORM_FOLD=1)
             against the unfolded path (CCFG_VULKAN_NORM_FOLD=0, the coop default), on
             the tile CCFG_VULKAN_COOP_TILE names (2x2 unset); also the GroupNorm's device time
             and the dispatches per forward

    CCFG_VULKAN_PRECISION=coop build/toolchain/lavapipe-run .venv/bin/python \\
        benchmarks/coop_ab.py [--rounds 7] [--rows 4] [--channels 64,128,128,128] \\
        [--tiles [2x2,2x4,4x4,2x2p,2x4p,4x4p,2x2pp,2x4pp,4x4pp] | --fold]

Model: benchmarks/bench_vulkan_half.py's CIFAR-shaped UNet2DModel (3 x 32 x 32, random weights,
torch seed 0). Set LP_NUM_THREADS=1 on lavapipe for steadier numbers on a loaded machine.
"""
import argparse
import os
import sys
import time

import numpy as np

ALL_TILES = "2x2,2x4,4x4,2x2p,2x4p,4x4p,2x2pp,2x4pp,4x4pp"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--channels", default="64,128,128,128")
    ap.add_argument("--tiles", nargs="?", const=ALL_TILES, default=None,
                    help=f"compare CCFG_VULKAN_COOP_TILE values (comma-separated; alone: "
                         f"{ALL_TILES}) instead of double vs single buffer")
    ap.add_argument("--fold", action="store_true",
                    help="the GroupNorm folded into the coop convolution (CCFG_VULKAN_NORM_FOLD"
                         "=1) against unfolded (=0) instead of double vs single buffer")
    args = ap.parse_args(argv)
    if args.fold and args.tiles is not None:
        ap.error("--fold and --tiles are separate comparisons")
    if args.rounds < 1 or args.rows < 1:
        ap.error("--rounds and --rows must be at least 1")
    import torch
    from bench_common import cifar_unet, coop_device
    import ccfg
    torch.set_num_threads(1)
    vk = coop_device()
    if vk is None:
        return 1
    if args.fold:
        # the unfolded path first: the ratios are fold / unfolded
        variants = {"unfolded": {"CCFG_VULKAN_NORM_FOLD": "0"},
                    "fold": {"CCFG_VULKAN_NORM_FOLD": "1"}}
    elif args.tiles is None:
        variants = {"double": {"CCFG_VULKAN_COOP_SINGLE_BUFFER": "0",
                               "CCFG_VULKAN_COOP_TILE": ""},
                    "single": {"CCFG_VULKAN_COOP_SINGLE_BUFFER": "1",
                               "CCFG_VULKAN_COOP_TILE": ""}}
    else:
        names = [t for t in args.tiles.split(",") if t]
        if len(names) < 2 or len(set(names)) != len(names):
            ap.error("--tiles needs two or more different values")
        variants = {t: {"CCFG_VULKAN_COOP_SINGLE_BUFFER": "0", "CCFG_VULKAN_COOP_TILE": t}
                    for t in names}
    names = list(variants)
    dev = vk["selector"]
    ch = tuple(map(int, args.channels.split(",")))
    m, d = cifar_unet(ch)
    unet = ccfg.models.UNet.from_pretrained(d)
    x = np.random.default_rng(0).standard_normal((args.rows, 3, 32, 32)).astype(np.float32)
    print(f"{dev} {vk['name']} {vk.get('driver_info', '')}; {args.rows} rows, channels "
          f"{ch}; LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}; load "
          f"{os.getloadavg()[0]:.1f}")

    def run(name):
        os.environ.update(variants[name])
        with ccfg.profiling.profile(dev) as prof:
            t0 = time.perf_counter()
            out = unet(x, 500, device=dev)
            wall = time.perf_counter() - t0
        conv = {k: ms for k, _, ms in prof.rows if k.startswith("nn_conv2d_coop")}
        gn = sum(ms for k, _, ms in prof.rows if k.startswith("nn_group_norm"))
        calls = sum(c for _, c, _ in prof.rows)
        return out, wall, conv, gn, calls

    first = {n: run(n) for n in names}      # placed, pipelines made
    ref = first[names[0]][0]
    if args.fold:
        # not the same bits: the fold rounds x a + d to float16, the unfolded path the
        # normalised float32 tensor (tests/test_vulkan_coop_fold.py)
        errs = {n: float(np.abs(first[n][0].astype(np.float64) - ref).max() /
                         np.abs(ref).max()) for n in names}
        same = {n: errs[n] <= 3e-3 for n in names}
        for n in names:
            print(f"{n}: kinds {sorted(first[n][2])}; max|a - b| / max|b| against "
                  f"{names[0]}: {errs[n]:.3g}"
                  f"{'' if same[n] else ' (OVER 3e-3)'}")
    else:
        same = {n: bool(np.array_equal(first[n][0], ref)) for n in names}
        for n in names:
            print(f"{n}: kinds {sorted(first[n][2])}; bit for bit with {names[0]}: "
                  f"{'equal' if same[n] else 'DIFFERENT'}")
    walls = {n: [] for n in names[1:]}
    convs = {n: [] for n in names[1:]}
    gns = {n: [] for n in names}
    calls = {n: [] for n in names}  # dispatches per forward (the first forward also places)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        res = {n: run(n) for n in order}
        for n in names:
            gns[n].append(res[n][3])
            calls[n].append(res[n][4])
        w0, c0 = res[names[0]][1], sum(res[names[0]][2].values())
        line = [f"{names[0]} {w0 * 1e3:.0f} ms (convolutions {c0:.0f} ms device)"]
        for n in names[1:]:
            w, c = res[n][1], sum(res[n][2].values())
            walls[n].append(w / w0)
            convs[n].append(c / c0)
            line.append(f"{n} {w * 1e3:.0f} ms ({c:.0f}): {w / w0:.3f}, {c / c0:.3f}")
        print(f"round {r}: " + "; ".join(line) + f"; load {os.getloadavg()[0]:.1f}")
    for n in names[1:]:
        print(f"median ratio {n} / {names[0]}: forward {np.median(walls[n]):.3f}, convolutions' "
              f"device time {np.median(convs[n]):.3f} (rounds {args.rounds}, per round "
              f"{min(convs[n]):.3f}-{max(convs[n]):.3f}); load {os.getloadavg()[0]:.1f}")
    if args.fold:
        print("GroupNorm device time per forward (medians): " +
              ", ".join(f"{n} {np.median(gns[n]):.1f} ms" for n in names) +
              "; dispatches per forward: " +
              ", ".join(f"{n} {int(np.median(calls[n]))}" for n in names))
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
