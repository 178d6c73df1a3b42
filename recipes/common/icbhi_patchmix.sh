# The ICBHI 2017 stages shared by recipes/icbhi_<model>/run.sh (sourced, not run): CE, Patch-Mix and
# Patch-Mix CL over several seeds. The caller sets `here` (its folder, holding ce.yaml, patchmix.yaml,
# patchmix_cl.yaml), `name` (runs/<name>) and `synth_model` (LightningCLI overrides of its CPU-sized model
# for SYNTH=1), then sources this with its arguments [start_stage] [stop_stage]:
#   0 data (check the corpus), 1 fit + test each method over the seeds (icbhi_ast_patchmix/multi_seed.py),
#   2 table of test Sp / Se / Score, mean and std over seeds.
# ICBHI_ROOT (default data/icbhi_dataset/audio_test_data), OUT (runs/<name>), SEEDS (1,2,3,4,5),
# METHODS ("ce patchmix patchmix_cl"); extra LightningCLI overrides in EXTRA. SYNTH=1 runs every stage on
# a synthetic stand-in with the CPU-sized model (no pretrained weights, 2-s cycles, 2 epochs, 2 seeds).
common=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage=${1:-0}; stop=${2:-2}
root=${ICBHI_ROOT:-data/icbhi_dataset/audio_test_data}
out=${OUT:-runs/$name}
seeds=${SEEDS:-1,2,3,4,5}
methods=${METHODS:-ce patchmix patchmix_cl}
extra=(${EXTRA:-})
if [ "${SYNTH:-0}" = 1 ]; then
  root=work/icbhi_synth; out=work/${name}_synth; seeds=${SEEDS:-1,2}
  extra+=(--model.init_args.pretrained=null "${synth_model[@]}" --model.init_args.lr=0.001
          --model.init_args.freqm=24 --model.init_args.timem=40
          --data.init_args.cycle_seconds=2.0 --data.init_args.num_workers=0
          --trainer.max_epochs=2 --trainer.accelerator=cpu)
fi

if [ "$stage" -le 0 ] && [ "$stop" -ge 0 ]; then   # 0: data (check the corpus, counts per split and class)
  if [ "${SYNTH:-0}" = 1 ]; then
    [ -f "$root/official_split.txt" ] || sedkit synth icbhi --out "$root" --num-patients 10 \
      --recordings-per-patient 2 --duration 20
  else
    [ -f "$root/official_split.txt" ] || { echo "put ICBHI 2017 under $root (see data/README.md)"; exit 1; }
  fi
  sedkit prepare icbhi --root "$root"
fi
if [ "$stage" -le 1 ] && [ "$stop" -ge 1 ]; then   # 1: fit + test each method over the seeds
  for m in $methods; do
    python "$common/../icbhi_ast_patchmix/multi_seed.py" --config "$here/$m.yaml" --seeds "$seeds" --root "$out/$m" \
      --data.init_args.root="$root" "${extra[@]}"
  done
fi
if [ "$stage" -le 2 ] && [ "$stop" -ge 2 ]; then   # 2: table of test Sp / Se / Score, mean and std over seeds
  python - "$out" $methods <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'method':<12} {'seeds':>5} {'Sp':>14} {'Se':>14} {'Score':>14}")
for m in sys.argv[2:]:
    f = out / m / "seeds.json"
    if not f.is_file():
        print(f"{m:<12} (no {f})"); continue
    d = json.loads(f.read_text()); s = d["summary"]
    cell = lambda k: f"{s[k]['mean']:6.2f} +- {s[k]['std']:5.2f}" if k in s else "-"
    print(f"{m:<12} {len(d['seeds']):>5} {cell('test_sp'):>14} {cell('test_se'):>14} {cell('test_score'):>14}")
PY
fi
source "$here/../common/synth_note.sh"   # SYNTH=1: a smoke test, not results
