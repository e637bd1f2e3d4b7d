"""The Vulkan paths that an environment switch turns off, each against itself switched off, on the
same device: device time per call from timestamp queries (ccfg.profiling), each setting in its own
process (the switches are read when a device is opened), settings alternated, medians.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vk_switches.py [--rounds 3] [--big]

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
   slices and their reduce together.

Sizes are small by default (lavapipe); --big uses the GPU sizes (n = 1M toy rows, 48-row UNet
norms and convolutions). Skips (exit 0) without a Vulkan device. Nothing about time is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

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

# switch: (value on, value off); None: unset
SWITCHES = {"CCFG_VULKAN_GMM_NO_SHARING": (None, "1"), "CCFG_VULKAN_GMM_V1": (None, "1"),
            "CCFG_VULKAN_NO_SUBGROUP": (None, "1"),
            "CCFG_VULKAN_SYNC_PACING": (None, "1"), "CCFG_VULKAN_CONV_SPLITK": ("auto", "0")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="GPU sizes")
    ap.add_argument("--device", default=None, help="vulkan:N (default: the first)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
