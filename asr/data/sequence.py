"""One cut -> one decoder sequence in Whisper's multitask format.

    [<|startofprev|> previous text]  <|startoftranscript|> <|de|> <|transcribe|> <|notimestamps|> text <|endoftext|>
    [<|startofprev|> previous text]  <|startoftranscript|> <|de|> <|translate|> <|0.00|> text<|2.40|><|2.60|> text<|5.00|> <|endoftext|>
                                     <|startoftranscript|> <|nospeech|> <|endoftext|>

The decoder reads the sequence less its last token and learns to predict it less its first. No loss
is taken where the target is given rather than heard: the previous-text prompt, the
start-of-transcript token, the task token and ``<|notimestamps|>`` (the caller chooses them). The
language token is a target, so language ID is learned as its prediction; on audio without speech the
same position predicts ``<|nospeech|>``.

Which form a cut takes (timestamps or not, prompt or not, transcribe or translate) is drawn from the
rates in ``DataConfig`` with the caller's random generator, so a seeded loader is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lhotse.cut import Cut

from asr.config import DataConfig
from asr.data import is_translation_only
from asr.tokenizer import TIME_PRECISION, Tokenizer

IGNORE = -100  # label of a position that takes no loss (torch's cross_entropy ignore_index)


class BadLabel(ValueError):
    """A cut whose label cannot be trained on; the dataset drops it and counts the reason."""

    reason = "bad label"


class SequenceTooLong(BadLabel):
    """The transcript alone does not fit the decoder's context."""

    reason = "transcript too long"


class EmptyTranscript(BadLabel):
    """A speech cut whose transcript has no text (no-speech cuts have no supervisions instead)."""

    reason = "empty transcript"


@dataclass(frozen=True)
class Example:
    """A cut's training targets."""

    tokens: list[int]  # decoder input: the sequence less its last token
    labels: list[int]  # next-token targets, IGNORE where no loss is taken; len(labels) == len(tokens)
    ctc_targets: list[int] | None  # the heard transcript's text ids; None where no CTC target is known
    task: str  # "transcribe", "translate" or "nospeech"
    language: str | None
    # The English translation's text ids, for the translation CTC head (English speech: its transcript);
    # None where no translation is known
    translation_targets: list[int] | None = None


def cut_to_example(cut: Cut, tokenizer: Tokenizer, options: DataConfig, rng: random.Random,
                   n_text_ctx: int = 448) -> Example:
    """Build the decoder sequence and targets of ``cut`` (see the module docstring)."""
    supervisions = sorted(cut.supervisions, key=lambda s: s.start)
    if not supervisions:
        sequence = [tokenizer.sot, tokenizer.no_speech, tokenizer.eot]
        return Example(sequence[:-1], sequence[1:], [], "nospeech", None, [])

    if any(not (s.text or "").strip() for s in supervisions):
        raise EmptyTranscript(f"cut {cut.id}: a supervision has no text")
    language = supervisions[0].language
    translate = _choose_translate(cut, supervisions, options, rng)
    timestamps = rng.random() < options.timestamp_rate
    texts = [_translation(s) if translate else s.text for s in supervisions]
    body = _timed_body(cut, supervisions, texts, tokenizer) if timestamps else _plain_body(texts, tokenizer)
    main = list(tokenizer.sot_sequence(language, "translate" if translate else "transcribe", timestamps))
    main += body + [tokenizer.eot]
    if len(main) > n_text_ctx:
        raise SequenceTooLong(f"cut {cut.id}: {len(main)} tokens exceed the decoder's {n_text_ctx}")

    prompt = []
    prev_text = (cut.custom or {}).get("prev_text")
    if prev_text and rng.random() < options.prompt_rate:
        room = min(options.max_prompt_tokens, n_text_ctx - len(main) - 1)
        history = tokenizer.encode(" " + prev_text.strip())[-room:] if room > 0 else []
        prompt = [tokenizer.sot_prev] + history if history else []

    sequence = prompt + main
    # Positions of the tokens the caller gives rather than the audio: prompt, sot, task, notimestamps.
    n = len(prompt)
    given = {*range(n + 1), n + 2} | (set() if timestamps else {n + 3})
    labels = [IGNORE if k in given else sequence[k] for k in range(1, len(sequence))]
    heard = None if is_translation_only(cut) else _plain_body([s.text for s in supervisions], tokenizer)
    english = reference_text(cut, "translate")
    if english is not None:
        english = _plain_body([english], tokenizer)
    elif language == "en":
        english = heard
    return Example(sequence[:-1], labels, heard, "translate" if translate else "transcribe", language, english)


def _choose_translate(cut: Cut, supervisions, options: DataConfig, rng: random.Random) -> bool:
    if is_translation_only(cut):
        return True  # cleaning found English text on non-English audio: a translation pair only
    if all(_translation(s) for s in supervisions):
        return rng.random() < options.translate_rate
    return False


def reference_text(cut: Cut, task: str) -> str | None:
    """What a model should write for ``cut`` at ``task`` ("transcribe" or "translate"); None where the
    cut has no such reference (no speech, unknown heard words, a missing translation)."""
    if not cut.supervisions:
        return None
    if task == "transcribe":
        if is_translation_only(cut):
            return None
        return " ".join(s.text.strip() for s in cut.supervisions)
    translations = [_translation(s) for s in cut.supervisions]
    return " ".join(t.strip() for t in translations) if all(translations) else None


def _translation(supervision) -> str | None:
    return (supervision.custom or {}).get("translation")


def _plain_body(texts: list[str], tokenizer: Tokenizer) -> list[int]:
    return tokenizer.encode(" " + " ".join(t.strip() for t in texts))


def _timed_body(cut: Cut, supervisions, texts: list[str], tokenizer: Tokenizer) -> list[int]:
    """<|start|> text<|end|> per segment, times relative to the cut, on the 0.02 s grid, never decreasing."""
    body, last = [], 0.0
    for supervision, text in zip(supervisions, texts):
        start = min(max(supervision.start, last), cut.duration)
        end = min(max(supervision.end, start), cut.duration)
        start, end = _on_grid(start), _on_grid(end)
        body += [tokenizer.specials.timestamp_token(start)]
        body += tokenizer.encode(" " + text.strip())
        body += [tokenizer.specials.timestamp_token(end)]
        last = end
    return body


def _on_grid(seconds: float) -> float:
    return round(seconds / TIME_PRECISION) * TIME_PRECISION


def manifest_texts(cutsets: Iterable) -> Iterator[str]:
    """Every transcript and English translation, written as the decoder sees them (" text"); not the
    text of a cut that trains X->English only (its transcript, where it has one, is dropped)."""
    for cuts in cutsets:
        for cut in cuts:
            for supervision in cut.supervisions:
                if not is_translation_only(cut):
                    yield " " + supervision.text.strip()
                translation = (supervision.custom or {}).get("translation")
                if translation:
                    yield " " + translation.strip()
