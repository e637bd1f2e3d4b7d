#!/usr/bin/env bash
# Run THERE, on a lent GPU machine, from the repository root, with gpu-carry/ (made here by
# benchmarks/gpu_prepare.sh) carried along: build with the carried toolchain (Debian 13's glslc
# for the cooperative-matrix shaders), then steps, most informative first, each within what is
# left of BUDGET (570 s; the device tool stops a command at 600 s). Part 1 (the first call,
# `bash benchmarks/gpu_remote.sh --profile`): the half-precision and cooperative-matrix tests
# (the 16x16x16 variants' first run), benchmarks/gpu_vs_torch.py (arguments are passed on; its
# UNet rows are followed by the same forward with CCFG_VULKAN_PRECISION=fp16 and coop), the coop
# convolution's tiles at 48 rows, the float32 convolution's tiles, the coop autotuner, the coop
# attention, the convolution switches. Part 2 (a second call while the machine is warm,
# `PART=2 bash benchmarks/gpu_remote.sh`, if the session's device time allows): the Vulkan
# tests, the coop and float32 tiles at 384 rows, the coop fold, the other on/off
# benchmarks. The log streams to $OUT/gpu_run_PART.txt (the device tool's output folder), so a
# cut run still returns what it printed.
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

PART=${PART:-1}     # 1: the first call; 2: a second call on the still-warm machine
mkdir -p "${OUT:-/tmp}"
log=${OUT:-/tmp}/gpu_run_$PART.txt
# The device tool stops a command at 600 s: every step after the build gets at most what is left
# of BUDGET seconds (less a margin) and is skipped when too little is left, most informative first
BUDGET=${BUDGET:-570}
step() {    # step SECONDS TITLE COMMAND...: run COMMAND with timeout min(SECONDS, what is left)
    local want=$1 title=$2; shift 2
    local left=$((BUDGET - SECONDS - 10))
    echo "== $title"
    if [ "$left" -lt 20 ]; then echo "   skipped: ${left}s left of BUDGET=$BUDGET"; return 0; fi
    [ "$want" -gt "$left" ] && want=$left
    timeout "$want" "$@" || echo "   (exit $? after at most ${want}s)"
}
coop_tests=$(ls tests/test_vulkan_coop*.py 2>/dev/null || true)
{
    echo "== build (part $PART)"
    time "$PY" setup.py -q build_ext --inplace
    "$PY" -c "import ccfg; [print('  ', d) for d in ccfg.devices()]"
    if [ "$PART" = 1 ]; then
    # the cooperative-matrix paths first (verified on lavapipe 26's 8x8x8 shapes only), then the
    # issue's table, then the coop structures to choose from
    step 120 "cooperative-matrix tests (16x16x16: their first run)" \
        "$PY" -m pytest -q -p no:cacheprovider tests/test_vulkan_half.py $coop_tests \
        tests/test_vulkan_tune.py tests/test_vulkan_conv_tiles.py
    step 240 "gpu_vs_torch" "$PY" benchmarks/gpu_vs_torch.py "$@"
    step 90 "float32 convolution tiles (CCFG_VULKAN_CONV_TILE), 48 rows, interleaved" \
        "$PY" benchmarks/conv_tiles_ab.py --rows 48 --rounds 3
    step 100 "coop convolution: tiles and stagings (CCFG_VULKAN_COOP_TILE), 48 rows, interleaved" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --tiles \
        --channels 128,256,256,256 --rows 48 --rounds 3
    step 90 "coop convolution: the autotuner (CCFG_VULKAN_COOP_TILE=auto), 48 rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/tune_report.py \
        --channels 128,256,256,256 --rows 48 --rounds 3
    step 60 "coop attention against the float32 tiled shader (SD sizes)" \
        "$PY" benchmarks/bench_vk_attention.py --big --modes coop,tiled --reps 3
    step 60 "convolution paths: cached float16 weights, residual binding (on vs off)" \
        "$PY" benchmarks/bench_vulkan_half.py --switches --channels 128,256,256,256 --rows 48 --rounds 3
    else
    step 200 "Vulkan tests" \
        "$PY" -m pytest -q -p no:cacheprovider tests/test_vulkan.py tests/test_vulkan_sampling.py \
        tests/test_unet_vulkan.py tests/test_unet_condition.py tests/test_pipelines.py \
        tests/test_profiling.py tests/test_apg.py tests/test_vk_attention.py \
        tests/test_device_coefficients.py
    step 100 "coop convolution: tiles and stagings, 384 rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --tiles \
        --channels 128,256,256,256 --rows 384 --rounds 3
    step 90 "float32 convolution tiles, 384 rows" \
        "$PY" benchmarks/conv_tiles_ab.py --rows 384 --rounds 3 --no-conv
    step 60 "GroupNorm folded into the coop convolution (CCFG_VULKAN_NORM_FOLD=1 vs 0), 2x2, 48 rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --fold \
        --channels 128,256,256,256 --rows 48 --rounds 3
    step 60 "the same, 2x4pp, 384 rows" \
        env CCFG_VULKAN_PRECISION=coop CCFG_VULKAN_COOP_TILE=2x4pp "$PY" benchmarks/coop_ab.py \
        --fold --channels 128,256,256,256 --rows 384 --rounds 3
    step 60 "float32 convolution tiles, 48 rows, split-K auto" \
        env CCFG_VULKAN_CONV_SPLITK=auto "$PY" benchmarks/conv_tiles_ab.py --rows 48 --rounds 3 --no-conv
    step 90 "attention: tiled vs lanes at SD sizes, and an SD-shaped UNet2DConditionModel forward" \
        "$PY" benchmarks/bench_vk_attention.py --big --unet --modes tiled,tiled-v1,tiled32,lanes
    step 90 "switches (group_norm subgroups, mixture sharing, split-K: on vs off)" \
        "$PY" benchmarks/bench_vk_switches.py --big --rounds 3 --no-norm-fold
    step 60 "GroupNorm+SiLU folded into the convolution (CCFG_VULKAN_NORM_FOLD=1) vs not (CIFAR, 48 rows)" \
        "$PY" benchmarks/bench_vk_switches.py --big --norm-fold-only --norm-fold-reps 5
    step 60 "mixture shader: near-memory path vs CCFG_VULKAN_GMM_V1=1 (n = 100k, 1M)" \
        "$PY" benchmarks/bench_vk_gmm.py --n 100000 1000000 --rounds 3
    fi
} 2>&1 | tee "$log"
