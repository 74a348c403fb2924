import json

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from asr.checkpoint import load, save
from asr.cli.eval import main
from asr.decoding import DecodingOptions, decode_features
from asr.decoding.writers import to_srt
from asr.evaluate import evaluate
from asr.evaluate.evaluate import evaluate_cuts
from asr.evaluate.metrics import translation_scores, word_error_rates
from asr.model import Model, ModelDims
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = {"de": ("Hallo Welt.", "Hello world."), "fr": ("Bonjour le monde.", "Hello world.")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    tokenizer = Tokenizer.from_sentencepiece(train_sentencepiece(
        [" " + t for pair in TEXTS.values() for t in pair] * 20, vocab_size=300))
    torch.manual_seed(0)
    dims = ModelDims(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    save(root / "model.pt", Model(dims), tokenizer)
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(6):
        path = root / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(16000 + 4000 * i)).astype("float32"), 16000)
        recording = Recording.from_file(path)
        language = ("de", "fr", None)[i % 3]
        supervisions = [] if language is None else [SupervisionSegment(
            id=f"s{i}", recording_id=recording.id, start=0, duration=recording.duration, text=TEXTS[language][0],
            language=language, custom={"translation": TEXTS[language][1]})]
        cuts.append(MonoCut(id=f"c{i}", start=0, duration=recording.duration, channel=0, recording=recording,
                            supervisions=supervisions))
    CutSet.from_cuts(cuts).to_file(root / "cuts.jsonl.gz")
    return root


def test_eval_writes_metrics_report_plots_and_hypotheses(setup, capsys):
    out = setup / "out"
    code = main(["--model", str(setup / "model.pt"), "--manifest", str(setup / "cuts.jsonl.gz"), "--out", str(out),
                 "--tasks", "transcribe,translate,lid,nospeech"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["wer"]["languages"]) == {"de", "fr"}
    assert metrics["language_id"]["n"] == 4
    counts = metrics["no_speech"]
    assert counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == 6 and counts["tp"] + counts["fn"] == 2
    assert metrics["translation"]["n"] == 4
    rows = [json.loads(line) for line in (out / "hyps.jsonl").read_text().splitlines()]
    # By source language: each group scored on its own cuts (c0, c3 German; c1, c4 French)
    by_language = metrics["translation"]["languages"]
    assert {language: group["n"] for language, group in by_language.items()} == {"de": 2, "fr": 2}
    for language, ids in (("de", {"c0", "c3"}), ("fr", {"c1", "c4"})):
        pairs = [(r["reference"], r["hypothesis"]) for r in rows if r["task"] == "translate" and r["id"] in ids]
        assert by_language[language] == {**translation_scores(*map(list, zip(*pairs))), "n": 2}
    assert sorted(r["task"] for r in rows) == ["nospeech"] * 2 + ["transcribe"] * 4 + ["translate"] * 4
    assert all(abs(sum(r["language_probs"].values()) - 1) < 1e-4 for r in rows)
    assert {"wer_by_language.png", "lid_confusion.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert "report:" in capsys.readouterr().out


def test_batches_of_one_language_give_each_cut_what_it_gets_alone_in_the_manifest_order(setup, monkeypatch):
    model, tokenizer, _ = load(setup / "model.pt")
    calls = []

    def counted(model, xa, *args):
        calls.append(len(xa))
        return decode_features(model, xa, *args)

    monkeypatch.setattr(evaluate, "decode_features", counted)
    cuts = CutSet.from_file(setup / "cuts.jsonl.gz")
    options = DecodingOptions(without_timestamps=True, sample_len=6)
    tasks = ("transcribe", "translate", "lid", "nospeech")
    _, alone = evaluate_cuts(model, tokenizer, cuts, tasks, batch_size=1, options=options)
    calls.clear()
    _, batched = evaluate_cuts(model, tokenizer, cuts, tasks, batch_size=2, options=options)
    assert calls == [2, 2, 2, 2]  # de (c0, c3) and fr (c1, c4), each task in one call; silence (c2, c5) in none
    assert [(r["id"], r["task"]) for r in batched] == [(r["id"], r["task"]) for r in alone]
    assert [r["id"] for r in batched if r["task"] != "translate"] == [c.id for c in cuts]  # c0 de, c1 fr, c2 none...
    assert [r["hypothesis"] for r in batched] == [r["hypothesis"] for r in alone]


def test_group_by_scores_the_wer_per_value_of_a_custom_key(setup, tmp_path):
    cuts = list(CutSet.from_file(setup / "cuts.jsonl.gz"))
    for i, cut in enumerate(cuts):
        if i != 4:  # c4 (fr) has no noise key: its own "(none)" group
            cut.custom = {"noise": "hum" if i < 2 else "brown"}
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    out = tmp_path / "out"
    assert main(["--model", str(setup / "model.pt"), "--manifest", str(tmp_path / "cuts.jsonl.gz"),
                 "--out", str(out), "--tasks", "transcribe", "--group_by", "noise"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    groups = metrics["wer_by"]["groups"]
    assert metrics["wer_by"]["key"] == "noise" and set(groups) == {"hum", "brown", "(none)"}
    speech = {"hum": ["c0", "c1"], "brown": ["c3"], "(none)": ["c4"]}  # c2 and c5 have no speech
    assert {value: g["pooled"]["utterances"] for value, g in groups.items()} == {k: len(v) for k, v in speech.items()}
    assert set(groups["hum"]["languages"]) == {"de", "fr"} and set(groups["brown"]["languages"]) == {"de"}
    rows = {r["id"]: r for r in map(json.loads, (out / "hyps.jsonl").read_text().splitlines())}
    for value, ids in speech.items():  # each group's errors are its own cuts' errors
        alone = word_error_rates([rows[i]["reference"] for i in ids], [rows[i]["hypothesis"] for i in ids],
                                 [rows[i]["reference_language"] for i in ids])
        assert groups[value]["pooled"]["word_errors"] == alone["pooled"]["word_errors"]
    assert "## Transcription by noise" in (out / "report.md").read_text()


def test_unreadable_cut_is_reported_and_the_rest_scored(setup, tmp_path):
    cuts = list(CutSet.from_file(setup / "cuts.jsonl.gz"))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    cuts[0].recording.sources[0].source = str(broken)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    code = main(["--model", str(setup / "model.pt"), "--manifest", str(tmp_path / "cuts.jsonl.gz"),
                 "--out", str(tmp_path / "out"), "--tasks", "lid"])
    assert code == 1
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [f["id"] for f in metrics["failed_cuts"]] == ["c0"] and metrics["language_id"]["n"] == 3


def test_compare_prints_the_difference_table(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps({"wer": {"pooled": {"wer": 0.25}}}))
    (tmp_path / "b.json").write_text(json.dumps({"wer": {"pooled": {"wer": 0.2}}}))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert "wer.pooled.wer" in table and "0.25" in table and "-0.05" in table


def test_compare_of_three_runs_prints_one_headline_row_each(tmp_path, capsys):
    for name, wer in (("weak", 0.12), ("true", 0.1), ("raw", 0.3)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"wer": {"mean_over_languages": {"wer": wer}, "languages": {"de": {"wer": wer / 2}, "fr": {"wer": wer}}},
             "translation": {"bleu": 40.0}}))
    assert main(["compare", *(f"{n} labels={tmp_path / n}.json" for n in ("weak", "true", "raw"))]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("| run | WER, mean over languages | WER, worst language | X->English BLEU")
    assert rows[2].startswith("| weak labels | 12.00% | 12.00% | 40.00 | – |")
    assert rows[4].startswith("| raw labels | 30.00% | 30.00% |")
    assert rows[5:] == ["", f"no test-set intervals: no hyps.jsonl beside {tmp_path / 'hyps.jsonl'}, "
                        f"{tmp_path / 'hyps.jsonl'}, {tmp_path / 'hyps.jsonl'}"]


def test_compare_gives_test_set_intervals_where_the_hypotheses_are_there(tmp_path, capsys):
    """Each run's hyps.jsonl beside its metrics.json: a table of differences from the first row (the
    weak run translated and transcribed 6 of 30 cuts worse), over the cuts both scored."""
    references = [("de", "der hund sieht die katze", "The dog sees the cat."),
                  ("fr", "le chien voit le chat", "The dog sees the cat today."),
                  ("de", "die katze schläft heute", "The cat sleeps today.")] * 10
    for name, wrong in (("true", 0), ("weak", 6)):
        folder = tmp_path / name
        folder.mkdir()
        rows = []
        for k, (language, text, english) in enumerate(references):
            bad = k < wrong
            rows.append({"id": f"c{k}", "task": "transcribe", "reference_language": language, "reference": text,
                         "hypothesis": text.replace("katze", "hund") if bad else text})
            rows.append({"id": f"c{k}", "task": "translate", "reference_language": language, "reference": english,
                         "hypothesis": "The bird." if bad else english})
        (folder / "hyps.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / "metrics.json").write_text(json.dumps({"translation": {"bleu": 0.0}}))
    assert main(["compare", f"true={tmp_path / 'true' / 'metrics.json'}",
                 f"weak={tmp_path / 'weak' / 'metrics.json'}", "--bootstrap", "200"]) == 0
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("| weak |")][-1]
    bleu, wer, cuts = (cell.strip() for cell in line.split("|")[2:5])
    assert bleu.startswith("-") and wer.startswith("+") and cuts == "30 / 30"


def test_compare_averages_the_runs_of_one_setting(tmp_path, capsys):
    """NAME=A,B: one row, each figure the mean of the runs with its range; the worst language is each
    run's own (de in one, fr in the other), and the difference table compares the means."""
    for name, de, fr, bleu in (("s1", 0.1, 0.3, 40.0), ("s2", 0.4, 0.2, 50.0), ("true", 0.1, 0.1, 60.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"wer": {"languages": {"de": {"wer": de}, "fr": {"wer": fr}}}, "translation": {"bleu": bleu}}))
    assert main(["compare", f"true={tmp_path / 'true.json'}",
                 f"weak={tmp_path / 's1.json'},{tmp_path / 's2.json'}"]) == 0
    out = capsys.readouterr().out
    assert "| translation.bleu | 60.0000 | 45.0000 | -15.0000 |" in out
    assert "| wer.languages.de.wer | 0.1000 | 0.2500 | +0.1500 |" in out
    weak = [line for line in out.splitlines() if line.startswith("| weak |")]
    assert weak == ["| weak | – | 35.00% (30.00–40.00) | 45.00 (40.00–50.00) | – | – | – | – |"]
    assert main(["compare", f"weak={tmp_path / 's1.json'},{tmp_path / 'nope.json'}"]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_not_a_checkpoint_is_a_clear_error(setup, tmp_path, capsys):
    (tmp_path / "x.pt").write_text("nope")
    assert main(["--model", str(tmp_path / "x.pt"), "--manifest", str(setup / "cuts.jsonl.gz")]) == 2
    assert "asr-eval: error:" in capsys.readouterr().err


def test_timestamps_are_scored_on_long_recordings(setup, tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * rng.standard_normal(16000 * 40)).astype("float32"), 16000)
    recording = Recording.from_file(path)
    supervisions = [SupervisionSegment(id=f"l{k}", recording_id=recording.id, start=10.0 * k, duration=5.0,
                                       text="Hallo Welt.", language="de") for k in range(4)]
    CutSet.from_cuts([MonoCut(id="long", start=0, duration=40.0, channel=0, recording=recording,
                              supervisions=supervisions)]).to_file(tmp_path / "long.jsonl.gz")
    assert main(["--model", str(setup / "model.pt"), "--manifest", str(tmp_path / "long.jsonl.gz"),
                 "--out", str(tmp_path / "out"), "--tasks", "timestamps"]) == 0
    timestamps = json.loads((tmp_path / "out" / "metrics.json").read_text())["timestamps"]
    assert timestamps["recordings"] == 1
    assert timestamps["matched"] + timestamps["unmatched_references"] == 4
    long_form = json.loads((tmp_path / "out" / "metrics.json").read_text())["long_form_wer"]["languages"]
    assert long_form["de"]["words"] == 8 and long_form["de"]["utterances"] == 1  # the whole recording's words
    rows = [json.loads(line) for line in (tmp_path / "out" / "hyps.jsonl").read_text().splitlines()]
    assert [(r["id"], r["task"], len(r["reference_segments"])) for r in rows] == [("long", "timestamps", 4)]
    subtitles = tmp_path / "out" / "long_form"
    assert (subtitles / "long.ref.srt").read_text().count("Hallo Welt.") == 4
    assert "00:00:30,000 --> 00:00:35,000" in (subtitles / "long.ref.srt").read_text()
    assert (subtitles / "long.srt").read_text() == to_srt(rows[0])
