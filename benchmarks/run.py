"""ccfg benchmarks (``make bench``): medians and ratios against peers measured in this process.

    .venv/bin/python benchmarks/run.py [--full] [--only guide|sampling|unet|vulkan|unet_condition]
                                       [--unet-n 16] [--unet-steps 5]

The default run (``make bench``) is guide, sampling, unet and vulkan, then issue 16's table: each
of its 8 rows re-measured in this run (ccfg, peer, ratio, target, met or not), followed by the
profiles issue 16 item 1 asks for (UNet time per op kind, ``guide`` per phase, mixture sampling
per phase). The unet group (bench_unet.py's model: UNet2DModel forward of 3n rows and a CCFG DDIM
run of n samples against PyTorch on the same weights and threads) needs torch and diffusers (the
dev extras); without them it is skipped, and said so. ``--only unet_condition`` runs
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

import numpy as np  # noqa: E402

import ccfg  # noqa: E402
import bench_common  # noqa: E402


def torch_missing():
    """None when torch and diffusers import, else the reason (the unet rows are skipped)"""
    try:
        import torch  # noqa: F401
        import diffusers  # noqa: F401
    except ImportError as exc:
        return f"torch and diffusers (dev extras) not importable: {exc}"
    return None


def row(table, case, impl):
    """the Timing of (case, impl) in a bench_common.Table, or None (the row was not measured)"""
    if table is None:
        return None
    for c, i, t, _, _ in table.rows:
        if c == case and i == impl:
            return t
    return None


def _speedup(t_ccfg, t_peer):
    return t_peer / t_ccfg


def _ratio_text(r):
    return f"{r:.2f}x" + (" (*slower*)" if r < 1.0 else "")


def _met(ok):
    return "met" if ok else "not met"


def issue16_table(res, unet_args):
    """Issue 16's table from this run's numbers: (what, ccfg, peer, ratio, target, met) rows;
    a row whose group did not run says why."""
    rows = []
    g = res.get("guide")
    if isinstance(g, str) or g is None:
        rows += [("`guide` CCFG, N=512 x 4x64x64 float32", g or "not run (--only)", "", "",
                  "≥ 70% of copy", ""),
                 ("same", "", "the formula in NumPy", "", "≥ 4x", ""),
                 ("same at N=64 (in cache)", "", "NumPy", "", "keep (≥ 1x)", "")]
    else:
        import bench_guide
        large = getattr(g, "large", None)
        if large is None:
            rows.append(("`guide` N=512", "not measured (bench_guide.run returned no N=512 "
                         "medians)", "", "", "", ""))
        else:
            n = 512
            nbytes = n * 4 * int(np.prod(bench_guide.SHAPE))
            copy_bw = 2 * 3 * nbytes / large["copy"]             # read + write of 3 arrays
            bw = 4 * nbytes / large["guide"]                      # 3 reads + 1 write
            pct = 100 * bw / copy_bw
            rows.append((f"`guide` CCFG, N={n} x 4x64x64 float32 ({nbytes >> 20} MiB per array)",
                         f"{large['guide'] * 1e3:.2f} ms = {bw / 1e9:.1f} GB/s (3 reads + 1 write)",
                         f"`np.copyto` {copy_bw / 1e9:.1f} GB/s (read + write)",
                         f"{pct:.0f}% of copy bandwidth", "≥ 70%", _met(pct >= 70)))
            r = _speedup(large["guide"], large["numpy"])
            rows.append(("same", f"{large['guide'] * 1e3:.2f} ms",
                         f"the formula in NumPy, {large['numpy'] * 1e3:.2f} ms", _ratio_text(r),
                         "≥ 4x", _met(r >= 4)))
            # np.copyto writes into memory it already has; guide(out=) is the like-for-like
            # call (a fresh result's pages are zeroed by the kernel on first touch)
            t_out = large.get("guide out=")
            if t_out is not None:
                bw = 4 * nbytes / t_out
                pct = 100 * bw / copy_bw
                rows.append(("same, `guide(out=)` into a reused buffer",
                             f"{t_out * 1e3:.2f} ms = {bw / 1e9:.1f} GB/s",
                             "`np.copyto` (its destination reused too)",
                             f"{pct:.0f}% of copy bandwidth", "≥ 70%", _met(pct >= 70)))
                r = _speedup(t_out, large["numpy"])
                rows.append(("same, `guide(out=)`", f"{t_out * 1e3:.2f} ms",
                             f"the formula in NumPy, {large['numpy'] * 1e3:.2f} ms",
                             _ratio_text(r), "≥ 4x", _met(r >= 4)))
        t_c = row(g, "guide N=64 (4,64,64)", "ccfg.guide")
        t_n = row(g, "guide N=64 (4,64,64)", "numpy")
        if t_c is None or t_n is None:
            rows.append(("same at N=64 (in cache)", "not measured (row missing from "
                         "bench_guide's table)", "", "", "keep (≥ 1x)", ""))
        else:
            r = _speedup(t_c.median, t_n.median)
            rows.append(("same at N=64 (in cache)", f"{t_c.median * 1e3:.2f} ms",
                         f"NumPy {t_n.median * 1e3:.2f} ms", _ratio_text(r), "keep (≥ 1x)",
                         _met(r >= 1)))

    u = res.get("unet")
    n, steps = unet_args
    fwd = f"UNet forward, {3 * n} rows, bench_unet.py's model (32,64,128; 3.9M)"
    smp = f"CCFG DDIM sampling, n = {n}, {steps} steps, that UNet"
    if isinstance(u, dict):
        thr = u.get("threads", "?")
        thr = f"{thr} thread" + ("" if thr == 1 else "s")
        for what, a, b, peer in ((fwd, "forward_ccfg", "forward_torch",
                                  f"PyTorch CPU (diffusers `UNet2DModel`), {thr}"),
                                 (smp, "sample_ccfg", "sample_torch",
                                  "diffusers DDIM loop + CCFG in torch")):
            r = _speedup(u[a].median, u[b].median)
            rows.append((what, f"{u[a].median:.3f} s", f"{peer}, {u[b].median:.3f} s",
                         f"{r:.2f}x " + ("faster" if r >= 1 else "(*slower*)"), "≥ 1.5x faster",
                         _met(r >= 1.5)))
    else:
        why = f"skipped: {u}" if u else "not run (--only)"
        rows += [(fwd, why, "PyTorch CPU", "", "≥ 1.5x faster", ""),
                 (smp, why, "diffusers DDIM loop + CCFG in torch", "", "≥ 1.5x faster", "")]

    s = res.get("sampling")
    for label, what in (("toy_2d n=100k", "exact mixture, toy_2d n=100k, 50 steps, CCFG"),
                        ("high_dim d=64 n=10k", "exact mixture, d=64 n=10k, CCFG"),
                        ("isotropic d=64 K=8 n=10k unguided",
                         "exact mixture, d=64, K=8 isotropic, n=10k, unguided DDIM-50")):
        t_c = row(s, label, "ccfg.sample (C core)") if not isinstance(s, str) else None
        t_n = row(s, label, "numpy") if not isinstance(s, str) else None
        if t_c is None or t_n is None:
            why = s if isinstance(s, str) else ("not run (--only)" if s is None else
                                                "not measured (row missing from "
                                                "bench_sampling's table)")
            rows.append((what, why, "NumPy float64", "", "≥ 10x", ""))
            continue
        r = _speedup(t_c.median, t_n.median)
        rows.append((what, f"{t_c.median:.3f} s", f"NumPy float64, {t_n.median:.3f} s",
                     _ratio_text(r), "≥ 10x", _met(r >= 10)))
    return rows


def print_issue16(res, unet_args):
    print("issue 16: the table, every row re-measured in this run (medians; ratio = peer time / "
          "ccfg time)")
    head = ("what", "ccfg", "peer", "now", "target", "met")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in issue16_table(res, unet_args):
        print("| " + " | ".join(r) + " |")
    print("('keep' for N=64: the issue's 7.7x was measured against an older, slower NumPy peer; "
          "the row is met while ccfg stays ahead of bench_guide.py's NumPy rule)")
    print()
    print("issue 16 item 1: profiles from this run")
    g = res.get("guide")
    large = getattr(g, "large", None)
    if large is not None:
        print(f"  guide N=512 per phase: Python checks + call "
              f"{1e3 * (large['guide out='] - large['kernel']):.2f} ms, result allocation / "
              f"first touch {1e3 * (large['guide'] - large['guide out=']):.2f} ms, C pass "
              f"(NaN/Inf checks, reductions, coefficient table, combine: one pass) "
              f"{1e3 * large['kernel']:.2f} ms; guide(out=) {1e3 * large['guide out=']:.2f} ms")
    else:
        print("  guide: not measured in this run")
    s = res.get("sampling")
    phases = getattr(s, "phases", None)
    if phases:
        for label, (step, t_eps, t_guide) in phases.items():
            print(f"  mixture {label}, per step {1e3 * step:.2f} ms: mixture eps "
                  f"(responsibilities, exp, eps) {1e3 * t_eps:.2f} ms, guidance "
                  f"{1e3 * t_guide:.2f} ms, solver/stacking/NaN watch/noise/Python "
                  f"{1e3 * max(step - t_eps - t_guide, 0.0):.2f} ms (each phase timed alone)")
    else:
        print("  mixture sampling: not measured in this run")
    u = res.get("unet")
    if isinstance(u, dict) and u.get("profile"):
        print(f"  UNet forward of {3 * unet_args[0]} rows by op kind (conv, GroupNorm, attention, "
              "linear, elementwise, copies):")
        print(u["profile"])
    else:
        print(f"  UNet: {u if isinstance(u, str) else 'not measured in this run'}")


def run_unet(failures, n, steps):
    why = torch_missing()
    if why is not None:
        print(f"unet: skipped: {why}")
        return why
    import bench_unet
    threads = bench_unet.set_threads()
    out = bench_unet.run(failures, n=n, steps=steps, repeats=5, sample_repeats=3, profile=3)
    out["threads"] = threads
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true",
                    help="also the high_dim d=1024, n=10k sampling case (minutes on 2 cores)")
    ap.add_argument("--only", choices=["guide", "sampling", "unet", "vulkan", "unet_condition"],
                    help="run one benchmark group (unet_condition: only when named)")
    ap.add_argument("--unet-n", type=int, default=16,
                    help="unet group: samples per CCFG run, 3n rows per forward (default 16)")
    ap.add_argument("--unet-steps", type=int, default=5,
                    help="unet group: DDIM steps of the timed CCFG runs (default 5)")
    args = ap.parse_args(argv)
    if args.unet_n < 1 or args.unet_steps < 1:
        ap.error("--unet-n and --unet-steps must be >= 1")

    sys.stdout.reconfigure(line_buffering=True)     # progress shows under `make` too
    t0 = time.perf_counter()
    print(f"ccfg {ccfg.__version__} benchmarks  ({ccfg.__file__})")
    for line in bench_common.thread_report():
        print(line)
    print("timing: time.perf_counter, warm-up first, median of repeats; IQR = q3 - q1; "
          "'t / t_peer' < 1 means faster than the peer\n")

    failures = []
    res = {}
    if args.only in (None, "guide"):
        import bench_guide
        res["guide"] = bench_guide.run(failures)
        print()
    if args.only in (None, "sampling"):
        import bench_sampling
        res["sampling"] = bench_sampling.run(failures, full=args.full)
        print()
    if args.only in (None, "unet"):
        res["unet"] = run_unet(failures, args.unet_n, args.unet_steps)
        print()
    if args.only in (None, "vulkan"):
        import bench_vulkan
        bench_vulkan.run(failures, full=args.full)
        print()
    if args.only == "unet_condition":
        import bench_unet_condition
        bench_unet_condition.run(failures)
        print()
    if args.only != "unet_condition":
        print_issue16(res, (args.unet_n, args.unet_steps))
        print()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"total benchmark time {time.perf_counter() - t0:.1f} s; load average (1/5/15 min) at "
          f"the end: {load}")
    if failures:
        print("FAILED correctness checks:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
