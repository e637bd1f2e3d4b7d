#!/usr/bin/env bash
# Run THERE, on a lent GPU machine, from the repository root, with gpu-carry/ (made here by
# benchmarks/gpu_prepare.sh) carried along: build with the carried toolchain, run the Vulkan tests
# and benchmarks/gpu_vs_torch.py (arguments are passed on; --profile is a good first run; its
# UNet rows are followed by the same forward with CCFG_VULKAN_PRECISION=fp16 and coop where the
# GPU runs them: the coop shaders' first check against the CPU, tests/test_vulkan_half.py too),
# then benchmarks/bench_vk_switches.py --big and bench_vulkan_half.py --switches (each path an
# environment switch turns off, on vs off), bench_vk_gmm.py and bench_vk_attention.py --big. The
# benchmarks after gpu_vs_torch have time limits so that the whole run fits the device tool's
# 600 s per command; the log streams to $OUT, so a cut run still returns what it printed.
# Results also go to $OUT (the device tool's output folder) when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
[ -f gpu-carry/carry.tar.xz ] || { echo "gpu-carry/carry.tar.xz missing: run benchmarks/gpu_prepare.sh on the dev machine"; exit 2; }
C=${CARRY_DIR:-/tmp/ccfg-carry}/carry
if [ ! -d "$C" ]; then
    mkdir -p "$(dirname "$C")" && tar -C "$(dirname "$C")" -xJf gpu-carry/carry.tar.xz
fi
export PATH="$C/bin:$PATH"
export LD_LIBRARY_PATH="$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$C/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CPATH="$C/include${CPATH:+:$CPATH}"
export CCFG_VULKAN_LOADER="$C/lib/libvulkan.so.1"
export CCFG_GLSLC_COOP="$C/bin/glslc-coop"      # the GL_KHR_cooperative_matrix shaders
if [ -z "${VK_DRIVER_FILES:-}" ]; then
    icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/nvidia*.json \
              /etc/vulkan/icd.d/nvidia*.json 2>/dev/null | head -1 || true)
    [ -n "$icd" ] && export VK_DRIVER_FILES="$icd"
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-<loader default>}"
if [ ! -d "$C/py" ] || [ -z "$(ls -A "$C/py")" ]; then
    "$PY" -m pip install -q --no-deps --no-index --target "$C/py" "$C"/wheels/*.whl
fi
export PYTHONPATH="$PWD:$C/py${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

log=${OUT:-/tmp}/gpu_run.txt
{
    echo "== build"
    time "$PY" setup.py -q build_ext --inplace
    "$PY" -c "import ccfg; [print('  ', d) for d in ccfg.devices()]"
    echo "== Vulkan tests"
    "$PY" -m pytest -q -p no:cacheprovider tests/test_vulkan.py tests/test_vulkan_sampling.py \
        tests/test_unet_vulkan.py tests/test_unet_condition.py tests/test_pipelines.py \
        tests/test_profiling.py tests/test_apg.py tests/test_vulkan_half.py tests/test_vk_attention.py \
        tests/test_device_coefficients.py || true
    echo "== gpu_vs_torch"
    "$PY" benchmarks/gpu_vs_torch.py "$@" || echo "gpu_vs_torch.py exited with $? (a MISMATCH line above says which)"
    echo "== switches (group_norm subgroups, mixture sharing: on vs off)"
    timeout 150 "$PY" benchmarks/bench_vk_switches.py --big --rounds 3 --no-norm-fold || true
    echo "== GroupNorm+SiLU folded into the convolution (CCFG_VULKAN_NORM_FOLD=1) vs not (the default; CIFAR, 48 rows)"
    timeout 120 "$PY" benchmarks/bench_vk_switches.py --big --norm-fold-only --norm-fold-reps 5 || true
    echo "== convolution paths: cached float16 weights, residual binding (on vs off)"
    timeout 150 "$PY" benchmarks/bench_vulkan_half.py --switches --channels 128,256,256,256 --rows 48 --rounds 3 || true
    echo "== mixture shader: near-memory path vs CCFG_VULKAN_GMM_V1=1 (n = 100k, 1M)"
    timeout 120 "$PY" benchmarks/bench_vk_gmm.py --n 100000 1000000 --rounds 3 || true
    echo "== attention: tiled vs lanes at SD sizes, and an SD-shaped UNet2DConditionModel forward"
    timeout 120 "$PY" benchmarks/bench_vk_attention.py --big --unet --modes tiled,tiled-v1,tiled32,lanes || true
} 2>&1 | tee "$log"
