"""The coop convolution's error on a device that runs it (lavapipe >= 26: `make test-coop`'s
device), against diffusers' float32 forward and against the fp16 path's forward: the same
products (float16 operands, exact products) summed in float32 in another order, so coop vs fp16
shows the summation order alone and coop vs fp32 the whole rounding. One subprocess per precision
(the precision is read when a device opens), outputs compared in this process.

    build/toolchain/lavapipe-run .venv/bin/python benchmarks/coop_error.py [--splitk-control]

Metric: max|a - b| / max|b| over the output. Prints one line per model and timestep; exit status
1 when the device does not run coop. --splitk-control: also fp16 and fp32 with
CCFG_VULKAN_CONV_SPLITK=auto, which changes only the order of the float32 sums, against the same
precision without it: what any change of summation order does to a whole forward.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench_common import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import os, sys
import numpy as np, torch, diffusers
from diffusers import UNet2DModel
import ccfg
from bench_common import cifar_unet
from ccfg.models import FASHION_MNIST_DIR
diffusers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)
dev, out_path = sys.argv[1], sys.argv[2]
res = {}
rng = np.random.default_rng(0)
unet = ccfg.models.load("fashion-mnist")
m = UNet2DModel.from_pretrained(os.path.join(FASHION_MNIST_DIR, "unet"),
                                low_cpu_mem_usage=False).eval()
x = rng.standard_normal((3,) + unet.shape).astype(np.float32)
labels = np.array([1, 7, 10])
for t in (999, 300, 10):
    with torch.no_grad():
        res[f"fashion-mnist t={t} ref"] = m(torch.from_numpy(x), t,
                                            torch.as_tensor(labels)).sample.numpy()
    res[f"fashion-mnist t={t}"] = unet(x, t, labels, device=dev)
cm, d = cifar_unet((64, 128, 128, 128))
cu = ccfg.models.UNet.from_pretrained(d)
x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
for t in (999, 20):
    with torch.no_grad():
        res[f"cifar-shaped t={t} ref"] = cm(torch.from_numpy(x), t).sample.numpy()
    res[f"cifar-shaped t={t}"] = cu(x, t, device=dev)
np.savez(out_path, **res)
"""


def main(argv=None):
    control = "--splitk-control" in (sys.argv[1:] if argv is None else argv)
    from ccfg import _core
    vks = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
    if not vks or "coop" not in vks[0]["precisions"]:
        print("the device does not run coop (run under build/toolchain/lavapipe-run)")
        return 1
    dev = vks[0]["selector"]
    print(f"{dev} {vks[0]['name']} {vks[0].get('driver_info', '')}; load "
          f"{os.getloadavg()[0]:.1f}")
    outs = {}
    runs = ["fp16", "coop"] + (["fp16 splitk", "fp32", "fp32 splitk"] if control else [])
    with tempfile.TemporaryDirectory() as tmp:
        for p in runs:
            path = os.path.join(tmp, p.replace(" ", "_") + ".npz")
            env = child_env(dict(os.environ, CCFG_VULKAN_PRECISION=p.split()[0],
                                 OMP_NUM_THREADS="1"))
            env.pop("CCFG_VULKAN_CONV_SPLITK", None)
            if p.endswith("splitk"):
                env["CCFG_VULKAN_CONV_SPLITK"] = "auto"
            r = subprocess.run([sys.executable, "-c", CHILD, dev, path], cwd=ROOT, env=env,
                               capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:])
                return 1
            outs[p] = dict(np.load(path))
    rel = lambda a, b: float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())
    res = {}
    for key in outs["coop"]:
        if key.endswith(" ref"):
            continue
        ref = outs["coop"][key + " ref"]
        res[key] = dict(coop_vs_fp32=rel(outs["coop"][key], ref),
                        fp16_vs_fp32=rel(outs["fp16"][key], ref),
                        coop_vs_fp16=rel(outs["coop"][key], outs["fp16"][key]))
        if control:
            res[key].update(fp16_splitk_vs_fp16=rel(outs["fp16 splitk"][key], outs["fp16"][key]),
                            fp32_splitk_vs_fp32=rel(outs["fp32 splitk"][key], outs["fp32"][key]))
        print(f"{key:<22} coop vs diffusers fp32 {res[key]['coop_vs_fp32']:.2e}, fp16 vs fp32 "
              f"{res[key]['fp16_vs_fp32']:.2e}, coop vs fp16 {res[key]['coop_vs_fp16']:.2e}" +
              (f"; split-K vs none: fp16 {res[key]['fp16_splitk_vs_fp16']:.2e}, fp32 "
               f"{res[key]['fp32_splitk_vs_fp32']:.2e}" if control else ""))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
