"""Cleaning weak (audio, transcript) pairs with simple rules that are each switchable and counted.

Whisper's lesson: large noisy web data trains robust models once it is cleaned by simple, measurable
rules. ``clean_cuts`` runs the rules below over a CutSet and splits it into kept and dropped cuts;
nothing is deleted (kept + dropped = input, by id)::

    result = clean_cuts(CutSet.from_file("manifests/demo/train_cuts.jsonl.gz"), CleanConfig())
    result.write("manifests/demo/clean")  # kept_cuts.jsonl.gz, dropped_cuts.jsonl.gz, report.md, report.json

The rules, in the fixed order that decides a dropped cut's ``custom["dropped_by"]`` (the first rule
that fired); ``custom["dropped_reasons"]`` lists every rule that fired, so each rule's reach can be
measured on its own::

    rule               a cut is dropped when ...
    duration           it is shorter than min_duration or longer than max_duration
    unreadable_audio   its audio cannot be loaded (off by default: it reads every file)
    empty_text         it should have speech but has no supervision, or one without a letter or digit
    text_too_long      its text cannot fit the decoder's context (tokens with a tokenizer, else characters)
    speaking_rate      a supervision's characters (or tokens) per second of its own duration are outside
                       the bounds of its language
    rate_outlier       that speaking rate is far from the corpus's own for the language: more than
                       rate_outlier_mads median absolute deviations of log(characters per second) from
                       the median (a transcript with words missing or added, or of another clip); in a
                       window of n supervisions the bound widens so that a clean window is flagged as
                       often as a clean single clip (each sentence is one more chance to stray)
    upper_case         its text is all upper case            } Whisper's signs of a machine-generated
    lower_case         its text is all lower case            } transcript; case is judged only in scripts
    no_punctuation     a long text has no punctuation at all } that have it (Latin, Greek, Cyrillic, Armenian),
                                                               and not where it is the language's own style
    language_mismatch  a supervision's text is identified (py3langid) as another language than its label
    duplicate_text     a supervision's normalised text is on more than duplicate_max_copies recordings

A language's own style. Where most of the texts a style rule judges in one language break it (more than
``style_majority`` of at least ``style_min_texts``: a corpus normalised by design, such as LibriSpeech's
upper case without punctuation), the break is how the corpus writes, not a sign of a machine
transcript, and dropping it would drop the language: the rule is off for that language. The report
lists each rule turned off, with its counts (``house_style``).

Audio comes first (bad audio is bad whatever its text says), then whether there is a text at all,
then its size, its style and its language; duplicates need the whole corpus, so they come last.
No-speech cuts (``custom["nospeech"]``, no supervisions) have no text: only the two audio rules judge them.

Lengths in scripts written without spaces (Chinese, Japanese, Thai, ...) are counted in characters,
elsewhere in words; each rule with a length threshold has one of each.

X->English translation pairs. Where audio labelled non-English carries a text identified as English,
the text is a translation (subtitles in English over foreign speech), as Whisper found in its web data.
With ``translation_pairs`` on, such a cut is kept, not dropped: every supervision gets
``custom["translation"] = text`` (a translation already recorded there is kept) and the cut gets
``custom["task"] = "translate"``, meaning: train it only with ``<|translate|>``, never as a transcript
of its audio (``text`` stays as given, in English).
A cut that mixes English with text in its labelled language is dropped as a language mismatch.

Translations of dropped transcripts. A recorded English translation (``custom["translation"]``) is a
label of its own, often from another source than the transcript (subtitles in two languages). With
``keep_translations`` on, a cut that only the rules judging the transcript drop (TRANSCRIPT_RULES: rate,
case, punctuation, duplicates) and whose every supervision has a translation is kept for X->English
only: it gets ``custom["task"] = "translate"`` and ``custom["transcript_dropped_by"]`` /
``["transcript_dropped_reasons"]``. The translation is judged by its own rate first: characters per
second of the audio, against the median and MAD of the corpus's translations of the same labelled
language (the rate_outlier bound); an outlier (a label of another clip, translation and all) drops
the cut. Audio, empty or too long texts and a language mismatch (the language label itself is in
doubt) drop the whole cut.

Repairs instead of drops. Some rules say what is wrong with a label whose words are sound: with
``repair_case`` on, a text that only the case rules drop is recased (each word's most common form in
the corpus's normally cased texts of its language, words met only at a sentence's start or never in
lower case, a capital first letter and the usual final mark where the language's texts mostly have
them); with ``relabel_language`` on, a text that only language_mismatch drops, identified as another
non-English language of the corpus, gets that language as its label (the text trusted over the
metadata: a cut whose audio is in yet another language stays wrong, for a trained model to catch).
A cut that any other rule fires on is dropped as before. A mended cut is kept with
``custom["repaired_by"]`` (the rules it answers), each changed supervision with ``custom["original_text"]``
or ``["original_language"]``; the report counts them per language, and against a recorded truth how
many now equal it (those count as right labels in the figures below).

Decisions left to the model. The rules that judge a transcript by its length against its audio
(speaking_rate, rate_outlier) or by its copies (duplicate_text) point at errors that a model's CTC head
can hear: words missing, added or swapped, another clip's transcript. They also fire on right labels
(a slow speaker, a long pause), and a dropped window's audio is lost to training. With
``defer_rules`` (any of TRANSCRIPT_RULES), a cut that only those rules fire on is kept with
``custom["suspect_by"]`` / ``["suspect_reasons"]``, and loss truncation decides (asr.truncation): once
it starts, the transcript takes loss only while the CTC head finds it no worse than a bound set below
the usual one (before, it is held out or trains as any other: optim.truncate_hold_suspects). A
recorded translation that is itself a rate outlier (a label of another clip) still drops the cut. The
report counts these cuts as kept and "deferred", and against a recorded truth how many of them are
wrong.

Language identification. py3langid chooses among the labelled languages found in the input plus
English (or ``lid_languages`` plus English), which sharpens the choice between them; a text in a
language outside that set goes to its nearest candidate, so add the languages a corpus may hide to
``lid_languages``. Before a text counts as an English translation the unrestricted model must agree,
since among {ru, en} any German sentence is "English" with probability 1.0.

Duplicates. A supervision's text is normalised by NFKC, case folding and keeping only letters and
combining marks, so texts that differ only in case, punctuation, spacing, digits or symbols
("Subtitles by X, episode 3" and "subtitles by X episode 4") are one group. A group found on more
than ``duplicate_max_copies`` different recordings (subtitle boilerplate, one transcript pasted onto
many clips) loses every copy: which copy is right, if any, is unknown. Texts shorter than
``duplicate_min_chars`` normalised characters ("thank you very much") are never grouped. Corpora of read
prompts, where many speakers read the same sentence (Common Voice), need this rule off or a larger
``duplicate_max_copies``. Corpora normalised by design (LibriSpeech is upper case without
punctuation) keep their texts: see "A language's own style" above.

The input is read once, or twice when duplicates are checked or the language-ID candidates come from
the corpus (the first pass gathers texts and languages); kept and dropped cuts are held in memory.

Where the manifest records the truth of its labels (the demo corpus's supervision ``custom["corruption"]``),
``evaluate_cleaning`` measures the rules: precision and recall of dropping corrupt cuts, recall per
kind of corruption, and per rule how many of its drops were corrupt. ``clean_cuts`` puts these figures
in its report when the truth is there.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.supervision import SupervisionSegment
from lhotse.utils import fastcopy
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from tqdm import tqdm

from asr.config import TRANSCRIPT_RULES, CleanConfig
from asr.data import is_nospeech, is_suspect, is_translation_only

RULES_VERSION = 3  # bump when the same config would keep other cuts (the main job redoes its cleaning)
MAD_TO_SIGMA = 0.6745  # standard deviations in one median absolute deviation of a normal distribution
RULES = (
    "duration",
    "unreadable_audio",
    "empty_text",
    "text_too_long",
    "speaking_rate",
    "rate_outlier",
    "upper_case",
    "lower_case",
    "no_punctuation",
    "language_mismatch",
    "duplicate_text",
)
# The rules whose drops a repair can answer, and the CleanConfig switch of each.
REPAIRS = {"upper_case": "repair_case", "lower_case": "repair_case", "language_mismatch": "relabel_language"}

NO_LANGUAGE = "-"  # the report's language for cuts without a labelled language (no-speech cuts)


class TextEncoder(Protocol):
    """What the rules need of a tokenizer (``asr.tokenizer.Tokenizer`` is one)."""

    def encode(self, text: str) -> list[int]: ...


# ---------------------------------------------------------------------------------------------------
# Text measures

# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer, kana, CJK ideographs.
_UNSPACED = re.compile(
    "[\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003ffff]"
)
# Scripts whose writers use upper and lower case: Latin, Greek, Cyrillic, Armenian. (Python also calls
# Georgian Mkhedruli lower case, which nobody capitalises.)
_BICAMERAL = re.compile("[A-Za-z\u00c0-\u058f\u1e00-\u1fff]")


def _long_enough(text: str, min_words: int, min_chars: int) -> bool:
    """Whether ``text`` has ``min_words`` words, or ``min_chars`` letters when it is mostly in a
    script written without spaces."""
    letters = sum(map(str.isalpha, text))
    if 2 * len(_UNSPACED.findall(text)) > letters:
        return letters >= min_chars
    return len(text.split()) >= min_words


def _cased_letters(text: str, min_words: int) -> list[str]:
    """The cased letters of ``text``, or none when fewer than ``min_words`` words hold one."""
    words = [[c for c in _BICAMERAL.findall(word) if c.isupper() or c.islower()] for word in text.split()]
    words = [w for w in words if w]
    return [c for w in words for c in w] if len(words) >= min_words else []


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _rate_chars(text: str) -> int:
    """Characters that take time to say: everything but spaces and punctuation."""
    return sum(1 for c in text if not c.isspace() and not _is_punctuation(c))


def normalise_text(text: str) -> str:
    """The key that groups duplicate texts: NFKC, case-folded, letters and combining marks only.

    >>> normalise_text("Subtitles by the Amara.org community (2019)")
    'subtitlesbytheamaraorgcommunity'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if unicodedata.category(c)[0] in "LM")


def _target_tokens(cut: Cut, tokenizer: TextEncoder) -> int:
    """Text tokens (encoded with a leading space, as targets are) + 2 timestamp tokens per supervision."""
    return sum(len(tokenizer.encode(" " + (s.text or "").strip())) + 2 for s in cut.supervisions)


# ---------------------------------------------------------------------------------------------------
# Language identification


# Whisper's codes that py3langid spells differently.
_LID_CODES = {"jw": "jv"}
_WHISPER_CODES = {v: k for k, v in _LID_CODES.items()}


@functools.lru_cache(maxsize=1)
def _full_identifier() -> LanguageIdentifier:
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)  # ~1 s: load once


class LanguageID:
    """Text language identification over a few candidate languages (Whisper's codes).

    >>> identify = LanguageID({"de", "en", "fr"})
    >>> language, probability = identify("Ich glaube, wir sollten jetzt gehen.")  # probability over the 3
    >>> language, round(probability, 2)
    ('de', 1.0)

    Candidates py3langid does not know are left out of ``languages``. Results are memoised.

    Restricting the candidates sharpens the choice between the corpus's languages, but a text in a
    language left out goes to the nearest candidate, often with certainty: among {ru, en} every
    German sentence is English with probability 1.0. ``is_english`` therefore asks the unrestricted
    model before a text is taken for an English translation.
    """

    def __init__(self, languages: Iterable[str]):
        full = _full_identifier()
        candidates = sorted({_LID_CODES.get(code, code) for code in languages} & set(full.labels))
        self._identifier = copy.copy(full)  # set_languages replaces the model's arrays, never edits them
        self._identifier.set_languages(candidates)
        self.languages = frozenset(_WHISPER_CODES.get(code, code) for code in candidates)
        self._classify = functools.lru_cache(maxsize=4096)(self._identifier.classify)
        self._classify_any = functools.lru_cache(maxsize=1024)(full.classify)

    def __call__(self, text: str) -> tuple[str, float]:
        code, probability = self._classify(text)
        return _WHISPER_CODES.get(code, code), probability

    def is_english(self, text: str) -> bool:
        """Whether English wins among all of py3langid's languages, not only the candidates."""
        return self._classify_any(text)[0] == "en"


def _language_verdict(sup: SupervisionSegment, ctx: _Context) -> str | None:
    """"same", "english" (English text on non-English audio), "other", or None when not judged."""
    config, text = ctx.config, sup.text or ""
    if sup.language not in ctx.identify.languages:
        return None
    if not _long_enough(text, config.lid_min_words, config.lid_min_chars):
        return None
    language, probability = ctx.identify(text)
    if language == sup.language:
        return "same"
    if probability < config.lid_min_prob:
        return None
    return "english" if language == "en" and ctx.identify.is_english(text) else "other"


# ---------------------------------------------------------------------------------------------------
# The rules: (cut, context) -> the rule's name when it fires, else None


@dataclass(frozen=True)
class _Context:
    config: CleanConfig
    tokenizer: TextEncoder | None = None
    identify: LanguageID | None = None
    overused_texts: frozenset[str] = frozenset()
    rate_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # language -> median, MAD
    translation_rate_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # the same, of translations
    casing: dict[str, _Casing] = field(default_factory=dict)  # language -> its normally cased texts' habits
    house_style: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # see _house_style


def _text(cut: Cut) -> str:
    return " ".join((s.text or "").strip() for s in cut.supervisions)


def _duration(cut: Cut, ctx: _Context) -> str | None:
    short_or_long = not ctx.config.min_duration <= cut.duration <= ctx.config.max_duration
    return "duration" if short_or_long else None


def _unreadable_audio(cut: Cut, ctx: _Context) -> str | None:
    try:
        return "unreadable_audio" if cut.load_audio().size == 0 else None
    except Exception:  # noqa: BLE001 - whatever the reason, the trainer could not read it either
        return "unreadable_audio"


def _empty_text(cut: Cut, ctx: _Context) -> str | None:
    blank = [not any(c.isalnum() for c in s.text or "") for s in cut.supervisions]
    return "empty_text" if not blank or any(blank) else None


def _text_too_long(cut: Cut, ctx: _Context) -> str | None:
    if ctx.tokenizer is not None:
        too_long = _target_tokens(cut, ctx.tokenizer) > ctx.config.max_text_tokens
    else:
        too_long = len(_text(cut)) > ctx.config.max_text_chars
    return "text_too_long" if too_long else None


def _speaking_rate(cut: Cut, ctx: _Context) -> str | None:
    config, tokenizer = ctx.config, ctx.tokenizer
    for sup in cut.supervisions:
        text, seconds = (sup.text or "").strip(), max(sup.duration, 1e-3)
        low, high = config.rate_bounds(sup.language)
        if not low <= _rate_chars(text) / seconds <= high:
            return "speaking_rate"
        if tokenizer and config.max_tokens_per_second > 0:
            if len(tokenizer.encode(" " + text)) / seconds > config.max_tokens_per_second:
                return "speaking_rate"
    return None


def _log_rate(sup: SupervisionSegment, text: str | None = None) -> float:
    """log(characters per second) of ``text`` (default: the supervision's own) over the supervision."""
    text = sup.text if text is None else text
    return math.log(max(_rate_chars((text or "").strip()), 1) / max(sup.duration, 1e-3))


def _rate_outlier(cut: Cut, ctx: _Context) -> str | None:
    return "rate_outlier" if _is_rate_outlier(cut, ctx.rate_stats, ctx.config, _text_of) else None


def _is_rate_outlier(cut: Cut, stats: dict[str, tuple[float, float]], config: CleanConfig, text_of) -> bool:
    """Whether any supervision's ``text_of(sup)`` is spoken at an outlying rate for its language."""
    bound = outlier_bound(config.rate_outlier_mads, len(cut.supervisions))
    for sup in cut.supervisions:
        if sup.language in stats:
            median, mad = stats[sup.language]
            if abs(_log_rate(sup, text_of(sup)) - median) > bound * mad:
                return True
    return False


def _text_of(sup: SupervisionSegment) -> str:
    return sup.text or ""


def _translation_of(sup: SupervisionSegment) -> str:
    return (sup.custom or {}).get("translation") or ""


def outlier_bound(mads: float, n: int) -> float:
    """The bound, in MADs, for each of ``n`` supervisions such that a clean window of ``n`` strays past
    it as often as one clean supervision strays past ``mads`` (Sidak's correction, rates taken as
    normal: one MAD is 0.6745 standard deviations). ``mads`` itself for n <= 1.

    Without it, every clean long-form window of eight sentences was eight chances to be dropped: with
    30% of the demo's training speech long-form, the rule's precision fell from 0.90 to 0.82."""
    if n <= 1:
        return mads
    normal = statistics.NormalDist()
    p_one = 2 * (1 - normal.cdf(mads * MAD_TO_SIGMA))
    p_each = 1 - (1 - p_one) ** (1 / n)
    return normal.inv_cdf(1 - p_each / 2) / MAD_TO_SIGMA


def _rate_statistics(log_rates: dict[str, list[float]], min_count: int) -> dict[str, tuple[float, float]]:
    """Per language with enough supervisions: the median of log(characters per second) and its MAD."""
    stats = {}
    for language, values in log_rates.items():
        if len(values) >= min_count:
            median = statistics.median(values)
            mad = statistics.median(abs(v - median) for v in values)
            if mad > 0:
                stats[language] = (median, mad)
    return stats


def _upper_case(cut: Cut, ctx: _Context) -> str | None:
    return _style_rule("upper_case", cut, ctx)


def _lower_case(cut: Cut, ctx: _Context) -> str | None:
    return _style_rule("lower_case", cut, ctx)


def _no_punctuation(cut: Cut, ctx: _Context) -> str | None:
    return _style_rule("no_punctuation", cut, ctx)


# The rules that judge a text's style, and their switches in CleanConfig.
_STYLE_RULES = {"upper_case": "check_upper_case", "lower_case": "check_lower_case",
                "no_punctuation": "check_punctuation"}


def _style_rule(rule: str, cut: Cut, ctx: _Context) -> str | None:
    """``rule`` if it judges ``cut`` and fires, unless it is off for the cut's language (its own style)."""
    fires = _style_verdicts(cut, ctx.config).get(rule)
    return rule if fires and rule not in ctx.house_style.get(_language(cut), {}) else None


def _style_verdicts(cut: Cut, config: CleanConfig) -> dict[str, bool]:
    """The style rules that judge ``cut``'s text (long enough, in a script that has what they look at),
    and whether each fires."""
    text, verdicts = _text(cut), {}
    letters = _cased_letters(text, config.case_min_words)
    if letters:
        verdicts["upper_case"] = all(c.isupper() for c in letters)
        verdicts["lower_case"] = all(c.islower() for c in letters)
    exempt = any(s.language in config.punctuation_exempt_languages for s in cut.supervisions)
    if not exempt and _long_enough(text, config.punctuation_min_words, config.punctuation_min_chars):
        verdicts["no_punctuation"] = not any(map(_is_punctuation, text))
    return verdicts


def _house_style(counts: dict[str, Counter], config: CleanConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """language -> {style rule: (texts it judged, texts that broke it)} for the rules that are off for
    the language: most of the texts they judge break them (module docstring). ``counts``: language ->
    Counter of (rule, fired) from ``_style_verdicts``."""
    off = {}
    rules = [rule for rule, switch in _STYLE_RULES.items() if getattr(config, switch)]
    for language, counter in counts.items():
        for rule in rules:
            judged, fired = counter[(rule, True)] + counter[(rule, False)], counter[(rule, True)]
            if judged >= config.style_min_texts and fired > config.style_majority * judged:
                off.setdefault(language, {})[rule] = (judged, fired)
    return off


def _language_mismatch(cut: Cut, ctx: _Context) -> str | None:
    verdicts = {_language_verdict(s, ctx) for s in cut.supervisions}
    english = "english" in verdicts and (not ctx.config.translation_pairs or "same" in verdicts)
    return "language_mismatch" if "other" in verdicts or english else None


def _duplicate_text(cut: Cut, ctx: _Context) -> str | None:
    overused = any(normalise_text(s.text or "") in ctx.overused_texts for s in cut.supervisions)
    return "duplicate_text" if overused else None


# (rule, its switch in CleanConfig, whether it judges no-speech cuts), in RULES order.
_RULES = (
    (_duration, "check_duration", True),
    (_unreadable_audio, "check_audio", True),
    (_empty_text, "check_empty_text", False),
    (_text_too_long, "check_text_length", False),
    (_speaking_rate, "check_speaking_rate", False),
    (_rate_outlier, "check_rate_outliers", False),
    (_upper_case, "check_upper_case", False),
    (_lower_case, "check_lower_case", False),
    (_no_punctuation, "check_punctuation", False),
    (_language_mismatch, "check_language", False),
    (_duplicate_text, "check_duplicates", False),
)
assert tuple(rule.__name__[1:] for rule, _, _ in _RULES) == RULES


def _is_translation_pair(cut: Cut, ctx: _Context) -> bool:
    """A kept cut whose text is English on non-English audio (see the module docstring)."""
    return (
        ctx.identify is not None
        and ctx.config.translation_pairs
        and not is_nospeech(cut)
        and any(_language_verdict(s, ctx) == "english" for s in cut.supervisions)
    )


def _keeps_translation(cut: Cut, reasons: list[str], ctx: _Context) -> bool:
    """Whether a cut that ``reasons`` drop keeps its translation (module docstring)."""
    return (
        ctx.config.keep_translations
        and not is_nospeech(cut)
        and set(reasons) <= TRANSCRIPT_RULES
        and _has_translations(cut)
        and not _translation_rate_outlier(cut, ctx)
    )


def _defers(cut: Cut, reasons: list[str], ctx: _Context) -> bool:
    """Whether the drop of a cut that ``reasons`` fire on is left to the model (module docstring): only
    deferred rules fired, and a recorded translation, where there is one, is no rate outlier."""
    return (
        set(reasons) <= set(ctx.config.defer_rules)
        and not is_nospeech(cut)
        and not (_has_translations(cut) and _translation_rate_outlier(cut, ctx))
    )


def _has_translations(cut: Cut) -> bool:
    """Whether every supervision of ``cut`` records an English translation."""
    return all(_translation_of(s).strip() for s in cut.supervisions)


def _translation_rate_outlier(cut: Cut, ctx: _Context) -> bool:
    """Whether the cut's translations are a rate outlier among the corpus's (another clip's label)."""
    return _is_rate_outlier(cut, ctx.translation_rate_stats, ctx.config, _translation_of)


def _as_suspect(cut: Cut, reasons: list[str]) -> Cut:
    return fastcopy(cut, custom={**(cut.custom or {}), "suspect_by": reasons[0], "suspect_reasons": reasons})


def _as_translation_only(cut: Cut, reasons: list[str]) -> Cut:
    custom = {**(cut.custom or {}), "task": "translate",
              "transcript_dropped_by": reasons[0], "transcript_dropped_reasons": reasons}
    return fastcopy(cut, custom=custom)


def _as_translation_pair(cut: Cut) -> Cut:
    supervisions = [
        fastcopy(s, custom={**(s.custom or {}), "translation": (s.custom or {}).get("translation") or s.text})
        for s in cut.supervisions
    ]
    return fastcopy(cut, supervisions=supervisions, custom={**(cut.custom or {}), "task": "translate"})


# ---------------------------------------------------------------------------------------------------
# Repairs: (cut, context) -> the cut with its labels mended (module docstring)


def _core(word: str) -> str:
    """``word`` without the punctuation at its ends ("l'uccello" keeps its apostrophe)."""
    start, end = 0, len(word)
    while start < end and _is_punctuation(word[start]):
        start += 1
    while end > start and _is_punctuation(word[end - 1]):
        end -= 1
    return word[start:end]


@dataclass
class _Casing:
    """How a language's normally cased texts write their words (not counting a text's first word),
    begin and end."""

    forms: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # casefolded -> forms
    texts: int = 0
    capitalised: int = 0  # texts whose first cased letter is upper case
    endings: Counter = field(default_factory=Counter)  # last character when punctuation, else ""

    def add(self, text: str) -> None:
        words = text.split()
        if not words:
            return
        self.texts += 1
        first = next((c for c in text if c.isupper() or c.islower()), "")
        self.capitalised += first.isupper()
        last = text.rstrip()[-1]
        self.endings[last if _is_punctuation(last) else ""] += 1
        for word in words[1:]:
            core = _core(word)
            if core:
                self.forms[core.casefold()][core] += 1

    def recase(self, text: str) -> str:
        words = []
        for word in text.split():
            core = _core(word)
            forms = self.forms.get(core.casefold())
            form = forms.most_common(1)[0][0] if forms else core.lower()
            words.append(word.replace(core, form, 1) if core else word)
        recased = " ".join(words)
        if 2 * self.capitalised > self.texts:
            i = next((i for i, c in enumerate(recased) if c.isupper() or c.islower()), None)
            if i is not None:
                recased = recased[:i] + recased[i].upper() + recased[i + 1:]
        ending, n = self.endings.most_common(1)[0] if self.endings else ("", 0)
        if ending and 2 * n > self.texts and recased and not _is_punctuation(recased[-1]):
            recased += ending
        return recased


def _normally_cased(text: str) -> bool:
    letters = _cased_letters(text, 1)
    return any(c.isupper() for c in letters) and any(c.islower() for c in letters)


def _repairable(cut: Cut, reasons: list[str], ctx: _Context) -> bool:
    """Whether every rule that fired on ``cut`` has its repair switched on, and the repairs apply."""
    if not reasons or is_nospeech(cut) or not all(getattr(ctx.config, REPAIRS.get(r, ""), False) for r in reasons):
        return False
    if "language_mismatch" in reasons:  # only texts in another of the corpus's languages, none in English
        verdicts = {_language_verdict(s, ctx) for s in cut.supervisions}
        if "english" in verdicts:
            return False
    # Case is mended where the text lost its punctuation with it, as a normalised transcript does; a
    # lower case text that keeps its marks is something else (a fragment, a word replaced), and is dropped.
    return not ({"upper_case", "lower_case"} & set(reasons)) or all(
        s.language in ctx.casing and _unpunctuated(s.text or "")
        for s in cut.supervisions if _cased_letters(s.text or "", 1))


def _unpunctuated(text: str) -> bool:
    """Whether no word of ``text`` begins or ends with punctuation ("l'uccello" may keep its apostrophe)."""
    return all(_core(word) == word for word in text.split())


def _repaired(cut: Cut, reasons: list[str], ctx: _Context) -> Cut:
    supervisions = []
    for s in cut.supervisions:
        text, language, custom = s.text or "", s.language, dict(s.custom or {})
        if "language_mismatch" in reasons and _language_verdict(s, ctx) == "other":
            language = ctx.identify(text)[0]
            custom["original_language"] = s.language
        if {"upper_case", "lower_case"} & set(reasons) and _cased_letters(text, 1) and not _normally_cased(text):
            text = ctx.casing[s.language].recase(text)
            custom["original_text"] = s.text
        supervisions.append(fastcopy(s, text=text, language=language, custom=custom))
    return fastcopy(cut, supervisions=supervisions, custom={**(cut.custom or {}), "repaired_by": reasons})


# ---------------------------------------------------------------------------------------------------
# The report


def _language(cut: Cut) -> str:
    return next((s.language for s in cut.supervisions if s.language), NO_LANGUAGE)


def _with_total(counts: Counter) -> dict[str, int]:
    return {**dict(sorted(counts.items())), "total": sum(counts.values())}


@dataclass
class CleanReport:
    """Counts of cuts per language: in, kept, converted to translation pairs, kept with only their
    translation, and per rule both the transcripts it dropped (it fired first) and those it fired on at
    all. A cut kept for its translation counts as kept and under the rules that dropped its transcript."""

    rules: tuple[str, ...]  # the rules that ran, in order
    config: dict[str, Any] = field(default_factory=dict)
    cuts: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    translated: Counter = field(default_factory=Counter)
    translation_only: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)  # kept with their labels mended
    deferred: Counter = field(default_factory=Counter)  # kept for the model to judge (defer_rules)
    dropped_by: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    fired: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    evaluation: dict[str, Any] = field(default_factory=dict)  # evaluate_cleaning's figures, when known
    house_style: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # rules off per language

    def count(self, language: str, reasons: list[str], translated: bool, translation_only: bool = False,
              repaired: bool = False, deferred: bool = False) -> None:
        self.cuts[language] += 1
        for reason in reasons:
            self.fired[reason][language] += 1
        if reasons and not repaired:
            self.dropped_by[reasons[0]][language] += 1
        if translation_only or repaired or deferred or not reasons:
            self.kept[language] += 1
            self.translated[language] += translated
            self.translation_only[language] += translation_only
            self.repaired[language] += repaired
            self.deferred[language] += deferred

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; each count map has its languages and a "total"."""
        dropped = self.cuts - self.kept
        return {
            "rules": list(self.rules),
            "cuts": _with_total(self.cuts),
            "kept": _with_total(self.kept),
            "dropped": _with_total(dropped),
            "translated": _with_total(+self.translated),
            "translation_only": _with_total(+self.translation_only),
            "repaired": _with_total(+self.repaired),
            "deferred": _with_total(+self.deferred),
            "dropped_by": {rule: _with_total(self.dropped_by[rule]) for rule in self.rules},
            "fired": {rule: _with_total(self.fired[rule]) for rule in self.rules},
            "house_style": {language: {rule: {"judged": judged, "broke": broke}
                                       for rule, (judged, broke) in rules.items()}
                            for language, rules in sorted(self.house_style.items())},
            "evaluation": self.evaluation,
            "config": self.config,
        }

    def to_markdown(self) -> str:
        report = self.to_dict()
        languages = sorted(self.cuts)
        total = report["cuts"]["total"]
        lines = [
            "# Cleaning report",
            "",
            f"{total} cuts in: {report['kept']['total']} kept ({report['translated']['total']} of them as "
            f"X->English translation pairs, {report['translation_only']['total']} with only their translation, "
            f"{report['repaired']['total']} with their labels mended, "
            f"{report['deferred']['total']} left to the model to judge), "
            f"{report['dropped']['total']} dropped.",
            "",
            "## Transcripts dropped, by the first rule that fired",
            "",
            "A cut kept with only its translation, or left to the model to judge (deferred), counts under its",
            "rule and as kept, not as dropped; a cut kept with its labels mended counts as kept and repaired,",
            "under every rule that fired below.",
            "",
            *_table(languages, {**report["dropped_by"], "**dropped**": report["dropped"], "kept": report["kept"],
                                "translated": report["translated"], "translation only": report["translation_only"],
                                "repaired": report["repaired"], "deferred": report["deferred"],
                                "in": report["cuts"]}),
            "",
            "## Every rule that fired (a cut counts under each)",
            "",
            *_table(languages, report["fired"]),
        ]
        if self.house_style:
            lines += ["", "## Rules off where they are the language's own style", "",
                      "Most of the texts these rules judge in the language break them (clean.style_majority):", ""]
            lines += [f"- {language}: {rule}, {judged - broke} of {judged} judged texts keep it"
                      for language, rules in sorted(self.house_style.items())
                      for rule, (judged, broke) in rules.items()]
        if self.evaluation:
            lines += ["", *_evaluation_markdown(self.evaluation)]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        """Write ``report.md`` and ``report.json`` into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        report = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        (out_dir / "report.json").write_text(report + "\n", encoding="utf-8")


def _table(languages: list[str], rows: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| | " + " | ".join(languages) + " | total |", "|---" + "|---:" * (len(languages) + 1) + "|"]
    for name, counts in rows.items():
        cells = [str(counts.get(language, 0)) for language in languages]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {counts['total']} |")
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _evaluation_markdown(evaluation: dict[str, Any]) -> list[str]:
    lines = [
        "## Against the recorded truth",
        "",
        f"{evaluation['n_cuts']} cuts with a recorded truth, {evaluation['n_corrupt']} of them corrupt; "
        f"{evaluation['n_dropped']} dropped, {evaluation['true_positives']} of them corrupt.",
        f"Precision {_percent(evaluation['precision'])}, recall {_percent(evaluation['recall'])}; "
        f"{evaluation['translated']['corrupt']} of {evaluation['translated']['n']} translation pairs corrupt.",
        _translation_only_line(evaluation["translation_only"]),
        _repaired_line(evaluation["repaired"]),
        *([_deferred_line(evaluation["deferred"])] if evaluation.get("deferred", {}).get("n") else []),
        "",
        "| corruption | cuts | dropped | recall |",
        "|---|---:|---:|---:|",
    ]
    for kind, row in evaluation["recall_by_kind"].items():
        lines.append(f"| {kind} | {row['n']} | {row['dropped']} | {_percent(row['recall'])} |")
    lines += ["", "| rule | dropped | corrupt | precision |", "|---|---:|---:|---:|"]
    for rule, row in evaluation["by_rule"].items():
        lines.append(f"| {rule} | {row['dropped']} | {row['corrupt']} | {_percent(row['precision'])} |")
    return lines


def _translation_only_line(figures: dict[str, Any]) -> str:
    return (f"{figures['n']} cuts kept with only their translation (counted above as dropped), "
            f"{figures['corrupt']} of them with a wrong transcript" + _kinds_end(figures["kinds"]))


def _repaired_line(figures: dict[str, Any]) -> str:
    return (f"{figures['n']} cuts kept with their labels mended (counted above as right where now equal to the "
            f"truth), {figures['corrupt']} of them wrong before, {figures['mended']} of those now equal to the truth"
            + _kinds_end(figures["kinds"]))


def _deferred_line(figures: dict[str, Any]) -> str:
    return (f"{figures['n']} cuts left to the model to judge (counted above as kept), "
            f"{figures['corrupt']} of them with a wrong transcript" + _kinds_end(figures["kinds"]))


def _kinds_end(kinds: dict[str, int]) -> str:
    """A report line's end: " (kind n, kind n)." or "." when there are none."""
    listed = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
    return f" ({listed})." if listed else "."


@dataclass
class CleanResult:
    kept: CutSet
    dropped: CutSet  # each with custom "dropped_by" and "dropped_reasons"
    report: CleanReport

    def write(self, out_dir: str | Path) -> None:
        """Write ``kept_cuts.jsonl.gz``, ``dropped_cuts.jsonl.gz``, ``report.md`` and ``report.json``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.kept.to_file(out_dir / "kept_cuts.jsonl.gz")
        self.dropped.to_file(out_dir / "dropped_cuts.jsonl.gz")
        self.report.write(out_dir)


# ---------------------------------------------------------------------------------------------------
# Cleaning


def _audio_id(cut: Cut) -> str:
    return cut.recording.id if getattr(cut, "recording", None) is not None else cut.id


@dataclass
class _Survey:
    languages: set[str]  # labelled languages
    overused_texts: frozenset[str]  # normalised texts on too many recordings
    rate_stats: dict[str, tuple[float, float]]  # language -> median and MAD of log(characters per second)
    translation_rate_stats: dict[str, tuple[float, float]]  # the same for the translations, by labelled language
    casing: dict[str, _Casing] = field(default_factory=dict)  # language -> its normally cased texts' habits
    style: dict[str, Counter] = field(default_factory=dict)  # language -> (style rule, fired) -> texts


def _survey(cuts: Iterable[Cut], config: CleanConfig) -> _Survey:
    """First pass over the corpus, for the rules that judge a cut against the others."""
    languages, recordings_by_text = set(), defaultdict(set)
    log_rates, translation_log_rates = defaultdict(list), defaultdict(list)
    casing, style = defaultdict(_Casing), defaultdict(Counter)
    for cut in cuts:
        if not is_nospeech(cut):
            style[_language(cut)].update(_style_verdicts(cut, config).items())
        for sup in cut.supervisions:
            languages.add(sup.language)
            if config.repair_case and _normally_cased(sup.text or ""):
                casing[sup.language].add(sup.text)
            key = normalise_text(sup.text or "")
            if not is_nospeech(cut) and len(key) >= config.duplicate_min_chars:
                recordings_by_text[key].add(_audio_id(cut))
            if _rate_chars(sup.text or ""):
                log_rates[sup.language].append(_log_rate(sup))
            if _rate_chars(_translation_of(sup)):
                translation_log_rates[sup.language].append(_log_rate(sup, _translation_of(sup)))
    overused = frozenset(k for k, ids in recordings_by_text.items() if len(ids) > config.duplicate_max_copies)
    return _Survey(languages - {None}, overused, _rate_statistics(log_rates, config.rate_outlier_min_count),
                   _rate_statistics(translation_log_rates, config.rate_outlier_min_count), dict(casing), dict(style))


def _context(cuts: Iterable[Cut], config: CleanConfig, tokenizer: TextEncoder | None) -> _Context:
    languages = set(config.lid_languages)
    survey = _Survey(set(), frozenset(), {}, {})
    styles = config.check_upper_case or config.check_lower_case or config.check_punctuation
    if (config.check_duplicates or config.check_rate_outliers or config.keep_translations or config.repair_case
            or config.defer_rules or (styles and config.style_majority < 1.0)
            or (config.check_language and not config.lid_languages)):
        survey = _survey(cuts, config)
        languages = languages or survey.languages
    identify = LanguageID(languages | {"en"}) if config.check_language else None
    return _Context(config, tokenizer, identify,
                    survey.overused_texts if config.check_duplicates else frozenset(),
                    survey.rate_stats if config.check_rate_outliers else {}, survey.translation_rate_stats,
                    survey.casing, _house_style(survey.style, config))


def _reasons(cut: Cut, rules: list[tuple], ctx: _Context) -> list[str]:
    """The names of the rules that fire on ``cut``, in order."""
    if is_nospeech(cut):
        rules = [(rule, judges_nospeech) for rule, judges_nospeech in rules if judges_nospeech]
    return [reason for rule, _ in rules if (reason := rule(cut, ctx))]


def clean_cuts(
    cuts: Iterable[Cut],
    config: CleanConfig = CleanConfig(),
    tokenizer: TextEncoder | None = None,
    progress: bool = False,
) -> CleanResult:
    """Split ``cuts`` into kept and dropped by the rules that ``config`` switches on (module docstring).

    ``tokenizer`` (anything with ``encode(text) -> list[int]``) makes text length and speaking rate
    count tokens too; without it they count characters only.
    """
    ctx = _context(cuts, config, tokenizer)
    rules = [(rule, judges_nospeech) for rule, switch, judges_nospeech in _RULES if getattr(config, switch)]
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    report = CleanReport(rules=tuple(rule.__name__[1:] for rule, _ in rules), config=settings,
                         house_style=ctx.house_style)
    kept, dropped = [], []
    for cut in tqdm(cuts, desc="cleaning", disable=not progress):
        reasons = _reasons(cut, rules, ctx)
        translated = not reasons and _is_translation_pair(cut, ctx)
        repaired = _repairable(cut, reasons, ctx)
        deferred = bool(reasons) and not repaired and _defers(cut, reasons, ctx)
        translation_only = bool(reasons) and not (repaired or deferred) and _keeps_translation(cut, reasons, ctx)
        report.count(_language(cut), reasons, translated, translation_only, repaired, deferred)
        if repaired:
            kept.append(_repaired(cut, reasons, ctx))
        elif deferred:
            kept.append(_as_suspect(cut, reasons))
        elif translation_only:
            kept.append(_as_translation_only(cut, reasons))
        elif reasons:
            custom = {**(cut.custom or {}), "dropped_by": reasons[0], "dropped_reasons": reasons}
            dropped.append(fastcopy(cut, custom=custom))
        else:
            kept.append(_as_translation_pair(cut) if translated else cut)
    result = CleanResult(CutSet.from_cuts(kept), CutSet.from_cuts(dropped), report)
    report.evaluation = evaluate_cleaning(result.kept, result.dropped)
    return result


# ---------------------------------------------------------------------------------------------------
# Measuring the rules against a recorded truth


def _corruptions(cut: Cut, before_repair: bool = False) -> set[str] | None:
    """The kinds of corruption of a cut's labels: empty when clean, None when no truth is recorded.
    A supervision that a repair made equal to its recorded truth counts as clean, unless ``before_repair``."""
    recorded = [s for s in cut.supervisions if s.custom and "corruption" in s.custom]
    if not recorded:
        return None
    return {s.custom["corruption"] for s in recorded
            if s.custom["corruption"] is not None and (before_repair or not _mended(s))}


def _mended(sup: SupervisionSegment) -> bool:
    """Whether a repair changed ``sup`` and its text and language now equal the recorded truth."""
    custom = sup.custom or {}
    return (("original_text" in custom or "original_language" in custom)
            and sup.text == custom.get("true_text", sup.text) and sup.language == custom.get("true_language", sup.language))


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def format_ratio(value: float | None) -> str:
    """One of ``evaluate_cleaning``'s ratios for a report line: "–" where it is None (nothing to divide by)."""
    return "–" if value is None else f"{value:.3f}"


def evaluate_left_out(cuts: Iterable[Cut], left_out: Container[str], rule: str) -> dict[str, Any]:
    """``evaluate_cleaning``'s figures of a filter after cleaning (loss truncation, scoring) that left out
    the cuts whose ids are in ``left_out``, over ``cuts`` (the ones it judged): n_cuts, n_corrupt,
    true_positives, precision, recall, recall_by_kind; {} where no cut records its truth."""
    kept, dropped = [], []
    for cut in cuts:
        if cut.id in left_out:
            dropped.append(fastcopy(cut, custom={**(cut.custom or {}), "dropped_by": rule}))
        else:
            kept.append(cut)
    truth = evaluate_cleaning(kept, dropped)
    return {key: truth[key] for key in ("n_cuts", "n_corrupt", "true_positives", "precision", "recall",
                                        "recall_by_kind")} if truth else {}


def evaluate_cleaning(kept: Iterable[Cut], dropped: Iterable[Cut]) -> dict[str, Any]:
    """Precision and recall of dropping corrupt cuts, where supervisions record ``custom["corruption"]``.

    A cut is corrupt when any of its supervisions' corruption is not None; cuts that record no truth
    are left out. Returns {} when no cut records one, else (all JSON-safe; a ratio is None when its
    denominator is 0)::

        n_cuts, n_corrupt, n_dropped, true_positives, precision, recall
        recall_by_kind  {kind: {n, dropped, recall}}          a cut counts under each of its kinds
        by_rule         {rule: {dropped, corrupt, precision, kinds: {kind: n}}}   by "dropped_by"
        translated      {n, corrupt}                          kept cuts turned into translation pairs
        translation_only {n, corrupt, kinds: {kind: n}}       cuts kept with only their translation
        repaired        {n, corrupt, mended, kinds: {kind: n}}  cuts kept with mended labels: wrong before,
                                                              now equal to the truth (then counted as right)
        deferred        {n, corrupt, kinds: {kind: n}}        cuts kept for the model to judge (counted as kept)

    A cut kept with only its translation counts as dropped: its transcript is.
    """
    by_kind, by_rule = defaultdict(Counter), defaultdict(Counter)
    kinds_by_rule = defaultdict(Counter)
    n_cuts = n_corrupt = n_dropped = true_positives = translated = translated_corrupt = 0
    translation_only, translation_only_kinds = Counter(), Counter()
    repaired, repaired_kinds = Counter(), Counter()
    deferred, deferred_kinds = Counter(), Counter()
    for cut, is_dropped in [*((c, False) for c in kept), *((c, True) for c in dropped)]:
        kinds = _corruptions(cut)
        if kinds is None:
            continue
        if (cut.custom or {}).get("repaired_by"):
            before = _corruptions(cut, before_repair=True)
            repaired.update(n=1, corrupt=int(bool(before)), mended=int(bool(before) and not kinds))
            repaired_kinds.update(before)
        if not is_dropped and is_suspect(cut):
            deferred.update(n=1, corrupt=int(bool(kinds)))
            deferred_kinds.update(kinds)
        rule = (cut.custom or {}).get("dropped_by" if is_dropped else "transcript_dropped_by")
        if rule and not is_dropped:
            translation_only.update(n=1, corrupt=int(bool(kinds)))
            translation_only_kinds.update(kinds)
            is_dropped = True
        n_cuts += 1
        n_corrupt += bool(kinds)
        n_dropped += is_dropped
        true_positives += is_dropped and bool(kinds)
        for kind in kinds:
            by_kind[kind].update(n=1, dropped=int(is_dropped))
        if is_dropped:
            by_rule[rule].update(dropped=1, corrupt=int(bool(kinds)))
            kinds_by_rule[rule].update(kinds)
        elif is_translation_only(cut):
            translated += 1
            translated_corrupt += bool(kinds)
    if not n_cuts:
        return {}
    return {
        "n_cuts": n_cuts,
        "n_corrupt": n_corrupt,
        "n_dropped": n_dropped,
        "true_positives": true_positives,
        "precision": _ratio(true_positives, n_dropped),
        "recall": _ratio(true_positives, n_corrupt),
        "recall_by_kind": {
            kind: {"n": c["n"], "dropped": c["dropped"], "recall": _ratio(c["dropped"], c["n"])}
            for kind, c in sorted(by_kind.items())
        },
        "by_rule": {
            rule: {
                "dropped": by_rule[rule]["dropped"],
                "corrupt": by_rule[rule]["corrupt"],
                "precision": _ratio(by_rule[rule]["corrupt"], by_rule[rule]["dropped"]),
                "kinds": dict(sorted(kinds_by_rule[rule].items())),
            }
            for rule in RULES
            if rule in by_rule
        },
        "translated": {"n": translated, "corrupt": translated_corrupt},
        "translation_only": {
            "n": translation_only["n"],
            "corrupt": translation_only["corrupt"],
            "kinds": dict(sorted(translation_only_kinds.items())),
        },
        "repaired": {
            "n": repaired["n"],
            "corrupt": repaired["corrupt"],
            "mended": repaired["mended"],
            "kinds": dict(sorted(repaired_kinds.items())),
        },
        "deferred": {
            "n": deferred["n"],
            "corrupt": deferred["corrupt"],
            "kinds": dict(sorted(deferred_kinds.items())),
        },
    }
