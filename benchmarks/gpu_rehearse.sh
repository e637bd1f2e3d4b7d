#!/usr/bin/env bash
# Run HERE, on the development machine: the lent GPU's run rehearsed end to end, as the device
# tool would run it, so that a typo, a wrong flag, a file missing from the carry or an import
# that fails costs minutes here rather than the GPU's 15. In a fresh `git clone` of the current
# branch's HEAD (commit first: the device tool carries the working tree, this clones what is
# committed) with gpu-carry/ copied in (made by benchmarks/gpu_prepare.sh if missing), it runs
# `REHEARSE=1 bash benchmarks/gpu_remote.sh --profile` and `PART=2 REHEARSE=1 ...`: every step of
# both parts at tiny sizes, built with the carried toolchain, the carried Vulkan loader
# (CCFG_VULKAN_LOADER) and, as the device, Debian 13's lavapipe 26 (its 8x8x8 cooperative
# matrices; build/toolchain/lavapipe-run runs the interpreter under Debian 13's libraries,
# tools/debian_toolchain.py). The logs: $REHEARSE_DIR/out/gpu_run_{1,2}.txt, each ending with a
# per-step summary (ran / FAILED: exit N / TIMED OUT / skipped). Exit status 1 if a step did not
# run clean.
#
#     bash benchmarks/gpu_rehearse.sh [PARTS]        # PARTS: "1 2" (default), "1" or "2"
#
# Environment: VENV_PY (default .venv/bin/python: torch CPU, diffusers), REHEARSE_DIR (default
# /tmp/ccfg-rehearse, removed first), LP_NUM_THREADS (lavapipe's threads). On 2 cores at load
# 5-7 part 1 took 405 s (79 s of it the build) and part 2 119 s: every number it prints is a
# lavapipe number at tiny sizes, meaningless as a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
PARTS=${1:-1 2}
W=${REHEARSE_DIR:-/tmp/ccfg-rehearse}
VENV_PY=${VENV_PY:-$SRC/.venv/bin/python}
LVP=$SRC/build/toolchain/lavapipe-run
ICD=$SRC/build/toolchain/lvp_icd.json
[ -x "$LVP" ] && [ -f "$ICD" ] || { echo "no lavapipe 26: run python3 tools/debian_toolchain.py lavapipe"; exit 2; }
[ -f gpu-carry/carry.tar.xz ] || bash benchmarks/gpu_prepare.sh
rm -rf "$W"
mkdir -p "$W/out"
git clone -q --no-hardlinks --branch "$(git rev-parse --abbrev-ref HEAD)" "$SRC" "$W/repo"
cp -r gpu-carry "$W/repo/"
# the interpreter under Debian 13's loader and libraries (lavapipe 26 needs its glibc): the
# shadow of VENV_PY that lavapipe-run makes, used as gpu_remote.sh's PY
PY=$("$LVP" "$VENV_PY" -c 'import sys; print(sys.executable)')
echo "rehearsal in $W/repo at $(git -C "$W/repo" log -1 --format='%h %s' | cut -c1-80)"
echo "PY=$PY; carry $(du -h gpu-carry/carry.tar.xz | cut -f1); load $(cut -d' ' -f1-3 /proc/loadavg)"
bad=0
for part in $PARTS; do
    (cd "$W/repo" && OUT="$W/out" PART=$part REHEARSE=1 CARRY_DIR="$W/carry" PY="$PY" \
        VK_DRIVER_FILES="$ICD" bash benchmarks/gpu_remote.sh --profile) >/dev/null 2>&1 || bad=1
    sed -n '/^== summary/,$p' "$W/out/gpu_run_$part.txt"
    grep -q "^== summary" "$W/out/gpu_run_$part.txt" || { echo "part $part: no summary"; bad=1; }
    if sed -n '/^== summary/,$p' "$W/out/gpu_run_$part.txt" | grep -qE "FAILED|TIMED OUT|skipped"; then
        bad=1
    fi
done
echo "logs: $W/out/gpu_run_*.txt"
exit $bad
