"""Batched greedy decoding over the KV cache, and language / no-speech detection from the first step."""

from __future__ import annotations

from collections.abc import Callable
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


@torch.no_grad()
def greedy_decode(model: Model, xa: Tensor, audio_mask: Tensor | None, prompts: list[list[int]],
                  tokenizer: Tokenizer, max_tokens: int = 200,
                  all_finished: Callable[[bool], bool] = bool) -> list[list[int]]:
    """The most likely next token, step after step, until ``<|endoftext|>`` or ``max_tokens``.

    prompts : one token list per item, all of the same length (e.g. ``tokenizer.sot_sequence(...)``)
    all_finished : whether to stop, given whether this process's items are done; processes that must
        make the same number of forward calls (ZeRO-3 shards the weights) agree through it
    Returns the generated tokens per item, without the prompt and without ``<|endoftext|>``.
    """
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("greedy_decode needs prompts of one length; group items by prompt length")
    tokens = torch.tensor(prompts, dtype=torch.long, device=xa.device)
    room = model.dims.n_text_ctx - tokens.shape[1]
    cache = model.new_cache()
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=xa.device)
    generated = []
    step_input = tokens
    # Special tokens other than timestamps and <|endoftext|> never belong inside a transcript.
    suppress = torch.zeros(model.dims.n_vocab, dtype=torch.bool, device=xa.device)
    suppress[tokenizer.sot: tokenizer.timestamp_begin] = True
    for _ in range(min(max_tokens, room)):
        logits = model.decode(step_input, xa, audio_mask, cache=cache)[:, -1]
        logits[:, suppress] = -torch.inf
        next_token = logits.argmax(-1)
        next_token[finished] = tokenizer.eot
        generated.append(next_token)
        finished |= next_token == tokenizer.eot
        if all_finished(bool(finished.all())):
            break
        step_input = next_token[:, None]
    result = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in prompts]
    return [row[: row.index(tokenizer.eot)] if tokenizer.eot in row else row for row in result]
