"""The UNet forward on a Vulkan device in each precision it runs (CCFG_VULKAN_PRECISION: fp32,
fp16, coop), one subprocess per run (the precision is read when a device opens), runs of the
precisions interleaved, medians; the convolutions' device time from ccfg.profiling.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vulkan_half.py [--device vulkan:0]
        [--rows 4] [--channels 64,128,128,128] [--rounds 2] [--repeats 3] [--switches]
        [--model cifar|shipped]

Model: a CIFAR-shaped UNet2DModel (3 x 32 x 32; the blocks of benchmarks/gpu_vs_torch.py's,
attention at 16 x 16 and below) with random weights (torch seed 0) and --channels; the default
halves gpu_vs_torch.py's (128, 256, 256, 256), whose weights exceed lavapipe's 128 MiB
maxStorageBufferRange. --model shipped: the shipped Fashion-MNIST UNet instead. Each run first
checks its forward against diffusers' float32 forward (on CUDA, TF32 off, where torch has it;
1e-3 for fp32, the half precisions' contract 3e-3: tests/test_vulkan_half.py). Prints per precision the forward's median and the
convolutions' device time, and their ratios to fp32.

--switches: instead of the precisions, each speed path of the convolutions against its off
switch, alternated: fp32 and fp32 with CCFG_VULKAN_NO_CONV_RESIDUAL=1 (the residual added in the
convolution's epilogue, or copied into y first), fp16 and fp16 with CCFG_VULKAN_NO_F16_CACHE=1
(float16 weights converted once when placed, or per call), and the same for coop where the
device runs it. Also prints the dispatches per forward
(every profiled command) and the device time of the whole forward.
Nothing about time is asserted; exit status 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench_common import child_env

CHILD = r"""
import json, os, sys, time
import numpy as np, torch
import diffusers
from diffusers import UNet2DModel
import ccfg
from bench_common import cifar_unet
diffusers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)
dev, rows, ch, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = np.random.default_rng(0)
# the float32 reference on CUDA where there is one (TF32 off): on one CPU thread the full CIFAR
# model at 48 rows takes seconds, in each of the runs
tdev = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
if ch == "shipped":
    from ccfg.models import FASHION_MNIST_DIR
    m = UNet2DModel.from_pretrained(os.path.join(FASHION_MNIST_DIR, "unet"),
                                    low_cpu_mem_usage=False).eval().to(tdev)
    unet = ccfg.models.load("fashion-mnist")
    x = rng.standard_normal((rows,) + unet.shape).astype(np.float32)
    labels = np.arange(rows) % 10
    with torch.no_grad():
        ref = m(torch.from_numpy(x).to(tdev), 500,
                torch.as_tensor(labels).to(tdev)).sample.cpu().numpy()
    call = lambda: unet(x, 500, labels, device=dev)
else:
    m, d = cifar_unet(map(int, ch.split(",")))
    unet = ccfg.models.UNet.from_pretrained(d)
    x = rng.standard_normal((rows, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = m.to(tdev)(torch.from_numpy(x).to(tdev), 500).sample.cpu().numpy()
    call = lambda: unet(x, 500, device=dev)
out = call()
err = float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())
ts = []
for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    ts.append(time.perf_counter() - t0)
with ccfg.profiling.profile(dev) as prof:
    call()
conv = sum(ms for kind, _, ms in prof.rows if kind.startswith("nn_conv2d") or kind == "nn_to_f16")
print(json.dumps(dict(err=err, forward=float(np.median(ts)), conv_ms=conv,
                      device_ms=prof.device_ms,
                      dispatches=int(sum(c for _, c, _ in prof.rows)),
                      kinds={k: ms for k, _, ms in prof.rows if "conv" in k or "f16" in k},
                      calls={k: int(c) for k, c, _ in prof.rows
                             if k in ("nn_to_f16", "copy (vkCmdCopyBuffer)")})))
"""

SWITCHED = {"fp32": {}, "fp32 no-residual": {"CCFG_VULKAN_NO_CONV_RESIDUAL": "1"},
            "fp16": {}, "fp16 no-f16-cache": {"CCFG_VULKAN_NO_F16_CACHE": "1"},
            "coop": {}, "coop no-f16-cache": {"CCFG_VULKAN_NO_F16_CACHE": "1"}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="the Vulkan device (default: the first)")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--channels", default="64,128,128,128")
    ap.add_argument("--rounds", type=int, default=2, help="runs per precision, interleaved")
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per run")
    ap.add_argument("--switches", action="store_true",
                    help="each convolution speed path against its off switch (see above)")
    ap.add_argument("--model", choices=("cifar", "shipped"), default="cifar")
    args = ap.parse_args(argv)
    import ccfg
    vks = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d
           and d["available"]]
    if args.device:
        vks = [d for d in vks if d["selector"] == args.device]
    if not vks:
        print("skipped: no Vulkan device")
        return 0
    info = vks[0]
    dev = info["selector"]
    precs = info.get("precisions", ["fp32"])
    model = "shipped" if args.model == "shipped" else args.channels
    print(f"{dev} {info['name']}; precisions {precs}; {args.rows} rows, model {model}; "
          f"load {os.getloadavg()[0]:.1f}")
    if args.switches:
        precs = [p for p in SWITCHED if p.split()[0] in precs]
    runs = {p: [] for p in precs}
    bad = 0
    for r in range(args.rounds):
        for p in precs:
            env = child_env(dict(os.environ, CCFG_VULKAN_PRECISION=p.split()[0],
                                 OMP_NUM_THREADS="1"))
            for var in ("CCFG_VULKAN_NO_CONV_RESIDUAL", "CCFG_VULKAN_NO_F16_CACHE"):
                env.pop(var, None)
            env.update(SWITCHED.get(p, {}) if args.switches else {})
            res = subprocess.run([sys.executable, "-c", CHILD, dev, str(args.rows), model,
                                  str(args.repeats)], env=env, capture_output=True, text=True)
            if res.returncode:
                print(f"{p}: failed\n{res.stderr[-2000:]}")
                return 1
            got = json.loads(res.stdout.strip().splitlines()[-1])
            tol = 1e-3 if p.startswith("fp32") else 3e-3
            ok = got["err"] <= tol
            bad += not ok
            print(f"round {r} {p}: forward {got['forward'] * 1e3:.0f} ms, convolutions "
                  f"{got['conv_ms']:.0f} ms device time {got['kinds']}; {got['dispatches']} "
                  f"dispatches {got['calls']}, {got['device_ms']:.0f} ms device time; error vs "
                  f"diffusers fp32 {got['err']:.2e} (tolerance {tol:g}) "
                  f"{'ok' if ok else 'MISMATCH'}; load {os.getloadavg()[0]:.1f}")
            runs[p].append(got)
    med = lambda gs, key: sorted(g[key] for g in gs)[len(gs) // 2]

    def table(names, base):
        bf, bc, bd = (med(runs[base], k) for k in ("forward", "conv_ms", "device_ms"))
        print(f"\n{'run':<18} {'forward ms':>11} {'ratio':>6} {'conv ms':>9} {'ratio':>6} "
              f"{'device ms':>10} {'ratio':>6} {'dispatches':>10}  (ratios to {base})")
        for p in names:
            f, c, d = (med(runs[p], k) for k in ("forward", "conv_ms", "device_ms"))
            print(f"{p:<18} {f * 1e3:11.0f} {f / bf:6.2f} {c:9.0f} {c / bc:6.2f} {d:10.0f} "
                  f"{d / bd:6.2f} {runs[p][0]['dispatches']:10d}")
    if args.switches:
        for base in ("fp32 no-residual", "fp16 no-f16-cache", "coop no-f16-cache"):
            if base in runs:
                table([p for p in runs if p.split()[0] == base.split()[0]], base)
    else:
        table(list(runs), "fp32")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
