"""ccfg: negative guidance for diffusion sampling — Contrastive CFG and every baseline it is
compared with, on a C core, returning NumPy arrays.

    import ccfg
    model = ccfg.models.GaussianMixture.toy_2d()
    x = ccfg.sample(model, positive="A", negative="B", guidance=ccfg.CCFG(scale=5.0), n=64)
    eps = ccfg.guide(eps_u, eps_p, eps_n, ccfg.CCFG(scale=7.5))   # inside your own loop
"""


def _load_core():
    """Import the C core with libgomp's passive wait policy unless the user chose a policy.

    libgomp reads OMP_WAIT_POLICY / GOMP_SPINCOUNT once, when it is loaded (with ``_core``).
    Its default lets idle OpenMP threads spin for a while; on a machine with more runnable
    tasks than cores a spinning or descheduled second thread made sampling 3-10x slower than
    one thread (docs/PERFORMANCE.md, "OpenMP wait policy"). Passive threads sleep at once.
    The variable is set only while ``_core`` loads and removed again: subprocesses and
    libraries loaded later do not see it (PyTorch loads its own libgomp copy). A library that
    shares the system libgomp in this process gets the same policy; results never depend on
    it. Set OMP_WAIT_POLICY (e.g. ``active``) or GOMP_SPINCOUNT yourself to keep your own."""
    import os
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        from . import _core
        return _core
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        from . import _core
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
    return _core


_core = _load_core()
from . import guidance, schedulers  # noqa: E402
from ._device import devices  # noqa: E402
from ._version import __version__  # noqa: E402
from .guidance import *  # noqa: E402,F401,F403  every rule class (ccfg.guidance.__all__)
from .sampling import GuidanceState, guide, randn, sample  # noqa: E402
from .schedulers import SchedulerConfig  # noqa: E402
from . import classifier, data, metrics, models, plot, profiling  # noqa: E402  NumPy + C core
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
