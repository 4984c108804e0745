#!/usr/bin/env bash
# The demo: generate play logs, run the pipeline through the real TFX CLI on the local engine,
# and print where everything went. Run it through `make demo` (which sets up the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

export PLAYRECALL_HOME="${PLAYRECALL_HOME:-$PWD/playrecall_home}"
export PLAYRECALL_DATA="${PLAYRECALL_DATA:-$PLAYRECALL_HOME/data}"
# Keep the TFX CLI's own records with the rest of the demo instead of in ~/tfx.
export LOCAL_HOME="$PLAYRECALL_HOME/tfx_cli"
PIPELINE_NAME=playrecall
DEMO_EVENTS="${DEMO_EVENTS:-200000}"

DEMO_ITEMS="${DEMO_ITEMS:-5000}"

if [ ! -e "$PLAYRECALL_DATA/_ground_truth.json" ]; then
  echo "== generating $DEMO_EVENTS play events over $DEMO_ITEMS songs into $PLAYRECALL_DATA"
  python -m datagen.generate --out_dir "$PLAYRECALL_DATA" --num_events "$DEMO_EVENTS" \
    --num_items "$DEMO_ITEMS" --seed 1
fi

echo "== registering the pipeline with the TFX CLI (engine: local)"
if [ -d "$LOCAL_HOME/$PIPELINE_NAME" ]; then
  tfx pipeline update --engine local --pipeline_path local_runner.py
else
  tfx pipeline create --engine local --pipeline_path local_runner.py
fi

log="$PLAYRECALL_HOME/logs/run-$(date +%Y%m%d-%H%M%S).log"
mkdir -p "$(dirname "$log")"
echo "== running it (full log: $log)"
start=$(date +%s)
# Show each component as it starts and ends, ingestion counts and training progress; the rest of
# the (very verbose) TFX log goes to the file.
tfx run create --engine local --pipeline_name "$PIPELINE_NAME" 2>&1 | tee "$log" \
  | grep --line-buffered -E 'Component .* is (running|finished)|rows read|step [0-9]+: loss|trained to step|error|Error' \
  || { echo "the run failed; see $log" >&2; exit 1; }
echo "== pipeline wall time: $(( $(date +%s) - start )) s"

python -m pipeline.summary
