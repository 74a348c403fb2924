"""``asr-transcribe`` end to end on a tiny random checkpoint."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from asr.checkpoint import save
from asr.cli.transcribe import main, temperatures
from asr.model import Model, ModelDims
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = [" the cat sat on the mat.", " hello world, how are you?", " guten tag, wie geht es dir?"] * 4
FAST = ["--temperature_increment_on_fallback", "None", "--beam_size", "2", "--language", "en"]


def tiny_checkpoint(path, ctc_head: bool = False):
    tokenizer = Tokenizer.from_sentencepiece(train_sentencepiece(TEXTS, vocab_size=300, num_threads=1), ["en", "de"])
    torch.manual_seed(0)
    dims = ModelDims(n_mels=16, n_audio_ctx=250, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1,
                     ctc_head=ctc_head, n_ctc_vocab=tokenizer.eot if ctc_head else 0)
    model = Model(dims)
    nn.init.normal_(model.decoder.token_embedding.weight, std=1.0)  # random, but not all-blank text
    for block in model.decoder.blocks:  # and moved by the audio, as a trained decoder is
        nn.init.normal_(block.cross_attn.out.weight, std=1.0)
    if ctc_head:  # a CTC head that hears nothing: blank at every frame
        nn.init.zeros_(model.ctc.weight)
        with torch.no_grad():
            model.ctc.bias.zero_()[model.ctc_blank] = 50.0
    save(path, model, tokenizer)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


def write_noise(path, seconds, seed=0):
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype("float32"), 16000)
    return str(path)


def test_every_format_for_two_files(checkpoint, tmp_path, capsys):
    audio = [write_noise(tmp_path / "one.wav", 3.0), write_noise(tmp_path / "two.flac", 7.0, seed=1)]
    out = tmp_path / "out"
    assert main([*audio, "--model", str(checkpoint), "--output_dir", str(out), *FAST]) == 0
    for stem, seconds in (("one", 3.0), ("two", 7.0)):
        assert {p.suffix for p in out.glob(f"{stem}.*")} == {".txt", ".srt", ".vtt", ".tsv", ".json"}
        result = json.loads((out / f"{stem}.json").read_text())
        assert result["text"] and not result["no_speech"] and result["language"] == "en"
        assert 0 < result["segments"][-1]["end"] <= seconds
        assert (out / f"{stem}.txt").read_text().strip() == "\n".join(s["text"].strip() for s in result["segments"])
        assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT") and " --> " in (out / f"{stem}.srt").read_text()
    printed = capsys.readouterr().out
    assert f"{audio[0]}: " in printed and f"{audio[1]}: " in printed


def test_a_ctc_head_joins_the_search_by_default(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ctc.pt", ctc_head=True)
    audio = write_noise(tmp_path / "one.wav", 3.0)

    def text(*flags):
        out = tmp_path / "out"
        assert main([audio, "--model", str(checkpoint), "--output_dir", str(out), "-f", "json", *FAST, *flags]) == 0
        return json.loads((out / "one.json").read_text())["text"]

    # Window after window, the decoder alone writes text; the joint search believes the CTC head, which
    # hears no words.
    window = ("--pieces", "False")
    assert text(*window, "--ctc_weight", "0") and text(*window) == "" and text(*window, "--ctc_weight", "0.5") == ""
    # By default a model with a CTC head is transcribed in pieces cut where that head hears speech: none.
    assert text("--ctc_weight", "0") == "" and text("--pieces", "True", "--ctc_weight", "0") == ""


def test_bad_files_are_reported_and_the_good_one_still_transcribed(checkpoint, tmp_path, capsys):
    good = write_noise(tmp_path / "good.wav", 2.0)
    missing, corrupt = tmp_path / "missing.wav", tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"\x00\x01 this is no audio")
    code = main([str(missing), str(corrupt), good, "--model", str(checkpoint), "--output_dir", str(tmp_path),
                 "--output_format", "srt", "--without_timestamps", *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert f"asr-transcribe: {missing}: no such file" in err
    assert f"asr-transcribe: {corrupt}: cannot decode audio" in err
    assert (tmp_path / "good.srt").read_text().startswith("1\n00:00:00,000 --> 00:00:02,000\n")
    assert not (tmp_path / "missing.srt").exists() and not (tmp_path / "corrupt.srt").exists()


def test_a_model_that_is_no_checkpoint_is_one_clear_error(tmp_path, capsys):
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    audio = write_noise(tmp_path / "a.wav", 1.0)
    assert main([audio, "--model", str(not_a_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asr-transcribe: error: {not_a_model}: not a readable checkpoint") and err.count("\n") == 1


def test_temperature_schedule():
    assert temperatures(0.0, 0.2) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperatures(0.5, None) == (0.5,)
    assert temperatures(0.4, 0.3) == (0.4, 0.7, 1.0)
