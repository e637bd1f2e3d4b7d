"""Exact-mixture sampling on a Vulkan device, the mixture shader's near-memory path (gmm_eps.glsl
modes 1-2: parameters in shared memory, the row's x and per-component values in the invocation's
own arrays, one dispatch per call, condition ids kept on the device) against CCFG_VULKAN_GMM_V1=1
(the path before: all in global memory, 75k-131k rows per dispatch, ids uploaded per call).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_vk_gmm.py \\
        [--n 100000 1000000] [--steps 2] [--rounds 3] [--staging] [--device vulkan:N]

Cases: toy_2d (d = 2, K = 7) and an isotropic d = 64, K = 8 mixture, CFG (2 conditions) and CCFG
(3), DDIM. Per step, from ccfg.profiling: device ms of gmm_eps, its dispatches, all device ms,
submits, uploads (with --staging: the discrete-GPU path of device-local buffers and staging
copies), and host wall ms. Each (case, setting) runs in its own process (the switch is read when
a device opens), settings alternated per round, medians. The samples of the two settings are
compared bit for bit. Skips (exit 0) without a Vulkan device; nothing about time is asserted.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vk_gmm.py --accuracy

prints instead the eps error of the float64 and the float32 shaders (CCFG_VULKAN_NO_F64=1)
against the model's float64 NumPy eps (toy_2d, d = 64 K = 8, gmm64; 4000 rows, four levels).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, hashlib, numpy as np, ccfg
dev, name, rule, n, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if name == "toy_2d":
    m = ccfg.models.GaussianMixture.toy_2d()
else:
    rng = np.random.default_rng(0)
    m = ccfg.models.GaussianMixture(0.6 * rng.standard_normal((8, 64)), np.full(8, 0.1),
                                    concepts={"a": [0, 1, 2, 3, 4], "b": [4, 5, 6, 7]})
pos, neg = m.concept_names[0], m.concept_names[1]
g = ccfg.CFG(3.0) if rule == "CFG" else ccfg.CCFG(3.0)
kw = dict(guidance=g, sampler="ddim", steps=steps, n=n, seed=0, progress=False, device=dev)
args = (m, pos) if rule == "CFG" else (m, pos, neg)
ccfg.sample(*args, **dict(kw, n=64, steps=1))          # the device and its pipelines
t0 = time.perf_counter()
with ccfg.profiling.profile(dev) as prof:
    out = ccfg.sample(*args, **kw)
wall = time.perf_counter() - t0
per = prof.per(steps)
gmm = [r for r in per.rows if r[0].startswith("gmm_eps")]
up = [r for r in per.rows if "upload" in r[0]]
print("RESULT " + json.dumps(dict(
    gmm_ms=sum(r[2] for r in gmm), gmm_calls=sum(r[1] for r in gmm), device_ms=per.device_ms,
    dispatches=sum(r[1] for r in per.rows if "load" not in r[0]),
    submits=per.batches, upload_ms=sum(r[2] for r in up), uploads=sum(r[1] for r in up),
    wall_ms=1e3 * wall / steps, digest=hashlib.sha1(out.tobytes()).hexdigest())))
"""

ACCURACY = r"""
import numpy as np, ccfg
from ccfg import _core
rng, r0 = np.random.default_rng(1), np.random.default_rng(0)
models = {"toy_2d": ccfg.models.GaussianMixture.toy_2d(),
          "d64_K8": ccfg.models.GaussianMixture(0.6 * r0.standard_normal((8, 64)), np.full(8, 0.1),
                                                concepts={"a": [0, 1, 2, 3, 4], "b": [4, 5, 6, 7]}),
          "gmm64": ccfg.models.load("gmm64")}
for name, m in models.items():
    n = 4000
    x = (0.5 * rng.standard_normal((n, m.dim)) + m.means[rng.integers(0, m.K, n)]).astype(np.float32)
    for ab in (0.9999, 0.99, 0.5, 0.01):
        got = _core.gmm_eps(m._c_spec(), x, ab, np.zeros(n, np.int32), DEV).astype(np.float64)
        want = m._eps_numpy(x.astype(np.float64), ab, 0)
        rows = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-30)
        print(f"  {name:8} alpha_bar {ab:<7} relative error: norm {np.linalg.norm(got - want) / np.linalg.norm(want):.2e}, worst row {rows.max():.2e}")
"""

FIELDS = ("gmm_ms", "gmm_calls", "dispatches", "device_ms", "submits", "upload_ms", "uploads", "wall_ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--n64", type=int, nargs="+", default=None,
                    help="sample counts of the d = 64 case (default: --n; lavapipe's 128 MiB "
                         "storage-buffer range holds at most 500k rows of 64 floats)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["toy_2d", "d64_K8"],
                    choices=["toy_2d", "d64_K8"])
    ap.add_argument("--rules", nargs="+", default=["CFG", "CCFG"], choices=["CFG", "CCFG"])
    ap.add_argument("--staging", action="store_true",
                    help="CCFG_VULKAN_STAGING=1: device-local buffers and staging copies")
    ap.add_argument("--device", default=None, help="vulkan:N (default: the first)")
    ap.add_argument("--accuracy", action="store_true",
                    help="the eps error of float64 and float32 shaders instead of timings")
    a = ap.parse_args()
    sys.path.insert(0, os.getcwd())
    import numpy as np
    from ccfg import _core
    vk = [d for d in _core.devices() if d["backend"] == "vulkan" and d.get("available")]
    if not vk:
        print("no Vulkan device: skipped")
        return 0
    dev = a.device or vk[0]["selector"]
    print(f"{dev}: {vk[0]['name']} ({vk[0].get('driver', '?')}), float64 {vk[0].get('float64')}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"staging {a.staging}, load {os.getloadavg()[0]:.1f}")
    if a.accuracy:
        for f64 in (True, False):
            print("float64 shaders" if f64 else "float32 shaders (CCFG_VULKAN_NO_F64=1)")
            env = dict(os.environ)
            env.pop("CCFG_VULKAN_NO_F64", None)
            if not f64:
                env["CCFG_VULKAN_NO_F64"] = "1"
            r = subprocess.run([sys.executable, "-c", f"DEV = {dev!r}\n" + ACCURACY], env=env,
                               capture_output=True, text=True, timeout=3600)
            print(r.stdout + r.stderr[-3000:], end="")
            if r.returncode:
                return 1
        return 0
    print(f"per step (DDIM, {a.steps} steps; disp: gmm_eps dispatches, all: every dispatch), medians of {a.rounds} alternated processes; "
          f"new = default, old = CCFG_VULKAN_GMM_V1=1")
    head = (f"{'case':<26} {'gmm ms new':>10} {'old':>9} {'new/old':>7} {'disp new':>8} "
            f"{'old':>5} {'all new':>7} {'old':>5} {'dev ms new':>10} {'old':>9} {'upl new':>7} {'old':>5} "
            f"{'wall new':>9} {'old':>9} {'same':>5}")
    print(head)
    for model in a.models:
        for n in (a.n64 or a.n) if model == "d64_K8" else a.n:
            for rule in a.rules:
                runs = {"new": [], "old": []}
                for _ in range(a.rounds):
                    for setting in ("new", "old"):
                        env = dict(os.environ, CCFG_VULKAN_GMM_V1="1" if setting == "old" else "0")
                        if a.staging:
                            env["CCFG_VULKAN_STAGING"] = "1"
                        r = subprocess.run([sys.executable, "-c", CHILD, dev, model, rule, str(n),
                                            str(a.steps)], env=env, capture_output=True,
                                           text=True, timeout=3600)
                        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
                        if r.returncode or not line:
                            print(r.stderr[-3000:])
                            return 1
                        runs[setting].append(json.loads(line[0][len("RESULT "):]))
                med = {s: {f: float(np.median([r[f] for r in runs[s]])) for f in FIELDS}
                       for s in runs}
                same = len({r["digest"] for s in runs for r in runs[s]}) == 1
                nw, od = med["new"], med["old"]
                print(f"{model + ' ' + rule + ' n=' + str(n):<26} {nw['gmm_ms']:10.2f} "
                      f"{od['gmm_ms']:9.2f} {nw['gmm_ms'] / od['gmm_ms']:7.2f} "
                      f"{nw['gmm_calls']:8.1f} {od['gmm_calls']:5.1f} {nw['dispatches']:7.1f} "
                      f"{od['dispatches']:5.1f} {nw['device_ms']:10.2f} "
                      f"{od['device_ms']:9.2f} {nw['uploads']:7.1f} {od['uploads']:5.1f} "
                      f"{nw['wall_ms']:9.1f} {od['wall_ms']:9.1f} {str(same):>5}", flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
