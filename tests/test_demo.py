"""The command line (python -m ccfg demo|sample|sweep|info) and ccfg.plot."""
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import ccfg
from ccfg import plot
from ccfg.__main__ import _demo_runs, main

ROOT = Path(__file__).resolve().parent.parent


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--n", "200", "--steps", "10", "--ddpm-steps", "20",
               "--tau-points", "3", "--quiet", "--no-fashion"])  # fashion part: test_compare.py
    assert rc == 0
    for name in ("metrics.md", "metrics.json", "samples.npz"):
        assert (out / name).is_file(), name
    if _has_matplotlib():
        for name in ("samples.png", "tau_sweep.png"):
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    md = (out / "metrics.md").read_text(encoding="utf-8")
    rows = _table_rows(md)
    labels = [label for label, *_ in _demo_runs(3.0, 10.0, 10, 20)]
    assert len(labels) == 11
    for label in labels:       # one row per rule, with its metrics filled in
        mine = [r for r in rows if r.startswith(f"| {label} |")]
        assert len(mine) == 1, label
        cells = [c.strip() for c in mine[0].strip("|").split("|")]
        assert all(c for c in cells[:8]), mine[0]
        float(cells[3]), float(cells[6])                  # leakage, distance are numbers
    # the τ sweep: 3 values plus the two limits
    assert sum(r.startswith("| NegatedCFG (τ→0 limit)") for r in rows) == 1
    sweep = [r for r in rows if r.split("|")[1].strip().replace(".", "").replace("e-", "")
             .replace("e+", "").isdigit()]
    assert len(sweep) == 3
    data = np.load(out / "samples.npz")
    assert data["CFG"].shape == (200, 2) and data["CFG"].dtype == np.float32
    # every rule runs from the same seed: the stored samples are ccfg.sample's, bit for bit
    model = ccfg.models.GaussianMixture.toy_2d()
    for label, rule, sampler, steps in _demo_runs(3.0, 10.0, 10, 20):
        if label in ("no guidance", "NegatedCFG", "DNG (ddpm, scaled δ)", "CCFG τ=0.2 (official)"):
            ref = ccfg.sample(model, "A", "B", rule, sampler=sampler, steps=steps, n=200,
                              seed=0, progress=False)
            np.testing.assert_array_equal(data[label], ref, err_msg=label)
    printed = capsys.readouterr().out
    assert str(out / "samples.png") in printed or not _has_matplotlib()
    assert str(out / "metrics.md") in printed


def test_info_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "ccfg", "info"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert ccfg.__version__ in res.stdout
    assert "cpu" in res.stdout


def test_sample_writes_array(tmp_path, capsys):
    path = tmp_path / "x.npy"
    rc = main(["sample", "--model", "toy2d", "--positive", "A", "--negative", "B", "--guidance",
               "ccfg", "--scale", "5", "--n", "123", "--steps", "10", "--out", str(path), "-q"])
    assert rc == 0
    x = np.load(path)
    assert x.shape == (123, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))
    ref = ccfg.sample(ccfg.models.GaussianMixture.toy_2d(), "A", "B", ccfg.CCFG(scale=5.0),
                      steps=10, n=123, seed=0, progress=False)
    np.testing.assert_array_equal(x, ref)
    assert "negative_leakage" in capsys.readouterr().out


def test_sample_rule_parameters(tmp_path):
    path = tmp_path / "y.npy"
    main(["sample", "--positive", "A", "--negative", "B", "--guidance", "sld", "--scale", "3",
          "--param", "preset='strong'", "--n", "16", "--steps", "8", "--out", str(path), "-q"])
    ref = ccfg.sample(ccfg.models.GaussianMixture.toy_2d(), "A", "B",
                      ccfg.SLD(scale=3.0, preset="strong"), steps=8, n=16, progress=False)
    np.testing.assert_array_equal(np.load(path), ref)
    with pytest.raises(SystemExit):
        main(["sample", "--guidance", "nonsense", "--out", str(path), "-q"])
    with pytest.raises(SystemExit):
        main(["sample", "--model", "nonsense", "--out", str(path), "-q"])


def test_sweep(tmp_path):
    out = tmp_path / "sw"
    rc = main(["sweep", "--positive", "A", "--negative", "B", "--guidance", "ccfg", "--scale",
               "3", "--param", "tau", "--values", "0.01,10", "--n", "100", "--steps", "8",
               "--out", str(out), "-q", "--no-plot"])
    assert rc == 0
    rows = _table_rows((out / "sweep.md").read_text(encoding="utf-8"))
    assert len(rows) == 1 + 2                # header, two values


def test_image_grid(tmp_path):
    imgs = np.linspace(-1.5, 1.5, 5 * 3 * 4 * 6, dtype=np.float32).reshape(5, 3, 4, 6)
    g = plot.image_grid(imgs, tmp_path / "g.png", nrow=2, padding=1)
    assert g.shape == (3 * 5 + 1, 2 * 7 + 1, 3) and g.dtype == np.uint8
    assert g.min() == 0 and g.max() == 255
    data = (tmp_path / "g.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # decode our own PNG (filter 0 rows) and compare
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(g.shape[0], -1)
    np.testing.assert_array_equal(raw[:, 1:].reshape(g.shape), g)
    g1 = plot.image_grid(np.zeros((3, 8, 8)), None, nrow=8, padding=0)
    assert g1.shape == (8, 24) and np.all(g1 == 128)
    with pytest.raises(ValueError):
        plot.image_grid(np.zeros((2, 4, 8, 8)))


def test_plot_needs_matplotlib_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot.metric_curve([1, 2], {"a": [1, 2]}, "x", "y")


@pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib not installed")
def test_plots_return_figures(tmp_path):
    m = ccfg.models.GaussianMixture.toy_2d()
    fig = plot.scatter_2d(m, {"data": m.sample_data(50), "far": np.full((3, 2), 40.0)},
                          target=["A1", "A2"], titles={"data": "exact"})
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    xl = [a.get_xlim() for a in fig.axes]
    assert xl[0] == xl[1]
    plot.metric_curve([1e-3, 1, 1e3], {"a": [1, 2, 3]}, "τ", "m", tmp_path / "c.png",
                      references={"ref": 2.0})
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(ValueError):
        plot.scatter_2d(ccfg.models.GaussianMixture.high_dim(d=8), {"x": np.zeros((2, 8))})
