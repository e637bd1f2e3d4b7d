"""ccfg.sweep: the same records serially, on local processes and on a local Dask cluster; resume
after an interruption; a record equals ccfg.sample + the metrics called by hand."""
import json
import math
import time

import numpy as np
import pytest

import ccfg
from ccfg import metrics as M
from ccfg.sweep import cells, read_records

FASHION = {"model": ["fashion-mnist"], "positive": ["footwear"], "negative": ["sneaker"],
           "guidance": ["cfg", "negated_cfg", "ccfg"], "scale": [2.0, 4.0], "seed": [0, 1, 2],
           "n": [2], "steps": [2]}
TOY = {"model": ["toy2d"], "positive": ["A"], "negative": ["B"], "guidance": ["cfg", "ccfg"],
       "scale": [2.0, 3.0], "seed": [0, 1], "n": [64], "steps": [5]}
# NumPy's BLAS reductions in the Fréchet distance (matrix square root) depend on the thread count,
# which a Dask worker sets to 1 (OPENBLAS_NUM_THREADS): those two agree to ~1e-6 relative there
BLAS_DEPENDENT = ("frechet", "frechet_floor")


def _strip(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def _same(a, b, rel=0.0):
    assert len(a) == len(b)
    for ra, rb in zip(_strip(a), _strip(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            if rel and k in BLAS_DEPENDENT and ra[k] is not None:
                assert math.isclose(ra[k], rb[k], rel_tol=rel), (k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], (k, ra[k], rb[k])


@pytest.fixture(scope="module")
def serial_fashion():
    t0 = time.perf_counter()
    recs = ccfg.sweep(FASHION, executor="serial", progress=False)
    return recs, time.perf_counter() - t0


def test_grid_cells_and_record_fields(serial_fashion):
    recs, _ = serial_fashion
    assert len(recs) == 18 == len(cells(FASHION))
    r = recs[0]
    assert (r["model"], r["guidance"], r["scale"], r["seed"]) == ("fashion-mnist", "cfg", 2.0, 0)
    for k in ("target_precision", "negative_leakage", "off_positive_rate", "coverage_kl",
              "frechet", "frechet_floor", "wall_s"):
        assert k in r
    json.dumps(list(recs))      # plain JSON values


def test_processes_equal_serial(serial_fashion):
    recs, t_serial = serial_fashion
    t0 = time.perf_counter()
    procs = ccfg.sweep(FASHION, progress=False)         # default: 2 local processes
    print(f"serial {t_serial:.1f} s, processes {time.perf_counter() - t0:.1f} s")
    _same(recs, procs)


def test_dask_equals_serial(serial_fashion):
    distributed = pytest.importorskip("distributed")
    recs, _ = serial_fashion
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        t0 = time.perf_counter()
        got = ccfg.sweep(FASHION, executor=client.get_executor(), progress=False)
        print(f"dask {time.perf_counter() - t0:.1f} s")
    _same(recs, got, rel=1e-5)


def test_one_cell_equals_sample_and_metrics_by_hand(serial_fashion):
    recs, _ = serial_fashion
    r = recs[-1]        # ccfg, scale 4, seed 2
    x = ccfg.sample(ccfg.models.load("fashion-mnist"), positive="footwear", negative="sneaker",
                    guidance=ccfg.CCFG(scale=4.0), steps=2, n=2, seed=2, progress=False)
    m = M.image_summary(np.clip(x, -1, 1), "footwear", "sneaker", seed=2)
    assert {k: r[k] for k in m} == m
    toy = ccfg.sweep({"model": ["toy2d"], "positive": ["A"], "negative": ["B"],
                      "guidance": [ccfg.CCFG(3.0, tau=1.0)], "n": [50], "steps": [4],
                      "seed": [1]}, executor="serial", progress=False)[0]
    model = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(model, positive="A", negative="B", guidance=ccfg.CCFG(3.0, tau=1.0), n=50,
                    steps=4, seed=1, progress=False)
    m = M.summary(model, x, "A", "B", seed=1)
    assert {k: toy[k] for k in m} == m
    assert toy["rule"] == repr(ccfg.CCFG(3.0, tau=1.0)) and toy["tau"] == 1.0


def test_resume_skips_cells_already_written(tmp_path, monkeypatch):
    out = tmp_path / "s.jsonl"
    full = ccfg.sweep(TOY, executor="serial", out=out, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 8
    # an interrupted run: 3 finished cells and a torn line
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    import sys
    S = sys.modules["ccfg.sweep"]
    calls = []
    real = S.run_cell
    monkeypatch.setattr(S, "run_cell", lambda c, m="auto": calls.append(c) or real(c, m))
    again = ccfg.sweep(TOY, executor="serial", out=out, progress=False)
    assert len(calls) == 5
    _same(full, again)
    assert len(read_records(out)) == 8
    calls.clear()
    ccfg.sweep(TOY, executor="serial", out=out, progress=False)
    assert calls == []


def test_progress_line_when_not_a_tty(capsys):
    ccfg.sweep({"model": ["toy2d"], "positive": ["A"], "n": [8], "steps": [2]},
               executor="serial")
    err = capsys.readouterr().err
    assert "\r" not in err and "sweep: 1/1 cells" in err and "ETA" in err


def test_dataframe_and_plot(tmp_path):
    recs = ccfg.sweep(TOY, executor="serial", progress=False)
    pd = pytest.importorskip("pandas")
    df = recs.to_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == 8 and "energy_distance" in df
    pytest.importorskip("matplotlib")
    fig = ccfg.plot.sweep_curve(recs, "scale", "negative_leakage", path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0 and len(fig.axes[0].lines) == 2


def test_bad_grids_name_the_problem():
    with pytest.raises(ValueError, match="unknown argument 'bogus'"):
        ccfg.sweep({"model": ["toy2d"], "bogus": [1]}, executor="serial")
    with pytest.raises(ValueError, match="empty"):
        ccfg.sweep({"model": []}, executor="serial")
    with pytest.raises(TypeError, match="pass it by name"):
        unet = ccfg.models.load("fashion-mnist")
        del unet._ccfg_preset           # a UNet loaded some other way: no name to send
        ccfg.sweep({"model": [unet]}, progress=False)


# ---------------------------------------------------------------------- the CLI front
def test_cli_sweep_grid_file(tmp_path, capsys):
    from ccfg.__main__ import main
    grid = tmp_path / "g.toml"
    grid.write_text('model = "toy2d"\npositive = "A"\nnegative = "B"\n'
                    'guidance = ["cfg", "ccfg"]\nscale = [2.0, 3.0]\nn = 32\nsteps = 3\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"), "-q",
                 "--workers", "0", "--device", "cpu"]) == 0
    recs = read_records(tmp_path / "o" / "sweep.jsonl")
    assert len(recs) == 4 and recs[0]["device"] == "cpu"
    ref = ccfg.sweep({"model": ["toy2d"], "positive": ["A"], "negative": ["B"],
                      "guidance": ["cfg", "ccfg"], "scale": [2.0, 3.0], "n": [32],
                      "steps": [3]}, executor="serial", progress=False, device="cpu")
    _same(recs, ref)
    assert "| guidance | scale |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot parse"):
        main(["sweep", "--grid", str(tmp_path / "bad.json"), "-q"])


def test_cli_sample_png_info_and_one_line_errors(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "grid.png"
    r = subprocess.run([sys.executable, "-m", "ccfg", "sample", "--model", "fashion-mnist",
                        "--positive", "footwear", "--negative", "sneaker", "--guidance", "ccfg",
                        "--n", "4", "--steps", "2", "--out", str(out), "-q", "--device", "cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([sys.executable, "-m", "ccfg", "info"], capture_output=True, text=True)
    assert "fashion-mnist" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ccfg", "sample", "--model", "fashion-mnist",
                        "--positive", "nonsense", "--n", "2", "--steps", "1", "-q",
                        "--out", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "ccfg", "compare", "--help"],
                       capture_output=True, text=True)
    assert "ccfg-compare/RESULTS.md" in r.stdout and "tools/compare.py``)." in r.stdout


def test_cli_one_param_sweep_on_fashion_mnist(tmp_path):
    from ccfg.__main__ import main
    out = tmp_path / "sw"
    assert main(["sweep", "--model", "fashion-mnist", "--positive", "footwear", "--negative",
                 "sneaker", "--guidance", "ccfg", "--param", "scale", "--values", "2,4",
                 "--n", "2", "--steps", "2", "--out", str(out), "-q"]) == 0
    recs = read_records(out / "sweep.jsonl")
    assert [r["scale"] for r in recs] == [2, 4] and all("frechet" in r for r in recs)
