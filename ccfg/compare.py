"""Every negative-guidance rule on the same problems, several scales and seeds: our version of the
paper's comparison (``python -m ccfg compare`` or ``tools/compare.py``).

(a) the exact Gaussian mixtures (toy_2d, high_dim): exact metrics of ccfg.metrics;
(b) Fashion-MNIST with the shipped concept-conditional UNet, scored by the shipped classifier run in
C (ccfg.metrics.image_summary): (positive, negative) pairs where the negative overlaps the positive
and one where it does not.

Writes docs/RESULTS.md (tables of mean ± sd over seeds, NFE per image, wall time; the "who wins"
text is generated from the numbers) and docs/figures/compare_*.png. Samples outside [-1, 1] are
clipped before scoring, as diffusers' image post-processing does."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from ._version import __version__
from .guidance import CCFG, CFG, DNG, SLD, SLD_PRESETS, NegatedCFG, NegativePrompt, PerpNeg
from .models import FASHION_MNIST_DIR, GaussianMixture, _load_fashion_mnist
from .sampling import sample

# (positive, negative): the negative overlaps the positive in all but the last
IMAGE_PAIRS = [("footwear", "sneaker"), ("top", "shirt"), ("upper-body", "dress"),
               ("warm", "coat"), ("top", "footwear")]
TOY_MODELS = {"toy_2d": lambda: GaussianMixture.toy_2d(),
              "high_dim": lambda: GaussianMixture.high_dim(d=64)}

SIZES = {
    # a few minutes on 2 cores: one overlapping pair and the disjoint one, one scale
    "quick": dict(pairs=[IMAGE_PAIRS[0], IMAGE_PAIRS[-1]], scales=[3.0], seeds=3, n=4, steps=8,
                  ddpm_steps=8, toy_n=300, toy_steps=30, toy_scales=[2.0, 4.0]),
    # the default: every pair, two scales: 33.7 min on 2 idle cores for the shipped UNet
    # (8 images per seed and 10 steps took 9.6 min; 16 and 20 make the image part 4x)
    "default": dict(pairs=IMAGE_PAIRS, scales=[2.0, 4.0], seeds=3, n=16, steps=20,
                    ddpm_steps=20, toy_n=1000, toy_steps=50, toy_scales=[1.5, 3.0, 6.0]),
    # for tests: seconds
    "tiny": dict(pairs=[IMAGE_PAIRS[0]], scales=[3.0], seeds=2, n=2, steps=2, ddpm_steps=2,
                 toy_n=50, toy_steps=5, toy_scales=[3.0]),
}

TOY_COLUMNS = [("target_precision", "target precision ↑", True),
               ("negative_leakage", "negative leakage ↓", False),
               ("off_support_rate", "off-support ↓", False),
               ("target_distance", "energy dist. to target ↓", False)]
IMAGE_COLUMNS = [("target_precision", "target precision ↑", True),
                 ("negative_leakage", "negative leakage ↓", False),
                 ("off_positive_rate", "off-positive ↓", False),
                 ("coverage_kl", "coverage KL ↓", False),
                 ("frechet", "Fréchet ↓", False)]


def rules(w, steps=50):
    """(label, rule, sampler) of every rule at scale w; DNG needs a stochastic sampler. SLD's
    preset warm-up counts steps of a 50-step run (diffusers' safe pipeline): it is scaled to
    ``steps`` so that a short run does not stay inside the warm-up throughout."""
    out = [("CFG (positive only)", CFG(w), "ddim"),
           ("NegativePrompt", NegativePrompt(w), "ddim"),
           ("NegatedCFG", NegatedCFG(w), "ddim"),
           ("PerpNeg", PerpNeg(w), "ddim")]
    out += [(f"SLD {p}", SLD(w, preset=p, warmup=int(round(SLD_PRESETS[p][0] * steps / 50))),
             "ddim") for p in ("weak", "medium", "strong", "max")]
    out += [("DNG (ddpm)", DNG(w), "ddpm"),
            ("CCFG τ=0.2 sum (official)", CCFG(w), "ddim"),
            ("CCFG τ=0.2 mean", CCFG(w, tau_reduce="mean"), "ddim")]
    return out


def nfe_per_step(rule):
    """model evaluations per step: uncond + positive (+ the negative)"""
    return 2 if type(rule) in (CFG, NegativePrompt) else 3


def _stats(values):
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _cell(mean, sd, fmt="{:.3f}"):
    if math.isnan(mean):
        return "–"
    return f"{fmt.format(mean)} ± {fmt.format(sd)}"


def _log(quiet, msg):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- runs
def toy_metrics(model, x, positive, negative, n_ref=2000, seed=0):
    """The metrics of one sample set of a GaussianMixture (for the demo, sweeps and run_toy):
    negative leakage (when there is a negative), target precision, off-support rate, energy
    distance to ``n_ref`` exact target samples, mean NLL."""
    out = {}
    if negative is not None:
        out["negative_leakage"] = M.negative_leakage(model, x, negative)
    out["target_precision"] = M.target_precision(model, x, positive, negative)
    out["off_support_rate"] = M.off_support_rate(model, x)
    out["target_distance"] = M.target_distance(model, x, positive, negative, n_ref=n_ref,
                                               max_samples=n_ref, seed=seed)
    out["mean_nll"] = M.mean_nll(model, x)
    return out


def run_toy(size, quiet=False, device="auto"):
    rows = []
    for mname, make in TOY_MODELS.items():
        model = make()
        for w in size["toy_scales"]:
            for label, rule, sampler in rules(w, size["toy_steps"]):
                steps = size["toy_steps"] * (2 if sampler == "ddpm" else 1)
                per_seed, t0 = [], time.perf_counter()
                for seed in range(size["seeds"]):
                    x = sample(model, positive="A", negative="B", guidance=rule,
                                    sampler=sampler, steps=steps, n=size["toy_n"], seed=seed,
                                    progress=False, device=device)
                    per_seed.append(toy_metrics(model, x, "A", "B",
                                                n_ref=min(1000, size["toy_n"]), seed=seed))
                wall = time.perf_counter() - t0
                row = dict(problem=mname, positive="A", negative="B", scale=w, rule=label,
                           sampler=f"{sampler}-{steps}", nfe=nfe_per_step(rule) * steps,
                           wall_s=wall, seeds=size["seeds"], n=size["toy_n"])
                for key, _, _ in TOY_COLUMNS:
                    row[key] = _stats([m.get(key) for m in per_seed])
                rows.append(row)
            _log(quiet, f"toy {mname} w={w}: done")
    return rows


def load_fashion_model(path=None):
    """The shipped concept-conditional UNet (ccfg/weights/fashion-mnist), or the folder ``path``;
    None when absent."""
    path = path or FASHION_MNIST_DIR
    if not os.path.isfile(os.path.join(path, "unet", "config.json")):
        return None, path
    return _load_fashion_mnist(path), path


def run_images(size, model, quiet=False, keep_samples=True, real=None, device="auto"):
    """``real``: (features, labels) of the real reference images (default: the whole test split)"""
    real = M.real_features() if real is None else real
    rows, grids = [], {}
    for pos, neg in size["pairs"]:
        for w in size["scales"]:
            for label, rule, sampler in rules(w, size["steps"]):
                steps = size["ddpm_steps"] if sampler == "ddpm" else size["steps"]
                per_seed, xs, t0 = [], [], time.perf_counter()
                for seed in range(size["seeds"]):
                    x = sample(model, positive=pos, negative=neg, guidance=rule,
                                    sampler=sampler, steps=steps, n=size["n"], seed=seed,
                                    progress=False, device=device)
                    x = np.clip(x, -1.0, 1.0)
                    xs.append(x)
                    per_seed.append(M.image_summary(x, pos, neg, seed=seed, real=real))
                wall = time.perf_counter() - t0
                row = dict(problem="fashion-mnist", positive=pos, negative=neg, scale=w,
                           rule=label, sampler=f"{sampler}-{steps}", nfe=nfe_per_step(rule) * steps,
                           wall_s=wall, seeds=size["seeds"], n=size["n"])
                for key, _, _ in IMAGE_COLUMNS + [("frechet_floor", "", False)]:
                    row[key] = _stats([m.get(key) for m in per_seed])
                rows.append(row)
                if keep_samples:
                    grids[(pos, neg, w, label)] = np.concatenate(xs)
                _log(quiet, f"{pos} not {neg} w={w} {label}: prec {row['target_precision'][0]:.2f}"
                            f" leak {row['negative_leakage'][0]:.2f} FD {row['frechet'][0]:.2f} "
                            f"({wall:.1f}s)")
    return rows, grids


# ---------------------------------------------------------------------- report
def _table(rows, columns):
    heads = ["rule", "sampler", "NFE/img"] + [h for _, h, _ in columns] + ["wall s"]
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = [r["rule"], r["sampler"], str(r["nfe"])]
        cells += [_cell(*r[k]) for k, _, _ in columns]
        cells.append(f"{r['wall_s']:.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _within_one_sd(a, b, tol=1e-9):
    """(mean, sd) pairs a and b differ by at most the larger of their sds"""
    return abs(a[0] - b[0]) <= max(a[1], b[1], tol)


def _verdicts(rows, columns, tol=1e-9):
    """Per metric: (key, head, best rule names, best mean, kind, CCFG's best row) where kind says
    where CCFG's best variant stands: "best", "tie", "within_sd" (behind by at most one sd) or
    "loses". Only measured numbers go in."""
    out = []
    for key, head, higher in columns:
        valid = [r for r in rows if not math.isnan(r[key][0])]
        ccfgs = [r for r in valid if r["rule"].startswith("CCFG")]
        if not valid or not ccfgs:
            continue
        sign = -1.0 if higher else 1.0
        best_v = min(sign * r[key][0] for r in valid) * sign
        best = [r for r in valid if abs(r[key][0] - best_v) <= tol]
        bc = min(ccfgs, key=lambda r: sign * r[key][0])
        if bc in best:
            kind = "best" if len(best) == 1 else "tie"
        elif _within_one_sd(bc[key], (best_v, best[0][key][1])):
            kind = "within_sd"
        else:
            kind = "loses"
        out.append((key, head, [r["rule"] for r in best], best_v, kind, bc))
    return out


def _winners(rows, columns):
    lines = []
    for key, head, names, best_v, kind, bc in _verdicts(rows, columns):
        verdict = {"best": "CCFG is best",
                   "tie": f"CCFG ties for best ({len(names)} rules)",
                   "within_sd": f"CCFG ({bc['rule']}, {bc[key][0]:.3f}) is behind but within "
                                "one sd",
                   "loses": f"CCFG loses: its best variant ({bc['rule']}) has "
                            f"{bc[key][0]:.3f}"}[kind]
        lines.append(f"  - {head}: best **{', '.join(names)}** ({best_v:.3f}); {verdict}.")
    return lines


def _summary(groups, columns, what):
    """Over every (problem, scale) table: which rules are best how often per metric, and how often
    CCFG is best / tied / within one sd / behind."""
    lines = []
    for key, head, _ in columns:
        tally, kinds, n = {}, {"best": 0, "tie": 0, "within_sd": 0, "loses": 0}, 0
        for rows in groups:
            for k, _, names, _, kind, _ in _verdicts(rows, [c for c in columns if c[0] == key]):
                n += 1
                kinds[kind] += 1
                for nm in names:
                    tally[nm] = tally.get(nm, 0) + 1
        if not n:
            continue
        top = sorted(tally.items(), key=lambda kv: -kv[1])[:3]
        often = ", ".join(f"{r} ({c}/{n})" for r, c in top)
        lines.append(f"- {what}, {head}: most often best {often}; "
                     f"CCFG best alone in {kinds['best']}/{n}, tied in {kinds['tie']}/{n}, "
                     f"within one sd in {kinds['within_sd']}/{n}, behind in {kinds['loses']}/{n}.")
    return lines


def _head_to_head(groups, columns, what, a="CCFG τ=0.2 sum (official)", b="NegatedCFG"):
    """The paper's claim as counts: per metric, in how many (problem, scale) tables ``a`` is
    better than ``b`` by more than one sd (the larger of the two), within one sd, or worse."""
    parts = []
    for key, head, higher in columns:
        tally, n = [0, 0, 0], 0
        for rows in groups:
            ra = next((r for r in rows if r["rule"] == a), None)
            rb = next((r for r in rows if r["rule"] == b), None)
            if ra is None or rb is None or math.isnan(ra[key][0]) or math.isnan(rb[key][0]):
                continue
            n += 1
            if _within_one_sd(ra[key], rb[key]):
                tally[1] += 1
            else:
                a_higher = ra[key][0] > rb[key][0]
                tally[0 if a_higher == higher else 2] += 1
        if n:
            parts.append(f"{head} {tally[0]}/{tally[1]}/{tally[2]}")
    if not parts:
        return []
    return [f"- {what}, {a} vs {b} (better / within one sd / worse, per table): "
            + "; ".join(parts) + "."]


def write_report(out_md, toy_rows, image_rows, size_name, size, meta):
    text = ["# Negative guidance compared: every rule, several scales and seeds", "",
            f"Generated by `python -m ccfg compare --size {size_name}` (ccfg {__version__}), "
            f"{meta['date']}, total wall time {meta['wall_s'] / 60:.1f} min on "
            f"{os.cpu_count()} CPU cores. Every number is mean ± sd over {size['seeds']} seeds "
            "(seed s: the same initial noise for every rule). SLD's preset warm-up (in steps of a "
            "50-step run) is scaled to the step count. NFE/img = model evaluations per image "
            "(steps × branches). Wall time is per rule, all seeds, on a shared machine.", ""]
    toy_groups = [[r for r in toy_rows if r["problem"] == p and r["scale"] == w]
                  for p in TOY_MODELS for w in size["toy_scales"]]
    img_groups = [[r for r in image_rows if r["positive"] == p and r["negative"] == q
                   and r["scale"] == w] for p, q in size["pairs"] for w in size["scales"]]
    toy_groups = [g for g in toy_groups if g]
    img_groups = [g for g in img_groups if g]
    text += ["## Summary (counted from the tables below)", ""]
    text += _summary(toy_groups, TOY_COLUMNS, "exact mixtures")
    text += _summary(img_groups, IMAGE_COLUMNS, "Fashion-MNIST")
    text += _head_to_head(toy_groups, TOY_COLUMNS, "exact mixtures")
    text += _head_to_head(img_groups, IMAGE_COLUMNS, "Fashion-MNIST")
    text += ["", "Ties are common where a metric saturates (precision 1, leakage 0) on few "
             "samples; \"within one sd\" is not a win. A rule best on leakage can still lose on "
             "Fréchet distance or coverage: read the columns together.", ""]
    if toy_rows:
        text += ["## (a) Exact Gaussian mixtures: positive A = {A1, A2, A3}, negative B = {A3, B1}",
                 "", f"{size['toy_n']} samples per seed, DDIM-{size['toy_steps']} (DNG: DDPM with "
                 "twice the steps). Metrics are exact (ccfg.metrics): target = A minus B.", ""]
        for prob in TOY_MODELS:
            for w in size["toy_scales"]:
                sub = [r for r in toy_rows if r["problem"] == prob and r["scale"] == w]
                text += [f"### {prob}, w = {w:g}", "", _table(sub, TOY_COLUMNS), "",
                         "Who wins:"] + _winners(sub, TOY_COLUMNS) + [""]
    if image_rows:
        text += ["## (b) Fashion-MNIST, shipped UNet, scored by the C classifier", "",
                 f"{size['n']} images per seed, DDIM-{size['steps']} (DNG: DDPM-"
                 f"{size['ddpm_steps']}). Target precision = classified in P \\ Q; leakage = in Q; "
                 "off-positive = outside P; coverage KL = KL of the class histogram inside P \\ Q "
                 "from uniform (0 best); Fréchet = on the classifier's penultimate features "
                 "against "
                 "half of the real test images of P \\ Q; the floor is the same distance for as "
                 "many real images from the other half (what a perfect sampler of this size "
                 "gets).", f"Model: {meta.get('model_note', '')}", ""]
        for pos, neg in size["pairs"]:
            for w in size["scales"]:
                sub = [r for r in image_rows if r["positive"] == pos and r["negative"] == neg
                       and r["scale"] == w]
                if not sub:
                    continue
                floor = sub[0]["frechet_floor"]
                text += [f"### \"{pos}, not {neg}\", w = {w:g}", "",
                         _table(sub, IMAGE_COLUMNS), "",
                         f"Fréchet floor (real vs real, same size): {_cell(*floor)}. Differences "
                         "smaller than the floor's sd are sampling noise at this size, not "
                         "findings.", "",
                         "Who wins:"] + _winners(sub, IMAGE_COLUMNS) + [""]
    text += ["## Figures", "", "`docs/figures/compare_curves_*.png`: metric vs scale per rule; "
             "`docs/figures/compare_grid_*.png`: samples per rule (seed 0 first).", ""]
    Path(out_md).write_text("\n".join(text), encoding="utf-8")


def plot(figdir, toy_rows, image_rows, grids, size):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    files = []
    groups = {}
    for r in toy_rows:
        groups.setdefault((r["problem"], "A", "B", tuple(TOY_COLUMNS)), []).append(r)
    for r in image_rows:
        groups.setdefault((r["problem"], r["positive"], r["negative"], tuple(IMAGE_COLUMNS)),
                          []).append(r)
    for (prob, pos, neg, cols), rows in groups.items():
        fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.4))
        for ax, (key, head, _) in zip(axes, cols):
            for label in dict.fromkeys(r["rule"] for r in rows):
                pts = sorted((r["scale"], r[key][0], r[key][1]) for r in rows if r["rule"] == label)
                xs, ms, sds = zip(*pts)
                ax.errorbar(xs, ms, yerr=sds, marker="o", ms=3, capsize=2, label=label,
                            ls="--" if label.startswith("CCFG") else "-")
            ax.set_title(head, fontsize=9)
            ax.set_xlabel("scale w")
        axes[0].legend(fontsize=6)
        fig.suptitle(f"{prob}: {pos}, not {neg}", fontsize=10)
        fig.tight_layout()
        name = figdir / f"compare_curves_{prob}_{pos}_not_{neg}.png"
        fig.savefig(name, dpi=90)
        plt.close(fig)
        files.append(name)
    # sample grids: one panel per rule for each pair at the largest scale
    keys = {}
    for (pos, neg, w, label), x in grids.items():
        keys.setdefault((pos, neg), {})
        if w == max(size["scales"]):
            keys[(pos, neg)][label] = x
    for (pos, neg), panels in keys.items():
        ncol = int(math.ceil(len(panels) / 2))
        fig, axes = plt.subplots(2, ncol, figsize=(2.0 * ncol, 4.6))
        axes = np.atleast_1d(axes).ravel()
        for ax in axes[len(panels):]:
            ax.axis("off")
        for ax, (label, x) in zip(axes, panels.items()):
            k = min(len(x), 16)
            cols = int(math.ceil(math.sqrt(k)))
            rows_ = int(math.ceil(k / cols))
            canvas = -np.ones((rows_ * 32, cols * 32), np.float32)
            for i in range(k):
                r, c = divmod(i, cols)
                canvas[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] = x[i, 0]
            ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
        fig.suptitle(f"{pos}, not {neg}, w = {max(size['scales']):g}", fontsize=8)
        fig.tight_layout()
        name = figdir / f"compare_grid_{pos}_not_{neg}.png"
        fig.savefig(name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def _sha256(folder):
    import hashlib
    h = hashlib.sha256()
    name = os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(name):
        return "?"
    with open(name, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render(out_md):
    """Rewrite the report ``out_md`` from its JSON twin: a change to the report's text needs no
    new sampling. The size's parameters come from the JSON (older files: from SIZES)."""
    src = Path(out_md).with_suffix(".json")
    if not src.is_file():
        print(f"compare --render: {src} not found; run compare first", file=sys.stderr)
        return 2
    with open(src, encoding="utf-8") as f:
        saved = json.load(f)
    size = saved.get("size_params") or SIZES[saved["size"]]
    meta = {k: saved[k] for k in ("date", "wall_s", "model_note") if k in saved}
    write_report(out_md, saved["toy"], saved["images"], saved["size"], size, meta)
    print(f"compare: {out_md} rewritten from {src}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ccfg compare", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--size", choices=list(SIZES), default="default",
                    help="quick: minutes; default: about 35 min on 2 cores; tiny: seconds (tests)")
    ap.add_argument("--quick", action="store_const", const="quick", dest="size",
                    help="a few-minute run (same as --size quick)")
    ap.add_argument("--model", default=None, help="Fashion-MNIST pipeline folder (default: the "
                    "shipped ccfg/weights/fashion-mnist)")
    ap.add_argument("--out", default="ccfg-compare/RESULTS.md",
                    help="the report (default ccfg-compare/RESULTS.md; its numbers go to the "
                         ".json beside it). The committed report is docs/RESULTS.md: pass "
                         "--out docs/RESULTS.md --figures docs/figures to regenerate it.")
    ap.add_argument("--figures", default="ccfg-compare/figures",
                    help="folder of the figures (default ccfg-compare/figures)")
    ap.add_argument("--no-toy", action="store_true", help="skip the exact mixtures")
    ap.add_argument("--no-images", action="store_true", help="skip Fashion-MNIST")
    ap.add_argument("--no-plot", action="store_true", help="no figures")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    ap.add_argument("--device", default="auto", help="compute device: auto, cpu, vulkan or "
                    "vulkan:N (default auto)")
    ap.add_argument("--render", action="store_true",
                    help="rewrite --out from the numbers already in its .json (no sampling, "
                         "figures untouched)")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.out)
    size = SIZES[args.size]
    t0 = time.perf_counter()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    toy_rows = [] if args.no_toy else run_toy(size, args.quiet, args.device)
    image_rows, grids = [], {}
    if not args.no_images:
        model, path = load_fashion_model(args.model)
        if model is None:
            print(f"compare: no Fashion-MNIST model at {path}; skipping the image part",
                  file=sys.stderr)
        else:
            info = os.path.join(path, "training.json")
            if os.path.isfile(info):
                with open(info) as f:
                    tr = json.load(f)
                minutes = tr.get("wall_seconds", 0) / 60
                meta["model_note"] = (f"{tr.get('steps_done', '?')} of {tr.get('steps', '?')} "
                                      f"planned training steps ({minutes:.0f} min), weights "
                                      f"sha256 {_sha256(path)[:12]}")
            image_rows, grids = run_images(size, model, args.quiet, device=args.device)
    meta["wall_s"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, toy_rows, image_rows, args.size, size, meta)
    files = [] if args.no_plot else plot(args.figures, toy_rows, image_rows, grids, size)
    with open(Path(args.out).with_suffix(".json"), "w") as f:
        json.dump(dict(meta, size=args.size, size_params=size, toy=toy_rows,
                       images=image_rows), f, indent=1, default=float)
    print(f"compare: {args.out} ({meta['wall_s'] / 60:.1f} min), {len(files)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
