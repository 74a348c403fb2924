import math

import pytest

from asr.evaluate.metrics import (error_rates, language_id, no_speech, normalise, normalise_for, timestamp_error,
                                  translation_scores, word_error_rates)


def test_normalise_is_basic_and_language_independent():
    assert normalise("Heute sieht die Katze, den Hund!") == "heute sieht die katze den hund"


def test_english_normaliser_is_whispers():
    # Whisper's English normaliser spells out titles and reads "'s" as "is" (it cannot tell possessives).
    assert normalise_for("en", "Mr. Smith's 2 cats") == "mister smith is 2 cats"
    assert normalise_for("en", "Twenty-five colours!") == "25 colors"
    assert normalise_for("en", "one two three four") == "1234"  # spelled-out numbers run together


def test_other_languages_keep_diacritics():
    assert normalise_for("de", "Über die Straße, GRÜSSEN wir [Musik] (laut)!") == "über die straße grüssen wir"
    assert normalise_for("fr", "Déjà vu.") == "déjà vu"


def test_error_rates_unchanged():
    rates = error_rates(["a b c d", ""], ["a x c", "anything"])
    assert rates["wer"] == 0.5  # one substitution, one deletion over 4 words; the empty reference is skipped
    assert math.isnan(error_rates([""], ["x"])["wer"])


def test_word_error_rates_one_language():
    # 4 words, "b" substituted and "d" deleted: 2 / 4. Characters "a b c d" (7) against "a x c":
    # b->x substituted, " d" deleted: 3 / 7.
    rates = word_error_rates(["A b, c d."], ["a x c"], ["de"])
    de = rates["languages"]["de"]
    assert (de["wer"], de["word_errors"], de["words"]) == (0.5, 2, 4)
    assert (de["cer"], de["char_errors"], de["chars"]) == (3 / 7, 3, 7)
    assert de["unit"] == "word"


def test_word_error_rates_mean_over_languages_and_pooled():
    refs = ["the cat sat down", "", "eins zwei", "你好世界"]
    hyps = ["the cat sat down", "noise", "eins drei", "你们世界"]
    rates = word_error_rates(refs, hyps, ["en", "en", "de", "zh"])
    by_language = rates["languages"]
    assert by_language["en"]["wer"] == 0.0 and by_language["en"]["skipped_empty"] == 1
    assert by_language["de"]["wer"] == 0.5  # 1 of 2 words
    assert by_language["zh"]["unit"] == "character"  # 1 of 4 characters
    assert by_language["zh"]["wer"] == by_language["zh"]["cer"] == 0.25
    assert rates["mean_over_languages"]["wer"] == pytest.approx((0.0 + 0.5 + 0.25) / 3)
    pooled = rates["pooled"]
    assert (pooled["word_errors"], pooled["words"], pooled["wer"]) == (2, 10, 0.2)  # 0 + 1 + 1 over 4 + 2 + 4
    assert (pooled["utterances"], pooled["skipped_empty"]) == (3, 1)


def test_word_error_rates_of_nothing():
    rates = word_error_rates([""], ["x"], ["en"])
    assert rates["languages"]["en"]["wer"] is None
    assert rates["mean_over_languages"]["wer"] is None and rates["pooled"]["wer"] is None


def test_translation_scores():
    assert translation_scores(["The cat sat on the mat."], ["The cat sat on the mat."]) == {
        "bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    # Precisions 5/6, 3/5, 2/4, 1/3 (the second "the" is clipped), equal lengths: BLEU = (1/12) ** (1/4).
    scores = translation_scores(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert scores["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert 0 < scores["chrf"] < 100
    assert translation_scores([], []) == {"bleu": None, "chrf": None}


def test_language_id():
    result = language_id(["en", "de", "de", "fr"], ["en", "en", "de", "fr"])
    assert result["accuracy"] == 0.75
    assert result["confusion"] == {"de": {"de": 1, "en": 1}, "en": {"en": 1}, "fr": {"fr": 1}}
    assert result["labels"] == ["de", "en", "fr"]
    assert language_id([], [])["accuracy"] is None


def test_no_speech_counts():
    refs = [True, True, True, False, False, False, False]
    hyps = [True, True, False, True, False, False, False]
    result = no_speech(refs, hyps)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 1, 1, 3)
    assert result["precision"] == 2 / 3 and result["recall"] == 2 / 3
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == 5 / 7


def test_no_speech_without_positives():
    assert no_speech([False, False], [False, False]) | {"tn": 0} == {
        "precision": None, "recall": None, "f1": None, "accuracy": 1.0, "tp": 0, "fp": 0, "fn": 0, "tn": 0}
    missed = no_speech([True, False], [False, False])  # a no-speech cut never predicted
    assert (missed["precision"], missed["recall"], missed["f1"]) == (None, 0.0, 0.0)
    false_alarm = no_speech([False], [True])
    assert (false_alarm["precision"], false_alarm["recall"], false_alarm["f1"]) == (0.0, None, 0.0)


def test_timestamp_error():
    refs = [[(0.0, 2.0, "a"), (2.0, 5.0, "b"), (None, None, "untimed")],
            [(1.0, 3.0, "c"), (10.0, 11.0, "lost")]]
    hyps = [[(0.5, 2.5, "a"), (2.5, 4.0, "b"), (6.0, 7.0, "extra")],
            [(0.0, 3.5, "c")]]
    result = timestamp_error(refs, hyps)
    # |0-0.5| + |2-2.5| + |2-2.5| + |5-4| + |1-0| + |3-3.5| = 4.0 over 6 boundaries
    assert result["mae"] == pytest.approx(4.0 / 6)
    assert (result["n"], result["matched"]) == (6, 3)
    assert (result["unmatched_references"], result["unmatched_hypotheses"], result["untimed"]) == (1, 1, 1)


def test_timestamp_matching_keeps_order_and_maximises_overlap():
    # The hypothesis (0, 4) overlaps both references; it goes with (1, 4) (3 s) rather than (0, 1) (1 s).
    result = timestamp_error([[(0.0, 1.0, "x"), (1.0, 4.0, "y")]], [[(0.0, 4.0, "xy")]])
    assert result["mae"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["unmatched_references"] == 1
    assert timestamp_error([[]], [[(0.0, 1.0, "x")]])["mae"] is None
