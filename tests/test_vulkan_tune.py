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
from pathlib import Path

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


# --------------------------------------------------------------------------- the float32 variants
# CCFG_VULKAN_CONV_TILE=auto (csrc/nn_vk.c simt_autotune): the float32 tiled convolution's four
# variants (64x128, 64x128db, 128x128, 128x128db; tests/test_vulkan_conv_tiles.py) give the same
# bits, so `auto` must give 64x128's whatever it picks. These run on any Vulkan device (lavapipe
# 22.3 included), with small shapes.

FP32_TILES = ["64x128", "64x128db", "128x128", "128x128db"]
# the profile's kind of each variant's pipeline (csrc/backend_vk.c pipe_spec)
FP32_KINDS = {"64x128": "nn_conv2d", "64x128db": "nn_conv2d_t64db", "128x128": "nn_conv2d_t128",
              "128x128db": "nn_conv2d_t128db"}
FP32_SWITCHES = ("CCFG_VULKAN_PRECISION", "CCFG_VULKAN_CONV_TILE", "CCFG_VULKAN_CONV_SPLITK",
                 "CCFG_VULKAN_TUNE_CANDIDATES", "CCFG_VULKAN_TUNE_CACHE", "CCFG_VULKAN_COOP_TILE",
                 "CCFG_VULKAN_NORM_FOLD")


def run_fp32(code, args=(), env_extra=None, timeout=600):
    """the last stdout line (JSON) of `code` in a fresh process (the worktree's ccfg), without
    the tuner's switches of ours unless env_extra sets them"""
    env = {k: v for k, v in os.environ.items() if k not in FP32_SWITCHES}
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# (batch, cin, h, w, cout, k, stride, pad0, pad1): 189 pixels and 70 output channels (partial
# tiles of 64 and 128), stride 2 with asymmetric padding, a 1x1 over one tile of each, and
# 256 -> 256 at 4x4 (the CIFAR model's lowest level: enough stages for split-K's rule)
FP32_SHAPES = {"a": [3, 21, 9, 7, 70, 3, 1, 1, 1], "s2": [2, 37, 9, 9, 65, 3, 2, 0, 1],
               "1x1": [2, 64, 8, 8, 128, 1, 1, 0, 0], "deep": [2, 256, 4, 4, 256, 3, 1, 1, 1]}

FP32_OPS = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import _core
DEV, CASES, SHAPES = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
os.environ["CCFG_VULKAN_NORM_FOLD"] = "1"     # read at every call
TILES = ["64x128", "64x128db", "128x128", "128x128db"]


def conv(shape, mode, seed):
    batch, cin, h, w, cout, k, s, p0, p1 = shape
    rng = np.random.default_rng(seed)
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    ny = cout * batch * ho * wo
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = (rng.standard_normal(cout * cin * k * k) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y0 = rng.standard_normal(ny).astype(np.float32)
    r = rng.standard_normal(ny).astype(np.float32)
    ab = np.empty(2 * batch * cin, np.float32)
    ab[0::2] = rng.uniform(0.5, 1.5, batch * cin)
    ab[1::2] = rng.standard_normal(batch * cin)
    i = tuple(shape)
    op, ins, ints = {
        "bias": ("conv2d", [x, wt, b], i + (0,)),
        "acc": ("conv2d", [x, wt, None], i + (1,)),
        "res": ("conv2d_residual", [x, wt, b, r], i + (0,)),
        "res_y": ("conv2d_residual", [x, wt, b], i + (1,)),
        "fold": ("conv2d_packed_norm", [x, wt, b, ab, r], i + (0, 1, 1)),
        "fold_acc": ("conv2d_packed_norm", [x, wt, None, ab], i + (1, 0, 0)),
    }[mode]
    return _core.nn_op(DEV, op, ins, [y0], ints, (), None, None)[0]


out = {"same": [], "kinds": [], "counts": [], "choice": [], "keys": []}
for n, (shape_name, mode) in enumerate(CASES):
    shape = SHAPES[shape_name]
    os.environ["CCFG_VULKAN_CONV_TILE"] = "64x128"
    ref = conv(shape, mode, 700 + n).view(np.uint32)
    want = 1 + n % 3                           # each non-default variant in turn
    fake = [2.0] * 4
    fake[want] = 1.0
    os.environ["CCFG_VULKAN_CONV_TILE"] = "auto"
    _core.vk_tune_test(DEV, "fake", tuple(fake))
    t0 = ccfg.profiling.tuning(DEV)
    first = conv(shape, mode, 700 + n).view(np.uint32)
    _core.vk_tune_test(DEV, "fake", ())
    t1 = ccfg.profiling.tuning(DEV)
    with ccfg.profiling.profile(DEV) as prof:
        again = conv(shape, mode, 700 + n).view(np.uint32)
    t2 = ccfg.profiling.tuning(DEV)
    e = t1.entries[-1]
    out["same"].append([bool(np.array_equal(first, ref)), bool(np.array_equal(again, ref))])
    out["kinds"].append(sorted({k for k, _, _ in prof.rows if k.startswith("nn_conv2d")
                                and k != "nn_conv2d_reduce"}))
    out["counts"].append([t1.tuned - t0.tuned, t1.runs - t0.runs, t2.runs - t1.runs,
                          t2.hits - t1.hits])
    out["choice"].append([e["choice"], TILES[want], [c[0] for c in e["candidates"]],
                          e["family"]])
    out["keys"].append(e["key"])
print(json.dumps(out))
"""

FP32_CASES = {
    "": [("a", m) for m in ("bias", "acc", "res", "res_y", "fold", "fold_acc")]
    + [("s2", "bias"), ("s2", "fold"), ("1x1", "acc"), ("1x1", "res"), ("deep", "bias")],
    "2": [("a", "bias"), ("a", "fold_acc"), ("deep", "res")],
    "auto": [("a", "acc"), ("deep", "bias"), ("deep", "fold")],
}


@needs_vk
@pytest.mark.parametrize("splitk", ["", "2", "auto"])
def test_fp32_auto_gives_the_64x128_bits_on_single_convolutions(splitk):
    """bias, accumulate, a residual of its own and y itself, the folded GroupNorm(+SiLU), stride 2,
    1x1, split-K off, 2 and auto: auto made to pick each other variant in turn (fake medians)
    gives exactly 64x128's bits on its tuning call (so the runs, into scratch, left y alone) and
    on the cached call, which runs the chosen variant's pipeline once and times nothing; the key
    holds split-K's slices and the chunk"""
    cases = FP32_CASES[splitk]
    got = run_fp32(FP32_OPS, (DEV, json.dumps(cases), json.dumps(FP32_SHAPES)),
                   {"CCFG_VULKAN_CONV_SPLITK": splitk})
    for case, same, kinds, counts, (choice, want, cands, family), key in zip(
            cases, got["same"], got["kinds"], got["counts"], got["choice"], got["keys"]):
        assert same == [True, True], case
        assert family == "conv2d fp32" and cands == FP32_TILES, (case, cands)
        assert choice == want and kinds == [FP32_KINDS[want]], (case, choice, kinds)
        assert counts == [1, 4 * RUNS, 0, 1], (case, counts)
        shape = FP32_SHAPES[case[0]]
        assert key["cin"] == shape[1] and key["chunk"] == shape[1], key
        assert key["norm"] == case[1].startswith("fold"), key
        stages = shape[5] ** 2 * -(-shape[1] // 8)
        if splitk == "":
            assert key["slices"] == key["slices_last"] == 1, key
        elif splitk == "2":
            assert key["slices"] == key["slices_last"] == 2, key
        elif case[0] == "deep":     # the rule: 4 workgroups, 288 stages -> 18 slices
            assert stages == 288 and key["slices"] == key["slices_last"] == 18, key


FP32_UNET = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import _core
DEV = sys.argv[1]
unet = ccfg.models.load("fashion-mnist")
x = np.random.default_rng(0).standard_normal((1,) + unet.shape).astype(np.float32)
labels = np.array([3])
default = unet(x, 500, labels, device=DEV)
t0 = ccfg.profiling.tuning(DEV)
os.environ["CCFG_VULKAN_CONV_TILE"] = "64x128"
ref = unet(x, 500, labels, device=DEV)
os.environ["CCFG_VULKAN_CONV_TILE"] = "auto"
a = unet(x, 500, labels, device=DEV)
t1 = ccfg.profiling.tuning(DEV)
b = unet(x, 500, labels, device=DEV)
t2 = ccfg.profiling.tuning(DEV)
same = [bool(np.array_equal(o.view(np.uint32), ref.view(np.uint32))) for o in (a, b, default)]
print(json.dumps(dict(
    same=same, t0=[t0.tuned, t0.runs, t0.hits], t1=[t1.tuned, t1.runs, t1.hits],
    t2=[t2.tuned, t2.runs, t2.hits], families=sorted({e["family"] for e in t1.entries}),
    argmin=all(e["choice"] == min(e["candidates"], key=lambda c: c[1])[0] for e in t1.entries),
    first=all([c[0] for c in e["candidates"]] == ["64x128", "64x128db"] for e in t1.entries),
    keys=len({json.dumps(e["key"], sort_keys=True) for e in t1.entries}), text=str(t1))))
"""


@needs_vk
def test_fp32_auto_unet_forward_same_bits_tuned_once():
    """the shipped UNet forward (1 row; two candidates, to keep lavapipe quick): unset is 64x128
    and tunes nothing; auto gives 64x128's bits; the first forward tunes each shape once, a
    second adds no run (only cache hits); every choice is the argmin of its medians, 64x128
    listed first"""
    got = run_fp32(FP32_UNET, (DEV,), {"CCFG_VULKAN_TUNE_CANDIDATES": "64x128,64x128db"})
    assert got["same"] == [True, True, True], got
    assert got["t0"] == [0, 0, 0], got
    tuned, runs, hits = got["t1"]
    assert tuned >= 5 and runs == tuned * 2 * RUNS and got["keys"] == tuned, got
    assert got["t2"][:2] == [tuned, runs] and got["t2"][2] > hits, got
    assert got["families"] == ["conv2d fp32"], got
    assert got["argmin"] and got["first"], got["text"]


def _conv_1x1(seed=0):
    """a float32 tiled convolution (128 output channels, 1x1) in this process -> its output"""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(2 * 64 * 64).astype(np.float32)
    w = rng.standard_normal(128 * 64).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    return _core.nn_op(DEV, "conv2d", [x, w, b], [np.zeros(2 * 128 * 64, np.float32)],
                       (2, 64, 8, 8, 128, 1, 1, 0, 0, 0), (), None, None)[0]


def _kinds(prof):
    return sorted({k for k, _, _ in prof.rows if k.startswith("nn_conv2d")})


@needs_vk
def test_one_candidate_list_for_both_families(clean, monkeypatch):
    """CCFG_VULKAN_TUNE_CANDIDATES: a token applies to the family whose variant it names; a
    family the list does not name keeps its default, untimed; one candidate is used untimed; a
    token naming no variant of either family raises, naming the variable"""
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "64x128")
    ref = _conv_1x1().view(np.uint32)
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "auto")
    # a coop-only list: the float32 family keeps 64x128, nothing is timed
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", "2x2,2x2p")
    with ccfg.profiling.profile(DEV) as prof:
        y = _conv_1x1().view(np.uint32)
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.runs, t.entries) == (0, 0, []) and _kinds(prof) == ["nn_conv2d"]
    assert np.array_equal(y, ref)
    # one float32 variant named (with a coop tile): it runs, untimed
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", "2x2,64x128db")
    with ccfg.profiling.profile(DEV) as prof:
        y = _conv_1x1().view(np.uint32)
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.runs) == (0, 0) and _kinds(prof) == ["nn_conv2d_t64db"]
    assert np.array_equal(y, ref)
    # two float32 variants and a coop tile: the two are timed
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", "128x128,4x4pp,64x128")
    y = _conv_1x1().view(np.uint32)
    (e,) = ccfg.profiling.tuning(DEV).entries
    assert [c[0] for c in e["candidates"]] == ["64x128", "128x128"], e    # the default first
    assert ccfg.profiling.tuning(DEV).runs == 2 * RUNS and np.array_equal(y, ref)
    # the same shape under another list is another question: timed again
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", "64x128,128x128db")
    _conv_1x1()
    t = ccfg.profiling.tuning(DEV)
    assert t.tuned == 2 and [c[0] for c in t.entries[-1]["candidates"]] == ["64x128",
                                                                            "128x128db"]
    for bad in ("64x128,4x4q", "64x128,", "64X128"):
        monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", bad)
        with pytest.raises(ValueError, match="CCFG_VULKAN_TUNE_CANDIDATES.*not a candidate of "
                                             "any family"):
            _conv_1x1()


FP16_TILE = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import _core
DEV = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.standard_normal(2 * 64 * 64).astype(np.float32)
w = rng.standard_normal(128 * 64).astype(np.float32)
out = {}
for cout in (128, 32):      # the float16 tiled shader; the float32 direct shader
    os.environ["CCFG_VULKAN_CONV_TILE"] = "96x128"
    try:
        _core.nn_op(DEV, "conv2d", [x, w[:cout * 64], None], [np.zeros(2 * cout * 64, np.float32)],
                    (2, 64, 8, 8, cout, 1, 1, 0, 0, 0), (), None, None)
        out[cout] = "no error"
    except ValueError as e:
        out[cout] = str(e)
    os.environ["CCFG_VULKAN_CONV_TILE"] = "auto"     # no float32 variant here: nothing tuned
    with ccfg.profiling.profile(DEV) as prof:
        _core.nn_op(DEV, "conv2d", [x, w[:cout * 64], None], [np.zeros(2 * cout * 64, np.float32)],
                    (2, 64, 8, 8, cout, 1, 1, 0, 0, 0), (), None, None)
    out[f"kinds{cout}"] = sorted(k for k, _, _ in prof.rows if k.startswith("nn_conv2d"))
t = ccfg.profiling.tuning(DEV)
out["tuned"] = [t.tuned, t.runs]
print(json.dumps(out))
"""


@needs_vk
def test_conv_tile_is_validated_on_every_path(monkeypatch):
    """a bad CCFG_VULKAN_CONV_TILE raises naming the variable wherever a convolution runs: the
    float32 tiled and direct shaders here, the float16 tiled shader (CCFG_VULKAN_PRECISION=fp16)
    in a subprocess; auto there tunes nothing"""
    for cout in (128, 32):
        monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "96x128")
        with pytest.raises(ValueError, match=r"CCFG_VULKAN_CONV_TILE must be .* or auto .*"
                                             r"'96x128'"):
            _core.nn_op(DEV, "conv2d", [np.ones(2 * 64 * 16, np.float32),
                                        np.ones(cout * 64, np.float32), None],
                        [np.zeros(2 * cout * 16, np.float32)], (2, 64, 4, 4, cout, 1, 1, 0, 0, 0),
                        (), None, None)
    if "fp16" not in INFO.get("precisions", []):
        pytest.skip("the device has no float16 storage (CCFG_VULKAN_PRECISION=fp16)")
    got = run_fp32(FP16_TILE, (DEV,), {"CCFG_VULKAN_PRECISION": "fp16"})
    for cout in ("128", "32"):
        assert "CCFG_VULKAN_CONV_TILE" in got[cout] and "96x128" in got[cout], got
    assert got["tuned"] == [0, 0], got
    assert got["kinds128"] == ["nn_conv2d_f16"] and got["kinds32"] == ["nn_conv2d_direct"], got


# --------------------------------------------------------------------------- the saved cache
# CCFG_VULKAN_TUNE_CACHE=/path and ccfg.profiling.save_tuning / load_tuning (csrc/vk_tune.c, "the
# file"): a decision measured in one process is used by another on the same device without any
# timing run, and never on another device or shader build.

CACHE = r"""
import hashlib, json, os, sys
import numpy as np
import ccfg
from ccfg import _core
DEV, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
SHAPES = [(2, 21, 9, 7, 70, 3, 1, 1, 1), (2, 64, 8, 8, 128, 1, 1, 0, 0)]


def conv(shape):
    batch, cin, h, w, cout, k, s, p0, p1 = shape
    rng = np.random.default_rng(sum(shape))
    ho, wo = (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1
    x = rng.standard_normal(cin * batch * h * w).astype(np.float32)
    wt = rng.standard_normal(cout * cin * k * k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y = np.zeros(cout * batch * ho * wo, np.float32)
    return _core.nn_op(DEV, "conv2d", [x, wt, b], [y], tuple(shape) + (0,), (), None, None)[0]


def digest(ys):
    return hashlib.sha256(b"".join(y.tobytes() for y in ys)).hexdigest()


out = {}
os.environ["CCFG_VULKAN_CONV_TILE"] = "64x128"
out["ref"] = digest([conv(s) for s in SHAPES])
os.environ["CCFG_VULKAN_CONV_TILE"] = "auto"
if "fake" in mode:      # 128x128db "wins": a decision no default could explain
    _core.vk_tune_test(DEV, "fake", (2.0, 2.0, 2.0, 1.0))
if "load" in mode:
    out["applied"] = ccfg.profiling.load_tuning(path, DEV)
with ccfg.profiling.profile(DEV) as prof:
    out["bits"] = digest([conv(s) for s in SHAPES])
_core.vk_tune_test(DEV, "fake", ())
t = ccfg.profiling.tuning(DEV)
out.update(tuned=t.tuned, runs=t.runs, hits=t.hits, loaded=t.loaded,
           choices=[e["choice"] for e in t.entries], from_file=[e["loaded"] for e in t.entries],
           kinds=sorted({k for k, _, _ in prof.rows if k.startswith("nn_conv2d")}),
           identity=_core.vk_tuning(DEV, "identity"))
if "save" in mode:
    out["saved"] = ccfg.profiling.save_tuning(path, DEV)
print(json.dumps(out))
"""


def entry_lines(path):
    return [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith(("#",
                                                                                        "ccfg-"))]


@needs_vk
def test_cache_variable_round_trip_in_a_fresh_process(tmp_path):
    """CCFG_VULKAN_TUNE_CACHE: the first process times both shapes (and writes the file, no save
    call); a second process reads it and times nothing: 0 runs, both decisions loaded and used
    (the profile shows the chosen variant's pipeline), the same bits"""
    path = tmp_path / "tune.txt"
    env = {"CCFG_VULKAN_TUNE_CACHE": str(path)}
    first = run_fp32(CACHE, (DEV, "fake", path), env)
    assert (first["tuned"], first["runs"], first["loaded"]) == (2, 2 * 4 * RUNS, 0), first
    assert first["choices"] == ["128x128db"] * 2 and first["bits"] == first["ref"]
    lines = entry_lines(path)
    assert len(lines) == 2 and all(ln.startswith(first["identity"] + "\t") for ln in lines), lines
    assert all(ln.split("\t")[1:5:3] == ["conv2d fp32", "128x128db"] for ln in lines), lines
    second = run_fp32(CACHE, (DEV, "-", path), env)
    assert (second["tuned"], second["runs"], second["loaded"], second["hits"]) == (0, 0, 2, 2)
    assert second["choices"] == ["128x128db"] * 2 and second["from_file"] == [True, True]
    assert second["kinds"] == ["nn_conv2d_t128db"], second
    assert second["bits"] == first["bits"] == second["ref"]
    assert entry_lines(path) == lines       # nothing new to write


@needs_vk
def test_save_and_load_round_trip_in_a_fresh_process(tmp_path):
    """ccfg.profiling.save_tuning in one process, load_tuning in the next: 0 runs, same bits"""
    path = tmp_path / "tune.txt"
    first = run_fp32(CACHE, (DEV, "fake,save", path))
    assert first["saved"] == 2 and first["tuned"] == 2
    second = run_fp32(CACHE, (DEV, "load", path))
    assert second["applied"] == 2 and (second["tuned"], second["runs"], second["hits"]) == (0, 0, 2)
    assert second["kinds"] == ["nn_conv2d_t128db"] and second["bits"] == first["bits"] == \
        first["ref"]


@needs_vk
def test_a_cache_of_another_device_is_not_applied_and_kept(tmp_path):
    """lines whose device differs (here the vendor id) are not applied: the shapes are timed
    again; rewriting the file keeps those lines next to this device's new ones"""
    path = tmp_path / "tune.txt"
    env = {"CCFG_VULKAN_TUNE_CACHE": str(path)}
    first = run_fp32(CACHE, (DEV, "fake", path), env)
    ident = first["identity"]
    other = "ffff" + ident[4:]
    text = path.read_text().replace(ident + "\t", other + "\t")
    path.write_text(text)
    second = run_fp32(CACHE, (DEV, "-", path), env)
    assert (second["loaded"], second["tuned"], second["runs"]) == (0, 2, 2 * 4 * RUNS), second
    assert second["bits"] == second["ref"]
    lines = entry_lines(path)
    assert len(lines) == 4, lines
    assert sorted(ln.split("\t")[0] for ln in lines) == sorted([ident] * 2 + [other] * 2)


def _identity_fields():
    return _core.vk_tuning(DEV, "identity").split(":")


def _line(ident, key, cands, choice):
    times = ",".join(f"{1.0 + i}/{1.0 + i}/{1.0 + i}/{1.0 + i}" for i in range(len(cands)))
    return "\t".join([ident, "conv2d fp32", key, ",".join(cands), choice, times])


# the key of _conv_1x1 (no split-K, one chunk of its 64 input channels)
KEY_1X1 = ("batch=2,cin=64,h=8,w=8,cout=128,k=1,stride=1,pad0=0,ho=8,wo=8,bias=1,accumulate=0,"
           "residual=0,norm=0,silu=0,chunk=64,slices=1,slices_last=1")


@needs_vk
@pytest.mark.parametrize("field", [0, 1, 2, 3, 4])
def test_a_decision_applies_to_its_own_device_and_question_only(clean, monkeypatch, tmp_path,
                                                                field):
    """a line written by hand for this device, this shape and these candidates is used without
    timing; the same line with any part of the device's identity changed (vendor, device,
    driver version, pipelineCacheUUID, shader hash) is not applied; nor is it for another
    candidate list"""
    ident = _identity_fields()
    path = tmp_path / "tune.txt"
    cands = ["64x128", "128x128db"]
    changed = list(ident)
    changed[field] = "f" * len(changed[field]) if changed[field] != "f" * len(changed[field]) \
        else "0" * len(changed[field])
    path.write_text("ccfg-tune-cache 1\n" + _line(":".join(changed), KEY_1X1, cands, cands[1])
                    + "\n" + _line(":".join(ident), KEY_1X1, cands, cands[1]) + "\n")
    if field == 0:      # drop this device's line: only the other one is left
        path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
        assert _core.vk_tuning(DEV, "load", str(path)) == (0, 1)
        monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "auto")
        monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", ",".join(cands))
        _conv_1x1()
        assert ccfg.profiling.tuning(DEV).tuned == 1      # timed: nothing applied
        return
    assert _core.vk_tuning(DEV, "load", str(path)) == (1, 1)
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "64x128")
    ref = _conv_1x1().view(np.uint32)
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "auto")
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CANDIDATES", ",".join(cands))
    with ccfg.profiling.profile(DEV) as prof:
        y = _conv_1x1().view(np.uint32)
    t = ccfg.profiling.tuning(DEV)
    assert (t.tuned, t.runs, t.hits, t.loaded) == (0, 0, 1, 1) and np.array_equal(y, ref)
    assert _kinds(prof) == ["nn_conv2d_t128db"]
    # all four variants: another question, timed
    monkeypatch.delenv("CCFG_VULKAN_TUNE_CANDIDATES")
    assert np.array_equal(_conv_1x1().view(np.uint32), ref)
    assert ccfg.profiling.tuning(DEV).tuned == 1


@needs_vk
@pytest.mark.parametrize("text,why", [
    ("hello\n", "not a ccfg tuning cache"),
    ("ccfg-tune-cache 2\n", "not a ccfg tuning cache"),
    ("ccfg-tune-cache 1\nnot\tenough\tfields\n", "line 2: not 6 tab-separated fields"),
    ("ccfg-tune-cache 1\n{id}\tconv2d fp32\t{key}\t64x128,64x128db\t128x128\t1/1/1/1,2/2/2/2\n",
     "the choice is not one of the candidates"),
    ("ccfg-tune-cache 1\n# c\n\n{id}\tconv2d fp32\t{key}\t64x128\t64x128\t1/1/x/1\n",
     "line 4: a run's time is not a number"),
    ("ccfg-tune-cache 1\n{id}\tconv2d fp32\tbatch=two\t64x128\t64x128\t1/1/1/1\n",
     "a key field is not name=integer"),
    ("ccfg-tune-cache 1\n{id}\tconv2d fp32\t{key}\t64x128\t64x128\t1/1/1\n",
     "median/run/run/run"),
    ("ccfg-tune-cache 1\nZZ\tconv2d fp32\t{key}\t64x128\t64x128\t1/1/1/1\n",
     "the device is not hex"),
    ("ccfg-tune-cache 1\n\0\n", "NUL byte"),
])
def test_a_malformed_cache_raises_naming_the_argument(clean, monkeypatch, tmp_path, text, why):
    """load_tuning names `path`; the variable names itself (at the first auto convolution);
    save_tuning refuses to overwrite it; nothing of the file is applied"""
    path = tmp_path / "bad.txt"
    path.write_bytes(text.format(id=_core.vk_tuning(DEV, "identity"), key=KEY_1X1).encode())
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"path: .*{why}"):
        ccfg.profiling.load_tuning(path, DEV)
    with pytest.raises(ValueError, match=f"path: .*{why}"):
        ccfg.profiling.save_tuning(path, DEV)
    # no temporary file left (save's lock side file, bad.txt.lock, stays: csrc/vk_tune.c lock_path)
    assert path.read_bytes() == before and \
        sorted(p.name for p in tmp_path.iterdir()) in (["bad.txt"], ["bad.txt", "bad.txt.lock"])
    monkeypatch.setenv("CCFG_VULKAN_CONV_TILE", "auto")
    monkeypatch.setenv("CCFG_VULKAN_TUNE_CACHE", str(path))
    with pytest.raises(ValueError, match=f"CCFG_VULKAN_TUNE_CACHE: .*{why}"):
        _conv_1x1()
    t = ccfg.profiling.tuning(DEV)
    assert (t.loaded, t.tuned, t.entries) == (0, 0, [])


@needs_vk
def test_cache_arguments(clean, tmp_path):
    """a missing file raises for load_tuning (the variable treats it as empty: the first decision
    creates it); save_tuning writes an empty cache that loads; bad arguments name themselves"""
    with pytest.raises(ValueError, match="path: no tuning cache"):
        ccfg.profiling.load_tuning(tmp_path / "missing.txt", DEV)
    path = tmp_path / "empty.txt"
    assert ccfg.profiling.save_tuning(str(path), DEV) == 0
    assert path.read_text().startswith("ccfg-tune-cache 1\n")
    assert ccfg.profiling.load_tuning(path, DEV) == 0
    with pytest.raises(ValueError, match="path"):
        ccfg.profiling.save_tuning("", DEV)
    with pytest.raises(TypeError, match="path"):
        ccfg.profiling.load_tuning(3, DEV)
    with pytest.raises(ValueError, match="device"):
        ccfg.profiling.save_tuning(path, "cpu")
    with pytest.raises(ValueError, match="path: cannot write next to"):
        ccfg.profiling.save_tuning(tmp_path / "no" / "such" / "dir.txt", DEV)


COOP_FAMILIES = r"""
import json, os
import numpy as np
import ccfg
from ccfg import _core
rng = np.random.default_rng(0)
x = rng.standard_normal(2 * 64 * 64).astype(np.float32)
w = rng.standard_normal(128 * 64).astype(np.float32)


def conv():
    return _core.nn_op(DEV, "conv2d", [x, w, None], [np.zeros(2 * 128 * 64, np.float32)],
                       (2, 64, 8, 8, 128, 1, 1, 0, 0, 0), (), None, None)[0]


out = {}
os.environ["CCFG_VULKAN_COOP_TILE"] = "2x2"
ref = conv()
os.environ["CCFG_VULKAN_COOP_TILE"] = "auto"
os.environ["CCFG_VULKAN_CONV_TILE"] = "auto"      # the float32 family's switch: not this path
os.environ["CCFG_VULKAN_TUNE_CANDIDATES"] = "64x128db"      # a float32-only list
with ccfg.profiling.profile(DEV) as prof:
    a = conv()
t = ccfg.profiling.tuning(DEV)
out["fp32_list"] = [t.tuned, t.runs, sorted(k for k, _, _ in prof.rows if "conv2d" in k),
                    bool(np.array_equal(a, ref))]
os.environ["CCFG_VULKAN_TUNE_CANDIDATES"] = "64x128,2x2p,128x128db,2x2"
b = conv()
t = ccfg.profiling.tuning(DEV)
out["mixed"] = [t.tuned, t.runs, [c[0] for c in t.entries[-1]["candidates"]],
                t.entries[-1]["family"], bool(np.array_equal(b, ref))]
os.environ["CCFG_VULKAN_CONV_TILE"] = "96x128"
try:
    conv()
    out["bad_tile"] = "no error"
except ValueError as e:
    out["bad_tile"] = str(e)
print(json.dumps(out))
"""


@needs_coop
def test_coop_family_takes_its_own_tokens_and_conv_tile_is_validated():
    """under coop: a float32-only candidate list leaves the coop family its default, untimed; a
    mixed list gives it its own tokens only; a bad CCFG_VULKAN_CONV_TILE raises (though the
    float32 shader does not run); CCFG_VULKAN_CONV_TILE=auto tunes nothing here"""
    got = run_json(f"DEV = {DEV!r}\n" + COOP_FAMILIES, {})
    tuned, runs, kinds, same = got["fp32_list"]
    assert (tuned, runs, same) == (0, 0, True), got
    assert kinds in (["nn_conv2d_coop8"], ["nn_conv2d_coop"]), got
    tuned, runs, cands, family, same = got["mixed"]
    assert (tuned, runs, cands, same) == (1, 2 * RUNS, ["2x2", "2x2p"], True), got
    assert family.startswith("conv2d coop"), got
    assert "CCFG_VULKAN_CONV_TILE" in got["bad_tile"] and "96x128" in got["bad_tile"], got


# --------------------------------------------------------------------------- concurrent writers
# csrc/vk_tune.c lock_path: each save reads, merges and renames under an flock of PATH.lock, so
# processes tuning different shapes into one CCFG_VULKAN_TUNE_CACHE at once all keep their lines.

WRITER = r"""
import json, os, sys, time
import numpy as np
import ccfg
from ccfg import _core
DEV, who, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
# this writer's shapes: 1x1 convolutions, its own output widths (each shape a miss, so a save)
# (widths over 32: narrower ones are not tuned, 64x128db being no different there)
SHAPES = [(1, 8, 4, 4, 40 + 8 * (2 * i + who), 1, 1, 0, 0) for i in range(int(sys.argv[4]))]
x = np.ones(8 * 16, np.float32)
while time.time() < go:     # both writers start their first tuning together
    time.sleep(0.001)
for batch, cin, h, w, cout, k, s, p0, p1 in SHAPES:
    wt = np.ones(cout * cin, np.float32)
    _core.nn_op(DEV, "conv2d", [x, wt, None], [np.zeros(cout * 16, np.float32)],
                (batch, cin, h, w, cout, k, s, p0, p1, 0), (), None, None)
t = ccfg.profiling.tuning(DEV)
print(json.dumps({"couts": [s[4] for s in SHAPES], "tuned": t.tuned, "loaded": t.loaded}))
"""


def _writers(path, lock, shapes=6, writers=2):
    """`writers` processes tuning `shapes` shapes each into one file, started together; the
    couts each tuned and the couts whose lines the file holds afterwards"""
    import time
    env = {k: v for k, v in os.environ.items() if k not in FP32_SWITCHES}
    env.update(CCFG_VULKAN_TUNE_CACHE=str(path), CCFG_VULKAN_CONV_TILE="auto",
               CCFG_VULKAN_TUNE_CANDIDATES="64x128,64x128db", CCFG_VULKAN_TUNE_LOCK=lock)
    go = time.time() + 3.0      # after every interpreter has imported ccfg and opened the device
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, DEV, str(w), str(go), str(shapes)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(writers)]
    tuned = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        got = json.loads(out.strip().splitlines()[-1])
        assert got["tuned"] == shapes, got      # every shape timed here, none from the other
        tuned += got["couts"]
    held = [int(dict(kv.split("=") for kv in ln.split("\t")[2].split(","))["cout"])
            for ln in entry_lines(path)]
    return sorted(tuned), sorted(held)


@needs_vk
def test_concurrent_writers_keep_each_others_lines(tmp_path):
    """two processes tuning different float32 convolution shapes into one CCFG_VULKAN_TUNE_CACHE
    at the same time (each decision rewrites the file): afterwards the file holds every shape of
    both, once; no temporary file is left; the lock's side file is there"""
    path = tmp_path / "tune.txt"
    tuned, held = _writers(path, "1")
    assert len(tuned) == 12 and len(set(tuned)) == 12
    assert held == tuned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.txt", "tune.txt.lock"]


@needs_vk
def test_tune_lock_switch(clean, monkeypatch, tmp_path):
    """CCFG_VULKAN_TUNE_LOCK=0 saves without the lock (no side file); another value raises
    naming the variable"""
    path = tmp_path / "t.txt"
    monkeypatch.setenv("CCFG_VULKAN_TUNE_LOCK", "0")
    assert ccfg.profiling.save_tuning(path, DEV) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
    monkeypatch.setenv("CCFG_VULKAN_TUNE_LOCK", "yes")
    with pytest.raises(ValueError, match="CCFG_VULKAN_TUNE_LOCK='yes'"):
        ccfg.profiling.save_tuning(path, DEV)
    monkeypatch.setenv("CCFG_VULKAN_TUNE_LOCK", "1")
    assert ccfg.profiling.save_tuning(path, DEV) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "t.txt.lock"]


@needs_vk
def test_a_loaded_decision_never_replaces_the_files_line(clean, tmp_path):
    """save_tuning merges into what the file holds now: a decision this process only loaded does
    not overwrite the file's line for the same question (another process may have written it
    since), and is written where the file lacks it"""
    ident = _core.vk_tuning(DEV, "identity")
    cands = ["64x128", "128x128db"]
    path = tmp_path / "tune.txt"
    path.write_text("ccfg-tune-cache 1\n" + _line(ident, KEY_1X1, cands, cands[1]) + "\n")
    assert ccfg.profiling.load_tuning(path, DEV) == 1
    newer = _line(ident, KEY_1X1, cands, cands[0])      # "another process" re-tuned it
    path.write_text("ccfg-tune-cache 1\n" + newer + "\n")
    assert ccfg.profiling.save_tuning(path, DEV) == 1
    assert entry_lines(path) == [newer]
    path.write_text("ccfg-tune-cache 1\n")
    assert ccfg.profiling.save_tuning(path, DEV) == 1
    assert [ln.split("\t")[4] for ln in entry_lines(path)] == [cands[1]]
