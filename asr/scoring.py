"""Scoring every training cut with a trained model: the filter of a second training round.

Loss truncation (asr.truncation) judges a cut by the model of the moment, against the cuts just
before it; a wrong label trains until it is caught. A model trained once on the same data can judge
every cut before a second run starts: each cut with a known transcript is scored by

    s = log(CTC loss / target tokens + 1e-3)

(the CTC head of the model, no augmentation), and a cut whose score lies more than ``mads`` scaled
median absolute deviations above the median of its language's scores is flagged. The statistics are
over the whole set, scored by one model, so they do not lag as truncation's do::

    result = score_cuts(model, tokenizer, CutSet.from_file("manifests/demo/clean/kept_cuts.jsonl.gz"))
    result.write("manifests/demo/scored")   # kept_cuts, flagged_cuts, scores.jsonl, report.md/.json

Cuts without a known transcript (translation-only pairs), no-speech cuts and cuts the data pipeline
refuses (unreadable audio, too long a transcript) are not judged: they stay in the kept set and are
counted. Nothing is deleted: kept + flagged = input, by id. Where the manifest records the truth of
its labels (the demo corpus), the report gives the precision and recall of the flagged cuts
(asr.data.clean.evaluate_cleaning).

``asr-prepare score CUTS --model runs/demo/model.pt --out DIR`` runs it from the shell.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from tqdm import tqdm

from asr.config import DataConfig
from asr.data.dataset import MultitaskDataset
from asr.loss import ctc_per_cut
from asr.model import Model
from asr.tokenizer import Tokenizer
from asr.truncation import EPS, MAD_SCALE

RULE = "ctc_score"  # the flagged cuts' custom "dropped_by"
MIN_SCORES = 20  # a language with fewer scored cuts is not judged: its median says too little


@dataclass
class ScoreResult:
    kept: CutSet
    flagged: CutSet  # custom "dropped_by" = "ctc_score", "ctc_score" and "ctc_bound"
    scores: dict[str, tuple[str, float]]  # cut id -> (language, score), every cut scored
    report: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> None:
        """``kept_cuts.jsonl.gz``, ``flagged_cuts.jsonl.gz``, ``scores.jsonl``, ``report.md`` and ``report.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.kept.to_file(out / "kept_cuts.jsonl.gz")
        self.flagged.to_file(out / "flagged_cuts.jsonl.gz")
        with open(out / "scores.jsonl", "w") as f:
            for cut_id, (language, score) in self.scores.items():
                f.write(json.dumps({"cut": cut_id, "language": language, "score": round(score, 4)}) + "\n")
        (out / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (out / "report.md").write_text(report_markdown(self.report))


@torch.no_grad()
def score_batches(model: Model, tokenizer: Tokenizer, cuts: Iterable[Cut], batch_seconds: float = 120.0,
                  progress: bool = False) -> tuple[dict[str, tuple[str, float]], Counter]:
    """Each judged cut's (language, score), and the counts of cuts not judged by reason."""
    cuts = sorted(cuts, key=lambda c: c.duration)
    dataset = MultitaskDataset(tokenizer, DataConfig(), n_mels=model.dims.n_mels,
                               n_text_ctx=model.dims.n_text_ctx, train=False)
    device = next(model.parameters()).device
    scores, skipped = {}, Counter()
    batches = list(_batches(cuts, batch_seconds))
    for batch_cuts in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
        batch = dataset[CutSet.from_cuts(batch_cuts)]
        skipped.update(reason.split(":")[0] for reason in batch["dropped"].reasons)
        if not batch["cut_ids"]:
            continue
        xa, mask = model.encode(batch["mel"].to(device), batch["n_frames"].to(device))
        lengths = None if mask is None else mask.sum(-1)
        per_cut = ctc_per_cut(model.ctc_logits(xa), lengths, batch, "ctc", model.ctc_blank).cpu()
        targets = batch["ctc_lengths"].tolist()
        for i, (cut_id, valid) in enumerate(zip(batch["cut_ids"], batch["ctc_valid"].tolist())):
            language = batch["languages"][i]
            if not valid:
                skipped["no known transcript"] += 1
            elif language is None or targets[i] == 0:
                skipped["no speech"] += 1
            else:
                scores[cut_id] = (language, math.log(float(per_cut[i]) / targets[i] + EPS))
    return scores, +skipped


def flag_outliers(scores: dict[str, tuple[str, float]], mads: float = 3.0) -> tuple[dict[str, float], dict]:
    """The cuts above their language's bound (id -> bound), and per language its n, median, MAD and bound
    (None for a language with fewer than MIN_SCORES scores, which is not judged)."""
    by_language = defaultdict(list)
    for language, score in scores.values():
        by_language[language].append(score)
    statistics_by_language = {}
    for language, values in sorted(by_language.items()):
        if len(values) < MIN_SCORES:
            statistics_by_language[language] = {"n": len(values), "median": None, "mad": None, "bound": None}
            continue
        median = statistics.median(values)
        mad = statistics.median(abs(v - median) for v in values)
        statistics_by_language[language] = {"n": len(values), "median": median, "mad": mad,
                                            "bound": median + mads * MAD_SCALE * mad}
    flagged = {}
    for cut_id, (language, score) in scores.items():
        bound = statistics_by_language[language]["bound"]
        if bound is not None and score > bound:
            flagged[cut_id] = bound
    return flagged, statistics_by_language


def score_cuts(model: Model, tokenizer: Tokenizer, cuts: Iterable[Cut], mads: float = 3.0,
               batch_seconds: float = 120.0, progress: bool = False) -> ScoreResult:
    """Score ``cuts`` with ``model``'s CTC head and split them into kept and flagged (module docstring)."""
    from asr.data.clean import evaluate_left_out

    if model.ctc is None:
        raise ValueError("scoring cuts needs a model with a CTC head (model.ctc_head: true)")
    cuts = list(cuts)
    model.eval()
    scores, skipped = score_batches(model, tokenizer, cuts, batch_seconds, progress)
    flagged_bounds, by_language = flag_outliers(scores, mads)
    kept, flagged = [], []
    for cut in cuts:
        if cut.id in flagged_bounds:
            custom = {**(cut.custom or {}), "dropped_by": RULE, "ctc_score": round(scores[cut.id][1], 4),
                      "ctc_bound": round(flagged_bounds[cut.id], 4)}
            flagged.append(fastcopy(cut, custom=custom))
        else:
            kept.append(cut)
    truth = evaluate_left_out((c for c in cuts if c.id in scores), flagged_bounds, RULE)
    flagged_by_language = Counter(scores[cut_id][0] for cut_id in flagged_bounds)
    report = {
        "cuts": len(cuts), "scored": len(scores), "flagged": len(flagged), "not_scored": dict(skipped),
        "mads": mads,
        "languages": {language: {**figures, "flagged": flagged_by_language[language]}
                      for language, figures in by_language.items()},
        "evaluation": truth,
    }
    return ScoreResult(CutSet.from_cuts(kept), CutSet.from_cuts(flagged), scores, report)


def score_checkpoint(model_path: str | Path, cuts: Iterable[Cut], out_dir: str | Path, mads: float = 3.0,
                     batch_seconds: float = 120.0, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Score ``cuts`` with an exported checkpoint of this project, write the result to ``out_dir``
    (:meth:`ScoreResult.write`) and print what it flagged; the report."""
    from asr.checkpoint import load

    loaded = load(model_path, device)
    if loaded.tokenizer is None:
        raise ValueError(f"{model_path}: no tokenizer in the checkpoint (an OpenAI checkpoint cannot score cuts yet)")
    result = score_cuts(loaded.model, loaded.tokenizer, cuts, mads, batch_seconds, progress=progress)
    result.write(out_dir)
    print(f"{summary_line(result.report)} -> {out_dir}")
    return result.report


def summary_line(report: dict[str, Any]) -> str:
    """One line on what the scoring flagged, and how it did against the recorded truth where there is one."""
    from asr.data.clean import format_ratio

    line = f"scored {report['scored']} of {report['cuts']} cuts, flagged {report['flagged']}"
    truth = report["evaluation"]
    if truth:
        line += (f"; against the recorded truth: precision {format_ratio(truth['precision'])}, "
                 f"recall {format_ratio(truth['recall'])} over {truth['n_corrupt']} corrupt of "
                 f"{truth['n_cuts']} scored cuts")
    return line


def report_markdown(report: dict) -> str:
    from asr.data.clean import format_ratio

    not_scored = ", ".join(f"{reason} {n}" for reason, n in report["not_scored"].items()) or "none"
    lines = [
        "# Scoring report",
        "",
        f"{report['cuts']} cuts in: {report['scored']} scored by the model's CTC head, {report['flagged']} flagged "
        f"(log CTC loss per token above the language's median + {report['mads']} scaled MADs). "
        f"Not scored: {not_scored}.",
        "",
        "| language | scored | median | MAD | bound | flagged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for language, row in report["languages"].items():
        cells = ["–" if row[k] is None else f"{row[k]:.3f}" for k in ("median", "mad", "bound")]
        lines.append(f"| {language} | {row['n']} | {' | '.join(cells)} | {row['flagged']} |")
    truth = report["evaluation"]
    if truth:
        lines += ["", f"Against the recorded truth: {truth['n_corrupt']} of {truth['n_cuts']} scored cuts corrupt; "
                      f"precision {format_ratio(truth['precision'])}, recall {format_ratio(truth['recall'])}.", "",
                  "| corruption | cuts | flagged |", "|---|---:|---:|"]
        lines += [f"| {kind} | {row['n']} | {row['dropped']} |" for kind, row in truth["recall_by_kind"].items()]
    return "\n".join(lines) + "\n"


def _batches(cuts: list[Cut], seconds: float) -> Iterable[list[Cut]]:
    batch, total = [], 0.0
    for cut in cuts:
        if batch and total + cut.duration > seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(cut)
        total += cut.duration
    if batch:
        yield batch
