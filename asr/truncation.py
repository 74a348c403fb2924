"""Loss truncation: the training cuts whose labels the model itself finds implausible take no loss.

Text-and-duration cleaning rules cannot see a transcript of another clip of about the same length, or
a third of the words swapped for others (asr.data.clean). The CTC head can: it reads the audio frame by
frame, and the CTC loss per target token of a cut whose transcript does not match its audio stays
several times that of the cuts around it, while the model fits the clean majority first (the early
learning of deep networks on noisy labels; Arpit et al. 2017, "A closer look at memorization in deep
networks"). So from ``optim.truncate_from_step`` on, each cut with a transcript is scored by

    s = log(CTC loss / target tokens)

and compared with the scores of the last ``optim.truncate_history`` cuts of its language (the scale
differs between languages): a cut above ``median + optim.truncate_mads * 1.4826 * MAD`` is an
outlier and takes no loss in this batch, in any term (its label is suspect, whatever the task drawn
for it). The rule is relative, so on clean labels it leaves out only the far tail; a cut is judged
again each time it comes round, by the model of that moment, unless ``optim.truncate_sticky``: then a
cut once left out stays out for the rest of the run, and so do its speed-perturbed copies, which carry
the same transcript (the model rarely fits a wrong transcript well enough to pass the bound later, but
the bound misses it on some of its rounds: on the demo corpus a wrong label left out at least once was
left out on about two of its three rounds after the start). Every process leaves out the same cuts: the
processes share the cuts they left out after each micro-batch. Cuts without a known transcript
(translation-only pairs) and no-speech cuts are never left out for their transcript.

A transcript judged wrong says nothing of the cut's English translation, often a label of its own
(subtitles in two languages; the demo corpus's wrong transcripts keep their true translation, but for a
label of another clip). With a translation CTC head, the loss (asr.loss) judges each translation the
same way, by the translation head's CTC loss per target token against the recent translations of its
source language (``label="translation"``), and a cut whose transcript is left out keeps its translation
terms (the attention term when X->English is the task drawn, the translation CTC term) unless its
translation is an outlier too: as ``clean.keep_translations`` does for the transcripts the cleaning
rules drop. English speech, whose translation target is its transcript, goes with its transcript.

Cuts the cleaning left for the model to judge (``clean.defer_rules``: a rule spoke against their
transcript, but one the CTC head can check) are suspects: their transcript takes no loss before
``optim.truncate_from_step`` while the model cannot judge them yet (``optim.truncate_hold_suspects``;
off, they train as any other until then), and afterwards only below a bound of
``optim.truncate_suspect_mads`` (lower than the others') over the scores of the other cuts: their own
scores, mostly of wrong labels, stay out of the median and MAD. Only the transcript is a suspect: the
translation is judged as any other.

Every cut left out is written, with its step, score and bound, to ``truncated/rank-<r>.jsonl`` in the
run folder, and counted in the logs and the run summary; where the manifest records the truth of its
labels (the demo corpus), the summary gives the precision and recall of the cuts left out at least
once (``truncation_report``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, deque
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from asr.config import TRUNCATE_MIN_HISTORY as MIN_HISTORY  # scores of a language seen before any is judged

MAD_SCALE = 1.4826  # the MAD of a normal distribution times this is its standard deviation
EPS = 1e-3  # keeps the log of a perfectly fitted cut finite
SPEED_AFFIX = re.compile(r"_sp\d+(\.\d+)?$")  # lhotse's perturb_speed appends it to a cut's id
TRANSCRIPT, TRANSLATION = "transcript", "translation"  # the labels judged, and the batch fields they read
PREFIXES = {TRANSCRIPT: "ctc", TRANSLATION: "translation_ctc"}


class LossTruncation:
    """Picks the cuts of a batch that take loss; see the module docstring.

    from_step : no cut is left out before this step (the scores are collected from the start)
    mads : the bound, in scaled median absolute deviations above the median
    history : scores kept per language
    log_dir : where ``rank-<rank>.jsonl`` is written; None writes nothing
    sticky : a cut left out once (by its id without lhotse's speed affix) stays out
    suspect_mads : the bound for the transcripts of suspect cuts (the batch's ``suspects``); None: ``mads``
    hold_suspects : a suspect's transcript takes no loss before ``from_step`` (false: it does, as any other)
    """

    def __init__(self, from_step: int, mads: float, history: int, log_dir: Path | None = None, rank: int = 0,
                 sticky: bool = False, suspect_mads: float | None = None, hold_suspects: bool = True):
        if mads <= 0 or history < MIN_HISTORY:
            raise ValueError(f"loss truncation needs mads > 0 and history >= {MIN_HISTORY}, got {mads}, {history}")
        self.from_step = from_step
        self.mads = mads
        self.suspect_mads = mads if suspect_mads is None else suspect_mads
        self.hold_suspects = hold_suspects
        self.held = 0  # suspect transcripts given no loss before they could be judged
        self.histories: dict[str, deque] = {}
        self.history = history
        self.log_path = None if log_dir is None else Path(log_dir) / f"rank-{rank}.jsonl"
        self.judged = 0  # cuts compared with a bound (or, sticky, found left out before) so far
        self.sticky = sticky
        self.out: set[str] = set()  # sticky: the labels left out, by cut id without the speed affix
        # (a translation's id prefixed "translation:")
        self.new_out: list[str] = []  # sticky: the ones left out since the last ``take_new_out``

    def bound(self, language: str, mads: float | None = None) -> float | None:
        """The score above which a cut of ``language`` is left out (``mads``: another bound than the
        usual, a suspect's); None while too few are known."""
        scores = self.histories.get(language)
        if scores is None or len(scores) < MIN_HISTORY:
            return None
        values = np.fromiter(scores, dtype=np.float64)
        median = float(np.median(values))
        return median + (self.mads if mads is None else mads) * MAD_SCALE * float(np.median(np.abs(values - median)))

    def __call__(self, per_token: Tensor, batch: dict, step: int, label: str = TRANSCRIPT) -> Tensor:
        """The keep mask (B,) of a batch, given each cut's CTC loss per target token (B,) against its
        ``label``: TRANSCRIPT (the batch's ``ctc_`` fields) or TRANSLATION (``translation_ctc_``)."""
        if label not in PREFIXES:
            raise ValueError(f"loss truncation judges a {' or a '.join(PREFIXES)}, not {label!r}")
        prefix, key = PREFIXES[label], "" if label == TRANSCRIPT else f"{label}:"
        keep = torch.ones(per_token.shape[0], dtype=torch.bool)
        valid = batch[f"{prefix}_valid"].tolist()
        lengths = batch[f"{prefix}_lengths"].tolist()
        suspects = batch.get("suspects") if label == TRANSCRIPT else None
        records = []
        for i, loss in enumerate(per_token.detach().float().cpu().tolist()):
            language = batch["languages"][i]
            suspect = bool(suspects and suspects[i])
            if not valid[i] or lengths[i] == 0 or language is None or not math.isfinite(loss):
                if suspect and valid[i]:
                    self._hold(keep, i)
                continue
            score = math.log(loss + EPS)
            cut_id = batch["cut_ids"][i]
            base = key + SPEED_AFFIX.sub("", cut_id)
            language = key + language  # each label's scores on their own scale
            earlier = self.sticky and base in self.out
            bound = (self.bound(language, self.suspect_mads if suspect else None)
                     if step >= self.from_step and not earlier else None)
            if suspect and bound is None and not earlier:
                self._hold(keep, i)
                continue
            if earlier or bound is not None:
                self.judged += 1
                if earlier or score > bound:
                    keep[i] = False
                    record = {"step": step, "cut": cut_id, "language": batch["languages"][i],
                              "score": round(score, 4), "bound": None if bound is None else round(bound, 4),
                              **({"label": label} if key else {}), **({"suspect": True} if suspect else {})}
                    records.append({**record, "earlier": True} if earlier else record)
                    if self.sticky and not earlier:
                        self.out.add(base)
                        self.new_out.append(base)
            if not suspect:
                self.histories.setdefault(language, deque(maxlen=self.history)).append(score)
        if records and self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        return keep.to(per_token.device)

    def _hold(self, keep: Tensor, i: int) -> None:
        """A suspect transcript that cannot be judged (yet): no loss, where suspects are held."""
        if self.hold_suspects:
            keep[i] = False
            self.held += 1

    def take_new_out(self) -> list[str]:
        """The cuts this process has left out for good since the last call (to share with the others)."""
        new, self.new_out = self.new_out, []
        return new

    def add_out(self, cut_ids: Iterable[str]) -> None:
        """Cuts other processes left out for good (sticky)."""
        self.out.update(cut_ids)

    # Exact resume: the scores behind the bounds, the cuts out for good and the count go into the
    # checkpoint, and the log forgets the lines of the steps a resumed run does again.

    def state(self) -> dict:
        return {"histories": {k: list(v) for k, v in self.histories.items()},
                "judged": self.judged, "held": self.held, "out": sorted(self.out)}

    def load_state(self, state: dict | None, step: int) -> None:
        """Continue from a checkpoint's ``state()`` at ``step`` (None: from the start)."""
        state = state or {"histories": {}, "judged": 0}
        self.histories = {k: deque(v, maxlen=self.history) for k, v in state["histories"].items()}
        self.judged = state["judged"]
        self.held = state.get("held", 0)
        self.out, self.new_out = set(state.get("out", ())), []
        if self.log_path is not None and self.log_path.exists():
            lines = [line for line in self.log_path.read_text().splitlines() if json.loads(line)["step"] < step]
            self.log_path.write_text("".join(line + "\n" for line in lines))


def read_truncated(log_dir: Path) -> list[dict]:
    """Every record of every rank's log under ``log_dir``."""
    return [json.loads(line) for path in sorted(Path(log_dir).glob("rank-*.jsonl"))
            for line in path.read_text().splitlines() if line]


def truncation_report(records: list[dict], cuts: Iterable) -> dict:
    """Counts of the cuts left out; where the cuts record the truth of their labels, the precision and
    recall of leaving out a transcript at least once (asr.data.clean.evaluate_cleaning's figures) over
    the cuts it judges: those that train X->English only (no transcript heard) are left out of the
    figures. Translations left out, where any were, under ``translations``: their counts and, where the
    truth is recorded, the corruption kinds of those cuts' labels ("none" for right ones; in the demo
    corpus only ``other_clip`` carries a wrong translation)."""
    from asr.data import is_suspect, is_translation_only
    from asr.data.clean import _corruptions, evaluate_left_out

    cuts = list(cuts)
    transcripts = _times(r for r in records if r.get("label", TRANSCRIPT) == TRANSCRIPT)
    judged = (cut for cut in cuts if not is_translation_only(cut))
    report = {"truncations": sum(transcripts.values()), "cuts": len(transcripts),
              **evaluate_left_out(judged, transcripts, "loss_truncation")}
    suspects = [cut for cut in cuts if is_suspect(cut)]
    if suspects:
        report["suspects"] = {"n": len(suspects), "left_out": sum(cut.id in transcripts for cut in suspects),
                              **evaluate_left_out(suspects, transcripts, "loss_truncation")}
    translations = _times(r for r in records if r.get("label") == TRANSLATION)
    if translations:
        kinds = Counter()
        for cut in cuts:
            truth = _corruptions(cut) if cut.id in translations else None
            if truth is not None:
                kinds.update(truth or {"none"})
        report["translations"] = {"truncations": sum(translations.values()), "cuts": len(translations),
                                  **({"kinds": dict(sorted(kinds.items()))} if kinds else {})}
    return report


def _times(records: Iterable[dict]) -> Counter:
    """How many times each cut (by id without the speed affix) was left out."""
    return Counter(SPEED_AFFIX.sub("", record["cut"]) for record in records)
