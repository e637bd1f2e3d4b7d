"""benchmarks/scaling.py (issue 16 item 5) and run.py's issue-16 table keep working: the scripts
run end to end at their smallest sizes and write what they promise. Structure only; no time is
asserted (the numbers of a --quick run mean nothing)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
SCALING = os.path.join(BENCH, "scaling.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# a child that cannot import torch or diffusers, as on a machine without the dev extras
NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['diffusers'] = None; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _env():
    """this checkout's ccfg first (the shared virtualenv may have another one installed)"""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(args, no_torch=False):
    cmd = [sys.executable] + (["-c", NO_TORCH] if no_torch else []) + args
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _quick_grid():
    spec = importlib.util.spec_from_file_location("ccfg_bench_scaling", SCALING)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, BENCH)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(BENCH)
    return mod.QUICK


def _tables(text):
    """{section heading: [first cell of each data row]} of the markdown's tables"""
    out, head = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            head = line[3:].strip()
            out[head] = []
        elif head and line.startswith("| ") and not re.match(r"\|\s*(limit|batch|size|d|K) \|",
                                                              line):
            out[head].append(line.split("|")[1].strip())
    return out


def _has_torch():
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check_mixture(tables, grid):
    dims = next(v for k, v in tables.items() if k.startswith("Exact mixture against dimension"))
    comps = next(v for k, v in tables.items() if k.startswith("Exact mixture against components"))
    assert dims == [str(d) for d, _ in grid["dims"]]
    assert comps == [str(k) for k, _ in grid["comps"]]


def test_scaling_quick_writes_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    grid = _quick_grid()
    out = tmp_path / "sub" / "scaling.md"
    perf = tmp_path / "PERF.md"
    perf.write_text("# notes\n\n## Scaling (issue 16 item 5)\n\nrun it so:\n"
                    "<!-- benchmarks/scaling.py writes from here -->\nold table\n"
                    "<!-- benchmarks/scaling.py writes up to here -->\n\n## Next\nkept\n",
                    encoding="utf-8")
    log = _run([SCALING, "--quick", "--threads", "1", "--out", str(out), "--section", str(perf)])
    text = out.read_text(encoding="utf-8")
    # the section got the same tables, a heading level down, between its markers; the rest kept
    sec = perf.read_text(encoding="utf-8")
    assert sec.startswith("# notes\n\n## Scaling (issue 16 item 5)\n\nrun it so:\n<!-- ")
    assert sec.endswith("<!-- benchmarks/scaling.py writes up to here -->\n\n## Next\nkept\n")
    assert "old table" not in sec and "# Scaling of ccfg" not in sec
    in_sec = _tables(sec.replace("### ", "## "))
    assert all(in_sec[k] == v for k, v in _tables(text).items())
    assert "](sub/scaling.png)" in sec
    assert "MISMATCH" not in text and "MISMATCH" not in log
    tables = _tables(text)
    assert {"copy", "sgemm", "dgemm"} <= set(tables["Limits (measured in this run: the best repeat)"])
    _check_mixture(tables, grid)
    if _has_torch():
        assert tables["UNet forward against batch (32x32)"] == [str(b) for b, _ in grid["batches"]]
        size = next(v for k, v in tables.items() if k.startswith("UNet forward against image"))
        assert size == [str(s) for s, _ in grid["sizes"]]
    assert "](scaling.png)" in text                     # linked relative to the markdown
    assert (tmp_path / "sub" / "scaling.png").read_bytes()[:8] == PNG_MAGIC


def test_scaling_without_torch_skips_the_unet(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "scaling.md"
    png = tmp_path / "plot.png"
    _run([SCALING, "--quick", "--out", str(out), "--plot", str(png)], no_torch=True)
    text = out.read_text(encoding="utf-8")
    tables = _tables(text)
    assert "UNet forward" in tables and "Skipped: torch and diffusers" in text
    assert not any(k.startswith("UNet forward against") for k in tables)
    _check_mixture(tables, _quick_grid())
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_run_prints_issue16_table_without_torch():
    """run.py's unet group is skipped, saying so, and the issue's table still has its 8 rows"""
    log = _run([os.path.join(BENCH, "run.py"), "--only", "unet"], no_torch=True)
    assert "unet: skipped: torch and diffusers" in log
    rows = [ln for ln in log.splitlines() if ln.startswith("| ") and not ln.startswith("| what")]
    assert len(rows) == 8
    assert sum("skipped: torch and diffusers" in r for r in rows) == 2
    assert sum("not run (--only)" in r for r in rows) == 4     # the first row of each group


def test_scaling_section_without_markers_fails_before_measuring(tmp_path):
    perf = tmp_path / "PERF.md"
    perf.write_text("# no markers here\n", encoding="utf-8")
    r = subprocess.run([sys.executable, SCALING, "--quick", "--out", str(tmp_path / "s.md"),
                        "--section", str(perf)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--section" in r.stderr and "scaling.py writes" in r.stderr
    assert not (tmp_path / "s.md").exists()


@pytest.mark.parametrize("steps", [0, 1])
def test_bench_unet_script_runs(steps):
    """bench_unet.py as make bench's unet group and as a script, forward alone (--steps 0) and
    with a sampling run: the forward and sampling checks pass (a MISMATCH exits non-zero)"""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    out = _run([os.path.join(BENCH, "bench_unet.py"), "--n", "1", "--steps", str(steps),
                "--repeats", "1", "--layers", "1", "--profile", "1"])
    assert "forward check" in out and "(ok)" in out
    assert ("sampling check" in out) == (steps > 0)


def test_run_py_unet_group_imports_bench_unet():
    """make bench's unet group calls bench_unet.run as a module (no script arguments parsed)"""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    out = _run([os.path.join(BENCH, "run.py"), "--only", "unet", "--unet-n", "1",
                "--unet-steps", "1"])
    assert "forward check" in out and "sampling check" in out
