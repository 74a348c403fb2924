import json
import math

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

import asr.relabel as relabel
from asr.cli.prepare import main
from asr.data.dataset import open_cuts
from asr.relabel import RelabelRules, _Heard, candidates, relabel_cuts, training_set
from tests.test_scoring import TEXTS, tiny_scorer

ANY = RelabelRules(min_avg_logprob=-math.inf, max_compression_ratio=math.inf, max_no_speech_prob=1.0,
                   min_language_prob=0.0)


def _cut(root, name, seconds, spans, custom=None, corruption=None, rng=np.random.default_rng(0)):
    path = root / f"{name}.wav"
    sf.write(path, (0.1 * rng.standard_normal(round(16000 * seconds))).astype("float32"), 16000)
    recording = Recording.from_file(path, recording_id=name)
    supervisions = [SupervisionSegment(
        id=f"{name}-{k}", recording_id=name, start=start, duration=duration, text=text, language="de",
        custom={"translation": "Today the cat sees the dog.", "corruption": corruption, "true_text": TEXTS[0],
                "true_language": "de"})
        for k, (start, duration, text) in enumerate(spans)]
    return MonoCut(id=name, start=0, duration=seconds, channel=0, recording=recording,
                   supervisions=supervisions, custom=custom)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("relabel")
    model, tokenizer = tiny_scorer(root)
    kept = [
        _cut(root, "normal", 1.5, [(0.2, 1.0, TEXTS[1])]),
        _cut(root, "only-translation", 2.0, [(0.1, 1.5, "heute sieht die katze den hund")],
             {"task": "translate", "transcript_dropped_by": "lower_case",
              "transcript_dropped_reasons": ["lower_case"]}, corruption="case_punct"),
        _cut(root, "pair", 1.0, [(0.0, 1.0, "Today.")], {"task": "translate"}),  # a translation pair: no drop
    ]
    dropped = [
        _cut(root, "too-long", 1.0, [(0.0, 1.0, TEXTS[2])], {"dropped_by": "duration", "dropped_reasons": ["duration"]}),
        _cut(root, "two", 3.0, [(0.0, 1.2, "Heute die Katze."), (1.5, 1.4, "Der Vater liest.")],
             {"dropped_by": "rate_outlier", "dropped_reasons": ["rate_outlier", "lower_case"]}, corruption="drop"),
        _cut(root, "silent", 1.0, [], {"dropped_by": "empty_text", "dropped_reasons": ["empty_text"]}),
    ]
    CutSet.from_cuts(kept).to_file(root / "kept_cuts.jsonl.gz")
    CutSet.from_cuts(dropped).to_file(root / "dropped_cuts.jsonl.gz")
    return root, model, tokenizer, kept, dropped


def test_the_candidates_are_the_windows_a_rule_on_the_text_took_the_transcript_from(corpus):
    _, _, _, kept, dropped = corpus
    assert [c.id for c in candidates(kept, dropped)] == ["only-translation", "two"]


def test_each_supervision_is_decoded_over_its_own_span_and_nothing_is_lost(corpus, monkeypatch):
    _, model, tokenizer, kept, dropped = corpus
    loaded = []
    original = relabel.load_cut_audio
    monkeypatch.setattr(relabel, "load_cut_audio", lambda cut: loaded.append((cut.start, cut.duration)) or original(cut))
    chosen = candidates(kept, dropped)
    result = relabel_cuts(model, tokenizer, chosen, ANY, beam_size=2)
    assert [tuple(round(x, 3) for x in span) for span in sorted(loaded)] == [(0.0, 1.2), (0.1, 1.5), (1.5, 1.4)]
    ids = [c.id for c in result.relabelled] + [c.id for c in result.rejected]
    assert sorted(ids) == ["only-translation", "two"]
    assert result.report["candidates"] == 2
    assert result.report["relabelled"] + sum(result.report["rejected"].values()) == 2
    assert set(result.report["rejected"]) <= {"empty transcript"}  # an untrained model may say nothing


def _heard(text, logprob=-0.2, language="de", language_prob=0.9, no_speech=0.01, ratio=1.0):
    return _Heard(text, language, language_prob, no_speech, logprob, ratio)


def test_a_window_takes_the_models_transcripts_only_when_each_passes(corpus, monkeypatch):
    _, model, tokenizer, kept, dropped = corpus
    heard = {("only-translation", 0): _heard(TEXTS[0]),
             ("two", 0): _heard("Heute sieht die Katze."), ("two", 1): _heard("Der Vater liest.", logprob=-1.5)}
    monkeypatch.setattr(relabel, "_hear", lambda *args: (heard, {}))
    result = relabel_cuts(model, tokenizer, candidates(kept, dropped))
    assert [c.id for c in result.rejected] == ["two"]
    assert result.rejected[0].custom["relabel_rejected"] == "low log-probability"
    assert result.report["rejected"] == {"low log-probability": 1}
    cut = result.relabelled[0]
    sup = cut.supervisions[0]
    assert sup.text == TEXTS[0] and sup.custom["original_text"] == "heute sieht die katze den hund"
    assert sup.custom["translation"] == "Today the cat sees the dog." and (sup.start, sup.duration) == (0.1, 1.5)
    assert "original_language" not in sup.custom
    assert cut.custom == {"relabelled_from": ["lower_case"]}  # no longer translation-only: every task trains
    truth = result.report["evaluation"]
    assert truth["relabelled"]["equal_to_truth"] == 1 and truth["relabelled"]["wer_after"] == 0.0
    assert truth["relabelled"]["wer_before"] == 0.0  # case alone: WER normalises it away
    assert truth["rejected"] == {"cuts": 1, "corrupt": 1}


def test_the_language_heard_replaces_the_label_and_is_recorded(corpus, monkeypatch):
    _, model, tokenizer, kept, dropped = corpus
    heard = {("two", 0): _heard("Oggi il gatto.", language="it"), ("two", 1): _heard("Il padre legge.", language="it")}
    monkeypatch.setattr(relabel, "_hear", lambda *args: (heard, {}))
    result = relabel_cuts(model, tokenizer, [dropped[1]])
    sups = result.relabelled[0].supervisions
    assert [s.language for s in sups] == ["it", "it"] and all(s.custom["original_language"] == "de" for s in sups)
    assert result.relabelled[0].custom["relabelled_from"] == ["rate_outlier", "lower_case"]
    assert result.report["language_changed"] == 2
    assert result.report["evaluation"]["relabelled"]["language_right"] == 0


def test_a_transcript_one_word_from_the_label_confirms_the_labels_words(corpus, monkeypatch):
    _, model, tokenizer, _, dropped = corpus
    # "Heute die Katze." / "Der Vater liest.": one word off, then two
    heard = {("two", 0): _heard("Heute sieht die Katze."), ("two", 1): _heard("Der Onkel schreibt.")}
    monkeypatch.setattr(relabel, "_hear", lambda *args: (heard, {}))
    result = relabel_cuts(model, tokenizer, [dropped[1]])
    first, second = result.relabelled[0].supervisions
    assert (first.text, first.custom["relabel"].get("label_confirmed")) == ("Heute die Katze.", True)
    assert (second.text, second.custom["relabel"].get("label_confirmed")) == ("Der Onkel schreibt.", None)
    assert result.report["labels_confirmed"] == 1
    never = relabel_cuts(model, tokenizer, [dropped[1]], RelabelRules(keep_label_within=-1))
    assert [s.text for s in never.relabelled[0].supervisions] == ["Heute sieht die Katze.", "Der Onkel schreibt."]
    assert never.report["labels_confirmed"] == 0


def test_a_confirmed_label_keeps_its_words_written_as_the_model_writes_them():
    one = RelabelRules(keep_label_within=1)
    # a label stripped of case and punctuation, the model one word wrong: the label's word in the model's writing
    assert one.confirmed(_heard("Heute sieht die Maus den Hund."), "heute sieht die katze den hund") == \
        "Heute sieht die katze den Hund."
    assert one.confirmed(_heard("Heute sieht die Katze den Hund."), "HEUTE SIEHT DIE KATZE DEN HUND") == \
        "Heute sieht die Katze den Hund."
    assert one.confirmed(_heard("Der Vater liest."), "Der Vater liest ein Buch.") is None  # two words left out
    assert one.confirmed(_heard("猫が見る", language="ja"), "猫が見た") == "猫が見た"  # characters
    assert one.confirmed(_heard(""), "Heute.") is None
    assert RelabelRules(keep_label_within=0).confirmed(_heard("Heute – die Katze"), "heute – die katze.") == \
        "Heute – die Katze"
    with pytest.raises(ValueError, match="keep_label_within"):
        RelabelRules(keep_label_within=-2)


def test_the_rules_are_checked_in_order_with_inclusive_bounds():
    rules = RelabelRules()
    assert rules.failed(_heard("a", logprob=-1.0, no_speech=0.5, language_prob=0.5, ratio=2.4)) is None
    assert rules.failed(_heard("")) == "empty transcript"
    assert rules.failed(_heard("a", no_speech=0.51, logprob=-3)) == "no speech heard"
    assert rules.failed(_heard("a", language_prob=0.49, logprob=-3)) == "language unsure"
    assert rules.failed(_heard("a", logprob=-1.01, ratio=9)) == "low log-probability"
    assert rules.failed(_heard("a", ratio=2.41)) == "repetitive"
    with pytest.raises(ValueError, match="max_no_speech_prob"):
        RelabelRules(max_no_speech_prob=1.5)


def test_the_training_set_puts_relabelled_windows_in_place_of_their_kept_selves(corpus):
    _, _, _, kept, dropped = corpus
    mended = [relabel._relabelled(c, [_heard("x")] * len(c.supervisions), RelabelRules()) for c in (kept[1], dropped[1])]
    out = training_set(kept, mended)
    assert [c.id for c in out] == ["normal", "only-translation", "pair", "two"]
    assert out["only-translation"].custom == {"relabelled_from": ["lower_case"]}
    assert out["normal"].supervisions[0].text == TEXTS[1] and len(out) == 4


def test_asr_prepare_relabel_writes_the_second_rounds_training_set(corpus, tmp_path, capsys):
    root = corpus[0]
    args = ["relabel", str(root), "--model", str(root / "model.pt"), "--out", str(tmp_path / "out"),
            "--beam-size", "2", "--min-avg-logprob=-1e9", "--max-compression-ratio", "1e9",
            "--min-language-prob", "0", "--max-no-speech-prob", "1", "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["candidates"] == 2 and report["rules"]["min_avg_logprob"] == -1e9
    relabelled = {c.id for c in open_cuts(tmp_path / "out" / "relabelled_cuts.jsonl.gz")}
    rejected = {c.id for c in open_cuts(tmp_path / "out" / "rejected_cuts.jsonl.gz")}
    assert relabelled | rejected == {"only-translation", "two"} and not relabelled & rejected
    train = [c.id for c in open_cuts(tmp_path / "out" / "train_cuts.jsonl.gz")]
    assert train == ["normal", "only-translation", "pair", *sorted(relabelled - {"only-translation"})]
    assert "relabelled" in capsys.readouterr().out
    assert "# Relabelling report" in (tmp_path / "out" / "report.md").read_text()
    assert main(["relabel", str(root), "--model", str(root / "model.pt"), "--out", str(tmp_path / "x"),
                 "--min-language-prob", "2"]) == 2


def test_a_second_rounds_training_set_can_start_from_another_kept_set(corpus, tmp_path):
    root, _, _, kept, _ = corpus
    CutSet.from_cuts(kept[:1]).to_file(tmp_path / "scored_kept.jsonl.gz")  # what a scoring kept
    relabel.relabel_checkpoint(root / "model.pt", root, tmp_path / "out", ANY, beam_size=2, progress=False,
                               kept=tmp_path / "scored_kept.jsonl.gz")
    relabelled = [c.id for c in open_cuts(tmp_path / "out" / "relabelled_cuts.jsonl.gz")]
    assert [c.id for c in open_cuts(tmp_path / "out" / "train_cuts.jsonl.gz")] == ["normal", *relabelled]
