"""Language and no-speech detection from the first decoder step, after ``<|startoftranscript|>``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.model import Model
from asr.tokenizer import Tokenizer


@dataclass(frozen=True)
class FirstStep:
    """What the model says at the position after ``<|startoftranscript|>``."""

    language: list[str]  # the most likely language token's code, per item
    language_probs: Tensor  # (batch, n_languages), over the language tokens only
    no_speech_prob: Tensor  # (batch,), probability of <|nospeech|> over the whole vocabulary


@torch.no_grad()
def detect(model: Model, xa: Tensor, audio_mask: Tensor | None, tokenizer: Tokenizer) -> FirstStep:
    """Language ID and no-speech probability from one decoder step on ``<|startoftranscript|>``.

    xa : shape = (batch, n_audio_positions, n_audio_state), the encoded audio
    """
    sot = torch.full((xa.shape[0], 1), tokenizer.sot, dtype=torch.long, device=xa.device)
    logits = model.decode(sot, xa, audio_mask)[:, 0]
    no_speech_prob = logits.softmax(-1)[:, tokenizer.no_speech]
    language_tokens = torch.tensor(tokenizer.specials.all_language_tokens, device=xa.device)
    language_probs = logits[:, language_tokens].softmax(-1)
    codes = tokenizer.specials.all_language_codes
    return FirstStep([codes[i] for i in language_probs.argmax(-1).tolist()], language_probs, no_speech_prob)
