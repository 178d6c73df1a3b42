#!/usr/bin/env bash
# AST + Patch-Mix CL on ICBHI 2017 (Bae et al. 2023): CE, Patch-Mix and Patch-Mix CL over several seeds.
# Usage: bash recipes/icbhi_ast_patchmix/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
# The stages, their variables (ICBHI_ROOT, OUT, SEEDS, METHODS, EXTRA) are recipes/common/icbhi_patchmix.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=icbhi_ast_patchmix
synth_model=(--model.init_args.model_name=ast_micro --model.init_args.model_kwargs='{input_tdim: 198}')
source "$here/../common/icbhi_patchmix.sh"
