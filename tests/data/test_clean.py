import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from asr.config import from_dict
from asr.data import is_suspect
from asr.data.clean import (RULES, CleanConfig, LanguageID, clean_cuts, evaluate_cleaning, normalise_text,
                            outlier_bound)

# lhotse's fallback decoder imports audioread, which imports stdlib modules deprecated in 3.11.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread")

SWITCHES = {
    "duration": "check_duration",
    "unreadable_audio": "check_audio",
    "empty_text": "check_empty_text",
    "text_too_long": "check_text_length",
    "speaking_rate": "check_speaking_rate",
    "rate_outlier": "check_rate_outliers",
    "upper_case": "check_upper_case",
    "lower_case": "check_lower_case",
    "no_punctuation": "check_punctuation",
    "language_mismatch": "check_language",
    "duplicate_text": "check_duplicates",
}

# Two everyday sentences per language; py3langid must tell them apart over these candidates.
SENTENCES = {
    "en": ["She bought three apples at the market yesterday.", "Can you tell me where the nearest pharmacy is?"],
    "de": ["Sie hat gestern drei Äpfel auf dem Markt gekauft.", "Können Sie mir sagen, wo die nächste Apotheke ist?"],
    "fr": ["Elle a acheté trois pommes au marché hier.", "Pouvez-vous me dire où se trouve la pharmacie ?"],
    "es": ["Ayer compró tres manzanas en el mercado.", "¿Puede decirme dónde está la farmacia más cercana?"],
    "it": ["Ieri ha comprato tre mele al mercato.", "Può dirmi dove si trova la farmacia più vicina?"],
    "ru": ["Вчера она купила три яблока на рынке.", "Не подскажете, где ближайшая аптека?"],
    "zh": ["她昨天在市场买了三个苹果。", "你能告诉我最近的药店在哪里吗？"],
    "ja": ["彼女は昨日市場でりんごを三つ買いました。", "会議は来週の火曜日に変更されました。"],
}
WRONG_LABEL = {"en": "de", "de": "fr", "fr": "es", "es": "it", "it": "de", "ru": "de", "zh": "ja", "ja": "zh"}


def only(rule: str, **thresholds) -> CleanConfig:
    """A config with one rule switched on."""
    return CleanConfig(**{switch: name == rule for name, switch in SWITCHES.items()}, **thresholds)


def recording(recording_id: str, duration: float, path: str = "/nonexistent.wav") -> Recording:
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="file", channels=[0], source=path)],
        sampling_rate=16000,
        num_samples=round(duration * 16000),
        duration=duration,
    )


def cut_with(cut_id: str, duration: float, supervisions: list[tuple], recording_id: str | None = None, **custom):
    """A cut with supervisions given as (start, duration, text, language[, supervision custom])."""
    recording_id = recording_id or f"rec-{cut_id}"
    sups = [
        SupervisionSegment(
            id=f"{cut_id}-{i}", recording_id=recording_id, start=start, duration=length, text=text,
            language=language, custom=rest[0] if rest else None,
        )
        for i, (start, length, text, language, *rest) in enumerate(supervisions)
    ]
    return MonoCut(
        id=cut_id, start=0.0, duration=duration, channel=0, recording=recording(recording_id, duration),
        supervisions=sups, custom=custom or None,
    )


def speech(cut_id: str, text: str = SENTENCES["en"][0], language: str = "en", duration: float = 3.0, **kwargs):
    """A cut with one supervision spanning it."""
    return cut_with(cut_id, duration, [(0.0, duration, text, language)], **kwargs)


def nospeech(cut_id: str, duration: float = 5.0):
    return cut_with(cut_id, duration, [], nospeech=True)


def clean(cuts, config, **kwargs):
    result = clean_cuts(CutSet.from_cuts(cuts), config, **kwargs)
    return result, {c.id for c in result.kept}, {c.id: c.custom["dropped_by"] for c in result.dropped}


class WordTokenizer:
    """One token per word."""

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_are_valid_and_bounds_parse():
    config = CleanConfig()
    assert config.rate_bounds("en") == (3.0, 30.0)  # from "*"
    assert config.rate_bounds("zh") == (1.0, 10.0)
    assert config.rate_bounds(None) == (3.0, 30.0)
    assert not config.check_audio
    assert tuple(SWITCHES) == RULES  # the tests know every rule, in order


def test_config_loads_from_yaml_with_the_project_loader():
    config = from_dict(CleanConfig, yaml.safe_load("check_audio: true\nchars_per_second: ['*:2:20', 'zh:1:8']\n"))
    assert config.check_audio and config.chars_per_second == ("*:2:20", "zh:1:8")
    assert config.rate_bounds("de") == (2.0, 20.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"chars_per_second": ("en:4",)},
        {"chars_per_second": ("en:9:4",)},
        {"min_duration": 5.0, "max_duration": 1.0},
        {"lid_min_prob": 0.0},
        {"duplicate_max_copies": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        CleanConfig(**bad)


# ------------------------------------------------------------------------------------------------ rules


def test_duration_rule_bounds_and_switch():
    cuts = [speech("tiny", "Hi.", duration=0.1), speech("edge", "Hi.", duration=0.3),
            speech("ok", duration=29.9), speech("long", duration=31.0), nospeech("silence-tiny", 0.1)]
    _, kept, dropped = clean(cuts, only("duration"))
    assert kept == {"edge", "ok"}
    assert dropped == {"tiny": "duration", "long": "duration", "silence-tiny": "duration"}
    _, kept, _ = clean(cuts, only(None))
    assert len(kept) == len(cuts)


def test_unreadable_audio_rule(tmp_path):
    good_path, bad_path = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good_path, np.zeros(16000, dtype=np.float32), 16000)
    bad_path.write_bytes(b"this is not a wav file" * 100)
    good = Recording.from_file(good_path, recording_id="good").to_cut()
    bad = MonoCut(id="bad", start=0.0, duration=1.0, channel=0, recording=recording("bad", 1.0, str(bad_path)))
    silence = MonoCut(
        id="silence", start=0.0, duration=1.0, channel=0, recording=recording("s", 1.0, str(bad_path)),
        custom={"nospeech": True},
    )
    _, kept, dropped = clean([good, bad, silence], only("unreadable_audio"))
    assert kept == {"good"}
    assert dropped == {"bad": "unreadable_audio", "silence": "unreadable_audio"}  # no-speech cuts too
    _, kept, _ = clean([good, bad, silence], CleanConfig(check_empty_text=False))  # off by default
    assert kept == {"good", "bad", "silence"}


def test_empty_text_rule_exempts_nospeech():
    cuts = [speech("empty", ""), speech("spaces", "   "), speech("dots", "..."),
            cut_with("no-sups", 3.0, []), cut_with("one-empty", 3.0, [(0, 1, "Yes.", "en"), (1, 1, "", "en")]),
            speech("letter", "A"), speech("digits", "42"), speech("chinese", "好"), nospeech("silence")]
    _, kept, dropped = clean(cuts, only("empty_text"))
    assert kept == {"letter", "digits", "chinese", "silence"}
    assert set(dropped) == {"empty", "spaces", "dots", "no-sups", "one-empty"}


def test_text_too_long_in_characters_without_tokenizer():
    cuts = [speech("fits", "x" * 50), speech("over", "x" * 51)]
    _, kept, dropped = clean(cuts, only("text_too_long", max_text_chars=50))
    assert kept == {"fits"} and dropped == {"over": "text_too_long"}


def test_text_too_long_in_tokens_with_tokenizer():
    # text tokens + 2 timestamp tokens per supervision, against max_text_tokens
    cuts = [speech("fits", words(8)), speech("over", words(9)),
            cut_with("two-sups", 3.0, [(0, 1, words(4), "en"), (1, 2, words(4), "en")])]
    config = only("text_too_long", max_text_tokens=10, max_text_chars=5)  # the character bound is not used
    _, kept, dropped = clean(cuts, config, tokenizer=WordTokenizer())
    assert kept == {"fits"} and set(dropped) == {"over", "two-sups"}


def test_speaking_rate_per_language_and_per_supervision():
    cuts = [
        speech("slow", "x" * 29, duration=10.0),  # 2.9 chars/s < 3
        speech("slow-edge", "x" * 30, duration=10.0),
        speech("fast", "x" * 301, duration=10.0),  # 30.1 chars/s > 30
        speech("fast-edge", "x" * 300, duration=10.0),
        speech("spaces-and-punctuation-free", "x, " * 29 + "!!!", duration=10.0),  # 29 chars counted
        speech("zh-ok", "好" * 15, "zh", duration=10.0),  # 1.5 chars/s: slow for English, fine in Chinese
        speech("en-slow", "x" * 15, "en", duration=10.0),
        speech("zh-fast", "好" * 101, "zh", duration=10.0),
        # 40 chars in 1 s then 60 in 9 s: 10 chars/s over the cut, but the first supervision is too fast
        cut_with("one-too-fast", 10.0, [(0, 1, "x" * 40, "en"), (1, 9, "x" * 60, "en")]),
    ]
    _, kept, dropped = clean(cuts, only("speaking_rate"))
    assert kept == {"slow-edge", "fast-edge", "zh-ok"}
    assert set(dropped) == {"slow", "fast", "spaces-and-punctuation-free", "en-slow", "zh-fast", "one-too-fast"}


def test_rate_outlier_learns_each_languages_rate_from_the_corpus():
    sentence = "Heute sieht die Katze den Hund im Garten."  # 33 characters that take time to say
    rng = np.random.default_rng(0)
    # 60 German clips at 11-14 characters per second (seconds = 33 / rate)
    cuts = [speech(f"de{i}", sentence, "de", duration=33 / rng.uniform(11, 14)) for i in range(60)]
    cuts.append(speech("half", "Heute sieht die Katze.", "de", duration=33 / 12.5))  # words lost: 7 chars/s
    cuts.append(speech("double", sentence + " " + sentence, "de", duration=33 / 12.5))  # 25 chars/s
    cuts.append(speech("fast-talker", sentence, "de", duration=33 / 15.0))  # a little fast: kept
    cuts += [speech(f"en{i}", "Today.", "en", duration=3.0) for i in range(5)]  # too few to judge English
    _, _, dropped = clean(cuts, only("rate_outlier"))
    assert dropped == {"half": "rate_outlier", "double": "rate_outlier"}
    _, _, dropped = clean(cuts, only("rate_outlier", rate_outlier_min_count=100))
    assert not dropped  # no language has 100 supervisions: none is judged


def test_rate_outlier_bound_widens_with_the_sentences_of_a_window():
    assert outlier_bound(2.9, 1) == 2.9 and outlier_bound(2.9, 0) == 2.9
    bounds = [outlier_bound(2.9, n) for n in (1, 2, 8, 12)]
    assert bounds == sorted(bounds) and 4.0 < bounds[2] < 4.1  # Sidak: 1 - (1 - 0.0036) ** (1 / 8)

    sentence = "Heute sieht die Katze den Hund im Garten."  # 33 characters
    rng = np.random.default_rng(0)
    cuts = [speech(f"de{i}", sentence, "de", duration=33 / rng.uniform(11, 14)) for i in range(60)]
    log_rates = sorted(np.log(33 / c.duration) for c in cuts)
    median = float(np.median(log_rates))
    mad = float(np.median(np.abs(np.array(log_rates) - median)))
    slow = 33 / np.exp(median - 3.4 * mad)  # seconds: between the single-clip bound and the 8-sentence one
    cuts.append(speech("slow-clip", sentence, "de", duration=slow))
    typical = 33 / np.exp(median)
    spans, start = [], 0.0
    for k in range(8):
        length = slow if k == 3 else typical
        spans.append((start, length, sentence, "de"))
        start += length + 0.5
    cuts.append(cut_with("window", start, spans))
    _, _, dropped = clean(cuts, only("rate_outlier"))
    assert dropped == {"slow-clip": "rate_outlier"}  # one stray sentence of eight is chance, not a bad label


def test_speaking_rate_in_tokens_with_tokenizer():
    cuts = [speech("ok", words(6, "abcde"), duration=3.0), speech("many-tokens", words(7, "abcde"), duration=3.0)]
    config = only("speaking_rate", max_tokens_per_second=2.0)
    _, kept, _ = clean(cuts, config, tokenizer=WordTokenizer())
    assert kept == {"ok"}
    _, kept, _ = clean(cuts, config)  # no tokenizer: characters only
    assert kept == {"ok", "many-tokens"}


CASE_CUTS = {
    "upper": ("THE MEETING HAS BEEN MOVED TO TUESDAY.", "en"),
    "upper-ru": ("ВСТРЕЧА ПЕРЕНЕСЕНА НА СЛЕДУЮЩИЙ ВТОРНИК.", "ru"),
    "lower": ("the meeting has been moved to tuesday.", "en"),
    "lower-de": ("die besprechung wurde auf nächsten dienstag verschoben.", "de"),
    "mixed": ("The meeting has been moved to Tuesday.", "en"),
    "mixed-ru": ("Встреча перенесена на следующий вторник.", "ru"),
    "acronyms": ("NASA FBI CIA", "en"),  # all capitals, but too few words to judge
    "short-lower": ("yes i do", "en"),
    "chinese": ("我觉得我们应该在下雨之前离开。", "zh"),  # no case at all
    "japanese-with-ok": ("OKです、会議は来週の火曜日に変更されました。", "ja"),
    "georgian": ("შეხვედრა გადაიდო მომავალ სამშაბათამდე.", "ka"),  # Python calls these letters lower case
}


def test_case_rules():
    cuts = [speech(cut_id, text, language) for cut_id, (text, language) in CASE_CUTS.items()]
    both = dataclasses.replace(only("upper_case"), check_lower_case=True)
    _, kept, dropped = clean(cuts, both)
    assert dropped == {
        "upper": "upper_case", "upper-ru": "upper_case", "lower": "lower_case", "lower-de": "lower_case"
    }
    assert kept == set(CASE_CUTS) - set(dropped)
    _, _, dropped = clean(cuts, only("upper_case"))
    assert set(dropped) == {"upper", "upper-ru"}
    _, _, dropped = clean(cuts, only("lower_case"))
    assert set(dropped) == {"lower", "lower-de"}


def test_a_languages_own_style_turns_its_style_rules_off_for_it():
    # English written like LibriSpeech: 50 of 60 long texts upper case without punctuation; German as usual
    upper = "SHE BOUGHT THREE APPLES AT THE MARKET " + " ".join(["AND PEARS"] * 7)  # 21 words, no mark
    cuts = [speech(f"en-{i}", upper) for i in range(50)]
    cuts += [speech(f"en-cased-{i}", "She bought " + words(18) + ".") for i in range(10)]
    cuts += [speech(f"de-{i}", "Sie hat gestern drei Äpfel gekauft.", "de") for i in range(60)]
    cuts += [speech("de-upper", "SIE HAT GESTERN DREI ÄPFEL GEKAUFT.", "de")]
    config = CleanConfig(**{switch: name in ("upper_case", "no_punctuation") for name, switch in SWITCHES.items()})
    result, kept, dropped = clean(cuts, config)
    assert dropped == {"de-upper": "upper_case"}  # German's rule still runs: 1 of 61 texts break it
    assert result.report.house_style == {"en": {"upper_case": (60, 50), "no_punctuation": (60, 50)}}
    assert "- en: upper_case, 10 of 60 judged texts keep it" in result.report.to_markdown()
    assert result.report.to_dict()["house_style"]["en"]["no_punctuation"] == {"judged": 60, "broke": 50}

    _, _, dropped = clean(cuts, dataclasses.replace(config, style_majority=1.0))  # never off
    assert len(dropped) == 51
    _, _, dropped = clean(cuts, dataclasses.replace(config, style_min_texts=61))  # too few judged to tell
    assert len(dropped) == 51


def test_no_punctuation_rule():
    twenty = "The " + words(19)
    cuts = [
        speech("long-bare", twenty),
        speech("short-bare", "The " + words(18)),
        speech("long-comma", "The " + words(9) + ", " + words(10)),
        speech("zh-bare", "好" * 40, "zh"),
        speech("zh-short", "好" * 39, "zh"),
        speech("zh-punctuated", "好" * 20 + "，" + "好" * 20, "zh"),
        speech("thai", " ".join(["ฉันคิดว่าเราควรออกไปก่อนฝนตก"] * 20), "th"),  # written without punctuation
    ]
    _, kept, dropped = clean(cuts, only("no_punctuation"))
    assert dropped == {"long-bare": "no_punctuation", "zh-bare": "no_punctuation"}
    assert kept == {"short-bare", "long-comma", "zh-short", "zh-punctuated", "thai"}


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_language_id_gets_everyday_sentences_right(language):
    identify = LanguageID(SENTENCES)
    for text in SENTENCES[language]:
        found, probability = identify(text)
        assert found == language and probability >= CleanConfig().lid_min_prob, (text, found, probability)


def test_language_rule_keeps_matches_and_drops_mismatches():
    cuts, wrong = [], set()
    for language, texts in SENTENCES.items():
        for i, text in enumerate(texts):
            cuts.append(speech(f"{language}-{i}", text, language))
            if language != "en":  # English on other audio is a translation: its own test
                cuts.append(speech(f"{language}-{i}-as-{WRONG_LABEL[language]}", text, WRONG_LABEL[language]))
                wrong.add(f"{language}-{i}-as-{WRONG_LABEL[language]}")
    result, kept, dropped = clean(cuts, only("language_mismatch"))
    assert dropped == dict.fromkeys(wrong, "language_mismatch")
    assert kept == {c.id for c in cuts} - wrong
    assert all("task" not in (c.custom or {}) for c in result.kept)
    _, kept, _ = clean(cuts, only(None))
    assert len(kept) == len(cuts)


def test_english_text_on_foreign_audio_becomes_a_translation_pair():
    text = SENTENCES["en"][0]
    cuts = [speech("de-audio", text, "de"), speech("de", SENTENCES["de"][0], "de"), speech("en", text, "en")]
    result, kept, dropped = clean(cuts, only("language_mismatch"))
    assert kept == {"de-audio", "de", "en"} and not dropped
    pair = result.kept["de-audio"]
    assert pair.custom["task"] == "translate"
    assert pair.supervisions[0].custom["translation"] == text and pair.supervisions[0].text == text
    assert pair.supervisions[0].language == "de"
    assert "task" not in (result.kept["de"].custom or {}) and "task" not in (result.kept["en"].custom or {})
    assert result.report.to_dict()["translated"] == {"de": 1, "total": 1}

    _, kept, dropped = clean(cuts, only("language_mismatch", translation_pairs=False))
    assert dropped == {"de-audio": "language_mismatch"}


def test_a_recorded_translation_is_kept_when_a_cut_becomes_a_pair():
    known = "She bought three apples at the market."
    cut = cut_with("de-audio", 3.0, [(0, 3, SENTENCES["en"][0], "de", {"translation": known})])
    result, _, _ = clean([cut], only("language_mismatch"))
    assert result.kept["de-audio"].custom["task"] == "translate"
    assert result.kept["de-audio"].supervisions[0].custom["translation"] == known


def translated_corpus(extra):
    """60 German clips with English translations at 11-14 characters per second, then ``extra``."""
    sentence, english = "Heute sieht die Katze den Hund im Garten.", "Today the cat sees the dog in the garden."
    rng = np.random.default_rng(0)
    cuts = [cut_with(f"de{i}", seconds, [(0, seconds, sentence, "de", {"translation": english})])
            for i, seconds in enumerate(33 / rng.uniform(11, 14, size=60))]
    seconds = 33 / 12.5
    return cuts + [cut_with(cut_id, seconds, [(0, seconds, text, language, translation and {"translation": translation})])
                   for cut_id, text, language, translation in extra]


def test_a_cut_whose_transcript_alone_fails_keeps_its_translation():
    english = "Today the cat sees the dog in the garden."
    cuts = translated_corpus([
        ("lower", "heute sieht die katze den hund im garten.", "de", english),  # 11 chars/s
        ("lower-untranslated", "heute sieht die katze den hund im garten.", "de", None),
        ("lower-other-clip", "heute sieht die katze den hund im garten.", "de", english + " " + english),
        ("fr-as-de", SENTENCES["fr"][0], "de", english),  # the language label itself is in doubt
        ("fr", SENTENCES["fr"][1], "fr", None),  # French among the candidates of language ID
    ])
    cuts.append(cut_with("tiny", 0.2, [(0, 0.2, "heute sieht die katze.", "de", {"translation": english})]))
    config = CleanConfig(check_duplicates=False, keep_translations=True)  # one sentence read 60 times
    result, kept, dropped = clean(cuts, config)
    assert "lower" in kept and len(kept) == 62
    assert all("task" not in (c.custom or {}) for c in result.kept if c.id != "lower")
    assert dropped == {"lower-untranslated": "lower_case", "lower-other-clip": "lower_case",
                       "fr-as-de": "language_mismatch", "tiny": "duration"}
    lower = result.kept["lower"]
    assert lower.custom["task"] == "translate"
    assert lower.custom["transcript_dropped_by"] == "lower_case"
    assert lower.custom["transcript_dropped_reasons"] == ["lower_case"]
    assert lower.supervisions[0].custom["translation"] == english  # the label is not edited
    report = result.report.to_dict()
    assert report["translation_only"] == {"de": 1, "total": 1} and report["translated"] == {"total": 0}
    assert report["kept"]["total"] == 62 and report["dropped"]["total"] == 4
    assert report["dropped_by"]["lower_case"] == {"de": 3, "total": 3}  # the transcript's drops, kept or not
    assert "| translation only | 1 | 0 | 1 |" in result.report.to_markdown()  # de, fr, total

    _, kept, dropped = clean(cuts, dataclasses.replace(config, keep_translations=False))
    assert dropped["lower"] == "lower_case" and len(kept) == 61


def test_deferred_rules_leave_their_drops_to_the_model():
    english = "Today the cat sees the dog in the garden."
    half, double = "Heute sieht die Katze.", "Heute sieht die Katze den Hund im Garten. " * 2
    cuts = translated_corpus([
        ("half", half, "de", english),  # words lost: a rate outlier
        ("half-untranslated", half, "de", None),
        ("double-other-clip", double, "de", english + " " + english),  # its translation an outlier too
        ("half-lower", half.lower(), "de", english),  # a rule that is not deferred fires too: translation only
        ("fr", SENTENCES["fr"][1], "fr", None),
    ])
    cuts[0].supervisions[0].custom["corruption"] = None  # a recorded truth: one right label...
    for cut in cuts[60:64]:
        cut.supervisions[0].custom = {**(cut.supervisions[0].custom or {}), "corruption": "drop"}  # ...four wrong
    config = CleanConfig(check_duplicates=False, keep_translations=True, defer_rules=("rate_outlier",))
    result, kept, dropped = clean(cuts, config)
    assert dropped == {"double-other-clip": "rate_outlier"}
    assert {"half", "half-untranslated", "half-lower"} <= kept and len(kept) == 64
    assert result.kept["half-lower"].custom["task"] == "translate" and not is_suspect(result.kept["half-lower"])
    for cut_id in ("half", "half-untranslated"):
        cut = result.kept[cut_id]
        assert cut.custom["suspect_by"] == "rate_outlier" and cut.custom["suspect_reasons"] == ["rate_outlier"]
        assert "task" not in cut.custom and cut.supervisions[0].text == half  # trains as a transcript, unedited
    report = result.report.to_dict()
    assert report["deferred"] == {"de": 2, "total": 2} and report["translation_only"] == {"de": 1, "total": 1}
    assert report["kept"]["total"] == 64 and report["dropped_by"]["rate_outlier"] == {"de": 4, "total": 4}
    evaluation = report["evaluation"]
    assert evaluation["deferred"] == {"n": 2, "corrupt": 2, "kinds": {"drop": 2}}
    assert evaluation["n_dropped"] == 2 and evaluation["true_positives"] == 2  # the deferred count as kept,
    assert evaluation["recall"] == 0.5 and evaluation["precision"] == 1.0  # the translation-only as dropped
    assert "2 cuts left to the model to judge (counted above as kept), 2 of them with a wrong transcript (drop 2)." \
        in result.report.to_markdown()

    without = clean(cuts, dataclasses.replace(config, defer_rules=()))[0]
    assert without.kept["half"].custom["task"] == "translate" and not is_suspect(without.kept["half"])
    assert "half-untranslated" in {c.id for c in without.dropped}
    assert without.report.to_dict()["deferred"] == {"total": 0}
    with pytest.raises(ValueError, match="not language_mismatch"):
        CleanConfig(defer_rules=("rate_outlier", "language_mismatch"))


def test_english_with_text_in_the_labelled_language_is_a_mismatch_not_a_pair():
    mixed = cut_with("mixed", 6.0, [(0, 3, SENTENCES["de"][0], "de"), (3, 3, SENTENCES["en"][0], "de")])
    _, _, dropped = clean([mixed], only("language_mismatch"))
    assert dropped == {"mixed": "language_mismatch"}


def test_language_rule_does_not_judge_short_texts_or_unknown_languages():
    cuts = [
        speech("two-words", "Vielen Dank", "fr"),
        speech("three-words", "Wo ist Bahnhof?", "fr"),
        speech("maori", SENTENCES["en"][0], "mi"),  # Māori: not in py3langid, so never judged
        speech("no-label", SENTENCES["de"][0], None),
    ]
    candidates = ("de", "fr")
    _, kept, _ = clean(cuts, only("language_mismatch", lid_languages=candidates))
    assert kept == {c.id for c in cuts}
    _, _, dropped = clean(cuts, only("language_mismatch", lid_languages=candidates, lid_min_words=2))
    assert set(dropped) == {"two-words", "three-words"}


def test_language_rule_needs_a_confident_identification():
    cut = speech("fr-as-de", "Merci beaucoup mes amis", "de")  # French with probability ~0.95
    config = only("language_mismatch", lid_languages=tuple(SENTENCES))
    assert 0.9 < LanguageID(SENTENCES)(cut.supervisions[0].text)[1] < 0.97
    _, _, dropped = clean([cut], config)
    assert dropped == {"fr-as-de": "language_mismatch"}
    _, _, dropped = clean([cut], dataclasses.replace(config, lid_min_prob=0.97))
    assert not dropped


def test_restricted_candidates_do_not_make_foreign_text_english():
    # Among {ru, en} py3langid calls a German sentence English with probability 1.0;
    # the unrestricted model must confirm English before a cut becomes a translation pair.
    cuts = [speech("ru", SENTENCES["ru"][0], "ru"), speech("de-on-ru", SENTENCES["de"][0], "ru")]
    assert LanguageID({"ru", "en"})(SENTENCES["de"][0])[0] == "en"
    result, kept, dropped = clean(cuts, only("language_mismatch"))
    assert kept == {"ru"} and dropped == {"de-on-ru": "language_mismatch"}


def test_lid_languages_restrict_the_candidates():
    cuts = [speech("it-as-es", SENTENCES["it"][1], "es")]
    _, _, dropped = clean(cuts, only("language_mismatch"))  # candidates: es, en -> Italian passes for Spanish
    assert not dropped
    _, _, dropped = clean(cuts, only("language_mismatch", lid_languages=("es", "it")))
    assert dropped == {"it-as-es": "language_mismatch"}


def test_normalise_text():
    assert normalise_text("Subtitles by the Amara.org community (2019)") == "subtitlesbytheamaraorgcommunity"
    assert normalise_text("  ÉTÉ,  été! ") == "étéété"
    assert normalise_text("我们 走吧。") == "我们走吧"


def test_duplicate_rule_groups_near_copies_on_different_recordings():
    boilerplate = "Subtitles by the Amara.org community"
    twice = "The committee will meet again next spring."
    cuts = [
        speech("boiler-1", boilerplate),
        speech("boiler-2", "subtitles by the amara org community 2"),  # same once case, digits, punctuation go
        cut_with("boiler-3", 4.0, [(0, 2, "Welcome back to the show.", "en"), (2, 2, boilerplate + "!", "en")]),
        speech("twice-1", twice), speech("twice-2", twice),  # two recordings: not more than duplicate_max_copies
        *[speech(f"same-rec-{i}", "One recording can say this many times.", recording_id="rec-same") for i in range(4)],
        *[speech(f"thanks-{i}", "Thank you very much.") for i in range(5)],  # too short to group
        nospeech("silence-1"), nospeech("silence-2"), nospeech("silence-3"),
    ]
    _, kept, dropped = clean(cuts, only("duplicate_text"))
    assert dropped == dict.fromkeys(["boiler-1", "boiler-2", "boiler-3"], "duplicate_text")
    assert kept == {c.id for c in cuts} - set(dropped)
    _, _, dropped = clean(cuts, only("duplicate_text", duplicate_max_copies=1))
    assert set(dropped) == {"boiler-1", "boiler-2", "boiler-3", "twice-1", "twice-2"}
    _, kept, _ = clean(cuts, only(None))
    assert len(kept) == len(cuts)


def test_duplicates_over_a_lazy_manifest(tmp_path):
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([speech(f"boiler-{i}", "Subtitles by the Amara.org community") for i in range(3)]
                     + [speech("other")]).to_file(path)
    result = clean_cuts(CutSet.from_jsonl_lazy(path), CleanConfig())
    assert {c.id for c in result.kept} == {"other"}
    assert {c.custom["dropped_by"] for c in result.dropped} == {"duplicate_text"}


# ------------------------------------------------------------------------------------------------ clean_cuts


def mixed_corpus():
    return [
        speech("en-good", SENTENCES["en"][0]),
        speech("en-good-2", SENTENCES["en"][1]),
        speech("en-upper", SENTENCES["en"][0].upper()),
        speech("en-tiny-empty", "", duration=0.1),  # duration, then empty_text and speaking_rate
        speech("de-good", SENTENCES["de"][0], "de"),
        speech("de-tiny", SENTENCES["de"][1], "de", duration=0.2),  # duration and speaking_rate
        speech("de-translation", SENTENCES["en"][1], "de"),
        speech("fr-good", SENTENCES["fr"][1], "fr"),
        speech("fr-as-de", SENTENCES["fr"][0], "de"),
        speech("zh-good", SENTENCES["zh"][0], "zh"),
        # lower_case; without it, it would be a translation pair
        speech("zh-lower-en", "we went to the beach and swam all day", "zh", duration=4.0),
        nospeech("silence"),
    ]


def test_kept_and_dropped_partition_the_input_and_record_the_rules():
    cuts = mixed_corpus()
    result = clean_cuts(CutSet.from_cuts(cuts), CleanConfig())
    kept, dropped = {c.id for c in result.kept}, {c.id for c in result.dropped}
    assert kept | dropped == {c.id for c in cuts} and not kept & dropped
    assert len(result.kept) + len(result.dropped) == len(cuts)
    for cut in result.dropped:
        reasons = cut.custom["dropped_reasons"]
        assert cut.custom["dropped_by"] == reasons[0]
        assert reasons == sorted(reasons, key=RULES.index)
    assert result.dropped["en-tiny-empty"].custom["dropped_reasons"] == ["duration", "empty_text", "speaking_rate"]
    assert result.dropped["de-tiny"].custom["dropped_reasons"] == ["duration", "speaking_rate"]
    assert result.dropped["zh-lower-en"].custom["dropped_reasons"] == ["lower_case"]
    assert all("dropped_by" not in (c.custom or {}) for c in cuts)  # the input is not edited
    assert kept == {"en-good", "en-good-2", "de-good", "de-translation", "fr-good", "zh-good", "silence"}
    without_case = clean_cuts(CutSet.from_cuts(cuts), CleanConfig(check_lower_case=False))
    assert without_case.kept["zh-lower-en"].custom["task"] == "translate"


def test_report_counts_per_rule_and_language():
    report = clean_cuts(CutSet.from_cuts(mixed_corpus()), CleanConfig()).report.to_dict()
    assert report["rules"] == [r for r in RULES if r != "unreadable_audio"]
    assert report["cuts"] == {"-": 1, "de": 4, "en": 4, "fr": 1, "zh": 2, "total": 12}
    assert report["kept"] == {"-": 1, "de": 2, "en": 2, "fr": 1, "zh": 1, "total": 7}
    assert report["dropped"] == {"de": 2, "en": 2, "zh": 1, "total": 5}
    assert report["translated"] == {"de": 1, "total": 1}
    assert report["dropped_by"] == {
        "duration": {"de": 1, "en": 1, "total": 2},
        "empty_text": {"total": 0},
        "text_too_long": {"total": 0},
        "speaking_rate": {"total": 0},
        "rate_outlier": {"total": 0},  # no language has 50 supervisions to learn its rate from
        "upper_case": {"en": 1, "total": 1},
        "lower_case": {"zh": 1, "total": 1},
        "no_punctuation": {"total": 0},
        "language_mismatch": {"de": 1, "total": 1},
        "duplicate_text": {"total": 0},
    }
    assert report["fired"]["speaking_rate"] == {"de": 1, "en": 1, "total": 2}
    assert report["fired"]["empty_text"] == {"en": 1, "total": 1}
    assert report["evaluation"] == {}  # no truth recorded
    assert json.loads(json.dumps(report)) == report


def test_write_outputs(tmp_path):
    result = clean_cuts(CutSet.from_cuts(mixed_corpus()), CleanConfig())
    result.write(tmp_path / "out")
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dropped_cuts.jsonl.gz", "kept_cuts.jsonl.gz", "report.json", "report.md"]
    assert {c.id for c in CutSet.from_file(out / "kept_cuts.jsonl.gz")} == {c.id for c in result.kept}
    dropped = CutSet.from_file(out / "dropped_cuts.jsonl.gz").to_eager()
    assert dropped["fr-as-de"].custom["dropped_by"] == "language_mismatch"
    assert CutSet.from_file(out / "kept_cuts.jsonl.gz").to_eager()["de-translation"].custom["task"] == "translate"
    assert json.loads((out / "report.json").read_text()) == result.report.to_dict()
    markdown = (out / "report.md").read_text()
    assert "| upper_case | 0 | 0 | 1 | 0 | 0 | 1 |" in markdown  # languages -, de, en, fr, zh, then the total
    assert "12 cuts in: 7 kept (1 of them as X->English translation pairs, 0 with only their translation, " \
           "0 with their labels mended, 0 left to the model to judge), 5 dropped." in markdown


def test_nospeech_cuts_only_face_the_audio_rules():
    cuts = [nospeech("silence"), nospeech("blip", 0.1)]
    _, kept, dropped = clean(cuts, CleanConfig())
    assert kept == {"silence"} and dropped == {"blip": "duration"}


# ------------------------------------------------------------------------------------------------ evaluation


def truth(cut_id, corruption, dropped_by=None, language="en", task=None):
    custom = {"dropped_by": dropped_by} if dropped_by else {}
    if task:
        custom["task"] = task
    return cut_with(cut_id, 3.0, [(0, 3, "Some text here.", language, {"corruption": corruption})], **custom)


def test_evaluate_cleaning_against_hand_computed_figures():
    kept = [
        truth("k-clean-1", None), truth("k-clean-2", None), truth("k-clean-3", None),
        truth("k-drop-words", "drop_words"),
        truth("k-translated", "wrong_language", task="translate"),
        speech("k-no-truth"),  # records nothing: left out
    ]
    dropped = [
        truth("d-case", "strip_case_punct", "lower_case"),
        truth("d-lang", "wrong_language", "language_mismatch"),
        truth("d-clean", None, "duration"),
        truth("d-truncate", "truncate", "speaking_rate"),
        cut_with(
            "d-two-kinds", 6.0,
            [(0, 3, "a", "en", {"corruption": "truncate"}), (3, 3, "b", "en", {"corruption": None})],
            dropped_by="speaking_rate",
        ),
    ]
    evaluation = evaluate_cleaning(CutSet.from_cuts(kept), CutSet.from_cuts(dropped))
    # 10 cuts with truth; corrupt: k-drop-words, k-translated, d-case, d-lang, d-truncate, d-two-kinds = 6
    # dropped 5, of them corrupt 4: precision 4/5; recall 4/6
    assert evaluation["n_cuts"] == 10 and evaluation["n_corrupt"] == 6 and evaluation["n_dropped"] == 5
    assert evaluation["true_positives"] == 4
    assert evaluation["precision"] == pytest.approx(4 / 5) and evaluation["recall"] == pytest.approx(4 / 6)
    assert evaluation["recall_by_kind"] == {
        "drop_words": {"n": 1, "dropped": 0, "recall": 0.0},
        "strip_case_punct": {"n": 1, "dropped": 1, "recall": 1.0},
        "truncate": {"n": 2, "dropped": 2, "recall": 1.0},
        "wrong_language": {"n": 2, "dropped": 1, "recall": 0.5},
    }
    assert evaluation["by_rule"] == {
        "duration": {"dropped": 1, "corrupt": 0, "precision": 0.0, "kinds": {}},
        "speaking_rate": {"dropped": 2, "corrupt": 2, "precision": 1.0, "kinds": {"truncate": 2}},
        "lower_case": {"dropped": 1, "corrupt": 1, "precision": 1.0, "kinds": {"strip_case_punct": 1}},
        "language_mismatch": {"dropped": 1, "corrupt": 1, "precision": 1.0, "kinds": {"wrong_language": 1}},
    }
    assert evaluation["translated"] == {"n": 1, "corrupt": 1}
    assert evaluation["translation_only"] == {"n": 0, "corrupt": 0, "kinds": {}}
    # a cut kept with only its translation: its transcript counts as dropped by its rule
    only_translation = cut_with("k-lower", 3.0, [(0, 3, "some text", "de", {"corruption": "case"})],
                                task="translate", transcript_dropped_by="lower_case")
    evaluation = evaluate_cleaning(CutSet.from_cuts([*kept, only_translation]), CutSet.from_cuts(dropped))
    assert evaluation["n_dropped"] == 6 and evaluation["true_positives"] == 5
    assert evaluation["by_rule"]["lower_case"]["dropped"] == 2 and evaluation["translated"]["n"] == 1
    assert evaluation["translation_only"] == {"n": 1, "corrupt": 1, "kinds": {"case": 1}}
    assert evaluate_cleaning(CutSet.from_cuts([speech("a")]), CutSet.from_cuts([])) == {}


def test_clean_cuts_reports_the_evaluation_when_truth_is_recorded():
    clean_text, upper = SENTENCES["en"][0], SENTENCES["en"][1]
    cuts = [
        cut_with("clean", 3.0, [(0, 3, clean_text, "en", {"corruption": None})]),
        cut_with("stripped", 3.0, [(0, 3, upper.upper(), "en", {"corruption": "strip_case_punct"})]),
        cut_with("subbed", 3.0, [(0, 3, upper, "en", {"corruption": "substitute_words"})]),
    ]
    result = clean_cuts(CutSet.from_cuts(cuts), CleanConfig())
    evaluation = result.report.evaluation
    assert evaluation["precision"] == 1.0 and evaluation["recall"] == 0.5
    assert evaluation["by_rule"]["upper_case"]["kinds"] == {"strip_case_punct": 1}
    markdown = result.report.to_markdown()
    assert "Precision 100.0%, recall 50.0%" in markdown
    assert "| substitute_words | 1 | 0 | 0.0% |" in markdown


# ------------------------------------------------------------------------------------------------ repairs

# Normally cased German and French texts: the corpus the recasing learns its word forms from.
CASED = {
    "de": ["Der Hund sieht die Katze im Garten.", "Heute sucht die Mutter den Hund.",
           "Die Katze schläft im Garten.", "Oft ruft der Vater die Katze."],
    "fr": ["Le chien voit le chat dans le jardin.", "Aujourd'hui, la mère cherche le chien.",
           "Le chat dort dans le jardin.", "Souvent, le père appelle le chat."],
}


def _cased_corpus() -> list:
    return [speech(f"{language}-{i}", text, language) for language, texts in CASED.items()
            for i, text in enumerate(texts)]


def test_repair_case_recases_a_stripped_text_from_the_corpus_forms():
    stripped = {"lower-de": ("heute sieht der vater die katze im garten", "de",
                             "Heute sieht der Vater die Katze im Garten."),
                "upper-fr": ("LE PÈRE VOIT LE CHAT DANS LE JARDIN", "fr", "Le père voit le chat dans le jardin.")}
    cuts = _cased_corpus() + [speech(cut_id, text, language) for cut_id, (text, language, _) in stripped.items()]
    config = CleanConfig(check_language=False, check_rate_outliers=False, check_speaking_rate=False)
    _, kept, dropped = clean(cuts, config)
    assert dropped == {"lower-de": "lower_case", "upper-fr": "upper_case"}  # off by default

    result, kept, dropped = clean(cuts, dataclasses.replace(config, repair_case=True))
    assert not dropped and kept == {c.id for c in cuts}
    mended = {c.id: c for c in result.kept if c.custom and "repaired_by" in c.custom}
    assert set(mended) == set(stripped)
    for cut_id, (text, _, expected) in stripped.items():
        sup = mended[cut_id].supervisions[0]
        # "Vater" and "père" never occur in the corpus: lower case; the rest takes the corpus's forms.
        assert sup.text == expected
        assert sup.custom["original_text"] == text
    assert mended["lower-de"].custom["repaired_by"] == ["lower_case"]
    assert result.report.to_dict()["repaired"] == {"de": 1, "fr": 1, "total": 2}
    assert "2 with their labels mended" in result.report.to_markdown()


def test_repair_case_leaves_a_lower_case_text_with_punctuation_and_one_that_other_rules_drop():
    cuts = _cased_corpus() + [
        speech("punctuated", "gato sieht die katze im garten.", "de"),  # a word replaced, not a case stripped
        speech("too-fast", "die katze sieht den hund im garten", "de", duration=0.3),
    ]
    config = CleanConfig(check_language=False, check_rate_outliers=False, repair_case=True)
    _, _, dropped = clean(cuts, config)
    assert dropped == {"punctuated": "lower_case", "too-fast": "speaking_rate"}


def test_relabel_language_trusts_the_text_but_not_english_on_foreign_audio():
    italian, english = SENTENCES["it"][0], SENTENCES["en"][0]
    cuts = [speech(f"{language}-{i}", text, language) for language in ("es", "it", "en")
            for i, text in enumerate(SENTENCES[language])]
    cuts += [speech("it-as-es", italian, "es"), speech("en-as-es", english, "es"),
             cut_with("es-and-en", 6.0, [(0, 3, SENTENCES["es"][0], "es"), (3, 3, english, "es")])]
    result, kept, dropped = clean(cuts, only("language_mismatch", relabel_language=True))
    assert dropped == {"es-and-en": "language_mismatch"}  # English beside the labelled language: no repair
    relabelled = next(c for c in result.kept if c.id == "it-as-es")
    assert relabelled.supervisions[0].language == "it"
    assert relabelled.supervisions[0].custom["original_language"] == "es"
    assert relabelled.custom["repaired_by"] == ["language_mismatch"]
    pair = next(c for c in result.kept if c.id == "en-as-es")  # a translation pair, as without the repair
    assert pair.custom["task"] == "translate" and pair.supervisions[0].language == "es"
    _, _, dropped = clean(cuts, only("language_mismatch"))
    assert dropped == {"it-as-es": "language_mismatch", "es-and-en": "language_mismatch"}


def test_evaluation_counts_a_mended_label_as_right_only_when_it_equals_the_truth():
    truth = "Der Hund sieht die Katze im Garten."
    cuts = _cased_corpus() + [
        cut_with("mended", 3.0, [(0, 3, "der hund sieht die katze im garten", "de",
                                  {"corruption": "case_punct", "true_text": truth, "true_language": "de"})]),
        cut_with("comma-lost", 3.0, [(0, 3, "heute sucht die mutter den hund", "de",
                                      {"corruption": "case_punct", "true_text": "Heute, sucht die Mutter den Hund.",
                                       "true_language": "de"})]),
    ]
    config = CleanConfig(check_language=False, check_rate_outliers=False, repair_case=True)
    evaluation = clean_cuts(CutSet.from_cuts(cuts), config).report.evaluation
    assert evaluation["repaired"] == {"n": 2, "corrupt": 2, "mended": 1, "kinds": {"case_punct": 2}}
    assert evaluation["n_corrupt"] == 1  # the comma-lost one stays wrong, kept
    assert evaluation["recall"] == 0.0
