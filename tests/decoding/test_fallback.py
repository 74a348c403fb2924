"""Temperature fallback over a scripted model that answers differently on each pass."""

import pytest
import torch

from asr.decoding import DecodingOptions, DecodingResult, decode_with_fallback
from asr.decoding.fallback import is_silence, needs_fallback

PLAIN = dict(language="en", without_timestamps=True, suppress_blank=False, suppress_tokens=(), sample_len=30)
PROMPT_LEN = 4


def result(compression_ratio=1.0, avg_logprob=-0.1, no_speech_prob=0.1) -> DecodingResult:
    return DecodingResult(tokens=[], text="", language="en", language_probs=None, avg_logprob=avg_logprob,
                          no_speech_prob=no_speech_prob, temperature=0.0, compression_ratio=compression_ratio)


def test_fallback_decision():
    thresholds = dict(compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6)
    assert not needs_fallback(result(), **thresholds)
    assert needs_fallback(result(compression_ratio=2.5), **thresholds)  # too repetitive
    assert needs_fallback(result(avg_logprob=-1.5, no_speech_prob=0.5), **thresholds)  # too unlikely
    assert not needs_fallback(result(avg_logprob=-1.5, no_speech_prob=0.7), **thresholds)  # silence
    assert is_silence(result(avg_logprob=-1.5, no_speech_prob=0.7), -1.0, 0.6)
    # Likely text is not silence, whatever <|nospeech|> says; a repetitive one is decoded again.
    assert needs_fallback(result(compression_ratio=2.5, avg_logprob=-0.5, no_speech_prob=0.7), **thresholds)
    off = dict(compression_ratio_threshold=None, logprob_threshold=None, no_speech_threshold=None)
    assert not needs_fallback(result(compression_ratio=9.0, avg_logprob=-9.0), **off)
    assert not is_silence(result(avg_logprob=-1.5, no_speech_prob=0.7), None, 0.6)


def test_only_failing_items_are_decoded_again_hotter(tokenizer, scripted):
    A, B, C, D, E = list(dict.fromkeys(tokenizer.encode(" the quick brown fox jumps over")))[:5]
    eot, n_vocab = tokenizer.eot, tokenizer.n_vocab
    flat = {A: 0.2, B: 0.2, C: 0.2, D: 0.2, E: 0.2}  # every step log(0.2) = -1.6: unlikely text
    no_speech = {0: 0.1, 1: 0.1, 2: 0.9, 3: 0.1}

    def next_token(item, generated, first_pass):
        if item == 0:  # likely, varied: accepted at once
            return {(): {A: 0.95, C: 0.05}, (A,): {B: 0.95, C: 0.05}}.get(generated, {eot: 0.95, C: 0.05})
        if item == 1:  # repeats A until the length limit on the first pass; on the second, B and the end
            return {A: 0.99, eot: 0.01} if first_pass else ({B: 1.0} if not generated else {eot: 1.0})
        if item == 2:  # silence: <|nospeech|> likely, the text unlikely
            return flat if not generated else {eot: 0.3, A: 0.175, B: 0.175, C: 0.175, D: 0.175}
        return flat  # unlikely at every temperature

    def script(item, history):
        if len(history) < PROMPT_LEN:
            return scripted.logits_of({tokenizer.no_speech: no_speech[item], A: 1 - no_speech[item]}, n_vocab)
        return scripted.logits_of(next_token(item, history[PROMPT_LEN:], model.passes == 1), n_vocab)

    model = scripted.Model(n_vocab, script)
    results = decode_with_fallback(model, torch.arange(4.0).view(4, 1, 1), None, tokenizer, DecodingOptions(**PLAIN),
                                   temperatures=(0.0, 0.2, 0.4), generator=torch.Generator().manual_seed(0))
    assert [len(cache.histories) for cache in model.caches] == [4, 2, 1]  # items 1 and 3, then 3 alone
    assert [r.temperature for r in results] == [0.0, 0.2, 0.0, 0.4]
    assert [r.no_speech for r in results] == [False, False, True, False]
    assert results[0].tokens == [A, B] and results[1].tokens == [B]
    assert results[1].compression_ratio < 2.4 and results[1].avg_logprob == pytest.approx(0.0)
    assert results[2].no_speech_prob == pytest.approx(0.9) and results[2].avg_logprob < -1.0
    assert results[3].avg_logprob < -1.0  # the last temperature's result stands
