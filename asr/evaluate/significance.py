"""How much of a difference between evaluations the test set itself can make: paired bootstrap
intervals over test cuts.

A test split of a few hundred sentences moves corpus BLEU by a few points when other sentences are
drawn, so a difference between two runs needs an interval before it means anything. This resamples
the test cuts (with replacement, within each language, so each language keeps its number of cuts),
scores every run on each resample, and gives the 2.5th and 97.5th percentiles of each row's figure
minus the first row's. A row may hold several runs (seeds): its figure on a resample is their mean,
as in ``asr-eval compare``'s headline table. The interval is the test set's share of the uncertainty
only; the seeds' range shows the training's.

    rows = [("true labels", [load_hyps("runs/a/eval/hyps.jsonl")]),
            ("weak labels", [load_hyps("runs/b/eval/hyps.jsonl"), load_hyps("runs/c/eval/hyps.jsonl")])]
    print(format_differences(paired_differences(rows), "true labels"))
    # | run | X->English BLEU − true labels | WER, mean over languages − true labels | cuts (translated / transcribed) |
    # | weak labels | -5.97 (-7.91 to -4.13) | +1.19% (+0.62 to +1.82) | 286 / 344 |

Figures are recomputed from each run's ``hyps.jsonl`` (written by ``asr-eval``) exactly as
``metrics.json`` has them: corpus BLEU (sacrebleu, 13a) of the translated cuts, and the unweighted mean
over languages of each language's pooled WER after ``normalise_for``. Only the cuts every run scored
are used; the count is given beside the figures, so that a run decoded on other cuts shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
from sacrebleu.metrics import BLEU

from asr.evaluate.metrics import edit_counts, scoring_units

N_RESAMPLES = 1000
SEED = 12345

# A run's scored cuts of one task: {cut id: (language, reference, hypothesis)}
TaskHyps = dict[str, tuple[str, str, str]]


@dataclass(frozen=True)
class Interval:
    difference: float  # the row's figure minus the first row's, on the test set as it is
    low: float  # 2.5th percentile over resamples
    high: float  # 97.5th


@dataclass(frozen=True)
class Difference:
    name: str
    bleu: Interval | None  # None where a side translated nothing
    wer: Interval | None  # mean over languages, as a fraction
    n_translated: int  # the cuts every run of every row scored
    n_transcribed: int


def load_hyps(path: str | Path) -> dict[str, TaskHyps]:
    """``{"translate": {...}, "transcribe": {...}}`` from an ``asr-eval`` hyps.jsonl; other rows
    (no-speech, long-form timestamps) are not scored here."""
    path = Path(path)
    tasks: dict[str, TaskHyps] = {"translate": {}, "transcribe": {}}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                if row["task"] in tasks and row["reference"] is not None:
                    tasks[row["task"]][row["id"]] = (row["reference_language"], row["reference"], row["hypothesis"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number}: not an asr-eval hypothesis row ({type(e).__name__}: {e})") from e
    return tasks


def paired_differences(rows: Sequence[tuple[str, Sequence[dict[str, TaskHyps]]]], n_resamples: int = N_RESAMPLES,
                       seed: int = SEED) -> list[Difference]:
    """For each row after the first: its BLEU and mean WER minus the first row's, with a 95% paired
    bootstrap interval over the test cuts every run scored (module docstring)."""
    if len(rows) < 2:
        raise ValueError("a difference needs two rows at the least")
    if n_resamples < 1:
        raise ValueError(f"an interval needs at least one resample, got {n_resamples}")
    runs = [run for _, group in rows for run in group]
    translated, transcribed = _common_ids(runs, "translate"), _common_ids(runs, "transcribe")
    rng = np.random.default_rng(seed)
    bleu = _task_samples(runs, "translate", translated, _bleu_stats, _bleu_of, n_resamples, rng)
    wer = _task_samples(runs, "transcribe", transcribed, _wer_stats, _wer_of, n_resamples, rng)
    bounds = np.cumsum([0] + [len(group) for _, group in rows])
    differences = []
    for k, (name, _) in enumerate(rows[1:], 1):
        intervals = []
        for samples in (bleu, wer):
            if samples is None:
                intervals.append(None)
                continue
            figure = [samples[:, bounds[j]:bounds[j + 1]].mean(axis=1) for j in (0, k)]
            diff = figure[1] - figure[0]  # row 0 of the samples: the test set as it is
            low, high = np.percentile(diff[1:], [2.5, 97.5])
            intervals.append(Interval(float(diff[0]), float(low), float(high)))
        differences.append(Difference(name, *intervals, len(translated), len(transcribed)))
    return differences


def _common_ids(runs: Sequence[dict[str, TaskHyps]], task: str) -> list[str]:
    ids = set(runs[0][task])
    for run in runs[1:]:
        ids &= set(run[task])
    return sorted(ids)


def _task_samples(runs, task: str, ids: list[str], stats_of, score_of, n_resamples: int,
                  rng) -> np.ndarray | None:
    """(1 + n_resamples, n_runs): each run's figure on the cuts ``ids`` of ``task``, then on each
    resample of them (the same resampled cuts for every run). None where there are no such cuts."""
    if not ids:
        return None
    languages = np.array([runs[0][task][i][0] for i in ids])
    groups = [np.flatnonzero(languages == language) for language in sorted(set(languages))]
    draws = [np.arange(len(ids))]
    for _ in range(n_resamples):  # within each language: each keeps its number of cuts
        draws.append(np.concatenate([rng.choice(group, size=len(group)) for group in groups]))
    samples = np.empty((len(draws), len(runs)))
    for r, run in enumerate(runs):
        stats = np.array([stats_of(*run[task][i]) for i in ids])
        for d, draw in enumerate(draws):
            samples[d, r] = score_of(stats[draw], languages[draw])
    return samples


_BLEU = BLEU()


def _bleu_stats(language: str, reference: str, hypothesis: str) -> list[int]:
    """A sentence's BLEU sufficient statistics: matches and totals for 1-4-grams, its and the reference's length."""
    score = _BLEU.corpus_score([hypothesis], [[reference]])
    return [*score.counts, *score.totals, score.sys_len, score.ref_len]


def _bleu_of(stats: np.ndarray, languages: np.ndarray) -> float:
    total = stats.sum(axis=0).tolist()
    return BLEU.compute_bleu(total[0:4], total[4:8], total[8], total[9], smooth_method="exp").score


def _wer_stats(language: str, reference: str, hypothesis: str) -> list[int]:
    """A transcript's word errors and reference words (characters where the language is written
    without spaces), as ``word_error_rates`` counts them; a reference without words counts nothing."""
    reference = scoring_units(language, reference)
    if not reference:
        return [0, 0]
    return list(edit_counts(jiwer.process_words(reference, scoring_units(language, hypothesis))))


def _wer_of(stats: np.ndarray, languages: np.ndarray) -> float:
    rates = []
    for language in sorted(set(languages)):
        errors, words = stats[languages == language].sum(axis=0)
        if words:
            rates.append(errors / words)
    return float(np.mean(rates)) if rates else float("nan")


def format_differences(differences: list[Difference], baseline: str) -> str:
    """A Markdown table: each row's BLEU and mean WER minus the baseline row's, with the 95% interval."""
    lines = [f"| run | X->English BLEU − {baseline} | WER, mean over languages − {baseline} | cuts (translated / transcribed) |",
             "|---|---|---|---|"]
    for d in differences:
        bleu = "–" if d.bleu is None else f"{d.bleu.difference:+.2f} ({d.bleu.low:+.2f} to {d.bleu.high:+.2f})"
        wer = "–" if d.wer is None else (f"{100 * d.wer.difference:+.2f}% ({100 * d.wer.low:+.2f} to "
                                         f"{100 * d.wer.high:+.2f})")
        lines.append(f"| {d.name} | {bleu} | {wer} | {d.n_translated} / {d.n_transcribed} |")
    return "\n".join(lines) + "\n"
