#!/usr/bin/env bash
# fuzz/run.sh BUILD_DIR SECONDS TARGET...      run each target for SECONDS / (number of targets)
# fuzz/run.sh --merge BUILD_DIR 0 TARGET...    fold BUILD_DIR/new/TARGET into fuzz/corpus/TARGET
#
# The kept corpus (fuzz/corpus/TARGET) is read, never written, by a run: new inputs go to
# BUILD_DIR/new/TARGET and a crashing input to BUILD_DIR/artifacts/, which fails the run (the
# input to replay is named in the output: BUILD_DIR/TARGET_fuzz FILE). Called by `make fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
if [ "${1:-}" = "--merge" ]; then merge=1; shift; fi
dir=$1 seconds=$2
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || { echo "fuzz/run.sh: no targets"; exit 2; }

# leaks are checked (-detect_leaks=1 is libFuzzer's default); an allocation over 2 GiB is a finding
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$dir/artifacts"

each=$(( seconds / ${#targets[@]} ))
[ "$merge" = 1 ] || [ "$each" -ge 1 ] || each=1
status=0
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t new=$dir/new/$t
    mkdir -p "$corpus" "$new"
    if [ "$merge" = 1 ]; then
        before=$(ls "$corpus" | wc -l)
        "$dir/${t}_fuzz" -merge=1 -use_counters=0 "$corpus" "$new" 2>"$dir/$t.merge.log" || {
            tail -20 "$dir/$t.merge.log"; status=1; continue; }
        echo "fuzz $t: corpus $before -> $(ls "$corpus" | wc -l) inputs"
        continue
    fi
    log=$dir/$t.log
    echo "fuzz $t: ${each}s over $(ls "$corpus" | wc -l) corpus inputs"
    if "$dir/${t}_fuzz" -max_total_time="$each" -timeout=20 -rss_limit_mb=2560 \
            -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" "$new" "$corpus" \
            >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "fuzz $t: ${runs:-?} executions, no finding"
    else
        tail -60 "$log"
        echo "fuzz $t: FAILED (log: $log; replay: $dir/${t}_fuzz $dir/artifacts/$t-*)"
        status=1
    fi
done
exit $status
