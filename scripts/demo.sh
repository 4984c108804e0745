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

# The screen shows progress, counts and the result; everything the libraries print goes here.
log="$PLAYRECALL_HOME/logs/run-$(date +%Y%m%d-%H%M%S).log"
mkdir -p "$(dirname "$log")"

echo "== registering the pipeline with the TFX CLI (engine: local; full log: $log)"
if [ -d "$LOCAL_HOME/$PIPELINE_NAME" ]; then
  verb=update
else
  verb=create
fi
tfx pipeline "$verb" --engine local --pipeline_path local_runner.py >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; echo "registering the pipeline failed; see $log" >&2; exit 1; }

echo "== running it"
start=$(date +%s)
# Show each component as it starts and ends, ingestion counts and training progress; the rest of
# the (very verbose) TFX log goes to the file.
tfx run create --engine local --pipeline_name "$PIPELINE_NAME" 2>&1 | tee -a "$log" \
  | grep --line-buffered -E '^(INFO:absl:)?(Component .* is (running|finished)|PlayLogExampleGen: rows read|step [0-9]+( eval)?: loss|trained to step|resuming from)|Error' \
  | sed -u -e 's/^INFO:absl://' -e '/^PlayLogExampleGen: rows read/s/; quarantine in .*//' \
  | awk '$0 != previous { print; fflush() } { previous = $0 }' \
  || { echo "the run failed; see $log" >&2; exit 1; }
echo "== pipeline wall time: $(( $(date +%s) - start )) s"

python -m pipeline.summary 2>>"$log"
