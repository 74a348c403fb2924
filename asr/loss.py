"""The multitask loss: attention cross-entropy over the decoder's targets, plus an optional CTC term.

Joint CTC/attention training (as in OWSM): ``loss = (1 - w) * attention + w * ctc`` with
``w = ctc_weight``. The attention term is the mean over target tokens (IGNORE positions excluded)
with label smoothing; the CTC term is the summed CTC loss of the batch's cuts whose heard words are
known (translation-only pairs have none), against their transcripts' text ids, over the number of those
target ids, so both terms are per target token. No-speech cuts (an empty target) take CTC loss too; the
denominator never falls below the number of cuts, so a batch of silence stays on the same scale.
"""

from __future__ import annotations

from typing import NamedTuple

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


def multitask_loss(output: Output, batch: dict, label_smoothing: float = 0.0, ctc_weight: float = 0.0,
                   ctc_blank: int | None = None) -> Loss:
    """
    output : the model's Output: logits (B, L, V), ctc_logits (B, T, V + 1) or None, audio_lengths (B,) or None
    batch : a MultitaskDataset batch (labels, ctc_targets, ctc_lengths, ctc_valid)
    """
    labels = batch["labels"].to(output.logits.device)
    n_tokens = int((labels != IGNORE).sum())
    attention = F.cross_entropy(output.logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                label_smoothing=label_smoothing, reduction="sum") / max(n_tokens, 1)
    ctc = attention.new_zeros(())
    if ctc_weight > 0:
        if output.ctc_logits is None:
            raise ValueError("ctc_weight > 0 needs a model with a CTC head (model.ctc_head: true)")
        ctc = _ctc_loss(output, batch, ctc_blank if ctc_blank is not None else output.ctc_logits.shape[-1] - 1)
    return Loss((1 - ctc_weight) * attention + ctc_weight * ctc, attention, ctc, n_tokens)


def _ctc_loss(output: Output, batch: dict, blank: int) -> Tensor:
    device = output.ctc_logits.device
    valid = batch["ctc_valid"].to(device)
    if not bool(valid.any()):
        return output.ctc_logits.sum() * 0.0  # keeps the graph connected for every rank
    batch_size, n_positions, _ = output.ctc_logits.shape
    input_lengths = (output.audio_lengths if output.audio_lengths is not None
                     else torch.full((batch_size,), n_positions, device=device))
    log_probs = output.ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V + 1)
    per_cut = F.ctc_loss(log_probs, batch["ctc_targets"].to(device), input_lengths.to(device),
                         batch["ctc_lengths"].to(device), blank=blank, reduction="none", zero_infinity=True)
    # Per target token over the whole batch (ESPnet sums per utterance; the attention term here is per
    # token). Per cut, an empty target would divide by zero; per encoder position (tried first) made
    # the term about ten times weaker than the attention term for the same weight.
    n_targets = (batch["ctc_lengths"].to(device) * valid).sum()
    return (per_cut * valid).sum() / torch.maximum(n_targets, valid.sum()).clamp(min=1)
