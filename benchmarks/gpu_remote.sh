#!/usr/bin/env bash
# Run THERE, on a lent GPU machine, from the repository root, with gpu-carry/ (made here by
# benchmarks/gpu_prepare.sh) carried along: build with the carried toolchain (Debian 13's glslc
# for the cooperative-matrix shaders), then steps, most informative first, each within what is
# left of BUDGET (570 s; the device tool stops a command at 600 s); the sizes are set in one
# block below. The log streams to $OUT/gpu_run_PART.txt (the device tool's output folder), so a
# cut run still returns what it printed; it ends with a summary, one line per step: ran / FAILED:
# exit N / TIMED OUT / skipped (no time left) / done in part 1.
#
# Part 1, the first call: run(command="bash benchmarks/gpu_remote.sh --profile", carry=
# ["gpu-carry"], timeout_s=600). The cooperative-matrix and half-precision tests (the 16x16x16
# variants' first run), benchmarks/gpu_vs_torch.py (arguments are passed on; its UNet rows are
# followed by the same forward with CCFG_VULKAN_PRECISION=fp16 and coop), the float32 and coop
# convolution tiles at 48 rows, the coop and float32 autotuners (their decisions saved and
# copied into $OUT as ccfg_tune_cache.txt), the coop attention, the coop and float32 tiles at 384
# rows, then the float16-cache/residual switches with what is left.
# Part 2, a second call while the machine is warm, only if status says enough device time is
# left: run(command="PART=2 BUDGET=<budget_left_s - 60> bash benchmarks/gpu_remote.sh",
# timeout_s=<the same + 20>) -- the command is stopped at what is left of the session's device
# time, so BUDGET must say it. The Vulkan tests, the 384-row tiles if part 1 did not run them,
# the float32 autotuner from part 1's saved decisions (0 candidate runs expected), the coop fold, the other on/off benchmarks. Call it at once: status said idle_release_s 30, so a
# warm machine is given back 30 s after a call ends, and a fresh one costs minutes of start-up and
# a rebuild (no machine starts with under 4 minutes left).
#
# Budget (estimates for the H200 machine, docs/PERFORMANCE.md "Rehearsing the GPU run"): the
# machine's start-up (minutes) comes out of the session's 15 minutes, not out of the 570 s.
# Part 1: carry, wheels and build ~30 s (the first run built in ~12 s; 70 shaders since), tests
# <= 120 s (the cap; 61 tests, most in child processes), gpu_vs_torch ~95 s (240 s if the
# transfer and coefficient paths are still as slow as in the first run), tiles and tuner at 48
# rows ~65 s, the float32 autotuner ~10 s (~1.2 s of it tuning), coop attention ~12 s, tiles at 384 rows ~60 s, the switches (18 child processes,
# ~6 s each) the rest: ~500 s in all, within 570; in the worst case the last step is cut.
# Part 2 then has ~150-250 s of the session's time: the Vulkan tests (641) may take all of it.
#
# Rehearsal HERE (no GPU; do it after any change to this file or to a step's script):
#     bash benchmarks/gpu_rehearse.sh
# runs REHEARSE=1 (every step of both parts at tiny sizes, the tests collected only, the step
# timeouts x20, no overall budget) in a fresh clone with the carry, its loader and Debian 13's
# lavapipe 26: 405 s + 119 s on 2 cores at load 5-7. DRY_RUN=1 prints the steps' commands and runs
# nothing (tests/test_gpu_bench.py checks them in make test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
PART=${PART:-1}     # 1: the first call; 2: a second call on the still-warm machine
REHEARSE=${REHEARSE:-0}
DRY_RUN=${DRY_RUN:-0}
# The steps' sizes, in one place: the real run's. REHEARSE=1 (a rehearsal on whatever Vulkan
# device there is, e.g. lavapipe) replaces them with tiny ones, so every step's script, flags,
# imports and code path run end to end while the command lines stay those of the real run.
ROWS=48                 # the CIFAR-sized UNet's rows (the issue's 48-row case)
ROWS_BIG=384            # the issue's 384-row case (the tiles at the end of part 1)
ROUNDS=3                # interleaved rounds of each A/B
CH=128,256,256,256      # the issue's CIFAR-sized UNet2DModel (35.7M parameters)
VS_SIZE=""              # gpu_vs_torch.py: its full sizes ("") or --smoke
ATT_SIZE=""             # bench_vk_attention.py --big: SD sizes ("") or --tokens N
ATT_REPS=3
SW_SIZE=--big           # bench_vk_switches.py: GPU sizes (--big) or its small ones ("")
NF_REPS=5               # bench_vk_switches.py's alternated norm-fold pairs
GMM_N="100000 1000000"  # bench_vk_gmm.py's sample counts
TESTS=""                # pytest: run the tests ("") or --collect-only
SCALE=1                 # each step's timeout is multiplied by this
BUDGET=${BUDGET:-570}   # seconds for the whole command (the device tool stops it at 600)
# the autotuners' decisions (CCFG_VULKAN_TUNE_CACHE): kept beside the carry, which stays on the warm
# machine between the two calls (each call's $OUT starts empty), and copied into $OUT at the end
TUNE_CACHE=${CARRY_DIR:-/tmp/ccfg-carry}/ccfg_tune_cache.txt
if [ "$REHEARSE" = 1 ]; then
    # the shaders and pipelines of lavapipe (a CPU) at 2 rows cost what an H200's cost at 384,
    # and the Vulkan tests are run elsewhere (make test, make test-coop): collected here, to
    # check the files and their imports
    ROWS=2 ROWS_BIG=2 ROUNDS=1 CH=32,64,64,64 VS_SIZE=--smoke ATT_SIZE="--tokens 128"
    ATT_REPS=1 SW_SIZE="" NF_REPS=1 GMM_N=2000 TESTS=--collect-only SCALE=20
    BUDGET=${REHEARSE_BUDGET:-100000}
fi

mkdir -p "${OUT:-/tmp}"
log=${OUT:-/tmp}/gpu_run_$PART.txt
[ "$DRY_RUN" = 1 ] && log=/dev/null
setup_carry() {   # the carried toolchain, loader, ICD and wheels (not in DRY_RUN)
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
        # a Python the wheels were not made for (gpu_prepare.sh: REMOTE_PYTHON_VERSION) must not end
        # the run: the steps that need diffusers then use this Python's own, or fail one by one
        "$PY" -m pip install -q --no-deps --no-index --target "$C/py" "$C"/wheels/*.whl \
            || echo "note: the carried wheels did not install for $("$PY" -V 2>&1)"
    fi
    export PYTHONPATH="$PWD:$C/py${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1   # a step stopped by its timeout keeps what it printed
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
}
# The device tool stops a command at 600 s: every step after the build gets at most what is left
# of BUDGET seconds (less a margin) and is skipped when too little is left, most informative first
RESULTS=()
# the steps that ran clean in part 1 (on this machine, which stays warm between the two calls):
# part 2 lists the ones that part 1 may not reach, and runs them only if part 1 did not
DONE=${CARRY_DIR:-/tmp/ccfg-carry}/steps_done_part1.txt
step() {    # step SECONDS TITLE COMMAND...: run COMMAND with timeout min(SECONDS, what is left)
    local want=$(($1 * SCALE)) title=$2 rc=0 t0=$SECONDS left status; shift 2
    echo "== $title"
    if [ "$DRY_RUN" = 1 ]; then echo "   command: $*"; return 0; fi
    left=$((BUDGET - SECONDS - 10))
    if [ "$PART" != 1 ] && [ -f "$DONE" ] && grep -qxF "$title" "$DONE"; then
        status="done in part 1, not rerun"
    elif [ "$left" -lt 20 ]; then
        status="skipped (${left}s left of BUDGET=$BUDGET)"
    else
        [ "$want" -gt "$left" ] && want=$left
        timeout -k 10 "$want" "$@" || rc=$?
        case $rc in
            0) status="ran, $((SECONDS - t0))s"
               if [ "$PART" = 1 ]; then echo "$title" >> "$DONE"; fi ;;
            124|137) status="TIMED OUT at ${want}s (exit $rc)" ;;
            *) status="FAILED: exit $rc after $((SECONDS - t0))s" ;;
        esac
    fi
    echo "   -> $status"
    RESULTS+=("$(printf '%-34s %s' "$status" "$title")")
}
coop_tests=$(ls tests/test_vulkan_coop*.py 2>/dev/null || true)
tiles_big() {   # the tiles at the issue's 384 rows: at the end of part 1, in part 2 if not run
    step 100 "coop convolution: tiles and stagings, $ROWS_BIG rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --tiles \
        --channels $CH --rows $ROWS_BIG --rounds $ROUNDS
    step 90 "float32 convolution tiles, $ROWS_BIG rows" \
        "$PY" benchmarks/conv_tiles_ab.py --channels $CH --rows $ROWS_BIG --rounds $ROUNDS --no-conv
}
{
    if [ "$DRY_RUN" != 1 ]; then
    setup_carry
    if [ "$PART" = 1 ]; then mkdir -p "$(dirname "$DONE")"; : > "$DONE"; fi
    echo "== build (part $PART$([ "$REHEARSE" = 1 ] && echo ', REHEARSAL: tiny sizes'))"
    time "$PY" setup.py -q build_ext --inplace
    "$PY" -c "import ccfg; [print('  ', d) for d in ccfg.devices()]"
    echo "   -> build done at ${SECONDS}s"
    fi
    if [ "$PART" = 1 ]; then
    # the cooperative-matrix paths first (verified on lavapipe 26's 8x8x8 shapes only), then the
    # issue's table, then the coop structures to choose from
    # (-v: a run cut by its timeout still shows each test's outcome; the coop files first)
    step 120 "cooperative-matrix tests (16x16x16: their first run)" \
        "$PY" -m pytest -v --durations=10 -p no:cacheprovider $TESTS $coop_tests \
        tests/test_vulkan_half.py tests/test_vulkan_tune.py tests/test_vulkan_conv_tiles.py
    step 240 "gpu_vs_torch" "$PY" benchmarks/gpu_vs_torch.py $VS_SIZE "$@"
    step 90 "float32 convolution tiles (CCFG_VULKAN_CONV_TILE), $ROWS rows, interleaved" \
        "$PY" benchmarks/conv_tiles_ab.py --channels $CH --rows $ROWS --rounds $ROUNDS
    step 100 "coop convolution: tiles and stagings (CCFG_VULKAN_COOP_TILE), $ROWS rows, interleaved" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --tiles \
        --channels $CH --rows $ROWS --rounds $ROUNDS
    # both tuners save their decisions into $OUT, so the H200's choices come back as a file
    step 90 "coop convolution: the autotuner (CCFG_VULKAN_COOP_TILE=auto), $ROWS rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/tune_report.py \
        --channels $CH --rows $ROWS --rounds $ROUNDS --cache "$TUNE_CACHE"
    step 60 "float32 convolution: the autotuner (CCFG_VULKAN_CONV_TILE=auto), $ROWS rows" \
        "$PY" benchmarks/tune_report.py --family fp32 --channels $CH --rows $ROWS \
        --rounds $ROUNDS --cache "$TUNE_CACHE"
    step 60 "coop attention against the float32 tiled shader (SD sizes)" \
        "$PY" benchmarks/bench_vk_attention.py --big $ATT_SIZE --modes coop,tiled --reps $ATT_REPS
    tiles_big
    # last: 6 runs per round, each its own process (torch and diffusers imported): what is left
    step 150 "convolution paths: cached float16 weights, residual binding (on vs off)" \
        "$PY" benchmarks/bench_vulkan_half.py --switches --channels $CH --rows $ROWS --rounds $ROUNDS
    else
    step 200 "Vulkan tests" \
        "$PY" -m pytest -q --durations=10 -p no:cacheprovider $TESTS tests/test_vulkan.py tests/test_vulkan_sampling.py \
        tests/test_unet_vulkan.py tests/test_unet_condition.py tests/test_pipelines.py \
        tests/test_profiling.py tests/test_apg.py tests/test_vk_attention.py \
        tests/test_device_coefficients.py
    tiles_big
    step 30 "float32 convolution: the autotuner from part 1's saved decisions (expect 0 candidate runs)" \
        "$PY" benchmarks/tune_report.py --family fp32 --channels $CH --rows $ROWS --rounds 0 \
        --cache "$TUNE_CACHE"
    step 60 "GroupNorm folded into the coop convolution (CCFG_VULKAN_NORM_FOLD=1 vs 0), 2x2, $ROWS rows" \
        env CCFG_VULKAN_PRECISION=coop "$PY" benchmarks/coop_ab.py --fold \
        --channels $CH --rows $ROWS --rounds $ROUNDS
    step 60 "the same, 2x4pp, $ROWS_BIG rows" \
        env CCFG_VULKAN_PRECISION=coop CCFG_VULKAN_COOP_TILE=2x4pp "$PY" benchmarks/coop_ab.py \
        --fold --channels $CH --rows $ROWS_BIG --rounds $ROUNDS
    step 60 "float32 convolution tiles, $ROWS rows, split-K auto" \
        env CCFG_VULKAN_CONV_SPLITK=auto "$PY" benchmarks/conv_tiles_ab.py --channels $CH \
        --rows $ROWS --rounds $ROUNDS --no-conv
    step 90 "attention: tiled vs lanes at SD sizes, and an SD-shaped UNet2DConditionModel forward" \
        "$PY" benchmarks/bench_vk_attention.py --big $ATT_SIZE --unet --modes tiled,tiled-v1,tiled32,lanes \
        --reps $ATT_REPS
    step 90 "switches (group_norm subgroups, mixture sharing, split-K: on vs off)" \
        "$PY" benchmarks/bench_vk_switches.py $SW_SIZE --rounds $ROUNDS --no-norm-fold
    step 60 "GroupNorm+SiLU folded into the convolution (CCFG_VULKAN_NORM_FOLD=1) vs not (CIFAR, $ROWS rows)" \
        "$PY" benchmarks/bench_vk_switches.py $SW_SIZE --norm-fold-only --norm-fold-reps $NF_REPS
    step 60 "mixture shader: near-memory path vs CCFG_VULKAN_GMM_V1=1 (n = 100k, 1M)" \
        "$PY" benchmarks/bench_vk_gmm.py --n $GMM_N --rounds $ROUNDS
    fi
    [ "$DRY_RUN" = 1 ] && exit 0
    echo "== summary, part $PART$([ "$REHEARSE" = 1 ] && echo ' (REHEARSAL)'), ${SECONDS}s of BUDGET=$BUDGET"
    for r in "${RESULTS[@]}"; do echo "   $r"; done
    if [ -f "$TUNE_CACHE" ]; then cp "$TUNE_CACHE" "${OUT:-/tmp}/"; echo "   tuning decisions: ${OUT:-/tmp}/$(basename "$TUNE_CACHE")"; fi
} 2>&1 | tee "$log"
