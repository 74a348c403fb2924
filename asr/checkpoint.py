"""Checkpoints: one file holds everything needed to transcribe.

Our format extends OpenAI Whisper's ``{"dims": ..., "model_state_dict": ...}``::

    {
        "format": "asr-checkpoint/1",
        "dims": {...},                # ModelDims as a dict
        "model_state_dict": {...},    # parameter name -> tensor
        "config": {...},              # the resolved Config as plain data (optional)
        "tokenizer": {...},           # Tokenizer.state(): the vocabulary's bytes travel with the weights
    }

Only tensors and plain data are stored, so ``torch.load(path, weights_only=True)`` reads it: loading a
checkpoint never runs pickled code. An OpenAI Whisper checkpoint loads through the same ``load``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch

from asr.config import Config, ConfigError, ModelConfig, from_dict, to_dict
from asr.model import Model, ModelDims
from asr.tokenizer import Tokenizer

FORMAT = "asr-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project or of OpenAI Whisper."""


class Loaded(NamedTuple):
    model: Model
    tokenizer: Tokenizer | None  # None for an OpenAI checkpoint, whose BPE vocabulary is not bundled
    config: Config | None


def save(path: str | Path, model: Model, tokenizer: Tokenizer, config: Config | None = None) -> None:
    """Write a checkpoint atomically: a crash while writing leaves any earlier file at ``path`` intact."""
    if model.dims.n_vocab != tokenizer.n_vocab:
        raise ValueError(f"model has {model.dims.n_vocab} output tokens but the tokenizer has {tokenizer.n_vocab}")
    checkpoint = {
        "format": FORMAT,
        "dims": dataclasses.asdict(model.dims),
        "model_state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "config": to_dict(config) if config is not None else None,
        "tokenizer": tokenizer.state(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Load a checkpoint of this project or of OpenAI Whisper; the model is float32, in eval mode."""
    checkpoint = read(path)
    try:
        dims = ModelDims.from_dict(dict(checkpoint["dims"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model dimensions: {e}") from None
    model = Model(dims)
    try:
        model.load_state_dict(checkpoint["model_state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model dimensions: {e}") from None
    tokenizer = Tokenizer.from_state(checkpoint["tokenizer"]) if checkpoint.get("tokenizer") else None
    config = None
    if checkpoint.get("config"):
        try:
            config = from_dict(Config, checkpoint["config"], {"": f"{path} (config)"})
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    return Loaded(model.to(device).eval(), tokenizer, config)


def read(path: str | Path) -> dict:
    """The raw checkpoint dict, after checking that it is one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign file can fail anywhere inside the unpickler
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= set(checkpoint):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a model checkpoint: expected 'dims' and 'model_state_dict', found {keys}")
    return checkpoint


# ---------------------------------------------------------------------------------------------------
# Training state: DeepSpeed checkpoints of a run. This is the only place that knows their layout.
#
#   RUN_DIR/checkpoints/step-00000500/   DeepSpeed's files for one step (model, optimizer shards)
#   RUN_DIR/checkpoints/latest           the tag of the newest COMPLETE checkpoint, replaced atomically
#   RUN_DIR/checkpoints/best             the tag of the best one by the dev metric, never pruned
#
# A run killed while writing step N leaves `latest` naming step N-k, which is whole.

LATEST, BEST = "latest", "best"


def checkpoint_tag(step: int) -> str:
    return f"step-{step:08d}"


def save_training_state(engine, checkpoint_dir: str | Path, step: int, client_state: dict, keep_last: int,
                        is_best: bool = False) -> str:
    """Save on every rank, then (rank 0) point ``latest`` (and ``best``) at it and prune old ones."""
    import torch.distributed as dist

    checkpoint_dir = Path(checkpoint_dir)
    tag = checkpoint_tag(step)
    engine.save_checkpoint(str(checkpoint_dir), tag=tag, client_state=client_state, save_latest=False)
    if dist.is_initialized():
        dist.barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        _write_atomically(checkpoint_dir / LATEST, tag)
        if is_best:
            _write_atomically(checkpoint_dir / BEST, tag)
        _prune(checkpoint_dir, keep_last)
    if dist.is_initialized():
        dist.barrier()
    return tag


def load_training_state(engine, checkpoint_dir: str | Path) -> dict | None:
    """Restore model, optimizer and scheduler from ``latest``; returns the client state (None: no checkpoint)."""
    tag = read_tag(checkpoint_dir, LATEST)
    if tag is None:
        return None
    path, client_state = engine.load_checkpoint(str(checkpoint_dir), tag=tag)
    if path is None:
        raise CheckpointError(f"{Path(checkpoint_dir) / tag}: DeepSpeed could not load this checkpoint")
    return client_state


def read_tag(checkpoint_dir: str | Path, name: str = LATEST) -> str | None:
    path = Path(checkpoint_dir) / name
    return path.read_text().strip() if path.exists() else None


def export(run_dir: str | Path, out_path: str | Path, tag: str | None = None) -> Path:
    """Consolidate a run's DeepSpeed checkpoint (any ZeRO stage) into one fp32 checkpoint of our format."""
    from asr.config import load_config

    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    tag = tag or read_tag(checkpoint_dir, LATEST)
    if tag is None or not (checkpoint_dir / tag).is_dir():
        raise CheckpointError(f"{checkpoint_dir}: no complete training checkpoint to export")
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.from_sentencepiece((run_dir / "tokenizer.model").read_bytes())
    model = Model(model_dims(config.model, tokenizer.n_vocab, tokenizer.n_text))
    model.load_state_dict(consolidated_state_dict(checkpoint_dir, tag))
    save(out_path, model, tokenizer, config)
    return Path(out_path)


def consolidated_state_dict(checkpoint_dir: Path, tag: str) -> dict:
    """The full fp32 weights, gathered from ZeRO partitions where there are any."""
    if any((checkpoint_dir / tag).glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    else:  # no ZeRO partitioning: the model file holds every weight
        state = torch.load(checkpoint_dir / tag / "mp_rank_00_model_states.pt", map_location="cpu",
                           weights_only=False)["module"]
    return {name: tensor.float() for name, tensor in state.items()}


def model_dims(model: ModelConfig, n_vocab: int, n_text: int = 0) -> ModelDims:
    """The network's dims from a config's model section (or a preset) and the tokenizer's vocabulary size;
    ``n_text``, the tokenizer's text pieces, sizes the CTC head (0: the whole vocabulary)."""
    fields = dataclasses.asdict(model)
    del fields["preset"]
    has_ctc = model.ctc_head or model.translation_ctc_head
    return ModelDims(n_vocab=n_vocab, n_ctc_vocab=n_text if has_ctc else 0, **fields)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _prune(checkpoint_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, never the best or the latest."""
    keep = {read_tag(checkpoint_dir, LATEST), read_tag(checkpoint_dir, BEST)}
    tags = sorted(p.name for p in checkpoint_dir.glob("step-*") if p.is_dir())
    for tag in tags[: max(len(tags) - keep_last, 0)]:
        if tag not in keep:
            shutil.rmtree(checkpoint_dir / tag)
