# The ESC-50 5-fold stages shared by recipes/esc50_<model>/run.sh (sourced, not run). The caller sets
# `here` (its folder, holding config.yaml), `name` (runs/<name>) and `synth_model` (the LightningCLI
# overrides of its CPU-sized model for SYNTH=1), then sources this with its arguments:
#   stages [start_stage] [stop_stage]: 0 data, 1 kfold (train + test on each held-out fold), 2 plots,
#   3 classify a few clips with fold 1's best checkpoint. ESC50_ROOT (data/ESC-50), OUT (runs/<name>).
# SYNTH=1 runs every stage on a 5-class synthetic stand-in with the CPU-sized model (minutes).
stage=${1:-0}; stop=${2:-3}
root=${ESC50_ROOT:-data/ESC-50}
out=${OUT:-runs/$name}
extra=()
if [ "${SYNTH:-0}" = 1 ]; then
  root=work/esc50_synth; out=work/${name}_synth
  extra=(--model.init_args.pretrained=null "${synth_model[@]}" --model.init_args.lr=0.001
         --trainer.max_epochs=2 --trainer.accelerator=cpu --data.init_args.batch_size=8
         --data.init_args.num_workers=0 --data.init_args.cache_audio=true)
fi

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -f "$root/meta/esc50.csv" ] || sedkit synth esc50 --out "$root" --num-classes 5 --clips-per-class 5 --duration 5
  else
    [ -f "$root/meta/esc50.csv" ] || { echo "put ESC-50 under $root (see data/README.md)"; exit 1; }
  fi
  sedkit info "$root/audio" --json | tail -n 1
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: train + test on each held-out fold
  sedkit kfold --config "$here/config.yaml" --folds 1,2,3,4,5 --root "$out" \
    --data.init_args.root="$root" "${extra[@]}"
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: plots of every fold
  for d in "$out"/fold*; do sedkit plot "$d" > /dev/null; done
  echo "learning curves and confusion matrices in $out/fold*/"
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: classify a few clips with fold 1's best checkpoint
  best=$(ls "$out"/fold1/checkpoints/best-*.ckpt | head -n 1)
  sedkit classify $(ls "$root"/audio/1-*.wav | head -n 3) --checkpoint "$best" --top-k 3
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
