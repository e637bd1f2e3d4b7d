"""Split-K's plan for a UNet forward, from arithmetic only (no device): every convolution of the
issue's CIFAR-sized UNet2DModel (channels 128, 256, 256, 256 at 32, 16, 8, 4 px; issue 11) at a
number of rows, its workgroups on nn_conv2d.comp's 64 x 128 tiles, the slices S that
csrc/nn_vk.c's default rule picks (vk_nn.h CCFG_VK_SPLITK_*), and the partial sums' extra traffic
(S x outputs x 4 bytes written and read back). The GPU-time model behind docs/PERFORMANCE.md
"Split-K" is printed with it.

    PYTHONPATH=. .venv/bin/python benchmarks/splitk_plan.py [--rows 48]
"""
from __future__ import annotations

import argparse
import collections
import math

BM, BN, BK = 64, 128, 8                 # vk_nn.h CCFG_VK_CONV_BM, _BN, _BK
# the GPU-time model (assumptions, not measurements): an H200's 132 SMs hold 4 of the tile's
# workgroups each (~128 registers x 128 invocations); a full SM reaches `eff` of its fp32 peak
# (67 TFLOPS / 132) and a workgroup a quarter of that, whether or not the SM is full (one
# workgroup of 4 warps cannot hide its own latencies); workgroups beyond the 528 slots run in
# further (fractional) waves; each dispatch costs GAP of launch and barrier; the reduce moves
# its bytes at BW
SMS, SLOTS_PER_SM, PEAK, GAP, BW = 132, 4, 67e12, 3e-6, 3e12
TARGET, SMAX, MIN_STAGES = 512, 32, 16  # vk_nn.h CCFG_VK_SPLITK_*


def slices(groups, stages):
    """nn_vk.c conv_splitk's default rule, then the evening out of the slices"""
    s = min(-(-TARGET // groups), SMAX, stages // MIN_STAGES, stages)
    if s < 2:
        return 1
    sps = -(-stages // s)
    return -(-stages // sps)


def model_ms(groups, stages, s, cout, p, eff):
    """predicted ms of one convolution split into s slices (1: unsplit), reduce included"""
    slots = SMS * SLOTS_PER_SM
    wg_rate = eff * PEAK / SMS / SLOTS_PER_SM
    flop_wg = 2.0 * BM * BN * BK * stages / s          # rounded tiles, as the shader computes
    t = max(1.0, groups * s / slots) * flop_wg / wg_rate + GAP
    if s > 1:
        t += (s + 2) * cout * p * 4 / BW + GAP         # partials read, y written (and read)
    return 1e3 * t


def convs(rows):
    """(cin, cout, k, stride, ho, wo) of every convolution of the CIFAR-sized model's forward"""
    import torch
    from bench_common import cifar_unet
    model, _ = cifar_unet(save=False)
    seen = []

    def hook(mod, inp, out):
        seen.append((mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0],
                     out.shape[2], out.shape[3]))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32), 10)
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--eff", type=float, nargs="+", default=[0.5, 0.25],
                    help="fraction of fp32 peak of a full SM (the model's assumption)")
    a = ap.parse_args()
    rows = a.rows
    table = collections.Counter()
    for cin, cout, k, stride, ho, wo in convs(rows):
        table[(cin, cout, k, stride, ho, wo)] += 1
    print(f"{rows} rows; tiled shader only (more than {BM // 2} output channels)")
    print(f"{'cin->cout k/s':>16} {'px':>5} {'n':>2} {'groups':>6} {'stages':>6} {'S':>3} "
          f"{'groups*S':>8} {'GFLOP':>6} {'partials MB':>11}  "
          + " ".join(f"{'ms@' + str(e):>8} {'split':>6}" for e in a.eff))
    tot_flop = tot_mb = 0.0
    tot = {e: [0.0, 0.0] for e in a.eff}
    by_px = collections.defaultdict(lambda: {e: [0.0, 0.0] for e in a.eff})
    for (cin, cout, k, stride, ho, wo), n in sorted(table.items(), key=lambda t: -t[0][4]):
        if cout <= BM // 2:
            continue
        p = rows * ho * wo
        groups = math.ceil(p / BN) * math.ceil(cout / BM)
        stages = k * k * math.ceil(cin / BK)
        s = slices(groups, stages)
        flop = 2.0 * cout * p * cin * k * k / 1e9
        mb = (2 * s * cout * p * 4 / 1e6) if s > 1 else 0.0   # written once, read once
        tot_flop += n * flop
        tot_mb += n * mb
        cols = []
        for e in a.eff:
            t0 = model_ms(groups, stages, 1, cout, p, e)
            t1 = model_ms(groups, stages, s, cout, p, e)
            tot[e][0] += n * t0
            tot[e][1] += n * t1
            by_px[ho][e][0] += n * t0
            by_px[ho][e][1] += n * t1
            cols.append(f"{t0:8.3f} {t1:6.3f}")
        print(f"{cin:>6}->{cout:<4} {k}/{stride} {ho:>3}^2 {n:>2} {groups:>6} {stages:>6} {s:>3} "
              f"{groups * s:>8} {flop:>6.2f} {mb:>11.1f}  " + " ".join(cols))
    print(f"total: {tot_flop:.1f} GFLOP in the tiled convolutions, {tot_mb:.0f} MB of partial "
          f"sums moved (at 4 TB/s: {tot_mb / 4e6 * 1e3:.3f} ms)")
    for px, t in sorted(by_px.items(), reverse=True):
        print(f"model, {px}x{px} px: " + "; ".join(
            f"eff {e}: {t[e][0]:.2f} -> {t[e][1]:.2f} ms" for e in a.eff))
    for e in a.eff:
        print(f"model, all tiled convolutions, eff {e}: {tot[e][0]:.1f} -> {tot[e][1]:.1f} ms "
              f"per forward ({tot[e][0] - tot[e][1]:.1f} ms saved)")


if __name__ == "__main__":
    main()
