"""Long-form transcription: recordings of any length, decoded window after window, as Whisper does.

    result = transcribe(model, tokenizer, "talk.flac", TranscribeOptions(DecodingOptions(language="de")))
    result["text"], result["segments"][0]["start"], result["no_speech"]

    for path, result in transcribe_many(model, tokenizer, paths, batch_size=8):
        ...  # result is the dict above, or the AudioError that stopped this file

A recording's log-mel is computed once, over the audio plus 30 s of zeros; then, from ``seek = 0``:

1. the window is the next ``window_frames`` mel frames (30 s), zero past the recording's end;
2. it is decoded with temperature fallback, prompted with the previous windows' text;
3. its tokens are cut into segments at consecutive timestamps (``split_segments``), given absolute
   times, and ``seek`` moves to the last complete segment's end (or past the whole window).

A window judged silence (``DecodingResult.no_speech``) adds nothing and is skipped whole.
``transcribe_many`` runs the same steps over several recordings at once: window k of each active
recording goes into one batch with the others that share its language and prompt.

The result is a dict like openai-whisper's::

    {"text": str, "language": str | None, "language_probs": {code: p} | None, "no_speech": bool,
     "segments": [{"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                   "compression_ratio", "no_speech_prob"}]}   # times in seconds, seek in mel frames
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asr.audio import (FRAMES_PER_SECOND, N_FRAMES, N_SAMPLES, SAMPLE_RATE, AudioError, load_audio, log_mel_spectrogram,
                       log_mel_spectrogram_batch)
from asr.decoding.decode import DecodingOptions, DecodingResult, detect_language
from asr.decoding.fallback import TEMPERATURES, decode_features_with_fallback, decode_with_fallback
from asr.decoding.pauses import MARGIN, MAX_PIECE, ctc_speech, fit_to_span, piece_bounds, speech_spans
from asr.decoding.timing import place_timestamps
from asr.model import Model
from asr.tokenizer import TIME_PRECISION, Tokenizer

SILENCE_PEAK = 1e-4  # peak amplitude (full scale 1.0) below which a recording is silence, not decoded
FRAMES_PER_TIMESTAMP = round(TIME_PRECISION * FRAMES_PER_SECOND)  # 2 mel frames per 20 ms timestamp step,
# whatever the encoder's audio_stride
HIGH_TEMPERATURE = 0.5  # a window decoded hotter than this does not prompt the next one (Whisper's rule)


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe a recording; ``decoding.language`` None detects it once, on the first window.
    ``decoding.prompt`` is ignored: the previous text (or ``initial_prompt``) takes its place."""

    decoding: DecodingOptions = DecodingOptions()
    temperatures: tuple[float, ...] = TEMPERATURES  # tried in turn on a window that fails the thresholds
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True  # prompt each window with the text before it
    initial_prompt: str | None = None  # text that prompts the first window
    # Give the encoder each window's true length, so it masks the zeros past a recording's end: for
    # models trained on unpadded clips (FeatureConfig.pad_to_30s false). False: Whisper's full windows.
    mask_padding: bool = False
    # Cut the recording at the pauses its CTC head hears and decode the pieces as clips, in batches
    # (``transcribe_in_pieces``), instead of window after window; needs a CTC head.
    pieces: bool = False

    def __post_init__(self):
        object.__setattr__(self, "temperatures", tuple(self.temperatures))
        if not self.temperatures:
            raise ValueError("temperatures is empty")


def pieces_by_default(model: Model) -> bool:
    """Whether a model is transcribed in pieces unless told otherwise: with a CTC head to cut them (the
    demo model's long-form test recordings: word error 7% in pieces against 96% window after window)."""
    return model.ctc is not None


def window_frames(model: Model) -> int:
    """Mel frames per window: 30 s (3000), or fewer for an encoder with fewer positions."""
    return min(N_FRAMES, model.dims.audio_stride * model.dims.n_audio_ctx)


# ---------------------------------------------------------------------------------------------------
# One window's tokens -> segments


def split_segments(tokens: Sequence[int], tokenizer: Tokenizer,
                   n_frames: int) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut one window's tokens into segments at consecutive timestamp pairs (Whisper's rule).

    tokens : the generated ids (text and timestamps, no <|endoftext|>)
    n_frames : the window's frames of audio (fewer than a full window at the recording's end)

    Returns the segments as (start, end, tokens), times in seconds from the window's start, and the
    mel frames to advance: to the last complete segment's end (at most ``n_frames``), or the whole window
    when the tokens end with a single timestamp (nothing follows it) or hold no timestamp pair.
    """
    is_timestamp = [tokenizer.specials.is_timestamp(t) for t in tokens]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_timestamp[i] and is_timestamp[i + 1]]
    if not cuts:
        return [(0.0, _last_timestamp_seconds(tokens, tokenizer, n_frames), list(tokens))], n_frames
    single_ending = is_timestamp[-2:] == [False, True]
    ends = cuts + [len(tokens)] if single_ending else cuts
    starts = [0] + ends[:-1]
    segments = [(_seconds(tokens[a], tokenizer), _seconds(tokens[b - 1], tokenizer), list(tokens[a:b]))
                for a, b in zip(starts, ends)]
    if single_ending:
        return segments, n_frames
    advance = _frames(tokens[ends[-1] - 1], tokenizer)
    # Never past the window's audio; and <|0.00|><|0.00|> alone, which would never move on, takes it all.
    return segments, min(advance, n_frames) if advance > 0 else n_frames


def _last_timestamp_seconds(tokens: Sequence[int], tokenizer: Tokenizer, n_frames: int) -> float:
    """The one segment's end: its last timestamp when there is one past <|0.00|>, else the window's end."""
    timestamps = [t for t in tokens if tokenizer.specials.is_timestamp(t)]
    if timestamps and timestamps[-1] != tokenizer.timestamp_begin:
        return _seconds(timestamps[-1], tokenizer)
    return n_frames / FRAMES_PER_SECOND


def _frames(timestamp: int, tokenizer: Tokenizer) -> int:
    return (timestamp - tokenizer.timestamp_begin) * FRAMES_PER_TIMESTAMP


def _seconds(timestamp: int, tokenizer: Tokenizer) -> float:
    return _frames(timestamp, tokenizer) / FRAMES_PER_SECOND


# ---------------------------------------------------------------------------------------------------
# One recording's state from window to window


class PreviousText:
    """The text tokens that prompt the next window (Whisper's ``all_tokens[prompt_reset_since:]``).

    Starts as the initial prompt; each window's text is appended, and everything is dropped after a
    window when ``condition`` is off or that window was decoded above ``HIGH_TEMPERATURE``. Only the
    last ``max_tokens`` (n_text_ctx // 2 - 1, what ``decode`` keeps) are held.
    """

    def __init__(self, initial: Sequence[int], max_tokens: int, condition: bool):
        self.max_tokens, self.condition = max_tokens, condition
        self.tokens: tuple[int, ...] = tuple(initial)[-max_tokens:] if max_tokens > 0 else ()

    def add(self, text_tokens: Sequence[int], temperature: float) -> None:
        if not self.condition or temperature > HIGH_TEMPERATURE:
            self.tokens = ()
        else:
            self.tokens = (self.tokens + tuple(text_tokens))[-self.max_tokens:] if self.max_tokens > 0 else ()


class Recording:
    """One recording being transcribed: its features, where the next window starts, what was heard.

    mel : shape = (n_mels, content_frames + N_FRAMES), on the CPU; the last N_FRAMES are padding
    """

    def __init__(self, mel: Tensor, content_frames: int, tokenizer: Tokenizer, options: TranscribeOptions,
                 window_frames: int, n_text_ctx: int, silent: bool = False):
        self.mel, self.content_frames, self.window_frames = mel, content_frames, window_frames
        self.tokenizer, self.options = tokenizer, options
        self.silent = silent  # judged silence before decoding (peak amplitude below SILENCE_PEAK)
        self.seek = 0  # mel frames (100 per second) transcribed so far
        self.language, self.language_probs = options.decoding.language, None
        initial = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        self.previous = PreviousText(initial, n_text_ctx // 2 - 1, options.condition_on_previous_text)
        self.segments: list[dict] = []
        self.heard_speech = False  # some window's no-speech probability was at or below the threshold

    @property
    def done(self) -> bool:
        return self.silent or self.seek >= self.content_frames

    def window(self) -> tuple[Tensor, int]:
        """The next window, shape = (n_mels, window_frames), zero past the audio; and its frames of audio."""
        n_frames = min(self.window_frames, self.content_frames - self.seek)
        window = self.mel[:, self.seek: self.seek + n_frames]
        return F.pad(window, (0, self.window_frames - n_frames)), n_frames

    def decoding_options(self) -> DecodingOptions:
        return dataclasses.replace(self.options.decoding, language=self.language,
                                   prompt=self.previous.tokens or None)

    def take(self, result: DecodingResult) -> None:
        """Record the current window's result and move ``seek`` on."""
        n_frames = min(self.window_frames, self.content_frames - self.seek)
        if self.language is None:
            self.language, self.language_probs = result.language, result.language_probs
        threshold = self.options.no_speech_threshold
        self.heard_speech |= threshold is None or result.no_speech_prob <= threshold
        if result.no_speech:
            self.seek += n_frames
            return
        pieces, advance = split_segments(result.tokens, self.tokenizer, n_frames)
        offset = self.seek / FRAMES_PER_SECOND
        text_tokens = []
        for start, end, tokens in pieces:
            text = self.tokenizer.decode(tokens)
            if start == end or not text.strip():  # instantaneous or empty: Whisper blanks it, we drop it
                continue
            self.segments.append(_segment(len(self.segments), self.seek, offset + start, offset + end,
                                          text, tokens, result))
            text_tokens += [t for t in tokens if t < self.tokenizer.n_text]
        self.previous.add(text_tokens, result.temperature)
        self.seek += advance

    def result(self) -> dict:
        """The transcription dict (module docstring); empty and ``no_speech`` when nothing was heard."""
        no_speech = self.silent or not self.heard_speech
        segments = [] if no_speech else self.segments
        text = self.tokenizer.decode(t for s in segments for t in s["tokens"])
        return {"text": text, "segments": segments, "language": self.language,
                "language_probs": self.language_probs, "no_speech": no_speech}


def _segment(id: int, seek: int, start: float, end: float, text: str, tokens: list[int],
             result: DecodingResult) -> dict:
    return {"id": id, "seek": seek, "start": round(start, 3), "end": round(end, 3), "text": text,
            "tokens": tokens, "temperature": result.temperature, "avg_logprob": result.avg_logprob,
            "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob}


def start_recording(audio: str | os.PathLike | np.ndarray, model: Model, tokenizer: Tokenizer,
                    options: TranscribeOptions) -> Recording:
    """A recording at ``seek = 0``: audio (a path, or shape = (n_samples,) at 16 kHz) to log-mel.

    Raises AudioError for a path that cannot be read as audio.
    """
    audio, silent = _read_audio(audio)
    mel = log_mel_spectrogram(audio, model.dims.n_mels, padding=N_SAMPLES)
    return Recording(mel, mel.shape[-1] - N_FRAMES, tokenizer, options, window_frames(model),
                     model.dims.n_text_ctx, silent)


def _read_audio(audio: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, bool]:
    """The samples as float32, and whether they are silence (none, or a peak below SILENCE_PEAK).
    Raises AudioError for a path that cannot be read."""
    if isinstance(audio, (str, os.PathLike)):
        audio = load_audio(audio)
    audio = np.asarray(audio, dtype=np.float32)
    return audio, audio.size == 0 or float(np.abs(audio).max()) < SILENCE_PEAK


# ---------------------------------------------------------------------------------------------------
# Decoding windows, one recording or many


def decode_windows(model: Model, tokenizer: Tokenizer, recordings: Sequence[Recording],
                   options: TranscribeOptions) -> None:
    """Decode the current window of each recording (none done) and move each on.

    Windows are batched by (language, prompt): ``decode`` takes one prompt for its whole batch.
    """
    groups: dict[tuple, list[Recording]] = {}
    for recording in recordings:
        key = (recording.language, recording.previous.tokens)
        groups.setdefault(key, []).append(recording)
    device = next(model.parameters()).device
    for group in groups.values():
        windows = [recording.window() for recording in group]
        mel = torch.stack([window for window, _ in windows]).to(device)  # (batch, n_mels, window_frames)
        n_frames = torch.tensor([n for _, n in windows], device=device) if options.mask_padding else None
        results = decode_with_fallback(model, mel, n_frames, tokenizer, group[0].decoding_options(),
                                       options.temperatures, options.compression_ratio_threshold,
                                       options.logprob_threshold, options.no_speech_threshold)
        for recording, result in zip(group, results):
            recording.take(result)


def transcribe(model: Model, tokenizer: Tokenizer, audio: str | os.PathLike | np.ndarray,
               options: TranscribeOptions = TranscribeOptions()) -> dict:
    """Transcribe one recording of any length; audio is a path or shape = (n_samples,) at 16 kHz.

    Returns the result dict (module docstring). Raises AudioError for a path that cannot be read.
    """
    if options.pieces:
        return transcribe_in_pieces(model, tokenizer, audio, options)
    recording = start_recording(audio, model, tokenizer, options)
    while not recording.done:
        decode_windows(model, tokenizer, [recording], options)
    return recording.result()


def transcribe_many(model: Model, tokenizer: Tokenizer, paths: Iterable[str | os.PathLike],
                    options: TranscribeOptions = TranscribeOptions(),
                    batch_size: int = 8) -> Iterator[tuple[str | os.PathLike, dict | AudioError]]:
    """Transcribe files, up to ``batch_size`` at a time, window k of each decoded together.

    Yields (path, result dict) as each recording finishes, or (path, AudioError) for a file that cannot
    be read (missing, empty, unsupported or corrupt); the other files go on. The order is that of
    finishing: short recordings come out first, and a finished one's place goes to the next file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if options.pieces:  # each recording's pieces make the batches
        for path in paths:
            try:
                yield path, transcribe_in_pieces(model, tokenizer, path, options, batch_size)
            except AudioError as error:
                yield path, error
        return
    queue, active, exhausted = iter(paths), [], False
    while True:
        while len(active) < batch_size and not exhausted:
            path = next(queue, _END)
            if path is _END:
                exhausted = True
                break
            try:
                active.append((path, start_recording(path, model, tokenizer, options)))
            except AudioError as error:
                yield path, error
        for path, recording in active:
            if recording.done:  # silent, or shorter than a frame: nothing to decode
                yield path, recording.result()
        active = [(path, recording) for path, recording in active if not recording.done]
        if active:
            decode_windows(model, tokenizer, [recording for _, recording in active], options)
        elif exhausted:
            return


_END = object()  # the end of transcribe_many's queue of paths


# ---------------------------------------------------------------------------------------------------
# Pieces cut at pauses


def recording_language(probs: Sequence[dict[str, float]], seconds: Sequence[float]) -> tuple[str, dict[str, float]]:
    """One language for a recording from its pieces' language probabilities, each weighted by its length in
    seconds: the most likely code and the weighted mean of every code's probability. Each piece deciding
    its own, and the rest taking the first piece's, gave two demo runs' long-form test recordings (9) the
    wrong language in 2 each (a 1 s piece of German heard as French): long-form WER 20.6% and 14.8% with no
    language given against 6.8% and 7.8% with it; with this, every language right, 6.4% and 8.2%."""
    total = sum(seconds)
    mean = {code: sum(weight * p[code] for weight, p in zip(seconds, probs)) / total for code in probs[0]}
    return max(mean, key=mean.get), mean


def transcribe_in_pieces(model: Model, tokenizer: Tokenizer, audio: str | os.PathLike | np.ndarray,
                         options: TranscribeOptions = TranscribeOptions(), batch_size: int = 16) -> dict:
    """Transcribe one recording cut at the pauses its CTC head hears (``asr.decoding.pauses``).

    Each piece (a sentence or a few, with a little audio either side) is decoded as a clip, without a
    prompt, ``batch_size`` pieces at a time, in two passes over its encoded audio:

    1. its text, by ``options.decoding``'s search (joint CTC/attention at its ``ctc_weight``) without
       timestamps, with temperature fallback;
    2. its timestamps, placed among that text by the decoder (``asr.decoding.timing``).

    Its segments are shifted by the piece's start, and its first and last segment take their outer
    times from the piece's speech span (``fit_to_span``). A model trained mostly on clips transcribes
    them far better than 30 s windows. ``decoding.language`` None: the language is detected once, on the
    first batch's pieces, their probabilities averaged by the pieces' lengths (``recording_language``), and
    every piece is decoded in it.
    Returns ``transcribe``'s result dict. Raises AudioError for a path that cannot be read.
    """
    if model.ctc is None:
        raise ValueError("transcription in pieces needs a model with a CTC head (ModelDims.ctc_head)")
    audio, silent = _read_audio(audio)
    duration = audio.size / SAMPLE_RATE
    result = {"text": "", "segments": [], "language": options.decoding.language, "language_probs": None,
              "no_speech": True}
    if silent:
        return result
    frames = window_frames(model)
    speech = ctc_speech(model, log_mel_spectrogram(audio, model.dims.n_mels), frames)
    spans = speech_spans(speech, model.dims.audio_stride / FRAMES_PER_SECOND,
                         max_piece=min(MAX_PIECE, frames / FRAMES_PER_SECOND - 2 * MARGIN))
    bounds = piece_bounds(spans, duration)
    # The text without timestamps: CTC has no classes for them, and a joint search that scores them like
    # the best text piece cut pieces' segments short (demo model, long-form test: 90 of 155 segments found
    # jointly), while the decoder alone, which places them well, wrote 45% of the words wrong against 7%.
    decoding = dataclasses.replace(options.decoding, prompt=None, without_timestamps=True)
    device = next(model.parameters()).device
    segments = []
    for first in range(0, len(bounds), batch_size):
        batch = bounds[first: first + batch_size]
        pieces = [audio[round(low * SAMPLE_RATE): round(high * SAMPLE_RATE)] for low, high in batch]
        if not options.mask_padding:  # Whisper's models hear 30 s windows, zeros after the speech
            pieces = [np.pad(piece, (0, max(0, N_SAMPLES - piece.size))) for piece in pieces]
        mel, lengths = log_mel_spectrogram_batch(pieces, model.dims.n_mels)
        with torch.no_grad():
            xa, audio_mask = model.encode(mel.to(device), lengths.to(device) if options.mask_padding else None)
        if decoding.language is None:
            _, probs = detect_language(model, xa, audio_mask, tokenizer)
            seconds = [high - low for low, high in batch]
            result["language"], result["language_probs"] = recording_language(probs, seconds)
            decoding = dataclasses.replace(decoding, language=result["language"])
        results = decode_features_with_fallback(model, xa, audio_mask, tokenizer, decoding, options.temperatures,
                                                options.compression_ratio_threshold, options.logprob_threshold,
                                                options.no_speech_threshold)
        heard = [i for i, decoded in enumerate(results) if not decoded.no_speech and decoded.tokens]
        timed = _timed_tokens(model, xa, audio_mask, tokenizer, heard, results, decoding)
        for i, tokens in zip(heard, timed):
            (low, high), span = batch[i], spans[first + i]
            seek = round(low * FRAMES_PER_SECOND)
            piece = []
            for start, end, segment_tokens in split_segments(tokens, tokenizer, int(lengths[i]))[0]:
                text = tokenizer.decode(segment_tokens)
                start, end = min(start, high - low), min(end, high - low)  # not past the piece's audio
                if start < end and text.strip():
                    piece.append((low + start, low + end, text, segment_tokens))
            times = fit_to_span([(start, end) for start, end, _, _ in piece], span)
            for (start, end), (_, _, text, segment_tokens) in zip(times, piece):
                segments.append(_segment(len(segments), seek, start, end, text, segment_tokens, results[i]))
    result["segments"], result["no_speech"] = segments, not segments
    result["text"] = tokenizer.decode(t for s in segments for t in s["tokens"])
    return result


def _timed_tokens(model: Model, xa: Tensor, audio_mask: Tensor | None, tokenizer: Tokenizer, rows: Sequence[int],
                  results: Sequence[DecodingResult], decoding: DecodingOptions) -> list[list[int]]:
    """Per row of ``xa`` in ``rows``, its result's text with the decoder's timestamps placed among it;
    each row in the language it was decoded in (``decoding.language``, or its result's own)."""
    by_language: dict[str, list[int]] = {}
    for row in rows:
        by_language.setdefault(decoding.language or results[row].language, []).append(row)
    timed: dict[int, list[int]] = {}
    for language, group in by_language.items():
        index = torch.tensor(group, device=xa.device)
        placed = place_timestamps(model, xa[index], None if audio_mask is None else audio_mask[index], tokenizer,
                                  [results[row].tokens for row in group], language, decoding.task,
                                  decoding.max_initial_timestamp)
        timed.update(zip(group, placed))
    return [timed[row] for row in rows]
