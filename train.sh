#!/usr/bin/env bash
# ./train.sh [CONFIG] [key=value ...]: the main job. Default CONFIG: configs/demo.yaml.
#
# It sets up what is missing (.venv with the package), then runs the config's stages (asr.job):
#   1-2  the offline demo corpus and its weak-label cleaning   (configs with job.corpus)
#   3    training: `python -m asr.train CONFIG key=value ...` launched once per device; with
#        job.score_steps > 0 two rounds: a short first one whose model scores the training cuts
#        (asr.scoring), then the run on the cuts it keeps
#   4-5  export, evaluation on job.test, an example transcription
# Every stage reuses what an earlier run finished; an interrupted run continues where it stopped.
#
# Training launch:
#   no GPU     train.cpu_processes CPU processes (gloo), threads shared out among them (NPROC= overrides)
#   N GPUs     N processes (NCCL), one per GPU
#   several    HOSTFILE=hosts ./train.sh CONFIG   DeepSpeed's launcher over ssh ("host slots=8" lines)
#   nodes      or, under a scheduler, on every node: NNODES=2 NODE_RANK=$SLURM_NODEID
#              MASTER_ADDR=<first node> MASTER_PORT=29500 ./train.sh CONFIG   (torchrun rendezvous);
#              the stages around training run on node 0 only
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${1:-configs/demo.yaml}
shift $(( $# > 0 ? 1 : 0 ))
export ASR_JOB_START=${ASR_JOB_START:-$(date +%s)}

if [ ! -x .venv/bin/python ]; then
    echo "== set-up: a virtual environment in .venv =="
    "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c "import asr, deepspeed" 2>/dev/null; then
    echo "== set-up: installing the package and its dependencies into .venv (a few minutes, once) =="
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
fi
PY=.venv/bin/python
export PYTHONUNBUFFERED=1
# Progress bars written to a log file (nohup, CI) update every 10 s rather than ten times a second.
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}

NNODES=${NNODES:-1}
MAIN_NODE=$([ "${NODE_RANK:-0}" = 0 ] && echo 1 || echo 0)

launch() {  # one training run: python -m asr.train CONFIG "$@" on every device
    if [ -n "${HOSTFILE:-}" ]; then
        .venv/bin/deepspeed --hostfile "$HOSTFILE" --module asr.train "$CONFIG" "$@"
        return
    fi
    local gpus nproc cores
    gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
    if [ "$gpus" -gt 0 ]; then
        nproc=${NPROC:-$gpus}
    else
        nproc=${NPROC:-$($PY -c "import sys; from asr.config import load_config; print(load_config(sys.argv[1], sys.argv[2:]).train.cpu_processes)" "$CONFIG" "$@")}
        cores=$($PY -c "import os; print(len(os.sched_getaffinity(0)))")
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}
    fi
    if [ "$NNODES" -gt 1 ]; then
        .venv/bin/torchrun --nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" \
            --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" \
            --nproc_per_node "$nproc" -m asr.train "$CONFIG" "$@"
    else
        .venv/bin/torchrun --standalone --nproc_per_node "$nproc" -m asr.train "$CONFIG" "$@"
    fi
}

ask() {  # a yes/no stage question (asr.job needs-training, scored): 0 yes, 1 no; an error (2) stops the job
    local rc=0
    $PY -m asr.job "$@" || rc=$?
    [ "$rc" -le 1 ] || exit "$rc"
    return "$rc"
}

if [ "$MAIN_NODE" = 1 ]; then
    $PY -m asr.job prepare "$CONFIG" "$@"
fi

# Two rounds (job.score_steps > 0): the first round's overrides, one per line; none for one round.
# (A command substitution, not mapfile < <(...): set -e stops on its failure.)
FIRST_ROUND_LINES=$($PY -m asr.job first-round "$CONFIG" "$@")
if [ -n "$FIRST_ROUND_LINES" ]; then
    mapfile -t FIRST_ROUND <<< "$FIRST_ROUND_LINES"
    if [ "$MAIN_NODE" = 0 ] || ask needs-training --first-round "$CONFIG" "$@"; then
        launch "$@" "${FIRST_ROUND[@]}"
    fi
    if [ "$MAIN_NODE" = 1 ]; then
        $PY -m asr.job score "$CONFIG" "$@"
    else  # the other nodes wait for node 0's scoring of this first round (not an earlier job's report)
        until ask scored "$CONFIG" "$@"; do sleep 10; done
    fi
fi

if [ "$MAIN_NODE" = 1 ] && ! ask needs-training "$CONFIG" "$@"; then
    exec $PY -m asr.job finish "$CONFIG" "$@"
fi
launch "$@"
if [ "$MAIN_NODE" = 1 ]; then
    exec $PY -m asr.job finish "$CONFIG" "$@"
fi
