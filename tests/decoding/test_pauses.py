"""Cut points at the CTC head's pauses: spans and piece bounds by hand, then transcribe's pieces mode."""

import numpy as np
import pytest
import torch

import asr.decoding.transcribe as transcribe_module
from asr.decoding import DecodingOptions
from asr.decoding.pauses import ctc_speech, fit_to_span, piece_bounds, speech_spans
from asr.decoding.transcribe import TranscribeOptions, recording_language, transcribe
from asr.model import Model, ModelDims

STEP = 0.04  # seconds per encoder position at audio_stride 4


def heard(*runs: tuple[int, int], n: int = 500) -> torch.Tensor:
    """Speech positions: spikes every 3rd position within each [first, last] run."""
    speech = torch.zeros(n, dtype=torch.bool)
    for first, last in runs:
        speech[first: last + 1: 3] = True
        speech[last] = True
    return speech


def test_spans_join_spikes_and_part_at_pauses():
    # Two sentences 0.4 s apart (10 positions of blanks), then a third after 0.2 s: it joins the second.
    spans = speech_spans(heard((10, 60), (71, 120), (126, 150)), STEP, min_pause=0.3)
    assert [t for span in spans for t in span] == pytest.approx([0.40, 2.44, 2.84, 6.04])
    assert speech_spans(torch.zeros(50, dtype=torch.bool), STEP) == []


def test_long_spans_are_split_evenly():
    spans = speech_spans(heard((0, 499)), STEP, max_piece=8.0)  # 20 s of speech
    assert len(spans) == 3 and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(20.0)
    assert all(end - start == pytest.approx(20.0 / 3) for start, end in spans)


def test_piece_bounds_keep_margins_within_the_recording_and_the_pauses():
    bounds = piece_bounds([(0.1, 2.0), (2.4, 5.0), (8.0, 9.9)], duration=10.0, margin=0.3)
    assert [t for bound in bounds for t in bound] == pytest.approx([0.0, 2.2, 2.2, 5.3, 7.7, 10.0])


def test_a_pieces_outer_segment_times_come_from_its_speech_span():
    assert fit_to_span([(0.4, 2.6)], (0.3, 2.2)) == [(0.3, 2.2)]
    assert fit_to_span([(0.4, 1.2), (1.3, 2.6)], (0.3, 2.2)) == [(0.3, 1.2), (1.3, 2.2)]  # inner ones kept
    assert fit_to_span([(0.1, 0.2), (1.0, 1.5)], (0.3, 0.9)) == [(0.1, 0.2), (1.0, 1.5)]  # never reversed
    assert fit_to_span([], (0.3, 2.2)) == []


@pytest.fixture(scope="module")
def model(tokenizer) -> Model:
    torch.manual_seed(0)
    dims = ModelDims(n_mels=16, n_audio_ctx=250, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1,
                     audio_stride=4, ctc_head=True)
    return Model(dims).eval()


def test_ctc_speech_covers_the_recording_window_by_window(model):
    mel = torch.randn(16, 2345)  # 23.45 s: three windows of 10 s (250 positions of 4 frames)
    speech = ctc_speech(model, mel, window_frames=1000)
    assert speech.shape == (587,) and speech.dtype == torch.bool  # 250 + 250 + ceil(345 / 4)


def test_pieces_are_decoded_as_clips_and_their_segments_shifted(model, tokenizer, monkeypatch):
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 12)).astype(np.float32)
    # Speech heard over 1.0-3.0 s and 6.0-8.0 s (positions of 0.04 s).
    monkeypatch.setattr(transcribe_module, "ctc_speech", lambda *args: heard((25, 74), (150, 199), n=300))
    decoded, timed = [], []
    decode, place = transcribe_module.decode_features_with_fallback, transcribe_module.place_timestamps
    monkeypatch.setattr(transcribe_module, "decode_features_with_fallback",
                        lambda model, xa, mask, tokenizer, decoding, *args:
                        decoded.append((list(xa.shape[:2]), decoding))
                        or decode(model, xa, mask, tokenizer, decoding, *args))
    monkeypatch.setattr(transcribe_module, "place_timestamps",
                        lambda *args: timed.append(args[4]) or place(*args))
    options = TranscribeOptions(DecodingOptions(language="en", ctc_weight=0.5), temperatures=(0.0,),
                                no_speech_threshold=None, mask_padding=True, pieces=True)
    result = transcribe(model, tokenizer, audio, options)
    # Both pieces in one batch (2 s of speech and 0.3 s either side: 65 encoder positions of 0.04 s each): their text
    # by the joint search without timestamps, then the timestamps placed among that text.
    [(positions, decoding)] = decoded
    assert positions == [2, 65] and decoding.ctc_weight == 0.5 and decoding.without_timestamps
    assert len(timed) == 1 and len(timed[0]) == 2
    text = [t for s in result["segments"] for t in s["tokens"] if t < tokenizer.eot]
    assert text == [t for tokens in timed[0] for t in tokens]  # the first pass's text, whole
    starts = sorted({s["seek"] for s in result["segments"]})
    assert starts == [70, 570]  # each piece's segments start from its own 0.7 s / 5.7 s
    for segment in result["segments"]:
        piece = 0.7 if segment["seek"] == 70 else 5.7
        assert piece <= segment["start"] < segment["end"] <= piece + 2.6  # within its piece's audio
    for seek, span in ((70, (1.0, 3.0)), (570, (6.0, 8.0))):  # the outer times are the speech span's
        piece = [s for s in result["segments"] if s["seek"] == seek]
        assert (piece[0]["start"], piece[-1]["end"]) == pytest.approx(span)
    assert result["language"] == "en" and result["text"] == tokenizer.decode(
        t for s in result["segments"] for t in s["tokens"])


def test_a_recordings_language_weighs_its_pieces_by_length():
    probs = [{"de": 0.2, "fr": 0.8}, {"de": 0.7, "fr": 0.3}, {"de": 0.9, "fr": 0.1}]
    language, mean = recording_language(probs, [1.0, 2.0, 1.0])  # a short piece heard as French
    assert language == "de" and mean == pytest.approx({"de": 0.625, "fr": 0.375})
    assert recording_language(probs, [6.0, 1.0, 1.0])[0] == "fr"  # the long one decides


def test_pieces_without_a_language_are_all_decoded_in_the_recordings(model, tokenizer, monkeypatch):
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 12)).astype(np.float32)
    # A 0.6 s piece (0.3-0.9 s of speech) heard as one language, then a 2 s one (6.0-8.0 s) as another.
    monkeypatch.setattr(transcribe_module, "ctc_speech", lambda *args: heard((8, 22), (150, 199), n=300))
    codes = tokenizer.specials.all_language_codes
    first, second = codes[:2]

    def detect(model, xa, mask, tokenizer):
        heard_as = [first, second]
        return heard_as, [{code: 0.9 if code == said else 0.1 / (len(codes) - 1) for code in codes}
                          for said in heard_as]

    monkeypatch.setattr(transcribe_module, "detect_language", detect)
    languages = []
    decode = transcribe_module.decode_features_with_fallback
    monkeypatch.setattr(transcribe_module, "decode_features_with_fallback",
                        lambda model, xa, mask, tokenizer, decoding, *args:
                        languages.append(decoding.language) or decode(model, xa, mask, tokenizer, decoding, *args))
    options = TranscribeOptions(DecodingOptions(ctc_weight=0.5), temperatures=(0.0,), no_speech_threshold=None,
                                mask_padding=True, pieces=True)
    result = transcribe(model, tokenizer, audio, options)
    assert languages == [second] and result["language"] == second
    # pieces of 1.2 and 2.6 s with their margins: the weighted mean of 0.1 and 0.9
    assert result["language_probs"][second] == pytest.approx((1.2 * 0.1 + 2.6 * 0.9) / 3.8)


def test_pieces_need_a_ctc_head(tokenizer):
    dims = ModelDims(n_mels=16, n_audio_ctx=250, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    with pytest.raises(ValueError, match="CTC head"):
        transcribe(Model(dims).eval(), tokenizer, np.ones(16000, np.float32), TranscribeOptions(pieces=True))
