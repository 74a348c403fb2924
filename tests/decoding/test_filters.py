"""Logit filters on hand-made logits: the exact set of ids each one masks."""

import torch

from asr.decoding.filters import (
    ApplyTimestampRules,
    CompleteCharacters,
    SuppressBlank,
    SuppressTokens,
    non_speech_tokens,
    suppressed_tokens,
)

SAMPLE_BEGIN = 3  # a prompt of sot, language, task


def masked(logits: torch.Tensor) -> list[set[int]]:
    """The ids set to -inf, per row."""
    return [set(torch.nonzero(row == -torch.inf).flatten().tolist()) for row in logits]


def prompt_then(tokenizer, rows: list[list[int]]) -> torch.Tensor:
    prompt = list(tokenizer.sot_sequence("en", timestamps=True))
    assert len(prompt) == SAMPLE_BEGIN
    return torch.tensor([prompt + row for row in rows])


def text_favoured(tokenizer, n_rows: int) -> torch.Tensor:
    """Every id below the timestamps at 10, timestamps at 0: text outweighs the timestamps' sum (rule 4 idle)."""
    logits = torch.zeros(n_rows, tokenizer.n_vocab)
    logits[:, : tokenizer.timestamp_begin] = 10.0
    return logits


def test_suppress_tokens_masks_exactly_those(tokenizer):
    logits = torch.zeros(2, tokenizer.n_vocab)
    SuppressTokens([5, 7, tokenizer.sot]).apply(logits, prompt_then(tokenizer, [[], []]))
    assert masked(logits) == [{5, 7, tokenizer.sot}] * 2


def test_default_suppressed_tokens(tokenizer):
    ids = set(suppressed_tokens(tokenizer, (-1,)))
    specials = set(range(tokenizer.sot, tokenizer.timestamp_begin))  # sot, languages, tasks, ..., notimestamps
    assert specials <= ids
    assert tokenizer.eot not in ids and not any(tokenizer.specials.is_timestamp(i) for i in ids)
    text = ids - specials
    assert text == set(non_speech_tokens(tokenizer))
    assert tokenizer.encode("(")[0] in text and tokenizer.encode("[")[0] in text
    for kept in (".", ",", "?", "!", "'", "-", " the"):  # punctuation and words stay
        assert tokenizer.encode(kept)[0] not in text
    # "♪" is three byte pieces here, whose first also starts "—": not suppressed.
    assert len(tokenizer.encode("♪")) == 3 and tokenizer.encode("♪")[0] not in text
    assert set(suppressed_tokens(tokenizer, (5,))) == specials | {5}
    assert set(suppressed_tokens(tokenizer, ())) == specials
    assert set(suppressed_tokens(tokenizer, (), timestamps=False)) == set(range(tokenizer.sot, tokenizer.n_vocab))


def test_suppress_blank(tokenizer):
    space, cat = tokenizer.encode(" ")[0], tokenizer.encode("cat")[0]
    tokens = prompt_then(tokenizer, [[space, space], [space, cat], [cat, space]])
    logits = torch.zeros(3, tokenizer.n_vocab)
    SuppressBlank(tokenizer, SAMPLE_BEGIN).apply(logits, tokens)
    assert masked(logits) == [{tokenizer.eot}, set(), set()]  # the space piece itself is never masked
    first = torch.zeros(2, tokenizer.n_vocab)
    SuppressBlank(tokenizer, SAMPLE_BEGIN).apply(first, prompt_then(tokenizer, [[], []]))
    assert masked(first) == [{tokenizer.eot}] * 2


def test_first_token_is_an_early_timestamp(tokenizer):
    begin, n_vocab = tokenizer.timestamp_begin, tokenizer.n_vocab
    logits = text_favoured(tokenizer, 1)
    ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, max_initial_timestamp=1.0).apply(logits, prompt_then(tokenizer, [[]]))
    allowed = set(range(begin, begin + 51))  # <|0.00|> .. <|1.00|>
    assert masked(logits) == [set(range(n_vocab)) - allowed]
    logits = text_favoured(tokenizer, 1)
    ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, max_initial_timestamp=None).apply(logits, prompt_then(tokenizer, [[]]))
    assert masked(logits) == [set(range(begin))]


def test_timestamp_pairs_and_order(tokenizer):
    begin, eot, n_vocab = tokenizer.timestamp_begin, tokenizer.eot, tokenizer.n_vocab
    text = tokenizer.encode("cat")[0]
    rows = [
        [text, text, text],  # no timestamp: nothing
        [begin + 5, text, text],  # inside a segment from 0.10: its end is after 0.10
        [begin + 5, text, begin + 9],  # a segment just closed at 0.18: the next starts there or later, or the end
        [text, begin + 5, begin + 9],  # two in a row: text or the end
        [text, text, begin + 7],  # first timestamp after text: closing, from 0.14 on
    ]
    logits = text_favoured(tokenizer, len(rows))
    ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, 1.0).apply(logits, prompt_then(tokenizer, rows))
    timestamps = set(range(begin, n_vocab))
    assert masked(logits) == [
        set(),
        set(range(begin, begin + 6)),
        set(range(eot)) | set(range(begin, begin + 9)),
        timestamps,
        set(range(eot)) | set(range(begin, begin + 7)),
    ]
    lone = text_favoured(tokenizer, 1)  # a lone first timestamp opens a segment: text or the end
    ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, 1.0).apply(lone, prompt_then(tokenizer, [[begin]]))
    assert masked(lone) == [timestamps]


def test_timestamp_forced_when_their_sum_beats_every_text_token(tokenizer, scripted):
    begin, n_vocab = tokenizer.timestamp_begin, tokenizer.n_vocab
    cat, dog = tokenizer.encode("cat")[0], tokenizer.encode("dog")[0]
    # Row 0: cat 0.2, dog 0.1, seven timestamps 0.1 each (0.7 > 0.2): a timestamp is forced.
    # Row 1: cat 0.5, dog 0.2, three timestamps 0.1 each (0.3 < 0.5): free.
    logits = torch.stack([
        scripted.logits_of({cat: 0.2, dog: 0.1, **{begin + 10 + k: 0.1 for k in range(7)}}, n_vocab),
        scripted.logits_of({cat: 0.5, dog: 0.2, **{begin + 10 + k: 0.1 for k in range(3)}}, n_vocab),
    ])
    before = masked(logits)
    ApplyTimestampRules(tokenizer, SAMPLE_BEGIN, 1.0).apply(logits, prompt_then(tokenizer, [[begin, cat]] * 2))
    assert masked(logits)[0] == before[0] | set(range(begin + 1))  # all below timestamps, and <|0.00|> (rule 3)
    assert masked(logits)[1] == before[1] | {begin}


def test_complete_characters_allows_only_the_continuation_an_open_character_needs(tokenizer):
    n_vocab, begin = tokenizer.n_vocab, tokenizer.timestamp_begin
    lead, second, third = tokenizer.encode("♪")  # E2 99 AA, three byte pieces here
    cat = tokenizer.encode("cat")[0]
    single = {t: data[0] for t, data in enumerate(tokenizer.token_bytes()) if len(data) == 1}
    continuation = {t for t, byte in single.items() if 0x80 <= byte <= 0xBF}
    never = {t for t, byte in single.items() if byte in (0xC0, 0xC1) or byte >= 0xF5}
    assert len(continuation) == 64 and len(never) == 13 and {second, third} <= continuation
    between = continuation | never  # where every character is whole
    inside = set(range(n_vocab)) - continuation  # where one is open: its continuation only
    logits = torch.zeros(1, n_vocab)
    CompleteCharacters(tokenizer, SAMPLE_BEGIN).apply(logits, prompt_then(tokenizer, [[]]))
    assert masked(logits) == [between]  # nothing generated yet
    rows = [[cat], [lead], [lead, second], [lead, second, third], [begin, lead], [lead, second, third, begin],
            [third, third, third, cat, cat, lead, second]]  # whole characters before: what it reads is the last four
    rows = [[cat] * (7 - len(row)) + row for row in rows]
    logits = torch.zeros(len(rows), n_vocab)
    CompleteCharacters(tokenizer, SAMPLE_BEGIN).apply(logits, prompt_then(tokenizer, rows))
    assert masked(logits) == [between, inside, inside, between, inside, between, inside]
    # A two-byte character ("Л", D0 9B) owes one byte after its first, none after its second.
    d0, x9b = tokenizer.encode("Л")
    logits = torch.zeros(2, n_vocab)
    CompleteCharacters(tokenizer, SAMPLE_BEGIN).apply(logits, prompt_then(tokenizer, [[cat, d0], [d0, x9b]]))
    assert masked(logits) == [inside, between]
