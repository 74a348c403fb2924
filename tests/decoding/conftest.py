"""A tiny tokenizer and a scripted stand-in for ``asr.model.Model`` whose logits tests write by hand."""

from types import SimpleNamespace

import pytest
import torch

from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = [" the cat sat on the mat.", " hello world, how are you?", " guten tag, wie geht es dir?",
         " the quick brown fox jumps over the lazy dog."] * 4


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """English and German only: n_vocab = n_text + 10 specials + 1501 timestamps."""
    return Tokenizer.from_sentencepiece(train_sentencepiece(TEXTS, vocab_size=300, num_threads=1), ["en", "de"])


class ScriptedCache:
    """Each row's tokens seen so far; ``reorder`` keeps rows as the real KVCache does, and is recorded."""

    def __init__(self):
        self.histories: list[list[int]] | None = None
        self.reorders: list[list[int]] = []

    def reorder(self, index: torch.Tensor) -> None:
        self.reorders.append(index.tolist())
        self.histories = [list(self.histories[i]) for i in index.tolist()]


class ScriptedModel:
    """``encode`` turns mel of shape (batch, 1, 1) holding each item's number into xa of shape (batch, 1, 1);
    ``decode`` gives, at every position, ``script(item, history)``: the logits (n_vocab,) after the
    row's tokens so far (from the cache: only new tokens are passed with one). ``passes`` counts the
    caches made, one per decoding pass. It has no CTC heads."""

    ctc = ctc_translation = None

    def __init__(self, n_vocab: int, script, n_text_ctx: int = 64):
        self.dims = SimpleNamespace(n_vocab=n_vocab, n_text_ctx=n_text_ctx)
        self.script = script
        self.caches: list[ScriptedCache] = []
        self.batch_sizes: list[int] = []  # rows of each decode call with a cache, in order
        self.uncached_calls = 0  # decode calls without a cache (language detection)

    @property
    def passes(self) -> int:
        return len(self.caches)

    def encode(self, mel, n_frames=None):
        return mel.reshape(-1, 1, 1).float(), None

    def new_cache(self) -> ScriptedCache:
        self.caches.append(ScriptedCache())
        return self.caches[-1]

    def decode(self, tokens, xa, audio_mask=None, cache=None):
        items = [int(v) for v in xa[:, 0, 0].tolist()]
        if cache is None:
            histories = [[] for _ in items]
            self.uncached_calls += 1
        else:
            if cache.histories is None:
                cache.histories = [[] for _ in items]
            histories = cache.histories
            self.batch_sizes.append(len(items))
        assert len(histories) == tokens.shape[0] == len(items)
        logits = torch.empty(tokens.shape[0], tokens.shape[1], self.dims.n_vocab)
        for row, (item, history) in enumerate(zip(items, histories)):
            for position, token in enumerate(tokens[row].tolist()):
                history.append(token)
                assert len(history) <= self.dims.n_text_ctx, "decoded past the context"
                logits[row, position] = torch.as_tensor(self.script(item, tuple(history)), dtype=torch.float32)
        return logits


def logits_of(probs: dict[int, float], n_vocab: int) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (token -> probability); every other token -inf."""
    logits = torch.full((n_vocab,), -torch.inf)
    for token, p in probs.items():
        logits[token] = torch.log(torch.tensor(p, dtype=torch.float64)).float()
    return logits


@pytest.fixture
def scripted():
    """The ScriptedModel class and logits_of, for tests in this folder."""
    return SimpleNamespace(Model=ScriptedModel, logits_of=logits_of)
