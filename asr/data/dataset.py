"""Batches: a lhotse sampler yields CutSets sized by duration; ``MultitaskDataset`` turns each into tensors.

    cuts = open_cuts("manifests/demo/train_cuts.jsonl.gz")
    sampler = make_sampler(cuts, config.data, shuffle=True, world_size=2, rank=0, seed=1)
    loader = make_loader(MultitaskDataset(tokenizer, config.data, n_mels=80, train=True), sampler, num_workers=2)

The DataLoader runs with ``batch_size=None``: the sampler already made the batch. Features are computed
in the workers, on the fly, from the audio (or from a Shar shard's in-memory audio). Every random
choice of a batch (task form, SpecAugment masks, speed) is seeded by the batch's cut ids and the
dataset's seed, so a batch is the same whichever worker makes it and whenever: a resumed run that
restores the sampler's state gets exactly the batches the uninterrupted run would have had.
"""

from __future__ import annotations

import itertools
import random
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, IterableDatasetWrapper
from lhotse.dataset.dataloading import make_worker_init_fn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from asr.audio import CHUNK_LENGTH, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram_batch, pad_or_trim, resample
from asr.config import DataConfig
from asr.data import is_suspect
from asr.data.sequence import IGNORE, BadLabel, cut_to_example
from asr.tokenizer import Tokenizer


@dataclass
class Dropped:
    """Cuts a batch left out, and why: counted by the trainer, never silently lost."""

    cut_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, cut_id: str, reason: str) -> None:
        self.cut_ids.append(cut_id)
        self.reasons.append(reason)


class MultitaskDataset(torch.utils.data.Dataset):
    """A CutSet (one batch) -> a dict of tensors for the multitask loss.

    The batch, for B kept cuts::

        {
            "mel":          float32 (B, n_mels, T), log-mel; frames past n_frames[i] are 0
            "n_frames":     int64 (B,), valid mel frames per cut (100 per second)
            "tokens":       int64 (B, L), decoder input, right-padded with <|endoftext|>
            "labels":       int64 (B, L), next-token targets, IGNORE (-100) where no loss is taken
            "ctc_targets":  int64 (B, C), the heard transcript's text ids, right-padded with 0
            "ctc_lengths":  int64 (B,), 0 for no-speech cuts
            "ctc_valid":    bool (B,), False where the heard words are unknown (translation-only pairs)
            "translation_ctc_targets", "translation_ctc_lengths", "translation_ctc_valid": the same for
                            the English translation (English speech: its transcript), for the translation
                            CTC head; valid where a translation is known
            "cut_ids", "tasks", "languages": lists of B strings (language None for no speech)
            "suspects":     list of B bools, True where cleaning left the transcript for the model to judge
            "audio_seconds": float, speech time in the batch
            "padding_ratio": float, share of mel frames that are padding
            "dropped":      Dropped, cuts left out of this batch (unreadable audio, empty or too long transcript)
        }
    """

    def __init__(self, tokenizer: Tokenizer, options: DataConfig, n_mels: int = 80, n_text_ctx: int = 448,
                 train: bool = True, pad_to_30s: bool = False, seed: int = 0):
        self.tokenizer = tokenizer
        self.options = options
        self.n_mels = n_mels
        self.n_text_ctx = n_text_ctx
        self.train = train
        self.pad_to_30s = pad_to_30s
        self.seed = seed
        self.noise = [cut for path in options.noise for cut in open_cuts(path)] if train else []

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = list(cuts)
        rng = random.Random(self._batch_seed(cuts))
        dropped = Dropped()
        audios, examples, kept = [], [], []
        for cut in cuts:
            if self.train and self.options.speed_perturb and rng.random() < self.options.speed_perturb_rate:
                cut = _perturb_speed(cut, self.options.speed_perturb, rng)
            try:
                example = cut_to_example(cut, self.tokenizer, self.options, rng, self.n_text_ctx)
                audio = load_cut_audio(cut)
            except BadLabel as e:
                dropped.add(cut.id, f"{e.reason}: {e}")
                continue
            except Exception as e:  # a decoder can fail in many ways; the batch goes on without this cut
                dropped.add(cut.id, f"unreadable audio: {type(e).__name__}: {e}")
                continue
            if self.noise and rng.random() < self.options.noise_rate:
                audio = self._add_noise(audio, rng)
            audios.append(pad_or_trim(audio, N_SAMPLES) if self.pad_to_30s else audio)
            examples.append(example)
            kept.append(cut)
        if not kept:
            return {"dropped": dropped, "cut_ids": []}

        mel, n_frames = log_mel_spectrogram_batch(audios, n_mels=self.n_mels)
        if self.train and self.options.spec_augment:
            mel = self._spec_augment(mel, n_frames, rng)
        return {
            "mel": mel,
            "n_frames": n_frames,
            "tokens": _pad([e.tokens for e in examples], self.tokenizer.eot),
            "labels": _pad([e.labels for e in examples], IGNORE),
            **_ctc_fields("ctc", [e.ctc_targets for e in examples]),
            **_ctc_fields("translation_ctc", [e.translation_targets for e in examples]),
            "cut_ids": [c.id for c in kept],
            "tasks": [e.task for e in examples],
            "languages": [e.language for e in examples],
            "suspects": [is_suspect(c) for c in kept],
            "audio_seconds": float(sum(c.duration for c in kept)),
            "padding_ratio": 1.0 - float(n_frames.sum()) / max(1, mel.shape[0] * mel.shape[-1]),
            "dropped": dropped,
        }

    def _batch_seed(self, cuts: list[Cut]) -> int:
        return zlib.crc32("\n".join([str(self.seed)] + [c.id for c in cuts]).encode())

    def _add_noise(self, audio: np.ndarray, rng: random.Random) -> np.ndarray:
        noise_cut = rng.choice(self.noise)
        try:
            noise = load_cut_audio(noise_cut)
        except Exception as e:  # a bad noise file costs the augmentation, not the cut
            warnings.warn(f"noise cut {noise_cut.id}: unreadable audio ({type(e).__name__}: {e}); not mixed in")
            return audio
        return add_noise(audio, noise, rng.uniform(*self.options.noise_snr), rng)

    def _spec_augment(self, mel: torch.Tensor, n_frames: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """Frequency and time masks (SpecAugment), drawn from the batch's seed; padding stays 0."""
        options = self.options
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.randrange(2**31))
            for _ in range(options.n_freq_masks):
                mel = AF.mask_along_axis_iid(mel, options.freq_mask_width, 0.0, axis=1)
            for _ in range(options.n_time_masks):
                mel = AF.mask_along_axis_iid(mel, options.time_mask_width, 0.0, axis=2)
        valid = torch.arange(mel.shape[-1]) < n_frames[:, None]
        return mel * valid[:, None, :]


def _perturb_speed(cut: Cut, factors: tuple[float, ...], rng: random.Random) -> Cut:
    """``cut`` sped up or down by one of ``factors`` that keeps it within one 30 s window (slowing a
    full window down would make it longer than the encoder's input); unchanged when none does."""
    fitting = [f for f in factors if cut.duration / f <= CHUNK_LENGTH]
    return cut.perturb_speed(rng.choice(fitting)) if fitting else cut


def load_cut_audio(cut: Cut):
    """The cut's audio as a mono float32 array of shape (n_samples,) at 16 kHz."""
    audio = cut.load_audio()  # (n_channels, n_samples) at the recording's rate
    if audio.shape[-1] == 0:
        raise ValueError(f"cut {cut.id} has no audio samples")
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    return resample(mono.astype("float32"), cut.sampling_rate, SAMPLE_RATE)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float, rng: random.Random) -> np.ndarray:
    """``audio`` plus ``noise`` (looped or cut to its length, from a random offset) at ``snr_db``.

    audio, noise : shape = (n_samples,), float32. Silent audio or noise is returned unchanged.
    """
    if len(noise) == 0:
        return audio
    start = rng.randrange(len(noise))
    looped = np.resize(np.roll(noise, -start), len(audio))
    audio_power, noise_power = float(np.mean(audio**2)), float(np.mean(looped**2))
    if audio_power == 0.0 or noise_power == 0.0:
        return audio
    scale = np.sqrt(audio_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + scale * looped).astype(np.float32)


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    return pad_sequence([torch.tensor(s, dtype=torch.long) for s in sequences], batch_first=True,
                        padding_value=value)


def open_cuts(path: str | Path, shuffle_shards: bool = False, seed: int = 0) -> CutSet:
    """A CutSet manifest (.jsonl.gz, read lazily) or a directory of lhotse Shar shards."""
    path = Path(path)
    if path.is_dir():
        if not any(path.glob("cuts.*.jsonl*")):
            raise FileNotFoundError(f"{path}: a directory without lhotse Shar shards (cuts.*.jsonl.gz)")
        return CutSet.from_shar(in_dir=path, shuffle_shards=shuffle_shards, seed=seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such manifest")
    return CutSet.from_jsonl_lazy(path) if ".jsonl" in path.name else CutSet.from_file(path)


def subsample_nospeech(cuts: CutSet, rate: float) -> CutSet:
    """Keep a share ``rate`` of the no-speech cuts, chosen by a hash of the id (the same on every rank)."""
    if rate >= 1.0:
        return cuts
    threshold = int(rate * 2**32)
    return cuts.filter(lambda c: bool(c.supervisions) or zlib.crc32(c.id.encode()) < threshold)


def balance_languages(cuts: CutSet, temperature: float, seed: int = 0) -> CutSet:
    """Sample languages with probability proportional to n_l ** (1 / temperature), without end.

    Temperature 1 keeps the data's mix; larger values flatten it towards uniform, so a language with
    little data is seen more often. No-speech cuts count as a language of their own. The result is
    infinite: train by steps.
    """
    by_language: dict[str, list[Cut]] = {}
    for cut in cuts:
        language = cut.supervisions[0].language if cut.supervisions else "<nospeech>"
        by_language.setdefault(language, []).append(cut)
    names = sorted(by_language)
    weights = [len(by_language[n]) ** (1.0 / temperature) for n in names]
    parts = [CutSet.from_cuts(by_language[n]).repeat() for n in names]
    return CutSet.mux(*parts, weights=weights, seed=seed)


def make_sampler(cuts: CutSet, options: DataConfig, shuffle: bool, world_size: int = 1, rank: int = 0,
                 seed: int = 0) -> DynamicBucketingSampler:
    """Duration-bucketed batches of at most ``options.max_duration`` seconds, split across ranks; a set of
    fewer cuts than ``options.num_buckets`` gets a bucket a cut (lhotse refuses more buckets than cuts)."""
    n_cuts = _count_up_to(cuts, options.num_buckets)
    return DynamicBucketingSampler(
        cuts,
        max_duration=options.max_duration,
        quadratic_duration=options.quadratic_duration,
        num_buckets=max(1, min(options.num_buckets, n_cuts)),
        shuffle=shuffle,
        drop_last=False,
        world_size=world_size,
        rank=rank,
        seed=seed,
    )


def _count_up_to(cuts: CutSet, limit: int) -> int:
    """How many cuts ``cuts`` has, counting no further than ``limit`` (a lazy set may be endless); the
    iterator is closed at once rather than left half-read with its manifest file open."""
    iterator = iter(cuts)
    try:
        return sum(1 for _ in itertools.islice(iterator, limit))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def make_loader(dataset: MultitaskDataset, sampler, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                      persistent_workers=False)


def make_shar_loader(shar_dir: str | Path, dataset: MultitaskDataset, options: DataConfig, num_workers: int = 0,
                     rank: int = 0, world_size: int = 1, seed: int = 0) -> DataLoader:
    """Batches from lhotse Shar shards, for corpora too big for random access.

    Each rank, and each DataLoader worker in it, reads only its own shards, sequentially; the shard order
    is reshuffled every epoch (every new iteration of the loader). A worker's batches come from its own
    bucketing sampler, so give every rank at least ``num_workers`` shards.
    """
    cuts = CutSet.from_shar(in_dir=shar_dir, split_for_dataloading=True, shuffle_shards=True,
                            stateful_shuffle=True, seed=seed)
    sampler = make_sampler(cuts, options, shuffle=True, seed=seed)
    # Persistent workers keep the shard reader's epoch count, which reseeds the shuffle every epoch.
    return DataLoader(IterableDatasetWrapper(dataset, sampler), batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0,
                      worker_init_fn=make_worker_init_fn(rank=rank, world_size=world_size, seed=seed))


def export_shar(cuts: CutSet, out_dir: str | Path, shard_size: int = 1000, audio_format: str = "flac") -> dict:
    """Write cuts with their audio into lhotse Shar shards (sequential tar reads; no random access).

    Returns lhotse's map of field -> shard paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return cuts.to_shar(out_dir, fields={"recording": audio_format}, shard_size=shard_size)


def _ctc_fields(prefix: str, targets: list[list[int] | None]) -> dict:
    """``{prefix}_targets`` (B, C) right-padded with 0, ``{prefix}_lengths`` and ``{prefix}_valid`` (B,)."""
    ids = [torch.tensor(t or [], dtype=torch.long) for t in targets]
    padded = (pad_sequence(ids, batch_first=True) if any(len(i) for i in ids)
              else torch.zeros(len(ids), 0, dtype=torch.long))
    return {f"{prefix}_targets": padded, f"{prefix}_lengths": torch.tensor([len(i) for i in ids]),
            f"{prefix}_valid": torch.tensor([t is not None for t in targets])}
