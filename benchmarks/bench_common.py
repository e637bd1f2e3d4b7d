"""Shared helpers for the ccfg benchmarks: timing, statistics, thread report, table printing.

Timing rules (DESIGN.md, "Conventions"): every number is a median of repeats measured with
``time.perf_counter`` after warm-up runs, printed next to a peer measured in the same process.
Nothing about time is asserted; only correctness checks (done before timing) can fail a run.
"""
from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time

import numpy as np


BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# issue 11's CIFAR-sized model: 35.7M parameters at layers_per_block=2. Its weights (143 MiB)
# exceed lavapipe's 128 MiB maxStorageBufferRange, so lavapipe runs use half the channels.
CIFAR_CHANNELS = (128, 256, 256, 256)


def cifar_unet(channels=CIFAR_CHANNELS, layers_per_block=2, sample_size=32, seed=0, save=True):
    """The CIFAR-shaped diffusers ``UNet2DModel`` the GPU benchmarks compare on: 3 x sample_size
    x sample_size, a DownBlock2D then AttnDownBlock2Ds (attention at every level but the first,
    heads of 32 channels), 32 groups, random weights from ``torch.manual_seed(seed)``. Returns
    ``(model, folder)``: the torch model in eval mode and, with ``save``, a temporary folder it
    was saved to (``ccfg.models.UNet.from_pretrained(folder)`` loads the same weights), else
    None."""
    import tempfile

    import torch
    from diffusers import UNet2DModel
    channels = tuple(channels)
    torch.manual_seed(seed)
    attn = len(channels) - 1
    model = UNet2DModel(sample_size=sample_size, in_channels=3, out_channels=3,
                        block_out_channels=channels, layers_per_block=layers_per_block,
                        down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * attn,
                        up_block_types=("AttnUpBlock2D",) * attn + ("UpBlock2D",),
                        attention_head_dim=32, norm_num_groups=32).eval()
    folder = None
    if save:
        folder = tempfile.mkdtemp(prefix="ccfg_bench_cifar_unet_")
        model.save_pretrained(folder)
    return model, folder


def coop_device():
    """The first Vulkan device's entry of ``ccfg.devices()`` when CCFG_VULKAN_PRECISION=coop is
    set and the device runs it, else None (with the reason printed): the coop benchmarks'
    common check."""
    from ccfg import _core
    vks = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
    if not vks or os.environ.get("CCFG_VULKAN_PRECISION") != "coop" or \
            "coop" not in vks[0]["precisions"]:
        print("needs CCFG_VULKAN_PRECISION=coop on a device that runs it (lavapipe >= 26: "
              "build/toolchain/lavapipe-run)")
        return None
    return vks[0]


def child_env(env=None):
    """``env`` (default: this process's) with the benchmarks folder on PYTHONPATH, so that a
    child started with ``python -c SCRIPT`` can ``from bench_common import ...``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
    return env


def measure(fn, repeats=7, warmup=1, min_time=0.0):
    """Per-call seconds of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed repeats.

    With ``min_time`` > 0 each repeat runs ``fn`` ``number`` times (calibrated so that one repeat
    lasts at least ``min_time`` seconds) and reports the mean per call of that repeat."""
    for _ in range(warmup):
        fn()
    number = 1
    if min_time > 0:
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-9)
        number = max(1, int(min_time / one + 0.999))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return Timing(times, number)


def measure_pair(fa, fb, repeats, warmup=1):
    """(Timing of fa, Timing of fb), their calls alternating a, b, a, b, ... after ``warmup``
    untimed calls of each, so that load from other processes falls on both sides"""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Timing(ta), Timing(tb)


class Timing:
    def __init__(self, times, number=1):
        self.times = list(times)
        self.number = number
        q = np.percentile(self.times, [25, 50, 75])
        self.q1, self.median, self.q3 = float(q[0]), float(statistics.median(self.times)), float(q[2])
        self.min = min(self.times)

    @property
    def iqr(self):
        return self.q3 - self.q1

    @property
    def repeats(self):
        return len(self.times)


def fmt_time(s):
    if s >= 1.0:
        return f"{s:8.3f} s "
    if s >= 1e-3:
        return f"{s * 1e3:8.3f} ms"
    return f"{s * 1e6:8.2f} us"


class Table:
    """Rows of (case, implementation, Timing, note) printed with ratios to a named peer row."""

    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, case, impl, timing, note="", peer=None):
        """``peer``: the implementation name (same case) the ratio is computed against."""
        self.rows.append((case, impl, timing, note, peer))

    def render(self):
        lines = [self.title, "-" * len(self.title)]
        head = (f"{'case':<28} {'implementation':<40} {'median':>11} {'IQR':>11} {'min':>11} "
                f"{'reps':>4}x{'n':<3} {'t / t_peer':>16}  note")
        lines += [head, "-" * len(head)]
        by_key = {(c, i): t for c, i, t, _, _ in self.rows}
        for case, impl, t, note, peer in self.rows:
            ratio = ""
            if peer is not None and (case, peer) in by_key:
                r = t.median / by_key[(case, peer)].median
                ratio = f"{r:.2f}x {peer}"
            lines.append(f"{case:<28} {impl:<40} {fmt_time(t.median):>11} {fmt_time(t.iqr):>11} "
                         f"{fmt_time(t.min):>11} {t.repeats:>4}x{t.number:<3} {ratio:>16}  {note}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- thread report
def _loaded_libraries():
    """Paths of the shared libraries mapped into this process (Linux /proc/self/maps)."""
    paths = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and ".so" in parts[5]:
                    p = parts[5].strip()
                    if p not in paths:
                        paths.append(p)
    except OSError:
        pass
    return paths


def _call_int(lib, names):
    for nm in names:
        fn = getattr(lib, nm, None)
        if fn is not None:
            fn.restype = ctypes.c_int
            fn.argtypes = []
            return nm, int(fn())
    return None, None


def _call_str(lib, names):
    for nm in names:
        fn = getattr(lib, nm, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            fn.argtypes = []
            v = fn()
            return v.decode(errors="replace").strip() if v else ""
    return None


def thread_report():
    """Lines describing the CPUs and the thread pools this process will use (read-only queries;
    nothing is set). Uses threadpoolctl when installed, else asks the loaded libraries directly."""
    lines = []
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    lines.append(f"cpus: os.cpu_count()={os.cpu_count()}, usable (affinity)={affinity}, "
                 f"machine={platform.machine()}, python={platform.python_version()}, "
                 f"numpy={np.__version__}")
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        lines.append(f"load average (1/5/15 min) at start: {load}  "
                     "(other processes on the box share the cores: timings are noisier when high)")
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OMP_PROC_BIND", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
           if k in os.environ}
    lines.append(f"thread environment: {env if env else '(none of OMP_*/OPENBLAS_*/MKL_* set)'}")
    try:
        import threadpoolctl  # optional, never required
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        for info in threadpoolctl.threadpool_info():
            lines.append(f"threadpoolctl: {info.get('internal_api')} ({info.get('user_api')}) "
                         f"num_threads={info.get('num_threads')} "
                         f"{os.path.basename(info.get('filepath', ''))}")
        return lines
    lines.append("threadpoolctl: not installed; querying the loaded libraries with ctypes:")
    found = False
    for path in _loaded_libraries():
        base = os.path.basename(path)
        try:
            lib = ctypes.CDLL(path)      # already mapped: dlopen returns the loaded handle
        except OSError:
            continue
        if "gomp" in base or "libomp" in base or "iomp" in base:
            _, n = _call_int(lib, ["omp_get_max_threads"])
            if n is not None:
                lines.append(f"  OpenMP  {base}: omp_get_max_threads()={n}")
                found = True
        if "openblas" in base:
            nm, n = _call_int(lib, ["openblas_get_num_threads", "openblas_get_num_threads64_",
                                    "scipy_openblas_get_num_threads64_",
                                    "scipy_openblas_get_num_threads"])
            cfg = _call_str(lib, ["openblas_get_config", "openblas_get_config64_",
                                  "scipy_openblas_get_config64_", "scipy_openblas_get_config"])
            if n is not None:
                owner = "numpy" if "numpy" in path or "scipy_openblas" in base else "ccfg/system"
                lines.append(f"  OpenBLAS {base} ({owner}): {nm}()={n}  [{cfg}]")
                found = True
    if not found:
        lines.append("  (no OpenMP/OpenBLAS library answered)")
    return lines


def profile_forward(fn, repeats=3):
    """Time per op kind of ccfg's CPU nn ops (``_core.nn_profile``, off outside this call) over
    ``repeats`` calls of ``fn`` (one warm-up call first, unprofiled): returns the printable table,
    per call, with the wall time between ops (Python, planning, waits) as its own row."""
    from ccfg import _core
    fn()
    _core.nn_profile("start")
    t0 = time.perf_counter()
    try:
        for _ in range(repeats):
            fn()
    finally:
        kinds = _core.nn_profile("stop")
    wall = (time.perf_counter() - t0) * 1e3 / repeats
    rows = sorted(((k, c / repeats, ms / repeats) for k, (c, ms) in kinds.items()),
                  key=lambda r: -r[2])
    rows.append(("other (outside the ops)", 0, wall - sum(r[2] for r in rows)))
    lines = [f"  {'op kind':34} {'calls':>6} {'ms':>9} {'share':>6}"]
    for kind, calls, ms in rows:
        lines.append(f"  {kind:34} {calls:6.0f} {ms:9.2f} {100 * ms / wall:5.1f}%")
    lines.append(f"  {'forward (wall)':34} {'':6} {wall:9.2f} {100.0:5.1f}%")
    return "\n".join(lines)
