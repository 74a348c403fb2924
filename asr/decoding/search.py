"""Token decoders (how the next token is chosen) and the sequence ranker (which candidate wins).

A decoder's rows come in groups, one group of ``n_group`` rows per audio item (beams, or best-of-n
samples), item after item. A decoder is used for one ``decode`` call:

    tokens, completed = decoder.update(tokens, logprobs, sum_logprobs)   # step after step
    candidates, scores = decoder.finalize(tokens, sum_logprobs)         # then the candidates per item
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from asr.model import KVCache


class TokenDecoder(Protocol):
    def update(self, tokens: Tensor, logprobs: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        """Choose the next tokens.

        tokens : shape = (n_rows, n_tokens), every token so far, the prompt included
        logprobs : shape = (n_rows, n_vocab), the next token's log probabilities after the logit
            filters (-inf where masked), or joint CTC/attention scores (asr.decoding.ctc)
        sum_logprobs : shape = (n_rows,), each row's summed log probability, updated in place
        Returns the tokens with the next ones appended (rows possibly reordered) and whether every
        item is done.
        """

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[list[list[list[int]]], list[list[float]]]:
        """The candidates per item: their tokens (prompt included; whatever follows a first
        ``<|endoftext|>`` is not part of them) and their summed log probabilities.

        tokens : shape = (n_audio, n_group, n_tokens)
        sum_logprobs : shape = (n_audio, n_group)
        """


class GreedyDecoder:
    """The most likely token at temperature 0; otherwise a sample from softmax(logprobs / temperature)
    (the same as from the tempered logits), drawn with ``generator`` (on the scores' device) for
    reproducible runs. A row that has ended stays at ``<|endoftext|>``. The summed log probabilities
    are the untempered ones, as in Whisper."""

    def __init__(self, temperature: float, eot: int, generator: torch.Generator | None = None):
        self.temperature = temperature
        self.eot = eot
        self.generator = generator

    def update(self, tokens: Tensor, logprobs: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        ended = tokens[:, -1] == self.eot
        if self.temperature == 0:
            next_tokens = logprobs.argmax(dim=-1)
        else:
            # An ended row may have every token masked; give it something to sample from.
            probs = (logprobs.masked_fill(ended[:, None], 0.0) / self.temperature).softmax(dim=-1)
            next_tokens = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        chosen = logprobs.gather(1, next_tokens[:, None]).squeeze(1)
        sum_logprobs += torch.where(ended, 0.0, chosen)
        next_tokens = next_tokens.masked_fill(ended, self.eot)
        return torch.cat([tokens, next_tokens[:, None]], dim=-1), bool((next_tokens == self.eot).all())

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[list[list[list[int]]], list[list[float]]]:
        return tokens.tolist(), sum_logprobs.tolist()


class BeamSearchDecoder:
    """Beam search over ``beam_size`` rows per item, keeping the model's ``cache`` in step with them.

    Each step extends every beam, keeps the ``beam_size`` best continuations that do not end, and
    sets aside those that end in ``<|endoftext|>`` as finished candidates. An item is done when it has
    ``round(beam_size * patience)`` finished candidates (arxiv:2204.05424); decoding stops when every
    item is done.
    """

    def __init__(self, beam_size: int, eot: int, cache: KVCache, patience: float = 1.0):
        self.beam_size = beam_size
        self.eot = eot
        self.cache = cache
        self.max_candidates = round(beam_size * patience)
        if beam_size < 1 or self.max_candidates < 1:
            raise ValueError(f"beam_size ({beam_size}) and patience ({patience}) leave no candidates")
        self.finished: list[dict[tuple[int, ...], float]] | None = None  # per item: tokens -> score

    def update(self, tokens: Tensor, logprobs: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        n_rows, n_vocab = logprobs.shape
        n_audio = n_rows // self.beam_size
        scores = (sum_logprobs[:, None] + logprobs).view(n_audio, self.beam_size, n_vocab)
        if self.finished is None:
            # The beams start identical: extend only the first, or they would fill the beam with copies.
            self.finished = [{} for _ in range(n_audio)]
            scores[:, 1:] = -torch.inf
        # Each beam has one <|endoftext|> continuation, so the best 2 * beam_size hold beam_size others.
        top_scores, top_index = scores.view(n_audio, -1).topk(2 * self.beam_size, dim=-1)
        first_rows = torch.arange(n_audio, device=logprobs.device)[:, None] * self.beam_size
        sources = (first_rows + top_index // n_vocab).tolist()
        next_tokens = (top_index % n_vocab).tolist()
        rows, kept_tokens, kept_scores = [], [], []
        for item in range(n_audio):
            kept = 0
            for score, source, token in zip(top_scores[item].tolist(), sources[item], next_tokens[item]):
                if token == self.eot:
                    if len(self.finished[item]) < self.max_candidates and score > -torch.inf:
                        self.finished[item][tuple(tokens[source].tolist()) + (token,)] = score
                    continue
                rows.append(source)
                kept_tokens.append(token)
                kept_scores.append(score)
                kept += 1
                if kept == self.beam_size:
                    break
        index = torch.tensor(rows, device=tokens.device)
        self.cache.reorder(index)
        sum_logprobs.copy_(torch.tensor(kept_scores, device=sum_logprobs.device))
        tokens = torch.cat([tokens[index], torch.tensor(kept_tokens, device=tokens.device)[:, None]], dim=-1)
        return tokens, all(len(finished) >= self.max_candidates for finished in self.finished)

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor) -> tuple[list[list[list[int]]], list[list[float]]]:
        """The finished candidates; an item with fewer than ``beam_size`` of them (the length limit came
        first) is topped up with its best unfinished beams."""
        candidates, scores = [], []
        for item, finished in enumerate(self.finished):
            finished = dict(finished)
            for beam in sum_logprobs[item].argsort(descending=True).tolist():
                if len(finished) >= self.beam_size:
                    break
                finished[tuple(tokens[item, beam].tolist())] = sum_logprobs[item, beam].item()
            candidates.append([list(sequence) for sequence in finished])
            scores.append(list(finished.values()))
        return candidates, scores


class MaximumLikelihoodRanker:
    """The candidate with the best length-normalised log probability: divided by its length when
    ``length_penalty`` is None, else by Google NMT's ((5 + length) / 6) ** length_penalty. Length counts
    the generated tokens without ``<|endoftext|>``; an empty candidate counts as 1 (not a division by 0)."""

    def __init__(self, length_penalty: float | None):
        self.length_penalty = length_penalty

    def score(self, sum_logprob: float, length: int) -> float:
        if self.length_penalty is None:
            return sum_logprob / max(length, 1)
        return sum_logprob / ((5 + length) / 6) ** self.length_penalty

    def rank(self, tokens: list[list[list[int]]], sum_logprobs: list[list[float]]) -> list[int]:
        """tokens[item][candidate]: the generated tokens; returns the winner's index per item."""
        return [
            max(range(len(candidates)), key=lambda k: self.score(scores[k], len(candidates[k])))
            for candidates, scores in zip(tokens, sum_logprobs)
        ]
