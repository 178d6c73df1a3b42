#!/usr/bin/env bash
# Distil EfficientAT mn10 (32 kHz, AudioSet-pretrained) from an ensemble of two 16 kHz AST teachers
# fine-tuned on ESC-50 folds 1-4 (fold 5 held out). Usage: bash recipes/distill_efficientat/run.sh [start] [stop]
# TEACHERS="a.yaml b.yaml" picks the teacher configs (default: recipes/esc50_ast/config.yaml twice, seeds 0
# and 1; a CED config works the same way). SYNTH=1 runs every stage on the synthetic stand-in with
# ast_micro teachers and an efficientat_mn04 student from scratch on CPU (minutes).
set -euo pipefail
stage=${1:-0}; stop=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${ESC50_ROOT:-data/ESC-50}
out=${OUT:-runs/distill_efficientat}
read -r -a teachers <<< "${TEACHERS:-$repo/recipes/esc50_ast/config.yaml $repo/recipes/esc50_ast/config.yaml}"
split=(--data.init_args.val_folds='[5]' --data.init_args.test_folds='[5]')
tx=(); sx=()
if [ "${SYNTH:-0}" = 1 ]; then
  root=work/distill_efficientat_synth/esc50; out=work/distill_efficientat_synth
  cpu=(--trainer.max_epochs=2 --trainer.accelerator=cpu --data.init_args.batch_size=8
       --data.init_args.num_workers=0 --data.init_args.cache_audio=true)
  tx=(--model.init_args.model_name=ast_micro --model.init_args.pretrained=null --model.init_args.lr=0.001 "${cpu[@]}")
  sx=(--model.init_args.model_name=efficientat_mn04 --model.init_args.pretrained=null
      --model.init_args.model_kwargs='{input_tdim: 500, bn_momentum: 0.3}'
      --model.init_args.lr=0.001 --model.init_args.warmup_steps=0 "${cpu[@]}")
fi
best() { ls "$1"/checkpoints/best-*.ckpt | head -n 1; }

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -f "$root/meta/esc50.csv" ] || sedkit synth esc50 --out "$root" --num-classes 4 --clips-per-class 10 --duration 5
  else
    [ -f "$root/meta/esc50.csv" ] || { echo "put ESC-50 under $root (see data/README.md)"; exit 1; }
  fi
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: the teachers, fine-tuned at 16 kHz on folds 1-4
  for i in "${!teachers[@]}"; do
    sedkit fit --config "${teachers[$i]}" --seed_everything="$i" --trainer.default_root_dir="$out/teacher$i" \
      --data.init_args.root="$root" "${split[@]}" "${tx[@]}"
  done
fi
ckpts() { local c=(); for i in "${!teachers[@]}"; do c+=("$(best "$out/teacher$i")"); done; local IFS=,; echo "[${c[*]}]"; }
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: distil the 32 kHz student from the 16 kHz ensemble
  sedkit fit --config "$here/student.yaml" --trainer.default_root_dir="$out/student" --data.init_args.root="$root" \
    --model.init_args.teachers="$(ckpts)" --model.init_args.teacher_cache="$out/teacher_cache" "${sx[@]}"
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: held-out fold 5 accuracy of the teachers and the student
  for i in "${!teachers[@]}"; do
    sedkit test --config "${teachers[$i]}" --trainer.default_root_dir="$out/teacher$i" --data.init_args.root="$root" \
      "${split[@]}" "${tx[@]}" --ckpt_path="$(best "$out/teacher$i")"
  done
  sedkit test --config "$here/student.yaml" --trainer.default_root_dir="$out/student" --data.init_args.root="$root" \
    --model.init_args.teachers="$(ckpts)" "${sx[@]}" --ckpt_path="$(best "$out/student")"
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
