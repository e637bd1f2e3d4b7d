"""Every notebook in notebooks/ runs top to bottom (small settings), with its figures shown inline
and its printed checks holding. A failing cell fails the build (issue 14)."""
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# what a notebook needs beyond ccfg, nbclient and matplotlib (skipped where it is missing)
NEEDS = {"diffusers.ipynb": ["transformers", "diffusers", "torch"]}


def test_every_notebook_is_collected():
    assert {"quickstart.ipynb", "exact_mixture.ipynb", "fashion_mnist.ipynb",
            "own_rule.ipynb", "diffusers.ipynb"} <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    for module in NEEDS.get(name, []):
        pytest.importorskip(module)
    # the kernel imports ccfg from this checkout (not whichever copy is installed)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()            # a cell that raises fails here (CellExecutionError)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert ": True" in text and ": False" not in text, text      # every printed check held
    # a figure shown inline (PNG), not "<Figure ...>"
    assert any("image/png" in o.get("data", {}) for o in outputs
               if o.get("output_type") in ("display_data", "execute_result"))
    # every figure comes with its picture (text/plain "<Figure ...>" alone: shown as text)
    assert not [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
                and "<Figure" in str(o.get("data", {}).get("text/plain", ""))
                and "image/png" not in o.get("data", {})]
