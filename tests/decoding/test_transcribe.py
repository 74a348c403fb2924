"""Long-form transcription: the algorithm's parts with hand-made results, then a tiny random model end to end."""

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import asr.decoding.transcribe as transcribe_module
from asr.audio import N_SAMPLES, AudioError, log_mel_spectrogram
from asr.decoding import DecodingOptions, DecodingResult
from asr.decoding.transcribe import (PreviousText, TranscribeOptions, split_segments, start_recording, transcribe,
                                     transcribe_many)
from asr.model import Model, ModelDims

N_MELS = 16
# Stands in for a model where only its dims are read: 30 s windows, 32 decoder positions.
DIMS_ONLY = SimpleNamespace(dims=SimpleNamespace(n_mels=N_MELS, n_audio_ctx=1500, audio_stride=2, n_text_ctx=32))


def noise(seconds: float, seed: int = 0, amplitude: float = 0.1) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def result(tokens, tokenizer, temperature=0.0, no_speech_prob=0.01, no_speech=False) -> DecodingResult:
    return DecodingResult(tokens=list(tokens), text=tokenizer.decode(tokens).strip(), language="en",
                          language_probs={"en": 0.9, "de": 0.1}, avg_logprob=-0.2, no_speech_prob=no_speech_prob,
                          temperature=temperature, compression_ratio=1.0, no_speech=no_speech)


@pytest.fixture(scope="module")
def words(tokenizer):
    """Three text ids with non-blank text, and T(seconds) -> the timestamp token."""
    a, b, c = (tokenizer.encode(w)[0] for w in (" the", " world", " dog"))
    assert len({a, b, c}) == 3 and all(tokenizer.decode([t]).strip() for t in (a, b, c))
    return SimpleNamespace(a=a, b=b, c=c, T=tokenizer.specials.timestamp_token)


def test_split_segments_at_timestamp_pairs(tokenizer, words):
    a, b, c, T = words.a, words.b, words.c, words.T
    # Two complete segments, then unfinished text: cut at the pairs, move to the last complete end.
    segments, advance = split_segments([T(0), a, T(1.0), T(1.0), b, T(2.5), T(2.5), c], tokenizer, 3000)
    assert segments == [(0.0, 1.0, [T(0), a, T(1.0)]), (1.0, 2.5, [T(1.0), b, T(2.5)])]
    assert advance == 250
    # Ending with a single timestamp: the last segment is complete and the whole window is done.
    segments, advance = split_segments([T(0), a, T(1.0), T(1.0), b, T(2.5)], tokenizer, 3000)
    assert segments[-1] == (1.0, 2.5, [T(1.0), b, T(2.5)]) and advance == 3000
    # No pair: one segment, ending at the last timestamp, or at the window's audio without one.
    assert split_segments([T(0), a, b, T(4.0)], tokenizer, 3000) == ([(0.0, 4.0, [T(0), a, b, T(4.0)])], 3000)
    assert split_segments([a, b], tokenizer, 1500) == ([(0.0, 15.0, [a, b])], 1500)
    assert split_segments([], tokenizer, 700) == ([(0.0, 7.0, [])], 700)
    # A pair at 0.00 alone would never move on; a segment past a short window's audio moves no further.
    assert split_segments([T(0), T(0), a], tokenizer, 3000)[1] == 3000
    assert split_segments([T(0), a, T(9.0), T(9.0), b], tokenizer, 500)[1] == 500


def test_segments_get_absolute_times_and_seek_follows(tokenizer, words):
    a, b, c, T = words.a, words.b, words.c, words.T
    recording = start_recording(noise(75), DIMS_ONLY, tokenizer, TranscribeOptions())
    recording.take(result([T(0), a, T(1.0), T(1.0), b, T(2.5), T(2.5), c], tokenizer))
    assert recording.seek == 250
    recording.take(result([T(0), c, T(3.0)], tokenizer))  # the window starting at 2.5 s
    assert recording.seek == 250 + 3000
    got = [(s["id"], s["seek"], s["start"], s["end"], s["tokens"]) for s in recording.result()["segments"]]
    assert got == [(0, 0, 0.0, 1.0, [T(0), a, T(1.0)]), (1, 0, 1.0, 2.5, [T(1.0), b, T(2.5)]),
                   (2, 250, 2.5, 5.5, [T(0), c, T(3.0)])]
    assert recording.result()["text"] == tokenizer.decode([a, b, c])
    assert recording.previous.tokens == (a, b, c)  # text only: timestamps do not prompt


def test_windows_over_75_s_without_timestamps(tokenizer, words):
    audio = noise(75)
    recording = start_recording(audio, DIMS_ONLY, tokenizer, TranscribeOptions())
    mel = log_mel_spectrogram(audio, N_MELS, padding=N_SAMPLES)
    seeks = []
    while not recording.done:
        window, n_frames = recording.window()
        assert window.shape == (N_MELS, 3000)
        assert torch.equal(window[:, :n_frames], mel[:, recording.seek: recording.seek + n_frames])
        assert not window[:, n_frames:].any()  # zero past the recording's end
        seeks.append((recording.seek, n_frames))
        recording.take(result([words.a], tokenizer))
    assert seeks == [(0, 3000), (3000, 3000), (6000, 1500)]
    segments = recording.result()["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 30.0), (30.0, 60.0), (60.0, 75.0)]


def test_previous_text_prompts_and_resets():
    on = PreviousText([1, 2], max_tokens=4, condition=True)
    assert on.tokens == (1, 2)
    on.add([3, 4, 5], temperature=0.4)
    assert on.tokens == (2, 3, 4, 5)  # the last max_tokens
    on.add([6], temperature=0.6)  # decoded hot: the next window starts afresh
    assert on.tokens == ()
    on.add([7], temperature=0.0)
    assert on.tokens == (7,)
    off = PreviousText([1, 2], max_tokens=4, condition=False)
    assert off.tokens == (1, 2)  # the initial prompt still prompts the first window
    off.add([3], temperature=0.0)
    assert off.tokens == ()


def test_initial_prompt_and_previous_text_reach_the_decoding_options(tokenizer, words):
    options = TranscribeOptions(initial_prompt="hello world ")
    recording = start_recording(noise(65), DIMS_ONLY, tokenizer, options)
    assert recording.decoding_options().prompt == tuple(tokenizer.encode(" hello world"))
    assert recording.decoding_options().language is None  # detected on the first window
    recording.take(result([words.a], tokenizer))
    assert recording.decoding_options().prompt == tuple(tokenizer.encode(" hello world")) + (words.a,)
    assert recording.decoding_options().language == "en" and recording.language_probs == {"en": 0.9, "de": 0.1}
    recording.take(result([words.b], tokenizer, temperature=0.8))
    assert recording.decoding_options().prompt is None
    plain = start_recording(noise(65), DIMS_ONLY, tokenizer, TranscribeOptions(condition_on_previous_text=False))
    plain.take(result([words.a], tokenizer))
    assert plain.decoding_options().prompt is None


def test_no_speech_windows_are_skipped_and_all_silent_is_empty(tokenizer, words):
    recording = start_recording(noise(65), DIMS_ONLY, tokenizer, TranscribeOptions())
    recording.take(result([words.a], tokenizer, no_speech_prob=0.9, no_speech=True))
    assert recording.seek == 3000 and recording.result()["segments"] == [] and recording.previous.tokens == ()
    recording.take(result([words.b], tokenizer, no_speech_prob=0.7))  # likely text: kept for now
    recording.take(result([words.c], tokenizer, no_speech_prob=0.05))
    assert recording.done and recording.result()["text"] == tokenizer.decode([words.b, words.c])
    # Every window above the no-speech threshold: nothing was heard, whatever text came out.
    hushed = start_recording(noise(35), DIMS_ONLY, tokenizer, TranscribeOptions())
    hushed.take(result([words.a], tokenizer, no_speech_prob=0.7))
    hushed.take(result([words.b], tokenizer, no_speech_prob=0.8))
    assert hushed.done and hushed.result() | {"language_probs": None} == {
        "text": "", "segments": [], "language": "en", "language_probs": None, "no_speech": True}


@pytest.fixture(scope="module")
def model(tokenizer) -> Model:
    """Random and tiny, with 5 s windows (n_audio_ctx 250); spread logits leave no near ties."""
    torch.manual_seed(0)
    dims = ModelDims(n_mels=N_MELS, n_audio_ctx=250, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = Model(dims).eval()
    nn.init.normal_(model.decoder.token_embedding.weight, std=1.0)
    return model


def test_silence_is_empty_not_invented(model, tokenizer):
    for audio in (np.zeros(16000 * 7, np.float32), noise(7, amplitude=1e-5), np.zeros(0, np.float32)):
        got = transcribe(model, tokenizer, audio, TranscribeOptions(temperatures=(0.0,)))
        assert (got["text"], got["segments"], got["no_speech"]) == ("", [], True)
    # The same model hears "speech" in noise: the empty result above is not its doing.
    heard = transcribe(model, tokenizer, noise(7), TranscribeOptions(temperatures=(0.0,)))
    assert heard["text"] and not heard["no_speech"] and heard["segments"][-1]["end"] <= 7.0


def test_batched_over_files_equals_one_by_one(model, tokenizer, tmp_path, monkeypatch):
    paths = []
    for i, seconds in enumerate((3.0, 12.0, 7.0)):  # 1, 3 and 2 windows of 5 s
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(paths[-1], noise(seconds, seed=i), 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    bad = [tmp_path / "missing.wav", tmp_path / "empty.wav", tmp_path / "corrupt.wav"]
    options = TranscribeOptions(DecodingOptions(language="en"), temperatures=(0.0,))

    batch_sizes = []
    decode = transcribe_module.decode_with_fallback
    monkeypatch.setattr(transcribe_module, "decode_with_fallback",
                        lambda model, mel, *args: batch_sizes.append(len(mel)) or decode(model, mel, *args))
    got = dict(transcribe_many(model, tokenizer, [paths[0], bad[0], paths[1], bad[1], bad[2], paths[2]],
                               options, batch_size=2))
    assert max(batch_sizes) == 2  # windows of different files were decoded together
    assert sorted(got, key=str) == sorted(paths + bad, key=str)
    for path in bad:
        assert isinstance(got[path], AudioError) and str(path) in str(got[path])
    for path in paths:
        alone = transcribe(model, tokenizer, path, options)
        assert [s["tokens"] for s in got[path]["segments"]] == [s["tokens"] for s in alone["segments"]]
        assert [(s["seek"], s["start"], s["end"]) for s in got[path]["segments"]] == \
               [(s["seek"], s["start"], s["end"]) for s in alone["segments"]]
        assert got[path]["text"] == alone["text"] and got[path]["text"]
    assert max(s["seek"] for s in got[paths[1]]["segments"]) > 0  # the 12 s file needed more than one window
