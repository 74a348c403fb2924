"""Where a recording pauses, as its CTC head hears it: the cut points of ``transcribe``'s pieces mode.

    speech = ctc_speech(model, mel, window_frames)           # (n_positions,) bool: a label is heard
    spans = speech_spans(speech, model.dims.audio_stride / FRAMES_PER_SECOND)
    bounds = piece_bounds(spans, duration)                   # [(start, end)] in seconds, with margins
    times = fit_to_span(times, spans[k])                     # piece k's segment times, outer ends its span's

A CTC head marks heard speech with spikes of non-blank labels and everything else, pauses included,
with blanks. Spikes closer than ``MIN_PAUSE`` belong to one span (a word's letters are a few positions
apart, a sentence's words a few tenths of a second); a longer run of blanks separates two spans.

A span's ends are also where its speech starts and stops, more closely than the decoder's timestamp
tokens say (on the demo model's long-form test recordings, mean absolute error 0.15 s for spans
holding one sentence against 0.40 s for the decoder's segments, whose ends it often guessed at a
clip's typical length), so the first and last segment of a piece take their outer times from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from asr.decoding.ctc import ctc_log_probs
from asr.model import Model

# Seconds of blanks that part two spans. The demo models' CTC heads leave runs of blanks of 0.3-0.4 s
# inside a sentence, and a piece that holds part of a sentence is transcribed badly (as is one of two
# sentences: a model trained on one sentence a clip stops or garbles). Long-form test WER of five demo
# runs (2026-12-06): 0.3 s 11.0% (7.7-13.7), 0.4 s 7.1% (4.5-9.3), 0.5 s 8.1% on four, 0.6 s 11.8% on three.
MIN_PAUSE = 0.4
MARGIN = 0.3  # seconds of audio kept before and after a span's first and last spike
MAX_PIECE = 20.0  # seconds: a longer span is split evenly


def ctc_speech(model: Model, mel: Tensor, window_frames: int) -> Tensor:
    """Whether each encoder position's most likely CTC label is a text piece (not the blank).

    mel : shape = (n_mels, n_frames), the whole recording; it is encoded ``window_frames`` at a time.
    Returns shape = (ceil(n_frames / audio_stride),), bool, on the CPU.
    """
    device = next(model.parameters()).device
    heard = []
    for start in range(0, mel.shape[-1], window_frames):
        window = mel[None, :, start: start + window_frames].to(device)
        n_frames = torch.tensor([window.shape[-1]], device=device)
        with torch.no_grad():
            xa, mask = model.encode(window, n_frames)
            log_probs, lengths = ctc_log_probs(model.ctc_logits(xa), mask)
        heard.append((log_probs[0, : int(lengths[0])].argmax(dim=-1) != model.ctc_blank).cpu())
    return torch.cat(heard) if heard else torch.zeros(0, dtype=torch.bool)


def speech_spans(speech: Sequence[bool] | Tensor, seconds_per_position: float, min_pause: float = MIN_PAUSE,
                 max_piece: float = MAX_PIECE) -> list[tuple[float, float]]:
    """(start, end) in seconds of each run of speech positions, runs less than ``min_pause`` apart joined;
    a span longer than ``max_piece`` is split into equal parts no longer than it."""
    spans: list[list[int]] = []
    for position in (int(i) for i in torch.as_tensor(speech).nonzero().flatten()):
        if spans and (position - spans[-1][1] - 1) * seconds_per_position < min_pause:
            spans[-1][1] = position
        else:
            spans.append([position, position])
    seconds = []
    for first, last in spans:
        start, end = first * seconds_per_position, (last + 1) * seconds_per_position
        parts = max(1, math.ceil((end - start) / max_piece))
        step = (end - start) / parts
        seconds += [(start + k * step, start + (k + 1) * step) for k in range(parts)]
    return seconds


def piece_bounds(spans: list[tuple[float, float]], duration: float,
                 margin: float = MARGIN) -> list[tuple[float, float]]:
    """Each span widened by ``margin`` either side, within the recording and never past the middle of
    the pause to a neighbouring span (so no speech is in two pieces)."""
    bounds = []
    for k, (start, end) in enumerate(spans):
        low = max(0.0, start - margin, (spans[k - 1][1] + start) / 2 if k else 0.0)
        high = min(duration, end + margin, (end + spans[k + 1][0]) / 2 if k + 1 < len(spans) else duration)
        bounds.append((low, high))
    return bounds


def fit_to_span(times: list[tuple[float, float]], span: tuple[float, float]) -> list[tuple[float, float]]:
    """A piece's segment times (in order, seconds) with the first start and the last end moved to its
    speech span's; a move that would leave its segment empty or reversed is not made."""
    times = list(times)
    if times:
        start, end = times[0]
        times[0] = (span[0] if span[0] < end else start, end)
        start, end = times[-1]
        times[-1] = (start, span[1] if span[1] > start else end)
    return times
