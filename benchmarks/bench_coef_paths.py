"""coef.glsl's dispatches (the device coefficient tables of CCFG, Perp-Neg and DNG, and DNG's
posterior update) by its current path against its old one: the table "Coefficient stages:
barrier-free build, stage 0 fused" of docs/PERFORMANCE.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 LP_NUM_THREADS=1 python benchmarks/bench_coef_paths.py \
        [--rounds 3] [--repeats 7]

The paths are chosen when the device opens, so each round runs this script once per path as a
child process, alternating the paths:
  new       stages 0, 2 and 3 in the barrier-free build (coef_nb), stage 0 fused into the stages
            that read the reductions (the default);
  unfused   CCFG_VULKAN_COEF_UNFUSED=1: stage 0 a dispatch of its own again;
  barriers  CCFG_VULKAN_COEF_BARRIERS=1: every stage in the shader with barriers;
  old       both switches: the path before the change.
Per case, the child times `repeats` single calls under ccfg.profiling and keeps the medians of
the device time of the coef kinds (coef + coef_nb) and of the call's wall time; the rows print
the median over the rounds of each path and new/old. Cases: the guide call of CCFG, Perp-Neg
(batch_global: stage 1 too) and DNG (from its state), and DNG's update (observe), with rows of 2
elements (one partial per sample: nothing to fuse) and of 3000 (three partials per sample); and
whole toy_2d runs (bench_rule_steps.py's CCFG, Perp-Neg batch_global and DNG), per step.
Run it with PYTHONPATH=. from the repository root (a script's own folder comes first on
sys.path, and an installed ccfg would be measured instead).
Every path's outputs are bit-identical (tests/test_device_coefficients.py); nothing about time is
asserted. Quote the load (printed) with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import ccfg

PATHS = {
    "new": {},
    "unfused": {"CCFG_VULKAN_COEF_UNFUSED": "1"},
    "barriers": {"CCFG_VULKAN_COEF_BARRIERS": "1"},
    "old": {"CCFG_VULKAN_COEF_UNFUSED": "1", "CCFG_VULKAN_COEF_BARRIERS": "1"},
}
# (name, rule, n, dim, negatives, what): what = "guide" or "observe"
CASES = [
    ("CCFG guide, n=100k, dim 2, k=1", "ccfg", 100_000, 2, 1, "guide"),
    ("PerpNeg global guide, n=100k, dim 2, k=1", "perp_global", 100_000, 2, 1, "guide"),
    ("DNG guide, n=100k, k=1", "dng", 100_000, 2, 1, "guide"),
    ("DNG observe, n=100k, dim 2, k=1", "dng", 100_000, 2, 1, "observe"),
    ("CCFG guide, n=500, dim 3000, k=2", "ccfg", 500, 3000, 2, "guide"),
    ("PerpNeg guide, n=500, dim 3000, k=2", "perp", 500, 3000, 2, "guide"),
    ("DNG observe, n=500, dim 3000, k=2", "dng", 500, 3000, 2, "observe"),
    # whole runs, per step (bench_rule_steps.py's settings): toy_2d, one negative "B"
    ("CCFG DDIM-20 toy_2d n=10k, per step", "ccfg", 10_000, 2, 1, "ddim"),
    ("PerpNeg global DDIM-20 toy_2d n=10k, per step", "perp_global", 10_000, 2, 1, "ddim"),
    ("DNG DDPM-20 toy_2d n=10k, per step", "dng", 10_000, 2, 1, "ddpm"),
]
STEPS = 20


def make_rule(name):
    return {"ccfg": lambda: ccfg.CCFG(3.0), "perp": lambda: ccfg.PerpNeg(3.0),
            "perp_global": lambda: ccfg.PerpNeg(3.0, batch_global=True),
            "dng": lambda: ccfg.DNG(3.0)}[name]()


def child(args):
    out = {}
    for name, rule_name, n, dim, k, what in CASES:
        rng = np.random.default_rng(0)
        u = rng.standard_normal((n, dim)).astype(np.float32)
        p = (u + 0.3 * rng.standard_normal(u.shape)).astype(np.float32)
        negs = [(u + 0.3 * rng.standard_normal(u.shape)).astype(np.float32) for _ in range(k)]
        rule = make_rule(rule_name)
        state, per = None, 1
        if what in ("ddim", "ddpm"):
            toy, per = ccfg.models.GaussianMixture.toy_2d(), STEPS
        elif rule_name == "dng":
            _, state = ccfg.guide(u, p, negs, rule, device=args.device)

        def call():
            if what in ("ddim", "ddpm"):
                ccfg.sample(toy, "A", "B", rule, sampler=what, steps=STEPS, n=n, seed=0,
                            progress=False, device=args.device)
            elif what == "observe":
                state.observe(u, p, u, negs, 0.5, 0.6)
            elif state is not None:
                ccfg.guide(u, p, negs, rule, state)
            else:
                ccfg.guide(u, p, negs, rule, device=args.device)

        call()                                          # warm-up: pipelines, buffers
        dev_ms, wall_ms, calls = [], [], 0
        for _ in range(args.repeats):
            with ccfg.profiling.profile(args.device) as prof:
                t0 = time.perf_counter()
                call()
                wall_ms.append(1e3 * (time.perf_counter() - t0))
            rows = [r for r in prof.rows if r[0].removesuffix("_f64") in ("coef", "coef_nb")]
            dev_ms.append(sum(ms for _, _, ms in rows))
            calls = sum(c for _, c, _ in rows)
        out[name] = {"coef_ms": statistics.median(dev_ms) / per,
                     "wall_ms": statistics.median(wall_ms) / per, "dispatches": calls / per}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="vulkan:0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--child", action="store_true", help="one path, one JSON line")
    args = ap.parse_args()
    if args.child:
        return child(args)
    cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--repeats",
           str(args.repeats), "--child"]
    env0 = {k: v for k, v in os.environ.items() if k not in PATHS["old"]}
    res = {m: [] for m in PATHS}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for mode, extra in PATHS.items():
            r = subprocess.run(cmd, env=dict(env0, **extra), capture_output=True, text=True,
                               check=False)
            if r.returncode:
                sys.exit(f"{mode} run failed:\n{r.stderr[-3000:]}")
            res[mode].append(json.loads(r.stdout.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    print(f"{args.device}, {args.rounds} rounds alternating {', '.join(PATHS)}, each case the "
          f"median of {args.repeats} calls; 1-min load {min(loads):.1f}-{max(loads):.1f}")
    print("| case | coef dispatches new, old | coef device ms: "
          + " | ".join(PATHS) + " | new/old | wall ms new, old |")
    print("|---|---|" + "---|" * len(PATHS) + "---|---|")
    for name, *_ in CASES:
        med = {m: statistics.median(r[name]["coef_ms"] for r in res[m]) for m in PATHS}
        wall = {m: statistics.median(r[name]["wall_ms"] for r in res[m]) for m in PATHS}
        print(f"| {name} | {res['new'][0][name]['dispatches']:.3g}, "
              f"{res['old'][0][name]['dispatches']:.3g} | "
              + " | ".join(f"{med[m]:.3f}" for m in PATHS)
              + f" | {med['new'] / med['old']:.2f} | {wall['new']:.2f}, {wall['old']:.2f} |")


if __name__ == "__main__":
    main()
