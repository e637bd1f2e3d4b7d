"""Where the time goes on a Vulkan device: the time of every shader dispatch and staging copy,
from Vulkan timestamp queries, summed per kind.

    with ccfg.profiling.profile("vulkan:0") as prof:
        ccfg.sample(model, "A", "B", ccfg.CCFG(3.0), steps=20, n=10_000, device="vulkan:0")
    print(prof)                 # kind, calls, total ms, mean us, share; submits and host waits
    print(prof.per(20))         # the same per step

Every recorded command is followed by a full barrier, so the difference of consecutive
timestamps is that command's device time. ``batches`` counts submits, each of which the host
waits for: a rule that needs per-sample reductions on the host waits once per step.

The autotuner's decisions (``CCFG_VULKAN_COOP_TILE=auto`` and ``CCFG_VULKAN_CONV_TILE=auto``: the
fastest coop tile or float32 variant per convolution shape, timed on the device the first time the
shape is met, as ``torch.backends.cudnn.benchmark``):

    print(ccfg.profiling.tuning("vulkan:0"))    # per shape: each candidate's median ms, the choice
    ccfg.profiling.clear_tuning("vulkan:0")     # forget them: the next forward tunes again
    ccfg.profiling.save_tuning("tune.txt")      # keep them for the next process on this device
    ccfg.profiling.load_tuning("tune.txt")      # use them without timing (this device's only)

``CCFG_VULKAN_TUNE_CACHE=/path/file`` does the last two by itself: the file is read the first time
the tuner is asked, and rewritten after every new decision. Every candidate computes the same
bits, so tuning (or a loaded decision) changes times only, never a result.
"""
from __future__ import annotations

import contextlib

from . import _core, _device

__all__ = ["profile", "Profile", "tuning", "clear_tuning", "save_tuning", "load_tuning", "Tuning"]


class Profile:
    """The totals of one profiled stretch: ``rows`` [(kind, calls, ms)], ``batches`` (submits),
    ``wait_ms`` (host time waiting for them), ``unstamped`` (commands a batch had no timestamp
    left for) and the ``device``."""

    def __init__(self, device):
        self.device = device
        self.rows = []
        self.batches = 0
        self.wait_ms = 0.0
        self.unstamped = 0

    def _fill(self, raw):
        self.rows = sorted(raw["kinds"], key=lambda r: -r[2])
        self.batches = raw["batches"]
        self.wait_ms = raw["wait_ms"]
        self.unstamped = raw["unstamped"]

    @property
    def device_ms(self):
        """Device time of all profiled commands."""
        return sum(r[2] for r in self.rows)

    def per(self, count):
        """The same profile divided by ``count`` (steps, forwards) for per-step numbers."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        out = Profile(self.device)
        out.rows = [(k, c / count, ms / count) for k, c, ms in self.rows]
        out.batches = self.batches / count
        out.wait_ms = self.wait_ms / count
        out.unstamped = self.unstamped / count
        return out

    def __str__(self):
        total = self.device_ms or 1.0
        lines = [f"{'kind':<26} {'calls':>9} {'total ms':>10} {'mean us':>10} {'share':>6}"]
        for kind, calls, ms in self.rows:
            mean = 1e3 * ms / calls if calls else 0.0
            lines.append(f"{kind:<26} {calls:>9.6g} {ms:>10.3f} {mean:>10.1f} {ms / total:>6.1%}")
        lines.append(f"{'device time':<26} {'':>9} {self.device_ms:>10.3f}")
        lines.append(f"submits {self.batches:.6g}, host waiting {self.wait_ms:.3f} ms"
                     + (f", {self.unstamped:.6g} commands not timed" if self.unstamped else "")
                     + f" ({self.device})")
        return "\n".join(lines)

    __repr__ = __str__


@contextlib.contextmanager
def profile(device="vulkan"):
    """Profile everything run on a Vulkan ``device`` inside the block (any selector that
    resolves to "vulkan:N"); yields a :class:`Profile`, filled when the block ends."""
    dev = _device.resolve(device)
    if not dev.startswith("vulkan:"):
        raise ValueError(f"device: only Vulkan devices are profiled, got {device!r} ({dev})")
    _core.vk_profile(dev, "start")
    prof = Profile(dev)
    try:
        yield prof
    finally:
        prof._fill(_core.vk_profile(dev, "stop"))


def _vulkan(device):
    dev = _device.resolve(device)
    if not dev.startswith("vulkan:"):
        raise ValueError(f"device: only Vulkan devices are tuned, got {device!r} ({dev})")
    return dev


class Tuning:
    """The autotuner's state on one device: ``entries``, one per tuned shape, each a dict with
    ``family`` (the op and precision: "conv2d fp32" for the float32 variants, "conv2d coop" or
    "conv2d coop8" for the coop tiles), ``key`` (the shape and flags, by name), ``candidates``
    [(name, median ms, [ms of each timed run])], ``choice`` (the name kept) and ``loaded`` (read
    from a file, not timed in this process); ``tuned`` (shapes measured), ``hits`` (convolutions
    answered from the cache), ``runs`` (candidate runs the tuner recorded, warm-ups included) and
    ``loaded`` (decisions read from files) since the device opened or the last
    :func:`clear_tuning`. Times are device times from timestamp queries (a loaded decision's,
    from the process that measured it)."""

    def __init__(self, device, raw):
        self.device = device
        self.entries = raw["entries"]
        self.tuned = raw["tuned"]
        self.hits = raw["hits"]
        self.runs = raw["runs"]
        self.loaded = raw["loaded"]

    def family(self, name):
        """The entries of one family ("conv2d fp32", "conv2d coop", "conv2d coop8")."""
        return [e for e in self.entries if e["family"] == name]

    def clear(self):
        """Forget every decision on this device (:func:`clear_tuning`)."""
        clear_tuning(self.device)

    def __str__(self):
        lines = []
        for e in self.entries:
            key = " ".join(f"{k}={v}" for k, v in e["key"].items())
            best = min(m for _, m, _ in e["candidates"])
            times = ", ".join(f"{n} {m:.3f}" + (" *" if n == e["choice"] else "")
                              for n, m, _ in e["candidates"])
            lines.append(f"{e['family']}: {key}\n    ms: {times} (chose {e['choice']}, "
                         f"{best:.3f} ms" + (", loaded" if e.get("loaded") else "") + ")")
        families = sorted({e["family"] for e in self.entries})
        lines.append(f"{self.tuned} shapes tuned, {self.runs} candidate runs, {self.hits} cache "
                     f"hits, {self.loaded} decisions loaded"
                     + (f"; families {', '.join(families)}" if families else "")
                     + f" ({self.device})")
        return "\n".join(lines)

    __repr__ = __str__


def tuning(device="vulkan"):
    """The autotuner's decisions on a Vulkan ``device`` so far (a :class:`Tuning`)."""
    dev = _vulkan(device)
    return Tuning(dev, _core.vk_tuning(dev, "read"))


def clear_tuning(device="vulkan"):
    """Forget the autotuner's decisions on a Vulkan ``device`` and zero its counters: the next
    convolution of each shape is timed again (a benchmark that re-tunes)."""
    dev = _vulkan(device)
    _core.vk_tuning(dev, "clear")


def _path(path):
    import os
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: a file name (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"path: a non-empty file name, got {path!r}")
    return path


def save_tuning(path, device="vulkan"):
    """Write the autotuner's decisions on a Vulkan ``device`` to ``path`` (a text file, one
    decision per line) and return how many were written. Each line names the device it was
    measured on (vendor and device ids, driver version, pipelineCacheUUID and a hash of ccfg's
    compiled shaders), so a file can hold several machines' decisions: the lines of other devices
    already in the file are kept, and this device's replace their own. Written to a temporary
    file next to ``path`` and renamed over it, so a reader never sees half a file. A file that
    exists and is not a tuning cache raises ``ValueError`` naming ``path`` and is left alone."""
    dev = _vulkan(device)
    return _core.vk_tuning(dev, "save", _path(path))


def load_tuning(path, device="vulkan"):
    """Read the decisions that ``path`` holds for this ``device`` (the same vendor, device,
    driver version, pipelineCacheUUID and shader build) into its cache: the shapes they cover are
    then dispatched with their choice and never timed. Lines of other devices are ignored (not
    applied); a decision already in the cache is kept. Returns how many were added. A missing or
    malformed file raises ``ValueError`` naming ``path``, and nothing of it is applied."""
    dev = _vulkan(device)
    return _core.vk_tuning(dev, "load", _path(path))[0]
