#!/usr/bin/env bash
# AudioSet-scale training from shards. Usage: bash recipes/audioset_shards/run.sh [start_stage] [stop_stage]
# SYNTH=1: every stage on a synthetic corpus with a tiny CNN and 2 CPU processes (gloo), in minutes.
set -euo pipefail
stage=${1:-0}; stop=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
data=${SHARDS:-data/audioset_shards}
train_manifest=${TRAIN_MANIFEST:-data/audioset/train.csv}   # path,label with labels as "a;b" (multi-label)
eval_manifest=${EVAL_MANIFEST:-data/audioset/eval.csv}
extra=()
if [ "${SYNTH:-0}" = 1 ]; then
  data=work/audioset_shards_synth
  extra=(--model.init_args.model_name=cnn_tiny --model.init_args.pretrained=null --model.init_args.model_kwargs='{clip_seconds: 2.0}'
         --model.init_args.monitor=val_acc --trainer.accelerator=cpu --trainer.devices=2 --trainer.num_nodes=1
         --trainer.precision=32-true --trainer.max_epochs=3 --trainer.default_root_dir=work/audioset_shards_run
         --data.init_args.clip_seconds=2.0 --data.init_args.batch_size=8 --data.init_args.num_workers=0)
fi

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: shards (re-running skips the shards already written)
  if [ "${SYNTH:-0}" = 1 ]; then
    sedkit synth esc50 --out work/esc50_synth_shards --num-classes 4 --clips-per-class 10 --duration 2 --overwrite
    python - <<'PY'
import csv, pathlib
rows = list(csv.DictReader(open("work/esc50_synth_shards/meta/esc50.csv")))
for part, keep in (("train", lambda f: f != "5"), ("eval", lambda f: f == "5")):
    with open(f"work/esc50_synth_shards/{part}.csv", "w", newline="") as out:
        w = csv.writer(out); w.writerow(["path", "label"])
        w.writerows([[f"audio/{r['filename']}", r["category"]] for r in rows if keep(r["fold"])])
PY
    train_manifest=work/esc50_synth_shards/train.csv; eval_manifest=work/esc50_synth_shards/eval.csv
  fi
  sedkit shard "$train_manifest" --out "$data/train" --shard-bytes 1GB --rate 16000
  sedkit shard "$eval_manifest" --out "$data/eval" --shard-bytes 1GB --rate 16000
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: train (one node here; see README for torchrun / SLURM)
  sedkit fit --config "$here/config.yaml" --data.init_args.shards="$data/train" \
    --data.init_args.val_shards="$data/eval" "${extra[@]}"
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: distributed batch inference over the eval shards
  run=$( [ "${SYNTH:-0}" = 1 ] && echo work/audioset_shards_run || echo runs/audioset_shards )
  sedkit predict --config "$here/config.yaml" --ckpt_path "$run/checkpoints/last.ckpt" \
    --data.init_args.shards="$data/eval" --data.init_args.val_shards="$data/eval" "${extra[@]}"
  echo "rows in order: $run/predictions.jsonl (per shard: $run/predictions/)"
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
