#!/usr/bin/env bash
# The demo: generate two days of play logs, and run the pipeline through the real TFX CLI on the
# local engine once a day, as a scheduled run would: the first day trains from scratch, the
# second warm-starts from the first day's blessed model. Run it through `make demo` (which sets up
# the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

export PLAYRECALL_HOME="${PLAYRECALL_HOME:-$PWD/playrecall_home}"
export PLAYRECALL_DATA="${PLAYRECALL_DATA:-$PLAYRECALL_HOME/data}"
# Daily partitions, a rolling window of a week, warm start (settings in contract/settings.py).
export PLAYRECALL_CONFIG="${PLAYRECALL_CONFIG:-$PWD/scripts/demo_config.json}"
# Keep the TFX CLI's own records with the rest of the demo instead of in ~/tfx.
export LOCAL_HOME="$PLAYRECALL_HOME/tfx_cli"
PIPELINE_NAME=playrecall
DEMO_DAYS="${DEMO_DAYS:-2}"
# Generated over the generator's whole span (days + 75); the days hold about 1/40 of them each.
DEMO_EVENTS="${DEMO_EVENTS:-8000000}"
DEMO_USERS="${DEMO_USERS:-4000}"
DEMO_ITEMS="${DEMO_ITEMS:-5000}"
generated="$PLAYRECALL_HOME/generated"

if [ ! -e "$generated/_ground_truth.json" ]; then
  echo "== generating $DEMO_DAYS days of plays by $DEMO_USERS users over $DEMO_ITEMS songs into $generated"
  python -m datagen.generate --out_dir "$generated" --num_events "$DEMO_EVENTS" \
    --num_users "$DEMO_USERS" --num_items "$DEMO_ITEMS" --days "$DEMO_DAYS" --seed 1
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

run_day() {
  echo "== running it"
  start=$(date +%s)
  # Show each component as it starts and ends, the partitions read, ingestion counts, the warm
  # start and training progress; the rest of the (very verbose) TFX log goes to the file.
  # (ExampleGen's lines are printed and logged: the printed ones are shown.)
  tfx run create --engine local --pipeline_name "$PIPELINE_NAME" 2>&1 | tee -a "$log" \
    | grep --line-buffered -E \
        -e '^(INFO:absl:)?(Component .* is (running|finished)|cold start|warm start from|step [0-9]+( eval)?: loss|trained to step|resuming from)|Error' \
        -e '^PlayLogExampleGen: (rows read|partitions)' \
    | sed -u -e 's/^INFO:absl://' -e '/^PlayLogExampleGen: rows read/s/; quarantine in .*//' \
    || { echo "the run failed; see $log" >&2; exit 1; }
  echo "== pipeline wall time: $(( $(date +%s) - start )) s"
  python -m pipeline.summary 2>>"$log"
}

mkdir -p "$PLAYRECALL_DATA"
for day in "$generated"/????-??-??; do
  name=$(basename "$day")
  echo
  echo "== day $name: its play log arrives in $PLAYRECALL_DATA/$name"
  [ -e "$PLAYRECALL_DATA/$name" ] || cp -r "$day" "$PLAYRECALL_DATA/$name"
  run_day
done
