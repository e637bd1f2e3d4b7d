"""ccfg.compare (python -m ccfg compare): the paired analysis against direct computations, its
verdicts against their intervals, and tiny end-to-end runs through ccfg.sweep."""
import json
import math

import numpy as np
import pytest

import ccfg
import ccfg.data
from ccfg import compare
from ccfg import metrics as M
from ccfg.sweep import read_records

TINY = ["--size", "tiny", "--no-plot", "--quiet", "--workers", "1"]


# ---------------------------------------------------------------------- the rule set
def test_arms_every_rule_and_dng_protocol():
    arms = compare.arms(3.0, steps=20, ddpm_steps=40, official_steps=1000)
    labels = [a["label"] for a in arms]
    assert len(set(labels)) == len(labels)
    for want in ("CFG (positive only)", "NegativePrompt", "NegatedCFG", "PerpNeg", "SLD weak",
                 "SLD max", compare.CCFG_OFFICIAL, "CCFG τ=0.2 mean", "CFG on DNG's sampler",
                 "DNG (official δ)", "DNG (scaled δ)", "CFG on DNG's official sampler",
                 "DNG (official protocol)"):
        assert want in labels, want
    by = {a["label"]: a for a in arms}
    # DNG's baseline is CFG on the same sampler, step count and noise
    for dng, base in (("DNG (official δ)", "CFG on DNG's sampler"),
                      ("DNG (scaled δ)", "CFG on DNG's sampler"),
                      ("DNG (official protocol)", "CFG on DNG's official sampler")):
        assert (by[dng]["sampler"], by[dng]["steps"], by[dng]["noise_variance"]) == \
            (by[base]["sampler"], by[base]["steps"], by[base]["noise_variance"])
        assert by[dng]["sampler"] == "ddpm" and isinstance(by[base]["rule"], ccfg.CFG)
    assert by["DNG (official protocol)"]["steps"] == 1000
    assert by["DNG (official protocol)"]["noise_variance"] == "fixed_large"
    assert by["DNG (scaled δ)"]["rule"].offset == "scaled"
    assert by["DNG (official δ)"]["rule"].offset == 2e-4
    assert "DNG (official protocol)" not in [a["label"] for a in compare.arms(3.0)]
    assert compare.nfe_per_step(ccfg.CFG(3)) == 2 and compare.nfe_per_step(ccfg.CCFG(3)) == 3


# ---------------------------------------------------------------------- analysis pieces
def test_pair_mean_leaves_out_copies_of_one_unit():
    rng = np.random.default_rng(0)
    n = 6
    mat = rng.normal(size=(n, n))
    mat = mat + mat.T
    counts = M.bootstrap_counts(n, 20, seed=1)
    got = compare._pair_mean(counts, mat)
    for c, g in zip(counts, got):
        units = np.repeat(np.arange(n), c)          # the resample, position by position
        vals = [mat[units[p], units[q]] for p in range(n) for q in range(n)
                if units[p] != units[q]]
        assert g == pytest.approx(np.mean(vals), rel=1e-12)
    full = compare._pair_mean(np.ones((1, n)), mat)[0]
    assert full == pytest.approx((mat.sum() - np.trace(mat)) / (n * (n - 1)))


def test_toy_scorer_matches_direct_metrics():
    model = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(model, "A", "B", ccfg.CCFG(2.0), steps=10, n=60, progress=False,
                    device="cpu").astype(np.float64)
    scorer = compare._ToyScorer(model, "A", "B", n_ref=300)
    s = scorer.score(x, M.bootstrap_counts(60, 50))
    assert s["target_precision"][0] == pytest.approx(M.target_precision(model, x, "A", "B"))
    assert s["negative_leakage"][0] == pytest.approx(M.negative_leakage(model, x, "B"))
    assert s["off_support_rate"][0] == pytest.approx(M.off_support_rate(model, x))
    # unbiased energy distance, written out: 2 E|X-Y| - E_{i!=j}|X-X'| - E_{i!=j}|Y-Y'|
    ref = scorer.ref
    dxy = np.linalg.norm(x[:, None] - ref[None], axis=-1).mean()
    dxx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    dyy = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    e2 = 2 * dxy - dxx.sum() / (60 * 59) - dyy.sum() / (300 * 299)
    assert s["target_distance"][0] == pytest.approx(math.sqrt(max(e2, 0.0)), rel=1e-9)
    assert s["target_precision"][1].shape == (50,)


def test_image_scorer_kid_is_kernel_distance():
    rng = np.random.default_rng(2)
    x = np.clip(rng.normal(scale=0.6, size=(12, 1, 32, 32)), -1, 1)
    feats_real = rng.normal(size=(80, 128)).astype(np.float32)
    labels_real = np.array([5, 7, 9, 6] * 20)                 # sandal, sneaker, boot, shirt
    sc = compare._ImageScorer("footwear", "sneaker", real=(feats_real, labels_real))
    s = sc.score(x, M.bootstrap_counts(12, 30))
    feats = M.features(x.astype(np.float32)).astype(np.float64)
    real_t = feats_real[np.isin(labels_real, [5, 9])].astype(np.float64)
    assert s["kid"][0] == pytest.approx(1e3 * M.kernel_distance(feats, real_t), rel=1e-9)
    labels = M.classify(x.astype(np.float32))
    rates = M.concept_rates(labels, "footwear", "sneaker")
    for k, v in rates.items():
        assert s[k][0] == pytest.approx(v)
    kl = M.coverage_kl(labels, "footwear", "sneaker")
    assert (math.isnan(kl) and math.isnan(s["coverage_kl"][0])) or \
        s["coverage_kl"][0] == pytest.approx(kl)


def _rows_boots(values):
    """rows and bootstrap arrays from {label: (value, boot array)} for one metric 'm'"""
    rows = [dict(rule=k, m=[v, 0.0, 0.0]) for k, (v, _) in values.items()]
    boots = {k: {"m": np.asarray(b, float)} for k, (_, b) in values.items()}
    return rows, boots


def test_best_set_and_verdicts_follow_the_intervals():
    cols = [("m", "metric", False)]                          # lower is better
    rng = np.random.default_rng(0)
    noise = rng.normal(size=1000)
    rows, boots = _rows_boots({
        compare.CCFG_OFFICIAL: (1.0, 1.0 + 0.1 * noise),
        "NegatedCFG": (1.5, 1.5 + 0.1 * noise),                # shares the noise: resolved
        "NegativePrompt": (1.05, 1.05 + 0.1 * rng.normal(size=1000)),  # independent: not
        "PerpNeg": (1.0004, 1.0004 + 0.1 * noise)})            # resolved but negligible
    best = compare._best(rows, boots, cols, 0.95)["m"]
    assert best["best"] == compare.CCFG_OFFICIAL
    assert set(best["tied"]) == {"NegativePrompt", "PerpNeg"}
    h = {x["b"]: x for x in compare._pairs(rows, boots, cols, 0.95)}
    assert h["NegatedCFG"]["verdict"] == "better" and h["NegatedCFG"]["high"] < 0
    assert h["NegativePrompt"]["verdict"] == "unresolved"
    assert h["NegativePrompt"]["low"] < 0 < h["NegativePrompt"]["high"]


# ---------------------------------------------------------------------- end to end
def test_toy_end_to_end_through_sweep(tmp_path):
    out, work = tmp_path / "R.md", tmp_path / "work"
    assert compare.main(TINY + ["--no-images", "--out", str(out), "--work", str(work)]) == 0
    text = out.read_text()
    assert "How to read these tables" in text and "toy_2d, w = 3" in text
    assert "high_dim" in text and "DNG (scaled δ) − CFG on DNG's sampler" in text
    data = json.loads(out.with_suffix(".json").read_text())
    n_arms = len(compare.arms(3.0))
    assert len(data["tables"]) == 2 and all(len(t["rows"]) == n_arms for t in data["tables"])
    for t in data["tables"]:
        assert t["units"] == 2 * 40
        for r in t["rows"]:
            for k, _, _ in compare.TOY_COLUMNS:
                v, lo, hi = r[k]
                assert lo <= hi
        for h in t["head_to_head"]:       # the verdict is what the interval says
            excl = h["low"] > 0 or h["high"] < 0
            assert (h["verdict"] in ("better", "worse")) == (
                excl and abs(h["diff"]) >= compare.MIN_EFFECT)
    # the cells went through ccfg.sweep: one record per (table, rule, seed), samples on disk
    recs = read_records(work / "cells.jsonl")
    assert len(recs) == 2 * n_arms * 2
    assert all((work / "samples" / (r["samples"] + ".npy")).is_file() for r in recs)
    # a second invocation resumes: no cell is run again, the same tables come out
    assert compare.main(TINY + ["--no-images", "--out", str(out), "--work", str(work)]) == 0
    inv = [json.loads(line) for line in (work / "invocations.jsonl").read_text().splitlines()]
    assert [i["cells_run"] for i in inv] == [len(recs), 0]
    again = json.loads(out.with_suffix(".json").read_text())
    strip = lambda ts: [[{k: v for k, v in r.items() if k != "wall_s"} for r in t["rows"]]  # noqa
                        for t in ts]
    assert strip(again["tables"]) == strip(data["tables"])
    assert "over 2 invocations" in out.read_text()


def test_render_rewrites_the_report_from_its_json(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert compare.main(TINY + ["--no-images", "--out", str(out), "--work",
                                str(tmp_path / "w")]) == 0
    first = out.read_text()
    out.write_text("stale")
    assert compare.main(["--render", "--out", str(out)]) == 0
    assert out.read_text() == first
    assert compare.main(["--render", "--out", str(tmp_path / "absent.md")]) == 2
    assert "run compare first" in capsys.readouterr().err


def test_image_part_with_a_tiny_random_unet(tmp_path, save_tiny_fashion_unet):
    diffusers = pytest.importorskip("diffusers")
    try:
        xr, yr = ccfg.data.fashion_mnist("test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    real = (ccfg.metrics.features(xr[:600]), yr[:600])      # a small reference keeps this fast
    save_tiny_fashion_unet(tmp_path)
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    model, _ = compare.load_fashion_model(str(tmp_path))
    size = dict(compare.SIZES["tiny"], pairs=[("footwear", "sneaker")])
    plan = compare._plan(size, ["images"], model)
    records = compare.run_cells(plan, tmp_path / "work", "cpu", "serial", quiet=True)
    tables = compare.analyse(plan, records, tmp_path / "work", n_boot=50, real=real, quiet=True)
    t, = tables
    assert len(t["rows"]) == len(compare.arms(3.0)) and t["units"] == 4
    for r in t["rows"]:
        assert 0.0 <= r["target_precision"][0] <= 1.0 and r["frechet"][0] >= 0
    grids = compare._grids(plan, records, tmp_path / "work", size)
    sampler, x = grids[("footwear", "sneaker")]["NegatedCFG"]
    assert x.shape == (2, 1, 32, 32) and np.all(np.abs(x) <= 1) and sampler == "ddim-2"
    compare.write_report(tmp_path / "R.md", tables, "tiny", size, {"date": "-", "wall_s": 1.0})
    assert "\"footwear, not sneaker\"" in (tmp_path / "R.md").read_text()


def test_missing_model_is_skipped(tmp_path, capsys):
    rc = compare.main(TINY + ["--no-toy", "--model", str(tmp_path / "absent"), "--out",
                              str(tmp_path / "R.md"), "--work", str(tmp_path / "w")])
    assert rc == 0
    assert "skipping the image part" in capsys.readouterr().err


def test_compare_default_out_is_not_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert compare.main(TINY + ["--no-images", "--device", "cpu"]) == 0
    assert (tmp_path / "ccfg-compare" / "RESULTS.md").is_file()
    assert (tmp_path / "ccfg-compare" / "work-tiny" / "cells.jsonl").is_file()
    assert not (tmp_path / "docs").exists()


def test_bad_pairs_argument():
    with pytest.raises(SystemExit, match="pairs"):
        compare.main(TINY + ["--pairs", "footwear"])


def test_demo_fashion_part_with_a_tiny_random_unet(tmp_path, monkeypatch, save_tiny_fashion_unet):
    try:
        xr, yr = ccfg.data.fashion_mnist("test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    real = (ccfg.metrics.features(xr[:600]), yr[:600])
    monkeypatch.setattr(ccfg.metrics, "real_features", lambda *a, **k: real)
    save_tiny_fashion_unet(tmp_path / "m")
    from ccfg.__main__ import _fashion_runs, main
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--n", "50", "--steps", "3", "--ddpm-steps", "3",
               "--tau-points", "2", "--quiet", "--no-plot", "--fashion-model", str(tmp_path / "m"),
               "--fashion-n", "2", "--fashion-steps", "2"])
    assert rc == 0
    text = (out / "fashion.md").read_text()
    assert "footwear, not sneaker" in text
    # the header, the unguided panel and one row per rule
    runs = _fashion_runs(3.0, 2, 2)
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + len(runs)
    assert "| no guidance | ddim-2 |" in text
    # DNG runs DDPM with its offset scaled to the run, next to CFG on the same sampler
    assert "| DNG (scaled δ) | ddpm-2 |" in text and "| CFG on DNG's sampler | ddpm-2 |" in text
    from ccfg.__main__ import _FASHION_LEGEND
    assert all(f"{name}:" in _FASHION_LEGEND for name in ("target", "leak", "FD"))


def test_demo_without_fashion_weights_skips(tmp_path, capsys):
    from ccfg.__main__ import main
    rc = main(["demo", "--out", str(tmp_path / "d"), "--n", "50", "--steps", "3", "--ddpm-steps",
               "3", "--tau-points", "2", "--quiet", "--no-plot", "--fashion-model",
               str(tmp_path / "absent")])
    assert rc == 0
    assert "skipping its part of the demo" in capsys.readouterr().err
    assert not (tmp_path / "d" / "fashion.md").exists()
