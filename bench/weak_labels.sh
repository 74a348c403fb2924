#!/usr/bin/env bash
# The weak-supervision proof: the main job three times on the same demo corpus (same audio, same seed),
# then one table. About three main jobs of time (the corpus and vocabulary are made once per corpus).
#
#   weak labels, cleaned      ./train.sh CONFIG                     (20% of training labels wrong)
#   true labels               job.corruption=0 in its own corpus folder: the same clips, no wrong label
#   weak labels, not cleaned  job.clean=false: every training window, wrong labels included
#
#   bench/weak_labels.sh [CONFIG]      (default configs/demo.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/demo.yaml}

./train.sh "$CONFIG"
./train.sh "$CONFIG" job.corruption=0 job.corpus=manifests/demo-true train.output_dir=runs/demo-true
./train.sh "$CONFIG" job.clean=false train.output_dir=runs/demo-uncleaned

.venv/bin/asr-eval compare "true labels=runs/demo-true/eval/metrics.json" \
    "weak labels, cleaned=runs/demo/eval/metrics.json" \
    "weak labels, not cleaned=runs/demo-uncleaned/eval/metrics.json"
