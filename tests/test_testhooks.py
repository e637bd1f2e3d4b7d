"""The private test hooks (_core.nn_op, _core.vk_op) are as safe as the public API (issue 13 item
7): sizes that do not match the arrays, sizes out of range, a missing required array or an index
outside its table raise ValueError naming the problem; large sizes get scratch sized from the
arguments. Before, nn_op("cpu", "attention", ...) wrote hw² floats into a fixed 16 MiB scratch
(a segfault from hw > 2048 on), a linear with silu_in wrote rows x in floats there, and sizes
were trusted on the CPU (reads and writes past the arrays).

Every case runs in a child process, so a crash fails the test instead of ending the run."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
DEVICES = ["cpu"] + ([f"vulkan:{VK[0]['index']}"] if VK else [])

PRELUDE = """
import json, sys
import numpy as np
from ccfg import _core
dev = sys.argv[1]
z = lambda n: np.zeros(n, np.float32)
def nn(op, ins, outs, ints, floats=(), t=None, index=None):
    return _core.nn_op(dev, op, ins, outs, tuple(ints), tuple(floats), t, index)
def outcome(fn):
    try:
        fn()
        return "ok"
    except Exception as e:      # the type and the message are the test's business
        return f"{type(e).__name__}: {e}"
"""


def run_child(body, dev, timeout=300):
    code = PRELUDE + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code, dev], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"child died ({r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dev", DEVICES)
def test_sizes_that_do_not_match_the_arrays_are_refused(dev):
    got = run_child("""
    cases = {
        # hw = 3000 tokens over arrays of 6 floats
        "attention": lambda: nn("attention", [z(6)], [z(2)], (1, 3000, 1, 1)),
        "attention_qkv": lambda: nn("attention_qkv", [z(4), z(4), z(3)], [z(4)], (1, 4, 4, 1, 1)),
        "conv2d": lambda: nn("conv2d", [z(16), z(9), None], [z(16)], (1, 1, 40, 40, 1, 3, 1, 1, 1, 0)),
        "conv2d_weight": lambda: nn("conv2d", [z(16), z(8), None], [z(16)], (1, 1, 4, 4, 1, 3, 1, 1, 1, 0)),
        "group_norm": lambda: nn("group_norm", [z(8), None, z(4), z(4), None], [z(7)], (1, 4, 2, 2, 0), (1e-5,)),
        "group_norm_film": lambda: nn("group_norm", [z(8), None, z(4), z(4), z(4)], [z(8)], (1, 4, 2, 2, 0), (1e-5,)),
        "linear": lambda: nn("linear", [z(10), z(10), None], [z(1)], (1, 10, 2, 0)),
        "silu": lambda: nn("silu", [z(10)], [z(100)], (100,)),
        "copy": lambda: nn("copy", [z(100)], [z(10)], (100,)),
        "scale": lambda: nn("scale", [], [z(10)], (11,), (2.0,)),
        "geglu": lambda: nn("geglu", [z(10)], [z(10)], (10, 1)),
        "layer_norm": lambda: nn("layer_norm", [z(12), z(4), z(3)], [z(12)], (3, 4), (1e-5,)),
        "upsample": lambda: nn("upsample_nearest2x", [z(4)], [z(15)], (1, 1, 2, 2)),
        "nchw_to_cnhw": lambda: nn("nchw_to_cnhw", [z(11)], [z(12)], (1, 3, 4), (1.0, 0.0)),
        "cnhw_to_nchw": lambda: nn("cnhw_to_nchw", [z(12)], [z(11)], (1, 3, 4)),
        "timestep_embedding": lambda: nn("timestep_embedding", [], [z(64)], (4, 16, 1), (0.0,), t=np.zeros(3)),
        "embedding_add": lambda: nn("embedding_add", [z(10)], [z(10)], (2, 5), index=np.array([0, 2], np.int32)),
        "embedding_negative": lambda: nn("embedding_add", [z(10)], [z(10)], (2, 5), index=np.array([0, -1], np.int32)),
        "embedding_no_index": lambda: nn("embedding_add", [z(10)], [z(10)], (2, 5)),
        "missing_gamma": lambda: nn("group_norm", [z(8), None, None, z(4), None], [z(8)], (1, 4, 2, 2, 0), (1e-5,)),
        "missing_input": lambda: nn("copy", [None], [z(4)], (4,)),
        "negative": lambda: nn("copy", [z(4)], [z(4)], (-4,)),
        "int_overflow": lambda: nn("copy", [z(4)], [z(4)], (2**32 + 4,)),
        "product_overflow": lambda: nn("conv2d", [z(4), z(4), None], [z(4)], (2**30, 2**30, 2**30, 2**30, 1, 1, 1, 0, 0, 0)),
        "bad_conv": lambda: nn("conv2d", [z(4), z(9), None], [z(4)], (1, 1, 2, 2, 1, 3, 0, 0, 0, 0)),
        "groups": lambda: nn("group_norm", [z(10), None, z(5), z(5), None], [z(10)], (1, 5, 2, 2, 0), (1e-5,)),
    }
    print(json.dumps({k: outcome(f) for k, f in cases.items()}))
    """, dev)
    for case, result in got.items():
        assert result.startswith("ValueError"), (case, result)


@pytest.mark.parametrize("dev", DEVICES)
def test_large_sizes_get_scratch_of_their_size(dev):
    """hw = 2100 tokens: 4.4M scores, more than the hook's former fixed scratch (a segfault);
    a linear with silu_in over 5M inputs (which the CPU op stages in scratch)"""
    got = run_child("""
    rng = np.random.default_rng(0)
    hw = 2100
    qkv = rng.standard_normal(3 * hw).astype(np.float32)
    out = nn("attention", [qkv], [z(hw)], (1, hw, 1, 1))[0]
    q, k, v = qkv[:hw].astype(np.float64), qkv[hw:2 * hw], qkv[2 * hw:]
    s = np.outer(q, k)
    s = np.exp(s - s.max(axis=1, keepdims=True))
    ref = (s / s.sum(axis=1, keepdims=True)) @ v
    n_in = 5_000_000
    x = rng.standard_normal(n_in).astype(np.float32)
    w = rng.standard_normal(n_in).astype(np.float32)
    y = nn("linear", [x, w, None], [z(1)], (1, n_in, 1, 1))[0]
    xd = x.astype(np.float64)
    lin_ref = float(np.dot(xd / (1 + np.exp(-xd)), w))
    print(json.dumps({"attention": float(np.abs(out - ref).max() / np.abs(ref).max()),
                      "linear": abs(float(y[0]) - lin_ref) / np.sqrt(n_in)}))
    """, dev)
    assert got["attention"] < 1e-5
    assert got["linear"] < 1e-5


@pytest.mark.parametrize("dev", DEVICES)
def test_vk_op_refuses_mismatched_arrays(dev):
    got = run_child("""
    a, b = np.ones((4, 1000), np.float32), np.ones(10, np.float32)
    cases = {
        "axpbypcz_y": lambda: _core.vk_op(dev, "axpbypcz", (a, b, None), (1.0, 1.0, 0.0)),
        "axpbypcz_z": lambda: _core.vk_op(dev, "axpbypcz", (a, None, b), (1.0, 0.0, 1.0)),
        "randn": lambda: _core.vk_op(dev, "randn", (), (float("nan"), 3.0, 0, 0, 0)),
        "randn_huge": lambda: _core.vk_op(dev, "randn", (), (2.0**62, 2.0**62, 0, 0, 0)),
    }
    print(json.dumps({k: outcome(f) for k, f in cases.items()}))
    """, dev)
    for case, result in got.items():
        assert result.startswith("ValueError"), (case, result)
