"""Decode a CutSet with a model and score every task it can be scored on.

    metrics, hyps = evaluate_cuts(model, tokenizer, cuts, tasks=("transcribe", "translate", "lid", "nospeech"))
    write_report("eval/test", metrics, hyps)

Per batch of cuts: the audio is encoded once; language and no-speech probabilities come from the
first decoder step; transcripts are decoded with the reference language given (so WER measures
recognition, not language ID), translations with ``<|translate|>`` where a reference translation
exists. Recordings with several segments are transcribed whole (``asr.decoding.transcribe``), as a
user runs them: their segment times give the timestamp error, their text the long-form WER.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from lhotse.cut import Cut
from tqdm import tqdm

from asr.audio import log_mel_spectrogram_batch
from asr.data.dataset import load_cut_audio
from asr.data.sequence import reference_text
from asr.decoding import DecodingOptions, decode_features
from asr.decoding.greedy import detect
from asr.decoding.transcribe import TranscribeOptions, transcribe
from asr.evaluate.metrics import language_id, no_speech, timestamp_error, translation_scores, word_error_rates
from asr.model import Model
from asr.tokenizer import Tokenizer

TASKS = ("transcribe", "translate", "lid", "nospeech", "timestamps")
NO_SPEECH_THRESHOLD = 0.5  # probability of <|nospeech|> above which a cut counts as silence
WINDOW_SECONDS = 30.0


@dataclasses.dataclass
class _Hyp:
    cut: Cut
    language: str
    language_probs: dict[str, float]
    no_speech_prob: float
    transcript: str | None = None
    translation: str | None = None


def evaluate_cuts(model: Model, tokenizer: Tokenizer, cuts: Iterable[Cut], tasks: Iterable[str] = TASKS,
                  batch_size: int = 16, options: DecodingOptions | None = None,
                  progress: bool = False, mask_padding: bool = False,
                  pieces: bool = False, group_by: str | None = None) -> tuple[dict, list[dict]]:
    """(metrics for ``asr.evaluate.report.write_report``, one hypothesis row per cut and task).

    group_by : a key of the cuts' ``custom`` (a recording condition: "noise", "source"); the transcripts'
        WER is then also scored per value, in ``metrics["wer_by"]`` (cuts without the key: "(none)")
    mask_padding : long-form windows tell the encoder their true length (models trained on unpadded
        clips; see ``TranscribeOptions``)
    pieces : long-form transcription cuts recordings at the CTC head's pauses (``TranscribeOptions``)"""
    tasks = tuple(tasks)
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
    options = options or DecodingOptions(without_timestamps=True)
    cuts = list(cuts)
    windows = [c for c in cuts if c.duration <= WINDOW_SECONDS]
    # Batches of one language and similar lengths: each task decodes a batch's languages apart, and
    # the search runs as long as its longest item (the rows keep the manifest's order).
    ordered = sorted(windows, key=lambda c: (c.supervisions[0].language or "" if c.supervisions else "", c.duration))
    hyps, failed = [], []
    for start in tqdm(range(0, len(ordered), batch_size), desc="evaluating", disable=not progress):
        hyps += _decode_batch(model, tokenizer, ordered[start: start + batch_size], tasks, options, failed)
    position = {cut.id: i for i, cut in enumerate(windows)}
    hyps.sort(key=lambda h: position[h.cut.id])
    metrics, rows = _score(hyps, tasks), _rows(hyps, tasks)
    if group_by and "transcribe" in tasks:
        metrics["wer_by"] = _wer_by(hyps, group_by)
    if "timestamps" in tasks:
        long_form = [c for c in cuts if len(c.supervisions) > 1]
        transcribing = TranscribeOptions(options, mask_padding=mask_padding, pieces=pieces)
        metrics["timestamps"], timed = _timestamps(model, tokenizer, long_form, transcribing)
        if timed:  # the words of the whole recordings, as a user of asr-transcribe gets them
            metrics["long_form_wer"] = word_error_rates([row["reference"] for row in timed],
                                                        [row["hypothesis"] for row in timed],
                                                        [row["language"] for row in timed])
        rows += timed
    metrics["failed_cuts"] = failed
    return metrics, rows


def _decode_batch(model: Model, tokenizer: Tokenizer, cuts: list[Cut], tasks, options: DecodingOptions,
                  failed: list) -> list[_Hyp]:
    device = next(model.parameters()).device
    audios, kept = [], []
    for cut in cuts:
        try:
            audios.append(load_cut_audio(cut))
            kept.append(cut)
        except Exception as e:  # one unreadable file must not stop the evaluation
            failed.append({"id": cut.id, "reason": f"{type(e).__name__}: {e}"})
    if not kept:
        return []
    mel, n_frames = log_mel_spectrogram_batch(audios, n_mels=model.dims.n_mels, device=device)
    with torch.no_grad():
        xa, mask = model.encode(mel, n_frames.to(device))
        first = detect(model, xa, mask, tokenizer)
    codes = tokenizer.specials.all_language_codes
    hyps = [_Hyp(cut, language, dict(zip(codes, probs)), float(no_speech_prob))
            for cut, language, probs, no_speech_prob
            in zip(kept, first.language, first.language_probs.tolist(), first.no_speech_prob.tolist())]
    for task in ("transcribe", "translate"):
        if task in tasks:
            _decode_task(model, tokenizer, xa, mask, hyps, task, options)
    return hyps


def _decode_task(model, tokenizer, xa, mask, hyps: list[_Hyp], task: str, options: DecodingOptions) -> None:
    """Decode, per reference language, the speech cuts that have a reference for ``task``."""
    by_language: dict[str, list[int]] = {}
    for i, hyp in enumerate(hyps):
        if reference_text(hyp.cut, task) is not None:
            by_language.setdefault(hyp.cut.supervisions[0].language, []).append(i)
    for language, rows in by_language.items():
        index = torch.tensor(rows, device=xa.device)
        chosen = dataclasses.replace(options, task=task, language=language)
        results = decode_features(model, xa[index], None if mask is None else mask[index], tokenizer, chosen)
        for row, result in zip(rows, results):
            setattr(hyps[row], "transcript" if task == "transcribe" else "translation", result.text.strip())


def _score(hyps: list[_Hyp], tasks) -> dict:
    metrics = {}
    speech = [h for h in hyps if h.cut.supervisions]
    if "transcribe" in tasks:
        metrics["wer"] = _transcript_wer([h for h in speech if h.transcript is not None])
    if "translate" in tasks:
        scored = [h for h in speech if h.translation is not None]
        metrics["translation"] = _translation(scored)
        by_language: dict[str, list[_Hyp]] = {}
        for h in scored:
            by_language.setdefault(h.cut.supervisions[0].language, []).append(h)
        metrics["translation"]["languages"] = {language: _translation(group)
                                               for language, group in sorted(by_language.items())}
    if "lid" in tasks:
        metrics["language_id"] = language_id([h.cut.supervisions[0].language for h in speech],
                                             [h.language for h in speech])
    if "nospeech" in tasks:
        metrics["no_speech"] = no_speech([not h.cut.supervisions for h in hyps],
                                         [h.no_speech_prob > NO_SPEECH_THRESHOLD for h in hyps])
    return metrics


def _translation(hyps: list[_Hyp]) -> dict:
    """Corpus BLEU and chrF of the translated speech cuts, and how many there were."""
    scores = translation_scores([reference_text(h.cut, "translate") for h in hyps], [h.translation for h in hyps])
    return {**scores, "n": len(hyps)}


def _wer_by(hyps: list[_Hyp], key: str) -> dict:
    """``{"key": key, "groups": {value: word_error_rates(...)}}`` over the transcribed speech cuts."""
    groups: dict[str, list[_Hyp]] = {}
    for h in hyps:
        if h.cut.supervisions and h.transcript is not None:
            groups.setdefault(str((h.cut.custom or {}).get(key, "(none)")), []).append(h)
    return {"key": key, "groups": {value: _transcript_wer(group) for value, group in sorted(groups.items())}}


def _transcript_wer(hyps: list[_Hyp]) -> dict:
    """``word_error_rates`` of transcribed speech cuts against their references."""
    return word_error_rates([reference_text(h.cut, "transcribe") for h in hyps], [h.transcript for h in hyps],
                            [h.cut.supervisions[0].language for h in hyps])


def _timestamps(model: Model, tokenizer: Tokenizer, cuts: list[Cut],
                options: TranscribeOptions) -> tuple[dict, list[dict]]:
    """Segment boundary error of long-form transcription (``options``' search, with timestamps) against
    the references' segment times, and one row per recording: its reference and transcribed segments
    (``segments`` as ``asr.decoding.transcribe`` gives them, so the subtitle writers take the row)."""
    references, hypotheses, rows = [], [], []
    for cut in cuts:
        language = cut.supervisions[0].language
        decoding = dataclasses.replace(options.decoding, task="transcribe", language=language,
                                       without_timestamps=False)
        result = transcribe(model, tokenizer, load_cut_audio(cut), dataclasses.replace(options, decoding=decoding))
        references.append([(s.start, s.end, s.text) for s in sorted(cut.supervisions, key=lambda s: s.start)])
        hypotheses.append([(s["start"], s["end"], s["text"]) for s in result["segments"]])
        rows.append({"id": cut.id, "task": "timestamps", "language": language, "reference_language": language,
                     "reference": " ".join(text.strip() for _, _, text in references[-1]),
                     "hypothesis": result["text"].strip(), "duration": cut.duration,
                     "reference_segments": [{"start": s, "end": e, "text": t} for s, e, t in references[-1]],
                     "segments": [{"start": s["start"], "end": s["end"], "text": s["text"]}
                                  for s in result["segments"]]})
    return timestamp_error(references, hypotheses) | {"recordings": len(cuts)}, rows


def _rows(hyps: list[_Hyp], tasks) -> list[dict]:
    rows = []
    for h in hyps:
        base = {"id": h.cut.id, "language": h.language, "language_probs": h.language_probs,
                "no_speech_prob": h.no_speech_prob,
                "reference_language": h.cut.supervisions[0].language if h.cut.supervisions else None}
        if not h.cut.supervisions:
            rows.append(base | {"task": "nospeech", "reference": "", "hypothesis": ""})
        for task, text in (("transcribe", h.transcript), ("translate", h.translation)):
            if text is not None:
                rows.append(base | {"task": task, "reference": reference_text(h.cut, task), "hypothesis": text})
    return rows
