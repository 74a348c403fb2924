"""Temperature fallback: decode again, hotter, the items whose result looks wrong.

Whisper does this one window at a time; here a batch is decoded together and only the items that
fail go on to the next temperature, as a smaller batch over the audio already encoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from asr.decoding.decode import DecodingOptions, DecodingResult, decode_features
from asr.model import Model
from asr.tokenizer import Tokenizer

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def is_silence(result: DecodingResult, logprob_threshold: float | None, no_speech_threshold: float | None) -> bool:
    """<|nospeech|> was likely and the text is unlikely: keep the result, it transcribes nothing."""
    if logprob_threshold is None or no_speech_threshold is None:
        return False
    return result.no_speech_prob > no_speech_threshold and result.avg_logprob < logprob_threshold


def needs_fallback(result: DecodingResult, compression_ratio_threshold: float | None,
                   logprob_threshold: float | None, no_speech_threshold: float | None) -> bool:
    """Too repetitive (compression ratio above its threshold) or too unlikely (average log probability
    below its threshold), unless it is silence. A threshold of None turns its test off."""
    if is_silence(result, logprob_threshold, no_speech_threshold):
        return False
    too_repetitive = compression_ratio_threshold is not None and result.compression_ratio > compression_ratio_threshold
    too_unlikely = logprob_threshold is not None and result.avg_logprob < logprob_threshold
    return too_repetitive or too_unlikely


@torch.no_grad()
def decode_with_fallback(model: Model, mel: Tensor, n_frames: Tensor | None, tokenizer: Tokenizer,
                         options: DecodingOptions = DecodingOptions(),
                         temperatures: Sequence[float] = TEMPERATURES,
                         compression_ratio_threshold: float | None = 2.4,
                         logprob_threshold: float | None = -1.0,
                         no_speech_threshold: float | None = 0.6,
                         generator: torch.Generator | None = None) -> list[DecodingResult]:
    """``decode`` at ``temperatures[0]``; the items that ``needs_fallback`` again at the next temperature,
    and so on; the last temperature's result stands whatever it is. Each result's ``no_speech`` says
    whether ``is_silence`` judged it silence.

    mel : shape = (batch, n_mels, n_frames_max); n_frames : shape = (batch,) or None (see ``decode``)
    """
    xa, audio_mask = model.encode(mel, n_frames)
    return decode_features_with_fallback(model, xa, audio_mask, tokenizer, options, temperatures,
                                         compression_ratio_threshold, logprob_threshold, no_speech_threshold,
                                         generator)


@torch.no_grad()
def decode_features_with_fallback(model: Model, xa: Tensor, audio_mask: Tensor | None, tokenizer: Tokenizer,
                                  options: DecodingOptions = DecodingOptions(),
                                  temperatures: Sequence[float] = TEMPERATURES,
                                  compression_ratio_threshold: float | None = 2.4,
                                  logprob_threshold: float | None = -1.0,
                                  no_speech_threshold: float | None = 0.6,
                                  generator: torch.Generator | None = None) -> list[DecodingResult]:
    """``decode_with_fallback`` from encoded audio, xa : shape = (batch, n_audio_positions, n_audio_state)."""
    if not temperatures:
        raise ValueError("temperatures is empty")
    results: list[DecodingResult | None] = [None] * xa.shape[0]
    pending = list(range(xa.shape[0]))
    for temperature in temperatures:
        index = torch.tensor(pending, device=xa.device)
        decoded = decode_features(model, xa[index], None if audio_mask is None else audio_mask[index], tokenizer,
                                  dataclasses.replace(options, temperature=temperature), generator)
        for item, result in zip(pending, decoded):
            results[item] = result
        pending = [item for item, result in zip(pending, decoded)
                   if needs_fallback(result, compression_ratio_threshold, logprob_threshold, no_speech_threshold)]
        if not pending:
            break
    return [dataclasses.replace(result, no_speech=is_silence(result, logprob_threshold, no_speech_threshold))
            for result in results]
