#!/usr/bin/env bash
# The GPU check (issue 20): on a bare GPU machine holding this repository (and ../shared beside it), install the
# project, run `pytest -m gpu`, make a small fake val set and measure, each step in its own process under its own
# `timeout`, inside a total budget (default 470 s: under 8 minutes with the install). After every step the summary
# is rebuilt, so a run cut short leaves what it measured:
#   OUT/summary.json, OUT/summary.md      the steps' status, wall time and results
#   OUT/steps/STEP.json, STEP.status      each step's result (written after every round) and exit status
#   OUT/logs/STEP.log                     each step's output
#
# Usage: benchmarks/gpu_check.sh [--out DIR] [--work DIR] [--skip-install] [--only STEP,STEP] [--timeout STEP=S]
#                                [--total S] [--dry-run]
#   --out DIR       where results go (default: $OUT, else ./gpu-check)
#   --work DIR      scratch space for the fake val set (default /tmp/ibnbench-gpu-check; kept between runs)
#   --dry-run       CPU, toy sizes, only tests/test_gpu.py: checks the script end to end, measures nothing
# Steps: install env pytest_gpu fake_val pipeline table1 fanout throughput real100 cache_gpu imagenet_c
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
RESULTS=${OUT:-$PWD/gpu-check}
WORK=${WORK:-/tmp/ibnbench-gpu-check}
DRY=""
INSTALL=1
ONLY=""
TOTAL=470
declare -A LIMIT=([install]=75 [env]=25 [pytest_gpu]=90 [fake_val]=60 [pipeline]=45 [table1]=75 [fanout]=45
                  [throughput]=30 [real100]=30 [cache_gpu]=30 [imagenet_c]=30)
declare -A OVERRIDE=()

while (($#)); do
    case $1 in
        --out) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --skip-install) INSTALL=0; shift ;;
        --only) ONLY=$2; shift 2 ;;
        --timeout) OVERRIDE[${2%%=*}]=${2#*=}; shift 2 ;;
        --total) TOTAL=$2; shift 2 ;;
        --dry-run) DRY="--dry-run"; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n $DRY ]]; then  # the CPU is slow and shared: generous limits, nothing here is a measurement
    for step in "${!LIMIT[@]}"; do LIMIT[$step]=300; done
    [[ $TOTAL == 470 ]] && TOTAL=1800
fi
for step in "${!OVERRIDE[@]}"; do LIMIT[$step]=${OVERRIDE[$step]}; done
if [[ -z ${IBNBENCH_SHARED:-} ]]; then  # ../shared beside the checkout, or shared/ inside it
    for candidate in "$REPO/../shared" "$REPO/shared"; do
        [[ -d $candidate ]] && export IBNBENCH_SHARED=$(cd "$candidate" && pwd) && break
    done
fi
mkdir -p "$RESULTS/steps" "$RESULTS/logs" "$WORK"
RESULTS=$(cd "$RESULTS" && pwd)
cd "$REPO" || exit 2
START=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
summarize() { "$PY" benchmarks/gpu_check.py summarize --out "$RESULTS" >/dev/null 2>&1; }
trap 'summarize; exit 130' INT TERM

# run_step NAME COMMAND...: COMMAND under `timeout`, within what is left of the total budget.
run_step() {
    local name=$1; shift
    if [[ -n $ONLY && ",$ONLY," != *",$name,"* ]]; then return; fi
    local left limit start rc
    left=$(awk -v t="$TOTAL" -v e="$(elapsed "$START")" 'BEGIN { printf "%d", t - e }')
    limit=${LIMIT[$name]}
    ((limit > left)) && limit=$left
    if ((left < 5)); then
        echo "skip 0 0" >"$RESULTS/steps/$name.status"
        echo "== $name: not run (${left}s of the ${TOTAL}s budget left)"
        summarize
        return
    fi
    echo "== $name (limit ${limit}s, $(elapsed "$START")s elapsed)"
    start=$(date +%s.%N)
    local args=("${@/#@LIMIT@/$limit}")  # the step's own budget: what its timeout allows
    timeout --kill-after=10 "$limit" "${args[@]}" >"$RESULTS/logs/$name.log" 2>&1
    rc=$?
    echo "$rc $(elapsed "$start") $limit" >"$RESULTS/steps/$name.status"
    ((rc == 0)) || echo "   $name: exit $rc (see $RESULTS/logs/$name.log)"
    summarize
}

step() { run_step "$1" "$PY" benchmarks/gpu_check.py "$1" --out "$RESULTS" --work "$WORK" --budget @LIMIT@ $DRY; }

if ((INSTALL)); then
    run_step install bash -c "'$PY' -m pip install -q -c .ci/constraints.txt -e '.[test,lite]' || {
        echo 'online install failed; installing without dependencies (they must be there already)';
        '$PY' -m pip install -q --no-deps --no-build-isolation -e .; }"
fi
step env
PYTEST_PATHS=tests
[[ -n $DRY ]] && PYTEST_PATHS=tests/test_gpu.py
run_step pytest_gpu "$PY" -m pytest -q -p no:cacheprovider -m gpu $PYTEST_PATHS -rs \
    --junitxml "$RESULTS/logs/pytest_gpu.xml"
step fake_val
step pipeline
step table1
step fanout
step throughput
step real100
step cache_gpu
step imagenet_c
summarize
echo "== done in $(elapsed "$START")s: $RESULTS/summary.md"
cat "$RESULTS/summary.md"
