"""Timestamps placed by the decoder among a text decoded before: the text stays, breaks fall between words."""

import pytest
import torch

from asr.decoding.timing import place_timestamps, starts_word

TEXT = " the cat sat on the mat. hello world"


@pytest.fixture
def timing(tokenizer, scripted):
    """A decoder that believes in another word ("dog") and wants a timestamp after "mat." and inside "the"."""
    text = tokenizer.encode(TEXT)
    pieces = [tokenizer.decode([t]) for t in text]
    sentence_end = pieces.index(".") + 1  # the text tokens written when the decoder wants a segment to end
    inside_word = 1  # " t" written, "he" next: a break here would cut a word
    assert not starts_word(tokenizer)[text[inside_word]] and starts_word(tokenizer)[text[sentence_end]]
    dog, T, eot = tokenizer.encode(" dog")[0], tokenizer.specials.timestamp_token, tokenizer.eot
    begin = tokenizer.timestamp_begin
    prompt = len(tokenizer.sot_sequence("en", "transcribe", timestamps=True))

    def script(item, history):
        generated = history[prompt:]
        written = sum(t < eot for t in generated)
        if not generated:
            probs = {T(0.2): 0.9, dog: 0.1}
        elif generated[-1] >= begin and len(generated) > 1 and generated[-2] < eot:  # a segment just closed
            probs = {generated[-1]: 0.6, eot: 0.4} if written < len(text) else {eot: 0.9, T(9.0): 0.1}
        elif written == len(text):
            probs = {T(3.5): 0.8, eot: 0.2}
        elif written in (inside_word, sentence_end) and generated[-1] < eot:
            probs = {T(1.0 if written == inside_word else 2.0): 0.7, dog: 0.3}
        else:
            probs = {dog: 0.8, T(2.5): 0.2}
        return scripted.logits_of(probs, tokenizer.n_vocab)

    return text, sentence_end, scripted.Model(tokenizer.n_vocab, script), T


def test_the_text_is_kept_and_segments_break_only_between_words(tokenizer, timing):
    text, sentence_end, model, T = timing
    xa = torch.zeros(2, 1, 1)
    xa[1] = 1  # a second item with an empty text
    timed, empty = place_timestamps(model, xa, None, tokenizer, [text, []], "en")
    # The decoder wanted "dog" everywhere and a break inside " the": neither happens; after "mat." it
    # closes a segment at 2.00 and opens the next there, and the last closes at 3.50.
    assert timed == [T(0.2), *text[:sentence_end], T(2.0), T(2.0), *text[sentence_end:], T(3.5)]
    assert empty == []
    assert model.passes == 1


def test_a_text_longer_than_the_decoder_positions_comes_back_untimed(tokenizer, timing):
    text, _, _, _ = timing
    short = type(timing[2])(tokenizer.n_vocab, timing[2].script, n_text_ctx=len(text))
    assert place_timestamps(short, torch.zeros(1, 1, 1), None, tokenizer, [text], "en") == [text]


def test_texts_must_match_the_audio_and_hold_text_ids_only(tokenizer, timing):
    text, _, model, _ = timing
    with pytest.raises(ValueError, match="2 texts for 1"):
        place_timestamps(model, torch.zeros(1, 1, 1), None, tokenizer, [text, text], "en")
    with pytest.raises(ValueError, match="special tokens"):
        place_timestamps(model, torch.zeros(1, 1, 1), None, tokenizer, [[*text, tokenizer.eot]], "en")
