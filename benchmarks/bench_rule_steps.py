"""Per-step cost of the guidance rules on a Vulkan device: the table "Per-step cost of the
contrastive rules" of docs/PERFORMANCE.md.

    python benchmarks/bench_rule_steps.py [--device vulkan:0] [--n 10000] [--steps 20] [--repeats 5]

Exact toy mixture (toy_2d), DDIM (DNG: DDPM, the sampler it learns from), seed 0. Per rule: wall
time per step (median of repeats, the rules interleaved round-robin so that load drifts hit
all alike), device time per step and submits per step from one profiled run (ccfg.profiling), and
the largest kinds of work. Run it once as is and once with CCFG_VULKAN_HOST_COEFFICIENTS=1 (the
coefficient tables of CCFG and Perp-Neg on the host, their reductions read back every step) for
the before/after of the device tables. Each rule's result is checked against the CPU backend
first. Nothing about time is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import ccfg  # noqa: E402

RULES = {
    "CFG": lambda: ccfg.CFG(3.0),
    "NegatedCFG": lambda: ccfg.NegatedCFG(3.0),
    "CCFG": lambda: ccfg.CCFG(3.0),
    "PerpNeg": lambda: ccfg.PerpNeg(3.0),
    "PerpNeg global": lambda: ccfg.PerpNeg(3.0, batch_global=True),
    "DNG": lambda: ccfg.DNG(3.0),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="vulkan:0")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = ccfg._device.resolve(args.device)
    toy = ccfg.models.GaussianMixture.toy_2d()

    def kw(name):
        return dict(sampler="ddpm" if name == "DNG" else "ddim", steps=args.steps, n=args.n,
                    seed=0, progress=False)

    def run(name, device=dev):
        return ccfg.sample(toy, "A", "B", RULES[name](), device=device, **kw(name))

    for name in RULES:                  # correctness first (and warm-up)
        a, b = run(name), run(name, "cpu")
        err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        if not err <= 1e-4:
            sys.exit(f"{name}: {dev} differs from the CPU by {err:.2e}")
    wall = {name: [] for name in RULES}
    for _ in range(args.repeats):
        for name in RULES:
            t0 = time.perf_counter()
            run(name)
            wall[name].append((time.perf_counter() - t0) / args.steps)
    host = os.environ.get("CCFG_VULKAN_HOST_COEFFICIENTS", "")
    print(f"{dev}, toy_2d n={args.n}, {args.steps} steps, median of {args.repeats}"
          f"{', CCFG_VULKAN_HOST_COEFFICIENTS=' + host if host else ''}; load {os.getloadavg()}")
    print("| rule | wall ms/step | device ms/step | submits/step | largest kinds (ms/step) |")
    print("|---|---|---|---|---|")
    base = statistics.median(wall["NegatedCFG"])
    for name in RULES:
        with ccfg.profiling.profile(dev) as prof:
            run(name)
        per = prof.per(args.steps)
        top = ", ".join(f"{k.removesuffix('_f64')} {ms:.2f}" for k, _, ms in per.rows[:3])
        w = statistics.median(wall[name])
        print(f"| {name} | {1e3 * w:.2f} ({w / base:.2f}x) | {per.device_ms:.2f} | "
              f"{per.batches:.2f} | {top} |")


if __name__ == "__main__":
    main()
