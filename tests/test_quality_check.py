"""tools/check_fashion_mnist.py (the issue-5 quality gate) on a tiny random UNet: the bookkeeping,
not the shipped model's quality (that is measured by running the tool, docs/training.md)."""
import json
import os
import sys

import numpy as np
import pytest

import ccfg.data as data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_model(tmp_path, save_tiny_fashion_unet):
    return save_tiny_fashion_unet(tmp_path / "fm")


def _check():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import check_fashion_mnist
    finally:
        sys.path.pop(0)
    return check_fashion_mnist


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_gate_numbers_follow_the_histograms(tiny_model, tmp_path, sampler):
    check = _check()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "training.md").write_text("before\n<!-- check:begin -->\nold\n<!-- check:end -->\nafter\n")
    res = check.main(["--n", "3", "--steps", "2", "--model", str(tiny_model), "--docs", str(docs),
                      "--sampler", sampler])
    per = res["per_concept"]
    assert set(per) == set(data.concepts())
    inside = {}
    for name, r in per.items():
        hist = np.array(r["histogram"])
        assert hist.sum() == 3 and hist.shape == (10,)
        inside[name] = hist[list(data.concept_classes(name))].sum() / 3
        assert r["inside"] == pytest.approx(inside[name])
    assert res["single_class_mean"] == pytest.approx(np.mean([inside[c] for c in data.CLASSES]))
    assert res["group_min"] == pytest.approx(min(inside[g] for g in data.GROUPS))
    assert res["group_pass"] == (res["group_min"] >= 0.95)
    assert res["sampler"] == sampler
    assert json.loads((docs / "quality_check.json").read_text())["per_concept"] == per
    text = (docs / "training.md").read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert ("DDIM (eta 0) 2 steps" if sampler == "ddim" else "DDPM 2 steps") in text


def test_torch_engine_refuses_other_samplers(tiny_model, tmp_path):
    with pytest.raises(SystemExit, match="DDIM only"):
        _check().main(["--engine", "torch", "--sampler", "ddpm", "--model", str(tiny_model),
                       "--no-docs"])
