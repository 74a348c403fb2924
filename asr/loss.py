"""The multitask loss: attention cross-entropy over the decoder's targets, plus an optional CTC term.

Joint CTC/attention training (as in OWSM): ``loss = (1 - w) * attention + w * ctc`` with
``w = ctc_weight``. The attention term is the mean over target tokens (IGNORE positions excluded)
with label smoothing; the CTC term is the summed CTC loss of the batch's cuts whose heard words are
known (translation-only pairs have none), against their transcripts' text ids, over the number of those
target ids, so both terms are per target token. No-speech cuts (an empty target) take CTC loss too; the
denominator never falls below the number of cuts, so a batch of silence stays on the same scale.

With a translation CTC head (ESPnet-ST's translation CTC) a third term, the same CTC loss against the
English translation of each cut whose translation is known:
``loss = (1 - w) * attention + w * ctc + wt * translation_ctc``: added on top, so the balance of the
other two stays as it was.

Loss truncation (asr.truncation) picks, from each cut's CTC loss per target token, the cuts whose
transcripts take loss; the others are left out of every term, as if they were not in the batch. With
the translation CTC term, it judges the translations too, by that head's loss: a cut whose transcript is
left out keeps its translation terms (the attention term where X->English is its task, the translation
CTC term) unless its translation is left out as well; a cut whose translation alone is left out keeps
its transcript terms. English speech, whose translation target is its transcript, keeps or loses both.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from asr.data.sequence import IGNORE
from asr.model import Output


class Loss(NamedTuple):
    total: Tensor  # what backward() is called on
    attention: Tensor  # mean cross-entropy per target token (with label smoothing)
    ctc: Tensor  # CTC loss per target token of the cuts with known words; 0 when not used
    n_tokens: int  # target tokens that took loss
    translation_ctc: Tensor | None = None  # the translation CTC head's loss per target token; None when not used
    n_left_out: int = 0  # cuts whose transcripts the select function left out
    n_translations_left_out: int = 0  # cuts whose translations it left out (judged with the translation CTC term)


def multitask_loss(output: Output, batch: dict, label_smoothing: float = 0.0, ctc_weight: float = 0.0,
                   ctc_blank: int | None = None, translation_ctc_weight: float = 0.0,
                   select: Callable[..., Tensor] | None = None, judge_translations: bool = True) -> Loss:
    """
    output : the model's Output: logits (B, L, V), ctc_logits (B, T, V + 1) or None, audio_lengths (B,) or
        None, translation_ctc_logits (B, T, V + 1) or None
    batch : a MultitaskDataset batch (labels, ctc_targets, ctc_lengths, ctc_valid, and the translation_ctc_
        fields when translation_ctc_weight > 0)
    select : given each cut's CTC loss per target token (B,), the batch and the label judged (keyword
        ``label``: "transcript", or "translation" with the translation CTC term), the cuts whose label
        takes loss (bool, B); see the module docstring (asr.truncation). Needs the CTC loss.
    judge_translations : false: ``select`` judges transcripts only, and a cut whose transcript it leaves
        out is left out of every term
    """
    labels = batch["labels"].to(output.logits.device)
    ctc_losses = translation_losses = keep = keep_translation = None
    if ctc_weight > 0 or select is not None:
        if output.ctc_logits is None:
            raise ValueError("ctc_weight > 0 and loss truncation need a model with a CTC head (model.ctc_head: true)")
        ctc_losses = ctc_per_cut(output.ctc_logits, output.audio_lengths, batch, "ctc",
                                 ctc_blank if ctc_blank is not None else output.ctc_logits.shape[-1] - 1)
    if translation_ctc_weight > 0:
        logits = output.translation_ctc_logits
        if logits is None:
            raise ValueError("translation_ctc_weight > 0 needs a model with a translation CTC head "
                             "(model.translation_ctc_head: true)")
        translation_losses = ctc_per_cut(logits, output.audio_lengths, batch, "translation_ctc",
                                         ctc_blank if ctc_blank is not None else logits.shape[-1] - 1)
    if select is not None:
        keep = select(_per_token(ctc_losses, batch, "ctc"), batch, label="transcript")
        keep_translation = takes_loss = keep
        if translation_losses is not None and judge_translations:
            english = torch.tensor([language == "en" for language in batch["languages"]], device=keep.device)
            judged = select(_per_token(translation_losses, batch, "translation_ctc"), batch, label="translation")
            keep_translation = judged & (keep | ~english)
            translating = torch.tensor([task == "translate" for task in batch["tasks"]], device=keep.device)
            takes_loss = torch.where(translating, keep_translation, keep)
        labels = labels.masked_fill(~takes_loss[:, None], IGNORE)
    n_tokens = int((labels != IGNORE).sum())
    attention = F.cross_entropy(output.logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                label_smoothing=label_smoothing, reduction="sum") / max(n_tokens, 1)
    ctc = attention.new_zeros(())
    if ctc_weight > 0:
        ctc = _per_target_token(ctc_losses, batch, "ctc", keep)
    total = (1 - ctc_weight) * attention + ctc_weight * ctc
    translation = None
    if translation_losses is not None:
        translation = _per_target_token(translation_losses, batch, "translation_ctc", keep_translation)
        total = total + translation_ctc_weight * translation
    n_left_out = 0 if keep is None else int((~keep).sum())
    n_translations_left_out = 0 if keep_translation is None else int(
        (~keep_translation & batch["translation_ctc_valid"].to(keep_translation.device)).sum())
    return Loss(total, attention, ctc, n_tokens, translation, n_left_out, n_translations_left_out)


def _per_token(per_cut: Tensor, batch: dict, prefix: str) -> Tensor:
    """Each cut's CTC loss per target token (B,), detached: what loss truncation judges."""
    return per_cut.detach() / batch[f"{prefix}_lengths"].to(per_cut.device).clamp(min=1)


def ctc_per_cut(ctc_logits: Tensor, audio_lengths: Tensor | None, batch: dict, prefix: str, blank: int) -> Tensor:
    """Each cut's CTC loss (B,) against the batch's ``{prefix}_targets``; 0 where not ``{prefix}_valid``."""
    device = ctc_logits.device
    valid = batch[f"{prefix}_valid"].to(device)
    if not bool(valid.any()):
        return ctc_logits.sum((1, 2)) * 0.0  # keeps the graph connected for every rank
    batch_size, n_positions, _ = ctc_logits.shape
    input_lengths = (audio_lengths if audio_lengths is not None
                     else torch.full((batch_size,), n_positions, device=device))
    log_probs = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V + 1)
    per_cut = F.ctc_loss(log_probs, batch[f"{prefix}_targets"].to(device), input_lengths.to(device),
                         batch[f"{prefix}_lengths"].to(device), blank=blank, reduction="none", zero_infinity=True)
    return per_cut * valid


def _per_target_token(per_cut: Tensor, batch: dict, prefix: str, keep: Tensor | None) -> Tensor:
    """The summed loss of the valid (and kept) cuts over their number of target ids."""
    valid = batch[f"{prefix}_valid"].to(per_cut.device)
    if keep is not None:
        valid = valid & keep
    lengths = batch[f"{prefix}_lengths"].to(per_cut.device)
    # Per target token over the whole batch (ESPnet sums per utterance; the attention term here is per
    # token). Per cut, an empty target would divide by zero; per encoder position (tried first) made
    # the term about ten times weaker than the attention term for the same weight.
    n_targets = (lengths * valid).sum()
    return (per_cut * valid).sum() / torch.maximum(n_targets, valid.sum()).clamp(min=1)
