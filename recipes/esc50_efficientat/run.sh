#!/usr/bin/env bash
# EfficientAT mn10 on ESC-50, 5-fold cross-validation (SYNTH=1: mn04).
# Usage: bash recipes/esc50_efficientat/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages are recipes/common/esc50_kfold.sh (shared by every ESC-50 recipe).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=esc50_efficientat
synth_model=(--model.init_args.model_name=efficientat_mn04 --model.init_args.model_kwargs='{input_tdim: 500}'
             --model.init_args.warmup_steps=0)
source "$here/../common/esc50_kfold.sh"
