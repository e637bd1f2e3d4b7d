"""The float32 tiled convolution's variants (CCFG_VULKAN_CONV_TILE: 64x128, the default,
64x128db, 128x128, 128x128db) against each other in one process, alternated call by call (the
switch is read at every convolution), medians of the per-round ratios to the first of --tiles.
Two workloads, each checked bit for bit against the first variant before timing (every variant
computes the same sums in the same order); exit status 1 if any differs:
  - the CIFAR-sized UNet2DModel of issue 11 (benchmarks/gpu_vs_torch.py's: 3 x 32 x 32,
    --channels, 2 layers per block, attention below the first level; random weights, torch seed
    0), --rows rows: the forward's wall time (unprofiled) and the tiled convolutions' device time
    (ccfg.profiling, a second, profiled forward);
  - one convolution (--conv B,CIN,H,W,COUT,K: 3x3 and 1x1 pad to keep the size; B 0 means
    --rows): its device time, from the profile.
The device runs float32 (CCFG_VULKAN_PRECISION unset or fp32; another value is refused). The
order of the variants rotates every round (and reverses every other), so each takes every place.

    .venv/bin/python benchmarks/conv_tiles_ab.py [--tiles 64x128,64x128db,128x128,128x128db]
        [--rows 48] [--channels 128,256,256,256] [--conv 0,256,16,16,256,3] [--rounds 3]
        [--no-unet] [--no-conv]

On lavapipe (a CPU: lavapipe numbers, not a GPU's), e.g. LP_NUM_THREADS=1 ... --rows 4
--channels 64,128,128,128 --conv 4,128,16,16,128,3.

--plan [--splitk auto]: no device; the prediction of docs/PERFORMANCE.md ("float32 SIMT
convolution: tile variants"), an issue model of an H200 SM over every tiled convolution of the
CIFAR-sized model at --rows (PLAN_* below: estimates and assumptions, not measurements).
"""
import argparse
import os
import sys
import time

import numpy as np

ALL_TILES = "64x128,64x128db,128x128,128x128db"

# The --plan model (an H200; assumptions, not measurements). Per variant: warp instructions an
# invocation issues per stage of 8 channels (512 FFMA + 32 LDS.128 + staging, addressing, loop
# and barriers, counted from the GLSL: docs/PERFORMANCE.md), warps per workgroup, workgroups
# resident per SM (registers: ~128 per invocation assumed, 65536 per SM), barriers per stage.
PLAN_VARIANTS = {"64x128": (633, 4, 4, 2), "64x128db": (634, 4, 4, 1),
                 "128x128": (609, 8, 2, 2), "128x128db": (610, 8, 2, 1)}
PLAN_SMS, PLAN_CLOCK, PLAN_SCHED = 132, 1.98e9, 4
PLAN_BARRIER = 40       # clocks a barrier stalls its workgroup, hidden by the other residents
PLAN_GAP = 3e-6         # seconds per dispatch (launch, the barrier after it)


def plan_issue(w):
    """the fraction of clocks a scheduler issues with w warps to pick from (latency hiding; one
    warp alone issues half the time): an assumption"""
    return w / (w + 1.0)


def plan(rows, splitk, names):
    """predicted ms of the CIFAR-sized model's tiled convolutions per variant (printed)"""
    import collections
    import math
    from splitk_plan import BK, BN, convs, slices
    bm0 = 64
    levels = collections.defaultdict(lambda: collections.Counter())
    flop = 0.0
    for cin, cout, k, stride, ho, wo in convs(rows):
        if cout <= bm0 // 2:
            continue
        p = rows * ho * wo
        stages = k * k * math.ceil(cin / BK)
        tiles = math.ceil(p / BN)
        # split-K follows the default tile's grid in every variant (csrc/nn_vk.c)
        s = slices(tiles * math.ceil(cout / bm0), stages) if splitk else 1
        flop += 2.0 * cout * p * cin * k * k
        for n in names:
            instr, warps, resident, bars = PLAN_VARIANTS[n]
            bm = 128 if n.startswith("128") else 64
            groups = tiles * math.ceil(cout / bm) * s
            per_sm = math.ceil(groups / PLAN_SMS)   # the busiest SM's workgroups
            clocks = 0.0
            for m in [resident] * (per_sm // resident) + ([per_sm % resident] if per_sm % resident
                                                          else []):
                w = m * warps / PLAN_SCHED
                clocks += math.ceil(stages / s) * (m * warps * instr / (PLAN_SCHED * plan_issue(w))
                                                  + bars * PLAN_BARRIER / m)
            t = clocks / PLAN_CLOCK + PLAN_GAP
            if s > 1:       # the partials written and read back, y written, at 3 TB/s, and a reduce
                t += (s + 2) * cout * p * 4 / 3e12 + PLAN_GAP
            levels[ho][n] += t * 1e3
    print(f"plan: {rows} rows, split-K {'auto (from the default grid)' if splitk else 'off'}; "
          f"{flop / 1e12:.3f} TFLOP in the tiled convolutions; ms per forward (model)")
    print(f"{'level':>8} " + " ".join(f"{n:>10}" for n in names))
    for ho in sorted(levels, reverse=True):
        print(f"{ho:>5}^2  " + " ".join(f"{levels[ho][n]:>10.2f}" for n in names))
    tot = {n: sum(levels[ho][n] for ho in levels) for n in names}
    print(f"{'total':>8} " + " ".join(f"{tot[n]:>10.2f}" for n in names))
    print(f"{'/ first':>8} " + " ".join(f"{tot[n] / tot[names[0]]:>10.3f}" for n in names))
    print(f"{'TFLOPS':>8} " + " ".join(f"{flop / tot[n] / 1e9:>10.1f}" for n in names))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", default=ALL_TILES,
                    help=f"CCFG_VULKAN_CONV_TILE values, comma-separated (default {ALL_TILES})")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--channels", default="128,256,256,256")
    ap.add_argument("--conv", default="0,256,16,16,256,3",
                    help="the single convolution: batch (0: --rows), cin, h, w, cout, k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-unet", action="store_true")
    ap.add_argument("--no-conv", action="store_true")
    ap.add_argument("--plan", action="store_true", help="print the H200 model's prediction")
    ap.add_argument("--splitk", default="", help="with --plan: auto applies split-K's rule")
    args = ap.parse_args(argv)
    names = [t for t in args.tiles.split(",") if t]
    if len(names) < 2 or len(set(names)) != len(names):
        ap.error("--tiles needs two or more different values")
    if args.plan:
        if not set(names) <= set(PLAN_VARIANTS):
            ap.error(f"--plan knows {', '.join(PLAN_VARIANTS)}")
        plan(args.rows, args.splitk == "auto", names)
        return 0
    if args.rounds < 1 or args.rows < 1:
        ap.error("--rounds and --rows must be at least 1")
    conv = tuple(int(v) for v in args.conv.split(","))
    if len(conv) != 6 or min(conv[1:]) < 1 or conv[0] < 0 or conv[5] % 2 == 0:
        ap.error("--conv needs B,CIN,H,W,COUT,K with an odd K")
    if os.environ.get("CCFG_VULKAN_PRECISION", "fp32") not in ("", "fp32"):
        print("the float32 shaders only: unset CCFG_VULKAN_PRECISION (or set it to fp32)")
        return 2
    import ccfg
    from ccfg import _core
    vks = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
    if not vks:
        print("no Vulkan device")
        return 2
    dev = vks[0]["selector"]
    print(f"{dev} {vks[0]['name']} {vks[0].get('driver_info', '')}; tiles {names}; rounds "
          f"{args.rounds}; LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}; load "
          f"{os.getloadavg()[0]:.1f}")

    def tiled_ms(prof):
        # the tiled float32 convolutions' pipelines (nn_conv2d, nn_conv2d_t*), not the direct one
        return sum(ms for k, _, ms in prof.rows
                   if k == "nn_conv2d" or k.startswith("nn_conv2d_t"))

    def compare(label, run):
        """first run of every variant (pipelines made, bits compared), then the rounds; run(name)
        -> (output, {measure: seconds})"""
        first = {}
        for n in list(names):
            os.environ["CCFG_VULKAN_CONV_TILE"] = n
            try:
                first[n] = run(n)
            except ValueError as e:     # a variant the device cannot run: refused, naming it
                print(f"{label}: {n} refused: {e}")
        ok = [n for n in names if n in first]
        if len(ok) < 2:
            return True
        ref = first[ok[0]][0].view(np.uint32)
        same = {n: bool(np.array_equal(first[n][0].view(np.uint32), ref)) for n in ok}
        print(f"{label}: bit for bit with {ok[0]}: "
              + ", ".join(f"{n} {'equal' if same[n] else 'DIFFERENT'}" for n in ok[1:]))
        ratios = {n: {} for n in ok[1:]}
        for r in range(args.rounds):
            order = ok[r % len(ok):] + ok[:r % len(ok)]
            if r % 2:
                order = order[::-1]
            res = {}
            for n in order:
                os.environ["CCFG_VULKAN_CONV_TILE"] = n
                res[n] = run(n)[1]
            base = res[ok[0]]
            line = [f"{ok[0]} " + ", ".join(f"{m} {v * 1e3:.2f} ms" for m, v in base.items())]
            for n in ok[1:]:
                for m, v in res[n].items():
                    ratios[n].setdefault(m, []).append(v / base[m])
                line.append(f"{n} " + ", ".join(f"{m} {v / base[m]:.3f}"
                                                for m, v in res[n].items()))
            print(f"{label} round {r}: " + "; ".join(line)
                  + f"; load {os.getloadavg()[0]:.1f}")
        for n in ok[1:]:
            print(f"{label} median ratio {n} / {ok[0]}: "
                  + ", ".join(f"{m} {np.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                              for m, v in ratios[n].items())
                  + f"; load {os.getloadavg()[0]:.1f}")
        return all(same.values())

    good = True
    if not args.no_unet:
        import torch
        from bench_common import cifar_unet
        torch.set_num_threads(1)
        ch = tuple(map(int, args.channels.split(",")))
        m, folder = cifar_unet(ch)
        unet = ccfg.models.UNet.from_pretrained(folder)
        x = np.random.default_rng(0).standard_normal((args.rows, 3, 32, 32)).astype(np.float32)

        def forward(name):
            t0 = time.perf_counter()
            out = unet(x, 500, device=dev)
            wall = time.perf_counter() - t0
            with ccfg.profiling.profile(dev) as prof:
                unet(x, 500, device=dev)
            return out, {"forward": wall, "convolutions (device)": tiled_ms(prof) / 1e3}

        print(f"UNet2DModel channels {ch}, {args.rows} rows")
        good &= compare("unet", forward)

    if not args.no_conv:
        b, cin, h, w, cout, k = conv
        b = b or args.rows
        rng = np.random.default_rng(1)
        xc = rng.standard_normal(cin * b * h * w).astype(np.float32)
        wc = (rng.standard_normal(cout * cin * k * k) / np.sqrt(cin * k * k)).astype(np.float32)
        bc = rng.standard_normal(cout).astype(np.float32)
        y = np.empty(cout * b * h * w, np.float32)
        ints = (b, cin, h, w, cout, k, 1, k // 2, k // 2, 0)
        flops = 2.0 * cout * cin * k * k * b * h * w

        def one(name):
            with ccfg.profiling.profile(dev) as prof:
                out = _core.nn_op(dev, "conv2d", [xc, wc, bc], [y], ints, (), None, None)[0]
            return out, {"conv (device)": tiled_ms(prof) / 1e3}

        print(f"conv2d {cin} -> {cout}, {k}x{k}, {b} x {h} x {w} ({flops / 1e9:.2f} GFLOP)")
        good &= compare("conv", one)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
