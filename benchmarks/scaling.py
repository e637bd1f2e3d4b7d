"""Scaling of ccfg's CPU paths beside their peers (issue 16 item 5), with the machine's limits.

    .venv/bin/python benchmarks/scaling.py [--out docs/scaling.md] [--plot PNG] [--threads T]
                                           [--section docs/PERFORMANCE.md] [--quick]

``--section`` also writes the tables into that file between its two scaling.py marker lines
(docs/PERFORMANCE.md's section "Scaling (issue 16 item 5)"), so one command refreshes both.

Four series, each point timed against its peer in this process, calls alternating (ccfg, peer,
ccfg, peer, ...) after one checked call of each, medians:
  - UNet forward against batch (1 .. 256 rows at 32x32) and against image size (32 .. 128 at a
    fixed batch): bench_unet.py's model (diffusers UNet2DModel, block_out_channels (32, 64, 128),
    3.9M parameters, random weights from a fixed seed) run by ccfg's C forward and by PyTorch on
    the same weights; outputs agree to max|a-b|/max|b| <= 1e-4 before timing;
  - exact mixture against dimension (2 .. 4096, K = 8) and against components (2 .. 256, d = 64):
    unguided DDIM of n samples (bench_sampling.isotropic_k8's mixtures), ``ccfg.sample`` against
    bench_sampling's NumPy float64 loop (one GEMM per step for the quadratic forms); final samples
    agree to max|a-b| <= 1e-3 * max|b| before timing.
Limits, measured at the start and the end (the best repeat: ceilings): copy bandwidth
(``np.copyto`` of a large float32 array: read + write), sgemm (``np.dot`` float32, NumPy's
OpenBLAS; ``torch.mm`` too when torch is there) and dgemm (``np.dot`` float64). Beside each UNet
point: the forward's convolution/matmul FLOPs (counted by torch.utils.flop_counter on the
diffusers model) and the rate each side reaches, as a percentage of the fastest sgemm. Beside each
mixture point: a lower bound, steps x max(time to read x and write x' once at copy bandwidth
(float32), 4 n K d flops at the dgemm rate).

Threads: ``--threads T`` sets OMP_NUM_THREADS and OPENBLAS_NUM_THREADS before NumPy and ccfg load
and calls torch.set_num_threads(T); without it both use ccfg's OpenMP thread count. The UNet
series need torch and diffusers (dev extras); without them they are skipped, and the table says
so. The plot needs matplotlib. ``--quick`` is a seconds-long grid for tests/test_bench_scaling.py
(structure only: its numbers mean nothing). Nothing about time is asserted; a disagreement between
ccfg and a peer is marked MISMATCH in the table and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "docs", "scaling.md"),
                    help="markdown table to write (default docs/scaling.md)")
    ap.add_argument("--plot", default=None,
                    help="PNG plot to write (default: --out with .png in place of .md)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for ccfg, OpenBLAS and torch (default: ccfg's OpenMP count)")
    ap.add_argument("--section", default=None, metavar="MD",
                    help="also write the tables between the scaling.py markers of this file "
                         "(docs/PERFORMANCE.md's section 'Scaling (issue 16 item 5)')")
    ap.add_argument("--quick", action="store_true", help="a tiny grid, seconds (for the test)")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.plot is None:
        args.plot = os.path.splitext(args.out)[0] + ".png"
    if args.section is not None:        # checked now, not after minutes of measuring
        try:
            section_bounds(read_text(args.section))
        except (OSError, ValueError) as exc:
            ap.error(f"--section: {exc}")
    return args


BEGIN = "<!-- benchmarks/scaling.py writes from here -->"
END = "<!-- benchmarks/scaling.py writes up to here -->"


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def section_bounds(doc):
    """(end of the BEGIN line, start of the END line) in doc; ValueError without both markers"""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i or doc.find(BEGIN, i + 1) >= 0:
        raise ValueError(f"expected one line {BEGIN!r} followed by one line {END!r}")
    return i + len(BEGIN), j


def write_section(path, text):
    """replace what lies between the markers of ``path`` with ``text`` (its headings one level
    down, the title line dropped: it goes under that file's own section heading)"""
    doc = read_text(path)
    a, b = section_bounds(doc)
    body = [("#" + ln if ln.startswith("## ") else ln) for ln in text.splitlines()[2:]]
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc[:a] + "\n" + "\n".join(body).strip("\n") + "\n" + doc[b:])


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.threads:         # before NumPy's OpenBLAS and ccfg's OpenMP read them
        os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
        os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import ccfg  # noqa: E402
import bench_sampling  # noqa: E402
from bench_common import measure, measure_pair  # noqa: E402

# (grid, repeats per point): repeats shrink as a point grows, so the full run stays minutes
FULL = dict(batches=[(1, 9), (4, 9), (16, 7), (64, 5), (256, 3)],
            sizes=[(32, 7), (64, 5), (128, 3)], size_batch=8,
            dims=[(2, 7), (16, 7), (64, 7), (256, 7), (1024, 5), (4096, 3)],
            comps=[(2, 7), (8, 7), (32, 7), (64, 7), (128, 5), (256, 5)],
            mix_n=4096, mix_k=8, mix_d=64, steps=10, copy_mib=256, gemm=2048)
QUICK = dict(batches=[(1, 1), (2, 1)], sizes=[(32, 1), (64, 1)], size_batch=1,
             dims=[(2, 1), (8, 1)], comps=[(2, 1), (4, 1)],
             mix_n=64, mix_k=2, mix_d=8, steps=2, copy_mib=4, gemm=64)


def machine():
    name = platform.processor() or platform.machine()
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine(), "x86_64"):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    fl = line.split()
                    flags = "AVX-512" if "avx512f" in fl else ("AVX2" if "avx2" in fl else "")
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs{', ' + flags if flags else ''}"


# ---------------------------------------------------------------------- limits
def limits(g, torch):
    """{name: (value, unit, how)} measured on this machine now: the best of the repeats (a
    ceiling; the median would count the other processes' load as a property of the machine)"""
    out = {}
    n = g["copy_mib"] * 2**20 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    t = measure(lambda: np.copyto(dst, src), repeats=7, warmup=1).min
    out["copy"] = (2 * src.nbytes / t / 1e9, "GB/s",
                   f"`np.copyto`, {g['copy_mib']} MiB float32 (read + write)")
    m = g["gemm"]
    rng = np.random.default_rng(0)
    for key, dt in (("sgemm", np.float32), ("dgemm", np.float64)):
        a = rng.standard_normal((m, m)).astype(dt)
        b = rng.standard_normal((m, m)).astype(dt)
        t = measure(lambda: np.dot(a, b), repeats=5, warmup=1).min
        out[key] = (2 * m**3 / t / 1e9, "GFLOP/s",
                    f"`np.dot` {np.dtype(dt).name} {m}x{m}x{m} (NumPy's OpenBLAS)")
    if torch is not None:
        a = torch.randn(m, m)
        b = torch.randn(m, m)
        t = measure(lambda: torch.mm(a, b), repeats=5, warmup=1).min
        out["sgemm_torch"] = (2 * m**3 / t / 1e9, "GFLOP/s", f"`torch.mm` float32 {m}x{m}x{m}")
    return out


def best_limits(first, last):
    """the better of two measurements of each limit (the run's start and end): load from other
    processes only ever lowers a ceiling"""
    return {k: (max(v[0], last[k][0]), v[1], v[2] + "; best of the run's start and end")
            for k, v in first.items()}


def sgemm_peak(lim):
    """the fastest sgemm measured (NumPy's OpenBLAS or torch), the UNet rows' reference"""
    return max(lim[k][0] for k in ("sgemm", "sgemm_torch") if k in lim)


# ---------------------------------------------------------------------- UNet series
def unet_flops(model, torch, size):
    """convolution/matmul FLOPs of one row at size x size (torch's flop counter)"""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, 1, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, 500, torch.tensor([1]))
    return fc.get_total_flops()


def unet_series(g, torch, failures):
    """[(series, x, ccfg Timing, torch Timing, flops, rel err)]"""
    import bench_unet
    model, unet, folder = bench_unet.build(2)
    try:
        return _unet_points(g, torch, failures, bench_unet, model, unet)
    finally:                    # the saved weights (16 MB) were only needed to load ccfg's model
        shutil.rmtree(folder, ignore_errors=True)


def _unet_points(g, torch, failures, bench_unet, model, unet):
    rng = np.random.default_rng(0)
    pts = [("batch", b, 32, r) for b, r in g["batches"]]
    pts += [("size", s, s, r) for s, r in g["sizes"]]
    flops = {}
    out = []
    for series, xval, size, reps in pts:
        rows = xval if series == "batch" else g["size_batch"]
        x = rng.standard_normal((rows, 1, size, size)).astype(np.float32)
        labels = (np.arange(rows) % 10).astype(np.int64)
        tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

        def fb():
            with torch.no_grad():
                return model(tx, 500, tl).sample

        def fa():
            return unet(x, 500, labels)

        err = bench_unet.rel_err(fa(), fb().numpy())    # the checked calls are the warm-up
        if err > 1e-4:
            failures.append(f"UNet {series} {xval}: ccfg differs from torch ({err:.2e})")
        ta, tb = measure_pair(fa, fb, reps, warmup=0)
        if size not in flops:
            flops[size] = unet_flops(model, torch, size)
        out.append((series, xval, ta, tb, rows * flops[size], err))
        print(f"  UNet {series} {xval}: ccfg {ta.median * 1e3:.1f} ms, torch {tb.median * 1e3:.1f} "
              f"ms, torch/ccfg {tb.median / ta.median:.2f}x (rel err {err:.1e})", flush=True)
    return out


# ---------------------------------------------------------------------- mixture series
def mixture_series(g, failures):
    """[(series, x, ccfg Timing, numpy Timing, bound seconds, rel err)]"""
    steps, n = g["steps"], g["mix_n"]
    _, ab, ab_next, _ = bench_sampling.diffusers_ddim_schedule(steps)
    plan = ccfg.schedulers.plan("ddim", steps)
    if not np.allclose(plan["alpha_bars"], ab, rtol=1e-6, atol=0):
        failures.append("mixture: ccfg.schedulers.plan('ddim') differs from diffusers' schedule")
    pts = [("dim", d, d, g["mix_k"], r) for d, r in g["dims"]]
    pts += [("components", k, g["mix_d"], k, r) for k, r in g["comps"]]
    out = []
    for series, xval, d, k, reps in pts:
        model = bench_sampling.isotropic_k8(d=d, K=k)
        gmm = bench_sampling.NumpyGMM(model)
        x_T = ccfg.randn(0, n, model.shape)

        def fa():
            return ccfg.sample(model, guidance=None, sampler="ddim", steps=steps, n=n, seed=0,
                               x_T=x_T, progress=False)

        def fb():
            return bench_sampling.numpy_sample_unguided(gmm, x_T, ab, ab_next)

        a, b = fa(), fb()                                  # the checked calls are the warm-up
        err = float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))
        if err > 1e-3:
            failures.append(f"mixture {series} {xval}: ccfg differs from NumPy ({err:.2e})")
        ta, tb = measure_pair(fa, fb, reps, warmup=0)
        out.append((series, xval, ta, tb, (n, d, k), err))
        print(f"  mixture {series} {xval}: ccfg {ta.median * 1e3:.1f} ms, numpy "
              f"{tb.median * 1e3:.1f} ms, numpy/ccfg {tb.median / ta.median:.2f}x "
              f"(rel err {err:.1e})", flush=True)
    return out


def mixture_bound(ndk, steps, lim):
    n, d, k = ndk
    mem = 2 * 4 * n * d / (lim["copy"][0] * 1e9)          # read x, write x' (float32)
    flop = 4 * n * k * d / (lim["dgemm"][0] * 1e9)        # x·μ_k and Σ_k r_k μ_k
    return steps * max(mem, flop)


# ---------------------------------------------------------------------- output
def _ms(t):
    ms = t * 1e3
    return f"{ms:.0f}" if ms >= 100 else (f"{ms:.1f}" if ms >= 10 else f"{ms:.3g}")


def _check(err, tol):
    return f"{err:.1e}" + ("" if err <= tol else " MISMATCH")


def _section(title, intro, cells):
    """a heading, a paragraph and a table's header rows"""
    return [f"## {title}", "", intro, "",
            "| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def markdown(g, lim, unet, mix, info):
    L = ["# Scaling of ccfg's CPU paths (issue 16 item 5)", "",
         f"Written by `{info['command']}` on {info['date']}.", "",
         f"- Machine: {info['machine']}; load average {info['load0']} at the start, "
         f"{info['load1']} at the end (1/5/15 min); {info['minutes']:.1f} min in all.",
         f"- Threads: {info['threads']} for ccfg (OpenMP), NumPy's OpenBLAS and torch.",
         "- Each point: medians of calls alternating ccfg and its peer (repeats in the table), "
         "after one checked call of each. Ratios above 1: ccfg is faster.", "",
         "## Limits (measured in this run: the best repeat)", "", "| limit | rate | how |",
         "|---|---|---|"]
    for key, (val, unit, how) in lim.items():
        L.append(f"| {key} | {val:.3g} {unit} | {how} |")
    L.append("")
    if isinstance(unet, str):
        L += ["## UNet forward", "", f"Skipped: {unet}.", ""]
    else:
        sgemm = sgemm_peak(lim)
        for series, title in (("batch", "UNet forward against batch (32x32)"),
                              ("size", f"UNet forward against image size "
                                       f"(batch {g['size_batch']})")):
            L += _section(title, "bench_unet.py's UNet2DModel (32, 64, 128; 3.9M parameters), "
                          "ccfg's C forward against diffusers on PyTorch CPU, same weights. "
                          "GFLOP: convolutions and matmuls (torch's flop counter); % sgemm: the "
                          f"rate reached against the fastest sgemm above, {sgemm:.0f} "
                          "GFLOP/s.",
                          [series, "ccfg ms", "torch ms", "torch / ccfg", "GFLOP",
                           "ccfg GFLOP/s (% sgemm)", "torch GFLOP/s (% sgemm)", "reps",
                           "max rel diff"])
            for s, x, ta, tb, fl, err in unet:
                if s != series:
                    continue
                ra, rb = fl / ta.median / 1e9, fl / tb.median / 1e9
                L.append(f"| {x} | {_ms(ta.median)} | {_ms(tb.median)} | "
                         f"{tb.median / ta.median:.2f}x | {fl / 1e9:.2f} | "
                         f"{ra:.1f} ({100 * ra / sgemm:.0f}%) | "
                         f"{rb:.1f} ({100 * rb / sgemm:.0f}%) | "
                         f"{ta.repeats} | {_check(err, 1e-4)} |")
            L.append("")
    for series, title in (("dim", f"Exact mixture against dimension (K = {g['mix_k']})"),
                          ("components", f"Exact mixture against components (d = {g['mix_d']})")):
        L += _section(title, f"Unguided DDIM-{g['steps']}, n = {g['mix_n']}, isotropic "
                      "components (bench_sampling.isotropic_k8): `ccfg.sample` against "
                      "bench_sampling's NumPy float64 loop. Bound: steps x max(read x + write x' "
                      "in float32 at the copy bandwidth, 4nKd flops at the dgemm rate).",
                      ["d" if series == "dim" else "K", "ccfg ms", "NumPy ms", "NumPy / ccfg",
                       "bound ms", "ccfg / bound", "reps", "max rel diff"])
        for s, x, ta, tb, ndk, err in mix:
            if s != series:
                continue
            bound = mixture_bound(ndk, g["steps"], lim)
            L.append(f"| {x} | {_ms(ta.median)} | {_ms(tb.median)} | "
                     f"{tb.median / ta.median:.2f}x | {_ms(bound)} | "
                     f"{ta.median / bound:.3g}x | {ta.repeats} | {_check(err, 1e-3)} |")
        L.append("")
    if info.get("plot"):
        L += [f"![time against batch, image size, dimension and components, ccfg beside its "
              f"peers]({info['plot']})", ""]
    else:
        L += [f"(No plot: {info.get('plot_error')}.)", ""]
    return "\n".join(L)


def plot(path, g, lim, unet, mix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    panels = [("batch", "UNet forward, 32x32: batch", "torch", unet),
              ("size", f"UNet forward, batch {g['size_batch']}: image size", "torch", unet),
              ("dim", f"mixture, K={g['mix_k']}, DDIM-{g['steps']}: dimension", "NumPy f64", mix),
              ("components", f"mixture, d={g['mix_d']}, DDIM-{g['steps']}: components",
               "NumPy f64", mix)]
    for ax, (series, title, peer, data) in zip(axes.ravel(), panels):
        ax.set_title(title, fontsize=10)
        if isinstance(data, str):
            ax.text(0.5, 0.5, "skipped:\n" + data[:60], ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            continue
        pts = [p for p in data if p[0] == series]
        xs = [p[1] for p in pts]
        ax.loglog(xs, [p[2].median for p in pts], "o-", label="ccfg")
        ax.loglog(xs, [p[3].median for p in pts], "s--", label=peer)
        if data is mix:
            ax.loglog(xs, [mixture_bound(p[4], g["steps"], lim) for p in pts], ":", color="gray",
                      label="bound (copy / dgemm)")
        else:
            ax.loglog(xs, [p[4] / (sgemm_peak(lim) * 1e9) for p in pts], ":", color="gray",
                      label="FLOPs at sgemm rate")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(series)
        ax.set_ylabel("seconds (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"ccfg CPU scaling beside its peers (copy {lim['copy'][0]:.1f} GB/s, "
                 f"sgemm {sgemm_peak(lim):.0f} GFLOP/s)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args):
    import time
    t0 = time.perf_counter()
    load0 = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    g = QUICK if args.quick else FULL
    try:
        import torch
        import diffusers  # noqa: F401
    except ImportError as exc:
        torch, missing = None, f"torch and diffusers (dev extras) not importable: {exc}"
    else:
        missing = None
    threads = args.threads or ccfg.devices()[0]["threads"]
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"ccfg {ccfg.__version__} scaling ({ccfg.__file__}); threads {threads}; load {load0}",
          flush=True)
    failures = []
    lim0 = limits(g, torch)
    for key, (val, unit, how) in lim0.items():
        print(f"  limit {key}: {val:.1f} {unit} ({how})", flush=True)
    unet = missing if missing else unet_series(g, torch, failures)
    if missing:
        print(f"  UNet series skipped: {missing}")
    mix = mixture_series(g, failures)
    lim1 = limits(g, torch)
    for key, (val, unit, how) in lim1.items():
        print(f"  limit {key} at the end: {val:.1f} {unit}", flush=True)
    lim = best_limits(lim0, lim1)
    info = dict(command="benchmarks/scaling.py " + " ".join(sys.argv[1:]) if sys.argv[1:]
                else "benchmarks/scaling.py",
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=machine(), threads=threads, load0=load0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    try:
        plot(args.plot, g, lim, unet, mix)
        info["plot"] = os.path.abspath(args.plot)
    except ImportError as exc:
        info["plot_error"] = f"matplotlib not importable: {exc}"
    info["load1"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    info["minutes"] = (time.perf_counter() - t0) / 60
    for path in [args.out] + ([args.section] if args.section else []):
        here = dict(info)             # the plot's link, relative to this file's folder
        if info.get("plot"):
            here["plot"] = os.path.relpath(info["plot"], os.path.dirname(os.path.abspath(path)))
        text = markdown(g, lim, unet, mix, here)
        if path == args.section:
            write_section(path, text)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    print(f"wrote {args.out}" + (f" and {args.plot}" if info.get("plot") else "")
          + (f"; the tables into {args.section}" if args.section else ""))
    if failures:
        print("MISMATCH:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
