"""Validation on a dev CutSet: loss, and greedy decoding scored per task.

    metrics = validate(model, tokenizer, dev_cuts, config.data, decode_cuts=64)
    # {"dev_loss": ..., "dev_wer": ..., "dev_cer": ..., "dev_translate_wer": ..., "dev_lid_acc": ...,
    #  "dev_nospeech_acc": ..., "dev_wer_de": ..., "dev_ctc_wer": ..., "dev_ctc_cer": ...}

With a CTC head, transcripts are decoded jointly with it (``asr.decoding.ctc.DEFAULT_WEIGHT``, as the
CLIs do), and ``dev_ctc_wer`` / ``dev_ctc_cer`` score the CTC head's own best path: how well the
encoder hears, apart from the decoder. A translation CTC head joins translation the same way, and
``dev_translation_ctc_wer`` / ``_cer`` score its best path against the English references.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable

import torch
from lhotse import CutSet

from asr.config import DataConfig
from asr.data.dataset import MultitaskDataset, make_sampler
from asr.data.sequence import reference_text
from asr.decoding.ctc import ctc_greedy, ctc_log_probs, default_weight, task_ctc_logits
from asr.decoding.decode import greedy_decode
from asr.decoding.greedy import detect
from asr.evaluate.metrics import error_rates
from asr.loss import multitask_loss
from asr.model import Model
from asr.tokenizer import Tokenizer

DECODE_BATCH = 16  # cuts decoded together


@torch.no_grad()
def validate(model: Model, tokenizer: Tokenizer, cuts: CutSet, options: DataConfig, decode_cuts: int = 64,
             max_tokens: int = 200, label_smoothing: float = 0.0, ctc_weight: float = 0.0,
             all_finished: Callable[[bool], bool] = bool) -> dict[str, float]:
    """Dev loss over all ``cuts``; WER/CER (transcribe, translate), language-ID and no-speech accuracy
    from greedy decoding of the first ``decode_cuts`` of them. ``all_finished``: see ``greedy_decode``."""
    was_training = model.training
    model.eval()
    try:
        metrics = dev_loss(model, tokenizer, cuts, options, label_smoothing, ctc_weight)
        metrics.update(decode_metrics(model, tokenizer, list(cuts)[:decode_cuts], max_tokens, all_finished))
    finally:
        model.train(was_training)
    return metrics


def dev_loss(model: Model, tokenizer: Tokenizer, cuts: CutSet, options: DataConfig, label_smoothing: float,
             ctc_weight: float) -> dict[str, float]:
    device = next(model.parameters()).device
    dataset = MultitaskDataset(tokenizer, options, n_mels=model.dims.n_mels, n_text_ctx=model.dims.n_text_ctx,
                               train=False)
    total, tokens = 0.0, 0
    for cut_batch in make_sampler(cuts, options, shuffle=False):
        batch = dataset[cut_batch]
        if not batch["cut_ids"]:
            continue
        output = model(batch["mel"].to(device), batch["tokens"].to(device), batch["n_frames"].to(device))
        loss = multitask_loss(output, batch, label_smoothing, ctc_weight if model.ctc is not None else 0.0)
        total += loss.total.item() * loss.n_tokens
        tokens += loss.n_tokens
    return {"dev_loss": total / tokens if tokens else float("nan")}


def decode_metrics(model: Model, tokenizer: Tokenizer, cuts: list, max_tokens: int,
                   all_finished: Callable[[bool], bool] = bool) -> dict[str, float]:
    """Greedy transcripts and translations with the reference language given; LID and no-speech
    from the first decoder step."""
    device = next(model.parameters()).device
    plain = dataclasses.replace(DataConfig(), spec_augment=False)
    dataset = MultitaskDataset(tokenizer, plain, n_mels=model.dims.n_mels, n_text_ctx=model.dims.n_text_ctx,
                               train=False)
    texts = defaultdict(lambda: ([], []))  # (task, language) -> (references, hypotheses)
    lid, nospeech = [], []
    for start in range(0, len(cuts), DECODE_BATCH):
        batch_cuts = {c.id: c for c in cuts[start: start + DECODE_BATCH]}
        batch = dataset[CutSet.from_cuts(batch_cuts.values())]
        if not batch["cut_ids"]:
            continue
        kept = [batch_cuts[i] for i in batch["cut_ids"]]
        xa, mask = model.encode(batch["mel"].to(device), batch["n_frames"].to(device))
        first = detect(model, xa, mask, tokenizer)
        for i, cut in enumerate(kept):
            is_speech = bool(cut.supervisions)
            nospeech.append(bool(first.no_speech_prob[i] > 0.5) != is_speech)
            if is_speech:
                lid.append(first.language[i] == cut.supervisions[0].language)
        for task in ("transcribe", "translate"):
            _decode_task(model, tokenizer, xa, mask, kept, task, max_tokens, texts, all_finished)
        for task in ("transcribe", "translate"):
            _ctc_transcripts(model, task, tokenizer, xa, mask, kept, texts)
    return _summarise(texts, lid, nospeech)


def _ctc_transcripts(model, task: str, tokenizer, xa, mask, cuts, texts) -> None:
    """The best paths of the CTC head behind ``task`` (``task_ctc_logits``; none where the model lacks
    it) against the references of ``task``, kept under the task name "ctc" (transcribe) or
    "translation_ctc" (translate)."""
    references = {i: reference_text(cut, task) for i, cut in enumerate(cuts)}
    rows = [i for i, reference in references.items() if reference is not None]
    if not rows:
        return
    index = torch.tensor(rows, device=xa.device)
    rows_mask = None if mask is None else mask[index]
    logits = task_ctc_logits(model, xa[index], rows_mask, task)
    if logits is None:
        return
    hypotheses = ctc_greedy(*ctc_log_probs(logits, rows_mask))
    name = "ctc" if task == "transcribe" else "translation_ctc"
    for row, hypothesis in zip(rows, hypotheses):
        refs, hyps = texts[(name, cuts[row].supervisions[0].language)]
        refs.append(references[row])
        hyps.append(tokenizer.decode(hypothesis))


def _decode_task(model, tokenizer, xa, mask, cuts, task: str, max_tokens: int, texts, all_finished) -> None:
    rows, prompts, references = [], [], []
    for i, cut in enumerate(cuts):
        reference = reference_text(cut, task)
        if reference is None:
            continue
        rows.append(i)
        prompts.append(list(tokenizer.sot_sequence(cut.supervisions[0].language, task)))
        references.append(reference)
    if not rows:
        return
    index = torch.tensor(rows, device=xa.device)
    hypotheses = greedy_decode(model, xa[index], None if mask is None else mask[index], prompts, tokenizer,
                               max_tokens, all_finished, default_weight(model), task)
    for row, reference, hypothesis in zip(rows, references, hypotheses):
        refs, hyps = texts[(task, cuts[row].supervisions[0].language)]
        refs.append(reference)
        hyps.append(tokenizer.decode(hypothesis))


def _summarise(texts, lid: list[bool], nospeech: list[bool]) -> dict[str, float]:
    metrics = {}
    for task in ("transcribe", "translate", "ctc", "translation_ctc"):
        refs, hyps = [], []
        for (t, language), (r, h) in sorted(texts.items()):
            if t != task:
                continue
            refs += r
            hyps += h
            if task == "transcribe":
                rates = error_rates(r, h)
                metrics[f"dev_wer_{language}"] = rates["wer"]
        if refs:
            rates = error_rates(refs, hyps)
            prefix = {"transcribe": "dev", "translate": "dev_translate", "ctc": "dev_ctc",
                      "translation_ctc": "dev_translation_ctc"}[task]
            metrics[f"{prefix}_wer"], metrics[f"{prefix}_cer"] = rates["wer"], rates["cer"]
    if lid:
        metrics["dev_lid_acc"] = sum(lid) / len(lid)
    if nospeech:
        metrics["dev_nospeech_acc"] = sum(nospeech) / len(nospeech)
    return metrics
