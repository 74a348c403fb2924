#!/usr/bin/env bash
# The weak-supervision proof: the main job three times on the same demo corpus (same audio, same seed),
# then one table. About three main jobs of time (the corpus and vocabulary are made once per corpus).
#
#   weak labels, cleaned      ./train.sh CONFIG                     (20% of training labels wrong)
#   true labels               job.corruption=0 in its own corpus folder: the same clips, no wrong label
#   weak labels, not cleaned  job.clean=false: every training window, wrong labels included
#
#   bench/weak_labels.sh [CONFIG]      (default configs/demo.yaml)
#   SEEDS="default 2" bench/weak_labels.sh   each row over several training seeds (train.seed: model
#                                             init and batch order; the corpus stays the same; "default":
#                                             the config's, in the folders above, another N in runs/*-seedN):
#                                             three main jobs a seed, each figure their mean and range
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/demo.yaml}
SEEDS=${SEEDS:-}

weak="" true="" uncleaned=""
for seed in ${SEEDS:-default}; do
    if [ "$seed" = default ]; then args=() suffix=""; else args=("train.seed=$seed") suffix="-seed$seed"; fi
    ./train.sh "$CONFIG" "${args[@]}" train.output_dir="runs/demo$suffix"
    ./train.sh "$CONFIG" "${args[@]}" job.corruption=0 job.corpus=manifests/demo-true \
        train.output_dir="runs/demo-true$suffix"
    ./train.sh "$CONFIG" "${args[@]}" job.clean=false train.output_dir="runs/demo-uncleaned$suffix"
    weak+="${weak:+,}runs/demo$suffix/eval/metrics.json"
    true+="${true:+,}runs/demo-true$suffix/eval/metrics.json"
    uncleaned+="${uncleaned:+,}runs/demo-uncleaned$suffix/eval/metrics.json"
done

.venv/bin/asr-eval compare "true labels=$true" "weak labels, cleaned=$weak" "weak labels, not cleaned=$uncleaned"
