"""ccfg.compare (python -m ccfg compare): tiny runs only."""
import json
import math

import numpy as np
import pytest

import ccfg
import ccfg.data
from ccfg import compare


def _row(rule, **metrics):
    r = dict(rule=rule, sampler="ddim-2", nfe=6, wall_s=0.1)
    r.update({k: v for k, v in metrics.items()})
    return r


def test_winners_text_follows_numbers():
    cols = [("target_precision", "precision", True), ("frechet", "FD", False)]
    rows = [_row("NegatedCFG", target_precision=(0.9, 0.01), frechet=(10.0, 0.5)),
            _row("CCFG τ=0.2 sum (official)", target_precision=(0.8, 0.01), frechet=(9.8, 0.5)),
            _row("PerpNeg", target_precision=(0.7, 0.01), frechet=(float("nan"), float("nan")))]
    lines = compare._winners(rows, cols)
    assert "best **NegatedCFG**" in lines[0] and "CCFG loses" in lines[0]
    assert "best **CCFG τ=0.2 sum (official)**" in lines[1] and "CCFG is best" in lines[1]
    rows[0]["frechet"] = (9.9, 0.5)              # CCFG still best
    rows[1]["frechet"] = (10.2, 0.5)             # now behind NegatedCFG by less than one sd
    assert "within one sd" in compare._winners(rows, cols)[1]


def test_head_to_head_counts_follow_numbers():
    cols = [("target_precision", "precision", True), ("frechet", "FD", False)]
    a, b = "CCFG τ=0.2 sum (official)", "NegatedCFG"
    groups = [[_row(a, target_precision=(0.9, 0.01), frechet=(5.0, 0.5)),      # better, better
               _row(b, target_precision=(0.5, 0.01), frechet=(9.0, 0.5))],
              [_row(a, target_precision=(0.5, 0.01), frechet=(9.4, 0.5)),      # worse, within sd
               _row(b, target_precision=(0.9, 0.01), frechet=(9.0, 0.2))],
              [_row(a, target_precision=(1.0, 0.0), frechet=(float("nan"), 0.0)),  # tie, skipped
               _row(b, target_precision=(1.0, 0.0), frechet=(3.0, 0.1))],
              [_row("PerpNeg", target_precision=(1.0, 0.0), frechet=(1.0, 0.1))]]  # no pair
    line, = compare._head_to_head(groups, cols, "toy")
    assert "precision 1/1/1" in line and "FD 1/1/0" in line
    assert compare._head_to_head(groups[3:], cols, "toy") == []


def test_render_rewrites_the_report_from_its_json(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert compare.main(["--size", "tiny", "--no-images", "--no-plot", "--quiet",
                         "--out", str(out)]) == 0
    first = out.read_text()
    assert "CCFG τ=0.2 sum (official) vs NegatedCFG" in first
    out.write_text("stale")
    assert compare.main(["--render", "--out", str(out)]) == 0
    assert out.read_text() == first
    assert compare.main(["--render", "--out", str(tmp_path / "absent.md")]) == 2
    assert "run compare first" in capsys.readouterr().err


def test_every_rule_and_nfe():
    labels = [r[0] for r in compare.rules(3.0)]
    for want in ("CFG (positive only)", "NegativePrompt", "NegatedCFG", "PerpNeg", "SLD weak",
                 "SLD max", "DNG (ddpm)", "CCFG τ=0.2 sum (official)", "CCFG τ=0.2 mean"):
        assert want in labels
    dng = [r for r in compare.rules(3.0) if r[0].startswith("DNG")][0]
    assert dng[2] == "ddpm"                      # DNG needs a stochastic sampler
    assert compare.nfe_per_step(ccfg.CFG(3)) == 2
    assert compare.nfe_per_step(ccfg.NegativePrompt(3)) == 2
    assert compare.nfe_per_step(ccfg.CCFG(3)) == 3
    assert compare._stats([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_toy_part_end_to_end(tmp_path):
    out = tmp_path / "RESULTS.md"
    rc = compare.main(["--size", "tiny", "--no-images", "--no-plot", "--quiet", "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert "toy_2d, w = 3" in text and "high_dim" in text and "Who wins" in text
    data = json.loads(out.with_suffix(".json").read_text())
    rows = data["toy"]
    assert len(rows) == 2 * len(compare.rules(3.0))
    # CFG on the positive alone ignores the negative; NegatedCFG must differ from it
    cfg = next(r for r in rows if r["rule"].startswith("CFG") and r["problem"] == "toy_2d")
    assert cfg["seeds"] == 2 and cfg["nfe"] == 2 * compare.SIZES["tiny"]["toy_steps"]


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
    rows, grids = compare.run_images(size, model, quiet=True, real=real)
    assert len(rows) == len(compare.rules(3.0))
    for r in rows:
        assert 0.0 <= r["target_precision"][0] <= 1.0 and r["frechet"][0] >= 0
        assert r["frechet_floor"][0] >= 0
    x = grids[("footwear", "sneaker", 3.0, "NegatedCFG")]
    assert x.shape == (4, 1, 32, 32) and np.all(np.abs(x) <= 1)
    compare.write_report(tmp_path / "R.md", [], rows, "tiny", size, {"date": "-", "wall_s": 1.0})
    assert "\"footwear, not sneaker\"" in (tmp_path / "R.md").read_text()


def test_missing_model_is_skipped(tmp_path, capsys):
    rc = compare.main(["--size", "tiny", "--no-toy", "--no-plot", "--quiet", "--model",
                       str(tmp_path / "absent"), "--out", str(tmp_path / "R.md")])
    assert rc == 0
    assert "skipping the image part" in capsys.readouterr().err


def test_demo_fashion_part_with_a_tiny_random_unet(tmp_path, monkeypatch, save_tiny_fashion_unet):
    try:
        xr, yr = ccfg.data.fashion_mnist("test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    real = (ccfg.metrics.features(xr[:600]), yr[:600])
    monkeypatch.setattr(ccfg.metrics, "real_features", lambda *a, **k: real)
    save_tiny_fashion_unet(tmp_path / "m")
    from ccfg.__main__ import main
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--n", "50", "--steps", "3", "--ddpm-steps", "3",
               "--tau-points", "2", "--quiet", "--no-plot", "--fashion-model", str(tmp_path / "m"),
               "--fashion-n", "2", "--fashion-steps", "2"])
    assert rc == 0
    text = (out / "fashion.md").read_text()
    assert "footwear, not sneaker" in text
    # the header, the unguided panel and one row per rule
    assert sum(line.startswith("| ") for line in text.splitlines()) == 2 + len(compare.rules(3.0))
    assert "| no guidance | ddim-2 |" in text
    # the figure's legend defines every metric shown under its panels
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


def test_compare_default_out_is_not_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--size", "tiny", "--no-images", "--no-plot", "--quiet",
                         "--device", "cpu"]) == 0
    assert (tmp_path / "ccfg-compare" / "RESULTS.md").is_file()
    assert not (tmp_path / "docs").exists()
