import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording

from asr import audio as audio_module
from asr.audio import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    load_audio,
    log_mel_spectrogram,
    log_mel_spectrogram_batch,
    pad_or_trim,
    resample,
)

# lhotse's fallback decoder imports audioread, which imports stdlib modules deprecated in 3.11.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread")

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


def shared(name: str) -> Path:
    path = AUDIO / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def sdr_db(x: np.ndarray, ref: np.ndarray) -> float:
    """Signal-to-difference ratio of ``x`` against ``ref``, over their common length."""
    n = min(len(x), len(ref))
    x, ref = x[:n].astype(np.float64), ref[:n].astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - x) ** 2)))


def below(x: np.ndarray, hz: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` with everything above ``hz`` removed (an ideal low-pass)."""
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1 / sr) > hz] = 0
    return np.fft.irfft(spectrum, len(x))


@pytest.fixture(scope="module")
def jfk_16k() -> np.ndarray:
    """jfk.flac as Whisper's ffmpeg call converts it, shape = (176000,)."""
    samples, sr = sf.read(shared("jfk-16k.wav"), dtype="float32")
    assert sr == SAMPLE_RATE
    return samples


# --- loading and resampling ---------------------------------------------------------------------


def test_load_audio_matches_ffmpeg_conversion(jfk_16k):
    ours = load_audio(shared("jfk.flac"))  # 44.1 kHz stereo
    assert ours.dtype == np.float32 and ours.shape == jfk_16k.shape
    # ffmpeg's output is int16, so 84 dB is the ceiling; we measure 83.8 dB.
    sdr = sdr_db(ours, jfk_16k)
    assert sdr >= 75.0, f"SDR against ffmpeg's conversion is {sdr:.2f} dB"


@pytest.mark.parametrize(
    "name, native_sr, n_native",
    [
        ("jfk.flac", 44100, 485100),
        ("fleurs-de-000.ogg", 16000, 287040),
        ("common_voice_en_651325.mp3", 48000, 114048),
        ("LDC93S1_pcms16le_1_8000.wav", 8000, 23399),
        ("LDC93S1_pcms16le_2_44100.wav", 44100, 128985),
    ],
)
def test_load_audio_reads_each_format(name, native_sr, n_native):
    samples = load_audio(shared(name))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - n_native * SAMPLE_RATE / native_sr) <= 1
    assert np.abs(samples).max() <= 1.0
    assert np.abs(samples).max() > 0.01  # speech, not silence or garbage scaled to nothing


def test_load_audio_mp3_length_matches_duration():
    # The README gives 2.38 s; the decoder's 114048 samples at 48 kHz are 2.376 s.
    samples = load_audio(shared("common_voice_en_651325.mp3"))
    assert len(samples) / SAMPLE_RATE == pytest.approx(2.38, abs=0.01)


def test_other_rates_agree_with_16k_original():
    reference = load_audio(shared("LDC93S1.wav"))
    from_8k = load_audio(shared("LDC93S1_pcms16le_1_8000.wav"))
    from_44k = load_audio(shared("LDC93S1_pcms16le_2_44100.wav"))
    n = len(reference)
    # The 8 kHz copy has nothing above 4 kHz, so only the band below it can agree (full band: 17 dB).
    # Below 3.5 kHz we measure 55 dB; at 4 kHz the 8 kHz copy's own anti-alias filter shows.
    sdr_8k = sdr_db(below(from_8k[:n], 3500), below(reference, 3500))
    assert sdr_8k >= 45.0, f"8 kHz copy below 3.5 kHz: {sdr_8k:.1f} dB"
    # The 44.1 kHz stereo copy was written 3 dB down (1/sqrt(2), a mono-to-stereo pan law).
    # Measured: 62 dB below 3.5 kHz, 34 dB over the full band (our 0.97 roll-off cuts 7.76-8 kHz).
    louder = from_44k[:n] * np.sqrt(2)
    sdr_44k_low = sdr_db(below(louder, 3500), below(reference, 3500))
    sdr_44k = sdr_db(louder, reference)
    assert sdr_44k_low >= 50.0, f"44.1 kHz copy below 3.5 kHz: {sdr_44k_low:.1f} dB"
    assert sdr_44k >= 28.0, f"44.1 kHz copy, full band: {sdr_44k:.1f} dB"


def test_stereo_is_averaged(tmp_path):
    left = np.full(1600, 0.5, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, -0.25 * np.ones_like(left)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.125, atol=1e-7)


def test_load_audio_clips_overshoot(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.array([0.5, 1.5, -2.0, 0.0], dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(str(path)), [0.5, 1.0, -1.0, 0.0])


def test_falls_back_to_lhotse_when_soundfile_fails(monkeypatch):
    path = shared("LDC93S1.wav")
    expected = load_audio(path)

    class BrokenSoundfile:
        @staticmethod
        def read(*args, **kwargs):
            raise RuntimeError("Format not recognised")

    monkeypatch.setattr(audio_module, "sf", BrokenSoundfile)
    np.testing.assert_array_equal(load_audio(path), expected)


def test_resample_keeps_a_tone_and_the_array_kind():
    t = np.arange(44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    ours = resample(tone, 44100, SAMPLE_RATE)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == (SAMPLE_RATE,)
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    inner = slice(1000, -1000)  # away from the edges, where the filter sees zeros
    assert sdr_db(ours[inner], expected[inner]) >= 60.0
    as_tensor = resample(torch.from_numpy(tone), 44100, SAMPLE_RATE)
    assert torch.is_tensor(as_tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), ours)
    assert resample(tone, 8000, 8000) is tone


# --- bad input ----------------------------------------------------------------------------------


def write_text(path: Path) -> Path:
    path.write_text("this is not audio\n" * 20)
    return path


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_zero_samples(path: Path) -> Path:
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing.wav", "no such file"),
        (lambda tmp: tmp, "not a file"),
        (lambda tmp: write_text(tmp / "text.wav"), "cannot decode audio"),
        (lambda tmp: write_empty_file(tmp / "zero-bytes.wav"), "file is empty (0 bytes)"),
        (lambda tmp: write_zero_samples(tmp / "no-samples.wav"), "audio is empty (0 samples)"),
    ],
)
def test_bad_input_raises_one_clear_error(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=re.escape(f"{path}: {reason}")):
        load_audio(path)


def test_undecodable_file_says_why_and_chains_the_cause(tmp_path):
    path = write_text(tmp_path / "text.wav")
    with pytest.raises(AudioError) as raised:
        log_mel_spectrogram(path)
    assert "Format not recognised" in str(raised.value)
    assert raised.value.__cause__ is not None
    assert isinstance(raised.value, ValueError)


# --- features -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padding", [0, N_SAMPLES])
def test_log_mel_matches_whisper(jfk_16k, n_mels, padding):
    whisper_audio = pytest.importorskip("whisper.audio")
    theirs = whisper_audio.log_mel_spectrogram(torch.from_numpy(jfk_16k), n_mels, padding=padding)
    ours = log_mel_spectrogram(jfk_16k, n_mels, padding=padding)
    assert ours.shape == (n_mels, (len(jfk_16k) + padding) // HOP_LENGTH) == theirs.shape
    difference = (ours - theirs).abs().max().item()
    assert difference <= 1e-4, f"max |ours - whisper| = {difference:.2e}"


def test_log_mel_of_a_path_resamples_first(jfk_16k):
    # jfk.flac is 44.1 kHz stereo: the path must go through load_audio, not straight to the STFT.
    from_path = log_mel_spectrogram(shared("jfk.flac"))
    from_ffmpeg = log_mel_spectrogram(jfk_16k)
    assert from_path.shape == from_ffmpeg.shape == (80, 1100)
    # Measured 0.005 (0.2 dB), from ffmpeg's int16 rounding in quiet bins.
    assert (from_path - from_ffmpeg).abs().max().item() < 0.02


def test_log_mel_rejects_bad_arguments(jfk_16k):
    with pytest.raises(ValueError, match="n_mels must be a positive int, got 0"):
        log_mel_spectrogram(jfk_16k, n_mels=0)
    with pytest.raises(ValueError, match=r"shape \(2, 1000\)"):
        log_mel_spectrogram(np.zeros((2, 1000), dtype=np.float32))


def utterances(jfk_16k: np.ndarray) -> list[np.ndarray]:
    """Three lengths, not multiples of the hop; the last is 60 dB quieter than the others."""
    return [jfk_16k[:48037], jfk_16k[32000:112345], 1e-3 * jfk_16k[64000:80100]]


def test_batch_rows_equal_single_utterances(jfk_16k):
    audios = utterances(jfk_16k)
    mels, n_frames = log_mel_spectrogram_batch(audios, n_mels=80)
    assert n_frames.dtype == torch.int64
    assert n_frames.tolist() == [len(a) // HOP_LENGTH for a in audios] == [300, 502, 100]
    assert mels.shape == (3, 80, 502)
    for row, audio, n in zip(mels, audios, n_frames.tolist()):
        single = log_mel_spectrogram(audio)
        assert (row[:, :n] - single).abs().max().item() <= 1e-5
        assert torch.all(row[:, n:] == 0.0)


def test_batch_row_does_not_depend_on_its_neighbours(jfk_16k):
    quiet = 1e-3 * jfk_16k[64000:80100]
    alone, _ = log_mel_spectrogram_batch([quiet])
    # A loud, longer neighbour: with Whisper's batch-wide floor the quiet row would be clipped.
    loud = np.clip(50 * jfk_16k[:96000], -1, 1)
    beside, _ = log_mel_spectrogram_batch([loud, quiet])
    torch.testing.assert_close(beside[1, :, : alone.shape[-1]], alone[0], rtol=0, atol=1e-5)


def test_batch_handles_inputs_too_short_to_centre():
    rng = np.random.default_rng(0)
    audios = [np.zeros(0, np.float32), rng.standard_normal(100).astype(np.float32),
              rng.standard_normal(180).astype(np.float32), rng.standard_normal(1600).astype(np.float32)]
    mels, n_frames = log_mel_spectrogram_batch(audios)
    assert n_frames.tolist() == [0, 0, 1, 10] and mels.shape == (4, 80, 10)
    assert torch.all(mels[:2] == 0.0)
    # A too-short input counts as if followed by silence.
    padded = log_mel_spectrogram(np.pad(audios[2], (0, 21)))  # 201 samples: the least centring takes
    assert (mels[2, :, :1] - padded).abs().max().item() <= 1e-5
    assert log_mel_spectrogram(audios[2]).shape == (80, 1)
    only_tiny, n_frames = log_mel_spectrogram_batch(audios[:2])
    assert only_tiny.shape == (2, 80, 0) and n_frames.tolist() == [0, 0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_gpu_matches_cpu(jfk_16k):
    on_cpu = log_mel_spectrogram(jfk_16k, 128)
    on_gpu = log_mel_spectrogram(jfk_16k, 128, device="cuda")
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max().item() <= 1e-4
    mels, n_frames = log_mel_spectrogram_batch(utterances(jfk_16k), device="cuda")
    cpu_mels, _ = log_mel_spectrogram_batch(utterances(jfk_16k))
    assert mels.device.type == "cuda" and n_frames.device.type == "cuda"
    assert (mels.cpu() - cpu_mels).abs().max().item() <= 1e-4


# --- pad_or_trim --------------------------------------------------------------------------------


def test_pad_or_trim_numpy_and_torch():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(pad_or_trim(array, 2), array[:, :2])
    np.testing.assert_array_equal(pad_or_trim(array, 6), np.pad(array, [(0, 0), (0, 2)]))
    np.testing.assert_array_equal(pad_or_trim(array, 2, axis=0), array[:2])
    np.testing.assert_array_equal(pad_or_trim(array, 5, axis=0), np.pad(array, [(0, 2), (0, 0)]))
    tensor = torch.from_numpy(array)
    for length, axis in [(2, -1), (6, -1), (2, 0), (5, 0), (4, 1)]:
        expected = pad_or_trim(array, length, axis=axis)
        np.testing.assert_array_equal(pad_or_trim(tensor, length, axis=axis).numpy(), expected)
    mel = torch.ones(80, 1234)
    assert pad_or_trim(mel, N_FRAMES).shape == (80, N_FRAMES)
    assert pad_or_trim(np.ones(N_SAMPLES + 5)).shape == (N_SAMPLES,)


# --- containers through PyAV (FFmpeg) ------------------------------------------------------------


def write_with_av(path: Path, codec: str, rate: int, seconds: float = 2.0, video: bool = False) -> Path:
    """A stereo tone (440 Hz left, 220 Hz right) encoded by FFmpeg; with ``video`` a black picture beside it."""
    import av

    t = np.arange(round(rate * seconds)) / rate
    tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    with av.open(str(path), "w") as out:
        picture = _black_picture_stream(out) if video else None
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        if picture is not None:
            _mux_black_picture(out, picture)
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(chunk):
                out.mux(packet)
    return path


def _black_picture_stream(out):
    picture = out.add_stream("mpeg4", rate=10)
    picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
    return picture


def _mux_black_picture(out, picture) -> None:
    import av

    frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
    for packet in [*picture.encode(frame), *picture.encode(None)]:
        out.mux(packet)


def peak_hz(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("name, codec, rate, video", [("a.m4a", "aac", 44100, False), ("a.webm", "libopus", 48000, False),
                                                      ("a.mp4", "aac", 44100, True)])
def test_containers_libsndfile_cannot_read_decode_through_ffmpeg(tmp_path, name, codec, rate, video):
    path = write_with_av(tmp_path / name, codec, rate, video=video)
    with pytest.raises(Exception):
        sf.read(path)  # what the loader falls back from
    audio = load_audio(path)
    # 2 s and the encoder's priming and padding (AAC: 1024 samples at each end, at most)
    assert 2.0 <= len(audio) / SAMPLE_RATE <= 2.06
    assert abs(peak_hz(audio) - 440) < 3  # the louder left channel wins the mono average's peak
    assert 0.1 < np.abs(audio).max() <= 0.35  # channels averaged, not summed

    recording = Recording.from_file(path)  # lhotse reads it too: the importers' and the batches' way in
    samples = recording.load_audio()
    assert recording.sampling_rate == rate and samples.shape == (2, recording.num_samples)
    assert abs(peak_hz(samples[1], rate) - 220) < 3


def test_a_container_without_audio_names_the_file(tmp_path):
    import av

    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w") as out:
        _mux_black_picture(out, _black_picture_stream(out))
    with pytest.raises(AudioError, match=re.escape(f"{path}: cannot decode audio") + ".*no audio stream"):
        load_audio(path)


def test_lhotse_reading_is_left_alone_where_the_user_chose_a_backend(monkeypatch):
    from lhotse.audio import backend

    chosen = backend.LibsndfileBackend()
    monkeypatch.setattr(backend, "CURRENT_AUDIO_BACKEND", chosen)
    audio_module.read_any_format_in_lhotse()
    assert backend.CURRENT_AUDIO_BACKEND is chosen
    monkeypatch.setattr(backend, "CURRENT_AUDIO_BACKEND", None)
    audio_module.read_any_format_in_lhotse()
    kinds = [type(b) for b in backend.CURRENT_AUDIO_BACKEND.backends]
    assert kinds.index(audio_module.PyAVBackend) == kinds.index(backend.LibsndfileBackend) + 1


def test_a_corrupt_file_of_a_kind_libsndfile_reads_never_loads_ffmpeg(tmp_path, monkeypatch):
    path = write_text(tmp_path / "corrupt.flac")
    monkeypatch.setattr(audio_module, "read_with_av", lambda p: pytest.fail("PyAV tried on a .flac"))
    with pytest.raises(AudioError, match="cannot decode audio"):
        load_audio(path)
    assert not audio_module.PyAVBackend().is_applicable(path) and audio_module.for_ffmpeg(tmp_path / "a.M4A")
