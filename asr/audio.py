"""Audio loading and Whisper's log-mel features, single and batched.

Units: audio is mono float32 in [-1, 1] at ``SAMPLE_RATE`` (16 kHz), so one sample is 1/16000 s.
A mel frame is one STFT column: a 25 ms window (``N_FFT`` samples) every 10 ms (``HOP_LENGTH``
samples), so a clip of ``n`` samples has ``n // HOP_LENGTH`` frames, 100 per second. Whisper's encoder
(``audio_stride`` 2) halves that to 50 positions per second, one per 20 ms timestamp token; at
``audio_stride`` 4 it has 25 per second, and the timestamp tokens keep their 20 ms grid.

``log_mel_spectrogram`` reproduces ``whisper.audio.log_mel_spectrogram`` exactly.
``log_mel_spectrogram_batch`` gives each utterance the features it would have alone; Whisper's
batched call takes its dynamic-range floor from the whole batch instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from lhotse.audio import backend as lhotse_backend
from lhotse.audio.backend import AudioBackend, LibsndfileCompatibleAudioInfo
from torch import Tensor

SAMPLE_RATE = 16000  # Hz
N_FFT = 400  # samples in an STFT window: 25 ms
HOP_LENGTH = 160  # samples between mel frames: 10 ms
CHUNK_LENGTH = 30  # seconds in one Whisper input window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s chunk
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # 320 samples (20 ms) per encoder position at Whisper's stride
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 50 encoder positions per second at Whisper's stride

# Resampling filter: libswresample's defaults (filter_size 32, cutoff 0.97, Kaiser beta 9), because
# Whisper's own loader is `ffmpeg -ar 16000`. Against ffmpeg's 44.1 -> 16 kHz conversion of jfk.flac
# this gives 84 dB signal-to-difference, the int16 quantisation floor; longer filters score lower.
RESAMPLE_ZERO_CROSSINGS = 16  # sinc zero crossings on each side of the centre
RESAMPLE_ROLLOFF = 0.97  # cutoff as a fraction of the lower Nyquist frequency
RESAMPLE_KAISER_BETA = 9.0  # Kaiser window shape (dimensionless)

LOG_RANGE = 8.0  # log10 units kept below each utterance's peak: an 80 dB dynamic range
MIN_REFLECT_SAMPLES = N_FFT // 2 + 1  # 201: the shortest input a centred (reflect-padded) STFT takes


# The kinds of file libsndfile reads, by suffix; others (M4A, MP4, WebM, WMA, ...) go to FFmpeg (PyAV).
SOUNDFILE_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .sph .nist .voc .htk".split())


class AudioError(ValueError):
    """A file that cannot be read as audio; the message names the file and says why."""


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as Whisper's ``ffmpeg -ac 1 -ar {sr}`` would.

    Returns
    -------
    np.ndarray, shape = (n_samples,), float32 in [-1, 1], mono, at ``sr`` Hz
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    audio, file_sr = _read_mono(path)
    if audio.size == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    audio = resample(audio, file_sr, sr)
    # ffmpeg hands Whisper int16, which clips; the resampler's ringing can overshoot full scale.
    return np.clip(audio, -1.0, 1.0)


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Decode with soundfile, else PyAV (FFmpeg), else lhotse; average the channels (what ``ffmpeg -ac 1``
    does).

    Returns (audio of shape (n_samples,) float32, the file's sample rate in Hz).
    """
    # Decoders raise many exception types (and lhotse a plain Exception); all mean "cannot decode".
    try:
        audio, file_sr = sf.read(path, dtype="float32", always_2d=True)  # (n_samples, n_channels)
        return audio.mean(axis=1, dtype=np.float32), file_sr
    except Exception as sf_error:
        errors = [sf_error]
        for read in (read_with_av, _read_with_lhotse) if for_ffmpeg(path) else (_read_with_lhotse,):
            try:
                audio, file_sr = read(path)  # (n_channels, n_samples)
                return audio.mean(axis=0, dtype=np.float32), file_sr
            except Exception as e:
                errors.append(e)
        reasons = "; ".join(getattr(e, "error_string", None) or first_line(e) for e in errors[:2])
        raise AudioError(f"{path}: cannot decode audio (unsupported or corrupt format: {reasons})") from sf_error


def first_line(error) -> str:
    """An error's (or a message's) first line, for a one-line report; its type's name where it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _read_with_lhotse(path: Path) -> tuple[np.ndarray, int]:
    from lhotse.audio import read_audio

    audio, file_sr = read_audio(path)
    return np.atleast_2d(np.asarray(audio, dtype=np.float32)), int(file_sr)


# ---------------------------------------------------------------------------------------------------
# Containers that libsndfile cannot read (AAC/M4A, MP4 and WebM video, WMA, AMR, ...), through PyAV:
# FFmpeg's libraries in a wheel, so nothing is installed by hand (Whisper runs the ffmpeg program).


def for_ffmpeg(path: str | os.PathLike) -> bool:
    """Whether a file libsndfile could not read may be one FFmpeg reads: not of a kind libsndfile reads
    (one of those is corrupt), so that a corpus of WAV and FLAC never loads FFmpeg's libraries."""
    return Path(path).suffix.lower() not in SOUNDFILE_SUFFIXES


def read_with_av(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The first audio stream of any file FFmpeg reads, at its own rate.

    Returns (audio of shape (n_channels, n_samples) float32, the stream's sample rate in Hz). Frames
    FFmpeg finds corrupt are skipped, as ``ffmpeg`` itself does.
    """
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)  # planar float: (channels, n)
        chunks = [frame.to_ndarray() for decoded in _valid_frames(container.decode(stream))
                  for frame in resampler.resample(decoded)]
        chunks += [frame.to_ndarray() for frame in resampler.resample(None)]
    if not chunks:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(rate)


def _valid_frames(frames):
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


class PyAVBackend(AudioBackend):
    """lhotse's reading (``Recording.from_file``, ``cut.load_audio()``) through ``read_with_av``."""

    def read_audio(self, path_or_fd, offset: float = 0.0, duration: float | None = None,
                   force_opus_sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
        if not isinstance(path_or_fd, (str, os.PathLike)):
            raise AudioError("PyAV reads files by path only")
        audio, rate = read_with_av(path_or_fd)
        start = round(offset * rate)
        end = None if duration is None else start + round(duration * rate)
        return audio[:, start:end], rate

    def info(self, path_or_fd, force_opus_sampling_rate: int | None = None) -> LibsndfileCompatibleAudioInfo:
        # Decoded to count the samples: compressed streams' headers round their length (AAC's priming).
        audio, rate = self.read_audio(path_or_fd)
        return LibsndfileCompatibleAudioInfo(channels=audio.shape[0], frames=audio.shape[1], samplerate=rate,
                                             duration=audio.shape[1] / rate)

    def is_applicable(self, path_or_fd) -> bool:
        return isinstance(path_or_fd, (str, os.PathLike)) and for_ffmpeg(path_or_fd)

    def supports_info(self) -> bool:
        return True


def read_any_format_in_lhotse() -> None:
    """Make lhotse's default reading try PyAV right after libsndfile. lhotse's own fallbacks need
    torchcodec or an ffmpeg program, and the one it picks first for video containers needs torchaudio's
    FFmpeg bindings, which torchaudio 2.9 removed: that one is left out where they are missing. A
    backend the user chose (``LHOTSE_AUDIO_BACKEND``, or set in code) is left alone."""
    if os.environ.get("LHOTSE_AUDIO_BACKEND") or lhotse_backend.CURRENT_AUDIO_BACKEND is not None:
        return
    ffmpeg_bindings = importlib.util.find_spec("torchaudio.io") is not None
    backends = [b for b in lhotse_backend.get_default_audio_backend().backends
                if ffmpeg_bindings or not isinstance(b, lhotse_backend.TorchaudioFFMPEGBackend)]
    at = next((i + 1 for i, b in enumerate(backends) if isinstance(b, lhotse_backend.LibsndfileBackend)), 0)
    lhotse_backend.set_current_audio_backend(
        lhotse_backend.CompositeAudioBackend([*backends[:at], PyAVBackend(), *backends[at:]]))


read_any_format_in_lhotse()


def resample(audio: np.ndarray | Tensor, orig_sr: int, new_sr: int) -> np.ndarray | Tensor:
    """Band-limited (Kaiser-windowed sinc) resampling along the last axis.

    audio : np.ndarray or torch.Tensor, shape = (..., n_samples); floats keep their dtype
    Returns the same kind (NumPy, or torch on the same device),
    shape = (..., ceil(n_samples * new_sr / orig_sr)).
    """
    if orig_sr == new_sr:
        return audio
    is_numpy = not torch.is_tensor(audio)
    waveform = torch.from_numpy(np.ascontiguousarray(audio)) if is_numpy else audio
    if not waveform.is_floating_point():
        waveform = waveform.float()
    waveform = AF.resample(
        waveform, orig_sr, new_sr,
        lowpass_filter_width=RESAMPLE_ZERO_CROSSINGS, rolloff=RESAMPLE_ROLLOFF,
        resampling_method="sinc_interp_kaiser", beta=RESAMPLE_KAISER_BETA,
    )
    return waveform.numpy() if is_numpy else waveform


def pad_or_trim(
    array: np.ndarray | Tensor, length: int = N_SAMPLES, axis: int = -1
) -> np.ndarray | Tensor:
    """Zero-pad or cut ``array`` along ``axis`` to ``length``, as the encoder's fixed input expects.

    array : np.ndarray or torch.Tensor, any shape; the result has ``shape[axis] == length``.
    """
    n = array.shape[axis]
    if torch.is_tensor(array):
        array = array.narrow(axis, 0, min(n, length))
        dims_after = array.ndim - 1 - axis % array.ndim
        # F.pad takes (before, after) pairs starting from the last axis.
        return F.pad(array, [0, 0] * dims_after + [0, max(length - n, 0)])
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, length)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, max(length - n, 0))
    return np.pad(array[tuple(index)], widths)


@functools.lru_cache(maxsize=None)
def mel_filters(device: torch.device | str, n_mels: int) -> Tensor:
    """Slaney-scale mel filterbank, identical to Whisper's ``mel_filters.npz``.

    Returns torch.Tensor, shape = (n_mels, N_FFT // 2 + 1), float32, on ``device``.
    """
    import librosa  # slow to import; only feature extraction needs it

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)
    return torch.from_numpy(filters).to(device)


def log_mel_spectrogram(
    audio: str | os.PathLike | np.ndarray | Tensor,
    n_mels: int = 80,
    padding: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Whisper's log-mel features of one utterance.

    audio : a path (read with ``load_audio``), or np.ndarray / torch.Tensor, shape = (n_samples,),
        at 16 kHz
    padding : zero samples appended first (Whisper's transcribe passes ``N_SAMPLES``)
    device : where to move the audio before the STFT; by default, where it already is

    Returns
    -------
    torch.Tensor, shape = (n_mels, (n_samples + padding) // HOP_LENGTH), float32
    """
    if isinstance(audio, (str, os.PathLike)):
        audio = load_audio(audio)
    waveform = _as_waveform(audio, device)
    if padding > 0:
        waveform = F.pad(waveform, (0, padding))
    mels, _ = log_mel_spectrogram_batch([waveform], n_mels=n_mels)
    return mels[0]


def log_mel_spectrogram_batch(
    audios: Sequence[np.ndarray | Tensor],
    n_mels: int = 80,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-mel features of utterances of different lengths, each exactly as if computed alone.

    audios : each np.ndarray or torch.Tensor, shape = (n_samples_i,), at 16 kHz. Inputs shorter than
        ``MIN_REFLECT_SAMPLES`` are zero-padded to it (as if followed by silence) so they can be centred.

    Returns
    -------
    mels : torch.Tensor, shape = (batch, n_mels, max(n_frames)), float32; frames at or past
        ``n_frames[i]`` are exactly 0.0 (where a conv would see zero padding)
    n_frames : torch.Tensor, shape = (batch,), int64, ``n_samples_i // HOP_LENGTH``
    """
    if not isinstance(n_mels, int) or n_mels <= 0:
        raise ValueError(f"n_mels must be a positive int, got {n_mels!r}")
    if len(audios) == 0:
        raise ValueError("log_mel_spectrogram_batch needs at least one utterance")
    waveforms = [_as_waveform(audio, device) for audio in audios]
    lengths = [len(waveform) for waveform in waveforms]
    padded = torch.nn.utils.rnn.pad_sequence([_centre(w) for w in waveforms], batch_first=True)
    n_frames = torch.tensor([n // HOP_LENGTH for n in lengths], device=padded.device)
    mels = _log_mel_frames(padded, n_frames, max(lengths) // HOP_LENGTH, n_mels)
    return mels, n_frames


def _as_waveform(audio: np.ndarray | Tensor, device: torch.device | str | None) -> Tensor:
    """One utterance as a float32 tensor of shape (n_samples,) on ``device``."""
    waveform = audio if torch.is_tensor(audio) else torch.from_numpy(np.ascontiguousarray(audio))
    if waveform.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n_samples,), got shape {tuple(waveform.shape)}")
    return waveform.to(device=device, dtype=torch.float32)


def _centre(waveform: Tensor) -> Tensor:
    """Reflect-pad by N_FFT // 2 on both sides, as ``torch.stft(center=True)`` does.

    waveform : shape = (n_samples,); returns shape = (max(n_samples, MIN_REFLECT_SAMPLES) + N_FFT,)
    """
    if len(waveform) < MIN_REFLECT_SAMPLES:
        waveform = F.pad(waveform, (0, MIN_REFLECT_SAMPLES - len(waveform)))
    return F.pad(waveform[None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0]


def _log_mel_frames(padded: Tensor, n_frames: Tensor, max_frames: int, n_mels: int) -> Tensor:
    """Whisper's log-mel steps on centred, right-zero-padded waveforms, floored per utterance.

    padded : shape = (batch, n_padded_samples); n_frames : shape = (batch,)
    Returns shape = (batch, n_mels, max_frames), zero past each utterance's ``n_frames``.
    """
    if max_frames == 0:  # every utterance is shorter than one hop: nothing to take a peak over
        return padded.new_zeros(len(padded), n_mels, 0)
    window = torch.hann_window(N_FFT, device=padded.device)
    stft = torch.stft(padded, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
    # Whisper drops the last frame; frames before n_frames[i] never reach the zero padding.
    power = stft[..., :max_frames].abs() ** 2  # (batch, N_FFT // 2 + 1, max_frames)
    log_spec = (mel_filters(padded.device, n_mels) @ power).clamp(min=1e-10).log10()
    valid = (torch.arange(max_frames, device=padded.device) < n_frames[:, None])[:, None, :]
    # The floor comes from each utterance's own frames; a frameless one's is -inf, then masked to 0.
    peak = log_spec.masked_fill(~valid, -torch.inf).amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - LOG_RANGE)
    return ((log_spec + 4.0) / 4.0).masked_fill(~valid, 0.0)
