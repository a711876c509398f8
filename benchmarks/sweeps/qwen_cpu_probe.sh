#!/usr/bin/env bash
# Qwen2.5-Coder-0.5B learning-rate probe on 2 CPU cores (docs/experiments/qwen.md): the qwen
# preset, batches of 4 + 4, short sequences, on a small qwen-recipe build; then the held-out
# reroute probe of one adapter. About 15 s a step here.
#   cb data build --recipe benchmarks/data/qwen_tiny_recipe.yaml --output-dir /tmp/qtiny  (5 min)
set -euo pipefail
probe() {  # probe NAME STEPS LR EXTRA...
  local name=$1 steps=$2 lr=$3; shift 3
  cb train --config configs/qwen.yaml --train_file /tmp/qtiny/train.jsonl \
    --output_dir "/tmp/probe_$name" --max_steps "$steps" --learning_rate "$lr" \
    --per_device_train_batch_size 4 --logging_steps 2 --max_prompt_tokens 192 \
    --max_completion_tokens 48 --save_steps 1000 "$@"
}
probe lr1e-3 24 1e-3                                          # stopped after 14 steps
probe skip_lr1.5e-3 40 1.5e-3 --lora_skip_massive_inputs true # stopped after 34 steps
probe skip_lr3e-3 40 3e-3 --lora_skip_massive_inputs true
python benchmarks/reroute_probe.py --model qwen2.5-coder-0.5b --adapter /tmp/probe_skip_lr3e-3/adapter \
  --data-dir /tmp/qtiny --target-layers 8 16 --n 12 \
  --output benchmarks/results/reroute_probe_qwen_cpu_lr3e-3.json
