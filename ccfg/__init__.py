"""ccfg: negative guidance for diffusion sampling — Contrastive CFG and every baseline it is
compared with, on a C core, returning NumPy arrays.

    import ccfg
    model = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(model, positive="A", negative="B", guidance=ccfg.CCFG(scale=5.0), n=64)
    eps = ccfg.guide(eps_u, eps_p, eps_n, ccfg.CCFG(scale=7.5))   # inside your own loop
"""
from . import _core
from . import guidance, schedulers
from .guidance import (CCFG, CFG, DNG, SLD, ComposableNot, NegatedCFG, NegativePrompt, PerpNeg,
                       PythonRule, Rule)
from .sampling import GuidanceState, guide, randn, sample
from .schedulers import SchedulerConfig
from . import models, metrics

__version__ = "0.1.0"

__all__ = ["sample", "guide", "randn", "devices", "GuidanceState", "SchedulerConfig", "Rule",
           "CFG", "NegativePrompt", "NegatedCFG", "ComposableNot", "PerpNeg", "SLD", "DNG", "CCFG",
           "PythonRule", "guidance", "schedulers", "models", "metrics", "__version__"]


class _Device(dict):
    """One entry of devices(): a dict of properties that prints as its selector and name."""

    def __str__(self):
        if self["backend"] == "cpu":
            return f"cpu ({self['threads']} threads, OpenBLAS)"
        if "index" not in self:
            return f"vulkan: none ({self['note']})"
        return f"vulkan:{self['index']} {self['name']} ({self['type']})"

    __repr__ = __str__


def devices():
    """The compute devices ccfg found, and why others are missing: the CPU backend, then each
    Vulkan device (``vulkan:N``) with its type, vendor, driver, memory and limits, or one entry
    whose ``note`` says why there is none (backend not built, no loader, no driver)."""
    out = []
    for d in _core.devices():
        d = _Device(d)
        d.setdefault("available", True)
        d.setdefault("selector", "cpu" if d["backend"] == "cpu" else f"vulkan:{d.get('index', '')}")
        if d["backend"] == "cpu":
            d.update(name="cpu", note=f"{d['threads']} threads, OpenBLAS + OpenMP")
        d.setdefault("name", "vulkan")
        out.append(d)
    return out
