"""Every negative-guidance rule on the same problems and noise, with paired bootstrap intervals:
our version of the paper's comparison (``python -m ccfg compare`` or ``tools/compare.py``).

(a) the exact Gaussian mixtures (toy2d, gmm64): exact metrics of ccfg.metrics;
(b) Fashion-MNIST with the shipped concept-conditional UNet, scored by the shipped classifier run in
C: (positive, negative) pairs where the negative overlaps the positive and one where it does not.

Every cell (problem, scale, rule, seed) is one cell of ``ccfg.sweep``: its executor (local
processes by default), its records appended as cells finish and its resume (the cells file and
the samples live in ``--work``). Seed s gives every rule the same x_T and per-step noise, so
sample i of seed s is one unit shared by every rule; the report resamples units with replacement
(the same resamples for every rule and metric) and gives 95 % percentile intervals for each value
and for paired differences. A difference is "better"/"worse" only when its interval excludes 0.
DNG runs DDPM with the official offset and with the offset scaled to the step count, next to CFG
on that same sampler (and, on the mixtures, the official protocol: 1000 DDPM steps with
fixed-large noise). Samples outside [-1, 1] are clipped before scoring,
as diffusers' image post-processing does."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import metrics as M
from .sweep import _params as _sweep_params
from .sweep import read_records as _sweep_read
from .sweep import sweep as _run_sweep
from ._version import __version__
from .guidance import CCFG, CFG, DNG, SLD, SLD_PRESETS, NegatedCFG, NegativePrompt, PerpNeg
from .models import FASHION_MNIST_DIR, _load_fashion_mnist

# (positive, negative): the negative overlaps the positive in all but "top, not footwear"
# (second, so that a run cut short still has the disjoint pair)
IMAGE_PAIRS = [("footwear", "sneaker"), ("top", "footwear"), ("top", "shirt"),
               ("upper-body", "dress"), ("warm", "coat")]
TOY_MODELS = {"toy_2d": "toy2d", "high_dim": "gmm64"}       # table name -> ccfg.models name
OFFICIAL_DDPM_STEPS = 1000
# a resolved difference smaller than this (in the metric's own units: rates, distances, KID×10³)
# is reported as "negligible", not as better/worse (leakage 1e-46 vs 0 is resolved and means
# nothing)
MIN_EFFECT = 1e-3
# one UNet evaluation of one image on this repository's 2-core build machine, idle (load 0.8,
# 2026-11-30, a 16-image 20-step CCFG run): the time budget of the sizes (docs/api.md)
IDLE_MS_PER_IMAGE_NFE = 8.6

SIZES = {
    # for tests: seconds
    "tiny": dict(pairs=[IMAGE_PAIRS[0]], scales=[3.0], seeds=2, n=2, steps=2, ddpm_steps=2,
                 toy_seeds=2, toy_n=40, toy_steps=5, toy_ddpm_steps=5, toy_scales=[3.0], official=False,
                 n_boot=200),
    # minutes: two overlapping pairs and the disjoint one at one scale, two toy scales
    "quick": dict(pairs=IMAGE_PAIRS[:3], scales=[4.0], seeds=2,
                  n=16, steps=20, ddpm_steps=20, toy_seeds=2, toy_n=500, toy_steps=50, toy_ddpm_steps=100,
                  toy_scales=[1.5, 3.0], official=True, n_boot=1000),
    # the default: every pair at two scales, 32 images per rule (2 seeds x 16), 1000 toy samples
    # per rule: 230 400 image evaluations, about 33 min at the 8.6 ms each measured on 2 idle
    # cores, plus a few minutes (docs/RESULTS.md states the cost per cell it measured)
    "default": dict(pairs=IMAGE_PAIRS, scales=[2.0, 4.0], seeds=2, n=16, steps=20,
                    ddpm_steps=20, toy_seeds=2, toy_n=500, toy_steps=50, toy_ddpm_steps=100,
                    toy_scales=[1.5, 3.0, 6.0], official=True, n_boot=1000),
    # 4x the images (128 per rule: intervals about half as wide), a third scale: about 8x the
    # default's image time
    "large": dict(pairs=IMAGE_PAIRS, scales=[2.0, 4.0, 6.0], seeds=8, n=16, steps=20,
                  ddpm_steps=20, toy_seeds=2, toy_n=1000, toy_steps=50, toy_ddpm_steps=100,
                  toy_scales=[1.5, 3.0, 6.0], official=True, n_boot=2000),
}

# (key, head, higher is better)
TOY_COLUMNS = [("target_precision", "target precision ↑", True),
               ("negative_leakage", "negative leakage ↓", False),
               ("off_support_rate", "off-support ↓", False),
               ("target_distance", "energy dist. to target ↓", False)]
IMAGE_COLUMNS = [("target_precision", "target precision ↑", True),
                 ("negative_leakage", "negative leakage ↓", False),
                 ("off_positive_rate", "off-positive ↓", False),
                 ("coverage_kl", "coverage KL ↓", False),
                 ("kid", "KID×10³ ↓", False)]
# what the summary compares head to head: (a, b) by label
CCFG_OFFICIAL = "CCFG τ=0.2 sum (official)"
HEAD_TO_HEAD = [(CCFG_OFFICIAL, "NegatedCFG"), (CCFG_OFFICIAL, "NegativePrompt"),
                ("DNG (official δ)", "CFG on DNG's sampler"),
                ("DNG (scaled δ)", "CFG on DNG's sampler"),
                ("DNG (official protocol)", "CFG on DNG's official sampler")]


def arms(w, steps=50, ddpm_steps=100, official_steps=None):
    """Every rule of a table at scale ``w``: dicts of label, rule, sampler, steps and
    noise_variance. DDIM for the deterministic rules; DNG runs DDPM-``ddpm_steps`` (fixed-small
    noise) with the official offset δ = 2e-4 and with δ scaled to the step count
    (``DNG(offset="scaled")``), next to CFG on the same sampler; ``official_steps``: also DNG's
    official protocol (DDPM over every training step with fixed-large noise, as its code) and CFG
    on it. SLD's preset warm-up counts
    steps of a 50-step run (diffusers' safe pipeline): it is scaled to ``steps``."""
    def ddim(label, rule):
        return dict(label=label, rule=rule, sampler="ddim", steps=steps, noise_variance=None)

    def ddpm(label, rule, k, variance):
        return dict(label=label, rule=rule, sampler="ddpm", steps=k, noise_variance=variance)

    out = [ddim("CFG (positive only)", CFG(w)), ddim("NegativePrompt", NegativePrompt(w)),
           ddim("NegatedCFG", NegatedCFG(w)), ddim("PerpNeg", PerpNeg(w))]
    out += [ddim(f"SLD {p}", SLD(w, preset=p, warmup=int(round(SLD_PRESETS[p][0] * steps / 50))))
            for p in ("weak", "medium", "strong", "max")]
    out += [ddim(CCFG_OFFICIAL, CCFG(w)), ddim("CCFG τ=0.2 mean", CCFG(w, tau_reduce="mean"))]
    # short runs: fixed-small noise, the variance DNG's update scores the move with (exact Bayes
    # for the transition taken; fixed-large adds β_t >> β̃_t per stride at 20-100 steps)
    out += [ddpm("CFG on DNG's sampler", CFG(w), ddpm_steps, "fixed_small"),
            ddpm("DNG (official δ)", DNG(w), ddpm_steps, "fixed_small"),
            ddpm("DNG (scaled δ)", DNG(w, offset="scaled"), ddpm_steps, "fixed_small")]
    if official_steps:
        out += [ddpm("CFG on DNG's official sampler", CFG(w), official_steps, "fixed_large"),
                ddpm("DNG (official protocol)", DNG(w), official_steps, "fixed_large")]
    return out


def nfe_per_step(rule):
    """model evaluations per step: uncond + positive (+ the negative)"""
    return 2 if type(rule) in (CFG, NegativePrompt) else 3


def _log(quiet, msg):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def toy_metrics(model, x, positive, negative, n_ref=2000, seed=0):
    """The metrics of one sample set of a GaussianMixture (for the demo and the sweep CLI):
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


def load_fashion_model(path=None):
    """The shipped concept-conditional UNet (ccfg/weights/fashion-mnist), or the folder ``path``;
    None when absent."""
    path = path or FASHION_MNIST_DIR
    if not os.path.isfile(os.path.join(path, "unet", "config.json")):
        return None, path
    return _load_fashion_mnist(path), path


# ---------------------------------------------------------------------- cells (ccfg.sweep)
class _KeepSamples:
    """The sweep's metrics callable: saves the cell's samples (float32 .npy, named by the cell's
    parameters) for the paired analysis and records the file's name. Picklable, so it runs in
    the sweep's worker processes."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __call__(self, model, x, cell):
        name = _cell_file(_sweep_params(cell))
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, f".{name}.{os.getpid()}.npy")
        np.save(tmp, np.asarray(x, np.float32))
        os.replace(tmp, os.path.join(self.folder, name + ".npy"))   # never a torn file
        return {"samples": name}


def _cell_file(params):
    keep = {k: v for k, v in params.items() if k != "device"}
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:20]


def _plan(size, parts, model_name):
    """Tables and cells: [(table, [(arm, [cell per seed])])]; a table is a dict (part, problem,
    positive, negative, scale)."""
    tables = []
    if "toy" in parts:
        for prob, name in TOY_MODELS.items():
            for w in size["toy_scales"]:
                t = dict(part="toy", problem=prob, positive="A", negative="B", scale=w,
                         n=size["toy_n"])
                official = OFFICIAL_DDPM_STEPS if size["official"] else None
                tables.append((t, name, arms(w, size["toy_steps"], size["toy_ddpm_steps"],
                                             official)))
    if "images" in parts:
        for pos, neg in size["pairs"]:
            for w in size["scales"]:
                t = dict(part="images", problem="fashion-mnist", positive=pos, negative=neg,
                         scale=w, n=size["n"])
                tables.append((t, model_name, arms(w, size["steps"], size["ddpm_steps"])))
    out = []
    for t, model, arm_list in tables:
        entries = []
        for a in arm_list:
            cells = [dict(model=model, positive=t["positive"], negative=t["negative"],
                          guidance=a["rule"], sampler=a["sampler"], steps=a["steps"], n=t["n"],
                          seed=s, noise_variance=a["noise_variance"])
                     for s in range(size["toy_seeds" if t["part"] == "toy" else "seeds"])]
            entries.append((a, cells))
        out.append((t, entries))
    return out


def run_cells(plan, work, device="auto", executor=None, workers=None, quiet=False):
    """Run every cell of ``plan`` through ccfg.sweep (resuming from ``work``/cells.jsonl);
    returns the records in plan order."""
    flat = [c for _, entries in plan for _, cells in entries for c in cells]
    if not flat:
        return []
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    return _run_sweep(flat, executor=executor, out=str(work / "cells.jsonl"),
                        metrics=_KeepSamples(work / "samples"), progress=not quiet,
                        workers=workers, device=device)


# ---------------------------------------------------------------------- paired analysis
def _units(records, work, clip):
    xs = [np.load(Path(work) / "samples" / (r["samples"] + ".npy")) for r in records]
    x = np.concatenate(xs).astype(np.float64)
    return np.clip(x, -1.0, 1.0) if clip else x


def _pairwise_distances(a, b):
    d2 = (np.einsum("nd,nd->n", a, a)[:, None] + np.einsum("nd,nd->n", b, b)[None, :]
          - 2.0 * (a @ b.T))
    return np.sqrt(np.maximum(d2, 0.0))


def _pair_mean(counts, mat):
    """Per resample (row of counts), the mean of mat over pairs of positions that hold DIFFERENT
    units: sum_{i != j} c_i c_j mat_ij / sum_{i != j} c_i c_j. With all counts 1 this is the
    U-statistic mean over i != j. Pairs of copies of one unit are left out: they would put
    mat_ii (a kernel's largest values, a distance's zeros) into a U-statistic and bias every
    resample (by about 1/n of the diagonal's weight)."""
    c = np.asarray(counts, np.float64)
    d = np.diag(mat)
    num = np.einsum("bn,bn->b", c @ mat, c) - (c * c) @ d
    den = c.sum(1) ** 2 - (c * c).sum(1)
    return num / den


class _ToyScorer:
    """Per-unit values and set statistics of a GaussianMixture table, for any resample weights."""

    def __init__(self, model, positive, negative, n_ref=1000, seed=0):
        self.model = model
        tgt = M.target(model, positive, negative)
        self.tgt = tgt
        self.neg = M._components(model, negative, "negative")
        self.thr = M._log_density_threshold(model, 1e-3, 200_000, 0)
        self.ref = model._sample_components(n_ref, seed, tgt)[0].astype(np.float64)
        self.c_ref = float(_pair_mean(np.ones((1, n_ref)), _pairwise_distances(self.ref,
                                                                                 self.ref))[0])

    def score(self, x, counts):
        """{key: (value on all units, (B,) values on the resamples)}"""
        n = x.shape[0]
        post = self.model.posterior(x)
        per = {"target_precision": np.isin(np.argmax(post, 1), self.tgt).astype(np.float64),
               "negative_leakage": post[:, self.neg].sum(1),
               "off_support_rate": (self.model.log_prob(x) < self.thr).astype(np.float64)}
        out = {k: (float(v.mean()), counts @ v / n) for k, v in per.items()}
        # energy distance with U-statistic within-set terms (unbiased ED²), its square root
        a = _pairwise_distances(x, self.ref).mean(1)
        dxx = _pairwise_distances(x, x)
        full = 2.0 * a.mean() - _pair_mean(np.ones((1, n)), dxx)[0] - self.c_ref
        boot = 2.0 * (counts @ a) / n - _pair_mean(counts, dxx) - self.c_ref
        out["target_distance"] = (math.sqrt(max(full, 0.0)), np.sqrt(np.maximum(boot, 0.0)))
        return out


class _ImageScorer:
    """Per-unit values and set statistics of a Fashion-MNIST table: the classifier's labels
    (rates, coverage KL) and features (KID against every real test image of the target
    classes; Fréchet distance against half of them, point value only, with its floor)."""

    def __init__(self, positive, negative, real=None, seed=0):
        rf, rl = M.real_features() if real is None else real
        self.p, self.q, self.t = M._target_classes(positive, negative)
        idx = np.flatnonzero(np.isin(rl, self.t))
        self.real = rf[idx].astype(np.float64)
        kyy = M.polynomial_kernel(self.real, self.real)
        m = kyy.shape[0]
        self.c_yy = float((kyy.sum() - np.trace(kyy)) / (m * (m - 1)))
        perm = np.random.default_rng(seed).permutation(idx)
        self.half_a, self.half_b = rf[perm[: len(perm) // 2]], rf[perm[len(perm) // 2:]]

    def score(self, x, counts):
        n = x.shape[0]
        clf = M.load_classifier()
        labels = clf.classify(x.astype(np.float32))
        feats = clf.features(x.astype(np.float32)).astype(np.float64)
        per = {"target_precision": np.isin(labels, self.t).astype(np.float64),
               "negative_leakage": np.isin(labels, self.q).astype(np.float64),
               "off_positive_rate": (~np.isin(labels, self.p)).astype(np.float64)}
        out = {k: (float(v.mean()), counts @ v / n) for k, v in per.items()}
        onehot = (labels[:, None] == np.array(self.t)[None, :]).astype(np.float64)

        def kl(h):
            tot = h.sum(-1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = h / tot
                v = np.where(f > 0, f * np.log(f * len(self.t)), 0.0).sum(-1)
            return np.where(tot[..., 0] > 0, v, np.nan)

        out["coverage_kl"] = (float(kl(onehot.sum(0))), kl(counts @ onehot))
        kxx = M.polynomial_kernel(feats, feats)
        b = M.polynomial_kernel(feats, self.real).mean(1)
        full = _pair_mean(np.ones((1, n)), kxx)[0] + self.c_yy - 2.0 * b.mean()
        boot = _pair_mean(counts, kxx) + self.c_yy - 2.0 * (counts @ b) / n
        out["kid"] = (1e3 * float(full), 1e3 * boot)
        k = min(n, len(self.half_a))
        out["frechet"] = (M.frechet_distance(feats, self.half_b), None)
        out["frechet_floor"] = (M.frechet_distance(self.half_a[:k], self.half_b)
                                if k >= 2 else float("nan"), None)
        return out


# bump when the analysis changes: analysed tables are cached in --work/analysis by their inputs
ANALYSIS_VERSION = 1


def analyse(plan, records, work, n_boot=1000, confidence=0.95, real=None, quiet=False):
    """The report's tables from the cells' samples: for each table, each rule's value with its
    interval, the best rule with those not resolved from it, and the head-to-head differences.
    Returns a list of plain dicts (the JSON's "tables"). A table analysed before from the same
    samples and settings is read back from ``work``/analysis."""
    i = 0
    out = []
    scorers = {}
    for t, entries in plan:
        recs = []
        for a, cells in entries:
            recs.append(records[i:i + len(cells)])
            i += len(cells)
        key = hashlib.sha1(json.dumps(
            [ANALYSIS_VERSION, t, [[r["samples"] for r in rs] for rs in recs],
             [a["label"] for a, _ in entries], n_boot, confidence, real is None],
            sort_keys=True, default=str).encode()).hexdigest()[:20]
        cache = Path(work) / "analysis" / f"{key}.json"
        if cache.is_file():
            with open(cache, encoding="utf-8") as f:
                out.append(json.load(f))
            continue
        if t["part"] == "toy":
            key = (t["problem"],)
            if key not in scorers:
                from .models import load
                scorers[key] = load(TOY_MODELS[t["problem"]])
            scorer = _ToyScorer(scorers[key], t["positive"], t["negative"])
            columns = TOY_COLUMNS
        else:
            scorer = _ImageScorer(t["positive"], t["negative"], real)
            columns = IMAGE_COLUMNS
        n_units = t["n"] * len(entries[0][1])
        counts = M.bootstrap_counts(n_units, n_boot, seed=0)
        rows, boots = [], {}
        for (a, cells), rs in zip(entries, recs):
            x = _units(rs, work, clip=t["part"] == "images")
            s = scorer.score(x, counts)
            boots[a["label"]] = {k: v[1] for k, v in s.items() if v[1] is not None}
            row = dict(rule=a["label"], repr=repr(a["rule"]),
                       sampler=f"{a['sampler']}-{a['steps']}"
                               + ("" if a["noise_variance"] is None else
                                  f" ({a['noise_variance'].replace('_', '-')})"),
                       nfe=nfe_per_step(a["rule"]) * a["steps"],
                       wall_s=float(sum(r.get("wall_s", 0.0) for r in rs)), units=n_units)
            for k, (v, b) in s.items():
                lo, hi = (M.percentile_interval(b, confidence) if b is not None
                          else (float("nan"), float("nan")))
                row[k] = [v, lo, hi]
            rows.append(row)
        table = dict(t, units=n_units, seeds=len(entries[0][1]), n_boot=n_boot,
                     confidence=confidence, rows=rows)
        table["best"] = _best(rows, boots, columns, confidence)
        table["head_to_head"] = _pairs(rows, boots, columns, confidence)
        table = json.loads(json.dumps(table, default=float))       # plain JSON values
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w", encoding="utf-8") as f:
            json.dump(table, f)
        out.append(table)
        _log(quiet, f"analysed {t['problem']} {t['positive']} not {t['negative']} "
                    f"w={t['scale']:g}")
    return out


def _diff(boots, a, b, key, confidence):
    lo, hi = M.percentile_interval(boots[a][key] - boots[b][key], confidence)
    return lo, hi


def _best(rows, boots, columns, confidence):
    """Per metric: the best rule by its value and every rule whose paired difference from it has
    an interval containing 0 (not resolved from the best)."""
    out = {}
    for key, _, higher in columns:
        valid = [r for r in rows if not math.isnan(r[key][0])]
        if not valid:
            continue
        sign = -1.0 if higher else 1.0
        best = min(valid, key=lambda r: sign * r[key][0])
        tied = []
        for r in valid:
            if r is best:
                continue
            lo, hi = _diff(boots, r["rule"], best["rule"], key, confidence)
            if math.isnan(lo) or lo <= 0.0 <= hi or abs(r[key][0] - best[key][0]) < MIN_EFFECT:
                tied.append(r["rule"])
        out[key] = dict(best=best["rule"], value=best[key][0], tied=tied)
    return out


def _pairs(rows, boots, columns, confidence):
    """The head-to-head comparisons present in this table: a - b with its paired interval and a
    verdict for a ("better", "worse", "unresolved")."""
    labels = {r["rule"]: r for r in rows}
    out = []
    for a, b in HEAD_TO_HEAD:
        if a not in labels or b not in labels:
            continue
        for key, _, higher in columns:
            va, vb = labels[a][key][0], labels[b][key][0]
            if math.isnan(va) or math.isnan(vb):
                continue
            lo, hi = _diff(boots, a, b, key, confidence)
            if not (lo > 0 or hi < 0):
                verdict = "unresolved"
            elif abs(va - vb) < MIN_EFFECT:
                verdict = "negligible"
            else:
                verdict = "better" if (lo > 0) == higher else "worse"
            out.append(dict(a=a, b=b, metric=key, diff=va - vb, low=lo, high=hi,
                            verdict=verdict))
    return out


# ---------------------------------------------------------------------- report
def _fmt(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cell(v):
    if v is None or math.isnan(v[0]):
        return "–"
    if math.isnan(v[1]):
        return _fmt(v[0])
    return f"{_fmt(v[0])} [{_fmt(v[1])}, {_fmt(v[2])}]"


def _table(rows, columns):
    heads = ["rule", "sampler", "NFE/img"] + [h for _, h, _ in columns] + ["wall s"]
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = [r["rule"], r["sampler"], str(r["nfe"])] + [_cell(r[k]) for k, _, _ in columns]
        cells.append(f"{r['wall_s']:.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _signed(v):
    return f"{v:+.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:+.1e}"


def _table_text(t, columns):
    heads = {k: h for k, h, _ in columns}
    lines = ["Best (by value) and the rules not resolved from it (paired interval of the "
             "difference contains 0):"]
    for key, b in t["best"].items():
        tied = ", ".join(b["tied"]) if b["tied"] else "none"
        lines.append(f"  - {heads[key]}: **{b['best']}** ({_fmt(b['value'])}); not resolved "
                     f"from it: {tied}.")
    if t["head_to_head"]:
        lines.append("")
        lines.append("Paired differences (a − b, 95 % interval; better/worse only when the "
                     "interval excludes 0):")
        for (a, b) in HEAD_TO_HEAD:
            items = [h for h in t["head_to_head"] if h["a"] == a and h["b"] == b]
            if not items:
                continue
            parts = [f"{heads[h['metric']]} {_signed(h['diff'])} [{_signed(h['low'])}, "
                     f"{_signed(h['high'])}] {h['verdict']}" for h in items]
            lines.append(f"  - {a} − {b}: " + "; ".join(parts) + ".")
    return lines


def _summary(tables, part, columns, what):
    ts = [t for t in tables if t["part"] == part]
    if not ts:
        return []
    heads = {k: h for k, h, _ in columns}
    lines = []
    for a, b in HEAD_TO_HEAD:
        parts = []
        for key, _, _ in columns:
            items = [h for t in ts for h in t["head_to_head"]
                     if h["a"] == a and h["b"] == b and h["metric"] == key]
            if not items:
                continue
            c = {v: sum(h["verdict"] == v for h in items)
                 for v in ("better", "worse", "unresolved", "negligible")}
            diffs = sorted(h["diff"] for h in items)
            parts.append(f"{heads[key]}: better {c['better']}, worse {c['worse']}, unresolved "
                         f"{c['unresolved']}"
                         + (f", negligible {c['negligible']}" if c["negligible"] else "")
                         + f" (median difference {_signed(diffs[len(diffs) // 2])})")
        if parts:
            lines.append(f"- {what}, **{a}** vs **{b}**, over {len(ts)} tables: "
                         + "; ".join(parts) + ".")
    for key, head, _ in columns:
        tally = {}
        for t in ts:
            b = t["best"].get(key)
            if b is None:
                continue
            for r in [b["best"]] + b["tied"]:
                tally[r] = tally.get(r, 0) + 1
        if tally:
            top = sorted(tally.items(), key=lambda kv: -kv[1])[:4]
            lines.append(f"- {what}, {head}: in the best set (best or not resolved from it) "
                         + ", ".join(f"{r} {c}/{len(ts)}" for r, c in top) + ".")
    return lines


def _widths(tables, part, columns):
    """median 95 % interval width of the paired differences, per metric, over the tables (over
    the comparisons whose two rules differ on some unit: identical outputs give width 0)"""
    ts = [t for t in tables if t["part"] == part]
    heads = {k: h for k, h, _ in columns}
    out = []
    for key, _, _ in columns:
        w = [h["high"] - h["low"] for t in ts for h in t["head_to_head"] if h["metric"] == key
             and not math.isnan(h["high"]) and h["high"] > h["low"]]
        if w:
            out.append(f"{heads[key]} {np.median(w):.3f}")
    return ", ".join(out)


HOW_TO_READ = """## How to read these tables

- **Units and pairing.** Seed s gives every rule the same initial noise x_T and the same noise at
  every stochastic step (tests/test_solvers.py::test_noise_shared_across_rules), so sample i of
  seed s is one unit shared by every rule of a table. The bootstrap resamples units with
  replacement ({n_boot} resamples, the same ones for every rule and every metric of a table) and
  recomputes every metric on each resample: set metrics (energy distance, KID, coverage KL) are
  recomputed from the resampled set, not averaged, leaving out pairs of copies of one unit. Units rather than seeds are resampled because
  there are only a few seeds and the samples are independent draws (independent x_T and noise);
  the reference sets (exact target samples, real images) are held fixed.
- **Cells.** `value [low, high]`: the value on all units and the 95 % percentile interval of the
  bootstrap. Between two rules, read the paired difference below each table, not whether the two
  intervals overlap: the pairing removes the noise both rules share, so paired intervals are
  narrower than the overlap suggests.
- **Better/worse.** A rule is better or worse than another on a metric only when the 95 % interval
  of their paired difference excludes 0; otherwise "unresolved" (no resolved difference at this
  n); a resolved difference smaller than 0.001 is "negligible" (e.g. leakage 1e-46 against 0).
  "Best" is the best value together with every rule not resolved from it (or negligibly
  different). The intervals are
  per comparison, not corrected for the many comparisons made: about 1 in 20 unresolved-in-truth
  differences will look resolved.
- **Distances.** The energy distance is the square root of the unbiased (U-statistic) ED² to
  1000 exact target samples (0 when that estimate is negative); KID (the unbiased squared MMD with the cubic polynomial kernel on
  the classifier's features, ×10³) has no small-n bias and can be slightly negative. The Fréchet
  distance (its point value only, in the JSON) is biased upward at small n, roughly in proportion
  to 1/n, and its floor (real vs real at the same n) shows how much: compare Fréchet values only
  at equal n.
- **DNG.** DNG runs DDPM at the stated steps with fixed-small noise (β̃_t, the variance its
  update scores the move with), with the official offset δ = 2e-4 (sized for 1000 steps: about
  1 nat of log p drift over a 20-100-step run instead of 29) and with δ scaled so that the
  drift over the run equals the official run's (`DNG(offset="scaled")`, docs/methods.md §4).
  Its baseline is CFG on that same sampler and step count. The scaled offset matches the total
  drift, not its timing: at 20 steps 99 % of it comes in the last step, too late to guide, so
  there it changes little; at 100 steps (the mixtures) it acts. On the mixtures the official
  protocol runs too: DDPM over all 1000 training steps with fixed-large noise (β_t) as the
  official code, next to CFG on it.
"""


def write_report(out_md, tables, size_name, size, meta):
    """docs/RESULTS.md from the analysed tables (``analyse``) and the run's metadata."""
    cost = meta.get("cost", {})
    head = [
        "# Negative guidance compared: every rule, paired over shared noise", "",
        f"Generated by `{meta.get('command', f'python -m ccfg compare --size {size_name}')}` "
        f"(ccfg {__version__}), {meta.get('date', '?')}, sampling wall time "
        f"{meta.get('sampling_wall_s', 0) / 60:.1f} min"
        + (f" (over {meta['invocations']} invocations, resumed from the cells already run)"
           if meta.get("invocations", 1) > 1 else "")
        + f", this invocation {meta.get('wall_s', 0) / 60:.1f} min, on {meta.get('cpus', os.cpu_count())} CPU cores "
        f"({meta.get('load', 'load not recorded')}). Size `{size_name}`: mixtures "
        f"{size['toy_seeds']} seeds × {size['toy_n']} samples per rule, Fashion-MNIST "
        f"{size['seeds']} seeds × {size['n']} images per rule; every value comes with a 95 % "
        f"paired-bootstrap interval ({size['n_boot']} resamples of the samples).", ""]
    if meta.get("note"):
        head += [meta["note"], ""]
    if cost:
        head += [cost_text(cost), ""]
    text = head + ["## Summary (counted from the intervals below)", ""]
    text += _summary(tables, "toy", TOY_COLUMNS, "exact mixtures")
    text += _summary(tables, "images", IMAGE_COLUMNS, "Fashion-MNIST")
    wt, wi = _widths(tables, "toy", TOY_COLUMNS), _widths(tables, "images", IMAGE_COLUMNS)
    text += ["", "Interval widths at this size (median width of the paired differences' 95 % "
             "intervals, over the comparisons that are not identical on every unit): "
             + "; ".join(x for x in (f"mixtures ({size['toy_seeds'] * size['toy_n']} samples): {wt}"
                                     if wt else "",
                                     f"Fashion-MNIST ({size['seeds'] * size['n']} images): {wi}"
                                     if wi else "") if x)
             + ". Widths shrink as 1/√n: 4× the samples halve them (`--size large`: 4× the "
             "images, 2× the mixture samples).", ""]
    text += [HOW_TO_READ.format(n_boot=size["n_boot"])]
    toy = [t for t in tables if t["part"] == "toy"]
    if toy:
        text += ["## (a) Exact Gaussian mixtures: positive A = {A1, A2, A3}, negative B = {A3, B1}",
                 "", f"{size['toy_seeds']} seeds × {size['toy_n']} samples per rule, DDIM-"
                 f"{size['toy_steps']}; DNG and its CFG baseline DDPM-{size['toy_ddpm_steps']} "
                 "(fixed-small noise) and, for the official protocol, DDPM-1000 (fixed-large). Metrics are "
                 "exact (ccfg.metrics): target = A minus B; energy distance to 1000 exact target "
                 "samples.", ""]
        for t in toy:
            text += [f"### {t['problem']}, w = {t['scale']:g}", "", _table(t["rows"], TOY_COLUMNS),
                     ""] + _table_text(t, TOY_COLUMNS) + [""]
    img = [t for t in tables if t["part"] == "images"]
    if img:
        text += ["## (b) Fashion-MNIST, shipped UNet, scored by the C classifier", "",
                 f"{size['seeds']} seeds × {size['n']} images per rule, DDIM-{size['steps']}; DNG "
                 f"and its CFG baseline DDPM-{size['ddpm_steps']} (fixed-small noise). Target "
                 "precision = classified in P \\ Q; leakage = in Q; off-positive = outside P; "
                 "coverage KL = KL of the class histogram inside P \\ Q from uniform (0 best); "
                 "KID×10³ against every real test image of P \\ Q.",
                 f"Model: {meta.get('model_note', '')}", ""]
        for t in img:
            fl = t["rows"][0].get("frechet_floor", [float("nan")])[0]
            fd = ", ".join(f"{r['rule']} {_fmt(r['frechet'][0], 2)}" for r in t["rows"])
            text += [f"### \"{t['positive']}, not {t['negative']}\", w = {t['scale']:g}", "",
                     _table(t["rows"], IMAGE_COLUMNS), ""] + _table_text(t, IMAGE_COLUMNS) + [
                     "", f"Fréchet distance (point values, biased at n = {t['units']}; floor real "
                     f"vs real at this n {_fmt(fl, 2)}): {fd}.", ""]
    text += ["## Figures", "", "`docs/figures/compare_curves_*.png`: metric vs scale per rule with "
             "the 95 % intervals; `docs/figures/compare_grid_*.png`: samples per rule (seed 0) at "
             "the largest scale.", ""]
    Path(out_md).write_text("\n".join(text), encoding="utf-8")


def cost_text(cost):
    parts = []
    for part, what in (("toy", "mixture"), ("images", "image")):
        c = cost.get(part)
        if not c:
            continue
        parts.append(f"{what} cells: {c['cells']} run in {c['cell_s'] / 60:.1f} min of cell time "
                     f"({c['cell_s'] / max(c['cells'], 1):.1f} s per cell)")
    if "ms_per_image_nfe" in cost:
        parts.append(f"the UNet cost {cost['ms_per_image_nfe']:.1f} ms per image and model "
                     f"evaluation, so the image part of `--size default` needs about "
                     f"{cost['default_image_min']:.0f} min of cell time and `--size large` about "
                     f"{cost['large_image_min']:.0f} min at this load (at the "
                     f"{IDLE_MS_PER_IMAGE_NFE} ms measured on 2 idle cores: "
                     f"{cost['default_image_min'] * IDLE_MS_PER_IMAGE_NFE / cost['ms_per_image_nfe']:.0f}"
                     f" and {cost['large_image_min'] * IDLE_MS_PER_IMAGE_NFE / cost['ms_per_image_nfe']:.0f}"
                     " min)")
    return ("Cost (cell time, summed over the worker processes): " + "; ".join(parts) + "."
            if parts else "")


def _image_work(size):
    """model evaluations × images of a size's image part"""
    total = 0
    for w in size["scales"]:
        for a in arms(w, size["steps"], size["ddpm_steps"]):
            total += nfe_per_step(a["rule"]) * a["steps"] * size["n"] * size["seeds"]
    return total * len(size["pairs"])


def _cost(tables_plan, records):
    i, out = 0, {}
    img_nfe, img_s = 0, 0.0
    for t, entries in tables_plan:
        for a, cells in entries:
            rs = records[i:i + len(cells)]
            i += len(cells)
            c = out.setdefault(t["part"], {"cells": 0, "cell_s": 0.0})
            c["cells"] += len(rs)
            s = sum(r.get("wall_s", 0.0) for r in rs)
            c["cell_s"] += s
            if t["part"] == "images":
                img_s += s
                img_nfe += nfe_per_step(a["rule"]) * a["steps"] * t["n"] * len(rs)
    if img_nfe:
        ms = 1e3 * img_s / img_nfe
        out["ms_per_image_nfe"] = ms
        out["default_image_min"] = ms * _image_work(SIZES["default"]) / 6e4
        out["large_image_min"] = ms * _image_work(SIZES["large"]) / 6e4
    return out


# ---------------------------------------------------------------------- figures
def plot(figdir, tables, grids, size):
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
    for t in tables:
        cols = TOY_COLUMNS if t["part"] == "toy" else IMAGE_COLUMNS
        groups.setdefault((t["problem"], t["positive"], t["negative"], tuple(cols)), []).append(t)
    for (prob, pos, neg, cols), ts in groups.items():
        fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.6))
        labels = list(dict.fromkeys(r["rule"] for t in ts for r in t["rows"]))
        for ax, (key, head, _) in zip(np.atleast_1d(axes), cols):
            for li, label in enumerate(labels):
                pts = sorted((t["scale"], r[key]) for t in ts for r in t["rows"]
                             if r["rule"] == label)
                xs = [p[0] * (1 + 0.01 * (li - len(labels) / 2)) for p in pts]
                ms = np.array([p[1][0] for p in pts])
                err = np.array([[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]])
                # (a value can lie outside its percentile interval: a biased statistic)
                ax.errorbar(xs, ms, yerr=np.clip(np.nan_to_num(err), 0, None), marker="o", ms=3, capsize=2,
                            label=label, lw=1,
                            ls="--" if label.startswith("CCFG") else
                            (":" if "DNG" in label else "-"))
            ax.set_title(head, fontsize=9)
            ax.set_xlabel("scale w")
        np.atleast_1d(axes)[0].legend(fontsize=5)
        fig.suptitle(f"{prob}: {pos}, not {neg} (95 % paired-bootstrap intervals)", fontsize=10)
        fig.tight_layout()
        name = figdir / f"compare_curves_{prob}_{pos}_not_{neg}.png"
        fig.savefig(name, dpi=90)
        plt.close(fig)
        files.append(name)
    for (pos, neg), panels in grids.items():
        ncol = int(math.ceil(len(panels) / 2))
        fig, axes = plt.subplots(2, ncol, figsize=(2.0 * ncol, 4.8))
        axes = np.atleast_1d(axes).ravel()
        for ax in axes[len(panels):]:
            ax.axis("off")
        for ax, (label, (sampler, x)) in zip(axes, panels.items()):
            k = min(len(x), 16)
            cols = int(math.ceil(math.sqrt(k)))
            rows_ = int(math.ceil(k / cols))
            canvas = -np.ones((rows_ * 32, cols * 32), np.float32)
            for i in range(k):
                r, c = divmod(i, cols)
                canvas[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] = x[i, 0]
            ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1)
            ax.set_title(f"{label}\n{sampler}", fontsize=6)
            ax.axis("off")
        fig.suptitle(f"{pos}, not {neg}, w = {max(size['scales']):g}, seed 0 (the same noise "
                     "for every rule)", fontsize=8)
        fig.tight_layout()
        name = figdir / f"compare_grid_{pos}_not_{neg}.png"
        fig.savefig(name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def _grids(plan, records, work, size):
    i, out = 0, {}
    for t, entries in plan:
        for a, cells in entries:
            rs = records[i:i + len(cells)]
            i += len(cells)
            if t["part"] == "images" and t["scale"] == max(size["scales"]):
                x = np.clip(np.load(Path(work) / "samples" / (rs[0]["samples"] + ".npy")), -1, 1)
                out.setdefault((t["positive"], t["negative"]), {})[a["label"]] = (
                    f"{a['sampler']}-{a['steps']}", x)
    return out


def _sha256(folder):
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
    new sampling."""
    src = Path(out_md).with_suffix(".json")
    if not src.is_file():
        print(f"compare --render: {src} not found; run compare first", file=sys.stderr)
        return 2
    with open(src, encoding="utf-8") as f:
        saved = json.load(f)
    if "tables" not in saved:
        print(f"compare --render: {src} was written by an older ccfg (no paired tables); run "
              "compare again", file=sys.stderr)
        return 2
    write_report(out_md, saved["tables"], saved["size"], saved["size_params"], saved["meta"])
    print(f"compare: {out_md} rewritten from {src}")
    return 0


def _parse_pairs(text):
    out = []
    for item in text.split(","):
        pos, sep, neg = item.partition(":")
        if not sep or not pos.strip() or not neg.strip():
            raise SystemExit(f"compare: --pairs: expected POSITIVE:NEGATIVE[,...], got {item!r}")
        out.append((pos.strip(), neg.strip()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ccfg compare",
                                 description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--size", choices=list(SIZES), default="default",
                    help="tiny: seconds (tests); quick: about 15 min on 2 idle cores; default: "
                         "about 40 min; large: 4x the images per rule, a third scale (about "
                         "3.5 h)")
    ap.add_argument("--quick", action="store_const", const="quick", dest="size",
                    help="same as --size quick")
    ap.add_argument("--model", default=None, help="Fashion-MNIST pipeline folder (default: the "
                    "shipped ccfg/weights/fashion-mnist)")
    ap.add_argument("--out", default="ccfg-compare/RESULTS.md",
                    help="the report (default ccfg-compare/RESULTS.md; its numbers go to the "
                         ".json beside it). The committed report is docs/RESULTS.md: pass "
                         "--out docs/RESULTS.md --figures docs/figures to regenerate it.")
    ap.add_argument("--figures", default="ccfg-compare/figures",
                    help="folder of the figures (default ccfg-compare/figures)")
    ap.add_argument("--work", default=None,
                    help="folder of the cells file and the samples (default: ccfg-compare/work-"
                         "SIZE); a run resumes from the cells already there")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: ccfg.sweep's, both cores); 1 runs in this "
                         "process")
    ap.add_argument("--pairs", default=None, help="only these Fashion-MNIST pairs, e.g. "
                    "footwear:sneaker,top:footwear")
    ap.add_argument("--scales", default=None, help="only these Fashion-MNIST scales, e.g. 4 or "
                    "2,4")
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
    size = dict(SIZES[args.size])
    if args.pairs:
        size["pairs"] = _parse_pairs(args.pairs)
    if args.scales:
        try:
            size["scales"] = [float(v) for v in args.scales.split(",")]
        except ValueError:
            raise SystemExit(f"compare: --scales: expected numbers separated by commas, got "
                             f"{args.scales!r}") from None
    full = SIZES[args.size]
    restricted = (size["pairs"] != full["pairs"] or size["scales"] != full["scales"])
    t0 = time.perf_counter()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "command": "python -m ccfg compare " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])}
    try:
        meta["load"] = "load average at the start " + " ".join(
            f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        pass
    if restricted:
        meta["note"] = (
            f"**Smaller than `--size {args.size}`:** the image tables are restricted (--pairs/"
            f"--scales) to {', '.join(f'{p}/{q}' for p, q in size['pairs'])} at w = "
            f"{', '.join(f'{w:g}' for w in size['scales'])}; the full size has "
            f"{', '.join(f'{p}/{q}' for p, q in full['pairs'])} at w = "
            f"{', '.join(f'{w:g}' for w in full['scales'])}. The command without --pairs/--scales "
            "runs them all (resuming from these cells).")
    parts = [] if args.no_toy else ["toy"]
    model_name, real = "fashion-mnist", None
    if not args.no_images:
        model, path = load_fashion_model(args.model)
        if model is None:
            print(f"compare: no Fashion-MNIST model at {path}; skipping the image part",
                  file=sys.stderr)
        else:
            parts.append("images")
            if args.model is not None:
                model_name = model
            info = os.path.join(path, "training.json")
            if os.path.isfile(info):
                with open(info) as f:
                    tr = json.load(f)
                minutes = tr.get("wall_seconds", 0) / 60
                meta["model_note"] = (f"{tr.get('steps_done', '?')} of {tr.get('steps', '?')} "
                                      f"planned training steps ({minutes:.0f} min), weights "
                                      f"sha256 {_sha256(path)[:12]}")
    work = args.work or os.path.join("ccfg-compare", f"work-{args.size}")
    plan = _plan(size, parts, model_name)
    executor = "serial" if (args.workers == 1 or not isinstance(model_name, str)) else None
    os.makedirs(work, exist_ok=True)
    n_before = len(_sweep_read(os.path.join(work, "cells.jsonl")))
    try:
        records = run_cells(plan, work, args.device, executor, args.workers, args.quiet)
    finally:
        # a run resumed from cells of earlier (or interrupted) invocations: its report states
        # the sampling time of all of them (work/invocations.jsonl), not only this one's
        with open(os.path.join(work, "invocations.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"date": meta["date"],
                                "sampling_wall_s": time.perf_counter() - t0,
                                "cells_run": len(_sweep_read(os.path.join(work, "cells.jsonl")))
                                - n_before, "load": meta.get("load")}) + "\n")
    inv = _sweep_read(os.path.join(work, "invocations.jsonl"))
    meta["sampling_wall_s"] = sum(r.get("sampling_wall_s", 0.0) for r in inv)
    meta["invocations"] = len(inv)
    tables = analyse(plan, records, work, n_boot=size["n_boot"], real=real, quiet=args.quiet)
    meta["cost"] = _cost(plan, records)
    meta["wall_s"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, tables, args.size, size, meta)
    files = [] if args.no_plot else plot(args.figures, tables, _grids(plan, records, work, size),
                                         size)
    with open(Path(args.out).with_suffix(".json"), "w") as f:
        json.dump(dict(size=args.size, size_params=size, meta=meta, tables=tables), f, indent=1,
                  default=float)
    print(f"compare: {args.out} ({meta['wall_s'] / 60:.1f} min), {len(files)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
