#!/usr/bin/env bash
# Distil a cnn_tiny student from an ensemble of two cnn_small teachers on the synthetic demo corpus.
# Usage: bash recipes/distill/run.sh [start_stage] [stop_stage]
# SIZE=ci (default) is the CPU-sized run of the README table (4 classes x 15 clips of 3 s, 10 epochs);
# SIZE=full is the demo corpus (10 classes x 20 clips of 5 s, 8 epochs; 5-s clips are cropped at
# random to 3 s, so the teacher cache is off there and the teachers run on every batch).
set -euo pipefail
stage=${1:-0}; stop=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
size=${SIZE:-ci}
out=${OUT:-runs/distill_$size}
root=${ROOT:-work/distill_$size/esc50}
if [ "$size" = ci ]; then
  corpus=(--num-classes 4 --clips-per-class 15 --duration 3); train=(--trainer.max_epochs=10 --data.init_args.batch_size=8)
else
  corpus=(--num-classes 10 --clips-per-class 20 --duration 5); train=(--trainer.max_epochs=8 --data.init_args.batch_size=16)
fi
common=(--data.init_args.root="$root" "${train[@]}")
best() { ls "$1"/checkpoints/best-*.ckpt | head -n 1; }

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: synthetic demo corpus
  [ -f "$root/meta/esc50.csv" ] || sedkit synth esc50 --out "$root" "${corpus[@]}"
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: two cnn_small teachers (the demo recipe, seeds 0 and 1)
  for s in 0 1; do
    sedkit fit --config "$repo/recipes/demo/config.yaml" --seed_everything=$s \
      --trainer.default_root_dir="$out/teacher$s" "${common[@]}"
  done
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: distil cnn_tiny from the 2-teacher ensemble
  sedkit fit --config "$here/student.yaml" "${common[@]}" --trainer.default_root_dir="$out/student" \
    --model.init_args.teachers="[$(best "$out/teacher0"), $(best "$out/teacher1")]" \
    --model.init_args.teacher_cache="$out/teacher_cache"
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: held-out fold 5 accuracy of each model
  for m in teacher0 teacher1; do
    sedkit test --config "$repo/recipes/demo/config.yaml" "${common[@]}" \
      --trainer.default_root_dir="$out/$m" --ckpt_path="$(best "$out/$m")"
  done
  sedkit test --config "$here/student.yaml" "${common[@]}" --trainer.default_root_dir="$out/student" \
    --model.init_args.teachers="[$(best "$out/teacher0"), $(best "$out/teacher1")]" --ckpt_path="$(best "$out/student")"
fi
if [ "$stage" -le 4 ] && [ "$stop" -ge 4 ]; then   # 4: the teacher ensemble (every method) on fold 5
  printf 'source: esc50\nroot: %s\nclip_seconds: 3.0\nbatch_size: 8\nval_folds: [5]\ntest_folds: [5]\ncache_audio: true\n' \
    "$root" > "$out/data.yaml"
  sedkit ensemble-eval --checkpoints "$(best "$out/teacher0")" "$(best "$out/teacher1")" \
    --config "$out/data.yaml" --out "$out/ensemble_weights.json"
fi
if [ "$stage" -le 5 ] && [ "$stop" -ge 5 ]; then   # 5: parameters and CPU latency per clip, teacher vs student
  python "$repo/bench/bench_student.py" --quick --clip-seconds 3 \
    --checkpoint "$(best "$out/teacher0")" --checkpoint "$(best "$out/student")"
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
