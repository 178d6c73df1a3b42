#!/usr/bin/env bash
# CED-Mini on ESC-50, 5-fold cross-validation (SYNTH=1: a 2-block CED-Tiny).
# Usage: bash recipes/esc50_ced/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages are recipes/common/esc50_kfold.sh (shared by every ESC-50 recipe).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=esc50_ced
synth_model=(--model.init_args.model_name=ced_tiny --model.init_args.model_kwargs='{input_tdim: 501, depth: 2}'
             --trainer.precision=32-true --model.init_args.warmup_steps=0)  # warm-up: lr 0 for its first 50 steps
source "$here/../common/esc50_kfold.sh"
