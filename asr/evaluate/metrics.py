"""Scores for each task of a multitask speech model, as plain dicts that go into ``metrics.json``.

    word_error_rates(refs, hyps, languages)   # transcription: WER and CER per language and overall
    translation_scores(refs, hyps)            # X -> English: corpus BLEU and chrF (sacrebleu)
    language_id(ref_languages, hyp_languages) # accuracy and confusion counts
    no_speech(is_silent, predicted_silent)    # precision, recall, F1 with no-speech as the positive class
    timestamp_error(ref_segments, hyp_segments)  # mean absolute error of segment boundaries, in seconds

``normalise`` and ``error_rates`` are the quick, language-independent versions used during training.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from functools import cache

import jiwer
import sacrebleu
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

# Written without spaces between words: their WER is computed on characters.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue"})


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation and symbols removed, whitespace collapsed.

    >>> normalise("Heute sieht die Katze, den Hund!")
    'heute sieht die katze den hund'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = (c if unicodedata.category(c)[0] not in "PS" else " " for c in text)
    return " ".join("".join(kept).split())


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER (errors over reference words or characters) of normalised texts."""
    pairs = [(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # a reference with no words has no error rate
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


@cache
def _normaliser(language: str):
    if language == "en":
        return EnglishTextNormalizer()
    return BasicTextNormalizer(remove_diacritics=False)


def normalise_for(language: str, text: str) -> str:
    """Whisper's normalisation: its English normaliser (spellings, numbers, contractions) for "en",
    its basic one (case, brackets, punctuation and symbols; diacritics kept) for any other language.
    Whitespace is collapsed.

    >>> normalise_for("en", "Mr. Smith's 2 cats")
    'mister smith is 2 cats'
    >>> normalise_for("de", "Grüße, Straße!")
    'grüße straße'
    """
    return " ".join(_normaliser(language)(text).split())


def scoring_units(language: str, text: str) -> str:
    """The normalised text as space-separated scoring units: words, or characters for languages
    written without spaces."""
    text = normalise_for(language, text)
    return " ".join(text.replace(" ", "")) if language in NO_SPACE_LANGUAGES else text


def word_error_rates(references: list[str], hypotheses: list[str], languages: list[str]) -> dict:
    """WER and CER per language and overall, after ``normalise_for`` each text's language.

    For the languages in ``NO_SPACE_LANGUAGES`` the "words" are characters (spaces removed), so their
    WER and CER are the same number. A reference with no words after normalisation has no error rate:
    it is skipped and counted in ``skipped_empty``. Two overall numbers:

    - ``mean_over_languages``: the unweighted mean of the per-language rates (each language counts once);
    - ``pooled``: all errors over all reference units, so large languages weigh more.

        {"languages": {"de": {"wer", "cer", "word_errors", "words", "char_errors", "chars",
                              "utterances", "skipped_empty", "unit": "word" | "character"}, ...},
         "mean_over_languages": {"wer", "cer"},
         "pooled": {"wer", "cer", "word_errors", "words", "char_errors", "chars", "utterances", "skipped_empty"}}

    A rate with nothing to score is None.
    """
    grouped = defaultdict(lambda: ([], [], 0))  # language -> (references, hypotheses, skipped)
    for reference, hypothesis, language in zip(references, hypotheses, languages, strict=True):
        refs, hyps, skipped = grouped[language]
        reference = scoring_units(language, reference)
        if not reference:
            grouped[language] = (refs, hyps, skipped + 1)
            continue
        refs.append(reference)
        hyps.append(scoring_units(language, hypothesis))
    per_language = {language: _counts(language, *grouped[language]) for language in sorted(grouped)}
    pooled = {key: sum(c[key] for c in per_language.values())
              for key in ("word_errors", "words", "char_errors", "chars", "utterances", "skipped_empty")}
    scored = [c for c in per_language.values() if c["utterances"]]
    return {
        "languages": per_language,
        "mean_over_languages": {rate: _mean([c[rate] for c in scored]) for rate in ("wer", "cer")},
        "pooled": {**_rates(pooled), **pooled},
    }


def edit_counts(alignment) -> tuple[int, int]:
    """(errors, reference units) of a jiwer alignment (``process_words`` or ``process_characters``)."""
    return (alignment.substitutions + alignment.deletions + alignment.insertions,
            alignment.substitutions + alignment.deletions + alignment.hits)


def _counts(language: str, refs: list[str], hyps: list[str], skipped: int) -> dict:
    counts = {"word_errors": 0, "words": 0, "char_errors": 0, "chars": 0}
    if refs:
        counts["word_errors"], counts["words"] = edit_counts(jiwer.process_words(refs, hyps))
        if language in NO_SPACE_LANGUAGES:  # the words are already characters
            counts["char_errors"], counts["chars"] = counts["word_errors"], counts["words"]
        else:
            counts["char_errors"], counts["chars"] = edit_counts(jiwer.process_characters(refs, hyps))
    unit = "character" if language in NO_SPACE_LANGUAGES else "word"
    return {**_rates(counts), **counts, "utterances": len(refs), "skipped_empty": skipped, "unit": unit}


def _rates(counts: dict) -> dict:
    return {"wer": counts["word_errors"] / counts["words"] if counts["words"] else None,
            "cer": counts["char_errors"] / counts["chars"] if counts["chars"] else None}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def translation_scores(references: list[str], hypotheses: list[str]) -> dict[str, float | None]:
    """Corpus BLEU (13a tokenisation) and chrF of raw, unnormalised texts, on sacrebleu's 0-100 scale;
    None for no pairs."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return {"bleu": None, "chrf": None}
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}


def language_id(references: list[str], hypotheses: list[str]) -> dict:
    """Accuracy of detected languages and the confusion counts ``{reference: {detected: count}}``;
    ``labels`` is every language seen on either side, sorted. Accuracy is None for no pairs."""
    pairs = Counter(zip(references, hypotheses, strict=True))
    confusion = defaultdict(dict)
    for (reference, hypothesis), count in sorted(pairs.items()):
        confusion[reference][hypothesis] = count
    correct = sum(count for (r, h), count in pairs.items() if r == h)
    return {"accuracy": correct / len(references) if references else None,
            "confusion": dict(confusion),
            "labels": sorted(set(references) | set(hypotheses)),
            "n": len(references)}


def no_speech(references: list[bool], hypotheses: list[bool]) -> dict:
    """Detection of no-speech (True = no speech), no-speech being the positive class.

    precision = tp / (tp + fp), None when nothing was predicted as no-speech;
    recall    = tp / (tp + fn), None when no reference is no-speech;
    f1        = 2 tp / (2 tp + fp + fn), None when neither side has a positive (0 when only one has).
    """
    pairs = Counter(zip(map(bool, references), map(bool, hypotheses), strict=True))
    tp, fp, fn, tn = pairs[True, True], pairs[False, True], pairs[True, False], pairs[False, False]
    return {"precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "accuracy": (tp + tn) / len(references) if references else None,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


Segment = tuple  # (start seconds or None, end seconds or None, text)


def timestamp_error(references: list[list[Segment]], hypotheses: list[list[Segment]]) -> dict:
    """Mean absolute error, in seconds, of the start and end times of matched segments.

    ``references`` and ``hypotheses`` hold one list of ``(start, end, text)`` per recording. Reference
    segments without times (start or end None) are left out and counted in ``untimed``. Within a
    recording, segments are matched in order (no crossings) so that the total temporal overlap of the
    matched pairs is the largest possible; only overlapping segments are matched. Each matched pair adds
    two boundaries (start and end) to ``n``. Segments left without a partner are counted in
    ``unmatched_references`` and ``unmatched_hypotheses``; they add nothing to the error.

        {"mae": seconds or None, "n": boundaries, "matched": pairs,
         "unmatched_references", "unmatched_hypotheses", "untimed"}
    """
    total, matched, untimed, lost_refs, lost_hyps = 0.0, 0, 0, 0, 0
    for refs, hyps in zip(references, hypotheses, strict=True):
        timed = [s for s in refs if s[0] is not None and s[1] is not None]
        untimed += len(refs) - len(timed)
        hyps = [s for s in hyps if s[0] is not None and s[1] is not None]
        pairs = _match_segments(timed, hyps)
        total += sum(abs(r[0] - h[0]) + abs(r[1] - h[1]) for r, h in pairs)
        matched += len(pairs)
        lost_refs += len(timed) - len(pairs)
        lost_hyps += len(hyps) - len(pairs)
    n = 2 * matched
    return {"mae": total / n if n else None, "n": n, "matched": matched,
            "unmatched_references": lost_refs, "unmatched_hypotheses": lost_hyps, "untimed": untimed}


def _overlap(a: Segment, b: Segment) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _match_segments(refs: list[Segment], hyps: list[Segment]) -> list[tuple[Segment, Segment]]:
    """The in-order pairing of largest total overlap (dynamic programming, like an edit distance)."""
    best = [[0.0] * (len(hyps) + 1) for _ in range(len(refs) + 1)]  # best[i][j]: refs[i:] with hyps[j:]
    for i in reversed(range(len(refs))):
        for j in reversed(range(len(hyps))):
            overlap = _overlap(refs[i], hyps[j])
            paired = overlap + best[i + 1][j + 1] if overlap > 0 else 0.0
            best[i][j] = max(paired, best[i + 1][j], best[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < len(refs) and j < len(hyps):
        overlap = _overlap(refs[i], hyps[j])
        if overlap > 0 and best[i][j] == overlap + best[i + 1][j + 1]:
            pairs.append((refs[i], hyps[j]))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs
