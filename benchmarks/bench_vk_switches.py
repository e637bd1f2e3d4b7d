"""The Vulkan paths that an environment switch turns off, each against itself switched off, on the
same device: device time per call from timestamp queries (ccfg.profiling), each setting in its own
process (the switches are read when a device is opened), settings alternated, medians.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vk_switches.py [--rounds 3] [--big]
        [--norm-fold-only | --no-norm-fold] [--norm-fold-reps 5]

1. mixture eps of the sampler's stacked rows (3 condition blocks of the same x, CCFG's batch):
   densities shared between the blocks (gmm_eps.glsl mode 2) and the near-memory path (parameters
   in shared memory, row values in the invocation's own arrays, one dispatch per call, condition
   ids kept on the device) against CCFG_VULKAN_GMM_NO_SHARING=1 and CCFG_VULKAN_GMM_V1=1 together,
   toy_2d (D = 2, K = 7) and gmm64 (D = 64); benchmarks/bench_vk_gmm.py separates the near path
   and times whole sampling steps;
2. group_norm at UNet sizes: subgroupAdd (nn_group_norm_sg.comp) against the shared-memory trees
   (CCFG_VULKAN_NO_SUBGROUP=1), one-dispatch groups (<= 8192 values) and a three-dispatch one;
3. the shipped UNet's forward, host wall time (no profile: it would wait per batch), its pacing
   submits pipelined (be->submit, two command buffers) against CCFG_VULKAN_SYNC_PACING=1;
4. conv2d at the issue's CIFAR-sized UNet's 16x16, 8x8 and 4x4 shapes (3x3, 256 and 512 -> 256
   channels): split-K by the default rule, forced on every device (CCFG_VULKAN_CONV_SPLITK=auto:
   a CPU device's default is off), against CCFG_VULKAN_CONV_SPLITK=0; the device time of the
   slices and their reduce together;
5. the GroupNorm(+SiLU) folded into the convolution that reads it (CCFG_VULKAN_NORM_FOLD=1
   folds it, off by default; read at every call, so this one is interleaved in one process per precision,
   fp32 and fp16): a CIFAR-shaped UNet2DModel's forward (half the issue's channels on lavapipe,
   whose storage buffers cannot hold the full model's weights; the full model with --big),
   folded against unfolded forward by forward: wall time (medians of the alternated forwards and
   of their ratios), device time and dispatches per forward from the profile.

Sizes are small by default (lavapipe); --big uses the GPU sizes (n = 1M toy rows, 48-row UNet
norms and convolutions). Skips (exit 0) without a Vulkan device. Nothing about time is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench_common import child_env

CHILD = r"""
import json, sys, numpy as np, ccfg
from ccfg import _core
dev, big = sys.argv[1], sys.argv[2] == "1"
out = {}
rng = np.random.default_rng(0)

def timed(fn, kind, reps=3):
    fn()
    with ccfg.profiling.profile(dev) as prof:
        for _ in range(reps):
            fn()
    return sum(ms for k, c, ms in prof.rows if kind in k) / reps

for name, n in (("toy_2d", 1_000_000 if big else 100_000), ("gmm64", 100_000 if big else 10_000)):
    m = ccfg.models.GaussianMixture.toy_2d() if name == "toy_2d" else ccfg.models.load(name)
    x = (rng.standard_normal((n, m.dim)) + m.means[rng.integers(0, m.K, n)]).astype(np.float32)
    xs, cond = np.concatenate([x, x, x]), np.repeat(np.array([0, 1, -1], np.int32), n)
    spec = m._c_spec()
    out[f"gmm_eps {name} 3 x {n} rows"] = timed(lambda: _core.gmm_eps(spec, xs, 0.5, cond, dev),
                                                "gmm_eps")
rows = 48 if big else 4
for c, hw, groups in ((128, 1024, 32), (256, 256, 32), (320, 4096, 32)):
    x = rng.standard_normal(c * rows * hw).astype(np.float32)
    g = np.ones(c, np.float32)
    args = ([x, None, g, g, None], [np.zeros_like(x)], (rows, c, hw, groups, 1), (1e-5,),
            None, None)
    out[f"group_norm {rows} x {c} x {hw}, {c // groups * hw} a group"] = timed(
        lambda: _core.nn_op(dev, "group_norm", *args), "group_norm")
rows = 48 if big else 4
for cin, cout, px in ((256, 256, 16), (256, 256, 8), (256, 256, 4), (512, 256, 4)):
    x = rng.standard_normal(cin * rows * px * px).astype(np.float32)
    w = (rng.standard_normal(cout * cin * 9) / np.sqrt(cin * 9)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    args = ([x, w, b], [np.zeros(cout * rows * px * px, np.float32)],
            (rows, cin, px, px, cout, 3, 1, 1, 1, 0), (), None, None)
    out[f"conv2d {rows} x {cin}->{cout} {px}x{px} 3x3"] = timed(
        lambda: _core.nn_op(dev, "conv2d", *args), "conv2d")
import time
unet = ccfg.models.load("fashion-mnist")
rows = 192 if big else 6
x = rng.standard_normal((rows, 1, 32, 32)).astype(np.float32)
labels = list(range(10)) * (rows // 10) + list(range(rows % 10))
unet(x, 500, labels, device=dev)
walls = []
for _ in range(3):
    t0 = time.perf_counter()
    unet(x, 500, labels, device=dev)
    walls.append(time.perf_counter() - t0)
out[f"fashion-mnist forward {rows} rows (wall)"] = 1e3 * sorted(walls)[1]
print("RESULT " + json.dumps(out))
"""

NORM_FOLD_CHILD = r"""
import json, os, sys, time
import numpy as np, ccfg
from bench_common import cifar_unet
dev, big, reps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
ch = (128, 256, 256, 256) if big else (64, 128, 128, 128)
rows = 48 if big else 2
cm, d = cifar_unet(ch)
unet = ccfg.models.UNet.from_pretrained(d)
x = np.random.default_rng(0).standard_normal((rows, 3, 32, 32)).astype(np.float32)
setting = {"fold": "1", "unfolded": "0"}
res = {}
for name, flag in setting.items():      # placed, packed and warm; the profile of one forward
    os.environ["CCFG_VULKAN_NORM_FOLD"] = flag
    res[name] = unet(x, 500, device=dev)
    with ccfg.profiling.profile(dev) as prof:
        unet(x, 500, device=dev)
    res[name + " device"] = prof.device_ms
    res[name + " calls"] = sum(c for _, c, _ in prof.rows)
    res[name + " gn"] = sum(ms for k, _, ms in prof.rows if "group_norm" in k)
    res[name + " conv"] = sum(ms for k, _, ms in prof.rows if "conv2d" in k)
err = float(np.abs(res["fold"] - res["unfolded"]).max() / np.abs(res["unfolded"]).max())
walls = {"fold": [], "unfolded": []}
for _ in range(reps):
    for name, flag in setting.items():
        os.environ["CCFG_VULKAN_NORM_FOLD"] = flag
        t0 = time.perf_counter()
        unet(x, 500, device=dev)
        walls[name].append(time.perf_counter() - t0)
ratio = [a / b for a, b in zip(walls["fold"], walls["unfolded"])]
out = {"rows": rows, "channels": list(ch), "fold vs unfolded max rel diff": err,
       "wall ms fold": 1e3 * float(np.median(walls["fold"])),
       "wall ms unfolded": 1e3 * float(np.median(walls["unfolded"])),
       "wall ratio fold/unfolded (median of pairs)": float(np.median(ratio))}
for k in ("device", "calls", "gn", "conv"):
    out[k + " fold"] = res["fold " + k]
    out[k + " unfolded"] = res["unfolded " + k]
print("RESULT " + json.dumps(out))
"""


def norm_fold(dev, big, reps, only):
    """section 5: one process per precision, the fold toggled forward by forward in it"""
    for precision in ("fp32", "fp16"):
        env = child_env(dict(os.environ, CCFG_VULKAN_PRECISION=precision))
        r = subprocess.run([sys.executable, "-c", NORM_FOLD_CHILD, dev, "1" if big else "0",
                            str(reps)], env=env, capture_output=True, text=True, timeout=3600)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode or not line:
            print(f"norm fold {precision}: failed\n{r.stderr[-3000:]}")
            if only:
                return 1
            continue
        res = json.loads(line[0][len("RESULT "):])
        print(f"norm fold, CIFAR-shaped forward {precision}, {res['rows']} rows, channels "
              f"{res['channels']}, {reps} alternated pairs, load {os.getloadavg()[0]:.1f}:")
        for k, v in res.items():
            if k not in ("rows", "channels"):
                print(f"  {k:<44} {v:10.4g}")
    return 0


# switch: (value on, value off); None: unset
SWITCHES = {"CCFG_VULKAN_GMM_NO_SHARING": (None, "1"), "CCFG_VULKAN_GMM_V1": (None, "1"),
            "CCFG_VULKAN_NO_SUBGROUP": (None, "1"),
            "CCFG_VULKAN_SYNC_PACING": (None, "1"), "CCFG_VULKAN_CONV_SPLITK": ("auto", "0")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="GPU sizes")
    ap.add_argument("--device", default=None, help="vulkan:N (default: the first)")
    ap.add_argument("--norm-fold-only", action="store_true",
                    help="only section 5 (the folded GroupNorm)")
    ap.add_argument("--no-norm-fold", action="store_true", help="sections 1-4 only")
    ap.add_argument("--norm-fold-reps", type=int, default=5,
                    help="alternated forward pairs of section 5")
    a = ap.parse_args()
    sys.path.insert(0, os.getcwd())
    import numpy as np
    from ccfg import _core
    vk = [d for d in _core.devices() if d["backend"] == "vulkan" and d.get("available")]
    if not vk:
        print("no Vulkan device: skipped")
        return 0
    dev = a.device or vk[0]["selector"]
    print(f"{dev}: {vk[0]['name']} ({vk[0].get('driver', '?')}), load {os.getloadavg()[0]:.1f}")
    if a.norm_fold_only:
        return norm_fold(dev, a.big, a.norm_fold_reps, True)
    runs = {"on": [], "off": []}
    for _ in range(a.rounds):
        for setting in ("on", "off"):
            env = dict(os.environ)
            for var, values in SWITCHES.items():
                env.pop(var, None)
                value = values[setting == "off"]
                if value is not None:
                    env[var] = value
            r = subprocess.run([sys.executable, "-c", CHILD, dev, "1" if a.big else "0"], env=env,
                               capture_output=True, text=True, timeout=1800)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode or not line:
                print(r.stderr)
                return 1
            runs[setting].append(json.loads(line[0][len("RESULT "):]))
    print(f"ms per call (device time; the forward: wall), median of {a.rounds} alternated "
          f"processes; 'off' = "
          + ", ".join(f"{v}={values[1]}" for v, values in SWITCHES.items()))
    print(f"{'case':<48} {'on':>10} {'off':>10} {'on/off':>7}")
    for case in runs["on"][0]:
        on = float(np.median([r[case] for r in runs["on"]]))
        off = float(np.median([r[case] for r in runs["off"]]))
        print(f"{case:<48} {on:10.2f} {off:10.2f} {on / off:7.2f}")
    print(f"load {os.getloadavg()[0]:.1f}")
    return 0 if a.no_norm_fold else norm_fold(dev, a.big, a.norm_fold_reps, False)


if __name__ == "__main__":
    sys.exit(main())
