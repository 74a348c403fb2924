"""Decoding a batch of audio windows (up to 30 s each): options, the wiring, the main loop.

    options = DecodingOptions(language="de", beam_size=5)
    results = decode(model, mel, n_frames, tokenizer, options)
    results[0].text, results[0].avg_logprob, results[0].no_speech_prob

Each item's decoder prompt is

    [<|startofprev|> previous text]  <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>]

The items of a batch share ``options.prompt``, so their prompts have one length even when their
languages differ (each item's own language token sits at the same position). The cache's rows
advance in step, so items with different previous text (prompts of different lengths) are decoded
in separate calls, one per group of equal prompt length.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from asr.decoding.ctc import CTCPrefixScorer, ctc_log_probs, task_ctc_logits
from asr.decoding.filters import (ApplyTimestampRules, CompleteCharacters, LogitFilter, SuppressBlank, SuppressTokens,
                                  suppressed_tokens)
from asr.decoding.greedy import detect
from asr.decoding.search import BeamSearchDecoder, GreedyDecoder, MaximumLikelihoodRanker, TokenDecoder
from asr.model import KVCache, Model
from asr.tokenizer import LANGUAGES, TASKS, Tokenizer


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; validated on construction, changed with ``dataclasses.replace``.

    ``beam_size`` applies at temperature 0 and ``best_of`` above it, so one options object serves
    every temperature of ``decode_with_fallback``.
    """

    task: str = "transcribe"  # "transcribe" (X -> X) or "translate" (X -> English)
    language: str | None = None  # a code such as "de"; None: detected per item
    temperature: float = 0.0  # 0: greedy or beam search; above 0: sampling
    sample_len: int | None = None  # most tokens generated; None: n_text_ctx // 2
    best_of: int = 1  # independent samples per item at temperature > 0; the ranker picks one
    beam_size: int | None = None  # beams at temperature 0; None: greedy
    patience: float = 1.0  # beam search waits for round(beam_size * patience) finished candidates
    length_penalty: float | None = None  # ranking: None divides by length; alpha in [0, 1]: Google NMT
    prompt: tuple[int, ...] | None = None  # previous text's token ids; the last n_text_ctx // 2 - 1 are kept
    without_timestamps: bool = False  # prompt with <|notimestamps|>: text tokens only
    max_initial_timestamp: float | None = 1.0  # seconds; the first timestamp's upper bound (None: any)
    suppress_blank: bool = True  # no blank or <|endoftext|> as the first token
    # Joint CTC/attention decoding (asr.decoding.ctc): the CTC head's prefix scores get this weight,
    # the decoder's 1 - weight; 0: the decoder alone. The CTC head hears the spoken words, so it joins
    # transcription; translation joins the translation CTC head (ModelDims.translation_ctc_head) where
    # the model has one, and otherwise decodes with the decoder alone.
    ctc_weight: float = 0.0
    # Text ids never generated; -1 stands for asr.decoding.filters.non_speech_tokens. Also accepted as
    # Whisper's string "-1" or "-1,220". Special tokens other than eot and timestamps are always suppressed.
    suppress_tokens: tuple[int, ...] | str | None = (-1,)

    def __post_init__(self):
        suppress = self.suppress_tokens
        if isinstance(suppress, str):
            suppress = [int(t) for t in suppress.split(",") if t.strip()]
        object.__setattr__(self, "suppress_tokens", tuple(suppress or ()))
        if self.prompt is not None:
            object.__setattr__(self, "prompt", tuple(self.prompt))
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.language is not None and self.language not in LANGUAGES:
            raise ValueError(f"unknown language {self.language!r}; see asr.tokenizer.LANGUAGES")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.sample_len is not None and self.sample_len < 1:
            raise ValueError(f"sample_len must be positive, got {self.sample_len}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be positive, got {self.best_of}")
        if self.beam_size is not None and (self.beam_size < 1 or round(self.beam_size * self.patience) < 1):
            raise ValueError(f"beam_size ({self.beam_size}) and patience ({self.patience}) leave no candidates")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise ValueError(f"length_penalty (alpha) must be in [0, 1], got {self.length_penalty}")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if self.max_initial_timestamp is not None and self.max_initial_timestamp < 0:
            raise ValueError(f"max_initial_timestamp must be >= 0, got {self.max_initial_timestamp}")
        if any(t < -1 for t in self.suppress_tokens):
            raise ValueError(f"suppress_tokens must be token ids or -1, got {self.suppress_tokens}")

    @property
    def n_group(self) -> int:
        """Rows decoded per item: beams at temperature 0, samples above it."""
        if self.temperature > 0:
            return self.best_of
        return self.beam_size or 1


@dataclass(frozen=True)
class DecodingResult:
    tokens: list[int]  # generated text and timestamp ids, without the prompt and <|endoftext|>
    text: str  # the text of `tokens`, stripped of surrounding spaces
    language: str
    language_probs: dict[str, float] | None  # code -> probability, when the language was detected
    avg_logprob: float  # summed log probability / (len(tokens) + 1), <|endoftext|> counting as one
    no_speech_prob: float  # of <|nospeech|> after <|startoftranscript|>, over the whole vocabulary
    temperature: float
    compression_ratio: float  # see compression_ratio
    no_speech: bool = False  # set by decode_with_fallback: judged silence


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes: high for repetitive text (Whisper flags above 2.4)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def detect_language(model: Model, xa: Tensor, audio_mask: Tensor | None,
                    tokenizer: Tokenizer) -> tuple[list[str], list[dict[str, float]]]:
    """The most likely language per item and every language's probability, from the logits after
    ``<|startoftranscript|>`` restricted to the language tokens.

    xa : shape = (batch, n_audio_positions, n_audio_state), the encoded audio
    """
    first = detect(model, xa, audio_mask, tokenizer)
    codes = tokenizer.specials.all_language_codes
    return first.language, [dict(zip(codes, row)) for row in first.language_probs.tolist()]


def initial_tokens(tokenizer: Tokenizer, options: DecodingOptions, language: str, n_text_ctx: int) -> list[int]:
    """[<|startofprev|> prompt] + the sot sequence; the prompt keeps its last n_text_ctx // 2 - 1 tokens."""
    tokens = list(tokenizer.sot_sequence(language, options.task, timestamps=not options.without_timestamps))
    if options.prompt:
        if not all(0 <= t < tokenizer.n_vocab for t in options.prompt):
            raise ValueError(f"prompt has ids outside the vocabulary (0 .. {tokenizer.n_vocab - 1})")
        tokens = [tokenizer.sot_prev, *options.prompt[-(n_text_ctx // 2 - 1):], *tokens]
    if len(tokens) >= n_text_ctx:
        raise ValueError(f"a prompt of {len(tokens)} tokens leaves no room in {n_text_ctx} decoder positions")
    return tokens


def strategies(options: DecodingOptions, tokenizer: Tokenizer, sample_begin: int, cache: KVCache,
               generator: torch.Generator | None) -> tuple[list[LogitFilter], TokenDecoder, MaximumLikelihoodRanker]:
    """The one place that turns options into a decoding strategy."""
    filters: list[LogitFilter] = [CompleteCharacters(tokenizer, sample_begin)]
    if options.suppress_blank:
        filters.append(SuppressBlank(tokenizer, sample_begin))
    timestamps = not options.without_timestamps
    filters.append(SuppressTokens(suppressed_tokens(tokenizer, options.suppress_tokens, timestamps)))
    if timestamps:
        filters.append(ApplyTimestampRules(tokenizer, sample_begin, options.max_initial_timestamp))
    if options.temperature == 0 and options.beam_size is not None:
        decoder = BeamSearchDecoder(options.beam_size, tokenizer.eot, cache, options.patience)
    else:
        decoder = GreedyDecoder(options.temperature, tokenizer.eot, generator)
    return filters, decoder, MaximumLikelihoodRanker(options.length_penalty)


def main_loop(model: Model, xa: Tensor, audio_mask: Tensor | None, tokens: Tensor, cache: KVCache,
              filters: list[LogitFilter], decoder: TokenDecoder, n_steps: int,
              sot_index: int, no_speech: int,
              all_finished: Callable[[bool], bool] = bool,
              ctc: CTCPrefixScorer | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Generate at most ``n_steps`` tokens per row.

    tokens : shape = (n_rows, n_prompt), the prompts; xa and audio_mask have n_rows rows as well
    ctc : joint CTC/attention scoring; the decoder then chooses by, and sums, the joint scores
    all_finished : whether to stop, given whether this process's rows are done; processes that must
        make the same number of forward calls (ZeRO-3 shards the weights) agree through it
    Returns the tokens, shape = (n_rows, n_prompt + n_generated), their summed log probabilities and
    the no-speech probabilities read at the first step, each of shape (n_rows,).
    """
    sum_logprobs = torch.zeros(tokens.shape[0], device=tokens.device)
    new_tokens = tokens
    for step in range(n_steps):
        logits = model.decode(new_tokens, xa, audio_mask, cache)
        if step == 0:
            no_speech_probs = logits[:, sot_index].softmax(dim=-1)[:, no_speech]
        logits = logits[:, -1]
        for logit_filter in filters:
            logit_filter.apply(logits, tokens)
        scores = F.log_softmax(logits.float(), dim=-1)
        if ctc is not None:
            scores = ctc.score(tokens, scores)
        tokens, completed = decoder.update(tokens, scores, sum_logprobs)
        if all_finished(completed):
            break
        new_tokens = tokens[:, -1:]
    return tokens, sum_logprobs, no_speech_probs


@torch.no_grad()
def decode(model: Model, mel: Tensor, n_frames: Tensor | None, tokenizer: Tokenizer,
           options: DecodingOptions = DecodingOptions(),
           generator: torch.Generator | None = None) -> list[DecodingResult]:
    """Decode each item of a batch.

    mel : shape = (batch, n_mels, n_frames_max); see ``Model.encode``
    n_frames : shape = (batch,), each item's valid frames; None when none is padded
    generator : the random source of sampling (temperature > 0), on the model's device
    """
    xa, audio_mask = model.encode(mel, n_frames)
    return decode_features(model, xa, audio_mask, tokenizer, options, generator)


@torch.no_grad()
def decode_features(model: Model, xa: Tensor, audio_mask: Tensor | None, tokenizer: Tokenizer,
                    options: DecodingOptions = DecodingOptions(),
                    generator: torch.Generator | None = None) -> list[DecodingResult]:
    """``decode`` from encoded audio, xa : shape = (batch, n_audio_positions, n_audio_state)."""
    batch, n_group, n_text_ctx = xa.shape[0], options.n_group, model.dims.n_text_ctx
    if options.language is None:
        languages, language_probs = detect_language(model, xa, audio_mask, tokenizer)
    else:
        languages, language_probs = [options.language] * batch, [None] * batch
    prompts = [initial_tokens(tokenizer, options, language, n_text_ctx) for language in languages]
    sample_begin = len(prompts[0])
    n_steps = min(options.sample_len or n_text_ctx // 2, n_text_ctx - sample_begin)

    ctc = joint_ctc(model, xa, audio_mask, options.ctc_weight, n_group, sample_begin, tokenizer.eot, options.task)
    # One row per beam or sample, item after item.
    tokens = torch.tensor(prompts, device=xa.device).repeat_interleave(n_group, dim=0)
    xa = xa.repeat_interleave(n_group, dim=0)
    audio_mask = None if audio_mask is None else audio_mask.repeat_interleave(n_group, dim=0)
    cache = model.new_cache()
    filters, decoder, ranker = strategies(options, tokenizer, sample_begin, cache, generator)
    tokens, sum_logprobs, no_speech_probs = main_loop(model, xa, audio_mask, tokens, cache, filters, decoder,
                                                      n_steps, prompts[0].index(tokenizer.sot), tokenizer.no_speech,
                                                      ctc=ctc)

    candidates, scores = decoder.finalize(tokens.view(batch, n_group, -1), sum_logprobs.view(batch, n_group))
    generated = [[_generated_part(c, sample_begin, tokenizer.eot) for c in group] for group in candidates]
    chosen = ranker.rank(generated, scores)
    results = []
    for i, best in enumerate(chosen):
        ids, text = generated[i][best], tokenizer.decode(generated[i][best]).strip()
        results.append(DecodingResult(
            tokens=ids, text=text, language=languages[i], language_probs=language_probs[i],
            avg_logprob=scores[i][best] / (len(ids) + 1), no_speech_prob=no_speech_probs[i * n_group].item(),
            temperature=options.temperature, compression_ratio=compression_ratio(text),
        ))
    return results


def joint_ctc(model: Model, xa: Tensor, audio_mask: Tensor | None, weight: float, n_group: int,
              sample_begin: int, eot: int, task: str = "transcribe") -> CTCPrefixScorer | None:
    """The CTC prefix scorer at ``weight`` for ``n_group`` rows per item, over the CTC head for
    "transcribe" and the translation CTC head for "translate"; None (the decoder alone) at weight 0 and
    for translation by a model without a translation head.

    xa : shape = (batch, n_audio_positions, n_audio_state), one row per item (not per hypothesis)
    """
    if weight == 0:
        return None
    logits = task_ctc_logits(model, xa, audio_mask, task)
    if logits is None:
        if task == "translate":
            return None
        raise ValueError("ctc_weight > 0 needs a model with a CTC head (ModelDims.ctc_head)")
    log_probs, lengths = ctc_log_probs(logits, audio_mask)
    return CTCPrefixScorer(log_probs, lengths, n_group, sample_begin, eot, weight)


@torch.no_grad()
def greedy_decode(model: Model, xa: Tensor, audio_mask: Tensor | None, prompts: list[list[int]],
                  tokenizer: Tokenizer, max_tokens: int = 200,
                  all_finished: Callable[[bool], bool] = bool, ctc_weight: float = 0.0,
                  task: str = "transcribe") -> list[list[int]]:
    """The most likely next token, step after step, until ``<|endoftext|>`` or ``max_tokens``: the
    minimal search the trainer validates with (no other filter than keeping special tokens other than
    timestamps and ``<|endoftext|>`` out of the transcript).

    prompts : one token list per item, all of the same length (e.g. ``tokenizer.sot_sequence(...)``)
    all_finished : see ``main_loop``
    ctc_weight : joint CTC/attention scores (see ``DecodingOptions``)
    task : the prompts' task, "transcribe" or "translate", which chooses the CTC head (see ``joint_ctc``)
    Returns the generated tokens per item, without the prompt and without ``<|endoftext|>``.
    """
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("greedy_decode needs prompts of one length; group items by prompt length")
    n_steps = min(max_tokens, model.dims.n_text_ctx - len(prompts[0]))
    if n_steps <= 0:
        return [[] for _ in prompts]
    tokens = torch.tensor(prompts, dtype=torch.long, device=xa.device)
    specials = SuppressTokens(range(tokenizer.sot, tokenizer.timestamp_begin))
    ctc = joint_ctc(model, xa, audio_mask, ctc_weight, 1, len(prompts[0]), tokenizer.eot, task)
    tokens, _, _ = main_loop(model, xa, audio_mask, tokens, model.new_cache(), [specials],
                             GreedyDecoder(0.0, tokenizer.eot), n_steps, prompts[0].index(tokenizer.sot),
                             tokenizer.no_speech, all_finished, ctc)
    return [_generated_part(row, len(prompts[0]), tokenizer.eot) for row in tokens.tolist()]


def _generated_part(sequence: list[int], sample_begin: int, eot: int) -> list[int]:
    """The tokens after the prompt, up to the first <|endoftext|>."""
    generated = sequence[sample_begin:]
    return generated[: generated.index(eot)] if eot in generated else generated
