import random

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.utils import fastcopy

from asr.audio import log_mel_spectrogram
from asr.config import DataConfig
from asr.data.dataset import (MultitaskDataset, add_noise, balance_languages, export_shar, make_loader, make_sampler,
                              make_shar_loader,
                              open_cuts, subsample_nospeech)
from asr.data.sequence import IGNORE
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = [" Hallo Welt.", " Bonjour le monde.", " Hello world.", " Guten Morgen."] * 30


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_sentencepiece(train_sentencepiece(TEXTS, vocab_size=300))


@pytest.fixture
def corpus(tmp_path) -> CutSet:
    """Eight clips of 1-4 s: six with speech labels (two of them at 8 kHz), two without speech."""
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(8):
        rate = 8000 if i in (2, 3) else 16000
        duration = 1.0 + (i % 4) * 0.75
        path = tmp_path / f"clip{i}.flac"
        sf.write(path, (0.1 * rng.standard_normal(int(duration * rate))).astype("float32"), rate)
        recording = Recording.from_file(path, recording_id=f"clip{i}")
        supervisions = [] if i >= 6 else [SupervisionSegment(
            id=f"clip{i}-0", recording_id=recording.id, start=0.0, duration=recording.duration,
            text=["Hallo Welt.", "Bonjour le monde.", "Hello world."][i % 3], language=["de", "fr", "en"][i % 3])]
        cuts.append(MonoCut(id=f"clip{i}", start=0, duration=recording.duration, channel=0, recording=recording,
                            supervisions=supervisions, custom={"nospeech": True} if i >= 6 else None))
    return CutSet.from_cuts(cuts)


def batch_of(corpus, tok, **options):
    dataset = MultitaskDataset(tok, DataConfig(**options), n_mels=80, train=False)
    return dataset[corpus]


def test_batch_shapes_and_contents(corpus, tok):
    batch = batch_of(corpus, tok, timestamp_rate=0.0, prompt_rate=0.0)
    n = len(corpus)
    assert batch["mel"].shape == (n, 80, 325)  # the longest clip: 3.25 s, not padded to 30 s
    assert batch["n_frames"].tolist() == [int(c.duration * 100) for c in corpus]
    assert batch["tokens"].shape[0] == n and batch["tokens"].shape == batch["labels"].shape
    assert batch["tasks"] == ["transcribe"] * 6 + ["nospeech"] * 2
    assert batch["languages"][:3] == ["de", "fr", "en"] and batch["languages"][6:] == [None, None]
    assert batch["suspects"] == [False] * n
    suspect = fastcopy(corpus[0], custom={"suspect_by": "rate_outlier"})
    assert batch_of(CutSet.from_cuts([suspect, corpus[1]]), tok)["suspects"] == [True, False]
    assert batch["ctc_lengths"][6:].tolist() == [0, 0] and batch["ctc_valid"].all()
    assert batch["ctc_targets"][0, : batch["ctc_lengths"][0]].tolist() == tok.encode(" Hallo Welt.")
    # right padding: labels past the end are ignored, tokens padded with <|endoftext|>
    nospeech = batch["labels"][7]
    assert nospeech[:2].tolist() == [tok.no_speech, tok.eot] and (nospeech[2:] == IGNORE).all()
    assert batch["padding_ratio"] == pytest.approx(1 - batch["n_frames"].sum().item() / (n * 325))
    assert batch["audio_seconds"] == pytest.approx(sum(c.duration for c in corpus))


def test_features_equal_each_clip_alone_including_resampled_ones(corpus, tok):
    batch = batch_of(corpus, tok)
    for i, cut in enumerate(corpus):
        if cut.sampling_rate != 16000:
            continue
        alone = log_mel_spectrogram(cut.load_audio()[0])
        assert torch.allclose(batch["mel"][i, :, : alone.shape[1]], alone, atol=1e-5)
        assert (batch["mel"][i, :, alone.shape[1]:] == 0).all()
    assert batch["n_frames"][2].item() == int(corpus[2].duration * 100)  # 8 kHz clip, resampled


def test_unreadable_audio_is_dropped_and_reported(corpus, tok, tmp_path):
    cuts = list(corpus)
    cuts[1].recording.sources[0].source = str(tmp_path / "gone.flac")
    batch = batch_of(CutSet.from_cuts(cuts), tok)
    assert batch["dropped"].cut_ids == ["clip1"]
    assert "unreadable audio" in batch["dropped"].reasons[0]
    assert "clip1" not in batch["cut_ids"] and len(batch["cut_ids"]) == 7


def test_too_long_transcript_is_dropped_and_reported(corpus, tok):
    dataset = MultitaskDataset(tok, DataConfig(timestamp_rate=0.0), n_mels=80, n_text_ctx=8, train=False)
    batch = dataset[corpus]
    assert set(batch["cut_ids"]) == {"clip6", "clip7"}  # only the no-speech sequences fit in 8 tokens
    assert all("transcript too long" in r for r in batch["dropped"].reasons)


def test_spec_augment_masks_are_seeded_by_the_batch_and_keep_padding_zero(corpus, tok):
    dataset = MultitaskDataset(tok, DataConfig(), n_mels=80, train=True, seed=3)
    a, b = dataset[corpus], dataset[corpus]
    assert torch.equal(a["mel"], b["mel"]) and torch.equal(a["tokens"], b["tokens"])
    plain = batch_of(corpus, tok)
    assert not torch.equal(a["mel"], plain["mel"])
    for i, n in enumerate(a["n_frames"]):
        assert (a["mel"][i, :, n:] == 0).all()
    other_seed = MultitaskDataset(tok, DataConfig(), n_mels=80, train=True, seed=4)[corpus]
    assert not torch.equal(a["mel"], other_seed["mel"])


def test_speed_perturbation_stretches_audio_and_timestamps_alike(corpus, tok):
    options = dict(timestamp_rate=1.0, prompt_rate=0.0, translate_rate=0.0, spec_augment=False)
    plain = MultitaskDataset(tok, DataConfig(**options), n_mels=80, train=True)[corpus]
    slow = MultitaskDataset(tok, DataConfig(**options, speed_perturb=(0.5,), speed_perturb_rate=1.0),
                            n_mels=80, train=True)[corpus]
    assert slow["n_frames"].tolist() == pytest.approx([2 * n for n in plain["n_frames"].tolist()], abs=2)
    assert slow["audio_seconds"] == pytest.approx(2 * plain["audio_seconds"], rel=1e-3)
    specials = tok.specials
    for i in range(6):  # speech: <|0.00|> text <|end|>, the end twice as late
        ends = [t for t in plain["labels"][i].tolist() if t >= specials.timestamp_begin]
        slow_ends = [t for t in slow["labels"][i].tolist() if t >= specials.timestamp_begin]
        # each on the 0.02 s grid: the doubled plain time may be a step off
        assert specials.timestamp_seconds(slow_ends[-1]) == pytest.approx(2 * specials.timestamp_seconds(ends[-1]),
                                                                         abs=0.021)
    assert torch.equal(slow["ctc_targets"], plain["ctc_targets"])


def test_speed_perturbation_keeps_a_full_window_within_30_s(tmp_path, tok):
    path = tmp_path / "window.flac"
    sf.write(path, np.zeros(29 * 16000, dtype="float32"), 16000)
    recording = Recording.from_file(path)
    window = MonoCut(id="w", start=0, duration=29.0, channel=0, recording=recording, supervisions=[
        SupervisionSegment(id="w-0", recording_id=recording.id, start=1.0, duration=3.0, text="Hallo Welt.",
                           language="de")])
    options = DataConfig(speed_perturb=(0.9, 1.1), speed_perturb_rate=1.0, spec_augment=False)
    dataset = MultitaskDataset(tok, options, n_mels=80, train=True)
    for seed in range(6):  # 0.9 would make it 32.2 s: only 1.1 is drawn
        dataset.seed = seed
        assert dataset[CutSet.from_cuts([window])]["n_frames"].item() == pytest.approx(2900 / 1.1, abs=2)


def test_add_noise_reaches_the_asked_snr():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000).astype("float32")
    noise = 0.01 * rng.standard_normal(5000).astype("float32")  # shorter: looped
    mixed = add_noise(audio, noise, 10.0, random.Random(0))
    added = mixed - audio
    snr = 10 * np.log10(np.mean(audio**2) / np.mean(added**2))
    assert snr == pytest.approx(10.0, abs=1e-3) and mixed.dtype == np.float32
    assert np.array_equal(add_noise(np.zeros(100, "float32"), noise, 10.0, random.Random(0)), np.zeros(100))


def test_noise_manifest_is_mixed_into_training_audio(corpus, tok, tmp_path):
    noise_manifest = tmp_path / "noise.jsonl.gz"
    CutSet.from_cuts([c for c in corpus if not c.supervisions]).to_file(noise_manifest)
    options = DataConfig(noise=(str(noise_manifest),), noise_rate=1.0, spec_augment=False)
    noisy = MultitaskDataset(tok, options, n_mels=80, train=True)[corpus]
    clean = MultitaskDataset(tok, DataConfig(spec_augment=False), n_mels=80, train=True)[corpus]
    assert not torch.equal(noisy["mel"], clean["mel"])
    assert torch.equal(noisy["n_frames"], clean["n_frames"])
    evaluation = MultitaskDataset(tok, options, n_mels=80, train=False)[corpus]  # never in evaluation
    assert torch.equal(evaluation["mel"], MultitaskDataset(tok, DataConfig(), n_mels=80, train=False)[corpus]["mel"])


def test_sampler_covers_every_cut_and_resumes_on_the_next_batch(corpus, tok):
    options = DataConfig(max_duration=5.0, num_buckets=2)
    sampler = make_sampler(corpus, options, shuffle=True, seed=5)
    batches = [[c.id for c in b] for b in sampler]
    assert sorted(sum(batches, [])) == sorted(c.id for c in corpus)
    assert len(batches) >= 3  # 18 s of audio in batches of about 5 s

    resumed = make_sampler(corpus, options, shuffle=True, seed=5)
    iterator = iter(resumed)
    next(iterator)
    state = resumed.state_dict()
    restored = make_sampler(corpus, options, shuffle=True, seed=5)
    restored.load_state_dict(state)
    assert [[c.id for c in b] for b in restored] == batches[1:]


def test_a_set_smaller_than_its_buckets_is_sampled_a_bucket_a_cut(corpus, tmp_path):
    few = corpus.subset(first=3)
    few.to_file(tmp_path / "few.jsonl.gz")
    for cuts in (few, CutSet.from_jsonl_lazy(tmp_path / "few.jsonl.gz")):  # eager, and lazy
        batches = [[c.id for c in b] for b in make_sampler(cuts, DataConfig(max_duration=5.0, num_buckets=10),
                                                          shuffle=True)]
        assert sorted(sum(batches, [])) == sorted(c.id for c in few)


def test_loader_with_a_worker_gives_the_same_batches(corpus, tok):
    options = DataConfig(max_duration=6.0, num_buckets=2)
    dataset = MultitaskDataset(tok, options, n_mels=80, train=True, seed=1)
    in_process = list(make_loader(dataset, make_sampler(corpus, options, shuffle=False)))
    worker = list(make_loader(dataset, make_sampler(corpus, options, shuffle=False), num_workers=1))
    assert [b["cut_ids"] for b in in_process] == [b["cut_ids"] for b in worker]
    assert all(torch.equal(x["mel"], y["mel"]) for x, y in zip(in_process, worker))


def test_shar_round_trip_gives_the_same_batch(corpus, tok, tmp_path):
    export_shar(corpus, tmp_path / "shar", shard_size=3)
    assert len(list((tmp_path / "shar").glob("recording.*.tar"))) == 3
    from_shar = open_cuts(tmp_path / "shar")
    original = batch_of(corpus, tok, timestamp_rate=1.0)
    reread = batch_of(from_shar, tok, timestamp_rate=1.0)
    assert reread["cut_ids"] == original["cut_ids"]
    assert torch.allclose(reread["mel"], original["mel"], atol=1e-4)  # FLAC is lossless at 16 bits
    assert torch.equal(reread["tokens"], original["tokens"])


def test_shar_shards_are_split_across_ranks_and_reshuffled_each_epoch(corpus, tok, tmp_path):
    cuts = CutSet.from_cuts([c.with_id(f"{c.id}-{k}") for k in range(3) for c in corpus])  # 24 cuts
    export_shar(cuts, tmp_path / "shar", shard_size=2)  # 12 shards
    options = DataConfig(max_duration=30.0, num_buckets=2)
    dataset = MultitaskDataset(tok, options, n_mels=80, train=False)
    epochs = {}
    for rank in (0, 1):
        loader = make_shar_loader(tmp_path / "shar", dataset, options, num_workers=1, rank=rank, world_size=2)
        epochs[rank] = [[cut_id for batch in loader for cut_id in batch["cut_ids"]] for _ in range(2)]
    for epoch in (0, 1):  # each rank reads 6 of the 12 shards, a new draw each epoch
        mine, theirs = set(epochs[0][epoch]), set(epochs[1][epoch])
        assert len(mine) == len(theirs) == 12
        assert not mine & theirs and mine | theirs == {c.id for c in cuts}
    assert epochs[0][0] != epochs[0][1]


def test_open_cuts_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        open_cuts(tmp_path / "missing.jsonl.gz")
    with pytest.raises(FileNotFoundError, match="without lhotse Shar shards"):
        open_cuts(tmp_path)


def test_language_balancing_flattens_the_mix(corpus):
    cuts = CutSet.from_cuts([c for c in corpus if c.supervisions and c.supervisions[0].language == "de"] * 8
                            + [c for c in corpus if c.supervisions and c.supervisions[0].language == "fr"])
    balanced = balance_languages(cuts, temperature=100.0, seed=0)
    languages = [c.supervisions[0].language for _, c in zip(range(2000), balanced)]
    assert 0.4 < languages.count("fr") / 2000 < 0.6  # 1 in 9 in the data, about half after balancing


def test_nospeech_subsampling(corpus):
    assert len(subsample_nospeech(corpus, 1.0)) == 8
    kept = subsample_nospeech(corpus, 0.0).to_eager()
    assert len(kept) == 6 and all(c.supervisions for c in kept)
