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
from pathlib import Path
from typing import NamedTuple

import torch

from asr.config import Config, ConfigError, from_dict, to_dict
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
