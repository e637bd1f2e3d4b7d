"""Ablations from Python: every combination of a grid of ``ccfg.sample`` arguments, one record per
cell (its parameters and its metrics), on any ``concurrent.futures.Executor``.

    records = ccfg.sweep({"model": ["fashion-mnist"], "positive": ["footwear"],
                          "negative": ["sneaker"], "guidance": ["cfg", "negated_cfg", "ccfg"],
                          "scale": [2.0, 4.0], "seed": [0, 1, 2], "n": [4], "steps": [4]},
                         out="sweep.jsonl")
    df = records.to_dataframe()          # pandas, when installed

Design:

- ``grid`` maps ``ccfg.sample``'s argument names to lists of values (or is a list of cells, each
  a dict of arguments, for a design that is not a full product). Rule parameters (``scale``,
  ``tau``, ... of the rule class) may be grid keys too when ``guidance`` is given by name: the
  rule is then built in the worker as ``ccfg.guidance.NAMES[name](scale=..., tau=...)``. Keys are
  varied in the order given; the last key varies fastest.
- Models travel by name ("toy2d", "gmm64", "gmm1024", "fashion-mnist"; "toy_2d"/"high_dim" are
  accepted aliases) and are loaded once per worker process; a model loaded with
  ``ccfg.models.load(name)`` is sent as its name. Other models must pickle (GaussianMixture does;
  the C-backed UNet does not: pass it by name) unless ``executor="serial"``.
- A record is a flat dict of plain JSON values: the cell's parameters (a model by its name or
  repr, a rule by its name in ``guidance`` and its repr in ``rule`` plus every rule parameter as
  its own column), the metrics, and ``wall_s`` (the cell's sampling + scoring time: the only field
  that differs between two runs of the same cell).
- Metrics (``metrics="auto"``): a GaussianMixture gets ``ccfg.metrics.summary`` (exact: negative
  leakage, target precision, target TV, off-support rate, mean NLL, energy distance to the exact
  target); an image model with Fashion-MNIST's shape gets ``ccfg.metrics.image_summary`` on the
  samples clipped to [-1, 1] (the classifier's concept rates, coverage KL, Fréchet distance and
  its floor). ``metrics=None``: no metrics; a callable ``f(model, x, cell) -> dict``: your own.
- ``out`` (JSON lines): each record is appended as its cell finishes; cells already in the file
  (same parameters) are skipped and their records returned, so an interrupted sweep resumes.
- ``executor``: None = local processes (``min(2, os.cpu_count())`` workers, spawn start method);
  ``"serial"`` = this process; any ``concurrent.futures.Executor``, e.g. a Dask client's
  ``client.get_executor()``.
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import sys
import time

import numpy as np

__all__ = ["sweep", "SweepResult", "cells", "cell_list", "run_cell", "to_dataframe"]

_SAMPLE_ARGS = None
_MODEL_CACHE = {}
_ALIASES = {"toy_2d": "toy2d", "high_dim": "gmm64", "fashion_mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist"}


def _sample_args():
    global _SAMPLE_ARGS
    if _SAMPLE_ARGS is None:
        from .sampling import sample
        _SAMPLE_ARGS = [p for p in inspect.signature(sample).parameters if p != "model"]
    return _SAMPLE_ARGS


# ---------------------------------------------------------------------- JSON-able values
def _plain(v):
    """A JSON-able version of a parameter value (tuples become lists, rules their repr, NumPy
    scalars Python numbers, anything else its repr)."""
    from .guidance import Rule
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_plain(u) for u in v]
    if isinstance(v, Rule):
        return repr(v)
    return repr(v)


def _model_name(model):
    if isinstance(model, str):
        return _ALIASES.get(model.lower(), model.lower())
    preset = getattr(model, "_ccfg_preset", None)
    return preset if preset else repr(model)


def _load(name):
    if name not in _MODEL_CACHE:
        from . import models
        _MODEL_CACHE[name] = models.load(name)
    return _MODEL_CACHE[name]


# ---------------------------------------------------------------------- cells
def cells(grid, **fixed):
    """Every combination of ``grid`` (dict name -> list of values) merged with ``fixed``, as a list
    of dicts, in grid order (the last key varies fastest)."""
    if not isinstance(grid, dict) or not grid:
        raise TypeError("grid: expected a non-empty dict mapping ccfg.sample argument names to "
                        "lists of values")
    keys = list(grid)
    values = []
    for k in keys:
        v = grid[k]
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            v = [v]
        v = list(v)
        if not v:
            raise ValueError(f"grid[{k!r}]: an empty list of values")
        values.append(v)
    both = set(keys) & set(fixed)
    if both:
        raise ValueError(f"{sorted(both)}: given both in grid and as fixed arguments")
    return [dict(fixed, **dict(zip(keys, combo))) for combo in itertools.product(*values)]


def cell_list(cell_dicts, **fixed):
    """Cells given one by one (a list of dicts of ``ccfg.sample`` arguments), each merged with
    ``fixed``: for designs that are not a full product (``ccfg.compare`` runs each rule on its
    own sampler)."""
    out = []
    for i, c in enumerate(cell_dicts):
        if not isinstance(c, dict) or not c:
            raise TypeError(f"grid[{i}]: expected a non-empty dict of ccfg.sample arguments")
        both = set(c) & set(fixed)
        if both:
            raise ValueError(f"grid[{i}]: {sorted(both)} given both in the cell and as fixed "
                             "arguments")
        out.append(dict(fixed, **c))
    if not out:
        raise ValueError("grid: an empty list of cells")
    return out


def _rule_param_names(cell):
    from .guidance import NAMES
    g = cell.get("guidance")
    if isinstance(g, str) and g.lower().replace("-", "_") in NAMES:
        cls = NAMES[g.lower().replace("-", "_")]
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return []


def _check_cell(cell):
    sample_args = _sample_args()
    if "model" not in cell:
        raise ValueError("grid: needs a 'model' (a name such as 'toy2d' or 'fashion-mnist', or a "
                         "model object)")
    rule_params = _rule_param_names(cell)
    for k in cell:
        if k in ("model", "progress", "return_trajectory", "x_T"):
            if k in ("progress", "return_trajectory", "x_T"):
                raise ValueError(f"grid: {k!r} cannot be swept (a sweep samples each cell once, "
                                 f"silently)")
            continue
        if k not in sample_args and k not in rule_params:
            hint = ("; rule parameters need guidance given by name (e.g. 'ccfg')"
                    if not rule_params else "")
            raise ValueError(f"grid: unknown argument {k!r}: not an argument of ccfg.sample "
                             f"nor of the rule{hint}")


def _params(cell):
    """The record's parameter columns of a cell (plain JSON values)."""
    from .guidance import NAMES, Rule
    out = {}
    for k, v in cell.items():
        out[k] = _model_name(v) if k == "model" else _plain(v)
    g = cell.get("guidance")
    if isinstance(g, Rule):
        out["guidance"] = g.name
        out["rule"] = repr(g)
        for k, v in g._params().items():
            out.setdefault(k, _plain(v))
    elif g is None:
        out["guidance"] = "none"
    elif isinstance(g, str) and g.lower().replace("-", "_") in NAMES:
        out["guidance"] = g.lower().replace("-", "_")
    return out


def _key(params, names):
    # a rule object is told apart by its repr (the "rule" column), not only by its name
    return json.dumps({k: params.get(k) for k in sorted(set(names) | {"rule"})}, sort_keys=True)


def _build(cell):
    """(model, ccfg.sample keyword arguments) of a cell, in the worker."""
    from .guidance import NAMES
    model = cell["model"]
    if isinstance(model, str):
        model = _load(_model_name(model))
    rule_params = _rule_param_names(cell)
    kw, rkw = {}, {}
    for k, v in cell.items():
        if k == "model":
            continue
        if k in rule_params and k not in _sample_args():
            rkw[k] = v
        else:
            kw[k] = v
    if rkw:
        kw["guidance"] = NAMES[cell["guidance"].lower().replace("-", "_")](**rkw)
    return model, kw


def default_metrics(model, x, cell):
    """Every metric ccfg has for this kind of model (see the module's docstring)."""
    from . import metrics as M
    from .models import GaussianMixture
    pos, neg = cell.get("positive"), cell.get("negative")
    if isinstance(model, GaussianMixture):
        if pos is None:
            return {"off_support_rate": M.off_support_rate(model, x, seed=cell.get("seed", 0)),
                    "mean_nll": M.mean_nll(model, x)}
        return M.summary(model, x, pos, neg, seed=cell.get("seed", 0))
    if tuple(getattr(model, "shape", ())) == (1, 32, 32) and pos is not None:
        return M.image_summary(np.clip(x, -1.0, 1.0), pos, neg, seed=cell.get("seed", 0))
    return {}


def run_cell(cell, metrics="auto"):
    """Sample one cell and score it: its record (the parameters, the metrics, ``wall_s``). Runs in
    the worker; the same function serves every executor."""
    from .sampling import sample
    t0 = time.perf_counter()
    model, kw = _build(cell)
    kw.setdefault("progress", False)
    x = sample(model, **kw)
    if metrics == "auto":
        m = default_metrics(model, x, cell)
    elif metrics is None:
        m = {}
    else:
        m = dict(metrics(model, x, cell))
    rec = _params(cell)
    for k, v in m.items():
        rec[k] = _plain(v) if not isinstance(v, float) else (v if math.isfinite(v) else None)
    rec["wall_s"] = time.perf_counter() - t0
    return rec


# ---------------------------------------------------------------------- results
class SweepResult(list):
    """The records of a sweep (a list of dicts), with ``to_dataframe()``."""

    def to_dataframe(self):
        return to_dataframe(self)


def to_dataframe(records):
    """A pandas DataFrame of records (one row per cell); needs pandas."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("to_dataframe needs pandas (pip install pandas); the records are plain "
                          "dicts without it") from exc
    return pd.DataFrame.from_records(
        [{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()}
         for r in records])


def read_records(path):
    """The records of a JSON-lines file written by ``sweep(out=...)`` (a torn last line, left by
    an interrupted write, is ignored)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class _Progress:
    """'sweep: k/N cells, elapsed, ETA' — redrawn in place on a terminal, a plain line per
    finished cell (at most one every 2 s, and the last) otherwise."""

    def __init__(self, total, enabled, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.last = -1e9
        self.done = 0

    def step(self, skipped=0):
        self.done += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and self.done < self.total and now - self.last < 2.0:
            return
        self.last = now
        el = now - self.t0
        eta = el / self.done * (self.total - self.done)
        line = (f"sweep: {self.done + skipped}/{self.total + skipped} cells, {el:.1f} s elapsed, "
                f"ETA {eta:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------- sweep
def _portable_model(model, executor):
    """What goes to the worker for a model: its name when it has one; the object otherwise (it
    must pickle unless the sweep runs serially)."""
    if isinstance(model, str):
        return _model_name(model)
    preset = getattr(model, "_ccfg_preset", None)
    if preset:
        return preset
    if executor != "serial":
        import pickle
        try:
            pickle.dumps(model)
        except Exception as exc:
            raise TypeError(f"grid['model']: {type(model).__name__} cannot be sent to a worker "
                            f"({exc}); pass it by name (e.g. 'fashion-mnist') or use "
                            f"executor='serial'") from None
    return model


def sweep(grid, executor=None, out=None, metrics="auto", progress=True, workers=None, **fixed):
    """Run every combination of ``grid`` (or every cell of a list of cells) and return its records (a :class:`SweepResult`, a list
    of dicts in grid order). See the module docstring (``ccfg.sweep``'s module, ccfg/sweep.py)
    for the grid, records, metrics, resume and executors. ``fixed``: more ``ccfg.sample``
    arguments (or rule parameters) shared by every cell, e.g. ``device="cpu"``; ``workers``: the
    number of local processes when ``executor`` is None (default ``min(2, os.cpu_count())``)."""
    all_cells = cell_list(grid, **fixed) if isinstance(grid, (list, tuple)) else \
        cells(grid, **fixed)
    for c in all_cells:
        _check_cell(c)
    if not (metrics in ("auto", None) or callable(metrics)):
        raise TypeError("metrics: expected 'auto', None or a callable f(model, x, cell) -> dict")
    if executor is not None and executor != "serial" and not hasattr(executor, "submit"):
        raise TypeError("executor: expected None, 'serial' or a concurrent.futures.Executor")
    # every key any cell has (cells given as a list need not share their keys)
    names = list(dict.fromkeys(k for c in all_cells for k in c))
    done = {}
    if out is not None:
        for r in read_records(out):
            done[_key(r, names)] = r
        if os.path.exists(out) and os.path.getsize(out):
            with open(out, "rb+") as f:          # end a torn last line before appending
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    records = [None] * len(all_cells)
    todo = []
    for i, c in enumerate(all_cells):
        k = _key(_params(c), names)
        if k in done:
            records[i] = done[k]
        else:
            todo.append(i)
    prog = _Progress(len(todo), progress, None)
    skipped = len(all_cells) - len(todo)

    def finish(i, rec):
        records[i] = rec
        if out is not None:
            d = os.path.dirname(os.fspath(out))
            if d:
                os.makedirs(d, exist_ok=True)
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        prog.step(skipped)

    if not todo:
        return SweepResult(records)
    if executor == "serial":
        for i in todo:
            finish(i, run_cell(all_cells[i], metrics))
        return SweepResult(records)
    sent = {i: dict(all_cells[i], model=_portable_model(all_cells[i]["model"], executor))
            for i in todo}
    own = executor is None
    if own:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        n = workers or min(2, os.cpu_count() or 1)
        executor = ProcessPoolExecutor(max_workers=n,
                                       mp_context=multiprocessing.get_context("spawn"))
    from concurrent.futures import as_completed
    try:
        futs = {executor.submit(run_cell, sent[i], metrics): i for i in todo}
        for fut in as_completed(futs):
            finish(futs[fut], fut.result())
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    return SweepResult(records)
