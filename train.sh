#!/usr/bin/env bash
# ./train.sh CONFIG [key=value ...]: the one way to train. It holds no training logic: it finds the
# accelerators and launches `python -m asr.train CONFIG key=value ...` once per device.
#
#   no GPU     train.cpu_processes CPU processes (gloo), threads shared out among them (NPROC= overrides)
#   N GPUs     N processes (NCCL), one per GPU
#   several    HOSTFILE=hosts ./train.sh CONFIG   DeepSpeed's launcher over ssh ("host slots=8" lines)
#   nodes      or, under a scheduler, on every node: NNODES=2 NODE_RANK=$SLURM_NODEID
#              MASTER_ADDR=<first node> MASTER_PORT=29500 ./train.sh CONFIG   (torchrun rendezvous)
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${1:-configs/demo.yaml}
shift $(( $# > 0 ? 1 : 0 ))

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c "import asr, deepspeed" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
fi
PY=.venv/bin/python

if [ -n "${HOSTFILE:-}" ]; then
    exec .venv/bin/deepspeed --hostfile "$HOSTFILE" --module asr.train "$CONFIG" "$@"
fi

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -gt 0 ]; then
    NPROC=${NPROC:-$GPUS}
else
    NPROC=${NPROC:-$($PY -c "import sys; from asr.config import load_config; print(load_config(sys.argv[1], sys.argv[2:]).train.cpu_processes)" "$CONFIG" "$@")}
    CORES=$($PY -c "import os; print(len(os.sched_getaffinity(0)))")
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( CORES / NPROC > 0 ? CORES / NPROC : 1 ))}
fi

NNODES=${NNODES:-1}
if [ "$NNODES" -gt 1 ]; then
    exec .venv/bin/torchrun --nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" \
        --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}" \
        --nproc_per_node "$NPROC" -m asr.train "$CONFIG" "$@"
fi
exec .venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m asr.train "$CONFIG" "$@"
