"""Memory of the CPU convolution's scratch (docs/PERFORMANCE.md, "The CPU convolution's scratch
sized for the input"): per case, a child process runs one forward and reports the peak virtual
size (VmPeak: what was allocated, touched or not), the peak resident set (VmHWM) and, for a UNet,
its plan (UNet.plan_bytes). Run it on two builds (main's and a branch's) to compare; threads are
the environment's (OMP_NUM_THREADS).

    .venv/bin/python benchmarks/bench_conv_scratch.py

No time is measured. The classifier's weights are random (NumPy), saved to a temporary folder."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys
import numpy as np
import ccfg
from ccfg import metrics, safetensors as st

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024     # MiB
case, folder = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
out = {}
if case.startswith("classifier"):
    h, w = map(int, case.split(":")[1].split("x"))
    def conv(i, cin, cout, k, s, p):
        return {"type": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": k,
                "stride": s, "padding": p, "weight": f"c{i}.w", "bias": f"c{i}.b"}
    def gn(i, c, g):
        return {"type": "group_norm", "num_channels": c, "num_groups": g, "eps": 1e-5,
                "weight": f"g{i}.w", "bias": f"g{i}.b"}
    layers = [conv(0, 3, 8, 3, 1, 1), gn(0, 8, 4), {"type": "silu"}, conv(1, 8, 8, 3, 1, 1),
              conv(2, 8, 6, 3, 2, 1), gn(1, 6, 3), {"type": "silu"}, {"type": "spatial_mean"},
              {"type": "linear", "in_features": 6, "out_features": 5, "weight": "l0.w",
               "bias": "l0.b"}]
    shapes = {"c0": (8, 3, 3, 3), "c1": (8, 8, 3, 3), "c2": (6, 8, 3, 3), "g0": (8,), "g1": (6,),
              "l0": (5, 6)}
    tensors = {}
    for key, shape in shapes.items():
        tensors[key + ".w"] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
        tensors[key + ".b"] = (0.3 * rng.standard_normal(shape[0])).astype(np.float32)
    st.save(os.path.join(folder, "model.safetensors"), tensors)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"input_shape": [3, h, w], "layers": layers}, f)
    clf = metrics.Classifier(folder)
    before = status("VmHWM")
    clf.logits(rng.uniform(-1, 1, (4, 3, h, w)).astype(np.float32))
else:
    name, hw, batch = case.split(":")
    h, w = map(int, hw.split("x"))
    if name == "fashion-mnist":
        unet = ccfg.models.UNet.from_pretrained(os.path.join(ROOT, "ccfg/weights/fashion-mnist/unet"))
        labels = np.zeros(int(batch), np.int64)
    else:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        from bench_common import cifar_unet
        _, saved = cifar_unet(channels=(64, 128, 128, 128))
        unet = ccfg.models.UNet.from_pretrained(saved)
        labels = None
    before = status("VmHWM")
    x = rng.standard_normal((int(batch), unet.shape[0], h, w)).astype(np.float32)
    unet(x, np.full(int(batch), 500), labels)
    out["plan_MiB"] = round(unet.plan_bytes / 2**20, 2)
out.update(VmPeak_MiB=status("VmPeak"), VmHWM_MiB=status("VmHWM"), VmHWM_before_MiB=before)
print(json.dumps(out))
"""

CASES = ["classifier:2x4096", "classifier:1x16384", "fashion-mnist:32x32:16",
         "cifar-half:32x32:4", "cifar-half:32x64:4"]


def main():
    print(f"threads (OMP_NUM_THREADS): {os.environ.get('OMP_NUM_THREADS', 'all')}")
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + CHILD, case, d],
                               cwd=ROOT, capture_output=True, text=True, timeout=900)
        if r.returncode:
            print(f"{case:24s} FAILED: {r.stderr[-500:]}")
            continue
        got = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{case:24s} " + "  ".join(f"{k} {v}" for k, v in got.items()))


if __name__ == "__main__":
    main()
