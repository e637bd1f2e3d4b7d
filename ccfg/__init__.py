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
from .guidance import *  # noqa: F401,F403  every rule class (ccfg.guidance.__all__)
from .sampling import GuidanceState, guide, randn, sample
from .schedulers import SchedulerConfig
from . import classifier, data, metrics, models, plot, profiling  # light: NumPy + the C core
from .sweep import sweep  # noqa: E402  (ccfg.sweep is the function; the module is ccfg/sweep.py)

__all__ = ["sample", "guide", "randn", "devices", "GuidanceState", "SchedulerConfig", "sweep",
           *guidance.__all__, "guidance", "schedulers", "models", "metrics", "classifier", "data",
           "plot", "profiling", "compare", "pipelines", "guiders", "__version__"]


def __getattr__(name):
    # ccfg.compare (the experiment harness: argparse and report writing) and ccfg.pipelines
    # (diffusers pipeline folders; torch only when one is loaded) and ccfg.guiders (imports
    # diffusers) load on first use
    if name in ("compare", "pipelines", "guiders"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
