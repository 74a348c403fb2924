"""The trainer: ``python -m asr.train CONFIG [key=value ...]``, one process per device (``train.sh``).

Lifecycle: ``setup`` (distributed group, run folder, tokenizer, model, DeepSpeed engine, data), ``fit``
(the loop: step, log, validate, checkpoint; resumes from the run folder's latest checkpoint), then a
summary. The same code runs on CPUs (gloo) and GPUs (NCCL); DeepSpeed's ZeRO shards optimizer state,
gradients and, at stage 3, the weights.

Exact resume: every random choice of a batch is seeded by its cut ids (asr.data.dataset), the
sampler's order by (seed, epoch), and the checkpoint records the epoch and how many batches of it each
rank consumed. A restarted run skips those batches' metadata (no audio is read) and continues with
the very batches, and so the very losses, of an uninterrupted run.

A time budget (``optim.max_minutes``) ends the schedule where the pace measured so far says the
budget runs out, and the checkpoint records that end and the time trained: a resumed run keeps both.
Where the budget binds, where the run ends depends on the machine's pace, so its figures repeat only
as closely as that pace does.

Faults: a batch whose cuts were all dropped, or whose loss is NaN/inf on any rank, is skipped on every
rank (so that collectives stay matched) and counted; ``train.nonfinite_limit`` consecutive non-finite
losses stop the run. SIGTERM saves a checkpoint at the end of the current step and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from lhotse import CutSet
from lhotse.manipulation import combine

from asr import checkpoint
from asr.config import CONFIG_DIR, Config, OptimConfig, load_config, save_config, to_dict
from asr.data.dataset import (MultitaskDataset, balance_languages, make_loader, make_sampler, open_cuts,
                              subsample_nospeech)
from asr.data.sequence import manifest_texts
from asr.evaluate.validation import validate
from asr.loss import multitask_loss
from asr.model import Model
from asr.tokenizer import Tokenizer, train_sentencepiece
from asr.truncation import LossTruncation, read_truncated, truncation_report


# optim.max_minutes: the pace is measured from this many steps after a (re)start, over at least this
# many steps before it fits the schedule (fewer in a run of fewer steps: see pace_window)
PACE_SKIP, PACE_STEPS = 20, 200


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what to change."""


def ctc_weight_at(step: int, optim: OptimConfig) -> float:
    """The CTC loss's weight at ``step``: 1 for the first ``optim.ctc_only_steps``, then ``optim.ctc_weight``."""
    return 1.0 if step < optim.ctc_only_steps else optim.ctc_weight


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str) -> float:
    """The learning rate's multiplier at ``step``."""
    # 1) linear warm-up from almost 0 to 1
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    # 2) then decay to 0 at max_steps, in a straight line or along half a cosine
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Counters:
    """What went wrong along the way; in the logs and the run summary."""

    nonfinite_steps: int = 0  # micro-batches skipped for a NaN/inf loss
    consecutive_nonfinite: int = 0
    empty_batches: int = 0  # micro-batches skipped because every cut in them was dropped
    dropped_cuts: Counter = field(default_factory=Counter)  # reason -> cuts left out of batches


@dataclass
class State:
    """Where the run is: what a checkpoint must hold to continue exactly."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # groups of one micro-batch per rank consumed in the current epoch
    best: float | None = None
    max_steps: int = 0  # the schedule's last step: optim.max_steps, or earlier to fit optim.max_minutes
    seconds: float = 0.0  # training time so far, over every (re)start: what optim.max_minutes bounds


@dataclass
class Run:
    config: Config
    run_dir: Path
    rank: int
    world_size: int
    device: torch.device
    tokenizer: Tokenizer
    engine: object  # deepspeed.DeepSpeedEngine
    train_cuts: CutSet
    dev_cuts: CutSet | None
    dataset: MultitaskDataset
    state: State = field(default_factory=State)
    counters: Counters = field(default_factory=Counters)
    stop_requested: bool = False
    started: float = field(default_factory=time.time)
    first_step: int = 0  # the step the run (re)started from, for the ETA
    seconds_before: float = 0.0  # state.seconds when the run (re)started
    pace_from: tuple[int, float] | None = None  # (step, time) the pace for optim.max_minutes is measured from
    writer: object = None  # TensorBoard's SummaryWriter on rank 0, made at the first log line
    truncation: LossTruncation | None = None  # optim.truncate_from_step > 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def truncation_dir(self) -> Path:
        return self.run_dir / "truncated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr-train", description="Train on the manifests a config names.")
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    code = 0
    try:
        train(load_config(args.config, args.overrides))
    except (TrainingError, ValueError, FileNotFoundError) as e:
        print(f"asr-train: error: {e}", file=sys.stderr)
        code = 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End a rank of a multi-process run without the interpreter's teardown.

    A rank that had finished (summary written, process group destroyed) sometimes aborted in that
    teardown, in native code with no Python frame ("terminate called without an active exception"):
    torchrun then reports the run failed and train.sh stops before the evaluation. Seen at ZeRO stages 0
    and 3 on gloo, with two busy processes beside the 2-process tests: 7 of 15 rounds of them failed,
    none of 6 with this exit. Everything the run writes is closed by then; the streams are flushed here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def train(config: Config) -> dict:
    """Set up, train to ``optim.max_steps`` (or until SIGTERM), write and return the run summary."""
    run = setup(config)
    started = time.time()
    try:
        fit(run)
        summary = finish(run, time.time() - started)
    finally:
        if run.writer:
            run.writer.close()  # its thread stopped and file closed: a rank of a multi-process run ends by os._exit
        if dist.is_initialized():
            dist.barrier()
    if dist.is_initialized():
        # Otherwise gloo's threads can outlive the interpreter and a finished process exits with
        # "terminate called without an active exception" (seen in a 2-process ZeRO-3 test).
        dist.destroy_process_group()
    return summary


# ---------------------------------------------------------------------------------------------------
# Set up


def setup(config: Config) -> Run:
    import deepspeed

    _init_distributed(deepspeed)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = _device()
    run_dir = Path(config.train.output_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    _seed_everything(config.train.seed)
    train_cuts = _open_all(config.data.train, "data.train")
    tokenizer = _tokenizer(config, run_dir, train_cuts, rank)
    model = _model(config, tokenizer)
    state = State(max_steps=config.optim.max_steps)
    engine = _engine(deepspeed, model, config, device, state)
    dev_cuts = _open_all(config.data.dev, "data.dev").to_eager() if config.data.dev else None
    dataset = MultitaskDataset(tokenizer, config.data, n_mels=config.model.n_mels,
                               n_text_ctx=config.model.n_text_ctx, train=True,
                               pad_to_30s=config.features.pad_to_30s, seed=config.train.seed)
    run = Run(config, run_dir, rank, world_size, device, tokenizer, engine, train_cuts, dev_cuts, dataset, state)
    if config.optim.truncate_from_step > 0:
        run.truncation = LossTruncation(config.optim.truncate_from_step, config.optim.truncate_mads,
                                        config.optim.truncate_history, run.truncation_dir, rank,
                                        config.optim.truncate_sticky, config.optim.truncate_suspect_mads,
                                        config.optim.truncate_hold_suspects)
    signal.signal(signal.SIGTERM, lambda *_: setattr(run, "stop_requested", True))
    signal.signal(signal.SIGINT, functools.partial(_interrupted, run))
    return run


def _interrupted(run: Run, *_) -> None:
    """Ctrl-C: save at the end of the step, like SIGTERM; a second Ctrl-C stops at once."""
    if run.stop_requested:
        raise KeyboardInterrupt
    run.stop_requested = True
    if run.is_main:
        print("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)", flush=True)


def _init_distributed(deepspeed) -> None:
    # A plain `python -m asr.train` is a world of one.
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _device() -> torch.device:
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _open_all(paths: tuple[str, ...], key: str) -> CutSet:
    if not paths:
        raise TrainingError(f"{key} names no manifest: set {key}=[path/to/cuts.jsonl.gz, ...]")
    return combine(*[open_cuts(p) for p in paths]) if len(paths) > 1 else open_cuts(paths[0])


def _tokenizer(config: Config, run_dir: Path, train_cuts: CutSet, rank: int) -> Tokenizer:
    """The run's vocabulary: kept in the run folder, so a resumed run uses the very same one."""
    path = run_dir / "tokenizer.model"
    if rank == 0 and not path.exists():
        if config.tokenizer.path:
            model = Path(config.tokenizer.path).read_bytes()
        else:
            try:
                model = train_sentencepiece(manifest_texts([train_cuts]), config.tokenizer.vocab_size,
                                            config.tokenizer.model_type, config.tokenizer.character_coverage,
                                            doubled_letters=config.tokenizer.doubled_letters,
                                            max_piece_length=config.tokenizer.max_piece_length,
                                            min_char_count=config.tokenizer.min_char_count)
            except RuntimeError as e:  # SentencePiece's own check, e.g. fewer pieces than distinct characters
                raise TrainingError(f"tokenizer.vocab_size={config.tokenizer.vocab_size}: SentencePiece cannot "
                                    f"build this vocabulary from {', '.join(config.data.train)}: {e}") from None
        partial = path.with_name("tokenizer.model.partial")
        partial.write_bytes(model)
        os.replace(partial, path)
    dist.barrier()
    return Tokenizer.from_sentencepiece(path.read_bytes())


def _model(config: Config, tokenizer: Tokenizer) -> Model:
    model = Model(checkpoint.model_dims(config.model, tokenizer.n_vocab, tokenizer.n_text))
    if config.train.init_from:
        loaded = checkpoint.load(config.train.init_from)
        if loaded.model.dims.n_vocab != tokenizer.n_vocab:
            raise TrainingError(
                f"{config.train.init_from}: its vocabulary has {loaded.model.dims.n_vocab} tokens, this run's "
                f"{tokenizer.n_vocab}; starting from a checkpoint needs the same vocabulary (set tokenizer.path "
                "to its tokenizer; fine-tuning with Whisper's own BPE vocabulary is not supported yet)")
        missing, unexpected = model.load_state_dict(loaded.model.state_dict(), strict=False)
        if unexpected or [k for k in missing if not k.startswith(("ctc.", "ctc_translation."))]:
            raise TrainingError(f"{config.train.init_from}: weights do not fit model dims "
                                f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.set_activation_checkpointing(config.train.activation_checkpointing)
    return model


def _engine(deepspeed, model: Model, config: Config, device: torch.device, state: State):
    optim = config.optim
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # biases and norms
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        # Fused: one vectorised kernel over all tensors (on a CPU too), not a loop of small ops per tensor
        lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=device.type in ("cuda", "cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # state.max_steps: shortened by optim.max_minutes
        optimizer, lambda step: lr_factor(step, optim.warmup_steps, state.max_steps, optim.schedule))
    engine, _, _, _ = deepspeed.initialize(model=model.to(device), optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(config, device))
    if dist.get_world_size() == 1 and not engine.zero_optimization():
        # A world of one has no gradients to average, yet DeepSpeed flattens every gradient into one
        # buffer, all-reduces it and copies it back each step: 9% of a demo-model step on a 2-core CPU.
        engine.enable_backward_allreduce = False
    if engine.mpu is None:
        engine.clip_fp32_gradients = functools.partial(clip_gradients, list(engine.module.parameters()),
                                                       engine.gradient_clipping())
    if config.train.compile:
        engine.compile()
    return engine


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale every gradient by ``min(1, max_norm / (norm + 1e-6))``, the norm taken over all of them as one
    vector: DeepSpeed's clip for fp32 weights without ZeRO, in two vectorised calls. DeepSpeed's own takes
    each gradient's norm and scales it in a Python loop (200 tensors of the demo model: 4% of a CPU step)
    and all-reduces a norm that every rank already shares, the gradients being averaged before the step."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware: on a CPU without AVX512-BF16 or AMX,
    oneDNN emulates them (a demo-model step 8.5 s against 0.37 s in fp32 on an AVX2-only machine)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own, private probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(config: Config, device: torch.device) -> str:
    """``train.autocast`` as it runs on ``device``: "auto" becomes bf16 where the hardware has it, else
    none; an explicit bf16 on hardware without it runs as asked, with a warning."""
    autocast = config.train.autocast
    if autocast == "none" or (autocast == "auto" and config.train.precision != "fp32"):
        return "none"  # for auto: the weights are in the lower precision already
    if config.train.precision != "fp32":
        raise TrainingError(f"train.autocast={autocast} computes in mixed precision over fp32 "
                            f"weights: it needs train.precision=fp32, not {config.train.precision}")
    if autocast == "fp16":
        if device.type != "cuda":
            raise TrainingError("train.autocast=fp16 needs a GPU; use bf16 on a CPU")
        return autocast
    native = native_bf16(device)
    where = "this GPU" if device.type == "cuda" else f"this CPU, {torch.backends.cpu.get_cpu_capability()},"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if autocast == "auto":
        if rank0:
            print(f"train.autocast=auto: {'bf16' if native else 'none'} ({where} "
                  f"{'computes' if native else 'has no'} native bf16)", flush=True)
        return "bf16" if native else "none"
    if not native and rank0:
        print(f"warning: train.autocast=bf16 on {where} without native bf16: it is emulated, many times slower "
              "than fp32; train.autocast=auto chooses for the machine", file=sys.stderr, flush=True)
    return autocast


def deepspeed_config(config: Config, device: torch.device) -> dict:
    """The JSON block of the ZeRO stage, with batch, clipping and precision from the run config."""
    path = Path(config.train.deepspeed_config or CONFIG_DIR / "deepspeed" / f"zero{config.train.zero_stage}.json")
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{path}: cannot read the DeepSpeed config ({e})") from None
    ds.update(train_micro_batch_size_per_gpu=1,  # batches are sized in seconds, not counted
              gradient_accumulation_steps=config.train.grad_accum,
              gradient_clipping=config.optim.grad_clip)
    if config.train.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif config.train.precision == "fp16":
        if device.type != "cuda":
            raise TrainingError("train.precision=fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); "
                                "use bf16 or fp32 on a CPU")
        ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    autocast = autocast_dtype(config, device)
    if autocast != "none":
        ds["torch_autocast"] = {"enabled": True, "dtype": autocast}
    if device.type != "cuda":
        ds.setdefault("zero_optimization", {})["overlap_comm"] = False  # CUDA streams only
    return ds


# ---------------------------------------------------------------------------------------------------
# The loop


def fit(run: Run) -> None:
    _resume(run)
    run.started, run.first_step, run.seconds_before = time.time(), run.state.step, run.state.seconds
    state = run.state
    batches = _batches(run)
    progress = _progress(run)
    window = _Window()
    while state.step < state.max_steps:
        batch = next(batches, None)
        if batch is None:  # the epoch is over
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            batches = _batches(run)
            continue
        state.batches_in_epoch += 1
        if _train_on(run, batch, window):
            state.step = run.engine.global_steps
            _after_step(run, window, progress)
            if _agree(run.stop_requested, run.device, any):
                _save(run)
                break
    if progress is not None:
        progress.close()


def _train_on(run: Run, batch: dict, window: "_Window") -> bool:
    """One micro-batch: forward, loss, backward, step. True when it completed an optimizer step."""
    counters = run.counters
    for reason in batch["dropped"].reasons:
        counters.dropped_cuts[reason.split(":")[0]] += 1
    # One collective for both: every rank has cuts; no rank has a suspect that nothing can judge.
    suspects = [] if run.truncation is not None else [
        cut_id for cut_id, suspect in zip(batch["cut_ids"], batch.get("suspects", ())) if suspect]
    has_cuts, judgeable = _agree_all([bool(batch["cut_ids"]), not suspects], run.device)
    if not judgeable:  # every rank stops
        where = f"cut {suspects[0]}" if suspects else "a cut"
        raise TrainingError(f"{where} of data.train was left by cleaning for loss truncation to judge "
                            f"(custom['suspect_by'], clean.defer_rules), but loss truncation is off: set "
                            f"optim.truncate_from_step above 0, or clean without clean.defer_rules")
    if not has_cuts:
        counters.empty_batches += 1
        return False
    device = run.device
    try:
        output = run.engine(batch["mel"].to(device), batch["tokens"].to(device), batch["n_frames"].to(device))
        select = None if run.truncation is None else functools.partial(run.truncation, step=run.state.step)
        loss = multitask_loss(output, batch, run.config.optim.label_smoothing,
                              ctc_weight_at(run.state.step, run.config.optim), run.engine.module.ctc_blank,
                              run.config.optim.translation_ctc_weight, select, run.config.optim.truncate_translations)
    except torch.OutOfMemoryError:
        raise TrainingError(
            f"out of memory on a batch of {batch['audio_seconds']:.0f} s of audio: lower data.max_duration "
            f"(now {run.config.data.max_duration:g}, try {run.config.data.max_duration / 2:g})") from None
    if run.truncation is not None:
        _share_left_out(run.truncation)
    if not _agree(bool(torch.isfinite(loss.total)), device, all):
        counters.nonfinite_steps += 1
        counters.consecutive_nonfinite += 1
        if counters.consecutive_nonfinite >= run.config.train.nonfinite_limit:
            raise TrainingError(f"{counters.consecutive_nonfinite} consecutive NaN/inf losses at step "
                                f"{run.state.step}: lower optim.lr or check the data")
        return False
    counters.consecutive_nonfinite = 0
    run.engine.backward(loss.total)
    run.engine.step()
    window.add(loss, batch)
    return run.engine.global_steps > run.state.step


def _agree(value: bool, device: torch.device, how) -> bool:
    """``all`` or ``any`` of every rank's ``value``."""
    if how is all:
        return _agree_all([value], device)[0]
    return not _agree_all([not value], device)[0]


def _agree_all(values: list[bool], device: torch.device) -> list[bool]:
    """For each of ``values``, whether it holds on every rank: one collective for them all."""
    if dist.get_world_size() == 1:
        return list(values)
    flags = torch.tensor([1.0 if value else 0.0 for value in values], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return [bool(flag) for flag in flags.tolist()]


class _RankShare:
    """This rank's share of one stream of batches that every rank draws alike.

    The stream is read in groups of ``world_size`` batches and rank r takes the r-th of each group, so
    N processes see the very batches one process with N-fold gradient accumulation would. The first
    ``skip`` groups are passed over (only metadata is read), and an epoch's last, incomplete group is
    left out so that every rank runs the same number of steps.
    """

    def __init__(self, sampler, rank: int, world_size: int, skip: int):
        self.sampler, self.rank, self.world_size, self.skip = sampler, rank, world_size, skip

    def __iter__(self):
        # A generator, not iter(sampler): lhotse's sampler is its own iterator and restarts on iter().
        stream = (batch for batch in self.sampler)
        for _ in itertools.islice(stream, self.skip * self.world_size):
            pass
        while len(group := list(itertools.islice(stream, self.world_size))) == self.world_size:
            yield group[self.rank]


def _batches(run: Run):
    config, state = run.config, run.state
    cuts = subsample_nospeech(run.train_cuts, config.data.nospeech_rate)
    if config.data.language_temperature != 1.0:
        cuts = balance_languages(cuts, config.data.language_temperature, seed=config.train.seed)
    sampler = make_sampler(cuts, config.data, shuffle=True, seed=config.train.seed)
    sampler.set_epoch(state.epoch)
    share = _RankShare(sampler, run.rank, run.world_size, state.batches_in_epoch)
    return iter(make_loader(run.dataset, share, config.data.num_workers))


# ---------------------------------------------------------------------------------------------------
# Logging


class _Window:
    """Sums over the micro-batches since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss = self.attention = self.ctc = self.translation_ctc = 0.0
        self.micro = self.tokens = self.left_out = self.translations_left_out = 0
        self.audio_seconds = self.padding = 0.0
        self.started = time.time()

    def add(self, loss, batch: dict) -> None:
        self.loss += loss.total.item()
        self.attention += loss.attention.item()
        self.ctc += loss.ctc.item()
        self.translation_ctc += 0.0 if loss.translation_ctc is None else loss.translation_ctc.item()
        self.micro += 1
        self.tokens += loss.n_tokens
        self.left_out += loss.n_left_out
        self.translations_left_out += loss.n_translations_left_out
        self.audio_seconds += batch["audio_seconds"]
        self.padding += batch["padding_ratio"]

    def summary(self, device: torch.device) -> dict:
        """Means over micro-batches of every rank; rates summed over ranks."""
        sums = torch.tensor([self.loss, self.attention, self.ctc, self.translation_ctc, self.micro, self.tokens,
                             self.audio_seconds, self.padding, self.left_out, self.translations_left_out],
                            dtype=torch.float64, device=device)
        if dist.get_world_size() > 1:
            dist.all_reduce(sums)
        loss, attention, ctc, translation_ctc, micro, tokens, seconds, padding, left_out, translations_out = sums.tolist()
        elapsed = max(time.time() - self.started, 1e-9)
        micro = max(micro, 1)
        return {"loss": loss / micro, "attention_loss": attention / micro, "ctc_loss": ctc / micro,
                **({"translation_ctc_loss": translation_ctc / micro} if translation_ctc else {}),
                "tokens_per_s": tokens / elapsed, "audio_hours_per_s": seconds / 3600 / elapsed,
                "padding": padding / micro, "truncated_cuts": int(left_out),
                **({"truncated_translations": int(translations_out)} if translation_ctc else {})}


def _progress(run: Run):
    if not run.is_main:
        return None
    from tqdm import tqdm

    return tqdm(total=run.state.max_steps, initial=run.state.step, desc="train", unit="step",
                dynamic_ncols=True, disable=None)


def _log(run: Run, record: dict) -> None:
    if not run.is_main:
        return
    with open(run.run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    writer = _tensorboard(run)
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                writer.add_scalar(key, value, record["step"])
        writer.flush()


def _tensorboard(run: Run):
    if run.writer is None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(run.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional; log.jsonl has everything
            run.writer = False
    return run.writer or None


def _after_step(run: Run, window: _Window, progress) -> None:
    config, step = run.config.train, run.state.step
    run.state.seconds = run.seconds_before + time.time() - run.started
    if run.config.optim.max_minutes and step % config.log_every == 0:
        _fit_schedule(run, progress)
    end = run.state.max_steps
    if step % config.log_every == 0 or step == end:
        record = {"step": step, "epoch": run.state.epoch, "lr": run.engine.get_lr()[0], **window.summary(run.device),
                  "dropped_cuts": sum(run.counters.dropped_cuts.values()),
                  "nonfinite_steps": run.counters.nonfinite_steps}
        window.reset()
        _log(run, record)
        if progress is not None:
            postfix = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}",
                       "tok/s": f"{record['tokens_per_s']:.0f}", "audio h/s": f"{record['audio_hours_per_s']:.4f}",
                       "pad": f"{record['padding']:.1%}"}
            progress.set_postfix(postfix)
            if progress.disable:  # not a terminal (a log file, CI): a plain line instead of the bar
                eta = (time.time() - run.started) / max(step - run.first_step, 1) * (end - step)
                print(f"step {step}/{end} " + " ".join(f"{k} {v}" for k, v in postfix.items())
                      + f" eta {eta / 60:.1f} min", flush=True)
    if progress is not None:
        progress.update(step - progress.n)
    metrics = None
    if config.eval_every and step % config.eval_every == 0 and step < end:
        metrics = _validate(run)
    if config.save_every and step % config.save_every == 0 and step < end:
        _save(run, metrics)


def pace_window(max_steps: int) -> tuple[int, int]:
    """The steps after a (re)start that the pace for ``optim.max_minutes`` leaves out (data loading,
    allocation), and how many steps it is measured over before it fits the schedule."""
    return min(PACE_SKIP, max(1, max_steps // 100)), min(PACE_STEPS, max(5, max_steps // 20))


def fitted_end(step: int, end: int, seconds: float, pace: float, budget: float) -> int:
    """The schedule's last step: ``end`` (``optim.max_steps``), or earlier where the steps left at
    ``pace`` seconds a step would take the run's ``seconds`` past ``budget`` (never before ``step``)."""
    fits = step + max(0, math.floor((budget - seconds) / pace))
    return max(step, min(end, fits))


def _fit_schedule(run: Run, progress) -> None:
    """Fit the schedule's end to ``optim.max_minutes`` at the mean pace since the (re)start. The pace
    takes in saves and dev validations as they come, and the end moves with it both ways (a few steps
    at a time once the mean settles: the learning rate barely moves), so that a slow start does not cut
    the run short for good. Every rank takes the earliest end any rank measured: they stop together."""
    state, optim = run.state, run.config.optim
    skip, measure = pace_window(optim.max_steps)
    if run.pace_from is None:
        if state.step - run.first_step >= skip:
            run.pace_from = (state.step, time.time())
        return
    measured = state.step - run.pace_from[0]
    if measured < measure:
        return
    pace = (time.time() - run.pace_from[1]) / measured
    end = fitted_end(state.step, optim.max_steps, state.seconds, pace, optim.max_minutes * 60)
    if dist.get_world_size() > 1:
        agreed = torch.tensor([end], dtype=torch.float64, device=run.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        end = int(agreed.item())
    if end == state.max_steps:
        return
    if run.is_main and state.max_steps == optim.max_steps:
        print(f"\noptim.max_minutes={optim.max_minutes:g}: at {pace:.3f} s a step the schedule ends at step "
              f"{end} of {optim.max_steps} (refitted as the run goes)", flush=True)
    state.max_steps = end
    if progress is not None:
        progress.total = end
        progress.refresh()


# ---------------------------------------------------------------------------------------------------
# Validation and checkpoints


def _validate(run: Run) -> dict | None:
    """Dev metrics on rank 0, shared with every rank. Under ZeRO-3 each forward call gathers weights
    from every rank, so every rank runs the same validation, agreeing on when decoding stops."""
    if run.dev_cuts is None:
        return None
    sharded = run.config.train.zero_stage == 3
    metrics = [None]
    if run.is_main or sharded:
        metrics[0] = validate(run.engine.module, run.tokenizer, run.dev_cuts, run.config.data,
                              run.config.train.dev_decode_cuts, run.config.train.max_decode_tokens,
                              run.config.optim.label_smoothing, run.config.optim.ctc_weight,
                              all_finished=lambda done: _agree(done, run.device, all) if sharded else done)
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(metrics, src=0)
    _log(run, {"step": run.state.step, **metrics[0]})
    if run.is_main:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics[0].items() if not k.startswith("dev_wer_"))
        print(f"\nstep {run.state.step}: {shown}", flush=True)
    return metrics[0]


def _save(run: Run, metrics: dict | None = None) -> None:
    state, counters = run.state, run.counters
    is_best = False
    if metrics and run.config.train.best_metric in metrics:
        value = metrics[run.config.train.best_metric]
        is_best = state.best is None or value < state.best
        state.best = value if is_best else state.best
    client_state = {
        "step": state.step, "epoch": state.epoch, "batches_in_epoch": state.batches_in_epoch, "best": state.best,
        "max_steps": state.max_steps, "seconds": state.seconds,
        "counters": {"nonfinite_steps": counters.nonfinite_steps, "empty_batches": counters.empty_batches,
                     "dropped_cuts": dict(counters.dropped_cuts)},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "config": to_dict(run.config),
        "tokenizer": run.tokenizer.state(),
        **({"truncation": _gathered(run.truncation.state())} if run.truncation else {}),
    }
    checkpoint.save_training_state(run.engine, run.checkpoint_dir, state.step, client_state,
                                   run.config.train.keep_last, is_best)


def _share_left_out(truncation: LossTruncation) -> None:
    """Sticky truncation: every process learns the cuts the others left out for good in this micro-batch
    (one process has no one to tell, but takes its new ones all the same, so that they do not pile up)."""
    if truncation.sticky:
        new = truncation.take_new_out()
        if dist.get_world_size() > 1:
            truncation.add_out(cut for shared in _gathered(new) for cut in shared)


def _gathered(value) -> list:
    """Every rank's ``value``, in rank order."""
    if dist.get_world_size() == 1:
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _resume(run: Run) -> None:
    client_state = checkpoint.load_training_state(run.engine, run.checkpoint_dir)
    if run.truncation is not None:
        states = (client_state or {}).get("truncation")  # one per rank; rank 0's where the world has grown
        state = states[run.rank if run.rank < len(states) else 0] if states else None
        run.truncation.load_state(state, (client_state or {}).get("step", 0))
    if client_state is None:
        return
    state, counters = run.state, run.counters
    state.step, state.epoch = client_state["step"], client_state["epoch"]
    state.batches_in_epoch, state.best = client_state["batches_in_epoch"], client_state["best"]
    state.seconds = client_state.get("seconds", 0.0)
    saved = client_state.get("config", {}).get("optim", {})
    if (saved.get("max_steps"), saved.get("max_minutes", 0.0)) == (run.config.optim.max_steps,
                                                                    run.config.optim.max_minutes):
        # the schedule the budget fitted; another max_steps or max_minutes starts from the config's again
        state.max_steps = client_state.get("max_steps", state.max_steps)
    counters.nonfinite_steps = client_state["counters"]["nonfinite_steps"]
    counters.empty_batches = client_state["counters"]["empty_batches"]
    counters.dropped_cuts = Counter(client_state["counters"]["dropped_cuts"])
    random.setstate(client_state["rng"]["python"])
    np.random.set_state(client_state["rng"]["numpy"])
    torch.set_rng_state(client_state["rng"]["torch"])
    if run.is_main:
        print(f"resumed from {checkpoint.checkpoint_tag(state.step)} (epoch {state.epoch})", flush=True)


def finish(run: Run, seconds: float) -> dict:
    """Validate and save at the end (unless stopped early), then write and print the summary."""
    metrics = None
    if not run.stop_requested and run.state.step >= run.state.max_steps:
        metrics = _validate(run)
        if checkpoint.read_tag(run.checkpoint_dir) != checkpoint.checkpoint_tag(run.state.step):
            _save(run, metrics)
    counters = run.counters
    summary = {
        "steps": run.state.step, "epochs": run.state.epoch + 1, "stopped_early": run.stop_requested,
        "seconds": round(seconds, 1), "max_steps": run.config.optim.max_steps,
        "max_minutes": run.config.optim.max_minutes, "schedule_steps": run.state.max_steps,
        "training_minutes": round(run.state.seconds / 60, 2), "nonfinite_steps": counters.nonfinite_steps,
        "empty_batches": counters.empty_batches, "dropped_cuts": dict(counters.dropped_cuts),
        "best": run.state.best, "final_metrics": metrics, "checkpoint": str(run.checkpoint_dir),
    }
    if run.truncation is not None:
        counts = torch.tensor([run.truncation.judged, run.truncation.held], dtype=torch.float64, device=run.device)
        if dist.get_world_size() > 1:
            dist.all_reduce(counts)  # and so every rank's log is written
        judged, held = map(int, counts.tolist())
        if run.is_main:
            summary["truncation"] = {"judged": judged, **({"suspects_held": held} if held else {}),
                                     **truncation_report(read_truncated(run.truncation_dir), run.train_cuts)}
    if run.is_main:
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(main())
