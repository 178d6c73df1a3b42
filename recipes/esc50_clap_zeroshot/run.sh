#!/usr/bin/env bash
# Zero-shot ESC-50 with CLAP: classes named by text, no training (LAION-CLAP, Wu et al. 2023).
# Usage: bash recipes/esc50_clap_zeroshot/run.sh [start_stage] [stop_stage]; SYNTH=1: a smoke test of the
# commands on `sedkit synth esc50` data with tiny random CLAP directories (never results).
#   0 data, the 50 class names (underscores -> spaces) as a labels file
#   1 zero-shot classification of every clip by each CLAP model (sedkit classify --labels-file, CSV)
#   2 top-1 accuracy of each model on all clips and on fold 1 (LAION's protocol), from the CSVs
#   3 fewshot-eval --zero-shot: text prototypes vs 1- and 5-shot audio prototypes on the same episodes
#   4 the first model's zero-shot classifier as one ONNX file (export --labels), classifying a few clips
# ESC50_ROOT (data/ESC-50), OUT (runs/esc50_clap_zeroshot), MODELS (the three CLAP short names; each is a
# Hugging Face download on first use), DEVICE (auto).
set -euo pipefail
stage=${1:-0}; stop=${2:-4}
here=$(cd "$(dirname "$0")" && pwd)
root=${ESC50_ROOT:-data/ESC-50}; out=${OUT:-runs/esc50_clap_zeroshot}
read -r -a models <<< "${MODELS:-clap-htsat-unfused clap-htsat-fused clap-larger-general}"
rate=48000; episodes=600; shots_list="1 5"; queries=5
if [ "${SYNTH:-0}" = 1 ]; then   # tiny random CLAPs in the Hugging Face layout (tests/models/clap_dir.py)
  root=work/esc50_clap_synth; out=work/esc50_clap_zeroshot_synth
  models=("$out/tiny_clap_unfused" "$out/tiny_clap_fused"); rate=16000; episodes=20
  shots_list="1 2"; queries=2   # 5 clips per class
fi
labels=$out/labels.txt

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data, labels file
  mkdir -p "$out"
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -f "$root/meta/esc50.csv" ] || sedkit synth esc50 --out "$root" --num-classes 5 --clips-per-class 5 --duration 1
    PYTHONPATH="$here/../..${PYTHONPATH:+:$PYTHONPATH}" python -c "from tests.models.clap_dir import make_clap_dir; \
make_clap_dir('$out/tiny_clap_unfused', small=True); make_clap_dir('$out/tiny_clap_fused', fused=True, small=True, seed=1)"
  else
    [ -f "$root/meta/esc50.csv" ] || { echo "put ESC-50 under $root (see data/README.md)"; exit 1; }
  fi
  # the class names in target order, underscores read as spaces ("chirping_birds" -> "chirping birds")
  awk -F, 'NR > 1 {name[$3] = $4} END {for (t = 0; t in name; t++) {gsub(/_/, " ", name[t]); print name[t]}}' \
    "$root/meta/esc50.csv" > "$labels"
  echo "$(wc -l < "$labels") classes in $labels"
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: every clip, each model, the top label (prompt: the default)
  for m in "${models[@]}"; do
    sedkit classify "$root/audio" --checkpoint "$m" --labels-file "$labels" --top-k 1 --format csv \
      --batch-size 16 --device "${DEVICE:-auto}" --output "$out/$(basename "$m").csv"
  done
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: accuracy = top label == the clip's category
  for m in "${models[@]}"; do
    awk -F, 'NR == FNR {if (FNR > 1) {gsub(/_/, " ", $4); truth[$1] = $4; fold[$1] = $2}; next}
      FNR > 1 && $4 == 1 {f = $1; sub(/.*\//, "", f); n++; ok += ($5 == truth[f])
                          if (fold[f] == 1) {n1++; ok1 += ($5 == truth[f])}}
      END {printf "%-24s top-1 %.2f %% of %d clips; fold 1: %.2f %% of %d\n", m, 100 * ok / n, n, 100 * ok1 / n1, n1}' \
      m="$(basename "$m")" "$root/meta/esc50.csv" "$out/$(basename "$m").csv" | tee -a "$out/accuracy.txt"
  done
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: zero-shot vs few-shot on the same episodes
  printf 'source: esc50\nroot: %s\nsample_rate: %s\nclip_seconds: 5.0\n' "$root" "$rate" > "$out/esc50.yaml"
  for shots in $shots_list; do
    sedkit fewshot-eval --checkpoint "${models[0]}" --data "$out/esc50.yaml" --split all --ways 5 \
      --shots "$shots" --queries $queries --episodes $episodes --seed 0 --zero-shot --device "${DEVICE:-auto}" \
      --out "$out/fewshot_${shots}shot.json"
  done
fi
if [ "$stage" -le 4 ] && [ "$stop" -ge 4 ]; then   # 4: deploy: the zero-shot classifier as one .onnx file
  sedkit export --checkpoint "${models[0]}" --labels-file "$labels" --out "$out/zeroshot.onnx"
  sedkit classify $(ls "$root"/audio/1-*.wav | head -n 3) --checkpoint "$out/zeroshot.onnx" --top-k 3
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
