"""The run-time autotuner (csrc/vk_tune.c; CCFG_VULKAN_COOP_TILE=auto, ccfg.profiling.tuning).

Two parts:
- the tuner's cache, selection and timestamp path on any Vulkan device (lavapipe 22.3 too),
  through the test hook _core.vk_tune_test: a "test copies" family whose candidate i copies
  size_i floats, and fake medians that make the argmin deterministic;
- the coop convolution with CCFG_VULKAN_COOP_TILE=auto on a device that runs cooperative
  matrices (lavapipe >= 26: `build/toolchain/lavapipe-run .venv/bin/python -m pytest -q
  tests/test_vulkan_tune.py`; those tests skip elsewhere). The precision is read when a device
  opens, so each of those runs in a subprocess, with CCFG_VULKAN_TUNE_CANDIDATES=2x2,2x2p to keep
  lavapipe's pipeline compiles few.

The contract tested: every candidate computes the same bits, so `auto` gives exactly the 2x2
tile's bits whatever it picks (fake medians force it to pick the other tile); the real output is
never written by the tuning runs (accumulate and the residual read y); each shape is timed once;
the choice is the argmin of the recorded medians."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ccfg
from ccfg import _core
# the device under test and its skip marks (every name this file has had, for the tests below)
from vk_helpers import DEV, HAS_COOP, INFO, ROOT, VK, needs_coop, needs_vk  # noqa: F401
RUNS = 4    # per candidate: one warm-up and three timed runs (vk_tune.h)


# --------------------------------------------------------------------------- any device

@pytest.fixture
def clean():
    ccfg.profiling.clear_tuning(DEV)
    _core.vk_tune_test(DEV, "fake", ())
    yield
    _core.vk_tune_test(DEV, "fake", ())
    ccfg.profiling.clear_tuning(DEV)


@needs_vk
def test_each_key_is_timed_once_and_the_choice_is_the_argmin(clean):
    """a miss runs every candidate (warm-up + 3 timed), records the three times and their
    median, and keeps the lowest median; the same key again is a hit with no run; another key
    is timed anew"""
    sizes = (1 << 10, 1 << 22)       # 4 KiB against 16 MiB: the first is faster on any device
    choice, hit = _core.vk_tune_test(DEV, "copies", (1,) + sizes)
    assert not hit
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.hits, t.runs) == (1, 0, RUNS * len(sizes))
    (e,) = t.entries
    assert e["family"] == "test copies" and e["key"] == {"key": 1}
    assert [c[0] for c in e["candidates"]] == ["c0", "c1"]
    for name, median, runs in e["candidates"]:
        assert len(runs) == 3 and all(r > 0 for r in runs), runs
        assert median == sorted(runs)[1]
    medians = [m for _, m, _ in e["candidates"]]
    assert e["choice"] == f"c{int(np.argmin(medians))}" == f"c{choice}"
    assert choice == 0, e     # 4096 times the bytes is not faster
    # the cache answers: no run
    for _ in range(3):
        assert _core.vk_tune_test(DEV, "copies", (1,) + sizes) == (choice, True)
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.hits, t.runs) == (1, 3, RUNS * len(sizes))
    # another key: timed
    assert _core.vk_tune_test(DEV, "copies", (2,) + sizes)[1] is False
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.runs) == (2, 2 * RUNS * len(sizes))
    assert "test copies" in str(t) and "2 shapes tuned" in str(t)


@needs_vk
@pytest.mark.parametrize("fake,want", [((3.0, 1.0, 2.0), 1), ((1.0, 2.0, 3.0), 0),
                                       ((2.0, 2.0, 1.5), 2), ((1.0, 1.0, 1.0), 0),
                                       ((4.0, 0.5, 0.5), 1)])
def test_choice_is_the_argmin_of_the_medians_first_on_ties(clean, fake, want):
    """with the medians replaced (the candidates still run), the lowest wins; a tie keeps the
    earlier candidate (the caller lists its default first)"""
    _core.vk_tune_test(DEV, "fake", fake)
    choice, hit = _core.vk_tune_test(DEV, "copies", (7, 64, 64, 64))
    assert (choice, hit) == (want, False)
    (e,) = ccfg.profiling.tuning(DEV).entries
    assert [m for _, m, _ in e["candidates"]] == list(fake)
    assert e["choice"] == f"c{want}"


@needs_vk
def test_clear_forgets_and_the_next_call_tunes_again(clean):
    _core.vk_tune_test(DEV, "copies", (3, 16, 32))
    t = ccfg.profiling.tuning(DEV)
    assert t.tuned == 1
    t.clear()
    t = ccfg.profiling.tuning(DEV)
    assert (t.entries, t.tuned, t.hits, t.runs) == ([], 0, 0, 0)
    assert _core.vk_tune_test(DEV, "copies", (3, 16, 32))[1] is False
    assert ccfg.profiling.tuning(DEV).tuned == 1


@needs_vk
def test_the_profile_does_not_see_the_tuning_runs(clean):
    """the tuner's runs are its own batches, outside the user's profile"""
    with ccfg.profiling.profile(DEV) as prof:
        _core.vk_tune_test(DEV, "copies", (4, 256, 512))
    assert not [k for k, _, _ in prof.rows if k.startswith("copy")], prof.rows
    assert ccfg.profiling.tuning(DEV).runs == 2 * RUNS


@needs_vk
def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="device"):
        ccfg.profiling.tuning("cpu")
    with pytest.raises(ValueError, match="device"):
        ccfg.profiling.clear_tuning("cpu")
    with pytest.raises(ValueError, match="action"):
        _core.vk_tuning(DEV, "forget")
    with pytest.raises(ValueError, match="device"):
        _core.vk_tuning("cpu", "read")
    with pytest.raises(ValueError, match="values"):
        _core.vk_tune_test(DEV, "fake", tuple(range(17)))


# --------------------------------------------------------------------------- the coop convolution

def run_json(code, env_extra, timeout=1800):
    env = dict(os.environ, CCFG_VULKAN_PRECISION="coop", CCFG_VULKAN_TUNE_CANDIDATES="2x2,2x2p")
    env.pop("CCFG_VULKAN_COOP_SINGLE_BUFFER", None)
    env.pop("CCFG_VULKAN_COOP_TILE", None)
    env.update(env_extra)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# (batch, cin, h, w, cout, k, stride, pad0, pad1, mode), as tests/test_vulkan_coop.py: partial
# tiles, k 1 and 3, stride 2, chunk-free sizes; mode bias, acc (onto y), res (a residual of its
# own), res_y (the residual is y)
CASES = [(3, 21, 9, 7, 70, 3, 1, 1, 1, "bias"), (3, 21, 9, 7, 70, 3, 1, 1, 1, "acc"),
         (2, 37, 9, 9, 65, 3, 2, 0, 1, "bias"), (2, 13, 5, 3, 33, 1, 1, 0, 0, "acc"),
         (1, 130, 6, 5, 200, 3, 1, 1, 1, "res"), (2, 24, 7, 6, 48, 3, 1, 1, 1, "res_y")]

OPS = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core

def conv(case, seed):
    batch, cin, h, w, cout, k, s, p0, p1, mode = case
    rng = np.random.default_rng(seed)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal(cout * batch * ho * wo).astype(np.float32)
    r = rng.standard_normal(cout * batch * ho * wo).astype(np.float32)
    ints = (batch, cin, h, w, cout, k, s, p0, p1)
    if mode in ("bias", "acc"):
        acc = mode == "acc"
        return _core.nn_op(DEV, "conv2d", [x, wt, None if acc else b], [y0], ints + (int(acc),),
                           (), None, None)[0]
    if mode == "res":
        return _core.nn_op(DEV, "conv2d_residual", [x, wt, b, r], [y0], ints + (0,), (), None,
                           None)[0]
    return _core.nn_op(DEV, "conv2d_residual", [x, wt, b], [y0], ints + (1,), (), None, None)[0]

out = {"same": [], "kinds": [], "tuned": [], "choice": []}
for i, case in enumerate(CASES):
    os.environ["CCFG_VULKAN_COOP_TILE"] = "2x2"
    ref = conv(case, 500 + i).tobytes()
    os.environ["CCFG_VULKAN_COOP_TILE"] = "auto"
    _core.vk_tune_test(DEV, "fake", (2.0, 1.0))     # 2x2p "wins": auto runs the other tile
    first = conv(case, 500 + i).tobytes()
    _core.vk_tune_test(DEV, "fake", ())
    t0 = ccfg.profiling.tuning(DEV)
    with ccfg.profiling.profile(DEV) as prof:
        again = conv(case, 500 + i).tobytes()
    t1 = ccfg.profiling.tuning(DEV)
    out["same"].append([first == ref, again == ref])
    out["kinds"].append([k for k, _, _ in prof.rows if k.startswith("nn_conv2d_coop")])
    out["tuned"].append([t0.tuned, t0.runs, t1.tuned, t1.runs, t1.hits - t0.hits])
    out["choice"].append(t1.entries[-1]["choice"])
print(json.dumps(out))
"""


@needs_coop
def test_auto_gives_the_2x2_bits_on_single_convolutions():
    """bias, accumulate, a residual of its own and the residual y itself: auto made to pick 2x2p
    (fake medians) gives exactly 2x2's bits on its tuning call (so the tuning runs, into scratch,
    left y alone: an accumulate or residual run into y would show) and on the cached call, which
    runs the chosen tile's shader once and times nothing"""
    got = run_json(f"DEV = {DEV!r}\nCASES = {CASES!r}\n" + OPS, {})
    for case, same in zip(CASES, got["same"]):
        assert same == [True, True], case
    for i, (case, kinds) in enumerate(zip(CASES, got["kinds"])):
        assert len(kinds) == 1 and kinds[0].endswith("_t22p"), (case, kinds)
        assert got["choice"][i] == "2x2p"
        tuned0, runs0, tuned1, runs1, hits = got["tuned"][i]
        assert (tuned1, runs1) == (tuned0, runs0) and hits == 1, (case, got["tuned"][i])
    # one shape per case (acc and bias on the same sizes are two keys: the flags differ)
    assert [t[0] for t in got["tuned"]] == list(range(1, len(CASES) + 1))
    assert got["tuned"][-1][1] == len(CASES) * 2 * RUNS


UNET = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(0).standard_normal((2,) + unet.shape).astype(np.float32)
labels = np.array([1, 7])
os.environ.pop("CCFG_VULKAN_COOP_TILE", None)
default = unet(x, 500, labels, device=DEV)
t0 = ccfg.profiling.tuning(DEV)
os.environ["CCFG_VULKAN_COOP_TILE"] = "2x2"
ref = unet(x, 500, labels, device=DEV)
os.environ["CCFG_VULKAN_COOP_TILE"] = "auto"
a = unet(x, 500, labels, device=DEV)
t1 = ccfg.profiling.tuning(DEV)
b = unet(x, 500, labels, device=DEV)
t2 = ccfg.profiling.tuning(DEV)
ok_argmin = all(e["choice"] == min(e["candidates"], key=lambda c: c[1])[0] for e in t1.entries)
first_on_tie = all(e["candidates"][0][0] == "2x2" for e in t1.entries)
out = dict(same=[bool(np.array_equal(a, ref)), bool(np.array_equal(b, ref)),
                 bool(np.array_equal(default, ref))], t0=[t0.tuned, t0.runs, t0.hits],
           t1=[t1.tuned, t1.runs, t1.hits], t2=[t2.tuned, t2.runs, t2.hits],
           families=sorted({e["family"] for e in t1.entries}), argmin=ok_argmin,
           first=first_on_tie, text=str(t1))
errors = {}
for name, env in [("tile", {"CCFG_VULKAN_COOP_TILE": "AUTO"}),
                  ("cands", {"CCFG_VULKAN_COOP_TILE": "auto",
                             "CCFG_VULKAN_TUNE_CANDIDATES": "2x2,9x9"}),
                  ("sb", {"CCFG_VULKAN_COOP_TILE": "auto", "CCFG_VULKAN_COOP_SINGLE_BUFFER": "1"})]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ccfg.profiling.clear_tuning(DEV)
    try:
        unet(x, 500, labels, device=DEV)
    except Exception as e:
        errors[name] = f"{type(e).__name__}: {e}"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
out["errors"] = errors
print(json.dumps(out))
"""


@needs_coop
def test_auto_unet_forward_same_bits_tuned_once():
    """the shipped UNet forward: unset is 2x2 and tunes nothing; auto gives 2x2's bits; the first
    forward tunes each shape once, a second adds no timing run (only cache hits); every choice
    is the argmin of its recorded medians; bad values of the switches raise naming them"""
    got = run_json(f"DEV = {DEV!r}\n" + UNET, {})
    assert got["same"] == [True, True, True]
    assert got["t0"] == [0, 0, 0], got     # unset: 2x2, nothing tuned
    tuned, runs, hits = got["t1"]
    assert tuned >= 3 and runs == tuned * 2 * RUNS, got
    assert got["t2"][0] == tuned and got["t2"][1] == runs and got["t2"][2] > hits, got
    assert got["families"] == ["conv2d coop8"] or got["families"] == ["conv2d coop"], got
    assert got["argmin"] and got["first"], got["text"]
    e = got["errors"]
    assert e["tile"].startswith("ValueError") and "CCFG_VULKAN_COOP_TILE" in e["tile"] and \
        "auto" in e["tile"], e
    assert e["cands"].startswith("ValueError") and "CCFG_VULKAN_TUNE_CANDIDATES" in e["cands"] \
        and "9x9" in e["cands"], e
    assert "CCFG_VULKAN_COOP_SINGLE_BUFFER" in e["sb"] and "auto" in e["sb"], e
