#!/usr/bin/env bash
# AST-P on ESC-50, 5-fold cross-validation.
# Usage: bash recipes/esc50_ast/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages are recipes/common/esc50_kfold.sh (shared by every ESC-50 recipe).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=esc50_ast
synth_model=(--model.init_args.model_name=ast_micro --model.init_args.model_kwargs='{input_tdim: 512}')
source "$here/../common/esc50_kfold.sh"
