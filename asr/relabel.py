"""Re-transcribing, with a trained model, the windows that cleaning took the transcript from.

The cleaning rules (asr.data.clean) drop a window whose transcript they judge wrong, and its audio goes
with it: on the demo corpus 671 of 5,399 training windows (12% of the speech). Trained with their true
labels in place of the drop, the same recipe won back most of what the weak labels cost the
translation (README, "Weak labels against true labels"). A model trained on the cleaned windows can
give them a transcript of its own, for a second round::

    result = relabel_cuts(model, tokenizer, candidates(kept, dropped))
    result.write("manifests/demo/relabelled", kept)   # relabelled_cuts, rejected_cuts, train_cuts, report

The candidates are the windows dropped by a rule on the text (every rule but ``duration`` and
``unreadable_audio``, which judge the audio) and the windows kept with only their translation. Each
speech supervision is decoded alone, over its own span of the window's audio, in the language the
model hears (its language ID), by the joint CTC/attention beam search that asr-transcribe runs. A
window takes its new transcripts only when every one of them passes ``RelabelRules`` (Whisper's
fallback thresholds, average log-probability, compression ratio and no-speech probability, and the
language ID's confidence); otherwise it is rejected, and the first rule it failed is counted. Where the
model's transcript is within ``RelabelRules.keep_label_within`` words of the weak label (case and
punctuation aside), the model confirms the label: the label's words are kept, written as the model
writes them where the two agree. The model makes errors of its own, and a one-word difference is more
often one of them than a wrong word of the label (on the demo corpus the model's word was the wrong one
in 60 of 62 such differences, the labels' fault being their case or their language).

A relabelled supervision keeps its span and translation and records what it replaced
(``custom["original_text"]``, ``["original_language"]`` where the language changed, ``["relabel"]``, with
``"label_confirmed": true`` where the model confirmed the label);
the window records the rules that had dropped it (``custom["relabelled_from"]``) and trains every
task again. Where the manifest records the truth of its labels (the demo corpus), the report gives the
word error rate of the weak labels and of the model's against it: the cleaning's measures count a
relabelled supervision as mended where it now equals the truth. Nothing is lost: relabelled +
rejected = candidates, by id; ``train_cuts.jsonl.gz`` is the kept windows with the relabelled ones in
place of their translation-only selves, then the relabelled dropped windows.

``asr-prepare relabel manifests/demo/clean --model runs/demo/model.pt --out manifests/demo/relabelled``
runs it from the shell.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import jiwer
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.supervision import SupervisionSegment
from lhotse.utils import fastcopy
from tqdm import tqdm

from asr.audio import log_mel_spectrogram_batch
from asr.data import is_translation_only
from asr.data.dataset import load_cut_audio
from asr.decoding import DecodingOptions, decode_features
from asr.decoding.ctc import default_weight
from asr.decoding.greedy import detect
from asr.evaluate.metrics import NO_SPACE_LANGUAGES, edit_counts, normalise_for, word_error_rates
from asr.model import Model
from asr.tokenizer import Tokenizer

AUDIO_RULES = frozenset({"duration", "unreadable_audio"})  # drops no transcript can mend
MAX_SECONDS = 30.0  # a supervision longer than the model's window is not decoded
# The cleaning's marks of a window without its transcript; a relabelled window trains every task again.
DROP_MARKS = ("dropped_by", "dropped_reasons", "task", "transcript_dropped_by", "transcript_dropped_reasons")


@dataclass(frozen=True)
class RelabelRules:
    """When the model's transcript of a supervision is taken (each bound inclusive)."""

    min_avg_logprob: float = -1.0  # the search's score per token (Whisper's logprob_threshold)
    max_compression_ratio: float = 2.4  # gzip ratio of the text: above it, a loop (Whisper's threshold)
    max_no_speech_prob: float = 0.5  # the model's <|nospeech|> probability at the first step
    min_language_prob: float = 0.5  # the language ID's probability of the language it picked
    # A transcript at most this many words from the label (case and punctuation aside; characters for the
    # languages written without spaces) confirms it, and the label's words are kept; -1: never.
    keep_label_within: int = 1

    def __post_init__(self):
        for name in ("max_no_speech_prob", "min_language_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"relabel rules: {name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_compression_ratio <= 0:
            raise ValueError(f"relabel rules: max_compression_ratio must be positive, got {self.max_compression_ratio}")
        if self.keep_label_within < -1:
            raise ValueError(f"relabel rules: keep_label_within must be -1 (never) or a number of words, "
                             f"got {self.keep_label_within}")

    def failed(self, hyp: "_Heard") -> str | None:
        """The first rule ``hyp`` fails, or None."""
        if not hyp.text:
            return "empty transcript"
        if hyp.no_speech_prob > self.max_no_speech_prob:
            return "no speech heard"
        if hyp.language_prob < self.min_language_prob:
            return "language unsure"
        if hyp.avg_logprob < self.min_avg_logprob:
            return "low log-probability"
        if hyp.compression_ratio > self.max_compression_ratio:
            return "repetitive"
        return None

    def confirmed(self, hyp: "_Heard", label: str) -> str | None:
        """Where ``hyp`` is within ``keep_label_within`` words of the weak ``label``, the label's words,
        written as ``hyp`` writes those the two share (its case and punctuation); else None."""
        if self.keep_label_within < 0:
            return None
        spaced = hyp.language not in NO_SPACE_LANGUAGES  # else characters are the units
        label_units, hyp_units = (text.split() if spaced else list(text.replace(" ", "")) for text in (label, hyp.text))
        if not label_units or not hyp_units:
            return None
        alignment = jiwer.process_words(" ".join(map(_key, label_units)), " ".join(map(_key, hyp_units)))
        if edit_counts(alignment)[0] > self.keep_label_within:
            return None
        units = []
        for chunk in alignment.alignments[0]:
            if chunk.type == "equal":
                units += hyp_units[chunk.hyp_start_idx: chunk.hyp_end_idx]
            elif chunk.type != "insert":  # a word the label has: substituted or left out by the model
                units += label_units[chunk.ref_start_idx: chunk.ref_end_idx]
        return (" " if spaced else "").join(units)


def _key(unit: str) -> str:
    """A word as the comparison sees it: case folded, punctuation left out (a unit of punctuation alone stays)."""
    return "".join(c for c in unit.casefold() if c.isalnum()) or unit


@dataclass
class _Heard:
    """The model's transcript of one supervision's span."""

    text: str
    language: str
    language_prob: float
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass
class RelabelResult:
    relabelled: CutSet
    rejected: CutSet  # each with custom "relabel_rejected": the reason
    report: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path, kept: Iterable[Cut] | None = None) -> None:
        """``relabelled_cuts.jsonl.gz``, ``rejected_cuts.jsonl.gz``, ``report.md`` and ``report.json``;
        with ``kept`` (the cleaning's kept windows) also ``train_cuts.jsonl.gz`` (``training_set``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.relabelled.to_file(out / "relabelled_cuts.jsonl.gz")
        self.rejected.to_file(out / "rejected_cuts.jsonl.gz")
        if kept is not None:
            training_set(kept, self.relabelled).to_file(out / "train_cuts.jsonl.gz")
        (out / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (out / "report.md").write_text(report_markdown(self.report))


def candidates(kept: Iterable[Cut], dropped: Iterable[Cut]) -> list[Cut]:
    """The windows a transcript could bring back: kept with only their translation, or dropped by a rule
    on the text, with speech supervisions."""
    chosen = [cut for cut in kept if is_translation_only(cut) and (cut.custom or {}).get("transcript_dropped_by")]
    chosen += [cut for cut in dropped if (cut.custom or {}).get("dropped_by") not in AUDIO_RULES]
    return [cut for cut in chosen if cut.supervisions]


def training_set(kept: Iterable[Cut], relabelled: Iterable[Cut]) -> CutSet:
    """The kept windows, each relabelled one in place of its kept self, then the other relabelled ones."""
    relabelled = {cut.id: cut for cut in relabelled}
    in_place = [relabelled.pop(cut.id, cut) for cut in kept]
    return CutSet.from_cuts(in_place + list(relabelled.values()))


@torch.no_grad()
def relabel_cuts(model: Model, tokenizer: Tokenizer, cuts: Iterable[Cut], rules: RelabelRules = RelabelRules(),
                 beam_size: int | None = 5, batch_size: int = 16, progress: bool = False) -> RelabelResult:
    """Decode each supervision of ``cuts`` and relabel the windows whose every transcript passes ``rules``
    (module docstring)."""
    cuts = list(cuts)
    model.eval()
    options = DecodingOptions(without_timestamps=True, beam_size=beam_size, ctc_weight=default_weight(model))
    spans = [(cut, i) for cut in cuts for i in range(len(cut.supervisions))]
    heard, failures = _hear(model, tokenizer, spans, options, batch_size, progress)
    relabelled, rejected, reasons = [], [], Counter()
    for cut in cuts:
        keys = [(cut.id, i) for i in range(len(cut.supervisions))]
        reason = next(filter(None, (failures.get(key) or rules.failed(heard[key]) for key in keys)), None)
        if reason is None:
            relabelled.append(_relabelled(cut, [heard[key] for key in keys], rules))
        else:
            reasons[reason] += 1
            rejected.append(fastcopy(cut, custom={**(cut.custom or {}), "relabel_rejected": reason}))
    report = {
        "candidates": len(cuts), "relabelled": len(relabelled), "rejected": dict(reasons),
        "rules": dataclasses.asdict(rules), "beam_size": beam_size, "ctc_weight": options.ctc_weight,
        "language_changed": sum(1 for cut in relabelled for s in cut.supervisions
                                if "original_language" in (s.custom or {})),
        "labels_confirmed": sum(1 for cut in relabelled for s in cut.supervisions
                                if s.custom["relabel"].get("label_confirmed")),
        "evaluation": evaluate_relabelling(relabelled, rejected),
    }
    return RelabelResult(CutSet.from_cuts(relabelled), CutSet.from_cuts(rejected), report)


def _hear(model: Model, tokenizer: Tokenizer, spans: list[tuple[Cut, int]], options: DecodingOptions,
          batch_size: int, progress: bool) -> tuple[dict[tuple[str, int], _Heard], dict[tuple[str, int], str]]:
    """The model's transcript of each (cut, supervision index), and the reason for each it could not decode."""
    heard, failures = {}, {}
    decodable = []
    for cut, i in spans:
        if cut.supervisions[i].duration > MAX_SECONDS:
            failures[(cut.id, i)] = f"supervision longer than {MAX_SECONDS:.0f} s"
        else:
            decodable.append((cut, i))
    decodable.sort(key=lambda span: span[0].supervisions[span[1]].duration)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(decodable), batch_size), desc="relabelling", disable=not progress):
        audios, batch = [], []
        for cut, i in decodable[start: start + batch_size]:
            try:
                audios.append(load_cut_audio(_span(cut, cut.supervisions[i])))
                batch.append((cut, i))
            except Exception as e:  # one unreadable file must not stop the rest
                failures[(cut.id, i)] = f"unreadable audio: {type(e).__name__}"
        if not batch:
            continue
        mel, n_frames = log_mel_spectrogram_batch(audios, n_mels=model.dims.n_mels, device=device)
        xa, mask = model.encode(mel, n_frames.to(device))
        first = detect(model, xa, mask, tokenizer)
        by_language: dict[str, list[int]] = {}
        for row, language in enumerate(first.language):
            by_language.setdefault(language, []).append(row)
        codes = tokenizer.specials.all_language_codes
        for language, rows in by_language.items():
            index = torch.tensor(rows, device=device)
            chosen = dataclasses.replace(options, language=language)
            results = decode_features(model, xa[index], None if mask is None else mask[index], tokenizer, chosen)
            for row, result in zip(rows, results):
                cut, i = batch[row]
                heard[(cut.id, i)] = _Heard(
                    result.text.strip(), language, float(first.language_probs[row, codes.index(language)]),
                    float(first.no_speech_prob[row]), result.avg_logprob, result.compression_ratio)
    return heard, failures


def _span(cut: Cut, sup: SupervisionSegment) -> Cut:
    """The part of ``cut`` that ``sup`` covers, within the cut."""
    start = max(0.0, sup.start)
    return cut.truncate(offset=start, duration=min(sup.end, cut.duration) - start, keep_excessive_supervisions=False)


def _relabelled(cut: Cut, heard: list[_Heard], rules: RelabelRules) -> Cut:
    supervisions = []
    for sup, hyp in zip(cut.supervisions, heard):
        confirmed = rules.confirmed(hyp, sup.text)
        custom = {**(sup.custom or {}), "original_text": sup.text,
                  "relabel": {"avg_logprob": round(hyp.avg_logprob, 4), "language_prob": round(hyp.language_prob, 4),
                              **({"label_confirmed": True} if confirmed is not None else {})}}
        if hyp.language != sup.language:
            custom["original_language"] = sup.language
        text = hyp.text if confirmed is None else confirmed
        supervisions.append(fastcopy(sup, text=text, language=hyp.language, custom=custom))
    reasons = (cut.custom or {}).get("dropped_reasons") or (cut.custom or {}).get("transcript_dropped_reasons") or []
    custom = {key: value for key, value in (cut.custom or {}).items() if key not in DROP_MARKS}
    return fastcopy(cut, supervisions=supervisions, custom={**custom, "relabelled_from": list(reasons)})


def evaluate_relabelling(relabelled: Iterable[Cut], rejected: Iterable[Cut]) -> dict[str, Any]:
    """Against the recorded truth (supervision ``custom["true_text"]``): per relabelled and rejected
    windows, how many were corrupt, and over the relabelled supervisions the WER of the weak labels and
    of the model's transcripts and how many now equal the truth; {} where no truth is recorded."""
    relabelled, rejected = list(relabelled), list(rejected)
    sups = [s for cut in relabelled for s in cut.supervisions if "true_text" in (s.custom or {})]
    if not sups and not any("true_text" in (s.custom or {}) for cut in rejected for s in cut.supervisions):
        return {}
    languages = [s.custom.get("true_language") or s.language for s in sups]
    truths = [s.custom["true_text"] for s in sups]

    def mean_wer(texts: list[str]) -> float | None:
        return word_error_rates(truths, texts, languages)["pooled"]["wer"] if sups else None

    def corrupt(cuts: list[Cut]) -> int:
        return sum(1 for cut in cuts if any((s.custom or {}).get("corruption") for s in cut.supervisions))

    return {
        "relabelled": {"cuts": len(relabelled), "corrupt_before": corrupt(relabelled),
                       "supervisions": len(sups),
                       "equal_to_truth": sum(1 for s, lang, truth in zip(sups, languages, truths)
                                             if normalise_for(lang, s.text) == normalise_for(lang, truth)),
                       "wer_before": mean_wer([s.custom["original_text"] for s in sups]),
                       "wer_after": mean_wer([s.text for s in sups]),
                       "language_right": sum(1 for s, lang in zip(sups, languages) if s.language == lang)},
        "rejected": {"cuts": len(rejected), "corrupt": corrupt(rejected)},
    }


def relabel_checkpoint(model_path: str | Path, clean_dir: str | Path, out_dir: str | Path,
                       rules: RelabelRules = RelabelRules(), beam_size: int | None = 5, device: str = "cpu",
                       progress: bool = True, kept: str | Path | None = None) -> dict[str, Any]:
    """Relabel the candidates of a cleaning's output folder (``kept_cuts`` / ``dropped_cuts``) with an
    exported checkpoint, write the result with its training set to ``out_dir``, print a summary; the report.
    ``kept``: the manifest the training set starts from (a scoring's kept cuts), if not the cleaning's."""
    from asr.checkpoint import load
    from asr.data.dataset import open_cuts

    loaded = load(model_path, device)
    if loaded.tokenizer is None:
        raise ValueError(f"{model_path}: no tokenizer in the checkpoint (an OpenAI checkpoint cannot relabel cuts yet)")
    clean_dir = Path(clean_dir)
    cleaned = list(open_cuts(clean_dir / "kept_cuts.jsonl.gz"))
    dropped = list(open_cuts(clean_dir / "dropped_cuts.jsonl.gz"))
    result = relabel_cuts(loaded.model, loaded.tokenizer, candidates(cleaned, dropped), rules, beam_size,
                          progress=progress)
    result.write(out_dir, cleaned if kept is None else open_cuts(kept))
    print(f"{summary_line(result.report)} -> {out_dir}")
    return result.report


def summary_line(report: dict[str, Any]) -> str:
    rejected = ", ".join(f"{reason} {n}" for reason, n in report["rejected"].items()) or "none"
    confirmed = report.get("labels_confirmed", 0)  # absent from a report written before labels were confirmed
    line = (f"relabelled {report['relabelled']} of {report['candidates']} windows ({confirmed} labels' words "
            f"confirmed and kept; rejected: {rejected})")
    truth = report["evaluation"].get("relabelled")
    if truth and truth["supervisions"]:
        line += (f"; against the recorded truth: WER {_percent(truth['wer_before'])} -> {_percent(truth['wer_after'])}, "
                 f"{truth['equal_to_truth']} of {truth['supervisions']} transcripts now equal to it")
    return line


def report_markdown(report: dict[str, Any]) -> str:
    rules = ", ".join(f"{key} {value}" for key, value in report["rules"].items())
    lines = ["# Relabelling report", "",
             f"{report['candidates']} windows whose transcript cleaning dropped, decoded by the model "
             f"({report['beam_size']} beams, CTC weight {report['ctc_weight']}): {report['relabelled']} relabelled "
             f"({report['language_changed']} supervisions in another language than their label, "
             f"{report.get('labels_confirmed', 0)} labels whose words the model confirmed, kept), "
             f"{sum(report['rejected'].values())} rejected. Rules: {rules}.", "",
             "| rejected because | windows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in report["rejected"].items()]
    truth = report["evaluation"]
    if truth:
        after, before = truth["relabelled"], truth["rejected"]
        lines += ["", "## Against the recorded truth", "",
                  f"Relabelled: {after['cuts']} windows, {after['corrupt_before']} of them with a wrong label before; "
                  f"over their {after['supervisions']} supervisions WER {_percent(after['wer_before'])} (weak labels) "
                  f"-> {_percent(after['wer_after'])} (the model's), {after['equal_to_truth']} equal to the truth, "
                  f"{after['language_right']} in the right language. Rejected: {before['cuts']} windows, "
                  f"{before['corrupt']} of them with a wrong label."]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"
