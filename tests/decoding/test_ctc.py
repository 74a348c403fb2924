"""CTC prefix scores against a brute-force sum over every alignment, and the joint scores' wiring."""

import itertools
import math

import pytest
import torch

from asr.decoding.ctc import CTCPrefixScorer, ctc_greedy, ctc_log_probs

N_CTC = 3  # text pieces 0, 1, 2; the CTC blank is 3
EOT, TIMESTAMP = 4, 5  # <|endoftext|>, one timestamp token: a decoder vocabulary of 6
PROMPT = [9]  # the prompt's one token (sample_begin = 1)


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    """An alignment's labels: repeats merged, then blanks removed."""
    merged = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    return tuple(p for p in merged if p != N_CTC)


def brute_force(log_probs: torch.Tensor, length: int) -> tuple[dict, dict]:
    """log P(labels are exactly l) and log P(labels start with l), for every l, over the first `length` frames."""
    whole, prefix = {}, {}
    for path in itertools.product(range(N_CTC + 1), repeat=length):
        p = math.exp(sum(log_probs[t, k].item() for t, k in enumerate(path)))
        labels = collapse(path)
        whole[labels] = whole.get(labels, 0.0) + p
        for n in range(len(labels) + 1):
            prefix[labels[:n]] = prefix.get(labels[:n], 0.0) + p
    return whole, prefix


def random_log_probs(n_audio: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_audio, n_frames, N_CTC + 1, generator=generator).mul(1.5).log_softmax(-1)


def uniform_attention(n_rows: int) -> torch.Tensor:
    return torch.full((n_rows, 6), math.log(1 / 6))


def step(scorer: CTCPrefixScorer, tokens: list[list[int]], attention: torch.Tensor | None = None) -> torch.Tensor:
    tokens = torch.tensor(tokens)
    return scorer.score(tokens, uniform_attention(len(tokens)) if attention is None else attention)


@pytest.mark.parametrize("length", [5, 3])  # 3: the item's frames past its length are padding
def test_prefix_and_end_scores_match_the_sum_over_alignments(length):
    log_probs = random_log_probs(1, 5)
    whole, prefix = brute_force(log_probs[0], length)
    w = 0.5
    scorer = CTCPrefixScorer(log_probs, torch.tensor([length]), group=1, sample_begin=1, eot=EOT, weight=w)
    uniform = math.log(1 / 6)

    def joint_score(p_next: float, p_prefix: float) -> float:  # -inf where no alignment fits the frames
        return (1 - w) * uniform + w * math.log(p_next / p_prefix) if p_next > 0 else -math.inf

    # Walk the prefix (2, 2, 0), a timestamp in between: each step's text scores are the CTC gains.
    hypothesis = []
    for piece in (2, TIMESTAMP, 2, 0):
        joint = step(scorer, [PROMPT + hypothesis])[0]
        text = tuple(t for t in hypothesis if t < N_CTC)
        for c in range(N_CTC):
            assert joint[c].item() == pytest.approx(joint_score(prefix.get(text + (c,), 0.0), prefix[text]), abs=1e-5)
        assert joint[EOT].item() == pytest.approx(joint_score(whole.get(text, 0.0), prefix[text]), abs=1e-5)
        # not a CTC class: the best text piece's gain
        best = max(joint_score(prefix.get(text + (c,), 0.0), prefix[text]) for c in range(N_CTC))
        assert joint[TIMESTAMP].item() == pytest.approx(best, abs=1e-5)
        hypothesis.append(piece)


def test_rows_are_found_by_their_text_whatever_the_order_and_items_are_kept_apart():
    log_probs = random_log_probs(2, 4, seed=1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([4, 4]), group=2, sample_begin=1, eot=EOT, weight=0.3)
    step(scorer, [PROMPT] * 4)
    # Beam search reordered the rows of item 0 and extended them differently; item 1's rows end.
    joint = step(scorer, [PROMPT + [1], PROMPT + [0], PROMPT + [EOT], PROMPT + [2]])
    alone = CTCPrefixScorer(log_probs[:1], torch.tensor([4]), group=1, sample_begin=1, eot=EOT, weight=0.3)
    step(alone, [PROMPT])
    assert torch.allclose(joint[0], step(alone, [PROMPT + [1]])[0])
    assert torch.equal(joint[2], uniform_attention(1)[0])  # an ended row is left as it is
    other = CTCPrefixScorer(log_probs[1:], torch.tensor([4]), group=1, sample_begin=1, eot=EOT, weight=0.3)
    step(other, [PROMPT])
    assert torch.allclose(joint[3], step(other, [PROMPT + [2]])[0])


def test_pieces_outside_the_attentions_best_are_not_candidates():
    log_probs = random_log_probs(1, 4)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([4]), group=1, sample_begin=1, eot=EOT, weight=0.3,
                             n_candidates=2)
    attention = torch.log(torch.tensor([[0.1, 0.3, 0.4, 0.05, 0.1, 0.05]]))
    joint = step(scorer, [PROMPT], attention)[0]
    assert joint[0] == -torch.inf and torch.isfinite(joint[1:3]).all()


def test_a_loop_the_ctc_does_not_hear_loses_to_ending():
    # Frames that say "1" then blanks: after "1", attention prefers another "1", the joint score ends.
    probs = torch.full((1, 6, N_CTC + 1), 0.01)
    probs[0, 1, 1] = probs[0, 2, 1] = 0.97
    probs[0, [0, 3, 4, 5], N_CTC] = 0.97
    scorer = CTCPrefixScorer(probs.log(), torch.tensor([6]), group=1, sample_begin=1, eot=EOT, weight=0.5)
    step(scorer, [PROMPT])
    attention = torch.log(torch.tensor([[0.02, 0.6, 0.02, 0.01, 0.3, 0.05]]))
    joint = step(scorer, [PROMPT + [1]], attention)[0]
    assert attention[0].argmax() == 1 and joint.argmax() == EOT


def test_ctc_log_probs_lengths_come_from_the_mask():
    logits = torch.randn(2, 5, N_CTC + 1)
    log_probs, lengths = ctc_log_probs(logits, torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    assert lengths.tolist() == [5, 3] and torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 5))
    assert ctc_log_probs(logits, None)[1].tolist() == [5, 5]


def test_bad_weight_is_refused():
    with pytest.raises(ValueError, match="CTC weight"):
        CTCPrefixScorer(random_log_probs(1, 3), torch.tensor([3]), group=1, sample_begin=1, eot=EOT, weight=1.0)


def test_a_prefix_that_was_never_a_candidate_scores_minus_inf_not_nan():  # timestamps included
    # Beam search keeps -inf rows when too few continuations are finite; their CTC probability is 0.
    scorer = CTCPrefixScorer(random_log_probs(1, 4), torch.tensor([4]), group=1, sample_begin=1, eot=EOT,
                             weight=0.3, n_candidates=1)
    attention = torch.log(torch.tensor([[0.5, 0.2, 0.1, 0.05, 0.1, 0.05]]))
    step(scorer, [PROMPT], attention)  # only piece 0 is scored
    joint = step(scorer, [PROMPT + [2]])[0]
    assert not joint.isnan().any()
    assert (joint == -torch.inf).all()


def test_ctc_greedy_merges_repeats_drops_blanks_and_stops_at_the_length():
    B = N_CTC
    best = torch.tensor([[1, 1, B, 1, 2, 2, B, 0], [B, 0, 0, 2, 2, 1, 1, 1]])
    log_probs = torch.nn.functional.one_hot(best, N_CTC + 1).float().log_softmax(-1)
    assert ctc_greedy(log_probs, torch.tensor([8, 4])) == [[1, 1, 2, 0], [0, 2]]
