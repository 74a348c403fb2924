"""How fast the data loader makes batches, against how fast the demo model trains on them.

    python bench/loader.py manifests/demo/train_windows.jsonl.gz [--max-duration 120] [--batches 20]

Prints cuts/s and audio seconds/s for 0, 1 and 2 DataLoader workers, the padding ratio of the
batches, and the demo model's forward+backward+AdamW step on the same batches, in audio seconds/s.
The loader keeps up when its audio seconds/s exceed the step's: the ratio printed last.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from asr.config import DataConfig, model_preset
from asr.data.dataset import MultitaskDataset, make_loader, make_sampler, open_cuts
from asr.data.sequence import manifest_texts
from asr.loss import multitask_loss
from asr.checkpoint import model_dims
from asr.model import Model
from asr.tokenizer import Tokenizer, train_sentencepiece


def time_loader(cuts, tokenizer, options: DataConfig, workers: int, batches: int) -> dict:
    dataset = MultitaskDataset(tokenizer, options, n_mels=80, train=True)
    loader = make_loader(dataset, make_sampler(cuts, options, shuffle=True, seed=0), num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, n_cuts, seconds, padding = time.perf_counter(), 0, 0.0, []
    for batch in itertools.islice(iterator, batches):
        n_cuts += len(batch["cut_ids"])
        seconds += batch["audio_seconds"]
        padding.append(batch["padding_ratio"])
    elapsed = time.perf_counter() - start
    return {"cuts/s": n_cuts / elapsed, "audio s/s": seconds / elapsed, "padding": sum(padding) / len(padding)}


def time_training_step(cuts, tokenizer, options: DataConfig, batches: int) -> dict:
    model = Model(model_dims(model_preset("demo"), tokenizer.n_vocab)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dataset = MultitaskDataset(tokenizer, options, n_mels=80, train=True)
    loaded = list(itertools.islice(make_loader(dataset, make_sampler(cuts, options, shuffle=True, seed=0)),
                                   batches + 1))
    seconds, elapsed = 0.0, 0.0
    for i, batch in enumerate(loaded):
        start = time.perf_counter()
        output = model(batch["mel"], batch["tokens"], batch["n_frames"])
        loss = multitask_loss(output, batch, label_smoothing=0.1, ctc_weight=0.3)
        loss.total.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first step warms up the allocator
            elapsed += time.perf_counter() - start
            seconds += batch["audio_seconds"]
    return {"audio s/s": seconds / elapsed, "steps/s": batches / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--max-duration", type=float, default=120.0)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    cuts = open_cuts(args.manifest)  # lazy, as training reads it
    tokenizer = Tokenizer.from_sentencepiece(train_sentencepiece(manifest_texts([cuts]), vocab_size=2000))
    options = DataConfig(max_duration=args.max_duration)
    print(f"{len(cuts)} cuts, {sum(c.duration for c in cuts) / 3600:.2f} h; batches of {args.max_duration:g} s; "
          f"torch threads {torch.get_num_threads()}")
    best = 0.0
    for workers in (0, 1, 2):
        figures = time_loader(cuts, tokenizer, options, workers, args.batches)
        best = max(best, figures["audio s/s"])
        print(f"loader, {workers} workers: {figures['cuts/s']:7.1f} cuts/s  {figures['audio s/s']:8.1f} audio s/s  "
              f"padding {figures['padding']:.1%}")
    step = time_training_step(cuts, tokenizer, options, min(args.batches, 5))
    print(f"demo model step: {step['audio s/s']:8.1f} audio s/s ({step['steps/s']:.2f} steps/s)")
    print(f"loader / training step: {best / step['audio s/s']:.1f}x")


if __name__ == "__main__":
    main()
