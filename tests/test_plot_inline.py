"""ccfg.plot's figures and grids show inline in Jupyter as pictures (issue 14): they are made
outside pyplot, so they carry their own ``_repr_png_``."""
import numpy as np
import pytest

import ccfg
import ccfg.plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_have_a_png_repr():
    pytest.importorskip("matplotlib")
    m = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(m, "A", "B", "ccfg", steps=4, n=32, progress=False, device="cpu")
    figs = [ccfg.plot.scatter_2d(m, {"CCFG": x}),
            ccfg.plot.metric_curve([1, 2, 3], {"a": [0.1, 0.2, 0.3]}, "scale", "leakage")]
    for fig in figs:
        from matplotlib.figure import Figure
        assert isinstance(fig, Figure)
        assert fig._repr_png_().startswith(PNG)


def test_image_grid_has_a_png_repr_and_stays_an_array():
    g = ccfg.plot.image_grid(np.linspace(-1, 1, 4 * 64).reshape(4, 1, 8, 8), nrow=2)
    assert isinstance(g, np.ndarray) and g.dtype == np.uint8 and g.shape == (22, 22)
    assert g._repr_png_().startswith(PNG)
    assert (g.astype(np.float32))._repr_png_() is None      # not an image any more: no picture
