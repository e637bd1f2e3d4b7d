"""Re-entrant calls (issue 13 item 2): a progress callback, a PythonModel's function or a
PythonRule that calls ccfg.guide, ccfg.sample or the same UNet's forward on the same device used to
deadlock forever (the device mutex is not recursive, the UNet's lock waited for itself; SIGINT and
SIGTERM did not help). Now a callback runs with the run's locks let go (after the device has run
what was recorded, keeping a pending non-finite report), so these calls work, and give the same
results as made outside; a call that still cannot run raises RuntimeError ("re-entrant call").

Every case runs in a child process with a timeout: a regression fails instead of hanging."""
import json
import subprocess
import sys
import textwrap

import pytest

from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
DEVICES = ["cpu"] + ([f"vulkan:{VK[0]['index']}"] if VK else [])
TIMEOUT = 120

PRELUDE = """
import json, sys
import numpy as np
import ccfg
dev = sys.argv[1]
toy = ccfg.models.load("toy2d")
unet = ccfg.models.load("fashion-mnist")
rng = np.random.default_rng(0)
u, p, n1 = (rng.standard_normal((3, 1, 8, 8)).astype(np.float32) for _ in range(3))
def guide():
    return ccfg.guide(u, p, [n1], ccfg.CCFG(scale=3.0), device=dev)
def small_sample():
    return ccfg.sample(toy, positive="A", negative="B", guidance="ccfg", steps=3, n=4, seed=1,
                       device=dev, progress=False)
xs = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
def preview():
    return unet(xs, 500, [0, 1], device=dev)
def unet_sample(**kw):
    kw.setdefault("progress", False)
    return ccfg.sample(unet, positive="trouser", negative="dress", guidance="ccfg", steps=2, n=2,
                       seed=3, device=dev, **kw)
def same(a, b):
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
"""


def run_child(body, dev):
    code = PRELUDE + textwrap.dedent(body)
    # a hang prints every thread's stack before the timeout ends the child
    code = f"import faulthandler\nfaulthandler.dump_traceback_later({TIMEOUT - 20}, exit=True)\n" + code
    try:
        r = subprocess.run([sys.executable, "-c", code, dev], capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: no answer in {TIMEOUT} s")
    if "Timeout (0:" in r.stderr:
        pytest.fail(f"deadlock: {r.stderr[-3000:]}")
    if r.returncode != 0:
        pytest.fail(f"child failed ({r.returncode}): {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


CASES = {
    # a progress callback: a guide call, a whole (small) run, a preview by the same UNet
    "progress_guide": """
        want, got = guide(), []
        x = small_sample()
        y = ccfg.sample(toy, positive="A", negative="B", guidance="ccfg", steps=3, n=4, seed=1,
                        device=dev, progress=lambda i, n: got.append(guide()))
        ok = len(got) == 3 and all(same(g, want) for g in got) and same(x, y)
    """,
    "progress_sample": """
        want, got = small_sample(), []
        x = ccfg.sample(toy, positive="A", negative="C", guidance="cfg", steps=2, n=3, seed=0,
                        device=dev, progress=False)
        y = ccfg.sample(toy, positive="A", negative="C", guidance="cfg", steps=2, n=3, seed=0,
                        device=dev, progress=lambda i, n: got.append(small_sample()))
        ok = len(got) == 2 and all(same(g, want) for g in got) and same(x, y)
    """,
    "progress_preview": """
        want, got = preview(), []
        x = unet_sample()
        y = unet_sample(progress=lambda i, n: got.append(preview()))
        ok = len(got) == 2 and all(same(g, want) for g in got) and same(x, y)
    """,
    # a PythonModel's function: around the same UNet, calling guide, running a nested sample
    "model_unet": """
        labels = {"trouser": 1, "dress": 3}
        def fn(x, t, cond):
            return unet(x, t, [labels.get(c, 0) if c else 0 for c in cond], device=dev)
        pm = ccfg.models.PythonModel(fn, (1, 32, 32))
        x = ccfg.sample(pm, positive="trouser", negative="dress", guidance="cfg", steps=2, n=2,
                        seed=0, device=dev, progress=False)
        want = ccfg.sample(pm, positive="trouser", negative="dress", guidance="cfg", steps=2, n=2,
                           seed=0, device="cpu", progress=False)
        ok = bool(np.abs(x - want).max() <= 1e-4 * np.abs(want).max())
    """,
    "model_guide_and_sample": """
        want_g, want_s, got = guide(), small_sample(), []
        def fn(x, t, cond):
            got.append((guide(), small_sample()))
            return 0.1 * x
        pm = ccfg.models.PythonModel(fn, (2,))
        ccfg.sample(pm, positive="a", guidance="cfg", steps=2, n=3, device=dev, progress=False)
        ok = len(got) >= 2 and all(same(g, want_g) and same(s, want_s) for g, s in got)
    """,
    # a PythonRule: calling guide (inside a run and inside a guide call), the same UNet's forward
    "rule_guide": """
        want, got = guide(), []
        def fn(eu, ep, negs):
            got.append(guide())
            return eu + 2.0 * (ep - eu)
        x = ccfg.sample(toy, positive="A", negative="B", guidance=ccfg.PythonRule(fn), steps=2,
                        n=4, device=dev, progress=False)
        y = ccfg.guide(u, p, [n1], ccfg.PythonRule(fn), device=dev)
        ok = len(got) == 3 and all(same(g, want) for g in got) and np.all(np.isfinite(x))
        ok = ok and same(y, u + 2.0 * (p - u))
    """,
    "rule_preview": """
        want, got = preview(), []
        def fn(eu, ep, negs):
            got.append(preview())
            return eu + 2.0 * (ep - eu)
        x = ccfg.sample(unet, positive="trouser", guidance=ccfg.PythonRule(fn), steps=2, n=2,
                        seed=3, device=dev, progress=False)
        ok = len(got) == 2 and all(same(g, want) for g in got) and np.all(np.isfinite(x))
    """,
    # a non-finite model output in the last step, then a nested run in the progress callback
    # (which resets the device's non-finite watch at its start): still reported, naming the step
    "nan_survives_nested_run": """
        calls = []
        def fn(x, t, cond):
            calls.append(1)
            return np.full_like(x, np.nan) if len(calls) == 3 else 0.1 * x
        pm = ccfg.models.PythonModel(fn, (2,))
        try:
            ccfg.sample(pm, positive="a", guidance="cfg", steps=3, n=3, device=dev,
                        progress=lambda i, n: small_sample())
            ok = False
        except FloatingPointError as e:
            ok = "step" in str(e)
    """,
}


@pytest.mark.parametrize("dev", DEVICES)
def test_reentrant_calls_work(dev):
    """every case in one child per device (a deadlock fails them all, with the child's stacks)"""
    body = ["results = {}"]
    for name, case in CASES.items():
        body.append(f"def case_{name}():")
        body.append(textwrap.indent(textwrap.dedent(case), "    ") + "    return ok")
        body.append(f"try:\n    results[{name!r}] = bool(case_{name}())\n"
                    f"except Exception as e:\n    results[{name!r}] = repr(e)")
    body.append("print(json.dumps(results))")
    got = run_child("\n".join(body), dev)
    assert got == {name: True for name in CASES}
@pytest.mark.parametrize("dev", DEVICES)
def test_a_call_that_cannot_run_raises_instead_of_hanging(dev):
    """A Python signal handler may run inside a C loop's check for Ctrl-C, while the run holds its
    locks (the sampler's per-step check without a progress function, the UNet's between layers):
    a same-device, same-UNet call from it raises RuntimeError naming the re-entrant call instead
    of waiting for itself. Signals arrive every few ms during several runs; handlers that run
    between calls, where nothing is held, just work."""
    got = run_child("""
    import signal, threading, time
    seen, busy = [], []
    def handler(signum, frame):
        if busy:            # a signal during the handler's own call: skip, no recursion
            return
        busy.append(1)
        try:
            preview()
            seen.append("ran")
        except RuntimeError as e:
            seen.append(str(e))
        finally:
            busy.clear()
    signal.signal(signal.SIGUSR1, handler)
    stop = threading.Event()
    def pester():
        while not stop.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            time.sleep(0.003)
    th = threading.Thread(target=pester)
    th.start()
    try:
        for _ in range(3):
            ccfg.sample(unet, positive="trouser", guidance="cfg", steps=6, n=2, device=dev,
                        progress=False)
    finally:
        stop.set()
        th.join()
    print(json.dumps({"seen": seen}))
    """, dev)
    seen = got["seen"]
    assert seen, "no handler ran"
    assert all(s == "ran" or s.startswith("re-entrant call") for s in seen), set(seen)
