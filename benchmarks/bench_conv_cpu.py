"""CPU 3x3 convolution op against PyTorch (oneDNN): ``_core.nn_op("cpu", "conv2d")`` against
``torch.nn.functional.conv2d`` on the layer shapes of bench_unet.py's UNet2DModel (48 rows of
32x32, channels 32/64/128, the up path's concatenated inputs, the stride-2 downsamplings).

    .venv/bin/python benchmarks/bench_conv_cpu.py [--threads 1] [--repeats 7]

ccfg's layout is CNHW (channels, batch, h, w), torch's NCHW: each side gets its own layout,
prepared outside the timing. The scratch is what the op-test hook gives (at least 4M floats, as
the UNet plans). Checked first (max|a-b|/max|b| <= 1e-5). Medians, calls alternating; ratio =
torch time / ccfg time (> 1: ccfg faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

CASES = [  # (batch, cin, cout, h, w, stride, pad0, pad1)
    (48, 1, 32, 32, 32, 1, 1, 1),      # conv_in
    (48, 32, 32, 32, 32, 1, 1, 1),     # level 0 resnets
    (48, 32, 32, 32, 32, 2, 1, 1),     # level 0 downsample
    (48, 32, 64, 16, 16, 1, 1, 1),     # level 1 first conv
    (48, 64, 64, 16, 16, 1, 1, 1),
    (48, 64, 128, 8, 8, 1, 1, 1),
    (48, 128, 128, 8, 8, 1, 1, 1),
    (48, 256, 128, 8, 8, 1, 1, 1),     # up path: skip concatenated
    (48, 192, 64, 16, 16, 1, 1, 1),
    (48, 96, 32, 32, 32, 1, 1, 1),
    (48, 64, 32, 32, 32, 1, 1, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from ccfg import _core
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    print(f"{'b cin cout h w s':24} {'ccfg ms':>9} {'torch ms':>9} {'torch/ccfg':>10} "
          f"{'ccfg GF/s':>9} {'err':>8}")
    tot_c = tot_t = 0.0
    for b, cin, cout, h, w, s, p0, p1 in CASES:
        rng = np.random.default_rng(cin + cout)
        ho, wo = (h + p0 + p1 - 3) // s + 1, (w + p0 + p1 - 3) // s + 1
        x = rng.standard_normal((cin, b, h, w), dtype=np.float32)
        wt = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        bias = rng.standard_normal(cout, dtype=np.float32)
        out = [np.zeros(cout * b * ho * wo, np.float32)]
        tx = torch.from_numpy(x.transpose(1, 0, 2, 3).copy())
        tw, tb = torch.from_numpy(wt), torch.from_numpy(bias)

        def run_ccfg():
            return _core.nn_op("cpu", "conv2d", [x.ravel(), wt.ravel(), bias], out,
                               (b, cin, h, w, cout, 3, s, p0, p1, 0), (), None, None)[0]

        def run_torch():
            with torch.no_grad():
                xp = tx if p0 == p1 else F.pad(tx, (p0, p1, p0, p1))
                return F.conv2d(xp, tw, tb, stride=s, padding=p0 if p0 == p1 else 0)
        got = run_ccfg().reshape(cout, b, ho, wo)
        want = run_torch().numpy().transpose(1, 0, 2, 3)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        tc, tt = [], []
        run_ccfg()
        run_torch()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run_ccfg()
            tc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_torch()
            tt.append(time.perf_counter() - t0)
        mc, mt = statistics.median(tc), statistics.median(tt)
        tot_c += mc
        tot_t += mt
        gf = 2.0 * cout * cin * 9 * b * ho * wo / mc / 1e9
        flag = "" if err <= 1e-5 else "  MISMATCH"
        print(f"{b:3} {cin:4} {cout:4} {h:3} {w:3} {s}    {mc * 1e3:9.2f} {mt * 1e3:9.2f} "
              f"{mt / mc:10.2f} {gf:9.1f} {err:8.1e}{flag}")
    print(f"{'sum':24} {tot_c * 1e3:9.2f} {tot_t * 1e3:9.2f} {tot_t / tot_c:10.2f}")


if __name__ == "__main__":
    main()
