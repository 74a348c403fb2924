"""Decoding a real (tiny, random) ``asr.model.Model``: batching and beam_size=1 change nothing."""

import pytest
import torch
from torch import nn

from asr.decoding import DecodingOptions, decode
from asr.model import Model, ModelDims


@pytest.fixture(scope="module")
def model(tokenizer) -> Model:
    torch.manual_seed(0)
    dims = ModelDims(n_mels=16, n_audio_ctx=50, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = Model(dims).eval()
    nn.init.normal_(model.decoder.token_embedding.weight, std=1.0)  # spread the logits: no near ties
    for block in model.decoder.blocks:  # and let the audio move them, so that items decode differently
        nn.init.normal_(block.cross_attn.out.weight, std=1.0)
    return model


def test_batched_greedy_equals_one_by_one_and_beam_of_one(model, tokenizer):
    n_frames = torch.tensor([100, 60, 80])
    mel = torch.randn(3, 16, 100) * (torch.arange(100) < n_frames[:, None, None])
    options = DecodingOptions(sample_len=8)  # language detected per item, timestamps on
    batched = decode(model, mel, n_frames, tokenizer, options)
    alone = [decode(model, mel[i: i + 1, :, :n], None, tokenizer, options)[0] for i, n in enumerate(n_frames.tolist())]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert [r.language for r in batched] == [r.language for r in alone]
    for b, a in zip(batched, alone):
        assert b.avg_logprob == pytest.approx(a.avg_logprob, abs=1e-4)
        assert b.no_speech_prob == pytest.approx(a.no_speech_prob, abs=1e-5)
        assert b.language_probs == pytest.approx(a.language_probs, abs=1e-5)
        assert tokenizer.specials.is_timestamp(b.tokens[0]) and len(b.tokens) >= 2
    assert len({tuple(r.tokens) for r in batched}) > 1  # the items differ, so batching could have mixed them
    beam = decode(model, mel, n_frames, tokenizer, DecodingOptions(sample_len=8, beam_size=1))
    assert [r.tokens for r in beam] == [r.tokens for r in batched]
    assert [r.avg_logprob for r in beam] == pytest.approx([r.avg_logprob for r in batched], abs=1e-4)
    text_only = decode(model, mel, n_frames, tokenizer, DecodingOptions(sample_len=8, without_timestamps=True))
    assert all(0 <= t < tokenizer.eot for r in text_only for t in r.tokens)  # timestamps suppressed too
