"""ccfg benchmarks (``make bench``): medians and ratios against peers measured in this process.

    .venv/bin/python benchmarks/run.py [--full] [--only guide|sampling|vulkan|unet_condition]

The default run (``make bench``) is guide, sampling and vulkan. ``--only unet_condition`` runs
bench_unet_condition.py (diffusers UNet2DConditionModel against ccfg's C UNet on the CPU, two
configs; a few minutes on 2 cores), which no default run includes.

Nothing about time is asserted. Correctness checks run before each timing (ccfg vs the peer);
a disagreement is printed as MISMATCH and makes the exit status 1. The environment is used as
found (no thread variables are set or unset); the thread pools in use are printed first.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ccfg  # noqa: E402
import bench_common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true",
                    help="also the high_dim d=1024, n=10k sampling case (minutes on 2 cores)")
    ap.add_argument("--only", choices=["guide", "sampling", "vulkan", "unet_condition"],
                    help="run one benchmark group (unet_condition: only when named)")
    args = ap.parse_args(argv)

    sys.stdout.reconfigure(line_buffering=True)     # progress shows under `make` too
    t0 = time.perf_counter()
    print(f"ccfg {ccfg.__version__} benchmarks  ({ccfg.__file__})")
    for line in bench_common.thread_report():
        print(line)
    print("timing: time.perf_counter, warm-up first, median of repeats; IQR = q3 - q1; "
          "'t / t_peer' < 1 means faster than the peer\n")

    failures = []
    if args.only in (None, "guide"):
        import bench_guide
        bench_guide.run(failures)
        print()
    if args.only in (None, "sampling"):
        import bench_sampling
        bench_sampling.run(failures, full=args.full)
        print()
    if args.only in (None, "vulkan"):
        import bench_vulkan
        bench_vulkan.run(failures, full=args.full)
        print()
    if args.only == "unet_condition":
        import bench_unet_condition
        bench_unet_condition.run(failures)
        print()
    print(f"total benchmark time {time.perf_counter() - t0:.1f} s")
    if failures:
        print("FAILED correctness checks:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
