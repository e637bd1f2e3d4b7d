"""Before/after on the CPU in one process: this checkout's ccfg against another built checkout's
(e.g. main), interleaved call by call so both see the same load, with output hashes compared.

    python benchmarks/ab_cpu.py --base /path/to/other/checkout [--threads 1] [cases...]

The other checkout must have its extension built in place (``setup.py build_ext --inplace``).
Its ``ccfg/`` folder is copied to a temporary folder as the package ``ccfg_base`` (the modules
import each other relatively, so the copy is self-contained); both packages share one libgomp,
hence one thread count and wait policy. Cases: ``d64`` (high_dim d=64 n=10k CCFG, DDIM-50),
``k8`` (isotropic d=64 K=8 n=10k unguided), ``toy`` (toy_2d n=100k CCFG), ``guide512`` and
``guide64`` (the CCFG kernel alone, ``_core.guide`` with ``out=``, N x (4,64,64) float32).
docs/PERFORMANCE.md quotes its numbers with the load they were taken at.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_packages(base):
    src = os.path.join(os.path.abspath(base), "ccfg")
    if not os.path.isdir(src):
        raise SystemExit(f"--base: no ccfg/ package in {base}")
    tmp = tempfile.mkdtemp(prefix="ccfg_ab_")
    shutil.copytree(src, os.path.join(tmp, "ccfg_base"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    import ccfg                      # this checkout first: its import sets the wait policy
    sys.path.insert(0, tmp)
    import ccfg_base
    return ccfg_base, ccfg, tmp


def sampling_case(C, case):
    import numpy as np
    if case == "toy":
        model, n, guided = C.models.GaussianMixture.toy_2d(), 100_000, True
    elif case == "d64":
        model, n, guided = C.models.GaussianMixture.high_dim(d=64), 10_000, True
    else:                            # k8: bench_sampling.isotropic_k8, built here for each package
        means = 0.5 * np.random.default_rng(0).standard_normal((8, 64))
        model, n, guided = C.models.GaussianMixture(means, np.linspace(0.05, 0.2, 8)), 10_000, False
    x_T = C.randn(0, n, model.shape)
    if guided:
        rule = C.CCFG(scale=3.0, tau=0.2)
        return lambda: C.sample(model, positive="A", negative="B", guidance=rule, sampler="ddim",
                                steps=50, n=n, seed=0, x_T=x_T, progress=False)
    return lambda: C.sample(model, guidance=None, sampler="ddim", steps=50, n=n, seed=0, x_T=x_T,
                            progress=False)


def guide_case(C, n, arrays, out):
    u, p, ng = (a.reshape(n, -1) for a in arrays)
    spec = C.CCFG(scale=7.5, tau=0.2)._c_spec()
    o = out.reshape(n, -1)

    def run():
        C._core.guide(spec, u, p, [ng], None, 0, 0, "cpu", o)
        return out
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a built checkout to compare against")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None,
                    help="ccfg's OpenMP pool size (set before import; default: the library's)")
    ap.add_argument("cases", nargs="*", default=["d64", "k8", "toy", "guide512", "guide64"])
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    base, new, tmp = load_packages(args.base)
    try:
        print(f"base {base.__file__}\nnew  {new.__file__}\nload average {os.getloadavg()}")
        for case in args.cases:
            if case.startswith("guide"):
                import bench_guide
                n = int(case[5:])
                bench_guide.N = n
                arrays = bench_guide.make_inputs()
                out = np.empty_like(arrays[0])
                fa, fb = guide_case(base, n, arrays, out), guide_case(new, n, arrays, out)
                reps = max(args.repeats, 4000 // n)
            else:
                fa, fb = sampling_case(base, case), sampling_case(new, case)
                reps = args.repeats
            ha = hashlib.md5(fa().tobytes()).hexdigest()
            hb = hashlib.md5(fb().tobytes()).hexdigest()
            ta, tb = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                fa()
                ta.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fb()
                tb.append(time.perf_counter() - t0)
            ma, mb = float(np.median(ta)), float(np.median(tb))
            print(f"{case}: base {ma * 1e3:.2f} ms, new {mb * 1e3:.2f} ms, speedup {ma / mb:.2f}x, "
                  f"same bits {ha == hb} ({reps} interleaved repeats)")
        print(f"load average {os.getloadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
