#!/usr/bin/env bash
# Frame-level BEATs fine-tuned on DESED (attention pooling to clip scores), mean teacher.
# Usage: bash recipes/desed_beats_frame/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages are recipes/common/desed_detect.sh (shared by the DESED recipes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=desed_beats_frame
config=$here/config.yaml
median=0.48   # 3 frames of 160 ms
# SYNTH=1: a tiny BEATs from fresh weights (beats_micro, 2 layers), no download
synth_model=(--model.init_args.model_name=beats_micro --model.init_args.pretrained=null
  --model.init_args.lr=0.0005 --model.init_args.model_kwargs='{depth: 2, frame_pooling: attention}')
source "$here/../common/desed_detect.sh"
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
