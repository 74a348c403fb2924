"""The demo corpus: eSpeak synthesis (synth.py), the parallel grammar (grammar.py), make_demo_corpus on tiny corpora."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from lhotse import CutSet

from asr.data import demo, grammar, synth
from asr.data.demo import CORRUPTION_KINDS, SPLITS, Corruption, make_demo_corpus
from asr.data.grammar import LANGUAGES, Sentence, realise

TINY = dict(hours=0.01, min_eval_clips=2, progress=False)
EVERY_CLIP = Corruption(**{kind: 1 / len(CORRUPTION_KINDS) for kind in CORRUPTION_KINDS})  # rates sum to 1
SCHEMA_FIELDS = {"translation", "source", "weak", "corruption", "true_text", "true_language"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seed 0, every train speech clip mislabelled, made in this process."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "a", seed=0, corruption=EVERY_CLIP, workers=1, **TINY)


@pytest.fixture(scope="module")
def cuts(corpus):
    return {split: CutSet.from_file(corpus.manifests[split]) for split in SPLITS}


def _manifest_lines(corpus, split) -> list[str]:
    """The manifest's JSON lines with the corpus directory taken out of the audio paths."""
    with gzip.open(corpus.manifests[split], "rt") as f:
        return [line.replace(str(corpus.out_dir.resolve()), "<dir>") for line in f]


def _audio_files(corpus) -> dict[str, bytes]:
    return {p.relative_to(corpus.out_dir).as_posix(): p.read_bytes() for p in sorted(corpus.out_dir.glob("audio/*/*"))}


def _true_english(supervision) -> str:
    custom = supervision.custom
    return custom["true_text"] if custom["true_language"] == "en" else custom["translation"]


# ---- synthesis --------------------------------------------------------------------------------------


def test_synthesis_is_trimmed_16khz_speech_that_grows_with_the_text():
    short = synth.synthesize("The cat.", "en")
    long = synth.synthesize("Every morning the grandmother photographs the grandfather at the station.", "en")
    assert short.dtype == np.float32 and short.ndim == 1 and synth.SAMPLE_RATE == 16000
    assert 0.3 < len(short) / 16000 < 1.5 < 3.0 < len(long) / 16000 < 6.0
    assert np.sqrt(np.mean(long**2)) > 0.02  # not silence
    assert np.abs(long[:160]).max() > synth.TRIM_LEVEL and np.abs(long[-160:]).max() > synth.TRIM_LEVEL

    with synth._espeak() as engine:
        raw = engine.synth("The cat.", "en", 175, 50)  # eSpeak's own 22050 Hz samples
    trimmed = synth.trim_silence(raw / 32768.0, 22050)
    assert len(trimmed) < len(raw) and abs(len(short) / 16000 - len(trimmed) / 22050) < 1e-3


def test_voices_rates_and_pitches_change_the_audio_and_nothing_else_does():
    text = "Heute sieht die Katze den Hund im Garten."
    m1 = synth.synthesize(text, "de", "m1")
    for other in (synth.synthesize(text, "de", "f3"), synth.synthesize(text, "de", "m1", pitch=70)):
        n = min(len(m1), len(other))
        assert not np.allclose(m1[:n], other[:n], atol=1e-2)
    assert np.array_equal(m1, synth.synthesize(text, "de", "m1"))  # whatever was spoken before
    assert len(synth.synthesize(text, "de", rate=190)) < 0.85 * len(synth.synthesize(text, "de", rate=130))
    with pytest.raises(ValueError):
        synth.synthesize(text, "de", rate=50)


def test_the_corpus_voice_variants_exist():
    variants = set(synth.voice_variants())
    assert {"m1", "f1", "m7"} <= variants
    assert set(demo.VARIANTS["train"]) | set(demo.VARIANTS["test"]) <= variants
    assert set(demo.VARIANTS["train"]).isdisjoint(demo.VARIANTS["test"])  # the test's voices are unheard


def test_the_training_voices_keep_the_tempo():
    """A voice that speaks slower or faster than the rest would look like a wrong label to the
    cleaning's speaking-rate rules; every training voice stays within a tenth of m1's duration."""
    text = "Every morning the grandmother waits for the teacher at the station."
    reference = len(synth.synthesize(text, "en", "m1"))
    ratios = {v: len(synth.synthesize(text, "en", v)) / reference for v in demo.VARIANTS["train"]}
    assert {v: r for v, r in ratios.items() if not 0.9 <= r <= 1.1} == {}


# ---- grammar ----------------------------------------------------------------------------------------

EXACT = {
    Sentence(time=0, subject=0, verb=0, obj=1, place=0): (
        "Today the cat sees the dog in the garden.",
        "Heute sieht die Katze den Hund im Garten.",
        "Aujourd'hui, le chat voit le chien dans le jardin.",
        "Hoy el gato ve al perro en el jardín.",
        "Oggi il gatto vede il cane in giardino.",
        "Сегодня кошка видит собаку в саду.",
    ),
    Sentence(time=4, subject=12, verb=5, obj=5, place=6): (
        "Every morning the grandmother waits for the boy at the station.",
        "Jeden Morgen wartet die Großmutter auf den Jungen am Bahnhof.",
        "Chaque matin, la grand-mère attend le garçon à la gare.",
        "Cada mañana la abuela espera al chico en la estación.",
        "Ogni mattina la nonna aspetta il ragazzo alla stazione.",
        "Каждое утро бабушка ждёт мальчика на вокзале.",
    ),
    Sentence(time=None, subject=2, verb=3, obj=18, place=None): (
        "The bird looks at the queen.",
        "Der Vogel betrachtet die Königin.",
        "L'oiseau regarde la reine.",
        "El pájaro mira a la reina.",
        "L'uccello guarda la regina.",
        "Птица смотрит на королеву.",
    ),
    Sentence(time=2, subject=17, verb=12, obj=14, place=4): (
        "Often the king greets the neighbour at the market.",
        "Oft begrüßt der König den Nachbarn auf dem Markt.",
        "Souvent, le roi salue le voisin au marché.",
        "A menudo el rey saluda al vecino en el mercado.",
        "Spesso il re saluta il vicino al mercato.",
        "Часто король приветствует соседа на рынке.",
    ),
}


@pytest.mark.parametrize("sentence", EXACT)
def test_one_sentence_in_six_languages(sentence):
    assert tuple(realise(sentence, language) for language in LANGUAGES) == EXACT[sentence]


def test_distinct_tuples_give_distinct_well_formed_sentences():
    rng = np.random.default_rng(0)
    sentences = {grammar.sample_sentence(rng, "train") for _ in range(500)}
    for language in LANGUAGES:
        texts = {realise(s, language) for s in sentences}
        assert len(texts) == len(sentences)
        assert all(t[0].isupper() and t.endswith(".") and "  " not in t and ".." not in t for t in texts)
    assert grammar.n_sentences() > 100_000


def test_every_sentence_has_one_split_with_the_planned_shares():
    rng = np.random.default_rng(0)
    for split in SPLITS:
        assert all(grammar.split_of(grammar.sample_sentence(rng, split)) == split for _ in range(30))
    grid = [Sentence(t, s, v, o, None) for t in (None, 0) for s in range(20) for v in range(15) for o in range(20)]
    shares = {split: sum(grammar.split_of(s) == split for s in grid) / len(grid) for split in SPLITS}
    assert shares == pytest.approx(grammar.SPLIT_SHARES, abs=0.01)


# ---- the corpus -------------------------------------------------------------------------------------


def test_manifests_follow_the_schema(corpus, cuts):
    for split in SPLITS:
        assert len({cut.id for cut in cuts[split]}) == len(cuts[split])
        for cut in cuts[split]:
            path = Path(cut.recording.sources[0].source)
            assert path == corpus.out_dir.resolve() / "audio" / split / f"{cut.id}.flac"
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
            assert cut.start == 0 and cut.duration == cut.recording.duration == info.frames / 16000
            assert cut.custom["noise"] in demo.NOISES[split]
            assert bool(cut.custom.get("nospeech")) == (not cut.supervisions)
            for s in cut.supervisions:
                assert set(s.custom) == SCHEMA_FIELDS and s.recording_id == cut.id
                assert s.custom["source"] == "demo" and s.custom["weak"] == (split == "train")
                assert s.language in LANGUAGES and s.custom["true_language"] in LANGUAGES
                assert 0 < s.start and s.end < cut.duration
                if s.custom["true_language"] == "en":
                    assert s.custom["translation"] is None
                else:
                    english = s.custom["translation"].rstrip(".").lower().split()
                    assert set(english) <= set(grammar.vocabulary("en"))


def test_about_a_tenth_of_the_cuts_have_no_speech(cuts):
    for split in SPLITS:
        silent = [cut for cut in cuts[split] if cut.custom.get("nospeech")]
        assert silent and 0.04 <= len(silent) / len(cuts[split]) <= 0.2
        assert {cut.custom["sound"] for cut in silent} <= set(demo.NOSPEECH_SOUNDS)


def test_default_size_and_shares():
    jobs = demo._plan(Path("/nowhere"), hours=1.0, seed=0, corruption=None, min_eval_clips=30)
    for split in SPLITS:
        kinds = [job.kind for job in jobs if job.split == split]
        assert kinds.count("nospeech") / len(kinds) == pytest.approx(0.1, abs=0.01)
        speech = [job.language for job in jobs if job.split == split and job.kind == "speech"]
        assert all(speech.count(language) >= 30 for language in LANGUAGES)
    train = [job.kind for job in jobs if job.split == "train"]
    speech, longform = train.count("speech") * demo.MEAN_CLIP_SECONDS, train.count("longform") * 55
    assert 0.9 * 3600 < speech + longform < 1.1 * 3600 and 0.25 < longform / (speech + longform) < 0.35
    for split in ("dev", "test"):
        assert [job.kind for job in jobs if job.split == split].count("longform") >= demo.MIN_EVAL_LONGFORM


def test_splits_share_no_sentence_voice_or_noise(cuts):
    sentences, voices, noises = {}, {}, {}
    for split in SPLITS:
        supervisions = [s for cut in cuts[split] for s in cut.supervisions]
        supervisions = [s for s in supervisions if s.custom["corruption"] != "other_clip"]  # its translation is wrong
        sentences[split] = {_true_english(s) for s in supervisions}
        voices[split] = {s.speaker for s in supervisions}
        noises[split] = {cut.custom["noise"] for cut in cuts[split]}
    assert not sentences["train"] & sentences["dev"]
    assert not (sentences["train"] | sentences["dev"]) & sentences["test"]
    assert voices["test"] and not voices["test"] & (voices["train"] | voices["dev"])
    assert noises["test"] and not noises["test"] & (noises["train"] | noises["dev"])


def test_longform_cuts_hold_timed_sentences_of_one_language(cuts):
    for split in SPLITS:
        longform = [cut for cut in cuts[split] if len(cut.supervisions) > 1]
        assert longform
        for cut in longform:
            supervisions = cut.supervisions
            assert 30 < cut.duration <= 91 and len(supervisions) >= 3
            assert len({s.language for s in supervisions} | {s.speaker for s in supervisions}) == 2
            assert all(b.start - a.end >= demo.PAUSE[0] - 1e-3 for a, b in zip(supervisions, supervisions[1:]))
            assert all(s.custom["corruption"] is None for s in supervisions)


def test_longform_timestamps_fit_the_speech(cuts):
    def level(audio, start, end):  # dB
        return 10 * np.log10(np.mean(audio[int(start * 16000) : int(end * 16000)] ** 2))

    for split in SPLITS:
        cut = next(cut for cut in cuts[split] if len(cut.supervisions) > 1)
        audio, supervisions = np.diff(cut.load_audio()[0]), cut.supervisions  # whitens brown noise, drops hum
        floor = max(level(audio, a.end, b.start) for a, b in zip(supervisions, supervisions[1:]))
        for s in supervisions:
            assert level(audio, s.start, s.end) > floor + 3
            assert level(audio, s.start - 0.05, s.start - 0.01) < floor + 1.5  # no speech just before the start
            assert level(audio, s.end + 0.01, s.end + 0.05) < floor + 1.5  # nor just after the end


def test_longform_timestamps_are_exact_to_20_ms(tmp_path, monkeypatch):
    monkeypatch.setitem(demo.SNR_DB, "dev", (80.0, 80.0))  # noise far below the speech
    (tmp_path / "audio" / "dev").mkdir(parents=True)
    job = demo._Job(tmp_path, seed=0, split="dev", index=0, kind="longform", language="fr", corruption=None)
    cut = demo._make_cut(job)
    audio = cut.load_audio()[0]

    def peak(start, end):
        return np.abs(audio[int(start * 16000) : int(end * 16000)]).max()

    for s in cut.supervisions:
        assert peak(s.start - 0.1, s.start - 0.002) < 2e-4 and peak(s.end + 0.002, s.end + 0.1) < 2e-4
        assert peak(s.start, s.start + 0.02) > 1e-3 and peak(s.end - 0.02, s.end) > 1e-3


def test_the_summary_and_readme_match_the_manifests(corpus, cuts):
    for split in SPLITS:
        assert sum(corpus.cuts[split].values()) == len(cuts[split])
        assert corpus.hours[split] == pytest.approx(sum(cut.duration for cut in cuts[split]) / 3600)
    corrupted = [s.custom["corruption"] for cut in cuts["train"] for s in cut.supervisions]
    corrupted = [kind for kind in corrupted if kind]
    assert corpus.corruptions == {kind: corrupted.count(kind) for kind in CORRUPTION_KINDS}
    readme = (corpus.out_dir / "README.md").read_text()
    assert f"| train | {corpus.hours['train']:.3f} | {corpus.cuts['train']['speech']} |" in readme
    assert corpus.speed > 0 and not corpus.reused


def test_an_existing_corpus_is_reused(corpus):
    manifest_time = corpus.manifests["train"].stat().st_mtime_ns
    again = make_demo_corpus(corpus.out_dir, seed=0, corruption=EVERY_CLIP, workers=1, **TINY)
    assert again.reused and again.cuts == corpus.cuts and again.manifests == corpus.manifests
    assert corpus.manifests["train"].stat().st_mtime_ns == manifest_time
    params = json.loads((corpus.out_dir / "demo.json").read_text())["params"]
    assert demo._reuse(corpus.out_dir, params) is not None
    with pytest.raises(ValueError, match=r"other settings is there \(seed 0 -> 1\); choose another folder"):
        make_demo_corpus(corpus.out_dir, seed=1, corruption=EVERY_CLIP, workers=1, **TINY)
    assert corpus.manifests["train"].stat().st_mtime_ns == manifest_time  # nothing was touched


# ---- wrong labels -----------------------------------------------------------------------------------


def test_train_speech_clips_get_recorded_wrong_labels_and_nothing_else_does(cuts):
    for split in SPLITS:
        for cut in cuts[split]:
            for s in cut.supervisions:
                kind, truth = s.custom["corruption"], (s.custom["true_text"], s.custom["true_language"])
                if split == "train" and len(cut.supervisions) == 1:  # all get one: the rates sum to 1
                    assert kind in CORRUPTION_KINDS and (s.text, s.language) != truth
                else:
                    assert kind is None and (s.text, s.language) == truth
    kinds = {cut.supervisions[0].custom["corruption"] for cut in cuts["train"] if len(cut.supervisions) == 1}
    assert len(kinds) >= 4


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_each_kind_of_wrong_label(kind):
    rng = np.random.default_rng(0)
    for i in range(60):
        sentence, language = grammar.sample_sentence(rng, "train"), LANGUAGES[i % len(LANGUAGES)]
        truth = demo._true_label(sentence, language)
        label = demo._corrupt(kind, sentence, truth, "train", rng)
        words, true_words = label.text.split(), truth.text.split()
        assert (label.language != truth.language) == (kind == "language")
        assert (label.text == truth.text) == (kind == "language")
        if kind == "language":
            assert label.language in LANGUAGES
        elif kind == "other_clip":
            assert label.translation != truth.translation or language == "en"
        elif kind == "case_punct":
            assert label.text in (label.text.lower(), label.text.upper()) and not re.search(r"[.,]", label.text)
            assert label.text.lower() == re.sub(r"[.,]", "", truth.text).lower()
        elif kind == "truncate":
            assert words == true_words[: len(words)] and 0.25 * len(true_words) <= len(words) < len(true_words)
        elif kind == "substitute":
            changed = sum(a != b for a, b in zip(words, true_words))
            assert len(words) == len(true_words)
            assert max(1, round(0.3 * len(true_words))) <= changed <= round(0.5 * len(true_words)) + 1
        else:  # drop, insert: the shorter one is what is left of the longer
            shorter, longer = (words, true_words) if kind == "drop" else (true_words, words)
            rest = iter(longer)
            assert all(word in rest for word in shorter)
            assert len(longer) - len(shorter) >= max(1, round(0.3 * len(true_words)))


def test_rates_must_be_probabilities_that_sum_to_at_most_one():
    assert Corruption().total == pytest.approx(0.2)
    for bad in (dict(drop=-0.1), dict(drop=0.6, insert=0.5)):
        with pytest.raises(ValueError):
            Corruption(**bad)


# ---- determinism ------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_corpus_with_any_number_of_workers(corpus, tmp_path):
    again = make_demo_corpus(tmp_path, seed=0, corruption=EVERY_CLIP, workers=2, **TINY)
    for split in SPLITS:
        assert _manifest_lines(again, split) == _manifest_lines(corpus, split)
    assert _audio_files(again) == _audio_files(corpus)


def test_labels_off_change_no_audio_and_no_label_is_wrong(corpus, cuts, tmp_path):
    off = Corruption(**{kind: 0.0 for kind in CORRUPTION_KINDS})
    clean = make_demo_corpus(tmp_path, seed=0, corruption=off, workers=1, **TINY)
    assert _audio_files(clean) == _audio_files(corpus)
    for split in SPLITS:
        for cut, corrupted in zip(CutSet.from_file(clean.manifests[split]), cuts[split]):
            for s, t in zip(cut.supervisions, corrupted.supervisions, strict=True):
                assert s.custom["corruption"] is None and s.custom["true_text"] == t.custom["true_text"]
                assert (s.text, s.language) == (t.custom["true_text"], t.custom["true_language"])
    assert not any(clean.corruptions.values())


def test_another_seed_gives_another_corpus(corpus, tmp_path):
    other = make_demo_corpus(tmp_path, seed=1, corruption=EVERY_CLIP, workers=1, **TINY)
    assert all(_manifest_lines(other, split) != _manifest_lines(corpus, split) for split in SPLITS)
    first = "audio/train/demo-train-00000.flac"
    assert _audio_files(other)[first] != _audio_files(corpus)[first]


def test_the_job_makes_the_corpus_default_size():
    from asr.config import JobConfig

    assert JobConfig().hours == demo.DEFAULT_HOURS  # a twin: asr.config does not import the corpus module
