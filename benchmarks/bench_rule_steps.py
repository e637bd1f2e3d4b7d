"""Per-step cost of the guidance rules on a Vulkan device: the table "Per-step cost of the
contrastive rules" of docs/PERFORMANCE.md.

    python benchmarks/bench_rule_steps.py [--device vulkan:0] [--n 10000] [--steps 20] [--repeats 5]
    python benchmarks/bench_rule_steps.py --ab 5 [...]
    python benchmarks/bench_rule_steps.py --ab 5 --coef-ab [...]   (PYTHONPATH=. from the root)

Exact toy mixture (toy_2d), DDIM (DNG and "NegatedCFG ddpm", its peer: DDPM, the sampler DNG
learns from), seed 0. Per rule: wall time per step (median of repeats, the rules interleaved
round-robin so that load drifts hit all alike; the ratio is to NegatedCFG on the same sampler),
device time per step and submits per step from one profiled run (ccfg.profiling), and the
largest kinds of work. Each rule's result is checked against the CPU backend first. Nothing
about time is asserted.

The device tables against the host tables (CCFG_VULKAN_HOST_COEFFICIENTS=1: the coefficient
tables of CCFG and Perp-Neg made on the host from reductions read back every step, DNG's
posterior kept on the host): the switch is read when the device opens, so `--ab R` runs this
script R times in each mode as child processes, alternating (device, host, device, ...), and
prints per rule the median wall ms/step of each mode, host/device, and each mode's ratio to its
NegatedCFG peer. Quote the load (printed) with the numbers; for one-thread numbers run it under
OMP_NUM_THREADS=1 LP_NUM_THREADS=1 (lavapipe's threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
    "NegatedCFG ddpm": lambda: ccfg.NegatedCFG(3.0),
    "DNG": lambda: ccfg.DNG(3.0),
}
# coef.glsl's old path: every stage in the shader with barriers, stage 0 a dispatch of its own
COEF_OLD = {"CCFG_VULKAN_COEF_BARRIERS": "1", "CCFG_VULKAN_COEF_UNFUSED": "1"}
DDPM = ("NegatedCFG ddpm", "DNG")         # run on DDPM; their ratio is to "NegatedCFG ddpm"


def ab(args):
    """--ab: child runs of this script alternating the device tables and the host tables (with
    --coef-ab: the device tables by coef.glsl's current path and by its old one)"""
    modes = {"device": {}, "host": {"CCFG_VULKAN_HOST_COEFFICIENTS": "1"}}
    if args.coef_ab:
        modes = {"device": {}, "old coef": dict(COEF_OLD)}
    a, b = modes
    walls = {m: {} for m in modes}
    submits = {m: {} for m in modes}
    cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--n", str(args.n),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--json"]
    env0 = {k: v for k, v in os.environ.items()
            if k != "CCFG_VULKAN_HOST_COEFFICIENTS" and k not in COEF_OLD}
    loads = [os.getloadavg()[0]]
    for _ in range(args.ab):
        for mode, extra in modes.items():
            r = subprocess.run(cmd, env=dict(env0, **extra), capture_output=True, text=True,
                               check=False)
            if r.returncode:
                sys.exit(f"{mode} run failed:\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            for name, w in res["wall"].items():
                walls[mode].setdefault(name, []).append(w)
            submits[mode] = res["submits"]
            loads.append(os.getloadavg()[0])
    print(f"{args.device}, toy_2d n={args.n}, {args.steps} steps, {args.ab} alternating runs per "
          f"mode (each the median of {args.repeats}); 1-min load {min(loads):.1f}-{max(loads):.1f}")
    print(f"| rule | {a} ms/step | {b} ms/step | {b}/{a} | {a} vs peer | {b} vs peer "
          f"| submits/step {a}, {b} |")
    print("|---|---|---|---|---|---|---|")
    med = {m: {k: statistics.median(v) for k, v in walls[m].items()} for m in modes}
    for name in RULES:
        peer = "NegatedCFG ddpm" if name in DDPM else "NegatedCFG"
        dv, hv = med[a][name], med[b][name]
        print(f"| {name} | {1e3 * dv:.2f} | {1e3 * hv:.2f} | {hv / dv:.2f} | "
              f"{dv / med[a][peer]:.2f} | {hv / med[b][peer]:.2f} | "
              f"{submits[a][name]:.2f}, {submits[b][name]:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="vulkan:0")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ab", type=int, default=0, metavar="R",
                    help="R child runs per mode, alternating device and host tables")
    ap.add_argument("--coef-ab", action="store_true",
                    help="with --ab: alternate coef.glsl's current path and its old one "
                         "(CCFG_VULKAN_COEF_BARRIERS=1 CCFG_VULKAN_COEF_UNFUSED=1) instead of "
                         "the host tables")
    ap.add_argument("--json", action="store_true", help="one JSON line (what --ab reads)")
    args = ap.parse_args()
    if args.ab:
        return ab(args)
    dev = ccfg._device.resolve(args.device)
    toy = ccfg.models.GaussianMixture.toy_2d()

    def kw(name):
        return dict(sampler="ddpm" if name in DDPM else "ddim", steps=args.steps, n=args.n,
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
    profiles = {}
    for name in RULES:
        with ccfg.profiling.profile(dev) as prof:
            run(name)
        profiles[name] = prof.per(args.steps)
    if args.json:
        print(json.dumps({"wall": {k: statistics.median(v) for k, v in wall.items()},
                          "submits": {k: p.batches for k, p in profiles.items()}}))
        return
    print(f"{dev}, toy_2d n={args.n}, {args.steps} steps, median of {args.repeats}"
          f"{', CCFG_VULKAN_HOST_COEFFICIENTS=' + host if host else ''}; load {os.getloadavg()}")
    print("| rule | wall ms/step (vs NegatedCFG, same sampler) | device ms/step | submits/step "
          "| largest kinds (ms/step) |")
    print("|---|---|---|---|---|")
    for name in RULES:
        per = profiles[name]
        top = ", ".join(f"{k.removesuffix('_f64')} {ms:.2f}" for k, _, ms in per.rows[:3])
        w = statistics.median(wall[name])
        base = statistics.median(wall["NegatedCFG ddpm" if name in DDPM else "NegatedCFG"])
        print(f"| {name} | {1e3 * w:.2f} ({w / base:.2f}x) | {per.device_ms:.2f} | "
              f"{per.batches:.2f} | {top} |")


if __name__ == "__main__":
    main()
