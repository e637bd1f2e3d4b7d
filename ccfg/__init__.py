"""ccfg: negative guidance for diffusion sampling — Contrastive CFG and every baseline it is
compared with, on a C core, returning NumPy arrays.

    import ccfg
    model = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(model, positive="A", negative="B", guidance=ccfg.CCFG(scale=5.0), n=64)
    eps = ccfg.guide(eps_u, eps_p, eps_n, ccfg.CCFG(scale=7.5))   # inside your own loop
"""
from . import _core
from . import guidance, schedulers
from ._device import devices
from ._version import __version__
from .guidance import (CCFG, CFG, DNG, SLD, ComposableNot, NegatedCFG, NegativePrompt, PerpNeg,
                       PythonRule, Rule)
from .sampling import GuidanceState, guide, randn, sample
from .schedulers import SchedulerConfig
from . import models, metrics

__all__ = ["sample", "guide", "randn", "devices", "GuidanceState", "SchedulerConfig", "Rule",
           "CFG", "NegativePrompt", "NegatedCFG", "ComposableNot", "PerpNeg", "SLD", "DNG", "CCFG",
           "PythonRule", "guidance", "schedulers", "models", "metrics", "__version__"]
