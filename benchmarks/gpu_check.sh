#!/usr/bin/env bash
# The GPU check, sized for one lent machine (8 minutes, one command): the CUDA tests and the
# paper-size inference benchmark, everything written under $OUT.
#
#   bash benchmarks/gpu_check.sh                 # OUT defaults to ./gpu_check_out
#
# It installs nothing from the network. The packages the lent machine's image lacks
# (x-transformers, vector-quantize-pytorch, pydantic, beartype and their needs) travel as wheels
# in .whl/ (docs/inference.md says how to fetch them); the repo's own packages are used from
# src/ without an install. Each step has its own time limit and the steps that would not fit in
# what is left of BUDGET_S are skipped (and said so), so a slow compile costs one figure, not
# the whole run.
#
# $OUT/gpu.txt              nvidia-smi and torch's view of the device
# $OUT/cuda_tests.log       pytest -m cuda (also cuda_tests.xml, JUnit)
# $OUT/f1_fsdp_step.jsonl   benchmarks/f1_fsdp_step.py: a paper-size post-train step, FSDP +
#                           activation checkpointing vs unsharded, step time and peak memory
# $OUT/f1_inference.jsonl   benchmarks/f1_inference.py --size paper records, all modes
# $OUT/bench.log            the benchmark's log (stderr)
# $OUT/steps.log            each step's exit status and seconds
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
BUDGET_S=${BUDGET_S:-470}
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONUNBUFFERED=1

WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME LIMIT_S NEEDED_S COMMAND...: run COMMAND under LIMIT_S if NEEDED_S are left.
step() {
  local name=$1 limit=$2 needed=$3
  shift 3
  if [ "$(left)" -lt "$needed" ]; then
    echo "$name: skipped, $(left) s left of $BUDGET_S, needs $needed" >>"$OUT/steps.log"
    return
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  local t0=$(date +%s)
  timeout "$limit" "$@"
  echo "$name: exit $? after $(($(date +%s) - t0)) s (limit $limit)" >>"$OUT/steps.log"
}

{
  nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
} >"$OUT/gpu.txt" 2>&1

step cuda_tests 170 60 python3 -m pytest -m cuda -q -p no:cacheprovider -rs \
  --junitxml="$OUT/cuda_tests.xml" tests/attention tests/mot tests/flow tests/f1kit/model \
  >"$OUT/cuda_tests.log" 2>&1

# Issue 19: one paper-size post-train step (batch 16, one GPU) through the trainer's sharded path.
step fsdp_step 200 120 python3 benchmarks/f1_fsdp_step.py --device cuda --size paper --batch 16 \
  --repeats 3 --warmup 1 >"$OUT/f1_fsdp_step.jsonl" 2>>"$OUT/bench.log"

BENCH=(python3 benchmarks/f1_inference.py --size paper --device cuda --repeats 10 --warmup 3)
JSONL="$OUT/f1_inference.jsonl"
step paper_eager 120 60 "${BENCH[@]}" --modes eager --cameras 1 3 >>"$JSONL" 2>>"$OUT/bench.log"
step paper_captured_v1 240 150 "${BENCH[@]}" --modes captured --cameras 1 \
  >>"$JSONL" 2>>"$OUT/bench.log"
step paper_captured_v3 200 150 "${BENCH[@]}" --modes captured --cameras 3 \
  >>"$JSONL" 2>>"$OUT/bench.log"
echo "done in $(($(date +%s) - START)) s" >>"$OUT/steps.log"
cat "$OUT/steps.log"
