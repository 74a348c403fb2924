"""Speech from text with eSpeak NG, through ctypes: the voice of the synthetic demo corpus.

The library and its voice data come from the ``espeakng-loader`` wheel, so nothing is installed system-wide.

    >>> audio = synthesize("Heute sieht die Katze den Hund im Garten.", "de", variant="f3", rate=150)
    >>> audio.dtype, audio.ndim     # float32 in [-1, 1] at SAMPLE_RATE, leading/trailing silence trimmed
    (dtype('float32'), 1)

synthesize() is a pure function: the same arguments give the same samples, in any process and after
anything else was spoken. eSpeak NG does not give that by itself: it seeds its random numbers (the
breath noise of some voices) from the clock, and it keeps function-level statics (the phase of its
pitch flutter, among others) from one utterance to the next, which even espeak_Terminate and
espeak_Initialize leave alone. So every call loads the library afresh, seeds it, speaks, and unloads
it (about 10 ms). Loading is process-wide: one utterance at a time per process (a lock), and nothing
else in the process should hold libespeak-ng open, or it would not unload.
"""

import _ctypes
import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from asr.audio import SAMPLE_RATE  # Hz, what synthesize() returns

RATE_RANGE = (80, 450)  # words per minute that eSpeak accepts
TRIM_LEVEL = 1e-3  # a sample louder than this (full scale 1) is speech; eSpeak's pauses are digital silence
TRIM_PAD = 0.005  # seconds kept beyond the first/last loud sample

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_RAND_SEED = 0
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()


class _ESpeak:
    """A loaded and initialised eSpeak NG in synchronous mode: espeak_Synth returns when all audio is in."""

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.lib = lib
        data_path = espeakng_loader.get_data_path()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)  # 22050 Hz
        if self.sample_rate <= 0:
            self.close()
            raise RuntimeError(f"espeak_Initialize failed with the voice data at {data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced while eSpeak holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples, events) -> int:
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0: go on synthesising

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at self.sample_rate, eSpeak's silences included."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self.lib.espeak_ng_SetRandSeed(_RAND_SEED)  # the breath noise of some voices; initialised from the clock
        self._chunks = []
        data = text.encode("utf-8")
        error = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if error != 0:
            raise RuntimeError(f"espeak_Synth failed ({error}) on {text!r}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def close(self):
        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)  # the last reference: the next load starts from clean statics


@contextlib.contextmanager
def _espeak() -> Iterator[_ESpeak]:
    """A freshly loaded eSpeak NG, unloaded on exit; one at a time in a process."""
    with _lock:
        engine = _ESpeak()
        try:
            yield engine
        finally:
            engine.close()


def voice_variants() -> list[str]:
    """The names of the voice variants in eSpeak's data ("m1", "f3", "klatt", ...), sorted."""
    import espeakng_loader

    return sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut the silence before the first and after the last sample louder than TRIM_LEVEL (keeping TRIM_PAD).

    audio : np.ndarray, shape = (n_samples,), float in [-1, 1]
    """
    loud = np.flatnonzero(np.abs(audio) > TRIM_LEVEL)
    if loud.size == 0:
        return audio[:0]
    pad = int(TRIM_PAD * sample_rate)
    return audio[max(0, loud[0] - pad) : loud[-1] + 1 + pad]


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """audio : np.ndarray, shape = (n_samples,) -> shape = (about n_samples * new_rate / orig_rate,), float32."""
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    with torch.inference_mode():
        return _resampler(orig_rate, new_rate)(waveform).numpy()


@functools.lru_cache(maxsize=4)
def _resampler(orig_rate: int, new_rate: int) -> torch.nn.Module:
    """torchaudio's windowed-sinc resampler, built once: making its kernel costs ten times applying it."""
    import torchaudio.transforms

    return torchaudio.transforms.Resample(orig_rate, new_rate)


def synthesize(
    text: str, language: str, variant: str | None = None, rate: int = 175, pitch: int = 50
) -> np.ndarray:
    """Speak `text` with eSpeak NG's voice for `language`, trimmed of leading and trailing silence.

    language : an ISO 639-1 code eSpeak knows ("en", "de", "ru", ...)
    variant  : a voice variant from voice_variants() ("m3", "f1", ...), None for the language's default
    rate     : words per minute, within RATE_RANGE
    pitch    : base pitch, 0-100 (50 is the voice's own)
    Returns np.ndarray, shape = (n_samples,), float32 at SAMPLE_RATE.
    """
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValueError(f"rate must be in {RATE_RANGE} words per minute, got {rate}")
    voice = language if variant is None else f"{language}+{variant}"
    with _espeak() as engine:
        samples, sample_rate = engine.synth(text, voice, int(rate), int(pitch)), engine.sample_rate
    return resample(trim_silence(samples.astype(np.float32) / 32768.0, sample_rate), sample_rate, SAMPLE_RATE)
