"""Plots: 2-D samples over the exact data density, metric curves, image grids.

matplotlib is optional (``pip install matplotlib`` or ``pip install 'ccfg[plot]'``) and imported only
inside the functions that draw. Figures are built with matplotlib's object API on the Agg canvas, so
saving never touches pyplot's global state or the backend of a running Jupyter session. The
functions return the ``matplotlib.figure.Figure`` (a subclass with ``_repr_png_``), so Jupyter
shows it inline as a picture whether or not pyplot was ever imported (a plain Figure made outside
pyplot shows as ``<Figure ...>``).

``image_grid`` needs no matplotlib: it writes PNG files itself (zlib + struct), and the grid it
returns (a uint8 array) shows inline in Jupyter as a picture too.
"""
from __future__ import annotations

import math
import os
import struct
import textwrap
import zlib

import numpy as np

__all__ = ["scatter_2d", "metric_curve", "metric_panels", "image_grid", "plot_limits", "sweep_curve"]

# colour cycle (colour-blind safe, Okabe–Ito) for curves
_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _mpl():
    """(Figure, FigureCanvasAgg), or an ImportError that says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:      # pragma: no cover - depends on the environment
        raise ImportError("ccfg.plot needs matplotlib, which is not a runtime dependency of ccfg: "
                          "pip install matplotlib  (or pip install 'ccfg[plot]')") from exc
    return Figure, FigureCanvasAgg


_FIGURE_CLASS = []


def _figure_class():
    """matplotlib's Figure with ``_repr_png_`` (made once, when matplotlib is first needed)."""
    if not _FIGURE_CLASS:
        Figure, _ = _mpl()

        class InlineFigure(Figure):
            """A Figure that IPython/Jupyter displays as a PNG without pyplot."""

            def _repr_png_(self):
                import io
                buf = io.BytesIO()
                self.savefig(buf, format="png", dpi=100)
                return buf.getvalue()

        InlineFigure.__module__ = __name__
        InlineFigure.__qualname__ = "InlineFigure"
        _FIGURE_CLASS.append(InlineFigure)
    return _FIGURE_CLASS[0]


def _figure_for(ax, size=(5.0, 3.4)):
    """(figure, axes, own): a new figure with one Axes, or the given Axes and its figure (own is
    False: the caller neither titles nor saves it)."""
    if ax is None:
        fig = _new_figure(size)
        return fig, fig.subplots(), True
    return ax.figure, ax, False


def _new_figure(figsize, layout="constrained"):
    _, FigureCanvasAgg = _mpl()
    fig = _figure_class()(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)            # the Agg canvas: savefig never goes through pyplot
    return fig


def _save(fig, path, dpi=120):
    if path is None:
        return fig
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return fig


# ---------------------------------------------------------------------- 2-D scatter
def _data_box(model, n_std=4.0):
    """Box holding every component mean ± n_std standard deviations (largest axis)."""
    means = np.asarray(model.means, dtype=np.float64)
    std = np.sqrt(np.max(np.asarray(model._evals), axis=1))[:, None] if hasattr(model, "_evals") \
        else np.ones((means.shape[0], 1))
    lo = np.min(means - n_std * std, axis=0)
    hi = np.max(means + n_std * std, axis=0)
    return lo, hi


def plot_limits(model, samples=(), quantile=0.01, max_zoom_out=3.0):
    """Common (xlim, ylim) for 2-D panels: the data box (means ± 4 std), widened to hold the central
    ``1 - 2*quantile`` of every sample set, but never more than ``max_zoom_out`` times the data box
    around its centre; equal spans on both axes."""
    lo, hi = _data_box(model)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    for x in samples:
        x = np.asarray(x, dtype=np.float64)
        x = x[np.all(np.isfinite(x), axis=1)]
        if x.shape[0] == 0:
            continue
        q = np.quantile(x, [quantile, 1 - quantile], axis=0)
        half = np.maximum(half, np.max(np.abs(q - centre), axis=0) * 1.05)
    half = np.minimum(half, max_zoom_out * (hi - lo) / 2)
    half[:] = np.max(half)          # equal spans: circles stay circles with equal aspect
    return (centre[0] - half[0], centre[0] + half[0]), (centre[1] - half[1], centre[1] + half[1])


def _density_grid(model, xlim, ylim, res=200):
    gx = np.linspace(xlim[0], xlim[1], res)
    gy = np.linspace(ylim[0], ylim[1], res)
    X, Y = np.meshgrid(gx, gy)
    logp = model.log_prob(np.stack([X.ravel(), Y.ravel()], axis=1)).reshape(X.shape)
    return X, Y, logp


def _component_ellipse(model, k, n_std=2.0, points=64):
    """Outline of component k at n_std standard deviations, (points, 2)."""
    t = np.linspace(0, 2 * np.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    cov = model.covariances[k]
    lam, U = np.linalg.eigh(cov)
    return model.means[k] + n_std * (circle * np.sqrt(lam)) @ U.T


def _wrap(text, width):
    return "\n".join(textwrap.wrap(str(text), width=width, break_long_words=False,
                                   break_on_hyphens=False)) if text else ""


def scatter_2d(model, samples_by_label, path=None, *, target=None, titles=None, ncols=None,
               limits=None, panel_size=3.3, max_points=3000, title=None, point_size=4.0,
               max_zoom_out=1.8, dpi=120):
    """A grid of panels, one per label: the samples over the exact data density of ``model``.

    model : a 2-D ``ccfg.models.GaussianMixture``.
    samples_by_label : dict label -> (N, 2) array (insertion order = panel order).
    target : component indices (or names) of the exact target, outlined in green (2 std).
        ``None``: no highlight.
    titles : dict label -> extra title text (e.g. the rule repr and metrics); each line is wrapped
        to the panel width.
    limits : ``(xlim, ylim)`` shared by every panel; default ``plot_limits(model, samples,
        max_zoom_out=max_zoom_out)``. Samples outside are drawn on the border as red triangles and
        counted in the panel.
    Returns the Figure (saved to ``path`` with the Agg canvas when given).
    """
    if getattr(model, "dim", None) != 2:
        raise ValueError(f"scatter_2d: needs a 2-D model, got dim={getattr(model, 'dim', None)}")
    if not samples_by_label:
        raise ValueError("samples_by_label: no samples to plot")
    labels = list(samples_by_label)
    arrays = []
    for lab in labels:
        x = np.asarray(samples_by_label[lab], dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"samples_by_label[{lab!r}]: expected shape (N, 2), got {x.shape}")
        arrays.append(x)
    if limits is None:
        limits = plot_limits(model, arrays, max_zoom_out=max_zoom_out)
    xlim, ylim = limits
    tgt = []
    if target is not None:
        tgt = [model.names.index(t) if isinstance(t, str) else int(t) for t in target]

    n = len(labels)
    ncols = ncols or min(n, 4)
    nrows = math.ceil(n / ncols)
    width = int(panel_size * 19)
    head_lines = []
    for lab in labels:
        extra = (titles or {}).get(lab, "")
        head_lines.append(2 + sum(max(1, len(_wrap(t, width).splitlines()))
                                  for t in str(extra).splitlines()) if extra else 1)
    title_h = 0.105 * max(head_lines) + 0.2             # inches of title text above each panel
    top_h = 0.45 if title else 0.1
    fig_w = panel_size * ncols + 0.4
    fig_h = nrows * (panel_size + title_h) + top_h + 0.35
    fig = _new_figure((fig_w, fig_h), layout=None)
    fig.subplots_adjust(left=0.35 / fig_w, right=1 - 0.1 / fig_w, bottom=0.35 / fig_h,
                        top=1 - (top_h + title_h) / fig_h, wspace=0.08,
                        hspace=title_h / panel_size)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    X, Y, logp = _density_grid(model, xlim, ylim)
    top = float(np.max(logp))
    # grey shade of the log density, in 5 bands over the top 10 nats (white below)
    shade = np.floor(np.clip(logp - (top - 10.0), 0.0, 10.0) / 2.0001 + 1e-9)
    shade = np.where(logp < top - 10.0, 0.0, shade + 1.0) / 5.0
    for i, (lab, x) in enumerate(zip(labels, arrays)):
        ax = axes[i // ncols][i % ncols]
        ax.imshow(shade, extent=(xlim[0], xlim[1], ylim[0], ylim[1]), origin="lower",
                  cmap="Greys", vmin=0.0, vmax=2.4, interpolation="bilinear", zorder=0)
        for k in range(model.K):
            is_t = k in tgt
            if is_t:
                e = _component_ellipse(model, k)
                ax.plot(e[:, 0], e[:, 1], color="#009E73", lw=1.4, zorder=3)
            ax.text(model.means[k][0], model.means[k][1], model.names[k], ha="center",
                    va="center", fontsize=6.5, zorder=5, color="#006040" if is_t else "0.15",
                    fontweight="bold" if is_t else "normal")
        fin = x[np.all(np.isfinite(x), axis=1)]
        if fin.shape[0] > max_points:
            fin = fin[:max_points]
        inside = ((fin[:, 0] >= xlim[0]) & (fin[:, 0] <= xlim[1]) &
                  (fin[:, 1] >= ylim[0]) & (fin[:, 1] <= ylim[1]))
        ax.scatter(fin[inside, 0], fin[inside, 1], s=point_size, c="#0072B2", alpha=0.5,
                   linewidths=0, zorder=4, rasterized=True)
        n_out = int(np.sum(~inside))
        if n_out:
            pad = 0.012 * (xlim[1] - xlim[0])
            cx = np.clip(fin[~inside, 0], xlim[0] + pad, xlim[1] - pad)
            cy = np.clip(fin[~inside, 1], ylim[0] + pad, ylim[1] - pad)
            ax.scatter(cx, cy, s=9, marker="^", c="#D55E00", alpha=0.5, linewidths=0, zorder=6,
                       rasterized=True)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        extra = (titles or {}).get(lab, "")
        lines = [_wrap(t, width) for t in str(extra).splitlines()] if extra else []
        if n_out:
            lines.append(f"{n_out}/{fin.shape[0]} outside the view (red triangles on the border)")
        ax.set_title(str(lab), fontsize=7.5, loc="left", fontweight="bold",
                     pad=3 + 7.4 * sum(len(s.splitlines()) for s in lines))
        if lines:
            ax.text(0.0, 1.0, "\n".join(lines), transform=ax.transAxes, fontsize=6, va="bottom",
                    ha="left", linespacing=1.15)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h, va="top")
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------- curves
def metric_curve(xs, ys_by_label, xlabel, ylabel, path=None, *, references=None, logx=None,
                 logy=False, ylim=None, title=None, ax=None, markers=True, dpi=120):
    """One metric against a parameter, one line per label.

    xs : the x values (shared by every line), or a dict label -> x values.
    ys_by_label : dict label -> y values.
    references : dict label -> y value, drawn as horizontal dashed lines (e.g. a baseline).
    logx : log x axis (default: when every x > 0 and they span more than two decades).
    ylim : (bottom, top) of the y axis, either may be None (auto).
    ax : draw into an existing matplotlib Axes instead of a new figure (``path`` is then ignored).
    Returns the Figure.
    """
    fig, ax, own = _figure_for(ax)
    allx = []
    for i, (lab, ys) in enumerate(ys_by_label.items()):
        x = np.asarray(xs[lab] if isinstance(xs, dict) else xs, dtype=np.float64)
        y = np.asarray(ys, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"ys_by_label[{lab!r}]: {y.shape[0] if y.ndim else 1} values for "
                             f"{x.shape[0] if x.ndim else 1} x values")
        allx.append(x)
        ax.plot(x, y, marker="o" if markers else None, ms=3.5, lw=1.5, label=str(lab),
                color=_COLORS[i % len(_COLORS)])
    for j, (lab, y) in enumerate((references or {}).items()):
        ax.axhline(float(y), ls="--", lw=1.1, label=str(lab),
                   color=_COLORS[(len(ys_by_label) + j) % len(_COLORS)])
    if logx is None and allx:
        cat = np.concatenate([a.ravel() for a in allx])
        logx = bool(np.all(cat > 0) and cat.max() / cat.min() > 100)
    if logx:
        from matplotlib.ticker import NullLocator
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())      # minor log ticks are slow to lay out
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3, which="major")
    if title:
        ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6.5, frameon=False)
    if own:
        return _save(fig, path, dpi)
    return fig


def metric_panels(xs, panels, xlabel, path=None, *, references=None, logx=None, logy=(),
                  ylims=None, title=None, ncols=None, note=None, dpi=120):
    """Several metrics against one parameter: ``panels`` is a dict metric name -> ys_by_label;
    ``references`` a dict metric name -> {label: y}; ``logy`` the metric names drawn on a log y
    axis; ``ylims`` a dict metric name -> (bottom, top). One ``metric_curve`` per panel; returns
    the Figure."""
    names = list(panels)
    ncols = ncols or min(len(names), 2)
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure((4.6 * ncols, 3.2 * nrows + (0.4 if title else 0) + (0.3 if note else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, name in enumerate(names):
        metric_curve(xs, panels[name], xlabel, name, ax=axes[i // ncols][i % ncols],
                     references=(references or {}).get(name), logx=logx, logy=name in logy,
                     ylim=(ylims or {}).get(name))
    for j in range(len(names), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    if note:
        fig.supxlabel(note, fontsize=7)
    return _save(fig, path, dpi)


# ---------------------------------------------------------------------- images (no matplotlib)
def _png_bytes(img):
    """PNG bytes of a uint8 (H, W) or (H, W, 3) image."""
    h, w = img.shape[:2]
    color = 0 if img.ndim == 2 else 2
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


class ImageGrid(np.ndarray):
    """The uint8 grid ``image_grid`` returns: a plain ndarray that Jupyter shows as a PNG."""

    def _repr_png_(self):
        a = np.asarray(self)
        if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) \
                or a.size == 0:
            return None                 # (an array derived from it: shown as an array)
        return _png_bytes(np.ascontiguousarray(a))


def image_grid(images, path=None, nrow=8, *, padding=2, pad_value=1.0, scale=1):
    """Tile images in [-1, 1] into one grid (``nrow`` images per row, like torchvision).

    images : (N, C, H, W) with C = 1 or 3, or (N, H, W); values outside [-1, 1] are clipped.
    path : write a PNG there (no matplotlib needed); None: only return the grid.
    scale : integer upscaling factor (nearest neighbour), handy for 32x32 images.
    Returns the grid as uint8, (H', W') for one channel or (H', W', 3): an ndarray (subclass
    ``ImageGrid``) that Jupyter displays as the picture.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"images: expected a real array, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images: expected (N, C, H, W) with C in (1, 3) or (N, H, W), got "
                         f"{np.shape(images)}")
    if x.shape[0] < 1:
        raise ValueError("images: no images")
    if not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow: expected a positive integer, got {nrow!r}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected a positive integer, got {scale!r}")
    x = np.nan_to_num(x.astype(np.float64), nan=0.0)
    u8 = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    n, c, h, w = u8.shape
    if scale > 1:
        u8 = u8.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    cols = min(int(nrow), n)
    rows = math.ceil(n / cols)
    fill = int(round((min(max(pad_value, -1.0), 1.0) + 1.0) * 127.5))
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), fill,
                   dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y0:y0 + h, x0:x0 + w] = u8[i]
    out = grid[0] if c == 1 else np.ascontiguousarray(grid.transpose(1, 2, 0))
    out = out.view(ImageGrid)
    if path is not None:
        path = os.fspath(path)
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path, "wb") as f:
            f.write(_png_bytes(out))
    return out


# ---------------------------------------------------------------------- sweep records
def sweep_curve(records, x, y, hue="guidance", path=None, *, over="seed", band=0.95, logx=None,
                title=None, ax=None, dpi=120):
    """A metric against a parameter from ``ccfg.sweep`` records: one line per value of ``hue``
    (the mean over ``over``, default the seeds) with a confidence band (Student-t interval of the
    mean at level ``band``; none where a point has one value). Records whose ``y`` is missing or
    None are left out. Returns the Figure."""
    groups = {}
    for r in records:
        if r.get(y) is None or r.get(x) is None:
            continue
        groups.setdefault(str(r.get(hue)), {}).setdefault(float(r[x]), []).append(float(r[y]))
    if not groups:
        raise ValueError(f"records: no record has both {x!r} and {y!r}")
    fig, ax, own = _figure_for(ax)
    try:
        from scipy.stats import t as student_t
    except ImportError:             # pragma: no cover - scipy is optional
        student_t = None
    for i, (lab, pts) in enumerate(groups.items()):
        xs = np.array(sorted(pts))
        mean = np.array([np.mean(pts[v]) for v in xs])
        half = []
        for v in xs:
            k = len(pts[v])
            if k < 2:
                half.append(0.0)
                continue
            q = student_t.ppf(0.5 + band / 2, k - 1) if student_t else 1.96
            half.append(q * np.std(pts[v], ddof=1) / np.sqrt(k))
        half = np.array(half)
        c = _COLORS[i % len(_COLORS)]
        ax.plot(xs, mean, marker="o", ms=3.5, lw=1.5, color=c, label=lab)
        ax.fill_between(xs, mean - half, mean + half, color=c, alpha=0.2, lw=0)
    allx = np.array([v for pts in groups.values() for v in pts])
    if logx is None:
        logx = bool(np.all(allx > 0) and allx.max() / allx.min() > 100)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x, fontsize=8)
    ax.set_ylabel(y, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{y} vs {x} (mean over {over}, {band:.0%} band)", fontsize=8)
    ax.legend(fontsize=6.5, frameon=False, title=hue, title_fontsize=6.5)
    if own:
        return _save(fig, path, dpi)
    return fig
