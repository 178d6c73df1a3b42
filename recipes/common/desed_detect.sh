# The stages of every DESED detection recipe (sourced by recipes/desed_*/run.sh, which set `name`,
# `config` and, for SYNTH=1, `synth_model`): 0 data, 1 train, 2 test, 3 detect + PSDS/F1 + a picture.
# Usage: bash recipes/<recipe>/run.sh [start_stage] [stop_stage]; SYNTH=1 for the synthetic CPU run.
stage=${1:-0}; stop=${2:-3}
root=${DESED_ROOT:-data/desed}
out=${OUT:-runs/$name}
common=()
if [ "${SYNTH:-0}" = 1 ]; then
  root=work/desed_synth; out=work/${name}_synth
  # a small corpus (48 clips of 4 s, 4 classes), a CPU-sized model, 20 epochs, hard mixup, validation each epoch
  common=(--trainer.max_epochs=20 --trainer.accelerator=cpu --trainer.precision=32-true
          --trainer.check_val_every_n_epoch=1 --data.init_args.batch_sizes='[6, 6, 6]'
          --data.init_args.eval_batch_size=8 --data.init_args.clip_seconds=4.0 --data.init_args.num_workers=0
          --model.init_args.warmup_epochs=4 --model.init_args.decay_epochs=12 --model.init_args.mixup=hard "${synth_model[@]}")
fi
test_audio=$root/audio/validation/validation_16k
test_tsv=$root/metadata/validation/validation.tsv
test_durations=$root/metadata/validation/validation_durations.tsv

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -d "$root/metadata" ] || sedkit synth desed --out "$root" --clips 48 --duration 4 --num-classes 4
  else
    [ -f "$test_tsv" ] || { echo "put DESED under $root in the DCASE 2024 layout (see data/README.md)"; exit 1; }
  fi
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: train (best checkpoint on val_obj)
  sedkit fit --config "$config" --data.init_args.root="$root" --trainer.default_root_dir="$out" "${common[@]}"
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: the test split (DESED dev-test): PSDS1, F1s
  best=$(ls "$out"/checkpoints/best-*.ckpt | head -n 1)
  sedkit test --config "$config" --data.init_args.root="$root" --trainer.default_root_dir="$out" \
    --ckpt_path "$best" "${common[@]}"
fi
if [ "$stage" -le 3 ] && [ "$stop" -ge 3 ]; then   # 3: detect the test files, PSDS1/2 and F1s, a picture
  best=$(ls "$out"/checkpoints/best-*.ckpt | head -n 1)
  sedkit detect "$test_audio" --checkpoint "$best" --median-filter "$median" \
    --output "$out/events.tsv" --scores-dir "$out/scores"
  sedkit sed-eval --predictions "$out/scores" --ground-truth "$test_tsv" --durations "$test_durations" \
    --per-class | tee "$out/sed_eval.txt"
  f=$(ls "$test_audio"/*.wav | head -n 1)
  sedkit plot-events "$f" --scores "$out/scores/$(basename "${f%.wav}").tsv" --ground-truth "$test_tsv" \
    --median-filter "$median" --out "$out/events.png"
fi
