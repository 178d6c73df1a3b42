#!/usr/bin/env bash
# Learning from few labels on the synthetic corpus (14 classes x 20 clips of 2 s, CPU minutes).
# Usage: bash recipes/fewshot/run.sh [start_stage] [stop_stage]
#   0 corpus + manifests (classes 0-8 = base, 9-13 = novel)   1 backbone on the base classes
#   2 fewshot-eval of the novel classes, 1 and 5 shots, trained vs random backbone
#   3 enrol the novel classes (5 shots) and classify with the prototype checkpoint
#   4 semi-supervised (pseudo_label, mean_teacher) vs supervised-only with 10 % of the labels, 3 seeds (SEEDS)
set -euo pipefail
stage=${1:-0}; stop=${2:-4}
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-work/fewshot}; out=${OUT:-runs/fewshot}
root=$work/esc50
best() { ls "$1"/checkpoints/best-*.ckpt | head -n 1; }

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: corpus, base/novel manifests, a support folder
  [ -f "$root/meta/esc50.csv" ] || sedkit synth esc50 --out "$root" --num-classes 14 --clips-per-class 20 --duration 2
  for part in base novel; do
    awk -F, -v part=$part -v audio="$(cd "$root/audio" && pwd)" 'NR == 1 {print "path,label,fold"; next}
      (part == "base" && $3 < 9) || (part == "novel" && $3 >= 9) {print audio "/" $1 "," $4 "," $2}' \
      "$root/meta/esc50.csv" > "$work/$part.csv"
  done
  rm -rf "$work/support" && mkdir -p "$work/support"   # 5 clips of each novel class from fold 1-2; queries: folds 3-5
  awk -F, 'NR > 1 && $3 >= 9 && $2 <= 2 {print $4, $1}' "$root/meta/esc50.csv" | sort | awk '{n[$1]++} n[$1] <= 5' |
    while read -r label file; do mkdir -p "$work/support/$label"; cp "$root/audio/$file" "$work/support/$label/"; done
  awk -F, -v audio="$(cd "$root/audio" && pwd)" 'NR > 1 && $3 >= 9 && $2 >= 3 {print audio "/" $1}' \
    "$root/meta/esc50.csv" > "$work/queries.txt"
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: the backbone, trained on the base classes only
  sedkit fit --config "$here/backbone.yaml" --data.init_args.manifest="$work/base.csv" \
    --trainer.default_root_dir="$out/backbone"
  python -c "import torch; from sed.models import create_model; from sed.checkpoint import save_model; \
torch.manual_seed(0); save_model('$out/random_backbone.pt', create_model('cnn_small', num_classes=9, clip_seconds=2.0))"
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: 5-way episodes over the novel classes
  printf 'source: manifest\nmanifest: %s\nclip_seconds: 2.0\n' "$work/novel.csv" > "$work/novel.yaml"
  for shots in 1 5; do
    for b in trained random; do
      ckpt=$( [ $b = trained ] && best "$out/backbone" || echo "$out/random_backbone.pt" )
      echo "== $b backbone, $shots shot(s)"
      sedkit fewshot-eval --checkpoint "$ckpt" --data "$work/novel.yaml" --split all --ways 5 --shots $shots \
        --queries 10 --episodes 200 --seed 0 --out "$out/fewshot_${b}_${shots}shot.json"
    done
  done
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: enrol the novel classes, classify the queries
  sedkit enroll "$work/support" --checkpoint "$(best "$out/backbone")" --shots 5 --out "$out/novel5.pt"
  sedkit classify $(head -n 3 "$work/queries.txt") --checkpoint "$out/novel5.pt" --top-k 2
fi
if [ "$stage" -le 4 ] && [ "$stop" -ge 4 ]; then   # 4: 10 % labels: semi-supervised vs supervised-only
  : > "$out/semi_results.txt"
  for seed in ${SEEDS:-0 1 2}; do
    for semi in null pseudo_label mean_teacher; do
      if [ "$semi" = null ]; then regime=(--model.class_path=sed.tasks.ClassificationTask)  # supervised only
      else regime=(--model.init_args.semi=$semi); fi
      run=(--config "$here/semi.yaml" --data.init_args.root="$root" "${regime[@]}"
           --seed_everything=$seed --data.init_args.seed=$seed --trainer.default_root_dir="$out/semi_${semi}_$seed")
      sedkit fit "${run[@]}"
      acc=$(sedkit test "${run[@]}" --ckpt_path="$out/semi_${semi}_$seed/checkpoints/last.ckpt" |
            awk -F'│' '/test_acc /{gsub(/ /, "", $3); print $3}')
      echo "$semi $seed $acc" | tee -a "$out/semi_results.txt"
    done
  done
  awk '{s[$1] += $3; n[$1]++; v[$1] = v[$1] " " $3} END {for (m in s) printf "%-13s mean %.3f  (seeds:%s)\n", m, s[m] / n[m], v[m]}' \
    "$out/semi_results.txt"
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
