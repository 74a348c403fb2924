"""``decode`` end to end over a scripted model: the main loop, the strategies it wires, the results."""

import math

import pytest
import torch
from whisper.utils import compression_ratio as whisper_compression_ratio  # test-only reference

from asr.decoding import DecodingOptions, compression_ratio, decode, detect_language

PLAIN = dict(language="en", without_timestamps=True, suppress_blank=False, suppress_tokens=())
PROMPT_LEN = 4  # sot, <|en|>, <|transcribe|>, <|notimestamps|>


def mel(*items: int) -> torch.Tensor:
    """The scripted model's input: each item's number."""
    return torch.tensor(items, dtype=torch.float32).view(-1, 1, 1)


def words(tokenizer, n: int) -> list[int]:
    ids = list(dict.fromkeys(tokenizer.encode(" the quick brown fox jumps over the lazy dog")))
    assert len(ids) >= n
    return ids[:n]


def test_beam_search_finds_what_greedy_misses(tokenizer, scripted):
    A, B, C = words(tokenizer, 3)
    eot, n_vocab = tokenizer.eot, tokenizer.n_vocab
    # Item 0: greedy takes A (0.5) and then ends (0.3): 0.15; B (0.4) then the end (0.9) is 0.36.
    tables = {
        0: {(): {A: 0.5, B: 0.4, eot: 0.1}, (A,): {A: 0.25, B: 0.25, C: 0.2, eot: 0.3}, (B,): {A: 0.05, C: 0.05, eot: 0.9}},
        1: {(): {B: 0.6, C: 0.4}, (B,): {eot: 1.0}, (C,): {eot: 1.0}},
    }

    def script(item, history):
        generated = history[PROMPT_LEN:]
        if len(history) < PROMPT_LEN:  # the prompt's positions; the no-speech probability is read at sot's
            return scripted.logits_of({tokenizer.no_speech: 0.2, A: 0.8}, n_vocab)
        return scripted.logits_of(tables[item].get(generated, {eot: 1.0}), n_vocab)

    greedy = decode(scripted.Model(n_vocab, script), mel(0, 1), None, tokenizer, DecodingOptions(**PLAIN))
    assert [r.tokens for r in greedy] == [[A], [B]]
    assert greedy[0].avg_logprob == pytest.approx(math.log(0.15) / 2)
    model = scripted.Model(n_vocab, script)
    beam = decode(model, mel(0, 1), None, tokenizer, DecodingOptions(**PLAIN, beam_size=2))
    assert [r.tokens for r in beam] == [[B], [B]]
    assert [r.avg_logprob for r in beam] == pytest.approx([math.log(0.36) / 2, math.log(0.6) / 2])
    assert [r.no_speech_prob for r in beam] == pytest.approx([0.2, 0.2])
    assert beam[0].text == tokenizer.decode([B]).strip()
    # Two rows per item; the first step keeps each item's first (identical) beam twice. The scripted
    # cache follows the reorders: had they been skipped, its histories would disagree with the tokens.
    assert model.batch_sizes == [4, 4] and model.caches[0].reorders[0] == [0, 0, 2, 2]
    assert len(model.caches[0].reorders) == 2


def test_length_limit_when_the_end_never_comes(tokenizer, scripted):
    A = words(tokenizer, 1)[0]

    def script(item, history):
        return scripted.logits_of({A: 1.0}, tokenizer.n_vocab)

    for extra in ({}, {"beam_size": 2}):
        results = decode(scripted.Model(tokenizer.n_vocab, script), mel(0), None, tokenizer,
                         DecodingOptions(**PLAIN, sample_len=5, **extra))
        assert results[0].tokens == [A] * 5
    default = decode(scripted.Model(tokenizer.n_vocab, script, n_text_ctx=14), mel(0), None, tokenizer,
                     DecodingOptions(**PLAIN))
    assert default[0].tokens == [A] * 7  # sample_len None: n_text_ctx // 2
    # The context is the other limit: 12 positions, 4 of them the prompt (the model asserts it is never overrun).
    short = decode(scripted.Model(tokenizer.n_vocab, script, n_text_ctx=12), mel(0), None, tokenizer,
                   DecodingOptions(**PLAIN, sample_len=100))
    assert short[0].tokens == [A] * 8
    with pytest.raises(ValueError, match="no room"):
        decode(scripted.Model(tokenizer.n_vocab, script, n_text_ctx=4), mel(0), None, tokenizer, DecodingOptions(**PLAIN))


def test_language_detection_prompt_and_no_speech(tokenizer, scripted):
    A, B = words(tokenizer, 2)
    en, de = tokenizer.language_token("en"), tokenizer.language_token("de")
    sot, eot, n_vocab = tokenizer.sot, tokenizer.eot, tokenizer.n_vocab
    previous = tuple(range(50, 90))  # 40 ids of previous text: the last 32 // 2 - 1 = 15 are kept
    prompt_len = 1 + 15 + 4

    def script(item, history):
        if history == (sot,):  # language detection
            return scripted.logits_of([{en: 0.1, de: 0.3, eot: 0.6}, {en: 0.4, de: 0.1, eot: 0.5}][item], n_vocab)
        if history[-1] == sot:  # the main decode's first step, after the previous text
            return scripted.logits_of({tokenizer.no_speech: [0.125, 0.5][item], A: 0.5, eot: [0.375, 0.0][item]}, n_vocab)
        if len(history) == prompt_len:
            return scripted.logits_of({A if de in history else B: 1.0}, n_vocab)
        return scripted.logits_of({eot: 1.0}, n_vocab)

    codes, probs = detect_language(scripted.Model(n_vocab, script), mel(0, 1), None, tokenizer)
    assert codes == ["de", "en"]
    assert probs[0] == pytest.approx({"en": 0.25, "de": 0.75}) and probs[1] == pytest.approx({"en": 0.8, "de": 0.2})

    model = scripted.Model(n_vocab, script, n_text_ctx=32)
    options = DecodingOptions(**{**PLAIN, "language": None}, prompt=list(previous))
    results = decode(model, mel(0, 1), None, tokenizer, options)
    assert [r.language for r in results] == ["de", "en"] and [r.tokens for r in results] == [[A], [B]]
    assert results[1].language_probs == pytest.approx({"en": 0.8, "de": 0.2})
    assert [r.no_speech_prob for r in results] == pytest.approx([0.125, 0.5])  # read at sot, not at position 0
    tail = [tokenizer.transcribe, tokenizer.no_timestamps]
    assert model.caches[0].histories[0][:prompt_len] == [tokenizer.sot_prev, *previous[-15:], sot, de, *tail]
    assert model.caches[0].histories[1][:prompt_len] == [tokenizer.sot_prev, *previous[-15:], sot, en, *tail]

    given = scripted.Model(n_vocab, script, n_text_ctx=32)
    results = decode(given, mel(0), None, tokenizer, DecodingOptions(**{**PLAIN, "language": "de"}, prompt=previous))
    assert given.uncached_calls == 0 and results[0].language == "de" and results[0].language_probs is None


def test_default_options_wire_the_timestamp_rules(tokenizer, scripted):
    A = words(tokenizer, 1)[0]
    begin = tokenizer.timestamp_begin

    def script(item, history):
        logits = torch.zeros(tokenizer.n_vocab)  # every timestamp at 0: together e^7.3
        logits[A] = 7.0
        logits[tokenizer.eot] = 8.0 if len(history) >= 3 + 3 else 0.0  # the end likely after three tokens
        return logits

    results = decode(scripted.Model(tokenizer.n_vocab, script), mel(0), None, tokenizer, DecodingOptions(language="en"))
    # 1. a timestamp first (the first of those allowed, all at 0); 2. text after it (the timestamps are
    # masked); 3-4. the timestamps' sum beats A: a timestamp, after <|0.00|>: <|0.02|>; 2. then text is
    # masked and the end, now likely, beats the timestamps' sum.
    assert results[0].tokens == [begin, A, begin + 1]
    assert tokenizer.decode_with_timestamps(results[0].tokens) == f"<|0.00|>{tokenizer.decode([A])}<|0.02|>"


def test_suppress_blank_is_wired(tokenizer, scripted):
    A = words(tokenizer, 1)[0]

    def script(item, history):
        return scripted.logits_of({tokenizer.eot: 0.6, A: 0.4} if len(history) == PROMPT_LEN else {tokenizer.eot: 1.0},
                                  tokenizer.n_vocab)

    for suppress_blank, expected in ((True, [A]), (False, [])):
        options = DecodingOptions(**{**PLAIN, "suppress_blank": suppress_blank})
        assert decode(scripted.Model(tokenizer.n_vocab, script), mel(0), None, tokenizer, options)[0].tokens == expected


def test_best_of_samples_and_ranks(tokenizer, scripted):
    A, B, C, D = words(tokenizer, 4)
    table = {(): {A: 0.5, B: 0.5}, (A,): {tokenizer.eot: 1.0}, (B,): {C: 0.9, D: 0.1}}

    def script(item, history):
        return scripted.logits_of(table.get(history[PROMPT_LEN:], {tokenizer.eot: 1.0}), tokenizer.n_vocab)

    model = scripted.Model(tokenizer.n_vocab, script)
    options = DecodingOptions(**PLAIN, temperature=1.0, best_of=8, beam_size=3)  # beam_size is for temperature 0
    results = decode(model, mel(0, 1), None, tokenizer, options, generator=torch.Generator().manual_seed(0))
    assert model.batch_sizes[0] == 16
    # [B, C]: log(0.45) / 2 = -0.40 beats [A]: log(0.5) / 1 = -0.69 and [B, D]: log(0.05) / 2 = -1.5.
    assert [r.tokens for r in results] == [[B, C], [B, C]]
    assert results[0].temperature == 1.0 and results[0].avg_logprob == pytest.approx(math.log(0.45) / 3)


def test_joint_ctc_decoding_stops_a_loop_the_ctc_head_does_not_hear(tokenizer, scripted):
    A, B = words(tokenizer, 2)
    n_ctc = tokenizer.eot  # the CTC classes are the text pieces; the blank comes after them

    def script(item, history):  # the decoder loops: after A it always prefers another A
        return scripted.logits_of({A: 0.6, B: 0.1, tokenizer.eot: 0.3}, tokenizer.n_vocab)

    class WithCTC(scripted.Model):
        ctc = True

        def ctc_logits(self, xa):  # 6 frames hearing "A" once: blank, A, A, blank, blank, blank
            logits = torch.zeros(xa.shape[0], 6, n_ctc + 1)
            logits[:, [0, 3, 4, 5], n_ctc] = 10.0
            logits[:, [1, 2], A] = 10.0
            return logits

    attention_only = decode(WithCTC(tokenizer.n_vocab, script), mel(0), None, tokenizer,
                            DecodingOptions(**PLAIN, sample_len=6))
    assert attention_only[0].tokens == [A] * 6
    for beam_size in (None, 3):
        joint = decode(WithCTC(tokenizer.n_vocab, script), mel(0, 1), None, tokenizer,
                       DecodingOptions(**PLAIN, sample_len=6, ctc_weight=0.3, beam_size=beam_size))
        assert [r.tokens for r in joint] == [[A], [A]]
    # Translation is not what the CTC head hears: it decodes with the decoder alone...
    translated = decode(WithCTC(tokenizer.n_vocab, script), mel(0), None, tokenizer,
                        DecodingOptions(**PLAIN, sample_len=6, ctc_weight=0.3, task="translate"))
    assert translated[0].tokens == [A] * 6

    class WithTranslationCTC(WithCTC):
        ctc_translation = True

        def translation_ctc_logits(self, xa, audio_mask=None):  # the English of the heard word: "B", once
            logits = torch.zeros(xa.shape[0], 6, n_ctc + 1)
            logits[:, [0, 3, 4, 5], n_ctc] = 10.0
            logits[:, [1, 2], B] = 10.0
            return logits

    # ... unless the model has a translation CTC head, which joins translation (and only translation).
    for task, expected in (("translate", [B]), ("transcribe", [A])):
        joint = decode(WithTranslationCTC(tokenizer.n_vocab, script), mel(0), None, tokenizer,
                       DecodingOptions(**PLAIN, sample_len=6, ctc_weight=0.3, task=task))
        assert joint[0].tokens == expected, task
    with pytest.raises(ValueError, match="CTC head"):
        no_head = scripted.Model(tokenizer.n_vocab, script)
        no_head.ctc = None
        decode(no_head, mel(0), None, tokenizer, DecodingOptions(**PLAIN, ctc_weight=0.3))


def test_a_character_begun_in_byte_pieces_is_finished(tokenizer, scripted):
    lead, second, third = tokenizer.encode("♪")  # E2 99 AA
    cat, eot, n_vocab = tokenizer.encode("cat")[0], tokenizer.eot, tokenizer.n_vocab
    other = tokenizer.encode("\u2014")[2]  # "—" is E2 80 94: another continuation byte
    # After the first byte the model would rather write "cat" or end; after the second, end.
    table = {(): {lead: 1.0}, (lead,): {cat: 0.6, eot: 0.2, second: 0.15, other: 0.05},
             (lead, second): {eot: 0.7, third: 0.2, cat: 0.1}, (lead, second, third): {eot: 1.0}}

    def script(item, history):
        return scripted.logits_of(table.get(history[PROMPT_LEN:], {eot: 1.0}), n_vocab)

    result = decode(scripted.Model(n_vocab, script), mel(0), None, tokenizer, DecodingOptions(**PLAIN))[0]
    assert result.tokens == [lead, second, third] and result.text == "♪"


def test_compression_ratio():
    for text in ("", "hello world", "the the the the the the the the the the the the", "Grüße aus Köln, 東京"):
        assert compression_ratio(text) == whisper_compression_ratio(text)
    assert compression_ratio("the the the the the the the the the the the the the") > 2.4
    assert compression_ratio("The quick brown fox jumps over the lazy dog.") < 2.4


def test_options_are_validated_once():
    assert DecodingOptions(suppress_tokens="-1,220").suppress_tokens == (-1, 220)
    assert DecodingOptions(suppress_tokens=None).suppress_tokens == ()
    assert DecodingOptions(prompt=[1, 2]).prompt == (1, 2)
    assert DecodingOptions(temperature=0.5, best_of=3, beam_size=5).n_group == 3
    assert DecodingOptions(beam_size=5).n_group == 5 and DecodingOptions().n_group == 1
    for bad in ({"task": "summarise"}, {"language": "xx"}, {"temperature": -1}, {"sample_len": 0}, {"best_of": 0},
                {"beam_size": 0}, {"beam_size": 2, "patience": 0.1}, {"length_penalty": 2.0},
                {"max_initial_timestamp": -1.0}, {"suppress_tokens": (-2,)}, {"ctc_weight": 1.0}, {"ctc_weight": -0.1}):
        with pytest.raises(ValueError):
            DecodingOptions(**bad)


def test_greedy_decode_keeps_specials_out_and_stops_when_every_process_agrees(tokenizer, scripted):
    from asr.decoding.decode import greedy_decode

    A, B = words(tokenizer, 2)
    eot, n_vocab = tokenizer.eot, tokenizer.n_vocab
    # The special <|translate|> is the likeliest token everywhere; greedy must pass it over.
    # Item 0 says A then ends; item 1 says B B B ... until the step budget.
    def script(item, history):
        generated = history[PROMPT_LEN:]
        if item == 0 and generated:
            return scripted.logits_of({eot: 0.9, tokenizer.translate: 0.1}, n_vocab)
        return scripted.logits_of({tokenizer.translate: 0.6, (A if item == 0 else B): 0.4}, n_vocab)

    model = scripted.Model(n_vocab, script)
    prompts = [list(tokenizer.sot_sequence("en", "transcribe"))] * 2
    assert greedy_decode(model, mel(0, 1), None, prompts, tokenizer, max_tokens=5) == [[A], [B] * 5]
    # A process whose own rows are done keeps stepping while another one's are not.
    calls = []
    agree = lambda done: calls.append(done) or len(calls) == 3  # noqa: E731
    assert greedy_decode(model, mel(0, 0), None, prompts, tokenizer, max_tokens=5, all_finished=agree) == [[A]] * 2
    assert calls == [False, True, True] and model.batch_sizes[-3:] == [2, 2, 2]
    with pytest.raises(ValueError, match="one length"):
        greedy_decode(model, mel(0, 1), None, [prompts[0], prompts[0][:-1]], tokenizer)
