# The last line of every recipe's SYNTH=1 run (sourced at the end of recipes/*/run.sh; run only when every
# stage before it succeeded, as the scripts run under `set -e`).
if [ "${SYNTH:-0}" = 1 ]; then
  echo "note: SYNTH=1 numbers come from a synthetic stand-in corpus and CPU-sized models trained for a few" \
       "epochs: a smoke test of the pipeline, not results (the recipe's README gives the published numbers)"
fi
