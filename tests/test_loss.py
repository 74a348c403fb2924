import math

import pytest
import torch

from asr.data.sequence import IGNORE
from asr.loss import multitask_loss
from asr.model import Output


def batch(labels, ctc_targets, ctc_lengths, ctc_valid):
    return {"labels": torch.tensor(labels), "ctc_targets": torch.tensor(ctc_targets),
            "ctc_lengths": torch.tensor(ctc_lengths), "ctc_valid": torch.tensor(ctc_valid)}


def test_attention_loss_is_the_mean_over_target_tokens():
    logits = torch.zeros(2, 3, 10)  # uniform over 10 tokens: cross-entropy log(10) per token
    logits[0, 0, 4] = 5.0  # a confident, right prediction lowers only its own token's loss
    b = batch([[4, 1, IGNORE], [2, IGNORE, IGNORE]], [[0], [0]], [1, 1], [True, True])
    loss = multitask_loss(Output(logits, None, None), b)
    right = -torch.log_softmax(logits[0, 0], -1)[4].item()
    assert loss.n_tokens == 3
    assert loss.attention.item() == pytest.approx((right + 2 * math.log(10)) / 3, rel=1e-6)
    assert loss.ctc.item() == 0.0 and loss.total.item() == pytest.approx(loss.attention.item())


def test_label_smoothing_raises_the_loss_of_a_confident_prediction():
    logits = torch.full((1, 1, 4), -10.0)
    logits[0, 0, 1] = 10.0
    b = batch([[1]], [[0]], [1], [True])
    plain = multitask_loss(Output(logits, None, None), b).attention.item()
    smoothed = multitask_loss(Output(logits, None, None), b, label_smoothing=0.1).attention.item()
    assert smoothed > plain + 0.5


def test_ctc_loss_against_a_hand_count_of_paths():
    # Two positions, classes {0, 1, blank=2}, uniform: target [0] has 3 paths (0 0, 0 -, - 0) of
    # probability 1/9 each, so its loss is -log(1/3). Target [0, 1] has one path: -log(1/9).
    # Per target token of the batch: (log 3 + log 9) / 3.
    ctc_logits = torch.zeros(2, 2, 3)
    b = batch([[IGNORE], [IGNORE]], [[0, 0], [0, 1]], [1, 2], [True, True])
    loss = multitask_loss(Output(torch.zeros(2, 1, 2), ctc_logits, None), b, ctc_weight=1.0)
    assert loss.ctc.item() == pytest.approx((math.log(3) + math.log(9)) / 3, rel=1e-5)


def test_ctc_skips_cuts_without_known_words_and_respects_lengths():
    ctc_logits = torch.zeros(2, 4, 3)
    ctc_logits[1] = 100.0 * torch.randn(4, 3)  # garbage on a cut that must not count
    b = batch([[0], [0]], [[0], [0]], [1, 1], [True, False])
    loss = multitask_loss(Output(torch.zeros(2, 1, 2), ctc_logits, torch.tensor([2, 4])), b, ctc_weight=0.3)
    assert loss.ctc.item() == pytest.approx(math.log(3), rel=1e-5)  # first cut: 2 positions, 1 token, as above
    assert loss.total.item() == pytest.approx(0.7 * loss.attention.item() + 0.3 * math.log(3), rel=1e-5)


def test_ctc_of_silence_counts_beside_speech_and_alone_is_per_cut():
    # No speech: an empty target, so every position must be blank; uniform over {0, 1, blank} that is
    # 500 * log 3. Beside a speech cut with 1 target token it is summed with that cut's log 3 (above)
    # and divided by the batch's 2 cuts (more than its 1 target token); alone, by its 1 cut (never 0).
    ctc_logits = torch.zeros(2, 500, 3)
    b = batch([[0], [0]], [[0], [0]], [1, 0], [True, True])
    both = multitask_loss(Output(torch.zeros(2, 1, 2), ctc_logits, torch.tensor([2, 500])), b, ctc_weight=1.0)
    assert both.ctc.item() == pytest.approx((math.log(3) + 500 * math.log(3)) / 2, rel=1e-5)
    alone = batch([[0]], [[0]], [0], [True])
    loss = multitask_loss(Output(torch.zeros(1, 1, 2), ctc_logits[:1], None), alone, ctc_weight=1.0)
    assert loss.ctc.item() == pytest.approx(500 * math.log(3), rel=1e-5)


def test_ctc_weight_without_a_head_is_a_clear_error():
    with pytest.raises(ValueError, match="CTC head"):
        multitask_loss(Output(torch.zeros(1, 1, 2), None, None), batch([[0]], [[0]], [1], [True]), ctc_weight=0.3)


def test_translation_ctc_is_a_third_term_on_its_own_targets():
    # The translation head scores the English targets (hand count as above: [0] over 2 uniform positions
    # is log 3); the second cut has no known translation and its garbage must not count.
    ctc_logits = torch.zeros(2, 2, 3)
    translation_logits = torch.zeros(2, 2, 3)
    translation_logits[1] = 100.0 * torch.randn(2, 3)
    b = batch([[0], [0]], [[0, 0], [0, 1]], [1, 2], [True, True])
    b |= {"translation_ctc_targets": torch.tensor([[0], [1]]), "translation_ctc_lengths": torch.tensor([1, 1]),
          "translation_ctc_valid": torch.tensor([True, False])}
    output = Output(torch.zeros(2, 1, 2), ctc_logits, None, translation_logits)
    loss = multitask_loss(output, b, ctc_weight=0.3, translation_ctc_weight=0.2)
    assert loss.translation_ctc.item() == pytest.approx(math.log(3), rel=1e-5)
    expected = 0.7 * loss.attention.item() + 0.3 * loss.ctc.item() + 0.2 * math.log(3)  # added on top
    assert loss.total.item() == pytest.approx(expected, rel=1e-5)
    assert multitask_loss(output, b, ctc_weight=0.3).translation_ctc is None  # off: no term


def test_translation_ctc_weight_without_its_head_is_a_clear_error():
    b = batch([[0]], [[0]], [1], [True])
    with pytest.raises(ValueError, match="translation CTC head"):
        multitask_loss(Output(torch.zeros(1, 1, 2), torch.zeros(1, 2, 3), None), b, ctc_weight=0.3,
                       translation_ctc_weight=0.2)
