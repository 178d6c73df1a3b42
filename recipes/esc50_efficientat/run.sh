#!/usr/bin/env bash
# EfficientAT mn10 on ESC-50, 5-fold cross-validation (SYNTH=1: mn04 from fresh weights, BatchNorm momentum 0.3
# instead of the reference's 0.01, which suits pretrained statistics: see sed/models/norm.py).
# Usage: bash recipes/esc50_efficientat/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages are recipes/common/esc50_kfold.sh (shared by every ESC-50 recipe).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=esc50_efficientat
synth_model=(--model.init_args.model_name=efficientat_mn04 --model.init_args.model_kwargs='{input_tdim: 500, bn_momentum: 0.3}'
             --model.init_args.warmup_steps=0)
source "$here/../common/esc50_kfold.sh"
