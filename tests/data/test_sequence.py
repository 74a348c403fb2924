import random

import pytest
from lhotse import MonoCut, SupervisionSegment
from lhotse.testing.dummies import dummy_recording

from asr.config import DataConfig
from asr.data.sequence import IGNORE, EmptyTranscript, SequenceTooLong, cut_to_example, manifest_texts
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = [" Heute sieht die Katze den Hund.", " Today the cat sees the dog.", " Le chat dort.", " Hallo Welt."] * 30


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_sentencepiece(train_sentencepiece(TEXTS, vocab_size=400))


def make_cut(duration, segments, custom=None) -> MonoCut:
    recording = dummy_recording(0, duration=duration)
    supervisions = [
        SupervisionSegment(id=f"s{i}", recording_id=recording.id, start=start, duration=length, text=text,
                           language=language, custom={"translation": translation} if translation else None)
        for i, (start, length, text, language, translation) in enumerate(segments)
    ]
    return MonoCut(id="cut", start=0, duration=duration, channel=0, recording=recording,
                   supervisions=supervisions, custom=custom)


def options(**rates) -> DataConfig:
    base = dict(timestamp_rate=0.0, prompt_rate=0.0, translate_rate=0.0)
    return DataConfig(**{**base, **rates})


def test_plain_transcription(tok):
    cut = make_cut(3.0, [(0.5, 2.0, "Hallo Welt.", "de", None)])
    example = cut_to_example(cut, tok, options(), random.Random(0))
    text = tok.encode(" Hallo Welt.")
    sequence = [tok.sot, tok.language_token("de"), tok.transcribe, tok.no_timestamps, *text, tok.eot]
    assert example.tokens == sequence[:-1]
    # no loss on sot (not a target), the task and <|notimestamps|>; the language and the text are learned
    assert example.labels == [tok.language_token("de"), IGNORE, IGNORE, *text, tok.eot]
    assert example.ctc_targets == text
    assert (example.task, example.language) == ("transcribe", "de")


def test_timestamps_around_each_segment_relative_to_the_cut(tok):
    cut = make_cut(6.0, [(0.0, 2.4, "Hallo Welt.", "de", None), (2.61, 2.38, "Le chat dort.", "de", None)])
    example = cut_to_example(cut, tok, options(timestamp_rate=1.0), random.Random(0))
    ts = tok.specials.timestamp_token
    body = [ts(0.0), *tok.encode(" Hallo Welt."), ts(2.4), ts(2.6), *tok.encode(" Le chat dort."), ts(5.0)]
    assert example.tokens == [tok.sot, tok.language_token("de"), tok.transcribe, *body]
    assert example.labels == [tok.language_token("de"), IGNORE, *body, tok.eot]
    # CTC learns the words without times
    assert example.ctc_targets == tok.encode(" Hallo Welt. Le chat dort.")


def test_timestamps_never_decrease_and_stay_inside_the_cut(tok):
    cut = make_cut(4.0, [(0.0, 2.5, "Hallo Welt.", "de", None), (2.2, 3.0, "Le chat dort.", "de", None)])
    example = cut_to_example(cut, tok, options(timestamp_rate=1.0), random.Random(0))
    times = [tok.specials.timestamp_seconds(t) for t in example.tokens if tok.specials.is_timestamp(t)]
    assert times == sorted(times) and times == [0.0, 2.5, 2.5, 4.0]


def test_translation_uses_the_english_text_and_the_source_language(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Heute sieht die Katze den Hund.", "de", "Today the cat sees the dog.")])
    example = cut_to_example(cut, tok, options(translate_rate=1.0), random.Random(0))
    english = tok.encode(" Today the cat sees the dog.")
    assert example.tokens == [tok.sot, tok.language_token("de"), tok.translate, tok.no_timestamps, *english]
    assert example.task == "translate"
    assert example.ctc_targets == tok.encode(" Heute sieht die Katze den Hund.")  # CTC hears German


def test_translate_only_cut_has_no_ctc_target(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Today the cat sees the dog.", "de", "Today the cat sees the dog.")],
                   custom={"task": "translate"})
    example = cut_to_example(cut, tok, options(translate_rate=0.0), random.Random(0))
    assert example.task == "translate" and example.ctc_targets is None


def test_vocabulary_texts_leave_out_the_transcript_of_a_translate_only_cut():
    german = make_cut(3.0, [(0.0, 3.0, "Heute sieht die Katze.", "de", "Today the cat sees.")])
    dropped = make_cut(3.0, [(0.0, 3.0, "heute sieht die", "de", "Today the dog sleeps.")],
                       custom={"task": "translate"})  # its transcript failed cleaning
    texts = list(manifest_texts([[german, dropped]]))
    assert texts == [" Heute sieht die Katze.", " Today the cat sees.", " Today the dog sleeps."]


def test_translation_ctc_target_is_the_english_text_whatever_the_task(tok):
    german = make_cut(3.0, [(0.0, 3.0, "Heute sieht die Katze den Hund.", "de", "Today the cat sees the dog.")])
    english = tok.encode(" Today the cat sees the dog.")
    for rate in (0.0, 1.0):  # transcribed or translated, the encoder hears the same words
        example = cut_to_example(german, tok, options(translate_rate=rate), random.Random(0))
        assert example.translation_targets == english
    spoken = make_cut(3.0, [(0.0, 3.0, "Today the cat sees the dog.", "en", None)])
    assert cut_to_example(spoken, tok, options(), random.Random(0)).translation_targets == english
    unknown = make_cut(3.0, [(0.0, 3.0, "Le chat dort.", "fr", None)])
    assert cut_to_example(unknown, tok, options(), random.Random(0)).translation_targets is None
    silence = make_cut(5.0, [], custom={"nospeech": True})
    assert cut_to_example(silence, tok, options(), random.Random(0)).translation_targets == []


def test_no_speech(tok):
    example = cut_to_example(make_cut(5.0, [], custom={"nospeech": True}), tok, options(), random.Random(0))
    assert example.tokens == [tok.sot, tok.no_speech]
    assert example.labels == [tok.no_speech, tok.eot]
    assert example.ctc_targets == [] and example.task == "nospeech"


def test_previous_text_prompt_takes_no_loss(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Hallo Welt.", "de", None)], custom={"prev_text": "Le chat dort."})
    example = cut_to_example(cut, tok, options(prompt_rate=1.0), random.Random(0))
    prev = tok.encode(" Le chat dort.")
    text = tok.encode(" Hallo Welt.")
    assert example.tokens == [tok.sot_prev, *prev, tok.sot, tok.language_token("de"), tok.transcribe,
                              tok.no_timestamps, *text]
    assert example.labels == [IGNORE] * (len(prev) + 1) + [tok.language_token("de"), IGNORE, IGNORE, *text, tok.eot]


def test_prompt_is_cut_from_the_front_to_fit(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Hallo Welt.", "de", None)], custom={"prev_text": "Le chat dort. " * 40})
    example = cut_to_example(cut, tok, options(prompt_rate=1.0), random.Random(0), n_text_ctx=40)
    assert len(example.tokens) + 1 == 40
    assert example.tokens[0] == tok.sot_prev
    assert tok.decode(example.tokens[1:example.tokens.index(tok.sot)]).endswith("Le chat dort.")


def test_too_long_transcript_is_refused(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Hallo Welt. " * 50, "de", None)])
    with pytest.raises(SequenceTooLong, match="cut"):
        cut_to_example(cut, tok, options(), random.Random(0), n_text_ctx=40)


def test_rates_are_drawn_from_the_generator(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "Heute sieht die Katze den Hund.", "de", "Today the cat sees the dog.")],
                   custom={"prev_text": "Hallo Welt."})
    rng = random.Random(7)
    examples = [cut_to_example(cut, tok, DataConfig(), rng) for _ in range(400)]
    translate = sum(e.task == "translate" for e in examples) / 400
    timestamps = sum(tok.no_timestamps not in e.tokens for e in examples) / 400
    prompted = sum(e.tokens[0] == tok.sot_prev for e in examples) / 400
    assert 0.4 < translate < 0.6 and 0.4 < timestamps < 0.6 and 0.4 < prompted < 0.6
    again = cut_to_example(cut, tok, DataConfig(), random.Random(7))
    assert again == examples[0]


def test_empty_transcript_is_refused(tok):
    cut = make_cut(3.0, [(0.0, 3.0, "  ", "de", None)])
    with pytest.raises(EmptyTranscript, match="cut"):
        cut_to_example(cut, tok, options(), random.Random(0))
