#!/usr/bin/env bash
# One script for a machine with a GPU (issue 3): build, the Vulkan tests, and the benchmark table
# of the CPU backend next to every Vulkan device (sampling job, ccfg.guide, and the device's memory
# bandwidth measured by shaders/copy.comp). Run from anywhere: benchmarks/gpu.sh [--full]
# Needs: a C compiler, glslc, the Vulkan headers and loader, a Vulkan driver for the GPU, Python
# with numpy/pytest/scipy (the repository's .venv if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

echo "== machine"
uname -a
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | sed -n '/Devices:/,$p' || true

echo "== build"
"$PY" setup.py -q build_ext --inplace
"$PY" -c "import ccfg; print(ccfg.__file__); [print('  ', d) for d in ccfg.devices()]"

echo "== Vulkan tests"
"$PY" -m pytest -q tests/test_vulkan.py tests/test_vulkan_sampling.py tests/test_unet_vulkan.py

echo "== benchmarks (medians; ratios against the CPU backend measured in the same process)"
PYTHONPATH=. "$PY" benchmarks/run.py --only vulkan "$@"

echo "== UNet on Vulkan (forward and CCFG sampling against ccfg CPU and torch CPU)"
PYTHONPATH=. "$PY" benchmarks/bench_unet_vulkan.py --n 16 --steps 20
