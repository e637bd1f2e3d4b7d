"""Adaptive τ for Contrastive CFG: each τ schedule against the best fixed τ, per setting.

    .venv/bin/python benchmarks/tau_study.py            # full study: docs/TAU.md + docs/figures/tau_study.json
    .venv/bin/python benchmarks/tau_study.py --quick    # seconds: two small mixtures, a short grid

Settings (docs/TAU.md states the protocol and the results):

- exact Gaussian mixtures (ccfg.models.GaussianMixture), positive "A", negative "B", exact target
  {A1, A2}: d = 2 (the toy_2d layout with its means scaled so the nearest pair is 4.3, 6.4 or
  9.5 standard deviations apart) and d = 16, 64, 256, 1024 (GaussianMixture.high_dim, var 0.1,
  every pair of means 4 or 8 standard deviations apart, or delta = 0.25 per coordinate: a
  separation growing like sqrt(d)); guidance scale w = 3 and 6; DDIM-20, n samples, seed 0.
  Objective: the **good-sample rate**, the fraction of samples that are both in the exact
  target (most likely component A1 or A2) and on the data (log-density above the data's own
  0.1 % quantile) — leakage and off-support in one number. Also reported: leakage, off-support,
  energy distance to the exact target.
- the shipped Fashion-MNIST model, "footwear" minus "sneaker", w = 4, DDIM-20, n images (clipped
  to [-1, 1]). Objective: the Fréchet distance of the classifier's features to real sandals +
  ankle boots (lower is better; its small-n floor is printed). Also: sneaker rate, fraction of
  pixels above 0.9 (blown-out images).

For every setting the best fixed τ is taken over a log grid (factor 2); each schedule's gap is
its objective against that best: a mixture setting passes when the schedule keeps at least 90 %
of the best good-sample rate, Fashion-MNIST when its Fréchet distance is at most 1.1 times the
best. The sweep runs through ccfg.sweep (serial: one process, so the mixtures' reference
thresholds are computed once).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ccfg  # noqa: E402
from ccfg import metrics as M  # noqa: E402
from ccfg.models import GaussianMixture  # noqa: E402

# the τ-schedule candidates (docs/methods.md §3.7); "mean" carries the official τ = 0.2 of SD1.5
# (16 384 latent elements) to every size per element, which is what tau_reduce="mean" promises
SD15_ELEMENTS = 4 * 64 * 64
SCHEDULES = [
    ("mean (0.2 @ SD1.5)", dict(tau=0.2 * SD15_ELEMENTS, tau_reduce="mean")),
    ("dim", dict(tau="dim")),
    ("nce", dict(tau="nce")),
    ("pilot", dict(tau="pilot")),
    ("pilot_noise", dict(tau="pilot_noise")),
    ("batch", dict(tau="batch")),
]
OFFICIAL = 0.2


def toy_scaled(s):
    """toy_2d with its means scaled by s (variances kept): separations times s."""
    t = GaussianMixture.toy_2d()
    m = GaussianMixture(t.means * s, np.array([0.12, 0.12, 0.08, 0.08, 0.08, 0.08, 0.06]),
                        concepts=t.concepts, names=t.names)
    m.info = {"preset": f"toy2d_x{s:g}"}
    return m


def mixtures(quick):
    """(label, d, separation label, model) of every mixture setting."""
    out = []
    # toy: A3-B1 1.8 apart with sd sqrt(0.08): 6.4 sd at scale 1
    scales = [1.0] if quick else [0.67, 1.0, 1.5]
    for s in scales:
        out.append(("toy2d", 2, f"{1.8 * s / math.sqrt(0.08):.1f} sd", toy_scaled(s)))
    dims = [16] if quick else [16, 64, 256, 1024]
    var = 0.1
    for d in dims:
        seps = [8.0] if quick else [4.0, 8.0, None]
        for k in seps:
            if k is None:
                delta, lab = 0.25, f"δ=0.25 ({0.25 * math.sqrt(d) / math.sqrt(var):.1f} sd)"
            else:
                delta, lab = k * math.sqrt(var) / math.sqrt(d), f"{k:.0f} sd"
            out.append((f"gmm{d}", d, lab, GaussianMixture.high_dim(d, delta=delta, var=var)))
    return out


def rules(w, grid):
    """(label, rule) of every rule a setting runs: negated CFG, the fixed-τ grid, the schedules."""
    out = [("negated_cfg", ccfg.NegatedCFG(scale=w))]
    out += [(f"tau={t:g}", ccfg.CCFG(scale=w, tau=t)) for t in grid]
    out += [(name, ccfg.CCFG(scale=w, **kw)) for name, kw in SCHEDULES]
    return out


def mixture_metrics(model, x, cell):
    """The exact metrics plus the good-sample rate (in the exact target and on the data)."""
    s = M.summary(model, x, "A", "B")
    tgt = M.target(model, "A", "B")
    thr = M._log_density_threshold(model, 1e-3, 200_000, 0)     # the threshold off_support uses
    on = model.log_prob(x) >= thr
    inside = np.isin(np.argmax(model.posterior(x), axis=1), tgt)
    return {"good_rate": float(np.mean(on & inside)), "negative_leakage": s["negative_leakage"],
            "off_support_rate": s["off_support_rate"], "target_precision": s["target_precision"],
            "energy_distance": s["energy_distance"]}


def image_metrics(model, x, cell):
    x = np.clip(x, -1.0, 1.0)
    s = M.image_summary(x, "footwear", "sneaker", seed=0)
    return {"frechet": s["frechet"], "frechet_floor": s["frechet_floor"],
            "sneaker_rate": s["negative_leakage"], "target_precision": s["target_precision"],
            "bright_pixels": float(np.mean(x > 0.9))}


def run_setting(model, w, grid, steps, n, metric_fn, positive, negative, label):
    rl = rules(w, grid)
    t0 = time.perf_counter()
    recs = ccfg.sweep({"guidance": [r for _, r in rl]}, executor="serial", metrics=metric_fn,
                      progress=False, model=model, positive=positive, negative=negative,
                      sampler="ddim", steps=steps, n=n, seed=0, device="cpu")
    by = {lab: rec for (lab, _), rec in zip(rl, recs)}
    print(f"  {label} w={w}: {len(rl)} runs, {time.perf_counter() - t0:.1f} s", flush=True)
    return by


def summarise(by, grid, key, higher_better):
    """best fixed τ and each candidate's gap to it"""
    sign = 1.0 if higher_better else -1.0
    best_t = max(grid, key=lambda t: sign * by[f"tau={t:g}"][key])
    best = by[f"tau={best_t:g}"][key]
    out = {"best_tau": best_t, "best": best, "negated_cfg": by["negated_cfg"][key],
           "official": by[f"tau={OFFICIAL:g}"][key] if f"tau={OFFICIAL:g}" in by else None,
           "schedules": {}}
    for name, _ in SCHEDULES + [("tau=0.5", None), ("tau=1", None)]:
        if name not in by:
            continue
        v = by[name][key]
        if higher_better:
            ratio = v / best if best > 0 else (1.0 if v >= best else 0.0)
            ok = ratio >= 0.9
        else:
            ratio = v / best if best > 0 else math.inf
            ok = ratio <= 1.1
        out["schedules"][name] = {"value": v, "ratio": ratio, "pass": bool(ok)}
    return out


def fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long run (tests use it)")
    ap.add_argument("--n", type=int, default=None, help="samples per mixture run (512; quick 128)")
    ap.add_argument("--fmnist-n", type=int, default=128, help="images per Fashion-MNIST run")
    ap.add_argument("--no-fmnist", action="store_true", help="skip the Fashion-MNIST setting")
    ap.add_argument("--out", default=None, help="markdown table (default docs/TAU.md; quick: none)")
    ap.add_argument("--json", default=None,
                    help="raw records (default docs/figures/tau_study.json; quick: none)")
    ap.add_argument("--from-json", default=None,
                    help="render the markdown from a saved results file instead of running")
    a = ap.parse_args(argv)
    quick = a.quick
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        text = render(saved["results"], saved["elapsed_s"], saved["n"], saved["fmnist_n"], 20,
                      False, saved.get("load", float("nan")), saved.get("note", ""))
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text)
        return saved["results"]
    n = a.n or (128 if quick else 512)
    steps = 10 if quick else 20
    # the grid always holds the constants 0.5 (the NCE value for concentrated data, §3.7) and 1
    grid = sorted(set([0.05, 0.2, 0.8, 3.2] if quick else [0.2 * 2.0 ** k for k in range(-6, 9)])
                  | {0.5, 1.0})
    ws = [3.0] if quick else [3.0, 6.0]
    out_md = a.out if a.out is not None else (None if quick else os.path.join(ROOT, "docs", "TAU.md"))
    out_js = a.json if a.json is not None else (
        None if quick else os.path.join(ROOT, "docs", "figures", "tau_study.json"))
    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    results = []
    for label, d, sep, model in mixtures(quick):
        for w in ws:
            by = run_setting(model, w, grid, steps, n, mixture_metrics, "A", "B",
                             f"{label} {sep}")
            results.append({"setting": f"{label}, {sep}, w={w:g}", "kind": "mixture", "d": d,
                            "w": w, "records": by,
                            "summary": summarise(by, grid, "good_rate", True)})
            if out_js:      # partial results survive an interrupted run
                _dump(out_js + ".partial", time.perf_counter() - t_start, n, a.fmnist_n, results)
    if not (quick or a.no_fmnist):
        fm = ccfg.models.load("fashion-mnist")
        fgrid = sorted(set(0.2 * 2.0 ** k for k in range(-4, 7)) | {0.5, 1.0})
        by = run_setting(fm, 4.0, fgrid, 20, a.fmnist_n, image_metrics, "footwear", "sneaker",
                         "fashion-mnist footwear-sneaker")
        results.append({"setting": "Fashion-MNIST footwear − sneaker, w=4", "kind": "image",
                        "d": 1024, "w": 4.0, "records": by,
                        "summary": summarise(by, fgrid, "frechet", False)})
    elapsed = time.perf_counter() - t_start

    text = render(results, elapsed, n, a.fmnist_n, steps, quick, load)
    print(text)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text)
    if out_js:
        _dump(out_js, elapsed, n, a.fmnist_n, results)
        if os.path.exists(out_js + ".partial"):
            os.remove(out_js + ".partial")
    return results


def render(results, elapsed, n, fmnist_n, steps, quick, load, note=""):
    """The markdown report of a study's results."""
    a = argparse.Namespace(fmnist_n=fmnist_n)
    names = [nm for nm, _ in SCHEDULES] + ["tau=0.5", "tau=1"]
    passes = {nm: sum(r["summary"]["schedules"][nm]["pass"] for r in results) for nm in names}
    lines = []
    cmd = "benchmarks/tau_study.py" + (" --quick" if quick else "")
    lines += ["# Adaptive τ for CCFG: each schedule against the best fixed τ", "",
              f"Generated by `.venv/bin/python {cmd}` in {elapsed:.0f} s "
              f"({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the "
              f"start{note}; mixtures n = {n}, Fashion-MNIST n = {a.fmnist_n}, DDIM-{steps}, seed 0). "
              "Schedules and their derivations: docs/methods.md §3.7; the protocol: the "
              "docstring of benchmarks/tau_study.py.", "",
              "Objective: mixtures — good-sample rate (in the exact target *and* on the data; "
              "higher is better), a schedule passes when it keeps ≥ 90 % of the best fixed τ's "
              "rate; Fashion-MNIST — Fréchet distance to real sandals/boots (lower is better), "
              "pass when ≤ 1.1 × the best fixed τ's. Fixed-τ grid: 0.2·2^k and 0.5, 1 (summed norms).", "",
              "## Passes (settings within 10 % of the best fixed τ)", "",
              "| candidate | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names),
              f"| settings passed (of {len(results)}) | " +
              " | ".join(str(passes[nm]) for nm in names) + " |", ""]
    lines += ["## Per setting: best fixed τ, and each candidate's value (ratio to the best)", "",
              "| setting | best τ | best | official τ=0.2 | negated CFG | " +
              " | ".join(names) + " |", "|---|" + "---|" * (4 + len(names))]
    for r in results:
        s = r["summary"]
        nd = 2 if r["kind"] == "image" else 3
        cells = []
        for nm in names:
            c = s["schedules"][nm]
            cells.append(f"{fmt(c['value'], nd)} ({c['ratio']:.2f}){'' if c['pass'] else ' ✗'}")
        lines.append(f"| {r['setting']} | {s['best_tau']:g} | {fmt(s['best'], nd)} | "
                     f"{fmt(s['official'], nd)} | {fmt(s['negated_cfg'], nd)} | " +
                     " | ".join(cells) + " |")
    lines += ["", "## Leakage / off-support of the best fixed τ and of each schedule "
              "(mixtures)", "", "| setting | best τ | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for r in results:
        if r["kind"] != "mixture":
            continue
        by, s = r["records"], r["summary"]
        b = by[f"tau={s['best_tau']:g}"]
        row = [f"{b['negative_leakage']:.3f} / {b['off_support_rate']:.3f}"]
        for nm in names:
            row.append(f"{by[nm]['negative_leakage']:.3f} / {by[nm]['off_support_rate']:.3f}")
        lines.append(f"| {r['setting']} | " + " | ".join(row) + " |")
    img = [r for r in results if r["kind"] == "image"]
    if img:
        by = img[0]["records"]
        lines += ["", "## Fashion-MNIST: every run", "",
                  "| rule | Fréchet | sneakers | pixels > 0.9 |", "|---|---|---|---|"]
        for lab, rec in by.items():
            lines.append(f"| {lab} | {rec['frechet']:.2f} | {rec['sneaker_rate']:.3f} | "
                         f"{rec['bright_pixels']:.3f} |")
        lines.append("")
        lines.append(f"Fréchet floor (real vs real at this n): "
                     f"{next(iter(by.values()))['frechet_floor']:.2f}.")
    return "\n".join(lines) + "\n"


def _dump(path, elapsed, n, fmnist_n, results):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"elapsed_s": elapsed, "n": n, "fmnist_n": fmnist_n, "results": results}, f,
                  indent=1, default=float)


if __name__ == "__main__":
    main()
