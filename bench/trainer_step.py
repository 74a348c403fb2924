"""The trainer's own step (DeepSpeed engine, loss, optimizer) under two configs, on the same batches.

    python bench/trainer_step.py configs/demo.yaml --b train.autocast=bf16
    python bench/trainer_step.py configs/demo.yaml --a-all-reduce     # what skipping the all-reduce saves

Both configs are set up in one process (one engine each, the same initial weights) and train on the
same batches of the config's training manifests, loaded beforehand, so the data pipeline is not
timed. They run in alternating rounds of ``--steps`` steps: a 2-core virtual machine's speed drifts by
10-20% within minutes, more than the differences measured, and alternation puts both under the same
drift. Printed: milliseconds per step of each round, the mean of each config and the ratio B / A.
``--a-all-reduce`` gives config A DeepSpeed's gradient all-reduce, which the trainer skips in a world of
one process without ZeRO (``asr.train._engine``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import torch

from asr import train
from asr.config import load_config


def engine_run(config_path: str, overrides: list[str], out: str, seed: int):
    # The joint loss from the first step and no loss truncation: the step of most of a run
    fixed = [f"train.output_dir={out}", "data.dev=[]", "data.num_workers=0", f"train.seed={seed}",
             "optim.ctc_only_steps=0", "optim.truncate_from_step=0"]
    config = load_config(config_path, [*fixed, *overrides])
    return train.setup(config)


def time_round(run, batches: list[dict]) -> float:
    window = train._Window()
    start = time.perf_counter()
    for batch in batches:
        train._train_on(run, batch, window)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--a", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of config A")
    parser.add_argument("--b", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of config B")
    parser.add_argument("--a-all-reduce", action="store_true", help="config A all-reduces its gradients")
    parser.add_argument("--steps", type=int, default=20, help="steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, overrides in (("A", args.a), ("B", args.b)):
            torch.manual_seed(args.seed)
            runs[name] = engine_run(args.config, overrides, f"{tmp}/{name}", args.seed)
        if args.a_all_reduce:
            runs["A"].engine.enable_backward_allreduce = True
        batches = list(itertools.islice(train._batches(runs["A"]), args.steps + 2))
        for run in runs.values():  # warm-up: first-call allocations and kernel choices
            time_round(run, batches[:2])
        batches = batches[2:]
        seconds = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                seconds[name].append(time_round(run, batches))
    labels = {"A": " ".join(args.a + (["(all-reduce)"] if args.a_all_reduce else [])) or "(the config)",
              "B": " ".join(args.b) or "(the config)"}
    audio = sum(b["audio_seconds"] for b in batches) / len(batches)
    print(f"{args.config}: {len(batches)} steps a round, {audio:.1f} s of audio a step, "
          f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    for name in runs:
        rounds = " ".join(f"{s * 1000:6.1f}" for s in seconds[name])
        mean = statistics.mean(seconds[name]) * 1000
        print(f"  {name}  {labels[name]:40s} ms/step by round: {rounds}   mean {mean:6.1f}")
    print(f"  B / A  {statistics.mean(seconds['B']) / statistics.mean(seconds['A']):.3f}")


if __name__ == "__main__":
    main()
