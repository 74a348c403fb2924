"""The project's own offline corpus: parallel sentences in six languages, spoken by eSpeak NG.

    >>> corpus = make_demo_corpus("data/demo", seed=0)   # 6 h of training speech: 80 s on 2 cores
    >>> corpus.manifests["train"]
    PosixPath('data/demo/train_cuts.jsonl.gz')

What it holds, per split (layout: ``audio/<split>/<id>.flac``, ``<split>_cuts.jsonl.gz``, ``README.md``):
    speech clips    one sentence (grammar.py) in en, de, fr, es, it or ru, the supervision spanning the
                    speech exactly, with silence (EDGE_SILENCE) before and after
    long-form       LONGFORM_SECONDS of one voice speaking sentences of one language with PAUSE between
                    them; one cut over the whole recording, one supervision per sentence
    no-speech       NOSPEECH_SECONDS of faint noise, louder noise, beeps or a chord; no supervisions and
                    custom ``nospeech`` True (about NOSPEECH_SHARE of the cuts)
Every clip has background noise at a random SNR. Train and dev share voices and noise types; test
has its own (VARIANTS, NOISES), and every sentence belongs to one split only (grammar.split_of).

Labels follow the schema in ``asr/data/__init__.py``. In train, a share of the speech clips gets a
wrong label of a known kind (Corruption); every supervision records ``corruption``, ``true_text``
and ``true_language``. A wrong label keeps the clip's true translation, except ``other_clip``,
which takes the whole label (text and translation) of another sentence.

Every random choice comes from a generator seeded by (seed, split, index, stream), so a clip is the
same whichever process makes it, and the labels' stream is apart from the audio's: switching
corruption on or off changes no audio.
"""

import dataclasses
import json
import multiprocessing
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from tqdm import tqdm

from asr.data import grammar, is_nospeech
from asr.data.synth import SAMPLE_RATE, synthesize

DEFAULT_HOURS = 6.0  # of training speech: at 1 h the demo model over-fitted within its 5000 steps
FORMAT_VERSION = 2  # bump when the same parameters would give different data
LANGUAGES = grammar.LANGUAGES
SPLITS = ("train", "dev", "test")
# eSpeak voice variants (voices/!v). Six for training: with 71 (every variant of natural tempo but the
# test's), the same 6 h recipe reached only 22.5% test WER and BLEU 14.7 against 11.4% and 32.7 (the
# demo model learns more voices more slowly than 5000 steps allow), though language ID rose to 98.6%.
VARIANTS = {
    "train": ("m1", "m2", "m3", "m4", "f1", "f2"),
    "dev": ("m1", "m2", "m3", "m4", "f1", "f2"),
    "test": ("m5", "m6", "m7", "f3", "f4"),
}
NOISES = {"train": ("white", "pink"), "dev": ("white", "pink"), "test": ("brown", "hum")}
SNR_DB = {"train": (10.0, 30.0), "dev": (10.0, 30.0), "test": (10.0, 25.0)}
RATE_WPM = (130, 190)  # speaking rate, words per minute
PITCH = (30, 70)  # eSpeak's base pitch, 0-100
SPEECH_DBFS = (-28.0, -18.0)  # speech RMS level
EDGE_SILENCE = (0.1, 0.6)  # seconds before and after the speech of a clip
PAUSE = (0.3, 2.0)  # seconds between the sentences of a long-form recording
LONGFORM_SECONDS = (30.0, 90.0)
NOSPEECH_SECONDS = (1.0, 15.0)
NOSPEECH_SOUNDS = ("silence", "noise", "tones", "chord")
NOSPEECH_SHARE = 0.10  # of the cuts
LONGFORM_SHARE = 0.3  # of the speech audio: multi-sentence windows teach the decoder to go on past a sentence
MIN_EVAL_LONGFORM = 3  # long-form recordings in dev and in test at the least, for a steadier timestamp error
EVAL_SHARE = 0.075  # speech audio of dev, and of test, as a share of train's
MEAN_CLIP_SECONDS = 3.3  # of a speech clip, measured; to turn hours into numbers of cuts
MEAN_LONGFORM_SECONDS = 55.0  # of a long-form recording, measured
_SPLIT_CODE = {"train": 0, "dev": 1, "test": 2}
NOSPEECH_BANK = "train_nospeech_cuts.jsonl.gz"  # the training split's no-speech clips, for data.noise


@dataclass(frozen=True)
class Corruption:
    """How often each kind of wrong label is given to a train speech clip (a share of those clips).

    drop, insert, substitute  30-50% of the words dropped, inserted (from the language's lexicon), replaced
    case_punct                punctuation stripped, and all lower case (or, one time in four, all upper case)
    language                  the language label of another of the corpus's languages
    other_clip                the label of another sentence in the same language
    truncate                  only the first 30-60% of the words
    The kinds exclude each other: a clip gets at most one, so the rates may sum to at most 1.
    """

    drop: float = 0.03
    insert: float = 0.03
    substitute: float = 0.03
    case_punct: float = 0.03
    language: float = 0.03
    other_clip: float = 0.03
    truncate: float = 0.02

    def __post_init__(self):
        rates = dataclasses.asdict(self)
        if any(not 0.0 <= rate <= 1.0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"corruption rates must lie in [0, 1] and sum to at most 1, got {rates}")

    @property
    def total(self) -> float:
        return sum(dataclasses.asdict(self).values())


CORRUPTION_KINDS = tuple(field.name for field in dataclasses.fields(Corruption))


@dataclass(frozen=True)
class DemoCorpus:
    """What make_demo_corpus made (or found already made)."""

    out_dir: Path
    manifests: dict[str, Path]  # split -> <split>_cuts.jsonl.gz
    hours: dict[str, float]  # split -> hours of audio
    cuts: dict[str, dict[str, int]]  # split -> {"speech", "longform", "nospeech"} -> number of cuts
    languages: dict[str, dict[str, int]]  # split -> language -> number of supervisions
    corruptions: dict[str, int]  # kind -> number of train supervisions given it
    seconds: float  # wall-clock time spent generating; 0 when reused
    reused: bool

    @property
    def speed(self) -> float:
        """Audio seconds generated per wall-clock second (0 when reused)."""
        return sum(self.hours.values()) * 3600 / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Job:
    """One cut to make: everything else about it follows from its random generators."""

    out_dir: Path
    seed: int
    split: str
    index: int
    kind: str  # "speech", "longform" or "nospeech"
    language: str | None
    corruption: Corruption | None

    @property
    def id(self) -> str:
        return f"demo-{self.split}-{self.index:05d}"

    def rng(self, stream: str) -> np.random.Generator:
        streams = ("audio", "labels")
        return np.random.default_rng([self.seed, _SPLIT_CODE[self.split], self.index, streams.index(stream)])


def make_demo_corpus(
    out_dir: str | Path,
    hours: float = DEFAULT_HOURS,
    seed: int = 0,
    corruption: Corruption | None = Corruption(),
    min_eval_clips: int = 30,
    workers: int = 2,
    progress: bool = True,
) -> DemoCorpus:
    """Synthesise the demo corpus into `out_dir`, or reuse it if it was made there with the same parameters.

    hours          : speech audio in train (about); dev and test get EVAL_SHARE of it each
    seed           : the same seed gives the same manifests and the same audio samples
    corruption     : rates of wrong train labels; None (or all rates 0) for none
    min_eval_clips : the fewest speech clips per language in dev and in test
    workers        : processes synthesising in parallel (the output does not depend on it); they are
                     spawned, so a script calling this needs the ``if __name__ == "__main__":`` guard
    """
    if hours <= 0 or seed < 0 or min_eval_clips < 0 or workers < 1:
        raise ValueError(f"need hours > 0, seed >= 0, min_eval_clips >= 0 and workers >= 1, "
                         f"got {hours}, {seed}, {min_eval_clips}, {workers}")  # fmt: skip
    if corruption is not None and corruption.total == 0:
        corruption = None
    out_dir = Path(out_dir)
    params = {
        "format_version": FORMAT_VERSION,
        "hours": hours,
        "seed": seed,
        "corruption": dataclasses.asdict(corruption) if corruption else None,
        "min_eval_clips": min_eval_clips,
    }
    existing = _reuse(out_dir, params)
    if existing:
        return existing

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo.json").unlink(missing_ok=True)  # written last: its presence means a finished corpus
    for split in SPLITS:
        shutil.rmtree(out_dir / "audio" / split, ignore_errors=True)
        (out_dir / "audio" / split).mkdir(parents=True)
    jobs = _plan(out_dir.resolve(), hours, seed, corruption, min_eval_clips)
    cuts = list(tqdm(_make_cuts(jobs, workers), "demo corpus", len(jobs), unit="cut", disable=not progress))
    manifests = {split: out_dir / f"{split}_cuts.jsonl.gz" for split in SPLITS}
    for split, path in manifests.items():
        CutSet.from_cuts(cut for job, cut in zip(jobs, cuts) if job.split == split).to_file(path)

    corpus = _summarise(out_dir, manifests, jobs, cuts, time.perf_counter() - started)
    (out_dir / "README.md").write_text(_readme(corpus, params))
    summary = dataclasses.asdict(corpus) | {"out_dir": None, "manifests": None}
    (out_dir / "demo.json").write_text(json.dumps({"params": params, "summary": summary}, indent=1))
    return corpus


def write_nospeech_bank(train_cuts: str | Path, out: str | Path) -> int:
    """Write the no-speech cuts of ``train_cuts`` (noise, beeps, chords, near silence) to ``out``, a
    noise bank for ``data.noise``: mixed under training speech, sounds of the training split only teach
    the model to hear speech through more kinds of sound. Returns how many cuts it holds."""
    bank = CutSet.from_file(train_cuts).filter(is_nospeech).to_eager()
    bank.to_file(out)
    return len(bank)


def _reuse(out_dir: Path, params: dict) -> DemoCorpus | None:
    """The corpus already in out_dir, if it was made with `params` and its manifests are there; None
    where none was finished there. A finished corpus made with other settings is an error, not remade:
    run folders and cleaned manifests point at its audio by path."""
    try:
        made = json.loads((out_dir / "demo.json").read_text())
    except (OSError, ValueError):
        return None
    if made["params"] != params:
        changed = ", ".join(f"{key} {made['params'].get(key)!r} -> {value!r}" for key, value in params.items()
                            if made["params"].get(key) != value)
        raise ValueError(f"{out_dir}: a demo corpus made with other settings is there ({changed}); "
                         "choose another folder (job.corpus, or --out) or remove this one to remake it")
    manifests = {split: out_dir / f"{split}_cuts.jsonl.gz" for split in SPLITS}
    if not all(path.exists() for path in manifests.values()):
        return None
    summary = made["summary"] | {"out_dir": out_dir, "manifests": manifests, "seconds": 0.0, "reused": True}
    return DemoCorpus(**summary)


def _plan(
    out_dir: Path, hours: float, seed: int, corruption: Corruption | None, min_eval_clips: int
) -> list[_Job]:
    """The cuts of every split, in a seeded random order of kinds; languages take turns."""
    train_speech = hours * 3600
    jobs = []
    for split in SPLITS:
        speech = train_speech if split == "train" else EVAL_SHARE * train_speech
        fewest = 1 if split == "train" else MIN_EVAL_LONGFORM
        n_long = max(fewest, round(LONGFORM_SHARE * speech / MEAN_LONGFORM_SECONDS))
        n_short = round((1 - LONGFORM_SHARE) * speech / MEAN_CLIP_SECONDS)
        n_short = max(n_short, len(LANGUAGES) * (1 if split == "train" else min_eval_clips))
        n_none = max(1, round(NOSPEECH_SHARE / (1 - NOSPEECH_SHARE) * (n_short + n_long)))
        kinds = [("speech", LANGUAGES[i % len(LANGUAGES)]) for i in range(n_short)]
        first = seed + _SPLIT_CODE[split]  # the long-form recordings' languages start somewhere else per split
        kinds += [("longform", LANGUAGES[(first + i) % len(LANGUAGES)]) for i in range(n_long)]
        kinds += [("nospeech", None)] * n_none
        order = np.random.default_rng([seed, _SPLIT_CODE[split]]).permutation(len(kinds))
        split_corruption = corruption if split == "train" else None
        for index, k in enumerate(order):
            kind, language = kinds[k]
            jobs.append(_Job(out_dir, seed, split, index, kind, language, split_corruption))
    return jobs


def _make_cuts(jobs: list[_Job], workers: int) -> Iterator[MonoCut]:
    """_make_cut of every job, in order, from `workers` processes (each starts its own eSpeak)."""
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker) as pool:
            yield from pool.imap(_make_cut, jobs, chunksize=4)
        return
    threads = torch.get_num_threads()
    _start_worker()
    try:
        yield from map(_make_cut, jobs)
    finally:
        torch.set_num_threads(threads)


def _start_worker():
    torch.set_num_threads(1)  # the resampler's small convolutions gain nothing from threads


def _make_cut(job: _Job) -> MonoCut:
    """Synthesise one cut, write its audio to out_dir/audio/<split>/<id>.flac and return the cut."""
    make = {"speech": _speech_clip, "longform": _longform, "nospeech": _nospeech}[job.kind]
    audio, supervisions, custom = make(job)
    path = job.out_dir / "audio" / job.split / f"{job.id}.flac"
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    recording = Recording.from_file(path, recording_id=job.id)
    return MonoCut(
        id=job.id, start=0.0, duration=recording.duration, channel=0,
        recording=recording, supervisions=supervisions, custom=custom,
    )  # fmt: skip


# ---- speech ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Label:
    text: str
    language: str
    translation: str | None  # English; None for English text


def _true_label(sentence: grammar.Sentence, language: str) -> _Label:
    translation = None if language == "en" else grammar.realise(sentence, "en")
    return _Label(grammar.realise(sentence, language), language, translation)


def _speech_clip(job: _Job) -> tuple[np.ndarray, list[SupervisionSegment], dict]:
    """One sentence with silence around it; its label corrupted at the job's rates."""
    rng = job.rng("audio")
    variant, rate, pitch = _voice(rng, job.split)
    sentence = grammar.sample_sentence(rng, job.split)
    truth = _true_label(sentence, job.language)
    speech = synthesize(truth.text, job.language, variant, rate, pitch)
    speech *= _gain(rng.uniform(*SPEECH_DBFS)) / _rms(speech)
    silences = (rng.uniform(*EDGE_SILENCE, size=2) * SAMPLE_RATE).astype(int)
    audio, spans = _lay_out([speech], silences)
    audio, noise = _add_noise(audio, _rms(speech), job.split, rng)

    labels = job.rng("labels")
    kind = _draw_corruption(job.corruption, labels)
    label = truth if kind is None else _corrupt(kind, sentence, truth, job.split, labels)
    supervision = _supervision(job, 0, spans[0], label, truth, kind, variant)
    return audio, [supervision], {"noise": noise}


def _longform(job: _Job) -> tuple[np.ndarray, list[SupervisionSegment], dict]:
    """One voice reading sentences of one language with pauses, LONGFORM_SECONDS in all; labels true."""
    rng = job.rng("audio")
    variant, rate, pitch = _voice(rng, job.split)
    # Sentences go in until the target is passed, by at most a pause, a sentence (< 5.5 s) and the end.
    longest = LONGFORM_SECONDS[1] - PAUSE[1] - 5.5 - EDGE_SILENCE[1]
    target = rng.uniform(LONGFORM_SECONDS[0], longest) * SAMPLE_RATE
    level = rng.uniform(*SPEECH_DBFS)
    silences, speeches, truths = [int(rng.uniform(*EDGE_SILENCE) * SAMPLE_RATE)], [], []
    while sum(silences) + sum(map(len, speeches)) < target:
        if speeches:
            silences.append(int(rng.uniform(*PAUSE) * SAMPLE_RATE))
        truths.append(_true_label(grammar.sample_sentence(rng, job.split), job.language))
        speech = synthesize(truths[-1].text, job.language, variant, rate, pitch)
        speeches.append(speech * _gain(level + rng.uniform(-2.0, 2.0)) / _rms(speech))
    silences.append(int(rng.uniform(*EDGE_SILENCE) * SAMPLE_RATE))
    audio, spans = _lay_out(speeches, silences)
    audio, noise = _add_noise(audio, _rms(np.concatenate(speeches)), job.split, rng)
    supervisions = [_supervision(job, k, span, t, t, None, variant) for k, (span, t) in enumerate(zip(spans, truths))]
    return audio, supervisions, {"noise": noise}


def _voice(rng: np.random.Generator, split: str) -> tuple[str, int, int]:
    """(eSpeak voice variant, rate in words per minute, pitch) for a speaker of `split`."""
    variant = str(rng.choice(VARIANTS[split]))
    return variant, int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)), int(rng.integers(PITCH[0], PITCH[1] + 1))


def _lay_out(speeches: list[np.ndarray], silences) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """silences[0] zeros, speeches[0], silences[1] zeros, ...: the audio, and each speech's (start, length)."""
    pieces, spans, at = [np.zeros(silences[0])], [], silences[0]
    for speech, silence in zip(speeches, silences[1:]):
        pieces += [speech, np.zeros(silence)]
        spans.append((at, len(speech)))
        at += len(speech) + silence
    return np.concatenate(pieces), spans


def _supervision(job, k, span, label: _Label, truth: _Label, corruption, speaker) -> SupervisionSegment:
    start, length = span
    return SupervisionSegment(
        id=f"{job.id}-{k:02d}",
        recording_id=job.id,
        start=start / SAMPLE_RATE,
        duration=length / SAMPLE_RATE,
        channel=0,
        text=label.text,
        language=label.language,
        speaker=speaker,
        custom={
            "translation": label.translation,
            "source": "demo",
            "weak": job.split == "train",
            "corruption": corruption,
            "true_text": truth.text,
            "true_language": truth.language,
        },
    )


# ---- wrong labels ----------------------------------------------------------------------------------


def _draw_corruption(corruption: Corruption | None, rng: np.random.Generator) -> str | None:
    """A kind with probability its rate, or None."""
    u = rng.random()  # drawn even when off, so that the rest of the stream is the same
    for kind in CORRUPTION_KINDS if corruption else ():
        rate = getattr(corruption, kind)
        if u < rate:
            return kind
        u -= rate
    return None


def _corrupt(kind: str, sentence: grammar.Sentence, truth: _Label, split: str, rng: np.random.Generator) -> _Label:
    """`truth` made wrong in the way `kind` names (see Corruption); the result always differs from it."""
    if kind == "language":
        return dataclasses.replace(truth, language=str(rng.choice([c for c in LANGUAGES if c != truth.language])))
    if kind == "other_clip":
        other = sentence
        while other == sentence:
            other = grammar.sample_sentence(rng, split)
        return _true_label(other, truth.language)
    if kind == "case_punct":
        text = re.sub(r"[.,!?;:]", "", truth.text)
        return dataclasses.replace(truth, text=text.upper() if rng.random() < 0.25 else text.lower())
    words, vocabulary = truth.text.split(), grammar.vocabulary(truth.language)
    n = len(words)
    k = max(1, round(rng.uniform(0.3, 0.5) * n))
    if kind == "drop":
        words = [words[i] for i in sorted(rng.choice(n, size=n - min(k, n - 1), replace=False))]
    elif kind == "insert":
        for _ in range(k):
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(vocabulary)))
    elif kind == "substitute":
        for i in rng.choice(n, size=k, replace=False):
            bare = words[i].rstrip(".,")
            new = str(rng.choice([w for w in vocabulary if w != bare.lower()]))
            words[i] = new + words[i][len(bare) :]
    elif kind == "truncate":
        words = words[: min(n - 1, max(1, round(rng.uniform(0.3, 0.6) * n)))]
    else:
        raise ValueError(f"unknown corruption kind {kind!r}; known: {CORRUPTION_KINDS}")
    return dataclasses.replace(truth, text=" ".join(words))


# ---- noise and no-speech ---------------------------------------------------------------------------


def _nospeech(job: _Job) -> tuple[np.ndarray, list[SupervisionSegment], dict]:
    """NOSPEECH_SECONDS of one of NOSPEECH_SOUNDS over faint noise of the split's kinds."""
    rng = job.rng("audio")
    n = int(rng.uniform(*NOSPEECH_SECONDS) * SAMPLE_RATE)
    sound, noise = str(rng.choice(NOSPEECH_SOUNDS)), str(rng.choice(NOISES[job.split]))
    level = rng.uniform(-45.0, -20.0) if sound == "noise" else rng.uniform(-70.0, -55.0)  # dBFS
    audio = _noise(noise, n, rng) * _gain(level)
    if sound == "tones":
        audio += _beeps(n, rng)
    elif sound == "chord":
        audio += _chord(n, rng)
    return _limit(audio), [], {"nospeech": True, "sound": sound, "noise": noise}


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of white, pink or brown noise, or mains hum, at RMS 1."""
    if kind == "hum":
        t, mains = np.arange(n) / SAMPLE_RATE, rng.choice([50.0, 60.0])
        harmonics = [rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * mains * t + rng.uniform(0, 2 * np.pi))
                     for h in range(1, 9)]  # fmt: skip
        audio = np.sum(harmonics, axis=0) + 0.05 * rng.standard_normal(n)
    else:
        slope = {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]  # amplitude ~ frequency**-slope
        n_fft = 1 << (n - 1).bit_length()  # a power of two: numpy's FFT is slow on other lengths
        frequencies = np.maximum(np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE), 20.0)
        audio = np.fft.irfft(np.fft.rfft(rng.standard_normal(n_fft)) / frequencies**slope, n_fft)[:n]
    return audio / _rms(audio)


def _add_noise(audio: np.ndarray, speech_rms: float, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """audio with noise of one of the split's NOISES at a random SNR (against speech_rms); and that noise."""
    kind = str(rng.choice(NOISES[split]))
    snr = rng.uniform(*SNR_DB[split])
    return _limit(audio + _noise(kind, len(audio), rng) * speech_rms / _gain(snr)), kind


def _beeps(n: int, rng: np.random.Generator) -> np.ndarray:
    """One to six sine beeps of 80-600 ms at random pitches, times and levels."""
    audio = np.zeros(n)
    for _ in range(rng.integers(1, 7)):
        length = min(n, int(rng.uniform(0.08, 0.6) * SAMPLE_RATE))
        start = int(rng.integers(n - length + 1))
        t = np.arange(length) / SAMPLE_RATE
        beep = np.sin(2 * np.pi * rng.uniform(300.0, 2500.0) * t) * np.sqrt(2) * _gain(rng.uniform(-35.0, -12.0))
        audio[start : start + length] += beep * _fade(length)  # RMS -35 to -12 dBFS
    return audio


def _chord(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sustained major or minor chord (with a slow swell) over the whole clip."""
    root = 110.0 * 2 ** (rng.integers(24) / 12)
    semitones = [(0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 7, 12)][rng.integers(5)]
    t = np.arange(n) / SAMPLE_RATE
    audio = sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * t + rng.uniform(0, 2 * np.pi)) for s in semitones)
    audio *= 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    return audio / _rms(audio) * _gain(rng.uniform(-35.0, -15.0)) * _fade(n)


def _fade(n: int, seconds: float = 0.01) -> np.ndarray:
    """An envelope rising over the first and falling over the last `seconds`, 1 between."""
    ramp = min(n // 2, int(seconds * SAMPLE_RATE))
    envelope = np.ones(n)
    envelope[:ramp] = envelope[n - ramp :][::-1] = np.linspace(0.0, 1.0, ramp)
    return envelope


def _limit(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """float32 audio scaled down, if need be, so that no sample passes `peak`."""
    top = np.abs(audio).max(initial=0.0)
    return (audio * (peak / top if top > peak else 1.0)).astype(np.float32)


def _gain(decibels: float) -> float:
    return 10.0 ** (decibels / 20.0)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) or 1e-12


# ---- summary ---------------------------------------------------------------------------------------


def _summarise(
    out_dir: Path, manifests: dict[str, Path], jobs: list[_Job], cuts: list[MonoCut], seconds: float
) -> DemoCorpus:
    hours = {split: 0.0 for split in SPLITS}
    kinds = {split: {"speech": 0, "longform": 0, "nospeech": 0} for split in SPLITS}
    languages = {split: {language: 0 for language in LANGUAGES} for split in SPLITS}
    corruptions = {kind: 0 for kind in CORRUPTION_KINDS}
    for job, cut in zip(jobs, cuts):
        hours[job.split] += cut.duration / 3600
        kinds[job.split][job.kind] += 1
        for supervision in cut.supervisions:
            languages[job.split][supervision.custom["true_language"]] += 1
            if supervision.custom["corruption"]:
                corruptions[supervision.custom["corruption"]] += 1
    return DemoCorpus(out_dir, manifests, hours, kinds, languages, corruptions, seconds, reused=False)


def _readme(corpus: DemoCorpus, params: dict) -> str:
    header = "| split | hours | speech clips | long-form | no-speech | " + " | ".join(LANGUAGES) + " |"
    lines = [
        "# Demo corpus",
        "",
        "Synthesised with eSpeak NG by `asr.data.demo.make_demo_corpus` (see its docstring for what it holds).",
        f"Parameters: `{json.dumps(params)}`",
        f"Generated in {corpus.seconds:.0f} s ({corpus.speed:.0f} audio seconds per second).",
        "",
        "Cuts per split, and supervisions per (true) language:",
        "",
        header,
        "|" + " --- |" * (header.count("|") - 1),
    ]
    for split in SPLITS:
        counts = [corpus.cuts[split][kind] for kind in ("speech", "longform", "nospeech")]
        counts += [corpus.languages[split][language] for language in LANGUAGES]
        lines.append(f"| {split} | {corpus.hours[split]:.3f} | " + " | ".join(map(str, counts)) + " |")
    lines += ["", "Voices (eSpeak variants) and background noises:", ""]
    lines += [f"- {split}: {', '.join(VARIANTS[split])}; {', '.join(NOISES[split])}" for split in SPLITS]
    lines += ["", "Wrong labels in train, per kind (`custom.corruption`):", ""]
    lines += ["| kind | supervisions |", "| --- | --- |"]
    lines += [f"| {kind} | {count} |" for kind, count in corpus.corruptions.items()]
    return "\n".join(lines) + "\n"
