"""Plot docs/training_loss.csv (written by train_fashion_mnist.py) to docs/training_loss.png."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "training_loss.csv")
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.splitext(src)[0] + ".png"
with open(src) as f:
    rows = list(csv.DictReader(f))
step = [int(r["step"]) for r in rows]
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(step, [float(r["loss"]) for r in rows], lw=1, label="train MSE (mean over 50 steps)")
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("epsilon MSE")
ax2 = ax.twinx()
ax2.plot(step, [float(r["lr"]) for r in rows], color="gray", lw=0.8, ls="--", label="learning rate")
ax2.set_ylabel("learning rate")
fig.legend(loc="upper right", fontsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(dst)
