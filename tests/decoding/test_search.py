"""Token decoders and the ranker on hand-made log probabilities."""

import math

import pytest
import torch

from asr.decoding.search import BeamSearchDecoder, GreedyDecoder, MaximumLikelihoodRanker

EOT = 4  # a vocabulary of 6 ids; 4 ends a sequence


def log(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_greedy_takes_the_most_likely_and_holds_ended_rows():
    tokens = torch.tensor([[9, 1], [9, EOT]])
    logits = torch.stack([log([0.1, 0.6, 0.2, 0.05, 0.03, 0.02]), torch.full((6,), -torch.inf)])
    sum_logprobs = torch.tensor([-1.0, -2.0])
    tokens, completed = GreedyDecoder(0.0, EOT).update(tokens, logits, sum_logprobs)
    assert tokens.tolist() == [[9, 1, 1], [9, EOT, EOT]]
    assert sum_logprobs.tolist() == pytest.approx([-1.0 + math.log(0.6), -2.0])  # no NaN from a masked row
    assert not completed
    tokens, completed = GreedyDecoder(0.0, EOT).update(tokens, log([[0.1, 0.1, 0.1, 0.1, 0.5, 0.1]] * 2), sum_logprobs)
    assert completed and tokens[:, -1].tolist() == [EOT, EOT]
    candidates, scores = GreedyDecoder(0.0, EOT).finalize(tokens.view(2, 1, -1), sum_logprobs.view(2, 1))
    assert candidates == [[[9, 1, 1, EOT]], [[9, EOT, EOT, EOT]]] and len(scores) == 2


def test_sampling_draws_from_the_tempered_distribution():
    n = 4000
    logits = log([0.5, 0.25, 0.25, 0.0, 0.0, 0.0]).expand(n, 6).clone()
    tokens = torch.zeros(n, 1, dtype=torch.long)
    for temperature, expected in ((1.0, [0.5, 0.25, 0.25]), (0.5, [2 / 3, 1 / 6, 1 / 6])):  # p ** (1 / T), renormalised
        sum_logprobs = torch.zeros(n)
        decoder = GreedyDecoder(temperature, EOT, torch.Generator().manual_seed(0))
        drawn, _ = decoder.update(tokens, logits, sum_logprobs)
        frequencies = torch.bincount(drawn[:, -1], minlength=6).float() / n
        assert frequencies[:3].tolist() == pytest.approx(expected, abs=0.03)
        assert frequencies[3:].sum() == 0
        # Log probabilities are the untempered model's.
        picked = drawn[:, -1]
        assert torch.allclose(sum_logprobs, logits.log_softmax(-1).gather(1, picked[:, None]).squeeze(1))
        again, _ = GreedyDecoder(temperature, EOT, torch.Generator().manual_seed(0)).update(tokens, logits, torch.zeros(n))
        assert torch.equal(again, drawn)  # the generator makes it reproducible


class Cache:
    def __init__(self):
        self.reorders = []

    def reorder(self, index):
        self.reorders.append(index.tolist())


def test_beam_search_keeps_the_best_and_sets_finished_aside():
    cache = Cache()
    decoder = BeamSearchDecoder(beam_size=2, eot=EOT, cache=cache)
    tokens = torch.tensor([[9], [9]])  # one item, two identical beams
    sum_logprobs = torch.zeros(2)
    step1 = log([0.5, 0.4, 0.0, 0.0, 0.1, 0.0])
    tokens, completed = decoder.update(tokens, step1.expand(2, 6).clone(), sum_logprobs)
    assert tokens.tolist() == [[9, 0], [9, 1]]  # not [9, 0] twice from the copies
    assert sum_logprobs.tolist() == pytest.approx([math.log(0.5), math.log(0.4)])
    assert cache.reorders == [[0, 0]] and not completed
    # Beam 0 (token 0) ends with 0.3 or goes on with 0.25 / 0.25 / 0.2; beam 1 (token 1) ends with 0.9.
    step2 = torch.stack([log([0.25, 0.25, 0.2, 0.0, 0.3, 0.0]), log([0.05, 0.0, 0.05, 0.0, 0.9, 0.0])])
    tokens, completed = decoder.update(tokens, step2, sum_logprobs)
    # Sorted: [1, eot] 0.36, [0, eot] 0.15, [0, 0] 0.125, [0, 1] 0.125: two finished, two kept.
    assert tokens.tolist() == [[9, 0, 0], [9, 0, 1]] and cache.reorders[-1] == [0, 0]
    assert completed
    candidates, scores = decoder.finalize(tokens.view(1, 2, -1), sum_logprobs.view(1, 2))
    assert candidates == [[[9, 1, EOT], [9, 0, EOT]]]
    assert scores[0] == pytest.approx([math.log(0.36), math.log(0.15)])


def test_beam_search_patience_and_topping_up():
    decoder = BeamSearchDecoder(beam_size=2, eot=EOT, cache=Cache(), patience=1.5)  # waits for 3 finished
    assert decoder.max_candidates == 3
    tokens, sum_logprobs = torch.tensor([[9], [9]]), torch.zeros(2)
    tokens, completed = decoder.update(tokens, log([[0.5, 0.3, 0.0, 0.0, 0.2, 0.0]] * 2), sum_logprobs)
    assert not completed
    # Two beams kept before <|endoftext|> (0.2) came up, so nothing finished; the length limit ends it now.
    candidates, scores = decoder.finalize(tokens.view(1, 2, -1), sum_logprobs.view(1, 2))
    assert candidates == [[[9, 0], [9, 1]]]  # nothing finished: topped up with the beams, best first
    assert scores[0] == pytest.approx([math.log(0.5), math.log(0.3)])
    with pytest.raises(ValueError, match="no candidates"):
        BeamSearchDecoder(beam_size=2, eot=EOT, cache=Cache(), patience=0.1)


def test_ranker_by_length_and_by_google_nmt_penalty():
    candidates = [[[1, 2, 3], [1]], [[1, 2, 3, 4], []]]
    sum_logprobs = [[-3.0, -1.5], [-2.0, -0.9]]
    # None: -3/3 = -1.0 beats -1.5/1; -2/4 = -0.5 beats -0.9 (empty counts as length 1).
    assert MaximumLikelihoodRanker(None).rank(candidates, sum_logprobs) == [0, 0]
    # alpha 1: -3 / (8/6) = -2.25 loses to -1.5 / 1; -2 / (9/6) = -1.33 loses to -0.9 / (5/6) = -1.08.
    assert MaximumLikelihoodRanker(1.0).rank(candidates, sum_logprobs) == [1, 1]
    assert MaximumLikelihoodRanker(1.0).score(-3.0, 3) == pytest.approx(-2.25)
    assert MaximumLikelihoodRanker(0.5).score(-3.0, 7) == pytest.approx(-3.0 / math.sqrt(2.0))
    assert MaximumLikelihoodRanker(0.0).rank(candidates, sum_logprobs) == [1, 1]  # alpha 0: the plain sum
