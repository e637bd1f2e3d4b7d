"""A mutation fuzzer for the loaders of untrusted files: safetensors, a UNet folder's config.json,
its sharded index (…safetensors.index.json), scheduler/scheduler_config.json and a classifier's
config.json.

Each input starts from a valid file (tests/data/nasty/base/, or the shipped classifier) and is
mutated deterministically (input i of seed s uses random.Random(f"{s}:{i}")): bit flips,
truncations, inserted bytes, header-length edits, JSON edits (huge numbers, wrong types, deleted
or unknown keys, deep nesting, long lists). The loader must return a result or raise ValueError
or TypeError whose message names what is wrong (a field, a tensor, the file); anything else (an
other exception type, an unnamed message, more than --timeout seconds, a crash of the process)
is a finding. Findings are grouped by signature and the first --keep inputs of each are written
to --out (tests/data/nasty/), where tests/test_nasty_inputs.py replays them.

    python tools/fuzz_loaders.py --inputs 100000             # report findings
    python tools/fuzz_loaders.py --inputs 100000 --save      # and keep the nasty inputs
    python tools/fuzz_loaders.py --make-base                 # rewrite tests/data/nasty/base/

Runs in a child process that it restarts after a crash (a segfault is recorded, not fatal).
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NASTY = os.path.join(ROOT, "tests", "data", "nasty")
BASE = os.path.join(NASTY, "base")
WEIGHTS = "diffusion_pytorch_model.safetensors"
TARGETS = ("safetensors", "config", "cond_config", "index", "scheduler", "classifier")
# what a message may name: a field or tensor of the input, or the file
FILE_WORDS = ("safetensors", "tensor", "header", "config", "weight_map", "index", "shard",
              "scheduler", "classifier", "layer", "dtype", "shape", "data_offsets", "json",
              "JSON", "path", "sample_size", "_class_name")


# --------------------------------------------------------------------------- base inputs

def make_base():
    """Small valid folders under tests/data/nasty/base/ (run once; committed)."""
    import numpy as np

    from ccfg import safetensors as st
    from ccfg import unet as U

    def folder(name, cfg):
        d = os.path.join(BASE, name)
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(0)
        tensors = {}
        for names, shape in U._param_layout(U._c_config(cfg)):
            for n in (names if isinstance(names, tuple) else (names,)):
                tensors[n] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        st.save(os.path.join(d, WEIGHTS), tensors)
        U.UNet.from_pretrained(d)       # it loads
        return tensors

    shutil.rmtree(BASE, ignore_errors=True)
    tensors = folder("unet2d", {
        "_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 2, "out_channels": 2,
        "block_out_channels": [2, 4], "layers_per_block": 1, "norm_num_groups": 2,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 4,
        "num_class_embeds": 3})
    folder("cond", {
        "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 2,
        "out_channels": 2, "block_out_channels": [2, 4], "layers_per_block": 1,
        "norm_num_groups": 2, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 4,
        "attention_head_dim": 2})
    # the first folder again, sharded in two with an index
    d = os.path.join(BASE, "sharded")
    os.makedirs(d)
    shutil.copy(os.path.join(BASE, "unet2d", "config.json"), d)
    names = sorted(tensors)
    shards = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, part in shards.items():
        st.save(os.path.join(d, shard), {n: tensors[n] for n in part})
        weight_map.update({n: shard for n in part})
    with open(os.path.join(d, WEIGHTS + ".index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    U.UNet.from_pretrained(d)
    with open(os.path.join(BASE, "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000,
                   "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
                   "prediction_type": "epsilon", "timestep_spacing": "leading"}, f, indent=1)
    print(f"wrote {BASE}")


# --------------------------------------------------------------------------- mutations

NASTY_VALUES = [
    0, -1, 1, 2, 3, 7, 2 ** 15, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 63 - 1, 2 ** 63,
    2 ** 64, -2 ** 63, 10 ** 30, 10 ** 400, 0.5, 1.5, -0.0, 8.0, 1e-300, 1e308, math.nan,
    math.inf, -math.inf, "", "x", "1", "8", "NaN", "../x", "/etc/passwd", "\u0000", "A" * 5000,
    True, False, None, [], {}, [1], [8, 8], ["x"], [None], [[1]], {"a": 1}, list(range(3000)),
]


def nasty_value(rng):
    r = rng.random()
    if r < 0.75:
        return copy.deepcopy(rng.choice(NASTY_VALUES))
    if r < 0.85:        # nesting, written out as text by dumps() (no recursion here)
        return Deep(rng.choice([5, 50, 900, 5000, 100000]), rng.random() < 0.5)
    if r < 0.95:
        return rng.randint(-2 ** 70, 2 ** 70) >> rng.randint(0, 70)
    return rng.uniform(-1e6, 1e6)


class Deep:
    """A value nested `depth` levels deep ([[[...1...]]] or {"a": {"a": ...1...}}): a JSON text
    too deep for the fuzzer's own recursive copies and encoder, so it is kept as a marker."""

    def __init__(self, depth, lists):
        self.depth, self.lists = depth, lists

    def __deepcopy__(self, memo):
        return self

    def text(self):
        if self.lists:
            return "[" * self.depth + "1" + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth


def dumps(obj):
    """json.dumps that writes Deep markers out (and NaN/Infinity as Python's json reads them)."""
    deep = []

    def default(o):
        if isinstance(o, Deep):
            deep.append(o)
            return f"@@DEEP{len(deep) - 1}@@"
        raise TypeError(type(o).__name__)

    text = json.dumps(obj, allow_nan=True, default=default)
    for k, d in enumerate(deep):
        text = text.replace(f'"@@DEEP{k}@@"', d.text())
    return text


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 64:
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def mutate_json(obj, rng):
    """One structural edit of a parsed JSON document; returns (new object, the key it touched)."""
    obj = copy.deepcopy(obj)
    paths = [p for p in _paths(obj) if p]
    if not paths:
        return nasty_value(rng), None
    path = rng.choice(paths)
    parent, key = _get(obj, path[:-1]), path[-1]
    named = next((p for p in reversed(path) if isinstance(p, str)), None)
    old = parent[key]
    op = rng.random()
    if op < 0.45:
        parent[key] = nasty_value(rng)
    elif op < 0.55 and isinstance(parent, dict):
        del parent[key]
    elif op < 0.62 and isinstance(parent, dict):
        parent[rng.choice(["zzz", "__metadata__", "weight_map", "layers", "_class_name"])] = \
            nasty_value(rng)
    elif op < 0.72 and isinstance(old, (int, float)) and not isinstance(old, bool):
        big = abs(old) > 1e300      # no float of it
        parent[key] = rng.choice([old + 1, old - 1, -old, old * 2, old * 1000, old * 2 ** 40,
                                  old if big else float(old), old // 3 if big else old / 3])
    elif op < 0.80 and isinstance(old, list):
        r = rng.random()
        if r < 0.3 and old:
            del old[rng.randrange(len(old))]
        elif r < 0.6:
            old.insert(rng.randint(0, len(old)), nasty_value(rng))
        elif old:
            old[rng.randrange(len(old))] = nasty_value(rng)
    elif op < 0.86:
        parent[key] = [old] if rng.random() < 0.5 else {"value": old}
    elif op < 0.92 and isinstance(old, str):
        parent[key] = old + rng.choice(["x", "2D", ".weight", "\u00e9", " "]) \
            if rng.random() < 0.5 else old[: rng.randint(0, len(old))]
    else:
        parent[key] = nasty_value(rng)
    return obj, named


def mutate_bytes(data, rng, header_len=False):
    """Byte-level edits: flips, sets, truncation, insertion, duplication, length field."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if not b:
            b += bytes([rng.randrange(256)])
        elif op < 0.3:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op < 0.45:
            b[rng.randrange(len(b))] = rng.choice([0, 0x22, 0x5b, 0x5d, 0x7b, 0x7d, 0x2c, 0x3a,
                                                   0x30, 0x39, 0x2d, 0xff, 0x5c])
        elif op < 0.6:
            del b[rng.randrange(len(b)):]
        elif op < 0.7:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op < 0.78:
            i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
            k = rng.randrange(len(b) + 1)
            b[k:k] = b[i:j]
        elif op < 0.9:
            m = list(re.finditer(rb"\d+", bytes(b)))
            if m:
                g = rng.choice(m)
                b[g.start():g.end()] = str(rng.choice(
                    [0, 1, 2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 40, 9999999999,
                     int(g.group()) + 1, int(g.group()) * 2 ** 32])).encode()
        elif header_len and len(b) >= 8:
            n = int.from_bytes(b[:8], "little")
            n = rng.choice([0, 1, 7, n - 1, n + 1, n + 8, 2 ** 63, 2 ** 64 - 1, 10 ** 8, len(b),
                            len(b) - 8])
            b[:8] = (n % 2 ** 64).to_bytes(8, "little")
    return bytes(b)


def mutate_safetensors(data, rng):
    """Edit the header as JSON (most of the time) or the bytes."""
    n = int.from_bytes(data[:8], "little")
    if rng.random() < 0.6:
        header = json.loads(data[8:8 + n])
        header, _ = mutate_json(header, rng)
        raw = dumps(header).encode()
        if rng.random() < 0.7:
            raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw + data[8 + n:]
    return mutate_bytes(data, rng, header_len=True)


def mutate_json_file(text, rng):
    """A mutated JSON document (text), and the key the edit touched (None for byte edits)."""
    if rng.random() < 0.8:
        obj, named = mutate_json(json.loads(text), rng)
        if rng.random() < 0.3:      # a second edit
            obj, _ = mutate_json(obj, rng)
        return dumps(obj), named
    return mutate_bytes(text.encode(), rng).decode("utf-8", "replace"), None


# --------------------------------------------------------------------------- one input

def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def build(target, rng, work):
    """Write input for `target` into the folder `work`; returns (what to load, input bytes or
    text to keep, the file name it is kept as, the key the mutation touched)."""
    if target == "safetensors":
        data = mutate_safetensors(_read(os.path.join(BASE, "unet2d", WEIGHTS), "rb"), rng)
        path = os.path.join(work, "x.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        return path, data, "x.safetensors", None
    if target in ("config", "cond_config", "index"):
        src = {"config": "unet2d", "cond_config": "cond", "index": "sharded"}[target]
        d = os.path.join(work, "m")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(os.path.join(BASE, src), d)
        name = "config.json" if target != "index" else WEIGHTS + ".index.json"
        text, named = mutate_json_file(_read(os.path.join(d, name)), rng)
        with open(os.path.join(d, name), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        return d, text, name, named
    if target == "scheduler":
        d = os.path.join(work, "p")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(os.path.join(BASE, "unet2d"), os.path.join(d, "unet"))
        os.makedirs(os.path.join(d, "scheduler"))
        text, named = mutate_json_file(_read(os.path.join(BASE, "scheduler_config.json")), rng)
        with open(os.path.join(d, "scheduler", "scheduler_config.json"), "w",
                  encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        return d, text, "scheduler_config.json", named
    if target == "classifier":
        from ccfg import classifier as C
        d = os.path.join(work, "c")
        if not os.path.isdir(d):
            os.makedirs(d)
            os.symlink(os.path.join(C._weights_dir("classifier"), "model.safetensors"),
                       os.path.join(d, "model.safetensors"))
        text, named = mutate_json_file(
            _read(os.path.join(C._weights_dir("classifier"), "config.json")), rng)
        with open(os.path.join(d, "config.json"), "w", encoding="utf-8",
                  errors="surrogatepass") as f:
            f.write(text)
        return d, text, "config.json", named
    raise ValueError(target)


def place(target, data, work):
    """Lay out a kept input (its bytes) as `build` did, in the folder `work`; returns what to
    load. What tests/test_nasty_inputs.py replays."""
    if target == "safetensors":
        path = os.path.join(work, "x.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        return path
    if target in ("config", "cond_config", "index"):
        src = {"config": "unet2d", "cond_config": "cond", "index": "sharded"}[target]
        d = os.path.join(work, "m")
        shutil.copytree(os.path.join(BASE, src), d)
        name = "config.json" if target != "index" else WEIGHTS + ".index.json"
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        return d
    if target == "scheduler":
        d = os.path.join(work, "p")
        shutil.copytree(os.path.join(BASE, "unet2d"), os.path.join(d, "unet"))
        os.makedirs(os.path.join(d, "scheduler"))
        with open(os.path.join(d, "scheduler", "scheduler_config.json"), "wb") as f:
            f.write(data)
        return d
    if target == "classifier":
        from ccfg import classifier as C
        d = os.path.join(work, "c")
        os.makedirs(d)
        os.symlink(os.path.join(C._weights_dir("classifier"), "model.safetensors"),
                   os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "wb") as f:
            f.write(data)
        return d
    raise ValueError(target)


def load(target, where):
    """The loader under test."""
    if target == "safetensors":
        from ccfg import safetensors as st
        return st.load(where)
    if target in ("config", "cond_config", "index", "scheduler"):
        from ccfg.models import UNet
        return UNet.from_pretrained(where)
    if target == "classifier":
        from ccfg.classifier import Classifier
        return Classifier(where)
    raise ValueError(target)


def field_words():
    """Names a message may use: every key of the base JSON documents, and words for the files."""
    words = set(FILE_WORDS)
    for base in ("unet2d", "cond", "sharded"):
        for name in ("config.json", WEIGHTS + ".index.json"):
            p = os.path.join(BASE, base, name)
            if os.path.isfile(p):
                words |= set(_keys(json.loads(_read(p))))
    words |= set(_keys(json.loads(_read(os.path.join(BASE, "scheduler_config.json")))))
    from ccfg import classifier as C
    cls = json.loads(_read(os.path.join(C._weights_dir("classifier"), "config.json")))
    words |= set(_keys(cls))
    for layer in cls.get("layers", []):
        words |= set(_keys(layer))
    return words


def _keys(obj, depth=0):
    if depth > 3:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v, depth + 1)


def judge(exc, named, words):
    """None if the outcome keeps the contract, else the finding's kind."""
    if exc is None:
        return None
    if not isinstance(exc, (ValueError, TypeError)):
        return f"type:{type(exc).__name__}"
    msg = str(exc)
    if not msg.strip():
        return "unnamed:empty message"
    if named and named in msg:
        return None
    if any(w in msg for w in words):
        return None
    return f"unnamed:{type(exc).__name__}"


def signature(target, kind, exc):
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "S", str(exc))
    msg = re.sub(r"-?\d[\d.e+-]*", "N", msg)[:90]
    return f"{target}|{kind}|{msg}"


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout("more than the time limit")


def child(args):
    """Run inputs [start, stop) in this process; report each finding as a JSON line."""
    sys.path.insert(0, ROOT)        # this tree's ccfg, whatever is installed
    resource.setrlimit(resource.RLIMIT_AS, (args.memory << 20, args.memory << 20))
    signal.signal(signal.SIGALRM, _alarm)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    import ccfg  # noqa: F401  (imported once, outside the timed calls)
    work = tempfile.mkdtemp(prefix="ccfg-fuzz-", dir=args.tmp)
    words = field_words()
    current = os.path.join(args.state, "current")
    indices = [i for i in args.only if args.start <= i] if args.only else \
        range(args.start, args.stop)
    for i in indices:
        rng = random.Random(f"{args.seed}:{i}")
        target = args.targets[i % len(args.targets)] if args.round_robin \
            else rng.choice(args.targets)
        try:
            where, data, name, named = build(target, rng, work)
        except Exception as e:      # noqa: BLE001  (a bug of this tool, not of ccfg)
            print(json.dumps({"i": i, "target": target, "kind": "fuzzer-error", "named": None,
                              "error": f"{type(e).__name__}: {e}"[:300],
                              "sig": f"{target}|fuzzer-error|{type(e).__name__}", "name": ""}),
                  flush=True)
            continue
        with open(current, "w") as f:
            json.dump({"i": i, "target": target}, f)
        exc = None
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            load(target, where)
        except Timeout as e:
            exc = e
        except BaseException as e:      # noqa: BLE001  (the point is to see every kind)
            if isinstance(e, KeyboardInterrupt):
                raise
            exc = e
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        kind = "hang" if isinstance(exc, Timeout) else judge(exc, named, words)
        if not kind and time.perf_counter() - t0 > args.slow:
            kind = "slow"
        if kind:
            print(json.dumps({"i": i, "target": target, "kind": kind, "named": named,
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                              "sig": signature(target, kind, exc), "name": name}), flush=True)
    shutil.rmtree(work, ignore_errors=True)


def save_input(args, finding):
    """Rebuild input i (deterministic) and keep it under --out/TARGET/."""
    rng = random.Random(f"{args.seed}:{finding['i']}")
    target = finding["target"]
    if not args.round_robin:
        rng.choice(args.targets)
    work = tempfile.mkdtemp(prefix="ccfg-fuzz-save-", dir=args.tmp)
    try:
        _, data, name, _ = build(target, rng, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d = os.path.join(args.out, target)
    os.makedirs(d, exist_ok=True)
    stem = f"s{args.seed}-i{finding['i']}"
    path = os.path.join(d, f"{stem}.{'safetensors' if target == 'safetensors' else 'json'}")
    data = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if len(data) > 16384:           # deep nesting and long lists compress to almost nothing
        path += ".gz"
        data = gzip.compress(data, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
    return os.path.relpath(path, args.out)


def read_kept(path):
    """The bytes of a kept input (.gz ones decompressed)."""
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    ap.add_argument("--slow", type=float, default=2.0, help="seconds that make an input slow")
    ap.add_argument("--memory", type=int, default=4096, help="MiB of address space per run")
    ap.add_argument("--keep", type=int, default=2, help="inputs kept per finding signature")
    ap.add_argument("--save", action="store_true", help="write the nasty inputs to --out")
    ap.add_argument("--out", default=NASTY)
    ap.add_argument("--tmp", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--findings", help="write every finding (JSON lines) to this file")
    ap.add_argument("--only", default="", help="run only these inputs (comma-separated indices; "
                    "e.g. to keep the examples a long run printed)")
    ap.add_argument("--make-base", action="store_true")
    ap.add_argument("--round-robin", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=2, type=int, metavar=("START", "STOP"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.targets = args.targets.split(",")
    args.only = sorted(int(i) for i in args.only.split(",") if i)
    if args.make_base:
        return make_base()
    if args.child:
        args.start, args.stop = args.child
        return child(args)

    state = tempfile.mkdtemp(prefix="ccfg-fuzz-state-")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    findings, start, t0 = [], 0, time.time()
    if args.only:
        args.inputs = args.only[-1] + 1
    while start < args.inputs:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(start),
               str(args.inputs), "--state", state, "--seed", str(args.seed), "--targets",
               ",".join(args.targets), "--timeout", str(args.timeout), "--slow",
               str(args.slow), "--memory",
               str(args.memory)] + (["--tmp", args.tmp] if args.tmp else []) + \
            (["--round-robin"] if args.round_robin else []) + \
            (["--only", ",".join(map(str, args.only))] if args.only else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                findings.append(json.loads(line))
        if proc.returncode == 0:
            break
        # the process died (a crash, or the kernel's OOM killer): record the input, go on
        cur = json.loads(_read(os.path.join(state, "current")))
        findings.append({"i": cur["i"], "target": cur["target"], "named": None,
                         "kind": f"crash:{proc.returncode}", "error": proc.stderr[-300:],
                         "sig": f"{cur['target']}|crash:{proc.returncode}", "name": ""})
        start = cur["i"] + 1
    shutil.rmtree(state, ignore_errors=True)

    groups = {}
    for f in findings:
        groups.setdefault(f["sig"], []).append(f)
    count = len(args.only) if args.only else args.inputs
    print(f"{count} inputs (seed {args.seed}, targets {', '.join(args.targets)}) in "
          f"{time.time() - t0:.0f} s: {len(findings)} findings, {len(groups)} signatures")
    for sig, fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(fs):6d}  {sig}\n        e.g. input {fs[0]['i']}: {fs[0]['error'][:200]!r}")
    if args.findings:
        with open(args.findings, "w") as fh:
            for f in findings:
                fh.write(json.dumps(f) + "\n")
    groups = {sig: fs for sig, fs in groups.items() if "fuzzer-error" not in sig}
    if args.save and groups:
        manifest_path = os.path.join(args.out, "MANIFEST.json")
        manifest = json.loads(_read(manifest_path)) if os.path.isfile(manifest_path) else {}
        for sig, fs in groups.items():
            for f in fs[: args.keep]:
                rel = save_input(args, f)
                manifest[rel] = {"found": f"{f['kind']}: {f['error'][:200]}", "seed": args.seed,
                                 "input": f["i"], "target": f["target"], "named": f["named"]}
        with open(manifest_path, "w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        print(f"kept {sum(min(len(fs), args.keep) for fs in groups.values())} inputs in "
              f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
