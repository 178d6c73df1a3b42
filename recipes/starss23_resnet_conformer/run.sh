#!/usr/bin/env bash
# STARSS23 FOA SELD: DCASE2023 baseline CRNN vs ResNet-Conformer, both multi-ACCDOA + ADPIT + ACS.
# Usage: bash recipes/starss23_resnet_conformer/run.sh [start_stage] [stop_stage]
# SYNTH=1: every stage on a synthetic STARSS stand-in with tiny models and few epochs (CPU, minutes).
set -euo pipefail
stage=${1:-0}; stop=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
root=${STARSS_ROOT:-data/STARSS23}
out=${OUT:-runs/starss23}
cache=${CACHE:-work/starss23_feature_cache}
systems=(seldnet_baseline resnet_conformer)
declare -A extra=([seldnet_baseline]="" [resnet_conformer]="")
common=()
if [ "${SYNTH:-0}" = 1 ]; then
  root=work/starss_synth; out=work/starss23_synth; cache=work/starss_synth_cache
  common=(--trainer.max_epochs=5 --trainer.accelerator=cpu --trainer.precision=32-true
          --data.init_args.batch_size=8 --data.init_args.num_workers=0 --data.init_args.sequence_seconds=2.0)
  extra[resnet_conformer]="--model.init_args.model_name=resnet_conformer_tiny"
fi

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data check + feature cache
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -d "$root/metadata_dev" ] || sedkit synth starss --out "$root" --files-per-split 3 --duration 10
  else
    [ -d "$root/metadata_dev" ] || { echo "put STARSS23 (foa_dev/, metadata_dev/) under $root (see data/README.md)"; exit 1; }
  fi
  sedkit prepare starss --root "$root" --cache "$cache"
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: train each system (best checkpoint = lowest val_SELD)
  for s in "${systems[@]}"; do
    # shellcheck disable=SC2086
    sedkit fit --config "$here/$s.yaml" --data.init_args.root="$root" --data.init_args.cache_dir="$cache" \
      --trainer.default_root_dir="$out/$s" "${common[@]}" ${extra[$s]}
  done
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: inference on dev-test (whole files, 5-s windows)
  for s in "${systems[@]}"; do
    best=$(ls "$out/$s"/checkpoints/best-*.ckpt | head -n 1)
    sedkit seld-infer "$root"/foa_dev/dev-test*/*.wav --checkpoint "$best" --out "$out/$s/pred" --window 5 --hop 5
  done
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: DCASE2023 metrics (macro, 20 deg, 1-s segments)
  mkdir -p "$out/ref_dev_test"; ln -sf "$(cd "$root" && pwd)"/metadata_dev/dev-test*/*.csv "$out/ref_dev_test/"
  for s in "${systems[@]}"; do
    echo "== $s"
    sedkit seld-eval --pred "$out/$s/pred" --ref "$out/ref_dev_test" --jackknife
  done
  f=$(ls "$out/resnet_conformer/pred"/*.csv | head -n 1)
  sedkit plot-doa "$f" --ref "$(find "$root/metadata_dev" -name "$(basename "$f")" | head -n 1)" --out "$out/doa.png"
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
