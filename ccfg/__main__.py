"""The ccfg command line: ``python -m ccfg demo|sample|sweep|compare|bench|info``.

    python -m ccfg demo [--out ccfg-demo] [--n 2000] [--steps 50] [--seed 0] [--scale 3]
    python -m ccfg sample --model toy2d --positive A --negative B --guidance ccfg --scale 5 \\
                          --n 1000 --out x.npy
    python -m ccfg sweep --model toy2d --positive A --negative B --guidance ccfg --scale 3 \\
                         --param tau --values 1e-3,1e-2,0.1,1,10 --out ccfg-sweep
    python -m ccfg bench
    python -m ccfg info
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import ccfg
from ccfg import compare, plot
from ccfg import metrics as M
from ccfg.compare import toy_metrics
from ccfg.models import GaussianMixture

# the metric columns of every table: key, header, format
_COLUMNS = [
    ("negative_leakage", "negative leakage ↓", "{:.3f}"),
    ("target_precision", "target precision ↑", "{:.3f}"),
    ("off_support_rate", "off-support rate ↓", "{:.3f}"),
    ("target_distance", "distance to exact target ↓", "{:.3f}"),
    ("mean_nll", "mean NLL (nats) ↓", "{:.2f}"),
]
_METRIC_NOTES = """\
- **negative leakage**: mean posterior mass (under the data mixture) on the components of the
  negative concept; 0 is perfect.
- **target precision**: fraction of samples whose most likely component is in the exact target.
- **off-support rate**: fraction of samples whose data log-density is below the 0.1 % quantile of
  the data's own log-density (pushed off the data manifold); ≈ 0.001 for exact data.
- **distance to exact target**: energy distance to {n_ref} exact samples of the target mixture;
  0 for a perfect sampler (≈ {floor:.3f} for {n} exact target samples: the finite-sample floor).
- **mean NLL**: mean negative data log-density of the samples (nats).
- **mean λ−** (CCFG only): the negative weight `2σ(−τ‖D_n‖²)` averaged over the steps and samples of
  the CCFG run's own trajectory; 1 = negated CFG, 0 = negative switched off."""


# ---------------------------------------------------------------------- small helpers
class _Progress:
    """One progress line for a sequence of sampling runs (redrawn in place on a terminal; one line
    per finished run otherwise)."""

    def __init__(self, total, enabled=True, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.i, self.label, self.t0, self.last = 0, "", 0.0, 0.0

    def start(self, label):
        self.i += 1
        self.label = label
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done, steps):
        if not (self.enabled and self.tty):
            return
        now = time.perf_counter()
        if done < steps and now - self.last < 0.1:
            return
        self.last = now
        width = 24
        bar = "#" * (width * done // max(steps, 1))
        self.stream.write(f"\r[{self.i:>2}/{self.total}] {self.label:<34.34} [{bar:.<{width}}] "
                          f"{done}/{steps} {now - self.t0:5.1f}s")
        self.stream.flush()

    def done(self, extra=""):
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        line = f"[{self.i:>2}/{self.total}] {self.label:<34.34} {dt:5.2f}s  {extra}"
        self.stream.write(("\r" + line + " " * 20 + "\n") if self.tty else line + "\n")
        self.stream.flush()


def _literal(text):
    """A command-line value: a Python literal when it parses (1, 0.5, None, True, (0.1, 1)),
    else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _key_values(pairs, argname):
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"{argname}: expected KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _literal(v.strip())
    return out


def _make_rule(name, scale=None, params=None):
    """A guidance rule from a CLI name ('none' for no guidance) and keyword parameters."""
    if name is None or name.lower() in ("none", "null", "off"):
        return None
    key = name.lower().replace("-", "_")
    if key not in ccfg.guidance.NAMES:
        raise SystemExit(f"--guidance: unknown rule {name!r}; known: none, "
                         f"{', '.join(sorted(ccfg.guidance.NAMES))}")
    kw = dict(params or {})
    if scale is not None:
        kw["scale"] = scale
    try:
        return ccfg.guidance.NAMES[key](**kw)
    except TypeError as exc:
        raise SystemExit(f"--guidance {name}: {exc}") from None


def _load_model(name):
    try:
        return ccfg.models.load(name)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"--model: {exc}") from None


def _mean_lambda_minus(model, traj, sampler, steps, negative, tau, max_samples=500):
    """CCFG's λ− = 2σ(−τ‖D_n‖²) averaged over the steps and samples of a trajectory (the state
    before step k is evaluated at the plan's alpha_bars[k]; first-order samplers only; the first
    `max_samples` trajectories)."""
    ab = ccfg.schedulers.plan(sampler, steps)["alpha_bars"]
    if len(ab) != traj.shape[0] - 1:
        return float("nan")
    traj = traj[:, :max_samples]
    total = 0.0
    for k in range(len(ab)):
        xt = traj[k]
        d = (model.eps(xt, float(ab[k]), concept=negative).astype(np.float64)
             - model.eps(xt, float(ab[k])).astype(np.float64))
        r = np.sum(d * d, axis=1)
        total += float(np.mean(2.0 / (1.0 + np.exp(np.minimum(tau * r, 700.0)))))
    return total / len(ab)


def _fmt(v, f):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f.format(v)


def _md_table(rows, first_cols):
    """rows: dicts with the keys of first_cols (name, header) and of _COLUMNS (+ 'lambda_minus')."""
    heads = [h for _, h in first_cols] + [h for _, h, _ in _COLUMNS] + ["mean λ−"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = [str(r.get(k, "")) for k, _ in first_cols]
        cells += [_fmt(r.get(k), f) for k, _, f in _COLUMNS]
        cells.append(_fmt(r.get("lambda_minus"), "{:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(rule):
    return "no guidance" if rule is None else repr(rule)


# ---------------------------------------------------------------------- demo
def _demo_runs(w, tau_large, steps, ddpm_steps):
    """(label, rule, sampler, steps) of every panel, in order."""
    return [
        ("no guidance", None, "ddim", steps),
        ("CFG", ccfg.CFG(w), "ddim", steps),
        ("NegativePrompt", ccfg.NegativePrompt(w), "ddim", steps),
        ("NegatedCFG", ccfg.NegatedCFG(w), "ddim", steps),
        ("ComposableNot", ccfg.ComposableNot(w), "ddim", steps),
        ("PerpNeg", ccfg.PerpNeg(w), "ddim", steps),
        ("SLD", ccfg.SLD(w), "ddim", steps),
        ("DNG on DDIM (not its method)", ccfg.DNG(w), "ddim", steps),
        ("DNG (ddpm, scaled δ)", ccfg.DNG(w, offset="scaled"), "ddpm", ddpm_steps),
        ("CCFG τ=0.2 (official)", ccfg.CCFG(w), "ddim", steps),
        (f"CCFG τ={tau_large:g}", ccfg.CCFG(w, tau=tau_large), "ddim", steps),
    ]


def _sampler_name(sampler, steps):
    return f"{sampler.upper()}-{steps}" + (" (η=0)" if sampler == "ddim" else "")


def cmd_demo(args):
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = GaussianMixture.toy_2d()
    pos, neg, w = "A", "B", float(args.scale)
    if not 0 < args.tau_min <= args.tau_max:
        raise SystemExit("--tau-min/--tau-max: expected 0 < tau-min <= tau-max")
    taus = [float(t) for t in np.logspace(math.log10(args.tau_min), math.log10(args.tau_max),
                                          args.tau_points)]
    runs = _demo_runs(w, args.tau_large, args.steps, args.ddpm_steps)
    refs = [("CFG (ddpm)", ccfg.CFG(w), "ddpm", args.ddpm_steps),
            (f"CFG w={2 * w:g} (τ→∞ limit)", ccfg.CFG(2 * w), "ddim", args.steps)]
    n_ref = min(1000, max(args.n, 200))
    prog = _Progress(len(runs) + len(refs) + len(taus), enabled=not args.quiet)

    def run(label, rule, sampler, steps):
        prog.start(f"{label} {sampler}-{steps}")
        want_traj = isinstance(rule, ccfg.CCFG) and sampler in ("ddim", "ddpm")
        res = ccfg.sample(model, positive=pos, negative=neg, guidance=rule, sampler=sampler,
                          steps=steps, n=args.n, seed=args.seed, progress=prog,
                          return_trajectory=want_traj, device=args.device)
        x, traj = res if want_traj else (res, None)
        m = toy_metrics(model, x, pos, neg, n_ref=n_ref, seed=args.seed)
        m["lambda_minus"] = (_mean_lambda_minus(model, traj, sampler, steps, neg, rule.tau)
                             if traj is not None else None)
        prog.done(f"leak {m['negative_leakage']:.3f}  off {m['off_support_rate']:.3f}  "
                  f"dist {m['target_distance']:.3f}")
        return x, dict(m, label=label, rule=_short(rule), sampler=_sampler_name(sampler, steps))

    samples, rows = {}, []
    for label, rule, sampler, steps in runs:
        samples[label], row = run(label, rule, sampler, steps)
        rows.append(row)
    ref_rows = []
    for label, rule, sampler, steps in refs:
        samples[label], row = run(label, rule, sampler, steps)
        ref_rows.append(row)
    sweep_rows = []
    for tau in taus:
        x, row = run(f"CCFG τ={tau:.3g}", ccfg.CCFG(w, tau=tau), "ddim", args.steps)
        row["tau"] = tau
        sweep_rows.append(row)
    negated = next(r for r in rows if r["label"] == "NegatedCFG")
    cfg2w = ref_rows[1]

    # exact target samples: the reference panel and the finite-sample floor of the distance
    tgt = M.target(model, pos, neg)
    exact = model._sample_components(args.n, args.seed + 1, tgt)[0]
    floor = M.target_distance(model, exact, pos, neg, n_ref=n_ref, max_samples=n_ref,
                              seed=args.seed)

    # where CCFG departs from negated CFG: first τ whose distance or off-support rate differs
    depart = next((r["tau"] for r in sweep_rows
                   if abs(r["target_distance"] - negated["target_distance"])
                   > 0.1 * negated["target_distance"]
                   or abs(r["off_support_rate"] - negated["off_support_rate"]) > 0.05), None)
    best = min(sweep_rows, key=lambda r: r["target_distance"])

    files = {}
    # ---- metrics.md / metrics.json / samples.npz
    tgt_names = ", ".join(model.names[k] for k in tgt)
    text = [
        "# ccfg demo: \"A but not B\" on the exact 2-D Gaussian mixture",
        "",
        f"Model `GaussianMixture.toy_2d()`: positive \"A\" = {{A1, A2, A3}}, negative \"B\" = "
        f"{{A3, B1}}; the exact target of \"A but not B\" is {{{tgt_names}}}.",
        f"Guidance scale **w = {w:g}** for every rule (Ho–Salimans convention, w = 1 is the plain "
        f"conditional prediction; chosen so that CFG alone is sharp but stays on the data, and "
        f"the 2-D toy is not saturated). n = {args.n} samples per rule, seed {args.seed}: the same "
        f"initial noise for every rule. DDIM η = 0, {args.steps} steps unless stated; DNG needs a "
        f"stochastic sampler (docs/methods.md §4): \"DNG (ddpm, scaled δ)\" runs DDPM "
        f"{args.ddpm_steps} steps with its offset scaled so that the drift of log p over the run "
        f"equals the official 1000-step run's (`DNG(offset=\"scaled\")`); the DDIM run (stride "
        f"variance) is not its method and is shown only for contrast. "
        f"ccfg {ccfg.__version__}.",
        "",
        "## Every rule, side by side (`samples.png`)",
        "",
        _md_table(rows + ref_rows + [dict(label="exact target samples", rule="–",
                                          sampler="exact", target_distance=floor)],
                  [("label", "rule"), ("sampler", "sampler"), ("rule", "repr")]),
        "",
        f"The last rows are references: CFG on the same DDPM sampler as \"DNG (ddpm, scaled δ)\"; CFG at "
        f"2w = {2 * w:g}, the τ → ∞ limit of CCFG; exact samples of the target.",
        "",
        f"## CCFG τ sweep (`tau_sweep.png`): w = {w:g}, DDIM-{args.steps}, τ on a log grid, "
        f"summed squared norm (`tau_reduce=\"sum\"`)",
        "",
        _md_table([dict(r, tau=f"{r['tau']:.3g}") for r in sweep_rows]
                  + [dict(negated, tau="NegatedCFG (τ→0 limit)", lambda_minus=1.0),
                     dict(cfg2w, tau=f"CFG w={2 * w:g} (τ→∞ limit)", lambda_minus=0.0)],
                  [("tau", "τ")]),
        "",
        "Reading: τ → 0 gives λ± → 1, exactly negated CFG; τ → ∞ gives plain CFG at 2w with the "
        "negative ignored (docs/methods.md §3.2). "
        + (f"On this toy CCFG departs from negated CFG (distance to the target differs by more "
           f"than 10 % or the off-support rate by more than 0.05) from τ ≈ {depart:.3g}"
           if depart is not None else
           "On this grid CCFG never departs from negated CFG by more than 10 % in distance")
        + f"; the official τ = 0.2 gives mean λ− = "
          f"{next(r for r in rows if r['label'].startswith('CCFG τ=0.2'))['lambda_minus']:.3f}"
        + f". The smallest distance to the exact target in the sweep is at τ = {best['tau']:.3g} "
          f"({best['target_distance']:.3f}, off-support {best['off_support_rate']:.3f}) against "
          f"{negated['target_distance']:.3f} (off-support {negated['off_support_rate']:.3f}) for "
          f"negated CFG and {cfg2w['target_distance']:.3f} for CFG at 2w.",
        "",
        "## Metrics",
        "",
        _METRIC_NOTES.format(n_ref=n_ref, floor=floor, n=args.n),
        "",
    ]
    (out / "metrics.md").write_text("\n".join(str(t) for t in text), encoding="utf-8")
    files["metrics"] = out / "metrics.md"
    meta = dict(model="toy2d", positive=pos, negative=neg, scale=w, n=args.n, steps=args.steps,
                ddpm_steps=args.ddpm_steps, seed=args.seed, version=ccfg.__version__,
                exact_target_distance_floor=floor, tau_departs_from_negated_cfg=depart)
    (out / "metrics.json").write_text(json.dumps(
        dict(meta, rules=rows, references=ref_rows, tau_sweep=sweep_rows), indent=1,
        default=float), encoding="utf-8")
    np.savez_compressed(out / "samples.npz", **{r: v for r, v in samples.items()},
                        exact_target=exact)

    # ---- figures
    plotted = None
    try:
        if args.no_plot:
            raise ImportError("--no-plot")
        panel_samples = {"exact target (A1, A2)": exact}
        titles = {"exact target (A1, A2)": f"{args.n} exact samples of the target mixture\n"
                                           f"dist {floor:.3f} (the finite-sample floor)"}
        for r in rows:
            panel_samples[r["label"]] = samples[r["label"]]
            titles[r["label"]] = (f"{r['rule']}\n{r['sampler']} · dist to target "
                                  f"{r['target_distance']:.2f}\nleak "
                                  f"{r['negative_leakage']:.3f} · prec "
                                  f"{r['target_precision']:.3f} · off-support "
                                  f"{r['off_support_rate']:.3f}")
        plot.scatter_2d(model, panel_samples, out / "samples.png", target=tgt, titles=titles,
                        title=f"positive A, negative B, w = {w:g}, n = {args.n}, seed "
                              f"{args.seed}, DDIM-{args.steps} (DNG (ddpm, scaled δ): DDPM-"
                              f"{args.ddpm_steps}); green: exact target components; grey bands: data "
                              f"log-density (2 nats per band)")
        files["samples"] = out / "samples.png"
        xs = [r["tau"] for r in sweep_rows]
        panels, refs_by_metric = {}, {}
        for key, head, _ in _COLUMNS:
            panels[head] = {"CCFG": [r[key] for r in sweep_rows]}
            refs_by_metric[head] = {"NegatedCFG (τ→0)": negated[key],
                                    f"CFG w={2 * w:g} (τ→∞)": cfg2w[key]}
        panels["mean λ− along the trajectory"] = {"CCFG": [r["lambda_minus"] for r in sweep_rows]}
        refs_by_metric["mean λ− along the trajectory"] = {"NegatedCFG (λ−=1)": 1.0}
        ylims = {"negative leakage ↓": (0.0, max(0.05, 1.1 * max(
                     r["negative_leakage"] for r in sweep_rows + [negated, cfg2w])))}
        ylims["target precision ↑"] = (min(0.95, 0.98 * min(
            r["target_precision"] for r in sweep_rows + [negated, cfg2w])), 1.0025)
        ylims["off-support rate ↓"] = (-0.02, 1.02)
        ylims["mean λ− along the trajectory"] = (0.0, 1.05)
        note = ("dotted: the official τ = 0.2"
                + (f"; shaded: τ ≥ {depart:.3g}, where CCFG departs from negated CFG (distance "
                   f"to target differs by > 10 % or off-support rate by > 0.05)"
                   if depart is not None else ""))
        fig = plot.metric_panels(xs, panels, "τ (CCFG temperature, summed squared norm)",
                                 references=refs_by_metric, logx=True, ylims=ylims,
                                 logy=("mean NLL (nats) ↓",), ncols=3, note=note,
                                 title=f"CCFG τ sweep on toy2d, positive A, negative B, w = {w:g}, "
                                       f"DDIM-{args.steps}, n = {args.n}")
        for ax in fig.axes:
            ax.axvline(0.2, color="0.5", lw=0.8, ls=":")
            if depart is not None:
                ax.axvspan(depart, max(xs), color="#009E73", alpha=0.07, lw=0)
        fig.savefig(out / "tau_sweep.png", dpi=120)
        files["tau_sweep"] = out / "tau_sweep.png"
        plotted = True
    except ImportError as exc:
        if not args.no_plot:
            print(f"note: figures skipped ({exc})", file=sys.stderr)

    if not args.no_fashion:
        files.update(_demo_fashion(args, out))

    dt = time.perf_counter() - t_start
    print()
    print(_md_table(rows, [("label", "rule"), ("sampler", "sampler")]))
    print()
    print(f"demo finished in {dt:.1f} s (w = {w:g}, n = {args.n}, {args.steps} steps, "
          f"seed {args.seed})")
    for k in ("samples", "tau_sweep", "metrics", "fashion", "fashion_grid"):
        if k in files:
            print(f"  {k + ':':<11} {files[k]}")
    print(f"  {'data:':<11} {out / 'metrics.json'}, {out / 'samples.npz'}")
    if not plotted and not args.no_plot:
        print("  (no PNGs: pip install matplotlib  or  pip install 'ccfg[plot]')")
    return 0


_FASHION_LEGEND = (
    "target: fraction of images the shipped classifier puts in the target classes (positive "
    "minus negative; higher is better).  leak: fraction in the negative's classes (lower is "
    "better).\nFD: Fréchet distance between the classifier features of the images and of real "
    "test images of the target (lower is better; the floor, real vs real at this size, is in "
    "fashion.md).  \"no guidance\": the positive's conditional model alone.  DNG runs DDPM (it needs "
    "a stochastic sampler); at few steps it looks like \"CFG on DNG's sampler\", its baseline.")


def _fashion_runs(w, steps, ddpm_steps):
    """(label, rule, sampler, steps, noise_variance) of the Fashion-MNIST panels: the unguided
    conditional model first (what every rule is measured against), then compare's rules (DNG
    on DDPM with the official and the scaled offset, next to CFG on that sampler)."""
    return [("no guidance", None, "ddim", steps, None)] + [
        (a["label"], a["rule"], a["sampler"], a["steps"], a["noise_variance"])
        for a in compare.arms(w, steps, ddpm_steps)]


def _demo_fashion(args, out):
    """"footwear, not sneaker" on the shipped Fashion-MNIST UNet: one grid per rule, the C
    classifier's metrics under it. Skipped (with a note) when the weights are absent."""
    pos, neg, w = "footwear", "sneaker", float(args.fashion_scale)
    try:
        model, path = compare.load_fashion_model(args.fashion_model)
    except (ValueError, OSError) as exc:
        model, path = None, f"ccfg/weights/fashion-mnist ({exc})"
    if model is None:
        print(f"note: Fashion-MNIST model not found at {path}; skipping its part of the demo",
              file=sys.stderr)
        return {}
    try:
        real = M.real_features()
    except (FileNotFoundError, OSError) as exc:
        print(f"note: Fashion-MNIST test images not found ({exc}); skipping its part of the demo",
              file=sys.stderr)
        return {}
    runs = _fashion_runs(w, args.fashion_steps, args.fashion_steps)
    prog = _Progress(len(runs), enabled=not args.quiet)
    rows, grids = [], {}
    for label, rule, sampler, steps, variance in runs:
        prog.start(f"{label} {sampler}-{steps}")
        t0 = time.perf_counter()
        x = ccfg.sample(model, positive=pos, negative=neg, guidance=rule, sampler=sampler,
                        steps=steps, n=args.fashion_n, seed=args.seed, progress=prog,
                        device=args.device, noise_variance=variance)
        x = np.clip(x, -1.0, 1.0)
        m = M.image_summary(x, pos, neg, seed=args.seed, real=real)
        m.update(label=label, sampler=f"{sampler}-{steps}", wall_s=time.perf_counter() - t0)
        prog.done(f"target {m['target_precision']:.2f}  leak {m['negative_leakage']:.2f}  "
                  f"FD {m['frechet']:.1f}")
        rows.append(m)
        grids[label] = x
    heads = ["rule", "sampler", "target precision ↑", "negative leakage ↓", "off-positive ↓",
             "coverage KL ↓", "Fréchet ↓", "wall s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for m in rows:
        lines.append(f"| {m['label']} | {m['sampler']} | {m['target_precision']:.3f} | "
                     f"{m['negative_leakage']:.3f} | {m['off_positive_rate']:.3f} | "
                     f"{_fmt(m['coverage_kl'], '{:.3f}')} | {m['frechet']:.2f} | "
                     f"{m['wall_s']:.1f} |")
    text = [f"# \"{pos}, not {neg}\" on the shipped Fashion-MNIST UNet", "",
            f"w = {w:g}, n = {args.fashion_n}, {args.fashion_steps} steps, seed {args.seed}; "
            f"metrics from the classifier run in C (ccfg.metrics.image_summary). Fréchet floor "
            f"(real vs real, same size): {rows[0]['frechet_floor']:.2f}. DNG runs DDPM (its "
            f"method needs a stochastic sampler) with the official offset and with the offset "
            f"scaled to the step count; \"CFG on DNG's sampler\" is its baseline. At this few steps "
            f"DNG's posterior barely moves before the last step (docs/methods.md §4.5), so DNG "
            f"looks like CFG on the same sampler: that is the method at this step count, not a "
            f"bug. One seed: see docs/RESULTS.md for paired intervals.", "", "\n".join(lines), ""]
    files = {}
    (out / "fashion.md").write_text("\n".join(text), encoding="utf-8")
    files["fashion"] = out / "fashion.md"
    print("\n".join(lines))
    if args.no_plot:
        return files
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return files
    k = min(args.fashion_n, 16)
    cols = int(math.ceil(math.sqrt(k)))
    nrow = int(math.ceil(k / cols))
    ncol = int(math.ceil(len(rows) / 2))
    fig, axes = plt.subplots(2, ncol, figsize=(2.1 * ncol, 6.4))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[len(rows):]:
        ax.axis("off")
    for ax, m in zip(axes, rows):
        x = grids[m["label"]]
        canvas = -np.ones((nrow * 32, cols * 32), np.float32)
        for i in range(k):
            r, c = divmod(i, cols)
            canvas[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] = x[i, 0]
        ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{m['label']}\n{m['sampler']}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"target {m['target_precision']:.2f}\nleak {m['negative_leakage']:.2f}\n"
                      f"FD {m['frechet']:.1f}", fontsize=7)
    fig.suptitle(f"\"{pos}, not {neg}\" on the shipped Fashion-MNIST UNet: w = {w:g}, "
                 f"n = {args.fashion_n} per rule (first {k} shown), {args.fashion_steps} steps, "
                 f"seed {args.seed} (the same noise for every rule)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.text(0.5, 0.01, _FASHION_LEGEND, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.savefig(out / "fashion.png", dpi=120)
    plt.close(fig)
    files["fashion_grid"] = out / "fashion.png"
    return files


# ---------------------------------------------------------------------- sample
def cmd_sample(args):
    model = _load_model(args.model)
    params = _key_values(args.param, "--param")
    if args.tau is not None:
        params["tau"] = args.tau
    if args.negative_scale is not None:
        params["negative_scale"] = args.negative_scale
    rule = _make_rule(args.guidance, args.scale, params)
    negative = (args.negative[0] if len(args.negative) == 1 else args.negative) \
        if args.negative else None
    t0 = time.perf_counter()
    try:
        x = ccfg.sample(model, positive=args.positive, negative=negative, guidance=rule,
                        sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed,
                        progress=not args.quiet, eta=args.eta, karras=args.karras,
                        device=args.device)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"sample: {exc}") from None
    dt = time.perf_counter() - t0
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        if x.ndim != 4:
            raise SystemExit(f"--out {out}: a PNG grid needs an image model (samples of shape "
                             f"{x.shape[1:]}); name the file .npy")
        plot.image_grid(np.clip(x, -1.0, 1.0), out, nrow=int(math.ceil(math.sqrt(len(x)))))
    else:
        np.save(out, x)
    print(f"{_short(rule)}, {args.sampler}-{args.steps}, n = {args.n}, seed {args.seed}: "
          f"{x.shape} {x.dtype} in {dt:.2f} s -> {out}")
    if isinstance(model, GaussianMixture) and args.positive is not None:
        m = toy_metrics(model, x, args.positive, negative, n_ref=min(2000, max(args.n, 200)),
                         seed=args.seed)
        print("  " + "  ".join(f"{k} {v:.4g}" for k, v in m.items()))
    return 0


# ---------------------------------------------------------------------- sweep
def _read_grid(path):
    """A grid file: TOML (tomllib) or JSON, by its suffix. A TOML file may hold the grid at its
    top level or under [grid]; a scalar value is a one-value list."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--grid: no file {path}")
    try:
        if path.suffix.lower() == ".json":
            grid = json.loads(path.read_text(encoding="utf-8"))
        else:
            import tomllib
            grid = tomllib.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:        # a user's file: one line, no traceback
        raise SystemExit(f"--grid {path}: cannot parse ({exc})") from None
    if isinstance(grid, dict) and isinstance(grid.get("grid"), dict):
        grid = grid["grid"]
    if not isinstance(grid, dict) or not grid:
        raise SystemExit(f"--grid {path}: expected a table of ccfg.sample arguments")
    return {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}


def cmd_sweep_grid(args):
    grid = _read_grid(args.grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fixed = {} if args.device == "auto" or "device" in grid else {"device": args.device}
    try:
        recs = ccfg.sweep(grid, executor="serial" if args.workers == 0 else None,
                          workers=args.workers or None, out=out / "sweep.jsonl",
                          progress=not args.quiet, **fixed)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise SystemExit(f"sweep: {exc}") from None
    varied = [k for k, v in grid.items() if len(v) > 1]
    metric_keys = [k for k in recs[0] if k not in grid and k not in
                   ("rule", "wall_s", "n", "target") and isinstance(recs[0][k], (int, float))]
    heads = varied + metric_keys
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in recs:
        lines.append("| " + " | ".join(
            f"{r.get(k):.4g}" if isinstance(r.get(k), float) else str(r.get(k)) for k in heads)
            + " |")
    table = "\n".join(lines)
    (out / "sweep.md").write_text(f"# sweep of {args.grid}\n\n{table}\n", encoding="utf-8")
    print(table)
    print(f"  records: {out / 'sweep.jsonl'}  table: {out / 'sweep.md'}")
    return 0


def _sweep_one_param_via_grid(args):
    """--param/--values on a model that is not a mixture (fashion-mnist): the same sweep as a
    one-key grid, run by ccfg.sweep in this process, with the image metrics."""
    values = [_literal(v) for v in args.values.split(",") if v.strip()]
    if not values:
        raise SystemExit("--values: give a comma-separated list, e.g. 1,2,4")
    grid = {"model": [args.model], "positive": [args.positive], "guidance": [args.guidance],
            "sampler": [args.sampler], "steps": [args.steps], "n": [args.n], "seed": [args.seed]}
    if args.negative:
        grid["negative"] = [args.negative[0] if len(args.negative) == 1 else args.negative]
    if args.scale is not None:
        grid["scale"] = [args.scale]
    grid.update({k: [v] for k, v in _key_values(args.fixed, "--fixed").items()})
    grid[args.param.replace("-", "_")] = values
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_file = out / "grid.json"
    grid_file.write_text(json.dumps(grid), encoding="utf-8")
    args.grid, args.workers = str(grid_file), 0
    return cmd_sweep_grid(args)


def cmd_sweep(args):
    if args.grid:
        return cmd_sweep_grid(args)
    if not args.param or not args.values:
        raise SystemExit("sweep: give --grid FILE, or --param NAME with --values V1,V2,...")
    model = _load_model(args.model)
    if args.positive is None:
        raise SystemExit("sweep: the metrics need a --positive")
    if not isinstance(model, GaussianMixture):
        return _sweep_one_param_via_grid(args)
    fixed = _key_values(args.fixed, "--fixed")
    values = [_literal(v) for v in args.values.split(",") if v.strip()]
    if not values:
        raise SystemExit("--values: give a comma-separated list, e.g. 1e-3,1e-2,0.1,1")
    param = args.param.replace("-", "_")
    negative = (args.negative[0] if len(args.negative) == 1 else args.negative) \
        if args.negative else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prog = _Progress(len(values), enabled=not args.quiet)
    rows = []
    for v in values:
        kw = dict(fixed)
        scale = args.scale
        if param == "scale":
            scale = v
        elif param not in ("steps", "seed"):
            kw[param] = v
        rule = _make_rule(args.guidance, scale, kw)
        steps = int(v) if param == "steps" else args.steps
        seed = int(v) if param == "seed" else args.seed
        prog.start(f"{param}={v}")
        try:
            x = ccfg.sample(model, positive=args.positive, negative=negative, guidance=rule,
                            sampler=args.sampler, steps=steps, n=args.n, seed=seed,
                            progress=prog)
        except (ValueError, TypeError) as exc:
            raise SystemExit(f"sweep: {param}={v}: {exc}") from None
        m = toy_metrics(model, x, args.positive, negative, n_ref=min(2000, max(args.n, 200)),
                         seed=seed)
        prog.done(f"dist {m['target_distance']:.3f}")
        rows.append(dict(m, value=v, rule=_short(rule)))
    table = _md_table(rows, [("value", param), ("rule", "repr")])
    head = (f"# sweep of `{param}`: model {args.model}, positive {args.positive!r}, negative "
            f"{negative!r}, {args.sampler}-{args.steps}, n = {args.n}, seed {args.seed}\n\n")
    (out / "sweep.md").write_text(head + table + "\n", encoding="utf-8")
    (out / "sweep.json").write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    print(table)
    print(f"  table: {out / 'sweep.md'}")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and not args.no_plot:
        try:
            cols = [c for c in _COLUMNS if c[0] in rows[0]]
            plot.metric_panels([float(v) for v in values],
                               {h: {args.guidance: [r[k] for r in rows]} for k, h, _ in cols},
                               param, out / "sweep.png", ncols=3)
            print(f"  figure: {out / 'sweep.png'}")
        except ImportError as exc:
            print(f"note: figure skipped ({exc})", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- bench / info
def cmd_bench(args):
    here = Path(ccfg.__file__).resolve().parent.parent
    for cand in (Path.cwd() / "benchmarks" / "run.py", here / "benchmarks" / "run.py"):
        if cand.is_file():
            print(f"running {cand}", flush=True)
            return subprocess.call([sys.executable, str(cand), *args.rest])
    print("bench: not available (benchmarks/run.py is not in this installation; run it from a "
          "source checkout: `make bench`)", file=sys.stderr)
    return 1


def cmd_compare(args):
    return compare.main(args.rest)


def cmd_info(args):
    print(f"ccfg {ccfg.__version__}  ({Path(ccfg.__file__).resolve().parent})")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs")
    print("devices:")
    for d in ccfg.devices():
        if isinstance(d, dict):
            mark = "yes" if d.get("available") else "no "
            rest = ", ".join(f"{k}={v}" for k, v in d.items()
                             if k not in ("name", "available", "note"))
            print(f"  [{mark}] {d.get('name', '?'):<10} {rest}"
                  + (f"  ({d['note']})" if d.get("note") else ""))
        else:
            print(f"  {d}")
    print(f"rules:    none, {', '.join(ccfg.guidance.NAMES)}")
    print(f"samplers: {', '.join(ccfg.schedulers.SAMPLERS)}")
    print(f"models:   {', '.join(ccfg.models.PRESETS)} (exact Gaussian mixtures), fashion-mnist "
          f"(the shipped concept-conditional UNet, 32x32x1; concepts: "
          f"{', '.join(ccfg.data.concepts())})")
    return 0


# ---------------------------------------------------------------------- parser
def _common_sampling(p, n=1000):
    p.add_argument("--model", default="toy2d", help="packaged model (default toy2d; "
                   f"known: {', '.join([*ccfg.models.PRESETS, 'fashion-mnist'])})")
    p.add_argument("--positive", default=None, help="positive concept (e.g. A)")
    p.add_argument("--negative", action="append", default=[],
                   help="negative concept (repeat for several)")
    p.add_argument("--guidance", default="ccfg",
                   help="rule: none, " + ", ".join(ccfg.guidance.NAMES) + " (default ccfg)")
    p.add_argument("--scale", type=float, default=None, help="guidance scale w (rule default "
                   "when omitted)")
    p.add_argument("--sampler", default="ddim", choices=list(ccfg.schedulers.SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    _device_arg(p)


def _device_arg(p):
    p.add_argument("--device", default="auto", help="compute device: auto, cpu, vulkan or "
                   "vulkan:N (default auto; see `python -m ccfg info`)")


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m ccfg", description="ccfg: negative guidance "
                                 "for diffusion sampling (Contrastive CFG and its baselines).")
    ap.add_argument("--version", action="version", version=f"ccfg {ccfg.__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{demo,sample,sweep,compare,bench,info}")

    p = sub.add_parser("demo", help="every rule side by side on the 2-D toy, metrics, τ sweep")
    p.add_argument("--out", default="ccfg-demo", help="output folder (default ccfg-demo/)")
    p.add_argument("--n", type=int, default=2000, help="samples per rule (default 2000)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--ddpm-steps", type=int, default=100,
                   help="DDPM steps for the stochastic DNG run (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=3.0, help="guidance scale w (default 3)")
    p.add_argument("--tau-large", type=float, default=10.0,
                   help="τ of the second CCFG panel (default 10)")
    p.add_argument("--tau-min", type=float, default=1e-3)
    p.add_argument("--tau-max", type=float, default=1e2)
    p.add_argument("--tau-points", type=int, default=11)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--no-plot", action="store_true", help="tables only, no PNGs")
    p.add_argument("--no-fashion", action="store_true",
                   help="skip \"footwear, not sneaker\" on the Fashion-MNIST UNet")
    p.add_argument("--fashion-model", default=None, help="Fashion-MNIST pipeline folder "
                   "(default: the shipped ccfg/weights/fashion-mnist)")
    p.add_argument("--fashion-n", type=int, default=16, help="images per rule (default 16)")
    p.add_argument("--fashion-steps", type=int, default=10, help="steps (default 10)")
    p.add_argument("--fashion-scale", type=float, default=3.0, help="scale w (default 3)")
    _device_arg(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sample", help="sample a packaged model, save a .npy")
    _common_sampling(p)
    p.add_argument("--tau", type=float, default=None, help="CCFG τ")
    p.add_argument("--negative-scale", type=float, default=None)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other rule parameter, e.g. --param preset=strong")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--karras", action="store_true", help="Karras sigmas (sigma samplers)")
    p.add_argument("--out", default="samples.npy", help="output file: a .png image grid (image "
                   "models) or a .npy array (default samples.npy)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sweep", help="ccfg.sweep over a grid file (--grid), or one rule "
                       "parameter of a mixture over a list of values (--param/--values)")
    _common_sampling(p)
    p.add_argument("--grid", default=None, metavar="FILE", help="a TOML or JSON table mapping "
                   "ccfg.sample arguments (and rule parameters such as scale) to lists of values; "
                   "every combination is one cell, run by ccfg.sweep; records go to "
                   "OUT/sweep.jsonl and a rerun resumes from them")
    p.add_argument("--workers", type=int, default=None, help="local processes for --grid "
                   "(default 2, or the CPU count if smaller; 0 runs in this process)")
    p.add_argument("--param", default=None, help="parameter to sweep (tau, scale, "
                   "negative_scale, steps, seed, ...)")
    p.add_argument("--values", default=None, help="comma-separated values")
    p.add_argument("--fixed", action="append", default=[], metavar="KEY=VALUE",
                   help="other rule parameters held fixed")
    p.add_argument("--out", default="ccfg-sweep", help="output folder (default ccfg-sweep/)")
    p.add_argument("--no-plot", action="store_true", help="table only, no PNG")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("bench", help="run benchmarks/run.py when present")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to benchmarks/run.py")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compare", add_help=False, help="every rule over scales and seeds on the "
                       "exact mixtures and Fashion-MNIST -> docs/RESULTS.md (compare --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of ccfg.compare")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("info", help="version, compute devices, rules, samplers and models")
    p.set_defaults(func=cmd_info)
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:      # its own parser (argparse's REMAINDER drops leading options)
        return compare.main(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    for name in ("n", "steps", "ddpm_steps", "tau_points", "fashion_n", "fashion_steps"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as exc:
        # a user's mistake (or a missing optional package): one line, no traceback
        print(f"python -m ccfg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
