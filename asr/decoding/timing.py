"""Timestamps for a text already decoded: the decoder places them, the text stays as it is.

    texts = [result.tokens for result in decode(model, mel, n_frames, tokenizer, without_timestamps)]
    timed = place_timestamps(model, xa, audio_mask, tokenizer, texts, language="de")
    segments, advance = split_segments(timed[0], tokenizer, n_frames[0])

A joint CTC/attention search writes the words a recording holds far better than the decoder alone
(demo model, long-form test recordings cut into pieces: word error 7% against 45%), but the CTC head
has no classes for timestamps, so a joint search cannot place them. Here the decoder runs greedily
once more with the text forced: at each step it may write the text's next token, or a timestamp where
Whisper's timestamp grammar asks for one (``ForceText``), and ``<|endoftext|>`` only after the last text
token. Where a segment ends and the next starts is thereby read from the audio and the right words.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from asr.decoding.decode import DecodingOptions, initial_tokens, main_loop
from asr.decoding.filters import ApplyTimestampRules, SuppressTokens, suppressed_tokens
from asr.decoding.search import GreedyDecoder
from asr.model import Model
from asr.tokenizer import Tokenizer, per_tokenizer


class ForceText:
    """Each row writes its own text, token after token, in order. Run after Whisper's timestamp rules
    (``ApplyTimestampRules``), it keeps their choice between text and a timestamp (rule 4 makes it
    from the decoder's own text: a timestamp when all timestamps together beat its likeliest text
    token), and then allows, of the text ids, only the row's next one:

    - where the rules allow text, the next text token is written;
    - where they want a timestamp before a token that starts a word, one is placed; never inside a
      word, where the text goes on instead (a segment breaks only between words);
    - once the text is written: a timestamp closes the last segment, then ``<|endoftext|>``.
    """

    def __init__(self, texts: Sequence[Sequence[int]], tokenizer: Tokenizer, sample_begin: int):
        self.texts = [list(text) for text in texts]
        self.eot, self.sample_begin = tokenizer.eot, sample_begin
        self.word_start = starts_word(tokenizer)

    def next_tokens(self, tokens: Tensor) -> list[int | None]:
        """Per row, the next text token to write (None: the text is written)."""
        generated = tokens[:, self.sample_begin:]
        written = (generated < self.eot).sum(dim=1).tolist()  # text ids come before eot and timestamps
        return [text[n] if n < len(text) else None for text, n in zip(self.texts, written)]

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        text_allowed = torch.isfinite(logits[:, :self.eot]).any(dim=1).tolist()
        started = tokens.shape[1] > self.sample_begin
        last_is_text = (tokens[:, -1] < self.eot).tolist() if started else [False] * len(logits)
        logits[:, :self.eot] = -torch.inf
        for row, token in enumerate(self.next_tokens(tokens)):
            if token is None:
                if last_is_text[row]:  # the last segment's closing timestamp comes first
                    logits[row, self.eot] = -torch.inf
                if torch.isinf(logits[row]).all():  # no timestamp left in the window: end here
                    logits[row, self.eot] = 0.0
                continue
            logits[row, self.eot] = -torch.inf
            if text_allowed[row] or not self.word_start[token] or torch.isinf(logits[row]).all():
                logits[row] = -torch.inf
                logits[row, token] = 0.0


@per_tokenizer
def starts_word(tokenizer: Tokenizer) -> list[bool]:
    """Per text id, whether its text begins with a space (a word's first piece, or a lone space)."""
    return [tokenizer.decode([token]).startswith(" ") for token in range(tokenizer.eot)]


@torch.no_grad()
def place_timestamps(model: Model, xa: Tensor, audio_mask: Tensor | None, tokenizer: Tokenizer,
                     texts: Sequence[Sequence[int]], language: str, task: str = "transcribe",
                     max_initial_timestamp: float | None = 1.0) -> list[list[int]]:
    """Each item's text tokens with the timestamps the decoder places among them (greedily, without
    a prompt), as ``DecodingResult.tokens`` holds them after a search with timestamps.

    xa : shape = (batch, n_audio_positions, n_audio_state), the encoded audio; audio_mask as ``decode``'s
    texts : per item, its text ids (no special tokens); an empty text gives an empty list
    Returns per item the timed tokens, without the prompt and ``<|endoftext|>``. An item whose text
    outgrows the decoder's positions with its timestamps comes back as its text alone.
    """
    if len(texts) != xa.shape[0]:
        raise ValueError(f"{len(texts)} texts for {xa.shape[0]} encoded items")
    for text in texts:
        if any(not 0 <= t < tokenizer.eot for t in text):
            raise ValueError("a text to time holds special tokens or ids outside the vocabulary")
    options = DecodingOptions(task=task, language=language, max_initial_timestamp=max_initial_timestamp)
    prompt = initial_tokens(tokenizer, options, language, model.dims.n_text_ctx)
    sample_begin = len(prompt)
    force = ForceText(texts, tokenizer, sample_begin)
    filters = [SuppressTokens(suppressed_tokens(tokenizer, ())),
               ApplyTimestampRules(tokenizer, sample_begin, max_initial_timestamp), force]
    tokens = torch.tensor([prompt] * len(texts), device=xa.device)
    n_steps = model.dims.n_text_ctx - sample_begin
    tokens, _, _ = main_loop(model, xa, audio_mask, tokens, model.new_cache(), filters,
                             GreedyDecoder(0.0, tokenizer.eot), n_steps, prompt.index(tokenizer.sot),
                             tokenizer.no_speech)
    timed = []
    for row, text in zip(tokens.tolist(), texts):
        generated = row[sample_begin:]
        if not text or tokenizer.eot not in generated:  # nothing to time, or ran out of positions
            timed.append(list(text))
            continue
        timed.append(generated[: generated.index(tokenizer.eot)])
    return timed
