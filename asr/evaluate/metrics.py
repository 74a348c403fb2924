"""Word and character error rates after a basic, language-independent text normalisation."""

from __future__ import annotations

import unicodedata

import jiwer


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
