"""Logit filters: rules that mask the next token's logits before a token decoder chooses.

Each filter has one method, ``apply(logits, tokens)``, which writes ``-inf`` into ``logits`` in place:

    logits : shape = (n_rows, n_vocab), the next token's logits, one row per hypothesis
    tokens : shape = (n_rows, n_tokens), every token so far, the prompt included

``sample_begin`` is the prompt's length: the index in ``tokens`` of the first generated token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from asr.tokenizer import TIME_PRECISION, Tokenizer, per_tokenizer

# Symbols that mark non-speech or speaker annotations ("♪♪", "( MUSIC )", "[DAVID]"), after Whisper's
# ``non_speech_tokens``; basic punctuation (, . ? ! ' -) stays allowed.
NON_SPEECH_SYMBOLS = (
    list('"#()*+/:;<=>@[\\]^_`{|}~「」『』♩♪♫♬♭♮♯')
    + "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
WORD_INITIAL = (" -", " '")  # hyphens and quotes stay allowed inside words, not at a word's start


class LogitFilter(Protocol):
    def apply(self, logits: Tensor, tokens: Tensor) -> None: ...


def non_speech_tokens(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The text ids that spell a whole ``NON_SPEECH_SYMBOLS`` entry, bare or after a space, or a
    ``WORD_INITIAL`` one.

    Unlike Whisper's byte-level BPE, a SentencePiece tokenizer spells a rare symbol as byte pieces, and
    its first byte piece is shared with ordinary characters (U+2014 "—" starts with the same byte as "♪"),
    so only symbols that are a single piece are suppressed.
    """
    spellings = [*NON_SPEECH_SYMBOLS, *(" " + symbol for symbol in NON_SPEECH_SYMBOLS), *WORD_INITIAL]
    return tuple(sorted({ids[0] for ids in map(tokenizer.encode, spellings) if len(ids) == 1}))


def suppressed_tokens(tokenizer: Tokenizer, requested: Iterable[int], timestamps: bool = True) -> tuple[int, ...]:
    """``requested`` ids (-1 standing for ``non_speech_tokens``) plus every special token that is neither
    ``<|endoftext|>`` nor a timestamp: sot, languages, tasks, sot_lm, sot_prev, nospeech, notimestamps;
    and the timestamps too unless ``timestamps``. (The no-speech probability is read before the filters.)"""
    ids = set(range(tokenizer.sot, tokenizer.timestamp_begin if timestamps else tokenizer.n_vocab))
    for token in requested:
        if token == -1:
            ids.update(non_speech_tokens(tokenizer))
        else:
            ids.add(token)
    return tuple(sorted(ids))


class SuppressBlank:
    """No blank transcript: ``<|endoftext|>`` is masked while every generated token is a space (or
    none is generated yet).

    Whisper masks the space token itself at the first position. A SentencePiece tokenizer, though,
    starts many words with a lone "▁" piece (" cat" -> "▁", "cat"), so masking it would force an
    unseen spelling of the first word; masking the end while the text is blank is what matters.
    """

    def __init__(self, tokenizer: Tokenizer, sample_begin: int):
        self.blank = torch.tensor(tokenizer.encode(" "))
        self.eot = tokenizer.eot
        self.sample_begin = sample_begin

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        generated = tokens[:, self.sample_begin:]
        blank = torch.isin(generated, self.blank.to(tokens.device)).all(dim=1)
        logits[blank, self.eot] = -torch.inf


class SuppressTokens:
    """Never these ids."""

    def __init__(self, token_ids: Iterable[int]):
        self.token_ids = list(token_ids)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        logits[:, self.token_ids] = -torch.inf


class CompleteCharacters:
    """Text that is UTF-8 throughout: after a byte that starts a character of several bytes come the
    continuation bytes it needs and nothing else (no other piece, no ``<|endoftext|>``, no timestamp);
    a continuation byte never comes where no character is open.

    A small SentencePiece vocabulary spells its rarer characters as UTF-8 byte pieces ("П" and "Л" in
    the demo vocabulary are two each). A decoder that writes the first byte of "Л" and then the piece
    "о" leaves "\ufffdо" in the transcript, a word lost to a character it had begun (one to three test
    transcripts per demo model); with this filter the search finishes the character with its likeliest
    continuation. Run it before ``ApplyTimestampRules``, whose rule 4 then weighs the timestamps that
    may come. The structure is checked, lead and continuation bytes; overlong forms are not.
    """

    def __init__(self, tokenizer: Tokenizer, sample_begin: int):
        self.table = _utf8_table(tokenizer)
        self.forbidden = self.table.forbidden  # moved to the logits' device on first use
        self.sample_begin = sample_begin

    def open_bytes(self, tokens: Tensor) -> list[int]:
        """Per row, the continuation bytes its generated text still owes (0: every character is whole).
        Read from the last tokens: a character spans at most 4 bytes, each token holds at least one."""
        table, owed = self.table, []
        for row in tokens[:, max(self.sample_begin, tokens.shape[1] - 4):].tolist():
            continued, state = 0, 0
            for token in reversed(row):
                opened = table.opens[token]
                if opened is None:  # continuation bytes only
                    continued += table.n_bytes[token]
                    continue
                state = max(opened - continued, 0)
                break
            owed.append(state)
        return owed

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if self.forbidden.device != logits.device:
            self.forbidden = self.forbidden.to(logits.device)
        owed = torch.tensor(self.open_bytes(tokens), device=logits.device)
        logits.masked_fill_(self.forbidden[owed], -torch.inf)


@dataclass(frozen=True)
class _UTF8Table:
    forbidden: Tensor  # (4, n_vocab) bool: [k, t] whether token t is masked while k continuation bytes are owed
    opens: list[int | None]  # per token, the continuation bytes owed after it; None: it holds only those
    n_bytes: list[int]  # per token, its bytes (specials: 1, a whole token of their own)


def _utf8_lead(byte: int) -> int | None:
    """The continuation bytes after ``byte`` (0 for ASCII); -1 for a continuation byte; None: never UTF-8."""
    if byte < 0x80:
        return 0
    if byte < 0xC0:
        return -1
    if 0xC2 <= byte <= 0xDF:
        return 1
    if 0xE0 <= byte <= 0xEF:
        return 2
    if 0xF0 <= byte <= 0xF4:
        return 3
    return None


@per_tokenizer
def _utf8_table(tokenizer: Tokenizer) -> _UTF8Table:
    allowed = torch.zeros(4, tokenizer.n_vocab, dtype=torch.bool)
    allowed[0, tokenizer.n_text:] = True  # special tokens only between characters
    opens: list[int | None] = [0] * tokenizer.n_vocab
    n_bytes = [1] * tokenizer.n_vocab
    for token, data in enumerate(tokenizer.token_bytes()):
        n_bytes[token] = len(data)
        if not data:  # <unk>: nothing written, so nothing opened or closed either
            allowed[0, token] = True
            continue
        kinds = [_utf8_lead(byte) for byte in data]
        for owed in range(4):
            state = owed
            for kind in kinds:
                if state > 0 and kind == -1:
                    state -= 1
                elif state == 0 and kind is not None and kind >= 0:
                    state = kind
                else:
                    break
            else:
                allowed[owed, token] = True
        starts = [i for i, kind in enumerate(kinds) if kind != -1]
        if starts:
            last = starts[-1]
            opens[token] = max((kinds[last] or 0) - (len(kinds) - 1 - last), 0)
        else:
            opens[token] = None
    return _UTF8Table(~allowed, opens, n_bytes)


class ApplyTimestampRules:
    """Whisper's timestamp grammar: ``<|t0|> text <|t1|><|t1'|> text <|t2|> ... <|endoftext|>``.

    1. The first generated token is a timestamp, at most ``max_initial_timestamp`` seconds (None: any).
    2. Timestamps come in pairs (a segment's end, the next one's start), except the last before
       ``<|endoftext|>``: after text then a timestamp comes a timestamp or the end; after two
       timestamps in a row (or the first one) comes text or the end.
    3. Timestamps never decrease, and a segment lasts at least one step: its end is after its start,
       while the next start may equal the previous end.
    4. When the timestamps' summed probability beats every other single token, a timestamp it is.

    Rule 3 finds the last timestamp as the largest one generated, which rule 3 itself makes the same.
    """

    def __init__(self, tokenizer: Tokenizer, sample_begin: int, max_initial_timestamp: float | None):
        self.eot = tokenizer.eot
        self.timestamp_begin = tokenizer.timestamp_begin
        self.sample_begin = sample_begin
        self.max_initial = None
        if max_initial_timestamp is not None:
            self.max_initial = self.timestamp_begin + round(max_initial_timestamp / TIME_PRECISION)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        begin = self.timestamp_begin
        generated = tokens[:, self.sample_begin:]
        if generated.shape[1] == 0:
            logits[:, :begin] = -torch.inf  # rule 1
            if self.max_initial is not None:
                logits[:, self.max_initial + 1:] = -torch.inf
        else:
            is_timestamp = generated >= begin
            last = is_timestamp[:, -1]
            penultimate = is_timestamp[:, -2] if generated.shape[1] > 1 else torch.ones_like(last)
            logits[last & penultimate, begin:] = -torch.inf  # rule 2: text or the end
            closing = last & ~penultimate
            logits[closing, :self.eot] = -torch.inf  # rule 2: a timestamp or the end
            # Rule 3: rows without a timestamp get floor = begin, an empty range.
            latest = generated.masked_fill(~is_timestamp, begin - 1).max(dim=1).values
            floor = latest + (~closing).long()
            ids = torch.arange(logits.shape[1], device=logits.device)
            logits.masked_fill_((ids >= begin) & (ids < floor[:, None]), -torch.inf)
        logprobs = F.log_softmax(logits.float(), dim=-1)  # rule 4
        timestamp_logprob = logprobs[:, begin:].logsumexp(dim=-1)
        text_logprob = logprobs[:, :begin].max(dim=-1).values
        logits[timestamp_logprob > text_logprob, :begin] = -torch.inf
