import dataclasses

import pytest
import torch

from asr.checkpoint import CheckpointError, load, save
from asr.config import load_config
from asr.model import Model, ModelDims
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = ["the cat sees the dog", "le chat voit le chien", "die Katze sieht den Hund", "кошка видит собаку"] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_sentencepiece(train_sentencepiece(TEXTS, vocab_size=400))


def tiny_model(n_vocab: int) -> Model:
    torch.manual_seed(0)
    dims = ModelDims(n_mels=16, n_audio_ctx=32, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=n_vocab, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1, ctc_head=True)
    return Model(dims)


def test_round_trip_keeps_weights_tokenizer_and_config(tmp_path, tokenizer):
    model = tiny_model(tokenizer.n_vocab)
    config = load_config(None, ["model.preset=tiny", "optim.lr=0.5", "data.train=[a.jsonl.gz]"])
    save(tmp_path / "model.pt", model, tokenizer, config)

    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # no pickled code inside
    assert raw["format"] == "asr-checkpoint/1" and raw["dims"] == dataclasses.asdict(model.dims)

    loaded = load(tmp_path / "model.pt")
    assert loaded.config == config
    assert loaded.tokenizer.encode("кошка видит") == tokenizer.encode("кошка видит")
    assert loaded.tokenizer.n_vocab == tokenizer.n_vocab
    assert not loaded.model.training
    mel, tokens = torch.randn(1, 16, 20), torch.tensor([[tokenizer.sot, tokenizer.eot]])
    with torch.no_grad():
        assert torch.equal(loaded.model(mel, tokens).logits, model.eval()(mel, tokens).logits)


def test_save_is_atomic_and_leaves_no_partial_file(tmp_path, tokenizer):
    model = tiny_model(tokenizer.n_vocab)
    save(tmp_path / "model.pt", model, tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert load(tmp_path / "model.pt").config is None


def test_vocabulary_mismatch_is_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="output tokens"):
        save(tmp_path / "model.pt", tiny_model(tokenizer.n_vocab + 1), tokenizer)


def test_openai_format_loads_without_tokenizer(tmp_path):
    model = tiny_model(51865)
    dims = {k: v for k, v in dataclasses.asdict(model.dims).items() if k != "ctc_head"}
    state = {k: v.half() for k, v in model.state_dict().items() if not k.startswith("ctc.")}
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "openai.pt")
    loaded = load(tmp_path / "openai.pt")
    assert loaded.tokenizer is None and loaded.model.ctc is None
    assert loaded.model.decoder.token_embedding.weight.dtype == torch.float32
    assert torch.equal(loaded.model.encoder.conv1.weight, model.encoder.conv1.weight.half().float())


@pytest.mark.parametrize("content, message", [
    (None, "no such checkpoint"),
    (b"this is not a checkpoint", "not a readable checkpoint"),
    ({"weights": 1}, "expected 'dims' and 'model_state_dict'"),
    ({"dims": {"n_mels": 80}, "model_state_dict": {}}, "bad model dimensions"),
])
def test_not_a_checkpoint_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as error:
        load(path)
    assert str(path) in str(error.value)


def test_weights_that_do_not_fit_are_named(tmp_path, tokenizer):
    model = tiny_model(tokenizer.n_vocab)
    save(tmp_path / "model.pt", model, tokenizer)
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    raw["dims"]["n_text_state"] = 64
    torch.save(raw, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load(tmp_path / "model.pt")
